// bench_model.h: the model of a config for hydra-bench train, step and decode: the config
// loaded and checked, and the model built on the GPU as hydra-train builds it
// (train/trainer.c, build and build_gpu): the host model, its arenas and the host optimizer
// are the staging copies; hy_train_gpu holds the working copy; the tape's acts and scratch
// are CUDA arenas. The data are random tokens in [0, vocab) (4 batches made once, cycled),
// not a data source: this measures the model, not the loader.
#ifndef HY_BENCH_MODEL_H
#define HY_BENCH_MODEL_H

#include <stdint.h>

#include "../autograd/tape.h"
#include "../layers/model.h"
#include "../train/run_config.h"
#include "../train/step_graph.h"
#include "../train/train_gpu.h"
#include "bench_common.h"

typedef struct {
    hy_run_config cfg;
    int B, T;
    hy_model host;
    hy_arena params, grads, optim, stage, acts, scratch;
    hy_optimizer opt;
    hy_train_gpu gpu;
    hy_tape tape;
    hy_step_graph graph;  // train.cuda_graph: gpu_run_fwd_bwd's recording
    hy_schedule sched;
    int32_t *ids, *tgt;  // (4, B, T): tgt is ids shifted by one, as in a text batch
} gpu_run;

// --config FILE is required (usage and exit 2 without it).
void require_config(const char *cmd, opt *o);
// The config file, then --set, then --B / --T, checked; a model the GPU kernels cannot
// run is a clear error (hy_device_choose).
void load_config(hy_run_config *c, const char *cmd, opt *o);

// r->cfg loaded: the model, its arenas, optimizer and tape, and the random batches.
void gpu_run_build(gpu_run *r);
void gpu_run_free(gpu_run *r);
// Two lines: the model and the batch.
void print_model(const gpu_run *r, const char *path);
// The config, parameters, B, T and micro-batches per step as figures.
void run_figures(const gpu_run *r, const char *path);

// Micro-batch `mb` (of the 4 random ones) as (B, T) i32 tensors on the GPU, a fresh tape,
// and the forward: the loss, on the device.
hy_tensor *gpu_run_forward(gpu_run *r, int64_t mb);
// The same and the backward pass, as the trainer runs a micro-batch (replayed as a CUDA
// graph from the second call with train.cuda_graph, step_graph.h): the loss (a wait).
float gpu_run_fwd_bwd(gpu_run *r, int64_t mb);
// The value of a one-value tensor; waits for the GPU.
float tensor_scalar(const hy_tensor *t);

#endif
