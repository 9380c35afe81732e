// qkv_rope.c: the attention layer's input split. q, k, v (B, T, H, D) from
// qkv (B, T, 3 H D): q = rope(qkv[..., 0:I]), k = rope(qkv[..., I:2I]),
// v = qkv[..., 2I:3I] (I = H D), RoPE at positions pos0 + t.
// CPU: slice_last, a reshape and rope (f32, the ops themselves). GPU: one op
// each way (hy_cuda_qkv_rope_fwd/_bwd), the same angles and roundings as
// those ops: forward reads qkv once and writes q, k, v; backward writes
// d qkv in one pass, in bf16 when its one reader (the projection, a linear
// without bias) rounds it anyway. The separate ops copied three slices,
// rotated q and k in two more passes, and backward added three windows into
// a zeroed 3I-wide f32 gradient.
#include <limits.h>
#include <math.h>

#include "../autograd/check.h"
#include "../cuda/hy_cuda_ops.h"
#include "ops.h"

typedef struct {
    int64_t B, T, H, D, pos0;
    float base;
} qkv_rope_ctx;

static void qkv_rope_backward_cuda(hy_tape *t, hy_node *n) {
    qkv_rope_ctx *c = (qkv_rope_ctx *)n->ctx;
    const float *g[3];  // dq, dk, dv (B, T, H, D) f32, or NULL (no gradient: zero)
    for (int i = 0; i < 3; i++) {
        hy_tensor *gi = hy_grad(t, n->out[i]);
        g[i] = gi ? hy_f32(gi) : NULL;
    }
    hy_tensor *qkv = n->in[0];
    void *dst = hy_grad_out_bf16(t, qkv);  // (B, T, 3I) bf16, or NULL
    int mode = 2;
    if (!dst) {
        int fresh;
        hy_tensor *d = hy_grad_out(t, qkv, &fresh);  // (B, T, 3I) f32
        if (!d) return;
        dst = d->data;
        mode = fresh ? 0 : 1;
    }
    hy_cuda_qkv_rope_bwd((int)c->B, (int)c->T, (int)c->H, (int)c->D, c->pos0, c->base, g[0],
                         g[1], g[2], dst, mode, NULL);
}

static void qkv_rope_cuda(hy_tape *t, hy_tensor *qkv, int64_t H, int64_t D, int64_t pos0,
                          float base, hy_tensor *out[3]) {
    int64_t B = qkv->shape[0], T = qkv->shape[1];
    HY_REQUIRE(B <= INT_MAX && T <= INT_MAX && H <= INT_MAX && D <= 512,
               "qkv_rope: '%s' %s is too large for the GPU kernels (D at most 512)", qkv->name,
               hy_shape_str(qkv));
    int64_t s[4] = {B, T, H, D};
    static const char *names[3] = {"q", "k", "v"};
    for (int i = 0; i < 3; i++) out[i] = hy_tape_new(t, HY_BF16, 4, s, names[i]);  // (B, T, H, D)
    hy_cuda_qkv_rope_fwd((int)B, (int)T, (int)H, (int)D, pos0, base, qkv->data, out[0]->data,
                         out[1]->data, out[2]->data, NULL);
    hy_node *n = hy_tape_record(t, "qkv_rope", qkv_rope_backward_cuda, &qkv, 1, out, 3);
    if (n) {
        qkv_rope_ctx *c = (qkv_rope_ctx *)hy_tape_ctx(t, n, sizeof *c);
        c->B = B, c->T = T, c->H = H, c->D = D, c->pos0 = pos0, c->base = base;
    }
}

void hy_qkv_rope(hy_tape *t, hy_tensor *qkv, int64_t H, int64_t D, int64_t pos0, float base,
                 hy_tensor *out[3]) {
    const char *op = "qkv_rope";
    hy_expect_act(op, qkv);
    hy_expect_ndim(op, qkv, 3);
    HY_REQUIRE(H > 0 && D > 0 && D % 2 == 0 && qkv->shape[2] == 3 * H * D,
               "qkv_rope: '%s' %s must be (B, T, 3 H D) for H %lld heads of an even size D %lld",
               qkv->name, hy_shape_str(qkv), (long long)H, (long long)D);
    HY_REQUIRE(base > 0 && isfinite(base), "qkv_rope: base must be a positive number, not %g",
               (double)base);
    HY_REQUIRE(pos0 >= 0, "qkv_rope: pos0 must be >= 0, not %lld", (long long)pos0);
    if (qkv->device == HY_CUDA) {
        qkv_rope_cuda(t, qkv, H, D, pos0, base, out);
        return;
    }
    int64_t I = H * D, s[4] = {qkv->shape[0], qkv->shape[1], H, D};
    for (int i = 0; i < 3; i++) {
        hy_tensor *y = hy_view(t->acts, hy_slice_last(t, qkv, i * I, I), 4, s);  // (B, T, H, D)
        out[i] = i < 2 ? hy_rope(t, y, pos0, base) : y;
    }
}
