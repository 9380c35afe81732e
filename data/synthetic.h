// synthetic.h: generated tasks as data sources, so research runs need no files.
//
// Both generators draw everything from the caller's hy_rng, so a batch is a
// function of the generator state (which checkpoints store) and a resumed run
// continues with the same examples. Targets use -100 for "no loss here".
#ifndef HY_DATA_SYNTHETIC_H
#define HY_DATA_SYNTHETIC_H

#include <stdint.h>

#include "../autograd/rng.h"

#define HY_IGNORE_INDEX (-100)

// ---------------------------------------------------------------- MQAR
// Multi-query associative recall, following the Zoology protocol (Arora,
// Eyuboglu et al. 2023). One sequence of seq_len tokens:
//   k1 v1 k2 v2 ... kP vP | queries ...
// Keys are distinct, drawn from [1, V/2); values distinct, from [V/2, V).
// The second part has floor((seq_len - 2P) / 2) even-offset query slots; each
// key is queried once, at a slot g drawn without replacement with
// p(g) ~ a * g^(a-1) (g = 1, 2, ...), so most queries come soon after the
// context, as repeated bigrams do in text. The other positions hold random
// tokens that are not keys of this sequence (Zoology's random_non_queries,
// minus the chance of a stray unlabelled key). targets[t] is the value of the
// key at inputs[t] where that is a query, -100 everywhere else: the model sees
// the query key and must emit its value next.
#define HY_MQAR_DEFAULT_VOCAB 8192
#define HY_MQAR_DEFAULT_POWER_A 0.01f

typedef struct {
    int vocab_size;  // 8192 in Zoology
    int seq_len;
    int n_pairs;
    float power_a;  // 0.01 in Zoology; 1 = uniform slots
    // 0: every sequence holds n_pairs pairs. Otherwise each sequence holds P
    // pairs drawn log-uniformly from [min_pairs, n_pairs] (as many sequences
    // per octave), the easy ones teaching the lookup that the hard ones need,
    // like Zoology's training mixture of pair counts.
    int min_pairs;
} hy_mqar_config;

hy_mqar_config hy_mqar_defaults(int seq_len, int n_pairs);
// Usage errors for a config that cannot generate: 4 * n_pairs > seq_len, a
// vocab too small for n_pairs distinct keys and values, power_a <= 0,
// min_pairs outside [0, n_pairs].
void hy_mqar_check(const hy_mqar_config *c);
// B sequences of seq_len tokens: inputs and targets are B * seq_len.
void hy_mqar_batch(const hy_mqar_config *c, hy_rng *r, int B, int32_t *inputs, int32_t *targets);

// ---------------------------------------------------------------- passkey
// Byte-level passkey retrieval. One sequence of seq_len + 1 bytes:
//   filler ... "The pass key is NNNNN. Remember it. NNNNN is the pass key. "
//   ... filler "\nWhat is the pass key? The pass key is NNNNN"
// with the needle at `depth` of the filler (0 = very start, 1 = just before
// the question). inputs = bytes [0, seq_len), targets = bytes [1, seq_len]
// where they are answer digits, -100 elsewhere: the loss is on the answer only.
typedef struct {
    int seq_len;
    int n_digits;  // 5 by default, 1..15
    float depth;   // in [0, 1]; < 0 draws a depth per sequence
} hy_passkey_config;

// Where the answer is, for exact-match evaluation: targets[answer_pos + i] =
// answer[i] for i < n_digits, and inputs[0 .. answer_pos] is the prompt
// (ending with "is ") after which a model generates the digits.
typedef struct {
    char answer[16];  // the digits, NUL-terminated
    int n_digits;
    int answer_pos;
    int needle_pos;  // byte offset of "The pass key is" in the sequence
} hy_passkey_item;

hy_passkey_config hy_passkey_defaults(int seq_len);
// The shortest seq_len that fits the needle and the question (no filler).
int hy_passkey_min_seq_len(int n_digits);
void hy_passkey_check(const hy_passkey_config *c);
// One sequence (seq_len inputs and targets); item may be NULL.
void hy_passkey_sample(const hy_passkey_config *c, hy_rng *r, int32_t *inputs, int32_t *targets,
                       hy_passkey_item *item);
void hy_passkey_batch(const hy_passkey_config *c, hy_rng *r, int B, int32_t *inputs,
                      int32_t *targets);

#endif
