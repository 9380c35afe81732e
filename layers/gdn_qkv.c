// gdn_qkv.c: GDN's input stage, from the qkv projection to the heads' q, k, v,
// and the gates alpha, beta from the gate projection.
// CPU: the ops in turn (short_conv, silu, three slices, two l2norms): the
// reference. GPU: one op (hy_cuda_gdn_qkv_fwd / _bwd): one pass each way
// for the common shapes, no bf16 rounding in between and no 3I-wide f32
// gradient assembled from slices (gdn_qkv.cu).
#include <limits.h>
#include <string.h>

#include "../autograd/check.h"
#include "../cuda/hy_cuda.h"
#include "../cuda/hy_cuda_gdn.h"
#include "../cuda/hy_cuda_ops.h"
#include "gdn.h"
#include "ops.h"

typedef struct {
    int B, T, H, D, K, norm_qk;
    float eps;
    hy_tensor *cache;  // (B, 3 H D, K-1) bf16 saved copy (decoding shifts the cache), or NULL
} qkv_ctx;

// d qkv (in bf16, or f32 written when its buffer is fresh), dw, db (accumulated) from dq,
// dk, dv: hy_cuda_gdn_qkv_bwd (one pass, or du in scratch and the short
// conv's backward for the shapes the one pass does not take).
static void qkv_backward_cuda(hy_tape *t, hy_node *n) {
    qkv_ctx *c = (qkv_ctx *)n->ctx;
    hy_tensor *gq = hy_grad(t, n->out[0]), *gk = hy_grad(t, n->out[1]);
    hy_tensor *gv = hy_grad(t, n->out[2]);
    if (!gq && !gk && !gv) return;
    hy_tensor *x = n->in[0], *w = n->in[1], *b = n->in[2];
    // d qkv straight in bf16 when its reader (the qkv projection) rounds it so
    // and the one-pass kernel runs; else f32, written when fresh.
    const float *dq = gq ? hy_f32(gq) : NULL, *dk = gk ? hy_f32(gk) : NULL;
    const float *dv = gv ? hy_f32(gv) : NULL;
    void *dxh = hy_cuda_gdn_qkv_bwd_one_pass(c->H, c->D, c->K, x->data, dq, dk, dv)
                    ? hy_grad_out_bf16(t, x)
                    : NULL;
    int fresh = 0;
    hy_tensor *dx = dxh ? NULL : hy_grad_out(t, x, &fresh), *dw = hy_grad_acc(t, w);
    hy_tensor *db = b ? hy_grad_acc(t, b) : NULL;
    if (!dx && !dxh && !dw && !db) return;
    int B = c->B, T = c->T, K = c->K;
    const void *cache = c->cache ? c->cache->data : NULL;
    hy_arena_mark_t mark = hy_arena_mark(t->scratch);
    size_t bytes = hy_cuda_gdn_qkv_bwd_scratch_bytes(B, T, c->H, c->D, K);
    void *scratch = hy_arena_alloc(t->scratch, bytes);
    hy_cuda_gdn_qkv_bwd(B, T, c->H, c->D, K, c->norm_qk, c->eps, x->data, hy_f32(w),
                        b ? hy_f32(b) : NULL, cache, dq, dk, dv, dx ? hy_f32(dx) : NULL, fresh, dxh,
                        dw ? hy_f32(dw) : NULL, db ? hy_f32(db) : NULL, scratch, bytes, NULL);
    hy_arena_reset_to(t->scratch, mark);  // stream order keeps the scratch valid for the kernels
}

static void gdn_qkv_cuda(hy_tape *t, hy_tensor *qkv, hy_tensor *w, hy_tensor *b,
                         const hy_tensor *cache, int H, int D, int K, int norm_qk, float eps,
                         hy_tensor *out[3]) {
    int64_t B = qkv->shape[0], T = qkv->shape[1], os[3] = {B, T, (int64_t)H * D};
    HY_REQUIRE(B <= INT_MAX && T <= INT_MAX && B * T <= INT_MAX,
               "gdn_qkv: '%s' %s is too large for the GPU kernels", qkv->name, hy_shape_str(qkv));
    static const char *names[3] = {"gdn.q", "gdn.k", "gdn.v"};
    for (int i = 0; i < 3; i++) out[i] = hy_tape_new(t, HY_BF16, 3, os, names[i]);  // (B, T, H D)
    const void *cv = cache && K > 1 ? cache->data : NULL;
    hy_arena_mark_t mark = hy_arena_mark(t->scratch);
    void *work = hy_arena_alloc(t->scratch, hy_cuda_gdn_qkv_work_bytes(H, D, K));
    hy_cuda_gdn_qkv_fwd((int)B, (int)T, H, D, K, norm_qk, eps, qkv->data, hy_f32(w),
                        b ? hy_f32(b) : NULL, cv, out[0]->data, out[1]->data, out[2]->data, work,
                        NULL);
    hy_arena_reset_to(t->scratch, mark);  // stream order keeps it valid for the kernels
    hy_tensor *ins[3] = {qkv, w, b};
    hy_node *n = hy_tape_record(t, "gdn_qkv", qkv_backward_cuda, ins, 3, out, 3);
    if (!n) return;
    qkv_ctx *c = (qkv_ctx *)hy_tape_ctx(t, n, sizeof *c);
    c->B = (int)B, c->T = (int)T, c->H = H, c->D = D, c->K = K, c->norm_qk = norm_qk;
    c->eps = eps;
    if (cv) {
        c->cache = hy_tape_new(t, HY_BF16, 3, cache->shape, "gdn_qkv.cache");
        hy_cuda_memcpy_d2d(c->cache->data, cv, hy_nbytes(cache));
    }
}

// The checks of hy_short_conv and hy_l2norm_heads for the fused GPU op;
// returns K.
static int check_gpu_args(const hy_tensor *qkv, const hy_tensor *w, const hy_tensor *b,
                          const hy_tensor *cache, int H, int D) {
    const char *op = "gdn_qkv";
    hy_expect_ndim(op, qkv, 3);
    hy_expect_dtype(op, w, HY_F32);
    hy_expect_device(op, qkv, w);
    int64_t C = qkv->shape[2];
    HY_REQUIRE(H >= 1 && D >= 1 && C == 3 * (int64_t)H * D,
               "gdn_qkv: input '%s' %s: expected the last dimension 3 H D = %lld (H %d, D %d)",
               qkv->name, hy_shape_str(qkv), 3 * (long long)H * D, H, D);
    int ok = ((w->ndim == 3 && w->shape[1] == 1) || w->ndim == 2) && w->shape[0] == C;
    int64_t K = w->shape[w->ndim - 1];
    HY_REQUIRE(ok && K >= 1 && K <= 16,
               "gdn_qkv: conv weight '%s' %s: expected (%lld, 1, K) or (%lld, K), 1 <= K <= 16 "
               "on the GPU",
               w->name, hy_shape_str(w), (long long)C, (long long)C);
    if (b) {
        hy_expect_dtype(op, b, HY_F32);
        hy_expect_device(op, qkv, b);
        HY_REQUIRE(b->ndim == 1 && b->shape[0] == C,
                   "gdn_qkv: conv bias '%s' %s: expected (%lld)", b->name, hy_shape_str(b),
                   (long long)C);
    }
    if (cache) {
        hy_expect_device(op, qkv, cache);
        hy_expect_act(op, cache);
        HY_REQUIRE(cache->ndim == 3 && cache->shape[0] == qkv->shape[0] &&
                       cache->shape[1] == C && cache->shape[2] == K - 1,
                   "gdn_qkv: conv cache '%s' %s: expected (%lld, %lld, %lld)", cache->name,
                   hy_shape_str(cache), (long long)qkv->shape[0], (long long)C,
                   (long long)(K - 1));
    }
    return (int)K;
}

void hy_gdn_qkv(hy_tape *t, hy_tensor *qkv, hy_tensor *w, hy_tensor *b, const hy_tensor *cache,
                int H, int D, int norm_qk, float eps, hy_tensor *out[3]) {
    hy_expect_act("gdn_qkv", qkv);
    HY_REQUIRE(eps >= 0, "gdn_qkv: eps must be >= 0, not %g", (double)eps);
    if (qkv->device == HY_CUDA) {
        int K = check_gpu_args(qkv, w, b, cache, H, D);
        gdn_qkv_cuda(t, qkv, w, b, cache, H, D, K, norm_qk, eps, out);
        return;
    }
    int64_t I = (int64_t)H * D;
    HY_REQUIRE(qkv->ndim == 3 && qkv->shape[2] == 3 * I,
               "gdn_qkv: input '%s' %s: expected (B, T, 3 H D) with 3 H D = %lld", qkv->name,
               hy_shape_str(qkv), 3 * (long long)I);
    hy_tensor *cv = hy_silu(t, hy_short_conv(t, qkv, w, b, cache));  // (B, T, 3I)
    for (int i = 0; i < 3; i++) out[i] = hy_slice_last(t, cv, i * I, I);  // (B, T, I)
    if (norm_qk)
        for (int i = 0; i < 2; i++) out[i] = hy_l2norm_heads(t, out[i], D, eps);
}

// ---------------------------------------------------------------- gates
typedef struct {
    int rows, H;
} gates_ctx;

// d ab (rows, 2H) f32 from dalpha, dbeta: one launch, written when new.
static void gates_backward_cuda(hy_tape *t, hy_node *n) {
    gates_ctx *c = (gates_ctx *)n->ctx;
    hy_tensor *ga = hy_grad(t, n->out[0]), *gb = hy_grad(t, n->out[1]);
    if (!ga && !gb) return;
    int fresh = 0;
    hy_tensor *dab = hy_grad_out(t, n->in[0], &fresh);
    if (dab)
        hy_cuda_gdn_gates_bwd(c->rows, c->H, n->in[0]->data, ga ? hy_f32(ga) : NULL,
                              gb ? hy_f32(gb) : NULL, hy_f32(dab), fresh, NULL);
}

void hy_gdn_gates(hy_tape *t, hy_tensor *ab, int H, hy_tensor **alpha, hy_tensor **beta) {
    hy_expect_act("gdn_gates", ab);
    HY_REQUIRE(H >= 1 && ab->ndim >= 1 && hy_last_dim(ab) == 2 * (int64_t)H,
               "gdn_gates: input '%s' %s: expected the last dimension 2 H = %lld", ab->name,
               hy_shape_str(ab), 2 * (long long)H);
    if (ab->device != HY_CUDA) {
        *alpha = hy_sigmoid(t, hy_slice_last(t, ab, 0, H));  // (..., H)
        *beta = hy_sigmoid(t, hy_slice_last(t, ab, H, H));   // (..., H)
        return;
    }
    int64_t rows = hy_rows(ab), shape[HY_MAX_DIMS];
    HY_REQUIRE(rows <= INT_MAX, "gdn_gates: '%s' %s is too large for the GPU kernels", ab->name,
               hy_shape_str(ab));
    memcpy(shape, ab->shape, sizeof shape);
    shape[ab->ndim - 1] = H;
    hy_tensor *out[2] = {hy_tape_new(t, HY_F32, ab->ndim, shape, "gdn.alpha"),
                         hy_tape_new(t, HY_F32, ab->ndim, shape, "gdn.beta")};  // (..., H) f32
    hy_cuda_gdn_gates_fwd((int)rows, H, ab->data, hy_f32(out[0]), hy_f32(out[1]), NULL);
    hy_node *n = hy_tape_record(t, "gdn_gates", gates_backward_cuda, &ab, 1, out, 2);
    if (n) {
        gates_ctx *c = (gates_ctx *)hy_tape_ctx(t, n, sizeof *c);
        c->rows = (int)rows, c->H = H;
    }
    *alpha = out[0], *beta = out[1];
}
