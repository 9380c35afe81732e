// swa.c: sliding-window causal attention on the CPU, flash-style.
//
// Every (batch, head) pair is independent and owns disjoint rows of q, k, v,
// o and of their gradients, so the loops over pairs run in parallel with no
// atomics. Within a pair, a query's window is at most two runs of
// consecutive rows (prefix then chunk; or the two sides of the ring's wrap),
// each a base pointer, an offset and a row stride of H * D floats.
#include "swa.h"
#include "mixers_cuda.h"

#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "../autograd/check.h"

#ifdef _OPENMP
#define SWA_OMP(x) _Pragma(#x)
#else
#define SWA_OMP(x)
#endif

#define SWA_BLOCK 64                    // keys per online-softmax step: one rescale per block
#define SWA_PAR_MIN ((int64_t)1 << 16)  // scores below which threads cost more than they save

// Consecutive rows of one (b, h): row r of the keys at k + off + r * stride.
typedef struct {
    const float *k, *v;  // whole arrays (chunk, prefix or ring), not offset
    int64_t off;         // element offset of the first row; gradients use the same offset
    int n;               // rows, 0 for an empty run
} swa_run;

// Sizes and inputs of one hy_swa call (or of its backward).
typedef struct {
    int B, T, H, D, P, W;  // P: prefix rows in use
    int64_t hd;            // row stride, H * D
    float scale;           // 1 / sqrt(D)
    const float *q, *k, *v, *pk, *pv;
} swa_geom;

// Threads pay only when there are enough (query, key) scores to share out.
static inline int swa_big(int64_t scores) { return scores > SWA_PAR_MIN; }

static inline float dotf(const float *a, const float *b, int D) {
    float s = 0;
    SWA_OMP(omp simd reduction(+ : s))
    for (int d = 0; d < D; d++) s += a[d] * b[d];
    return s;
}

// ---------------------------------------------------------------- online softmax of one row

typedef struct {
    float m;      // running max of the scores seen so far
    double l;     // running sum of exp(score - m)
    double *acc;  // (D) running sum of exp(score - m) * v
} swa_row;

static void row_start(swa_row *r, double *acc, int D) {
    r->m = -INFINITY;
    r->l = 0;
    r->acc = acc;
    memset(acc, 0, (size_t)D * sizeof(double));
}

// Fold a run of keys into the row, SWA_BLOCK keys at a time: the block's
// scores go to a stack buffer, so the rescale of acc happens once per block
// rather than once per key, and nothing longer than a block is stored.
static void row_fold(swa_row *r, const float *q, const swa_run *run, int64_t stride, int D,
                     float scale) {
    float s[SWA_BLOCK];
    for (int j0 = 0; j0 < run->n; j0 += SWA_BLOCK) {
        int nb = run->n - j0 < SWA_BLOCK ? run->n - j0 : SWA_BLOCK;
        const float *kb = run->k + run->off + j0 * stride, *vb = run->v + run->off + j0 * stride;
        float bm = -INFINITY;
        for (int j = 0; j < nb; j++) {
            s[j] = dotf(q, kb + j * stride, D) * scale;
            bm = fmaxf(bm, s[j]);
        }
        if (bm > r->m) {
            double c = exp((double)r->m - bm);  // 0 on the first block (m = -inf, acc = 0)
            r->l *= c;
            for (int d = 0; d < D; d++) r->acc[d] *= c;
            r->m = bm;
        }
        for (int j = 0; j < nb; j++) {
            const float *vj = vb + j * stride;
            double p = expf(s[j] - r->m);
            r->l += p;
            for (int d = 0; d < D; d++) r->acc[d] += p * vj[d];
        }
    }
}

// Normalise into o (D); returns the row's log-sum-exp. The window always
// holds the query's own key, so l >= 1.
static float row_finish(const swa_row *r, float *o, int D) {
    for (int d = 0; d < D; d++) o[d] = (float)(r->acc[d] / r->l);
    return (float)(r->m + log(r->l));
}

// ---------------------------------------------------------------- hy_swa forward

// The window of chunk query i (absolute position P + i) of pair (b, h):
// prefix rows, then chunk rows, oldest first.
static void query_runs(const swa_geom *g, int b, int h, int i, swa_run run[2]) {
    int64_t p = (int64_t)g->P + i, lo = p - g->W + 1 > 0 ? p - g->W + 1 : 0;
    run[0].k = g->pk, run[0].v = g->pv;
    run[0].n = lo < g->P ? (int)(g->P - lo) : 0;
    run[0].off = run[0].n ? ((int64_t)b * g->P + lo) * g->hd + (int64_t)h * g->D : 0;
    int64_t c0 = lo > g->P ? lo - g->P : 0;  // first chunk row in the window
    run[1].k = g->k, run[1].v = g->v;
    run[1].n = (int)(i - c0 + 1);
    run[1].off = ((int64_t)b * g->T + c0) * g->hd + (int64_t)h * g->D;
}

// Scores one call evaluates, at most: every query times its window.
static inline int64_t swa_scores(const swa_geom *g) {
    int64_t span = g->W < (int64_t)g->P + g->T ? g->W : (int64_t)g->P + g->T;
    return (int64_t)g->B * g->H * g->T * span;
}

static int64_t row_at(const swa_geom *g, int b, int i, int h) {
    return ((int64_t)b * g->T + i) * g->hd + (int64_t)h * g->D;
}

// All queries of pair (b, h); lse (B, T, H) may be NULL (nothing recorded).
static void forward_pair(const swa_geom *g, int b, int h, double *acc, float *o, float *lse) {
    for (int i = 0; i < g->T; i++) {
        swa_run run[2];
        query_runs(g, b, h, i, run);
        int64_t qo = row_at(g, b, i, h);
        swa_row r;
        row_start(&r, acc, g->D);
        for (int s = 0; s < 2; s++) row_fold(&r, g->q + qo, &run[s], g->hd, g->D, g->scale);
        float l = row_finish(&r, o + qo, g->D);
        if (lse) lse[((int64_t)b * g->T + i) * g->H + h] = l;
    }
}

static void forward_all(const swa_geom *g, hy_arena *scratch, float *o, float *lse) {
    hy_arena_mark_t mark = hy_arena_mark(scratch);
    // One double accumulator row per pair: (B * H, D).
    double *acc = (double *)hy_arena_alloc(scratch, (size_t)g->B * g->H * g->D * sizeof(double));
    int pairs = g->B * g->H;
    SWA_OMP(omp parallel for schedule(static) if (swa_big(swa_scores(g))))
    for (int bh = 0; bh < pairs; bh++)
        forward_pair(g, bh / g->H, bh % g->H, acc + (int64_t)bh * g->D, o, lse);
    hy_arena_reset_to(scratch, mark);
}

// ---------------------------------------------------------------- hy_swa backward

typedef struct {
    int W;
    hy_tensor *lse;      // (B, T, H) log-sum-exp of every query row
    hy_tensor *pk, *pv;  // (B, P, H, D) copy of the prefix rows inside the window, or NULL
} swa_ctx;

typedef struct {
    float *dq, *dk, *dv;         // (B, T, H, D) accumulators, NULL when not needed
    const float *o, *dout, *lse;  // saved output, its gradient, log-sum-exps
} swa_grads;

// With p = exp(s - lse), dp = dO . v and D = dO . O (= sum p dp):
//   ds = p (dp - D), dq += scale ds k, dk += scale ds q, dv += p dO.
// Prefix rows take part in dq but get no gradient themselves.
static void backward_query(const swa_geom *g, const swa_grads *gr, int b, int h, int i,
                           double *dqa) {
    int D = g->D;
    int64_t qo = row_at(g, b, i, h);
    const float *qi = g->q + qo, *doi = gr->dout + qo;
    double Di = 0;
    for (int d = 0; d < D; d++) Di += (double)doi[d] * gr->o[qo + d];
    float lse = gr->lse[((int64_t)b * g->T + i) * g->H + h];
    swa_run run[2];
    query_runs(g, b, h, i, run);
    memset(dqa, 0, (size_t)D * sizeof(double));
    for (int s = 0; s < 2; s++) {
        for (int j = 0; j < run[s].n; j++) {
            int64_t ko = run[s].off + j * g->hd;
            const float *kj = run[s].k + ko, *vj = run[s].v + ko;
            float p = expf(dotf(qi, kj, D) * g->scale - lse);
            double ds = p * ((double)dotf(doi, vj, D) - Di);
            if (gr->dq)
                for (int d = 0; d < D; d++) dqa[d] += ds * kj[d];
            if (s == 0) continue;
            float dss = (float)ds * g->scale;
            if (gr->dk)
                for (int d = 0; d < D; d++) gr->dk[ko + d] += dss * qi[d];
            if (gr->dv)
                for (int d = 0; d < D; d++) gr->dv[ko + d] += p * doi[d];
        }
    }
    if (gr->dq)
        for (int d = 0; d < D; d++) gr->dq[qo + d] += (float)(g->scale * dqa[d]);
}

static swa_geom geom_of(const hy_tensor *q, const hy_tensor *k, const hy_tensor *v,
                        const float *pk, const float *pv, int P, int W) {
    swa_geom g;
    g.B = (int)q->shape[0], g.T = (int)q->shape[1], g.H = (int)q->shape[2];
    g.D = (int)q->shape[3], g.P = P, g.W = W;
    g.hd = (int64_t)g.H * g.D;
    g.scale = (float)(1.0 / sqrt((double)g.D));
    g.q = hy_f32(q), g.k = hy_f32(k), g.v = hy_f32(v), g.pk = pk, g.pv = pv;
    return g;
}

static void swa_backward(hy_tape *t, hy_node *n) {
    hy_tensor *q = n->in[0], *k = n->in[1], *v = n->in[2];
    swa_ctx *c = (swa_ctx *)n->ctx;
    int P = c->pk ? (int)c->pk->shape[1] : 0;
    swa_geom g = geom_of(q, k, v, c->pk ? hy_f32(c->pk) : NULL, c->pv ? hy_f32(c->pv) : NULL,
                         P, c->W);
    // Gradient buffers come from scratch too: take them before the mark.
    hy_tensor *dq = hy_grad_acc(t, q), *dk = hy_grad_acc(t, k), *dv = hy_grad_acc(t, v);
    // D_i reads the saved output O (the op's output, alive in the activation
    // arena until the tape resets) instead of recomputing it.
    swa_grads gr = {dq ? hy_f32(dq) : NULL, dk ? hy_f32(dk) : NULL, dv ? hy_f32(dv) : NULL,
                    hy_f32(n->out[0]), hy_f32(hy_grad(t, n->out[0])), hy_f32(c->lse)};
    hy_arena_mark_t mark = hy_arena_mark(t->scratch);
    double *dqa = (double *)hy_arena_alloc(t->scratch, (size_t)g.B * g.H * g.D * sizeof(double));
    int pairs = g.B * g.H;
    SWA_OMP(omp parallel for schedule(static) if (swa_big(swa_scores(&g))))
    for (int bh = 0; bh < pairs; bh++)
        for (int i = 0; i < g.T; i++)
            backward_query(&g, &gr, bh / g.H, bh % g.H, i, dqa + (int64_t)bh * g.D);
    hy_arena_reset_to(t->scratch, mark);
}

// ---------------------------------------------------------------- hy_swa

static void check_qkv(const char *op, const hy_tensor *x) {
    hy_expect_dtype(op, x, HY_F32);
    hy_expect_cpu(op, x);
    hy_expect_ndim(op, x, 4);
}

static void swa_check(const char *op, const hy_tensor *q, const hy_tensor *k, const hy_tensor *v,
                      const hy_tensor *pk, const hy_tensor *pv, int window) {
    HY_REQUIRE(window >= 1, "swa: window must be at least 1, got %d", window);
    check_qkv(op, q);
    check_qkv(op, k);
    check_qkv(op, v);
    hy_expect_same_shape(op, q, k);
    hy_expect_same_shape(op, q, v);
    HY_REQUIRE(q->shape[3] >= 1, "swa: queries '%s' %s have head dimension 0", q->name,
               hy_shape_str(q));
    HY_REQUIRE((pk == NULL) == (pv == NULL),
               "swa: give both prefix keys and values or neither (pk %s, pv %s)",
               pk ? hy_shape_str(pk) : "NULL", pv ? hy_shape_str(pv) : "NULL");
    int64_t P = 0;
    if (pk) {
        check_qkv(op, pk);
        check_qkv(op, pv);
        hy_expect_same_shape(op, pk, pv);
        HY_REQUIRE(pk->shape[0] == q->shape[0] && pk->shape[2] == q->shape[2] &&
                       pk->shape[3] == q->shape[3],
                   "swa: prefix '%s' %s (B, P, H, D) does not match queries '%s' %s "
                   "(B, T, H, D) in B, H or D",
                   pk->name, hy_shape_str(pk), q->name, hy_shape_str(q));
        P = pk->shape[1];
    }
    HY_REQUIRE(P + q->shape[1] < INT_MAX && q->shape[0] * q->shape[2] < INT_MAX,
               "swa: queries '%s' %s with %lld prefix rows are too large", q->name,
               hy_shape_str(q), (long long)P);
}

// The prefix rows inside the window, copied to the activation arena so that
// backward does not depend on the caller's (reused) prefix buffers.
static hy_tensor *save_prefix(hy_tape *t, const hy_tensor *p, int keep, const char *name) {
    int64_t B = p->shape[0], P = p->shape[1], hd = p->shape[2] * p->shape[3];
    int64_t shape[4] = {B, keep, p->shape[2], p->shape[3]};
    hy_tensor *s = hy_tape_new(t, HY_F32, 4, shape, name);  // (B, keep, H, D)
    for (int64_t b = 0; b < B; b++)
        memcpy(hy_f32(s) + b * keep * hd, hy_f32(p) + (b * P + P - keep) * hd,
               (size_t)(keep * hd) * sizeof(float));
    return s;
}

hy_tensor *hy_swa(hy_tape *t, hy_tensor *q, hy_tensor *k, hy_tensor *v, const hy_tensor *pk,
                  const hy_tensor *pv, int window) {
    const char *op = "swa";
    if (q->device == HY_CUDA) return hy_swa_cuda(t, q, k, v, pk, pv, window);
    swa_check(op, q, k, v, pk, pv, window);
    int P = pk ? (int)pk->shape[1] : 0;
    swa_geom g = geom_of(q, k, v, pk ? hy_f32(pk) : NULL, pv ? hy_f32(pv) : NULL, P, window);
    hy_tensor *o = hy_tape_new(t, HY_F32, 4, q->shape, "swa");  // (B, T, H, D)
    // Same rule as hy_tape_record: save the log-sum-exps only if it will record.
    int rec = t->enabled && (q->requires_grad || k->requires_grad || v->requires_grad);
    int64_t ls[3] = {g.B, g.T, g.H};
    hy_tensor *lse = rec ? hy_tape_new(t, HY_F32, 3, ls, "swa.lse") : NULL;  // (B, T, H)
    forward_all(&g, t->scratch, hy_f32(o), lse ? hy_f32(lse) : NULL);
    hy_tensor *ins[3] = {q, k, v};
    hy_node *n = hy_tape_record(t, op, swa_backward, ins, 3, &o, 1);
    if (n) {
        HY_CHECK(lse, "swa: recorded without saved log-sum-exps");
        swa_ctx *c = (swa_ctx *)hy_tape_ctx(t, n, sizeof *c);
        c->W = window, c->lse = lse;
        int keep = P < window - 1 ? P : window - 1;  // older prefix rows are outside every window
        if (keep > 0) {
            c->pk = save_prefix(t, pk, keep, "swa.prefix_k");
            c->pv = save_prefix(t, pv, keep, "swa.prefix_v");
        }
    }
    return o;
}

// ---------------------------------------------------------------- decoding cache

static size_t ring_floats(int B, int H, int D, int W) { return 2 * (size_t)B * W * H * D; }

// Callers pack caches of several layers into one block, so `memory` may be
// only float-aligned: 8 bytes of slack let the double workspace be aligned.
size_t hy_swa_cache_bytes(int B, int H, int D, int W) {
    return ring_floats(B, H, D, W) * sizeof(float) + (size_t)B * H * D * sizeof(double) + 8;
}

void hy_swa_cache_init(hy_swa_cache *c, int B, int H, int D, int W, float *memory) {
    HY_REQUIRE(B >= 1 && H >= 1 && D >= 1 && W >= 1,
               "swa_cache: B, H, D and window must be at least 1, got B=%d H=%d D=%d W=%d", B,
               H, D, W);
    HY_REQUIRE(memory && ((uintptr_t)memory & 3) == 0,
               "swa_cache: memory must be non-NULL and float-aligned (%zu bytes)",
               hy_swa_cache_bytes(B, H, D, W));
    c->B = B, c->H = H, c->D = D, c->W = W;
    c->pos = 0;
    c->k = memory;
    c->v = memory + (size_t)B * W * H * D;
    uintptr_t ws = (uintptr_t)(memory + ring_floats(B, H, D, W));
    c->acc = (double *)((ws + 7) & ~(uintptr_t)7);
}

void hy_swa_cache_reset(hy_swa_cache *c) { c->pos = 0; }

// Copy one position's rows (B, H, D), taken with batch stride src_bstride,
// into its ring slot.
static void ring_put(hy_swa_cache *c, int64_t pos, const float *k, const float *v,
                     int64_t src_bstride) {
    int64_t hd = (int64_t)c->H * c->D, slot = pos % c->W;
    for (int b = 0; b < c->B; b++) {
        memcpy(c->k + ((int64_t)b * c->W + slot) * hd, k + b * src_bstride,
               (size_t)hd * sizeof(float));
        memcpy(c->v + ((int64_t)b * c->W + slot) * hd, v + b * src_bstride,
               (size_t)hd * sizeof(float));
    }
}

// Positions max(0, pos - W + 1) .. pos of pair (b, h), oldest first: at
// most two runs of slots, split where the ring wraps.
static void ring_runs(const hy_swa_cache *c, int b, int h, swa_run run[2]) {
    int64_t hd = (int64_t)c->H * c->D, base = (int64_t)b * c->W * hd + (int64_t)h * c->D;
    int64_t lo = c->pos - c->W + 1 > 0 ? c->pos - c->W + 1 : 0;
    int n = (int)(c->pos - lo + 1), s0 = (int)(lo % c->W);
    int n0 = n < c->W - s0 ? n : c->W - s0;
    run[0] = (swa_run){c->k, c->v, base + s0 * hd, n0};
    run[1] = (swa_run){c->k, c->v, base, n - n0};
}

void hy_swa_step_cpu(hy_swa_cache *c, const float *q, const float *k, const float *v, float *o) {
    int64_t hd = (int64_t)c->H * c->D;
    ring_put(c, c->pos, k, v, hd);
    int pairs = c->B * c->H, D = c->D;
    float scale = (float)(1.0 / sqrt((double)D));
    SWA_OMP(omp parallel for schedule(static) if (swa_big((int64_t)pairs * c->W * D)))
    for (int bh = 0; bh < pairs; bh++) {
        swa_run run[2];
        ring_runs(c, bh / c->H, bh % c->H, run);
        swa_row r;
        row_start(&r, c->acc + (int64_t)bh * D, D);
        // q, o (B, H, D): pair bh's row is at bh * D.
        for (int s = 0; s < 2; s++) row_fold(&r, q + (int64_t)bh * D, &run[s], hd, D, scale);
        row_finish(&r, o + (int64_t)bh * D, D);
    }
    c->pos++;
}

void hy_swa_cache_append(hy_swa_cache *c, const float *k, const float *v, int T) {
    HY_REQUIRE(T >= 0, "swa_cache: cannot append %d positions", T);
    int64_t hd = (int64_t)c->H * c->D;
    // k, v (B, T, H, D): position t of batch b at (b * T + t) * hd.
    for (int t = T > c->W ? T - c->W : 0; t < T; t++)
        ring_put(c, c->pos + t, k + t * hd, v + t * hd, (int64_t)T * hd);
    c->pos += T;
}

int hy_swa_cache_prefix(const hy_swa_cache *c, float *pk, float *pv) {
    int n = (int)(c->pos < c->W - 1 ? c->pos : c->W - 1);
    int64_t hd = (int64_t)c->H * c->D;
    for (int b = 0; b < c->B; b++)
        for (int r = 0; r < n; r++) {
            int64_t slot = (c->pos - n + r) % c->W, src = ((int64_t)b * c->W + slot) * hd;
            memcpy(pk + ((int64_t)b * n + r) * hd, c->k + src, (size_t)hd * sizeof(float));
            memcpy(pv + ((int64_t)b * n + r) * hd, c->v + src, (size_t)hd * sizeof(float));
        }
    return n;
}
