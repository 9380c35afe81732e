// result.c: filling a hy_claim_result (see claims.h), and progress lines.
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "claims.h"
#include "fit.h"

// Append to a fixed-size field; a full field ends in "..." rather than overflowing.
static void vappend(char *buf, size_t cap, const char *fmt, va_list ap) {
    size_t len = strlen(buf);
    if (len + 1 >= cap) return;
    int n = vsnprintf(buf + len, cap - len, fmt, ap);
    if (n >= 0 && (size_t)n >= cap - len && cap > 4) memcpy(buf + cap - 4, "...", 4);
}

#define APPENDER(fn, field)                                   \
    void fn(hy_claim_result *r, const char *fmt, ...) {       \
        va_list ap;                                           \
        va_start(ap, fmt);                                    \
        vappend(r->field, sizeof r->field, fmt, ap);          \
        va_end(ap);                                           \
    }

APPENDER(hy_claim_measured, measured)
APPENDER(hy_claim_note, notes)
APPENDER(hy_claim_detail, detail)
APPENDER(hy_claim_thresholds, thresholds)
APPENDER(hy_claim_key, key)

void hy_claim_value(hy_claim_result *r, const char *name, double value) {
    if (r->n_values >= HY_CLAIM_VALUES) return;
    hy_named_value *v = &r->values[r->n_values++];
    snprintf(v->name, sizeof v->name, "%s", name);
    v->value = value;
}

hy_plot *hy_claim_plot(hy_claim_result *r, const char *title, const char *xlabel,
                       const char *ylabel, int logx, int logy) {
    if (r->n_plots >= HY_CLAIM_PLOTS) return NULL;
    hy_plot *p = &r->plots[r->n_plots++];
    memset(p, 0, sizeof *p);
    snprintf(p->title, sizeof p->title, "%s", title);
    snprintf(p->xlabel, sizeof p->xlabel, "%s", xlabel);
    snprintf(p->ylabel, sizeof p->ylabel, "%s", ylabel);
    p->logx = logx;
    p->logy = logy;
    return p;
}

hy_series *hy_plot_series(hy_plot *p, const char *name) {
    if (!p || p->n_series >= HY_PLOT_SERIES) return NULL;
    hy_series *s = &p->series[p->n_series++];
    memset(s, 0, sizeof *s);
    snprintf(s->name, sizeof s->name, "%s", name);
    return s;
}

void hy_series_add(hy_series *s, double x, double y) {
    if (!s || s->n >= HY_PLOT_POINTS) return;
    s->x[s->n] = x;
    s->y[s->n] = y;
    s->n++;
}

void hy_eval_progress(const hy_eval_opts *o, const char *fmt, ...) {
    double t = hy_eval_now() - o->t_start;
    fprintf(stderr, "[claims %dm%02ds] ", (int)(t / 60), (int)fmod(t, 60));
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
}
