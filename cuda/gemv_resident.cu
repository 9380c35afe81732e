// gemv_resident.cu: the decoding GEMV at batch 1 with each block's weights
// copied into shared memory before the kernel waits for its input.
//
// Why: at batch 1 a projection is a chain of dependent steps, and the
// general kernel (gemv.cu) spends ~3 us of one after the kernel before it
// ends: its input through shared memory and a block barrier (the rmsnorm
// two), then its weight rows, then the residual, each a round trip to
// memory. Here one block an SM takes a contiguous share of the rows (a
// 115M model's largest, w_fused, is 48 KB a block) and, launched early by
// programmatic dependent launch (pdl.cuh), copies them into shared memory
// with cp.async while the kernel before still runs; the bias too. After
// the wait a warp reads the whole input row into registers (16 bytes a
// lane a chunk), forms u there (the rmsnorm's sum with shuffles, no block
// barrier) and reads its rows' residuals at the same time: one round trip,
// then the dot products from shared memory. Every warp forms u itself (the
// input is at most 4 KB, served from L1 after the first warp's miss), but
// for the sigmoids of a gate or SwiGLU input (see form_u).
//
// The sums run in the general kernel's order (the rmsnorm's squares in the
// groups of its 128 threads, each lane's chunks in order, the same
// shuffles), so the two kernels give the same bits; gpu_gemv_resident_same
// checks that. Used when B = 1, K is a multiple of 256 up to 2048 (1024
// with an rmsnorm), the pointers are 16-byte aligned and a block's rows fit
// in kMaxSmem.
#include "gemv_common.cuh"
#include "pdl.cuh"

namespace hy_gemv {
namespace {

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
// A block's rows; two kernels' blocks fit on an SM together (228 KB), so
// that the next kernel copies its rows while this one runs.
constexpr int kMaxSmem = 64 * 1024;
constexpr int kMaxKC = 8;      // K up to 2048
constexpr int kMaxNormKC = 4;  // the rmsnorm's weights held in registers: K up to 1024

// u . w for one 16-byte chunk: 8 bf16 of u (packed) and of w, in order.
__device__ __forceinline__ float dot8(uint4 w, uint4 u, float acc) {
    const uint32_t a[4] = {w.x, w.y, w.z, w.w}, b[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int e = 0; e < 4; e++) {
        acc += __uint_as_float(a[e] << 16) * __uint_as_float(b[e] << 16);
        acc += __uint_as_float(a[e] & 0xffff0000u) * __uint_as_float(b[e] & 0xffff0000u);
    }
    return acc;
}

__device__ __forceinline__ uint4 ld16(const uint16_t *p) {
    return *reinterpret_cast<const uint4 *>(p);
}

__device__ __forceinline__ void unpack8(uint4 v, float *f) {
    const uint32_t a[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int e = 0; e < 4; e++) {
        f[2 * e] = __uint_as_float(a[e] << 16);
        f[2 * e + 1] = __uint_as_float(a[e] & 0xffff0000u);
    }
}

__device__ __forceinline__ uint4 pack8(const float *f) {
    return make_uint4(pack2(f[0], f[1]), pack2(f[2], f[3]), pack2(f[4], f[5]), pack2(f[6], f[7]));
}

// Weight row `part` (0, or 1 for a SwiGLU pair's value row) of unit u: a
// row of the concatenation, or the pair of rows u, u + M.
template <bool SW>
__device__ __forceinline__ const uint16_t *unit_row(const GemvSegs &sg, int K, int u, int part,
                                                    int *seg, int *n) {
    if (SW) {
        *seg = 0, *n = u + part * (sg.N[0] / 2);
        return sg.W[0] + (size_t)*n * K;
    }
    *seg = seg_of(sg, u, n);
    return pick(sg.W, *seg) + (size_t)*n * K;
}

// u (this lane's KC chunks, bf16 packed) from the input row, as gemv.cu's
// prologue forms it; nw: the rmsnorm's weights (read before the wait; only
// when KC <= kMaxNormKC, the host's condition for an RMSNORM input). Every
// thread of the block calls it. The gate's and the SwiGLU's sigmoids are
// formed once a block (a chunk a thread, through shared memory us: a warp
// alone would take 8 KC of them a lane, ~1 us at K = 768); the rmsnorm's
// few operations an element by every warp alone (no barrier).
template <int KC>
__device__ __forceinline__ void form_u(const GemvIn &in, int K, int lane,
                                       const float (&nw)[KC <= kMaxNormKC ? KC : 1][8],
                                       uint4 *us, uint4 (&ub)[KC]) {
    constexpr bool kNorm = KC <= kMaxNormKC;
    if (in.kind == HY_GEMV_GATE || in.kind == HY_GEMV_SWIGLU) {
        const int ch = threadIdx.x;  // K / 8 <= kThreads chunks
        if (ch < K / 8) {
            float f[8], g[8];
            unpack8(ld16(in.x + ch * 8), f);
            unpack8(ld16((in.kind == HY_GEMV_GATE ? in.gate : in.x + K) + ch * 8), g);
#pragma unroll
            for (int j = 0; j < 8; j++)
                f[j] = in.kind == HY_GEMV_GATE ? f[j] * round_bf(g[j] * sigm(g[j]))
                                               : f[j] * sigm(f[j]) * g[j];
            us[ch] = pack8(f);
        }
        __syncthreads();
#pragma unroll
        for (int i = 0; i < KC; i++) ub[i] = us[lane + 32 * i];
        return;
    }
    uint4 xv[KC];
#pragma unroll
    for (int i = 0; i < KC; i++) xv[i] = ld16(in.x + (lane + 32 * i) * 8);
    if (!kNorm || in.kind == HY_GEMV_PLAIN) {
#pragma unroll
        for (int i = 0; i < KC; i++) ub[i] = xv[i];
        return;
    }
    // gemv.cu's thread t = 32 w + lane holds chunks t, t + 128, ...: the
    // chunks i = w, w + 4, ... here; its warps' sums are added in order.
    float ss = 0.0f;
#pragma unroll
    for (int w = 0; w < kGemvWarps; w++) {
        float p = 0.0f;
#pragma unroll
        for (int i = w; i < KC; i += kGemvWarps) {
            float f[8];
            unpack8(xv[i], f);
#pragma unroll
            for (int j = 0; j < 8; j++) p += f[j] * f[j];
        }
        ss += warp_sum(p);
    }
    const float s = (float)(1.0 / sqrt((double)ss / K + (double)in.eps));
#pragma unroll
    for (int i = 0; i < KC; i++) {
        float f[8];
        unpack8(xv[i], f);
#pragma unroll
        for (int j = 0; j < 8; j++) f[j] = f[j] * s * nw[kNorm ? i : 0][j];
        ub[i] = pack8(f);
    }
}

// Block b: units [b * per, b * per + per) of R (rows, or SwiGLU pairs); warp
// w takes units w, w + kWarps, ... of them, its lane l holding unit
// w + l kWarps's bias and residual.
template <int KC, bool SW>
__global__ void __launch_bounds__(kThreads, 2)
    gemv_resident_kernel(int per, GemvIn in, GemvSegs sg) {
    extern __shared__ uint4 wsm[];  // [per][rows][K / 8 chunks]
    __shared__ uint4 us[kMaxKC * 32];  // u of a GATE or SWIGLU input
    constexpr int K = 256 * KC, CH = K / 8, rows = SW ? 2 : 1;  // SW: sg.swiglu
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int R = SW ? sg.N[0] / 2 : pick(sg.end, sg.n - 1);
    const int u0 = blockIdx.x * per, nu = min(per, R - u0);
    // 1. Before the wait: this warp's rows into shared memory, the biases.
    for (int j = warp; j < nu; j += kWarps)
        for (int t = 0; t < rows; t++) {
            int seg, n;
            const uint16_t *src = unit_row<SW>(sg, K, u0 + j, t, &seg, &n);
            uint4 *dst = wsm + (size_t)(j * rows + t) * CH;
#pragma unroll
            for (int i = 0; i < KC; i++)
                cp_async16_zfill(dst + lane + 32 * i, src + (lane + 32 * i) * 8, 16);
        }
    cp_async_commit_group();
    const int mine = warp + lane * kWarps;  // the unit whose bias and residual this lane reads
    int my_seg = 0, my_n = 0;
    float bias = 0.0f, res = 0.0f;
    if (!SW && mine < nu) {
        my_seg = seg_of(sg, u0 + mine, &my_n);
        const float *b = pick(sg.bias, my_seg);
        if (b) bias = b[my_n];
    }
    float nw[KC <= kMaxNormKC ? KC : 1][8] = {};
    if constexpr (KC <= kMaxNormKC)
        if (in.kind == HY_GEMV_RMSNORM)
#pragma unroll
            for (int i = 0; i < KC; i++) ld_f<8>(in.norm_w + (lane + 32 * i) * 8, nw[i]);
    pdl_wait();  // x, gate and residual come from the kernels before
    pdl_trigger();
    // 2. The residuals and the input row together, u in registers.
    if (!SW && mine < nu) {
        const uint16_t *r = pick(sg.res, my_seg);
        if (r) res = bf2f(r[my_n]);
    }
    uint4 ub[KC];
    form_u<KC>(in, K, lane, nw, us, ub);
    cp_async_wait_group<0>();  // this lane's own copies: no barrier needed
    __syncwarp();
    // 3. The products, two units at a time.
    for (int j = warp, q = 0; j < nu; j += 2 * kWarps, q += 2) {
        const int j2 = j + kWarps;
        const bool two = j2 < nu;
        float a[2][2] = {{0.0f, 0.0f}, {0.0f, 0.0f}};
#pragma unroll
        for (int i = 0; i < KC; i++) {
            const int c = lane + 32 * i;
#pragma unroll
            for (int t = 0; t < rows; t++) {
                a[0][t] = dot8(wsm[(size_t)(j * rows + t) * CH + c], ub[i], a[0][t]);
                if (two) a[1][t] = dot8(wsm[(size_t)(j2 * rows + t) * CH + c], ub[i], a[1][t]);
            }
        }
#pragma unroll
        for (int p = 0; p < 2; p++) {
            if (p == 1 && !two) break;
            const float d0 = warp_sum(a[p][0]);
            const float d1 = SW ? warp_sum(a[p][1]) : 0.0f;
            const float b = __shfl_sync(0xffffffffu, bias, q + p);
            const float r = __shfl_sync(0xffffffffu, res, q + p);
            if (lane != 0) continue;
            const int u = u0 + j + p * kWarps;
            if (SW) {
                const float g = round_bf(d0), v = round_bf(d1);
                sg.y[0][u] = f2bf(g * sigm(g) * v);
            } else {
                int n;
                const int s = seg_of(sg, u, &n);
                gemv_store_pre(sg, s, n, d0, b, r);
            }
        }
    }
}

template <int KC, bool SW>
void launch_sw(int per, int blocks, size_t smem, const GemvIn &in, const GemvSegs &sg,
               cudaStream_t s) {
    static bool opted = false;  // beyond 48 KB with the static us[]: opt in once
    if (!opted)
        CUDA_CHECK(cudaFuncSetAttribute(gemv_resident_kernel<KC, SW>,
                                        cudaFuncAttributeMaxDynamicSharedMemorySize, kMaxSmem));
    opted = true;
    launch_pdl(gemv_resident_kernel<KC, SW>, dim3((unsigned)blocks), dim3(kThreads), smem, s, per,
               in, sg);
}

template <int KC>
void launch(int per, int blocks, size_t smem, const GemvIn &in, const GemvSegs &sg,
            cudaStream_t s) {
    if (sg.swiglu)
        launch_sw<KC, true>(per, blocks, smem, in, sg, s);
    else
        launch_sw<KC, false>(per, blocks, smem, in, sg, s);
}

}  // namespace

bool plan_resident(int K, const GemvIn &in, const GemvSegs &sg, ResidentPlan *plan) {
    const char *e = getenv("HYDRA_GEMV_RESIDENT");  // 0: the general kernel (for A/B timing)
    if (e && e[0] == '0') return false;
    const int KC = K / 256;
    if (K % 256 != 0 || KC < 1 || KC > kMaxKC) return false;
    if (in.kind == HY_GEMV_RMSNORM && KC > kMaxNormKC) return false;
    const int R = sg.swiglu ? sg.N[0] / 2 : sg.end[sg.n - 1];
    const int sms = sm_count(), per = (R + sms - 1) / sms;
    if (per > 32 * kWarps) return false;  // a lane holds one unit's bias and residual
    const size_t smem = (size_t)per * (sg.swiglu ? 2 : 1) * K * 2;
    if (smem > (size_t)kMaxSmem) return false;
    if (plan) *plan = {per, (R + per - 1) / per, smem};
    return true;
}

bool launch_resident(int K, const GemvIn &in, const GemvSegs &sg, cudaStream_t s) {
    ResidentPlan p;
    if (!plan_resident(K, in, sg, &p)) return false;
    switch (K / 256) {
    case 1: launch<1>(p.per, p.blocks, p.smem, in, sg, s); break;
    case 2: launch<2>(p.per, p.blocks, p.smem, in, sg, s); break;
    case 3: launch<3>(p.per, p.blocks, p.smem, in, sg, s); break;
    case 4: launch<4>(p.per, p.blocks, p.smem, in, sg, s); break;
    case 5: launch<5>(p.per, p.blocks, p.smem, in, sg, s); break;
    case 6: launch<6>(p.per, p.blocks, p.smem, in, sg, s); break;
    case 7: launch<7>(p.per, p.blocks, p.smem, in, sg, s); break;
    default: launch<8>(p.per, p.blocks, p.smem, in, sg, s); break;
    }
    return true;
}

}  // namespace hy_gemv
