/* gpu_test_util.h: what the GPU tests share: skipping without a device,
 * moving buffers on and off a backend, poisoning outputs.
 *
 * A GPU test with no device prints why and exits 77, which ctest reports as
 * skipped: on a machine without a GPU these tests must never say "passed".
 * Inputs are fresh random numbers on every run (the seed is printed, and
 * PMOE_TEST_SEED repeats a run); outputs start as NaN (ints as -1) so an
 * element an op fails to write is caught. */
#ifndef PMOE_GPU_TEST_UTIL_H
#define PMOE_GPU_TEST_UTIL_H

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/backend.h"
#include "cuda/cuda_backend.h"
#include "test_util.h"

/* The CUDA backend on device 0, or exit(77) when none answers. */
static inline pmoe_backend *gpu_or_skip(const char *test) {
    char why[256] = "";
    if (pmoe_cuda_device_count(why, sizeof why) == 0) {
        printf("%s: skipped: %s\n", test, why);
        exit(77);
    }
    pmoe_backend *be = NULL;
    pmoe_error err = {PMOE_OK, ""};
    if (pmoe_cuda_backend_create(0, &be, &err)) {
        fprintf(stderr, "%s: %s\n", test, err.message);
        exit(1);
    }
    printf("%s on %s\n", test, be->name);
    return be;
}

static inline uint64_t test_seed(void) {
    const char *s = getenv("PMOE_TEST_SEED");
    uint64_t seed = s && *s ? strtoull(s, NULL, 10) : (uint64_t)time(NULL);
    printf("seed %llu (PMOE_TEST_SEED=%llu repeats this run)\n", (unsigned long long)seed,
           (unsigned long long)seed);
    return seed;
}

static inline void gpu_die(pmoe_status s, const pmoe_error *err) {
    if (!s) return;
    fprintf(stderr, "FAIL: %s\n", err->message);
    exit(1);
}

/* A device copy of n floats (or ints) of host data. */
static inline void *to_device(pmoe_backend *be, const void *host, size_t bytes) {
    void *d = NULL;
    pmoe_error err = {PMOE_OK, ""};
    gpu_die(be->alloc(be, bytes ? bytes : 4, &d, &err), &err);
    if (bytes) gpu_die(be->copy_in(be, d, host, bytes, &err), &err);
    return d;
}

/* A device buffer of bytes filled with 0xff bytes: NaN as floats, -1 as ints. */
static inline void *poisoned(pmoe_backend *be, size_t bytes) {
    unsigned char *host = malloc(bytes ? bytes : 4);
    memset(host, 0xff, bytes ? bytes : 4);
    void *d = to_device(be, host, bytes);
    free(host);
    return d;
}

/* Copies a device buffer back into fresh host memory (caller frees). */
static inline void *from_device(pmoe_backend *be, const void *dev, size_t bytes) {
    void *host = malloc(bytes ? bytes : 4);
    pmoe_error err = {PMOE_OK, ""};
    gpu_die(be->copy_out(be, host, dev, bytes, &err), &err);
    return host;
}

static inline void device_free(pmoe_backend *be, void *dev, size_t bytes) {
    be->release(be, dev, bytes ? bytes : 4);
}

#endif
