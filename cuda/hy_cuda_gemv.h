// hy_cuda_gemv.h: the decoding step's projections (cuda/gemv.cu).
//
// At batch 1 a projection is a matrix-vector product that reads its bf16
// weight once: a few microseconds of bandwidth, about as long as the launch
// of the small kernel before or after it. hy_cuda_gemv folds those
// neighbours into the product: the rmsnorm, the GDN output gate or the
// SwiGLU that prepares its input (the prologue), and the bias and the
// residual add after it (the epilogue), and it can fill up to
// HY_GEMV_MAX_OUT projections of the same input in one launch (a GDN
// layer's qkv, gate-logit and output-gate projections).
//
// Numerics are those of the unfused ops up to the order of the sums: the
// prologue's result is rounded to bf16 (as the op that would have stored
// it), the product accumulates in fp32, bf16(dot + bias) is the
// projection, and with a residual y = bf16(residual + projection).
//
// Conventions as hy_cuda_ops.h: bf16 tensors are uint16_t storage passed as
// void *, fp32 as float *, device pointers; `stream` is a cudaStream_t as
// void * (NULL: the default stream); asynchronous; nothing allocated; bad
// sizes or pointers are a usage error (exit 2) naming the call. A build
// without CUDA links a stub that stops with a clear error.
#ifndef HY_CUDA_GEMV_H
#define HY_CUDA_GEMV_H
#include <stddef.h>
#include <stdint.h>
#ifdef __cplusplus
extern "C" {
#endif

#define HY_GEMV_MAX_OUT 4

typedef enum {
    HY_GEMV_PLAIN = 0,    // u = x
    HY_GEMV_RMSNORM = 1,  // u = x * rstd(x) * norm_w, rstd = 1 / sqrt(mean(x^2) + eps)
    HY_GEMV_GATE = 2,     // u = x * bf16(silu(gate))
    HY_GEMV_SWIGLU = 3,   // u = silu(x[:, :K]) * x[:, K:] (x is (B, 2K): [gate | value])
} hy_gemv_kind;

// The input u (B, K) of every projection of the call, from x (B, K) bf16
// (SWIGLU: (B, 2K)), gate (B, K) bf16 for GATE, norm_w (K) fp32 for RMSNORM.
typedef struct {
    hy_gemv_kind kind;
    const void *x;
    const void *gate;
    const float *norm_w;
    float eps;
} hy_gemv_in;

// One projection: y (B, N) bf16 = u W^T (+ bias) (+ residual), W (N, K)
// bf16 row-major, bias (N) fp32 or NULL, residual (B, N) bf16 or NULL (it
// may be y itself: each element is read before it is written, by the same
// thread). y must not overlap the call's inputs otherwise.
// swiglu = 1 (the MLP's w_fused, the call's only projection, N even, no bias
// or residual): W's rows are [gate | value], and y (B, N/2) = silu(g) * v
// with g, v = bf16(u W^T) of rows m and m + N/2 (as hy_swiglu on the
// projection's bf16 output), so the SwiGLU costs no kernel of its own.
typedef struct {
    const void *W;
    const float *bias;
    const void *residual;
    void *y;
    int N;
    int swiglu;
} hy_gemv_out;

// The largest K: u sits in shared memory, four batch rows of fp32 at a
// time (200 KiB).
#define HY_GEMV_MAX_K 12800

// n_out (1..HY_GEMV_MAX_OUT) projections of the same input u. B >= 1,
// 1 <= K <= HY_GEMV_MAX_K, every N >= 1.
void hy_cuda_gemv(int B, int K, const hy_gemv_in *in, const hy_gemv_out *out, int n_out,
                  void *stream);

// 1 when hy_cuda_gemv runs this call with the batch-1 kernel that stages its
// weights in shared memory (cuda/gemv_resident.cu; same results to the bit),
// 0 when with the general one. HYDRA_GEMV_RESIDENT=0 in the environment
// keeps every call on the general kernel (for A/B timing and tests).
int hy_cuda_gemv_resident(int B, int K, const hy_gemv_in *in, const hy_gemv_out *out, int n_out);

#ifdef __cplusplus
}
#endif
#endif
