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

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (cond) {                                                                                \
            test_passed++;                                                                         \
        } else {                                                                                   \
            test_failed++;                                                                         \
            fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);                        \
        }                                                                                          \
    } while (0)

#define CHECK_MSG(cond, ...)                                                                       \
    do {                                                                                           \
        if (cond) {                                                                                \
            test_passed++;                                                                         \
        } else {                                                                                   \
            test_failed++;                                                                         \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                        \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)

/* Compares got against want elementwise with |got - want| <= atol + rtol*|want|.
 * Prints the worst element's error as a share of its limit under `what`.
 * Returns 1 when all are within. NaN or Inf in either fails. */
int check_close(const char *what, const float *got, const double *want, int64_t n, double atol,
                double rtol);
int check_close_f(const char *what, const float *got, const float *want, int64_t n, double atol,
                  double rtol);

/* Bit-for-bit comparisons; print "bit-identical"/"identical" or the first
 * element that differs, record a pass or a failure, return 1 when equal. */
int check_exact_f(const char *what, const float *got, const float *want, int64_t n);
int check_exact_i(const char *what, const int32_t *got, const int32_t *want, int64_t n);

/* Worst error as a share of rel (scale + |want|), scale the largest |want|:
 * a float sum's rounding grows with its terms, which the largest result
 * stands for. */
int close_scaled(const char *what, const float *got, const float *want, int64_t n, double rel);
/* A sum whose result may cancel to near zero: the limit is rel (mass +
 * |want|), mass the largest sum |term| of any output. */
int close_sum(const char *what, const float *got, const float *want, int64_t n, double mass,
              double rel);
/* The largest sum over a channel of |a| (b NULL) or |a (b - mean) invstd|,
 * for a and b of batch x channels x spatial: the mass of a per-channel sum. */
double channel_mass(const float *a, const float *b, const float *mean, const float *invstd,
                    int64_t batch, int channels, int64_t spatial);

/* Fills x[n] with uniform values in [lo, hi) from a fixed seed. */
void fill_uniform(float *x, int64_t n, uint64_t seed, float lo, float hi);

/* l distinct picks of [0, n) per group, as top-l picks them: the first l of
 * a shuffle of the n indices, from the RNG (seed, stream). sel has groups x l. */
void fill_random_picks(int32_t *sel, int64_t groups, int n, int l, uint64_t seed, uint64_t stream);

/* Host buffers freed together by free_all() (exit 2 when out of memory or
 * past TEST_MAX_BUFS at once). Float buffers start as NaN, int buffers as
 * -1, double and byte buffers as 0, so an element an op fails to write is
 * caught. A count of 0 still gives a valid pointer. */
enum { TEST_MAX_BUFS = 4096 };
void *track(void *p);
float *fbuf(int64_t n);
double *dbuf(int64_t n);
int32_t *ibuf(int64_t n);
unsigned char *bbuf(int64_t n);
float *frand(int64_t n, uint64_t seed, float lo, float hi); /* fill_uniform */
float *fcopy(const float *src, int64_t n);
void free_all(void);

/* Makes a fresh temporary folder and writes its path to out. */
void make_temp_dir(char *out, int out_size);

int test_finish(const char *name);

#endif
