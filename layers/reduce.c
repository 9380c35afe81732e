// reduce.c: mean of all elements.
// f32 in, f32 (1) out on both devices: on the GPU it reduces losses (f32)
// with hy_cuda_mean_fwd/_bwd, deterministic, without a host sync.
#include "../autograd/check.h"
#include "../cuda/hy_cuda_ops.h"
#include "ops.h"

static void mean_backward(hy_tape *t, hy_node *n) {
    float g = hy_f32(hy_grad(t, n->out[0]))[0];
    hy_tensor *dx = hy_grad_acc(t, n->in[0]);
    int64_t len = hy_numel(n->in[0]);
    float *d = hy_f32(dx), s = g / (float)len;
    for (int64_t i = 0; i < len; i++) d[i] += s;
}

// GPU backward: dx (n) f32 += dy[0] / n, dy[0] read on the device.
static void mean_backward_cuda(hy_tape *t, hy_node *n) {
    const float *dy = hy_f32(hy_grad(t, n->out[0]));  // (1) f32
    hy_tensor *dx = hy_grad_acc(t, n->in[0]);
    if (dx) hy_cuda_mean_bwd((size_t)hy_numel(n->in[0]), dy, hy_f32(dx), NULL);
}

// GPU forward: x (n) f32 -> y (1) f32. Saves nothing (needs only the count).
static hy_tensor *mean_fwd_cuda(hy_tape *t, hy_tensor *x) {
    int64_t one = 1;
    hy_tensor *y = hy_tape_new(t, HY_F32, 1, &one, "mean");  // (1) f32
    hy_cuda_mean_fwd((size_t)hy_numel(x), hy_f32(x), hy_f32(y), NULL);
    hy_tape_record(t, "mean", mean_backward_cuda, &x, 1, &y, 1);
    return y;
}

// x is f32 on either device (a loss or another f32 tensor, not a bf16
// activation).
hy_tensor *hy_mean(hy_tape *t, hy_tensor *x) {
    hy_expect_dtype("mean", x, HY_F32);
    int64_t len = hy_numel(x), one = 1;
    HY_REQUIRE(len > 0, "mean: '%s' %s is empty", x->name, hy_shape_str(x));
    if (x->device == HY_CUDA) return mean_fwd_cuda(t, x);
    hy_tensor *y = hy_tape_new(t, HY_F32, 1, &one, "mean");  // (1)
    const float *xv = hy_f32(x);
    double s = 0;
    for (int64_t i = 0; i < len; i++) s += xv[i];
    hy_f32(y)[0] = (float)(s / len);
    hy_tape_record(t, "mean", mean_backward, &x, 1, &y, 1);  // needs only the count
    return y;
}
