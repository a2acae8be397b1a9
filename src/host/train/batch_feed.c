/* batch_feed.c: training batches that overlap compute (train.overlap_input,
 * a backend with a copy stream: be->upload, backend.h).
 *
 * While step i runs on the device, and while the host waits for it at a
 * read of the steps, a host thread (input_feed.h) composes batch i + 1 into
 * one of two pinned buffers, with the same composition as every other path
 * (run_compose_share), so the batches and their order are the same bit for
 * bit. At the next load the batch is uploaded on the copy stream into a
 * staging area and landed into the model's images and labels on the compute
 * stream, which waits for the upload on the device. The host waits only for
 * the thread and, before composing into a pinned buffer again, for the
 * upload that read it two batches ago. Prefetching stops at an epoch's last
 * batch (the next epoch's order is drawn at its start), so the thread is
 * idle during evaluation, which composes on the main thread. The feed and
 * its buffers are made at the first training batch, so evaluation and
 * routing runs have none. */
#include <string.h>

#include "train/run.h"

int run_feeds(const run *r) { return r->cfg->train.overlap_input && r->be->upload && !r->sharded; }

/* The feed's thread: a job's images and labels into its pinned buffer. */
static void feed_work(void *ctx, void *arg) {
    (void)ctx;
    const feed_job *job = arg;
    const shard sh = run_shard_of(job->r, job->count);
    char *buffer = job->r->pinned[job->slot];
    run_compose_share(job->r, job->ds, job->indices, &sh, job->augment_pass, (float *)buffer);
    int32_t *labels = (int32_t *)(buffer + job->r->labels_at);
    for (int64_t i = 0; i < job->count; i++) labels[i] = job->ds->labels[job->indices[i]];
}

static pmoe_status feed_open(run *r, pmoe_error *err) {
    if (r->feed) return PMOE_OK;
    const int64_t per_sample = (int64_t)r->train->channels * r->train->height * r->train->width;
    const size_t batch = (size_t)r->max_batch;
    r->labels_at = (batch * (size_t)per_sample * sizeof(float) + 255) & ~(size_t)255;
    r->upload_bytes = r->labels_at + batch * sizeof(int32_t);
    pmoe_status s = PMOE_OK;
    for (int i = 0; i < 2 && !s; i++)
        s = r->be->upload->pinned_alloc(r->be, r->upload_bytes, &r->pinned[i], err);
    if (!s) s = r->be->alloc(r->be, r->upload_bytes, &r->staging, err);
    if (!s) s = input_feed_open(&r->feed, feed_work, r, err);
    return s;
}

void run_feed_close(run *r) {
    input_feed_close(r->feed);
    r->feed = NULL;
    for (int i = 0; i < 2; i++)
        if (r->pinned[i]) r->be->upload->pinned_release(r->be, r->pinned[i]);
    if (r->staging) r->be->release(r->be, r->staging, r->upload_bytes);
    r->pinned[0] = r->pinned[1] = r->staging = NULL;
}

/* Hands the feed a batch for the next pinned buffer, once the upload from
 * that buffer has read it. */
static pmoe_status feed_start(run *r, const pmoe_dataset *ds, const int64_t *indices, int64_t count,
                              int64_t augment_pass, pmoe_error *err) {
    pmoe_status s = feed_open(r, err);
    if (!s) s = r->be->upload->slot_wait(r->be, r->slot, err);
    if (s) return s;
    r->job = (feed_job){r, ds, indices, count, augment_pass, r->slot};
    r->slot ^= 1;
    input_feed_start(r->feed, &r->job);
    return PMOE_OK;
}

pmoe_status run_prefetch_batch(run *r, const pmoe_dataset *ds, const int64_t *indices,
                               int64_t count, int64_t augment_pass, pmoe_error *err) {
    if (!run_feeds(r)) return PMOE_OK;
    pmoe_status s = feed_start(r, ds, indices, count, augment_pass, err);
    r->ahead = !s;
    return s;
}

pmoe_status run_load_batch_fed(run *r, const pmoe_dataset *ds, const int64_t *indices,
                               int64_t count, int64_t augment_pass, shard *sh, pmoe_error *err) {
    pmoe_backend *be = r->be;
    const pmoe_upload_ops *up = be->upload;
    *sh = run_shard_of(r, count);
    /* the router phase's targets are made from the labels on the host */
    for (int64_t i = 0; i < count; i++) r->host_labels[i] = ds->labels[indices[i]];
    const feed_job *j = &r->job;
    const int matches = r->ahead && j->ds == ds && j->indices == indices && j->count == count &&
                        j->augment_pass == augment_pass;
    pmoe_status s = PMOE_OK;
    r->ahead = 0;
    if (!matches) {
        if (input_feed_busy(r->feed)) input_feed_wait(r->feed); /* a batch not wanted after all */
        s = feed_start(r, ds, indices, count, augment_pass, err);
    }
    if (s) return s;
    input_feed_wait(r->feed);
    const size_t image_bytes = (size_t)(sh->local * ds->channels * ds->height * ds->width) *
                               sizeof(float);
    s = up->upload(be, j->slot, r->staging, r->pinned[j->slot], r->upload_bytes, err);
    void *dst[2] = {r->model->images, r->model->labels};
    const void *src[2] = {r->staging, (char *)r->staging + r->labels_at};
    const size_t bytes[2] = {image_bytes, (size_t)count * sizeof(int32_t)};
    if (!s) s = up->land(be, 2, dst, src, bytes, err);
    return s;
}
