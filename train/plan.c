// plan.c: the tape's memory plan (see plan.h).
#include "plan.h"

#include "../cuda/hy_cuda_gdn.h"

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

// Each GDN layer's saved forward results (cuda/gdn.cu's workspace layout:
// hy_cuda_gdn_saved_bytes), with the 256-byte alignment its allocation takes;
// one layer's at a time when the blocks are recomputed.
size_t hy_plan_gdn_saved(const hy_run_config *c) {
    const hy_model_config *m = &c->model;
    if (c->arch != HY_ARCH_HYDRA) return 0;
    int n_gdn = 0;
    for (int i = 0; i < m->n_layers; i++) n_gdn += m->layer_kind[i] == HY_LAYER_GDN;
    if (c->train.recompute && n_gdn > 1) n_gdn = 1;
    // A shape the kernels do not take: nothing to plan; the forward says so.
    if (n_gdn == 0 || (m->head_dim != 64 && m->head_dim != 128) || m->dn_chunk_size != 64) return 0;
    size_t one = hy_cuda_gdn_saved_bytes(c->train.batch_size, c->train.seq_len, m->n_heads,
                                         m->head_dim, m->dn_chunk_size);
    return (size_t)n_gdn * (one + 256);
}
