/* cuda_conv.h: 2-D convolution on a CUDA backend through cuDNN, ready for
 * the deep models (WRN, WRN-pMoE). No CUDA types here.
 *
 * NCHW float32, groups 1, dilation 1, no bias; weights K x C x R x S. For
 * each shape the descriptors are made once and kept in the backend's
 * context, and for each direction cuDNN's heuristics (which time nothing,
 * so the list is the same on every run) are asked once for a list of
 * candidate algorithms; the first is used, and one that cuDNN refuses when
 * called is dropped for the next (a refused algorithm costs one call, not
 * the run). At train.precision = fp32 the math is FMA only (no TF32), so
 * results can be held to float32 parity with a CPU convolution; tf32 allows
 * tensor-op math (cuDNN rounds the inputs to TF32), bf16 runs it on inputs
 * rounded to bfloat16 by pmoe's kernel first. With deterministic on (the
 * default) only algorithms cuDNN marks deterministic are chosen, which
 * matters for the filter gradient. The workspace belongs to the context:
 * at a shape's first call its three directions' needs are queried
 * (cudnnGet*WorkspaceSize for the chosen algorithms) and the workspace grown
 * to the largest plan's need, and the choice is logged on stderr, once per
 * shape (and again when a refused algorithm is replaced). Calls enqueue work
 * on the backend's stream and return; failures of the work itself surface
 * at the next synchronize().
 * Builds without cuDNN (or without CUDA) return PMOE_ERR_UNSUPPORTED. */
#ifndef PMOE_CUDA_CONV_H
#define PMOE_CUDA_CONV_H

#include <stdint.h>

#include "backend/backend.h"

/* pmoe_conv_shape and its output size: backend/backend.h. */

/* 1 when this build has the cuDNN wrapper. */
int pmoe_cuda_conv_built(void);

/* y (B x K x P x Q) = conv(x (B x C x H x W), w (K x C x R x S)). */
pmoe_status pmoe_cuda_conv_forward(pmoe_backend *be, const pmoe_conv_shape *s, const float *x,
                                   const float *w, float *y, pmoe_error *err);
/* dx (overwritten) from dy and w. */
pmoe_status pmoe_cuda_conv_backward_data(pmoe_backend *be, const pmoe_conv_shape *s,
                                         const float *dy, const float *w, float *dx,
                                         pmoe_error *err);
/* dx += the same (cuDNN's beta = 1, in the same call, no extra pass): the
 * backend table's conv2d_backward, whose input gradients add up. */
pmoe_status pmoe_cuda_conv_backward_data_accumulate(pmoe_backend *be, const pmoe_conv_shape *s,
                                                    const float *dy, const float *w, float *dx,
                                                    pmoe_error *err);
/* dw (overwritten) from x and dy. */
pmoe_status pmoe_cuda_conv_backward_filter(pmoe_backend *be, const pmoe_conv_shape *s,
                                           const float *x, const float *dy, float *dw,
                                           pmoe_error *err);
/* The algorithm class a convolution's tolerance follows: the GEMM-like and
 * direct algorithms sum the products of the definition (float32 rounding
 * of a sum); Winograd and FFT transform the operands first and differ from
 * the definition by more (cuDNN documents no bound; the conv tests hold
 * them to a looser tolerance). */
typedef enum {
    PMOE_CONV_ALGO_DIRECT,
    PMOE_CONV_ALGO_WINOGRAD,
    PMOE_CONV_ALGO_FFT
} pmoe_conv_algo_class;

/* The algorithm a shape's direction (0 forward, 1 backward data, 2 backward
 * filter) runs now (making the shape's plan if it has none): cuDNN's name
 * ("IMPLICIT_PRECOMP_GEMM", "FFT", ...) and its class. */
pmoe_status pmoe_cuda_conv_algorithm(pmoe_backend *be, const pmoe_conv_shape *s, int direction,
                                     const char **name, pmoe_conv_algo_class *cls, pmoe_error *err);

/* Deterministic algorithms only (1, the default) or the fastest (0); plans
 * made afterwards follow the setting. */
pmoe_status pmoe_cuda_conv_set_deterministic(pmoe_backend *be, int deterministic, pmoe_error *err);

#endif
