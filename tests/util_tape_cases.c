// util_tape_cases.c: the case harness of the GPU tape-op tests (util_tape_cases.h).
#include "util_tape_cases.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../autograd/rng.h"
#include "../cuda/hy_cuda.h"
#include "../cuda/hy_cuda_blas.h"
#include "../cuda/hy_cuda_ops.h"
#include "harness.h"

void tape_need_gpu(void) {
    if (!hy_cuda_built()) hy_test_skip("built without CUDA");
    if (hy_cuda_device_count() == 0) hy_test_skip("no GPU");
}

static int64_t numel_of(int ndim, const int64_t *shape) {
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    return n;
}

// The owner's shape: the op's shape with row0 more rows.
static int64_t owner_numel(const in_spec *s) {
    int64_t shape[HY_MAX_DIMS];
    memcpy(shape, s->shape, sizeof shape);
    shape[0] += s->row0;
    return numel_of(s->ndim, shape);
}

// Host values of one case, shared by both devices.
typedef struct {
    float *v[MAX_IN];    // float inputs (owner numel), rounded to bf16 for ACT
    int32_t *id[MAX_IN];  // IDS inputs
    float *seed;         // d loss / d output, the output's numel
} case_data;

// Results of one device.
typedef struct {
    hy_dtype out_dtype;
    int64_t n_out;
    float *out;           // (n_out)
    float *grad[MAX_IN];  // owner numel, or NULL without a gradient
    int infer_same;       // the tape-disabled forward gave the same bits
} case_result;

// ================================================================ helpers
static void upcast_backward(hy_tape *t, hy_node *n) {
    const float *dy = hy_f32(hy_grad(t, n->out[0]));
    hy_tensor *dx = hy_grad_acc(t, n->in[0]);
    if (dx) hy_cuda_add_bwd((size_t)hy_numel(n->in[0]), dy, hy_f32(dx), NULL, NULL);
}

hy_tensor *tape_upcast(hy_tape *t, hy_tensor *x) {
    hy_tensor *y = hy_tape_new(t, HY_F32, x->ndim, x->shape, "upcast");
    hy_cuda_bf16_to_f32(x->data, hy_f32(y), (size_t)hy_numel(x), NULL);
    hy_tape_record(t, "upcast", upcast_backward, &x, 1, &y, 1);
    return y;
}

void tape_env_init(tape_env *e, hy_device dev) {
    e->dev = dev;
    hy_arena_init(&e->in, "tape-ops-in", dev, (size_t)16 << 20);
    hy_arena_init(&e->acts, "tape-ops-acts", dev, (size_t)32 << 20);
    hy_arena_init(&e->scratch, "tape-ops-scratch", dev, (size_t)32 << 20);
    hy_tape_init(&e->tape, &e->acts, &e->scratch, 128, 256);
}

void tape_env_free(tape_env *e) {
    hy_tape_free(&e->tape);
    hy_arena_free(&e->in);
    hy_arena_free(&e->acts);
    hy_arena_free(&e->scratch);
}

void tape_poison(tape_env *e) {
    if (e->dev != HY_CUDA) return;
    hy_cuda_memset(e->acts.base, 0xff, e->acts.cap);
    hy_cuda_memset(e->scratch.base, 0xff, e->scratch.cap);
}

void tape_zero(hy_tensor *t) {
    if (t->device == HY_CUDA)
        hy_cuda_memset(t->data, 0, hy_nbytes(t));
    else
        memset(t->data, 0, hy_nbytes(t));
}

float *tape_to_host(const hy_tensor *t) {
    float *h = (float *)hy_xcalloc((size_t)hy_numel(t) + 1, sizeof(float));
    if (t->device == HY_CUDA) hy_cuda_synchronize();
    hy_tensor_to_host_f32(t, h);
    return h;
}

// Run case `c` on `dev`.
static void run_case(const op_case *c, const case_data *d, hy_device dev, case_result *r) {
    memset(r, 0, sizeof *r);
    tape_env e;
    tape_env_init(&e, dev);
    hy_tensor *x[MAX_IN] = {0}, *g[MAX_IN] = {0};
    for (int i = 0; i < c->n_in; i++) {
        const in_spec *s = &c->in[i];
        int64_t shape[HY_MAX_DIMS];
        memcpy(shape, s->shape, sizeof shape);
        shape[0] += s->row0;
        hy_dtype dt = s->kind == IDS ? HY_I32 : s->kind == ACT ? hy_act_dtype(dev) : HY_F32;
        hy_tensor *owner = hy_tensor_new(&e.in, dt, s->ndim, shape, s->name);
        if (s->kind == IDS) {
            if (dev == HY_CUDA)
                hy_cuda_memcpy_h2d(owner->data, d->id[i], hy_nbytes(owner));
            else
                memcpy(owner->data, d->id[i], hy_nbytes(owner));
        } else {
            hy_tensor_from_host_f32(owner, d->v[i]);
        }
        if (s->grad) {
            g[i] = hy_tensor_new(&e.in, HY_F32, s->ndim, shape, s->name);  // f32 always
            tape_zero(g[i]);
            hy_tape_bind_grad(&e.tape, owner, g[i]);
        }
        x[i] = s->row0 > 0 ? hy_view_rows(&e.in, owner, s->row0, s->shape[0]) : owner;
    }
    tape_poison(&e);
    hy_tensor *y = c->fn(&e.tape, x, c->arg);
    r->out_dtype = y->dtype;
    r->n_out = hy_numel(y);
    r->out = tape_to_host(y);

    // Inference: the same forward with the tape disabled saves nothing.
    e.tape.enabled = 0;
    hy_tensor *y2 = c->fn(&e.tape, x, c->arg);
    e.tape.enabled = 1;
    float *out2 = tape_to_host(y2);
    r->infer_same = hy_numel(y2) == r->n_out &&
                    memcmp(out2, r->out, (size_t)r->n_out * sizeof(float)) == 0;
    free(out2);

    if (y->dtype == HY_BF16) y = tape_upcast(&e.tape, y);
    hy_tape_backward_seed(&e.tape, y, d->seed);
    for (int i = 0; i < c->n_in; i++)
        if (g[i]) r->grad[i] = tape_to_host(g[i]);
    tape_env_free(&e);
}

static void result_free(case_result *r) {
    free(r->out);
    for (int i = 0; i < MAX_IN; i++) free(r->grad[i]);
}

static void expect_err(const char *cfg, const char *what, double err, double tol) {
    printf("  %-40s %-12s max rel err %.3e (tol %.0e)%s\n", cfg, what, err, tol,
           err <= tol ? "" : (err != err ? "  <- NaN: an element was not written" : "  <- FAIL"));
    HY_ASSERT(err <= tol, "%s: %s max relative error %.3e is above %.0e%s", cfg, what, err, tol,
              err != err ? " (NaN: an element was left unwritten, or the op made a NaN)" : "");
}

// Draw the inputs and the seed, run both devices, compare.
static void check_case(const op_case *c, uint64_t seed) {
    hy_rng r;
    hy_rng_seed(&r, seed);
    case_data d;
    memset(&d, 0, sizeof d);
    for (int i = 0; i < c->n_in; i++) {
        const in_spec *s = &c->in[i];
        int64_t n = owner_numel(s);
        if (s->kind == IDS) {
            d.id[i] = (int32_t *)hy_xcalloc((size_t)n + 1, sizeof(int32_t));
            for (int64_t k = 0; k < n; k++)
                d.id[i][k] = (int32_t)hy_rng_below(&r, (uint64_t)s->id_below);
            continue;
        }
        d.v[i] = (float *)hy_xcalloc((size_t)n + 1, sizeof(float));
        float std = s->std > 0 ? s->std : 1.0f;
        for (int64_t k = 0; k < n; k++) {
            float v = std * hy_rng_normal(&r);
            d.v[i][k] = s->kind == ACT ? hy_bf16_to_f32(hy_f32_to_bf16(v)) : v;
        }
    }
    case_result cpu, gpu;
    // The seed's size is the output's: run the CPU side first with a
    // provisional seed buffer large enough for any output here.
    size_t seed_cap = (size_t)1 << 20;
    d.seed = (float *)hy_xcalloc(seed_cap, sizeof(float));
    for (size_t k = 0; k < seed_cap; k++) d.seed[k] = hy_rng_normal(&r);
    run_case(c, &d, HY_CPU, &cpu);
    HY_CHECK((size_t)cpu.n_out <= seed_cap, "test: output of %lld elements is too large",
             (long long)cpu.n_out);
    run_case(c, &d, HY_CUDA, &gpu);

    double tol_out = c->tol_out > 0 ? c->tol_out : 1e-2;
    double tol_grad = c->tol_grad > 0 ? c->tol_grad : 2e-2;
    HY_ASSERT(gpu.out_dtype == c->gpu_out, "%s: the GPU output is %s, expected %s", c->cfg,
              hy_dtype_name(gpu.out_dtype), hy_dtype_name(c->gpu_out));
    HY_ASSERT(cpu.out_dtype == HY_F32, "%s: the CPU output is %s", c->cfg,
              hy_dtype_name(cpu.out_dtype));
    HY_ASSERT(gpu.n_out == cpu.n_out, "%s: GPU output has %lld elements, CPU %lld", c->cfg,
              (long long)gpu.n_out, (long long)cpu.n_out);
    int cpu_finite = 1;
    for (int64_t k = 0; k < cpu.n_out; k++)
        if (!isfinite(cpu.out[k])) cpu_finite = 0;
    HY_ASSERT(cpu_finite, "%s: the CPU reference output is not finite", c->cfg);
    expect_err(c->cfg, "output", hy_max_rel_err_f(gpu.out, cpu.out, (long)cpu.n_out), tol_out);
    for (int i = 0; i < c->n_in; i++) {
        if (!c->in[i].grad) continue;
        char what[64];
        snprintf(what, sizeof what, "d %s", c->in[i].name);
        expect_err(c->cfg, what,
                   hy_max_rel_err_f(gpu.grad[i], cpu.grad[i], (long)owner_numel(&c->in[i])),
                   tol_grad);
    }
    printf("  %-40s %-12s %s\n", c->cfg, "no-tape fwd",
           gpu.infer_same ? "same bits" : "DIFFERENT  <- FAIL");
    HY_ASSERT(gpu.infer_same, "%s: the forward with the tape disabled differs", c->cfg);
    HY_ASSERT(cpu.infer_same, "%s: the CPU forward with the tape disabled differs", c->cfg);
    result_free(&cpu);
    result_free(&gpu);
    for (int i = 0; i < MAX_IN; i++) {
        free(d.v[i]);
        free(d.id[i]);
    }
    free(d.seed);
}

void tape_check_cases(const op_case *cases, int n, uint64_t seed) {
    tape_need_gpu();
    for (int i = 0; i < n; i++) check_case(&cases[i], seed + (uint64_t)i);
}
