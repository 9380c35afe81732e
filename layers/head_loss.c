// head_loss.c: the tied LM head and the mean cross-entropy as one op.
//
// CPU: hy_linear then hy_cross_entropy (two tape nodes; the logits exist and
// are handed back). GPU: hy_cuda_head_ce, which runs the head GEMM a chunk
// of rows at a time and never holds the logits of the whole batch. It forms
// the gradients while the chunk's logits are at hand, so when the tape
// records, forward also writes dL/dx and dL/dE for a unit loss gradient into
// saved buffers; backward scales them by the incoming gradient (read on the
// device) into the gradient table. Nothing is recomputed.
#include <string.h>

#include "../autograd/check.h"
#include "../cuda/hy_cuda.h"
#include "../cuda/hy_cuda_blas.h"
#include "../cuda/hy_cuda_glue.h"
#include "ops.h"

// Logits held at once per chunk on the GPU: 128 Mi fp32 (512 MiB). Larger
// chunks mean fewer, larger head GEMMs: at vocab 32000, 4 chunks for 16384
// rows instead of 8 (gpu_gemm_bench: 543 -> 574 TFLOP/s from chunk 1024 to
// 4096 at vocab 50304).
#define HEAD_CHUNK_ELEMS ((size_t)128 << 20)

typedef struct {
    hy_tensor *dx;  // (rows, d) f32: dL/dx for dL = 1, or NULL
    hy_tensor *dE;  // (V, d) f32: dL/dE for dL = 1, or NULL
} head_ctx;

static void head_backward_cuda(hy_tape *t, hy_node *n) {
    head_ctx *c = (head_ctx *)n->ctx;
    const float *g = hy_f32(hy_grad(t, n->out[0]));  // (1) on the device
    hy_tensor *gx = hy_grad_acc(t, n->in[0]), *gE = hy_grad_acc(t, n->in[1]);
    if (gx && c->dx) hy_cuda_axpy_dev((size_t)hy_numel(c->dx), g, hy_f32(c->dx), hy_f32(gx), NULL);
    if (gE && c->dE) hy_cuda_axpy_dev((size_t)hy_numel(c->dE), g, hy_f32(c->dE), hy_f32(gE), NULL);
}

static hy_tensor *zeroed_f32(hy_tape *t, const int64_t *shape, const char *name) {
    hy_tensor *z = hy_tape_new(t, HY_F32, 2, shape, name);
    hy_cuda_memset(z->data, 0, hy_nbytes(z));
    return z;
}

// The rows split evenly over as few chunks as the cap allows, each a multiple of 128 rows
// when that fits: 16384 rows at vocab 32000 are 4 chunks of 4096, not 3 of 4194 and one of
// 3802. Measured on an H200 with blas.cu's tuned choice of algorithm: the logits GEMM of
// 4194 rows took 341 us (no candidate beat cuBLAS's first), of 4096 rows 291 us (347 for
// cuBLAS's first).
int hy_head_loss_chunk_rows(int rows, int V) {
    size_t per = HEAD_CHUNK_ELEMS / (size_t)(V > 0 ? V : 1);
    if (per < 1) return 1;
    if (per >= (size_t)rows) return rows;
    size_t n = ((size_t)rows + per - 1) / per, even = ((size_t)rows + n - 1) / n;
    size_t up = (even + 127) / 128 * 128;
    return (int)(up <= per ? up : even);
}

static hy_tensor *head_loss_cuda(hy_tape *t, hy_tensor *x, hy_tensor *E, hy_tensor *targets,
                                 int ignore_index) {
    const char *op = "head_loss (GPU)";
    hy_expect_dtype(op, x, HY_BF16);
    hy_expect_device(op, x, targets);
    HY_REQUIRE(E->half, "%s: embedding '%s' has no bf16 copy (hy_params_alloc_half)", op, E->name);
    int rows = (int)hy_rows(x), d = (int)E->shape[1], V = (int)E->shape[0];
    int64_t one = 1;
    hy_tensor *loss = hy_tape_new(t, HY_F32, 1, &one, "loss");  // (1)
    hy_tensor *ins[3] = {x, E, targets};
    hy_node *n = hy_tape_record(t, "head_loss", head_backward_cuda, ins, 3, &loss, 1);
    head_ctx *c = NULL;
    if (n) {
        c = (head_ctx *)hy_tape_ctx(t, n, sizeof *c);
        int64_t xs[2] = {rows, d};
        if (x->requires_grad) c->dx = zeroed_f32(t, xs, "head.dx");        // (rows, d)
        if (E->requires_grad) c->dE = zeroed_f32(t, E->shape, "head.dE");  // (V, d)
    }
    int chunk = hy_head_loss_chunk_rows(rows, V);
    size_t bytes = hy_cuda_head_ce_scratch_bytes(rows, V, chunk);
    hy_arena_mark_t mark = hy_arena_mark(t->scratch);
    void *scratch = hy_arena_alloc(t->scratch, bytes);
    hy_cuda_head_ce(rows, d, V, x->data, E->half, hy_i32(targets), ignore_index, hy_f32(loss),
                    NULL, c && c->dx ? hy_f32(c->dx) : NULL, c && c->dE ? hy_f32(c->dE) : NULL,
                    scratch, bytes, NULL);
    hy_arena_reset_to(t->scratch, mark);
    return loss;
}

hy_tensor *hy_head_loss(hy_tape *t, hy_tensor *x, hy_tensor *E, hy_tensor *targets,
                        int ignore_index, hy_tensor **logits) {
    const char *op = "head_loss";
    hy_expect_act(op, x);
    hy_expect_dtype(op, E, HY_F32);
    hy_expect_ndim(op, E, 2);
    hy_expect_dtype(op, targets, HY_I32);
    hy_expect_device(op, x, E);
    HY_REQUIRE(hy_last_dim(x) == E->shape[1] && hy_rows(x) == hy_numel(targets),
               "head_loss: hidden '%s' %s, embedding '%s' %s and targets '%s' %s disagree",
               x->name, hy_shape_str(x), E->name, hy_shape_str(E), targets->name,
               hy_shape_str(targets));
    if (x->device == HY_CUDA) {
        if (logits) *logits = NULL;
        return head_loss_cuda(t, x, E, targets, ignore_index);
    }
    hy_tensor *lg = hy_linear(t, x, E, NULL);  // (..., V)
    if (logits) *logits = lg;
    return hy_cross_entropy(t, lg, targets, ignore_index);
}
