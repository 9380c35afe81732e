// Gradient checks of the basic ops (finite differences against the
// hand-written backward) and their misuse errors.
#include "../autograd/gradcheck.h"
#include "../autograd/rng.h"
#include "../layers/ops.h"
#include "harness.h"

static hy_arena g_in;  // inputs live outside the tape's arenas

static hy_tensor *rand_input(hy_rng *r, int ndim, const int64_t *shape, const char *name,
                             float std) {
    if (!g_in.meta) hy_arena_init(&g_in, "test-inputs", HY_CPU, (size_t)64 << 20);
    hy_tensor *x = hy_tensor_new(&g_in, HY_F32, ndim, shape, name);
    hy_fill_normal(x, r, 0.0f, std);
    x->requires_grad = 1;
    return x;
}

// ---------------------------------------------------------------- linear
static hy_tensor *f_linear(hy_tape *t, hy_tensor **in, void *u) {
    (void)u;
    return hy_linear(t, in[0], in[1], in[2]);
}
static hy_tensor *f_linear_nobias(hy_tape *t, hy_tensor **in, void *u) {
    (void)u;
    return hy_linear(t, in[0], in[1], NULL);
}

HY_TEST(op_linear_grad, "cpu") {
    hy_rng r;
    hy_rng_seed(&r, 1);
    int64_t xs[3] = {2, 3, 7}, ws[2] = {5, 7}, bs[1] = {5};
    hy_tensor *in[3] = {rand_input(&r, 3, xs, "x", 1), rand_input(&r, 2, ws, "w", 0.5f),
                        rand_input(&r, 1, bs, "b", 0.5f)};
    HY_ASSERT(hy_gradcheck("linear", f_linear, NULL, in, 3, NULL) == 0, "linear gradients");
    HY_ASSERT(hy_gradcheck("linear_nobias", f_linear_nobias, NULL, in, 2, NULL) == 0,
              "linear (no bias) gradients");
}

// ---------------------------------------------------------------- rmsnorm
static hy_tensor *f_rmsnorm(hy_tape *t, hy_tensor **in, void *u) {
    (void)u;
    return hy_rmsnorm(t, in[0], in[1], 1e-5f);
}

HY_TEST(op_rmsnorm_grad, "cpu") {
    hy_rng r;
    hy_rng_seed(&r, 2);
    int64_t xs[3] = {2, 5, 13}, ws[1] = {13};
    hy_tensor *in[2] = {rand_input(&r, 3, xs, "x", 1), rand_input(&r, 1, ws, "w", 1)};
    HY_ASSERT(hy_gradcheck("rmsnorm", f_rmsnorm, NULL, in, 2, NULL) == 0, "rmsnorm gradients");
}

// ---------------------------------------------------------------- elementwise
static hy_tensor *f_add(hy_tape *t, hy_tensor **in, void *u) {
    (void)u;
    return hy_add(t, in[0], in[1]);
}
static hy_tensor *f_mul(hy_tape *t, hy_tensor **in, void *u) {
    (void)u;
    return hy_mul(t, in[0], in[1]);
}
static hy_tensor *f_silu(hy_tape *t, hy_tensor **in, void *u) {
    (void)u;
    return hy_silu(t, in[0]);
}
static hy_tensor *f_sigmoid(hy_tape *t, hy_tensor **in, void *u) {
    (void)u;
    return hy_sigmoid(t, in[0]);
}
static hy_tensor *f_mean(hy_tape *t, hy_tensor **in, void *u) {
    (void)u;
    return hy_mean(t, in[0]);
}

HY_TEST(op_add_grad, "cpu") {
    hy_rng r;
    hy_rng_seed(&r, 3);
    int64_t s[2] = {3, 11};
    hy_tensor *in[2] = {rand_input(&r, 2, s, "a", 1), rand_input(&r, 2, s, "b", 1)};
    HY_ASSERT(hy_gradcheck("add", f_add, NULL, in, 2, NULL) == 0, "add gradients");
}

HY_TEST(op_mul_grad, "cpu") {
    hy_rng r;
    hy_rng_seed(&r, 4);
    int64_t s[2] = {3, 11};
    hy_tensor *in[2] = {rand_input(&r, 2, s, "a", 1), rand_input(&r, 2, s, "b", 1)};
    HY_ASSERT(hy_gradcheck("mul", f_mul, NULL, in, 2, NULL) == 0, "mul gradients");
}

HY_TEST(op_silu_grad, "cpu") {
    hy_rng r;
    hy_rng_seed(&r, 5);
    int64_t s[2] = {4, 9};
    hy_tensor *in[1] = {rand_input(&r, 2, s, "x", 2)};
    HY_ASSERT(hy_gradcheck("silu", f_silu, NULL, in, 1, NULL) == 0, "silu gradients");
}

HY_TEST(op_sigmoid_grad, "cpu") {
    hy_rng r;
    hy_rng_seed(&r, 6);
    int64_t s[2] = {4, 9};
    hy_tensor *in[1] = {rand_input(&r, 2, s, "x", 2)};
    HY_ASSERT(hy_gradcheck("sigmoid", f_sigmoid, NULL, in, 1, NULL) == 0, "sigmoid gradients");
}

HY_TEST(op_mean_grad, "cpu") {
    hy_rng r;
    hy_rng_seed(&r, 7);
    int64_t s[3] = {2, 3, 5};
    hy_tensor *in[1] = {rand_input(&r, 3, s, "x", 1)};
    HY_ASSERT(hy_gradcheck("mean", f_mean, NULL, in, 1, NULL) == 0, "mean gradients");
}
