/* deep_batchnorm.h: training-mode batch norm over a chosen set of samples.
 *
 * Whose samples a batch norm layer's statistics cover (a deep_bn_domain):
 *   this rank's batch            (one process, and train.sync_bn = false over
 *                                 ranks, as PyTorch DDP does): the backend's
 *                                 op, then over ranks the running statistics
 *                                 averaged, so evaluation reads the same ones
 *                                 on every rank;
 *   every rank's batch           (train.sync_bn): per-channel moments of each
 *                                 rank combined (one all-gather of mean and
 *                                 M2, combined in rank order in double), and
 *                                 in the backward one all-reduce of the two
 *                                 per-channel sums;
 *   groups of this rank's batch  (one process, `groups` > 1): the statistics
 *                                 of per-rank batch norm over `groups` ranks,
 *                                 computed in one process: what the tests
 *                                 hold the per-rank runs against.
 * Running statistics move as the backend's op moves them, averaged over the
 * ranks (or groups) that each took their own. */
#ifndef PMOE_MODEL_DEEP_BATCHNORM_H
#define PMOE_MODEL_DEEP_BATCHNORM_H

#include "model/model.h"

/* save_mean / save_invstd hold DEEP_BN_MAX_GROUPS * C floats. */
enum { DEEP_BN_MAX_GROUPS = 8 };

typedef struct deep_bn_domain {
    int groups;         /* >= 1; > 1 only without comms */
    pmoe_comm *sync;    /* statistics over its ranks; NULL: this rank's */
    pmoe_comm *average; /* running statistics averaged over its ranks; NULL: none */
    /* scratch: backend floats, 2 C (2 + sync ranks) at least; host floats as many */
    float *scratch, *host;
} deep_bn_domain;

void deep_bn_forward_train(pmoe_model *m, const deep_bn_domain *d, const pmoe_bn_shape *bs,
                           const float *x, const float *gamma, const float *beta, float *y,
                           float *save_mean, float *save_invstd, float *running_mean,
                           float *running_var);

/* dx += the input gradient (dx may be NULL); dgamma, dbeta overwritten with
 * this rank's sums (the caller's all-reduce of gradients adds the ranks'). */
void deep_bn_backward(pmoe_model *m, const deep_bn_domain *d, const pmoe_bn_shape *bs,
                      const float *x, const float *gamma, const float *save_mean,
                      const float *save_invstd, const float *dy, float *dx, float *dgamma,
                      float *dbeta);

/* Whether the domain is the backend op's alone (no groups, no comm). */
static inline int deep_bn_plain(const deep_bn_domain *d) {
    return !d || (d->groups <= 1 && !d->sync && !d->average);
}

#endif
