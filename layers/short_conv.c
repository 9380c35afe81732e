// short_conv.c: causal depthwise convolution, K taps plus bias.
//   y[b,t,c] = bias[c] + sum_j w[c,j] * x[b, t - (K-1) + j, c]
// Positions before 0 read the cache (B, C, K-1), whose last column is
// position -1, or zero without one. The cache gets no gradient. A NULL bias
// counts as zero.
// CPU: x, y and the cache f32. GPU (hy_cuda_short_conv_fwd/_bwd): x, y and
// the cache bf16 (the cache holds past inputs, bf16 already), w and bias f32
// master weights, gradients f32; K at most 16.
#include <limits.h>
#include <string.h>

#include "../autograd/check.h"
#include "../cuda/hy_cuda.h"
#include "../cuda/hy_cuda_ops.h"
#include "ops.h"

typedef struct {
    int64_t B, T, C, K;
    hy_tensor *cache;  // (B, C, K-1) saved copy (callers update caches in place), or NULL
} conv_ctx;

// x at (b, s, c) for s in [-(K-1), T): the input, the cache or zero.
static inline float tap(const float *x, const float *cache, int64_t b, int64_t s, int64_t c,
                        int64_t T, int64_t C, int64_t K) {
    if (s >= 0) return x[(b * T + s) * C + c];
    return cache ? cache[(b * C + c) * (K - 1) + (K - 1) + s] : 0.0f;
}

static void conv_forward(const conv_ctx *c, const float *xv, const float *wv, const float *bv,
                         const float *cache, float *yv) {
    int64_t T = c->T, C = c->C, K = c->K;
    for (int64_t bb = 0; bb < c->B; bb++)
        for (int64_t tt = 0; tt < T; tt++) {
            float *yr = yv + (bb * T + tt) * C;
            for (int64_t ch = 0; ch < C; ch++) {
                float acc = bv ? bv[ch] : 0.0f;
                for (int64_t j = 0; j < K; j++)
                    acc += wv[ch * K + j] * tap(xv, cache, bb, tt - (K - 1) + j, ch, T, C, K);
                yr[ch] = acc;
            }
        }
}

// dx[b,s,c] += sum_j dy[b, s + (K-1) - j, c] * w[c,j]   (taps that land inside [0, T))
static void conv_backward_x(const conv_ctx *c, const float *dy, const float *wv, float *dx) {
    int64_t T = c->T, C = c->C, K = c->K;
    for (int64_t bb = 0; bb < c->B; bb++)
        for (int64_t s = 0; s < T; s++)
            for (int64_t j = 0; j < K; j++) {
                int64_t tt = s + (K - 1) - j;
                if (tt >= T) continue;
                const float *g = dy + (bb * T + tt) * C;
                float *d = dx + (bb * T + s) * C;
                for (int64_t ch = 0; ch < C; ch++) d[ch] += g[ch] * wv[ch * K + j];
            }
}

// aw[c,j] = sum_{b,t} dy[b,t,c] * x[b, t-(K-1)+j, c] (cache included), ab[c] = sum dy[b,t,c]
static void conv_backward_wb(const conv_ctx *c, const float *dy, const float *xv,
                             const float *cache, double *aw, double *ab) {
    int64_t T = c->T, C = c->C, K = c->K;
    for (int64_t bb = 0; bb < c->B; bb++)
        for (int64_t tt = 0; tt < T; tt++) {
            const float *g = dy + (bb * T + tt) * C;
            for (int64_t ch = 0; ch < C; ch++) {
                ab[ch] += g[ch];
                for (int64_t j = 0; j < K; j++)
                    aw[ch * K + j] +=
                        (double)g[ch] * tap(xv, cache, bb, tt - (K - 1) + j, ch, T, C, K);
            }
        }
}

static void conv_backward(hy_tape *t, hy_node *n) {
    conv_ctx *c = (conv_ctx *)n->ctx;
    hy_tensor *x = n->in[0], *w = n->in[1], *b = n->in[2];
    const float *dy = hy_f32(hy_grad(t, n->out[0]));  // (B, T, C)
    hy_tensor *dx = hy_grad_acc(t, x), *dw = hy_grad_acc(t, w);
    hy_tensor *db = b ? hy_grad_acc(t, b) : NULL;
    if (dx) conv_backward_x(c, dy, hy_f32(w), hy_f32(dx));
    if (!dw && !db) return;
    // Weight and bias sums run over B * T terms: accumulate them in double.
    int64_t C = c->C, K = c->K;
    hy_arena_mark_t mark = hy_arena_mark(t->scratch);  // the gradients come before it
    double *aw = (double *)hy_arena_calloc(t->scratch, (size_t)(C * (K + 1)) * sizeof(double));
    double *ab = aw + C * K;  // aw (C, K), ab (C)
    conv_backward_wb(c, dy, hy_f32(x), c->cache ? hy_f32(c->cache) : NULL, aw, ab);
    if (dw)
        for (int64_t i = 0; i < C * K; i++) hy_f32(dw)[i] += (float)aw[i];
    if (db)
        for (int64_t ch = 0; ch < C; ch++) hy_f32(db)[ch] += (float)ab[ch];
    hy_arena_reset_to(t->scratch, mark);
}

// w is (C, 1, K) or (C, K) with C matching x; returns K.
static int64_t check_weight(const hy_tensor *x, const hy_tensor *w) {
    int64_t C = x->shape[2];
    int ok = (w->ndim == 3 && w->shape[1] == 1) || w->ndim == 2;
    ok = ok && w->shape[0] == C && w->shape[w->ndim - 1] >= 1;
    HY_REQUIRE(ok,
               "short_conv: weight '%s' %s does not match input '%s' %s: expected (%lld, 1, K) "
               "or (%lld, K) with K >= 1 for C = %lld channels",
               w->name, hy_shape_str(w), x->name, hy_shape_str(x), (long long)C, (long long)C,
               (long long)C);
    return w->shape[w->ndim - 1];
}

// GPU backward: dx (B, T, C) (written when its buffer is fresh), dw (C, K),
// db (C) f32 accumulate from dy
// (B, T, C) f32, the bf16 input x and the saved bf16 cache copy (or NULL).
// The dw/db partial sums go to scratch allocated after the gradients.
static void conv_backward_cuda(hy_tape *t, hy_node *n) {
    conv_ctx *c = (conv_ctx *)n->ctx;
    hy_tensor *x = n->in[0], *w = n->in[1], *b = n->in[2];
    const float *dy = hy_f32(hy_grad(t, n->out[0]));  // (B, T, C) f32
    int fresh = 0;  // a fresh dx is written, not zeroed and added to
    hy_tensor *dx = hy_grad_out(t, x, &fresh), *dw = hy_grad_acc(t, w);
    hy_tensor *db = b ? hy_grad_acc(t, b) : NULL;
    int B = (int)c->B, T = (int)c->T, C = (int)c->C, K = (int)c->K;
    if ((int64_t)B * T == 0 || C == 0) return;
    hy_arena_mark_t mark = hy_arena_mark(t->scratch);
    size_t bytes = (dw || db) ? hy_cuda_short_conv_bwd_scratch_bytes(B, T, C, K) : 0;
    void *scratch = bytes ? hy_arena_alloc(t->scratch, bytes) : NULL;
    hy_cuda_short_conv_bwd(B, T, C, K, dy, x->data, hy_f32(w), c->cache ? c->cache->data : NULL,
                           dx ? hy_f32(dx) : NULL, fresh, dw ? hy_f32(dw) : NULL,
                           db ? hy_f32(db) : NULL, scratch, bytes, NULL);
    hy_arena_reset_to(t->scratch, mark);  // stream order keeps the kernel's scratch valid
}

// GPU forward: x (B, T, C) bf16, w (C, K) f32, b (C) f32 or NULL, cache
// (B, C, K-1) bf16 or NULL -> y (B, T, C) bf16. Saves a copy of the cache,
// as the CPU op does (decoding updates the cache in place after the forward).
static hy_tensor *conv_fwd_cuda(hy_tape *t, hy_tensor *x, hy_tensor *w, hy_tensor *b,
                                const hy_tensor *cache, int64_t K) {
    int64_t B = x->shape[0], T = x->shape[1], C = x->shape[2];
    HY_REQUIRE(K <= 16, "short_conv: the GPU kernels take at most 16 taps; weight '%s' %s has %lld",
               w->name, hy_shape_str(w), (long long)K);
    HY_REQUIRE(B <= INT_MAX && T <= INT_MAX && C <= INT_MAX,
               "short_conv: '%s' %s is too large for the GPU kernels", x->name, hy_shape_str(x));
    hy_tensor *y = hy_tape_new(t, HY_BF16, 3, x->shape, "short_conv");  // (B, T, C) bf16
    const void *cv = cache && K > 1 ? cache->data : NULL;
    if (B * T > 0 && C > 0)
        hy_cuda_short_conv_fwd((int)B, (int)T, (int)C, (int)K, x->data, hy_f32(w),
                               b ? hy_f32(b) : NULL, cv, y->data, NULL);
    hy_tensor *ins[3] = {x, w, b};
    hy_node *n = hy_tape_record(t, "short_conv", conv_backward_cuda, ins, 3, &y, 1);
    if (n) {
        conv_ctx *c = (conv_ctx *)hy_tape_ctx(t, n, sizeof *c);
        c->B = B, c->T = T, c->C = C, c->K = K;
        if (cv) {
            c->cache = hy_tape_new(t, HY_BF16, 3, cache->shape, "short_conv.cache");
            hy_cuda_memcpy_d2d(c->cache->data, cv, hy_nbytes(cache));
        }
    }
    return y;
}

static void check_args(const hy_tensor *x, const hy_tensor *b, const hy_tensor *cache,
                       int64_t K) {
    const char *op = "short_conv";
    if (b) {
        hy_expect_dtype(op, b, HY_F32);
        hy_expect_device(op, x, b);
        HY_REQUIRE(b->ndim == 1 && b->shape[0] == x->shape[2],
                   "short_conv: bias '%s' %s does not match input '%s' %s (expected (%lld))",
                   b->name, hy_shape_str(b), x->name, hy_shape_str(x), (long long)x->shape[2]);
    }
    if (cache) {
        hy_expect_device(op, x, cache);
        hy_expect_act(op, cache);  // f32 on the CPU, bf16 on the GPU
        HY_REQUIRE(cache->ndim == 3 && cache->shape[0] == x->shape[0] &&
                       cache->shape[1] == x->shape[2] && cache->shape[2] == K - 1,
                   "short_conv: cache '%s' %s does not match input '%s' %s and K = %lld "
                   "(expected (%lld, %lld, %lld))",
                   cache->name, hy_shape_str(cache), x->name, hy_shape_str(x), (long long)K,
                   (long long)x->shape[0], (long long)x->shape[2], (long long)(K - 1));
    }
}

hy_tensor *hy_short_conv(hy_tape *t, hy_tensor *x, hy_tensor *w, hy_tensor *b,
                         const hy_tensor *cache) {
    const char *op = "short_conv";
    hy_expect_act(op, x);
    hy_expect_dtype(op, w, HY_F32);
    hy_expect_ndim(op, x, 3);
    hy_expect_device(op, x, w);
    int64_t K = check_weight(x, w);
    check_args(x, b, cache, K);
    if (x->device == HY_CUDA) return conv_fwd_cuda(t, x, w, b, cache, K);
    int64_t B = x->shape[0], T = x->shape[1], C = x->shape[2];
    hy_tensor *y = hy_tape_new(t, HY_F32, 3, x->shape, "short_conv");  // (B, T, C)
    conv_ctx sz = {B, T, C, K, NULL};
    conv_forward(&sz, hy_f32(x), hy_f32(w), b ? hy_f32(b) : NULL, cache ? hy_f32(cache) : NULL,
                 hy_f32(y));
    hy_tensor *ins[3] = {x, w, b};
    hy_node *n = hy_tape_record(t, op, conv_backward, ins, 3, &y, 1);
    if (n) {
        // x, w and b are inputs and stay alive; the cache is copied (it is
        // small, and decoding overwrites it after the forward).
        conv_ctx *c = (conv_ctx *)hy_tape_ctx(t, n, sizeof *c);
        c->B = B, c->T = T, c->C = C, c->K = K;
        if (cache && K > 1) {
            c->cache = hy_tape_new(t, HY_F32, 3, cache->shape, "short_conv.cache");
            memcpy(hy_f32(c->cache), hy_f32(cache), hy_nbytes(cache));
        }
    }
    return y;
}
