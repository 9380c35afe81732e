// util_gpu.c: see util_gpu.h. (In a build without CUDA the copy is the stub's clear error;
// the GPU tests that call it are not built there.)
#include "util_gpu.h"

#include <stdint.h>
#include <stdlib.h>

#include "../autograd/check.h"
#include "../autograd/tensor.h"
#include "../cuda/hy_cuda.h"

float *hy_test_from_dev_bf16(const void *dev, size_t n) {
    uint16_t *h = (uint16_t *)hy_xmalloc(n * 2);
    hy_cuda_memcpy_d2h(h, dev, n * 2);
    float *f = (float *)hy_xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) f[i] = hy_bf16_to_f32(h[i]);
    free(h);
    return f;
}
