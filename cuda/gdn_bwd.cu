// gdn_bwd.cu: the gated delta rule's backward on the GPU: the reverse state pass (kernel 5.
// of gdn.cu's header comment), dq and dk (6.), the backward through the WY factors (7. and its
// reference 7r.) and their launch, with the backward output kernel (4.) of gdn_common.cuh.
#include "gdn_common.cuh"

namespace {

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
    const int b_of = bh / a.H, h_of = bh % a.H, g4 = (threadIdx.x & 31) >> 2;

    auto issue = [&](int c, int s) {
        unsigned char *B = smem + s * Sm::BUF;
        int L;
        size_t tok0, ci;
        chunk_coords_bh(a, c, b_of, h_of, bh, L, tok0, ci);
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
            // exp(g_last - g_i) and exp(g_i) for this thread's two rows, once (see state_fwd)
            const float glast = sg[CH - 1];
            const float g0 = sg[m0 + g4], g1 = sg[m0 + g4 + 8];
            const float dr[2] = {expf(glast - g0), expf(glast - g1)};
            const float gr[2] = {expf(g0), expf(g1)};
            for_acc(accX, m0, nn0, [&](int i, int v, int h, float &x0, float &x1) {
                const float2 dn = *reinterpret_cast<const float2 *>(sdN + i * Sm::LDN + v);
                const float n0 = dn.x + dr[h] * x0, n1 = dn.y + dr[h] * x1;
                st_bf2(a.dNb + (ci * CH + i) * D + v0 + v, n0, n1);
                st_split2(sNhi + i * LDV + v, sNlo + i * LDV + v, -n0, -n1);
                st_split2(sOhi + i * LDV + v, sOlo + i * LDV + v, gr[h] * bf2f(sdO[i * LDV + v]),
                          gr[h] * bf2f(sdO[i * LDV + v + 1]));
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
                            G = DP + CH * LDL * 2, ROW = G + CH * 4, COL = ROW + 2 * CH * 4,
                            LAST = COL + 4 * CH * 4, TOTAL = LAST + 8 * 4;
};

// D = 64: three blocks an SM (66 KB of shared memory each; the register cap of 80 spills a few
// bytes, and still 244 -> 207 us at (8, 2048, 12, 64) against two blocks).
template <int D>
__global__ void __launch_bounds__(256, D == 64 ? 3 : 1) dqk_kernel(Args a) {
    using Sm = DqkSmem<D>;
    static_assert(Sm::TOTAL <= 227 * 1024, "shared memory per block");
    constexpr int LD = Sm::LD, NTD = D / 16;
    extern __shared__ __align__(16) unsigned char smem[];
    bf16 *sQ = (bf16 *)(smem + Sm::Q), *sK = (bf16 *)(smem + Sm::K), *sdO = (bf16 *)(smem + Sm::DO);
    bf16 *sN = (bf16 *)(smem + Sm::N), *sdN = (bf16 *)(smem + Sm::DN), *sS = (bf16 *)(smem + Sm::S);
    bf16 *sdP = (bf16 *)(smem + Sm::DP);
    float *sg = (float *)(smem + Sm::G);
    // dg's parts, each slot written once (shared fp32 atomics are compare-and-swap loops, and
    // took a sixth of the kernel): row sums by column half, column sums by row quarter, and
    // the last row's extra by warp; added in a fixed order at the end.
    float *srow = (float *)(smem + Sm::ROW), *scol = (float *)(smem + Sm::COL);
    float *slast = (float *)(smem + Sm::LAST);
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, wm = warp & 3, wn = warp >> 2;
    int L;
    size_t tok0, ci;
    chunk_coords(a, blockIdx.x, blockIdx.y, L, tok0, ci);
    cp_tok(sQ, LD, a.q, tok0, a.H, D, L, 0, D);
    cp_tok(sK, LD, a.k, tok0, a.H, D, L, 0, D);
    cp_tok(sdO, LD, a.dO, tok0, a.H, D, L, 0, D);
    cp_rows(sN, LD * 2, a.N + ci * CH * D, (size_t)D * 2, CH, D * 2);
    cp_rows(sS, LD * 2, a.Sc + ci * D * D, (size_t)D * 2, D, D * 2);
    cp_rows(sdN, LD * 2, a.dNb + ci * CH * D, (size_t)D * 2, CH, D * 2);
    cp_rows(sg, CH * 4, a.G + ci * CH, CH * 4, 1, CH * 4);
    cp_commit();
    // dH at the chunk's end, this thread's share loaded at once into registers (the shared tile
    // it goes to holds S until the first products are done).
    constexpr int NH = D * D / 8 / 256;
    uint4 hreg[NH];
#pragma unroll
    for (int u = 0; u < NH; u++) {
        const int idx = tid + 256 * u, r = idx / (D / 8), c8 = (idx % (D / 8)) * 8;
        hreg[u] = *reinterpret_cast<const uint4 *>(a.dHc + ci * D * D + (size_t)r * D + c8);
    }
    cp_wait_all();
    __syncthreads();

    const int m0 = 16 * wm, n0 = wn * (D / 2), last = L - 1;
    const float glast = sg[CH - 1];
    float accQ[1][NTD][4] = {}, accK[1][NTD][4] = {};
    // This thread's parts of dg for rows m0 + lane/4 (+ 8): the same rows in every product below.
    float rowpart[2] = {0.f, 0.f}, lastpart = 0.f;
    {  // dQ_inter = diag(gamma) dO S ;  dW = -dN S
        float accW[1][NTD][4] = {};
        mma_tile<1, NTD, D, false, true>(accQ, sdO, LD, m0, sS, LD, n0);
        mma_tile<1, NTD, D, false, true>(accW, sdN, LD, m0, sS, LD, n0);
        for_acc(accW, m0, n0, [&](int i, int k, int, float &x0, float &x1) {
            st_bf2(a.dW + (ci * CH + i) * D + k, -x0, -x1);
        });
        // dg_i += sum_k Q_ik gamma_i (dO S)_ik
        for_acc(accQ, m0, n0, [&](int i, int k, int hh, float &x0, float &x1) {
            const float gm = expf(sg[i]);
            x0 *= gm;
            x1 *= gm;
            rowpart[hh] += x0 * bf2f(sQ[i * LD + k]) + x1 * bf2f(sQ[i * LD + k + 1]);
        });
    }
    __syncthreads();  // S no longer needed: replace it with dH (chunk end), and sum(dH * S)
    {
        float part = 0.f;
#pragma unroll
        for (int u = 0; u < NH; u++) {
            const int idx = tid + 256 * u, r = idx / (D / 8), c8 = (idx % (D / 8)) * 8;
            const uint4 hv = hreg[u];
            uint4 *sp = reinterpret_cast<uint4 *>(sS + r * LD + c8);
            const uint4 sv = *sp;
            const bf16 *hb = reinterpret_cast<const bf16 *>(&hv);
            const bf16 *sb = reinterpret_cast<const bf16 *>(&sv);
#pragma unroll
            for (int e = 0; e < 8; e++) part += bf2f(hb[e]) * bf2f(sb[e]);
            *sp = hv;
        }
        lastpart = expf(glast) * part;
    }
    __syncthreads();
    {  // dK_state = diag(exp(g_last - g)) N dH ;  e_j = sum_k dK_state_jk K_jk
        mma_tile<1, NTD, D, false, true>(accK, sN, LD, m0, sS, LD, n0);
        // row j loses e_j, the last row gains their sum
        for_acc(accK, m0, n0, [&](int j, int k, int hh, float &x0, float &x1) {
            const float d = expf(glast - sg[j]);
            x0 *= d;
            x1 *= d;
            const float e = x0 * bf2f(sK[j * LD + k]) + x1 * bf2f(sK[j * LD + k + 1]);
            rowpart[hh] -= e;
            lastpart += e;
        });
    }
    {  // dP = dO N^T, P = Q K^T (then * G, causal): dPt = dP * G -> shared; dg from dP * P
        float accD[1][4][4] = {}, accP[1][4][4] = {};
        const int pn0 = 32 * wn, g = lane >> 2, t = lane & 3;
        mma_tile<1, 4, D, false, false>(accD, sdO, LD, m0, sN, LD, pn0);
        mma_tile<1, 4, D, false, false>(accP, sQ, LD, m0, sK, LD, pn0);
        float colp[4][2] = {};
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
                    rowpart[hh] += f;
                    colp[nt][e] += f;
                }
                st_bf2(sdP + i * LDL + pn0 + nt * 8 + 2 * t, dpt[0], dpt[1]);
            }
#pragma unroll
        for (int hh = 0; hh < 2; hh++) {
            const float p = quad_sum(rowpart[hh]);
            if (t == 0) srow[wn * CH + m0 + g + 8 * hh] = p;
        }
#pragma unroll
        for (int nt = 0; nt < 4; nt++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                const float p = col_sum(colp[nt][e]);
                if (g == 0) scol[wm * CH + pn0 + nt * 8 + 2 * t + e] = p;
            }
        lastpart = warp_sum(lastpart);
        if (lane == 0) slast[warp] = lastpart;
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
    __syncthreads();  // every part of dg written
    if (tid < CH) {
        const int i = tid;
        float v = (srow[i] + srow[CH + i]) -
                  ((scol[i] + scol[CH + i]) + (scol[2 * CH + i] + scol[3 * CH + i]));
        if (i == last)
#pragma unroll
            for (int w = 0; w < 8; w++) v += slast[w];
        a.dG[ci * CH + i] = v;
    }
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
                            TOTAL = SMALL + 12 * CH * 4;
    static_assert(D != 64 || TOTAL <= 112 * 1024, "two blocks an SM at D = 64");
};

// Recomputes M and A = (I + M)^-1 as wy_kernel does, then on tensor cores
// dB_V = A^T dN, dB_K = A^T dW (A split hi + lo; dN, dW stored in bf16), and from them dv,
// dbeta, dg and dk (with the partial dk and dg of dqk_kernel), dM = -(dB_V U^T + dB_K W^T),
// E = dM * beta G, dk += E K + E^T K, and dalpha.
// D = 64: 110 KB of shared memory and at most 128 registers, two blocks an SM (M is not
// stored, see invert_unit_lower64, and E takes A's tile once A is split). The row and column
// sums for dbeta and dg go to slots written once each, added in a fixed order at the end
// (shared fp32 atomics are compare-and-swap loops).
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
    float *sg = small, *sb = small + CH, *sal = small + 2 * CH, *sdg = small + 3 * CH;
    // row sums by column half (dbeta, dg), column sums by row quarter (dg)
    float *srb = small + 4 * CH, *srg = small + 6 * CH, *scol = small + 8 * CH;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    int L;
    size_t tok0, ci;
    chunk_coords(a, blockIdx.x, blockIdx.y, L, tok0, ci);
    const size_t r0 = ci * CH;
    cp_tok(sK, LD, a.k, tok0, a.H, D, L, 0, D);
    cp_tok(sV, LD, a.v, tok0, a.H, D, L, 0, D);
    cp_rows(sW, LD * 2, a.Whi + r0 * D, (size_t)D * 2, CH, D * 2);
    cp_rows(sX1, LD * 2, a.dNb + r0 * D, (size_t)D * 2, CH, D * 2);
    cp_rows(sX2, LD * 2, a.dW + r0 * D, (size_t)D * 2, CH, D * 2);
    cp_commit();
    // U (fp32): this thread's share loaded into registers at once, stored to sU in bf16 after
    // the inversion (the first use of sU is the dM product), so the loads overlap it.
    constexpr int NU = CH * D / 4 / 256;
    float4 u_reg[NU];
#pragma unroll
    for (int e = 0; e < NU; e++) {
        const int idx = tid + 256 * e, i = idx / (D / 4), c4 = (idx % (D / 4)) * 4;
        u_reg[e] = *reinterpret_cast<const float4 *>(a.U + (r0 + i) * D + c4);
    }
    if (tid < CH) {
        const int i = tid;
        const bool ok = i < L;
        const size_t ti = tok0 + (size_t)i * a.H;
        sg[i] = a.G[r0 + i];
        sb[i] = ok ? a.beta[ti] : 0.f;
        sal[i] = ok ? a.alpha[ti] : 1.f;
        sdg[i] = a.dG[r0 + i];
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
#pragma unroll
    for (int e = 0; e < NU; e++) {
        const int idx = tid + 256 * e, i = idx / (D / 4), c4 = (idx % (D / 4)) * 4;
        st_bf2(sU + i * LD + c4, u_reg[e].x, u_reg[e].y);
        st_bf2(sU + i * LD + c4 + 2, u_reg[e].z, u_reg[e].w);
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
    // This thread's parts of dbeta and dg for rows m0 + g (+ 8), the same rows in the dM tile.
    float rowb[2] = {0.f, 0.f}, rowg[2] = {0.f, 0.f};
    {
        // beta_i, gamma_i for this thread's two rows, once (see state_fwd_kernel)
        const float bet[2] = {sb[m0 + g], sb[m0 + g + 8]};
        const float gam[2] = {expf(sg[m0 + g]), expf(sg[m0 + g + 8])};
        float rv[2] = {0.f, 0.f}, rk[2] = {0.f, 0.f};
        for_acc(accV, m0, n0, [&](int i, int v, int hh, float &x0, float &x1) {
            // dv = diag(beta) dB_V;  dbeta_i += sum_v dB_V V
            if (i < L)
                st_f2(a.dv + (tok0 + (size_t)i * a.H) * D + v, bet[hh] * x0, bet[hh] * x1);
            rv[hh] += x0 * bf2f(sV[i * LD + v]) + x1 * bf2f(sV[i * LD + v + 1]);
            st_bf2(sX1 + i * LD + v, x0, x1);
        });
        for_acc(accK, m0, n0, [&](int i, int k, int hh, float &x0, float &x1) {
            // d(beta gamma)_i = sum_k dB_K K;  dk += diag(beta gamma) dB_K (kept in accK)
            rk[hh] += x0 * bf2f(sK[i * LD + k]) + x1 * bf2f(sK[i * LD + k + 1]);
            st_bf2(sX2 + i * LD + k, x0, x1);
            const float bg = bet[hh] * gam[hh];
            x0 *= bg;
            x1 *= bg;
        });
#pragma unroll
        for (int hh = 0; hh < 2; hh++) {  // dbeta_i += gamma_i r_i, dg_i += beta_i gamma_i r_i
            rowb[hh] = rv[hh] + gam[hh] * rk[hh];
            rowg[hh] = bet[hh] * gam[hh] * rk[hh];
        }
    }
    __syncthreads();
    // dqk's part of dk, loaded now, all at once: read-modify-writes of a.dk at the end would wait
    // for each load in turn (the compiler cannot move a load above a store to the same array).
    float2 dk_part[2 * NT];
    {
        int n = 0;
        for_acc(accK, m0, n0, [&](int i, int k, int, float &, float &) {
            dk_part[n++] = i < L ? *reinterpret_cast<const float2 *>(
                                       a.dk + (tok0 + (size_t)i * a.H) * D + k)
                                 : make_float2(0.f, 0.f);
        });
    }
    {  // dM = -(dB_V U^T + dB_K W^T) (strict lower): dbeta, E = dM beta G, dg from dM * M
        float acc[1][4][4] = {};
        mma_tile<1, 4, D, false, false>(acc, sX1, LD, qm0, sU, LD, qn0);
        mma_tile<1, 4, D, false, false>(acc, sX2, LD, qm0, sW, LD, qn0);
        float colf[4][2] = {};
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
                    rowg[hh] += f;
                    colf[nt][e] += f;
                    ev[e] = dm * sb[i] * gm;
                }
                st_bf2(sE + i * LDL + qn0 + nt * 8 + 2 * t, ev[0], ev[1]);
            }
#pragma unroll
        for (int hh = 0; hh < 2; hh++) {
            const float pb = quad_sum(rowb[hh]), pg = quad_sum(rowg[hh]);
            if (t == 0) {
                srb[(warp >> 2) * CH + qm0 + g + 8 * hh] = pb;
                srg[(warp >> 2) * CH + qm0 + g + 8 * hh] = pg;
            }
        }
#pragma unroll
        for (int nt = 0; nt < 4; nt++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                const float p = col_sum(colf[nt][e]);
                if (g == 0) scol[(warp & 3) * CH + qn0 + nt * 8 + 2 * t + e] = p;
            }
    }
    __syncthreads();  // sE complete
    // dk = (dqk's part) + diag(beta gamma) dB_K + E K + E^T K
    mma_tile<1, NT, CH, false, true>(accK, sE, LDL, m0, sK, LD, n0);
    mma_tile<1, NT, CH, true, true>(accK, sE, LDL, m0, sK, LD, n0);
    {
        int n = 0;
        for_acc(accK, m0, n0, [&](int i, int k, int, float &x0, float &x1) {
            const float2 d = dk_part[n++];
            if (i < L)
                st_f2(a.dk + (tok0 + (size_t)i * a.H) * D + k, d.x + x0, d.y + x1);
        });
    }
    __syncthreads();  // every part of dbeta and dg written
    if (tid < CH) {
        const int i = tid;
        srb[i] += srb[CH + i];  // dbeta
        sdg[i] += (srg[i] + srg[CH + i]) -
                  ((scol[i] + scol[CH + i]) + (scol[2 * CH + i] + scol[3 * CH + i]));
    }
    __syncthreads();
    write_dbeta_dalpha(a, tok0, L, srb, sdg, sal);
}


// ================================================================ 7r. reference WY backward
// The first, GPU-validated version of kernel 7, the pair of gdn_fwd.cu's 1r. (see there).
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
        const bf16 *src = col < D ? a.dNb + r0 * D + col : a.dW + r0 * D + (col - D);
#pragma unroll
        for (int i = 0; i < CH; i++) x[i] = bf2f(src[(size_t)i * D]);
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


// ================================================================ launch
// recompute: kernels 1 and 2 first; else the forward's results are in the saved workspace.
template <int D>
void bwd(const Args &a, bool recompute, cudaStream_t st) {
    if (recompute) run_wy_and_states(D, a, st);
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

namespace gdn {

void run_bwd(int D, const Args &a, bool recompute, cudaStream_t st) {
    if (D == 64)
        bwd<64>(a, recompute, st);
    else
        bwd<128>(a, recompute, st);
}

}  // namespace gdn
