// flops.c: FLOP accounting (see flops.h).
#include "flops.h"

// FLOPs of the chunkwise (WY) algorithm per token and head, chunk C, dk = dv = D, 2 per
// multiply-add, every product at its full size (what the tensor cores run: the causal
// masks are not discounted). Per chunk of C tokens:
//   A = (beta K) K^T                       2 C^2 D
//   T = (I + strictly lower A)^-1          2 C^3 / 3   (triangular inverse; an upper bound)
//   W = T (beta K), U = T (beta V)         4 C^2 D
//   V' = U - W S^T                         2 C D^2
//   O = Q S^T + ((Q K^T) o mask) V'        2 C D^2 + 4 C^2 D
//   S <- decay S + V'^T K                  2 C D^2
// so per token 10 C D + 6 D^2 + 2 C^2 / 3 (C = 64, D = 128: 183 kFLOP). Backward counts
// twice the forward (the two gradient products of each product); what the kernels
// recompute is not useful work and is not counted: fwd+bwd = 3 x forward, as in 6N.
double hy_gdn_flops_per_token(int C, int D) {
    return 10.0 * C * D + 6.0 * (double)D * D + 2.0 * (double)C * C / 3.0;
}

double hy_window_pairs(int T, int W) {
    double s = 0;
    for (int i = 0; i < T; i++) s += i + 1 < W ? i + 1 : W;
    return s;
}

hy_model_flops hy_model_train_flops(const hy_model *m, int T) {
    const hy_model_config *c = &m->cfg;
    double d = c->d_model, V = c->vocab_size, H = c->n_heads, D = c->head_dim;
    int W = m->arch == HY_ARCH_DENSE ? T : c->swa_window;
    hy_model_flops f = {0, 0, 0, 0, 0};
    f.dense = 6.0 * ((double)hy_model_param_count(m) - V * d);
    f.head = 6.0 * d * V;
    for (int i = 0; i < c->n_layers; i++) {
        if (m->layer[i].kind == HY_LAYER_GDN)
            f.gdn += 3.0 * H * hy_gdn_flops_per_token(c->dn_chunk_size, (int)D);
        else
            f.attn += 3.0 * H * 4.0 * D * hy_window_pairs(T, W) / T;
    }
    f.total = f.dense + f.head + f.gdn + f.attn;
    return f;
}
