// gemv.cu: the decoding step's projections with their neighbours folded in
// (see hy_cuda_gemv.h for the contract).
//
// Why a hand-written GEMV: at batch 1, y = u W^T reads W (N x K bf16) once
// and does 2 N K FLOPs: pure bandwidth. cuBLAS does that well, but the
// rmsnorm before it and the residual add after it are kernels of their own,
// each costing about what the product costs. Here a block first builds u
// in shared memory (up to four batch rows, fp32 holding bf16-rounded
// values), then each warp takes whole rows of W, two at a time so that
// several 16-byte loads per lane are in flight, and reduces its dot
// products with shuffles. The grid covers the rows of every projection of
// the call (their row ranges concatenated) and grid-strides over them, one
// wave of blocks at 64 registers a thread (eight 128-thread blocks an SM).
// Launched with programmatic dependent launch (pdl.cuh): the first weight
// lines are requested before the kernel waits for its input. A batch-1 call
// whose rows fit runs gemv_resident.cu's kernel instead (the same bits;
// here: batches, the tied head, sizes it does not take).
#include <string.h>

#include "gemv_common.cuh"
#include "pdl.cuh"

using namespace hy_gemv;

namespace {

constexpr int kGemvNB = 4;  // batch rows per block (grid.y covers the rest)

// Sum of v over the block (all threads call it); red holds kGemvWarps floats.
__device__ float block_sum(float v, float *red) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    v = warp_sum(v);
    if (lane == 0) red[warp] = v;
    __syncthreads();
    float s = 0.0f;
#pragma unroll
    for (int i = 0; i < kGemvWarps; i++) s += red[i];
    return s;
}

// u (nb, K) into shared memory, rows b0 .. b0 + nb - 1 of the batch, VEC
// elements a thread at a time (16-byte loads when VEC is 8) with the loop
// unrolled, so that a thread's loads are in flight together: a row of 2048
// is two rounds to memory, not sixteen. One read of x from global memory
// (the rmsnorm's second pass reads it back from shared memory).
template <int VEC>
__device__ void gemv_prologue(const GemvIn &in, int K, int b0, int nb, float *xs,
                              float (*red)[kGemvWarps]) {
    const int nch = K / VEC;
    for (int b = 0; b < nb; b++) {
        const size_t row = (size_t)(b0 + b);
        const uint16_t *xr = in.x + row * (in.kind == HY_GEMV_SWIGLU ? 2 * (size_t)K : (size_t)K);
        float *u = xs + (size_t)b * K;
        if (in.kind == HY_GEMV_RMSNORM) {
            float ss = 0.0f;
#pragma unroll 4
            for (int ch = threadIdx.x; ch < nch; ch += blockDim.x) {
                float f[VEC];
                ld_bf<VEC>(xr + ch * VEC, f);
                st_f<VEC>(u + ch * VEC, f);
#pragma unroll
                for (int j = 0; j < VEC; j++) ss += f[j] * f[j];
            }
            ss = block_sum(ss, red[b]);  // its barrier also publishes u
            const float s = (float)(1.0 / sqrt((double)ss / K + (double)in.eps));
#pragma unroll 4
            for (int ch = threadIdx.x; ch < nch; ch += blockDim.x) {
                float f[VEC], w[VEC];
                ld_f<VEC>(u + ch * VEC, f);
                ld_f<VEC>(in.norm_w + ch * VEC, w);
#pragma unroll
                for (int j = 0; j < VEC; j++) f[j] = round_bf(f[j] * s * w[j]);
                st_f<VEC>(u + ch * VEC, f);
            }
            continue;
        }
#pragma unroll 4
        for (int ch = threadIdx.x; ch < nch; ch += blockDim.x) {
            float f[VEC], g[VEC];
            ld_bf<VEC>(xr + ch * VEC, f);
            if (in.kind == HY_GEMV_GATE) {
                ld_bf<VEC>(in.gate + row * K + ch * VEC, g);
#pragma unroll
                for (int j = 0; j < VEC; j++) f[j] = f[j] * round_bf(g[j] * sigm(g[j]));
            } else if (in.kind == HY_GEMV_SWIGLU) {
                ld_bf<VEC>(xr + K + ch * VEC, g);
#pragma unroll
                for (int j = 0; j < VEC; j++) f[j] = f[j] * sigm(f[j]) * g[j];
            }
#pragma unroll
            for (int j = 0; j < VEC; j++) f[j] = round_bf(f[j]);
            st_f<VEC>(u + ch * VEC, f);
        }
    }
}

// a0[b] += f0 . u_b[c:c+VEC], a1[b] += f1 . u_b[c:c+VEC] for the block's batch rows.
template <int VEC, int NB>
__device__ __forceinline__ void fma_chunk(const float *f0, const float *f1, const float *xs, int K,
                                          int c, int nb, float *a0, float *a1) {
#pragma unroll
    for (int b = 0; b < NB; b++) {
        if (b >= nb) break;
        float u[VEC];
        ld_f<VEC>(xs + (size_t)b * K + c, u);
#pragma unroll
        for (int j = 0; j < VEC; j++) {
            a0[b] += f0[j] * u[j];
            a1[b] += f1[j] * u[j];
        }
    }
}

// Block (x, y): batch rows [y * NB, y * NB + NB) of B, and every
// gridDim.x * kGemvWarps-th row of the concatenation from its own; a warp
// takes rows r and r + stride together. Before pdl_wait each lane asks for
// one 128-byte line of the first 4 KiB of its warp's first two rows to be
// brought into L1 (weights do not depend on the kernel before), so their
// latency overlaps that kernel's tail and the prologue; prefetches hold no
// registers (holding the loads themselves cost occupancy).
template <int VEC, int NB>
__global__ void __launch_bounds__(kGemvThreads, 8)
    gemv_kernel(int B, int K, GemvIn in, GemvSegs sg) {
    extern __shared__ float xs[];  // [NB][K]: u
    __shared__ float red[NB][kGemvWarps];
    const int b0 = blockIdx.y * NB, nb = B - b0 < NB ? B - b0 : NB;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int stride = gridDim.x * kGemvWarps, M = sg.N[0] / 2;
    // Rows of the concatenation, or (swiglu) pairs of rows m, m + M, a warp's
    // work one pair at a time: r, r + stride or m, m + M.
    const int R = sg.swiglu ? M : pick(sg.end, sg.n - 1), step = sg.swiglu ? stride : 2 * stride;
    const int r_first = blockIdx.x * kGemvWarps + warp;
    if (r_first < R && lane * 64 < K) {
        for (int t = 0; t < 2; t++) {
            int n, sgi = 0;
            if (sg.swiglu) n = r_first + t * M;
            else if (r_first + t * stride < R) sgi = seg_of(sg, r_first + t * stride, &n);
            else break;
            asm volatile("prefetch.global.L1 [%0];" ::"l"(pick(sg.W, sgi) + (size_t)n * K + lane * 64));
        }
    }
    if (in.kind == HY_GEMV_RMSNORM)  // the norm's weights, for the prologue's second pass
        for (int k = threadIdx.x * 32; k < K; k += blockDim.x * 32)
            asm volatile("prefetch.global.L1 [%0];" ::"l"(in.norm_w + k));
    pdl_wait();  // x, gate and residual come from the kernels before
    pdl_trigger();
    gemv_prologue<VEC>(in, K, b0, nb, xs, red);
    __syncthreads();
    for (int r = r_first; r < R; r += step) {
        const int r2 = r + stride;
        const bool two = sg.swiglu || r2 < R;
        int n0 = r, n1 = r + M, s0 = 0, s1 = 0;
        if (!sg.swiglu) {
            s0 = seg_of(sg, r, &n0);
            s1 = two ? seg_of(sg, r2, &n1) : s0;
        }
        const uint16_t *w0 = pick(sg.W, s0) + (size_t)n0 * K;
        const uint16_t *w1 = pick(sg.W, s1) + (size_t)(two ? n1 : n0) * K;
        float a0[NB], a1[NB];
#pragma unroll
        for (int b = 0; b < NB; b++) a0[b] = a1[b] = 0.0f;
#pragma unroll 4
        for (int c = lane * VEC; c < K; c += 32 * VEC) {
            float f0[VEC], f1[VEC];
            ld_bf<VEC>(w0 + c, f0);
            ld_bf<VEC>(w1 + c, f1);  // row r again when there is no second row (discarded)
            fma_chunk<VEC, NB>(f0, f1, xs, K, c, nb, a0, a1);
        }
#pragma unroll
        for (int b = 0; b < NB; b++) {
            if (b >= nb) break;
            const float d0 = warp_sum(a0[b]), d1 = warp_sum(a1[b]);
            if (lane == 0 && sg.swiglu) {
                const float g = round_bf(d0), v = round_bf(d1);
                sg.y[0][(size_t)(b0 + b) * M + r] = f2bf(g * sigm(g) * v);
            } else if (lane == 0) {
                gemv_store(sg, s0, n0, b0 + b, d0);
                if (two) gemv_store(sg, s1, n1, b0 + b, d1);
            }
        }
    }
}

template <int VEC, int NB>
void launch(int B, int K, const GemvIn &in, const GemvSegs &sg, cudaStream_t s) {
    const size_t smem = (size_t)NB * K * sizeof(float);
    if (smem > 48 * 1024)
        CUDA_CHECK(cudaFuncSetAttribute(gemv_kernel<VEC, NB>,
                                        cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    const int R = sg.swiglu ? sg.N[0] / 2 : sg.end[sg.n - 1];
    int gx = (R + kGemvWarps - 1) / kGemvWarps;
    const int cap = sm_count() * 8;  // the grid stride does the rest
    if (gx > cap) gx = cap;
    dim3 grid((unsigned)gx, (unsigned)((B + NB - 1) / NB));
    launch_pdl(gemv_kernel<VEC, NB>, grid, dim3(kGemvThreads), smem, s, B, K, in, sg);
}

}  // namespace

// The kernel's view of a call, after checking it; *vec: the 16-byte path
// (rows of x, gate, norm_w and W all start 16-byte aligned).
static void prepare(const char *fn, int B, int K, const hy_gemv_in *in, const hy_gemv_out *out,
                    int n_out, GemvIn *gi, GemvSegs *sg, bool *vec) {
    HY_REQUIRE(in && out && n_out >= 1 && n_out <= HY_GEMV_MAX_OUT,
               "%s: needs an input and 1 to %d projections, got %d", fn, HY_GEMV_MAX_OUT, n_out);
    HY_REQUIRE(B >= 1 && K >= 1 && K <= HY_GEMV_MAX_K && B <= 65535 * kGemvNB,
               "%s: B %d must be in 1..%d and K %d in 1..%d", fn, B, 65535 * kGemvNB, K,
               HY_GEMV_MAX_K);
    HY_REQUIRE(in->kind >= HY_GEMV_PLAIN && in->kind <= HY_GEMV_SWIGLU,
               "%s: unknown input kind %d", fn, (int)in->kind);
    HY_REQUIRE(in->x, "%s: x is NULL", fn);
    HY_REQUIRE(in->kind != HY_GEMV_GATE || in->gate, "%s: a GATE input needs gate", fn);
    HY_REQUIRE(in->kind != HY_GEMV_RMSNORM || in->norm_w, "%s: an RMSNORM input needs norm_w",
               fn);
    *gi = {(int)in->kind, (const uint16_t *)in->x, (const uint16_t *)in->gate, in->norm_w,
           in->eps};
    memset(sg, 0, sizeof *sg);
    sg->n = n_out;
    long long rows = 0;
    *vec = K % 8 == 0 && aligned16(in->x) && aligned16(in->gate) && aligned16(in->norm_w);
    for (int i = 0; i < n_out; i++) {
        HY_REQUIRE(out[i].W && out[i].y && out[i].N >= 1,
                   "%s: projection %d needs W, y and N >= 1 (N %d)", fn, i, out[i].N);
        rows += out[i].N;
        HY_REQUIRE(rows <= 0x7fffffffLL && (long long)B * out[i].N <= 0x7fffffffLL,
                   "%s: %lld rows are too many", fn, rows);
        sg->W[i] = (const uint16_t *)out[i].W;
        sg->bias[i] = out[i].bias;
        sg->res[i] = (const uint16_t *)out[i].residual;
        sg->y[i] = (uint16_t *)out[i].y;
        sg->N[i] = out[i].N;
        sg->end[i] = (int)rows;
        *vec = *vec && aligned16(out[i].W);
    }
    for (int i = 0; i < n_out; i++)
        HY_REQUIRE(!out[i].swiglu || (n_out == 1 && out[i].N % 2 == 0 && !out[i].bias &&
                                      !out[i].residual),
                   "%s: a swiglu projection must be the call's only one, with N even (N %d) and "
                   "no bias or residual", fn, out[i].N);
    sg->swiglu = out[0].swiglu;
}

extern "C" void hy_cuda_gemv(int B, int K, const hy_gemv_in *in, const hy_gemv_out *out,
                             int n_out, void *stream) {
    GemvIn gi;
    GemvSegs sg;
    bool vec;
    prepare("hy_cuda_gemv", B, K, in, out, n_out, &gi, &sg, &vec);
    cudaStream_t s = as_stream(stream);
    if (vec && B == 1 && launch_resident(K, gi, sg, s)) return;
    if (vec && B == 1)
        launch<8, 1>(B, K, gi, sg, s);
    else if (vec)
        launch<8, kGemvNB>(B, K, gi, sg, s);
    else if (B == 1)
        launch<1, 1>(B, K, gi, sg, s);
    else
        launch<1, kGemvNB>(B, K, gi, sg, s);
}

extern "C" int hy_cuda_gemv_resident(int B, int K, const hy_gemv_in *in, const hy_gemv_out *out,
                                     int n_out) {
    GemvIn gi;
    GemvSegs sg;
    bool vec;
    prepare("hy_cuda_gemv_resident", B, K, in, out, n_out, &gi, &sg, &vec);
    return vec && B == 1 && plan_resident(K, gi, sg, NULL);
}
