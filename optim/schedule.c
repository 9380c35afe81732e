// schedule.c: warmup + constant / cosine / warmup-stable-decay multipliers.
// The formulas are documented in schedule.h.
#include "schedule.h"

#include <math.h>
#include <string.h>

#include "../autograd/check.h"

static const char *names[] = {"constant", "cosine", "wsd"};

const char *hy_sched_name(hy_sched_kind k) {
    return (k >= HY_SCHED_CONSTANT && k <= HY_SCHED_WSD) ? names[k] : "?";
}

int hy_sched_parse(const char *name) {
    for (int k = 0; k <= HY_SCHED_WSD; k++)
        if (strcmp(name, names[k]) == 0) return k;
    return -1;
}

void hy_schedule_validate(const hy_schedule *s, const char *where) {
    const char *w = where ? where : "schedule";
    HY_REQUIRE(s->kind >= HY_SCHED_CONSTANT && s->kind <= HY_SCHED_WSD,
               "%s: unknown lr schedule %d", w, (int)s->kind);
    HY_REQUIRE(s->warmup >= 0, "%s: warmup = %lld must be >= 0", w, (long long)s->warmup);
    if (s->kind == HY_SCHED_CONSTANT) return;
    HY_REQUIRE(s->total > s->warmup,
               "%s: total steps (%lld) must exceed warmup (%lld) for the %s schedule", w,
               (long long)s->total, (long long)s->warmup, hy_sched_name(s->kind));
    HY_REQUIRE(s->min_ratio >= 0 && s->min_ratio <= 1, "%s: min_ratio = %g must be in [0, 1]", w,
               (double)s->min_ratio);
    if (s->kind == HY_SCHED_WSD)
        HY_REQUIRE(s->decay >= 1 && s->decay <= s->total - s->warmup,
                   "%s: decay = %lld steps must be in [1, total - warmup = %lld]", w,
                   (long long)s->decay, (long long)(s->total - s->warmup));
}

static double clamp01(double x) { return x < 0 ? 0 : (x > 1 ? 1 : x); }

static double cosine(const hy_schedule *s, int64_t step) {
    int64_t span = s->total - s->warmup;
    double p = clamp01((double)(step - s->warmup) / (double)(span > 0 ? span : 1));
    return s->min_ratio + (1.0 - s->min_ratio) * 0.5 * (1.0 + cos(M_PI * p));
}

static double wsd(const hy_schedule *s, int64_t step) {
    int64_t start = s->total - s->decay;
    if (step < start) return 1.0;
    double p = clamp01((double)(step - start) / (double)(s->decay > 0 ? s->decay : 1));
    return 1.0 - (1.0 - s->min_ratio) * p;
}

float hy_lr_mult(const hy_schedule *s, int64_t step) {
    if (step < s->warmup) return (float)((double)(step + 1) / (double)s->warmup);
    switch (s->kind) {
    case HY_SCHED_COSINE: return (float)cosine(s, step);
    case HY_SCHED_WSD: return (float)wsd(s, step);
    default: return 1.0f;
    }
}
