// trainer.h: hydra-train.
//
//   hydra-train CONFIG.ini [--set section.key=value ...] [--resume PATH|latest] [--out DIR]
//
// Reads the config (defaults < file < --set), builds the model and the
// memory plan, and trains: one line per step, validation every
// train.eval_every steps, samples for byte-level models, every line also in
// DIR/metrics.jsonl, HDF5 checkpoints DIR/ckpt-STEP.h5 written atomically
// every train.checkpoint_every steps, at the end, and on SIGINT/SIGTERM,
// with DIR/latest naming the newest. `--resume latest` (or a path) restores
// parameters, optimizer state, schedule position, RNG and data position
// exactly. Everything the run reads is checked before anything in DIR is
// written, so bad input leaves DIR as it was.
#ifndef HY_TRAINER_H
#define HY_TRAINER_H

// The whole command; returns the process exit status (0 done, 130
// interrupted after saving). Errors exit through hy_die (2: bad input).
int hy_train_main(int argc, char **argv);

#endif
