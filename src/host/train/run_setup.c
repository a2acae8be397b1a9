/* run_setup.c: opening and closing a run (run.h): the communicator and who
 * we are in it, the device this rank takes, the data and the checks that
 * need them, the backend, the model, and the host buffers a run stages its
 * batches, selections and load counts in.
 *
 * Sharded, the ranks agree after the local setup and after the model (see
 * run_open), so a rank that fails stops them all with its message. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "train/input_spec.h"
#include "train/lr_schedule.h"
#include "train/resolve.h"
#include "train/run.h"

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
    int expert_ranks = 1; /* what divides what over the ranks (resolve.h) */
    return r->sharded
               ? pmoe_resolve_ranks(cfg, ds, r->ranks, r->comm->local_size, &expert_ranks, err)
               : PMOE_OK;
}

pmoe_status run_host_alloc(run *r, void *out, size_t bytes, const char *what, pmoe_error *err) {
    return pmoe_backend_host_alloc(r->be, bytes, what, (void **)out, err);
}

static void fill_info(run *r) {
    pmoe_run_info *in = &r->info;
    const pmoe_model *m = r->model;
    snprintf(in->data, sizeof in->data, "%s", r->train->description);
    in->source = r->chosen;
    snprintf(in->backend, sizeof in->backend, "%s", r->be->name);
    snprintf(in->backend_why, sizeof in->backend_why, "%s", r->be->chosen_because);
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
    if (pmoe_model_is_deep(r->cfg->model.type)) { /* the banner's layout line */
        in->expert_ranks = m->expert_ranks;
        in->sync_bn = r->cfg->train.sync_bn;
    }
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
    const int gpus = per_rank ? pmoe_backend_gpu_count() : 0;
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
void run_adopt_saved_input(run *r, const pmoe_st_file *file) {
    pmoe_input_spec_adopt(file, r->train);
    pmoe_input_spec_adopt(file, r->test);
    describe_input(r);
}

/* train.sync_every, or by default a tenth of the epoch's steps; every step
 * when sharded (the ranks agree on each step's verdict before anyone
 * updates). */
int64_t run_sync_interval(const run *r, int64_t batches) {
    const int64_t every = r->cfg->train.sync_every;
    if (r->sharded) return 1;
    if (every > 0) return every < batches ? every : batches > 0 ? batches : 1;
    return batches >= 10 ? (batches + 9) / 10 : 1;
}

int run_ring_capacity(const run *r) {
    const pmoe_train_config *t = &r->cfg->train;
    int64_t most = (r->train->count + t->batch - 1) / t->batch;
    const int64_t router = (r->train->count + t->router_batch - 1) / t->router_batch;
    if (t->mode == PMOE_TRAIN_SEPARATE && router > most) most = router;
    const int64_t every = run_sync_interval(r, most);
    return every > (1 << 20) ? 1 << 20 : (int)every;
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
    /* Staging for a batch: a backend whose memory is the host's is written
     * in place and needs none. */
    s = PMOE_OK;
    if (!r->be->host_memory)
        s = run_host_alloc(r, &r->host_images, (size_t)local * per_sample * sizeof(float),
                           "a batch", err);
    const size_t listed = (size_t)m->param_count + 1;
    if (!s)
        s = run_host_alloc(r, &r->guard_x, listed * sizeof *r->guard_x, "the guard's list", err);
    if (!s)
        s = run_host_alloc(r, &r->guard_n, listed * sizeof *r->guard_n, "the guard's list", err);
    if (!s)
        s = run_host_alloc(r, &r->guard_param, listed * sizeof *r->guard_param, "the guard's list",
                           err);
    if (!s) s = step_ring_open(&r->ring, r->be, run_ring_capacity(r), err);
    if (!s) s = run_host_alloc(r, &r->host_labels, (size_t)B * 4, "labels", err);
    if (!s) s = run_host_alloc(r, &r->host_pair, (size_t)B * 4, "router pairs", err);
    if (!s) s = run_host_alloc(r, &r->host_weight, (size_t)B * 4, "router weights", err);
    if (!s)
        s = run_host_alloc(r, &r->host_selected, (size_t)(local * rv->experts * rv->topl) * 4,
                           "the selections", err);
    if (!s) s = run_host_alloc(r, &r->order, (size_t)most * sizeof(int64_t), "the order", err);
    /* Load by class: by what each picked patch shows where the data says
     * (mosaic items, synthetic patterns) on the model's patch grid, else by
     * the sample's class. */
    r->load_by_patch_class = r->test->patch_class && r->test->decisive_patch_size == r->input_patch;
    r->load_classes = r->load_by_patch_class ? r->test->patch_classes
                      : m->classes == 1      ? 2
                                             : m->classes;
    if (!s)
        s = run_host_alloc(r, &r->load_position,
                           sizeof(int64_t) * (size_t)(rv->experts * rv->patch_count), "expert load",
                           err);
    if (!s)
        s = run_host_alloc(r, &r->load_class,
                           sizeof(int64_t) * (size_t)(rv->experts * r->load_classes), "expert load",
                           err);
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

/* Communicator, data, backend, model and host buffers; undone by run_close.
 * Sharded, the ranks agree after the local setup (before NCCL's collective
 * start) and after the model, so a rank that fails stops them all. */
pmoe_status run_open(run *r, pmoe_error *err) {
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
    if (!s) s = pmoe_backend_set_precision(r->be, (pmoe_precision)cfg->train.precision, err);
    s = pmoe_comm_agree(r->comm, s, err, NULL, 0);
    if (!s)
        s = pmoe_comm_use_device(&r->comm, (pmoe_comm_kind)cfg->train.comm,
                                 pmoe_backend_is_cuda(r->be) ? cuda_index : -1,
                                 pmoe_backend_stream(r->be), err);
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

void run_close(run *r) {
    pmoe_comm *comm = r->comm;
    run_feed_close(r); /* its thread writes the pinned buffers */
    step_ring_close(&r->ring);
    free(r->guard_x);
    free(r->guard_n);
    free(r->guard_param);
    free(r->host_images);
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
