/* test_util.c: see test_util.h. */
#include "test_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"

int test_passed = 0, test_failed = 0;

static int close_impl(const char *what, const float *got, const void *want, int want_is_double,
                      int64_t n, double atol, double rtol) {
    double worst_share = 0.0;
    int64_t worst_at = -1;
    for (int64_t i = 0; i < n; i++) {
        double w = want_is_double ? ((const double *)want)[i] : ((const float *)want)[i];
        double g = got[i];
        if (!isfinite(g) || !isfinite(w)) {
            worst_share = INFINITY;
            worst_at = i;
            break;
        }
        double share = fabs(g - w) / (atol + rtol * fabs(w));
        if (share > worst_share) {
            worst_share = share;
            worst_at = i;
        }
    }
    int ok = worst_share <= 1.0;
    double w = worst_at < 0 ? 0.0
                            : (want_is_double ? ((const double *)want)[worst_at]
                                              : ((const float *)want)[worst_at]);
    printf("  %-44s n=%-7lld worst %.3f of limit (atol %.0e rtol %.0e)%s", what, (long long)n,
           worst_share, atol, rtol, ok ? "\n" : "");
    if (!ok)
        printf(" at %lld: got %.9g want %.9g  <-- FAIL\n", (long long)worst_at,
               (double)got[worst_at], w);
    if (ok) test_passed++;
    else test_failed++;
    return ok;
}

int check_close(const char *what, const float *got, const double *want, int64_t n, double atol,
                double rtol) {
    return close_impl(what, got, want, 1, n, atol, rtol);
}

int check_close_f(const char *what, const float *got, const float *want, int64_t n, double atol,
                  double rtol) {
    return close_impl(what, got, want, 0, n, atol, rtol);
}

int check_exact_f(const char *what, const float *got, const float *want, int64_t n) {
    int64_t bad = -1;
    for (int64_t i = 0; i < n && bad < 0; i++)
        if (memcmp(&got[i], &want[i], sizeof(float)) != 0) bad = i;
    printf("  %-44s n=%-7lld %s\n", what, (long long)n, bad < 0 ? "bit-identical" : "DIFFERS");
    CHECK_MSG(bad < 0, "%s: element %lld: got %.9g want %.9g", what, (long long)bad,
              bad < 0 ? 0.0 : got[bad], bad < 0 ? 0.0 : want[bad]);
    return bad < 0;
}

int check_exact_i(const char *what, const int32_t *got, const int32_t *want, int64_t n) {
    int64_t bad = -1;
    for (int64_t i = 0; i < n && bad < 0; i++)
        if (got[i] != want[i]) bad = i;
    printf("  %-44s n=%-7lld %s\n", what, (long long)n, bad < 0 ? "identical" : "DIFFERS");
    CHECK_MSG(bad < 0, "%s: element %lld: got %d want %d", what, (long long)bad,
              bad < 0 ? 0 : got[bad], bad < 0 ? 0 : want[bad]);
    return bad < 0;
}

void fill_uniform(float *x, int64_t n, uint64_t seed, float lo, float hi) {
    pmoe_rng r = pmoe_rng_make(seed, 0x7e57);
    for (int64_t i = 0; i < n; i++)
        x[i] = lo + (hi - lo) * (float)pmoe_rng_uniform_at(&r, (uint64_t)i);
}

int close_scaled(const char *what, const float *got, const float *want, int64_t n, double rel) {
    double top = 0.0;
    for (int64_t i = 0; i < n; i++)
        if (fabs(want[i]) > top) top = fabs(want[i]);
    return check_close_f(what, got, want, n, rel * (top > 0 ? top : 1.0), rel);
}

int close_sum(const char *what, const float *got, const float *want, int64_t n, double mass,
              double rel) {
    return check_close_f(what, got, want, n, rel * (mass > 0 ? mass : 1.0), rel);
}

double channel_mass(const float *a, const float *b, const float *mean, const float *invstd,
                    int64_t batch, int channels, int64_t spatial) {
    double top = 0.0;
    for (int c = 0; c < channels; c++) {
        double sum = 0.0;
        for (int64_t q = 0; q < batch; q++)
            for (int64_t i = 0; i < spatial; i++) {
                const int64_t at = (q * channels + c) * spatial + i;
                sum += fabs(b ? a[at] * ((double)b[at] - mean[c]) * invstd[c] : a[at]);
            }
        if (sum > top) top = sum;
    }
    return top;
}

void fill_random_picks(int32_t *sel, int64_t groups, int n, int l, uint64_t seed, uint64_t stream) {
    int64_t *perm = malloc(sizeof(int64_t) * (size_t)(n > 0 ? n : 1));
    if (!perm) {
        fprintf(stderr, "fill_random_picks: out of memory\n");
        exit(2);
    }
    pmoe_rng r = pmoe_rng_make(seed, stream);
    for (int64_t q = 0; q < groups; q++) {
        for (int j = 0; j < n; j++) perm[j] = j;
        pmoe_rng_shuffle(&r, perm, n);
        for (int t = 0; t < l; t++) sel[q * l + t] = (int32_t)perm[t];
    }
    free(perm);
}

static void *bufs[TEST_MAX_BUFS];
static int nbufs;

void *track(void *p) {
    if (!p || nbufs == TEST_MAX_BUFS) {
        fprintf(stderr, "test buffers: out of memory or buffer slots (%d in use)\n", nbufs);
        exit(2);
    }
    return bufs[nbufs++] = p;
}

float *fbuf(int64_t n) {
    float *p = track(malloc((size_t)(n > 0 ? n : 1) * sizeof(float)));
    for (int64_t i = 0; i < n; i++) p[i] = NAN;
    return p;
}

double *dbuf(int64_t n) { return track(calloc((size_t)(n > 0 ? n : 1), sizeof(double))); }

int32_t *ibuf(int64_t n) {
    int32_t *p = track(malloc((size_t)(n > 0 ? n : 1) * sizeof(int32_t)));
    for (int64_t i = 0; i < n; i++) p[i] = -1;
    return p;
}

unsigned char *bbuf(int64_t n) { return track(calloc((size_t)(n > 0 ? n : 1), 1)); }

float *frand(int64_t n, uint64_t seed, float lo, float hi) {
    float *p = fbuf(n);
    fill_uniform(p, n, seed, lo, hi);
    return p;
}

float *fcopy(const float *src, int64_t n) {
    float *p = fbuf(n);
    memcpy(p, src, (size_t)n * sizeof(float));
    return p;
}

void free_all(void) {
    for (int i = 0; i < nbufs; i++) free(bufs[i]);
    nbufs = 0;
}

void make_temp_dir(char *out, int out_size) {
    const char *base = getenv("TMPDIR");
    snprintf(out, (size_t)out_size, "%s/pmoe-test-XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(out)) {
        perror("mkdtemp");
        exit(2);
    }
}

int test_finish(const char *name) {
    printf("%s: %d passed, %d failed\n", name, test_passed, test_failed);
    return test_failed ? 1 : 0;
}
