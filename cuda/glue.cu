// glue.cu: the small kernels of hy_cuda_glue.h that join the CUDA ops into a
// training step and a decoding state (see the header for each contract).
//
// Every kernel walks a flat index space in a grid-stride loop, one thread per
// unit; nothing uses atomics, so every result is the same bits every run.
//   * fp32 updates (acc, axpy, scale): a unit is 4 floats (one 16-byte load)
//     when every pointer is 16-byte aligned, the n % 4 tail single floats;
//     each element is one IEEE fp32 operation (__fadd_rn / __fmul_rn: never
//     contracted into an FMA), so the result is the host's `y + a * x` bit for
//     bit.
//   * row copies (copy_rows, ring_write, ring_read, acc_rows): a unit is 16
//     bytes of a row when the row length in bytes is a multiple of 16 and
//     both base pointers are 16-byte aligned (then every row is), else one
//     element. A small "map" gives each (b, i) its source and destination row.
//   * conv_cache_update: one thread per (b, c) column of the cache.
//   * argmax_rows: one warp per row.
// Bad sizes are a usage error (exit 2) naming the op; a call with nothing to
// do returns before touching the device (its pointers may then be NULL).
#include <stdint.h>

#include "check.cuh"
#include "hy_cuda_glue.h"

namespace {

constexpr int kThreads = 256;      // threads per block
constexpr int kMaxBlocks = 16384;  // grid cap; grid-stride loops do the rest

#define LAUNCH_CHECK() CUDA_CHECK(cudaGetLastError())

inline cudaStream_t as_stream(void *s) { return (cudaStream_t)s; }

inline unsigned blocks_for(int64_t units, int threads = kThreads) {
    int64_t b = (units + threads - 1) / threads;
    if (b < 1) b = 1;
    if (b > kMaxBlocks) b = kMaxBlocks;
    return (unsigned)b;
}

inline bool aligned16(const void *p) { return p == nullptr || ((uintptr_t)p & 15u) == 0; }

#define GRID_STRIDE(u, total)                                                     \
    for (int64_t u = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; u < (total); \
         u += (int64_t)gridDim.x * blockDim.x)

// A flat element count that came from a negative number is a usage error.
#define CHECK_COUNT(op, n)                                                              \
    HY_REQUIRE((n) <= (size_t)INT64_MAX, "%s: bad element count %zu (a negative count?)", \
               op, (size_t)(n))

// bf16 (uint16_t storage) -> fp32, exact (as ops.cu).
__device__ __forceinline__ float bf2f(uint16_t h) { return __uint_as_float((uint32_t)h << 16); }

// As ops.cu and the CPU op: 1 / (1 + expf(-x)) in fp32.
__device__ __forceinline__ float sigm(float x) { return 1.0f / (1.0f + expf(-x)); }

// ---------------------------------------------------------------- fp32 updates
// y[i] = f(y[i], x[i]) for i < n; float4 units when V4 (x, y 16-byte aligned).
// F::kReadsX = false: x is not read (may be NULL).
template <bool V4, class F>
__device__ __forceinline__ void update_body(const F &f, int64_t n, const float *x, float *y) {
    const int64_t groups = V4 ? n / 4 : 0, units = groups + (n - 4 * groups);
    GRID_STRIDE(u, units) {
        if (V4 && u < groups) {
            float4 yv = reinterpret_cast<float4 *>(y)[u];
            float4 xv = make_float4(0.f, 0.f, 0.f, 0.f);
            if (F::kReadsX) xv = reinterpret_cast<const float4 *>(x)[u];
            yv.x = f(yv.x, xv.x);
            yv.y = f(yv.y, xv.y);
            yv.z = f(yv.z, xv.z);
            yv.w = f(yv.w, xv.w);
            reinterpret_cast<float4 *>(y)[u] = yv;
        } else {
            const int64_t i = 4 * groups + (u - groups);
            y[i] = f(y[i], F::kReadsX ? x[i] : 0.0f);
        }
    }
}

struct AccF {
    static constexpr bool kReadsX = true;
    __device__ float operator()(float y, float x) const { return __fadd_rn(y, x); }
};

struct AxpyF {
    static constexpr bool kReadsX = true;
    float a;
    __device__ float operator()(float y, float x) const { return __fadd_rn(y, __fmul_rn(a, x)); }
};

struct ScaleF {
    static constexpr bool kReadsX = false;
    float s;
    __device__ float operator()(float y, float) const { return __fmul_rn(y, s); }
};

template <bool V4>
__global__ void acc_kernel(int64_t n, const float *x, float *y) {
    update_body<V4>(AccF{}, n, x, y);
}

template <bool V4>
__global__ void axpy_kernel(int64_t n, const float *a_dev, const float *x, float *y) {
    update_body<V4>(AxpyF{a_dev[0]}, n, x, y);
}

template <bool V4>
__global__ void scale_kernel(int64_t n, float s, float *y) {
    update_body<V4>(ScaleF{s}, n, nullptr, y);
}

__global__ void fill_kernel(int64_t n, float v, float *y) {
    GRID_STRIDE(i, n) y[i] = v;
}

// ---------------------------------------------------------------- sigmoid, fp32 out
__global__ void sigmoid_f32out_kernel(int64_t n, const uint16_t *x, float *y) {
    GRID_STRIDE(i, n) y[i] = sigm(bf2f(x[i]));
}

// ---------------------------------------------------------------- conv cache
// Column (b, c) of cache (B, C, k1), k1 = K - 1, becomes entries T .. T + k1 - 1
// of [old column | x[b, :, c]]. Ascending j reads old entry T + j >= j, which
// no earlier step of this thread has overwritten: in place, no temporary.
__global__ void conv_cache_kernel(int64_t BC, int T, int C, int k1, const uint16_t *x,
                                  uint16_t *cache) {
    GRID_STRIDE(u, BC) {
        const int64_t b = u / C, c = u - b * C;
        uint16_t *col = cache + u * k1;
        for (int j = 0; j < k1; j++) {
            const int64_t idx = (int64_t)T + j;  // in the concatenation of length k1 + T
            col[j] = idx < k1 ? col[idx] : x[(b * T + (idx - k1)) * C + c];
        }
    }
}

// ---------------------------------------------------------------- row copies
// Row i < n of batch b: its source row s and destination row d (row indices
// into the flat (rows, E) views of src and dst).
struct LinearRows {  // copy_rows, acc_rows
    int64_t src_T, src_row0, dst_T, dst_row0;
    __device__ void operator()(int64_t b, int64_t i, int64_t &s, int64_t &d) const {
        s = b * src_T + src_row0 + i;
        d = b * dst_T + dst_row0 + i;
    }
};

struct RingWriteRows {  // kv (B, T, E) rows t0 + i -> ring (B, W, E) slots (slot0 + i) % W
    int64_t T, t0, W, slot0;  // slot0 < W, i < W
    __device__ void operator()(int64_t b, int64_t i, int64_t &s, int64_t &d) const {
        const int64_t slot = slot0 + i >= W ? slot0 + i - W : slot0 + i;
        s = b * T + t0 + i;
        d = b * W + slot;
    }
};

struct RingReadRows {  // ring (B, W, E) slots (slot0 + i) % W -> out (B, L, E) rows i
    int64_t W, slot0, L;  // slot0 < W, i < W
    __device__ void operator()(int64_t b, int64_t i, int64_t &s, int64_t &d) const {
        const int64_t slot = slot0 + i >= W ? slot0 + i - W : slot0 + i;
        s = b * W + slot;
        d = b * L + i;
    }
};

__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ float4 add_rn(float4 a, float4 b) {
    return make_float4(__fadd_rn(a.x, b.x), __fadd_rn(a.y, b.y), __fadd_rn(a.z, b.z),
                       __fadd_rn(a.w, b.w));
}

// For b < B, i < n: dst row d = src row s (ADD: dst row d += src row s), rows
// of upr units U. Destination rows are distinct, so every unit has one writer.
template <class U, bool ADD, class Map>
__global__ void rows_kernel(Map map, int64_t n, int64_t total_rows, int64_t upr, const U *src,
                            U *dst) {
    GRID_STRIDE(u, total_rows * upr) {
        const int64_t r = u / upr, e = u - r * upr;
        const int64_t b = r / n, i = r - b * n;
        int64_t s, d;
        map(b, i, s, d);
        const U v = src[s * upr + e];
        if constexpr (ADD)
            dst[d * upr + e] = add_rn(dst[d * upr + e], v);
        else
            dst[d * upr + e] = v;
    }
}

// B * n rows of E elements of `elem` bytes (2: bf16, 4: fp32) through `map`.
// add: fp32 dst += src, else a bit copy.
template <class Map>
void launch_rows(const Map &map, int64_t B, int64_t n, int64_t E, int elem, const void *src,
                 void *dst, bool add, cudaStream_t s) {
    const int64_t rows = B * n, row_bytes = E * elem;
    const bool vec = row_bytes % 16 == 0 && aligned16(src) && aligned16(dst);
    if (add) {
        if (vec)
            rows_kernel<float4, true><<<blocks_for(rows * (row_bytes / 16)), kThreads, 0, s>>>(
                map, n, rows, row_bytes / 16, (const float4 *)src, (float4 *)dst);
        else
            rows_kernel<float, true><<<blocks_for(rows * E), kThreads, 0, s>>>(
                map, n, rows, E, (const float *)src, (float *)dst);
    } else if (vec) {
        rows_kernel<uint4, false><<<blocks_for(rows * (row_bytes / 16)), kThreads, 0, s>>>(
            map, n, rows, row_bytes / 16, (const uint4 *)src, (uint4 *)dst);
    } else if (elem == 2) {
        rows_kernel<uint16_t, false><<<blocks_for(rows * E), kThreads, 0, s>>>(
            map, n, rows, E, (const uint16_t *)src, (uint16_t *)dst);
    } else {
        rows_kernel<uint32_t, false><<<blocks_for(rows * E), kThreads, 0, s>>>(
            map, n, rows, E, (const uint32_t *)src, (uint32_t *)dst);
    }
    LAUNCH_CHECK();
}

void check_rows(const char *op, int B, int n, int E, const void *src, int src_T, int src_row0,
                const void *dst, int dst_T, int dst_row0) {
    HY_REQUIRE(B >= 0 && n >= 0 && E >= 0, "%s: bad sizes B %d, n %d, E %d", op, B, n, E);
    HY_REQUIRE(src_row0 >= 0 && src_T >= 0 && (int64_t)src_row0 + n <= src_T,
               "%s: source rows [%d, %lld) are outside its %d rows", op, src_row0,
               (long long)src_row0 + n, src_T);
    HY_REQUIRE(dst_row0 >= 0 && dst_T >= 0 && (int64_t)dst_row0 + n <= dst_T,
               "%s: destination rows [%d, %lld) are outside its %d rows", op, dst_row0,
               (long long)dst_row0 + n, dst_T);
    HY_REQUIRE(((int64_t)B * n * E == 0) || (src && dst), "%s: NULL pointer (src %p, dst %p)",
               op, src, dst);
}

template <int ELEM>
void copy_rows(const char *op, bool add, int B, int n, int E, const void *src, int src_T,
               int src_row0, void *dst, int dst_T, int dst_row0, void *stream) {
    check_rows(op, B, n, E, src, src_T, src_row0, dst, dst_T, dst_row0);
    if ((int64_t)B * n * E == 0) return;
    launch_rows(LinearRows{src_T, src_row0, dst_T, dst_row0}, B, n, E, ELEM, src, dst, add,
                as_stream(stream));
}

// ---------------------------------------------------------------- argmax
// One warp per row. Each lane keeps the first largest non-NaN value of its
// elements (bi < 0: none yet); the warp then keeps the largest value, the
// lowest index on ties: the first largest non-NaN element of the row. As
// hy_eval_argmax's scan (eval/eval_model.c), a NaN in column 0 gives 0 (it
// never loses a `>` comparison), as does a row of NaNs.
__global__ void argmax_rows_kernel(int64_t rows, int V, const float *x, int32_t *idx) {
    const int lane = threadIdx.x & 31;
    const int64_t warp = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const int64_t warps = ((int64_t)gridDim.x * blockDim.x) >> 5;
    for (int64_t r = warp; r < rows; r += warps) {  // uniform across the warp
        const float *row = x + r * V;
        float bv = 0.0f;
        int bi = -1;
        for (int v = lane; v < V; v += 32) {
            const float f = row[v];
            if (f == f && (bi < 0 || f > bv)) {
                bv = f;
                bi = v;
            }
        }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
            const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
            if (oi >= 0 && (bi < 0 || ov > bv || (ov == bv && oi < bi))) {
                bv = ov;
                bi = oi;
            }
        }
        if (lane == 0) {
            const float f0 = row[0];
            idx[r] = (bi < 0 || f0 != f0) ? 0 : bi;
        }
    }
}

}  // namespace

// ================================================================ entry points
extern "C" void hy_cuda_acc_f32(size_t n, const float *x, float *y, void *stream) {
    CHECK_COUNT("cuda acc_f32", n);
    if (n == 0) return;
    HY_REQUIRE(x && y, "cuda acc_f32: NULL pointer (x %p, y %p)", (const void *)x, (void *)y);
    const int64_t nn = (int64_t)n;
    cudaStream_t s = as_stream(stream);
    if (aligned16(x) && aligned16(y))
        acc_kernel<true><<<blocks_for(nn / 4 + 3), kThreads, 0, s>>>(nn, x, y);
    else
        acc_kernel<false><<<blocks_for(nn), kThreads, 0, s>>>(nn, x, y);
    LAUNCH_CHECK();
}

extern "C" void hy_cuda_axpy_dev(size_t n, const float *a_dev, const float *x, float *y,
                                 void *stream) {
    CHECK_COUNT("cuda axpy_dev", n);
    if (n == 0) return;
    HY_REQUIRE(a_dev && x && y, "cuda axpy_dev: NULL pointer (a_dev %p, x %p, y %p)",
               (const void *)a_dev, (const void *)x, (void *)y);
    const int64_t nn = (int64_t)n;
    cudaStream_t s = as_stream(stream);
    if (aligned16(x) && aligned16(y))
        axpy_kernel<true><<<blocks_for(nn / 4 + 3), kThreads, 0, s>>>(nn, a_dev, x, y);
    else
        axpy_kernel<false><<<blocks_for(nn), kThreads, 0, s>>>(nn, a_dev, x, y);
    LAUNCH_CHECK();
}

extern "C" void hy_cuda_scale_f32(size_t n, float s_, float *y, void *stream) {
    CHECK_COUNT("cuda scale_f32", n);
    if (n == 0) return;
    HY_REQUIRE(y, "cuda scale_f32: y is NULL");
    const int64_t nn = (int64_t)n;
    cudaStream_t s = as_stream(stream);
    if (aligned16(y))
        scale_kernel<true><<<blocks_for(nn / 4 + 3), kThreads, 0, s>>>(nn, s_, y);
    else
        scale_kernel<false><<<blocks_for(nn), kThreads, 0, s>>>(nn, s_, y);
    LAUNCH_CHECK();
}

extern "C" void hy_cuda_fill_f32(size_t n, float v, float *y, void *stream) {
    CHECK_COUNT("cuda fill_f32", n);
    if (n == 0) return;
    HY_REQUIRE(y, "cuda fill_f32: y is NULL");
    const int64_t nn = (int64_t)n;
    fill_kernel<<<blocks_for(nn), kThreads, 0, as_stream(stream)>>>(nn, v, y);
    LAUNCH_CHECK();
}

extern "C" void hy_cuda_sigmoid_f32out_fwd(size_t n, const void *x, float *y, void *stream) {
    CHECK_COUNT("cuda sigmoid_f32out_fwd", n);
    if (n == 0) return;
    HY_REQUIRE(x && y, "cuda sigmoid_f32out_fwd: NULL pointer (x %p, y %p)", x, (void *)y);
    const int64_t nn = (int64_t)n;
    sigmoid_f32out_kernel<<<blocks_for(nn), kThreads, 0, as_stream(stream)>>>(
        nn, (const uint16_t *)x, y);
    LAUNCH_CHECK();
}

extern "C" void hy_cuda_conv_cache_update(int B, int T, int C, int K, const void *x, void *cache,
                                          void *stream) {
    HY_REQUIRE(B >= 0 && T >= 0 && C >= 0 && K >= 2,
               "cuda conv_cache_update: bad sizes B %d, T %d, C %d, K %d (K must be >= 2)", B, T,
               C, K);
    const int64_t BC = (int64_t)B * C;
    if (BC == 0 || T == 0) return;  // T == 0: the cache keeps its columns
    HY_REQUIRE(x && cache, "cuda conv_cache_update: NULL pointer (x %p, cache %p)", x, cache);
    conv_cache_kernel<<<blocks_for(BC), kThreads, 0, as_stream(stream)>>>(
        BC, T, C, K - 1, (const uint16_t *)x, (uint16_t *)cache);
    LAUNCH_CHECK();
}

extern "C" void hy_cuda_ring_write(int B, int T, int H, int D, int W, int64_t pos0,
                                   const void *kv, void *ring, void *stream) {
    HY_REQUIRE(B >= 0 && T >= 0 && H >= 0 && D >= 0 && W >= 1 && pos0 >= 0,
               "cuda ring_write: bad arguments B %d, T %d, H %d, D %d, W %d, pos0 %lld", B, T, H,
               D, W, (long long)pos0);
    const int64_t E = (int64_t)H * D, m = T < W ? T : W, t0 = T - m;
    if ((int64_t)B * m * E == 0) return;
    HY_REQUIRE(kv && ring, "cuda ring_write: NULL pointer (kv %p, ring %p)", kv, ring);
    launch_rows(RingWriteRows{T, t0, W, (pos0 + t0) % W}, B, m, E, 2, kv, ring, false,
                as_stream(stream));
}

extern "C" void hy_cuda_ring_read(int B, int H, int D, int W, int64_t pos, int n,
                                  const void *ring, void *out, int L, void *stream) {
    HY_REQUIRE(B >= 0 && H >= 0 && D >= 0 && W >= 1 && pos >= 0,
               "cuda ring_read: bad arguments B %d, H %d, D %d, W %d, pos %lld", B, H, D, W,
               (long long)pos);
    HY_REQUIRE(n >= 0 && n <= W && n <= pos,
               "cuda ring_read: n = %d is not in [0, min(pos = %lld, W = %d)]", n,
               (long long)pos, W);
    HY_REQUIRE(L >= n, "cuda ring_read: %d rows do not fit an output of L = %d rows", n, L);
    const int64_t E = (int64_t)H * D;
    if ((int64_t)B * n * E == 0) return;
    HY_REQUIRE(ring && out, "cuda ring_read: NULL pointer (ring %p, out %p)", ring, out);
    launch_rows(RingReadRows{W, (pos - n) % W, L}, B, n, E, 2, ring, out, false,
                as_stream(stream));
}

extern "C" void hy_cuda_copy_rows_bf16(int B, int n, int E, const void *src, int src_T,
                                       int src_row0, void *dst, int dst_T, int dst_row0,
                                       void *stream) {
    copy_rows<2>("cuda copy_rows_bf16", false, B, n, E, src, src_T, src_row0, dst, dst_T,
                 dst_row0, stream);
}

extern "C" void hy_cuda_copy_rows_f32(int B, int n, int E, const float *src, int src_T,
                                      int src_row0, float *dst, int dst_T, int dst_row0,
                                      void *stream) {
    copy_rows<4>("cuda copy_rows_f32", false, B, n, E, src, src_T, src_row0, dst, dst_T,
                 dst_row0, stream);
}

extern "C" void hy_cuda_acc_rows_f32(int B, int n, int E, const float *src, int src_T,
                                     int src_row0, float *dst, int dst_T, int dst_row0,
                                     void *stream) {
    copy_rows<4>("cuda acc_rows_f32", true, B, n, E, src, src_T, src_row0, dst, dst_T,
                 dst_row0, stream);
}

extern "C" void hy_cuda_argmax_rows_f32(int rows, int V, const float *x, int32_t *idx,
                                        void *stream) {
    HY_REQUIRE(rows >= 0 && V >= 1, "cuda argmax_rows_f32: bad sizes rows %d, V %d", rows, V);
    if (rows == 0) return;
    HY_REQUIRE(x && idx, "cuda argmax_rows_f32: NULL pointer (x %p, idx %p)", (const void *)x,
               (void *)idx);
    argmax_rows_kernel<<<blocks_for(rows, kThreads / 32), kThreads, 0, as_stream(stream)>>>(
        rows, V, x, idx);
    LAUNCH_CHECK();
}
