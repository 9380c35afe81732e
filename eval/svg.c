// svg.c: the line plots of RESULTS.md (see svg.h).
#include "svg.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../autograd/check.h"

#define W 720
#define H 440
#define ML 84   // left margin: tick labels and the y label
#define MR 190  // right margin: the legend
#define MT 40
#define MB 58

static const char *COLORS[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e",
                               "#9467bd", "#8c564b", "#e377c2", "#17becf"};

typedef struct {
    int log;
    double lo, hi;  // data range in axis units (log10 when log)
    int pix0, pix1; // screen range
} axis;

static int usable(double v, int log) { return isfinite(v) && (!log || v > 0); }

static double to_axis(const axis *a, double v) { return a->log ? log10(v) : v; }

static double to_pix(const axis *a, double v) {
    double t = (to_axis(a, v) - a->lo) / (a->hi - a->lo);
    return a->pix0 + t * (a->pix1 - a->pix0);
}

// Data range of x (which = 0) or y (1) over every drawable point.
static int data_range(const hy_plot *p, int which, int log, double *lo, double *hi) {
    int any = 0;
    for (int s = 0; s < p->n_series; s++)
        for (int i = 0; i < p->series[s].n; i++) {
            double x = p->series[s].x[i], y = p->series[s].y[i];
            if (!usable(x, p->logx) || !usable(y, p->logy)) continue;
            double v = which ? y : x;
            v = log ? log10(v) : v;
            if (!any || v < *lo) *lo = v;
            if (!any || v > *hi) *hi = v;
            any = 1;
        }
    return any;
}

static void axis_setup(axis *a, const hy_plot *p, int which, int pix0, int pix1) {
    a->log = which ? p->logy : p->logx;
    a->pix0 = pix0, a->pix1 = pix1;
    double lo = 0, hi = 1;
    if (!data_range(p, which, a->log, &lo, &hi)) lo = 0, hi = 1;
    if (hi - lo < 1e-12) {  // one value: give it room
        double pad = a->log ? 0.5 : (fabs(lo) > 0 ? 0.1 * fabs(lo) : 1);
        lo -= pad, hi += pad;
    }
    double pad = 0.04 * (hi - lo);
    a->lo = lo - pad, a->hi = hi + pad;
}

// A step of 1, 2 or 5 times a power of ten giving about `want` ticks.
static double nice_step(double span, int want) {
    double raw = span / want, p = pow(10, floor(log10(raw))), m = raw / p;
    return (m < 1.5 ? 1 : m < 3.5 ? 2 : m < 7.5 ? 5 : 10) * p;
}

static void xml_text(FILE *f, const char *s) {
    for (; *s; s++) {
        if (*s == '&') fputs("&amp;", f);
        else if (*s == '<') fputs("&lt;", f);
        else if (*s == '>') fputs("&gt;", f);
        else fputc(*s, f);
    }
}

static void tick_label(char *buf, size_t n, double v) {
    double a = fabs(v);
    if (v == 0) snprintf(buf, n, "0");
    else if (a >= 1e5 || a < 1e-3) snprintf(buf, n, "%.0e", v);
    else snprintf(buf, n, "%g", v);
}

// Tick values (data units) of an axis into t; returns how many.
static int ticks(const axis *a, double *t, int max) {
    int n = 0;
    if (a->log && a->hi - a->lo > 2.5) {  // decades (every k-th when there are many)
        int k = (int)ceil((a->hi - a->lo) / 8);
        for (int e = (int)ceil(a->lo); e <= (int)floor(a->hi) && n < max; e++)
            if (e % k == 0) t[n++] = pow(10, e);
        return n;
    }
    if (a->log) {  // a few decades at most: 1, 2, 5 x 10^k
        static const double mant[] = {1, 2, 5};
        for (int e = (int)floor(a->lo) - 1; e <= (int)ceil(a->hi) && n < max; e++)
            for (int j = 0; j < 3 && n < max; j++) {
                double v = mant[j] * pow(10, e), lv = log10(v);
                if (lv >= a->lo && lv <= a->hi) t[n++] = v;
            }
        return n;
    }
    double step = nice_step(a->hi - a->lo, 5);
    for (double v = ceil(a->lo / step) * step; v <= a->hi + 1e-9 * step && n < max; v += step)
        t[n++] = fabs(v) < 1e-12 * step ? 0 : v;
    return n;
}

static void draw_axes(FILE *f, const hy_plot *p, const axis *ax, const axis *ay) {
    int x0 = ML, x1 = W - MR, y0 = H - MB, y1 = MT;
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" stroke=\"#444\"/>\n",
            x0, y1, x1 - x0, y0 - y1);
    double t[64];
    char lab[32];
    int n = ticks(ax, t, 64);
    for (int i = 0; i < n; i++) {
        double px = to_pix(ax, t[i]);
        tick_label(lab, sizeof lab, t[i]);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#ddd\"/>\n", px, y1, px, y0);
        fprintf(f, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%s</text>\n", px, y0 + 16, lab);
    }
    n = ticks(ay, t, 64);
    for (int i = 0; i < n; i++) {
        double py = to_pix(ay, t[i]);
        tick_label(lab, sizeof lab, t[i]);
        fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", x0, py, x1, py);
        fprintf(f, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n", x0 - 6, py + 4, lab);
    }
    fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\" font-size=\"15\">", (x0 + x1) / 2, 24);
    xml_text(f, p->title);
    fprintf(f, "</text>\n<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">", (x0 + x1) / 2, H - 14);
    xml_text(f, p->xlabel);
    fprintf(f, "%s</text>\n", p->logx ? " (log scale)" : "");
    fprintf(f, "<text transform=\"translate(18,%d) rotate(-90)\" text-anchor=\"middle\">", (y0 + y1) / 2);
    xml_text(f, p->ylabel);
    fprintf(f, "%s</text>\n", p->logy ? " (log scale)" : "");
}

static void draw_series(FILE *f, const hy_plot *p, int s, const axis *ax, const axis *ay) {
    const hy_series *se = &p->series[s];
    const char *col = COLORS[s % 8];
    fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"", col);
    for (int i = 0; i < se->n; i++)
        if (usable(se->x[i], p->logx) && usable(se->y[i], p->logy))
            fprintf(f, "%.1f,%.1f ", to_pix(ax, se->x[i]), to_pix(ay, se->y[i]));
    fprintf(f, "\"/>\n");
    for (int i = 0; i < se->n; i++)
        if (usable(se->x[i], p->logx) && usable(se->y[i], p->logy))
            fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>\n", to_pix(ax, se->x[i]),
                    to_pix(ay, se->y[i]), col);
    int ly = MT + 10 + 20 * s;
    fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"%s\" stroke-width=\"2\"/>\n",
            W - MR + 12, ly, W - MR + 36, ly, col);
    fprintf(f, "<text x=\"%d\" y=\"%d\">", W - MR + 42, ly + 4);
    xml_text(f, se->name);
    fprintf(f, "</text>\n");
}

void hy_svg_write(const char *path, const hy_plot *p) {
    FILE *f = fopen(path, "w");
    HY_CHECK(f, "%s: cannot write the plot: %s", path, strerror(errno));
    axis ax, ay;
    axis_setup(&ax, p, 0, ML, W - MR);
    axis_setup(&ay, p, 1, H - MB, MT);
    fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
               "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"%d\" height=\"%d\" "
               "viewBox=\"0 0 %d %d\" font-family=\"sans-serif\" font-size=\"12\">\n"
               "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
            W, H, W, H);
    draw_axes(f, p, &ax, &ay);
    for (int s = 0; s < p->n_series; s++) draw_series(f, p, s, &ax, &ay);
    fprintf(f, "</svg>\n");
    HY_CHECK(fclose(f) == 0, "%s: cannot write the plot: %s", path, strerror(errno));
}
