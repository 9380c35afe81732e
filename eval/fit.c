// fit.c: medians and log-log slopes (see fit.h).
#include "fit.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef _OPENMP
#include <omp.h>
#endif
#include <cblas.h>

#include "../autograd/check.h"

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double hy_median(const double *x, int n) {
    if (n <= 0) return NAN;
    double *s = (double *)hy_xmalloc((size_t)n * sizeof(double));
    memcpy(s, x, (size_t)n * sizeof(double));
    qsort(s, (size_t)n, sizeof(double), cmp_double);
    double m = n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
    free(s);
    return m;
}

double hy_loglog_slope(const double *x, const double *y, int n, double *r2) {
    double sx = 0, sy = 0, sxx = 0, sxy = 0, syy = 0;
    int m = 0;
    for (int i = 0; i < n; i++) {
        if (!(x[i] > 0) || !(y[i] > 0)) continue;  // log undefined: not a usable point
        double lx = log(x[i]), ly = log(y[i]);
        sx += lx, sy += ly, sxx += lx * lx, sxy += lx * ly, syy += ly * ly;
        m++;
    }
    if (r2) *r2 = NAN;
    if (m < 2) return NAN;
    double vx = sxx - sx * sx / m, vy = syy - sy * sy / m, cxy = sxy - sx * sy / m;
    if (!(vx > 0)) return NAN;
    if (r2) *r2 = vy > 0 ? cxy * cxy / (vx * vy) : 1.0;
    return cxy / vx;
}

double hy_eval_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

double hy_eval_cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

hy_thread_setting hy_eval_single_thread_begin(void) {
    hy_thread_setting s = {1, openblas_get_num_threads()};
#ifdef _OPENMP
    s.omp = omp_get_max_threads();
    omp_set_num_threads(1);
#endif
    openblas_set_num_threads(1);
    return s;
}

void hy_eval_threads_restore(hy_thread_setting s) {
#ifdef _OPENMP
    omp_set_num_threads(s.omp);
#endif
    openblas_set_num_threads(s.blas);
}
