// loader.h: training and validation batches from token shards.
//
// Training rows are drawn at random positions from an RNG seeded by
// (seed, step, rank, row) alone. A batch is therefore a pure function of the
// step: a resumed run sees exactly the same data with no cursor to save, and
// ranks draw from independent streams without talking to each other.
//
// Validation uses fixed windows that tile the split (stride T), visited in a
// fixed spread-out order, so any number of eval batches samples the whole
// split evenly and is identical on every call.
#ifndef HY_DATA_LOADER_H
#define HY_DATA_LOADER_H

#include <stdint.h>

#include "shard.h"

typedef struct {
    hy_shard *shards;
    int n_shards;
    uint64_t seed;
    int rank, world;
    int vocab_size;
    char split[8];  // "train" or "val"
} hy_loader;

// `pattern_or_dir` is, after replacing "{split}" with `split`:
//   * a directory: DIR/<split>.bin (as written by hydra-data), else every
//     DIR/*<split>*.bin (llm.c names its shards like fineweb_train_000001.bin);
//   * a single shard file (used as is, whatever the split);
//   * a glob(3) pattern: every match, in sorted order.
// Nothing found is a usage error; every shard is validated (hy_shard_open).
void hy_loader_open(hy_loader *l, const char *pattern_or_dir, const char *split, int vocab_size,
                    uint64_t seed, int rank, int world);
void hy_loader_close(hy_loader *l);
int64_t hy_loader_tokens(const hy_loader *l);

// B rows of T + 1 contiguous tokens, each from a uniformly random position of
// the union of the shards: inputs[b*T + t] = row[t], targets[b*T + t] =
// row[t + 1]. A shard shorter than T + 1 tokens is a usage error naming it.
// With gradient accumulation, pass a distinct `step` per micro-batch (e.g.
// step * accum + micro) so micro-batches do not repeat each other.
void hy_loader_batch(const hy_loader *l, int64_t step, int B, int T, int32_t *inputs,
                     int32_t *targets);

// Validation windows: window k of a shard covers tokens [k*T, k*T + T], so the
// targets of all windows cover every token but the first of each shard once.
int64_t hy_loader_eval_windows(const hy_loader *l, int T);
// Batches per rank to cover every window once.
int64_t hy_loader_eval_batches(const hy_loader *l, int B, int T);
// Batch `index` of this rank: windows (index*world + rank)*B + b of the visit
// order, wrapping round after the last window (so the final batch of a full
// pass may repeat a few windows).
void hy_loader_eval_batch(const hy_loader *l, int64_t index, int B, int T, int32_t *inputs,
                          int32_t *targets);

#endif
