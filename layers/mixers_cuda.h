// mixers_cuda.h: the GPU versions of hy_gdn and hy_swa (gdn_cuda.c,
// swa_cuda.c). hy_gdn and hy_swa call them when their inputs live on the
// GPU; arguments and results are those of gdn.h and swa.h, with bf16 q, k,
// v and outputs, fp32 gates and states.
#ifndef HY_MIXERS_CUDA_H
#define HY_MIXERS_CUDA_H

#include "../autograd/tape.h"

hy_tensor *hy_gdn_cuda(hy_tape *t, hy_tensor *q, hy_tensor *k, hy_tensor *v, hy_tensor *alpha,
                       hy_tensor *beta, hy_tensor *S0, int chunk, hy_tensor **S_out);
hy_tensor *hy_swa_cuda(hy_tape *t, hy_tensor *q, hy_tensor *k, hy_tensor *v, const hy_tensor *pk,
                       const hy_tensor *pv, int window);

#endif
