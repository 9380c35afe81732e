#include "batch.h"

#include <stdlib.h>
#include <string.h>

#include "../autograd/check.h"

// Distinct, well-mixed seeds per (purpose, step, micro).
static uint64_t mix(uint64_t seed, uint64_t a, uint64_t b, uint64_t purpose) {
    uint64_t x = seed ^ (a * 0x9e3779b97f4a7c15ULL) ^ (b * 0xc2b2ae3d27d4eb4fULL) ^
                 (purpose * 0x165667b19e3779f9ULL);
    x ^= x >> 31;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 29;
    return x;
}

#define PURPOSE_TRAIN 1
#define PURPOSE_VAL 2
#define PURPOSE_MIX 3

void hy_batcher_open(hy_batcher *b, const hy_run_config *c, int rank, int world) {
    memset(b, 0, sizeof *b);
    b->seed = (uint64_t)c->train.seed + (uint64_t)rank * 0x100000001ULL;
    b->B = c->train.batch_size;
    b->T = c->train.seq_len;
    const char *src = c->data.source;
    b->kind = !strcmp(src, "mqar") ? HY_SRC_MQAR : !strcmp(src, "passkey") ? HY_SRC_PASSKEY : HY_SRC_TEXT;
    int want_text = b->kind == HY_SRC_TEXT || (b->kind == HY_SRC_PASSKEY && c->data.path[0] &&
                                               c->data.passkey_fraction < 1.0f);
    if (want_text) {
        hy_loader_open(&b->train, c->data.path, "train", c->model.vocab_size,
                       (uint64_t)c->train.seed, rank, world);
        b->has_text = 1;
        if (b->kind == HY_SRC_TEXT) {
            hy_loader_open(&b->val, c->data.path, "val", c->model.vocab_size,
                           (uint64_t)c->train.seed, rank, world);
            b->has_val = 1;
        }
    }
    if (b->kind == HY_SRC_MQAR) {
        b->mqar = hy_mqar_defaults(b->T, c->data.mqar_pairs);
        b->mqar.vocab_size = c->model.vocab_size;
        b->mqar.min_pairs = c->data.mqar_min_pairs;
        hy_mqar_check(&b->mqar);
    }
    if (b->kind == HY_SRC_PASSKEY) {
        b->passkey = hy_passkey_defaults(b->T);
        b->passkey.depth = -1.0f;  // a random depth per sequence
        hy_passkey_check(&b->passkey);
        b->passkey_fraction = b->has_text ? c->data.passkey_fraction : 1.0f;
        if (b->has_text) {
            b->mix_in = (int32_t *)hy_xmalloc((size_t)b->B * b->T * sizeof(int32_t));
            b->mix_tgt = (int32_t *)hy_xmalloc((size_t)b->B * b->T * sizeof(int32_t));
        }
    }
}

void hy_batcher_close(hy_batcher *b) {
    if (b->has_text) hy_loader_close(&b->train);
    if (b->has_val) hy_loader_close(&b->val);
    free(b->mix_in);
    free(b->mix_tgt);
    memset(b, 0, sizeof *b);
}

// held_out: validation MQAR sequences always hold data.mqar_pairs pairs,
// whatever mixture of pair counts training draws from.
static void synthetic(const hy_batcher *b, hy_rng *r, int held_out, int32_t *in, int32_t *tgt) {
    if (b->kind == HY_SRC_MQAR) {
        hy_mqar_config m = b->mqar;
        if (held_out) m.min_pairs = 0;
        hy_mqar_batch(&m, r, b->B, in, tgt);
        return;
    }
    hy_passkey_batch(&b->passkey, r, b->B, in, tgt);
}

void hy_batcher_train(const hy_batcher *b, int64_t step, int micro, int32_t *in, int32_t *tgt) {
    // The loader's own (seed, step) stream; micro-batches are distinct steps of it.
    int64_t key = step * 1024 + micro;
    if (b->kind == HY_SRC_TEXT) {
        hy_loader_batch(&b->train, key, b->B, b->T, in, tgt);
        return;
    }
    hy_rng r;
    hy_rng_seed(&r, mix(b->seed, (uint64_t)step, (uint64_t)micro, PURPOSE_TRAIN));
    synthetic(b, &r, 0, in, tgt);
    if (b->kind == HY_SRC_PASSKEY && b->has_text && b->passkey_fraction < 1.0f) {
        // Replace a share of the rows with text windows (targets: every token).
        hy_rng m;
        hy_rng_seed(&m, mix(b->seed, (uint64_t)step, (uint64_t)micro, PURPOSE_MIX));
        int32_t *ti = b->mix_in, *tt = b->mix_tgt;
        hy_loader_batch(&b->train, key, b->B, b->T, ti, tt);
        for (int row = 0; row < b->B; row++)
            if (hy_rng_uniform(&m) >= b->passkey_fraction) {
                memcpy(in + (int64_t)row * b->T, ti + (int64_t)row * b->T, (size_t)b->T * 4);
                memcpy(tgt + (int64_t)row * b->T, tt + (int64_t)row * b->T, (size_t)b->T * 4);
            }
    }
}

void hy_batcher_val(const hy_batcher *b, int64_t index, int32_t *in, int32_t *tgt) {
    if (b->kind == HY_SRC_TEXT) {
        hy_loader_eval_batch(&b->val, index, b->B, b->T, in, tgt);
        return;
    }
    hy_rng r;
    hy_rng_seed(&r, mix(b->seed, (uint64_t)index, 0, PURPOSE_VAL));
    synthetic(b, &r, 1, in, tgt);
}

int hy_batcher_is_bytes(const hy_batcher *b, const hy_run_config *c) {
    return b->kind == HY_SRC_PASSKEY || (b->kind == HY_SRC_TEXT && c->model.vocab_size == 256);
}
