// swa_decode.cu: one decoding token of attention on the GPU: the ring-buffer
// step of a sliding window (hy_cuda_swa_step), the fused step of a SWA layer
// from its qkv projection (hy_cuda_swa_decode) and the dense model's split-K
// step over its whole KV cache (hy_cuda_dense_step). The training kernels are
// in swa.cu; the C interface and the semantics are in hy_cuda_swa.h.
#include <cuda_bf16.h>
#include <math.h>
#include <stdint.h>

#include "check.cuh"
#include "hy_cuda_swa.h"
#include "pdl.cuh"
#include "swa_common.cuh"

namespace {

// ---------------------------------------------------------------- decode

constexpr int STEP_WARPS = 8;
constexpr int STEP_MAXD = 256;
constexpr int STEP_R = STEP_MAXD / 32;  // dimensions per lane

// A decoding step's online softmax, shared by the ring-buffer and dense
// kernels: each warp folds keys into its own (m, l, acc) with the lanes
// splitting D, then the block merges the warps'.
struct step_warp {
    float qv[STEP_R], acc[STEP_R], m, l;
};

__device__ __forceinline__ void step_begin(step_warp &w, const bf16raw *q, int D, int lane) {
#pragma unroll
    for (int r = 0; r < STEP_R; r++) {
        int d = lane + 32 * r;
        w.qv[r] = d < D ? bf2f(q[d]) : 0.f;
        w.acc[r] = 0.f;
    }
    w.m = -INFINITY, w.l = 0.f;
}

// One key kr with value vr (D each) into the warp's softmax.
__device__ __forceinline__ void step_fold(step_warp &w, const bf16raw *kr, const bf16raw *vr,
                                          int D, int lane, float scale) {
    float dot = 0.f;
#pragma unroll
    for (int r = 0; r < STEP_R; r++) {
        int d = lane + 32 * r;
        if (d < D) dot += w.qv[r] * bf2f(kr[d]);
    }
#pragma unroll
    for (int off = 16; off; off >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, off);
    float x = dot * scale, mn = fmaxf(w.m, x);
    float c = expf(w.m - mn), p = expf(x - mn);  // m = -inf on the first key: c = 0
    w.l = w.l * c + p;
#pragma unroll
    for (int r = 0; r < STEP_R; r++) {
        int d = lane + 32 * r;
        w.acc[r] = w.acc[r] * c + (d < D ? p * bf2f(vr[d]) : 0.f);
    }
    w.m = mn;
}

struct step_block {
    float m[STEP_WARPS], l[STEP_WARPS], acc[STEP_WARPS][STEP_MAXD];
};

// The warps' softmaxes into one (a block barrier): the block's max M and
// sum L; step_sum() then gives the unnormalised output in dimension d.
__device__ __forceinline__ void step_merge(step_block &sh, const step_warp &w, int D, int warp,
                                           int lane, float &M, float &L) {
    if (lane == 0) sh.m[warp] = w.m, sh.l[warp] = w.l;
#pragma unroll
    for (int r = 0; r < STEP_R; r++) {
        int d = lane + 32 * r;
        if (d < D) sh.acc[warp][d] = w.acc[r];
    }
    __syncthreads();
    M = -INFINITY;
#pragma unroll
    for (int i = 0; i < STEP_WARPS; i++) M = fmaxf(M, sh.m[i]);
    L = 0.f;
#pragma unroll
    for (int i = 0; i < STEP_WARPS; i++)
        if (sh.m[i] != -INFINITY) L += sh.l[i] * expf(sh.m[i] - M);
}

__device__ __forceinline__ float step_sum(const step_block &sh, int d, float M) {
    float sum = 0.f;
#pragma unroll
    for (int i = 0; i < STEP_WARPS; i++)
        if (sh.m[i] != -INFINITY) sum += sh.acc[i][d] * expf(sh.m[i] - M);
    return sum;
}

// Attend q (D, bf16) over the ring's visible positions max(0, pos - W + 1)
// .. pos (slot = position % W; rk, rv point at this pair's first slot, slots
// rs elements apart) into o (D): each warp folds every STEP_WARPS-th
// position into its own online softmax (lanes split D), and the warps'
// partial results are merged at the end. The block has just written slot
// pos % W: the caller's barrier makes it visible.
__device__ __forceinline__ void ring_attend(step_block &sh, int D, int W, long long pos,
                                            float scale, const bf16raw *q, const bf16raw *rk,
                                            const bf16raw *rv, long long rs, bf16raw *o) {
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int n = (int)(pos + 1 < W ? pos + 1 : W);
    const long long first = pos - n + 1;  // oldest visible position, >= 0
    step_warp w;
    step_begin(w, q, D, lane);
    for (int t = warp; t < n; t += STEP_WARPS) {
        const long long sl = (first + t) % W;
        step_fold(w, rk + sl * rs, rv + sl * rs, D, lane, scale);
    }
    float M, L;
    step_merge(sh, w, D, warp, lane, M, L);
    for (int d = tid; d < D; d += blockDim.x) {
        __nv_bfloat16 r = __float2bfloat16_rn(step_sum(sh, d, M) / L);
        o[d] = *reinterpret_cast<bf16raw *>(&r);
    }
}

// One block per (h, b): write this token's k, v into the ring, then attend.
__global__ void __launch_bounds__(STEP_WARPS * 32)
    swa_step_kernel(int H, int D, int W, long long pos_arg, const long long *pos_dev,
                    float scale, const bf16raw *__restrict__ q, const bf16raw *__restrict__ k,
                    const bf16raw *__restrict__ v, bf16raw *ring_k, bf16raw *ring_v,
                    bf16raw *__restrict__ o) {
    // The position comes from device memory when given (a replayed CUDA graph).
    const long long pos = pos_dev ? *pos_dev : pos_arg;
    __shared__ step_block sh;
    const int h = blockIdx.x, b = blockIdx.y, tid = threadIdx.x;
    const long long rs = (long long)H * D;
    const size_t in_off = ((size_t)b * H + h) * D;
    bf16raw *rk = ring_k + (size_t)b * W * rs + (size_t)h * D;  // slot s at rk + s * rs
    bf16raw *rv = ring_v + (size_t)b * W * rs + (size_t)h * D;
    const long long slot = pos % W;
    for (int d = tid; d < D; d += blockDim.x) {
        rk[slot * rs + d] = k[in_off + d];
        rv[slot * rs + d] = v[in_off + d];
    }
    __syncthreads();  // the block reads back what it just wrote
    ring_attend(sh, D, W, pos, scale, q + in_off, rk, rv, rs, o + in_off);
}

// RoPE's inverse frequencies as a kernel parameter (hy_cuda_rope_fwd's, from
// the host's powf, so that both rotate alike).
constexpr int STEP_MAXHALF = STEP_MAXD / 2;
struct rope_tab {
    float f[STEP_MAXHALF];
};

// A SWA layer's decoding token from its qkv projection (B, 3 H D): block
// (h, b) rotates the head's q and k at position pos (as hy_cuda_rope_fwd:
// sincos in double, the results rounded to bf16) and writes k and v into the
// ring. Then, unlike the online softmax of swa_step_kernel (one dependent
// load after another, ~64 a warp for a 512-wide window), the window's
// scores fit in shared memory, so three passes whose loads are all
// independent: each thread scores whole keys (sc[j] = q.k_j scale), the
// block takes the max and the sum of exp(sc - max), and each warp sums
// p_j v_j over every DECODE_WARPS-th position (lanes over pairs of
// dimensions) before the warps' sums are added.
constexpr int DECODE_WARPS = 32;  // a whole SM's worth of loads in flight for one head
constexpr int DECODE_THREADS = DECODE_WARPS * 32;
constexpr int SWA_DECODE_MAXW = 32768;  // 128 KiB of scores

__device__ __forceinline__ float block_reduce(float v, float *red, bool is_max) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
#pragma unroll
    for (int o = 16; o; o >>= 1) {
        const float w = __shfl_xor_sync(0xffffffffu, v, o);
        v = is_max ? fmaxf(v, w) : v + w;
    }
    __syncthreads();  // red is free (an earlier reduction's readers are done)
    if (lane == 0) red[warp] = v;
    __syncthreads();
    float r = red[0];
#pragma unroll
    for (int i = 1; i < DECODE_WARPS; i++) r = is_max ? fmaxf(r, red[i]) : r + red[i];
    return r;
}

// 16 bytes global -> shared without registers (cp.async, sm_80+); the
// thread that copies waits for its copies with stage_wait, then a barrier.
__device__ __forceinline__ void stage16(void *dst, const void *src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(
                     (uint32_t)__cvta_generic_to_shared(dst)),
                 "l"(src)
                 : "memory");
}
__device__ __forceinline__ void stage_wait() {
    asm volatile("cp.async.commit_group;\ncp.async.wait_group 0;\n" ::: "memory");
}

// STAGE: the window's other W - 1 keys and values (this layer's own state,
// written by earlier tokens) are copied into shared memory with cp.async
// before the kernel waits for its input (rows padded to D + 8 elements, so
// that a warp's 16-byte reads of 32 different keys spread over the banks);
// after the wait only this token's q, k, v come from memory. The sums are
// those of the unstaged kernel, in the same order.
template <bool STAGE>
__global__ void __launch_bounds__(DECODE_THREADS)
    swa_decode_kernel(int H, int D, int W, long long pos_arg, const long long *pos_dev,
                      float scale, rope_tab fr, const bf16raw *__restrict__ qkv,
                      bf16raw *ring_k, bf16raw *ring_v, bf16raw *__restrict__ o) {
    // The position is set before the step's kernels run (a copy, or the argmax
    // after the step before): it may be read before the wait.
    const long long pos = pos_dev ? *pos_dev : pos_arg;
    extern __shared__ float sc[];                   // [W]: scores, then exp(score - max)
    __shared__ float qs[STEP_MAXD];                 // rotated q (bf16 values)
    __shared__ float acc[DECODE_WARPS][STEP_MAXD];    // each warp's sum of p v
    __shared__ float red[DECODE_WARPS];
    __shared__ float rc[STEP_MAXHALF], rsn[STEP_MAXHALF];  // RoPE's cos and sin at pos
    const int h = blockIdx.x, b = blockIdx.y, tid = threadIdx.x, half = D / 2;
    const int warp = tid >> 5, lane = tid & 31;
    const long long rs = (long long)H * D;
    const bf16raw *q = qkv + (size_t)b * 3 * rs + (size_t)h * D;
    const bf16raw *k = q + rs, *v = q + 2 * rs;
    bf16raw *rk = ring_k + (size_t)b * W * rs + (size_t)h * D;  // slot s at rk + s * rs
    bf16raw *rv = ring_v + (size_t)b * W * rs + (size_t)h * D;
    const long long slot = pos % W;
    const int n = (int)(pos + 1 < W ? pos + 1 : W);
    // The oldest visible position's slot; position first + j sits in slot
    // f0 + j, less W past the end (no 64-bit modulo in the loops below).
    const int f0 = (int)((pos - n + 1) % W);
    const int DP = D + 8;  // a staged row's stride (elements)
    bf16raw *sk = reinterpret_cast<bf16raw *>(sc + ((W + 3) & ~3)), *sv = sk + (size_t)W * DP;
    if (STAGE) {
        // Positions first .. pos - 1 (j < n - 1), 16 bytes a copy.
        const int cpr = D / 8, total = (n - 1) * cpr;
        for (int e = tid; e < total; e += blockDim.x) {
            const int j = e / cpr, c = (e - j * cpr) * 8;
            const int sl = f0 + j < W ? f0 + j : f0 + j - W;
            stage16(sk + (size_t)j * DP + c, rk + sl * rs + c);
            stage16(sv + (size_t)j * DP + c, rv + sl * rs + c);
        }
    } else {
        // The window's rows into L2 while the qkv projection may still run.
        for (int j = tid; j < n; j += blockDim.x) {
            const int sl = f0 + j < W ? f0 + j : f0 + j - W;
            for (int d = 0; d < D; d += 64) {  // 128-byte lines
                asm volatile("prefetch.global.L2 [%0];" ::"l"(rk + sl * rs + d));
                asm volatile("prefetch.global.L2 [%0];" ::"l"(rv + sl * rs + d));
            }
        }
    }
    for (int i = tid; i < half; i += blockDim.x) {
        double sd, cd;
        sincos((double)pos * (double)fr.f[i], &sd, &cd);
        rc[i] = (float)cd, rsn[i] = (float)sd;
    }
    pdl_wait();
    pdl_trigger();
    for (int i = tid; i < half; i += blockDim.x) {
        const float co = rc[i], si = rsn[i];
        const float q1 = bf2f(q[i]), q2 = bf2f(q[i + half]);
        const float k1 = bf2f(k[i]), k2 = bf2f(k[i + half]);
        const bf16raw ka = f2bf_rn(k1 * co - k2 * si), kb = f2bf_rn(k2 * co + k1 * si);
        qs[i] = bf2f(f2bf_rn(q1 * co - q2 * si));
        qs[i + half] = bf2f(f2bf_rn(q2 * co + q1 * si));
        rk[slot * rs + i] = ka;
        rk[slot * rs + i + half] = kb;
        if (STAGE) sk[(size_t)(n - 1) * DP + i] = ka, sk[(size_t)(n - 1) * DP + i + half] = kb;
    }
    for (int d = tid; d < D; d += blockDim.x) {
        const bf16raw x = v[d];
        rv[slot * rs + d] = x;
        if (STAGE) sv[(size_t)(n - 1) * DP + d] = x;
    }
    if (STAGE) stage_wait();
    __syncthreads();  // q in shared memory; the block reads back the slot it wrote
    // Row j of the window: staged, or in the ring.
    auto key = [&](int j) -> const bf16raw * {
        if (STAGE) return sk + (size_t)j * DP;
        return rk + (size_t)(f0 + j < W ? f0 + j : f0 + j - W) * rs;
    };
    auto val = [&](int j) -> const bf16raw * {
        if (STAGE) return sv + (size_t)j * DP;
        return rv + (size_t)(f0 + j < W ? f0 + j : f0 + j - W) * rs;
    };
    // 1. Scores, a whole key per thread (8 bf16 per load when D allows, else 2).
    float mx = -INFINITY;
    const bool vec8 = D % 8 == 0;  // then every row starts 16-byte aligned (rs, h D multiples of 8)
    for (int j = tid; j < n; j += blockDim.x) {
        const bf16raw *kr = key(j);
        float dot = 0.f;
        if (vec8) {
#pragma unroll 8  // the key's loads in flight together
            for (int i = 0; i < D; i += 8) {
                const uint4 w4 = *reinterpret_cast<const uint4 *>(kr + i);
                const uint32_t w[4] = {w4.x, w4.y, w4.z, w4.w};
#pragma unroll
                for (int e = 0; e < 4; e++)
                    dot += qs[i + 2 * e] * __uint_as_float(w[e] << 16) +
                           qs[i + 2 * e + 1] * __uint_as_float(w[e] & 0xffff0000u);
            }
        } else {
            const uint32_t *k2 = reinterpret_cast<const uint32_t *>(kr);
            for (int i = 0; i < half; i++) {
                const uint32_t w2 = k2[i];
                dot += qs[2 * i] * __uint_as_float(w2 << 16) +
                       qs[2 * i + 1] * __uint_as_float(w2 & 0xffff0000u);
            }
        }
        sc[j] = dot * scale;
        mx = fmaxf(mx, sc[j]);
    }
    const float M = block_reduce(mx, red, true);
    float sum = 0.f;
    for (int j = tid; j < n; j += blockDim.x) sum += (sc[j] = expf(sc[j] - M));
    const float L = block_reduce(sum, red, false);  // its barriers publish sc
    // 2. Each warp's sum of p_j v_j over positions warp, warp + DECODE_WARPS, ...
    float a[STEP_R];
#pragma unroll
    for (int r = 0; r < STEP_R; r++) a[r] = 0.f;
#pragma unroll 16  // the value loads of 16 positions in flight
    for (int j = warp; j < n; j += DECODE_WARPS) {
        const uint32_t *vr = reinterpret_cast<const uint32_t *>(val(j));
        const float p = sc[j];
#pragma unroll
        for (int r = 0; r < STEP_R / 2; r++) {
            const int i = lane + 32 * r;  // the pair of dimensions 2i, 2i + 1
            if (i < half) {
                const uint32_t w2 = vr[i];
                a[2 * r] += p * __uint_as_float(w2 << 16);
                a[2 * r + 1] += p * __uint_as_float(w2 & 0xffff0000u);
            }
        }
    }
#pragma unroll
    for (int r = 0; r < STEP_R / 2; r++) {
        const int i = lane + 32 * r;
        if (i < half) acc[warp][2 * i] = a[2 * r], acc[warp][2 * i + 1] = a[2 * r + 1];
    }
    __syncthreads();
    bf16raw *out = o + ((size_t)b * H + h) * D;
    for (int d = tid; d < D; d += blockDim.x) {
        float s = 0.f;
#pragma unroll
        for (int w = 0; w < DECODE_WARPS; w++) s += acc[w][d];
        out[d] = f2bf_rn(s / L);
    }
}

// ---------------------------------------------------------------- dense decode
// The dense model's step reads its whole KV cache: one block per (h, b), as
// above, would stream a long cache through a single SM. Split-K instead
// (flash-decoding): block (s, h, b) folds positions [s S, s S + S) into one
// online softmax and writes (m, l, acc[D]); a second kernel merges the
// splits. The grid covers the cache's capacity, not the position, so that
// a recorded graph replays at every position (blocks past it only mark
// themselves empty).
constexpr int DENSE_SPLIT = 256;  // S: positions per block

__global__ void __launch_bounds__(STEP_WARPS * 32)
    dense_step_split_kernel(int H, int D, int cap, long long pos_arg, const long long *pos_dev,
                            float scale, const bf16raw *__restrict__ q,
                            const bf16raw *__restrict__ k, const bf16raw *__restrict__ v,
                            bf16raw *cache_k, bf16raw *cache_v, float *__restrict__ part) {
    const long long pos = pos_dev ? *pos_dev : pos_arg;
    __shared__ step_block sh;
    const int sp = blockIdx.x, h = blockIdx.y, b = blockIdx.z, tid = threadIdx.x,
              warp = tid >> 5, lane = tid & 31;
    const long long rs = (long long)H * D;
    const size_t in_off = ((size_t)b * H + h) * D;
    bf16raw *ck = cache_k + (size_t)b * cap * rs + (size_t)h * D;  // row t at ck + t * rs
    bf16raw *cv = cache_v + (size_t)b * cap * rs + (size_t)h * D;
    float *out = part + (((size_t)b * H + h) * gridDim.x + sp) * (size_t)(D + 2);
    const long long lo = (long long)sp * DENSE_SPLIT;
    const long long hi = lo + DENSE_SPLIT < pos + 1 ? lo + DENSE_SPLIT : pos + 1;
    if (lo >= hi) return;  // past the position: the merge does not read this block's part
    if (pos < hi)  // this block holds pos: keep this token's k, v in row pos
        for (int d = tid; d < D; d += blockDim.x) {
            ck[pos * rs + d] = k[in_off + d];
            cv[pos * rs + d] = v[in_off + d];
        }
    step_warp w;
    step_begin(w, q + in_off, D, lane);
    for (long long t = lo + warp; t < hi; t += STEP_WARPS) {
        // Row pos comes from the inputs: this block may be writing it now.
        if (t == pos)
            step_fold(w, k + in_off, v + in_off, D, lane, scale);
        else
            step_fold(w, ck + t * rs, cv + t * rs, D, lane, scale);
    }
    float M, L;
    step_merge(sh, w, D, warp, lane, M, L);
    for (int d = tid; d < D; d += blockDim.x) out[2 + d] = step_sum(sh, d, M);
    if (tid == 0) out[0] = M, out[1] = L;
}

// o (b, h) = the merge of the splits holding positions 0..pos.
__global__ void dense_step_merge_kernel(int H, int D, int splits, long long pos_arg,
                                        const long long *pos_dev,
                                        const float *__restrict__ part, bf16raw *__restrict__ o) {
    const long long pos = pos_dev ? *pos_dev : pos_arg;
    const int used = (int)(pos / DENSE_SPLIT) + 1;  // every one holds at least one position
    const int h = blockIdx.x, b = blockIdx.y;
    const size_t stride = (size_t)D + 2;
    const float *p = part + ((size_t)b * H + h) * splits * stride;
    float M = -INFINITY, L = 0.f;
    for (int s = 0; s < used; s++) M = fmaxf(M, p[s * stride]);
    for (int s = 0; s < used; s++) L += p[s * stride + 1] * expf(p[s * stride] - M);
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float sum = 0.f;
        for (int s = 0; s < used; s++) sum += p[s * stride + 2 + d] * expf(p[s * stride] - M);
        __nv_bfloat16 r = __float2bfloat16_rn(sum / L);
        o[((size_t)b * H + h) * D + d] = *reinterpret_cast<bf16raw *>(&r);
    }
}

}  // namespace

// ---------------------------------------------------------------- host side

static void swa_step_launch(const char *fn, int B, int H, int D, int W, long long pos,
                            const long long *pos_dev, const void *q, const void *k,
                            const void *v, void *ring_k, void *ring_v, void *o, void *stream) {
    HY_REQUIRE(B >= 1 && H >= 1 && W >= 1 && pos >= 0,
               "%s: need B, H, W >= 1 and pos >= 0, got B=%d H=%d W=%d pos=%lld", fn, B, H, W,
               pos);
    HY_REQUIRE(D >= 1 && D <= STEP_MAXD, "%s: head_dim %d not in 1..%d", fn, D, STEP_MAXD);
    HY_REQUIRE(H <= 65535 && B <= 65535, "%s: B=%d or H=%d exceeds the grid limit", fn, B, H);
    HY_REQUIRE(q && k && v && ring_k && ring_v && o, "%s: a device pointer is NULL", fn);
    dim3 grid(H, B);
    swa_step_kernel<<<grid, STEP_WARPS * 32, 0, (cudaStream_t)stream>>>(
        H, D, W, pos, pos_dev, 1.0f / sqrtf((float)D), (const bf16raw *)q, (const bf16raw *)k,
        (const bf16raw *)v, (bf16raw *)ring_k, (bf16raw *)ring_v, (bf16raw *)o);
    SWA_LAUNCHED();
}

extern "C" void hy_cuda_swa_step(int B, int H, int D, int W, long long pos, const void *q,
                                 const void *k, const void *v, void *ring_k, void *ring_v,
                                 void *o, void *stream) {
    swa_step_launch("hy_cuda_swa_step", B, H, D, W, pos, NULL, q, k, v, ring_k, ring_v, o,
                    stream);
}

extern "C" void hy_cuda_swa_step_dev(int B, int H, int D, int W, const long long *pos_dev,
                                     const void *q, const void *k, const void *v, void *ring_k,
                                     void *ring_v, void *o, void *stream) {
    HY_REQUIRE(pos_dev, "hy_cuda_swa_step_dev: pos_dev is NULL");
    swa_step_launch("hy_cuda_swa_step_dev", B, H, D, W, 0, pos_dev, q, k, v, ring_k, ring_v, o,
                    stream);
}

static int dense_splits(int cap) { return (cap + DENSE_SPLIT - 1) / DENSE_SPLIT; }

extern "C" size_t hy_cuda_dense_step_work_bytes(int B, int H, int D, int cap) {
    size_t n = (size_t)B * H * (size_t)dense_splits(cap) * ((size_t)D + 2) * sizeof(float);
    return (n + 255) / 256 * 256;
}

static void dense_step_launch(const char *fn, int B, int H, int D, int cap, long long pos,
                              const long long *pos_dev, const void *q, const void *k,
                              const void *v, void *cache_k, void *cache_v, void *o, void *work,
                              void *stream) {
    HY_REQUIRE(B >= 1 && H >= 1 && cap >= 1, "%s: need B, H, cap >= 1, got B=%d H=%d cap=%d", fn,
               B, H, cap);
    HY_REQUIRE(pos_dev || (pos >= 0 && pos < cap), "%s: position %lld outside the cache (0..%d)",
               fn, pos, cap - 1);
    HY_REQUIRE(D >= 1 && D <= STEP_MAXD, "%s: head_dim %d not in 1..%d", fn, D, STEP_MAXD);
    HY_REQUIRE(H <= 65535 && B <= 65535, "%s: B=%d or H=%d exceeds the grid limit", fn, B, H);
    HY_REQUIRE(q && k && v && cache_k && cache_v && o && work, "%s: a device pointer is NULL", fn);
    cudaStream_t s = (cudaStream_t)stream;
    const int splits = dense_splits(cap);
    dense_step_split_kernel<<<dim3(splits, H, B), STEP_WARPS * 32, 0, s>>>(
        H, D, cap, pos, pos_dev, 1.0f / sqrtf((float)D), (const bf16raw *)q, (const bf16raw *)k,
        (const bf16raw *)v, (bf16raw *)cache_k, (bf16raw *)cache_v, (float *)work);
    SWA_LAUNCHED();
    dense_step_merge_kernel<<<dim3(H, B), 128, 0, s>>>(H, D, splits, pos, pos_dev,
                                                       (const float *)work, (bf16raw *)o);
    SWA_LAUNCHED();
}

extern "C" void hy_cuda_dense_step(int B, int H, int D, int cap, long long pos,
                                   const long long *pos_dev, const void *q, const void *k,
                                   const void *v, void *cache_k, void *cache_v, void *o,
                                   void *work, void *stream) {
    dense_step_launch("hy_cuda_dense_step", B, H, D, cap, pos, pos_dev, q, k, v, cache_k,
                      cache_v, o, work, stream);
}

extern "C" void hy_cuda_swa_decode(int B, int H, int D, int W, long long pos,
                                   const long long *pos_dev, float rope_base, const void *qkv,
                                   void *ring_k, void *ring_v, void *o, void *stream) {
    const char *fn = "hy_cuda_swa_decode";
    HY_REQUIRE(B >= 1 && H >= 1 && W >= 1 && pos >= 0,
               "%s: need B, H, W >= 1 and pos >= 0, got B=%d H=%d W=%d pos=%lld", fn, B, H, W,
               pos);
    HY_REQUIRE(D >= 2 && D <= STEP_MAXD && D % 2 == 0, "%s: head_dim %d must be even, 2..%d", fn,
               D, STEP_MAXD);
    HY_REQUIRE(H <= 65535 && B <= 65535, "%s: B=%d or H=%d exceeds the grid limit", fn, B, H);
    HY_REQUIRE(rope_base > 0 && isfinite(rope_base), "%s: rope base must be positive, not %g", fn,
               (double)rope_base);
    HY_REQUIRE(qkv && ring_k && ring_v && o, "%s: a device pointer is NULL", fn);
    rope_tab fr;
    for (int i = 0; i < STEP_MAXHALF; i++)
        fr.f[i] = i < D / 2 ? 1.0f / powf(rope_base, (float)(2 * i) / (float)D) : 0.0f;
    HY_REQUIRE(W <= SWA_DECODE_MAXW, "%s: window %d exceeds %d (its scores sit in shared memory)",
               fn, W, SWA_DECODE_MAXW);
    // The window staged in shared memory when it fits beside the static
    // part (~34 KiB): W = 512 at D = 64 takes 146 KiB. HYDRA_SWA_STAGE=0
    // reads it from the ring instead (for A/B timing and tests).
    const size_t sc_bytes = (size_t)((W + 3) & ~3) * sizeof(float);
    const size_t staged = sc_bytes + 2 * (size_t)W * (D + 8) * sizeof(bf16raw);
    const char *e = getenv("HYDRA_SWA_STAGE");
    const bool stage = D % 8 == 0 && staged <= 180 * 1024 && !(e && e[0] == '0');
    const size_t smem = stage ? staged : (size_t)W * sizeof(float);
    auto kernel = stage ? swa_decode_kernel<true> : swa_decode_kernel<false>;
    if (smem > 8 * 1024)  // above the static part's headroom under the default 48 KiB
        CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        (int)smem));
    dim3 grid(H, B);
    // Unstaged, the driver's carveout: the window's keys and values are read
    // through L1 (the largest shared carveout slowed that kernel by ~1 us a
    // token and the step's graph by ~5 us on an H200).
    launch_pdl_as(stage, kernel, grid, dim3(DECODE_THREADS), smem, (cudaStream_t)stream, H, D, W,
                  pos, pos_dev, 1.0f / sqrtf((float)D), fr, (const bf16raw *)qkv,
                  (bf16raw *)ring_k, (bf16raw *)ring_v, (bf16raw *)o);
}
