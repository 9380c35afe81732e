// eval_model.h: a model to measure, and the forward passes the claims use.
//
// A model is either fresh (built from a config and initialised with a
// seed: enough for timing and memory, where the weights do not matter) or
// loaded from a checkpoint written by hydra-train. Logits come from
// chunked prefill through a decoding state with the tape off, so the
// memory of an evaluation is one chunk's activations however long the
// sequence (the unit tests check that chunked prefill equals one piece).
#ifndef HY_EVAL_MODEL_H
#define HY_EVAL_MODEL_H

#include <stdint.h>

#include "../layers/model.h"
#include "../train/run_config.h"

typedef struct {
    hy_run_config cfg;  // loaded: the checkpoint's; fresh: defaults with cfg.model set
    hy_model m;
    hy_arena params, grads;
} hy_eval_model;

void hy_eval_model_fresh(hy_eval_model *w, hy_arch arch, const hy_model_config *c, uint64_t seed);
// A missing or damaged checkpoint is one clear error (exit 2).
void hy_eval_model_load(hy_eval_model *w, const char *checkpoint);
void hy_eval_model_free(hy_eval_model *w);

// Logits (B, T, V) of ids (B, T) from an empty state, by chunked prefill
// (pieces of at most `chunk` tokens).
void hy_eval_logits(hy_model *m, const int32_t *ids, int B, int T, int chunk, float *logits);

// -log softmax(row)[target] over V logits, in double.
double hy_eval_nll(const float *row, int V, int target);
// Index of the largest logit (lowest index on ties).
int hy_eval_argmax(const float *row, int V);

// A finished model config: the reference defaults with the given sizes,
// swa_every 2 (HydraLM alternates GDN and SWA; the dense model ignores
// the schedule).
hy_model_config hy_eval_small_config(int vocab, int d_model, int n_layers, int n_heads,
                                     int swa_window);

#endif
