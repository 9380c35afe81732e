// sample.c: temperature, top-k and top-p sampling without sorting.
//
// The k-th largest probability and the top-p cut are found by bisection
// over the bit patterns of non-negative floats (which order like the
// floats), each probe one pass over the vocabulary. That needs no index
// buffer and no allocation: just the caller's V floats.
#include "sample.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "../autograd/check.h"
#include "../layers/model.h"

void hy_sampler_validate(const hy_sampler *s) {
    HY_REQUIRE(isfinite(s->temperature) && s->temperature >= 0,
               "sampling: temperature must be >= 0 (0 = greedy), got %g", (double)s->temperature);
    HY_REQUIRE(s->top_k >= 0, "sampling: top-k must be >= 0 (0 = off), got %d", s->top_k);
    HY_REQUIRE(s->top_p > 0 && s->top_p <= 1,
               "sampling: top-p must be in (0, 1] (1 = off), got %g", (double)s->top_p);
}

static uint32_t bits_of(float x) {
    uint32_t b;
    memcpy(&b, &x, sizeof b);
    return b;
}

static float float_of(uint32_t b) {
    float x;
    memcpy(&x, &b, sizeof x);
    return x;
}

// Index of the largest logit (the lowest such index); NaN and +inf are
// errors: they mean the model broke, and no choice among them is right.
// (hy_greedy_token: the same scan serves the model's greedy steps.)
static int argmax_checked(const float *l, int V) { return hy_greedy_token(l, V); }

// Unnormalised softmax(logits / T) into p; returns the sum.
static double soft(const float *logits, int V, float T, int best, float *p) {
    float m = logits[best];
    double z = 0;
    for (int i = 0; i < V; i++) {
        p[i] = expf((logits[i] - m) / T);
        z += p[i];
    }
    return z;
}

// Count and mass of the entries >= t.
static int count_at_least(const float *p, int V, float t) {
    int c = 0;
    for (int i = 0; i < V; i++) c += p[i] >= t;
    return c;
}

static double mass_at_least(const float *p, int V, float t) {
    double m = 0;
    for (int i = 0; i < V; i++)
        if (p[i] >= t) m += p[i];
    return m;
}

// Largest threshold t (a value present in p) with count(p >= t) >= k, or
// with mass(p >= t) >= target when k == 0. p is non-negative, so the bit
// patterns of candidate thresholds order like their values.
static float threshold(const float *p, int V, float top, int k, double target) {
    uint32_t lo = 0, hi = bits_of(top);  // answer in [lo, hi]; lo always qualifies
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo + 1) / 2;
        float t = float_of(mid);
        int ok = k > 0 ? count_at_least(p, V, t) >= k : mass_at_least(p, V, t) >= target;
        if (ok)
            lo = mid;
        else
            hi = mid - 1;
    }
    return float_of(lo);
}

// Keep the k largest entries of p (ties at the cut: lower ids first); zero
// the rest.
static void keep_top_k(float *p, int V, float top, int k) {
    float t = threshold(p, V, top, k, 0);
    int kept = 0;
    for (int i = 0; i < V; i++) kept += p[i] > t;
    for (int i = 0; i < V; i++) {
        if (p[i] > t) continue;
        if (p[i] == t && kept < k)
            kept++;
        else
            p[i] = 0;
    }
}

// Keep the smallest set of largest entries whose mass reaches top_p of the
// total (ties at the cut: lower ids first); zero the rest.
static void keep_top_p(float *p, int V, float top, double z, float top_p) {
    double target = (double)top_p * z;
    float t = threshold(p, V, top, 0, target);
    double mass = 0;
    for (int i = 0; i < V; i++)
        if (p[i] > t) mass += p[i];
    for (int i = 0; i < V; i++) {
        if (p[i] > t) continue;
        if (p[i] == t && p[i] > 0 && mass < target)
            mass += p[i];
        else
            p[i] = 0;
    }
}

// The filtered, unnormalised distribution into p; returns its sum. -1 for
// greedy, with the argmax in *greedy.
static double filtered(const hy_sampler *s, const float *logits, int V, float *p, int *greedy) {
    hy_sampler_validate(s);
    HY_REQUIRE(V >= 1, "sampling: vocabulary of %d tokens", V);
    int best = argmax_checked(logits, V);
    *greedy = best;
    if (s->temperature == 0) return -1;
    double z = soft(logits, V, s->temperature, best, p);
    float top = p[best];  // exactly 1
    if (s->top_k > 0 && s->top_k < V) {
        keep_top_k(p, V, top, s->top_k);
        z = 0;
        for (int i = 0; i < V; i++) z += p[i];
    }
    if (s->top_p < 1) {
        keep_top_p(p, V, top, z, s->top_p);
        z = 0;
        for (int i = 0; i < V; i++) z += p[i];
    }
    return z;
}

int hy_sample(const hy_sampler *s, const float *logits, int V, hy_rng *r, float *work) {
    int greedy;
    double z = filtered(s, logits, V, work, &greedy);
    if (z < 0) return greedy;
    double u = (double)hy_rng_uniform(r) * z, cum = 0;
    int last = greedy;  // the max always survives the filters
    for (int i = 0; i < V; i++) {
        if (work[i] <= 0) continue;
        cum += work[i];
        last = i;
        if (cum > u) return i;
    }
    return last;  // u rounded up to the total
}

void hy_sample_probs(const hy_sampler *s, const float *logits, int V, float *probs) {
    int greedy;
    double z = filtered(s, logits, V, probs, &greedy);
    if (z < 0) {
        memset(probs, 0, (size_t)V * sizeof(float));
        probs[greedy] = 1;
        return;
    }
    for (int i = 0; i < V; i++) probs[i] = (float)(probs[i] / z);
}
