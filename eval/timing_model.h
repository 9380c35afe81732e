// timing_model.h: the model the timing and memory claims measure.
//
// linear_complexity, constant_state and cost_at_long_context time a
// randomly initialised model (speed and memory do not depend on the
// weights). It is small on purpose: a narrow model makes the dense model's
// quadratic attention term dominate at lengths a CPU can reach, which is
// what the complexity claim has to expose.
#ifndef HY_EVAL_TIMING_MODEL_H
#define HY_EVAL_TIMING_MODEL_H

#include "../autograd/arena.h"
#include "../layers/config.h"
#include "claims.h"

// Byte vocabulary, 2 layers (GDN, SWA), window 64, DeltaNet chunk 64. On
// the CPU d_model 64 with 2 heads of 32; on the GPU, whose kernels need
// heads of 64, d_model 128 with 2 heads of 64.
hy_model_config hy_timing_config(hy_device dev);
// "vocab 256, d_model 64, 2 layers (gdn,swa), 2 heads x 32, window 64"
const char *hy_timing_config_text(const hy_model_config *c);

#endif
