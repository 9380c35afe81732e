// swiglu.c: [gate | value] -> silu(gate) * value, per row.
#include <math.h>
#include <string.h>

#include "../autograd/check.h"
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

hy_tensor *hy_swiglu(hy_tape *t, hy_tensor *gv) {
    const char *op = "swiglu";
    hy_expect_dtype(op, gv, HY_F32);
    hy_expect_cpu(op, gv);
    int64_t N = hy_last_dim(gv);
    HY_REQUIRE(gv->ndim >= 1 && N % 2 == 0,
               "swiglu: input '%s' %s: the last dimension (%lld) must be even, "
               "[gate | value] halves",
               gv->name, hy_shape_str(gv), (long long)N);
    int64_t H = N / 2, rows = hy_rows(gv);
    int64_t shape[HY_MAX_DIMS];
    memcpy(shape, gv->shape, sizeof shape);
    shape[gv->ndim - 1] = H;
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
