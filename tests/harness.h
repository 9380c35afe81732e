// harness.h: a tiny test runner for CTest.
//
// A test file defines tests with HY_TEST(name, "label") { ... }. CMake reads
// those lines and registers each as a CTest test `name` with that label
// (cpu, gpu, multigpu), running `<file's executable> name`. Exit status:
// 0 pass, 1 fail, 77 skipped (e.g. no GPU).
#ifndef HY_TEST_HARNESS_H
#define HY_TEST_HARNESS_H

#include <math.h>
#include <setjmp.h>
#include <stdio.h>

#include "../autograd/check.h"

typedef void (*hy_test_fn)(void);
void hy_test_register(const char *name, const char *label, hy_test_fn fn);

#define HY_TEST(name, label)                                                          \
    static void hy_test_##name(void);                                                 \
    __attribute__((constructor)) static void hy_test_reg_##name(void) {               \
        hy_test_register(#name, label, hy_test_##name);                               \
    }                                                                                 \
    static void hy_test_##name(void)

extern int hy_test_failures;

void hy_test_fail_at(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
// Exit 77: CTest reports the test as skipped.
void hy_test_skip(const char *why) __attribute__((noreturn));

#define HY_ASSERT(cond, ...)                                                          \
    do {                                                                              \
        if (!(cond)) hy_test_fail_at(__FILE__, __LINE__, __VA_ARGS__);                \
    } while (0)

// |a - b| <= tol * max(1, |b|)
#define HY_ASSERT_CLOSE(a, b, tol, what)                                              \
    do {                                                                              \
        double a_ = (a), b_ = (b);                                                    \
        if (!(fabs(a_ - b_) <= (tol) * fmax(1.0, fabs(b_))))                          \
            hy_test_fail_at(__FILE__, __LINE__, "%s: %.9g vs %.9g (tol %.1e)", what, a_, \
                            b_, (double)(tol));                                       \
    } while (0)

// Run `stmt`, which must stop with a hydra error (exit code `code`) whose
// message contains `needle`. The error is caught, not exited on.
extern jmp_buf hy_test_jmp;
extern int hy_test_err_code;
void hy_test_catch_errors(int on);
#define HY_EXPECT_ERROR(stmt, code, needle)                                           \
    do {                                                                              \
        hy_test_catch_errors(1);                                                      \
        if (setjmp(hy_test_jmp) == 0) {                                               \
            stmt;                                                                     \
            hy_test_catch_errors(0);                                                  \
            hy_test_fail_at(__FILE__, __LINE__, "expected an error from: %s", #stmt); \
        } else {                                                                      \
            hy_test_catch_errors(0);                                                  \
            hy_test_check_error(__FILE__, __LINE__, (code), (needle));                \
        }                                                                             \
    } while (0)
void hy_test_check_error(const char *file, int line, int code, const char *needle);

// Largest |a - b| / max(|b|) over n elements: a relative error for a whole tensor.
double hy_max_rel_err(const float *a, const double *b, long n);
double hy_max_rel_err_f(const float *a, const float *b, long n);

#endif
