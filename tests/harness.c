#include "harness.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TESTS 256

static struct {
    const char *name, *label;
    hy_test_fn fn;
} g_tests[MAX_TESTS];
static int g_n;

int hy_test_failures;
jmp_buf hy_test_jmp;
int hy_test_err_code;

void hy_test_register(const char *name, const char *label, hy_test_fn fn) {
    if (g_n < MAX_TESTS) {
        g_tests[g_n].name = name;
        g_tests[g_n].label = label;
        g_tests[g_n].fn = fn;
        g_n++;
    }
}

void hy_test_fail_at(const char *file, int line, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "FAIL %s:%d: ", file, line);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    hy_test_failures++;
}

void hy_test_skip(const char *why) {
    printf("SKIP: %s\n", why);
    fflush(stdout);
    exit(77);
}

static void on_error(int code, const char *msg) {
    (void)msg;
    hy_test_err_code = code;
    longjmp(hy_test_jmp, 1);
}

void hy_test_catch_errors(int on) { hy_set_error_hook(on ? on_error : NULL); }

void hy_test_check_error(const char *file, int line, int code, const char *needle) {
    const char *msg = hy_last_error();
    printf("  expected error: %s\n", msg);
    if (hy_test_err_code != code)
        hy_test_fail_at(file, line, "error exit code %d, expected %d (%s)", hy_test_err_code,
                        code, msg);
    if (needle && !strstr(msg, needle))
        hy_test_fail_at(file, line, "error message lacks \"%s\": %s", needle, msg);
}

double hy_max_rel_err(const float *a, const double *b, long n) {
    double diff = 0, scale = 0;
    for (long i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d > diff || d != d) diff = d;
        if (fabs(b[i]) > scale) scale = fabs(b[i]);
    }
    return diff / (scale > 0 ? scale : 1);
}

double hy_max_rel_err_f(const float *a, const float *b, long n) {
    double diff = 0, scale = 0;
    for (long i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > diff || d != d) diff = d;
        if (fabs((double)b[i]) > scale) scale = fabs((double)b[i]);
    }
    return diff / (scale > 0 ? scale : 1);
}

int main(int argc, char **argv) {
    int ran = 0;
    for (int i = 0; i < g_n; i++) {
        if (argc > 1 && strcmp(argv[1], g_tests[i].name) != 0) continue;
        printf("== %s [%s]\n", g_tests[i].name, g_tests[i].label);
        fflush(stdout);
        g_tests[i].fn();
        ran++;
    }
    if (argc > 1 && ran == 0) {
        fprintf(stderr, "no test named '%s'\n", argv[1]);
        return 2;
    }
    if (hy_test_failures) {
        printf("%d check(s) failed\n", hy_test_failures);
        return 1;
    }
    printf("ok\n");
    return 0;
}
