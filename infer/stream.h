// stream.h: the streaming engine (DESIGN section 5).
//
// Feeds any number of tokens, in chunks, through a model's decoding state
// (hy_model_prefill), batch 1. HydraLM's state has a fixed size, so a
// stream of 2^20 tokens runs in the memory of one chunk; the dense
// baseline's KV cache grows with every token, which is what the claims
// measure against. Tokens come from a callback, so a long stream never has
// to sit in memory. The engine reports tokens processed, state bytes
// (hy_decode_state.bytes), wall time per token, whether every logit was
// finite, and the process's memory (resident now and its high-water mark).
#ifndef HY_STREAM_H
#define HY_STREAM_H

#include <stddef.h>
#include <stdint.h>

#include "../layers/model.h"

// Writes up to `n` next tokens of the stream into ids; returns how many
// (0: the stream has ended).
typedef int (*hy_token_source)(void *ctx, int32_t *ids, int n);

typedef struct {
    hy_model *model;
    hy_decode_state state;  // batch 1
    hy_arena work;          // one chunk's activations, reset by every prefill, on the
                            // model's device (grown for the dense model's prefix)
    int chunk;              // tokens per prefill call
    int32_t *ids;           // (chunk) tokens of the current chunk
    float *logits;          // (chunk, V) logits of the last chunk fed
    int last_T;             // tokens in the last chunk fed
    int64_t tokens;         // tokens processed so far
    double seconds;         // wall time inside prefill so far
    int64_t nonfinite;      // logits that were NaN or infinite, over the whole stream
} hy_stream;

// Bytes of the work arena for one prefill of B rows of `T` tokens (a
// generous bound on every layer's temporaries, the window prefix of each
// attention layer and the logits).
size_t hy_stream_work_bytes(const hy_model_config *c, int B, int T);
// The same for model m when its decoding state holds up to P earlier
// positions: the dense model's attention reads its whole KV cache, which
// the GPU path (and the CPU path for B > 1) copies into the work arena as
// the chunk's prefix, so for it the bytes grow with P. HydraLM's do not.
size_t hy_prefill_work_bytes(const hy_model *m, int B, int T, int64_t P);

void hy_stream_init(hy_stream *s, hy_model *m, int chunk);
void hy_stream_free(hy_stream *s);
// Back to an empty state (same memory); counters restart.
void hy_stream_reset(hy_stream *s);

// Feed T <= chunk tokens; returns the wall seconds of the prefill. The
// chunk's logits stay in s->logits and are checked for NaN/inf.
double hy_stream_feed(hy_stream *s, const int32_t *ids, int T);

// Called after every chunk with the stream's state; return nonzero to stop.
typedef int (*hy_stream_probe)(void *ctx, const hy_stream *s, double chunk_seconds);

// Feed tokens from `src` until it ends or `max_tokens` (< 0: no limit) have
// been fed, calling `probe` (may be NULL) after every chunk. Returns the
// tokens fed by this call.
int64_t hy_stream_run(hy_stream *s, hy_token_source src, void *src_ctx, int64_t max_tokens,
                      hy_stream_probe probe, void *probe_ctx);

// What the engine reports: tokens processed, state bytes, mean wall time
// per token inside the model, the process's resident memory now and its
// peak, and the count of non-finite logits so far.
typedef struct {
    int64_t tokens;
    size_t state_bytes;
    double us_per_token;
    size_t rss_bytes, peak_rss_bytes;
    int64_t nonfinite;
} hy_stream_stats;
hy_stream_stats hy_stream_get_stats(const hy_stream *s);

// The process's resident memory now and its high-water mark, in bytes
// (/proc/self/status VmRSS and VmHWM; getrusage's ru_maxrss when /proc is
// not there, for both). 0 when neither can be read.
size_t hy_proc_rss_bytes(void);
size_t hy_proc_peak_rss_bytes(void);

// A deterministic token source: uniform ids in [lo, hi) from a seeded
// generator, for streams whose content does not matter (memory, speed).
typedef struct {
    uint64_t state;
    int lo, hi;
} hy_random_tokens;
void hy_random_tokens_init(hy_random_tokens *r, uint64_t seed, int lo, int hi);
int hy_random_tokens_source(void *ctx, int32_t *ids, int n);

#endif
