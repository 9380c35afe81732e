// Benchmarks of the GPU GEMM path (cuda/blas.cu, head_ce.cu, optim.cu): the machine's
// ceilings (bf16 GEMM, device copy), the fused head + cross-entropy and Muon, printed and
// never asserted (timings depend on the machine). test_gpu_blas.c checks the same code
// against the CPU. Skipped (exit 77) without a GPU or a CUDA build.
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../autograd/rng.h"
#include "../autograd/tape.h"
#include "../cuda/hy_cuda.h"
#include "../cuda/hy_cuda_blas.h"
#include "../layers/ops.h"
#include "../optim/optim.h"
#include "harness.h"

static void need_gpu(void) {
    if (!hy_cuda_built()) hy_test_skip("built without CUDA");
    if (hy_cuda_device_count() == 0) hy_test_skip("no GPU");
    hy_cuda_blas_init();
}

static void *dev_upload(const void *h, size_t bytes) {
    void *d = hy_cuda_malloc(bytes ? bytes : 1);
    if (bytes) hy_cuda_memcpy_h2d(d, h, bytes);
    return d;
}

// ---------------------------------------------------------------- benchmark
typedef struct {
    int M, N, K;
    void *a, *b, *c;
    size_t bytes;
} bench_arg;

static void run_gemm(void *p) {
    bench_arg *a = (bench_arg *)p;
    hy_cuda_linear_fwd(a->M, a->K, a->N, a->a, a->b, NULL, a->c, NULL);  // C = A B^T
}

static void run_copy(void *p) {
    bench_arg *a = (bench_arg *)p;
    hy_cuda_memcpy_d2d(a->b, a->a, a->bytes);
}

typedef struct {
    int rows, d, V;
    void *h, *E, *s;
    int32_t *t;
    float *loss, *dh, *dE;
    size_t sb;
} head_arg;

static void run_head(void *p) {
    head_arg *a = (head_arg *)p;
    hy_cuda_head_ce(a->rows, a->d, a->V, a->h, a->E, a->t, -100, a->loss, NULL, a->dh, a->dE,
                    a->s, a->sb, NULL);
}

typedef struct {
    hy_cuda_optim_plan *plan;
    hy_optim_config c;
    float *p, *g, *m;
    void *s;
    size_t sb;
} muon_arg;

static void run_muon(void *p) {
    muon_arg *a = (muon_arg *)p;
    hy_cuda_muon_step(a->plan, &a->c, 1.0f, a->p, a->g, a->m, a->s, a->sb, NULL);
}

static void *dev_random_bf16(size_t n, uint64_t seed) {
    uint16_t *h = (uint16_t *)hy_xmalloc(n * 2);
    hy_rng r;
    hy_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) h[i] = hy_f32_to_bf16(hy_rng_uniform(&r) * 2.0f - 1.0f);
    void *d = dev_upload(h, n * 2);
    free(h);
    return d;
}

HY_TEST(gpu_gemm_bench, "gpu") {
    need_gpu();
    char info[256];
    printf("  device: %s\n", hy_cuda_device_info(0, info, sizeof info));
    // bf16 GEMM 8192^3, C bf16 = A B^T (the layout of linear_fwd), random data.
    const int S = 8192;
    size_t n = (size_t)S * S;
    bench_arg g = {S, S, S, dev_random_bf16(n, 1), dev_random_bf16(n, 2), hy_cuda_malloc(n * 2), 0};
    float ms = hy_cuda_time_ms(run_gemm, &g, 3, 10);
    printf("  bf16 GEMM %d^3 (fp32 accumulate, bf16 out): %.3f ms median of 10, %.1f TFLOP/s\n",
           S, ms, 2.0 * S * S * (double)S / (ms * 1e-3) / 1e12);
    hy_cuda_free(g.a);
    hy_cuda_free(g.b);
    hy_cuda_free(g.c);

    // Device-to-device copy of 1 GiB.
    bench_arg c = {0, 0, 0, hy_cuda_malloc((size_t)1 << 30), hy_cuda_malloc((size_t)1 << 30), NULL,
                   (size_t)1 << 30};
    hy_cuda_memset(c.a, 1, c.bytes);
    ms = hy_cuda_time_ms(run_copy, &c, 3, 10);
    printf("  device-to-device copy 1 GiB: %.3f ms median of 10, %.0f GB/s read+write "
           "(%.0f GB/s one way)\n",
           ms, 2.0 * c.bytes / (ms * 1e-3) / 1e9, c.bytes / (ms * 1e-3) / 1e9);
    hy_cuda_free(c.a);
    hy_cuda_free(c.b);

    // Fused head + cross-entropy, forward and backward, at a GPT-2-like size:
    // 3 GEMMs of 2 rows V d flops each.
    head_arg h = {8192, 2048, 50304, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 0};
    h.h = dev_random_bf16((size_t)h.rows * h.d, 3);
    h.E = dev_random_bf16((size_t)h.V * h.d, 4);
    int32_t *tg = (int32_t *)hy_xmalloc(h.rows * sizeof(int32_t));
    for (int i = 0; i < h.rows; i++) tg[i] = (i * 7919) % h.V;
    h.t = (int32_t *)dev_upload(tg, h.rows * sizeof(int32_t));
    free(tg);
    h.loss = (float *)hy_cuda_malloc(4);
    h.dh = (float *)hy_cuda_malloc((size_t)h.rows * h.d * 4);
    h.dE = (float *)hy_cuda_malloc((size_t)h.V * h.d * 4);
    hy_cuda_memset(h.dh, 0, (size_t)h.rows * h.d * 4);
    hy_cuda_memset(h.dE, 0, (size_t)h.V * h.d * 4);
    int chunks[2] = {1024, 4096};
    for (int k = 0; k < 2; k++) {
        h.sb = hy_cuda_head_ce_scratch_bytes(h.rows, h.V, chunks[k]);
        h.s = hy_cuda_malloc(h.sb);
        ms = hy_cuda_time_ms(run_head, &h, 2, 10);
        printf("  head_ce rows %d d %d V %d chunk %d (scratch %.0f MiB): %.3f ms, %.1f TFLOP/s "
               "effective\n",
               h.rows, h.d, h.V, chunks[k], h.sb / 1048576.0, ms,
               6.0 * h.rows * (double)h.V * h.d / (ms * 1e-3) / 1e12);
        hy_cuda_free(h.s);
    }
    hy_cuda_free(h.h);
    hy_cuda_free(h.E);
    hy_cuda_free(h.t);
    hy_cuda_free(h.loss);
    hy_cuda_free(h.dh);
    hy_cuda_free(h.dE);

    // One Muon step of a (2048, 5632) matrix (5 Newton-Schulz iterations).
    hy_cuda_param_range r;
    memset(&r, 0, sizeof r);
    r.rows = 2048, r.cols = 5632, r.muon = 1, r.wd_mult = 1.0f;
    muon_arg m;
    m.plan = hy_cuda_optim_plan_create(&r, 1);
    m.c = hy_optim_defaults();
    m.c.kind = HY_OPTIM_MUON_HYBRID;
    size_t N = (size_t)r.rows * r.cols;
    m.p = (float *)hy_cuda_malloc(N * 4);
    m.g = (float *)hy_cuda_malloc(N * 4);
    m.m = (float *)hy_cuda_malloc(N * 4);
    hy_cuda_memset(m.p, 0, N * 4);
    hy_cuda_memset(m.m, 0, N * 4);
    void *gb = dev_random_bf16(N, 5);
    hy_cuda_bf16_to_f32(gb, m.g, N, NULL);
    hy_cuda_free(gb);
    m.sb = hy_cuda_optim_scratch_bytes(m.plan);
    m.s = hy_cuda_malloc(m.sb);
    ms = hy_cuda_time_ms(run_muon, &m, 2, 10);
    double ns_flops = 5.0 * (2.0 * 2048.0 * 2048 * 5632 * 2 + 2.0 * 2048.0 * 2048 * 2048);
    printf("  muon step (2048, 5632), 5 Newton-Schulz steps: %.3f ms, %.1f TFLOP/s in the GEMMs\n",
           ms, ns_flops / (ms * 1e-3) / 1e12);
    hy_cuda_free(m.p);
    hy_cuda_free(m.g);
    hy_cuda_free(m.m);
    hy_cuda_free(m.s);
    hy_cuda_optim_plan_destroy(m.plan);
}

// The Muon step of the 115M model's matrices (configs/hydra-115m.ini: d 768,
// 12 layers, 9 of them GDN with a gate): qkv (2304, 768), o (768, 768),
// gate (768, 768) in GDN layers, w_fused (4096, 768), w_down (768, 2048):
// 57 matrices in 4 shapes. Batched (one plan: 4 batches) against one plan
// per matrix (57 batches of one, the launch count of the former
// one-matrix-at-a-time code). Timing only: nothing asserted.
typedef struct {
    hy_cuda_optim_plan **plans;
    int n;
    hy_optim_config c;
    float *p, *g, *m;
    void *s;
    size_t sb;
} muon_set_arg;

static void run_muon_set(void *a_) {
    muon_set_arg *a = (muon_set_arg *)a_;
    for (int i = 0; i < a->n; i++)
        hy_cuda_muon_step(a->plans[i], &a->c, 1.0f, a->p, a->g, a->m, a->s, a->sb, NULL);
}

HY_TEST(gpu_muon_bench, "gpu") {
    need_gpu();
    enum { LAYERS = 12, MAXM = 5 * LAYERS };
    hy_cuda_param_range r[MAXM];
    int n = 0;
    size_t off = 0;
    for (int l = 0; l < LAYERS; l++) {
        int gdn = l % 4 != 3;  // swa_every = 4
        int64_t shapes[5][2] = {{2304, 768}, {768, 768}, {768, 768}, {4096, 768}, {768, 2048}};
        for (int k = 0; k < 5; k++) {
            if (k == 2 && !gdn) continue;
            memset(&r[n], 0, sizeof r[n]);
            r[n].offset = r[n].m_offset = off, r[n].rows = shapes[k][0], r[n].cols = shapes[k][1];
            r[n].wd_mult = 1.0f, r[n].muon = 1;
            off += (size_t)(r[n].rows * r[n].cols + 15) / 16 * 16;
            n++;
        }
    }
    HY_ASSERT(n == 57, "115M Muon set: %d matrices, expected 57", n);
    muon_set_arg a;
    memset(&a, 0, sizeof a);
    a.c = hy_optim_defaults();
    a.c.kind = HY_OPTIM_MUON_HYBRID;
    a.c.muon_weight_decay = 0.1f;
    hy_cuda_optim_plan *all = hy_cuda_optim_plan_create(r, n);
    hy_cuda_optim_plan *one[MAXM];
    size_t sb_all = hy_cuda_optim_scratch_bytes(all), sb_one = 0;
    for (int i = 0; i < n; i++) {
        one[i] = hy_cuda_optim_plan_create(&r[i], 1);
        size_t b = hy_cuda_optim_scratch_bytes(one[i]);
        if (b > sb_one) sb_one = b;
    }
    a.sb = sb_all > sb_one ? sb_all : sb_one;
    a.s = hy_cuda_malloc(a.sb);
    a.p = (float *)hy_cuda_malloc(off * 4);
    a.g = (float *)hy_cuda_malloc(off * 4);
    a.m = (float *)hy_cuda_malloc(off * 4);
    hy_cuda_memset(a.p, 0, off * 4);
    hy_cuda_memset(a.m, 0, off * 4);
    void *gb = dev_random_bf16(off, 6);
    hy_cuda_bf16_to_f32(gb, a.g, off, NULL);
    hy_cuda_free(gb);
    for (int exact = 0; exact <= 1; exact++) {
        hy_cuda_optim_plan_set_ns_fp32(all, exact);
        for (int i = 0; i < n; i++) hy_cuda_optim_plan_set_ns_fp32(one[i], exact);
        a.plans = &all, a.n = 1;
        float ms_b = hy_cuda_time_ms(run_muon_set, &a, 2, 10);
        a.plans = one, a.n = n;
        float ms_1 = hy_cuda_time_ms(run_muon_set, &a, 2, 10);
        printf("  115M Muon set (57 matrices, 4 shapes, %s Newton-Schulz): batched %.3f ms "
               "(scratch %.1f MiB), one plan per matrix %.3f ms (scratch %.1f MiB): %.2fx\n",
               exact ? "fp32" : "bf16", ms_b, sb_all / 1048576.0, ms_1, sb_one / 1048576.0,
               ms_1 / ms_b);
    }
    for (int i = 0; i < n; i++) hy_cuda_optim_plan_destroy(one[i]);
    hy_cuda_optim_plan_destroy(all);
    hy_cuda_free(a.s);
    hy_cuda_free(a.p);
    hy_cuda_free(a.g);
    hy_cuda_free(a.m);
}
