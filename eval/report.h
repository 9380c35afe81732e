// report.h: RESULTS.md and results.json.
//
// RESULTS.md: how it was generated (date, commit, budget, runtime, the
// machine), the overall status, a summary table, then per claim its
// thresholds, measured numbers, notes and plots (SVG files written next to
// RESULTS.md and linked), and the exact command that reproduces it.
// results.json holds the same data (every series of every plot included).
// Both are written atomically (a temporary file, then rename).
#ifndef HY_EVAL_REPORT_H
#define HY_EVAL_REPORT_H

#include "claims.h"

typedef struct {
    char command[2048];  // the command line that reproduces the report
    char date[64];       // ISO-8601 UTC of the start
    double seconds;      // total runtime
} hy_report_info;

// Fill `date` with the current time (ISO-8601 UTC).
void hy_report_now(char *date, size_t n);

// Writes md_path (and the plots next to it) and, when json_path is not
// NULL, results.json. Sets each plot's `file`.
void hy_report_write(const char *md_path, const char *json_path, const hy_eval_opts *o,
                     const hy_report_info *info, hy_claim_result *res, int n);

#endif
