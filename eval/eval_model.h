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
    hy_model m;         // the host model: weights are initialised or loaded here
    hy_arena params, grads;
    hy_model gm;        // on the GPU: a copy of m (bf16 weights for the GEMMs)
    hy_arena gparams, ggrads, ghalf;
    hy_model *net;      // the model to run: &m on the CPU, &gm on the GPU
} hy_eval_model;

// `dev` is where net runs; HY_CUDA needs a model the GPU kernels take
// (hy_device_choose's limits: a clear error otherwise).
void hy_eval_model_fresh(hy_eval_model *w, hy_arch arch, const hy_model_config *c, uint64_t seed,
                         hy_device dev);
// A missing or damaged checkpoint is one clear error (exit 2).
void hy_eval_model_load(hy_eval_model *w, const char *checkpoint, hy_device dev);
void hy_eval_model_free(hy_eval_model *w);
// Move a model loaded or made with HY_CPU to `dev` (a no-op for HY_CPU).
void hy_eval_model_place(hy_eval_model *w, hy_device dev);

// The device of a resolved --device ("cpu" or "cuda"), and its name in
// the report's prose ("CPU" or "GPU").
hy_device hy_eval_device(const char *device);
const char *hy_eval_device_word(const char *device);

// Logits (B, T, V) of ids (B, T) from an empty state, by chunked prefill
// (pieces of at most `chunk` tokens), on the model's device; logits on the host.
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

// The claims' small models on a device: the CPU keeps the claim's own
// heads and DeltaNet chunk; the GPU kernels need heads of 64 (or 128) and
// chunks of 64, so there a model of width d gets d / 64 heads of 64 and
// chunks of 64. The claims print the model they measured.
typedef struct {
    int n_heads, dn_chunk;
} hy_eval_heads;
hy_eval_heads hy_eval_heads_for(hy_device dev, int d_model, int cpu_heads, int cpu_chunk);

#endif
