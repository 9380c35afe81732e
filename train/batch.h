// batch.h: where a run's training and validation batches come from.
//
// One interface over the data sources of a config: token shards (text), and
// the synthetic tasks MQAR and passkey (optionally mixed with text). Every
// batch is a pure function of (seed, step, micro-batch), so a resumed run
// sees exactly the data it would have seen, with no cursor to save.
#ifndef HY_TRAIN_BATCH_H
#define HY_TRAIN_BATCH_H

#include <stdint.h>

#include "../data/loader.h"
#include "../data/synthetic.h"
#include "run_config.h"

#define HY_IGNORE_INDEX (-100)

typedef enum { HY_SRC_TEXT = 0, HY_SRC_MQAR, HY_SRC_PASSKEY } hy_source_kind;

typedef struct {
    hy_source_kind kind;
    uint64_t seed;
    int B, T;
    int has_text, has_val;
    hy_loader train, val;
    hy_mqar_config mqar;
    hy_passkey_config passkey;
    float passkey_fraction;
    int32_t *mix_in, *mix_tgt;  // text rows mixed into passkey batches (B, T)
} hy_batcher;

void hy_batcher_open(hy_batcher *b, const hy_run_config *c, int rank, int world);
void hy_batcher_close(hy_batcher *b);
// Micro-batch `micro` of optimizer step `step`: inputs, targets (B, T).
void hy_batcher_train(const hy_batcher *b, int64_t step, int micro, int32_t *inputs,
                      int32_t *targets);
// Validation micro-batch `index` (the same on every call): held-out text
// windows, or synthetic sequences from a generator seeded apart from training.
void hy_batcher_val(const hy_batcher *b, int64_t index, int32_t *inputs, int32_t *targets);
// 1 when the model reads bytes (text at vocab 256, or passkey): samples print as text.
int hy_batcher_is_bytes(const hy_batcher *b, const hy_run_config *c);

#endif
