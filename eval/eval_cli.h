// eval_cli.h: hydra-eval.
//
//   hydra-eval --claims [--budget smoke|full] [--only NAME[,NAME...]] [--out RESULTS.md]
//              [--json results.json] [--device auto|cpu|cuda] [--seed S] [--text PATH]
//              [--work DIR]
//   hydra-eval --checkpoint CKPT --task mqar|passkey|ppl|stream [--seq-len N] [--tokens N]
//              [--pairs N] [--sequences N] [--data PATH] [--chunk N] [--seed S]
//
// --claims measures the claims (eval/claims.h) and writes RESULTS.md, its
// plots and results.json; exit status 0 when every selected claim passes,
// 1 when one fails, 2 on bad usage. --checkpoint evaluates a model trained
// by hydra-train. Progress goes to stderr.
#ifndef HY_EVAL_CLI_H
#define HY_EVAL_CLI_H

int hy_eval_main(int argc, char **argv);

#endif
