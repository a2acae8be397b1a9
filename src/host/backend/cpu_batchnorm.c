/* cpu_batchnorm.c: the CPU twins of batch norm (training and evaluation
 * forward, backward, and the per-rank moments and input gradient that
 * train.sync_bn combines across ranks). One channel per thread (several
 * narrow channels per task), with double sums in a fixed order, so results
 * are bit-identical for any thread count. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu_ops.h"

/* -------------------------------------------------------------- batch norm */

/* Sums over one row of a channel in double, split over ROW_LANES
 * interleaved partial sums (independent chains, so the adds pipeline
 * instead of waiting on each other) added in a fixed order: the result
 * depends on the row only, never on the thread that sums it. */
enum { ROW_LANES = 8 };

static double row_sum(const float *x, int64_t n) {
    double acc[ROW_LANES] = {0}, total = 0.0;
    int64_t i = 0;
    for (; i + ROW_LANES <= n; i += ROW_LANES)
        for (int j = 0; j < ROW_LANES; j++) acc[j] += x[i + j];
    for (int j = 0; j < ROW_LANES; j++) total += acc[j];
    for (; i < n; i++) total += x[i];
    return total;
}

/* sum of (x - mean)^2 over one row */
static double row_sum_sq(const float *x, int64_t n, double mean) {
    double acc[ROW_LANES] = {0}, total = 0.0;
    int64_t i = 0;
    for (; i + ROW_LANES <= n; i += ROW_LANES)
        for (int j = 0; j < ROW_LANES; j++) {
            const double d = x[i + j] - mean;
            acc[j] += d * d;
        }
    for (int j = 0; j < ROW_LANES; j++) total += acc[j];
    for (; i < n; i++) {
        const double d = x[i] - mean;
        total += d * d;
    }
    return total;
}

/* sum of g and of g (x - mean) invstd over one row */
static void row_sums_backward(const float *x, const float *g, int64_t n, double mean, double invstd,
                              double *sum_g, double *sum_g_xhat) {
    double a[ROW_LANES] = {0}, b[ROW_LANES] = {0}, ta = 0.0, tb = 0.0;
    int64_t i = 0;
    for (; i + ROW_LANES <= n; i += ROW_LANES)
        for (int j = 0; j < ROW_LANES; j++) {
            a[j] += g[i + j];
            b[j] += g[i + j] * ((x[i + j] - mean) * invstd);
        }
    for (int j = 0; j < ROW_LANES; j++) {
        ta += a[j];
        tb += b[j];
    }
    for (; i < n; i++) {
        ta += g[i];
        tb += g[i] * ((x[i] - mean) * invstd);
    }
    *sum_g += ta;
    *sum_g_xhat += tb;
}

/* Narrow maps (spatial < ROW_LANES: the pMoE layer's experts on 1x1 or 2x2
 * patches) have rows too short for the per-row sums above to pay for their
 * calls, and one channel's values lie C S apart. There each task takes a
 * block of NARROW_CHANNELS channels and walks the samples in order, adding
 * each row's sum (from 0, in order, as row_sum does for a short row) into
 * the block's totals: the same sums as the per-channel loops, bit for bit,
 * read along memory. */
enum { NARROW_CHANNELS = 16 };

/* The end of the block of channels that starts at c0. */
static inline int narrow_end(int c0, int C) {
    return C - c0 < NARROW_CHANNELS ? C : c0 + NARROW_CHANNELS;
}

static void bn_stats(const float *x, int64_t B, int C, int64_t S, int c, int c_end, double *sum,
                     const double *mean) {
    const int w = c_end - c;
    for (int j = 0; j < w; j++) sum[j] = 0.0;
    if (S == 1) { /* a row is one value: 0 + v is v (and 0 + d^2 is d^2) */
        for (int64_t b = 0; b < B; b++) {
            const float *row = x + b * C + c;
            if (mean)
                for (int j = 0; j < w; j++) {
                    const double d = row[j] - mean[j];
                    sum[j] += d * d;
                }
            else
                for (int j = 0; j < w; j++) sum[j] += row[j];
        }
        return;
    }
    for (int64_t b = 0; b < B; b++)
        for (int j = 0; j < w; j++) {
            const float *row = x + (b * C + c + j) * S;
            double t = 0.0;
            if (mean)
                for (int64_t i = 0; i < S; i++) {
                    const double d = row[i] - mean[j];
                    t += d * d;
                }
            else
                for (int64_t i = 0; i < S; i++) t += row[i];
            sum[j] += t;
        }
}

/* One channel's statistics, saved and folded into the running ones. */
static void bn_finish_channel(const pmoe_bn_shape *s, int c, double mean, double var,
                              float *save_mean, float *save_invstd, float *running_mean,
                              float *running_var, float momentum) {
    const int64_t N = s->batch * s->spatial;
    const float mean_f = (float)mean, invstd_f = (float)(1.0 / sqrt(var + (double)s->eps));
    save_mean[c] = mean_f;
    save_invstd[c] = invstd_f;
    if (running_mean) running_mean[c] = (1.0f - momentum) * running_mean[c] + momentum * mean_f;
    if (running_var) { /* unbiased; one value has none, and then the biased 0 is kept */
        const double unbiased = N > 1 ? var * (double)N / (double)(N - 1) : var;
        running_var[c] = (1.0f - momentum) * running_var[c] + momentum * (float)unbiased;
    }
}

void cpu_batchnorm_forward_train(pmoe_backend *be, const pmoe_bn_shape *s, const float *x,
                                 const float *gamma, const float *beta, float *y, float *save_mean,
                                 float *save_invstd, float *running_mean, float *running_var,
                                 float momentum) {
    const int64_t B = s->batch, S = s->spatial, N = B * S;
    const int C = s->channels;
    if (N <= 0) return;
    if (S < ROW_LANES) {
        const int blocks = (C + NARROW_CHANNELS - 1) / NARROW_CHANNELS;
#pragma omp parallel for schedule(static) if (blocks > 1 && N * C > 16384)
        for (int blk = 0; blk < blocks; blk++) {
            const int c0 = blk * NARROW_CHANNELS, c1 = narrow_end(c0, C);
            double sum[NARROW_CHANNELS], mean[NARROW_CHANNELS], sq[NARROW_CHANNELS];
            float shift[NARROW_CHANNELS], scale[NARROW_CHANNELS];
            bn_stats(x, B, C, S, c0, c1, sum, NULL);
            for (int j = 0; j < c1 - c0; j++) mean[j] = sum[j] / (double)N;
            bn_stats(x, B, C, S, c0, c1, sq, mean); /* two passes: no cancellation */
            for (int j = 0; j < c1 - c0; j++) {
                bn_finish_channel(s, c0 + j, mean[j], sq[j] / (double)N, save_mean, save_invstd,
                                  running_mean, running_var, momentum);
                scale[j] = gamma[c0 + j] * save_invstd[c0 + j];
                shift[j] = beta[c0 + j];
            }
            for (int64_t b = 0; b < B; b++)
                for (int j = 0; j < c1 - c0; j++) {
                    const float *in = x + (b * C + c0 + j) * S;
                    float *out = y + (b * C + c0 + j) * S;
                    const float m = save_mean[c0 + j];
                    for (int64_t i = 0; i < S; i++) out[i] = (in[i] - m) * scale[j] + shift[j];
                }
        }
        return;
    }
#pragma omp parallel for schedule(static) if (C > 1 && N * C > 16384)
    for (int c = 0; c < C; c++) {
        double sum = 0.0;
        for (int64_t b = 0; b < B; b++) sum += row_sum(x + (b * C + c) * S, S);
        const double mean = sum / (double)N;
        double sq = 0.0; /* two passes: no cancellation when |mean| >> std */
        for (int64_t b = 0; b < B; b++) sq += row_sum_sq(x + (b * C + c) * S, S, mean);
        bn_finish_channel(s, c, mean, sq / (double)N, save_mean, save_invstd, running_mean,
                          running_var, momentum);
        const float mean_f = save_mean[c], scale = gamma[c] * save_invstd[c], shift = beta[c];
        for (int64_t b = 0; b < B; b++) {
            const float *in = x + (b * C + c) * S;
            float *out = y + (b * C + c) * S;
            for (int64_t i = 0; i < S; i++) out[i] = (in[i] - mean_f) * scale + shift;
        }
    }
}

void cpu_batchnorm_forward_eval(pmoe_backend *be, const pmoe_bn_shape *s, const float *x,
                                const float *gamma, const float *beta, const float *running_mean,
                                const float *running_var, float *y) {
    const int64_t S = s->spatial, rows = s->batch * s->channels;
    const int C = s->channels;
    if (S < ROW_LANES) { /* narrow maps: each channel's scale once per block, not per row */
        const int blocks = (C + NARROW_CHANNELS - 1) / NARROW_CHANNELS;
#pragma omp parallel for schedule(static) if (blocks > 1 && rows * S > 65536)
        for (int blk = 0; blk < blocks; blk++) {
            const int c0 = blk * NARROW_CHANNELS, w = narrow_end(c0, C) - c0;
            float scale[NARROW_CHANNELS];
            for (int j = 0; j < w; j++)
                scale[j] =
                    (float)(gamma[c0 + j] / sqrt((double)running_var[c0 + j] + (double)s->eps));
            for (int64_t b = 0; b < s->batch; b++)
                for (int j = 0; j < w; j++) {
                    const int64_t at = (b * C + c0 + j) * S;
                    for (int64_t i = 0; i < S; i++)
                        y[at + i] = (x[at + i] - running_mean[c0 + j]) * scale[j] + beta[c0 + j];
                }
        }
        return;
    }
#pragma omp parallel for schedule(static) if (rows * S > 65536)
    for (int64_t row = 0; row < rows; row++) {
        const int c = (int)(row % C);
        const float scale = (float)(gamma[c] / sqrt((double)running_var[c] + (double)s->eps));
        const float mean = running_mean[c], shift = beta[c];
        const float *in = x + row * S;
        float *out = y + row * S;
        for (int64_t i = 0; i < S; i++) out[i] = (in[i] - mean) * scale + shift;
    }
}

/* Narrow maps: the backward's two sums for a block of channels, walking the
 * samples in order (each row's sums from 0, as row_sums_backward does for a
 * short row), then dx; the same values as the per-channel loops. */
static void bn_backward_narrow(const pmoe_bn_shape *s, int c0, int c1, const float *x,
                               const float *gamma, const float *save_mean, const float *save_invstd,
                               const float *dy, float *dx, float *dgamma, float *dbeta) {
    const int64_t B = s->batch, S = s->spatial, N = B * S;
    const int C = s->channels, w = c1 - c0;
    double mean[NARROW_CHANNELS], invstd[NARROW_CHANNELS], sum_g[NARROW_CHANNELS],
        sum_gx[NARROW_CHANNELS];
    for (int j = 0; j < w; j++) {
        mean[j] = save_mean[c0 + j], invstd[j] = save_invstd[c0 + j];
        sum_g[j] = sum_gx[j] = 0.0;
    }
    for (int64_t b = 0; b < B; b++) {
        if (S == 1) { /* a row is one value: 0 + v is v */
            const float *xr = x + b * C + c0, *gr = dy + b * C + c0;
            for (int j = 0; j < w; j++) {
                sum_g[j] += gr[j];
                sum_gx[j] += gr[j] * ((xr[j] - mean[j]) * invstd[j]);
            }
            continue;
        }
        for (int j = 0; j < w; j++) {
            const int64_t at = (b * C + c0 + j) * S;
            double ta = 0.0, tb = 0.0;
            for (int64_t i = 0; i < S; i++) {
                ta += dy[at + i];
                tb += dy[at + i] * ((x[at + i] - mean[j]) * invstd[j]);
            }
            sum_g[j] += ta;
            sum_gx[j] += tb;
        }
    }
    for (int j = 0; j < w; j++) {
        if (dbeta) dbeta[c0 + j] = (float)sum_g[j];
        if (dgamma) dgamma[c0 + j] = (float)sum_gx[j];
    }
    if (!dx) return;
    double scale[NARROW_CHANNELS], mean_dy[NARROW_CHANNELS], mean_dy_xhat[NARROW_CHANNELS];
    for (int j = 0; j < w; j++) {
        scale[j] = gamma[c0 + j] * invstd[j];
        mean_dy[j] = sum_g[j] / (double)N;
        mean_dy_xhat[j] = sum_gx[j] / (double)N;
    }
    for (int64_t b = 0; b < B; b++) {
        const int64_t at = (b * C + c0) * S;
        if (S == 1) {
            for (int j = 0; j < w; j++) {
                const double xhat = (x[at + j] - mean[j]) * invstd[j];
                dx[at + j] +=
                    (float)(scale[j] * (dy[at + j] - mean_dy[j] - xhat * mean_dy_xhat[j]));
            }
            continue;
        }
        for (int j = 0; j < w; j++)
            for (int64_t i = 0; i < S; i++) {
                const double xhat = (x[at + j * S + i] - mean[j]) * invstd[j];
                dx[at + j * S + i] +=
                    (float)(scale[j] * (dy[at + j * S + i] - mean_dy[j] - xhat * mean_dy_xhat[j]));
            }
    }
}

/* One channel's dx += scale (dy - mean_dy - xhat mean_dy_xhat), xhat = (x -
 * mean) invstd: the backward's input gradient once its two sums are known
 * (over this rank's values, or every rank's). */
static void bn_input_gradient(const pmoe_bn_shape *s, int c, const float *x, const float *dy,
                              float *dx, double mean, double invstd, double scale, double mean_dy,
                              double mean_dy_xhat) {
    const int64_t B = s->batch, S = s->spatial;
    const int C = s->channels;
    for (int64_t b = 0; b < B; b++) {
        const float *in = x + (b * C + c) * S, *g = dy + (b * C + c) * S;
        float *out = dx + (b * C + c) * S;
        for (int64_t i = 0; i < S; i++) {
            const double xhat = (in[i] - mean) * invstd;
            out[i] += (float)(scale * (g[i] - mean_dy - xhat * mean_dy_xhat));
        }
    }
}

void cpu_batchnorm_backward(pmoe_backend *be, const pmoe_bn_shape *s, const float *x,
                            const float *gamma, const float *save_mean, const float *save_invstd,
                            const float *dy, float *dx, float *dgamma, float *dbeta) {
    const int64_t B = s->batch, S = s->spatial, N = B * S;
    const int C = s->channels;
    if (N <= 0) return;
    if (S < ROW_LANES) {
        const int blocks = (C + NARROW_CHANNELS - 1) / NARROW_CHANNELS;
#pragma omp parallel for schedule(static) if (blocks > 1 && N * C > 16384)
        for (int blk = 0; blk < blocks; blk++) {
            const int c0 = blk * NARROW_CHANNELS;
            bn_backward_narrow(s, c0, narrow_end(c0, C), x, gamma, save_mean, save_invstd, dy, dx,
                               dgamma, dbeta);
        }
        return;
    }
#pragma omp parallel for schedule(static) if (C > 1 && N * C > 16384)
    for (int c = 0; c < C; c++) {
        const double mean = save_mean[c], invstd = save_invstd[c];
        double sum_dy = 0.0, sum_dy_xhat = 0.0;
        for (int64_t b = 0; b < B; b++)
            row_sums_backward(x + (b * C + c) * S, dy + (b * C + c) * S, S, mean, invstd, &sum_dy,
                              &sum_dy_xhat);
        if (dbeta) dbeta[c] = (float)sum_dy;
        if (dgamma) dgamma[c] = (float)sum_dy_xhat;
        if (dx)
            bn_input_gradient(s, c, x, dy, dx, mean, invstd, gamma[c] * invstd, sum_dy / (double)N,
                              sum_dy_xhat / (double)N);
    }
}

/* The per-channel pieces of batch norm over several ranks (backend.h):
 * the same row sums as the single-rank ops, one channel per task. */
void cpu_batchnorm_moments(pmoe_backend *be, const pmoe_bn_shape *s, const float *x, float *mean,
                           float *m2) {
    const int64_t B = s->batch, S = s->spatial, N = B * S;
    const int C = s->channels;
#pragma omp parallel for schedule(static) if (C > 1 && N * C > 16384)
    for (int c = 0; c < C; c++) {
        double sum = 0.0, sq = 0.0;
        for (int64_t b = 0; b < B; b++) sum += row_sum(x + (b * C + c) * S, S);
        const double mu = N > 0 ? sum / (double)N : 0.0;
        for (int64_t b = 0; b < B; b++) sq += row_sum_sq(x + (b * C + c) * S, S, mu);
        mean[c] = (float)mu;
        m2[c] = (float)sq;
    }
}

void cpu_batchnorm_backward_input(pmoe_backend *be, const pmoe_bn_shape *s, const float *x,
                                  const float *gamma, const float *mean, const float *invstd,
                                  const float *dy, const float *sum_dy, const float *sum_dy_xhat,
                                  int64_t count, float *dx) {
    const int C = s->channels;
    if (count <= 0) return;
#pragma omp parallel for schedule(static) if (C > 1 && s->batch * s->spatial * C > 16384)
    for (int c = 0; c < C; c++) {
        const double is = invstd[c];
        bn_input_gradient(s, c, x, dy, dx, mean[c], is, gamma[c] * is, sum_dy[c] / (double)count,
                          sum_dy_xhat[c] / (double)count);
    }
}
