/* batches.c: one global batch into the model: this rank's shard of it
 * composed (and augmented) on the host or in place, the labels of all of it,
 * the router phase's per-sample targets, and the testing aid that poisons a
 * batch with a NaN.
 *
 * Expert parallelism: every rank holds the same order and composes only
 * samples [r B/R, (r+1) B/R) of each batch; a batch that does not split
 * evenly is padded with zero images, which carry no loss and no gradient. */
#include <math.h>
#include <string.h>

#include "train/run.h"

shard run_shard_of(const run *r, int64_t count) {
    if (!r->sharded) return (shard){0, count, count};
    const int64_t local = (count + r->ranks - 1) / r->ranks, first = r->rank * local;
    const int64_t left = count - first;
    return (shard){first, local, left < 0 ? 0 : left < local ? left : local};
}

/* Where a batch is composed: straight into the model's images when the
 * backend's memory is the host's (no copy), else a host buffer copied in. */
float *run_composed_images(const run *r) {
    return r->be->host_memory ? r->model->images : r->host_images;
}

/* Composes this rank's share of the global batch indices[0..count) into the
 * model's images (padding: zeros), and the labels of the whole batch (the
 * loss of every rank reads them all). Returns the share in *sh. A training
 * batch (augment_pass >= 0) is augmented as data.crop_pad / data.flip ask,
 * drawn for that pass (see data/augment.h). */
void run_compose_share(const run *r, const pmoe_dataset *ds, const int64_t *indices,
                       const shard *sh, int64_t augment_pass, float *images) {
    const int64_t per_sample = (int64_t)ds->channels * ds->height * ds->width;
    const int64_t *mine = indices + sh->first, real = sh->real;
    const int augment = augment_pass >= 0 && pmoe_augment_active(&r->augment);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < real; i++) {
        ds->compose(ds, mine[i], images + i * per_sample);
        if (augment) {
            const pmoe_augment_draw d =
                pmoe_augment_draw_at(&r->augment, (uint64_t)augment_pass, mine[i]);
            pmoe_augment_apply(&d, ds->channels, ds->height, ds->width, images + i * per_sample);
        }
    }
    if (real < sh->local)
        memset(images + real * per_sample, 0,
               (size_t)((sh->local - real) * per_sample) * sizeof(float));
}

pmoe_status run_load_batch(run *r, const pmoe_dataset *ds, const int64_t *indices, int64_t count,
                           int64_t augment_pass, shard *sh, pmoe_error *err) {
    if (augment_pass >= 0 && run_feeds(r))
        return run_load_batch_fed(r, ds, indices, count, augment_pass, sh, err);
    const int64_t per_sample = (int64_t)ds->channels * ds->height * ds->width;
    *sh = run_shard_of(r, count);
    run_compose_share(r, ds, indices, sh, augment_pass, run_composed_images(r));
    for (int64_t i = 0; i < count; i++) r->host_labels[i] = ds->labels[indices[i]];
    pmoe_backend *be = r->be;
    const size_t bytes = (size_t)(sh->local * per_sample) * sizeof(float);
    pmoe_status s = be->host_memory ? PMOE_OK
                                    : be->copy_in(be, r->model->images, r->host_images, bytes, err);
    if (!s)
        s = be->copy_in(be, r->model->labels, r->host_labels, (size_t)count * sizeof(int32_t), err);
    return s;
}

/* train.fault_nan_step: makes the first pixel of the batch NaN, so tests can
 * drive the non-finite guard through the real path (sharded: on rank 0,
 * which holds the batch's first sample). */
pmoe_status run_poison_batch(run *r, pmoe_error *err) {
    const float nan = NAN;
    if (r->rank != 0) return PMOE_OK;
    return r->be->copy_in(r->be, r->model->images, &nan, sizeof nan, err);
}

/* Fills the router phase's per-sample pair and weight: routers (2q, 2q + 1)
 * learn class pair q; a sample's weight is its sign over its pair's count in
 * the (global) batch, so every pair sees a batch mean. Sharded, each rank
 * copies in its share; padding gets weight 0. */
pmoe_status run_set_router_targets(run *r, int64_t count, pmoe_error *err) {
    const int classes = r->train->classes;
    int64_t pair_count[PMOE_MAX_REPORTED_EXPERTS] = {0};
    for (int64_t i = 0; i < count; i++) {
        r->host_pair[i] = classes == 1 ? 0 : r->host_labels[i] / 2;
        pair_count[r->host_pair[i]]++;
    }
    for (int64_t i = 0; i < count; i++) {
        const int label = r->host_labels[i];
        const int positive = classes == 1 ? label == 1 : label % 2 == 0;
        r->host_weight[i] = (positive ? 1.0f : -1.0f) / (float)pair_count[r->host_pair[i]];
    }
    const shard sh = run_shard_of(r, count);
    for (int64_t i = count; i < sh.first + sh.local; i++) { /* padding */
        r->host_pair[i] = 0;
        r->host_weight[i] = 0.0f;
    }
    pmoe_status s = r->be->copy_in(r->be, r->model->router_pair, r->host_pair + sh.first,
                                   (size_t)sh.local * 4, err);
    if (!s)
        s = r->be->copy_in(r->be, r->model->router_weight, r->host_weight + sh.first,
                           (size_t)sh.local * 4, err);
    return s;
}
