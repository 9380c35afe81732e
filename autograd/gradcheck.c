#include "gradcheck.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "rng.h"

hy_gc_opts hy_gc_defaults(void) {
    hy_gc_opts o = {5e-3f, 1e-2f, 1e-4f, 256, 1234, 0};
    return o;
}

typedef struct {
    hy_arena acts, scratch;
    hy_tape tape;
} gc_env;

static double eval_loss(gc_env *e, hy_gc_fn fn, void *user, hy_tensor **in, const float *r) {
    hy_tape_reset(&e->tape);
    e->tape.enabled = 0;
    hy_tensor *out = fn(&e->tape, in, user);
    e->tape.enabled = 1;
    const float *y = hy_f32(out);
    double L = 0;
    for (int64_t i = 0, n = hy_numel(out); i < n; i++) L += (double)y[i] * r[i];
    return L;
}

int hy_gradcheck(const char *name, hy_gc_fn fn, void *user, hy_tensor **inputs, int n_inputs,
                 const hy_gc_opts *opts) {
    hy_gc_opts o = opts ? *opts : hy_gc_defaults();
    gc_env e;
    hy_arena_init(&e.acts, "gc-acts", HY_CPU, (size_t)256 << 20);
    hy_arena_init(&e.scratch, "gc-scratch", HY_CPU, (size_t)256 << 20);
    hy_tape_init(&e.tape, &e.acts, &e.scratch, 4096, 8192);

    // Analytic gradients: bind a host buffer to every checked input.
    float **analytic = (float **)hy_xcalloc((size_t)n_inputs, sizeof(float *));
    hy_tensor **bound = (hy_tensor **)hy_xcalloc((size_t)n_inputs, sizeof(hy_tensor *));
    for (int i = 0; i < n_inputs; i++) {
        hy_tensor *x = inputs[i];
        if (!x->requires_grad || x->dtype != HY_F32) continue;
        HY_CHECK(x->device == HY_CPU, "gradcheck: '%s' must be on the CPU", x->name);
        analytic[i] = (float *)hy_xcalloc((size_t)hy_numel(x), sizeof(float));
        bound[i] = (hy_tensor *)hy_xcalloc(1, sizeof(hy_tensor));
        *bound[i] = *x;
        bound[i]->data = analytic[i];
        x->slot = -1;
        hy_tape_bind_grad(&e.tape, x, bound[i]);
    }
    hy_tensor *out = fn(&e.tape, inputs, user);
    int64_t n_out = hy_numel(out);
    float *r = (float *)hy_xmalloc((size_t)n_out * sizeof(float));
    hy_rng rng;
    hy_rng_seed(&rng, o.seed);
    for (int64_t i = 0; i < n_out; i++) r[i] = hy_rng_normal(&rng);
    hy_tape_backward_seed(&e.tape, out, r);

    int bad = 0;
    for (int i = 0; i < n_inputs; i++) {
        if (!analytic[i]) continue;
        hy_tensor *x = inputs[i];
        float *xv = hy_f32(x);
        int64_t n = hy_numel(x);
        int64_t count = (o.max_elems > 0 && n > o.max_elems) ? o.max_elems : n;
        double worst_ratio = 0, worst_a = 0, worst_n = 0;  // worst err / allowed
        int64_t worst_j = -1, fails = 0;
        for (int64_t c = 0; c < count; c++) {
            int64_t j = count == n ? c : (int64_t)hy_rng_below(&rng, (uint64_t)n);
            float x0 = xv[j];
            float h = o.h * fmaxf(1.0f, fabsf(x0));
            xv[j] = x0 + h;
            double lp = eval_loss(&e, fn, user, inputs, r);
            xv[j] = x0 - h;
            double lm = eval_loss(&e, fn, user, inputs, r);
            xv[j] = x0;
            // The step actually taken in float, not the nominal one.
            double step = (double)(x0 + h) - (double)(x0 - h);
            double num = (lp - lm) / step, ana = analytic[i][j];
            double allowed = o.atol + o.rtol * fmax(fabs(ana), fabs(num));
            double ratio = fabs(ana - num) / allowed;
            if (ratio > 1) fails++;
            if (o.verbose)
                printf("    %s[%lld]: analytic % .6e numeric % .6e\n", x->name, (long long)j, ana,
                       num);
            if (ratio > worst_ratio) worst_ratio = ratio, worst_a = ana, worst_n = num, worst_j = j;
        }
        printf("  gradcheck %s: d/d%s %lld of %lld elements, %lld mismatched; worst error %.2f of "
               "the allowed",
               name, x->name, (long long)count, (long long)n, (long long)fails, worst_ratio);
        if (fails)
            printf(" ([%lld]: analytic %.6e numeric %.6e)", (long long)worst_j, worst_a, worst_n);
        printf("\n");
        bad += (int)fails;
        x->requires_grad = 1;
        free(analytic[i]);
        free(bound[i]);
    }
    free(analytic);
    free(bound);
    free(r);
    hy_tape_free(&e.tape);
    hy_arena_free(&e.acts);
    hy_arena_free(&e.scratch);
    return bad;
}
