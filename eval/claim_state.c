// claim_state.c: constant_state, streaming at constant memory and speed.
//
// 2^16 (smoke) or 2^20 (full) tokens go through HydraLM's decoding state
// via the streaming engine. Recorded at 1K, 2K, 4K, ...: the state's bytes,
// the process's resident memory, and the median time per token of the
// chunks since the previous mark. The claim's time comparison is measured
// under equal load: a second stream is held at 4K tokens and, at the end,
// chunks are fed alternately to it and to the main stream.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../cuda/hy_cuda.h"
#include "../infer/stream.h"
#include "claims.h"
#include "eval_model.h"
#include "fit.h"
#include "timing_model.h"

#define STREAM_CHUNK 256
#define MAX_MARKS 40
#define TIMING_PAIRS 64
#define MAX_CHUNKS 4096

typedef struct {
    int64_t next_mark;  // next power of two at which to record
    int n;
    int64_t tokens[MAX_MARKS];
    size_t state[MAX_MARKS], rss[MAX_MARKS], hwm[MAX_MARKS];
    double us_per_tok[MAX_MARKS];  // median over the chunks since the previous mark
    double chunk_s[MAX_CHUNKS];    // seconds per token of each chunk since the previous mark
    int n_chunk;
    size_t rss_at_4k, rss_max_after_4k;
    int gpu;                            // the model runs on the GPU: its memory is read too
    size_t gpu_mem[MAX_MARKS], gpu_at_4k, gpu_max_after_4k;
} stream_log;

typedef struct {
    int64_t streamed;
    double wall_s, model_s;
    double us_early, us_end;  // interleaved: at 4K, at the end
    int64_t nonfinite;
    size_t final_bytes;
} stream_result;

static int stream_probe(void *ctx, const hy_stream *s, double dt) {
    stream_log *L = (stream_log *)ctx;
    if (L->n_chunk < MAX_CHUNKS) L->chunk_s[L->n_chunk++] = dt / s->last_T;
    size_t rss = hy_proc_rss_bytes(), gmem = L->gpu ? hy_cuda_mem_in_use() : 0;
    if (s->tokens > 4096 && rss > L->rss_max_after_4k) L->rss_max_after_4k = rss;
    if (s->tokens > 4096 && gmem > L->gpu_max_after_4k) L->gpu_max_after_4k = gmem;
    if (s->tokens < L->next_mark || L->n >= MAX_MARKS) return 0;
    int i = L->n++;
    L->tokens[i] = s->tokens;
    L->state[i] = s->state.bytes;
    L->rss[i] = rss;
    L->gpu_mem[i] = gmem;
    if (s->tokens == 4096) L->gpu_at_4k = gmem;
    L->hwm[i] = hy_proc_peak_rss_bytes();
    L->us_per_tok[i] = hy_median(L->chunk_s, L->n_chunk) * 1e6;
    if (s->tokens == 4096) L->rss_at_4k = rss;
    L->n_chunk = 0;
    L->next_mark *= 2;
    return 0;
}

// One chunk on `a`, one on `b`, TIMING_PAIRS times, so a change of load on
// a shared machine hits both alike. The fastest chunk of each, in us per
// token: load from other work only adds time (a build running beside the
// 24-pair median once gave a ratio of 1.30 on a 2-core machine).
static void interleaved(hy_stream *a, hy_stream *b, uint64_t seed, double *ua, double *ub) {
    double ta[TIMING_PAIRS], tb[TIMING_PAIRS];
    hy_random_tokens src;
    hy_random_tokens_init(&src, seed, 0, a->model->cfg.vocab_size);
    for (int i = 0; i < TIMING_PAIRS; i++) {
        hy_random_tokens_source(&src, a->ids, STREAM_CHUNK);
        ta[i] = hy_stream_feed(a, a->ids, STREAM_CHUNK) / STREAM_CHUNK;
        hy_random_tokens_source(&src, b->ids, STREAM_CHUNK);
        tb[i] = hy_stream_feed(b, b->ids, STREAM_CHUNK) / STREAM_CHUNK;
    }
    double fa = ta[0], fb = tb[0];
    for (int i = 1; i < TIMING_PAIRS; i++) fa = fmin(fa, ta[i]), fb = fmin(fb, tb[i]);
    *ua = fa * 1e6;
    *ub = fb * 1e6;
}

// The whole measurement, on one thread.
static void run_stream(const hy_eval_opts *o, hy_model *m, int64_t total, stream_log *L,
                       stream_result *res) {
    hy_stream main_s, early;
    hy_stream_init(&main_s, m, STREAM_CHUNK);
    hy_stream_init(&early, m, STREAM_CHUNK);
    hy_random_tokens src;
    hy_random_tokens_init(&src, o->seed + 4, 0, m->cfg.vocab_size);
    hy_stream_run(&early, hy_random_tokens_source, &src, 4096, NULL, NULL);
    L->next_mark = 1024;
    hy_random_tokens_init(&src, o->seed + 5, 0, m->cfg.vocab_size);
    double t0 = hy_eval_now();
    for (int64_t done = 0; done < total;) {  // in slices, for progress lines
        done += hy_stream_run(&main_s, hy_random_tokens_source, &src, total / 8, stream_probe, L);
        hy_eval_progress(o, "constant_state: %lld / %lld tokens streamed", (long long)done, (long long)total);
    }
    res->wall_s = hy_eval_now() - t0;
    res->model_s = main_s.seconds;
    res->streamed = main_s.tokens;
    hy_eval_progress(o, "constant_state: interleaved timing at 4K and at %lld tokens", (long long)total);
    interleaved(&early, &main_s, o->seed + 6, &res->us_early, &res->us_end);
    res->nonfinite = main_s.nonfinite + early.nonfinite;
    res->final_bytes = main_s.state.bytes;
    hy_stream_free(&main_s);
    hy_stream_free(&early);
}

static void plots(hy_claim_result *r, const stream_log *L) {
    hy_plot *pm = hy_claim_plot(r, "HydraLM streaming: memory vs tokens", "tokens streamed", "MiB", 1, 1);
    hy_series *ss = hy_plot_series(pm, "decoding state"), *sr = hy_plot_series(pm, "process RSS");
    hy_series *sg = L->gpu ? hy_plot_series(pm, "GPU memory in use") : NULL;
    hy_plot *pt = hy_claim_plot(r, "HydraLM streaming: time per token", "tokens streamed", "us / token", 1, 0);
    hy_series *st = hy_plot_series(pt, "median over the preceding chunks");
    for (int i = 0; i < L->n; i++) {
        hy_series_add(ss, (double)L->tokens[i], L->state[i] / 1048576.0);
        hy_series_add(sr, (double)L->tokens[i], L->rss[i] / 1048576.0);
        if (sg) hy_series_add(sg, (double)L->tokens[i], L->gpu_mem[i] / 1048576.0);
        if (i > 0) hy_series_add(st, (double)L->tokens[i], L->us_per_tok[i]);
    }
}

static void report(hy_claim_result *r, const stream_log *L, const stream_result *s, int log2_total) {
    int same = s->final_bytes == L->state[0];
    for (int i = 0; i < L->n; i++) same &= L->state[i] == L->state[0];
    double growth = L->rss_at_4k ? ((double)L->rss_max_after_4k - (double)L->rss_at_4k) / (double)L->rss_at_4k : NAN;
    double ggrowth = L->gpu && L->gpu_at_4k
                         ? ((double)L->gpu_max_after_4k - (double)L->gpu_at_4k) / (double)L->gpu_at_4k
                         : 0;
    double ratio = s->us_end / s->us_early;
    int ok_mem = growth < 0.05 && ggrowth < 0.05, ok_time = fabs(ratio - 1) <= 0.10;
    int finite = s->nonfinite == 0;
    r->passed = same && ok_mem && ok_time && finite;
    hy_claim_measured(r, "tokens streamed: %lld in %.1f s (%.2f us/token inside the model), chunks of %d; "
                      "then %d more chunks for the interleaved timing\n", (long long)s->streamed, s->wall_s,
                      s->model_s / s->streamed * 1e6, STREAM_CHUNK, TIMING_PAIRS);
    hy_claim_measured(r, "state bytes: %zu at every mark (", L->state[0]);
    for (int i = 0; i < L->n; i++) hy_claim_measured(r, "%s%lld: %zu", i ? ", " : "", (long long)L->tokens[i], L->state[i]);
    hy_claim_measured(r, ")%s\n", same ? "" : " — NOT CONSTANT");
    hy_claim_measured(r, "resident memory: %.2f MiB at 4K tokens, at most %.2f MiB from 4K to the end: "
                      "growth %+.3f%%\n", L->rss_at_4k / 1048576.0, L->rss_max_after_4k / 1048576.0, growth * 100);
    if (L->gpu)
        hy_claim_measured(r, "GPU memory in use (cudaMemGetInfo): %.2f MiB at 4K tokens, at most %.2f MiB "
                          "from 4K to the end: growth %+.3f%%\n", L->gpu_at_4k / 1048576.0,
                          L->gpu_max_after_4k / 1048576.0, ggrowth * 100);
    hy_claim_measured(r, "process peak (VmHWM): %.2f MiB at 1K tokens, %.2f MiB at the end\n",
                      L->hwm[0] / 1048576.0, L->hwm[L->n - 1] / 1048576.0);
    hy_claim_measured(r, "time per token, interleaved chunks, fastest of %d: %.3f us at 4K, %.3f us at "
                      "%lld (ratio %.3f)\n", TIMING_PAIRS, s->us_early, s->us_end, (long long)s->streamed, ratio);
    hy_claim_measured(r, "non-finite logits: %lld\n", (long long)s->nonfinite);
    hy_claim_key(r, "state %zu B constant; RSS %+.2f%%; time x%.3f at 2^%d", L->state[0], growth * 100,
                 ratio, log2_total);
    hy_claim_value(r, "state_bytes", (double)L->state[0]);
    hy_claim_value(r, "rss_growth_from_4k", growth);
    if (L->gpu) hy_claim_value(r, "gpu_memory_growth_from_4k", ggrowth);
    hy_claim_value(r, "us_per_token_at_4k", s->us_early);
    hy_claim_value(r, "us_per_token_at_end", s->us_end);
    hy_claim_value(r, "time_ratio", ratio);
    hy_claim_value(r, "nonfinite_logits", (double)s->nonfinite);
    if (!same) hy_claim_note(r, "FAIL: the state size changed.\n");
    if (!ok_mem)
        hy_claim_note(r, "FAIL: memory grew after 4K tokens (resident %.2f%%, GPU %.2f%%).\n", growth * 100,
                      ggrowth * 100);
    if (!ok_time) hy_claim_note(r, "FAIL: time per token changed by a factor %.3f.\n", ratio);
    if (!finite) hy_claim_note(r, "FAIL: non-finite logits.\n");
}

void claim_constant_state(const hy_eval_opts *o, hy_claim_result *r) {
    int log2_total = o->budget == HY_BUDGET_FULL ? 20 : 16;
    hy_claim_thresholds(r, "stream 2^%d tokens through HydraLM's decoding state: state bytes identical "
                        "at 1K, 2K, 4K, ... and at the end; peak resident memory (and GPU memory, on the "
                        "GPU) grows by < 5%% from "
                        "4K tokens to the end; time per token at the end within 10%% of that at 4K; "
                        "every logit finite. (smoke: 2^16 tokens, full: 2^20)", log2_total);
    hy_device dev = hy_eval_device(o->device);
    hy_model_config c = hy_timing_config(dev);
    hy_thread_setting threads = hy_eval_single_thread_begin();
    hy_eval_model w;
    hy_eval_model_fresh(&w, HY_ARCH_HYDRA, &c, o->seed + 3, dev);
    stream_log *L = (stream_log *)calloc(1, sizeof *L);
    L->gpu = dev == HY_CUDA;
    stream_result s;
    run_stream(o, w.net, (int64_t)1 << log2_total, L, &s);
    hy_eval_threads_restore(threads);
    report(r, L, &s, log2_total);
    plots(r, L);
    hy_claim_note(r, "Model (randomly initialised): %s. Tokens are uniform random ids from a seeded "
                  "generator, produced chunk by chunk (never all in memory). Resident memory is "
                  "VmRSS read after every chunk; the process's own high-water mark (VmHWM) is "
                  "shown too but includes earlier claims of this run. Time per token: a second "
                  "stream is held at 4K tokens, then chunks are fed alternately to it and to the "
                  "main stream (at the end), %d pairs, so both are measured under the same load, "
                  "and the fastest chunk of each is compared (load from other work only adds time; "
                  "one thread, as in linear_complexity); the plot shows the per-mark medians "
                  "during the stream.", hy_timing_config_text(&c), TIMING_PAIRS);
    if (L->gpu)
        hy_claim_note(r, " On the GPU the model's memory is device memory: GPU memory in use "
                      "(cudaMemGetInfo: total - free) is read after every chunk and judged like the "
                      "resident memory.");
    free(L);
    hy_eval_model_free(&w);
}
