// dist.cu: NCCL collectives for data-parallel training (see hy_cuda_dist.h).
//
// The communicator is non-blocking (NCCL >= 2.14): an NCCL call may return
// ncclInProgress, after which the communicator's state is polled until it
// settles. Every collective is then waited for by polling cudaStreamQuery
// and ncclCommGetAsyncError with a deadline, so that no rank ever blocks
// forever in the driver on a peer that is gone.
#include <errno.h>
#include <math.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <nccl.h>

#include "check.cuh"
#include "hy_cuda_dist.h"

#if NCCL_VERSION_CODE >= NCCL_VERSION(2, 14, 0)
#define HY_NCCL_NONBLOCKING 1
#else
#define HY_NCCL_NONBLOCKING 0
#endif

#if NCCL_VERSION_CODE >= NCCL_VERSION(2, 13, 0)
#define LAST_ERROR(comm) ncclGetLastError(comm)
#else
#define LAST_ERROR(comm) "no detail before NCCL 2.13"
#endif

#define HY_DIST_MAX_SCALARS 64

static ncclComm_t g_comm;
static int g_rank = 0, g_world = 1;
static double g_timeout = 300.0;  // hy_dist_timeout_s(), read once by hy_dist_init
static double *g_scalars;  // (HY_DIST_MAX_SCALARS) device staging for host scalars
static float *g_token;     // (1) device float for the barrier

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

extern "C" int hy_dist_built(void) { return 1; }
extern "C" int hy_dist_rank(void) { return g_rank; }
extern "C" int hy_dist_world(void) { return g_world; }

extern "C" double hy_dist_timeout_s(void) {
    const char *s = getenv("HYDRA_NCCL_TIMEOUT");
    if (!s || !*s) return 300.0;
    char *end;
    double t = strtod(s, &end);
    if (*end || !(t > 0) || !isfinite(t))
        hy_die(HY_EXIT_USAGE, "HYDRA_NCCL_TIMEOUT = '%s': expected a positive number of seconds", s);
    return t;
}

// The rank's last word: the message (in hy_die's format, with the source
// line), the communicator aborted, exit status 1. _exit, not exit: a CUDA
// context with a collective still pending can hang in its teardown.
static void __attribute__((noreturn)) fail_at(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fail_at(const char *file, int line, const char *fmt, ...) {
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fflush(stdout);
    fprintf(stderr, "hydra: error: rank %d of %d: %s; aborting the NCCL communicator (%s:%d)\n",
            g_rank, g_world, msg, file, line);
    fflush(stderr);
    if (g_comm) ncclCommAbort(g_comm);
    g_comm = NULL;
    _exit(HY_EXIT_FAIL);
}
#define FAIL(...) fail_at(__FILE__, __LINE__, __VA_ARGS__)

// Polls until the communicator's state leaves ncclInProgress: fails on an
// error or after the timeout (started at t0).
static void settle_at(const char *file, int line, ncclResult_t r, const char *what, double t0) {
    double timeout = g_timeout;
    long spins = 0;
    while (r == ncclInProgress) {
        if (now_s() - t0 > timeout)
            fail_at(file, line, "%s did not finish in %.0f s (HYDRA_NCCL_TIMEOUT): another rank "
                    "has stopped, hangs or never joined", what, timeout);
        if (++spins > 1000) usleep(1000);
        ncclResult_t e = ncclCommGetAsyncError(g_comm, &r);
        if (e != ncclSuccess) r = e;
    }
    if (r != ncclSuccess)
        fail_at(file, line, "NCCL: %s failed: %s (%s)", what, ncclGetErrorString(r),
                LAST_ERROR(g_comm));
}
#define NCCL_CHECK(call, what) settle_at(__FILE__, __LINE__, (call), (what), now_s())

// Waits for the work queued on `stream` (a collective and what precedes it)
// while watching the communicator: an asynchronous NCCL error or the
// deadline stops the rank instead of blocking forever.
static void wait_at(const char *file, int line, cudaStream_t stream, const char *what) {
    double t0 = now_s(), timeout = g_timeout;
    for (long spins = 0;; spins++) {
        cudaError_t c = cudaStreamQuery(stream);
        if (c == cudaSuccess) return;
        if (c != cudaErrorNotReady)
            fail_at(file, line, "CUDA error while waiting for %s: %s", what, cudaGetErrorString(c));
        ncclResult_t async = ncclSuccess;
        ncclResult_t e = ncclCommGetAsyncError(g_comm, &async);
        if (e != ncclSuccess) async = e;
        if (async != ncclSuccess && async != ncclInProgress)
            fail_at(file, line, "NCCL error during %s: %s (%s)", what, ncclGetErrorString(async),
                    LAST_ERROR(g_comm));
        if (now_s() - t0 > timeout)
            fail_at(file, line, "%s did not finish in %.0f s (HYDRA_NCCL_TIMEOUT): another rank "
                    "has stopped or hangs", what, timeout);
        // Spin briefly (a healthy collective ends in microseconds to
        // milliseconds), then poll at a gentle 20 us.
        if (spins > 2000)
            usleep(20);
        else
            sched_yield();
    }
}
#define WAIT(stream, what) wait_at(__FILE__, __LINE__, (stream), (what))

// The stream a NULL `stream` means: the default stream of the other entry
// points of this library (built for per-thread default streams).
static cudaStream_t resolve(void *stream) {
    if (stream) return (cudaStream_t)stream;
#ifdef CUDA_API_PER_THREAD_DEFAULT_STREAM
    return cudaStreamPerThread;
#else
    return cudaStreamLegacy;
#endif
}

// NCCL never sees the caller's stream: a collective runs on g_stream, a
// real stream of this library, after an event recorded on the caller's
// stream. The caller's stream is usually cudaStreamPerThread, a handle
// whose meaning depends on the host thread that uses it, and a
// non-blocking communicator may launch the collective from NCCL's own
// thread: there that handle names another stream, unordered with ours, so
// the collective could read its input before the caller's kernels had
// written it (measured on two H200s: ranks summing different values).
// Every collective is waited for on the host (WAIT; hy_dist_wait() for
// those only started) before the caller uses its buffers again, so work
// queued after the wait always follows the collective.
static cudaStream_t g_stream;
static cudaEvent_t g_ready;

static cudaStream_t after(void *stream) {
    CUDA_CHECK(cudaEventRecord(g_ready, resolve(stream)));
    CUDA_CHECK(cudaStreamWaitEvent(g_stream, g_ready, 0));
    return g_stream;
}

// Before hy_dist_init (or after destroy) this process is a world of one:
// the collectives are identities.
static int alone(void) { return g_comm == NULL; }

extern "C" void hy_dist_unique_id(unsigned char id[HY_DIST_ID_BYTES]) {
    static_assert(sizeof(ncclUniqueId) == HY_DIST_ID_BYTES, "NCCL_UNIQUE_ID_BYTES changed");
    ncclUniqueId u;
    ncclResult_t r = ncclGetUniqueId(&u);
    if (r != ncclSuccess)
        hy_die(HY_EXIT_FAIL, "NCCL: ncclGetUniqueId failed: %s (%s)", ncclGetErrorString(r),
               LAST_ERROR(NULL));
    memcpy(id, &u, HY_DIST_ID_BYTES);
}

extern "C" void hy_dist_init(int rank, int world, const unsigned char id[HY_DIST_ID_BYTES],
                             int device) {
    HY_CHECK(!g_comm, "hy_dist_init: already initialised (rank %d of %d)", g_rank, g_world);
    HY_REQUIRE(world >= 1 && rank >= 0 && rank < world,
               "hy_dist_init: rank %d of world %d (expected 0 <= rank < world)", rank, world);
    g_rank = rank;
    g_world = world;
    g_timeout = hy_dist_timeout_s();
    CUDA_CHECK(cudaSetDevice(device));
    ncclUniqueId u;
    memcpy(&u, id, HY_DIST_ID_BYTES);
    double t0 = now_s();
#if HY_NCCL_NONBLOCKING
    ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
    cfg.blocking = 0;
    ncclResult_t r = ncclCommInitRankConfig(&g_comm, world, u, rank, &cfg);
    if (r != ncclSuccess && r != ncclInProgress) {
        g_comm = NULL;
        FAIL("NCCL: joining the communicator failed: %s (%s)", ncclGetErrorString(r),
             LAST_ERROR(NULL));
    }
    settle_at(__FILE__, __LINE__, r, "joining the NCCL communicator", t0);
#else
    // Old NCCL: the start-up rendezvous blocks (no timeout there).
    ncclResult_t r = ncclCommInitRank(&g_comm, world, u, rank);
    if (r != ncclSuccess) {
        g_comm = NULL;
        FAIL("NCCL: ncclCommInitRank failed: %s", ncclGetErrorString(r));
    }
#endif
    CUDA_CHECK(cudaStreamCreateWithFlags(&g_stream, cudaStreamNonBlocking));
    CUDA_CHECK(cudaEventCreateWithFlags(&g_ready, cudaEventDisableTiming));
    CUDA_CHECK(cudaMalloc(&g_scalars, HY_DIST_MAX_SCALARS * sizeof(double)));
    CUDA_CHECK(cudaMalloc(&g_token, sizeof(float)));
    CUDA_CHECK(cudaMemset(g_token, 0, sizeof(float)));
    // Everyone has joined only when a first collective completes.
    hy_dist_barrier();
}

#if NCCL_VERSION_CODE < NCCL_VERSION(2, 10, 0)
__global__ void scale_kernel(float *x, size_t n, float s) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        x[i] *= s;
}
#endif

extern "C" void hy_dist_allreduce_mean_f32(float *buf, size_t n, void *stream) {
    if (alone() || n == 0) return;
    cudaStream_t s = after(stream);
#if NCCL_VERSION_CODE >= NCCL_VERSION(2, 10, 0)
    NCCL_CHECK(ncclAllReduce(buf, buf, n, ncclFloat32, ncclAvg, g_comm, s), "all-reduce (mean)");
#else
    NCCL_CHECK(ncclAllReduce(buf, buf, n, ncclFloat32, ncclSum, g_comm, s), "all-reduce (sum)");
    scale_kernel<<<1024, 256, 0, s>>>(buf, n, 1.0f / g_world);
    CUDA_CHECK(cudaGetLastError());
#endif
    WAIT(s, "the all-reduce (mean)");
}

#if NCCL_VERSION_CODE >= NCCL_VERSION(2, 10, 0)
#define REDUCE_MEAN ncclAvg
#else
#define REDUCE_MEAN ncclSum
#endif

// NCCL collectives per group call: a group is fused into few launches; a
// modest cap keeps each within NCCL's per-group limits.
#define HY_DIST_GROUP 128

// One collective per piece, HY_DIST_GROUP at a time, all on the library's
// NCCL stream after `stream`'s work; waits for them when `wait`.
static void per_piece(float *buf, const hy_dist_piece *p, int n, void *stream, int reduce,
                      int wait, const char *what) {
    if (alone() || n == 0) return;
    cudaStream_t s = after(stream);
    for (int first = 0; first < n; first += HY_DIST_GROUP) {
        int last = first + HY_DIST_GROUP < n ? first + HY_DIST_GROUP : n;
        double t0 = now_s();
        NCCL_CHECK(ncclGroupStart(), what);
        for (int i = first; i < last; i++) {
            HY_CHECK(p[i].owner >= 0 && p[i].owner < g_world, "%s: piece %d owned by rank %d of %d",
                     what, i, p[i].owner, g_world);
            float *x = buf + p[i].offset;
            ncclResult_t r = reduce ? ncclReduce(x, x, p[i].numel, ncclFloat32, REDUCE_MEAN,
                                                 p[i].owner, g_comm, s)
                                    : ncclBroadcast(x, x, p[i].numel, ncclFloat32, p[i].owner,
                                                    g_comm, s);
            if (r != ncclSuccess && r != ncclInProgress)
                fail_at(__FILE__, __LINE__, "NCCL: %s (piece %d) failed: %s (%s)", what, i,
                        ncclGetErrorString(r), LAST_ERROR(g_comm));
        }
        settle_at(__FILE__, __LINE__, ncclGroupEnd(), what, t0);
    }
#if NCCL_VERSION_CODE < NCCL_VERSION(2, 10, 0)
    for (int i = 0; reduce && i < n; i++)  // a sum before ncclAvg existed: the owner divides
        if (p[i].owner == g_rank) scale_kernel<<<1024, 256, 0, s>>>(buf + p[i].offset, p[i].numel,
                                                                     1.0f / g_world);
#endif
    if (wait) WAIT(s, what);
}

extern "C" void hy_dist_reduce_mean_to_owners(float *buf, const hy_dist_piece *p, int n,
                                              void *stream) {
    per_piece(buf, p, n, stream, 1, 1, "the reduce of the gradients to their owners");
}

extern "C" void hy_dist_reduce_mean_to_owners_start(float *buf, const hy_dist_piece *p, int n,
                                                    void *stream) {
    per_piece(buf, p, n, stream, 1, 0, "the reduce of the gradients to their owners");
}

extern "C" void hy_dist_wait(void) {
    if (alone()) return;
    WAIT(g_stream, "the collectives started so far");
}

extern "C" void hy_dist_broadcast_from_owners(float *buf, const hy_dist_piece *p, int n,
                                              void *stream) {
    per_piece(buf, p, n, stream, 0, 1, "the broadcast from the owners");
}

static void allreduce_host(void *x, int n, size_t elem, ncclDataType_t type, const char *what) {
    HY_CHECK(n >= 0 && n <= HY_DIST_MAX_SCALARS, "%s: %d values (at most %d)", what, n,
             HY_DIST_MAX_SCALARS);
    if (alone() || n == 0) return;
    cudaStream_t s = after(NULL);  // ordered after the library's work so far
    CUDA_CHECK(cudaMemcpyAsync(g_scalars, x, n * elem, cudaMemcpyHostToDevice, s));
    NCCL_CHECK(ncclAllReduce(g_scalars, g_scalars, n, type, ncclSum, g_comm, s), what);
    WAIT(s, what);
    CUDA_CHECK(cudaMemcpyAsync(x, g_scalars, n * elem, cudaMemcpyDeviceToHost, s));
    CUDA_CHECK(cudaStreamSynchronize(s));  // the collective is done: only the copy remains
}

extern "C" void hy_dist_allreduce_sum_f64(double *x, int n) {
    allreduce_host(x, n, sizeof(double), ncclFloat64, "the all-reduce of scalars (f64)");
}

extern "C" void hy_dist_allreduce_sum_f32(float *x, int n) {
    allreduce_host(x, n, sizeof(float), ncclFloat32, "the all-reduce of scalars (f32)");
}

extern "C" void hy_dist_barrier(void) {
    if (alone()) return;
    cudaStream_t s = after(NULL);
    NCCL_CHECK(ncclAllReduce(g_token, g_token, 1, ncclFloat32, ncclSum, g_comm, s), "barrier");
    WAIT(s, "the barrier");
}

extern "C" void hy_dist_abort(void) {
    if (g_comm) ncclCommAbort(g_comm);
    g_comm = NULL;
    g_rank = 0;
    g_world = 1;
}

extern "C" void hy_dist_destroy(void) {
    if (!g_comm) return;
#if HY_NCCL_NONBLOCKING
    // Every collective was waited for, so finalising has nothing left to flush.
    NCCL_CHECK(ncclCommFinalize(g_comm), "finalising the NCCL communicator");
#endif
    ncclCommDestroy(g_comm);
    g_comm = NULL;
    cudaFree(g_scalars);
    cudaFree(g_token);
    cudaEventDestroy(g_ready);
    cudaStreamDestroy(g_stream);
    g_scalars = NULL;
    g_token = NULL;
    g_rank = 0;
    g_world = 1;
}
