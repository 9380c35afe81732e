// embedding.c: y[..., :] = W[ids[...], :], a row lookup.
// CPU: W and y f32. GPU (hy_cuda_embedding_fwd/_bwd): W the f32 master table,
// ids i32 on the device, y bf16, the table's gradient f32 (accumulated with
// fp32 atomics: the one op whose GPU gradient is not bit-reproducible).
#include <limits.h>
#include <string.h>

#include "../autograd/check.h"
#include "../cuda/hy_cuda_ops.h"
#include "ops.h"

typedef struct {
    int64_t n, dim;   // number of ids, row width
    int padding_idx;  // rows equal to it get no gradient; < 0: none
} embedding_ctx;

static void embedding_backward(hy_tape *t, hy_node *n) {
    embedding_ctx *c = (embedding_ctx *)n->ctx;
    const float *dy = hy_f32(hy_grad(t, n->out[0]));  // (n, D)
    const int32_t *ids = hy_i32(n->in[1]);
    float *dw = hy_f32(hy_grad_acc(t, n->in[0]));  // (V, D)
    int64_t D = c->dim;
    for (int64_t i = 0; i < c->n; i++) {
        if (ids[i] == c->padding_idx) continue;
        float *row = dw + (int64_t)ids[i] * D;
        const float *g = dy + i * D;
        for (int64_t k = 0; k < D; k++) row[k] += g[k];
    }
}

// GPU backward: dW (V, D) f32 += dy (n, D) f32 at the ids' rows, skipping
// padding_idx (and ids outside [0, V)).
static void embedding_backward_cuda(hy_tape *t, hy_node *n) {
    embedding_ctx *c = (embedding_ctx *)n->ctx;
    hy_tensor *w = n->in[0];
    const float *dy = hy_f32(hy_grad(t, n->out[0]));  // (n, D) f32
    hy_tensor *dw = hy_grad_acc(t, w);                // (V, D) f32
    if (dw && c->n > 0 && c->dim > 0)
        hy_cuda_embedding_bwd((int)c->n, (int)c->dim, (int)w->shape[0], dy, hy_i32(n->in[1]),
                              c->padding_idx, hy_f32(dw), NULL);
}

// GPU forward: weight (V, D) f32, ids (n) i32 -> y (n, D) bf16. The ids live
// on the device and are NOT range-checked here (that would need a copy to
// the host and a sync every step): an id outside [0, V) gives a NaN row, so
// the loss turns non-finite; the data loaders check ids before upload.
// Saves nothing but sizes: the ids are an input and stay alive.
static hy_tensor *embedding_fwd_cuda(hy_tape *t, hy_tensor *weight, hy_tensor *ids,
                                     int padding_idx, int ndim, const int64_t *shape) {
    int64_t V = weight->shape[0], D = weight->shape[1], len = hy_numel(ids);
    HY_REQUIRE(V <= INT_MAX && D <= INT_MAX && len <= INT_MAX,
               "embedding: weight '%s' %s or ids '%s' %s too large for the GPU kernels",
               weight->name, hy_shape_str(weight), ids->name, hy_shape_str(ids));
    hy_tensor *y = hy_tape_new(t, HY_BF16, ndim, shape, "embedding");  // (..., D) bf16
    if (len > 0 && D > 0 && V > 0)
        hy_cuda_embedding_fwd((int)len, (int)D, (int)V, hy_f32(weight), hy_i32(ids), y->data,
                              NULL);
    hy_tensor *ins[2] = {weight, ids};
    hy_node *n = hy_tape_record(t, "embedding", embedding_backward_cuda, ins, 2, &y, 1);
    if (n) {
        embedding_ctx *c = (embedding_ctx *)hy_tape_ctx(t, n, sizeof *c);
        c->n = len, c->dim = D, c->padding_idx = padding_idx;
    }
    return y;
}

// Every id must be a row of the table; the first bad one is the error.
static void check_ids(const hy_tensor *w, const hy_tensor *ids) {
    const int32_t *iv = hy_i32(ids);
    int64_t V = w->shape[0];
    for (int64_t i = 0, len = hy_numel(ids); i < len; i++)
        HY_REQUIRE(iv[i] >= 0 && iv[i] < V,
                   "embedding: id %d at flat position %lld of '%s' %s is outside [0, V) "
                   "with V = %lld (weight '%s' %s)",
                   iv[i], (long long)i, ids->name, hy_shape_str(ids), (long long)V, w->name,
                   hy_shape_str(w));
}

hy_tensor *hy_embedding(hy_tape *t, hy_tensor *weight, hy_tensor *ids, int padding_idx) {
    const char *op = "embedding";
    hy_expect_dtype(op, weight, HY_F32);
    hy_expect_dtype(op, ids, HY_I32);
    hy_expect_ndim(op, weight, 2);
    hy_expect_device(op, weight, ids);
    int64_t V = weight->shape[0], D = weight->shape[1];
    HY_REQUIRE(ids->ndim < HY_MAX_DIMS,
               "embedding: ids '%s' %s have %d dimensions; at most %d (the output adds one)",
               ids->name, hy_shape_str(ids), ids->ndim, HY_MAX_DIMS - 1);
    HY_REQUIRE(padding_idx < V, "embedding: padding_idx %d is outside [0, V) with V = %lld "
               "(weight '%s' %s); use -1 for none",
               padding_idx, (long long)V, weight->name, hy_shape_str(weight));
    int64_t shape[HY_MAX_DIMS];
    memcpy(shape, ids->shape, sizeof(int64_t) * (size_t)ids->ndim);
    shape[ids->ndim] = D;
    if (weight->device == HY_CUDA)  // ids on the device: not checked (see embedding_fwd_cuda)
        return embedding_fwd_cuda(t, weight, ids, padding_idx, ids->ndim + 1, shape);
    check_ids(weight, ids);
    hy_tensor *y = hy_tape_new(t, HY_F32, ids->ndim + 1, shape, "embedding");  // (..., D)
    const int32_t *iv = hy_i32(ids);
    const float *wv = hy_f32(weight);
    float *yv = hy_f32(y);
    int64_t len = hy_numel(ids);
    // The padding row is copied like any other (PyTorch does the same): only
    // its gradient is special.
    for (int64_t i = 0; i < len; i++)
        memcpy(yv + i * D, wv + (int64_t)iv[i] * D, (size_t)D * sizeof(float));
    hy_tensor *ins[2] = {weight, ids};
    hy_node *n = hy_tape_record(t, op, embedding_backward, ins, 2, &y, 1);
    if (n) {
        // Saves nothing but sizes: the ids are an input and stay alive.
        embedding_ctx *c = (embedding_ctx *)hy_tape_ctx(t, n, sizeof *c);
        c->n = len, c->dim = D, c->padding_idx = padding_idx;
    }
    return y;
}
