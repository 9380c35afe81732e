// embedding.c: y[..., :] = W[ids[...], :], a row lookup.
#include <string.h>

#include "../autograd/check.h"
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
    hy_expect_cpu(op, weight);
    hy_expect_device(op, weight, ids);
    int64_t V = weight->shape[0], D = weight->shape[1];
    HY_REQUIRE(ids->ndim < HY_MAX_DIMS,
               "embedding: ids '%s' %s have %d dimensions; at most %d (the output adds one)",
               ids->name, hy_shape_str(ids), ids->ndim, HY_MAX_DIMS - 1);
    HY_REQUIRE(padding_idx < V, "embedding: padding_idx %d is outside [0, V) with V = %lld "
               "(weight '%s' %s); use -1 for none",
               padding_idx, (long long)V, weight->name, hy_shape_str(weight));
    check_ids(weight, ids);
    int64_t shape[HY_MAX_DIMS];
    memcpy(shape, ids->shape, sizeof(int64_t) * (size_t)ids->ndim);
    shape[ids->ndim] = D;
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
