/* train.c: the training loop of every model family (pmoe_train,
 * pmoe_eval and pmoe_route in train.h).
 *
 * A run resolves the config against the data (patch size, n, classes),
 * builds backend and model, and walks its phases: separate training first
 * runs the router phase on the linear loss, then the main phase with frozen
 * routers and G = 1. Both phases share one loop. Its position (phase, epoch,
 * next batch, step counts, the epoch's partial sums) is all a checkpoint
 * needs besides the weights, because each epoch's shuffle is a pure function
 * of (train.seed, epoch): a resumed run replays exactly.
 *
 * Expert parallelism (a distributed communicator, see comm/comm.h and
 * model/model.h): every rank opens the same data and computes the same
 * shuffle, then composes only its shard of each global batch (rank r: the
 * batch's samples [r B/R, (r+1) B/R)). A batch that does not split evenly
 * (an epoch's last, or the test set's) is padded with zero images up to a
 * multiple of R; padding carries no loss and no gradient, so every rank count
 * trains on exactly the one-process batches. The loss, its sums and the
 * correct counts are the global batch's on every rank; evaluation's recall
 * and load counts are summed over ranks exactly (integers). Ranks agree on
 * every outcome a rank can meet alone (a failed data open, a NaN in its
 * experts' gradients, a signal) at fixed points: after setup and once per
 * step (one all-reduce of three ints), so they stop together with the
 * failing rank's message; callbacks run on rank 0 only. */
#include "pmoe/train.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend/backend.h"
#include "comm/comm.h"
#include "core/phase_timer.h"
#include "core/rng.h"
#include "cuda/cuda_backend.h"
#include "data/augment.h"
#include "data/dataset.h"
#include "model/model.h"
#include "train/checkpoint.h"
#include "train/checkpoint_folder.h"
#include "train/input_spec.h"
#include "train/lr_schedule.h"
#include "train/resolve.h"
#include "train/resume.h"

enum { STREAM_SHUFFLE = 0x5eed, STREAM_ROUTER_SHUFFLE = 0x5eee };

typedef struct run {
    const pmoe_config *cfg;
    const pmoe_train_callbacks *cb;
    const volatile sig_atomic_t *stop;
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

/* ---- setup ---- */

/* Expert parallelism over R ranks: R divides k (each rank owns k / R
 * experts) and the batch (each rank composes B / R samples). */
static pmoe_status check_ranks(const run *r, pmoe_error *err) {
    const pmoe_config *cfg = r->cfg;
    const int R = r->ranks;
    const int k = cfg->model.type == PMOE_MODEL_PMOE ? cfg->model.experts : 1;
    if (k % R)
        return pmoe_fail(err, PMOE_ERR_CONFIG,
                         "config: model.experts = %d is not divisible by the %d ranks: expert "
                         "parallelism gives each rank k / R experts; start a rank count that "
                         "divides %d%s",
                         k, R, k,
                         cfg->model.type == PMOE_MODEL_CNN
                             ? " (the CNN is one expert: run it in one process)"
                             : "");
    if (cfg->train.batch % R)
        return pmoe_fail(err, PMOE_ERR_CONFIG,
                         "config: train.batch = %d is not divisible by the %d ranks: each rank "
                         "takes B / R samples of every batch",
                         cfg->train.batch, R);
    if (cfg->train.mode == PMOE_TRAIN_SEPARATE && cfg->train.router_batch % R)
        return pmoe_fail(err, PMOE_ERR_CONFIG,
                         "config: train.router_batch = %d is not divisible by the %d ranks",
                         cfg->train.router_batch, R);
    return PMOE_OK;
}

/* Checks that need the data: patch size, l <= n, separate-training layout. */
static pmoe_status resolve_against_data(run *r, pmoe_error *err) {
    const pmoe_config *cfg = r->cfg;
    const pmoe_dataset *ds = r->train;
    pmoe_status s = pmoe_resolve_patch(cfg, ds, &r->patch, err);
    if (s) return s;
    r->input_patch = pmoe_input_patch(cfg, r->patch);
    const int k = cfg->model.experts;
    if (cfg->model.type == PMOE_MODEL_PMOE && cfg->train.mode == PMOE_TRAIN_SEPARATE) {
        if (ds->classes == 1 && k != 2)
            return pmoe_fail(err, PMOE_ERR_CONFIG,
                             "config: train.mode = separate on a binary task needs "
                             "model.experts = 2, not %d",
                             k);
        if (ds->classes > 1 && (k != ds->classes || ds->classes % 2))
            return pmoe_fail(err, PMOE_ERR_CONFIG,
                             "config: train.mode = separate with %d classes needs "
                             "model.experts = %d (routers trained in class pairs) and an "
                             "even class count",
                             ds->classes, ds->classes);
    }
    r->augment = pmoe_augment_from_config(cfg);
    if (pmoe_augment_active(&r->augment) && r->chosen == PMOE_DATA_SYNTHETIC)
        return pmoe_fail(err, PMOE_ERR_CONFIG,
                         "config: data.crop_pad / data.flip: the synthetic model's samples are "
                         "not images");
    if (pmoe_augment_active(&r->augment) && ds->width > PMOE_AUGMENT_MAX_WIDTH)
        return pmoe_fail(err, PMOE_ERR_CONFIG,
                         "config: data.crop_pad / data.flip take images up to %d pixels wide, "
                         "not %d (set data.image_size)",
                         PMOE_AUGMENT_MAX_WIDTH, ds->width);
    if (cfg->model.type == PMOE_MODEL_CNN && cfg->train.mode == PMOE_TRAIN_SEPARATE)
        return pmoe_fail(err, PMOE_ERR_CONFIG,
                         "config: train.mode = separate needs model.type = pmoe (the CNN has no "
                         "router)");
    return r->sharded ? check_ranks(r, err) : PMOE_OK;
}

static pmoe_status host_alloc(void *out, size_t bytes, const char *what, pmoe_error *err) {
    void *p = malloc(bytes ? bytes : 1);
    *(void **)out = p;
    if (!p)
        return pmoe_fail(err, PMOE_ERR_OOM,
                         "out of host memory: %zu bytes asked for %s; reduce train.batch or the "
                         "data size",
                         bytes, what);
    return PMOE_OK;
}

_Static_assert(PMOE_T_COUNT <= PMOE_MAX_PHASES, "raise PMOE_MAX_PHASES in train.h");

int pmoe_phase_count(void) { return PMOE_T_COUNT; }
int pmoe_step_phase_count(void) { return PMOE_T_STEP_PHASES; }
const char *pmoe_phase_name(int phase) { return pmoe_timer_name((pmoe_phase_id)phase); }

static void fill_info(run *r) {
    pmoe_run_info *in = &r->info;
    const pmoe_model *m = r->model;
    snprintf(in->data, sizeof in->data, "%s", r->train->description);
    in->source = r->chosen;
    snprintf(in->backend, sizeof in->backend, "%s", r->be->name);
    snprintf(in->model, sizeof in->model, "%s", pmoe_model_type_name(r->cfg->model.type));
    in->params = pmoe_model_param_count(m);
    in->train_size = r->train->count;
    in->test_size = r->test->count;
    in->patches = r->routing.patch_count;
    in->patch_dim = r->routing.patch_dim;
    in->patch = r->patch;
    in->classes = m->classes;
    in->experts = r->routing.experts;
    in->topl = r->routing.topl;
    in->steps_per_epoch = (r->train->count + r->cfg->train.batch - 1) / r->cfg->train.batch;
    in->epochs = r->cfg->train.epochs;
    in->router_epochs = r->routing.routes && r->cfg->train.mode == PMOE_TRAIN_SEPARATE
                            ? r->cfg->train.router_epochs
                            : 0;
    in->rank = r->rank;
    in->ranks = r->ranks;
    snprintf(in->comm, sizeof in->comm, "%s", r->comm->name);
}

/* The process's communicator, and who we are in it. */
static pmoe_status open_comm(run *r, pmoe_error *err) {
    pmoe_status s = pmoe_comm_open((pmoe_comm_kind)r->cfg->train.comm, &r->comm, err);
    if (s) return s;
    r->rank = r->comm->rank;
    r->ranks = r->comm->size;
    r->sharded = r->comm->distributed;
    r->info.rank = r->rank;
    r->info.ranks = r->ranks;
    return PMOE_OK;
}

/* train.device for this rank: with several ranks on a node, "auto" (when a
 * GPU answers) and "cuda" take GPU local_rank mod the GPUs present; an
 * explicit cuda:N is kept. *cuda_index gets the CUDA device a CUDA backend
 * will use. */
static void choose_device(const run *r, char *out, size_t size, int *cuda_index) {
    const char *want = r->cfg->train.device;
    snprintf(out, size, "%s", want);
    *cuda_index = 0;
    if (strncmp(want, "cuda:", 5) == 0) *cuda_index = atoi(want + 5);
    const int per_rank = (r->ranks > 1 || r->cfg->train.comm == PMOE_COMM_NCCL) &&
                         (strcmp(want, "auto") == 0 || strcmp(want, "cuda") == 0);
    const int gpus = per_rank ? pmoe_cuda_device_count(NULL, 0) : 0;
    if (gpus > 0) {
        *cuda_index = r->comm->local_rank % gpus;
        snprintf(out, size, "cuda:%d", *cuda_index);
    }
}

/* train.fault_rank (a testing aid): that rank reads its data from a folder
 * that does not exist, so the real reader fails the real way on one rank. */
static pmoe_status open_data(run *r, pmoe_error *err) {
    pmoe_data_config data = r->cfg->data;
    if (r->cfg->train.fault_rank == r->rank) {
        char path[sizeof data.path];
        int n = snprintf(path, sizeof path, "%s/pmoe-fault-rank-%d", data.path, r->rank);
        if (n > 0 && (size_t)n < sizeof path) memcpy(data.path, path, (size_t)n + 1);
        if (data.source == PMOE_DATA_AUTO || data.source == PMOE_DATA_SYNTHETIC)
            data.source = PMOE_DATA_IDX;
    }
    return pmoe_data_open(&data, &r->train, &r->test, &r->chosen, err);
}

/* The data's input description, for checkpoints (input_spec.h). */
static void describe_input(run *r) {
    free(r->class_names_meta);
    r->describes_input = pmoe_input_spec_describe(r->train, r->input_meta, sizeof r->input_meta,
                                                  &r->class_names_meta);
}

/* A checkpoint's normalisation replaces the one computed at open, so a
 * resumed or evaluated model sees what it was trained on. */
static void adopt_saved_input(run *r, const pmoe_st_file *file) {
    pmoe_input_spec_adopt(file, r->train);
    pmoe_input_spec_adopt(file, r->test);
    describe_input(r);
}

/* Host buffers, the timer and the run's description. */
static pmoe_status open_buffers(run *r, pmoe_error *err) {
    const pmoe_config *cfg = r->cfg;
    const pmoe_model *m = r->model;
    const pmoe_routing_view *rv = &r->routing;
    const int64_t B = r->max_batch, local = B / r->ranks;
    pmoe_status s;
    const int64_t most = r->train->count > r->test->count ? r->train->count : r->test->count;
    const size_t per_sample = (size_t)r->train->channels * r->train->height * r->train->width;
    int64_t largest = 0;
    for (int i = 0; i < m->param_count; i++)
        if (m->params[i].value.data && pmoe_tensor_numel(&m->params[i].value) > largest)
            largest = pmoe_tensor_numel(&m->params[i].value);
    /* Staging for a batch and a gradient: a backend whose memory is the
     * host's is read and written in place and needs neither. */
    s = PMOE_OK;
    if (!r->be->host_memory) {
        s = host_alloc(&r->host_images, (size_t)local * per_sample * sizeof(float), "a batch", err);
        if (!s) s = host_alloc(&r->host_scratch, (size_t)largest * sizeof(float), "a gradient", err);
    }
    if (!s) s = host_alloc(&r->host_labels, (size_t)B * 4, "labels", err);
    if (!s) s = host_alloc(&r->host_pair, (size_t)B * 4, "router pairs", err);
    if (!s) s = host_alloc(&r->host_weight, (size_t)B * 4, "router weights", err);
    if (!s)
        s = host_alloc(&r->host_selected, (size_t)(local * rv->experts * rv->topl) * 4,
                       "the selections", err);
    if (!s) s = host_alloc(&r->order, (size_t)most * sizeof(int64_t), "the order", err);
    /* Load by class: by what each picked patch shows where the data says
     * (mosaic items, synthetic patterns) on the model's patch grid, else by
     * the sample's class. */
    r->load_by_patch_class = r->test->patch_class && r->test->decisive_patch_size == r->input_patch;
    r->load_classes = r->load_by_patch_class ? r->test->patch_classes
                      : m->classes == 1     ? 2
                                            : m->classes;
    if (!s)
        s = host_alloc(&r->load_position, sizeof(int64_t) * (size_t)(rv->experts * rv->patch_count),
                       "expert load", err);
    if (!s)
        s = host_alloc(&r->load_class, sizeof(int64_t) * (size_t)(rv->experts * r->load_classes),
                       "expert load", err);
    if (!s) {
        describe_input(r);
        fill_info(r);
        pmoe_backend_time_phases(r->be, &r->timer);
        r->model->timer = &r->timer;
        long long first = 0, last = 0;
        if (cfg->train.profile_steps[0] &&
            sscanf(cfg->train.profile_steps, "%lld:%lld", &first, &last) == 2) {
            r->profile_first = first;
            r->profile_last = last;
        }
    }
    return s;
}

/* Communicator, data, backend, model and host buffers; undone by close_run.
 * Sharded, the ranks agree after the local setup (before NCCL's collective
 * start) and after the model, so a rank that fails stops them all. */
static pmoe_status open_run(run *r, pmoe_error *err) {
    const pmoe_config *cfg = r->cfg;
    r->started = pmoe_now_seconds();
    r->chosen = cfg->data.source;
    pmoe_status s = open_comm(r, err);
    if (s) return s;
    int threads = cfg->train.threads, cuda_index = 0;
    if (threads == 0 && r->comm->local_size > 1) { /* share the node's cores */
        const long cores = sysconf(_SC_NPROCESSORS_ONLN);
        threads = cores > r->comm->local_size ? (int)(cores / r->comm->local_size) : 1;
    }
    char device[sizeof cfg->train.device];
    choose_device(r, device, sizeof device, &cuda_index);
    s = pmoe_config_check(cfg, err);
    if (!s) s = pmoe_lr_schedule_check(&cfg->train, err);
    if (!s) s = open_data(r, err);
    if (!s) s = resolve_against_data(r, err);
    if (!s) s = pmoe_backend_create(device, threads, &r->be, err);
    if (!s) s = pmoe_backend_set_cpu_kernels(r->be, (pmoe_cpu_kernels)cfg->train.cpu_kernels, err);
    s = pmoe_comm_agree(r->comm, s, err, NULL, 0);
    if (!s)
        s = pmoe_comm_use_device(&r->comm, (pmoe_comm_kind)cfg->train.comm,
                                 pmoe_backend_is_cuda(r->be) ? cuda_index : -1,
                                 pmoe_cuda_backend_stream(r->be), err);
    if (s) return s;
    r->max_batch = cfg->train.batch;
    if (cfg->train.mode == PMOE_TRAIN_SEPARATE && cfg->train.router_batch > r->max_batch)
        r->max_batch = cfg->train.router_batch;
    s = pmoe_model_create_sharded(r->be, r->comm, cfg, r->train->channels, r->train->height,
                                      r->train->width, r->patch, r->train->classes, r->max_batch,
                                      &r->model, err);
    if (!s) r->routing = pmoe_model_routing(r->model);
    if (!s) s = open_buffers(r, err);
    return pmoe_comm_agree(r->comm, s, err, NULL, 0);
}

static void close_run(run *r) {
    pmoe_comm *comm = r->comm;
    free(r->host_images);
    free(r->host_scratch);
    free(r->host_labels);
    free(r->host_pair);
    free(r->host_weight);
    free(r->host_selected);
    free(r->order);
    free(r->load_position);
    free(r->load_class);
    free(r->class_names_meta);
    pmoe_model_free(r->model);
    pmoe_comm_close(comm); /* before the backend: NCCL's stream waits on the backend's */
    pmoe_backend_destroy(r->be);
    pmoe_dataset_free(r->train);
    pmoe_dataset_free(r->test);
}

/* ---- one batch ---- */

/* How a global batch of `count` samples splits: this rank composes `local`
 * positions starting at `first`, of which the first `real` are samples and
 * the rest padding (one process: all of them, no padding). */
typedef struct shard {
    int64_t first, local, real;
} shard;

static shard shard_of(const run *r, int64_t count) {
    if (!r->sharded) return (shard){0, count, count};
    const int64_t local = (count + r->ranks - 1) / r->ranks, first = r->rank * local;
    const int64_t left = count - first;
    return (shard){first, local, left < 0 ? 0 : left < local ? left : local};
}

/* Where a batch is composed: straight into the model's images when the
 * backend's memory is the host's (no copy), else a host buffer copied in. */
static float *composed_images(const run *r) {
    return r->be->host_memory ? r->model->images : r->host_images;
}

/* Composes this rank's share of the global batch indices[0..count) into the
 * model's images (padding: zeros), and the labels of the whole batch (the
 * loss of every rank reads them all). Returns the share in *sh. A training
 * batch (augment_pass >= 0) is augmented as data.crop_pad / data.flip ask,
 * drawn for that pass (see data/augment.h). */
static pmoe_status load_batch(run *r, const pmoe_dataset *ds, const int64_t *indices,
                              int64_t count, int64_t augment_pass, shard *sh, pmoe_error *err) {
    const int64_t per_sample = (int64_t)ds->channels * ds->height * ds->width;
    *sh = shard_of(r, count);
    const int64_t *mine = indices + sh->first, real = sh->real;
    float *images = composed_images(r);
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
    for (int64_t i = 0; i < count; i++) r->host_labels[i] = ds->labels[indices[i]];
    pmoe_backend *be = r->be;
    const size_t bytes = (size_t)(sh->local * per_sample) * sizeof(float);
    pmoe_status s = be->host_memory ? PMOE_OK
                                    : be->copy_in(be, r->model->images, r->host_images, bytes, err);
    if (!s)
        s = be->copy_in(be, r->model->labels, r->host_labels, (size_t)count * sizeof(int32_t),
                        err);
    return s;
}

/* train.fault_nan_step: makes the first pixel of the batch NaN, so tests can
 * drive the non-finite guard through the real path (sharded: on rank 0,
 * which holds the batch's first sample). */
static pmoe_status poison_batch(run *r, pmoe_error *err) {
    const float nan = NAN;
    if (r->rank != 0) return PMOE_OK;
    return r->be->copy_in(r->be, r->model->images, &nan, sizeof nan, err);
}

/* Whether every value is finite: an all-ones exponent marks Inf and NaN,
 * tested on the bits with an OR over the array, which vectorises (a branch
 * per value on isfinite() does not). */
static int all_finite(const float *x, int64_t n) {
    uint32_t inf_or_nan = 0;
    for (int64_t j = 0; j < n; j++) {
        uint32_t bits;
        memcpy(&bits, &x[j], sizeof bits);
        inf_or_nan |= (uint32_t)((bits & 0x7f800000u) == 0x7f800000u);
    }
    return !inf_or_nan;
}

/* The index of the first parameter about to be updated in this phase whose
 * gradient holds a NaN or Inf, or -1. Reads the gradients in place where the
 * backend's memory is the host's, else copies each to the host first
 * (sharded: this rank's experts and the replicated rest). */
static pmoe_status first_nonfinite_gradient(run *r, pmoe_phase phase, int *which,
                                            pmoe_error *err) {
    pmoe_model *m = r->model;
    *which = -1;
    for (int i = 0; i < m->param_count && *which < 0; i++) {
        const int updated = phase == PMOE_PHASE_ROUTER ? i == r->routing.router_param
                                                       : pmoe_model_updates(m, i);
        if (!updated) continue;
        const pmoe_tensor *g = &m->params[i].grad;
        const int64_t n = pmoe_tensor_numel(g);
        const float *values = g->data;
        if (!r->be->host_memory) {
            pmoe_status s =
                r->be->copy_out(r->be, r->host_scratch, g->data, (size_t)n * sizeof(float), err);
            if (s) return s;
            values = r->host_scratch;
        }
        if (!all_finite(values, n)) *which = i;
    }
    return PMOE_OK;
}

/* Fills the router phase's per-sample pair and weight: routers (2q, 2q + 1)
 * learn class pair q; a sample's weight is its sign over its pair's count in
 * the (global) batch, so every pair sees a batch mean. Sharded, each rank
 * copies in its share; padding gets weight 0. */
static pmoe_status set_router_targets(run *r, int64_t count, pmoe_error *err) {
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
    const shard sh = shard_of(r, count);
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

/* ---- evaluation ---- */

/* What one pass over the test set measures. */
typedef struct eval_stats {
    double accuracy;
    double recall;         /* -1 when not measured */
    double expert_recall[PMOE_MAX_REPORTED_EXPERTS];
    int measured_load;     /* the model routes: load is filled */
    pmoe_routing *keep;    /* when not NULL: the first keep->samples samples are copied here */
} eval_stats;

/* Test accuracy; where the model routes, per-expert load by position and by
 * class (into r->load_*); and where the task knows the deciding patch and the
 * model routes on the same patch grid, router recall: the share of samples
 * whose deciding patch is among the l picks of at least one expert (and per
 * expert). */
static pmoe_status evaluate(run *r, eval_stats *st, pmoe_error *err) {
    pmoe_model *m = r->model;
    const pmoe_dataset *ds = r->test;
    const pmoe_routing_view *rv = &r->routing;
    const int k = rv->experts, l = rv->topl, n = rv->patch_count, c = r->load_classes;
    const int routes = rv->routes;
    const int measure_recall = routes && ds->decisive_patch && ds->decisive_patch_size == r->input_patch;
    const int64_t per_sample = (int64_t)ds->channels * ds->height * ds->width;
    int64_t correct_total = 0, recalled_any = 0;
    int64_t recalled[PMOE_MAX_REPORTED_EXPERTS] = {0};
    m->training = 0; /* batch norm on its running statistics (the step sets it back) */
    if (routes) {
        memset(r->load_position, 0, sizeof(int64_t) * (size_t)(k * n));
        memset(r->load_class, 0, sizeof(int64_t) * (size_t)(k * c));
    }
    /* Sharded, a rank that fails keeps taking part in the collectives until
     * the agreement at the end, where every rank learns of it; alone it
     * returns at once. */
    pmoe_status failed = PMOE_OK;
    pmoe_error ignored;
    for (int64_t start = 0; start < ds->count; start += r->max_batch) {
        /* one process stops between batches (the caller saves and says so) */
        if (!r->sharded && r->stop && *r->stop) return PMOE_ERR_INTERRUPTED;
        int64_t count = ds->count - start < r->max_batch ? ds->count - start : r->max_batch;
        for (int64_t i = 0; i < count; i++) r->order[i] = start + i;
        shard sh;
        pmoe_status s = load_batch(r, ds, r->order, count, -1, &sh, failed ? &ignored : err);
        if (s && !r->sharded) return s;
        if (!failed) failed = s;
        pmoe_model_forward_valid(m, sh.local, count);
        double loss;
        int64_t correct = 0;
        s = pmoe_model_loss(m, 0, &loss, &correct, failed ? &ignored : err);
        if (s && !r->sharded) return s;
        if (!failed) failed = s;
        correct_total += correct; /* the global batch's, on every rank */
        if (!routes) continue;
        s = r->be->copy_out(r->be, r->host_selected, rv->selected,
                            (size_t)(sh.local * k * l) * sizeof(int32_t), failed ? &ignored : err);
        if (s && !r->sharded) return s;
        if (!failed) failed = s;
        for (int64_t i = 0; i < sh.real; i++) {
            const int label = r->host_labels[sh.first + i];
            const int32_t want = measure_recall ? ds->decisive_patch[start + sh.first + i] : -1;
            int any = 0;
            for (int e = 0; e < k; e++) {
                int hit = 0;
                for (int t = 0; t < l; t++) {
                    const int32_t j = r->host_selected[(i * k + e) * l + t];
                    r->load_position[e * n + j]++;
                    if (r->load_by_patch_class)
                        r->load_class[e * c + ds->patch_class(ds, start + sh.first + i, j)]++;
                    hit |= j == want;
                }
                if (!r->load_by_patch_class) r->load_class[e * c + label] += l;
                any |= hit;
                if (e < PMOE_MAX_REPORTED_EXPERTS) recalled[e] += hit;
            }
            recalled_any += any;
        }
        pmoe_routing *keep = st->keep; /* one process only (pmoe_route) */
        const int64_t kept = keep && start < keep->samples
                                 ? (keep->samples - start < count ? keep->samples - start : count)
                                 : 0;
        if (kept > 0) {
            memcpy(keep->images + start * per_sample, composed_images(r),
                   sizeof(float) * (size_t)(kept * per_sample));
            memcpy(keep->selected + start * k * l, r->host_selected,
                   sizeof(int32_t) * (size_t)(kept * k * l));
            s = r->be->copy_out(r->be, keep->gate + start * k * l, rv->gate,
                                sizeof(float) * (size_t)(kept * k * l), err);
            if (s) return s;
            for (int64_t i = 0; i < kept; i++) {
                keep->labels[start + i] = r->host_labels[i];
                keep->decisive[start + i] = ds->decisive_patch ? ds->decisive_patch[start + i] : -1;
            }
        }
    }
    if (r->sharded) { /* exact integer sums of every rank's samples */
        int64_t counts[1 + PMOE_MAX_REPORTED_EXPERTS];
        const int reported = k < PMOE_MAX_REPORTED_EXPERTS ? k : PMOE_MAX_REPORTED_EXPERTS;
        counts[0] = recalled_any;
        memcpy(counts + 1, recalled, sizeof(int64_t) * (size_t)reported);
        r->comm->sum_i64(r->comm, counts, 1 + reported);
        recalled_any = counts[0];
        memcpy(recalled, counts + 1, sizeof(int64_t) * (size_t)reported);
        if (routes) {
            r->comm->sum_i64(r->comm, r->load_position, k * n);
            r->comm->sum_i64(r->comm, r->load_class, k * c);
        }
        failed = pmoe_comm_agree(r->comm, failed, err, NULL, 0);
        if (failed) return failed;
    }
    st->accuracy = (double)correct_total / (double)ds->count;
    st->recall = measure_recall ? (double)recalled_any / (double)ds->count : -1.0;
    st->measured_load = routes;
    for (int e = 0; e < k && e < PMOE_MAX_REPORTED_EXPERTS; e++)
        st->expert_recall[e] = measure_recall ? (double)recalled[e] / (double)ds->count : -1.0;
    return PMOE_OK;
}

/* Evaluation as one timed phase: the model's own phases stay out of it. */
static pmoe_status timed_evaluate(run *r, eval_stats *st, pmoe_error *err) {
    pmoe_timer_enter(&r->timer, PMOE_T_EVAL, (uint64_t)r->test->count);
    r->model->timer = NULL;
    pmoe_status s = evaluate(r, st, err);
    r->model->timer = &r->timer;
    pmoe_timer_stop(&r->timer);
    return s;
}

/* ---- the loop ---- */

typedef struct phase_plan {
    pmoe_phase phase;
    int64_t size;      /* samples: the first `size` of the training set */
    int64_t batch;
    int epochs;
    double lr;         /* the schedule's base rate */
    uint64_t shuffle_stream;
} phase_plan;

static int64_t global_step(const pmoe_train_position *pos) {
    return pos->phase == PMOE_PHASE_ROUTER ? pos->step : pos->router_steps + pos->step;
}

static pmoe_status save_checkpoint(run *r, const pmoe_train_position *pos, pmoe_error *err) {
    char path[sizeof r->last_checkpoint];
    pmoe_checkpoint_path(r->folder.dir, global_step(pos), path, sizeof path);
    pmoe_status s = PMOE_OK;
    if (r->rank == 0) { /* rank 0 writes; a run with checkpoint_every = 0 claims the folder now */
        s = pmoe_checkpoint_folder_claim(&r->folder, 0, err);
        if (!s) s = pmoe_checkpoint_folder_may_write(&r->folder, path, err);
    }
    s = pmoe_comm_agree(r->comm, s, err, NULL, 0);
    if (!s) {
        const pmoe_st_meta input[2] = {{"input", r->input_meta},
                                       {"class_names", r->class_names_meta}};
        const int described = !r->describes_input ? 0 : r->class_names_meta ? 2 : 1;
        s = pmoe_checkpoint_save_with(path, r->model, r->cfg, pos, input, described, err);
    }
    if (s) {
        /* say what survives: the file named in the message was not replaced */
        char detail[sizeof err->message];
        snprintf(detail, sizeof detail, "%s", err->message);
        return pmoe_fail(err, s, "checkpoint not saved (%s); %s%s", detail,
                         r->last_checkpoint[0] ? "the last good checkpoint is "
                                               : "no earlier checkpoint was written",
                         r->last_checkpoint);
    }
    snprintf(r->last_checkpoint, sizeof r->last_checkpoint, "%s", path);
    r->saved_step = global_step(pos);
    if (r->rank == 0) pmoe_checkpoint_folder_prune(&r->folder, r->cfg->train.keep);
    return PMOE_OK;
}

/* Whether a stop was asked for outside a step (sharded: on any rank, and
 * every rank learns it). */
static int stop_requested(run *r) {
    int asked = r->stop && *r->stop ? -1 : 0;
    if (r->sharded) pmoe_comm_agree(r->comm, PMOE_OK, NULL, &asked, 1);
    return asked < 0;
}

/* The end of a stopped run: a checkpoint of *pos (unless the last one is
 * of this very step) and PMOE_ERR_INTERRUPTED. */
static pmoe_status stop_at(run *r, const pmoe_train_position *pos, pmoe_error *err) {
    if (r->saved_step != global_step(pos)) {
        pmoe_timer_enter(&r->timer, PMOE_T_CHECKPOINT, (uint64_t)global_step(pos));
        pmoe_status s = save_checkpoint(r, pos, err);
        pmoe_timer_stop(&r->timer);
        if (s) return s;
    }
    return pmoe_fail(err, PMOE_ERR_INTERRUPTED, "stopped after step %lld; checkpoint %s",
                     (long long)global_step(pos), r->last_checkpoint);
}

/* One step on the global batch of `count` samples, this rank's share `sh` of
 * it in the model. Sets *nonfinite (with what and where) instead of updating
 * when the loss or a gradient is NaN or Inf. Sharded, `loaded` is the batch
 * load's outcome: a rank whose load failed still runs the step's
 * collectives, and before anyone updates the ranks agree on failures,
 * non-finite gradients (each rank sees only its experts') and stop
 * requests, so all of them update or none does. */
static pmoe_status take_step(run *r, const phase_plan *plan, float lr, int64_t count,
                             const shard *sh, pmoe_status loaded, double *loss, int64_t *correct,
                             const char **nonfinite, pmoe_error *err) {
    pmoe_model *m = r->model;
    const pmoe_train_config *t = &r->cfg->train;
    pmoe_error ignored; /* a rank's later failures, once it has one */
    pmoe_status s = loaded, next;
    *loss = 0.0;
    *correct = 0;
    *nonfinite = NULL;
    if (plan->phase == PMOE_PHASE_ROUTER) {
        next = set_router_targets(r, count, s ? &ignored : err);
        if (!s) s = next;
        if (!s || r->sharded) {
            next = pmoe_model_router_loss(m, sh->local, loss, s ? &ignored : err);
            if (!s) s = next;
        }
    } else {
        m->training = 1;
        pmoe_model_forward_valid(m, sh->local, count);
        next = pmoe_model_loss(m, 1, loss, correct, s ? &ignored : err);
        if (!s) s = next;
    }
    int bad = INT_MAX; /* 0: the loss; 1 + i: parameter i's gradient */
    if (!s && !isfinite(*loss)) {
        bad = 0;
    } else if (!s) {
        pmoe_timer_enter(&r->timer, PMOE_T_GUARD, 0);
        int which = -1;
        s = first_nonfinite_gradient(r, plan->phase, &which, err);
        if (which >= 0) bad = 1 + which;
    }
    if (r->sharded) {
        int agreed[2] = {bad, r->stop && *r->stop ? -1 : 0};
        s = pmoe_comm_agree(r->comm, s, err, agreed, 2);
        bad = agreed[0];
        r->stop_agreed = agreed[1] < 0;
    }
    if (s) return s;
    if (bad != INT_MAX) {
        *nonfinite = bad == 0 ? "the loss" : m->params[bad - 1].name;
        return PMOE_OK;
    }
    pmoe_timer_enter(&r->timer, PMOE_T_OPTIMIZER, 0);
    if (plan->phase == PMOE_PHASE_ROUTER) {
        pmoe_param *router = &m->params[r->routing.router_param];
        r->be->ops->sgd_update(r->be, pmoe_tensor_numel(&router->value), router->value.data,
                               router->grad.data, router->velocity.data, lr,
                               (float)t->momentum, (float)t->weight_decay);
    } else {
        pmoe_model_sgd(m, lr, (float)t->momentum, (float)t->weight_decay);
    }
    return PMOE_OK;
}

static int reported_experts(const run *r) {
    return r->routing.experts < PMOE_MAX_REPORTED_EXPERTS ? r->routing.experts
                                                          : PMOE_MAX_REPORTED_EXPERTS;
}

/* Copies an evaluation into an epoch report (load points into r). */
static void fill_report_eval(const run *r, const eval_stats *st, pmoe_epoch_report *er) {
    er->test_acc = st->accuracy;
    er->router_recall = st->recall;
    if (st->recall >= 0.0) {
        er->experts_reported = reported_experts(r);
        memcpy(er->expert_recall, st->expert_recall, sizeof er->expert_recall);
    }
    if (st->measured_load)
        er->load = (pmoe_expert_load){r->routing.experts, r->routing.patch_count, r->load_classes,
                                      r->load_position, r->load_class, r->test->count,
                                      r->test->height / r->input_patch,
                                      r->test->width / r->input_patch};
}

static pmoe_status report_epoch(run *r, const phase_plan *plan, const pmoe_train_position *pos,
                                pmoe_epoch_report *er, double epoch_began, pmoe_error *err) {
    er->phase = plan->phase;
    er->epoch = pos->epoch;
    er->epochs = plan->epochs;
    er->step = pos->step;
    er->train_loss = pos->loss_sum / (double)plan->size;
    er->train_acc = plan->phase == PMOE_PHASE_MAIN ? (double)pos->correct_sum / (double)plan->size : -1.0;
    memcpy(er->phase_seconds, r->timer.seconds, sizeof r->timer.seconds);
    er->step_seconds = r->step_seconds;
    er->seconds = pmoe_now_seconds() - epoch_began;
    er->elapsed = pmoe_now_seconds() - r->started;
    er->skipped_steps = pos->skipped;
    return r->cb && r->cb->on_epoch ? r->cb->on_epoch(r->cb->user, er, err) : PMOE_OK;
}

/* Runs a phase from *pos to its end, updating *pos as it goes. */
/* train.profile_steps: the device profiler's capture starts before step A
 * and stops after step B; each edge is also a zero-length NVTX range
 * ("profile_start" / "profile_stop", payload the step), so that any NVTX
 * tool (and the CPU, which has no profiler) sees where the window lies. */
static void profile_edge(run *r, int start, int64_t step) {
    if (!start && r->be->profiler) r->be->profiler(r->be, 0);
    pmoe_trace_push(start ? "profile_start" : "profile_stop", (uint64_t)step);
    pmoe_trace_pop();
    if (start && r->be->profiler) r->be->profiler(r->be, 1);
}

static pmoe_status run_phase(run *r, const phase_plan *plan, pmoe_train_position *pos,
                             pmoe_train_result *res, pmoe_error *err) {
    const pmoe_config *cfg = r->cfg;
    const int64_t batches = (plan->size + plan->batch - 1) / plan->batch;
    const double began = pmoe_now_seconds();
    const int64_t first_step = pos->step;
    const pmoe_lr_schedule schedule =
        pmoe_lr_schedule_make(&cfg->train, plan->lr, plan->epochs, batches);
    r->model->exchange_bytes = 0;
    for (; pos->epoch <= plan->epochs; pos->epoch++, pos->next_batch = 0, pos->loss_sum = 0,
                                       pos->correct_sum = 0) {
        const double epoch_began = pmoe_now_seconds();
        for (int64_t i = 0; i < plan->size; i++) r->order[i] = i;
        pmoe_rng rng = pmoe_rng_make(cfg->train.seed, plan->shuffle_stream + (uint64_t)pos->epoch * 2);
        pmoe_rng_shuffle(&rng, r->order, plan->size);
        for (; pos->next_batch < batches; pos->next_batch++) {
            const int64_t start = pos->next_batch * plan->batch;
            const int64_t count = plan->size - start < plan->batch ? plan->size - start : plan->batch;
            const int64_t this_step = global_step(pos) + 1;
            if (this_step == r->profile_first) profile_edge(r, 1, this_step);
            const double step_began = pmoe_now_seconds();
            pmoe_trace_push("step", (uint64_t)this_step);
            pmoe_timer_enter(&r->timer, PMOE_T_DATA, (uint64_t)count);
            shard sh;
            /* augmentation passes: the main phase's epochs, the router phase's above them */
            const int64_t pass = pos->epoch + (plan->phase == PMOE_PHASE_ROUTER ? (1LL << 32) : 0);
            pmoe_status s = load_batch(r, r->train, r->order + start, count, pass, &sh, err);
            if (!s && plan->phase == PMOE_PHASE_MAIN && pos->step + 1 == cfg->train.fault_nan_step)
                s = poison_batch(r, err);
            double loss = 0.0;
            int64_t correct = 0;
            const char *nonfinite = NULL;
            if (!s || r->sharded)
                s = take_step(r, plan, (float)pmoe_lr_at(&schedule, pos->step), count, &sh, s,
                              &loss, &correct, &nonfinite, err);
            pmoe_timer_stop(&r->timer);
            pmoe_trace_pop();
            r->step_seconds += pmoe_now_seconds() - step_began;
            if (this_step == r->profile_last) profile_edge(r, 0, this_step);
            if (s) return s;
            if (nonfinite && cfg->train.on_nonfinite == PMOE_NONFINITE_STOP)
                return pmoe_fail(err, PMOE_ERR_NONFINITE,
                                 "non-finite value (NaN or Inf) in %s%s at step %lld (%s phase, "
                                 "epoch %d): the batch or the weights hold NaN or Inf (if the "
                                 "weights diverged, lower the learning rate); %s%s",
                                 nonfinite[0] == 't' ? "" : "the gradient of ", nonfinite,
                                 (long long)(pos->step + 1),
                                 plan->phase == PMOE_PHASE_ROUTER ? "router" : "main", pos->epoch,
                                 r->last_checkpoint[0] ? "the last good checkpoint is "
                                                       : "no checkpoint was written before it",
                                 r->last_checkpoint);
            pos->step++;
            if (nonfinite) {
                pos->skipped++;
            } else {
                pos->loss_sum += loss * (double)count;
                pos->correct_sum += correct;
            }
            if (r->cb && r->cb->on_step) {
                pmoe_step_report sr = {plan->phase, pos->epoch, plan->epochs, pos->step,
                                       pos->next_batch + 1, batches, loss,
                                       (pos->step - first_step) * plan->batch,
                                       pmoe_now_seconds() - began};
                r->cb->on_step(r->cb->user, &sr);
            }
            pmoe_train_position after = *pos;
            after.next_batch++;
            const int stopping = r->sharded ? r->stop_agreed : r->stop && *r->stop;
            const int64_t every = cfg->train.checkpoint_every;
            if (stopping) {
                *pos = after;
                return stop_at(r, pos, err);
            }
            if (every > 0 && global_step(&after) % every == 0) {
                pmoe_timer_enter(&r->timer, PMOE_T_CHECKPOINT, (uint64_t)global_step(&after));
                s = save_checkpoint(r, &after, err);
                pmoe_timer_stop(&r->timer);
                if (s) return s;
            }
        }
        pmoe_epoch_report er;
        memset(&er, 0, sizeof er);
        er.test_acc = er.router_recall = -1.0;
        er.exchange_bytes = r->model->exchange_bytes; /* the steps' (evaluation's not counted) */
        er.lr = pmoe_lr_at(&schedule, (int64_t)(pos->epoch - 1) * batches);
        if (plan->phase == PMOE_PHASE_MAIN &&
            (pos->epoch == plan->epochs || pos->epoch % cfg->train.eval_every == 0)) {
            eval_stats st = {0};
            pmoe_status s = timed_evaluate(r, &st, err);
            if (s == PMOE_ERR_INTERRUPTED) return stop_at(r, pos, err); /* its epoch redone */
            if (s) return s;
            fill_report_eval(r, &st, &er);
            res->test_acc = er.test_acc;
            res->router_recall = er.router_recall;
        }
        pmoe_status reported = report_epoch(r, plan, pos, &er, epoch_began, err);
        if (reported) return reported;
        /* a signal during the evaluation (sharded: the ranks finish it together) */
        if (stop_requested(r)) return stop_at(r, pos, err);
        for (int i = 0; i < PMOE_T_COUNT; i++) res->phase_seconds[i] += r->timer.seconds[i];
        res->step_seconds += r->step_seconds;
        pmoe_timer_reset(&r->timer);
        r->step_seconds = 0.0;
        r->model->exchange_bytes = 0;
        if (plan->phase == PMOE_PHASE_MAIN) {
            res->train_loss = er.train_loss;
            res->train_acc = er.train_acc;
        }
    }
    return PMOE_OK;
}

static pmoe_status train_phases(run *r, pmoe_train_position *pos, pmoe_train_result *res,
                                pmoe_error *err) {
    const pmoe_train_config *t = &r->cfg->train;
    pmoe_status s = PMOE_OK;
    if (r->info.router_epochs > 0 && pos->phase == PMOE_PHASE_ROUTER) {
        const int64_t size = t->router_size > 0 && t->router_size < r->train->count
                                 ? t->router_size
                                 : r->train->count;
        const phase_plan plan = {PMOE_PHASE_ROUTER, size, t->router_batch, t->router_epochs,
                                 t->router_lr, STREAM_ROUTER_SHUFFLE};
        s = run_phase(r, &plan, pos, res, err);
        if (s) return s;
        const pmoe_train_position main_start = {PMOE_PHASE_MAIN, 1, 0, 0, pos->step, pos->skipped, 0, 0, ""};
        const pmoe_train_position done = *pos;
        *pos = main_start;
        memcpy(pos->run_id, done.run_id, sizeof pos->run_id);
    }
    pos->phase = PMOE_PHASE_MAIN;
    if (r->info.router_epochs > 0) /* frozen */
        r->model->params[r->routing.router_param].trainable = 0;
    res->router_steps = pos->router_steps;
    const phase_plan plan = {PMOE_PHASE_MAIN, r->train->count, t->batch, t->epochs,
                             t->lr, STREAM_SHUFFLE};
    s = run_phase(r, &plan, pos, res, err);
    res->steps = pos->step;
    res->skipped_steps = pos->skipped;
    if (!s && t->epochs == 0) { /* still report the untrained model's accuracy */
        eval_stats st = {0};
        s = evaluate(r, &st, err);
        if (s == PMOE_ERR_INTERRUPTED) return stop_at(r, pos, err);
        res->test_acc = st.accuracy;
        res->router_recall = st.recall;
    }
    if (!s && t->checkpoint_every > 0 && global_step(pos) % t->checkpoint_every != 0)
        s = save_checkpoint(r, pos, err); /* the final state, when the last step left none */
    if (!s && stop_requested(r)) return stop_at(r, pos, err); /* during the last save */
    return s;
}

/* Restores the model and *pos from a checkpoint (every rank reads the file
 * and takes its own experts), once the position passes resume.h's rules. */
static pmoe_status resume_from(run *r, const char *resume, pmoe_train_position *pos,
                               pmoe_error *err) {
    pmoe_st_file file;
    pmoe_status s = pmoe_checkpoint_open(resume, &file, err);
    if (!s) {
        s = pmoe_resume_check_config(&file, r->cfg, err);
        if (!s) s = pmoe_checkpoint_restore(&file, r->model, pos, err);
        if (!s)
            s = pmoe_resume_check(&file, r->cfg, r->train->count, r->routing.routes, pos, err);
        if (!s) snprintf(r->last_checkpoint, sizeof r->last_checkpoint, "%s", file.origin);
        if (!s) adopt_saved_input(r, &file);
        pmoe_safetensors_free(&file);
    }
    return pmoe_comm_agree(r->comm, s, err, NULL, 0);
}

/* The run's identity (a resume keeps its checkpoint's) and its checkpoint
 * folder: a run that saves every N steps takes the folder before its first
 * step, so a second writer or another run's files stop it before anything
 * changes; one that saves only when stopped by a signal takes it then, and
 * fails only when that one name is another's. */
static pmoe_status start_folder(run *r, pmoe_train_position *pos, pmoe_error *err) {
    if (!pos->run_id[0]) pmoe_run_id_new(pos->run_id);
    pmoe_checkpoint_folder_init(&r->folder, r->cfg->train.checkpoint_dir, pos->run_id,
                                r->last_checkpoint[0] ? r->last_checkpoint : NULL);
    pmoe_status s = PMOE_OK;
    if (r->rank == 0 && r->cfg->train.checkpoint_every > 0)
        s = pmoe_checkpoint_folder_claim(&r->folder, 1, err);
    return pmoe_comm_agree(r->comm, s, err, NULL, 0);
}

pmoe_status pmoe_train(const pmoe_config *cfg, const pmoe_train_callbacks *callbacks,
                       const pmoe_train_options *options, pmoe_train_result *result,
                       pmoe_error *err) {
    run r;
    memset(&r, 0, sizeof r);
    r.cfg = cfg;
    r.cb = callbacks;
    r.stop = options ? options->stop : NULL;
    /* A copy: the caller may pass a path that lives in *result. */
    char resume[sizeof result->last_checkpoint] = "";
    if (options && options->resume) snprintf(resume, sizeof resume, "%s", options->resume);
    memset(result, 0, sizeof *result);
    result->test_acc = result->router_recall = -1.0;
    pmoe_train_position pos = {PMOE_PHASE_ROUTER, 1, 0, 0, 0, 0, 0.0, 0, ""};
    r.saved_step = -1;
    pmoe_status s = open_run(&r, err);
    result->info.rank = r.rank;
    result->info.ranks = r.ranks > 0 ? r.ranks : 1;
    if (r.rank != 0) r.cb = NULL; /* rank 0 reports for the job */
    if (!s && resume[0]) s = resume_from(&r, resume, &pos, err);
    if (!s) s = start_folder(&r, &pos, err);
    if (!s) {
        result->info = r.info;
        if (r.cb && r.cb->on_start) r.cb->on_start(r.cb->user, &r.info);
        s = train_phases(&r, &pos, result, err);
    }
    if (!s) s = pmoe_comm_agree(r.comm, r.be->synchronize(r.be, err), err, NULL, 0);
    result->steps = pos.phase == PMOE_PHASE_MAIN ? pos.step : 0;
    result->router_steps = pos.phase == PMOE_PHASE_MAIN ? pos.router_steps : pos.step;
    result->skipped_steps = pos.skipped;
    result->seconds = pmoe_now_seconds() - r.started;
    if (r.be) result->peak_bytes = r.be->mem.peak_bytes;
    snprintf(result->last_checkpoint, sizeof result->last_checkpoint, "%s", r.last_checkpoint);
    pmoe_checkpoint_folder_release(&r.folder);
    close_run(&r);
    return s;
}

pmoe_status pmoe_checkpoint_load_config(const char *path, pmoe_config *cfg, pmoe_error *err) {
    pmoe_st_file file;
    pmoe_status s = pmoe_checkpoint_open(path, &file, err);
    if (s) return s;
    s = pmoe_checkpoint_config(&file, cfg, err);
    if (!s) { /* a resumed run writes beside its checkpoint, never into the folder it came from */
        char folder[sizeof file.origin];
        snprintf(folder, sizeof folder, "%s", file.origin);
        char *slash = strrchr(folder, '/');
        if (!slash) snprintf(folder, sizeof folder, ".");
        else *(slash == folder ? slash + 1 : slash) = '\0';
        s = pmoe_config_set_value(cfg, "train.checkpoint_dir", folder, err);
    }
    pmoe_safetensors_free(&file);
    return s;
}

/* A run whose model holds the weights saved at checkpoint. */
static pmoe_status open_saved(run *r, const pmoe_config *cfg, const char *checkpoint,
                              char *origin, size_t origin_size, int64_t *step, pmoe_error *err) {
    memset(r, 0, sizeof *r);
    r->cfg = cfg;
    pmoe_st_file file;
    memset(&file, 0, sizeof file);
    pmoe_train_position pos;
    pmoe_status s = open_run(r, err);
    if (s) return s;
    s = pmoe_checkpoint_open(checkpoint, &file, err);
    if (!s) s = pmoe_checkpoint_restore(&file, r->model, &pos, err);
    if (!s) {
        adopt_saved_input(r, &file);
        snprintf(origin, origin_size, "%s", file.origin);
        *step = global_step(&pos);
    }
    pmoe_safetensors_free(&file);
    return pmoe_comm_agree(r->comm, s, err, NULL, 0);
}

pmoe_status pmoe_eval(const pmoe_config *cfg, const char *checkpoint, pmoe_eval_result *result,
                      pmoe_error *err) {
    run r;
    memset(result, 0, sizeof *result);
    pmoe_status s = open_saved(&r, cfg, checkpoint, result->checkpoint, sizeof result->checkpoint,
                               &result->step, err);
    if (!s) {
        eval_stats st = {0};
        result->info = r.info;
        s = evaluate(&r, &st, err);
        result->test_acc = st.accuracy;
        result->router_recall = st.recall;
        if (st.recall >= 0.0) {
            result->experts_reported = reported_experts(&r);
            memcpy(result->expert_recall, st.expert_recall, sizeof result->expert_recall);
        }
    }
    close_run(&r);
    return s;
}

pmoe_status pmoe_route(const pmoe_config *cfg, const char *checkpoint, int samples,
                       pmoe_routing *out, pmoe_error *err) {
    run r;
    memset(out, 0, sizeof *out);
    char origin[1024];
    int64_t step = 0;
    pmoe_status s = open_saved(&r, cfg, checkpoint, origin, sizeof origin, &step, err);
    if (!s && !r.routing.routes)
        s = pmoe_fail(err, PMOE_ERR_CONFIG, "%s: model.type = %s has no router to draw", origin,
                      r.info.model);
    if (!s && r.sharded)
        s = pmoe_fail(err, PMOE_ERR_CONFIG,
                      "pmoe route runs in one process (train.comm = single, or no mpirun)");
    if (!s) {
        const pmoe_routing_view *m = &r.routing;
        out->info = r.info;
        out->channels = r.test->channels;
        out->height = r.test->height;
        out->width = r.test->width;
        out->patch = r.input_patch;
        out->grid_rows = r.test->height / r.input_patch;
        out->grid_cols = r.test->width / r.input_patch;
        out->experts = m->experts;
        out->topl = m->topl;
        out->classes = r.load_classes;
        out->samples = (int)(samples < r.test->count ? samples : r.test->count);
        out->test_size = r.test->count;
        const int64_t per = (int64_t)out->channels * out->height * out->width, kl = m->experts * m->topl;
        const int64_t kn = (int64_t)m->experts * m->patch_count;
        s = host_alloc(&out->images, sizeof(float) * (size_t)(out->samples * per), "images", err);
        if (!s) s = host_alloc(&out->labels, sizeof(int32_t) * (size_t)out->samples, "labels", err);
        if (!s) s = host_alloc(&out->decisive, sizeof(int32_t) * (size_t)out->samples, "labels", err);
        if (!s) s = host_alloc(&out->selected, sizeof(int32_t) * (size_t)(out->samples * kl), "picks", err);
        if (!s) s = host_alloc(&out->gate, sizeof(float) * (size_t)(out->samples * kl), "gates", err);
        if (!s) s = host_alloc(&out->by_position, sizeof(int64_t) * (size_t)kn, "counts", err);
        eval_stats st = {0};
        st.keep = out;
        if (!s) s = evaluate(&r, &st, err);
        if (!s) {
            memcpy(out->by_position, r.load_position, sizeof(int64_t) * (size_t)kn);
            out->test_acc = st.accuracy;
            out->router_recall = st.recall;
        }
    }
    close_run(&r);
    if (s) pmoe_routing_free(out);
    return s;
}

void pmoe_routing_free(pmoe_routing *routing) {
    free(routing->images);
    free(routing->labels);
    free(routing->decisive);
    free(routing->selected);
    free(routing->gate);
    free(routing->by_position);
    memset(routing, 0, sizeof *routing);
}
