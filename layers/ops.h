// ops.h: the basic differentiable ops.
//
// Each op checks its inputs (one clear error naming the op and the shapes),
// computes its forward on the inputs' device, and, when the tape records,
// saves what its hand-written backward needs. The CPU versions are the
// fp32 references every other backend is tested against. On the GPU
// (DESIGN section 2) float activations are bf16, parameters fp32 (with a
// bf16 copy for the GEMMs) and every gradient fp32.
//
// Shapes: "..." is any number of leading dimensions (flattened to rows).
#ifndef HY_OPS_H
#define HY_OPS_H

#include "../autograd/tape.h"

// Embedding lookup. weight (V, D), ids (...) i32 -> (..., D).
// Rows equal to padding_idx get no gradient from the lookup (as in PyTorch's
// padding_idx); padding_idx < 0 means none. An id outside [0, V) is an error.
hy_tensor *hy_embedding(hy_tape *t, hy_tensor *weight, hy_tensor *ids, int padding_idx);

// y = x W^T (+ b). x (..., in), w (out, in), b (out) or NULL -> (..., out).
hy_tensor *hy_linear(hy_tape *t, hy_tensor *x, hy_tensor *w, hy_tensor *b);

// y = x / sqrt(mean(x^2) + eps) * w. x (..., D), w (D) -> (..., D).
hy_tensor *hy_rmsnorm(hy_tape *t, hy_tensor *x, hy_tensor *w, float eps);

// The residual add and the norm after it: returns rmsnorm(a + b, w), and a + b in *sum.
// The tape records hy_add then hy_rmsnorm (the same gradients); on the GPU one kernel
// computes both (hy_cuda_add_rmsnorm_fwd, the bits of the two ops).
hy_tensor *hy_add_rmsnorm(hy_tape *t, hy_tensor *a, hy_tensor *b, hy_tensor *w, float eps,
                          hy_tensor **sum);

// SwiGLU activation: gv (..., 2H) = [gate | value] -> silu(gate) * value (..., H).
hy_tensor *hy_swiglu(hy_tape *t, hy_tensor *gv);

// Elementwise, same shapes: a + b (the residual add), a * b.
hy_tensor *hy_add(hy_tape *t, hy_tensor *a, hy_tensor *b);
// For ops that fuse the add with what follows it (hy_add_rmsnorm): record y = a + b, which
// the caller computed; whether node n is such an add; and, in backward, from the op that
// reads the add's output first in the forward (so adds the last part of its gradient, just
// before the add's backward), the bf16 gradient buffer of the input that takes its gradient
// rounded (hy_grad_out_bf16), to be written whole by that op: the add's backward then skips
// that rounding pass. NULL when neither input takes one.
void hy_add_record(hy_tape *t, hy_tensor *a, hy_tensor *b, hy_tensor *y);
int hy_is_add_node(const hy_node *n);
void *hy_add_branch_grad_bf16(hy_tape *t, hy_node *add);
hy_tensor *hy_mul(hy_tape *t, hy_tensor *a, hy_tensor *b);

// Elementwise activations. On the GPU sigmoid returns f32 (it makes the GDN
// gates, which feed the fp32 recurrence); every other op returns bf16 there.
hy_tensor *hy_silu(hy_tape *t, hy_tensor *x);
hy_tensor *hy_sigmoid(hy_tape *t, hy_tensor *x);

// The gate y * silu(g) (GDN's output gate), same shapes. CPU: hy_mul and
// hy_silu (the reference); GPU: one op, rounded once.
hy_tensor *hy_silu_gate(hy_tape *t, hy_tensor *y, hy_tensor *g);

// Per-head L2 normalisation: x (..., H * head_dim), each head's vector
// divided by max(||x||, eps) (PyTorch's F.normalize; eps 1e-12 there).
hy_tensor *hy_l2norm_heads(hy_tape *t, hy_tensor *x, int head_dim, float eps);

// Causal depthwise convolution with K taps plus bias, no activation.
// x (B, T, C), w (C, 1, K) or (C, K), b (C) -> (B, T, C):
//   y[b,t,c] = b[c] + sum_j w[c,j] * x[b, t - (K-1) + j, c]
// where positions before 0 read `cache` (B, C, K-1) if given, else zero.
// The cache gets no gradient.
hy_tensor *hy_short_conv(hy_tape *t, hy_tensor *x, hy_tensor *w, hy_tensor *b,
                         const hy_tensor *cache);

// Rotary embedding, split-half form, on x (B, T, H, D) with D even:
//   x1 = x[..., :D/2], x2 = x[..., D/2:], theta_i = pos * base^(-2i/D)
//   y = [x1 cos - x2 sin, x2 cos + x1 sin], pos = pos0 + t.
hy_tensor *hy_rope(hy_tape *t, hy_tensor *x, int64_t pos0, float base);

// Columns [start, start + len) of the last dimension, as a new contiguous
// tensor: x (..., N) -> (..., len). Used to split fused projections.
hy_tensor *hy_slice_last(hy_tape *t, hy_tensor *x, int64_t start, int64_t len);

// Mean softmax cross-entropy. logits (..., V) f32, targets (...) i32 -> (1).
// Targets equal to ignore_index are skipped (and excluded from the mean);
// any other target outside [0, V) is an error. All ignored -> loss 0.
hy_tensor *hy_cross_entropy(hy_tape *t, hy_tensor *logits, hy_tensor *targets,
                            int ignore_index);

// The attention layer's input split: out[0..2] = q, k, v (B, T, H, D) from
// qkv (B, T, 3 H D), q and k rotated (rope at pos0), v as is: on the CPU
// slice_last, a reshape and rope; on the GPU one op each way.
void hy_qkv_rope(hy_tape *t, hy_tensor *qkv, int64_t H, int64_t D, int64_t pos0, float base,
                 hy_tensor *out[3]);

// Tied LM head and mean cross-entropy: loss (1) f32 = CE(x E^T, targets),
// x (..., d), E (V, d), targets (...) i32. On the CPU it is hy_linear and
// hy_cross_entropy, and *logits (if not NULL) receives the logits (..., V).
// On the GPU it is one fused op that never materialises the logits of the
// whole batch (*logits = NULL); a bad target turns the loss NaN there
// instead of stopping (the data loaders check ids first).
hy_tensor *hy_head_loss(hy_tape *t, hy_tensor *x, hy_tensor *E, hy_tensor *targets,
                        int ignore_index, hy_tensor **logits);
// Rows of logits the GPU form computes at a time for `rows` rows and vocab V
// (hydra-bench times the head with the same chunks).
int hy_head_loss_chunk_rows(int rows, int V);

// Mean of all elements -> (1). f32 input on both devices (losses).
hy_tensor *hy_mean(hy_tape *t, hy_tensor *x);

#endif
