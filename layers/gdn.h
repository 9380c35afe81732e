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

// GDN's input stage: q, k, v (B, T, H D) from the qkv projection (B, T, 3 H D): the causal short
// conv (as hy_short_conv: w (3 H D, 1, K) or (3 H D, K) f32, b (3 H D) or NULL, the cache
// (B, 3 H D, K-1) or NULL), SiLU, the split into thirds, then q and k L2-normalised per head
// of D (as hy_l2norm_heads with eps) when norm_qk. CPU: those ops in turn, each recorded on the
// tape (the reference). GPU: one op, bf16 outputs, the intermediates kept in fp32.
void hy_gdn_qkv(hy_tape *t, hy_tensor *qkv, hy_tensor *w, hy_tensor *b, const hy_tensor *cache,
                int H, int D, int norm_qk, float eps, hy_tensor *out[3]);

// GDN's gates: ab (..., 2 H), the gate projection -> alpha = sigmoid(ab[..., :H]) and beta =
// sigmoid(ab[..., H:]) (..., H). CPU: hy_slice_last and hy_sigmoid (the reference); GPU: one op,
// f32 outputs (as hy_sigmoid's on the GPU).
void hy_gdn_gates(hy_tape *t, hy_tensor *ab, int H, hy_tensor **alpha, hy_tensor **beta);

#endif
