// bench_decode_kernels.h: hydra-bench decode's breakdown of a GPU token by kernel.
#ifndef HY_BENCH_DECODE_KERNELS_H
#define HY_BENCH_DECODE_KERNELS_H

#include "../layers/model.h"

// A table: each kernel of a batch-1 token of m (a GPU model) timed alone, times its launches
// per token, their sum, and, when graph is the state's recorded step, its replay's device
// time per token. Replaying advances the state that recorded the graph.
void bench_decode_breakdown(const hy_model *m, void *graph);

#endif
