// model_forward.c: the blocks of HydraLM and of the dense baseline, shared by
// training (tape on, no state), chunked prefill (tape off, state carried)
// and one-token decoding (tape off, recurrent GDN and ring-buffer SWA).
#include <limits.h>
#include <string.h>

#include "../autograd/check.h"
#include "gdn.h"
#include "model_internal.h"
#include "ops.h"
#include "swa.h"

// A tensor over memory the caller owns (decoding state), metadata in `a`.
hy_tensor *hy_wrap(hy_arena *a, float *data, int ndim, const int64_t *shape, const char *name) {
    hy_tensor *t = hy_arena_meta(a);
    t->dtype = HY_F32;
    t->device = HY_CPU;
    t->ndim = ndim;
    memcpy(t->shape, shape, (size_t)ndim * sizeof(int64_t));
    t->data = data;
    t->slot = -1;
    snprintf(t->name, sizeof t->name, "%s", name);
    return t;
}

static hy_tensor *P(hy_model *m, int idx) { return m->params.p[idx].value; }

static hy_tensor *heads(hy_tape *t, hy_tensor *x, int64_t H, int64_t D) {
    int64_t s[4] = {x->shape[0], x->shape[1], H, D};  // (B, T, I) -> (B, T, H, D)
    return hy_view(t->acts, x, 4, s);
}

static hy_tensor *merge_heads(hy_tape *t, hy_tensor *x) {
    int64_t s[3] = {x->shape[0], x->shape[1], x->shape[2] * x->shape[3]};
    return hy_view(t->acts, x, 3, s);
}

// Keep the last K-1 conv inputs: cache (B, C, K-1) <- tail of [cache | x (B, T, C)].
static void conv_cache_update(float *cache, const float *x, int64_t B, int64_t T, int64_t C,
                              int K, float *tmp) {
    int64_t k1 = K - 1;
    for (int64_t b = 0; b < B; b++)
        for (int64_t c = 0; c < C; c++)
            for (int64_t j = 0; j < k1; j++) {
                int64_t idx = T + j;  // position in the concatenation of length k1 + T
                tmp[(b * C + c) * k1 + j] =
                    idx < k1 ? cache[(b * C + c) * k1 + idx] : x[(b * T + idx - k1) * C + c];
            }
    memcpy(cache, tmp, (size_t)(B * C * k1) * sizeof(float));
}

static hy_tensor *gdn_mixer(hy_model *m, hy_tape *t, int i, hy_tensor *h, hy_layer_state *st,
                            int step) {
    const hy_model_config *c = &m->cfg;
    const hy_layer_params *L = &m->layer[i];
    int64_t B = h->shape[0], T = h->shape[1], H = c->n_heads, D = c->head_dim, I = H * D;
    int K = c->dn_short_conv_kernel;
    hy_tensor *qkv = hy_linear(t, h, P(m, L->qkv), NULL);  // (B, T, 3I)
    hy_tensor *cache = NULL;
    if (st) {
        int64_t cs[3] = {B, 3 * I, K - 1};
        cache = hy_wrap(t->acts, st->conv, 3, cs, "conv_cache");
    }
    hy_tensor *cv = hy_silu(t, hy_short_conv(t, qkv, P(m, L->conv_w), P(m, L->conv_b), cache));
    if (st && K > 1) {
        float *tmp = (float *)hy_arena_alloc(t->scratch, (size_t)(B * 3 * I * (K - 1)) * sizeof(float));
        conv_cache_update(st->conv, hy_f32(qkv), B, T, 3 * I, K, tmp);
    }
    hy_tensor *q = hy_slice_last(t, cv, 0, I), *k = hy_slice_last(t, cv, I, I);  // (B, T, I)
    hy_tensor *v = hy_slice_last(t, cv, 2 * I, I);
    if (c->dn_norm_qk) {
        q = hy_l2norm_heads(t, q, (int)D, 1e-12f);
        k = hy_l2norm_heads(t, k, (int)D, 1e-12f);
    }
    hy_tensor *ab = hy_linear(t, h, P(m, L->ab_w), P(m, L->ab_b));  // (B, T, 2H)
    hy_tensor *alpha = hy_sigmoid(t, hy_slice_last(t, ab, 0, H));   // (B, T, H)
    hy_tensor *beta = hy_sigmoid(t, hy_slice_last(t, ab, H, H));    // (B, T, H)
    hy_tensor *o;                                                    // (B, T, H, D)
    if (step) {
        int64_t os[4] = {B, 1, H, D};
        o = hy_tape_new(t, HY_F32, 4, os, "gdn.step");
        hy_gdn_step_cpu((int)B, (int)H, (int)D, (int)D, hy_f32(q), hy_f32(k), hy_f32(v),
                        hy_f32(alpha), hy_f32(beta), st->S, hy_f32(o));
    } else {
        hy_tensor *S0 = NULL, *S_out = NULL;
        if (st) {
            int64_t ss[4] = {B, H, D, D};
            S0 = hy_wrap(t->acts, st->S, 4, ss, "gdn.S");
        }
        o = hy_gdn(t, heads(t, q, H, D), heads(t, k, H, D), heads(t, v, H, D), alpha, beta, S0,
                   c->dn_chunk_size, st ? &S_out : NULL);
        if (st) memcpy(st->S, hy_f32(S_out), hy_nbytes(S_out));
    }
    hy_tensor *y = merge_heads(t, o);  // (B, T, I)
    if (L->gate >= 0) y = hy_mul(t, y, hy_silu(t, hy_linear(t, h, P(m, L->gate), NULL)));
    return hy_linear(t, y, P(m, L->o), NULL);  // (B, T, d)
}

// Contiguous copy of the dense KV cache rows [0, n) as (B, n, H, D).
static float *dense_prefix(hy_tape *t, const float *cache, int64_t B, int64_t cap, int64_t n,
                           int64_t HD) {
    if (B == 1) return (float *)cache;
    float *p = (float *)hy_arena_alloc(t->scratch, (size_t)(B * n * HD) * sizeof(float));
    for (int64_t b = 0; b < B; b++)
        memcpy(p + b * n * HD, cache + b * cap * HD, (size_t)(n * HD) * sizeof(float));
    return p;
}

static hy_tensor *attn_mixer(hy_model *m, hy_tape *t, int i, hy_tensor *h, hy_decode_state *ds,
                             int step) {
    const hy_model_config *c = &m->cfg;
    const hy_layer_params *L = &m->layer[i];
    hy_layer_state *st = ds ? &ds->layer[i] : NULL;
    int dense = m->arch == HY_ARCH_DENSE;
    int64_t B = h->shape[0], T = h->shape[1], H = c->n_heads, D = c->head_dim, I = H * D;
    int64_t pos0 = ds ? ds->pos : 0;
    hy_tensor *qkv = hy_linear(t, h, P(m, L->qkv), NULL);  // (B, T, 3I)
    float base = (float)c->swa_rope_base;
    hy_tensor *q = hy_rope(t, heads(t, hy_slice_last(t, qkv, 0, I), H, D), pos0, base);
    hy_tensor *k = hy_rope(t, heads(t, hy_slice_last(t, qkv, I, I), H, D), pos0, base);
    hy_tensor *v = heads(t, hy_slice_last(t, qkv, 2 * I, I), H, D);  // (B, T, H, D)
    int window = dense ? INT_MAX / 2 : c->swa_window;
    hy_tensor *o;
    if (step && !dense) {
        int64_t os[4] = {B, 1, H, D};
        o = hy_tape_new(t, HY_F32, 4, os, "swa.step");
        hy_swa_step_cpu(&st->swa, hy_f32(q), hy_f32(k), hy_f32(v), hy_f32(o));
    } else {
        hy_tensor *pk = NULL, *pv = NULL;
        if (st) {
            int64_t n;
            float *kb, *vb;
            if (dense) {
                n = ds->pos;
                kb = dense_prefix(t, st->k, B, ds->dense_cap, n, H * D);
                vb = dense_prefix(t, st->v, B, ds->dense_cap, n, H * D);
            } else {
                size_t bytes = (size_t)(B * c->swa_window * H * D) * sizeof(float);
                kb = (float *)hy_arena_alloc(t->scratch, bytes);
                vb = (float *)hy_arena_alloc(t->scratch, bytes);
                n = hy_swa_cache_prefix(&st->swa, kb, vb);
            }
            int64_t ps[4] = {B, n, H, D};
            pk = hy_wrap(t->acts, kb, 4, ps, "prefix_k");
            pv = hy_wrap(t->acts, vb, 4, ps, "prefix_v");
        }
        o = hy_swa(t, q, k, v, pk, pv, window);
        if (st && !dense) hy_swa_cache_append(&st->swa, hy_f32(k), hy_f32(v), (int)T);
        if (st && dense) hy_dense_cache_append(ds, i, hy_f32(k), hy_f32(v), T);
    }
    return hy_linear(t, merge_heads(t, o), P(m, L->o), NULL);  // (B, T, d)
}

hy_tensor *hy_model_blocks(hy_model *m, hy_tape *t, hy_tensor *ids, hy_decode_state *ds,
                           int step) {
    const hy_model_config *c = &m->cfg;
    float eps = (float)c->rms_eps;
    int pad = m->arch == HY_ARCH_DENSE ? -1 : c->pad_token_id;
    hy_tensor *x = hy_embedding(t, P(m, m->embed), ids, pad);  // (B, T, d)
    for (int i = 0; i < c->n_layers; i++) {
        const hy_layer_params *L = &m->layer[i];
        hy_tensor *h = hy_rmsnorm(t, x, P(m, L->norm1), eps);
        hy_tensor *y = (L->kind == HY_LAYER_GDN)
                           ? gdn_mixer(m, t, i, h, ds ? &ds->layer[i] : NULL, step)
                           : attn_mixer(m, t, i, h, ds, step);
        x = hy_add(t, x, y);
        h = hy_rmsnorm(t, x, P(m, L->norm2), eps);
        hy_tensor *a = hy_swiglu(t, hy_linear(t, h, P(m, L->w_fused), NULL));  // (B, T, hidden)
        x = hy_add(t, x, hy_linear(t, a, P(m, L->w_down), NULL));
    }
    x = hy_rmsnorm(t, x, P(m, m->norm_f), eps);
    return hy_linear(t, x, P(m, m->embed), NULL);  // tied head: (B, T, V)
}

hy_tensor *hy_model_forward(hy_model *m, hy_tape *t, hy_tensor *ids, hy_tensor *targets,
                            int ignore_index, hy_tensor **loss) {
    hy_expect_dtype("model", ids, HY_I32);
    hy_expect_ndim("model", ids, 2);
    hy_tensor *logits = hy_model_blocks(m, t, ids, NULL, 0);  // (B, T, V)
    if (targets && loss) {
        hy_expect_same_shape("model targets", ids, targets);
        *loss = hy_cross_entropy(t, logits, targets, ignore_index);
    }
    return logits;
}
