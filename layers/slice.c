// slice.c: columns [start, start + len) of the last dimension, copied.
// CPU: f32. GPU (hy_cuda_slice_last_fwd/_bwd): bf16 in and out, gradients f32.
#include <limits.h>
#include <string.h>

#include "../autograd/check.h"
#include "../cuda/hy_cuda_ops.h"
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

// GPU backward: dx (rows, n) f32 += dy (rows, len) f32 in the window's columns.
static void slice_backward_cuda(hy_tape *t, hy_node *n) {
    slice_ctx *c = (slice_ctx *)n->ctx;
    const float *dy = hy_f32(hy_grad(t, n->out[0]));  // (rows, len) f32
    hy_tensor *dx = hy_grad_acc(t, n->in[0]);         // (rows, n) f32
    if (dx)
        hy_cuda_slice_last_bwd((int)c->rows, (int)c->n, (int)c->start, (int)c->len, dy,
                               hy_f32(dx), NULL);
}

// GPU forward: x (rows, n) bf16 -> y (rows, len) bf16. Saves nothing but
// sizes and the window.
static hy_tensor *slice_fwd_cuda(hy_tape *t, hy_tensor *x, int64_t start, int64_t len) {
    int64_t N = hy_last_dim(x), rows = hy_rows(x), shape[HY_MAX_DIMS];
    HY_REQUIRE(rows <= INT_MAX && N <= INT_MAX,
               "slice_last: '%s' %s is too large for the GPU kernels", x->name, hy_shape_str(x));
    memcpy(shape, x->shape, sizeof shape);
    shape[x->ndim - 1] = len;
    hy_tensor *y = hy_tape_new(t, HY_BF16, x->ndim, shape, "slice_last");  // (..., len) bf16
    hy_cuda_slice_last_fwd((int)rows, (int)N, (int)start, (int)len, x->data, y->data, NULL);
    hy_node *n = hy_tape_record(t, "slice_last", slice_backward_cuda, &x, 1, &y, 1);
    if (n) {
        slice_ctx *c = (slice_ctx *)hy_tape_ctx(t, n, sizeof *c);
        c->rows = rows, c->n = N, c->start = start, c->len = len;
    }
    return y;
}

hy_tensor *hy_slice_last(hy_tape *t, hy_tensor *x, int64_t start, int64_t len) {
    const char *op = "slice_last";
    hy_expect_act(op, x);
    int64_t N = hy_last_dim(x);
    HY_REQUIRE(x->ndim >= 1 && start >= 0 && len >= 0 && start + len <= N,
               "slice_last: columns [%lld, %lld) are outside the last dimension of '%s' %s",
               (long long)start, (long long)(start + len), x->name, hy_shape_str(x));
    if (x->device == HY_CUDA) return slice_fwd_cuda(t, x, start, len);
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
