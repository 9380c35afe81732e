// eval_model.c: models to measure and their forward passes (see eval_model.h).
#include "eval_model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../autograd/check.h"
#include "../infer/stream.h"
#include "../cuda/hy_cuda.h"
#include "../cuda/hy_cuda_blas.h"
#include "../train/checkpoint.h"
#include "../train/train_gpu.h"

static void alloc_params(hy_eval_model *w) {
    size_t pb = hy_params_bytes(&w->m.params) + HY_ALIGN;
    hy_arena_init(&w->params, "params", HY_CPU, pb);
    hy_arena_init(&w->grads, "grads", HY_CPU, pb);
    hy_params_alloc(&w->m.params, &w->params, &w->grads);
}

// net = the host model, or its copy on GPU 0.
void hy_eval_model_place(hy_eval_model *w, hy_device dev) {
    HY_CHECK(w->net != &w->gm, "hydra-eval: the model is on the GPU already");
    w->net = &w->m;
    if (dev == HY_CPU) return;
    char why[300];
    hy_device_choose("cuda", w->m.arch, &w->m.cfg, "hydra-eval: --device cuda", why, sizeof why);
    hy_cuda_set_device(0);
    hy_cuda_blas_init();
    hy_model_to_cuda_alloc(&w->gm, &w->m, &w->gparams, &w->ggrads, &w->ghalf);
    w->net = &w->gm;
}

void hy_eval_model_fresh(hy_eval_model *w, hy_arch arch, const hy_model_config *c, uint64_t seed,
                         hy_device dev) {
    memset(w, 0, sizeof *w);
    hy_run_config_defaults(&w->cfg);
    w->cfg.arch = arch;
    w->cfg.model = *c;
    hy_model_build(&w->m, arch, c);
    alloc_params(w);
    hy_model_init_weights(&w->m, seed);
    hy_eval_model_place(w, dev);
}

void hy_eval_model_load(hy_eval_model *w, const char *checkpoint, hy_device dev) {
    memset(w, 0, sizeof *w);
    char *text = hy_ckpt_read_config(checkpoint);
    hy_run_config_defaults(&w->cfg);
    hy_run_config_parse_string(&w->cfg, text, checkpoint);
    free(text);
    snprintf(w->cfg.file, sizeof w->cfg.file, "%s", checkpoint);
    hy_run_config_finalize(&w->cfg);
    hy_model_build(&w->m, w->cfg.arch, &w->cfg.model);
    alloc_params(w);
    hy_ckpt_load(checkpoint, &w->m.params, NULL, NULL);
    hy_eval_model_place(w, dev);
}

void hy_eval_model_free(hy_eval_model *w) {
    if (w->net == &w->gm) hy_model_destroy(&w->gm);
    hy_model_destroy(&w->m);
    hy_arena *all[5] = {&w->params, &w->grads, &w->gparams, &w->ggrads, &w->ghalf};
    for (int i = 0; i < 5; i++) hy_arena_free(all[i]);
    memset(w, 0, sizeof *w);
}

hy_device hy_eval_device(const char *device) { return !strcmp(device, "cuda") ? HY_CUDA : HY_CPU; }

const char *hy_eval_device_word(const char *device) {
    return hy_eval_device(device) == HY_CUDA ? "GPU" : "CPU";
}

hy_eval_heads hy_eval_heads_for(hy_device dev, int d_model, int cpu_heads, int cpu_chunk) {
    hy_eval_heads h = {cpu_heads, cpu_chunk};
    if (dev == HY_CUDA) h.n_heads = d_model / 64 > 0 ? d_model / 64 : 1, h.dn_chunk = 64;
    return h;
}

void hy_eval_logits(hy_model *m, const int32_t *ids, int B, int T, int chunk, float *logits) {
    const hy_model_config *c = &m->cfg;
    int V = c->vocab_size;
    if (chunk > T) chunk = T;
    // Batch rows scale the chunk's activations; the dense model's cache
    // prefix may be copied into the work arena too (hy_prefill_work_bytes).
    size_t work = hy_prefill_work_bytes(m, B, chunk, T);
    hy_arena a;
    hy_arena_init(&a, "eval work", hy_model_device(m), work);
    hy_decode_state s;
    hy_decode_init(&s, m, B);
    int32_t *piece = (int32_t *)hy_xmalloc((size_t)B * chunk * sizeof(int32_t));
    float *out = (float *)hy_xmalloc((size_t)B * chunk * V * sizeof(float));
    for (int t0 = 0; t0 < T; t0 += chunk) {
        int n = T - t0 < chunk ? T - t0 : chunk;
        for (int b = 0; b < B; b++)
            memcpy(piece + (size_t)b * n, ids + (size_t)b * T + t0, (size_t)n * sizeof(int32_t));
        hy_model_prefill(m, &s, piece, n, out, &a);
        for (int b = 0; b < B; b++)
            memcpy(logits + ((size_t)b * T + t0) * V, out + (size_t)b * n * V,
                   (size_t)n * V * sizeof(float));
    }
    free(piece);
    free(out);
    hy_decode_free(&s);
    hy_arena_free(&a);
}

double hy_eval_nll(const float *row, int V, int target) {
    double mx = row[0];
    for (int v = 1; v < V; v++)
        if (row[v] > mx) mx = row[v];
    double z = 0;
    for (int v = 0; v < V; v++) z += exp((double)row[v] - mx);
    return log(z) + mx - (double)row[target];
}

int hy_eval_argmax(const float *row, int V) {
    int best = 0;
    for (int v = 1; v < V; v++)
        if (row[v] > row[best]) best = v;
    return best;
}

hy_model_config hy_eval_small_config(int vocab, int d_model, int n_layers, int n_heads,
                                     int swa_window) {
    hy_model_config c = hy_config_default();
    c.vocab_size = vocab;
    c.d_model = d_model;
    c.n_layers = n_layers;
    c.n_heads = n_heads;
    c.swa_window = swa_window;
    c.swa_every = 2;
    hy_config_finalize(&c, "hydra-eval");
    return c;
}
