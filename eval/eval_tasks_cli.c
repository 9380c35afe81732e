// eval_tasks_cli.c: hydra-eval --checkpoint CKPT --task mqar|passkey|ppl|stream.
#include "eval_tasks_cli.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../autograd/check.h"
#include "../data/loader.h"
#include "../infer/stream.h"
#include "../train/train_gpu.h"
#include "eval_model.h"
#include "fit.h"
#include "tasks.h"

static int task_mqar(hy_eval_model *w, const hy_task_args *a) {
    int T = a->seq_len ? a->seq_len : w->cfg.train.seq_len;
    int P = a->pairs ? a->pairs : w->cfg.data.mqar_pairs;
    int n = a->sequences ? a->sequences : w->cfg.eval.mqar_sequences;
    int64_t right, total;
    double t0 = hy_eval_now();
    double acc = hy_task_mqar(w->net, T, P, n, a->seed, &right, &total);
    printf("mqar: seq_len %d, %d pairs, %d fresh sequences (seed %llu): accuracy %.4f "
           "(%lld / %lld queries) in %.1f s\n", T, P, n, (unsigned long long)a->seed, acc,
           (long long)right, (long long)total, hy_eval_now() - t0);
    return 0;
}

static int task_passkey(hy_eval_model *w, const hy_task_args *a) {
    int T = a->seq_len ? a->seq_len : w->cfg.train.seq_len;
    int n = a->sequences ? a->sequences : 20;
    printf("passkey: seq_len %d, %d fresh sequences per depth (seed %llu)\n\n"
           "| depth | exact match | digit accuracy |\n|---|---|---|\n", T, n, (unsigned long long)a->seed);
    double sum = 0;
    for (int d = 0; d <= 4; d++) {
        double digits, acc = hy_task_passkey(w->net, T, d / 4.0, n, a->seed + (uint64_t)d, &digits);
        printf("| %d%% | %.3f | %.3f |\n", d * 25, acc, digits);
        sum += acc;
    }
    printf("| mean | %.3f | |\n", sum / 5);
    return 0;
}

// The validation tokens of `path` (a hydra-data directory, a shard or a
// glob), at most `max` of them (malloc'd).
static int32_t *val_tokens(const char *path, int vocab, long max, int64_t *n) {
    hy_loader l;
    hy_loader_open(&l, path, "val", vocab, 0, 0, 1);
    int64_t total = hy_loader_tokens(&l);
    if (max > 0 && total > max) total = max;
    int32_t *t = (int32_t *)hy_xmalloc((size_t)(total ? total : 1) * sizeof(int32_t));
    int64_t got = 0;
    for (int s = 0; s < l.n_shards && got < total; s++) {
        int64_t take = l.shards[s].n < total - got ? l.shards[s].n : total - got;
        hy_shard_read(&l.shards[s], 0, take, t + got);
        got += take;
    }
    hy_loader_close(&l);
    *n = got;
    return t;
}

static const char *data_path(hy_eval_model *w, const hy_task_args *a, const char *task) {
    const char *p = a->data ? a->data : w->cfg.data.path;
    HY_REQUIRE(p && p[0], "hydra-eval --task %s: give --data PATH (the checkpoint's run has no data.path)", task);
    return p;
}

static int task_ppl(hy_eval_model *w, const hy_task_args *a) {
    const char *path = data_path(w, a, "ppl");
    int T = a->seq_len ? a->seq_len : w->cfg.train.seq_len;
    int64_t n, count;
    int32_t *tok = val_tokens(path, w->m.cfg.vocab_size, a->tokens ? a->tokens : 1L << 20, &n);
    double t0 = hy_eval_now();
    double loss = hy_task_text_loss(w->net, tok, n, T, 8, &count);
    printf("ppl: %s (validation split), windows of %d tokens: loss %.4f nats/token, perplexity %.3f, "
           "%.4f bits/token over %lld predictions in %.1f s\n", path, T, loss, exp(loss), loss / log(2.0),
           (long long)count, hy_eval_now() - t0);
    free(tok);
    return 0;
}

typedef struct {
    const int32_t *tok;
    int64_t n, at;
} array_source;

static int from_array(void *ctx, int32_t *ids, int n) {
    array_source *s = (array_source *)ctx;
    int k = 0;
    while (k < n && s->n > 0) {
        ids[k++] = s->tok[s->at];
        s->at = (s->at + 1) % s->n;  // a short split is streamed round and round
    }
    return k;
}

typedef struct {
    int64_t next;
} stream_print;

static void print_row(const hy_stream *s) {
    hy_stream_stats st = hy_stream_get_stats(s);
    printf("| %lld | %zu | %.2f | %.1f | %.1f | %lld |\n", (long long)st.tokens, st.state_bytes,
           st.us_per_token, st.rss_bytes / 1048576.0, st.peak_rss_bytes / 1048576.0,
           (long long)st.nonfinite);
    fflush(stdout);
}

// A row at 1K, 2K, 4K, ... tokens.
static int print_probe(void *ctx, const hy_stream *s, double dt) {
    (void)dt;
    stream_print *p = (stream_print *)ctx;
    if (s->tokens < p->next) return 0;
    print_row(s);
    while (p->next <= s->tokens) p->next *= 2;
    return 0;
}

static int task_stream(hy_eval_model *w, const hy_task_args *a) {
    long total = a->tokens ? a->tokens : 65536;
    int chunk = a->chunk ? a->chunk : 256;
    hy_stream s;
    hy_stream_init(&s, w->net, chunk);
    hy_random_tokens rnd;
    array_source arr = {NULL, 0, 0};
    int32_t *tok = NULL;
    if (a->data) {
        tok = val_tokens(a->data, w->m.cfg.vocab_size, 1L << 22, &arr.n);
        arr.tok = tok;
    } else {
        hy_random_tokens_init(&rnd, a->seed, 0, w->m.cfg.vocab_size);
    }
    printf("stream: %ld tokens (%s) in chunks of %d\n\n"
           "| tokens | state bytes | us/token (mean so far) | RSS MiB | peak RSS MiB | non-finite logits |\n"
           "|---|---|---|---|---|---|\n", total, a->data ? a->data : "random ids", chunk);
    stream_print p = {1024};
    hy_stream_run(&s, a->data ? from_array : hy_random_tokens_source, a->data ? (void *)&arr : (void *)&rnd,
                  total, print_probe, &p);
    if (s.tokens && s.tokens * 2 != p.next) print_row(&s);  // the end, unless just printed
    hy_stream_free(&s);
    free(tok);
    return 0;
}

int hy_eval_task_main(const hy_task_args *a) {
    HY_REQUIRE(a->task, "hydra-eval --checkpoint: give --task mqar|passkey|ppl|stream");
    static const char *TASKS[] = {"mqar", "passkey", "ppl", "stream"};
    int k = -1;
    for (int i = 0; i < 4; i++)
        if (!strcmp(a->task, TASKS[i])) k = i;
    HY_REQUIRE(k >= 0, "hydra-eval: unknown task '%s' (tasks: mqar, passkey, ppl, stream)", a->task);
    hy_eval_model w;
    hy_eval_model_load(&w, a->checkpoint, HY_CPU);
    char what[1100], why[300];
    snprintf(what, sizeof what, "%s: --device %s", a->checkpoint, a->device);
    hy_device dev = hy_device_choose(a->device, w.m.arch, &w.m.cfg, what, why, sizeof why);
    if (why[0]) fprintf(stderr, "hydra-eval: running on the CPU: %s\n", why);
    hy_eval_model_place(&w, dev);
    int rc = k == 0 ? task_mqar(&w, a) : k == 1 ? task_passkey(&w, a) : k == 2 ? task_ppl(&w, a)
                                                                      : task_stream(&w, a);
    hy_eval_model_free(&w);
    return rc;
}
