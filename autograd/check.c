#include "check.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static hy_error_hook g_hook;
static char g_last[1024];

void hy_set_error_hook(hy_error_hook hook) { g_hook = hook; }

const char *hy_last_error(void) { return g_last; }

void hy_die_at(const char *file, int line, int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_last, sizeof g_last, fmt, ap);
    va_end(ap);
    if (g_hook) g_hook(code, g_last);
    // Usage errors are the user's: the message alone says what to fix.
    // Internal failures carry the source location for whoever debugs them.
    if (code == HY_EXIT_USAGE)
        fprintf(stderr, "hydra: error: %s\n", g_last);
    else
        fprintf(stderr, "hydra: error: %s (%s:%d)\n", g_last, file, line);
    fflush(stderr);
    exit(code);
}

void *hy_xmalloc(size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    HY_CHECK(p != NULL, "out of host memory allocating %zu bytes", bytes);
    return p;
}

void *hy_xcalloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    HY_CHECK(p != NULL, "out of host memory allocating %zu x %zu bytes", n, size);
    return p;
}
