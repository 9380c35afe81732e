// sample.h: drawing the next token from a row of logits.
//
// Temperature scaling, then top-k (keep the k largest), then top-p (keep the
// smallest set of most likely tokens whose probability reaches p), then a
// draw from the renormalised distribution with one hy_rng_uniform(). Ties
// are broken by the lower token id everywhere, so a given rng state always
// gives the same token.
#ifndef HY_SAMPLE_H
#define HY_SAMPLE_H

#include "../autograd/rng.h"

typedef struct {
    float temperature;  // 0 = greedy (argmax, no random draw)
    int top_k;          // 0 = off
    float top_p;        // 1 = off; in (0, 1]
} hy_sampler;

// Out-of-range settings are one clear error (exit 2) naming the option.
void hy_sampler_validate(const hy_sampler *s);

// The next token id in [0, V). `work` holds V floats (overwritten). -inf
// logits are never drawn; NaN or +inf logits are an error.
int hy_sample(const hy_sampler *s, const float *logits, int V, hy_rng *r, float *work);

// The distribution hy_sample() draws from, into probs (V floats, sums to 1):
// for tests and for speculative decoding's acceptance rule.
void hy_sample_probs(const hy_sampler *s, const float *logits, int V, float *probs);

#endif
