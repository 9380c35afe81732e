// data_cli.h: the hydra-data command line, as a function so tests can call it.
//
//   hydra-data encode INPUT.txt --out DIR [--val-frac 0.1]
//   hydra-data info SHARD
//
// Returns the exit status: 0, or 2 for bad usage (usage text on stderr).
// File problems (missing input, unwritable DIR) are hydra usage errors
// (exit 2) raised before anything in DIR is touched where possible.
#ifndef HY_DATA_CLI_H
#define HY_DATA_CLI_H

int hy_data_main(int argc, char **argv);

#endif
