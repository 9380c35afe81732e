// gemv_common.cuh: what the two decoding GEMV kernels (gemv.cu: any batch and
// size; gemv_resident.cu: batch 1 with the weights staged on chip) share: the
// kernel's view of a call (its input and its projections' rows concatenated)
// and the epilogue. See hy_cuda_gemv.h for the contract.
#ifndef HY_CUDA_GEMV_COMMON_CUH
#define HY_CUDA_GEMV_COMMON_CUH

#include "hy_cuda_gemv.h"
#include "ops_device.cuh"

namespace hy_gemv {

// The general kernel's blocks (the resident kernel sums the rmsnorm's squares
// in the same groups, so that both give the same bits).
constexpr int kGemvWarps = 4;
constexpr int kGemvThreads = kGemvWarps * 32;

struct GemvSegs {
    const uint16_t *W[HY_GEMV_MAX_OUT];
    const float *bias[HY_GEMV_MAX_OUT];
    const uint16_t *res[HY_GEMV_MAX_OUT];
    uint16_t *y[HY_GEMV_MAX_OUT];
    int N[HY_GEMV_MAX_OUT];
    int end[HY_GEMV_MAX_OUT];  // exclusive end of each projection's rows in the concatenation
    int n;
    int swiglu;  // one projection whose rows m and m + N/2 give y[m] = silu(g) v
};

struct GemvIn {
    int kind;
    const uint16_t *x, *gate;
    const float *norm_w;
    float eps;
};

__device__ __forceinline__ float round_bf(float x) { return bf2f(f2bf(x)); }

// a[s] for a projection index s < HY_GEMV_MAX_OUT, by selects: indexing the
// kernel parameter's arrays with a run-time index would copy them to local
// memory.
template <typename T>
__device__ __forceinline__ T pick(const T (&a)[HY_GEMV_MAX_OUT], int s) {
    static_assert(HY_GEMV_MAX_OUT == 4, "pick() selects among four");
    return s == 0 ? a[0] : s == 1 ? a[1] : s == 2 ? a[2] : a[3];
}

// Projection of concatenated row r and its row within it.
__device__ __forceinline__ int seg_of(const GemvSegs &sg, int r, int *local) {
    const int s = (sg.n > 1 && r >= sg.end[0]) + (sg.n > 2 && r >= sg.end[1]) +
                  (sg.n > 3 && r >= sg.end[2]);
    *local = r - (pick(sg.end, s) - pick(sg.N, s));
    return s;
}

__device__ __forceinline__ void gemv_store(const GemvSegs &sg, int s, int n, int b, float acc) {
    const size_t i = (size_t)b * pick(sg.N, s) + n;
    const float *bias = pick(sg.bias, s);
    const uint16_t *res = pick(sg.res, s);
    float p = acc + (bias ? bias[n] : 0.0f);
    if (res) p = bf2f(res[i]) + round_bf(p);
    pick(sg.y, s)[i] = f2bf(p);
}

// The bias and residual of gemv_store, read beforehand: y = res + bf16(acc + bias)
// when the projection has a residual, else acc + bias (bit for bit gemv_store).
__device__ __forceinline__ void gemv_store_pre(const GemvSegs &sg, int s, int n, float acc,
                                               float bias, float res) {
    float p = acc + bias;
    if (pick(sg.res, s)) p = res + round_bf(p);
    pick(sg.y, s)[n] = f2bf(p);
}

// Batch 1 with the weights in shared memory (gemv_resident.cu): whether a
// call fits (and how: rows a block, blocks, shared bytes; plan may be NULL),
// and its launch; false: the caller launches the general kernel.
struct ResidentPlan {
    int per, blocks;
    size_t smem;
};
bool plan_resident(int K, const GemvIn &in, const GemvSegs &sg, ResidentPlan *plan);
bool launch_resident(int K, const GemvIn &in, const GemvSegs &sg, cudaStream_t s);

}  // namespace hy_gemv

#endif
