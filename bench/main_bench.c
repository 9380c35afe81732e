// hydra-bench: throughput measurements.
//
//   hydra-bench cpu      [--arch hydra|dense] [--d-model N] [--layers N] [--heads N] [--batch B]
//                        [--seq T] [--vocab V] [--steps N] [--threads N] [--json FILE]
//   hydra-bench ceilings [--reps 20] [--json FILE]
//   hydra-bench gdn      [--B 8] [--T 2048] [--H 16] [--D 128] [--bwd] [--iters 50] [--warmup 5]
//                        [--wy default|ref|fast] [--bv 0|16|32|64] [--json FILE]
//   hydra-bench swa      [--B 8] [--T 2048] [--H 12] [--D 64] [--W 512] [--bwd] [--iters 50]
//                        [--warmup 5] [--json FILE]
//   hydra-bench train    --config C [--B b] [--T t] [--steps 20] [--warmup 3] [--set k=v ...]
//                        [--wy default|ref|fast] [--json FILE]
//   hydra-bench step     --config C [--B b] [--T t] [--steps 10] [--warmup 3] [--reps 20]
//                        [--set k=v ...] [--wy default|ref|fast] [--json FILE]
//   hydra-bench decode   --config C [--prompt 512] [--new 256] [--reps 5] [--set k=v ...]
//                        [--json FILE]
//
// `cpu` times one training step (forward with loss, backward) on the CPU reference path.
// The others need a GPU (without one: "no GPU", exit 2):
//   ceilings  bf16 GEMM TFLOP/s (8192^3, cuBLAS) and device copy GB/s, measured now;
//   gdn, swa  one mixer kernel, forward (and with --bwd forward + backward): median ms of
//             --iters runs timed with CUDA events after --warmup untimed ones, TFLOP/s and
//             GB/s against the ceilings (FLOP and byte formulas in bench_kernels.c);
//   train     the model of a config built on the GPU exactly as hydra-train builds it, on
//             random tokens; wall time of whole steps (forward, backward, clip, optimizer),
//             tokens/s, MFU, peak GPU memory;
//   step      one training step taken apart: forward, backward (per tape node, by op),
//             clip, optimizer, with CUDA events; then each piece of a layer timed alone at
//             the config's shapes, times its count per step;
//   decode    batch 1: prefill a random prompt, then one token at a time (greedy).
// Every subcommand prints the commit and the device first and a table last; --json FILE
// writes the same figures as JSON (atomically: a temporary file, then a rename).
//
// The GPU subcommands measure the ceilings first (a few seconds) so that every ratio is
// against this machine now, not a number from a data sheet.
//
// This file is the dispatch; each subcommand is a file of bench/ (bench_cpu.c,
// bench_kernels.c: ceilings, gdn and swa, bench_train.c, bench_step.c, bench_decode.c) on
// bench_common (options, GPU set-up, ceilings), bench_report (tables, JSON) and
// bench_model (a config's model on the GPU).
#include <string.h>

#include "../autograd/check.h"
#include "bench_common.h"

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
} subcommand;

int main(int argc, char **argv) {
    static const subcommand cmds[] = {{"cpu", bench_cpu},     {"ceilings", bench_ceilings},
                                      {"gdn", bench_gdn},     {"swa", bench_swa},
                                      {"train", bench_train}, {"step", bench_step},
                                      {"decode", bench_decode}};
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        bench_usage(argc < 2 ? stderr : stdout, NULL);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        if (strcmp(argv[1], cmds[i].name)) continue;
        if (argc > 2 && (!strcmp(argv[2], "-h") || !strcmp(argv[2], "--help"))) {
            bench_usage(stdout, cmds[i].name);
            return 0;
        }
        return cmds[i].run(argc - 2, argv + 2);
    }
    bench_usage(stderr, NULL);
    hy_die(HY_EXIT_USAGE, "hydra-bench: unknown benchmark '%s'", argv[1]);
}
