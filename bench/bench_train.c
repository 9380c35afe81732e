// bench_train.c: hydra-bench train: whole training steps of a config's model on the GPU
// (forward, backward, clip, optimizer), tokens/s, MFU and memory.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "../autograd/check.h"
#include "../cuda/hy_cuda.h"
#include "../cuda/hy_cuda_bench.h"
#include "../cuda/hy_cuda_glue.h"
#include "bench_common.h"
#include "bench_kernels.h"
#include "bench_model.h"
#include "bench_report.h"

// NVIDIA's dense (no sparsity) bf16 tensor-core peak of an H100/H200 SXM, TFLOP/s.
#define PEAK_BF16_TFLOPS 989.0

// ---------------------------------------------------------------- model FLOPs
// ---------------------------------------------------------------- timed steps
// One optimizer step as trainer.c takes it (train_step, clip, update): every micro-batch's
// loss is read (a sync, as there), the norm is read by the clip, and the update ends with
// a sync. Returns the mean loss.
static float train_step(gpu_run *r, int64_t step) {
    hy_param_table *p = &r->gpu.model.params;
    int accum = r->cfg.train.grad_accum;
    hy_params_zero_grads(p);
    double sum = 0;
    for (int micro = 0; micro < accum; micro++) sum += gpu_run_fwd_bwd(r, step * accum + micro);
    if (accum > 1) hy_cuda_scale_f32(p->numel, 1.0f / accum, p->grads, NULL);
    hy_train_gpu_clip(&r->gpu, r->cfg.train.grad_clip);
    hy_train_gpu_step(&r->gpu, &r->opt, hy_lr_mult(&r->sched, step));
    return (float)(sum / accum);
}

// Device memory in use now (cudaMemGetInfo: total - free), bytes.
static size_t device_used(void) {
    size_t fr, total;
    hy_cuda_mem_info(&fr, &total);
    return total - fr;
}

// The GPU arenas of a run: reserved (cap) and high-water (peak) bytes.
static void arena_totals(const gpu_run *r, size_t *cap, size_t *peak) {
    const hy_arena *all[6] = {&r->gpu.values, &r->gpu.grads, &r->gpu.half, &r->gpu.state,
                              &r->acts, &r->scratch};
    *cap = *peak = 0;
    for (int i = 0; i < 6; i++) *cap += all[i]->cap, *peak += all[i]->peak;
}

static void memory_figures(const gpu_run *r, size_t used_start) {
    size_t cap, peak, used = device_used();
    arena_totals(r, &cap, &peak);
    fig_num("arenas_reserved_mib", "GPU arenas reserved", mib(cap), "%.0f", "MiB");
    fig_num("arenas_peak_mib", "GPU arenas' peak use", mib(peak), "%.0f", "MiB");
    fig_num("acts_peak_mib", "  of which activations (acts)", mib(r->acts.peak), "%.0f", "MiB");
    fig_num("scratch_peak_mib", "  of which scratch (activation gradients)", mib(r->scratch.peak),
            "%.0f", "MiB");
    fig_num("device_used_mib", "device memory in use (cudaMemGetInfo, whole GPU)", mib(used),
            "%.0f", "MiB");
    fig_num("run_used_mib", "  of which this run (in use now - at start)",
            mib(used) - mib(used_start), "%.0f", "MiB");
}

// `warmup` untimed steps, then `steps` timed ones: wall ms of each into ms[], the first
// and last timed losses.
static void time_train(gpu_run *r, int warmup, int steps, double *ms, float *first, float *last) {
    for (int s = -warmup; s < steps; s++) {
        double t0 = bench_now();
        float loss = train_step(r, s + warmup);
        double dt = (bench_now() - t0) * 1e3;
        if (s < 0) continue;
        ms[s] = dt;
        if (s == 0) *first = loss;
        *last = loss;
        printf("step %d/%d: %.1f ms, loss %.4f\n", s + 1, steps, dt, loss);
    }
}

// ---------------------------------------------------------------- train
int bench_train(int argc, char **argv) {
    opt o[] = {{"--config", OPT_STR, 0, 0, NULL},  {"--B", OPT_INT, 0, 1, NULL},
               {"--T", OPT_INT, 0, 1, NULL},       {"--steps", OPT_INT, 20, 1, NULL},
               {"--warmup", OPT_INT, 3, 0, NULL},  {"--set", OPT_SET, 0, 0, NULL},
               {"--wy", OPT_STR, 0, 0, "default"}, {"--json", OPT_STR, 0, 0, NULL}, OPT_END};
    parse_opts("train", o, argc, argv);
    require_wy("train", o);
    require_config("train", o);
    int steps = (int)opt_int(o, "--steps"), warmup = (int)opt_int(o, "--warmup");
    require_gpu("train");
    gpu_run *r = (gpu_run *)hy_xcalloc(1, sizeof *r);
    load_config(&r->cfg, "train", o);
    bench_header("train", 1, opt_str(o, "--json"));
    apply_wy(opt_str(o, "--wy"));
    ceilings c = ceilings_figures(20);
    size_t used_start = device_used();
    gpu_run_build(r);
    print_model(r, opt_str(o, "--config"));
    printf("memory plan (MiB):\n");
    hy_train_gpu_report(&r->gpu, stdout);
    hy_arena_report(&r->acts, stdout);
    hy_arena_report(&r->scratch, stdout);

    double *ms = (double *)hy_xcalloc((size_t)steps, sizeof(double));
    float first = NAN, last = NAN;
    time_train(r, warmup, steps, ms, &first, &last);
    double sum = 0, lo = ms[0];
    for (int s = 0; s < steps; s++) sum += ms[s], lo = ms[s] < lo ? ms[s] : lo;
    double med = bench_median(ms, steps);
    double tokens = (double)r->B * r->T * r->cfg.train.grad_accum, tps = tokens / (med * 1e-3);
    hy_model_flops f = hy_model_train_flops(&r->gpu.model, r->T);

    run_figures(r, opt_str(o, "--config"));
    fig_num("warmup_steps", "untimed warm-up steps", warmup, "%.0f", "");
    fig_num("steps", "timed steps", steps, "%.0f", "");
    fig_num("cuda_graph", "micro-batch replayed as a CUDA graph (train.cuda_graph)",
            r->cfg.train.cuda_graph, "%.0f", "");
    fig_num("ms_per_step", "ms per step (median)", med, "%.1f", "ms");
    fig_num("ms_per_step_mean", "ms per step (mean)", sum / steps, "%.1f", "ms");
    fig_num("ms_per_step_min", "ms per step (fastest)", lo, "%.1f", "ms");
    fig_num("tokens_per_s", "tokens/s (median step)", tps, "%.0f", "");
    fig_num("gflop_per_token", "model GFLOP per token (fwd + bwd)", f.total / 1e9, "%.3f", "");
    fig_num("gflop_per_token_dense", "  6 x non-embedding parameters", f.dense / 1e9, "%.3f", "");
    fig_num("gflop_per_token_head", "  6 d V (tied head)", f.head / 1e9, "%.3f", "");
    fig_num("gflop_per_token_gdn", "  delta-rule cores", f.gdn / 1e9, "%.3f", "");
    fig_num("gflop_per_token_attn", "  attention in the window", f.attn / 1e9, "%.3f", "");
    fig_num("tflops", "model TFLOP/s achieved", f.total * tps / 1e12, "%.1f", "");
    fig_num("mfu_measured_pct", "MFU vs the measured GEMM ceiling", 100.0 * f.total * tps / 1e12 / c.gemm_tflops,
            "%.1f", "%");
    fig_num("mfu_peak_pct", "MFU vs 989 TFLOP/s (dense bf16 peak)",
            100.0 * f.total * tps / 1e12 / PEAK_BF16_TFLOPS, "%.1f", "%");
    fig_num("loss_first", "loss, first timed step", first, "%.4f", "");
    fig_num("loss_last", "loss, last timed step", last, "%.4f", "");
    memory_figures(r, used_start);
    free(ms);
    gpu_run_free(r);
    free(r);
    return report_finish(1);
}
