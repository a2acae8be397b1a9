/* deep_batchnorm.c: batch norm over this rank, every rank, or groups of one
 * process's batch (deep_batchnorm.h). The combining is per channel, on the
 * host (C values: the moments gathered from R ranks), so it costs a copy out
 * and in per layer; a device backend would do it in a small kernel. */
#include "model/deep_batchnorm.h"

#include <math.h>

#include "model/deep_layers.h"

/* running = (1 - momentum) running + momentum stat (unbiased variance), as
 * the backends' op moves them. */
static float moved(float running, double stat) {
    return (1.0f - DEEP_BN_MOMENTUM) * running + DEEP_BN_MOMENTUM * (float)stat;
}

/* Statistics over every rank of d->sync: the local moments, gathered, are
 * combined in rank order (Chan et al.'s pairwise update, every rank holding
 * b S values), then the batch is normalised with them by the evaluation op. */
static void sync_forward(pmoe_model *m, const deep_bn_domain *d, const pmoe_bn_shape *bs,
                         const float *x, const float *gamma, const float *beta, float *y,
                         float *save_mean, float *save_invstd, float *running_mean,
                         float *running_var) {
    pmoe_backend *be = m->be;
    const int C = bs->channels, R = d->sync->size;
    float *local = d->scratch, *gathered = d->scratch + 2 * C, *h = d->host;
    be->ops->batchnorm_moments(be, bs, x, local, local + C);
    d->sync->all_gather(d->sync, local, gathered, 2 * C);
    m->exchange_bytes += (int64_t)sizeof(float) * (R - 1) * 2 * C;
    pmoe_error ignored; /* host-memory copies of C floats (a device failure aborts the step) */
    float *mean = h + 2 * C * R, *var = mean + C, *invstd = var + C, *rm = invstd + C, *rv = rm + C;
    be->copy_out(be, h, gathered, (size_t)(2 * C * R) * sizeof(float), &ignored);
    be->copy_out(be, rm, running_mean, (size_t)C * sizeof(float), &ignored);
    be->copy_out(be, rv, running_var, (size_t)C * sizeof(float), &ignored);
    const double n = (double)bs->batch * (double)bs->spatial, N = n * R;
    for (int c = 0; c < C; c++) {
        double mu = 0.0, m2 = 0.0;
        for (int r = 0; r < R; r++) mu += h[r * 2 * C + c];
        mu /= R;
        for (int r = 0; r < R; r++) {
            const double delta = h[r * 2 * C + c] - mu;
            m2 += h[r * 2 * C + C + c] + n * delta * delta;
        }
        const double v = m2 / N;
        mean[c] = (float)mu;
        var[c] = (float)v;
        invstd[c] = (float)(1.0 / sqrt(v + (double)bs->eps));
        rm[c] = moved(rm[c], mu);
        rv[c] = moved(rv[c], N > 1 ? v * N / (N - 1) : v);
    }
    be->copy_in(be, save_mean, mean, (size_t)C * sizeof(float), &ignored);
    be->copy_in(be, save_invstd, invstd, (size_t)C * sizeof(float), &ignored);
    be->copy_in(be, running_mean, rm, (size_t)C * sizeof(float), &ignored);
    be->copy_in(be, running_var, rv, (size_t)C * sizeof(float), &ignored);
    be->copy_in(be, local, var, (size_t)C * sizeof(float), &ignored);
    be->ops->batchnorm_forward_eval(be, bs, x, gamma, beta, save_mean, local, y);
}

/* The running statistics' mean over d->average's ranks (one all-reduce). */
static void average_running(pmoe_model *m, const deep_bn_domain *d, int C, float *running_mean,
                            float *running_var) {
    pmoe_backend *be = m->be;
    const int R = d->average->size;
    be->ops->axpby(be, C, 1.0f, running_mean, 0.0f, d->scratch);
    be->ops->axpby(be, C, 1.0f, running_var, 0.0f, d->scratch + C);
    d->average->all_reduce_sum(d->average, d->scratch, 2 * C);
    m->exchange_bytes += (int64_t)sizeof(float) * 2 * (R - 1) * ((2 * C + R - 1) / R);
    be->ops->axpby(be, C, 1.0f / (float)R, d->scratch, 0.0f, running_mean);
    be->ops->axpby(be, C, 1.0f / (float)R, d->scratch + C, 0.0f, running_var);
}

void deep_bn_forward_train(pmoe_model *m, const deep_bn_domain *d, const pmoe_bn_shape *bs,
                           const float *x, const float *gamma, const float *beta, float *y,
                           float *save_mean, float *save_invstd, float *running_mean,
                           float *running_var) {
    pmoe_backend *be = m->be;
    const pmoe_ops *op = be->ops;
    const int C = bs->channels;
    if (d && d->sync) {
        sync_forward(m, d, bs, x, gamma, beta, y, save_mean, save_invstd, running_mean,
                     running_var);
        return;
    }
    const int G = d && d->groups > 1 ? d->groups : 1;
    if (G == 1) {
        op->batchnorm_forward_train(be, bs, x, gamma, beta, y, save_mean, save_invstd, running_mean,
                                    running_var, DEEP_BN_MOMENTUM);
        if (d && d->average) average_running(m, d, C, running_mean, running_var);
        return;
    }
    /* groups: each moves its own copy of the running statistics; the copies' mean is kept */
    pmoe_bn_shape part = *bs;
    part.batch = bs->batch / G;
    const int64_t size = part.batch * C * bs->spatial;
    float *sum = d->scratch, *copy = d->scratch + 2 * C;
    for (int g = 0; g < G; g++) {
        op->axpby(be, C, 1.0f, running_mean, 0.0f, copy);
        op->axpby(be, C, 1.0f, running_var, 0.0f, copy + C);
        op->batchnorm_forward_train(be, &part, x + g * size, gamma, beta, y + g * size,
                                    save_mean + g * C, save_invstd + g * C, copy, copy + C,
                                    DEEP_BN_MOMENTUM);
        op->axpby(be, 2 * C, 1.0f, copy, g ? 1.0f : 0.0f, sum);
    }
    op->axpby(be, C, 1.0f / (float)G, sum, 0.0f, running_mean);
    op->axpby(be, C, 1.0f / (float)G, sum + C, 0.0f, running_var);
}

void deep_bn_backward(pmoe_model *m, const deep_bn_domain *d, const pmoe_bn_shape *bs,
                      const float *x, const float *gamma, const float *save_mean,
                      const float *save_invstd, const float *dy, float *dx, float *dgamma,
                      float *dbeta) {
    pmoe_backend *be = m->be;
    const pmoe_ops *op = be->ops;
    const int C = bs->channels;
    if (d && d->sync) { /* this rank's sums, summed over the ranks, then dx from the totals */
        const int R = d->sync->size;
        op->batchnorm_backward(be, bs, x, gamma, save_mean, save_invstd, dy, NULL, dgamma, dbeta);
        if (!dx) return;
        op->axpby(be, C, 1.0f, dbeta, 0.0f, d->scratch);
        op->axpby(be, C, 1.0f, dgamma, 0.0f, d->scratch + C);
        d->sync->all_reduce_sum(d->sync, d->scratch, 2 * C);
        m->exchange_bytes += (int64_t)sizeof(float) * 2 * (R - 1) * ((2 * C + R - 1) / R);
        op->batchnorm_backward_input(be, bs, x, gamma, save_mean, save_invstd, dy, d->scratch,
                                     d->scratch + C, bs->batch * bs->spatial * R, dx);
        return;
    }
    const int G = d && d->groups > 1 ? d->groups : 1;
    if (G == 1) {
        op->batchnorm_backward(be, bs, x, gamma, save_mean, save_invstd, dy, dx, dgamma, dbeta);
        return;
    }
    pmoe_bn_shape part = *bs;
    part.batch = bs->batch / G;
    const int64_t size = part.batch * C * bs->spatial;
    float *part_gamma = d->scratch, *part_beta = d->scratch + C;
    for (int g = 0; g < G; g++) {
        op->batchnorm_backward(be, &part, x + g * size, gamma, save_mean + g * C,
                               save_invstd + g * C, dy + g * size, dx ? dx + g * size : NULL,
                               part_gamma, part_beta);
        op->axpby(be, C, 1.0f, part_gamma, g ? 1.0f : 0.0f, dgamma);
        op->axpby(be, C, 1.0f, part_beta, g ? 1.0f : 0.0f, dbeta);
    }
}
