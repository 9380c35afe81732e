// rmsnorm.c: y = x * rsqrt(mean(x^2) + eps) * w, per row.
// CPU: x, y f32. GPU: x, y bf16, w f32 (the master weight), gradients f32,
// through hy_cuda_rmsnorm_fwd/_bwd.
#include <limits.h>
#include <math.h>

#include "../autograd/check.h"
#include "../cuda/hy_cuda_ops.h"
#include "ops.h"

typedef struct {
    int64_t rows, dim;
    hy_tensor *rstd;  // (rows) saved 1/rms; x itself is an input and stays alive
    int add_node;     // GPU: the tape index of the add that made x, when this op reads x
                      // first (its backward adds the last part of dx); -1: none
} rmsnorm_ctx;

static void rmsnorm_backward(hy_tape *t, hy_node *n) {
    hy_tensor *x = n->in[0], *w = n->in[1];
    rmsnorm_ctx *c = (rmsnorm_ctx *)n->ctx;
    const float *dy = hy_f32(hy_grad(t, n->out[0])), *xv = hy_f32(x), *wv = hy_f32(w);
    const float *rstd = hy_f32(c->rstd);
    hy_tensor *dxt = hy_grad_acc(t, x), *dwt = hy_grad_acc(t, w);
    float *dx = dxt ? hy_f32(dxt) : NULL, *dw = dwt ? hy_f32(dwt) : NULL;
    int64_t D = c->dim;
    for (int64_t r = 0; r < c->rows; r++) {
        const float *xr = xv + r * D, *gr = dy + r * D;
        float s = rstd[r];
        // With xhat = x * s: dx = s * (g*w - xhat * mean(g*w*xhat))
        double dot = 0;
        for (int64_t i = 0; i < D; i++) dot += (double)gr[i] * wv[i] * xr[i] * s;
        float m = (float)(dot / D);
        for (int64_t i = 0; i < D; i++) {
            float xhat = xr[i] * s;
            if (dx) dx[r * D + i] += s * (gr[i] * wv[i] - xhat * m);
            if (dw) dw[i] += gr[i] * xhat;
        }
    }
}

// GPU backward: dx (rows, D) f32 and dw (D) f32 accumulate; x (rows, D) bf16
// is the input, rstd (rows) f32 the saved context. The dw partial sums go to
// scratch allocated after the gradients (so they outlive the mark). When x
// is a residual add's output read first here, dx is final after this op
// and the add's backward would round it for its branch: that copy is
// written here, in the same pass.
static void rmsnorm_backward_cuda(hy_tape *t, hy_node *n) {
    hy_tensor *x = n->in[0], *w = n->in[1];
    rmsnorm_ctx *c = (rmsnorm_ctx *)n->ctx;
    const float *dy = hy_f32(hy_grad(t, n->out[0]));  // (rows, D) f32
    hy_tensor *dxt = hy_grad_acc(t, x), *dwt = hy_grad_acc(t, w);
    int rows = (int)c->rows, D = (int)c->dim;
    if (rows == 0 || D == 0) return;
    // Before the mark: the branch's gradient outlives this op.
    void *dx16 = dxt && c->add_node >= 0 ? hy_add_branch_grad_bf16(t, &t->nodes[c->add_node])
                                          : NULL;
    hy_arena_mark_t mark = hy_arena_mark(t->scratch);
    size_t bytes = dwt ? hy_cuda_rmsnorm_bwd_scratch_bytes(rows, D) : 0;
    void *scratch = bytes ? hy_arena_alloc(t->scratch, bytes) : NULL;
    hy_cuda_rmsnorm_bwd_x16(rows, D, dy, x->data, hy_f32(w), hy_f32(c->rstd),
                            dxt ? hy_f32(dxt) : NULL, dx16, dwt ? hy_f32(dwt) : NULL, scratch,
                            bytes, NULL);
    hy_arena_reset_to(t->scratch, mark);  // stream order keeps the kernel's scratch valid
}

// The tape index of the add whose output x is, when it is the last op recorded before
// `node` (marks aside): then `node` is x's first reader. -1 otherwise.
static int add_before(const hy_tape *t, const hy_node *node, const hy_tensor *x) {
    int j = (int)(node - t->nodes) - 1;
    while (j >= 0 && t->nodes[j].is_mark) j--;
    if (j < 0 || !hy_is_add_node(&t->nodes[j]) || t->nodes[j].out[0] != x) return -1;
    return j;
}

// GPU forward: x (rows, D) bf16, w (D) f32 -> y (rows, D) bf16. Saves rstd
// (rows) f32 when the op records (x is an input and stays alive). a != NULL:
// x is new, a + b, computed by the same kernel and recorded as an add first.
static hy_tensor *rmsnorm_fwd_cuda(hy_tape *t, hy_tensor *x, hy_tensor *w, float eps,
                                   hy_tensor *a, hy_tensor *b) {
    int64_t D = w->shape[0], rows = hy_rows(x);
    HY_REQUIRE(rows <= INT_MAX && D <= INT_MAX, "rmsnorm: '%s' %s is too large for the GPU kernels",
               x->name, hy_shape_str(x));
    hy_tensor *y = hy_tape_new(t, HY_BF16, x->ndim, x->shape, "rmsnorm");  // (..., D) bf16
    int in_grad = x->requires_grad || (a && (a->requires_grad || b->requires_grad));
    int rec = t->enabled && (in_grad || w->requires_grad);
    hy_tensor *rstd = rec ? hy_tape_new(t, HY_F32, 1, &rows, "rmsnorm.rstd") : NULL;  // (rows)
    // The backward kernel takes D up to 12288 (hy_cuda_ops.h): fail now, not in backward.
    HY_REQUIRE(!rec || D <= 12288, "rmsnorm: '%s' %s: the GPU backward takes D <= 12288",
               x->name, hy_shape_str(x));
    if (rows > 0 && D > 0 && a)
        hy_cuda_add_rmsnorm_fwd((int)rows, (int)D, eps, a->data, b->data, x->data, hy_f32(w),
                                y->data, rstd ? hy_f32(rstd) : NULL, NULL);
    else if (rows > 0 && D > 0)
        hy_cuda_rmsnorm_fwd((int)rows, (int)D, eps, x->data, hy_f32(w), y->data,
                            rstd ? hy_f32(rstd) : NULL, NULL);
    if (a) hy_add_record(t, a, b, x);
    hy_tensor *ins[2] = {x, w};
    hy_node *n = hy_tape_record(t, "rmsnorm", rmsnorm_backward_cuda, ins, 2, &y, 1);
    if (n) {
        rmsnorm_ctx *c = (rmsnorm_ctx *)hy_tape_ctx(t, n, sizeof *c);
        c->rows = rows, c->dim = D, c->rstd = rstd;
        c->add_node = add_before(t, n, x);
    }
    return y;
}

static void check_args(const char *op, hy_tensor *x, hy_tensor *w) {
    hy_expect_act(op, x);
    hy_expect_dtype(op, w, HY_F32);
    hy_expect_device(op, x, w);
    HY_REQUIRE(w->ndim == 1 && x->ndim >= 1 && hy_last_dim(x) == w->shape[0],
               "%s: input '%s' %s and weight '%s' %s disagree on the last dimension", op,
               x->name, hy_shape_str(x), w->name, hy_shape_str(w));
}

hy_tensor *hy_add_rmsnorm(hy_tape *t, hy_tensor *a, hy_tensor *b, hy_tensor *w, float eps,
                          hy_tensor **sum) {
    const char *op = "add_rmsnorm";
    if (a->device != HY_CUDA || b->device != HY_CUDA) {  // the reference: the two ops
        *sum = hy_add(t, a, b);
        return hy_rmsnorm(t, *sum, w, eps);
    }
    hy_expect_act(op, a);
    hy_expect_act(op, b);
    hy_expect_same_shape(op, a, b);
    check_args(op, a, w);
    *sum = hy_tape_new(t, HY_BF16, a->ndim, a->shape, "add");
    return rmsnorm_fwd_cuda(t, *sum, w, eps, a, b);
}

hy_tensor *hy_rmsnorm(hy_tape *t, hy_tensor *x, hy_tensor *w, float eps) {
    const char *op = "rmsnorm";
    check_args(op, x, w);
    if (x->device == HY_CUDA) return rmsnorm_fwd_cuda(t, x, w, eps, NULL, NULL);
    int64_t D = w->shape[0], rows = hy_rows(x);
    hy_tensor *y = hy_tape_new(t, HY_F32, x->ndim, x->shape, "rmsnorm");  // (..., D)
    hy_tensor *rstd = hy_tape_new(t, HY_F32, 1, &rows, "rmsnorm.rstd");  // (rows)
    const float *xv = hy_f32(x), *wv = hy_f32(w);
    float *yv = hy_f32(y), *rs = hy_f32(rstd);
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = xv + r * D;
        double ss = 0;
        for (int64_t i = 0; i < D; i++) ss += (double)xr[i] * xr[i];
        float s = (float)(1.0 / sqrt(ss / D + eps));
        rs[r] = s;
        for (int64_t i = 0; i < D; i++) yv[r * D + i] = xr[i] * s * wv[i];
    }
    hy_tensor *ins[2] = {x, w};
    hy_node *n = hy_tape_record(t, op, rmsnorm_backward, ins, 2, &y, 1);
    if (n) {
        rmsnorm_ctx *c = (rmsnorm_ctx *)hy_tape_ctx(t, n, sizeof *c);
        c->rows = rows, c->dim = D, c->rstd = rstd;
        c->add_node = -1;  // the CPU add rounds nothing for its branch
    }
    return y;
}
