// optim.cu: AdamW, Muon (Newton-Schulz on bf16 GEMMs), the global gradient
// norm and clipping, over ranges of the flat fp32 parameter buffers.
//
// Elementwise arithmetic uses explicit round-to-nearest intrinsics
// (__fmul_rn, __fadd_rn, __fdiv_rn, __fsqrt_rn): the compiler may not fuse
// them into FMAs, so each operation rounds exactly as the CPU reference's
// (x86-64 builds of optim.c and muon.c have no FMA), and AdamW on the GPU
// matches hy_optim_step() bit for bit.
//
// Work over many parameters is one launch: at plan time each range is cut
// into tiles of TILE elements, and block b handles tile b (range, start).
// Reductions (the gradient norm, Muon's Frobenius norm) are two-pass with a
// fixed order (per-block partials in double, then one block), so they give
// the same bits on every run.
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.cuh"
#include "graph.cuh"
#include "hy_cuda_blas.h"

#define LAUNCH_CHECK() CUDA_CHECK(cudaGetLastError())

static const size_t TILE = 8192;  // elements per block
static const int THREADS = 256;

static size_t align256(size_t b) { return (b + 255) / 256 * 256; }

// Bit for bit hy_f32_to_bf16() (autograd/tensor.c); a copy of blas.cu's.
static __device__ __forceinline__ uint16_t f32_to_bf16(float x) {
    uint32_t u = __float_as_uint(x);
    if (x != x) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

// ---------------------------------------------------------------- ranges
static size_t range_numel(const hy_param *p) {
    size_t n = 1;
    for (int d = 0; d < p->ndim; d++) n *= (size_t)p->shape[d];
    return n;
}

extern "C" int hy_cuda_optim_ranges(const hy_optim_config *c, const hy_param_table *t,
                                    hy_cuda_param_range *out, size_t *v_numel) {
    size_t voff = 0;
    for (int i = 0; i < t->n; i++) {
        const hy_param *p = &t->p[i];
        size_t numel = range_numel(p);
        int muon = c->kind == HY_OPTIM_MUON_HYBRID && p->group == HY_GROUP_MUON;
        HY_REQUIRE(!muon || p->ndim >= 2,
                   "optim: parameter '%s' has %d dimension(s) but is in the Muon group; Muon "
                   "takes matrices only, route vectors to AdamW",
                   p->name, p->ndim);
        hy_cuda_param_range *r = &out[i];
        memset(r, 0, sizeof *r);
        r->offset = p->offset;
        r->m_offset = p->offset;
        r->rows = p->ndim >= 1 ? p->shape[0] : 1;  // muon.c's view: (shape[0], numel / shape[0])
        r->cols = r->rows > 0 ? (int64_t)(numel / (size_t)r->rows) : 0;
        r->wd_mult = p->weight_decay;
        r->muon = muon;
        r->v_offset = muon ? 0 : voff;
        if (!muon) voff += (numel + 15) / 16 * 16;  // optim.c's v_run: 64-byte runs
    }
    if (v_numel) *v_numel = voff;
    return t->n;
}

// ---------------------------------------------------------------- plan
typedef struct {
    size_t offset, m_offset, v_offset, numel;
    float wd_mult;
} dev_range;

typedef struct {
    int range;
    size_t start;  // first element within the range
} dev_tile;

// One matrix of a Muon batch: where it lives in the flat buffers and its
// weight-decay multiplier (the only per-matrix datum besides the offset).
typedef struct {
    size_t offset, m_offset;  // in values and grads; in m (the momentum buffer)
    float wd_mult;
} dev_muon_mat;

// Muon matrices of one shape, run as one batch (see the Muon section).
typedef struct {
    int rows, cols;  // the shared shape (Muon's view)
    int count;       // matrices in the batch
    int first;       // its first entry in the plan's muon_mats
    size_t sx, sa;   // per-matrix strides (elements) of X, Xc and of A, Ac
} muon_batch;

// What a recorded Muon step depends on besides the lr (which it reads from
// device memory): the buffers, the stream and the configuration.
typedef struct {
    const void *values, *grads, *m, *scratch, *stream, *half, *clip_norm;
    int fp32, nesterov, ns_steps;
    float momentum, wd, clip_max;
} muon_graph_key;

struct hy_cuda_optim_plan {
    int n;
    hy_cuda_param_range *host;  // (n)
    dev_range *ranges;          // (n) device
    dev_tile *adamw_tiles;      // device, AdamW ranges only
    dev_tile *all_tiles;        // device, every range (gradient norm)
    int n_adamw_tiles, n_all_tiles;
    muon_batch *batches;        // host, n_batches
    int n_batches;
    dev_muon_mat *muon_mats;    // device, the Muon matrices batch by batch
    size_t muon_scratch;        // largest batch's Newton-Schulz buffers
    int ns_fp32;                // Newton-Schulz on fp32 GEMMs (exact mode)
    uint16_t *half;             // the values' bf16 copies, written with them; NULL: not written
    const float *clip_norm;     // device: the gradients' norm, by which the next step clips
    float clip_max;             // as it reads them (hy_cuda_optim_plan_set_clip); <= 0: off
    float *lr_dev;              // device: this step's Muon lr (read by the recorded step)
    cudaGraphExec_t graph;      // the recorded Muon step, NULL until the first one
    muon_graph_key key;         // what it was recorded with
};

// Muon's blocks for a matrix of N elements (a function of N only, so the
// reduction order never changes, whatever the batch).
static int muon_blocks(size_t N) {
    size_t b = (N + (size_t)THREADS * 8 - 1) / ((size_t)THREADS * 8);
    return (int)(b < 1 ? 1 : (b > 1024 ? 1024 : b));
}

// Per-matrix stride of the batched buffers: a multiple of 128 elements, so
// every matrix starts 256-byte aligned in fp32 and in bf16.
static size_t batch_stride(size_t elems) { return (elems + 127) / 128 * 128; }

// A group of one shape is cut into batches whose X holds at most this many
// bytes (at least one matrix), so the scratch stays bounded on large
// models; the 115M model's groups all fit in one batch each.
static const size_t MUON_BATCH_X_BYTES = (size_t)256 << 20;

// Newton-Schulz buffers of a batch of B matrices (rows, cols), n = min,
// m = max, in this order: X f32 (B sx), its GEMM operand copy Xc (B sx),
// A f32 (B sa), its copy Ac (B sa) (the bf16 mode keeps X, A and B in
// bf16 in these spaces), with sx = n m and sa = n n rounded up
// to 128 elements; then the norm partials (B muon_blocks(n m) doubles) and
// the denominators (B floats). The copies are bf16, or fp32 in exact mode:
// sized for fp32 (exact mode may be switched on after the scratch exists).
// For the 115M model (12 layers, d 768, 9 GDN layers) the batches are
// qkv (2304, 768) x12: 2 x 81 + 2 x 27 = 216 MiB; o and gate (768, 768)
// x21: 4 x 47.25 = 189 MiB; w_fused (4096, 768) x12: 2 x 144 + 2 x 27 =
// 342 MiB; w_down (768, 2048) x12: 2 x 72 + 2 x 27 = 198 MiB; the scratch
// is the largest, ~342 MiB (one matrix at a time needed ~28.5 MiB).
static size_t ns_batch_bytes(const muon_batch *b) {
    size_t B = (size_t)b->count, N = (size_t)b->rows * (size_t)b->cols;
    return 2 * align256(B * b->sx * 4) + 2 * align256(B * b->sa * 4) +
           align256(B * (size_t)muon_blocks(N) * sizeof(double)) + align256(B * sizeof(float));
}

// Groups the Muon ranges by (rows, cols), groups in order of first
// appearance and matrices in table order within a group, cuts each group
// into batches (MUON_BATCH_X_BYTES), uploads the matrix table and sizes
// the scratch.
static void plan_muon_batches(hy_cuda_optim_plan *p, const hy_cuda_param_range *r, int n) {
    int *gid = (int *)hy_xmalloc((size_t)(n ? n : 1) * sizeof(int));
    int64_t *gshape = (int64_t *)hy_xmalloc((size_t)(n ? n : 1) * 2 * sizeof(int64_t));
    int *gcount = (int *)hy_xcalloc((size_t)(n ? n : 1), sizeof(int));
    int ng = 0, nm = 0;
    for (int i = 0; i < n; i++) {
        gid[i] = -1;
        if (!r[i].muon || r[i].rows * r[i].cols == 0) continue;
        int g = 0;
        while (g < ng && !(gshape[2 * g] == r[i].rows && gshape[2 * g + 1] == r[i].cols)) g++;
        if (g == ng) gshape[2 * g] = r[i].rows, gshape[2 * g + 1] = r[i].cols, ng++;
        gid[i] = g;
        gcount[g]++;
        nm++;
    }
    // At most one batch per matrix.
    p->batches = (muon_batch *)hy_xmalloc((size_t)(nm ? nm : 1) * sizeof(muon_batch));
    dev_muon_mat *h = (dev_muon_mat *)hy_xmalloc((size_t)(nm ? nm : 1) * sizeof(dev_muon_mat));
    int k = 0;  // matrices placed
    for (int g = 0; g < ng; g++) {
        int rows = (int)gshape[2 * g], cols = (int)gshape[2 * g + 1];
        size_t nn = (size_t)(rows < cols ? rows : cols);
        size_t sx = batch_stride((size_t)rows * (size_t)cols), sa = batch_stride(nn * nn);
        size_t cap = MUON_BATCH_X_BYTES / (sx * 4);
        if (cap < 1) cap = 1;
        if (cap > 65535) cap = 65535;  // the batch is gridDim.y
        // Near-equal batches: ceil(count / cap) of them.
        int nbat = (int)(((size_t)gcount[g] + cap - 1) / cap);
        int per = (gcount[g] + nbat - 1) / nbat;
        int i = 0;  // next range to look at
        for (int b = 0; b < nbat; b++) {
            muon_batch *mb = &p->batches[p->n_batches++];
            mb->rows = rows, mb->cols = cols, mb->first = k, mb->count = 0;
            mb->sx = sx, mb->sa = sa;
            for (; i < n && mb->count < per; i++) {
                if (gid[i] != g) continue;
                h[k].offset = r[i].offset;
                h[k].m_offset = r[i].m_offset;
                h[k].wd_mult = r[i].wd_mult;
                k++, mb->count++;
            }
            size_t bytes = ns_batch_bytes(mb);
            if (bytes > p->muon_scratch) p->muon_scratch = bytes;
        }
    }
    HY_CHECK(k == nm, "optim plan: placed %d of %d Muon matrices in batches", k, nm);
    if (nm) {
        CUDA_CHECK(cudaMalloc(&p->muon_mats, (size_t)nm * sizeof(dev_muon_mat)));
        CUDA_CHECK(cudaMemcpy(p->muon_mats, h, (size_t)nm * sizeof(dev_muon_mat),
                              cudaMemcpyHostToDevice));
    }
    free(h);
    free(gid);
    free(gshape);
    free(gcount);
}

static dev_tile *upload_tiles(const hy_cuda_param_range *r, int n, int adamw_only, int *count) {
    size_t total = 0;
    for (int i = 0; i < n; i++)
        if (!adamw_only || !r[i].muon) total += ((size_t)(r[i].rows * r[i].cols) + TILE - 1) / TILE;
    HY_CHECK(total < (size_t)INT32_MAX, "optim plan: %zu tiles", total);
    *count = (int)total;
    if (total == 0) return NULL;
    dev_tile *h = (dev_tile *)hy_xmalloc(total * sizeof(dev_tile)), *d = NULL;
    size_t k = 0;
    for (int i = 0; i < n; i++) {
        if (adamw_only && r[i].muon) continue;
        size_t numel = (size_t)(r[i].rows * r[i].cols);
        for (size_t s = 0; s < numel; s += TILE) h[k].range = i, h[k].start = s, k++;
    }
    CUDA_CHECK(cudaMalloc(&d, total * sizeof(dev_tile)));
    CUDA_CHECK(cudaMemcpy(d, h, total * sizeof(dev_tile), cudaMemcpyHostToDevice));
    free(h);
    return d;
}

extern "C" hy_cuda_optim_plan *hy_cuda_optim_plan_create(const hy_cuda_param_range *r, int n) {
    HY_REQUIRE(n >= 0 && (n == 0 || r), "optim plan: %d ranges", n);
    hy_cuda_optim_plan *p = (hy_cuda_optim_plan *)hy_xcalloc(1, sizeof *p);
    p->n = n;
    p->host = (hy_cuda_param_range *)hy_xmalloc((size_t)(n ? n : 1) * sizeof *p->host);
    if (n) memcpy(p->host, r, (size_t)n * sizeof *r);
    dev_range *h = (dev_range *)hy_xmalloc((size_t)(n ? n : 1) * sizeof(dev_range));
    for (int i = 0; i < n; i++) {
        HY_REQUIRE(r[i].rows >= 0 && r[i].cols >= 0, "optim plan: range %d is (%lld, %lld)", i,
                   (long long)r[i].rows, (long long)r[i].cols);
        h[i].offset = r[i].offset;
        h[i].m_offset = r[i].m_offset;
        h[i].v_offset = r[i].v_offset;
        h[i].numel = (size_t)(r[i].rows * r[i].cols);
        h[i].wd_mult = r[i].wd_mult;
        if (r[i].muon && h[i].numel) {
            HY_REQUIRE(r[i].rows <= INT32_MAX && r[i].cols <= INT32_MAX,
                       "optim plan: Muon range %d (%lld, %lld) too large for one GEMM", i,
                       (long long)r[i].rows, (long long)r[i].cols);
        }
    }
    plan_muon_batches(p, r, n);
    if (p->n_batches) CUDA_CHECK(cudaMalloc(&p->lr_dev, sizeof(float)));
    CUDA_CHECK(cudaMalloc(&p->ranges, (size_t)(n ? n : 1) * sizeof(dev_range)));
    if (n) CUDA_CHECK(cudaMemcpy(p->ranges, h, (size_t)n * sizeof(dev_range), cudaMemcpyHostToDevice));
    free(h);
    p->adamw_tiles = upload_tiles(r, n, 1, &p->n_adamw_tiles);
    p->all_tiles = upload_tiles(r, n, 0, &p->n_all_tiles);
    return p;
}

extern "C" void hy_cuda_optim_plan_set_ns_fp32(hy_cuda_optim_plan *p, int on) {
    p->ns_fp32 = on != 0;
}

extern "C" void hy_cuda_optim_plan_set_half(hy_cuda_optim_plan *p, void *half) {
    p->half = (uint16_t *)half;
}

extern "C" void hy_cuda_optim_plan_set_clip(hy_cuda_optim_plan *p, float max_norm,
                                            const float *norm_dev) {
    p->clip_max = norm_dev && max_norm > 0 ? max_norm : 0.0f;
    p->clip_norm = p->clip_max > 0 ? norm_dev : NULL;
}

extern "C" void hy_cuda_optim_plan_destroy(hy_cuda_optim_plan *p) {
    if (!p) return;
    CUDA_CHECK(cudaFree(p->ranges));
    if (p->adamw_tiles) CUDA_CHECK(cudaFree(p->adamw_tiles));
    if (p->all_tiles) CUDA_CHECK(cudaFree(p->all_tiles));
    if (p->muon_mats) CUDA_CHECK(cudaFree(p->muon_mats));
    if (p->lr_dev) CUDA_CHECK(cudaFree(p->lr_dev));
    if (p->graph) CUDA_CHECK(cudaGraphExecDestroy(p->graph));
    free(p->batches);
    free(p->host);
    free(p);
}

static size_t norm_bytes(const hy_cuda_optim_plan *p) {
    return align256((size_t)(p->n_all_tiles ? p->n_all_tiles : 1) * sizeof(double));
}

extern "C" size_t hy_cuda_optim_scratch_bytes(const hy_cuda_optim_plan *p) {
    size_t a = norm_bytes(p);
    return a > p->muon_scratch ? a : p->muon_scratch;
}

static void need_scratch(const char *what, const void *scratch, size_t have, size_t need) {
    HY_REQUIRE(need == 0 || (scratch && have >= need),
               "%s: scratch of %zu bytes is too small: hy_cuda_optim_scratch_bytes() = %zu", what,
               have, need);
}

// ---------------------------------------------------------------- block reductions
// Sum over the block (blockDim.x a power of two <= 1024) in a fixed tree
// order; the result is valid in thread 0.
static __device__ double block_sum(double v) {
    __shared__ double sh[1024];
    sh[threadIdx.x] = v;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) sh[threadIdx.x] += sh[threadIdx.x + s];
        __syncthreads();
    }
    double r = sh[0];
    __syncthreads();  // sh may be reused by a later call
    return r;
}

// ---------------------------------------------------------------- clipping
// clip.c's rule, decided on the device from the norm: 1 when the gradients
// stay as they are (no limit, a norm within it or not finite), else the
// factor (float)(max_norm / norm) that k_clip_tiles multiplies them by.
static __device__ float clip_factor(float max_norm, const float *norm_dev) {
    if (!norm_dev || !(max_norm > 0)) return 1.0f;
    const float norm = norm_dev[0];
    if (!isfinite(norm) || norm <= max_norm) return 1.0f;
    return (float)((double)max_norm / (double)norm);
}

// A gradient as the clipped buffer would hold it (k_clip_tiles' product).
static __device__ __forceinline__ float clipped(float g, float factor, bool clip) {
    return clip ? __fmul_rn(g, factor) : g;
}

// ---------------------------------------------------------------- AdamW
// optim.c's adamw_update, operation for operation:
//   p *= decay; m = b1 m + a1 g; v = b2 v + (a2 g) g;
//   denom = sqrt(v) / bc2_sqrt + eps; p -= step_size * (m / denom)
// half (not NULL): the new value's bf16 copy at the same offset. g clipped
// by clip_factor(clip_max, clip_norm) as it is read.
__global__ void k_adamw(const dev_tile *__restrict__ tiles, const dev_range *__restrict__ ranges,
                        float *__restrict__ values, const float *__restrict__ grads,
                        float *__restrict__ m, float *__restrict__ v, uint16_t *__restrict__ half,
                        float lr, float wd, float b1, float b2, float eps, float step_size,
                        float bc2_sqrt, float clip_max, const float *__restrict__ clip_norm) {
    const float cf = clip_factor(clip_max, clip_norm);
    const bool clip = cf != 1.0f;
    dev_tile t = tiles[blockIdx.x];
    dev_range r = ranges[t.range];
    float decay = __fsub_rn(1.0f, __fmul_rn(lr, __fmul_rn(wd, r.wd_mult)));
    float a1 = __fsub_rn(1.0f, b1), a2 = __fsub_rn(1.0f, b2);
    size_t end = t.start + TILE < r.numel ? t.start + TILE : r.numel;
    float *p = values + r.offset, *mm = m + r.m_offset, *vv = v + r.v_offset;
    const float *g = grads + r.offset;
    for (size_t j = t.start + threadIdx.x; j < end; j += blockDim.x) {
        float gj = clipped(g[j], cf, clip);
        float pj = __fmul_rn(p[j], decay);
        float mj = __fadd_rn(__fmul_rn(b1, mm[j]), __fmul_rn(a1, gj));
        float vj = __fadd_rn(__fmul_rn(b2, vv[j]), __fmul_rn(__fmul_rn(a2, gj), gj));
        float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vj), bc2_sqrt), eps);
        pj = __fsub_rn(pj, __fmul_rn(step_size, __fdiv_rn(mj, denom)));
        p[j] = pj;
        if (half) half[r.offset + j] = f32_to_bf16(pj);
        mm[j] = mj;
        vv[j] = vj;
    }
}

extern "C" void hy_cuda_adamw_step(const hy_cuda_optim_plan *p, const hy_optim_config *c,
                                   int64_t t, float lr_mult, float *values, const float *grads,
                                   float *m, float *v, void *stream) {
    HY_REQUIRE(t >= 1, "adamw_step: step %lld (the 1-based step being taken)", (long long)t);
    if (p->n_adamw_tiles == 0) return;
    // optim.c's adamw_at(): the same double expressions, rounded to float.
    double lr = (double)c->lr * lr_mult;
    float step_size = (float)(lr / (1.0 - pow(c->beta1, (double)t)));
    float bc2_sqrt = (float)sqrt(1.0 - pow(c->beta2, (double)t));
    k_adamw<<<p->n_adamw_tiles, THREADS, 0, (cudaStream_t)stream>>>(
        p->adamw_tiles, p->ranges, values, grads, m, v, p->half, (float)lr, c->weight_decay,
        c->beta1, c->beta2, c->eps, step_size, bc2_sqrt, p->clip_max, p->clip_norm);
    LAUNCH_CHECK();
}

// ---------------------------------------------------------------- gradient norm
// partial[b] = sum of g^2 over tile b, in double: four elements a thread at a time (one
// 16-byte load) where the tile starts 16-byte aligned, then the rest one at a time; the
// order depends on the layout alone. (One element a thread read the 115M model's 460 MB
// of gradients at ~2.2 TB/s: 212 us.)
__global__ void k_sumsq_tiles(const dev_tile *__restrict__ tiles,
                              const dev_range *__restrict__ ranges, const float *__restrict__ g,
                              double *__restrict__ partial) {
    dev_tile t = tiles[blockIdx.x];
    dev_range r = ranges[t.range];
    size_t end = t.start + TILE < r.numel ? t.start + TILE : r.numel;
    const float *x = g + r.offset;
    double s = 0.0;
    size_t first = t.start;
    if (((uintptr_t)(x + first) & 15u) == 0) {
        const float4 *x4 = (const float4 *)(x + first);
        const size_t n4 = (end - first) / 4;
        for (size_t i = threadIdx.x; i < n4; i += blockDim.x) {
            const float4 v = x4[i];
            s += (double)v.x * v.x;
            s += (double)v.y * v.y;
            s += (double)v.z * v.z;
            s += (double)v.w * v.w;
        }
        first += n4 * 4;
    }
    for (size_t j = first + threadIdx.x; j < end; j += blockDim.x) s += (double)x[j] * x[j];
    s = block_sum(s);
    if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

// One block of 1024: norm = (float)sqrt(sum of the partials).
__global__ void k_norm_final(const double *__restrict__ partial, int n, float *norm) {
    double s = 0.0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) s += partial[i];
    s = block_sum(s);
    if (threadIdx.x == 0) norm[0] = (float)sqrt(s);
}

extern "C" void hy_cuda_grad_norm(const hy_cuda_optim_plan *p, const float *grads,
                                  float *norm_dev, void *scratch, size_t scratch_bytes,
                                  void *stream) {
    cudaStream_t s = (cudaStream_t)stream;
    need_scratch("grad_norm", scratch, scratch_bytes, norm_bytes(p));
    double *partial = (double *)scratch;
    if (p->n_all_tiles)
        k_sumsq_tiles<<<p->n_all_tiles, THREADS, 0, s>>>(p->all_tiles, p->ranges, grads, partial);
    LAUNCH_CHECK();
    k_norm_final<<<1, 1024, 0, s>>>(partial, p->n_all_tiles, norm_dev);
    LAUNCH_CHECK();
}

// clip.c's rule, decided on the device from the norm.
__global__ void k_clip_tiles(const dev_tile *__restrict__ tiles,
                             const dev_range *__restrict__ ranges, float *__restrict__ g,
                             float max_norm, const float *__restrict__ norm_dev) {
    const float scale = clip_factor(max_norm, norm_dev);
    if (scale == 1.0f) return;
    dev_tile t = tiles[blockIdx.x];
    dev_range r = ranges[t.range];
    size_t end = t.start + TILE < r.numel ? t.start + TILE : r.numel;
    float *x = g + r.offset;
    for (size_t j = t.start + threadIdx.x; j < end; j += blockDim.x) x[j] = __fmul_rn(x[j], scale);
}

extern "C" void hy_cuda_clip_grads_by(const hy_cuda_optim_plan *p, float *grads, float max_norm,
                                      const float *norm_dev, void *stream) {
    if (!(max_norm > 0) || p->n_all_tiles == 0) return;
    k_clip_tiles<<<p->n_all_tiles, THREADS, 0, (cudaStream_t)stream>>>(p->all_tiles, p->ranges,
                                                                        grads, max_norm, norm_dev);
    LAUNCH_CHECK();
}

extern "C" void hy_cuda_clip_grad_norm(const hy_cuda_optim_plan *p, float *grads,
                                       float max_norm, float *norm_dev, void *scratch,
                                       size_t scratch_bytes, void *stream) {
    hy_cuda_grad_norm(p, grads, norm_dev, scratch, scratch_bytes, stream);
    hy_cuda_clip_grads_by(p, grads, max_norm, norm_dev, stream);
}

// ---------------------------------------------------------------- Muon
// Batched: the plan groups the Muon matrices by shape (plan_muon_batches),
// and each batch of B matrices (rows, cols) runs as one sequence of
// launches: momentum + norm partials, denominators, scale, then per
// Newton-Schulz step 3 strided-batched GEMMs (bf16 mode: the last two through
// cuBLASLt, whose C, A for b A and X for a X, is apart from the output;
// exact mode: fp32 X, A, B and 3 operand copies, 2 on the last step), then
// apply: 4 + 3 ns_steps (19) launches per batch in the bf16 mode instead of
// per matrix. Block row blockIdx.y is the matrix; its buffers sit at
// stride sx (X, Xc) or sa (A, Ac) in the scratch, its
// parameters at mats[blockIdx.y].offset in the flat buffers. Every
// per-element operation and rounding is the one-matrix code's: a matrix
// gives the same bits alone or in a batch, up to cuBLAS's choice of GEMM
// algorithm for the batch. The 115M model's 57 Muon matrices are 4 shapes
// ((2304, 768) x12, (768, 768) x21, (4096, 768) x12, (768, 2048) x12): ~130
// launches instead of ~1,950 (one matrix at a time, 34 each), and GEMMs 12
// to 21 times larger, large enough for near tensor-core speed. Expected:
// the optimizer step falls from ~12 ms (measured, H200) to roughly 2-4 ms;
// the floor is the work itself: the Newton-Schulz GEMMs are 1.64 TFLOP per
// step (~2.5 ms at 650 TFLOP/s) and the elementwise passes move ~6 GB over
// the 90M Muon elements (~1.3 ms at 4.8 TB/s).

// buf = mu buf + g; U = g + mu buf (Nesterov) or buf; partial[y, b] = sum
// U^2 over block b's elements (double). gridDim.x = muon_blocks(N) for
// every matrix, so each matrix's partials are those of a batch of one.
__global__ void k_muon_momentum(const dev_muon_mat *__restrict__ mats,
                                const float *__restrict__ grads, float *__restrict__ bufs,
                                float *__restrict__ X, size_t N, size_t sx, float mu,
                                int nesterov, double *__restrict__ partial, float clip_max,
                                const float *__restrict__ clip_norm) {
    const float cf = clip_factor(clip_max, clip_norm);
    const bool clip = cf != 1.0f;
    const float *g = grads + mats[blockIdx.y].offset;
    float *buf = bufs + mats[blockIdx.y].m_offset, *U = X + blockIdx.y * sx;
    double s = 0.0;
    for (size_t j = blockIdx.x * (size_t)blockDim.x + threadIdx.x; j < N;
         j += (size_t)gridDim.x * blockDim.x) {
        float gj = clipped(g[j], cf, clip);
        float b = __fadd_rn(__fmul_rn(mu, buf[j]), gj);
        float u = nesterov ? __fadd_rn(gj, __fmul_rn(mu, b)) : b;
        buf[j] = b;
        U[j] = u;
        s += (double)u * u;
    }
    s = block_sum(s);
    if (threadIdx.x == 0) partial[(size_t)blockIdx.y * gridDim.x + blockIdx.x] = s;
}

// One block of 1024 per matrix: denom[y] = (float)(||U_y||_F + 1e-7), as
// muon.c's normalise_wide.
__global__ void k_muon_denom(const double *__restrict__ partial, int n, float *denom) {
    const double *pp = partial + (size_t)blockIdx.x * n;
    double s = 0.0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) s += pp[i];
    s = block_sum(s);
    if (threadIdx.x == 0) denom[blockIdx.x] = (float)(sqrt(s) + 1e-7);
}

// X_y = U_y / denom[y]: in exact mode into X in place (fp32) and its GEMM
// operand copy Xc_y (the same fp32 values); in the bf16 mode into Xc_y alone
// (bf16; nothing reads an fp32 X in that mode).
// The bf16 mode goes four elements a thread (16-byte loads, 8-byte stores: X and Xc are
// 256-byte aligned and sx a multiple of 128), the same rounding as one at a time.
__global__ void k_muon_scale(float *__restrict__ X, void *__restrict__ Xc, size_t N, size_t sx,
                             const float *__restrict__ denom, int fp32) {
    float d = denom[blockIdx.y];
    float *x = X + blockIdx.y * sx;
    const size_t first = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    size_t done = 0;
    if (!fp32) {
        const float4 *x4 = (const float4 *)x;
        uint2 *c4 = (uint2 *)((uint16_t *)Xc + blockIdx.y * sx);
        for (size_t q = first; q < N / 4; q += stride) {
            const float4 v = x4[q];
            c4[q] = make_uint2(
                (uint32_t)f32_to_bf16(__fdiv_rn(v.x, d)) | ((uint32_t)f32_to_bf16(__fdiv_rn(v.y, d)) << 16),
                (uint32_t)f32_to_bf16(__fdiv_rn(v.z, d)) | ((uint32_t)f32_to_bf16(__fdiv_rn(v.w, d)) << 16));
        }
        done = N / 4 * 4;
    }
    for (size_t j = done + first; j < N; j += stride) {
        float v = __fdiv_rn(x[j], d);
        if (fp32) {
            x[j] = v;
            ((float *)Xc)[blockIdx.y * sx + j] = v;
        } else {
            ((uint16_t *)Xc)[blockIdx.y * sx + j] = f32_to_bf16(v);
        }
    }
}

// The GEMM operand copy of matrix y (n elements at stride `stride`): bf16,
// or an exact fp32 copy in exact mode. The padding between matrices is
// never read.
__global__ void k_operand_copy(const float *__restrict__ x, void *__restrict__ xc, size_t n,
                               size_t stride, int fp32) {
    const float *src = x + blockIdx.y * stride;
    for (size_t j = blockIdx.x * (size_t)blockDim.x + threadIdx.x; j < n;
         j += (size_t)gridDim.x * blockDim.x) {
        if (fp32)
            ((float *)xc)[blockIdx.y * stride + j] = src[j];
        else
            ((uint16_t *)xc)[blockIdx.y * stride + j] = f32_to_bf16(src[j]);
    }
}

// p *= decay (when weight decay is on); p -= step_lr X. wd = muon_wd
// wd_mult and decay = 1 - step_lr wd per matrix, rounded as muon.c's float
// expressions (which the one-matrix code computed on the host). step_lr =
// lr sqrt(max(1, rows / cols)) in double, as muon.c, with lr read from
// device memory (a recorded step replays with each step's lr).
// X is fp32 (exact mode) or bf16 (x_bf16: the Newton-Schulz result of the bf16 mode).
__global__ void k_muon_apply(const dev_muon_mat *__restrict__ mats, float *__restrict__ values,
                             uint16_t *__restrict__ half, const void *__restrict__ X, int x_bf16,
                             size_t N, size_t sx, const float *__restrict__ lr_dev,
                             double aspect_sqrt, float muon_wd) {
    const float step_lr = (float)((double)lr_dev[0] * aspect_sqrt);
    dev_muon_mat mt = mats[blockIdx.y];
    float *p = values + mt.offset;
    uint16_t *ph = half ? half + mt.offset : NULL;  // the bf16 copies, when written here
    const float *xf = (const float *)X + blockIdx.y * sx;
    const uint16_t *xh = (const uint16_t *)X + blockIdx.y * sx;
    float wd = __fmul_rn(muon_wd, mt.wd_mult);
    int has_wd = wd != 0.0f;
    float decay = __fsub_rn(1.0f, __fmul_rn(step_lr, wd));
    auto update = [&](float v, float xj) {
        if (has_wd) v = __fmul_rn(v, decay);
        return __fsub_rn(v, __fmul_rn(step_lr, xj));
    };
    const size_t first = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    size_t done = 0;
    // Four a thread where p is 16-byte and the copies 8-byte aligned (X is).
    if (x_bf16 && ((uintptr_t)p & 15) == 0 && ((uintptr_t)ph & 7) == 0) {
        float4 *p4 = (float4 *)p;
        const uint2 *x4 = (const uint2 *)xh;
        for (size_t q = first; q < N / 4; q += stride) {
            float4 v = p4[q];
            const uint2 x = x4[q];
            v.x = update(v.x, __uint_as_float(x.x << 16));
            v.y = update(v.y, __uint_as_float(x.x & 0xffff0000u));
            v.z = update(v.z, __uint_as_float(x.y << 16));
            v.w = update(v.w, __uint_as_float(x.y & 0xffff0000u));
            p4[q] = v;
            if (ph)
                ((uint2 *)ph)[q] = make_uint2(
                    (uint32_t)f32_to_bf16(v.x) | ((uint32_t)f32_to_bf16(v.y) << 16),
                    (uint32_t)f32_to_bf16(v.z) | ((uint32_t)f32_to_bf16(v.w) << 16));
        }
        done = N / 4 * 4;
    }
    for (size_t j = done + first; j < N; j += stride) {
        const float v = update(p[j], x_bf16 ? __uint_as_float((uint32_t)xh[j] << 16) : xf[j]);
        p[j] = v;
        if (ph) ph[j] = f32_to_bf16(v);
    }
}

__global__ void k_set_f32(float *dst, float v) { *dst = v; }

static const float NS_A = 3.4445f, NS_B = -4.7750f, NS_C = 2.0315f;

// Grid for an elementwise pass over `batch` matrices of n elements:
// (x, batch), x = blocks per matrix, the whole grid capped near 2 waves of
// an H100/H200 (grid-stride loops do the rest; elementwise results do not
// depend on the grid).
static dim3 elem_grid(size_t n, int batch) {
    size_t g = (n + THREADS - 1) / THREADS, cap = (size_t)132 * 32 / (size_t)batch;
    if (cap < 1) cap = 1;
    if (g > cap) g = cap;
    return dim3((unsigned)(g < 1 ? 1 : g), (unsigned)batch);
}

static void operand_copy(const float *x, void *xc, size_t n, size_t stride, int batch, int fp32,
                         cudaStream_t s) {
    k_operand_copy<<<elem_grid(n, batch), THREADS, 0, s>>>(x, xc, n, stride, fp32);
    LAUNCH_CHECK();
}

// `batch` row-major products C_i (M, N) = alpha op(A_i) op(B_i) + beta C_i on
// the operand copies (matrix i at stride sa, sb, sc elements): bf16
// operands with fp32 accumulation, or fp32 throughout in exact mode. C is
// always fp32.
static void ns_gemm(int fp32, int ta, int tb, int M, int N, int K, float alpha, const void *A,
                    int lda, size_t sa, const void *B, int ldb, size_t sb, float beta, float *C,
                    int ldc, size_t sc, int batch, void *st) {
    if (fp32)
        hy_cuda_gemm_f32_strided_batched(ta, tb, M, N, K, alpha, (const float *)A, lda,
                                         (long long)sa, (const float *)B, ldb, (long long)sb,
                                         beta, C, ldc, (long long)sc, batch, st);
    else
        hy_cuda_gemm_strided_batched(ta, tb, M, N, K, alpha, A, lda, (long long)sa, B, ldb,
                                     (long long)sb, beta, C, 1, ldc, (long long)sc, batch, st);
}

// One batch of Muon matrices of one shape.
static void muon_batch_run(const hy_cuda_optim_plan *p, const hy_optim_config *c,
                           const muon_batch *mb, const dev_muon_mat *mats, float *values,
                           const float *grads, float *m, char *scratch, cudaStream_t s) {
    const float *lr_dev = p->lr_dev;
    const int fp32 = p->ns_fp32;
    uint16_t *half = p->half;
    int rows = mb->rows, cols = mb->cols, nmat = mb->count;
    int tall = rows > cols, n = tall ? cols : rows, mdim = tall ? rows : cols;
    size_t N = (size_t)rows * cols, NN = (size_t)n * n, sx = mb->sx, sa = mb->sa;
    int nb = muon_blocks(N);
    size_t xb = align256((size_t)nmat * sx * 4), ab = align256((size_t)nmat * sa * 4);
    float *X = (float *)scratch;                                // nmat x (rows, cols) f32
    void *Xc = scratch + xb;                                    // nmat x operand copy
    void *Xn = X;  // bf16 mode: the second bf16 X buffer (see the loop)
    float *A = (float *)(scratch + 2 * xb);                     // nmat x (n, n) f32
    void *Ac = scratch + 2 * xb + ab;                           // nmat x operand copy
    double *partial = (double *)(scratch + 2 * xb + 2 * ab);  // nmat x nb
    float *denom = (float *)((char *)partial + align256((size_t)nmat * nb * sizeof(double)));
    void *st = (void *)s;

    k_muon_momentum<<<dim3((unsigned)nb, (unsigned)nmat), THREADS, 0, s>>>(
        mats, grads, m, X, N, sx, c->muon_momentum, c->muon_nesterov, partial, p->clip_max,
        p->clip_norm);
    LAUNCH_CHECK();
    k_muon_denom<<<nmat, 1024, 0, s>>>(partial, nb, denom);
    LAUNCH_CHECK();
    k_muon_scale<<<elem_grid(N, nmat), THREADS, 0, s>>>(X, Xc, N, sx, denom, fp32);
    LAUNCH_CHECK();
    for (int it = 0; it < c->ns_steps; it++) {
        // A (n, n) = X X^T (wide, X (n, m)) or X^T X (tall, X stored (m, n)); then
        // B = b A + c A A. The operand of the last product is Bop.
        const void *Bop;
        if (fp32) {  // exact mode: A and B in fp32 (B in place over A), operand copies
            ns_gemm(1, !tall ? 0 : 1, !tall ? 1 : 0, n, n, mdim, 1.0f, Xc, cols, sx, Xc, cols, sx,
                    0.0f, A, n, sa, nmat, st);
            operand_copy(A, Ac, NN, sa, nmat, 1, s);
            ns_gemm(1, 0, 0, n, n, n, NS_C, Ac, n, sa, Ac, n, sa, NS_B, A, n, sa, nmat, st);
            operand_copy(A, Ac, NN, sa, nmat, 1, s);
            Bop = Ac;
        } else {
            // A straight to bf16 (the GEMM rounds its fp32 sums as the copy did); then
            // B = c A A + b A in bf16 too, in the A buffer's space: a cuBLASLt GEMM whose C (A
            // itself) is apart from its output, so nothing copies A. No fp32 A or B: 14 bytes
            // an element of (n, n) fewer.
            uint16_t *Bc = (uint16_t *)A;
            hy_cuda_gemm_strided_batched(!tall ? 0 : 1, !tall ? 1 : 0, n, n, mdim, 1.0f, Xc, cols,
                                         (long long)sx, Xc, cols, (long long)sx, 0.0f, Ac, 0, n,
                                         (long long)sa, nmat, st);
            hy_cuda_gemm_cd_strided_batched(0, 0, n, n, n, NS_C, Ac, n, (long long)sa, Ac, n,
                                            (long long)sa, NS_B, Ac, n, (long long)sa, Bc, n,
                                            (long long)sa, nmat, st);
            Bop = Bc;
        }
        // X = a X + B X (wide) or a X + X B^T (tall: the transpose of the wide form).
        if (fp32) {  // into the fp32 X, then its operand copy
            if (!tall)
                ns_gemm(1, 0, 0, n, mdim, n, 1.0f, Bop, n, sa, Xc, cols, sx, NS_A, X, cols, sx,
                        nmat, st);
            else
                ns_gemm(1, 0, 1, mdim, n, n, 1.0f, Xc, cols, sx, Bop, n, sa, NS_A, X, cols, sx,
                        nmat, st);
            if (it + 1 < c->ns_steps) operand_copy(X, Xc, N, sx, nmat, 1, s);  // last: unused
        } else {
            // In bf16 as the reference Muon: X' = a X + B X (wide) or a X + X B^T (tall), X the
            // GEMM's C, into a second bf16 buffer (in the fp32 X's space, unused in this mode),
            // and the two buffers swap.
            if (!tall)
                hy_cuda_gemm_cd_strided_batched(0, 0, n, mdim, n, 1.0f, Bop, n, (long long)sa, Xc,
                                                cols, (long long)sx, NS_A, Xc, cols,
                                                (long long)sx, Xn, cols, (long long)sx, nmat, st);
            else
                hy_cuda_gemm_cd_strided_batched(0, 1, mdim, n, n, 1.0f, Xc, cols, (long long)sx,
                                                Bop, n, (long long)sa, NS_A, Xc, cols,
                                                (long long)sx, Xn, cols, (long long)sx, nmat, st);
            void *t = Xc;
            Xc = Xn;
            Xn = t;
        }
    }
    // muon.c: step_lr = lr sqrt(max(1, rows / cols)) (one shape: one step_lr);
    // decay = 1 - step_lr wd per matrix, in the kernel.
    double aspect = (double)rows / (double)cols;
    k_muon_apply<<<elem_grid(N, nmat), THREADS, 0, s>>>(
        mats, values, half, fp32 ? (const void *)X : (const void *)Xc, !fp32, N, sx, lr_dev,
        sqrt(aspect > 1.0 ? aspect : 1.0), c->muon_weight_decay);
    LAUNCH_CHECK();
}

static void muon_run_all(const hy_cuda_optim_plan *p, const hy_optim_config *c, float *values,
                         const float *grads, float *m, void *scratch, cudaStream_t s) {
    for (int b = 0; b < p->n_batches; b++)
        muon_batch_run(p, c, &p->batches[b], p->muon_mats + p->batches[b].first, values, grads, m,
                       (char *)scratch, s);
}

// A Muon step is ~6 launches per Newton-Schulz iteration and matrix shape
// (plus 4): hundreds of small launches that bind a small model's step. It
// is recorded once as a CUDA graph and replayed (one launch) while its
// buffers, stream and configuration stay the same; HYDRA_MUON_GRAPH=0
// launches every kernel instead (the same kernels, the same results).
static int graph_wanted(void) {
    const char *e = getenv("HYDRA_MUON_GRAPH");
    return !(e && e[0] == '0');
}

extern "C" void hy_cuda_muon_step(const hy_cuda_optim_plan *p, const hy_optim_config *c,
                                  float lr_mult, float *values, const float *grads, float *m,
                                  void *scratch, size_t scratch_bytes, void *stream) {
    need_scratch("muon_step", scratch, scratch_bytes, p->muon_scratch);
    if (!p->n_batches) return;
    // A capturable handle: NULL is this thread's default stream (the library
    // is compiled with --default-stream per-thread).
    cudaStream_t s = stream ? (cudaStream_t)stream : cudaStreamPerThread;
    k_set_f32<<<1, 1, 0, s>>>(p->lr_dev, c->muon_lr * lr_mult);
    LAUNCH_CHECK();
    if (!graph_wanted()) {
        muon_run_all(p, c, values, grads, m, scratch, s);
        return;
    }
    muon_graph_key k;
    memset(&k, 0, sizeof k);  // the padding too: keys are compared with memcmp
    k.values = values, k.grads = grads, k.m = m, k.scratch = scratch, k.stream = s;
    k.half = p->half, k.clip_norm = p->clip_norm, k.clip_max = p->clip_max;
    k.fp32 = p->ns_fp32, k.nesterov = c->muon_nesterov, k.ns_steps = c->ns_steps;
    k.momentum = c->muon_momentum, k.wd = c->muon_weight_decay;
    hy_cuda_optim_plan *w = (hy_cuda_optim_plan *)p;  // the recorded graph is a cache
    if (!w->graph || memcmp(&k, &w->key, sizeof k)) {
        if (w->graph) CUDA_CHECK(cudaGraphExecDestroy(w->graph));
        w->graph = NULL;
        cudaGraph_t g = NULL;
        CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
        muon_run_all(p, c, values, grads, m, scratch, s);
        CUDA_CHECK(cudaStreamEndCapture(s, &g));
        w->graph = hy_graph_instantiate(g);
        CUDA_CHECK(cudaGraphDestroy(g));
        w->key = k;
    }
    CUDA_CHECK(cudaGraphLaunch(w->graph, s));
}

extern "C" void hy_cuda_optim_step(const hy_cuda_optim_plan *p, const hy_optim_config *c,
                                   int64_t t, float lr_mult, float *values, const float *grads,
                                   float *m, float *v, void *scratch, size_t scratch_bytes,
                                   void *stream) {
    hy_cuda_adamw_step(p, c, t, lr_mult, values, grads, m, v, stream);
    hy_cuda_muon_step(p, c, lr_mult, values, grads, m, scratch, scratch_bytes, stream);
}
