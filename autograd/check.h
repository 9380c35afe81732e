// check.h: error reporting for HydraLM-C.
//
// Two kinds of failure:
//   * a user mistake (bad config, missing file, misuse of an op): one clear
//     message and exit status 2 (HY_EXIT_USAGE);
//   * an internal failure (CUDA, HDF5, out of arena memory): file and line,
//     exit status 1.
// Tests can intercept errors with hy_set_error_hook() instead of exiting.
#ifndef HY_CHECK_H
#define HY_CHECK_H

#include <stdarg.h>
#include <stddef.h>

#define HY_EXIT_FAIL 1
#define HY_EXIT_USAGE 2

// Called instead of exit() when set; receives the exit code and the message.
// A hook that returns lets hy_die() exit as usual, so hooks normally longjmp.
typedef void (*hy_error_hook)(int code, const char *msg);
void hy_set_error_hook(hy_error_hook hook);
const char *hy_last_error(void);

// Print "hydra: error: <msg> (file:line)" and exit with `code`.
void hy_die_at(const char *file, int line, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5), noreturn));

#define hy_die(code, ...) hy_die_at(__FILE__, __LINE__, (code), __VA_ARGS__)

// Internal invariant or system-call failure.
#define HY_CHECK(cond, ...)                                             \
    do {                                                                \
        if (!(cond)) hy_die_at(__FILE__, __LINE__, HY_EXIT_FAIL, __VA_ARGS__); \
    } while (0)

// A caller's mistake (shapes, dtypes, devices, config values).
#define HY_REQUIRE(cond, ...)                                           \
    do {                                                                \
        if (!(cond)) hy_die_at(__FILE__, __LINE__, HY_EXIT_USAGE, __VA_ARGS__); \
    } while (0)

// malloc/calloc that never return NULL (set-up time only, never in a step).
void *hy_xmalloc(size_t bytes);
void *hy_xcalloc(size_t n, size_t size);

#endif
