// hy_cuda_blas.h: GEMMs (cuBLAS), the fused LM head + cross-entropy, and the
// optimizers (AdamW, Muon, gradient norm and clipping) on the GPU, as plain C.
//
// Conventions of the GPU path (DESIGN.md section 2):
//   * activations are bf16, stored as uint16_t and passed as `void *`;
//     rounding float -> bf16 is round-to-nearest-even, bit for bit
//     hy_f32_to_bf16() of autograd/tensor.c (NaN stays a quiet NaN);
//   * activation gradients, parameter gradients and master weights are fp32;
//     the GEMMs read a bf16 copy of each matrix (hy_cuda_f32_to_bf16() after
//     every optimizer step);
//   * every GEMM accumulates in fp32 (cuBLAS, CUBLAS_COMPUTE_32F);
//   * backward ACCUMULATES (+=) into gradient buffers, never overwrites.
// Every matrix is row-major and contiguous unless a leading dimension says
// otherwise. Pointers are device pointers. `stream` is a cudaStream_t passed
// as void * (NULL: the legacy default stream). Nothing here allocates device
// memory except hy_cuda_blas_init() and hy_cuda_optim_plan_create() (set-up
// time): per-step entry points take caller-provided scratch whose size comes
// from the matching *_scratch_bytes() function, and a scratch too small is a
// clear error naming both sizes. Every CUDA and cuBLAS call is checked and
// reports file and line.
//
// One handle and one workspace serve the process: run the GEMM entry points
// from one host thread, and on one stream at a time (two streams running
// GEMMs concurrently would share the workspace). Per-step scratch is the
// caller's: calls that share a scratch buffer must be ordered (same stream).
//
// A build without CUDA has no implementation of these functions: callers
// check hy_cuda_built() first (tests/CMakeLists.txt does not build
// test_gpu_* without CUDA; other callers need stubs in cuda/nocuda.c).
#ifndef HY_CUDA_BLAS_H
#define HY_CUDA_BLAS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

// hy_optim_config, hy_param_table (plain C; declared C-linkage for the .cu files).
#include "../optim/optim.h"

// ---------------------------------------------------------------- handle
// One cuBLAS handle and its workspace (32 MiB, allocated here once) per
// process, on the device current at the call. Idempotent. Every entry point
// below that runs a GEMM needs it and says so clearly when it is missing.
void hy_cuda_blas_init(void);
void hy_cuda_blas_shutdown(void);

// ---------------------------------------------------------------- conversions
// y (n) bf16 = x (n) fp32, round to nearest even as hy_f32_to_bf16(). Also the
// refresh of the bf16 matrix copies after an optimizer step: with a bf16
// buffer parallel to the flat parameter buffer (same offsets), one call over
// table->numel refreshes every copy.
void hy_cuda_f32_to_bf16(const float *x, void *y, size_t n, void *stream);
// y (n) fp32 = x (n) bf16 (exact).
void hy_cuda_bf16_to_f32(const void *x, float *y, size_t n, void *stream);

// ---------------------------------------------------------------- GEMM
// Row-major C (M, N) = alpha op(A) op(B) + beta C with op(A) (M, K) and op(B)
// (K, N). A and B are bf16; trans_a = 1 means A is stored (K, M) (lda is the
// stored row length), likewise B. C is fp32 when c_f32 = 1, else bf16;
// accumulation and the alpha/beta epilogue are fp32 (beta = 0 never reads C).
void hy_cuda_gemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const void *A,
                  int lda, const void *B, int ldb, float beta, void *C, int c_f32, int ldc,
                  void *stream);
// The same in plain fp32 (A, B, C fp32, fp32 products: never TF32). Slow;
// for references and Muon's exact mode.
void hy_cuda_gemm_f32(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A,
                      int lda, const float *B, int ldb, float beta, float *C, int ldc,
                      void *stream);
// `batch` independent products of hy_cuda_gemm() in one launch
// (cublasGemmStridedBatchedEx, CUBLAS_COMPUTE_32F, on the shared handle and
// workspace): product i reads A + i stride_a and B + i stride_b and writes
// C + i stride_c, the strides in ELEMENTS (bf16 for A and B; bf16 or fp32
// for C as c_f32 says). Every product has the same sizes, transposes,
// leading dimensions, alpha and beta. Matrices of C must not overlap
// (stride_c >= (M - 1) ldc + N when batch > 1); A and B may (stride 0
// broadcasts one matrix). batch 0 does nothing; batch 1 is one product
// (still through the batched call, so cuBLAS may pick another algorithm
// than hy_cuda_gemm()'s).
void hy_cuda_gemm_strided_batched(int trans_a, int trans_b, int M, int N, int K, float alpha,
                                  const void *A, int lda, long long stride_a, const void *B,
                                  int ldb, long long stride_b, float beta, void *C, int c_f32,
                                  int ldc, long long stride_c, int batch, void *stream);
// Row-major D = alpha op(A) op(B) + beta C, all four bf16 (fp32 accumulation and
// epilogue), `batch` products as in hy_cuda_gemm_strided_batched, with C an input apart from
// the output D (cuBLASLt): C may be one of the operands, and D never overwrites it. Strides
// in elements; C's may be 0. The algorithm is chosen once per call shape.
void hy_cuda_gemm_cd_strided_batched(int trans_a, int trans_b, int M, int N, int K, float alpha,
                                     const void *A, int lda, long long stride_a, const void *B,
                                     int ldb, long long stride_b, float beta, const void *C,
                                     int ldc, long long stride_c, void *D, int ldd,
                                     long long stride_d, int batch, void *stream);
// The same in plain fp32 as hy_cuda_gemm_f32() (fp32 products, never TF32).
void hy_cuda_gemm_f32_strided_batched(int trans_a, int trans_b, int M, int N, int K,
                                      float alpha, const float *A, int lda, long long stride_a,
                                      const float *B, int ldb, long long stride_b, float beta,
                                      float *C, int ldc, long long stride_c, int batch,
                                      void *stream);

// ---------------------------------------------------------------- linear
// y (rows, out) bf16 = x (rows, in) bf16 . W^T (W (out, in) bf16) + bias
// (out, fp32, or NULL). The product accumulates in fp32; with a bias, y is
// first filled with bf16(bias) and the GEMM adds to it (beta = 1), so
// y = bf16(x W^T + bf16(bias)).
void hy_cuda_linear_fwd(int rows, int in, int out, const void *x, const void *w,
                        const float *bias, void *y, void *stream);

// Scratch bytes hy_cuda_linear_bwd() needs (dy in bf16 plus the bias
// gradient's partial sums).
size_t hy_cuda_linear_bwd_scratch_bytes(int rows, int in, int out);
// dx (rows, in) fp32 += dy . W (dx_overwrite: dx = dy . W, its old
// contents ignored); dW (out, in) fp32 += dy^T . x; db (out) fp32 += sum
// over rows of dy. dy (rows, out) is fp32: it is rounded to bf16 in
// `scratch` for the two GEMMs (bf16 A/B, fp32 C, beta 1 or 0); db sums the
// fp32 dy in a fixed order (deterministic). dx, dw or db may be NULL (no
// gradient wanted).
void hy_cuda_linear_bwd(int rows, int in, int out, const float *dy, const void *x,
                        const void *w, float *dx, int dx_overwrite, float *dw, float *db,
                        void *scratch, size_t scratch_bytes, void *stream);
// The same without a bias, dy (rows, out) already bf16 (the rounding the
// fp32 form does in scratch): the two GEMMs alone.
void hy_cuda_linear_bwd_bf16(int rows, int in, int out, const void *dy, const void *x,
                             const void *w, float *dx, int dx_overwrite, float *dw,
                             void *stream);

// ---------------------------------------------------------------- LM head + cross-entropy
// Scratch bytes hy_cuda_head_ce() needs to process `chunk_rows` rows of
// logits at a time (chunk_rows <= 0 or > rows: all rows at once). Larger
// chunks mean fewer, larger GEMMs; the chunk's fp32 logits (chunk_rows * V * 4
// bytes) dominate.
size_t hy_cuda_head_ce_scratch_bytes(int rows, int V, int chunk_rows);
// Rows per chunk that hy_cuda_head_ce() uses with `scratch_bytes` (0 when the
// scratch cannot hold even one row).
int hy_cuda_head_ce_chunk_rows(int rows, int V, size_t scratch_bytes);
// Fused tied LM head and mean cross-entropy:
//   logits = h (rows, d) bf16 . E^T (E (V, d) bf16), fp32, one chunk at a time
//   loss   = mean over rows with target != ignore_index of lse - logit[target]
// Per chunk: logits (chunk, V) fp32 in scratch -> per-row online max/sum ->
// dlogits = (softmax - onehot) / n_valid written in place as bf16 -> at once
//   dh (rows, d) fp32 += dlogits . E      and      dE (V, d) fp32 += dlogits^T . h.
// Logits for all rows never exist at once. dh and dE NULL together: forward
// only (evaluation); one of them NULL: that gradient is skipped.
// Outputs (device memory, written, not accumulated): loss_dev[0] = the mean
// loss (0 when every target is ignored); count_dev[0] (may be NULL) = the
// number of rows counted. n_valid stays on the device (no host sync).
// targets (rows) int32 on the device. A target outside [0, V) that is not
// ignore_index cannot stop the GPU: it makes the loss NaN, which the
// trainer's non-finite-loss check reports (the data loaders reject such ids
// before they get here).
void hy_cuda_head_ce(int rows, int d, int V, const void *h, const void *E,
                     const int32_t *targets, int ignore_index, float *loss_dev,
                     int32_t *count_dev, float *dh, float *dE, void *scratch,
                     size_t scratch_bytes, void *stream);

// ---------------------------------------------------------------- optimizers
// One parameter as the GPU optimizer sees it: a range of the flat buffers.
typedef struct {
    size_t offset;     // first element in values and grads (the table's offset)
    size_t m_offset;   // first element in m (exp_avg / momentum buffer)
    size_t v_offset;   // first element in v (exp_avg_sq), AdamW ranges only
    int64_t rows;      // Muon's matrix view: shape[0] ...
    int64_t cols;      // ... and numel / shape[0]; numel = rows * cols
    float wd_mult;     // the table's per-parameter weight-decay multiplier
    int muon;          // 1: Muon, 0: AdamW
} hy_cuda_param_range;

// Fill `out` (room for t->n entries) with the table's parameters in table
// order, routed and laid out exactly as the CPU optimizer (optim.c): m at
// the table's offsets (m_offset = offset; t->numel floats), v packed for the AdamW parameters
// in 16-float runs. So GPU state copied to the host is the CPU optimizer's
// state, slot for slot (checkpoints, hy_optim_slots()). Returns t->n and
// stores the floats v needs in *v_numel.
int hy_cuda_optim_ranges(const hy_optim_config *c, const hy_param_table *t,
                         hy_cuda_param_range *out, size_t *v_numel);

// The device-side tables of a set of ranges (built once, at set-up: it
// allocates device memory). Ranges may be any subset (e.g. one rank's shard,
// with m and v compacted to that subset through m_offset and v_offset).
typedef struct hy_cuda_optim_plan hy_cuda_optim_plan;
hy_cuda_optim_plan *hy_cuda_optim_plan_create(const hy_cuda_param_range *r, int n);
void hy_cuda_optim_plan_destroy(hy_cuda_optim_plan *p);
// 1: Newton-Schulz on fp32 GEMMs (exact mode, see hy_cuda_muon_step());
// 0 (default): bf16 operands, fp32 accumulation.
void hy_cuda_optim_plan_set_ns_fp32(hy_cuda_optim_plan *p, int on);
// half (not NULL): the bf16 copies of the values, a buffer parallel to them
// (same offsets, as hy_params_refresh_half's): AdamW and Muon then write each
// updated value's copy as they update it, and the separate refresh pass is not
// needed (when this plan updates every parameter: one GPU). NULL (default):
// only the values are written.
void hy_cuda_optim_plan_set_half(hy_cuda_optim_plan *p, void *half);
// Clipping fused into the update: the steps after this (AdamW and Muon) multiply each
// gradient they read by hy_cuda_clip_grad_norm()'s factor, decided on the device from
// norm_dev[0] (the norm hy_cuda_grad_norm() writes there before each step), instead of a
// pass that scales the gradients in place (the same products, so the same bits; the
// gradient buffer keeps the unclipped values). max_norm <= 0 or norm_dev NULL: off.
void hy_cuda_optim_plan_set_clip(hy_cuda_optim_plan *p, float max_norm, const float *norm_dev);
// Scratch bytes for hy_cuda_optim_step() / hy_cuda_muon_step() (the
// largest Muon batch's Newton-Schulz buffers: about 4 fp32 copies of every
// matrix of the largest same-shape group, e.g. ~342 MiB for the 115M
// model's twelve (4096, 768) matrices; see hy_cuda_muon_step()) and
// hy_cuda_grad_norm() (partials).
size_t hy_cuda_optim_scratch_bytes(const hy_cuda_optim_plan *p);

// AdamW (torch.optim.AdamW, the operations of optim.c in the same order and
// rounding, so the GPU result matches the CPU bit for bit up to libm's
// sqrt) on the plan's AdamW ranges. `t` is the 1-based step being taken
// (hy_optimizer.step + 1); lr = c->lr * lr_mult.
void hy_cuda_adamw_step(const hy_cuda_optim_plan *p, const hy_optim_config *c, int64_t t,
                        float lr_mult, float *values, const float *grads, float *m, float *v,
                        void *stream);
// Muon (muon.c) on the plan's Muon ranges, each matrix independently:
// buf = mu buf + g; U = g + mu buf (Nesterov) or buf, in fp32;
// X = U / (||U||_F + 1e-7) (norm in double, deterministic two-pass);
// ns_steps of A = X X^T, B = b A + c A A, X = a X + B X with (a, b, c) =
// (3.4445, -4.7750, 2.0315) on the wide orientation (a tall matrix uses
// A = X^T X and X = a X + X B^T, no transposes), every product a bf16 GEMM
// with fp32 accumulation whose result (a X and b A terms included, from
// the bf16 values) is rounded once to bf16: X, A and B are bf16 between the
// products, as in the reference Muon. Then p *= 1 - step_lr wd;
// p -= step_lr X with step_lr = lr sqrt(max(1, rows / cols)),
// lr = c->muon_lr * lr_mult.
// Precision: bf16 Newton-Schulz differs from the fp32 CPU reference by
// 1-2% (Frobenius, relative; measured 1.3-1.5e-2 on matrices of 64 and
// more rows and columns), single elements by a few % of the largest: the
// quintic amplifies rounding (see gpu_muon_vs_cpu in
// tests/test_gpu_blas.c). That is the accepted cost of running it on
// tensor cores. hy_cuda_optim_plan_set_ns_fp32(p, 1) runs the same
// algorithm on plain fp32 GEMMs instead: it matches muon.c to ~1e-6 (tests,
// golden comparisons) at several times the cost.
// Batching: hy_cuda_optim_plan_create() groups the Muon ranges by (rows,
// cols) (a group bigger than 256 MiB of fp32 is cut into several batches),
// and each batch runs as one sequence of launches: batched elementwise
// kernels (momentum, per-matrix norm, scale, bf16 copies, apply) and
// strided-batched GEMMs (hy_cuda_gemm_strided_batched). A matrix's result
// does not depend on its batch (same roundings, same norm reduction order,
// its own weight decay) except through cuBLAS's choice of GEMM algorithm
// for the batch size; a shape with one matrix is a batch of one.
// The step's launches (about 6 per Newton-Schulz iteration and shape) are
// recorded as a CUDA graph at the first call and replayed while values,
// grads, m, scratch, the stream and the configuration stay the same (the
// lr is read from device memory); HYDRA_MUON_GRAPH=0 launches each kernel
// instead, with the same results. Not to be called inside another capture.
void hy_cuda_muon_step(const hy_cuda_optim_plan *p, const hy_optim_config *c, float lr_mult,
                       float *values, const float *grads, float *m, void *scratch,
                       size_t scratch_bytes, void *stream);
// Both, as hy_optim_step(): AdamW ranges then Muon ranges (they touch
// disjoint memory, so the order does not matter).
void hy_cuda_optim_step(const hy_cuda_optim_plan *p, const hy_optim_config *c, int64_t t,
                        float lr_mult, float *values, const float *grads, float *m, float *v,
                        void *scratch, size_t scratch_bytes, void *stream);

// Global gradient norm over the plan's ranges (padding between parameters
// never counts): sqrt of the sum of g^2, accumulated in double with a fixed
// two-pass reduction (deterministic: same bits every run). Written to
// norm_dev[0] (device float); nothing is synchronised.
void hy_cuda_grad_norm(const hy_cuda_optim_plan *p, const float *grads, float *norm_dev,
                       void *scratch, size_t scratch_bytes, void *stream);
// hy_clip_grad_norm() on the device: norm_dev[0] = the norm before clipping;
// when max_norm > 0 and the norm is finite and > max_norm, every gradient
// is scaled by (float)((double)max_norm / norm). The decision is taken on
// the device: no host sync.
void hy_cuda_clip_grad_norm(const hy_cuda_optim_plan *p, float *grads, float max_norm,
                            float *norm_dev, void *scratch, size_t scratch_bytes, void *stream);
// The clipping half alone, by a norm already in norm_dev[0] (data
// parallel: the norm of all the ranks' shards together).
void hy_cuda_clip_grads_by(const hy_cuda_optim_plan *p, float *grads, float max_norm,
                           const float *norm_dev, void *stream);

// ---------------------------------------------------------------- timing
// Median wall time in milliseconds of `reps` calls of fn(arg), each timed
// with CUDA events on the legacy default stream after `warmup` untimed
// calls. For benchmarks (hydra-bench, gpu_gemm_bench).
typedef void (*hy_cuda_timed_fn)(void *arg);
float hy_cuda_time_ms(hy_cuda_timed_fn fn, void *arg, int warmup, int reps);

#ifdef __cplusplus
}
#endif

#endif
