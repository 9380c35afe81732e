// The fused SWA decoding kernel (hy_cuda_swa_decode, cuda/swa.cu) against a host reference:
// RoPE as layers/rope.c defines it (inv_freq in f32 from powf, the angle's cos and sin in
// double), the rotated q and k rounded to bf16 as the GPU's RoPE stores them, a ring of the
// last W keys and values, and softmax attention in double over the visible positions. Many
// tokens in a row, so the ring wraps; positions that start far from 0 (large angles); odd
// batch and head counts; D 64, 128 and 18; the position given as an argument and read from
// device memory (a recorded graph). The output is poisoned (0xFF: NaN) before each token.
// Each token runs twice, with the window staged in shared memory (when it fits) and read
// from the ring (HYDRA_SWA_STAGE=0): the outputs must agree to the bit.
// Skipped (exit 77) without a GPU.
//
// Tolerances: o relative (max |gpu - ref| / max |ref|) 1e-2 (a bf16 output); the ring's
// values exactly (copies of bf16 inputs), its keys relative 1e-2 (one bf16 rounding of a
// rotation whose fp32 products may be fused differently).
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../autograd/rng.h"
#include "../autograd/tensor.h"
#include "../cuda/hy_cuda.h"
#include "../cuda/hy_cuda_swa.h"
#include "harness.h"
#include "util_gpu.h"

static void need_gpu(void) {
    if (!hy_cuda_built()) hy_test_skip("built without CUDA");
    if (hy_cuda_device_count() == 0) hy_test_skip("no GPU");
}

static float bf(float x) { return hy_bf16_to_f32(hy_f32_to_bf16(x)); }

typedef struct {
    int B, H, D, W, steps, dev_pos;
    long long pos0;
} swa_case;

// Rotate the head vector x (D) at position pos into y, rounded to bf16.
static void rotate(const float *x, float *y, int D, long long pos, float base) {
    int half = D / 2;
    for (int i = 0; i < half; i++) {
        float inv = 1.0f / powf(base, (float)(2 * i) / (float)D);
        double ang = (double)pos * (double)inv;
        float co = (float)cos(ang), si = (float)sin(ang);
        y[i] = bf(x[i] * co - x[i + half] * si);
        y[i + half] = bf(x[i + half] * co + x[i] * si);
    }
}

static void check_case(const swa_case *c, uint64_t seed) {
    const int B = c->B, H = c->H, D = c->D, W = c->W, I = H * D;
    const float base = 10000.0f;
    hy_rng r;
    hy_rng_seed(&r, seed);
    const size_t n_qkv = (size_t)B * 3 * I, n_ring = (size_t)B * W * I, n_o = (size_t)B * I;
    // The ring starts as whatever the positions before pos0 left: random bf16 values.
    float *rk = (float *)hy_xmalloc(n_ring * sizeof(float)), *rv = (float *)hy_xmalloc(n_ring * sizeof(float));
    uint16_t *h = (uint16_t *)hy_xmalloc((n_ring > n_qkv ? n_ring : n_qkv) * 2);
    void *d_rk = hy_cuda_malloc(n_ring * 2), *d_rv = hy_cuda_malloc(n_ring * 2);
    float *rings[2] = {rk, rv};
    void *d_rings[2] = {d_rk, d_rv};
    for (int m = 0; m < 2; m++) {
        for (size_t i = 0; i < n_ring; i++) {
            h[i] = hy_f32_to_bf16(hy_rng_normal(&r));
            rings[m][i] = hy_bf16_to_f32(h[i]);
        }
        hy_cuda_memcpy_h2d(d_rings[m], h, n_ring * 2);
    }
    void *d_qkv = hy_cuda_malloc(n_qkv * 2), *d_o = hy_cuda_malloc(n_o * 2);
    long long *d_pos = (long long *)hy_cuda_malloc(sizeof(long long));
    float *qkv = (float *)hy_xmalloc(n_qkv * sizeof(float)), *ref = (float *)hy_xmalloc(n_o * sizeof(float));
    float *q = (float *)hy_xmalloc(D * sizeof(float)), *p = (float *)hy_xmalloc(W * sizeof(double) * 2);
    double worst_o = 0;
    long stage_diff = 0;
    for (int s = 0; s < c->steps; s++) {
        const long long pos = c->pos0 + s, slot = pos % W;
        for (size_t i = 0; i < n_qkv; i++) {
            h[i] = hy_f32_to_bf16(hy_rng_normal(&r));
            qkv[i] = hy_bf16_to_f32(h[i]);
        }
        hy_cuda_memcpy_h2d(d_qkv, h, n_qkv * 2);
        // Reference: ring write, then attention over positions max(0, pos - W + 1) .. pos.
        int n = (int)(pos + 1 < W ? pos + 1 : W);
        for (int b = 0; b < B; b++)
            for (int hh = 0; hh < H; hh++) {
                const float *x = qkv + (size_t)b * 3 * I + (size_t)hh * D;
                float *ks = rk + ((size_t)b * W + slot) * I + (size_t)hh * D;
                float *vs = rv + ((size_t)b * W + slot) * I + (size_t)hh * D;
                rotate(x, q, D, pos, base);
                rotate(x + I, ks, D, pos, base);
                memcpy(vs, x + 2 * I, D * sizeof(float));
                double *sc = (double *)p, mx = -INFINITY, sum = 0;
                for (int j = 0; j < n; j++) {
                    long long sl = (pos - n + 1 + j) % W;
                    const float *kr = rk + ((size_t)b * W + sl) * I + (size_t)hh * D;
                    double dot = 0;
                    for (int d = 0; d < D; d++) dot += (double)q[d] * kr[d];
                    sc[j] = dot / sqrt((double)D);
                    if (sc[j] > mx) mx = sc[j];
                }
                for (int j = 0; j < n; j++) sum += (sc[j] = exp(sc[j] - mx));
                for (int d = 0; d < D; d++) {
                    double acc = 0;
                    for (int j = 0; j < n; j++) {
                        long long sl = (pos - n + 1 + j) % W;
                        acc += sc[j] * rv[((size_t)b * W + sl) * I + (size_t)hh * D + d];
                    }
                    ref[((size_t)b * H + hh) * D + d] = (float)(acc / sum);
                }
            }
        hy_cuda_memset(d_o, 0xFF, n_o * 2);
        if (c->dev_pos) {
            hy_cuda_memcpy_h2d(d_pos, &pos, sizeof pos);
            hy_cuda_swa_decode(B, H, D, W, 0, d_pos, base, d_qkv, d_rk, d_rv, d_o, NULL);
        } else {
            hy_cuda_swa_decode(B, H, D, W, pos, NULL, base, d_qkv, d_rk, d_rv, d_o, NULL);
        }
        float *og = hy_test_from_dev_bf16(d_o, n_o);
        double e = hy_max_rel_err_f(og, ref, (long)n_o);
        if (e > worst_o || e != e) worst_o = e;
        // Again with the window read from the ring instead of staged in shared memory
        // (the ring's slot is written again with the same values): the same bits.
        setenv("HYDRA_SWA_STAGE", "0", 1);
        hy_cuda_memset(d_o, 0xFF, n_o * 2);
        hy_cuda_swa_decode(B, H, D, W, c->dev_pos ? 0 : pos, c->dev_pos ? d_pos : NULL, base, d_qkv,
                           d_rk, d_rv, d_o, NULL);
        unsetenv("HYDRA_SWA_STAGE");
        float *ou = hy_test_from_dev_bf16(d_o, n_o);
        for (size_t i = 0; i < n_o; i++) stage_diff += memcmp(&og[i], &ou[i], sizeof(float)) != 0;
        free(og), free(ou);
    }
    float *gk = hy_test_from_dev_bf16(d_rk, n_ring), *gv = hy_test_from_dev_bf16(d_rv, n_ring);
    double ek = hy_max_rel_err_f(gk, rk, (long)n_ring);
    long v_diff = 0;
    for (size_t i = 0; i < n_ring; i++) v_diff += gv[i] != rv[i];
    printf("  swa decode B=%d H=%d D=%3d W=%d pos %lld..%lld%s: o %.2e (worst), ring k %.2e, "
           "ring v %ld differ, staged vs ring %ld differ\n", B, H, D, W, c->pos0,
           c->pos0 + c->steps - 1, c->dev_pos ? " (position on the device)" : "", worst_o, ek,
           v_diff, stage_diff);
    HY_ASSERT(stage_diff == 0, "D=%d W=%d: %ld outputs differ between the staged and unstaged "
              "kernels", D, W, stage_diff);
    HY_ASSERT(worst_o <= 1e-2, "D=%d W=%d: o relative error %.3g > 1e-2", D, W, worst_o);
    HY_ASSERT(ek <= 1e-2, "D=%d W=%d: ring keys relative error %.3g > 1e-2", D, W, ek);
    HY_ASSERT(v_diff == 0, "D=%d W=%d: %ld ring values differ", D, W, v_diff);
    free(rk), free(rv), free(h), free(qkv), free(ref), free(q), free(p), free(gk), free(gv);
    hy_cuda_free(d_rk), hy_cuda_free(d_rv), hy_cuda_free(d_qkv), hy_cuda_free(d_o);
    hy_cuda_free(d_pos);
}

HY_TEST(gpu_swa_decode_vs_reference, "gpu") {
    need_gpu();
    const swa_case cases[] = {
        {3, 3, 64, 5, 9, 0, 0},     {1, 12, 64, 512, 4, 1, 100000},
        {2, 1, 128, 7, 10, 1, 3},   {3, 2, 18, 4, 6, 0, 0},
        {1, 5, 64, 33, 40, 1, 0},
    };
    for (int i = 0; i < (int)(sizeof cases / sizeof *cases); i++) check_case(&cases[i], 700 + i);
}

HY_TEST(gpu_swa_decode_bad_args, "gpu") {
    need_gpu();
    void *p = hy_cuda_malloc(64);
    HY_EXPECT_ERROR(hy_cuda_swa_decode(1, 1, 63, 4, 0, NULL, 1e4f, p, p, p, p, NULL),
                    HY_EXIT_USAGE, "even");
    HY_EXPECT_ERROR(hy_cuda_swa_decode(1, 1, 512, 4, 0, NULL, 1e4f, p, p, p, p, NULL),
                    HY_EXIT_USAGE, "even");
    HY_EXPECT_ERROR(hy_cuda_swa_decode(1, 1, 64, 4, 0, NULL, -1.0f, p, p, p, p, NULL),
                    HY_EXIT_USAGE, "rope base");
    HY_EXPECT_ERROR(hy_cuda_swa_decode(1, 1, 64, 4, 0, NULL, 1e4f, NULL, p, p, p, NULL),
                    HY_EXIT_USAGE, "NULL");
    hy_cuda_free(p);
}
