// bench_report.h: the one report of a hydra-bench run: figures (settings and results, a
// flat JSON object) and tables, printed as Markdown at the end and written to --json FILE
// (atomically: a temporary file, then a rename).
#ifndef HY_BENCH_REPORT_H
#define HY_BENCH_REPORT_H

#define MAX_COLS 10
#define MAX_ROWS 256

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

// The first line of every subcommand ("hydra-bench CMD | commit ... | device ..."); a --json
// path that cannot be written is an error here, before the benchmark runs.
void bench_header(const char *cmd, int gpu, const char *json);

// A new table of the report (the columns are copied), and a new row of it, every cell "no
// value"; table_row returns the row's index.
table *table_new(const char *name, const char *title, const column *cols, int ncol);
int table_row(table *t);
void set_num(table *t, int row, int col, double v);
void set_str(table *t, int row, int col, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

// A figure: its JSON key, its label in the figures table, and its value.
void fig_num(const char *key, const char *label, double v, const char *fmt, const char *unit);
void fig_str(const char *key, const char *label, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

// The figures (when with_figures and there are any), then the tables: the last table printed
// is the subcommand's main one; then --json. Returns 0, the exit status.
int report_finish(int with_figures);

#endif
