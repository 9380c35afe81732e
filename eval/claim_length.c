// claim_length.c: length_generalisation, held-out loss at 16x the
// training length.
//
// A byte-level HydraLM is trained with hydra-train on text windows of L
// bytes, then its mean next-byte loss on the held-out split is measured
// over the same bytes cut into windows of L and of 16 L (the model starts
// empty in each window). Longer windows give more context and may lower
// the loss; the claim is that they do not raise it by more than 10%. The
// dense baseline, trained identically, is measured the same way for
// contrast (reported, not judged: RoPE attention beyond its training
// length is the usual failure this claim guards against).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "claims.h"
#include "corpus.h"
#include "eval_model.h"
#include "tasks.h"
#include "train_run.h"

#define N_MULT 5
static const int MULT[N_MULT] = {1, 2, 4, 8, 16};

// Train `arch` at L, then its held-out loss over windows of 1..16 x L.
static void train_and_measure(const hy_eval_opts *o, const char *ini, int L, int steps, int dense,
                              const int32_t *val, int64_t usable, hy_plot *pl, double *loss) {
    const char *arch = dense ? "dense" : "hydra";
    char set[64], name[64];
    snprintf(set, sizeof set, "model.arch=%s", arch);
    snprintf(name, sizeof name, "length_%s", arch);
    const char *sets[] = {set, NULL};
    hy_eval_progress(o, "length_generalisation: training %s at L = %d (%d steps)", arch, L, steps);
    hy_train_run run;
    hy_eval_train(o, name, ini, sets, &run);
    hy_eval_model w;
    hy_eval_model_load(&w, run.checkpoint, hy_eval_device(o->device));
    hy_series *s = hy_plot_series(pl, dense ? "dense (contrast)" : "HydraLM");
    for (int k = 0; k < N_MULT; k++) {
        hy_eval_progress(o, "length_generalisation: %s, windows of %d bytes", arch, MULT[k] * L);
        loss[k] = hy_task_text_loss(w.net, val, usable, MULT[k] * L, 8, NULL);
        hy_series_add(s, MULT[k], loss[k]);
    }
    hy_eval_model_free(&w);
    hy_train_run_free(&run);
}

static void report_losses(hy_claim_result *r, const char *name, const char *key, const double *loss) {
    hy_claim_measured(r, "%s: held-out loss", name);
    for (int k = 0; k < N_MULT; k++) hy_claim_measured(r, "%s %d x L: %.4f", k ? "," : "", MULT[k], loss[k]);
    hy_claim_measured(r, " — ratio 16x / 1x = %.4f\n", loss[N_MULT - 1] / loss[0]);
    char v[48];
    snprintf(v, sizeof v, "%s_loss_1x", key);
    hy_claim_value(r, v, loss[0]);
    snprintf(v, sizeof v, "%s_loss_16x", key);
    hy_claim_value(r, v, loss[N_MULT - 1]);
}

void claim_length_generalisation(const hy_eval_opts *o, hy_claim_result *r) {
    int full = o->budget == HY_BUDGET_FULL;
    int L = full ? 256 : 64, steps = full ? 1500 : 200, d = full ? 128 : 64, layers = full ? 4 : 2;
    int64_t max_eval = full ? 400000 : 24 * 1024;  // held-out bytes evaluated
    hy_claim_thresholds(r, "HydraLM's mean held-out loss over windows of 16 x L <= 1.10 x its loss over "
                        "windows of L, on the same bytes (L = %d). Same threshold for both budgets.", L);
    char corpus[1200];
    hy_eval_corpus(o, corpus, sizeof corpus);
    char ini[4096];
    hy_eval_heads hd = hy_eval_heads_for(hy_eval_device(o->device), d, 2, 32);
    snprintf(ini, sizeof ini,
             "; written by hydra-eval --claims (length_generalisation)\n"
             "[model]\nvocab_size = 256\nd_model = %d\nn_layers = %d\nn_heads = %d\nswa_every = 2\n"
             "swa_window = %d\ndn_chunk_size = %d\n"
             "[train]\nsteps = %d\nbatch_size = 16\nseq_len = %d\nseed = %llu\ndevice = %s\n"
             "eval_every = 0\nlog_every = 1000000\ncheckpoint_every = 0\nkeep_checkpoints = 1\n"
             "grad_clip = 1.0\n"
             "[optim]\nkind = muon_hybrid\nlr = 3e-3\nmuon_lr = 0.02\nwarmup_steps = %d\nschedule = cosine\n"
             "[data]\nsource = text\npath = %s\n",
             d, layers, hd.n_heads, L / 2, hd.dn_chunk, steps, L, (unsigned long long)o->seed, o->device,
             steps / 10, corpus);
    int64_t n_val;
    int32_t *val = hy_eval_corpus_val(o, &n_val);
    int64_t span = n_val < max_eval ? n_val : max_eval;
    int64_t usable = ((span - 1) / (16 * L)) * 16 * L + 1;  // whole 16 L windows: the same bytes at every length
    hy_plot *pl = hy_claim_plot(r, "Held-out loss by evaluation window", "window (x training length)",
                                "loss (nats / byte)", 1, 0);
    double loss[2][N_MULT];
    for (int a = 0; a < 2; a++) {
        train_and_measure(o, ini, L, steps, a, val, usable, pl, loss[a]);
        report_losses(r, a ? "dense (contrast)" : "HydraLM", a ? "dense" : "hydra", loss[a]);
    }
    double ratio = loss[0][4] / loss[0][0];
    r->passed = isfinite(ratio) && ratio <= 1.10;
    hy_claim_value(r, "hydra_ratio_16x", ratio);
    hy_claim_value(r, "dense_ratio_16x", loss[1][4] / loss[1][0]);
    hy_claim_key(r, "HydraLM 16x/1x loss = %.3f (dense %.3f)", ratio, loss[1][4] / loss[1][0]);
    hy_claim_note(r, "Both models: d_model %d, %d layers (HydraLM: GDN and SWA alternating, window %d, "
                  "DeltaNet chunk %d), %d head%s, trained with the Muon hybrid for %d steps of 16 x %d bytes "
                  "on %s, on the %s. Evaluation: the first %lld held-out bytes, cut into consecutive windows "
                  "of 1, 2, 4, 8, 16 x L; every window starts from an empty state; the loss is the mean over "
                  "every predicted byte.", d, layers, L / 2, hd.dn_chunk, hd.n_heads, hd.n_heads == 1 ? "" : "s",
                  steps, L, hy_eval_corpus_name(o), hy_eval_device_word(o->device), (long long)(usable - 1));
    if (!r->passed) hy_claim_note(r, "\nFAIL: the loss at 16 x L is %.3f x the loss at 1 x L.", ratio);
    free(val);
}
