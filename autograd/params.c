#include "params.h"

#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "../cuda/hy_cuda.h"
#include "../cuda/hy_cuda_ops.h"

void hy_params_create(hy_param_table *t, int cap) {
    memset(t, 0, sizeof *t);
    t->cap = cap;
    t->p = (hy_param *)hy_xcalloc((size_t)cap, sizeof(hy_param));
}

void hy_params_destroy(hy_param_table *t) {
    free(t->p);
    memset(t, 0, sizeof *t);
}

int hy_params_find(const hy_param_table *t, const char *name) {
    for (int i = 0; i < t->n; i++)
        if (strcmp(t->p[i].name, name) == 0) return i;
    return -1;
}

int hy_params_add(hy_param_table *t, const char *name, int ndim, const int64_t *shape,
                  hy_init init, hy_opt_group group, float weight_decay) {
    HY_CHECK(t->values == NULL, "params: '%s' declared after allocation", name);
    HY_CHECK(t->n < t->cap, "params: more than %d parameters", t->cap);
    HY_CHECK(hy_params_find(t, name) < 0, "params: '%s' declared twice", name);
    HY_CHECK(ndim >= 1 && ndim <= HY_MAX_DIMS, "params: '%s' has %d dimensions", name, ndim);
    hy_param *p = &t->p[t->n];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->ndim = ndim;
    size_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        p->shape[i] = shape[i];
        numel *= (size_t)shape[i];
    }
    p->init = init;
    p->group = group;
    p->weight_decay = weight_decay;
    // Each parameter starts on a 64-byte boundary (16 floats) so kernels can
    // use aligned vector loads on every one.
    p->offset = (t->numel + 15) / 16 * 16;
    t->numel = p->offset + numel;
    return t->n++;
}

size_t hy_params_bytes(const hy_param_table *t) { return (t->numel + 16) * sizeof(float); }

static hy_tensor *place(hy_arena *a, float *flat, const hy_param *p) {
    hy_tensor *x = hy_arena_meta(a);
    x->dtype = HY_F32;
    x->device = a->device;
    x->ndim = p->ndim;
    memcpy(x->shape, p->shape, sizeof x->shape);
    x->data = flat + p->offset;
    snprintf(x->name, sizeof x->name, "%s", p->name);
    x->slot = -1;
    return x;
}

void hy_params_alloc(hy_param_table *t, hy_arena *values, hy_arena *grads) {
    HY_CHECK(values->device == grads->device, "params: values and gradients on different devices");
    t->device = values->device;
    t->values = (float *)hy_arena_calloc(values, hy_params_bytes(t));
    t->grads = (float *)hy_arena_calloc(grads, hy_params_bytes(t));
    for (int i = 0; i < t->n; i++) {
        t->p[i].value = place(values, t->values, &t->p[i]);
        t->p[i].grad = place(grads, t->grads, &t->p[i]);
        t->p[i].value->requires_grad = 1;
    }
}

void hy_params_initialise(hy_param_table *t, hy_rng *rng) {
    HY_CHECK(t->values && t->device == HY_CPU, "params: initialise host tables after alloc");
    for (int i = 0; i < t->n; i++) {
        hy_param *p = &t->p[i];
        switch (p->init.kind) {
        case HY_INIT_NORMAL: hy_fill_normal(p->value, rng, 0.0f, p->init.value); break;
        case HY_INIT_ZEROS: hy_fill_const(p->value, 0.0f); break;
        case HY_INIT_ONES: hy_fill_const(p->value, 1.0f); break;
        case HY_INIT_CONST: hy_fill_const(p->value, p->init.value); break;
        case HY_INIT_UNIFORM: hy_fill_uniform(p->value, rng, -p->init.value, p->init.value); break;
        case HY_INIT_CUSTOM: break;
        }
    }
}

void hy_params_zero_grads(hy_param_table *t) {
    if (t->device == HY_CUDA)
        hy_cuda_memset(t->grads, 0, hy_params_bytes(t));
    else
        memset(t->grads, 0, hy_params_bytes(t));
}

void hy_params_bind(hy_param_table *t, hy_tape *tape) {
    for (int i = 0; i < t->n; i++) hy_tape_bind_grad(tape, t->p[i].value, t->p[i].grad);
}

void hy_params_print(const hy_param_table *t, FILE *f) {
    static const char *init_names[] = {"normal", "zeros", "ones", "const", "uniform", "custom"};
    for (int i = 0; i < t->n; i++) {
        const hy_param *p = &t->p[i];
        char shape[64];
        int k = snprintf(shape, sizeof shape, "(");
        for (int d = 0; d < p->ndim; d++)
            k += snprintf(shape + k, sizeof shape - k, d ? ", %lld" : "%lld", (long long)p->shape[d]);
        snprintf(shape + k, sizeof shape - k, ")");
        fprintf(f, "  %-44s %-16s %-5s wd x%.0f  init %s %.4g\n", p->name, shape,
                p->group == HY_GROUP_MUON ? "muon" : "adamw", p->weight_decay,
                init_names[p->init.kind], p->init.value);
    }
    fprintf(f, "  %d tensors, %lld parameters\n", t->n, (long long)hy_params_count(t));
}

int64_t hy_params_count(const hy_param_table *t) {
    int64_t total = 0;
    for (int i = 0; i < t->n; i++) {
        int64_t n = 1;
        for (int d = 0; d < t->p[i].ndim; d++) n *= t->p[i].shape[d];
        total += n;
    }
    return total;
}

size_t hy_params_half_bytes(const hy_param_table *t) { return (t->numel + 16) * sizeof(uint16_t); }

void hy_params_alloc_half(hy_param_table *t, hy_arena *a) {
    HY_CHECK(t->values && t->device == HY_CUDA && a->device == HY_CUDA,
             "params: a bf16 copy is for GPU tables, after hy_params_alloc");
    t->half = (uint16_t *)hy_arena_calloc(a, hy_params_half_bytes(t));
    for (int i = 0; i < t->n; i++) t->p[i].value->half = t->half + t->p[i].offset;
    hy_params_refresh_half(t);
}

void hy_params_refresh_half(hy_param_table *t) {
    if (t->half) hy_cuda_f32_to_bf16(t->values, t->half, t->numel, NULL);
}

static void copy_flat(float *dst, hy_device dd, const float *src, hy_device sd, size_t bytes) {
    if (dd == HY_CPU && sd == HY_CPU)
        memcpy(dst, src, bytes);
    else if (dd == HY_CUDA && sd == HY_CPU)
        hy_cuda_memcpy_h2d(dst, src, bytes);
    else if (dd == HY_CPU && sd == HY_CUDA)
        hy_cuda_memcpy_d2h(dst, src, bytes);
    else
        hy_cuda_memcpy_d2d(dst, src, bytes);
}

static void check_same_layout(const hy_param_table *a, const hy_param_table *b) {
    HY_CHECK(a->n == b->n && a->numel == b->numel && a->values && b->values,
             "params: copy between tables of different layouts (%d vs %d tensors)", a->n, b->n);
}

void hy_params_copy_values(hy_param_table *dst, const hy_param_table *src) {
    check_same_layout(dst, src);
    copy_flat(dst->values, dst->device, src->values, src->device, hy_params_bytes(dst));
    hy_params_refresh_half(dst);
}

void hy_params_copy_grads(hy_param_table *dst, const hy_param_table *src) {
    check_same_layout(dst, src);
    copy_flat(dst->grads, dst->device, src->grads, src->device, hy_params_bytes(dst));
}
