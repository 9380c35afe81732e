// short_conv.cu: the causal depthwise short convolution of layers/short_conv.c
// on the GPU (see hy_cuda_ops.h for the contract; the kernels' layout is
// described in ops.cu's header).
#include "hy_cuda_ops.h"
#include "ops_device.cuh"

namespace {

constexpr int kMaxConvK = 16;      // short_conv taps held in registers

// ---------------------------------------------------------------- short_conv
// Blocks of (kConvLanes, kConvRows) = (32, 8) threads, grid (column blocks,
// row blocks). Lane tx owns VEC channels c0 = (blockIdx.x * 32 + tx) * VEC;
// thread row ty takes groups of kConvU = 4 consecutive rows (b, s0 .. s0+3)
// of a sequence, from group blockIdx.y * 8 + ty with a stride of
// gridDim.y * 8 groups (ConvWalk: no division in the loop), so the 8 warps
// of a block take 32 consecutive rows at a time. A group loads its
// kConvU + K - 1 taps (the K - 1 shared with the neighbouring group hit
// L1/L2: DRAM sees each row once), then its kConvU rows of the other
// operands, then computes: every load of a group is in flight at once
// (4 rows a thread; the old kernels walked 16 rows a thread with a sliding
// window, one row's loads in flight at a time, which is too few bytes in
// flight to cover the DRAM latency). The weights sit in registers
// (forward) or shared memory (backward, short of registers). Positions s < 0 read the bf16 cache (B, C, K-1), or zero without one.
// The kernels are compiled for each K <= 4 (EXACT: K == KM, every tap
// index and test a compile-time constant) and once for K <= kMaxConvK
// (KM = 16, one channel a thread). Taps live in right-aligned slots so that
// every register index is a compile-time constant for any K <= KM (slots
// that K < KM leaves unused are never loaded nor read).
constexpr int kConvLanes = 32;
constexpr int kConvRows = 8;
constexpr int kConvU = 4;                // rows a group
constexpr int kConvTargetBlocks = 2048;  // backward grid: several waves of 132 SMs
constexpr int kConvMaxParts = 1024;

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

// y[b,s,c] = bias[c] + sum_j w[c,j] x[b, s-(K-1)+j, c], taps j = 0 .. K-1 in
// order (as the CPU), K <= KM. Tap j sits in slot jj = j + KM - K (wr[jj]);
// xs[i] holds x[b, s0 - (KM-1) + i], so row u's tap slot jj is xs[u + jj].
// Bytes a (b, t, c): x 2 + y 2 = 4 (the other K - 1 taps of x hit L1/L2).
// (8, 2048, 2304): 151 MB -> 0.036 ms at 4.2 TB/s.
template <int VEC, int KM, bool EXACT>
__global__ void __launch_bounds__(kConvLanes *kConvRows, 2)
    conv_fwd_kernel(int B, int T, int C, int K_, const uint16_t *__restrict__ x,
                    const float *__restrict__ w, const float *__restrict__ bias,
                    const uint16_t *__restrict__ cache, uint16_t *__restrict__ y) {
    constexpr int NS = kConvU + KM - 1;
    const int K = EXACT ? KM : K_;
    const int c0 = (blockIdx.x * kConvLanes + threadIdx.x) * VEC;
    if (c0 >= C) return;  // C % VEC == 0; no barrier below
    float wr[KM][VEC], bs[VEC];
#pragma unroll
    for (int jj = 0; jj < KM; jj++)
#pragma unroll
        for (int k = 0; k < VEC; k++)
            wr[jj][k] = jj >= KM - K ? w[(int64_t)(c0 + k) * K + jj - (KM - K)] : 0.0f;
#pragma unroll
    for (int k = 0; k < VEC; k++) bs[k] = bias ? bias[c0 + k] : 0.0f;
    const int per = (T + kConvU - 1) / kConvU;
    const int64_t groups = (int64_t)B * per;
    for (ConvWalk q(per); q.p < groups; q.next()) {
        const int s0 = q.i * kConvU;
        float xs[NS][VEC];
#pragma unroll
        for (int i = 0; i < NS; i++) {
            const int t = s0 - (KM - 1) + i;
            if (i >= KM - K && t < T) conv_tap<VEC>(x, cache, q.b, t, c0, T, C, K, xs[i]);
        }
#pragma unroll
        for (int u = 0; u < kConvU; u++) {
            if (s0 + u >= T) continue;
            float acc[VEC];
#pragma unroll
            for (int k = 0; k < VEC; k++) acc[k] = bs[k];
#pragma unroll
            for (int jj = 0; jj < KM; jj++)  // taps j = 0 .. K-1 in order
                if (jj >= KM - K)
#pragma unroll
                    for (int k = 0; k < VEC; k++) acc[k] += wr[jj][k] * xs[u + jj][k];
            st_bf<VEC>(y + (q.b * T + s0 + u) * C + c0, acc);
        }
    }
}

// One pass over the rows for all three gradients. g[i] holds
// dy[b, s0 + i - (KM-K)] (zero outside [0, T)), so row s = s0 + u, tap j
// reads dy[b, s+K-1-j] from slot u + KM-1-j, and gives
//   dx[b,s]  += sum_j g w[j]           (j = 0 .. K-1 in order, as before)
//   dw[j]    += g x[b,s]   where s+K-1-j in [0, T) (the CPU's pairs)
//   db       += dy[b,s]    (tap j = K-1)
// With the cache and dw wanted, each sequence starts `pre` = K-1 rows early
// (s < 0: x from the cache, no dx). dx NULL: no dx; partial NULL: no dw/db.
// set_dx: dx = instead of += (every row and channel is written; a fresh
// gradient buffer needs no zeroing and is not read).
// A thread sums dw/db over its rows in order; the block adds its 8 thread
// rows in order (shared memory) into partial[blockIdx.y, :] = [dw (C, K) |
// db (C)], and colsum_kernel adds the partials in order: the order depends
// on (B, T, C) and the cache alone, never on VEC (same bits either path).
// Bytes a (b, t, c), all three gradients: dy 4 + x 2 + dx 4 + 4 = 14 (the
// other K - 1 taps of dy hit L1/L2). (8, 2048, 2304), K = 4: 528 MB ->
// 0.126 ms at 4.2 TB/s; the partials add 114 * 11520 * 4 B written and read
// again (10.5 MB, 2.5 us) and colsum's launch. dx alone: 453 MB -> 0.108 ms.
template <int VEC, int KM, bool EXACT>
__global__ void __launch_bounds__(kConvLanes *kConvRows, 2)
    conv_bwd_kernel(int B, int T, int C, int K_, int pre, int set_dx, const float *__restrict__ dy,
                    const uint16_t *__restrict__ x, const float *__restrict__ w,
                    const uint16_t *__restrict__ cache, float *__restrict__ dx,
                    float *__restrict__ partial) {
    constexpr int NS = kConvU + KM - 1;
    const int K = EXACT ? KM : K_;
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int c0 = (blockIdx.x * kConvLanes + tx) * VEC;
    const bool on = c0 < C;  // C % VEC == 0
    const bool want_dx = dx != nullptr, want_wb = partial != nullptr;
    constexpr int kW = kConvLanes * VEC;  // channels a block
    // The block's weights, sw[j][cc] = w[blockIdx.x * kW + cc, j], in shared
    // memory (registers are the limit here): read once a group, conflict-free.
    __shared__ __align__(16) float sw[KM][kW];
    for (int e = ty * kConvLanes + tx; e < KM * kW; e += kConvLanes * kConvRows) {
        const int j = e / kW, c = blockIdx.x * kW + (e - j * kW);
        sw[j][e - j * kW] = want_dx && j < K && c < C ? w[(int64_t)c * K + j] : 0.0f;
    }
    __syncthreads();
    float acc[KM + 1][VEC];  // acc[j]: dw tap j; acc[KM]: db
#pragma unroll
    for (int j = 0; j <= KM; j++)
#pragma unroll
        for (int k = 0; k < VEC; k++) acc[j][k] = 0.0f;
    const int per = (T + pre + kConvU - 1) / kConvU;
    const int64_t groups = (int64_t)B * per;
    if (on) {
        for (ConvWalk q(per); q.p < groups; q.next()) {
            const int s0 = q.i * kConvU - pre;
            const int64_t row0 = q.b * T;  // row of (b, 0)
            // Every load of the group first: dy taps, x rows, dx rows.
            float g[NS][VEC], xv[kConvU][VEC], o[kConvU][VEC];
#pragma unroll
            for (int i = 0; i < NS; i++) {
                const int t = s0 + i - (KM - K);
                if (i >= KM - K && (unsigned)t < (unsigned)T) {
                    ld_f<VEC>(dy + (row0 + t) * C + c0, g[i]);
                } else {
#pragma unroll
                    for (int k = 0; k < VEC; k++) g[i][k] = 0.0f;
                }
            }
            if (want_wb) {
#pragma unroll
                for (int u = 0; u < kConvU; u++)
                    if (s0 + u < T) conv_tap<VEC>(x, cache, q.b, s0 + u, c0, T, C, K, xv[u]);
            }
            if (want_dx) {
#pragma unroll
                for (int u = 0; u < kConvU; u++) {
                    if (set_dx || s0 + u < 0 || s0 + u >= T) {
#pragma unroll
                        for (int k = 0; k < VEC; k++) o[u][k] = 0.0f;
                    } else {
                        ld_f<VEC>(dx + (row0 + s0 + u) * C + c0, o[u]);
                    }
                }
                float wr[KM][VEC];
#pragma unroll
                for (int j = 0; j < KM; j++)
                    if (j < K) ld_f<VEC>(&sw[j][tx * VEC], wr[j]);
#pragma unroll
                for (int u = 0; u < kConvU; u++) {
                    if (s0 + u < 0 || s0 + u >= T) continue;  // (unrolled: a skip, no jump)
                    float a[VEC];
#pragma unroll
                    for (int k = 0; k < VEC; k++) a[k] = 0.0f;
#pragma unroll
                    for (int j = 0; j < KM; j++)
                        if (j < K)
#pragma unroll
                            for (int k = 0; k < VEC; k++) a[k] += g[u + KM - 1 - j][k] * wr[j][k];
#pragma unroll
                    for (int k = 0; k < VEC; k++) o[u][k] += a[k];
                    st_f<VEC>(dx + (row0 + s0 + u) * C + c0, o[u]);
                }
            }
            if (want_wb) {
#pragma unroll
                for (int u = 0; u < kConvU; u++) {
                    const int s = s0 + u;
#pragma unroll
                    for (int j = 0; j < KM; j++) {
                        if (j < K && (unsigned)(s + K - 1 - j) < (unsigned)T && s < T)
#pragma unroll
                            for (int k = 0; k < VEC; k++)
                                acc[j][k] += g[u + KM - 1 - j][k] * xv[u][k];
                        if (j == K - 1 && s >= 0 && s < T)
#pragma unroll
                            for (int k = 0; k < VEC; k++) acc[KM][k] += g[u + KM - 1 - j][k];
                    }
                }
            }
        }
    }
    if (!want_wb) return;  // uniform over the grid
    __shared__ float sm[kConvRows][(KM + 1) * kW];
#pragma unroll
    for (int j = 0; j < KM; j++)
        if (j < K)
#pragma unroll
            for (int k = 0; k < VEC; k++) sm[ty][j * kW + tx * VEC + k] = acc[j][k];
#pragma unroll
    for (int k = 0; k < VEC; k++) sm[ty][K * kW + tx * VEC + k] = acc[KM][k];
    __syncthreads();
    const int64_t ncols = (int64_t)C * K + C;
    float *out = partial + (int64_t)blockIdx.y * ncols;
    for (int e = ty * kConvLanes + tx; e < (K + 1) * kW; e += kConvLanes * kConvRows) {
        const int j = e / kW, c = blockIdx.x * kW + (e - j * kW);
        if (c >= C) continue;
        float t = 0.0f;
#pragma unroll
        for (int r = 0; r < kConvRows; r++) t += sm[r][e];
        if (j < K)
            out[(int64_t)c * K + j] = t;
        else
            out[(int64_t)C * K + c] = t;
    }
}

// Number of dw/db partials = row blocks of the backward: about
// kConvTargetBlocks blocks with the VEC = 4 path's column blocks, at least
// 128 rows (4 groups a thread row) a block. A function of (B*T, C) only: the
// scratch size and the order of the sums depend on the sizes alone.
int conv_parts(int64_t BT, int C) {
    int64_t cb = (C + 4 * kConvLanes - 1) / (4 * kConvLanes);
    int64_t p = (BT + 127) / 128, q = (kConvTargetBlocks + cb - 1) / cb;
    if (p > q) p = q;
    if (p > kConvMaxParts) p = kConvMaxParts;
    if (p < 1) p = 1;
    return (int)p;
}

}  // namespace

// ================================================================ entry points
// ---------------------------------------------------------------- short_conv
static void conv_check(const char *op, int B, int T, int C, int K) {
    HY_REQUIRE(B >= 0 && T >= 0 && C > 0 && K >= 1 && K <= kMaxConvK,
               "%s: bad sizes B %d, T %d, C %d, K %d (K must be in [1, %d])", op, B, T, C, K,
               kMaxConvK);
}

// The kernel for K: compiled for K = 1 .. 4 exactly, the generic one (scalar,
// up to kMaxConvK taps) above.
template <int VEC, class Launch>
static void conv_dispatch(int K, const Launch &launch) {
    switch (K) {
    case 1: launch.template go<VEC, 1, true>(); break;
    case 2: launch.template go<VEC, 2, true>(); break;
    case 3: launch.template go<VEC, 3, true>(); break;
    case 4: launch.template go<VEC, 4, true>(); break;
    default: launch.template go<1, kMaxConvK, false>(); break;
    }
}

struct ConvFwdLaunch {
    dim3 grid, block;
    cudaStream_t s;
    int B, T, C, K;
    const uint16_t *x;
    const float *w, *bias;
    const uint16_t *cache;
    uint16_t *y;
    template <int VEC, int KM, bool EXACT>
    void go() const {
        conv_fwd_kernel<VEC, KM, EXACT><<<grid, block, 0, s>>>(B, T, C, K, x, w, bias, cache, y);
    }
};

extern "C" void hy_cuda_short_conv_fwd(int B, int T, int C, int K, const void *x,
                                       const float *w, const float *bias, const void *cache,
                                       void *y, void *stream) {
    conv_check("cuda short_conv_fwd", B, T, C, K);
    int64_t BT = (int64_t)B * T;
    if (BT == 0) return;
    cudaStream_t s = as_stream(stream);
    const uint16_t *xi = (const uint16_t *)x, *ci = K > 1 ? (const uint16_t *)cache : nullptr;
    const int vec = K <= 4 && C % 8 == 0 && aligned16(x) && aligned16(y) ? 8 : 1;
    const int64_t cb = (C + kConvLanes * vec - 1) / (kConvLanes * vec);
    int64_t rb = ((int64_t)sm_count() * 8 + cb - 1) / cb;  // about 4 waves at 2 blocks an SM
    const int64_t groups = (int64_t)B * ((T + kConvU - 1) / kConvU);
    const int64_t need = (groups + kConvRows - 1) / kConvRows;
    if (rb > need) rb = need;
    if (rb > 65535) rb = 65535;
    ConvFwdLaunch L{dim3((unsigned)cb, (unsigned)rb), dim3(kConvLanes, kConvRows), s, B, T, C, K,
                    xi, w, bias, ci, (uint16_t *)y};
    if (vec == 8)
        conv_dispatch<8>(K, L);
    else
        conv_dispatch<1>(K, L);
    LAUNCH_CHECK();
}

extern "C" size_t hy_cuda_short_conv_bwd_scratch_bytes(int B, int T, int C, int K) {
    int64_t BT = (int64_t)B * T;
    if (BT <= 0 || C <= 0 || K <= 0) return 0;
    return (size_t)conv_parts(BT, C) * (size_t)((int64_t)C * K + C) * sizeof(float);
}

struct ConvBwdLaunch {
    dim3 grid, block;
    cudaStream_t s;
    int B, T, C, K, pre, set_dx;
    const float *dy;
    const uint16_t *x;
    const float *w;
    const uint16_t *cache;
    float *dx, *partial;
    template <int VEC, int KM, bool EXACT>
    void go() const {
        conv_bwd_kernel<VEC, KM, EXACT><<<grid, block, 0, s>>>(B, T, C, K, pre, set_dx, dy, x, w,
                                                               cache, dx, partial);
    }
};

extern "C" void hy_cuda_short_conv_bwd(int B, int T, int C, int K, const float *dy,
                                       const void *x, const float *w, const void *cache,
                                       float *dx, int set_dx, float *dw, float *db,
                                       void *scratch, size_t scratch_bytes, void *stream) {
    conv_check("cuda short_conv_bwd", B, T, C, K);
    int64_t BT = (int64_t)B * T;
    const bool wb = dw || db;
    if (BT == 0 || (!dx && !wb)) return;
    cudaStream_t s = as_stream(stream);
    float *partial = nullptr;
    if (wb) {
        check_scratch("cuda short_conv_bwd", scratch, scratch_bytes,
                      hy_cuda_short_conv_bwd_scratch_bytes(B, T, C, K));
        partial = (float *)scratch;
    }
    const int parts = conv_parts(BT, C);
    const uint16_t *xi = (const uint16_t *)x, *ci = K > 1 ? (const uint16_t *)cache : nullptr;
    const int pre = wb && ci ? K - 1 : 0;  // the cache's rows feed dw only
    const int vec = K <= 4 && C % 4 == 0 && aligned16(dy) && aligned16(dx) && aligned8(x) ? 4 : 1;
    const int cb = (C + kConvLanes * vec - 1) / (kConvLanes * vec);
    ConvBwdLaunch L{dim3((unsigned)cb, (unsigned)parts), dim3(kConvLanes, kConvRows), s, B, T, C,
                    K, pre, set_dx, dy, xi, w, ci, dx, partial};
    if (vec == 4)
        conv_dispatch<4>(K, L);
    else
        conv_dispatch<1>(K, L);
    LAUNCH_CHECK();
    if (wb) launch_colsum(parts, (int64_t)C * K + C, partial, (int64_t)C * K, dw, db, s);
}
