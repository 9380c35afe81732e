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
//
// Data parallel (world > 1), ZeRO-1: each parameter is owned by one rank
// (train/zero.h). A step reduces each gradient to its owner (mean over the
// ranks), takes the gradient norm of all the ranks' shards together, lets
// each owner update its parameters (AdamW, or Muon on whole matrices) with
// optimizer state kept for its own parameters only (m and v compacted),
// then broadcasts the updated values from the owners: every rank ends the
// step with the same weights. Checkpoints gather the state to full tensors
// in the host optimizer (hy_train_gpu_download) on every rank, so the file
// does not depend on the number of ranks and resumes on any.
#ifndef HY_TRAIN_GPU_H
#define HY_TRAIN_GPU_H

#include <stddef.h>

#include "../autograd/arena.h"
#include "../cuda/hy_cuda_dist.h"
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
    struct hy_cuda_optim_plan *plan;    // the optimizer's ranges: this rank's parameters
    float *m, *v;                       // (m_numel), (v_numel): this rank's state
    size_t m_numel, v_numel;            // world 1: the host optimizer's layout and sizes
    // Data parallel: this process is rank `rank` of `world` (0 of 1 alone).
    int rank, world;
    int *owner;                         // (n) the rank that owns each parameter
    hy_dist_piece *pieces;              // (n) each parameter in values/grads/host m, and owner
    hy_dist_piece *v_pieces;            // (n_v) AdamW parameters in the host optimizer's v
    int *v_param;                       // (n_v) the parameter of each v piece
    int n_v;
    size_t *m_at, *v_at;                // (n) offsets in this rank's m, v (SIZE_MAX: not here)
    // Overlap: block b's parameters are bucket[b_start[b] .. b_start[b + 1])
    // and the others (embedding, final norm) bucket n_blocks; a bucket's
    // reduce starts when the backward pass reaches block b's mark.
    hy_dist_piece *bucket;
    int *b_start;                       // (n_blocks + 2)
    int n_blocks;
    unsigned char *started;             // (n_blocks + 1) this step's reduce is queued
    int armed;                          // marks start reduces (the step's last backward)
    void *scratch;                      // Newton-Schulz buffers and norm partials
    size_t scratch_bytes;
    float *norm;                        // (1) the gradient norm before clipping
} hy_train_gpu;

// The device copy of `host` (initialised) and zeroed optimizer state for
// `opt` (the host optimizer over host->params, whose layout it mirrors).
void hy_train_gpu_init(hy_train_gpu *g, const hy_model *host, const hy_optimizer *opt);
// The same for rank `rank` of `world` data-parallel ranks (hy_dist_init
// done): the state of this rank's parameters only.
void hy_train_gpu_init_dp(hy_train_gpu *g, const hy_model *host, const hy_optimizer *opt,
                          int rank, int world);
void hy_train_gpu_free(hy_train_gpu *g);
// The device arenas, one line each (hy_arena_report).
void hy_train_gpu_report(const hy_train_gpu *g, FILE *f);

// Data parallel: each gradient's mean over the ranks, on its owner (the
// other ranks' copies are left stale); waits for it. Nothing with one rank.
// Overlap with the backward pass: hy_train_gpu_attach() sets the tape's mark
// hook, and while armed (during the backward of the step's last
// micro-batch) each block's reduce starts as soon as its gradients are
// final; this call then starts the rest and waits for all.
void hy_train_gpu_reduce_grads(hy_train_gpu *g);
void hy_train_gpu_attach(hy_train_gpu *g, hy_tape *t);
void hy_train_gpu_arm(hy_train_gpu *g, int armed);
// hy_clip_grad_norm() on the device: returns the norm before clipping (of
// the whole model's averaged gradient, whichever rank owns what). One GPU:
// the clipping itself happens in the next hy_train_gpu_step, which reads
// each gradient clipped (the gradient buffer keeps the unclipped values).
float hy_train_gpu_clip(hy_train_gpu *g, float max_norm);
// hy_optim_step() on the device, then (data parallel) the owners' updated
// values to every rank; opt->step advances (it is checkpointed).
void hy_train_gpu_step(hy_train_gpu *g, hy_optimizer *opt, float lr_mult);
// Device -> host (before a checkpoint) and host -> device (after a load):
// the values and the optimizer's m and v. Data parallel: collective (every
// rank calls it; each receives the whole state), and the device gradients
// serve as staging, so they are lost (call it between steps).
void hy_train_gpu_download(hy_train_gpu *g, hy_model *host, hy_optimizer *opt);
void hy_train_gpu_upload(hy_train_gpu *g, const hy_model *host, const hy_optimizer *opt);
// The dense bf16 tensor-core peak in TFLOP/s of a GPU by its name (as CUDA
// reports it), from the vendor's data sheets: H100 SXM and H200 989, H100
// PCIe 756, A100 312, L40S 362; 0 when not known. For MFU.
double hy_gpu_peak_bf16_tflops(const char *name);
// Testing hook: a NaN in the first element of parameter `param`.
void hy_train_gpu_poison(hy_train_gpu *g, int param);

#endif
