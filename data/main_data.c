// hydra-data: turn text into token shards and inspect shards (see data_cli.h).
#include "data_cli.h"

int main(int argc, char **argv) { return hy_data_main(argc, argv); }
