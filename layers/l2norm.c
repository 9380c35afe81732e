// l2norm.c: per-head y = x / max(||x||, eps), as PyTorch's F.normalize.
// CPU: f32 in and out. GPU: bf16 in and out, the saved norms and the
// gradients f32, through hy_cuda_l2norm_heads_fwd/_bwd.
#include <limits.h>
#include <math.h>

#include "../autograd/check.h"
#include "../cuda/hy_cuda_ops.h"
#include "ops.h"

typedef struct {
    int64_t vecs, dim;  // number of head vectors (rows * H), head_dim
    float eps;
    hy_tensor *norm;  // (vecs) saved ||x|| per head; x itself is an input and stays alive
} l2norm_ctx;

static void l2norm_backward(hy_tape *t, hy_node *n) {
    l2norm_ctx *c = (l2norm_ctx *)n->ctx;
    const float *dy = hy_f32(hy_grad(t, n->out[0])), *xv = hy_f32(n->in[0]);
    const float *norm = hy_f32(c->norm);
    float *dx = hy_f32(hy_grad_acc(t, n->in[0]));
    int64_t D = c->dim;
    for (int64_t v = 0; v < c->vecs; v++) {
        const float *x = xv + v * D, *g = dy + v * D;
        float *d = dx + v * D;
        float nv = norm[v];
        if (nv < c->eps) {
            // Clamped: y = x / eps, a constant scale (clamp_min passes no
            // gradient to the norm below eps).
            for (int64_t i = 0; i < D; i++) d[i] += g[i] / c->eps;
            continue;
        }
        // y = x / n: dx = (g - y (y . g)) / n = g / n - x (x . g) / n^3
        double dot = 0;
        for (int64_t i = 0; i < D; i++) dot += (double)x[i] * g[i];
        float k = (float)(dot / ((double)nv * nv * nv));
        for (int64_t i = 0; i < D; i++) d[i] += g[i] / nv - x[i] * k;
    }
}

// GPU backward: dx (vecs, D) f32 += from dy (vecs, D) f32, the bf16 input x
// and the saved norm (vecs) f32.
static void l2norm_backward_cuda(hy_tape *t, hy_node *n) {
    l2norm_ctx *c = (l2norm_ctx *)n->ctx;
    const float *dy = hy_f32(hy_grad(t, n->out[0]));  // (vecs, D) f32
    hy_tensor *dx = hy_grad_acc(t, n->in[0]);         // (vecs, D) f32
    if (dx && c->vecs > 0)
        hy_cuda_l2norm_heads_bwd((int)c->vecs, (int)c->dim, c->eps, dy, n->in[0]->data,
                                 hy_f32(c->norm), hy_f32(dx), NULL);
}

// GPU forward: x (vecs, D) bf16 -> y (vecs, D) bf16; saves norm (vecs) f32
// when the op records (x is an input and stays alive).
static hy_tensor *l2norm_fwd_cuda(hy_tape *t, hy_tensor *x, int64_t vecs, int64_t D, float eps) {
    HY_REQUIRE(vecs <= INT_MAX, "l2norm_heads: '%s' %s is too large for the GPU kernels",
               x->name, hy_shape_str(x));
    hy_tensor *y = hy_tape_new(t, HY_BF16, x->ndim, x->shape, "l2norm_heads");  // bf16
    int rec = t->enabled && x->requires_grad;
    hy_tensor *norm = rec ? hy_tape_new(t, HY_F32, 1, &vecs, "l2norm_heads.norm") : NULL;
    if (vecs > 0)
        hy_cuda_l2norm_heads_fwd((int)vecs, (int)D, eps, x->data, y->data,
                                 norm ? hy_f32(norm) : NULL, NULL);
    hy_node *n = hy_tape_record(t, "l2norm_heads", l2norm_backward_cuda, &x, 1, &y, 1);
    if (n) {
        l2norm_ctx *c = (l2norm_ctx *)hy_tape_ctx(t, n, sizeof *c);
        c->vecs = vecs, c->dim = D, c->eps = eps, c->norm = norm;
    }
    return y;
}

hy_tensor *hy_l2norm_heads(hy_tape *t, hy_tensor *x, int head_dim, float eps) {
    const char *op = "l2norm_heads";
    hy_expect_act(op, x);
    int64_t N = hy_last_dim(x);
    HY_REQUIRE(x->ndim >= 1 && head_dim > 0 && N % head_dim == 0,
               "l2norm_heads: head_dim %d does not divide the last dimension (%lld) of '%s' %s",
               head_dim, (long long)N, x->name, hy_shape_str(x));
    HY_REQUIRE(eps >= 0, "l2norm_heads: eps must be >= 0, not %g", (double)eps);
    int64_t D = head_dim, vecs = hy_numel(x) / D;
    if (x->device == HY_CUDA) return l2norm_fwd_cuda(t, x, vecs, D, eps);
    hy_tensor *y = hy_tape_new(t, HY_F32, x->ndim, x->shape, "l2norm_heads");  // (..., H * D)
    hy_tensor *norm = hy_tape_new(t, HY_F32, 1, &vecs, "l2norm_heads.norm");  // (rows * H)
    const float *xv = hy_f32(x);
    float *yv = hy_f32(y), *nv = hy_f32(norm);
    for (int64_t v = 0; v < vecs; v++) {
        const float *xr = xv + v * D;
        double ss = 0;
        for (int64_t i = 0; i < D; i++) ss += (double)xr[i] * xr[i];
        nv[v] = (float)sqrt(ss);
        float den = fmaxf(nv[v], eps);
        for (int64_t i = 0; i < D; i++) yv[v * D + i] = xr[i] / den;
    }
    hy_node *n = hy_tape_record(t, op, l2norm_backward, &x, 1, &y, 1);
    if (n) {
        l2norm_ctx *c = (l2norm_ctx *)hy_tape_ctx(t, n, sizeof *c);
        c->vecs = vecs, c->dim = D, c->eps = eps, c->norm = norm;
    }
    return y;
}
