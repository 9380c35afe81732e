// tape.h: the autograd tape.
//
// Ops are coarse and fused (a whole RMSNorm, a whole GDN scan). Each op that
// runs with the tape enabled and at least one input that needs a gradient
// records a node: its inputs, outputs, a saved context and a hand-written
// backward. hy_tape_backward() walks the nodes in reverse; each backward
// reads its outputs' gradients with hy_grad() and accumulates (+=) into its
// inputs' gradients obtained with hy_grad_acc().
//
// Gradients live in a side table indexed by tensor slot, never on the
// tensor. Parameter gradients are bound once (hy_tape_bind_grad) to buffers
// in the gradient arena and survive resets, so micro-batches accumulate into
// them; activation gradients come from the scratch arena and are dropped by
// hy_tape_reset().
#ifndef HY_TAPE_H
#define HY_TAPE_H

#include "tensor.h"

#define HY_MAX_IO 8
#define HY_TAPE_CTX_BYTES ((size_t)8 << 20)

typedef struct hy_tape hy_tape;
typedef struct hy_node hy_node;
typedef void (*hy_backward_fn)(hy_tape *tape, hy_node *node);

struct hy_node {
    const char *op;
    hy_tensor *in[HY_MAX_IO];
    int n_in;
    hy_tensor *out[HY_MAX_IO];
    int n_out;
    void *ctx;  // saved context, from the activation arena
    hy_backward_fn backward;
    int is_mark, mark_id;  // a hy_tape_mark() node: no op, the hook is called
};

struct hy_tape {
    hy_arena *acts;     // op outputs and saved contexts
    hy_arena *scratch;  // activation gradients and backward temporaries
    hy_node *nodes;
    int n_nodes, cap_nodes;
    hy_tensor **grads;   // slot -> gradient (same shape as the owner)
    hy_tensor **owners;  // slot -> the tensor that owns the slot
    int n_slots, n_bound, cap_slots;
    hy_arena ctx_host;   // saved contexts (host structs), reset with the tape
    int enabled;         // 0: inference, nothing is recorded
    int backward_done;   // set by backward, cleared by reset
    // Called by backward at each mark (see hy_tape_mark); NULL: no marks.
    void (*on_mark)(void *ctx, int id);
    void *mark_ctx;
};

void hy_tape_init(hy_tape *t, hy_arena *acts, hy_arena *scratch, int max_nodes, int max_slots);
void hy_tape_free(hy_tape *t);

// Gradients of `param` accumulate into `grad` (same shape) across resets.
// Bind every parameter before the first forward.
void hy_tape_bind_grad(hy_tape *t, hy_tensor *param, hy_tensor *grad);

// Record an op. Returns NULL (and marks outputs as needing no gradient) when
// the tape is disabled or no float input needs a gradient: the op then saves
// nothing. Integer inputs never get gradients.
hy_node *hy_tape_record(hy_tape *t, const char *op, hy_backward_fn backward, hy_tensor **in,
                        int n_in, hy_tensor **out, int n_out);
// A mark in the forward pass (recorded only while a hook is set in
// t->on_mark): backward calls on_mark(mark_ctx, id) when it reaches it, that
// is once the backward of every op recorded after the mark has run. The
// model marks the start of each block, so the hook learns when a block's
// parameter gradients are final (data parallel: their reduce can start
// while the backward pass goes on).
void hy_tape_mark(hy_tape *t, int id);
// Saved context for a recorded node (zeroed, from the activation arena).
void *hy_tape_ctx(hy_tape *t, hy_node *node, size_t bytes);

// An output tensor of an op, in the activation arena.
hy_tensor *hy_tape_new(hy_tape *t, hy_dtype dt, int ndim, const int64_t *shape,
                       const char *name);

// In backward: the gradient of `x`, or NULL when nothing flowed into it.
hy_tensor *hy_grad(hy_tape *t, const hy_tensor *x);
// Whether something flowed into x's gradient (f32 or bf16).
int hy_has_grad(const hy_tape *t, const hy_tensor *x);
// In backward: the buffer to accumulate x's gradient into (zeroed on first
// use), or NULL when x needs no gradient.
hy_tensor *hy_grad_acc(hy_tape *t, hy_tensor *x);
// The same, but when the buffer is new and x is all of its owner (not a
// view, or a view of all of it: a reshape) it is left unzeroed and *fresh
// is set to 1: the caller must then write every element
// (an overwrite instead of zero-then-accumulate; a GEMM's beta 0). *fresh is
// 0 when the caller must accumulate as with hy_grad_acc.
hy_tensor *hy_grad_out(hy_tape *t, hy_tensor *x, int *fresh);
// bf16 gradients (GPU). In forward, an op whose backward reads its output
// y's gradient only rounded to bf16 (a linear without bias: its GEMMs take
// bf16 operands) says so with hy_tape_grad_bf16_ok (HYDRA_GRAD_BF16=0 in
// the environment turns it off). In backward, an op about to write x's
// whole gradient asks hy_grad_out_bf16: a bf16 buffer when x (or the
// tensor x reshapes: a view of all of it) allows it, has no gradient yet and
// is read by one recorded op (so this write is the gradient's only
// contribution), else NULL (write f32 as usual). Rounding there instead of
// in the reader gives the same bits and saves the f32 round trip and the
// rounding pass. hy_grad_bf16 gives the reader x's bf16
// gradient (NULL when it is f32 or absent); hy_grad, hy_grad_acc and
// hy_grad_out stop with an error on a bf16 gradient.
void hy_tape_grad_bf16_ok(hy_tape *t, hy_tensor *y);
void *hy_grad_out_bf16(hy_tape *t, hy_tensor *x);
const void *hy_grad_bf16(hy_tape *t, const hy_tensor *x);
// When x (not a view) has no gradient yet, make `g` its gradient, without a
// copy, and return 1; else return 0 (the caller accumulates). `g` must be
// an f32 buffer of x's size that nothing else will write: typically the
// gradient of an op's output, which the op's backward is the last to read
// (the sum's backward: dy passes unchanged to an input).
int hy_grad_adopt(hy_tape *t, hy_tensor *x, hy_tensor *g);

// Backpropagate from a scalar loss (d loss / d loss = 1).
void hy_tape_backward(hy_tape *t, hy_tensor *loss);
// Backpropagate from any output with a given seed gradient (same numel as
// `out`, host memory). Used by gradient checks.
void hy_tape_backward_seed(hy_tape *t, hy_tensor *out, const float *seed);

// Replaying part of a forward inside backward (activation recomputation):
// the tape's extent (nodes, gradient slots, the three arenas), so that what
// a replay records and allocates is dropped afterwards.
typedef struct {
    int n_nodes, n_slots;
    hy_arena_mark_t acts, scratch, ctx;
} hy_tape_state;
hy_tape_state hy_tape_save(const hy_tape *t);
void hy_tape_restore(hy_tape *t, hy_tape_state st);
// Backward over the nodes from index `first` to the last, in reverse (the
// gradients of their outputs seeded by the caller); does not end the
// tape's backward (a replay runs inside it).
void hy_tape_backward_from(hy_tape *t, int first);

// Drop all nodes and activation gradients and reset the activation and
// scratch arenas. Bound parameter gradients are kept.
void hy_tape_reset(hy_tape *t);

#endif
