// GPU basic ops (cuda/hy_cuda_ops.h) against the CPU reference ops
// (layers/ops.h). Skipped (exit 77) without a GPU or a CUDA build.
//
// Every test draws random inputs, rounds the ones that are bf16 on the GPU
// to bf16 first (so both sides see the same values), runs the CPU op on a
// host tape (forward, then backward from a random seed gradient dy) and the
// CUDA op, and prints and checks max|gpu - cpu| / max|cpu| per output:
//   * bf16 outputs: <= 1e-2 (one bf16 rounding is 2^-9 relative);
//   * fp32 outputs and gradients computed in fp32 from the same inputs:
//     <= 1e-4 (the CPU sums some terms in double; embedding, slice and mean,
//     which are copies or plain sums, <= 1e-5).
// Outputs are poisoned with 0xFF bytes (NaN in bf16 and fp32) before the
// run, so an element a kernel fails to write shows up as a NaN error.
// Gradient buffers are pre-filled with random values: the GPU backward must
// ADD to them (the check is gpu - prefill against the CPU gradient, relative
// to max|cpu gradient|). Each op runs once with odd sizes (the scalar path)
// and once with rows that are multiples of 8 (the 16-byte vector path); the
// backward ops with fp32 operands (vectors of 4) also with rows that are a
// multiple of 4 but not of 8, and with pointers offset by one element (the
// scalar fallback). gpu_op_stream_large runs the streaming backwards on
// tensors larger than one grid (every thread walks several units) against
// host references; gpu_op_bench prints times and bandwidths (never asserted).
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../autograd/rng.h"
#include "../autograd/tape.h"
#include "../cuda/hy_cuda.h"
#include "../cuda/hy_cuda_blas.h"
#include "../cuda/hy_cuda_ops.h"
#include "../layers/ops.h"
#include "../layers/model.h"
#include "harness.h"

static void need_gpu(void) {
    if (!hy_cuda_built()) hy_test_skip("built without CUDA");
    if (hy_cuda_device_count() == 0) hy_test_skip("no GPU");
}

// ================================================================ memory
// Host and device buffers of one test, freed together at its end.
#define MAX_BUFS 1024
static void *g_host[MAX_BUFS], *g_dev[MAX_BUFS];
static int g_nhost, g_ndev;

static void *hbuf(size_t bytes) {
    HY_CHECK(g_nhost < MAX_BUFS, "test_gpu_ops: too many host buffers");
    void *p = hy_xcalloc(1, bytes ? bytes : 1);
    g_host[g_nhost++] = p;
    return p;
}

static void *dbuf(size_t bytes) {
    HY_CHECK(g_ndev < MAX_BUFS, "test_gpu_ops: too many device buffers");
    void *p = hy_cuda_malloc(bytes ? bytes : 16);
    hy_cuda_memset(p, 0xFF, bytes ? bytes : 16);  // poison: NaN in bf16 and fp32
    g_dev[g_ndev++] = p;
    return p;
}

static void free_all(void) {
    for (int i = 0; i < g_nhost; i++) free(g_host[i]);
    for (int i = 0; i < g_ndev; i++) hy_cuda_free(g_dev[i]);
    g_nhost = g_ndev = 0;
}

// ================================================================ host data
static float *randn(hy_rng *r, size_t n, float mean, float std) {
    float *v = (float *)hbuf(n * sizeof(float));
    for (size_t i = 0; i < n; i++) v[i] = mean + std * hy_rng_normal(r);
    return v;
}

static void round_bf16(float *v, size_t n) {
    for (size_t i = 0; i < n; i++) v[i] = hy_bf16_to_f32(hy_f32_to_bf16(v[i]));
}

// A gradient buffer's prefill: random, of the size of the gradient `ref`
// that will be added to it (a prefill much larger than the gradient would
// swamp it in fp32 rounding).
static float *prefill(hy_rng *r, const float *ref, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++)
        if (fabs((double)ref[i]) > m) m = fabs((double)ref[i]);
    return randn(r, n, 0.0f, m > 0 ? (float)m : 1.0f);
}

// Random values already rounded to bf16.
static float *randn_bf16(hy_rng *r, size_t n, float mean, float std) {
    float *v = randn(r, n, mean, std);
    round_bf16(v, n);
    return v;
}

// ================================================================ device data
// Device bf16 copy of v (n), `pad` poisoned elements in front (pad = 1
// misaligns the returned pointer by 2 bytes: the scalar fallback).
static void *up_bf16(const float *v, size_t n, int pad) {
    uint16_t *h = (uint16_t *)hbuf((n + pad) * sizeof(uint16_t));
    for (int i = 0; i < pad; i++) h[i] = 0xFFFF;
    for (size_t i = 0; i < n; i++) h[pad + i] = hy_f32_to_bf16(v[i]);
    uint16_t *d = (uint16_t *)dbuf((n + pad) * sizeof(uint16_t));
    hy_cuda_memcpy_h2d(d, h, (n + pad) * sizeof(uint16_t));
    return d + pad;
}

static float *up_f32(const float *v, size_t n, int pad) {
    float *d = (float *)dbuf((n + pad) * sizeof(float));
    hy_cuda_memcpy_h2d(d + pad, v, n * sizeof(float));
    return d + pad;
}

static int32_t *up_i32(const int32_t *v, size_t n) {
    int32_t *d = (int32_t *)dbuf(n * sizeof(int32_t));
    hy_cuda_memcpy_h2d(d, v, n * sizeof(int32_t));
    return d;
}

// A poisoned device output of n bf16 / fp32 elements.
static void *out_bf16(size_t n, int pad) { return (uint16_t *)dbuf((n + pad) * 2) + pad; }
static float *out_f32(size_t n, int pad) { return (float *)dbuf((n + pad) * 4) + pad; }

static float *down_bf16(const void *d, size_t n) {
    uint16_t *h = (uint16_t *)hbuf(n * sizeof(uint16_t));
    float *v = (float *)hbuf(n * sizeof(float));
    hy_cuda_synchronize();
    hy_cuda_memcpy_d2h(h, d, n * sizeof(uint16_t));
    for (size_t i = 0; i < n; i++) v[i] = hy_bf16_to_f32(h[i]);
    return v;
}

static float *down_f32(const float *d, size_t n) {
    float *v = (float *)hbuf(n * sizeof(float));
    hy_cuda_synchronize();
    hy_cuda_memcpy_d2h(v, d, n * sizeof(float));
    return v;
}

// ================================================================ checks
// max |got - pre - ref| / max |ref| (pre may be NULL); NaN anywhere -> NaN.
static double rel_err(const float *got, const float *pre, const float *ref, size_t n) {
    double diff = 0, scale = 0;
    for (size_t i = 0; i < n; i++) {
        double want = (double)ref[i] + (pre ? (double)pre[i] : 0.0);
        double d = fabs((double)got[i] - want);
        if (d > diff || d != d) diff = d;
        if (fabs((double)ref[i]) > scale) scale = fabs((double)ref[i]);
    }
    return diff / (scale > 0 ? scale : 1);
}

static void expect_err(const char *cfg, const char *what, double err, double tol) {
    printf("  %-34s %-10s max rel err %.3e (tol %.0e)%s\n", cfg, what, err, tol,
           err <= tol ? "" : (err != err ? "  <- NaN: an element was not written" : "  <- FAIL"));
    HY_ASSERT(err <= tol, "%s: %s max relative error %.3e is above %.0e%s", cfg, what, err, tol,
              err != err ? " (NaN: an element was left unwritten, or the op made a NaN)" : "");
}

static void expect_bits(const char *cfg, const char *what, const void *a, const void *b,
                        size_t bytes) {
    int same = memcmp(a, b, bytes) == 0;
    printf("  %-34s %-10s %s\n", cfg, what, same ? "bitwise equal" : "DIFFERENT  <- FAIL");
    HY_ASSERT(same, "%s: %s is not bitwise reproducible", cfg, what);
}

// ================================================================ CPU side
typedef struct {
    hy_arena in, acts, scratch;
    hy_tape tape;
} cpu_env;

static void cpu_init(cpu_env *e) {
    hy_arena_init(&e->in, "gpu-ops-in", HY_CPU, (size_t)32 << 20);
    hy_arena_init(&e->acts, "gpu-ops-acts", HY_CPU, (size_t)32 << 20);
    hy_arena_init(&e->scratch, "gpu-ops-scratch", HY_CPU, (size_t)32 << 20);
    hy_tape_init(&e->tape, &e->acts, &e->scratch, 64, 64);
}

static void cpu_free(cpu_env *e) {
    hy_tape_free(&e->tape);
    hy_arena_free(&e->acts);
    hy_arena_free(&e->scratch);
    hy_arena_free(&e->in);
}

// A host f32 tensor holding v; with grad, its gradient is bound to a zeroed
// buffer returned in *grad (bind every input before the forward).
static hy_tensor *cpu_tensor(cpu_env *e, int ndim, const int64_t *shape, const float *v,
                             const char *name, float **grad) {
    hy_tensor *t = hy_tensor_new(&e->in, HY_F32, ndim, shape, name);
    memcpy(t->data, v, hy_nbytes(t));
    if (grad) {
        hy_tensor *g = hy_zeros_like(&e->in, t, name);
        hy_tape_bind_grad(&e->tape, t, g);
        *grad = hy_f32(g);
    }
    return t;
}

static hy_tensor *cpu_ids(cpu_env *e, int ndim, const int64_t *shape, const int32_t *v) {
    hy_tensor *t = hy_tensor_new(&e->in, HY_I32, ndim, shape, "ids");
    memcpy(t->data, v, hy_nbytes(t));
    return t;
}

// ================================================================ conversions
HY_TEST(gpu_op_convert, "gpu") {
    need_gpu();
    hy_rng r;
    hy_rng_seed(&r, 101);
    for (int pad = 0; pad <= 1; pad++) {
        size_t n = 1001 + 64 * (size_t)(1 - pad);
        float *x = randn(&r, n, 0.0f, 3.0f);
        // Special values: ties (round to even), signed zeros, inf, NaN, the
        // largest floats (round up to inf), denormals.
        for (size_t i = 0; i < 64; i++) {
            uint32_t u = ((uint32_t)hy_rng_below(&r, 0x7f00) << 16) | 0x8000u;  // exact ties
            if (i & 1) u |= 0x80000000u;
            memcpy(&x[i * 7], &u, 4);
        }
        float specials[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, 3.4028235e38f, -3.4e38f,
                            1e-40f, -1e-45f, 1.0f, 1.00390625f, 1.01171875f};
        memcpy(x + n - 12, specials, sizeof specials);
        char cfg[64];
        snprintf(cfg, sizeof cfg, "n=%zu%s", n, pad ? " misaligned" : "");

        float *dx = up_f32(x, n, pad);
        uint16_t *dy = (uint16_t *)out_bf16(n, pad);
        hy_cuda_f32_to_bf16(dx, dy, n, NULL);
        uint16_t *got = (uint16_t *)hbuf(n * 2), *want = (uint16_t *)hbuf(n * 2);
        hy_cuda_synchronize();
        hy_cuda_memcpy_d2h(got, dy, n * 2);
        for (size_t i = 0; i < n; i++) want[i] = hy_f32_to_bf16(x[i]);
        expect_bits(cfg, "f32->bf16", got, want, n * 2);
        for (size_t i = 0; i < n; i++)
            if (got[i] != want[i]) {
                printf("    first difference at %zu: x %a -> gpu 0x%04x, cpu 0x%04x\n", i,
                       (double)x[i], got[i], want[i]);
                break;
            }

        float *back = out_f32(n, pad);
        hy_cuda_bf16_to_f32(dy, back, n, NULL);
        float *b = down_f32(back, n), *bw = (float *)hbuf(n * 4);
        for (size_t i = 0; i < n; i++) bw[i] = hy_bf16_to_f32(want[i]);
        expect_bits(cfg, "bf16->f32", b, bw, n * 4);
    }
    free_all();
}

// ================================================================ embedding
static void check_embedding(hy_rng *r, int rows, int D, int V) {
    char cfg[96];
    snprintf(cfg, sizeof cfg, "rows=%d D=%d V=%d", rows, D, V);
    float *w = randn(r, (size_t)V * D, 0.0f, 1.0f);  // fp32 master: not rounded
    int32_t *ids = (int32_t *)hbuf((size_t)rows * 4);
    for (int i = 0; i < rows; i++) ids[i] = (int32_t)hy_rng_below(r, (uint64_t)V);
    int pad = ids[3];
    float *dy = randn(r, (size_t)rows * D, 0.0f, 1.0f);

    cpu_env e;
    cpu_init(&e);
    int64_t ws[2] = {V, D}, is[1] = {rows};
    float *gw;
    hy_tensor *tw = cpu_tensor(&e, 2, ws, w, "w", &gw);
    hy_tensor *y = hy_embedding(&e.tape, tw, cpu_ids(&e, 1, is, ids), pad);
    hy_tape_backward_seed(&e.tape, y, dy);

    float *d_w = up_f32(w, (size_t)V * D, 0);
    int32_t *d_ids = up_i32(ids, rows);
    void *d_y = out_bf16((size_t)rows * D, 0);
    hy_cuda_embedding_fwd(rows, D, V, d_w, d_ids, d_y, NULL);
    float *gy = down_bf16(d_y, (size_t)rows * D);
    expect_err(cfg, "y", rel_err(gy, NULL, hy_f32(y), (size_t)rows * D), 1e-2);
    // Stronger: each row is exactly bf16(weight row).
    int exact = 1;
    for (size_t i = 0; i < (size_t)rows * D; i++)
        if (gy[i] != hy_bf16_to_f32(hy_f32_to_bf16(hy_f32(y)[i]))) exact = 0;
    HY_ASSERT(exact, "%s: y is not bf16(weight[id]) bit for bit", cfg);

    float *pre = prefill(r, gw, (size_t)V * D);
    float *d_gw = up_f32(pre, (size_t)V * D, 0);
    hy_cuda_embedding_bwd(rows, D, V, up_f32(dy, (size_t)rows * D, 0), d_ids, pad, d_gw, NULL);
    float *ggw = down_f32(d_gw, (size_t)V * D);
    expect_err(cfg, "dweight", rel_err(ggw, pre, gw, (size_t)V * D), 1e-5);
    HY_ASSERT(memcmp(ggw + (size_t)pad * D, pre + (size_t)pad * D, (size_t)D * 4) == 0,
              "%s: the padding row %d got a gradient", cfg, pad);

    // Out-of-range ids: a NaN row forward, nothing backward.
    ids[1] = V;
    ids[2] = -1;
    int32_t *d_bad = up_i32(ids, rows);
    hy_cuda_embedding_fwd(rows, D, V, d_w, d_bad, d_y, NULL);
    float *gb = down_bf16(d_y, (size_t)rows * D);
    int nan_rows = 1;
    for (int k = 0; k < D; k++)
        if (gb[D + k] == gb[D + k] || gb[2 * D + k] == gb[2 * D + k]) nan_rows = 0;
    HY_ASSERT(nan_rows, "%s: rows with ids outside [0, V) must be NaN", cfg);
    float *zero = (float *)hbuf((size_t)V * D * 4);
    float *d_g2 = up_f32(zero, (size_t)V * D, 0);
    float *dy1 = (float *)hbuf((size_t)rows * D * 4);
    for (int k = 0; k < D; k++) dy1[D + k] = dy1[2 * D + k] = 1.0f;  // only the bad rows
    hy_cuda_embedding_bwd(rows, D, V, up_f32(dy1, (size_t)rows * D, 0), d_bad, -1, d_g2, NULL);
    float *g2 = down_f32(d_g2, (size_t)V * D);
    HY_ASSERT(memcmp(g2, zero, (size_t)V * D * 4) == 0,
              "%s: ids outside [0, V) must add no gradient", cfg);
    cpu_free(&e);
}

HY_TEST(gpu_op_embedding, "gpu") {
    need_gpu();
    hy_rng r;
    hy_rng_seed(&r, 102);
    check_embedding(&r, 37, 101, 53);
    check_embedding(&r, 64, 128, 50);
    free_all();
}

// ================================================================ rmsnorm
static void check_rmsnorm(hy_rng *r, int rows, int D) {
    char cfg[96];
    snprintf(cfg, sizeof cfg, "rows=%d D=%d", rows, D);
    const float eps = 1e-5f;
    size_t n = (size_t)rows * D;
    float *x = randn_bf16(r, n, 0.3f, 1.5f);
    float *w = randn(r, D, 1.0f, 0.2f);
    float *dy = randn(r, n, 0.0f, 1.0f);

    cpu_env e;
    cpu_init(&e);
    int64_t xs[2] = {rows, D}, ws[1] = {D};
    float *gx, *gw;
    hy_tensor *tx = cpu_tensor(&e, 2, xs, x, "x", &gx), *tw = cpu_tensor(&e, 1, ws, w, "w", &gw);
    hy_tensor *y = hy_rmsnorm(&e.tape, tx, tw, eps);
    hy_tape_backward_seed(&e.tape, y, dy);
    float *rstd_ref = (float *)hbuf((size_t)rows * 4);
    for (int i = 0; i < rows; i++) {
        double ss = 0;
        for (int k = 0; k < D; k++) ss += (double)x[(size_t)i * D + k] * x[(size_t)i * D + k];
        rstd_ref[i] = (float)(1.0 / sqrt(ss / D + eps));
    }

    void *d_x = up_bf16(x, n, 0), *d_y = out_bf16(n, 0);
    float *d_w = up_f32(w, D, 0), *d_rstd = out_f32(rows, 0);
    hy_cuda_rmsnorm_fwd(rows, D, eps, d_x, d_w, d_y, d_rstd, NULL);
    expect_err(cfg, "y", rel_err(down_bf16(d_y, n), NULL, hy_f32(y), n), 1e-2);
    expect_err(cfg, "rstd", rel_err(down_f32(d_rstd, rows), NULL, rstd_ref, rows), 1e-5);

    float *pre_x = prefill(r, gx, n), *pre_w = prefill(r, gw, D);
    float *d_dy = up_f32(dy, n, 0);
    size_t sb = hy_cuda_rmsnorm_bwd_scratch_bytes(rows, D);
    void *scratch = dbuf(sb);
    float *d_gx = up_f32(pre_x, n, 0), *d_gw = up_f32(pre_w, D, 0);
    hy_cuda_rmsnorm_bwd(rows, D, d_dy, d_x, d_w, d_rstd, d_gx, d_gw, scratch, sb, NULL);
    float *ggx = down_f32(d_gx, n), *ggw = down_f32(d_gw, D);
    expect_err(cfg, "dx", rel_err(ggx, pre_x, gx, n), 1e-4);
    expect_err(cfg, "dw", rel_err(ggw, pre_w, gw, D), 1e-4);

    // Again, dw alone then dx alone: dw reproduces bit for bit, dx too.
    float *d_gw2 = up_f32(pre_w, D, 0), *d_gx2 = up_f32(pre_x, n, 0);
    hy_cuda_rmsnorm_bwd(rows, D, d_dy, d_x, d_w, d_rstd, NULL, d_gw2, scratch, sb, NULL);
    hy_cuda_rmsnorm_bwd(rows, D, d_dy, d_x, d_w, d_rstd, d_gx2, NULL, NULL, 0, NULL);
    expect_bits(cfg, "dw rerun", down_f32(d_gw2, D), ggw, (size_t)D * 4);
    expect_bits(cfg, "dx rerun", down_f32(d_gx2, n), ggx, n * 4);

    // With the bf16 copy of dx: the same dx and dw, and the copy is dx rounded.
    float *d_gx3 = up_f32(pre_x, n, 0), *d_gw3 = up_f32(pre_w, D, 0);
    void *d_gx16 = out_bf16(n, 0);
    hy_cuda_rmsnorm_bwd_x16(rows, D, d_dy, d_x, d_w, d_rstd, d_gx3, d_gx16, d_gw3, scratch, sb,
                            NULL);
    expect_bits(cfg, "dx (x16)", down_f32(d_gx3, n), ggx, n * 4);
    expect_bits(cfg, "dw (x16)", down_f32(d_gw3, D), ggw, (size_t)D * 4);
    float *gx16 = down_bf16(d_gx16, n), *want16 = (float *)hbuf(n * 4);
    for (size_t i = 0; i < n; i++) want16[i] = hy_bf16_to_f32(hy_f32_to_bf16(ggx[i]));
    expect_bits(cfg, "bf16(dx)", gx16, want16, n * 4);

    // The add before the norm in one kernel: x = a + b as hy_cuda_add_fwd, y and rstd as
    // hy_cuda_rmsnorm_fwd from it, bit for bit.
    float *a = randn_bf16(r, n, 0.1f, 1.0f), *b = randn_bf16(r, n, 0.2f, 1.0f);
    void *d_a = up_bf16(a, n, 0), *d_b = up_bf16(b, n, 0);
    void *d_s1 = out_bf16(n, 0), *d_y1 = out_bf16(n, 0), *d_s2 = out_bf16(n, 0);
    void *d_y2 = out_bf16(n, 0);
    float *d_r1 = out_f32(rows, 0), *d_r2 = out_f32(rows, 0);
    hy_cuda_add_fwd(n, d_a, d_b, d_s1, NULL);
    hy_cuda_rmsnorm_fwd(rows, D, eps, d_s1, d_w, d_y1, d_r1, NULL);
    hy_cuda_add_rmsnorm_fwd(rows, D, eps, d_a, d_b, d_s2, d_w, d_y2, d_r2, NULL);
    expect_bits(cfg, "a + b (fused)", down_bf16(d_s2, n), down_bf16(d_s1, n), n * 4);
    expect_bits(cfg, "y (fused)", down_bf16(d_y2, n), down_bf16(d_y1, n), n * 4);
    expect_bits(cfg, "rstd (fused)", down_f32(d_r2, rows), down_f32(d_r1, rows), (size_t)rows * 4);
    cpu_free(&e);
}

HY_TEST(gpu_op_rmsnorm, "gpu") {
    need_gpu();
    hy_rng r;
    hy_rng_seed(&r, 103);
    check_rmsnorm(&r, 37, 101);
    check_rmsnorm(&r, 261, 256);  // D a multiple of 256: the register kernel (1 to 4 a lane)
    check_rmsnorm(&r, 19, 512);
    check_rmsnorm(&r, 133, 768);
    check_rmsnorm(&r, 37, 1024);
    check_rmsnorm(&r, 29, 1280);  // 5: the loop kernel
    check_rmsnorm(&r, 3001, 8);  // many partial blocks, short rows (32 rows a warp)
    check_rmsnorm(&r, 45, 7);    // short odd rows: 8 lanes a row
    check_rmsnorm(&r, 77, 24);   // 4 lanes a row, vector path
    free_all();
}

// ================================================================ swiglu
// pad = 1 shifts every device pointer by one element (the scalar fallback).
static void check_swiglu(hy_rng *r, int rows, int H, int pad) {
    char cfg[96];
    snprintf(cfg, sizeof cfg, "rows=%d H=%d%s", rows, H, pad ? " misaligned" : "");
    size_t n_in = (size_t)rows * 2 * H, n_out = (size_t)rows * H;
    float *gv = randn_bf16(r, n_in, 0.0f, 2.0f);
    float *dy = randn(r, n_out, 0.0f, 1.0f);

    cpu_env e;
    cpu_init(&e);
    int64_t s[2] = {rows, 2 * H};
    float *ggv;
    hy_tensor *y = hy_swiglu(&e.tape, cpu_tensor(&e, 2, s, gv, "gv", &ggv));
    hy_tape_backward_seed(&e.tape, y, dy);

    void *d_gv = up_bf16(gv, n_in, pad), *d_y = out_bf16(n_out, pad);
    hy_cuda_swiglu_fwd(rows, H, d_gv, d_y, NULL);
    expect_err(cfg, "y", rel_err(down_bf16(d_y, n_out), NULL, hy_f32(y), n_out), 1e-2);

    float *pre = prefill(r, ggv, n_in), *d_g = up_f32(pre, n_in, pad);
    hy_cuda_swiglu_bwd(rows, H, up_f32(dy, n_out, pad), d_gv, d_g, 0, NULL);
    expect_err(cfg, "dgv", rel_err(down_f32(d_g, n_in), pre, ggv, n_in), 1e-4);
    // Overwrite: the old contents (NaN) are not read, every element is written.
    float *nan = (float *)hbuf(n_in * 4);
    for (size_t i = 0; i < n_in; i++) nan[i] = NAN;
    float *d_o = up_f32(nan, n_in, pad);
    hy_cuda_swiglu_bwd(rows, H, up_f32(dy, n_out, pad), d_gv, d_o, 1, NULL);
    expect_err(cfg, "dgv (overwrite)", rel_err(down_f32(d_o, n_in), NULL, ggv, n_in), 1e-4);
    cpu_free(&e);
}

HY_TEST(gpu_op_swiglu, "gpu") {
    need_gpu();
    hy_rng r;
    hy_rng_seed(&r, 104);
    check_swiglu(&r, 37, 101, 0);
    check_swiglu(&r, 64, 128, 0);  // vector path
    check_swiglu(&r, 37, 36, 0);   // H % 8 != 0, H % 4 == 0: the backward's vector path
    check_swiglu(&r, 64, 128, 1);  // misaligned: scalar
    free_all();
}

// ================================================================ elementwise
typedef enum { EW_ADD, EW_MUL, EW_SILU, EW_SIGMOID } ew_op;
static const char *ew_name[] = {"add", "mul", "silu", "sigmoid"};

// n elements; pad = 1 shifts every device pointer by one element (scalar path).
static void check_elementwise(hy_rng *r, ew_op op, size_t n, int pad) {
    char cfg[96];
    snprintf(cfg, sizeof cfg, "%s n=%zu%s", ew_name[op], n, pad ? " misaligned" : "");
    int two = op == EW_ADD || op == EW_MUL;
    float *a = randn_bf16(r, n, 0.0f, 3.0f), *b = randn_bf16(r, n, 0.0f, 1.0f);
    float *dy = randn(r, n, 0.0f, 1.0f);

    cpu_env e;
    cpu_init(&e);
    int64_t s[1] = {(int64_t)n};
    float *ga = NULL, *gb = NULL;
    hy_tensor *ta = cpu_tensor(&e, 1, s, a, "a", &ga);
    hy_tensor *tb = two ? cpu_tensor(&e, 1, s, b, "b", &gb) : NULL;
    hy_tensor *y = op == EW_ADD   ? hy_add(&e.tape, ta, tb)
                   : op == EW_MUL ? hy_mul(&e.tape, ta, tb)
                   : op == EW_SILU ? hy_silu(&e.tape, ta)
                                   : hy_sigmoid(&e.tape, ta);
    hy_tape_backward_seed(&e.tape, y, dy);

    void *d_a = up_bf16(a, n, pad), *d_b = up_bf16(b, n, pad), *d_y = out_bf16(n, pad);
    float *d_dy = up_f32(dy, n, pad);
    float *pre_a = prefill(r, ga, n), *pre_b = two ? prefill(r, gb, n) : randn(r, n, 0.0f, 1.0f);
    float *d_ga = up_f32(pre_a, n, pad), *d_gb = up_f32(pre_b, n, pad);
    switch (op) {
    case EW_ADD:
        hy_cuda_add_fwd(n, d_a, d_b, d_y, NULL);
        hy_cuda_add_bwd(n, d_dy, d_ga, d_gb, NULL);
        break;
    case EW_MUL:
        hy_cuda_mul_fwd(n, d_a, d_b, d_y, NULL);
        hy_cuda_mul_bwd(n, d_dy, d_a, d_b, d_ga, d_gb, NULL);
        break;
    case EW_SILU:
        hy_cuda_silu_fwd(n, d_a, d_y, NULL);
        hy_cuda_silu_bwd(n, d_dy, d_a, d_ga, 0, NULL);
        break;
    case EW_SIGMOID:
        hy_cuda_sigmoid_fwd(n, d_a, d_y, NULL);
        hy_cuda_sigmoid_bwd(n, d_dy, d_a, d_ga, NULL);
        break;
    }
    expect_err(cfg, "y", rel_err(down_bf16(d_y, n), NULL, hy_f32(y), n), 1e-2);
    expect_err(cfg, two ? "da" : "dx", rel_err(down_f32(d_ga, n), pre_a, ga, n), 1e-4);
    if (two) expect_err(cfg, "db", rel_err(down_f32(d_gb, n), pre_b, gb, n), 1e-4);

    // One gradient only: the other buffer stays untouched.
    if (two) {
        float *d_gb2 = up_f32(pre_b, n, pad);
        if (op == EW_ADD)
            hy_cuda_add_bwd(n, d_dy, NULL, d_gb2, NULL);
        else
            hy_cuda_mul_bwd(n, d_dy, d_a, d_b, NULL, d_gb2, NULL);
        expect_err(cfg, "db alone", rel_err(down_f32(d_gb2, n), pre_b, gb, n), 1e-4);
    }
    cpu_free(&e);
}

static void run_elementwise(ew_op op, uint64_t seed) {
    need_gpu();
    hy_rng r;
    hy_rng_seed(&r, seed);
    check_elementwise(&r, op, 37 * 101, 0);  // odd: vector bulk + scalar tail
    check_elementwise(&r, op, 4096, 0);
    check_elementwise(&r, op, 4098, 0);      // n % 8 == 2: tails of both vector widths
    check_elementwise(&r, op, 4096, 1);      // misaligned: scalar
    free_all();
}

HY_TEST(gpu_op_add, "gpu") { run_elementwise(EW_ADD, 105); }
HY_TEST(gpu_op_mul, "gpu") { run_elementwise(EW_MUL, 106); }
HY_TEST(gpu_op_silu, "gpu") { run_elementwise(EW_SILU, 107); }
HY_TEST(gpu_op_sigmoid, "gpu") { run_elementwise(EW_SIGMOID, 108); }

// ================================================================ l2norm_heads
// small: every third head scaled to a norm well below eps (the clamp).
static void check_l2norm(hy_rng *r, int rows, int H, int hd, float eps, int small) {
    char cfg[96];
    snprintf(cfg, sizeof cfg, "rows=%d H=%d hd=%d eps=%g%s", rows, H, hd, (double)eps,
             small ? " clamped" : "");
    int vecs = rows * H;
    size_t n = (size_t)vecs * hd;
    float *x = randn(r, n, 0.1f, 1.0f);
    if (small)
        for (int v = 0; v < vecs; v += 3)
            for (int k = 0; k < hd; k++) x[(size_t)v * hd + k] *= 0.05f / sqrtf((float)hd);
    round_bf16(x, n);
    float *dy = randn(r, n, 0.0f, 1.0f);
    float *norm_ref = (float *)hbuf((size_t)vecs * 4);
    for (int v = 0; v < vecs; v++) {
        double ss = 0;
        for (int k = 0; k < hd; k++) ss += (double)x[(size_t)v * hd + k] * x[(size_t)v * hd + k];
        norm_ref[v] = (float)sqrt(ss);
    }

    cpu_env e;
    cpu_init(&e);
    int64_t s[2] = {rows, (int64_t)H * hd};
    float *gx;
    hy_tensor *y = hy_l2norm_heads(&e.tape, cpu_tensor(&e, 2, s, x, "x", &gx), hd, eps);
    hy_tape_backward_seed(&e.tape, y, dy);

    void *d_x = up_bf16(x, n, 0), *d_y = out_bf16(n, 0);
    float *d_norm = out_f32(vecs, 0);
    hy_cuda_l2norm_heads_fwd(vecs, hd, eps, d_x, d_y, d_norm, NULL);
    expect_err(cfg, "y", rel_err(down_bf16(d_y, n), NULL, hy_f32(y), n), 1e-2);
    expect_err(cfg, "norm", rel_err(down_f32(d_norm, vecs), NULL, norm_ref, vecs), 1e-5);

    float *pre = prefill(r, gx, n), *d_gx = up_f32(pre, n, 0);
    hy_cuda_l2norm_heads_bwd(vecs, hd, eps, up_f32(dy, n, 0), d_x, d_norm, d_gx, NULL);
    expect_err(cfg, "dx", rel_err(down_f32(d_gx, n), pre, gx, n), 1e-4);
    cpu_free(&e);
}

HY_TEST(gpu_op_l2norm_heads, "gpu") {
    need_gpu();
    hy_rng r;
    hy_rng_seed(&r, 109);
    check_l2norm(&r, 37, 3, 33, 1e-12f, 0);
    check_l2norm(&r, 40, 4, 64, 1e-12f, 0);
    check_l2norm(&r, 37, 3, 101, 0.5f, 1);
    check_l2norm(&r, 16, 4, 64, 0.5f, 1);
    check_l2norm(&r, 33, 5, 16, 1e-12f, 0);  // 2 lanes a head, 16 heads a warp
    check_l2norm(&r, 29, 3, 5, 0.5f, 1);     // 8 lanes a head, scalar
    free_all();
}

// ================================================================ short_conv
// One GPU run of the op on device copies of the inputs, every pointer but
// the scratch's offset by `pad` elements (pad = 1: the scalar kernels).
typedef struct {
    float *y;                 // forward
    float *gx, *gw, *gb;      // dx, dw, db together (db only with a bias)
    float *gw2, *gb2, *gx2;   // dw, db again with dx not wanted; dx alone
    float *gx3;               // dx alone, written (set_dx) into a poisoned buffer
} conv_res;

static void conv_gpu(int B, int T, int C, int K, const float *x, const float *w,
                     const float *bias, const float *cache, const float *dy, const float *pre_x,
                     const float *pre_w, const float *pre_b, int pad, conv_res *o) {
    size_t n = (size_t)B * T * C, nc = (size_t)B * C * (K - 1), nw = (size_t)C * K;
    void *d_x = up_bf16(x, n, pad), *d_y = out_bf16(n, pad);
    void *d_cache = cache ? up_bf16(cache, nc ? nc : 1, pad) : NULL;
    float *d_w = up_f32(w, nw, pad), *d_b = bias ? up_f32(bias, C, pad) : NULL;
    hy_cuda_short_conv_fwd(B, T, C, K, d_x, d_w, d_b, d_cache, d_y, NULL);
    o->y = down_bf16(d_y, n);

    float *d_dy = up_f32(dy, n, pad);
    float *d_gx = up_f32(pre_x, n, pad), *d_gw = up_f32(pre_w, nw, pad);
    float *d_gb = up_f32(pre_b, C, pad);
    size_t sb = hy_cuda_short_conv_bwd_scratch_bytes(B, T, C, K);
    void *scratch = dbuf(sb);
    hy_cuda_short_conv_bwd(B, T, C, K, d_dy, d_x, d_w, d_cache, d_gx, 0, d_gw, bias ? d_gb : NULL,
                           scratch, sb, NULL);
    o->gx = down_f32(d_gx, n);
    o->gw = down_f32(d_gw, nw);
    o->gb = down_f32(d_gb, C);

    float *d_gw2 = up_f32(pre_w, nw, pad), *d_gb2 = up_f32(pre_b, C, pad);
    hy_cuda_short_conv_bwd(B, T, C, K, d_dy, d_x, d_w, d_cache, NULL, 0, d_gw2,
                           bias ? d_gb2 : NULL, scratch, sb, NULL);
    o->gw2 = down_f32(d_gw2, nw);
    o->gb2 = down_f32(d_gb2, C);
    float *d_gx2 = up_f32(pre_x, n, pad);
    hy_cuda_short_conv_bwd(B, T, C, K, d_dy, d_x, d_w, d_cache, d_gx2, 0, NULL, NULL, NULL, 0, NULL);
    o->gx2 = down_f32(d_gx2, n);
    float *d_gx3 = out_f32(n, pad);  // poisoned: set_dx must write every element
    hy_cuda_short_conv_bwd(B, T, C, K, d_dy, d_x, d_w, d_cache, d_gx3, 1, NULL, NULL, NULL, 0, NULL);
    o->gx3 = down_f32(d_gx3, n);
}

static void check_conv(hy_rng *r, int B, int T, int C, int K, int with_cache, int with_bias) {
    char cfg[96];
    snprintf(cfg, sizeof cfg, "B=%d T=%d C=%d K=%d%s%s", B, T, C, K,
             with_cache ? " cache" : "", with_bias ? "" : " nobias");
    size_t n = (size_t)B * T * C, nc = (size_t)B * C * (K - 1), nw = (size_t)C * K;
    float *x = randn_bf16(r, n, 0.0f, 1.0f);
    float *w = randn(r, nw, 0.0f, 0.5f), *bias = randn(r, C, 0.0f, 0.5f);
    float *cache = randn_bf16(r, nc ? nc : 1, 0.0f, 1.0f);
    float *dy = randn(r, n, 0.0f, 1.0f);

    cpu_env e;
    cpu_init(&e);
    int64_t xs[3] = {B, T, C}, wsh[2] = {C, K}, bs[1] = {C}, cs[3] = {B, C, K - 1};
    float *gx, *gw, *gb = NULL;
    hy_tensor *tx = cpu_tensor(&e, 3, xs, x, "x", &gx), *tw = cpu_tensor(&e, 2, wsh, w, "w", &gw);
    hy_tensor *tb = with_bias ? cpu_tensor(&e, 1, bs, bias, "b", &gb) : NULL;
    hy_tensor *tc = with_cache ? cpu_tensor(&e, 3, cs, cache, "cache", NULL) : NULL;
    hy_tensor *y = hy_short_conv(&e.tape, tx, tw, tb, tc);
    hy_tape_backward_seed(&e.tape, y, dy);

    float *pre_x = prefill(r, gx, n), *pre_w = prefill(r, gw, nw);
    float *pre_b = gb ? prefill(r, gb, C) : randn(r, C, 0.0f, 1.0f);
    const float *bp = with_bias ? bias : NULL, *cp = with_cache ? cache : NULL;
    conv_res a, m;
    conv_gpu(B, T, C, K, x, w, bp, cp, dy, pre_x, pre_w, pre_b, 0, &a);
    conv_gpu(B, T, C, K, x, w, bp, cp, dy, pre_x, pre_w, pre_b, 1, &m);

    expect_err(cfg, "y", rel_err(a.y, NULL, hy_f32(y), n), 1e-2);
    expect_err(cfg, "dx", rel_err(a.gx, pre_x, gx, n), 1e-4);
    expect_err(cfg, "dw", rel_err(a.gw, pre_w, gw, nw), 1e-4);
    if (with_bias)
        expect_err(cfg, "db", rel_err(a.gb, pre_b, gb, C), 1e-4);
    else
        HY_ASSERT(memcmp(a.gb, pre_b, (size_t)C * 4) == 0, "%s: db NULL yet written", cfg);

    // Deterministic: dw and db again (dx not wanted) give the same bits, and
    // so does dx alone (dw and db not wanted).
    expect_bits(cfg, "dw rerun", a.gw2, a.gw, nw * 4);
    if (with_bias) expect_bits(cfg, "db rerun", a.gb2, a.gb, (size_t)C * 4);
    expect_bits(cfg, "dx alone", a.gx2, a.gx, n * 4);
    // Written instead of added: pre + the written sum is the accumulated dx
    // to the bit (the kernel's one rounding of pre + sum).
    for (size_t i = 0; i < n; i++) a.gx3[i] += pre_x[i];
    expect_bits(cfg, "dx set", a.gx3, a.gx, n * 4);
    for (size_t i = 0; i < n; i++) m.gx3[i] += pre_x[i];
    expect_bits(cfg, "dx set scalar", m.gx3, a.gx, n * 4);
    // The scalar kernels (misaligned pointers) give the vector kernels' bits:
    // same arithmetic per element, same order of the dw/db sums.
    expect_bits(cfg, "y scalar", m.y, a.y, n * 4);
    expect_bits(cfg, "dx scalar", m.gx, a.gx, n * 4);
    expect_bits(cfg, "dw scalar", m.gw, a.gw, nw * 4);
    if (with_bias) expect_bits(cfg, "db scalar", m.gb, a.gb, (size_t)C * 4);
    cpu_free(&e);
    free_all();
}

HY_TEST(gpu_op_short_conv, "gpu") {
    need_gpu();
    hy_rng r;
    hy_rng_seed(&r, 110);
    check_conv(&r, 3, 29, 45, 4, 1, 1);
    check_conv(&r, 3, 29, 45, 4, 0, 1);
    check_conv(&r, 2, 40, 64, 4, 1, 1);   // vector path
    check_conv(&r, 3, 2, 45, 4, 1, 1);    // T < K
    check_conv(&r, 2, 3, 64, 4, 1, 1);    // T < K, vector path
    check_conv(&r, 2, 9, 48, 1, 0, 0);    // K = 1, no bias
    check_conv(&r, 4, 300, 64, 3, 1, 1);  // several partial blocks
    check_conv(&r, 2, 37, 40, 2, 1, 1);   // K = 2
    check_conv(&r, 2, 50, 36, 3, 1, 1);   // C % 4 == 0, C % 8 != 0: backward vector, forward scalar
    check_conv(&r, 3, 700, 72, 4, 1, 1);  // 17 row blocks of dw/db partials, several groups a thread
    check_conv(&r, 3, 700, 72, 4, 0, 1);  // the same without a cache
    check_conv(&r, 20, 7, 24, 4, 1, 1);   // short sequences: a thread's stride spans several
    check_conv(&r, 40, 11, 24, 4, 0, 0);  // the same, another wrap, no bias
    check_conv(&r, 3, 29, 45, 6, 1, 1);   // K > 4: the 16-slot kernels
    check_conv(&r, 2, 35, 64, 7, 1, 0);   // K > 4, C % 8 == 0
    check_conv(&r, 2, 70, 33, 16, 1, 1);  // K = 16, the largest
    free_all();
}

// ================================================================ rope
static void check_rope(hy_rng *r, int B, int T, int H, int D, int64_t pos0, float base) {
    char cfg[96];
    snprintf(cfg, sizeof cfg, "B=%d T=%d H=%d D=%d pos0=%lld", B, T, H, D, (long long)pos0);
    size_t n = (size_t)B * T * H * D;
    float *x = randn_bf16(r, n, 0.0f, 1.0f), *dy = randn(r, n, 0.0f, 1.0f);

    cpu_env e;
    cpu_init(&e);
    int64_t s[4] = {B, T, H, D};
    float *gx;
    hy_tensor *y = hy_rope(&e.tape, cpu_tensor(&e, 4, s, x, "x", &gx), pos0, base);
    hy_tape_backward_seed(&e.tape, y, dy);

    void *d_x = up_bf16(x, n, 0), *d_y = out_bf16(n, 0);
    hy_cuda_rope_fwd(B, T, H, D, pos0, base, d_x, d_y, NULL);
    expect_err(cfg, "y", rel_err(down_bf16(d_y, n), NULL, hy_f32(y), n), 1e-2);
    hy_cuda_rope_fwd(B, T, H, D, pos0, base, d_x, d_x, NULL);  // in place
    expect_err(cfg, "y inplace", rel_err(down_bf16(d_x, n), NULL, hy_f32(y), n), 1e-2);

    float *pre = prefill(r, gx, n), *d_gx = up_f32(pre, n, 0);
    hy_cuda_rope_bwd(B, T, H, D, pos0, base, up_f32(dy, n, 0), d_gx, NULL);
    expect_err(cfg, "dx", rel_err(down_f32(d_gx, n), pre, gx, n), 1e-4);
    cpu_free(&e);
}

HY_TEST(gpu_op_rope, "gpu") {
    need_gpu();
    hy_rng r;
    hy_rng_seed(&r, 111);
    check_rope(&r, 3, 29, 3, 18, 0, 10000.0f);
    check_rope(&r, 2, 17, 3, 64, 1000, 10000.0f);
    check_rope(&r, 1, 5, 2, 128, 123456, 500000.0f);  // large positions
    free_all();
}

// ================================================================ slice_last
// pad = 1 shifts the backward's device pointers by one element (scalar).
static void check_slice(hy_rng *r, int rows, int N, int start, int len, int pad) {
    char cfg[96];
    snprintf(cfg, sizeof cfg, "rows=%d N=%d [%d, %d)%s", rows, N, start, start + len,
             pad ? " misaligned" : "");
    size_t n_in = (size_t)rows * N, n_out = (size_t)rows * len;
    float *x = randn_bf16(r, n_in, 0.0f, 1.0f), *dy = randn(r, n_out, 0.0f, 1.0f);

    cpu_env e;
    cpu_init(&e);
    int64_t s[2] = {rows, N};
    float *gx;
    hy_tensor *y = hy_slice_last(&e.tape, cpu_tensor(&e, 2, s, x, "x", &gx), start, len);
    hy_tape_backward_seed(&e.tape, y, dy);

    void *d_x = up_bf16(x, n_in, 0), *d_y = out_bf16(n_out, 0);
    hy_cuda_slice_last_fwd(rows, N, start, len, d_x, d_y, NULL);
    float *gy = down_bf16(d_y, n_out);
    expect_err(cfg, "y", rel_err(gy, NULL, hy_f32(y), n_out), 0.0);  // a copy: exact

    float *pre = prefill(r, gx, n_in), *d_gx = up_f32(pre, n_in, pad);
    hy_cuda_slice_last_bwd(rows, N, start, len, up_f32(dy, n_out, pad), d_gx, NULL);
    float *ggx = down_f32(d_gx, n_in);
    expect_err(cfg, "dx", rel_err(ggx, pre, gx, n_in), 1e-5);
    int outside_ok = 1;
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < N; j++)
            if ((j < start || j >= start + len) && ggx[(size_t)i * N + j] != pre[(size_t)i * N + j])
                outside_ok = 0;
    HY_ASSERT(outside_ok, "%s: dx changed outside the slice", cfg);
    cpu_free(&e);
}

HY_TEST(gpu_op_slice_last, "gpu") {
    need_gpu();
    hy_rng r;
    hy_rng_seed(&r, 112);
    check_slice(&r, 37, 101, 13, 45, 0);
    check_slice(&r, 37, 128, 64, 32, 0);  // vector path
    check_slice(&r, 5, 24, 0, 24, 0);     // the whole row
    check_slice(&r, 37, 24, 12, 12, 0);   // the model's gate slices: multiples of 4, not of 8
    check_slice(&r, 37, 128, 64, 32, 1);  // misaligned: scalar
    free_all();
}

// ================================================================ mean
static void check_mean(hy_rng *r, size_t n) {
    char cfg[96];
    snprintf(cfg, sizeof cfg, "n=%zu", n);
    float *x = randn(r, n, 0.2f, 1.0f);
    float seed[1] = {0.7f};

    cpu_env e;
    cpu_init(&e);
    int64_t s[1] = {(int64_t)n};
    float *gx;
    hy_tensor *y = hy_mean(&e.tape, cpu_tensor(&e, 1, s, x, "x", &gx));
    hy_tape_backward_seed(&e.tape, y, seed);

    float *d_x = up_f32(x, n, 0), *d_y = out_f32(1, 0);
    hy_cuda_mean_fwd(n, d_x, d_y, NULL);
    expect_err(cfg, "y", rel_err(down_f32(d_y, 1), NULL, hy_f32(y), 1), 1e-5);

    float *pre = prefill(r, gx, n), *d_gx = up_f32(pre, n, 0);
    hy_cuda_mean_bwd(n, up_f32(seed, 1, 0), d_gx, NULL);
    expect_err(cfg, "dx", rel_err(down_f32(d_gx, n), pre, gx, n), 1e-5);
    cpu_free(&e);
}

HY_TEST(gpu_op_mean, "gpu") {
    need_gpu();
    hy_rng r;
    hy_rng_seed(&r, 113);
    check_mean(&r, 3737);
    check_mean(&r, 100003);
    free_all();
}

// ================================================================ large streaming backwards
// Tensors larger than one grid of the streaming kernels (a few waves of the
// device: every thread walks several units, the row cursor wraps), against
// host references: exact where the op is one fp32 addition (add, slice),
// 1e-4 of max|gradient| against double otherwise (silu, swiglu).
static double sigm_d(double v) { return 1.0 / (1.0 + exp(-v)); }

static void large_add(hy_rng *r, size_t n, int pad) {
    char cfg[96];
    snprintf(cfg, sizeof cfg, "add n=%zu%s", n, pad ? " misaligned" : "");
    float *dy = randn(r, n, 0.0f, 1.0f), *pa = randn(r, n, 0.0f, 1.0f);
    float *pb = randn(r, n, 0.0f, 1.0f);
    float *d_dy = up_f32(dy, n, pad), *d_a = up_f32(pa, n, pad), *d_b = up_f32(pb, n, pad);
    hy_cuda_add_bwd(n, d_dy, d_a, d_b, NULL);
    float *ga = down_f32(d_a, n), *gb = down_f32(d_b, n);
    for (size_t i = 0; i < n; i++) pa[i] += dy[i], pb[i] += dy[i];
    expect_bits(cfg, "da", ga, pa, n * 4);
    expect_bits(cfg, "db", gb, pb, n * 4);
    // da == db (x + x): both additions land.
    float *d_c = up_f32(pa, n, pad);
    hy_cuda_add_bwd(n, d_dy, d_c, d_c, NULL);
    float *gc = down_f32(d_c, n);
    for (size_t i = 0; i < n; i++) pa[i] = (pa[i] + dy[i]) + dy[i];
    expect_bits(cfg, "da == db", gc, pa, n * 4);
}

static void large_silu(hy_rng *r, size_t n, int pad) {
    char cfg[96];
    snprintf(cfg, sizeof cfg, "silu n=%zu%s", n, pad ? " misaligned" : "");
    float *x = randn_bf16(r, n, 0.0f, 3.0f), *dy = randn(r, n, 0.0f, 1.0f);
    float *pre = randn(r, n, 0.0f, 1.0f), *ref = (float *)hbuf(n * 4);
    for (size_t i = 0; i < n; i++) {
        double s = sigm_d(x[i]);
        ref[i] = (float)(dy[i] * s * (1.0 + x[i] * (1.0 - s)));
    }
    float *d_dx = up_f32(pre, n, pad);
    hy_cuda_silu_bwd(n, up_f32(dy, n, pad), up_bf16(x, n, pad), d_dx, 0, NULL);
    expect_err(cfg, "dx", rel_err(down_f32(d_dx, n), pre, ref, n), 1e-4);
    // Overwrite: the old contents (NaN) are not read, every element is written.
    for (size_t i = 0; i < n; i++) pre[i] = NAN;
    float *d_o = up_f32(pre, n, pad);
    hy_cuda_silu_bwd(n, up_f32(dy, n, pad), up_bf16(x, n, pad), d_o, 1, NULL);
    expect_err(cfg, "dx (overwrite)", rel_err(down_f32(d_o, n), NULL, ref, n), 1e-4);
}

static void large_swiglu(hy_rng *r, int rows, int H, int pad) {
    char cfg[96];
    snprintf(cfg, sizeof cfg, "swiglu rows=%d H=%d%s", rows, H, pad ? " misaligned" : "");
    size_t n_in = (size_t)rows * 2 * H, n_out = (size_t)rows * H;
    float *gv = randn_bf16(r, n_in, 0.0f, 2.0f), *dy = randn(r, n_out, 0.0f, 1.0f);
    float *pre = randn(r, n_in, 0.0f, 1.0f), *ref = (float *)hbuf(n_in * 4);
    for (int i = 0; i < rows; i++)
        for (int h = 0; h < H; h++) {
            size_t o = (size_t)i * 2 * H + h;
            double g = gv[o], v = gv[o + H], d = dy[(size_t)i * H + h], s = sigm_d(g);
            ref[o] = (float)(d * v * s * (1.0 + g * (1.0 - s)));
            ref[o + H] = (float)(d * g * s);
        }
    float *d_g = up_f32(pre, n_in, pad);
    hy_cuda_swiglu_bwd(rows, H, up_f32(dy, n_out, pad), up_bf16(gv, n_in, pad), d_g, 0, NULL);
    expect_err(cfg, "dgv", rel_err(down_f32(d_g, n_in), pre, ref, n_in), 1e-4);
}

static void large_slice(hy_rng *r, int rows, int N, int start, int len, int pad) {
    char cfg[96];
    snprintf(cfg, sizeof cfg, "slice rows=%d N=%d [%d, %d)%s", rows, N, start, start + len,
             pad ? " misaligned" : "");
    size_t n_in = (size_t)rows * N, n_out = (size_t)rows * len;
    float *dy = randn(r, n_out, 0.0f, 1.0f), *pre = randn(r, n_in, 0.0f, 1.0f);
    float *d_dx = up_f32(pre, n_in, pad);
    hy_cuda_slice_last_bwd(rows, N, start, len, up_f32(dy, n_out, pad), d_dx, NULL);
    float *got = down_f32(d_dx, n_in);
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < len; j++) pre[(size_t)i * N + start + j] += dy[(size_t)i * len + j];
    expect_bits(cfg, "dx", got, pre, n_in * 4);
}

// Argmax of bf16 rows against the CPU's (lowest index among equal largest
// values): odd sizes, rows of one value, and rows with many ties (values
// drawn from a handful so that the largest repeats).
HY_TEST(gpu_op_argmax_rows, "gpu") {
    need_gpu();
    hy_rng r;
    hy_rng_seed(&r, 41);
    const int Vs[] = {1, 7, 33, 1000, 8193};
    for (int vi = 0; vi < 5; vi++)
        for (int ties = 0; ties < 2; ties++) {
            int V = Vs[vi], rows = 37;
            size_t n = (size_t)rows * V;
            float *x = randn_bf16(&r, n, 0.0f, 1.0f);
            if (ties)
                for (size_t i = 0; i < n; i++) x[i] = (float)(hy_rng_below(&r, 4));
            int32_t *idx = (int32_t *)dbuf((size_t)rows * sizeof(int32_t));
            hy_cuda_argmax_rows(rows, V, up_bf16(x, n, 0), idx, NULL);
            int32_t *got = (int32_t *)hbuf((size_t)rows * sizeof(int32_t));
            hy_cuda_synchronize();
            hy_cuda_memcpy_d2h(got, idx, (size_t)rows * sizeof(int32_t));
            for (int row = 0; row < rows; row++) {
                const float *v = x + (size_t)row * V;
                int best = 0;
                for (int j = 1; j < V; j++)
                    if (v[j] > v[best]) best = j;
                HY_ASSERT(got[row] == best, "V=%d%s row %d: GPU argmax %d, CPU %d", V,
                          ties ? " (ties)" : "", row, got[row], best);
            }
        }
    free_all();
}

// The greedy token of bf16 rows (one block a row) against the sampler's scan
// (hy_greedy_token): odd sizes (the scalar kernel) and multiples of 8 (16-byte
// loads), ties, -inf entries; a NaN or +inf anywhere in a row, or a row of
// -inf only, gives -1 for that row alone; the position advances once a call (the
// last of the 7 blocks advances it), and each call's tokens land in the host ring's
// slot for the position it started at.
HY_TEST(gpu_op_greedy_rows, "gpu") {
    need_gpu();
    hy_rng r;
    hy_rng_seed(&r, 43);
    const int Vs[] = {1, 7, 33, 1000, 8193, 32000};
    long long *pos = (long long *)dbuf(sizeof(long long)), p0 = 41, p1 = 0;
    hy_cuda_memcpy_h2d(pos, &p0, sizeof p0);
    unsigned *done = (unsigned *)dbuf(sizeof(unsigned));
    hy_cuda_memset(done, 0, sizeof(unsigned));
    enum { kRing = 5 };
    int32_t *ring = (int32_t *)hy_cuda_host_alloc(kRing * 7 * sizeof(int32_t));
    int calls = 0;
    for (int vi = 0; vi < 6; vi++)
        for (int kind = 0; kind < 3; kind++) {  // plain, ties, broken rows
            int V = Vs[vi], rows = 7;
            size_t n = (size_t)rows * V;
            float *x = randn_bf16(&r, n, 0.0f, 1.0f);
            if (kind == 1)
                for (size_t i = 0; i < n; i++) x[i] = (float)(hy_rng_below(&r, 4));
            for (int row = 0; row < rows && V > 1; row++)  // some -inf entries
                x[(size_t)row * V + hy_rng_below(&r, (uint64_t)V)] = -INFINITY;
            int bad[7] = {0};
            if (kind == 2) {  // row 1 NaN, row 3 +inf, row 5 all -inf
                x[(size_t)1 * V + hy_rng_below(&r, (uint64_t)V)] = NAN;
                x[(size_t)3 * V + hy_rng_below(&r, (uint64_t)V)] = INFINITY;
                for (int j = 0; j < V; j++) x[(size_t)5 * V + j] = -INFINITY;
                bad[1] = bad[3] = bad[5] = 1;
            }
            int32_t *idx = (int32_t *)dbuf((size_t)rows * sizeof(int32_t));
            hy_cuda_greedy_rows(rows, V, up_bf16(x, n, 0), idx, pos, done, ring, kRing, NULL);
            const int32_t *slot = ring + ((p0 + calls) % kRing) * rows;
            calls++;
            int32_t *got = (int32_t *)hbuf((size_t)rows * sizeof(int32_t));
            hy_cuda_synchronize();
            hy_cuda_memcpy_d2h(got, idx, (size_t)rows * sizeof(int32_t));
            for (int row = 0; row < rows; row++) {
                int want = bad[row] ? -1 : hy_greedy_token(x + (size_t)row * V, V);
                HY_ASSERT(got[row] == want, "V=%d kind %d row %d: GPU %d, CPU %d", V, kind, row,
                          got[row], want);
                HY_ASSERT(slot[row] == want, "V=%d kind %d row %d: ring %d, CPU %d", V, kind, row,
                          slot[row], want);
            }
        }
    hy_cuda_memcpy_d2h(&p1, pos, sizeof p1);
    HY_ASSERT(p1 == p0 + calls, "position %lld after %d calls from %lld", p1, calls, p0);
    unsigned left = 1;
    hy_cuda_memcpy_d2h(&left, done, sizeof left);
    HY_ASSERT(left == 0, "the row counter ends at %u", left);
    hy_cuda_host_free(ring);
    free_all();
}

HY_TEST(gpu_op_stream_large, "gpu") {
    need_gpu();
    hy_rng r;
    hy_rng_seed(&r, 114);
    large_add(&r, 6000003, 0);  // 1.5 M float4 units (+ a tail of 3)
    large_add(&r, 6000000, 1);
    free_all();
    large_silu(&r, 6000001, 0);
    large_silu(&r, 6000000, 1);
    free_all();
    large_swiglu(&r, 8192, 1032, 0);  // 2.1 M units of 4
    large_swiglu(&r, 2048, 1030, 1);  // 2.1 M scalar units
    free_all();
    large_slice(&r, 400000, 24, 12, 12, 0);  // 3 units a row: the cursor wraps every step
    large_slice(&r, 2000, 2304, 768, 768, 0);
    large_slice(&r, 20000, 200, 13, 101, 1);
    free_all();
}

// ================================================================ bench
// The streaming backwards at the 115M model's training sizes (B*T = 16384
// rows), timed with hy_cuda_time_ms (median of 20 after 3 warmups). Prints
// the bytes each must move (its floor: each tensor read or written once,
// from the comments in cuda/ops.cu and its neighbours) and the bandwidth that implies; asserts
// nothing (timings depend on the machine).
typedef struct {
    int op;
    int B, T, C, K, rows, N, start, len;
    size_t n;
    void *a, *b, *c, *d;  // the four big buffers
    float *dw, *db;       // short_conv's parameter gradients
    void *scratch;
    size_t sb;
} bench_ops;

static void run_bench_op(void *p) {
    bench_ops *o = (bench_ops *)p;
    switch (o->op) {
    case 0:  // short_conv_bwd: dy a, x b, w d -> dx c, dw, db
        hy_cuda_short_conv_bwd(o->B, o->T, o->C, o->K, (const float *)o->a, o->b,
                               (const float *)o->d, NULL, (float *)o->c, 0, o->dw, o->db,
                               o->scratch, o->sb, NULL);
        break;
    case 1:  // short_conv_fwd: x b, w and bias d -> y c
        hy_cuda_short_conv_fwd(o->B, o->T, o->C, o->K, o->b, (const float *)o->d,
                               (const float *)o->d, NULL, o->c, NULL);
        break;
    case 2: hy_cuda_swiglu_bwd(o->rows, o->len, (const float *)o->a, o->b, (float *)o->c, 0, NULL); break;
    case 3: hy_cuda_silu_bwd(o->n, (const float *)o->a, o->b, (float *)o->c, 0, NULL); break;
    case 4: hy_cuda_add_bwd(o->n, (const float *)o->a, (float *)o->c, (float *)o->d, NULL); break;
    case 5:
        hy_cuda_slice_last_bwd(o->rows, o->N, o->start, o->len, (const float *)o->a, (float *)o->c,
                               NULL);
        break;
    }
}

static void bench_line(const char *what, bench_ops *o, double bytes) {
    float ms = hy_cuda_time_ms(run_bench_op, o, 3, 20);
    printf("  %-46s %8.4f ms  %6.0f GB/s  (%.0f MB moved; %.4f ms at 4.2 TB/s)\n", what,
           (double)ms, bytes / (ms * 1e-3) / 1e9, bytes / 1e6, bytes / 4.2e12 * 1e3);
}

HY_TEST(gpu_op_bench, "gpu") {
    need_gpu();
    char info[256];
    printf("  device: %s\n", hy_cuda_device_info(0, info, sizeof info));
    // Four device buffers of 2^29 bytes (512 MiB), filled with 0x3F bytes
    // (fp32 0.747, bf16 0.746): the largest operand (dgv of swiglu) is
    // 16384 x 4096 fp32 = 268 MB.
    const size_t big = (size_t)1 << 29;
    void *buf[4];
    for (int i = 0; i < 4; i++) {
        buf[i] = hy_cuda_malloc(big);
        hy_cuda_memset(buf[i], 0x3F, big);
    }
    bench_ops o;
    memset(&o, 0, sizeof o);
    o.a = buf[0], o.b = buf[1], o.c = buf[2], o.d = buf[3];

    // short_conv (B, T, C) = (8, 2048, 2304), K = 4, no cache: dy f32 4 + x
    // bf16 2 + dx f32 4 + 4 bytes an element (backward), x 2 + y 2 (forward).
    o.B = 8, o.T = 2048, o.C = 2304, o.K = 4;
    double e = (double)o.B * o.T * o.C;
    o.sb = hy_cuda_short_conv_bwd_scratch_bytes(o.B, o.T, o.C, o.K);
    o.scratch = hy_cuda_malloc(o.sb);
    o.dw = (float *)hy_cuda_malloc((size_t)o.C * (o.K + 1) * sizeof(float));
    o.db = o.dw + (size_t)o.C * o.K;
    hy_cuda_memset(o.dw, 0, (size_t)o.C * (o.K + 1) * sizeof(float));
    o.op = 0;
    bench_line("short_conv_bwd (8, 2048, 2304) K=4 dx dw db", &o, e * 14);
    o.op = 1;
    bench_line("short_conv_fwd (8, 2048, 2304) K=4", &o, e * 4);
    hy_cuda_free(o.scratch);
    hy_cuda_free(o.dw);

    // swiglu (rows, H) = (16384, 2048): dy 4 + gv 2 * 2 + dgv 8 * 2 bytes a (row, h).
    o.rows = 16384, o.len = 2048;
    o.op = 2;
    bench_line("swiglu_bwd (16384, 2048)", &o, 16384.0 * 2048 * 24);
    // silu (16384 x 2304) and (16384 x 768): dy 4 + x 2 + dx 8 bytes an element.
    o.op = 3;
    o.n = (size_t)16384 * 2304;
    bench_line("silu_bwd 16384 x 2304", &o, (double)o.n * 14);
    o.n = (size_t)16384 * 768;
    bench_line("silu_bwd 16384 x 768", &o, (double)o.n * 14);
    // add (16384 x 768), both gradients: dy 4 + da 8 + db 8.
    o.op = 4;
    bench_line("add_bwd 16384 x 768 (da, db)", &o, (double)o.n * 20);
    // slice_last: dx (16384, 2304) += dy (16384, 768) in [768, 1536): 12 bytes
    // a copied element; and the gates' (16384, 24) [12, 24).
    o.op = 5;
    o.rows = 16384, o.N = 2304, o.start = 768, o.len = 768;
    bench_line("slice_last_bwd (16384, 2304) [768, 1536)", &o, 16384.0 * 768 * 12);
    o.N = 24, o.start = 12, o.len = 12;
    bench_line("slice_last_bwd (16384, 24) [12, 24)", &o, 16384.0 * 12 * 12);
    for (int i = 0; i < 4; i++) hy_cuda_free(buf[i]);
}
