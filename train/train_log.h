// train_log.h: the step line on stdout and metrics.jsonl in the run directory.
//
//   step 120/2000 | loss 1.8342 | lr 3.0e-04 | norm 0.91 | 412 ms | 9.9k tok/s | eta 12m
//
// On a GPU whose bf16 peak is known the line also has the model FLOPs
// utilisation: `| MFU 21.4% |` before the ETA (layers/flops.h's accounting).
// Data parallel, the tokens/s are those of all ranks and the global batch
// follows them: `| 425.3k tok/s (2 GPUs, batch 16) |`.
//
// Every step is also one JSON line in DIR/metrics.jsonl (appended, so a
// resumed run continues the same file; readers keep the last line of a step).
#ifndef HY_TRAIN_LOG_H
#define HY_TRAIN_LOG_H

#include <stdint.h>
#include <stdio.h>

typedef struct {
    int64_t step, steps;
    float loss, lr, norm;
    double ms, tok_per_s, eta_s;
    int64_t tokens;
    double elapsed_s;  // wall-clock since this process started training
    double mfu_pct;    // model FLOPs utilisation in percent; 0: not known (CPU, unknown GPU)
    int ranks;         // data-parallel ranks (0 or 1: one process)
    int64_t batch;     // the global batch in sequences (shown with ranks > 1)
} hy_step_line;

typedef struct {
    FILE *jsonl;
} hy_metrics;

double hy_now(void);  // monotonic seconds
void hy_metrics_open(hy_metrics *m, const char *dir);
void hy_metrics_close(hy_metrics *m);
// Print the step line when `print`; always append the JSON line.
void hy_metrics_step(hy_metrics *m, const hy_step_line *s, int print);
void hy_metrics_eval(hy_metrics *m, int64_t step, float val_loss, float accuracy,
                     double elapsed_s);

#endif
