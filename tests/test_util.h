/* test_util.h: the few helpers every C test shares.
 *
 * CHECK records a failure with file and line and carries on, so one run shows
 * every broken assertion; test_finish() prints "N passed, N failed" and
 * returns the exit code. Tolerance checks print the worst error as a share of
 * the limit so that headroom is visible. */
#ifndef PMOE_TEST_UTIL_H
#define PMOE_TEST_UTIL_H

#include <stdint.h>
#include <stdio.h>

extern int test_passed, test_failed;

#define CHECK(cond)                                                                   \
    do {                                                                              \
        if (cond) {                                                                   \
            test_passed++;                                                            \
        } else {                                                                      \
            test_failed++;                                                            \
            fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);           \
        }                                                                             \
    } while (0)

#define CHECK_MSG(cond, ...)                                                          \
    do {                                                                              \
        if (cond) {                                                                   \
            test_passed++;                                                            \
        } else {                                                                      \
            test_failed++;                                                            \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);           \
            fprintf(stderr, __VA_ARGS__);                                             \
            fputc('\n', stderr);                                                      \
        }                                                                             \
    } while (0)

/* Compares got against want elementwise with |got - want| <= atol + rtol*|want|.
 * Prints the worst element's error as a share of its limit under `what`.
 * Returns 1 when all are within. NaN or Inf in either fails. */
int check_close(const char *what, const float *got, const double *want, int64_t n,
                double atol, double rtol);
int check_close_f(const char *what, const float *got, const float *want, int64_t n,
                  double atol, double rtol);

/* Bit-for-bit comparisons; print "bit-identical"/"identical" or the first
 * element that differs, record a pass or a failure, return 1 when equal. */
int check_exact_f(const char *what, const float *got, const float *want, int64_t n);
int check_exact_i(const char *what, const int32_t *got, const int32_t *want, int64_t n);

/* Fills x[n] with uniform values in [lo, hi) from a fixed seed. */
void fill_uniform(float *x, int64_t n, uint64_t seed, float lo, float hi);

/* Makes a fresh temporary folder and writes its path to out. */
void make_temp_dir(char *out, int out_size);

int test_finish(const char *name);

#endif
