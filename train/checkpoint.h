// checkpoint.h: HDF5 checkpoints (DESIGN section 6).
//
// Layout of a checkpoint file:
//   /config                    string: the resolved INI text of the run
//   /params/<name>             fp32, the parameter's shape
//   /optim/<name>/<slot>       fp32, the parameter's shape (slots from
//                              hy_optim_slots); /optim attributes step, kind
//   /train                     attributes step, tokens, rng (4 x uint64),
//                              loss, val_loss
//   root attributes            format_version (1), created (ISO-8601 UTC),
//                              commit
// Values are stored as raw little-endian fp32, so a resumed run continues
// bit-exactly. Saving is atomic (temporary file, then rename), so a crash or
// a failed save never destroys the previous checkpoint. A run directory
// holds ckpt-<step>.h5 files and a `latest` file naming the newest.
#ifndef HY_CHECKPOINT_H
#define HY_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "../autograd/params.h"
#include "../autograd/rng.h"
#include "../optim/optim.h"

#define HY_CKPT_FORMAT_VERSION 1

typedef struct {
    int64_t step;    // optimizer steps completed
    int64_t tokens;  // tokens trained on
    hy_rng rng;      // trainer RNG
    float loss;      // last training loss
    float val_loss;  // last validation loss, NAN if none
} hy_train_state;

// Atomic: writes PATH.tmp.<pid>, flushes and closes it, then rename()s it
// over PATH; on any failure the temporary is removed and PATH (if it
// existed) is untouched. `opt` and `st` may be NULL (then /optim or /train
// is not written). The file is built in host memory first (a transient
// copy of the checkpoint's size). Host tables only for now.
void hy_ckpt_save(const char *path, const char *config_text, const hy_param_table *params,
                  const hy_optimizer *opt, const hy_train_state *st);

// The /config INI text (malloc'd). A missing, truncated or non-checkpoint
// file is one clear error (exit 2).
char *hy_ckpt_read_config(const char *path);

// Restore the parameters and, when `opt` / `st` are not NULL, the optimizer
// state (slots and step) and the training state. Every name, shape and
// dtype is checked first; a mismatch is one clear error naming the
// checkpoint and what differs (exit 2), and nothing is modified unless the
// whole checkpoint matches and reads back.
void hy_ckpt_load(const char *path, hy_param_table *params, hy_optimizer *opt, hy_train_state *st);

// Remove all but the newest `keep` files named ckpt-<step>.h5 in `dir`
// (newest by step number; other files are left alone).
void hy_ckpt_prune(const char *dir, int keep);

// Atomically point DIR/latest at `file_name` (a name inside dir).
void hy_ckpt_write_latest(const char *dir, const char *file_name);

// The newest checkpoint of `dir` into path (n bytes): the file DIR/latest
// names or, without a `latest` file (a crash between a save and its
// pointer), the ckpt-<step>.h5 with the highest step. Returns 1 when there
// is one, 0 when there is none (or no such directory). A `latest` naming a
// missing file is an error (exit 2).
int hy_ckpt_latest(const char *dir, char *path, size_t n);

// Step number of a file name "ckpt-<step>.h5" (no directory), or -1.
int64_t hy_ckpt_step_of(const char *file_name);

#endif
