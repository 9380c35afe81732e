// check.cuh: CUDA error checks that report file and line.
#ifndef HY_CUDA_CHECK_CUH
#define HY_CUDA_CHECK_CUH

#include <cuda_runtime.h>

extern "C" {
#include "../autograd/check.h"
}

#define CUDA_CHECK(call)                                                           \
    do {                                                                           \
        cudaError_t err_ = (call);                                                 \
        if (err_ != cudaSuccess)                                                   \
            hy_die_at(__FILE__, __LINE__, HY_EXIT_FAIL, "CUDA: %s failed: %s", #call, \
                      cudaGetErrorString(err_));                                   \
    } while (0)

#endif
