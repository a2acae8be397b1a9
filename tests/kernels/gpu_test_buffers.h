/* gpu_test_buffers.h: the device set-up and the buffers the per-op parity
 * tests (test_cuda_ops.c, test_cuda_layers.c) share: the backend under test
 * and the run's seed, host and device buffers released together, and a
 * synchronisation that ends the run on a failed backend.
 *
 * Host float buffers start as NaN, int buffers as -1; device outputs start
 * poisoned (gpu_test_util.h). Random inputs derive from the run's seed and a
 * per-input id, so PMOE_TEST_SEED repeats a run. One test file includes this
 * header: it defines the file's state. */
#ifndef PMOE_GPU_TEST_BUFFERS_H
#define PMOE_GPU_TEST_BUFFERS_H

#include "gpu_test_util.h"

static pmoe_backend *gpu; /* the CUDA backend under test */
static uint64_t seed0;    /* this run's seed */

/* The CUDA backend on device 0 (exit 77 without one) and the run's seed,
 * both printed. */
static inline void gpu_test_begin(const char *test) {
    gpu = gpu_or_skip(test);
    seed0 = test_seed();
}

enum { MAX_ITEMS = 512 };
static struct {
    void *ptr;
    size_t bytes;
    int device;
} items[MAX_ITEMS];
static int nitems;

static inline void *keep(void *p, size_t bytes, int device) {
    if (nitems == MAX_ITEMS) {
        fprintf(stderr, "gpu test: too many buffers\n");
        exit(2);
    }
    items[nitems].ptr = p;
    items[nitems].bytes = bytes;
    items[nitems++].device = device;
    return p;
}
static inline void release_all(void) {
    for (int i = 0; i < nitems; i++) {
        if (items[i].device) device_free(gpu, items[i].ptr, items[i].bytes);
        else free(items[i].ptr);
    }
    nitems = 0;
}

/* Device buffers: a copy of host data, or poisoned; and a device buffer
 * copied back into host memory. */
static inline void *dev_in(const void *host, size_t bytes) {
    return keep(to_device(gpu, host, bytes), bytes, 1);
}
static inline void *dev_out(size_t bytes) { return keep(poisoned(gpu, bytes), bytes, 1); }
static inline void *back(const void *dev, size_t bytes) {
    return keep(from_device(gpu, dev, bytes), bytes, 0);
}

/* Host buffers of n floats (NaN) or ints (-1), random floats in [lo, hi)
 * for input `id`, and a copy of n floats. */
static inline float *hbuf(int64_t n) {
    float *p = malloc((size_t)(n > 0 ? n : 1) * 4);
    for (int64_t i = 0; i < n; i++) p[i] = NAN;
    return keep(p, 0, 0);
}
static inline int32_t *hibuf(int64_t n) {
    int32_t *p = malloc((size_t)(n > 0 ? n : 1) * 4);
    for (int64_t i = 0; i < n; i++) p[i] = -1;
    return keep(p, 0, 0);
}
static inline float *hrand(int64_t n, uint64_t id, float lo, float hi) {
    float *p = hbuf(n);
    fill_uniform(p, n, seed0 * 1000003u + id, lo, hi);
    return p;
}
static inline float *copy_of(const float *src, int64_t n) {
    float *p = hbuf(n);
    memcpy(p, src, (size_t)n * 4);
    return p;
}

/* Waits for the device; a failed backend stays failed, so the run ends. */
static inline void sync_or_fail(const char *what) {
    pmoe_error err = {PMOE_OK, ""};
    pmoe_status s = gpu->synchronize(gpu, &err);
    CHECK_MSG(s == PMOE_OK, "%s: %s", what, err.message);
    if (s) exit(1);
}

#endif
