// hy_cuda_bench.h: the two things hydra-bench needs from CUDA that the op
// headers do not give: CUDA events that can be recorded at arbitrary points
// of a step (between tape nodes, around a forward), and the device's memory
// in use. Plain C; cuda/bench_util.cu implements it, cuda/nocuda.c stubs it.
//
// Events are recorded on the legacy default stream, which every kernel of
// this project uses (stream NULL), so the time between two events is the
// GPU time of everything launched between the two records, idle gaps (the
// GPU waiting for the host to launch) included.
#ifndef HY_CUDA_BENCH_H
#define HY_CUDA_BENCH_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct hy_cuda_events hy_cuda_events;

// n events (set-up time: allocates), and their release.
hy_cuda_events *hy_cuda_events_create(int n);
void hy_cuda_events_destroy(hy_cuda_events *e);
// Record event i (0 <= i < n) on the default stream now; asynchronous.
void hy_cuda_events_record(hy_cuda_events *e, int i);
// Milliseconds from event i to event j, both recorded; waits for event j.
float hy_cuda_events_ms(hy_cuda_events *e, int i, int j);

// cudaMemGetInfo on the current device: free and total bytes. Device-wide:
// "total - free" includes this process's CUDA context and any other
// process on the GPU.
void hy_cuda_mem_info(size_t *free_bytes, size_t *total_bytes);

#ifdef __cplusplus
}
#endif

#endif
