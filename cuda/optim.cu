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
    size_t offset, v_offset, numel;
    float wd_mult;
} dev_range;

typedef struct {
    int range;
    size_t start;  // first element within the range
} dev_tile;

struct hy_cuda_optim_plan {
    int n;
    hy_cuda_param_range *host;  // (n)
    dev_range *ranges;          // (n) device
    dev_tile *adamw_tiles;      // device, AdamW ranges only
    dev_tile *all_tiles;        // device, every range (gradient norm)
    int n_adamw_tiles, n_all_tiles;
    size_t muon_scratch;  // largest Muon matrix's Newton-Schulz buffers
    int ns_fp32;          // Newton-Schulz on fp32 GEMMs (exact mode)
};

// Muon's blocks for a matrix of N elements (a function of N only, so the
// reduction order never changes).
static int muon_blocks(size_t N) {
    size_t b = (N + (size_t)THREADS * 8 - 1) / ((size_t)THREADS * 8);
    return (int)(b < 1 ? 1 : (b > 1024 ? 1024 : b));
}

// Newton-Schulz buffers for (rows, cols), n = min, m = max: X f32 (n m),
// its GEMM operand copy Xc (n m), A f32 (n n), its copy Ac (n n), partials,
// denominator. The copies are bf16 (or fp32 in exact mode: sized for that).
static size_t ns_bytes(int64_t rows, int64_t cols) {
    size_t n = (size_t)(rows < cols ? rows : cols), m = (size_t)(rows < cols ? cols : rows);
    return 2 * align256(n * m * 4) + 2 * align256(n * n * 4) + align256(1024 * sizeof(double)) +
           256;
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
        h[i].v_offset = r[i].v_offset;
        h[i].numel = (size_t)(r[i].rows * r[i].cols);
        h[i].wd_mult = r[i].wd_mult;
        if (r[i].muon && h[i].numel) {
            HY_REQUIRE(r[i].rows <= INT32_MAX && r[i].cols <= INT32_MAX,
                       "optim plan: Muon range %d (%lld, %lld) too large for one GEMM", i,
                       (long long)r[i].rows, (long long)r[i].cols);
            size_t b = ns_bytes(r[i].rows, r[i].cols);
            if (b > p->muon_scratch) p->muon_scratch = b;
        }
    }
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

extern "C" void hy_cuda_optim_plan_destroy(hy_cuda_optim_plan *p) {
    if (!p) return;
    CUDA_CHECK(cudaFree(p->ranges));
    if (p->adamw_tiles) CUDA_CHECK(cudaFree(p->adamw_tiles));
    if (p->all_tiles) CUDA_CHECK(cudaFree(p->all_tiles));
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

// ---------------------------------------------------------------- AdamW
// optim.c's adamw_update, operation for operation:
//   p *= decay; m = b1 m + a1 g; v = b2 v + (a2 g) g;
//   denom = sqrt(v) / bc2_sqrt + eps; p -= step_size * (m / denom)
__global__ void k_adamw(const dev_tile *__restrict__ tiles, const dev_range *__restrict__ ranges,
                        float *__restrict__ values, const float *__restrict__ grads,
                        float *__restrict__ m, float *__restrict__ v, float lr, float wd, float b1,
                        float b2, float eps, float step_size, float bc2_sqrt) {
    dev_tile t = tiles[blockIdx.x];
    dev_range r = ranges[t.range];
    float decay = __fsub_rn(1.0f, __fmul_rn(lr, __fmul_rn(wd, r.wd_mult)));
    float a1 = __fsub_rn(1.0f, b1), a2 = __fsub_rn(1.0f, b2);
    size_t end = t.start + TILE < r.numel ? t.start + TILE : r.numel;
    float *p = values + r.offset, *mm = m + r.offset, *vv = v + r.v_offset;
    const float *g = grads + r.offset;
    for (size_t j = t.start + threadIdx.x; j < end; j += blockDim.x) {
        float gj = g[j];
        float pj = __fmul_rn(p[j], decay);
        float mj = __fadd_rn(__fmul_rn(b1, mm[j]), __fmul_rn(a1, gj));
        float vj = __fadd_rn(__fmul_rn(b2, vv[j]), __fmul_rn(__fmul_rn(a2, gj), gj));
        float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vj), bc2_sqrt), eps);
        p[j] = __fsub_rn(pj, __fmul_rn(step_size, __fdiv_rn(mj, denom)));
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
        p->adamw_tiles, p->ranges, values, grads, m, v, (float)lr, c->weight_decay, c->beta1,
        c->beta2, c->eps, step_size, bc2_sqrt);
    LAUNCH_CHECK();
}

// ---------------------------------------------------------------- gradient norm
// partial[b] = sum of g^2 over tile b, in double.
__global__ void k_sumsq_tiles(const dev_tile *__restrict__ tiles,
                              const dev_range *__restrict__ ranges, const float *__restrict__ g,
                              double *__restrict__ partial) {
    dev_tile t = tiles[blockIdx.x];
    dev_range r = ranges[t.range];
    size_t end = t.start + TILE < r.numel ? t.start + TILE : r.numel;
    const float *x = g + r.offset;
    double s = 0.0;
    for (size_t j = t.start + threadIdx.x; j < end; j += blockDim.x) s += (double)x[j] * x[j];
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
    float norm = norm_dev[0];
    if (!(max_norm > 0) || !isfinite(norm) || norm <= max_norm) return;
    float scale = (float)((double)max_norm / (double)norm);
    dev_tile t = tiles[blockIdx.x];
    dev_range r = ranges[t.range];
    size_t end = t.start + TILE < r.numel ? t.start + TILE : r.numel;
    float *x = g + r.offset;
    for (size_t j = t.start + threadIdx.x; j < end; j += blockDim.x) x[j] = __fmul_rn(x[j], scale);
}

extern "C" void hy_cuda_clip_grad_norm(const hy_cuda_optim_plan *p, float *grads,
                                       float max_norm, float *norm_dev, void *scratch,
                                       size_t scratch_bytes, void *stream) {
    hy_cuda_grad_norm(p, grads, norm_dev, scratch, scratch_bytes, stream);
    if (!(max_norm > 0) || p->n_all_tiles == 0) return;
    k_clip_tiles<<<p->n_all_tiles, THREADS, 0, (cudaStream_t)stream>>>(p->all_tiles, p->ranges,
                                                                        grads, max_norm, norm_dev);
    LAUNCH_CHECK();
}

// ---------------------------------------------------------------- Muon
// buf = mu buf + g; U = g + mu buf (Nesterov) or buf; partial[b] = sum U^2 (double).
__global__ void k_muon_momentum(const float *__restrict__ g, float *__restrict__ buf,
                                float *__restrict__ U, size_t N, float mu, int nesterov,
                                double *__restrict__ partial) {
    double s = 0.0;
    for (size_t j = blockIdx.x * (size_t)blockDim.x + threadIdx.x; j < N;
         j += (size_t)gridDim.x * blockDim.x) {
        float gj = g[j];
        float b = __fadd_rn(__fmul_rn(mu, buf[j]), gj);
        float u = nesterov ? __fadd_rn(gj, __fmul_rn(mu, b)) : b;
        buf[j] = b;
        U[j] = u;
        s += (double)u * u;
    }
    s = block_sum(s);
    if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

// One block of 1024: denom = (float)(||U||_F + 1e-7), as muon.c's normalise_wide.
__global__ void k_muon_denom(const double *__restrict__ partial, int n, float *denom) {
    double s = 0.0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) s += partial[i];
    s = block_sum(s);
    if (threadIdx.x == 0) denom[0] = (float)(sqrt(s) + 1e-7);
}

// X = U / denom in place (fp32), and its bf16 copy when `bf16`.
__global__ void k_muon_scale(float *__restrict__ X, uint16_t *__restrict__ Xb, size_t N,
                             const float *__restrict__ denom, int bf16) {
    float d = denom[0];
    for (size_t j = blockIdx.x * (size_t)blockDim.x + threadIdx.x; j < N;
         j += (size_t)gridDim.x * blockDim.x) {
        float x = __fdiv_rn(X[j], d);
        X[j] = x;
        if (bf16) Xb[j] = f32_to_bf16(x);
    }
}

__global__ void k_to_bf16(const float *__restrict__ x, uint16_t *__restrict__ y, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        y[i] = f32_to_bf16(x[i]);
}

// p *= decay (when weight decay is on); p -= step_lr X.
__global__ void k_muon_apply(float *__restrict__ p, const float *__restrict__ X, size_t N,
                             float step_lr, float decay, int has_wd) {
    for (size_t j = blockIdx.x * (size_t)blockDim.x + threadIdx.x; j < N;
         j += (size_t)gridDim.x * blockDim.x) {
        float v = p[j];
        if (has_wd) v = __fmul_rn(v, decay);
        p[j] = __fsub_rn(v, __fmul_rn(step_lr, X[j]));
    }
}

static const float NS_A = 3.4445f, NS_B = -4.7750f, NS_C = 2.0315f;

static int elem_grid(size_t n) {
    size_t g = (n + THREADS - 1) / THREADS;
    return (int)(g < 1 ? 1 : (g > 132 * 16 ? 132 * 16 : g));
}

// The GEMM operand copy of x (n floats): bf16, or an fp32 copy in exact mode.
static void operand_copy(const float *x, void *xc, size_t n, int fp32, cudaStream_t s) {
    if (fp32) {
        CUDA_CHECK(cudaMemcpyAsync(xc, x, n * sizeof(float), cudaMemcpyDeviceToDevice, s));
        return;
    }
    k_to_bf16<<<elem_grid(n), THREADS, 0, s>>>(x, (uint16_t *)xc, n);
    LAUNCH_CHECK();
}

// Row-major C (M, N) = alpha op(A) op(B) + beta C on the operand copies:
// bf16 operands with fp32 accumulation, or fp32 throughout in exact mode.
// C is always fp32.
static void ns_gemm(int fp32, int ta, int tb, int M, int N, int K, float alpha, const void *A,
                    int lda, const void *B, int ldb, float beta, float *C, int ldc, void *st) {
    if (fp32)
        hy_cuda_gemm_f32(ta, tb, M, N, K, alpha, (const float *)A, lda, (const float *)B, ldb,
                         beta, C, ldc, st);
    else
        hy_cuda_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, 1, ldc, st);
}

// One Muon matrix (rows, cols) at p, g, buf.
static void muon_matrix(const hy_optim_config *c, const hy_cuda_param_range *r, float lr,
                        int fp32, float *p, const float *g, float *buf, char *scratch,
                        cudaStream_t s) {
    int rows = (int)r->rows, cols = (int)r->cols;
    int tall = rows > cols, n = tall ? cols : rows, mdim = tall ? rows : cols;
    size_t N = (size_t)rows * cols, NN = (size_t)n * n;
    float *X = (float *)scratch;                                  // (rows, cols) f32
    void *Xc = scratch + align256(N * 4);                         // (rows, cols) operand copy
    float *A = (float *)((char *)Xc + align256(N * 4));           // (n, n) f32
    void *Ac = (char *)A + align256(NN * 4);                      // (n, n) operand copy
    double *partial = (double *)((char *)Ac + align256(NN * 4));  // (1024)
    float *denom = (float *)((char *)partial + align256(1024 * sizeof(double)));
    void *st = (void *)s;

    int nb = muon_blocks(N);
    k_muon_momentum<<<nb, THREADS, 0, s>>>(g, buf, X, N, c->muon_momentum, c->muon_nesterov,
                                           partial);
    LAUNCH_CHECK();
    k_muon_denom<<<1, 1024, 0, s>>>(partial, nb, denom);
    LAUNCH_CHECK();
    k_muon_scale<<<elem_grid(N), THREADS, 0, s>>>(X, (uint16_t *)Xc, N, denom, !fp32);
    LAUNCH_CHECK();
    if (fp32) operand_copy(X, Xc, N, 1, s);
    for (int it = 0; it < c->ns_steps; it++) {
        // A (n, n) = X X^T (wide, X (n, m)) or X^T X (tall, X stored (m, n)).
        if (!tall)
            ns_gemm(fp32, 0, 1, n, n, mdim, 1.0f, Xc, cols, Xc, cols, 0.0f, A, n, st);
        else
            ns_gemm(fp32, 1, 0, n, n, mdim, 1.0f, Xc, cols, Xc, cols, 0.0f, A, n, st);
        operand_copy(A, Ac, NN, fp32, s);
        // B = b A + c A A, in place over A (fp32, the inputs are the copy Ac).
        ns_gemm(fp32, 0, 0, n, n, n, NS_C, Ac, n, Ac, n, NS_B, A, n, st);
        operand_copy(A, Ac, NN, fp32, s);
        // X = a X + B X (wide) or a X + X B^T (tall: the transpose of the wide form).
        if (!tall)
            ns_gemm(fp32, 0, 0, n, mdim, n, 1.0f, Ac, n, Xc, cols, NS_A, X, cols, st);
        else
            ns_gemm(fp32, 0, 1, mdim, n, n, 1.0f, Xc, cols, Ac, n, NS_A, X, cols, st);
        operand_copy(X, Xc, N, fp32, s);
    }
    // muon.c: step_lr = lr sqrt(max(1, rows / cols)); decay = 1 - step_lr wd.
    double aspect = (double)rows / (double)cols;
    float step_lr = (float)(lr * sqrt(aspect > 1.0 ? aspect : 1.0));
    float wd = c->muon_weight_decay * r->wd_mult;
    float decay = 1.0f - step_lr * wd;
    k_muon_apply<<<elem_grid(N), THREADS, 0, s>>>(p, X, N, step_lr, decay, wd != 0.0f);
    LAUNCH_CHECK();
}

extern "C" void hy_cuda_muon_step(const hy_cuda_optim_plan *p, const hy_optim_config *c,
                                  float lr_mult, float *values, const float *grads, float *m,
                                  void *scratch, size_t scratch_bytes, void *stream) {
    need_scratch("muon_step", scratch, scratch_bytes, p->muon_scratch);
    float lr = c->muon_lr * lr_mult;
    for (int i = 0; i < p->n; i++) {
        const hy_cuda_param_range *r = &p->host[i];
        if (!r->muon || r->rows * r->cols == 0) continue;
        muon_matrix(c, r, lr, p->ns_fp32, values + r->offset, grads + r->offset, m + r->offset,
                    (char *)scratch, (cudaStream_t)stream);
    }
}

extern "C" void hy_cuda_optim_step(const hy_cuda_optim_plan *p, const hy_optim_config *c,
                                   int64_t t, float lr_mult, float *values, const float *grads,
                                   float *m, float *v, void *scratch, size_t scratch_bytes,
                                   void *stream) {
    hy_cuda_adamw_step(p, c, t, lr_mult, values, grads, m, v, stream);
    hy_cuda_muon_step(p, c, lr_mult, values, grads, m, scratch, scratch_bytes, stream);
}
