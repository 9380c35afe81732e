// optim_internal.h: pieces shared by optim.c and muon.c; not a public API.
#ifndef HY_OPTIM_INTERNAL_H
#define HY_OPTIM_INTERNAL_H

#include "optim.h"

// Muon's 2-D view of a parameter: (shape[0], numel / shape[0]).
void hy_muon_dims(const hy_param *p, int *rows, int *cols);
// Scratch one Muon update of `p` needs at once.
size_t hy_muon_scratch_bytes(const hy_param *p);
// One Muon update of one parameter: values p, gradient g, momentum buf (all
// the parameter's numel), at this step's lr.
void hy_muon_update(const hy_optim_config *c, const hy_param *prm, float *p, const float *g,
                    float *buf, float lr, hy_arena *scratch);

#endif
