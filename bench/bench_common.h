// bench_common.h: what every hydra-bench subcommand shares: the clock and medians, the usage
// text, options, GPU set-up, random device buffers and the machine's ceilings; and the
// subcommands themselves (bench/main_bench.c dispatches to them).
#ifndef HY_BENCH_COMMON_H
#define HY_BENCH_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

// ---------------------------------------------------------------- clock and medians
double bench_now(void);  // monotonic seconds
int bench_cmp_double(const void *a, const void *b);  // qsort order of doubles
// Median of x (n >= 1); sorts x.
double bench_median(double *x, int n);
static inline double mib(size_t bytes) { return bytes / 1048576.0; }

// ---------------------------------------------------------------- usage and options
// All subcommands, or only `cmd`'s.
void bench_usage(FILE *f, const char *cmd);

typedef enum { OPT_INT, OPT_STR, OPT_FLAG, OPT_SET } opt_kind;

typedef struct {
    const char *name;  // "--B"
    opt_kind kind;
    long value;        // OPT_INT: the default, then the value given; OPT_FLAG: 0 or 1
    long min;          // OPT_INT: the smallest value accepted
    const char *str;   // OPT_STR: the default (may be NULL), then the value given
} opt;

#define OPT_END {NULL, OPT_FLAG, 0, 0, NULL}
#define MAX_SETS 64
extern const char *g_sets[MAX_SETS];  // --set section.key=value, in order
extern int g_nsets;

opt *find_opt(opt *o, const char *name);
// Fill `opts` from argv; an unknown option or a missing or bad value is one error (exit 2).
void parse_opts(const char *cmd, opt *opts, int argc, char **argv);
long opt_int(opt *opts, const char *name);
const char *opt_str(opt *opts, const char *name);

// ---------------------------------------------------------------- GPU set-up
// "no GPU" (exit 2) without a CUDA build or a visible device; else device 0 and cuBLAS.
void require_gpu(const char *cmd);
// --wy is checked with the other flags, before anything runs.
void require_wy(const char *cmd, opt *o);
// hy_cuda_gdn_set_test_options' choice of the WY kernels, recorded as a figure.
void apply_wy(const char *wy);

// ---------------------------------------------------------------- random device buffers
typedef enum { FILL_UNIFORM, FILL_UNIT_ROWS } fill_kind;

// A device buffer of n values (bf16 when bf16, else fp32): uniform in [lo, hi), or rows of
// `row` values with unit L2 norm; a random block of 2^20 values repeated.
void *dev_random(size_t n, int bf16, fill_kind kind, float lo, float hi, int row,
                 uint64_t seed);
void *dev_bf16(size_t n, uint64_t seed);  // uniform in [-1, 1)
float *dev_f32(size_t n, float lo, float hi, uint64_t seed);
float *dev_zeros(size_t n);

// ---------------------------------------------------------------- ceilings
typedef struct {
    double gemm_ms, gemm_tflops;  // bf16 GEMM 8192^3
    double copy_ms, copy_gbs;     // 1 GiB device-to-device copy, read + write bytes
} ceilings;

// Measured now: medians of `reps` after 5 untimed runs.
ceilings measure_ceilings(int reps);
// The same, printed and added to the report's figures (every GPU subcommand does this first).
ceilings ceilings_figures(int reps);

// ---------------------------------------------------------------- the subcommands
// argv holds the options after the subcommand's name; each returns the exit status.
int bench_cpu(int argc, char **argv);       // bench_cpu.c
int bench_ceilings(int argc, char **argv);  // bench_kernels.c
int bench_gdn(int argc, char **argv);       // bench_kernels.c
int bench_swa(int argc, char **argv);       // bench_kernels.c
int bench_train(int argc, char **argv);     // bench_train.c
int bench_step(int argc, char **argv);      // bench_step.c
int bench_decode(int argc, char **argv);    // bench_decode.c

#endif
