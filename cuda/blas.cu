// blas.cu: the process's cuBLAS handle, bf16 GEMMs with fp32 accumulation,
// float <-> bf16 conversion, and the linear layer (forward, backward).
//
// Row-major on top of column-major cuBLAS: a row-major (R, C) matrix is the
// column-major (C, R) matrix, its transpose. So row-major C = op(A) op(B)
// is column-major C^T = op(B)^T op(A)^T, i.e. cublasGemmEx with the operands
// swapped, the same transpose flags, and M and N swapped.
#include <cublasLt.h>
#include <cublas_v2.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.cuh"
#include "hy_cuda_blas.h"

// Every cuBLAS call is checked; a failure names the call, file and line.
#define CUBLAS_CHECK(call)                                                            \
    do {                                                                              \
        cublasStatus_t st_ = (call);                                                  \
        if (st_ != CUBLAS_STATUS_SUCCESS)                                             \
            hy_die_at(__FILE__, __LINE__, HY_EXIT_FAIL, "cuBLAS: %s failed: %s (%d)", #call, \
                      cublasGetStatusString(st_), (int)st_);                          \
    } while (0)

#define LAUNCH_CHECK() CUDA_CHECK(cudaGetLastError())

// ---------------------------------------------------------------- handle
// One handle per process. cublasSetStream() resets the workspace to
// cuBLAS's own pool (documented behaviour), so every stream change is
// followed by cublasSetWorkspace() with ours: cuBLAS then never allocates
// inside a step.
static cublasHandle_t g_handle = NULL;
static void *g_workspace = NULL;
static const size_t WORKSPACE_BYTES = (size_t)32 << 20;  // NVIDIA's advice for Hopper
static cudaStream_t g_stream = NULL;
static int g_device = -1;
static cublasLtHandle_t g_lt = NULL;  // cuBLASLt: GEMMs whose C and D are apart

extern "C" void hy_cuda_blas_init(void) {
    if (g_handle) return;
    CUDA_CHECK(cudaGetDevice(&g_device));
    CUBLAS_CHECK(cublasCreate(&g_handle));
    CUDA_CHECK(cudaMalloc(&g_workspace, WORKSPACE_BYTES));
    g_stream = cudaStreamPerThread;
    CUBLAS_CHECK(cublasSetStream(g_handle, g_stream));
    CUBLAS_CHECK(cublasSetWorkspace(g_handle, g_workspace, WORKSPACE_BYTES));
    CUBLAS_CHECK(cublasSetPointerMode(g_handle, CUBLAS_POINTER_MODE_HOST));
    CUBLAS_CHECK(cublasLtCreate(&g_lt));
}

static void lt_plans_free(void);

extern "C" void hy_cuda_blas_shutdown(void) {
    if (!g_handle) return;
    CUDA_CHECK(cudaDeviceSynchronize());
    CUBLAS_CHECK(cublasDestroy(g_handle));
    lt_plans_free();
    CUBLAS_CHECK(cublasLtDestroy(g_lt));
    CUDA_CHECK(cudaFree(g_workspace));
    g_handle = NULL;
    g_lt = NULL;
    g_workspace = NULL;
    g_device = -1;
}

// The handle, bound to `stream` (and our workspace). NULL is this thread's
// default stream: the library is compiled with --default-stream per-thread,
// but cuBLAS itself is not, so it must be told explicitly (a CUDA graph can
// record the per-thread stream, never the legacy one).
static cublasHandle_t handle_on(cudaStream_t stream) {
    HY_CHECK(g_handle != NULL,
             "cuBLAS: call hy_cuda_blas_init() once at start-up before any GEMM "
             "(hy_cuda_gemm, hy_cuda_linear_*, hy_cuda_head_ce, hy_cuda_muon_step)");
    if (stream == NULL) stream = cudaStreamPerThread;
    if (stream != g_stream) {
        CUBLAS_CHECK(cublasSetStream(g_handle, stream));
        CUBLAS_CHECK(cublasSetWorkspace(g_handle, g_workspace, WORKSPACE_BYTES));
        g_stream = stream;
    }
    return g_handle;
}

// ---------------------------------------------------------------- bf16
// Bit for bit hy_f32_to_bf16() (autograd/tensor.c): round to nearest even,
// NaN kept a quiet NaN with its sign.
static __device__ __forceinline__ uint16_t f32_to_bf16(float x) {
    uint32_t u = __float_as_uint(x);
    if (x != x) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static __device__ __forceinline__ float bf16_to_f32(uint16_t h) {
    return __uint_as_float((uint32_t)h << 16);
}

static int grid_for(size_t n, int block) {
    size_t g = (n + block - 1) / block;
    const size_t cap = 132 * 32;  // enough blocks to fill any Hopper; grid-stride beyond
    return (int)(g < 1 ? 1 : (g > cap ? cap : g));
}

__global__ void k_f32_to_bf16(const float *__restrict__ x, uint16_t *__restrict__ y, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        y[i] = f32_to_bf16(x[i]);
}

// Four elements a thread: a 16-byte load, an 8-byte store (n4 groups of 4).
__global__ void k_f32_to_bf16_x4(const float4 *__restrict__ x, uint2 *__restrict__ y,
                                 size_t n4) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n4;
         i += (size_t)gridDim.x * blockDim.x) {
        const float4 v = x[i];
        y[i] = make_uint2((uint32_t)f32_to_bf16(v.x) | ((uint32_t)f32_to_bf16(v.y) << 16),
                          (uint32_t)f32_to_bf16(v.z) | ((uint32_t)f32_to_bf16(v.w) << 16));
    }
}

// y = bf16(x), n elements: four at a time where x is 16-byte and y 8-byte
// aligned, the rest one at a time (the same rounding either way). The linear
// backward's rounding of dy: one element a thread moved ~2 TB/s less than
// four (expected; measured by hydra-bench step's linear rows).
static void launch_f32_to_bf16(const float *x, uint16_t *y, size_t n, cudaStream_t s) {
    size_t done = 0;
    if (((uintptr_t)x & 15u) == 0 && ((uintptr_t)y & 7u) == 0 && n >= 4) {
        const size_t n4 = n / 4;
        k_f32_to_bf16_x4<<<grid_for(n4, 256), 256, 0, s>>>((const float4 *)x, (uint2 *)y, n4);
        LAUNCH_CHECK();
        done = n4 * 4;
    }
    if (done < n) {
        k_f32_to_bf16<<<grid_for(n - done, 256), 256, 0, s>>>(x + done, y + done, n - done);
        LAUNCH_CHECK();
    }
}

__global__ void k_bf16_to_f32(const uint16_t *__restrict__ x, float *__restrict__ y, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        y[i] = bf16_to_f32(x[i]);
}

extern "C" void hy_cuda_f32_to_bf16(const float *x, void *y, size_t n, void *stream) {
    if (n == 0) return;
    launch_f32_to_bf16(x, (uint16_t *)y, n, (cudaStream_t)stream);
}

extern "C" void hy_cuda_bf16_to_f32(const void *x, float *y, size_t n, void *stream) {
    if (n == 0) return;
    k_bf16_to_f32<<<grid_for(n, 256), 256, 0, (cudaStream_t)stream>>>((const uint16_t *)x, y, n);
    LAUNCH_CHECK();
}

// ---------------------------------------------------------------- GEMM
// Large bf16 GEMMs go through cuBLASLt with a timed choice of algorithm (below, "tuning").
static int gemm_tuned(double flops);
static void lt_gemm_tuned(int ta, int tb, int M, int N, int K, float alpha, const void *A,
                          int lda, const void *B, int ldb, float beta, void *C, int ldc,
                          cudaDataType ctype, cudaStream_t stream);

// Row-major C (M, N) = alpha op(A) op(B) + beta C on cuBLAS. batch < 0: one
// plain GEMM (cublasGemmEx, strides ignored); batch >= 0: `batch` GEMMs in
// one cublasGemmStridedBatchedEx, matrix i at A + i stride_a (elements), etc.
static void gemm_rm(const char *what, int trans_a, int trans_b, int M, int N, int K, float alpha,
                    const void *A, int lda, long long stride_a, const void *B, int ldb,
                    long long stride_b, float beta, void *C, int ldc, long long stride_c,
                    int batch, cudaDataType ab_type, cudaDataType c_type,
                    cublasComputeType_t compute, void *stream) {
    HY_REQUIRE(M >= 0 && N >= 0 && K >= 0, "%s: negative size M %d N %d K %d", what, M, N, K);
    if (M == 0 || N == 0 || batch == 0) return;
    // Stored row lengths: A is (M, K) or, transposed, (K, M); B is (K, N) or (N, K).
    int a_cols = trans_a ? M : K, b_cols = trans_b ? K : N;
    HY_REQUIRE(lda >= (a_cols > 1 ? a_cols : 1) && ldb >= (b_cols > 1 ? b_cols : 1) &&
                   ldc >= (N > 1 ? N : 1),
               "%s: leading dimensions lda %d ldb %d ldc %d too small for M %d N %d K %d "
               "(trans_a %d, trans_b %d)",
               what, lda, ldb, ldc, M, N, K, trans_a, trans_b);
    cublasHandle_t h = handle_on((cudaStream_t)stream);
    cublasOperation_t ta = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasOperation_t tb = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    // Column-major: C^T (N, M) = op(B)^T (N, K) . op(A)^T (K, M).
    if (batch < 0 && ab_type == CUDA_R_16BF && compute == CUBLAS_COMPUTE_32F &&
        gemm_tuned(2.0 * M * N * K)) {
        lt_gemm_tuned(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, c_type,
                      (cudaStream_t)stream);
        return;
    }
    if (batch < 0) {
        CUBLAS_CHECK(cublasGemmEx(h, tb, ta, N, M, K, &alpha, B, ab_type, ldb, A, ab_type, lda,
                                  &beta, C, c_type, ldc, compute, CUBLAS_GEMM_DEFAULT));
        return;
    }
    // Consecutive matrices of C must not overlap (each is written whole).
    size_t c_span = (size_t)(M - 1) * (size_t)ldc + (size_t)N;
    HY_REQUIRE(stride_a >= 0 && stride_b >= 0 && (batch == 1 || (size_t)stride_c >= c_span),
               "%s: strides A %lld B %lld C %lld for %d matrices of C (%d, %d), ldc %d", what,
               stride_a, stride_b, stride_c, batch, M, N, ldc);
    CUBLAS_CHECK(cublasGemmStridedBatchedEx(h, tb, ta, N, M, K, &alpha, B, ab_type, ldb, stride_b,
                                            A, ab_type, lda, stride_a, &beta, C, c_type, ldc,
                                            stride_c, batch, compute, CUBLAS_GEMM_DEFAULT));
}

extern "C" void hy_cuda_gemm(int trans_a, int trans_b, int M, int N, int K, float alpha,
                             const void *A, int lda, const void *B, int ldb, float beta, void *C,
                             int c_f32, int ldc, void *stream) {
    gemm_rm("gemm", trans_a, trans_b, M, N, K, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0, -1,
            CUDA_R_16BF, c_f32 ? CUDA_R_32F : CUDA_R_16BF, CUBLAS_COMPUTE_32F, stream);
}

extern "C" void hy_cuda_gemm_f32(int trans_a, int trans_b, int M, int N, int K, float alpha,
                                 const float *A, int lda, const float *B, int ldb, float beta,
                                 float *C, int ldc, void *stream) {
    // PEDANTIC: true fp32 products, never TF32 whatever the math mode.
    gemm_rm("gemm_f32", trans_a, trans_b, M, N, K, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0,
            -1, CUDA_R_32F, CUDA_R_32F, CUBLAS_COMPUTE_32F_PEDANTIC, stream);
}

extern "C" void hy_cuda_gemm_strided_batched(int trans_a, int trans_b, int M, int N, int K,
                                             float alpha, const void *A, int lda,
                                             long long stride_a, const void *B, int ldb,
                                             long long stride_b, float beta, void *C, int c_f32,
                                             int ldc, long long stride_c, int batch,
                                             void *stream) {
    HY_REQUIRE(batch >= 0, "gemm_strided_batched: batch %d", batch);
    gemm_rm("gemm_strided_batched", trans_a, trans_b, M, N, K, alpha, A, lda, stride_a, B, ldb,
            stride_b, beta, C, ldc, stride_c, batch, CUDA_R_16BF,
            c_f32 ? CUDA_R_32F : CUDA_R_16BF, CUBLAS_COMPUTE_32F, stream);
}

extern "C" void hy_cuda_gemm_f32_strided_batched(int trans_a, int trans_b, int M, int N, int K,
                                                 float alpha, const float *A, int lda,
                                                 long long stride_a, const float *B, int ldb,
                                                 long long stride_b, float beta, float *C,
                                                 int ldc, long long stride_c, int batch,
                                                 void *stream) {
    HY_REQUIRE(batch >= 0, "gemm_f32_strided_batched: batch %d", batch);
    gemm_rm("gemm_f32_strided_batched", trans_a, trans_b, M, N, K, alpha, A, lda, stride_a, B,
            ldb, stride_b, beta, C, ldc, stride_c, batch, CUDA_R_32F, CUDA_R_32F,
            CUBLAS_COMPUTE_32F_PEDANTIC, stream);
}

// ---------------------------------------------------------------- GEMM, C and D apart
// cuBLASLt descriptors and the algorithm its heuristic picked, kept per call shape: the
// query runs once per shape (Muon's graph records each shape once; eager replays reuse it).
typedef struct {
    int ta, tb, M, N, K, lda, ldb, ldc, ldd, batch;
    long long sa, sb, sc, sd;
    int align[4];  // bytes every matrix of A, B, C, D is aligned to (a power of 2, <= 256)
    cudaDataType ctype;  // C and D (A and B are bf16)
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t la, lb, lc, ld;
    cublasLtMatmulAlgo_t algo;
} lt_plan;

enum { LT_PLANS = 256 };
static lt_plan g_lt_plans[LT_PLANS];
static int g_lt_count = 0;

static void lt_plans_free(void) {
    for (int i = 0; i < g_lt_count; i++) {
        lt_plan *p = &g_lt_plans[i];
        CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(p->la));
        CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(p->lb));
        CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(p->lc));
        CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(p->ld));
        CUBLAS_CHECK(cublasLtMatmulDescDestroy(p->op));
    }
    g_lt_count = 0;
}

// A column-major layout of `rows` x `cols` of type t, `batch` matrices `stride` elements apart.
static cublasLtMatrixLayout_t lt_layout(cudaDataType t, int rows, int cols, int ld, int batch,
                                        long long stride) {
    cublasLtMatrixLayout_t l;
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&l, t, (uint64_t)rows, (uint64_t)cols, ld));
    int64_t st = stride;
    CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &batch,
                                                  sizeof batch));
    CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET,
                                                  &st, sizeof st));
    return l;
}

// The alignment (bytes, a power of 2 up to 256) of every matrix at p + i stride, elements
// of `size` bytes.
static int lt_align(const void *p, long long stride, int size = 2) {
    uintptr_t bits = (uintptr_t)p | (uintptr_t)(stride * size) | 256u;
    return (int)(bits & (~bits + 1));
}

// ---------------------------------------------------------------- tuning
// cuBLAS's heuristic (cublasGemmEx's choice, cuBLASLt's first candidate) is not the fastest
// algorithm for several of a training step's GEMM shapes: measured on an H200 over the 115M
// model's shapes (8 x 2048 tokens), each timed alone, the fastest of the heuristic's
// candidates (always among its first eight) took the step's GEMMs from 18.4 to 16.4 ms (the
// head's logits 349 -> 265 us, the MLP's up projection 145 -> 123 us, its down projection's
// dx 97 -> 77 us); in the step, less (README). So a GEMM of at least
// kTuneFlops takes, at its shape's first call, the fastest of the heuristic's first
// kTuneCandidates candidates, timed on its own operands into a scratch output; the shape
// keeps it for the process (the same bits every call). HYDRA_GEMM_TUNE=0 keeps the
// heuristic's first; a first call during graph capture (no timing there) does too;
// HYDRA_GEMM_TUNE_LOG=1 prints each choice.
static const double kTuneFlops = 1e9;
static const int kTuneCandidates = 16;

static int gemm_tuned(double flops) {
    static int wanted = -1;  // read once: a process never mixes the two
    if (wanted < 0) {
        const char *e = getenv("HYDRA_GEMM_TUNE");
        wanted = !(e && e[0] == '0');
    }
    return wanted && flops >= kTuneFlops;
}

// Mean microseconds of `reps` back-to-back runs of candidate `algo` (after one untimed).
static float lt_time(const cublasLtMatmulDesc_t op, const cublasLtMatrixLayout_t la,
                     const cublasLtMatrixLayout_t lb, const cublasLtMatrixLayout_t lc,
                     const cublasLtMatmulAlgo_t *algo, const void *A, const void *B, void *D,
                     float beta, cudaStream_t s, cudaEvent_t e0, cudaEvent_t e1) {
    const float alpha = 1.0f;
    const int reps = 5;
    for (int i = -1; i < reps; i++) {
        if (i == 0) CUDA_CHECK(cudaEventRecord(e0, s));
        if (cublasLtMatmul(g_lt, op, &alpha, B, la, A, lb, &beta, D, lc, D, lc, algo, g_workspace,
                           WORKSPACE_BYTES, s) != CUBLAS_STATUS_SUCCESS)
            return INFINITY;  // a candidate that does not run here is not chosen
    }
    CUDA_CHECK(cudaEventRecord(e1, s));
    CUDA_CHECK(cudaEventSynchronize(e1));
    float ms = 0.0f;
    CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
    return ms * 1e3f / reps;
}

// Index of the fastest of n candidates (0 when timing is not possible now).
static int lt_pick(const lt_plan *p, const cublasLtMatmulHeuristicResult_t *res, int n,
                   const void *A, const void *B, float beta, cudaStream_t s) {
    cudaStreamCaptureStatus cap;
    CUDA_CHECK(cudaStreamIsCapturing(s, &cap));
    if (n < 2 || cap != cudaStreamCaptureStatusNone) return 0;
    size_t esize = p->ctype == CUDA_R_32F ? 4 : 2;
    size_t bytes = ((size_t)(p->M - 1) * p->ldd + p->N) * esize;
    void *D = NULL;
    if (cudaMalloc(&D, bytes) != cudaSuccess) {  // no room for a scratch output: no timing
        (void)cudaGetLastError();
        fprintf(stderr, "hydra: GEMM M %d N %d K %d: no memory to time its algorithms (%zu "
                "bytes); cuBLAS's first choice kept\n", p->M, p->N, p->K, bytes);
        return 0;
    }
    CUDA_CHECK(cudaMemsetAsync(D, 0, bytes, s));
    cudaEvent_t e0, e1;
    CUDA_CHECK(cudaEventCreate(&e0));
    CUDA_CHECK(cudaEventCreate(&e1));
    int best = 0;
    float tbest = INFINITY, tfirst = INFINITY;
    for (int i = 0; i < n; i++) {
        float t = lt_time(p->op, p->la, p->lb, p->lc, &res[i].algo, A, B, D, beta, s, e0, e1);
        if (i == 0) tfirst = t;
        if (t < tbest) tbest = t, best = i;
    }
    const char *log = getenv("HYDRA_GEMM_TUNE_LOG");
    if (log && log[0] == '1')
        fprintf(stderr, "hydra: gemm M %d N %d K %d trans %d %d (%s out): candidate %d of %d, "
                "%.1f us (the heuristic's first: %.1f us)\n", p->M, p->N, p->K, p->ta, p->tb,
                p->ctype == CUDA_R_32F ? "f32" : "bf16", best, n, tbest, tfirst);
    CUDA_CHECK(cudaEventDestroy(e0));
    CUDA_CHECK(cudaEventDestroy(e1));
    CUDA_CHECK(cudaFree(D));
    return best;
}

// The plan of one call shape (row-major arguments) and alignment, made on first use; the
// heuristic is told the alignments, so it never picks an algorithm that needs more.
// Column-major, as in gemm_rm: D^T (N, M) = op(B)^T op(A)^T: B is cuBLASLt's first operand.
// tune (plain GEMMs, C = D): the algorithm is the fastest of the first candidates, timed on
// A and B (lt_pick); otherwise the first.
static const lt_plan *lt_plan_for(int ta, int tb, int M, int N, int K, int lda, long long sa,
                                  int ldb, long long sb, int ldc, long long sc, int ldd,
                                  long long sd, int batch, const int align[4], cudaDataType ctype,
                                  int tune, const void *A, const void *B, float beta,
                                  cudaStream_t s) {
    for (int i = 0; i < g_lt_count; i++) {
        const lt_plan *p = &g_lt_plans[i];
        if (p->ta == ta && p->tb == tb && p->M == M && p->N == N && p->K == K && p->lda == lda &&
            p->ldb == ldb && p->ldc == ldc && p->ldd == ldd && p->batch == batch && p->sa == sa &&
            p->sb == sb && p->sc == sc && p->sd == sd && p->ctype == ctype &&
            !memcmp(p->align, align, sizeof p->align))
            return p;
    }
    HY_CHECK(g_lt_count < LT_PLANS, "gemm: more than %d cuBLASLt GEMM shapes", LT_PLANS);
    lt_plan *p = &g_lt_plans[g_lt_count];
    p->ta = ta, p->tb = tb, p->M = M, p->N = N, p->K = K, p->lda = lda, p->ldb = ldb;
    p->ldc = ldc, p->ldd = ldd, p->batch = batch, p->sa = sa, p->sb = sb, p->sc = sc, p->sd = sd;
    memcpy(p->align, align, sizeof p->align);
    p->ctype = ctype;
    CUBLAS_CHECK(cublasLtMatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    cublasOperation_t opa = tb ? CUBLAS_OP_T : CUBLAS_OP_N, opb = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb));
    // Stored shapes: row-major B (K, N) is column-major (N, K); transposed, (K, N). Likewise A.
    p->la = lt_layout(CUDA_R_16BF, tb ? K : N, tb ? N : K, ldb, batch, sb);
    p->lb = lt_layout(CUDA_R_16BF, ta ? M : K, ta ? K : M, lda, batch, sa);
    p->lc = lt_layout(ctype, N, M, ldc, batch, sc);
    p->ld = lt_layout(ctype, N, M, ldd, batch, sd);
    cublasLtMatmulPreference_t pref;
    CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    size_t ws = WORKSPACE_BYTES;
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
    // cuBLASLt's first operand is our B (see above).
    const cublasLtMatmulPreferenceAttributes_t which[4] = {
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
    for (int i = 0; i < 4; i++) {
        uint32_t al = (uint32_t)align[i];
        CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, which[i], &al, sizeof al));
    }
    cublasLtMatmulHeuristicResult_t res[kTuneCandidates];
    int found = 0;
    CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(g_lt, p->op, p->la, p->lb, p->lc, p->ld, pref,
                                                tune ? kTuneCandidates : 1, res, &found));
    CUBLAS_CHECK(cublasLtMatmulPreferenceDestroy(pref));
    HY_CHECK(found > 0, "gemm: cuBLASLt has no algorithm for M %d N %d K %d (trans %d %d)", M, N,
             K, ta, tb);
    p->algo = res[tune ? lt_pick(p, res, found, A, B, beta, s) : 0].algo;
    g_lt_count++;
    return p;
}

extern "C" void hy_cuda_gemm_cd_strided_batched(int trans_a, int trans_b, int M, int N, int K,
                                                float alpha, const void *A, int lda,
                                                long long stride_a, const void *B, int ldb,
                                                long long stride_b, float beta, const void *C,
                                                int ldc, long long stride_c, void *D, int ldd,
                                                long long stride_d, int batch, void *stream) {
    HY_REQUIRE(M >= 0 && N >= 0 && K >= 0 && batch >= 0,
               "gemm_cd: negative size M %d N %d K %d batch %d", M, N, K, batch);
    if (M == 0 || N == 0 || batch == 0) return;
    int a_cols = trans_a ? M : K, b_cols = trans_b ? K : N;
    HY_REQUIRE(lda >= (a_cols > 1 ? a_cols : 1) && ldb >= (b_cols > 1 ? b_cols : 1) &&
                   ldc >= (N > 1 ? N : 1) && ldd >= (N > 1 ? N : 1),
               "gemm_cd: leading dimensions lda %d ldb %d ldc %d ldd %d too small for M %d N %d "
               "K %d (trans_a %d, trans_b %d)",
               lda, ldb, ldc, ldd, M, N, K, trans_a, trans_b);
    size_t d_span = (size_t)(M - 1) * (size_t)ldd + (size_t)N;
    HY_REQUIRE(stride_a >= 0 && stride_b >= 0 && stride_c >= 0 &&
                   (batch == 1 || (size_t)stride_d >= d_span),
               "gemm_cd: strides A %lld B %lld C %lld D %lld for %d matrices of D (%d, %d), ldd %d",
               stride_a, stride_b, stride_c, stride_d, batch, M, N, ldd);
    HY_REQUIRE(C != D, "gemm_cd: C and D must be apart (hy_cuda_gemm_strided_batched adds in place)");
    handle_on((cudaStream_t)stream);  // the start-up check, and our workspace's stream
    const int align[4] = {lt_align(A, stride_a), lt_align(B, stride_b), lt_align(C, stride_c),
                          lt_align(D, stride_d)};
    cudaStream_t s = stream ? (cudaStream_t)stream : cudaStreamPerThread;
    const lt_plan *p = lt_plan_for(trans_a, trans_b, M, N, K, lda, stride_a, ldb, stride_b, ldc,
                                   stride_c, ldd, stride_d, batch, align, CUDA_R_16BF, 0, NULL,
                                   NULL, beta, s);
    CUBLAS_CHECK(cublasLtMatmul(g_lt, p->op, &alpha, B, p->la, A, p->lb, &beta, C, p->lc, D, p->ld,
                                &p->algo, g_workspace, WORKSPACE_BYTES, s));
}

// A plain GEMM (row-major, as gemm_rm) on cuBLASLt with C = D, its algorithm tuned.
static void lt_gemm_tuned(int ta, int tb, int M, int N, int K, float alpha, const void *A,
                          int lda, const void *B, int ldb, float beta, void *C, int ldc,
                          cudaDataType ctype, cudaStream_t stream) {
    cudaStream_t s = stream ? stream : cudaStreamPerThread;
    const int csize = ctype == CUDA_R_32F ? 4 : 2;
    const int align[4] = {lt_align(A, 0), lt_align(B, 0), lt_align(C, 0, csize),
                          lt_align(C, 0, csize)};
    const lt_plan *p = lt_plan_for(ta, tb, M, N, K, lda, 0, ldb, 0, ldc, 0, ldc, 0, 1, align,
                                   ctype, 1, A, B, beta, s);
    CUBLAS_CHECK(cublasLtMatmul(g_lt, p->op, &alpha, B, p->la, A, p->lb, &beta, C, p->lc, C, p->ld,
                                &p->algo, g_workspace, WORKSPACE_BYTES, s));
}

// ---------------------------------------------------------------- linear forward
// y[r, j] = bf16(bias[j]), the C the GEMM adds to.
__global__ void k_fill_bias(uint16_t *__restrict__ y, const float *__restrict__ bias, int rows,
                            int out) {
    size_t n = (size_t)rows * out;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        y[i] = f32_to_bf16(bias[i % out]);
}

extern "C" void hy_cuda_linear_fwd(int rows, int in, int out, const void *x, const void *w,
                                   const float *bias, void *y, void *stream) {
    HY_REQUIRE(rows >= 0 && in > 0 && out > 0, "linear_fwd: bad sizes rows %d in %d out %d",
               rows, in, out);
    if (rows == 0) return;
    cudaStream_t s = (cudaStream_t)stream;
    if (bias) {
        k_fill_bias<<<grid_for((size_t)rows * out, 256), 256, 0, s>>>((uint16_t *)y, bias, rows,
                                                                        out);
        LAUNCH_CHECK();
    }
    // y (rows, out) = x (rows, in) . W^T, W stored (out, in).
    hy_cuda_gemm(0, 1, rows, out, in, 1.0f, x, in, w, in, bias ? 1.0f : 0.0f, y, 0, out, stream);
}

// ---------------------------------------------------------------- linear backward
static size_t align256(size_t b) { return (b + 255) / 256 * 256; }

// Row segments for the bias gradient's first pass: a function of the sizes
// only, so the summation order (and the result) never changes.
static int db_segments(int rows) {
    int s = (rows + 255) / 256;
    return s < 1 ? 1 : (s > 128 ? 128 : s);
}

extern "C" size_t hy_cuda_linear_bwd_scratch_bytes(int rows, int in, int out) {
    (void)in;
    return align256((size_t)rows * out * sizeof(uint16_t)) +
           align256((size_t)db_segments(rows) * out * sizeof(float));
}

// partial[seg, j] = sum of dy[r, j] over the rows of segment seg, in row order
// per thread (ty) and then over ty in a fixed order. Block (32, 8).
__global__ void k_db_partial(const float *__restrict__ dy, float *__restrict__ partial, int rows,
                             int out, int nseg) {
    __shared__ float sh[8][33];
    int j = blockIdx.x * 32 + threadIdx.x, seg = blockIdx.y;
    int per = (rows + nseg - 1) / nseg, r0 = seg * per, r1 = min(rows, r0 + per);
    float s = 0.0f;
    if (j < out)
        for (int r = r0 + threadIdx.y; r < r1; r += 8) s += dy[(size_t)r * out + j];
    sh[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && j < out) {
        float t = 0.0f;
        for (int k = 0; k < 8; k++) t += sh[k][threadIdx.x];
        partial[(size_t)seg * out + j] = t;
    }
}

__global__ void k_db_final(const float *__restrict__ partial, float *__restrict__ db, int out,
                           int nseg) {
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= out) return;
    float t = 0.0f;
    for (int s = 0; s < nseg; s++) t += partial[(size_t)s * out + j];
    db[j] += t;
}

extern "C" void hy_cuda_linear_bwd(int rows, int in, int out, const float *dy, const void *x,
                                   const void *w, float *dx, int dx_overwrite, float *dw,
                                   float *db, void *scratch, size_t scratch_bytes, void *stream) {
    HY_REQUIRE(rows >= 0 && in > 0 && out > 0, "linear_bwd: bad sizes rows %d in %d out %d",
               rows, in, out);
    if (rows == 0 || (!dx && !dw && !db)) return;
    size_t need = hy_cuda_linear_bwd_scratch_bytes(rows, in, out);
    HY_REQUIRE(scratch && scratch_bytes >= need,
               "linear_bwd: scratch of %zu bytes is too small for rows %d in %d out %d: "
               "hy_cuda_linear_bwd_scratch_bytes() = %zu",
               scratch_bytes, rows, in, out, need);
    cudaStream_t s = (cudaStream_t)stream;
    uint16_t *dyb = (uint16_t *)scratch;  // (rows, out) bf16
    float *partial = (float *)((char *)scratch + align256((size_t)rows * out * sizeof(uint16_t)));
    if (dx || dw) {
        launch_f32_to_bf16(dy, dyb, (size_t)rows * out, s);
    }
    // dx (rows, in) += dy (rows, out) . W (out, in); beta 0: dx is not read
    if (dx)
        hy_cuda_gemm(0, 0, rows, in, out, 1.0f, dyb, out, w, in, dx_overwrite ? 0.0f : 1.0f, dx, 1,
                     in, stream);
    // dW (out, in) += dy^T (out, rows) . x (rows, in); dy stored (rows, out)
    if (dw) hy_cuda_gemm(1, 0, out, in, rows, 1.0f, dyb, out, x, in, 1.0f, dw, 1, in, stream);
    if (db) {
        int nseg = db_segments(rows);
        dim3 grid((out + 31) / 32, nseg), block(32, 8);
        k_db_partial<<<grid, block, 0, s>>>(dy, partial, rows, out, nseg);
        LAUNCH_CHECK();
        k_db_final<<<(out + 255) / 256, 256, 0, s>>>(partial, db, out, nseg);
        LAUNCH_CHECK();
    }
}

extern "C" void hy_cuda_linear_bwd_bf16(int rows, int in, int out, const void *dy, const void *x,
                                        const void *w, float *dx, int dx_overwrite, float *dw,
                                        void *stream) {
    HY_REQUIRE(rows >= 0 && in > 0 && out > 0, "linear_bwd_bf16: bad sizes rows %d in %d out %d",
               rows, in, out);
    if (rows == 0 || (!dx && !dw)) return;
    if (dx)
        hy_cuda_gemm(0, 0, rows, in, out, 1.0f, dy, out, w, in, dx_overwrite ? 0.0f : 1.0f, dx, 1,
                     in, stream);
    if (dw) hy_cuda_gemm(1, 0, out, in, rows, 1.0f, dy, out, x, in, 1.0f, dw, 1, in, stream);
}

// ---------------------------------------------------------------- timing
static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

extern "C" float hy_cuda_time_ms(hy_cuda_timed_fn fn, void *arg, int warmup, int reps) {
    HY_REQUIRE(reps > 0 && warmup >= 0, "time_ms: reps %d warmup %d", reps, warmup);
    for (int i = 0; i < warmup; i++) fn(arg);
    cudaEvent_t a, b;
    CUDA_CHECK(cudaEventCreate(&a));
    CUDA_CHECK(cudaEventCreate(&b));
    float *ms = (float *)hy_xmalloc((size_t)reps * sizeof(float));
    for (int i = 0; i < reps; i++) {
        CUDA_CHECK(cudaEventRecord(a, 0));
        fn(arg);
        CUDA_CHECK(cudaEventRecord(b, 0));
        CUDA_CHECK(cudaEventSynchronize(b));
        CUDA_CHECK(cudaEventElapsedTime(&ms[i], a, b));
    }
    qsort(ms, (size_t)reps, sizeof(float), cmp_float);
    float med = reps % 2 ? ms[reps / 2] : 0.5f * (ms[reps / 2 - 1] + ms[reps / 2]);
    free(ms);
    CUDA_CHECK(cudaEventDestroy(a));
    CUDA_CHECK(cudaEventDestroy(b));
    return med;
}
