// linear.c: y = x W^T + b through CBLAS.
#include <cblas.h>
#include <string.h>

#include "../autograd/check.h"
#include "../cuda/hy_cuda_blas.h"
#include "ops.h"

typedef struct {
    int64_t rows, in, out;
} linear_ctx;

static void linear_backward(hy_tape *t, hy_node *n) {
    hy_tensor *x = n->in[0], *w = n->in[1], *b = n->in[2];
    linear_ctx *c = (linear_ctx *)n->ctx;
    const float *dy = hy_f32(hy_grad(t, n->out[0]));  // (rows, out)
    hy_tensor *dx = hy_grad_acc(t, x), *dw = hy_grad_acc(t, w), *db = b ? hy_grad_acc(t, b) : NULL;
    int M = (int)c->rows, K = (int)c->in, N = (int)c->out;
    // dx (rows, in) += dy (rows, out) . W (out, in)
    if (dx)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, K, N, 1.0f, dy, N, hy_f32(w), K,
                    1.0f, hy_f32(dx), K);
    // dW (out, in) += dy^T (out, rows) . x (rows, in)
    if (dw)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, N, K, M, 1.0f, dy, N, hy_f32(x), K,
                    1.0f, hy_f32(dw), K);
    if (db) {
        float *g = hy_f32(db);
        for (int64_t r = 0; r < c->rows; r++)
            for (int64_t j = 0; j < c->out; j++) g[j] += dy[r * c->out + j];
    }
}

// GPU: x (rows, in) bf16 and the weight's bf16 copy (w->half) through cuBLAS,
// fp32 accumulation; dy arrives fp32 and is rounded to bf16 in scratch for
// the two backward GEMMs (hy_cuda_linear_bwd), or arrives in bf16 already
// when the op that wrote it could round it (hy_grad_out_bf16; no bias).
static void linear_backward_cuda(hy_tape *t, hy_node *n) {
    hy_tensor *x = n->in[0], *w = n->in[1], *b = n->in[2];
    linear_ctx *c = (linear_ctx *)n->ctx;
    // A new dx is written by the GEMM (beta 0) instead of zeroed and added to.
    int fresh;
    hy_tensor *dx = hy_grad_out(t, x, &fresh), *dw = hy_grad_acc(t, w);
    hy_tensor *db = b ? hy_grad_acc(t, b) : NULL;
    int M = (int)c->rows, K = (int)c->in, N = (int)c->out;
    const void *dyh = hy_grad_bf16(t, n->out[0]);  // (rows, out) bf16, or NULL
    if (dyh) {
        hy_cuda_linear_bwd_bf16(M, K, N, dyh, x->data, w->half, dx ? hy_f32(dx) : NULL, fresh,
                                dw ? hy_f32(dw) : NULL, NULL);
        return;
    }
    const float *dy = hy_f32(hy_grad(t, n->out[0]));  // (rows, out) f32
    size_t bytes = hy_cuda_linear_bwd_scratch_bytes(M, K, N);
    void *scratch = hy_arena_alloc(t->scratch, bytes);
    hy_cuda_linear_bwd(M, K, N, dy, x->data, w->half, dx ? hy_f32(dx) : NULL, fresh,
                       dw ? hy_f32(dw) : NULL, db ? hy_f32(db) : NULL, scratch, bytes, NULL);
}

static void linear_forward_cuda(hy_tensor *x, hy_tensor *w, hy_tensor *b, hy_tensor *y,
                                int64_t rows, int64_t in, int64_t out) {
    HY_REQUIRE(w->half, "linear: weight '%s' on the GPU has no bf16 copy (hy_params_alloc_half)",
               w->name);
    if (rows > 0 && out > 0)
        hy_cuda_linear_fwd((int)rows, (int)in, (int)out, x->data, w->half, b ? hy_f32(b) : NULL,
                           y->data, NULL);
}

hy_tensor *hy_linear(hy_tape *t, hy_tensor *x, hy_tensor *w, hy_tensor *b) {
    const char *op = "linear";
    int gpu = x->device == HY_CUDA;
    hy_expect_act(op, x);
    hy_expect_dtype(op, w, HY_F32);
    hy_expect_ndim(op, w, 2);
    hy_expect_device(op, x, w);
    int64_t in = w->shape[1], out = w->shape[0];
    HY_REQUIRE(x->ndim >= 1 && hy_last_dim(x) == in,
               "linear: input '%s' %s does not match weight '%s' %s (last dimension must be %lld)",
               x->name, hy_shape_str(x), w->name, hy_shape_str(w), (long long)in);
    if (b) {
        hy_expect_dtype(op, b, HY_F32);
        hy_expect_device(op, x, b);
        HY_REQUIRE(b->ndim == 1 && b->shape[0] == out,
                   "linear: bias '%s' %s does not match weight '%s' %s", b->name,
                   hy_shape_str(b), w->name, hy_shape_str(w));
    }
    int64_t shape[HY_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[x->ndim - 1] = out;
    hy_tensor *y = hy_tape_new(t, x->dtype, x->ndim, shape, "linear");  // (..., out)
    int64_t rows = hy_rows(x);
    if (gpu) {
        linear_forward_cuda(x, w, b, y, rows, in, out);
    } else {
        float *yv = hy_f32(y);
        if (b)
            for (int64_t r = 0; r < rows; r++) memcpy(yv + r * out, hy_f32(b), out * sizeof(float));
        if (rows > 0 && out > 0)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)out, (int)in, 1.0f,
                        hy_f32(x), (int)in, hy_f32(w), (int)in, b ? 1.0f : 0.0f, yv, (int)out);
    }
    hy_tensor *ins[3] = {x, w, b};
    hy_node *n = hy_tape_record(t, op, gpu ? linear_backward_cuda : linear_backward, ins, 3, &y, 1);
    if (n) {
        // Saves nothing but sizes: x and W are inputs and stay alive.
        linear_ctx *c = (linear_ctx *)hy_tape_ctx(t, n, sizeof *c);
        c->rows = rows, c->in = in, c->out = out;
        if (gpu && !b) hy_tape_grad_bf16_ok(t, y);  // the backward rounds dy to bf16
    }
    return y;
}
