// The basic tape ops (layers/ops.h) on the GPU against the same ops on the
// CPU, through the tape: forward, recorded node, backward. Skipped (exit 77)
// without a GPU or a CUDA build. (tests/test_gpu_ops.c tests the kernels
// themselves; this file tests that the ops call them right.) The harness
// and what it checks: tests/util_tape_cases.h; the output dtype is bf16 on
// the GPU (f32 for sigmoid and mean).
// Sizes are odd (the kernels' scalar paths) in one case of each op and
// multiples of 8 (the 16-byte vector paths) in another; some inputs are row
// windows (views) of larger tensors, so pointers are misaligned and the
// gradients land in windows of their owner's buffer.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../autograd/rng.h"
#include "../autograd/tape.h"
#include "../cuda/hy_cuda.h"
#include "../cuda/hy_cuda_blas.h"
#include "../cuda/hy_cuda_ops.h"
#include "../layers/gdn.h"
#include "../layers/ops.h"
#include "harness.h"
#include "util_tape_cases.h"

// ================================================================ rmsnorm
static hy_tensor *f_rmsnorm(hy_tape *t, hy_tensor **in, const void *arg) {
    (void)arg;
    return hy_rmsnorm(t, in[0], in[1], 1e-5f);
}

HY_TEST(gpu_tape_rmsnorm, "gpu") {
    static const op_case cases[] = {
        {"rmsnorm x (2, 37, 45)", f_rmsnorm, NULL, 2,
         {{"x", ACT, 1, 3, {2, 37, 45}, 0, 1.0f, 0}, {"w", PARAM, 1, 1, {45}, 0, 1.0f, 0}},
         HY_BF16, 0, 0},
        {"rmsnorm x (37, 48)", f_rmsnorm, NULL, 2,
         {{"x", ACT, 1, 2, {37, 48}, 0, 2.0f, 0}, {"w", PARAM, 1, 1, {48}, 0, 1.0f, 0}},
         HY_BF16, 0, 0},
        {"rmsnorm x rows [1, 38) of (38, 45)", f_rmsnorm, NULL, 2,
         {{"x", ACT, 1, 2, {37, 45}, 1, 1.0f, 0}, {"w", PARAM, 1, 1, {45}, 0, 1.0f, 0}},
         HY_BF16, 0, 0},
        {"rmsnorm x (37, 48), w no grad", f_rmsnorm, NULL, 2,
         {{"x", ACT, 1, 2, {37, 48}, 0, 1.0f, 0}, {"w", PARAM, 0, 1, {48}, 0, 1.0f, 0}},
         HY_BF16, 0, 0},
        {"rmsnorm x (37, 48) no grad, w", f_rmsnorm, NULL, 2,
         {{"x", ACT, 0, 2, {37, 48}, 0, 1.0f, 0}, {"w", PARAM, 1, 1, {48}, 0, 1.0f, 0}},
         HY_BF16, 0, 0},
    };
    tape_check_cases(cases, N_CASES(cases), 1100);
}

// ================================================================ swiglu
static hy_tensor *f_swiglu(hy_tape *t, hy_tensor **in, const void *arg) {
    (void)arg;
    return hy_swiglu(t, in[0]);
}

HY_TEST(gpu_tape_swiglu, "gpu") {
    static const op_case cases[] = {
        {"swiglu gv (37, 90)", f_swiglu, NULL, 1, {{"gv", ACT, 1, 2, {37, 90}, 0, 2.0f, 0}},
         HY_BF16, 0, 0},
        {"swiglu gv (3, 37, 96)", f_swiglu, NULL, 1,
         {{"gv", ACT, 1, 3, {3, 37, 96}, 0, 2.0f, 0}}, HY_BF16, 0, 0},
    };
    tape_check_cases(cases, N_CASES(cases), 1200);
}

// ================================================================ elementwise
static hy_tensor *f_add(hy_tape *t, hy_tensor **in, const void *arg) {
    (void)arg;
    return hy_add(t, in[0], in[1]);
}
static hy_tensor *f_mul(hy_tape *t, hy_tensor **in, const void *arg) {
    (void)arg;
    return hy_mul(t, in[0], in[1]);
}
static hy_tensor *f_add_self(hy_tape *t, hy_tensor **in, const void *arg) {
    (void)arg;
    return hy_add(t, in[0], in[0]);
}
static hy_tensor *f_mul_self(hy_tape *t, hy_tensor **in, const void *arg) {
    (void)arg;
    return hy_mul(t, in[0], in[0]);
}
// Two overlapping row windows of one tensor: rows [0, n-1) and [1, n).
static hy_tensor *f_add_shift(hy_tape *t, hy_tensor **in, const void *arg) {
    (void)arg;
    int64_t n = in[0]->shape[0] - 1;
    return hy_add(t, hy_view_rows(t->acts, in[0], 0, n), hy_view_rows(t->acts, in[0], 1, n));
}
static hy_tensor *f_mul_shift(hy_tape *t, hy_tensor **in, const void *arg) {
    (void)arg;
    int64_t n = in[0]->shape[0] - 1;
    return hy_mul(t, hy_view_rows(t->acts, in[0], 0, n), hy_view_rows(t->acts, in[0], 1, n));
}
static hy_tensor *f_silu(hy_tape *t, hy_tensor **in, const void *arg) {
    (void)arg;
    return hy_silu(t, in[0]);
}
static hy_tensor *f_sigmoid(hy_tape *t, hy_tensor **in, const void *arg) {
    (void)arg;
    return hy_sigmoid(t, in[0]);
}

HY_TEST(gpu_tape_add, "gpu") {
    static const op_case cases[] = {
        {"add (37, 45)", f_add, NULL, 2,
         {{"a", ACT, 1, 2, {37, 45}, 0, 1.0f, 0}, {"b", ACT, 1, 2, {37, 45}, 0, 1.0f, 0}},
         HY_BF16, 0, 0},
        {"add (2, 37, 48), b no grad", f_add, NULL, 2,
         {{"a", ACT, 1, 3, {2, 37, 48}, 0, 1.0f, 0}, {"b", ACT, 0, 3, {2, 37, 48}, 0, 1.0f, 0}},
         HY_BF16, 0, 0},
        {"add a rows [1, 38) of (38, 45), b", f_add, NULL, 2,
         {{"a", ACT, 1, 2, {37, 45}, 1, 1.0f, 0}, {"b", ACT, 1, 2, {37, 45}, 0, 1.0f, 0}},
         HY_BF16, 0, 0},
        {"add (x, x) (37, 48)", f_add_self, NULL, 1, {{"x", ACT, 1, 2, {37, 48}, 0, 1.0f, 0}},
         HY_BF16, 0, 0},
        {"add rows [0,37) + [1,38) of (38, 48)", f_add_shift, NULL, 1,
         {{"x", ACT, 1, 2, {38, 48}, 0, 1.0f, 0}}, HY_BF16, 0, 0},
    };
    tape_check_cases(cases, N_CASES(cases), 1300);
}

HY_TEST(gpu_tape_mul, "gpu") {
    static const op_case cases[] = {
        {"mul (37, 45)", f_mul, NULL, 2,
         {{"a", ACT, 1, 2, {37, 45}, 0, 1.0f, 0}, {"b", ACT, 1, 2, {37, 45}, 0, 1.0f, 0}},
         HY_BF16, 0, 0},
        {"mul (2, 37, 48), a no grad", f_mul, NULL, 2,
         {{"a", ACT, 0, 3, {2, 37, 48}, 0, 1.0f, 0}, {"b", ACT, 1, 3, {2, 37, 48}, 0, 1.0f, 0}},
         HY_BF16, 0, 0},
        {"mul (x, x) (37, 45)", f_mul_self, NULL, 1, {{"x", ACT, 1, 2, {37, 45}, 0, 1.0f, 0}},
         HY_BF16, 0, 0},
        {"mul rows [0,37) * [1,38) of (38, 48)", f_mul_shift, NULL, 1,
         {{"x", ACT, 1, 2, {38, 48}, 0, 1.0f, 0}}, HY_BF16, 0, 0},
    };
    tape_check_cases(cases, N_CASES(cases), 1400);
}

HY_TEST(gpu_tape_silu, "gpu") {
    static const op_case cases[] = {
        {"silu (37, 45)", f_silu, NULL, 1, {{"x", ACT, 1, 2, {37, 45}, 0, 3.0f, 0}}, HY_BF16, 0,
         0},
        {"silu (2, 37, 48)", f_silu, NULL, 1, {{"x", ACT, 1, 3, {2, 37, 48}, 0, 3.0f, 0}},
         HY_BF16, 0, 0},
    };
    tape_check_cases(cases, N_CASES(cases), 1500);
}

// The GPU sigmoid outputs f32 (the gates of the gated delta rule).
HY_TEST(gpu_tape_sigmoid, "gpu") {
    static const op_case cases[] = {
        {"sigmoid (37, 45)", f_sigmoid, NULL, 1, {{"x", ACT, 1, 2, {37, 45}, 0, 3.0f, 0}},
         HY_F32, 0, 0},
        {"sigmoid (2, 37, 48)", f_sigmoid, NULL, 1, {{"x", ACT, 1, 3, {2, 37, 48}, 0, 3.0f, 0}},
         HY_F32, 0, 0},
    };
    tape_check_cases(cases, N_CASES(cases), 1600);
}

// ================================================================ l2norm_heads
typedef struct {
    int head_dim;
} l2_arg;

static hy_tensor *f_l2norm(hy_tape *t, hy_tensor **in, const void *arg) {
    return hy_l2norm_heads(t, in[0], ((const l2_arg *)arg)->head_dim, 1e-12f);
}

HY_TEST(gpu_tape_l2norm_heads, "gpu") {
    static const l2_arg a40 = {40}, a45 = {45}, a48 = {48};
    static const op_case cases[] = {
        {"l2norm x (37, 3 x 40)", f_l2norm, &a40, 1, {{"x", ACT, 1, 2, {37, 120}, 0, 1.0f, 0}},
         HY_BF16, 0, 0},
        {"l2norm x (2, 37, 3 x 45)", f_l2norm, &a45, 1,
         {{"x", ACT, 1, 3, {2, 37, 135}, 0, 1.0f, 0}}, HY_BF16, 0, 0},
        {"l2norm x (37, 2 x 48) rows [1, 38)", f_l2norm, &a48, 1,
         {{"x", ACT, 1, 2, {37, 96}, 1, 1.0f, 0}}, HY_BF16, 0, 0},
    };
    tape_check_cases(cases, N_CASES(cases), 1700);
}

// ================================================================ short_conv
typedef struct {
    int bias, cache;  // indices of the bias and cache inputs, -1: none
} conv_arg;

static hy_tensor *f_conv(hy_tape *t, hy_tensor **in, const void *arg) {
    const conv_arg *a = (const conv_arg *)arg;
    return hy_short_conv(t, in[0], in[1], a->bias >= 0 ? in[a->bias] : NULL,
                         a->cache >= 0 ? in[a->cache] : NULL);
}

HY_TEST(gpu_tape_short_conv, "gpu") {
    static const conv_arg plain = {2, -1}, cached = {2, 3}, nobias_cached = {-1, 2};
    static const op_case cases[] = {
        {"short_conv x (2, 37, 45) K 4", f_conv, &plain, 3,
         {{"x", ACT, 1, 3, {2, 37, 45}, 0, 1.0f, 0},
          {"w", PARAM, 1, 3, {45, 1, 4}, 0, 0.5f, 0},
          {"b", PARAM, 1, 1, {45}, 0, 0.5f, 0}},
         HY_BF16, 0, 0},
        {"short_conv x (2, 37, 48) K 4 cache", f_conv, &cached, 4,
         {{"x", ACT, 1, 3, {2, 37, 48}, 0, 1.0f, 0},
          {"w", PARAM, 1, 2, {48, 4}, 0, 0.5f, 0},
          {"b", PARAM, 1, 1, {48}, 0, 0.5f, 0},
          {"cache", ACT, 0, 3, {2, 48, 3}, 0, 1.0f, 0}},
         HY_BF16, 0, 0},
        {"short_conv x (3, 5, 45) K 7 cache no bias", f_conv, &nobias_cached, 3,
         {{"x", ACT, 1, 3, {3, 5, 45}, 0, 1.0f, 0},
          {"w", PARAM, 1, 3, {45, 1, 7}, 0, 0.5f, 0},
          {"cache", ACT, 0, 3, {3, 45, 6}, 0, 1.0f, 0}},
         HY_BF16, 0, 0},
        {"short_conv x (2, 37, 45) K 1", f_conv, &plain, 3,
         {{"x", ACT, 1, 3, {2, 37, 45}, 0, 1.0f, 0},
          {"w", PARAM, 1, 3, {45, 1, 1}, 0, 0.5f, 0},
          {"b", PARAM, 1, 1, {45}, 0, 0.5f, 0}},
         HY_BF16, 0, 0},
    };
    tape_check_cases(cases, N_CASES(cases), 1800);
}

// ================================================================ gdn_qkv
// The fused GPU op against the CPU's short_conv, silu, slices and l2norms.
// One output at a time (the other two get no gradient: their backward
// must treat them as zero), and all three at once through q + k + v.
typedef struct {
    int H, D, norm_qk, bias, cache, which;  // which: 0 q, 1 k, 2 v, 3 q + k + v
    int fresh;  // qkv = x + x on the tape: its gradient buffer is fresh (written, not added to)
} qkv_arg;

static hy_tensor *f_gdn_qkv(hy_tape *t, hy_tensor **in, const void *arg) {
    const qkv_arg *a = (const qkv_arg *)arg;
    hy_tensor *o[3];
    hy_tensor *x = a->fresh ? hy_add(t, in[0], in[0]) : in[0];
    hy_gdn_qkv(t, x, in[1], a->bias >= 0 ? in[a->bias] : NULL, a->cache >= 0 ? in[a->cache] : NULL,
               a->H, a->D, a->norm_qk, 1e-12f, o);
    return a->which < 3 ? o[a->which] : hy_add(t, hy_add(t, o[0], o[1]), o[2]);
}

HY_TEST(gpu_tape_gdn_qkv, "gpu") {
    // Odd sizes (H 3, D 5: the scalar path), the 16-byte path (D 64), a
    // cache, no bias, K 1 and K 7, and x as a window of a larger tensor. The
    // streaming kernels take D 4, 8, 16, 64 and 128 (K <= 4, heads on 1, 2,
    // 4, 16 or 32 lanes: their sums' edge cases; aligned rows; T 37, 41, 45
    // and 70 cross their 32-row runs), the
    // shared-memory ones the rest: D 5, K 7, D 48 (12 lanes: not a power of
    // two) and the window. The "fresh" cases feed x + x, whose gradient
    // buffer the op writes instead of adding to. Then every case again with
    // the shared-memory kernels forced (HY_GDN_QKV_SHARED=1).
    static const qkv_arg q0 = {3, 5, 1, 2, -1, 0, 0}, k0 = {3, 5, 1, 2, -1, 1, 0},
                         v0 = {3, 5, 1, 2, -1, 2, 0}, all0 = {3, 5, 1, 2, -1, 3, 0},
                         q64 = {2, 64, 1, 2, 3, 0, 0}, k64 = {2, 64, 1, 2, 3, 1, 0},
                         all64 = {2, 64, 1, 2, 3, 3, 0}, plain64 = {2, 64, 0, -1, 2, 3, 0},
                         k1 = {1, 16, 1, 2, -1, 3, 0}, all128 = {1, 128, 1, 2, 3, 3, 0},
                         all48 = {3, 48, 1, 2, -1, 3, 0}, fresh64 = {2, 64, 1, 2, 3, 3, 1},
                         fresh5 = {3, 5, 1, 2, -1, 3, 1}, g1 = {3, 4, 1, 2, -1, 3, 0},
                         g2 = {2, 8, 1, 2, -1, 3, 0};
    static const op_case cases[] = {
        {"gdn_qkv (2, 37, 45) H 3 D 5 K 4 -> q", f_gdn_qkv, &q0, 3,
         {{"qkv", ACT, 1, 3, {2, 37, 45}, 0, 1.0f, 0},
          {"w", PARAM, 1, 3, {45, 1, 4}, 0, 0.5f, 0},
          {"b", PARAM, 1, 1, {45}, 0, 0.5f, 0}},
         HY_BF16, 0, 0},
        {"gdn_qkv (2, 37, 45) H 3 D 5 K 4 -> k", f_gdn_qkv, &k0, 3,
         {{"qkv", ACT, 1, 3, {2, 37, 45}, 0, 1.0f, 0},
          {"w", PARAM, 1, 3, {45, 1, 4}, 0, 0.5f, 0},
          {"b", PARAM, 1, 1, {45}, 0, 0.5f, 0}},
         HY_BF16, 0, 0},
        {"gdn_qkv (2, 37, 45) H 3 D 5 K 4 -> v", f_gdn_qkv, &v0, 3,
         {{"qkv", ACT, 1, 3, {2, 37, 45}, 0, 1.0f, 0},
          {"w", PARAM, 1, 3, {45, 1, 4}, 0, 0.5f, 0},
          {"b", PARAM, 1, 1, {45}, 0, 0.5f, 0}},
         HY_BF16, 0, 0},
        {"gdn_qkv (3, 29, 45) window K 7 -> q+k+v", f_gdn_qkv, &all0, 3,
         {{"qkv", ACT, 1, 3, {3, 29, 45}, 1, 1.0f, 0},
          {"w", PARAM, 1, 2, {45, 7}, 0, 0.5f, 0},
          {"b", PARAM, 1, 1, {45}, 0, 0.5f, 0}},
         HY_BF16, 0, 0},
        {"gdn_qkv (2, 41, 384) D 64 cache -> q", f_gdn_qkv, &q64, 4,
         {{"qkv", ACT, 1, 3, {2, 41, 384}, 0, 1.0f, 0},
          {"w", PARAM, 1, 3, {384, 1, 4}, 0, 0.5f, 0},
          {"b", PARAM, 1, 1, {384}, 0, 0.5f, 0},
          {"cache", ACT, 0, 3, {2, 384, 3}, 0, 1.0f, 0}},
         HY_BF16, 0, 0},
        {"gdn_qkv (2, 41, 384) D 64 cache -> k", f_gdn_qkv, &k64, 4,
         {{"qkv", ACT, 1, 3, {2, 41, 384}, 0, 1.0f, 0},
          {"w", PARAM, 1, 3, {384, 1, 4}, 0, 0.5f, 0},
          {"b", PARAM, 1, 1, {384}, 0, 0.5f, 0},
          {"cache", ACT, 0, 3, {2, 384, 3}, 0, 1.0f, 0}},
         HY_BF16, 0, 0},
        {"gdn_qkv (2, 41, 384) D 64 cache -> q+k+v", f_gdn_qkv, &all64, 4,
         {{"qkv", ACT, 1, 3, {2, 41, 384}, 0, 1.0f, 0},
          {"w", PARAM, 1, 3, {384, 1, 4}, 0, 0.5f, 0},
          {"b", PARAM, 1, 1, {384}, 0, 0.5f, 0},
          {"cache", ACT, 0, 3, {2, 384, 3}, 0, 1.0f, 0}},
         HY_BF16, 0, 0},
        {"gdn_qkv (2, 41, 384) no norm, no bias", f_gdn_qkv, &plain64, 3,
         {{"qkv", ACT, 1, 3, {2, 41, 384}, 0, 1.0f, 0},
          {"w", PARAM, 1, 3, {384, 1, 4}, 0, 0.5f, 0},
          {"cache", ACT, 0, 3, {2, 384, 3}, 0, 1.0f, 0}},
         HY_BF16, 0, 0},
        {"gdn_qkv (1, 9, 48) D 16 K 1 -> q+k+v", f_gdn_qkv, &k1, 3,
         {{"qkv", ACT, 1, 3, {1, 9, 48}, 0, 1.0f, 0},
          {"w", PARAM, 1, 3, {48, 1, 1}, 0, 0.5f, 0},
          {"b", PARAM, 1, 1, {48}, 0, 0.5f, 0}},
         HY_BF16, 0, 0},
        {"gdn_qkv (3, 23, 384) D 128 K 3 cache -> q+k+v", f_gdn_qkv, &all128, 4,
         {{"qkv", ACT, 1, 3, {3, 23, 384}, 0, 1.0f, 0},
          {"w", PARAM, 1, 3, {384, 1, 3}, 0, 0.5f, 0},
          {"b", PARAM, 1, 1, {384}, 0, 0.5f, 0},
          {"cache", ACT, 0, 3, {3, 384, 2}, 0, 1.0f, 0}},
         HY_BF16, 0, 0},
        {"gdn_qkv (2, 19, 432) H 3 D 48 -> q+k+v", f_gdn_qkv, &all48, 3,
         {{"qkv", ACT, 1, 3, {2, 19, 432}, 0, 1.0f, 0},
          {"w", PARAM, 1, 3, {432, 1, 4}, 0, 0.5f, 0},
          {"b", PARAM, 1, 1, {432}, 0, 0.5f, 0}},
         HY_BF16, 0, 0},
        {"gdn_qkv (3, 70, 384) D 64 cache, fresh d qkv -> q+k+v", f_gdn_qkv, &fresh64, 4,
         {{"qkv", ACT, 1, 3, {3, 70, 384}, 0, 1.0f, 0},
          {"w", PARAM, 1, 3, {384, 1, 4}, 0, 0.5f, 0},
          {"b", PARAM, 1, 1, {384}, 0, 0.5f, 0},
          {"cache", ACT, 0, 3, {3, 384, 3}, 0, 1.0f, 0}},
         HY_BF16, 0, 0},
        {"gdn_qkv (3, 29, 45) D 5, fresh d qkv -> q+k+v", f_gdn_qkv, &fresh5, 3,
         {{"qkv", ACT, 1, 3, {3, 29, 45}, 0, 1.0f, 0},
          {"w", PARAM, 1, 3, {45, 1, 4}, 0, 0.5f, 0},
          {"b", PARAM, 1, 1, {45}, 0, 0.5f, 0}},
         HY_BF16, 0, 0},
        {"gdn_qkv (2, 37, 36) H 3 D 4 K 2 -> q+k+v", f_gdn_qkv, &g1, 3,
         {{"qkv", ACT, 1, 3, {2, 37, 36}, 0, 1.0f, 0},
          {"w", PARAM, 1, 3, {36, 1, 2}, 0, 0.5f, 0},
          {"b", PARAM, 1, 1, {36}, 0, 0.5f, 0}},
         HY_BF16, 0, 0},
        {"gdn_qkv (2, 45, 48) H 2 D 8 -> q+k+v", f_gdn_qkv, &g2, 3,
         {{"qkv", ACT, 1, 3, {2, 45, 48}, 0, 1.0f, 0},
          {"w", PARAM, 1, 3, {48, 1, 4}, 0, 0.5f, 0},
          {"b", PARAM, 1, 1, {48}, 0, 0.5f, 0}},
         HY_BF16, 0, 0},
    };
    tape_check_cases(cases, N_CASES(cases), 2100);
    setenv("HY_GDN_QKV_SHARED", "1", 1);
    tape_check_cases(cases, N_CASES(cases), 2100);
    unsetenv("HY_GDN_QKV_SHARED");
}

// ================================================================ gdn_gates, silu_gate
// One gate at a time (the other gets no gradient; the model tests send
// both). The GPU outputs are f32, like hy_sigmoid's there.
typedef struct {
    int H, which;  // 0 alpha, 1 beta
} gates_arg;

static hy_tensor *f_gdn_gates(hy_tape *t, hy_tensor **in, const void *arg) {
    const gates_arg *a = (const gates_arg *)arg;
    hy_tensor *al, *be;
    hy_gdn_gates(t, in[0], a->H, &al, &be);
    return a->which == 0 ? al : be;
}

HY_TEST(gpu_tape_gdn_gates, "gpu") {
    static const gates_arg al = {5, 0}, be = {5, 1}, be12 = {12, 1};
    static const op_case cases[] = {
        {"gdn_gates (3, 37, 10) -> alpha", f_gdn_gates, &al, 1,
         {{"ab", ACT, 1, 3, {3, 37, 10}, 0, 2.0f, 0}}, HY_F32, 0, 0},
        {"gdn_gates (3, 37, 10) -> beta", f_gdn_gates, &be, 1,
         {{"ab", ACT, 1, 3, {3, 37, 10}, 0, 2.0f, 0}}, HY_F32, 0, 0},
        {"gdn_gates (2, 41, 24) window -> beta", f_gdn_gates, &be12, 1,
         {{"ab", ACT, 1, 3, {2, 41, 24}, 1, 2.0f, 0}}, HY_F32, 0, 0},
    };
    tape_check_cases(cases, N_CASES(cases), 2200);
}

static hy_tensor *f_silu_gate(hy_tape *t, hy_tensor **in, const void *arg) {
    return arg ? hy_silu_gate(t, in[0], in[0]) : hy_silu_gate(t, in[0], in[1]);
}

HY_TEST(gpu_tape_silu_gate, "gpu") {
    static const int same = 1;
    static const op_case cases[] = {
        {"silu_gate (37, 45)", f_silu_gate, NULL, 2,
         {{"y", ACT, 1, 2, {37, 45}, 0, 1.0f, 0}, {"g", ACT, 1, 2, {37, 45}, 0, 2.0f, 0}},
         HY_BF16, 0, 0},
        {"silu_gate (64, 768) windows", f_silu_gate, NULL, 2,
         {{"y", ACT, 1, 2, {64, 768}, 3, 1.0f, 0}, {"g", ACT, 1, 2, {64, 768}, 0, 2.0f, 0}},
         HY_BF16, 0, 0},
        {"silu_gate x x (33, 40)", f_silu_gate, &same, 1,
         {{"x", ACT, 1, 2, {33, 40}, 0, 2.0f, 0}}, HY_BF16, 0, 0},
    };
    tape_check_cases(cases, N_CASES(cases), 2250);
}

// ================================================================ rope
typedef struct {
    int64_t pos0;
} rope_arg;

static hy_tensor *f_rope(hy_tape *t, hy_tensor **in, const void *arg) {
    return hy_rope(t, in[0], ((const rope_arg *)arg)->pos0, 10000.0f);
}

HY_TEST(gpu_tape_rope, "gpu") {
    static const rope_arg p0 = {0}, p1000 = {1000};
    static const op_case cases[] = {
        {"rope x (2, 37, 3, 40) pos0 0", f_rope, &p0, 1,
         {{"x", ACT, 1, 4, {2, 37, 3, 40}, 0, 1.0f, 0}}, HY_BF16, 0, 0},
        {"rope x (2, 37, 3, 46) pos0 1000", f_rope, &p1000, 1,
         {{"x", ACT, 1, 4, {2, 37, 3, 46}, 0, 1.0f, 0}}, HY_BF16, 0, 0},
        {"rope x (1, 37, 2, 32) pos0 1000", f_rope, &p1000, 1,
         {{"x", ACT, 1, 4, {1, 37, 2, 32}, 0, 1.0f, 0}}, HY_BF16, 0, 0},
    };
    tape_check_cases(cases, N_CASES(cases), 1900);
}

// ================================================================ qkv_rope
// The fused GPU op against the CPU's slices, reshapes and ropes: one output
// at a time (the other two get no gradient) and all three through
// q + k + v; "fresh" feeds x + x, whose gradient buffer the op writes
// instead of adding to.
typedef struct {
    int H, D, which, fresh;  // which: 0 q, 1 k, 2 v, 3 q + k + v
    int64_t pos0;
} qkv_rope_arg;

static hy_tensor *f_qkv_rope(hy_tape *t, hy_tensor **in, const void *arg) {
    const qkv_rope_arg *a = (const qkv_rope_arg *)arg;
    hy_tensor *o[3];
    hy_qkv_rope(t, a->fresh ? hy_add(t, in[0], in[0]) : in[0], a->H, a->D, a->pos0, 10000.0f, o);
    return a->which < 3 ? o[a->which] : hy_add(t, hy_add(t, o[0], o[1]), o[2]);
}

HY_TEST(gpu_tape_qkv_rope, "gpu") {
    // D 10 (half 5: the scalar kernels), D 16 and 64 (four pairs a thread),
    // qkv as a window of a larger tensor.
    static const qkv_rope_arg q10 = {3, 10, 0, 0, 0}, k10 = {3, 10, 1, 0, 1000},
                              v10 = {3, 10, 2, 0, 0}, all10 = {3, 10, 3, 0, 7},
                              all16 = {2, 16, 3, 0, 1000}, fresh16 = {2, 16, 3, 1, 5},
                              all64 = {2, 64, 3, 0, 0}, fresh10 = {3, 10, 3, 1, 0};
    static const op_case cases[] = {
        {"qkv_rope (2, 37, 90) H 3 D 10 -> q", f_qkv_rope, &q10, 1,
         {{"qkv", ACT, 1, 3, {2, 37, 90}, 0, 1.0f, 0}}, HY_BF16, 0, 0},
        {"qkv_rope (2, 37, 90) H 3 D 10 pos0 1000 -> k", f_qkv_rope, &k10, 1,
         {{"qkv", ACT, 1, 3, {2, 37, 90}, 0, 1.0f, 0}}, HY_BF16, 0, 0},
        {"qkv_rope (2, 37, 90) H 3 D 10 -> v", f_qkv_rope, &v10, 1,
         {{"qkv", ACT, 1, 3, {2, 37, 90}, 0, 1.0f, 0}}, HY_BF16, 0, 0},
        {"qkv_rope (2, 37, 90) H 3 D 10 pos0 7 -> q+k+v", f_qkv_rope, &all10, 1,
         {{"qkv", ACT, 1, 3, {2, 37, 90}, 0, 1.0f, 0}}, HY_BF16, 0, 0},
        {"qkv_rope (3, 41, 96) H 2 D 16 pos0 1000 -> q+k+v", f_qkv_rope, &all16, 1,
         {{"qkv", ACT, 1, 3, {3, 41, 96}, 0, 1.0f, 0}}, HY_BF16, 0, 0},
        {"qkv_rope (3, 41, 96) H 2 D 16, fresh d qkv", f_qkv_rope, &fresh16, 1,
         {{"qkv", ACT, 1, 3, {3, 41, 96}, 0, 1.0f, 0}}, HY_BF16, 0, 0},
        {"qkv_rope (2, 37, 90) H 3 D 10, fresh d qkv", f_qkv_rope, &fresh10, 1,
         {{"qkv", ACT, 1, 3, {2, 37, 90}, 0, 1.0f, 0}}, HY_BF16, 0, 0},
        {"qkv_rope rows [1, 3) of (3, 33, 384) H 2 D 64", f_qkv_rope, &all64, 1,
         {{"qkv", ACT, 1, 3, {2, 33, 384}, 1, 1.0f, 0}}, HY_BF16, 0, 0},
    };
    tape_check_cases(cases, N_CASES(cases), 1950);
}

// ================================================================ slice_last
typedef struct {
    int64_t start, len;
} slice_arg;

static hy_tensor *f_slice(hy_tape *t, hy_tensor **in, const void *arg) {
    const slice_arg *a = (const slice_arg *)arg;
    return hy_slice_last(t, in[0], a->start, a->len);
}

HY_TEST(gpu_tape_slice_last, "gpu") {
    static const slice_arg s45 = {45, 45}, s48 = {48, 48}, s0 = {0, 7};
    static const op_case cases[] = {
        {"slice x (37, 135) [45, 90)", f_slice, &s45, 1,
         {{"x", ACT, 1, 2, {37, 135}, 0, 1.0f, 0}}, HY_BF16, 0, 0},
        {"slice x (2, 37, 144) [48, 96)", f_slice, &s48, 1,
         {{"x", ACT, 1, 3, {2, 37, 144}, 0, 1.0f, 0}}, HY_BF16, 0, 0},
        {"slice x rows [1, 38) of (38, 45) [0, 7)", f_slice, &s0, 1,
         {{"x", ACT, 1, 2, {37, 45}, 1, 1.0f, 0}}, HY_BF16, 0, 0},
    };
    tape_check_cases(cases, N_CASES(cases), 2000);
}

// ================================================================ mean
static hy_tensor *f_mean(hy_tape *t, hy_tensor **in, const void *arg) {
    (void)arg;
    return hy_mean(t, in[0]);
}

// mean takes f32 on both devices (a loss): the input is a PARAM-kind tensor.
HY_TEST(gpu_tape_mean, "gpu") {
    static const op_case cases[] = {
        {"mean x (37, 45) f32", f_mean, NULL, 1, {{"x", PARAM, 1, 2, {37, 45}, 0, 1.0f, 0}},
         HY_F32, 0, 0},
        {"mean x (1) f32", f_mean, NULL, 1, {{"x", PARAM, 1, 1, {1}, 0, 1.0f, 0}}, HY_F32, 0,
         0},
    };
    tape_check_cases(cases, N_CASES(cases), 2100);
}

// ================================================================ embedding
typedef struct {
    int padding_idx;
} emb_arg;

static hy_tensor *f_embedding(hy_tape *t, hy_tensor **in, const void *arg) {
    return hy_embedding(t, in[0], in[1], ((const emb_arg *)arg)->padding_idx);
}

// A small V so that ids repeat (their gradients add up in one row).
HY_TEST(gpu_tape_embedding, "gpu") {
    static const emb_arg pad5 = {5}, nopad = {-1};
    static const op_case cases[] = {
        {"embedding W (29, 45) ids (2, 37) pad 5", f_embedding, &pad5, 2,
         {{"W", PARAM, 1, 2, {29, 45}, 0, 1.0f, 0}, {"ids", IDS, 0, 2, {2, 37}, 0, 0, 29}},
         HY_BF16, 0, 0},
        {"embedding W (101, 48) ids (37)", f_embedding, &nopad, 2,
         {{"W", PARAM, 1, 2, {101, 48}, 0, 1.0f, 0}, {"ids", IDS, 0, 1, {37}, 0, 0, 101}},
         HY_BF16, 0, 0},
    };
    tape_check_cases(cases, N_CASES(cases), 2200);
}

// ================================================================ a chain
// Every op in one graph, ending in a scalar loss, so that activation
// gradients flow between ops through the scratch arena, a tensor used twice
// (x) and two overlapping slices of one tensor accumulate, and views reach
// their owners. Intermediate activations are rounded to bf16 on the GPU
// (not on the CPU), hence the looser tolerances.
static hy_tensor *f_chain(hy_tape *t, hy_tensor **in, const void *arg) {
    (void)arg;
    hy_tensor *W = in[0], *ids = in[1], *g = in[2], *cw = in[3], *cb = in[4];
    hy_tensor *x = hy_embedding(t, W, ids, 3);                 // (2, 37, 48)
    hy_tensor *r = hy_add(t, x, hy_rmsnorm(t, x, g, 1e-5f));   // (2, 37, 48)
    hy_tensor *a = hy_silu(t, hy_short_conv(t, r, cw, cb, NULL));
    hy_tensor *u = hy_slice_last(t, a, 0, 32), *v = hy_slice_last(t, a, 16, 32);
    hy_tensor *m = hy_mul(t, u, v);                            // (2, 37, 32)
    int64_t hs[4] = {2, 37, 2, 16};
    hy_tensor *q = hy_rope(t, hy_view(t->acts, m, 4, hs), 5, 10000.0f);  // (2, 37, 2, 16)
    hy_tensor *n = hy_l2norm_heads(t, q, 16, 1e-12f);
    hy_tensor *s = hy_sigmoid(t, hy_swiglu(t, n));             // (2, 37, 2, 8) f32 on both
    return hy_mean(t, s);                                      // (1) f32
}

HY_TEST(gpu_tape_chain, "gpu") {
    static const op_case cases[] = {
        {"chain of all ops -> mean", f_chain, NULL, 5,
         {{"W", PARAM, 1, 2, {29, 48}, 0, 1.0f, 0},
          {"ids", IDS, 0, 2, {2, 37}, 0, 0, 29},
          {"g", PARAM, 1, 1, {48}, 0, 1.0f, 0},
          {"conv w", PARAM, 1, 3, {48, 1, 4}, 0, 0.5f, 0},
          {"conv b", PARAM, 1, 1, {48}, 0, 0.5f, 0}},
         HY_F32, 1e-2, 5e-2},
    };
    tape_check_cases(cases, N_CASES(cases), 2300);
}

// ================================================================ bf16 gradients
// A residual MLP block (x + linear(swiglu(linear(x))), no biases): swiglu's
// backward writes the fused projection's gradient in bf16
// (hy_grad_out_bf16), which the linear reads instead of rounding an f32
// one, and the add writes w_down's output gradient in bf16; GDN's output gate
// (silu_gate of two linears' outputs: both gradients in bf16); and GDN's
// input stage (linear -> gdn_qkv), whose one-pass backward writes d qkv in
// bf16. The
// same bits either way: run with HYDRA_GRAD_BF16=0 and without, compare
// every gradient bit for bit, check that the bf16 path was taken, and that
// reading that gradient as f32 stops with an error.
typedef struct {
    float *gx, *g1, *g2, *g3;
    int took_bf16;
} mlp_result;

static hy_tensor *gpu_weight(tape_env *e, int64_t out, int64_t in, hy_rng *r, const char *name) {
    hy_tensor *w = hy_new2(&e->in, HY_F32, out, in, name);
    size_t n = (size_t)(out * in);
    float *h = (float *)hy_xmalloc(n * sizeof(float));
    uint16_t *hb = (uint16_t *)hy_xmalloc(n * sizeof(uint16_t));
    for (size_t i = 0; i < n; i++) {
        h[i] = 0.2f * hy_rng_normal(r);
        hb[i] = hy_f32_to_bf16(h[i]);
    }
    hy_tensor_from_host_f32(w, h);
    w->half = hy_arena_alloc(&e->in, n * sizeof(uint16_t));
    hy_cuda_memcpy_h2d(w->half, hb, n * sizeof(uint16_t));
    free(h);
    free(hb);
    return w;
}

// HYDRA_GRAD_BF16 as a run wants it (unset: bf16 gradients on).
static void grad_bf16_mode(int on) {
    if (on)
        unsetenv("HYDRA_GRAD_BF16");
    else
        setenv("HYDRA_GRAD_BF16", "0", 1);
}

// An input of N(0, 1) values rounded to bf16, on the GPU.
static hy_tensor *gpu_input(tape_env *e, int ndim, const int64_t *shape, hy_rng *r) {
    hy_tensor *x = hy_tensor_new(&e->in, HY_BF16, ndim, shape, "x");
    size_t n = (size_t)hy_numel(x);
    float *xv = (float *)hy_xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) xv[i] = hy_rng_normal(r);
    hy_tensor_from_host_f32(x, xv);
    free(xv);
    return x;
}

// x (ROWS, 40) -> y = x W_a^T, g = x W_b^T (ROWS, 32) -> silu_gate(y, g):
// g1 d W_a, g2 d W_b.
static void run_gate(int bf16, mlp_result *res) {
    grad_bf16_mode(bf16);
    enum { ROWS = 37, D = 40, N = 32 };
    hy_rng r;
    hy_rng_seed(&r, 2600);
    tape_env e;
    tape_env_init(&e, HY_CUDA);
    int64_t xs[2] = {ROWS, D};
    hy_tensor *x = gpu_input(&e, 2, xs, &r);
    hy_tensor *wa = gpu_weight(&e, N, D, &r, "w_a"), *wb = gpu_weight(&e, N, D, &r, "w_b");
    hy_tensor *gx = hy_new2(&e.in, HY_F32, ROWS, D, "gx"), *g1 = hy_new2(&e.in, HY_F32, N, D, "g1");
    hy_tensor *g2 = hy_new2(&e.in, HY_F32, N, D, "g2");
    tape_zero(gx), tape_zero(g1), tape_zero(g2);
    hy_tape_bind_grad(&e.tape, x, gx);
    hy_tape_bind_grad(&e.tape, wa, g1);
    hy_tape_bind_grad(&e.tape, wb, g2);
    tape_poison(&e);
    hy_tensor *ya = hy_linear(&e.tape, x, wa, NULL), *gb = hy_linear(&e.tape, x, wb, NULL);
    hy_tensor *y = tape_upcast(&e.tape, hy_silu_gate(&e.tape, ya, gb));
    float *seed = (float *)hy_xmalloc((size_t)ROWS * N * sizeof(float));
    for (int i = 0; i < ROWS * N; i++) seed[i] = hy_rng_normal(&r);
    hy_tape_backward_seed(&e.tape, y, seed);
    free(seed);
    res->took_bf16 = hy_grad_bf16(&e.tape, ya) != NULL && hy_grad_bf16(&e.tape, gb) != NULL;
    res->gx = tape_to_host(gx), res->g1 = tape_to_host(g1), res->g2 = tape_to_host(g2);
    res->g3 = NULL;
    tape_env_free(&e);
    unsetenv("HYDRA_GRAD_BF16");
}

static void run_mlp(int bf16, mlp_result *res) {
    grad_bf16_mode(bf16);
    enum { ROWS = 37, D = 40, H = 24 };
    hy_rng r;
    hy_rng_seed(&r, 2400);
    tape_env e;
    tape_env_init(&e, HY_CUDA);
    int64_t xs[2] = {ROWS, D};
    hy_tensor *x = gpu_input(&e, 2, xs, &r);
    hy_tensor *w1 = gpu_weight(&e, 2 * H, D, &r, "w_fused"), *w2 = gpu_weight(&e, D, H, &r, "w_down");
    hy_tensor *gx = hy_new2(&e.in, HY_F32, ROWS, D, "gx"), *g1 = hy_new2(&e.in, HY_F32, 2 * H, D, "g1");
    hy_tensor *g2 = hy_new2(&e.in, HY_F32, D, H, "g2");
    tape_zero(gx), tape_zero(g1), tape_zero(g2);
    hy_tape_bind_grad(&e.tape, x, gx);
    hy_tape_bind_grad(&e.tape, w1, g1);
    hy_tape_bind_grad(&e.tape, w2, g2);
    tape_poison(&e);
    hy_tensor *fused = hy_linear(&e.tape, x, w1, NULL);  // (ROWS, 2H)
    hy_tensor *down = hy_linear(&e.tape, hy_swiglu(&e.tape, fused), w2, NULL);  // (ROWS, D)
    hy_tensor *y = tape_upcast(&e.tape, hy_add(&e.tape, x, down));
    float *seed = (float *)hy_xmalloc((size_t)ROWS * D * sizeof(float));
    for (int i = 0; i < ROWS * D; i++) seed[i] = hy_rng_normal(&r);
    hy_tape_backward_seed(&e.tape, y, seed);
    free(seed);
    res->took_bf16 = hy_grad_bf16(&e.tape, fused) != NULL && hy_grad_bf16(&e.tape, down) != NULL;
    res->g3 = NULL;
    if (res->took_bf16)
        HY_EXPECT_ERROR(hy_grad(&e.tape, fused), HY_EXIT_FAIL, "held in bf16");
    res->gx = tape_to_host(gx), res->g1 = tape_to_host(g1), res->g2 = tape_to_host(g2);
    tape_env_free(&e);
    unsetenv("HYDRA_GRAD_BF16");
}

// x (ROWS, 40) -> linear -> qkv (ROWS, 96) -> gdn_qkv (H 2, D 16, K 4, conv
// bias) -> q + k + v: g1 d W_qkv, g2 d conv w, g3 d conv b.
static void run_qkv(int bf16, mlp_result *res) {
    grad_bf16_mode(bf16);
    enum { B = 2, T = 37, D = 40, C = 96 };
    hy_rng r;
    hy_rng_seed(&r, 2500);
    tape_env e;
    tape_env_init(&e, HY_CUDA);
    int64_t xs[3] = {B, T, D};
    hy_tensor *x = gpu_input(&e, 3, xs, &r);
    hy_tensor *wq = gpu_weight(&e, C, D, &r, "w_qkv");
    hy_tensor *cw = hy_new2(&e.in, HY_F32, C, 4, "conv_w"), *cb = hy_new1(&e.in, HY_F32, C, "conv_b");
    float h[C * 4];
    for (int i = 0; i < C * 4; i++) h[i] = 0.5f * hy_rng_normal(&r);
    hy_tensor_from_host_f32(cw, h);
    for (int i = 0; i < C; i++) h[i] = 0.5f * hy_rng_normal(&r);
    hy_tensor_from_host_f32(cb, h);
    hy_tensor *g[4] = {hy_new3(&e.in, HY_F32, B, T, D, "gx"), hy_new2(&e.in, HY_F32, C, D, "g1"),
                       hy_new2(&e.in, HY_F32, C, 4, "g2"), hy_new1(&e.in, HY_F32, C, "g3")};
    hy_tensor *p[4] = {x, wq, cw, cb};
    for (int i = 0; i < 4; i++) {
        tape_zero(g[i]);
        hy_tape_bind_grad(&e.tape, p[i], g[i]);
    }
    tape_poison(&e);
    hy_tensor *qkv = hy_linear(&e.tape, x, wq, NULL), *o[3];  // (B, T, 96)
    hy_gdn_qkv(&e.tape, qkv, cw, cb, NULL, 2, 16, 1, 1e-6f, o);
    hy_tensor *y = tape_upcast(&e.tape, hy_add(&e.tape, hy_add(&e.tape, o[0], o[1]), o[2]));
    float *seed = (float *)hy_xmalloc((size_t)B * T * 32 * sizeof(float));
    for (int i = 0; i < B * T * 32; i++) seed[i] = hy_rng_normal(&r);
    hy_tape_backward_seed(&e.tape, y, seed);
    free(seed);
    res->took_bf16 = hy_grad_bf16(&e.tape, qkv) != NULL;
    res->gx = tape_to_host(g[0]), res->g1 = tape_to_host(g[1]), res->g2 = tape_to_host(g[2]);
    res->g3 = tape_to_host(g[3]);
    tape_env_free(&e);
    unsetenv("HYDRA_GRAD_BF16");
}

// x (B, T, 40) -> linear -> qkv (B, T, 96) -> q, k (roped), v (H 2, D 16)
// -> q + k + v: g1 d W_qkv. fused 0: the separate slices, reshapes and ropes
// (which never write bf16) instead of qkv_rope.
static void run_attn(int bf16, int fused, mlp_result *res) {
    grad_bf16_mode(bf16);
    enum { B = 2, T = 37, D = 40, H = 2, HD = 16, I = H * HD };
    hy_rng r;
    hy_rng_seed(&r, 2700);
    tape_env e;
    tape_env_init(&e, HY_CUDA);
    int64_t xs[3] = {B, T, D};
    hy_tensor *x = gpu_input(&e, 3, xs, &r);
    hy_tensor *wq = gpu_weight(&e, 3 * I, D, &r, "w_qkv");
    hy_tensor *gx = hy_new3(&e.in, HY_F32, B, T, D, "gx"), *g1 = hy_new2(&e.in, HY_F32, 3 * I, D, "g1");
    tape_zero(gx), tape_zero(g1);
    hy_tape_bind_grad(&e.tape, x, gx);
    hy_tape_bind_grad(&e.tape, wq, g1);
    tape_poison(&e);
    hy_tensor *qkv = hy_linear(&e.tape, x, wq, NULL), *o[3];  // (B, T, 3I)
    if (fused) {
        hy_qkv_rope(&e.tape, qkv, H, HD, 3, 10000.0f, o);
    } else {
        int64_t hs[4] = {B, T, H, HD};
        for (int i = 0; i < 3; i++) {
            o[i] = hy_view(e.tape.acts, hy_slice_last(&e.tape, qkv, i * I, I), 4, hs);
            if (i < 2) o[i] = hy_rope(&e.tape, o[i], 3, 10000.0f);
        }
    }
    hy_tensor *y = tape_upcast(&e.tape, hy_add(&e.tape, hy_add(&e.tape, o[0], o[1]), o[2]));
    float *seed = (float *)hy_xmalloc((size_t)B * T * I * sizeof(float));
    for (int i = 0; i < B * T * I; i++) seed[i] = hy_rng_normal(&r);
    hy_tape_backward_seed(&e.tape, y, seed);
    free(seed);
    res->took_bf16 = hy_grad_bf16(&e.tape, qkv) != NULL;
    res->gx = tape_to_host(gx), res->g1 = tape_to_host(g1), res->g2 = res->g3 = NULL;
    tape_env_free(&e);
    unsetenv("HYDRA_GRAD_BF16");
}

// Equal as values (a fused op may write -0 where adding into zeros gave +0).
static int same_values(const float *a, const float *b, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!(a[i] == b[i])) return 0;
    return 1;
}

HY_TEST(gpu_tape_grad_bf16, "gpu") {
    tape_need_gpu();
    hy_cuda_blas_init();
    mlp_result a, b;
    run_mlp(0, &a);
    run_mlp(1, &b);
    HY_ASSERT(!a.took_bf16, "HYDRA_GRAD_BF16=0: the fused gradient was still held in bf16");
    HY_ASSERT(b.took_bf16, "the fused projection's or w_down's output gradient was not bf16");
    HY_ASSERT(memcmp(a.gx, b.gx, 37 * 40 * sizeof(float)) == 0, "bf16 gradient: dx bits differ");
    HY_ASSERT(memcmp(a.g1, b.g1, 48 * 40 * sizeof(float)) == 0, "bf16 gradient: dW_fused bits differ");
    HY_ASSERT(memcmp(a.g2, b.g2, 40 * 24 * sizeof(float)) == 0, "bf16 gradient: dW_down bits differ");
    int nonzero = 0;
    for (int i = 0; i < 48 * 40; i++) nonzero += a.g1[i] != 0.0f;
    HY_ASSERT(nonzero > 48 * 40 / 2, "dW_fused is mostly zero (%d of %d): the test is vacuous",
              nonzero, 48 * 40);
    printf("  x + MLP (37, 40) -> 48 -> 24 -> 40: bf16 path taken, dx, dW_fused, dW_down same bits\n");
    free(a.gx), free(a.g1), free(a.g2), free(b.gx), free(b.g1), free(b.g2);

    run_gate(0, &a);
    run_gate(1, &b);
    HY_ASSERT(!a.took_bf16, "HYDRA_GRAD_BF16=0: a gate gradient was still held in bf16");
    HY_ASSERT(b.took_bf16, "silu_gate did not write both input gradients in bf16");
    HY_ASSERT(memcmp(a.gx, b.gx, 37 * 40 * sizeof(float)) == 0, "silu_gate bf16: dx bits differ");
    HY_ASSERT(memcmp(a.g1, b.g1, 32 * 40 * sizeof(float)) == 0, "silu_gate bf16: dW_a bits differ");
    HY_ASSERT(memcmp(a.g2, b.g2, 32 * 40 * sizeof(float)) == 0, "silu_gate bf16: dW_b bits differ");
    printf("  silu_gate of two linears (37, 40) -> 32: bf16 path taken, dx, dW_a, dW_b same bits\n");
    free(a.gx), free(a.g1), free(a.g2), free(b.gx), free(b.g1), free(b.g2);

    run_qkv(0, &a);
    run_qkv(1, &b);
    HY_ASSERT(!a.took_bf16, "HYDRA_GRAD_BF16=0: d qkv was still held in bf16");
    HY_ASSERT(b.took_bf16, "gdn_qkv's one-pass backward did not write d qkv in bf16");
    HY_ASSERT(memcmp(a.gx, b.gx, 2 * 37 * 40 * sizeof(float)) == 0, "gdn_qkv bf16: dx bits differ");
    HY_ASSERT(memcmp(a.g1, b.g1, 96 * 40 * sizeof(float)) == 0, "gdn_qkv bf16: dW_qkv bits differ");
    HY_ASSERT(memcmp(a.g2, b.g2, 96 * 4 * sizeof(float)) == 0, "gdn_qkv bf16: d conv w bits differ");
    HY_ASSERT(memcmp(a.g3, b.g3, 96 * sizeof(float)) == 0, "gdn_qkv bf16: d conv b bits differ");
    nonzero = 0;
    for (int i = 0; i < 96 * 40; i++) nonzero += a.g1[i] != 0.0f;
    HY_ASSERT(nonzero > 96 * 40 / 2, "dW_qkv is mostly zero (%d of %d): the test is vacuous",
              nonzero, 96 * 40);
    printf("  (2, 37, 40) -> 96 -> gdn_qkv H 2 D 16: bf16 path taken, dx, dW_qkv, conv dw, db same bits\n");
    free(a.gx), free(a.g1), free(a.g2), free(a.g3), free(b.gx), free(b.g1), free(b.g2), free(b.g3);

    mlp_result c;
    run_attn(0, 1, &a);
    run_attn(1, 1, &b);
    run_attn(1, 0, &c);
    HY_ASSERT(!a.took_bf16 && !c.took_bf16, "d qkv held in bf16 with HYDRA_GRAD_BF16=0 or unfused");
    HY_ASSERT(b.took_bf16, "qkv_rope's backward did not write d qkv in bf16");
    HY_ASSERT(memcmp(a.gx, b.gx, 2 * 37 * 40 * sizeof(float)) == 0, "qkv_rope bf16: dx bits differ");
    HY_ASSERT(memcmp(a.g1, b.g1, 96 * 40 * sizeof(float)) == 0, "qkv_rope bf16: dW_qkv bits differ");
    HY_ASSERT(same_values(c.gx, b.gx, 2 * 37 * 40) && same_values(c.g1, b.g1, 96 * 40),
              "qkv_rope: dx or dW_qkv differ from the separate slices and ropes");
    nonzero = 0;
    for (int i = 0; i < 96 * 40; i++) nonzero += b.g1[i] != 0.0f;
    HY_ASSERT(nonzero > 96 * 40 / 2, "dW_qkv is mostly zero (%d of %d): the test is vacuous",
              nonzero, 96 * 40);
    printf("  (2, 37, 40) -> 96 -> qkv_rope H 2 D 16: bf16 path taken, dx, dW_qkv same bits; "
           "the same values as slices + ropes\n");
    free(a.gx), free(a.g1), free(b.gx), free(b.g1), free(c.gx), free(c.g1);
}

// ================================================================ add + rmsnorm
// A residual add read first by a norm, then by a later add:
//   down = x W^T;  h = rmsnorm(x + down, w);  y = (x + down) + h
// mode 0: hy_add then hy_rmsnorm with HYDRA_GRAD_BF16=0 (the add's backward hands down's
// linear an f32 gradient, which it rounds); 1: the same ops with bf16 gradients (the norm's
// backward writes down's rounded gradient, the add skips its pass); 2: hy_add_rmsnorm (one
// forward kernel). All three: the same y and gradients, bit for bit. D 256 takes the norm's
// register backward kernel, D 40 its loop kernel and a rounding pass after it.
typedef struct {
    float *y, *gx, *gw, *gn;
    int took_bf16;
} norm_result;

static void run_add_norm(int mode, int D, norm_result *res) {
    grad_bf16_mode(mode > 0);
    enum { ROWS = 37 };
    hy_rng r;
    hy_rng_seed(&r, 2800);
    tape_env e;
    tape_env_init(&e, HY_CUDA);
    int64_t xs[2] = {ROWS, D};
    hy_tensor *x = gpu_input(&e, 2, xs, &r);
    hy_tensor *w = gpu_weight(&e, D, D, &r, "w_down");
    hy_tensor *nw = hy_new1(&e.in, HY_F32, D, "norm_w");
    float *h = (float *)hy_xmalloc((size_t)D * sizeof(float));
    for (int i = 0; i < D; i++) h[i] = 1.0f + 0.3f * hy_rng_normal(&r);
    hy_tensor_from_host_f32(nw, h);
    free(h);
    hy_tensor *gx = hy_new2(&e.in, HY_F32, ROWS, D, "gx"), *gw = hy_new2(&e.in, HY_F32, D, D, "gw");
    hy_tensor *gn = hy_new1(&e.in, HY_F32, D, "gn");
    tape_zero(gx), tape_zero(gw), tape_zero(gn);
    hy_tape_bind_grad(&e.tape, x, gx);
    hy_tape_bind_grad(&e.tape, w, gw);
    hy_tape_bind_grad(&e.tape, nw, gn);
    tape_poison(&e);
    hy_tensor *down = hy_linear(&e.tape, x, w, NULL), *sum, *hn;
    if (mode == 2) {
        hn = hy_add_rmsnorm(&e.tape, x, down, nw, 1e-5f, &sum);
    } else {
        sum = hy_add(&e.tape, x, down);
        hn = hy_rmsnorm(&e.tape, sum, nw, 1e-5f);
    }
    hy_tensor *y = tape_upcast(&e.tape, hy_add(&e.tape, sum, hn));
    float *seed = (float *)hy_xmalloc((size_t)ROWS * D * sizeof(float));
    for (int i = 0; i < ROWS * D; i++) seed[i] = hy_rng_normal(&r);
    hy_tape_backward_seed(&e.tape, y, seed);
    free(seed);
    res->took_bf16 = hy_grad_bf16(&e.tape, down) != NULL;
    res->y = tape_to_host(y), res->gx = tape_to_host(gx);
    res->gw = tape_to_host(gw), res->gn = tape_to_host(gn);
    tape_env_free(&e);
    unsetenv("HYDRA_GRAD_BF16");
}

HY_TEST(gpu_tape_add_rmsnorm, "gpu") {
    tape_need_gpu();
    hy_cuda_blas_init();
    const int dims[2] = {256, 40};
    for (int di = 0; di < 2; di++) {
        int D = dims[di];
        size_t n = (size_t)37 * D;
        norm_result m[3];
        for (int k = 0; k < 3; k++) run_add_norm(k, D, &m[k]);
        HY_ASSERT(!m[0].took_bf16, "D %d: HYDRA_GRAD_BF16=0, yet w_down's gradient was bf16", D);
        HY_ASSERT(m[1].took_bf16 && m[2].took_bf16,
                  "D %d: the norm's backward did not write w_down's output gradient in bf16", D);
        for (int k = 1; k < 3; k++) {
            HY_ASSERT(memcmp(m[0].y, m[k].y, n * 4) == 0, "D %d mode %d: y bits differ", D, k);
            HY_ASSERT(memcmp(m[0].gx, m[k].gx, n * 4) == 0, "D %d mode %d: dx bits differ", D, k);
            HY_ASSERT(memcmp(m[0].gw, m[k].gw, (size_t)D * D * 4) == 0,
                      "D %d mode %d: dW bits differ", D, k);
            HY_ASSERT(memcmp(m[0].gn, m[k].gn, (size_t)D * 4) == 0,
                      "D %d mode %d: d norm w bits differ", D, k);
        }
        int nonzero = 0;
        for (int i = 0; i < D * D; i++) nonzero += m[0].gw[i] != 0.0f;
        HY_ASSERT(nonzero > D * D / 2, "D %d: dW is mostly zero (%d of %d): the test is vacuous",
                  D, nonzero, D * D);
        printf("  (37, %d): add + rmsnorm, bf16 copy from the norm's backward, fused forward: "
               "y, dx, dW, d norm w same bits\n", D);
        for (int k = 0; k < 3; k++) free(m[k].y), free(m[k].gx), free(m[k].gw), free(m[k].gn);
    }
}

// ================================================================ misuse
// Dtype checks come before any kernel, so these need no GPU memory: the
// "GPU" tensors are host tensors marked as CUDA.
HY_TEST(gpu_tape_dtype_errors, "gpu") {
    hy_arena a;
    hy_arena_init(&a, "tape-ops-err", HY_CPU, 1 << 20);
    hy_tape t;
    hy_tape_init(&t, &a, &a, 8, 8);
    hy_tensor *x = hy_new2(&a, HY_F32, 3, 8, "x32");  // an f32 activation on the GPU: wrong
    hy_tensor *w = hy_new1(&a, HY_F32, 8, "w");
    hy_tensor *xb = hy_new2(&a, HY_BF16, 3, 8, "xb");
    hy_tensor *cw = hy_new2(&a, HY_F32, 8, 4, "cw");
    hy_tensor *xc = hy_new3(&a, HY_BF16, 1, 3, 8, "xc");
    hy_tensor *cache = hy_new3(&a, HY_F32, 1, 8, 3, "cache32");
    x->device = w->device = xb->device = cw->device = xc->device = cache->device = HY_CUDA;
    HY_EXPECT_ERROR(hy_rmsnorm(&t, x, w, 1e-5f), HY_EXIT_USAGE, "must be bf16");
    HY_EXPECT_ERROR(hy_rmsnorm(&t, x, w, 1e-5f), HY_EXIT_USAGE, "x32");
    HY_EXPECT_ERROR(hy_add(&t, xb, x), HY_EXIT_USAGE, "must be bf16");
    HY_EXPECT_ERROR(hy_silu(&t, x), HY_EXIT_USAGE, "must be bf16");
    HY_EXPECT_ERROR(hy_mean(&t, xb), HY_EXIT_USAGE, "must be f32");
    HY_EXPECT_ERROR(hy_short_conv(&t, xc, cw, NULL, cache), HY_EXIT_USAGE, "must be bf16");
    // A CPU weight with a GPU activation.
    w->device = HY_CPU;
    HY_EXPECT_ERROR(hy_rmsnorm(&t, xb, w, 1e-5f), HY_EXIT_USAGE, "different devices");
    hy_tape_free(&t);
    hy_arena_free(&a);
}
