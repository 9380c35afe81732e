// gdn_common.cuh: what the gated delta rule's CUDA files share (gdn.cu: entry points and the
// workspace; gdn_fwd.cu: the forward kernels; gdn_bwd.cu: the backward ones): the kernels'
// arguments, the tile helpers (cp.async, ldmatrix, mma), a chunk's coordinates and decay, the
// 64 x 64 unit-lower inversion of both WY kernels, the output kernel (forward and backward),
// and the host's launch helpers. The math and the kernel list: gdn.cu's header comment.
#ifndef HY_GDN_COMMON_CUH
#define HY_GDN_COMMON_CUH

#include <cuda_bf16.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <algorithm>

#include "check.cuh"

namespace gdn {

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
    float *dN;    // (chunks, 64, D)   dN_loc
    bf16 *dNb;    // (chunks, 64, D)   dN (its consumers round it to bf16 for the tensor cores)
    bf16 *dHc;    // (chunks, D, D)    dL/dS at the end of each chunk
    bf16 *dW;     // (chunks, 64, D)
    float *dG;    // (chunks, 64)      partial dL/dg from dqk_kernel
};


// ---------------------------------------------------------------- host side, shared
// Test hooks (hy_cuda_gdn_set_test_options, gdn.cu): forced rows of the state per block in the
// sequential passes (0: automatic) and which WY kernels run.
extern int g_force_bv;
bool wy_ref_forward();
bool wy_ref_backward();
int num_sms();
int pick_bv(int BH, int D, int maxbv, const int occ[3]);

// Blocks of `kernel` (256 threads, `smem` bytes of dynamic shared memory) resident on one SM.
template <class Kern>
inline int resident(Kern kernel, size_t smem) {
    if (smem > 48 * 1024)
        CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        (int)smem));
    int n = 0;
    CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, 256, smem));
    return n > 0 ? n : 1;
}

template <class Kern>
inline void launch(Kern kernel, dim3 grid, int threads, size_t smem, cudaStream_t st, const Args &a) {
    if (smem > 48 * 1024)
        CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        (int)smem));
    kernel<<<grid, threads, smem, st>>>(a);
    CUDA_CHECK(cudaGetLastError());
}


// The passes for head size D (64 or 128): kernels 1 and 2 and the whole forward (gdn_fwd.cu);
// the whole backward, kernels 1 and 2 first when recompute (gdn_bwd.cu).
void run_wy_and_states(int D, const Args &a, cudaStream_t st);
void run_fwd(int D, const Args &a, cudaStream_t st);
void run_bwd(int D, const Args &a, bool recompute, cudaStream_t st);

}  // namespace gdn

// Device code, internal to each file that includes this one.
namespace {
using namespace gdn;

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

// With (b, h) already split from bh = b H + h (the sequential passes split it once a block).
__device__ __forceinline__ void chunk_coords_bh(const Args &a, int c, int b, int h, int bh, int &L,
                                                size_t &tok0, size_t &ci) {
    const int t0 = c * CH;
    L = min(CH, a.T - t0);
    tok0 = ((size_t)b * a.T + t0) * a.H + h;
    ci = (size_t)bh * a.NC + c;
}
__device__ __forceinline__ void chunk_coords(const Args &a, int c, int bh, int &L, size_t &tok0,
                                             size_t &ci) {
    chunk_coords_bh(a, c, bh / a.H, bh % a.H, bh, L, tok0, ci);
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
// __syncthreads(). The block products keep four partial sums a thread and read KG four floats
// at a time: a single sum made each step wait for the one before (a chain of shared loads and
// adds that took a third of the WY backward kernel).
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
    for (int idx = tid; idx < 6 * 256; idx += nthr) {  // the 6 blocks above the diagonal
        const int p = idx >> 8, ra = p < 3 ? 0 : (p < 5 ? 1 : 2);
        const int cb = p - (ra == 0 ? 0 : (ra == 1 ? 3 : 5)) + ra + 1;
        sA[(ra * 16 + ((idx >> 4) & 15)) * CH + cb * 16 + (idx & 15)] = 0.f;
    }
    __syncthreads();
    for (int d = 1; d < 4; d++) {
        const int n = (4 - d) * 256;  // pairs (a, b) = (b + d, b), b < 4 - d; 16 x 16 each
        for (int idx = tid; idx < n; idx += nthr) {
            const int b = idx >> 8, r = (idx >> 4) & 15, c = idx & 15, a = b + d;
            const float *kg = sKG + (a * 16 + r) * LKG, *ac = sA + b * 16 + c;
            float s0 = 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f;
            for (int l0 = b * 16; l0 < a * 16; l0 += 16) {
#pragma unroll
                for (int l = l0; l < l0 + 16; l += 4) {
                    const float4 k4 = *reinterpret_cast<const float4 *>(kg + l);
                    s0 += k4.x * ac[l * CH];
                    s1 += k4.y * ac[(l + 1) * CH];
                    s2 += k4.z * ac[(l + 2) * CH];
                    s3 += k4.w * ac[(l + 3) * CH];
                }
            }
            sX[idx] = rb[a * 16 + r] * ((s0 + s1) + (s2 + s3));
        }
        __syncthreads();
        for (int idx = tid; idx < n; idx += nthr) {
            const int b = idx >> 8, r = (idx >> 4) & 15, c = idx & 15, a = b + d;
            const float *ar = sA + (a * 16 + r) * CH + a * 16, *xc = sX + b * 256 + c;
            float s0 = 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f;
#pragma unroll
            for (int l = 0; l < 16; l += 4) {
                const float4 a4 = *reinterpret_cast<const float4 *>(ar + l);
                s0 += a4.x * xc[l * 16];
                s1 += a4.y * xc[(l + 1) * 16];
                s2 += a4.z * xc[(l + 2) * 16];
                s3 += a4.w * xc[(l + 3) * 16];
            }
            sA[(a * 16 + r) * CH + b * 16 + c] = -((s0 + s1) + (s2 + s3));
        }
        __syncthreads();
    }
}

// 8 warps over a (64 x 64) product: rows 16 (w % 4), columns 32 (w / 4).
__device__ __forceinline__ int sq_m0(int warp) { return 16 * (warp & 3); }
__device__ __forceinline__ int sq_n0(int warp) { return 32 * (warp >> 2); }


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

}  // namespace

#endif
