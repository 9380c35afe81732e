// fit.h: the statistics the claims use to turn noisy timings into numbers.
#ifndef HY_EVAL_FIT_H
#define HY_EVAL_FIT_H

// Median of n values (n >= 1; the array is not modified). NaN when n == 0.
double hy_median(const double *x, int n);

// Least-squares slope of log(y) against log(x) over n points (all > 0):
// the exponent p of y ~ x^p. *r2 (may be NULL) receives the coefficient of
// determination of the fit. NaN when fewer than 2 usable points.
double hy_loglog_slope(const double *x, const double *y, int n, double *r2);

// Monotonic wall-clock seconds, and this process's CPU seconds.
double hy_eval_now(void);
double hy_eval_cpu_now(void);

// The timing claims run on one thread: the exponent of time against length
// is then not confounded by parallel efficiency (which varies with the
// length), and one thread is far less disturbed by other jobs on a shared
// machine than a team of threads that waits at every barrier for its
// slowest member. begin() returns the previous setting for restore().
typedef struct {
    int omp, blas;
} hy_thread_setting;
hy_thread_setting hy_eval_single_thread_begin(void);
void hy_eval_threads_restore(hy_thread_setting s);

#endif
