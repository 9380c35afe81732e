// ops.cu: the basic ops of layers/ops.h on the GPU (see hy_cuda_ops.h for the
// contract of each entry point).
//
// Layout of the kernels:
//   * "units": a kernel walks a flat index space of units in a grid-stride
//     loop; a unit is VEC consecutive elements of a row (VEC = 8: one 16-byte
//     load of bf16, two of fp32; VEC = 1: the scalar fallback). The host picks
//     VEC = 8 only when the row length is a multiple of 8 and every pointer
//     is 16-byte aligned, so a vector never straddles two rows.
//   * row reductions (rmsnorm, l2norm): G lanes of a warp per row (G = 32
//     for long rows, fewer for short ones, e.g. 8 for a 64-wide bf16 head).
//   * parameter-gradient reductions (rmsnorm dw, short_conv dw/db): pass 1
//     writes one partial sum per block into scratch, pass 2 (colsum_kernel)
//     adds the partials in a fixed order: deterministic, no atomics.
#include <math.h>
#include <stdint.h>

#include <cmath>

#include "check.cuh"
#include "hy_cuda_ops.h"

namespace {

constexpr int kThreads = 256;      // threads per block of the unit kernels
constexpr int kMaxBlocks = 16384;  // grid cap; grid-stride loops do the rest
constexpr int kMaxConvK = 16;      // short_conv taps held in registers

#define LAUNCH_CHECK() CUDA_CHECK(cudaGetLastError())

inline cudaStream_t as_stream(void *s) { return (cudaStream_t)s; }

inline unsigned blocks_for(int64_t units, int threads = kThreads) {
    int64_t b = (units + threads - 1) / threads;
    if (b < 1) b = 1;
    if (b > kMaxBlocks) b = kMaxBlocks;
    return (unsigned)b;
}

inline bool aligned16(const void *p) { return p == nullptr || ((uintptr_t)p & 15u) == 0; }

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

// VEC elements at p (p 16-byte aligned when VEC == 8).
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
    } else {
#pragma unroll
        for (int k = 0; k < VEC; k++) p[k] = f2bf(f[k]);
    }
}

template <int VEC>
__device__ __forceinline__ void ld_f(const float *p, float *f) {
    if constexpr (VEC == 8) {
        float4 a = reinterpret_cast<const float4 *>(p)[0];
        float4 b = reinterpret_cast<const float4 *>(p)[1];
        f[0] = a.x, f[1] = a.y, f[2] = a.z, f[3] = a.w;
        f[4] = b.x, f[5] = b.y, f[6] = b.z, f[7] = b.w;
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

// ---------------------------------------------------------------- flat elementwise
// A functor's apply<V>(i) handles elements [i, i + V). The bulk runs in
// groups of VEC, the n % VEC tail in single elements.
template <class Op, int VEC>
__global__ void flat_kernel(Op op, int64_t n) {
    int64_t groups = n / VEC, tail = n - groups * VEC;
    GRID_STRIDE(u, groups + tail) {
        if (u < groups)
            op.template apply<VEC>(u * VEC);
        else
            op.template apply<1>(groups * VEC + (u - groups));
    }
}

template <class Op>
void launch_flat(const Op &op, size_t n, bool vec_ok, cudaStream_t s) {
    if (n == 0) return;
    int64_t nn = (int64_t)n;
    if (vec_ok) {
        flat_kernel<Op, 8><<<blocks_for(nn / 8 + 7), kThreads, 0, s>>>(op, nn);
    } else {
        flat_kernel<Op, 1><<<blocks_for(nn), kThreads, 0, s>>>(op, nn);
    }
    LAUNCH_CHECK();
}

struct AddFwdOp {
    const uint16_t *a, *b;
    uint16_t *y;
    template <int V>
    __device__ void apply(int64_t i) const {
        float fa[V], fb[V];
        ld_bf<V>(a + i, fa);
        ld_bf<V>(b + i, fb);
#pragma unroll
        for (int k = 0; k < V; k++) fa[k] += fb[k];
        st_bf<V>(y + i, fa);
    }
};

struct AddBwdOp {
    const float *dy;
    float *da, *db;  // either may be NULL
    template <int V>
    __device__ void apply(int64_t i) const {
        float g[V];
        ld_f<V>(dy + i, g);
        if (da) acc_f<V>(da + i, g);
        if (db) acc_f<V>(db + i, g);
    }
};

struct MulFwdOp {
    const uint16_t *a, *b;
    uint16_t *y;
    template <int V>
    __device__ void apply(int64_t i) const {
        float fa[V], fb[V];
        ld_bf<V>(a + i, fa);
        ld_bf<V>(b + i, fb);
#pragma unroll
        for (int k = 0; k < V; k++) fa[k] *= fb[k];
        st_bf<V>(y + i, fa);
    }
};

struct MulBwdOp {
    const float *dy;
    const uint16_t *a, *b;
    float *da, *db;  // either may be NULL
    template <int V>
    __device__ void apply(int64_t i) const {
        float g[V], o[V], t[V];
        ld_f<V>(dy + i, g);
        if (da) {
            ld_bf<V>(b + i, o);
#pragma unroll
            for (int k = 0; k < V; k++) t[k] = g[k] * o[k];
            acc_f<V>(da + i, t);
        }
        if (db) {
            ld_bf<V>(a + i, o);
#pragma unroll
            for (int k = 0; k < V; k++) t[k] = g[k] * o[k];
            acc_f<V>(db + i, t);
        }
    }
};

struct SiluFwdOp {
    const uint16_t *x;
    uint16_t *y;
    template <int V>
    __device__ void apply(int64_t i) const {
        float f[V];
        ld_bf<V>(x + i, f);
#pragma unroll
        for (int k = 0; k < V; k++) f[k] = f[k] * sigm(f[k]);
        st_bf<V>(y + i, f);
    }
};

struct SiluBwdOp {
    const float *dy;
    const uint16_t *x;
    float *dx;
    template <int V>
    __device__ void apply(int64_t i) const {
        float g[V], f[V];
        ld_f<V>(dy + i, g);
        ld_bf<V>(x + i, f);
#pragma unroll
        for (int k = 0; k < V; k++) {
            float s = sigm(f[k]);
            g[k] = g[k] * s * (1.0f + f[k] * (1.0f - s));
        }
        acc_f<V>(dx + i, g);
    }
};

struct SigmoidFwdOp {
    const uint16_t *x;
    uint16_t *y;
    template <int V>
    __device__ void apply(int64_t i) const {
        float f[V];
        ld_bf<V>(x + i, f);
#pragma unroll
        for (int k = 0; k < V; k++) f[k] = sigm(f[k]);
        st_bf<V>(y + i, f);
    }
};

struct SigmoidBwdOp {
    const float *dy;
    const uint16_t *x;
    float *dx;
    template <int V>
    __device__ void apply(int64_t i) const {
        float g[V], f[V];
        ld_f<V>(dy + i, g);
        ld_bf<V>(x + i, f);
#pragma unroll
        for (int k = 0; k < V; k++) {
            float s = sigm(f[k]);
            g[k] = g[k] * s * (1.0f - s);
        }
        acc_f<V>(dx + i, g);
    }
};

struct MeanBwdOp {
    const float *dy;  // (1)
    float *dx;
    float n;          // (float)n: the CPU op computes g / (float)n
    template <int V>
    __device__ void apply(int64_t i) const {
        float s = dy[0] / n, t[V];
#pragma unroll
        for (int k = 0; k < V; k++) t[k] = s;
        acc_f<V>(dx + i, t);
    }
};

// ---------------------------------------------------------------- deterministic column sums
// out_a[c] += sum_p partial[p, c] for c < split, out_b[c - split] += ... for
// c >= split (a NULL output is skipped). Block (32, 8): 32 columns; the 8 rows
// of threads take every 8th partial, then row 0 adds their 8 sums in order.
__global__ void colsum_kernel(int parts, int64_t ncols, const float *partial, int64_t split,
                              float *out_a, float *out_b) {
    __shared__ float sm[8][33];
    int tx = threadIdx.x, ty = threadIdx.y;
    int64_t c = (int64_t)blockIdx.x * 32 + tx;
    float s = 0.0f;
    if (c < ncols)
        for (int p = ty; p < parts; p += 8) s += partial[(int64_t)p * ncols + c];
    sm[ty][tx] = s;
    __syncthreads();
    if (ty == 0 && c < ncols) {
        float t = 0.0f;
#pragma unroll
        for (int k = 0; k < 8; k++) t += sm[k][tx];
        if (c < split) {
            if (out_a) out_a[c] += t;
        } else if (out_b) {
            out_b[c - split] += t;
        }
    }
}

void launch_colsum(int parts, int64_t ncols, const float *partial, int64_t split, float *out_a,
                   float *out_b, cudaStream_t s) {
    dim3 block(32, 8), grid((unsigned)((ncols + 31) / 32));
    colsum_kernel<<<grid, block, 0, s>>>(parts, ncols, partial, split, out_a, out_b);
    LAUNCH_CHECK();
}

void check_scratch(const char *op, const void *scratch, size_t have, size_t need) {
    HY_REQUIRE(scratch != nullptr && have >= need,
               "%s: scratch of %zu bytes%s is too small: this call needs %zu bytes "
               "(see its *_scratch_bytes() function)",
               op, have, scratch ? "" : " (NULL)", need);
    HY_REQUIRE(aligned16(scratch), "%s: scratch must be 16-byte aligned", op);
}

// ---------------------------------------------------------------- embedding
template <int VEC>
__global__ void embedding_fwd_kernel(int64_t rows, int D, int V, const float *w,
                                     const int32_t *ids, uint16_t *y) {
    int dv = D / VEC;
    GRID_STRIDE(u, rows * dv) {
        int64_t r = u / dv;
        int c = (int)(u - r * dv) * VEC;
        int32_t id = ids[r];
        float f[VEC];
        if (id >= 0 && id < V) {
            ld_f<VEC>(w + (int64_t)id * D + c, f);
        } else {
#pragma unroll
            for (int k = 0; k < VEC; k++) f[k] = __uint_as_float(0x7fc00000u);  // NaN
        }
        st_bf<VEC>(y + r * D + c, f);
    }
}

template <int VEC>
__global__ void embedding_bwd_kernel(int64_t rows, int D, int V, const float *dy,
                                     const int32_t *ids, int padding_idx, float *dw) {
    int dv = D / VEC;
    GRID_STRIDE(u, rows * dv) {
        int64_t r = u / dv;
        int c = (int)(u - r * dv) * VEC;
        int32_t id = ids[r];
        if (id == padding_idx || id < 0 || id >= V) continue;
        float g[VEC];
        ld_f<VEC>(dy + r * D + c, g);
        float *row = dw + (int64_t)id * D + c;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
        constexpr bool wide = VEC == 8;  // Hopper: 16-byte atomics (row 16-byte aligned here)
#else
        constexpr bool wide = false;
#endif
        if constexpr (wide) {
            atomicAdd(reinterpret_cast<float4 *>(row), make_float4(g[0], g[1], g[2], g[3]));
            atomicAdd(reinterpret_cast<float4 *>(row) + 1, make_float4(g[4], g[5], g[6], g[7]));
        } else {
#pragma unroll
            for (int k = 0; k < VEC; k++) atomicAdd(row + k, g[k]);
        }
    }
}

// ---------------------------------------------------------------- rmsnorm
// Each warp takes 32 / G rows at a time, G lanes per row; the loop bound is
// the same for the whole warp (the shuffles need every lane).
template <int VEC>
__global__ void rmsnorm_fwd_kernel(int64_t rows, int D, float eps, int G, const uint16_t *x,
                                   const float *w, uint16_t *y, float *rstd) {
    int lane = threadIdx.x & 31, sub = lane & (G - 1), rpw = 32 / G;
    int64_t warp = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    int64_t nwarps = ((int64_t)gridDim.x * blockDim.x) >> 5;
    for (int64_t base = warp * rpw; base < rows; base += nwarps * rpw) {
        int64_t r = base + lane / G;
        bool ok = r < rows;
        const uint16_t *xr = x + r * D;
        float ss = 0.0f, f[VEC], wf[VEC];
        if (ok)
            for (int c = sub * VEC; c < D; c += G * VEC) {
                ld_bf<VEC>(xr + c, f);
#pragma unroll
                for (int k = 0; k < VEC; k++) ss += f[k] * f[k];
            }
        ss = group_sum(ss, G);
        if (!ok) continue;
        float s = (float)(1.0 / sqrt((double)ss / D + (double)eps));
        if (rstd && sub == 0) rstd[r] = s;
        for (int c = sub * VEC; c < D; c += G * VEC) {
            ld_bf<VEC>(xr + c, f);
            ld_f<VEC>(w + c, wf);
#pragma unroll
            for (int k = 0; k < VEC; k++) f[k] = f[k] * s * wf[k];
            st_bf<VEC>(y + r * D + c, f);
        }
    }
}

constexpr int kNormWarps = 8;
constexpr int kNormMaxD = 12288;  // 48 KiB of shared memory for one warp's dw row

// Number of dw partials (= blocks of the backward), a function of rows only.
int rmsnorm_parts(int64_t rows) {
    int64_t p = (rows + kNormWarps - 1) / kNormWarps;
    if (p > 1024) p = 1024;
    if (p < 1) p = 1;
    return (int)p;
}

// Block b owns rows [b * per, (b + 1) * per); its warps take every warps-th
// row. Each warp sums g * xhat into its own shared row (lanes own columns),
// then the block adds the warp rows in order into partial[b, :].
template <int VEC>
__global__ void rmsnorm_bwd_kernel(int64_t rows, int D, int64_t per, const float *dy,
                                   const uint16_t *x, const float *w, const float *rstd,
                                   float *dx, float *partial) {
    extern __shared__ float sm[];  // (warps, D) when partial
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    float *mine = sm + (int64_t)warp * D;
    if (partial) {
        for (int c = lane * VEC; c < D; c += 32 * VEC)
#pragma unroll
            for (int k = 0; k < VEC; k++) mine[c + k] = 0.0f;
    }
    int64_t r0 = (int64_t)blockIdx.x * per, r1 = r0 + per < rows ? r0 + per : rows;
    float g[VEC], f[VEC], wf[VEC], o[VEC];
    for (int64_t r = r0 + warp; r < r1; r += warps) {
        const float *gr = dy + r * D;
        const uint16_t *xr = x + r * D;
        float s = rstd[r];
        float dot = 0.0f;  // sum g w x; mean(g w xhat) = dot * s / D
        for (int c = lane * VEC; c < D; c += 32 * VEC) {
            ld_f<VEC>(gr + c, g);
            ld_bf<VEC>(xr + c, f);
            ld_f<VEC>(w + c, wf);
#pragma unroll
            for (int k = 0; k < VEC; k++) dot += g[k] * wf[k] * f[k];
        }
        dot = warp_sum(dot);
        float m = (float)((double)dot * s / D);
        for (int c = lane * VEC; c < D; c += 32 * VEC) {
            ld_f<VEC>(gr + c, g);
            ld_bf<VEC>(xr + c, f);
            ld_f<VEC>(w + c, wf);
#pragma unroll
            for (int k = 0; k < VEC; k++) {
                float xhat = f[k] * s;
                o[k] = s * (g[k] * wf[k] - xhat * m);
                if (partial) mine[c + k] += g[k] * xhat;
            }
            if (dx) acc_f<VEC>(dx + r * D + c, o);
        }
    }
    if (partial) {
        __syncthreads();
        for (int c = threadIdx.x; c < D; c += blockDim.x) {
            float t = 0.0f;
            for (int k = 0; k < warps; k++) t += sm[(int64_t)k * D + c];
            partial[(int64_t)blockIdx.x * D + c] = t;
        }
    }
}

// ---------------------------------------------------------------- swiglu
template <int VEC>
__global__ void swiglu_fwd_kernel(int64_t rows, int H, const uint16_t *gv, uint16_t *y) {
    int hv = H / VEC;
    GRID_STRIDE(u, rows * hv) {
        int64_t r = u / hv;
        int c = (int)(u - r * hv) * VEC;
        const uint16_t *gp = gv + r * 2 * H + c;
        float g[VEC], v[VEC];
        ld_bf<VEC>(gp, g);
        ld_bf<VEC>(gp + H, v);
#pragma unroll
        for (int k = 0; k < VEC; k++) g[k] = g[k] * sigm(g[k]) * v[k];
        st_bf<VEC>(y + r * H + c, g);
    }
}

template <int VEC>
__global__ void swiglu_bwd_kernel(int64_t rows, int H, const float *dy, const uint16_t *gv,
                                  float *dgv) {
    int hv = H / VEC;
    GRID_STRIDE(u, rows * hv) {
        int64_t r = u / hv;
        int c = (int)(u - r * hv) * VEC;
        const uint16_t *gp = gv + r * 2 * H + c;
        float g[VEC], v[VEC], d[VEC], dg[VEC], dv[VEC];
        ld_bf<VEC>(gp, g);
        ld_bf<VEC>(gp + H, v);
        ld_f<VEC>(dy + r * H + c, d);
#pragma unroll
        for (int k = 0; k < VEC; k++) {
            float s = sigm(g[k]);
            dg[k] = d[k] * v[k] * s * (1.0f + g[k] * (1.0f - s));
            dv[k] = d[k] * g[k] * s;
        }
        float *dp = dgv + r * 2 * H + c;
        acc_f<VEC>(dp, dg);
        acc_f<VEC>(dp + H, dv);
    }
}

// ---------------------------------------------------------------- l2norm_heads
// As rmsnorm_fwd_kernel: G lanes per head vector, 32 / G vectors per warp.
template <int VEC>
__global__ void l2norm_fwd_kernel(int64_t vecs, int D, float eps, int G, const uint16_t *x,
                                  uint16_t *y, float *norm) {
    int lane = threadIdx.x & 31, sub = lane & (G - 1), vpw = 32 / G;
    int64_t warp = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    int64_t nwarps = ((int64_t)gridDim.x * blockDim.x) >> 5;
    for (int64_t base = warp * vpw; base < vecs; base += nwarps * vpw) {
        int64_t v = base + lane / G;
        bool ok = v < vecs;
        const uint16_t *xr = x + v * D;
        float ss = 0.0f, f[VEC];
        if (ok)
            for (int c = sub * VEC; c < D; c += G * VEC) {
                ld_bf<VEC>(xr + c, f);
#pragma unroll
                for (int k = 0; k < VEC; k++) ss += f[k] * f[k];
            }
        ss = group_sum(ss, G);
        if (!ok) continue;
        float nv = sqrtf(ss);
        if (norm && sub == 0) norm[v] = nv;
        float den = fmaxf(nv, eps);
        for (int c = sub * VEC; c < D; c += G * VEC) {
            ld_bf<VEC>(xr + c, f);
#pragma unroll
            for (int k = 0; k < VEC; k++) f[k] = f[k] / den;
            st_bf<VEC>(y + v * D + c, f);
        }
    }
}

template <int VEC>
__global__ void l2norm_bwd_kernel(int64_t vecs, int D, float eps, int G, const float *dy,
                                  const uint16_t *x, const float *norm, float *dx) {
    int lane = threadIdx.x & 31, sub = lane & (G - 1), vpw = 32 / G;
    int64_t warp = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    int64_t nwarps = ((int64_t)gridDim.x * blockDim.x) >> 5;
    for (int64_t base = warp * vpw; base < vecs; base += nwarps * vpw) {
        int64_t v = base + lane / G;
        bool ok = v < vecs;
        const uint16_t *xr = x + v * D;
        const float *gr = dy + v * D;
        float *dr = dx + v * D;
        float f[VEC], g[VEC], dot = 0.0f;
        if (ok)
            for (int c = sub * VEC; c < D; c += G * VEC) {
                ld_f<VEC>(gr + c, g);
                ld_bf<VEC>(xr + c, f);
#pragma unroll
                for (int k = 0; k < VEC; k++) dot += f[k] * g[k];
            }
        dot = group_sum(dot, G);
        if (!ok) continue;
        float nv = norm[v];
        // Below eps the clamp makes y = x / eps, a constant scale: dx += dy / eps.
        bool clamped = nv < eps;
        float kk = clamped ? 0.0f : (float)((double)dot / ((double)nv * nv * nv));
        for (int c = sub * VEC; c < D; c += G * VEC) {
            ld_f<VEC>(gr + c, g);
            ld_bf<VEC>(xr + c, f);
#pragma unroll
            for (int k = 0; k < VEC; k++) g[k] = clamped ? g[k] / eps : g[k] / nv - f[k] * kk;
            acc_f<VEC>(dr + c, g);
        }
    }
}

// ---------------------------------------------------------------- short_conv
// Each thread walks kConvTile consecutive time steps of VEC channels with the
// weights and a K-tap sliding window in registers, so every x (or dy) is
// loaded once per tile instead of K times. The window has KM >= K slots,
// right-aligned: slot jj in [KM - K, KM) holds tap j = jj - (KM - K), the
// newest in slot KM - 1, and every register index is a compile-time
// constant (slots below KM - K are never read). KM = 4 covers K <= 4 (the
// model's K); KM = kMaxConvK the rest, one channel per thread.
constexpr int kConvTile = 16;

// x at (b, s, c0 + k) for s in [-(K-1), T): the input, the bf16 cache or 0.
template <int VEC>
__device__ __forceinline__ void conv_tap(const uint16_t *x, const uint16_t *cache, int64_t b,
                                         int64_t s, int c0, int T, int C, int K, float *f) {
    if (s >= 0) {
        ld_bf<VEC>(x + (b * T + s) * C + c0, f);
    } else if (cache) {
#pragma unroll
        for (int k = 0; k < VEC; k++)
            f[k] = bf2f(cache[(b * C + c0 + k) * (K - 1) + (K - 1) + s]);
    } else {
#pragma unroll
        for (int k = 0; k < VEC; k++) f[k] = 0.0f;
    }
}

// wr[jj][k] = w[c0 + k, jj - (KM - K)] for the used slots.
template <int VEC, int KM>
__device__ __forceinline__ void conv_load_w(const float *w, int c0, int K, float (*wr)[VEC]) {
#pragma unroll
    for (int jj = 0; jj < KM; jj++)
#pragma unroll
        for (int k = 0; k < VEC; k++)
            wr[jj][k] = jj >= KM - K ? w[(int64_t)(c0 + k) * K + jj - (KM - K)] : 0.0f;
}

// Units: (b, tile, channel group), the channel group fastest (coalesced).
template <int VEC, int KM>
__global__ void conv_fwd_kernel(int B, int T, int C, int K, const uint16_t *x, const float *w,
                                const float *bias, const uint16_t *cache, uint16_t *y) {
    int cv = C / VEC, tiles = (T + kConvTile - 1) / kConvTile;
    GRID_STRIDE(u, (int64_t)B * tiles * cv) {
        int64_t bt = u / cv;
        int c0 = (int)(u - bt * cv) * VEC;
        int64_t b = bt / tiles;
        int t0 = (int)(bt - b * tiles) * kConvTile, t1 = t0 + kConvTile < T ? t0 + kConvTile : T;
        float wr[KM][VEC], xs[KM][VEC], bs[VEC], acc[VEC];
        conv_load_w<VEC, KM>(w, c0, K, wr);
#pragma unroll
        for (int k = 0; k < VEC; k++) bs[k] = bias ? bias[c0 + k] : 0.0f;
        // The K - 1 taps before t0.
#pragma unroll
        for (int jj = 0; jj < KM - 1; jj++)
            if (jj >= KM - K) conv_tap<VEC>(x, cache, b, t0 - (KM - 1) + jj, c0, T, C, K, xs[jj]);
        for (int t = t0; t < t1; t++) {
            ld_bf<VEC>(x + (b * T + t) * C + c0, xs[KM - 1]);
#pragma unroll
            for (int k = 0; k < VEC; k++) acc[k] = bs[k];
#pragma unroll
            for (int jj = 0; jj < KM; jj++)  // taps j = 0 .. K-1 in order, as the CPU
                if (jj >= KM - K)
#pragma unroll
                    for (int k = 0; k < VEC; k++) acc[k] += wr[jj][k] * xs[jj][k];
            st_bf<VEC>(y + (b * T + t) * C + c0, acc);
#pragma unroll
            for (int jj = 0; jj < KM - 1; jj++)
#pragma unroll
                for (int k = 0; k < VEC; k++) xs[jj][k] = xs[jj + 1][k];
        }
    }
}

// dx[b,s,c] += sum_j dy[b, s+(K-1)-j, c] w[c,j]: the window holds dy[s .. s+K-1]
// (zero past T, where the CPU skips the tap), dy[s + K-1-j] in slot KM-1-j.
template <int VEC, int KM>
__global__ void conv_bwd_x_kernel(int B, int T, int C, int K, const float *dy, const float *w,
                                  float *dx) {
    int cv = C / VEC, tiles = (T + kConvTile - 1) / kConvTile;
    GRID_STRIDE(u, (int64_t)B * tiles * cv) {
        int64_t bt = u / cv;
        int c0 = (int)(u - bt * cv) * VEC;
        int64_t b = bt / tiles;
        int t0 = (int)(bt - b * tiles) * kConvTile, t1 = t0 + kConvTile < T ? t0 + kConvTile : T;
        float wr[KM][VEC], gs[KM][VEC], acc[VEC];
        // wr[j] = w[., j] here (tap order), used for j < K.
#pragma unroll
        for (int j = 0; j < KM; j++)
#pragma unroll
            for (int k = 0; k < VEC; k++)
                wr[j][k] = j < K ? w[(int64_t)(c0 + k) * K + j] : 0.0f;
        // dy[t0 .. t0+K-2] into slots KM-K .. KM-2.
#pragma unroll
        for (int jj = 0; jj < KM - 1; jj++) {
            if (jj < KM - K) continue;
            int tt = t0 + jj - (KM - K);
            if (tt < T) {
                ld_f<VEC>(dy + (b * T + tt) * C + c0, gs[jj]);
            } else {
#pragma unroll
                for (int k = 0; k < VEC; k++) gs[jj][k] = 0.0f;
            }
        }
        for (int t = t0; t < t1; t++) {
            int tt = t + K - 1;
            if (tt < T) {
                ld_f<VEC>(dy + (b * T + tt) * C + c0, gs[KM - 1]);
            } else {
#pragma unroll
                for (int k = 0; k < VEC; k++) gs[KM - 1][k] = 0.0f;
            }
#pragma unroll
            for (int k = 0; k < VEC; k++) acc[k] = 0.0f;
#pragma unroll
            for (int j = 0; j < KM; j++)
                if (j < K)
#pragma unroll
                    for (int k = 0; k < VEC; k++) acc[k] += gs[KM - 1 - j][k] * wr[j][k];
            acc_f<VEC>(dx + (b * T + t) * C + c0, acc);
#pragma unroll
            for (int jj = 0; jj < KM - 1; jj++)
#pragma unroll
                for (int k = 0; k < VEC; k++) gs[jj][k] = gs[jj + 1][k];
        }
    }
}

// Number of position chunks (= dw/db partials), a function of B * T only.
int conv_parts(int64_t BT) {
    int64_t p = (BT + 255) / 256;
    if (p > 512) p = 512;
    if (p < 1) p = 1;
    return (int)p;
}

// Block (32, 8), grid (ceil(C / 32), parts): channel c = blockIdx.x * 32 + tx;
// chunk blockIdx.y covers positions [p0, p0 + per) of the flattened (b, t),
// thread row ty a contiguous eighth of it, with the x taps in a sliding
// window (refilled at its start and where a new sequence begins).
// partial (parts, C*K + C): [dw (C, K) | db (C)].
template <int KM>
__global__ void conv_bwd_wb_kernel(int B, int T, int C, int K, int64_t per, const float *dy,
                                   const uint16_t *x, const uint16_t *cache, float *partial) {
    __shared__ float sm[8][KM + 1][32];
    int tx = threadIdx.x, ty = threadIdx.y;
    int c = blockIdx.x * 32 + tx;
    float acc[KM + 1], xs[KM];
#pragma unroll
    for (int j = 0; j <= KM; j++) acc[j] = 0.0f;
    int64_t BT = (int64_t)B * T;
    int64_t sub = (per + 7) / 8;
    int64_t q0 = (int64_t)blockIdx.y * per + ty * sub;
    int64_t q1 = q0 + sub, end = (int64_t)blockIdx.y * per + per;
    if (q1 > end) q1 = end;
    if (q1 > BT) q1 = BT;
    if (c < C) {
        for (int64_t p = q0; p < q1; p++) {
            int64_t b = p / T, t = p - b * T;
            if (p == q0 || t == 0) {
#pragma unroll
                for (int jj = 0; jj < KM - 1; jj++)
                    if (jj >= KM - K)
                        conv_tap<1>(x, cache, b, t - (KM - 1) + jj, c, T, C, K, &xs[jj]);
            }
            xs[KM - 1] = bf2f(x[p * C + c]);
            float g = dy[p * C + c];
            acc[KM] += g;
#pragma unroll
            for (int jj = 0; jj < KM; jj++)
                if (jj >= KM - K) acc[jj] += g * xs[jj];
#pragma unroll
            for (int jj = 0; jj < KM - 1; jj++) xs[jj] = xs[jj + 1];
        }
    }
#pragma unroll
    for (int j = 0; j <= KM; j++) sm[ty][j][tx] = acc[j];
    __syncthreads();
    if (ty == 0 && c < C) {
        int64_t ncols = (int64_t)C * K + C;
        float *out = partial + (int64_t)blockIdx.y * ncols;
        for (int j = 0; j < K; j++) {
            float t = 0.0f;
#pragma unroll
            for (int r = 0; r < 8; r++) t += sm[r][KM - K + j][tx];
            out[(int64_t)c * K + j] = t;
        }
        float t = 0.0f;
#pragma unroll
        for (int r = 0; r < 8; r++) t += sm[r][KM][tx];
        out[(int64_t)C * K + c] = t;
    }
}

// ---------------------------------------------------------------- rope
constexpr int kRopeMaxHalf = 256;
struct RopeFreq {
    float f[kRopeMaxHalf];  // inv_freq_i, i < D/2 (a kernel parameter, 1 KiB)
};

// fwd (sign +1): y = R(theta) x into y (bf16). bwd (sign -1): dx += R(-theta) dy.
template <int VEC>
__global__ void rope_fwd_kernel(int64_t units, int T, int H, int D, int64_t pos0, RopeFreq fr,
                                const uint16_t *x, uint16_t *y) {
    int half = D / 2, gpv = half / VEC;
    GRID_STRIDE(u, units) {
        int64_t vec = u / gpv;
        int i0 = (int)(u - vec * gpv) * VEC;
        int64_t t = (vec / H) % T;
        const uint16_t *x1 = x + vec * D + i0;
        uint16_t *y1 = y + vec * D + i0;
        float a[VEC], b[VEC], o1[VEC], o2[VEC];
        ld_bf<VEC>(x1, a);
        ld_bf<VEC>(x1 + half, b);
        double pos = (double)(pos0 + t);
#pragma unroll
        for (int k = 0; k < VEC; k++) {
            double sd, cd;
            sincos(pos * (double)fr.f[i0 + k], &sd, &cd);
            float co = (float)cd, si = (float)sd;
            o1[k] = a[k] * co - b[k] * si;
            o2[k] = b[k] * co + a[k] * si;
        }
        st_bf<VEC>(y1, o1);
        st_bf<VEC>(y1 + half, o2);
    }
}

template <int VEC>
__global__ void rope_bwd_kernel(int64_t units, int T, int H, int D, int64_t pos0, RopeFreq fr,
                                const float *dy, float *dx) {
    int half = D / 2, gpv = half / VEC;
    GRID_STRIDE(u, units) {
        int64_t vec = u / gpv;
        int i0 = (int)(u - vec * gpv) * VEC;
        int64_t t = (vec / H) % T;
        const float *g1 = dy + vec * D + i0;
        float *d1 = dx + vec * D + i0;
        float a[VEC], b[VEC], o1[VEC], o2[VEC];
        ld_f<VEC>(g1, a);
        ld_f<VEC>(g1 + half, b);
        double pos = (double)(pos0 + t);
#pragma unroll
        for (int k = 0; k < VEC; k++) {
            double sd, cd;
            sincos(pos * (double)fr.f[i0 + k], &sd, &cd);
            float co = (float)cd, si = (float)sd;
            o1[k] = a[k] * co + b[k] * si;
            o2[k] = b[k] * co - a[k] * si;
        }
        acc_f<VEC>(d1, o1);
        acc_f<VEC>(d1 + half, o2);
    }
}

// ---------------------------------------------------------------- slice_last
template <int VEC>
__global__ void slice_fwd_kernel(int64_t rows, int N, int start, int len, const uint16_t *x,
                                 uint16_t *y) {
    int lv = len / VEC;
    GRID_STRIDE(u, rows * lv) {
        int64_t r = u / lv;
        int j = (int)(u - r * lv) * VEC;
        float f[VEC];
        ld_bf<VEC>(x + r * N + start + j, f);
        st_bf<VEC>(y + r * len + j, f);
    }
}

template <int VEC>
__global__ void slice_bwd_kernel(int64_t rows, int N, int start, int len, const float *dy,
                                 float *dx) {
    int lv = len / VEC;
    GRID_STRIDE(u, rows * lv) {
        int64_t r = u / lv;
        int j = (int)(u - r * lv) * VEC;
        float g[VEC];
        ld_f<VEC>(dy + r * len + j, g);
        acc_f<VEC>(dx + r * N + start + j, g);
    }
}

// ---------------------------------------------------------------- mean
constexpr int kMeanThreads = 1024;

// One block: each thread sums a fixed strided subset in double, then a tree
// in shared memory. Same order every run.
__global__ void mean_fwd_kernel(int64_t n, const float *x, float *y, bool vec) {
    __shared__ double sm[kMeanThreads];
    double s = 0.0;
    int64_t i0 = 0;
    if (vec) {  // x 16-byte aligned: float4 loads over the first n / 4 * 4 elements
        const float4 *x4 = reinterpret_cast<const float4 *>(x);
        for (int64_t i = threadIdx.x; i < n / 4; i += blockDim.x) {
            float4 v = x4[i];
            s += (double)v.x;
            s += (double)v.y;
            s += (double)v.z;
            s += (double)v.w;
        }
        i0 = n / 4 * 4;
    }
    for (int64_t i = i0 + threadIdx.x; i < n; i += blockDim.x) s += (double)x[i];
    sm[threadIdx.x] = s;
    __syncthreads();
    for (int o = blockDim.x / 2; o > 0; o >>= 1) {
        if ((int)threadIdx.x < o) sm[threadIdx.x] += sm[threadIdx.x + o];
        __syncthreads();
    }
    if (threadIdx.x == 0) y[0] = (float)(sm[0] / (double)n);
}

}  // namespace

// ================================================================ entry points
// ---------------------------------------------------------------- embedding
extern "C" void hy_cuda_embedding_fwd(int rows, int D, int V, const float *weight,
                                      const int32_t *ids, void *y, void *stream) {
    HY_REQUIRE(rows >= 0 && D > 0 && V > 0,
               "cuda embedding_fwd: bad sizes rows %d, D %d, V %d", rows, D, V);
    if (rows == 0) return;
    cudaStream_t s = as_stream(stream);
    uint16_t *yo = (uint16_t *)y;
    if (D % 8 == 0 && aligned16(weight) && aligned16(y)) {
        embedding_fwd_kernel<8><<<blocks_for((int64_t)rows * D / 8), kThreads, 0, s>>>(
            rows, D, V, weight, ids, yo);
    } else {
        embedding_fwd_kernel<1><<<blocks_for((int64_t)rows * D), kThreads, 0, s>>>(
            rows, D, V, weight, ids, yo);
    }
    LAUNCH_CHECK();
}

extern "C" void hy_cuda_embedding_bwd(int rows, int D, int V, const float *dy,
                                      const int32_t *ids, int padding_idx, float *dweight,
                                      void *stream) {
    HY_REQUIRE(rows >= 0 && D > 0 && V > 0,
               "cuda embedding_bwd: bad sizes rows %d, D %d, V %d", rows, D, V);
    if (rows == 0 || dweight == nullptr) return;
    cudaStream_t s = as_stream(stream);
    if (D % 8 == 0 && aligned16(dy) && aligned16(dweight)) {
        embedding_bwd_kernel<8><<<blocks_for((int64_t)rows * D / 8), kThreads, 0, s>>>(
            rows, D, V, dy, ids, padding_idx, dweight);
    } else {
        embedding_bwd_kernel<1><<<blocks_for((int64_t)rows * D), kThreads, 0, s>>>(
            rows, D, V, dy, ids, padding_idx, dweight);
    }
    LAUNCH_CHECK();
}

// ---------------------------------------------------------------- rmsnorm
extern "C" void hy_cuda_rmsnorm_fwd(int rows, int D, float eps, const void *x, const float *w,
                                    void *y, float *rstd, void *stream) {
    HY_REQUIRE(rows >= 0 && D > 0, "cuda rmsnorm_fwd: bad sizes rows %d, D %d", rows, D);
    if (rows == 0) return;
    cudaStream_t s = as_stream(stream);
    const uint16_t *xi = (const uint16_t *)x;
    uint16_t *yo = (uint16_t *)y;
    if (D % 8 == 0 && aligned16(x) && aligned16(w) && aligned16(y)) {
        int G = lanes_per_row(D, 8);
        rmsnorm_fwd_kernel<8><<<blocks_for(rows, kThreads / G), kThreads, 0, s>>>(
            rows, D, eps, G, xi, w, yo, rstd);
    } else {
        int G = lanes_per_row(D, 1);
        rmsnorm_fwd_kernel<1><<<blocks_for(rows, kThreads / G), kThreads, 0, s>>>(
            rows, D, eps, G, xi, w, yo, rstd);
    }
    LAUNCH_CHECK();
}

extern "C" size_t hy_cuda_rmsnorm_bwd_scratch_bytes(int rows, int D) {
    if (rows <= 0 || D <= 0) return 0;
    return (size_t)rmsnorm_parts(rows) * (size_t)D * sizeof(float);
}

extern "C" void hy_cuda_rmsnorm_bwd(int rows, int D, const float *dy, const void *x,
                                    const float *w, const float *rstd, float *dx, float *dw,
                                    void *scratch, size_t scratch_bytes, void *stream) {
    HY_REQUIRE(rows >= 0 && D > 0, "cuda rmsnorm_bwd: bad sizes rows %d, D %d", rows, D);
    HY_REQUIRE(D <= kNormMaxD, "cuda rmsnorm_bwd: D = %d is above the supported %d", D,
               kNormMaxD);
    if (rows == 0 || (!dx && !dw)) return;
    cudaStream_t s = as_stream(stream);
    int parts = rmsnorm_parts(rows);
    int64_t per = ((int64_t)rows + parts - 1) / parts;
    float *partial = nullptr;
    int warps = kNormWarps;
    size_t smem = 0;
    if (dw) {
        check_scratch("cuda rmsnorm_bwd", scratch, scratch_bytes,
                      hy_cuda_rmsnorm_bwd_scratch_bytes(rows, D));
        partial = (float *)scratch;
        while (warps > 1 && (size_t)warps * D * sizeof(float) > 48 * 1024) warps--;
        smem = (size_t)warps * D * sizeof(float);
    }
    const uint16_t *xi = (const uint16_t *)x;
    bool vec = D % 8 == 0 && aligned16(dy) && aligned16(x) && aligned16(w) && aligned16(dx);
    if (vec)
        rmsnorm_bwd_kernel<8><<<parts, warps * 32, smem, s>>>(rows, D, per, dy, xi, w, rstd, dx,
                                                              partial);
    else
        rmsnorm_bwd_kernel<1><<<parts, warps * 32, smem, s>>>(rows, D, per, dy, xi, w, rstd, dx,
                                                              partial);
    LAUNCH_CHECK();
    if (dw) launch_colsum(parts, D, partial, D, dw, nullptr, s);
}

// ---------------------------------------------------------------- swiglu
extern "C" void hy_cuda_swiglu_fwd(int rows, int H, const void *gv, void *y, void *stream) {
    HY_REQUIRE(rows >= 0 && H > 0, "cuda swiglu_fwd: bad sizes rows %d, H %d", rows, H);
    if (rows == 0) return;
    cudaStream_t s = as_stream(stream);
    const uint16_t *g = (const uint16_t *)gv;
    uint16_t *yo = (uint16_t *)y;
    if (H % 8 == 0 && aligned16(gv) && aligned16(y))
        swiglu_fwd_kernel<8><<<blocks_for((int64_t)rows * H / 8), kThreads, 0, s>>>(rows, H, g,
                                                                                   yo);
    else
        swiglu_fwd_kernel<1><<<blocks_for((int64_t)rows * H), kThreads, 0, s>>>(rows, H, g, yo);
    LAUNCH_CHECK();
}

extern "C" void hy_cuda_swiglu_bwd(int rows, int H, const float *dy, const void *gv,
                                   float *dgv, void *stream) {
    HY_REQUIRE(rows >= 0 && H > 0, "cuda swiglu_bwd: bad sizes rows %d, H %d", rows, H);
    if (rows == 0 || !dgv) return;
    cudaStream_t s = as_stream(stream);
    const uint16_t *g = (const uint16_t *)gv;
    if (H % 8 == 0 && aligned16(dy) && aligned16(gv) && aligned16(dgv))
        swiglu_bwd_kernel<8><<<blocks_for((int64_t)rows * H / 8), kThreads, 0, s>>>(rows, H, dy,
                                                                                   g, dgv);
    else
        swiglu_bwd_kernel<1><<<blocks_for((int64_t)rows * H), kThreads, 0, s>>>(rows, H, dy, g,
                                                                               dgv);
    LAUNCH_CHECK();
}

// ---------------------------------------------------------------- elementwise
extern "C" void hy_cuda_add_fwd(size_t n, const void *a, const void *b, void *y, void *stream) {
    launch_flat(AddFwdOp{(const uint16_t *)a, (const uint16_t *)b, (uint16_t *)y}, n,
                aligned16(a) && aligned16(b) && aligned16(y), as_stream(stream));
}

extern "C" void hy_cuda_add_bwd(size_t n, const float *dy, float *da, float *db, void *stream) {
    if (!da && !db) return;
    launch_flat(AddBwdOp{dy, da, db}, n, aligned16(dy) && aligned16(da) && aligned16(db),
                as_stream(stream));
}

extern "C" void hy_cuda_mul_fwd(size_t n, const void *a, const void *b, void *y, void *stream) {
    launch_flat(MulFwdOp{(const uint16_t *)a, (const uint16_t *)b, (uint16_t *)y}, n,
                aligned16(a) && aligned16(b) && aligned16(y), as_stream(stream));
}

extern "C" void hy_cuda_mul_bwd(size_t n, const float *dy, const void *a, const void *b,
                                float *da, float *db, void *stream) {
    if (!da && !db) return;
    launch_flat(MulBwdOp{dy, (const uint16_t *)a, (const uint16_t *)b, da, db}, n,
                aligned16(dy) && aligned16(a) && aligned16(b) && aligned16(da) &&
                    aligned16(db),
                as_stream(stream));
}

extern "C" void hy_cuda_silu_fwd(size_t n, const void *x, void *y, void *stream) {
    launch_flat(SiluFwdOp{(const uint16_t *)x, (uint16_t *)y}, n, aligned16(x) && aligned16(y),
                as_stream(stream));
}

extern "C" void hy_cuda_silu_bwd(size_t n, const float *dy, const void *x, float *dx,
                                 void *stream) {
    if (!dx) return;
    launch_flat(SiluBwdOp{dy, (const uint16_t *)x, dx}, n,
                aligned16(dy) && aligned16(x) && aligned16(dx), as_stream(stream));
}

extern "C" void hy_cuda_sigmoid_fwd(size_t n, const void *x, void *y, void *stream) {
    launch_flat(SigmoidFwdOp{(const uint16_t *)x, (uint16_t *)y}, n,
                aligned16(x) && aligned16(y), as_stream(stream));
}

extern "C" void hy_cuda_sigmoid_bwd(size_t n, const float *dy, const void *x, float *dx,
                                    void *stream) {
    if (!dx) return;
    launch_flat(SigmoidBwdOp{dy, (const uint16_t *)x, dx}, n,
                aligned16(dy) && aligned16(x) && aligned16(dx), as_stream(stream));
}

// ---------------------------------------------------------------- l2norm_heads
extern "C" void hy_cuda_l2norm_heads_fwd(int vecs, int head_dim, float eps, const void *x,
                                         void *y, float *norm, void *stream) {
    HY_REQUIRE(vecs >= 0 && head_dim > 0 && eps >= 0,
               "cuda l2norm_heads_fwd: bad arguments vecs %d, head_dim %d, eps %g", vecs,
               head_dim, (double)eps);
    if (vecs == 0) return;
    cudaStream_t s = as_stream(stream);
    const uint16_t *xi = (const uint16_t *)x;
    uint16_t *yo = (uint16_t *)y;
    if (head_dim % 8 == 0 && aligned16(x) && aligned16(y)) {
        int G = lanes_per_row(head_dim, 8);
        l2norm_fwd_kernel<8><<<blocks_for(vecs, kThreads / G), kThreads, 0, s>>>(
            vecs, head_dim, eps, G, xi, yo, norm);
    } else {
        int G = lanes_per_row(head_dim, 1);
        l2norm_fwd_kernel<1><<<blocks_for(vecs, kThreads / G), kThreads, 0, s>>>(
            vecs, head_dim, eps, G, xi, yo, norm);
    }
    LAUNCH_CHECK();
}

extern "C" void hy_cuda_l2norm_heads_bwd(int vecs, int head_dim, float eps, const float *dy,
                                         const void *x, const float *norm, float *dx,
                                         void *stream) {
    HY_REQUIRE(vecs >= 0 && head_dim > 0 && eps >= 0,
               "cuda l2norm_heads_bwd: bad arguments vecs %d, head_dim %d, eps %g", vecs,
               head_dim, (double)eps);
    if (vecs == 0 || !dx) return;
    cudaStream_t s = as_stream(stream);
    const uint16_t *xi = (const uint16_t *)x;
    if (head_dim % 8 == 0 && aligned16(dy) && aligned16(x) && aligned16(dx)) {
        int G = lanes_per_row(head_dim, 8);
        l2norm_bwd_kernel<8><<<blocks_for(vecs, kThreads / G), kThreads, 0, s>>>(
            vecs, head_dim, eps, G, dy, xi, norm, dx);
    } else {
        int G = lanes_per_row(head_dim, 1);
        l2norm_bwd_kernel<1><<<blocks_for(vecs, kThreads / G), kThreads, 0, s>>>(
            vecs, head_dim, eps, G, dy, xi, norm, dx);
    }
    LAUNCH_CHECK();
}

// ---------------------------------------------------------------- short_conv
static void conv_check(const char *op, int B, int T, int C, int K) {
    HY_REQUIRE(B >= 0 && T >= 0 && C > 0 && K >= 1 && K <= kMaxConvK,
               "%s: bad sizes B %d, T %d, C %d, K %d (K must be in [1, %d])", op, B, T, C, K,
               kMaxConvK);
}

extern "C" void hy_cuda_short_conv_fwd(int B, int T, int C, int K, const void *x,
                                       const float *w, const float *bias, const void *cache,
                                       void *y, void *stream) {
    conv_check("cuda short_conv_fwd", B, T, C, K);
    int64_t BT = (int64_t)B * T;
    if (BT == 0) return;
    cudaStream_t s = as_stream(stream);
    const uint16_t *xi = (const uint16_t *)x, *ci = K > 1 ? (const uint16_t *)cache : nullptr;
    uint16_t *yo = (uint16_t *)y;
    int64_t tiles = (T + kConvTile - 1) / kConvTile, bt = (int64_t)B * tiles;
    if (K > 4)
        conv_fwd_kernel<1, kMaxConvK><<<blocks_for(bt * C), kThreads, 0, s>>>(B, T, C, K, xi, w,
                                                                              bias, ci, yo);
    else if (C % 8 == 0 && aligned16(x) && aligned16(y))
        conv_fwd_kernel<8, 4><<<blocks_for(bt * C / 8), kThreads, 0, s>>>(B, T, C, K, xi, w, bias,
                                                                         ci, yo);
    else
        conv_fwd_kernel<1, 4><<<blocks_for(bt * C), kThreads, 0, s>>>(B, T, C, K, xi, w, bias,
                                                                     ci, yo);
    LAUNCH_CHECK();
}

extern "C" size_t hy_cuda_short_conv_bwd_scratch_bytes(int B, int T, int C, int K) {
    int64_t BT = (int64_t)B * T;
    if (BT <= 0 || C <= 0 || K <= 0) return 0;
    return (size_t)conv_parts(BT) * (size_t)((int64_t)C * K + C) * sizeof(float);
}

extern "C" void hy_cuda_short_conv_bwd(int B, int T, int C, int K, const float *dy,
                                       const void *x, const float *w, const void *cache,
                                       float *dx, float *dw, float *db, void *scratch,
                                       size_t scratch_bytes, void *stream) {
    conv_check("cuda short_conv_bwd", B, T, C, K);
    int64_t BT = (int64_t)B * T;
    if (BT == 0) return;
    cudaStream_t s = as_stream(stream);
    if (dx) {
        int64_t tiles = (T + kConvTile - 1) / kConvTile, bt = (int64_t)B * tiles;
        if (K > 4)
            conv_bwd_x_kernel<1, kMaxConvK><<<blocks_for(bt * C), kThreads, 0, s>>>(B, T, C, K,
                                                                                    dy, w, dx);
        else if (C % 8 == 0 && aligned16(dy) && aligned16(dx))
            conv_bwd_x_kernel<8, 4><<<blocks_for(bt * C / 8), kThreads, 0, s>>>(B, T, C, K, dy,
                                                                               w, dx);
        else
            conv_bwd_x_kernel<1, 4><<<blocks_for(bt * C), kThreads, 0, s>>>(B, T, C, K, dy, w,
                                                                           dx);
        LAUNCH_CHECK();
    }
    if (!dw && !db) return;
    check_scratch("cuda short_conv_bwd", scratch, scratch_bytes,
                  hy_cuda_short_conv_bwd_scratch_bytes(B, T, C, K));
    int parts = conv_parts(BT);
    int64_t per = (BT + parts - 1) / parts;
    float *partial = (float *)scratch;
    const uint16_t *ci = K > 1 ? (const uint16_t *)cache : nullptr;
    dim3 block(32, 8), grid((unsigned)((C + 31) / 32), (unsigned)parts);
    const uint16_t *xi = (const uint16_t *)x;
    if (K > 4)
        conv_bwd_wb_kernel<kMaxConvK><<<grid, block, 0, s>>>(B, T, C, K, per, dy, xi, ci, partial);
    else
        conv_bwd_wb_kernel<4><<<grid, block, 0, s>>>(B, T, C, K, per, dy, xi, ci, partial);
    LAUNCH_CHECK();
    launch_colsum(parts, (int64_t)C * K + C, partial, (int64_t)C * K, dw, db, s);
}

// ---------------------------------------------------------------- rope
// inv_freq exactly as layers/rope.c computes it (fp32, the host's powf).
static RopeFreq rope_freq(const char *op, int D, float base) {
    HY_REQUIRE(D > 0 && D % 2 == 0 && D / 2 <= kRopeMaxHalf,
               "%s: head dim D = %d must be even and at most %d", op, D, 2 * kRopeMaxHalf);
    HY_REQUIRE(base > 0 && std::isfinite(base), "%s: base must be a positive number, not %g", op,
               (double)base);
    RopeFreq fr;
    for (int i = 0; i < kRopeMaxHalf; i++)
        fr.f[i] = i < D / 2 ? 1.0f / powf(base, (float)(2 * i) / (float)D) : 0.0f;
    return fr;
}

extern "C" void hy_cuda_rope_fwd(int B, int T, int H, int D, int64_t pos0, float base,
                                 const void *x, void *y, void *stream) {
    HY_REQUIRE(B >= 0 && T >= 0 && H >= 0 && pos0 >= 0,
               "cuda rope_fwd: bad arguments B %d, T %d, H %d, pos0 %lld", B, T, H,
               (long long)pos0);
    RopeFreq fr = rope_freq("cuda rope_fwd", D, base);
    int64_t vecs = (int64_t)B * T * H, half = D / 2;
    if (vecs == 0) return;
    cudaStream_t s = as_stream(stream);
    const uint16_t *xi = (const uint16_t *)x;
    uint16_t *yo = (uint16_t *)y;
    if (half % 8 == 0 && aligned16(x) && aligned16(y))
        rope_fwd_kernel<8><<<blocks_for(vecs * half / 8), kThreads, 0, s>>>(
            vecs * half / 8, T, H, D, pos0, fr, xi, yo);
    else
        rope_fwd_kernel<1><<<blocks_for(vecs * half), kThreads, 0, s>>>(vecs * half, T, H, D,
                                                                         pos0, fr, xi, yo);
    LAUNCH_CHECK();
}

extern "C" void hy_cuda_rope_bwd(int B, int T, int H, int D, int64_t pos0, float base,
                                 const float *dy, float *dx, void *stream) {
    HY_REQUIRE(B >= 0 && T >= 0 && H >= 0 && pos0 >= 0,
               "cuda rope_bwd: bad arguments B %d, T %d, H %d, pos0 %lld", B, T, H,
               (long long)pos0);
    RopeFreq fr = rope_freq("cuda rope_bwd", D, base);
    int64_t vecs = (int64_t)B * T * H, half = D / 2;
    if (vecs == 0 || !dx) return;
    cudaStream_t s = as_stream(stream);
    if (half % 8 == 0 && aligned16(dy) && aligned16(dx))
        rope_bwd_kernel<8><<<blocks_for(vecs * half / 8), kThreads, 0, s>>>(
            vecs * half / 8, T, H, D, pos0, fr, dy, dx);
    else
        rope_bwd_kernel<1><<<blocks_for(vecs * half), kThreads, 0, s>>>(vecs * half, T, H, D,
                                                                         pos0, fr, dy, dx);
    LAUNCH_CHECK();
}

// ---------------------------------------------------------------- slice_last
static void slice_check(const char *op, int rows, int N, int start, int len) {
    HY_REQUIRE(rows >= 0 && N >= 0 && start >= 0 && len >= 0 && (int64_t)start + len <= N,
               "%s: columns [%d, %lld) are outside the last dimension %d (rows %d)", op, start,
               (long long)start + len, N, rows);
}

extern "C" void hy_cuda_slice_last_fwd(int rows, int N, int start, int len, const void *x,
                                       void *y, void *stream) {
    slice_check("cuda slice_last_fwd", rows, N, start, len);
    if (rows == 0 || len == 0) return;
    cudaStream_t s = as_stream(stream);
    const uint16_t *xi = (const uint16_t *)x;
    uint16_t *yo = (uint16_t *)y;
    if (N % 8 == 0 && start % 8 == 0 && len % 8 == 0 && aligned16(x) && aligned16(y))
        slice_fwd_kernel<8><<<blocks_for((int64_t)rows * len / 8), kThreads, 0, s>>>(
            rows, N, start, len, xi, yo);
    else
        slice_fwd_kernel<1><<<blocks_for((int64_t)rows * len), kThreads, 0, s>>>(
            rows, N, start, len, xi, yo);
    LAUNCH_CHECK();
}

extern "C" void hy_cuda_slice_last_bwd(int rows, int N, int start, int len, const float *dy,
                                       float *dx, void *stream) {
    slice_check("cuda slice_last_bwd", rows, N, start, len);
    if (rows == 0 || len == 0 || !dx) return;
    cudaStream_t s = as_stream(stream);
    if (N % 8 == 0 && start % 8 == 0 && len % 8 == 0 && aligned16(dy) && aligned16(dx))
        slice_bwd_kernel<8><<<blocks_for((int64_t)rows * len / 8), kThreads, 0, s>>>(
            rows, N, start, len, dy, dx);
    else
        slice_bwd_kernel<1><<<blocks_for((int64_t)rows * len), kThreads, 0, s>>>(
            rows, N, start, len, dy, dx);
    LAUNCH_CHECK();
}

// ---------------------------------------------------------------- mean
extern "C" void hy_cuda_mean_fwd(size_t n, const float *x, float *y, void *stream) {
    HY_REQUIRE(n > 0, "cuda mean_fwd: the input is empty");
    mean_fwd_kernel<<<1, kMeanThreads, 0, as_stream(stream)>>>((int64_t)n, x, y, aligned16(x));
    LAUNCH_CHECK();
}

extern "C" void hy_cuda_mean_bwd(size_t n, const float *dy, float *dx, void *stream) {
    HY_REQUIRE(n > 0, "cuda mean_bwd: the input is empty");
    if (!dx) return;
    launch_flat(MeanBwdOp{dy, dx, (float)n}, n, aligned16(dx), as_stream(stream));
}
