// GPU smoke tests: device query and a device arena round trip. Skipped
// (exit 77) when there is no GPU or the build has no CUDA.
#include <stdlib.h>
#include <string.h>

#include "../autograd/tensor.h"
#include "../cuda/hy_cuda.h"
#include "harness.h"

static void need_gpu(void) {
    if (!hy_cuda_built()) hy_test_skip("built without CUDA");
    if (hy_cuda_device_count() == 0) hy_test_skip("no GPU");
}

HY_TEST(gpu_device_query, "gpu") {
    need_gpu();
    char info[256];
    for (int d = 0; d < hy_cuda_device_count(); d++)
        printf("  GPU %d: %s\n", d, hy_cuda_device_info(d, info, sizeof info));
    HY_ASSERT(strlen(info) > 0, "device info");
}

HY_TEST(gpu_arena_round_trip, "gpu") {
    need_gpu();
    hy_arena dev;
    hy_arena_init(&dev, "acts", HY_CUDA, (size_t)8 << 20);
    hy_tensor *t = hy_new2(&dev, HY_F32, 37, 101, "x");  // odd sizes
    HY_ASSERT(t->device == HY_CUDA, "device tensor");
    int64_t n = hy_numel(t);
    float *h = (float *)malloc(n * sizeof(float)), *back = (float *)malloc(n * sizeof(float));
    for (int64_t i = 0; i < n; i++) h[i] = (float)i * 0.5f - 3.0f;
    hy_cuda_memcpy_h2d(t->data, h, hy_nbytes(t));
    hy_tensor *z = hy_zeros_like(&dev, t, "z");
    hy_cuda_memcpy_d2h(back, z->data, hy_nbytes(z));
    for (int64_t i = 0; i < n; i++) HY_ASSERT(back[i] == 0.0f, "zeros_like at %lld", (long long)i);
    hy_cuda_memcpy_d2d(z->data, t->data, hy_nbytes(t));
    hy_cuda_memcpy_d2h(back, z->data, hy_nbytes(z));
    HY_ASSERT(memcmp(h, back, n * sizeof(float)) == 0, "device copy round trip");
    hy_arena_report(&dev, stdout);
    free(h);
    free(back);
    hy_arena_free(&dev);
}
