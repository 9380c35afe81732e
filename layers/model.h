// model.h: HydraLM and the matched dense Transformer, from one config.
//
// Both share one interface: build the parameter table, run a forward with
// loss on the tape (training), and decode with a state object: `step` (one
// token in, logits out) and chunked `prefill` (any number of tokens in,
// state carried). HydraLM's decoding state has a fixed size (GDN state and
// conv cache per GDN layer, ring buffer per SWA layer); the dense model's is
// a KV cache that grows with the tokens processed.
#ifndef HY_MODEL_H
#define HY_MODEL_H

#include <stdio.h>

#include "../autograd/params.h"
#include "config.h"
#include "swa.h"

typedef enum { HY_ARCH_HYDRA = 0, HY_ARCH_DENSE = 1 } hy_arch;

// Indices into the parameter table; -1 where a layer kind has no such tensor.
typedef struct {
    hy_layer_kind kind;
    int norm1, norm2;        // blocks.i.norm1 / norm2 (dense: attn_norm / mlp_norm)
    int qkv, o;              // mixer.qkv_proj, mixer.o_proj (dense: attn.*)
    int ab_w, ab_b;          // GDN: mixer.ab_proj.weight / .bias (alpha rows, then beta rows)
    int conv_w, conv_b;      // GDN: mixer.short_conv.conv.weight (3I, 1, K) / .bias
    int gate;                // GDN: mixer.gate_proj.weight (when dn_use_gate)
    int w_fused, w_down;     // mlp.w_fused (2*hidden, d: gate rows first), mlp.w_down
} hy_layer_params;

typedef struct {
    hy_arch arch;
    hy_model_config cfg;
    hy_param_table params;
    hy_layer_params layer[HY_MAX_LAYERS];
    int embed, norm_f;
    // Activation recomputation (hydra-train's train.recompute): a training
    // forward keeps only each block's input and output; backward replays
    // the block's forward, then its backward, one block at a time. The same
    // gradients for a fraction of the activation memory, at the cost of
    // one more forward.
    int recompute;
} hy_model;

// Declare the parameters (names and shapes of the PyTorch reference, DESIGN
// section 6) and their optimizer routing; does not allocate.
void hy_model_build(hy_model *m, hy_arch arch, const hy_model_config *cfg);
void hy_model_destroy(hy_model *m);
// Reference initialisation: N(0, initializer_range), output projections
// N(0, initializer_range / sqrt(2 n_layers)), norms 1, alpha bias
// log(0.98/0.02), other biases 0.
void hy_model_init_weights(hy_model *m, uint64_t seed);
// A copy of the host model `src` on the GPU: same config and table, values
// copied into fp32 master weights (`values`, CUDA arena) with fp32 gradients
// (`grads`) and bf16 copies for the GEMMs (`half`). Forward, backward and
// decoding then run on the GPU: activations bf16, gradients fp32.
void hy_model_to_cuda(hy_model *dst, const hy_model *src, hy_arena *values, hy_arena *grads,
                      hy_arena *half);
// The same into three new CUDA arenas sized for it (freed by the caller
// with hy_arena_free, after hy_model_destroy(dst)): for a model that only
// runs forward and decoding (generation, evaluation).
void hy_model_to_cuda_alloc(hy_model *dst, const hy_model *src, hy_arena *values,
                            hy_arena *grads, hy_arena *half);
// Device of the model's parameters.
static inline hy_device hy_model_device(const hy_model *m) { return m->params.device; }
// Sum of the element counts of all parameters.
int64_t hy_model_param_count(const hy_model *m);

// Training forward. ids, targets (B, T) i32 -> logits (B, T, V); when
// targets is not NULL, *loss receives the mean cross-entropy (targets equal
// to ignore_index are skipped). On the GPU (ids and model there) the loss
// is fused with the tied head (hy_head_loss) and the returned logits are
// NULL; without targets the logits come back as bf16 (B, T, V).
hy_tensor *hy_model_forward(hy_model *m, hy_tape *t, hy_tensor *ids, hy_tensor *targets,
                            int ignore_index, hy_tensor **loss);

// ---------------------------------------------------------------- decoding
// On the GPU (a model whose parameters live there) the same state lives in
// device memory: S stays fp32, the conv cache, rings and KV caches are bf16
// (they hold bf16 activations exactly).
typedef struct {
    float *S;          // GDN (B, H, Dv, Dk); device memory on the GPU
    float *conv;       // GDN (B, 3I, K-1): the last K-1 projected inputs (CPU)
    hy_swa_cache swa;  // SWA: ring buffer of the last W keys and values (CPU)
    float *k, *v;      // dense: (B, cap, H, D) growing caches (CPU)
    void *conv16;      // GPU: conv cache (B, 3I, K-1) bf16
    void *k16, *v16;   // GPU: SWA ring (B, W, H, D) or dense cache (B, cap, H, D), bf16
} hy_layer_state;

enum { HY_GREEDY_RING = 8 };  // greedy steps' tokens held for the host (> steps queued + 1)

typedef struct {
    const hy_model *model;
    int B;
    int64_t pos;        // tokens processed so far
    int64_t dense_cap;  // dense: rows allocated in k/v
    hy_layer_state layer[HY_MAX_LAYERS];
    hy_device device;   // where the state lives (the model's device)
    void *block;        // one allocation for HydraLM's fixed-size state
    size_t bytes;       // bytes of decoding state now held
    // GPU: one-token steps run as one CUDA graph, recorded at the first step
    // and replayed after (HYDRA_DECODE_GRAPH=0 turns it off). The graph reads
    // the token ids and the position from device memory and keeps its
    // activations in its own arena, at fixed addresses. The dense model's is
    // recorded again when its KV cache grows (new addresses, more splits).
    void *graph;          // the instantiated graph, or NULL
    int64_t graph_cap;    // dense: the cache capacity the graph was recorded for
    hy_arena graph_work;  // CUDA: the recorded step's activations
    int32_t *ids_dev;     // (B) the step's token ids
    long long *pos_buf;   // (1) the step's position
    long long *pos_dev;   // = pos_buf while the step is being recorded, else NULL
    hy_tensor *logits;    // (B, 1, V) bf16: the step's logits, in graph_work
    // What ids_dev and pos_buf hold now, so that a step copies them only when
    // they change (a greedy step leaves its tokens and the next position there).
    int32_t *ids_held;    // (B) host copy of ids_dev; NULL until a copy is made
    long long pos_held;   // *pos_buf, or -1 when unknown
    // Greedy steps: the same step with the argmax after it, recorded with the
    // graph (same activations). Its tokens also land in host memory, in a ring
    // by position, so that steps can be queued before the host reads them.
    void *graph_greedy;
    unsigned *done_dev;               // the argmax's count of finished rows
    int32_t *ring;                    // (HY_GREEDY_RING, B) mapped host memory
    void *ring_ev[HY_GREEDY_RING];    // each slot's step has run once its event has
} hy_decode_state;

void hy_decode_init(hy_decode_state *s, const hy_model *m, int B);
void hy_decode_reset(hy_decode_state *s);
void hy_decode_free(hy_decode_state *s);

// Chunked prefill: ids (B, T) i32 through the model from the current state;
// logits (B, T, V) written to `logits` (host, may be NULL). The state then
// holds all tokens so far. `work` supplies temporaries (reset inside).
void hy_model_prefill(hy_model *m, hy_decode_state *s, const int32_t *ids, int T, float *logits,
                      hy_arena *work);
// One token per row: ids (B) -> logits (B, V).
// For a GPU model, ids and logits stay host arrays and `work` must be a CUDA
// arena.
void hy_model_step(hy_model *m, hy_decode_state *s, const int32_t *ids, float *logits,
                   hy_arena *work);
// One token per row, greedily: ids (B) -> next (B), each row's most likely token
// (the lowest id among equal largest logits, as hy_sample at temperature 0). On
// the GPU's decoding graph the argmax runs on the device and only the B tokens
// come back; feeding them in as the next ids costs no copy (elsewhere the logits
// come to the host). A NaN or +inf logit, or a row of -inf only, stops with an
// error, as the sampler does.
void hy_model_step_greedy(hy_model *m, hy_decode_state *s, const int32_t *ids, int32_t *next,
                          hy_arena *work);
// n greedy steps from ids (B), each fed the tokens of the one before: step i's tokens
// go to out + i * B (out may be NULL) and to on_tokens (may be NULL) as they arrive, in
// order. On the GPU's decoding graph the steps are queued ahead of the host (a step's ids
// are the argmax of the one before, already on the device), so the device runs them back
// to back while the host reads tokens behind it; the tokens are those of n calls of
// hy_model_step_greedy.
typedef void (*hy_tokens_fn)(void *ctx, const int32_t *tokens);
void hy_model_generate_greedy(hy_model *m, hy_decode_state *s, const int32_t *ids, long n,
                              int32_t *out, hy_tokens_fn on_tokens, void *ctx, hy_arena *work);
// The greedy token of one row of logits (V) on the host, with the same checks.
int hy_greedy_token(const float *logits, int V);

#endif
