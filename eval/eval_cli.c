// eval_cli.c: hydra-eval's command line and the --claims run (see eval_cli.h).
#include "eval_cli.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../autograd/check.h"
#include "../cuda/hy_cuda.h"
#include "claims.h"
#include "eval_tasks_cli.h"
#include "fit.h"
#include "report.h"
#include "train_run.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: hydra-eval --claims [--budget smoke|full] [--only NAME[,NAME...]]\n"
            "                  [--out RESULTS.md] [--json results.json] [--device auto|cpu|cuda]\n"
            "                  [--seed S] [--text PATH] [--work DIR [--resume]]\n"
            "       hydra-eval --checkpoint CKPT --task mqar|passkey|ppl|stream [--seq-len N]\n"
            "                  [--tokens N] [--pairs N] [--sequences N] [--data PATH] [--chunk N]\n"
            "                  [--seed S] [--device auto|cpu|cuda]\n"
            "\n"
            "--claims measures HydraLM's claims and writes RESULTS.md (plots next to it) and\n"
            "results.json. Exit status: 0 every selected claim passed, 1 one failed, 2 bad usage.\n"
            "  --budget     smoke (minutes on a CPU; default) or full (the real thresholds)\n"
            "  --only       claims to run, comma-separated (default: all):\n"
            "               ");
    for (int i = 0; i < hy_claim_count(); i++)
        fprintf(f, "%s%s", hy_claim_at(i)->id, i + 1 < hy_claim_count() ? (i % 4 == 3 ? ",\n               " : ", ") : "\n");
    fprintf(f,
            "  --out        the report (default RESULTS.md); --json defaults to results.json beside it\n"
            "  --device     auto (default: the GPU when there is one, else the CPU), cpu or cuda;\n"
            "               on the GPU the claims' models have heads of 64 and DeltaNet chunks of 64\n"
            "  --seed       seed of every model, run and generated sequence (default 1)\n"
            "  --text       text for the language-model claims (default: $HYDRA_TEXT, else\n"
            "               data/tinyshakespeare.txt when present, else a synthetic corpus)\n"
            "  --work       keep the internal training runs in DIR (default: a temporary\n"
            "               directory, removed at the end), and each claim's result in DIR/claims\n"
            "  --resume     with --work: take the claims already saved there by this build (same\n"
            "               budget, seed, device and text) as measured; measure the others. A\n"
            "               long report can so be measured in parts (--only) and assembled;\n"
            "               training runs this build finished in DIR are reused the same way\n"
            "--checkpoint evaluates a model written by hydra-train:\n"
            "  mqar     accuracy on fresh MQAR sequences (--seq-len, --pairs, --sequences)\n"
            "  passkey  exact-match accuracy by needle depth (--seq-len, --sequences per depth)\n"
            "  ppl      loss and perplexity on the validation split of --data (--seq-len, --tokens)\n"
            "  stream   stream --tokens tokens (random, or --data's validation split) in chunks of\n"
            "           --chunk: state bytes, time per token, process memory\n");
}

static void bad_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void bad_usage(const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    hy_die(HY_EXIT_USAGE, "hydra-eval: %s (hydra-eval --help lists the options)", msg);
}

static long parse_count(const char *opt, const char *v, long lo) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo) bad_usage("%s expects an integer >= %ld, got '%s'", opt, lo, v);
    return x;
}

typedef struct {
    int claims, resume;
    const char *budget, *only, *out, *json, *device, *text, *work;
    hy_task_args task;
    int claim_opts, task_opts;  // options of each mode seen (for mixing errors)
} eval_args;

static void parse_args(eval_args *a, int argc, char **argv) {
    memset(a, 0, sizeof *a);
    a->budget = "smoke", a->out = "RESULTS.md", a->device = "auto";
    a->task.seed = 1;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (!strcmp(arg, "--claims")) {
            a->claims = 1;
            continue;
        }
        if (!strcmp(arg, "--resume")) {
            a->resume = 1;
            a->claim_opts++;
            continue;
        }
        if (strncmp(arg, "--", 2)) bad_usage("unexpected argument '%s'", arg);
        char opt[32];
        const char *eq = strchr(arg, '='), *v;
        if (eq) {
            snprintf(opt, sizeof opt, "%.*s", (int)(eq - arg), arg);
            v = eq + 1;
        } else {
            snprintf(opt, sizeof opt, "%s", arg);
            if (i + 1 >= argc) bad_usage("%s needs a value (or an unknown option)", arg);
            v = argv[++i];
        }
        int claim_opt = 1, task_opt = 0;
        if (!strcmp(opt, "--budget")) a->budget = v;
        else if (!strcmp(opt, "--only")) a->only = v;
        else if (!strcmp(opt, "--out")) a->out = v;
        else if (!strcmp(opt, "--json")) a->json = v;
        else if (!strcmp(opt, "--text")) a->text = v;
        else if (!strcmp(opt, "--work")) a->work = v;
        else {
            claim_opt = 0, task_opt = 1;
            if (!strcmp(opt, "--device")) a->device = v, task_opt = 0;
            else if (!strcmp(opt, "--seed")) a->task.seed = (uint64_t)parse_count(opt, v, 0), task_opt = 0;
            else if (!strcmp(opt, "--checkpoint")) a->task.checkpoint = v;
            else if (!strcmp(opt, "--task")) a->task.task = v;
            else if (!strcmp(opt, "--seq-len")) a->task.seq_len = (int)parse_count(opt, v, 1);
            else if (!strcmp(opt, "--tokens")) a->task.tokens = parse_count(opt, v, 1);
            else if (!strcmp(opt, "--pairs")) a->task.pairs = (int)parse_count(opt, v, 1);
            else if (!strcmp(opt, "--sequences")) a->task.sequences = (int)parse_count(opt, v, 1);
            else if (!strcmp(opt, "--chunk")) a->task.chunk = (int)parse_count(opt, v, 1);
            else if (!strcmp(opt, "--data")) a->task.data = v;
            else bad_usage("unknown option '%s'", opt);
        }
        if (claim_opt) a->claim_opts++;
        if (task_opt) a->task_opts++;
    }
}

// cpu, or cuda (GPU 0); auto is cuda when this build has CUDA and a GPU is
// there, the CPU otherwise.
static const char *resolve_device(const char *d) {
    int gpu = hy_cuda_built() && hy_cuda_device_count() > 0;
    if (!strcmp(d, "cpu")) return "cpu";
    if (!strcmp(d, "auto")) return gpu ? "cuda" : "cpu";
    if (!strcmp(d, "cuda")) {
        if (!hy_cuda_built())
            hy_die(HY_EXIT_USAGE, "hydra-eval: --device cuda, but this build has no CUDA support "
                                  "(rebuild with nvcc present and -DHYDRA_CUDA=ON), or use cpu or auto");
        if (!gpu) hy_die(HY_EXIT_USAGE, "hydra-eval: --device cuda, but no usable GPU was found; use cpu or auto");
        return "cuda";
    }
    bad_usage("--device expects auto, cpu or cuda, got '%s'", d);
}

// The selected claims in registry order; unknown names are usage errors.
static int select_claims(const char *only, const hy_claim **sel) {
    int n = hy_claim_count(), k = 0;
    if (!only) {
        for (int i = 0; i < n; i++) sel[k++] = hy_claim_at(i);
        return k;
    }
    int want[64] = {0};
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", only);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        const hy_claim *c = hy_claim_find(tok);
        if (!c) {
            char known[1024] = "";
            for (int i = 0; i < n; i++)
                snprintf(known + strlen(known), sizeof known - strlen(known), "%s%s", i ? ", " : "",
                         hy_claim_at(i)->id);
            bad_usage("--only: unknown claim '%s' (claims: %s)", tok, known);
        }
        want[c - hy_claim_at(0)] = 1;
    }
    for (int i = 0; i < n; i++)
        if (want[i]) sel[k++] = hy_claim_at(i);
    if (!k) bad_usage("--only: no claim named");
    return k;
}

static int readable(const char *p) { return p && p[0] && access(p, R_OK) == 0; }

// --text, else $HYDRA_TEXT, else data/tinyshakespeare.txt, else synthetic.
static void resolve_text(hy_eval_opts *o, const char *text) {
    const char *env = getenv("HYDRA_TEXT");
    if (text) {
        if (!readable(text)) hy_die(HY_EXIT_USAGE, "hydra-eval: --text %s: cannot read the file", text);
        snprintf(o->text_path, sizeof o->text_path, "%s", text);
        snprintf(o->text_origin, sizeof o->text_origin, "--text");
    } else if (env && env[0]) {
        if (!readable(env)) hy_die(HY_EXIT_USAGE, "hydra-eval: $HYDRA_TEXT = %s: cannot read the file", env);
        snprintf(o->text_path, sizeof o->text_path, "%s", env);
        snprintf(o->text_origin, sizeof o->text_origin, "$HYDRA_TEXT");
    } else if (readable("data/tinyshakespeare.txt")) {
        snprintf(o->text_path, sizeof o->text_path, "data/tinyshakespeare.txt");
        snprintf(o->text_origin, sizeof o->text_origin, "the default data/tinyshakespeare.txt");
    }
}

static void make_work_dir(hy_eval_opts *o, const char *work) {
    if (work) {
        snprintf(o->work_dir, sizeof o->work_dir, "%s", work);
        if (mkdir(work, 0755) != 0 && errno != EEXIST)
            hy_die(HY_EXIT_USAGE, "hydra-eval: --work %s: cannot create: %s", work, strerror(errno));
        return;
    }
    const char *tmp = getenv("TMPDIR");
    snprintf(o->work_dir, sizeof o->work_dir, "%s/hydra-eval-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    HY_CHECK(mkdtemp(o->work_dir), "cannot create a work directory in %s: %s", tmp ? tmp : "/tmp",
             strerror(errno));
}

static void remove_work_dir(const char *dir) {
    if (hy_eval_remove_tree(dir) != 0) fprintf(stderr, "hydra-eval: could not remove %s\n", dir);
}

// The report must be writable before hours of measuring, not after.
static void check_writable(const char *path) {
    char tmp[1200];
    snprintf(tmp, sizeof tmp, "%.1000s.probe.%d", path, (int)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) hy_die(HY_EXIT_USAGE, "hydra-eval: cannot write %s: %s", path, strerror(errno));
    fclose(f);
    unlink(tmp);
}

// The command that reproduces the report: argv as given, with $HYDRA_TEXT
// in front when the text came from it.
static void command_line(char *buf, size_t n, int argc, char **argv, const hy_eval_opts *o) {
    buf[0] = 0;
    if (!strcmp(o->text_origin, "$HYDRA_TEXT")) snprintf(buf, n, "HYDRA_TEXT='%s' ", o->text_path);
    snprintf(buf + strlen(buf), n - strlen(buf), "%s", argv[0]);
    for (int i = 1; i < argc; i++) {
        size_t len = strlen(buf);
        int plain = strspn(argv[i], "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_=.,/:+") ==
                    strlen(argv[i]);
        snprintf(buf + len, n - len, plain ? " %s" : " '%s'", argv[i]);
    }
}

static int run_claims(const eval_args *a, int argc, char **argv) {
    if (a->task_opts) bad_usage("--checkpoint, --task and the task options do not go with --claims");
    hy_eval_opts o;
    memset(&o, 0, sizeof o);
    o.t_start = hy_eval_now();
    if (!strcmp(a->budget, "smoke")) o.budget = HY_BUDGET_SMOKE;
    else if (!strcmp(a->budget, "full")) o.budget = HY_BUDGET_FULL;
    else bad_usage("--budget expects smoke or full, got '%s'", a->budget);
    snprintf(o.device, sizeof o.device, "%s", resolve_device(a->device));
    o.seed = a->task.seed;
    if (a->resume && !a->work) bad_usage("--resume needs --work DIR (where the results were saved)");
    o.keep_results = a->work != NULL;
    o.resume = a->resume;
    const hy_claim *sel[64];
    int n = select_claims(a->only, sel);
    resolve_text(&o, a->text);
    char json[1200];
    if (a->json) {
        snprintf(json, sizeof json, "%s", a->json);
    } else {
        const char *slash = strrchr(a->out, '/');
        snprintf(json, sizeof json, "%.*sresults.json", slash ? (int)(slash - a->out + 1) : 0, a->out);
    }
    check_writable(a->out);
    check_writable(json);
    make_work_dir(&o, a->work);
    hy_report_info info;
    memset(&info, 0, sizeof info);
    hy_report_now(info.date, sizeof info.date);
    command_line(info.command, sizeof info.command, argc, argv, &o);
    hy_eval_progress(&o, "%d claim%s, budget %s, device %s, work directory %s", n, n == 1 ? "" : "s",
                     a->budget, o.device, o.work_dir);
    hy_claim_result *res = (hy_claim_result *)hy_xcalloc((size_t)n, sizeof *res);
    int failed = hy_claims_run(&o, sel, n, res);
    info.seconds = hy_eval_now() - o.t_start;
    hy_report_write(a->out, json, &o, &info, res, n);
    for (int i = 0; i < n; i++)
        printf("%-22s %s  %s\n", res[i].id, res[i].passed ? "PASS" : "FAIL", res[i].key);
    printf("%s: %d of %d claims passed in %.0f s; wrote %s and %s\n", failed ? "FAIL" : "PASS",
           n - failed, n, info.seconds, a->out, json);
    fflush(stdout);
    free(res);
    if (!a->work) remove_work_dir(o.work_dir);
    return failed ? 1 : 0;
}

int hy_eval_main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        hy_die(HY_EXIT_USAGE, "hydra-eval: give --claims or --checkpoint CKPT --task TASK");
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        usage(stdout);
        return 0;
    }
    eval_args a;
    parse_args(&a, argc, argv);
    if (a.claims && a.task.checkpoint) bad_usage("--claims and --checkpoint are separate modes");
    if (a.claims) return run_claims(&a, argc, argv);
    if (!a.task.checkpoint) bad_usage("give --claims or --checkpoint CKPT --task TASK");
    if (a.claim_opts) bad_usage("--budget, --only, --out, --json, --text and --work go with --claims");
    resolve_device(a.device);
    a.task.device = a.device;  // the model's own limits decide auto (hy_device_choose)
    return hy_eval_task_main(&a.task);
}
