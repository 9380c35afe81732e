// gdn_cuda.c: hy_gdn on the GPU, through the chunkwise WY kernels of
// cuda/gdn.cu (chunk 64, head_dim 64 or 128, fp32 state).
#include <string.h>

#include "../autograd/check.h"
#include "../cuda/hy_cuda.h"
#include "../cuda/hy_cuda_gdn.h"
#include "../cuda/hy_cuda_glue.h"
#include "../cuda/hy_cuda_ops.h"
#include "mixers_cuda.h"

typedef struct {
    int B, T, H, D;
    hy_tensor *S0;  // copy of the initial state (B, H, D, D) f32, or NULL
    void *saved;    // the forward's WY factors, chunk states and new values (activation arena)
} gdn_cuda_ctx;

static float *f32_scratch(hy_tape *t, size_t n) {
    return (float *)hy_arena_alloc(t->scratch, n * sizeof(float));
}

// Backward reads the WY factors, chunk states and new values that the
// forward kept in the activation arena (hy_cuda_gdn_bwd_saved: the kernels
// skip their recomputation, about a quarter of the backward), and S0's copy.
// The kernels write (never accumulate) each gradient: straight into the
// input's gradient buffer when this is its first contribution (hy_grad_out),
// else into scratch and then added (saves a zero fill and an accumulation
// pass over each of dq, dk, dv; measured on an H200, the 115M model's nine
// GDN backwards 8.76 -> 8.66 ms a step).
static void gdn_backward_cuda(hy_tape *t, hy_node *n) {
    gdn_cuda_ctx *c = (gdn_cuda_ctx *)n->ctx;
    int B = c->B, T = c->T, H = c->H, D = c->D;
    size_t nx = (size_t)B * T * H * D, ng = (size_t)B * T * H, ns = (size_t)B * H * D * D;
    size_t nel[6] = {nx, nx, nx, ng, ng, ns};
    // d o in bf16 for the kernels: as the op that wrote it rounded it (hy_grad_out_bf16), or
    // rounded here.
    const void *goh = hy_grad_bf16(t, n->out[0]);
    hy_tensor *go = goh ? NULL : hy_grad(t, n->out[0]);
    hy_tensor *gs = n->n_out > 1 ? hy_grad(t, n->out[1]) : NULL;
    // Take every gradient buffer before the mark: they outlive this call.
    hy_tensor *g[6] = {NULL};
    int fresh[6] = {0};
    for (int i = 0; i < 6; i++)
        if (n->in[i]) g[i] = hy_grad_out(t, n->in[i], &fresh[i]);
    hy_arena_mark_t mark = hy_arena_mark(t->scratch);
    const void *d_o = goh;  // (B, T, H, D) bf16
    if (!goh) {
        void *b = hy_arena_alloc(t->scratch, nx * 2);
        if (go)
            hy_cuda_f32_to_bf16(hy_f32(go), b, nx, NULL);
        else
            hy_cuda_memset(b, 0, nx * 2);
        d_o = b;
    }
    float *dst[6] = {NULL};  // dq, dk, dv, dalpha, dbeta, dS0: where the kernels write
    for (int i = 0; i < 6; i++) {
        if (i == 5 && !n->in[5]) continue;  // no S0: no dS0
        dst[i] = g[i] && fresh[i] ? hy_f32(g[i]) : f32_scratch(t, nel[i]);
    }
    size_t wsb = hy_cuda_gdn_workspace_bytes(B, T, H, D, 64) -
                 hy_cuda_gdn_saved_bytes(B, T, H, D, 64);
    void *ws = hy_arena_alloc_aligned(t->scratch, wsb, 256);
    hy_cuda_gdn_bwd_saved(B, T, H, D, 64, n->in[0]->data, n->in[1]->data, n->in[2]->data,
                          hy_f32(n->in[3]), hy_f32(n->in[4]), c->S0 ? hy_f32(c->S0) : NULL, d_o,
                          gs ? hy_f32(gs) : NULL, dst[0], dst[1], dst[2], dst[3], dst[4], dst[5],
                          c->saved, ws, NULL);
    for (int i = 0; i < 6; i++)
        if (g[i] && !fresh[i]) hy_cuda_acc_f32(nel[i], dst[i], hy_f32(g[i]), NULL);
    hy_arena_reset_to(t->scratch, mark);
}

static void check_cuda_args(hy_tensor *q, hy_tensor *k, hy_tensor *v, hy_tensor *alpha,
                            hy_tensor *beta, hy_tensor *S0, int chunk) {
    const char *op = "gdn (GPU)";
    hy_tensor *bf[3] = {q, k, v}, *fp[3] = {alpha, beta, S0};
    for (int i = 0; i < 3; i++) {
        hy_expect_dtype(op, bf[i], HY_BF16);
        hy_expect_device(op, q, bf[i]);
        if (!fp[i]) continue;
        hy_expect_dtype(op, fp[i], HY_F32);
        hy_expect_device(op, q, fp[i]);
    }
    int64_t D = q->shape[3];
    HY_REQUIRE(chunk == 64, "gdn: the GPU kernels use chunk 64 (model.dn_chunk_size), got %d",
               chunk);
    HY_REQUIRE((D == 64 || D == 128) && v->shape[3] == D,
               "gdn: the GPU kernels need head_dim 64 or 128 for q, k and v, got q '%s' %s, "
               "v '%s' %s", q->name, hy_shape_str(q), v->name, hy_shape_str(v));
    HY_REQUIRE(q->shape[0] * q->shape[2] <= 65535, "gdn: B * H = %lld exceeds 65535 on the GPU",
               (long long)(q->shape[0] * q->shape[2]));
}

hy_tensor *hy_gdn_cuda(hy_tape *t, hy_tensor *q, hy_tensor *k, hy_tensor *v, hy_tensor *alpha,
                       hy_tensor *beta, hy_tensor *S0, int chunk, hy_tensor **S_out) {
    check_cuda_args(q, k, v, alpha, beta, S0, chunk);
    int B = (int)q->shape[0], T = (int)q->shape[1], H = (int)q->shape[2], D = (int)q->shape[3];
    int64_t os[4] = {B, T, H, D}, ss[4] = {B, H, D, D};
    hy_tensor *o = hy_tape_new(t, HY_BF16, 4, os, "gdn");                         // (B, T, H, D)
    hy_tensor *Sf = S_out ? hy_tape_new(t, HY_F32, 4, ss, "gdn.state") : NULL;  // (B, H, D, D)
    hy_tensor *ins[6] = {q, k, v, alpha, beta, S0}, *outs[2] = {o, Sf};
    hy_node *n = hy_tape_record(t, "gdn", gdn_backward_cuda, ins, 6, outs, Sf ? 2 : 1);
    gdn_cuda_ctx *c = NULL;
    if (n) {
        hy_tape_grad_bf16_ok(t, o);  // the backward kernels read d o in bf16
        c = (gdn_cuda_ctx *)hy_tape_ctx(t, n, sizeof *c);
        c->B = B, c->T = T, c->H = H, c->D = D;
        if (S0) {  // the caller may overwrite S0 with S_out: keep the forward's copy
            c->S0 = hy_tape_new(t, HY_F32, 4, ss, "gdn.S0");
            hy_cuda_memcpy_d2d(c->S0->data, S0->data, hy_nbytes(S0));
        }
    }
    // The forward needs only the workspace's saved part: kept for the backward when recorded,
    // scratch otherwise.
    hy_arena_mark_t mark = hy_arena_mark(t->scratch);
    size_t wsb = hy_cuda_gdn_saved_bytes(B, T, H, D, 64);
    void *ws = hy_arena_alloc_aligned(c ? t->acts : t->scratch, wsb, 256);
    if (c) c->saved = ws;
    hy_cuda_gdn_fwd(B, T, H, D, 64, q->data, k->data, v->data, hy_f32(alpha), hy_f32(beta),
                    S0 ? hy_f32(S0) : NULL, o->data, Sf ? hy_f32(Sf) : NULL, ws, NULL);
    hy_arena_reset_to(t->scratch, mark);
    if (S_out) *S_out = Sf;
    return o;
}
