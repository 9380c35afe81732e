// gradcheck.h: central finite-difference checks of hand-written backwards.
//
// The function under test maps inputs to one output tensor on a tape. The
// check forms the scalar L = sum(out * R) with a fixed random R (so no
// gradient can hide behind a symmetric sum), takes dL/dx from the tape, and
// compares it with (L(x + h) - L(x - h)) / 2h, L accumulated in double, on
// every element of each checked input (or a random sample of large ones).
#ifndef HY_GRADCHECK_H
#define HY_GRADCHECK_H

#include "tape.h"

typedef hy_tensor *(*hy_gc_fn)(hy_tape *tape, hy_tensor **inputs, void *user);

typedef struct {
    float h;             // step, relative to max(1, |x|); default 5e-3 (about the cube
                         // root of the f32 epsilon: balances rounding and truncation)
    float rtol, atol;    // pass when |a - n| <= atol + rtol * max(|a|, |n|)
    int max_elems;       // per input; 0 = every element (default 256)
    uint64_t seed;       // for R and the element sample
    int verbose;         // print every compared element
} hy_gc_opts;

hy_gc_opts hy_gc_defaults(void);

// Inputs with requires_grad set are checked; the others (token ids, fixed
// tensors) are passed through. Inputs must be host f32 (or i32) tensors.
// Prints one summary line per input; returns the number of mismatches.
int hy_gradcheck(const char *name, hy_gc_fn fn, void *user, hy_tensor **inputs, int n_inputs,
                 const hy_gc_opts *opts);

#endif
