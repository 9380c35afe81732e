// train_gpu.c: the GPU side of hydra-train (see train_gpu.h).
#include "train_gpu.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../autograd/check.h"
#include "../cuda/hy_cuda.h"
#include "../cuda/hy_cuda_blas.h"

// ---------------------------------------------------------------- device choice
// Why the GPU kernels cannot run this model (into buf), or NULL when they
// can: the DeltaNet and attention kernels are written for heads of 64 or 128
// (tensor-core tiles) and the chunkwise scan for chunks of 64.
static const char *gpu_limits(hy_arch arch, const hy_model_config *m, char *buf, size_t n) {
    int gdn = 0;
    for (int i = 0; arch == HY_ARCH_HYDRA && i < m->n_layers; i++)
        gdn |= m->layer_kind[i] == HY_LAYER_GDN;
    if (m->head_dim != 64 && m->head_dim != 128)
        snprintf(buf, n, "the GPU kernels need model.head_dim = 64 or 128 (this model has %d: "
                 "model.d_model / model.n_heads unless set)", m->head_dim);
    else if (gdn && m->dn_chunk_size != 64)
        snprintf(buf, n, "the GPU kernels need model.dn_chunk_size = 64 (this model has %d)",
                 m->dn_chunk_size);
    else
        return NULL;
    return buf;
}

hy_device hy_device_choose(const char *want, hy_arch arch, const hy_model_config *m,
                           const char *what, char *why, size_t n) {
    why[0] = 0;
    if (!strcmp(want, "cpu")) return HY_CPU;
    int built = hy_cuda_built(), gpus = built ? hy_cuda_device_count() : 0;
    char limit[256];
    const char *bad = gpu_limits(arch, m, limit, sizeof limit);
    if (!strcmp(want, "cuda")) {
        if (!built)
            hy_die(HY_EXIT_USAGE, "%s, but this build has no CUDA support (rebuild with nvcc present "
                                  "and -DHYDRA_CUDA=ON), or use cpu or auto", what);
        if (!gpus) hy_die(HY_EXIT_USAGE, "%s, but no usable GPU was found; use cpu or auto", what);
        if (bad) hy_die(HY_EXIT_USAGE, "%s: %s; use cpu or auto", what, bad);
        return HY_CUDA;
    }
    HY_REQUIRE(!strcmp(want, "auto"), "%s: unknown device '%s' (auto, cpu or cuda)", what, want);
    if (!gpus) return HY_CPU;  // nothing worth a remark: no GPU here
    if (bad) {
        snprintf(why, n, "%s", bad);
        return HY_CPU;
    }
    return HY_CUDA;
}

// ---------------------------------------------------------------- set-up
// Device memory for the optimizer: m, v, the step's scratch and the norm,
// each rounded up to the arena's alignment.
static size_t state_bytes(size_t numel, size_t v_numel, size_t scratch) {
    return (numel + v_numel + 1) * sizeof(float) + scratch + 4 * HY_ALIGN;
}

void hy_train_gpu_init(hy_train_gpu *g, const hy_model *host, const hy_optimizer *opt) {
    memset(g, 0, sizeof *g);
    size_t pbytes = hy_params_bytes(&host->params);
    hy_arena_init(&g->values, "params", HY_CUDA, pbytes);
    hy_arena_init(&g->grads, "grads", HY_CUDA, pbytes);
    hy_arena_init(&g->half, "bf16", HY_CUDA, hy_params_half_bytes(&host->params));
    hy_model_to_cuda(&g->model, host, &g->values, &g->grads, &g->half);
    hy_param_table *t = &g->model.params;
    hy_cuda_param_range *ranges = (hy_cuda_param_range *)hy_xmalloc((size_t)t->n * sizeof *ranges);
    hy_cuda_optim_ranges(&opt->cfg, t, ranges, &g->v_numel);
    // The state is copied to and from the host optimizer as flat blocks:
    // the two layouts must agree.
    HY_CHECK(g->v_numel == opt->v_numel && t->numel == opt->table->numel,
             "train_gpu: the GPU optimizer's layout (%zu + %zu floats) differs from the host's "
             "(%zu + %zu)", t->numel, g->v_numel, opt->table->numel, opt->v_numel);
    g->plan = hy_cuda_optim_plan_create(ranges, t->n);
    free(ranges);
    g->scratch_bytes = hy_cuda_optim_scratch_bytes(g->plan);
    hy_arena_init(&g->state, "optim", HY_CUDA, state_bytes(t->numel, g->v_numel, g->scratch_bytes));
    g->m = (float *)hy_arena_calloc(&g->state, t->numel * sizeof(float));
    g->v = (float *)hy_arena_calloc(&g->state, g->v_numel * sizeof(float));
    g->norm = (float *)hy_arena_calloc(&g->state, sizeof(float));
    g->scratch = g->scratch_bytes ? hy_arena_alloc(&g->state, g->scratch_bytes) : NULL;
}

void hy_train_gpu_free(hy_train_gpu *g) {
    if (g->plan) hy_cuda_optim_plan_destroy(g->plan);
    hy_model_destroy(&g->model);
    hy_arena *all[4] = {&g->values, &g->grads, &g->half, &g->state};
    for (int i = 0; i < 4; i++) hy_arena_free(all[i]);
    memset(g, 0, sizeof *g);
}

void hy_train_gpu_report(const hy_train_gpu *g, FILE *f) {
    const hy_arena *all[4] = {&g->values, &g->grads, &g->half, &g->state};
    for (int i = 0; i < 4; i++) hy_arena_report(all[i], f);
}

// ---------------------------------------------------------------- one step
float hy_train_gpu_clip(hy_train_gpu *g, float max_norm) {
    hy_cuda_clip_grad_norm(g->plan, g->model.params.grads, max_norm, g->norm, g->scratch,
                           g->scratch_bytes, NULL);
    float norm;
    hy_cuda_memcpy_d2h(&norm, g->norm, sizeof norm);  // waits for the clip
    return norm;
}

void hy_train_gpu_step(hy_train_gpu *g, hy_optimizer *opt, float lr_mult) {
    hy_param_table *t = &g->model.params;
    hy_cuda_optim_step(g->plan, &opt->cfg, opt->step + 1, lr_mult, t->values, t->grads, g->m, g->v,
                       g->scratch, g->scratch_bytes, NULL);
    hy_params_refresh_half(t);  // the GEMMs read the bf16 copies
    opt->step++;
    hy_cuda_synchronize();  // so that the step's time includes its update
}

// ---------------------------------------------------------------- staging
void hy_train_gpu_download(const hy_train_gpu *g, hy_model *host, hy_optimizer *opt) {
    hy_params_copy_values(&host->params, &g->model.params);
    hy_cuda_memcpy_d2h(opt->m, g->m, opt->table->numel * sizeof(float));
    if (opt->v_numel) hy_cuda_memcpy_d2h(opt->v, g->v, opt->v_numel * sizeof(float));
}

void hy_train_gpu_upload(hy_train_gpu *g, const hy_model *host, const hy_optimizer *opt) {
    hy_params_copy_values(&g->model.params, &host->params);  // refreshes the bf16 copies
    hy_cuda_memcpy_h2d(g->m, opt->m, opt->table->numel * sizeof(float));
    if (opt->v_numel) hy_cuda_memcpy_h2d(g->v, opt->v, opt->v_numel * sizeof(float));
}

void hy_train_gpu_poison(hy_train_gpu *g, int param) {
    float nan = NAN;
    hy_cuda_memcpy_h2d(hy_f32(g->model.params.p[param].value), &nan, sizeof nan);
    hy_params_refresh_half(&g->model.params);
}
