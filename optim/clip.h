// clip.h: global gradient norm, clipping and a finiteness check over the
// whole parameter table (host tables; the CUDA versions live in cuda/).
#ifndef HY_CLIP_H
#define HY_CLIP_H

#include "../autograd/params.h"

// sqrt(sum of g^2) over every gradient, accumulated in double.
float hy_grad_norm(const hy_param_table *t);
// Returns the norm before clipping; when max_norm > 0 and norm > max_norm,
// scales every gradient by max_norm / norm. A non-finite norm is returned
// as is and nothing is scaled: the caller skips the step and reports it.
float hy_clip_grad_norm(hy_param_table *t, float max_norm);
// 1 when every gradient is finite (no NaN or infinity).
int hy_grads_finite(const hy_param_table *t);

#endif
