// hydra-eval: the claims report and checkpoint evaluations (eval/eval_cli.h).
#include "eval_cli.h"

int main(int argc, char **argv) { return hy_eval_main(argc, argv); }
