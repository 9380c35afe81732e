// ops.cu: the basic ops of layers/ops.h on the GPU (see hy_cuda_ops.h for the
// contract of each entry point); the short convolution is in short_conv.cu,
// and what both share (launch sizes, bf16 loads, column sums) in ops_device.cuh.
//
// Layout of the kernels:
//   * "units": a kernel walks a flat index space of units in a grid-stride
//     loop; a unit is VEC consecutive elements of a row (VEC = 8: one 16-byte
//     load of bf16, two of fp32; VEC = 4: one 16-byte load of fp32, one
//     8-byte load of bf16; VEC = 1: the scalar fallback). The host picks
//     VEC > 1 only when the row length is a multiple of VEC and every pointer
//     is aligned for it, so a vector never straddles two rows.
//   * streaming kernels with fp32 operands (the backward ops that read dy and
//     add into a gradient) use VEC = 4: one float4 per thread, so the 32
//     float4 of a warp instruction are 512 contiguous bytes (VEC = 8 would
//     put each thread's two float4 32 bytes apart: every instruction touches
//     half of each sector). They issue every load of a unit before its first
//     store (a later load cannot pass a store that might alias it), walk a
//     grid of a few waves (stream_blocks) and find a unit's row without a
//     division in the loop (RowWalk).
//   * row reductions (rmsnorm, l2norm): G lanes of a warp per row (G = 32
//     for long rows, fewer for short ones, e.g. 8 for a 64-wide bf16 head).
//   * parameter-gradient reductions (rmsnorm dw, short_conv dw/db): pass 1
//     writes one partial sum per block into scratch, pass 2 (colsum_kernel)
//     adds the partials in a fixed order: deterministic, no atomics.
#include <initializer_list>

#include "hy_cuda_ops.h"
#include "ops_device.cuh"

namespace {

// ---------------------------------------------------------------- flat elementwise
// A functor's apply<V>(i) handles elements [i, i + V). The bulk runs in
// groups of VEC (grid-stride), the n % VEC tail in single elements (the
// first threads of the grid). VEC = 8 for the bf16-only forwards (one
// 16-byte load per operand), VEC = 4 for the ops with fp32 operands (one
// float4 each, 512 contiguous bytes per warp instruction).
template <class Op, int VEC>
__global__ void flat_kernel(Op op, int64_t n) {
    const int64_t groups = n / VEC;
    const int64_t i0 = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    const int64_t st = (int64_t)gridDim.x * blockDim.x;
    for (int64_t u = i0; u < groups; u += st) op.template apply<VEC>(u * VEC);
    if constexpr (VEC > 1)
        if (i0 < n - groups * VEC) op.template apply<1>(groups * VEC + i0);
}

// vec_ok: every pointer aligned for VEC (16 bytes for fp32 and for VEC = 8
// bf16; 8 bytes for VEC = 4 bf16).
template <int VEC, class Op>
void launch_flat(const Op &op, size_t n, bool vec_ok, cudaStream_t s) {
    if (n == 0) return;
    int64_t nn = (int64_t)n;
    if (vec_ok) {
        flat_kernel<Op, VEC><<<stream_blocks(nn / VEC + 1), kThreads, 0, s>>>(op, nn);
    } else {
        flat_kernel<Op, 1><<<stream_blocks(nn), kThreads, 0, s>>>(op, nn);
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

// Bytes an element: dy 4 + da 4 + 4 + db 4 + 4 = 20 (both gradients), 12 (one).
// (16384, 768): 252 MB -> 0.060 ms at 4.2 TB/s. da != db (the host splits
// that call in two): both are loaded before either is stored.
struct AddBwdOp {
    const float *dy;
    float *da, *db;  // either may be NULL
    template <int V>
    __device__ void apply(int64_t i) const {
        float g[V], a[V], b[V];
        ld_f<V>(dy + i, g);
        if (da) ld_f<V>(da + i, a);
        if (db) ld_f<V>(db + i, b);
        if (da) {
#pragma unroll
            for (int k = 0; k < V; k++) a[k] += g[k];
            st_f<V>(da + i, a);
        }
        if (db) {
#pragma unroll
            for (int k = 0; k < V; k++) b[k] += g[k];
            st_f<V>(db + i, b);
        }
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

// Bytes an element: dy 4 + a, b 2 + 2 + da, db 8 + 8 = 24. da != db (as add).
struct MulBwdOp {
    const float *dy;
    const uint16_t *a, *b;
    float *da, *db;  // either may be NULL
    template <int V>
    __device__ void apply(int64_t i) const {
        float g[V], fa[V], fb[V], oa[V], ob[V], t[V];
        ld_f<V>(dy + i, g);
        if (da) {
            ld_bf<V>(b + i, fb);
            ld_f<V>(da + i, oa);
        }
        if (db) {
            ld_bf<V>(a + i, fa);
            ld_f<V>(db + i, ob);
        }
        if (da) {
#pragma unroll
            for (int k = 0; k < V; k++) t[k] = g[k] * fb[k];
#pragma unroll
            for (int k = 0; k < V; k++) oa[k] += t[k];
            st_f<V>(da + i, oa);
        }
        if (db) {
#pragma unroll
            for (int k = 0; k < V; k++) t[k] = g[k] * fa[k];
#pragma unroll
            for (int k = 0; k < V; k++) ob[k] += t[k];
            st_f<V>(db + i, ob);
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

// Bytes an element: dy 4 + x 2 + dx 4 + 4 = 14. (16384, 2304): 528 MB ->
// 0.126 ms at 4.2 TB/s; (16384, 768): 176 MB -> 0.042 ms.
struct SiluBwdOp {
    const float *dy;
    const uint16_t *x;
    float *dx;
    int overwrite;  // dx = ..., its old contents not read
    template <int V>
    __device__ void apply(int64_t i) const {
        float g[V], f[V], o[V];
        ld_f<V>(dy + i, g);
        ld_bf<V>(x + i, f);
        if (overwrite) {
#pragma unroll
            for (int k = 0; k < V; k++) o[k] = 0.0f;
        } else {
            ld_f<V>(dx + i, o);
        }
#pragma unroll
        for (int k = 0; k < V; k++) {
            float s = sigm(f[k]);
            g[k] = g[k] * s * (1.0f + f[k] * (1.0f - s));
        }
#pragma unroll
        for (int k = 0; k < V; k++) o[k] += g[k];
        st_f<V>(dx + i, o);
    }
};

// y = a * silu(g), one rounding (the unfused path rounds silu(g) to bf16 first).
struct MulSiluFwdOp {
    const uint16_t *a, *g;
    uint16_t *y;
    template <int V>
    __device__ void apply(int64_t i) const {
        float fa[V], fg[V];
        ld_bf<V>(a + i, fa);
        ld_bf<V>(g + i, fg);
#pragma unroll
        for (int k = 0; k < V; k++) fa[k] *= fg[k] * sigm(fg[k]);
        st_bf<V>(y + i, fa);
    }
};

// da += dy silu(g), dg += dy a s (1 + g (1 - s)), s = sigmoid(g) from the bf16 g;
// either may be NULL, and each may be overwritten instead (its old contents
// not read). Bytes an element: dy 4 + a, g 2 + 2 + da, dg 4 + 4 (overwritten)
// = 16; (16384, 768): 201 MB -> 0.048 ms at 4.2 TB/s. da != dg (the host
// splits that call in two).
// da, dg f32 (added to, or written when *_over), or dah, dgh bf16 (written);
// at most one of each pair.
struct MulSiluBwdOp {
    const float *dy;
    const uint16_t *a, *g;
    float *da, *dg;
    int da_over, dg_over;
    uint16_t *dah, *dgh;
    template <int V>
    __device__ void apply(int64_t i) const {
        const bool wa = da || dah, wg = dg || dgh;
        float d[V], fa[V], fg[V], oa[V], og[V];
        ld_f<V>(dy + i, d);
        ld_bf<V>(g + i, fg);
        if (wg) ld_bf<V>(a + i, fa);
        if (da && !da_over) {
            ld_f<V>(da + i, oa);
        } else {
#pragma unroll
            for (int k = 0; k < V; k++) oa[k] = 0.0f;
        }
        if (dg && !dg_over) {
            ld_f<V>(dg + i, og);
        } else {
#pragma unroll
            for (int k = 0; k < V; k++) og[k] = 0.0f;
        }
#pragma unroll
        for (int k = 0; k < V; k++) {
            const float s = sigm(fg[k]);
            if (wa) oa[k] += d[k] * fg[k] * s;
            if (wg) og[k] += d[k] * fa[k] * s * (1.0f + fg[k] * (1.0f - s));
        }
        if (dah)
            st_bf<V>(dah + i, oa);
        else if (da)
            st_f<V>(da + i, oa);
        if (dgh)
            st_bf<V>(dgh + i, og);
        else if (dg)
            st_f<V>(dg + i, og);
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
        float g[V], f[V], o[V];
        ld_f<V>(dy + i, g);
        ld_bf<V>(x + i, f);
        ld_f<V>(dx + i, o);
#pragma unroll
        for (int k = 0; k < V; k++) {
            float s = sigm(f[k]);
            g[k] = g[k] * s * (1.0f - s);
        }
#pragma unroll
        for (int k = 0; k < V; k++) o[k] += g[k];
        st_f<V>(dx + i, o);
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

// The block's dw partial: partial[blockIdx.x, :] = the sum of its warps'
// shared rows sm (warps, D), added in warp order.
__device__ __forceinline__ void block_partial(const float *sm, int warps, int D, float *partial) {
    __syncthreads();
    for (int c = threadIdx.x; c < D; c += blockDim.x) {
        float t = 0.0f;
        for (int k = 0; k < warps; k++) t += sm[(int64_t)k * D + c];
        partial[(int64_t)blockIdx.x * D + c] = t;
    }
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
            float gx[VEC];  // g xhat, added to the warp's dw row VEC at a time (a lane's
                            // VEC floats in one access: scalar ones conflicted 8 ways)
#pragma unroll
            for (int k = 0; k < VEC; k++) {
                float xhat = f[k] * s;
                o[k] = s * (g[k] * wf[k] - xhat * m);
                gx[k] = g[k] * xhat;
            }
            if (partial) acc_f<VEC>(mine + c, gx);
            if (dx) acc_f<VEC>(dx + r * D + c, o);
        }
    }
    if (partial) block_partial(sm, warps, D, partial);
}

// The same for D = NIT * 256 (NIT <= 4): lane l owns columns l 8 + 256 i,
// as the loops above, and a row's dy, x and old dx are loaded together into
// registers before its reduction, where the loop above read dx only after
// it (two round trips to memory a row) and re-read dy and x. The weights
// stay in registers across the warp's rows. The arithmetic is the loop
// kernel's, in the same order.
template <int NIT>
__global__ void __launch_bounds__(kNormWarps * 32)
    rmsnorm_bwd_reg_kernel(int64_t rows, int D, int64_t per, const float *dy, const uint16_t *x,
                           const float *w, const float *rstd, float *dx, float *partial) {
    extern __shared__ float sm[];  // (warps, D) when partial
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    float *mine = sm + (int64_t)warp * D;
    float wf[NIT][8];
#pragma unroll
    for (int i = 0; i < NIT; i++) {
        const int c = lane * 8 + i * 256;
        ld_f<8>(w + c, wf[i]);
        if (partial)
#pragma unroll
            for (int k = 0; k < 8; k++) mine[c + k] = 0.0f;
    }
    const int64_t r0 = (int64_t)blockIdx.x * per, r1 = r0 + per < rows ? r0 + per : rows;
    for (int64_t r = r0 + warp; r < r1; r += warps) {
        float g[NIT][8], f[NIT][8], d[NIT][8];
#pragma unroll
        for (int i = 0; i < NIT; i++) {
            const int64_t at = r * D + lane * 8 + i * 256;
            ld_f<8>(dy + at, g[i]);
            ld_bf<8>(x + at, f[i]);
            if (dx) {
                ld_f<8>(dx + at, d[i]);
            } else {
#pragma unroll
                for (int k = 0; k < 8; k++) d[i][k] = 0.0f;
            }
        }
        const float s = rstd[r];
        float dot = 0.0f;
#pragma unroll
        for (int i = 0; i < NIT; i++)
#pragma unroll
            for (int k = 0; k < 8; k++) dot += g[i][k] * wf[i][k] * f[i][k];
        dot = warp_sum(dot);
        const float m = (float)((double)dot * s / D);
#pragma unroll
        for (int i = 0; i < NIT; i++) {
            const int c = lane * 8 + i * 256;
            float gx[8], o[8];
#pragma unroll
            for (int k = 0; k < 8; k++) {
                const float xhat = f[i][k] * s;
                o[k] = d[i][k] + s * (g[i][k] * wf[i][k] - xhat * m);
                gx[k] = g[i][k] * xhat;
            }
            if (partial) acc_f<8>(mine + c, gx);
            if (dx) st_f<8>(dx + r * D + c, o);
        }
    }
    if (partial) block_partial(sm, warps, D, partial);
}

// ---------------------------------------------------------------- swiglu
template <int VEC>
__global__ void swiglu_fwd_kernel(int64_t rows, int H, const uint16_t *gv, uint16_t *y) {
    for (RowWalk w(H / VEC); w.r < rows; w.next()) {  // no 64-bit division a unit
        const int64_t r = w.r;
        const int c = w.j * VEC;
        const uint16_t *gp = gv + r * 2 * H + c;
        float g[VEC], v[VEC];
        ld_bf<VEC>(gp, g);
        ld_bf<VEC>(gp + H, v);
#pragma unroll
        for (int k = 0; k < VEC; k++) g[k] = g[k] * sigm(g[k]) * v[k];
        st_bf<VEC>(y + r * H + c, g);
    }
}

// Bytes a (row, h): dy 4 + gv 2 + 2 + dgv (4 + 4) * 2 = 24. (16384, 2048):
// 805 MB -> 0.19 ms at 4.2 TB/s. Units of VEC = 4 columns (a float4 of dy and
// of each dgv half, 8 bytes of each gv half); every load before the stores.
// BF16: dgv is bf16, written (the f32 values rounded; 16 bytes a (row, h)).
template <int VEC, bool BF16>
__global__ void swiglu_bwd_kernel(int64_t rows, int H, const float *__restrict__ dy,
                                  const uint16_t *__restrict__ gv, void *__restrict__ dgv_,
                                  int overwrite) {
    for (RowWalk w(H / VEC); w.r < rows; w.next()) {
        const int64_t r = w.r;
        const int c = w.j * VEC;
        const uint16_t *gp = gv + r * 2 * H + c;
        float *dp = (float *)dgv_ + r * 2 * H + c;
        float g[VEC], v[VEC], d[VEC], og[VEC], ov[VEC];
        ld_bf<VEC>(gp, g);
        ld_bf<VEC>(gp + H, v);
        ld_f<VEC>(dy + r * H + c, d);
        if (BF16 || overwrite) {
#pragma unroll
            for (int k = 0; k < VEC; k++) og[k] = ov[k] = 0.0f;
        } else {
            ld_f<VEC>(dp, og);
            ld_f<VEC>(dp + H, ov);
        }
#pragma unroll
        for (int k = 0; k < VEC; k++) {
            float s = sigm(g[k]);
            float dg = d[k] * v[k] * s * (1.0f + g[k] * (1.0f - s));
            float dv = d[k] * g[k] * s;
            og[k] += dg;
            ov[k] += dv;
        }
        if constexpr (BF16) {
            uint16_t *hp = (uint16_t *)dgv_ + r * 2 * H + c;
            st_bf<VEC>(hp, og);
            st_bf<VEC>(hp + H, ov);
        } else {
            st_f<VEC>(dp, og);
            st_f<VEC>(dp + H, ov);
        }
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

// ---------------------------------------------------------------- rope
constexpr int kRopeMaxHalf = 256;
struct RopeFreq {
    float f[kRopeMaxHalf];  // inv_freq_i, i < D/2 (a kernel parameter, 1 KiB)
};

// The cos and sin of VEC pairs i0 .. i0 + VEC - 1 at position pos: the angle
// and its cos/sin in double, rounded once (as layers/rope.c). The double
// sincos is most of a rope kernel's work: q and k share one.
template <int VEC>
__device__ __forceinline__ void rope_angles(const RopeFreq &fr, int i0, double pos,
                                            float (&co)[VEC], float (&si)[VEC]) {
#pragma unroll
    for (int k = 0; k < VEC; k++) {
        double sd, cd;
        sincos(pos * (double)fr.f[i0 + k], &sd, &cd);
        co[k] = (float)cd;
        si[k] = (float)sd;
    }
}

// The rotation of VEC pairs (a, b) by those angles: forward o1 = a cos -
// b sin, o2 = b cos + a sin; inverse (the backward) o1 = a cos + b sin,
// o2 = b cos - a sin. With rope_angles, one pair of functions for every
// rope kernel, so that each rounds alike.
template <int VEC, bool INVERSE>
__device__ __forceinline__ void rope_apply(const float (&co)[VEC], const float (&si)[VEC],
                                           const float (&a)[VEC], const float (&b)[VEC],
                                           float (&o1)[VEC], float (&o2)[VEC]) {
#pragma unroll
    for (int k = 0; k < VEC; k++) {
        if (INVERSE) {
            o1[k] = a[k] * co[k] + b[k] * si[k];
            o2[k] = b[k] * co[k] - a[k] * si[k];
        } else {
            o1[k] = a[k] * co[k] - b[k] * si[k];
            o2[k] = b[k] * co[k] + a[k] * si[k];
        }
    }
}

template <int VEC, bool INVERSE>
__device__ __forceinline__ void rope_rotate(const RopeFreq &fr, int i0, double pos,
                                            const float (&a)[VEC], const float (&b)[VEC],
                                            float (&o1)[VEC], float (&o2)[VEC]) {
    float co[VEC], si[VEC];
    rope_angles<VEC>(fr, i0, pos, co, si);
    rope_apply<VEC, INVERSE>(co, si, a, b, o1, o2);
}

// fwd (sign +1): y = R(theta) x into y (bf16). bwd (sign -1): dx += R(-theta) dy.
template <int VEC>
__global__ void rope_fwd_kernel(int64_t units, int T, int H, int D, int64_t pos0_arg,
                                const long long *pos0_dev, RopeFreq fr, const uint16_t *x,
                                uint16_t *y) {
    // The position comes from device memory when given (a replayed CUDA graph).
    const int64_t pos0 = pos0_dev ? (int64_t)*pos0_dev : pos0_arg;
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
        rope_rotate<VEC, false>(fr, i0, (double)(pos0 + t), a, b, o1, o2);
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
        rope_rotate<VEC, true>(fr, i0, (double)(pos0 + t), a, b, o1, o2);
        acc_f<VEC>(d1, o1);
        acc_f<VEC>(d1 + half, o2);
    }
}

// ---------------------------------------------------------------- qkv_rope
// A unit is VEC pairs (i0 .. i0 + VEC - 1) of one (b, t, h): the pairs of q
// and k (one angle for both) and the same columns of v's two halves. qkv
// rows are 3I wide, I = H D: q at column h D, k at I + h D, v at 2I + h D.
template <int VEC>
__global__ void qkv_rope_fwd_kernel(int64_t units, int T, int H, int D, int64_t pos0,
                                    RopeFreq fr, const uint16_t *qkv, uint16_t *q, uint16_t *k,
                                    uint16_t *v) {
    const int half = D / 2, gpv = half / VEC;
    const int64_t I = (int64_t)H * D;
    GRID_STRIDE(u, units) {
        const int64_t vec = u / gpv, row = vec / H;  // vec: (b, t, h); row: (b, t)
        const int i0 = (int)(u - vec * gpv) * VEC;
        const uint16_t *src = qkv + row * 3 * I + (vec - row * H) * D + i0;
        const int64_t dst = vec * D + i0;
        float qa[VEC], qb[VEC], ka[VEC], kb[VEC], va[VEC], vb[VEC];
        ld_bf<VEC>(src, qa);
        ld_bf<VEC>(src + half, qb);
        ld_bf<VEC>(src + I, ka);
        ld_bf<VEC>(src + I + half, kb);
        ld_bf<VEC>(src + 2 * I, va);
        ld_bf<VEC>(src + 2 * I + half, vb);
        float co[VEC], si[VEC], o1[VEC], o2[VEC];
        rope_angles<VEC>(fr, i0, (double)(pos0 + row % T), co, si);
        rope_apply<VEC, false>(co, si, qa, qb, o1, o2);
        st_bf<VEC>(q + dst, o1);
        st_bf<VEC>(q + dst + half, o2);
        rope_apply<VEC, false>(co, si, ka, kb, o1, o2);
        st_bf<VEC>(k + dst, o1);
        st_bf<VEC>(k + dst + half, o2);
        st_bf<VEC>(v + dst, va);
        st_bf<VEC>(v + dst + half, vb);
    }
}

// d qkv = [R(-theta) dq | R(-theta) dk | dv]; a NULL gradient reads as zero.
// MODE 0: fp32 written; 1: fp32 added to; 2: bf16 written.
template <int VEC, int MODE>
__device__ __forceinline__ void qkv_rope_put(void *dqkv, int64_t at, const float (&f)[VEC]) {
    if constexpr (MODE == 0) st_f<VEC>((float *)dqkv + at, f);
    if constexpr (MODE == 1) acc_f<VEC>((float *)dqkv + at, f);
    if constexpr (MODE == 2) st_bf<VEC>((uint16_t *)dqkv + at, f);
}

template <int VEC>
__device__ __forceinline__ void ld_f_or_zero(const float *p, int64_t at, float (&f)[VEC]) {
    if (p) {
        ld_f<VEC>(p + at, f);
    } else {
#pragma unroll
        for (int k = 0; k < VEC; k++) f[k] = 0.0f;
    }
}

template <int VEC, int MODE>
__global__ void qkv_rope_bwd_kernel(int64_t units, int T, int H, int D, int64_t pos0,
                                    RopeFreq fr, const float *dq, const float *dk,
                                    const float *dv, void *dqkv) {
    const int half = D / 2, gpv = half / VEC;
    const int64_t I = (int64_t)H * D;
    GRID_STRIDE(u, units) {
        const int64_t vec = u / gpv, row = vec / H;
        const int i0 = (int)(u - vec * gpv) * VEC;
        const int64_t src = vec * D + i0, dst = row * 3 * I + (vec - row * H) * D + i0;
        float qa[VEC], qb[VEC], ka[VEC], kb[VEC], va[VEC], vb[VEC];
        ld_f_or_zero<VEC>(dq, src, qa);
        ld_f_or_zero<VEC>(dq, src + half, qb);
        ld_f_or_zero<VEC>(dk, src, ka);
        ld_f_or_zero<VEC>(dk, src + half, kb);
        ld_f_or_zero<VEC>(dv, src, va);
        ld_f_or_zero<VEC>(dv, src + half, vb);
        float co[VEC], si[VEC], o1[VEC], o2[VEC];
        rope_angles<VEC>(fr, i0, (double)(pos0 + row % T), co, si);
        rope_apply<VEC, true>(co, si, qa, qb, o1, o2);
        qkv_rope_put<VEC, MODE>(dqkv, dst, o1);
        qkv_rope_put<VEC, MODE>(dqkv, dst + half, o2);
        rope_apply<VEC, true>(co, si, ka, kb, o1, o2);
        qkv_rope_put<VEC, MODE>(dqkv, dst + I, o1);
        qkv_rope_put<VEC, MODE>(dqkv, dst + I + half, o2);
        qkv_rope_put<VEC, MODE>(dqkv, dst + 2 * I, va);
        qkv_rope_put<VEC, MODE>(dqkv, dst + 2 * I + half, vb);
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

// Bytes a copied element: dy 4 + dx 4 + 4 = 12. (16384, 2304) window 768:
// 151 MB -> 0.036 ms at 4.2 TB/s. Units of VEC = 4 columns (one float4).
template <int VEC>
__global__ void slice_bwd_kernel(int64_t rows, int N, int start, int len,
                                 const float *__restrict__ dy, float *__restrict__ dx) {
    for (RowWalk w(len / VEC); w.r < rows; w.next()) {
        const int j = w.j * VEC;
        float *d = dx + w.r * N + start + j;
        float g[VEC], o[VEC];
        ld_f<VEC>(dy + w.r * len + j, g);
        ld_f<VEC>(d, o);
#pragma unroll
        for (int k = 0; k < VEC; k++) o[k] += g[k];
        st_f<VEC>(d, o);
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

// ---------------------------------------------------------------- argmax
constexpr int kArgmaxWarps = 8;

// Of two candidates (value, index), the larger value; on a tie the lower index.
__device__ __forceinline__ void argmax_take(float &v, int &i, float v2, int i2) {
    if (v2 > v || (v2 == v && i2 < i)) v = v2, i = i2;
}

// One warp a row: each lane scans a strided share of the V values (coalesced),
// then the warp reduces. NaN never wins (it compares false).
__global__ void argmax_rows_kernel(int64_t rows, int V, const uint16_t *__restrict__ x,
                                   int32_t *__restrict__ idx) {
    const int64_t r = (int64_t)blockIdx.x * kArgmaxWarps + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (r >= rows) return;
    const uint16_t *row = x + r * (int64_t)V;
    float best = -INFINITY;
    int at = V;  // no candidate yet: any real index is lower
    for (int j = lane; j < V; j += 32) argmax_take(best, at, bf2f(row[j]), j);
    for (int o = 16; o > 0; o >>= 1) {
        float v2 = __shfl_down_sync(0xffffffffu, best, o);
        int i2 = __shfl_down_sync(0xffffffffu, at, o);
        argmax_take(best, at, v2, i2);
    }
    if (lane == 0) idx[r] = at < V ? at : 0;
}

// ---------------------------------------------------------------- greedy token
constexpr int kGreedyThreads = 512;

// One block a row (decoding: a row per sequence). Each thread scans a strided share of
// the row (8 values a 16-byte load when `vec`), the warps reduce by shuffles and the block
// through shared memory. A NaN or +inf anywhere, or a row of -inf only, gives -1.
template <bool vec>
__global__ void __launch_bounds__(kGreedyThreads) greedy_rows_kernel(int V, const uint16_t *__restrict__ x,
                                                                     int32_t *__restrict__ idx,
                                                                     long long *pos) {
    __shared__ float sv[kGreedyThreads / 32];
    __shared__ int si[kGreedyThreads / 32], sbad[kGreedyThreads / 32];
    const uint16_t *row = x + (int64_t)blockIdx.x * V;
    float best = -INFINITY;
    int at = V, bad = 0;  // at = V: no candidate yet
    auto take = [&](float v, int j) {
        bad |= (v != v) || v == INFINITY;
        argmax_take(best, at, v, j);
    };
    if (vec) {
        const uint4 *row4 = (const uint4 *)row;
        for (int u = threadIdx.x; u < V / 8; u += kGreedyThreads) {
            uint4 w = row4[u];
            const uint32_t h[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
            for (int e = 0; e < 4; e++) {
                take(bf2f((uint16_t)(h[e] & 0xffffu)), 8 * u + 2 * e);
                take(bf2f((uint16_t)(h[e] >> 16)), 8 * u + 2 * e + 1);
            }
        }
    } else {
        for (int j = threadIdx.x; j < V; j += kGreedyThreads) take(bf2f(row[j]), j);
    }
    for (int o = 16; o > 0; o >>= 1) {
        float v2 = __shfl_down_sync(0xffffffffu, best, o);
        int i2 = __shfl_down_sync(0xffffffffu, at, o);
        bad |= __shfl_down_sync(0xffffffffu, bad, o);
        argmax_take(best, at, v2, i2);
    }
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    if (lane == 0) sv[warp] = best, si[warp] = at, sbad[warp] = bad;
    __syncthreads();
    if (warp) return;
    best = lane < kGreedyThreads / 32 ? sv[lane] : -INFINITY;
    at = lane < kGreedyThreads / 32 ? si[lane] : V;
    bad = lane < kGreedyThreads / 32 ? sbad[lane] : 0;
    for (int o = 16; o > 0; o >>= 1) {
        float v2 = __shfl_down_sync(0xffffffffu, best, o);
        int i2 = __shfl_down_sync(0xffffffffu, at, o);
        bad |= __shfl_down_sync(0xffffffffu, bad, o);
        argmax_take(best, at, v2, i2);
    }
    if (lane) return;
    idx[blockIdx.x] = (bad || !(best > -INFINITY)) ? -1 : at;
    if (pos && blockIdx.x == 0) *pos += 1;
}

}  // namespace

// ================================================================ entry points
// ---------------------------------------------------------------- argmax
extern "C" void hy_cuda_argmax_rows(int64_t rows, int V, const void *x, int32_t *idx,
                                    void *stream) {
    HY_REQUIRE(rows >= 0 && V > 0, "cuda argmax_rows: bad sizes rows %lld, V %d", (long long)rows, V);
    if (rows == 0) return;
    unsigned blocks = (unsigned)((rows + kArgmaxWarps - 1) / kArgmaxWarps);
    argmax_rows_kernel<<<blocks, kArgmaxWarps * 32, 0, as_stream(stream)>>>(
        rows, V, (const uint16_t *)x, idx);
    LAUNCH_CHECK();
}

extern "C" void hy_cuda_greedy_rows(int rows, int V, const void *x, int32_t *idx, long long *pos,
                                    void *stream) {
    HY_REQUIRE(rows >= 0 && V > 0, "cuda greedy_rows: bad sizes rows %d, V %d", rows, V);
    if (rows == 0) return;
    if (V % 8 == 0 && aligned16(x))
        greedy_rows_kernel<true><<<rows, kGreedyThreads, 0, as_stream(stream)>>>(V, (const uint16_t *)x, idx, pos);
    else
        greedy_rows_kernel<false><<<rows, kGreedyThreads, 0, as_stream(stream)>>>(V, (const uint16_t *)x, idx, pos);
    LAUNCH_CHECK();
}

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
    const int nit = D % 256 == 0 ? D / 256 : 0;
    if (vec && nit >= 1 && nit <= 4) {
        auto kern = nit == 1 ? rmsnorm_bwd_reg_kernel<1>
                  : nit == 2 ? rmsnorm_bwd_reg_kernel<2>
                  : nit == 3 ? rmsnorm_bwd_reg_kernel<3>
                             : rmsnorm_bwd_reg_kernel<4>;
        kern<<<parts, warps * 32, smem, s>>>(rows, D, per, dy, xi, w, rstd, dx, partial);
    } else if (vec)
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
                                   float *dgv, int overwrite, void *stream) {
    HY_REQUIRE(rows >= 0 && H > 0, "cuda swiglu_bwd: bad sizes rows %d, H %d", rows, H);
    if (rows == 0 || !dgv) return;
    cudaStream_t s = as_stream(stream);
    const uint16_t *g = (const uint16_t *)gv;
    if (H % 4 == 0 && aligned16(dy) && aligned8(gv) && aligned16(dgv))
        swiglu_bwd_kernel<4, false><<<stream_blocks((int64_t)rows * H / 4), kThreads, 0, s>>>(
            rows, H, dy, g, dgv, overwrite);
    else
        swiglu_bwd_kernel<1, false><<<stream_blocks((int64_t)rows * H), kThreads, 0, s>>>(
            rows, H, dy, g, dgv, overwrite);
    LAUNCH_CHECK();
}

extern "C" void hy_cuda_swiglu_bwd_bf16(int rows, int H, const float *dy, const void *gv,
                                        void *dgv, void *stream) {
    HY_REQUIRE(rows >= 0 && H > 0, "cuda swiglu_bwd_bf16: bad sizes rows %d, H %d", rows, H);
    if (rows == 0 || !dgv) return;
    cudaStream_t s = as_stream(stream);
    const uint16_t *g = (const uint16_t *)gv;
    if (H % 4 == 0 && aligned16(dy) && aligned8(gv) && aligned8(dgv))
        swiglu_bwd_kernel<4, true><<<stream_blocks((int64_t)rows * H / 4), kThreads, 0, s>>>(
            rows, H, dy, g, dgv, 1);
    else
        swiglu_bwd_kernel<1, true><<<stream_blocks((int64_t)rows * H), kThreads, 0, s>>>(
            rows, H, dy, g, dgv, 1);
    LAUNCH_CHECK();
}

// ---------------------------------------------------------------- elementwise
// The bf16-only forwards: VEC = 8 (16-byte loads). The backwards: VEC = 4
// (float4 for fp32, 8 bytes for bf16). A backward given da == db (x + x)
// runs as two calls, one gradient each: its kernel loads both gradients
// before it stores either.
extern "C" void hy_cuda_add_fwd(size_t n, const void *a, const void *b, void *y, void *stream) {
    launch_flat<8>(AddFwdOp{(const uint16_t *)a, (const uint16_t *)b, (uint16_t *)y}, n,
                   aligned16(a) && aligned16(b) && aligned16(y), as_stream(stream));
}

extern "C" void hy_cuda_add_bwd(size_t n, const float *dy, float *da, float *db, void *stream) {
    if (!da && !db) return;
    if (da == db) {
        hy_cuda_add_bwd(n, dy, da, nullptr, stream);
        hy_cuda_add_bwd(n, dy, nullptr, db, stream);
        return;
    }
    launch_flat<4>(AddBwdOp{dy, da, db}, n, aligned16(dy) && aligned16(da) && aligned16(db),
                   as_stream(stream));
}

extern "C" void hy_cuda_mul_fwd(size_t n, const void *a, const void *b, void *y, void *stream) {
    launch_flat<8>(MulFwdOp{(const uint16_t *)a, (const uint16_t *)b, (uint16_t *)y}, n,
                   aligned16(a) && aligned16(b) && aligned16(y), as_stream(stream));
}

extern "C" void hy_cuda_mul_bwd(size_t n, const float *dy, const void *a, const void *b,
                                float *da, float *db, void *stream) {
    if (!da && !db) return;
    if (da == db) {
        hy_cuda_mul_bwd(n, dy, a, b, da, nullptr, stream);
        hy_cuda_mul_bwd(n, dy, a, b, nullptr, db, stream);
        return;
    }
    launch_flat<4>(MulBwdOp{dy, (const uint16_t *)a, (const uint16_t *)b, da, db}, n,
                   aligned16(dy) && aligned8(a) && aligned8(b) && aligned16(da) &&
                       aligned16(db),
                   as_stream(stream));
}

extern "C" void hy_cuda_silu_fwd(size_t n, const void *x, void *y, void *stream) {
    launch_flat<8>(SiluFwdOp{(const uint16_t *)x, (uint16_t *)y}, n,
                   aligned16(x) && aligned16(y), as_stream(stream));
}

extern "C" void hy_cuda_silu_bwd(size_t n, const float *dy, const void *x, float *dx,
                                 int overwrite, void *stream) {
    if (!dx) return;
    launch_flat<4>(SiluBwdOp{dy, (const uint16_t *)x, dx, overwrite}, n,
                   aligned16(dy) && aligned8(x) && aligned16(dx), as_stream(stream));
}

extern "C" void hy_cuda_mul_silu_fwd(size_t n, const void *a, const void *g, void *y,
                                     void *stream) {
    launch_flat<8>(MulSiluFwdOp{(const uint16_t *)a, (const uint16_t *)g, (uint16_t *)y}, n,
                   aligned16(a) && aligned16(g) && aligned16(y), as_stream(stream));
}

extern "C" void hy_cuda_mul_silu_bwd(size_t n, const float *dy, const void *a, const void *g,
                                     float *da, int da_overwrite, float *dg, int dg_overwrite,
                                     void *stream) {
    if (!da && !dg) return;
    if (da == dg) {
        hy_cuda_mul_silu_bwd(n, dy, a, g, da, da_overwrite, nullptr, 0, stream);
        hy_cuda_mul_silu_bwd(n, dy, a, g, nullptr, 0, dg, dg_overwrite, stream);
        return;
    }
    hy_cuda_mul_silu_bwd_mixed(n, dy, a, g, da, da_overwrite, nullptr, dg, dg_overwrite, nullptr,
                               stream);
}

extern "C" void hy_cuda_mul_silu_bwd_mixed(size_t n, const float *dy, const void *a,
                                           const void *g, float *da, int da_overwrite,
                                           void *da_bf16, float *dg, int dg_overwrite,
                                           void *dg_bf16, void *stream) {
    HY_REQUIRE(!(da && da_bf16) && !(dg && dg_bf16),
               "cuda mul_silu_bwd_mixed: a gradient given both in f32 and in bf16");
    const void *pa = da ? (const void *)da : da_bf16, *pg = dg ? (const void *)dg : dg_bf16;
    if (!pa && !pg) return;
    HY_REQUIRE(!(pa && pa == pg), "cuda mul_silu_bwd_mixed: the two gradients share a buffer");
    launch_flat<4>(MulSiluBwdOp{dy, (const uint16_t *)a, (const uint16_t *)g, da, dg,
                                da_overwrite, dg_overwrite, (uint16_t *)da_bf16,
                                (uint16_t *)dg_bf16},
                   n,
                   aligned16(dy) && aligned8(a) && aligned8(g) && aligned16(da) &&
                       aligned16(dg) && aligned8(da_bf16) && aligned8(dg_bf16),
                   as_stream(stream));
}

extern "C" void hy_cuda_sigmoid_fwd(size_t n, const void *x, void *y, void *stream) {
    launch_flat<8>(SigmoidFwdOp{(const uint16_t *)x, (uint16_t *)y}, n,
                   aligned16(x) && aligned16(y), as_stream(stream));
}

extern "C" void hy_cuda_sigmoid_bwd(size_t n, const float *dy, const void *x, float *dx,
                                    void *stream) {
    if (!dx) return;
    launch_flat<4>(SigmoidBwdOp{dy, (const uint16_t *)x, dx}, n,
                   aligned16(dy) && aligned8(x) && aligned16(dx), as_stream(stream));
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

static void rope_fwd_launch(const char *op, int B, int T, int H, int D, int64_t pos0,
                            const long long *pos0_dev, float base, const void *x, void *y,
                            void *stream) {
    HY_REQUIRE(B >= 0 && T >= 0 && H >= 0 && pos0 >= 0,
               "%s: bad arguments B %d, T %d, H %d, pos0 %lld", op, B, T, H, (long long)pos0);
    RopeFreq fr = rope_freq(op, D, base);
    int64_t vecs = (int64_t)B * T * H, half = D / 2;
    if (vecs == 0) return;
    cudaStream_t s = as_stream(stream);
    const uint16_t *xi = (const uint16_t *)x;
    uint16_t *yo = (uint16_t *)y;
    if (half % 8 == 0 && aligned16(x) && aligned16(y))
        rope_fwd_kernel<8><<<blocks_for(vecs * half / 8), kThreads, 0, s>>>(
            vecs * half / 8, T, H, D, pos0, pos0_dev, fr, xi, yo);
    else
        rope_fwd_kernel<1><<<blocks_for(vecs * half), kThreads, 0, s>>>(
            vecs * half, T, H, D, pos0, pos0_dev, fr, xi, yo);
    LAUNCH_CHECK();
}

extern "C" void hy_cuda_rope_fwd(int B, int T, int H, int D, int64_t pos0, float base,
                                 const void *x, void *y, void *stream) {
    rope_fwd_launch("cuda rope_fwd", B, T, H, D, pos0, NULL, base, x, y, stream);
}

extern "C" void hy_cuda_rope_fwd_dev(int B, int T, int H, int D, const long long *pos0_dev,
                                     float base, const void *x, void *y, void *stream) {
    HY_REQUIRE(pos0_dev, "cuda rope_fwd_dev: pos0_dev is NULL");
    rope_fwd_launch("cuda rope_fwd_dev", B, T, H, D, 0, pos0_dev, base, x, y, stream);
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

// ---------------------------------------------------------------- qkv_rope
// VEC 4 when every row segment is 16-byte aligned (half % 4, base pointers),
// else 1. (VEC 8 would put a thread's two fp32 loads 32 bytes apart.)
static bool qkv_rope_vec4(int D, std::initializer_list<const void *> ptrs) {
    bool ok = (D / 2) % 4 == 0;
    for (const void *p : ptrs) ok = ok && aligned16(p);
    return ok;
}

extern "C" void hy_cuda_qkv_rope_fwd(int B, int T, int H, int D, int64_t pos0, float base,
                                     const void *qkv, void *q, void *k, void *v, void *stream) {
    HY_REQUIRE(B >= 0 && T >= 0 && H >= 0 && pos0 >= 0,
               "cuda qkv_rope_fwd: bad arguments B %d, T %d, H %d, pos0 %lld", B, T, H,
               (long long)pos0);
    RopeFreq fr = rope_freq("cuda qkv_rope_fwd", D, base);
    const int64_t pairs = (int64_t)B * T * H * (D / 2);
    if (pairs == 0) return;
    HY_REQUIRE(qkv && q && k && v, "cuda qkv_rope_fwd: a NULL pointer");
    cudaStream_t s = as_stream(stream);
    const uint16_t *x = (const uint16_t *)qkv;
    uint16_t *qo = (uint16_t *)q, *ko = (uint16_t *)k, *vo = (uint16_t *)v;
    if (qkv_rope_vec4(D, {qkv, q, k, v}))
        qkv_rope_fwd_kernel<4><<<stream_blocks(pairs / 4), kThreads, 0, s>>>(pairs / 4, T, H, D,
                                                                             pos0, fr, x, qo, ko, vo);
    else
        qkv_rope_fwd_kernel<1><<<stream_blocks(pairs), kThreads, 0, s>>>(pairs, T, H, D, pos0, fr,
                                                                         x, qo, ko, vo);
    LAUNCH_CHECK();
}

template <int VEC>
static void qkv_rope_bwd_launch(int64_t units, int T, int H, int D, int64_t pos0,
                                const RopeFreq &fr, const float *dq, const float *dk,
                                const float *dv, void *dqkv, int mode, cudaStream_t s) {
    const unsigned g = stream_blocks(units);
    if (mode == 0)
        qkv_rope_bwd_kernel<VEC, 0><<<g, kThreads, 0, s>>>(units, T, H, D, pos0, fr, dq, dk, dv, dqkv);
    else if (mode == 1)
        qkv_rope_bwd_kernel<VEC, 1><<<g, kThreads, 0, s>>>(units, T, H, D, pos0, fr, dq, dk, dv, dqkv);
    else
        qkv_rope_bwd_kernel<VEC, 2><<<g, kThreads, 0, s>>>(units, T, H, D, pos0, fr, dq, dk, dv, dqkv);
    LAUNCH_CHECK();
}

extern "C" void hy_cuda_qkv_rope_bwd(int B, int T, int H, int D, int64_t pos0, float base,
                                     const float *dq, const float *dk, const float *dv,
                                     void *dqkv, int out_mode, void *stream) {
    HY_REQUIRE(B >= 0 && T >= 0 && H >= 0 && pos0 >= 0 && out_mode >= 0 && out_mode <= 2,
               "cuda qkv_rope_bwd: bad arguments B %d, T %d, H %d, pos0 %lld, out_mode %d", B, T,
               H, (long long)pos0, out_mode);
    RopeFreq fr = rope_freq("cuda qkv_rope_bwd", D, base);
    const int64_t pairs = (int64_t)B * T * H * (D / 2);
    if (pairs == 0 || !dqkv) return;
    cudaStream_t s = as_stream(stream);
    // bf16 output: 8-byte stores of 4 values, aligned when the fp32 ones would be.
    if (qkv_rope_vec4(D, {dq, dk, dv, dqkv}))
        qkv_rope_bwd_launch<4>(pairs / 4, T, H, D, pos0, fr, dq, dk, dv, dqkv, out_mode, s);
    else
        qkv_rope_bwd_launch<1>(pairs, T, H, D, pos0, fr, dq, dk, dv, dqkv, out_mode, s);
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
    if (N % 4 == 0 && start % 4 == 0 && len % 4 == 0 && aligned16(dy) && aligned16(dx))
        slice_bwd_kernel<4><<<stream_blocks((int64_t)rows * len / 4), kThreads, 0, s>>>(
            rows, N, start, len, dy, dx);
    else
        slice_bwd_kernel<1><<<stream_blocks((int64_t)rows * len), kThreads, 0, s>>>(
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
    launch_flat<4>(MeanBwdOp{dy, dx, (float)n}, n, aligned16(dx), as_stream(stream));
}
