/* cpu_precision.c: train.precision on the CPU backend (backend.h,
 * pmoe_backend_set_precision).
 *
 * tf32 and bf16 are the reference ops run on rounded copies of their
 * inputs: each GEMM or convolution op of the table is wrapped so that its
 * float inputs are first copied into scratch, rounded as
 * kernels/float_round.h rounds them (the same function the CUDA backend's
 * rounding kernel and the cuBLAS / cuDNN stand-in use), and the wrapped op
 * then sums in float32 as it always does. The CUDA backend rounds exactly
 * these inputs of exactly these ops, so the two backends stay within
 * float32 summation order of each other at every precision. The fused
 * optional ops that hide GEMMs inside them (the gathered experts, the pMoE
 * layer's grouped experts) are left out of the rounded table, so the model
 * runs the unfused ops, as it does on CUDA; the router's ops are not
 * wrapped (its scores and top-l stay float32, so rounding cannot flip a
 * route). */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#include "backend/cpu_fast.h"
#include "backend/cpu_ops.h"
#include "kernels/float_round.h"

static cpu_impl *impl_of(pmoe_backend *be) { return (cpu_impl *)be->impl; }

/* Room for `count` floats of rounded copies; NULL (with one line on
 * stderr, as an op cannot fail) when the host has none. */
static float *scratch(pmoe_backend *be, int64_t count) {
    cpu_impl *impl = impl_of(be);
    if (count <= impl->scratch_count) return impl->scratch;
    free(impl->scratch);
    impl->scratch_count = 0;
    impl->scratch = aligned_alloc(64, ((size_t)count * sizeof(float) + 63) / 64 * 64);
    if (!impl->scratch) {
        fprintf(stderr,
                "pmoe: cpu: out of host memory for the rounded copies of train.precision "
                "(%lld floats); the op's output is NaN\n",
                (long long)count);
        return NULL;
    }
    impl->scratch_count = count;
    return impl->scratch;
}

static const float *round_into(float *dst, const float *src, int64_t count, int precision) {
#pragma omp parallel for schedule(static) if (count > 65536)
    for (int64_t i = 0; i < count; i++) dst[i] = pmoe_round_as(src[i], precision);
    return dst;
}

static void fill_nan(float *p, int64_t count) {
    for (int64_t i = 0; p && i < count; i++) p[i] = NAN;
}

static void rounded_gemm(pmoe_backend *be, int trans_a, int trans_b, int64_t m, int64_t n,
                         int64_t k, float alpha, const float *a, int64_t lda, int64_t stride_a,
                         const float *b, int64_t ldb, int64_t stride_b, float beta, float *c,
                         int64_t ldc, int64_t stride_c, int64_t batch) {
    cpu_impl *impl = impl_of(be);
    const int64_t na = pmoe_gemm_span(trans_a, m, k, lda, stride_a, batch),
                  nb = pmoe_gemm_span(trans_b, k, n, ldb, stride_b, batch);
    float *room = scratch(be, na + nb);
    if (!room) {
        for (int64_t i = 0; i < batch && m > 0 && n > 0; i++)
            for (int64_t r = 0; r < m; r++) fill_nan(c + i * stride_c + r * ldc, n);
        return;
    }
    impl->ops.gemm(be, trans_a, trans_b, m, n, k, alpha, round_into(room, a, na, impl->precision),
                   lda, stride_a, round_into(room + na, b, nb, impl->precision), ldb, stride_b,
                   beta, c, ldc, stride_c, batch);
}

static void rounded_expert_forward(pmoe_backend *be, int experts, int64_t rows, int dim, int hidden,
                                   const float *expert_in, const float *expert_w,
                                   float *hidden_out) {
    cpu_impl *impl = impl_of(be);
    const int64_t nx = (int64_t)experts * rows * dim, nw = (int64_t)experts * hidden * dim;
    float *room = scratch(be, nx + nw);
    if (!room) return fill_nan(hidden_out, (int64_t)experts * rows * hidden);
    impl->ops.expert_forward(be, experts, rows, dim, hidden,
                             round_into(room, expert_in, nx, impl->precision),
                             round_into(room + nx, expert_w, nw, impl->precision), hidden_out);
}

/* dhidden is the op's scratch: rounded in place (the ReLU mask that follows
 * only zeroes, so this is the rounding of the masked gradient CUDA rounds). */
static void rounded_expert_backward(pmoe_backend *be, int experts, int64_t rows, int dim,
                                    int hidden, const float *expert_in, const float *expert_w,
                                    const float *hidden_out, float *dhidden, float *dexpert_w,
                                    float *dexpert_in) {
    cpu_impl *impl = impl_of(be);
    const int64_t nx = (int64_t)experts * rows * dim, nw = (int64_t)experts * hidden * dim;
    float *room = scratch(be, nx + nw);
    if (!room) {
        fill_nan(dexpert_w, nw);
        return fill_nan(dexpert_in, nx);
    }
    round_into(dhidden, dhidden, (int64_t)experts * rows * hidden, impl->precision);
    impl->ops.expert_backward(be, experts, rows, dim, hidden,
                              round_into(room, expert_in, nx, impl->precision),
                              round_into(room + nx, expert_w, nw, impl->precision), hidden_out,
                              dhidden, dexpert_w, dexpert_in);
}

static void rounded_conv2d_forward(pmoe_backend *be, const pmoe_conv_shape *s, const float *x,
                                   const float *w, const float *bias, float *y) {
    cpu_impl *impl = impl_of(be);
    const int64_t nx = pmoe_conv_x_count(s), nw = pmoe_conv_w_count(s);
    float *room = scratch(be, nx + nw);
    if (!room) return fill_nan(y, pmoe_conv_y_count(s));
    impl->ops.conv2d_forward(be, s, round_into(room, x, nx, impl->precision),
                             round_into(room + nx, w, nw, impl->precision), bias, y);
}

/* The bias gradient is a plain sum of dy, not a product: taken from dy
 * unrounded, by the op the CUDA backend also runs for it. */
static void rounded_conv2d_backward(pmoe_backend *be, const pmoe_conv_shape *s, const float *x,
                                    const float *w, const float *dy, float *dx, float *dw,
                                    float *dbias) {
    cpu_impl *impl = impl_of(be);
    if (dbias)
        impl->ops.channel_bias_backward(be, s->batch, s->out_channels,
                                        (int64_t)pmoe_conv_out_height(s) * pmoe_conv_out_width(s),
                                        dy, dbias);
    if (!dx && !dw) return;
    const int64_t nx = pmoe_conv_x_count(s), nw = pmoe_conv_w_count(s), ny = pmoe_conv_y_count(s);
    float *room = scratch(be, nx + nw + ny);
    if (!room) {
        fill_nan(dx, nx);
        return fill_nan(dw, nw);
    }
    impl->ops.conv2d_backward(be, s, round_into(room, x, nx, impl->precision),
                              round_into(room + nx, w, nw, impl->precision),
                              round_into(room + nx + nw, dy, ny, impl->precision), dx, dw, NULL);
}

void cpu_precision_apply(pmoe_backend *be) {
    cpu_impl *impl = impl_of(be);
    if (impl->precision == PMOE_PRECISION_FP32) {
        be->ops = &impl->ops;
        return;
    }
    impl->rounded = impl->ops;
    impl->rounded.gemm = rounded_gemm;
    impl->rounded.expert_forward = rounded_expert_forward;
    impl->rounded.expert_backward = rounded_expert_backward;
    impl->rounded.conv2d_forward = rounded_conv2d_forward;
    impl->rounded.conv2d_backward = rounded_conv2d_backward;
    impl->rounded.expert_forward_gathered = NULL;
    impl->rounded.expert_backward_gathered = NULL;
    impl->rounded.moe_experts_forward = NULL;
    impl->rounded.moe_experts_backward = NULL;
    be->ops = &impl->rounded;
}

void cpu_precision_close(cpu_impl *impl) {
    free(impl->scratch);
    impl->scratch = NULL;
    impl->scratch_count = 0;
}

pmoe_status cpu_set_precision(pmoe_backend *be, int precision, pmoe_error *err) {
    _Static_assert((int)PMOE_PRECISION_TF32 == PMOE_ROUND_TF32 &&
                       (int)PMOE_PRECISION_BF16 == PMOE_ROUND_BF16,
                   "precisions numbered alike");
    impl_of(be)->precision = precision;
    cpu_precision_apply(be);
    return PMOE_OK;
}
