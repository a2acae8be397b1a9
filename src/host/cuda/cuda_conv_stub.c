/* cuda_conv_stub.c: the convolution wrapper of a CUDA build without cuDNN.
 *
 * Linked instead of cuda_conv.c when configure found no cuDNN, so callers
 * link the same symbols in every build and learn at run time, with a
 * message, that convolutions need cuDNN. */
#include "cuda/cuda_conv.h"
#include "cuda/cuda_internal.h"

#define NO_CUDNN(err)                                                                              \
    pmoe_fail((err), PMOE_ERR_UNSUPPORTED,                                                         \
              "this build has no cuDNN (set CUDNN_ROOT at configure time)")

int pmoe_cuda_conv_built(void) { return 0; }

void cuda_conv_release(cuda_context *c) { (void)c; }

pmoe_status pmoe_cuda_conv_forward(pmoe_backend *be, const pmoe_conv_shape *s, const float *x,
                                   const float *w, float *y, pmoe_error *err) {
    return NO_CUDNN(err);
}

pmoe_status pmoe_cuda_conv_backward_data(pmoe_backend *be, const pmoe_conv_shape *s,
                                         const float *dy, const float *w, float *dx,
                                         pmoe_error *err) {
    return NO_CUDNN(err);
}

pmoe_status pmoe_cuda_conv_backward_data_accumulate(pmoe_backend *be, const pmoe_conv_shape *s,
                                                    const float *dy, const float *w, float *dx,
                                                    pmoe_error *err) {
    return NO_CUDNN(err);
}

pmoe_status pmoe_cuda_conv_backward_filter(pmoe_backend *be, const pmoe_conv_shape *s,
                                           const float *x, const float *dy, float *dw,
                                           pmoe_error *err) {
    return NO_CUDNN(err);
}

pmoe_status pmoe_cuda_conv_set_deterministic(pmoe_backend *be, int deterministic, pmoe_error *err) {
    return NO_CUDNN(err);
}

pmoe_status pmoe_cuda_conv_algorithm(pmoe_backend *be, const pmoe_conv_shape *s, int direction,
                                     const char **name, pmoe_conv_algo_class *cls,
                                     pmoe_error *err) {
    return NO_CUDNN(err);
}
