// util_gpu.h: moving test data between the host and the GPU.
#ifndef HY_TEST_GPU_H
#define HY_TEST_GPU_H

#include <stddef.h>

// n bf16 values on the device as host floats (malloc'd).
float *hy_test_from_dev_bf16(const void *dev, size_t n);

#endif
