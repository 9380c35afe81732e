// elementwise.c: a + b, a * b, silu(x), sigmoid(x).
#include <math.h>

#include "../autograd/check.h"
#include "ops.h"

static void check_pair(const char *op, hy_tensor *a, hy_tensor *b) {
    hy_expect_dtype(op, a, HY_F32);
    hy_expect_dtype(op, b, HY_F32);
    hy_expect_cpu(op, a);
    hy_expect_device(op, a, b);
    hy_expect_same_shape(op, a, b);
}

static void check_one(const char *op, hy_tensor *x) {
    hy_expect_dtype(op, x, HY_F32);
    hy_expect_cpu(op, x);
}

// ---------------------------------------------------------------- add
static void add_backward(hy_tape *t, hy_node *n) {
    const float *dy = hy_f32(hy_grad(t, n->out[0]));
    int64_t len = hy_numel(n->out[0]);
    for (int k = 0; k < 2; k++) {
        hy_tensor *g = hy_grad_acc(t, n->in[k]);
        if (!g) continue;
        float *d = hy_f32(g);
        for (int64_t i = 0; i < len; i++) d[i] += dy[i];
    }
}

hy_tensor *hy_add(hy_tape *t, hy_tensor *a, hy_tensor *b) {
    check_pair("add", a, b);
    hy_tensor *y = hy_tape_new(t, HY_F32, a->ndim, a->shape, "add");
    const float *av = hy_f32(a), *bv = hy_f32(b);
    float *yv = hy_f32(y);
    for (int64_t i = 0, len = hy_numel(a); i < len; i++) yv[i] = av[i] + bv[i];
    hy_tensor *ins[2] = {a, b};
    hy_tape_record(t, "add", add_backward, ins, 2, &y, 1);  // saves nothing
    return y;
}

// ---------------------------------------------------------------- mul
static void mul_backward(hy_tape *t, hy_node *n) {
    hy_tensor *a = n->in[0], *b = n->in[1];
    const float *dy = hy_f32(hy_grad(t, n->out[0])), *av = hy_f32(a), *bv = hy_f32(b);
    hy_tensor *ga = hy_grad_acc(t, a), *gb = hy_grad_acc(t, b);
    int64_t len = hy_numel(a);
    if (ga) {
        float *d = hy_f32(ga);
        for (int64_t i = 0; i < len; i++) d[i] += dy[i] * bv[i];
    }
    if (gb) {
        float *d = hy_f32(gb);
        for (int64_t i = 0; i < len; i++) d[i] += dy[i] * av[i];
    }
}

hy_tensor *hy_mul(hy_tape *t, hy_tensor *a, hy_tensor *b) {
    check_pair("mul", a, b);
    hy_tensor *y = hy_tape_new(t, HY_F32, a->ndim, a->shape, "mul");
    const float *av = hy_f32(a), *bv = hy_f32(b);
    float *yv = hy_f32(y);
    for (int64_t i = 0, len = hy_numel(a); i < len; i++) yv[i] = av[i] * bv[i];
    hy_tensor *ins[2] = {a, b};
    hy_tape_record(t, "mul", mul_backward, ins, 2, &y, 1);  // a and b are inputs: nothing saved
    return y;
}

// ---------------------------------------------------------------- silu
static inline float sigm(float x) { return 1.0f / (1.0f + expf(-x)); }

static void silu_backward(hy_tape *t, hy_node *n) {
    const float *dy = hy_f32(hy_grad(t, n->out[0])), *xv = hy_f32(n->in[0]);
    hy_tensor *g = hy_grad_acc(t, n->in[0]);
    float *d = hy_f32(g);
    for (int64_t i = 0, len = hy_numel(n->in[0]); i < len; i++) {
        float s = sigm(xv[i]);
        d[i] += dy[i] * s * (1.0f + xv[i] * (1.0f - s));
    }
}

hy_tensor *hy_silu(hy_tape *t, hy_tensor *x) {
    check_one("silu", x);
    hy_tensor *y = hy_tape_new(t, HY_F32, x->ndim, x->shape, "silu");
    const float *xv = hy_f32(x);
    float *yv = hy_f32(y);
    for (int64_t i = 0, len = hy_numel(x); i < len; i++) yv[i] = xv[i] * sigm(xv[i]);
    hy_tape_record(t, "silu", silu_backward, &x, 1, &y, 1);  // recomputes sigmoid from x
    return y;
}

// ---------------------------------------------------------------- sigmoid
static void sigmoid_backward(hy_tape *t, hy_node *n) {
    const float *dy = hy_f32(hy_grad(t, n->out[0])), *yv = hy_f32(n->out[0]);
    float *d = hy_f32(hy_grad_acc(t, n->in[0]));
    for (int64_t i = 0, len = hy_numel(n->out[0]); i < len; i++)
        d[i] += dy[i] * yv[i] * (1.0f - yv[i]);
}

hy_tensor *hy_sigmoid(hy_tape *t, hy_tensor *x) {
    check_one("sigmoid", x);
    hy_tensor *y = hy_tape_new(t, HY_F32, x->ndim, x->shape, "sigmoid");
    const float *xv = hy_f32(x);
    float *yv = hy_f32(y);
    for (int64_t i = 0, len = hy_numel(x); i < len; i++) yv[i] = sigm(xv[i]);
    hy_tape_record(t, "sigmoid", sigmoid_backward, &x, 1, &y, 1);  // uses its output y
    return y;
}
