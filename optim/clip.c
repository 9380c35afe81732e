// clip.c: gradient norm and clipping, per parameter so the padding between
// parameters in the flat buffer never counts.
#include "clip.h"

#include <math.h>

#include "../autograd/check.h"

static size_t param_numel(const hy_param *p) {
    size_t n = 1;
    for (int d = 0; d < p->ndim; d++) n *= (size_t)p->shape[d];
    return n;
}

static void require_host(const hy_param_table *t, const char *what) {
    HY_CHECK(t->grads != NULL, "%s: the parameter table has no gradients allocated", what);
    HY_REQUIRE(t->device == HY_CPU, "%s: the CPU version was given a %s table", what,
               hy_device_name(t->device));
}

float hy_grad_norm(const hy_param_table *t) {
    require_host(t, "grad_norm");
    double ss = 0;
    for (int i = 0; i < t->n; i++) {
        const float *g = t->grads + t->p[i].offset;
        size_t n = param_numel(&t->p[i]);
        double s = 0;
#pragma omp parallel for reduction(+ : s) if (n >= ((size_t)1 << 16))
        for (size_t j = 0; j < n; j++) s += (double)g[j] * g[j];
        ss += s;
    }
    return (float)sqrt(ss);
}

float hy_clip_grad_norm(hy_param_table *t, float max_norm) {
    float norm = hy_grad_norm(t);
    if (!(max_norm > 0) || !isfinite(norm) || norm <= max_norm) return norm;
    float scale = (float)((double)max_norm / (double)norm);
    for (int i = 0; i < t->n; i++) {
        float *g = t->grads + t->p[i].offset;
        size_t n = param_numel(&t->p[i]);
        for (size_t j = 0; j < n; j++) g[j] *= scale;
    }
    return norm;
}

int hy_grads_finite(const hy_param_table *t) {
    require_host(t, "grads_finite");
    for (int i = 0; i < t->n; i++) {
        const float *g = t->grads + t->p[i].offset;
        size_t n = param_numel(&t->p[i]);
        for (size_t j = 0; j < n; j++)
            if (!isfinite(g[j])) return 0;
    }
    return 1;
}
