/* test_standin_backend.c: the CUDA backend's own failure paths and
 * controls, driven directly on the stand-in (label standin): what the
 * training runs seldom reach. Device selection and counting; a backend that
 * cannot start (no such device, the stream, cuBLAS); allocation failures
 * other than out of memory; a failed context refuses later work and every
 * copy and synchronize reports the first failure; the profiler and the
 * stream handles; the device clock's limits and failures; the cuDNN wrapper
 * on a CPU backend, with a bad shape, and choosing among non-deterministic
 * algorithms. Each case takes a fresh backend (and a fresh stand-in device
 * after a sticky fault). */
#include <cuda_runtime_api.h>
#include <stdlib.h>
#include <string.h>

#include "core/phase_timer.h"
#include "cuda/cuda_backend.h"
#include "cuda/cuda_conv.h"
#include "standin.h"
#include "test_util.h"

static pmoe_backend *start(void) {
    pmoe_backend *be = NULL;
    pmoe_error err = {PMOE_OK, ""};
    CHECK_MSG(pmoe_cuda_backend_create(0, &be, &err) == PMOE_OK, "%s", err.message);
    return be;
}

/* A fresh device: the sticky fault of the last case cleared. */
static void reset_device(void) {
    standin_fault_clear();
    cudaDeviceReset();
}

static void expect_create_failure(const char *fault, const char *says) {
    pmoe_backend *be = NULL;
    pmoe_error err = {PMOE_OK, ""};
    standin_fault_set(fault, 1, 0);
    CHECK_MSG(pmoe_cuda_backend_create(0, &be, &err) != PMOE_OK && strstr(err.message, says),
              "%s: '%s'", fault, err.message);
    printf("  %s fails: %s\n", fault, err.message);
    reset_device();
}

static void test_devices(void) {
    printf("devices\n");
    char why[200] = "";
    CHECK(pmoe_cuda_built() == 1);
    CHECK(pmoe_cuda_device_count(why, sizeof why) == 1);
    setenv("PMOE_STANDIN_DEVICES", "0", 1);
    CHECK(pmoe_cuda_device_count(why, sizeof why) == 0 && strstr(why, "no CUDA-capable device"));
    pmoe_backend *be = NULL;
    pmoe_error err = {PMOE_OK, ""};
    CHECK(pmoe_cuda_backend_create(0, &be, &err) == PMOE_ERR_UNSUPPORTED);
    CHECK(pmoe_backend_create("auto", 1, &be, &err) == PMOE_OK && !pmoe_backend_is_cuda(be));
    CHECK(pmoe_cuda_backend_stream(be) == NULL);
    pmoe_backend_destroy(be);
    setenv("PMOE_STANDIN_DEVICES", "2", 1);
    CHECK(pmoe_cuda_backend_create(2, &be, &err) == PMOE_ERR_UNSUPPORTED &&
          strstr(err.message, "cuda:0 to cuda:1"));
    CHECK(pmoe_backend_create("cuda:1", 1, &be, &err) == PMOE_OK && pmoe_backend_is_cuda(be));
    CHECK(strncmp(be->name, "cuda:1 (", 8) == 0);
    pmoe_backend_destroy(be);
    unsetenv("PMOE_STANDIN_DEVICES");
    expect_create_failure("cudaSetDevice", "cannot start");
    expect_create_failure("cudaStreamCreateWithFlags", "cannot start");
    expect_create_failure("cublasCreate", "cuBLAS does not start");
    expect_create_failure("cublasSetStream", "cuBLAS does not start");
}

static void test_failed_context(void) {
    printf("a failed context\n");
    pmoe_backend *be = start();
    pmoe_error err = {PMOE_OK, ""};
    void *p = NULL, *q = NULL;
    CHECK(be->alloc(be, 0, &p, &err) == PMOE_OK && p == NULL);
    CHECK(be->alloc(be, 64, &p, &err) == PMOE_OK && standin_device_range(p, 64));
    CHECK(pmoe_cuda_backend_stream(be) != NULL);
    be->profiler(be, 1);
    be->profiler(be, 0);
    CHECK(be->synchronize(be, &err) == PMOE_OK);
    standin_fault_set("cudaProfilerStart", 1, 0);
    be->profiler(be, 1); /* recorded, reported at the next synchronize */
    CHECK(be->synchronize(be, &err) == PMOE_ERR_INTERNAL && strstr(err.message, "cudaProfilerStart"));
    float host[16] = {0};
    CHECK(be->copy_in(be, p, host, sizeof host, &err) == PMOE_ERR_INTERNAL);
    CHECK(be->copy_out(be, host, p, sizeof host, &err) == PMOE_ERR_INTERNAL);
    be->fill(be, p, 1.0f, 16); /* refused quietly: the context has failed */
    be->release(be, p, 64);
    pmoe_backend_destroy(be);

    /* a kernel that faults: the launch succeeds, the copy out reports it */
    be = start();
    CHECK(be->alloc(be, 64, &p, &err) == PMOE_OK);
    standin_fault_set("kernel", 1, 0);
    be->fill(be, p, 1.0f, 16);
    CHECK(be->copy_out(be, host, p, sizeof host, &err) == PMOE_ERR_INTERNAL &&
          strstr(err.message, "unspecified launch failure"));
    printf("  a faulting kernel: %s\n", err.message);
    /* the device is now broken: an allocation reports the runtime's error */
    CHECK(be->alloc(be, 64, &q, &err) == PMOE_ERR_INTERNAL && strstr(err.message, "cudaMalloc"));
    be->release(be, p, 64);
    pmoe_backend_destroy(be);
    reset_device();
}

static void test_clock(void) {
    printf("the device clock\n");
    pmoe_backend *be = start();
    const pmoe_device_clock *clock = be->clock;
    CHECK(clock && clock->capacity > 2);
    const int a = clock->mark(clock->ctx), b = clock->mark(clock->ctx);
    CHECK(a == 0 && b == 1);
    CHECK(clock->seconds(clock->ctx, a, b) >= 0.0);
    CHECK(clock->seconds(clock->ctx, a, 7) == 0.0 && clock->seconds(clock->ctx, -1, b) == 0.0);
    while (clock->mark(clock->ctx) >= 0) {
    }
    clock->reset(clock->ctx);
    CHECK(clock->mark(clock->ctx) == 0);
    standin_fault_set("cudaEventRecord", 1, 0);
    CHECK(clock->mark(clock->ctx) == -1);
    pmoe_backend_destroy(be);
    be = start();
    standin_fault_set("cudaEventCreate", 1, 0);
    CHECK(be->clock->mark(be->clock->ctx) == -1);
    pmoe_backend_destroy(be);
    reset_device();
}

static void test_conv(void) {
    printf("the cuDNN wrapper\n");
    pmoe_error err = {PMOE_OK, ""};
    pmoe_backend *cpu = NULL;
    CHECK(pmoe_backend_create("cpu", 1, &cpu, &err) == PMOE_OK);
    const pmoe_conv_shape s = {.batch = 2, .in_channels = 3, .height = 6, .width = 6,
                               .out_channels = 4, .kernel_h = 3, .kernel_w = 3, .stride = 1,
                               .pad = 1};
    CHECK(pmoe_cuda_conv_built() == 1);
    CHECK(pmoe_cuda_conv_forward(cpu, &s, NULL, NULL, NULL, &err) == PMOE_ERR_UNSUPPORTED);
    pmoe_backend_destroy(cpu);
    pmoe_backend *be = start();
    void *x = NULL, *w = NULL, *y = NULL;
    CHECK(be->alloc(be, 2 * 3 * 36 * 4, &x, &err) == 0 && be->alloc(be, 4 * 27 * 4, &w, &err) == 0 &&
          be->alloc(be, 2 * 4 * 36 * 4, &y, &err) == 0);
    be->fill(be, x, 0.5f, 2 * 3 * 36);
    be->fill(be, w, 0.25f, 4 * 27);
    pmoe_conv_shape bad = s;
    bad.stride = 0;
    CHECK(pmoe_cuda_conv_forward(be, &bad, x, w, y, &err) == PMOE_ERR_UNSUPPORTED);
    CHECK(pmoe_cuda_conv_set_deterministic(be, 0, &err) == PMOE_OK);
    CHECK(pmoe_cuda_conv_backward_data(be, &s, y, w, x, &err) == PMOE_OK);
    CHECK(pmoe_cuda_conv_backward_filter(be, &s, x, y, w, &err) == PMOE_OK);
    CHECK(be->synchronize(be, &err) == PMOE_OK);
    /* the heuristics themselves failing */
    pmoe_conv_shape other = s;
    other.out_channels = 5;
    standin_fault_set("cudnnGetConvolutionForwardAlgorithm_v7", 1, 0);
    CHECK(pmoe_cuda_conv_forward(be, &other, x, w, y, &err) != PMOE_OK &&
          strstr(err.message, "cudnnGetConvolutionForwardAlgorithm_v7"));
    be->release(be, x, 0), be->release(be, w, 0), be->release(be, y, 0);
    pmoe_backend_destroy(be);
    reset_device();
}

int main(void) {
    test_devices();
    test_failed_context();
    test_clock();
    test_conv();
    return test_finish("test_standin_backend");
}
