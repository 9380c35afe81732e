// tasks.h: evaluations of a model, shared by the claims and by
// `hydra-eval --checkpoint CKPT --task ...`.
//
// All of them run the model through chunked prefill with the tape off
// (hy_eval_logits), on sequences generated fresh from `seed`, so nothing
// is shared with the training data unless the seed says so.
#ifndef HY_EVAL_TASKS_H
#define HY_EVAL_TASKS_H

#include <stdint.h>

#include "../layers/model.h"

// MQAR (Zoology protocol, data/synthetic.h) at the model's vocabulary:
// the share of queries whose value is the argmax of the logits, over
// n_seqs fresh sequences. *right and *total (may be NULL) get the counts.
double hy_task_mqar(hy_model *m, int seq_len, int pairs, int n_seqs, uint64_t seed,
                    int64_t *right, int64_t *total);

// Passkey retrieval (data/synthetic.h) at one needle depth in [0, 1]:
// exact-match accuracy over n sequences. Greedy decoding of the digits
// after the question equals "every digit is the argmax given the right
// digits before it", so one forward over the sequence decides it.
// *digit_acc (may be NULL) gets the per-digit accuracy.
double hy_task_passkey(hy_model *m, int seq_len, double depth, int n, uint64_t seed,
                       double *digit_acc);

// Mean next-token loss (nats) over `tokens`, cut into consecutive windows
// of `window` + 1 tokens (window predictions each, the model starting
// empty in every window). Windows are evaluated `batch` at a time; a tail
// shorter than a window is left out. *count (may be NULL) gets the number
// of predictions.
double hy_task_text_loss(hy_model *m, const int32_t *tokens, int64_t n, int window, int batch,
                         int64_t *count);

#endif
