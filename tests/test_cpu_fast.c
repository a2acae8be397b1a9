/* test_cpu_fast.c: the CPU fast path (train.cpu_kernels = fast, oneDNN)
 * against the reference ops on random inputs; skipped (77) in a build
 * without oneDNN.
 *
 * Cases: the convolutions of WRN and WRN-pMoE at width 1 (3 -> 16 on
 * 32x32, 16 -> 16, the stride-2 3x3 and 1x1 shortcuts) and a wider one;
 * batch norm (the reference's own: bit for bit); the pMoE layer's k experts
 * as one grouped op against the reference's expert-by-expert BN -> ReLU ->
 * conv.
 * Gradients that the op adds (dx += ...) start from random values, so an
 * op that overwrites would fail. Output buffers start NaN.
 *
 * Tolerances: a float sum's rounding grows with its terms, so each output
 * is compared as close_scaled (rel 1e-5 of the largest |want|) or, for
 * the experts' batch-norm parameter gradients (sums that may cancel),
 * close_sum against the sum's mass (rel 1e-6).
 * Measured worst shares are printed; oneDNN's different summation order
 * gave at most a quarter of these limits (the weight gradients). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/cpu_ops.h"
#include "test_util.h"

static pmoe_backend *fast;

static const double REL = 1e-5, SUM_REL = 1e-6;

static void check_conv(const char *label, pmoe_conv_shape s, int bias) {
    printf(" convolution %s: B %lld, %d -> %d, %dx%d, %dx%d stride %d\n", label, (long long)s.batch,
           s.in_channels, s.out_channels, s.height, s.width, s.kernel_h, s.kernel_w, s.stride);
    const int P = pmoe_conv_out_height(&s), Q = pmoe_conv_out_width(&s);
    const int64_t xn = s.batch * s.in_channels * s.height * s.width;
    const int64_t yn = s.batch * s.out_channels * P * Q;
    const int64_t wn = (int64_t)s.out_channels * s.in_channels * s.kernel_h * s.kernel_w;
    float *x = frand(xn, 1, -1.0f, 1.0f), *w = frand(wn, 2, -0.5f, 0.5f);
    float *b = bias ? frand(s.out_channels, 3, -0.5f, 0.5f) : NULL;
    float *dy = frand(yn, 4, -1.0f, 1.0f);
    float *y_ref = fbuf(yn), *y_fast = fbuf(yn);
    cpu_conv2d_forward(NULL, &s, x, w, b, y_ref);
    fast->ops->conv2d_forward(fast, &s, x, w, b, y_fast);
    close_scaled("  y", y_fast, y_ref, yn, REL);
    float *dx_ref = frand(xn, 5, -1.0f, 1.0f), *dx_fast = fcopy(dx_ref, xn);
    float *dw_ref = fbuf(wn), *dw_fast = fbuf(wn);
    float *db_ref = bias ? fbuf(s.out_channels) : NULL;
    float *db_fast = bias ? fbuf(s.out_channels) : NULL;
    cpu_conv2d_backward(NULL, &s, x, w, dy, dx_ref, dw_ref, db_ref);
    fast->ops->conv2d_backward(fast, &s, x, w, dy, dx_fast, dw_fast, db_fast);
    close_scaled("  dx (added)", dx_fast, dx_ref, xn, REL);
    close_scaled("  dw", dw_fast, dw_ref, wn, REL);
    if (bias) close_scaled("  dbias", db_fast, db_ref, s.out_channels, REL);
    /* the first layer's input has no gradient: dx NULL leaves it alone */
    float *dw2 = fbuf(wn);
    fast->ops->conv2d_backward(fast, &s, x, w, dy, NULL, dw2, NULL);
    check_exact_f("  dw with dx NULL", dw2, dw_fast, wn);
}

/* The fast path's batch norm is the reference's (cpu_fast.c says why):
 * bit for bit. */
static void check_bn(const char *label, pmoe_bn_shape s) {
    printf(" batch norm %s: B %lld, C %d, spatial %lld\n", label, (long long)s.batch, s.channels,
           (long long)s.spatial);
    const int C = s.channels;
    const int64_t n = s.batch * C * s.spatial;
    float *x = frand(n, 11, -2.0f, 3.0f), *g = frand(C, 12, 0.5f, 1.5f), *be = frand(C, 13, -1, 1);
    float *y_ref = fbuf(n), *y_fast = fbuf(n);
    float *m_ref = fbuf(C), *m_fast = fbuf(C), *i_ref = fbuf(C), *i_fast = fbuf(C);
    float *rm_ref = frand(C, 14, -1, 1), *rv_ref = frand(C, 15, 0.5f, 2.0f);
    float *rm_fast = fcopy(rm_ref, C), *rv_fast = fcopy(rv_ref, C);
    cpu_batchnorm_forward_train(NULL, &s, x, g, be, y_ref, m_ref, i_ref, rm_ref, rv_ref, 0.1f);
    fast->ops->batchnorm_forward_train(fast, &s, x, g, be, y_fast, m_fast, i_fast, rm_fast, rv_fast,
                                       0.1f);
    check_exact_f("  y (training)", y_fast, y_ref, n);
    check_exact_f("  running_var", rv_fast, rv_ref, C);
    float *dy = frand(n, 16, -1, 1);
    float *dx_ref = frand(n, 17, -1, 1), *dx_fast = fcopy(dx_ref, n);
    float *dg_ref = fbuf(C), *dg_fast = fbuf(C), *db_ref = fbuf(C), *db_fast = fbuf(C);
    cpu_batchnorm_backward(NULL, &s, x, g, m_ref, i_ref, dy, dx_ref, dg_ref, db_ref);
    fast->ops->batchnorm_backward(fast, &s, x, g, m_ref, i_ref, dy, dx_fast, dg_fast, db_fast);
    check_exact_f("  dx (added)", dx_fast, dx_ref, n);
    check_exact_f("  dgamma", dg_fast, dg_ref, C);
}

/* The reference experts: expert by expert, as model/moe_conv.c runs them
 * when a backend has no grouped op. */
static void experts_reference(const pmoe_experts_shape *s, const float *in, const float *g,
                              const float *b, float *rm, float *rv, const float *w, float *mean,
                              float *invstd, float *act, float *out, const float *dout, float *din,
                              float *dg, float *db, float *dw) {
    const int C = s->channels, k = s->experts;
    const int64_t hw = (int64_t)s->height * s->width, per = s->rows * C * hw;
    const int64_t out_per = s->rows * s->out_channels * hw;
    const int64_t wsize = (int64_t)s->out_channels * C * s->kernel * s->kernel;
    const pmoe_bn_shape bs = {s->rows, C, hw, s->eps};
    const pmoe_conv_shape cs = {
        s->rows,   C,         s->height, s->width,           s->out_channels,
        s->kernel, s->kernel, 1,         (s->kernel - 1) / 2};
    float *normed = fbuf(per), *dact = fbuf(per), *dnormed = fbuf(per);
    for (int e = 0; e < k; e++) {
        cpu_batchnorm_forward_train(NULL, &bs, in + e * per, g + e * C, b + e * C, normed,
                                    mean + e * C, invstd + e * C, rm + e * C, rv + e * C, 0.1f);
        cpu_relu_forward(NULL, per, normed, act + e * per);
        cpu_conv2d_forward(NULL, &cs, act + e * per, w + e * wsize, NULL, out + e * out_per);
        memset(dact, 0, sizeof(float) * (size_t)per);
        memset(dnormed, 0, sizeof(float) * (size_t)per);
        memset(din + e * per, 0, sizeof(float) * (size_t)per);
        cpu_conv2d_backward(NULL, &cs, act + e * per, w + e * wsize, dout + e * out_per, dact,
                            dw + e * wsize, NULL);
        cpu_relu_backward(NULL, per, act + e * per, dact, dnormed);
        cpu_batchnorm_backward(NULL, &bs, in + e * per, g + e * C, mean + e * C, invstd + e * C,
                               dnormed, din + e * per, dg + e * C, db + e * C);
    }
}

static void check_experts(const char *label, pmoe_experts_shape s) {
    printf(" experts %s: k %d, rows %lld, C %d -> %d, %dx%d maps, %dx%d kernel\n", label, s.experts,
           (long long)s.rows, s.channels, s.out_channels, s.height, s.width, s.kernel, s.kernel);
    const int k = s.experts, C = s.channels;
    const int64_t hw = (int64_t)s.height * s.width, n = k * s.rows * C * hw;
    const int64_t on = k * s.rows * s.out_channels * hw, kc = (int64_t)k * C;
    const int64_t wn = (int64_t)k * s.out_channels * C * s.kernel * s.kernel;
    float *in = frand(n, 21, -1, 2), *g = frand(kc, 22, 0.5f, 1.5f), *b = frand(kc, 23, -1, 1);
    float *w = frand(wn, 24, -0.5f, 0.5f), *dout = frand(on, 25, -1, 1);
    float *rm_ref = frand(kc, 26, -1, 1), *rv_ref = frand(kc, 27, 0.5f, 2);
    float *rm = fcopy(rm_ref, kc), *rv = fcopy(rv_ref, kc);
    float *mean_ref = fbuf(kc), *inv_ref = fbuf(kc), *act_ref = fbuf(n), *out_ref = fbuf(on);
    float *din_ref = fbuf(n), *dg_ref = fbuf(kc), *db_ref = fbuf(kc), *dw_ref = fbuf(wn);
    experts_reference(&s, in, g, b, rm_ref, rv_ref, w, mean_ref, inv_ref, act_ref, out_ref, dout,
                      din_ref, dg_ref, db_ref, dw_ref);
    float *mean = fbuf(kc), *inv = fbuf(kc), *normed = fbuf(n), *act = fbuf(n), *out = fbuf(on);
    float *dnormed = fbuf(n), *dact = fbuf(n), *din = fbuf(n), *dg = fbuf(kc), *db = fbuf(kc);
    float *dw = fbuf(wn);
    fast->ops->moe_experts_forward(fast, &s, 1, in, g, b, rm, rv, 0.1f, w, mean, inv, normed, act,
                                   out);
    close_scaled("  out", out, out_ref, on, REL);
    close_scaled("  save_mean", mean, mean_ref, kc, REL);
    close_scaled("  save_invstd", inv, inv_ref, kc, REL);
    close_scaled("  running_var", rv, rv_ref, kc, REL);
    fast->ops->moe_experts_backward(fast, &s, in, g, w, mean, inv, normed, act, dout, dnormed, dact,
                                    din, dg, db, dw);
    close_scaled("  dconv_w", dw, dw_ref, wn, REL);
    const double mass = channel_mass(dout, NULL, NULL, NULL, 1, 1, on) + 1.0;
    close_sum("  dbn.bias", db, db_ref, kc, mass, SUM_REL);
    close_sum("  dbn.weight", dg, dg_ref, kc, mass * 4.0, SUM_REL);
    close_scaled("  din", din, din_ref, n, REL);
    /* evaluation mode: the running statistics, no update */
    float *rm2 = fcopy(rm, kc), *rv2 = fcopy(rv, kc), *out2 = fbuf(on);
    fast->ops->moe_experts_forward(fast, &s, 0, in, g, b, rm2, rv2, 0.1f, w, mean, inv, normed, act,
                                   out2);
    check_exact_f("  eval leaves running_var", rv2, rv, kc);
    int finite = 1;
    for (int64_t i = 0; i < on; i++) finite &= isfinite(out2[i]) != 0;
    CHECK_MSG(finite, "experts eval output has NaN");
}

int main(void) {
    pmoe_error err;
    if (pmoe_cpu_backend_create(2, &fast, &err)) {
        fprintf(stderr, "test_cpu_fast: %s\n", err.message);
        return 2;
    }
    if (pmoe_backend_set_cpu_kernels(fast, PMOE_CPU_KERNELS_FAST, &err)) {
        printf("test_cpu_fast: skipped (%s)\n", err.message);
        pmoe_backend_destroy(fast);
        return 77;
    }
    check_conv("first layer", (pmoe_conv_shape){8, 3, 32, 32, 16, 3, 3, 1, 1}, 0);
    check_conv("group 1", (pmoe_conv_shape){8, 16, 32, 32, 16, 3, 3, 1, 1}, 0);
    check_conv("stride 2", (pmoe_conv_shape){8, 16, 32, 32, 32, 3, 3, 2, 1}, 0);
    check_conv("1x1 shortcut", (pmoe_conv_shape){8, 32, 16, 16, 64, 1, 1, 2, 0}, 0);
    check_conv("narrow, with bias", (pmoe_conv_shape){16, 40, 8, 8, 24, 3, 3, 1, 1}, 1);
    check_conv("odd sizes", (pmoe_conv_shape){3, 5, 7, 9, 6, 3, 3, 2, 1}, 1);
    /* a second call of a shape reuses its primitives: the same results */
    check_conv("first layer again", (pmoe_conv_shape){8, 3, 32, 32, 16, 3, 3, 1, 1}, 0);
    check_bn("wide", (pmoe_bn_shape){8, 16, 32 * 32, 1e-5f});
    check_bn("8x8", (pmoe_bn_shape){16, 64, 64, 1e-5f});
    check_bn("1x1", (pmoe_bn_shape){64, 40, 1, 1e-5f});
    check_experts("1x1 patches, 1x1 kernels", (pmoe_experts_shape){4, 64, 16, 1, 1, 4, 1, 1e-5f});
    check_experts("2x2 patches, 3x3 kernels", (pmoe_experts_shape){8, 48, 16, 2, 2, 2, 3, 1e-5f});
    check_experts("4x4 patches, 3x3 kernels", (pmoe_experts_shape){4, 10, 8, 4, 4, 2, 3, 1e-5f});
    pmoe_backend_destroy(fast);
    free_all();
    return test_finish("test_cpu_fast");
}
