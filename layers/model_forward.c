// model_forward.c: the blocks of HydraLM and of the dense baseline, shared by
// training (tape on, no state), chunked prefill (tape off, state carried)
// and one-token decoding (tape off, recurrent GDN and ring-buffer SWA).
#include <limits.h>
#include <string.h>

#include "../autograd/check.h"
#include "../cuda/hy_cuda.h"
#include "../cuda/hy_cuda_glue.h"
#include "../cuda/hy_cuda_ops.h"
#include "../cuda/hy_cuda_swa.h"
#include "gdn.h"
#include "model_internal.h"
#include "ops.h"
#include "swa.h"

// A tensor over memory the caller owns (decoding state), metadata in `a`.
hy_tensor *hy_wrap_as(hy_arena *a, void *data, hy_dtype dt, hy_device dev, int ndim,
                      const int64_t *shape, const char *name) {
    hy_tensor *t = hy_arena_meta(a);
    t->dtype = dt;
    t->device = dev;
    t->ndim = ndim;
    memcpy(t->shape, shape, (size_t)ndim * sizeof(int64_t));
    t->data = data;
    t->slot = -1;
    snprintf(t->name, sizeof t->name, "%s", name);
    return t;
}

hy_tensor *hy_wrap(hy_arena *a, float *data, int ndim, const int64_t *shape, const char *name) {
    return hy_wrap_as(a, data, HY_F32, HY_CPU, ndim, shape, name);
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

// The GDN state's conv cache as a tensor: f32 on the CPU, bf16 on the GPU.
static hy_tensor *conv_cache(hy_tape *t, hy_layer_state *st, int gpu, int64_t B, int64_t C,
                             int K) {
    int64_t cs[3] = {B, C, K - 1};
    if (gpu) return hy_wrap_as(t->acts, st->conv16, HY_BF16, HY_CUDA, 3, cs, "conv_cache");
    return hy_wrap(t->acts, st->conv, 3, cs, "conv_cache");
}

static void conv_cache_advance(hy_tape *t, hy_layer_state *st, int gpu, hy_tensor *qkv, int K) {
    int64_t B = qkv->shape[0], T = qkv->shape[1], C = qkv->shape[2];
    if (K < 2) return;
    if (gpu) {
        hy_cuda_conv_cache_update((int)B, (int)T, (int)C, K, qkv->data, st->conv16, NULL);
        return;
    }
    float *tmp = (float *)hy_arena_alloc(t->scratch, (size_t)(B * C * (K - 1)) * sizeof(float));
    conv_cache_update(st->conv, hy_f32(qkv), B, T, C, K, tmp);
}

// One decoding token through the recurrence on the CPU, in place on the state
// (a GPU token takes hy_block_decode_gpu, block_decode_gpu.c).
static hy_tensor *gdn_step(hy_tape *t, hy_layer_state *st, hy_tensor *q, hy_tensor *k,
                           hy_tensor *v, hy_tensor *alpha, hy_tensor *beta, int64_t H,
                           int64_t D) {
    int64_t B = q->shape[0], os[4] = {B, 1, H, D};
    hy_tensor *o = hy_tape_new(t, HY_F32, 4, os, "gdn.step");  // (B, 1, H, D)
    hy_gdn_step_cpu((int)B, (int)H, (int)D, (int)D, hy_f32(q), hy_f32(k), hy_f32(v),
                    hy_f32(alpha), hy_f32(beta), st->S, hy_f32(o));
    return o;
}

// The heads' outputs o (B, T, H, D) from h (B, T, d) and its projection qkv
// (B, T, 3I): short conv, SiLU, q/k norms, the gates' projection, then the
// chunked recurrence (or, decoding on the CPU, the one-token step).
static hy_tensor *gdn_heads(hy_model *m, hy_tape *t, const hy_layer_params *L, hy_layer_state *st,
                            hy_tensor *h, hy_tensor *qkv, int step) {
    const hy_model_config *c = &m->cfg;
    int gpu = qkv->device == HY_CUDA;
    int64_t B = qkv->shape[0], H = c->n_heads, D = c->head_dim, I = H * D;
    int K = c->dn_short_conv_kernel;
    hy_tensor *cache = st ? conv_cache(t, st, gpu, B, 3 * I, K) : NULL;
    hy_tensor *qkv3[3];  // q, k, v (B, T, I)
    hy_gdn_qkv(t, qkv, P(m, L->conv_w), P(m, L->conv_b), cache, (int)H, (int)D, c->dn_norm_qk,
               1e-12f, qkv3);
    if (st) conv_cache_advance(t, st, gpu, qkv, K);
    hy_tensor *q = qkv3[0], *k = qkv3[1], *v = qkv3[2];
    hy_tensor *ab = hy_linear(t, h, P(m, L->ab_w), P(m, L->ab_b));  // (B, T, 2H)
    hy_tensor *alpha, *beta;  // (B, T, H), f32 on both devices
    hy_gdn_gates(t, ab, (int)H, &alpha, &beta);
    if (step) {
        HY_REQUIRE(!gpu, "gdn: a GPU decoding token goes through hy_block_decode_gpu");
        return gdn_step(t, st, q, k, v, alpha, beta, H, D);
    }
    hy_tensor *S0 = NULL, *S_out = NULL;
    int64_t ss[4] = {B, H, D, D};
    if (st) S0 = hy_wrap_as(t->acts, st->S, HY_F32, qkv->device, 4, ss, "gdn.S");
    hy_tensor *o = hy_gdn(t, heads(t, q, H, D), heads(t, k, H, D), heads(t, v, H, D), alpha, beta,
                          S0, c->dn_chunk_size, st ? &S_out : NULL);
    if (st && gpu) hy_cuda_memcpy_d2d(st->S, S_out->data, hy_nbytes(S_out));
    if (st && !gpu) memcpy(st->S, hy_f32(S_out), hy_nbytes(S_out));
    return o;
}

static hy_tensor *gdn_mixer(hy_model *m, hy_tape *t, int i, hy_tensor *h, hy_layer_state *st,
                            int step) {
    const hy_layer_params *L = &m->layer[i];
    hy_tensor *qkv = hy_linear(t, h, P(m, L->qkv), NULL);  // (B, T, 3I)
    // The output gate's projection comes before the thin alpha/beta one (in gdn_heads) so
    // that backward runs the thin one first: its GEMM then writes dh fresh and the wide gate
    // GEMM adds into it (a read its compute hides), instead of the thin GEMM reading and
    // writing all of dh.
    hy_tensor *gate = L->gate >= 0 ? hy_linear(t, h, P(m, L->gate), NULL) : NULL;  // (B, T, I)
    hy_tensor *o = gdn_heads(m, t, L, st, h, qkv, step);  // (B, T, H, D)
    hy_tensor *y = merge_heads(t, o);                     // (B, T, I)
    if (gate) y = hy_silu_gate(t, y, gate);
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

// The keys and values before this chunk that its window can see, as
// (B, n, H, D) tensors: HydraLM's ring buffer or the dense KV cache, on the
// CPU (f32) or the GPU (bf16).
static void attn_prefix(hy_model *m, hy_tape *t, hy_decode_state *ds, int i, hy_tensor **pk,
                        hy_tensor **pv) {
    const hy_model_config *c = &m->cfg;
    hy_layer_state *st = &ds->layer[i];
    int64_t B = ds->B, H = c->n_heads, D = c->head_dim, HD = H * D, n;
    int dense = m->arch == HY_ARCH_DENSE, gpu = ds->device == HY_CUDA;
    void *kb, *vb;
    if (gpu) {
        int W = c->swa_window;
        n = dense ? ds->pos : (ds->pos < W - 1 ? ds->pos : W - 1);
        size_t bytes = (size_t)(B * (n ? n : 1) * HD) * 2;
        kb = hy_arena_alloc(t->scratch, bytes);
        vb = hy_arena_alloc(t->scratch, bytes);
        if (dense) {
            hy_cuda_copy_rows_bf16((int)B, (int)n, (int)HD, st->k16, (int)ds->dense_cap, 0, kb,
                                   (int)n, 0, NULL);
            hy_cuda_copy_rows_bf16((int)B, (int)n, (int)HD, st->v16, (int)ds->dense_cap, 0, vb,
                                   (int)n, 0, NULL);
        } else {
            hy_cuda_ring_read((int)B, (int)H, (int)D, W, ds->pos, (int)n, st->k16, kb, (int)n, NULL);
            hy_cuda_ring_read((int)B, (int)H, (int)D, W, ds->pos, (int)n, st->v16, vb, (int)n, NULL);
        }
    } else if (dense) {
        n = ds->pos;
        kb = dense_prefix(t, st->k, B, ds->dense_cap, n, HD);
        vb = dense_prefix(t, st->v, B, ds->dense_cap, n, HD);
    } else {
        size_t bytes = (size_t)(B * c->swa_window * HD) * sizeof(float);
        kb = hy_arena_alloc(t->scratch, bytes);
        vb = hy_arena_alloc(t->scratch, bytes);
        n = hy_swa_cache_prefix(&st->swa, (float *)kb, (float *)vb);
    }
    int64_t ps[4] = {B, n, H, D};
    hy_dtype dt = gpu ? HY_BF16 : HY_F32;
    *pk = hy_wrap_as(t->acts, kb, dt, ds->device, 4, ps, "prefix_k");
    *pv = hy_wrap_as(t->acts, vb, dt, ds->device, 4, ps, "prefix_v");
}

// After a chunk: its rotated keys and values (B, T, H, D) join the state.
static void attn_remember(hy_model *m, hy_decode_state *ds, int i, hy_tensor *k, hy_tensor *v) {
    const hy_model_config *c = &m->cfg;
    hy_layer_state *st = &ds->layer[i];
    int64_t B = k->shape[0], T = k->shape[1], H = c->n_heads, D = c->head_dim;
    int dense = m->arch == HY_ARCH_DENSE;
    if (ds->device == HY_CUDA && dense) {
        hy_cuda_copy_rows_bf16((int)B, (int)T, (int)(H * D), k->data, (int)T, 0, st->k16,
                               (int)ds->dense_cap, (int)ds->pos, NULL);
        hy_cuda_copy_rows_bf16((int)B, (int)T, (int)(H * D), v->data, (int)T, 0, st->v16,
                               (int)ds->dense_cap, (int)ds->pos, NULL);
    } else if (ds->device == HY_CUDA) {
        hy_cuda_ring_write((int)B, (int)T, (int)H, (int)D, c->swa_window, ds->pos, k->data,
                           st->k16, NULL);
        hy_cuda_ring_write((int)B, (int)T, (int)H, (int)D, c->swa_window, ds->pos, v->data,
                           st->v16, NULL);
    } else if (dense) {
        hy_dense_cache_append(ds, i, hy_f32(k), hy_f32(v), T);
    } else {
        hy_swa_cache_append(&st->swa, hy_f32(k), hy_f32(v), (int)T);
    }
}

// One decoding token of a SWA layer over the ring buffer, on the CPU (a GPU
// token takes hy_block_decode_gpu, block_decode_gpu.c).
static hy_tensor *swa_step(hy_model *m, hy_tape *t, hy_decode_state *ds, int i, hy_tensor *q,
                           hy_tensor *k, hy_tensor *v) {
    const hy_model_config *c = &m->cfg;
    hy_layer_state *st = &ds->layer[i];
    int64_t B = q->shape[0], H = c->n_heads, D = c->head_dim, os[4] = {B, 1, H, D};
    HY_REQUIRE(ds->device == HY_CPU, "swa: a GPU decoding token goes through hy_block_decode_gpu");
    hy_tensor *o = hy_tape_new(t, q->dtype, 4, os, "swa.step");  // (B, 1, H, D)
    hy_swa_step_cpu(&st->swa, hy_f32(q), hy_f32(k), hy_f32(v), hy_f32(o));
    return o;
}

// One decoding token of a dense layer on the GPU: the split-K kernel reads
// the KV cache in place and stores this token's k, v in it (no prefix copy).
static hy_tensor *dense_step_gpu(hy_model *m, hy_tape *t, hy_decode_state *ds, int i,
                                 hy_tensor *q, hy_tensor *k, hy_tensor *v) {
    const hy_model_config *c = &m->cfg;
    hy_layer_state *st = &ds->layer[i];
    int B = (int)q->shape[0], H = c->n_heads, D = c->head_dim, cap = (int)ds->dense_cap;
    int64_t os[4] = {B, 1, H, D};
    hy_tensor *o = hy_tape_new(t, q->dtype, 4, os, "attn.step");  // (B, 1, H, D)
    void *work = hy_arena_alloc(t->scratch, hy_cuda_dense_step_work_bytes(B, H, D, cap));
    hy_cuda_dense_step(B, H, D, cap, (long long)ds->pos, ds->pos_dev, q->data, k->data, v->data,
                       st->k16, st->v16, o->data, work, NULL);
    return o;
}

// RoPE at position pos0, or, inside the decoding graph, at the position the
// graph reads from device memory (decoding only: no tape).
static hy_tensor *rope_at(hy_tape *t, hy_tensor *x, hy_decode_state *ds, int64_t pos0,
                          float base) {
    if (!(ds && ds->pos_dev)) return hy_rope(t, x, pos0, base);
    hy_tensor *y = hy_tape_new(t, x->dtype, 4, x->shape, "rope");  // (B, 1, H, D)
    hy_cuda_rope_fwd_dev((int)x->shape[0], (int)x->shape[1], (int)x->shape[2], (int)x->shape[3],
                         ds->pos_dev, base, x->data, y->data, NULL);
    return y;
}

hy_tensor *hy_dense_heads_step(hy_model *m, hy_tape *t, int i, hy_tensor *qkv,
                               hy_decode_state *ds) {
    const hy_model_config *c = &m->cfg;
    int64_t H = c->n_heads, D = c->head_dim, I = H * D;
    float base = (float)c->swa_rope_base;
    hy_tensor *q = rope_at(t, heads(t, hy_slice_last(t, qkv, 0, I), H, D), ds, ds->pos, base);
    hy_tensor *k = rope_at(t, heads(t, hy_slice_last(t, qkv, I, I), H, D), ds, ds->pos, base);
    hy_tensor *v = heads(t, hy_slice_last(t, qkv, 2 * I, I), H, D);  // (B, 1, H, D)
    return dense_step_gpu(m, t, ds, i, q, k, v);
}

static hy_tensor *attn_mixer(hy_model *m, hy_tape *t, int i, hy_tensor *h, hy_decode_state *ds,
                             int step) {
    const hy_model_config *c = &m->cfg;
    const hy_layer_params *L = &m->layer[i];
    int dense = m->arch == HY_ARCH_DENSE;
    int64_t H = c->n_heads, D = c->head_dim, I = H * D;
    int64_t pos0 = ds ? ds->pos : 0;
    hy_tensor *qkv = hy_linear(t, h, P(m, L->qkv), NULL);  // (B, T, 3I)
    float base = (float)c->swa_rope_base;
    hy_tensor *q, *k, *v;  // (B, T, H, D)
    if (ds && ds->pos_dev) {  // inside the decoding graph: the position in device memory
        q = rope_at(t, heads(t, hy_slice_last(t, qkv, 0, I), H, D), ds, pos0, base);
        k = rope_at(t, heads(t, hy_slice_last(t, qkv, I, I), H, D), ds, pos0, base);
        v = heads(t, hy_slice_last(t, qkv, 2 * I, I), H, D);
    } else {
        hy_tensor *qkv3[3];
        hy_qkv_rope(t, qkv, H, D, pos0, base, qkv3);
        q = qkv3[0], k = qkv3[1], v = qkv3[2];
    }
    int window = dense ? INT_MAX / 2 : c->swa_window;
    hy_tensor *o;
    if (step && !dense) {
        o = swa_step(m, t, ds, i, q, k, v);
    } else {
        hy_tensor *pk = NULL, *pv = NULL;
        if (ds) attn_prefix(m, t, ds, i, &pk, &pv);
        o = hy_swa(t, q, k, v, pk, pv, window);
        if (ds) attn_remember(m, ds, i, k, v);
    }
    return hy_linear(t, merge_heads(t, o), P(m, L->o), NULL);  // (B, T, d)
}

// Block i after its first norm: x (B, T, d) and h = norm1 x -> x + mixer(h) -> ... +
// mlp(norm2 ...). Each residual add and the norm after it are one op (hy_add_rmsnorm);
// next_norm given (the next block's norm1, or the final norm), the block's last add too,
// and *next_h = next_norm(output); mark >= 0: hy_tape_mark(t, mark) before that add, whose
// norm's weight belongs to the next block.
static hy_tensor *block_body(hy_model *m, hy_tape *t, int i, hy_tensor *x, hy_tensor *h,
                             hy_decode_state *ds, int step, hy_tensor *next_norm, int mark,
                             hy_tensor **next_h) {
    const hy_layer_params *L = &m->layer[i];
    float eps = (float)m->cfg.rms_eps;
    hy_tensor *y = (L->kind == HY_LAYER_GDN) ? gdn_mixer(m, t, i, h, ds ? &ds->layer[i] : NULL, step)
                                             : attn_mixer(m, t, i, h, ds, step);
    h = hy_add_rmsnorm(t, x, y, P(m, L->norm2), eps, &x);
    hy_tensor *a = hy_swiglu(t, hy_linear(t, h, P(m, L->w_fused), NULL));  // (B, T, hidden)
    hy_tensor *down = hy_linear(t, a, P(m, L->w_down), NULL);
    if (!next_norm) return hy_add(t, x, down);
    if (mark >= 0) hy_tape_mark(t, mark);
    *next_h = hy_add_rmsnorm(t, x, down, next_norm, eps, &x);
    return x;
}

// Block i: x (B, T, d) -> x + mixer(norm1 x) -> ... + mlp(norm2 ...).
static hy_tensor *block(hy_model *m, hy_tape *t, int i, hy_tensor *x, hy_decode_state *ds,
                        int step) {
    const hy_layer_params *L = &m->layer[i];
    if (step && x->device == HY_CUDA) return hy_block_decode_gpu(m, t, i, x, ds);
    hy_tensor *h = hy_rmsnorm(t, x, P(m, L->norm1), (float)m->cfg.rms_eps);
    return block_body(m, t, i, x, h, ds, step, NULL, -1, NULL);
}

// ---------------------------------------------------------------- recomputation
// A recomputed block is one tape node: input x, output y (kept), and in its
// context the model and the block's index. Its backward replays the block
// on the tape (recording), seeds the replayed output with dy, runs backward
// over the replayed nodes (parameter gradients and x's gradient accumulate
// where they always do) and drops what the replay recorded and allocated.
typedef struct {
    hy_model *m;
    int i;
} replay_ctx;

static void replay_backward(hy_tape *t, hy_node *n) {
    replay_ctx *c = (replay_ctx *)n->ctx;
    hy_tensor *x = n->in[0], *dy = hy_grad(t, n->out[0]);
    hy_grad_acc(t, x);  // x's gradient outlives the replay
    hy_tape_state before = hy_tape_save(t);
    hy_tensor *y = block(c->m, t, c->i, x, NULL, 0);
    // y is new: it takes dy as its gradient (the replay is dy's last reader).
    HY_CHECK(hy_grad_adopt(t, y, dy), "recompute: block %d's replayed output took no gradient",
             c->i);
    hy_tape_backward_from(t, before.n_nodes);
    hy_tape_restore(t, before);
}

static void copy_tensor(hy_tensor *dst, const hy_tensor *src) {
    if (dst->device == HY_CUDA)
        hy_cuda_memcpy_d2d(dst->data, src->data, hy_nbytes(src));
    else
        memcpy(dst->data, src->data, hy_nbytes(src));
}

// Block i without keeping its activations: run untaped, keep only the
// output (allocated before, so the temporaries after it can be dropped),
// and record the replaying node when the tape records. (A forward with the
// tape off, such as validation, also drops each block's temporaries: the
// activation arena is planned for one block at a time.)
static hy_tensor *block_recomputed(hy_model *m, hy_tape *t, int i, hy_tensor *x) {
    hy_tensor *keep = hy_tape_new(t, x->dtype, x->ndim, x->shape, "block");  // (B, T, d)
    hy_tape_state before = hy_tape_save(t);
    int recording = t->enabled;
    t->enabled = 0;
    hy_tensor *y = block(m, t, i, x, NULL, 0);
    t->enabled = recording;
    HY_CHECK(y->dtype == keep->dtype && hy_numel(y) == hy_numel(keep),
             "recompute: block %d's output differs in type or size from its input", i);
    copy_tensor(keep, y);
    hy_tape_restore(t, before);  // nothing was recorded: the activations go
    // The norm weight as an input makes the node record even when x needs
    // no gradient (the first block's input does, through the embedding).
    hy_tensor *ins[2] = {x, P(m, m->layer[i].norm1)};
    hy_node *n = hy_tape_record(t, "block_replay", replay_backward, ins, 2, &keep, 1);
    if (n) {
        replay_ctx *c = (replay_ctx *)hy_tape_ctx(t, n, sizeof *c);
        c->m = m;
        c->i = i;
    }
    return keep;
}

// Embedding and blocks: the residual stream (B, T, d) before the final norm.
static hy_tensor *model_stream(hy_model *m, hy_tape *t, hy_tensor *ids, hy_decode_state *ds,
                               int step) {
    const hy_model_config *c = &m->cfg;
    int pad = m->arch == HY_ARCH_DENSE ? -1 : c->pad_token_id;
    int replay = m->recompute && t && !ds;
    hy_tensor *x = hy_embedding(t, P(m, m->embed), ids, pad);  // (B, T, d)
    for (int i = 0; i < c->n_layers; i++) {
        hy_tape_mark(t, i);  // block i's parameter gradients are final when backward gets here
        x = replay ? block_recomputed(m, t, i, x) : block(m, t, i, x, ds, step);
    }
    return x;
}

// Embedding, blocks and the final norm: the hidden states (B, T, d). Without
// recomputation or GPU decoding, each block's last residual add and the norm after it (the
// next block's first, or the final one) are one op.
static hy_tensor *model_hidden(hy_model *m, hy_tape *t, hy_tensor *ids, hy_decode_state *ds,
                               int step) {
    const hy_model_config *c = &m->cfg;
    float eps = (float)c->rms_eps;
    if ((m->recompute && t && !ds) || (step && ids->device == HY_CUDA) || c->n_layers < 1)
        return hy_rmsnorm(t, model_stream(m, t, ids, ds, step), P(m, m->norm_f), eps);
    int pad = m->arch == HY_ARCH_DENSE ? -1 : c->pad_token_id;
    hy_tensor *x = hy_embedding(t, P(m, m->embed), ids, pad);  // (B, T, d)
    hy_tape_mark(t, 0);  // block 0's parameter gradients are final when backward gets here
    hy_tensor *h = hy_rmsnorm(t, x, P(m, m->layer[0].norm1), eps);
    for (int i = 0; i < c->n_layers; i++) {
        int last = i + 1 == c->n_layers;
        hy_tensor *next = P(m, last ? m->norm_f : m->layer[i + 1].norm1);
        x = block_body(m, t, i, x, h, ds, step, next, last ? -1 : i + 1, &h);
    }
    return h;
}

hy_tensor *hy_model_blocks(hy_model *m, hy_tape *t, hy_tensor *ids, hy_decode_state *ds,
                           int step) {
    if (step && ids->device == HY_CUDA)  // the final norm inside the head's GEMV
        return hy_head_decode_gpu(m, t, model_stream(m, t, ids, ds, step));
    hy_tensor *x = model_hidden(m, t, ids, ds, step);
    return hy_linear(t, x, P(m, m->embed), NULL);  // tied head: (B, T, V)
}

hy_tensor *hy_model_forward(hy_model *m, hy_tape *t, hy_tensor *ids, hy_tensor *targets,
                            int ignore_index, hy_tensor **loss) {
    hy_expect_dtype("model", ids, HY_I32);
    hy_expect_ndim("model", ids, 2);
    HY_REQUIRE(ids->device == hy_model_device(m),
               "model: ids '%s' are on the %s but the model is on the %s", ids->name,
               hy_device_name(ids->device), hy_device_name(hy_model_device(m)));
    hy_tensor *x = model_hidden(m, t, ids, NULL, 0);  // (B, T, d)
    if (!(targets && loss)) return hy_linear(t, x, P(m, m->embed), NULL);  // (B, T, V)
    hy_expect_same_shape("model targets", ids, targets);
    hy_tensor *logits;  // NULL on the GPU (the head and the loss are fused there)
    *loss = hy_head_loss(t, x, P(m, m->embed), targets, ignore_index, &logits);
    return logits;
}
