// util_tape_cases.h: the case harness of tests/test_gpu_tape_ops.c: a tape op
// run on a CPU tape and on a GPU tape from the same inputs and compared.
//
// Every case draws random inputs, rounds the ones that are activations
// (bf16 on the GPU) to bf16, and runs the op twice:
//   * on a CPU tape (host arenas; f32 tensors holding the rounded values);
//   * on a GPU tape (CUDA arenas; activations uploaded as bf16, parameters
//     f32), with the activation and scratch arenas poisoned with 0xFF bytes
//     first, so an output element or a kernel partial sum the op fails to
//     write shows up as a NaN.
// Input and parameter gradients are bound (hy_tape_bind_grad) to zeroed f32
// buffers; backward starts from the same random seed gradient on both
// sides. Checked, as max |gpu - cpu| / max |cpu| over each tensor:
//   * the output: <= 1e-2 (one bf16 rounding is 2^-9 relative);
//   * every input and parameter gradient: <= 2e-2;
//   * the output dtype: the case's gpu_out on the GPU;
//   * a second forward with the tape disabled (nothing saved, e.g. no rstd)
//     gives the same output bits.
#ifndef HY_TEST_TAPE_CASES_H
#define HY_TEST_TAPE_CASES_H

#include <stdint.h>

#include "../autograd/tape.h"

// ACT: a float activation (f32 on the CPU, bf16 on the GPU), values rounded
// to bf16 on both sides. PARAM: f32 on both devices (parameters, and the
// f32 input of mean). IDS: i32 in [0, id_below).
enum { ACT, PARAM, IDS };

#define MAX_IN 6

typedef struct {
    const char *name;
    int kind;
    int grad;  // bind a gradient (float inputs)
    int ndim;
    int64_t shape[HY_MAX_DIMS];  // the shape the op sees
    int64_t row0;  // > 0: the op sees rows [row0, row0 + shape[0]) of a larger tensor
    float std;
    int32_t id_below;
} in_spec;

typedef hy_tensor *(*op_fn)(hy_tape *t, hy_tensor **in, const void *arg);

typedef struct {
    const char *cfg;
    op_fn fn;
    const void *arg;
    int n_in;
    in_spec in[MAX_IN];
    hy_dtype gpu_out;         // the dtype the GPU output must have
    double tol_out, tol_grad;  // 0: 1e-2 and 2e-2
} op_case;

#define N_CASES(a) ((int)(sizeof(a) / sizeof((a)[0])))

// Skips the test without a CUDA build or a GPU.
void tape_need_gpu(void);

// Each case on both devices and compared (above); case i draws from seed + i.
void tape_check_cases(const op_case *cases, int n, uint64_t seed);

// For the hand-written cases: a device's arenas and tape.
typedef struct {
    hy_arena in, acts, scratch;
    hy_tape tape;
    hy_device dev;
} tape_env;

void tape_env_init(tape_env *e, hy_device dev);
void tape_env_free(tape_env *e);
// The activation and scratch arenas filled with 0xFF bytes (GPU only).
void tape_poison(tape_env *e);
void tape_zero(hy_tensor *t);
// t as host floats (calloc'd, one spare element).
float *tape_to_host(const hy_tensor *t);
// A test-only op: y (n) f32 = x (n) bf16 on the GPU, dx += dy. It lets the
// seed gradient enter at a bf16 output (hy_tape_backward_seed takes an f32
// output).
hy_tensor *tape_upcast(hy_tape *t, hy_tensor *x);

#endif
