// hy_cuda_gdn.h: the gated delta rule (Gated DeltaNet's mixer core) on the GPU.
//
// The same function as layers/gdn.h (hy_gdn, hy_gdn_step_cpu), per batch b and head h, with a
// state S (D, D) = (Dv, Dk) in fp32:
//   S_t = alpha_t S_{t-1} + beta_t (v_t - alpha_t S_{t-1} k_t) k_t^T,   o_t = S_t q_t
// Layouts (row-major, contiguous):
//   q, k, v, o, d_o  (B, T, H, D)  bf16 (uint16_t storage, round to nearest even)
//   alpha, beta      (B, T, H)     fp32; alpha in (0, 1] (the log-space decay needs alpha > 0:
//                                   0 is read as 1e-38 like the CPU op, and dalpha is 0 there)
//   S0, S_out, dS_out, dS0  (B, H, D, D) fp32, each may be NULL (zero initial state / not wanted);
//                    S_out may alias S0 and dS0 may alias dS_out (in-place state carry), but
//                    the backward needs the forward's S0 again (keep a copy, as the CPU op does)
//   dq, dk, dv       (B, T, H, D)  fp32;  dalpha, dbeta (B, T, H) fp32
// Every output is written, never accumulated. Device pointers; bf16 tensors and the workspace
// must be 16-byte aligned, as must dq, dk and dv; fp32 states 8-byte aligned. `stream` is a
// cudaStream_t (NULL: the default stream). Calls are asynchronous on that stream.
//
// Supported: chunk = 64 and D = 64 or 128 (tensor-core path), any T >= 1 (the last chunk may be
// partial), B * H <= 65535. Anything else stops with a clear error (exit 2), never a wrong result.
// hy_cuda_gdn_step accepts any D >= 1.
//
// The workspace (device memory, no allocation happens inside these calls) holds the chunk-local
// WY factors, the chunk start states and new values (bf16) and, in backward, their gradients;
// one buffer of hy_cuda_gdn_workspace_bytes() serves both forward and backward. Its first
// hy_cuda_gdn_saved_bytes() are what the forward computes and the backward reads: the forward
// needs only that part. hy_cuda_gdn_bwd recomputes it from its inputs (memory-lean: nothing
// kept between the calls); hy_cuda_gdn_bwd_saved reads it from a forward's workspace instead,
// which skips the recomputation (about a quarter of the backward's time) at the cost of keeping
// those bytes from forward to backward (at D = 128 about 1.75 times the bytes of q, k, v and o).
#ifndef HY_CUDA_GDN_H
#define HY_CUDA_GDN_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

size_t hy_cuda_gdn_workspace_bytes(int B, int T, int H, int D, int chunk);

void hy_cuda_gdn_fwd(int B, int T, int H, int D, int chunk, const void *q, const void *k,
                     const void *v, const float *alpha, const float *beta, const float *S0,
                     void *o, float *S_out, void *workspace, void *stream);

// Gradients of the loss L(o, S_out) given d_o = dL/do (bf16) and dS_out = dL/dS_out (fp32, NULL
// for none). dS0 is written when not NULL (zero-state runs may pass NULL; S0 NULL with dS0 set
// is allowed and gives dL/dS0 at S0 = 0).
void hy_cuda_gdn_bwd(int B, int T, int H, int D, int chunk, const void *q, const void *k,
                     const void *v, const float *alpha, const float *beta, const float *S0,
                     const void *d_o, const float *dS_out, float *dq, float *dk, float *dv,
                     float *dalpha, float *dbeta, float *dS0, void *workspace, void *stream);

// The first part of the workspace: the forward's results that a backward reads.
size_t hy_cuda_gdn_saved_bytes(int B, int T, int H, int D, int chunk);

// hy_cuda_gdn_bwd without its recomputation: `saved` holds the first hy_cuda_gdn_saved_bytes()
// of the workspace of a hy_cuda_gdn_fwd on the same q, k, v, alpha, beta and S0 (unchanged since;
// read only), `workspace` the other hy_cuda_gdn_workspace_bytes() - hy_cuda_gdn_saved_bytes()
// bytes (both 256-byte aligned). The same kernels as hy_cuda_gdn_bwd after its recomputation.
void hy_cuda_gdn_bwd_saved(int B, int T, int H, int D, int chunk, const void *q, const void *k,
                           const void *v, const float *alpha, const float *beta, const float *S0,
                           const void *d_o, const float *dS_out, float *dq, float *dk, float *dv,
                           float *dalpha, float *dbeta, float *dS0, const void *saved,
                           void *workspace, void *stream);

// One decoding token: q, k, v (B, H, D) bf16, alpha, beta (B, H) fp32, S (B, H, D, D) fp32
// updated in place, o (B, H, D) bf16 written.
void hy_cuda_gdn_step(int B, int H, int D, const void *q, const void *k, const void *v,
                      const float *alpha, const float *beta, float *S, void *o, void *stream);

// One decoding token of a whole GDN mixer after its two input projections, in one launch (the
// unfused step is a dozen; see gdn_decode.cu). qkv (B, 3 H D) bf16: the qkv projection, before
// the short conv; conv_w (3 H D, K) and conv_b (3 H D, or NULL) fp32; conv_cache (B, 3 H D, K-1)
// bf16, the K-1 previous qkv rows, shifted in place to end with this one (unused when K = 1);
// ab (B, 2 H) bf16: the gate projection with its bias, alpha logits then beta logits. Computes
// [q|k|v] = silu(conv), q and k scaled to unit length per head when norm_qk (eps 1e-12),
// alpha = sigmoid(ab[:H]), beta = sigmoid(ab[H:]), then the step of hy_cuda_gdn_step on
// S (B, H, D, D) fp32 in place, o (B, H, D) bf16. Everything between qkv and o stays fp32.
void hy_cuda_gdn_decode(int B, int H, int D, int K, int norm_qk, const void *qkv,
                        const float *conv_w, const float *conv_b, void *conv_cache, const void *ab,
                        float *S, void *o, void *stream);

// GDN's input stage for training and prefill (layers/gdn_qkv.c), fused. qkv (B, T, 3 H D)
// bf16: the qkv projection; w (3 H D, K) and bias (3 H D, or NULL) fp32: the short conv;
// cache (B, 3 H D, K-1) bf16 or NULL: the inputs before position 0 (zero without it; unused
// when K = 1), read only. With u = conv(qkv) (bias, then taps j = 0 .. K-1 in order, as
// hy_cuda_short_conv_fwd) and s = silu(u), kept in fp32:
//   q, k, v (B, T, H D) bf16 = s[:, :, 0:I], s[:, :, I:2I], s[:, :, 2I:3I]   (I = H D),
// q and k divided per head (D channels) by max(||.||, eps) when norm_qk. 1 <= K <= 16; a row
// (two f32 copies of its 3 H D channels, in the backward) must fit in a block's 227 KB of
// shared memory (3 H D up to ~24000). `work`: device memory of hy_cuda_gdn_qkv_work_bytes(),
// 16-byte aligned (the weights transposed), free again once the call's kernels have run
// (stream order).
//
// Backward: hy_cuda_gdn_qkv_bwd gives from dq, dk, dv (B, T, H D) fp32 (each may be NULL:
// zero), recomputing u from qkv, with du = d loss / d u (B, T, 3 H D):
//   dx = d qkv (B, T, 3 H D) fp32, written (set_dx) or added to, or written in bf16 to dx_bf16
//   instead (the one-pass shapes only: hy_cuda_gdn_qkv_bwd_one_pass() says whether these
//   pointers and sizes take them); dw (3 H D, K) and db (3 H D) fp32 added to; each of dx,
//   dw, db may be NULL;
// as hy_cuda_short_conv_bwd with dy = du would (the cache gets no gradient). K <= 4 with D / 4
// a power of two up to 32 and 16-byte aligned rows: one pass, du never in memory; other shapes:
// hy_cuda_gdn_qkv_du writes du, then hy_cuda_short_conv_bwd. `scratch`: device memory of
// hy_cuda_gdn_qkv_bwd_scratch_bytes(), 16-byte aligned (the larger of the two ways' needs).
size_t hy_cuda_gdn_qkv_work_bytes(int H, int D, int K);
void hy_cuda_gdn_qkv_fwd(int B, int T, int H, int D, int K, int norm_qk, float eps,
                         const void *qkv, const float *w, const float *bias, const void *cache,
                         void *q, void *k, void *v, void *work, void *stream);
size_t hy_cuda_gdn_qkv_bwd_scratch_bytes(int B, int T, int H, int D, int K);
int hy_cuda_gdn_qkv_bwd_one_pass(int H, int D, int K, const void *qkv, const float *dq,
                                 const float *dk, const float *dv);
void hy_cuda_gdn_qkv_bwd(int B, int T, int H, int D, int K, int norm_qk, float eps,
                         const void *qkv, const float *w, const float *bias, const void *cache,
                         const float *dq, const float *dk, const float *dv, float *dx, int set_dx,
                         void *dx_bf16, float *dw, float *db, void *scratch,
                         size_t scratch_bytes, void *stream);
// du (B, T, 3 H D) fp32 alone (the shared-memory kernel; `work` as the forward's).
void hy_cuda_gdn_qkv_du(int B, int T, int H, int D, int K, int norm_qk, float eps,
                        const void *qkv, const float *w, const float *bias, const void *cache,
                        const float *dq, const float *dk, const float *dv, float *du, void *work,
                        void *stream);

// GDN's gates for training and prefill: ab (rows, 2 H) bf16, the gate projection with its bias,
// -> alpha, beta (rows, H) fp32 = sigmoid(ab[:, :H]), sigmoid(ab[:, H:]). Backward: dab (rows,
// 2 H) fp32 = [dalpha s (1 - s) | dbeta s (1 - s)], s recomputed from ab (dalpha or dbeta NULL:
// zero), added to dab, or written when overwrite.
void hy_cuda_gdn_gates_fwd(int rows, int H, const void *ab, float *alpha, float *beta,
                           void *stream);
void hy_cuda_gdn_gates_bwd(int rows, int H, const void *ab, const float *dalpha,
                           const float *dbeta, float *dab, int overwrite, void *stream);

// Test hooks (tests and hydra-bench only; not thread-safe, process-wide). bv: rows of the state
// per thread block in the two sequential passes, 16, 32 or 64 (the backward caps it at 32 for
// D = 128), or 0 for the automatic choice from B * H and the SM count. wy_reference: which
// kernels compute the chunk-local WY factors and their gradients: 1 the reference ones
// (per-column triangular solves on CUDA cores, the first version validated on an H100), 0 the
// tensor-core ones, -1 the default (the faster of each direction on an H200: the reference
// forward and the tensor-core backward). Without a call, HY_GDN_REFERENCE_WY=1 or
// HY_GDN_FAST_WY=1 in the environment picks one kind for both directions.
void hy_cuda_gdn_set_test_options(int bv, int wy_reference);

// Timing helper for tests and hydra-bench: median milliseconds over `iters` runs (after `warmup`
// runs) of the forward alone, of forward + hy_cuda_gdn_bwd_saved and of forward + hy_cuda_gdn_bwd
// (which recomputes), measured with CUDA events on the default stream. Arguments as above;
// dS_out, S0, S_out and dS0 may be NULL, and so may fwd_bwd_ms and fwd_bwd_recompute_ms (not
// timed then).
void hy_cuda_gdn_time(int B, int T, int H, int D, const void *q, const void *k, const void *v,
                      const float *alpha, const float *beta, const float *S0, void *o,
                      float *S_out, const void *d_o, const float *dS_out, float *dq, float *dk,
                      float *dv, float *dalpha, float *dbeta, float *dS0, void *workspace,
                      int warmup, int iters, double *fwd_ms, double *fwd_bwd_ms,
                      double *fwd_bwd_recompute_ms);

#ifdef __cplusplus
}
#endif

#endif
