// swa_cuda.c: hy_swa on the GPU, through the flash-style kernels of
// cuda/swa.cu (head_dim 64 or 128).
//
// A prefix (the decoding cache during chunked prefill) is handled exactly by
// attending over the concatenation [prefix | chunk]: keys already carry
// their rotary phase, so only positions relative to each other matter. Only
// the chunk's query rows are computed (the prefix rows' queries are zero and
// their blocks are not launched), so a chunk costs its T queries against
// the keys in their windows: for the dense model's whole-cache prefix,
// linear in the cache, and the whole prefill quadratic, not cubic. Used
// without the tape only (prefill); training never has a prefix.
#include <limits.h>

#include "../autograd/check.h"
#include "../cuda/hy_cuda.h"
#include "../cuda/hy_cuda_glue.h"
#include "../cuda/hy_cuda_ops.h"
#include "../cuda/hy_cuda_swa.h"
#include "mixers_cuda.h"

typedef struct {
    int W;
    hy_tensor *lse;  // (B, T, H) f32 log-sum-exps; the output o is n->out[0]
} swa_cuda_ctx;

// The kernels write (never accumulate) dq, dk, dv: straight into an input's
// gradient buffer when this is its first contribution (hy_grad_out), else
// into scratch and then added (as GDN's backward).
static void swa_backward_cuda(hy_tape *t, hy_node *n) {
    hy_tensor *q = n->in[0], *k = n->in[1], *v = n->in[2], *o = n->out[0];
    swa_cuda_ctx *c = (swa_cuda_ctx *)n->ctx;
    int B = (int)q->shape[0], T = (int)q->shape[1], H = (int)q->shape[2], D = (int)q->shape[3];
    size_t nx = (size_t)B * T * H * D;
    hy_tensor *g[3];
    int fresh[3];
    for (int i = 0; i < 3; i++)  // before the mark: they outlive it
        g[i] = hy_grad_out(t, n->in[i], &fresh[i]);
    hy_arena_mark_t mark = hy_arena_mark(t->scratch);
    void *d_o = hy_arena_alloc(t->scratch, nx * 2);  // (B, T, H, D) bf16
    hy_cuda_f32_to_bf16(hy_f32(hy_grad(t, o)), d_o, nx, NULL);
    float *dst[3];  // dq, dk, dv (B, T, H, D) f32: where the kernels write
    for (int i = 0; i < 3; i++)
        dst[i] = g[i] && fresh[i] ? hy_f32(g[i])
                                  : (float *)hy_arena_alloc(t->scratch, nx * sizeof(float));
    void *ws = hy_arena_alloc(t->scratch, hy_cuda_swa_workspace_bytes(B, T, H, D));
    hy_cuda_swa_bwd(B, T, H, D, c->W, q->data, k->data, v->data, o->data, hy_f32(c->lse), d_o,
                    dst[0], dst[1], dst[2], ws, NULL);
    for (int i = 0; i < 3; i++)
        if (g[i] && !fresh[i]) hy_cuda_acc_f32(nx, dst[i], hy_f32(g[i]), NULL);
    hy_arena_reset_to(t->scratch, mark);
}

// o (B, T, H, D) = attention of the chunk over [last `keep` prefix rows | chunk].
static void forward_with_prefix(hy_tape *t, hy_tensor *q, hy_tensor *k, hy_tensor *v,
                                const hy_tensor *pk, const hy_tensor *pv, int window,
                                hy_tensor *o) {
    int B = (int)q->shape[0], T = (int)q->shape[1], H = (int)q->shape[2], D = (int)q->shape[3];
    int P = (int)pk->shape[1], E = H * D;
    int keep = P < window - 1 ? P : window - 1;  // older rows are outside every window
    int L = keep + T;
    size_t bytes = (size_t)B * L * E * 2;
    hy_arena_mark_t mark = hy_arena_mark(t->scratch);
    void *cq = hy_arena_alloc(t->scratch, bytes), *ck = hy_arena_alloc(t->scratch, bytes);
    void *cv = hy_arena_alloc(t->scratch, bytes), *co = hy_arena_alloc(t->scratch, bytes);
    hy_cuda_memset(cq, 0, bytes);
    hy_cuda_copy_rows_bf16(B, keep, E, pk->data, P, P - keep, ck, L, 0, NULL);
    hy_cuda_copy_rows_bf16(B, keep, E, pv->data, P, P - keep, cv, L, 0, NULL);
    hy_cuda_copy_rows_bf16(B, T, E, q->data, T, 0, cq, L, keep, NULL);
    hy_cuda_copy_rows_bf16(B, T, E, k->data, T, 0, ck, L, keep, NULL);
    hy_cuda_copy_rows_bf16(B, T, E, v->data, T, 0, cv, L, keep, NULL);
    hy_cuda_swa_fwd_rows(B, L, H, D, window, keep, cq, ck, cv, co, NULL);
    hy_cuda_copy_rows_bf16(B, T, E, co, L, keep, o->data, T, 0, NULL);
    hy_arena_reset_to(t->scratch, mark);
}

hy_tensor *hy_swa_cuda(hy_tape *t, hy_tensor *q, hy_tensor *k, hy_tensor *v, const hy_tensor *pk,
                       const hy_tensor *pv, int window) {
    const char *op = "swa (GPU)";
    const hy_tensor *all[5] = {q, k, v, pk, pv};
    for (int i = 0; i < 5; i++) {
        if (!all[i]) continue;
        hy_expect_dtype(op, all[i], HY_BF16);
        hy_expect_device(op, q, all[i]);
    }
    int B = (int)q->shape[0], T = (int)q->shape[1], H = (int)q->shape[2], D = (int)q->shape[3];
    HY_REQUIRE(D == 64 || D == 128, "swa: the GPU kernels need head_dim 64 or 128, got '%s' %s",
               q->name, hy_shape_str(q));
    hy_tensor *o = hy_tape_new(t, HY_BF16, 4, q->shape, "swa");  // (B, T, H, D)
    int rec = t->enabled && (q->requires_grad || k->requires_grad || v->requires_grad);
    if (pk && (int)pk->shape[1] > 0) {
        HY_REQUIRE(!rec, "swa: on the GPU a prefix is for prefill only (tape disabled)");
        forward_with_prefix(t, q, k, v, pk, pv, window, o);
        hy_tensor *ins[3] = {q, k, v};
        hy_tape_record(t, op, swa_backward_cuda, ins, 3, &o, 1);  // records nothing (checked)
        return o;
    }
    int64_t ls[3] = {B, T, H};
    hy_tensor *lse = rec ? hy_tape_new(t, HY_F32, 3, ls, "swa.lse") : NULL;  // (B, T, H)
    hy_cuda_swa_fwd(B, T, H, D, window, q->data, k->data, v->data, o->data,
                    lse ? hy_f32(lse) : NULL, NULL);
    hy_tensor *ins[3] = {q, k, v};
    hy_node *n = hy_tape_record(t, "swa", swa_backward_cuda, ins, 3, &o, 1);
    if (n) {
        swa_cuda_ctx *c = (swa_cuda_ctx *)hy_tape_ctx(t, n, sizeof *c);
        c->W = window, c->lse = lse;
    }
    return o;
}
