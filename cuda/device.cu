// device.cu: device query and raw device memory for the arenas.
#include <stdio.h>
#include <string.h>

#include "check.cuh"
#include "hy_cuda.h"

extern "C" int hy_cuda_built(void) { return 1; }

extern "C" int hy_cuda_device_count(void) {
    int n = 0;
    // No driver or no device is not an error here: it means "no GPU".
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return n;
}

extern "C" int hy_cuda_sm_count(void) {
    if (hy_cuda_device_count() == 0) return 0;
    int dev = 0, n = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev));
    return n;
}

extern "C" const char *hy_cuda_device_info(int device, char *buf, size_t n) {
    cudaDeviceProp p;
    CUDA_CHECK(cudaGetDeviceProperties(&p, device));
    snprintf(buf, n, "%s (sm_%d%d, %.1f GiB, %d SMs)", p.name, p.major, p.minor,
             p.totalGlobalMem / 1073741824.0, p.multiProcessorCount);
    return buf;
}

extern "C" void hy_cuda_set_device(int device) { CUDA_CHECK(cudaSetDevice(device)); }

extern "C" const char *hy_cuda_versions(char *buf, size_t n) {
    int rt = 0, drv = 0;
    cudaRuntimeGetVersion(&rt);
    cudaDriverGetVersion(&drv);  // 0 without a driver
    cudaGetLastError();
    if (drv)
        snprintf(buf, n, "runtime %d.%d, driver %d.%d", rt / 1000, rt % 1000 / 10, drv / 1000,
                 drv % 1000 / 10);
    else
        snprintf(buf, n, "runtime %d.%d, no driver", rt / 1000, rt % 1000 / 10);
    return buf;
}

extern "C" size_t hy_cuda_mem_in_use(void) {
    size_t free_b = 0, total = 0;
    CUDA_CHECK(cudaMemGetInfo(&free_b, &total));
    return total - free_b;
}

extern "C" void *hy_cuda_malloc(size_t bytes) {
    void *p = NULL;
    cudaError_t err = cudaMalloc(&p, bytes);
    if (err != cudaSuccess)
        hy_die(HY_EXIT_FAIL, "CUDA: cannot reserve %.2f MiB of device memory: %s",
               bytes / 1048576.0, cudaGetErrorString(err));
    return p;
}

extern "C" void hy_cuda_free(void *p) { CUDA_CHECK(cudaFree(p)); }

// Device memory only: the fill and the device-to-device copy below are queued on this
// thread's default stream (in order with the kernels, as the synchronous calls were for device
// memory), so that a CUDA graph can record them.
extern "C" void hy_cuda_memset(void *p, int value, size_t bytes) {
    CUDA_CHECK(cudaMemsetAsync(p, value, bytes, cudaStreamPerThread));
}

extern "C" void hy_cuda_memcpy_h2d(void *dst, const void *src, size_t bytes) {
    CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
}

extern "C" void hy_cuda_memcpy_d2h(void *dst, const void *src, size_t bytes) {
    CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
}

extern "C" void hy_cuda_memcpy_d2d(void *dst, const void *src, size_t bytes) {
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, cudaStreamPerThread));
}

extern "C" void hy_cuda_synchronize(void) { CUDA_CHECK(cudaDeviceSynchronize()); }

// ---------------------------------------------------------------- host memory and events
extern "C" void *hy_cuda_host_alloc(size_t bytes) {
    void *p = NULL, *dev = NULL;
    CUDA_CHECK(cudaHostAlloc(&p, bytes ? bytes : 1, cudaHostAllocMapped));
    CUDA_CHECK(cudaHostGetDevicePointer(&dev, p, 0));
    HY_CHECK(dev == p, "mapped host memory has another address on the device (no unified "
                       "addressing)");
    memset(p, 0, bytes);
    return p;
}

extern "C" void hy_cuda_host_free(void *p) {
    if (p) CUDA_CHECK(cudaFreeHost(p));
}

extern "C" void *hy_cuda_event_new(void) {
    cudaEvent_t e = NULL;
    CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    return (void *)e;
}

extern "C" void hy_cuda_event_record(void *ev) {
    CUDA_CHECK(cudaEventRecord((cudaEvent_t)ev, cudaStreamPerThread));
}

extern "C" void hy_cuda_event_wait(void *ev) { CUDA_CHECK(cudaEventSynchronize((cudaEvent_t)ev)); }

extern "C" void hy_cuda_event_free(void *ev) {
    if (ev) CUDA_CHECK(cudaEventDestroy((cudaEvent_t)ev));
}
