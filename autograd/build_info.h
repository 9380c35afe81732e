// build_info.h: what this build is.
#ifndef HY_BUILD_INFO_H
#define HY_BUILD_INFO_H

// The git commit the binaries were built from (12 hex digits, "+dirty" when
// tracked files differed from it, "unknown" outside a git checkout). Read
// at every build, so it stays exact across commits without re-running cmake.
const char *hy_build_commit(void);

#endif
