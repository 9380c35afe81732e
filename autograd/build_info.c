// build_info.c: what this build is, for checkpoints and reports.
#include "build_info.h"

#include "hy_commit.h"  // generated at every build (cmake/commit.cmake)

const char *hy_build_commit(void) { return HY_COMMIT; }
