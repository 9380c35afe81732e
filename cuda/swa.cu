// swa.cu: sliding-window causal attention on the GPU for training (forward,
// backward and their timing), flash style, bf16 tensor cores
// (mma.sync.m16n8k16, fp32 accumulation); the one-token decoding steps are in
// swa_decode.cu. The CPU reference is layers/swa.c; the C interface and the
// semantics are in hy_cuda_swa.h.
//
// Layout: q, k, v, o, d_o (B, T, H, D) bf16; row t of pair (b, h) starts at
// ((b * T + t) * H + h) * D, rows of one pair are H * D elements apart.
// lse and the backward's delta are (B, T, H) fp32.
//
// Tiles. Every training kernel runs 4 warps (128 threads) on a 64-row tile;
// each warp owns 16 rows of it and does all its matrix products on its own
// (no cross-warp reductions), so the only block-wide synchronisation is the
// double-buffered shared-memory pipeline (cp.async, two stages).
//   forward   grid (ceil(T/64), H, B): a block owns 64 queries, walks the
//             64-key tiles that overlap its windows, online softmax in
//             registers (log2 domain), writes o and lse.
//   backward  (1) delta_i = dO_i . O_i (one warp a row), (2) dk, dv: a block
//             owns 64 keys and walks the query tiles (BQ rows) whose windows
//             contain them, recomputing P^T = exp(K Q^T - lse) per tile,
//             (3) dq: a block owns 64 queries and walks the key tiles like the
//             forward. No atomics: every output element is written once, by
//             one thread, so results are deterministic.
// Only tiles that overlap a window are visited (block-sparse); inside a tile
// a warp whose 16 rows see none of it skips the tile, and the per-element
// mask runs only on tiles that are not wholly inside every row's window.
//
// Shared-memory rows are padded to D + 8 bf16 (16 bytes), so the 8 row
// addresses of each ldmatrix phase fall in 8 different 16-byte bank groups.
//
// Fragment layouts of mma.m16n8k16 (g = lane / 4, t = lane % 4):
//   A (16x16, row major): a0 (g, 2t..2t+1), a1 (g+8, 2t..), a2 (g, 2t+8..), a3 (g+8, 2t+8..)
//   B (16x8, "col"):      b0 (k 2t..2t+1, n g), b1 (k 2t+8.., n g)
//   C (16x8):             c0, c1 (g, 2t..2t+1), c2, c3 (g+8, 2t..2t+1)
// A C tile pair (columns 16k..16k+15) is exactly the A fragment of the next
// product (P V, dS K, ...) once packed to bf16: a0 = C[2k].c01, a1 = C[2k].c23,
// a2 = C[2k+1].c01, a3 = C[2k+1].c23.
#include <cuda_bf16.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "check.cuh"
#include "hy_cuda_swa.h"
#include "swa_common.cuh"

namespace {

constexpr int BM = 64;      // query rows of a forward / dq block, key rows of a dk/dv block
constexpr int BN = 64;      // key rows of a forward / dq tile
constexpr int NTHR = 128;   // 4 warps, 16 rows each
constexpr float LOG2E = 1.4426950408889634f;
constexpr float LN2 = 0.6931471805599453f;

// ---------------------------------------------------------------- PTX helpers

__device__ __forceinline__ uint32_t smem_u32(const void *p) {
    return (uint32_t)__cvta_generic_to_shared(p);
}

__device__ __forceinline__ void cp_async16(void *dst, const void *src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_u32(dst)), "l"(src)
                 : "memory");
}
__device__ __forceinline__ void cp_async_commit() {
    asm volatile("cp.async.commit_group;\n" ::: "memory");
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Four 8x8 bf16 matrices; lanes 8m..8m+7 give the row addresses of matrix m,
// register m receives matrix m (lane l: row l/4, columns 2(l%4), 2(l%4)+1).
__device__ __forceinline__ void ldsm4(uint32_t r[4], const bf16raw *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_u32(p))
                 : "memory");
}
// Same, transposed: lane l receives rows 2(l%4), 2(l%4)+1 of column l/4.
__device__ __forceinline__ void ldsm4_t(uint32_t r[4], const bf16raw *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_u32(p))
                 : "memory");
}

// c += a b (16x8x16, bf16 in, fp32 accumulate).
__device__ __forceinline__ void mma16816(float c[4], const uint32_t a[4], uint32_t b0,
                                         uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two floats to a bf16 pair, `lo` in the low half (the lower column).
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t *>(&v);
}

// The A fragment (rows r0..r0+15, columns c0..c0+15) of a row-major smem
// tile with row stride STR: matrices (r0, c0), (r0+8, c0), (r0, c0+8), (r0+8, c0+8).
template <int STR>
__device__ __forceinline__ void load_a(uint32_t a[4], const bf16raw *s, int r0, int c0,
                                       int lane) {
    ldsm4(a, s + (r0 + ((lane >> 3) & 1) * 8 + (lane & 7)) * STR + c0 + (lane >> 4) * 8);
}

// B fragments of two n-tiles when B[k][n] = X[n][k] (X row-major in smem, the
// n index is X's row: K for Q K^T): rows n0..n0+15 of X, columns k0..k0+15.
// b[0], b[1]: n-tile n0; b[2], b[3]: n-tile n0 + 8.
template <int STR>
__device__ __forceinline__ void load_b_nt(uint32_t b[4], const bf16raw *s, int n0, int k0,
                                          int lane) {
    ldsm4(b, s + (n0 + (lane >> 4) * 8 + (lane & 7)) * STR + k0 + ((lane >> 3) & 1) * 8);
}

// B fragments of two n-tiles when B[k][n] = X[k][n] (X row-major in smem,
// the k index is X's row: V for P V): rows k0..k0+15, columns n0..n0+15.
// b[0], b[1]: n-tile n0; b[2], b[3]: n-tile n0 + 8.
template <int STR>
__device__ __forceinline__ void load_b_t(uint32_t b[4], const bf16raw *s, int k0, int n0,
                                         int lane) {
    ldsm4_t(b, s + (k0 + ((lane >> 3) & 1) * 8 + (lane & 7)) * STR + n0 + (lane >> 4) * 8);
}

// Rows t0 .. t0+ROWS-1 of one (b, h) pair into a padded smem tile: g points at
// row 0 of the pair, rows are rs elements apart. Rows at or past T are zeros
// (never garbage: 0 * NaN would poison the products).
template <int D, int ROWS>
__device__ __forceinline__ void load_tile(bf16raw *s, const bf16raw *g, int t0, int T,
                                          long long rs, int tid) {
    constexpr int CH = D / 8, STR = D + 8;
#pragma unroll
    for (int c = tid; c < ROWS * CH; c += NTHR) {
        int r = c / CH, cc = c % CH, t = t0 + r;
        bf16raw *dst = s + r * STR + cc * 8;
        if (t < T)
            cp_async16(dst, g + (long long)t * rs + cc * 8);
        else
            *reinterpret_cast<uint4 *>(dst) = make_uint4(0, 0, 0, 0);
    }
}

__device__ __forceinline__ float quad_max(float x) {
    x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
    return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
__device__ __forceinline__ float quad_sum(float x) {
    x += __shfl_xor_sync(0xffffffffu, x, 1);
    return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

// ---------------------------------------------------------------- forward

template <int D>
constexpr size_t fwd_smem() {
    return (size_t)(BM + 4 * BN) * (D + 8) * sizeof(bf16raw);
}

// W here is min(window, T). sl2 = log2(e) / sqrt(D): scores live in the log2 domain.
// The grid covers query blocks qb_first.. only (rows before are not written).
template <int D>
__global__ void __launch_bounds__(NTHR)
    swa_fwd_kernel(int T, int H, int W, int qb_first, float sl2, const bf16raw *__restrict__ q,
                   const bf16raw *__restrict__ k, const bf16raw *__restrict__ v,
                   bf16raw *__restrict__ o, float *__restrict__ lse) {
    constexpr int STR = D + 8, KD = D / 16, ND = D / 8, NK = BN / 8;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    bf16raw *sQ = reinterpret_cast<bf16raw *>(smem_raw);  // (BM, STR)
    bf16raw *sK = sQ + BM * STR;                           // 2 stages of (BN, STR)
    bf16raw *sV = sK + 2 * BN * STR;                       // 2 stages of (BN, STR)

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
    // The last query blocks have the most keys in full causal mode: start them first.
    const int qb = qb_first + gridDim.x - 1 - blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    const int i0 = qb * BM;
    const long long rs = (long long)H * D;
    const size_t base = (size_t)b * T * rs + (size_t)h * D;
    const bf16raw *gq = q + base, *gk = k + base, *gv = v + base;

    // Keys any query of the block can see: (i0 - W, i0 + BM - 1], clipped to [0, T).
    const int j_lo = max(0, i0 - W + 1), j_hi = min(T - 1, i0 + BM - 1);
    const int kb_lo = j_lo / BN, kb_hi = j_hi / BN;

    load_tile<D, BM>(sQ, gq, i0, T, rs, tid);
    load_tile<D, BN>(sK, gk, kb_lo * BN, T, rs, tid);
    load_tile<D, BN>(sV, gv, kb_lo * BN, T, rs, tid);
    cp_async_commit();

    const int r_lo = i0 + warp * 16;  // this warp's first query row
    const int row[2] = {r_lo + g, r_lo + g + 8};
    uint32_t qa[KD][4];
    float acc[ND][4];
#pragma unroll
    for (int n = 0; n < ND; n++) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};

    for (int kb = kb_lo; kb <= kb_hi; kb++) {
        const int st = (kb - kb_lo) & 1;
        if (kb < kb_hi) {  // prefetch the next tile into the other stage
            load_tile<D, BN>(sK + (st ^ 1) * BN * STR, gk, (kb + 1) * BN, T, rs, tid);
            load_tile<D, BN>(sV + (st ^ 1) * BN * STR, gv, (kb + 1) * BN, T, rs, tid);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        if (kb == kb_lo) {
#pragma unroll
            for (int kk = 0; kk < KD; kk++) load_a<STR>(qa[kk], sQ, warp * 16, kk * 16, lane);
        }
        const int k0 = kb * BN;
        const bf16raw *tK = sK + st * BN * STR, *tV = sV + st * BN * STR;
        // Skip the tile when no key of it is in any of this warp's 16 windows.
        if (k0 <= r_lo + 15 && k0 + BN - 1 > r_lo - W) {
            float s[NK][4];
#pragma unroll
            for (int n = 0; n < NK; n++) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
            for (int kk = 0; kk < KD; kk++)
#pragma unroll
                for (int np = 0; np < NK / 2; np++) {
                    uint32_t bb[4];
                    load_b_nt<STR>(bb, tK, np * 16, kk * 16, lane);
                    mma16816(s[2 * np], qa[kk], bb[0], bb[1]);
                    mma16816(s[2 * np + 1], qa[kk], bb[2], bb[3]);
                }
            // Every (row, key) pair of the warp valid: k0+BN-1 <= r_lo and k0 > r_lo+15-W.
            const bool full = (k0 + BN - 1 <= r_lo) && (k0 > r_lo + 15 - W);
            float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
            for (int n = 0; n < NK; n++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    float x = s[n][e] * sl2;
                    if (!full) {
                        int i = row[e >> 1], j = k0 + n * 8 + 2 * t4 + (e & 1);
                        if (j > i || j <= i - W) x = -INFINITY;
                    }
                    s[n][e] = x;
                    mx[e >> 1] = fmaxf(mx[e >> 1], x);
                }
            float mu[2], alpha[2];
#pragma unroll
            for (int r = 0; r < 2; r++) {
                float mn = fmaxf(m[r], quad_max(mx[r]));
                // A row with nothing visible yet keeps m = -inf; exponentiate against 0
                // then, so that exp2(-inf - (-inf)) never makes a NaN.
                mu[r] = mn == -INFINITY ? 0.f : mn;
                alpha[r] = exp2f(m[r] - mu[r]);
                m[r] = mn;
                l[r] *= alpha[r];
            }
#pragma unroll
            for (int n = 0; n < NK; n++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    float p = exp2f(s[n][e] - mu[e >> 1]);
                    s[n][e] = p;
                    l[e >> 1] += p;
                }
#pragma unroll
            for (int n = 0; n < ND; n++) {
                acc[n][0] *= alpha[0], acc[n][1] *= alpha[0];
                acc[n][2] *= alpha[1], acc[n][3] *= alpha[1];
            }
            // O += P V: P from registers (bf16), V^T fragments by ldmatrix.trans.
#pragma unroll
            for (int kk = 0; kk < NK / 2; kk++) {
                uint32_t pa[4] = {pack_bf16(s[2 * kk][0], s[2 * kk][1]),
                                  pack_bf16(s[2 * kk][2], s[2 * kk][3]),
                                  pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                                  pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
                for (int dp = 0; dp < ND / 2; dp++) {
                    uint32_t bb[4];
                    load_b_t<STR>(bb, tV, kk * 16, dp * 16, lane);
                    mma16816(acc[2 * dp], pa, bb[0], bb[1]);
                    mma16816(acc[2 * dp + 1], pa, bb[2], bb[3]);
                }
            }
        }
        __syncthreads();  // the next iteration's prefetch overwrites this stage
    }

    // l was summed per thread over its columns: add up the quad.
#pragma unroll
    for (int r = 0; r < 2; r++) {
        l[r] = quad_sum(l[r]);
        float inv = l[r] > 0.f ? 1.f / l[r] : 0.f;
        if (row[r] < T) {
            bf16raw *orow = o + base + (size_t)row[r] * rs;
#pragma unroll
            for (int n = 0; n < ND; n++)
                *reinterpret_cast<uint32_t *>(orow + n * 8 + 2 * t4) =
                    pack_bf16(acc[n][2 * r] * inv, acc[n][2 * r + 1] * inv);
            if (lse && t4 == 0)
                lse[((long long)b * T + row[r]) * H + h] = (m[r] + log2f(l[r])) * LN2;
        }
    }
}

// ---------------------------------------------------------------- backward

// delta (B, T, H) = sum_d dO * O, one warp a row.
template <int D>
__global__ void swa_delta_kernel(long long rows, const bf16raw *__restrict__ o,
                                 const bf16raw *__restrict__ d_o, float *__restrict__ delta) {
    long long r = (long long)blockIdx.x * (blockDim.x / 32) + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (r >= rows) return;
    const bf16raw *orow = o + r * D, *grow = d_o + r * D;
    float s = 0.f;
#pragma unroll
    for (int d = lane * 2; d < D; d += 64) {
        uint32_t a = *reinterpret_cast<const uint32_t *>(orow + d);
        uint32_t c = *reinterpret_cast<const uint32_t *>(grow + d);
        s += bf2f((bf16raw)(a & 0xffff)) * bf2f((bf16raw)(c & 0xffff)) +
             bf2f((bf16raw)(a >> 16)) * bf2f((bf16raw)(c >> 16));
    }
#pragma unroll
    for (int off = 16; off; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
    if (lane == 0) delta[r] = s;
}

template <int D, int BQ>
constexpr size_t dkdv_smem() {
    return (size_t)(2 * BM + 4 * BQ) * (D + 8) * sizeof(bf16raw) + 4 * BQ * sizeof(float);
}

// dK, dV for 64 keys: walk the query tiles (BQ rows) whose windows hold any of
// them. Per warp (16 keys): S^T = K Q^T, P^T = exp2(S^T sl2 - lse2), dV += P^T dO,
// dP^T = V dO^T, dS^T = P^T (dP^T - delta), dK += dS^T Q; dk = scale dK.
template <int D, int BQ>
__global__ void __launch_bounds__(NTHR)
    swa_dkdv_kernel(int T, int H, int W, float sl2, float scale, const bf16raw *__restrict__ q,
                    const bf16raw *__restrict__ k, const bf16raw *__restrict__ v,
                    const bf16raw *__restrict__ d_o, const float *__restrict__ lse,
                    const float *__restrict__ delta, float *__restrict__ dk,
                    float *__restrict__ dv) {
    constexpr int STR = D + 8, KD = D / 16, ND = D / 8, NQ = BQ / 8;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    bf16raw *sK = reinterpret_cast<bf16raw *>(smem_raw);  // (BM, STR)
    bf16raw *sV = sK + BM * STR;                           // (BM, STR)
    bf16raw *sQ = sV + BM * STR;                           // 2 stages of (BQ, STR)
    bf16raw *sO = sQ + 2 * BQ * STR;                       // dO, 2 stages of (BQ, STR)
    float *sL = reinterpret_cast<float *>(sO + 2 * BQ * STR);  // lse * log2(e), 2 x BQ
    float *sDl = sL + 2 * BQ;                                   // delta, 2 x BQ

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
    const int kb = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    const int k0 = kb * BM;
    const long long rs = (long long)H * D;
    const size_t base = (size_t)b * T * rs + (size_t)h * D;
    const bf16raw *gq = q + base, *gk = k + base, *gv = v + base, *go = d_o + base;
    const float *glse = lse + (size_t)b * T * H + h, *gdl = delta + (size_t)b * T * H + h;

    // Queries that see any of keys k0..k0+BM-1: [k0, k0 + BM - 1 + W - 1], clipped to T.
    const int q_hi = (int)min((long long)T - 1, (long long)k0 + BM - 1 + W - 1);
    const int qt_lo = k0 / BQ, qt_hi = q_hi / BQ;

    auto load_q_tile = [&](int qt, int st) {
        int q0 = qt * BQ;
        load_tile<D, BQ>(sQ + st * BQ * STR, gq, q0, T, rs, tid);
        load_tile<D, BQ>(sO + st * BQ * STR, go, q0, T, rs, tid);
        for (int r = tid; r < BQ; r += NTHR) {
            int i = q0 + r;
            // Rows past T: zero Q and dO, and masked below; keep these finite.
            sL[st * BQ + r] = i < T ? glse[(long long)i * H] * LOG2E : 0.f;
            sDl[st * BQ + r] = i < T ? gdl[(long long)i * H] : 0.f;
        }
    };
    load_tile<D, BM>(sK, gk, k0, T, rs, tid);
    load_tile<D, BM>(sV, gv, k0, T, rs, tid);
    load_q_tile(qt_lo, 0);
    cp_async_commit();

    const int c_lo = k0 + warp * 16;  // this warp's first key row
    const int col[2] = {c_lo + g, c_lo + g + 8};
    float dK[ND][4], dV[ND][4];
#pragma unroll
    for (int n = 0; n < ND; n++)
#pragma unroll
        for (int e = 0; e < 4; e++) dK[n][e] = dV[n][e] = 0.f;

    for (int qt = qt_lo; qt <= qt_hi; qt++) {
        const int st = (qt - qt_lo) & 1;
        if (qt < qt_hi) {
            load_q_tile(qt + 1, st ^ 1);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        const int q0 = qt * BQ;
        const bf16raw *tQ = sQ + st * BQ * STR, *tO = sO + st * BQ * STR;
        const float *tL = sL + st * BQ, *tD = sDl + st * BQ;
        // Some query i of the tile and key j of the warp with j <= i < j + W?
        if (q0 + BQ - 1 >= c_lo && q0 <= c_lo + 15 + W - 1) {
            float s[NQ][4];
#pragma unroll
            for (int n = 0; n < NQ; n++) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
            for (int kk = 0; kk < KD; kk++) {
                uint32_t a[4];
                load_a<STR>(a, sK, warp * 16, kk * 16, lane);
#pragma unroll
                for (int np = 0; np < NQ / 2; np++) {
                    uint32_t bb[4];
                    load_b_nt<STR>(bb, tQ, np * 16, kk * 16, lane);
                    mma16816(s[2 * np], a, bb[0], bb[1]);
                    mma16816(s[2 * np + 1], a, bb[2], bb[3]);
                }
            }
            // Every pair valid: min i >= max j, max i < min j + W, max i < T.
            const bool full =
                (q0 >= c_lo + 15) && (q0 + BQ - 1 <= c_lo + W - 1) && (q0 + BQ - 1 < T);
#pragma unroll
            for (int n = 0; n < NQ; n++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    int il = n * 8 + 2 * t4 + (e & 1), i = q0 + il, j = col[e >> 1];
                    float p = exp2f(s[n][e] * sl2 - tL[il]);
                    if (!full && !(i >= j && i < j + W && i < T)) p = 0.f;
                    s[n][e] = p;
                }
            // dV += P^T dO  (A: P^T from registers; B[k=query][n=d] = dO row-major)
#pragma unroll
            for (int kq = 0; kq < NQ / 2; kq++) {
                uint32_t pa[4] = {pack_bf16(s[2 * kq][0], s[2 * kq][1]),
                                  pack_bf16(s[2 * kq][2], s[2 * kq][3]),
                                  pack_bf16(s[2 * kq + 1][0], s[2 * kq + 1][1]),
                                  pack_bf16(s[2 * kq + 1][2], s[2 * kq + 1][3])};
#pragma unroll
                for (int dp = 0; dp < ND / 2; dp++) {
                    uint32_t bb[4];
                    load_b_t<STR>(bb, tO, kq * 16, dp * 16, lane);
                    mma16816(dV[2 * dp], pa, bb[0], bb[1]);
                    mma16816(dV[2 * dp + 1], pa, bb[2], bb[3]);
                }
            }
            // dP^T = V dO^T
            float dp_[NQ][4];
#pragma unroll
            for (int n = 0; n < NQ; n++) dp_[n][0] = dp_[n][1] = dp_[n][2] = dp_[n][3] = 0.f;
#pragma unroll
            for (int kk = 0; kk < KD; kk++) {
                uint32_t a[4];
                load_a<STR>(a, sV, warp * 16, kk * 16, lane);
#pragma unroll
                for (int np = 0; np < NQ / 2; np++) {
                    uint32_t bb[4];
                    load_b_nt<STR>(bb, tO, np * 16, kk * 16, lane);
                    mma16816(dp_[2 * np], a, bb[0], bb[1]);
                    mma16816(dp_[2 * np + 1], a, bb[2], bb[3]);
                }
            }
            // dS^T = P^T (dP^T - delta), into s
#pragma unroll
            for (int n = 0; n < NQ; n++)
#pragma unroll
                for (int e = 0; e < 4; e++) s[n][e] *= dp_[n][e] - tD[n * 8 + 2 * t4 + (e & 1)];
            // dK += dS^T Q  (B[k=query][n=d] = Q row-major)
#pragma unroll
            for (int kq = 0; kq < NQ / 2; kq++) {
                uint32_t da[4] = {pack_bf16(s[2 * kq][0], s[2 * kq][1]),
                                  pack_bf16(s[2 * kq][2], s[2 * kq][3]),
                                  pack_bf16(s[2 * kq + 1][0], s[2 * kq + 1][1]),
                                  pack_bf16(s[2 * kq + 1][2], s[2 * kq + 1][3])};
#pragma unroll
                for (int dp = 0; dp < ND / 2; dp++) {
                    uint32_t bb[4];
                    load_b_t<STR>(bb, tQ, kq * 16, dp * 16, lane);
                    mma16816(dK[2 * dp], da, bb[0], bb[1]);
                    mma16816(dK[2 * dp + 1], da, bb[2], bb[3]);
                }
            }
        }
        __syncthreads();
    }

#pragma unroll
    for (int r = 0; r < 2; r++) {
        if (col[r] >= T) continue;
        float *dkr = dk + base + (size_t)col[r] * rs, *dvr = dv + base + (size_t)col[r] * rs;
#pragma unroll
        for (int n = 0; n < ND; n++) {
            *reinterpret_cast<float2 *>(dkr + n * 8 + 2 * t4) =
                make_float2(dK[n][2 * r] * scale, dK[n][2 * r + 1] * scale);
            *reinterpret_cast<float2 *>(dvr + n * 8 + 2 * t4) =
                make_float2(dV[n][2 * r], dV[n][2 * r + 1]);
        }
    }
}

template <int D>
constexpr size_t dq_smem() {
    return (size_t)(2 * BM + 4 * BN) * (D + 8) * sizeof(bf16raw);
}

// dQ for 64 queries: walk the key tiles like the forward. Per warp (16
// queries): S = Q K^T, P = exp2(S sl2 - lse2), dP = dO V^T,
// dS = P (dP - delta), dQ += dS K; dq = scale dQ.
template <int D>
__global__ void __launch_bounds__(NTHR)
    swa_dq_kernel(int T, int H, int W, float sl2, float scale, const bf16raw *__restrict__ q,
                  const bf16raw *__restrict__ k, const bf16raw *__restrict__ v,
                  const bf16raw *__restrict__ d_o, const float *__restrict__ lse,
                  const float *__restrict__ delta, float *__restrict__ dq) {
    constexpr int STR = D + 8, KD = D / 16, ND = D / 8, NK = BN / 8;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    bf16raw *sQ = reinterpret_cast<bf16raw *>(smem_raw);  // (BM, STR)
    bf16raw *sO = sQ + BM * STR;                           // dO (BM, STR)
    bf16raw *sK = sO + BM * STR;                           // 2 stages of (BN, STR)
    bf16raw *sV = sK + 2 * BN * STR;                       // 2 stages of (BN, STR)

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
    const int qb = gridDim.x - 1 - blockIdx.x, h = blockIdx.y, b = blockIdx.z;
    const int i0 = qb * BM;
    const long long rs = (long long)H * D;
    const size_t base = (size_t)b * T * rs + (size_t)h * D;
    const bf16raw *gq = q + base, *gk = k + base, *gv = v + base, *go = d_o + base;

    const int j_lo = max(0, i0 - W + 1), j_hi = min(T - 1, i0 + BM - 1);
    const int kb_lo = j_lo / BN, kb_hi = j_hi / BN;

    load_tile<D, BM>(sQ, gq, i0, T, rs, tid);
    load_tile<D, BM>(sO, go, i0, T, rs, tid);
    load_tile<D, BN>(sK, gk, kb_lo * BN, T, rs, tid);
    load_tile<D, BN>(sV, gv, kb_lo * BN, T, rs, tid);
    cp_async_commit();

    const int r_lo = i0 + warp * 16;
    const int row[2] = {r_lo + g, r_lo + g + 8};
    float lse2[2], dl[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        long long at = ((long long)b * T + row[r]) * H + h;
        lse2[r] = row[r] < T ? lse[at] * LOG2E : 0.f;
        dl[r] = row[r] < T ? delta[at] : 0.f;
    }
    float dQ[ND][4];
#pragma unroll
    for (int n = 0; n < ND; n++) dQ[n][0] = dQ[n][1] = dQ[n][2] = dQ[n][3] = 0.f;

    for (int kb = kb_lo; kb <= kb_hi; kb++) {
        const int st = (kb - kb_lo) & 1;
        if (kb < kb_hi) {
            load_tile<D, BN>(sK + (st ^ 1) * BN * STR, gk, (kb + 1) * BN, T, rs, tid);
            load_tile<D, BN>(sV + (st ^ 1) * BN * STR, gv, (kb + 1) * BN, T, rs, tid);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        const int k0 = kb * BN;
        const bf16raw *tK = sK + st * BN * STR, *tV = sV + st * BN * STR;
        if (k0 <= r_lo + 15 && k0 + BN - 1 > r_lo - W) {
            float s[NK][4], dp_[NK][4];
#pragma unroll
            for (int n = 0; n < NK; n++)
#pragma unroll
                for (int e = 0; e < 4; e++) s[n][e] = dp_[n][e] = 0.f;
#pragma unroll
            for (int kk = 0; kk < KD; kk++) {
                uint32_t a[4], ga[4];
                load_a<STR>(a, sQ, warp * 16, kk * 16, lane);
                load_a<STR>(ga, sO, warp * 16, kk * 16, lane);
#pragma unroll
                for (int np = 0; np < NK / 2; np++) {
                    uint32_t bb[4];
                    load_b_nt<STR>(bb, tK, np * 16, kk * 16, lane);
                    mma16816(s[2 * np], a, bb[0], bb[1]);
                    mma16816(s[2 * np + 1], a, bb[2], bb[3]);
                    load_b_nt<STR>(bb, tV, np * 16, kk * 16, lane);
                    mma16816(dp_[2 * np], ga, bb[0], bb[1]);
                    mma16816(dp_[2 * np + 1], ga, bb[2], bb[3]);
                }
            }
            const bool full = (k0 + BN - 1 <= r_lo) && (k0 > r_lo + 15 - W);
#pragma unroll
            for (int n = 0; n < NK; n++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    int i = row[e >> 1], j = k0 + n * 8 + 2 * t4 + (e & 1);
                    float p = exp2f(s[n][e] * sl2 - lse2[e >> 1]);
                    if (!full && (j > i || j <= i - W)) p = 0.f;
                    s[n][e] = p * (dp_[n][e] - dl[e >> 1]);  // dS
                }
            // dQ += dS K  (B[k=key][n=d] = K row-major)
#pragma unroll
            for (int kk = 0; kk < NK / 2; kk++) {
                uint32_t da[4] = {pack_bf16(s[2 * kk][0], s[2 * kk][1]),
                                  pack_bf16(s[2 * kk][2], s[2 * kk][3]),
                                  pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                                  pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
                for (int dp = 0; dp < ND / 2; dp++) {
                    uint32_t bb[4];
                    load_b_t<STR>(bb, tK, kk * 16, dp * 16, lane);
                    mma16816(dQ[2 * dp], da, bb[0], bb[1]);
                    mma16816(dQ[2 * dp + 1], da, bb[2], bb[3]);
                }
            }
        }
        __syncthreads();
    }

#pragma unroll
    for (int r = 0; r < 2; r++) {
        if (row[r] >= T) continue;
        float *dqr = dq + base + (size_t)row[r] * rs;
#pragma unroll
        for (int n = 0; n < ND; n++)
            *reinterpret_cast<float2 *>(dqr + n * 8 + 2 * t4) =
                make_float2(dQ[n][2 * r] * scale, dQ[n][2 * r + 1] * scale);
    }
}

// ---------------------------------------------------------------- host side

void check_ptr(const char *fn, const char *name, const void *p) {
    HY_REQUIRE(p != NULL && ((uintptr_t)p & 15) == 0,
               "%s: %s must be a non-NULL, 16-byte aligned device pointer (got %p)", fn, name,
               p);
}

void check_sizes(const char *fn, int B, int T, int H, int D, int window) {
    HY_REQUIRE(B >= 1 && T >= 1 && H >= 1,
               "%s: B, T and H must be at least 1, got B=%d T=%d H=%d", fn, B, T, H);
    HY_REQUIRE(D == 64 || D == 128,
               "%s: head_dim %d has no GPU kernel (64 and 128 are supported)", fn, D);
    HY_REQUIRE(window >= 1, "%s: window must be at least 1, got %d", fn, window);
    HY_REQUIRE(H <= 65535 && B <= 65535, "%s: B=%d or H=%d exceeds the grid limit 65535", fn, B,
               H);
}

template <typename K>
void set_smem(K kernel, size_t bytes) {
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    (int)bytes));
}

// Query rows [q_first, T): the blocks that hold them.
template <int D>
void launch_fwd(int B, int T, int H, int W, int q_first, const bf16raw *q, const bf16raw *k,
                const bf16raw *v, bf16raw *o, float *lse, cudaStream_t s) {
    const size_t sm = fwd_smem<D>();
    set_smem(swa_fwd_kernel<D>, sm);
    const int qb_first = q_first / BM;
    dim3 grid((T + BM - 1) / BM - qb_first, H, B);
    float sl2 = LOG2E / sqrtf((float)D);
    swa_fwd_kernel<D><<<grid, NTHR, sm, s>>>(T, H, W, qb_first, sl2, q, k, v, o, lse);
    SWA_LAUNCHED();
}

template <int D, int BQ>
void launch_bwd(int B, int T, int H, int W, const bf16raw *q, const bf16raw *k,
                const bf16raw *v, const bf16raw *o, const float *lse, const bf16raw *d_o,
                float *dq, float *dk, float *dv, float *delta, cudaStream_t s) {
    const long long rows = (long long)B * T * H;
    const int dblock = 256, rows_per_block = dblock / 32;
    swa_delta_kernel<D><<<(unsigned)((rows + rows_per_block - 1) / rows_per_block), dblock, 0,
                          s>>>(rows, o, d_o, delta);
    SWA_LAUNCHED();
    const float scale = 1.0f / sqrtf((float)D), sl2 = LOG2E * scale;
    dim3 grid((T + BM - 1) / BM, H, B);
    const size_t sm_kv = dkdv_smem<D, BQ>();
    set_smem(swa_dkdv_kernel<D, BQ>, sm_kv);
    swa_dkdv_kernel<D, BQ><<<grid, NTHR, sm_kv, s>>>(T, H, W, sl2, scale, q, k, v, d_o, lse,
                                                    delta, dk, dv);
    SWA_LAUNCHED();
    const size_t sm_q = dq_smem<D>();
    set_smem(swa_dq_kernel<D>, sm_q);
    swa_dq_kernel<D><<<grid, NTHR, sm_q, s>>>(T, H, W, sl2, scale, q, k, v, d_o, lse, delta, dq);
    SWA_LAUNCHED();
}

}  // namespace

extern "C" size_t hy_cuda_swa_workspace_bytes(int B, int T, int H, int D) {
    (void)D;
    size_t n = (size_t)B * T * H * sizeof(float);
    return (n + 255) / 256 * 256;
}

static void swa_fwd(const char *fn, int B, int T, int H, int D, int window, int q_first,
                    const void *q, const void *k, const void *v, void *o, float *lse,
                    void *stream) {
    check_sizes(fn, B, T, H, D, window);
    check_ptr(fn, "q", q), check_ptr(fn, "k", k), check_ptr(fn, "v", v), check_ptr(fn, "o", o);
    HY_REQUIRE(lse == NULL || ((uintptr_t)lse & 3) == 0, "%s: lse is misaligned", fn);
    HY_REQUIRE(q_first >= 0 && q_first < T, "%s: first query row %d is outside [0, %d)", fn,
               q_first, T);
    const int W = window < T ? window : T;  // window >= T: full causal
    cudaStream_t s = (cudaStream_t)stream;
    const bf16raw *q_ = (const bf16raw *)q, *k_ = (const bf16raw *)k, *v_ = (const bf16raw *)v;
    if (D == 64)
        launch_fwd<64>(B, T, H, W, q_first, q_, k_, v_, (bf16raw *)o, lse, s);
    else
        launch_fwd<128>(B, T, H, W, q_first, q_, k_, v_, (bf16raw *)o, lse, s);
}

extern "C" void hy_cuda_swa_fwd(int B, int T, int H, int D, int window, const void *q,
                                const void *k, const void *v, void *o, float *lse,
                                void *stream) {
    swa_fwd("hy_cuda_swa_fwd", B, T, H, D, window, 0, q, k, v, o, lse, stream);
}

extern "C" void hy_cuda_swa_fwd_rows(int B, int T, int H, int D, int window, int q_first,
                                     const void *q, const void *k, const void *v, void *o,
                                     void *stream) {
    swa_fwd("hy_cuda_swa_fwd_rows", B, T, H, D, window, q_first, q, k, v, o, NULL, stream);
}

extern "C" void hy_cuda_swa_bwd(int B, int T, int H, int D, int window, const void *q,
                                const void *k, const void *v, const void *o, const float *lse,
                                const void *d_o, float *dq, float *dk, float *dv,
                                void *workspace, void *stream) {
    const char *fn = "hy_cuda_swa_bwd";
    check_sizes(fn, B, T, H, D, window);
    check_ptr(fn, "q", q), check_ptr(fn, "k", k), check_ptr(fn, "v", v), check_ptr(fn, "o", o);
    check_ptr(fn, "d_o", d_o), check_ptr(fn, "dq", dq), check_ptr(fn, "dk", dk);
    check_ptr(fn, "dv", dv), check_ptr(fn, "lse", lse), check_ptr(fn, "workspace", workspace);
    const int W = window < T ? window : T;
    cudaStream_t s = (cudaStream_t)stream;
    const bf16raw *q_ = (const bf16raw *)q, *k_ = (const bf16raw *)k, *v_ = (const bf16raw *)v;
    const bf16raw *o_ = (const bf16raw *)o, *do_ = (const bf16raw *)d_o;
    float *delta = (float *)workspace;
    if (D == 64)
        launch_bwd<64, 64>(B, T, H, W, q_, k_, v_, o_, lse, do_, dq, dk, dv, delta, s);
    else
        launch_bwd<128, 32>(B, T, H, W, q_, k_, v_, o_, lse, do_, dq, dk, dv, delta, s);
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

extern "C" double hy_cuda_swa_time_ms(int what, int reps, int B, int T, int H, int D,
                                      int window, const void *q, const void *k, const void *v,
                                      void *o, float *lse, const void *d_o, float *dq,
                                      float *dk, float *dv, void *workspace) {
    HY_REQUIRE(reps >= 1 && reps <= 1000, "hy_cuda_swa_time_ms: reps %d not in 1..1000", reps);
    cudaEvent_t e0, e1;
    CUDA_CHECK(cudaEventCreate(&e0));
    CUDA_CHECK(cudaEventCreate(&e1));
    float *ms = (float *)hy_xmalloc((size_t)reps * sizeof(float));
    for (int it = -2; it < reps; it++) {
        CUDA_CHECK(cudaEventRecord(e0, 0));
        hy_cuda_swa_fwd(B, T, H, D, window, q, k, v, o, lse, NULL);
        if (what)
            hy_cuda_swa_bwd(B, T, H, D, window, q, k, v, o, lse, d_o, dq, dk, dv, workspace,
                            NULL);
        CUDA_CHECK(cudaEventRecord(e1, 0));
        CUDA_CHECK(cudaEventSynchronize(e1));
        if (it >= 0) CUDA_CHECK(cudaEventElapsedTime(&ms[it], e0, e1));
    }
    qsort(ms, (size_t)reps, sizeof(float), cmp_float);
    double med = reps % 2 ? ms[reps / 2] : 0.5 * (ms[reps / 2 - 1] + ms[reps / 2]);
    free(ms);
    CUDA_CHECK(cudaEventDestroy(e0));
    CUDA_CHECK(cudaEventDestroy(e1));
    return med;
}
