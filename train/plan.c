// plan.c: the tape's memory plan (see plan.h).
#include "plan.h"

// Per token and layer, the outputs the ops keep (about 24 vectors of
// max(d_model, inner) values plus 4 of the MLP width) and the logits, at
// `elem` bytes a value (the CPU's are fp32; the GPU's activations are bf16
// but their gradients fp32).
size_t hy_plan_activations(const hy_run_config *c, size_t elem) {
    const hy_model_config *m = &c->model;
    size_t width = (size_t)(m->d_model > m->n_heads * m->head_dim ? m->d_model : m->n_heads * m->head_dim);
    size_t block = 24 * width + 4 * (size_t)m->mlp_hidden;  // one block's activations a token
    size_t blocks = c->train.recompute ? block + 2 * width * m->n_layers : block * m->n_layers;
    size_t per_tok = blocks + 3 * (size_t)m->vocab_size;
    size_t tokens = (size_t)c->train.batch_size * c->train.seq_len;
    return per_tok * tokens * elem * 5 / 4 + ((size_t)64 << 20);
}

// Per token and head: g (4 bytes), W as a bf16 pair, U in f32 and the new
// values N in bf16 (10 D), and per 64 tokens a bf16 (D, D) chunk state
// (D^2 / 32): the sums of cuda/gdn.cu's workspace layout, before its
// 256-byte rounding (the margin covers it).
size_t hy_plan_gdn_saved(const hy_run_config *c) {
    const hy_model_config *m = &c->model;
    if (c->arch != HY_ARCH_HYDRA) return 0;
    int n_gdn = 0;
    for (int i = 0; i < m->n_layers; i++) n_gdn += m->layer_kind[i] == HY_LAYER_GDN;
    if (c->train.recompute && n_gdn > 1) n_gdn = 1;
    size_t D = (size_t)m->head_dim, per_head_tok = 4 + 10 * D + D * D / 32;
    size_t tokens = (size_t)c->train.batch_size * (((size_t)c->train.seq_len + 63) / 64 * 64);
    return (size_t)n_gdn * tokens * (size_t)m->n_heads * per_head_tok * 5 / 4;
}
