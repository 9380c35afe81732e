// The fused GDN decoding kernel (hy_cuda_gdn_decode, cuda/gdn_decode.cu) against the same
// function composed from CPU pieces in fp32: the causal conv over [cache | x], SiLU, the l2
// norms of q and k, the sigmoid gates and hy_gdn_step_cpu (itself checked against a float64
// recurrence in test_gdn.c). Several tokens in a row, so the conv cache and the state carry
// over; odd batch and head counts; D 64, 128, 48 and 160 (the last reads the state in its
// loop, the others hold it in registers); K 4, 3 and 1; norm_qk on and off. The outputs are
// poisoned (0xFF: NaN) before each step. Skipped (exit 77) without a GPU.
//
// Tolerances (relative: max |gpu - cpu| / max |cpu|): o 1e-2 (a bf16 output), S 1e-4 (fp32 on
// both sides from the same bf16 inputs; only the order of the sums differs), the conv cache
// exactly (it holds copies of bf16 inputs).
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../autograd/rng.h"
#include "../autograd/tensor.h"
#include "../cuda/hy_cuda.h"
#include "../cuda/hy_cuda_gdn.h"
#include "../layers/gdn.h"
#include "harness.h"
#include "util_gpu.h"

static void need_gpu(void) {
    if (!hy_cuda_built()) hy_test_skip("built without CUDA");
    if (hy_cuda_device_count() == 0) hy_test_skip("no GPU");
}

static float round_bf16(float x) { return hy_bf16_to_f32(hy_f32_to_bf16(x)); }
static float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

// n values ~ N(0, std^2), rounded to bf16 when bf16 is set.
static float *randn(hy_rng *r, size_t n, float std, int bf16) {
    float *x = (float *)hy_xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        x[i] = std * hy_rng_normal(r);
        if (bf16) x[i] = round_bf16(x[i]);
    }
    return x;
}

static void *to_dev_bf16(const float *x, size_t n) {
    uint16_t *h = (uint16_t *)hy_xmalloc(n * 2);
    for (size_t i = 0; i < n; i++) h[i] = hy_f32_to_bf16(x[i]);
    void *d = hy_cuda_malloc(n * 2);
    hy_cuda_memcpy_h2d(d, h, n * 2);
    free(h);
    return d;
}

static void *to_dev_f32(const float *x, size_t n) {
    void *d = hy_cuda_malloc(n * 4);
    hy_cuda_memcpy_h2d(d, x, n * 4);
    return d;
}

typedef struct {
    int B, H, D, K, norm_qk;
} shape;

// The CPU composition for one token. x (B, 3I), cache (B, 3I, K-1) updated, ab (B, 2H);
// S (B, H, D, D) updated, o (B, H, D) written.
static void cpu_decode(const shape *s, const float *x, const float *w, const float *bias,
                       float *cache, const float *ab, float *S, float *o) {
    const int B = s->B, H = s->H, D = s->D, K = s->K, I = H * D, C = 3 * I;
    float *y = (float *)hy_xmalloc(sizeof(float) * B * C);
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++) {
            float *cr = cache + ((size_t)b * C + c) * (K - 1);
            float acc = bias[c];
            for (int j = 0; j < K - 1; j++) acc += w[c * K + j] * cr[j];
            acc += w[c * K + K - 1] * x[b * C + c];
            for (int j = 0; j + 1 < K - 1; j++) cr[j] = cr[j + 1];
            if (K > 1) cr[K - 2] = x[b * C + c];
            y[b * C + c] = acc * sigmoid(acc);
        }
    // q, k, v in (B, H, D) and the gates in (B, H).
    float *q = (float *)hy_xmalloc(sizeof(float) * B * I), *k = (float *)hy_xmalloc(sizeof(float) * B * I);
    float *v = (float *)hy_xmalloc(sizeof(float) * B * I);
    float *al = (float *)hy_xmalloc(sizeof(float) * B * H), *be = (float *)hy_xmalloc(sizeof(float) * B * H);
    for (int b = 0; b < B; b++) {
        memcpy(q + b * I, y + b * C, sizeof(float) * I);
        memcpy(k + b * I, y + b * C + I, sizeof(float) * I);
        memcpy(v + b * I, y + b * C + 2 * I, sizeof(float) * I);
        for (int h = 0; h < H; h++) {
            al[b * H + h] = sigmoid(ab[b * 2 * H + h]);
            be[b * H + h] = sigmoid(ab[b * 2 * H + H + h]);
        }
    }
    if (s->norm_qk)
        for (int r = 0; r < B * H; r++) {
            float *vecs[2] = {q + r * D, k + r * D};
            for (int m = 0; m < 2; m++) {
                float ss = 0;
                for (int j = 0; j < D; j++) ss += vecs[m][j] * vecs[m][j];
                float den = fmaxf(sqrtf(ss), 1e-12f);
                for (int j = 0; j < D; j++) vecs[m][j] /= den;
            }
        }
    hy_gdn_step_cpu(B, H, D, D, q, k, v, al, be, S, o);
    free(y), free(q), free(k), free(v), free(al), free(be);
}

// Runs `steps` tokens through both and compares o at every token, S and the cache at the end.
static void check_shape(const shape *s, int steps, uint64_t seed) {
    const int B = s->B, H = s->H, D = s->D, K = s->K, I = H * D, C = 3 * I;
    hy_rng r;
    hy_rng_seed(&r, seed);
    const size_t n_x = (size_t)B * C, n_cache = (size_t)B * C * (K - 1), n_ab = (size_t)B * 2 * H;
    const size_t n_S = (size_t)B * H * D * D, n_o = (size_t)B * I;
    float *w = randn(&r, (size_t)C * K, 0.5f, 0), *bias = randn(&r, (size_t)C, 0.1f, 0);
    float *cache = randn(&r, n_cache ? n_cache : 1, 1.0f, 1);
    float *S = randn(&r, n_S, 0.05f, 0), *o = (float *)hy_xmalloc(n_o * sizeof(float));
    void *d_w = to_dev_f32(w, (size_t)C * K), *d_b = to_dev_f32(bias, (size_t)C);
    void *d_cache = n_cache ? to_dev_bf16(cache, n_cache) : NULL;
    float *d_S = (float *)to_dev_f32(S, n_S);
    void *d_x = hy_cuda_malloc(n_x * 2), *d_ab = hy_cuda_malloc(n_ab * 2), *d_o = hy_cuda_malloc(n_o * 2);
    double worst_o = 0;
    for (int t = 0; t < steps; t++) {
        // Unnormalised q and k grow with the conv: keep them small when norm_qk is off.
        float *x = randn(&r, n_x, s->norm_qk ? 1.0f : 0.1f, 1), *ab = randn(&r, n_ab, 1.5f, 1);
        cpu_decode(s, x, w, bias, cache, ab, S, o);
        uint16_t *h = (uint16_t *)hy_xmalloc(n_x * 2);
        for (size_t i = 0; i < n_x; i++) h[i] = hy_f32_to_bf16(x[i]);
        hy_cuda_memcpy_h2d(d_x, h, n_x * 2);
        free(h);
        h = (uint16_t *)hy_xmalloc(n_ab * 2);
        for (size_t i = 0; i < n_ab; i++) h[i] = hy_f32_to_bf16(ab[i]);
        hy_cuda_memcpy_h2d(d_ab, h, n_ab * 2);
        free(h);
        hy_cuda_memset(d_o, 0xFF, n_o * 2);
        hy_cuda_gdn_decode(B, H, D, K, s->norm_qk, d_x, (const float *)d_w, (const float *)d_b, d_cache,
                           d_ab, d_S, d_o, NULL);
        float *og = hy_test_from_dev_bf16(d_o, n_o);
        double e = hy_max_rel_err_f(og, o, (long)n_o);
        if (e > worst_o || e != e) worst_o = e;
        free(og), free(x), free(ab);
    }
    float *Sg = (float *)hy_xmalloc(n_S * sizeof(float));
    hy_cuda_memcpy_d2h(Sg, d_S, n_S * sizeof(float));
    double es = hy_max_rel_err_f(Sg, S, (long)n_S);
    long cache_diff = 0;
    if (n_cache) {
        float *cg = hy_test_from_dev_bf16(d_cache, n_cache);
        for (size_t i = 0; i < n_cache; i++) cache_diff += cg[i] != cache[i];
        free(cg);
    }
    printf("  decode B=%d H=%d D=%3d K=%d norm_qk=%d, %d tokens: o %.2e (worst), S %.2e, cache %ld "
           "differ\n", B, H, D, K, s->norm_qk, steps, worst_o, es, cache_diff);
    HY_ASSERT(worst_o <= 1e-2, "D=%d K=%d: o relative error %.3g > 1e-2", D, K, worst_o);
    HY_ASSERT(es <= 1e-4, "D=%d K=%d: state relative error %.3g > 1e-4", D, K, es);
    HY_ASSERT(cache_diff == 0, "D=%d K=%d: %ld conv cache values differ", D, K, cache_diff);
    free(w), free(bias), free(cache), free(S), free(o), free(Sg);
    hy_cuda_free(d_w), hy_cuda_free(d_b), hy_cuda_free(d_S), hy_cuda_free(d_x);
    hy_cuda_free(d_ab), hy_cuda_free(d_o);
    if (d_cache) hy_cuda_free(d_cache);
}

HY_TEST(gpu_gdn_decode_vs_cpu, "gpu") {
    need_gpu();
    const shape shapes[] = {{3, 3, 64, 4, 1}, {1, 12, 64, 4, 1}, {3, 1, 128, 4, 1},
                            {2, 3, 48, 3, 1}, {3, 3, 64, 1, 1},  {3, 2, 64, 4, 0},
                            {2, 2, 160, 4, 1}};
    for (int i = 0; i < (int)(sizeof shapes / sizeof *shapes); i++) check_shape(&shapes[i], 9, 500 + i);
}

HY_TEST(gpu_gdn_decode_bad_args, "gpu") {
    need_gpu();
    HY_EXPECT_ERROR(hy_cuda_gdn_decode(1, 2, 0, 4, 1, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
                    HY_EXIT_USAGE, "positive");
    HY_EXPECT_ERROR(hy_cuda_gdn_decode(1, 2, 2048, 4, 1, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
                    HY_EXIT_USAGE, "exceeds 1024");
    HY_EXPECT_ERROR(hy_cuda_gdn_decode(1, 2, 64, 4, 1, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
                    HY_EXIT_USAGE, "must not be NULL");
}
