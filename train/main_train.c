// hydra-train: see train/trainer.h.
#include "trainer.h"

int main(int argc, char **argv) { return hy_train_main(argc, argv); }
