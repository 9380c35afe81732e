// stream.c: the streaming engine (see stream.h).
#include "stream.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "../autograd/check.h"

#define WORK_BASE ((size_t)32 << 20)

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

size_t hy_stream_work_bytes(const hy_model_config *c, int B, int T) {
    size_t d = (size_t)c->d_model, inner = (size_t)c->n_heads * c->head_dim;
    size_t per_layer = 16 * d + 12 * inner + 6 * (size_t)c->mlp_hidden +
                       4 * (size_t)c->n_heads * (size_t)c->dn_chunk_size;
    size_t per_token = 3 * (size_t)c->vocab_size + (size_t)c->n_layers * per_layer;
    // Each attention layer copies its window (keys and values) out of the
    // ring buffer as the prefix of the chunk; the copies live until the
    // prefill returns. The window is capped: the dense model reads its KV
    // cache in place (batch 1) and copies nothing.
    size_t w = (size_t)(c->swa_window < (1 << 20) ? c->swa_window : 0);
    size_t prefix = (size_t)c->n_layers * 2 * w * inner;
    return WORK_BASE + (size_t)B * ((size_t)T * per_token + prefix) * sizeof(float);
}

size_t hy_prefill_work_bytes(const hy_model *m, int B, int T, int64_t P) {
    const hy_model_config *c = &m->cfg;
    size_t bytes = hy_stream_work_bytes(c, B, T);
    if (m->arch != HY_ARCH_DENSE) return bytes;
    size_t HD = (size_t)c->n_heads * c->head_dim, rows = (size_t)B * (size_t)P;
    if (hy_model_device(m) == HY_CUDA)  // bf16: every layer's cache copy (kept until the
        // prefill returns), and one layer's [prefix | chunk] q, k, v, o
        return bytes + (size_t)c->n_layers * 2 * rows * HD * 2 + 4 * (rows + (size_t)B * T) * HD * 2;
    // The CPU reads a batch-1 cache in place and copies it otherwise.
    return B > 1 ? bytes + (size_t)c->n_layers * 2 * rows * HD * sizeof(float) : bytes;
}

void hy_stream_init(hy_stream *s, hy_model *m, int chunk) {
    HY_REQUIRE(chunk >= 1, "stream: chunk must be >= 1, got %d", chunk);
    memset(s, 0, sizeof *s);
    s->model = m;
    s->chunk = chunk;
    hy_decode_init(&s->state, m, 1);
    hy_arena_init(&s->work, "stream work", hy_model_device(m), hy_prefill_work_bytes(m, 1, chunk, 0));
    s->ids = (int32_t *)hy_xmalloc((size_t)chunk * sizeof(int32_t));
    s->logits = (float *)hy_xmalloc((size_t)chunk * m->cfg.vocab_size * sizeof(float));
}

void hy_stream_free(hy_stream *s) {
    hy_decode_free(&s->state);
    hy_arena_free(&s->work);
    free(s->ids);
    free(s->logits);
    memset(s, 0, sizeof *s);
}

void hy_stream_reset(hy_stream *s) {
    hy_decode_reset(&s->state);
    s->tokens = 0;
    s->seconds = 0;
    s->nonfinite = 0;
    s->last_T = 0;
}

double hy_stream_feed(hy_stream *s, const int32_t *ids, int T) {
    HY_REQUIRE(T >= 1 && T <= s->chunk, "stream: %d tokens fed, the chunk holds 1..%d", T,
               s->chunk);
    int V = s->model->cfg.vocab_size;
    for (int i = 0; i < T; i++)
        HY_REQUIRE(ids[i] >= 0 && ids[i] < V, "stream: token id %d at position %lld is outside "
                   "the vocabulary (%d)", ids[i], (long long)(s->tokens + i), V);
    size_t need = hy_prefill_work_bytes(s->model, 1, T, s->state.pos + T);
    if (need > s->work.cap) {  // only a dense model's cache grows: double, so rarely
        hy_device dev = s->work.device;
        size_t cap = 2 * s->work.cap;
        hy_arena_free(&s->work);
        hy_arena_init(&s->work, "stream work", dev, need > cap ? need : cap);
    }
    double t0 = now_s();
    hy_model_prefill(s->model, &s->state, ids, T, s->logits, &s->work);
    double dt = now_s() - t0;
    // Checked outside the timed region: the claims time the model, not this.
    size_t n = (size_t)T * V;
    for (size_t i = 0; i < n; i++) s->nonfinite += !isfinite(s->logits[i]);
    s->last_T = T;
    s->tokens += T;
    s->seconds += dt;
    return dt;
}

int64_t hy_stream_run(hy_stream *s, hy_token_source src, void *src_ctx, int64_t max_tokens,
                      hy_stream_probe probe, void *probe_ctx) {
    int64_t fed = 0;
    while (max_tokens < 0 || fed < max_tokens) {
        int want = s->chunk;
        if (max_tokens >= 0 && max_tokens - fed < want) want = (int)(max_tokens - fed);
        int got = src(src_ctx, s->ids, want);
        HY_REQUIRE(got >= 0 && got <= want, "stream: the token source returned %d (asked for %d)",
                   got, want);
        if (got == 0) break;
        double dt = hy_stream_feed(s, s->ids, got);
        fed += got;
        if (probe && probe(probe_ctx, s, dt)) break;
    }
    return fed;
}

hy_stream_stats hy_stream_get_stats(const hy_stream *s) {
    hy_stream_stats st;
    st.tokens = s->tokens;
    st.state_bytes = s->state.bytes;
    st.us_per_token = s->tokens ? s->seconds / (double)s->tokens * 1e6 : 0;
    st.rss_bytes = hy_proc_rss_bytes();
    st.peak_rss_bytes = hy_proc_peak_rss_bytes();
    st.nonfinite = s->nonfinite;
    return st;
}

// "VmRSS:   123456 kB" -> bytes; 0 when the field is missing.
static size_t proc_status_kb(const char *field) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return 0;
    char line[256];
    size_t kb = 0, n = strlen(field);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, field, n) && line[n] == ':') {
            kb = (size_t)strtoull(line + n + 1, NULL, 10);
            break;
        }
    fclose(f);
    return kb * 1024;
}

static size_t rusage_peak(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return 0;
    return (size_t)ru.ru_maxrss * 1024;  // Linux reports kilobytes
}

size_t hy_proc_rss_bytes(void) {
    size_t b = proc_status_kb("VmRSS");
    return b ? b : rusage_peak();
}

size_t hy_proc_peak_rss_bytes(void) {
    size_t b = proc_status_kb("VmHWM");
    return b ? b : rusage_peak();
}

void hy_random_tokens_init(hy_random_tokens *r, uint64_t seed, int lo, int hi) {
    HY_REQUIRE(hi > lo, "random tokens: empty range [%d, %d)", lo, hi);
    r->state = seed * 0x9e3779b97f4a7c15ULL + 0x2545f4914f6cdd1dULL;
    r->lo = lo;
    r->hi = hi;
}

int hy_random_tokens_source(void *ctx, int32_t *ids, int n) {
    hy_random_tokens *r = (hy_random_tokens *)ctx;
    uint64_t span = (uint64_t)(r->hi - r->lo);
    for (int i = 0; i < n; i++) {
        // splitmix64: cheap, and each stream is fixed by its seed.
        uint64_t z = (r->state += 0x9e3779b97f4a7c15ULL);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        z ^= z >> 31;
        ids[i] = r->lo + (int32_t)(z % span);
    }
    return n;
}
