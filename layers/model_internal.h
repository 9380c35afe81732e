// model_internal.h: shared between model_forward.c and model_decode.c.
#ifndef HY_MODEL_INTERNAL_H
#define HY_MODEL_INTERNAL_H

#include "model.h"

// Embedding, blocks, final norm and tied head. ds == NULL: training (or a
// stateless forward); otherwise decoding from ds (prefill, or one token
// with step = 1). Returns logits (B, T, V).
hy_tensor *hy_model_blocks(hy_model *m, hy_tape *t, hy_tensor *ids, hy_decode_state *ds,
                           int step);
hy_tensor *hy_wrap(hy_arena *a, float *data, int ndim, const int64_t *shape, const char *name);
hy_tensor *hy_wrap_as(hy_arena *a, void *data, hy_dtype dt, hy_device dev, int ndim,
                      const int64_t *shape, const char *name);
// One decoding token of block i on the GPU (block_decode_gpu.c): x (B, 1, d)
// bf16 -> the block's output (B, 1, d), the state in ds advanced.
hy_tensor *hy_block_decode_gpu(hy_model *m, hy_tape *t, int i, hy_tensor *x, hy_decode_state *ds);
// The final norm and the tied head of one decoding token on the GPU: x (B, 1, d) -> logits
// (B, 1, V) bf16.
hy_tensor *hy_head_decode_gpu(hy_model *m, hy_tape *t, hy_tensor *x);
// The dense baseline's decoding token on the GPU from its qkv projection (B, 1, 3 H D):
// RoPE, the split-K step over the KV cache; o (B, 1, H, D) (model_forward.c).
hy_tensor *hy_dense_heads_step(hy_model *m, hy_tape *t, int i, hy_tensor *qkv,
                               hy_decode_state *ds);
// Dense baseline: append a chunk's rotated keys and values (B, T, H, D) to layer i's cache.
void hy_dense_cache_append(hy_decode_state *s, int i, const float *k, const float *v, int64_t T);

#endif
