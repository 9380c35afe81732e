// bench_kernels.h: the mixer kernels' timings and FLOP counts, shared by `gdn` and `swa`
// (bench_kernels.c) with `train` (model FLOPs) and `step` (the pieces of a step).
#ifndef HY_BENCH_KERNELS_H
#define HY_BENCH_KERNELS_H

#include "../layers/flops.h"  // hy_gdn_flops_per_token, hy_window_pairs

// Median forward and forward + backward ms at (B, T, H, D) on random inputs, after
// `warmup` untimed runs (the SWA timer adds 2 of its own).
void gdn_time(int B, int T, int H, int D, int warmup, int iters, double *fwd, double *fb,
              double *fbr);
void swa_time(int B, int T, int H, int D, int W, int warmup, int iters, double *fwd,
              double *fb);

#endif
