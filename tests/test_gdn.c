// The gated delta rule (layers/gdn.c): the chunkwise WY forward and its
// hand-written backward against a float64 token-by-token reference (forward
// and BPTT written here), the PyTorch golden values, finite differences, the
// decoding step, and misuse errors.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../autograd/gradcheck.h"
#include "../autograd/rng.h"
#include "../layers/gdn.h"
#include "harness.h"
#include "util_golden.h"

// ---------------------------------------------------------------- problems
// One call's inputs and loss weights, host arrays in the op's layouts:
// q, k (B, T, H, Dk), v (B, T, H, Dv), alpha, beta (B, T, H), S0, dS (B, H, Dv, Dk).
// Loss = sum(o * dO) + sum(S_T * dS); dO or dS NULL drops that term.
typedef struct {
    int B, T, H, Dk, Dv;
    float *q, *k, *v, *alpha, *beta, *S0, *dO, *dS;
    int state_out;  // ask hy_gdn for the final state
} problem;

enum { G_Q, G_K, G_V, G_ALPHA, G_BETA, G_S0, N_IN };
static const char *in_names[N_IN] = {"q", "k", "v", "alpha", "beta", "S0"};

static size_t n_qk(const problem *p) { return (size_t)p->B * p->T * p->H * p->Dk; }
static size_t n_v(const problem *p) { return (size_t)p->B * p->T * p->H * p->Dv; }
static size_t n_a(const problem *p) { return (size_t)p->B * p->T * p->H; }
static size_t n_s(const problem *p) { return (size_t)p->B * p->H * p->Dv * p->Dk; }
static size_t in_numel(const problem *p, int i) {
    size_t n[N_IN] = {n_qk(p), n_qk(p), n_v(p), n_a(p), n_a(p), n_s(p)};
    return n[i];
}

static float *randn(hy_rng *r, size_t n, float std) {
    float *x = (float *)malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = std * hy_rng_normal(r);
    return x;
}

static float *randu(hy_rng *r, size_t n, float lo, float hi) {
    float *x = (float *)malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = lo + (hi - lo) * hy_rng_uniform(r);
    return x;
}

// Rows of length D scaled to unit norm, as hy_l2norm_heads does for the model.
static float *rand_unit_rows(hy_rng *r, size_t rows, int D) {
    float *x = randn(r, rows * D, 1.0f);
    for (size_t i = 0; i < rows; i++) {
        double ss = 0;
        for (int j = 0; j < D; j++) ss += (double)x[i * D + j] * x[i * D + j];
        for (int j = 0; j < D; j++) x[i * D + j] = (float)(x[i * D + j] / sqrt(ss));
    }
    return x;
}

static problem make_problem(uint64_t seed, int B, int T, int H, int Dk, int Dv, float alpha_lo,
                            int with_s0) {
    hy_rng r;
    hy_rng_seed(&r, seed);
    problem p = {B, T, H, Dk, Dv, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 1};
    size_t rows = (size_t)B * T * H;
    p.q = rand_unit_rows(&r, rows, Dk);
    p.k = rand_unit_rows(&r, rows, Dk);
    p.v = randn(&r, rows * Dv, 1.0f);
    p.alpha = randu(&r, rows, alpha_lo, 1.0f);
    p.beta = randu(&r, rows, 0.1f, 0.9f);
    p.S0 = with_s0 ? randn(&r, n_s(&p), 0.5f) : NULL;
    p.dO = randn(&r, n_v(&p), 1.0f);
    p.dS = randn(&r, n_s(&p), 1.0f);
    return p;
}

static void free_problem(problem *p) {
    float *all[8] = {p->q, p->k, p->v, p->alpha, p->beta, p->S0, p->dO, p->dS};
    for (int i = 0; i < 8; i++) free(all[i]);
}

static float *in_data(const problem *p, int i) {
    float *d[N_IN] = {p->q, p->k, p->v, p->alpha, p->beta, p->S0};
    return d[i];
}

// ---------------------------------------------------------------- float64 reference
// Results of one call: o, the final state, and the six input gradients.
typedef struct {
    double *o, *S, *g[N_IN];
} ref_out;

static ref_out ref_alloc(const problem *p) {
    ref_out r;
    r.o = (double *)calloc(n_v(p), sizeof(double));
    r.S = (double *)calloc(n_s(p), sizeof(double));
    for (int i = 0; i < N_IN; i++) r.g[i] = (double *)calloc(in_numel(p, i), sizeof(double));
    return r;
}

static void ref_free(ref_out *r) {
    free(r->o);
    free(r->S);
    for (int i = 0; i < N_IN; i++) free(r->g[i]);
}

// Token by token in float64, keeping every state (fine at test sizes), then
// reverse mode through the recurrence (BPTT). With Sp = alpha S_{t-1},
// r = v - Sp k, S_t = Sp + beta r k^T, o = S_t q.
static void ref_head(const problem *p, int b, int h, ref_out *out) {
    const int T = p->T, H = p->H, Dk = p->Dk, Dv = p->Dv;
    const size_t SS = (size_t)Dv * Dk;
    double *S = (double *)calloc((size_t)(T + 1) * SS, sizeof(double));  // S[0] = S0
    double *rr = (double *)calloc((size_t)T * Dv, sizeof(double));
    double *dS = (double *)calloc(SS, sizeof(double)), *dSp = (double *)calloc(SS, sizeof(double));
    size_t s0 = ((size_t)b * H + h) * SS;
    if (p->S0)
        for (size_t i = 0; i < SS; i++) S[i] = p->S0[s0 + i];
    for (int t = 0; t < T; t++) {
        size_t row = ((size_t)b * T + t) * H + h;
        const float *q = p->q + row * Dk, *k = p->k + row * Dk, *v = p->v + row * Dv;
        double a = p->alpha[row], be = p->beta[row];
        const double *P = S + (size_t)t * SS;
        double *N = S + (size_t)(t + 1) * SS;
        for (int i = 0; i < Dv; i++) {
            double pk = 0;
            for (int j = 0; j < Dk; j++) pk += a * P[i * Dk + j] * k[j];
            rr[(size_t)t * Dv + i] = v[i] - pk;
        }
        for (int i = 0; i < Dv; i++)
            for (int j = 0; j < Dk; j++)
                N[i * Dk + j] = a * P[i * Dk + j] + be * rr[(size_t)t * Dv + i] * k[j];
        for (int i = 0; i < Dv; i++) {
            double acc = 0;
            for (int j = 0; j < Dk; j++) acc += N[i * Dk + j] * q[j];
            out->o[row * Dv + i] = acc;
        }
    }
    for (size_t i = 0; i < SS; i++) {
        out->S[s0 + i] = S[(size_t)T * SS + i];
        dS[i] = p->dS ? p->dS[s0 + i] : 0.0;
    }
    for (int t = T - 1; t >= 0; t--) {
        size_t row = ((size_t)b * T + t) * H + h;
        const float *q = p->q + row * Dk, *k = p->k + row * Dk;
        double a = p->alpha[row], be = p->beta[row];
        const double *P = S + (size_t)t * SS, *N = S + (size_t)(t + 1) * SS,
                     *r = rr + (size_t)t * Dv;
        double *gq = out->g[G_Q] + row * Dk, *gk = out->g[G_K] + row * Dk,
               *gv = out->g[G_V] + row * Dv;
        // o = N q
        if (p->dO)
            for (int i = 0; i < Dv; i++)
                for (int j = 0; j < Dk; j++) {
                    double go = p->dO[row * Dv + i];
                    gq[j] += go * N[i * Dk + j];
                    dS[i * Dk + j] += go * q[j];
                }
        // N = Sp + beta r k^T
        double gbeta = 0;
        for (int i = 0; i < Dv; i++) {
            double gu = 0;  // d/d(beta r_i)
            for (int j = 0; j < Dk; j++) {
                gu += dS[i * Dk + j] * k[j];
                gk[j] += dS[i * Dk + j] * be * r[i];
                dSp[i * Dk + j] = dS[i * Dk + j];
            }
            gbeta += gu * r[i];
            // r = v - Sp k
            double gr = be * gu;
            gv[i] += gr;
            for (int j = 0; j < Dk; j++) {
                dSp[i * Dk + j] -= gr * k[j];
                gk[j] -= gr * a * P[i * Dk + j];
            }
        }
        // Sp = alpha P
        double galpha = 0;
        for (size_t i = 0; i < SS; i++) {
            galpha += dSp[i] * P[i];
            dS[i] = a * dSp[i];
        }
        out->g[G_ALPHA][row] += galpha;
        out->g[G_BETA][row] += gbeta;
    }
    if (p->S0)
        for (size_t i = 0; i < SS; i++) out->g[G_S0][s0 + i] += dS[i];
    free(S);
    free(rr);
    free(dS);
    free(dSp);
}

static ref_out ref_run(const problem *p) {
    ref_out r = ref_alloc(p);
    for (int b = 0; b < p->B; b++)
        for (int h = 0; h < p->H; h++) ref_head(p, b, h, &r);
    return r;
}

// ---------------------------------------------------------------- the op on a tape
typedef struct {
    float *o, *S, *g[N_IN];  // S NULL when not asked for, g[G_S0] NULL without S0
} op_out;

static void op_free(op_out *r) {
    free(r->o);
    free(r->S);
    for (int i = 0; i < N_IN; i++) free(r->g[i]);
}

static float *dup_f(const float *x, size_t n) {
    float *y = (float *)malloc(n * sizeof(float));
    memcpy(y, x, n * sizeof(float));
    return y;
}

// Run hy_gdn forward and backward for the problem's loss, with gradients
// bound to every input.
static op_out op_run(const problem *p, int chunk) {
    hy_arena in, gr, acts, scratch;
    hy_arena_init(&in, "gdn-inputs", HY_CPU, (size_t)16 << 20);
    hy_arena_init(&gr, "gdn-grads", HY_CPU, (size_t)16 << 20);
    hy_arena_init(&acts, "gdn-acts", HY_CPU, (size_t)32 << 20);
    hy_arena_init(&scratch, "gdn-scratch", HY_CPU, (size_t)32 << 20);
    hy_tape tape;
    hy_tape_init(&tape, &acts, &scratch, 64, 256);
    int64_t shp[N_IN][4] = {{p->B, p->T, p->H, p->Dk}, {p->B, p->T, p->H, p->Dk},
                            {p->B, p->T, p->H, p->Dv}, {p->B, p->T, p->H, 0},
                            {p->B, p->T, p->H, 0},     {p->B, p->H, p->Dv, p->Dk}};
    int nd[N_IN] = {4, 4, 4, 3, 3, 4};
    hy_tensor *x[N_IN] = {NULL}, *g[N_IN] = {NULL};
    for (int i = 0; i < N_IN; i++) {
        if (!in_data(p, i)) continue;
        x[i] = hy_tensor_new(&in, HY_F32, nd[i], shp[i], in_names[i]);
        memcpy(hy_f32(x[i]), in_data(p, i), hy_nbytes(x[i]));
        g[i] = hy_zeros_like(&gr, x[i], in_names[i]);
        hy_tape_bind_grad(&tape, x[i], g[i]);
    }
    hy_tensor *S = NULL;
    hy_tensor *o = hy_gdn(&tape, x[G_Q], x[G_K], x[G_V], x[G_ALPHA], x[G_BETA], x[G_S0], chunk,
                          p->state_out ? &S : NULL);
    if (p->dO && S && p->dS) {
        // Two seeds: the state's goes in by hand, then backward from o.
        memcpy(hy_f32(hy_grad_acc(&tape, S)), p->dS, n_s(p) * sizeof(float));
        hy_tape_backward_seed(&tape, o, p->dO);
    } else if (p->dO) {
        hy_tape_backward_seed(&tape, o, p->dO);
    } else {
        hy_tape_backward_seed(&tape, S, p->dS);
    }
    op_out r;
    r.o = dup_f(hy_f32(o), n_v(p));
    r.S = S ? dup_f(hy_f32(S), n_s(p)) : NULL;
    for (int i = 0; i < N_IN; i++) r.g[i] = g[i] ? dup_f(hy_f32(g[i]), in_numel(p, i)) : NULL;
    hy_tape_free(&tape);
    hy_arena_free(&in);
    hy_arena_free(&gr);
    hy_arena_free(&acts);
    hy_arena_free(&scratch);
    return r;
}

// ---------------------------------------------------------------- comparison
enum { E_O, E_S, E_G0, N_ERR = E_G0 + N_IN };
static const char *err_names[N_ERR] = {"o", "S", "dq", "dk", "dv", "dalpha", "dbeta", "dS0"};

// Relative errors (max abs error / max abs reference) of every compared
// tensor; -1 where there is nothing to compare.
static void compare(const problem *p, const op_out *a, const ref_out *r, double err[N_ERR]) {
    err[E_O] = hy_max_rel_err(a->o, r->o, (long)n_v(p));
    err[E_S] = a->S ? hy_max_rel_err(a->S, r->S, (long)n_s(p)) : -1;
    for (int i = 0; i < N_IN; i++)
        err[E_G0 + i] = a->g[i] ? hy_max_rel_err(a->g[i], r->g[i], (long)in_numel(p, i)) : -1;
}

// Fails (naming the case and tensor) above tol_out for o and S, tol_grad for gradients.
static void check_errs(const char *what, const double err[N_ERR], double tol_out, double tol_grad,
                       double worst[N_ERR]) {
    for (int e = 0; e < N_ERR; e++) {
        if (err[e] < 0) continue;
        double tol = e < E_G0 ? tol_out : tol_grad;
        HY_ASSERT(err[e] <= tol, "%s: %s relative error %.3g > %.1g", what, err_names[e], err[e],
                  tol);
        if (worst && err[e] > worst[e]) worst[e] = err[e];
    }
}

// ---------------------------------------------------------------- 1. chunkwise vs recurrence
typedef struct {
    int T, chunk, D, Dv, with_s0;
    float alpha_lo;
    int mode;  // 0: loss on o and S, 1: o only (no state output), 2: S only
} ref_case;

HY_TEST(gdn_chunkwise_vs_recurrence, "cpu") {
    ref_case cases[64];
    int n = 0;
    const int Ts[5] = {1, 63, 64, 65, 200}, chunks[2] = {16, 64};
    for (int i = 0; i < 5; i++)
        for (int c = 0; c < 2; c++)
            for (int s = 0; s < 2; s++)
                cases[n++] = (ref_case){Ts[i], chunks[c], 16, 16, s, 0.8f, 0};
    cases[n++] = (ref_case){100, 16, 12, 12, 1, 0.3f, 0};  // strong decay, odd D
    cases[n++] = (ref_case){77, 64, 16, 16, 1, 0.3f, 0};
    cases[n++] = (ref_case){50, 16, 12, 7, 1, 0.8f, 0};   // Dk != Dv
    cases[n++] = (ref_case){65, 16, 16, 16, 1, 0.8f, 1};  // loss on o only
    cases[n++] = (ref_case){65, 16, 16, 16, 1, 0.8f, 2};  // loss on the state only
    cases[n++] = (ref_case){40, 7, 12, 12, 0, 0.8f, 2};
    double worst[N_ERR] = {0};
    for (int i = 0; i < n; i++) {
        const ref_case *c = &cases[i];
        problem p = make_problem(100 + i, 2, c->T, 3, c->D, c->Dv, c->alpha_lo, c->with_s0);
        if (c->mode == 1) {
            p.state_out = 0;
            free(p.dS);
            p.dS = NULL;
        } else if (c->mode == 2) {
            free(p.dO);
            p.dO = NULL;
        }
        ref_out r = ref_run(&p);
        op_out a = op_run(&p, c->chunk);
        double err[N_ERR];
        compare(&p, &a, &r, err);
        char what[160];
        snprintf(what, sizeof what, "T=%d chunk=%d Dk=%d Dv=%d S0=%d alpha>=%.1f mode=%d", c->T,
                 c->chunk, c->D, c->Dv, c->with_s0, c->alpha_lo, c->mode);
        check_errs(what, err, 1e-5, 1e-5, worst);
        op_free(&a);
        ref_free(&r);
        free_problem(&p);
    }
    printf("  %d cases; worst relative error vs float64 recurrence:", n);
    for (int e = 0; e < N_ERR; e++) printf(" %s %.2e", err_names[e], worst[e]);
    printf("\n");
}

// ---------------------------------------------------------------- 2. golden values
// (B, H, N, D) -> (B, N, H, D); D = 1 for alpha and beta.
static double *bhnd_to_bnhd(const hy_golden *g, int B, int H, int N, int D) {
    double *y = (double *)malloc((size_t)B * H * N * D * sizeof(double));
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int t = 0; t < N; t++)
                for (int j = 0; j < D; j++)
                    y[(((size_t)b * N + t) * H + h) * D + j] =
                        g->data[(((size_t)b * H + h) * N + t) * D + j];
    return y;
}

static float *to_f32(const double *x, size_t n) {
    float *y = (float *)malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) y[i] = (float)x[i];
    return y;
}

HY_TEST(gdn_golden_kernel, "cpu") {
    const char *file = hy_golden_path();
    // Inputs and loss weights, then the outputs and gradients to compare.
    static const char *names[] = {"q", "k", "v", "alpha", "beta", "S0", "do", "dS",
                                  "o", "S", "grad_q", "grad_k", "grad_v", "grad_alpha",
                                  "grad_beta", "grad_S0"};
    enum { NG = 16 };
    hy_golden g[NG];
    for (int i = 0; i < NG; i++) {
        char path[64];
        snprintf(path, sizeof path, "/gdn_kernel/%s", names[i]);
        g[i] = hy_golden_read(file, path);
        if (!g[i].data) return;
    }
    HY_ASSERT(g[0].ndim == 4 && g[2].ndim == 4 && g[5].ndim == 4, "golden gdn_kernel shapes");
    int B = (int)g[0].shape[0], H = (int)g[0].shape[1], N = (int)g[0].shape[2];
    int Dk = (int)g[0].shape[3], Dv = (int)g[2].shape[3];
    // Reference values in the op's layouts: 0..7 inputs and loss weights, 8.. outputs.
    int dims[NG] = {Dk, Dk, Dv, 1, 1, 0, Dv, 0, Dv, 0, Dk, Dk, Dv, 1, 1, 0};
    double *ref[NG];
    for (int i = 0; i < NG; i++) {
        if (dims[i]) {
            ref[i] = bhnd_to_bnhd(&g[i], B, H, N, dims[i]);
        } else {  // states keep their (B, H, Dv, Dk) layout
            ref[i] = (double *)malloc((size_t)g[i].numel * sizeof(double));
            memcpy(ref[i], g[i].data, (size_t)g[i].numel * sizeof(double));
        }
    }
    problem p = {B, N, H, Dk, Dv, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 1};
    float **f[8] = {&p.q, &p.k, &p.v, &p.alpha, &p.beta, &p.S0, &p.dO, &p.dS};
    size_t sizes[8] = {n_qk(&p), n_qk(&p), n_v(&p), n_a(&p), n_a(&p), n_s(&p), n_v(&p), n_s(&p)};
    for (int i = 0; i < 8; i++) *f[i] = to_f32(ref[i], sizes[i]);
    ref_out r = {ref[8], ref[9], {ref[10], ref[11], ref[12], ref[13], ref[14], ref[15]}};
    const int chunks[3] = {8, 64, 16};
    double worst[N_ERR] = {0};
    for (int c = 0; c < 3; c++) {
        op_out a = op_run(&p, chunks[c]);
        double err[N_ERR];
        compare(&p, &a, &r, err);
        char what[64];
        snprintf(what, sizeof what, "golden chunk=%d", chunks[c]);
        check_errs(what, err, 1e-5, 1e-4, worst);
        op_free(&a);
    }
    printf("  golden (B, H, N, Dk, Dv) = (%d, %d, %d, %d, %d); worst relative error:", B, H, N, Dk,
           Dv);
    for (int e = 0; e < N_ERR; e++) printf(" %s %.2e", err_names[e], worst[e]);
    printf("\n");
    for (int i = 0; i < NG; i++) {
        free(ref[i]);
        hy_golden_free(&g[i]);
    }
    free_problem(&p);
}

// ---------------------------------------------------------------- 3. finite differences
typedef struct {
    int chunk, want_state;
} gc_user;

static hy_tensor *f_gdn(hy_tape *t, hy_tensor **in, void *user) {
    gc_user *u = (gc_user *)user;
    hy_tensor *S = NULL;
    hy_tensor *o =
        hy_gdn(t, in[0], in[1], in[2], in[3], in[4], in[5], u->chunk, u->want_state ? &S : NULL);
    return u->want_state ? S : o;
}

static hy_arena g_in;  // gradcheck inputs live outside the tape's arenas

static hy_tensor *gc_input(const float *data, int ndim, const int64_t *shape, const char *name) {
    if (!g_in.meta) hy_arena_init(&g_in, "gdn-gc-inputs", HY_CPU, (size_t)4 << 20);
    hy_tensor *x = hy_tensor_new(&g_in, HY_F32, ndim, shape, name);
    memcpy(hy_f32(x), data, hy_nbytes(x));
    x->requires_grad = 1;
    return x;
}

static void gradcheck_problem(const problem *p, int chunk, const char *name) {
    int64_t shp[N_IN][4] = {{p->B, p->T, p->H, p->Dk}, {p->B, p->T, p->H, p->Dk},
                            {p->B, p->T, p->H, p->Dv}, {p->B, p->T, p->H, 0},
                            {p->B, p->T, p->H, 0},     {p->B, p->H, p->Dv, p->Dk}};
    int nd[N_IN] = {4, 4, 4, 3, 3, 4};
    hy_tensor *in[N_IN];
    for (int i = 0; i < N_IN; i++) in[i] = gc_input(in_data(p, i), nd[i], shp[i], in_names[i]);
    char nm[64];
    for (int want_state = 0; want_state < 2; want_state++) {
        gc_user u = {chunk, want_state};
        snprintf(nm, sizeof nm, "%s%s", name, want_state ? "_state" : "_out");
        HY_ASSERT(hy_gradcheck(nm, f_gdn, &u, in, N_IN, NULL) == 0, "%s gradients", nm);
    }
    hy_arena_reset(&g_in);
}

HY_TEST(gdn_grad, "cpu") {
    problem p = make_problem(7, 1, 11, 2, 5, 5, 0.8f, 1);
    gradcheck_problem(&p, 4, "gdn");
    free_problem(&p);
    problem p2 = make_problem(8, 2, 9, 1, 5, 3, 0.5f, 1);  // Dk != Dv, chunk > T
    gradcheck_problem(&p2, 16, "gdn_dk5_dv3");
    free_problem(&p2);
}

// ---------------------------------------------------------------- 4. decoding step
HY_TEST(gdn_step_equals_chunkwise, "cpu") {
    const int B = 2, T = 37, H = 3, Dk = 16, Dv = 12;
    problem p = make_problem(9, B, T, H, Dk, Dv, 0.8f, 1);
    hy_arena acts, scratch, in;
    hy_arena_init(&acts, "acts", HY_CPU, (size_t)8 << 20);
    hy_arena_init(&scratch, "scratch", HY_CPU, (size_t)8 << 20);
    hy_arena_init(&in, "in", HY_CPU, (size_t)8 << 20);
    hy_tape tape;
    hy_tape_init(&tape, &acts, &scratch, 16, 64);
    tape.enabled = 0;  // inference: nothing recorded
    hy_tensor *q = hy_new4(&in, HY_F32, B, T, H, Dk, "q"),
              *k = hy_new4(&in, HY_F32, B, T, H, Dk, "k");
    hy_tensor *v = hy_new4(&in, HY_F32, B, T, H, Dv, "v"),
              *S0 = hy_new4(&in, HY_F32, B, H, Dv, Dk, "S0");
    hy_tensor *al = hy_new3(&in, HY_F32, B, T, H, "alpha"),
              *be = hy_new3(&in, HY_F32, B, T, H, "beta");
    memcpy(hy_f32(q), p.q, hy_nbytes(q));
    memcpy(hy_f32(k), p.k, hy_nbytes(k));
    memcpy(hy_f32(v), p.v, hy_nbytes(v));
    memcpy(hy_f32(al), p.alpha, hy_nbytes(al));
    memcpy(hy_f32(be), p.beta, hy_nbytes(be));
    memcpy(hy_f32(S0), p.S0, hy_nbytes(S0));
    hy_tensor *S = NULL;
    hy_tensor *o = hy_gdn(&tape, q, k, v, al, be, S0, 16, &S);
    HY_ASSERT(tape.n_nodes == 0 && !o->requires_grad, "gdn recorded a node on a disabled tape");

    float *state = dup_f(p.S0, n_s(&p)), *os = (float *)malloc(n_v(&p) * sizeof(float));
    float *qt = malloc(sizeof(float) * B * H * Dk), *kt = malloc(sizeof(float) * B * H * Dk);
    float *vt = malloc(sizeof(float) * B * H * Dv), *ot = malloc(sizeof(float) * B * H * Dv);
    float *at = malloc(sizeof(float) * B * H), *bt = malloc(sizeof(float) * B * H);
    for (int t = 0; t < T; t++) {
        for (int b = 0; b < B; b++) {  // gather token t: (B, T, H, .) -> (B, H, .)
            size_t row = ((size_t)b * T + t) * H;
            memcpy(qt + b * H * Dk, p.q + row * Dk, sizeof(float) * H * Dk);
            memcpy(kt + b * H * Dk, p.k + row * Dk, sizeof(float) * H * Dk);
            memcpy(vt + b * H * Dv, p.v + row * Dv, sizeof(float) * H * Dv);
            memcpy(at + b * H, p.alpha + row, sizeof(float) * H);
            memcpy(bt + b * H, p.beta + row, sizeof(float) * H);
        }
        hy_gdn_step_cpu(B, H, Dk, Dv, qt, kt, vt, at, bt, state, ot);
        for (int b = 0; b < B; b++)
            memcpy(os + ((size_t)b * T + t) * H * Dv, ot + b * H * Dv, sizeof(float) * H * Dv);
    }
    double eo = hy_max_rel_err_f(hy_f32(o), os, (long)n_v(&p));
    double es = hy_max_rel_err_f(hy_f32(S), state, (long)n_s(&p));
    printf("  step vs chunkwise: o %.2e, state %.2e\n", eo, es);
    HY_ASSERT(eo <= 1e-5, "step outputs differ from hy_gdn: %.3g", eo);
    HY_ASSERT(es <= 1e-5, "step final state differs from hy_gdn: %.3g", es);
    free(state), free(os), free(qt), free(kt), free(vt), free(ot), free(at), free(bt);
    hy_tape_free(&tape);
    hy_arena_free(&acts);
    hy_arena_free(&scratch);
    hy_arena_free(&in);
    free_problem(&p);
}

// ---------------------------------------------------------------- 5. misuse
HY_TEST(gdn_misuse, "cpu") {
    hy_arena acts, scratch, in;
    hy_arena_init(&acts, "acts", HY_CPU, (size_t)1 << 20);
    hy_arena_init(&scratch, "scratch", HY_CPU, (size_t)1 << 20);
    hy_arena_init(&in, "in", HY_CPU, (size_t)1 << 20);
    hy_tape tape;
    hy_tape_init(&tape, &acts, &scratch, 16, 64);
    hy_tensor *q = hy_new4(&in, HY_F32, 1, 6, 2, 4, "q"),
              *k = hy_new4(&in, HY_F32, 1, 6, 2, 4, "k");
    hy_tensor *v = hy_new4(&in, HY_F32, 1, 6, 2, 4, "v"),
              *v5 = hy_new4(&in, HY_F32, 1, 5, 2, 4, "v");
    hy_tensor *k3 = hy_new4(&in, HY_F32, 1, 6, 2, 3, "k");
    hy_tensor *a = hy_new3(&in, HY_F32, 1, 6, 2, "alpha"),
              *b = hy_new3(&in, HY_F32, 1, 6, 2, "beta");
    hy_tensor *a3 = hy_new3(&in, HY_F32, 1, 6, 3, "alpha"),
              *b3 = hy_new3(&in, HY_F32, 1, 6, 3, "beta");
    hy_tensor *S_bad = hy_new4(&in, HY_F32, 1, 2, 4, 5, "S0");
    hy_tensor *qi = hy_new4(&in, HY_I32, 1, 6, 2, 4, "q");
    hy_fill_const(q, 0.5f), hy_fill_const(k, 0.5f), hy_fill_const(v, 1.0f), hy_fill_const(v5, 1.0f);
    hy_fill_const(k3, 0.5f), hy_fill_const(a, 0.9f), hy_fill_const(b, 0.5f);
    hy_fill_const(a3, 0.9f), hy_fill_const(b3, 0.5f), hy_fill_const(S_bad, 0.0f);
    HY_EXPECT_ERROR(hy_gdn(&tape, q, k, v5, a, b, NULL, 4, NULL), HY_EXIT_USAGE, "gdn");
    HY_EXPECT_ERROR(hy_gdn(&tape, q, k3, v, a, b, NULL, 4, NULL), HY_EXIT_USAGE, "gdn");
    HY_EXPECT_ERROR(hy_gdn(&tape, q, k, v, a3, b3, NULL, 4, NULL), HY_EXIT_USAGE, "gdn");
    HY_EXPECT_ERROR(hy_gdn(&tape, q, k, v, a, b3, NULL, 4, NULL), HY_EXIT_USAGE, "gdn");
    HY_EXPECT_ERROR(hy_gdn(&tape, q, k, v, a, b, S_bad, 4, NULL), HY_EXIT_USAGE, "gdn");
    HY_EXPECT_ERROR(hy_gdn(&tape, qi, k, v, a, b, NULL, 4, NULL), HY_EXIT_USAGE, "gdn");
    HY_EXPECT_ERROR(hy_gdn(&tape, q, k, v, a, b, NULL, 0, NULL), HY_EXIT_USAGE, "chunk");
    HY_EXPECT_ERROR(hy_gdn(&tape, q, k, v, a, b, NULL, -3, NULL), HY_EXIT_USAGE, "gdn");
    hy_f32(a)[3] = -0.1f;
    HY_EXPECT_ERROR(hy_gdn(&tape, q, k, v, a, b, NULL, 4, NULL), HY_EXIT_USAGE, "alpha");
    HY_EXPECT_ERROR(hy_gdn_step_cpu(1, 0, 4, 4, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
                    HY_EXIT_USAGE, "gdn");
    hy_tape_free(&tape);
    hy_arena_free(&acts);
    hy_arena_free(&scratch);
    hy_arena_free(&in);
}
