// bench_report.c: figures, tables, their Markdown and the JSON file (bench_report.h).
#include "bench_report.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../autograd/build_info.h"
#include "../autograd/check.h"
#include "../cuda/hy_cuda.h"


#define MAX_TABLES 4
#define MAX_FIGS 80

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

table *table_new(const char *name, const char *title, const column *cols, int ncol) {
    HY_CHECK(R.ntab < MAX_TABLES && ncol <= MAX_COLS, "report: too many tables or columns");
    table *t = (table *)hy_xcalloc(1, sizeof *t);
    t->name = name;
    snprintf(t->title, sizeof t->title, "%s", title);
    t->ncol = ncol;
    for (int i = 0; i < ncol; i++) t->col[i] = cols[i];
    R.tab[R.ntab++] = t;
    return t;
}

int table_row(table *t) {
    HY_CHECK(t->nrow < MAX_ROWS, "report: table '%s' is full", t->name);
    for (int i = 0; i < t->ncol; i++) t->c[t->nrow][i] = (cell){"", NAN, 1};
    return t->nrow++;
}

void set_num(table *t, int row, int col, double v) { t->c[row][col] = (cell){"", v, 1}; }

void set_str(table *t, int row, int col, const char *fmt, ...) {
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

void fig_num(const char *key, const char *label, double v, const char *fmt, const char *unit) {
    figure *f = fig_new(key, label);
    f->c = (cell){"", v, 1};
    f->fmt = fmt, f->unit = unit;
}

void fig_str(const char *key, const char *label, const char *fmt, ...) {
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
    json_str(f, hy_build_commit());
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

int report_finish(int with_figures) {
    if (with_figures && R.nfig) print_figures();
    for (int i = 0; i < R.ntab; i++) print_table(R.tab[i]);
    if (R.json) json_save(R.json);
    for (int i = 0; i < R.ntab; i++) free(R.tab[i]);
    R.ntab = 0;
    return 0;
}

void bench_header(const char *cmd, int gpu, const char *json) {
    R.bench = cmd;
    R.json = json;
    if (json) json_check_path(json);
    if (gpu)
        hy_cuda_device_info(0, R.device, sizeof R.device);
    else
        snprintf(R.device, sizeof R.device, "cpu");
    printf("hydra-bench %s | commit %s | device %s\n", cmd, hy_build_commit(), R.device);
}
