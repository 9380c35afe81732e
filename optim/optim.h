// optim.h: the optimizers, CPU reference: AdamW and hybrid Muon x AdamW.
//
// AdamW is torch.optim.AdamW (decoupled weight decay, bias-corrected
// moments); Muon is the PyTorch reference's optim/muon.py (momentum with
// Nesterov, Newton-Schulz orthogonalised update, shape-aware lr). With
// HY_OPTIM_ADAMW every parameter uses AdamW; with HY_OPTIM_MUON_HYBRID the
// parameter table's group decides (model_params.c routes 2-D hidden
// matrices to Muon). Weight decay is the config's value times the table's
// per-parameter multiplier.
//
// State lives in one block of the optim arena, planned with
// hy_optim_state_bytes(): `m` (exp_avg for AdamW, momentum_buffer for Muon)
// at the table's own offsets, and `v` (exp_avg_sq) packed for the AdamW
// parameters only, since Muon needs no second moment. A step allocates
// nothing: Newton-Schulz temporaries come from the scratch arena and are
// released (mark/reset) before the step returns.
#ifndef HY_OPTIM_H
#define HY_OPTIM_H

#include <stddef.h>
#include <stdint.h>

#include "../autograd/arena.h"
#include "../autograd/params.h"

typedef enum { HY_OPTIM_ADAMW = 0, HY_OPTIM_MUON_HYBRID = 1 } hy_optim_kind;

typedef struct {
    hy_optim_kind kind;
    float lr;                 // AdamW group peak lr
    float muon_lr;            // Muon group peak lr
    float beta1, beta2, eps;  // AdamW
    float weight_decay;       // AdamW decoupled weight decay (times the table's multiplier)
    float muon_momentum;
    int muon_nesterov;
    int ns_steps;             // Newton-Schulz iterations
    float muon_weight_decay;  // Muon decoupled weight decay (times the table's multiplier)
} hy_optim_config;

// adamw, lr 3e-4, muon_lr 0.02, betas (0.9, 0.95), eps 1e-8, weight decay
// 0.1, momentum 0.95, Nesterov, 5 Newton-Schulz steps, Muon weight decay 0.
hy_optim_config hy_optim_defaults(void);
// Bad values (negative lr, betas or momentum outside [0, 1), ...) are user
// errors (exit 2) naming `where` (e.g. the config file).
void hy_optim_validate(const hy_optim_config *c, const char *where);

typedef struct {
    hy_optim_config cfg;
    hy_param_table *table;
    int64_t step;        // updates taken; AdamW's bias correction uses step + 1
    float *m;            // exp_avg / momentum_buffer, at the table's offsets (table->numel)
    float *v;            // exp_avg_sq, AdamW parameters only, packed in table order
    size_t v_numel;      // floats in v
    hy_arena *scratch;   // Newton-Schulz temporaries
} hy_optimizer;

// Bytes hy_optim_init() takes from the state arena, and the scratch it
// needs at once during a step (largest Muon matrix).
size_t hy_optim_state_bytes(const hy_optim_config *c, const hy_param_table *t);
size_t hy_optim_scratch_bytes(const hy_optim_config *c, const hy_param_table *t);

// Zeroed state (step 0). The table's groups must not change afterwards.
// Host tables only (the CUDA optimizer lives in cuda/).
void hy_optim_init(hy_optimizer *o, const hy_optim_config *c, hy_param_table *t, hy_arena *state,
                   hy_arena *scratch);
// One update from the gradients in the table; lr_mult (from the schedule)
// scales both groups' lr.
void hy_optim_step(hy_optimizer *o, float lr_mult);
// 1 when parameter `i` is updated by Muon.
int hy_optim_uses_muon(const hy_optimizer *o, int i);

// The state of parameter `param` as named slots, for checkpoints:
// "exp_avg", "exp_avg_sq" (AdamW) or "momentum_buffer" (Muon), each a float
// array of the parameter's numel. `data` points into the optimizer's state,
// so a loader restores by writing through it (and setting o->step).
// names and data need room for HY_OPTIM_MAX_SLOTS entries; returns the count.
#define HY_OPTIM_MAX_SLOTS 2
int hy_optim_slots(const hy_optimizer *o, int param, const char **names, float **data);

// Newton-Schulz orthogonalisation of G (rows, cols) into O (rows, cols),
// both row-major fp32; O may equal G. X = G / (||G||_F + 1e-7), run on the
// wide orientation (transposed when rows > cols), `steps` times
// A = X X^T, B = b A + c A A, X = a X + B X, (a, b, c) = (3.4445, -4.7750,
// 2.0315). Temporaries come from `scratch` and are released on return.
void hy_newton_schulz(const float *G, float *O, int rows, int cols, int steps, hy_arena *scratch);
// Scratch bytes hy_newton_schulz() needs for a (rows, cols) matrix.
size_t hy_newton_schulz_scratch_bytes(int rows, int cols);

#endif
