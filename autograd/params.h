// params.h: the parameter table.
//
// One row per parameter: its name (the PyTorch reference's state_dict name),
// shape, initialisation, optimizer group and weight-decay multiplier, and its
// offset in one flat buffer. Values and gradients are each a single block
// (params arena, grads arena) at the same offsets, so clipping, optimizers
// and collectives can treat all parameters as one vector. Optimizer routing
// and weight decay are read from here, never chosen by tensor index.
#ifndef HY_PARAMS_H
#define HY_PARAMS_H

#include <stdio.h>

#include "rng.h"
#include "tape.h"

// CUSTOM: the owner (e.g. the model) writes the values after
// hy_params_initialise(), which leaves them untouched.
typedef enum {
    HY_INIT_NORMAL = 0,
    HY_INIT_ZEROS,
    HY_INIT_ONES,
    HY_INIT_CONST,
    HY_INIT_UNIFORM,
    HY_INIT_CUSTOM
} hy_init_kind;

typedef struct {
    hy_init_kind kind;
    float value;  // std for NORMAL, the constant for CONST, the bound b of U(-b, b)
} hy_init;

typedef enum { HY_GROUP_ADAMW = 0, HY_GROUP_MUON = 1 } hy_opt_group;

typedef struct {
    char name[HY_NAME_LEN];
    int ndim;
    int64_t shape[HY_MAX_DIMS];
    hy_init init;
    hy_opt_group group;
    float weight_decay;  // multiplier of the optimizer's weight decay: 1 or 0
    size_t offset;       // first element in the flat buffers
    hy_tensor *value;    // (shape) f32, in the params arena
    hy_tensor *grad;     // (shape) f32, in the grads arena
} hy_param;

typedef struct {
    hy_param *p;
    int n, cap;
    size_t numel;     // all parameters together
    float *values;    // flat, numel elements (device memory for CUDA)
    float *grads;     // flat, numel elements
    uint16_t *half;   // GPU tables: bf16 copy of values at the same offsets (GEMM operands)
    hy_device device;
} hy_param_table;

void hy_params_create(hy_param_table *t, int cap);
void hy_params_destroy(hy_param_table *t);

// Declare a parameter; names must be unique. Returns its index.
int hy_params_add(hy_param_table *t, const char *name, int ndim, const int64_t *shape,
                  hy_init init, hy_opt_group group, float weight_decay);
// Index of `name`, or -1.
int hy_params_find(const hy_param_table *t, const char *name);

// Bytes that hy_params_alloc() takes from each of the two arenas.
size_t hy_params_bytes(const hy_param_table *t);
// Place all values in `values` and all gradients in `grads` (one block each).
void hy_params_alloc(hy_param_table *t, hy_arena *values, hy_arena *grads);
// Draw initial values in table order (host tables only).
void hy_params_initialise(hy_param_table *t, hy_rng *rng);
void hy_params_zero_grads(hy_param_table *t);

// GPU tables: a bf16 copy of all values (numel * 2 bytes from `a`, a CUDA
// arena), parallel to the flat values, so one conversion refreshes every
// copy; each value tensor's `half` points at its part. Refresh after every
// change of the values (optimizer step, load).
size_t hy_params_half_bytes(const hy_param_table *t);
void hy_params_alloc_half(hy_param_table *t, hy_arena *a);
void hy_params_refresh_half(hy_param_table *t);
// Copy all values (or all gradients) between two tables of the same layout
// on any devices (host <-> GPU). Refreshes dst's bf16 copy when it has one.
void hy_params_copy_values(hy_param_table *dst, const hy_param_table *src);
void hy_params_copy_grads(hy_param_table *dst, const hy_param_table *src);
void hy_params_bind(hy_param_table *t, hy_tape *tape);

void hy_params_print(const hy_param_table *t, FILE *f);
// Sum of the parameters' element counts (the flat buffers add alignment).
int64_t hy_params_count(const hy_param_table *t);

#endif
