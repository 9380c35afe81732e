// generate.h: hydra-generate, text from a checkpoint.
//
//   hydra-generate CHECKPOINT [--prompt TEXT | --ids "ID ID ..." | stdin]
//                  [--max-new N] [--temperature T] [--top-k K] [--top-p P] [--seed S]
//                  [--device auto|cpu|cuda]
//
// Reads the run's config from the checkpoint, builds the model, loads the
// parameters, prefills the prompt into a batch-1 decoding state and samples
// new tokens one at a time, writing each to stdout as it comes (bytes for
// byte-level models, ids otherwise). The same seed gives the same output on
// one device (the GPU decodes in bf16, so its samples may differ from the CPU's).
#ifndef HY_GENERATE_H
#define HY_GENERATE_H

// The whole command; returns the exit status (0 done, 2 bad usage). A bad
// checkpoint or prompt exits through hy_die (2).
int hy_generate_main(int argc, char **argv);

#endif
