/*
 * test.h - the few macros our C unit tests use.
 *
 * CHECK(cond) records a failure with file:line and goes on; a test program
 * ends with `return test_summary();`, which prints "N passed, N failed" and
 * returns non-zero when anything failed. test_env() reads the paths that
 * CMake passes in (shared data, models, cases).
 */
#ifndef UPRES_TEST_H
#define UPRES_TEST_H

#include <stdio.h>
#include <stdlib.h>

static int test_n_pass, test_n_fail;

#define CHECK(cond)                                                                                          \
    do {                                                                                                     \
        if (cond) {                                                                                          \
            test_n_pass++;                                                                                   \
        } else {                                                                                             \
            test_n_fail++;                                                                                   \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);                         \
        }                                                                                                    \
    } while (0)

#define CHECKF(cond, ...)                                                                                    \
    do {                                                                                                     \
        if (cond) {                                                                                          \
            test_n_pass++;                                                                                   \
        } else {                                                                                             \
            test_n_fail++;                                                                                   \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond);                         \
            fprintf(stderr, __VA_ARGS__);                                                                    \
            fputc('\n', stderr);                                                                             \
        }                                                                                                    \
    } while (0)

static inline const char *test_env(const char *name) {
    const char *v = getenv(name);
    if (!v || !*v) {
        fprintf(stderr, "test: environment variable %s is not set (run through ctest)\n", name);
        exit(2);
    }
    return v;
}

/* 1 when built with sanitizers: heavy cases are reduced there. */
static inline int test_sanitized(void) {
    const char *v = getenv("UPRES_SANITIZE");
    return v && v[0] == '1';
}

static inline int test_summary(void) {
    printf("%d passed, %d failed\n", test_n_pass, test_n_fail);
    return test_n_fail ? 1 : 0;
}

#endif
