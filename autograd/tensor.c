#include "tensor.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "../cuda/hy_cuda.h"

size_t hy_dtype_size(hy_dtype dt) { return dt == HY_BF16 ? 2 : 4; }

const char *hy_dtype_name(hy_dtype dt) {
    switch (dt) {
    case HY_F32: return "f32";
    case HY_BF16: return "bf16";
    case HY_I32: return "i32";
    }
    return "?";
}

static hy_tensor *new_meta(hy_arena *a, hy_dtype dt, int ndim, const int64_t *shape,
                           const char *name) {
    HY_CHECK(ndim >= 0 && ndim <= HY_MAX_DIMS, "tensor '%s': %d dimensions (at most %d)",
             name ? name : "", ndim, HY_MAX_DIMS);
    hy_tensor *t = hy_arena_meta(a);
    t->dtype = dt;
    t->device = a->device;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) {
        HY_CHECK(shape[i] >= 0, "tensor '%s': negative dimension %lld", name ? name : "",
                 (long long)shape[i]);
        t->shape[i] = shape[i];
    }
    snprintf(t->name, sizeof t->name, "%s", name ? name : "");
    t->slot = -1;
    return t;
}

hy_tensor *hy_tensor_new(hy_arena *a, hy_dtype dt, int ndim, const int64_t *shape,
                         const char *name) {
    hy_tensor *t = new_meta(a, dt, ndim, shape, name);
    t->data = hy_arena_alloc(a, hy_nbytes(t));
    return t;
}

hy_tensor *hy_new1(hy_arena *a, hy_dtype dt, int64_t d0, const char *name) {
    int64_t s[1] = {d0};
    return hy_tensor_new(a, dt, 1, s, name);
}
hy_tensor *hy_new2(hy_arena *a, hy_dtype dt, int64_t d0, int64_t d1, const char *name) {
    int64_t s[2] = {d0, d1};
    return hy_tensor_new(a, dt, 2, s, name);
}
hy_tensor *hy_new3(hy_arena *a, hy_dtype dt, int64_t d0, int64_t d1, int64_t d2,
                   const char *name) {
    int64_t s[3] = {d0, d1, d2};
    return hy_tensor_new(a, dt, 3, s, name);
}
hy_tensor *hy_new4(hy_arena *a, hy_dtype dt, int64_t d0, int64_t d1, int64_t d2, int64_t d3,
                   const char *name) {
    int64_t s[4] = {d0, d1, d2, d3};
    return hy_tensor_new(a, dt, 4, s, name);
}

hy_tensor *hy_zeros_like(hy_arena *a, const hy_tensor *like, const char *name) {
    hy_tensor *t = new_meta(a, like->dtype, like->ndim, like->shape, name);
    HY_CHECK(a->device == like->device, "zeros_like '%s': arena on %s, tensor on %s", name,
             hy_device_name(a->device), hy_device_name(like->device));
    t->data = hy_arena_calloc(a, hy_nbytes(t));
    return t;
}

static hy_tensor *owner_of(hy_tensor *t) { return t->base ? t->base : t; }

hy_tensor *hy_view(hy_arena *a, hy_tensor *t, int ndim, const int64_t *shape) {
    hy_tensor *v = new_meta(a, t->dtype, ndim, shape, t->name);
    v->device = t->device;
    HY_REQUIRE(hy_numel(v) == hy_numel(t), "view of '%s' %s as %s: element counts differ",
               t->name, hy_shape_str(t), hy_shape_str(v));
    v->data = t->data;
    v->half = t->half;
    v->requires_grad = t->requires_grad;
    v->base = owner_of(t);
    v->offset = t->base ? t->offset : 0;
    return v;
}

hy_tensor *hy_view_rows(hy_arena *a, hy_tensor *t, int64_t row0, int64_t n) {
    HY_REQUIRE(t->ndim >= 1 && row0 >= 0 && n >= 0 && row0 + n <= t->shape[0],
               "rows [%lld, %lld) of '%s' %s are out of range", (long long)row0,
               (long long)(row0 + n), t->name, hy_shape_str(t));
    int64_t shape[HY_MAX_DIMS];
    memcpy(shape, t->shape, sizeof shape);
    shape[0] = n;
    hy_tensor *v = new_meta(a, t->dtype, t->ndim, shape, t->name);
    v->device = t->device;
    int64_t row_elems = t->shape[0] ? hy_numel(t) / t->shape[0] : 0;
    v->data = (char *)t->data + (size_t)(row0 * row_elems) * hy_dtype_size(t->dtype);
    v->half = t->half ? (char *)t->half + (size_t)(row0 * row_elems) * 2 : NULL;
    v->requires_grad = t->requires_grad;
    v->base = owner_of(t);
    v->offset = (t->base ? t->offset : 0) + row0 * row_elems;
    return v;
}

int64_t hy_numel(const hy_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

size_t hy_nbytes(const hy_tensor *t) { return (size_t)hy_numel(t) * hy_dtype_size(t->dtype); }

int hy_same_shape(const hy_tensor *a, const hy_tensor *b) {
    if (a->ndim != b->ndim) return 0;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return 0;
    return 1;
}

int64_t hy_last_dim(const hy_tensor *t) { return t->ndim ? t->shape[t->ndim - 1] : 1; }

int64_t hy_rows(const hy_tensor *t) {
    int64_t d = hy_last_dim(t);
    return d ? hy_numel(t) / d : 0;
}

static void format_shape(const hy_tensor *t, char *buf, size_t n) {
    size_t k = 0;
    k += snprintf(buf + k, n - k, "(");
    for (int i = 0; i < t->ndim && k < n; i++)
        k += snprintf(buf + k, n - k, i ? ", %lld" : "%lld", (long long)t->shape[i]);
    if (k < n) snprintf(buf + k, n - k, ")");
}

const char *hy_shape_str(const hy_tensor *t) {
    static __thread char bufs[8][96];
    static __thread int next;
    char *b = bufs[next++ & 7];
    format_shape(t, b, 96);
    return b;
}

const char *hy_describe(const hy_tensor *t, char *buf, size_t n) {
    char s[96];
    format_shape(t, s, sizeof s);
    snprintf(buf, n, "'%s' %s %s %s", t->name, s, hy_dtype_name(t->dtype),
             hy_device_name(t->device));
    return buf;
}

uint16_t hy_f32_to_bf16(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    if (isnan(x)) return (uint16_t)((u >> 16) | 0x40);  // keep it a quiet NaN
    u += 0x7fff + ((u >> 16) & 1);                      // round to nearest even
    return (uint16_t)(u >> 16);
}

float hy_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float x;
    memcpy(&x, &u, 4);
    return x;
}

void hy_expect_dtype(const char *op, const hy_tensor *t, hy_dtype dt) {
    char d[160];
    HY_REQUIRE(t->dtype == dt, "%s: %s must be %s", op, hy_describe(t, d, sizeof d),
               hy_dtype_name(dt));
}

void hy_expect_device(const char *op, const hy_tensor *a, const hy_tensor *b) {
    char da[160], db[160];
    HY_REQUIRE(a->device == b->device, "%s: %s and %s are on different devices", op,
               hy_describe(a, da, sizeof da), hy_describe(b, db, sizeof db));
}

void hy_expect_ndim(const char *op, const hy_tensor *t, int ndim) {
    char d[160];
    HY_REQUIRE(t->ndim == ndim, "%s: %s must have %d dimensions", op,
               hy_describe(t, d, sizeof d), ndim);
}

void hy_expect_same_shape(const char *op, const hy_tensor *a, const hy_tensor *b) {
    char da[160], db[160];
    HY_REQUIRE(hy_same_shape(a, b), "%s: shapes differ: %s vs %s", op,
               hy_describe(a, da, sizeof da), hy_describe(b, db, sizeof db));
}

void hy_expect_cpu(const char *op, const hy_tensor *t) {
    char d[160];
    HY_REQUIRE(t->device == HY_CPU, "%s: %s: this op has no CUDA version yet", op,
               hy_describe(t, d, sizeof d));
}

void hy_expect_act(const char *op, const hy_tensor *t) {
    char d[160];
    hy_dtype want = hy_act_dtype(t->device);
    HY_REQUIRE(t->dtype == want, "%s: %s must be %s (activations on the %s are %s)", op,
               hy_describe(t, d, sizeof d), hy_dtype_name(want), t->device == HY_CUDA ? "GPU" : "CPU",
               hy_dtype_name(want));
}

hy_dtype hy_act_dtype(hy_device d) { return d == HY_CUDA ? HY_BF16 : HY_F32; }

void hy_tensor_to_host_f32(const hy_tensor *t, float *dst) {
    HY_REQUIRE(t->dtype != HY_I32, "to_host_f32: '%s' is an integer tensor", t->name);
    size_t n = (size_t)hy_numel(t);
    if (t->dtype == HY_F32) {
        if (t->device == HY_CUDA)
            hy_cuda_memcpy_d2h(dst, t->data, n * sizeof(float));
        else
            memcpy(dst, t->data, n * sizeof(float));
        return;
    }
    const uint16_t *h = (const uint16_t *)t->data;
    uint16_t *tmp = NULL;
    if (t->device == HY_CUDA) {
        tmp = (uint16_t *)hy_xmalloc(n * sizeof(uint16_t));
        hy_cuda_memcpy_d2h(tmp, t->data, n * sizeof(uint16_t));
        h = tmp;
    }
    for (size_t i = 0; i < n; i++) dst[i] = hy_bf16_to_f32(h[i]);
    free(tmp);
}

void hy_tensor_from_host_f32(hy_tensor *t, const float *src) {
    HY_REQUIRE(t->dtype != HY_I32, "from_host_f32: '%s' is an integer tensor", t->name);
    size_t n = (size_t)hy_numel(t);
    if (t->dtype == HY_F32) {
        if (t->device == HY_CUDA)
            hy_cuda_memcpy_h2d(t->data, src, n * sizeof(float));
        else
            memcpy(t->data, src, n * sizeof(float));
        return;
    }
    uint16_t *h = t->device == HY_CUDA ? (uint16_t *)hy_xmalloc(n * sizeof(uint16_t))
                                       : (uint16_t *)t->data;
    for (size_t i = 0; i < n; i++) h[i] = hy_f32_to_bf16(src[i]);
    if (t->device == HY_CUDA) {
        hy_cuda_memcpy_h2d(t->data, h, n * sizeof(uint16_t));
        free(h);
    }
}
