/* run.h: the state of one training, evaluation or routing run, and the
 * calls the training loop's files share (not a public API: see
 * include/pmoe/train.h for that).
 *
 * A run is opened by run_setup.c (communicator, data, backend, model, host
 * buffers), fed by batches.c (this rank's shard of a global batch), measured
 * by evaluate.c (one pass over the test set), and driven by train.c (the
 * loop), saved_model.c (a model loaded from a checkpoint) and route.c. */
#ifndef PMOE_TRAIN_RUN_H
#define PMOE_TRAIN_RUN_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"
#include "comm/comm.h"
#include "core/phase_timer.h"
#include "data/augment.h"
#include "data/dataset.h"
#include "model/model.h"
#include "pmoe/train.h"
#include "train/checkpoint.h"
#include "train/checkpoint_folder.h"
#include "train/input_feed.h"
#include "train/step_ring.h"

struct run;

/* A training batch the input feed composes (train.overlap_input). */
typedef struct feed_job {
    struct run *r;
    const pmoe_dataset *ds;
    const int64_t *indices;
    int64_t count, augment_pass;
    int slot; /* the pinned buffer it goes to */
} feed_job;

typedef struct run {
    const pmoe_config *cfg;
    const pmoe_train_callbacks *cb;
    const volatile sig_atomic_t *stop;
    int per_class; /* the final evaluation fills the result's per-class figures */
    pmoe_dataset *train, *test;
    pmoe_data_source chosen;
    pmoe_backend *be;
    pmoe_comm *comm; /* single in one process */
    int rank, ranks;
    int sharded;        /* the model exchanges through comm (comm->distributed) */
    int stop_agreed;    /* sharded: some rank was asked to stop during this step */
    int64_t saved_step; /* the global step of the last checkpoint written, -1: none */
    pmoe_model *model;
    pmoe_routing_view routing; /* the model's (selected, gate: the last forward's picks) */
    int patch;                 /* the model's patch (deep models: on the pMoE layer's map) */
    int input_patch;           /* the input region one routed patch covers */
    int64_t max_batch;         /* the global batch */
    /* Staging, NULL where the backend's memory is the host's (read in place): */
    float *host_images; /* this rank's share of max_batch composed samples */
    int32_t *host_labels, *host_selected, *host_pair; /* labels, pairs, weights: the global batch */
    float *host_weight;
    int64_t *order;                      /* the epoch's permutation of the training set */
    int64_t *load_position, *load_class; /* experts x n, experts x classes (routing models) */
    int load_classes;        /* patch classes, or 2 for binary tasks, else the class count */
    int load_by_patch_class; /* load_class counts what the picked patches show */
    pmoe_run_info info;
    char last_checkpoint[1024];
    pmoe_checkpoint_folder folder; /* rank 0: where checkpoints go, and its lock */
    double started;
    pmoe_phase_timer timer;              /* this epoch's phases */
    double step_seconds;                 /* this epoch's steps, measured whole */
    int64_t profile_first, profile_last; /* train.profile_steps; 0 = off */
    pmoe_augment augment;                /* data.crop_pad / data.flip, for training batches */
    int describes_input; /* the data are images: checkpoints say how (input_spec.h) */
    char input_meta[512];
    char *class_names_meta; /* NULL when the data have no class names */
    step_ring ring;         /* the steps the host has not read yet (train.sync_every) */
    /* The non-finite guard's list for this phase: the loss, then every
     * gradient about to be applied (guard_param: whose, for the message). */
    int guard_count;
    const float **guard_x;
    int64_t *guard_n;
    int *guard_param;
    /* train.overlap_input, on a backend with be->upload in one process
     * (else feed is NULL): two pinned buffers of a batch's images then its
     * labels (labels_at bytes in), composed by the feed's thread, and the
     * staging area of backend memory they are uploaded into. */
    input_feed *feed;
    void *pinned[2];
    void *staging;
    size_t upload_bytes, labels_at;
    int slot;     /* the pinned buffer the next job goes to */
    feed_job job; /* the feed's current or last job */
    int ahead;    /* job was started ahead of its load */
} run;

/* How a global batch of `count` samples splits: this rank composes `local`
 * positions starting at `first`, of which the first `real` are samples and
 * the rest padding (one process: all of them, no padding). */
typedef struct shard {
    int64_t first, local, real;
} shard;

/* What one pass over the test set measures. */
typedef struct eval_stats {
    double accuracy;
    double recall; /* -1 when not measured */
    double expert_recall[PMOE_MAX_REPORTED_EXPERTS];
    int measured_load;  /* the model routes: load is filled */
    pmoe_routing *keep; /* when not NULL: the first keep->samples samples are copied here */
    pmoe_class_figures *figures;   /* when not NULL: initialised and counted (class_figures.h) */
    const pmoe_progress *progress; /* when not NULL: told after each batch (units: samples) */
} eval_stats;

/* The global step a position has reached: router steps count first. */
static inline int64_t run_global_step(const pmoe_train_position *pos) {
    return pos->phase == PMOE_PHASE_ROUTER ? pos->step : pos->router_steps + pos->step;
}

/* ---- run_setup.c ---- */

/* Communicator, data, backend, model and host buffers; undone by run_close
 * (which also takes a run whose opening failed half way). */
pmoe_status run_open(run *r, pmoe_error *err);
void run_close(run *r);
/* Host memory for *out (at least one byte), weighed first against what the
 * host has left as r's backend counts it (pmoe_backend_host_alloc: the CPU
 * backend's own memory, a CUDA backend's host side), so a run too big for
 * the host is a one-line out-of-memory error naming what the bytes were for
 * rather than a kill. Counted until the backend goes; freed with free(). */
pmoe_status run_host_alloc(run *r, void *out, size_t bytes, const char *what, pmoe_error *err);
/* Takes a checkpoint's input normalisation in place of the one computed at
 * open. */
void run_adopt_saved_input(run *r, const pmoe_st_file *file);

/* The steps a phase of `batches` steps leaves unread at most
 * (train.sync_every, resolved), and the step ring's rows for the run. */
int64_t run_sync_interval(const run *r, int64_t batches);
int run_ring_capacity(const run *r);

/* ---- batches.c ---- */

/* How a global batch of `count` samples splits over the ranks. */
shard run_shard_of(const run *r, int64_t count);
/* The share sh of the batch indices[0..count) composed into images (host
 * memory; padding zeroed): the one composition of every path. */
void run_compose_share(const run *r, const pmoe_dataset *ds, const int64_t *indices,
                       const shard *sh, int64_t augment_pass, float *images);

/* Where a batch is composed (the model's images, or host staging). */
float *run_composed_images(const run *r);
/* Composes this rank's share of ds's samples indices[0..count) into the
 * model and all their labels; augment_pass < 0: not augmented. */
pmoe_status run_load_batch(run *r, const pmoe_dataset *ds, const int64_t *indices, int64_t count,
                           int64_t augment_pass, shard *sh, pmoe_error *err);
/* ---- batch_feed.c: train.overlap_input ---- */

/* Whether training batches go through the feed: overlap_input, a backend
 * with be->upload (CUDA), one process. */
int run_feeds(const run *r);
/* A training batch composed on the feed's thread into pinned memory (ahead,
 * when run_prefetch_batch asked for it), uploaded on the copy stream and
 * landed in the model on the compute stream. */
pmoe_status run_load_batch_fed(run *r, const pmoe_dataset *ds, const int64_t *indices,
                               int64_t count, int64_t augment_pass, shard *sh, pmoe_error *err);
/* Starts composing the training batch after this one on the feed's thread
 * (nothing when run_feeds is 0); run_load_batch takes it. */
pmoe_status run_prefetch_batch(run *r, const pmoe_dataset *ds, const int64_t *indices,
                               int64_t count, int64_t augment_pass, pmoe_error *err);
/* Ends the feed's thread and frees its buffers (run_close). */
void run_feed_close(run *r);
/* train.fault_nan_step: a NaN in the batch's first pixel. */
pmoe_status run_poison_batch(run *r, pmoe_error *err);
/* The router phase's per-sample class pair and weight, into the model. */
pmoe_status run_set_router_targets(run *r, int64_t count, pmoe_error *err);

/* ---- evaluate.c ---- */

/* One pass over the test set into *st (and the load counts into r). */
pmoe_status run_evaluate(run *r, eval_stats *st, pmoe_error *err);
/* The same, timed as the phase timer's evaluation. */
pmoe_status run_timed_evaluate(run *r, eval_stats *st, pmoe_error *err);
/* Copies an evaluation into an epoch report. */
void run_fill_report_eval(const run *r, const eval_stats *st, pmoe_epoch_report *er);

/* ---- saved_model.c ---- */

/* Opens a run whose model holds the weights saved at checkpoint. */
pmoe_status run_open_saved(run *r, const pmoe_config *cfg, const char *checkpoint, char *origin,
                           size_t origin_size, int64_t *step, pmoe_error *err);

#endif
