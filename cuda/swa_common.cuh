// swa_common.cuh: what swa.cu (training) and swa_decode.cu (decoding) share:
// raw bf16 storage, its conversions on the device, and the launch check.
// Internal to cuda/ (an anonymous namespace: each .cu file its own copy).
#ifndef HY_CUDA_SWA_COMMON_CUH
#define HY_CUDA_SWA_COMMON_CUH

#include <cuda_bf16.h>
#include <stdint.h>

#include "check.cuh"

namespace {

typedef uint16_t bf16raw;

__device__ __forceinline__ float bf2f(bf16raw x) { return __uint_as_float((uint32_t)x << 16); }
__device__ __forceinline__ bf16raw f2bf_rn(float x) {
    __nv_bfloat16 r = __float2bfloat16_rn(x);
    return *reinterpret_cast<bf16raw *>(&r);
}

}  // namespace

#define SWA_LAUNCHED() CUDA_CHECK(cudaGetLastError())

#endif
