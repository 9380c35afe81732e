// hydra-generate: see generate.h.
#include "generate.h"

int main(int argc, char **argv) { return hy_generate_main(argc, argv); }
