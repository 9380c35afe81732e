// gdn_decode.cu: one decoding token of a GDN mixer in one kernel.
//
// The unfused step is eleven launches a layer (short_conv, silu, the conv
// cache shift, three slices, two l2norms, two gate slices and two sigmoids)
// before the recurrence, each a few hundred bytes of work: at batch 1 a
// decoding step is bound by launches, not by bytes or FLOPs. Here one block
// per (b, h) does all of it: the causal conv of the head's q, k, v channels
// from the bf16 cache, SiLU, the cache shift, the l2 norms of q and k, the
// gates, and the delta-rule update of the head's state (as step_kernel of
// gdn.cu: one warp per state row, the rows in registers for D <= 128). What
// does not depend on the kernel before (the state rows, a thread's conv taps
// and cached inputs: this layer's own state) is read before the kernel waits
// for its inputs (see pdl.cuh), so that after the wait one round trip to
// memory remains; a warp's rows go through the recurrence in phases, their
// shuffle reductions side by side. The prologue stays in fp32 (the unfused
// path rounds each stage to bf16); see hy_cuda_gdn.h for the contract.
#include "hy_cuda_gdn.h"
#include "ops_device.cuh"
#include "pdl.cuh"

namespace {

constexpr int kDecodeThreads = 256;  // 8 warps
constexpr int kDecodeWarps = kDecodeThreads / 32;
constexpr int kTaps = 4;  // conv kernels up to this size read their taps before the wait

// Block (b, h). Shared: q, k, v of the head, D floats each. RPW > 0: the
// head's state rows (RPW a warp, EPL floats a lane; RPW * 8 >= D, EPL * 32
// >= D) are loaded into registers before pdl_wait, as they do not depend on
// the kernels before (only this layer's step writes them, a token earlier);
// RPW = 0 reads them in the update loop (any D).
template <int RPW, int EPL>
__global__ void __launch_bounds__(kDecodeThreads, 1)  // B H blocks: few when decoding one sequence
    gdn_decode_kernel(int H, int D, int K, int norm_qk, const uint16_t *__restrict__ qkv,
                      const float *__restrict__ conv_w, const float *__restrict__ conv_b,
                      uint16_t *__restrict__ cache, const uint16_t *__restrict__ ab,
                      float *__restrict__ S, uint16_t *__restrict__ o) {
    extern __shared__ float sh[];  // [3][D]: q, k, v after conv and SiLU (q, k then normed)
    const int b = blockIdx.x / H, h = blockIdx.x % H, I = H * D, C = 3 * I;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const size_t bh = (size_t)b * H + h;
    float sr[RPW > 0 ? RPW : 1][EPL > 0 ? EPL : 1];
    if constexpr (RPW > 0) {
#pragma unroll
        for (int r = 0; r < RPW; r++)
#pragma unroll
            for (int e = 0; e < EPL; e++) {
                const int i = warp + kDecodeWarps * r, j = lane + 32 * e;
                sr[r][e] = i < D && j < D ? S[(bh * D + i) * D + j] : 0.0f;
            }
    }
    // This thread's first channel's conv taps, bias and cached inputs (the
    // cache is this layer's own state, written a token earlier) into
    // registers meanwhile; the taps of any further channels toward L1.
    const bool pre = K <= kTaps && threadIdx.x < 3 * D;
    float wt[kTaps], ct[kTaps], cb = 0.0f;
    if (pre) {
        const int e = threadIdx.x, part = e / D, c = part * I + h * D + (e - part * D);
        const uint16_t *cr = cache + ((size_t)b * C + c) * (K - 1);
#pragma unroll
        for (int j = 0; j < kTaps; j++) {
            wt[j] = j < K ? conv_w[(size_t)c * K + j] : 0.0f;
            ct[j] = j < K - 1 ? bf2f(cr[j]) : 0.0f;
        }
        if (conv_b) cb = conv_b[c];
    }
    for (int e = threadIdx.x + (pre ? blockDim.x : 0); e < 3 * D; e += blockDim.x) {
        const int part = e / D, c = part * I + h * D + (e - part * D);
        asm volatile("prefetch.global.L1 [%0];" ::"l"(conv_w + (size_t)c * K));
    }
    pdl_wait();  // qkv and ab come from the projection kernel before
    pdl_trigger();
    // The gates now, so that their load overlaps the conv's.
    const float al = sigm(bf2f(ab[(size_t)b * 2 * H + h]));
    const float be = sigm(bf2f(ab[(size_t)b * 2 * H + H + h]));
    // 1. conv over [cache | x] (taps in order, as the CPU), SiLU, cache shift.
    for (int e = threadIdx.x; e < 3 * D; e += blockDim.x) {
        const int part = e / D, i = e - part * D, c = part * I + h * D + i;
        const uint16_t x = qkv[(size_t)b * C + c];
        uint16_t *cr = cache + ((size_t)b * C + c) * (K - 1);
        float acc;
        if (pre && e == (int)threadIdx.x) {
            acc = cb;
#pragma unroll
            for (int j = 0; j < kTaps; j++)  // the cached inputs, then x at tap K - 1
                if (j < K - 1) acc += wt[j] * ct[j];
                else if (j == K - 1) acc += wt[j] * bf2f(x);
#pragma unroll
            for (int j = 0; j < kTaps - 2; j++)
                if (j + 1 < K - 1) cr[j] = f2bf(ct[j + 1]);  // bf16 values: exact
        } else {
            const float *w = conv_w + (size_t)c * K;
            acc = conv_b ? conv_b[c] : 0.0f;
            for (int j = 0; j < K - 1; j++) acc += w[j] * bf2f(cr[j]);
            acc += w[K - 1] * bf2f(x);
            for (int j = 0; j + 1 < K - 1; j++) cr[j] = cr[j + 1];
        }
        if (K > 1) cr[K - 2] = x;
        sh[e] = acc * sigm(acc);
    }
    __syncthreads();
    // 2. q and k to unit length (warps 0 and 1), as hy_l2norm_heads (eps 1e-12).
    if (norm_qk && warp < 2) {
        float *p = sh + warp * D, ss = 0.0f;
        for (int j = lane; j < D; j += 32) ss += p[j] * p[j];
        const float den = fmaxf(sqrtf(warp_sum(ss)), 1e-12f);
        for (int j = lane; j < D; j += 32) p[j] = p[j] / den;
    }
    __syncthreads();
    // 3. The recurrence, one warp per state row i: r = v_i - alpha S_i.k,
    // S_i = alpha S_i + beta r k, o_i = S_i.q.
    const float *sq = sh, *sk = sh + D, *sv = sh + 2 * D;
    if constexpr (RPW > 0) {
        // In phases across the warp's rows, so that their shuffle
        // reductions overlap instead of running one row after another.
        float dot[RPW], od[RPW];
#pragma unroll
        for (int r = 0; r < RPW; r++) {
            dot[r] = 0.0f;
#pragma unroll
            for (int e = 0; e < EPL; e++) {
                const int j = lane + 32 * e;
                if (j < D) dot[r] += sr[r][e] * sk[j];
            }
        }
#pragma unroll
        for (int r = 0; r < RPW; r++) dot[r] = warp_sum(dot[r]);
#pragma unroll
        for (int r = 0; r < RPW; r++) {
            const int i = warp + kDecodeWarps * r;
            od[r] = 0.0f;
            if (i >= D) continue;
            float *s = S + (bh * D + i) * D;
            const float u = be * (sv[i] - al * dot[r]);
#pragma unroll
            for (int e = 0; e < EPL; e++) {
                const int j = lane + 32 * e;
                if (j < D) {
                    const float x = al * sr[r][e] + u * sk[j];
                    s[j] = x;
                    od[r] += x * sq[j];
                }
            }
        }
#pragma unroll
        for (int r = 0; r < RPW; r++) od[r] = warp_sum(od[r]);
        if (lane == 0)
#pragma unroll
            for (int r = 0; r < RPW; r++) {
                const int i = warp + kDecodeWarps * r;
                if (i < D) o[bh * D + i] = f2bf(od[r]);
            }
    } else {
        for (int i = warp; i < D; i += kDecodeWarps) {
            float *s = S + (bh * D + i) * D;
            float dot = 0.0f;
            for (int j = lane; j < D; j += 32) dot += s[j] * sk[j];
            dot = warp_sum(dot);
            const float u = be * (sv[i] - al * dot);
            float od = 0.0f;
            for (int j = lane; j < D; j += 32) {
                const float x = al * s[j] + u * sk[j];
                s[j] = x;
                od += x * sq[j];
            }
            od = warp_sum(od);
            if (lane == 0) o[bh * D + i] = f2bf(od);
        }
    }
}

}  // namespace

extern "C" void hy_cuda_gdn_decode(int B, int H, int D, int K, int norm_qk, const void *qkv,
                                   const float *conv_w, const float *conv_b, void *conv_cache,
                                   const void *ab, float *S, void *o, void *stream) {
    const char *fn = "hy_cuda_gdn_decode";
    HY_REQUIRE(B >= 1 && H >= 1 && D >= 1 && K >= 1,
               "%s: sizes must be positive (B %d, H %d, D %d, K %d)", fn, B, H, D, K);
    HY_REQUIRE(D <= 1024, "%s: head dim %d exceeds 1024 (the head's q, k, v sit in shared memory)",
               fn, D);
    HY_REQUIRE((long long)B * H <= 0x7fffffffLL && (long long)B * 3 * H * D <= 0x7fffffffLL,
               "%s: B %d x H %d x D %d is too large", fn, B, H, D);
    HY_REQUIRE(qkv && conv_w && ab && S && o && (K == 1 || conv_cache),
               "%s: qkv, conv_w, ab, S, o (and conv_cache when K > 1) must not be NULL", fn);
    const size_t shared = (size_t)3 * D * sizeof(float);
    const cudaStream_t s = as_stream(stream);
    const uint16_t *x = (const uint16_t *)qkv, *g = (const uint16_t *)ab;
    uint16_t *cc = (uint16_t *)conv_cache, *out = (uint16_t *)o;
    const dim3 grid(B * H), block(kDecodeThreads);
    if (D <= 64)
        launch_pdl(gdn_decode_kernel<8, 2>, grid, block, shared, s, H, D, K, norm_qk, x, conv_w,
                   conv_b, cc, g, S, out);
    else if (D <= 128)
        launch_pdl(gdn_decode_kernel<16, 4>, grid, block, shared, s, H, D, K, norm_qk, x, conv_w,
                   conv_b, cc, g, S, out);
    else
        launch_pdl(gdn_decode_kernel<0, 0>, grid, block, shared, s, H, D, K, norm_qk, x, conv_w,
                   conv_b, cc, g, S, out);
}
