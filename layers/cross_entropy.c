// cross_entropy.c: mean softmax cross-entropy over the non-ignored targets.
//   loss = (1/n) sum_r (lse_r - logits[r, target_r]), lse_r = log sum_j exp(logits[r, j])
#include <math.h>

#include "../autograd/check.h"
#include "ops.h"

typedef struct {
    int64_t rows, vocab, count;  // count: targets not ignored (the mean's n)
    int ignore_index;
    hy_tensor *lse;  // (rows) saved log-sum-exp per row (0 where ignored); logits are an input
} xent_ctx;

static void xent_backward(hy_tape *t, hy_node *n) {
    xent_ctx *c = (xent_ctx *)n->ctx;
    if (c->count == 0) return;  // all ignored: zero gradient
    float g = hy_f32(hy_grad(t, n->out[0]))[0];
    const float *xv = hy_f32(n->in[0]), *lse = hy_f32(c->lse);
    const int32_t *tg = hy_i32(n->in[1]);
    float *dx = hy_f32(hy_grad_acc(t, n->in[0]));
    float s = g / (float)c->count;
    int64_t V = c->vocab;
    // d loss / d logits[r, j] = (softmax[r, j] - [j == target_r]) / n, softmax rebuilt from lse
    for (int64_t r = 0; r < c->rows; r++) {
        if (tg[r] == c->ignore_index) continue;
        const float *x = xv + r * V;
        float *d = dx + r * V;
        for (int64_t j = 0; j < V; j++) d[j] += s * expf(x[j] - lse[r]);
        d[tg[r]] -= s;
    }
}

// Every target is in [0, V) or ignore_index; the first bad one is the error.
static int64_t count_targets(const hy_tensor *logits, const hy_tensor *targets, int ignore) {
    const int32_t *tg = hy_i32(targets);
    int64_t V = hy_last_dim(logits), count = 0;
    for (int64_t r = 0, rows = hy_numel(targets); r < rows; r++) {
        if (tg[r] == ignore) continue;
        HY_REQUIRE(tg[r] >= 0 && tg[r] < V,
                   "cross_entropy: target %d at flat position %lld of '%s' %s is outside "
                   "[0, V) with V = %lld (logits '%s' %s) and is not ignore_index %d",
                   tg[r], (long long)r, targets->name, hy_shape_str(targets), (long long)V,
                   logits->name, hy_shape_str(logits), ignore);
        count++;
    }
    return count;
}

static void check_shapes(const hy_tensor *logits, const hy_tensor *targets) {
    int ok = logits->ndim >= 2 && targets->ndim == logits->ndim - 1;
    for (int i = 0; ok && i < targets->ndim; i++) ok = targets->shape[i] == logits->shape[i];
    HY_REQUIRE(ok,
               "cross_entropy: logits '%s' %s (..., V) and targets '%s' %s (...) disagree on the "
               "leading dimensions",
               logits->name, hy_shape_str(logits), targets->name, hy_shape_str(targets));
}

hy_tensor *hy_cross_entropy(hy_tape *t, hy_tensor *logits, hy_tensor *targets,
                            int ignore_index) {
    const char *op = "cross_entropy";
    hy_expect_dtype(op, logits, HY_F32);
    hy_expect_dtype(op, targets, HY_I32);
    // The GPU never materialises the logits of a batch: its loss is the fused
    // head + cross-entropy (hy_head_loss).
    HY_REQUIRE(logits->device == HY_CPU,
               "cross_entropy: logits '%s' are on the GPU; there the loss is hy_head_loss (the "
               "tied head fused with the cross-entropy)", logits->name);
    hy_expect_device(op, logits, targets);
    check_shapes(logits, targets);
    int64_t V = hy_last_dim(logits), rows = hy_rows(logits), one = 1;
    int64_t count = count_targets(logits, targets, ignore_index);
    hy_tensor *y = hy_tape_new(t, HY_F32, 1, &one, "cross_entropy");       // (1)
    hy_tensor *lse = hy_tape_new(t, HY_F32, 1, &rows, "cross_entropy.lse");  // (rows)
    const float *xv = hy_f32(logits);
    const int32_t *tg = hy_i32(targets);
    float *ls = hy_f32(lse);
    double total = 0;
    for (int64_t r = 0; r < rows; r++) {
        ls[r] = 0.0f;
        if (tg[r] == ignore_index) continue;
        const float *x = xv + r * V;
        float m = x[0];
        for (int64_t j = 1; j < V; j++) m = fmaxf(m, x[j]);
        double s = 0;
        for (int64_t j = 0; j < V; j++) s += exp((double)x[j] - m);
        double l = m + log(s);
        ls[r] = (float)l;
        total += l - x[tg[r]];
    }
    hy_f32(y)[0] = count ? (float)(total / count) : 0.0f;
    hy_tensor *ins[2] = {logits, targets};
    hy_node *n = hy_tape_record(t, op, xent_backward, ins, 2, &y, 1);
    if (n) {
        xent_ctx *c = (xent_ctx *)hy_tape_ctx(t, n, sizeof *c);
        c->rows = rows, c->vocab = V, c->count = count, c->ignore_index = ignore_index;
        c->lse = lse;
    }
    return y;
}
