// Gradient checks, closed-form forward values and misuse errors of the
// sequence-model ops: embedding, swiglu, l2norm_heads, short_conv, rope, qkv_rope,
// slice_last, cross_entropy, and GDN's input stage (gdn_qkv).
#include <string.h>

#include "../autograd/gradcheck.h"
#include "../autograd/rng.h"
#include "../layers/gdn.h"
#include "../layers/ops.h"
#include "harness.h"

static hy_arena g_in;  // inputs live outside the tape's arenas

static hy_arena *inputs(void) {
    if (!g_in.meta) hy_arena_init(&g_in, "test-inputs", HY_CPU, (size_t)64 << 20);
    return &g_in;
}

static hy_tensor *rand_input(hy_rng *r, int ndim, const int64_t *shape, const char *name,
                             float std) {
    hy_tensor *x = hy_tensor_new(inputs(), HY_F32, ndim, shape, name);
    hy_fill_normal(x, r, 0.0f, std);
    x->requires_grad = 1;
    return x;
}

// A fixed f32 input (a cache): passed through, never checked.
static hy_tensor *fixed_input(hy_rng *r, int ndim, const int64_t *shape, const char *name) {
    hy_tensor *x = hy_tensor_new(inputs(), HY_F32, ndim, shape, name);
    hy_fill_normal(x, r, 0.0f, 1.0f);
    x->requires_grad = 0;
    return x;
}

// i32 ids uniform in [0, n).
static hy_tensor *id_input(hy_rng *r, int ndim, const int64_t *shape, const char *name,
                           int64_t n) {
    hy_tensor *x = hy_tensor_new(inputs(), HY_I32, ndim, shape, name);
    for (int64_t i = 0, len = hy_numel(x); i < len; i++)
        hy_i32(x)[i] = (int32_t)hy_rng_below(r, (uint64_t)n);
    return x;
}

// A tape of its own, for forward values and hand-run backwards.
typedef struct {
    hy_arena acts, scratch;
    hy_tape tape;
} tape_env;

static void env_init(tape_env *e) {
    hy_arena_init(&e->acts, "test-acts", HY_CPU, (size_t)16 << 20);
    hy_arena_init(&e->scratch, "test-scratch", HY_CPU, (size_t)16 << 20);
    hy_tape_init(&e->tape, &e->acts, &e->scratch, 64, 64);
}

static void env_free(tape_env *e) {
    hy_tape_free(&e->tape);
    hy_arena_free(&e->acts);
    hy_arena_free(&e->scratch);
}

// ================================================================ embedding
typedef struct {
    int padding_idx;
} emb_args;

static hy_tensor *f_embedding(hy_tape *t, hy_tensor **in, void *u) {
    return hy_embedding(t, in[0], in[1], ((emb_args *)u)->padding_idx);
}

HY_TEST(op_embedding_grad, "cpu") {
    hy_rng r;
    hy_rng_seed(&r, 11);
    int64_t ws[2] = {11, 7}, is[2] = {3, 5};  // V = 11 > 15 ids: some rows repeat, some unused
    hy_tensor *in[2] = {rand_input(&r, 2, ws, "w", 1), id_input(&r, 2, is, "ids", 11)};
    emb_args none = {-1};
    HY_ASSERT(hy_gradcheck("embedding", f_embedding, &none, in, 2, NULL) == 0,
              "embedding gradients");

    // padding_idx deliberately departs from the true gradient (its row is
    // still read), so it is checked by hand: a padding row gets nothing, the
    // others the sum of the output gradients of their positions.
    int pad = hy_i32(in[1])[0];
    tape_env e;
    env_init(&e);
    hy_tensor *gw = hy_zeros_like(inputs(), in[0], "dw");
    hy_tape_bind_grad(&e.tape, in[0], gw);
    hy_tensor *y = hy_embedding(&e.tape, in[0], in[1], pad);  // (3, 5, 7)
    float seed[3 * 5 * 7];
    for (int i = 0; i < 3 * 5 * 7; i++) seed[i] = hy_rng_normal(&r);
    hy_tape_backward_seed(&e.tape, y, seed);
    double want[11 * 7] = {0};
    for (int i = 0; i < 15; i++) {
        int id = hy_i32(in[1])[i];
        if (id == pad) continue;
        for (int k = 0; k < 7; k++) want[id * 7 + k] += seed[i * 7 + k];
    }
    for (int k = 0; k < 7; k++)
        HY_ASSERT(hy_f32(gw)[pad * 7 + k] == 0.0f, "padding row %d got gradient %g", pad,
                  (double)hy_f32(gw)[pad * 7 + k]);
    HY_ASSERT(hy_max_rel_err(hy_f32(gw), want, 11 * 7) < 1e-6, "embedding gradient with padding");
    env_free(&e);
}

HY_TEST(op_embedding_forward, "cpu") {
    hy_rng r;
    hy_rng_seed(&r, 12);
    int64_t ws[2] = {13, 5}, is[3] = {2, 3, 3};
    hy_tensor *w = rand_input(&r, 2, ws, "w", 1), *ids = id_input(&r, 3, is, "ids", 13);
    tape_env e;
    env_init(&e);
    int pad = hy_i32(ids)[4];
    hy_tensor *y = hy_embedding(&e.tape, w, ids, pad);
    HY_ASSERT(y->ndim == 4 && y->shape[0] == 2 && y->shape[1] == 3 && y->shape[2] == 3 &&
                  y->shape[3] == 5,
              "embedding output shape %s", hy_shape_str(y));
    // Every position, the padding one included, is an exact copy of its row.
    for (int i = 0; i < 18; i++)
        HY_ASSERT(memcmp(hy_f32(y) + i * 5, hy_f32(w) + hy_i32(ids)[i] * 5, 5 * sizeof(float)) == 0,
                  "embedding position %d is not row %d", i, hy_i32(ids)[i]);
    env_free(&e);
}

HY_TEST(op_embedding_misuse, "cpu") {
    hy_rng r;
    hy_rng_seed(&r, 13);
    int64_t ws[2] = {11, 4}, is[2] = {2, 3};
    hy_tensor *w = rand_input(&r, 2, ws, "w", 1), *ids = id_input(&r, 2, is, "ids", 11);
    tape_env e;
    env_init(&e);
    hy_i32(ids)[4] = 11;
    HY_EXPECT_ERROR(hy_embedding(&e.tape, w, ids, -1), HY_EXIT_USAGE, "id 11 at flat position 4");
    hy_i32(ids)[4] = -3;
    HY_EXPECT_ERROR(hy_embedding(&e.tape, w, ids, -1), HY_EXIT_USAGE, "with V = 11");
    hy_i32(ids)[4] = 0;
    HY_EXPECT_ERROR(hy_embedding(&e.tape, w, ids, 11), HY_EXIT_USAGE, "padding_idx 11");
    HY_EXPECT_ERROR(hy_embedding(&e.tape, w, w, -1), HY_EXIT_USAGE, "must be i32");
    env_free(&e);
}

// ================================================================ swiglu
static hy_tensor *f_swiglu(hy_tape *t, hy_tensor **in, void *u) {
    (void)u;
    return hy_swiglu(t, in[0]);
}

HY_TEST(op_swiglu_grad, "cpu") {
    hy_rng r;
    hy_rng_seed(&r, 21);
    int64_t s[3] = {3, 5, 14};  // H = 7
    hy_tensor *in[1] = {rand_input(&r, 3, s, "gv", 2)};
    HY_ASSERT(hy_gradcheck("swiglu", f_swiglu, NULL, in, 1, NULL) == 0, "swiglu gradients");
}

HY_TEST(op_swiglu_forward, "cpu") {
    hy_rng r;
    hy_rng_seed(&r, 22);
    int64_t s[2] = {5, 18};  // H = 9
    hy_tensor *gv = rand_input(&r, 2, s, "gv", 2);
    tape_env e;
    env_init(&e);
    hy_tensor *y = hy_swiglu(&e.tape, gv);
    HY_ASSERT(y->ndim == 2 && y->shape[0] == 5 && y->shape[1] == 9, "swiglu shape %s",
              hy_shape_str(y));
    double want[5 * 9];
    for (int rr = 0; rr < 5; rr++)
        for (int i = 0; i < 9; i++) {
            double g = hy_f32(gv)[rr * 18 + i], v = hy_f32(gv)[rr * 18 + 9 + i];
            want[rr * 9 + i] = g / (1.0 + exp(-g)) * v;
        }
    HY_ASSERT(hy_max_rel_err(hy_f32(y), want, 5 * 9) < 1e-6, "swiglu values");
    env_free(&e);
}

HY_TEST(op_swiglu_misuse, "cpu") {
    hy_rng r;
    hy_rng_seed(&r, 23);
    int64_t s[2] = {3, 7};
    hy_tensor *gv = rand_input(&r, 2, s, "gv", 1);
    tape_env e;
    env_init(&e);
    HY_EXPECT_ERROR(hy_swiglu(&e.tape, gv), HY_EXIT_USAGE, "must be even");
    env_free(&e);
}

// ================================================================ l2norm_heads
typedef struct {
    int head_dim;
    float eps;
} l2_args;

static hy_tensor *f_l2norm(hy_tape *t, hy_tensor **in, void *u) {
    l2_args *a = (l2_args *)u;
    return hy_l2norm_heads(t, in[0], a->head_dim, a->eps);
}

// Rescale each head vector of x (..., H * D) to norm norms[h % n].
static void set_head_norms(hy_tensor *x, int64_t D, const double *norms, int n) {
    float *v = hy_f32(x);
    for (int64_t h = 0, nh = hy_numel(x) / D; h < nh; h++) {
        double ss = 0;
        for (int64_t i = 0; i < D; i++) ss += (double)v[h * D + i] * v[h * D + i];
        double k = norms[h % n] / sqrt(ss);
        for (int64_t i = 0; i < D; i++) v[h * D + i] = (float)(v[h * D + i] * k);
    }
}

HY_TEST(op_l2norm_grad, "cpu") {
    hy_rng r;
    hy_rng_seed(&r, 31);
    int64_t s[3] = {2, 3, 15};  // H = 3 heads of 5
    hy_tensor *in[1] = {rand_input(&r, 3, s, "x", 1)};
    l2_args torch_eps = {5, 1e-12f};
    HY_ASSERT(hy_gradcheck("l2norm", f_l2norm, &torch_eps, in, 1, NULL) == 0,
              "l2norm gradients");
    // The clamped branch: with eps 0.5, heads of norm 0.2 are divided by eps,
    // the others by their norm. Both stay well clear of the kink at
    // ||x|| = eps under the finite-difference steps.
    double norms[3] = {0.2, 1.3, 2.1};
    set_head_norms(in[0], 5, norms, 3);
    l2_args big_eps = {5, 0.5f};
    HY_ASSERT(hy_gradcheck("l2norm_clamped", f_l2norm, &big_eps, in, 1, NULL) == 0,
              "l2norm gradients (clamped heads)");
}

HY_TEST(op_l2norm_forward, "cpu") {
    hy_rng r;
    hy_rng_seed(&r, 32);
    int64_t s[2] = {3, 21};  // H = 3 heads of 7
    hy_tensor *x = rand_input(&r, 2, s, "x", 1);
    double norms[3] = {0.25, 3.0, 1.0};
    set_head_norms(x, 7, norms, 3);
    for (int i = 0; i < 7; i++) hy_f32(x)[7 + i] = 0.0f;  // row 0, head 1: a zero vector
    tape_env e;
    env_init(&e);
    hy_tensor *y = hy_l2norm_heads(&e.tape, x, 7, 0.5f);
    // y = x / max(||x||, eps): unit vectors above eps, x / eps below, 0 for 0.
    double want[3 * 21];
    for (int h = 0; h < 9; h++) {
        double ss = 0;
        for (int i = 0; i < 7; i++) ss += (double)hy_f32(x)[h * 7 + i] * hy_f32(x)[h * 7 + i];
        double den = fmax(sqrt(ss), 0.5);
        for (int i = 0; i < 7; i++) want[h * 7 + i] = hy_f32(x)[h * 7 + i] / den;
    }
    HY_ASSERT(hy_max_rel_err(hy_f32(y), want, 3 * 21) < 1e-6, "l2norm values");
    for (int i = 0; i < 7; i++) HY_ASSERT(hy_f32(y)[7 + i] == 0.0f, "zero head stays zero");
    env_free(&e);
}

// ================================================================ short_conv
static hy_tensor *f_conv(hy_tape *t, hy_tensor **in, void *u) {
    (void)u;
    return hy_short_conv(t, in[0], in[1], in[2], NULL);
}
static hy_tensor *f_conv_cache(hy_tape *t, hy_tensor **in, void *u) {
    (void)u;
    return hy_short_conv(t, in[0], in[1], in[2], in[3]);
}

// One gradient check of x (B, T, C) with K taps; w3: weight (C, 1, K), else (C, K).
static int check_conv(hy_rng *r, int64_t B, int64_t T, int64_t C, int64_t K, int w3,
                      int with_cache) {
    int64_t xs[3] = {B, T, C}, ws[3] = {C, 1, K}, ws2[2] = {C, K}, cs[3] = {B, C, K - 1};
    hy_tensor *in[4] = {rand_input(r, 3, xs, "x", 1),
                        w3 ? rand_input(r, 3, ws, "w", 0.5f) : rand_input(r, 2, ws2, "w", 0.5f),
                        rand_input(r, 1, &C, "b", 0.5f), fixed_input(r, 3, cs, "cache")};
    char name[64];
    snprintf(name, sizeof name, "short_conv T=%lld K=%lld%s", (long long)T, (long long)K,
             with_cache ? " cache" : "");
    return hy_gradcheck(name, with_cache ? f_conv_cache : f_conv, NULL, in, with_cache ? 4 : 3,
                        NULL);
}

HY_TEST(op_short_conv_grad, "cpu") {
    hy_rng r;
    hy_rng_seed(&r, 41);
    HY_ASSERT(check_conv(&r, 2, 7, 5, 4, 1, 0) == 0, "short_conv gradients (no cache)");
    HY_ASSERT(check_conv(&r, 2, 7, 5, 4, 0, 1) == 0, "short_conv gradients (cache)");
    HY_ASSERT(check_conv(&r, 3, 2, 5, 4, 1, 0) == 0, "short_conv gradients (T < K, no cache)");
    HY_ASSERT(check_conv(&r, 3, 2, 5, 4, 0, 1) == 0, "short_conv gradients (T < K, cache)");
    HY_ASSERT(check_conv(&r, 1, 3, 3, 1, 1, 0) == 0, "short_conv gradients (K = 1)");
}

// y[b,t,c] = bias[c] + sum_j w[c,j] * x[b, t-(K-1)+j, c], x before 0 from the cache.
static void conv_ref(const hy_tensor *x, const hy_tensor *w, const hy_tensor *b,
                     const hy_tensor *cache, int64_t K, double *y) {
    int64_t B = x->shape[0], T = x->shape[1], C = x->shape[2];
    for (int64_t bb = 0; bb < B; bb++)
        for (int64_t t = 0; t < T; t++)
            for (int64_t c = 0; c < C; c++) {
                double acc = b ? hy_f32(b)[c] : 0.0;
                for (int64_t j = 0; j < K; j++) {
                    int64_t s = t - (K - 1) + j;
                    double v = s >= 0  ? hy_f32(x)[(bb * T + s) * C + c]
                               : cache ? hy_f32(cache)[(bb * C + c) * (K - 1) + (K - 1) + s]
                                       : 0.0;
                    acc += (double)hy_f32(w)[c * K + j] * v;
                }
                y[(bb * T + t) * C + c] = acc;
            }
}

HY_TEST(op_short_conv_forward, "cpu") {
    hy_rng r;
    hy_rng_seed(&r, 42);
    tape_env e;
    env_init(&e);
    const int64_t B = 2, C = 5, K = 4;
    int64_t Ts[2] = {9, 2};  // T > K and T < K
    for (int k = 0; k < 2; k++) {
        int64_t T = Ts[k], xs[3] = {B, T, C}, ws[3] = {C, 1, K}, cs[3] = {B, C, K - 1};
        hy_tensor *x = rand_input(&r, 3, xs, "x", 1), *w = rand_input(&r, 3, ws, "w", 0.5f);
        hy_tensor *b = rand_input(&r, 1, &C, "b", 0.5f), *cache = fixed_input(&r, 3, cs, "cache");
        double want[2 * 9 * 5];
        hy_tensor *cases[2] = {NULL, cache};
        for (int c = 0; c < 2; c++) {
            conv_ref(x, w, b, cases[c], K, want);
            hy_tensor *y = hy_short_conv(&e.tape, x, w, b, cases[c]);
            HY_ASSERT(hy_same_shape(y, x), "short_conv shape %s", hy_shape_str(y));
            HY_ASSERT(hy_max_rel_err(hy_f32(y), want, (long)(B * T * C)) < 1e-6,
                      "short_conv values (T %lld, cache %d)", (long long)T, c);
        }
        // No bias is a zero bias; a (C, K) weight reads the same as (C, 1, K).
        hy_tensor *w2 = hy_view(inputs(), w, 2, (int64_t[]){C, K});
        conv_ref(x, w, NULL, cache, K, want);
        hy_tensor *y = hy_short_conv(&e.tape, x, w2, NULL, cache);
        HY_ASSERT(hy_max_rel_err(hy_f32(y), want, (long)(B * T * C)) < 1e-6,
                  "short_conv values (no bias, (C, K) weight, T %lld)", (long long)T);
    }
    env_free(&e);
}

HY_TEST(op_short_conv_misuse, "cpu") {
    hy_rng r;
    hy_rng_seed(&r, 43);
    int64_t xs[3] = {2, 5, 3}, ws[3] = {4, 1, 3}, ws2[3] = {3, 2, 3}, bs[1] = {3};
    int64_t cs[3] = {2, 3, 2};  // with the (3, 4) weight K - 1 is 3
    hy_tensor *x = rand_input(&r, 3, xs, "x", 1), *w = rand_input(&r, 3, ws, "w", 1);
    hy_tensor *w2 = rand_input(&r, 3, ws2, "w2", 1), *b = rand_input(&r, 1, bs, "b", 1);
    hy_tensor *good = hy_view(inputs(), w, 2, (int64_t[]){3, 4});  // (3, 4): K = 4
    hy_tensor *cache = fixed_input(&r, 3, cs, "cache");
    tape_env e;
    env_init(&e);
    HY_EXPECT_ERROR(hy_short_conv(&e.tape, x, w, b, NULL), HY_EXIT_USAGE,
                    "weight 'w' (4, 1, 3) does not match input 'x' (2, 5, 3)");
    HY_EXPECT_ERROR(hy_short_conv(&e.tape, x, w2, b, NULL), HY_EXIT_USAGE, "does not match");
    HY_EXPECT_ERROR(hy_short_conv(&e.tape, x, good, b, cache), HY_EXIT_USAGE,
                    "cache 'cache' (2, 3, 2) does not match");
    env_free(&e);
}

// ================================================================ gdn_qkv
// GDN's input stage through all three outputs: q + 2 k + 3 v (distinct
// weights, so a gradient sent to the wrong third shows).
typedef struct {
    int H, D, norm_qk, cache;
} qkv_args;

static hy_tensor *f_gdn_qkv(hy_tape *t, hy_tensor **in, void *u) {
    qkv_args *a = (qkv_args *)u;
    hy_tensor *o[3];
    hy_gdn_qkv(t, in[0], in[1], in[2], a->cache ? in[3] : NULL, a->H, a->D, a->norm_qk, 1e-12f, o);
    return hy_add(t, hy_add(t, o[0], hy_add(t, o[1], o[1])),
                  hy_add(t, o[2], hy_add(t, o[2], o[2])));
}

static int check_gdn_qkv(hy_rng *r, int64_t B, int64_t T, qkv_args a, int64_t K) {
    int64_t C = 3 * (int64_t)a.H * a.D;
    int64_t xs[3] = {B, T, C}, ws[3] = {C, 1, K}, cs[3] = {B, C, K - 1};
    hy_tensor *in[4] = {rand_input(r, 3, xs, "qkv", 1), rand_input(r, 3, ws, "w", 0.5f),
                        rand_input(r, 1, &C, "b", 0.5f), fixed_input(r, 3, cs, "cache")};
    char name[80];
    snprintf(name, sizeof name, "gdn_qkv H=%d D=%d T=%lld K=%lld%s%s", a.H, a.D, (long long)T,
             (long long)K, a.norm_qk ? " norm" : "", a.cache ? " cache" : "");
    return hy_gradcheck(name, f_gdn_qkv, &a, in, a.cache ? 4 : 3, NULL);
}

HY_TEST(op_gdn_qkv_grad, "cpu") {
    hy_rng r;
    hy_rng_seed(&r, 47);
    HY_ASSERT(check_gdn_qkv(&r, 2, 5, (qkv_args){2, 3, 1, 0}, 4) == 0, "gdn_qkv (norm)");
    HY_ASSERT(check_gdn_qkv(&r, 2, 5, (qkv_args){2, 3, 1, 1}, 4) == 0, "gdn_qkv (norm, cache)");
    HY_ASSERT(check_gdn_qkv(&r, 1, 4, (qkv_args){1, 4, 0, 0}, 3) == 0, "gdn_qkv (no norm)");
}

// alpha + 2 beta, and y * silu(g) (also with y and g one tensor).
static hy_tensor *f_gdn_gates(hy_tape *t, hy_tensor **in, void *u) {
    hy_tensor *a, *b;
    hy_gdn_gates(t, in[0], *(int *)u, &a, &b);
    return hy_add(t, a, hy_add(t, b, b));
}
static hy_tensor *f_silu_gate(hy_tape *t, hy_tensor **in, void *u) {
    return *(int *)u ? hy_silu_gate(t, in[0], in[0]) : hy_silu_gate(t, in[0], in[1]);
}

HY_TEST(op_gdn_gates_and_silu_gate_grad, "cpu") {
    hy_rng r;
    hy_rng_seed(&r, 49);
    int H = 3, same = 0, same1 = 1;
    int64_t abs_[3] = {2, 5, 6}, ys[2] = {7, 9};
    hy_tensor *ab = rand_input(&r, 3, abs_, "ab", 2);
    HY_ASSERT(hy_gradcheck("gdn_gates H=3", f_gdn_gates, &H, &ab, 1, NULL) == 0, "gdn_gates");
    hy_tensor *yg[2] = {rand_input(&r, 2, ys, "y", 1), rand_input(&r, 2, ys, "g", 2)};
    HY_ASSERT(hy_gradcheck("silu_gate", f_silu_gate, &same, yg, 2, NULL) == 0, "silu_gate");
    HY_ASSERT(hy_gradcheck("silu_gate x x", f_silu_gate, &same1, yg, 1, NULL) == 0,
              "silu_gate (one tensor)");
}

HY_TEST(op_gdn_qkv_misuse, "cpu") {
    hy_rng r;
    hy_rng_seed(&r, 48);
    int64_t xs[3] = {2, 5, 12}, ws[3] = {12, 1, 4}, bs[1] = {12};
    hy_tensor *x = rand_input(&r, 3, xs, "qkv", 1), *w = rand_input(&r, 3, ws, "w", 1);
    hy_tensor *b = rand_input(&r, 1, bs, "b", 1), *o[3];
    tape_env e;
    env_init(&e);
    HY_EXPECT_ERROR(hy_gdn_qkv(&e.tape, x, w, b, NULL, 2, 3, 1, 1e-12f, o), HY_EXIT_USAGE,
                    "gdn_qkv: input 'qkv' (2, 5, 12): expected (B, T, 3 H D) with 3 H D = 18");
    HY_EXPECT_ERROR(hy_gdn_qkv(&e.tape, x, w, b, NULL, 2, 2, 1, -1.0f, o), HY_EXIT_USAGE,
                    "eps must be >= 0");
    env_free(&e);
}

// ================================================================ rope
typedef struct {
    int64_t pos0;
    float base;
} rope_args;

static hy_tensor *f_rope(hy_tape *t, hy_tensor **in, void *u) {
    rope_args *a = (rope_args *)u;
    return hy_rope(t, in[0], a->pos0, a->base);
}

HY_TEST(op_rope_grad, "cpu") {
    hy_rng r;
    hy_rng_seed(&r, 51);
    int64_t s[4] = {2, 5, 3, 6};
    hy_tensor *in[1] = {rand_input(&r, 4, s, "x", 1)};
    rope_args near = {17, 10000.0f}, far = {100003, 500000.0f};
    HY_ASSERT(hy_gradcheck("rope", f_rope, &near, in, 1, NULL) == 0, "rope gradients");
    HY_ASSERT(hy_gradcheck("rope_far", f_rope, &far, in, 1, NULL) == 0,
              "rope gradients (large pos0)");
}

// The attention input split through all three outputs: q + 2 k + 3 v.
static hy_tensor *f_qkv_rope(hy_tape *t, hy_tensor **in, void *u) {
    rope_args *a = (rope_args *)u;
    hy_tensor *o[3];
    hy_qkv_rope(t, in[0], 3, 6, a->pos0, a->base, o);
    return hy_add(t, hy_add(t, o[0], hy_add(t, o[1], o[1])),
                  hy_add(t, o[2], hy_add(t, o[2], o[2])));
}

HY_TEST(op_qkv_rope_grad, "cpu") {
    hy_rng r;
    hy_rng_seed(&r, 53);
    int64_t s[3] = {2, 5, 3 * 3 * 6};
    hy_tensor *in[1] = {rand_input(&r, 3, s, "qkv", 1)};
    rope_args near = {17, 10000.0f};
    HY_ASSERT(hy_gradcheck("qkv_rope", f_qkv_rope, &near, in, 1, NULL) == 0, "qkv_rope gradients");
}

HY_TEST(op_rope_forward, "cpu") {
    hy_rng r;
    hy_rng_seed(&r, 52);
    int64_t s1[4] = {3, 1, 5, 8}, s[4] = {2, 7, 3, 10};
    hy_tensor *x1 = rand_input(&r, 4, s1, "x1", 1), *x = rand_input(&r, 4, s, "x", 1);
    tape_env e;
    env_init(&e);
    // Position 0 is the identity, exactly.
    hy_tensor *y1 = hy_rope(&e.tape, x1, 0, 10000.0f);
    HY_ASSERT(memcmp(hy_f32(y1), hy_f32(x1), hy_nbytes(x1)) == 0, "rope at position 0");
    // Against theta_i = pos * base^(-2i/D) in double, from pos0 = 5.
    const int64_t T = 7, H = 3, D = 10, P0 = 5;
    hy_tensor *y = hy_rope(&e.tape, x, P0, 10000.0f);
    double want[2 * 7 * 3 * 10];
    for (int64_t v = 0; v < 2 * T * H; v++) {
        int64_t t = (v / H) % T;
        const float *xr = hy_f32(x) + v * D;
        for (int64_t i = 0; i < D / 2; i++) {
            double th = (double)(P0 + t) * pow(10000.0, -2.0 * i / D);
            double a = xr[i], b = xr[i + D / 2];
            want[v * D + i] = a * cos(th) - b * sin(th);
            want[v * D + D / 2 + i] = b * cos(th) + a * sin(th);
        }
    }
    HY_ASSERT(hy_max_rel_err(hy_f32(y), want, 2 * T * H * D) < 1e-5, "rope values");
    env_free(&e);
}

HY_TEST(op_rope_misuse, "cpu") {
    hy_rng r;
    hy_rng_seed(&r, 53);
    int64_t s[4] = {1, 3, 2, 5};
    hy_tensor *x = rand_input(&r, 4, s, "x", 1);
    tape_env e;
    env_init(&e);
    HY_EXPECT_ERROR(hy_rope(&e.tape, x, 0, 10000.0f), HY_EXIT_USAGE,
                    "head dim D = 5 of 'x' (1, 3, 2, 5) (B, T, H, D) must be even");
    env_free(&e);
}

// ================================================================ slice_last
typedef struct {
    int64_t start, len;
} slice_args;

static hy_tensor *f_slice(hy_tape *t, hy_tensor **in, void *u) {
    slice_args *a = (slice_args *)u;
    return hy_slice_last(t, in[0], a->start, a->len);
}

HY_TEST(op_slice_last_grad, "cpu") {
    hy_rng r;
    hy_rng_seed(&r, 61);
    int64_t s[3] = {3, 5, 11};
    hy_tensor *in[1] = {rand_input(&r, 3, s, "x", 1)};
    slice_args mid = {3, 5}, head = {0, 4}, tail = {6, 5};
    HY_ASSERT(hy_gradcheck("slice_mid", f_slice, &mid, in, 1, NULL) == 0, "slice gradients");
    HY_ASSERT(hy_gradcheck("slice_head", f_slice, &head, in, 1, NULL) == 0, "slice gradients");
    HY_ASSERT(hy_gradcheck("slice_tail", f_slice, &tail, in, 1, NULL) == 0, "slice gradients");
}

HY_TEST(op_slice_last_forward, "cpu") {
    hy_rng r;
    hy_rng_seed(&r, 62);
    int64_t s[2] = {3, 9};
    hy_tensor *x = rand_input(&r, 2, s, "x", 1);
    tape_env e;
    env_init(&e);
    hy_tensor *y = hy_slice_last(&e.tape, x, 2, 5);
    HY_ASSERT(y->ndim == 2 && y->shape[0] == 3 && y->shape[1] == 5, "slice shape %s",
              hy_shape_str(y));
    for (int rr = 0; rr < 3; rr++)
        HY_ASSERT(memcmp(hy_f32(y) + rr * 5, hy_f32(x) + rr * 9 + 2, 5 * sizeof(float)) == 0,
                  "slice row %d", rr);
    env_free(&e);
}

HY_TEST(op_slice_last_misuse, "cpu") {
    hy_rng r;
    hy_rng_seed(&r, 63);
    int64_t s[2] = {3, 9};
    hy_tensor *x = rand_input(&r, 2, s, "x", 1);
    tape_env e;
    env_init(&e);
    HY_EXPECT_ERROR(hy_slice_last(&e.tape, x, 6, 4), HY_EXIT_USAGE, "columns [6, 10)");
    HY_EXPECT_ERROR(hy_slice_last(&e.tape, x, -1, 2), HY_EXIT_USAGE, "columns [-1, 1)");
    env_free(&e);
}

// ================================================================ cross_entropy
#define IGNORE (-100)

typedef struct {
    int ignore_index;
} xent_args;

static hy_tensor *f_xent(hy_tape *t, hy_tensor **in, void *u) {
    return hy_cross_entropy(t, in[0], in[1], ((xent_args *)u)->ignore_index);
}

HY_TEST(op_cross_entropy_grad, "cpu") {
    hy_rng r;
    hy_rng_seed(&r, 71);
    int64_t ls[3] = {3, 5, 11}, ts[2] = {3, 5};
    hy_tensor *in[2] = {rand_input(&r, 3, ls, "logits", 1), id_input(&r, 2, ts, "targets", 11)};
    for (int i = 0; i < 15; i += 4) hy_i32(in[1])[i] = IGNORE;  // 4 of 15 ignored
    xent_args a = {IGNORE};
    HY_ASSERT(hy_gradcheck("cross_entropy", f_xent, &a, in, 2, NULL) == 0,
              "cross_entropy gradients");
    // A class id as ignore_index: every target 3 drops out of the loss.
    for (int i = 0; i < 15; i += 4) hy_i32(in[1])[i] = 3;
    hy_i32(in[1])[1] = 3, hy_i32(in[1])[6] = 3;
    xent_args b = {3};
    HY_ASSERT(hy_gradcheck("cross_entropy_ignore3", f_xent, &b, in, 2, NULL) == 0,
              "cross_entropy gradients (ignore_index 3)");
}

// (1/n) sum over kept rows of logsumexp - logit[target], in double.
static double xent_ref(const hy_tensor *logits, const hy_tensor *targets, int ignore) {
    int64_t V = hy_last_dim(logits), n = 0;
    double total = 0;
    for (int64_t rr = 0, rows = hy_numel(targets); rr < rows; rr++) {
        int tg = hy_i32(targets)[rr];
        if (tg == ignore) continue;
        const float *x = hy_f32(logits) + rr * V;
        double m = x[0], s = 0;
        for (int64_t j = 1; j < V; j++) m = fmax(m, x[j]);
        for (int64_t j = 0; j < V; j++) s += exp(x[j] - m);
        total += m + log(s) - x[tg];
        n++;
    }
    return n ? total / n : 0.0;
}

HY_TEST(op_cross_entropy_forward, "cpu") {
    hy_rng r;
    hy_rng_seed(&r, 72);
    int64_t ls[2] = {7, 13}, one = 7;
    hy_tensor *logits = rand_input(&r, 2, ls, "logits", 2), *tg = id_input(&r, 1, &one, "t", 13);
    hy_i32(tg)[2] = IGNORE;
    tape_env e;
    env_init(&e);
    hy_tensor *loss = hy_cross_entropy(&e.tape, logits, tg, IGNORE);
    HY_ASSERT(loss->ndim == 1 && loss->shape[0] == 1, "loss shape %s", hy_shape_str(loss));
    HY_ASSERT_CLOSE(hy_f32(loss)[0], xent_ref(logits, tg, IGNORE), 1e-6, "cross_entropy value");
    // Uniform logits: log V whatever the targets.
    hy_tensor *flat = hy_tensor_new(inputs(), HY_F32, 2, ls, "flat");
    hy_fill_const(flat, 0.7f);
    loss = hy_cross_entropy(&e.tape, flat, tg, IGNORE);
    HY_ASSERT_CLOSE(hy_f32(loss)[0], log(13.0), 1e-6, "cross_entropy of uniform logits");
    // Huge logits stay finite: the max is subtracted first.
    for (int i = 0; i < 7 * 13; i++) hy_f32(flat)[i] = hy_f32(logits)[i] + 3000.0f;
    loss = hy_cross_entropy(&e.tape, flat, tg, IGNORE);
    HY_ASSERT(isfinite(hy_f32(loss)[0]), "cross_entropy of large logits is %g",
              (double)hy_f32(loss)[0]);
    HY_ASSERT_CLOSE(hy_f32(loss)[0], xent_ref(flat, tg, IGNORE), 1e-4,
                    "cross_entropy of large logits");
    env_free(&e);

    // All targets ignored: loss 0 and a zero gradient.
    env_init(&e);
    for (int i = 0; i < 7; i++) hy_i32(tg)[i] = IGNORE;
    hy_tensor *g = hy_zeros_like(inputs(), logits, "dlogits");
    hy_tape_bind_grad(&e.tape, logits, g);
    loss = hy_cross_entropy(&e.tape, logits, tg, IGNORE);
    HY_ASSERT(hy_f32(loss)[0] == 0.0f, "all ignored: loss %g", (double)hy_f32(loss)[0]);
    hy_tape_backward(&e.tape, loss);
    for (int i = 0; i < 7 * 13; i++)
        HY_ASSERT(hy_f32(g)[i] == 0.0f, "all ignored: gradient [%d] = %g", i,
                  (double)hy_f32(g)[i]);
    env_free(&e);
}

HY_TEST(op_cross_entropy_misuse, "cpu") {
    hy_rng r;
    hy_rng_seed(&r, 73);
    int64_t ls[3] = {2, 3, 11}, ts[2] = {2, 3}, bad[2] = {3, 2};
    hy_tensor *logits = rand_input(&r, 3, ls, "logits", 1), *tg = id_input(&r, 2, ts, "t", 11);
    hy_tensor *tg2 = id_input(&r, 2, bad, "t2", 11);
    tape_env e;
    env_init(&e);
    hy_i32(tg)[5] = 11;
    HY_EXPECT_ERROR(hy_cross_entropy(&e.tape, logits, tg, IGNORE), HY_EXIT_USAGE,
                    "target 11 at flat position 5");
    hy_i32(tg)[5] = -1;  // negative, and not the ignore_index
    HY_EXPECT_ERROR(hy_cross_entropy(&e.tape, logits, tg, IGNORE), HY_EXIT_USAGE,
                    "is not ignore_index -100");
    HY_EXPECT_ERROR(hy_cross_entropy(&e.tape, logits, tg2, IGNORE), HY_EXIT_USAGE,
                    "disagree on the leading dimensions");
    env_free(&e);
}
