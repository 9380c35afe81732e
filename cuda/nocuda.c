// nocuda.c: the CUDA entry points of a build without CUDA. Querying says
// "no GPU"; anything that needs one stops with a clear error.
#include <stdio.h>

#include "../autograd/check.h"
#include "hy_cuda.h"

#define NO_CUDA() \
    hy_die(HY_EXIT_USAGE, "this build has no CUDA support (configure with nvcc present and -DHYDRA_CUDA=ON)")

int hy_cuda_built(void) { return 0; }
int hy_cuda_device_count(void) { return 0; }
const char *hy_cuda_device_info(int device, char *buf, size_t n) {
    (void)device;
    snprintf(buf, n, "none");
    return buf;
}
void hy_cuda_set_device(int device) { (void)device; NO_CUDA(); }
void *hy_cuda_malloc(size_t bytes) { (void)bytes; NO_CUDA(); }
void hy_cuda_free(void *p) { (void)p; NO_CUDA(); }
void hy_cuda_memset(void *p, int v, size_t b) { (void)p; (void)v; (void)b; NO_CUDA(); }
void hy_cuda_memcpy_h2d(void *d, const void *s, size_t b) { (void)d; (void)s; (void)b; NO_CUDA(); }
void hy_cuda_memcpy_d2h(void *d, const void *s, size_t b) { (void)d; (void)s; (void)b; NO_CUDA(); }
void hy_cuda_memcpy_d2d(void *d, const void *s, size_t b) { (void)d; (void)s; (void)b; NO_CUDA(); }
void hy_cuda_synchronize(void) { NO_CUDA(); }
