// slice.c: columns [start, start + len) of the last dimension, copied.
#include <string.h>

#include "../autograd/check.h"
#include "ops.h"

typedef struct {
    int64_t rows, n, start, len;  // x (rows, n) -> y (rows, len)
} slice_ctx;

static void slice_backward(hy_tape *t, hy_node *n) {
    slice_ctx *c = (slice_ctx *)n->ctx;
    const float *dy = hy_f32(hy_grad(t, n->out[0]));  // (rows, len)
    float *dx = hy_f32(hy_grad_acc(t, n->in[0]));     // (rows, n)
    for (int64_t r = 0; r < c->rows; r++) {
        float *d = dx + r * c->n + c->start;
        const float *g = dy + r * c->len;
        for (int64_t j = 0; j < c->len; j++) d[j] += g[j];
    }
}

hy_tensor *hy_slice_last(hy_tape *t, hy_tensor *x, int64_t start, int64_t len) {
    const char *op = "slice_last";
    hy_expect_dtype(op, x, HY_F32);
    hy_expect_cpu(op, x);
    int64_t N = hy_last_dim(x);
    HY_REQUIRE(x->ndim >= 1 && start >= 0 && len >= 0 && start + len <= N,
               "slice_last: columns [%lld, %lld) are outside the last dimension of '%s' %s",
               (long long)start, (long long)(start + len), x->name, hy_shape_str(x));
    int64_t rows = hy_rows(x), shape[HY_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[x->ndim - 1] = len;
    hy_tensor *y = hy_tape_new(t, HY_F32, x->ndim, shape, "slice_last");  // (..., len)
    const float *xv = hy_f32(x);
    float *yv = hy_f32(y);
    for (int64_t r = 0; r < rows; r++)
        memcpy(yv + r * len, xv + r * N + start, (size_t)len * sizeof(float));
    hy_node *n = hy_tape_record(t, op, slice_backward, &x, 1, &y, 1);
    if (n) {
        // Saves nothing but sizes and the window.
        slice_ctx *c = (slice_ctx *)hy_tape_ctx(t, n, sizeof *c);
        c->rows = rows, c->n = N, c->start = start, c->len = len;
    }
    return y;
}
