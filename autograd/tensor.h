// tensor.h: hy_tensor, a typed view of arena memory.
//
// Contiguous, row-major, up to 4 dimensions. Tensors hold no gradient: the
// tape keeps gradients in a side table (tape.h), indexed by `slot`.
#ifndef HY_TENSOR_H
#define HY_TENSOR_H

#include <stdint.h>

#include "arena.h"

typedef enum { HY_F32 = 0, HY_BF16 = 1, HY_I32 = 2 } hy_dtype;

#define HY_MAX_DIMS 4
#define HY_NAME_LEN 96

typedef struct hy_tensor {
    hy_dtype dtype;
    hy_device device;
    int ndim;
    int64_t shape[HY_MAX_DIMS];
    void *data;
    char name[HY_NAME_LEN];
    // Autograd bookkeeping (see tape.h).
    int requires_grad;        // float tensor that gradients flow into
    int slot;                 // index in the tape's gradient table, -1 if none yet
    struct hy_tensor *base;   // a view's owner (gradients go there), NULL if none
    int64_t offset;           // a view's first element within base
    int uses;                 // recorded ops that read it (its gradient's contributions)
    int grad_bf16_ok;         // its gradient's one reader rounds it to bf16 (tape.h)
    // An f32 parameter on the GPU also has a bf16 copy that the GEMMs read
    // (params.h, hy_params_alloc_half); NULL for everything else.
    void *half;
} hy_tensor;

size_t hy_dtype_size(hy_dtype dt);
const char *hy_dtype_name(hy_dtype dt);

// Tensor metadata and data both come from `a`; data is not initialised.
hy_tensor *hy_tensor_new(hy_arena *a, hy_dtype dt, int ndim, const int64_t *shape,
                         const char *name);
hy_tensor *hy_new1(hy_arena *a, hy_dtype dt, int64_t d0, const char *name);
hy_tensor *hy_new2(hy_arena *a, hy_dtype dt, int64_t d0, int64_t d1, const char *name);
hy_tensor *hy_new3(hy_arena *a, hy_dtype dt, int64_t d0, int64_t d1, int64_t d2,
                   const char *name);
hy_tensor *hy_new4(hy_arena *a, hy_dtype dt, int64_t d0, int64_t d1, int64_t d2, int64_t d3,
                   const char *name);
// Same shape, dtype and device as `like`, zero-filled.
hy_tensor *hy_zeros_like(hy_arena *a, const hy_tensor *like, const char *name);

// A reshaped view of `t` (same number of elements), or of rows [row0, row0+n)
// of its first dimension. Gradients of a view land in its owner's gradient.
hy_tensor *hy_view(hy_arena *a, hy_tensor *t, int ndim, const int64_t *shape);
hy_tensor *hy_view_rows(hy_arena *a, hy_tensor *t, int64_t row0, int64_t n);

int64_t hy_numel(const hy_tensor *t);
size_t hy_nbytes(const hy_tensor *t);
int hy_same_shape(const hy_tensor *a, const hy_tensor *b);
// Size of the last dimension, and the product of all the others.
int64_t hy_last_dim(const hy_tensor *t);
int64_t hy_rows(const hy_tensor *t);

// "x (2, 3, 5) f32 cpu" into buf; returns buf.
const char *hy_describe(const hy_tensor *t, char *buf, size_t n);
// Shape only: "(2, 3, 5)". Uses one of a few rotating static buffers, so
// several can appear in one printf.
const char *hy_shape_str(const hy_tensor *t);

static inline float *hy_f32(const hy_tensor *t) { return (float *)t->data; }
static inline int32_t *hy_i32(const hy_tensor *t) { return (int32_t *)t->data; }
static inline uint16_t *hy_bf16(const hy_tensor *t) { return (uint16_t *)t->data; }

// bf16 <-> f32, round to nearest even (NaN stays NaN).
uint16_t hy_f32_to_bf16(float x);
float hy_bf16_to_f32(uint16_t h);

// Checks used by ops: on failure, one error naming the op and the tensors.
void hy_expect_dtype(const char *op, const hy_tensor *t, hy_dtype dt);
void hy_expect_device(const char *op, const hy_tensor *a, const hy_tensor *b);
void hy_expect_ndim(const char *op, const hy_tensor *t, int ndim);
void hy_expect_same_shape(const char *op, const hy_tensor *a, const hy_tensor *b);
// The op has no CUDA version yet: a CUDA tensor is a clear error.
void hy_expect_cpu(const char *op, const hy_tensor *t);
// A float activation: f32 on the CPU, bf16 on the GPU (DESIGN section 2).
void hy_expect_act(const char *op, const hy_tensor *t);
// The activation dtype of a device: f32 on the CPU, bf16 on the GPU.
hy_dtype hy_act_dtype(hy_device d);

// Copies between a tensor (either device, f32 or bf16) and f32 host memory
// of its numel, converting bf16 <-> f32 (round to nearest even). Synchronous.
void hy_tensor_to_host_f32(const hy_tensor *t, float *dst);
void hy_tensor_from_host_f32(hy_tensor *t, const float *src);

#endif
