// train_gpu.h: the GPU side of hydra-train, and the device choice that
// hydra-train and hydra-generate share.
//
// A GPU run keeps the host model and the host hy_optimizer: they are the
// staging copies that checkpoints are written from and loaded into, so a
// checkpoint is the same file whichever device wrote it and loads on either.
// The device holds the working copy: fp32 master weights, fp32 gradients,
// bf16 copies for the GEMMs, and the optimizer's m and v laid out exactly as
// the CPU optimizer's (hy_cuda_optim_ranges), so one plain copy moves the
// state between the two.
#ifndef HY_TRAIN_GPU_H
#define HY_TRAIN_GPU_H

#include <stddef.h>

#include "../autograd/arena.h"
#include "../layers/model.h"
#include "../optim/optim.h"

// The device for `want` ("auto", "cpu" or "cuda") and a model of this
// architecture and config. cuda without a CUDA build, a GPU, or a model the
// kernels support (head_dim 64 or 128; DeltaNet chunk 64) is a usage error
// (exit 2) that starts with `what` (e.g. "run.ini: train.device = cuda").
// auto takes the GPU when all three hold, else the CPU, with the reason in
// `why` (n bytes; "" when the machine has no GPU worth mentioning).
hy_device hy_device_choose(const char *want, hy_arch arch, const hy_model_config *m,
                           const char *what, char *why, size_t n);

struct hy_cuda_optim_plan;

typedef struct {
    hy_model model;                     // the device copy of the host model
    hy_arena values, grads, half;       // CUDA: fp32 weights, fp32 gradients, bf16 copies
    hy_arena state;                     // CUDA: optimizer m, v, scratch and the norm
    struct hy_cuda_optim_plan *plan;    // the optimizer's per-parameter ranges
    float *m, *v;                       // (numel), (v_numel): the host optimizer's layout
    size_t v_numel;
    void *scratch;                      // Newton-Schulz buffers and norm partials
    size_t scratch_bytes;
    float *norm;                        // (1) the gradient norm before clipping
} hy_train_gpu;

// The device copy of `host` (initialised) and zeroed optimizer state for
// `opt` (the host optimizer over host->params, whose layout it mirrors).
void hy_train_gpu_init(hy_train_gpu *g, const hy_model *host, const hy_optimizer *opt);
void hy_train_gpu_free(hy_train_gpu *g);
// The device arenas, one line each (hy_arena_report).
void hy_train_gpu_report(const hy_train_gpu *g, FILE *f);

// hy_clip_grad_norm() on the device: returns the norm before clipping.
float hy_train_gpu_clip(hy_train_gpu *g, float max_norm);
// hy_optim_step() on the device; opt->step advances (it is checkpointed).
void hy_train_gpu_step(hy_train_gpu *g, hy_optimizer *opt, float lr_mult);
// Device -> host (before a checkpoint) and host -> device (after a load):
// the values and the optimizer's m and v.
void hy_train_gpu_download(const hy_train_gpu *g, hy_model *host, hy_optimizer *opt);
void hy_train_gpu_upload(hy_train_gpu *g, const hy_model *host, const hy_optimizer *opt);
// Testing hook: a NaN in the first element of parameter `param`.
void hy_train_gpu_poison(hy_train_gpu *g, int param);

#endif
