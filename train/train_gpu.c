// train_gpu.c: the GPU side of hydra-train (see train_gpu.h).
#include "train_gpu.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../autograd/check.h"
#include "../cuda/hy_cuda.h"
#include "../cuda/hy_cuda_blas.h"
#include "zero.h"

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
static size_t state_bytes(size_t m_numel, size_t v_numel, size_t scratch) {
    return (m_numel + v_numel + 1) * sizeof(float) + scratch + 4 * HY_ALIGN;
}

static size_t run16(size_t n) { return (n + 15) / 16 * 16; }  // optim.c's 64-byte runs

// Who owns what (world > 1; everything on rank 0 alone), the pieces the
// collectives move, and this rank's ranges with m and v compacted to its
// own parameters (alone: the host layout, unchanged). Returns how many
// ranges `own` holds.
static int plan_shards(hy_train_gpu *g, const hy_cuda_param_range *full, int n,
                       hy_cuda_param_range *own) {
    int *muon = (int *)hy_xmalloc((size_t)(n ? n : 1) * sizeof(int));
    for (int i = 0; i < n; i++) muon[i] = full[i].muon;
    g->owner = (int *)hy_xmalloc((size_t)(n ? n : 1) * sizeof(int));
    hy_zero_owners(&g->model.params, muon, g->world, g->owner);
    free(muon);
    g->pieces = (hy_dist_piece *)hy_xmalloc((size_t)(n ? n : 1) * sizeof(hy_dist_piece));
    g->v_pieces = (hy_dist_piece *)hy_xmalloc((size_t)(n ? n : 1) * sizeof(hy_dist_piece));
    g->v_param = (int *)hy_xmalloc((size_t)(n ? n : 1) * sizeof(int));
    g->m_at = (size_t *)hy_xmalloc((size_t)(n ? n : 1) * sizeof(size_t));
    g->v_at = (size_t *)hy_xmalloc((size_t)(n ? n : 1) * sizeof(size_t));
    int n_own = 0;
    size_t m_next = 0, v_next = 0;
    g->n_v = 0;
    for (int i = 0; i < n; i++) {
        size_t numel = (size_t)(full[i].rows * full[i].cols);
        g->pieces[i] = (hy_dist_piece){full[i].offset, numel, g->owner[i]};
        if (!full[i].muon) {
            g->v_param[g->n_v] = i;
            g->v_pieces[g->n_v++] = (hy_dist_piece){full[i].v_offset, numel, g->owner[i]};
        }
        g->m_at[i] = g->v_at[i] = SIZE_MAX;
        if (g->owner[i] != g->rank) continue;
        hy_cuda_param_range r = full[i];
        if (g->world > 1) {  // compact: this rank's parameters one after another
            r.m_offset = m_next;
            r.v_offset = r.muon ? 0 : v_next;
            m_next += run16(numel);
            if (!r.muon) v_next += run16(numel);
        }
        g->m_at[i] = r.m_offset;
        if (!r.muon) g->v_at[i] = r.v_offset;
        own[n_own++] = r;
    }
    if (g->world > 1) g->m_numel = m_next, g->v_numel = v_next;
    return n_own;
}

// The overlap's buckets: parameters "blocks.<b>.*" by block, the others last.
static void plan_buckets(hy_train_gpu *g) {
    const hy_param_table *t = &g->model.params;
    int nb = g->model.cfg.n_layers, n = t->n;
    int *which = (int *)hy_xmalloc((size_t)(n ? n : 1) * sizeof(int));
    g->n_blocks = nb;
    g->b_start = (int *)hy_xcalloc((size_t)nb + 2, sizeof(int));
    g->started = (unsigned char *)hy_xcalloc((size_t)nb + 1, 1);
    g->bucket = (hy_dist_piece *)hy_xmalloc((size_t)(n ? n : 1) * sizeof(hy_dist_piece));
    for (int i = 0; i < n; i++) {
        int b;
        which[i] = sscanf(t->p[i].name, "blocks.%d.", &b) == 1 && b >= 0 && b < nb ? b : nb;
        g->b_start[which[i] + 1]++;
    }
    for (int b = 0; b <= nb; b++) g->b_start[b + 1] += g->b_start[b];
    int *fill = (int *)hy_xmalloc(((size_t)nb + 1) * sizeof(int));
    for (int b = 0; b <= nb; b++) fill[b] = g->b_start[b];
    for (int i = 0; i < n; i++) g->bucket[fill[which[i]]++] = g->pieces[i];
    free(fill);
    free(which);
}

void hy_train_gpu_init_dp(hy_train_gpu *g, const hy_model *host, const hy_optimizer *opt,
                          int rank, int world) {
    memset(g, 0, sizeof *g);
    HY_REQUIRE(world >= 1 && rank >= 0 && rank < world, "train_gpu: rank %d of %d", rank, world);
    g->rank = rank, g->world = world;
    size_t pbytes = hy_params_bytes(&host->params);
    hy_arena_init(&g->values, "params", HY_CUDA, pbytes);
    hy_arena_init(&g->grads, "grads", HY_CUDA, pbytes);
    hy_arena_init(&g->half, "bf16", HY_CUDA, hy_params_half_bytes(&host->params));
    hy_model_to_cuda(&g->model, host, &g->values, &g->grads, &g->half);
    hy_param_table *t = &g->model.params;
    size_t nr = (size_t)(t->n ? t->n : 1);
    hy_cuda_param_range *full = (hy_cuda_param_range *)hy_xmalloc(nr * sizeof *full);
    hy_cuda_param_range *own = (hy_cuda_param_range *)hy_xmalloc(nr * sizeof *own);
    size_t v_full;
    hy_cuda_optim_ranges(&opt->cfg, t, full, &v_full);
    // The state is copied to and from the host optimizer as flat blocks
    // (alone) or piece by piece (data parallel): the two layouts must agree.
    HY_CHECK(v_full == opt->v_numel && t->numel == opt->table->numel,
             "train_gpu: the GPU optimizer's layout (%zu + %zu floats) differs from the host's "
             "(%zu + %zu)", t->numel, v_full, opt->table->numel, opt->v_numel);
    g->m_numel = t->numel, g->v_numel = v_full;
    int n_own = plan_shards(g, full, t->n, own);
    plan_buckets(g);
    g->plan = hy_cuda_optim_plan_create(own, n_own);
    // One GPU: the optimizers write the bf16 copies with the values (no refresh
    // pass); data parallel refreshes them after the owners' broadcast.
    if (world == 1) hy_cuda_optim_plan_set_half(g->plan, t->half);
    free(full);
    free(own);
    g->scratch_bytes = hy_cuda_optim_scratch_bytes(g->plan);
    hy_arena_init(&g->state, "optim", HY_CUDA, state_bytes(g->m_numel, g->v_numel, g->scratch_bytes));
    g->m = (float *)hy_arena_calloc(&g->state, g->m_numel * sizeof(float));
    g->v = (float *)hy_arena_calloc(&g->state, g->v_numel * sizeof(float));
    g->norm = (float *)hy_arena_calloc(&g->state, sizeof(float));
    g->scratch = g->scratch_bytes ? hy_arena_alloc(&g->state, g->scratch_bytes) : NULL;
}

void hy_train_gpu_init(hy_train_gpu *g, const hy_model *host, const hy_optimizer *opt) {
    hy_train_gpu_init_dp(g, host, opt, 0, 1);
}

void hy_train_gpu_free(hy_train_gpu *g) {
    if (g->plan) hy_cuda_optim_plan_destroy(g->plan);
    hy_model_destroy(&g->model);
    hy_arena *all[4] = {&g->values, &g->grads, &g->half, &g->state};
    for (int i = 0; i < 4; i++) hy_arena_free(all[i]);
    free(g->owner);
    free(g->pieces);
    free(g->v_pieces);
    free(g->v_param);
    free(g->m_at);
    free(g->v_at);
    free(g->bucket);
    free(g->b_start);
    free(g->started);
    memset(g, 0, sizeof *g);
}

void hy_train_gpu_report(const hy_train_gpu *g, FILE *f) {
    const hy_arena *all[4] = {&g->values, &g->grads, &g->half, &g->state};
    for (int i = 0; i < 4; i++) hy_arena_report(all[i], f);
}

// ---------------------------------------------------------------- one step
static void start_bucket(hy_train_gpu *g, int b) {
    if (g->started[b]) return;
    g->started[b] = 1;
    int first = g->b_start[b], n = g->b_start[b + 1] - first;
    hy_dist_reduce_mean_to_owners_start(g->model.params.grads, g->bucket + first, n, NULL);
}

// The tape's mark hook: block `id`'s gradients are final.
static void on_mark(void *ctx, int id) {
    hy_train_gpu *g = (hy_train_gpu *)ctx;
    if (g->armed && id >= 0 && id < g->n_blocks) start_bucket(g, id);
}

void hy_train_gpu_attach(hy_train_gpu *g, hy_tape *t) {
    if (g->world == 1) return;
    t->on_mark = on_mark;
    t->mark_ctx = g;
}

void hy_train_gpu_arm(hy_train_gpu *g, int armed) { g->armed = armed; }

void hy_train_gpu_reduce_grads(hy_train_gpu *g) {
    if (g->world == 1) return;
    int any = 0;
    for (int b = 0; b <= g->n_blocks; b++) any |= g->started[b];
    if (any) {  // the backward pass started some: the rest, then wait for all
        for (int b = 0; b <= g->n_blocks; b++) start_bucket(g, b);
        hy_dist_wait();
    } else {  // no overlap: every piece in as few groups as possible
        hy_dist_reduce_mean_to_owners(g->model.params.grads, g->pieces, g->model.params.n, NULL);
    }
    memset(g->started, 0, (size_t)g->n_blocks + 1);
    g->armed = 0;
}

float hy_train_gpu_clip(hy_train_gpu *g, float max_norm) {
    float *grads = g->model.params.grads, norm;
    if (g->world == 1) {
        // The norm only: the update clips each gradient as it reads it (the same products
        // as a pass scaling them in place, without that pass's read and write of all).
        hy_cuda_grad_norm(g->plan, grads, g->norm, g->scratch, g->scratch_bytes, NULL);
        hy_cuda_optim_plan_set_clip(g->plan, max_norm, g->norm);
        hy_cuda_memcpy_d2h(&norm, g->norm, sizeof norm);  // waits for the norm
        return norm;
    }
    // Each rank's shard's norm; the whole norm from their squares. The sum
    // is all-reduced, so every rank clips by the same number.
    hy_cuda_grad_norm(g->plan, grads, g->norm, g->scratch, g->scratch_bytes, NULL);
    hy_cuda_memcpy_d2h(&norm, g->norm, sizeof norm);
    double sq = (double)norm * norm;
    hy_dist_allreduce_sum_f64(&sq, 1);
    norm = (float)sqrt(sq);
    hy_cuda_memcpy_h2d(g->norm, &norm, sizeof norm);
    hy_cuda_clip_grads_by(g->plan, grads, max_norm, g->norm, NULL);
    return norm;
}

void hy_train_gpu_step(hy_train_gpu *g, hy_optimizer *opt, float lr_mult) {
    hy_param_table *t = &g->model.params;
    hy_cuda_optim_step(g->plan, &opt->cfg, opt->step + 1, lr_mult, t->values, t->grads, g->m, g->v,
                       g->scratch, g->scratch_bytes, NULL);
    hy_cuda_optim_plan_set_clip(g->plan, 0.0f, NULL);  // a step without hy_train_gpu_clip: none
    if (g->world > 1) {
        hy_dist_broadcast_from_owners(t->values, g->pieces, t->n, NULL);
        hy_params_refresh_half(t);  // the GEMMs read the bf16 copies
    }
    opt->step++;
    hy_cuda_synchronize();  // so that the step's time includes its update
}

// ---------------------------------------------------------------- staging
// Data parallel: the state of every parameter, from its owner's compact
// `mine` (piece k at at[param[k]]; param NULL: piece k is parameter k) to
// `host` (n_host floats, the host layout) on every rank, through the device
// gradients (zeroed first, so the padding between pieces is zero as in the
// host layout).
static void gather_state(hy_train_gpu *g, const float *mine, const size_t *at,
                         const hy_dist_piece *pieces, const int *param, int n, float *host,
                         size_t n_host) {
    hy_param_table *t = &g->model.params;
    hy_params_zero_grads(t);
    float *stage = t->grads;
    for (int k = 0; k < n; k++)
        if (pieces[k].owner == g->rank)
            hy_cuda_memcpy_d2d(stage + pieces[k].offset, mine + at[param ? param[k] : k],
                               pieces[k].numel * sizeof(float));
    hy_dist_broadcast_from_owners(stage, pieces, n, NULL);
    hy_cuda_memcpy_d2h(host, stage, n_host * sizeof(float));
}

// The reverse, without collectives: each rank takes its own pieces.
static void scatter_state(hy_train_gpu *g, float *mine, const size_t *at,
                          const hy_dist_piece *pieces, const int *param, int n, const float *host,
                          size_t n_host) {
    hy_param_table *t = &g->model.params;
    float *stage = t->grads;
    hy_cuda_memcpy_h2d(stage, host, n_host * sizeof(float));
    for (int k = 0; k < n; k++)
        if (pieces[k].owner == g->rank)
            hy_cuda_memcpy_d2d(mine + at[param ? param[k] : k], stage + pieces[k].offset,
                               pieces[k].numel * sizeof(float));
    hy_params_zero_grads(t);
}

void hy_train_gpu_download(hy_train_gpu *g, hy_model *host, hy_optimizer *opt) {
    hy_params_copy_values(&host->params, &g->model.params);  // the same on every rank
    if (g->world == 1) {
        hy_cuda_memcpy_d2h(opt->m, g->m, opt->table->numel * sizeof(float));
        if (opt->v_numel) hy_cuda_memcpy_d2h(opt->v, g->v, opt->v_numel * sizeof(float));
        return;
    }
    int n = g->model.params.n;
    gather_state(g, g->m, g->m_at, g->pieces, NULL, n, opt->m, opt->table->numel);
    gather_state(g, g->v, g->v_at, g->v_pieces, g->v_param, g->n_v, opt->v, opt->v_numel);
}

void hy_train_gpu_upload(hy_train_gpu *g, const hy_model *host, const hy_optimizer *opt) {
    hy_params_copy_values(&g->model.params, &host->params);  // refreshes the bf16 copies
    if (g->world == 1) {
        hy_cuda_memcpy_h2d(g->m, opt->m, opt->table->numel * sizeof(float));
        if (opt->v_numel) hy_cuda_memcpy_h2d(g->v, opt->v, opt->v_numel * sizeof(float));
        return;
    }
    int n = g->model.params.n;
    scatter_state(g, g->m, g->m_at, g->pieces, NULL, n, opt->m, opt->table->numel);
    scatter_state(g, g->v, g->v_at, g->v_pieces, g->v_param, g->n_v, opt->v, opt->v_numel);
}

double hy_gpu_peak_bf16_tflops(const char *name) {
    if (!name) return 0;
    if (strstr(name, "H200")) return 989.4;
    if (strstr(name, "H100")) return strstr(name, "PCIe") ? 756.0 : 989.4;
    if (strstr(name, "A100")) return 312.0;
    if (strstr(name, "L40S")) return 362.1;
    return 0;
}

void hy_train_gpu_poison(hy_train_gpu *g, int param) {
    float nan = NAN;
    hy_cuda_memcpy_h2d(hy_f32(g->model.params.p[param].value), &nan, sizeof nan);
    hy_params_refresh_half(&g->model.params);
}
