/* test_layers.c: the CPU deep-model layers (backend.h, "Deep-model layers")
 * against naive double-precision loops, their backward passes against
 * finite differences, and their results against themselves under 1, 2 and
 * 3 OpenMP threads.
 *
 * As in test_ops.c: forward references are plain loops in double that share
 * no code with the ops; backward checks take L = sum(out * R) for a fixed
 * random R and compare the op's gradients with Richardson-extrapolated
 * central differences of L (for large inputs at an evenly spread subset of
 * elements). Outputs the contract says are overwritten start as NaN, so a
 * missed element is caught; input gradients start at a known D0 and must end
 * at D0 + gradient, since every backward adds into dx. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu_ops.h"
#include "op_test_util.h"

/* ---------------------------------------------------------------- helpers */

/* The buffers (fbuf, dbuf, ibuf, frand, fcopy, free_all) are test_util.h's;
 * dot_ff, all_finite, fd_derivative and the determinism check are
 * op_test_util.h's. */

/* want[i] = base[i] + add[i]: what an accumulating gradient must end at. */
static double *plus(const float *base, const double *add, int64_t n) {
    double *w = dbuf(n);
    for (int64_t i = 0; i < n; i++) w[i] = (double)base[i] + add[i];
    return w;
}
static void check_same(const char *what, const float *got, const float *want, int64_t n) {
    check_exact_f(what, got, want, n);
}

/* Distinct picks per (b, s): the first l of a shuffle of the n patches. */
static int32_t *random_selection(int64_t B, int k, int n, int l, uint64_t seed) {
    int32_t *sel = ibuf(B * k * l);
    fill_random_picks(sel, B * k, n, l, seed, 0x5e1);
    return sel;
}

/* ------------------------------------------------------ finite differences */

/* Compares got[i] with fd_derivative (op_test_util.h) of f w.r.t. x[i] at
 * every element when n <= max_points, else at max_points evenly spread ones.
 * Elements whose perturbation flipped a discrete choice are left out (at
 * most half may be). base, when not NULL, is what an accumulating gradient
 * started at: got is then held against base + the difference quotient. */
static void fd_check(const char *what, objective_fn f, void *ctx, float *x, int64_t n,
                     const float *got, const float *base, int64_t max_points, double eps,
                     double atol, double rtol) {
    const int64_t points = n < max_points ? n : max_points;
    float *g = malloc((size_t)(points > 0 ? points : 1) * sizeof(float));
    double *w = malloc((size_t)(points > 0 ? points : 1) * sizeof(double));
    int64_t kept = 0;
    for (int64_t q = 0; q < points; q++) {
        const int64_t i = points == n ? q : (q * n + n / (2 * points)) / points;
        int ok = 1;
        const double derivative = fd_derivative(f, ctx, x, i, eps, &ok);
        if (!ok) continue;
        w[kept] = derivative + (base ? (double)base[i] : 0.0);
        g[kept] = got[i];
        kept++;
    }
    int dummy = 1;
    f(ctx, &dummy); /* leave the context's outputs at the unperturbed point */
    char label[160];
    if (kept < points)
        snprintf(label, sizeof label, "%s (FD, %lld skipped)", what, (long long)(points - kept));
    else if (points < n)
        snprintf(label, sizeof label, "%s (FD, %lld of %lld)", what, (long long)points,
                 (long long)n);
    else snprintf(label, sizeof label, "%s (FD)", what);
    check_close(label, g, w, kept, atol, rtol);
    CHECK_MSG(2 * kept >= points, "%s: %lld of %lld points skipped", what,
              (long long)(points - kept), (long long)points);
    free(g);
    free(w);
}

/* ------------------------------------------------------------ convolution */

/* y[b, k, oy, ox] = bias[k] + sum_{c, r, s} w[k, c, r, s] x[b, c, oy st + r - pad, ox st + s - pad]
 * (0 outside the map). */
static void ref_conv_forward(const pmoe_conv_shape *s, const float *x, const float *w,
                             const float *bias, double *y) {
    const int C = s->in_channels, H = s->height, W = s->width, K = s->out_channels;
    const int R = s->kernel_h, S = s->kernel_w;
    const int P = (H + 2 * s->pad - R) / s->stride + 1, Q = (W + 2 * s->pad - S) / s->stride + 1;
    for (int64_t b = 0; b < s->batch; b++)
        for (int k = 0; k < K; k++)
            for (int oy = 0; oy < P; oy++)
                for (int ox = 0; ox < Q; ox++) {
                    double acc = bias ? bias[k] : 0.0;
                    for (int c = 0; c < C; c++)
                        for (int r = 0; r < R; r++)
                            for (int q = 0; q < S; q++) {
                                const int iy = oy * s->stride + r - s->pad;
                                const int ix = ox * s->stride + q - s->pad;
                                if (iy >= 0 && iy < H && ix >= 0 && ix < W)
                                    acc += (double)w[((k * C + c) * R + r) * S + q] *
                                           x[((b * C + c) * H + iy) * W + ix];
                            }
                    y[((b * K + k) * P + oy) * Q + ox] = acc;
                }
}

/* The transposed loops: each output position hands dy back to its inputs. */
static void ref_conv_backward(const pmoe_conv_shape *s, const float *x, const float *w,
                              const float *dy, double *dx, double *dw, double *dbias) {
    const int C = s->in_channels, H = s->height, W = s->width, K = s->out_channels;
    const int R = s->kernel_h, S = s->kernel_w;
    const int P = (H + 2 * s->pad - R) / s->stride + 1, Q = (W + 2 * s->pad - S) / s->stride + 1;
    for (int64_t b = 0; b < s->batch; b++)
        for (int k = 0; k < K; k++)
            for (int oy = 0; oy < P; oy++)
                for (int ox = 0; ox < Q; ox++) {
                    const double g = dy[((b * K + k) * P + oy) * Q + ox];
                    dbias[k] += g;
                    for (int c = 0; c < C; c++)
                        for (int r = 0; r < R; r++)
                            for (int q = 0; q < S; q++) {
                                const int iy = oy * s->stride + r - s->pad;
                                const int ix = ox * s->stride + q - s->pad;
                                if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                                const int64_t xi = ((b * C + c) * H + iy) * W + ix;
                                const int64_t wi = ((k * C + c) * R + r) * S + q;
                                dx[xi] += g * w[wi];
                                dw[wi] += g * x[xi];
                            }
                }
}

typedef struct {
    pmoe_conv_shape s;
    float *x, *w, *bias, *y;
    const float *R;
    int64_t ny;
} conv_ctx;

static double conv_objective(void *p, int *same) {
    conv_ctx *c = p;
    cpu_conv2d_forward(NULL, &c->s, c->x, c->w, c->bias, c->y);
    return dot_ff(c->y, c->R, c->ny);
}

static void conv_case(int64_t B, int C, int H, int W, int K, int R, int S, int stride, int pad,
                      int with_bias, uint64_t seed) {
    pmoe_conv_shape s = {B, C, H, W, K, R, S, stride, pad};
    const int P = pmoe_conv_out_height(&s), Q = pmoe_conv_out_width(&s);
    const int64_t nx = B * C * H * W, nw = (int64_t)K * C * R * S, ny = B * K * P * Q;
    char name[96], what[160];
    snprintf(name, sizeof name, "conv B=%lld %dx%dx%d K=%d %dx%d s%d p%d%s", (long long)B, C, H, W,
             K, R, S, stride, pad, with_bias ? " bias" : "");
    conv_ctx c = {s,
                  frand(nx, seed, -1, 1),
                  frand(nw, seed + 1, -0.5f, 0.5f),
                  with_bias ? frand(K, seed + 2, -1, 1) : NULL,
                  fbuf(ny),
                  frand(ny, seed + 3, -1, 1),
                  ny};
    cpu_conv2d_forward(NULL, &s, c.x, c.w, c.bias, c.y);
    double *want = dbuf(ny);
    ref_conv_forward(&s, c.x, c.w, c.bias, want);
    snprintf(what, sizeof what, "%s: forward", name);
    check_close(what, c.y, want, ny, 1e-5, 1e-5);

    /* Backward: dx starts at D0, dw and dbias as NaN. */
    float *D0 = frand(nx, seed + 4, -2, 2), *dx = fcopy(D0, nx), *dw = fbuf(nw), *db = fbuf(K);
    cpu_conv2d_backward(NULL, &s, c.x, c.w, c.R, dx, dw, db);
    double *wdx = dbuf(nx), *wdw = dbuf(nw), *wdb = dbuf(K);
    ref_conv_backward(&s, c.x, c.w, c.R, wdx, wdw, wdb);
    snprintf(what, sizeof what, "%s: dx = D0 + loops", name);
    check_close(what, dx, plus(D0, wdx, nx), nx, 1e-5, 1e-5);
    snprintf(what, sizeof what, "%s: dw vs loops", name);
    check_close(what, dw, wdw, nw, 1e-5, 1e-5);
    snprintf(what, sizeof what, "%s: dbias vs loops", name);
    check_close(what, db, wdb, K, 1e-5, 1e-5);

    /* L is linear in each input, so a wide step is exact up to rounding. */
    snprintf(what, sizeof what, "%s: dx", name);
    fd_check(what, conv_objective, &c, c.x, nx, dx, D0, 120, 0.25, 1e-4, 1e-3);
    snprintf(what, sizeof what, "%s: dw", name);
    fd_check(what, conv_objective, &c, c.w, nw, dw, NULL, 120, 0.25, 1e-4, 1e-3);
    if (with_bias) {
        snprintf(what, sizeof what, "%s: dbias", name);
        fd_check(what, conv_objective, &c, c.bias, K, db, NULL, 120, 0.25, 1e-4, 1e-3);
    }

    /* NULL gradients are skipped and do not change the others. */
    float *dx1 = fcopy(D0, nx), *dw1 = fbuf(nw), *db1 = fbuf(K);
    cpu_conv2d_backward(NULL, &s, c.x, c.w, c.R, dx1, NULL, NULL);
    cpu_conv2d_backward(NULL, &s, c.x, c.w, c.R, NULL, dw1, NULL);
    cpu_conv2d_backward(NULL, &s, c.x, c.w, c.R, NULL, NULL, db1);
    snprintf(what, sizeof what, "%s: dx, dw, dbias alone", name);
    CHECK_MSG(memcmp(dx1, dx, (size_t)nx * sizeof(float)) == 0 &&
                  memcmp(dw1, dw, (size_t)nw * sizeof(float)) == 0 &&
                  memcmp(db1, db, (size_t)K * sizeof(float)) == 0,
              "%s differ from the full call", what);
}

static void test_conv(void) {
    printf("conv2d\n");
    { /* By hand: one 3x3 map of 1..9, the 3x3 kernel of ones with pad 1
         * gives the sums of each 3x3 neighbourhood; with stride 2 the corners. */
        const float x[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9}, w[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
        const float bias[1] = {0.5f};
        pmoe_conv_shape s = {1, 1, 3, 3, 1, 3, 3, 1, 1};
        float y[9];
        for (int i = 0; i < 9; i++) y[i] = NAN;
        const double want[9] = {12.5, 21.5, 16.5, 27.5, 45.5, 33.5, 24.5, 39.5, 28.5};
        cpu_conv2d_forward(NULL, &s, x, w, bias, y);
        check_close("conv 3x3 ones pad 1 by hand", y, want, 9, 1e-6, 0);
        pmoe_conv_shape s2 = {1, 1, 3, 3, 1, 3, 3, 2, 1};
        float y2[4] = {NAN, NAN, NAN, NAN};
        const double want2[4] = {12, 16, 24, 28};
        cpu_conv2d_forward(NULL, &s2, x, w, NULL, y2);
        check_close("conv 3x3 ones stride 2 pad 1 by hand", y2, want2, 4, 1e-6, 0);
    }
    uint64_t seed = 1000;
    conv_case(2, 3, 5, 7, 4, 3, 3, 1, 1, 1, seed += 10);   /* 3x3 pad 1, non-square, bias */
    conv_case(3, 4, 6, 5, 2, 3, 3, 2, 1, 0, seed += 10);   /* stride 2, no bias */
    conv_case(2, 3, 6, 5, 5, 3, 3, 1, 0, 1, seed += 10);   /* no padding */
    conv_case(2, 2, 5, 6, 3, 2, 3, 1, 1, 0, seed += 10);   /* R != S */
    conv_case(2, 5, 4, 6, 3, 1, 1, 1, 0, 1, seed += 10);   /* 1x1 */
    conv_case(2, 4, 7, 6, 6, 1, 1, 2, 0, 0, seed += 10);   /* 1x1 stride 2 (shortcut) */
    conv_case(20, 6, 3, 5, 4, 1, 1, 1, 0, 1, seed += 10);  /* 1x1, many samples per GEMM */
    conv_case(65, 8, 4, 4, 8, 3, 3, 1, 1, 1, seed += 10);  /* many tiny maps, last task 1 sample */
    conv_case(600, 4, 1, 1, 3, 3, 3, 1, 1, 1, seed += 10); /* 1x1 maps, 3x3 pad 1 */
    conv_case(300, 6, 1, 1, 5, 1, 1, 1, 0, 1, seed += 10); /* 1x1 on 1x1 maps: one product */
    conv_case(3, 7, 1, 1, 4, 1, 1, 1, 0, 0, seed += 10);   /* the same, a few samples */
    conv_case(2, 2, 23, 25, 3, 3, 3, 1, 1, 1, seed += 10); /* one sample fills a GEMM */
    conv_case(2, 3, 24, 24, 2, 1, 1, 1, 0, 0, seed += 10); /* 1x1 straight from x */
    conv_case(3, 2, 9, 9, 3, 3, 3, 2, 0, 1, seed += 10);   /* stride 2 no padding */
    conv_case(2, 2, 33, 36, 3, 3, 3, 2, 1, 1, seed += 10); /* wide rows, stride 2 */
    conv_case(2, 2, 18, 20, 3, 2, 3, 1, 1, 0, seed += 10); /* wide rows, R != S */
    conv_case(3, 3, 11, 12, 4, 3, 3, 1, 1, 1, seed += 10); /* narrow rows, Q = 12 */
}

/* -------------------------------------------------------------- batch norm */

typedef struct {
    pmoe_bn_shape s;
    float *x, *gamma, *beta, *y, *mean, *invstd, *rm, *rv;
    const float *R;
    int64_t n;
} bn_ctx;

static double bn_objective(void *p, int *same) {
    bn_ctx *c = p;
    cpu_batchnorm_forward_train(NULL, &c->s, c->x, c->gamma, c->beta, c->y, c->mean, c->invstd,
                                c->rm, c->rv, 0.1f);
    return dot_ff(c->y, c->R, c->n);
}

/* x[b, c, i] = offset_c + spread_c u with u in [-1, 1): channels with their
 * own mean (up to `offset`) and scale. */
static float *bn_input(int64_t B, int C, int64_t S, float offset, uint64_t seed) {
    float *x = frand(B * C * S, seed, -1, 1);
    float *off = frand(C, seed + 1, -offset, offset), *spread = frand(C, seed + 2, 0.2f, 2.0f);
    for (int64_t b = 0; b < B; b++)
        for (int c = 0; c < C; c++)
            for (int64_t i = 0; i < S; i++) {
                float *v = &x[(b * C + c) * S + i];
                *v = off[c] + spread[c] * *v;
            }
    return x;
}

static void bn_case(int64_t B, int C, int64_t S, float offset, uint64_t seed) {
    const float eps = 1e-5f, momentum = 0.1f;
    pmoe_bn_shape s = {B, C, S, eps};
    const int64_t n = B * C * S, N = B * S;
    char name[96], what[160];
    snprintf(name, sizeof name, "bn B=%lld C=%d S=%lld mean~%g", (long long)B, C, (long long)S,
             offset);
    float *x = bn_input(B, C, S, offset, seed);
    float *gamma = frand(C, seed + 3, 0.5f, 1.5f), *beta = frand(C, seed + 4, -0.5f, 0.5f);
    float *rm0 = frand(C, seed + 5, -1, 1), *rv0 = frand(C, seed + 6, 0.5f, 2.0f);
    float *rm = fcopy(rm0, C), *rv = fcopy(rv0, C);
    float *y = fbuf(n), *mean = fbuf(C), *invstd = fbuf(C);
    cpu_batchnorm_forward_train(NULL, &s, x, gamma, beta, y, mean, invstd, rm, rv, momentum);

    double *wy = dbuf(n), *wm = dbuf(C), *wi = dbuf(C), *wrm = dbuf(C), *wrv = dbuf(C);
    double *bmean = dbuf(C), *bvar = dbuf(C);
    for (int c = 0; c < C; c++) {
        double sum = 0.0, sq = 0.0;
        for (int64_t b = 0; b < B; b++)
            for (int64_t i = 0; i < S; i++) sum += x[(b * C + c) * S + i];
        const double mu = sum / N;
        for (int64_t b = 0; b < B; b++)
            for (int64_t i = 0; i < S; i++) {
                const double d = x[(b * C + c) * S + i] - mu;
                sq += d * d;
            }
        const double var = sq / N;
        bmean[c] = mu, bvar[c] = var;
        wm[c] = mu;
        wi[c] = 1.0 / sqrt(var + eps);
        wrm[c] = (1.0 - momentum) * rm0[c] + momentum * mu;
        wrv[c] = (1.0 - momentum) * rv0[c] + momentum * var * N / (N - 1);
        for (int64_t b = 0; b < B; b++)
            for (int64_t i = 0; i < S; i++) {
                const int64_t at = (b * C + c) * S + i;
                wy[at] = gamma[c] * (x[at] - mu) * wi[c] + beta[c];
            }
    }
    snprintf(what, sizeof what, "%s: train y", name);
    check_close(what, y, wy, n, 1e-5, 1e-5);
    snprintf(what, sizeof what, "%s: save_mean", name);
    check_close(what, mean, wm, C, 1e-6, 1e-6);
    snprintf(what, sizeof what, "%s: save_invstd (biased var)", name);
    check_close(what, invstd, wi, C, 0, 1e-6);
    snprintf(what, sizeof what, "%s: running_mean", name);
    check_close(what, rm, wrm, C, 1e-6, 1e-6);
    snprintf(what, sizeof what, "%s: running_var (unbiased)", name);
    check_close(what, rv, wrv, C, 1e-6, 1e-6);

    /* Eval with running statistics far from the batch's: mean shifted by
     * one batch std and variance 4x. */
    float *em = fbuf(C), *ev = fbuf(C), *ye = fbuf(n);
    for (int c = 0; c < C; c++) {
        em[c] = (float)(bmean[c] + sqrt(bvar[c]));
        ev[c] = (float)(4.0 * bvar[c] + 0.1);
    }
    cpu_batchnorm_forward_eval(NULL, &s, x, gamma, beta, em, ev, ye);
    double *wye = dbuf(n), gap = 0.0;
    for (int64_t b = 0; b < B; b++)
        for (int c = 0; c < C; c++)
            for (int64_t i = 0; i < S; i++) {
                const int64_t at = (b * C + c) * S + i;
                wye[at] = gamma[c] * (x[at] - (double)em[c]) / sqrt((double)ev[c] + eps) + beta[c];
                gap = fmax(gap, fabs(wye[at] - wy[at]));
            }
    snprintf(what, sizeof what, "%s: eval y (running stats)", name);
    check_close(what, ye, wye, n, 1e-5, 1e-5);
    /* The check above can tell the statistics apart: batch statistics would miss by `gap`. */
    CHECK_MSG(gap > 0.3, "%s: eval and train outputs differ by only %g", name, gap);

    /* Backward through the batch statistics. */
    bn_ctx c = {s,       x,       gamma,   beta,    fbuf(n),
                fbuf(C), fbuf(C), fbuf(C), fbuf(C), frand(n, seed + 7, -1, 1),
                n};
    float *D0 = frand(n, seed + 8, -2, 2), *dx = fcopy(D0, n), *dg = fbuf(C), *dbt = fbuf(C);
    cpu_batchnorm_backward(NULL, &s, x, gamma, mean, invstd, c.R, dx, dg, dbt);
    snprintf(what, sizeof what, "%s: dx", name);
    fd_check(what, bn_objective, &c, c.x, n, dx, D0, 150, 1e-2, 2e-4, 2e-3);
    snprintf(what, sizeof what, "%s: dgamma", name);
    fd_check(what, bn_objective, &c, c.gamma, C, dg, NULL, 150, 1e-2, 2e-4, 2e-3);
    snprintf(what, sizeof what, "%s: dbeta", name);
    fd_check(what, bn_objective, &c, c.beta, C, dbt, NULL, 150, 1e-2, 2e-4, 2e-3);
    float *dx1 = fcopy(D0, n), *dg1 = fbuf(C), *db1 = fbuf(C);
    cpu_batchnorm_backward(NULL, &s, x, gamma, mean, invstd, c.R, dx1, NULL, NULL);
    cpu_batchnorm_backward(NULL, &s, x, gamma, mean, invstd, c.R, NULL, dg1, db1);
    CHECK_MSG(memcmp(dx1, dx, (size_t)n * sizeof(float)) == 0 &&
                  memcmp(dg1, dg, (size_t)C * sizeof(float)) == 0 &&
                  memcmp(db1, dbt, (size_t)C * sizeof(float)) == 0,
              "%s: backward with NULL gradients differs", name);
}

static void test_batchnorm(void) {
    printf("batchnorm\n");
    { /* By hand: one channel, x = {1, 3}: mean 2, biased var 1, unbiased 2;
         * from r = (0, 1) with momentum 0.5: running (1, 1.5). */
        pmoe_bn_shape s = {2, 1, 1, 0.0f};
        const float x[2] = {1, 3}, gamma[1] = {2}, beta[1] = {0.5f};
        float y[2] = {NAN, NAN}, m[1] = {NAN}, is[1] = {NAN}, rm[1] = {0}, rv[1] = {1};
        cpu_batchnorm_forward_train(NULL, &s, x, gamma, beta, y, m, is, rm, rv, 0.5f);
        const double wy[2] = {-1.5, 2.5}, wstats[4] = {2, 1, 1, 1.5};
        const float got[4] = {m[0], is[0], rm[0], rv[0]};
        check_close("bn train by hand: y", y, wy, 2, 1e-6, 0);
        check_close("bn train by hand: mean invstd rmean rvar", got, wstats, 4, 1e-6, 0);
        float ye[2] = {NAN, NAN};
        const float em[1] = {1}, ev[1] = {4};
        const double wye[2] = {0.5, 2.5}; /* 2 (x - 1) / 2 + 0.5 */
        cpu_batchnorm_forward_eval(NULL, &s, x, gamma, beta, em, ev, ye);
        check_close("bn eval by hand", ye, wye, 2, 1e-6, 0);
    }
    bn_case(3, 4, 5, 1.0f, 2000);
    bn_case(6, 3, 1, 0.5f, 2100);   /* spatial 1: a fully connected layer's BN */
    bn_case(4, 2, 16, 20.0f, 2200); /* means far from 0 */
    bn_case(2, 5, 9, 0.0f, 2300);
    bn_case(9, 37, 1, 0.3f, 2400); /* narrow maps in blocks of 16 channels, with a remainder */
    bn_case(5, 20, 4, 2.0f, 2500); /* 2x2 patches: a narrow map with a row of 4 */
}

/* ----------------------------------------------------- elementwise, pooling */

typedef struct {
    int64_t n;
    float *x, *y;
    const float *R;
    int which; /* 0 relu, 1 avgpool, 2 channel bias */
    int64_t rows, spatial;
    int64_t batch;
    int channels;
    const float *y0;
    const unsigned char *pattern;
} small_ctx;

static double small_objective(void *p, int *same) {
    small_ctx *c = p;
    if (c->which == 0) {
        cpu_relu_forward(NULL, c->n, c->x, c->y);
        for (int64_t i = 0; i < c->n; i++)
            if ((c->y[i] > 0.0f) != c->pattern[i]) *same = 0;
        return dot_ff(c->y, c->R, c->n);
    }
    if (c->which == 1) {
        cpu_avgpool_forward(NULL, c->rows, c->spatial, c->x, c->y);
        return dot_ff(c->y, c->R, c->rows);
    }
    const int64_t ny = c->batch * c->channels * c->spatial;
    memcpy(c->y, c->y0, (size_t)ny * sizeof(float));
    cpu_channel_bias_forward(NULL, c->batch, c->channels, c->spatial, c->x, c->y);
    return dot_ff(c->y, c->R, ny);
}

static void test_elementwise(void) {
    printf("relu, axpby, avgpool, channel_bias\n");
    { /* ReLU */
        const int64_t n = 300;
        float *x = frand(n, 3000, -1, 1), *y = fbuf(n), *R = frand(n, 3001, -1, 1);
        for (int64_t i = 0; i < n; i++)
            if (fabsf(x[i]) < 0.05f) x[i] = 0.05f; /* keep FD steps off the kink */
        x[7] = 0.0f;                               /* max(0, 0) = 0 and no gradient at exactly 0 */
        cpu_relu_forward(NULL, n, x, y);
        double *wy = dbuf(n), *wg = dbuf(n);
        unsigned char *pattern = track(malloc((size_t)n));
        for (int64_t i = 0; i < n; i++) {
            wy[i] = x[i] > 0 ? x[i] : 0.0;
            wg[i] = x[i] > 0 ? R[i] : 0.0;
            pattern[i] = x[i] > 0;
        }
        check_close("relu forward", y, wy, n, 1e-30, 0);
        float *inplace = fcopy(x, n);
        cpu_relu_forward(NULL, n, inplace, inplace);
        check_same("relu forward in place (y = x)", inplace, y, n);
        float *D0 = frand(n, 3002, -2, 2), *dx = fcopy(D0, n);
        cpu_relu_backward(NULL, n, y, R, dx);
        check_close("relu backward dx = D0 + dy [y > 0]", dx, plus(D0, wg, n), n, 0, 1e-7);
        small_ctx c = {n, x, fbuf(n), R, 0, 0, 0, 0, 0, NULL, pattern};
        fd_check("relu dx", small_objective, &c, x, n, dx, D0, 300, 1e-2, 1e-5, 1e-4);
    }
    { /* axpby: beta = 0 must not read y (NaN there), else alpha x + beta y */
        const int64_t n = 100;
        float *x = frand(n, 3010, -1, 1), *y = fbuf(n);
        cpu_axpby(NULL, n, 2.5f, x, 0.0f, y);
        double *w = dbuf(n);
        for (int64_t i = 0; i < n; i++) w[i] = 2.5 * x[i];
        check_close("axpby beta 0 over NaN y", y, w, n, 0, 1e-7);
        float *y0 = frand(n, 3011, -1, 1), *y2 = fcopy(y0, n);
        cpu_axpby(NULL, n, -0.5f, x, 0.75f, y2);
        for (int64_t i = 0; i < n; i++) w[i] = -0.5 * x[i] + 0.75 * y0[i];
        check_close("axpby alpha -0.5 beta 0.75", y2, w, n, 1e-7, 1e-6);
        float *y3 = fcopy(y0, n);
        cpu_axpby(NULL, n, 1.0f, x, 1.0f, y3);
        for (int64_t i = 0; i < n; i++) w[i] = (double)x[i] + y0[i];
        check_close("axpby 1, 1 (a sum)", y3, w, n, 1e-7, 1e-6);
    }
    { /* global average pooling: rows x spatial -> rows */
        const int64_t rows = 12, sp = 25;
        float *x = frand(rows * sp, 3020, -1, 1), *y = fbuf(rows), *R = frand(rows, 3021, -1, 1);
        cpu_avgpool_forward(NULL, rows, sp, x, y);
        double *w = dbuf(rows), *wg = dbuf(rows * sp);
        for (int64_t r = 0; r < rows; r++) {
            for (int64_t i = 0; i < sp; i++) w[r] += x[r * sp + i];
            w[r] /= sp;
            for (int64_t i = 0; i < sp; i++) wg[r * sp + i] = R[r] / (double)sp;
        }
        check_close("avgpool forward", y, w, rows, 1e-7, 1e-6);
        float *D0 = frand(rows * sp, 3022, -2, 2), *dx = fcopy(D0, rows * sp);
        cpu_avgpool_backward(NULL, rows, sp, R, dx);
        check_close("avgpool backward dx = D0 + dy / spatial", dx, plus(D0, wg, rows * sp),
                    rows * sp, 1e-7, 1e-6);
        small_ctx c = {rows * sp, x, fbuf(rows), R, 1, rows, sp, 0, 0, NULL, NULL};
        fd_check("avgpool dx", small_objective, &c, x, rows * sp, dx, D0, 300, 0.25, 1e-6, 1e-4);
    }
    { /* channel bias: y[b, c, i] += bias[c] */
        const int64_t B = 3, sp = 7;
        const int C = 5;
        const int64_t n = B * C * sp;
        float *bias = frand(C, 3030, -1, 1), *y0 = frand(n, 3031, -1, 1), *y = fcopy(y0, n);
        cpu_channel_bias_forward(NULL, B, C, sp, bias, y);
        double *w = dbuf(n), *wb = dbuf(C);
        float *R = frand(n, 3032, -1, 1);
        for (int64_t b = 0; b < B; b++)
            for (int c = 0; c < C; c++)
                for (int64_t i = 0; i < sp; i++) {
                    w[(b * C + c) * sp + i] = (double)y0[(b * C + c) * sp + i] + bias[c];
                    wb[c] += R[(b * C + c) * sp + i];
                }
        check_close("channel bias forward (adds)", y, w, n, 1e-7, 1e-6);
        float *db = fbuf(C);
        cpu_channel_bias_backward(NULL, B, C, sp, R, db);
        check_close("channel bias backward vs loop", db, wb, C, 1e-6, 1e-6);
        small_ctx c = {n, bias, fbuf(n), R, 2, 0, sp, B, C, y0, NULL};
        fd_check("channel bias dbias", small_objective, &c, bias, C, db, NULL, 300, 0.25, 1e-5,
                 1e-4);
        /* spatial 1: a fully connected layer's bias */
        float *f0 = frand(B * C, 3033, -1, 1), *f = fcopy(f0, B * C);
        cpu_channel_bias_forward(NULL, B, C, 1, bias, f);
        double *wf = dbuf(B * C);
        for (int64_t i = 0; i < B * C; i++) wf[i] = (double)f0[i] + bias[i % C];
        check_close("channel bias spatial 1", f, wf, B * C, 1e-7, 1e-6);
    }
}

/* ------------------------------------------------------------ pMoE layer */

typedef struct {
    pmoe_scatter_shape s;
    float *expert_out, *gate, *out;
    const int32_t *sel;
    const float *R;
    int64_t nout;
} scatter_ctx;

static double scatter_objective(void *p, int *same) {
    scatter_ctx *c = p;
    cpu_moe_scatter_forward(NULL, &c->s, c->expert_out, c->sel, c->gate, c->out);
    return dot_ff(c->out, c->R, c->nout);
}

static void scatter_case(int64_t B, int n, int k, int l, int e, uint64_t seed) {
    pmoe_scatter_shape s = {B, n, k, l, e};
    const int64_t rows = B * l, nexp = k * rows * e, nout = B * n * k * e, ng = B * k * l;
    char name[96], what[160];
    snprintf(name, sizeof name, "moe_scatter B=%lld n=%d k=%d l=%d e=%d", (long long)B, n, k, l, e);
    int32_t *sel = random_selection(B, k, n, l, seed);
    scatter_ctx c = {s,
                     frand(nexp, seed + 1, -1, 1),
                     frand(ng, seed + 2, 0.1f, 1),
                     fbuf(nout),
                     sel,
                     frand(nout, seed + 3, -1, 1),
                     nout};
    for (int with_gate = 1; with_gate >= 0; with_gate--) {
        const float *gate = with_gate ? c.gate : NULL;
        float *out = fbuf(nout);
        cpu_moe_scatter_forward(NULL, &s, c.expert_out, sel, gate, out);
        double *w = dbuf(nout); /* zeros but where a pick lands */
        for (int64_t b = 0; b < B; b++)
            for (int x = 0; x < k; x++)
                for (int t = 0; t < l; t++) {
                    const int64_t pick = (b * k + x) * l + t;
                    for (int i = 0; i < e; i++)
                        w[(b * n + sel[pick]) * k * e + x * e + i] =
                            (gate ? gate[pick] : 1.0) *
                            c.expert_out[(x * rows + b * l + t) * e + i];
                }
        snprintf(what, sizeof what, "%s: forward%s", name, with_gate ? "" : " gate NULL");
        check_close(what, out, w, nout, 1e-30, 1e-7);

        float *dexp = fbuf(nexp), *dg = fbuf(ng);
        cpu_moe_scatter_backward(NULL, &s, c.R, c.expert_out, sel, gate, dexp, dg);
        double *wdx = dbuf(nexp), *wdg = dbuf(ng);
        for (int64_t b = 0; b < B; b++)
            for (int x = 0; x < k; x++)
                for (int t = 0; t < l; t++) {
                    const int64_t pick = (b * k + x) * l + t;
                    for (int i = 0; i < e; i++) {
                        const double r = c.R[(b * n + sel[pick]) * k * e + x * e + i];
                        const int64_t at = (x * rows + b * l + t) * e + i;
                        wdx[at] = (gate ? gate[pick] : 1.0) * r;
                        wdg[pick] += r * c.expert_out[at];
                    }
                }
        snprintf(what, sizeof what, "%s: dexpert_out%s", name, with_gate ? "" : " gate NULL");
        check_close(what, dexp, wdx, nexp, 1e-30, 1e-7);
        snprintf(what, sizeof what, "%s: dgate%s", name, with_gate ? "" : " gate NULL");
        check_close(what, dg, wdg, ng, 1e-7, 1e-6);
        if (with_gate) {
            snprintf(what, sizeof what, "%s: dexpert_out", name);
            fd_check(what, scatter_objective, &c, c.expert_out, nexp, dexp, NULL, 200, 0.25, 1e-5,
                     1e-4);
            snprintf(what, sizeof what, "%s: dgate", name);
            fd_check(what, scatter_objective, &c, c.gate, ng, dg, NULL, 200, 0.25, 1e-5, 1e-4);
            float *dexp1 = fbuf(nexp);
            cpu_moe_scatter_backward(NULL, &s, c.R, c.expert_out, sel, gate, dexp1, NULL);
            check_same("  ... dexpert_out with dgate NULL", dexp1, dexp, nexp);
        }
    }
}

typedef struct {
    pmoe_route_shape s;
    float *gate, *weights;
    const int32_t *sel;
    const float *R;
    int64_t nw;
} posw_ctx;

static double posw_objective(void *p, int *same) {
    posw_ctx *c = p;
    cpu_moe_position_weights(NULL, &c->s, c->sel, c->gate, c->weights);
    return dot_ff(c->weights, c->R, c->nw);
}

static void position_weights_case(int64_t B, int n, int k, int l, uint64_t seed) {
    pmoe_route_shape s = {B, n, 0, k, l, PMOE_GATE_RENORM};
    const int64_t nw = k * B * n, ng = B * k * l;
    char name[96], what[160];
    snprintf(name, sizeof name, "position_weights B=%lld n=%d k=%d l=%d", (long long)B, n, k, l);
    int32_t *sel = random_selection(B, k, n, l, seed);
    posw_ctx c = {s, frand(ng, seed + 1, 0.1f, 1), fbuf(nw), sel, frand(nw, seed + 2, -1, 1), nw};
    for (int with_gate = 1; with_gate >= 0; with_gate--) {
        float *wts = fbuf(nw);
        cpu_moe_position_weights(NULL, &s, sel, with_gate ? c.gate : NULL, wts);
        double *want = dbuf(nw);
        for (int64_t b = 0; b < B; b++)
            for (int x = 0; x < k; x++)
                for (int t = 0; t < l; t++) {
                    const int64_t pick = (b * k + x) * l + t;
                    want[(x * B + b) * n + sel[pick]] = with_gate ? c.gate[pick] : 1.0;
                }
        snprintf(what, sizeof what, "%s: weights%s", name, with_gate ? "" : " gate NULL");
        check_close(what, wts, want, nw, 1e-30, 0);
    }
    float *dg = fbuf(ng);
    cpu_moe_position_weights_backward(NULL, &s, sel, c.R, dg);
    double *wdg = dbuf(ng);
    for (int64_t b = 0; b < B; b++)
        for (int x = 0; x < k; x++)
            for (int t = 0; t < l; t++)
                wdg[(b * k + x) * l + t] = c.R[(x * B + b) * n + sel[(b * k + x) * l + t]];
    snprintf(what, sizeof what, "%s: dgate", name);
    check_close(what, dg, wdg, ng, 1e-30, 0);
    fd_check(what, posw_objective, &c, c.gate, ng, dg, NULL, 200, 0.25, 1e-6, 1e-5);
}

typedef struct {
    pmoe_patch_shape s;
    float *weight, *x, *y;
    const float *R;
    int64_t nx;
} pscale_ctx;

static double pscale_objective(void *p, int *same) {
    pscale_ctx *c = p;
    cpu_patch_scale_forward(NULL, &c->s, c->weight, c->x, c->y);
    return dot_ff(c->y, c->R, c->nx);
}

static void patch_scale_case(int64_t B, int C, int H, int W, int p, uint64_t seed) {
    pmoe_patch_shape s = {B, C, H, W, p};
    const int n = pmoe_patch_count(&s), per_row = W / p;
    const int64_t nx = B * C * H * W, nwt = B * n;
    char name[96], what[160];
    snprintf(name, sizeof name, "patch_scale B=%lld C=%d %dx%d p=%d", (long long)B, C, H, W, p);
    pscale_ctx c = {s,        frand(nwt, seed, -1, 1),    frand(nx, seed + 1, -1, 1),
                    fbuf(nx), frand(nx, seed + 2, -1, 1), nx};
    cpu_patch_scale_forward(NULL, &s, c.weight, c.x, c.y);
    double *want = dbuf(nx), *wdx = dbuf(nx), *wdw = dbuf(nwt);
    for (int64_t b = 0; b < B; b++)
        for (int ch = 0; ch < C; ch++)
            for (int py = 0; py < H; py++)
                for (int px = 0; px < W; px++) {
                    const int64_t at = ((b * C + ch) * H + py) * W + px;
                    if (py >= (H / p) * p || px >= per_row * p) continue; /* in no patch: 0 */
                    const int64_t j = b * n + (py / p) * per_row + px / p;
                    want[at] = (double)c.weight[j] * c.x[at];
                    wdx[at] = (double)c.weight[j] * c.R[at];
                    wdw[j] += (double)c.R[at] * c.x[at];
                }
    snprintf(what, sizeof what, "%s: forward", name);
    check_close(what, c.y, want, nx, 1e-30, 1e-7);
    float *D0 = frand(nx, seed + 3, -2, 2), *dx = fcopy(D0, nx), *dw = fbuf(nwt);
    cpu_patch_scale_backward(NULL, &s, c.weight, c.x, c.R, dx, dw);
    snprintf(what, sizeof what, "%s: dx = D0 + weight dy", name);
    check_close(what, dx, plus(D0, wdx, nx), nx, 1e-7, 1e-6);
    snprintf(what, sizeof what, "%s: dweight vs loop", name);
    check_close(what, dw, wdw, nwt, 1e-6, 1e-6);
    snprintf(what, sizeof what, "%s: dx", name);
    fd_check(what, pscale_objective, &c, c.x, nx, dx, D0, 200, 0.25, 1e-5, 1e-4);
    snprintf(what, sizeof what, "%s: dweight", name);
    fd_check(what, pscale_objective, &c, c.weight, nwt, dw, NULL, 200, 0.25, 1e-5, 1e-4);
    float *dx1 = fcopy(D0, nx), *dw1 = fbuf(nwt);
    cpu_patch_scale_backward(NULL, &s, c.weight, c.x, c.R, dx1, NULL);
    cpu_patch_scale_backward(NULL, &s, c.weight, c.x, c.R, NULL, dw1);
    CHECK_MSG(memcmp(dx1, dx, (size_t)nx * sizeof(float)) == 0 &&
                  memcmp(dw1, dw, (size_t)nwt * sizeof(float)) == 0,
              "%s: backward with a NULL gradient differs", name);
}

static void test_moe_layer(void) {
    printf("moe_scatter, position_weights, patch_scale\n");
    { /* By hand: B=1, n=3, k=2, l=1, e=2: expert 0 picks patch 2 with gate
         * 0.5, expert 1 patch 0 with gate 2. */
        pmoe_scatter_shape s = {1, 3, 2, 1, 2};
        const float eo[4] = {1, 2, 3, 4}, gate[2] = {0.5f, 2};
        const int32_t sel[2] = {2, 0};
        float out[12];
        for (int i = 0; i < 12; i++) out[i] = NAN;
        const double want[12] = {0, 0, 6, 8, 0, 0, 0, 0, 0.5, 1, 0, 0};
        cpu_moe_scatter_forward(NULL, &s, eo, sel, gate, out);
        check_close("moe_scatter by hand", out, want, 12, 1e-30, 0);
    }
    scatter_case(3, 6, 3, 2, 4, 4000);
    scatter_case(2, 4, 1, 4, 3, 4100); /* l = n: every patch */
    scatter_case(5, 9, 2, 3, 8, 4200);
    position_weights_case(3, 7, 2, 3, 4300);
    position_weights_case(2, 4, 3, 4, 4400);
    patch_scale_case(2, 3, 4, 6, 2, 4500);
    patch_scale_case(2, 2, 5, 7, 2, 4600); /* last row and column in no patch */
    patch_scale_case(3, 1, 8, 8, 4, 4700);
    patch_scale_case(2, 2, 3, 3, 1, 4800);
}

/* ------------------------------------------------------------ determinism */

/* Batch norm's train, eval and backward on a B x C x S input, each of
 * their 9 outputs recorded under names[]; the train output and the upstream
 * gradient go to *y and *dy for the ops that follow. */
static void det_batchnorm(det_result *r, int64_t B, int C, int64_t S, uint64_t seed,
                          const char *const names[9], float **y_out, float **dy_out) {
    const int64_t n = B * C * S;
    pmoe_bn_shape s = {B, C, S, 1e-5f};
    float *x = bn_input(B, C, S, 1.0f, seed), *gamma = frand(C, seed + 1, 0.5f, 1.5f);
    float *beta = frand(C, seed + 2, -0.5f, 0.5f), *rm = frand(C, seed + 3, -1, 1);
    float *rv = frand(C, seed + 4, 0.5f, 2), *y = fbuf(n), *m = fbuf(C), *is = fbuf(C);
    cpu_batchnorm_forward_train(NULL, &s, x, gamma, beta, y, m, is, rm, rv, 0.1f);
    det_add(r, names[0], y, n);
    det_add(r, names[1], m, C);
    det_add(r, names[2], is, C);
    det_add(r, names[3], rm, C);
    det_add(r, names[4], rv, C);
    float *ye = fbuf(n);
    cpu_batchnorm_forward_eval(NULL, &s, x, gamma, beta, rm, rv, ye);
    det_add(r, names[5], ye, n);
    float *dy = frand(n, seed + 5, -1, 1), *dx = frand(n, seed + 6, -1, 1), *dg = fbuf(C),
          *db = fbuf(C);
    cpu_batchnorm_backward(NULL, &s, x, gamma, m, is, dy, dx, dg, db);
    det_add(r, names[6], dx, n);
    det_add(r, names[7], dg, C);
    det_add(r, names[8], db, C);
    *y_out = y;
    *dy_out = dy;
}

static void det_run(det_result *r) {
    r->count = 0;
    /* Shapes with several tasks and weight-gradient groups: many samples
     * per GEMM, one sample per GEMM, 1x1, stride 2. */
    static const int shapes[5][9] = {
        /* B   C   H   W   K  R  S st pad */
        {64, 16, 8, 8, 16, 3, 3, 1, 1},  {300, 8, 4, 4, 8, 3, 3, 1, 1},
        {16, 8, 40, 40, 16, 3, 3, 2, 1}, {8, 16, 24, 24, 8, 1, 1, 1, 0},
        {4, 4, 32, 32, 8, 3, 3, 1, 1},
    };
    static const char *names[5][4] = {
        {"conv 64x16x8x8 fwd", "conv 64x16x8x8 dx", "conv 64x16x8x8 dw", "conv 64x16x8x8 dbias"},
        {"conv 300x8x4x4 fwd", "conv 300x8x4x4 dx", "conv 300x8x4x4 dw", "conv 300x8x4x4 dbias"},
        {"conv s2 fwd", "conv s2 dx", "conv s2 dw", "conv s2 dbias"},
        {"conv 1x1 24x24 fwd", "conv 1x1 24x24 dx", "conv 1x1 24x24 dw", "conv 1x1 24x24 dbias"},
        {"conv 32x32 fwd", "conv 32x32 dx", "conv 32x32 dw", "conv 32x32 dbias"},
    };
    for (int i = 0; i < 5; i++) {
        const int *v = shapes[i];
        pmoe_conv_shape s = {v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8]};
        const int64_t nx = (int64_t)v[0] * v[1] * v[2] * v[3];
        const int64_t nw = (int64_t)v[4] * v[1] * v[5] * v[6];
        const int64_t ny = (int64_t)v[0] * v[4] * pmoe_conv_out_height(&s) *
                           pmoe_conv_out_width(&s);
        float *x = frand(nx, 5000 + i, -1, 1), *w = frand(nw, 5100 + i, -0.3f, 0.3f);
        float *bias = frand(v[4], 5200 + i, -1, 1), *y = fbuf(ny);
        cpu_conv2d_forward(NULL, &s, x, w, bias, y);
        float *dy = frand(ny, 5300 + i, -1, 1), *dx = frand(nx, 5400 + i, -1, 1);
        float *dw = fbuf(nw), *db = fbuf(v[4]);
        cpu_conv2d_backward(NULL, &s, x, w, dy, dx, dw, db);
        det_add(r, names[i][0], y, ny);
        det_add(r, names[i][1], dx, nx);
        det_add(r, names[i][2], dw, nw);
        det_add(r, names[i][3], db, v[4]);
    }
    {
        static const char *const wide[9] = {"bn train y",           "bn train save_mean",
                                            "bn train save_invstd", "bn train running_mean",
                                            "bn train running_var", "bn eval y",
                                            "bn backward dx",       "bn backward dgamma",
                                            "bn backward dbeta"};
        const int64_t B = 16, S = 256;
        const int C = 32;
        float *y, *dy;
        det_batchnorm(r, B, C, S, 5500, wide, &y, &dy);
        float *pool = fbuf(B * C), *dbias = fbuf(C);
        cpu_avgpool_forward(NULL, B * C, S, y, pool);
        cpu_channel_bias_backward(NULL, B, C, S, dy, dbias);
        det_add(r, "avgpool forward", pool, B * C);
        det_add(r, "channel bias backward", dbias, C);
    }
    { /* a narrow map (the pMoE layer's 1x1 patches): channel blocks over threads */
        static const char *const narrow[9] = {
            "narrow bn train y",           "narrow bn train save_mean",
            "narrow bn train save_invstd", "narrow bn train running_mean",
            "narrow bn train running_var", "narrow bn eval y",
            "narrow bn backward dx",       "narrow bn backward dgamma",
            "narrow bn backward dbeta"};
        float *y, *dy;
        det_batchnorm(r, 700, 40, 1, 5600, narrow, &y, &dy);
    }
    {
        const int64_t B = 256;
        const int n = 16, k = 4, l = 4, e = 64;
        pmoe_scatter_shape s = {B, n, k, l, e};
        const int64_t nexp = k * B * l * e, nout = B * n * k * e, ng = B * k * l;
        int32_t *sel = random_selection(B, k, n, l, 5600);
        float *eo = frand(nexp, 5601, -1, 1), *gate = frand(ng, 5602, 0, 1), *out = fbuf(nout);
        cpu_moe_scatter_forward(NULL, &s, eo, sel, gate, out);
        float *dexp = fbuf(nexp), *dg = fbuf(ng);
        cpu_moe_scatter_backward(NULL, &s, out, eo, sel, gate, dexp, dg);
        det_add(r, "moe_scatter forward", out, nout);
        det_add(r, "moe_scatter dexpert_out", dexp, nexp);
        det_add(r, "moe_scatter dgate", dg, ng);
        pmoe_patch_shape ps = {B, 4, 16, 16, 4};
        float *x = frand(B * 4 * 256, 5603, -1, 1), *wt = frand(B * n, 5604, -1, 1);
        float *y = fbuf(B * 4 * 256), *dwt = fbuf(B * n);
        cpu_patch_scale_forward(NULL, &ps, wt, x, y);
        cpu_patch_scale_backward(NULL, &ps, wt, x, y, NULL, dwt);
        det_add(r, "patch_scale dweight", dwt, B * n);
    }
}

int main(void) {
    /* The backend keeps OpenBLAS to one thread; the ops themselves take NULL. */
    pmoe_backend *be = cpu_backend_or_exit();
    /* The checks against references run on one thread: finite differences
     * call the ops thousands of times, and on a shared 2-core machine each
     * parallel region can wait a time slice for its second thread. The
     * determinism test then holds 2 and 3 threads to the 1-thread results. */
    omp_set_num_threads(1);
    test_conv();
    test_batchnorm();
    test_elementwise();
    test_moe_layer();
    check_thread_determinism(det_run, 1);
    free_all();
    pmoe_backend_destroy(be);
    return test_finish("test_layers");
}
