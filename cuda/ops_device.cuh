// ops_device.cuh: what the kernels of ops.cu, short_conv.cu and gdn_qkv.cu share: launch
// sizes, alignment tests, bf16 and vector loads on the device, warp sums,
// row walks, and the deterministic column sums of parameter gradients.
// Internal to cuda/ (an anonymous namespace: each .cu file its own copy).
#ifndef HY_CUDA_OPS_DEVICE_CUH
#define HY_CUDA_OPS_DEVICE_CUH

#include <math.h>
#include <stdint.h>

#include <cmath>

#include "check.cuh"

namespace {


constexpr int kThreads = 256;      // threads per block of the unit kernels
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
inline bool aligned8(const void *p) { return p == nullptr || ((uintptr_t)p & 7u) == 0; }

// Multiprocessors of the current device (132 on an H100 SXM / H200).
inline int sm_count() {
    int dev = 0, n = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev));
    return n > 0 ? n : 132;
}

// Grid of a streaming kernel of kThreads-thread blocks: one block per
// kThreads units, at most kStreamWaves waves of the whole device at full
// occupancy (2048 threads an SM); the grid-stride loops do the rest.
constexpr int kStreamWaves = 4;
inline unsigned stream_blocks(int64_t units) {
    int64_t b = (units + kThreads - 1) / kThreads;
    int64_t cap = (int64_t)sm_count() * (2048 / kThreads) * kStreamWaves;
    if (b > cap) b = cap;
    if (b < 1) b = 1;
    return (unsigned)b;
}

// ---------------------------------------------------------------- bf16 on the device
__device__ __forceinline__ float bf2f(uint16_t h) { return __uint_as_float((uint32_t)h << 16); }

// Bit for bit hy_f32_to_bf16(): round to nearest even, NaN kept quiet.
__device__ __forceinline__ uint16_t f2bf(float x) {
    uint32_t u = __float_as_uint(x);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
    return (uint32_t)f2bf(lo) | ((uint32_t)f2bf(hi) << 16);
}

// pack2 by the hardware's paired conversion (one instruction where pack2
// takes about eight): the same bits except a NaN's (0x7fff here, the
// payload kept quiet there).
__device__ __forceinline__ uint32_t pack2_rn(float lo, float hi) {
    uint32_t r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

// VEC elements at p (p 16-byte aligned when VEC == 8).
// VEC == 4: p 8-byte aligned.
template <int VEC>
__device__ __forceinline__ void ld_bf(const uint16_t *p, float *f) {
    if constexpr (VEC == 8) {
        uint4 v = *reinterpret_cast<const uint4 *>(p);
        uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int k = 0; k < 4; k++) {
            f[2 * k] = __uint_as_float(w[k] << 16);
            f[2 * k + 1] = __uint_as_float(w[k] & 0xffff0000u);
        }
    } else if constexpr (VEC == 4) {
        uint2 v = *reinterpret_cast<const uint2 *>(p);
        f[0] = __uint_as_float(v.x << 16);
        f[1] = __uint_as_float(v.x & 0xffff0000u);
        f[2] = __uint_as_float(v.y << 16);
        f[3] = __uint_as_float(v.y & 0xffff0000u);
    } else {
#pragma unroll
        for (int k = 0; k < VEC; k++) f[k] = bf2f(p[k]);
    }
}

template <int VEC>
__device__ __forceinline__ void st_bf(uint16_t *p, const float *f) {
    if constexpr (VEC == 8) {
        uint4 v;
        v.x = pack2(f[0], f[1]);
        v.y = pack2(f[2], f[3]);
        v.z = pack2(f[4], f[5]);
        v.w = pack2(f[6], f[7]);
        *reinterpret_cast<uint4 *>(p) = v;
    } else if constexpr (VEC == 4) {
        *reinterpret_cast<uint2 *>(p) = make_uint2(pack2(f[0], f[1]), pack2(f[2], f[3]));
    } else {
#pragma unroll
        for (int k = 0; k < VEC; k++) p[k] = f2bf(f[k]);
    }
}

// st_bf by the paired conversion (pack2_rn): VEC 8 or 4, p aligned to VEC
// elements.
template <int VEC>
__device__ __forceinline__ void st_bf_rn(uint16_t *p, const float *f) {
    static_assert(VEC == 8 || VEC == 4, "st_bf_rn: 8 or 4 elements");
    if constexpr (VEC == 8) {
        *reinterpret_cast<uint4 *>(p) = make_uint4(pack2_rn(f[0], f[1]), pack2_rn(f[2], f[3]),
                                                   pack2_rn(f[4], f[5]), pack2_rn(f[6], f[7]));
    } else {
        *reinterpret_cast<uint2 *>(p) = make_uint2(pack2_rn(f[0], f[1]), pack2_rn(f[2], f[3]));
    }
}

// Asynchronous copies global -> shared (sm_80+) of 8 or 16 bytes; `bytes`
// below the size fills the rest with zeros (0: no read, all zeros; src must
// still be a valid address). A thread that reads back only what it copied
// needs cp_async_wait, no barrier.
__device__ __forceinline__ uint32_t smem_addr(const void *p) {
    return (uint32_t)__cvta_generic_to_shared(p);
}
__device__ __forceinline__ void cp_async8_zfill(void *dst, const void *src, int bytes) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;\n" ::"r"(smem_addr(dst)), "l"(src),
                 "r"(bytes)
                 : "memory");
}
__device__ __forceinline__ void cp_async16_zfill(void *dst, const void *src, int bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)),
                 "l"(src), "r"(bytes)
                 : "memory");
}
// The same with the destination as a shared-memory address (smem_addr).
__device__ __forceinline__ void cp_async8_zfill(uint32_t dst, const void *src, int bytes) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;\n" ::"r"(dst), "l"(src), "r"(bytes)
                 : "memory");
}
__device__ __forceinline__ void cp_async16_zfill(uint32_t dst, const void *src, int bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
                 "r"(bytes)
                 : "memory");
}
__device__ __forceinline__ void cp_async_commit_group() {
    asm volatile("cp.async.commit_group;\n" ::: "memory");
}
// Wait until at most N of this thread's committed groups are pending.
template <int N>
__device__ __forceinline__ void cp_async_wait_group() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

template <int VEC>
__device__ __forceinline__ void ld_f(const float *p, float *f) {
    if constexpr (VEC == 8) {
        float4 a = reinterpret_cast<const float4 *>(p)[0];
        float4 b = reinterpret_cast<const float4 *>(p)[1];
        f[0] = a.x, f[1] = a.y, f[2] = a.z, f[3] = a.w;
        f[4] = b.x, f[5] = b.y, f[6] = b.z, f[7] = b.w;
    } else if constexpr (VEC == 4) {
        float4 a = *reinterpret_cast<const float4 *>(p);
        f[0] = a.x, f[1] = a.y, f[2] = a.z, f[3] = a.w;
    } else {
#pragma unroll
        for (int k = 0; k < VEC; k++) f[k] = p[k];
    }
}

template <int VEC>
__device__ __forceinline__ void st_f(float *p, const float *f) {
    if constexpr (VEC == 8) {
        reinterpret_cast<float4 *>(p)[0] = make_float4(f[0], f[1], f[2], f[3]);
        reinterpret_cast<float4 *>(p)[1] = make_float4(f[4], f[5], f[6], f[7]);
    } else if constexpr (VEC == 4) {
        *reinterpret_cast<float4 *>(p) = make_float4(f[0], f[1], f[2], f[3]);
    } else {
#pragma unroll
        for (int k = 0; k < VEC; k++) p[k] = f[k];
    }
}

// p[k] += f[k]
template <int VEC>
__device__ __forceinline__ void acc_f(float *p, const float *f) {
    float o[VEC];
    ld_f<VEC>(p, o);
#pragma unroll
    for (int k = 0; k < VEC; k++) o[k] += f[k];
    st_f<VEC>(p, o);
}

__device__ __forceinline__ float sigm(float x) { return 1.0f / (1.0f + expf(-x)); }

// 2^x, a denormal result flushed to zero: sigm_fast's 1 + 2^x is the same
// either way (1 + a denormal rounds to 1), and __expf's care for denormal
// results costs three instructions an element.
__device__ __forceinline__ float ex2_ftz(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

// sigmoid by the approximate 2^x and reciprocal: a few ulp of fp32 in five
// instructions, where sigm's expf and IEEE division take ~17; for kernels
// whose outputs are bf16 (or that are bound by the instructions they issue).
// The same bits as __fdividef(1, 1 + __expf(-u)).
__device__ __forceinline__ float sigm_fast(float u) {
    return __fdividef(1.0f, 1.0f + ex2_ftz(u * -1.44269504f));
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Sum over aligned groups of G lanes (G a power of two <= 32); every lane of
// the warp must call it.
__device__ __forceinline__ float group_sum(float v, int G) {
    for (int o = G >> 1; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Lanes per row for the row kernels: the smallest power of two >= the row's
// vectors, at most 32 (a 64-wide bf16 head row is 8 lanes: 4 rows per warp).
int lanes_per_row(int D, int vec) {
    int need = (D + vec - 1) / vec, G = 1;
    while (G < need && G < 32) G <<= 1;
    return G;
}

#define GRID_STRIDE(u, total)                                                     \
    for (int64_t u = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; u < (total); \
         u += (int64_t)gridDim.x * blockDim.x)

// Grid-stride walk over the units (r, j) of a (rows, per) grid, row-major,
// without a division in the loop: two at the start, then an add and a
// compare a step (the stride is less than `per` units past a whole number of
// rows, so one wrap suffices).
//   for (RowWalk w(per); w.r < rows; w.next()) { ... unit (w.r, w.j) ... }
struct RowWalk {
    int64_t r, dr;
    int j, dj, per;
    __device__ __forceinline__ explicit RowWalk(int per_) : per(per_) {
        int64_t u = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
        int64_t st = (int64_t)gridDim.x * blockDim.x;
        r = u / per;
        j = (int)(u - r * per);
        dr = st / per;
        dj = (int)(st - dr * per);
    }
    __device__ __forceinline__ void next() {
        j += dj;
        r += dr;
        if (j >= per) {
            j -= per;
            r++;
        }
    }
};

// Cursor over the groups (b, i) of a (B, per) grid along y (i fastest): a
// thread row (threadIdx.y) of a 2-D block takes every (gridDim.y blockDim.y)-th
// group; uniform over a warp when blockDim.x is 32 (short_conv.cu, gdn_qkv.cu).
struct ConvWalk {
    int64_t p, b, P, db;
    int i, di, per;
    __device__ __forceinline__ explicit ConvWalk(int per_) : per(per_) {
        p = (int64_t)blockIdx.y * blockDim.y + threadIdx.y;
        P = (int64_t)gridDim.y * blockDim.y;
        b = p / per;
        i = (int)(p - b * per);
        db = P / per;
        di = (int)(P - db * per);
    }
    __device__ __forceinline__ void next() {
        p += P;
        b += db;
        i += di;
        if (i >= per) {
            i -= per;
            b++;
        }
    }
};

// ---------------------------------------------------------------- deterministic column sums
// out_a[c] += sum_p partial[p, c] for c < split, out_b[c - split] += ... for
// c >= split (a NULL output is skipped). Block (32, kColsumRows): 32
// columns; the rows of threads take every kColsumRows-th partial, then row 0
// adds their sums in order. 32 rows, not 8: with 1024 partials (rmsnorm's)
// and ncols / 32 blocks (24 at d 768), a thread's chain of 128 loads took
// ~15 us; 32 loads a thread, several in flight (the unrolled loop), take a
// few.
constexpr int kColsumRows = 32;

__global__ void __launch_bounds__(32 * kColsumRows)
    colsum_kernel(int parts, int64_t ncols, const float *partial, int64_t split, float *out_a,
                  float *out_b) {
    __shared__ float sm[kColsumRows][33];
    int tx = threadIdx.x, ty = threadIdx.y;
    int64_t c = (int64_t)blockIdx.x * 32 + tx;
    float s = 0.0f;
    if (c < ncols)
#pragma unroll 8
        for (int p = ty; p < parts; p += kColsumRows) s += partial[(int64_t)p * ncols + c];
    sm[ty][tx] = s;
    __syncthreads();
    if (ty == 0 && c < ncols) {
        float t = 0.0f;
#pragma unroll
        for (int k = 0; k < kColsumRows; k++) t += sm[k][tx];
        if (c < split) {
            if (out_a) out_a[c] += t;
        } else if (out_b) {
            out_b[c - split] += t;
        }
    }
}

inline void launch_colsum(int parts, int64_t ncols, const float *partial, int64_t split, float *out_a,
                   float *out_b, cudaStream_t s) {
    dim3 block(32, kColsumRows), grid((unsigned)((ncols + 31) / 32));
    colsum_kernel<<<grid, block, 0, s>>>(parts, ncols, partial, split, out_a, out_b);
    LAUNCH_CHECK();
}

inline void check_scratch(const char *op, const void *scratch, size_t have, size_t need) {
    HY_REQUIRE(scratch != nullptr && have >= need,
               "%s: scratch of %zu bytes%s is too small: this call needs %zu bytes "
               "(see its *_scratch_bytes() function)",
               op, have, scratch ? "" : " (NULL)", need);
    HY_REQUIRE(aligned16(scratch), "%s: scratch must be 16-byte aligned", op);
}

}  // namespace

#endif
