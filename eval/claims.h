// claims.h: the claims of hydra-eval --claims (DESIGN section 5).
//
// Every claim is one function that measures something and fills a
// hy_claim_result: the thresholds it is judged by, the measured numbers,
// pass or fail, notes (what was measured, how, and why it failed), and the
// numeric series that the report draws as SVG plots and writes to
// results.json. Claims are measured, never computed from a formula where a
// measurement is possible; a formula shown next to a measurement is
// labelled as such. A claim that fails is reported as failing, with the
// reason; nothing is dropped or loosened.
//
// The registry (registry.c) lists the claims in report order. One file per
// claim family: claim_complexity.c, claim_mqar.c, claim_state.c,
// claim_cost.c, claim_dropin.c, claim_equivalence.c (with batch
// independence), claim_optim.c, claim_passkey.c, claim_length.c.
//
// Budgets: smoke runs every claim on a 2-core CPU in minutes (the claims
// tests run it); where a smoke run cannot test a threshold, the claim
// states its smoke threshold in `thresholds`. full is sized for a GPU and
// runs on the CPU too, only (much) slower.
#ifndef HY_CLAIMS_H
#define HY_CLAIMS_H

#include <stddef.h>
#include <stdint.h>

typedef enum { HY_BUDGET_SMOKE = 0, HY_BUDGET_FULL = 1 } hy_budget;

typedef struct {
    hy_budget budget;
    uint64_t seed;
    char device[8];         // resolved: "cpu" or "cuda" (GPU 0)
    char work_dir[1024];    // the internal training runs go here
    char text_path[1024];   // a text corpus for the language-model claims, "" = synthetic
    char text_origin[128];  // how text_path was chosen (said in the notes)
    double t_start;         // monotonic seconds when the run began (progress lines)
    int keep_results;       // --work given: each claim's result is saved there (saved.h)
    int resume;             // --resume: saved results of this build are reused
} hy_eval_opts;

#define HY_PLOT_SERIES 8
#define HY_PLOT_POINTS 160
#define HY_CLAIM_PLOTS 2
#define HY_CLAIM_VALUES 48

typedef struct {
    char name[64];  // legend
    int n;
    double x[HY_PLOT_POINTS], y[HY_PLOT_POINTS];
} hy_series;

typedef struct {
    char title[128], xlabel[64], ylabel[64];
    int logx, logy;
    int n_series;
    hy_series series[HY_PLOT_SERIES];
    char file[160];  // set by the report: the SVG's file name next to RESULTS.md
} hy_plot;

typedef struct {
    char name[64];
    double value;
} hy_named_value;

typedef struct {
    const char *id, *title;
    char thresholds[512];  // what passing means, smoke thresholds included
    char measured[2048];   // the measured numbers, one per line
    int passed;
    char notes[2048];      // how it was measured; the reason for a failure
    char key[192];         // the key measurement, for the summary table
    char detail[4096];     // optional Markdown (a table) shown with the claim
    double seconds;        // wall time of the claim
    char measured_at[64];  // ISO-8601 UTC when the claim started
    int reused;            // loaded from an earlier invocation's saved result
    int n_plots;
    hy_plot plots[HY_CLAIM_PLOTS];
    int n_values;          // the main numbers, for results.json
    hy_named_value values[HY_CLAIM_VALUES];
} hy_claim_result;

typedef void (*hy_claim_fn)(const hy_eval_opts *o, hy_claim_result *r);

typedef struct {
    const char *id, *title;
    hy_claim_fn fn;
} hy_claim;

// The registry, in report order.
int hy_claim_count(void);
const hy_claim *hy_claim_at(int i);
// NULL when no claim has this id.
const hy_claim *hy_claim_find(const char *id);

// The claims (one family per file).
void claim_linear_complexity(const hy_eval_opts *o, hy_claim_result *r);
void claim_mqar_recall(const hy_eval_opts *o, hy_claim_result *r);
void claim_constant_state(const hy_eval_opts *o, hy_claim_result *r);
void claim_cost_at_long_context(const hy_eval_opts *o, hy_claim_result *r);
void claim_drop_in(const hy_eval_opts *o, hy_claim_result *r);
void claim_equivalence(const hy_eval_opts *o, hy_claim_result *r);
void claim_batch_independence(const hy_eval_opts *o, hy_claim_result *r);
void claim_muon_vs_adamw(const hy_eval_opts *o, hy_claim_result *r);
void claim_passkey(const hy_eval_opts *o, hy_claim_result *r);
void claim_length_generalisation(const hy_eval_opts *o, hy_claim_result *r);

// ---------------------------------------------------------------- filling a result
// printf-style appends (truncated at the field's size, never overflowing).
void hy_claim_measured(hy_claim_result *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void hy_claim_note(hy_claim_result *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void hy_claim_detail(hy_claim_result *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void hy_claim_thresholds(hy_claim_result *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void hy_claim_key(hy_claim_result *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void hy_claim_value(hy_claim_result *r, const char *name, double value);
// A new plot (NULL when the result holds HY_CLAIM_PLOTS already) and a new
// series on it (NULL when full); points past HY_PLOT_POINTS are dropped.
hy_plot *hy_claim_plot(hy_claim_result *r, const char *title, const char *xlabel,
                       const char *ylabel, int logx, int logy);
hy_series *hy_plot_series(hy_plot *p, const char *name);
void hy_series_add(hy_series *s, double x, double y);

// "[claims 1m05s] mqar_recall: training dense, lr 3e-3 (2/4)" on stderr.
void hy_eval_progress(const hy_eval_opts *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

// Run every selected claim, catching a claim's errors as its failure.
// Returns the number of claims that failed.
int hy_claims_run(const hy_eval_opts *o, const hy_claim **sel, int n, hy_claim_result *res);

#endif
