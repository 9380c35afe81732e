// run_config.h: the INI configuration of a run.
//
// Sections [model] [train] [optim] [data] [eval]. Every key is typed and
// documented in one table (run_config.c; `hydra-train --help-config` prints
// it, configs/README.md lists it). A file is read over the defaults, then
// `--set section.key=value` overrides are applied. An unknown key, a bad
// value or a missing section is one clear error naming the file, the line
// and the key (exit 2). The resolved configuration (every key, with its
// final value) is printed at start, stored in the run directory and in
// every checkpoint, and reads back to the same configuration.
#ifndef HY_RUN_CONFIG_H
#define HY_RUN_CONFIG_H

#include <stdint.h>
#include <stdio.h>

#include "../layers/config.h"
#include "../layers/model.h"
#include "../optim/optim.h"
#include "../optim/schedule.h"

typedef struct {
    int steps;             // optimizer steps
    int batch_size;        // sequences per micro-batch
    int seq_len;           // tokens per sequence
    int grad_accum;        // micro-batches per step
    int64_t seed;          // initialisation, data order, sampling
    char device[8];        // auto | cpu | cuda
    int checkpoint_every;  // steps; 0 = only at the end and on a signal
    int keep_checkpoints;  // the newest K are kept
    int eval_every;        // steps; 0 = never
    int eval_batches;      // validation micro-batches per evaluation
    int log_every;         // steps between step lines
    int sample_every;      // steps between samples (byte-level models); 0 = never
    int sample_tokens;     // length of a sample
    float grad_clip;       // global norm; 0 = off
    int overlap_reduce;    // data parallel: reduce gradients block by block during backward
    int recompute;         // activation recomputation, block by block (hy_model.recompute)
    int cuda_graph;        // one GPU: a micro-batch replayed as a CUDA graph (step_graph.h)
} hy_train_config;

typedef struct {
    char source[16];        // text | mqar | passkey
    char path[1024];        // text: a hydra-data directory, a shard, or a glob
    int mqar_pairs;         // key-value pairs per MQAR sequence
    int mqar_min_pairs;     // 0, or training draws pairs log-uniformly from [min, mqar_pairs]
    float passkey_fraction; // passkey: share of passkey sequences in a batch
} hy_data_config;

typedef struct {
    int mqar_sequences;  // held-out sequences for MQAR accuracy
} hy_eval_config;

typedef struct {
    char file[1024];          // where it was read from ("" = defaults only)
    hy_arch arch;             // model.arch = hydra | dense
    hy_model_config model;
    hy_train_config train;
    hy_optim_config optim;
    char schedule_name[16];   // optim.schedule = constant | cosine | wsd
    int warmup_steps;         // optim.warmup_steps
    int decay_steps;          // optim.decay_steps (wsd)
    float min_lr_ratio;       // optim.min_lr_ratio
    hy_data_config data;
    hy_eval_config eval;
} hy_run_config;

// Defaults of every key (model: the reference configuration).
void hy_run_config_defaults(hy_run_config *c);
// Read `path` over the defaults (exit 2 on any error).
void hy_run_config_load(hy_run_config *c, const char *path);
// Parse INI text over the current values; `name` is used in messages.
void hy_run_config_parse_string(hy_run_config *c, const char *text, const char *name);
// Apply one "section.key=value" override (exit 2 on error).
void hy_run_config_set(hy_run_config *c, const char *assignment);
// Check ranges and combinations, derive the model schedule (exit 2 on error).
void hy_run_config_finalize(hy_run_config *c);

// The resolved configuration as INI text (every key); malloc'd.
char *hy_run_config_format(const hy_run_config *c);
// The schedule in the form the optimizer loop uses.
hy_schedule hy_run_config_schedule(const hy_run_config *c);
// Every key with its type, default and meaning, as a Markdown table.
void hy_run_config_print_help(FILE *f);

#endif
