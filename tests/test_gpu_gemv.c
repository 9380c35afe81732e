// The decoding GEMV (hy_cuda_gemv, cuda/gemv.cu) against a float64 reference on the host:
// every input kind (plain, rmsnorm, output gate, SwiGLU), with and without bias and
// residual, one to three projections in a call, the SwiGLU epilogue, at the 115M model's
// sizes (the 16-byte path, batch 1) and at odd ones (the scalar path, batches that leave a
// partial group of four rows). The prologue's u is formed on the host as the contract
// says (fp32, rounded to bf16) and the products are summed in double. Outputs are poisoned (0xFF: NaN) first.
// Skipped (exit 77) without a GPU.
//
// Tolerance: max |gpu - ref| / max |ref| <= 1e-2 per projection (a bf16 output, rounded
// once more after the residual add; the fp32 sums differ from the double ones only in
// order).
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../autograd/rng.h"
#include "../autograd/tensor.h"
#include "../cuda/hy_cuda.h"
#include "../cuda/hy_cuda_gemv.h"
#include "harness.h"

static void need_gpu(void) {
    if (!hy_cuda_built()) hy_test_skip("built without CUDA");
    if (hy_cuda_device_count() == 0) hy_test_skip("no GPU");
}

static float bf(float x) { return hy_bf16_to_f32(hy_f32_to_bf16(x)); }
static float sigm(float x) { return 1.0f / (1.0f + expf(-x)); }

// n bf16 values ~ N(0, std^2) on the host (as floats) and on the device.
static float *randn_bf(hy_rng *r, size_t n, float std, void **dev) {
    float *x = (float *)hy_xmalloc(n * sizeof(float));
    uint16_t *h = (uint16_t *)hy_xmalloc(n * 2);
    for (size_t i = 0; i < n; i++) {
        h[i] = hy_f32_to_bf16(std * hy_rng_normal(r));
        x[i] = hy_bf16_to_f32(h[i]);
    }
    *dev = hy_cuda_malloc(n * 2);
    hy_cuda_memcpy_h2d(*dev, h, n * 2);
    free(h);
    return x;
}

static float *randn_f32(hy_rng *r, size_t n, float mean, float std, void **dev) {
    float *x = (float *)hy_xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = mean + std * hy_rng_normal(r);
    *dev = hy_cuda_malloc(n * 4);
    hy_cuda_memcpy_h2d(*dev, x, n * 4);
    return x;
}

// u (B, K) as the contract defines it.
static float *host_u(hy_gemv_kind kind, int B, int K, const float *x, const float *gate,
                     const float *norm_w, float eps) {
    float *u = (float *)hy_xmalloc(sizeof(float) * B * K);
    for (int b = 0; b < B; b++) {
        const float *xr = x + (size_t)b * (kind == HY_GEMV_SWIGLU ? 2 * K : K);
        float s = 1.0f;
        if (kind == HY_GEMV_RMSNORM) {
            double ss = 0;
            for (int k = 0; k < K; k++) ss += (double)xr[k] * xr[k];
            s = (float)(1.0 / sqrt(ss / K + (double)eps));
        }
        for (int k = 0; k < K; k++) {
            float f = xr[k], v;
            if (kind == HY_GEMV_RMSNORM) v = f * s * norm_w[k];
            else if (kind == HY_GEMV_GATE) v = f * bf(gate[(size_t)b * K + k] * sigm(gate[(size_t)b * K + k]));
            else if (kind == HY_GEMV_SWIGLU) v = f * sigm(f) * xr[K + k];
            else v = f;
            u[(size_t)b * K + k] = bf(v);
        }
    }
    return u;
}

typedef struct {
    int N, bias, residual, in_place;  // in_place: y is the residual's own buffer
    int swiglu;                       // y (B, N/2) = silu(rows < N/2) * rows >= N/2
} proj_spec;

typedef struct {
    hy_gemv_kind kind;
    int B, K, n_out;
    proj_spec p[3];
} gemv_case;

static void check_case(const gemv_case *c, uint64_t seed) {
    const int B = c->B, K = c->K;
    hy_rng r;
    hy_rng_seed(&r, seed);
    void *d_x, *d_gate = NULL, *d_norm = NULL;
    size_t xw = c->kind == HY_GEMV_SWIGLU ? 2 * (size_t)K : (size_t)K;
    float *x = randn_bf(&r, (size_t)B * xw, 1.0f, &d_x), *gate = NULL, *norm = NULL;
    if (c->kind == HY_GEMV_GATE) gate = randn_bf(&r, (size_t)B * K, 1.5f, &d_gate);
    if (c->kind == HY_GEMV_RMSNORM) norm = randn_f32(&r, (size_t)K, 1.0f, 0.2f, &d_norm);
    hy_gemv_in in = {c->kind, d_x, d_gate, (const float *)d_norm, 1e-5f};
    float *u = host_u(c->kind, B, K, x, gate, norm, 1e-5f);
    hy_gemv_out out[3];
    float *W[3], *bias[3], *res[3];
    void *d_W[3], *d_bias[3], *d_res[3], *d_y[3];
    for (int i = 0; i < c->n_out; i++) {
        const proj_spec *p = &c->p[i];
        size_t ny = (size_t)B * (p->swiglu ? p->N / 2 : p->N);
        W[i] = randn_bf(&r, (size_t)p->N * K, 1.0f / sqrtf((float)K), &d_W[i]);
        bias[i] = p->bias ? randn_f32(&r, (size_t)p->N, 0.0f, 0.5f, &d_bias[i]) : NULL;
        res[i] = p->residual ? randn_bf(&r, ny, 1.0f, &d_res[i]) : NULL;
        if (p->residual && p->in_place) {
            d_y[i] = d_res[i];
        } else {
            d_y[i] = hy_cuda_malloc(ny * 2);
            hy_cuda_memset(d_y[i], 0xFF, ny * 2);
        }
        hy_gemv_out o = {d_W[i], p->bias ? (const float *)d_bias[i] : NULL,
                         p->residual ? d_res[i] : NULL, d_y[i], p->N, p->swiglu};
        out[i] = o;
    }
    hy_cuda_gemv(B, K, &in, out, c->n_out, NULL);
    for (int i = 0; i < c->n_out; i++) {
        const proj_spec *p = &c->p[i];
        const int ncol = p->swiglu ? p->N / 2 : p->N;
        size_t ny = (size_t)B * ncol;
        float *ref = (float *)hy_xmalloc(ny * sizeof(float)), *got = (float *)hy_xmalloc(ny * sizeof(float));
        for (int b = 0; b < B; b++)
            for (int n = 0; n < ncol; n++) {
                double acc = p->bias ? bias[i][n] : 0.0;
                for (int k = 0; k < K; k++) acc += (double)W[i][(size_t)n * K + k] * u[(size_t)b * K + k];
                float y = (float)acc;
                if (p->swiglu) {  // the value row m + N/2, and silu(g) v of the bf16 outputs
                    double av = 0.0;
                    for (int k = 0; k < K; k++)
                        av += (double)W[i][(size_t)(n + ncol) * K + k] * u[(size_t)b * K + k];
                    float g = bf(y), v = bf((float)av);
                    y = g * sigm(g) * v;
                }
                if (p->residual) y = res[i][(size_t)b * p->N + n] + bf(y);
                ref[(size_t)b * ncol + n] = bf(y);
            }
        uint16_t *h = (uint16_t *)hy_xmalloc(ny * 2);
        hy_cuda_memcpy_d2h(h, d_y[i], ny * 2);
        for (size_t j = 0; j < ny; j++) got[j] = hy_bf16_to_f32(h[j]);
        double e = hy_max_rel_err_f(got, ref, (long)ny);
        printf("  gemv kind %d B=%d K=%4d proj %d/%d N=%5d bias %d residual %d%s%s: rel err %.2e\n",
               (int)c->kind, B, K, i + 1, c->n_out, p->N, p->bias, p->residual,
               p->in_place ? " (in place)" : "", p->swiglu ? " swiglu" : "", e);
        HY_ASSERT(e <= 1e-2 && e == e, "kind %d B=%d K=%d N=%d: relative error %.3g > 1e-2",
                  (int)c->kind, B, K, p->N, e);
        free(h), free(ref), free(got), free(W[i]);
        if (bias[i]) free(bias[i]), hy_cuda_free(d_bias[i]);
        if (res[i]) free(res[i]), hy_cuda_free(d_res[i]);
        if (!(p->residual && p->in_place)) hy_cuda_free(d_y[i]);
        hy_cuda_free(d_W[i]);
    }
    free(x), free(gate), free(norm), free(u);
    hy_cuda_free(d_x);
    if (d_gate) hy_cuda_free(d_gate);
    if (d_norm) hy_cuda_free(d_norm);
}

HY_TEST(gpu_gemv_vs_reference, "gpu") {
    need_gpu();
    const gemv_case cases[] = {
        // The 115M decoding step: a GDN layer's three input projections, its gated output
        // projection with the residual, the MLP, an SWA layer's qkv and the tied head.
        {HY_GEMV_RMSNORM, 1, 768, 3, {{2304, 0, 0, 0, 0}, {24, 1, 0, 0, 0}, {768, 0, 0, 0, 0}}},
        {HY_GEMV_GATE, 1, 768, 1, {{768, 0, 1, 0, 0}}},
        {HY_GEMV_RMSNORM, 1, 768, 1, {{4096, 0, 0, 0, 0}}},
        {HY_GEMV_RMSNORM, 1, 768, 1, {{4096, 0, 0, 0, 1}}},
        {HY_GEMV_PLAIN, 1, 2048, 1, {{768, 0, 1, 0, 0}}},
        {HY_GEMV_SWIGLU, 1, 2048, 1, {{768, 0, 1, 1, 0}}},
        {HY_GEMV_PLAIN, 1, 768, 1, {{768, 0, 1, 0, 0}}},
        {HY_GEMV_RMSNORM, 1, 768, 1, {{32000, 0, 0, 0, 0}}},
        // Batches of rows (a full group of four and a partial one) at aligned sizes.
        {HY_GEMV_RMSNORM, 6, 96, 2, {{1000, 1, 1, 0, 0}, {7, 0, 0, 0, 0}}},
        {HY_GEMV_SWIGLU, 4, 64, 1, {{33, 1, 1, 1, 0}}},
        // Odd sizes: the scalar path.
        {HY_GEMV_PLAIN, 3, 37, 2, {{5, 1, 0, 0, 0}, {129, 0, 1, 0, 0}}},
        {HY_GEMV_GATE, 5, 45, 3, {{3, 0, 0, 0, 0}, {1, 1, 1, 1, 0}, {77, 1, 0, 0, 0}}},
        {HY_GEMV_RMSNORM, 1, 1, 1, {{3, 1, 1, 0, 0}}},
        {HY_GEMV_SWIGLU, 2, 13, 1, {{19, 0, 0, 0, 0}}},
        // The SwiGLU epilogue: batches, the scalar path.
        {HY_GEMV_RMSNORM, 6, 96, 1, {{34, 0, 0, 0, 1}}},
        {HY_GEMV_PLAIN, 3, 37, 1, {{2, 0, 0, 0, 1}}},
    };
    for (int i = 0; i < (int)(sizeof cases / sizeof *cases); i++) check_case(&cases[i], 900 + i);
}

// The batch-1 kernel with its weights in shared memory (cuda/gemv_resident.cu) against
// the general kernel (HYDRA_GEMV_RESIDENT=0) on the same inputs: the same bits, as both
// sum in the same order. `resident` 1: the call must take the resident kernel; 0: must
// not (a block's rows exceed its shared memory); 2: must on a GPU of 132 SMs or more
// (the 115M model's sizes; fewer SMs give a block more rows).
typedef struct {
    gemv_case c;
    int resident;
} same_case;

static void fill_bf(hy_rng *r, void *dev, size_t n, float std) {
    uint16_t *h = (uint16_t *)hy_xmalloc(n * 2);
    for (size_t i = 0; i < n; i++) h[i] = hy_f32_to_bf16(std * hy_rng_normal(r));
    hy_cuda_memcpy_h2d(dev, h, n * 2);
    free(h);
}

// Runs c with the general kernel, then (with the same inputs, the residuals rewritten) the
// resident one; returns how many output bytes differ.
static long run_both(const same_case *sc, uint64_t seed) {
    const gemv_case *c = &sc->c;
    const int K = c->K;
    hy_rng r;
    void *d_x, *d_gate = NULL, *d_norm = NULL, *d_W[3], *d_bias[3], *d_res[3], *d_y[3][2];
    hy_rng_seed(&r, seed);
    size_t xw = c->kind == HY_GEMV_SWIGLU ? 2 * (size_t)K : (size_t)K;
    free(randn_bf(&r, xw, 1.0f, &d_x));
    if (c->kind == HY_GEMV_GATE) free(randn_bf(&r, (size_t)K, 1.5f, &d_gate));
    if (c->kind == HY_GEMV_RMSNORM) free(randn_f32(&r, (size_t)K, 1.0f, 0.2f, &d_norm));
    hy_gemv_in in = {c->kind, d_x, d_gate, (const float *)d_norm, 1e-5f};
    hy_gemv_out out[3];
    for (int i = 0; i < c->n_out; i++) {
        const proj_spec *p = &c->p[i];
        size_t ny = p->swiglu ? p->N / 2 : p->N;
        free(randn_bf(&r, (size_t)p->N * K, 1.0f / sqrtf((float)K), &d_W[i]));
        d_bias[i] = NULL;
        if (p->bias) free(randn_f32(&r, (size_t)p->N, 0.0f, 0.5f, &d_bias[i]));
        d_res[i] = p->residual ? hy_cuda_malloc(ny * 2) : NULL;
        for (int k = 0; k < 2; k++) {  // in place: y[0] keeps the first run's result
            d_y[i][k] = k == 1 && p->residual && p->in_place ? NULL : hy_cuda_malloc(ny * 2);
            if (d_y[i][k]) hy_cuda_memset(d_y[i][k], 0xFF, ny * 2);
        }
    }
    for (int k = 0; k < 2; k++) {  // k = 0: the general kernel, 1: the resident one
        if (k == 0) setenv("HYDRA_GEMV_RESIDENT", "0", 1);
        else unsetenv("HYDRA_GEMV_RESIDENT");
        for (int i = 0; i < c->n_out; i++) {
            const proj_spec *p = &c->p[i];
            hy_rng rr;  // the same residual both times (an in-place run overwrites it)
            hy_rng_seed(&rr, seed * 31 + i);
            if (p->residual) fill_bf(&rr, d_res[i], p->N, 1.0f);
            hy_gemv_out o = {d_W[i], (const float *)d_bias[i], d_res[i],
                             p->residual && p->in_place ? d_res[i] : d_y[i][k], p->N, p->swiglu};
            out[i] = o;
        }
        int res = hy_cuda_gemv_resident(1, K, &in, out, c->n_out);
        if (k == 0) HY_ASSERT(res == 0, "HYDRA_GEMV_RESIDENT=0 must keep the general kernel");
        if (k == 1 && sc->resident != 2)
            HY_ASSERT(res == sc->resident, "kind %d K=%d N=%d: resident kernel %d, expected %d",
                      (int)c->kind, K, c->p[0].N, res, sc->resident);
        if (k == 1 && sc->resident == 2 && hy_cuda_sm_count() >= 132)
            HY_ASSERT(res == 1, "kind %d K=%d N=%d: the model's call is not on the resident kernel",
                      (int)c->kind, K, c->p[0].N);
        hy_cuda_gemv(1, K, &in, out, c->n_out, NULL);
        for (int i = 0; i < c->n_out && k == 0; i++)
            if (c->p[i].residual && c->p[i].in_place) {
                size_t nb = (size_t)c->p[i].N * 2;
                void *h = hy_xmalloc(nb);
                hy_cuda_memcpy_d2h(h, d_res[i], nb);
                hy_cuda_memcpy_h2d(d_y[i][0], h, nb);
                free(h);
            }
    }
    long diff = 0;
    for (int i = 0; i < c->n_out; i++) {
        const proj_spec *p = &c->p[i];
        size_t ny = (p->swiglu ? p->N / 2 : p->N) * 2;
        uint8_t *a = (uint8_t *)hy_xmalloc(ny), *b = (uint8_t *)hy_xmalloc(ny);
        hy_cuda_memcpy_d2h(a, d_y[i][0], ny);
        hy_cuda_memcpy_d2h(b, p->residual && p->in_place ? d_res[i] : d_y[i][1], ny);
        for (size_t j = 0; j < ny; j++) diff += a[j] != b[j];
        free(a), free(b);
        hy_cuda_free(d_W[i]);
        if (d_bias[i]) hy_cuda_free(d_bias[i]);
        if (d_res[i]) hy_cuda_free(d_res[i]);
        for (int k = 0; k < 2; k++)
            if (d_y[i][k]) hy_cuda_free(d_y[i][k]);
    }
    hy_cuda_free(d_x);
    if (d_gate) hy_cuda_free(d_gate);
    if (d_norm) hy_cuda_free(d_norm);
    return diff;
}

HY_TEST(gpu_gemv_resident_same, "gpu") {
    need_gpu();
    const same_case cases[] = {
        // The 115M decoding step's calls (the tied head stays on the general kernel).
        {{HY_GEMV_RMSNORM, 1, 768, 3, {{2304, 0, 0, 0, 0}, {24, 1, 0, 0, 0}, {768, 0, 0, 0, 0}}},
         2},
        {{HY_GEMV_GATE, 1, 768, 1, {{768, 0, 1, 0, 0}}}, 2},
        {{HY_GEMV_RMSNORM, 1, 768, 1, {{4096, 0, 0, 0, 1}}}, 2},
        {{HY_GEMV_PLAIN, 1, 2048, 1, {{768, 0, 1, 0, 0}}}, 2},
        {{HY_GEMV_RMSNORM, 1, 768, 1, {{32000, 0, 0, 0, 0}}}, 0},
        // Other sizes: K of 1, 4, 5 and 7 chunks a lane, odd row counts, bias with
        // residual, a SwiGLU input with the residual updated in place, four
        // projections' worth of segments crossing block boundaries.
        {{HY_GEMV_RMSNORM, 1, 256, 3, {{1, 1, 1, 0, 0}, {1000, 0, 0, 0, 0}, {333, 0, 1, 0, 0}}}, 1},
        {{HY_GEMV_GATE, 1, 1792, 2, {{130, 1, 1, 0, 0}, {7, 0, 0, 0, 0}}}, 1},
        {{HY_GEMV_RMSNORM, 1, 1024, 1, {{70, 0, 0, 0, 1}}}, 1},
        {{HY_GEMV_SWIGLU, 1, 1280, 1, {{33, 0, 1, 1, 0}}}, 1},
        {{HY_GEMV_PLAIN, 1, 512, 3, {{5, 1, 0, 0, 0}, {129, 0, 1, 0, 0}, {2, 1, 1, 0, 0}}}, 1},
        // An rmsnorm input wider than 1024, and K not a multiple of 256: general kernel.
        {{HY_GEMV_RMSNORM, 1, 2048, 1, {{64, 0, 0, 0, 0}}}, 0},
        {{HY_GEMV_PLAIN, 1, 776, 1, {{64, 0, 0, 0, 0}}}, 0},
    };
    for (int i = 0; i < (int)(sizeof cases / sizeof *cases); i++) {
        long d = run_both(&cases[i], 1700 + i);
        printf("  resident vs general: kind %d K=%4d N=%5d (%d projections): %ld bytes differ\n",
               (int)cases[i].c.kind, cases[i].c.K, cases[i].c.p[0].N, cases[i].c.n_out, d);
        HY_ASSERT(d == 0, "case %d: %ld output bytes differ between the two kernels", i, d);
    }
}

HY_TEST(gpu_gemv_bad_args, "gpu") {
    need_gpu();
    uint16_t *d = (uint16_t *)hy_cuda_malloc(64);
    hy_gemv_in in = {HY_GEMV_PLAIN, d, NULL, NULL, 0.0f};
    hy_gemv_out o = {d, NULL, NULL, d, 1, 0};
    HY_EXPECT_ERROR(hy_cuda_gemv(1, 8, &in, &o, 0, NULL), HY_EXIT_USAGE, "projections");
    HY_EXPECT_ERROR(hy_cuda_gemv(1, HY_GEMV_MAX_K + 1, &in, &o, 1, NULL), HY_EXIT_USAGE, "K");
    hy_gemv_in gate = {HY_GEMV_GATE, d, NULL, NULL, 0.0f};
    HY_EXPECT_ERROR(hy_cuda_gemv(1, 8, &gate, &o, 1, NULL), HY_EXIT_USAGE, "needs gate");
    hy_gemv_in norm = {HY_GEMV_RMSNORM, d, NULL, NULL, 0.0f};
    HY_EXPECT_ERROR(hy_cuda_gemv(1, 8, &norm, &o, 1, NULL), HY_EXIT_USAGE, "needs norm_w");
    hy_gemv_out bad = {d, NULL, NULL, d, 0, 0};
    HY_EXPECT_ERROR(hy_cuda_gemv(1, 8, &in, &bad, 1, NULL), HY_EXIT_USAGE, "N >= 1");
    hy_gemv_out odd = {d, NULL, NULL, d, 3, 1};
    HY_EXPECT_ERROR(hy_cuda_gemv(1, 8, &in, &odd, 1, NULL), HY_EXIT_USAGE, "N even");
    hy_gemv_out two[2] = {{d, NULL, NULL, d, 2, 1}, {d, NULL, NULL, d, 2, 0}};
    HY_EXPECT_ERROR(hy_cuda_gemv(1, 8, &in, two, 2, NULL), HY_EXIT_USAGE, "only one");
    hy_cuda_free(d);
}
