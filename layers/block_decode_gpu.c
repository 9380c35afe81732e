// block_decode_gpu.c: one decoding token of a block on the GPU, in few kernels.
//
// At batch 1 a token's work is ~230 MB of bf16 weights read once and a few
// hundred small vectors; what bounds it is the chain of dependent kernels,
// each a few microseconds however little it does. So here the projections
// are hy_cuda_gemv calls that fold in their neighbours (the rmsnorm before,
// the GDN output gate or the SwiGLU, the bias and the residual add after),
// and each mixer's middle is one kernel:
//   GDN block: gemv [rmsnorm -> qkv | ab | gate], hy_cuda_gdn_decode,
//              gemv [gate -> o_proj + x], gemv [rmsnorm -> w_fused -> swiglu],
//              gemv [w_down + x]                                   5 kernels
//   SWA block: gemv [rmsnorm -> qkv], hy_cuda_swa_decode (RoPE, ring,
//              attention), then as GDN                              5 kernels
// (the dense baseline's middle stays the slices, RoPEs and split-K step of
// model_forward.c). The result is the function of block() in
// model_forward.c with the same bf16 roundings of its intermediates except
// the GDN step's (fp32 inside hy_cuda_gdn_decode); the tests compare GPU
// steps with the GPU's parallel forward and with the CPU's steps.
#include "../autograd/check.h"
#include "../cuda/hy_cuda_gdn.h"
#include "../cuda/hy_cuda_gemv.h"
#include "../cuda/hy_cuda_swa.h"
#include "model_internal.h"

static hy_tensor *P(hy_model *m, int idx) { return m->params.p[idx].value; }

// A new bf16 activation (B, 1, n) for one token.
static hy_tensor *row(hy_tape *t, int64_t B, int64_t n, const char *name) {
    int64_t s[3] = {B, 1, n};
    return hy_tape_new(t, HY_BF16, 3, s, name);
}

static hy_gemv_out proj(hy_model *m, int w, int bias, const hy_tensor *residual, hy_tensor *y) {
    hy_gemv_out o = {P(m, w)->half, bias >= 0 ? hy_f32(P(m, bias)) : NULL,
                     residual ? residual->data : NULL, y->data, (int)hy_last_dim(y), 0};
    HY_REQUIRE(o.W, "decode: weight '%s' has no bf16 copy", P(m, w)->name);
    return o;
}

static hy_gemv_in rmsnorm_in(hy_model *m, const hy_tensor *x, int norm) {
    hy_gemv_in in = {HY_GEMV_RMSNORM, x->data, NULL, hy_f32(P(m, norm)), (float)m->cfg.rms_eps};
    return in;
}

// GDN mixer + residual: x (B, 1, d) -> x + o_proj(gate(step(projections(norm1 x)))).
static hy_tensor *gdn_decode(hy_model *m, hy_tape *t, int i, hy_tensor *x, hy_decode_state *ds) {
    const hy_model_config *c = &m->cfg;
    const hy_layer_params *L = &m->layer[i];
    hy_layer_state *st = &ds->layer[i];
    int64_t B = x->shape[0], H = c->n_heads, D = c->head_dim, I = H * D;
    hy_tensor *qkv = row(t, B, 3 * I, "gdn.qkv"), *ab = row(t, B, 2 * H, "gdn.ab");
    hy_tensor *g = L->gate >= 0 ? row(t, B, I, "gdn.gate") : NULL;
    hy_gemv_in in = rmsnorm_in(m, x, L->norm1);
    hy_gemv_out outs[3] = {proj(m, L->qkv, -1, NULL, qkv), proj(m, L->ab_w, L->ab_b, NULL, ab)};
    if (g) outs[2] = proj(m, L->gate, -1, NULL, g);
    hy_cuda_gemv((int)B, c->d_model, &in, outs, g ? 3 : 2, NULL);
    hy_tensor *o = row(t, B, I, "gdn.step");  // (B, 1, H D)
    hy_cuda_gdn_decode((int)B, (int)H, (int)D, c->dn_short_conv_kernel, c->dn_norm_qk, qkv->data,
                       hy_f32(P(m, L->conv_w)), hy_f32(P(m, L->conv_b)), st->conv16, ab->data,
                       st->S, o->data, NULL);
    hy_tensor *y = row(t, B, c->d_model, "gdn.out");
    hy_gemv_in oin = {g ? HY_GEMV_GATE : HY_GEMV_PLAIN, o->data, g ? g->data : NULL, NULL, 0.0f};
    hy_gemv_out oo = proj(m, L->o, -1, x, y);
    hy_cuda_gemv((int)B, (int)I, &oin, &oo, 1, NULL);
    return y;
}

// Attention mixer + residual: SWA through hy_cuda_swa_decode, the dense
// baseline through model_forward.c's step.
static hy_tensor *attn_decode(hy_model *m, hy_tape *t, int i, hy_tensor *x, hy_decode_state *ds) {
    const hy_model_config *c = &m->cfg;
    const hy_layer_params *L = &m->layer[i];
    hy_layer_state *st = &ds->layer[i];
    int64_t B = x->shape[0], H = c->n_heads, D = c->head_dim, I = H * D;
    hy_tensor *qkv = row(t, B, 3 * I, "attn.qkv");
    hy_gemv_in in = rmsnorm_in(m, x, L->norm1);
    hy_gemv_out qo = proj(m, L->qkv, -1, NULL, qkv);
    hy_cuda_gemv((int)B, c->d_model, &in, &qo, 1, NULL);
    hy_tensor *o;  // (B, 1, H D) or (B, 1, H, D)
    if (m->arch == HY_ARCH_DENSE) {
        o = hy_dense_heads_step(m, t, i, qkv, ds);
    } else {
        o = row(t, B, I, "swa.step");
        hy_cuda_swa_decode((int)B, (int)H, (int)D, c->swa_window, (long long)ds->pos, ds->pos_dev,
                           (float)c->swa_rope_base, qkv->data, st->k16, st->v16, o->data, NULL);
    }
    hy_tensor *y = row(t, B, c->d_model, "attn.out");
    hy_gemv_in oin = {HY_GEMV_PLAIN, o->data, NULL, NULL, 0.0f};
    hy_gemv_out oo = proj(m, L->o, -1, x, y);
    hy_cuda_gemv((int)B, (int)I, &oin, &oo, 1, NULL);
    return y;
}

hy_tensor *hy_block_decode_gpu(hy_model *m, hy_tape *t, int i, hy_tensor *x,
                               hy_decode_state *ds) {
    const hy_model_config *c = &m->cfg;
    const hy_layer_params *L = &m->layer[i];
    HY_REQUIRE(x->dtype == HY_BF16 && x->device == HY_CUDA && x->shape[1] == 1,
               "decode: block %d expects one bf16 token on the GPU, got '%s' %s", i, x->name,
               hy_shape_str(x));
    int64_t B = x->shape[0], hid = c->mlp_hidden;
    x = L->kind == HY_LAYER_GDN ? gdn_decode(m, t, i, x, ds) : attn_decode(m, t, i, x, ds);
    hy_tensor *f = row(t, B, hid, "mlp.swiglu"), *y = row(t, B, c->d_model, "block");
    hy_gemv_in in = rmsnorm_in(m, x, L->norm2);
    hy_gemv_out fo = proj(m, L->w_fused, -1, NULL, f);
    fo.N = (int)(2 * hid), fo.swiglu = 1;  // the SwiGLU in the product's epilogue
    hy_cuda_gemv((int)B, c->d_model, &in, &fo, 1, NULL);
    hy_gemv_in din = {HY_GEMV_PLAIN, f->data, NULL, NULL, 0.0f};
    hy_gemv_out dout = proj(m, L->w_down, -1, x, y);
    hy_cuda_gemv((int)B, (int)hid, &din, &dout, 1, NULL);
    return y;
}

hy_tensor *hy_head_decode_gpu(hy_model *m, hy_tape *t, hy_tensor *x) {
    int64_t B = x->shape[0];
    hy_tensor *logits = row(t, B, m->cfg.vocab_size, "logits");  // (B, 1, V)
    hy_gemv_in in = rmsnorm_in(m, x, m->norm_f);
    hy_gemv_out lo = proj(m, m->embed, -1, NULL, logits);
    hy_cuda_gemv((int)B, m->cfg.d_model, &in, &lo, 1, NULL);
    return logits;
}
