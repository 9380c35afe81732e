// svg.h: a tiny SVG line plot for RESULTS.md.
//
// One plot: a title, labelled axes (linear or logarithmic, with ticks at
// "nice" values), one polyline with markers per series and a legend.
// Points that cannot be drawn (NaN, infinite, <= 0 on a log axis) are left
// out. The file is self-contained SVG 1.1 that browsers and GitHub render.
#ifndef HY_EVAL_SVG_H
#define HY_EVAL_SVG_H

#include "claims.h"

// Write `p` to `path`; a file that cannot be written is an error (exit 1).
void hy_svg_write(const char *path, const hy_plot *p);

#endif
