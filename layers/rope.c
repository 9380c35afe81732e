// rope.c: rotary position embedding, split-half form, on x (B, T, H, D).
//   theta_i = pos * inv_freq_i, inv_freq_i = 1 / base^(2i/D) (in f32, as
//   PyTorch computes it), pos = pos0 + t;
//   y1 = x1 cos - x2 sin, y2 = x2 cos + x1 sin.
// The angle and its cos/sin are taken in double and rounded once, so large
// positions lose no accuracy to an f32 product.
// CPU: f32 in and out. GPU (hy_cuda_rope_fwd/_bwd, the same angles): bf16
// in and out, gradients f32, D at most 512.
#include <limits.h>
#include <math.h>

#include "../autograd/check.h"
#include "../cuda/hy_cuda_ops.h"
#include "ops.h"

typedef struct {
    int64_t B, T, H, D;
    int64_t pos0;
    float base;
} rope_ctx;

// cs (T, D/2, 2): cos and sin of each angle, into arena memory.
static float *rope_table(hy_arena *a, int64_t T, int64_t D, int64_t pos0, float base) {
    int64_t half = D / 2;
    float *cs = (float *)hy_arena_alloc(a, (size_t)(T * half * 2) * sizeof(float));
    for (int64_t i = 0; i < half; i++) {
        float inv_freq = 1.0f / powf(base, (float)(2 * i) / (float)D);
        for (int64_t t = 0; t < T; t++) {
            double ang = (double)(pos0 + t) * (double)inv_freq;
            cs[(t * half + i) * 2] = (float)cos(ang);
            cs[(t * half + i) * 2 + 1] = (float)sin(ang);
        }
    }
    return cs;
}

// y = R(sign * theta) x over all (b, t, h); sign -1 is the transpose (backward).
static void rotate(const float *x, float *y, int accumulate, const float *cs, float sign,
                   int64_t B, int64_t T, int64_t H, int64_t D) {
    int64_t half = D / 2;
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++)
            for (int64_t h = 0; h < H; h++) {
                int64_t off = ((b * T + t) * H + h) * D;
                const float *x1 = x + off, *x2 = x1 + half, *c = cs + t * half * 2;
                float *y1 = y + off, *y2 = y1 + half;
                for (int64_t i = 0; i < half; i++) {
                    float co = c[2 * i], si = sign * c[2 * i + 1];
                    float a = x1[i] * co - x2[i] * si, d = x2[i] * co + x1[i] * si;
                    if (accumulate)
                        y1[i] += a, y2[i] += d;
                    else
                        y1[i] = a, y2[i] = d;
                }
            }
}

static void rope_backward(hy_tape *t, hy_node *n) {
    rope_ctx *c = (rope_ctx *)n->ctx;
    const float *dy = hy_f32(hy_grad(t, n->out[0]));
    float *dx = hy_f32(hy_grad_acc(t, n->in[0]));
    // A rotation's gradient is the inverse rotation: dx += R(-theta) dy.
    hy_arena_mark_t mark = hy_arena_mark(t->scratch);  // dx is allocated before the mark
    float *cs = rope_table(t->scratch, c->T, c->D, c->pos0, c->base);
    rotate(dy, dx, 1, cs, -1.0f, c->B, c->T, c->H, c->D);
    hy_arena_reset_to(t->scratch, mark);
}

// GPU backward: dx (B, T, H, D) f32 += R(-theta) dy, dy (B, T, H, D) f32;
// the kernel recomputes the angles.
static void rope_backward_cuda(hy_tape *t, hy_node *n) {
    rope_ctx *c = (rope_ctx *)n->ctx;
    const float *dy = hy_f32(hy_grad(t, n->out[0]));
    hy_tensor *dx = hy_grad_acc(t, n->in[0]);
    if (dx && c->D > 0)
        hy_cuda_rope_bwd((int)c->B, (int)c->T, (int)c->H, (int)c->D, c->pos0, c->base, dy,
                         hy_f32(dx), NULL);
}

// GPU forward: x (B, T, H, D) bf16 -> y (B, T, H, D) bf16. Saves only sizes
// and positions.
static hy_tensor *rope_fwd_cuda(hy_tape *t, hy_tensor *x, int64_t pos0, float base) {
    int64_t B = x->shape[0], T = x->shape[1], H = x->shape[2], D = x->shape[3];
    HY_REQUIRE(B <= INT_MAX && T <= INT_MAX && H <= INT_MAX && D <= 512,
               "rope: '%s' %s (B, T, H, D) is too large for the GPU kernels (D at most 512)",
               x->name, hy_shape_str(x));
    hy_tensor *y = hy_tape_new(t, HY_BF16, 4, x->shape, "rope");  // (B, T, H, D) bf16
    if (D > 0)
        hy_cuda_rope_fwd((int)B, (int)T, (int)H, (int)D, pos0, base, x->data, y->data, NULL);
    hy_node *n = hy_tape_record(t, "rope", rope_backward_cuda, &x, 1, &y, 1);
    if (n) {
        rope_ctx *c = (rope_ctx *)hy_tape_ctx(t, n, sizeof *c);
        c->B = B, c->T = T, c->H = H, c->D = D, c->pos0 = pos0, c->base = base;
    }
    return y;
}

hy_tensor *hy_rope(hy_tape *t, hy_tensor *x, int64_t pos0, float base) {
    const char *op = "rope";
    hy_expect_act(op, x);
    hy_expect_ndim(op, x, 4);
    int64_t B = x->shape[0], T = x->shape[1], H = x->shape[2], D = x->shape[3];
    HY_REQUIRE(D % 2 == 0, "rope: head dim D = %lld of '%s' %s (B, T, H, D) must be even",
               (long long)D, x->name, hy_shape_str(x));
    HY_REQUIRE(base > 0 && isfinite(base), "rope: base must be a positive number, not %g",
               (double)base);
    HY_REQUIRE(pos0 >= 0, "rope: pos0 must be >= 0, not %lld", (long long)pos0);
    if (x->device == HY_CUDA) return rope_fwd_cuda(t, x, pos0, base);
    hy_tensor *y = hy_tape_new(t, HY_F32, 4, x->shape, "rope");  // (B, T, H, D)
    hy_arena_mark_t mark = hy_arena_mark(t->scratch);
    float *cs = rope_table(t->scratch, T, D, pos0, base);
    rotate(hy_f32(x), hy_f32(y), 0, cs, 1.0f, B, T, H, D);
    hy_arena_reset_to(t->scratch, mark);
    hy_node *n = hy_tape_record(t, op, rope_backward, &x, 1, &y, 1);
    if (n) {
        // Saves only sizes and positions: backward rebuilds the cos/sin table.
        rope_ctx *c = (rope_ctx *)hy_tape_ctx(t, n, sizeof *c);
        c->B = B, c->T = T, c->H = H, c->D = D, c->pos0 = pos0, c->base = base;
    }
    return y;
}
