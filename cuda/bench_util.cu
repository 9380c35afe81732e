// bench_util.cu: CUDA events and memory figures for hydra-bench (see hy_cuda_bench.h).
#include <stdlib.h>

#include "check.cuh"
#include "hy_cuda_bench.h"

struct hy_cuda_events {
    int n;
    cudaEvent_t *ev;
};

extern "C" hy_cuda_events *hy_cuda_events_create(int n) {
    HY_REQUIRE(n >= 1, "hy_cuda_events_create: n must be >= 1, got %d", n);
    hy_cuda_events *e = (hy_cuda_events *)hy_xcalloc(1, sizeof *e);
    e->n = n;
    e->ev = (cudaEvent_t *)hy_xcalloc((size_t)n, sizeof(cudaEvent_t));
    for (int i = 0; i < n; i++) CUDA_CHECK(cudaEventCreate(&e->ev[i]));
    return e;
}

extern "C" void hy_cuda_events_destroy(hy_cuda_events *e) {
    if (!e) return;
    for (int i = 0; i < e->n; i++) CUDA_CHECK(cudaEventDestroy(e->ev[i]));
    free(e->ev);
    free(e);
}

static void check_index(const hy_cuda_events *e, int i) {
    HY_REQUIRE(i >= 0 && i < e->n, "hy_cuda_events: event %d of %d", i, e->n);
}

extern "C" void hy_cuda_events_record(hy_cuda_events *e, int i) {
    check_index(e, i);
    CUDA_CHECK(cudaEventRecord(e->ev[i], 0));
}

extern "C" float hy_cuda_events_ms(hy_cuda_events *e, int i, int j) {
    check_index(e, i);
    check_index(e, j);
    CUDA_CHECK(cudaEventSynchronize(e->ev[j]));
    float ms = 0.f;
    CUDA_CHECK(cudaEventElapsedTime(&ms, e->ev[i], e->ev[j]));
    return ms;
}

extern "C" void hy_cuda_mem_info(size_t *free_bytes, size_t *total_bytes) {
    size_t f = 0, t = 0;
    CUDA_CHECK(cudaMemGetInfo(&f, &t));
    *free_bytes = f;
    *total_bytes = t;
}
