// arena.h: bump allocators, one per kind of memory.
//
// All memory a run needs is planned up front: parameters, gradients,
// optimizer state, activations (reset every step) and scratch. An arena is
// one allocation; hy_arena_alloc() bumps a pointer and never calls malloc,
// so nothing is allocated inside the step loop. Running out of an arena is a
// clear error naming the arena and the sizes, never a silent fallback.
#ifndef HY_ARENA_H
#define HY_ARENA_H

#include <stddef.h>
#include <stdio.h>

typedef enum { HY_CPU = 0, HY_CUDA = 1 } hy_device;

typedef enum {
    HY_ARENA_PARAMS = 0,
    HY_ARENA_GRADS,
    HY_ARENA_OPTIM,
    HY_ARENA_ACTS,     // forward activations and saved contexts, reset every step
    HY_ARENA_SCRATCH,  // temporaries, incl. activation gradients in backward
    HY_ARENA_KINDS
} hy_arena_kind;

#define HY_ALIGN 64

typedef struct hy_arena {
    char name[32];
    hy_device device;
    char *base;    // host pointer or device pointer
    size_t cap;    // bytes
    size_t used;   // bytes handed out since the last reset
    size_t peak;   // high-water mark over the arena's life
    // Tensor structs always live in host memory, even for a CUDA arena; they
    // are bump-allocated from this table and recycled by a reset.
    struct hy_tensor *meta;
    int meta_cap, meta_used;
} hy_arena;

#define HY_ARENA_META_CAP 4096

// A zeroed tensor struct from the arena's host table (used by tensor.c).
struct hy_tensor *hy_arena_meta(hy_arena *a);

const char *hy_arena_kind_name(hy_arena_kind kind);
const char *hy_device_name(hy_device d);

// Reserve `cap` bytes on `device`. cap may be 0 (an arena that holds nothing).
void hy_arena_init(hy_arena *a, const char *name, hy_device device, size_t cap);
void hy_arena_free(hy_arena *a);

// 64-byte aligned; contents undefined. Overflow is a fatal, named error.
void *hy_arena_alloc(hy_arena *a, size_t bytes);
// Same, zero-filled.
void *hy_arena_calloc(hy_arena *a, size_t bytes);
// Aligned to `align` bytes (a power of two above HY_ALIGN, e.g. 256 for
// kernels that use TMA-style loads), contents undefined.
void *hy_arena_alloc_aligned(hy_arena *a, size_t bytes, size_t align);

// Forget everything allocated since init (or since `mark`).
void hy_arena_reset(hy_arena *a);
typedef struct { size_t bytes; int tensors; } hy_arena_mark_t;
hy_arena_mark_t hy_arena_mark(const hy_arena *a);
void hy_arena_reset_to(hy_arena *a, hy_arena_mark_t mark);

// "params   cpu    12.50 MiB (used 12.10, peak 12.10)"
void hy_arena_report(const hy_arena *a, FILE *f);

#endif
