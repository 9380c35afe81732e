// ops.cu: the basic ops of layers/ops.h on the GPU (see hy_cuda_ops.h for the
// contract of each entry point): elementwise ops, embedding, SwiGLU, slices,
// mean, argmax. The norms are in norms.cu, RoPE in rope.cu, the short
// convolution in short_conv.cu, and what they share (launch sizes, bf16
// loads, column sums) in ops_device.cuh.
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
//   * row reductions (norms.cu): G lanes of a warp per row (G = 32 for long
//     rows, fewer for short ones, e.g. 8 for a 64-wide bf16 head).
//   * parameter-gradient reductions (rmsnorm dw, short_conv dw/db): pass 1
//     writes one partial sum per block into scratch, pass 2 (colsum_kernel)
//     adds the partials in a fixed order: deterministic, no atomics.
#include <initializer_list>

#include "hy_cuda_ops.h"
#include "ops_device.cuh"
#include "pdl.cuh"

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

// y = a * silu(g), one rounding (the unfused path rounds silu(g) to bf16 first); sigm_fast
// and the paired conversion as in swiglu_fwd_kernel: (16384, 768) 22.5 -> 17.3 us (H200).
struct MulSiluFwdOp {
    const uint16_t *a, *g;
    uint16_t *y;
    template <int V>
    __device__ void apply(int64_t i) const {
        float fa[V], fg[V];
        ld_bf<V>(a + i, fa);
        ld_bf<V>(g + i, fg);
#pragma unroll
        for (int k = 0; k < V; k++) fa[k] *= fg[k] * sigm_fast(fg[k]);
        if constexpr (V == 8)
            st_bf_rn<V>(y + i, fa);
        else
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

// ---------------------------------------------------------------- swiglu
// Two units a thread at a time (a streaming grid: stream_blocks), both units' loads issued
// before either's arithmetic. (One unit a thread, a block per 256 units, moved the MLP's
// (16384, 2 x 2048) input at ~2.9 TB/s on an H200: 70 us.) sigm_fast and the paired bf16
// conversion: with sigm's expf and IEEE division and the integer rounding the kernel issued
// ~26 instructions an element; 64.2 -> 51.6 us there (its bytes: ~48 us at 4.2 TB/s).
template <int VEC>
__global__ void swiglu_fwd_kernel(int64_t rows, int H, const uint16_t *gv, uint16_t *y) {
    for (RowWalk w(H / VEC); w.r < rows;) {  // no 64-bit division a unit
        RowWalk w2 = w;
        w2.next();
        const bool two = w2.r < rows;
        float g[2][VEC], v[2][VEC];
        ld_bf<VEC>(gv + w.r * 2 * H + w.j * VEC, g[0]);
        ld_bf<VEC>(gv + w.r * 2 * H + w.j * VEC + H, v[0]);
        if (two) {
            ld_bf<VEC>(gv + w2.r * 2 * H + w2.j * VEC, g[1]);
            ld_bf<VEC>(gv + w2.r * 2 * H + w2.j * VEC + H, v[1]);
        }
#pragma unroll
        for (int u = 0; u < 2; u++) {
            if (u == 1 && !two) break;
#pragma unroll
            for (int k = 0; k < VEC; k++) g[u][k] = g[u][k] * sigm_fast(g[u][k]) * v[u][k];
            const RowWalk &at = u == 0 ? w : w2;
            if constexpr (VEC == 8)
                st_bf_rn<VEC>(y + at.r * H + at.j * VEC, g[u]);
            else
                st_bf<VEC>(y + at.r * H + at.j * VEC, g[u]);
        }
        w = w2;
        w.next();
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
                                                                     long long *pos, unsigned *done,
                                                                     int32_t *ring, int ring_len) {
    __shared__ float sv[kGreedyThreads / 32];
    __shared__ int si[kGreedyThreads / 32], sbad[kGreedyThreads / 32];
    pdl_wait();  // the logits come from the head's kernel before
    // Every block reads the position before any block may advance it (the
    // last block to finish does, below).
    const long long p = pos ? *pos : 0;
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
    const int tok = (bad || !(best > -INFINITY)) ? -1 : at;
    idx[blockIdx.x] = tok;
    if (ring) {  // host memory: visible to the host once the kernel has run
        ring[(size_t)(p % ring_len) * gridDim.x + blockIdx.x] = tok;
        __threadfence_system();
    }
    if (!pos) return;
    if (gridDim.x > 1) {
        __threadfence();
        if (atomicAdd(done, 1u) != gridDim.x - 1) return;
        *done = 0;  // the last block: every block has read p
    }
    *pos = p + 1;
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
                                    unsigned *done, int32_t *ring, int ring_len, void *stream) {
    const char *fn = "cuda greedy_rows";
    HY_REQUIRE(rows >= 0 && V > 0, "%s: bad sizes rows %d, V %d", fn, rows, V);
    HY_REQUIRE(!pos || rows <= 1 || done, "%s: %d rows advance the position through a counter",
               fn, rows);
    HY_REQUIRE(!ring || (pos && ring_len > 0), "%s: the ring needs the position and a length", fn);
    if (rows == 0) return;
    // Launched early (pdl.cuh) behind the decoding graph's head, with the
    // driver's carveout: it uses no dynamic shared memory.
    auto *k = V % 8 == 0 && aligned16(x) ? greedy_rows_kernel<true> : greedy_rows_kernel<false>;
    launch_pdl_as(false, k, dim3(rows), dim3(kGreedyThreads), 0, as_stream(stream), V,
                  (const uint16_t *)x, idx, pos, done, ring, ring_len);
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

// ---------------------------------------------------------------- swiglu
extern "C" void hy_cuda_swiglu_fwd(int rows, int H, const void *gv, void *y, void *stream) {
    HY_REQUIRE(rows >= 0 && H > 0, "cuda swiglu_fwd: bad sizes rows %d, H %d", rows, H);
    if (rows == 0) return;
    cudaStream_t s = as_stream(stream);
    const uint16_t *g = (const uint16_t *)gv;
    uint16_t *yo = (uint16_t *)y;
    if (H % 8 == 0 && aligned16(gv) && aligned16(y))
        swiglu_fwd_kernel<8><<<stream_blocks((int64_t)rows * H / 16), kThreads, 0, s>>>(rows, H,
                                                                                      g, yo);
    else
        swiglu_fwd_kernel<1><<<stream_blocks((int64_t)rows * H / 2), kThreads, 0, s>>>(rows, H,
                                                                                     g, yo);
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
