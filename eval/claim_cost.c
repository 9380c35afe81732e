// claim_cost.c: cost_at_long_context, decoding memory and time per token
// of HydraLM against the dense model's KV cache.
//
// Both models are prefilled with random tokens through the streaming
// engine to N = 1K, 2K, 4K, ... 131072; at each N the decoding state's
// bytes are read and a few one-token decoding steps are timed. The dense
// model's prefill is quadratic, so it stops at the first N that would take
// its total prefill time over the budget; the claim compares the two at
// the largest N the dense model reached, and says which N that is.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../infer/stream.h"
#include "claims.h"
#include "eval_model.h"
#include "fit.h"
#include "timing_model.h"

#define MAX_MARKS 40
#define DECODE_STEPS 32
#define TARGET_N 131072

typedef struct {
    int n;
    int64_t N[MAX_MARKS];
    size_t bytes[MAX_MARKS];
    double us_step[MAX_MARKS];
} cost_log;

// Median wall time of DECODE_STEPS one-token steps from the stream's state.
static double step_time_us(hy_stream *s, uint64_t seed) {
    hy_random_tokens src;
    hy_random_tokens_init(&src, seed, 0, s->model->cfg.vocab_size);
    double t[DECODE_STEPS];
    for (int i = 0; i < DECODE_STEPS; i++) {
        int32_t tok;
        hy_random_tokens_source(&src, &tok, 1);
        double t0 = hy_eval_now();
        hy_model_step(s->model, &s->state, &tok, s->logits, &s->work);
        t[i] = hy_eval_now() - t0;
    }
    s->tokens += DECODE_STEPS;
    return hy_median(t, DECODE_STEPS) * 1e6;
}

// Prefill to N = 1K, 2K, ... up to TARGET_N, recording at each; stops when
// the projected prefill to the next N would take the total over budget_s.
static void measure_costs(const hy_eval_opts *o, hy_model *m, double budget_s, cost_log *L,
                          const char *name) {
    hy_stream s;
    hy_stream_init(&s, m, 1024);
    hy_random_tokens src;
    hy_random_tokens_init(&src, o->seed + 7, 0, m->cfg.vocab_size);
    double prefill_s = 0, last_leg = 0;
    for (int64_t N = 1024; N <= TARGET_N && L->n < MAX_MARKS; N *= 2) {
        // The dense model's leg from N/2 to N costs about 3x the one before.
        if (L->n > 0 && prefill_s + 3.2 * last_leg > budget_s) break;
        double t0 = hy_eval_now();
        hy_stream_run(&s, hy_random_tokens_source, &src, N - s.state.pos, NULL, NULL);
        last_leg = hy_eval_now() - t0;
        prefill_s += last_leg;
        int i = L->n++;
        L->N[i] = s.state.pos;
        L->bytes[i] = s.state.bytes;  // read before the steps, which may grow a KV cache
        L->us_step[i] = step_time_us(&s, o->seed + 8 + (uint64_t)N);
        hy_eval_progress(o, "cost_at_long_context: %s at N=%lld: state %.3f MiB, %.1f us/token", name,
                         (long long)L->N[i], L->bytes[i] / 1048576.0, L->us_step[i]);
    }
    hy_stream_free(&s);
}

static void table_and_plots(hy_claim_result *r, const cost_log *L) {
    hy_claim_detail(r, "| N | HydraLM state (bytes) | dense KV cache (bytes) | HydraLM us/token | dense us/token |\n"
                       "|---|---|---|---|---|\n");
    for (int i = 0; i < L[0].n; i++) {
        char db[32] = "not reached", dt[32] = "not reached";
        if (i < L[1].n) {
            snprintf(db, sizeof db, "%zu", L[1].bytes[i]);
            snprintf(dt, sizeof dt, "%.2f", L[1].us_step[i]);
        }
        hy_claim_detail(r, "| %lld | %zu | %s | %.2f | %s |\n", (long long)L[0].N[i], L[0].bytes[i], db,
                        L[0].us_step[i], dt);
    }
    hy_plot *pm = hy_claim_plot(r, "Decoding state vs context", "context N (tokens)", "bytes", 1, 1);
    hy_plot *pt = hy_claim_plot(r, "Decoding time per token vs context", "context N (tokens)", "us / token", 1, 1);
    for (int a = 0; a < 2; a++) {
        hy_series *sm = hy_plot_series(pm, a ? "dense KV cache" : "HydraLM state");
        hy_series *st = hy_plot_series(pt, a ? "dense" : "HydraLM");
        for (int i = 0; i < L[a].n; i++) {
            hy_series_add(sm, (double)L[a].N[i], (double)L[a].bytes[i]);
            hy_series_add(st, (double)L[a].N[i], L[a].us_step[i]);
        }
    }
}

static void judge(hy_claim_result *r, const cost_log *L) {
    int k = L[1].n - 1, h = L[0].n - 1;  // the largest N the dense model reached; HydraLM's last
    int64_t N = L[1].N[k];
    double mem = 1 - (double)L[0].bytes[k] / (double)L[1].bytes[k];
    double time = 1 - L[0].us_step[k] / L[1].us_step[k];
    r->passed = mem >= 0.9 && time >= 0.9;
    hy_claim_measured(r, "compared at N = %lld%s\n", (long long)N,
                      N == TARGET_N ? " (the target)" : " — the largest N the dense model reached in the "
                                                        "budget; the target is 131072");
    hy_claim_measured(r, "decoding state: HydraLM %zu bytes, dense KV cache %zu bytes: saving %.4f%%\n",
                      L[0].bytes[k], L[1].bytes[k], mem * 100);
    hy_claim_measured(r, "time per token (median of %d decoding steps): HydraLM %.2f us, dense %.2f us: "
                      "saving %.2f%%\n", DECODE_STEPS, L[0].us_step[k], L[1].us_step[k], time * 100);
    hy_claim_measured(r, "HydraLM at N = %lld: %zu bytes, %.2f us per token\n", (long long)L[0].N[h],
                      L[0].bytes[h], L[0].us_step[h]);
    // What the dense step's time is made of: reading the cache (bytes per
    // step over its time: an effective rate) and a fixed cost, seen at 1K.
    hy_claim_measured(r, "the dense step reads its %.1f MiB KV cache in %.2f us (%.1f GB/s effective); "
                      "at N = %lld it took %.2f us, HydraLM %.2f us\n", L[1].bytes[k] / 1048576.0,
                      L[1].us_step[k], (double)L[1].bytes[k] / (L[1].us_step[k] * 1e-6) / 1e9,
                      (long long)L[1].N[0], L[1].us_step[0], L[0].us_step[0]);
    hy_claim_key(r, "at N=%lld: memory -%.2f%%, time -%.1f%%", (long long)N, mem * 100, time * 100);
    hy_claim_value(r, "compared_at_n", (double)N);
    hy_claim_value(r, "memory_saving", mem);
    hy_claim_value(r, "time_saving", time);
    hy_claim_value(r, "hydra_state_bytes", (double)L[0].bytes[k]);
    hy_claim_value(r, "dense_state_bytes", (double)L[1].bytes[k]);
    hy_claim_value(r, "hydra_us_per_token", L[0].us_step[k]);
    hy_claim_value(r, "dense_us_per_token", L[1].us_step[k]);
    if (N != TARGET_N)
        hy_claim_note(r, "The dense model was measured up to N = %lld, not 131072: prefilling it further "
                      "is quadratic and did not fit the budget. HydraLM was measured up to %lld.\n",
                      (long long)N, (long long)L[0].N[h]);
    if (!r->passed)
        hy_claim_note(r, "FAIL: saving below 90%% (memory %.2f%%, time %.2f%%).\n", mem * 100, time * 100);
    if (time < 0.9)
        hy_claim_note(r, "What limits the time saving: a decoding step has a fixed cost (HydraLM's is the "
                      "same at every N; the dense model's step at N = %lld took %.2f us), so the saving "
                      "reaches 90%% only once reading the KV cache costs the dense model about ten times "
                      "HydraLM's whole step.\n", (long long)L[1].N[0], L[1].us_step[0]);
}

void claim_cost_at_long_context(const hy_eval_opts *o, hy_claim_result *r) {
    double dense_budget = o->budget == HY_BUDGET_FULL ? 480 : 30;
    hy_claim_thresholds(r, "decoding at context N = 131072 (or the largest N the dense model reaches "
                        "in the budget, %.0f s of prefill, said below): HydraLM's decoding state "
                        "bytes and time per token both >= 90%% below the dense model's (KV cache) "
                        "at the same N.", dense_budget);
    hy_device dev = hy_eval_device(o->device);
    hy_model_config c = hy_timing_config(dev);
    cost_log *L = (cost_log *)calloc(2, sizeof(cost_log));
    hy_thread_setting threads = hy_eval_single_thread_begin();
    for (int a = 0; a < 2; a++) {
        hy_eval_model w;
        hy_eval_model_fresh(&w, a ? HY_ARCH_DENSE : HY_ARCH_HYDRA, &c, o->seed + 9, dev);
        measure_costs(o, w.net, a ? dense_budget : INFINITY, &L[a], a ? "dense" : "HydraLM");
        hy_eval_model_free(&w);
    }
    hy_eval_threads_restore(threads);
    judge(r, L);
    table_and_plots(r, L);
    hy_claim_note(r, "Model (randomly initialised): %s. Each model is prefilled with random tokens "
                  "through the streaming engine (chunks of 1024, batch 1) to N = 1K, 2K, 4K, ...; at "
                  "each N the decoding state's bytes (hy_decode_state.bytes: HydraLM's fixed block; "
                  "the dense KV cache's allocation, which doubles, so right after prefilling to a "
                  "power of two it equals the bytes in use) are read and %d one-token decoding steps "
                  "are timed (median, one thread). The dense model stops at the first N whose prefill "
                  "would take the total over %.0f s.", hy_timing_config_text(&c), DECODE_STEPS, dense_budget);
    if (dev == HY_CUDA)
        hy_claim_note(r, " On the GPU (bf16): both models' steps replay one CUDA graph each; the dense "
                      "model's attention reads its KV cache in place with a split-K decoding kernel "
                      "(blocks of 256 positions, merged). A step's time runs until its logits are on "
                      "the host.");
    free(L);
}
