// norms.cu: RMSNorm and the per-head L2 norm on the GPU (layers/rmsnorm.c, layers/l2norm.c;
// the contract of each entry point in hy_cuda_ops.h). Row reductions: G lanes of a warp per
// row (32 for long rows, fewer for short ones, e.g. 8 for a 64-wide bf16 head); RMSNorm's dw
// is one partial sum a block, added in a fixed order by colsum_kernel (ops_device.cuh):
// deterministic, no atomics. The unit layout and vector widths: ops.cu's header comment.
#include "hy_cuda_ops.h"
#include "ops_device.cuh"

namespace {

// ---------------------------------------------------------------- rmsnorm
// Each warp takes 32 / G rows at a time, G lanes per row; the loop bound is
// the same for the whole warp (the shuffles need every lane). a != NULL: the
// residual add before the norm in the same pass, x = bf16(a + b) written
// (the add's bits: hy_cuda_add_fwd's f32 sum, rounded once) and normalised
// from its rounded values: a kernel and a read of x fewer than the add then
// the norm, the same bits.
template <int VEC>
__global__ void rmsnorm_fwd_kernel(int64_t rows, int D, float eps, int G, const uint16_t *a,
                                   const uint16_t *b, uint16_t *x, const float *w, uint16_t *y,
                                   float *rstd) {
    int lane = threadIdx.x & 31, sub = lane & (G - 1), rpw = 32 / G;
    int64_t warp = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    int64_t nwarps = ((int64_t)gridDim.x * blockDim.x) >> 5;
    for (int64_t base = warp * rpw; base < rows; base += nwarps * rpw) {
        int64_t r = base + lane / G;
        bool ok = r < rows;
        uint16_t *xr = x + r * D;
        float ss = 0.0f, f[VEC], wf[VEC];
        if (ok)
            for (int c = sub * VEC; c < D; c += G * VEC) {
                if (a) {
                    float fb[VEC];
                    ld_bf<VEC>(a + r * D + c, f);
                    ld_bf<VEC>(b + r * D + c, fb);
#pragma unroll
                    for (int k = 0; k < VEC; k++) f[k] = bf2f(f2bf(f[k] + fb[k]));
                    st_bf<VEC>(xr + c, f);
                } else {
                    ld_bf<VEC>(xr + c, f);
                }
#pragma unroll
                for (int k = 0; k < VEC; k++) ss += f[k] * f[k];
            }
        ss = group_sum(ss, G);
        if (!ok) continue;
        float s = (float)(1.0 / sqrt((double)ss / D + (double)eps));
        if (rstd && sub == 0) rstd[r] = s;
        for (int c = sub * VEC; c < D; c += G * VEC) {
            ld_bf<VEC>(xr + c, f);  // this thread's own stores when a != NULL
            ld_f<VEC>(w + c, wf);
#pragma unroll
            for (int k = 0; k < VEC; k++) f[k] = f[k] * s * wf[k];
            st_bf<VEC>(y + r * D + c, f);
        }
    }
}

// The same for D = NIT * 256 (NIT <= 4): a warp a row, lane l owns columns l 8 + 256 i (the
// columns, order of the sums and reduction of rmsnorm_fwd_kernel<8> with G = 32: the same
// bits), the row's loads issued together and its values kept in registers (the loop kernel
// re-reads x and, with the add, waits for each column group's loads behind its stores).
template <int NIT>
__global__ void rmsnorm_fwd_reg_kernel(int64_t rows, int D, float eps, const uint16_t *a,
                                       const uint16_t *b, uint16_t *x, const float *w,
                                       uint16_t *y, float *rstd) {
    const int lane = threadIdx.x & 31;
    const int64_t warp = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const int64_t nwarps = ((int64_t)gridDim.x * blockDim.x) >> 5;
    for (int64_t r = warp; r < rows; r += nwarps) {
        float f[NIT][8];
        if (a) {
            float fb[NIT][8];
#pragma unroll
            for (int i = 0; i < NIT; i++) {
                const int64_t at = r * D + lane * 8 + i * 256;
                ld_bf<8>(a + at, f[i]);
                ld_bf<8>(b + at, fb[i]);
            }
#pragma unroll
            for (int i = 0; i < NIT; i++) {
#pragma unroll
                for (int k = 0; k < 8; k++) f[i][k] = bf2f(f2bf(f[i][k] + fb[i][k]));
                st_bf<8>(x + r * D + lane * 8 + i * 256, f[i]);
            }
        } else {
#pragma unroll
            for (int i = 0; i < NIT; i++) ld_bf<8>(x + r * D + lane * 8 + i * 256, f[i]);
        }
        float ss = 0.0f;
#pragma unroll
        for (int i = 0; i < NIT; i++)
#pragma unroll
            for (int k = 0; k < 8; k++) ss += f[i][k] * f[i][k];
        ss = group_sum(ss, 32);
        const float s = (float)(1.0 / sqrt((double)ss / D + (double)eps));
        if (rstd && lane == 0) rstd[r] = s;
#pragma unroll
        for (int i = 0; i < NIT; i++) {
            const int c = lane * 8 + i * 256;
            float wf[8];
            ld_f<8>(w + c, wf);
#pragma unroll
            for (int k = 0; k < 8; k++) f[i][k] = f[i][k] * s * wf[k];
            st_bf<8>(y + r * D + c, f[i]);
        }
    }
}

constexpr int kNormWarps = 8;
constexpr int kNormMaxD = 12288;  // 48 KiB of shared memory for one warp's dw row

// Number of dw partials (= blocks of the backward), a function of rows only. At most
// kNormMaxParts: measured on an H200 at (16384, 768) (`hydra-bench step`'s RMSNorm piece, the
// backward a call), 1,024 blocks of 16 rows took 0.065-0.066 ms, 256 of 64 rows 0.057, 128 of
// 128 rows 0.056 and 64 of 256 rows 0.069 (fewer blocks than SMs): each block zeroes, sums and
// writes a (D) partial that colsum_kernel reads back, so fewer and longer blocks do less of it
// as long as they fill the GPU (two blocks an SM at 256 threads).
constexpr int64_t kNormMaxParts = 256;

int rmsnorm_parts(int64_t rows) {
    int64_t p = (rows + kNormWarps - 1) / kNormWarps;
    if (p > kNormMaxParts) p = kNormMaxParts;
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
// kernel's, in the same order. dx16 != NULL: bf16(dx) is written there too
// (the residual add's rounded copy for its branch, without a pass of its own).
template <int NIT>
__global__ void __launch_bounds__(kNormWarps * 32)
    rmsnorm_bwd_reg_kernel(int64_t rows, int D, int64_t per, const float *dy, const uint16_t *x,
                           const float *w, const float *rstd, float *dx, uint16_t *dx16,
                           float *partial) {
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
            if (dx16) st_bf<8>(dx16 + r * D + c, o);
        }
    }
    if (partial) block_partial(sm, warps, D, partial);
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

}  // namespace

// ================================================================ entry points
// ---------------------------------------------------------------- rmsnorm
static void rmsnorm_fwd(int rows, int D, float eps, const void *a, const void *b, void *x,
                        const float *w, void *y, float *rstd, cudaStream_t s) {
    const uint16_t *ai = (const uint16_t *)a, *bi = (const uint16_t *)b;
    uint16_t *xi = (uint16_t *)x, *yo = (uint16_t *)y;
    bool vec = D % 8 == 0 && aligned16(x) && aligned16(w) && aligned16(y) &&
               (!a || (aligned16(a) && aligned16(b)));
    const int nit = D % 256 == 0 ? D / 256 : 0;
    if (vec && nit >= 1 && nit <= 4) {
        auto kern = nit == 1 ? rmsnorm_fwd_reg_kernel<1>
                  : nit == 2 ? rmsnorm_fwd_reg_kernel<2>
                  : nit == 3 ? rmsnorm_fwd_reg_kernel<3>
                             : rmsnorm_fwd_reg_kernel<4>;
        kern<<<blocks_for(rows, kThreads / 32), kThreads, 0, s>>>(rows, D, eps, ai, bi, xi, w,
                                                                   yo, rstd);
    } else if (vec) {
        int G = lanes_per_row(D, 8);
        rmsnorm_fwd_kernel<8><<<blocks_for(rows, kThreads / G), kThreads, 0, s>>>(
            rows, D, eps, G, ai, bi, xi, w, yo, rstd);
    } else {
        int G = lanes_per_row(D, 1);
        rmsnorm_fwd_kernel<1><<<blocks_for(rows, kThreads / G), kThreads, 0, s>>>(
            rows, D, eps, G, ai, bi, xi, w, yo, rstd);
    }
    LAUNCH_CHECK();
}

extern "C" void hy_cuda_rmsnorm_fwd(int rows, int D, float eps, const void *x, const float *w,
                                    void *y, float *rstd, void *stream) {
    HY_REQUIRE(rows >= 0 && D > 0, "cuda rmsnorm_fwd: bad sizes rows %d, D %d", rows, D);
    if (rows == 0) return;
    rmsnorm_fwd(rows, D, eps, nullptr, nullptr, (void *)x, w, y, rstd, as_stream(stream));
}

extern "C" void hy_cuda_add_rmsnorm_fwd(int rows, int D, float eps, const void *a, const void *b,
                                        void *x, const float *w, void *y, float *rstd,
                                        void *stream) {
    HY_REQUIRE(rows >= 0 && D > 0, "cuda add_rmsnorm_fwd: bad sizes rows %d, D %d", rows, D);
    HY_REQUIRE(a && b && x, "cuda add_rmsnorm_fwd: a, b and x are required");
    if (rows == 0) return;
    rmsnorm_fwd(rows, D, eps, a, b, x, w, y, rstd, as_stream(stream));
}

extern "C" size_t hy_cuda_rmsnorm_bwd_scratch_bytes(int rows, int D) {
    if (rows <= 0 || D <= 0) return 0;
    return (size_t)rmsnorm_parts(rows) * (size_t)D * sizeof(float);
}

extern "C" void hy_cuda_rmsnorm_bwd_x16(int rows, int D, const float *dy, const void *x,
                                        const float *w, const float *rstd, float *dx, void *dx16,
                                        float *dw, void *scratch, size_t scratch_bytes,
                                        void *stream) {
    HY_REQUIRE(rows >= 0 && D > 0, "cuda rmsnorm_bwd: bad sizes rows %d, D %d", rows, D);
    HY_REQUIRE(D <= kNormMaxD, "cuda rmsnorm_bwd: D = %d is above the supported %d", D,
               kNormMaxD);
    HY_REQUIRE(!dx16 || dx, "cuda rmsnorm_bwd: a bf16 copy of dx needs dx");
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
    bool vec = D % 8 == 0 && aligned16(dy) && aligned16(x) && aligned16(w) && aligned16(dx) &&
               aligned16(dx16);
    const int nit = D % 256 == 0 ? D / 256 : 0;
    if (vec && nit >= 1 && nit <= 4) {
        auto kern = nit == 1 ? rmsnorm_bwd_reg_kernel<1>
                  : nit == 2 ? rmsnorm_bwd_reg_kernel<2>
                  : nit == 3 ? rmsnorm_bwd_reg_kernel<3>
                             : rmsnorm_bwd_reg_kernel<4>;
        kern<<<parts, warps * 32, smem, s>>>(rows, D, per, dy, xi, w, rstd, dx,
                                             (uint16_t *)dx16, partial);
        dx16 = nullptr;  // written
    } else if (vec)
        rmsnorm_bwd_kernel<8><<<parts, warps * 32, smem, s>>>(rows, D, per, dy, xi, w, rstd, dx,
                                                              partial);
    else
        rmsnorm_bwd_kernel<1><<<parts, warps * 32, smem, s>>>(rows, D, per, dy, xi, w, rstd, dx,
                                                              partial);
    LAUNCH_CHECK();
    // The other kernels round dx in a pass of their own (the same bits).
    if (dx16) hy_cuda_f32_to_bf16(dx, dx16, (size_t)rows * D, s);
    if (dw) launch_colsum(parts, D, partial, D, dw, nullptr, s);
}

extern "C" void hy_cuda_rmsnorm_bwd(int rows, int D, const float *dy, const void *x,
                                    const float *w, const float *rstd, float *dx, float *dw,
                                    void *scratch, size_t scratch_bytes, void *stream) {
    hy_cuda_rmsnorm_bwd_x16(rows, D, dy, x, w, rstd, dx, nullptr, dw, scratch, scratch_bytes,
                            stream);
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

