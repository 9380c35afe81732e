#include "rng.h"

#include <math.h>

#include "check.h"

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void hy_rng_seed(hy_rng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t hy_rng_u64(hy_rng *r) {
    uint64_t *s = r->s;
    uint64_t out = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

float hy_rng_uniform(hy_rng *r) { return (float)(hy_rng_u64(r) >> 40) * (1.0f / 16777216.0f); }

double hy_rng_uniform_f64(hy_rng *r) {
    return (double)(hy_rng_u64(r) >> 11) * (1.0 / 9007199254740992.0);
}

uint64_t hy_rng_below(hy_rng *r, uint64_t n) {
    HY_CHECK(n > 0, "rng: empty range");
    // Rejection keeps the result unbiased for any n.
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do x = hy_rng_u64(r);
    while (x >= limit);
    return x % n;
}

float hy_rng_normal(hy_rng *r) {
    double u1 = hy_rng_uniform_f64(r), u2 = hy_rng_uniform_f64(r);
    if (u1 < 1e-300) u1 = 1e-300;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

static float *host_f32(const hy_tensor *t, const char *what) {
    HY_CHECK(t->device == HY_CPU && t->dtype == HY_F32, "%s: '%s' must be a host f32 tensor",
             what, t->name);
    return (float *)t->data;
}

void hy_fill_normal(hy_tensor *t, hy_rng *r, float mean, float std) {
    float *x = host_f32(t, "fill_normal");
    for (int64_t i = 0, n = hy_numel(t); i < n; i++) x[i] = mean + std * hy_rng_normal(r);
}

void hy_fill_uniform(hy_tensor *t, hy_rng *r, float lo, float hi) {
    float *x = host_f32(t, "fill_uniform");
    for (int64_t i = 0, n = hy_numel(t); i < n; i++) x[i] = lo + (hi - lo) * hy_rng_uniform(r);
}

void hy_fill_const(hy_tensor *t, float value) {
    float *x = host_f32(t, "fill_const");
    for (int64_t i = 0, n = hy_numel(t); i < n; i++) x[i] = value;
}
