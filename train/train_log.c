#include "train_log.h"

#include <errno.h>
#include <math.h>
#include <string.h>
#include <time.h>

#include "../autograd/check.h"

double hy_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

void hy_metrics_open(hy_metrics *m, const char *dir) {
    char path[1200];
    snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    m->jsonl = fopen(path, "a");
    HY_CHECK(m->jsonl, "%s: cannot open for appending: %s", path, strerror(errno));
}

void hy_metrics_close(hy_metrics *m) {
    if (m->jsonl) fclose(m->jsonl);
    m->jsonl = NULL;
}

static void human_rate(double x, char *buf, size_t n) {
    if (x >= 1e6)
        snprintf(buf, n, "%.2fM", x / 1e6);
    else if (x >= 1e3)
        snprintf(buf, n, "%.1fk", x / 1e3);
    else
        snprintf(buf, n, "%.0f", x);
}

static void human_time(double s, char *buf, size_t n) {
    if (s < 60)
        snprintf(buf, n, "%.0fs", s);
    else if (s < 3600)
        snprintf(buf, n, "%.0fm", s / 60);
    else
        snprintf(buf, n, "%.0fh%02.0fm", floor(s / 3600), fmod(s, 3600) / 60);
}

// JSON has no NaN or Infinity: write null.
static void json_num(FILE *f, const char *key, double v, const char *fmt) {
    fprintf(f, ",\"%s\":", key);
    if (isfinite(v))
        fprintf(f, fmt, v);
    else
        fprintf(f, "null");
}

void hy_metrics_step(hy_metrics *m, const hy_step_line *s, int print) {
    if (print) {
        char rate[32], eta[32];
        human_rate(s->tok_per_s, rate, sizeof rate);
        human_time(s->eta_s, eta, sizeof eta);
        char mfu[32] = "", dp[64] = "";
        if (s->mfu_pct > 0 && isfinite(s->mfu_pct)) snprintf(mfu, sizeof mfu, "MFU %.1f%% | ", s->mfu_pct);
        if (s->ranks > 1)
            snprintf(dp, sizeof dp, " (%d GPUs, batch %lld)", s->ranks, (long long)s->batch);
        printf("step %lld/%lld | loss %.4f | lr %.1e | norm %.2f | %.0f ms | %s tok/s%s | %seta %s\n",
               (long long)s->step, (long long)s->steps, s->loss, s->lr, s->norm, s->ms, rate, dp,
               mfu, eta);
        fflush(stdout);
    }
    fprintf(m->jsonl, "{\"step\":%lld", (long long)s->step);
    json_num(m->jsonl, "loss", s->loss, "%.9g");
    json_num(m->jsonl, "lr", s->lr, "%.9g");
    json_num(m->jsonl, "norm", s->norm, "%.9g");
    json_num(m->jsonl, "ms", s->ms, "%.3f");
    json_num(m->jsonl, "tok_per_s", s->tok_per_s, "%.1f");
    json_num(m->jsonl, "elapsed_s", s->elapsed_s, "%.3f");
    if (s->mfu_pct > 0) json_num(m->jsonl, "mfu_pct", s->mfu_pct, "%.2f");
    fprintf(m->jsonl, ",\"tokens\":%lld}\n", (long long)s->tokens);
    fflush(m->jsonl);
}

void hy_metrics_eval(hy_metrics *m, int64_t step, float val_loss, float accuracy,
                     double elapsed_s) {
    printf("eval step %lld | val loss %.4f", (long long)step, val_loss);
    if (isfinite(accuracy)) printf(" | accuracy %.4f", accuracy);
    printf("\n");
    fflush(stdout);
    fprintf(m->jsonl, "{\"step\":%lld", (long long)step);
    json_num(m->jsonl, "val_loss", val_loss, "%.9g");
    json_num(m->jsonl, "val_accuracy", accuracy, "%.9g");
    json_num(m->jsonl, "elapsed_s", elapsed_s, "%.3f");
    fprintf(m->jsonl, "}\n");
    fflush(m->jsonl);
}
