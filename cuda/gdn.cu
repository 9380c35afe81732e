// gdn.cu: the gated delta rule on the GPU, chunkwise WY form (chunk 64), forward and backward.
//
// The function is the one of layers/gdn.c (see its header comment for the chunk equations).
// Per (b, h) and chunk of L <= 64 rows that starts from the state S (Dv x Dk):
//   g_i = sum_{m <= i} log alpha_m,  gamma_i = exp(g_i),  G_ij = exp(g_i - g_j)
//   M = strict_lower(diag(beta) K K^T * G),  A = (I + M)^-1
//   W = A diag(beta gamma) K,  U = A diag(beta) V          (chunk-local)
//   N = U - W S^T                                          (the "new values")
//   O = diag(gamma) Q S^T + causal_incl(Q K^T * G) N
//   S_end = gamma_last S + N^T diag(exp(g_last - g)) K
// A partial last chunk is padded to 64 rows with k = q = v = 0, beta = 0, alpha = 1: the padded
// rows then contribute nothing and leave g and the state unchanged.
//
// Kernels (grids; "chunk" kernels are parallel over every (b, h, chunk)):
//   forward
//   1. wy_kernel        (NC, B*H), 256 threads: g, M (tensor cores), A = (I + M)^-1 in fp32 by
//                       16 x 16 blocks (CUDA cores), then W = (A diag(beta gamma)) K and
//                       U = (A diag(beta)) V on tensor cores with A split into bf16 hi + lo (K, V
//                       are exact bf16), so W and U are fp32-accurate. Stores g (fp32), W as a
//                       bf16 hi/lo pair (W = hi + lo to ~2^-16), U in fp32.
//   2. state_fwd_kernel (D/BV, B*H), 256 threads: sequential over chunks, carries S (fp32, in
//                       mma accumulators) for BV rows of S (rows of S evolve independently, so
//                       Dv is split over blocks when B*H is small). Stores each chunk's start
//                       state (bf16) and N (bf16); writes S_out (fp32). The products with the
//                       carried state use split bf16 (hi/lo) operands, so the state recurrence is
//                       fp32-accurate although it runs on bf16 tensor cores.
//   3. out_kernel<fwd>  (NC, B*H), 256 threads: O from Q, K, the chunk's start state and N.
//   backward (hy_cuda_gdn_bwd recomputes 1 and 2 first; hy_cuda_gdn_bwd_saved reads their
//   results from the forward's workspace)
//   4. out_kernel<bwd>  dN_loc = causal_incl(Q K^T * G)^T dO                     (fp32)
//   5. state_bwd_kernel (D/BV, B*H), 256 threads: reverse sequential pass over chunks carrying
//                       dH = dL/dS (fp32, hi/lo products like 2.): for each chunk, stores dH at
//                       its end (bf16), dN = dN_loc + diag(exp(g_last - g)) K dH^T (fp32, in place
//                       over dN_loc), then dH <- gamma_last dH + dO^T diag(gamma) Q - dN^T W.
//                       Writes dS0.
//   6. dqk_kernel       (NC, B*H), 256 threads: dq (final), the k gradient of the output and
//                       state terms (partial, into dk), dW = -dN S (fp32 workspace) and the
//                       g-gradient terms of those parts (workspace).
//   7. wy_bwd_kernel    (NC, B*H), 256 threads: through the WY factors: A again, then
//                       dB_V = A^T dN and dB_K = A^T dW on tensor cores,
//                       dM = -(dB_V U^T + dB_K W^T), then dv, dbeta, the rest of dk and dg, and
//                       dalpha = reverse-cumsum(dg) / alpha.
//   1r./7r.             reference versions of 1. and 7. (per-column triangular solves on CUDA
//                       cores; the first GPU-validated version). 1r. is the default forward
//                       (faster than 1. on an H200), 7. the default backward (see wy_mode);
//                       tests and HY_GDN_REFERENCE_WY=1 / HY_GDN_FAST_WY=1 select either kind.
// Tensor cores: mma.sync.m16n8k16 bf16 x bf16 -> fp32 with ldmatrix operand loads, everywhere a
// matrix product appears; the triangular solves and all decay factors are fp32 on CUDA cores.
//
// Gradient derivation (per chunk; dH = dL/dS_end, dN the total gradient of N):
//   dN  = causal(Q K^T G)^T dO + diag(G_last) K dH^T
//   dS  = gamma_last dH + dO^T diag(gamma) Q - dN^T W            (to the previous chunk)
//   dQ  = diag(gamma) dO S + (dP * G) K,   dP = dO N^T (causal incl)
//   dK  = (dP * G)^T Q + diag(G_last) N dH + diag(beta gamma) dB_K + E K + E^T K
//   dW  = -dN S,  dB_V = A^T dN,  dB_K = A^T dW,  dM = -A^T dA A^T = -(dB_V U^T + dB_K W^T)
//   dV  = diag(beta) dB_V,  E = dM * beta_i G (strict lower)
//   dbeta_i = sum_v dB_V V + gamma_i sum_k dB_K K + sum_j dM_ij (k_i.k_j) G_ij
//   dg_i: + sum_k Q_ik gamma_i (dO S)_ik  + rows - cols of (dP * P)  + rows - cols of (dM * M)
//         + beta_i gamma_i sum_k dB_K K;  the last row also gets gamma_last sum(dH * S) and
//         sum_j e_j, while row j loses e_j = G_last,j sum_k (N dH)_jk K_jk
//   dlog alpha_m = sum_{i >= m in the chunk} dg_i.
//
// Workspace (per chunk of 64 rows, all chunks of all heads; see ws_layout): g, W hi/lo, U, the
// chunk start states (bf16, (D, D) per chunk), N (bf16); backward adds dN (fp32), the chunk-end
// state gradients (bf16), dW (fp32) and the partial dg (fp32).
#include <cuda_bf16.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <algorithm>
#include <vector>

#include "check.cuh"
#include "hy_cuda_gdn.h"

namespace {

typedef __nv_bfloat16 bf16;
constexpr int CH = 64;        // chunk length (rows)
constexpr int LDL = CH + 8;   // row stride of a (64, 64) bf16 tile in shared memory
// Row stride of the fp32 (64, 64) KG tile of the fast WY kernels: with 72 floats the float2
// accumulator pairs of a half warp (4 rows x 4 pairs) fall on 32 distinct banks (64 put
// all 8 rows of a warp on the same 8 banks).
constexpr int LKG = CH + 8;
constexpr unsigned FULL = 0xffffffffu;

// ---------------------------------------------------------------- arguments
struct Args {
    int B, T, H, NC;
    const bf16 *q, *k, *v, *dO;
    const float *alpha, *beta, *S0, *dS;
    bf16 *o;
    float *S_out, *dq, *dk, *dv, *dalpha, *dbeta, *dS0;
    // workspace
    float *G;     // (chunks, 64)      cumulative log decay
    bf16 *Whi;    // (chunks, 64, D)   W = Whi + Wlo
    bf16 *Wlo;
    float *U;     // (chunks, 64, D)
    bf16 *Sc;     // (chunks, D, D)    state at the start of each chunk
    bf16 *N;      // (chunks, 64, D)   new values
    float *dN;    // (chunks, 64, D)   dN_loc, then dN
    bf16 *dHc;    // (chunks, D, D)    dL/dS at the end of each chunk
    float *dW;    // (chunks, 64, D)
    float *dG;    // (chunks, 64)      partial dL/dg from dqk_kernel
};

// ---------------------------------------------------------------- small helpers
__device__ __forceinline__ float bf2f(bf16 x) { return __bfloat162float(x); }
__device__ __forceinline__ bf16 f2bf(float x) { return __float2bfloat16_rn(x); }

__device__ __forceinline__ void st_bf2(bf16 *p, float a, float b) {
    *reinterpret_cast<__nv_bfloat162 *>(p) = __floats2bfloat162_rn(a, b);
}

// x = hi + lo with hi = bf16(x), lo = bf16(x - hi): two bf16 operands carry ~16 mantissa bits.
__device__ __forceinline__ void st_split2(bf16 *hi, bf16 *lo, float a, float b) {
    __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
    *reinterpret_cast<__nv_bfloat162 *>(hi) = h;
    *reinterpret_cast<__nv_bfloat162 *>(lo) =
        __floats2bfloat162_rn(a - __low2float(h), b - __high2float(h));
}

__device__ __forceinline__ void st_f2(float *p, float a, float b) {
    *reinterpret_cast<float2 *>(p) = make_float2(a, b);
}

__device__ __forceinline__ uint32_t smem_u32(const void *p) {
    return (uint32_t)__cvta_generic_to_shared(p);
}

// ---------------------------------------------------------------- async copies
// 16 bytes global -> shared; ok = false writes 16 zero bytes (src is then not read).
__device__ __forceinline__ void cp16(void *dst, const void *src, bool ok) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(dst)), "l"(src),
                 "r"(ok ? 16 : 0)
                 : "memory");
}
__device__ __forceinline__ void cp_commit() {
    asm volatile("cp.async.commit_group;\n" ::: "memory");
}
__device__ __forceinline__ void cp_wait_all() {
    asm volatile("cp.async.wait_group 0;\n" ::: "memory");
}

// `rows` rows of `row_bytes` bytes (a multiple of 16) from global (row stride gstride bytes) to
// shared (row stride sstride bytes), by the whole block.
__device__ __forceinline__ void cp_rows(void *dst, int sstride, const void *src, size_t gstride,
                                        int rows, int row_bytes) {
    const int per = row_bytes / 16, n = rows * per;
    for (int idx = threadIdx.x; idx < n; idx += blockDim.x) {
        const int r = idx / per, c = (idx % per) * 16;
        cp16((char *)dst + (size_t)r * sstride + c, (const char *)src + (size_t)r * gstride + c,
             true);
    }
}

// The 64 token rows t0 + i of head (b, h) of a (B, T, H, D) bf16 tensor (tok0 = the token index
// of row 0), columns [col0, col0 + ncols), into s[i * ld + c]; rows i >= L are zero-filled.
__device__ __forceinline__ void cp_tok(bf16 *s, int ld, const bf16 *src, size_t tok0, int H, int D,
                                       int L, int col0, int ncols) {
    const int per = ncols / 8, n = CH * per;
    for (int idx = threadIdx.x; idx < n; idx += blockDim.x) {
        const int i = idx / per, c = (idx % per) * 8;
        const bool ok = i < L;
        cp16(s + i * ld + c, ok ? src + (tok0 + (size_t)i * H) * D + col0 + c : src, ok);
    }
}

// ---------------------------------------------------------------- tensor-core tiles
__device__ __forceinline__ void ldsm4(uint32_t (&r)[4], const bf16 *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_u32(p))
                 : "memory");
}
__device__ __forceinline__ void ldsm4t(uint32_t (&r)[4], const bf16 *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_u32(p))
                 : "memory");
}

__device__ __forceinline__ void ldsm2(uint32_t (&r)[2], const bf16 *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n"
                 : "=r"(r[0]), "=r"(r[1])
                 : "r"(smem_u32(p))
                 : "memory");
}
__device__ __forceinline__ void ldsm2t(uint32_t (&r)[2], const bf16 *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n"
                 : "=r"(r[0]), "=r"(r[1])
                 : "r"(smem_u32(p))
                 : "memory");
}

// c += a b for one m16n8k16 tile (fp32 accumulate).
__device__ __forceinline__ void mma_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// A operand (16 x 16) of the logical matrix A[m][k] at (m0, k0).
// KM = false: stored s[m * ld + k] (row-major);  KM = true: stored s[k * ld + m] (A^T row-major).
template <bool KM>
__device__ __forceinline__ void load_a(uint32_t (&a)[4], const bf16 *s, int ld, int m0, int k0) {
    const int l = threadIdx.x & 31;
    if (!KM) {
        ldsm4(a, s + (m0 + (l & 15)) * ld + k0 + (l >> 4) * 8);
    } else {
        const int j = l >> 3, r = l & 7;
        ldsm4t(a, s + (k0 + r + (j >> 1) * 8) * ld + m0 + (j & 1) * 8);
    }
}

// B operand of two n8 tiles (16 x 16) of the logical matrix B[k][n] at (k0, n0):
// b[0], b[1] for columns n0..n0+7, b[2], b[3] for n0+8..n0+15.
// KN = false: stored s[n * ld + k] (B^T row-major);  KN = true: stored s[k * ld + n].
template <bool KN>
__device__ __forceinline__ void load_b(uint32_t (&b)[4], const bf16 *s, int ld, int k0, int n0) {
    const int l = threadIdx.x & 31, j = l >> 3, r = l & 7;
    if (!KN)
        ldsm4(b, s + (n0 + r + (j >> 1) * 8) * ld + k0 + (j & 1) * 8);
    else
        ldsm4t(b, s + (k0 + r + (j & 1) * 8) * ld + n0 + (j >> 1) * 8);
}

// B operand of one n8 tile (16 x 8) at (k0, n0): b[0], b[1]. Layouts as load_b.
template <bool KN>
__device__ __forceinline__ void load_b1(uint32_t (&b)[2], const bf16 *s, int ld, int k0, int n0) {
    const int l = threadIdx.x & 31, j = (l >> 3) & 1, r = l & 7;  // lanes 16..31: ignored
    if (!KN)
        ldsm2(b, s + (n0 + r) * ld + k0 + j * 8);
    else
        ldsm2t(b, s + (k0 + r + j * 8) * ld + n0);
}

// One warp: acc (16 MT x 8 NT at (m0, n0)) += A[m0.., 0..K) B[0..K, n0..).
template <int MT, int NT, int K, bool AKM, bool BKN>
__device__ __forceinline__ void mma_tile(float (&acc)[MT][NT][4], const bf16 *As, int lda, int m0,
                                         const bf16 *Bs, int ldb, int n0) {
    static_assert(K % 16 == 0, "tile shape");
#pragma unroll
    for (int k = 0; k < K; k += 16) {
        uint32_t a[MT][4], b[(NT + 1) / 2][4];
#pragma unroll
        for (int mt = 0; mt < MT; mt++) load_a<AKM>(a[mt], As, lda, m0 + 16 * mt, k);
#pragma unroll
        for (int np = 0; np < NT / 2; np++) load_b<BKN>(b[np], Bs, ldb, k, n0 + 16 * np);
        if (NT & 1) {
            uint32_t b1[2];
            load_b1<BKN>(b1, Bs, ldb, k, n0 + 8 * (NT - 1));
            b[NT / 2][0] = b1[0];
            b[NT / 2][1] = b1[1];
        }
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int nt = 0; nt < NT; nt++)
                mma_bf16(acc[mt][nt], a[mt], b[nt >> 1][2 * (nt & 1)],
                         b[nt >> 1][2 * (nt & 1) + 1]);
    }
}

// Visit a warp's accumulators: f(row, col, half, x0, x1) for the pair (row, col), (row, col + 1);
// half = 0 for rows m0 + 16 mt + lane/4, 1 for the rows 8 below.
template <int MT, int NT, class F>
__device__ __forceinline__ void for_acc(float (&acc)[MT][NT][4], int m0, int n0, F f) {
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int h = 0; h < 2; h++)
                f(m0 + 16 * mt + g + 8 * h, n0 + 8 * nt + 2 * t, h, acc[mt][nt][2 * h],
                  acc[mt][nt][2 * h + 1]);
}

template <int MT, int NT>
__device__ __forceinline__ void scale_acc(float (&acc)[MT][NT][4], float s) {
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) acc[mt][nt][e] *= s;
}

// Sum over the 4 lanes of a quad (the lanes that share accumulator rows).
__device__ __forceinline__ float quad_sum(float x) {
    x += __shfl_xor_sync(FULL, x, 1);
    return x + __shfl_xor_sync(FULL, x, 2);
}
// Sum over the 8 lanes that share accumulator columns (lane / 4 varies).
__device__ __forceinline__ float col_sum(float x) {
    x += __shfl_xor_sync(FULL, x, 4);
    x += __shfl_xor_sync(FULL, x, 8);
    return x + __shfl_xor_sync(FULL, x, 16);
}
__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(FULL, x, o);
    return x;
}

// Warp 0 of a chunk block: g (cumulative log decay; padded rows repeat g_{L-1}), beta (0 on
// padded rows) and alpha (1 on padded rows) into shared memory.
__device__ __forceinline__ void chunk_decay(const Args &a, size_t tok0, int L, float *sg,
                                            float *sb, float *sa) {
    const int lane = threadIdx.x & 31;
    float la[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int i = 2 * lane + r;
        const bool ok = i < L;
        const size_t ti = tok0 + (size_t)i * a.H;
        const float al = ok ? a.alpha[ti] : 1.f;
        la[r] = logf(fmaxf(al, 1e-38f));  // the CPU op clamps alpha = 0 the same way
        sb[i] = ok ? a.beta[ti] : 0.f;
        if (sa) sa[i] = al;
    }
    float s = la[0] + la[1];
#pragma unroll
    for (int off = 1; off < 32; off <<= 1) {
        const float t = __shfl_up_sync(FULL, s, off);
        if (lane >= off) s += t;
    }
    float ex = __shfl_up_sync(FULL, s, 1);
    if (lane == 0) ex = 0.f;
    sg[2 * lane] = ex + la[0];
    sg[2 * lane + 1] = ex + la[0] + la[1];
    __syncwarp();
    const float last = sg[L - 1];
    __syncwarp();
    if (2 * lane >= L) sg[2 * lane] = last;
    if (2 * lane + 1 >= L) sg[2 * lane + 1] = last;
}

__device__ __forceinline__ void chunk_coords(const Args &a, int c, int bh, int &L, size_t &tok0,
                                             size_t &ci) {
    const int b = bh / a.H, h = bh % a.H, t0 = c * CH;
    L = min(CH, a.T - t0);
    tok0 = ((size_t)b * a.T + t0) * a.H + h;
    ci = (size_t)bh * a.NC + c;
}

// ================================================================ 1. chunk-local WY factors
// A = (I + M)^-1 for M = diag(rb) KG (KG 64 x 64 fp32, strictly lower, row-major stride 64; rb
// the row scales, beta) into sA (fp32, stride 64, strict upper part 0), by blocks of 16: the
// diagonal blocks by forward substitution (one thread per column), then the blocks below by
// block diagonals,
//   A_ab = -A_aa sum_{l = b}^{a - 1} M_al A_lb        (a > b; uses blocks of smaller distance).
// M is never stored: each row's sum over KG is scaled by its rb once, which saves the 16 KB a
// stored M took (the backward kernel needs KG itself, and two 64 x 64 fp32 tiles would keep it
// at one block an SM). sX: 768 floats of scratch. Needs >= 64 threads; ends with
// __syncthreads().
__device__ void invert_unit_lower64(const float *sKG, const float *rb, float *sA, float *sX) {
    const int tid = threadIdx.x, nthr = blockDim.x;
    if (tid < CH) {
        const int o = (tid >> 4) * 16, c = tid & 15;
        float x[16];
#pragma unroll
        for (int r = 0; r < 16; r++) {
            float s = 0.f;  // rows above c stay 0: their x_j are all 0
#pragma unroll
            for (int j = 0; j < r; j++) s += sKG[(o + r) * LKG + o + j] * x[j];
            x[r] = (r == c ? 1.f : 0.f) - rb[o + r] * s;
        }
#pragma unroll
        for (int r = 0; r < 16; r++) sA[(o + r) * CH + o + c] = x[r];
    }
    for (int idx = tid; idx < CH * CH; idx += nthr)
        if (((idx & 63) >> 4) > ((idx >> 6) >> 4)) sA[idx] = 0.f;  // blocks above the diagonal
    __syncthreads();
    for (int d = 1; d < 4; d++) {
        const int n = (4 - d) * 256;  // pairs (a, b) = (b + d, b), b < 4 - d; 16 x 16 each
        for (int idx = tid; idx < n; idx += nthr) {
            const int b = idx >> 8, r = (idx >> 4) & 15, c = idx & 15, a = b + d;
            float s = 0.f;
            for (int l = b * 16; l < a * 16; l++)
                s += sKG[(a * 16 + r) * LKG + l] * sA[l * CH + b * 16 + c];
            sX[idx] = rb[a * 16 + r] * s;
        }
        __syncthreads();
        for (int idx = tid; idx < n; idx += nthr) {
            const int b = idx >> 8, r = (idx >> 4) & 15, c = idx & 15, a = b + d;
            float s = 0.f;
#pragma unroll
            for (int l = 0; l < 16; l++)
                s += sA[(a * 16 + r) * CH + a * 16 + l] * sX[b * 256 + l * 16 + c];
            sA[(a * 16 + r) * CH + b * 16 + c] = -s;
        }
        __syncthreads();
    }
}

// 8 warps over a (64 x 64) product: rows 16 (w % 4), columns 32 (w / 4).
__device__ __forceinline__ int sq_m0(int warp) { return 16 * (warp & 3); }
__device__ __forceinline__ int sq_n0(int warp) { return 32 * (warp >> 2); }

// D = 64: 71.5 KB, three blocks an SM (one pair of hi/lo tiles serves W, then U; M is not
// stored, see invert_unit_lower64).
template <int D>
struct WySmem {
    static constexpr int LD = D + 8;
    static constexpr size_t K = 0, V = K + CH * LD * 2, KG = V + CH * LD * 2,
                            A = KG + CH * LKG * 4, X = A + CH * CH * 4, A_HI = X + 768 * 4,
                            A_LO = A_HI + CH * LDL * 2, G = A_LO + CH * LDL * 2, B = G + CH * 4,
                            TOTAL = B + CH * 4;
    static_assert(D != 64 || TOTAL <= 75 * 1024, "three blocks an SM at D = 64");
};

// ((A diag(scale)) K) for the (64, D) bf16 tile sK, with the fp32 left factor split into bf16 hi
// + lo in sAhi/sAlo (K is exact in bf16): fp32-accurate. 8 warps, each 16 rows x D/2 columns;
// f(i, col, x0, x1) gets each accumulator pair. Starts and ends with __syncthreads() around its
// use of sAhi/sAlo, so two calls can share them.
template <int D, class Scale, class F>
__device__ __forceinline__ void a_scaled_times(const float *sA, Scale scale, bf16 *sAhi,
                                               bf16 *sAlo, const bf16 *sK, F f) {
    constexpr int LD = D + 8, NT = D / 16;
    const int tid = threadIdx.x, warp = tid >> 5;
    __syncthreads();  // sAhi/sAlo free, sA complete
    for (int idx = tid; idx < CH * CH / 2; idx += 256) {
        const int i = idx / (CH / 2), j = (idx % (CH / 2)) * 2;
        st_split2(sAhi + i * LDL + j, sAlo + i * LDL + j, sA[i * CH + j] * scale(j),
                  sA[i * CH + j + 1] * scale(j + 1));
    }
    __syncthreads();
    const int m0 = 16 * (warp & 3), n0 = (warp >> 2) * (D / 2);
    float acc[1][NT][4] = {};
    mma_tile<1, NT, CH, false, true>(acc, sAhi, LDL, m0, sK, LD, n0);
    mma_tile<1, NT, CH, false, true>(acc, sAlo, LDL, m0, sK, LD, n0);
    for_acc(acc, m0, n0, [&](int i, int k, int, float &x0, float &x1) { f(i, k, x0, x1); });
    __syncthreads();
}

// g, then KG = strict_lower(K K^T * G) (tensor cores), A = (I + diag(beta) KG)^-1 (fp32), and
// W = (A diag(beta gamma)) K, U = (A diag(beta)) V on tensor cores with the fp32 left factor
// split into bf16 hi + lo (K and V are exact in bf16): W and U are fp32-accurate.
// Stores g (fp32), W as a bf16 hi/lo pair, U (fp32).
template <int D>
__global__ void __launch_bounds__(256, D == 64 ? 3 : 2) wy_kernel(Args a) {
    using Sm = WySmem<D>;
    static_assert(Sm::TOTAL <= 227 * 1024, "shared memory per block");
    constexpr int LD = Sm::LD;
    extern __shared__ __align__(16) unsigned char smem[];
    bf16 *sK = (bf16 *)(smem + Sm::K), *sV = (bf16 *)(smem + Sm::V);
    float *sKG = (float *)(smem + Sm::KG), *sA = (float *)(smem + Sm::A);
    float *sX = (float *)(smem + Sm::X);
    bf16 *sAhi = (bf16 *)(smem + Sm::A_HI), *sAlo = (bf16 *)(smem + Sm::A_LO);
    float *sg = (float *)(smem + Sm::G), *sb = (float *)(smem + Sm::B);
    const int tid = threadIdx.x, warp = tid >> 5;
    int L;
    size_t tok0, ci;
    chunk_coords(a, blockIdx.x, blockIdx.y, L, tok0, ci);
    cp_tok(sK, LD, a.k, tok0, a.H, D, L, 0, D);
    cp_tok(sV, LD, a.v, tok0, a.H, D, L, 0, D);
    cp_commit();
    if (warp == 0) chunk_decay(a, tok0, L, sg, sb, nullptr);
    cp_wait_all();
    __syncthreads();
    {
        const int m0 = sq_m0(warp), n0 = sq_n0(warp);
        float acc[1][4][4] = {};
        mma_tile<1, 4, D, false, false>(acc, sK, LD, m0, sK, LD, n0);
        for_acc(acc, m0, n0, [&](int i, int j, int, float &x0, float &x1) {
            st_f2(sKG + i * LKG + j, j < i ? x0 * expf(sg[i] - sg[j]) : 0.f,
                  j + 1 < i ? x1 * expf(sg[i] - sg[j + 1]) : 0.f);
        });
    }
    __syncthreads();
    invert_unit_lower64(sKG, sb, sA, sX);
    const size_t r0 = ci * CH;
    a_scaled_times<D>(
        sA, [&](int j) { return sb[j] * expf(sg[j]); }, sAhi, sAlo, sK,
        [&](int i, int k, float x0, float x1) {
            st_split2(a.Whi + (r0 + i) * D + k, a.Wlo + (r0 + i) * D + k, x0, x1);
        });
    a_scaled_times<D>(
        sA, [&](int j) { return sb[j]; }, sAhi, sAlo, sV,
        [&](int i, int v, float x0, float x1) { st_f2(a.U + (r0 + i) * D + v, x0, x1); });
    if (tid < CH) a.G[r0 + tid] = sg[tid];
}

// ================================================================ 2. forward state pass
template <int D, int BV>
struct FwdStateSmem {
    static constexpr int LD = D + 8, LDV = BV + 8;
    static constexpr size_t W_HI = 0, W_LO = W_HI + CH * LD * 2, K = W_LO + CH * LD * 2,
                            U = K + CH * LD * 2, G = U + CH * (BV + 4) * 4, BUF = G + CH * 4;
    static constexpr size_t S_HI = 2 * BUF, S_LO = S_HI + BV * LD * 2, N_HI = S_LO + BV * LD * 2,
                            N_LO = N_HI + CH * LDV * 2, TOTAL = N_LO + CH * LDV * 2;
};

// 8 warps. The carried state block (BV x D): warp w holds all BV rows x columns
// [w D/8, (w+1) D/8). The (64 x BV) chunk products: warp w holds rows 16 (w % 4) x columns
// (w / 4) BV/2.
template <int D, int BV>
__global__ void __launch_bounds__(256) state_fwd_kernel(Args a) {
    using Sm = FwdStateSmem<D, BV>;
    static_assert(Sm::TOTAL <= 227 * 1024, "shared memory per block");
    constexpr int LD = Sm::LD, LDV = Sm::LDV, MT = BV / 16, NT = D / 64, NTN = BV / 16;
    extern __shared__ __align__(16) unsigned char smem[];
    const int v0 = blockIdx.x * BV, bh = blockIdx.y, warp = threadIdx.x >> 5;
    const int sn0 = warp * (D / 8);  // this warp's state columns
    const int m0 = 16 * (warp & 3), nn0 = (warp >> 2) * (BV / 2);  // this warp's chunk tile
    bf16 *sShi = (bf16 *)(smem + Sm::S_HI), *sSlo = (bf16 *)(smem + Sm::S_LO);
    bf16 *sNhi = (bf16 *)(smem + Sm::N_HI), *sNlo = (bf16 *)(smem + Sm::N_LO);

    auto issue = [&](int c, int s) {
        unsigned char *B = smem + s * Sm::BUF;
        int L;
        size_t tok0, ci;
        chunk_coords(a, c, bh, L, tok0, ci);
        const size_t r0 = ci * CH;
        cp_rows(B + Sm::W_HI, LD * 2, a.Whi + r0 * D, (size_t)D * 2, CH, D * 2);
        cp_rows(B + Sm::W_LO, LD * 2, a.Wlo + r0 * D, (size_t)D * 2, CH, D * 2);
        cp_tok((bf16 *)(B + Sm::K), LD, a.k, tok0, a.H, D, L, 0, D);
        cp_rows(B + Sm::U, (BV + 4) * 4, a.U + r0 * D + v0, (size_t)D * 4, CH, BV * 4);
        cp_rows(B + Sm::G, CH * 4, a.G + r0, CH * 4, 1, CH * 4);
        cp_commit();
    };

    // acc: rows [v0, v0 + BV) x columns [sn0, sn0 + D/8) of S, fp32.
    float acc[MT][NT][4];
    for_acc(acc, 0, sn0, [&](int r, int col, int, float &x0, float &x1) {
        if (a.S0) {
            const float *p = a.S0 + ((size_t)bh * D + v0 + r) * D + col;
            x0 = p[0];
            x1 = p[1];
        } else {
            x0 = x1 = 0.f;
        }
    });
    issue(0, 0);
    for (int c = 0; c < a.NC; c++) {
        const int s = c & 1;
        const size_t ci = (size_t)bh * a.NC + c;
        // The state at the start of chunk c: bf16 to the workspace, hi/lo to shared memory.
        for_acc(acc, 0, sn0, [&](int r, int col, int, float &x0, float &x1) {
            st_bf2(a.Sc + (ci * D + v0 + r) * D + col, x0, x1);
            st_split2(sShi + r * LD + col, sSlo + r * LD + col, x0, x1);
        });
        cp_wait_all();
        __syncthreads();  // chunk c's inputs and sS visible; chunk c-1 fully done
        if (c + 1 < a.NC) issue(c + 1, s ^ 1);
        const unsigned char *B = smem + s * Sm::BUF;
        const bf16 *sWhi = (const bf16 *)(B + Sm::W_HI), *sWlo = (const bf16 *)(B + Sm::W_LO);
        const bf16 *sK = (const bf16 *)(B + Sm::K);
        const float *sU = (const float *)(B + Sm::U), *sg = (const float *)(B + Sm::G);
        {  // N = U - W S^T
            float accN[1][NTN][4] = {};
            mma_tile<1, NTN, D, false, false>(accN, sWhi, LD, m0, sShi, LD, nn0);
            mma_tile<1, NTN, D, false, false>(accN, sWhi, LD, m0, sSlo, LD, nn0);
            mma_tile<1, NTN, D, false, false>(accN, sWlo, LD, m0, sShi, LD, nn0);
            const float glast = sg[CH - 1];
            for_acc(accN, m0, nn0, [&](int i, int v, int, float &x0, float &x1) {
                const float n0 = sU[i * (BV + 4) + v] - x0, n1 = sU[i * (BV + 4) + v + 1] - x1;
                st_bf2(a.N + (ci * CH + i) * D + v0 + v, n0, n1);
                const float d = expf(glast - sg[i]);
                st_split2(sNhi + i * LDV + v, sNlo + i * LDV + v, n0 * d, n1 * d);
            });
        }
        __syncthreads();  // sN complete
        // S = gamma_last S + (diag(exp(g_last - g)) N)^T K
        scale_acc(acc, expf(sg[CH - 1]));
        mma_tile<MT, NT, CH, true, true>(acc, sNhi, LDV, 0, sK, LD, sn0);
        mma_tile<MT, NT, CH, true, true>(acc, sNlo, LDV, 0, sK, LD, sn0);
    }
    if (a.S_out)
        for_acc(acc, 0, sn0, [&](int r, int col, int, float &x0, float &x1) {
            st_f2(a.S_out + ((size_t)bh * D + v0 + r) * D + col, x0, x1);
        });
}

// ================================================================ 3./4. outputs, dN_loc
template <int D, bool BWD>
struct OutSmem {
    static constexpr int LD = D + 8;
    static constexpr size_t Q = 0, K = Q + CH * LD * 2, X = K + CH * LD * 2,
                            S = X + CH * LD * 2, P = S + (BWD ? 0 : D * LD * 2),
                            G = P + CH * LDL * 2, TOTAL = G + CH * 4;
};

// Forward: o = diag(gamma) Q S^T + P N.  Backward: dN_loc = P^T dO.  P = causal_incl(Q K^T * G).
template <int D, bool BWD>
__global__ void __launch_bounds__(256) out_kernel(Args a) {
    using Sm = OutSmem<D, BWD>;
    static_assert(Sm::TOTAL <= 227 * 1024, "shared memory per block");
    constexpr int LD = Sm::LD, NTO = D / 16;
    extern __shared__ __align__(16) unsigned char smem[];
    bf16 *sQ = (bf16 *)(smem + Sm::Q), *sK = (bf16 *)(smem + Sm::K), *sX = (bf16 *)(smem + Sm::X);
    bf16 *sS = (bf16 *)(smem + Sm::S), *sP = (bf16 *)(smem + Sm::P);
    float *sg = (float *)(smem + Sm::G);
    const int warp = threadIdx.x >> 5, wm = warp & 3, wn = warp >> 2;
    int L;
    size_t tok0, ci;
    chunk_coords(a, blockIdx.x, blockIdx.y, L, tok0, ci);
    cp_tok(sQ, LD, a.q, tok0, a.H, D, L, 0, D);
    cp_tok(sK, LD, a.k, tok0, a.H, D, L, 0, D);
    if (BWD) {
        cp_tok(sX, LD, a.dO, tok0, a.H, D, L, 0, D);
    } else {
        cp_rows(sX, LD * 2, a.N + ci * CH * D, (size_t)D * 2, CH, D * 2);
        cp_rows(sS, LD * 2, a.Sc + ci * D * D, (size_t)D * 2, D, D * 2);
    }
    cp_rows(sg, CH * 4, a.G + ci * CH, CH * 4, 1, CH * 4);
    cp_commit();
    cp_wait_all();
    __syncthreads();
    const int m0 = 16 * wm;
    {
        float accP[1][4][4] = {};
        const int pn0 = 32 * wn;
        mma_tile<1, 4, D, false, false>(accP, sQ, LD, m0, sK, LD, pn0);
        for_acc(accP, m0, pn0, [&](int i, int j, int, float &x0, float &x1) {
            const float p0 = j <= i ? x0 * expf(sg[i] - sg[j]) : 0.f;
            const float p1 = j + 1 <= i ? x1 * expf(sg[i] - sg[j + 1]) : 0.f;
            st_bf2(sP + i * LDL + j, p0, p1);
        });
    }
    const int n0 = wn * (D / 2);
    float acc[1][NTO][4] = {};
    if (!BWD) {
        mma_tile<1, NTO, D, false, false>(acc, sQ, LD, m0, sS, LD, n0);  // Q S^T
        for_acc(acc, m0, n0, [&](int i, int, int, float &x0, float &x1) {
            const float gm = expf(sg[i]);
            x0 *= gm;
            x1 *= gm;
        });
    }
    __syncthreads();  // sP complete
    if (!BWD) {
        mma_tile<1, NTO, CH, false, true>(acc, sP, LDL, m0, sX, LD, n0);  // + P N
        for_acc(acc, m0, n0, [&](int i, int v, int, float &x0, float &x1) {
            if (i < L) st_bf2(a.o + (tok0 + (size_t)i * a.H) * D + v, x0, x1);
        });
    } else {
        mma_tile<1, NTO, CH, true, true>(acc, sP, LDL, m0, sX, LD, n0);  // P^T dO, rows j
        for_acc(acc, m0, n0, [&](int j, int v, int, float &x0, float &x1) {
            st_f2(a.dN + (ci * CH + j) * D + v, x0, x1);
        });
    }
}

// ================================================================ 5. backward state pass
template <int D, int BV>
struct BwdStateSmem {
    // LDN: the fp32 dN tile's row stride; BV + 8 puts a half warp's float2 reads (4 rows x 4
    // pairs) on distinct banks.
    static constexpr int LD = D + 8, LDV = BV + 8, LDN = BV + 8;
    static constexpr size_t W_HI = 0, W_LO = W_HI + CH * LD * 2, K = W_LO + CH * LD * 2,
                            Q = K + CH * LD * 2, DO = Q + CH * LD * 2, DN = DO + CH * LDV * 2,
                            G = DN + CH * LDN * 4, BUF = G + CH * 4;
    static constexpr size_t H_HI = 2 * BUF, H_LO = H_HI + BV * LD * 2, N_HI = H_LO + BV * LD * 2,
                            N_LO = N_HI + CH * LDV * 2, O_HI = N_LO + CH * LDV * 2,
                            O_LO = O_HI + CH * LDV * 2, TOTAL = O_LO + CH * LDV * 2;
};

// 8 warps, tiles as in state_fwd_kernel.
template <int D, int BV>
__global__ void __launch_bounds__(256) state_bwd_kernel(Args a) {
    using Sm = BwdStateSmem<D, BV>;
    static_assert(Sm::TOTAL <= 227 * 1024, "shared memory per block");
    constexpr int LD = Sm::LD, LDV = Sm::LDV, MT = BV / 16, NT = D / 64, NTN = BV / 16;
    extern __shared__ __align__(16) unsigned char smem[];
    const int v0 = blockIdx.x * BV, bh = blockIdx.y, warp = threadIdx.x >> 5;
    const int sn0 = warp * (D / 8);
    const int m0 = 16 * (warp & 3), nn0 = (warp >> 2) * (BV / 2);
    bf16 *sHhi = (bf16 *)(smem + Sm::H_HI), *sHlo = (bf16 *)(smem + Sm::H_LO);
    bf16 *sNhi = (bf16 *)(smem + Sm::N_HI), *sNlo = (bf16 *)(smem + Sm::N_LO);
    bf16 *sOhi = (bf16 *)(smem + Sm::O_HI), *sOlo = (bf16 *)(smem + Sm::O_LO);

    auto issue = [&](int c, int s) {
        unsigned char *B = smem + s * Sm::BUF;
        int L;
        size_t tok0, ci;
        chunk_coords(a, c, bh, L, tok0, ci);
        const size_t r0 = ci * CH;
        cp_rows(B + Sm::W_HI, LD * 2, a.Whi + r0 * D, (size_t)D * 2, CH, D * 2);
        cp_rows(B + Sm::W_LO, LD * 2, a.Wlo + r0 * D, (size_t)D * 2, CH, D * 2);
        cp_tok((bf16 *)(B + Sm::K), LD, a.k, tok0, a.H, D, L, 0, D);
        cp_tok((bf16 *)(B + Sm::Q), LD, a.q, tok0, a.H, D, L, 0, D);
        cp_tok((bf16 *)(B + Sm::DO), LDV, a.dO, tok0, a.H, D, L, v0, BV);
        cp_rows(B + Sm::DN, Sm::LDN * 4, a.dN + r0 * D + v0, (size_t)D * 4, CH, BV * 4);
        cp_rows(B + Sm::G, CH * 4, a.G + r0, CH * 4, 1, CH * 4);
        cp_commit();
    };

    float acc[MT][NT][4];  // dH rows [v0, v0 + BV) x columns [sn0, sn0 + D/8)
    for_acc(acc, 0, sn0, [&](int r, int col, int, float &x0, float &x1) {
        if (a.dS) {
            const float *p = a.dS + ((size_t)bh * D + v0 + r) * D + col;
            x0 = p[0];
            x1 = p[1];
        } else {
            x0 = x1 = 0.f;
        }
    });
    issue(a.NC - 1, 0);
    for (int it = 0; it < a.NC; it++) {
        const int c = a.NC - 1 - it, s = it & 1;
        const size_t ci = (size_t)bh * a.NC + c;
        // dL/dS at the end of chunk c: bf16 to the workspace, hi/lo to shared memory.
        for_acc(acc, 0, sn0, [&](int r, int col, int, float &x0, float &x1) {
            st_bf2(a.dHc + (ci * D + v0 + r) * D + col, x0, x1);
            st_split2(sHhi + r * LD + col, sHlo + r * LD + col, x0, x1);
        });
        cp_wait_all();
        __syncthreads();
        if (c > 0) issue(c - 1, s ^ 1);
        const unsigned char *B = smem + s * Sm::BUF;
        const bf16 *sWhi = (const bf16 *)(B + Sm::W_HI), *sWlo = (const bf16 *)(B + Sm::W_LO);
        const bf16 *sK = (const bf16 *)(B + Sm::K), *sQ = (const bf16 *)(B + Sm::Q);
        const bf16 *sdO = (const bf16 *)(B + Sm::DO);
        const float *sdN = (const float *)(B + Sm::DN), *sg = (const float *)(B + Sm::G);
        {  // dN = dN_loc + diag(exp(g_last - g)) K dH^T
            float accX[1][NTN][4] = {};
            mma_tile<1, NTN, D, false, false>(accX, sK, LD, m0, sHhi, LD, nn0);
            mma_tile<1, NTN, D, false, false>(accX, sK, LD, m0, sHlo, LD, nn0);
            const float glast = sg[CH - 1];
            for_acc(accX, m0, nn0, [&](int i, int v, int, float &x0, float &x1) {
                const float d = expf(glast - sg[i]);
                const float2 dn = *reinterpret_cast<const float2 *>(sdN + i * Sm::LDN + v);
                const float n0 = dn.x + d * x0, n1 = dn.y + d * x1;
                st_f2(a.dN + (ci * CH + i) * D + v0 + v, n0, n1);
                st_split2(sNhi + i * LDV + v, sNlo + i * LDV + v, -n0, -n1);
                const float gm = expf(sg[i]);
                st_split2(sOhi + i * LDV + v, sOlo + i * LDV + v, gm * bf2f(sdO[i * LDV + v]),
                          gm * bf2f(sdO[i * LDV + v + 1]));
            });
        }
        __syncthreads();
        // dH = gamma_last dH + (diag(gamma) dO)^T Q - dN^T W
        scale_acc(acc, expf(sg[CH - 1]));
        mma_tile<MT, NT, CH, true, true>(acc, sOhi, LDV, 0, sQ, LD, sn0);
        mma_tile<MT, NT, CH, true, true>(acc, sOlo, LDV, 0, sQ, LD, sn0);
        mma_tile<MT, NT, CH, true, true>(acc, sNhi, LDV, 0, sWhi, LD, sn0);
        mma_tile<MT, NT, CH, true, true>(acc, sNhi, LDV, 0, sWlo, LD, sn0);
        mma_tile<MT, NT, CH, true, true>(acc, sNlo, LDV, 0, sWhi, LD, sn0);
    }
    if (a.dS0)
        for_acc(acc, 0, sn0, [&](int r, int col, int, float &x0, float &x1) {
            st_f2(a.dS0 + ((size_t)bh * D + v0 + r) * D + col, x0, x1);
        });
}

// ================================================================ 6. dq, dk (part), dW, dg (part)
template <int D>
struct DqkSmem {
    static constexpr int LD = D + 8;
    static constexpr size_t Q = 0, K = Q + CH * LD * 2, DO = K + CH * LD * 2, N = DO + CH * LD * 2,
                            DN = N + CH * LD * 2, S = DN + CH * LD * 2, DP = S + D * LD * 2,
                            G = DP + CH * LDL * 2, DG = G + CH * 4, TOTAL = DG + CH * 4;
};

template <int D>
__global__ void __launch_bounds__(256) dqk_kernel(Args a) {
    using Sm = DqkSmem<D>;
    static_assert(Sm::TOTAL <= 227 * 1024, "shared memory per block");
    constexpr int LD = Sm::LD, NTD = D / 16;
    extern __shared__ __align__(16) unsigned char smem[];
    bf16 *sQ = (bf16 *)(smem + Sm::Q), *sK = (bf16 *)(smem + Sm::K), *sdO = (bf16 *)(smem + Sm::DO);
    bf16 *sN = (bf16 *)(smem + Sm::N), *sdN = (bf16 *)(smem + Sm::DN), *sS = (bf16 *)(smem + Sm::S);
    bf16 *sdP = (bf16 *)(smem + Sm::DP);
    float *sg = (float *)(smem + Sm::G), *sdg = (float *)(smem + Sm::DG);
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, wm = warp & 3, wn = warp >> 2;
    int L;
    size_t tok0, ci;
    chunk_coords(a, blockIdx.x, blockIdx.y, L, tok0, ci);
    cp_tok(sQ, LD, a.q, tok0, a.H, D, L, 0, D);
    cp_tok(sK, LD, a.k, tok0, a.H, D, L, 0, D);
    cp_tok(sdO, LD, a.dO, tok0, a.H, D, L, 0, D);
    cp_rows(sN, LD * 2, a.N + ci * CH * D, (size_t)D * 2, CH, D * 2);
    cp_rows(sS, LD * 2, a.Sc + ci * D * D, (size_t)D * 2, D, D * 2);
    cp_rows(sg, CH * 4, a.G + ci * CH, CH * 4, 1, CH * 4);
    cp_commit();
    for (int idx = tid; idx < CH * D / 4; idx += 256) {  // dN fp32 -> bf16
        const int i = idx / (D / 4), c4 = (idx % (D / 4)) * 4;
        const float4 f = *reinterpret_cast<const float4 *>(a.dN + (ci * CH + i) * D + c4);
        st_bf2(sdN + i * LD + c4, f.x, f.y);
        st_bf2(sdN + i * LD + c4 + 2, f.z, f.w);
    }
    if (tid < CH) sdg[tid] = 0.f;
    cp_wait_all();
    __syncthreads();

    const int m0 = 16 * wm, n0 = wn * (D / 2), last = L - 1;
    const float glast = sg[CH - 1];
    float accQ[1][NTD][4] = {}, accK[1][NTD][4] = {};
    {  // dQ_inter = diag(gamma) dO S ;  dW = -dN S
        float accW[1][NTD][4] = {};
        mma_tile<1, NTD, D, false, true>(accQ, sdO, LD, m0, sS, LD, n0);
        mma_tile<1, NTD, D, false, true>(accW, sdN, LD, m0, sS, LD, n0);
        for_acc(accW, m0, n0, [&](int i, int k, int, float &x0, float &x1) {
            st_f2(a.dW + (ci * CH + i) * D + k, -x0, -x1);
        });
        float part[2] = {0.f, 0.f};  // dg_i += sum_k Q_ik gamma_i (dO S)_ik
        for_acc(accQ, m0, n0, [&](int i, int k, int hh, float &x0, float &x1) {
            const float gm = expf(sg[i]);
            x0 *= gm;
            x1 *= gm;
            part[hh] += x0 * bf2f(sQ[i * LD + k]) + x1 * bf2f(sQ[i * LD + k + 1]);
        });
#pragma unroll
        for (int hh = 0; hh < 2; hh++) {
            const float p = quad_sum(part[hh]);
            if ((lane & 3) == 0) atomicAdd(&sdg[m0 + (lane >> 2) + 8 * hh], p);
        }
    }
    __syncthreads();  // S no longer needed: replace it with dH (chunk end), and sum(dH * S)
    {
        float part = 0.f;
        const bf16 *gh = a.dHc + ci * D * D;
        for (int idx = tid; idx < D * D / 8; idx += 256) {
            const int r = idx / (D / 8), c8 = (idx % (D / 8)) * 8;
            const uint4 hv = *reinterpret_cast<const uint4 *>(gh + (size_t)r * D + c8);
            uint4 *sp = reinterpret_cast<uint4 *>(sS + r * LD + c8);
            const uint4 sv = *sp;
            const bf16 *hb = reinterpret_cast<const bf16 *>(&hv);
            const bf16 *sb = reinterpret_cast<const bf16 *>(&sv);
#pragma unroll
            for (int e = 0; e < 8; e++) part += bf2f(hb[e]) * bf2f(sb[e]);
            *sp = hv;
        }
        part = warp_sum(part);
        if (lane == 0) atomicAdd(&sdg[last], expf(glast) * part);
    }
    __syncthreads();
    {  // dK_state = diag(exp(g_last - g)) N dH ;  e_j = sum_k dK_state_jk K_jk
        mma_tile<1, NTD, D, false, true>(accK, sN, LD, m0, sS, LD, n0);
        float part[2] = {0.f, 0.f};
        for_acc(accK, m0, n0, [&](int j, int k, int hh, float &x0, float &x1) {
            const float d = expf(glast - sg[j]);
            x0 *= d;
            x1 *= d;
            part[hh] += x0 * bf2f(sK[j * LD + k]) + x1 * bf2f(sK[j * LD + k + 1]);
        });
#pragma unroll
        for (int hh = 0; hh < 2; hh++) {
            const float e = quad_sum(part[hh]);
            if ((lane & 3) == 0) {
                atomicAdd(&sdg[m0 + (lane >> 2) + 8 * hh], -e);
                atomicAdd(&sdg[last], e);
            }
        }
    }
    {  // dP = dO N^T, P = Q K^T (then * G, causal): dPt = dP * G -> shared; dg from dP * P
        float accD[1][4][4] = {}, accP[1][4][4] = {};
        const int pn0 = 32 * wn, g = lane >> 2, t = lane & 3;
        mma_tile<1, 4, D, false, false>(accD, sdO, LD, m0, sN, LD, pn0);
        mma_tile<1, 4, D, false, false>(accP, sQ, LD, m0, sK, LD, pn0);
        float rowp[2] = {0.f, 0.f}, colp[4][2] = {};
#pragma unroll
        for (int nt = 0; nt < 4; nt++)
#pragma unroll
            for (int hh = 0; hh < 2; hh++) {
                const int i = m0 + g + 8 * hh;
                float dpt[2];
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    const int j = pn0 + nt * 8 + 2 * t + e;
                    const bool ok = j <= i && i < L;
                    const float gm = ok ? expf(sg[i] - sg[j]) : 0.f;
                    const float dp = ok ? accD[0][nt][2 * hh + e] : 0.f;
                    const float f = dp * (accP[0][nt][2 * hh + e] * gm);
                    dpt[e] = dp * gm;
                    rowp[hh] += f;
                    colp[nt][e] += f;
                }
                st_bf2(sdP + i * LDL + pn0 + nt * 8 + 2 * t, dpt[0], dpt[1]);
            }
#pragma unroll
        for (int hh = 0; hh < 2; hh++) {
            const float p = quad_sum(rowp[hh]);
            if (t == 0) atomicAdd(&sdg[m0 + g + 8 * hh], p);
        }
#pragma unroll
        for (int nt = 0; nt < 4; nt++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                const float p = col_sum(colp[nt][e]);
                if (g == 0) atomicAdd(&sdg[pn0 + nt * 8 + 2 * t + e], -p);
            }
    }
    __syncthreads();  // sdP complete
    mma_tile<1, NTD, CH, false, true>(accQ, sdP, LDL, m0, sK, LD, n0);  // + dPt K
    mma_tile<1, NTD, CH, true, true>(accK, sdP, LDL, m0, sQ, LD, n0);   // + dPt^T Q
    for_acc(accQ, m0, n0, [&](int i, int k, int, float &x0, float &x1) {
        if (i < L) st_f2(a.dq + (tok0 + (size_t)i * a.H) * D + k, x0, x1);
    });
    for_acc(accK, m0, n0, [&](int i, int k, int, float &x0, float &x1) {
        if (i < L) st_f2(a.dk + (tok0 + (size_t)i * a.H) * D + k, x0, x1);
    });
    __syncthreads();  // all atomics into sdg done
    if (tid < CH) a.dG[ci * CH + tid] = sdg[tid];
}

// The WY backward kernels' last step, for a chunk of L rows from token tok0:
// dbeta from sdb (CH), and dlog alpha_m = sum_{i >= m} dg_i inside the chunk
// (a suffix sum of sdg by warp 0, two rows a lane), dalpha = that / alpha
// (sal: alpha; 0 where alpha underflows). After a barrier that ends every
// write to sdb and sdg.
__device__ __forceinline__ void write_dbeta_dalpha(const Args &a, size_t tok0, int L,
                                                   const float *sdb, const float *sdg,
                                                   const float *sal) {
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    if (tid < CH && tid < L) a.dbeta[tok0 + (size_t)tid * a.H] = sdb[tid];
    if (warp == 0) {
        const int i0 = 2 * lane, i1 = i0 + 1;
        const float d0 = i0 < L ? sdg[i0] : 0.f, d1 = i1 < L ? sdg[i1] : 0.f;
        float s = d0 + d1;
#pragma unroll
        for (int off = 1; off < 32; off <<= 1) {
            const float u = __shfl_down_sync(FULL, s, off);
            if (lane + off < 32) s += u;
        }
        float ex = __shfl_down_sync(FULL, s, 1);
        if (lane == 31) ex = 0.f;
        const float r1 = ex + d1, r0v = r1 + d0;
        if (i0 < L) a.dalpha[tok0 + (size_t)i0 * a.H] = sal[i0] >= 1e-38f ? r0v / sal[i0] : 0.f;
        if (i1 < L) a.dalpha[tok0 + (size_t)i1 * a.H] = sal[i1] >= 1e-38f ? r1 / sal[i1] : 0.f;
    }
}

// ================================================================ 7. through the WY factors
template <int D>
struct WyBwdSmem {
    static constexpr int LD = D + 8;
    static constexpr size_t K = 0, V = K + CH * LD * 2, U = V + CH * LD * 2, W = U + CH * LD * 2,
                            X1 = W + CH * LD * 2, X2 = X1 + CH * LD * 2, KG = X2 + CH * LD * 2,
                            A = KG + CH * LKG * 4, X = A + CH * CH * 4, A_HI = X + 768 * 4,
                            A_LO = A_HI + CH * LDL * 2, SMALL = A_LO + CH * LDL * 2,
                            TOTAL = SMALL + 6 * CH * 4;
    static_assert(D != 64 || TOTAL <= 112 * 1024, "two blocks an SM at D = 64");
};

// Recomputes M and A = (I + M)^-1 as wy_kernel does, then on tensor cores
// dB_V = A^T dN, dB_K = A^T dW (A split hi + lo; dN, dW rounded to bf16), and from them dv,
// dbeta, dg and dk (with the partial dk and dg of dqk_kernel), dM = -(dB_V U^T + dB_K W^T),
// E = dM * beta G, dk += E K + E^T K, and dalpha.
// D = 64: 108.5 KB of shared memory and at most 128 registers, two blocks an SM (M is not
// stored, see invert_unit_lower64, and E takes A's tile once A is split).
template <int D>
__global__ void __launch_bounds__(256, D == 64 ? 2 : 1) wy_bwd_kernel(Args a) {
    using Sm = WyBwdSmem<D>;
    static_assert(Sm::TOTAL <= 227 * 1024, "shared memory per block");
    constexpr int LD = Sm::LD, NT = D / 16;
    extern __shared__ __align__(16) unsigned char smem[];
    bf16 *sK = (bf16 *)(smem + Sm::K), *sV = (bf16 *)(smem + Sm::V);
    bf16 *sU = (bf16 *)(smem + Sm::U), *sW = (bf16 *)(smem + Sm::W);
    bf16 *sX1 = (bf16 *)(smem + Sm::X1), *sX2 = (bf16 *)(smem + Sm::X2);  // dN, dW -> dB_V, dB_K
    float *sKG = (float *)(smem + Sm::KG);
    float *sA = (float *)(smem + Sm::A), *sX = (float *)(smem + Sm::X);
    bf16 *sE = (bf16 *)(smem + Sm::A);  // E replaces A once A is split into hi + lo
    bf16 *sAhi = (bf16 *)(smem + Sm::A_HI), *sAlo = (bf16 *)(smem + Sm::A_LO);
    float *small = (float *)(smem + Sm::SMALL);
    float *sg = small, *sb = small + CH, *sal = small + 2 * CH, *sdg = small + 3 * CH,
          *sdb = small + 4 * CH, *srowK = small + 5 * CH;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    int L;
    size_t tok0, ci;
    chunk_coords(a, blockIdx.x, blockIdx.y, L, tok0, ci);
    const size_t r0 = ci * CH;
    cp_tok(sK, LD, a.k, tok0, a.H, D, L, 0, D);
    cp_tok(sV, LD, a.v, tok0, a.H, D, L, 0, D);
    cp_rows(sW, LD * 2, a.Whi + r0 * D, (size_t)D * 2, CH, D * 2);
    cp_commit();
    for (int idx = tid; idx < CH * D / 4; idx += 256) {  // fp32 workspace tiles -> bf16
        const int i = idx / (D / 4), c4 = (idx % (D / 4)) * 4;
        const size_t off = (r0 + i) * D + c4;
        const float4 u = *reinterpret_cast<const float4 *>(a.U + off);
        const float4 n = *reinterpret_cast<const float4 *>(a.dN + off);
        const float4 w = *reinterpret_cast<const float4 *>(a.dW + off);
        st_bf2(sU + i * LD + c4, u.x, u.y);
        st_bf2(sU + i * LD + c4 + 2, u.z, u.w);
        st_bf2(sX1 + i * LD + c4, n.x, n.y);
        st_bf2(sX1 + i * LD + c4 + 2, n.z, n.w);
        st_bf2(sX2 + i * LD + c4, w.x, w.y);
        st_bf2(sX2 + i * LD + c4 + 2, w.z, w.w);
    }
    if (tid < CH) {
        const int i = tid;
        const bool ok = i < L;
        const size_t ti = tok0 + (size_t)i * a.H;
        sg[i] = a.G[r0 + i];
        sb[i] = ok ? a.beta[ti] : 0.f;
        sal[i] = ok ? a.alpha[ti] : 1.f;
        sdg[i] = a.dG[r0 + i];
        sdb[i] = 0.f;
        srowK[i] = 0.f;
    }
    cp_wait_all();
    __syncthreads();
    const int qm0 = sq_m0(warp), qn0 = sq_n0(warp);
    {  // KG = strict_lower(K K^T * G)  (M = diag(beta) KG)
        float acc[1][4][4] = {};
        mma_tile<1, 4, D, false, false>(acc, sK, LD, qm0, sK, LD, qn0);
        for_acc(acc, qm0, qn0, [&](int i, int j, int, float &x0, float &x1) {
            st_f2(sKG + i * LKG + j, j < i ? x0 * expf(sg[i] - sg[j]) : 0.f,
                  j + 1 < i ? x1 * expf(sg[i] - sg[j + 1]) : 0.f);
        });
    }
    __syncthreads();
    invert_unit_lower64(sKG, sb, sA, sX);
    for (int idx = tid; idx < CH * CH / 2; idx += 256) {
        const int i = idx / (CH / 2), j = (idx % (CH / 2)) * 2;
        st_split2(sAhi + i * LDL + j, sAlo + i * LDL + j, sA[i * CH + j], sA[i * CH + j + 1]);
    }
    __syncthreads();
    // [dB_V | dB_K] = A^T [dN | dW]: A^T as the "km" operand of the stored A.
    const int m0 = 16 * (warp & 3), n0 = (warp >> 2) * (D / 2), g = lane >> 2, t = lane & 3;
    float accV[1][NT][4] = {}, accK[1][NT][4] = {};
    mma_tile<1, NT, CH, true, true>(accV, sAhi, LDL, m0, sX1, LD, n0);
    mma_tile<1, NT, CH, true, true>(accV, sAlo, LDL, m0, sX1, LD, n0);
    mma_tile<1, NT, CH, true, true>(accK, sAhi, LDL, m0, sX2, LD, n0);
    mma_tile<1, NT, CH, true, true>(accK, sAlo, LDL, m0, sX2, LD, n0);
    __syncthreads();  // dN and dW tiles read: reuse them for dB_V and dB_K
    {
        float rv[2] = {0.f, 0.f}, rk[2] = {0.f, 0.f};
        for_acc(accV, m0, n0, [&](int i, int v, int hh, float &x0, float &x1) {
            // dv = diag(beta) dB_V;  dbeta_i += sum_v dB_V V
            if (i < L) st_f2(a.dv + (tok0 + (size_t)i * a.H) * D + v, sb[i] * x0, sb[i] * x1);
            rv[hh] += x0 * bf2f(sV[i * LD + v]) + x1 * bf2f(sV[i * LD + v + 1]);
            st_bf2(sX1 + i * LD + v, x0, x1);
        });
        for_acc(accK, m0, n0, [&](int i, int k, int hh, float &x0, float &x1) {
            // d(beta gamma)_i = sum_k dB_K K;  dk += diag(beta gamma) dB_K (kept in accK)
            rk[hh] += x0 * bf2f(sK[i * LD + k]) + x1 * bf2f(sK[i * LD + k + 1]);
            st_bf2(sX2 + i * LD + k, x0, x1);
            const float bg = sb[i] * expf(sg[i]);
            x0 *= bg;
            x1 *= bg;
        });
#pragma unroll
        for (int hh = 0; hh < 2; hh++) {
            const float pv = quad_sum(rv[hh]), pk = quad_sum(rk[hh]);
            if (t == 0) {
                atomicAdd(&sdb[m0 + g + 8 * hh], pv);
                atomicAdd(&srowK[m0 + g + 8 * hh], pk);
            }
        }
    }
    __syncthreads();
    if (tid < CH) {
        const int i = tid;
        const float gm = expf(sg[i]), rk = srowK[i];
        sdb[i] += gm * rk;
        sdg[i] += sb[i] * gm * rk;
    }
    __syncthreads();
    {  // dM = -(dB_V U^T + dB_K W^T) (strict lower): dbeta, E = dM beta G, dg from dM * M
        float acc[1][4][4] = {};
        mma_tile<1, 4, D, false, false>(acc, sX1, LD, qm0, sU, LD, qn0);
        mma_tile<1, 4, D, false, false>(acc, sX2, LD, qm0, sW, LD, qn0);
        float rowb[2] = {0.f, 0.f}, rowf[2] = {0.f, 0.f}, colf[4][2] = {};
#pragma unroll
        for (int nt = 0; nt < 4; nt++)
#pragma unroll
            for (int hh = 0; hh < 2; hh++) {
                const int i = qm0 + g + 8 * hh;
                float ev[2];
                const float2 kg2 = *reinterpret_cast<const float2 *>(sKG + i * LKG + qn0 + nt * 8 + 2 * t);
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    const int j = qn0 + nt * 8 + 2 * t + e;
                    const bool ok = j < i && i < L;
                    const float dm = ok ? -acc[0][nt][2 * hh + e] : 0.f;
                    const float kg = e ? kg2.y : kg2.x;  // 0 unless j < i
                    const float gm = ok ? expf(sg[i] - sg[j]) : 0.f;
                    const float f = dm * sb[i] * kg;
                    rowb[hh] += dm * kg;
                    rowf[hh] += f;
                    colf[nt][e] += f;
                    ev[e] = dm * sb[i] * gm;
                }
                st_bf2(sE + i * LDL + qn0 + nt * 8 + 2 * t, ev[0], ev[1]);
            }
#pragma unroll
        for (int hh = 0; hh < 2; hh++) {
            const float pb = quad_sum(rowb[hh]), pf = quad_sum(rowf[hh]);
            if (t == 0) {
                atomicAdd(&sdb[qm0 + g + 8 * hh], pb);
                atomicAdd(&sdg[qm0 + g + 8 * hh], pf);
            }
        }
#pragma unroll
        for (int nt = 0; nt < 4; nt++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                const float p = col_sum(colf[nt][e]);
                if (g == 0) atomicAdd(&sdg[qn0 + nt * 8 + 2 * t + e], -p);
            }
    }
    __syncthreads();  // sE complete
    // dk = (dqk's part) + diag(beta gamma) dB_K + E K + E^T K
    mma_tile<1, NT, CH, false, true>(accK, sE, LDL, m0, sK, LD, n0);
    mma_tile<1, NT, CH, true, true>(accK, sE, LDL, m0, sK, LD, n0);
    for_acc(accK, m0, n0, [&](int i, int k, int, float &x0, float &x1) {
        if (i < L) {
            float2 *p = reinterpret_cast<float2 *>(a.dk + (tok0 + (size_t)i * a.H) * D + k);
            const float2 d = *p;
            *p = make_float2(d.x + x0, d.y + x1);
        }
    });
    __syncthreads();  // every atomic into sdb and sdg done
    write_dbeta_dalpha(a, tok0, L, sdb, sdg, sal);
}

// ================================================================ 1r./7r. reference WY kernels
// The first, GPU-validated versions of kernels 1 and 7: the triangular solves run per column in
// fp32 on CUDA cores (one thread per column, 2D threads), ~516k FMAs per chunk. Measured on an
// H200, the forward one is nevertheless faster than wy_kernel (whose 16 x 16 block inversion
// leaves most threads idle) and is the default forward; the backward one is slower than
// wy_bwd_kernel (see wy_mode). hy_cuda_gdn_set_test_options(., 1) or HY_GDN_REFERENCE_WY=1
// selects both; the tests run every kind, so a failure of one kind alone points at its kernels.
template <int D>
__global__ void __launch_bounds__(2 * D) wy_ref_kernel(Args a) {
    constexpr int LD = D + 8, NTHR = 2 * D, NW = NTHR / 32;
    __shared__ __align__(16) bf16 sK[CH * LD];
    __shared__ __align__(16) float sM[CH * CH];
    __shared__ float sg[CH], sb[CH];
    const int tid = threadIdx.x, warp = tid >> 5;
    int L;
    size_t tok0, ci;
    chunk_coords(a, blockIdx.x, blockIdx.y, L, tok0, ci);
    cp_tok(sK, LD, a.k, tok0, a.H, D, L, 0, D);
    cp_commit();
    if (warp == 0) chunk_decay(a, tok0, L, sg, sb, nullptr);
    cp_wait_all();
    __syncthreads();
    {  // M = strict_lower(diag(beta) K K^T * G)
        constexpr int MT = NW == 8 ? 1 : 2, WR = 4 / MT;
        const int m0 = (warp % WR) * 16 * MT, n0 = (warp / WR) * 32;
        float acc[MT][4][4] = {};
        mma_tile<MT, 4, D, false, false>(acc, sK, LD, m0, sK, LD, n0);
        for_acc(acc, m0, n0, [&](int i, int j, int, float &x0, float &x1) {
            sM[i * CH + j] = j < i ? sb[i] * x0 * expf(sg[i] - sg[j]) : 0.f;
            sM[i * CH + j + 1] = j + 1 < i ? sb[i] * x1 * expf(sg[i] - sg[j + 1]) : 0.f;
        });
    }
    __syncthreads();
    // [W | U] = (I + M)^-1 [diag(beta gamma) K | diag(beta) V]: thread `col` owns one column.
    const int col = tid;
    float x[CH];
    if (col < D) {
#pragma unroll
        for (int i = 0; i < CH; i++) x[i] = sb[i] * expf(sg[i]) * bf2f(sK[i * LD + col]);
    } else {
        const bf16 *vp = a.v + tok0 * D + (col - D);
#pragma unroll
        for (int i = 0; i < CH; i++) x[i] = i < L ? sb[i] * bf2f(vp[(size_t)i * a.H * D]) : 0.f;
    }
    // Row i needs M_ij for j < i; the float4 reads also take j up to i + 2, where M_ij = 0
    // (strictly lower) multiplies a finite x_j: no effect. Four partial sums shorten the chain.
#pragma unroll
    for (int i = 1; i < CH; i++) {
        float s0 = 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f;
#pragma unroll
        for (int j = 0; j < i; j += 4) {
            const float4 m = *reinterpret_cast<const float4 *>(&sM[i * CH + j]);
            s0 += m.x * x[j];
            s1 += m.y * x[j + 1];
            s2 += m.z * x[j + 2];
            s3 += m.w * x[j + 3];
        }
        x[i] -= (s0 + s1) + (s2 + s3);
    }
    const size_t r0 = ci * CH;
    if (col < D) {
#pragma unroll
        for (int i = 0; i < CH; i++) {
            const bf16 hi = f2bf(x[i]);
            a.Whi[(r0 + i) * D + col] = hi;
            a.Wlo[(r0 + i) * D + col] = f2bf(x[i] - bf2f(hi));
        }
    } else {
#pragma unroll
        for (int i = 0; i < CH; i++) a.U[(r0 + i) * D + col - D] = x[i];
    }
    if (tid < CH) a.G[r0 + tid] = sg[tid];
}

// One step of warp_reduce_scatter64: lanes that differ in bit log2(32 / HALF) swap halves.
template <int HALF>
__device__ __forceinline__ void rs_step(float (&v)[CH], int lane) {
    constexpr int MASK = 32 / HALF;
    const bool up = (lane & MASK) != 0;
#pragma unroll
    for (int j = 0; j < HALF; j++) {
        const float keep = up ? v[j + HALF] : v[j], send = up ? v[j] : v[j + HALF];
        v[j] = keep + __shfl_xor_sync(FULL, send, MASK);
    }
}
// v[64] per lane -> v[0], v[1] hold the warp sums of rows rs_row(lane) and rs_row(lane) + 1
// (a reduce-scatter: 62 shuffles instead of 64 * 5).
__device__ __forceinline__ void warp_reduce_scatter64(float (&v)[CH]) {
    const int lane = threadIdx.x & 31;
    rs_step<32>(v, lane);
    rs_step<16>(v, lane);
    rs_step<8>(v, lane);
    rs_step<4>(v, lane);
    rs_step<2>(v, lane);
}
__device__ __forceinline__ int rs_row(int lane) {
    int r = 0;
#pragma unroll
    for (int s = 0; s < 5; s++) r += ((lane >> s) & 1) * (32 >> s);
    return r;
}

template <int D>
struct WyBwdRefSmem {
    static constexpr int LD = D + 8, LDK = D + 4;
    static constexpr size_t K = 0, MT = K + CH * LD * 2, KG = MT + CH * CH * 4,
                            DBV = KG + CH * CH * 4, DBK = DBV + CH * LD * 2, U = DBK + CH * LD * 2,
                            W = U + CH * LD * 2, E = W + CH * LD * 2, DK = E + CH * LDL * 2,
                            SMALL = DK + CH * LDK * 4, TOTAL = SMALL + 7 * CH * 4;
};

template <int D>
__global__ void __launch_bounds__(2 * D) wy_bwd_ref_kernel(Args a) {
    using Sm = WyBwdRefSmem<D>;
    static_assert(Sm::TOTAL <= 227 * 1024, "shared memory per block");
    constexpr int LD = Sm::LD, LDK = Sm::LDK, NTHR = 2 * D, NW = NTHR / 32;
    extern __shared__ __align__(16) unsigned char smem[];
    bf16 *sK = (bf16 *)(smem + Sm::K), *sdBv = (bf16 *)(smem + Sm::DBV);
    bf16 *sdBk = (bf16 *)(smem + Sm::DBK), *sU = (bf16 *)(smem + Sm::U);
    bf16 *sW = (bf16 *)(smem + Sm::W);
    bf16 *sE = (bf16 *)(smem + Sm::E);
    float *sMT = (float *)(smem + Sm::MT), *sKG = (float *)(smem + Sm::KG);
    float *sdK = (float *)(smem + Sm::DK), *small = (float *)(smem + Sm::SMALL);
    float *sg = small, *sb = small + CH, *sal = small + 2 * CH, *sdg = small + 3 * CH,
          *sdb = small + 4 * CH, *srowV = small + 5 * CH, *srowK = small + 6 * CH;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    int L;
    size_t tok0, ci;
    chunk_coords(a, blockIdx.x, blockIdx.y, L, tok0, ci);
    const size_t r0 = ci * CH;
    cp_tok(sK, LD, a.k, tok0, a.H, D, L, 0, D);
    cp_rows(sW, LD * 2, a.Whi + r0 * D, (size_t)D * 2, CH, D * 2);
    cp_commit();
    for (int idx = tid; idx < CH * D / 4; idx += NTHR) {
        const int i = idx / (D / 4), c4 = (idx % (D / 4)) * 4;
        const float4 u = *reinterpret_cast<const float4 *>(a.U + (r0 + i) * D + c4);
        st_bf2(sU + i * LD + c4, u.x, u.y);
        st_bf2(sU + i * LD + c4 + 2, u.z, u.w);
        float4 dk = make_float4(0.f, 0.f, 0.f, 0.f);
        if (i < L) dk = *reinterpret_cast<const float4 *>(a.dk + (tok0 + (size_t)i * a.H) * D + c4);
        *reinterpret_cast<float4 *>(sdK + i * LDK + c4) = dk;
    }
    if (tid < CH) {
        const int i = tid;
        const bool ok = i < L;
        const size_t ti = tok0 + (size_t)i * a.H;
        sg[i] = a.G[r0 + i];
        sb[i] = ok ? a.beta[ti] : 0.f;
        sal[i] = ok ? a.alpha[ti] : 1.f;
        sdg[i] = a.dG[r0 + i];
        srowV[i] = 0.f;
        srowK[i] = 0.f;
    }
    cp_wait_all();
    __syncthreads();
    constexpr int MT = NW == 8 ? 1 : 2, WR = 4 / MT;
    const int mm0 = (warp % WR) * 16 * MT, mn0 = (warp / WR) * 32;
    {  // KG = strict_lower(K K^T * G);  M^T = (diag(beta) KG)^T
        float acc[MT][4][4] = {};
        mma_tile<MT, 4, D, false, false>(acc, sK, LD, mm0, sK, LD, mn0);
        for_acc(acc, mm0, mn0, [&](int i, int j, int, float &x0, float &x1) {
            const float k0 = j < i ? x0 * expf(sg[i] - sg[j]) : 0.f;
            const float k1 = j + 1 < i ? x1 * expf(sg[i] - sg[j + 1]) : 0.f;
            sKG[i * CH + j] = k0;
            sKG[i * CH + j + 1] = k1;
            sMT[j * CH + i] = sb[i] * k0;
            sMT[(j + 1) * CH + i] = sb[i] * k1;
        });
    }
    __syncthreads();
    {  // [dB_V | dB_K] = (I + M)^-T [dN | dW]: backward substitution, thread `col` owns a column
        const int col = tid;
        float x[CH];
        const float *src = col < D ? a.dN + r0 * D + col : a.dW + r0 * D + (col - D);
#pragma unroll
        for (int i = 0; i < CH; i++) x[i] = src[(size_t)i * D];
        // Row l of M^T holds M_il, 0 for i <= l: the float4 reads from the aligned i below
        // l + 1 multiply finite x_i by 0. Four partial sums shorten the dependency chain.
#pragma unroll
        for (int ll = 1; ll < CH; ll++) {
            const int l = CH - 1 - ll;
            float s0 = 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f;
#pragma unroll
            for (int i = (l + 1) & ~3; i < CH; i += 4) {
                const float4 m = *reinterpret_cast<const float4 *>(&sMT[l * CH + i]);
                s0 += m.x * x[i];
                s1 += m.y * x[i + 1];
                s2 += m.z * x[i + 2];
                s3 += m.w * x[i + 3];
            }
            x[l] -= (s0 + s1) + (s2 + s3);
        }
        if (col < D) {  // dv = diag(beta) dB_V;  dbeta_i += sum_v dB_V V
            const bf16 *vp = a.v + tok0 * D + col;
            float *dvp = a.dv + tok0 * D + col;
#pragma unroll
            for (int i = 0; i < CH; i++) {
                if (i < L) dvp[(size_t)i * a.H * D] = sb[i] * x[i];
                sdBv[i * LD + col] = f2bf(x[i]);
                x[i] *= i < L ? bf2f(vp[(size_t)i * a.H * D]) : 0.f;
            }
        } else {  // dk += diag(beta gamma) dB_K;  d(beta gamma)_i = sum_k dB_K K
            const int kk = col - D;
#pragma unroll
            for (int i = 0; i < CH; i++) {
                sdK[i * LDK + kk] += sb[i] * expf(sg[i]) * x[i];
                sdBk[i * LD + kk] = f2bf(x[i]);
                x[i] *= bf2f(sK[i * LD + kk]);
            }
        }
        warp_reduce_scatter64(x);
        float *dst = col < D ? srowV : srowK;
        const int r = rs_row(lane);
        atomicAdd(&dst[r], x[0]);
        atomicAdd(&dst[r + 1], x[1]);
    }
    __syncthreads();
    if (tid < CH) {
        const int i = tid;
        const float gm = expf(sg[i]), rk = srowK[i];
        sdb[i] = srowV[i] + gm * rk;
        sdg[i] += sb[i] * gm * rk;
    }
    __syncthreads();
    {  // dM = -(dB_V U^T + dB_K W^T) (strict lower): dbeta, E = dM beta G, dg from dM * M
        float acc[MT][4][4] = {};
        mma_tile<MT, 4, D, false, false>(acc, sdBv, LD, mm0, sU, LD, mn0);
        mma_tile<MT, 4, D, false, false>(acc, sdBk, LD, mm0, sW, LD, mn0);
        const int g = lane >> 2, t = lane & 3;
        float rowb[MT][2] = {}, rowf[MT][2] = {}, colf[4][2] = {};
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int nt = 0; nt < 4; nt++)
#pragma unroll
                for (int hh = 0; hh < 2; hh++) {
                    const int i = mm0 + 16 * mt + g + 8 * hh;
                    float ev[2];
#pragma unroll
                    for (int e = 0; e < 2; e++) {
                        const int j = mn0 + nt * 8 + 2 * t + e;
                        const bool ok = j < i && i < L;
                        const float dm = ok ? -acc[mt][nt][2 * hh + e] : 0.f;
                        const float kg = sKG[i * CH + j];  // 0 unless j < i
                        const float gm = ok ? expf(sg[i] - sg[j]) : 0.f;
                        const float f = dm * sb[i] * kg;
                        rowb[mt][hh] += dm * kg;
                        rowf[mt][hh] += f;
                        colf[nt][e] += f;
                        ev[e] = dm * sb[i] * gm;
                    }
                    st_bf2(sE + i * LDL + mn0 + nt * 8 + 2 * t, ev[0], ev[1]);
                }
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int hh = 0; hh < 2; hh++) {
                const float pb = quad_sum(rowb[mt][hh]), pf = quad_sum(rowf[mt][hh]);
                if (t == 0) {
                    const int i = mm0 + 16 * mt + g + 8 * hh;
                    atomicAdd(&sdb[i], pb);
                    atomicAdd(&sdg[i], pf);
                }
            }
#pragma unroll
        for (int nt = 0; nt < 4; nt++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                const float p = col_sum(colf[nt][e]);
                if (g == 0) atomicAdd(&sdg[mn0 + nt * 8 + 2 * t + e], -p);
            }
    }
    __syncthreads();  // sE complete
    {  // dk += E K + E^T K
        constexpr int WC = NW / 4, NTK = D / WC / 8;
        const int m0 = 16 * (warp % 4), n0 = (warp / 4) * (D / WC);
        float acc[1][NTK][4] = {};
        mma_tile<1, NTK, CH, false, true>(acc, sE, LDL, m0, sK, LD, n0);
        mma_tile<1, NTK, CH, true, true>(acc, sE, LDL, m0, sK, LD, n0);
        for_acc(acc, m0, n0, [&](int i, int k, int, float &x0, float &x1) {
            sdK[i * LDK + k] += x0;
            sdK[i * LDK + k + 1] += x1;
        });
    }
    __syncthreads();
    for (int idx = tid; idx < CH * D / 4; idx += NTHR) {
        const int i = idx / (D / 4), c4 = (idx % (D / 4)) * 4;
        if (i < L)
            *reinterpret_cast<float4 *>(a.dk + (tok0 + (size_t)i * a.H) * D + c4) =
                *reinterpret_cast<const float4 *>(sdK + i * LDK + c4);
    }
    write_dbeta_dalpha(a, tok0, L, sdb, sdg, sal);
}

// ================================================================ decoding step
// One warp per row i of one head's state: r = v_i - alpha S_i.k, S_i = alpha S_i + beta r k,
// o_i = S_i.q. Any D.
__global__ void __launch_bounds__(256) step_kernel(int rows, int D, const bf16 *q, const bf16 *k,
                                                   const bf16 *v, const float *alpha,
                                                   const float *beta, float *S, bf16 *o) {
    const int row = blockIdx.x * 8 + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= rows) return;
    const int bh = row / D, i = row % D;
    float *s = S + (size_t)row * D;
    const bf16 *kp = k + (size_t)bh * D, *qp = q + (size_t)bh * D;
    const float al = alpha[bh], be = beta[bh];
    float dot = 0.f;
    for (int j = lane; j < D; j += 32) dot += s[j] * bf2f(kp[j]);
    dot = warp_sum(dot);
    const float u = be * (bf2f(v[(size_t)bh * D + i]) - al * dot);
    float od = 0.f;
    for (int j = lane; j < D; j += 32) {
        const float x = al * s[j] + u * bf2f(kp[j]);
        s[j] = x;
        od += x * bf2f(qp[j]);
    }
    od = warp_sum(od);
    if (lane == 0) o[(size_t)bh * D + i] = f2bf(od);
}

// ================================================================ host side
// The workspace in two parts: the forward's results that a backward reads (g, W, U, the chunk
// start states, N: hy_cuda_gdn_saved_bytes), then what only the backward writes (offsets from
// the second part's start).
struct WsLayout {
    size_t G, Whi, Wlo, U, Sc, N, saved;  // forward part
    size_t dN, dHc, dW, dG, bwd;          // backward part
};

WsLayout ws_layout(int B, int T, int H, int D) {
    const size_t NC = ((size_t)T + CH - 1) / CH, nch = (size_t)B * H * NC, R = nch * CH;
    WsLayout w;
    size_t off = 0;
    auto take = [&](size_t bytes) {
        const size_t o = off;
        off += (bytes + 255) & ~(size_t)255;
        return o;
    };
    w.G = take(R * 4);
    w.Whi = take(R * D * 2);
    w.Wlo = take(R * D * 2);
    w.U = take(R * D * 4);
    w.Sc = take(nch * D * D * 2);
    w.N = take(R * D * 2);
    w.saved = off;
    off = 0;
    w.dN = take(R * D * 4);
    w.dHc = take(nch * D * D * 2);
    w.dW = take(R * D * 4);
    w.dG = take(R * 4);
    w.bwd = off;
    return w;
}

void check_dims(const char *fn, int B, int T, int H, int D, int chunk) {
    HY_REQUIRE(B >= 1 && T >= 1 && H >= 1, "%s: sizes must be positive (B %d, T %d, H %d)", fn, B,
               T, H);
    HY_REQUIRE(chunk == CH, "%s: chunk %d is not supported by the CUDA kernels (only %d)", fn,
               chunk, CH);
    HY_REQUIRE(D == 64 || D == 128,
               "%s: head dim D = %d is not supported by the CUDA kernels (64 or 128)", fn, D);
    HY_REQUIRE((long)B * H <= 65535, "%s: B * H = %ld is more than 65535", fn, (long)B * H);
}

void check_ptr(const char *fn, const char *name, const void *p, unsigned align, bool required) {
    if (!p) {
        HY_REQUIRE(!required, "%s: %s must not be NULL", fn, name);
        return;
    }
    HY_REQUIRE(((uintptr_t)p % align) == 0, "%s: %s must be %u-byte aligned", fn, name, align);
}

// Test hooks (hy_cuda_gdn_set_test_options): forced rows of the state per block in the
// sequential passes (0: automatic) and the choice of WY kernels (wy_mode).
int g_force_bv = 0;

// Which WY kernels run: WY_DEFAULT the faster of each direction as measured on an H200 (the
// reference wy_ref_kernel forward: 0.275 against 0.345 ms for the whole forward at (8, 2048, 12,
// 64), 0.79 against 0.84 ms at (8, 2048, 16, 128); the tensor-core wy_bwd_kernel backward: the
// backward 0.75 against 0.90 ms and 2.09 against 2.22 ms there), WY_TENSOR_CORE or WY_REFERENCE
// both directions. Both forward kernels write the same factors, so either backward reads
// either's. HY_GDN_FAST_WY=1 / HY_GDN_REFERENCE_WY=1 in the environment pick one kind for both.
enum WyMode { WY_UNSET = -2, WY_DEFAULT = -1, WY_TENSOR_CORE = 0, WY_REFERENCE = 1 };
int g_wy_mode = WY_UNSET;

WyMode wy_mode() {
    if (g_wy_mode == WY_UNSET) {
        const char *fast = getenv("HY_GDN_FAST_WY"), *ref = getenv("HY_GDN_REFERENCE_WY");
        g_wy_mode = (ref && ref[0] == '1')     ? WY_REFERENCE
                    : (fast && fast[0] == '1') ? WY_TENSOR_CORE
                                               : WY_DEFAULT;
    }
    return (WyMode)g_wy_mode;
}
bool wy_ref_forward() { return wy_mode() != WY_TENSOR_CORE; }
bool wy_ref_backward() { return wy_mode() == WY_REFERENCE; }

int num_sms() {
    static int n = 0;
    if (!n) {
        int dev;
        CUDA_CHECK(cudaGetDevice(&dev));
        CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev));
    }
    return n;
}

// Blocks of `kernel` (256 threads, `smem` bytes of dynamic shared memory) resident on one SM.
template <class Kern>
int resident(Kern kernel, size_t smem) {
    if (smem > 48 * 1024)
        CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        (int)smem));
    int n = 0;
    CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, 256, smem));
    return n > 0 ? n : 1;
}

// Rows of S per block in the sequential passes, from {16, 32, 64} up to maxbv (occ[i]: blocks
// of that size resident per SM). Every block runs all NC chunks in sequence and its work per
// chunk grows with bv, so the time goes as (waves of blocks) x bv; ties go to the larger bv
// (fewer blocks reload W and K). Measured on an H200 against the rule it replaced (the
// largest bv with at least one block per SM): the backward at (8, 2048, 12, 64) 0.75 -> 0.71
// ms (bv 16: two blocks an SM where bv 32 took two waves of one), the forward at (4, 4096, 16,
// 128) 0.86 -> 0.79 ms (bv 64: one wave of 128 blocks); the other shapes choose as before.
int pick_bv(int BH, int D, int maxbv, const int occ[3]) {
    if (g_force_bv) return std::min(g_force_bv, maxbv);
    long best = -1;
    int pick = 16;
    for (int i = 0, bv = 16; bv <= maxbv; bv *= 2, i++) {
        const long blocks = (long)BH * (D / bv), slots = (long)num_sms() * occ[i];
        const long cost = (blocks + slots - 1) / slots * bv;
        if (best < 0 || cost <= best) best = cost, pick = bv;
    }
    return pick;
}

template <class Kern>
void launch(Kern kernel, dim3 grid, int threads, size_t smem, cudaStream_t st, const Args &a) {
    if (smem > 48 * 1024)
        CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        (int)smem));
    kernel<<<grid, threads, smem, st>>>(a);
    CUDA_CHECK(cudaGetLastError());
}

// saved: the forward part of the workspace; bwd_ws: the backward part (NULL in forward).
Args make_args(int B, int T, int H, int D, void *saved, void *bwd_ws) {
    Args a = {};
    a.B = B;
    a.T = T;
    a.H = H;
    a.NC = (T + CH - 1) / CH;
    const WsLayout w = ws_layout(B, T, H, D);
    char *fs = (char *)saved, *bs = (char *)bwd_ws;
    a.G = (float *)(fs + w.G);
    a.Whi = (bf16 *)(fs + w.Whi);
    a.Wlo = (bf16 *)(fs + w.Wlo);
    a.U = (float *)(fs + w.U);
    a.Sc = (bf16 *)(fs + w.Sc);
    a.N = (bf16 *)(fs + w.N);
    if (bs) {
        a.dN = (float *)(bs + w.dN);
        a.dHc = (bf16 *)(bs + w.dHc);
        a.dW = (float *)(bs + w.dW);
        a.dG = (float *)(bs + w.dG);
    }
    return a;
}

// Kernels 1 and 2 (both directions need them).
template <int D>
void run_wy_and_states(const Args &a, cudaStream_t st) {
    const dim3 chunks(a.NC, a.B * a.H);
    if (wy_ref_forward())
        launch(wy_ref_kernel<D>, chunks, 2 * D, 0, st, a);
    else
        launch(wy_kernel<D>, chunks, 256, WySmem<D>::TOTAL, st, a);
    static int occ[3] = {0, 0, 0};  // per D (one instance per template)
    if (!occ[0]) {
        occ[0] = resident(state_fwd_kernel<D, 16>, FwdStateSmem<D, 16>::TOTAL);
        occ[1] = resident(state_fwd_kernel<D, 32>, FwdStateSmem<D, 32>::TOTAL);
        occ[2] = resident(state_fwd_kernel<D, 64>, FwdStateSmem<D, 64>::TOTAL);
    }
    const int bv = pick_bv(a.B * a.H, D, 64, occ);
    const dim3 g(D / bv, a.B * a.H);
    if (bv == 64)
        launch(state_fwd_kernel<D, 64>, g, 256, FwdStateSmem<D, 64>::TOTAL, st, a);
    else if (bv == 32)
        launch(state_fwd_kernel<D, 32>, g, 256, FwdStateSmem<D, 32>::TOTAL, st, a);
    else
        launch(state_fwd_kernel<D, 16>, g, 256, FwdStateSmem<D, 16>::TOTAL, st, a);
}

template <int D>
void run_fwd(const Args &a, cudaStream_t st) {
    run_wy_and_states<D>(a, st);
    launch(out_kernel<D, false>, dim3(a.NC, a.B * a.H), 256, OutSmem<D, false>::TOTAL, st, a);
}

// recompute: kernels 1 and 2 first; else the forward's results are in the saved workspace.
template <int D>
void run_bwd(const Args &a, bool recompute, cudaStream_t st) {
    if (recompute) run_wy_and_states<D>(a, st);
    const dim3 chunks(a.NC, a.B * a.H);
    launch(out_kernel<D, true>, chunks, 256, OutSmem<D, true>::TOTAL, st, a);
    // BV = 64 needs more shared memory than an SM has at D = 128.
    constexpr int maxbv = D == 128 ? 32 : 64;
    static int occ[3] = {0, 0, 0};
    if (!occ[0]) {
        occ[0] = resident(state_bwd_kernel<D, 16>, BwdStateSmem<D, 16>::TOTAL);
        occ[1] = resident(state_bwd_kernel<D, 32>, BwdStateSmem<D, 32>::TOTAL);
        occ[2] = resident(state_bwd_kernel<D, maxbv>, BwdStateSmem<D, maxbv>::TOTAL);
    }
    const int bv = pick_bv(a.B * a.H, D, maxbv, occ);
    const dim3 g(D / bv, a.B * a.H);
    if (bv == 16)
        launch(state_bwd_kernel<D, 16>, g, 256, BwdStateSmem<D, 16>::TOTAL, st, a);
    else if (bv == 32)
        launch(state_bwd_kernel<D, 32>, g, 256, BwdStateSmem<D, 32>::TOTAL, st, a);
    else
        launch(state_bwd_kernel<D, maxbv>, g, 256, BwdStateSmem<D, maxbv>::TOTAL, st, a);
    launch(dqk_kernel<D>, chunks, 256, DqkSmem<D>::TOTAL, st, a);
    if (wy_ref_backward())
        launch(wy_bwd_ref_kernel<D>, chunks, 2 * D, WyBwdRefSmem<D>::TOTAL, st, a);
    else
        launch(wy_bwd_kernel<D>, chunks, 256, WyBwdSmem<D>::TOTAL, st, a);
}

}  // namespace

// ---------------------------------------------------------------- entry points
extern "C" size_t hy_cuda_gdn_workspace_bytes(int B, int T, int H, int D, int chunk) {
    check_dims("hy_cuda_gdn_workspace_bytes", B, T, H, D, chunk);
    const WsLayout w = ws_layout(B, T, H, D);
    return w.saved + w.bwd;
}

extern "C" size_t hy_cuda_gdn_saved_bytes(int B, int T, int H, int D, int chunk) {
    check_dims("hy_cuda_gdn_saved_bytes", B, T, H, D, chunk);
    return ws_layout(B, T, H, D).saved;
}

extern "C" void hy_cuda_gdn_fwd(int B, int T, int H, int D, int chunk, const void *q, const void *k,
                                const void *v, const float *alpha, const float *beta,
                                const float *S0, void *o, float *S_out, void *workspace,
                                void *stream) {
    const char *fn = "hy_cuda_gdn_fwd";
    check_dims(fn, B, T, H, D, chunk);
    check_ptr(fn, "q", q, 16, true);
    check_ptr(fn, "k", k, 16, true);
    check_ptr(fn, "v", v, 16, true);
    check_ptr(fn, "alpha", alpha, 4, true);
    check_ptr(fn, "beta", beta, 4, true);
    check_ptr(fn, "S0", S0, 8, false);
    check_ptr(fn, "o", o, 16, true);
    check_ptr(fn, "S_out", S_out, 8, false);
    check_ptr(fn, "workspace", workspace, 256, true);
    Args a = make_args(B, T, H, D, workspace, nullptr);
    a.q = (const bf16 *)q;
    a.k = (const bf16 *)k;
    a.v = (const bf16 *)v;
    a.alpha = alpha;
    a.beta = beta;
    a.S0 = S0;
    a.o = (bf16 *)o;
    a.S_out = S_out;
    cudaStream_t st = (cudaStream_t)stream;
    if (D == 64)
        run_fwd<64>(a, st);
    else
        run_fwd<128>(a, st);
}

namespace {
// Both backward entry points: saved is the forward part of the workspace (written here first
// when recompute), bwd_ws the backward part.
void gdn_bwd(const char *fn, int B, int T, int H, int D, int chunk, const void *q, const void *k,
             const void *v, const float *alpha, const float *beta, const float *S0,
             const void *d_o, const float *dS_out, float *dq, float *dk, float *dv,
             float *dalpha, float *dbeta, float *dS0, const void *saved, void *bwd_ws,
             bool recompute, void *stream) {
    check_dims(fn, B, T, H, D, chunk);
    check_ptr(fn, "q", q, 16, true);
    check_ptr(fn, "k", k, 16, true);
    check_ptr(fn, "v", v, 16, true);
    check_ptr(fn, "alpha", alpha, 4, true);
    check_ptr(fn, "beta", beta, 4, true);
    check_ptr(fn, "S0", S0, 8, false);
    check_ptr(fn, "d_o", d_o, 16, true);
    check_ptr(fn, "dS_out", dS_out, 8, false);
    check_ptr(fn, "dq", dq, 16, true);
    check_ptr(fn, "dk", dk, 16, true);
    check_ptr(fn, "dv", dv, 16, true);
    check_ptr(fn, "dalpha", dalpha, 4, true);
    check_ptr(fn, "dbeta", dbeta, 4, true);
    check_ptr(fn, "dS0", dS0, 8, false);
    check_ptr(fn, recompute ? "workspace" : "saved", saved, 256, true);
    check_ptr(fn, "workspace", bwd_ws, 256, true);
    // The saved part is only read when !recompute (Args has no const pointers).
    Args a = make_args(B, T, H, D, const_cast<void *>(saved), bwd_ws);
    a.q = (const bf16 *)q;
    a.k = (const bf16 *)k;
    a.v = (const bf16 *)v;
    a.dO = (const bf16 *)d_o;
    a.alpha = alpha;
    a.beta = beta;
    a.S0 = S0;
    a.dS = dS_out;
    a.dq = dq;
    a.dk = dk;
    a.dv = dv;
    a.dalpha = dalpha;
    a.dbeta = dbeta;
    a.dS0 = dS0;
    cudaStream_t st = (cudaStream_t)stream;
    if (D == 64)
        run_bwd<64>(a, recompute, st);
    else
        run_bwd<128>(a, recompute, st);
}
}  // namespace

extern "C" void hy_cuda_gdn_bwd(int B, int T, int H, int D, int chunk, const void *q, const void *k,
                                const void *v, const float *alpha, const float *beta,
                                const float *S0, const void *d_o, const float *dS_out, float *dq,
                                float *dk, float *dv, float *dalpha, float *dbeta, float *dS0,
                                void *workspace, void *stream) {
    const char *fn = "hy_cuda_gdn_bwd";
    check_dims(fn, B, T, H, D, chunk);
    check_ptr(fn, "workspace", workspace, 256, true);
    char *bwd_ws = (char *)workspace + ws_layout(B, T, H, D).saved;
    gdn_bwd(fn, B, T, H, D, chunk, q, k, v, alpha, beta, S0, d_o, dS_out, dq, dk, dv, dalpha,
            dbeta, dS0, workspace, bwd_ws, true, stream);
}

extern "C" void hy_cuda_gdn_bwd_saved(int B, int T, int H, int D, int chunk, const void *q,
                                      const void *k, const void *v, const float *alpha,
                                      const float *beta, const float *S0, const void *d_o,
                                      const float *dS_out, float *dq, float *dk, float *dv,
                                      float *dalpha, float *dbeta, float *dS0, const void *saved,
                                      void *workspace, void *stream) {
    gdn_bwd("hy_cuda_gdn_bwd_saved", B, T, H, D, chunk, q, k, v, alpha, beta, S0, d_o, dS_out,
            dq, dk, dv, dalpha, dbeta, dS0, saved, workspace, false, stream);
}

extern "C" void hy_cuda_gdn_set_test_options(int bv, int wy_reference) {
    HY_REQUIRE(bv == 0 || bv == 16 || bv == 32 || bv == 64,
               "hy_cuda_gdn_set_test_options: bv must be 0, 16, 32 or 64, got %d", bv);
    HY_REQUIRE(wy_reference >= -1 && wy_reference <= 1,
               "hy_cuda_gdn_set_test_options: wy_reference must be -1, 0 or 1, got %d",
               wy_reference);
    g_force_bv = bv;
    g_wy_mode = wy_reference;
}

extern "C" void hy_cuda_gdn_step(int B, int H, int D, const void *q, const void *k, const void *v,
                                 const float *alpha, const float *beta, float *S, void *o,
                                 void *stream) {
    const char *fn = "hy_cuda_gdn_step";
    HY_REQUIRE(B >= 1 && H >= 1 && D >= 1, "%s: sizes must be positive (B %d, H %d, D %d)", fn, B,
               H, D);
    HY_REQUIRE((long long)B * H * D <= 0x7fffffffLL - 8, "%s: B * H * D is too large", fn);
    check_ptr(fn, "q", q, 2, true);
    check_ptr(fn, "k", k, 2, true);
    check_ptr(fn, "v", v, 2, true);
    check_ptr(fn, "alpha", alpha, 4, true);
    check_ptr(fn, "beta", beta, 4, true);
    check_ptr(fn, "S", S, 4, true);
    check_ptr(fn, "o", o, 2, true);
    const int rows = B * H * D;
    step_kernel<<<(rows + 7) / 8, 256, 0, (cudaStream_t)stream>>>(
        rows, D, (const bf16 *)q, (const bf16 *)k, (const bf16 *)v, alpha, beta, S, (bf16 *)o);
    CUDA_CHECK(cudaGetLastError());
}

extern "C" void hy_cuda_gdn_time(int B, int T, int H, int D, const void *q, const void *k,
                                 const void *v, const float *alpha, const float *beta,
                                 const float *S0, void *o, float *S_out, const void *d_o,
                                 const float *dS_out, float *dq, float *dk, float *dv,
                                 float *dalpha, float *dbeta, float *dS0, void *workspace,
                                 int warmup, int iters, double *fwd_ms, double *fwd_bwd_ms,
                                 double *fwd_bwd_recompute_ms) {
    HY_REQUIRE(iters >= 1 && warmup >= 0, "hy_cuda_gdn_time: iters must be >= 1");
    cudaEvent_t e0, e1;
    CUDA_CHECK(cudaEventCreate(&e0));
    CUDA_CHECK(cudaEventCreate(&e1));
    double *out[3] = {fwd_ms, fwd_bwd_ms, fwd_bwd_recompute_ms};
    char *bwd_ws = (char *)workspace + hy_cuda_gdn_saved_bytes(B, T, H, D, CH);
    for (int pass = 0; pass < 3; pass++) {
        if (!out[pass]) continue;
        std::vector<float> ms;
        for (int it = 0; it < warmup + iters; it++) {
            CUDA_CHECK(cudaEventRecord(e0, 0));
            hy_cuda_gdn_fwd(B, T, H, D, CH, q, k, v, alpha, beta, S0, o, S_out, workspace, NULL);
            if (pass == 1)
                hy_cuda_gdn_bwd_saved(B, T, H, D, CH, q, k, v, alpha, beta, S0, d_o, dS_out, dq,
                                      dk, dv, dalpha, dbeta, dS0, workspace, bwd_ws, NULL);
            if (pass == 2)
                hy_cuda_gdn_bwd(B, T, H, D, CH, q, k, v, alpha, beta, S0, d_o, dS_out, dq, dk, dv,
                                dalpha, dbeta, dS0, workspace, NULL);
            CUDA_CHECK(cudaEventRecord(e1, 0));
            CUDA_CHECK(cudaEventSynchronize(e1));
            float t = 0.f;
            CUDA_CHECK(cudaEventElapsedTime(&t, e0, e1));
            if (it >= warmup) ms.push_back(t);
        }
        std::sort(ms.begin(), ms.end());
        const double med = ms.size() % 2 ? ms[ms.size() / 2]
                                         : 0.5 * (ms[ms.size() / 2 - 1] + ms[ms.size() / 2]);
        *out[pass] = med;
    }
    CUDA_CHECK(cudaEventDestroy(e0));
    CUDA_CHECK(cudaEventDestroy(e1));
}
