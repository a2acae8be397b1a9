/* op_test_util.h: what the CPU op tests (test_ops.c, test_layers.c) share
 * besides test_util.h: finite differences of a scalar objective, and runs of
 * the same ops under 1, 2 and 3 OpenMP threads that must give the same bits.
 *
 * Backward checks take a scalar L = sum(out * R) for a fixed random R and
 * compare an op's analytic gradient with Richardson-extrapolated central
 * differences of L (fd_derivative). The determinism check copies every
 * output of one run (det_add, into test_util.h's tracked buffers) and
 * compares the runs byte for byte. */
#ifndef PMOE_OP_TEST_UTIL_H
#define PMOE_OP_TEST_UTIL_H

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "test_util.h"

/* The CPU backend, made for what creating it sets up (OpenBLAS kept to one
 * thread; the ops themselves take NULL); exits 1 when it cannot be made. */
static inline pmoe_backend *cpu_backend_or_exit(void) {
    pmoe_backend *be = NULL;
    pmoe_error err;
    if (pmoe_cpu_backend_create(0, &be, &err) != PMOE_OK) {
        fprintf(stderr, "cpu backend: %s\n", err.message);
        exit(1);
    }
    return be;
}

static inline double dot_ff(const float *a, const float *b, int64_t n) {
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}
static inline int all_finite(const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return 0;
    return 1;
}

/* ------------------------------------------------------ finite differences */

/* Evaluates L at the current inputs; sets *same = 0 when a discrete choice
 * (top-l selection, the ReLU pattern) differs from the unperturbed one. */
typedef double (*objective_fn)(void *ctx, int *same);

/* dL/dx[i] by central differences at steps eps and eps/2, combined by
 * Richardson extrapolation (error O(eps^4)); the step actually taken is the
 * float-rounded one. x[i] is restored after; *ok is set to 0 when a
 * perturbation changed a discrete choice (and left alone otherwise). The
 * caller re-evaluates f at the unperturbed point when done. */
static inline double fd_derivative(objective_fn f, void *ctx, float *x, int64_t i, double eps,
                                   int *ok) {
    const float x0 = x[i];
    double d[2];
    for (int r = 0; r < 2; r++) {
        const double h = eps / (1 << r);
        int s1 = 1, s2 = 1;
        x[i] = (float)(x0 + h);
        const double hp = (double)x[i] - x0;
        const double fp = f(ctx, &s1);
        x[i] = (float)(x0 - h);
        const double hm = x0 - (double)x[i];
        const double fm = f(ctx, &s2);
        *ok &= s1 && s2;
        d[r] = (fp - fm) / (hp + hm);
    }
    x[i] = x0;
    return (4.0 * d[1] - d[0]) / 3.0;
}

/* ------------------------------------------------------------ determinism */

enum { DET_MAX = 64 };
typedef struct {
    int count;
    const char *name[DET_MAX];
    void *data[DET_MAX];
    size_t bytes[DET_MAX];
} det_result;

/* Keeps a copy of bytes of src under name. */
static inline void det_add_bytes(det_result *r, const char *name, const void *src, size_t bytes) {
    if (r->count == DET_MAX) {
        fprintf(stderr, "det_add: more than %d outputs\n", DET_MAX);
        exit(2);
    }
    void *copy = track(malloc(bytes));
    memcpy(copy, src, bytes);
    r->name[r->count] = name;
    r->data[r->count] = copy;
    r->bytes[r->count] = bytes;
    r->count++;
}
/* The same for n floats. */
static inline void det_add(det_result *r, const char *name, const float *src, int64_t n) {
    det_add_bytes(r, name, src, (size_t)n * sizeof(float));
}

/* Runs run() under 1 thread, then under 2 and 3, and requires every output
 * of the later runs bitwise equal to the 1-thread run's and the team to have
 * the size asked for; with check_finite, also every output (all floats)
 * finite. Leaves OpenMP at 1 thread. */
static inline void check_thread_determinism(void (*run)(det_result *r), int check_finite) {
    printf("determinism across thread counts\n");
    det_result base, other;
    omp_set_num_threads(1);
    run(&base);
    for (int threads = 2; threads <= 3; threads++) {
        omp_set_num_threads(threads);
        int used = 0;
#pragma omp parallel
        {
#pragma omp single
            used = omp_get_num_threads();
        }
        run(&other);
        int differ = 0;
        for (int i = 0; i < base.count; i++)
            if (memcmp(base.data[i], other.data[i], base.bytes[i]) != 0) {
                differ++;
                fprintf(stderr, "  %s differs between 1 and %d threads\n", base.name[i], threads);
            }
        printf("  %d threads (team of %d): %d of %d outputs bitwise equal to 1 thread\n", threads,
               used, base.count - differ, base.count);
        CHECK_MSG(differ == 0, "%d outputs differ with %d threads", differ, threads);
        CHECK(used == threads);
        if (check_finite) {
            int finite = 1;
            for (int i = 0; i < other.count; i++)
                finite &= all_finite(other.data[i], (int64_t)(other.bytes[i] / sizeof(float)));
            CHECK_MSG(finite, "NaN or Inf in the determinism outputs");
        }
    }
    omp_set_num_threads(1);
}

#endif
