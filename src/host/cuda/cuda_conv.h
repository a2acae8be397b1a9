/* cuda_conv.h: 2-D convolution on a CUDA backend through cuDNN, ready for
 * the deep models (WRN, WRN-pMoE). No CUDA types here.
 *
 * NCHW float32, groups 1, dilation 1, no bias; weights K x C x R x S. For
 * each shape the descriptors are made once and kept in the backend's
 * context, and for each direction cuDNN's heuristics (which time nothing,
 * so the list is the same on every run) are asked once for a list of
 * candidate algorithms; the first is used, and one that cuDNN refuses when
 * called is dropped for the next (a refused algorithm costs one call, not
 * the run). The math is FMA only (no TF32), so results can be held to
 * float32 parity with a CPU convolution; with deterministic on (the default)
 * only algorithms cuDNN marks deterministic are chosen, which matters for
 * the filter gradient. The workspace belongs to the context and grows to the
 * largest plan's need. Calls enqueue work on the backend's stream and
 * return; failures of the work itself surface at the next synchronize().
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
/* Deterministic algorithms only (1, the default) or the fastest (0); plans
 * made afterwards follow the setting. */
pmoe_status pmoe_cuda_conv_set_deterministic(pmoe_backend *be, int deterministic,
                                             pmoe_error *err);

#endif
