// model_params.c: HydraLM's and the dense baseline's parameter tables,
// named as the PyTorch reference's state_dict, and their initialisation.
#include <math.h>
#include <string.h>

#include "../autograd/check.h"
#include "model.h"

static int add(hy_model *m, const char *name, int ndim, int64_t d0, int64_t d1, int64_t d2,
               hy_init init, hy_opt_group g, float wd) {
    int64_t shape[3] = {d0, d1, d2};
    return hy_params_add(&m->params, name, ndim, shape, init, g, wd);
}

static int add_named(hy_model *m, int i, const char *suffix, int ndim, int64_t d0, int64_t d1,
                     int64_t d2, hy_init init, hy_opt_group g, float wd) {
    char name[HY_NAME_LEN];
    snprintf(name, sizeof name, "blocks.%d.%s", i, suffix);
    return add(m, name, ndim, d0, d1, d2, init, g, wd);
}

// Optimizer routing lives here, in one place: 2-D hidden matrices go to
// Muon; the embedding (also the tied head), norms, biases, the alpha/beta
// gate projection and the short convolution go to AdamW. Weight decay
// applies to matrices (2-D and up), never to norms or biases.
static void add_block(hy_model *m, int i) {
    const hy_model_config *c = &m->cfg;
    hy_layer_params *L = &m->layer[i];
    int64_t d = c->d_model, I = (int64_t)c->n_heads * c->head_dim, H = c->n_heads;
    double std = c->initializer_range, out_std = std / sqrt(2.0 * c->n_layers);
    hy_init ones = {HY_INIT_ONES, 0}, w = {HY_INIT_NORMAL, (float)std};
    hy_init w_out = {HY_INIT_NORMAL, (float)out_std};
    int dense = m->arch == HY_ARCH_DENSE;
    memset(L, -1, sizeof *L);
    L->kind = dense ? HY_LAYER_SWA : c->layer_kind[i];

    L->norm1 = add_named(m, i, dense ? "attn_norm.weight" : "norm1.weight", 1, d, 0, 0, ones,
                         HY_GROUP_ADAMW, 0);
    const char *mx = dense ? "attn" : "mixer";
    char nm[64];
    snprintf(nm, sizeof nm, "%s.qkv_proj.weight", mx);
    L->qkv = add_named(m, i, nm, 2, 3 * I, d, 0, w, HY_GROUP_MUON, 1);
    if (!dense && L->kind == HY_LAYER_GDN) {
        int K = c->dn_short_conv_kernel;
        hy_init ab_bias = {HY_INIT_CUSTOM, 0};
        // PyTorch's Conv1d default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = K.
        hy_init conv = {HY_INIT_UNIFORM, (float)(1.0 / sqrt((double)K))};
        L->ab_w = add_named(m, i, "mixer.ab_proj.weight", 2, 2 * H, d, 0, w, HY_GROUP_ADAMW, 1);
        L->ab_b = add_named(m, i, "mixer.ab_proj.bias", 1, 2 * H, 0, 0, ab_bias, HY_GROUP_ADAMW, 0);
        L->conv_w = add_named(m, i, "mixer.short_conv.conv.weight", 3, 3 * I, 1, K, conv,
                              HY_GROUP_ADAMW, 1);
        L->conv_b = add_named(m, i, "mixer.short_conv.conv.bias", 1, 3 * I, 0, 0, conv,
                              HY_GROUP_ADAMW, 0);
        if (c->dn_use_gate)
            L->gate = add_named(m, i, "mixer.gate_proj.weight", 2, I, d, 0, w, HY_GROUP_MUON, 1);
    }
    snprintf(nm, sizeof nm, "%s.o_proj.weight", mx);
    L->o = add_named(m, i, nm, 2, d, I, 0, w_out, HY_GROUP_MUON, 1);
    L->norm2 = add_named(m, i, dense ? "mlp_norm.weight" : "norm2.weight", 1, d, 0, 0, ones,
                         HY_GROUP_ADAMW, 0);
    L->w_fused = add_named(m, i, "mlp.w_fused.weight", 2, 2 * (int64_t)c->mlp_hidden, d, 0, w,
                           HY_GROUP_MUON, 1);
    L->w_down = add_named(m, i, "mlp.w_down.weight", 2, d, c->mlp_hidden, 0, w_out,
                          HY_GROUP_MUON, 1);
}

void hy_model_build(hy_model *m, hy_arch arch, const hy_model_config *cfg) {
    memset(m, 0, sizeof *m);
    m->arch = arch;
    m->cfg = *cfg;
    HY_REQUIRE(m->cfg.head_dim > 0, "model: finalize the config (hy_config_finalize) first");
    HY_REQUIRE(m->cfg.tie_embeddings,
               "model.tie_embeddings = false is not supported: the head is tied to the embedding");
    hy_params_create(&m->params, 16 + 16 * m->cfg.n_layers);
    hy_init w = {HY_INIT_NORMAL, (float)m->cfg.initializer_range}, ones = {HY_INIT_ONES, 0};
    m->embed = add(m, "embed.weight", 2, m->cfg.vocab_size, m->cfg.d_model, 0, w, HY_GROUP_ADAMW, 1);
    for (int i = 0; i < m->cfg.n_layers; i++) add_block(m, i);
    m->norm_f = add(m, arch == HY_ARCH_DENSE ? "norm.weight" : "norm_f.weight", 1, m->cfg.d_model,
                    0, 0, ones, HY_GROUP_ADAMW, 0);
}

void hy_model_destroy(hy_model *m) { hy_params_destroy(&m->params); }

int64_t hy_model_param_count(const hy_model *m) { return hy_params_count(&m->params); }

void hy_model_init_weights(hy_model *m, uint64_t seed) {
    hy_rng rng;
    hy_rng_seed(&rng, seed);
    hy_params_initialise(&m->params, &rng);
    // alpha = sigmoid(bias) starts near 0.98 (mild decay); beta's bias is 0.
    for (int i = 0; i < m->cfg.n_layers; i++) {
        if (m->layer[i].ab_b < 0) continue;
        float *b = hy_f32(m->params.p[m->layer[i].ab_b].value);
        int H = m->cfg.n_heads;
        for (int h = 0; h < 2 * H; h++) b[h] = h < H ? (float)log(0.98 / 0.02) : 0.0f;
    }
}

void hy_model_to_cuda(hy_model *dst, const hy_model *src, hy_arena *values, hy_arena *grads,
                      hy_arena *half) {
    HY_CHECK(src->params.values, "model_to_cuda: allocate and initialise the host model first");
    hy_model_build(dst, src->arch, &src->cfg);
    hy_params_alloc(&dst->params, values, grads);
    hy_params_alloc_half(&dst->params, half);
    hy_params_copy_values(&dst->params, &src->params);
}

void hy_model_to_cuda_alloc(hy_model *dst, const hy_model *src, hy_arena *values,
                            hy_arena *grads, hy_arena *half) {
    size_t pb = hy_params_bytes(&src->params);
    hy_arena_init(values, "params", HY_CUDA, pb);
    hy_arena_init(grads, "grads", HY_CUDA, pb);  // unused by inference, but part of a GPU table
    hy_arena_init(half, "bf16", HY_CUDA, hy_params_half_bytes(&src->params));
    hy_model_to_cuda(dst, src, values, grads, half);
}
