// model_decode.c: decoding state, chunked prefill and one-token steps.
//
// HydraLM's state is one fixed block sized at init (GDN state and conv
// cache per GDN layer, a W-row ring buffer per SWA layer): it never grows
// with the tokens processed. The dense baseline keeps a KV cache per layer
// that grows (capacity doubling) with every token: that is its cost.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../autograd/check.h"
#include "../cuda/hy_cuda.h"
#include "../cuda/hy_cuda_glue.h"
#include "../cuda/hy_cuda_ops.h"
#include "../cuda/hy_cuda_swa.h"
#include "model_internal.h"

static size_t gdn_floats(const hy_model_config *c, int B, size_t *conv) {
    size_t I = (size_t)c->n_heads * c->head_dim;
    *conv = (size_t)B * 3 * I * (c->dn_short_conv_kernel - 1);
    return (size_t)B * c->n_heads * c->head_dim * c->head_dim;
}

// GPU state: per GDN layer S (B, H, D, D) f32 and the conv cache bf16, per
// SWA layer two bf16 rings (B, W, H, D); one device allocation.
static size_t gpu_layer_bytes(const hy_model *m, int i, int B, size_t *S_bytes) {
    const hy_model_config *c = &m->cfg;
    size_t conv, S = gdn_floats(c, B, &conv);
    *S_bytes = S * sizeof(float);
    if (m->layer[i].kind == HY_LAYER_GDN) return *S_bytes + conv * 2;
    return 2 * (size_t)B * c->swa_window * c->n_heads * c->head_dim * 2;
}

static void decode_init_gpu(hy_decode_state *s, const hy_model *m, int B) {
    size_t total = 0, Sb;
    for (int i = 0; i < m->cfg.n_layers; i++) total += (gpu_layer_bytes(m, i, B, &Sb) + 255) & ~(size_t)255;
    s->block = hy_cuda_malloc(total ? total : 256);
    hy_cuda_memset(s->block, 0, total ? total : 256);
    s->bytes = total;
    char *p = (char *)s->block;
    for (int i = 0; i < m->cfg.n_layers; i++) {
        hy_layer_state *L = &s->layer[i];
        size_t bytes = gpu_layer_bytes(m, i, B, &Sb);
        if (m->layer[i].kind == HY_LAYER_GDN) {
            L->S = (float *)p;
            L->conv16 = p + Sb;
        } else {
            L->k16 = p;
            L->v16 = p + bytes / 2;
        }
        p += (bytes + 255) & ~(size_t)255;
    }
}

void hy_decode_init(hy_decode_state *s, const hy_model *m, int B) {
    memset(s, 0, sizeof *s);
    s->model = m;
    s->B = B;
    s->device = hy_model_device(m);
    const hy_model_config *c = &m->cfg;
    if (m->arch == HY_ARCH_DENSE) return;  // caches grow on first use
    if (s->device == HY_CUDA) {
        decode_init_gpu(s, m, B);
        return;
    }
    size_t total = 0;
    for (int i = 0; i < c->n_layers; i++) {
        if (m->layer[i].kind == HY_LAYER_GDN) {
            size_t conv, S = gdn_floats(c, B, &conv);
            total += (S + conv) * sizeof(float);
        } else {
            total += hy_swa_cache_bytes(B, c->n_heads, c->head_dim, c->swa_window);
        }
    }
    s->block = calloc(1, total ? total : 1);
    HY_CHECK(s->block, "decode state: cannot reserve %zu bytes", total);
    s->bytes = total;
    char *p = (char *)s->block;
    for (int i = 0; i < c->n_layers; i++) {
        hy_layer_state *L = &s->layer[i];
        if (m->layer[i].kind == HY_LAYER_GDN) {
            size_t conv, S = gdn_floats(c, B, &conv);
            L->S = (float *)p;
            L->conv = L->S + S;
            p += (S + conv) * sizeof(float);
        } else {
            hy_swa_cache_init(&L->swa, B, c->n_heads, c->head_dim, c->swa_window, (float *)p);
            p += hy_swa_cache_bytes(B, c->n_heads, c->head_dim, c->swa_window);
        }
    }
}

void hy_decode_reset(hy_decode_state *s) {
    const hy_model *m = s->model;
    s->pos = 0;
    if (m->arch == HY_ARCH_DENSE) return;  // rows past pos are never read
    if (s->device == HY_CUDA) {
        hy_cuda_memset(s->block, 0, s->bytes);
        return;
    }
    memset(s->block, 0, s->bytes);
    for (int i = 0; i < m->cfg.n_layers; i++)
        if (m->layer[i].kind == HY_LAYER_SWA) hy_swa_cache_reset(&s->layer[i].swa);
}

// The decoding graph and what it owns; the next step records it again.
static void graph_drop(hy_decode_state *s) {
    if (!s->graph) return;
    hy_cuda_graph_destroy(s->graph);
    hy_cuda_graph_destroy(s->graph_greedy);
    for (int i = 0; i < HY_GREEDY_RING; i++) hy_cuda_event_free(s->ring_ev[i]);
    hy_cuda_host_free(s->ring);
    hy_arena_free(&s->graph_work);
    free(s->ids_held);
    s->graph = s->graph_greedy = NULL;
    s->ring = NULL;
    s->ids_held = NULL;
}

void hy_decode_free(hy_decode_state *s) {
    if (s->device == HY_CUDA) {
        graph_drop(s);
        if (s->block) hy_cuda_free(s->block);
        for (int i = 0; i < HY_MAX_LAYERS; i++)
            if (s->model && s->model->arch == HY_ARCH_DENSE && s->layer[i].k16) {
                hy_cuda_free(s->layer[i].k16);
                hy_cuda_free(s->layer[i].v16);
            }
        memset(s, 0, sizeof *s);
        return;
    }
    free(s->block);
    for (int i = 0; i < HY_MAX_LAYERS; i++) {
        free(s->layer[i].k);
        free(s->layer[i].v);
    }
    memset(s, 0, sizeof *s);
}

// Dense on the GPU: grow the bf16 caches (B, cap, H, D) to `cap` rows.
static void dense_grow_gpu(hy_decode_state *s, int64_t cap, int64_t HD) {
    const hy_model_config *c = &s->model->cfg;
    for (int i = 0; i < c->n_layers; i++) {
        hy_layer_state *L = &s->layer[i];
        void *k = hy_cuda_malloc((size_t)(s->B * cap * HD) * 2);
        void *v = hy_cuda_malloc((size_t)(s->B * cap * HD) * 2);
        if (s->pos > 0) {
            hy_cuda_copy_rows_bf16(s->B, (int)s->pos, (int)HD, L->k16, (int)s->dense_cap, 0, k,
                                   (int)cap, 0, NULL);
            hy_cuda_copy_rows_bf16(s->B, (int)s->pos, (int)HD, L->v16, (int)s->dense_cap, 0, v,
                                   (int)cap, 0, NULL);
        }
        if (L->k16) {
            hy_cuda_free(L->k16);
            hy_cuda_free(L->v16);
        }
        L->k16 = k, L->v16 = v;
    }
    s->bytes = (size_t)(2 * c->n_layers) * (size_t)(s->B * cap * HD) * 2;
}

// Dense: make room for `need` rows per batch row (B, cap, H, D).
static void dense_reserve(hy_decode_state *s, int64_t need) {
    if (need <= s->dense_cap) return;
    const hy_model_config *c = &s->model->cfg;
    int64_t cap = s->dense_cap ? s->dense_cap : 256;
    while (cap < need) cap *= 2;
    int64_t HD = (int64_t)c->n_heads * c->head_dim;
    if (s->device == HY_CUDA) {
        dense_grow_gpu(s, cap, HD);
        s->dense_cap = cap;
        return;
    }
    for (int i = 0; i < c->n_layers; i++) {
        hy_layer_state *L = &s->layer[i];
        float *k = (float *)malloc((size_t)(s->B * cap * HD) * sizeof(float));
        float *v = (float *)malloc((size_t)(s->B * cap * HD) * sizeof(float));
        HY_CHECK(k && v, "dense KV cache: cannot grow to %lld positions", (long long)cap);
        for (int64_t b = 0; b < s->B && s->pos > 0; b++) {
            memcpy(k + b * cap * HD, L->k + b * s->dense_cap * HD, (size_t)(s->pos * HD) * sizeof(float));
            memcpy(v + b * cap * HD, L->v + b * s->dense_cap * HD, (size_t)(s->pos * HD) * sizeof(float));
        }
        free(L->k);
        free(L->v);
        L->k = k, L->v = v;
    }
    s->dense_cap = cap;
    s->bytes = (size_t)(2 * c->n_layers) * (size_t)(s->B * cap * HD) * sizeof(float);
}

void hy_dense_cache_append(hy_decode_state *s, int i, const float *k, const float *v, int64_t T) {
    const hy_model_config *c = &s->model->cfg;
    int64_t HD = (int64_t)c->n_heads * c->head_dim;
    hy_layer_state *L = &s->layer[i];
    for (int64_t b = 0; b < s->B; b++) {
        memcpy(L->k + (b * s->dense_cap + s->pos) * HD, k + b * T * HD, (size_t)(T * HD) * sizeof(float));
        memcpy(L->v + (b * s->dense_cap + s->pos) * HD, v + b * T * HD, (size_t)(T * HD) * sizeof(float));
    }
}

static void run(hy_model *m, hy_decode_state *s, const int32_t *ids, int T, float *logits,
                hy_arena *work, int step) {
    HY_REQUIRE(T >= 1, "prefill: needs at least one token");
    HY_REQUIRE(work->device == s->device, "prefill: the work arena is on the %s, the model on the %s",
               hy_device_name(work->device), hy_device_name(s->device));
    hy_arena_mark_t mark = hy_arena_mark(work);
    // A disabled tape: ops compute forward only, outputs in `work`.
    hy_tape t;
    memset(&t, 0, sizeof t);
    t.acts = work;
    t.scratch = work;
    t.enabled = 0;
    if (m->arch == HY_ARCH_DENSE) dense_reserve(s, s->pos + T);
    int64_t shape[2] = {s->B, T};
    hy_tensor *x = hy_tensor_new(work, HY_I32, 2, shape, "ids");  // (B, T)
    if (s->device == HY_CUDA)
        hy_cuda_memcpy_h2d(x->data, ids, (size_t)(s->B * T) * sizeof(int32_t));
    else
        memcpy(x->data, ids, (size_t)(s->B * T) * sizeof(int32_t));
    hy_tensor *out = hy_model_blocks(m, &t, x, s, step);  // (B, T, V)
    if (logits) hy_tensor_to_host_f32(out, logits);
    s->pos += T;
    hy_arena_reset_to(work, mark);
}

// ---------------------------------------------------------------- the decoding graph
static int graph_wanted(const hy_decode_state *s) {
    const char *env = getenv("HYDRA_DECODE_GRAPH");
    return s->device == HY_CUDA && !(env && env[0] == '0');
}

// Record one step's launches (nothing runs yet). Its activations live in the
// state's own arena, so replays write the same addresses whatever the
// caller's work arena does meanwhile.
static void graph_record(hy_model *m, hy_decode_state *s) {
    const hy_model_config *c = &m->cfg;
    size_t width = (size_t)(3 * c->n_heads * c->head_dim > 2 * c->mlp_hidden
                                ? 3 * c->n_heads * c->head_dim
                                : 2 * c->mlp_hidden);
    // Per layer about 16 vectors of the widest projection (bf16), the logits
    // twice, and room for the ops' scratch.
    size_t bytes = (size_t)s->B * (16 * width * c->n_layers + 2 * (size_t)c->vocab_size) * 4 +
                   ((size_t)16 << 20);
    if (m->arch == HY_ARCH_DENSE)  // each layer's split-K partials
        bytes += (size_t)c->n_layers * hy_cuda_dense_step_work_bytes(s->B, c->n_heads, c->head_dim,
                                                                     (int)s->dense_cap);
    s->graph_cap = s->dense_cap;
    hy_arena_init(&s->graph_work, "decode graph", HY_CUDA, bytes);
    s->ids_dev = (int32_t *)hy_arena_alloc(&s->graph_work, (size_t)s->B * sizeof(int32_t));
    s->pos_buf = (long long *)hy_arena_alloc(&s->graph_work, sizeof(long long));
    s->done_dev = (unsigned *)hy_arena_alloc(&s->graph_work, sizeof(unsigned));
    hy_cuda_memset(s->done_dev, 0, sizeof(unsigned));
    s->ring = (int32_t *)hy_cuda_host_alloc((size_t)HY_GREEDY_RING * s->B * sizeof(int32_t));
    for (int i = 0; i < HY_GREEDY_RING; i++) s->ring_ev[i] = hy_cuda_event_new();
    s->ids_held = NULL;
    s->pos_held = -1;
    hy_tape t;
    memset(&t, 0, sizeof t);
    t.acts = &s->graph_work;
    t.scratch = &s->graph_work;
    t.enabled = 0;
    int64_t shape[2] = {s->B, 1};
    hy_tensor *x = hy_wrap_as(&s->graph_work, s->ids_dev, HY_I32, HY_CUDA, 2, shape, "ids");
    s->pos_dev = s->pos_buf;  // the recorded kernels read the position from here
    // Both graphs from the same mark: the same activations, the same logits.
    hy_arena_mark_t mark = hy_arena_mark(&s->graph_work);
    hy_cuda_capture_begin();
    hy_tensor *out = hy_model_blocks(m, &t, x, s, 1);  // (B, 1, V) bf16
    s->graph = hy_cuda_capture_end();
    hy_arena_reset_to(&s->graph_work, mark);
    hy_cuda_capture_begin();
    hy_tensor *out2 = hy_model_blocks(m, &t, x, s, 1);
    int V = (int)out2->shape[out2->ndim - 1];
    hy_cuda_greedy_rows(s->B, V, out2->data, s->ids_dev, s->pos_buf, s->done_dev, s->ring,
                        HY_GREEDY_RING, NULL);
    s->graph_greedy = hy_cuda_capture_end();
    HY_CHECK(out2->data == out->data, "decoding graph: the greedy step's logits moved");
    s->pos_dev = NULL;
    s->logits = out;
}

// Launch the step's graph for ids at s->pos (greedy: the one with the argmax),
// copying the ids and the position to the device only when they differ from
// what it holds.
static void graph_launch_as(hy_model *m, hy_decode_state *s, const int32_t *ids, int greedy) {
    if (m->arch == HY_ARCH_DENSE) {
        dense_reserve(s, s->pos + 1);
        if (s->graph && s->graph_cap != s->dense_cap) graph_drop(s);  // the cache moved: record again
    }
    if (!s->graph) graph_record(m, s);
    size_t ids_bytes = (size_t)s->B * sizeof(int32_t);
    if (!s->ids_held || memcmp(s->ids_held, ids, ids_bytes)) {
        if (!s->ids_held) s->ids_held = (int32_t *)hy_xmalloc(ids_bytes);
        hy_cuda_memcpy_h2d(s->ids_dev, ids, ids_bytes);
        memcpy(s->ids_held, ids, ids_bytes);
    }
    if (s->pos_held != s->pos) {
        long long pos = s->pos;
        hy_cuda_memcpy_h2d(s->pos_buf, &pos, sizeof pos);
        s->pos_held = pos;
    }
    hy_cuda_graph_launch(greedy ? s->graph_greedy : s->graph);
}

static void graph_step(hy_model *m, hy_decode_state *s, const int32_t *ids, float *logits) {
    graph_launch_as(m, s, ids, 0);
    if (logits) {
        hy_tensor_to_host_f32(s->logits, logits);  // waits for the graph
    } else {
        hy_cuda_synchronize();
    }
    s->pos += 1;
}

// Queue a greedy step at s->pos: the step's graph with the argmax after it,
// which writes the next tokens into ids_dev and the ring and advances pos_buf.
// ids: the step's tokens, or NULL when the device holds them already (the
// argmax of the step queued before). Its tokens are read by greedy_read.
static void greedy_queue(hy_model *m, hy_decode_state *s, const int32_t *ids) {
    if (ids) {
        graph_launch_as(m, s, ids, 1);
    } else {
        hy_cuda_graph_launch(s->graph_greedy);
    }
    hy_cuda_event_record(s->ring_ev[s->pos % HY_GREEDY_RING]);
    s->pos += 1;
    s->pos_held = s->pos;
}

// The tokens of the greedy step queued at position p (waits for it to run).
static void greedy_read(hy_decode_state *s, int64_t p, int32_t *next) {
    hy_cuda_event_wait(s->ring_ev[p % HY_GREEDY_RING]);
    const volatile int32_t *slot = s->ring + (size_t)(p % HY_GREEDY_RING) * s->B;
    for (int b = 0; b < s->B; b++) {
        next[b] = slot[b];
        HY_CHECK(next[b] >= 0, "sampling: row %d's logits hold a NaN or +inf, or are all -inf", b);
    }
}

// Greedy steps on the graph, up to kAhead queued beyond the one being read.
// The dense model's graph is recorded again when its cache grows (new
// buffers): the steps in flight are read first, so that the ids go in from
// the host.
enum { kAhead = 2 };
static void graph_generate_greedy(hy_model *m, hy_decode_state *s, const int32_t *ids, long n,
                                  int32_t *out, hy_tokens_fn on_tokens, void *ctx) {
    const int B = s->B;
    int32_t *tok = (int32_t *)hy_xmalloc((size_t)B * sizeof(int32_t));
    memcpy(tok, ids, (size_t)B * sizeof(int32_t));
    const int64_t p0 = s->pos;
    long queued = 0, read = 0;
    while (read < n) {
        int grows = m->arch == HY_ARCH_DENSE && s->pos + 1 > s->dense_cap;
        if (queued < n && queued - read <= kAhead && !(grows && queued > read)) {
            greedy_queue(m, s, queued == read ? tok : NULL);
            queued++;
            continue;
        }
        greedy_read(s, p0 + read, tok);
        if (read == queued - 1) memcpy(s->ids_held, tok, (size_t)B * sizeof(int32_t));
        if (out) memcpy(out + (size_t)read * B, tok, (size_t)B * sizeof(int32_t));
        if (on_tokens) on_tokens(ctx, tok);
        read++;
    }
    free(tok);
}

int hy_greedy_token(const float *l, int V) {
    int best = 0;
    for (int i = 0; i < V; i++) {
        HY_CHECK(!isnan(l[i]) && l[i] != INFINITY, "sampling: logit %d is %g", i, (double)l[i]);
        if (l[i] > l[best]) best = i;
    }
    HY_CHECK(l[best] != -INFINITY, "sampling: every logit is -inf");
    return best;
}

void hy_model_prefill(hy_model *m, hy_decode_state *s, const int32_t *ids, int T, float *logits,
                      hy_arena *work) {
    run(m, s, ids, T, logits, work, 0);
}

void hy_model_step(hy_model *m, hy_decode_state *s, const int32_t *ids, float *logits,
                   hy_arena *work) {
    if (graph_wanted(s)) {
        graph_step(m, s, ids, logits);
        return;
    }
    run(m, s, ids, 1, logits, work, 1);
}

void hy_model_step_greedy(hy_model *m, hy_decode_state *s, const int32_t *ids, int32_t *next,
                          hy_arena *work) {
    if (graph_wanted(s)) {
        graph_generate_greedy(m, s, ids, 1, next, NULL, NULL);
        return;
    }
    int V = m->cfg.vocab_size;
    float *logits = (float *)hy_xmalloc((size_t)s->B * V * sizeof(float));
    run(m, s, ids, 1, logits, work, 1);
    for (int b = 0; b < s->B; b++) next[b] = hy_greedy_token(logits + (size_t)b * V, V);
    free(logits);
}

void hy_model_generate_greedy(hy_model *m, hy_decode_state *s, const int32_t *ids, long n,
                              int32_t *out, hy_tokens_fn on_tokens, void *ctx, hy_arena *work) {
    HY_REQUIRE(n >= 0, "greedy decoding: %ld steps", n);
    if (n == 0) return;
    if (graph_wanted(s)) {
        graph_generate_greedy(m, s, ids, n, out, on_tokens, ctx);
        return;
    }
    const int B = s->B;
    int32_t *tok = (int32_t *)hy_xmalloc((size_t)B * sizeof(int32_t));
    memcpy(tok, ids, (size_t)B * sizeof(int32_t));
    for (long i = 0; i < n; i++) {
        hy_model_step_greedy(m, s, tok, tok, work);
        if (out) memcpy(out + (size_t)i * B, tok, (size_t)B * sizeof(int32_t));
        if (on_tokens) on_tokens(ctx, tok);
    }
    free(tok);
}
