// tasks.c: MQAR, passkey and text-loss evaluations (see tasks.h).
#include "tasks.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../autograd/check.h"
#include "../data/synthetic.h"
#include "eval_model.h"

// Prefill pieces: long sequences are evaluated a chunk at a time.
#define EVAL_CHUNK 512
#define MQAR_BATCH 16

double hy_task_mqar(hy_model *m, int seq_len, int pairs, int n_seqs, uint64_t seed,
                    int64_t *right, int64_t *total) {
    int V = m->cfg.vocab_size;
    hy_mqar_config mc = hy_mqar_defaults(seq_len, pairs);
    mc.vocab_size = V;
    hy_mqar_check(&mc);
    hy_rng r;
    hy_rng_seed(&r, seed);
    size_t n = (size_t)MQAR_BATCH * seq_len;
    int32_t *in = (int32_t *)hy_xmalloc(n * sizeof(int32_t));
    int32_t *tgt = (int32_t *)hy_xmalloc(n * sizeof(int32_t));
    float *logits = (float *)hy_xmalloc(n * V * sizeof(float));
    int64_t ok = 0, all = 0;
    for (int done = 0; done < n_seqs; done += MQAR_BATCH) {
        int B = n_seqs - done < MQAR_BATCH ? n_seqs - done : MQAR_BATCH;
        hy_mqar_batch(&mc, &r, B, in, tgt);
        hy_eval_logits(m, in, B, seq_len, EVAL_CHUNK, logits);
        for (size_t p = 0; p < (size_t)B * seq_len; p++) {
            if (tgt[p] == HY_IGNORE_INDEX) continue;
            ok += hy_eval_argmax(logits + p * V, V) == tgt[p];
            all++;
        }
    }
    free(in);
    free(tgt);
    free(logits);
    if (right) *right = ok;
    if (total) *total = all;
    return all ? (double)ok / (double)all : NAN;
}

double hy_task_passkey(hy_model *m, int seq_len, double depth, int n, uint64_t seed,
                       double *digit_acc) {
    int V = m->cfg.vocab_size;
    HY_REQUIRE(V >= 256, "passkey: the model's vocab_size is %d; passkey needs bytes (256)", V);
    hy_passkey_config pc = hy_passkey_defaults(seq_len);
    pc.depth = (float)depth;
    hy_passkey_check(&pc);
    hy_rng r;
    hy_rng_seed(&r, seed);
    int32_t *in = (int32_t *)hy_xmalloc((size_t)seq_len * sizeof(int32_t));
    int32_t *tgt = (int32_t *)hy_xmalloc((size_t)seq_len * sizeof(int32_t));
    float *logits = (float *)hy_xmalloc((size_t)seq_len * V * sizeof(float));
    int exact = 0;
    int64_t digits_ok = 0, digits = 0;
    for (int i = 0; i < n; i++) {
        hy_passkey_item item;
        hy_passkey_sample(&pc, &r, in, tgt, &item);
        hy_eval_logits(m, in, 1, seq_len, EVAL_CHUNK, logits);
        int all = 1;
        for (int d = 0; d < item.n_digits; d++) {
            int p = item.answer_pos + d;
            int hit = hy_eval_argmax(logits + (size_t)p * V, V) == tgt[p];
            all &= hit;
            digits_ok += hit;
            digits++;
        }
        exact += all;
    }
    free(in);
    free(tgt);
    free(logits);
    if (digit_acc) *digit_acc = digits ? (double)digits_ok / (double)digits : NAN;
    return n ? (double)exact / n : NAN;
}

double hy_task_text_loss(hy_model *m, const int32_t *tokens, int64_t n, int window, int batch,
                         int64_t *count) {
    int V = m->cfg.vocab_size;
    int64_t windows = (n - 1) / window;
    HY_REQUIRE(windows >= 1, "text loss: %lld tokens do not fill one window of %d", (long long)n,
               window);
    if (batch > windows) batch = (int)windows;
    float *logits = (float *)hy_xmalloc((size_t)batch * window * V * sizeof(float));
    double sum = 0;
    int64_t cnt = 0;
    for (int64_t w0 = 0; w0 < windows; w0 += batch) {
        int B = windows - w0 < batch ? (int)(windows - w0) : batch;
        // Window w covers tokens [w*window, (w+1)*window]: its inputs are the
        // first `window`, its targets the last `window`. The inputs of
        // consecutive windows are consecutive, so B of them are one (B, window) array.
        hy_eval_logits(m, tokens + w0 * window, B, window, EVAL_CHUNK, logits);
        for (int b = 0; b < B; b++) {
            const int32_t *row = tokens + (w0 + b) * window;
            const float *lg = logits + (size_t)b * window * V;
            for (int t = 0; t < window; t++) sum += hy_eval_nll(lg + (size_t)t * V, V, row[t + 1]);
            cnt += window;
        }
    }
    free(logits);
    if (count) *count = cnt;
    return cnt ? sum / cnt : NAN;
}
