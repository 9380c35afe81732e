// rng.h: a small, seedable, checkpointable random generator (xoshiro256**).
//
// Everything random in a run (initialisation, data positions, sampling)
// draws from an hy_rng whose whole state is four words, so checkpoints can
// store it and a resumed run draws exactly the same numbers.
#ifndef HY_RNG_H
#define HY_RNG_H

#include <stdint.h>

#include "tensor.h"

typedef struct {
    uint64_t s[4];
} hy_rng;

void hy_rng_seed(hy_rng *r, uint64_t seed);
uint64_t hy_rng_u64(hy_rng *r);
// Uniform in [0, 1) with 24 random bits (exact in float), and in [0, n).
float hy_rng_uniform(hy_rng *r);
double hy_rng_uniform_f64(hy_rng *r);
uint64_t hy_rng_below(hy_rng *r, uint64_t n);
// Standard normal (Box-Muller on two fresh uniforms; no cached spare, so the
// state is the four words alone).
float hy_rng_normal(hy_rng *r);

// Fill a host f32 tensor.
void hy_fill_normal(hy_tensor *t, hy_rng *r, float mean, float std);
void hy_fill_uniform(hy_tensor *t, hy_rng *r, float lo, float hi);
void hy_fill_const(hy_tensor *t, float value);

#endif
