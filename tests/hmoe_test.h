/* tests/hmoe_test.h: a tiny test harness (valkey test_help.h style). Each test_* executable
 * returns 0 when every check passed, 1 otherwise, 77 to mark a skip. */
#ifndef HMOE_TEST_H
#define HMOE_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int hmoe_test_failed;
static int hmoe_test_checks;

#define CHECK(cond)                                                                           \
    do {                                                                                      \
        hmoe_test_checks++;                                                                   \
        if (!(cond)) {                                                                        \
            hmoe_test_failed++;                                                               \
            fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);                   \
        }                                                                                     \
    } while (0)

#define CHECKF(cond, ...)                                                                     \
    do {                                                                                      \
        hmoe_test_checks++;                                                                   \
        if (!(cond)) {                                                                        \
            hmoe_test_failed++;                                                               \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                   \
            fprintf(stderr, __VA_ARGS__);                                                     \
            fputc('\n', stderr);                                                              \
        }                                                                                     \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                                                 \
    CHECKF(fabs((double)(a) - (double)(b)) <= (tol), "%.9g vs %.9g (tol %.3g)", (double)(a),  \
           (double)(b), (double)(tol))

#define TEST_SKIP(...)                                                                        \
    do {                                                                                      \
        fprintf(stderr, "SKIP: " __VA_ARGS__);                                                \
        fputc('\n', stderr);                                                                  \
        exit(77);                                                                             \
    } while (0)

#define TEST_DONE()                                                                           \
    do {                                                                                      \
        fprintf(stderr, "%s: %d checks, %d failed\n", __FILE__, hmoe_test_checks,             \
                hmoe_test_failed);                                                            \
        return hmoe_test_failed ? 1 : 0;                                                      \
    } while (0)

#endif
