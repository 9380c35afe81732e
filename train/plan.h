// plan.h: the device memory a training run reserves for its tape, from the
// run config alone (the trainer and hydra-bench reserve the same).
#ifndef HY_PLAN_H
#define HY_PLAN_H

#include <stddef.h>

#include "run_config.h"

// Bytes for the activation arena (elem = 2: the GPU's bf16 activations) or
// the scratch arena (elem = 4: f32 activation gradients); on the CPU both
// use elem = 4. An estimate per token and block with a quarter's margin;
// train.recompute keeps one block's activations plus every block's input
// and output.
size_t hy_plan_activations(const hy_run_config *c, size_t elem);

// Bytes the GPU's GDN forward keeps in the activation arena for its
// backward (hy_cuda_gdn_saved_bytes per GDN layer; one layer's with
// train.recompute, which replays a block at a time). 0 for the dense model.
size_t hy_plan_gdn_saved(const hy_run_config *c);

#endif
