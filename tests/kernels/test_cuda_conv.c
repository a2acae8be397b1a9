/* test_cuda_conv.c: the cuDNN convolution wrapper against a direct CPU
 * convolution accumulated in double, for the three directions and a few
 * shapes (3x3 same padding, 3x3 stride 2, 1x1, a 4x4 patch-sized kernel
 * with stride 4), with poisoned outputs, each direction to the tolerance of
 * the class of algorithm cuDNN chose for it (direct, Winograd, FFT); a
 * second call on a cached plan, and the filter gradient twice, must give
 * the same bits (deterministic algorithms). Exits 77 (skipped) without a CUDA device or without cuDNN
 * in this build. */
#include "cuda/cuda_conv.h"
#include "gpu_test_util.h"

static uint64_t seed0;

/* y[b,k,p,q] = sum_{c,r,s} x[b,c,p*st-pad+r,q*st-pad+s] w[k,c,r,s] */
static void conv_cpu(const pmoe_conv_shape *s, const float *x, const float *w, double *y,
                     const float *dy, double *dx, double *dw) {
    const int P = pmoe_conv_out_height(s), Q = pmoe_conv_out_width(s);
    const int C = s->in_channels, H = s->height, W = s->width, K = s->out_channels;
    const int R = s->kernel_h, S = s->kernel_w;
    for (int64_t b = 0; b < s->batch; b++)
        for (int k = 0; k < K; k++)
            for (int p = 0; p < P; p++)
                for (int q = 0; q < Q; q++) {
                    const int64_t yo = ((b * K + k) * P + p) * (int64_t)Q + q;
                    double acc = 0;
                    for (int c = 0; c < C; c++)
                        for (int r = 0; r < R; r++) {
                            const int yy = p * s->stride - s->pad + r;
                            if (yy < 0 || yy >= H) continue;
                            for (int t = 0; t < S; t++) {
                                const int xx = q * s->stride - s->pad + t;
                                if (xx < 0 || xx >= W) continue;
                                const int64_t xo = ((b * C + c) * H + yy) * (int64_t)W + xx;
                                const int64_t wo = ((k * (int64_t)C + c) * R + r) * S + t;
                                acc += (double)x[xo] * w[wo];
                                dx[xo] += (double)dy[yo] * w[wo];
                                dw[wo] += (double)dy[yo] * x[xo];
                            }
                        }
                    y[yo] = acc;
                }
}

/* The relative tolerance of one direction, by the class of the algorithm
 * cuDNN runs for it (cuda_conv.h): the direct and GEMM-like algorithms sum
 * the definition's products, held to `direct` (float32 rounding of the
 * sum); Winograd and FFT transform the operands and legitimately differ by
 * more. Their allowances (50x and 20x) follow the error published for
 * float32 Winograd F(4x4, 3x3) and FFT convolutions (1e-4 to 1e-3 relative
 * and about 1e-4); not yet measured on a GPU here (the stand-in computes
 * the definition for every algorithm). */
static double tolerance_for(pmoe_backend *be, const pmoe_conv_shape *s, int direction,
                            double direct) {
    static const char *const names[3] = {"forward", "backward data", "backward filter"};
    const char *algo = "?";
    pmoe_conv_algo_class cls = PMOE_CONV_ALGO_DIRECT;
    pmoe_error err = {PMOE_OK, ""};
    CHECK_MSG(pmoe_cuda_conv_algorithm(be, s, direction, &algo, &cls, &err) == PMOE_OK, "%s",
              err.message);
    const double rel = cls == PMOE_CONV_ALGO_WINOGRAD ? 50 * direct
                       : cls == PMOE_CONV_ALGO_FFT    ? 20 * direct
                                                      : direct;
    printf("  %-15s %-22s %s class: rel %.0e\n", names[direction], algo,
           cls == PMOE_CONV_ALGO_WINOGRAD ? "Winograd"
           : cls == PMOE_CONV_ALGO_FFT    ? "FFT"
                                          : "direct",
           rel);
    return rel;
}

static void check_shape(pmoe_backend *be, pmoe_conv_shape s) {
    const int P = pmoe_conv_out_height(&s), Q = pmoe_conv_out_width(&s);
    printf("conv B%lld C%d %dx%d -> K%d %dx%d, kernel %dx%d stride %d pad %d\n", (long long)s.batch,
           s.in_channels, s.height, s.width, s.out_channels, P, Q, s.kernel_h, s.kernel_w, s.stride,
           s.pad);
    const int64_t xn = s.batch * s.in_channels * s.height * s.width;
    const int64_t wn = (int64_t)s.out_channels * s.in_channels * s.kernel_h * s.kernel_w;
    const int64_t yn = s.batch * s.out_channels * (int64_t)P * Q;
    float *x = malloc((size_t)xn * 4), *w = malloc((size_t)wn * 4), *dy = malloc((size_t)yn * 4);
    fill_uniform(x, xn, seed0 + 1, -1, 1);
    fill_uniform(w, wn, seed0 + 2, -0.5f, 0.5f);
    fill_uniform(dy, yn, seed0 + 3, -1, 1);
    double *y = calloc((size_t)yn, 8), *dx = calloc((size_t)xn, 8), *dw = calloc((size_t)wn, 8);
    conv_cpu(&s, x, w, y, dy, dx, dw);

    float *d_x = to_device(be, x, (size_t)xn * 4), *d_w = to_device(be, w, (size_t)wn * 4);
    float *d_dy = to_device(be, dy, (size_t)yn * 4);
    float *d_y = poisoned(be, (size_t)yn * 4), *d_dx = poisoned(be, (size_t)xn * 4);
    float *d_dw = poisoned(be, (size_t)wn * 4), *d_dw2 = poisoned(be, (size_t)wn * 4);
    pmoe_error err = {PMOE_OK, ""};
    pmoe_status st = pmoe_cuda_conv_forward(be, &s, d_x, d_w, d_y, &err);
    if (!st) st = pmoe_cuda_conv_backward_data(be, &s, d_dy, d_w, d_dx, &err);
    if (!st) st = pmoe_cuda_conv_backward_filter(be, &s, d_x, d_dy, d_dw, &err);
    if (!st) st = pmoe_cuda_conv_backward_filter(be, &s, d_x, d_dy, d_dw2, &err); /* cached plan */
    if (!st) st = be->synchronize(be, &err);
    CHECK_MSG(st == PMOE_OK, "%s", err.message);
    if (st == PMOE_OK) {
        float *gy = from_device(be, d_y, (size_t)yn * 4),
              *gdx = from_device(be, d_dx, (size_t)xn * 4);
        float *gdw = from_device(be, d_dw, (size_t)wn * 4),
              *gdw2 = from_device(be, d_dw2, (size_t)wn * 4);
        const double base = 1e-5 * (s.in_channels * s.kernel_h * s.kernel_w > 256 ? 4 : 1);
        double rel[3];
        for (int d = 0; d < 3; d++) rel[d] = tolerance_for(be, &s, d, base);
        check_close("forward", gy, y, yn, rel[0] * 8, rel[0]);
        check_close("backward data", gdx, dx, xn, rel[1] * 8, rel[1]);
        check_close("backward filter", gdw, dw, wn, rel[2] * 8 * (double)s.batch * P * Q / 64,
                    rel[2]);
        const int same = memcmp(gdw, gdw2, (size_t)wn * 4) == 0;
        printf("  %-44s %s\n", "filter gradient twice", same ? "bit-identical" : "DIFFERS");
        CHECK(same);
        free(gy);
        free(gdx);
        free(gdw);
        free(gdw2);
    }
    device_free(be, d_x, (size_t)xn * 4);
    device_free(be, d_w, (size_t)wn * 4);
    device_free(be, d_dy, (size_t)yn * 4);
    device_free(be, d_y, (size_t)yn * 4);
    device_free(be, d_dx, (size_t)xn * 4);
    device_free(be, d_dw, (size_t)wn * 4);
    device_free(be, d_dw2, (size_t)wn * 4);
    free(x), free(w), free(dy), free(y), free(dx), free(dw);
}

int main(void) {
    if (!pmoe_cuda_conv_built()) {
        printf("test_cuda_conv: skipped: this build has no cuDNN\n");
        return 77;
    }
    pmoe_backend *be = gpu_or_skip("test_cuda_conv");
    seed0 = test_seed();
    check_shape(be, (pmoe_conv_shape){4, 16, 12, 12, 32, 3, 3, 1, 1});
    check_shape(be, (pmoe_conv_shape){3, 8, 15, 15, 16, 3, 3, 2, 1});
    check_shape(be, (pmoe_conv_shape){5, 32, 8, 8, 24, 1, 1, 1, 0});
    check_shape(be, (pmoe_conv_shape){2, 3, 32, 32, 10, 4, 4, 4, 0});
    pmoe_error err = {PMOE_OK, ""};
    /* A CPU backend is refused with a message. */
    pmoe_backend *cpu = NULL;
    gpu_die(pmoe_cpu_backend_create(1, &cpu, &err), &err);
    pmoe_conv_shape s = {1, 1, 4, 4, 1, 3, 3, 1, 1};
    CHECK(pmoe_cuda_conv_forward(cpu, &s, NULL, NULL, NULL, &err) == PMOE_ERR_UNSUPPORTED);
    pmoe_backend_destroy(cpu);
    pmoe_backend_destroy(be);
    return test_finish("test_cuda_conv");
}
