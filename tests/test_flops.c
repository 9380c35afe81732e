// The FLOP accounting behind MFU (layers/flops.c) on the default 115M
// config, worked out by hand here, and the GPU peak table.
#include <math.h>

#include "../layers/flops.h"
#include "../train/train_gpu.h"
#include "harness.h"

HY_TEST(flops_default_model, "cpu") {
    hy_model_config c = hy_config_default();
    hy_config_finalize(&c, "the default config");
    hy_model m;
    hy_model_build(&m, HY_ARCH_HYDRA, &c);
    const int T = 2048;
    hy_model_flops f = hy_model_train_flops(&m, T);
    // 115,108,056 parameters, of which the tied embedding is 32000 x 768.
    double N = 115108056.0, emb = 32000.0 * 768;
    HY_ASSERT(hy_model_param_count(&m) == 115108056, "parameter count %lld",
              (long long)hy_model_param_count(&m));
    HY_ASSERT_CLOSE(f.dense, 6 * (N - emb), 1e-12, "6 x non-embedding parameters");
    HY_ASSERT_CLOSE(f.head, 6 * emb, 1e-12, "tied head 6 d V");
    // 9 GDN layers of 12 heads, chunk 64, head 64: 3 (10 C D + 6 D^2 + 2 C^2 / 3) a head.
    double gdn = 10.0 * 64 * 64 + 6.0 * 64 * 64 + 2.0 * 64 * 64 / 3.0;
    HY_ASSERT_CLOSE(f.gdn, 9 * 12 * 3 * gdn, 1e-12, "delta-rule cores");
    // 3 SWA layers, window 512 over T = 2048: 512 * 513 / 2 + 1536 * 512 scores a head.
    double pairs = 512.0 * 513 / 2 + 1536.0 * 512;
    HY_ASSERT_CLOSE(hy_window_pairs(T, 512), pairs, 1e-15, "in-window scores");
    HY_ASSERT_CLOSE(f.attn, 3 * 12 * 3 * 4.0 * 64 * pairs / T, 1e-12, "attention in the window");
    HY_ASSERT_CLOSE(f.total, f.dense + f.head + f.gdn + f.attn, 1e-15, "total");
    printf("115M at T = %d: %.4f GFLOP per token (dense %.4f, head %.4f, gdn %.4f, attn %.4f)\n",
           T, f.total / 1e9, f.dense / 1e9, f.head / 1e9, f.gdn / 1e9, f.attn / 1e9);
    hy_model_destroy(&m);
}

HY_TEST(flops_gpu_peaks, "cpu") {
    HY_ASSERT(hy_gpu_peak_bf16_tflops("NVIDIA H200 (sm_90, 139.8 GiB, 132 SMs)") == 989.4, "H200");
    HY_ASSERT(hy_gpu_peak_bf16_tflops("NVIDIA H100 80GB HBM3") == 989.4, "H100 SXM");
    HY_ASSERT(hy_gpu_peak_bf16_tflops("NVIDIA H100 PCIe") == 756.0, "H100 PCIe");
    HY_ASSERT(hy_gpu_peak_bf16_tflops("NVIDIA A100-SXM4-80GB") == 312.0, "A100");
    HY_ASSERT(hy_gpu_peak_bf16_tflops("Tesla T4") == 0 && hy_gpu_peak_bf16_tflops(NULL) == 0,
              "unknown: 0 (no MFU)");
}
