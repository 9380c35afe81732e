// hy_cuda_swa.h: sliding-window causal attention on the GPU (cuda/swa*.cu).
//
// The same function as hy_swa in layers/swa.h without a prefix: q, k, v
// (B, T, H, D) bf16 (raw uint16_t storage, RoPE already applied), softmax
// scale 1/sqrt(D), query i sees keys j with i - W < j <= i. window >= T is
// full causal attention (the dense baseline). Flash style: forward keeps an
// online softmax in fp32 and saves only the per-row log-sum-exp; backward
// recomputes the scores. Only key blocks that overlap a query block's window
// are visited, so time is O(T * W) and memory O(T).
//
// Training kernels need D = 64 or 128 (bf16 tensor cores, fp32 accumulation).
// Pointers are device pointers, 16-byte aligned; streams are cudaStream_t
// passed as void * (NULL: the default stream). Every call is asynchronous on
// its stream, allocates nothing, and reports CUDA errors with file and line.
// Bad sizes or pointers are a usage error (exit 2) naming the function.
//
// A build without CUDA has no implementation of these functions: callers
// check hy_cuda_built() first (cuda/nocuda.c must provide stubs for them).
#ifndef HY_CUDA_SWA_H
#define HY_CUDA_SWA_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

// Bytes of device workspace hy_cuda_swa_bwd needs: the per-row
// D_i = dO_i . O_i, (B, T, H) fp32.
size_t hy_cuda_swa_workspace_bytes(int B, int T, int H, int D);

// o (B, T, H, D) bf16 and lse (B, T, H) fp32, both written. lse is the
// natural-log log-sum-exp of each row's scaled scores (what backward needs);
// lse may be NULL for inference.
void hy_cuda_swa_fwd(int B, int T, int H, int D, int window, const void *q, const void *k,
                     const void *v, void *o, float *lse, void *stream);

// The forward for query rows [q_first, T) only (inference: no lse): rows
// of o before q_first (down to a multiple of the 64-row query block) are
// left as they were. Chunked prefill puts the cached keys before the chunk
// and asks for the chunk's rows, so its work is the chunk's queries against
// the keys in their windows, not the whole prefix's queries as well.
void hy_cuda_swa_fwd_rows(int B, int T, int H, int D, int window, int q_first, const void *q,
                          const void *k, const void *v, void *o, void *stream);

// Given d_o = dL/do (B, T, H, D) bf16 and the forward's o and lse: dq, dk,
// dv (B, T, H, D) fp32, written (not accumulated). workspace:
// hy_cuda_swa_workspace_bytes(B, T, H, D) bytes of device memory.
// Deterministic: no atomics (dk, dv in one kernel over key blocks, dq in
// another over query blocks).
void hy_cuda_swa_bwd(int B, int T, int H, int D, int window, const void *q, const void *k,
                     const void *v, const void *o, const float *lse, const void *d_o, float *dq,
                     float *dk, float *dv, void *workspace, void *stream);

// Decoding one token: ring_k, ring_v (B, W, H, D) bf16 hold the last W
// keys and values, slot = position % W. Writes this token's k, v (B, H, D)
// bf16 into slot pos % W, then attends q (B, H, D) over the min(pos + 1, W)
// positions max(0, pos - W + 1) .. pos and writes o (B, H, D) bf16. The
// caller advances pos. Any D from 1 to 256.
void hy_cuda_swa_step(int B, int H, int D, int W, long long pos, const void *q, const void *k,
                      const void *v, void *ring_k, void *ring_v, void *o, void *stream);

// The same with the position read from device memory (pos_dev: one int64),
// so that a captured CUDA graph can replay the step at every position.
void hy_cuda_swa_step_dev(int B, int H, int D, int W, const long long *pos_dev, const void *q,
                          const void *k, const void *v, void *ring_k, void *ring_v, void *o,
                          void *stream);
// A SWA layer's decoding token from its qkv projection (B, 3 H D) bf16 (q,
// k, v of every head in that order), in one launch: q and k rotated by RoPE
// at the position (as hy_cuda_rope_fwd with this base, rounded to bf16),
// then hy_cuda_swa_step's ring write and attention; o (B, H, D) bf16. The
// position is pos, or read from device memory when pos_dev is given (a
// recorded graph). D even, 2 to 256.
void hy_cuda_swa_decode(int B, int H, int D, int W, long long pos, const long long *pos_dev,
                        float rope_base, const void *qkv, void *ring_k, void *ring_v, void *o,
                        void *stream);
// Decoding one token of the dense model: cache_k, cache_v (B, cap, H, D)
// bf16 hold positions 0..pos-1; writes this token's k, v (B, H, D) into row
// pos and attends q (B, H, D) over rows 0..pos into o (B, H, D) bf16, split
// over blocks of 256 positions and merged (split-K), so that a long cache
// is read by many SMs. The position is `pos`, or read from device memory
// when pos_dev is given (a recorded graph; the caller keeps pos < cap).
// work: hy_cuda_dense_step_work_bytes(B, H, D, cap) bytes of device memory.
// Any D from 1 to 256.
size_t hy_cuda_dense_step_work_bytes(int B, int H, int D, int cap);
void hy_cuda_dense_step(int B, int H, int D, int cap, long long pos, const long long *pos_dev,
                        const void *q, const void *k, const void *v, void *cache_k,
                        void *cache_v, void *o, void *work, void *stream);

// Benchmark helper (CUDA events live in cuda/, not in the tests): median
// milliseconds over `reps` timed runs, after two untimed ones, of the
// forward (what = 0) or of forward + backward (what = 1), all buffers as
// for hy_cuda_swa_fwd / hy_cuda_swa_bwd. Synchronises the device.
double hy_cuda_swa_time_ms(int what, int reps, int B, int T, int H, int D, int window,
                           const void *q, const void *k, const void *v, void *o, float *lse,
                           const void *d_o, float *dq, float *dk, float *dv, void *workspace);

#ifdef __cplusplus
}
#endif

#endif
