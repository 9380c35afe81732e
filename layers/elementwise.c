// elementwise.c: a + b, a * b, silu(x), sigmoid(x), y * silu(g).
// CPU: f32 in and out. GPU (hy_cuda_ops.h): bf16 in, bf16 out, except
// sigmoid, whose GPU output is F32 (hy_cuda_sigmoid_f32out_fwd): it makes
// the gates of the gated delta rule, and a bf16 gate near 1 would lose most
// of log(gate). Gradients are f32 on both devices.
#include <math.h>

#include "../autograd/check.h"
#include "../cuda/hy_cuda.h"
#include "../cuda/hy_cuda_glue.h"
#include "../cuda/hy_cuda_ops.h"
#include "ops.h"

static void check_pair(const char *op, hy_tensor *a, hy_tensor *b) {
    hy_expect_act(op, a);
    hy_expect_device(op, a, b);
    hy_expect_act(op, b);
    hy_expect_same_shape(op, a, b);
}

static void check_one(const char *op, hy_tensor *x) { hy_expect_act(op, x); }

// On the GPU: da and db are windows of one gradient buffer when a and b share
// an owner (hy_add(x, x), or two views of one tensor). One launch updating
// both could then race between threads where the windows overlap
// differently, so the two are accumulated by separate launches.
static int same_owner(const hy_tensor *a, const hy_tensor *b) {
    return (a->base ? a->base : a) == (b->base ? b->base : b);
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

// A GPU add's context: which input's bf16 gradient copy (k + 1; 0: none) the op that
// reads y first already wrote (hy_add_branch_grad_bf16).
typedef struct {
    int bf16_done;
} add_ctx;

// GPU: dy (n) f32; da, db (n) f32 += dy. The add is the last reader of dy,
// so an input without a gradient yet takes dy itself as its gradient (no
// memory traffic: the residual stream's add passes its gradient through),
// and the other input gets a copy when its gradient is new, else
// accumulates: 2 passes over n floats instead of ~7 (two zeroings, two
// read-modify-writes and the read of dy). The copy is bf16 when its one
// reader rounds it to bf16 anyway (the branch's last linear: o_proj,
// w_down), which then skips its own rounding pass.
static void add_backward_cuda(hy_tape *t, hy_node *n) {
    hy_tensor *dyt = hy_grad(t, n->out[0]), *a = n->in[0], *b = n->in[1];
    const float *dy = hy_f32(dyt);
    size_t len = (size_t)hy_numel(n->out[0]);
    if (same_owner(a, b)) {  // x + x, or two views of one tensor
        hy_tensor *ga = hy_grad_acc(t, a), *gb = hy_grad_acc(t, b);
        if (ga) hy_cuda_add_bwd(len, dy, hy_f32(ga), NULL, NULL);
        if (gb) hy_cuda_add_bwd(len, dy, NULL, hy_f32(gb), NULL);
        return;
    }
    const add_ctx *ac = (const add_ctx *)n->ctx;
    int done[2];  // bf16 copies first, so that dy is adopted by an input that cannot take one
    for (int k = 0; k < 2; k++) {
        if (ac && ac->bf16_done == k + 1) {  // written with dy (hy_add_branch_grad_bf16)
            done[k] = 1;
            continue;
        }
        void *g16 = hy_grad_out_bf16(t, n->in[k]);
        if (g16) hy_cuda_f32_to_bf16(dy, g16, len, NULL);
        done[k] = g16 != NULL;
    }
    if (!done[0] && hy_grad_adopt(t, a, dyt))
        done[0] = 1;
    else if (!done[1] && hy_grad_adopt(t, b, dyt))
        done[1] = 1;
    for (int k = 0; k < 2; k++) {
        if (done[k]) continue;
        int fresh;
        hy_tensor *g = hy_grad_out(t, n->in[k], &fresh);
        if (!g) continue;
        if (fresh)
            hy_cuda_memcpy_d2d(g->data, dy, len * sizeof(float));
        else
            hy_cuda_add_bwd(len, dy, k == 0 ? hy_f32(g) : NULL, k == 1 ? hy_f32(g) : NULL, NULL);
    }
}

void hy_add_record(hy_tape *t, hy_tensor *a, hy_tensor *b, hy_tensor *y) {
    int gpu = a->device == HY_CUDA;
    hy_tensor *ins[2] = {a, b};
    hy_node *n = hy_tape_record(t, "add", gpu ? add_backward_cuda : add_backward, ins, 2, &y, 1);
    if (n && gpu) hy_tape_ctx(t, n, sizeof(add_ctx));  // saves nothing else
}

int hy_is_add_node(const hy_node *n) { return n->backward == add_backward_cuda; }

void *hy_add_branch_grad_bf16(hy_tape *t, hy_node *add) {
    add_ctx *ac = (add_ctx *)add->ctx;
    if (!ac || same_owner(add->in[0], add->in[1])) return NULL;
    for (int k = 0; k < 2; k++) {  // in the add's own order
        void *g16 = hy_grad_out_bf16(t, add->in[k]);
        if (g16) {
            ac->bf16_done = k + 1;
            return g16;
        }
    }
    return NULL;
}

// GPU: a, b (n) bf16 -> y (n) bf16.
static hy_tensor *add_fwd_cuda(hy_tape *t, hy_tensor *a, hy_tensor *b) {
    hy_tensor *y = hy_tape_new(t, HY_BF16, a->ndim, a->shape, "add");
    hy_cuda_add_fwd((size_t)hy_numel(a), a->data, b->data, y->data, NULL);
    hy_add_record(t, a, b, y);
    return y;
}

hy_tensor *hy_add(hy_tape *t, hy_tensor *a, hy_tensor *b) {
    check_pair("add", a, b);
    if (a->device == HY_CUDA) return add_fwd_cuda(t, a, b);
    hy_tensor *y = hy_tape_new(t, HY_F32, a->ndim, a->shape, "add");
    const float *av = hy_f32(a), *bv = hy_f32(b);
    float *yv = hy_f32(y);
    for (int64_t i = 0, len = hy_numel(a); i < len; i++) yv[i] = av[i] + bv[i];
    hy_add_record(t, a, b, y);  // saves nothing
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

// GPU: dy (n) f32; da += dy * b, db += dy * a (n) f32; a, b the bf16 inputs.
static void mul_backward_cuda(hy_tape *t, hy_node *n) {
    hy_tensor *a = n->in[0], *b = n->in[1];
    const float *dy = hy_f32(hy_grad(t, n->out[0]));
    size_t len = (size_t)hy_numel(a);
    hy_tensor *ga = hy_grad_acc(t, a), *gb = hy_grad_acc(t, b);
    float *da = ga ? hy_f32(ga) : NULL, *db = gb ? hy_f32(gb) : NULL;
    if (da && db && same_owner(a, b)) {
        hy_cuda_mul_bwd(len, dy, a->data, b->data, da, NULL, NULL);
        hy_cuda_mul_bwd(len, dy, a->data, b->data, NULL, db, NULL);
    } else {
        hy_cuda_mul_bwd(len, dy, a->data, b->data, da, db, NULL);
    }
}

// GPU: a, b (n) bf16 -> y (n) bf16. a and b are inputs: nothing saved.
static hy_tensor *mul_fwd_cuda(hy_tape *t, hy_tensor *a, hy_tensor *b) {
    hy_tensor *y = hy_tape_new(t, HY_BF16, a->ndim, a->shape, "mul");
    hy_cuda_mul_fwd((size_t)hy_numel(a), a->data, b->data, y->data, NULL);
    hy_tensor *ins[2] = {a, b};
    hy_tape_record(t, "mul", mul_backward_cuda, ins, 2, &y, 1);
    return y;
}

hy_tensor *hy_mul(hy_tape *t, hy_tensor *a, hy_tensor *b) {
    check_pair("mul", a, b);
    if (a->device == HY_CUDA) return mul_fwd_cuda(t, a, b);
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

// GPU: dx (n) f32 += dy s (1 + x (1 - s)), s recomputed from the bf16 input
// x; a new dx is written instead of zeroed and added to.
static void silu_backward_cuda(hy_tape *t, hy_node *n) {
    const float *dy = hy_f32(hy_grad(t, n->out[0]));
    int fresh;
    hy_tensor *g = hy_grad_out(t, n->in[0], &fresh);
    if (g)
        hy_cuda_silu_bwd((size_t)hy_numel(n->in[0]), dy, n->in[0]->data, hy_f32(g), fresh, NULL);
}

// GPU: x (n) bf16 -> y (n) bf16. Saves nothing (recomputes sigmoid from x).
static hy_tensor *silu_fwd_cuda(hy_tape *t, hy_tensor *x) {
    hy_tensor *y = hy_tape_new(t, HY_BF16, x->ndim, x->shape, "silu");
    hy_cuda_silu_fwd((size_t)hy_numel(x), x->data, y->data, NULL);
    hy_tape_record(t, "silu", silu_backward_cuda, &x, 1, &y, 1);
    return y;
}

hy_tensor *hy_silu(hy_tape *t, hy_tensor *x) {
    check_one("silu", x);
    if (x->device == HY_CUDA) return silu_fwd_cuda(t, x);
    hy_tensor *y = hy_tape_new(t, HY_F32, x->ndim, x->shape, "silu");
    const float *xv = hy_f32(x);
    float *yv = hy_f32(y);
    for (int64_t i = 0, len = hy_numel(x); i < len; i++) yv[i] = xv[i] * sigm(xv[i]);
    hy_tape_record(t, "silu", silu_backward, &x, 1, &y, 1);  // recomputes sigmoid from x
    return y;
}

// ---------------------------------------------------------------- silu_gate
// GPU backward: dy (n) f32; dy_in += dy silu(g), dg += dy y silu'(g) in one
// launch (each written instead of added to when its gradient is new, and in
// bf16 when its one reader rounds it so: GDN's output, the gate projection).
static void silu_gate_backward_cuda(hy_tape *t, hy_node *n) {
    hy_tensor *y = n->in[0], *g = n->in[1];
    const float *dy = hy_f32(hy_grad(t, n->out[0]));
    size_t len = (size_t)hy_numel(y);
    if (same_owner(y, g)) {  // windows of one buffer: one f32 gradient a launch
        int fy = 0, fg = 0;
        hy_tensor *gy = hy_grad_out(t, y, &fy), *gg = hy_grad_out(t, g, &fg);
        if (gy) hy_cuda_mul_silu_bwd(len, dy, y->data, g->data, hy_f32(gy), fy, NULL, 0, NULL);
        if (gg) hy_cuda_mul_silu_bwd(len, dy, y->data, g->data, NULL, 0, hy_f32(gg), fg, NULL);
        return;
    }
    void *yh = hy_grad_out_bf16(t, y), *gh = hy_grad_out_bf16(t, g);
    int fy = 0, fg = 0;
    hy_tensor *gy = yh ? NULL : hy_grad_out(t, y, &fy), *gg = gh ? NULL : hy_grad_out(t, g, &fg);
    hy_cuda_mul_silu_bwd_mixed(len, dy, y->data, g->data, gy ? hy_f32(gy) : NULL, fy, yh,
                               gg ? hy_f32(gg) : NULL, fg, gh, NULL);
}

// CPU: hy_mul(y, hy_silu(g)), two recorded ops (the reference). GPU: one op,
// y * silu(g) rounded once to bf16; saves nothing (y and g are inputs).
hy_tensor *hy_silu_gate(hy_tape *t, hy_tensor *y, hy_tensor *g) {
    check_pair("silu_gate", y, g);
    if (y->device != HY_CUDA) return hy_mul(t, y, hy_silu(t, g));
    hy_tensor *o = hy_tape_new(t, HY_BF16, y->ndim, y->shape, "silu_gate");
    hy_cuda_mul_silu_fwd((size_t)hy_numel(y), y->data, g->data, o->data, NULL);
    hy_tensor *ins[2] = {y, g};
    hy_tape_record(t, "silu_gate", silu_gate_backward_cuda, ins, 2, &o, 1);
    return o;
}

// ---------------------------------------------------------------- sigmoid
static void sigmoid_backward(hy_tape *t, hy_node *n) {
    const float *dy = hy_f32(hy_grad(t, n->out[0])), *yv = hy_f32(n->out[0]);
    float *d = hy_f32(hy_grad_acc(t, n->in[0]));
    for (int64_t i = 0, len = hy_numel(n->out[0]); i < len; i++)
        d[i] += dy[i] * yv[i] * (1.0f - yv[i]);
}

// GPU: dx (n) f32 += dy s (1 - s), with s recomputed in f32 from the bf16
// INPUT x (the node's input, alive; not from the output y).
static void sigmoid_backward_cuda(hy_tape *t, hy_node *n) {
    const float *dy = hy_f32(hy_grad(t, n->out[0]));
    hy_tensor *g = hy_grad_acc(t, n->in[0]);
    if (g) hy_cuda_sigmoid_bwd((size_t)hy_numel(n->in[0]), dy, n->in[0]->data, hy_f32(g), NULL);
}

// GPU: x (n) bf16 -> y (n) F32 (not bf16: see the top of this file). Saves
// nothing: backward reads the input x.
static hy_tensor *sigmoid_fwd_cuda(hy_tape *t, hy_tensor *x) {
    hy_tensor *y = hy_tape_new(t, HY_F32, x->ndim, x->shape, "sigmoid");
    hy_cuda_sigmoid_f32out_fwd((size_t)hy_numel(x), x->data, hy_f32(y), NULL);
    hy_tape_record(t, "sigmoid", sigmoid_backward_cuda, &x, 1, &y, 1);
    return y;
}

// CPU: y f32. GPU: x bf16, y F32 (the gates stay f32 on the GPU).
hy_tensor *hy_sigmoid(hy_tape *t, hy_tensor *x) {
    check_one("sigmoid", x);
    if (x->device == HY_CUDA) return sigmoid_fwd_cuda(t, x);
    hy_tensor *y = hy_tape_new(t, HY_F32, x->ndim, x->shape, "sigmoid");
    const float *xv = hy_f32(x);
    float *yv = hy_f32(y);
    for (int64_t i = 0, len = hy_numel(x); i < len; i++) yv[i] = sigm(xv[i]);
    hy_tape_record(t, "sigmoid", sigmoid_backward, &x, 1, &y, 1);  // uses its output y
    return y;
}
