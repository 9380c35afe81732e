// config.h: the model configuration, field for field the PyTorch reference's
// HydraConfig (same names, same defaults), so configs and checkpoints move
// between the two.
#ifndef HY_CONFIG_H
#define HY_CONFIG_H

#include <stdint.h>

#define HY_MAX_LAYERS 256

typedef enum { HY_LAYER_GDN = 0, HY_LAYER_SWA = 1 } hy_layer_kind;

typedef struct {
    int vocab_size;            // 32000
    int pad_token_id;          // 0: its embedding row gets no gradient from the lookup
    int d_model;               // 768
    int n_layers;              // 12
    int n_heads;               // 12
    int head_dim;              // 0 = d_model / n_heads
    double mlp_mult;           // 8/3
    int mlp_multiple_of;       // 64
    int dn_short_conv_kernel;  // 4
    int dn_use_gate;           // 1
    int dn_chunk_size;         // 64
    int dn_norm_qk;            // 1
    int swa_window;            // 512
    double swa_rope_base;      // 10000
    int swa_every;             // 4 (0: no SWA layers)
    char layers[1024];         // "" or an explicit list "gdn,gdn,swa,..." (also "deltanet")
    double rms_eps;            // 1e-5
    int tie_embeddings;        // 1
    double initializer_range;  // 0.02
    // Derived by hy_config_finalize():
    hy_layer_kind layer_kind[HY_MAX_LAYERS];
    int mlp_hidden;            // multiple_of * ceil(floor(d_model * mlp_mult) / multiple_of)
} hy_model_config;

hy_model_config hy_config_default(void);

// Derive head_dim, the layer schedule and the MLP width, and check every
// field; an invalid value or combination is one clear error (exit 2).
// `where` prefixes messages (e.g. the config file name); may be NULL.
void hy_config_finalize(hy_model_config *c, const char *where);

// "gdn,gdn,gdn,swa" into buf.
const char *hy_config_schedule(const hy_model_config *c, char *buf, int n);

#endif
