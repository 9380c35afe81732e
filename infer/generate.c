// generate.c: hydra-generate (see generate.h).
#include "generate.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../autograd/arena.h"
#include "../autograd/check.h"
#include "../cuda/hy_cuda.h"
#include "../cuda/hy_cuda_blas.h"
#include "../layers/model.h"
#include "../train/checkpoint.h"
#include "../train/run_config.h"
#include "../train/train_gpu.h"
#include "sample.h"
#include "stream.h"

// Prompt tokens per prefill call: the work arena then holds one chunk's
// activations however long the prompt is.
#define PREFILL_CHUNK 256

typedef struct {
    const char *checkpoint;
    const char *prompt;  // --prompt TEXT, or NULL
    const char *ids;     // --ids "ID ID ...", or NULL
    long max_new;
    hy_sampler sampler;
    uint64_t seed;
    const char *device;  // auto | cpu | cuda
} gen_args;

static void usage(FILE *f) {
    fprintf(f,
            "usage: hydra-generate CHECKPOINT [--prompt TEXT | --ids \"ID ID ...\"] [--max-new N]\n"
            "                      [--temperature T] [--top-k K] [--top-p P] [--seed S]\n"
            "                      [--device auto|cpu|cuda]\n"
            "\n"
            "Continues a prompt with the model stored in CHECKPOINT (an .h5 file written by\n"
            "hydra-train), writing the new tokens to stdout as they are sampled.\n"
            "\n"
            "  --prompt TEXT      the prompt; without --prompt or --ids it is read from stdin.\n"
            "                     Byte-level models (model.vocab_size = 256) take the text's\n"
            "                     bytes as token ids and print the new bytes.\n"
            "  --ids \"ID ID ...\"  the prompt as token ids separated by spaces: required for\n"
            "                     models whose vocab_size is not 256 (stdin is then read as\n"
            "                     ids too); their new tokens are printed as ids.\n"
            "  --max-new N        tokens to generate (default 200)\n"
            "  --temperature T    softmax temperature; 0 = greedy (default 1)\n"
            "  --top-k K          sample among the K most likely tokens; 0 = off (default 0)\n"
            "  --top-p P          sample among the fewest most likely tokens whose probability\n"
            "                     reaches P; 1 = off (default 1)\n"
            "  --seed S           random seed; the same seed gives the same output (default 0)\n"
            "  --device D         where the model runs: cuda (the GPU; its kernels need\n"
            "                     model.head_dim 64 or 128 and model.dn_chunk_size 64), cpu, or\n"
            "                     auto (default): the GPU when there is one and it can run the\n"
            "                     model, else the CPU (saying why on stderr when a GPU is\n"
            "                     present). The GPU computes in bf16, so its samples can\n"
            "                     differ from the CPU's for the same seed.\n"
            "  -h, --help         this text\n");
}

// Bad usage: one line saying what is wrong, then the usage text; exit 2.
static int bad_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int bad_usage(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "hydra: error: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    usage(stderr);
    return HY_EXIT_USAGE;
}

static int parse_long(const char *s, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end) return -1;
    *out = v;
    return 0;
}

static int parse_float(const char *s, float *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end) return -1;
    *out = (float)v;
    return 0;
}

// Fills `a` from argv; returns 0, or the exit status of a usage error
// (-1 when --help was asked for).
static int parse_args(int argc, char **argv, gen_args *a) {
    memset(a, 0, sizeof *a);
    a->max_new = 200;
    a->sampler.temperature = 1.0f;
    a->sampler.top_k = 0;
    a->sampler.top_p = 1.0f;
    a->device = "auto";
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (!strcmp(arg, "-h") || !strcmp(arg, "--help")) return -1;
        if (arg[0] != '-' || !arg[1]) {
            if (a->checkpoint) return bad_usage("more than one checkpoint given ('%s')", arg);
            a->checkpoint = arg;
            continue;
        }
        // Every option takes a value: "--opt VALUE" or "--opt=VALUE".
        char opt[32];
        const char *eq = strchr(arg, '='), *val;
        if (eq) {
            snprintf(opt, sizeof opt, "%.*s", (int)(eq - arg), arg);
            val = eq + 1;
        } else {
            snprintf(opt, sizeof opt, "%s", arg);
            if (i + 1 >= argc) return bad_usage("%s needs a value", arg);
            val = argv[++i];
        }
        long n = 0;
        float x = 0;
        int ok = 1;
        if (!strcmp(opt, "--prompt")) {
            a->prompt = val;
        } else if (!strcmp(opt, "--ids")) {
            a->ids = val;
        } else if (!strcmp(opt, "--max-new")) {
            ok = !parse_long(val, &n) && n >= 0 && n <= (1L << 30);
            a->max_new = n;
        } else if (!strcmp(opt, "--temperature")) {
            ok = !parse_float(val, &x) && x >= 0;
            a->sampler.temperature = x;
        } else if (!strcmp(opt, "--top-k")) {
            ok = !parse_long(val, &n) && n >= 0 && n <= (1L << 30);
            a->sampler.top_k = (int)n;
        } else if (!strcmp(opt, "--top-p")) {
            ok = !parse_float(val, &x) && x > 0 && x <= 1;
            a->sampler.top_p = x;
        } else if (!strcmp(opt, "--seed")) {
            ok = !parse_long(val, &n) && n >= 0;
            a->seed = (uint64_t)n;
        } else if (!strcmp(opt, "--device")) {
            ok = !strcmp(val, "auto") || !strcmp(val, "cpu") || !strcmp(val, "cuda");
            a->device = val;
        } else {
            return bad_usage("unknown option '%s'", opt);
        }
        if (!ok) return bad_usage("%s: bad value '%s'", opt, val);
    }
    if (!a->checkpoint) return bad_usage("no checkpoint given");
    if (a->prompt && a->ids) return bad_usage("give --prompt or --ids, not both");
    return 0;
}

// All of stdin (malloc'd, NUL-terminated); *len gets its length.
static char *read_stdin(size_t *len) {
    size_t cap = 4096, n = 0;
    char *buf = (char *)hy_xmalloc(cap);
    size_t got;
    while ((got = fread(buf + n, 1, cap - n - 1, stdin)) > 0) {
        n += got;
        if (cap - n - 1 == 0) {
            cap *= 2;
            char *grown = (char *)realloc(buf, cap);
            HY_CHECK(grown != NULL, "out of host memory reading the prompt");
            buf = grown;
        }
    }
    HY_REQUIRE(!ferror(stdin), "cannot read the prompt from stdin: %s", strerror(errno));
    buf[n] = 0;
    *len = n;
    return buf;
}

// Space- (or comma-) separated token ids; each must be in [0, V).
static int32_t *parse_ids(const char *text, int V, int *T) {
    size_t cap = 64;
    int n = 0;
    int32_t *ids = (int32_t *)hy_xmalloc(cap * sizeof *ids);
    const char *p = text;
    for (;;) {
        while (isspace((unsigned char)*p) || *p == ',') p++;
        if (!*p) break;
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        HY_REQUIRE(end != p && !errno && (!*end || isspace((unsigned char)*end) || *end == ','),
                   "prompt ids: '%.20s' is not a token id", p);
        HY_REQUIRE(v >= 0 && v < V, "prompt ids: token id %ld is out of range (vocab_size %d)", v,
                   V);
        if ((size_t)n == cap) {
            cap *= 2;
            int32_t *grown = (int32_t *)realloc(ids, cap * sizeof *ids);
            HY_CHECK(grown != NULL, "out of host memory reading the prompt");
            ids = grown;
        }
        ids[n++] = (int32_t)v;
        p = end;
    }
    *T = n;
    return ids;
}

// The prompt as token ids (malloc'd): bytes for byte-level models, parsed
// ids otherwise.
static int32_t *prompt_ids(const gen_args *a, int V, int *T) {
    int bytes = V == 256;
    HY_REQUIRE(!a->prompt || bytes,
               "%s: model.vocab_size is %d, not 256 (bytes): give the prompt as token ids with "
               "--ids \"ID ID ...\"", a->checkpoint, V);
    size_t len = 0;
    char *in = NULL;
    const char *text = a->ids ? a->ids : a->prompt;
    if (!text) text = in = read_stdin(&len);
    else len = strlen(text);
    int32_t *ids;
    if (a->ids || !bytes) {
        ids = parse_ids(text, V, T);
    } else {
        HY_REQUIRE(len < (1u << 30), "the prompt is too long (%zu bytes)", len);
        ids = (int32_t *)hy_xmalloc((len ? len : 1) * sizeof *ids);
        for (size_t i = 0; i < len; i++) ids[i] = (unsigned char)text[i];
        *T = (int)len;
    }
    free(in);
    HY_REQUIRE(*T > 0, "the prompt is empty: give --prompt TEXT, --ids, or text on stdin");
    return ids;
}

// The checkpoint loads into the host model `m`; on the GPU, `gm` is its
// device copy (gparams, ggrads, ghalf: CUDA arenas) and runs instead.
typedef struct {
    hy_run_config cfg;
    hy_model m, gm;
    hy_arena params, grads, work;
    hy_arena gparams, ggrads, ghalf;
    hy_device device;
    hy_decode_state state;
} gen_world;

static void load_model(gen_world *w, const char *path) {
    char *text = hy_ckpt_read_config(path);
    hy_run_config_defaults(&w->cfg);
    hy_run_config_parse_string(&w->cfg, text, path);
    free(text);
    snprintf(w->cfg.file, sizeof w->cfg.file, "%s", path);
    hy_run_config_finalize(&w->cfg);
    hy_model_build(&w->m, w->cfg.arch, &w->cfg.model);
    size_t pb = hy_params_bytes(&w->m.params) + HY_ALIGN;
    hy_arena_init(&w->params, "params", HY_CPU, pb);
    hy_arena_init(&w->grads, "grads", HY_CPU, pb);
    hy_params_alloc(&w->m.params, &w->params, &w->grads);
    hy_ckpt_load(path, &w->m.params, NULL, NULL);
}

// The device to decode on (--device), and the model that runs there.
static hy_model *place_model(gen_world *w, const gen_args *a) {
    char what[1100], why[300];
    snprintf(what, sizeof what, "%s: --device %s", a->checkpoint, a->device);
    w->device = hy_device_choose(a->device, w->cfg.arch, &w->m.cfg, what, why, sizeof why);
    if (why[0]) fprintf(stderr, "hydra-generate: running on the CPU: %s\n", why);
    if (w->device == HY_CPU) return &w->m;
    hy_cuda_set_device(0);
    hy_cuda_blas_init();
    hy_model_to_cuda_alloc(&w->gm, &w->m, &w->gparams, &w->ggrads, &w->ghalf);
    return &w->gm;
}

static void emit(int tok, int bytes) {
    if (bytes)
        fputc(tok, stdout);
    else
        fprintf(stdout, "%d ", tok);
    fflush(stdout);  // tokens appear as they are sampled
}

// hy_tokens_fn for greedy decoding (batch 1); ctx: the `bytes` flag.
static void emit_greedy(void *ctx, const int32_t *tok) { emit(tok[0], *(const int *)ctx); }

int hy_generate_main(int argc, char **argv) {
    gen_args a;
    int rc = parse_args(argc, argv, &a);
    if (rc < 0) {
        usage(stdout);
        return 0;
    }
    if (rc) return rc;
    hy_sampler_validate(&a.sampler);

    gen_world w;
    memset(&w, 0, sizeof w);
    load_model(&w, a.checkpoint);
    hy_model *m = place_model(&w, &a);
    const int V = w.m.cfg.vocab_size, bytes = V == 256;
    int T;
    int32_t *ids = prompt_ids(&a, V, &T);
    int chunk = T - 1 < PREFILL_CHUNK ? (T - 1 > 0 ? T - 1 : 1) : PREFILL_CHUNK;
    // On the GPU the activations are bf16: the fp32 bound is generous there.
    // A dense model's cache prefix grows to the whole context.
    hy_arena_init(&w.work, "decode work", w.device,
                  hy_prefill_work_bytes(m, 1, chunk, (int64_t)T + a.max_new));
    hy_decode_init(&w.state, m, 1);

    // All but the last prompt token go through prefill without logits; the
    // last goes through a step, whose logits predict the first new token.
    for (int t = 0; t < T - 1; t += chunk) {
        int n = T - 1 - t < chunk ? T - 1 - t : chunk;
        hy_model_prefill(m, &w.state, ids + t, n, NULL, &w.work);
    }
    float *logits = (float *)hy_xmalloc((size_t)V * sizeof(float));
    float *scratch = (float *)hy_xmalloc((size_t)V * sizeof(float));
    int32_t tok = ids[T - 1];
    if (a.sampler.temperature == 0) {
        // Greedy: the argmax is taken where the logits are (on the GPU, only the
        // tokens come back, steps queued ahead), with the sampler's choice and checks.
        hy_model_generate_greedy(m, &w.state, &tok, a.max_new, NULL, emit_greedy, (void *)&bytes,
                                 &w.work);
    } else {
        hy_model_step(m, &w.state, &tok, logits, &w.work);
        hy_rng rng;
        hy_rng_seed(&rng, a.seed);
        for (long i = 0; i < a.max_new; i++) {
            tok = hy_sample(&a.sampler, logits, V, &rng, scratch);
            emit(tok, bytes);
            if (i + 1 < a.max_new) hy_model_step(m, &w.state, &tok, logits, &w.work);
        }
    }
    if (!bytes && a.max_new > 0) fputc('\n', stdout);
    fflush(stdout);

    free(logits);
    free(scratch);
    free(ids);
    hy_decode_free(&w.state);
    if (w.device == HY_CUDA) hy_model_destroy(&w.gm);
    hy_model_destroy(&w.m);
    hy_arena *all[6] = {&w.work, &w.params, &w.grads, &w.gparams, &w.ggrads, &w.ghalf};
    for (int i = 0; i < 6; i++) hy_arena_free(all[i]);
    return 0;
}
