// train_run.h: the claims' internal training runs.
//
// A claim trains through hy_train_main, the whole hydra-train command, from
// an INI text written into the eval's work directory, so what the report
// measures is exactly what a user gets from hydra-train. The run's stdout
// (resolved config, step lines) goes to WORK/<name>.log, not to the
// terminal; metrics.jsonl is read back afterwards.
#ifndef HY_EVAL_TRAIN_RUN_H
#define HY_EVAL_TRAIN_RUN_H

#include <stdint.h>

#include "claims.h"

typedef struct {
    int64_t step;
    double loss, elapsed_s;
} hy_step_point;

typedef struct {
    int64_t step;
    double val_loss, val_accuracy, elapsed_s;  // NaN where metrics.jsonl has null
} hy_val_point;

typedef struct {
    char name[128];
    char dir[1200];         // WORK/<name>: the run directory
    char checkpoint[1400];  // the newest checkpoint ("" if none)
    double seconds;         // wall time of hy_train_main
    int rc;                 // its return value
    int n_steps, n_vals;
    hy_step_point *steps;   // one per optimizer step (the last line of a step wins)
    hy_val_point *vals;     // one per validation
} hy_train_run;

// Train `name` from `ini` (full INI text; `sets` are extra
// section.key=value overrides, NULL-terminated, may be NULL). The run
// directory is removed first, so a run always starts from step 0; except
// that with --resume (o->resume) a build of an exact commit takes a run it
// finished earlier from the same INI and overrides as trained (its metrics
// and wall time as they were), so that a claim of many runs can be
// measured across several invocations. A run
// interrupted by SIGINT/SIGTERM (the trainer saves and returns 130) ends
// hydra-eval with status 130: the user asked to stop.
void hy_eval_train(const hy_eval_opts *o, const char *name, const char *ini,
                   const char *const *sets, hy_train_run *run);
void hy_train_run_free(hy_train_run *run);

// The last validation point (NULL if none), and the final training loss
// averaged over the last `k` steps (smooths the noise of single batches).
const hy_val_point *hy_train_run_last_val(const hy_train_run *run);
double hy_train_run_mean_loss(const hy_train_run *run, int first, int k);

// Parse DIR/metrics.jsonl into run (replacing what it held).
void hy_train_run_read_metrics(hy_train_run *run);

// Remove a directory tree (files, links, folders; links are not followed).
// A missing tree is fine; returns 0 when it is gone.
int hy_eval_remove_tree(const char *dir);

// Redirect stdout to `path` (appending) / put it back. Nested calls are
// not supported; restore is a no-op when nothing is redirected.
void hy_eval_stdout_to(const char *path);
void hy_eval_stdout_restore(void);

#endif
