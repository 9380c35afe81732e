// step_graph.h: a micro-batch's forward and backward on one GPU, recorded once
// as a CUDA graph and replayed (train.cuda_graph).
//
// Launched one by one, the ~800 kernels and copies of a training step of
// configs/hydra-115m.ini leave ~1.1 us between one kernel's end and the next
// one's start on an H200, and ~3.9 us around each of cuBLAS's small memsets
// (~1.3 ms of a 42 ms step with nothing running). Every micro-batch runs the
// same kernels on the same addresses: the tape's arenas start from the same
// place after each reset, the parameters and their bound gradients never
// move, and the kernels' choices depend on shapes alone. So the launches of
// one micro-batch are recorded and the recording replayed from then on; only
// the tokens change, and the caller copies them to the same addresses
// before each call.
//
// The first call runs directly: it times the GEMM algorithms and lets the
// kernels set their attributes, work that a recording must not contain. The
// second records (nothing runs while it records) and then launches the
// recording; later calls launch it. A replay adds into the parameters'
// gradients as the direct pass does, so zeroing them and accumulating
// micro-batches stay the caller's. Only for one GPU: data parallel starts
// its reduces from the backward pass.
#ifndef HY_STEP_GRAPH_H
#define HY_STEP_GRAPH_H

#include "../layers/model.h"

typedef struct {
    int on;                     // 0: every call runs forward and backward directly
    long long calls;            // calls so far
    void *exec;                 // the recording (a CUDA graph), NULL before the second call
    const void *ids, *targets;  // where the recording reads the tokens and targets
    int64_t n;                  // and how many (B T)
    const float *loss;          // (1) device: where the recording leaves the loss
} hy_step_graph;

// on: record and replay (a GPU model; 0 runs every call directly, any device).
void hy_step_graph_init(hy_step_graph *g, int on);
void hy_step_graph_free(hy_step_graph *g);

// The forward pass of `m` on (ids, targets) (B, T) and the backward pass from
// its loss on tape `t` (reset, with ids and targets just written), the
// parameters' gradients added to; returns the loss (a wait for the device).
// A replay needs ids and targets at the addresses and of the size the
// recording saw (a usage error otherwise).
float hy_step_graph_run(hy_step_graph *g, hy_model *m, hy_tape *t, hy_tensor *ids,
                        hy_tensor *targets);

#endif
