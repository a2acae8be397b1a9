/* cuda_stub.c: the CUDA entry points of a build without nvcc.
 *
 * Linked instead of the CUDA sources, so backend.c and every caller link the
 * same symbols in every build (no #ifdef outside CMake): no device ever
 * answers, and asking for one fails with a message that says why. */
#include <stdio.h>

#include "cuda/cuda_backend.h"
#include "cuda/cuda_conv.h"

#define NOT_BUILT "this build has no CUDA backend (nvcc was not found at configure time)"

int pmoe_cuda_built(void) { return 0; }

int pmoe_cuda_device_count(char *why, size_t why_size) {
    if (why) snprintf(why, why_size, "%s", NOT_BUILT);
    return 0;
}

pmoe_status pmoe_cuda_backend_create(int device, pmoe_backend **out, pmoe_error *err) {
    return pmoe_fail(err, PMOE_ERR_UNSUPPORTED, NOT_BUILT);
}

void *pmoe_cuda_backend_stream(pmoe_backend *be) { return NULL; }

int pmoe_backend_is_cuda(const pmoe_backend *be) { return 0; }

int pmoe_cuda_conv_built(void) { return 0; }

pmoe_status pmoe_cuda_conv_forward(pmoe_backend *be, const pmoe_conv_shape *s, const float *x,
                                   const float *w, float *y, pmoe_error *err) {
    return pmoe_fail(err, PMOE_ERR_UNSUPPORTED, NOT_BUILT);
}

pmoe_status pmoe_cuda_conv_backward_data(pmoe_backend *be, const pmoe_conv_shape *s,
                                         const float *dy, const float *w, float *dx,
                                         pmoe_error *err) {
    return pmoe_fail(err, PMOE_ERR_UNSUPPORTED, NOT_BUILT);
}

pmoe_status pmoe_cuda_conv_backward_data_accumulate(pmoe_backend *be, const pmoe_conv_shape *s,
                                                    const float *dy, const float *w, float *dx,
                                                    pmoe_error *err) {
    return pmoe_fail(err, PMOE_ERR_UNSUPPORTED, NOT_BUILT);
}

pmoe_status pmoe_cuda_conv_backward_filter(pmoe_backend *be, const pmoe_conv_shape *s,
                                           const float *x, const float *dy, float *dw,
                                           pmoe_error *err) {
    return pmoe_fail(err, PMOE_ERR_UNSUPPORTED, NOT_BUILT);
}

pmoe_status pmoe_cuda_conv_set_deterministic(pmoe_backend *be, int deterministic, pmoe_error *err) {
    return pmoe_fail(err, PMOE_ERR_UNSUPPORTED, NOT_BUILT);
}

pmoe_status pmoe_cuda_conv_algorithm(pmoe_backend *be, const pmoe_conv_shape *s, int direction,
                                     const char **name, pmoe_conv_algo_class *cls,
                                     pmoe_error *err) {
    return pmoe_fail(err, PMOE_ERR_UNSUPPORTED, NOT_BUILT);
}
