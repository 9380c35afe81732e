// hy_cuda.h: the C face of the CUDA backend.
//
// Everything CUDA lives in cuda/*.cu behind these plain C declarations, so
// no other folder needs a CUDA header or a C++ compiler. A build without
// CUDA links cuda/nocuda.c instead: it reports no devices, and any call that
// needs one is a clear error rather than a silent fallback.
#ifndef HY_CUDA_H
#define HY_CUDA_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

// 1 when this binary was built with CUDA.
int hy_cuda_built(void);
// Number of usable GPUs; 0 without a driver, a device, or a CUDA build.
int hy_cuda_device_count(void);
// Multiprocessors of the current GPU (132 on an H200); 0 without a GPU.
int hy_cuda_sm_count(void);
// "NVIDIA H200 (sm_90, 139.8 GiB, 132 SMs)" into buf; returns buf.
const char *hy_cuda_device_info(int device, char *buf, size_t n);
void hy_cuda_set_device(int device);
// "runtime 13.0, driver 13.0" (the CUDA runtime linked and the driver's
// CUDA version, "no driver" without one) into buf; returns buf.
const char *hy_cuda_versions(char *buf, size_t n);
// Bytes of the current GPU's memory in use (total - free, as cudaMemGetInfo
// reports: this process's allocations and context, and any other process's).
size_t hy_cuda_mem_in_use(void);

void *hy_cuda_malloc(size_t bytes);
void hy_cuda_free(void *p);
// memset and memcpy_d2d: device memory, queued on the default stream (a graph records them).
void hy_cuda_memset(void *p, int value, size_t bytes);
void hy_cuda_memcpy_h2d(void *dst, const void *src, size_t bytes);
void hy_cuda_memcpy_d2h(void *dst, const void *src, size_t bytes);
void hy_cuda_memcpy_d2d(void *dst, const void *src, size_t bytes);
void hy_cuda_synchronize(void);
// CUDA graphs: record every launch this thread makes on the default stream
// between begin and end (nothing runs meanwhile; no copy to or from the
// host may happen in between), then replay it as one launch. end returns the
// instantiated graph.
void hy_cuda_capture_begin(void);
void *hy_cuda_capture_end(void);
void hy_cuda_graph_launch(void *graph);
void hy_cuda_graph_destroy(void *graph);
// Pinned host memory that kernels may write directly (mapped: the same
// address on both sides), zeroed; hy_cuda_host_free releases it.
void *hy_cuda_host_alloc(size_t bytes);
void hy_cuda_host_free(void *p);
// Events on the default stream: record marks the work queued so far; wait
// returns once that work has run (its writes to host memory visible).
void *hy_cuda_event_new(void);
void hy_cuda_event_record(void *ev);
void hy_cuda_event_wait(void *ev);
void hy_cuda_event_free(void *ev);

#ifdef __cplusplus
}
#endif

#endif
