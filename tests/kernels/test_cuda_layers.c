/* test_cuda_layers.c: every deep-model layer op of the CUDA backend's table
 * (backend.h, "Deep-model layers") against its CPU twin (cpu_ops.h), on the
 * device, through gpu->ops as the model calls them.
 *
 * Fresh random inputs on every run (seed printed; PMOE_TEST_SEED repeats
 * it), at the sizes of a WRN-16-4 step (B = 128 and 32 x 32 maps for the
 * elementwise ops and batch norm; B = 16 for the convolutions, whose CPU
 * twin is the slow side) and at odd sizes. Outputs an op overwrites start
 * as NaN; outputs it adds into (dx) start from random values, which the
 * twin gets too, so "adds" and "overwrites" are both checked. NULL
 * gradients are skipped. Copies, scatters and elementwise products must
 * match the twin exactly where the GPU does the same float operations
 * (no multiply-add to contract); everything else within
 * |got - want| <= rel (scale + |want|), the scale being the largest |want|
 * or, for a sum that may cancel (a mean, a bias or BN parameter gradient),
 * its largest sum of |terms|; the worst error is printed as a share of the
 * limit. The GPU sums in float (cuDNN, and the kernels' fixed trees), the
 * twins in double or through OpenBLAS; the host-execution test
 * (test_kernels_host_layers.c) measured the same kernels' arithmetic at
 * under 0.15 of limits 2 to 2.5 times tighter than these. The reductions
 * run twice and must give the same bits (no atomics; cuDNN's deterministic
 * algorithms).
 * Without a CUDA device the test exits 77 (skipped). */
#include "backend/cpu_ops.h"
#include "gpu_test_buffers.h"

/* ------------------------------------------------------------ buffers */

/* gpu, seed0, hbuf, hibuf, hrand, copy_of, dev_in, dev_out, back,
 * release_all and sync_or_fail are gpu_test_buffers.h's; close_scaled,
 * close_sum and channel_mass are test_util.h's. */

/* Device buffers of n floats: a copy of host data, or poisoned. */
static float *din(const float *host, int64_t n) { return dev_in(host, (size_t)n * 4); }
static float *dout(int64_t n) { return dev_out((size_t)n * 4); }
static float *got(const float *dev, int64_t n) { return back(dev, (size_t)n * 4); }

static int32_t *random_picks(int64_t batch, int n, int k, int l, uint64_t id) {
    int32_t *sel = hibuf(batch * k * l);
    fill_random_picks(sel, batch * k, n, l, seed0, 0xd15 + id);
    return sel;
}

/* ------------------------------------------------------------ comparisons */

static void same_bits(const char *what, const float *a, const float *b, int64_t n) {
    const int same = memcmp(a, b, (size_t)n * 4) == 0;
    printf("  %-44s %s\n", what, same ? "bit-identical" : "DIFFERS");
    CHECK_MSG(same, "%s: two runs differ", what);
}

/* ------------------------------------------------------------ convolution */

/* Limits, relative to the largest value of the result: a forward output
 * and dx sum C R S (K R S) products, dw sums B P Q of them; cuDNN sums in
 * float with FMA in its own order, the twin through OpenBLAS. */
static void test_conv(pmoe_conv_shape s, int with_bias) {
    const int P = pmoe_conv_out_height(&s), Q = pmoe_conv_out_width(&s);
    printf("conv2d B%lld C%d %dx%d -> K%d %dx%d, kernel %dx%d stride %d pad %d%s\n",
           (long long)s.batch, s.in_channels, s.height, s.width, s.out_channels, P, Q, s.kernel_h,
           s.kernel_w, s.stride, s.pad, with_bias ? ", bias" : "");
    const int K = s.out_channels;
    const int64_t xn = s.batch * s.in_channels * s.height * s.width;
    const int64_t wn = (int64_t)K * s.in_channels * s.kernel_h * s.kernel_w;
    const int64_t yn = s.batch * K * (int64_t)P * Q;
    float *x = hrand(xn, 1, -1, 1), *w = hrand(wn, 2, -0.5f, 0.5f);
    float *bias = with_bias ? hrand(K, 3, -1, 1) : NULL, *dy = hrand(yn, 4, -1, 1);
    float *dx0 = hrand(xn, 5, -1, 1);
    float *d_x = din(x, xn), *d_w = din(w, wn), *d_bias = bias ? din(bias, K) : NULL;
    float *d_dy = din(dy, yn), *d_y = dout(yn), *d_dx = din(dx0, xn);
    float *d_dw = dout(wn), *d_dbias = dout(K), *d_dw2 = dout(wn), *d_dbias2 = dout(K);
    float *d_dx_only = din(dx0, xn);

    gpu->ops->conv2d_forward(gpu, &s, d_x, d_w, d_bias, d_y);
    gpu->ops->conv2d_backward(gpu, &s, d_x, d_w, d_dy, d_dx, d_dw, d_dbias);
    /* again, parameter gradients only, then dx only */
    gpu->ops->conv2d_backward(gpu, &s, d_x, d_w, d_dy, NULL, d_dw2, d_dbias2);
    gpu->ops->conv2d_backward(gpu, &s, d_x, d_w, d_dy, d_dx_only, NULL, NULL);
    sync_or_fail("conv2d");

    float *y = hbuf(yn), *dx = copy_of(dx0, xn), *dw = hbuf(wn), *dbias = hbuf(K);
    cpu_conv2d_forward(NULL, &s, x, w, bias, y);
    cpu_conv2d_backward(NULL, &s, x, w, dy, dx, dw, dbias);
    const double rel = 2e-5;
    close_scaled("y", got(d_y, yn), y, yn, rel);
    close_scaled("dx (accumulated)", got(d_dx, xn), dx, xn, rel);
    float *g_dw = got(d_dw, wn), *g_dbias = got(d_dbias, K);
    close_scaled("dw", g_dw, dw, wn, 4 * rel);
    close_scaled("dbias", g_dbias, dbias, K, rel);
    same_bits("dw, second run", got(d_dw2, wn), g_dw, wn);
    same_bits("dbias, second run", got(d_dbias2, K), g_dbias, K);
    close_scaled("dx alone (accumulated)", got(d_dx_only, xn), dx, xn, rel);
    release_all();
}

/* ------------------------------------------------------------ batch norm */

static void test_batchnorm(pmoe_bn_shape s, float lo, float hi) {
    printf("batch norm B%lld C%d spatial %lld, x in [%g, %g)\n", (long long)s.batch, s.channels,
           (long long)s.spatial, lo, hi);
    const int C = s.channels;
    const int64_t n = s.batch * C * s.spatial;
    const float momentum = 0.1f;
    float *x = hrand(n, 10, lo, hi), *gamma = hrand(C, 11, 0.5f, 1.5f);
    float *beta = hrand(C, 12, -0.5f, 0.5f), *rm0 = hrand(C, 13, -0.2f, 0.2f);
    float *rv0 = hrand(C, 14, 0.5f, 2.0f), *dy = hrand(n, 15, -1, 1), *dx0 = hrand(n, 16, -1, 1);
    float *d_x = din(x, n), *d_gamma = din(gamma, C), *d_beta = din(beta, C);
    float *d_rm = din(rm0, C), *d_rv = din(rv0, C), *d_y = dout(n), *d_y2 = dout(n);
    float *d_mean = dout(C), *d_invstd = dout(C), *d_mean2 = dout(C), *d_invstd2 = dout(C);
    gpu->ops->batchnorm_forward_train(gpu, &s, d_x, d_gamma, d_beta, d_y, d_mean, d_invstd, d_rm,
                                      d_rv, momentum);
    gpu->ops->batchnorm_forward_train(gpu, &s, d_x, d_gamma, d_beta, d_y2, d_mean2, d_invstd2, NULL,
                                      NULL, momentum);
    float *y = hbuf(n), *mean = hbuf(C), *invstd = hbuf(C);
    float *rm = copy_of(rm0, C), *rv = copy_of(rv0, C);
    cpu_batchnorm_forward_train(NULL, &s, x, gamma, beta, y, mean, invstd, rm, rv, momentum);
    float *g_y = got(d_y, n);
    close_scaled("train y", g_y, y, n, 2e-5);
    const double mean_mass = channel_mass(x, NULL, NULL, NULL, s.batch, C, s.spatial) /
                             (double)(s.batch * s.spatial);
    close_sum("save_mean", got(d_mean, C), mean, C, mean_mass, 1e-6);
    close_scaled("save_invstd", got(d_invstd, C), invstd, C, 2e-6);
    close_sum("running_mean", got(d_rm, C), rm, C, mean_mass, 1e-6);
    close_scaled("running_var (unbiased)", got(d_rv, C), rv, C, 2e-6);
    same_bits("train y, second run", got(d_y2, n), g_y, n);

    float *d_ye = dout(n), *ye = hbuf(n);
    gpu->ops->batchnorm_forward_eval(gpu, &s, d_x, d_gamma, d_beta, din(rm0, C), din(rv0, C), d_ye);
    cpu_batchnorm_forward_eval(NULL, &s, x, gamma, beta, rm0, rv0, ye);
    close_scaled("eval y", got(d_ye, n), ye, n, 2e-6);

    /* Backward from the twin's statistics, so both sides start alike. */
    float *d_smean = din(mean, C), *d_sinv = din(invstd, C), *d_dy = din(dy, n);
    float *d_dx = din(dx0, n), *d_dg = dout(C), *d_db = dout(C);
    float *d_dg2 = dout(C), *d_db2 = dout(C), *d_dx_only = din(dx0, n);
    gpu->ops->batchnorm_backward(gpu, &s, d_x, d_gamma, d_smean, d_sinv, d_dy, d_dx, d_dg, d_db);
    gpu->ops->batchnorm_backward(gpu, &s, d_x, d_gamma, d_smean, d_sinv, d_dy, NULL, d_dg2, d_db2);
    gpu->ops->batchnorm_backward(gpu, &s, d_x, d_gamma, d_smean, d_sinv, d_dy, d_dx_only, NULL,
                                 NULL);
    sync_or_fail("batch norm");
    float *dx = copy_of(dx0, n), *dg = hbuf(C), *db = hbuf(C);
    cpu_batchnorm_backward(NULL, &s, x, gamma, mean, invstd, dy, dx, dg, db);
    float *g_dg = got(d_dg, C), *g_db = got(d_db, C);
    close_scaled("dx (accumulated)", got(d_dx, n), dx, n, 2e-5);
    close_sum("dgamma", g_dg, dg, C, channel_mass(dy, x, mean, invstd, s.batch, C, s.spatial),
              1e-6);
    close_sum("dbeta", g_db, db, C, channel_mass(dy, NULL, NULL, NULL, s.batch, C, s.spatial),
              1e-6);
    same_bits("dgamma, second run", got(d_dg2, C), g_dg, C);
    same_bits("dbeta, second run", got(d_db2, C), g_db, C);
    close_scaled("dx alone (accumulated)", got(d_dx_only, n), dx, n, 2e-5);
    release_all();
}

/* ------------------------------------------------------------ elementwise, pooling, bias */

static void test_elementwise(int64_t n) {
    printf("ReLU and axpby, %lld values\n", (long long)n);
    float *x = hrand(n, 20, -1, 1), *y = hrand(n, 21, -1, 1), *dy = hrand(n, 22, -1, 1);
    float *dx0 = hrand(n, 23, -1, 1);
    float *d_x = din(x, n), *d_out = dout(n), *d_inplace = din(x, n), *d_dx = din(dx0, n);
    gpu->ops->relu_forward(gpu, n, d_x, d_out);
    gpu->ops->relu_forward(gpu, n, d_inplace, d_inplace);
    gpu->ops->relu_backward(gpu, n, din(y, n), din(dy, n), d_dx);
    float *want = hbuf(n), *dx = copy_of(dx0, n);
    cpu_relu_forward(NULL, n, x, want);
    cpu_relu_backward(NULL, n, y, dy, dx);
    check_exact_f("relu_forward", got(d_out, n), want, n);
    check_exact_f("relu_forward in place", got(d_inplace, n), want, n);
    check_exact_f("relu_backward (dx += dy where y > 0)", got(d_dx, n), dx, n);

    /* alpha x + beta y may become one FMA on the GPU: within an ulp or so */
    float *d_y = din(y, n), *d_copy = dout(n);
    gpu->ops->axpby(gpu, n, 0.7f, d_x, -1.3f, d_y);
    gpu->ops->axpby(gpu, n, -2.5f, d_x, 0.0f, d_copy); /* over NaN: y is not read */
    float *ay = copy_of(y, n), *acopy = hbuf(n);
    cpu_axpby(NULL, n, 0.7f, x, -1.3f, ay);
    cpu_axpby(NULL, n, -2.5f, x, 0.0f, acopy);
    close_scaled("axpby", got(d_y, n), ay, n, 2e-7);
    check_exact_f("axpby beta 0 over NaN (a scaled copy)", got(d_copy, n), acopy, n);
    sync_or_fail("elementwise");
    release_all();
}

static void test_pool_bias(int64_t B, int C, int64_t S) {
    printf("average pooling and channel bias B%lld C%d spatial %lld\n", (long long)B, C,
           (long long)S);
    const int64_t rows = B * C, n = rows * S;
    float *x = hrand(n, 30, -1, 1), *dy = hrand(rows, 31, -1, 1), *bias = hrand(C, 32, -1, 1);
    float *start = hrand(n, 33, -1, 1);
    float *d_x = din(x, n), *d_pool = dout(rows), *d_dx = din(start, n), *d_y = din(start, n);
    float *d_dbias = dout(C), *d_dbias2 = dout(C);
    gpu->ops->avgpool_forward(gpu, rows, S, d_x, d_pool);
    gpu->ops->avgpool_backward(gpu, rows, S, din(dy, rows), d_dx);
    gpu->ops->channel_bias_forward(gpu, B, C, S, din(bias, C), d_y);
    gpu->ops->channel_bias_backward(gpu, B, C, S, d_x, d_dbias);
    gpu->ops->channel_bias_backward(gpu, B, C, S, d_x, d_dbias2);
    sync_or_fail("pooling and bias");
    float *pool = hbuf(rows), *dx = copy_of(start, n), *y = copy_of(start, n), *dbias = hbuf(C);
    cpu_avgpool_forward(NULL, rows, S, x, pool);
    cpu_avgpool_backward(NULL, rows, S, dy, dx);
    cpu_channel_bias_forward(NULL, B, C, S, bias, y);
    cpu_channel_bias_backward(NULL, B, C, S, x, dbias);
    close_sum("avgpool_forward", got(d_pool, rows), pool, rows,
              channel_mass(x, NULL, NULL, NULL, 1, (int)rows, S) / (double)S, 1e-6);
    check_exact_f("avgpool_backward (dx += dy / spatial)", got(d_dx, n), dx, n);
    check_exact_f("channel_bias_forward (y += bias)", got(d_y, n), y, n);
    float *g_dbias = got(d_dbias, C);
    close_sum("channel_bias_backward", g_dbias, dbias, C,
              channel_mass(x, NULL, NULL, NULL, B, C, S), 1e-6);
    same_bits("channel_bias_backward, second run", got(d_dbias2, C), g_dbias, C);
    release_all();
}

/* ------------------------------------------------------------ the pMoE layer */

static void test_moe(pmoe_scatter_shape s, int with_gate) {
    const int64_t B = s.batch, n = s.patches, k = s.experts, l = s.topl, e = s.expert_dim;
    printf("moe scatter and position weights B%lld n%lld k%lld l%lld e%lld%s\n", (long long)B,
           (long long)n, (long long)k, (long long)l, (long long)e, with_gate ? "" : ", gate NULL");
    const int64_t values = k * B * l * e, outs = B * n * k * e, picks = B * k * l, wn = k * B * n;
    const pmoe_route_shape r = {B, (int)n, 1, (int)k, (int)l, PMOE_GATE_RENORM};
    int32_t *sel = random_picks(B, (int)n, (int)k, (int)l, 40);
    float *vals = hrand(values, 41, -1, 1), *gate = with_gate ? hrand(picks, 42, 0, 1) : NULL;
    float *dpatch = hrand(outs, 43, -1, 1), *dweights = hrand(wn, 44, -1, 1);
    int32_t *d_sel = dev_in(sel, (size_t)picks * 4);
    float *d_vals = din(vals, values), *d_gate = gate ? din(gate, picks) : NULL;
    float *d_out = dout(outs), *d_dvals = dout(values), *d_dgate = dout(picks);
    float *d_dgate2 = dout(picks), *d_dvals2 = dout(values);
    float *d_w = dout(wn), *d_wgrad = dout(picks), *d_dpatch = din(dpatch, outs);
    gpu->ops->moe_scatter_forward(gpu, &s, d_vals, d_sel, d_gate, d_out);
    gpu->ops->moe_scatter_backward(gpu, &s, d_dpatch, d_vals, d_sel, d_gate, d_dvals, d_dgate);
    gpu->ops->moe_scatter_backward(gpu, &s, d_dpatch, d_vals, d_sel, d_gate, d_dvals2, d_dgate2);
    gpu->ops->moe_position_weights(gpu, &r, d_sel, d_gate, d_w);
    gpu->ops->moe_position_weights_backward(gpu, &r, d_sel, din(dweights, wn), d_wgrad);
    sync_or_fail("moe layer");
    float *out = hbuf(outs), *dvals = hbuf(values), *dgate = hbuf(picks), *w = hbuf(wn);
    float *wgrad = hbuf(picks);
    cpu_moe_scatter_forward(NULL, &s, vals, sel, gate, out);
    cpu_moe_scatter_backward(NULL, &s, dpatch, vals, sel, gate, dvals, dgate);
    cpu_moe_position_weights(NULL, &r, sel, gate, w);
    cpu_moe_position_weights_backward(NULL, &r, sel, dweights, wgrad);
    check_exact_f("moe_scatter_forward", got(d_out, outs), out, outs);
    check_exact_f("moe_scatter_backward dexpert_out", got(d_dvals, values), dvals, values);
    float *g_dgate = got(d_dgate, picks);
    close_scaled("moe_scatter_backward dgate", g_dgate, dgate, picks, 2e-6);
    same_bits("dgate, second run", got(d_dgate2, picks), g_dgate, picks);
    check_exact_f("moe_position_weights", got(d_w, wn), w, wn);
    check_exact_f("moe_position_weights_backward", got(d_wgrad, picks), wgrad, picks);
    release_all();
}

static void test_patch_scale(pmoe_patch_shape s) {
    printf("patch scaling B%lld C%d %dx%d p%d\n", (long long)s.batch, s.channels, s.height, s.width,
           s.patch);
    const int64_t pixels = s.batch * s.channels * s.height * s.width;
    const int64_t wn = s.batch * pmoe_patch_count(&s);
    float *weight = hrand(wn, 50, 0, 1), *x = hrand(pixels, 51, -1, 1);
    float *dy = hrand(pixels, 52, -1, 1), *dx0 = hrand(pixels, 53, -1, 1);
    float *d_weight = din(weight, wn), *d_x = din(x, pixels), *d_dy = din(dy, pixels);
    float *d_y = dout(pixels), *d_dx = din(dx0, pixels), *d_dw = dout(wn), *d_dw2 = dout(wn);
    gpu->ops->patch_scale_forward(gpu, &s, d_weight, d_x, d_y);
    gpu->ops->patch_scale_backward(gpu, &s, d_weight, d_x, d_dy, d_dx, d_dw);
    gpu->ops->patch_scale_backward(gpu, &s, d_weight, d_x, d_dy, NULL, d_dw2);
    sync_or_fail("patch scaling");
    float *y = hbuf(pixels), *dx = copy_of(dx0, pixels), *dw = hbuf(wn);
    cpu_patch_scale_forward(NULL, &s, weight, x, y);
    cpu_patch_scale_backward(NULL, &s, weight, x, dy, dx, dw);
    check_exact_f("patch_scale_forward", got(d_y, pixels), y, pixels);
    /* dx + w dy may become one FMA on the GPU */
    close_scaled("patch_scale_backward dx (accumulated)", got(d_dx, pixels), dx, pixels, 2e-7);
    float *g_dw = got(d_dw, wn);
    close_scaled("patch_scale_backward dweight", g_dw, dw, wn, 2e-6);
    same_bits("dweight, second run", got(d_dw2, wn), g_dw, wn);
    release_all();
}

/* ------------------------------------------------------------ channel copy */

/* One op in both of moe_conv's directions: the block of src (src_channels
 * per sample, from src_offset) into dst at dst_offset, and dst's block at
 * dst_offset back into a map of `channels` channels. dst starts as
 * 1000 + its index mod 2^24 (|src| < 1), so a write outside the block or a value
 * missed inside it differs from the twin's result over the whole map. */
static void test_channel_copy(int64_t B, int64_t S, int channels, int src_channels, int src_offset,
                              int dst_channels, int dst_offset) {
    printf("channel copy B%lld spatial %lld, %d channels: src %d+ of %d <-> dst %d+ of %d\n",
           (long long)B, (long long)S, channels, src_offset, src_channels, dst_offset,
           dst_channels);
    const int64_t sn = B * src_channels * S, dn = B * dst_channels * S, bn = B * channels * S;
    float *src = hrand(sn, 60, -1, 1), *start = hbuf(dn), *back_start = hbuf(bn);
    for (int64_t i = 0; i < dn; i++) start[i] = 1000.0f + (float)(i & 0xffffff);
    for (int64_t i = 0; i < bn; i++) back_start[i] = -1000.0f - (float)(i & 0xffffff);
    float *d_src = din(src, sn), *d_dst = din(start, dn), *d_back = din(back_start, bn);
    gpu->ops->channel_copy(gpu, B, S, channels, d_src, src_channels, src_offset, d_dst,
                           dst_channels, dst_offset);
    gpu->ops->channel_copy(gpu, B, S, channels, d_dst, dst_channels, dst_offset, d_back, channels,
                           0);
    sync_or_fail("channel copy");
    float *dst = copy_of(start, dn), *back_want = copy_of(back_start, bn);
    cpu_channel_copy(NULL, B, S, channels, src, src_channels, src_offset, dst, dst_channels,
                     dst_offset);
    cpu_channel_copy(NULL, B, S, channels, dst, dst_channels, dst_offset, back_want, channels, 0);
    check_exact_f("into dst (whole map)", got(d_dst, dn), dst, dn);
    check_exact_f("back out of dst", got(d_back, bn), back_want, bn);
    release_all();
}

/* ------------------------------------------------------------ failures */

/* A failing cuDNN call or kernel launch is recorded and reported by
 * synchronize, as every op's failure is; each needs a fresh backend, since a
 * failed one stays failed. */
static void test_failures(void) {
    printf("failures are reported, not hidden\n");
    pmoe_error err = {PMOE_OK, ""};
    pmoe_backend *be = NULL;
    void *buf = NULL;
    gpu_die(pmoe_cuda_backend_create(0, &be, &err), &err);
    gpu_die(be->alloc(be, 4096, &buf, &err), &err);
    pmoe_conv_shape bad = {2, 3, 2, 2, 4, 3, 3, 1, 0}; /* a 3x3 kernel on a 2x2 map, no padding */
    be->ops->conv2d_forward(be, &bad, buf, buf, NULL, buf);
    pmoe_status st = be->synchronize(be, &err);
    printf("  conv with no output: %s\n", err.message);
    CHECK(st == PMOE_ERR_UNSUPPORTED && strstr(err.message, "convolution") != NULL);
    be->release(be, buf, 4096);
    pmoe_backend_destroy(be);

    gpu_die(pmoe_cuda_backend_create(0, &be, &err), &err);
    gpu_die(be->alloc(be, 4096, &buf, &err), &err);
    err.message[0] = 0;
    pmoe_bn_shape bn = {2, 3, 4, 0.0f}; /* eps 0 */
    be->ops->batchnorm_forward_train(be, &bn, buf, buf, buf, buf, buf, buf, NULL, NULL, 0.1f);
    st = be->synchronize(be, &err);
    printf("  batch norm eps 0: %s\n", err.message);
    CHECK(st == PMOE_ERR_UNSUPPORTED && strstr(err.message, "eps") != NULL);
    be->release(be, buf, 4096);
    pmoe_backend_destroy(be);
}

int main(void) {
    gpu_test_begin("test_cuda_layers");
    /* A WRN-16-4's convolutions at B = 16: 3x3 same, 3x3 stride 2, the 1x1
     * stride-2 shortcut, and a patch-sized 4x4 stride 4 with a bias. */
    test_conv((pmoe_conv_shape){16, 16, 32, 32, 64, 3, 3, 1, 1}, 0);
    test_conv((pmoe_conv_shape){16, 64, 32, 32, 128, 3, 3, 2, 1}, 0);
    test_conv((pmoe_conv_shape){16, 64, 32, 32, 128, 1, 1, 2, 0}, 0);
    test_conv((pmoe_conv_shape){16, 3, 32, 32, 16, 3, 3, 1, 1}, 1);
    test_conv((pmoe_conv_shape){5, 7, 13, 11, 9, 4, 4, 4, 0}, 1);
    test_batchnorm((pmoe_bn_shape){128, 16, 32 * 32, 1e-5f}, -1, 1);
    test_batchnorm((pmoe_bn_shape){128, 256, 8 * 8, 1e-5f}, -1, 1);
    test_batchnorm((pmoe_bn_shape){128, 16, 32 * 32, 1e-5f}, 9, 11);
    test_batchnorm((pmoe_bn_shape){7, 5, 3, 1e-3f}, -2, 3);
    test_elementwise(128 * 64 * 32 * 32);
    test_elementwise(1001);
    test_pool_bias(128, 256, 64);
    test_pool_bias(128, 10, 1);
    test_pool_bias(3, 5, 300);
    test_moe((pmoe_scatter_shape){128, 64, 8, 16, 32}, 1);
    test_moe((pmoe_scatter_shape){7, 13, 3, 13, 33}, 0);
    test_patch_scale((pmoe_patch_shape){128, 64, 32, 32, 4});
    test_patch_scale((pmoe_patch_shape){3, 5, 13, 10, 4});
    /* A pMoE layer's expert blocks at B = 128 on 32 x 32 maps: the first and
     * the last of 8 experts of 20 channels; a block of 160 of 320 channels
     * (21M values, past the 65536 x 256 threads of one grid, so the
     * grid-stride loop wraps); odd sizes with the block in the middle. */
    test_channel_copy(128, 32 * 32, 20, 20, 0, 160, 0);
    test_channel_copy(128, 32 * 32, 20, 20, 0, 160, 140);
    test_channel_copy(128, 32 * 32, 160, 160, 0, 320, 160);
    test_channel_copy(7, 13, 3, 3, 0, 11, 5);
    test_channel_copy(37, 1, 5, 5, 0, 5, 0); /* channels = src_channels = dst_channels */
    test_failures();
    pmoe_backend_destroy(gpu);
    return test_finish("test_cuda_layers");
}
