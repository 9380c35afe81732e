// reduce.c: mean of all elements.
#include "../autograd/check.h"
#include "ops.h"

static void mean_backward(hy_tape *t, hy_node *n) {
    float g = hy_f32(hy_grad(t, n->out[0]))[0];
    hy_tensor *dx = hy_grad_acc(t, n->in[0]);
    int64_t len = hy_numel(n->in[0]);
    float *d = hy_f32(dx), s = g / (float)len;
    for (int64_t i = 0; i < len; i++) d[i] += s;
}

hy_tensor *hy_mean(hy_tape *t, hy_tensor *x) {
    hy_expect_dtype("mean", x, HY_F32);
    hy_expect_cpu("mean", x);
    int64_t len = hy_numel(x), one = 1;
    HY_REQUIRE(len > 0, "mean: '%s' %s is empty", x->name, hy_shape_str(x));
    hy_tensor *y = hy_tape_new(t, HY_F32, 1, &one, "mean");  // (1)
    const float *xv = hy_f32(x);
    double s = 0;
    for (int64_t i = 0; i < len; i++) s += xv[i];
    hy_f32(y)[0] = (float)(s / len);
    hy_tape_record(t, "mean", mean_backward, &x, 1, &y, 1);  // needs only the count
    return y;
}
