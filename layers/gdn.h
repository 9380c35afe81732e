// gdn.h: the gated delta rule (Gated DeltaNet's mixer core), CPU fp32 reference.
//
// Per batch b and head h, with a state S (Dv, Dk) in fp32:
//   S_t = alpha_t S_{t-1} + beta_t (v_t - alpha_t S_{t-1} k_t) k_t^T,   o_t = S_t q_t
// q and k are already L2-normalised by the caller (hy_l2norm_heads); q is not
// scaled. alpha (the decay) and beta (the write strength) are in (0, 1).
//
// hy_gdn runs the chunkwise WY form (training and prefill): cost O(T C D + T D^2)
// per head, memory O(T D) for the outputs. Its backward recomputes the chunk
// start states instead of storing them, so memory stays O(T D + (T/C) D^2)
// per head, never O(T D^2). hy_gdn_step_cpu is the one-token recurrence used
// for decoding; both agree with a float64 token-by-token reference.
#ifndef HY_GDN_H
#define HY_GDN_H

#include "../autograd/tape.h"

// q, k (B, T, H, Dk), v (B, T, H, Dv), alpha, beta (B, T, H), S0 (B, H, Dv, Dk) or NULL (zero state).
// Returns o (B, T, H, Dv). When S_out is not NULL, *S_out receives the final state (B, H, Dv, Dk), which is a
// second output of the same tape node: gradients flowing into it (e.g. from a loss on the state) are propagated.
// chunk >= 1 is the WY chunk length (64 in the model); any T >= 1 is accepted.
// alpha must be >= 0 (0 is treated as 1e-38; the log-space decay needs it positive).
hy_tensor *hy_gdn(hy_tape *t, hy_tensor *q, hy_tensor *k, hy_tensor *v, hy_tensor *alpha, hy_tensor *beta,
                  hy_tensor *S0, int chunk, hy_tensor **S_out);

// One-token recurrence for decoding, in place on S. q, k (B, H, Dk), v (B, H, Dv), alpha, beta (B, H),
// S (B, H, Dv, Dk) updated, o (B, H, Dv) written. Plain host arrays, no tape.
void hy_gdn_step_cpu(int B, int H, int Dk, int Dv, const float *q, const float *k, const float *v,
                     const float *alpha, const float *beta, float *S, float *o);

#endif
