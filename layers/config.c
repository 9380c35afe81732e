#include "config.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../autograd/check.h"

hy_model_config hy_config_default(void) {
    hy_model_config c;
    memset(&c, 0, sizeof c);
    c.vocab_size = 32000;
    c.pad_token_id = 0;
    c.d_model = 768;
    c.n_layers = 12;
    c.n_heads = 12;
    c.head_dim = 0;
    c.mlp_mult = 8.0 / 3.0;
    c.mlp_multiple_of = 64;
    c.dn_short_conv_kernel = 4;
    c.dn_use_gate = 1;
    c.dn_chunk_size = 64;
    c.dn_norm_qk = 1;
    c.swa_window = 512;
    c.swa_rope_base = 10000.0;
    c.swa_every = 4;
    c.rms_eps = 1e-5;
    c.tie_embeddings = 1;
    c.initializer_range = 0.02;
    return c;
}

#define BAD(...) hy_die(HY_EXIT_USAGE, __VA_ARGS__)

static void parse_layers(hy_model_config *c, const char *w) {
    char buf[sizeof c->layers];
    snprintf(buf, sizeof buf, "%s", c->layers);
    int n = 0;
    for (char *save = NULL, *tok = strtok_r(buf, ", ", &save); tok;
         tok = strtok_r(NULL, ", ", &save)) {
        if (n >= HY_MAX_LAYERS) BAD("%smodel.layers: more than %d layers", w, HY_MAX_LAYERS);
        if (!strcmp(tok, "gdn") || !strcmp(tok, "deltanet"))
            c->layer_kind[n++] = HY_LAYER_GDN;
        else if (!strcmp(tok, "swa"))
            c->layer_kind[n++] = HY_LAYER_SWA;
        else
            BAD("%smodel.layers: unknown layer type '%s' (expected gdn or swa)", w, tok);
    }
    if (n != c->n_layers)
        BAD("%smodel.layers lists %d layers but model.n_layers is %d", w, n, c->n_layers);
}

void hy_config_finalize(hy_model_config *c, const char *where) {
    char w[300] = "";
    if (where && *where) snprintf(w, sizeof w, "%s: ", where);
    if (c->vocab_size < 2) BAD("%smodel.vocab_size must be at least 2, got %d", w, c->vocab_size);
    if (c->d_model < 1) BAD("%smodel.d_model must be positive, got %d", w, c->d_model);
    if (c->n_layers < 1 || c->n_layers > HY_MAX_LAYERS)
        BAD("%smodel.n_layers must be in [1, %d], got %d", w, HY_MAX_LAYERS, c->n_layers);
    if (c->n_heads < 1) BAD("%smodel.n_heads must be positive, got %d", w, c->n_heads);
    if (c->head_dim == 0) {
        if (c->d_model % c->n_heads)
            BAD("%smodel.d_model (%d) is not divisible by model.n_heads (%d); set model.head_dim",
                w, c->d_model, c->n_heads);
        c->head_dim = c->d_model / c->n_heads;
    }
    if (c->head_dim < 1) BAD("%smodel.head_dim must be positive, got %d", w, c->head_dim);
    if (c->pad_token_id >= c->vocab_size)
        BAD("%smodel.pad_token_id (%d) must be below vocab_size (%d) (or negative for none)", w,
            c->pad_token_id, c->vocab_size);
    if (!(c->mlp_mult > 0)) BAD("%smodel.mlp_mult must be positive, got %g", w, c->mlp_mult);
    if (c->mlp_multiple_of < 1)
        BAD("%smodel.mlp_multiple_of must be positive, got %d", w, c->mlp_multiple_of);
    if (c->dn_short_conv_kernel < 1)
        BAD("%smodel.dn_short_conv_kernel must be at least 1, got %d", w, c->dn_short_conv_kernel);
    if (c->dn_chunk_size < 1)
        BAD("%smodel.dn_chunk_size must be positive, got %d", w, c->dn_chunk_size);
    if (c->swa_window < 1) BAD("%smodel.swa_window must be at least 1, got %d", w, c->swa_window);
    if (!(c->swa_rope_base > 1))
        BAD("%smodel.swa_rope_base must be greater than 1, got %g", w, c->swa_rope_base);
    if (c->swa_every < 0) BAD("%smodel.swa_every must be >= 0, got %d", w, c->swa_every);
    if (!(c->rms_eps > 0)) BAD("%smodel.rms_eps must be positive, got %g", w, c->rms_eps);
    if (!(c->initializer_range > 0))
        BAD("%smodel.initializer_range must be positive, got %g", w, c->initializer_range);

    if (c->layers[0]) {
        parse_layers(c, w);
    } else {
        for (int i = 0; i < c->n_layers; i++)
            c->layer_kind[i] = (c->swa_every > 0 && (i + 1) % c->swa_every == 0) ? HY_LAYER_SWA
                                                                                : HY_LAYER_GDN;
    }
    for (int i = 0; i < c->n_layers; i++)
        if (c->layer_kind[i] == HY_LAYER_SWA && c->head_dim % 2)
            BAD("%smodel.head_dim (%d) must be even: RoPE in the SWA layers rotates pairs", w,
                c->head_dim);
    int hidden = (int)floor(c->d_model * c->mlp_mult);
    c->mlp_hidden = c->mlp_multiple_of * ((hidden + c->mlp_multiple_of - 1) / c->mlp_multiple_of);
}

const char *hy_config_schedule(const hy_model_config *c, char *buf, int n) {
    int k = 0;
    buf[0] = 0;
    for (int i = 0; i < c->n_layers && k < n; i++)
        k += snprintf(buf + k, n - k, "%s%s", i ? "," : "",
                      c->layer_kind[i] == HY_LAYER_SWA ? "swa" : "gdn");
    return buf;
}
