// train_run.c: internal training runs through hy_train_main (see train_run.h).
#define _XOPEN_SOURCE 700  // nftw
#include "train_run.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../autograd/build_info.h"
#include "../autograd/check.h"
#include "../train/checkpoint.h"
#include "../train/trainer.h"
#include "fit.h"

static int g_saved_stdout = -1;

void hy_eval_stdout_to(const char *path) {
    HY_CHECK(g_saved_stdout < 0, "stdout is already redirected");
    fflush(stdout);
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    HY_CHECK(fd >= 0, "%s: cannot open the log: %s", path, strerror(errno));
    g_saved_stdout = dup(STDOUT_FILENO);
    HY_CHECK(g_saved_stdout >= 0, "cannot duplicate stdout: %s", strerror(errno));
    dup2(fd, STDOUT_FILENO);
    close(fd);
}

void hy_eval_stdout_restore(void) {
    if (g_saved_stdout < 0) return;
    fflush(stdout);
    dup2(g_saved_stdout, STDOUT_FILENO);
    close(g_saved_stdout);
    g_saved_stdout = -1;
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    HY_CHECK(f, "%s: cannot write: %s", path, strerror(errno));
    fputs(text, f);
    HY_CHECK(fclose(f) == 0, "%s: cannot write: %s", path, strerror(errno));
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

int hy_eval_remove_tree(const char *dir) {
    struct stat st;
    if (lstat(dir, &st) != 0) return errno == ENOENT ? 0 : -1;
    return nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

// The value after "key": in a JSON line; NaN for null or a missing key.
static double json_get(const char *line, const char *key) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(line, pat);
    if (!p) return NAN;
    p += strlen(pat);
    if (!strncmp(p, "null", 4)) return NAN;
    return strtod(p, NULL);
}

void hy_train_run_read_metrics(hy_train_run *run) {
    free(run->steps);
    free(run->vals);
    run->steps = NULL, run->vals = NULL;
    run->n_steps = run->n_vals = 0;
    char path[1300], line[1024];
    snprintf(path, sizeof path, "%s/metrics.jsonl", run->dir);
    FILE *f = fopen(path, "r");
    if (!f) return;
    int cap_s = 256, cap_v = 64;
    run->steps = (hy_step_point *)hy_xmalloc((size_t)cap_s * sizeof *run->steps);
    run->vals = (hy_val_point *)hy_xmalloc((size_t)cap_v * sizeof *run->vals);
    while (fgets(line, sizeof line, f)) {
        int64_t step = (int64_t)json_get(line, "step");
        if (strstr(line, "\"val_loss\":")) {
            if (run->n_vals == cap_v) {
                cap_v *= 2;
                run->vals = (hy_val_point *)realloc(run->vals, (size_t)cap_v * sizeof *run->vals);
                HY_CHECK(run->vals, "out of memory reading %s", path);
            }
            hy_val_point *v = &run->vals[run->n_vals++];
            v->step = step;
            v->val_loss = json_get(line, "val_loss");
            v->val_accuracy = json_get(line, "val_accuracy");
            v->elapsed_s = json_get(line, "elapsed_s");
        } else if (strstr(line, "\"loss\":")) {
            if (run->n_steps == cap_s) {
                cap_s *= 2;
                run->steps = (hy_step_point *)realloc(run->steps, (size_t)cap_s * sizeof *run->steps);
                HY_CHECK(run->steps, "out of memory reading %s", path);
            }
            hy_step_point *s = &run->steps[run->n_steps++];
            s->step = step;
            s->loss = json_get(line, "loss");
            s->elapsed_s = json_get(line, "elapsed_s");
        }
    }
    fclose(f);
}

// ---------------------------------------------------------------- finished runs kept
// A run that ended well leaves DIR/eval-run.done: a key (FNV-1a of the
// build's commit, the INI text and the --set overrides) and its wall time.
// With --resume, a build of an exact commit (no uncommitted changes) takes
// such a run as trained instead of training it again, so that a claim made
// of many runs can be measured across several invocations.
#define DONE_MAGIC "hydra-eval training run 1"

static uint64_t fnv1a(uint64_t h, const char *s) {
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 0x100000001b3ULL;
    return (h ^ 0xff) * 0x100000001b3ULL;  // a separator: ("ab", "c") differs from ("a", "bc")
}

static uint64_t run_key(const char *ini, const char *const *sets) {
    uint64_t h = fnv1a(0xcbf29ce484222325ULL, hy_build_commit());
    h = fnv1a(h, ini);
    for (int i = 0; sets && sets[i]; i++) h = fnv1a(h, sets[i]);
    return h;
}

static int exact_build(void) {
    const char *c = hy_build_commit();
    return !strstr(c, "+dirty") && strcmp(c, "unknown");
}

static void write_done(const hy_train_run *run, uint64_t key) {
    char path[1300], text[256];
    snprintf(path, sizeof path, "%s/eval-run.done", run->dir);
    snprintf(text, sizeof text, DONE_MAGIC "\nkey %016llx\nseconds %.17g\n", (unsigned long long)key,
             run->seconds);
    write_text(path, text);
}

// 1 when run->dir holds a finished run with this key (run->seconds set).
static int read_done(hy_train_run *run, uint64_t key) {
    char path[1300], magic[64] = "";
    unsigned long long k = 0;
    double sec = NAN;
    snprintf(path, sizeof path, "%s/eval-run.done", run->dir);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    int ok = fscanf(f, "%63[^\n]\nkey %llx\nseconds %lf", magic, &k, &sec) == 3;
    fclose(f);
    if (!ok || strcmp(magic, DONE_MAGIC) || k != key || !isfinite(sec)) return 0;
    run->seconds = sec;
    return 1;
}

void hy_eval_train(const hy_eval_opts *o, const char *name, const char *ini,
                   const char *const *sets, hy_train_run *run) {
    memset(run, 0, sizeof *run);
    snprintf(run->name, sizeof run->name, "%s", name);
    snprintf(run->dir, sizeof run->dir, "%s/%s", o->work_dir, name);
    uint64_t key = run_key(ini, sets);
    if (o->resume && exact_build() && read_done(run, key)) {
        if (!hy_ckpt_latest(run->dir, run->checkpoint, sizeof run->checkpoint)) run->checkpoint[0] = 0;
        hy_train_run_read_metrics(run);
        hy_eval_progress(o, "%s: trained by an earlier invocation of this build (%.0f s); reused", name,
                         run->seconds);
        return;
    }
    HY_CHECK(hy_eval_remove_tree(run->dir) == 0, "cannot remove %s: %s", run->dir, strerror(errno));
    char cfg[1300], log[1300];
    snprintf(cfg, sizeof cfg, "%s/%s.ini", o->work_dir, name);
    snprintf(log, sizeof log, "%s/%s.log", o->work_dir, name);
    write_text(cfg, ini);
    unlink(log);
    const char *argv[80] = {"hydra-train", cfg, "--out", run->dir};
    int argc = 4;
    for (int i = 0; sets && sets[i] && argc + 2 < 80; i++) {
        argv[argc++] = "--set";
        argv[argc++] = sets[i];
    }
    double t0 = hy_eval_now();
    hy_eval_stdout_to(log);
    run->rc = hy_train_main(argc, (char **)argv);
    hy_eval_stdout_restore();
    run->seconds = hy_eval_now() - t0;
    if (run->rc == 130) {
        fprintf(stderr, "hydra-eval: interrupted during the training run %s; stopping\n", name);
        exit(130);
    }
    HY_CHECK(run->rc == 0, "training run %s stopped with status %d (log: %s)", name, run->rc, log);
    if (!hy_ckpt_latest(run->dir, run->checkpoint, sizeof run->checkpoint)) run->checkpoint[0] = 0;
    hy_train_run_read_metrics(run);
    write_done(run, key);
}

void hy_train_run_free(hy_train_run *run) {
    free(run->steps);
    free(run->vals);
    run->steps = NULL, run->vals = NULL;
    run->n_steps = run->n_vals = 0;
}

const hy_val_point *hy_train_run_last_val(const hy_train_run *run) {
    return run->n_vals ? &run->vals[run->n_vals - 1] : NULL;
}

double hy_train_run_mean_loss(const hy_train_run *run, int first, int k) {
    double s = 0;
    int n = 0;
    for (int i = first; i < first + k && i < run->n_steps; i++)
        if (i >= 0 && isfinite(run->steps[i].loss)) s += run->steps[i].loss, n++;
    return n ? s / n : NAN;
}
