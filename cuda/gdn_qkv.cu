// gdn_qkv.cu: GDN's input stage for training and prefill in one kernel each
// way, and its gates (layers/gdn_qkv.c; contract in hy_cuda_gdn.h).
//
// The unfused stage is short_conv, SiLU, three slices and two l2norms: seven
// launches a layer whose activations and f32 gradients each make a round
// trip through memory (the backward's slices add into a zeroed f32 copy of
// the whole 3I-wide gradient). Forward here: the conv of a row's 3I
// channels, SiLU, the heads' norms and the split into q, k, v in one pass
// (x read once, q, k, v written once; 4 bytes a channel and row). Backward:
// the conv output u is recomputed from x, and du = d loss / d u (f32) from
// dq, dk, dv; then dx, dw and db as the short conv's backward. For the
// common shapes (the streaming kernels below) both are one pass and du stays
// in registers; otherwise one kernel writes du and short_conv.cu's backward
// reads it. Everything between x and the outputs stays f32 (the unfused path
// rounds u and silu(u) to bf16).
//
// The shared-memory kernels (any shape whose row fits in shared memory).
// Layout of a block's work: R consecutive rows (b, t) of the B T rows at a
// time, R chosen so that an (R, C) f32 array (C = 3I) takes at most 28 KB of
// shared memory (R = 3 at C = 2304; the forward holds one, the backward two:
// the rows' u and their gradients). Phase 1: a thread takes VEC channels in
// each of the R rows and computes the conv (bias, then taps j = 0 .. K-1 in
// order, as the CPU op) into shared memory. Phase 2: a warp per (row, head)
// of q and k sums over the head's D channels. Phase 3: threads write the
// outputs (forward) or du (backward) from shared memory.
#include <stdlib.h>

#include <initializer_list>
#include <type_traits>

#include "hy_cuda_gdn.h"
#include "hy_cuda_ops.h"
#include "ops_device.cuh"

namespace {

constexpr int kQkvThreads = 256;
constexpr int kQkvWarps = kQkvThreads / 32;
constexpr size_t kQkvRowBytes = 28 << 10;  // an (R, C) f32 array's bytes, at most (R >= 1)
constexpr int kQkvMaxR = 8;

struct QkvShape {
    int B, T, H, D, K, C, I, R, norm_qk;
    float eps, inv_eps;  // inv_eps = 1 / eps (inf at eps 0)
};

// x at (b, s, c0 + k) for s in [-(K-1), T): the input, the bf16 cache
// (B, C, K-1; its last column is position -1) or zero.
template <int VEC>
__device__ __forceinline__ void qkv_tap(const QkvShape &p, const uint16_t *x,
                                        const uint16_t *cache, int b, int s, int c0, float *f) {
    if (s >= 0) {
        ld_bf<VEC>(x + ((int64_t)b * p.T + s) * p.C + c0, f);
    } else if (cache) {
#pragma unroll
        for (int k = 0; k < VEC; k++)
            f[k] = bf2f(cache[((int64_t)b * p.C + c0 + k) * (p.K - 1) + (p.K - 1) + s]);
    } else {
#pragma unroll
        for (int k = 0; k < VEC; k++) f[k] = 0.0f;
    }
}

// Sums over aligned groups of G lanes (G a power of two, 1 to 32; every lane
// of the warp calls), unrolled: a level is a shuffle and an add predicated
// on o < G, where group_sum's loop takes eight instructions.
__device__ __forceinline__ float group_sum_unrolled(float v, int G) {
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        const float t = __shfl_xor_sync(0xffffffffu, v, o);
        if (o < G) v += t;
    }
    return v;
}

// a and b summed over the groups (as above) in one chain of shuffles: after
// the first level the even lanes carry a's partial sums and the odd lanes
// b's, so that a level takes one shuffle for both, and a last shuffle hands
// each lane the other sum. Each level adds a pair of values in both orders
// (the same bits), so every lane of a group ends with the same sums.
__device__ __forceinline__ void group_sum2(float &a, float &b, int G, int lane) {
    if (G < 2) return;  // uniform
    const bool odd = lane & 1;
    float keep = odd ? b : a;
    keep += __shfl_xor_sync(0xffffffffu, odd ? a : b, 1);
#pragma unroll
    for (int o = 2; o < 32; o <<= 1) {
        const float t = __shfl_xor_sync(0xffffffffu, keep, o);
        if (o < G) keep += t;
    }
    const float other = __shfl_xor_sync(0xffffffffu, keep, 1);
    a = odd ? other : keep;
    b = odd ? keep : other;
}

// (b, t) of the group's rows row0 + r, r < R, into shared memory (one
// division a group instead of one a unit); b = -1 past the end.
__device__ __forceinline__ void qkv_row_coords(const QkvShape &p, int64_t row0, int64_t rows,
                                               int *rb, int *rt) {
    if (threadIdx.x < p.R) {
        const int64_t row = row0 + threadIdx.x;
        rb[threadIdx.x] = row < rows ? (int)(row / p.T) : -1;
        rt[threadIdx.x] = row < rows ? (int)(row % p.T) : 0;
    }
}

// Phase 1: for each of the thread's units (VEC channels c0 of a row; the
// same channels in each of the R rows: the index arithmetic is done once),
// u = conv(x) (bias, then taps j = 0 .. K-1 in order, as the CPU op);
// out (R, C) in shared memory gets silu(u) (SILU) or u. wt (K, C) is the
// conv weight transposed, so that a thread's VEC channels of tap j are VEC
// consecutive floats (L1 hits after the first block). Measured on an H200
// at (8, 2048, 3 x 768): holding a row's taps or the weights in registers
// (80 to 118 registers a thread) lost more occupancy than it gained.
template <int VEC, bool SILU>
__device__ __forceinline__ void qkv_conv_rows(const QkvShape &p, const int *rb, const int *rt,
                                              const uint16_t *__restrict__ x,
                                              const float *__restrict__ wt,
                                              const float *__restrict__ bias,
                                              const uint16_t *__restrict__ cache, float *out) {
    const int per_row = p.C / VEC;
    for (int cu = threadIdx.x; cu < per_row; cu += kQkvThreads) {
        const int c0 = cu * VEC;
        float bs[VEC];
        if (bias)
            ld_f<VEC>(bias + c0, bs);
        else
#pragma unroll
            for (int k = 0; k < VEC; k++) bs[k] = 0.0f;
        for (int r = 0; r < p.R; r++) {
            const int b = rb[r], t = rt[r];
            if (b < 0) break;
            float acc[VEC];
#pragma unroll
            for (int k = 0; k < VEC; k++) acc[k] = bs[k];
            for (int j = 0; j < p.K; j++) {  // taps j = 0 .. K-1 in order
                float xv[VEC], w1[VEC];
                qkv_tap<VEC>(p, x, cache, b, t - (p.K - 1) + j, c0, xv);
                ld_f<VEC>(wt + (int64_t)j * p.C + c0, w1);
#pragma unroll
                for (int k = 0; k < VEC; k++) acc[k] += w1[k] * xv[k];
            }
            if constexpr (SILU) {
#pragma unroll
                for (int k = 0; k < VEC; k++) acc[k] *= sigm_fast(acc[k]);
            }
            st_f<VEC>(out + r * p.C + c0, acc);
        }
    }
}

// wt (K, C) = w (C, K) transposed.
__global__ void qkv_wt_kernel(int C, int K, const float *__restrict__ w, float *__restrict__ wt) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (int64_t)C * K;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t c = i / K, j = i - c * K;
        wt[j * C + c] = w[i];
    }
}

// Forward: q, k, v (B T, I) bf16 = split(silu(conv(x))), q and k divided by
// max(||.||, eps) per head when norm_qk (multiplied by its reciprocal).
template <int VEC>
__global__ void __launch_bounds__(kQkvThreads)
    gdn_qkv_fwd_kernel(QkvShape p, const uint16_t *__restrict__ x, const float *__restrict__ wt,
                       const float *__restrict__ bias, const uint16_t *__restrict__ cache,
                       uint16_t *__restrict__ q, uint16_t *__restrict__ k,
                       uint16_t *__restrict__ v) {
    extern __shared__ float sm[];
    float *s = sm;                           // (R, C): silu(u)
    float *inv = sm + (size_t)p.R * p.C;     // (R, 2H): 1 / max(||q or k head||, eps)
    __shared__ int rb[kQkvMaxR], rt[kQkvMaxR];
    const int64_t rows = (int64_t)p.B * p.T;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, per_row = p.C / VEC;
    const int per_head = p.D / VEC;
    for (int64_t row0 = (int64_t)blockIdx.x * p.R; row0 < rows; row0 += (int64_t)gridDim.x * p.R) {
        qkv_row_coords(p, row0, rows, rb, rt);
        __syncthreads();
        qkv_conv_rows<VEC, true>(p, rb, rt, x, wt, bias, cache, s);
        __syncthreads();
        if (p.norm_qk) {
            for (int task = warp; task < p.R * 2 * p.H; task += kQkvWarps) {
                const int r = task / (2 * p.H), hh = task - r * 2 * p.H;
                const float *h = s + r * p.C + hh * p.D;  // q heads, then k heads (c = hh D)
                float ss = 0.0f;
                for (int d = lane; d < p.D; d += 32) ss += h[d] * h[d];
                ss = warp_sum(ss);
                if (lane == 0) inv[r * 2 * p.H + hh] = 1.0f / fmaxf(sqrtf(ss), p.eps);
            }
            __syncthreads();
        }
        for (int cu = threadIdx.x; cu < per_row; cu += kQkvThreads) {
            const int c0 = cu * VEC, hh = cu / per_head;  // head of the 3H (q, k, v)
            const int which = hh / p.H, off = c0 - which * p.I;
            uint16_t *out = which == 0 ? q : which == 1 ? k : v;
            const bool nrm = p.norm_qk && which < 2;
            for (int r = 0; r < p.R; r++) {
                if (rb[r] < 0) break;
                float y[VEC];
                ld_f<VEC>(s + r * p.C + c0, y);
                const float sc = nrm ? inv[r * 2 * p.H + hh] : 1.0f;
#pragma unroll
                for (int e = 0; e < VEC; e++) y[e] *= sc;
                st_bf<VEC>(out + (row0 + r) * p.I + off, y);
            }
        }
        __syncthreads();  // shared memory is reused by the next rows
    }
}

// Backward to the conv output: du (B T, C) f32 from dq, dk, dv (B T, I) f32
// (NULL: zero), u recomputed from x. For a normalised head with n = ||s||,
// s = silu(u): ds = g / n - s (s . g) / n^3 (n >= eps) or g / eps (below,
// where the clamp passes no gradient to n); then du = ds silu'(u),
// silu'(u) = sigmoid(u) (1 + u (1 - sigmoid(u))).
template <int VEC>
__global__ void __launch_bounds__(kQkvThreads)
    gdn_qkv_du_kernel(QkvShape p, const uint16_t *__restrict__ x, const float *__restrict__ wt,
                      const float *__restrict__ bias, const uint16_t *__restrict__ cache,
                      const float *__restrict__ dq, const float *__restrict__ dk,
                      const float *__restrict__ dv, float *__restrict__ du) {
    extern __shared__ float sm[];
    float *u = sm;                               // (R, C): the conv output
    float *gs = sm + (size_t)p.R * p.C;          // (R, C): [dq | dk | dv] of the rows
    float *inv = gs + (size_t)p.R * p.C;         // (R, 2H): 1 / max(n, eps)
    float *cf = inv + (size_t)p.R * 2 * p.H;     // (R, 2H): (s . g) / n^3, or 0 below eps
    __shared__ int rb[kQkvMaxR], rt[kQkvMaxR];
    const int64_t rows = (int64_t)p.B * p.T;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, per_row = p.C / VEC;
    const int per_head = p.D / VEC;
    for (int64_t row0 = (int64_t)blockIdx.x * p.R; row0 < rows; row0 += (int64_t)gridDim.x * p.R) {
        qkv_row_coords(p, row0, rows, rb, rt);
        // The rows' gradients into shared memory first (their loads in flight
        // with the conv's; phase 2's dot products then read shared memory).
        for (int cu = threadIdx.x; cu < per_row; cu += kQkvThreads) {
            const int c0 = cu * VEC, which = (cu / per_head) / p.H, off = c0 - which * p.I;
            const float *gp = which == 0 ? dq : which == 1 ? dk : dv;
            for (int r = 0; r < p.R && row0 + r < rows; r++) {
                float g[VEC];
                if (gp)
                    ld_f<VEC>(gp + (row0 + r) * p.I + off, g);
                else
#pragma unroll
                    for (int e = 0; e < VEC; e++) g[e] = 0.0f;
                st_f<VEC>(gs + r * p.C + c0, g);
            }
        }
        __syncthreads();
        qkv_conv_rows<VEC, false>(p, rb, rt, x, wt, bias, cache, u);
        __syncthreads();
        if (p.norm_qk) {
            for (int task = warp; task < p.R * 2 * p.H; task += kQkvWarps) {
                const int r = task / (2 * p.H), hh = task - r * 2 * p.H;
                if (rb[r] < 0) continue;  // uniform over the warp
                const float *uh = u + r * p.C + hh * p.D, *g = gs + r * p.C + hh * p.D;
                float ss = 0.0f, dot = 0.0f;
                for (int d = lane; d < p.D; d += 32) {
                    const float sv = uh[d] * sigm_fast(uh[d]);
                    ss += sv * sv;
                    dot += sv * g[d];
                }
                ss = warp_sum(ss);
                dot = warp_sum(dot);
                if (lane == 0) {
                    const float n = sqrtf(ss);
                    const bool clamped = n < p.eps;
                    inv[r * 2 * p.H + hh] = 1.0f / (clamped ? p.eps : n);
                    cf[r * 2 * p.H + hh] = clamped ? 0.0f : dot / (n * n * n);
                }
            }
            __syncthreads();
        }
        for (int cu = threadIdx.x; cu < per_row; cu += kQkvThreads) {
            const int c0 = cu * VEC, hh = cu / per_head;
            const bool nrm = p.norm_qk && hh < 2 * p.H;
            for (int r = 0; r < p.R; r++) {
                if (rb[r] < 0) break;
                float g[VEC], d[VEC], uu[VEC];
                ld_f<VEC>(gs + r * p.C + c0, g);
                ld_f<VEC>(u + r * p.C + c0, uu);
                const float nv = nrm ? inv[r * 2 * p.H + hh] : 1.0f;
                const float kc = nrm ? cf[r * 2 * p.H + hh] : 0.0f;
#pragma unroll
                for (int e = 0; e < VEC; e++) {
                    const float uv = uu[e], sg = sigm_fast(uv);
                    const float ds = g[e] * nv - uv * sg * kc;
                    d[e] = ds * sg * (1.0f + uv * (1.0f - sg));
                }
                st_f<VEC>(du + (row0 + r) * p.C + c0, d);
            }
        }
        __syncthreads();
    }
}

// ---------------------------------------------------------------- streaming kernels
// The common shapes (K <= 4; a head's D channels on a power of two of lanes,
// D / VEC <= 32; 16-byte aligned rows; VEC = 4), in the layout of
// short_conv.cu's kernels: blocks of (32, 8) threads, lane tx owns VEC
// channels c0 = (blockIdx.x 32 + tx) VEC of every row, and a thread row
// walks a run of kQkvRun consecutive rows of one sequence (ConvWalk over the
// runs, uniform over a warp), one row at a time, with the conv's last K - 1
// input rows (and, backward, the last K - 1 rows of du) carried in registers
// from row to row, so that each row is loaded once. A head's sums over its D
// channels are shuffles among its D / VEC lanes, which sit side by side in
// the warp because heads start on multiples of D. The kernels above keep the
// other shapes; they hold R rows of all 3I channels in shared memory with
// barriers between phases, and 3I = 2304 gives 288 units a row for 256
// threads.
//
// The rows reach a thread through a pipeline in shared memory: cp.async
// copies of the lane's part of the next rows (forward kQkvFwdStages rows of
// x, 8 bytes a lane; backward kQkvStages rows of x and of d q/k/v, 24
// bytes), one commit group a row, each thread reading back only what it
// copied (no barriers). Loading P rows into registers at a time instead
// (P = 4 forward, 2 backward, where du's window and the dw/db sums take the
// registers: 80 and 128 a thread, three and two blocks an SM) kept ~1.5 KB a
// warp in flight and ran at ~1.4 TB/s: measured on an H200 at (8, 2048,
// 3 x 768) (hydra-bench step's "GDN input" piece, a layer), forward 0.103
// ms and backward 0.279 ms (dx written) against ~0.036 and ~0.09 ms for
// their bytes at 4.2 TB/s. The pipeline keeps 64 KB (forward: 32 KB a
// block, three an SM) and 96 KB (backward: 48 KB a block, two) of loads in
// flight an SM. The shared-memory kernels took 0.198 and 0.484 ms.
// With their loads in flight both were bound by the instructions they issue
// (Nsight Compute: 0.72 a cycle per scheduler at two and three blocks an
// SM): per row and warp, the backward 421 and the forward 233, of which the
// heads' sums as a loop took 74 and 28, the IEEE sqrt and divisions ~35,
// 64-bit row arithmetic ~45 and 25, bf16 rounding in integer instructions
// ~25 and __expf's care for denormals 12. Unrolled sums (both of the
// backward's in one chain), rsqrt, pointers stepped a row at a time, the
// paired conversion and ex2.ftz leave 277 and 131: backward 0.203 -> 0.142
// ms, forward 0.099 -> 0.066 ms (hydra-bench step's "GDN input" piece).
constexpr int kQkvLanes = 32, kQkvRowsY = 8, kQkvVec = 4, kQkvRun = 32;
constexpr int kQkvStages = 8, kQkvFwdStages = 16;
static_assert((kQkvStages & (kQkvStages - 1)) == 0 && (kQkvFwdStages & (kQkvFwdStages - 1)) == 0,
              "a row's stage is its index masked");
constexpr size_t kQkvFwdSmem = (size_t)kQkvFwdStages * kQkvRowsY * kQkvLanes * 8;
// The backward's dynamic shared memory: the row pipeline, reused after the
// walk for the block's dw/db sums (8 rows x (K + 1) x 128 floats, 20 KB at K 4).
constexpr size_t kQkvBwdSmem = (size_t)kQkvStages * kQkvRowsY * kQkvLanes * (8 + 16);
static_assert(kQkvBwdSmem >= (size_t)kQkvRowsY * 5 * kQkvLanes * kQkvVec * sizeof(float),
              "the dw/db sums must fit in the pipeline's shared memory");

template <int VEC, int KM>
struct QkvLane {
    int c0, G, which, off;
    bool on, nrm;
    float wr[KM][VEC], bs[VEC];  // the conv's taps j = 0 .. K-1 and bias, this lane's channels
    __device__ __forceinline__ QkvLane(const QkvShape &p, const float *__restrict__ w,
                                       const float *__restrict__ bias) {
        c0 = (blockIdx.x * kQkvLanes + threadIdx.x) * VEC;
        on = c0 < p.C;  // off lanes still take part in the shuffles
        G = p.D / VEC;
        const int hh = on ? c0 / p.D : 0;  // head of the 3H (q heads, k heads, v heads)
        which = hh / p.H;
        off = c0 - which * p.I;
        nrm = p.norm_qk && which < 2;
#pragma unroll
        for (int j = 0; j < KM; j++)
#pragma unroll
            for (int k = 0; k < VEC; k++) wr[j][k] = on ? w[(int64_t)(c0 + k) * KM + j] : 0.0f;
#pragma unroll
        for (int k = 0; k < VEC; k++) bs[k] = on && bias ? bias[c0 + k] : 0.0f;
    }
    // x at (b, t) (the cache before 0), zero at t >= T or off.
    __device__ __forceinline__ void tap(const QkvShape &p, const uint16_t *x, const uint16_t *cache,
                                        int b, int t, float (&f)[VEC]) const {
        if (on && t < p.T) {
            qkv_tap<VEC>(p, x, cache, b, t, c0, f);
        } else {
#pragma unroll
            for (int k = 0; k < VEC; k++) f[k] = 0.0f;
        }
    }
    // u = bias + sum_j w[j] x[t - (K-1) + j] with xw[j] = x[t - (K-1) + j],
    // taps in order (as the CPU op).
    __device__ __forceinline__ void conv(const float (&xw)[KM][VEC], float (&u)[VEC]) const {
#pragma unroll
        for (int k = 0; k < VEC; k++) u[k] = bs[k];
#pragma unroll
        for (int j = 0; j < KM; j++)
#pragma unroll
            for (int k = 0; k < VEC; k++) u[k] += wr[j][k] * xw[j][k];
    }
};

// a[0 .. N-2] = a[1 .. N-1], a[N-1] = v.
template <int N, int VEC>
__device__ __forceinline__ void shift_in(float (&a)[N][VEC], const float (&v)[VEC]) {
#pragma unroll
    for (int j = 0; j + 1 < N; j++)
#pragma unroll
        for (int k = 0; k < VEC; k++) a[j][k] = a[j + 1][k];
#pragma unroll
    for (int k = 0; k < VEC; k++) a[N - 1][k] = v[k];
}

// Forward (as gdn_qkv_fwd_kernel). Bytes a (b, t, c): x 2 + q/k/v 2 = 4;
// (8, 2048, 2304): 151 MB -> 0.036 ms at 4.2 TB/s.
template <int VEC, int KM>
__global__ void __launch_bounds__(kQkvLanes *kQkvRowsY, 3)
    gdn_qkv_fwd_run_kernel(QkvShape p, const uint16_t *__restrict__ x,
                           const float *__restrict__ w, const float *__restrict__ bias,
                           const uint16_t *__restrict__ cache, uint16_t *__restrict__ q,
                           uint16_t *__restrict__ k, uint16_t *__restrict__ v) {
    static_assert(VEC == 4, "the row pipeline copies 8 bytes of x a lane");
    const QkvLane<VEC, KM> L(p, w, bias);
    uint16_t *out = L.which == 0 ? q : L.which == 1 ? k : v;
    // The row pipeline (as the backward's): kQkvFwdStages rows of x in
    // flight per thread row, in shared memory, each thread reading back what
    // it copied.
    extern __shared__ __align__(16) unsigned char fwd_smem[];
    typedef uint2 XStage[kQkvRowsY][kQkvLanes];  // 4 bf16 of x a lane
    XStage *sx = (XStage *)fwd_smem;
    const int tx = threadIdx.x, ty = threadIdx.y;
    const uint32_t sx0 = smem_addr(&sx[0][ty][tx]);
    const int per = (p.T + kQkvRun - 1) / kQkvRun;
    const int64_t runs = (int64_t)p.B * per;
    for (ConvWalk r(per); r.p < runs; r.next()) {
        const int b = (int)r.b, s0 = r.i * kQkvRun, n = min(kQkvRun, p.T - s0);  // rows s0 + i
        const int64_t row0 = (int64_t)b * p.T + s0;
        // Row s0 + i into stage i % kQkvFwdStages for i = 0, 1, ... in turn
        // (xi: row i's x; none past the run: zeros). Pointers stepped a row
        // at a time, and the stages' shared addresses, cost fewer
        // instructions than the 64-bit index arithmetic of each row.
        const uint16_t *xi = x + row0 * p.C + L.c0;
        int i = 0;
        auto issue = [&]() {
            const bool live = L.on && i < n;
            cp_async8_zfill(sx0 + (uint32_t)(i & (kQkvFwdStages - 1)) * (uint32_t)sizeof(XStage),
                            live ? xi : x, live ? 8 : 0);
            cp_async_commit_group();
            xi += p.C;
            i++;
        };
#pragma unroll
        for (int j = 0; j < kQkvFwdStages; j++) issue();
        // x rows t - (K-1) .. t once row t is shifted in; before the run's
        // first row, slots 1 .. KM-1 hold rows s0 - (K-1) .. s0 - 1.
        float xw[KM][VEC];
#pragma unroll
        for (int j = 0; j < KM; j++) L.tap(p, x, cache, b, j > 0 ? s0 - KM + j : p.T, xw[j]);
        uint16_t *o = out + row0 * p.I + L.off;  // row s0 + t of the output
        for (int t = 0; t < n; t++) {            // uniform over the warp
            cp_async_wait_group<kQkvFwdStages - 1>();  // row t's group is complete
            float xn[VEC];
            {
                const uint2 xr = sx[t & (kQkvFwdStages - 1)][ty][tx];
                xn[0] = __uint_as_float(xr.x << 16), xn[1] = __uint_as_float(xr.x & 0xffff0000u);
                xn[2] = __uint_as_float(xr.y << 16), xn[3] = __uint_as_float(xr.y & 0xffff0000u);
            }
            shift_in(xw, xn);
            float y[VEC];
            L.conv(xw, y);  // reads the row: its stage may be refilled
            issue();
            float ss = 0.0f;
#pragma unroll
            for (int e = 0; e < VEC; e++) {
                y[e] *= sigm_fast(y[e]);
                ss += y[e] * y[e];
            }
            if (p.norm_qk) {
                ss = group_sum_unrolled(ss, L.G);
                if (L.nrm) {  // 1 / max(||s||, eps)
                    const float sc = fminf(rsqrtf(ss), p.inv_eps);
#pragma unroll
                    for (int e = 0; e < VEC; e++) y[e] *= sc;
                }
            }
            if (L.on) st_bf_rn<VEC>(o, y);
            o += p.I;
        }
        cp_async_wait_group<0>();  // the run's trailing (empty) groups
    }
}

// Backward, the conv output's gradient and the short conv's backward in one
// pass (du never goes to memory). For a normalised head with n = ||s||,
// s = silu(u): ds = g / n - s (s . g) / n^3 (n >= eps) or g / eps (below,
// where the clamp passes no gradient to n); du = ds silu'(u). Then, as
// short_conv.cu's backward:
//   dx[s]  (=|+=) sum_j w[j] du[s + K-1-j]      (j = 0 .. K-1 in order)
//   dw[j]  += du[t] x[t - (K-1) + j]           (the cache before position 0)
//   db     += du[t]
// A run [s0, s1) owns the dx, dw and db terms of its rows; its dx rows need
// du up to s1 + K - 2, so the run computes K - 1 rows of du past its end
// (zero past T) that only its dx uses. A thread sums dw and db over its rows
// in order; the block adds its 8 thread rows in order into partial[
// blockIdx.y] = [dw (C, K) | db (C)], colsum_kernel the partials in order:
// the order depends on the sizes alone. Bytes a (b, t, c): x 2 + dq/dk/dv 4
// + dx 4 = 10 (set_dx; 14 adding; 8 with dx in bf16): (8, 2048, 2304): 377 MB
// -> 0.09 ms. BF16: dx is bf16, written (the f32 sums rounded).
template <int VEC, int KM, bool BF16>
__global__ void __launch_bounds__(kQkvLanes *kQkvRowsY, 2)
    gdn_qkv_bwd_run_kernel(QkvShape p, int set_dx, const uint16_t *__restrict__ x,
                           const float *__restrict__ w, const float *__restrict__ bias,
                           const uint16_t *__restrict__ cache, const float *__restrict__ dq,
                           const float *__restrict__ dk, const float *__restrict__ dv,
                           void *__restrict__ dx_, float *__restrict__ partial) {
    static_assert(VEC == 4, "the row pipeline copies 8 bytes of x and 16 of d qkv a lane");
    const QkvLane<VEC, KM> L(p, w, bias);
    const float *gp = L.which == 0 ? dq : L.which == 1 ? dk : dv;
    // The row pipeline: kQkvStages rows of x (bf16) and of this lane's
    // gradient (f32) in flight per thread row, in shared memory; each thread
    // reads back only what it copied.
    extern __shared__ __align__(16) unsigned char bwd_smem[];
    typedef uint2 XStage[kQkvRowsY][kQkvLanes];   // 4 bf16 of x a lane
    typedef float4 GStage[kQkvRowsY][kQkvLanes];  // 4 f32 of d q/k/v a lane
    XStage *sx = (XStage *)bwd_smem;
    GStage *sg = (GStage *)(bwd_smem + sizeof(XStage) * kQkvStages);
    const int tx = threadIdx.x, ty = threadIdx.y;
    const uint32_t sx0 = smem_addr(&sx[0][ty][tx]), sg0 = smem_addr(&sg[0][ty][tx]);
    typedef typename std::conditional<BF16, uint16_t, float>::type dx_t;
    float acc[KM + 1][VEC];  // acc[j]: dw tap j; acc[KM]: db
#pragma unroll
    for (int j = 0; j <= KM; j++)
#pragma unroll
        for (int k = 0; k < VEC; k++) acc[j][k] = 0.0f;
    const int per = (p.T + kQkvRun - 1) / kQkvRun;
    const int64_t runs = (int64_t)p.B * per;
    for (ConvWalk r(per); r.p < runs; r.next()) {
        const int b = (int)r.b, s0 = r.i * kQkvRun, s1 = min(s0 + kQkvRun, p.T);
        // Rows s0 + t of du walked: t < nw; those with data (below T): t < nd.
        const int nw = s1 - s0 + KM - 1, nd = min(s1 + KM - 1, p.T) - s0;
        const int64_t row0 = (int64_t)b * p.T + s0;
        // Row s0 + i into stage i % kQkvStages for i = 0, 1, ... in turn
        // (xi, gi: row i's x and gradient; none past nd: zeros). Pointers
        // stepped a row at a time, as in the forward.
        const uint16_t *xi = x + row0 * p.C + L.c0;
        const float *gi = gp ? gp + row0 * p.I + L.off : nullptr;
        int i = 0;
        auto issue = [&]() {
            const uint32_t so = (uint32_t)(i & (kQkvStages - 1));
            const bool live = L.on && i < nd, glive = live && gi;
            cp_async8_zfill(sx0 + so * (uint32_t)sizeof(XStage), live ? xi : x, live ? 8 : 0);
            cp_async16_zfill(sg0 + so * (uint32_t)sizeof(GStage), glive ? gi : w, glive ? 16 : 0);
            cp_async_commit_group();
            xi += p.C;
            if (gi) gi += p.I;
            i++;
        };
#pragma unroll
        for (int j = 0; j < kQkvStages; j++) issue();
        // x and du at rows t - (K-1) .. t once row t is shifted in (as the
        // forward's window); du before s0 is never read by this run's dx.
        float xw[KM][VEC], duw[KM][VEC];
#pragma unroll
        for (int j = 0; j < KM; j++) {
            if (j > 0) L.tap(p, x, cache, b, s0 - KM + j, xw[j]);
#pragma unroll
            for (int k = 0; k < VEC; k++) duw[j][k] = 0.0f;
        }
        dx_t *dxo = dx_ ? (dx_t *)dx_ + row0 * p.C + L.c0 : nullptr;  // dx row s0 + t - (K-1)
        for (int t = 0; t < nw; t++) {  // uniform over the warp
            const int st = t & (kQkvStages - 1);
            cp_async_wait_group<kQkvStages - 1>();  // row t's group is complete
            float xn[VEC], gn[VEC];
            {
                const uint2 xr = sx[st][ty][tx];
                const float4 gr = sg[st][ty][tx];
                xn[0] = __uint_as_float(xr.x << 16), xn[1] = __uint_as_float(xr.x & 0xffff0000u);
                xn[2] = __uint_as_float(xr.y << 16), xn[3] = __uint_as_float(xr.y & 0xffff0000u);
                gn[0] = gr.x, gn[1] = gr.y, gn[2] = gr.z, gn[3] = gr.w;
            }
            shift_in(xw, xn);
            float d[VEC];
            if (t < nd) {  // uniform
                float uu[VEC], sg_[VEC], sv[VEC];
                L.conv(xw, uu);
                float ss = 0.0f, dot = 0.0f;
#pragma unroll
                for (int e = 0; e < VEC; e++) {
                    sg_[e] = sigm_fast(uu[e]);
                    sv[e] = uu[e] * sg_[e];
                    ss += sv[e] * sv[e];
                    dot += sv[e] * gn[e];
                }
                float nv = 1.0f, kc = 0.0f;
                if (p.norm_qk) {
                    group_sum2(ss, dot, L.G, tx);
                    if (L.nrm) {  // n = ||s|| = 1 / rs
                        const float rs = rsqrtf(ss);
                        const bool clamped = rs > p.inv_eps;  // n < eps
                        nv = clamped ? p.inv_eps : rs;
                        kc = clamped ? 0.0f : dot * rs * rs * rs;
                    }
                }
#pragma unroll
                for (int e = 0; e < VEC; e++) {
                    const float ds = gn[e] * nv - sv[e] * kc;
                    d[e] = ds * sg_[e] * (1.0f + uu[e] * (1.0f - sg_[e]));
                }
            } else {
#pragma unroll
                for (int e = 0; e < VEC; e++) d[e] = 0.0f;
            }
            // The stage's values are in registers and used: refill it.
            issue();
            shift_in(duw, d);
            if (partial && t < s1 - s0) {  // the run's own rows: dw, db
#pragma unroll
                for (int j = 0; j < KM; j++)
#pragma unroll
                    for (int e = 0; e < VEC; e++) acc[j][e] += d[e] * xw[j][e];
#pragma unroll
                for (int e = 0; e < VEC; e++) acc[KM][e] += d[e];
            }
            if (dxo && t >= KM - 1) {  // dx row s0 + t - (K-1): du up to row t known
                float a[VEC];
#pragma unroll
                for (int e = 0; e < VEC; e++) a[e] = duw[KM - 1][e] * L.wr[0][e];
#pragma unroll
                for (int j = 1; j < KM; j++)  // du[s + K-1-j] = duw[KM-1-j], s = s0 + t - (K-1)
#pragma unroll
                    for (int e = 0; e < VEC; e++) a[e] += duw[KM - 1 - j][e] * L.wr[j][e];
                if (L.on) {
                    if constexpr (BF16) {
                        st_bf_rn<VEC>(dxo, a);
                    } else {
                        if (!set_dx) {
                            float o[VEC];
                            ld_f<VEC>(dxo, o);
#pragma unroll
                            for (int e = 0; e < VEC; e++) a[e] = o[e] + a[e];
                        }
                        st_f<VEC>(dxo, a);
                    }
                }
                dxo += p.C;
            }
        }
        cp_async_wait_group<0>();  // the run's trailing (empty) groups, before the next run's
    }
    if (!partial) return;  // uniform over the grid
    constexpr int kW = kQkvLanes * VEC;  // channels a block
    // The pipeline's shared memory, reused (kQkvBwdSmem covers both).
    float(*sm)[(KM + 1) * kW] = (float(*)[(KM + 1) * kW])bwd_smem;
    __syncthreads();  // every thread row is past its last stage read
#pragma unroll
    for (int j = 0; j <= KM; j++)
#pragma unroll
        for (int e = 0; e < VEC; e++) sm[ty][j * kW + tx * VEC + e] = acc[j][e];
    __syncthreads();
    const int64_t ncols = (int64_t)p.C * KM + p.C;
    float *outp = partial + (int64_t)blockIdx.y * ncols;
    for (int e = ty * kQkvLanes + tx; e < (KM + 1) * kW; e += kQkvLanes * kQkvRowsY) {
        const int j = e / kW, c = blockIdx.x * kW + (e - j * kW);
        if (c >= p.C) continue;
        float t = 0.0f;
#pragma unroll
        for (int r = 0; r < kQkvRowsY; r++) t += sm[r][e];
        if (j < KM)
            outp[(int64_t)c * KM + j] = t;
        else
            outp[(int64_t)p.C * KM + c] = t;
    }
}

// ---------------------------------------------------------------- gates
// alpha (rows, H), beta (rows, H) f32 = sigmoid(ab[:, :H]), sigmoid(ab[:, H:]),
// ab (rows, 2H) bf16; a thread an element of ab.
__global__ void gdn_gates_fwd_kernel(int64_t rows, int H, const uint16_t *__restrict__ ab,
                                     float *__restrict__ alpha, float *__restrict__ beta) {
    const int64_t n = rows * 2 * H;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = i / (2 * H);
        const int c = (int)(i - r * 2 * H);
        const float s = sigm(bf2f(ab[i]));
        if (c < H)
            alpha[r * H + c] = s;
        else
            beta[r * H + c - H] = s;
    }
}

// dab (rows, 2H) f32 (+)= [dalpha s (1 - s) | dbeta s (1 - s)], s recomputed
// from ab; dalpha or dbeta NULL: zero.
__global__ void gdn_gates_bwd_kernel(int64_t rows, int H, const uint16_t *__restrict__ ab,
                                     const float *__restrict__ dalpha,
                                     const float *__restrict__ dbeta, float *__restrict__ dab,
                                     int overwrite) {
    const int64_t n = rows * 2 * H;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = i / (2 * H);
        const int c = (int)(i - r * 2 * H);
        const float *d = c < H ? dalpha : dbeta;
        const float s = sigm(bf2f(ab[i]));
        const float g = d ? d[r * H + (c < H ? c : c - H)] * s * (1.0f - s) : 0.0f;
        dab[i] = overwrite ? g : dab[i] + g;
    }
}

QkvShape qkv_shape(const char *fn, int B, int T, int H, int D, int K, int norm_qk, float eps) {
    HY_REQUIRE(B >= 0 && T >= 0 && H >= 1 && D >= 1 && K >= 1 && K <= 16 && eps >= 0,
               "%s: bad sizes B %d T %d H %d D %d K %d eps %g (expected B, T >= 0, H, D >= 1, "
               "1 <= K <= 16, eps >= 0)",
               fn, B, T, H, D, K, (double)eps);
    QkvShape p;
    p.B = B, p.T = T, p.H = H, p.D = D, p.K = K, p.norm_qk = norm_qk, p.eps = eps;
    p.inv_eps = 1.0f / eps;
    p.I = H * D;
    p.C = 3 * p.I;
    size_t r = kQkvRowBytes / ((size_t)p.C * 4);
    p.R = (int)(r < 1 ? 1 : (r > kQkvMaxR ? kQkvMaxR : r));
    // The backward's shared memory (two f32 rows of C and four of H) within
    // the 227 KB a block may have.
    size_t smem = (2 * (size_t)p.R * p.C + (size_t)p.R * 4 * p.H) * sizeof(float);
    HY_REQUIRE(smem <= (size_t)227 << 10,
               "%s: H %d, D %d: a row of 3 H D = %d channels needs %zu bytes of shared memory "
               "in the backward, more than the 232448 a block may have",
               fn, H, D, p.C, smem);
    return p;
}

// Shared memory: `arrays` (R, C) f32 arrays (1 forward, 2 backward) and two
// (R, 2H) per-head arrays.
size_t qkv_smem(const QkvShape &p, int arrays) {
    return ((size_t)arrays * p.R * p.C + (size_t)p.R * 4 * p.H) * sizeof(float);
}

// Blocks: one per R-row group, at most the device's resident blocks. The
// attribute call and the occupancy query cost host time on every launch of
// these short kernels: their answer is kept per kernel and shared-memory size
// (process-wide: a process drives one GPU, as the training ranks do).
unsigned qkv_grid(const void *kernel, const QkvShape &p, size_t smem) {
    struct memo {
        const void *kernel;
        size_t smem;
        int per_sm;
    };
    static memo seen[16];
    static int n_seen = 0;
    int per_sm = -1;
    for (int i = 0; i < n_seen; i++)
        if (seen[i].kernel == kernel && seen[i].smem == smem) per_sm = seen[i].per_sm;
    if (per_sm < 0) {
        if (smem > 48 << 10)
            CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            (int)smem));
        CUDA_CHECK(
            cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kQkvThreads, smem));
        if (per_sm < 1) per_sm = 1;
        if (n_seen < 16) seen[n_seen++] = memo{kernel, smem, per_sm};
    }
    int64_t groups = ((int64_t)p.B * p.T + p.R - 1) / p.R;
    int64_t cap = (int64_t)sm_count() * per_sm;
    return (unsigned)(groups < cap ? (groups < 1 ? 1 : groups) : cap);
}

// The 16-byte path needs every head and the outputs' rows to start on 8
// channels, and 16-byte aligned pointers (NULL counts as aligned).
bool qkv_vec8(const QkvShape &p, std::initializer_list<const void *> ptrs) {
    bool ok = p.D % 8 == 0;
    for (const void *q : ptrs) ok = ok && aligned16(q);
    return ok;
}

// The transposed weights, in the caller's workspace.
const float *qkv_wt(const QkvShape &p, const float *w, void *work, cudaStream_t s) {
    float *wt = (float *)work;
    int64_t n = (int64_t)p.C * p.K;
    qkv_wt_kernel<<<(unsigned)((n + 255) / 256 < 1024 ? (n + 255) / 256 : 1024), 256, 0, s>>>(
        p.C, p.K, w, wt);
    LAUNCH_CHECK();
    return wt;
}

// The streaming kernels' shapes (see their comment); HY_GDN_QKV_SHARED=1 in
// the environment keeps the shared-memory kernels for every shape (to
// compare the two, and to test those kernels on the common shapes).
bool qkv_stream_ok(const QkvShape &p, std::initializer_list<const void *> ptrs) {
    const char *e = getenv("HY_GDN_QKV_SHARED");
    if (e && e[0] == '1') return false;
    const int G = p.D / kQkvVec;
    bool ok = p.K <= 4 && p.D % kQkvVec == 0 && G <= 32 && (G & (G - 1)) == 0;
    for (const void *q : ptrs) ok = ok && aligned16(q);
    return ok;
}

// Column blocks of 32 lanes; row blocks: one thread row a run, at most
// kQkvMaxParts row blocks (the backward's dw/db partials; a thread row
// then walks several runs). A function of the sizes alone (the partials'
// size and the order of their sums).
constexpr int kQkvMaxParts = 512;
dim3 qkv_stream_grid(const QkvShape &p) {
    const int64_t cb = (p.C / kQkvVec + kQkvLanes - 1) / kQkvLanes;
    const int64_t runs = (int64_t)p.B * ((p.T + kQkvRun - 1) / kQkvRun);
    int64_t rb = (runs + kQkvRowsY - 1) / kQkvRowsY;
    if (rb > kQkvMaxParts) rb = kQkvMaxParts;
    if (rb < 1) rb = 1;
    return dim3((unsigned)cb, (unsigned)rb);
}

// f(std::integral_constant<int, K>()) for K = 1 .. 4 (the streaming kernels'
// taps are compile-time constants).
template <class F>
void with_taps(int K, const F &f) {
    switch (K) {
    case 1: f(std::integral_constant<int, 1>()); break;
    case 2: f(std::integral_constant<int, 2>()); break;
    case 3: f(std::integral_constant<int, 3>()); break;
    default: f(std::integral_constant<int, 4>()); break;
    }
}

}  // namespace

extern "C" size_t hy_cuda_gdn_qkv_work_bytes(int H, int D, int K) {
    return ((size_t)3 * H * D * (size_t)K * sizeof(float) + 255) / 256 * 256;
}

extern "C" void hy_cuda_gdn_qkv_fwd(int B, int T, int H, int D, int K, int norm_qk, float eps,
                                    const void *qkv, const float *w, const float *bias,
                                    const void *cache, void *q, void *k, void *v, void *work,
                                    void *stream) {
    QkvShape p = qkv_shape("gdn_qkv_fwd", B, T, H, D, K, norm_qk, eps);
    if ((int64_t)B * T == 0) return;
    HY_REQUIRE(qkv && w && q && k && v && work,
               "gdn_qkv_fwd: a NULL pointer (qkv, w, q, k, v or work)");
    HY_REQUIRE(aligned16(work), "gdn_qkv_fwd: the workspace must be 16-byte aligned");
    cudaStream_t s = as_stream(stream);
    const uint16_t *xc = (const uint16_t *)qkv, *cc = K > 1 ? (const uint16_t *)cache : nullptr;
    uint16_t *qo = (uint16_t *)q, *ko = (uint16_t *)k, *vo = (uint16_t *)v;
    if (qkv_stream_ok(p, {qkv, q, k, v})) {
        const dim3 grid = qkv_stream_grid(p), block(kQkvLanes, kQkvRowsY);
        with_taps(K, [&](auto kc) {
            gdn_qkv_fwd_run_kernel<kQkvVec, decltype(kc)::value>
                <<<grid, block, kQkvFwdSmem, s>>>(p, xc, w, bias, cc, qo, ko, vo);
        });
        LAUNCH_CHECK();
        return;
    }
    const float *wt = qkv_wt(p, w, work, s);
    size_t smem = qkv_smem(p, 1);
    auto kern = qkv_vec8(p, {qkv, bias, q, k, v}) ? gdn_qkv_fwd_kernel<8> : gdn_qkv_fwd_kernel<1>;
    kern<<<qkv_grid((const void *)kern, p, smem), kQkvThreads, smem, s>>>(p, xc, wt, bias, cc, qo,
                                                                         ko, vo);
    LAUNCH_CHECK();
}

extern "C" void hy_cuda_gdn_qkv_du(int B, int T, int H, int D, int K, int norm_qk, float eps,
                                   const void *qkv, const float *w, const float *bias,
                                   const void *cache, const float *dq, const float *dk,
                                   const float *dv, float *du, void *work, void *stream) {
    QkvShape p = qkv_shape("gdn_qkv_du", B, T, H, D, K, norm_qk, eps);
    if ((int64_t)B * T == 0) return;
    HY_REQUIRE(qkv && w && du && work, "gdn_qkv_du: a NULL pointer (qkv, w, du or work)");
    HY_REQUIRE(aligned16(work), "gdn_qkv_du: the workspace must be 16-byte aligned");
    cudaStream_t s = as_stream(stream);
    const uint16_t *xc = (const uint16_t *)qkv, *cc = K > 1 ? (const uint16_t *)cache : nullptr;
    const float *wt = qkv_wt(p, w, work, s);
    size_t smem = qkv_smem(p, 2);
    auto kern =
        qkv_vec8(p, {qkv, bias, dq, dk, dv, du}) ? gdn_qkv_du_kernel<8> : gdn_qkv_du_kernel<1>;
    kern<<<qkv_grid((const void *)kern, p, smem), kQkvThreads, smem, s>>>(p, xc, wt, bias, cc, dq,
                                                                         dk, dv, du);
    LAUNCH_CHECK();
}

extern "C" void hy_cuda_gdn_gates_fwd(int rows, int H, const void *ab, float *alpha, float *beta,
                                      void *stream) {
    HY_REQUIRE(rows >= 0 && H >= 1, "gdn_gates_fwd: bad sizes rows %d, H %d", rows, H);
    if (rows == 0) return;
    HY_REQUIRE(ab && alpha && beta, "gdn_gates_fwd: a NULL pointer (ab, alpha or beta)");
    const int64_t n = (int64_t)rows * 2 * H;
    gdn_gates_fwd_kernel<<<stream_blocks(n), kThreads, 0, as_stream(stream)>>>(
        rows, H, (const uint16_t *)ab, alpha, beta);
    LAUNCH_CHECK();
}

extern "C" void hy_cuda_gdn_gates_bwd(int rows, int H, const void *ab, const float *dalpha,
                                      const float *dbeta, float *dab, int overwrite,
                                      void *stream) {
    HY_REQUIRE(rows >= 0 && H >= 1, "gdn_gates_bwd: bad sizes rows %d, H %d", rows, H);
    if (rows == 0 || !dab) return;
    HY_REQUIRE(ab, "gdn_gates_bwd: ab is NULL");
    const int64_t n = (int64_t)rows * 2 * H;
    gdn_gates_bwd_kernel<<<stream_blocks(n), kThreads, 0, as_stream(stream)>>>(
        rows, H, (const uint16_t *)ab, dalpha, dbeta, dab, overwrite);
    LAUNCH_CHECK();
}

// The fused backward's dw/db partials, or the fallback's du, transposed
// weights and short-conv partials: the larger, so that the size depends on
// the sizes alone (not on the pointers' alignment nor HY_GDN_QKV_SHARED).
extern "C" size_t hy_cuda_gdn_qkv_bwd_scratch_bytes(int B, int T, int H, int D, int K) {
    QkvShape p = qkv_shape("gdn_qkv_bwd", B, T, H, D, K, 0, 0.0f);
    const int64_t BT = (int64_t)B * T;
    if (BT == 0) return 0;
    const size_t ncols = (size_t)p.C * K + p.C;
    const size_t fused = (size_t)qkv_stream_grid(p).y * ncols * sizeof(float);
    const size_t du = ((size_t)BT * p.C * sizeof(float) + 255) / 256 * 256;
    const size_t fallback = du + hy_cuda_gdn_qkv_work_bytes(H, D, K) +
                            hy_cuda_short_conv_bwd_scratch_bytes(B, T, p.C, K);
    return fused > fallback ? fused : fallback;
}

extern "C" int hy_cuda_gdn_qkv_bwd_one_pass(int H, int D, int K, const void *qkv,
                                           const float *dq, const float *dk, const float *dv) {
    QkvShape p = qkv_shape("gdn_qkv_bwd_one_pass", 1, 1, H, D, K, 0, 0.0f);
    return qkv_stream_ok(p, {qkv, dq, dk, dv});
}

extern "C" void hy_cuda_gdn_qkv_bwd(int B, int T, int H, int D, int K, int norm_qk, float eps,
                                    const void *qkv, const float *w, const float *bias,
                                    const void *cache, const float *dq, const float *dk,
                                    const float *dv, float *dx, int set_dx, void *dx_bf16,
                                    float *dw, float *db, void *scratch, size_t scratch_bytes,
                                    void *stream) {
    QkvShape p = qkv_shape("gdn_qkv_bwd", B, T, H, D, K, norm_qk, eps);
    if ((int64_t)B * T == 0 || (!dx && !dx_bf16 && !dw && !db)) return;
    HY_REQUIRE(qkv && w, "gdn_qkv_bwd: a NULL pointer (qkv or w)");
    HY_REQUIRE(!(dx && dx_bf16), "gdn_qkv_bwd: dx and dx_bf16 both given (at most one)");
    HY_REQUIRE(!dx_bf16 || qkv_stream_ok(p, {qkv, dq, dk, dv, dx_bf16}),
               "gdn_qkv_bwd: dx in bf16 needs the one-pass shapes "
               "(hy_cuda_gdn_qkv_bwd_one_pass)");
    check_scratch("gdn_qkv_bwd", scratch, scratch_bytes,
                  hy_cuda_gdn_qkv_bwd_scratch_bytes(B, T, H, D, K));
    HY_REQUIRE(aligned16(scratch), "gdn_qkv_bwd: the scratch must be 16-byte aligned");
    cudaStream_t s = as_stream(stream);
    const uint16_t *xc = (const uint16_t *)qkv, *cc = K > 1 ? (const uint16_t *)cache : nullptr;
    const bool wb = dw || db;
    if (qkv_stream_ok(p, {qkv, dq, dk, dv, dx})) {
        const dim3 grid = qkv_stream_grid(p), block(kQkvLanes, kQkvRowsY);
        float *partial = wb ? (float *)scratch : nullptr;
        with_taps(K, [&](auto kc) {
            if (dx_bf16)
                gdn_qkv_bwd_run_kernel<kQkvVec, decltype(kc)::value, true>
                    <<<grid, block, kQkvBwdSmem, s>>>(p, 1, xc, w, bias, cc, dq, dk, dv, dx_bf16,
                                                      partial);
            else
                gdn_qkv_bwd_run_kernel<kQkvVec, decltype(kc)::value, false>
                    <<<grid, block, kQkvBwdSmem, s>>>(p, set_dx, xc, w, bias, cc, dq, dk, dv, dx,
                                                      partial);
        });
        LAUNCH_CHECK();
        if (wb) launch_colsum((int)grid.y, (int64_t)p.C * K + p.C, partial, (int64_t)p.C * K, dw, db, s);
        return;
    }
    // du, then the short conv's backward.
    const int64_t BT = (int64_t)B * T;
    const size_t du_bytes = ((size_t)BT * p.C * sizeof(float) + 255) / 256 * 256;
    const size_t work_bytes = hy_cuda_gdn_qkv_work_bytes(H, D, K);
    float *du = (float *)scratch;
    char *work = (char *)scratch + du_bytes;
    hy_cuda_gdn_qkv_du(B, T, H, D, K, norm_qk, eps, qkv, w, bias, cache, dq, dk, dv, du, work,
                       stream);
    const size_t cb = hy_cuda_short_conv_bwd_scratch_bytes(B, T, p.C, K);
    hy_cuda_short_conv_bwd(B, T, p.C, K, du, qkv, w, cache, dx, set_dx, dw, db,
                           wb ? work + work_bytes : nullptr, wb ? cb : 0, stream);
}
