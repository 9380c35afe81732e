// trainer.c: the training loop of hydra-train (see trainer.h).
#include "trainer.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../autograd/check.h"
#include "../cuda/hy_cuda.h"
#include "../cuda/hy_cuda_blas.h"
#include "../cuda/hy_cuda_dist.h"
#include "../cuda/hy_cuda_glue.h"
#include "../cuda/hy_cuda_ops.h"
#include "../infer/sample.h"
#include "../layers/flops.h"
#include "../optim/clip.h"
#include "batch.h"
#include "checkpoint.h"
#include "launch.h"
#include "plan.h"
#include "step_graph.h"
#include "train_gpu.h"
#include "train_log.h"

static volatile sig_atomic_t g_stop;  // set by SIGINT/SIGTERM: save and leave after this step

static void on_signal(int sig) {
    (void)sig;
    g_stop = 1;
}

typedef struct {
    const char *config;
    const char *sets[128];
    int n_sets;
    const char *resume;
    char out[1024];
    int64_t stop_at_step;  // testing hook: behave as if SIGTERM arrived after this step
    int64_t nan_at_step;   // testing hook: poison a weight before this step (1-based)
    int gpus;              // --gpus N: launch N ranks on this host (0: not given)
    const char *nccl_init; // --nccl-init file:PATH (srun, mpirun)
    int64_t die_at_step;   // testing hook: rank 1 exits with status 3 before this step
} train_args;

// On the GPU the host model, its arenas and `opt` are the staging copies
// for checkpoints; `gpu` holds the working copy, and acts and scratch (the
// tape's) are CUDA arenas.
typedef struct {
    hy_run_config cfg;
    char *cfg_text;
    hy_device device;
    hy_model model;
    hy_arena params, grads, optim, acts, scratch;
    hy_arena stage;     // GPU runs: the host scratch hy_optim_init() asks for (never used)
    hy_train_gpu gpu;   // GPU runs only
    int32_t *eval_idx;  // GPU runs: (B, T) argmax of the logits, for accuracy; NULL: not counted
    hy_tape tape;
    hy_step_graph graph;  // one GPU, train.cuda_graph: the micro-batch's recording
    hy_optimizer opt;
    hy_schedule sched;
    hy_batcher data;
    hy_train_state st;
    int32_t *in, *tgt;  // (B, T) host batch
    char last_ckpt[1300];
    hy_metrics log;
    // Data parallel (hydra-train --gpus N, srun, mpirun): this process is rank
    // `rank` of `world` (0 of 1 alone) on GPU `cuda_device`. Parameters are
    // replicated and the optimizer state sharded (ZeRO-1, train_gpu.h): each
    // gradient is averaged onto the rank that owns it, which updates it and
    // sends the new values to all. Rank 0 alone prints, writes DIR and samples.
    int rank, world, local_rank;
    int cuda_device;  // the CUDA device this process uses
    // MFU in percent = mfu_per_tok_s x tokens/s (all ranks); 0 on the CPU or
    // on a GPU whose peak is not known.
    double mfu_per_tok_s;
} run;

static void usage(FILE *f) {
    fprintf(f,
            "usage: hydra-train CONFIG.ini [--set section.key=value ...] [--resume PATH|latest]\n"
            "                   [--out DIR] [--gpus N] [--nccl-init file:PATH]\n"
            "       hydra-train --help-config      every config key, its type and default\n"
            "Trains a model from an INI config. DIR (default runs/<config name>) receives\n"
            "config.ini, metrics.jsonl, ckpt-STEP.h5 checkpoints and a `latest` pointer.\n"
            "--gpus N trains data parallel on N GPUs of this host (one process each). Under\n"
            "srun or mpirun (one task per GPU) the ranks come from the environment and\n"
            "--nccl-init file:PATH (on a filesystem every node sees) carries NCCL's id; or\n"
            "set NCCL_COMM_ID=host:port instead.\n");
}

static void parse_args(train_args *a, int argc, char **argv) {
    memset(a, 0, sizeof *a);
    a->stop_at_step = -1;
    a->nan_at_step = -1;
    a->die_at_step = -1;
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        int has_value = i + 1 < argc;
        if (!strcmp(s, "--set") && has_value) {
            HY_REQUIRE(a->n_sets < 128, "hydra-train: too many --set options");
            a->sets[a->n_sets++] = argv[++i];
        } else if (!strcmp(s, "--resume") && has_value) {
            a->resume = argv[++i];
        } else if (!strcmp(s, "--out") && has_value) {
            snprintf(a->out, sizeof a->out, "%s", argv[++i]);
        } else if (!strcmp(s, "--stop-at-step") && has_value) {
            a->stop_at_step = atoll(argv[++i]);
        } else if (!strcmp(s, "--inject-nan-at-step") && has_value) {
            a->nan_at_step = atoll(argv[++i]);
        } else if (!strcmp(s, "--gpus") && has_value) {
            const char *v = argv[++i];
            char *end;
            long n = strtol(v, &end, 10);
            HY_REQUIRE(*v && !*end && n >= 1 && n <= 4096,
                       "hydra-train: --gpus '%s': expected the number of GPUs (>= 1)", v);
            a->gpus = (int)n;
        } else if (!strcmp(s, "--nccl-init") && has_value) {
            a->nccl_init = argv[++i];
        } else if (!strcmp(s, "--die-at-step") && has_value) {
            a->die_at_step = atoll(argv[++i]);
        } else if (s[0] == '-') {
            usage(stderr);
            hy_die(HY_EXIT_USAGE, "hydra-train: unknown option '%s'%s", s,
                   has_value ? "" : " (or a missing value)");
        } else {
            HY_REQUIRE(!a->config, "hydra-train: one config file, got '%s' and '%s'", a->config, s);
            a->config = s;
        }
    }
    if (!a->config) {
        usage(stderr);
        hy_die(HY_EXIT_USAGE, "hydra-train: no config file given");
    }
    if (!a->out[0]) {
        const char *base = strrchr(a->config, '/');
        base = base ? base + 1 : a->config;
        int n = (int)strcspn(base, ".");
        snprintf(a->out, sizeof a->out, "runs/%.*s", n, base);
    }
}

static void mkdir_p(const char *dir) {
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", dir);
    for (char *p = buf + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            mkdir(buf, 0755);
            *p = '/';
        }
    if (mkdir(buf, 0755) != 0 && errno != EEXIST)
        hy_die(HY_EXIT_USAGE, "%s: cannot create the run directory: %s", dir, strerror(errno));
}

// Atomically replace `path` with `text`.
static void write_file_atomic(const char *path, const char *text) {
    char tmp[1200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    FILE *f = fopen(tmp, "wb");
    HY_CHECK(f, "%s: cannot write: %s", tmp, strerror(errno));
    int ok = fputs(text, f) >= 0 && fflush(f) == 0 && fsync(fileno(f)) == 0;
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        hy_die(HY_EXIT_FAIL, "%s: cannot write: %s", path, strerror(errno));
    }
}

// ---------------------------------------------------------------- set-up
static void load_config(run *r, const train_args *a) {
    hy_run_config_defaults(&r->cfg);
    hy_run_config_load(&r->cfg, a->config);
    for (int i = 0; i < a->n_sets; i++) hy_run_config_set(&r->cfg, a->sets[i]);
    hy_run_config_finalize(&r->cfg);
    r->cfg_text = hy_run_config_format(&r->cfg);
}

// cpu | cuda | auto (the GPU when there is one and the kernels can run the
// model). Decided before anything is built or written, so that a request
// that cannot be met stops the run with one error naming the key.
static void choose_device(run *r) {
    const hy_run_config *c = &r->cfg;
    const char *d = c->train.device;
    char what[1200], why[300], info[256];
    snprintf(what, sizeof what, "%s: train.device = %s", c->file, d);
    r->device = hy_device_choose(d, c->arch, &c->model, what, why, sizeof why);
    const char *how = !strcmp(d, "auto") ? "auto: " : "";
    if (r->world > 1) {
        // check_multi_gpu() has ruled out cpu; auto may still fall back for a
        // model the GPU kernels cannot run.
        HY_REQUIRE(r->device == HY_CUDA, "%s: rank %d of %d would train on the CPU (%s); data "
                   "parallel training runs on GPUs only", what, r->rank, r->world,
                   why[0] ? why : "no GPU");
        // One task per GPU: GPU `local_rank` of the host, or the only GPU a
        // task sees (srun --gpus-per-task=1 gives each its own CUDA_VISIBLE_DEVICES).
        int n = hy_cuda_device_count();
        r->cuda_device = n == 1 ? 0 : r->local_rank;
        HY_REQUIRE(r->cuda_device < n, "rank %d of %d: local rank %d needs GPU %d, but this process "
                   "sees %d GPUs (one task per GPU)", r->rank, r->world, r->local_rank,
                   r->local_rank, n);
    }
    if (r->device == HY_CUDA) {
        hy_cuda_set_device(r->cuda_device);
        printf("device: cuda (%s%s)\n", how, hy_cuda_device_info(r->cuda_device, info, sizeof info));
    } else {
        printf("device: cpu (%s%s)\n", how,
               !strcmp(d, "cpu") ? "as configured" : why[0] ? why : "no GPU");
    }
}

// --gpus N (`ranks` = N) or one rank of a job of `ranks`: GPUs only, a build
// with CUDA and NCCL, enough GPUs. Checked before anything starts, with one
// usage error (exit 2) naming what is missing.
static void check_multi_gpu(const run *r, int ranks, int local) {
    const hy_run_config *c = &r->cfg;
    char what[1200], why[300];
    if (local)
        snprintf(what, sizeof what, "--gpus %d", ranks);
    else
        snprintf(what, sizeof what, "rank %d of %d", r->rank, ranks);
    HY_REQUIRE(strcmp(c->train.device, "cpu"), "%s: data parallel training runs on GPUs, but "
               "train.device = cpu; set it to cuda or auto (or drop %s)", what,
               local ? "--gpus" : "the extra tasks");
    HY_REQUIRE(hy_cuda_built(), "%s: this build has no CUDA support (rebuild with nvcc present and "
               "-DHYDRA_CUDA=ON; `hydra-info` shows what a build has)", what);
    HY_REQUIRE(hy_dist_built(), "%s: this build has no NCCL, so it cannot train on several GPUs "
               "(install libnccl-dev or put NCCL in CMAKE_PREFIX_PATH and re-run cmake with "
               "-DHYDRA_NCCL=ON; `hydra-info` shows what a build has)", what);
    int n = hy_cuda_device_count();
    if (local) {
        HY_REQUIRE(n > 0, "%s: no usable GPU was found on this host", what);
        HY_REQUIRE(n >= ranks, "%s: this host shows only %d GPU%s", what, n, n == 1 ? "" : "s");
    }
    // The kernels' limits on the model (head_dim, chunk size), as for cuda.
    snprintf(what + strlen(what), sizeof what - strlen(what), ": %s", c->file);
    hy_device_choose("cuda", c->arch, &c->model, what, why, sizeof why);
    int accum = c->train.grad_accum;
    HY_REQUIRE((int64_t)accum * ranks <= 1024, "%s: train.grad_accum %d x %d ranks = %lld "
               "micro-batches per step (at most 1024)", what, accum, ranks,
               (long long)accum * ranks);
}

// Accuracy on the GPU needs the logits, which the fused head + loss never
// materialises: a second forward writes them (bf16), the GPU takes each
// position's argmax and the host counts hits. The second forward doubles a
// validation's cost, so it runs for MQAR (whose point is accuracy) and for
// batch x seq x vocab up to 64M logits.
static void plan_gpu_accuracy(run *r) {
    const hy_run_config *c = &r->cfg;
    size_t pos = (size_t)c->train.batch_size * c->train.seq_len, n = pos * c->model.vocab_size;
    if (r->data.kind == HY_SRC_MQAR || n <= ((size_t)64 << 20))
        r->eval_idx = (int32_t *)hy_xmalloc(pos * sizeof(int32_t));
    else
        printf("note: accuracy is not computed on the GPU for this vocabulary (batch x seq x vocab "
               "= %zu logits > 64M: a second forward per validation batch); it is reported as NaN\n", n);
}

// The GPU's working copy of the model and optimizer, the tape's arenas on
// the device, and a host scratch that only satisfies hy_optim_init (the
// host optimizer is the checkpoint staging copy and never steps).
static void build_gpu(run *r) {
    hy_run_config *c = &r->cfg;
    hy_cuda_blas_init();
    hy_arena_init(&r->acts, "acts", HY_CUDA, hy_plan_activations(c, 2) + hy_plan_gdn_saved(c));
    hy_arena_init(&r->scratch, "scratch", HY_CUDA, hy_plan_activations(c, sizeof(float)));
    hy_arena_init(&r->stage, "stage", HY_CPU, hy_optim_scratch_bytes(&c->optim, &r->model.params));
    hy_params_alloc(&r->model.params, &r->params, &r->grads);
    hy_model_init_weights(&r->model, (uint64_t)c->train.seed);
    hy_optim_init(&r->opt, &c->optim, &r->model.params, &r->optim, &r->stage);
    hy_train_gpu_init_dp(&r->gpu, &r->model, &r->opt, r->rank, r->world);
    plan_gpu_accuracy(r);
    char info[256];
    double peak = hy_gpu_peak_bf16_tflops(hy_cuda_device_info(r->cuda_device, info, sizeof info));
    if (peak > 0)
        r->mfu_per_tok_s = 100.0 * hy_model_train_flops(&r->model, c->train.seq_len).total /
                           (r->world * peak * 1e12);
}

// The model that runs: the GPU's copy on a GPU run.
static hy_model *net(run *r) { return r->device == HY_CUDA ? &r->gpu.model : &r->model; }

static void build(run *r) {
    hy_run_config *c = &r->cfg;
    hy_model_build(&r->model, c->arch, &c->model);
    size_t pbytes = hy_params_bytes(&r->model.params);
    hy_arena_init(&r->params, "params", HY_CPU, pbytes);
    hy_arena_init(&r->grads, "grads", HY_CPU, pbytes);
    hy_arena_init(&r->optim, "optim", HY_CPU, hy_optim_state_bytes(&c->optim, &r->model.params));
    if (r->device == HY_CUDA) {
        build_gpu(r);
    } else {
        size_t abytes = hy_plan_activations(c, sizeof(float));
        hy_arena_init(&r->acts, "acts", HY_CPU, abytes);
        hy_arena_init(&r->scratch, "scratch", HY_CPU,
                      abytes + hy_optim_scratch_bytes(&c->optim, &r->model.params));
        hy_params_alloc(&r->model.params, &r->params, &r->grads);
        hy_model_init_weights(&r->model, (uint64_t)c->train.seed);
        hy_optim_init(&r->opt, &c->optim, &r->model.params, &r->optim, &r->scratch);
    }
    hy_tape_init(&r->tape, &r->acts, &r->scratch, 1 << 14, 1 << 15);
    net(r)->recompute = c->train.recompute;
    hy_params_bind(&net(r)->params, &r->tape);
    // Data parallel, train.overlap_reduce: block reduces start during backward.
    if (r->device == HY_CUDA && c->train.overlap_reduce) hy_train_gpu_attach(&r->gpu, &r->tape);
    hy_step_graph_init(&r->graph, r->device == HY_CUDA && r->world == 1 && c->train.cuda_graph);
    r->sched = hy_run_config_schedule(c);
    size_t n = (size_t)c->train.batch_size * c->train.seq_len;
    r->in = (int32_t *)hy_xmalloc(n * sizeof(int32_t));
    r->tgt = (int32_t *)hy_xmalloc(n * sizeof(int32_t));
    memset(&r->st, 0, sizeof r->st);
    hy_rng_seed(&r->st.rng, (uint64_t)c->train.seed ^ 0x5a5a5a5aULL);
    r->st.val_loss = NAN;
}

static void print_plan(const run *r) {
    char sched[1100];
    const hy_model_config *m = &r->cfg.model;
    printf("model: %s, d_model %d, %d layers (%s), %d heads x %d, vocab %d: %lld parameters\n",
           r->cfg.arch == HY_ARCH_DENSE ? "dense" : "HydraLM", m->d_model, m->n_layers,
           r->cfg.arch == HY_ARCH_DENSE ? "attention" : hy_config_schedule(m, sched, sizeof sched),
           m->n_heads, m->head_dim, m->vocab_size, (long long)hy_model_param_count(&r->model));
    printf("memory plan (MiB)%s:\n",
           r->device == HY_CUDA ? "; the cpu params, grads and optim stage checkpoints" : "");
    const hy_arena *all[5] = {&r->params, &r->grads, &r->optim, &r->acts, &r->scratch};
    for (int i = 0; i < 5; i++) hy_arena_report(all[i], stdout);
    if (r->device == HY_CUDA) {
        hy_arena_report(&r->stage, stdout);
        hy_train_gpu_report(&r->gpu, stdout);
    }
}

static void resolve_resume(const train_args *a, char *path, size_t n) {
    path[0] = 0;
    if (!a->resume) return;
    if (!strcmp(a->resume, "latest")) {
        if (!hy_ckpt_latest(a->out, path, n))
            hy_die(HY_EXIT_USAGE, "--resume latest: no checkpoint in %s", a->out);
    } else {
        snprintf(path, n, "%s", a->resume);
    }
}

// ---------------------------------------------------------------- one step
// A host (B, T) batch (r->in or r->tgt) as an i32 tensor in the acts arena,
// on the run's device.
static hy_tensor *batch_tensor(run *r, const int32_t *src, const char *name) {
    int64_t shape[2] = {r->cfg.train.batch_size, r->cfg.train.seq_len};
    hy_tensor *t = hy_tensor_new(&r->acts, HY_I32, 2, shape, name);
    if (t->device == HY_CUDA)
        hy_cuda_memcpy_h2d(t->data, src, hy_nbytes(t));
    else
        memcpy(t->data, src, hy_nbytes(t));
    return t;
}

// A scalar (a loss) from either device.
static float scalar(const hy_tensor *t) {
    float x;
    hy_tensor_to_host_f32(t, &x);
    return x;
}

// The forward and backward passes of one step on this rank: its mean loss
// over its micro-batches; the gradients are left averaged over the
// micro-batches of every rank. The data is a function of the global
// micro-batch index rank * grad_accum + micro (the batcher is the world-of-
// one view on every rank), so N ranks at grad_accum A see exactly the
// batches of one process at grad_accum N * A: the runs differ only in the
// order of the floating-point sums, and a checkpoint moves between world
// sizes at the same global batch without changing the data.
static float train_step(run *r, int64_t step) {
    const hy_run_config *c = &r->cfg;
    hy_param_table *params = &net(r)->params;
    hy_params_zero_grads(params);
    double sum = 0;
    for (int micro = 0; micro < c->train.grad_accum; micro++) {
        // Data parallel: the last backward starts each block's reduce as
        // soon as that block's gradients are final.
        if (r->world > 1) hy_train_gpu_arm(&r->gpu, micro == c->train.grad_accum - 1);
        hy_batcher_train(&r->data, step, r->rank * c->train.grad_accum + micro, r->in, r->tgt);
        hy_tape_reset(&r->tape);
        hy_tensor *ids = batch_tensor(r, r->in, "ids");
        hy_tensor *tgt = batch_tensor(r, r->tgt, "targets");
        sum += hy_step_graph_run(&r->graph, net(r), &r->tape, ids, tgt);
    }
    // Data parallel: each gradient averaged over the ranks onto the rank that
    // owns it (ZeRO-1, train_gpu.h), the blocks' reduces already under way;
    // clipping and the update follow there.
    if (r->world > 1) hy_train_gpu_reduce_grads(&r->gpu);
    if (c->train.grad_accum > 1) {
        // Each micro-batch's loss is a mean; the step's gradient is their mean.
        float s = 1.0f / c->train.grad_accum;
        if (params->device == HY_CUDA)
            hy_cuda_scale_f32(params->numel, s, params->grads, NULL);
        else
            for (size_t i = 0; i < params->numel; i++) params->grads[i] *= s;
    }
    return (float)(sum / c->train.grad_accum);
}

// Clipping and the update, on the run's device; returns the gradient norm
// before clipping.
static float clip(run *r) {
    float max_norm = r->cfg.train.grad_clip;
    if (r->device == HY_CUDA) return hy_train_gpu_clip(&r->gpu, max_norm);
    return hy_clip_grad_norm(&r->model.params, max_norm);
}

static void update(run *r, float lr_mult) {
    if (r->device == HY_CUDA)
        hy_train_gpu_step(&r->gpu, &r->opt, lr_mult);
    else
        hy_optim_step(&r->opt, lr_mult);
}

// Fault injection for the NaN test: a NaN in the final norm's weight.
static void poison(run *r) {
    if (r->device == HY_CUDA)
        hy_train_gpu_poison(&r->gpu, r->gpu.model.norm_f);
    else
        hy_f32(r->model.params.p[r->model.norm_f].value)[0] = NAN;
}

// Argmax hits of logits (n, V) host f32 against r->tgt over labelled positions.
static void count_hits(const run *r, const float *lg, int64_t n, int64_t *right, int64_t *total) {
    int V = r->cfg.model.vocab_size;
    for (int64_t p = 0; p < n; p++) {
        if (r->tgt[p] == HY_IGNORE_INDEX) continue;
        const float *row = lg + p * V;
        int best = 0;
        for (int v = 1; v < V; v++)
            if (row[v] > row[best]) best = v;
        *right += best == r->tgt[p];
        (*total)++;
    }
}

// The same from each position's argmax (n) (the GPU's).
static void count_idx_hits(const run *r, const int32_t *idx, int64_t n, int64_t *right,
                           int64_t *total) {
    for (int64_t p = 0; p < n; p++) {
        if (r->tgt[p] == HY_IGNORE_INDEX) continue;
        *right += idx[p] == r->tgt[p];
        (*total)++;
    }
}

// One validation batch (in r->in, r->tgt): its mean loss; argmax hits are
// added to right / total. The CPU forward returns the logits with the loss;
// the GPU's fused head does not, so a second forward without targets gives
// them and the GPU their argmax (when r->eval_idx is there; otherwise
// nothing is counted).
static float eval_batch(run *r, int64_t *right, int64_t *total) {
    int64_t n = (int64_t)r->cfg.train.batch_size * r->cfg.train.seq_len;
    hy_tape_reset(&r->tape);
    hy_tensor *ids = batch_tensor(r, r->in, "ids"), *tgt = batch_tensor(r, r->tgt, "targets");
    hy_tensor *l;
    hy_tensor *logits = hy_model_forward(net(r), &r->tape, ids, tgt, HY_IGNORE_INDEX, &l);
    float loss = scalar(l);
    if (r->device == HY_CPU) {
        count_hits(r, hy_f32(logits), n, right, total);
    } else if (r->eval_idx) {
        hy_tape_reset(&r->tape);  // room for the logits: the first forward is done with
        ids = batch_tensor(r, r->in, "ids");
        logits = hy_model_forward(net(r), &r->tape, ids, NULL, HY_IGNORE_INDEX, NULL);  // (B, T, V) bf16
        hy_expect_dtype("accuracy", logits, HY_BF16);
        int32_t *idx = (int32_t *)hy_arena_alloc(r->tape.acts, (size_t)n * sizeof(int32_t));  // (B, T)
        hy_cuda_argmax_rows(n, r->cfg.model.vocab_size, logits->data, idx, NULL);
        hy_cuda_memcpy_d2h(r->eval_idx, idx, (size_t)n * sizeof(int32_t));
        count_idx_hits(r, r->eval_idx, n, right, total);
    }
    return loss;
}

// Mean validation loss and next-token accuracy over labelled positions
// (NaN when there are none, or on the GPU when the logits are too many).
// With several ranks, rank k evaluates batches k, k + world, ... and the
// sums are all-reduced: the same batches and the same result as one process.
static void evaluate(run *r, float *loss_out, float *acc_out) {
    const hy_run_config *c = &r->cfg;
    double loss = 0;
    int64_t right = 0, total = 0;
    // MQAR accuracy is measured on eval.mqar_sequences held-out sequences.
    int batches = r->data.kind == HY_SRC_MQAR
                      ? (c->eval.mqar_sequences + c->train.batch_size - 1) / c->train.batch_size
                      : c->train.eval_batches;
    r->tape.enabled = 0;
    for (int i = r->rank; i < batches; i += r->world) {
        hy_batcher_val(&r->data, i, r->in, r->tgt);
        loss += eval_batch(r, &right, &total);
    }
    r->tape.enabled = 1;
    hy_tape_reset(&r->tape);
    if (r->world > 1) {
        double sums[3] = {loss, (double)right, (double)total};
        hy_dist_allreduce_sum_f64(sums, 3);
        loss = sums[0];
        right = (int64_t)sums[1];
        total = (int64_t)sums[2];
    }
    *loss_out = (float)(loss / batches);
    *acc_out = total ? (float)right / (float)total : NAN;
}

// A short sample from a newline prompt, for byte-level models. The decode
// temporaries go in the acts arena (on the model's device), free between steps.
static void print_sample(run *r) {
    const hy_run_config *c = &r->cfg;
    hy_decode_state s;
    hy_decode_init(&s, net(r), 1);
    int V = c->model.vocab_size;
    float *logits = (float *)hy_xmalloc((size_t)V * 2 * sizeof(float));
    hy_sampler sm = {0.8f, 0, 0.95f};
    int32_t tok = '\n';
    hy_tape_reset(&r->tape);
    printf("sample: ");
    for (int i = 0; i < c->train.sample_tokens; i++) {
        hy_model_step(net(r), &s, &tok, logits, &r->acts);
        tok = hy_sample(&sm, logits, V, &r->st.rng, logits + V);
        unsigned char ch = (unsigned char)tok;
        if (ch == '\n')
            printf("\n        ");
        else
            putchar(ch >= 32 && ch < 127 ? ch : '?');
    }
    printf("\n");
    free(logits);
    hy_decode_free(&s);
}

// FNV-1a over n bytes, continuing from h.
static uint64_t fnv1a(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = (const unsigned char *)p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ULL;
    return h;
}

// Data parallel: the replicas must be the same bits on every rank (they
// take the same step from the same averaged gradients). A hash of a rank's
// bytes in 16-bit pieces x_k, all-reduced with their squares: the ranks
// agree iff world * sum(x^2) == (sum x)^2 for every piece (exact in
// doubles), so every rank reaches the same verdict. Collective: every rank
// calls it with its own hash.
static int ranks_differ(const run *r, uint64_t h) {
    double x[8];
    for (int k = 0; k < 4; k++) {
        x[k] = (double)((h >> (16 * k)) & 0xffff);
        x[4 + k] = x[k] * x[k];
    }
    hy_dist_allreduce_sum_f64(x, 8);
    int differ = 0;
    for (int k = 0; k < 4; k++) differ |= x[4 + k] * r->world != x[k] * x[k];
    return differ;
}

// The tensors of the flat buffers a (and b, at the same offsets, when not
// NULL) whose bytes differ across the ranks: rank 0 names up to 8 of them
// on stderr; returns how many differ. One all-reduce per tensor: for the
// failure path and the per-step debugging check only.
static int name_differing(const run *r, const float *a, const float *b, const char *what) {
    const hy_param_table *t = &r->model.params;
    int n = 0;
    for (int i = 0; i < t->n; i++) {
        size_t off = t->p[i].offset, bytes = hy_numel(t->p[i].value) * sizeof(float);
        uint64_t h = fnv1a(0xcbf29ce484222325ULL, a + off, bytes);
        if (b) h = fnv1a(h, b + off, bytes);
        if (!ranks_differ(r, h)) continue;
        if (r->rank == 0 && n < 8)
            fprintf(stderr, "hydra: step %lld: %s of '%s' differ across the ranks\n",
                    (long long)r->st.step, what, t->p[i].name);
        n++;
    }
    return n;
}

// The parameters and optimizer state (host copies, just downloaded) are
// the same bits on every rank, or the run stops naming what differs.
static void check_replicas(run *r) {
    const hy_optimizer *o = &r->opt;
    uint64_t h = fnv1a(0xcbf29ce484222325ULL, r->model.params.values,
                       r->model.params.numel * sizeof(float));
    h = fnv1a(h, o->m, o->table->numel * sizeof(float));
    if (o->v_numel) h = fnv1a(h, o->v, o->v_numel * sizeof(float));
    if (!ranks_differ(r, h)) return;
    int n = name_differing(r, r->model.params.values, o->m, "parameters or first moments");
    HY_CHECK(0, "step %lld: the model replicas differ across the %d ranks (%d tensors%s); the "
             "ranks' updates are not deterministic",
             (long long)r->st.step, r->world, n, n ? ", named above" : ": the second moments");
}

// HYDRA_CHECK_REPLICAS=1 (debugging data parallelism): after every step
// the replicas (weights, and the optimizer state gathered from the owners)
// are compared across the ranks, so the first step and tensor where they
// part is named.
static int replica_debugging(const run *r) {
    const char *e = getenv("HYDRA_CHECK_REPLICAS");
    return r->world > 1 && r->device == HY_CUDA && e && strcmp(e, "1") == 0;
}

static void check_replicas_every_step(run *r) {
    if (!replica_debugging(r)) return;
    hy_train_gpu_download(&r->gpu, &r->model, &r->opt);
    check_replicas(r);
}

// Every rank calls this (the replicas are compared); rank 0 writes: its copy
// is the whole model, so a run saved on N GPUs resumes on M.
static void save(run *r, const train_args *a) {
    char name[64], path[1200];
    snprintf(name, sizeof name, "ckpt-%lld.h5", (long long)r->st.step);
    snprintf(path, sizeof path, "%s/%s", a->out, name);
    // Checkpoints are written from the host copies, whichever device trains.
    if (r->device == HY_CUDA) hy_train_gpu_download(&r->gpu, &r->model, &r->opt);
    if (r->world > 1) check_replicas(r);  // also the barrier before the write
    if (r->rank == 0) {
        hy_ckpt_save(path, r->cfg_text, &r->model.params, &r->opt, &r->st);
        hy_ckpt_write_latest(a->out, name);
        hy_ckpt_prune(a->out, r->cfg.train.keep_checkpoints);
        printf("checkpoint: %s\n", path);
    }
    snprintf(r->last_ckpt, sizeof r->last_ckpt, "%s", path);
    if (r->world > 1) hy_dist_barrier();  // the file is whole before any rank goes on
}

static void stop_on_bad_loss(const run *r, int64_t step, float loss, float norm) {
    hy_die(HY_EXIT_FAIL,
           "step %lld: the %s is %s; stopping. %s%s%s", (long long)(step + 1),
           isfinite(loss) ? "gradient norm" : "loss", isfinite(loss) ? (isnan(norm) ? "nan" : "infinite")
                                                                     : (isnan(loss) ? "nan" : "infinite"),
           r->last_ckpt[0] ? "The last good checkpoint, " : "No checkpoint was written yet",
           r->last_ckpt[0] ? r->last_ckpt : "", r->last_ckpt[0] ? ", is intact" : "");
}

// ---------------------------------------------------------------- the loop
// Data parallel: the step's loss averaged over the ranks, and whether any
// rank was asked to stop (SIGINT/SIGTERM), in one all-reduce, so that every
// rank stops, saves and leaves after the same step.
static float agree(run *r, float loss, int *stop) {
    if (r->world == 1) {
        *stop = g_stop != 0;
        return loss;
    }
    double x[2] = {loss, g_stop ? 1.0 : 0.0};
    hy_dist_allreduce_sum_f64(x, 2);
    *stop = x[1] > 0;
    return (float)(x[0] / r->world);
}

static int train_loop(run *r, const train_args *a) {
    const hy_run_config *c = &r->cfg;
    // The global batch: every rank's micro-batches.
    int64_t steps = c->train.steps, tokens_per_step =
        (int64_t)c->train.batch_size * c->train.seq_len * c->train.grad_accum * r->world;
    int bytes = hy_batcher_is_bytes(&r->data, c);
    int saved_at = -1, lead = r->rank == 0;
    double ema_ms = 0, start = hy_now();
    for (int64_t step = r->st.step; step < steps; step++) {
        double t0 = hy_now();
        if (r->rank == 1 && a->die_at_step >= 0 && step + 1 >= a->die_at_step) {
            // Testing hook: a rank that dies mid-run (the supervisor must stop the job).
            fprintf(stderr, "hydra: rank 1: --die-at-step %lld: exiting with status 3 before step "
                    "%lld (test hook)\n", (long long)a->die_at_step, (long long)(step + 1));
            fflush(stdout);
            fflush(stderr);
            _exit(3);  // at once, as a crash would: no teardown under the live communicator
        }
        if (step + 1 == a->nan_at_step) poison(r);
        int stop;
        float loss = agree(r, train_step(r, step), &stop);
        float norm = clip(r);
        if (!isfinite(loss) || !isfinite(norm)) stop_on_bad_loss(r, step, loss, norm);
        float mult = hy_lr_mult(&r->sched, step);
        update(r, mult);
        r->st.step = step + 1;
        check_replicas_every_step(r);
        r->st.tokens += tokens_per_step;
        r->st.loss = loss;
        double ms = (hy_now() - t0) * 1e3;
        ema_ms = ema_ms == 0 ? ms : 0.9 * ema_ms + 0.1 * ms;  // smooths the ETA
        double tps = tokens_per_step / (ms * 1e-3);
        hy_step_line line = {.step = step + 1,
                             .steps = steps,
                             .loss = loss,
                             .lr = c->optim.lr * mult,
                             .norm = norm,
                             .ms = ms,
                             .tok_per_s = tps,
                             .eta_s = ema_ms * (double)(steps - step - 1) * 1e-3,
                             .tokens = r->st.tokens,
                             .elapsed_s = hy_now() - start,
                             .mfu_pct = r->mfu_per_tok_s * tps,
                             .ranks = r->world,
                             .batch = (int64_t)c->train.batch_size * c->train.grad_accum * r->world};
        if (lead)
            hy_metrics_step(&r->log, &line, (step + 1) % c->train.log_every == 0 || step + 1 == steps);
        int last = step + 1 == steps;
        if ((c->train.eval_every && (step + 1) % c->train.eval_every == 0) || last) {
            float vl, acc;
            evaluate(r, &vl, &acc);
            r->st.val_loss = vl;
            if (lead) hy_metrics_eval(&r->log, step + 1, vl, acc, hy_now() - start);
        }
        if (lead && bytes && c->train.sample_every && (step + 1) % c->train.sample_every == 0)
            print_sample(r);
        // One process: a signal during the rest of the step still counts now.
        if (r->world == 1 && g_stop) stop = 1;
        if (a->stop_at_step >= 0 && step + 1 >= a->stop_at_step) stop = 1;
        if ((c->train.checkpoint_every && (step + 1) % c->train.checkpoint_every == 0) || last ||
            stop) {
            save(r, a);
            saved_at = (int)(step + 1);
        }
        if (stop && !last) {
            printf("stopped after step %lld; resume with: --resume latest --out %s\n",
                   (long long)(step + 1), a->out);
            return 130;
        }
    }
    if (saved_at < 0 && r->st.step == steps) printf("nothing to do: the run already has %lld steps\n",
                                                     (long long)steps);
    return 0;
}

int hy_train_main(int argc, char **argv) {
    if (argc > 1 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
        usage(stdout);
        return 0;
    }
    if (argc > 1 && !strcmp(argv[1], "--help-config")) {
        hy_run_config_print_help(stdout);
        return 0;
    }
    train_args a;
    parse_args(&a, argc, argv);
    hy_launch_plan plan;
    hy_launch_decide(&plan, a.gpus, a.nccl_init);
    run *r = (run *)hy_xcalloc(1, sizeof *r);
    r->rank = plan.rank;
    r->world = plan.world;
    r->local_rank = plan.local_rank;
    // Rank 0 alone speaks on stdout (errors still reach stderr from every rank).
    if (r->rank > 0 && !freopen("/dev/null", "w", stdout))
        hy_die(HY_EXIT_FAIL, "rank %d: cannot redirect stdout to /dev/null", r->rank);
    load_config(r, &a);
    if (plan.mode == HY_LAUNCH_PARENT) {
        // The config is checked once here; then N copies of this program train.
        check_multi_gpu(r, plan.gpus, 1);
        free(r->cfg_text);
        free(r);
        return hy_launch_local(plan.gpus, argc, argv);
    }
    if (r->world > 1) check_multi_gpu(r, r->world, 0);
    choose_device(r);
    if (r->world > 1) {
        unsigned char id[HY_DIST_ID_BYTES];
        hy_launch_fetch_id(&plan, a.nccl_init, id);
        hy_dist_init(r->rank, r->world, id, r->cuda_device);
        hy_launch_joined(&plan, a.nccl_init);
        const hy_train_config *t = &r->cfg.train;
        printf("data parallel: %d ranks (%s), one GPU each; global batch %lld sequences = %d x "
               "grad_accum %d x %d ranks (%lld tokens per step); parameters replicated, optimizer "
               "state sharded (ZeRO-1: each tensor's state and update on one rank, Muon on "
               "whole matrices), gradients averaged onto the owners (NCCL)\n", r->world, plan.source,
               (long long)t->batch_size * t->grad_accum * r->world, t->batch_size, t->grad_accum,
               r->world, (long long)t->batch_size * t->grad_accum * r->world * t->seq_len);
    }
    char resume[1100];
    resolve_resume(&a, resume, sizeof resume);
    // Everything the run reads is checked before DIR is touched. Every rank
    // has the world-of-one view of the data (see train_step).
    hy_batcher_open(&r->data, &r->cfg, 0, 1);
    build(r);
    if (resume[0]) {
        hy_ckpt_load(resume, &r->model.params, &r->opt, &r->st);
        if (r->device == HY_CUDA) hy_train_gpu_upload(&r->gpu, &r->model, &r->opt);
        snprintf(r->last_ckpt, sizeof r->last_ckpt, "%s", resume);
        printf("resumed from %s at step %lld\n", resume, (long long)r->st.step);
    }
    printf("config (resolved):\n%s\n", r->cfg_text);
    print_plan(r);
    if (r->rank == 0) {
        mkdir_p(a.out);
        char path[1100];
        snprintf(path, sizeof path, "%s/config.ini", a.out);
        write_file_atomic(path, r->cfg_text);
        hy_metrics_open(&r->log, a.out);
    }
    g_stop = 0;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    int rc = train_loop(r, &a);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    printf("peak memory (MiB): acts %.1f, scratch %.1f\n", r->acts.peak / 1048576.0,
           r->scratch.peak / 1048576.0);
    hy_metrics_close(&r->log);
    hy_dist_destroy();
    hy_batcher_close(&r->data);
    hy_step_graph_free(&r->graph);
    hy_tape_free(&r->tape);
    if (r->device == HY_CUDA) hy_train_gpu_free(&r->gpu);
    hy_model_destroy(&r->model);
    hy_arena *all[6] = {&r->params, &r->grads, &r->optim, &r->acts, &r->scratch, &r->stage};
    for (int i = 0; i < 6; i++) hy_arena_free(all[i]);
    free(r->eval_idx);
    free(r->in);
    free(r->tgt);
    free(r->cfg_text);
    free(r);
    return rc;
}
