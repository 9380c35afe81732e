// gdn_fwd.cu: the gated delta rule's forward on the GPU: the chunk-local WY factors (kernels
// 1. and 1r. of gdn.cu's header comment), the forward state pass (2.) and their launch; the
// output kernel (3.) is gdn_common.cuh's.
#include "gdn_common.cuh"

namespace {

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
            // exp(g_last - g_i) for this thread's two rows, once (in the loop, the stores to
            // shared memory between the reads of sg kept the compiler from reusing them)
            const float glast = sg[CH - 1];
            const float dr[2] = {expf(glast - sg[m0 + g4]), expf(glast - sg[m0 + g4 + 8])};
            for_acc(accN, m0, nn0, [&](int i, int v, int h, float &x0, float &x1) {
                const float n0 = sU[i * (BV + 4) + v] - x0, n1 = sU[i * (BV + 4) + v + 1] - x1;
                st_bf2(a.N + (ci * CH + i) * D + v0 + v, n0, n1);
                st_split2(sNhi + i * LDV + v, sNlo + i * LDV + v, n0 * dr[h], n1 * dr[h]);
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


// ================================================================ launch
template <int D>
void wy_and_states(const Args &a, cudaStream_t st) {
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
void fwd(const Args &a, cudaStream_t st) {
    wy_and_states<D>(a, st);
    launch(out_kernel<D, false>, dim3(a.NC, a.B * a.H), 256, OutSmem<D, false>::TOTAL, st, a);
}

}  // namespace

namespace gdn {

void run_wy_and_states(int D, const Args &a, cudaStream_t st) {
    if (D == 64)
        wy_and_states<64>(a, st);
    else
        wy_and_states<128>(a, st);
}

void run_fwd(int D, const Args &a, cudaStream_t st) {
    if (D == 64)
        fwd<64>(a, st);
    else
        fwd<128>(a, st);
}

}  // namespace gdn
