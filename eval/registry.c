// registry.c: the claims in report order, and running a selection of them.
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "../autograd/check.h"
#include "claims.h"
#include "fit.h"
#include "report.h"
#include "saved.h"
#include "train_run.h"

static const hy_claim CLAIMS[] = {
    {"linear_complexity", "Prefill time grows linearly with length (dense: quadratically)",
     claim_linear_complexity},
    {"mqar_recall", "Associative recall (MQAR) matches the dense Transformer", claim_mqar_recall},
    {"constant_state", "Streaming runs in constant state, memory and time per token",
     claim_constant_state},
    {"cost_at_long_context", "Decoding memory and time per token at long context vs a dense KV cache",
     claim_cost_at_long_context},
    {"drop_in", "A drop-in replacement: same config, same size, trains and generates", claim_drop_in},
    {"equivalence", "Parallel forward = step-by-step decoding = chunked prefill", claim_equivalence},
    {"batch_independence", "Rows of a batch do not leak into each other", claim_batch_independence},
    {"muon_vs_adamw", "The Muon hybrid reaches a target loss sooner than AdamW", claim_muon_vs_adamw},
    {"passkey", "Passkey retrieval beyond the training length", claim_passkey},
    {"length_generalisation", "Held-out loss at 16x the training length", claim_length_generalisation},
};
#define N_CLAIMS ((int)(sizeof CLAIMS / sizeof *CLAIMS))

int hy_claim_count(void) { return N_CLAIMS; }

const hy_claim *hy_claim_at(int i) { return i >= 0 && i < N_CLAIMS ? &CLAIMS[i] : NULL; }

const hy_claim *hy_claim_find(const char *id) {
    for (int i = 0; i < N_CLAIMS; i++)
        if (!strcmp(CLAIMS[i].id, id)) return &CLAIMS[i];
    return NULL;
}

// A claim that stops on an error (a failed training run, a bad file) is a
// failing claim with the error as its reason, not the end of the report:
// the error hook jumps back here instead of exiting. What the claim had
// allocated is not freed (the report is one process that ends soon).
static jmp_buf g_claim_jmp;
static int g_claim_code;

static void on_claim_error(int code, const char *msg) {
    (void)msg;
    g_claim_code = code;
    longjmp(g_claim_jmp, 1);
}

static void run_one(const hy_eval_opts *o, const hy_claim *c, hy_claim_result *r) {
    memset(r, 0, sizeof *r);
    r->id = c->id;
    r->title = c->title;
    hy_report_now(r->measured_at, sizeof r->measured_at);
    double t0 = hy_eval_now();
    hy_eval_progress(o, "%s: start", c->id);
    hy_set_error_hook(on_claim_error);
    if (setjmp(g_claim_jmp) == 0) {
        c->fn(o, r);
    } else {
        // The trainer may have been interrupted between installing its
        // signal handlers and restoring them, and stdout may be redirected.
        hy_eval_stdout_restore();
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        r->passed = 0;
        hy_claim_note(r, "%sFAILED WITH AN ERROR (exit status %d): %s", r->notes[0] ? "\n" : "",
                      g_claim_code, hy_last_error());
        if (!r->key[0]) hy_claim_key(r, "error: %.120s", hy_last_error());
    }
    hy_set_error_hook(NULL);
    r->seconds = hy_eval_now() - t0;
    hy_eval_progress(o, "%s: %s in %.1f s (%s)", c->id, r->passed ? "PASS" : "FAIL", r->seconds,
                     r->key);
}

// With --resume a claim saved by an earlier invocation of this build (same
// budget, seed, device and text) is taken as it was measured; the others
// run. With --work every claim that runs is saved as soon as it ends.
int hy_claims_run(const hy_eval_opts *o, const hy_claim **sel, int n, hy_claim_result *res) {
    int failed = 0;
    for (int i = 0; i < n; i++) {
        char why[1200];
        if (o->resume && hy_claim_load(o, sel[i], &res[i], why, sizeof why)) {
            hy_eval_progress(o, "%s: %s in %.1f s, measured at %s (saved; --resume)", sel[i]->id,
                             res[i].passed ? "PASS" : "FAIL", res[i].seconds, res[i].measured_at);
        } else {
            if (o->resume) hy_eval_progress(o, "%s: measuring (saved result: %s)", sel[i]->id, why);
            run_one(o, sel[i], &res[i]);
            if (o->keep_results) hy_claim_save(o, &res[i]);
        }
        failed += !res[i].passed;
    }
    return failed;
}
