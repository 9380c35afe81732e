// bench_common.c: the clock and medians, the usage text, options, GPU set-up, random device
// buffers and the machine's ceilings (bench_common.h).
#include "bench_common.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../autograd/check.h"
#include "../autograd/rng.h"
#include "../autograd/tensor.h"
#include "../cuda/hy_cuda.h"
#include "../cuda/hy_cuda_blas.h"
#include "../cuda/hy_cuda_gdn.h"
#include "bench_report.h"

// ---------------------------------------------------------------- clock and medians
double bench_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int bench_cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double bench_median(double *x, int n) {
    qsort(x, (size_t)n, sizeof(double), bench_cmp_double);
    return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

// ---------------------------------------------------------------- usage and options
typedef struct {
    const char *cmd, *args;
} usage_line;

static const usage_line USAGE[] = {
    {"cpu", "[--arch hydra|dense] [--d-model N] [--layers N] [--heads N] [--batch B] [--seq T]\n"
            "                            [--vocab V] [--steps N] [--threads N] [--json FILE]"},
    {"ceilings", "[--reps 20] [--json FILE]"},
    {"gdn", "[--B 8] [--T 2048] [--H 16] [--D 128] [--bwd] [--iters 50] [--warmup 5]\n"
            "                            [--wy default|ref|fast] [--bv 0|16|32|64] [--json FILE]"},
    {"swa", "[--B 8] [--T 2048] [--H 12] [--D 64] [--W 512] [--bwd] [--iters 50] [--warmup 5]\n"
            "                            [--json FILE]"},
    {"train", "--config C [--B b] [--T t] [--steps 20] [--warmup 3] [--set k=v ...]\n"
              "                            [--wy default|ref|fast] [--json FILE]"},
    {"step", "--config C [--B b] [--T t] [--steps 10] [--warmup 3] [--reps 20] [--set k=v ...]\n"
             "                            [--wy default|ref|fast] [--json FILE]"},
    {"decode", "--config C [--prompt 512] [--new 256] [--reps 5] [--set k=v ...] [--json FILE]"},
};
#define N_USAGE ((int)(sizeof USAGE / sizeof USAGE[0]))

void bench_usage(FILE *f, const char *cmd) {
    for (int i = 0; i < N_USAGE; i++)
        if (!cmd || !strcmp(cmd, USAGE[i].cmd))
            fprintf(f, "%s hydra-bench %-8s %s\n", i == 0 || cmd ? "usage:" : "      ", USAGE[i].cmd,
                    USAGE[i].args);
}

const char *g_sets[MAX_SETS];  // --set section.key=value, in order
int g_nsets;

opt *find_opt(opt *o, const char *name) {
    for (; o->name; o++)
        if (!strcmp(o->name, name)) return o;
    return NULL;
}

static long int_value(const char *cmd, const opt *o, const char *v) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    HY_REQUIRE(*v && !*end && errno == 0 && x >= o->min && x <= 1000000000L,
               "hydra-bench %s: %s expects an integer >= %ld, got '%s'", cmd, o->name, o->min, v);
    return x;
}

void parse_opts(const char *cmd, opt *opts, int argc, char **argv) {
    for (int i = 0; i < argc; i++) {
        opt *o = find_opt(opts, argv[i]);
        if (!o) {
            bench_usage(stderr, cmd);
            hy_die(HY_EXIT_USAGE, "hydra-bench %s: unknown option '%s'", cmd, argv[i]);
        }
        if (o->kind == OPT_FLAG) {
            o->value = 1;
            continue;
        }
        HY_REQUIRE(i + 1 < argc, "hydra-bench %s: %s needs a value", cmd, argv[i]);
        const char *v = argv[++i];
        if (o->kind == OPT_INT) {
            o->value = int_value(cmd, o, v);
        } else if (o->kind == OPT_SET) {
            HY_REQUIRE(g_nsets < MAX_SETS, "hydra-bench %s: more than %d --set options", cmd, MAX_SETS);
            g_sets[g_nsets++] = v;
        } else {
            o->str = v;
        }
    }
}

long opt_int(opt *opts, const char *name) {
    opt *o = find_opt(opts, name);
    HY_CHECK(o, "hydra-bench: no option %s", name);
    return o->value;
}

const char *opt_str(opt *opts, const char *name) {
    opt *o = find_opt(opts, name);
    HY_CHECK(o, "hydra-bench: no option %s", name);
    return o->str;
}

// ---------------------------------------------------------------- GPU set-up
void require_gpu(const char *cmd) {
    if (!hy_cuda_built())
        hy_die(HY_EXIT_USAGE, "hydra-bench %s: no GPU: this build has no CUDA support (configure "
                              "with nvcc present and -DHYDRA_CUDA=ON)", cmd);
    if (hy_cuda_device_count() == 0)
        hy_die(HY_EXIT_USAGE, "hydra-bench %s: no GPU: no CUDA device is visible", cmd);
    hy_cuda_set_device(0);
    hy_cuda_blas_init();
}

void require_wy(const char *cmd, opt *o) {
    const char *wy = opt_str(o, "--wy");
    HY_REQUIRE(!strcmp(wy, "default") || !strcmp(wy, "ref") || !strcmp(wy, "fast"),
               "hydra-bench %s: --wy expects default, ref or fast, got '%s'", cmd, wy);
}

// hy_cuda_gdn_set_test_options' choice of the WY kernels: "default" leaves the library's
// own choice (the environment's HY_GDN_FAST_WY / HY_GDN_REFERENCE_WY).
void apply_wy(const char *wy) {
    if (!strcmp(wy, "default")) {
        const char *fast = getenv("HY_GDN_FAST_WY"), *ref = getenv("HY_GDN_REFERENCE_WY");
        const char *what = ref && ref[0] == '1'     ? "reference (HY_GDN_REFERENCE_WY=1)"
                           : fast && fast[0] == '1' ? "tensor-core (HY_GDN_FAST_WY=1)"
                                                    : "default: reference fwd, tensor-core bwd";
        fig_str("gdn_wy", "GDN WY kernels", "%s", what);
        return;
    }
    hy_cuda_gdn_set_test_options(0, !strcmp(wy, "ref"));
    fig_str("gdn_wy", "GDN WY kernels", "%s", !strcmp(wy, "ref") ? "reference" : "tensor-core");
}

// ---------------------------------------------------------------- random device buffers
#define FILL_BLOCK ((size_t)1 << 20)  // values per random block: a multiple of every head size

// FILL_BLOCK floats, uniform in [lo, hi), or rows of `row` values with unit L2 norm (the
// GDN's q and k after their L2 norm).
static float *random_block(fill_kind kind, float lo, float hi, int row, uint64_t seed) {
    float *b = (float *)hy_xmalloc(FILL_BLOCK * sizeof(float));
    hy_rng r;
    hy_rng_seed(&r, seed);
    for (size_t i = 0; i < FILL_BLOCK; i++)
        b[i] = kind == FILL_UNIT_ROWS ? hy_rng_normal(&r) : lo + (hi - lo) * hy_rng_uniform(&r);
    for (size_t i = 0; kind == FILL_UNIT_ROWS && i < FILL_BLOCK; i += (size_t)row) {
        double s = 0;
        for (int j = 0; j < row; j++) s += (double)b[i + j] * b[i + j];
        for (int j = 0; j < row; j++) b[i + j] = (float)(b[i + j] / sqrt(s));
    }
    return b;
}

// A device buffer of n values (bf16 when bf16, else fp32), the random block repeated.
// Tiling keeps the set-up of GiB-sized inputs fast; the kernels' speed depends on the
// values' range, not on every value being different.
void *dev_random(size_t n, int bf16, fill_kind kind, float lo, float hi, int row,
                 uint64_t seed) {
    float *b = random_block(kind, lo, hi, row, seed);
    size_t esz = bf16 ? 2 : 4;
    void *h = hy_xmalloc(FILL_BLOCK * esz);
    for (size_t i = 0; i < FILL_BLOCK; i++) {
        if (bf16)
            ((uint16_t *)h)[i] = hy_f32_to_bf16(b[i]);
        else
            ((float *)h)[i] = b[i];
    }
    char *d = (char *)hy_cuda_malloc(n * esz);
    for (size_t off = 0; off < n; off += FILL_BLOCK) {
        size_t m = n - off < FILL_BLOCK ? n - off : FILL_BLOCK;
        hy_cuda_memcpy_h2d(d + off * esz, h, m * esz);
    }
    free(b);
    free(h);
    return d;
}

void *dev_bf16(size_t n, uint64_t seed) { return dev_random(n, 1, FILL_UNIFORM, -1.f, 1.f, 1, seed); }
float *dev_f32(size_t n, float lo, float hi, uint64_t seed) {
    return (float *)dev_random(n, 0, FILL_UNIFORM, lo, hi, 1, seed);
}
float *dev_zeros(size_t n) {
    float *d = (float *)hy_cuda_malloc(n * sizeof(float));
    hy_cuda_memset(d, 0, n * sizeof(float));
    return d;
}

// ---------------------------------------------------------------- ceilings
typedef struct {
    int S;
    void *a, *b, *c;
    size_t bytes;
} ceil_arg;

static void run_gemm(void *p) {
    ceil_arg *a = (ceil_arg *)p;
    hy_cuda_gemm(0, 1, a->S, a->S, a->S, 1.0f, a->a, a->S, a->b, a->S, 0.0f, a->c, 0, a->S, NULL);
}

static void run_copy(void *p) {
    ceil_arg *a = (ceil_arg *)p;
    hy_cuda_memcpy_d2d(a->b, a->a, a->bytes);
}

// Measured now: C (S, S) bf16 = A B^T (the layout of hy_cuda_linear_fwd; random bf16
// operands, fp32 accumulation), 2 S^3 FLOPs; and a 1 GiB cudaMemcpy device to device,
// 2 GiB moved (read + write). Medians of `reps` after 5 untimed runs.
ceilings measure_ceilings(int reps) {
    ceilings c;
    const int S = 8192;
    size_t n = (size_t)S * S;
    ceil_arg g = {S, dev_bf16(n, 11), dev_bf16(n, 12), hy_cuda_malloc(n * 2), 0};
    c.gemm_ms = hy_cuda_time_ms(run_gemm, &g, 5, reps);
    c.gemm_tflops = 2.0 * S * S * (double)S / (c.gemm_ms * 1e-3) / 1e12;
    hy_cuda_free(g.a);
    hy_cuda_free(g.b);
    hy_cuda_free(g.c);
    ceil_arg k = {0, hy_cuda_malloc((size_t)1 << 30), hy_cuda_malloc((size_t)1 << 30), NULL,
                  (size_t)1 << 30};
    hy_cuda_memset(k.a, 1, k.bytes);
    c.copy_ms = hy_cuda_time_ms(run_copy, &k, 5, reps);
    c.copy_gbs = 2.0 * k.bytes / (c.copy_ms * 1e-3) / 1e9;
    hy_cuda_free(k.a);
    hy_cuda_free(k.b);
    return c;
}

// The ceilings as figures of the report (every GPU subcommand measures them first).
ceilings ceilings_figures(int reps) {
    ceilings c = measure_ceilings(reps);
    printf("ceilings: bf16 GEMM 8192^3 %.1f TFLOP/s, device copy %.0f GB/s (read + write)\n",
           c.gemm_tflops, c.copy_gbs);
    fig_num("ceiling_gemm_tflops", "ceiling: bf16 GEMM 8192^3 (measured)", c.gemm_tflops, "%.1f",
            "TFLOP/s");
    fig_num("ceiling_copy_gbs", "ceiling: device copy, read + write (measured)", c.copy_gbs,
            "%.0f", "GB/s");
    return c;
}
