// hydra-bench: throughput measurements.
//
//   hydra-bench cpu      [--arch hydra|dense] [--d-model N] [--layers N] [--heads N] [--batch B]
//                        [--seq T] [--vocab V] [--steps N] [--threads N] [--json FILE]
//   hydra-bench ceilings [--reps 20] [--json FILE]
//   hydra-bench gdn      [--B 8] [--T 2048] [--H 16] [--D 128] [--bwd] [--iters 50] [--warmup 5]
//                        [--wy default|ref|fast] [--json FILE]
//   hydra-bench swa      [--B 8] [--T 2048] [--H 12] [--D 64] [--W 512] [--bwd] [--iters 50]
//                        [--warmup 5] [--json FILE]
//   hydra-bench train    --config C [--B b] [--T t] [--steps 20] [--warmup 3] [--set k=v ...]
//                        [--wy default|ref|fast] [--json FILE]
//   hydra-bench step     --config C [--B b] [--T t] [--steps 10] [--warmup 3] [--reps 20]
//                        [--set k=v ...] [--wy default|ref|fast] [--json FILE]
//   hydra-bench decode   --config C [--prompt 512] [--new 256] [--reps 5] [--set k=v ...]
//                        [--json FILE]
//
// `cpu` times one training step (forward with loss, backward) on the CPU reference path.
// The others need a GPU (without one: "no GPU", exit 2):
//   ceilings  bf16 GEMM TFLOP/s (8192^3, cuBLAS) and device copy GB/s, measured now;
//   gdn, swa  one mixer kernel, forward (and with --bwd forward + backward): median ms of
//             --iters runs timed with CUDA events after --warmup untimed ones, TFLOP/s and
//             GB/s against the ceilings (FLOP and byte formulas at the kernels' sections);
//   train     the model of a config built on the GPU exactly as hydra-train builds it, on
//             random tokens; wall time of whole steps (forward, backward, clip, optimizer),
//             tokens/s, MFU, peak GPU memory;
//   step      one training step taken apart: forward, backward (per tape node, by op),
//             clip, optimizer, with CUDA events; then each piece of a layer timed alone at
//             the config's shapes, times its count per step;
//   decode    batch 1: prefill a random prompt, then one token at a time (greedy).
// Every subcommand prints the commit and the device first and a table last; --json FILE
// writes the same figures as JSON (atomically: a temporary file, then a rename).
//
// The GPU subcommands measure the ceilings first (a few seconds) so that every ratio is
// against this machine now, not a number from a data sheet.
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "../autograd/check.h"
#include "../cuda/hy_cuda.h"
#include "../cuda/hy_cuda_bench.h"
#include "../cuda/hy_cuda_blas.h"
#include "../cuda/hy_cuda_gdn.h"
#include "../cuda/hy_cuda_glue.h"
#include "../cuda/hy_cuda_ops.h"
#include "../cuda/hy_cuda_swa.h"
#include "../layers/model.h"
#include "../train/batch.h"
#include "../train/run_config.h"
#include "../train/train_gpu.h"

#ifndef HY_COMMIT
#define HY_COMMIT "unknown"
#endif

// NVIDIA's dense (no sparsity) bf16 tensor-core peak of an H100/H200 SXM, TFLOP/s.
#define PEAK_BF16_TFLOPS 989.0

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

// Median of x (n >= 1); sorts x.
static double median(double *x, int n) {
    qsort(x, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

static double mib(size_t bytes) { return bytes / 1048576.0; }

// ---------------------------------------------------------------- usage and options
typedef struct {
    const char *cmd, *args;
} usage_line;

static const usage_line USAGE[] = {
    {"cpu", "[--arch hydra|dense] [--d-model N] [--layers N] [--heads N] [--batch B] [--seq T]\n"
            "                            [--vocab V] [--steps N] [--threads N] [--json FILE]"},
    {"ceilings", "[--reps 20] [--json FILE]"},
    {"gdn", "[--B 8] [--T 2048] [--H 16] [--D 128] [--bwd] [--iters 50] [--warmup 5]\n"
            "                            [--wy default|ref|fast] [--json FILE]"},
    {"swa", "[--B 8] [--T 2048] [--H 12] [--D 64] [--W 512] [--bwd] [--iters 50] [--warmup 5]\n"
            "                            [--json FILE]"},
    {"train", "--config C [--B b] [--T t] [--steps 20] [--warmup 3] [--set k=v ...]\n"
              "                            [--wy default|ref|fast] [--json FILE]"},
    {"step", "--config C [--B b] [--T t] [--steps 10] [--warmup 3] [--reps 20] [--set k=v ...]\n"
             "                            [--wy default|ref|fast] [--json FILE]"},
    {"decode", "--config C [--prompt 512] [--new 256] [--reps 5] [--set k=v ...] [--json FILE]"},
};
#define N_USAGE ((int)(sizeof USAGE / sizeof USAGE[0]))

// All subcommands, or only `cmd`'s.
static void usage(FILE *f, const char *cmd) {
    for (int i = 0; i < N_USAGE; i++)
        if (!cmd || !strcmp(cmd, USAGE[i].cmd))
            fprintf(f, "%s hydra-bench %-8s %s\n", i == 0 || cmd ? "usage:" : "      ", USAGE[i].cmd,
                    USAGE[i].args);
}

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
static const char *g_sets[MAX_SETS];  // --set section.key=value, in order
static int g_nsets;

static opt *find_opt(opt *o, const char *name) {
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

// Fill `opts` from argv; an unknown option or a missing or bad value is one error (exit 2).
static void parse_opts(const char *cmd, opt *opts, int argc, char **argv) {
    for (int i = 0; i < argc; i++) {
        opt *o = find_opt(opts, argv[i]);
        if (!o) {
            usage(stderr, cmd);
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

static long opt_int(opt *opts, const char *name) {
    opt *o = find_opt(opts, name);
    HY_CHECK(o, "hydra-bench: no option %s", name);
    return o->value;
}

static const char *opt_str(opt *opts, const char *name) {
    opt *o = find_opt(opts, name);
    HY_CHECK(o, "hydra-bench: no option %s", name);
    return o->str;
}

// ---------------------------------------------------------------- report: figures, tables, JSON
#define MAX_COLS 10
#define MAX_ROWS 256
#define MAX_TABLES 4
#define MAX_FIGS 80

typedef struct {
    char s[96];  // the text, when !num
    double v;    // the number, when num (NaN: no value, "-" and null)
    int num;
} cell;

typedef struct {
    const char *key, *head, *fmt;  // JSON key, Markdown header, printf format of numbers
} column;

typedef struct {
    const char *name;  // JSON key
    char title[256];
    int ncol, nrow;
    column col[MAX_COLS];
    cell c[MAX_ROWS][MAX_COLS];
} table;

typedef struct {
    const char *key, *label, *fmt, *unit;
    cell c;
} figure;

// The one report of this process: figures (settings and results, a flat JSON object)
// and tables, printed in order at the end and written to --json.
static struct {
    const char *bench, *json;
    char device[256];
    figure fig[MAX_FIGS];
    int nfig;
    table *tab[MAX_TABLES];
    int ntab;
} R;

static table *table_new(const char *name, const char *title, const column *cols, int ncol) {
    HY_CHECK(R.ntab < MAX_TABLES && ncol <= MAX_COLS, "report: too many tables or columns");
    table *t = (table *)hy_xcalloc(1, sizeof *t);
    t->name = name;
    snprintf(t->title, sizeof t->title, "%s", title);
    t->ncol = ncol;
    for (int i = 0; i < ncol; i++) t->col[i] = cols[i];
    R.tab[R.ntab++] = t;
    return t;
}

// A new row, every cell "no value"; returns its index.
static int table_row(table *t) {
    HY_CHECK(t->nrow < MAX_ROWS, "report: table '%s' is full", t->name);
    for (int i = 0; i < t->ncol; i++) t->c[t->nrow][i] = (cell){"", NAN, 1};
    return t->nrow++;
}

static void set_num(table *t, int row, int col, double v) { t->c[row][col] = (cell){"", v, 1}; }

static void set_str(table *t, int row, int col, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void set_str(table *t, int row, int col, const char *fmt, ...) {
    cell *c = &t->c[row][col];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->s, sizeof c->s, fmt, ap);
    va_end(ap);
    c->num = 0;
}

static figure *fig_new(const char *key, const char *label) {
    HY_CHECK(R.nfig < MAX_FIGS, "report: too many figures");
    figure *f = &R.fig[R.nfig++];
    f->key = key, f->label = label, f->fmt = "%g", f->unit = "";
    return f;
}

static void fig_num(const char *key, const char *label, double v, const char *fmt,
                    const char *unit) {
    figure *f = fig_new(key, label);
    f->c = (cell){"", v, 1};
    f->fmt = fmt, f->unit = unit;
}

static void fig_str(const char *key, const char *label, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fig_str(const char *key, const char *label, const char *fmt, ...) {
    figure *f = fig_new(key, label);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f->c.s, sizeof f->c.s, fmt, ap);
    va_end(ap);
    f->c.num = 0;
}

// A cell as printed in a Markdown table: its text, or the number in `fmt` ("-": no value).
static const char *cell_text(const cell *c, const char *fmt, char *buf, size_t n) {
    if (!c->num) return c->s;
    if (!isfinite(c->v)) return "-";
    snprintf(buf, n, fmt, c->v);
    return buf;
}

static void print_table(const table *t) {
    char buf[64];
    if (t->title[0]) printf("\n%s", t->title);
    printf("\n|");
    for (int i = 0; i < t->ncol; i++) printf(" %s |", t->col[i].head);
    printf("\n|");
    for (int i = 0; i < t->ncol; i++) printf("---|");
    printf("\n");
    for (int r = 0; r < t->nrow; r++) {
        printf("|");
        for (int i = 0; i < t->ncol; i++)
            printf(" %s |", cell_text(&t->c[r][i], t->col[i].fmt, buf, sizeof buf));
        printf("\n");
    }
}

static void print_figures(void) {
    char buf[64];
    printf("\n| figure | value |\n|---|---|\n");
    for (int i = 0; i < R.nfig; i++) {
        const figure *f = &R.fig[i];
        printf("| %s | %s%s%s |\n", f->label, cell_text(&f->c, f->fmt, buf, sizeof buf),
               f->unit[0] ? " " : "", f->unit);
    }
}

static void json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch < 0x20)
            fprintf(f, "\\u%04x", ch);
        else
            fputc(ch, f);
    }
    fputc('"', f);
}

static void json_cell(FILE *f, const cell *c) {
    if (!c->num)
        json_str(f, c->s);
    else if (isfinite(c->v))
        fprintf(f, "%.10g", c->v);
    else
        fprintf(f, "null");
}

static void json_write(FILE *f) {
    fprintf(f, "{\n  \"bench\": ");
    json_str(f, R.bench);
    fprintf(f, ",\n  \"commit\": ");
    json_str(f, HY_COMMIT);
    fprintf(f, ",\n  \"device\": ");
    json_str(f, R.device);
    fprintf(f, ",\n  \"figures\": {");
    for (int i = 0; i < R.nfig; i++) {
        fprintf(f, "%s\n    ", i ? "," : "");
        json_str(f, R.fig[i].key);
        fprintf(f, ": ");
        json_cell(f, &R.fig[i].c);
    }
    fprintf(f, "\n  },\n  \"tables\": {");
    for (int k = 0; k < R.ntab; k++) {
        const table *t = R.tab[k];
        fprintf(f, "%s\n    ", k ? "," : "");
        json_str(f, t->name);
        fprintf(f, ": [");
        for (int r = 0; r < t->nrow; r++) {
            fprintf(f, "%s\n      {", r ? "," : "");
            for (int i = 0; i < t->ncol; i++) {
                fprintf(f, "%s", i ? ", " : "");
                json_str(f, t->col[i].key);
                fprintf(f, ": ");
                json_cell(f, &t->c[r][i]);
            }
            fprintf(f, "}");
        }
        fprintf(f, "\n    ]");
    }
    fprintf(f, "\n  }\n}\n");
}

static void json_tmp_path(const char *path, char *tmp, size_t n) {
    snprintf(tmp, n, "%s.tmp.%d", path, (int)getpid());
}

// Checked before the benchmark runs, so that a bad path costs nothing.
static void json_check_path(const char *path) {
    char tmp[1200];
    json_tmp_path(path, tmp, sizeof tmp);
    FILE *f = fopen(tmp, "wb");
    if (!f) hy_die(HY_EXIT_USAGE, "--json %s: cannot write there: %s", path, strerror(errno));
    fclose(f);
    unlink(tmp);
}

// Atomically: a reader never sees half a file.
static void json_save(const char *path) {
    char tmp[1200];
    json_tmp_path(path, tmp, sizeof tmp);
    FILE *f = fopen(tmp, "wb");
    HY_CHECK(f, "%s: cannot write: %s", tmp, strerror(errno));
    json_write(f);
    int ok = fflush(f) == 0 && fsync(fileno(f)) == 0;
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        hy_die(HY_EXIT_FAIL, "%s: cannot write: %s", path, strerror(errno));
    }
    printf("\nwrote %s\n", path);
}

// The figures (when there are any), then the tables: the last table printed is the
// subcommand's main one.
static int report_finish(int with_figures) {
    if (with_figures && R.nfig) print_figures();
    for (int i = 0; i < R.ntab; i++) print_table(R.tab[i]);
    if (R.json) json_save(R.json);
    for (int i = 0; i < R.ntab; i++) free(R.tab[i]);
    R.ntab = 0;
    return 0;
}

// The first line of every subcommand.
static void header(const char *cmd, int gpu, const char *json) {
    R.bench = cmd;
    R.json = json;
    if (json) json_check_path(json);
    if (gpu)
        hy_cuda_device_info(0, R.device, sizeof R.device);
    else
        snprintf(R.device, sizeof R.device, "cpu");
    printf("hydra-bench %s | commit %s | device %s\n", cmd, HY_COMMIT, R.device);
}

// ---------------------------------------------------------------- GPU set-up
static void require_gpu(const char *cmd) {
    if (!hy_cuda_built())
        hy_die(HY_EXIT_USAGE, "hydra-bench %s: no GPU: this build has no CUDA support (configure "
                              "with nvcc present and -DHYDRA_CUDA=ON)", cmd);
    if (hy_cuda_device_count() == 0)
        hy_die(HY_EXIT_USAGE, "hydra-bench %s: no GPU: no CUDA device is visible", cmd);
    hy_cuda_set_device(0);
    hy_cuda_blas_init();
}

// --wy is checked with the other flags, before anything runs.
static void require_wy(const char *cmd, opt *o) {
    const char *wy = opt_str(o, "--wy");
    HY_REQUIRE(!strcmp(wy, "default") || !strcmp(wy, "ref") || !strcmp(wy, "fast"),
               "hydra-bench %s: --wy expects default, ref or fast, got '%s'", cmd, wy);
}

// hy_cuda_gdn_set_test_options' choice of the WY kernels: "default" leaves the library's
// own choice (the environment's HY_GDN_FAST_WY / HY_GDN_REFERENCE_WY).
static void apply_wy(const char *wy) {
    if (!strcmp(wy, "default")) {
        const char *fast = getenv("HY_GDN_FAST_WY"), *ref = getenv("HY_GDN_REFERENCE_WY");
        fig_str("gdn_wy", "GDN WY kernels", "default (HY_GDN_FAST_WY=%s, HY_GDN_REFERENCE_WY=%s)",
                fast ? fast : "unset", ref ? ref : "unset");
        return;
    }
    hy_cuda_gdn_set_test_options(0, !strcmp(wy, "ref"));
    fig_str("gdn_wy", "GDN WY kernels", "%s", !strcmp(wy, "ref") ? "reference" : "tensor-core");
}

// ---------------------------------------------------------------- random device buffers
#define FILL_BLOCK ((size_t)1 << 20)  // values per random block: a multiple of every head size

typedef enum { FILL_UNIFORM, FILL_UNIT_ROWS } fill_kind;

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
static void *dev_random(size_t n, int bf16, fill_kind kind, float lo, float hi, int row,
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

static void *dev_bf16(size_t n, uint64_t seed) { return dev_random(n, 1, FILL_UNIFORM, -1.f, 1.f, 1, seed); }
static float *dev_f32(size_t n, float lo, float hi, uint64_t seed) {
    return (float *)dev_random(n, 0, FILL_UNIFORM, lo, hi, 1, seed);
}
static float *dev_zeros(size_t n) {
    float *d = (float *)hy_cuda_malloc(n * sizeof(float));
    hy_cuda_memset(d, 0, n * sizeof(float));
    return d;
}

// ---------------------------------------------------------------- ceilings
typedef struct {
    double gemm_ms, gemm_tflops;  // bf16 GEMM 8192^3
    double copy_ms, copy_gbs;     // 1 GiB device-to-device copy, read + write bytes
} ceilings;

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
static ceilings measure_ceilings(int reps) {
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
static ceilings ceilings_figures(int reps) {
    ceilings c = measure_ceilings(reps);
    printf("ceilings: bf16 GEMM 8192^3 %.1f TFLOP/s, device copy %.0f GB/s (read + write)\n",
           c.gemm_tflops, c.copy_gbs);
    fig_num("ceiling_gemm_tflops", "ceiling: bf16 GEMM 8192^3 (measured)", c.gemm_tflops, "%.1f",
            "TFLOP/s");
    fig_num("ceiling_copy_gbs", "ceiling: device copy, read + write (measured)", c.copy_gbs,
            "%.0f", "GB/s");
    return c;
}

static int bench_ceilings(int argc, char **argv) {
    opt o[] = {{"--reps", OPT_INT, 20, 1, NULL}, {"--json", OPT_STR, 0, 0, NULL}, OPT_END};
    parse_opts("ceilings", o, argc, argv);
    require_gpu("ceilings");
    header("ceilings", 1, opt_str(o, "--json"));
    int reps = (int)opt_int(o, "--reps");
    ceilings c = measure_ceilings(reps);
    static const column cols[] = {{"what", "what", "%s"},
                                  {"ms", "ms (median)", "%.3f"},
                                  {"value", "measured", "%.1f"},
                                  {"unit", "unit", "%s"},
                                  {"baseline", "BASELINES.md (H200, PyTorch)", "%.0f"}};
    char title[128];
    snprintf(title, sizeof title, "Machine ceilings, median of %d runs after 5 untimed", reps);
    table *t = table_new("ceilings", title, cols, 5);
    int r = table_row(t);
    set_str(t, r, 0, "bf16 GEMM 8192^3, fp32 accumulate, bf16 out (cuBLAS)");
    set_num(t, r, 1, c.gemm_ms);
    set_num(t, r, 2, c.gemm_tflops);
    set_str(t, r, 3, "TFLOP/s");
    set_num(t, r, 4, 779);
    r = table_row(t);
    set_str(t, r, 0, "device-to-device copy 1 GiB (read + write)");
    set_num(t, r, 1, c.copy_ms);
    set_num(t, r, 2, c.copy_gbs);
    set_str(t, r, 3, "GB/s");
    set_num(t, r, 4, 4244);
    fig_num("gemm_tflops", "bf16 GEMM 8192^3", c.gemm_tflops, "%.1f", "TFLOP/s");
    fig_num("copy_gbs", "device copy, read + write", c.copy_gbs, "%.0f", "GB/s");
    fig_num("copy_gbs_one_way", "device copy, one way", c.copy_gbs / 2, "%.0f", "GB/s");
    return report_finish(0);
}

// ---------------------------------------------------------------- kernel tables
// One row of a kernel table: ms, FLOPs and bytes, and the ratios to the ceilings.
static const column KERNEL_COLS[] = {
    {"pass", "pass", "%s"},           {"ms", "ms (median)", "%.3f"},
    {"gflop", "GFLOP", "%.2f"},       {"tflops", "TFLOP/s", "%.1f"},
    {"pct_gemm", "% GEMM ceiling", "%.1f"}, {"mb", "MB moved (min)", "%.1f"},
    {"gbs", "GB/s", "%.0f"},          {"pct_copy", "% copy ceiling", "%.1f"},
    {"peer_ms", "fla peer ms", "%.2f"}, {"target_ms", "target ms", "%.2f"}};

static void kernel_row(table *t, const ceilings *c, const char *pass, double ms, double flops,
                       double bytes, double peer, double target) {
    int r = table_row(t);
    set_str(t, r, 0, "%s", pass);
    set_num(t, r, 1, ms);
    set_num(t, r, 2, flops / 1e9);
    set_num(t, r, 3, flops / (ms * 1e-3) / 1e12);
    set_num(t, r, 4, 100.0 * flops / (ms * 1e-3) / 1e12 / c->gemm_tflops);
    set_num(t, r, 5, bytes / 1e6);
    set_num(t, r, 6, bytes / (ms * 1e-3) / 1e9);
    set_num(t, r, 7, 100.0 * bytes / (ms * 1e-3) / 1e9 / c->copy_gbs);
    if (t->ncol < 10) return;
    set_num(t, r, 8, peer);
    set_num(t, r, 9, target);
}

// ---------------------------------------------------------------- gated delta rule
// FLOPs of the chunkwise (WY) algorithm per token and head, chunk C, dk = dv = D, 2 per
// multiply-add, every product at its full size (what the tensor cores run: the causal
// masks are not discounted). Per chunk of C tokens:
//   A = (beta K) K^T                       2 C^2 D
//   T = (I + strictly lower A)^-1          2 C^3 / 3   (triangular inverse; an upper bound)
//   W = T (beta K), U = T (beta V)         4 C^2 D
//   V' = U - W S^T                         2 C D^2
//   O = Q S^T + ((Q K^T) o mask) V'        2 C D^2 + 4 C^2 D
//   S <- decay S + V'^T K                  2 C D^2
// so per token 10 C D + 6 D^2 + 2 C^2 / 3 (C = 64, D = 128: 183 kFLOP). Backward counts
// twice the forward (the two gradient products of each product); what the kernels
// recompute is not useful work and is not counted: fwd+bwd = 3 x forward, as in 6N.
static double gdn_flops_per_token(int C, int D) {
    return 10.0 * C * D + 6.0 * (double)D * D + 2.0 * (double)C * C / 3.0;
}

// Minimal bytes, each input read once and each output written once per pass (zero
// initial state and no final state, as in training; the workspace is not counted):
//   forward:  q, k, v read, o written (bf16); alpha, beta read (fp32)
//             = 4 BTHD 2 + 2 BTH 4
//   backward: q, k, v, d_o read (bf16); alpha, beta read (fp32); dq, dk, dv (fp32) and
//             dalpha, dbeta (fp32) written = 4 BTHD 2 + 3 BTHD 4 + 4 BTH 4
static double gdn_fwd_bytes(double BTH, int D) { return 4 * BTH * D * 2 + 2 * BTH * 4; }
static double gdn_bwd_bytes(double BTH, int D) { return 4 * BTH * D * 2 + 3 * BTH * D * 4 + 4 * BTH * 4; }

// The flash-linear-attention peer and this project's target (../shared/BASELINES.md, H200),
// for the shapes listed there; NaN otherwise.
static void gdn_peer(int B, int T, int H, int D, double *fwd, double *fb, double *target) {
    static const double rows[3][7] = {{8, 2048, 16, 128, 0.75, 2.73, 2.0},
                                      {4, 4096, 16, 128, 1.13, 2.41, 1.8},
                                      {1, 32768, 16, 128, 2.02, 6.35, 4.5}};
    *fwd = *fb = *target = NAN;
    for (int i = 0; i < 3; i++)
        if (rows[i][0] == B && rows[i][1] == T && rows[i][2] == H && rows[i][3] == D)
            *fwd = rows[i][4], *fb = rows[i][5], *target = rows[i][6];
}

typedef struct {
    void *q, *k, *v, *o, *d_o, *ws;
    float *alpha, *beta, *dq, *dk, *dv, *da, *db;
} gdn_bufs;

// Inputs as the model makes them: q, k of unit norm per head, v and d_o in [-1, 1),
// alpha in [0.9, 1) (mild decay), beta in [0.1, 0.9).
static gdn_bufs gdn_alloc(int B, int T, int H, int D) {
    size_t n = (size_t)B * T * H * D, na = (size_t)B * T * H;
    gdn_bufs g;
    g.q = dev_random(n, 1, FILL_UNIT_ROWS, 0, 0, D, 21);
    g.k = dev_random(n, 1, FILL_UNIT_ROWS, 0, 0, D, 22);
    g.v = dev_bf16(n, 23);
    g.d_o = dev_bf16(n, 24);
    g.o = hy_cuda_malloc(n * 2);
    g.alpha = dev_f32(na, 0.9f, 1.0f, 25);
    g.beta = dev_f32(na, 0.1f, 0.9f, 26);
    g.dq = (float *)hy_cuda_malloc(n * 4);
    g.dk = (float *)hy_cuda_malloc(n * 4);
    g.dv = (float *)hy_cuda_malloc(n * 4);
    g.da = (float *)hy_cuda_malloc(na * 4);
    g.db = (float *)hy_cuda_malloc(na * 4);
    g.ws = hy_cuda_malloc(hy_cuda_gdn_workspace_bytes(B, T, H, D, 64));
    return g;
}

static void gdn_release(gdn_bufs *g) {
    void *all[] = {g->q, g->k, g->v, g->d_o, g->o, g->alpha, g->beta, g->dq, g->dk, g->dv,
                   g->da, g->db, g->ws};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) hy_cuda_free(all[i]);
}

// Median forward and forward + backward ms (hy_cuda_gdn_time: CUDA events, warm-up excluded).
static void gdn_time(int B, int T, int H, int D, int warmup, int iters, double *fwd, double *fb) {
    gdn_bufs g = gdn_alloc(B, T, H, D);
    hy_cuda_gdn_time(B, T, H, D, g.q, g.k, g.v, g.alpha, g.beta, NULL, g.o, NULL, g.d_o, NULL,
                     g.dq, g.dk, g.dv, g.da, g.db, NULL, g.ws, warmup, iters, fwd, fb);
    gdn_release(&g);
}

static void require_head_dim(const char *cmd, int D) {
    HY_REQUIRE(D == 64 || D == 128, "hydra-bench %s: --D must be 64 or 128 (the tensor-core "
                                    "kernels' head sizes), got %d", cmd, D);
}

static int bench_gdn(int argc, char **argv) {
    opt o[] = {{"--B", OPT_INT, 8, 1, NULL},      {"--T", OPT_INT, 2048, 1, NULL},
               {"--H", OPT_INT, 16, 1, NULL},     {"--D", OPT_INT, 128, 1, NULL},
               {"--bwd", OPT_FLAG, 0, 0, NULL},   {"--iters", OPT_INT, 50, 1, NULL},
               {"--warmup", OPT_INT, 5, 0, NULL}, {"--wy", OPT_STR, 0, 0, "default"},
               {"--json", OPT_STR, 0, 0, NULL},   OPT_END};
    parse_opts("gdn", o, argc, argv);
    require_wy("gdn", o);
    int B = (int)opt_int(o, "--B"), T = (int)opt_int(o, "--T"), H = (int)opt_int(o, "--H");
    int D = (int)opt_int(o, "--D"), bwd = (int)opt_int(o, "--bwd");
    int iters = (int)opt_int(o, "--iters"), warmup = (int)opt_int(o, "--warmup");
    require_head_dim("gdn", D);
    HY_REQUIRE((long)B * H <= 65535, "hydra-bench gdn: B * H must be <= 65535, got %ld", (long)B * H);
    require_gpu("gdn");
    header("gdn", 1, opt_str(o, "--json"));
    apply_wy(opt_str(o, "--wy"));
    ceilings c = ceilings_figures(20);
    double fwd, fb;
    gdn_time(B, T, H, D, warmup, iters, &fwd, &fb);

    double BTH = (double)B * T * H, f_flops = BTH * gdn_flops_per_token(64, D);
    double fbytes = gdn_fwd_bytes(BTH, D), bbytes = gdn_bwd_bytes(BTH, D);
    double pf, pfb, target;
    gdn_peer(B, T, H, D, &pf, &pfb, &target);
    fig_str("shape", "shape (B, T, H, D), chunk 64", "(%d, %d, %d, %d)", B, T, H, D);
    fig_num("iters", "timed runs (median)", iters, "%.0f", "");
    fig_num("fwd_ms", "forward", fwd, "%.3f", "ms");
    if (bwd) fig_num("fwd_bwd_ms", "forward + backward", fb, "%.3f", "ms");
    char title[200];
    snprintf(title, sizeof title, "Gated delta rule (B, T, H, D) = (%d, %d, %d, %d), chunk 64: "
             "median of %d after %d untimed; FLOPs: bwd = 2 x fwd", B, T, H, D, iters, warmup);
    table *t = table_new("gdn", title, KERNEL_COLS, 10);
    kernel_row(t, &c, "forward", fwd, f_flops, fbytes, pf, NAN);
    if (bwd) {
        kernel_row(t, &c, "forward + backward", fb, 3 * f_flops, fbytes + bbytes, pfb, target);
        kernel_row(t, &c, "backward (difference)", fb - fwd, 2 * f_flops, bbytes, pfb - pf, NAN);
    }
    return report_finish(1);
}

// ---------------------------------------------------------------- sliding-window attention
// Scores inside the window over one (b, h): sum over i < T of min(i + 1, W).
static double window_pairs(int T, int W) {
    double s = 0;
    for (int i = 0; i < T; i++) s += i + 1 < W ? i + 1 : W;
    return s;
}

// FLOPs over the in-window scores only: forward Q K^T and P V, 2 D each per score
// (4 D); backward twice that (dV, dP, dQ, dK; the kernels' recomputation of Q K^T is
// not counted): fwd+bwd = 3 x forward, the GDN's convention. (FlashAttention's papers
// count backward as 2.5 x forward, recomputation included: their TFLOP/s read 7/6 of
// ours for the same time.)
//
// Minimal bytes:
//   forward:  q, k, v read and o written (bf16); lse written (fp32) = 4 BTHD 2 + BTH 4
//   backward: q, k, v, o, d_o read (bf16), lse read (fp32); dq, dk, dv written (fp32)
//             = 5 BTHD 2 + BTH 4 + 3 BTHD 4
static double swa_fwd_bytes(double BTH, int D) { return 4 * BTH * D * 2 + BTH * 4; }
static double swa_bwd_bytes(double BTH, int D) { return 5 * BTH * D * 2 + BTH * 4 + 3 * BTH * D * 4; }

typedef struct {
    void *q, *k, *v, *o, *d_o, *ws;
    float *lse, *dq, *dk, *dv;
} swa_bufs;

static swa_bufs swa_alloc(int B, int T, int H, int D) {
    size_t n = (size_t)B * T * H * D, rows = (size_t)B * T * H;
    swa_bufs s;
    s.q = dev_random(n, 1, FILL_UNIFORM, -1.5f, 1.5f, 1, 31);
    s.k = dev_random(n, 1, FILL_UNIFORM, -1.5f, 1.5f, 1, 32);
    s.v = dev_random(n, 1, FILL_UNIFORM, -1.5f, 1.5f, 1, 33);
    s.d_o = dev_random(n, 1, FILL_UNIFORM, -1.5f, 1.5f, 1, 34);
    s.o = hy_cuda_malloc(n * 2);
    s.lse = (float *)hy_cuda_malloc(rows * 4);
    s.dq = (float *)hy_cuda_malloc(n * 4);
    s.dk = (float *)hy_cuda_malloc(n * 4);
    s.dv = (float *)hy_cuda_malloc(n * 4);
    s.ws = hy_cuda_malloc(hy_cuda_swa_workspace_bytes(B, T, H, D));
    return s;
}

static void swa_release(swa_bufs *s) {
    void *all[] = {s->q, s->k, s->v, s->d_o, s->o, s->lse, s->dq, s->dk, s->dv, s->ws};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) hy_cuda_free(all[i]);
}

// Median forward and forward + backward ms (hy_cuda_swa_time_ms, which adds 2 untimed runs
// of its own after our `warmup`).
static void swa_time(int B, int T, int H, int D, int W, int warmup, int iters, double *fwd,
                     double *fb) {
    swa_bufs s = swa_alloc(B, T, H, D);
    for (int i = 0; i < warmup; i++) {
        hy_cuda_swa_fwd(B, T, H, D, W, s.q, s.k, s.v, s.o, s.lse, NULL);
        hy_cuda_swa_bwd(B, T, H, D, W, s.q, s.k, s.v, s.o, s.lse, s.d_o, s.dq, s.dk, s.dv, s.ws, NULL);
    }
    *fwd = hy_cuda_swa_time_ms(0, iters, B, T, H, D, W, s.q, s.k, s.v, s.o, s.lse, s.d_o, s.dq,
                               s.dk, s.dv, s.ws);
    *fb = hy_cuda_swa_time_ms(1, iters, B, T, H, D, W, s.q, s.k, s.v, s.o, s.lse, s.d_o, s.dq,
                              s.dk, s.dv, s.ws);
    swa_release(&s);
}

static int bench_swa(int argc, char **argv) {
    opt o[] = {{"--B", OPT_INT, 8, 1, NULL},     {"--T", OPT_INT, 2048, 1, NULL},
               {"--H", OPT_INT, 12, 1, NULL},    {"--D", OPT_INT, 64, 1, NULL},
               {"--W", OPT_INT, 512, 1, NULL},   {"--bwd", OPT_FLAG, 0, 0, NULL},
               {"--iters", OPT_INT, 50, 1, NULL}, {"--warmup", OPT_INT, 5, 0, NULL},
               {"--json", OPT_STR, 0, 0, NULL},  OPT_END};
    parse_opts("swa", o, argc, argv);
    int B = (int)opt_int(o, "--B"), T = (int)opt_int(o, "--T"), H = (int)opt_int(o, "--H");
    int D = (int)opt_int(o, "--D"), W = (int)opt_int(o, "--W"), bwd = (int)opt_int(o, "--bwd");
    int iters = (int)opt_int(o, "--iters"), warmup = (int)opt_int(o, "--warmup");
    require_head_dim("swa", D);
    HY_REQUIRE(iters <= 1000, "hydra-bench swa: --iters must be <= 1000, got %d", iters);
    require_gpu("swa");
    header("swa", 1, opt_str(o, "--json"));
    ceilings c = ceilings_figures(20);
    double fwd, fb;
    swa_time(B, T, H, D, W, warmup, iters, &fwd, &fb);

    double BTH = (double)B * T * H, pairs = window_pairs(T, W) * B * H, f_flops = 4.0 * D * pairs;
    double fbytes = swa_fwd_bytes(BTH, D), bbytes = swa_bwd_bytes(BTH, D);
    fig_str("shape", "shape (B, T, H, D), window", "(%d, %d, %d, %d), W %d", B, T, H, D, W);
    fig_num("iters", "timed runs (median)", iters, "%.0f", "");
    fig_num("scores_in_window", "scores in the window", pairs, "%.4g", "");
    fig_num("fwd_ms", "forward", fwd, "%.3f", "ms");
    if (bwd) fig_num("fwd_bwd_ms", "forward + backward", fb, "%.3f", "ms");
    char title[200];
    snprintf(title, sizeof title, "Sliding-window attention (B, T, H, D) = (%d, %d, %d, %d), "
             "W %d: median of %d; FLOPs over in-window scores, bwd = 2 x fwd", B, T, H, D, W, iters);
    table *t = table_new("swa", title, KERNEL_COLS, 8);
    kernel_row(t, &c, "forward", fwd, f_flops, fbytes, NAN, NAN);
    if (bwd) {
        kernel_row(t, &c, "forward + backward", fb, 3 * f_flops, fbytes + bbytes, NAN, NAN);
        kernel_row(t, &c, "backward (difference)", fb - fwd, 2 * f_flops, bbytes, NAN, NAN);
    }
    return report_finish(1);
}

// ---------------------------------------------------------------- model FLOPs
// Model FLOPs per trained token (forward + backward), the 6N accounting:
//   6 (N - V d)                     every non-embedding parameter, 2 in forward and 4 in
//                                   backward (norm weights, biases and the short conv,
//                                   all tiny, included)
// + 6 d V                           the tied head (the embedding lookup is free)
// + per GDN layer 3 H (10 C D + 6 D^2 + 2 C^2 / 3)    the chunkwise delta rule (above)
// + per attention layer 3 H 4 D w   Q K^T and P V over the in-window scores, w the mean
//                                   window min(i + 1, W) over the T positions (dense: W = T)
typedef struct {
    double dense, head, gdn, attn, total;
} model_flops;

static model_flops flops_per_token(const hy_model *m, int T) {
    const hy_model_config *c = &m->cfg;
    double d = c->d_model, V = c->vocab_size, H = c->n_heads, D = c->head_dim;
    int W = m->arch == HY_ARCH_DENSE ? T : c->swa_window;
    model_flops f = {0, 0, 0, 0, 0};
    f.dense = 6.0 * ((double)hy_model_param_count(m) - V * d);
    f.head = 6.0 * d * V;
    for (int i = 0; i < c->n_layers; i++) {
        if (m->layer[i].kind == HY_LAYER_GDN)
            f.gdn += 3.0 * H * gdn_flops_per_token(c->dn_chunk_size, (int)D);
        else
            f.attn += 3.0 * H * 4.0 * D * window_pairs(T, W) / T;
    }
    f.total = f.dense + f.head + f.gdn + f.attn;
    return f;
}

// ---------------------------------------------------------------- a model on the GPU
// Built as hydra-train builds it (train/trainer.c, build and build_gpu): the host model,
// its arenas and the host optimizer are the staging copies; hy_train_gpu holds the
// working copy; the tape's acts and scratch are CUDA arenas. The data are random tokens
// in [0, vocab) (NB batches made once, cycled), not a data source: this measures the
// model, not the loader.
#define NB 4

typedef struct {
    hy_run_config cfg;
    int B, T;
    hy_model host;
    hy_arena params, grads, optim, stage, acts, scratch;
    hy_optimizer opt;
    hy_train_gpu gpu;
    hy_tape tape;
    hy_schedule sched;
    int32_t *ids, *tgt;  // (NB, B, T): tgt is ids shifted by one, as in a text batch
} gpu_run;

static void require_config(const char *cmd, opt *o) {
    if (opt_str(o, "--config")) return;
    usage(stderr, cmd);
    hy_die(HY_EXIT_USAGE, "hydra-bench %s: --config FILE is required", cmd);
}

// The config file, then --set, then --B / --T, checked; a model the GPU kernels cannot
// run is a clear error (hy_device_choose).
static void load_config(hy_run_config *c, const char *cmd, opt *o) {
    const char *path = opt_str(o, "--config");
    hy_run_config_defaults(c);
    hy_run_config_load(c, path);
    for (int i = 0; i < g_nsets; i++) hy_run_config_set(c, g_sets[i]);
    char kv[64];
    opt *b = find_opt(o, "--B"), *t = find_opt(o, "--T");
    if (b && b->value) {
        snprintf(kv, sizeof kv, "train.batch_size=%ld", b->value);
        hy_run_config_set(c, kv);
    }
    if (t && t->value) {
        snprintf(kv, sizeof kv, "train.seq_len=%ld", t->value);
        hy_run_config_set(c, kv);
    }
    hy_run_config_finalize(c);
    char what[1200], why[300];
    snprintf(what, sizeof what, "hydra-bench %s: %s", cmd, path);
    hy_device_choose("cuda", c->arch, &c->model, what, why, sizeof why);
}

// The trainer's activation plan (train/trainer.c, plan_activations), repeated here so the
// benchmark reserves what a real run reserves: keep the two in step.
static size_t plan_activations(const hy_run_config *c, size_t elem) {
    const hy_model_config *m = &c->model;
    size_t width = (size_t)(m->d_model > m->n_heads * m->head_dim ? m->d_model : m->n_heads * m->head_dim);
    size_t per_tok = (24 * width + 4 * (size_t)m->mlp_hidden) * m->n_layers + 3 * (size_t)m->vocab_size;
    size_t tokens = (size_t)c->train.batch_size * c->train.seq_len;
    return per_tok * tokens * elem * 5 / 4 + ((size_t)64 << 20);
}

static void random_batches(gpu_run *r) {
    int V = r->cfg.model.vocab_size;
    size_t n = (size_t)r->B * r->T;
    r->ids = (int32_t *)hy_xmalloc(NB * n * sizeof(int32_t));
    r->tgt = (int32_t *)hy_xmalloc(NB * n * sizeof(int32_t));
    hy_rng g;
    hy_rng_seed(&g, 1234);
    for (size_t row = 0; row < (size_t)NB * r->B; row++) {
        int32_t *x = r->ids + row * r->T, *y = r->tgt + row * r->T;
        int32_t prev = (int32_t)hy_rng_below(&g, (uint64_t)V);
        for (int t = 0; t < r->T; t++) {
            x[t] = prev;
            y[t] = prev = (int32_t)hy_rng_below(&g, (uint64_t)V);
        }
    }
}

static void gpu_run_build(gpu_run *r) {
    hy_run_config *c = &r->cfg;
    r->B = c->train.batch_size, r->T = c->train.seq_len;
    hy_model_build(&r->host, c->arch, &c->model);
    size_t pbytes = hy_params_bytes(&r->host.params);
    hy_arena_init(&r->params, "params", HY_CPU, pbytes);
    hy_arena_init(&r->grads, "grads", HY_CPU, pbytes);
    hy_arena_init(&r->optim, "optim", HY_CPU, hy_optim_state_bytes(&c->optim, &r->host.params));
    hy_arena_init(&r->acts, "acts", HY_CUDA, plan_activations(c, 2));
    hy_arena_init(&r->scratch, "scratch", HY_CUDA, plan_activations(c, sizeof(float)));
    hy_arena_init(&r->stage, "stage", HY_CPU, hy_optim_scratch_bytes(&c->optim, &r->host.params));
    hy_params_alloc(&r->host.params, &r->params, &r->grads);
    hy_model_init_weights(&r->host, (uint64_t)c->train.seed);
    hy_optim_init(&r->opt, &c->optim, &r->host.params, &r->optim, &r->stage);
    hy_train_gpu_init(&r->gpu, &r->host, &r->opt);
    hy_tape_init(&r->tape, &r->acts, &r->scratch, 1 << 14, 1 << 15);
    hy_params_bind(&r->gpu.model.params, &r->tape);
    r->sched = hy_run_config_schedule(c);
    random_batches(r);
}

static void gpu_run_free(gpu_run *r) {
    hy_tape_free(&r->tape);
    hy_train_gpu_free(&r->gpu);
    hy_model_destroy(&r->host);
    hy_arena *all[6] = {&r->params, &r->grads, &r->optim, &r->acts, &r->scratch, &r->stage};
    for (int i = 0; i < 6; i++) hy_arena_free(all[i]);
    free(r->ids);
    free(r->tgt);
}

static void print_model(const gpu_run *r, const char *path) {
    char sched[1100];
    const hy_model_config *m = &r->cfg.model;
    printf("model %s: %s, d_model %d, %d layers (%s), %d heads x %d, vocab %d, %lld parameters\n",
           path, r->cfg.arch == HY_ARCH_DENSE ? "dense" : "HydraLM", m->d_model, m->n_layers,
           r->cfg.arch == HY_ARCH_DENSE ? "attention" : hy_config_schedule(m, sched, sizeof sched),
           m->n_heads, m->head_dim, m->vocab_size, (long long)hy_model_param_count(&r->host));
    printf("batch %d x %d, grad_accum %d; random tokens in [0, %d)\n", r->B, r->T,
           r->cfg.train.grad_accum, m->vocab_size);
}

// Micro-batch `mb` (of the NB random ones) as (B, T) i32 tensors on the GPU, a fresh tape,
// and the forward: the loss, on the device.
static hy_tensor *forward(gpu_run *r, int64_t mb) {
    size_t n = (size_t)r->B * r->T, k = (size_t)(mb % NB);
    int64_t shape[2] = {r->B, r->T};
    hy_tape_reset(&r->tape);
    hy_tensor *ids = hy_tensor_new(&r->acts, HY_I32, 2, shape, "ids");
    hy_tensor *tgt = hy_tensor_new(&r->acts, HY_I32, 2, shape, "targets");
    hy_cuda_memcpy_h2d(ids->data, r->ids + k * n, n * sizeof(int32_t));
    hy_cuda_memcpy_h2d(tgt->data, r->tgt + k * n, n * sizeof(int32_t));
    hy_tensor *loss;
    hy_model_forward(&r->gpu.model, &r->tape, ids, tgt, HY_IGNORE_INDEX, &loss);
    return loss;
}

static float scalar(const hy_tensor *t) {
    float x;
    hy_tensor_to_host_f32(t, &x);  // waits for the GPU
    return x;
}

// One optimizer step as trainer.c takes it (train_step, clip, update): every micro-batch's
// loss is read (a sync, as there), the norm is read by the clip, and the update ends with
// a sync. Returns the mean loss.
static float train_step(gpu_run *r, int64_t step) {
    hy_param_table *p = &r->gpu.model.params;
    int accum = r->cfg.train.grad_accum;
    hy_params_zero_grads(p);
    double sum = 0;
    for (int micro = 0; micro < accum; micro++) {
        hy_tensor *loss = forward(r, step * accum + micro);
        hy_tape_backward(&r->tape, loss);
        sum += scalar(loss);
    }
    if (accum > 1) hy_cuda_scale_f32(p->numel, 1.0f / accum, p->grads, NULL);
    hy_train_gpu_clip(&r->gpu, r->cfg.train.grad_clip);
    hy_train_gpu_step(&r->gpu, &r->opt, hy_lr_mult(&r->sched, step));
    return (float)(sum / accum);
}

// Device memory in use now (cudaMemGetInfo: total - free), bytes.
static size_t device_used(void) {
    size_t fr, total;
    hy_cuda_mem_info(&fr, &total);
    return total - fr;
}

// The GPU arenas of a run: reserved (cap) and high-water (peak) bytes.
static void arena_totals(const gpu_run *r, size_t *cap, size_t *peak) {
    const hy_arena *all[6] = {&r->gpu.values, &r->gpu.grads, &r->gpu.half, &r->gpu.state,
                              &r->acts, &r->scratch};
    *cap = *peak = 0;
    for (int i = 0; i < 6; i++) *cap += all[i]->cap, *peak += all[i]->peak;
}

static void memory_figures(const gpu_run *r, size_t used_start) {
    size_t cap, peak, used = device_used();
    arena_totals(r, &cap, &peak);
    fig_num("arenas_reserved_mib", "GPU arenas reserved", mib(cap), "%.0f", "MiB");
    fig_num("arenas_peak_mib", "GPU arenas' peak use", mib(peak), "%.0f", "MiB");
    fig_num("acts_peak_mib", "  of which activations (acts)", mib(r->acts.peak), "%.0f", "MiB");
    fig_num("scratch_peak_mib", "  of which scratch (activation gradients)", mib(r->scratch.peak),
            "%.0f", "MiB");
    fig_num("device_used_mib", "device memory in use (cudaMemGetInfo, whole GPU)", mib(used),
            "%.0f", "MiB");
    fig_num("run_used_mib", "  of which this run (in use now - at start)",
            mib(used) - mib(used_start), "%.0f", "MiB");
}

static void run_figures(const gpu_run *r, const char *path) {
    fig_str("config", "config", "%s", path);
    fig_num("params", "parameters", (double)hy_model_param_count(&r->host), "%.0f", "");
    fig_num("B", "batch size B", r->B, "%.0f", "");
    fig_num("T", "sequence length T", r->T, "%.0f", "");
    fig_num("grad_accum", "micro-batches per step", r->cfg.train.grad_accum, "%.0f", "");
}

// `warmup` untimed steps, then `steps` timed ones: wall ms of each into ms[], the first
// and last timed losses.
static void time_train(gpu_run *r, int warmup, int steps, double *ms, float *first, float *last) {
    for (int s = -warmup; s < steps; s++) {
        double t0 = now();
        float loss = train_step(r, s + warmup);
        double dt = (now() - t0) * 1e3;
        if (s < 0) continue;
        ms[s] = dt;
        if (s == 0) *first = loss;
        *last = loss;
        printf("step %d/%d: %.1f ms, loss %.4f\n", s + 1, steps, dt, loss);
    }
}

// ---------------------------------------------------------------- train
static int bench_train(int argc, char **argv) {
    opt o[] = {{"--config", OPT_STR, 0, 0, NULL},  {"--B", OPT_INT, 0, 1, NULL},
               {"--T", OPT_INT, 0, 1, NULL},       {"--steps", OPT_INT, 20, 1, NULL},
               {"--warmup", OPT_INT, 3, 0, NULL},  {"--set", OPT_SET, 0, 0, NULL},
               {"--wy", OPT_STR, 0, 0, "default"}, {"--json", OPT_STR, 0, 0, NULL}, OPT_END};
    parse_opts("train", o, argc, argv);
    require_wy("train", o);
    require_config("train", o);
    int steps = (int)opt_int(o, "--steps"), warmup = (int)opt_int(o, "--warmup");
    require_gpu("train");
    gpu_run *r = (gpu_run *)hy_xcalloc(1, sizeof *r);
    load_config(&r->cfg, "train", o);
    header("train", 1, opt_str(o, "--json"));
    apply_wy(opt_str(o, "--wy"));
    ceilings c = ceilings_figures(20);
    size_t used_start = device_used();
    gpu_run_build(r);
    print_model(r, opt_str(o, "--config"));
    printf("memory plan (MiB):\n");
    hy_train_gpu_report(&r->gpu, stdout);
    hy_arena_report(&r->acts, stdout);
    hy_arena_report(&r->scratch, stdout);

    double *ms = (double *)hy_xcalloc((size_t)steps, sizeof(double));
    float first = NAN, last = NAN;
    time_train(r, warmup, steps, ms, &first, &last);
    double sum = 0, lo = ms[0];
    for (int s = 0; s < steps; s++) sum += ms[s], lo = ms[s] < lo ? ms[s] : lo;
    double med = median(ms, steps);
    double tokens = (double)r->B * r->T * r->cfg.train.grad_accum, tps = tokens / (med * 1e-3);
    model_flops f = flops_per_token(&r->gpu.model, r->T);

    run_figures(r, opt_str(o, "--config"));
    fig_num("warmup_steps", "untimed warm-up steps", warmup, "%.0f", "");
    fig_num("steps", "timed steps", steps, "%.0f", "");
    fig_num("ms_per_step", "ms per step (median)", med, "%.1f", "ms");
    fig_num("ms_per_step_mean", "ms per step (mean)", sum / steps, "%.1f", "ms");
    fig_num("ms_per_step_min", "ms per step (fastest)", lo, "%.1f", "ms");
    fig_num("tokens_per_s", "tokens/s (median step)", tps, "%.0f", "");
    fig_num("gflop_per_token", "model GFLOP per token (fwd + bwd)", f.total / 1e9, "%.3f", "");
    fig_num("gflop_per_token_dense", "  6 x non-embedding parameters", f.dense / 1e9, "%.3f", "");
    fig_num("gflop_per_token_head", "  6 d V (tied head)", f.head / 1e9, "%.3f", "");
    fig_num("gflop_per_token_gdn", "  delta-rule cores", f.gdn / 1e9, "%.3f", "");
    fig_num("gflop_per_token_attn", "  attention in the window", f.attn / 1e9, "%.3f", "");
    fig_num("tflops", "model TFLOP/s achieved", f.total * tps / 1e12, "%.1f", "");
    fig_num("mfu_measured_pct", "MFU vs the measured GEMM ceiling", 100.0 * f.total * tps / 1e12 / c.gemm_tflops,
            "%.1f", "%");
    fig_num("mfu_peak_pct", "MFU vs 989 TFLOP/s (dense bf16 peak)",
            100.0 * f.total * tps / 1e12 / PEAK_BF16_TFLOPS, "%.1f", "%");
    fig_num("loss_first", "loss, first timed step", first, "%.4f", "");
    fig_num("loss_last", "loss, last timed step", last, "%.4f", "");
    memory_figures(r, used_start);
    free(ms);
    gpu_run_free(r);
    free(r);
    return report_finish(1);
}

// ---------------------------------------------------------------- step: the parts of one step
#define MAX_OPS 64
#define MAX_STEP_STEPS 100

// Backward time per op, over the measured steps.
typedef struct {
    char name[MAX_OPS][80];
    int nodes[MAX_OPS];                  // nodes of this op per step
    double ms[MAX_OPS][MAX_STEP_STEPS];  // per measured step
    int n;
} op_times;

// A node's row: its op name, and for a linear layer also its weight, less the layer
// number ("linear mixer.qkv_proj"): the projections differ in shape and in cost.
static void node_key(const hy_node *n, char *buf, size_t len) {
    const char *w = n->n_in > 1 && n->in[1] ? n->in[1]->name : "";
    if (strcmp(n->op, "linear") || !w[0]) {
        snprintf(buf, len, "%s", n->op);
        return;
    }
    if (!strncmp(w, "blocks.", 7) && strchr(w + 7, '.')) w = strchr(w + 7, '.') + 1;
    size_t k = strlen(w);
    if (k > 7 && !strcmp(w + k - 7, ".weight")) k -= 7;
    snprintf(buf, len, "linear %.*s", (int)k, w);
}

static int op_index(op_times *ot, const hy_node *n) {
    char key[80];
    node_key(n, key, sizeof key);
    for (int i = 0; i < ot->n; i++)
        if (!strcmp(ot->name[i], key)) return i;
    HY_CHECK(ot->n < MAX_OPS, "hydra-bench step: more than %d kinds of tape node", MAX_OPS);
    snprintf(ot->name[ot->n], sizeof ot->name[0], "%s", key);
    return ot->n++;
}

// Event slots of one step: the parts, then one per backward node (and one after the last).
enum { EV_FWD0, EV_FWD1, EV_CLIP0, EV_CLIP1, EV_OPT1, EV_NODE0 };

// hy_tape_backward with an event before every node: the walk of autograd/tape.c (nodes in
// reverse, a node runs when any output has a gradient), seeded with dL/dL = 1.
static void backward_timed(hy_tape *t, hy_tensor *loss, hy_cuda_events *ev) {
    hy_tensor *g = hy_grad_acc(t, loss);
    float one = 1.0f;
    hy_cuda_memcpy_h2d(g->data, &one, sizeof one);
    for (int i = t->n_nodes - 1, k = 0; i >= 0; i--, k++) {
        hy_node *n = &t->nodes[i];
        hy_cuda_events_record(ev, EV_NODE0 + k);
        int any = 0;
        for (int j = 0; j < n->n_out; j++) any |= hy_grad(t, n->out[j]) != NULL;
        if (any) n->backward(t, n);
    }
    hy_cuda_events_record(ev, EV_NODE0 + t->n_nodes);
    t->backward_done = 1;
}

typedef struct {
    double fwd, bwd, clip, opt, wall;  // ms
} step_parts;

// One step (one micro-batch) with events around each part; the node times go to `ot`
// (column `col`, or nowhere when col < 0).
static step_parts step_timed(gpu_run *r, int64_t step, hy_cuda_events *ev, op_times *ot, int col) {
    step_parts p;
    double t0 = now();
    hy_params_zero_grads(&r->gpu.model.params);
    hy_cuda_events_record(ev, EV_FWD0);
    hy_tensor *loss = forward(r, step);
    hy_cuda_events_record(ev, EV_FWD1);
    backward_timed(&r->tape, loss, ev);
    scalar(loss);  // the trainer reads the loss here
    hy_cuda_events_record(ev, EV_CLIP0);
    hy_train_gpu_clip(&r->gpu, r->cfg.train.grad_clip);
    hy_cuda_events_record(ev, EV_CLIP1);
    hy_train_gpu_step(&r->gpu, &r->opt, hy_lr_mult(&r->sched, step));
    hy_cuda_events_record(ev, EV_OPT1);
    p.wall = (now() - t0) * 1e3;
    int nn = r->tape.n_nodes;
    p.fwd = hy_cuda_events_ms(ev, EV_FWD0, EV_FWD1);
    p.bwd = hy_cuda_events_ms(ev, EV_NODE0, EV_NODE0 + nn);
    p.clip = hy_cuda_events_ms(ev, EV_CLIP0, EV_CLIP1);
    p.opt = hy_cuda_events_ms(ev, EV_CLIP1, EV_OPT1);
    for (int k = 0; col >= 0 && k < nn; k++) {
        int i = op_index(ot, &r->tape.nodes[nn - 1 - k]);
        if (col == 0) ot->nodes[i]++;
        ot->ms[i][col] += hy_cuda_events_ms(ev, EV_NODE0 + k, EV_NODE0 + k + 1);
    }
    return p;
}

// ---- one layer's pieces alone, at the config's shapes
typedef struct {
    int rows, in, out;
    void *x, *w, *y, *scratch;
    float *bias, *dy, *dx, *dw, *db;
    size_t sb;
} lin_arg;

static void lin_fwd(void *p) {
    lin_arg *a = (lin_arg *)p;
    hy_cuda_linear_fwd(a->rows, a->in, a->out, a->x, a->w, a->bias, a->y, NULL);
}

static void lin_bwd(void *p) {
    lin_arg *a = (lin_arg *)p;
    hy_cuda_linear_bwd(a->rows, a->in, a->out, a->dy, a->x, a->w, a->dx, a->dw, a->db, a->scratch,
                       a->sb, NULL);
}

// hy_cuda_linear_fwd / _bwd (dx, dW and, with a bias, db) at (rows, in) -> (rows, out).
static void time_linear(int rows, int in, int out, int bias, int reps, double *fwd, double *bwd) {
    lin_arg a = {rows, in, out, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 0};
    a.x = dev_bf16((size_t)rows * in, 41);
    a.w = dev_random((size_t)out * in, 1, FILL_UNIFORM, -0.05f, 0.05f, 1, 42);
    a.y = hy_cuda_malloc((size_t)rows * out * 2);
    a.bias = bias ? dev_f32((size_t)out, -0.1f, 0.1f, 43) : NULL;
    a.dy = dev_f32((size_t)rows * out, -1e-3f, 1e-3f, 44);
    a.dx = dev_zeros((size_t)rows * in);
    a.dw = dev_zeros((size_t)out * in);
    a.db = bias ? dev_zeros((size_t)out) : NULL;
    a.sb = hy_cuda_linear_bwd_scratch_bytes(rows, in, out);
    a.scratch = hy_cuda_malloc(a.sb ? a.sb : 256);
    *fwd = hy_cuda_time_ms(lin_fwd, &a, 3, reps);
    *bwd = hy_cuda_time_ms(lin_bwd, &a, 3, reps);
    void *all[] = {a.x, a.w, a.y, a.bias, a.dy, a.dx, a.dw, a.db, a.scratch};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (all[i]) hy_cuda_free(all[i]);
}

typedef struct {
    int rows, D;
    float eps;
    void *x, *y, *scratch;
    float *w, *rstd, *dy, *dx, *dw;
    size_t sb;
} norm_arg;

static void norm_fwd(void *p) {
    norm_arg *a = (norm_arg *)p;
    hy_cuda_rmsnorm_fwd(a->rows, a->D, a->eps, a->x, a->w, a->y, a->rstd, NULL);
}

static void norm_bwd(void *p) {
    norm_arg *a = (norm_arg *)p;
    hy_cuda_rmsnorm_bwd(a->rows, a->D, a->dy, a->x, a->w, a->rstd, a->dx, a->dw, a->scratch, a->sb,
                        NULL);
}

static void time_rmsnorm(int rows, int D, int reps, double *fwd, double *bwd) {
    norm_arg a;
    a.rows = rows, a.D = D, a.eps = 1e-5f;
    a.x = dev_bf16((size_t)rows * D, 51);
    a.y = hy_cuda_malloc((size_t)rows * D * 2);
    a.w = dev_f32((size_t)D, 0.9f, 1.1f, 52);
    a.rstd = (float *)hy_cuda_malloc((size_t)rows * 4);
    a.dy = dev_f32((size_t)rows * D, -1e-3f, 1e-3f, 53);
    a.dx = dev_zeros((size_t)rows * D);
    a.dw = dev_zeros((size_t)D);
    a.sb = hy_cuda_rmsnorm_bwd_scratch_bytes(rows, D);
    a.scratch = hy_cuda_malloc(a.sb ? a.sb : 256);
    *fwd = hy_cuda_time_ms(norm_fwd, &a, 3, reps);
    *bwd = hy_cuda_time_ms(norm_bwd, &a, 3, reps);
    void *all[] = {a.x, a.y, a.w, a.rstd, a.dy, a.dx, a.dw, a.scratch};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) hy_cuda_free(all[i]);
}

typedef struct {
    int rows, d, V;
    void *h, *E, *scratch;
    int32_t *tgt;
    float *loss, *dh, *dE;
    size_t sb;
} head_arg;

static void head_run(void *p) {
    head_arg *a = (head_arg *)p;
    hy_cuda_head_ce(a->rows, a->d, a->V, a->h, a->E, a->tgt, HY_IGNORE_INDEX, a->loss, NULL, a->dh,
                    a->dE, a->scratch, a->sb, NULL);
}

// The fused tied head + cross-entropy with both gradients (one call is forward and
// backward), chunked as layers/head_loss.c chunks it (64 Mi logits at a time).
static double time_head(int rows, int d, int V, int reps) {
    head_arg a;
    a.rows = rows, a.d = d, a.V = V;
    a.h = dev_bf16((size_t)rows * d, 61);
    a.E = dev_random((size_t)V * d, 1, FILL_UNIFORM, -0.05f, 0.05f, 1, 62);
    int32_t *t = (int32_t *)hy_xmalloc((size_t)rows * sizeof(int32_t));
    for (int i = 0; i < rows; i++) t[i] = (int32_t)(((int64_t)i * 7919) % V);
    a.tgt = (int32_t *)hy_cuda_malloc((size_t)rows * sizeof(int32_t));
    hy_cuda_memcpy_h2d(a.tgt, t, (size_t)rows * sizeof(int32_t));
    free(t);
    a.loss = (float *)hy_cuda_malloc(4);
    a.dh = dev_zeros((size_t)rows * d);
    a.dE = dev_zeros((size_t)V * d);
    size_t per = ((size_t)64 << 20) / (size_t)V;
    int chunk = per < 1 ? 1 : per > (size_t)rows ? rows : (int)per;
    a.sb = hy_cuda_head_ce_scratch_bytes(rows, V, chunk);
    a.scratch = hy_cuda_malloc(a.sb);
    double ms = hy_cuda_time_ms(head_run, &a, 3, reps);
    void *all[] = {a.h, a.E, a.tgt, a.loss, a.dh, a.dE, a.scratch};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) hy_cuda_free(all[i]);
    return ms;
}

// A linear layer's shape and how many run per step; projections of the same shape share
// a row ("gate_proj + o_proj" when I = d).
typedef struct {
    char label[64];
    int in, out, bias, count;
} proj;

static int add_proj(proj *p, int n, const char *name, int in, int out, int bias) {
    for (int i = 0; i < n; i++)
        if (p[i].in == in && p[i].out == out && p[i].bias == bias) {
            if (!strstr(p[i].label, name))
                snprintf(p[i].label + strlen(p[i].label), sizeof p[i].label - strlen(p[i].label),
                         " + %s", name);
            p[i].count++;
            return n;
        }
    snprintf(p[n].label, sizeof p[n].label, "%s", name);
    p[n].in = in, p[n].out = out, p[n].bias = bias, p[n].count = 1;
    return n + 1;
}

// Every linear layer of one forward (the tied head is timed with the loss).
static int model_projs(const hy_model *m, proj *p) {
    const hy_model_config *c = &m->cfg;
    int d = c->d_model, I = c->n_heads * c->head_dim, H = c->n_heads, F = c->mlp_hidden, n = 0;
    for (int i = 0; i < c->n_layers; i++) {
        const hy_layer_params *L = &m->layer[i];
        n = add_proj(p, n, "qkv_proj", d, 3 * I, 0);
        if (L->ab_w >= 0) n = add_proj(p, n, "ab_proj", d, 2 * H, 1);
        if (L->gate >= 0) n = add_proj(p, n, "gate_proj", d, I, 0);
        n = add_proj(p, n, "o_proj", I, d, 0);
        n = add_proj(p, n, "w_fused", d, 2 * F, 0);
        n = add_proj(p, n, "w_down", F, d, 0);
    }
    return n;
}

static const column PIECE_COLS[] = {
    {"piece", "piece", "%s"},         {"shape", "shape", "%s"},
    {"count", "per step", "%.0f"},    {"fwd_ms", "fwd ms", "%.3f"},
    {"bwd_ms", "bwd ms", "%.3f"},     {"tflops", "TFLOP/s (fwd+bwd)", "%.1f"},
    {"step_ms", "ms per step", "%.2f"}, {"share_pct", "% of step", "%.1f"}};

// One piece: fwd and bwd ms of one call (bwd NaN when fused into fwd), `count` per step.
static double piece_row(table *t, const char *piece, const char *shape, int count, double fwd,
                        double bwd, double flops, double step_ms) {
    double one = fwd + (isfinite(bwd) ? bwd : 0), per_step = one * count;
    int r = table_row(t);
    set_str(t, r, 0, "%s", piece);
    set_str(t, r, 1, "%s", shape);
    set_num(t, r, 2, count);
    set_num(t, r, 3, fwd);
    set_num(t, r, 4, bwd);
    set_num(t, r, 5, flops > 0 ? flops / (one * 1e-3) / 1e12 : NAN);
    set_num(t, r, 6, per_step);
    set_num(t, r, 7, 100.0 * per_step / step_ms);
    return per_step;
}

// Each piece of the step alone at the config's shapes, times its count per step; what
// they leave out (elementwise ops, the short conv, L2 norms, SwiGLU, the embedding, host
// gaps) is the last row's difference to the measured step.
static void step_pieces(const hy_model *m, int B, int T, int reps, int iters, double step_ms,
                        double optim_ms) {
    const hy_model_config *c = &m->cfg;
    int rows = B * T, H = c->n_heads, D = c->head_dim, d = c->d_model, V = c->vocab_size;
    int n_gdn = 0, n_attn = 0;
    for (int i = 0; i < c->n_layers; i++) {
        if (m->layer[i].kind == HY_LAYER_GDN)
            n_gdn++;
        else
            n_attn++;
    }
    char title[256], shape[96];
    snprintf(title, sizeof title, "Pieces alone at the config's shapes (rows = B x T = %d): "
             "median of %d (GDN, SWA: %d), times their count per step", rows, reps, iters);
    table *t = table_new("pieces", title, PIECE_COLS, 8);
    double sum = 0, f, b;

    proj p[16];
    int np = model_projs(m, p);
    for (int i = 0; i < np; i++) {
        time_linear(rows, p[i].in, p[i].out, p[i].bias, reps, &f, &b);
        snprintf(shape, sizeof shape, "%d -> %d%s", p[i].in, p[i].out, p[i].bias ? " + bias" : "");
        sum += piece_row(t, p[i].label, shape, p[i].count, f, b, 6.0 * rows * p[i].in * (double)p[i].out,
                         step_ms);
    }
    if (n_gdn) {
        gdn_time(B, T, H, D, 3, iters, &f, &b);
        snprintf(shape, sizeof shape, "(%d, %d, %d, %d)", B, T, H, D);
        sum += piece_row(t, "GDN core", shape, n_gdn, f, b - f,
                         3.0 * B * T * (double)H * gdn_flops_per_token(64, D), step_ms);
    }
    if (n_attn) {
        int W = m->arch == HY_ARCH_DENSE ? T : c->swa_window;
        swa_time(B, T, H, D, W, 3, iters, &f, &b);
        snprintf(shape, sizeof shape, "(%d, %d, %d, %d), W %d", B, T, H, D, W);
        sum += piece_row(t, "attention core", shape, n_attn, f, b - f,
                         3.0 * 4.0 * D * window_pairs(T, W) * B * H, step_ms);
    }
    time_rmsnorm(rows, d, reps, &f, &b);
    snprintf(shape, sizeof shape, "(%d, %d)", rows, d);
    sum += piece_row(t, "RMSNorm", shape, 2 * c->n_layers + 1, f, b, 0, step_ms);
    f = time_head(rows, d, V, reps);
    snprintf(shape, sizeof shape, "(%d, %d) x V %d", rows, d, V);
    sum += piece_row(t, "head + cross-entropy (fused fwd+bwd)", shape, 1, f, NAN,
                     6.0 * rows * (double)d * V, step_ms);
    sum += piece_row(t, "clip + optimizer (from the step)", "all parameters", 1, optim_ms, NAN, 0,
                     step_ms);

    int r = table_row(t);
    set_str(t, r, 0, "sum of the pieces");
    set_num(t, r, 6, sum);
    set_num(t, r, 7, 100.0 * sum / step_ms);
    r = table_row(t);
    set_str(t, r, 0, "rest: elementwise, conv, L2 norm, SwiGLU, slices, embedding, zeroing, gaps");
    set_num(t, r, 6, step_ms - sum);
    set_num(t, r, 7, 100.0 * (step_ms - sum) / step_ms);
}

static void parts_table(const step_parts *p, int steps) {
    static const column cols[] = {{"part", "part", "%s"}, {"ms", "ms (median)", "%.2f"},
                                  {"share_pct", "% of step", "%.1f"}};
    char title[160];
    snprintf(title, sizeof title, "One training step in parts (CUDA events), median of %d steps",
             steps);
    table *t = table_new("parts", title, cols, 3);
    const char *names[6] = {"forward (tape: embedding ... head + loss)", "backward (every tape node)",
                            "gradient clip (norm + scale)", "optimizer (AdamW + Muon + bf16 refresh)",
                            "host and sync gaps (wall - parts)", "step (wall clock)"};
    double ms[6] = {p->fwd, p->bwd, p->clip, p->opt, p->wall - p->fwd - p->bwd - p->clip - p->opt,
                    p->wall};
    for (int k = 0; k < 6; k++) {
        int r = table_row(t);
        set_str(t, r, 0, "%s", names[k]);
        set_num(t, r, 1, ms[k]);
        set_num(t, r, 2, 100.0 * ms[k] / p->wall);
    }
}

static void ops_table(op_times *ot, int steps, double bwd_ms, double step_ms) {
    static const column cols[] = {{"op", "op", "%s"},           {"nodes", "nodes", "%.0f"},
                                  {"ms", "ms (median)", "%.3f"}, {"bwd_pct", "% of backward", "%.1f"},
                                  {"step_pct", "% of step", "%.1f"}};
    table *t = table_new("backward_by_op", "Backward by op (an event before every tape node)",
                         cols, 5);
    for (int i = 0; i < ot->n; i++) {
        double ms = median(ot->ms[i], steps);
        int r = table_row(t);
        set_str(t, r, 0, "%s", ot->name[i]);
        set_num(t, r, 1, ot->nodes[i]);
        set_num(t, r, 2, ms);
        set_num(t, r, 3, 100.0 * ms / bwd_ms);
        set_num(t, r, 4, 100.0 * ms / step_ms);
    }
}

static int bench_step(int argc, char **argv) {
    opt o[] = {{"--config", OPT_STR, 0, 0, NULL}, {"--B", OPT_INT, 0, 1, NULL},
               {"--T", OPT_INT, 0, 1, NULL},      {"--steps", OPT_INT, 10, 1, NULL},
               {"--warmup", OPT_INT, 3, 0, NULL}, {"--reps", OPT_INT, 20, 1, NULL},
               {"--set", OPT_SET, 0, 0, NULL},    {"--wy", OPT_STR, 0, 0, "default"},
               {"--json", OPT_STR, 0, 0, NULL},   OPT_END};
    parse_opts("step", o, argc, argv);
    require_wy("step", o);
    require_config("step", o);
    int steps = (int)opt_int(o, "--steps"), warmup = (int)opt_int(o, "--warmup");
    int reps = (int)opt_int(o, "--reps");
    HY_REQUIRE(steps <= MAX_STEP_STEPS, "hydra-bench step: --steps must be <= %d, got %d",
               MAX_STEP_STEPS, steps);
    HY_REQUIRE(reps <= 1000, "hydra-bench step: --reps must be <= 1000, got %d", reps);
    require_gpu("step");
    gpu_run *r = (gpu_run *)hy_xcalloc(1, sizeof *r);
    load_config(&r->cfg, "step", o);
    header("step", 1, opt_str(o, "--json"));
    apply_wy(opt_str(o, "--wy"));
    ceilings_figures(20);
    gpu_run_build(r);
    print_model(r, opt_str(o, "--config"));
    if (r->cfg.train.grad_accum > 1)
        printf("note: the parts are of one micro-batch per step (train.grad_accum = %d is not "
               "applied here)\n", r->cfg.train.grad_accum);

    hy_cuda_events *ev = hy_cuda_events_create(EV_NODE0 + r->tape.cap_nodes + 1);
    op_times *ot = (op_times *)hy_xcalloc(1, sizeof *ot);
    double part[5][MAX_STEP_STEPS];
    for (int s = -warmup; s < steps; s++) {
        step_parts p = step_timed(r, s + warmup, ev, ot, s);
        if (s < 0) continue;
        double v[5] = {p.fwd, p.bwd, p.clip, p.opt, p.wall};
        for (int k = 0; k < 5; k++) part[k][s] = v[k];
    }
    step_parts med = {median(part[0], steps), median(part[1], steps), median(part[2], steps),
                      median(part[3], steps), median(part[4], steps)};
    hy_cuda_events_destroy(ev);
    hy_model shapes;  // the model's layout, for the pieces, after the run's memory is gone
    hy_model_build(&shapes, r->cfg.arch, &r->cfg.model);
    int B = r->B, T = r->T;
    run_figures(r, opt_str(o, "--config"));
    fig_num("steps", "measured steps", steps, "%.0f", "");
    fig_num("step_ms", "step, wall clock (median)", med.wall, "%.2f", "ms");
    fig_num("tokens_per_s", "tokens/s at that step time", (double)B * T / (med.wall * 1e-3), "%.0f", "");
    gpu_run_free(r);
    free(r);

    parts_table(&med, steps);
    ops_table(ot, steps, med.bwd, med.wall);
    free(ot);
    step_pieces(&shapes, B, T, reps, 20, med.wall, med.clip + med.opt);
    hy_model_destroy(&shapes);
    return report_finish(1);
}

// ---------------------------------------------------------------- decode
// Work memory of a forward without the tape over T tokens of batch 1: the trainer's plan
// at fp32 size per value (room for the fp32 gates and logits), plus 64 MiB.
static size_t decode_work_bytes(const hy_model_config *m, int T) {
    size_t width = (size_t)(m->d_model > m->n_heads * m->head_dim ? m->d_model : m->n_heads * m->head_dim);
    size_t per_tok = (24 * width + 4 * (size_t)m->mlp_hidden) * m->n_layers + 3 * (size_t)m->vocab_size;
    return per_tok * (size_t)T * sizeof(float) + ((size_t)64 << 20);
}

static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

// A model with random weights (hy_model_init_weights) on the GPU for decoding: the host
// copy, the device copy (hy_model_to_cuda), a CUDA work arena and a batch-1 state.
typedef struct {
    hy_model host, dev;
    hy_arena params, grads, values, dgrads, half, work;
    hy_decode_state st;
} decoder;

static void decoder_build(decoder *d, const hy_run_config *cfg, int prompt) {
    hy_model_build(&d->host, cfg->arch, &cfg->model);
    size_t pbytes = hy_params_bytes(&d->host.params);
    hy_arena_init(&d->params, "params", HY_CPU, pbytes);
    hy_arena_init(&d->grads, "grads", HY_CPU, pbytes);
    hy_params_alloc(&d->host.params, &d->params, &d->grads);
    hy_model_init_weights(&d->host, (uint64_t)cfg->train.seed);
    hy_arena_init(&d->values, "params", HY_CUDA, pbytes);
    hy_arena_init(&d->dgrads, "grads", HY_CUDA, pbytes);
    hy_arena_init(&d->half, "bf16", HY_CUDA, hy_params_half_bytes(&d->host.params));
    hy_model_to_cuda(&d->dev, &d->host, &d->values, &d->dgrads, &d->half);
    hy_arena_init(&d->work, "work", HY_CUDA, decode_work_bytes(&cfg->model, prompt));
    hy_decode_init(&d->st, &d->dev, 1);
}

static void decoder_free(decoder *d) {
    hy_decode_free(&d->st);
    hy_model_destroy(&d->dev);
    hy_model_destroy(&d->host);
    hy_arena *all[6] = {&d->params, &d->grads, &d->values, &d->dgrads, &d->half, &d->work};
    for (int i = 0; i < 6; i++) hy_arena_free(all[i]);
}

// A fresh state holding the prompt; the GPU is idle when it returns.
static void prefill(decoder *d, const int32_t *prompt, int P) {
    hy_decode_reset(&d->st);
    hy_model_prefill(&d->dev, &d->st, prompt, P, NULL, &d->work);
    hy_cuda_synchronize();
}

// Median ms of `reps` prefills (after one untimed).
static double time_prefill(decoder *d, const int32_t *prompt, int P, int reps) {
    double *ms = (double *)hy_xcalloc((size_t)reps, sizeof(double));
    for (int k = -1; k < reps; k++) {
        double t0 = now();
        prefill(d, prompt, P);
        if (k >= 0) ms[k] = (now() - t0) * 1e3;
    }
    double med = median(ms, reps);
    free(ms);
    return med;
}

// N greedy tokens after the prompt (16 untimed ones first, then a fresh prefill): each
// step copies the logits to the host (its sync) and feeds back their argmax. Returns the
// total ms; *per_tok the median token's ms.
static double time_decode(decoder *d, const int32_t *prompt, int P, int N, double *per_tok) {
    int V = d->dev.cfg.vocab_size;
    float *logits = (float *)hy_xmalloc((size_t)V * sizeof(float));
    double *ms = (double *)hy_xcalloc((size_t)N, sizeof(double)), total = 0;
    for (int pass = 0; pass < 2; pass++) {
        prefill(d, prompt, P);
        int32_t tok = prompt[P - 1];
        for (int i = 0; i < (pass ? N : 16); i++) {
            double t0 = now();
            hy_model_step(&d->dev, &d->st, &tok, logits, &d->work);
            tok = argmax(logits, V);
            if (pass) ms[i] = (now() - t0) * 1e3, total += ms[i];
        }
    }
    *per_tok = median(ms, N);
    free(ms);
    free(logits);
    return total;
}

static void decode_table(int P, int N, int reps, double prefill_ms, double total, double per_tok,
                         double floor_tps) {
    static const column cols[] = {{"phase", "phase", "%s"},          {"tokens", "tokens", "%.0f"},
                                  {"ms", "ms", "%.2f"},              {"ms_per_token", "ms/token", "%.3f"},
                                  {"tokens_per_s", "tokens/s", "%.0f"}, {"pct_floor", "% of bandwidth floor", "%.1f"}};
    char title[160];
    snprintf(title, sizeof title, "Decoding, batch 1 (prefill: median of %d; decode: median "
             "token, tokens/s over all %d)", reps, N);
    table *t = table_new("decode", title, cols, 6);
    int r = table_row(t);
    set_str(t, r, 0, "prefill");
    set_num(t, r, 1, P);
    set_num(t, r, 2, prefill_ms);
    set_num(t, r, 3, prefill_ms / P);
    set_num(t, r, 4, P / (prefill_ms * 1e-3));
    r = table_row(t);
    set_str(t, r, 0, "decode");
    set_num(t, r, 1, N);
    set_num(t, r, 2, total);
    set_num(t, r, 3, per_tok);
    set_num(t, r, 4, N / (total * 1e-3));
    set_num(t, r, 5, 100.0 * (N / (total * 1e-3)) / floor_tps);
}

static int bench_decode(int argc, char **argv) {
    opt o[] = {{"--config", OPT_STR, 0, 0, NULL}, {"--prompt", OPT_INT, 512, 1, NULL},
               {"--new", OPT_INT, 256, 1, NULL},  {"--reps", OPT_INT, 5, 1, NULL},
               {"--set", OPT_SET, 0, 0, NULL},    {"--json", OPT_STR, 0, 0, NULL}, OPT_END};
    parse_opts("decode", o, argc, argv);
    require_config("decode", o);
    int P = (int)opt_int(o, "--prompt"), N = (int)opt_int(o, "--new"), reps = (int)opt_int(o, "--reps");
    require_gpu("decode");
    hy_run_config cfg;
    load_config(&cfg, "decode", o);
    header("decode", 1, opt_str(o, "--json"));
    ceilings c = ceilings_figures(20);
    decoder *d = (decoder *)hy_xcalloc(1, sizeof *d);
    decoder_build(d, &cfg, P);
    int32_t *prompt = (int32_t *)hy_xmalloc((size_t)P * sizeof(int32_t));
    hy_rng g;
    hy_rng_seed(&g, 99);
    for (int i = 0; i < P; i++) prompt[i] = (int32_t)hy_rng_below(&g, (uint64_t)cfg.model.vocab_size);

    double prefill_ms = time_prefill(d, prompt, P, reps), per_tok;
    double total = time_decode(d, prompt, P, N, &per_tok);
    double params = (double)hy_model_param_count(&d->host), wbytes = 2.0 * params;  // bf16, once a token
    double floor_tps = c.copy_gbs * 1e9 / wbytes;
    fig_str("config", "config", "%s", opt_str(o, "--config"));
    fig_num("params", "parameters", params, "%.0f", "");
    fig_num("prompt", "prompt tokens (random)", P, "%.0f", "");
    fig_num("new", "new tokens (greedy)", N, "%.0f", "");
    fig_num("state_mib", "decoding state (batch 1)", mib(d->st.bytes), "%.2f", "MiB");
    fig_num("weights_mb", "bf16 weights read per token", wbytes / 1e6, "%.1f", "MB");
    fig_num("floor_tokens_per_s", "bandwidth floor (copy ceiling / weights)", floor_tps, "%.0f",
            "tokens/s");
    decode_table(P, N, reps, prefill_ms, total, per_tok, floor_tps);
    free(prompt);
    decoder_free(d);
    free(d);
    return report_finish(1);
}

// ---------------------------------------------------------------- cpu
static int cpu_int_arg(const char *flag, const char *v) {
    char *end;
    long x = strtol(v, &end, 10);
    HY_REQUIRE(*v && !*end && x > 0, "hydra-bench: %s expects a positive integer, got '%s'", flag, v);
    return (int)x;
}

static int bench_cpu(int argc, char **argv) {
    hy_model_config c = hy_config_default();
    c.d_model = 256, c.n_layers = 8, c.n_heads = 4, c.vocab_size = 256;
    int B = 8, T = 512, steps = 5;
    const char *json = NULL;
    hy_arch arch = HY_ARCH_HYDRA;
    for (int i = 0; i < argc; i++) {
        const char *f = argv[i];
        HY_REQUIRE(i + 1 < argc, "hydra-bench cpu: %s needs a value", f);
        const char *v = argv[++i];
        if (!strcmp(f, "--d-model")) c.d_model = cpu_int_arg(f, v);
        else if (!strcmp(f, "--layers")) c.n_layers = cpu_int_arg(f, v);
        else if (!strcmp(f, "--heads")) c.n_heads = cpu_int_arg(f, v);
        else if (!strcmp(f, "--batch")) B = cpu_int_arg(f, v);
        else if (!strcmp(f, "--seq")) T = cpu_int_arg(f, v);
        else if (!strcmp(f, "--vocab")) c.vocab_size = cpu_int_arg(f, v);
        else if (!strcmp(f, "--steps")) steps = cpu_int_arg(f, v);
        else if (!strcmp(f, "--json")) json = v;
        else if (!strcmp(f, "--threads")) {
#ifdef _OPENMP
            omp_set_num_threads(cpu_int_arg(f, v));
#endif
        } else if (!strcmp(f, "--arch")) {
            HY_REQUIRE(!strcmp(v, "hydra") || !strcmp(v, "dense"),
                       "hydra-bench cpu: --arch expects hydra or dense, got '%s'", v);
            arch = strcmp(v, "dense") ? HY_ARCH_HYDRA : HY_ARCH_DENSE;
        } else {
            usage(stderr, "cpu");
            hy_die(HY_EXIT_USAGE, "hydra-bench cpu: unknown option '%s'", f);
        }
    }
    hy_config_finalize(&c, "hydra-bench");
    header("cpu", 0, json);
    hy_model m;
    hy_model_build(&m, arch, &c);
    // Activations: a generous bound per layer and token (the ops' outputs
    // and saved contexts), planned once, reported at the end.
    size_t per_tok = (size_t)(40 * c.d_model + 4 * c.mlp_hidden) * sizeof(float) * c.n_layers +
                     (size_t)3 * c.vocab_size * sizeof(float);
    size_t acts_bytes = per_tok * B * T + ((size_t)64 << 20);
    hy_arena params, grads, acts, scratch, data;
    hy_arena_init(&params, "params", HY_CPU, hy_params_bytes(&m.params));
    hy_arena_init(&grads, "grads", HY_CPU, hy_params_bytes(&m.params));
    hy_arena_init(&acts, "acts", HY_CPU, acts_bytes);
    hy_arena_init(&scratch, "scratch", HY_CPU, acts_bytes);
    hy_arena_init(&data, "data", HY_CPU, (size_t)B * T * 8 + 4096);
    hy_params_alloc(&m.params, &params, &grads);
    hy_model_init_weights(&m, 1);
    hy_tape tape;
    hy_tape_init(&tape, &acts, &scratch, 1 << 14, 1 << 15);
    hy_params_bind(&m.params, &tape);
    hy_tensor *ids = hy_new2(&data, HY_I32, B, T, "ids"), *tgt = hy_new2(&data, HY_I32, B, T, "tgt");
    hy_rng r;
    hy_rng_seed(&r, 7);
    for (int i = 0; i < B * T; i++) {
        hy_i32(ids)[i] = (int32_t)hy_rng_below(&r, c.vocab_size);
        hy_i32(tgt)[i] = (int32_t)hy_rng_below(&r, c.vocab_size);
    }
    char sched[1024];
    printf("%s: d_model %d, %d layers (%s), %d heads x %d, vocab %d, %lld parameters\n",
           arch == HY_ARCH_DENSE ? "dense" : "HydraLM", c.d_model, c.n_layers,
           arch == HY_ARCH_DENSE ? "attention" : hy_config_schedule(&c, sched, sizeof sched),
           c.n_heads, c.head_dim, c.vocab_size, (long long)hy_model_param_count(&m));
    double *ms = (double *)calloc((size_t)steps, sizeof(double));
    float loss_v = 0;
    for (int s = -1; s < steps; s++) {
        hy_tape_reset(&tape);
        hy_params_zero_grads(&m.params);
        double t0 = now();
        hy_tensor *loss;
        hy_model_forward(&m, &tape, ids, tgt, -100, &loss);
        hy_tape_backward(&tape, loss);
        double dt = (now() - t0) * 1e3;
        loss_v = hy_f32(loss)[0];
        if (s >= 0) ms[s] = dt;
    }
    qsort(ms, (size_t)steps, sizeof(double), cmp_double);
    double med = ms[steps / 2];
    printf("memory plan:\n");
    hy_arena *all[4] = {&params, &grads, &acts, &scratch};
    for (int i = 0; i < 4; i++) hy_arena_report(all[i], stdout);
    static char ms_head[64];
    snprintf(ms_head, sizeof ms_head, "fwd+bwd ms (median of %d)", steps);
    const column cols[] = {{"arch", "arch", "%s"}, {"B", "B", "%.0f"}, {"T", "T", "%.0f"},
                           {"ms", ms_head, "%.1f"}, {"tokens_per_s", "tokens/s", "%.0f"},
                           {"loss", "loss", "%.4f"}};
    table *t = table_new("cpu", "", cols, 6);
    int row = table_row(t);
    set_str(t, row, 0, "%s", arch == HY_ARCH_DENSE ? "dense" : "hydra");
    set_num(t, row, 1, B);
    set_num(t, row, 2, T);
    set_num(t, row, 3, med);
    set_num(t, row, 4, B * T / (med * 1e-3));
    set_num(t, row, 5, loss_v);
    free(ms);
    hy_tape_free(&tape);
    hy_model_destroy(&m);
    return report_finish(0);
}

// ---------------------------------------------------------------- main
typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
} subcommand;

int main(int argc, char **argv) {
    static const subcommand cmds[] = {{"cpu", bench_cpu},     {"ceilings", bench_ceilings},
                                      {"gdn", bench_gdn},     {"swa", bench_swa},
                                      {"train", bench_train}, {"step", bench_step},
                                      {"decode", bench_decode}};
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        usage(argc < 2 ? stderr : stdout, NULL);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        if (strcmp(argv[1], cmds[i].name)) continue;
        if (argc > 2 && (!strcmp(argv[2], "-h") || !strcmp(argv[2], "--help"))) {
            usage(stdout, cmds[i].name);
            return 0;
        }
        return cmds[i].run(argc - 2, argv + 2);
    }
    usage(stderr, NULL);
    hy_die(HY_EXIT_USAGE, "hydra-bench: unknown benchmark '%s'", argv[1]);
}
