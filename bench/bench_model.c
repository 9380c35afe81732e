// bench_model.c: the model of a config, loaded and built on the GPU (bench_model.h).
#include "bench_model.h"

#include <stdio.h>
#include <stdlib.h>

#include "../autograd/check.h"
#include "../autograd/rng.h"
#include "../cuda/hy_cuda.h"
#include "../train/batch.h"
#include "../train/plan.h"
#include "bench_report.h"

#define NB 4  // random batches, cycled

void require_config(const char *cmd, opt *o) {
    if (opt_str(o, "--config")) return;
    bench_usage(stderr, cmd);
    hy_die(HY_EXIT_USAGE, "hydra-bench %s: --config FILE is required", cmd);
}

void load_config(hy_run_config *c, const char *cmd, opt *o) {
    const char *path = opt_str(o, "--config");
    hy_run_config_defaults(c);
    hy_run_config_load(c, path);
    for (int i = 0; i < g_nsets; i++) hy_run_config_set(c, g_sets[i]);
    char kv[64];
    opt *b = find_opt(o, "--B"), *t = find_opt(o, "--T");
    if (b && b->value) {
        snprintf(kv, sizeof kv, "train.batch_size=%ld", b->value);
        hy_run_config_set(c, kv);
    }
    if (t && t->value) {
        snprintf(kv, sizeof kv, "train.seq_len=%ld", t->value);
        hy_run_config_set(c, kv);
    }
    hy_run_config_finalize(c);
    char what[1200], why[300];
    snprintf(what, sizeof what, "hydra-bench %s: %s", cmd, path);
    hy_device_choose("cuda", c->arch, &c->model, what, why, sizeof why);
}

static void random_batches(gpu_run *r) {
    int V = r->cfg.model.vocab_size;
    size_t n = (size_t)r->B * r->T;
    r->ids = (int32_t *)hy_xmalloc(NB * n * sizeof(int32_t));
    r->tgt = (int32_t *)hy_xmalloc(NB * n * sizeof(int32_t));
    hy_rng g;
    hy_rng_seed(&g, 1234);
    for (size_t row = 0; row < (size_t)NB * r->B; row++) {
        int32_t *x = r->ids + row * r->T, *y = r->tgt + row * r->T;
        int32_t prev = (int32_t)hy_rng_below(&g, (uint64_t)V);
        for (int t = 0; t < r->T; t++) {
            x[t] = prev;
            y[t] = prev = (int32_t)hy_rng_below(&g, (uint64_t)V);
        }
    }
}

void gpu_run_build(gpu_run *r) {
    hy_run_config *c = &r->cfg;
    r->B = c->train.batch_size, r->T = c->train.seq_len;
    hy_model_build(&r->host, c->arch, &c->model);
    size_t pbytes = hy_params_bytes(&r->host.params);
    hy_arena_init(&r->params, "params", HY_CPU, pbytes);
    hy_arena_init(&r->grads, "grads", HY_CPU, pbytes);
    hy_arena_init(&r->optim, "optim", HY_CPU, hy_optim_state_bytes(&c->optim, &r->host.params));
    // The trainer's plan (train/plan.h): the benchmark reserves what a real run reserves.
    hy_arena_init(&r->acts, "acts", HY_CUDA, hy_plan_activations(c, 2) + hy_plan_gdn_saved(c));
    hy_arena_init(&r->scratch, "scratch", HY_CUDA, hy_plan_activations(c, sizeof(float)));
    hy_arena_init(&r->stage, "stage", HY_CPU, hy_optim_scratch_bytes(&c->optim, &r->host.params));
    hy_params_alloc(&r->host.params, &r->params, &r->grads);
    hy_model_init_weights(&r->host, (uint64_t)c->train.seed);
    hy_optim_init(&r->opt, &c->optim, &r->host.params, &r->optim, &r->stage);
    hy_train_gpu_init(&r->gpu, &r->host, &r->opt);
    r->gpu.model.recompute = c->train.recompute;  // as the trainer (the plan above counts on it)
    hy_tape_init(&r->tape, &r->acts, &r->scratch, 1 << 14, 1 << 15);
    hy_params_bind(&r->gpu.model.params, &r->tape);
    hy_step_graph_init(&r->graph, c->train.cuda_graph);
    r->sched = hy_run_config_schedule(c);
    random_batches(r);
}

void gpu_run_free(gpu_run *r) {
    hy_step_graph_free(&r->graph);
    hy_tape_free(&r->tape);
    hy_train_gpu_free(&r->gpu);
    hy_model_destroy(&r->host);
    hy_arena *all[6] = {&r->params, &r->grads, &r->optim, &r->acts, &r->scratch, &r->stage};
    for (int i = 0; i < 6; i++) hy_arena_free(all[i]);
    free(r->ids);
    free(r->tgt);
}

void print_model(const gpu_run *r, const char *path) {
    char sched[1100];
    const hy_model_config *m = &r->cfg.model;
    printf("model %s: %s, d_model %d, %d layers (%s), %d heads x %d, vocab %d, %lld parameters\n",
           path, r->cfg.arch == HY_ARCH_DENSE ? "dense" : "HydraLM", m->d_model, m->n_layers,
           r->cfg.arch == HY_ARCH_DENSE ? "attention" : hy_config_schedule(m, sched, sizeof sched),
           m->n_heads, m->head_dim, m->vocab_size, (long long)hy_model_param_count(&r->host));
    printf("batch %d x %d, grad_accum %d; random tokens in [0, %d)\n", r->B, r->T,
           r->cfg.train.grad_accum, m->vocab_size);
}

// A fresh tape and micro-batch `mb` in the acts arena (as the trainer: the same addresses
// each time).
static void batch_in(gpu_run *r, int64_t mb, hy_tensor **ids, hy_tensor **tgt) {
    size_t n = (size_t)r->B * r->T, k = (size_t)(mb % NB);
    int64_t shape[2] = {r->B, r->T};
    hy_tape_reset(&r->tape);
    *ids = hy_tensor_new(&r->acts, HY_I32, 2, shape, "ids");
    *tgt = hy_tensor_new(&r->acts, HY_I32, 2, shape, "targets");
    hy_cuda_memcpy_h2d((*ids)->data, r->ids + k * n, n * sizeof(int32_t));
    hy_cuda_memcpy_h2d((*tgt)->data, r->tgt + k * n, n * sizeof(int32_t));
}

hy_tensor *gpu_run_forward(gpu_run *r, int64_t mb) {
    hy_tensor *ids, *tgt, *loss;
    batch_in(r, mb, &ids, &tgt);
    hy_model_forward(&r->gpu.model, &r->tape, ids, tgt, HY_IGNORE_INDEX, &loss);
    return loss;
}

float gpu_run_fwd_bwd(gpu_run *r, int64_t mb) {
    hy_tensor *ids, *tgt;
    batch_in(r, mb, &ids, &tgt);
    return hy_step_graph_run(&r->graph, &r->gpu.model, &r->tape, ids, tgt);
}

float tensor_scalar(const hy_tensor *t) {
    float x;
    hy_tensor_to_host_f32(t, &x);  // waits for the GPU
    return x;
}

void run_figures(const gpu_run *r, const char *path) {
    fig_str("config", "config", "%s", path);
    fig_num("params", "parameters", (double)hy_model_param_count(&r->host), "%.0f", "");
    fig_num("B", "batch size B", r->B, "%.0f", "");
    fig_num("T", "sequence length T", r->T, "%.0f", "");
    fig_num("grad_accum", "micro-batches per step", r->cfg.train.grad_accum, "%.0f", "");
}

