// schedule.h: learning-rate multipliers per step (both optimizer groups'
// peak lr are scaled by the same multiplier).
//
// With W = warmup, N = total, D = decay, r = min_ratio and s the 0-based
// step about to be taken:
//
//   warmup (all kinds), s < W:   mult = (s + 1) / W     (1/W at step 0, 1 at step W-1)
//   CONSTANT, s >= W:            mult = 1
//   COSINE,   s >= W:            p = min(1, (s - W) / (N - W))
//                                mult = r + (1 - r) * (1 + cos(pi p)) / 2
//                                (1 right after warmup, r from step N on)
//   WSD,      s >= W:            mult = 1 while s < N - D, then
//                                p = min(1, (s - (N - D)) / D)
//                                mult = 1 - (1 - r) p
//                                (1 at step N - D, r from step N on)
//
// Like the cosine, the WSD decay reaches r at step N, so the last step of
// an N-step run (s = N - 1) still uses r + (1 - r) / D.
#ifndef HY_SCHEDULE_H
#define HY_SCHEDULE_H

#include <stdint.h>

typedef enum { HY_SCHED_CONSTANT = 0, HY_SCHED_COSINE, HY_SCHED_WSD } hy_sched_kind;

typedef struct {
    hy_sched_kind kind;
    int64_t warmup;   // steps of linear warmup (0: none)
    int64_t total;    // steps of the run (COSINE, WSD)
    int64_t decay;    // WSD: steps of the final linear decay
    float min_ratio;  // final multiplier (COSINE, WSD)
} hy_schedule;

// Bad values are user errors (exit 2) naming `where`: negative warmup,
// total <= warmup (COSINE, WSD), decay outside [1, total - warmup] (WSD),
// min_ratio outside [0, 1].
void hy_schedule_validate(const hy_schedule *s, const char *where);
// The multiplier for 0-based `step` (formulas above).
float hy_lr_mult(const hy_schedule *s, int64_t step);
// "constant", "cosine", "wsd"; hy_sched_parse returns -1 for an unknown name.
const char *hy_sched_name(hy_sched_kind k);
int hy_sched_parse(const char *name);

#endif
