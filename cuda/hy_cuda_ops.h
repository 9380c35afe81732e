// hy_cuda_ops.h: the basic ops of layers/ops.h on the GPU (cuda/ops.cu, norms.cu,
// rope.cu, short_conv.cu), as plain C: one forward and one backward entry point per op.
//
// Each entry point computes the same function as the CPU reference op of the
// same name (layers/*.c) and its hand-written backward, under the GPU path's
// mixed-precision convention (DESIGN.md section 2):
//   * activations are bf16, stored as uint16_t and passed as `void *`;
//     rounding float -> bf16 is round-to-nearest-even, bit for bit
//     hy_f32_to_bf16() of autograd/tensor.c (NaN stays a quiet NaN);
//   * every computation is fp32 (a few per-row scalars in double, as noted);
//   * gradients of activations are fp32; small parameters (norm weights,
//     biases, conv weights) and their gradients are fp32;
//   * backward entry points ACCUMULATE (+=) into gradient buffers, never
//     overwrite (the tape zeroes a buffer on first use), as the CPU ops do;
//     a NULL gradient pointer means "no gradient wanted" wherever an op has
//     more than one gradient output;
//   * integer ids are int32.
// Sizes are element counts; tensors are contiguous and row-major. Every
// pointer is a device pointer. `stream` is a cudaStream_t passed as void *
// (NULL: the legacy default stream). Every call is asynchronous on its
// stream, allocates nothing, never synchronises, and checks every launch
// (file and line on a CUDA error). Bad sizes are a clear usage error naming
// the op. Kernels load 16 bytes at a time (8 bf16) where rows allow it (the
// row length a multiple of 8 and the pointers 16-byte aligned) and fall back
// to scalar code otherwise, so any size works.
//
// Deterministic: every op except hy_cuda_embedding_bwd (fp32 atomics, see
// there) gives the same bits every run. Parameter-gradient reductions (RMSNorm
// dw, short_conv dw/db) go through per-block partial sums in caller-provided
// scratch and a second pass that adds them in a fixed order: no atomics.
//
// In place: the elementwise forwards (add, mul, silu, sigmoid), rope_fwd and
// the conversions may write their output over an input of the same dtype
// (y == x); no other op may alias an output with an input.
//
// A build without CUDA has no implementation of these functions: callers
// check hy_cuda_built() first (cuda/nocuda.c must provide stubs for them).
#ifndef HY_CUDA_OPS_H
#define HY_CUDA_OPS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// ---------------------------------------------------------------- conversions
// y (n) bf16 = x (n) fp32, round to nearest even as hy_f32_to_bf16().
// y (n) fp32 = x (n) bf16 (exact).
// Defined in cuda/blas.cu and declared there (hy_cuda_blas.h); repeated here,
// identically, so that users of these ops need only this header.
// tests/test_gpu_ops.c (gpu_op_convert) checks them bit for bit.
void hy_cuda_f32_to_bf16(const float *x, void *y, size_t n, void *stream);
void hy_cuda_bf16_to_f32(const void *x, float *y, size_t n, void *stream);

// ---------------------------------------------------------------- embedding
// y (rows, D) bf16 = bf16(weight[ids[r], :]) with weight (V, D) the fp32
// master table. The GPU cannot stop on a bad id: an id outside [0, V) fills
// its row with NaN (so the loss turns non-finite and the trainer's check
// reports it); the data loaders reject such ids before they get here.
void hy_cuda_embedding_fwd(int rows, int D, int V, const float *weight, const int32_t *ids,
                           void *y, void *stream);
// dweight (V, D) fp32 += dy[r, :] at row ids[r], for every r whose id is not
// padding_idx (< 0: none) and inside [0, V). NOT deterministic: rows that
// share an id add into the same row with fp32 atomicAdd (16-byte atomics on
// Hopper) in whatever order the GPU runs them, so the last bits of dweight may
// differ between runs (the only op here that is not bit-reproducible).
void hy_cuda_embedding_bwd(int rows, int D, int V, const float *dy, const int32_t *ids,
                           int padding_idx, float *dweight, void *stream);

// ---------------------------------------------------------------- rmsnorm
// y (rows, D) bf16 = x * rstd * w with rstd = 1 / sqrt(mean(x^2) + eps):
// x (rows, D) bf16, w (D) fp32. The sum of squares is fp32, 1/sqrt is taken
// in double and rounded once (as the CPU op). rstd (rows) fp32 is written for
// backward (NULL: not saved, inference).
void hy_cuda_rmsnorm_fwd(int rows, int D, float eps, const void *x, const float *w, void *y,
                         float *rstd, void *stream);
// The residual add and the norm after it in one pass: x (rows, D) bf16 = a + b (the bits of
// hy_cuda_add_fwd), then y and rstd from x as hy_cuda_rmsnorm_fwd (the same bits).
void hy_cuda_add_rmsnorm_fwd(int rows, int D, float eps, const void *a, const void *b, void *x,
                             const float *w, void *y, float *rstd, void *stream);
// Scratch bytes hy_cuda_rmsnorm_bwd() needs for the dw partial sums (a
// function of rows and D alone).
size_t hy_cuda_rmsnorm_bwd_scratch_bytes(int rows, int D);
// With xhat = x * rstd and g = dy (rows, D) fp32:
//   dx (rows, D) fp32 += rstd * (g w - xhat mean(g w xhat))     (per row)
//   dw (D) fp32       += sum over rows of g xhat                 (deterministic)
// dx or dw may be NULL. scratch is needed only when dw is not NULL. D up to
// 12288.
void hy_cuda_rmsnorm_bwd(int rows, int D, const float *dy, const void *x, const float *w,
                         const float *rstd, float *dx, float *dw, void *scratch,
                         size_t scratch_bytes, void *stream);
// The same, and dx16 (rows, D) bf16 = the new dx rounded (hy_cuda_f32_to_bf16's bits): the
// copy a residual add's backward hands its branch, written in the same pass (D a multiple of
// 256 up to 1024, 16-byte aligned; otherwise by a rounding pass after). dx16 needs dx.
void hy_cuda_rmsnorm_bwd_x16(int rows, int D, const float *dy, const void *x, const float *w,
                             const float *rstd, float *dx, void *dx16, float *dw, void *scratch,
                             size_t scratch_bytes, void *stream);

// ---------------------------------------------------------------- swiglu
// gv (rows, 2H) bf16 = [gate | value] -> y (rows, H) bf16 = silu(gate) * value.
void hy_cuda_swiglu_fwd(int rows, int H, const void *gv, void *y, void *stream);
// dgv (rows, 2H) fp32 += [dy v s (1 + g (1 - s)) | dy g s], s = sigmoid(g),
// recomputed from gv; dy (rows, H) fp32. overwrite: dgv = ..., its old
// contents not read.
void hy_cuda_swiglu_bwd(int rows, int H, const float *dy, const void *gv, float *dgv,
                        int overwrite, void *stream);
// The same written in bf16: dgv (rows, 2H) bf16 = the fp32 values above
// rounded (overwrite).
void hy_cuda_swiglu_bwd_bf16(int rows, int H, const float *dy, const void *gv, void *dgv,
                             void *stream);

// ---------------------------------------------------------------- elementwise
// Flat n elements, bf16 in, bf16 out; dy and the gradients fp32.
// y = a + b; da += dy, db += dy (either may be NULL).
void hy_cuda_add_fwd(size_t n, const void *a, const void *b, void *y, void *stream);
void hy_cuda_add_bwd(size_t n, const float *dy, float *da, float *db, void *stream);
// y = a * b; da += dy * b, db += dy * a (either may be NULL).
void hy_cuda_mul_fwd(size_t n, const void *a, const void *b, void *y, void *stream);
void hy_cuda_mul_bwd(size_t n, const float *dy, const void *a, const void *b, float *da,
                     float *db, void *stream);
// y = x * sigmoid(x); dx += dy s (1 + x (1 - s)), s recomputed from x.
void hy_cuda_silu_fwd(size_t n, const void *x, void *y, void *stream);
// overwrite: dx = ..., its old contents not read.
void hy_cuda_silu_bwd(size_t n, const float *dy, const void *x, float *dx, int overwrite,
                      void *stream);
// y = a * silu(g) (GDN's output gate), rounded once; da += dy silu(g),
// dg += dy a s (1 + g (1 - s)), s = sigmoid(g) recomputed from g. da or dg
// may be NULL; *_overwrite: that gradient = ..., its old contents not read.
void hy_cuda_mul_silu_fwd(size_t n, const void *a, const void *g, void *y, void *stream);
void hy_cuda_mul_silu_bwd(size_t n, const float *dy, const void *a, const void *g, float *da,
                          int da_overwrite, float *dg, int dg_overwrite, void *stream);
// The same, each gradient either f32 (da, dg as above) or written in bf16
// (da_bf16, dg_bf16: the f32 values rounded); the two in different buffers.
void hy_cuda_mul_silu_bwd_mixed(size_t n, const float *dy, const void *a, const void *g,
                                float *da, int da_overwrite, void *da_bf16, float *dg,
                                int dg_overwrite, void *dg_bf16, void *stream);
// y = sigmoid(x); dx += dy s (1 - s). Backward takes the INPUT x and
// recomputes s in fp32 (the CPU op reads its fp32 output; the bf16 output
// would lose 1 - s near s = 1).
void hy_cuda_sigmoid_fwd(size_t n, const void *x, void *y, void *stream);
void hy_cuda_sigmoid_bwd(size_t n, const float *dy, const void *x, float *dx, void *stream);

// ---------------------------------------------------------------- l2norm_heads
// x (vecs, head_dim) bf16 (vecs = rows * H: each head's vector is a row) ->
// y = x / max(||x||, eps) bf16 (F.normalize); norm (vecs) fp32 = ||x|| saved
// for backward (NULL: not saved).
void hy_cuda_l2norm_heads_fwd(int vecs, int head_dim, float eps, const void *x, void *y,
                              float *norm, void *stream);
// dx (vecs, head_dim) fp32 += dy / n - x (x . dy) / n^3 with n = norm, or
// dy / eps where n < eps (the clamp passes no gradient to the norm).
void hy_cuda_l2norm_heads_bwd(int vecs, int head_dim, float eps, const float *dy,
                              const void *x, const float *norm, float *dx, void *stream);

// ---------------------------------------------------------------- short_conv
// Causal depthwise convolution with K taps (1 <= K <= 16) plus bias:
//   y[b,t,c] = bias[c] + sum_j w[c,j] * x[b, t-(K-1)+j, c]
// x, y (B, T, C) bf16; w (C, K) fp32 (the (C, 1, K) parameter has the same
// layout); bias (C) fp32 or NULL. Positions before 0 read `cache` (B, C, K-1)
// BF16 (its last column is position -1; bf16 because it holds past inputs,
// which are bf16 already, exactly), or zero when cache is NULL.
void hy_cuda_short_conv_fwd(int B, int T, int C, int K, const void *x, const float *w,
                            const float *bias, const void *cache, void *y, void *stream);
// Scratch bytes hy_cuda_short_conv_bwd() needs for the dw/db partial sums.
size_t hy_cuda_short_conv_bwd_scratch_bytes(int B, int T, int C, int K);
// dy (B, T, C) fp32; the cache is the one the forward read (or NULL) and gets
// no gradient:
//   dx (B, T, C) fp32 += sum_j dy[b, t+(K-1)-j, c] w[c,j]   (taps inside [0, T))
//   dw (C, K) fp32    += sum_{b,t} dy[b,t,c] x[b, t-(K-1)+j, c] (cache included)
//   db (C) fp32       += sum_{b,t} dy[b,t,c]
// dx, dw or db may be NULL; scratch is needed only when dw or db is wanted.
// set_dx: dx = the sum instead of += (its old contents are not read: a fresh
// gradient buffer needs no zeroing).
void hy_cuda_short_conv_bwd(int B, int T, int C, int K, const float *dy, const void *x,
                            const float *w, const void *cache, float *dx, int set_dx, float *dw,
                            float *db, void *scratch, size_t scratch_bytes, void *stream);

// ---------------------------------------------------------------- rope
// Rotary embedding, split-half form, on x (B, T, H, D) bf16, D even, D <= 512:
//   y1 = x1 cos - x2 sin, y2 = x2 cos + x1 sin (x1, x2 the two halves),
//   angle = (pos0 + t) * inv_freq_i, inv_freq_i = 1 / powf(base, 2i / D).
// As the CPU op: inv_freq is fp32 (computed on the host with the same powf
// call), the angle and its cos/sin are taken in double and rounded once to
// fp32. In place allowed (y == x).
void hy_cuda_rope_fwd(int B, int T, int H, int D, int64_t pos0, float base, const void *x,
                      void *y, void *stream);
// The same with pos0 read from device memory (one int64), so that a
// captured CUDA graph can replay it at every decoding position.
void hy_cuda_rope_fwd_dev(int B, int T, int H, int D, const long long *pos0_dev, float base,
                          const void *x, void *y, void *stream);
// dx (B, T, H, D) fp32 += R(-angle) dy, dy (B, T, H, D) fp32.
void hy_cuda_rope_bwd(int B, int T, int H, int D, int64_t pos0, float base, const float *dy,
                      float *dx, void *stream);

// ---------------------------------------------------------------- qkv_rope
// The attention layer's input split: qkv (B, T, 3 H D) bf16 -> q, k, v
// (B, T, H, D) bf16, q and k rotated as hy_cuda_rope_fwd (the same angles
// and roundings) at positions pos0 + t, v copied. D even, D <= 512.
void hy_cuda_qkv_rope_fwd(int B, int T, int H, int D, int64_t pos0, float base, const void *qkv,
                          void *q, void *k, void *v, void *stream);
// Its backward: d qkv (B, T, 3 H D) = [R(-angle) dq | R(-angle) dk | dv], dq,
// dk, dv (B, T, H, D) fp32 (NULL: zero). out_mode 0: d qkv fp32, written
// (its old contents not read); 1: fp32, added to; 2: bf16, written (each
// value rounded as hy_f32_to_bf16()).
void hy_cuda_qkv_rope_bwd(int B, int T, int H, int D, int64_t pos0, float base, const float *dq,
                          const float *dk, const float *dv, void *dqkv, int out_mode,
                          void *stream);

// ---------------------------------------------------------------- slice_last
// y (rows, len) bf16 = columns [start, start + len) of x (rows, N) bf16.
void hy_cuda_slice_last_fwd(int rows, int N, int start, int len, const void *x, void *y,
                            void *stream);
// dx (rows, N) fp32 += dy (rows, len) fp32 in columns [start, start + len).
void hy_cuda_slice_last_bwd(int rows, int N, int start, int len, const float *dy, float *dx,
                            void *stream);

// ---------------------------------------------------------------- mean
// y[0] (fp32, device) = mean of x (n) fp32, summed in double in a fixed order
// by one block (deterministic; meant for losses and small tensors), n >= 1.
void hy_cuda_mean_fwd(size_t n, const float *x, float *y, void *stream);
// dx (n) fp32 += dy[0] / n, dy[0] read on the device (no host sync).
void hy_cuda_mean_bwd(size_t n, const float *dy, float *dx, void *stream);

// ---------------------------------------------------------------- argmax
// idx (rows) int32 = the index of the largest of each row of x (rows, V)
// bf16: the lowest index among equal largest values, as the CPU's argmax;
// NaN is never the largest (0 for a row with no number above -inf).
// Accuracy without copying the logits to the host.
void hy_cuda_argmax_rows(int64_t rows, int V, const void *x, int32_t *idx, void *stream);
// idx (rows) int32 = the greedy token of each row of logits x (rows, V) bf16, as the
// sampler at temperature 0 picks it (the lowest index among equal largest values), or -1
// for a row holding a NaN or +inf, or only -inf (the caller reports it). One block a row:
// meant for decoding, where rows is the batch. When pos is not NULL, *pos += 1 (the
// decoding graph's position: the next step then needs no copy of it); with more than one
// row the last block to finish advances it, counting in *done (zero before, zero after).
// When ring is not NULL (host memory the device writes, hy_cuda_host_alloc), the tokens
// also go to ring[(*pos % ring_len) * rows + row], *pos as it was before the call: the
// host reads a step's tokens there once the step has run, while later steps queue.
void hy_cuda_greedy_rows(int rows, int V, const void *x, int32_t *idx, long long *pos,
                         unsigned *done, int32_t *ring, int ring_len, void *stream);

#ifdef __cplusplus
}
#endif

#endif
