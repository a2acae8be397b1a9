/* time_cpu_kernels.c: the reference CPU ops against the fast path (oneDNN),
 * op by op, on the shapes of WRN / WRN-pMoE (width 1 at batch 64 and width
 * 10 at batch 16, 32x32 inputs). Not a test (ctest does not run it): the
 * measurement behind the fast path's choices (BENCHMARKS.md).
 *
 *   build/tests/time_cpu_kernels [repeats]
 *
 * Each line: the op, the shape, then the median ms of the reference and of
 * the fast path, runs alternated (ref, fast, ref, ...) so that a machine
 * whose load changes slows both alike. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/backend.h"
#include "backend/cpu_ops.h"
#include "test_util.h"

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec * 1e-6;
}

static int cmp(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp);
    return v[n / 2];
}

enum { MAX_REPEATS = 64 };
typedef enum { CONV_FWD, CONV_BWD, BN_FWD, BN_BWD } op_kind;

static void run_op(pmoe_backend *be, op_kind op, const pmoe_conv_shape *cs, const pmoe_bn_shape *bs,
                   float *a, float *b, float *c, float *d, float *e, float *v) {
    const pmoe_ops *o = be->ops;
    switch (op) {
    case CONV_FWD: o->conv2d_forward(be, cs, a, b, NULL, c); break;
    case CONV_BWD: o->conv2d_backward(be, cs, a, b, c, d, e, NULL); break;
    case BN_FWD:
        o->batchnorm_forward_train(be, bs, a, v, v, b, e, e + 4096, d, d + 4096, 0.1f);
        break;
    case BN_BWD: o->batchnorm_backward(be, bs, a, v, v, v, b, c, e, e + 4096); break;
    }
}

static void time_op(pmoe_backend *ref, pmoe_backend *fast, const char *name, op_kind op,
                    pmoe_conv_shape cs, int repeats) {
    const int P = pmoe_conv_out_height(&cs), Q = pmoe_conv_out_width(&cs);
    const int64_t xn = cs.batch * cs.in_channels * cs.height * cs.width;
    const int64_t yn = cs.batch * cs.out_channels * P * Q;
    const int64_t wn = (int64_t)cs.out_channels * cs.in_channels * cs.kernel_h * cs.kernel_w;
    const pmoe_bn_shape bs = {cs.batch, cs.in_channels, (int64_t)cs.height * cs.width, 1e-5f};
    float *x = frand(xn, 1, -1, 1), *w = frand(wn, 2, -1, 1), *y = frand(yn, 3, -1, 1);
    float *dx = frand(xn, 4, -1, 1), *dw = frand(wn > 8192 ? wn : 8192, 5, 0.5f, 1);
    float *x2 = frand(xn, 6, -1, 1), *vec = frand(4096, 7, 0.5f, 1.5f);
    float *run = frand(8192, 8, 0.5f, 1.5f);
    double t_ref[MAX_REPEATS], t_fast[MAX_REPEATS];
    for (int r = -1; r < repeats; r++) /* r = -1: a warm-up of each */
        for (int which = 0; which < 2; which++) {
            pmoe_backend *be = which ? fast : ref;
            const double t0 = now_ms();
            if (op == CONV_FWD || op == CONV_BWD) run_op(be, op, &cs, NULL, x, w, y, dx, dw, NULL);
            else if (op == BN_FWD) run_op(be, op, NULL, &bs, x, x2, NULL, run, dw, vec);
            else run_op(be, op, NULL, &bs, x, x2, dx, NULL, dw, vec);
            const double t = now_ms() - t0;
            if (r >= 0) (which ? t_fast : t_ref)[r] = t;
        }
    const double a = median(t_ref, repeats), b = median(t_fast, repeats);
    printf("%-10s B %3lld %4d -> %4d %2dx%-2d k%d s%d   ref %8.3f ms   fast %8.3f ms   %5.2fx\n",
           name, (long long)cs.batch, cs.in_channels, cs.out_channels, cs.height, cs.width,
           cs.kernel_h, cs.stride, a, b, a / b);
}

int main(int argc, char **argv) {
    const int repeats = argc > 1 ? atoi(argv[1]) : 9;
    if (repeats < 1 || repeats > MAX_REPEATS) return 2;
    pmoe_error err;
    pmoe_backend *ref = NULL, *fast = NULL;
    if (pmoe_cpu_backend_create(0, &ref, &err) || pmoe_cpu_backend_create(0, &fast, &err) ||
        pmoe_backend_set_cpu_kernels(fast, PMOE_CPU_KERNELS_FAST, &err)) {
        fprintf(stderr, "time_cpu_kernels: %s\n", err.message);
        return 77;
    }
    const struct {
        int64_t batch;
        int width;
    } cases[] = {{64, 1}, {16, 10}};
    for (int i = 0; i < 2; i++) {
        const int64_t B = cases[i].batch;
        const int w = cases[i].width;
        printf("width %d, batch %lld (32x32 inputs)\n", w, (long long)B);
        const pmoe_conv_shape convs[] = {
            {B, 3, 32, 32, 16, 3, 3, 1, 1},          {B, 16, 32, 32, 16 * w, 3, 3, 1, 1},
            {B, 16 * w, 32, 32, 16 * w, 3, 3, 1, 1}, {B, 16 * w, 32, 32, 32 * w, 3, 3, 2, 1},
            {B, 32 * w, 16, 16, 32 * w, 3, 3, 1, 1}, {B, 16 * w, 32, 32, 32 * w, 1, 1, 2, 0},
            {B, 32 * w, 16, 16, 64 * w, 3, 3, 2, 1}, {B, 64 * w, 8, 8, 64 * w, 3, 3, 1, 1}};
        for (size_t j = 0; j < sizeof convs / sizeof convs[0]; j++) {
            time_op(ref, fast, "conv fwd", CONV_FWD, convs[j], repeats);
            time_op(ref, fast, "conv bwd", CONV_BWD, convs[j], repeats);
        }
        const pmoe_conv_shape maps[] = {{B, 16 * w, 32, 32, 1, 1, 1, 1, 0},
                                        {B, 32 * w, 16, 16, 1, 1, 1, 1, 0},
                                        {B, 64 * w, 8, 8, 1, 1, 1, 1, 0}};
        for (size_t j = 0; j < sizeof maps / sizeof maps[0]; j++) {
            time_op(ref, fast, "bn fwd", BN_FWD, maps[j], repeats);
            time_op(ref, fast, "bn bwd", BN_BWD, maps[j], repeats);
        }
        free_all();
    }
    pmoe_backend_destroy(ref);
    pmoe_backend_destroy(fast);
    return 0;
}
