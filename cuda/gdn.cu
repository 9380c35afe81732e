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
//                       its end (bf16), dN = dN_loc + diag(exp(g_last - g)) K dH^T (bf16; fp32
//                       in the pass itself), then dH <- gamma_last dH + dO^T diag(gamma) Q - dN^T W.
//                       Writes dS0.
//   6. dqk_kernel       (NC, B*H), 256 threads: dq (final), the k gradient of the output and
//                       state terms (partial, into dk), dW = -dN S (bf16 workspace) and the
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
// chunk start states (bf16, (D, D) per chunk), N (bf16); backward adds dN_loc (fp32), dN (bf16),
// the chunk-end state gradients (bf16), dW (bf16) and the partial dg (fp32). dN and dW are
// stored in bf16 because their consumers (kernels 6, 7) use them as bf16 tensor-core operands.
//
// Files: gdn.cu (this one: entry points, the workspace, the decoding step), gdn_fwd.cu (1., 1r.,
// 2.), gdn_bwd.cu (5., 6., 7., 7r.), gdn_common.cuh (what they share, with 3./4.).
#include <cuda_bf16.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <vector>

#include "gdn_common.cuh"
#include "hy_cuda_gdn.h"

namespace gdn {

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

}  // namespace gdn

namespace {

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
    size_t dN, dNb, dHc, dW, dG, bwd;     // backward part
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
    w.dNb = take(R * D * 2);
    w.dHc = take(nch * D * D * 2);
    w.dW = take(R * D * 2);
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
        a.dNb = (bf16 *)(bs + w.dNb);
        a.dHc = (bf16 *)(bs + w.dHc);
        a.dW = (bf16 *)(bs + w.dW);
        a.dG = (float *)(bs + w.dG);
    }
    return a;
}

// Kernels 1 and 2 (both directions need them).
}  // namespace

using namespace gdn;

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
    run_fwd(D, a, st);
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
    run_bwd(D, a, recompute, st);
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
