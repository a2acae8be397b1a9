/* backend.c: choosing a backend for train.device, the device questions the
 * layers above ask (backend.h), and tensor allocation.
 *
 * "auto" asks at run time whether a CUDA device answers (so one binary
 * serves machines with and without a GPU) and takes cuda:0 if one does, the
 * CPU otherwise, keeping why in be->chosen_because for the run's banner (no
 * driver, a driver too old or failing, no GPU, a build without CUDA). A
 * device that answers but cannot be started is reported rather than hidden
 * behind the CPU. "cuda" and "cuda:N" never fall back: with no such device
 * they fail with the same reason. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "cuda/cuda_backend.h"

/* "N" of "cuda:N": decimal digits only, below 10^6. */
static int parse_device_index(const char *text, int *out) {
    int value = 0, digits = 0;
    for (; *text; text++, digits++) {
        if (*text < '0' || *text > '9' || digits >= 6) return 0;
        value = value * 10 + (*text - '0');
    }
    *out = value;
    return digits > 0;
}

pmoe_status pmoe_backend_create(const char *device, int threads, pmoe_backend **out,
                                pmoe_error *err) {
    if (strcmp(device, "cpu") == 0) return pmoe_cpu_backend_create(threads, out, err);
    if (strcmp(device, "auto") == 0) {
        char why[200] = "";
        if (pmoe_cuda_device_count(why, sizeof why) > 0) {
            pmoe_error why = {PMOE_OK, ""};
            pmoe_status s = pmoe_cuda_backend_create(0, out, &why);
            if (s)
                return pmoe_fail(err, s,
                                 "train.device = auto: a CUDA device answers but does not start "
                                 "(%s); set train.device = cpu to run on the CPU",
                                 why.message);
            return PMOE_OK;
        }
        pmoe_status s = pmoe_cpu_backend_create(threads, out, err);
        if (!s)
            snprintf((*out)->chosen_because, sizeof(*out)->chosen_because,
                     "train.device = auto found no GPU: %s", why);
        return s;
    }
    int index = 0;
    if (strcmp(device, "cuda") != 0 &&
        (strncmp(device, "cuda:", 5) != 0 || !parse_device_index(device + 5, &index)))
        return pmoe_fail(err, PMOE_ERR_CONFIG,
                         "train.device: '%s' is not one of auto | cpu | cuda | cuda:N", device);
    pmoe_error why = {PMOE_OK, ""};
    pmoe_status s = pmoe_cuda_backend_create(index, out, &why);
    if (s) return pmoe_fail(err, s, "train.device = %s: %s; use cpu or auto", device, why.message);
    return PMOE_OK;
}

const char *pmoe_precision_name(pmoe_precision precision) {
    return precision == PMOE_PRECISION_TF32   ? "tf32"
           : precision == PMOE_PRECISION_BF16 ? "bf16"
                                              : "fp32";
}

pmoe_status pmoe_backend_set_precision(pmoe_backend *be, pmoe_precision precision,
                                       pmoe_error *err) {
    if (precision != PMOE_PRECISION_FP32 && precision != PMOE_PRECISION_TF32 &&
        precision != PMOE_PRECISION_BF16)
        return pmoe_fail(err, PMOE_ERR_CONFIG, "train.precision: unknown value %d", (int)precision);
    if (be->set_precision) return be->set_precision(be, (int)precision, err);
    if (precision == PMOE_PRECISION_FP32) return PMOE_OK;
    return pmoe_fail(err, PMOE_ERR_UNSUPPORTED,
                     "train.precision = %s: the %s backend runs fp32 only",
                     pmoe_precision_name(precision), be->name);
}

void pmoe_backend_destroy(pmoe_backend *be) {
    if (be) be->destroy(be);
}

int pmoe_backend_gpu_count(void) { return pmoe_cuda_device_count(NULL, 0); }

void *pmoe_backend_stream(pmoe_backend *be) { return pmoe_cuda_backend_stream(be); }

static void wait_for_backend(void *ctx) {
    pmoe_backend *be = ctx;
    be->synchronize(be, NULL); /* a failure is reported by the next checked call */
}

void pmoe_backend_time_phases(pmoe_backend *be, pmoe_phase_timer *timer) {
    timer->clock = be->clock; /* the device's events, where it has them */
    if (be->asynchronous && !be->clock) {
        timer->wait = wait_for_backend;
        timer->wait_ctx = be;
    }
    pmoe_timer_reset(timer);
}

pmoe_status pmoe_tensor_alloc(pmoe_backend *be, pmoe_tensor *t, int ndim, const int64_t *shape,
                              pmoe_error *err) {
    memset(t, 0, sizeof *t);
    if (ndim < 1 || ndim > PMOE_MAX_DIMS)
        return pmoe_fail(err, PMOE_ERR_INTERNAL, "tensor with %d dimensions", ndim);
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    void *p = NULL;
    pmoe_status s = be->alloc(be, (size_t)pmoe_tensor_numel(t) * sizeof(float), &p, err);
    t->data = p;
    return s;
}

/* The accounting host buffers are weighed in (backend.h). */
static pmoe_mem_stats *host_stats(pmoe_backend *be) {
    return be->host_memory ? &be->mem : &be->host_mem;
}

pmoe_status pmoe_backend_host_alloc(pmoe_backend *be, size_t bytes, const char *what, void **out,
                                    pmoe_error *err) {
    *out = NULL;
    pmoe_mem_stats *m = host_stats(be);
    pmoe_status s = pmoe_mem_check_for(m, bytes, what, err);
    if (s) return s;
    *out = malloc(bytes ? bytes : 1);
    if (!*out)
        return pmoe_fail(err, PMOE_ERR_OOM, "cannot allocate %zu bytes of host memory for %s",
                         bytes, what);
    m->held_bytes += (int64_t)bytes;
    return PMOE_OK;
}

void pmoe_backend_host_free(pmoe_backend *be, void *ptr, size_t bytes) {
    if (!ptr) return;
    free(ptr);
    host_stats(be)->held_bytes -= (int64_t)bytes;
}

void pmoe_tensor_release(pmoe_backend *be, pmoe_tensor *t) {
    if (t->data) be->release(be, t->data, (size_t)pmoe_tensor_numel(t) * sizeof(float));
    t->data = NULL;
}
