// rmsnorm.c: y = x * rsqrt(mean(x^2) + eps) * w, per row.
#include <math.h>

#include "../autograd/check.h"
#include "ops.h"

typedef struct {
    int64_t rows, dim;
    hy_tensor *rstd;  // (rows) saved 1/rms; x itself is an input and stays alive
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

hy_tensor *hy_rmsnorm(hy_tape *t, hy_tensor *x, hy_tensor *w, float eps) {
    const char *op = "rmsnorm";
    hy_expect_dtype(op, x, HY_F32);
    hy_expect_dtype(op, w, HY_F32);
    hy_expect_cpu(op, x);
    hy_expect_device(op, x, w);
    HY_REQUIRE(w->ndim == 1 && x->ndim >= 1 && hy_last_dim(x) == w->shape[0],
               "rmsnorm: input '%s' %s and weight '%s' %s disagree on the last dimension",
               x->name, hy_shape_str(x), w->name, hy_shape_str(w));
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
    }
    return y;
}
