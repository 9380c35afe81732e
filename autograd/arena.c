#include "arena.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "tensor.h"
#include "../cuda/hy_cuda.h"

static const char *kind_names[HY_ARENA_KINDS] = {"params", "grads", "optim", "acts",
                                                 "scratch"};

const char *hy_arena_kind_name(hy_arena_kind kind) {
    return (kind >= 0 && kind < HY_ARENA_KINDS) ? kind_names[kind] : "?";
}

const char *hy_device_name(hy_device d) { return d == HY_CUDA ? "cuda" : "cpu"; }

static size_t round_up(size_t n) { return (n + HY_ALIGN - 1) / HY_ALIGN * HY_ALIGN; }

void hy_arena_init(hy_arena *a, const char *name, hy_device device, size_t cap) {
    memset(a, 0, sizeof *a);
    snprintf(a->name, sizeof a->name, "%s", name);
    a->device = device;
    a->cap = round_up(cap);
    a->meta_cap = HY_ARENA_META_CAP;
    a->meta = (hy_tensor *)hy_xcalloc((size_t)a->meta_cap, sizeof(hy_tensor));
    if (a->cap == 0) return;
    if (device == HY_CUDA) {
        a->base = hy_cuda_malloc(a->cap);
    } else {
        a->base = aligned_alloc(HY_ALIGN, a->cap);
        HY_CHECK(a->base != NULL, "arena '%s': cannot reserve %.2f MiB of host memory", name,
                 a->cap / 1048576.0);
    }
}

void hy_arena_free(hy_arena *a) {
    if (a->base) {
        if (a->device == HY_CUDA)
            hy_cuda_free(a->base);
        else
            free(a->base);
    }
    free(a->meta);
    a->base = NULL;
    a->meta = NULL;
    a->cap = a->used = 0;
    a->meta_cap = a->meta_used = 0;
}

hy_tensor *hy_arena_meta(hy_arena *a) {
    HY_CHECK(a->meta_used < a->meta_cap, "arena '%s': more than %d tensors; plan fewer", a->name,
             a->meta_cap);
    hy_tensor *t = &a->meta[a->meta_used++];
    memset(t, 0, sizeof *t);
    return t;
}

void *hy_arena_alloc(hy_arena *a, size_t bytes) {
    size_t need = round_up(bytes ? bytes : 1);
    HY_CHECK(a->used + need <= a->cap,
             "arena '%s' (%s) is full: %.3f MiB used of %.3f MiB, %.3f MiB more requested; "
             "plan a larger arena",
             a->name, hy_device_name(a->device), a->used / 1048576.0, a->cap / 1048576.0,
             need / 1048576.0);
    void *p = a->base + a->used;
    a->used += need;
    if (a->used > a->peak) a->peak = a->used;
    return p;
}

void *hy_arena_calloc(hy_arena *a, size_t bytes) {
    void *p = hy_arena_alloc(a, bytes);
    if (a->device == HY_CUDA)
        hy_cuda_memset(p, 0, bytes);
    else
        memset(p, 0, bytes);
    return p;
}

void hy_arena_reset(hy_arena *a) {
    a->used = 0;
    a->meta_used = 0;
}

hy_arena_mark_t hy_arena_mark(const hy_arena *a) {
    hy_arena_mark_t m = {a->used, a->meta_used};
    return m;
}

void hy_arena_reset_to(hy_arena *a, hy_arena_mark_t m) {
    HY_CHECK(m.bytes <= a->used && m.tensors <= a->meta_used,
             "arena '%s': reset to a mark beyond its use", a->name);
    a->used = m.bytes;
    a->meta_used = m.tensors;
}

void hy_arena_report(const hy_arena *a, FILE *f) {
    fprintf(f, "  %-8s %-4s %10.2f MiB (used %.2f, peak %.2f)\n", a->name,
            hy_device_name(a->device), a->cap / 1048576.0, a->used / 1048576.0,
            a->peak / 1048576.0);
}

void *hy_arena_alloc_aligned(hy_arena *a, size_t bytes, size_t align) {
    HY_CHECK(align >= HY_ALIGN && (align & (align - 1)) == 0, "arena %s: bad alignment %zu",
             a->name, align);
    char *p = (char *)hy_arena_alloc(a, bytes + align - HY_ALIGN);
    size_t off = (size_t)((uintptr_t)p & (align - 1));
    return off ? p + (align - off) : p;
}
