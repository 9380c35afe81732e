// flops.h: the model's FLOPs per trained token, the accounting behind MFU
// (hydra-train's step line on the GPU, hydra-bench).
#ifndef HY_LAYERS_FLOPS_H
#define HY_LAYERS_FLOPS_H

#include "model.h"

// FLOPs per token and head of the gated delta rule's forward, chunk C, head
// size D (the count is at its definition); fwd+bwd = 3 x forward.
double hy_gdn_flops_per_token(int C, int D);
// Scores inside the window over one (b, h): sum over i < T of min(i + 1, W).
double hy_window_pairs(int T, int W);

// Model FLOPs per trained token (forward + backward), the 6N accounting:
//   6 (N - V d)                     every non-embedding parameter, 2 in forward and 4 in
//                                   backward (norm weights, biases and the short conv,
//                                   all tiny, included)
// + 6 d V                           the tied head (the embedding lookup is free)
// + per GDN layer 3 H gdn(C, D)     the chunkwise delta rule
// + per attention layer 3 H 4 D w   Q K^T and P V over the in-window scores, w the mean
//                                   window min(i + 1, W) over the T positions (dense: W = T)
typedef struct {
    double dense, head, gdn, attn, total;
} hy_model_flops;
hy_model_flops hy_model_train_flops(const hy_model *m, int T);

#endif
