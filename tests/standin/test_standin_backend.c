/* test_standin_backend.c: the CUDA backend's own failure paths and
 * controls, driven directly on the stand-in (label standin): what the
 * training runs seldom reach. Device selection and counting; a backend that
 * cannot start (no such device, the stream, cuBLAS); allocation failures
 * other than out of memory; a failed context refuses later work and every
 * copy and synchronize reports the first failure; the profiler and the
 * stream handles; the device clock's limits and failures; the cuDNN wrapper
 * on a CPU backend, with a bad shape, and choosing among non-deterministic
 * algorithms; the driver missing, too old or failing, each reported so;
 * a launch's own failure told from an earlier sticky fault; every
 * precision's GEMM and convolution against the CPU backend's; a cuDNN
 * plan's workspace allocated once and its choice logged once. Each case
 * takes a fresh backend (and a fresh stand-in device
 * after a sticky fault). */
#include <cuda_runtime_api.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
    CHECK(be->synchronize(be, &err) == PMOE_ERR_INTERNAL &&
          strstr(err.message, "cudaProfilerStart"));
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
    while (clock->mark(clock->ctx) >= 0) {}
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
    const pmoe_conv_shape s = {.batch = 2,
                               .in_channels = 3,
                               .height = 6,
                               .width = 6,
                               .out_channels = 4,
                               .kernel_h = 3,
                               .kernel_w = 3,
                               .stride = 1,
                               .pad = 1};
    CHECK(pmoe_cuda_conv_built() == 1);
    CHECK(pmoe_cuda_conv_forward(cpu, &s, NULL, NULL, NULL, &err) == PMOE_ERR_UNSUPPORTED);
    pmoe_backend_destroy(cpu);
    pmoe_backend *be = start();
    void *x = NULL, *w = NULL, *y = NULL;
    CHECK(be->alloc(be, 2 * 3 * 36 * 4, &x, &err) == 0 &&
          be->alloc(be, 4 * 27 * 4, &w, &err) == 0 && be->alloc(be, 2 * 4 * 36 * 4, &y, &err) == 0);
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

/* The driver missing, too old or failing: each reported in its own words,
 * auto falls back to the CPU saying why, cuda refuses with the same. */
static void test_driver(void) {
    printf("device detection that says why\n");
    static const struct {
        const char *fault, *says;
    } cases[] = {
        {"no_driver", "no NVIDIA driver is installed (cudaDriverGetVersion gives 0; "
                      "cudaGetDeviceCount: CUDA driver version is insufficient"},
        {"old_driver", "the NVIDIA driver is too old: it supports CUDA 12.2, this build needs "
                       "CUDA 13.0 (cudaGetDeviceCount: CUDA driver version is insufficient"},
        {"failing_driver", "the NVIDIA driver (CUDA 13.0) fails: cudaGetDeviceCount: "
                           "cudaErrorInitializationError (initialization error)"},
        {"cudaGetDeviceCount", "no CUDA device: the NVIDIA driver (CUDA 13.0) finds no GPU "
                               "(no CUDA-capable device is detected)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char why[300] = "";
        standin_fault_set(cases[i].fault, 1, 1);
        CHECK_MSG(pmoe_cuda_device_count(why, sizeof why) == 0 && strstr(why, cases[i].says),
                  "%s: '%s'", cases[i].fault, why);
        pmoe_backend *be = NULL;
        pmoe_error err = {PMOE_OK, ""};
        CHECK(pmoe_backend_create("auto", 1, &be, &err) == PMOE_OK && !pmoe_backend_is_cuda(be));
        CHECK_MSG(be && strstr(be->chosen_because, "train.device = auto found no GPU: ") &&
                      strstr(be->chosen_because, cases[i].says),
                  "%s: auto: '%s'", cases[i].fault, be ? be->chosen_because : "");
        if (be) printf("  %s: auto runs on the CPU: %s\n", cases[i].fault, be->chosen_because);
        pmoe_backend_destroy(be);
        CHECK_MSG(pmoe_backend_create("cuda", 1, &be, &err) == PMOE_ERR_UNSUPPORTED &&
                      strstr(err.message, cases[i].says),
                  "%s: cuda: '%s'", cases[i].fault, err.message);
        reset_device();
    }
    pmoe_backend *be = start(); /* a working driver: nothing to say */
    CHECK(be->chosen_because[0] == '\0');
    pmoe_backend_destroy(be);
}

/* A launch that fails is named; a sticky fault of earlier work is not
 * blamed on the launch that happens to see it. */
static void test_launch_status(void) {
    printf("launch status\n");
    pmoe_error err = {PMOE_OK, ""};
    void *p = NULL;
    pmoe_backend *be = start();
    CHECK(be->alloc(be, 64, &p, &err) == PMOE_OK);
    standin_fault_set("launch", 1, 0);
    be->fill(be, p, 1.0f, 16);
    CHECK_MSG(be->synchronize(be, &err) == PMOE_ERR_INTERNAL &&
                  strstr(err.message, "launching fill_kernel (pmoe_k_fill) failed: "
                                      "cudaErrorLaunchOutOfResources"),
              "'%s'", err.message);
    printf("  a refused launch: %s\n", err.message);
    be->release(be, p, 64);
    pmoe_backend_destroy(be);
    reset_device();
    be = start();
    CHECK(be->alloc(be, 64, &p, &err) == PMOE_OK);
    standin_set_sticky(719 /* cudaErrorLaunchFailure */, "an earlier kernel faulted");
    be->fill(be, p, 1.0f, 16);
    CHECK_MSG(be->synchronize(be, &err) == PMOE_ERR_INTERNAL &&
                  strstr(err.message, "the device had already failed when pmoe_k_fill "
                                      "launched fill_kernel: cudaErrorLaunchFailure") &&
                  !strstr(err.message, "launching"),
              "'%s'", err.message);
    printf("  a sticky fault before a launch: %s\n", err.message);
    be->release(be, p, 64);
    pmoe_backend_destroy(be);
    reset_device();
}

/* One op on the stand-in against the CPU backend at the same precision:
 * both round the same inputs, so only float32 summation order parts them. */
static float *on_device(pmoe_backend *be, const float *host, int64_t n) {
    void *p = NULL;
    pmoe_error err = {PMOE_OK, ""};
    CHECK(be->alloc(be, (size_t)n * 4, &p, &err) == PMOE_OK);
    CHECK(be->copy_in(be, p, host, (size_t)n * 4, &err) == PMOE_OK);
    return p;
}
static float *back(pmoe_backend *be, const float *dev, int64_t n) {
    float *host = fbuf(n);
    pmoe_error err = {PMOE_OK, ""};
    CHECK_MSG(be->copy_out(be, host, dev, (size_t)n * 4, &err) == PMOE_OK, "%s", err.message);
    return host;
}

static void test_precision_parity(void) {
    printf("train.precision: the stand-in against the CPU backend\n");
    const pmoe_precision modes[] = {PMOE_PRECISION_FP32, PMOE_PRECISION_TF32, PMOE_PRECISION_BF16};
    for (int i = 0; i < 3; i++) {
        pmoe_error err = {PMOE_OK, ""};
        pmoe_backend *cpu = NULL, *be = start();
        CHECK(pmoe_cpu_backend_create(1, &cpu, &err) == PMOE_OK);
        CHECK(pmoe_backend_set_precision(cpu, modes[i], &err) == PMOE_OK);
        CHECK(pmoe_backend_set_precision(be, modes[i], &err) == PMOE_OK);
        const char *name = pmoe_precision_name(modes[i]);
        char what[96];
        /* gemm: C (m x n) = A (m x k) B^T, three batch entries */
        const int64_t m = 13, n = 9, k = 77, batch = 3;
        const float *a = frand(batch * m * k, 51, -1, 1), *b = frand(batch * n * k, 52, -1, 1);
        float *want = fbuf(batch * m * n);
        cpu->ops->gemm(cpu, 0, 1, m, n, k, 1.0f, a, k, m * k, b, k, n * k, 0.0f, want, n, m * n,
                       batch);
        float *da = on_device(be, a, batch * m * k), *db = on_device(be, b, batch * n * k);
        float *dc = on_device(be, want, batch * m * n);
        be->ops->gemm(be, 0, 1, m, n, k, 1.0f, da, k, m * k, db, k, n * k, 0.0f, dc, n, m * n,
                      batch);
        snprintf(what, sizeof what, "%s gemm, stand-in vs CPU", name);
        close_scaled(what, back(be, dc, batch * m * n), want, batch * m * n, 1e-6);
        /* the router's GEMM stays float32: the fp32 product on both */
        cpu->ops->gemm_float32(cpu, 0, 1, m, n, k, 1.0f, a, k, m * k, b, k, n * k, 0.0f, want, n,
                               m * n, batch);
        be->ops->gemm_float32(be, 0, 1, m, n, k, 1.0f, da, k, m * k, db, k, n * k, 0.0f, dc, n,
                              m * n, batch);
        snprintf(what, sizeof what, "%s gemm_float32, stand-in vs CPU", name);
        close_scaled(what, back(be, dc, batch * m * n), want, batch * m * n, 1e-6);
        /* convolution, three directions, in the shapes a WRN has */
        static const pmoe_conv_shape shapes[] = {{2, 4, 6, 5, 3, 3, 3, 1, 1},
                                                 {2, 4, 6, 6, 3, 3, 3, 2, 1},
                                                 {2, 4, 6, 5, 3, 1, 1, 1, 0},
                                                 {2, 4, 6, 6, 3, 1, 1, 2, 0}};
        for (int c = 0; c < 4; c++) {
            const pmoe_conv_shape s = shapes[c];
            const int64_t nx = 2 * 4 * 6 * s.width, nw = 3 * 4 * s.kernel_h * s.kernel_w,
                          ny = 2 * 3 * (int64_t)pmoe_conv_out_height(&s) * pmoe_conv_out_width(&s);
            const float *x = frand(nx, 53, -1, 1), *w = frand(nw, 54, -1, 1),
                        *dy = frand(ny, 55, -1, 1);
            const float *dx0 = frand(nx, 56, -1, 1);
            float *y = fbuf(ny), *dx = fcopy(dx0, nx), *dw = fbuf(nw), *dbias = fbuf(3);
            cpu->ops->conv2d_forward(cpu, &s, x, w, NULL, y);
            cpu->ops->conv2d_backward(cpu, &s, x, w, dy, dx, dw, dbias);
            float *dxd = on_device(be, x, nx), *dwd = on_device(be, w, nw),
                  *dyd = on_device(be, dy, ny);
            float *d_y = on_device(be, y, ny), *d_dx = on_device(be, dx0, nx),
                  *d_dw = on_device(be, dw, nw);
            float *d_db = on_device(be, dbias, 3);
            be->ops->conv2d_forward(be, &s, dxd, dwd, NULL, d_y);
            be->ops->conv2d_backward(be, &s, dxd, dwd, dyd, d_dx, d_dw, d_db);
            snprintf(what, sizeof what, "%s conv %dx%d/%d forward, stand-in vs CPU", name,
                     s.kernel_h, s.kernel_w, s.stride);
            close_scaled(what, back(be, d_y, ny), y, ny, 1e-6);
            snprintf(what, sizeof what, "%s conv %dx%d/%d backward data, stand-in vs CPU", name,
                     s.kernel_h, s.kernel_w, s.stride);
            close_scaled(what, back(be, d_dx, nx), dx, nx, 1e-6);
            snprintf(what, sizeof what, "%s conv %dx%d/%d backward filter, stand-in vs CPU", name,
                     s.kernel_h, s.kernel_w, s.stride);
            close_scaled(what, back(be, d_dw, nw), dw, nw, 1e-6);
            snprintf(what, sizeof what, "%s conv bias gradient, stand-in vs CPU", name);
            close_scaled(what, back(be, d_db, 3), dbias, 3, 1e-6);
        }
        pmoe_backend_destroy(be);
        pmoe_backend_destroy(cpu);
        free_all();
        reset_device();
    }
}

/* The workspace of a shape is allocated when its plan is made, once: the
 * calls after it allocate nothing; the choice is logged once per shape
 * (PMOE_CUDNN_LOG); the algorithm in use and its class can be asked. */
static void test_conv_setup(void) {
    printf("cuDNN plans: workspace at setup, the choice logged once per shape\n");
    pmoe_error err = {PMOE_OK, ""};
    pmoe_backend *be = start();
    const pmoe_conv_shape s = {2, 3, 8, 8, 4, 3, 3, 1, 1};
    void *x = NULL, *w = NULL, *y = NULL;
    CHECK(be->alloc(be, 2 * 3 * 64 * 4, &x, &err) == 0 &&
          be->alloc(be, 4 * 27 * 4, &w, &err) == 0 && be->alloc(be, 2 * 4 * 64 * 4, &y, &err) == 0);
    be->fill(be, x, 0.5f, 2 * 3 * 64);
    be->fill(be, w, 0.25f, 4 * 27);
    char path[256];
    make_temp_dir(path, (int)sizeof path - 16);
    strcat(path, "/log.txt");
    fflush(stderr);
    FILE *saved = fdopen(dup(fileno(stderr)), "w");
    CHECK(freopen(path, "w", stderr) != NULL);
    setenv("PMOE_CUDNN_LOG", "1", 1);
    CHECK(pmoe_cuda_conv_forward(be, &s, x, w, y, &err) == PMOE_OK);
    const long mallocs = standin_calls("cudaMalloc");
    for (int i = 0; i < 3; i++) {
        CHECK(pmoe_cuda_conv_forward(be, &s, x, w, y, &err) == PMOE_OK);
        CHECK(pmoe_cuda_conv_backward_data(be, &s, y, w, x, &err) == PMOE_OK);
        CHECK(pmoe_cuda_conv_backward_filter(be, &s, x, y, w, &err) == PMOE_OK);
    }
    CHECK(be->synchronize(be, &err) == PMOE_OK);
    unsetenv("PMOE_CUDNN_LOG");
    fflush(stderr);
    CHECK(dup2(fileno(saved), fileno(stderr)) >= 0);
    fclose(saved);
    CHECK_MSG(standin_calls("cudaMalloc") == mallocs, "%ld allocations after the plan",
              standin_calls("cudaMalloc") - mallocs);
    printf("  nine calls after the first: no allocation\n");
    FILE *log = fopen(path, "r");
    char line[512];
    int lines = 0;
    while (log && fgets(line, sizeof line, log))
        if (strstr(line, "cuDNN conv B=2 C=3 8x8 K=4 3x3 stride 1 pad 1 (fp32): forward ")) {
            lines++;
            printf("  logged: %s", line);
        }
    if (log) fclose(log);
    CHECK_MSG(lines == 1, "%d log lines for one shape", lines);
    const char *name = NULL;
    pmoe_conv_algo_class cls;
    CHECK(pmoe_cuda_conv_algorithm(be, &s, 0, &name, &cls, &err) == PMOE_OK &&
          strcmp(name, "IMPLICIT_PRECOMP_GEMM") == 0 && cls == PMOE_CONV_ALGO_DIRECT);
    CHECK(pmoe_cuda_conv_algorithm(be, &s, 1, &name, &cls, &err) == PMOE_OK &&
          strcmp(name, "FFT") == 0 && cls == PMOE_CONV_ALGO_FFT);
    CHECK(pmoe_cuda_conv_algorithm(be, &s, 3, &name, &cls, &err) != PMOE_OK);
    be->release(be, x, 0), be->release(be, w, 0), be->release(be, y, 0);
    pmoe_backend_destroy(be);
    reset_device();
}

int main(void) {
    test_driver();
    test_launch_status();
    test_precision_parity();
    test_conv_setup();
    test_devices();
    test_failed_context();
    test_clock();
    test_conv();
    return test_finish("test_standin_backend");
}
