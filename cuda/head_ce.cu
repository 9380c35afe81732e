// head_ce.cu: the tied LM head fused with the mean cross-entropy, forward
// and backward, chunk by chunk over the rows.
//
// Per chunk of c rows (c from the scratch the caller gives):
//   1. logits (c, V) fp32 = h[chunk] (c, d) bf16 . E^T            (GEMM)
//   2. one block per row: online max / sum of exp over the row (fp32),
//      lse = max + log(sum), row loss = lse - logit[target]; then, for
//      backward, dlogits = (exp(logit - lse) - onehot) / n_valid, rounded to
//      bf16 IN PLACE: row r's bf16 values occupy the first half of row r's
//      own fp32 bytes (so the bf16 matrix has leading dimension 2V). For
//      V % 4 == 0 up to 32768 the row sits in registers and is read once
//      (k_ce_rows_reg); otherwise it is read twice (k_ce_rows);
//   3. dh[chunk] (c, d) += dlogits . E;  dE (V, d) += dlogits^T . h[chunk]
//      (GEMMs, bf16 operands, fp32 accumulation into fp32 gradients).
// n_valid is counted on the device before the first chunk, and the loss is
// summed over rows in double with a fixed order at the end: the result is
// deterministic and nothing waits for the host.
#include <math.h>
#include <stdint.h>

#include "check.cuh"
#include "hy_cuda_blas.h"

#define LAUNCH_CHECK() CUDA_CHECK(cudaGetLastError())

// Bit for bit hy_f32_to_bf16() (autograd/tensor.c); a copy of blas.cu's, as
// the .cu files share no device header.
static __device__ __forceinline__ uint16_t f32_to_bf16(float x) {
    uint32_t u = __float_as_uint(x);
    if (x != x) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static size_t align256(size_t b) { return (b + 255) / 256 * 256; }

// Scratch layout: [header 256 B][row losses (rows) f32][chunk logits (c, V) f32].
typedef struct {
    int count;    // rows whose target is not ignore_index
    float scale;  // 1 / count (0 when count == 0), the gradient's scale
} ce_header;

static const size_t HEADER_BYTES = 256;

static size_t fixed_bytes(int rows) { return HEADER_BYTES + align256((size_t)rows * sizeof(float)); }

extern "C" size_t hy_cuda_head_ce_scratch_bytes(int rows, int V, int chunk_rows) {
    int c = (chunk_rows <= 0 || chunk_rows > rows) ? rows : chunk_rows;
    return fixed_bytes(rows) + align256((size_t)c * V * sizeof(float));
}

extern "C" int hy_cuda_head_ce_chunk_rows(int rows, int V, size_t scratch_bytes) {
    if (rows <= 0 || V <= 0 || scratch_bytes < fixed_bytes(rows)) return 0;
    size_t avail = scratch_bytes - fixed_bytes(rows), row = (size_t)V * sizeof(float);
    size_t c = avail / row;
    while (c > 0 && align256(c * row) > avail) c--;
    return (int)(c > (size_t)rows ? (size_t)rows : c);
}

// ---------------------------------------------------------------- kernels
// One block of 1024 threads: the number of counted targets and 1 / count.
__global__ void k_ce_count(const int32_t *__restrict__ tg, int rows, int ignore,
                           ce_header *hdr) {
    __shared__ int sh[1024];
    int n = 0;
    for (int r = threadIdx.x; r < rows; r += blockDim.x) n += tg[r] != ignore;
    sh[threadIdx.x] = n;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) sh[threadIdx.x] += sh[threadIdx.x + s];
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        hdr->count = sh[0];
        hdr->scale = sh[0] ? 1.0f / (float)sh[0] : 0.0f;  // as cross_entropy.c: g / (float)count
    }
}

// Merge two (max, sum of exp(x - max)) pairs.
static __device__ __forceinline__ void lse_merge(float &m, float &s, float m2, float s2) {
    float M = fmaxf(m, m2);
    if (M == -INFINITY) return;  // both empty
    s = (m == -INFINITY ? 0.0f : s * expf(m - M)) + (m2 == -INFINITY ? 0.0f : s2 * expf(m2 - M));
    m = M;
}

#define CE_THREADS 512

// One block per row of the chunk. logits (c, V) f32; with write_grad the
// row's dlogits go to bf16 at (uint16_t *)(logits + r V), i.e. ld 2V.
__global__ void __launch_bounds__(CE_THREADS)
    k_ce_rows(float *__restrict__ logits, int V, const int32_t *__restrict__ tg, int ignore,
              float *__restrict__ rowloss, const ce_header *__restrict__ hdr, int write_grad) {
    __shared__ float sh_m[CE_THREADS / 32], sh_s[CE_THREADS / 32];
    __shared__ float sh_lse, sh_xt;
    int r = blockIdx.x, tid = threadIdx.x;
    float *x = logits + (size_t)r * V;
    uint16_t *g = (uint16_t *)x;
    int t = tg[r];
    if (t == ignore) {  // no loss, zero gradient row (no reads of x here)
        if (tid == 0) rowloss[r] = 0.0f;
        if (write_grad)
            for (int j = tid; j < V; j += blockDim.x) g[j] = 0;
        return;
    }
    int valid = t >= 0 && t < V;
    // Read logit[target] before anything in the row is overwritten.
    if (tid == 0) sh_xt = valid ? x[t] : NAN;
    float m = -INFINITY, s = 0.0f;
    for (int j = tid; j < V; j += blockDim.x) {
        float v = x[j];
        if (v > m) {
            s = (m == -INFINITY ? 0.0f : s * expf(m - v)) + 1.0f;
            m = v;
        } else {
            s += expf(v - m);
        }
    }
    for (int o = 16; o > 0; o >>= 1) {
        float m2 = __shfl_xor_sync(0xffffffffu, m, o), s2 = __shfl_xor_sync(0xffffffffu, s, o);
        lse_merge(m, s, m2, s2);
    }
    if ((tid & 31) == 0) sh_m[tid >> 5] = m, sh_s[tid >> 5] = s;
    __syncthreads();
    if (tid == 0) {
        float M = sh_m[0], S = sh_s[0];
        for (int w = 1; w < (int)(blockDim.x >> 5); w++) lse_merge(M, S, sh_m[w], sh_s[w]);
        float lse = M + logf(S);
        sh_lse = lse;
        rowloss[r] = valid ? lse - sh_xt : NAN;  // a bad target poisons the loss
    }
    __syncthreads();
    if (!write_grad) return;
    float lse = sh_lse, scale = hdr->scale;
    // In place: bf16 index j lands on fp32 index j / 2 <= j. Each tile is
    // read completely before any thread writes it, and a tile's writes reach
    // only fp32 indices below its end, all read already.
    for (int base = 0; base < V; base += blockDim.x) {
        int j = base + tid;
        float v = j < V ? x[j] : 0.0f;
        __syncthreads();
        if (j < V) {
            float p = expf(v - lse);
            if (j == t) p -= 1.0f;
            g[j] = f32_to_bf16(p * scale);
        }
    }
}

// The common case in one read: V % 4 == 0 and V <= 4 * CE_REG_THREADS * NV.
// One block of 1024 threads per row holds the row's fp32 logits in
// registers (NV float4 a thread, 16-byte loads issued together), takes the
// max and then the sum of exp(x - max) from them, and writes the bf16
// dlogits in place from the same registers: the logits are read once, where
// k_ce_rows reads them twice (the second time mostly from DRAM, as a wave's
// rows, 128 KB each at V 32000, do not stay in L2). One row at a time an SM
// (the registers of two rows would not fit), so the row's loads all go out
// before its first reduction.
#define CE_REG_THREADS 1024

static __device__ __forceinline__ float block_reduce(float v, float *sh, bool is_max) {
    for (int o = 16; o > 0; o >>= 1) {
        float u = __shfl_xor_sync(0xffffffffu, v, o);
        v = is_max ? fmaxf(v, u) : v + u;
    }
    int tid = threadIdx.x;
    __syncthreads();  // sh may still be read from the previous reduction
    if ((tid & 31) == 0) sh[tid >> 5] = v;
    __syncthreads();
    v = sh[0];  // every thread folds the 32 warp results in the same order
    for (int w = 1; w < CE_REG_THREADS / 32; w++) v = is_max ? fmaxf(v, sh[w]) : v + sh[w];
    return v;
}

template <int NV>
__global__ void __launch_bounds__(CE_REG_THREADS, 1)
    k_ce_rows_reg(float *__restrict__ logits, int V, const int32_t *__restrict__ tg, int ignore,
                  float *__restrict__ rowloss, const ce_header *__restrict__ hdr,
                  int write_grad) {
    __shared__ float sh[CE_REG_THREADS / 32];
    int r = blockIdx.x, tid = threadIdx.x, V4 = V >> 2;
    float *x = logits + (size_t)r * V;
    const float4 *x4 = (const float4 *)x;
    uint2 *g4 = (uint2 *)x;  // bf16 dlogits, four to a uint2, in the row's first half
    int t = tg[r];
    if (t == ignore) {  // no loss, zero gradient row (no reads of x here)
        if (tid == 0) rowloss[r] = 0.0f;
        if (write_grad)
            for (int j = tid; j < V4; j += CE_REG_THREADS) g4[j] = make_uint2(0u, 0u);
        return;
    }
    int valid = t >= 0 && t < V;
    float xt = valid && tid == 0 ? x[t] : 0.0f;
    float4 v[NV];
#pragma unroll
    for (int i = 0; i < NV; i++) {
        int j = tid + i * CE_REG_THREADS;
        v[i] = j < V4 ? x4[j] : make_float4(-INFINITY, -INFINITY, -INFINITY, -INFINITY);
    }
    float m = -INFINITY;
#pragma unroll
    for (int i = 0; i < NV; i++) m = fmaxf(m, fmaxf(fmaxf(v[i].x, v[i].y), fmaxf(v[i].z, v[i].w)));
    m = block_reduce(m, sh, true);
    // v becomes exp(x - max) (kept for the gradient: one exponential an element, not two;
    // with two, the exponentials were most of the kernel's time, measured on an H200).
    float s = 0.0f;
#pragma unroll
    for (int i = 0; i < NV; i++) {
        v[i] = make_float4(expf(v[i].x - m), expf(v[i].y - m), expf(v[i].z - m),
                           expf(v[i].w - m));
        s += (v[i].x + v[i].y) + (v[i].z + v[i].w);
    }
    s = block_reduce(s, sh, false);
    float lse = m + logf(s);
    if (tid == 0) rowloss[r] = valid ? lse - xt : NAN;  // a bad target poisons the loss
    if (!write_grad) return;
    // Every read of the row happened before block_reduce's barriers: the
    // in-place writes cannot overtake one. softmax = exp(x - max) / sum.
    float scale = hdr->scale, inv = 1.0f / s;
#pragma unroll
    for (int i = 0; i < NV; i++) {
        int j = tid + i * CE_REG_THREADS;
        if (j >= V4) break;
        float p[4] = {v[i].x * inv, v[i].y * inv, v[i].z * inv, v[i].w * inv};
        if ((t >> 2) == j) p[t & 3] -= 1.0f;
        uint2 o;
        o.x = (uint32_t)f32_to_bf16(p[0] * scale) | ((uint32_t)f32_to_bf16(p[1] * scale) << 16);
        o.y = (uint32_t)f32_to_bf16(p[2] * scale) | ((uint32_t)f32_to_bf16(p[3] * scale) << 16);
        g4[j] = o;
    }
}

// float4 a thread k_ce_rows_reg needs for V (0: it does not take V).
static int ce_reg_nv(int V) {
    if (V % 4 != 0) return 0;
    int nv = (V / 4 + CE_REG_THREADS - 1) / CE_REG_THREADS;
    return nv <= 1 ? 1 : nv <= 2 ? 2 : nv <= 4 ? 4 : nv <= 8 ? 8 : 0;
}

static void launch_ce_rows(int c, float *logits, int V, const int32_t *tg, int ignore,
                           float *rowloss, const ce_header *hdr, int write_grad,
                           cudaStream_t s) {
    switch (ce_reg_nv(V)) {
#define CE_REG_CASE(NV)                                                                      \
    case NV:                                                                                 \
        k_ce_rows_reg<NV><<<c, CE_REG_THREADS, 0, s>>>(logits, V, tg, ignore, rowloss, hdr, \
                                                       write_grad);                          \
        break;
        CE_REG_CASE(1)
        CE_REG_CASE(2)
        CE_REG_CASE(4)
        CE_REG_CASE(8)
#undef CE_REG_CASE
    default:
        k_ce_rows<<<c, CE_THREADS, 0, s>>>(logits, V, tg, ignore, rowloss, hdr, write_grad);
    }
    LAUNCH_CHECK();
}

// One block of 1024 threads: loss = sum of row losses (double, fixed order) / count.
__global__ void k_ce_loss(const float *__restrict__ rowloss, int rows,
                          const ce_header *__restrict__ hdr, float *loss, int32_t *count) {
    __shared__ double sh[1024];
    double s = 0.0;
    for (int r = threadIdx.x; r < rows; r += blockDim.x) s += (double)rowloss[r];
    sh[threadIdx.x] = s;
    __syncthreads();
    for (int k = blockDim.x / 2; k > 0; k >>= 1) {
        if (threadIdx.x < k) sh[threadIdx.x] += sh[threadIdx.x + k];
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        int n = hdr->count;
        loss[0] = n ? (float)(sh[0] / n) : 0.0f;
        if (count) count[0] = n;
    }
}

// ---------------------------------------------------------------- entry point
extern "C" void hy_cuda_head_ce(int rows, int d, int V, const void *h, const void *E,
                                const int32_t *targets, int ignore_index, float *loss_dev,
                                int32_t *count_dev, float *dh, float *dE, void *scratch,
                                size_t scratch_bytes, void *stream) {
    HY_REQUIRE(rows >= 0 && d > 0 && V > 0, "head_ce: bad sizes rows %d d %d V %d", rows, d, V);
    HY_REQUIRE(loss_dev != NULL, "head_ce: loss_dev is NULL");
    cudaStream_t s = (cudaStream_t)stream;
    if (rows == 0) {
        CUDA_CHECK(cudaMemsetAsync(loss_dev, 0, sizeof(float), s));
        if (count_dev) CUDA_CHECK(cudaMemsetAsync(count_dev, 0, sizeof(int32_t), s));
        return;
    }
    int chunk = hy_cuda_head_ce_chunk_rows(rows, V, scratch_bytes);
    HY_REQUIRE(scratch && chunk >= 1,
               "head_ce: scratch of %zu bytes cannot hold one row of logits (rows %d V %d): "
               "hy_cuda_head_ce_scratch_bytes(rows, V, 1) = %zu, all rows at once = %zu",
               scratch_bytes, rows, V, hy_cuda_head_ce_scratch_bytes(rows, V, 1),
               hy_cuda_head_ce_scratch_bytes(rows, V, rows));
    ce_header *hdr = (ce_header *)scratch;
    float *rowloss = (float *)((char *)scratch + HEADER_BYTES);
    float *logits = (float *)((char *)scratch + fixed_bytes(rows));
    const uint16_t *hb = (const uint16_t *)h;
    int write_grad = dh != NULL || dE != NULL;

    k_ce_count<<<1, 1024, 0, s>>>(targets, rows, ignore_index, hdr);
    LAUNCH_CHECK();
    for (int r0 = 0; r0 < rows; r0 += chunk) {
        int c = rows - r0 < chunk ? rows - r0 : chunk;
        const uint16_t *hc = hb + (size_t)r0 * d;
        // logits (c, V) = h[chunk] (c, d) . E^T, E stored (V, d)
        hy_cuda_gemm(0, 1, c, V, d, 1.0f, hc, d, E, d, 0.0f, logits, 1, V, stream);
        launch_ce_rows(c, logits, V, targets + r0, ignore_index, rowloss + r0, hdr, write_grad, s);
        if (!write_grad) continue;
        const void *dlog = logits;  // (c, V) bf16 with leading dimension 2V
        // dh[chunk] (c, d) += dlogits (c, V) . E (V, d)
        if (dh)
            hy_cuda_gemm(0, 0, c, d, V, 1.0f, dlog, 2 * V, E, d, 1.0f, dh + (size_t)r0 * d, 1, d,
                         stream);
        // dE (V, d) += dlogits^T (V, c) . h[chunk] (c, d)
        if (dE) hy_cuda_gemm(1, 0, V, d, c, 1.0f, dlog, 2 * V, hc, d, 1.0f, dE, 1, d, stream);
    }
    k_ce_loss<<<1, 1024, 0, s>>>(rowloss, rows, hdr, loss_dev, count_dev);
    LAUNCH_CHECK();
}
