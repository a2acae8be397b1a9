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

typedef struct run {
    const pmoe_config *cfg;
    const pmoe_train_callbacks *cb;
    const volatile sig_atomic_t *stop;
    int per_class;        /* the final evaluation fills the result's per-class figures */
    pmoe_dataset *train, *test;
    pmoe_data_source chosen;
    pmoe_backend *be;
    pmoe_comm *comm;      /* single in one process */
    int rank, ranks;
    int sharded;          /* the model exchanges through comm (comm->distributed) */
    int stop_agreed;      /* sharded: some rank was asked to stop during this step */
    int64_t saved_step;   /* the global step of the last checkpoint written, -1: none */
    pmoe_model *model;
    pmoe_routing_view routing; /* the model's (selected, gate: the last forward's picks) */
    int patch;             /* the model's patch (deep models: on the pMoE layer's map) */
    int input_patch;       /* the input region one routed patch covers */
    int64_t max_batch;    /* the global batch */
    /* Staging, NULL where the backend's memory is the host's (read in place): */
    float *host_images;   /* this rank's share of max_batch composed samples */
    float *host_scratch;  /* the largest parameter, for gradient checks */
    int32_t *host_labels, *host_selected, *host_pair; /* labels, pairs, weights: the global batch */
    float *host_weight;
    int64_t *order;       /* the epoch's permutation of the training set */
    int64_t *load_position, *load_class; /* experts x n, experts x classes (routing models) */
    int load_classes;     /* patch classes, or 2 for binary tasks, else the class count */
    int load_by_patch_class; /* load_class counts what the picked patches show */
    pmoe_run_info info;
    char last_checkpoint[1024];
    pmoe_checkpoint_folder folder; /* rank 0: where checkpoints go, and its lock */
    double started;
    pmoe_phase_timer timer;  /* this epoch's phases */
    double step_seconds;     /* this epoch's steps, measured whole */
    int64_t profile_first, profile_last; /* train.profile_steps; 0 = off */
    pmoe_augment augment; /* data.crop_pad / data.flip, for training batches */
    int describes_input;  /* the data are images: checkpoints say how (input_spec.h) */
    char input_meta[512];
    char *class_names_meta; /* NULL when the data have no class names */
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
    double recall;         /* -1 when not measured */
    double expert_recall[PMOE_MAX_REPORTED_EXPERTS];
    int measured_load;     /* the model routes: load is filled */
    pmoe_routing *keep;    /* when not NULL: the first keep->samples samples are copied here */
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

/* ---- batches.c ---- */

/* Where a batch is composed (the model's images, or host staging). */
float *run_composed_images(const run *r);
/* Composes this rank's share of ds's samples indices[0..count) into the
 * model and all their labels; augment_pass < 0: not augmented. */
pmoe_status run_load_batch(run *r, const pmoe_dataset *ds, const int64_t *indices,
                           int64_t count, int64_t augment_pass, shard *sh, pmoe_error *err);
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
