// hy_cuda_glue.h: small kernels that join the CUDA ops into a training step
// and a decoding state (cuda/glue.cu): gradient accumulation, fp32 gates,
// the conv cache, the SWA ring buffer and row copies between sequences.
//
// Conventions as hy_cuda_ops.h: bf16 tensors are uint16_t storage passed as
// `void *`, fp32 as float *, all device pointers; `stream` is a cudaStream_t
// as void * (NULL: the default stream); every call is asynchronous, allocates
// nothing and checks its launch (file and line). Deterministic (no atomics).
// Bad sizes are a usage error (exit 2) naming the op; a call with nothing to
// do (a zero count) returns at once, touching no pointer. fp32 results are
// single IEEE operations, never fused: bit for bit the host's loop.
//
// A build without CUDA links stubs (cuda/nocuda.c) that stop with a clear
// error: callers check the tensor's device first.
#ifndef HY_CUDA_GLUE_H
#define HY_CUDA_GLUE_H
#include <stddef.h>
#include <stdint.h>
#ifdef __cplusplus
extern "C" {
#endif
// y (n) fp32 += x (n) fp32.
void hy_cuda_acc_f32(size_t n, const float *x, float *y, void *stream);
// y (n) fp32 += a_dev[0] * x (n) fp32, the scalar read on the device (no host sync;
// a_dev must not lie inside y).
void hy_cuda_axpy_dev(size_t n, const float *a_dev, const float *x, float *y, void *stream);
// y (n) fp32 *= s.
void hy_cuda_scale_f32(size_t n, float s, float *y, void *stream);
// y (n) fp32 = v (a kernel, so that a CUDA graph can record it: a copy from
// the host's stack could not be).
void hy_cuda_fill_f32(size_t n, float v, float *y, void *stream);
// y (n) fp32 = sigmoid(x), x bf16, computed in fp32 (1 / (1 + expf(-x))).
// The gates of the gated delta rule stay fp32 on the GPU: a bf16 alpha near
// 1 would lose most of log(alpha). Backward is hy_cuda_sigmoid_bwd (it takes
// the input x).
void hy_cuda_sigmoid_f32out_fwd(size_t n, const void *x, float *y, void *stream);
// The causal conv cache after a chunk: cache (B, C, K-1) bf16 becomes the
// last K-1 columns of [cache | x^T], x (B, T, C) bf16, i.e. for j < K-1 the
// input at position T - (K-1) + j of the concatenation (reading the old
// cache where that is negative). K >= 2 (any K); T = 0 leaves the cache as
// it is. In place: each (b, c) is handled by one thread, which writes j in
// ascending order and reads old entry T + j >= j, not yet overwritten.
void hy_cuda_conv_cache_update(int B, int T, int C, int K, const void *x, void *cache,
                               void *stream);
// SWA ring buffer (B, W, H, D) bf16, slot = position % W. Write the rows of
// kv (B, T, H, D) bf16 at positions pos0 .. pos0 + T - 1 (only the last
// min(T, W) matter and only they are written; other slots untouched).
// W >= 1, pos0 >= 0, any T >= 0.
void hy_cuda_ring_write(int B, int T, int H, int D, int W, int64_t pos0, const void *kv,
                        void *ring, void *stream);
// The n most recent positions before `pos` (pos - n .. pos - 1, n <= min(pos, W)) of the
// ring, in order, into rows [0, n) of out (B, L, H, D) bf16 (L >= n; other rows untouched).
// n > min(pos, W) or L < n is a usage error.
void hy_cuda_ring_read(int B, int H, int D, int W, int64_t pos, int n, const void *ring,
                       void *out, int L, void *stream);
// Row copy between two batched sequences of E-element bf16 rows:
//   dst (B, dst_T, E)[b, dst_row0 + i] = src (B, src_T, E)[b, src_row0 + i], i < n.
// Rows past src_T or dst_T (or a negative size or row) are a usage error;
// other rows of dst are untouched. src and dst must not overlap. The copies
// are bit copies (NaN payloads kept).
void hy_cuda_copy_rows_bf16(int B, int n, int E, const void *src, int src_T, int src_row0,
                            void *dst, int dst_T, int dst_row0, void *stream);
// The same for fp32 rows (gradients).
void hy_cuda_copy_rows_f32(int B, int n, int E, const float *src, int src_T, int src_row0,
                           float *dst, int dst_T, int dst_row0, void *stream);
// Row copy with accumulation, fp32: dst[b, dst_row0 + i] += src[b, src_row0 + i].
void hy_cuda_acc_rows_f32(int B, int n, int E, const float *src, int src_T, int src_row0,
                          float *dst, int dst_T, int dst_row0, void *stream);
// Index of the largest element of each row of x (rows, V) fp32 into idx
// (rows) int32 (the first one on ties), for accuracy on the device. V >= 1.
// Same result as hy_eval_argmax (eval/eval_model.c): NaNs are skipped, but a
// NaN in column 0 (or a row of NaNs) gives 0.
void hy_cuda_argmax_rows_f32(int rows, int V, const float *x, int32_t *idx, void *stream);
#ifdef __cplusplus
}
#endif
#endif
