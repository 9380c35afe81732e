// GPU gated delta rule (cuda/gdn.cu) against the CPU op hy_gdn (layers/gdn.c, itself checked
// against a float64 recurrence in test_gdn.c) run in fp32 on the same bf16-rounded inputs:
// forward output and final state, every gradient, the decoding step, misuse errors, and a
// benchmark that asserts nothing. Every GPU output, gradient and the workspace are poisoned
// (0xFF bytes: NaN in bf16 and fp32) before each run, so an element a kernel forgets to write,
// or a workspace element a kernel reads before another wrote it, fails the comparison.
// Skipped (exit 77) without a GPU or without a CUDA build.
//
// Tolerances (relative: max |gpu - cpu| / max |cpu| over the tensor): o 1e-2 (bf16 output,
// bf16 chunk states and bf16 tensor-core operands), S_out 1e-3 (the state recurrence is fp32
// accurate: split-bf16 products, fp32 W/U; expect ~1e-5), gradients 2e-2.
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../autograd/rng.h"
#include "../autograd/tape.h"
#include "../cuda/hy_cuda.h"
#include "../cuda/hy_cuda_gdn.h"
#include "../layers/gdn.h"
#include "harness.h"

static void need_gpu(void) {
    if (!hy_cuda_built()) hy_test_skip("built without CUDA");
    if (hy_cuda_device_count() == 0) hy_test_skip("no GPU");
}

// ---------------------------------------------------------------- problems
// Host inputs in the op's layouts. q, k, v, dO hold bf16-representable values (what the GPU
// gets); alpha, beta, S0, dS are fp32. S0 / dS NULL: none.
typedef struct {
    int B, T, H, D;
    float *q, *k, *v, *alpha, *beta, *S0, *dO, *dS;
} problem;

static size_t n_tok(const problem *p) { return (size_t)p->B * p->T * p->H * p->D; }
static size_t n_a(const problem *p) { return (size_t)p->B * p->T * p->H; }
static size_t n_s(const problem *p) { return (size_t)p->B * p->H * p->D * p->D; }

static float round_bf16(float x) { return hy_bf16_to_f32(hy_f32_to_bf16(x)); }

static float *rand_normal(hy_rng *r, size_t n, float std, int bf16) {
    float *x = (float *)hy_xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        x[i] = std * hy_rng_normal(r);
        if (bf16) x[i] = round_bf16(x[i]);
    }
    return x;
}

// Unit rows (as hy_l2norm_heads gives the model), then rounded to bf16.
static float *rand_unit_rows(hy_rng *r, size_t rows, int D) {
    float *x = rand_normal(r, rows * D, 1.0f, 0);
    for (size_t i = 0; i < rows; i++) {
        double ss = 0;
        for (int j = 0; j < D; j++) ss += (double)x[i * D + j] * x[i * D + j];
        for (int j = 0; j < D; j++) x[i * D + j] = round_bf16((float)(x[i * D + j] / sqrt(ss)));
    }
    return x;
}

static float *rand_uniform(hy_rng *r, size_t n, float lo, float hi) {
    float *x = (float *)hy_xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = lo + (hi - lo) * hy_rng_uniform(r);
    return x;
}

static problem make_problem(uint64_t seed, int B, int T, int H, int D, float alpha_lo, int with_s0,
                            int with_ds) {
    hy_rng r;
    hy_rng_seed(&r, seed);
    problem p = {B, T, H, D, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL};
    size_t rows = (size_t)B * T * H;
    p.q = rand_unit_rows(&r, rows, D);
    p.k = rand_unit_rows(&r, rows, D);
    p.v = rand_normal(&r, rows * D, 1.0f, 1);
    p.alpha = rand_uniform(&r, rows, alpha_lo, 1.0f);
    p.beta = rand_uniform(&r, rows, 0.1f, 0.9f);
    p.S0 = with_s0 ? rand_normal(&r, n_s(&p), 0.5f, 0) : NULL;
    p.dO = rand_normal(&r, rows * D, 1.0f, 1);
    p.dS = with_ds ? rand_normal(&r, n_s(&p), 1.0f, 0) : NULL;
    return p;
}

static void free_problem(problem *p) {
    float *all[8] = {p->q, p->k, p->v, p->alpha, p->beta, p->S0, p->dO, p->dS};
    for (int i = 0; i < 8; i++) free(all[i]);
}

// ---------------------------------------------------------------- CPU reference
enum { G_Q, G_K, G_V, G_ALPHA, G_BETA, G_S0, N_IN };
static const char *in_names[N_IN] = {"q", "k", "v", "alpha", "beta", "S0"};

typedef struct {
    float *o, *S, *g[N_IN];  // g[] NULL when not computed; g[G_S0] NULL without S0
} result;

static void result_free(result *r) {
    free(r->o);
    free(r->S);
    for (int i = 0; i < N_IN; i++) free(r->g[i]);
}

static float *dup_f(const float *x, size_t n) {
    float *y = (float *)hy_xmalloc(n * sizeof(float));
    memcpy(y, x, n * sizeof(float));
    return y;
}

// hy_gdn (chunk 64) forward; with backward, the loss is sum(o * dO) + sum(S_T * dS) (the
// second term only when p->dS is set; S_T is asked for whenever dS is set or want_state).
static result cpu_run(const problem *p, int backward, int want_state) {
    hy_arena in, gr, acts, scratch;
    hy_arena_init(&in, "gdn-inputs", HY_CPU, (size_t)64 << 20);
    hy_arena_init(&gr, "gdn-grads", HY_CPU, (size_t)64 << 20);
    hy_arena_init(&acts, "gdn-acts", HY_CPU, (size_t)64 << 20);
    hy_arena_init(&scratch, "gdn-scratch", HY_CPU, (size_t)1 << 30);  // touched lazily
    hy_tape tape;
    hy_tape_init(&tape, &acts, &scratch, 64, 256);
    tape.enabled = backward;
    int64_t shp[N_IN][4] = {{p->B, p->T, p->H, p->D}, {p->B, p->T, p->H, p->D},
                            {p->B, p->T, p->H, p->D}, {p->B, p->T, p->H, 0},
                            {p->B, p->T, p->H, 0},    {p->B, p->H, p->D, p->D}};
    int nd[N_IN] = {4, 4, 4, 3, 3, 4};
    const float *data[N_IN] = {p->q, p->k, p->v, p->alpha, p->beta, p->S0};
    hy_tensor *x[N_IN] = {NULL}, *g[N_IN] = {NULL};
    for (int i = 0; i < N_IN; i++) {
        if (!data[i]) continue;
        x[i] = hy_tensor_new(&in, HY_F32, nd[i], shp[i], in_names[i]);
        memcpy(hy_f32(x[i]), data[i], hy_nbytes(x[i]));
        if (backward) {
            g[i] = hy_zeros_like(&gr, x[i], in_names[i]);
            hy_tape_bind_grad(&tape, x[i], g[i]);
        }
    }
    int state = want_state || p->dS;
    hy_tensor *S = NULL;
    hy_tensor *o = hy_gdn(&tape, x[G_Q], x[G_K], x[G_V], x[G_ALPHA], x[G_BETA], x[G_S0], 64,
                          state ? &S : NULL);
    if (backward) {
        if (p->dS) memcpy(hy_f32(hy_grad_acc(&tape, S)), p->dS, n_s(p) * sizeof(float));
        hy_tape_backward_seed(&tape, o, p->dO);
    }
    result r;
    memset(&r, 0, sizeof r);
    r.o = dup_f(hy_f32(o), n_tok(p));
    r.S = S ? dup_f(hy_f32(S), n_s(p)) : NULL;
    for (int i = 0; i < N_IN; i++) r.g[i] = g[i] ? dup_f(hy_f32(g[i]), hy_numel(g[i])) : NULL;
    hy_tape_free(&tape);
    hy_arena_free(&in);
    hy_arena_free(&gr);
    hy_arena_free(&acts);
    hy_arena_free(&scratch);
    return r;
}

// ---------------------------------------------------------------- GPU runs
static void *dev_bf16(const float *x, size_t n) {
    uint16_t *h = (uint16_t *)hy_xmalloc(n * sizeof(uint16_t));
    for (size_t i = 0; i < n; i++) h[i] = hy_f32_to_bf16(x[i]);
    void *d = hy_cuda_malloc(n * sizeof(uint16_t));
    hy_cuda_memcpy_h2d(d, h, n * sizeof(uint16_t));
    free(h);
    return d;
}

static float *dev_f32(const float *x, size_t n) {
    if (!x) return NULL;
    float *d = (float *)hy_cuda_malloc(n * sizeof(float));
    hy_cuda_memcpy_h2d(d, x, n * sizeof(float));
    return d;
}

// Device memory poisoned with 0xFF bytes (NaN as bf16 and as fp32).
static void *dev_poison(size_t bytes) {
    void *d = hy_cuda_malloc(bytes);
    hy_cuda_memset(d, 0xFF, bytes);
    return d;
}

static float *host_f32(const float *d, size_t n) {
    float *h = (float *)hy_xmalloc(n * sizeof(float));
    hy_cuda_memcpy_d2h(h, d, n * sizeof(float));
    return h;
}

static float *host_bf16(const void *d, size_t n) {
    uint16_t *h = (uint16_t *)hy_xmalloc(n * sizeof(uint16_t));
    hy_cuda_memcpy_d2h(h, d, n * sizeof(uint16_t));
    float *f = (float *)hy_xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) f[i] = hy_bf16_to_f32(h[i]);
    free(h);
    return f;
}

typedef struct {
    void *q, *k, *v, *dO;
    float *alpha, *beta, *S0, *dS;
} dev_inputs;

static dev_inputs upload(const problem *p) {
    dev_inputs d;
    d.q = dev_bf16(p->q, n_tok(p));
    d.k = dev_bf16(p->k, n_tok(p));
    d.v = dev_bf16(p->v, n_tok(p));
    d.dO = dev_bf16(p->dO, n_tok(p));
    d.alpha = dev_f32(p->alpha, n_a(p));
    d.beta = dev_f32(p->beta, n_a(p));
    d.S0 = dev_f32(p->S0, n_s(p));
    d.dS = dev_f32(p->dS, n_s(p));
    return d;
}

static void free_dev_inputs(dev_inputs *d) {
    void *all[8] = {d->q, d->k, d->v, d->dO, d->alpha, d->beta, d->S0, d->dS};
    for (int i = 0; i < 8; i++)
        if (all[i]) hy_cuda_free(all[i]);
}

// Forward on the GPU: o (always) and S_out (when want_state).
static result gpu_fwd(const problem *p, const dev_inputs *d, int want_state) {
    size_t wsb = hy_cuda_gdn_workspace_bytes(p->B, p->T, p->H, p->D, 64);
    void *ws = dev_poison(wsb), *o = dev_poison(n_tok(p) * 2);
    float *S = want_state ? (float *)dev_poison(n_s(p) * 4) : NULL;
    hy_cuda_gdn_fwd(p->B, p->T, p->H, p->D, 64, d->q, d->k, d->v, d->alpha, d->beta, d->S0, o, S,
                    ws, NULL);
    hy_cuda_synchronize();
    result r;
    memset(&r, 0, sizeof r);
    r.o = host_bf16(o, n_tok(p));
    r.S = S ? host_f32(S, n_s(p)) : NULL;
    hy_cuda_free(ws);
    hy_cuda_free(o);
    if (S) hy_cuda_free(S);
    return r;
}

// Backward on the GPU for the loss of cpu_run: every gradient (dS0 when S0 is set). saved = 0:
// hy_cuda_gdn_bwd, which recomputes the forward's chunk results in its own workspace; saved = 1:
// hy_cuda_gdn_fwd into exactly hy_cuda_gdn_saved_bytes() of workspace, then
// hy_cuda_gdn_bwd_saved reading it with the rest of the workspace as its own (the training
// path). Every workspace starts poisoned, so a kernel that reads what no kernel wrote fails.
static result gpu_bwd(const problem *p, const dev_inputs *d, int saved) {
    size_t wsb = hy_cuda_gdn_workspace_bytes(p->B, p->T, p->H, p->D, 64);
    size_t sb = saved ? hy_cuda_gdn_saved_bytes(p->B, p->T, p->H, p->D, 64) : 0;
    HY_ASSERT(sb < wsb, "saved bytes %zu of a workspace of %zu", sb, wsb);
    void *ws = dev_poison(wsb - sb), *sv = saved ? dev_poison(sb) : NULL;
    if (saved) {
        void *o = dev_poison(n_tok(p) * 2);
        hy_cuda_gdn_fwd(p->B, p->T, p->H, p->D, 64, d->q, d->k, d->v, d->alpha, d->beta, d->S0,
                        o, NULL, sv, NULL);
        hy_cuda_free(o);
    }
    float *g[N_IN];
    size_t n[N_IN] = {n_tok(p), n_tok(p), n_tok(p), n_a(p), n_a(p), n_s(p)};
    for (int i = 0; i < N_IN; i++)
        g[i] = (i == G_S0 && !p->S0) ? NULL : (float *)dev_poison(n[i] * 4);
    if (saved)
        hy_cuda_gdn_bwd_saved(p->B, p->T, p->H, p->D, 64, d->q, d->k, d->v, d->alpha, d->beta,
                              d->S0, d->dO, d->dS, g[G_Q], g[G_K], g[G_V], g[G_ALPHA], g[G_BETA],
                              g[G_S0], sv, ws, NULL);
    else
        hy_cuda_gdn_bwd(p->B, p->T, p->H, p->D, 64, d->q, d->k, d->v, d->alpha, d->beta, d->S0,
                        d->dO, d->dS, g[G_Q], g[G_K], g[G_V], g[G_ALPHA], g[G_BETA], g[G_S0], ws,
                        NULL);
    hy_cuda_synchronize();
    result r;
    memset(&r, 0, sizeof r);
    for (int i = 0; i < N_IN; i++) {
        r.g[i] = g[i] ? host_f32(g[i], n[i]) : NULL;
        if (g[i]) hy_cuda_free(g[i]);
    }
    hy_cuda_free(ws);
    if (sv) hy_cuda_free(sv);
    return r;
}

// max |a - b| over the largest |ref|: the two GPU backwards' difference judged against the
// CPU gradient's scale. They run the same kernels on the same values; the tensor-core WY
// backward adds its sums in a fixed order, so with it they must agree exactly, and the
// reference one (7r.) differs only by the order of its shared-memory atomic sums. Where the
// true gradient is 0 (dalpha at T = 1 without S0) that is rounding residue differing between
// runs, whose ratio to the other run's residue would say nothing (the difference is then
// absolute).
static double max_diff_over_scale(const float *a, const float *b, const float *ref, long n) {
    double diff = 0, scale = 0;
    for (long i = 0; i < n; i++) {
        double e = fabs((double)a[i] - (double)b[i]);
        if (e > diff || e != e) diff = e;
        if (fabs((double)ref[i]) > scale) scale = fabs((double)ref[i]);
    }
    return diff / (scale > 0 ? scale : 1);
}

// ---------------------------------------------------------------- cases
typedef struct {
    int T, D, with_s0, with_ds;
    float alpha_lo;
    int all_configs;  // also run every kernel configuration below, not only the automatic one
} gcase;

// Kernel configurations (hy_cuda_gdn_set_test_options): the automatic one (the default WY
// kernels: the reference forward, the tensor-core backward), each block size of the sequential
// passes with the tensor-core WY kernels in both directions (the automatic choice depends on
// B * H and the GPU, and these small problems would otherwise only see 16), and the reference
// WY kernels in both. When only "wy-ref" passes, the tensor-core wy_kernel / wy_bwd_kernel are
// wrong; when only one "bv" fails, the state passes.
typedef struct {
    int bv, wy_ref;
    const char *name;
} gconfig;
static const gconfig configs[] = {
    {0, -1, "auto"}, {16, 0, "bv16"}, {32, 0, "bv32"}, {64, 0, "bv64"}, {0, 1, "wy-ref"}};
enum { N_CONFIGS = sizeof configs / sizeof configs[0] };

// T in {1, 63, 64, 65, 200, 1000} x S0 or not x D in {64, 128}, plus strong decay and losses
// without the state term.
static int make_cases(gcase *c) {
    const int Ts[6] = {1, 63, 64, 65, 200, 1000}, Ds[2] = {64, 128};
    int n = 0;
    for (int d = 0; d < 2; d++)
        for (int t = 0; t < 6; t++)
            for (int s = 0; s < 2; s++) {
                const int all =
                    s == 1 && ((Ds[d] == 64 && Ts[t] == 65) || (Ds[d] == 128 && Ts[t] == 200));
                c[n++] = (gcase){Ts[t], Ds[d], s, 1, 0.8f, all};
            }
    c[n++] = (gcase){1000, 128, 0, 1, 0.8f, 1};
    c[n++] = (gcase){300, 128, 1, 1, 0.3f, 1};  // strong decay
    c[n++] = (gcase){150, 64, 1, 1, 0.3f, 0};
    c[n++] = (gcase){129, 128, 1, 0, 0.8f, 0};  // loss on o only (no dS_out)
    c[n++] = (gcase){77, 64, 0, 0, 0.8f, 0};
    return n;
}

HY_TEST(gpu_gdn_fwd_vs_cpu, "gpu") {
    need_gpu();
    gcase cases[40];
    int n = make_cases(cases), runs = 0;
    double worst_o = 0, worst_s = 0;
    for (int i = 0; i < n; i++) {
        const gcase *c = &cases[i];
        problem p = make_problem(1000 + i, 2, c->T, 3, c->D, c->alpha_lo, c->with_s0, 0);
        int want_state = c->with_ds;  // also run without S_out
        result ref = cpu_run(&p, 0, 1);
        dev_inputs d = upload(&p);
        for (int cf = 0; cf < (c->all_configs ? N_CONFIGS : 1); cf++) {
            hy_cuda_gdn_set_test_options(configs[cf].bv, configs[cf].wy_ref);
            result got = gpu_fwd(&p, &d, want_state);
            double eo = hy_max_rel_err_f(got.o, ref.o, (long)n_tok(&p));
            double es = got.S ? hy_max_rel_err_f(got.S, ref.S, (long)n_s(&p)) : -1;
            printf("  fwd %-6s T=%4d D=%3d S0=%d alpha>=%.1f: o %.2e  S_out %s%.2e\n",
                   configs[cf].name, c->T, c->D, c->with_s0, c->alpha_lo, eo,
                   got.S ? "" : "(not asked) ", es < 0 ? 0.0 : es);
            HY_ASSERT(eo <= 1e-2, "fwd %s T=%d D=%d S0=%d: o relative error %.3g > 1e-2",
                      configs[cf].name, c->T, c->D, c->with_s0, eo);
            if (got.S)
                HY_ASSERT(es <= 1e-3, "fwd %s T=%d D=%d S0=%d: S_out relative error %.3g > 1e-3",
                          configs[cf].name, c->T, c->D, c->with_s0, es);
            if (eo > worst_o || eo != eo) worst_o = eo;
            if (es > worst_s || es != es) worst_s = es;
            result_free(&got);
            runs++;
        }
        result_free(&ref);
        free_dev_inputs(&d);
        free_problem(&p);
    }
    hy_cuda_gdn_set_test_options(0, -1);
    printf("  %d runs; worst relative error: o %.2e, S_out %.2e\n", runs, worst_o, worst_s);
}

// Both backward entry points against the CPU (2e-2), and the saved one against the
// recomputing one: equal bit for bit with the tensor-core WY backward, within 1e-5 of the CPU
// gradient's scale with the reference one (see max_diff_over_scale).
HY_TEST(gpu_gdn_bwd_vs_cpu, "gpu") {
    need_gpu();
    gcase cases[40];
    int n = make_cases(cases), runs = 0;
    double worst[N_IN] = {0}, worst_same = 0;
    for (int i = 0; i < n; i++) {
        const gcase *c = &cases[i];
        problem p = make_problem(2000 + i, 2, c->T, 3, c->D, c->alpha_lo, c->with_s0, c->with_ds);
        result ref = cpu_run(&p, 1, 0);
        dev_inputs d = upload(&p);
        size_t nel[N_IN] = {n_tok(&p), n_tok(&p), n_tok(&p), n_a(&p), n_a(&p), n_s(&p)};
        for (int cf = 0; cf < (c->all_configs ? N_CONFIGS : 1); cf++) {
            hy_cuda_gdn_set_test_options(configs[cf].bv, configs[cf].wy_ref);
            result got[2] = {gpu_bwd(&p, &d, 0), gpu_bwd(&p, &d, 1)};
            for (int sv = 0; sv < 2; sv++) {
                const char *how = sv ? "saved" : "recomputing";
                printf("  bwd %-11s %-6s T=%4d D=%3d S0=%d dS=%d alpha>=%.1f:", how,
                       configs[cf].name, c->T, c->D, c->with_s0, c->with_ds, c->alpha_lo);
                for (int g = 0; g < N_IN; g++) {
                    if (!ref.g[g]) continue;
                    double e = hy_max_rel_err_f(got[sv].g[g], ref.g[g], (long)nel[g]);
                    printf(" d%s %.2e", in_names[g], e);
                    HY_ASSERT(e <= 2e-2,
                              "bwd %s %s T=%d D=%d S0=%d dS=%d: d%s relative error %.3g > 2e-2",
                              how, configs[cf].name, c->T, c->D, c->with_s0, c->with_ds,
                              in_names[g], e);
                    if (e > worst[g] || e != e) worst[g] = e;
                    if (!sv) continue;
                    double es = max_diff_over_scale(got[1].g[g], got[0].g[g], ref.g[g],
                                                    (long)nel[g]);
                    const double bound = configs[cf].wy_ref == 1 ? 1e-5 : 0.0;
                    HY_ASSERT(es <= bound,
                              "bwd %s T=%d D=%d: d%s of the saved backward differs from the "
                              "recomputing one by %.3g > %g",
                              configs[cf].name, c->T, c->D, in_names[g], es, bound);
                    if (es > worst_same || es != es) worst_same = es;
                }
                printf("\n");
            }
            result_free(&got[0]);
            result_free(&got[1]);
            runs++;
        }
        result_free(&ref);
        free_dev_inputs(&d);
        free_problem(&p);
    }
    hy_cuda_gdn_set_test_options(0, -1);
    printf("  %d runs of both; worst relative error:", runs);
    for (int g = 0; g < N_IN; g++) printf(" d%s %.2e", in_names[g], worst[g]);
    printf("; saved against recomputing %.2e\n", worst_same);
}

HY_TEST(gpu_gdn_step_vs_cpu, "gpu") {
    need_gpu();
    const int B = 2, H = 3, steps = 37, Ds[3] = {64, 128, 48};
    for (int di = 0; di < 3; di++) {
        const int D = Ds[di];
        problem p = make_problem(3000 + di, B, steps, H, D, 0.8f, 1, 0);
        // The tokens of p are (B, T, H, D); step t takes (B, H, D) slices.
        size_t sz = (size_t)B * H * D;
        float *S = dup_f(p.S0, n_s(&p));
        float *qt = hy_xmalloc(sz * 4), *kt = hy_xmalloc(sz * 4), *vt = hy_xmalloc(sz * 4);
        float *at = hy_xmalloc(B * H * 4), *bt = hy_xmalloc(B * H * 4), *ot = hy_xmalloc(sz * 4);
        float *dS = dev_f32(p.S0, n_s(&p));
        void *dq = hy_cuda_malloc(sz * 2), *dk = hy_cuda_malloc(sz * 2);
        void *dv = hy_cuda_malloc(sz * 2);
        void *dout = hy_cuda_malloc(sz * 2);
        float *da = hy_cuda_malloc(B * H * 4), *db = hy_cuda_malloc(B * H * 4);
        double worst_o = 0;
        for (int t = 0; t < steps; t++) {
            for (int b = 0; b < B; b++) {
                size_t row = ((size_t)b * steps + t) * H;
                memcpy(qt + (size_t)b * H * D, p.q + row * D, sizeof(float) * H * D);
                memcpy(kt + (size_t)b * H * D, p.k + row * D, sizeof(float) * H * D);
                memcpy(vt + (size_t)b * H * D, p.v + row * D, sizeof(float) * H * D);
                memcpy(at + b * H, p.alpha + row, sizeof(float) * H);
                memcpy(bt + b * H, p.beta + row, sizeof(float) * H);
            }
            hy_gdn_step_cpu(B, H, D, D, qt, kt, vt, at, bt, S, ot);
            uint16_t *h = hy_xmalloc(sz * 2);
            float *srcs[3] = {qt, kt, vt};
            void *dsts[3] = {dq, dk, dv};
            for (int m = 0; m < 3; m++) {
                for (size_t i = 0; i < sz; i++) h[i] = hy_f32_to_bf16(srcs[m][i]);
                hy_cuda_memcpy_h2d(dsts[m], h, sz * 2);
            }
            free(h);
            hy_cuda_memcpy_h2d(da, at, B * H * 4);
            hy_cuda_memcpy_h2d(db, bt, B * H * 4);
            hy_cuda_memset(dout, 0xFF, sz * 2);
            hy_cuda_gdn_step(B, H, D, dq, dk, dv, da, db, dS, dout, NULL);
            float *og = host_bf16(dout, sz);
            double e = hy_max_rel_err_f(og, ot, (long)sz);
            if (e > worst_o || e != e) worst_o = e;
            free(og);
        }
        float *Sg = host_f32(dS, n_s(&p));
        double es = hy_max_rel_err_f(Sg, S, (long)n_s(&p));
        printf("  step D=%3d, %d tokens: o %.2e (worst step), S %.2e\n", D, steps, worst_o, es);
        HY_ASSERT(worst_o <= 1e-2, "step D=%d: o relative error %.3g > 1e-2", D, worst_o);
        HY_ASSERT(es <= 1e-4, "step D=%d: state relative error %.3g > 1e-4", D, es);
        free(Sg), free(S), free(qt), free(kt), free(vt), free(at), free(bt), free(ot);
        hy_cuda_free(dS), hy_cuda_free(dq), hy_cuda_free(dk), hy_cuda_free(dv);
        hy_cuda_free(dout), hy_cuda_free(da), hy_cuda_free(db);
        free_problem(&p);
    }
}

HY_TEST(gpu_gdn_bad_args, "gpu") {
    need_gpu();
    // Sizes are checked before any device access: no buffers needed for these.
    HY_EXPECT_ERROR(hy_cuda_gdn_workspace_bytes(1, 10, 2, 96, 64), HY_EXIT_USAGE, "head dim");
    HY_EXPECT_ERROR(hy_cuda_gdn_workspace_bytes(1, 10, 2, 128, 32), HY_EXIT_USAGE, "chunk");
    HY_EXPECT_ERROR(hy_cuda_gdn_fwd(1, 10, 2, 32, 64, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                                    NULL, NULL, NULL),
                    HY_EXIT_USAGE, "head dim");
    HY_EXPECT_ERROR(hy_cuda_gdn_bwd(1, 0, 2, 64, 64, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                                    NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
                    HY_EXIT_USAGE, "positive");
    HY_EXPECT_ERROR(hy_cuda_gdn_fwd(1, 10, 2, 64, 64, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                                    NULL, NULL, NULL),
                    HY_EXIT_USAGE, "must not be NULL");
    HY_EXPECT_ERROR(hy_cuda_gdn_saved_bytes(1, 10, 2, 64, 32), HY_EXIT_USAGE, "chunk");
    HY_EXPECT_ERROR(hy_cuda_gdn_bwd_saved(1, 10, 2, 96, 64, NULL, NULL, NULL, NULL, NULL, NULL,
                                          NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                                          NULL, NULL),
                    HY_EXIT_USAGE, "head dim");
}

// ---------------------------------------------------------------- timing (asserts nothing)
// Device buffer of n bf16 values tiled from a block of random ones (unit rows when unit).
static void *bench_bf16(hy_rng *r, size_t n, int D, int unit) {
    const size_t blk = (size_t)4096 * D;
    float *f = unit ? rand_unit_rows(r, 4096, D) : rand_normal(r, blk, 1.0f, 1);
    uint16_t *h = (uint16_t *)hy_xmalloc(n * 2);
    for (size_t i = 0; i < n; i++) h[i] = hy_f32_to_bf16(f[i % blk]);
    void *d = hy_cuda_malloc(n * 2);
    hy_cuda_memcpy_h2d(d, h, n * 2);
    free(h);
    free(f);
    return d;
}

HY_TEST(gpu_gdn_bench, "gpu") {
    need_gpu();
    // The three shapes of the GDN speed targets, then the first again with the reference WY
    // kernels (to see what the tensor-core ones save).
    const int shapes[4][4] = {
        {8, 2048, 16, 128}, {4, 4096, 16, 128}, {1, 32768, 16, 128}, {8, 2048, 16, 128}};
    char info[256];
    printf("  %s\n", hy_cuda_device_info(0, info, sizeof info));
    for (int s = 0; s < 4; s++) {
        const int B = shapes[s][0], T = shapes[s][1], H = shapes[s][2], D = shapes[s][3];
        if (s == 3) hy_cuda_gdn_set_test_options(0, 1);
        size_t n = (size_t)B * T * H * D, na = (size_t)B * T * H, ns = (size_t)B * H * D * D;
        hy_rng r;
        hy_rng_seed(&r, 77 + s);
        void *q = bench_bf16(&r, n, D, 1), *k = bench_bf16(&r, n, D, 1);
        void *v = bench_bf16(&r, n, D, 0), *dO = bench_bf16(&r, n, D, 0);
        float *ha = rand_uniform(&r, na, 0.9f, 1.0f), *hb = rand_uniform(&r, na, 0.1f, 0.9f);
        float *alpha = dev_f32(ha, na), *beta = dev_f32(hb, na);
        void *o = hy_cuda_malloc(n * 2);
        float *S = hy_cuda_malloc(ns * 4), *dS = hy_cuda_malloc(ns * 4);
        hy_cuda_memset(dS, 0, ns * 4);
        float *dq = hy_cuda_malloc(n * 4), *dk = hy_cuda_malloc(n * 4), *dv = hy_cuda_malloc(n * 4);
        float *da = hy_cuda_malloc(na * 4), *db = hy_cuda_malloc(na * 4);
        size_t wsb = hy_cuda_gdn_workspace_bytes(B, T, H, D, 64);
        void *ws = hy_cuda_malloc(wsb);
        double fwd = 0, fb = 0;
        hy_cuda_gdn_time(B, T, H, D, q, k, v, alpha, beta, NULL, o, S, dO, dS, dq, dk, dv, da, db,
                         NULL, ws, 3, 20, &fwd, &fb, NULL);
        printf("  (B, T, H, D) = (%d, %d, %d, %d)%s: fwd %.3f ms, fwd+bwd %.3f ms (median of 20; "
               "workspace %.0f MiB)\n",
               B, T, H, D, s == 3 ? " reference WY" : "", fwd, fb, wsb / 1048576.0);
        if (s == 3) hy_cuda_gdn_set_test_options(0, -1);
        void *all[] = {q, k, v, dO, alpha, beta, o, S, dS, dq, dk, dv, da, db, ws};
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) hy_cuda_free(all[i]);
        free(ha);
        free(hb);
    }
}
