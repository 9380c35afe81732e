// bench_decode.c: hydra-bench decode: a config's model (random weights) on the GPU, batch
// 1: prefill a random prompt, then one token at a time (greedy), against the bandwidth floor.
#include <stdio.h>
#include <stdlib.h>

#include "../autograd/check.h"
#include "../autograd/rng.h"
#include "../cuda/hy_cuda.h"
#include "../layers/model.h"
#include "../train/run_config.h"
#include "bench_common.h"
#include "bench_decode_kernels.h"
#include "bench_model.h"
#include "bench_report.h"

// Work memory of a forward without the tape over T tokens of batch 1: the trainer's plan
// at fp32 size per value (room for the fp32 gates and logits), plus 64 MiB.
static size_t decode_work_bytes(const hy_model_config *m, int T) {
    size_t width = (size_t)(m->d_model > m->n_heads * m->head_dim ? m->d_model : m->n_heads * m->head_dim);
    size_t per_tok = (24 * width + 4 * (size_t)m->mlp_hidden) * m->n_layers + 3 * (size_t)m->vocab_size;
    return per_tok * (size_t)T * sizeof(float) + ((size_t)64 << 20);
}

// A model with random weights (hy_model_init_weights) on the GPU for decoding: the host
// copy, the device copy (hy_model_to_cuda), a CUDA work arena and a batch-1 state.
typedef struct {
    hy_model host, dev;
    hy_arena params, grads, values, dgrads, half, work;
    hy_decode_state st;
} decoder;

static void decoder_build(decoder *d, const hy_run_config *cfg, int prompt) {
    hy_model_build(&d->host, cfg->arch, &cfg->model);
    size_t pbytes = hy_params_bytes(&d->host.params);
    hy_arena_init(&d->params, "params", HY_CPU, pbytes);
    hy_arena_init(&d->grads, "grads", HY_CPU, pbytes);
    hy_params_alloc(&d->host.params, &d->params, &d->grads);
    hy_model_init_weights(&d->host, (uint64_t)cfg->train.seed);
    hy_arena_init(&d->values, "params", HY_CUDA, pbytes);
    hy_arena_init(&d->dgrads, "grads", HY_CUDA, pbytes);
    hy_arena_init(&d->half, "bf16", HY_CUDA, hy_params_half_bytes(&d->host.params));
    hy_model_to_cuda(&d->dev, &d->host, &d->values, &d->dgrads, &d->half);
    hy_arena_init(&d->work, "work", HY_CUDA, decode_work_bytes(&cfg->model, prompt));
    hy_decode_init(&d->st, &d->dev, 1);
}

static void decoder_free(decoder *d) {
    hy_decode_free(&d->st);
    hy_model_destroy(&d->dev);
    hy_model_destroy(&d->host);
    hy_arena *all[6] = {&d->params, &d->grads, &d->values, &d->dgrads, &d->half, &d->work};
    for (int i = 0; i < 6; i++) hy_arena_free(all[i]);
}

// A fresh state holding the prompt; the GPU is idle when it returns.
static void prefill(decoder *d, const int32_t *prompt, int P) {
    hy_decode_reset(&d->st);
    hy_model_prefill(&d->dev, &d->st, prompt, P, NULL, &d->work);
    hy_cuda_synchronize();
}

// Median ms of `reps` prefills (after one untimed).
static double time_prefill(decoder *d, const int32_t *prompt, int P, int reps) {
    double *ms = (double *)hy_xcalloc((size_t)reps, sizeof(double));
    for (int k = -1; k < reps; k++) {
        double t0 = bench_now();
        prefill(d, prompt, P);
        if (k >= 0) ms[k] = (bench_now() - t0) * 1e3;
    }
    double med = bench_median(ms, reps);
    free(ms);
    return med;
}

// Arrival times of greedy tokens (hy_tokens_fn): ms[i] since the token before (the
// first: since t0).
typedef struct {
    double *ms, last;
    int n;
} arrivals;

static void arrived(void *ctx, const int32_t *tok) {
    (void)tok;
    arrivals *a = (arrivals *)ctx;
    double now = bench_now();
    a->ms[a->n++] = (now - a->last) * 1e3;
    a->last = now;
}

// N greedy tokens after the prompt (16 untimed ones first, then a fresh prefill). With
// `on_device` the argmax runs on the GPU in the step's graph and only the tokens come
// back, the steps queued ahead of the host (hy_model_generate_greedy, as hydra-generate
// decodes greedily); otherwise each step copies the logits to the host (its sync), as
// sampling does, and the host takes their argmax. Returns the total ms; *per_tok the
// median token's ms (between arrivals).
static double time_decode(decoder *d, const int32_t *prompt, int P, int N, int on_device,
                          double *per_tok) {
    int V = d->dev.cfg.vocab_size;
    float *logits = (float *)hy_xmalloc((size_t)V * sizeof(float));
    arrivals a = {(double *)hy_xcalloc((size_t)N + 16, sizeof(double)), 0, 0};
    double total = 0;
    for (int pass = 0; pass < 2; pass++) {
        prefill(d, prompt, P);
        int32_t tok = prompt[P - 1];
        int n = pass ? N : 16;
        a.n = 0;
        double t0 = a.last = bench_now();
        if (on_device) {
            hy_model_generate_greedy(&d->dev, &d->st, &tok, n, NULL, arrived, &a, &d->work);
        } else {
            for (int i = 0; i < n; i++) {
                hy_model_step(&d->dev, &d->st, &tok, logits, &d->work);
                tok = hy_greedy_token(logits, V);
                arrived(&a, &tok);
            }
        }
        total = (bench_now() - t0) * 1e3;
    }
    *per_tok = bench_median(a.ms, N);
    free(a.ms);
    free(logits);
    return total;
}

static void decode_row(table *t, const char *phase, int n, double ms, double per_tok,
                       double floor_tps) {
    int r = table_row(t);
    set_str(t, r, 0, "%s", phase);
    set_num(t, r, 1, n);
    set_num(t, r, 2, ms);
    set_num(t, r, 3, per_tok);
    set_num(t, r, 4, n / (ms * 1e-3));
    if (floor_tps > 0) set_num(t, r, 5, 100.0 * (n / (ms * 1e-3)) / floor_tps);
}

// total[0], per_tok[0]: logits to the host; [1]: greedy on the device.
static void decode_table(int P, int N, int reps, double prefill_ms, const double *total,
                         const double *per_tok, double floor_tps) {
    static const column cols[] = {{"phase", "phase", "%s"},          {"tokens", "tokens", "%.0f"},
                                  {"ms", "ms", "%.2f"},              {"ms_per_token", "ms/token", "%.3f"},
                                  {"tokens_per_s", "tokens/s", "%.0f"}, {"pct_floor", "% of bandwidth floor", "%.1f"}};
    char title[160];
    snprintf(title, sizeof title, "Decoding, batch 1 (prefill: median of %d; decode: median "
             "token, tokens/s over all %d)", reps, N);
    table *t = table_new("decode", title, cols, 6);
    decode_row(t, "prefill", P, prefill_ms, prefill_ms / P, 0);  // no floor: "-"
    decode_row(t, "decode, logits to the host", N, total[0], per_tok[0], floor_tps);
    decode_row(t, "decode, greedy on the device", N, total[1], per_tok[1], floor_tps);
}

int bench_decode(int argc, char **argv) {
    opt o[] = {{"--config", OPT_STR, 0, 0, NULL}, {"--prompt", OPT_INT, 512, 1, NULL},
               {"--new", OPT_INT, 256, 1, NULL},  {"--reps", OPT_INT, 5, 1, NULL},
               {"--set", OPT_SET, 0, 0, NULL},    {"--json", OPT_STR, 0, 0, NULL}, OPT_END};
    parse_opts("decode", o, argc, argv);
    require_config("decode", o);
    int P = (int)opt_int(o, "--prompt"), N = (int)opt_int(o, "--new"), reps = (int)opt_int(o, "--reps");
    require_gpu("decode");
    hy_run_config cfg;
    load_config(&cfg, "decode", o);
    bench_header("decode", 1, opt_str(o, "--json"));
    ceilings c = ceilings_figures(20);
    decoder *d = (decoder *)hy_xcalloc(1, sizeof *d);
    decoder_build(d, &cfg, P);
    int32_t *prompt = (int32_t *)hy_xmalloc((size_t)P * sizeof(int32_t));
    hy_rng g;
    hy_rng_seed(&g, 99);
    for (int i = 0; i < P; i++) prompt[i] = (int32_t)hy_rng_below(&g, (uint64_t)cfg.model.vocab_size);

    double prefill_ms = time_prefill(d, prompt, P, reps), per_tok[2], total[2];
    for (int k = 0; k < 2; k++) total[k] = time_decode(d, prompt, P, N, k, &per_tok[k]);
    double params = (double)hy_model_param_count(&d->host), wbytes = 2.0 * params;  // bf16, once a token
    double floor_tps = c.copy_gbs * 1e9 / wbytes;
    fig_str("config", "config", "%s", opt_str(o, "--config"));
    fig_num("params", "parameters", params, "%.0f", "");
    fig_num("prompt", "prompt tokens (random)", P, "%.0f", "");
    fig_num("new", "new tokens (greedy)", N, "%.0f", "");
    fig_num("state_mib", "decoding state (batch 1)", mib(d->st.bytes), "%.2f", "MiB");
    fig_num("weights_mb", "bf16 weights read per token", wbytes / 1e6, "%.1f", "MB");
    fig_num("floor_tokens_per_s", "bandwidth floor (copy ceiling / weights)", floor_tps, "%.0f",
            "tokens/s");
    bench_decode_breakdown(&d->dev, d->st.graph);
    decode_table(P, N, reps, prefill_ms, total, per_tok, floor_tps);
    free(prompt);
    decoder_free(d);
    free(d);
    return report_finish(1);
}
