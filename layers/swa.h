// swa.h: sliding-window causal attention (CPU fp32) and its decoding cache.
//
// A query at absolute position p sees the keys at positions j with
// p - W < j <= p, softmax scale 1/sqrt(D). RoPE is the caller's job
// (hy_rope in ops.h) and happens before these functions see q and k.
//
// The op is flash-style: forward keeps a running max and sum per query
// (online softmax) and saves only the per-row log-sum-exp; backward
// recomputes the scores. Time and memory are O(T * W); no T x T matrix is
// ever formed, so window > T (full causal attention, the dense baseline)
// costs O(T^2) time but still only O(T) memory.
#ifndef HY_SWA_H
#define HY_SWA_H

#include <stddef.h>
#include <stdint.h>

#include "../autograd/tape.h"

// q, k, v (B, T, H, D): the chunk; pk, pv (B, P, H, D) or NULL: the P
// positions just before the chunk (the decoding cache, carried across
// chunked prefill). Query i of the chunk has absolute position P + i and
// sees prefix and chunk keys within the window; prefix rows older than the
// window are ignored, so any P is accepted (P = W - 1 is all that matters).
// The prefix gets no gradient; when the tape records, the part of it inside
// the window is copied, so the caller may reuse pk, pv at once.
// window may exceed T (then it is full causal attention). Returns o (B, T, H, D).
hy_tensor *hy_swa(hy_tape *t, hy_tensor *q, hy_tensor *k, hy_tensor *v, const hy_tensor *pk,
                  const hy_tensor *pv, int window);

// Decoding cache: a ring buffer of the last W rotated keys and values, so
// decoding runs in constant memory. One block of caller memory holds the
// ring and a small accumulator for hy_swa_step_cpu.
typedef struct {
    int B, H, D, W;
    int64_t pos;    // absolute position of the next token
    float *k, *v;   // (B, W, H, D) each, slot = position % W
    double *acc;    // (B, H, D) step workspace (double accumulation of the output)
} hy_swa_cache;

size_t hy_swa_cache_bytes(int B, int H, int D, int W);
// memory: hy_swa_cache_bytes(B, H, D, W) bytes, float-aligned; owned by the caller.
void hy_swa_cache_init(hy_swa_cache *c, int B, int H, int D, int W, float *memory);
void hy_swa_cache_reset(hy_swa_cache *c);  // pos = 0 (the ring's contents become stale)

// One token: q, k, v (B, H, D) already rotated at position c->pos. Writes k,
// v into the ring, attends over the last min(pos + 1, W) entries, writes
// o (B, H, D), then pos++.
void hy_swa_step_cpu(hy_swa_cache *c, const float *q, const float *k, const float *v, float *o);

// Append a chunk's k, v (B, T, H, D) after the chunk's attention ran; pos += T.
// Only the last W rows can ever be seen again, so only those are copied.
void hy_swa_cache_append(hy_swa_cache *c, const float *k, const float *v, int T);

// The cached window in chronological order, as the prefix of the next
// hy_swa call: n = min(pos, W - 1) rows written to pk, pv (B, n, H, D) host
// arrays (room for B * (W - 1) * H * D floats each is always enough); returns n.
int hy_swa_cache_prefix(const hy_swa_cache *c, float *pk, float *pv);

#endif
