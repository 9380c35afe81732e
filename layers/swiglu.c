// swiglu.c: [gate | value] -> silu(gate) * value, per row.
// CPU: f32 in and out. GPU: bf16 in and out, gradients f32, through
// hy_cuda_swiglu_fwd/_bwd.
#include <limits.h>
#include <math.h>
#include <string.h>

#include "../autograd/check.h"
#include "../cuda/hy_cuda_ops.h"
#include "ops.h"

typedef struct {
    int64_t rows, hidden;  // H: half the input's last dimension
} swiglu_ctx;

static inline float sigm(float x) { return 1.0f / (1.0f + expf(-x)); }

static void swiglu_backward(hy_tape *t, hy_node *n) {
    swiglu_ctx *c = (swiglu_ctx *)n->ctx;
    const float *dy = hy_f32(hy_grad(t, n->out[0])), *gv = hy_f32(n->in[0]);
    float *d = hy_f32(hy_grad_acc(t, n->in[0]));
    int64_t H = c->hidden;
    for (int64_t r = 0; r < c->rows; r++) {
        const float *g = gv + r * 2 * H, *v = g + H, *dr = dy + r * H;
        float *dg = d + r * 2 * H, *dv = dg + H;
        for (int64_t i = 0; i < H; i++) {
            float s = sigm(g[i]);
            // d silu(g) / dg = s * (1 + g * (1 - s))
            dg[i] += dr[i] * v[i] * s * (1.0f + g[i] * (1.0f - s));
            dv[i] += dr[i] * g[i] * s;
        }
    }
}

// GPU backward: dgv (rows, 2H) f32 += from dy (rows, H) f32 (a new dgv is
// written, not zeroed and added to; in bf16 when the linear that reads it
// allows); the sigmoid is recomputed from the input gv (rows, 2H) bf16.
static void swiglu_backward_cuda(hy_tape *t, hy_node *n) {
    swiglu_ctx *c = (swiglu_ctx *)n->ctx;
    const float *dy = hy_f32(hy_grad(t, n->out[0]));  // (rows, H) f32
    if (c->rows == 0 || c->hidden == 0) return;
    // The gradient straight in bf16 when its reader (a linear) rounds it so.
    void *dh = hy_grad_out_bf16(t, n->in[0]);  // (rows, 2H) bf16, or NULL
    if (dh) {
        hy_cuda_swiglu_bwd_bf16((int)c->rows, (int)c->hidden, dy, n->in[0]->data, dh, NULL);
        return;
    }
    int fresh;
    hy_tensor *d = hy_grad_out(t, n->in[0], &fresh);  // (rows, 2H) f32
    if (d && c->rows > 0 && c->hidden > 0)
        hy_cuda_swiglu_bwd((int)c->rows, (int)c->hidden, dy, n->in[0]->data, hy_f32(d), fresh,
                           NULL);
}

// GPU forward: gv (rows, 2H) bf16 -> y (rows, H) bf16. Saves only sizes.
static void swiglu_fwd_cuda(hy_tensor *gv, hy_tensor *y, int64_t rows, int64_t H) {
    HY_REQUIRE(rows <= INT_MAX && H <= INT_MAX / 2,
               "swiglu: '%s' %s is too large for the GPU kernels", gv->name, hy_shape_str(gv));
    if (rows > 0 && H > 0) hy_cuda_swiglu_fwd((int)rows, (int)H, gv->data, y->data, NULL);
}

hy_tensor *hy_swiglu(hy_tape *t, hy_tensor *gv) {
    const char *op = "swiglu";
    hy_expect_act(op, gv);
    int64_t N = hy_last_dim(gv);
    HY_REQUIRE(gv->ndim >= 1 && N % 2 == 0,
               "swiglu: input '%s' %s: the last dimension (%lld) must be even, "
               "[gate | value] halves",
               gv->name, hy_shape_str(gv), (long long)N);
    int64_t H = N / 2, rows = hy_rows(gv);
    int64_t shape[HY_MAX_DIMS];
    memcpy(shape, gv->shape, sizeof shape);
    shape[gv->ndim - 1] = H;
    if (gv->device == HY_CUDA) {
        hy_tensor *y = hy_tape_new(t, HY_BF16, gv->ndim, shape, "swiglu");  // (..., H) bf16
        swiglu_fwd_cuda(gv, y, rows, H);
        hy_node *n = hy_tape_record(t, op, swiglu_backward_cuda, &gv, 1, &y, 1);
        if (n) {
            swiglu_ctx *c = (swiglu_ctx *)hy_tape_ctx(t, n, sizeof *c);
            c->rows = rows, c->hidden = H;
        }
        return y;
    }
    hy_tensor *y = hy_tape_new(t, HY_F32, gv->ndim, shape, "swiglu");  // (..., H)
    const float *x = hy_f32(gv);
    float *yv = hy_f32(y);
    for (int64_t r = 0; r < rows; r++) {
        const float *g = x + r * 2 * H, *v = g + H;
        for (int64_t i = 0; i < H; i++) yv[r * H + i] = g[i] * sigm(g[i]) * v[i];
    }
    hy_node *n = hy_tape_record(t, op, swiglu_backward, &gv, 1, &y, 1);
    if (n) {
        // Saves only sizes: the sigmoid is recomputed from the input gv.
        swiglu_ctx *c = (swiglu_ctx *)hy_tape_ctx(t, n, sizeof *c);
        c->rows = rows, c->hidden = H;
    }
    return y;
}
