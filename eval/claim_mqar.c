// claim_mqar.c: mqar_recall, associative recall against the dense model.
//
// HydraLM and the dense baseline are trained in-framework (hy_train_main,
// data.source = mqar) on the same budget, each at the best lr of a small
// sweep, and judged by the trainer's own held-out accuracy (the share of
// queries answered right on eval.mqar_sequences sequences generated apart
// from the training stream; val_accuracy in metrics.jsonl).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "claims.h"
#include "eval_model.h"
#include "train_run.h"

#define MAX_SETTINGS 2
#define MAX_LRS 3

typedef struct {
    int seq_len, pairs;
    int min_pairs;  // training mixture: pair counts log-uniform in [min_pairs, pairs]; 0 = fixed
} mqar_setting;

typedef struct {
    int n_settings;
    mqar_setting settings[MAX_SETTINGS];
    int vocab, d_model, n_layers, n_heads, window, chunk;
    int steps, batch, eval_every, eval_sequences, warmup;
    int n_lrs;
    const char *lrs[MAX_LRS];
    const char *schedule;
} mqar_plan;

static mqar_plan make_plan(const hy_eval_opts *o) {
    if (o->budget == HY_BUDGET_FULL) {
        // Training mixes in sequences with fewer pairs (as Zoology's training
        // set does): from a fixed count, neither model left the uniform-guess
        // plateau reliably in 4000 steps. Two heads of 64: on the GPU, one
        // head of 128 left the plateau later, for both models.
        mqar_plan p = {2, {{512, 64, 4}, {1024, 256, 4}}, 8192, 128, 2, 2, 64, 64,
                       4000, 64, 250, 1000, 200, 3, {"1e-3", "3e-3", "1e-2"}, "cosine"};
        return p;
    }
    // Smoke: a constant lr after warmup (a cosine decay would shrink the
    // lr just as the short run starts to learn the task).
    mqar_plan p = {1, {{64, 4, 0}}, 64, 64, 2, 4, 16, 32, 300, 32, 50, 512, 30, 2, {"2e-3", "3e-3"}, "constant"};
    return p;
}

// The device's head layout (heads of 64 and chunks of 64 on a GPU).
static hy_eval_heads plan_heads(const hy_eval_opts *o, const mqar_plan *p) {
    return hy_eval_heads_for(hy_eval_device(o->device), p->d_model, p->n_heads, p->chunk);
}

static void write_ini(char *buf, size_t n, const mqar_plan *p, const mqar_setting *s, const char *arch,
                      const char *lr, const hy_eval_opts *o) {
    hy_eval_heads hd = plan_heads(o, p);
    snprintf(buf, n,
             "; written by hydra-eval --claims (mqar_recall)\n"
             "[model]\narch = %s\nvocab_size = %d\nd_model = %d\nn_layers = %d\nn_heads = %d\n"
             "swa_every = 2\nswa_window = %d\ndn_chunk_size = %d\n"
             "[train]\nsteps = %d\nbatch_size = %d\nseq_len = %d\nseed = %llu\ndevice = %s\n"
             "eval_every = %d\nlog_every = 1000000\ncheckpoint_every = 0\nkeep_checkpoints = 1\n"
             "grad_clip = 1.0\n"
             "[optim]\nkind = adamw\nlr = %s\nwarmup_steps = %d\nschedule = %s\nweight_decay = 0\n"
             "[data]\nsource = mqar\nmqar_pairs = %d\nmqar_min_pairs = %d\n"
             "[eval]\nmqar_sequences = %d\n",
             arch, p->vocab, p->d_model, p->n_layers, hd.n_heads, p->window, hd.dn_chunk, p->steps,
             p->batch, s->seq_len, (unsigned long long)o->seed, o->device, p->eval_every, lr, p->warmup, p->schedule, s->pairs, s->min_pairs,
             p->eval_sequences);
}

typedef struct {
    double acc;
    int lr_index;
    double seconds;
    double rise;  // the best run's accuracy gain over the last quarter of its steps
} best_run;

// Train every lr of the sweep; keep the best final held-out accuracy and
// its curve on `curve`, and every lr's final accuracy on `by_lr`.
static best_run sweep(const hy_eval_opts *o, const mqar_plan *p, const mqar_setting *s, int dense,
                      hy_series *curve, hy_series *by_lr, hy_claim_result *r) {
    best_run b = {-1, -1, 0, 0};
    hy_train_run best = {0};
    for (int i = 0; i < p->n_lrs; i++) {
        char name[128], ini[4096];
        snprintf(name, sizeof name, "mqar_%d_%d_%s_lr%s", s->seq_len, s->pairs, dense ? "dense" : "hydra",
                 p->lrs[i]);
        write_ini(ini, sizeof ini, p, s, dense ? "dense" : "hydra", p->lrs[i], o);
        hy_eval_progress(o, "mqar_recall: training %s on seq %d / %d pairs, lr %s (%d steps)",
                         dense ? "dense" : "HydraLM", s->seq_len, s->pairs, p->lrs[i], p->steps);
        hy_train_run run;
        hy_eval_train(o, name, ini, NULL, &run);
        const hy_val_point *v = hy_train_run_last_val(&run);
        double acc = v ? v->val_accuracy : NAN;
        hy_claim_measured(r, "%s, seq %d / %d pairs, lr %s: held-out accuracy %.4f (%.0f s)\n",
                          dense ? "dense" : "HydraLM", s->seq_len, s->pairs, p->lrs[i], acc, run.seconds);
        hy_series_add(by_lr, atof(p->lrs[i]), acc);
        b.seconds += run.seconds;
        if (isfinite(acc) && acc > b.acc) {
            b.acc = acc, b.lr_index = i;
            hy_train_run_free(&best);
            best = run;
        } else {
            hy_train_run_free(&run);
        }
    }
    for (int i = 0; i < best.n_vals; i++) hy_series_add(curve, (double)best.vals[i].step, best.vals[i].val_accuracy);
    if (best.n_vals >= 4) {
        const hy_val_point *q = &best.vals[best.n_vals * 3 / 4 - 1], *e = &best.vals[best.n_vals - 1];
        b.rise = e->val_accuracy - q->val_accuracy;
    }
    hy_train_run_free(&best);
    return b;
}

static void thresholds(hy_claim_result *r, const mqar_plan *p, int full) {
    if (full) {
        hy_claim_thresholds(r, "for every setting: dense held-out accuracy >= 0.90 (its training worked) "
                            "and HydraLM >= 0.98 x dense, each at the best lr of the sweep. Settings: "
                            "(seq 512, 64 pairs) and (seq 1024, 256 pairs).");
        return;
    }
    hy_claim_thresholds(r, "smoke (seq 64, 4 pairs, %d steps on a CPU): both models learn the task in-framework: "
                        "each one's held-out accuracy (best lr) >= 2 x the uniform-guess rate 2/V = %.4f. "
                        "The full claim (dense >= 0.90, HydraLM >= 0.98 x dense) is not judged here: %d CPU "
                        "steps are too few for either model to reliably pass the phase change in which MQAR "
                        "recall is learned, so their ratio would be decided by the seed, not by the "
                        "architecture. The ratio is reported as measured.", p->steps, 4.0 / p->vocab, p->steps);
}

// Judge one setting; returns 1 when it passes.
static int judge(hy_claim_result *r, const mqar_plan *p, const mqar_setting *s, const best_run *b,
                 int full, int k, int hd_heads) {
    double ratio = b[0].acc / b[1].acc, floor_acc = 4.0 / p->vocab;
    int ok = full ? b[1].acc >= 0.90 && b[0].acc >= 0.98 * b[1].acc
                  : b[0].acc >= floor_acc && b[1].acc >= floor_acc;
    hy_claim_measured(r, "seq %d / %d pairs: HydraLM %.4f (lr %s), dense %.4f (lr %s): ratio %.3f — %s\n",
                      s->seq_len, s->pairs, b[0].acc, p->lrs[b[0].lr_index < 0 ? 0 : b[0].lr_index],
                      b[1].acc, p->lrs[b[1].lr_index < 0 ? 0 : b[1].lr_index], ratio, ok ? "pass" : "FAIL");
    hy_claim_key(r, "%sseq %d: HydraLM %.3f vs dense %.3f", k ? "; " : "", s->seq_len, b[0].acc, b[1].acc);
    char name[64];
    snprintf(name, sizeof name, "hydra_accuracy_seq%d", s->seq_len);
    hy_claim_value(r, name, b[0].acc);
    snprintf(name, sizeof name, "dense_accuracy_seq%d", s->seq_len);
    hy_claim_value(r, name, b[1].acc);
    if (full && b[1].acc < 0.90)
        hy_claim_note(r, "FAIL (seq %d): the dense model reached only %.4f, so its training did not work at "
                      "this budget and the comparison is not meaningful.\n", s->seq_len, b[1].acc);
    if (full && b[0].acc < 0.98 * b[1].acc) {
        hy_claim_note(r, "FAIL (seq %d): HydraLM reached %.4f, below 0.98 x dense = %.4f.", s->seq_len,
                      b[0].acc, 0.98 * b[1].acc);
        int hdim = p->d_model / hd_heads;
        if (s->pairs >= hdim)
            hy_claim_note(r, " A bound that may limit it: beyond the window, recall goes through the "
                          "DeltaNet state, %d x %d per head (every head sees every pair), which holds at "
                          "most head_dim = %d linearly independent keys exactly; %d pairs %s that at "
                          "d_model %d, while the dense model's KV cache grows with the sequence.", hdim,
                          hdim, hdim, s->pairs, s->pairs > hdim ? "exceed" : "reach", p->d_model);
        if (b[0].rise > 0.01)
            hy_claim_note(r, " HydraLM was still improving when training ended (+%.3f over the last "
                          "quarter of the steps): more steps may raise it.", b[0].rise);
        hy_claim_note(r, "\n");
    }
    if (!full && !ok)
        hy_claim_note(r, "FAIL (seq %d): a model stayed below 2 x the uniform-guess rate (%.4f): its MQAR "
                      "training did not work.\n", s->seq_len, floor_acc);
    if (!full)
        hy_claim_note(r, "Smoke (seq %d): for reference, 1/pairs = %.2f is the rate of guessing among the "
                      "values in context; the full claim needs dense >= 0.90 and HydraLM >= 0.98 x dense "
                      "(here %.3f x), judged only in the full budget.\n", s->seq_len, 1.0 / s->pairs, ratio);
    return ok;
}

void claim_mqar_recall(const hy_eval_opts *o, hy_claim_result *r) {
    mqar_plan p = make_plan(o);
    int full = o->budget == HY_BUDGET_FULL;
    thresholds(r, &p, full);
    hy_plot *pc = hy_claim_plot(r, "MQAR held-out accuracy during training (best lr)", "step",
                                "accuracy", 0, 0);
    hy_plot *pl = hy_claim_plot(r, "MQAR final accuracy by learning rate", "AdamW lr", "accuracy", 1, 0);
    int ok = 1;
    for (int k = 0; k < p.n_settings; k++) {
        const mqar_setting *s = &p.settings[k];
        char label[96];
        best_run b[2];
        for (int a = 0; a < 2; a++) {
            snprintf(label, sizeof label, "%s, seq %d/%d pairs", a ? "dense" : "HydraLM", s->seq_len, s->pairs);
            b[a] = sweep(o, &p, s, a, hy_plot_series(pc, label), hy_plot_series(pl, label), r);
        }
        ok &= judge(r, &p, s, b, full, k, plan_heads(o, &p).n_heads);
    }
    r->passed = ok;
    hy_eval_heads hd = plan_heads(o, &p);
    hy_claim_note(r, "Both models: vocab %d, d_model %d, %d layers (HydraLM: GDN then SWA with window %d, "
                  "DeltaNet chunk %d; dense: full attention), %d head(s) of %d, on the %s; AdamW, %s schedule with "
                  "%d warmup steps, no weight decay, clip 1.0; %d steps of batch %d; lr swept over {",
                  p.vocab, p.d_model, p.n_layers, p.window, hd.dn_chunk, hd.n_heads, p.d_model / hd.n_heads, hy_eval_device_word(o->device), p.schedule,
                  p.warmup, p.steps, p.batch);
    for (int i = 0; i < p.n_lrs; i++) hy_claim_note(r, "%s%s", i ? ", " : "", p.lrs[i]);
    hy_claim_note(r, "}, the best final accuracy kept. Accuracy: the trainer's validation on %d held-out "
                  "sequences (Zoology MQAR: keys in [1, V/2), values in [V/2, V), every key queried "
                  "once), the share of queries whose value is the argmax. The window is shorter than "
                  "the sequence, so HydraLM must recall through its DeltaNet state.", p.eval_sequences);
    if (p.settings[0].min_pairs)
        hy_claim_note(r, " Training sequences hold a pair count drawn log-uniformly from [%d, P] "
                      "(data.mqar_min_pairs; Zoology trains on a mixture of pair counts too); held-out "
                      "sequences hold exactly P.", p.settings[0].min_pairs);
}
