// gdn.c: the gated delta rule, chunkwise WY forward and exact backward (CPU fp32).
//
// Chunkwise form. Inside a chunk of L tokens that starts from state S, let
// g_i = sum_{j<=i} log alpha_j (cumulative log decay, kept in double) and
// gamma_i = exp(g_i). Unrolling the recurrence gives
//   S_i = gamma_i S + sum_{j<=i} exp(g_i - g_j) n_j k_j^T
// where the "new value" n_j = beta_j (v_j - alpha_j S_{j-1} k_j) satisfies the
// unit lower triangular system (I + M) N = diag(beta) V - diag(beta gamma) K S^T,
// M_ij = beta_i (k_i . k_j) exp(g_i - g_j) for j < i. With A = (I + M)^-1,
// W = A diag(beta gamma) K and U = A diag(beta) V (one triangular solve, no
// inverse), N = U - W S^T, and
//   O     = diag(gamma) Q S^T + causal_inclusive(Q K^T * exp(g_i - g_j)) N
//   S_end = gamma_{L-1} S + N^T diag(exp(g_{L-1} - g)) K.
// Only the state crosses chunk boundaries: one sequential pass per head; the
// (b, h) pairs are independent and spread over OpenMP threads, each with its
// own workspace from the scratch arena.
#include "gdn.h"
#include "mixers_cuda.h"

#include <cblas.h>
#include <math.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "../autograd/check.h"

#ifdef _OPENMP
#define GDN_SIMD_SUM(acc) _Pragma("omp simd reduction(+:acc)")
#else
#define GDN_SIMD_SUM(acc)
#endif

// Sizes of one call. Token t of head h of batch b sits at row t of a matrix
// whose row stride is H * D, so CBLAS reads the (B, T, H, D) layout in place.
typedef struct {
    int B, T, H, Dk, Dv, C;
} gdn_dims;

// The (B, T, H, .) tensors of one call, or of one (b, h) pair after
// head_at(); NULL where absent. Forward: the inputs and o. Backward: the
// gradients, with dO in place of o.
typedef struct {
    float *q, *k, *v, *alpha, *beta, *o;
} gdn_ptrs;

static gdn_ptrs head_at(const gdn_dims *d, gdn_ptrs p, int bh) {
    size_t b = (size_t)(bh / d->H), h = (size_t)(bh % d->H), tok = b * d->T * d->H + h;
    gdn_ptrs r = {
        p.q ? p.q + tok * d->Dk : NULL, p.k ? p.k + tok * d->Dk : NULL,
        p.v ? p.v + tok * d->Dv : NULL, p.alpha ? p.alpha + tok : NULL,
        p.beta ? p.beta + tok : NULL,   p.o ? p.o + tok * d->Dv : NULL,
    };
    return r;
}

// ---------------------------------------------------------------- threads and workspace
static int gdn_threads(int pairs) {
#ifdef _OPENMP
    int n = omp_get_max_threads();
    return n < pairs ? n : pairs;
#else
    (void)pairs;
    return 1;
#endif
}

static int gdn_thread_id(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

static size_t round64(size_t bytes) { return (bytes + 63) & ~(size_t)63; }

// Carve `bytes` off a per-thread block (64-byte aligned pieces).
static void *take(char **cur, size_t bytes) {
    void *p = *cur;
    *cur += round64(bytes);
    return p;
}

// Per-thread temporaries of one chunk: L <= C rows.
typedef struct {
    double *g;  // (C) cumulative log decay
    float *m;   // (C, C) beta K K^T decay (strict lower), later Q K^T decay (causal)
    float *wu;  // (C, Dk + Dv) [diag(beta gamma) K | diag(beta) V] -> [W | U] -> [W | N]
} chunk_ws;

static size_t chunk_ws_bytes(const gdn_dims *d) {
    size_t C = (size_t)d->C;
    return round64(C * sizeof(double)) + round64(C * C * sizeof(float)) +
           round64(C * (size_t)(d->Dk + d->Dv) * sizeof(float));
}

static chunk_ws chunk_ws_take(const gdn_dims *d, char **cur) {
    size_t C = (size_t)d->C;
    chunk_ws w;
    w.g = (double *)take(cur, C * sizeof(double));
    w.m = (float *)take(cur, C * C * sizeof(float));
    w.wu = (float *)take(cur, C * (size_t)(d->Dk + d->Dv) * sizeof(float));
    return w;
}

// ---------------------------------------------------------------- chunkwise forward
// X (L, n) := (I + M)^-1 X for M (L, L) strictly lower triangular (the rest of
// m is ignored): row i -= sum_{j<i} M_ij row j, rows in order. Written out
// rather than cblas_strsm: OpenBLAS (pthread build) threads strsm even at
// chunk sizes, and those threads fight the per-head OpenMP threads this runs
// in (forward 3x slower on 2 cores unless OPENBLAS_NUM_THREADS=1). The gemms
// here stay under OpenBLAS's threading threshold.
static void forward_substitute(int L, int n, const float *m, float *x) {
    for (int i = 1; i < L; i++) {
        float *xi = x + (size_t)i * n;
        for (int j = 0; j < i; j++) {
            float mij = m[i * L + j];
            const float *xj = x + (size_t)j * n;
            for (int c = 0; c < n; c++) xi[c] -= mij * xj[c];
        }
    }
}

// One chunk [t0, t0 + L) of one head: writes o (when hd->o is set) and
// advances S (Dv, Dk) in place to the state after the chunk.
static void chunk_forward(const gdn_dims *d, const gdn_ptrs *hd, int t0, int L, float *S,
                          chunk_ws *w) {
    const int Dk = d->Dk, Dv = d->Dv, ld = Dk + Dv, sk = d->H * Dk, sv = d->H * Dv, sa = d->H;
    const float *k = hd->k + (size_t)t0 * sk, *v = hd->v + (size_t)t0 * sv;
    const float *al = hd->alpha + (size_t)t0 * sa, *be = hd->beta + (size_t)t0 * sa;
    double *g = w->g;
    float *m = w->m, *wu = w->wu, *nv = w->wu + Dk;  // nv: the U / N columns
    // Log space keeps the decay ratios exp(g_i - g_j) <= 1 exact even when
    // gamma itself underflows. alpha = 0 would give -inf - -inf: clamp it.
    double acc = 0;
    for (int i = 0; i < L; i++) g[i] = acc += log(fmax((double)al[i * sa], 1e-38));
    // (L, Dk + Dv) right-hand side [diag(beta gamma) K | diag(beta) V]
    for (int i = 0; i < L; i++) {
        float b = be[i * sa], bg = b * (float)exp(g[i]);
        for (int j = 0; j < Dk; j++) wu[i * ld + j] = bg * k[(size_t)i * sk + j];
        for (int j = 0; j < Dv; j++) nv[i * ld + j] = b * v[(size_t)i * sv + j];
    }
    // (L, L) M = strict_lower(diag(beta) K K^T * decay); the solve ignores the rest.
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, L, L, Dk, 1.0f, k, sk, k, sk, 0.0f, m, L);
    for (int i = 0; i < L; i++)
        for (int j = 0; j < i; j++) m[i * L + j] *= be[i * sa] * expf((float)(g[i] - g[j]));
    // [W | U] = (I + M)^-1 [...]: forward substitution on the unit lower triangle.
    forward_substitute(L, ld, m, wu);
    // (L, Dv) N = U - W S^T
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, L, Dv, Dk, -1.0f, wu, ld, S, Dk, 1.0f, nv,
                ld);
    if (hd->o) {
        const float *q = hd->q + (size_t)t0 * sk;
        float *o = hd->o + (size_t)t0 * sv;
        // (L, Dv) O = diag(gamma) Q S^T + causal(Q K^T * decay) N
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, L, Dv, Dk, 1.0f, q, sk, S, Dk, 0.0f, o,
                    sv);
        for (int i = 0; i < L; i++) {
            float gi = (float)exp(g[i]);
            for (int j = 0; j < Dv; j++) o[(size_t)i * sv + j] *= gi;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, L, L, Dk, 1.0f, q, sk, k, sk, 0.0f, m,
                    L);
        for (int i = 0; i < L; i++)
            for (int j = 0; j < L; j++)
                m[i * L + j] = j <= i ? m[i * L + j] * expf((float)(g[i] - g[j])) : 0.0f;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, L, Dv, L, 1.0f, m, L, nv, ld, 1.0f,
                    o, sv);
    }
    // (Dv, Dk) S = gamma_{L-1} S + N^T diag(exp(g_{L-1} - g)) K
    float gl = (float)exp(g[L - 1]);
    for (size_t i = 0; i < (size_t)Dv * Dk; i++) S[i] *= gl;
    for (int i = 0; i < L; i++) {
        float r = expf((float)(g[L - 1] - g[i]));
        for (int j = 0; j < Dv; j++) nv[i * ld + j] *= r;
    }
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Dv, Dk, L, 1.0f, nv, ld, k, sk, 1.0f, S,
                Dk);
}

// All chunks of one head; the last one may be shorter (handled as is, no padding).
static void head_forward(const gdn_dims *d, const gdn_ptrs *hd, float *S, chunk_ws *w) {
    for (int t0 = 0; t0 < d->T; t0 += d->C) {
        int L = d->T - t0 < d->C ? d->T - t0 : d->C;
        chunk_forward(d, hd, t0, L, S, w);
    }
}

// ---------------------------------------------------------------- token recurrence
static inline float dotf(const float *a, const float *b, int n) {
    float acc = 0;
    GDN_SIMD_SUM(acc)
    for (int j = 0; j < n; j++) acc += a[j] * b[j];
    return acc;
}

// One token from state P to state S (Dv, Dk), row by row, so S may alias P:
//   r = v - alpha P k,  S = alpha P + beta r k^T,  o = S q.
// r (Dv) is written when not NULL (the backward keeps it), o when q is set.
static void token_step(int Dk, int Dv, const float *P, float *S, const float *q, const float *k,
                       const float *v, float a, float b, float *r, float *o) {
    for (int i = 0; i < Dv; i++) {
        const float *p = P + (size_t)i * Dk;
        float *s = S + (size_t)i * Dk;
        float ri = v[i] - a * dotf(p, k, Dk), ui = b * ri;
        if (r) r[i] = ri;
        for (int j = 0; j < Dk; j++) s[j] = a * p[j] + ui * k[j];
        if (q) o[i] = dotf(s, q, Dk);
    }
}

void hy_gdn_step_cpu(int B, int H, int Dk, int Dv, const float *q, const float *k, const float *v,
                     const float *alpha, const float *beta, float *S, float *o) {
    HY_REQUIRE(B >= 1 && H >= 1 && Dk >= 1 && Dv >= 1,
               "gdn_step: sizes must be positive (B %d, H %d, Dk %d, Dv %d)", B, H, Dk, Dv);
    size_t SS = (size_t)Dv * Dk;
    // Decoding is one token: threads only pay off for many or large heads.
#pragma omp parallel for if ((size_t)B * H * SS >= ((size_t)1 << 16))
    for (int bh = 0; bh < B * H; bh++)
        token_step(Dk, Dv, S + bh * SS, S + bh * SS, q + (size_t)bh * Dk, k + (size_t)bh * Dk,
                   v + (size_t)bh * Dv, alpha[bh], beta[bh], NULL, o + (size_t)bh * Dv);
}

// Reverse of token_step for one token. P, S: the states before and after it;
// r: its saved residual; dout: dL/do_t or NULL. dS (Dv, Dk) holds dL/dS on
// entry and dL/dP on return. Accumulates into dq, dk (Dk); writes dv (Dv) and
// the token's *da, *db. With Sp = alpha P and u = beta r:
//   S = Sp + u k^T,  r = v - Sp k,  o = S q.
static void token_backward(int Dk, int Dv, const float *P, const float *S, const float *r,
                           const float *q, const float *k, float a, float b, const float *dout,
                           float *dS, float *dq, float *dk, float *dv, float *da, float *db) {
    double sum_a = 0, sum_b = 0;
    for (int i = 0; i < Dv; i++) {
        const float *p = P + (size_t)i * Dk, *s = S + (size_t)i * Dk;
        float *gs = dS + (size_t)i * Dk;
        if (dout) {  // o_i = s . q
            float di = dout[i];
            for (int j = 0; j < Dk; j++) {
                dq[j] += di * s[j];
                gs[j] += di * q[j];
            }
        }
        // Row i of S = Sp + u k^T: du_i = gs . k, dk += u_i gs.
        float du = dotf(gs, k, Dk), ui = b * r[i];
        for (int j = 0; j < Dk; j++) dk[j] += ui * gs[j];
        // u_i = beta r_i; r_i = v_i - Sp_i . k.
        float dr = b * du;
        sum_b += (double)du * r[i];
        dv[i] = dr;
        // dSp_i = gs - dr k (both paths into Sp), dk -= dr Sp_i, then Sp = alpha P.
        float acc = 0, adr = a * dr;
        GDN_SIMD_SUM(acc)
        for (int j = 0; j < Dk; j++) {
            float x = gs[j] - dr * k[j];
            acc += x * p[j];
            dk[j] -= adr * p[j];
            gs[j] = a * x;
        }
        sum_a += acc;
    }
    *da = (float)sum_a;
    *db = (float)sum_b;
}

// ---------------------------------------------------------------- backward
// What forward saves: sizes and a copy of S0 (one state per head; callers
// that carry a prefill or decoding state may overwrite their buffer in
// place). q, k, v, alpha, beta are inputs and stay alive. Everything else is
// recomputed: the chunk start states by a forward sweep over chunks
// (O((T/C) Dv Dk) per head, scratch), and inside each chunk the per-token
// states from the chunk start (O(C Dv Dk)). Storing them in forward would
// hold (T/C) D^2 per head per layer for the whole step, for a saving of one
// state-only sweep (no output) per head.
//
// Within a chunk the backward is token-level reverse mode through the
// recurrence from the recomputed states, not the derivative of the WY
// matrices: it is the simpler of the two, exact (the same function), and
// O(C D^2) per chunk like the recomputation itself.
typedef struct {
    gdn_dims d;
    hy_tensor *S0;  // (B, H, Dv, Dk) saved copy, or NULL for the zero state
} gdn_ctx;

// Per-thread temporaries of the backward.
typedef struct {
    float *bounds;        // (nC, Dv, Dk) the state at the start of each chunk
    float *states;        // (C + 1, Dv, Dk) the states inside one chunk, start included
    float *r;             // (C, Dv) residuals v - alpha P k inside the chunk
    float *dS;            // (Dv, Dk) dL/dS flowing backwards
    float *dq, *dk, *dv;  // one token's gradients
    chunk_ws chunk;
} bwd_ws;

static int n_chunks(const gdn_dims *d) { return (d->T + d->C - 1) / d->C; }
static int chunk_rows(const gdn_dims *d) { return d->T < d->C ? d->T : d->C; }

static size_t bwd_ws_bytes(const gdn_dims *d) {
    size_t SS = (size_t)d->Dv * d->Dk * sizeof(float), L = (size_t)chunk_rows(d);
    return round64((size_t)n_chunks(d) * SS) + round64((L + 1) * SS) +
           round64(L * d->Dv * sizeof(float)) + round64(SS) + 2 * round64(d->Dk * sizeof(float)) +
           round64(d->Dv * sizeof(float)) + chunk_ws_bytes(d);
}

static bwd_ws bwd_ws_take(const gdn_dims *d, char *cur) {
    size_t SS = (size_t)d->Dv * d->Dk * sizeof(float), L = (size_t)chunk_rows(d);
    bwd_ws w;
    w.bounds = (float *)take(&cur, (size_t)n_chunks(d) * SS);
    w.states = (float *)take(&cur, (L + 1) * SS);
    w.r = (float *)take(&cur, L * d->Dv * sizeof(float));
    w.dS = (float *)take(&cur, SS);
    w.dq = (float *)take(&cur, d->Dk * sizeof(float));
    w.dk = (float *)take(&cur, d->Dk * sizeof(float));
    w.dv = (float *)take(&cur, d->Dv * sizeof(float));
    w.chunk = chunk_ws_take(d, &cur);
    return w;
}

// One chunk in reverse: recompute its token states from w->bounds[c], then
// walk them backwards, turning w->dS from dL/dS_end into dL/dS_start.
static void chunk_backward(const gdn_dims *d, const gdn_ptrs *x, const gdn_ptrs *gr, int c,
                           bwd_ws *w) {
    const int Dk = d->Dk, Dv = d->Dv, sk = d->H * Dk, sv = d->H * Dv, sa = d->H;
    size_t SS = (size_t)Dv * Dk;
    int t0 = c * d->C, L = d->T - t0 < d->C ? d->T - t0 : d->C;
    memcpy(w->states, w->bounds + c * SS, SS * sizeof(float));
    for (int i = 0; i < L; i++) {
        size_t t = (size_t)(t0 + i);
        token_step(Dk, Dv, w->states + i * SS, w->states + (i + 1) * SS, NULL, x->k + t * sk,
                   x->v + t * sv, x->alpha[t * sa], x->beta[t * sa], w->r + (size_t)i * Dv, NULL);
    }
    for (int i = L - 1; i >= 0; i--) {
        size_t t = (size_t)(t0 + i);
        float da, db;
        memset(w->dq, 0, Dk * sizeof(float));
        memset(w->dk, 0, Dk * sizeof(float));
        token_backward(Dk, Dv, w->states + i * SS, w->states + (i + 1) * SS, w->r + (size_t)i * Dv,
                       x->q + t * sk, x->k + t * sk, x->alpha[t * sa], x->beta[t * sa],
                       gr->o ? gr->o + t * sv : NULL, w->dS, w->dq, w->dk, w->dv, &da, &db);
        if (gr->q)
            for (int j = 0; j < Dk; j++) gr->q[t * sk + j] += w->dq[j];
        if (gr->k)
            for (int j = 0; j < Dk; j++) gr->k[t * sk + j] += w->dk[j];
        if (gr->v)
            for (int j = 0; j < Dv; j++) gr->v[t * sv + j] += w->dv[j];
        if (gr->alpha) gr->alpha[t * sa] += da;
        if (gr->beta) gr->beta[t * sa] += db;
    }
}

// One head: a forward sweep for the chunk start states, then a reverse sweep.
// S0, dS_end, dS0: this head's (Dv, Dk) blocks or NULL.
static void head_backward(const gdn_dims *d, const gdn_ptrs *x, const gdn_ptrs *gr, const float *S0,
                          const float *dS_end, float *dS0, bwd_ws *w) {
    size_t SS = (size_t)d->Dv * d->Dk;
    int nC = n_chunks(d);
    if (S0)
        memcpy(w->bounds, S0, SS * sizeof(float));
    else
        memset(w->bounds, 0, SS * sizeof(float));
    gdn_ptrs state_only = *x;
    state_only.o = NULL;
    for (int c = 0; c + 1 < nC; c++) {
        memcpy(w->bounds + (c + 1) * SS, w->bounds + c * SS, SS * sizeof(float));
        chunk_forward(d, &state_only, c * d->C, d->C, w->bounds + (c + 1) * SS, &w->chunk);
    }
    if (dS_end)
        memcpy(w->dS, dS_end, SS * sizeof(float));
    else
        memset(w->dS, 0, SS * sizeof(float));
    for (int c = nC - 1; c >= 0; c--) chunk_backward(d, x, gr, c, w);
    if (dS0)
        for (size_t i = 0; i < SS; i++) dS0[i] += w->dS[i];
}

static float *f32_or_null(hy_tensor *x) { return x ? hy_f32(x) : NULL; }

static void gdn_backward(hy_tape *t, hy_node *n) {
    gdn_ctx *c = (gdn_ctx *)n->ctx;
    const gdn_dims *d = &c->d;
    // Gradient buffers come from scratch too: take them before the mark.
    hy_tensor *go = hy_grad(t, n->out[0]), *gs = n->n_out > 1 ? hy_grad(t, n->out[1]) : NULL;
    gdn_ptrs x = {hy_f32(n->in[0]), hy_f32(n->in[1]), hy_f32(n->in[2]),
                  hy_f32(n->in[3]), hy_f32(n->in[4]), NULL};
    gdn_ptrs gr = {f32_or_null(hy_grad_acc(t, n->in[0])), f32_or_null(hy_grad_acc(t, n->in[1])),
                   f32_or_null(hy_grad_acc(t, n->in[2])), f32_or_null(hy_grad_acc(t, n->in[3])),
                   f32_or_null(hy_grad_acc(t, n->in[4])), f32_or_null(go)};
    float *dS0 = f32_or_null(hy_grad_acc(t, n->in[5]));
    const float *S0 = f32_or_null(c->S0), *dS_end = f32_or_null(gs);
    size_t SS = (size_t)d->Dv * d->Dk, per = bwd_ws_bytes(d);
    int pairs = d->B * d->H, nthr = gdn_threads(pairs);
    hy_arena_mark_t mark = hy_arena_mark(t->scratch);
    char *ws = (char *)hy_arena_alloc(t->scratch, per * nthr);
#pragma omp parallel for num_threads(nthr) schedule(dynamic, 1)
    for (int bh = 0; bh < pairs; bh++) {
        bwd_ws w = bwd_ws_take(d, ws + per * gdn_thread_id());
        gdn_ptrs xh = head_at(d, x, bh), gh = head_at(d, gr, bh);
        head_backward(d, &xh, &gh, S0 ? S0 + bh * SS : NULL, dS_end ? dS_end + bh * SS : NULL,
                      dS0 ? dS0 + bh * SS : NULL, &w);
    }
    hy_arena_reset_to(t->scratch, mark);
}

// ---------------------------------------------------------------- the op
static void check_args(const hy_tensor *q, const hy_tensor *k, const hy_tensor *v,
                       const hy_tensor *alpha, const hy_tensor *beta, const hy_tensor *S0,
                       int chunk) {
    const char *op = "gdn";
    const hy_tensor *all[6] = {q, k, v, alpha, beta, S0};
    for (int i = 0; i < 6; i++) {
        if (!all[i]) continue;
        hy_expect_dtype(op, all[i], HY_F32);
        hy_expect_cpu(op, all[i]);
    }
    hy_expect_ndim(op, q, 4);
    hy_expect_same_shape(op, q, k);
    hy_expect_ndim(op, v, 4);
    HY_REQUIRE(
        v->shape[0] == q->shape[0] && v->shape[1] == q->shape[1] && v->shape[2] == q->shape[2],
        "gdn: v '%s' %s must be (B, T, H, Dv) with (B, T, H) of q '%s' %s", v->name,
        hy_shape_str(v), q->name, hy_shape_str(q));
    hy_expect_ndim(op, alpha, 3);
    hy_expect_same_shape(op, alpha, beta);
    HY_REQUIRE(alpha->shape[0] == q->shape[0] && alpha->shape[1] == q->shape[1] &&
                   alpha->shape[2] == q->shape[2],
               "gdn: alpha '%s' %s must be (B, T, H) of q '%s' %s", alpha->name,
               hy_shape_str(alpha), q->name, hy_shape_str(q));
    if (S0)
        HY_REQUIRE(S0->ndim == 4 && S0->shape[0] == q->shape[0] && S0->shape[1] == q->shape[2] &&
                       S0->shape[2] == v->shape[3] && S0->shape[3] == q->shape[3],
                   "gdn: initial state '%s' %s must be (B, H, Dv, Dk) = (%lld, %lld, %lld, %lld)",
                   S0->name, hy_shape_str(S0), (long long)q->shape[0], (long long)q->shape[2],
                   (long long)v->shape[3], (long long)q->shape[3]);
    HY_REQUIRE(chunk >= 1, "gdn: chunk must be >= 1, got %d", chunk);
    for (int i = 0; i < 4; i++)
        HY_REQUIRE(q->shape[i] >= 1 && q->shape[i] <= (1 << 24),
                   "gdn: q '%s' %s: every dimension must be in [1, 2^24]", q->name,
                   hy_shape_str(q));
    HY_REQUIRE(v->shape[3] >= 1 && v->shape[3] <= (1 << 24), "gdn: v '%s' %s: bad Dv", v->name,
               hy_shape_str(v));
    const float *a = hy_f32(alpha);
    for (int64_t i = 0, n = hy_numel(alpha); i < n; i++)
        HY_REQUIRE(!(a[i] < 0), "gdn: alpha '%s' %s must be >= 0, but element %lld is %g",
                   alpha->name, hy_shape_str(alpha), (long long)i, (double)a[i]);
}

hy_tensor *hy_gdn(hy_tape *t, hy_tensor *q, hy_tensor *k, hy_tensor *v, hy_tensor *alpha,
                  hy_tensor *beta, hy_tensor *S0, int chunk, hy_tensor **S_out) {
    if (q->device == HY_CUDA) return hy_gdn_cuda(t, q, k, v, alpha, beta, S0, chunk, S_out);
    check_args(q, k, v, alpha, beta, S0, chunk);
    gdn_dims d = {(int)q->shape[0], (int)q->shape[1], (int)q->shape[2],
                  (int)q->shape[3], (int)v->shape[3], chunk};
    if (d.C > d.T) d.C = d.T;  // a chunk never needs more rows than the sequence
    int64_t os[4] = {d.B, d.T, d.H, d.Dv}, ss[4] = {d.B, d.H, d.Dv, d.Dk};
    hy_tensor *o = hy_tape_new(t, HY_F32, 4, os, "gdn");                        // (B, T, H, Dv)
    hy_tensor *Sf = S_out ? hy_tape_new(t, HY_F32, 4, ss, "gdn.state") : NULL;  // (B, H, Dv, Dk)
    size_t SS = (size_t)d.Dv * d.Dk, per = chunk_ws_bytes(&d);
    int pairs = d.B * d.H, nthr = gdn_threads(pairs);
    hy_arena_mark_t mark = hy_arena_mark(t->scratch);
    float *S = Sf ? hy_f32(Sf) : (float *)hy_arena_alloc(t->scratch, pairs * SS * sizeof(float));
    if (S0)
        memcpy(S, hy_f32(S0), pairs * SS * sizeof(float));
    else
        memset(S, 0, pairs * SS * sizeof(float));
    char *ws = (char *)hy_arena_alloc(t->scratch, per * nthr);
    gdn_ptrs x = {hy_f32(q), hy_f32(k), hy_f32(v), hy_f32(alpha), hy_f32(beta), hy_f32(o)};
#pragma omp parallel for num_threads(nthr) schedule(dynamic, 1)
    for (int bh = 0; bh < pairs; bh++) {
        char *cur = ws + per * gdn_thread_id();
        chunk_ws w = chunk_ws_take(&d, &cur);
        gdn_ptrs xh = head_at(&d, x, bh);
        head_forward(&d, &xh, S + bh * SS, &w);
    }
    hy_arena_reset_to(t->scratch, mark);

    hy_tensor *ins[6] = {q, k, v, alpha, beta, S0}, *outs[2] = {o, Sf};
    hy_node *n = hy_tape_record(t, "gdn", gdn_backward, ins, 6, outs, Sf ? 2 : 1);
    if (n) {
        gdn_ctx *c = (gdn_ctx *)hy_tape_ctx(t, n, sizeof *c);
        c->d = d;
        if (S0) {
            c->S0 = hy_tape_new(t, HY_F32, 4, ss, "gdn.S0");
            memcpy(hy_f32(c->S0), hy_f32(S0), hy_nbytes(S0));
        }
    }
    if (S_out) *S_out = Sf;
    return o;
}
