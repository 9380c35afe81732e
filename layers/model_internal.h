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
// Dense baseline: append a chunk's rotated keys and values (B, T, H, D) to layer i's cache.
void hy_dense_cache_append(hy_decode_state *s, int i, const float *k, const float *v, int64_t T);

#endif
