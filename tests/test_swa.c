// Sliding-window attention: forward and backward against a float64 masked
// softmax reference, finite-difference gradient checks, the decoding cache
// (chunked prefill and token steps) against one whole-sequence call, and
// misuse errors.
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "../autograd/gradcheck.h"
#include "../autograd/rng.h"
#include "../layers/swa.h"
#include "harness.h"

static hy_arena g_in;  // inputs live outside the tape's arenas

static hy_tensor *rand4(hy_rng *r, int d0, int d1, int d2, int d3, const char *name, float std,
                        int requires_grad) {
    if (!g_in.meta) hy_arena_init(&g_in, "test-inputs", HY_CPU, (size_t)64 << 20);
    hy_tensor *x = hy_new4(&g_in, HY_F32, d0, d1, d2, d3, name);
    hy_fill_normal(x, r, 0.0f, std);
    x->requires_grad = requires_grad;
    return x;
}

typedef struct {
    hy_arena acts, scratch;
    hy_tape tape;
} env;

static void env_open(env *e, int enabled) {
    hy_arena_init(&e->acts, "acts", HY_CPU, (size_t)32 << 20);
    hy_arena_init(&e->scratch, "scratch", HY_CPU, (size_t)32 << 20);
    hy_tape_init(&e->tape, &e->acts, &e->scratch, 256, 1024);
    e->tape.enabled = enabled;
}

static void env_close(env *e) {
    hy_tape_free(&e->tape);
    hy_arena_free(&e->acts);
    hy_arena_free(&e->scratch);
}

// ---------------------------------------------------------------- float64 reference

// Chunk arrays are (B, T, H, D), prefix arrays (B, P, H, D).
typedef struct {
    int B, T, H, D, P, W;
} swa_case;

static long at(int b, int t, int h, int T, int H, int D) {
    return (((long)b * T + t) * H + h) * D;
}

// Key/value row of absolute position j (prefix first, then the chunk).
static const float *kv_row(const swa_case *c, const float *chunk, const float *prefix, int b,
                           int j, int h) {
    return j < c->P ? prefix + at(b, j, h, c->P, c->H, c->D)
                    : chunk + at(b, j - c->P, h, c->T, c->H, c->D);
}

// Per (b, h) the full masked (T, P + T) probability matrix in double, the
// output, and with dout the gradients through the softmax Jacobian:
//   dS = P * (dO V^T - rowsum(P * dO V^T)), dQ = s dS K, dK = s dS^T Q, dV = P^T dO.
// dq, dk, dv are overwritten; the prefix gets no gradient.
static void naive_swa(const swa_case *c, const float *q, const float *k, const float *v,
                      const float *pk, const float *pv, const float *dout, double *o, double *dq,
                      double *dk, double *dv) {
    int N = c->P + c->T, D = c->D;
    long n = (long)c->B * c->T * c->H * D;
    double scale = 1.0 / sqrt((double)D);
    double *pm = malloc((size_t)c->T * N * sizeof(double));  // (T, P + T) probabilities
    double *dp = malloc((size_t)N * sizeof(double));          // one row of dO V^T
    if (dout) {
        memset(dq, 0, n * sizeof(double));
        memset(dk, 0, n * sizeof(double));
        memset(dv, 0, n * sizeof(double));
    }
    for (int b = 0; b < c->B; b++)
        for (int h = 0; h < c->H; h++) {
            for (int i = 0; i < c->T; i++) {
                const float *qi = q + at(b, i, h, c->T, c->H, D);
                long p = (long)c->P + i;
                double m = -INFINITY, sum = 0, *row = pm + (long)i * N;
                for (int j = 0; j < N; j++) {
                    row[j] = -INFINITY;
                    if (p - c->W < j && j <= p) {
                        const float *kj = kv_row(c, k, pk, b, j, h);
                        double s = 0;
                        for (int d = 0; d < D; d++) s += (double)qi[d] * kj[d];
                        row[j] = s * scale;
                    }
                    m = fmax(m, row[j]);
                }
                for (int j = 0; j < N; j++) sum += row[j] = exp(row[j] - m);
                double *oi = o + at(b, i, h, c->T, c->H, D);
                for (int d = 0; d < D; d++) oi[d] = 0;
                for (int j = 0; j < N; j++) {
                    row[j] /= sum;
                    const float *vj = kv_row(c, v, pv, b, j, h);
                    for (int d = 0; d < D; d++) oi[d] += row[j] * vj[d];
                }
                if (!dout) continue;
                const float *gi = dout + at(b, i, h, c->T, c->H, D);
                double rowdot = 0;
                for (int j = 0; j < N; j++) {
                    const float *vj = kv_row(c, v, pv, b, j, h);
                    dp[j] = 0;
                    for (int d = 0; d < D; d++) dp[j] += (double)gi[d] * vj[d];
                    rowdot += row[j] * dp[j];
                }
                for (int j = 0; j < N; j++) {
                    double ds = row[j] * (dp[j] - rowdot);
                    const float *kj = kv_row(c, k, pk, b, j, h);
                    for (int d = 0; d < D; d++)
                        dq[at(b, i, h, c->T, c->H, D) + d] += scale * ds * kj[d];
                    if (j < c->P) continue;
                    long jo = at(b, j - c->P, h, c->T, c->H, D);
                    for (int d = 0; d < D; d++) {
                        dk[jo + d] += scale * ds * qi[d];
                        dv[jo + d] += row[j] * gi[d];
                    }
                }
            }
        }
    free(pm);
    free(dp);
}

// ---------------------------------------------------------------- forward

// hy_swa on random inputs vs the reference; returns the relative error.
static double forward_case(const swa_case *c, uint64_t seed) {
    hy_rng r;
    hy_rng_seed(&r, seed);
    hy_tensor *q = rand4(&r, c->B, c->T, c->H, c->D, "q", 1.5f, 0);
    hy_tensor *k = rand4(&r, c->B, c->T, c->H, c->D, "k", 1.5f, 0);
    hy_tensor *v = rand4(&r, c->B, c->T, c->H, c->D, "v", 1.0f, 0);
    hy_tensor *pk = c->P ? rand4(&r, c->B, c->P, c->H, c->D, "pk", 1.5f, 0) : NULL;
    hy_tensor *pv = c->P ? rand4(&r, c->B, c->P, c->H, c->D, "pv", 1.0f, 0) : NULL;
    long n = (long)hy_numel(q);
    double *ref = malloc((size_t)n * sizeof(double));
    naive_swa(c, hy_f32(q), hy_f32(k), hy_f32(v), pk ? hy_f32(pk) : NULL,
              pv ? hy_f32(pv) : NULL, NULL, ref, NULL, NULL, NULL);

    // Inference: nothing recorded, nothing but the output kept.
    env e;
    env_open(&e, 0);
    hy_tensor *o = hy_swa(&e.tape, q, k, v, pk, pv, c->W);
    size_t kept = (hy_nbytes(o) + HY_ALIGN - 1) / HY_ALIGN * HY_ALIGN;
    HY_ASSERT(e.tape.n_nodes == 0 && e.acts.used == kept && e.scratch.used == 0,
              "swa inference saved something: %d nodes, acts %zu bytes (output %zu), "
              "scratch %zu", e.tape.n_nodes, e.acts.used, kept, e.scratch.used);
    double err = hy_max_rel_err(hy_f32(o), ref, n);

    // Training: the same output, and a recorded node.
    q->requires_grad = 1;
    e.tape.enabled = 1;
    hy_tensor *o2 = hy_swa(&e.tape, q, k, v, pk, pv, c->W);
    HY_ASSERT(e.tape.n_nodes == 1, "swa recorded %d nodes, expected 1", e.tape.n_nodes);
    HY_ASSERT(memcmp(hy_f32(o), hy_f32(o2), hy_nbytes(o)) == 0,
              "swa output differs with the tape recording");
    env_close(&e);
    free(ref);
    printf("  B=%d T=%d H=%d D=%d P=%d W=%d: rel err %.3g\n", c->B, c->T, c->H, c->D, c->P,
           c->W, err);
    return err;
}

HY_TEST(swa_forward_vs_naive, "cpu") {
    const swa_case cases[] = {
        {2, 13, 3, 8, 0, 1},    {2, 13, 3, 8, 0, 4},     {1, 17, 2, 16, 3, 5},
        {2, 23, 2, 8, 0, 40},   {1, 19, 3, 12, 10, 7},   {2, 31, 1, 32, 5, 64},
        {1, 1, 1, 4, 2, 3},     {2, 50, 2, 16, 15, 16},  {1, 29, 2, 6, 4, 1},
        {1, 150, 2, 8, 20, 100}, {1, 211, 1, 8, 0, 211}, {1, 7, 2, 5, 300, 9},
        {2, 200, 2, 8, 30, 100},  // enough work for the threaded path
    };
    double worst = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        double err = forward_case(&cases[i], 100 + i);
        HY_ASSERT(err <= 1e-5, "swa forward case %zu: rel err %.3g", i, err);
        if (err > worst) worst = err;
    }
    printf("  worst forward rel err %.3g\n", worst);
}

// ---------------------------------------------------------------- gradients

typedef struct {
    int window, prefix;
} swa_gc;

static hy_tensor *f_swa(hy_tape *t, hy_tensor **in, void *u) {
    swa_gc *g = (swa_gc *)u;
    return hy_swa(t, in[0], in[1], in[2], g->prefix ? in[3] : NULL, g->prefix ? in[4] : NULL,
                  g->window);
}

HY_TEST(swa_grad, "cpu") {
    hy_rng r;
    hy_rng_seed(&r, 7);
    hy_gc_opts o = hy_gc_defaults();
    hy_tensor *in[5] = {rand4(&r, 2, 9, 2, 6, "q", 1, 1), rand4(&r, 2, 9, 2, 6, "k", 1, 1),
                        rand4(&r, 2, 9, 2, 6, "v", 1, 1), rand4(&r, 2, 3, 2, 6, "pk", 1, 0),
                        rand4(&r, 2, 3, 2, 6, "pv", 1, 0)};
    swa_gc plain = {4, 0}, prefix = {4, 1};
    HY_ASSERT(hy_gradcheck("swa", f_swa, &plain, in, 3, &o) == 0, "swa gradients");
    HY_ASSERT(hy_gradcheck("swa_prefix", f_swa, &prefix, in, 5, &o) == 0,
              "swa gradients with a prefix");
}

// Analytic gradients from the tape vs the float64 reference; returns the worst
// relative error over dq, dk, dv.
static double backward_case(const swa_case *c, uint64_t seed) {
    hy_rng r;
    hy_rng_seed(&r, seed);
    hy_tensor *x[3] = {rand4(&r, c->B, c->T, c->H, c->D, "q", 1.5f, 1),
                       rand4(&r, c->B, c->T, c->H, c->D, "k", 1.5f, 1),
                       rand4(&r, c->B, c->T, c->H, c->D, "v", 1.0f, 1)};
    hy_tensor *pk = c->P ? rand4(&r, c->B, c->P, c->H, c->D, "pk", 1.5f, 0) : NULL;
    hy_tensor *pv = c->P ? rand4(&r, c->B, c->P, c->H, c->D, "pv", 1.0f, 0) : NULL;
    long n = (long)hy_numel(x[0]);
    float *dout = malloc((size_t)n * sizeof(float));
    for (long i = 0; i < n; i++) dout[i] = hy_rng_normal(&r);
    double *ref = malloc((size_t)4 * n * sizeof(double));  // o, dq, dk, dv
    naive_swa(c, hy_f32(x[0]), hy_f32(x[1]), hy_f32(x[2]), pk ? hy_f32(pk) : NULL,
              pv ? hy_f32(pv) : NULL, dout, ref, ref + n, ref + 2 * n, ref + 3 * n);

    env e;
    env_open(&e, 1);
    hy_tensor *g[3];
    for (int i = 0; i < 3; i++) {
        g[i] = hy_zeros_like(&g_in, x[i], "grad");
        hy_tape_bind_grad(&e.tape, x[i], g[i]);
    }
    hy_tensor *o = hy_swa(&e.tape, x[0], x[1], x[2], pk, pv, c->W);
    // The op keeps its own copy of the prefix: the caller may reuse its buffers.
    if (pk) hy_fill_const(pk, 100.0f), hy_fill_const(pv, -100.0f);
    hy_tape_backward_seed(&e.tape, o, dout);
    double worst = hy_max_rel_err(hy_f32(o), ref, n);
    const char *names[3] = {"dq", "dk", "dv"};
    for (int i = 0; i < 3; i++) {
        double err = hy_max_rel_err(hy_f32(g[i]), ref + (i + 1) * n, n);
        printf("  B=%d T=%d H=%d D=%d P=%d W=%d: %s rel err %.3g\n", c->B, c->T, c->H, c->D,
               c->P, c->W, names[i], err);
        if (err > worst) worst = err;
    }
    env_close(&e);
    free(ref);
    free(dout);
    return worst;
}

HY_TEST(swa_backward_vs_naive, "cpu") {
    const swa_case cases[] = {{2, 70, 2, 16, 0, 16}, {1, 70, 3, 16, 20, 16},
                              {1, 45, 2, 8, 7, 100}, {2, 200, 2, 8, 0, 100}};
    double worst = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        double err = backward_case(&cases[i], 200 + i);
        HY_ASSERT(err <= 1e-5, "swa backward case %zu: rel err %.3g", i, err);
        if (err > worst) worst = err;
    }
    printf("  worst backward rel err %.3g\n", worst);
}

// ---------------------------------------------------------------- decoding cache

// Rows [t0, t0 + len) of src (B, T, hd) into dst (B, len, hd), or back.
static void take_rows(float *dst, const float *src, int B, int T, int t0, int len, long hd) {
    for (int b = 0; b < B; b++)
        memcpy(dst + (long)b * len * hd, src + ((long)b * T + t0) * hd,
               (size_t)len * hd * sizeof(float));
}
static void put_rows(float *dst, const float *src, int B, int T, int t0, int len, long hd) {
    for (int b = 0; b < B; b++)
        memcpy(dst + ((long)b * T + t0) * hd, src + (long)b * len * hd,
               (size_t)len * hd * sizeof(float));
}

// One inference call of hy_swa on the whole sequence: out (B, T, H, D).
static void swa_whole(hy_tensor *q, hy_tensor *k, hy_tensor *v, int W, float *out) {
    env e;
    env_open(&e, 0);
    memcpy(out, hy_f32(hy_swa(&e.tape, q, k, v, NULL, NULL, W)), hy_nbytes(q));
    env_close(&e);
}

// Chunked prefill of rows [t0, t1): each chunk attends to the cached prefix,
// then is appended to the cache.
static void swa_chunks(hy_swa_cache *c, hy_tensor *q, hy_tensor *k, hy_tensor *v, int t0, int t1,
                       int chunk, float *out) {
    int B = (int)q->shape[0], T = (int)q->shape[1], H = (int)q->shape[2], D = (int)q->shape[3];
    long hd = (long)H * D;
    env e;
    env_open(&e, 0);
    for (int s = t0; s < t1; s += chunk) {
        int len = t1 - s < chunk ? t1 - s : chunk;
        hy_tensor *x[3] = {q, k, v}, *xc[3];
        for (int i = 0; i < 3; i++) {
            xc[i] = hy_new4(&e.acts, HY_F32, B, len, H, D, x[i]->name);
            take_rows(hy_f32(xc[i]), hy_f32(x[i]), B, T, s, len, hd);
        }
        hy_tensor *pk = hy_new4(&e.acts, HY_F32, B, c->W, H, D, "pk");
        hy_tensor *pv = hy_new4(&e.acts, HY_F32, B, c->W, H, D, "pv");
        int n = hy_swa_cache_prefix(c, hy_f32(pk), hy_f32(pv));
        HY_ASSERT(n == (s < c->W - 1 ? s : c->W - 1), "prefix rows %d at position %d", n, s);
        pk->shape[1] = pv->shape[1] = n;  // the first n rows of each batch, packed (B, n, H, D)
        hy_tensor *o = hy_swa(&e.tape, xc[0], xc[1], xc[2], n ? pk : NULL, n ? pv : NULL, c->W);
        put_rows(out, hy_f32(o), B, T, s, len, hd);
        hy_swa_cache_append(c, hy_f32(xc[1]), hy_f32(xc[2]), len);
        hy_tape_reset(&e.tape);
    }
    env_close(&e);
}

// Token steps for rows [t0, t1).
static void swa_steps(hy_swa_cache *c, hy_tensor *q, hy_tensor *k, hy_tensor *v, int t0, int t1,
                      float *out) {
    int B = (int)q->shape[0], T = (int)q->shape[1];
    long hd = q->shape[2] * q->shape[3], n = B * hd;
    float *buf = malloc((size_t)4 * n * sizeof(float));  // q, k, v, o (B, H, D)
    for (int t = t0; t < t1; t++) {
        take_rows(buf, hy_f32(q), B, T, t, 1, hd);
        take_rows(buf + n, hy_f32(k), B, T, t, 1, hd);
        take_rows(buf + 2 * n, hy_f32(v), B, T, t, 1, hd);
        hy_swa_step_cpu(c, buf, buf + n, buf + 2 * n, buf + 3 * n);
        put_rows(out, buf + 3 * n, B, T, t, 1, hd);
    }
    free(buf);
}

typedef struct {
    hy_swa_cache c;
    float *mem;
} cache_box;

// Starts the cache one float into its block: callers pack caches of several
// layers together, so the memory need only be float-aligned.
static void cache_open(cache_box *cb, int B, int H, int D, int W) {
    cb->mem = hy_xmalloc(hy_swa_cache_bytes(B, H, D, W) + sizeof(float));
    hy_swa_cache_init(&cb->c, B, H, D, W, cb->mem + 1);
}

HY_TEST(swa_prefix_equals_one_piece, "cpu") {
    int B = 2, T = 200, H = 2, D = 8;
    const int windows[] = {1, 16, 37, 50, 300};
    hy_rng r;
    hy_rng_seed(&r, 11);
    hy_tensor *q = rand4(&r, B, T, H, D, "q", 1.5f, 0), *k = rand4(&r, B, T, H, D, "k", 1.5f, 0);
    hy_tensor *v = rand4(&r, B, T, H, D, "v", 1.0f, 0);
    long n = (long)hy_numel(q);
    float *whole = malloc((size_t)n * sizeof(float)), *pieces = malloc((size_t)n * sizeof(float));
    double worst = 0;
    for (size_t i = 0; i < sizeof windows / sizeof windows[0]; i++) {
        int W = windows[i];
        cache_box cb;
        cache_open(&cb, B, H, D, W);
        swa_whole(q, k, v, W, whole);
        swa_chunks(&cb.c, q, k, v, 0, T, 37, pieces);
        HY_ASSERT(cb.c.pos == T, "cache position %lld after %d rows", (long long)cb.c.pos, T);
        double err = hy_max_rel_err_f(pieces, whole, n);
        printf("  W=%d chunks of 37: rel err %.3g\n", W, err);
        HY_ASSERT(err <= 1e-5, "swa chunked W=%d: rel err %.3g", W, err);
        if (err > worst) worst = err;
        free(cb.mem);
    }
    printf("  worst chunked rel err %.3g\n", worst);
    free(whole);
    free(pieces);
}

HY_TEST(swa_step_equals_forward, "cpu") {
    int B = 2, T = 100, H = 3, D = 16, W = 32;
    hy_rng r;
    hy_rng_seed(&r, 12);
    hy_tensor *q = rand4(&r, B, T, H, D, "q", 1.5f, 0), *k = rand4(&r, B, T, H, D, "k", 1.5f, 0);
    hy_tensor *v = rand4(&r, B, T, H, D, "v", 1.0f, 0);
    long n = (long)hy_numel(q);
    float *whole = malloc((size_t)n * sizeof(float)), *steps = malloc((size_t)n * sizeof(float));
    float *again = malloc((size_t)n * sizeof(float)), *mixed = malloc((size_t)n * sizeof(float));
    swa_whole(q, k, v, W, whole);
    cache_box cb;
    cache_open(&cb, B, H, D, W);
    swa_steps(&cb.c, q, k, v, 0, T, steps);
    double err = hy_max_rel_err_f(steps, whole, n);
    printf("  steps: rel err %.3g\n", err);
    HY_ASSERT(err <= 1e-5, "swa steps: rel err %.3g", err);

    // After a reset the cache behaves like a new one.
    hy_swa_cache_reset(&cb.c);
    swa_steps(&cb.c, q, k, v, 0, T, again);
    HY_ASSERT(memcmp(steps, again, (size_t)n * sizeof(float)) == 0, "steps differ after reset");

    // The serving pattern: chunked prefill of 45 rows, then token steps.
    hy_swa_cache_reset(&cb.c);
    swa_chunks(&cb.c, q, k, v, 0, 45, 20, mixed);
    swa_steps(&cb.c, q, k, v, 45, T, mixed);
    double err2 = hy_max_rel_err_f(mixed, whole, n);
    printf("  prefill + steps: rel err %.3g\n", err2);
    HY_ASSERT(err2 <= 1e-5, "swa prefill + steps: rel err %.3g", err2);
    free(cb.mem);
    free(whole);
    free(steps);
    free(again);
    free(mixed);
}

// ---------------------------------------------------------------- full causal

HY_TEST(swa_full_causal, "cpu") {
    const swa_case cases[] = {{1, 40, 2, 8, 0, 45}, {2, 40, 2, 8, 0, INT_MAX},
                              {1, 33, 3, 8, 6, INT_MAX}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        swa_case c = cases[i];
        hy_rng r;
        hy_rng_seed(&r, 300 + i);
        hy_tensor *q = rand4(&r, c.B, c.T, c.H, c.D, "q", 1.5f, 0);
        hy_tensor *k = rand4(&r, c.B, c.T, c.H, c.D, "k", 1.5f, 0);
        hy_tensor *v = rand4(&r, c.B, c.T, c.H, c.D, "v", 1.0f, 0);
        hy_tensor *pk = c.P ? rand4(&r, c.B, c.P, c.H, c.D, "pk", 1.5f, 0) : NULL;
        hy_tensor *pv = c.P ? rand4(&r, c.B, c.P, c.H, c.D, "pv", 1.0f, 0) : NULL;
        long n = (long)hy_numel(q);
        double *ref = malloc((size_t)n * sizeof(double));
        swa_case full = c;
        full.W = c.P + c.T;  // every earlier position: plain causal attention
        naive_swa(&full, hy_f32(q), hy_f32(k), hy_f32(v), pk ? hy_f32(pk) : NULL,
                  pv ? hy_f32(pv) : NULL, NULL, ref, NULL, NULL, NULL);
        env e;
        env_open(&e, 0);
        double err = hy_max_rel_err(hy_f32(hy_swa(&e.tape, q, k, v, pk, pv, c.W)), ref, n);
        printf("  T=%d P=%d window=%d: rel err vs causal %.3g\n", c.T, c.P, c.W, err);
        HY_ASSERT(err <= 1e-5, "swa full causal window=%d: rel err %.3g", c.W, err);
        env_close(&e);
        free(ref);
    }
}

// ---------------------------------------------------------------- misuse

HY_TEST(swa_misuse, "cpu") {
    hy_rng r;
    hy_rng_seed(&r, 13);
    hy_tensor *q = rand4(&r, 2, 5, 2, 4, "q", 1, 0), *k = rand4(&r, 2, 5, 2, 4, "k", 1, 0);
    hy_tensor *v = rand4(&r, 2, 5, 2, 4, "v", 1, 0);
    hy_tensor *k_short = rand4(&r, 2, 4, 2, 4, "k_short", 1, 0);
    hy_tensor *pk = rand4(&r, 2, 3, 2, 4, "pk", 1, 0), *pv = rand4(&r, 2, 3, 2, 4, "pv", 1, 0);
    hy_tensor *pk_heads = rand4(&r, 2, 3, 3, 4, "pk_heads", 1, 0);
    env e;
    env_open(&e, 0);
    HY_EXPECT_ERROR(hy_swa(&e.tape, q, k, v, NULL, NULL, 0), HY_EXIT_USAGE, "swa");
    HY_EXPECT_ERROR(hy_swa(&e.tape, q, k, v, NULL, NULL, -3), HY_EXIT_USAGE, "swa");
    HY_EXPECT_ERROR(hy_swa(&e.tape, q, k_short, v, NULL, NULL, 4), HY_EXIT_USAGE, "swa");
    HY_EXPECT_ERROR(hy_swa(&e.tape, q, k, v, pk, NULL, 4), HY_EXIT_USAGE, "swa");
    HY_EXPECT_ERROR(hy_swa(&e.tape, q, k, v, pk_heads, pk_heads, 4), HY_EXIT_USAGE, "swa");
    hy_swa_cache c;
    double mem[64];
    HY_EXPECT_ERROR(hy_swa_cache_init(&c, 2, 2, 4, 0, (float *)mem), HY_EXIT_USAGE, "swa_cache");
    HY_EXPECT_ERROR(hy_swa_cache_init(&c, 2, 2, 4, 3, NULL), HY_EXIT_USAGE, "swa_cache");
    // A prefix longer than the window is fine: the rows outside it are ignored.
    hy_swa(&e.tape, q, k, v, pk, pv, 2);
    env_close(&e);
}
