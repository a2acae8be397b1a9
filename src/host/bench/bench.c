/* bench.c: pmoe_bench_run and its table and JSON (see bench.h).
 *
 * Each model family is a bench_target: it builds itself on a fresh backend
 * (so the backend's peak is that model's alone), says what it costs, and
 * runs one train or inference step on the batch it composed at build time.
 * The timing, the memory split, the table and the JSON only see targets.
 * One target type serves both model families (the two-layer pMoE and its
 * CNN; WRN-pMoE and its WRN), differing in how they describe themselves and
 * in the inference step; a second one holds the isolated blocks of the deep
 * bench (bench.h), built from layers.h's list like the models. */
#include "bench/bench.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/backend.h"
#include "data/dataset.h"
#include "core/files.h"
#include "core/rng.h"
#include "model/layers.h"
#include "model/model.h"
#include "model/moe_conv.h"
#include "train/resolve.h"
#include "train/checkpoint.h"
#include "train/report.h"

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The learning rate of the timed steps. The update's arithmetic runs in full,
 * but the weights keep their initial values, so every timed step computes on
 * the same numbers: with the configured rate, the one repeated batch is
 * learnt by heart within a few dozen steps (at batch 1 within a few), and
 * the vanishing gradients turn subnormal, which costs x86 up to 100 times
 * per operation: a cost of the benchmark, not of training. */
#define BENCH_LR 0.0f

/* ---- targets ---- */

typedef struct bench_target bench_target;
struct bench_target {
    void *state;
    /* Fills out's shape, params, FLOPs and memory (timings are the caller's). */
    void (*describe)(const bench_target *t, pmoe_bench_model *out);
    /* One training step; *loss is the batch's loss before the update. */
    pmoe_status (*train_step)(bench_target *t, double *loss, pmoe_error *err);
    /* Attaches a phase timer to the model's steps (NULL detaches it). */
    void (*set_timer)(bench_target *t, pmoe_phase_timer *timer);
    pmoe_status (*infer_step)(bench_target *t, pmoe_error *err);
    /* Writes dir/<model>.init.safetensors and dir/<model>.batch.safetensors. */
    pmoe_status (*export_peer)(const bench_target *t, const char *dir, pmoe_error *err);
    void (*destroy)(bench_target *t);
};

/* A model of either family (two-layer or deep) on its batch. */
typedef struct model_target {
    const pmoe_config *cfg;
    pmoe_backend *be;
    pmoe_model *model;
    int64_t batch;
    int channels, height, width;
    float *host_images;
    int32_t *host_labels;
    float *host_labels_float; /* for the peer export */
} model_target;

static void model_destroy(bench_target *t) {
    model_target *s = t->state;
    if (!s) return;
    pmoe_model_free(s->model);
    pmoe_backend_destroy(s->be);
    free(s->host_images);
    free(s->host_labels);
    free(s->host_labels_float);
    free(s);
    t->state = NULL;
}

/* Values, gradients and optimizer state of every parameter. */
static int64_t parameter_bytes(const pmoe_model *m) {
    int64_t bytes = 0;
    for (int i = 0; i < m->param_count; i++) {
        const pmoe_param *p = &m->params[i];
        if (p->value.data) bytes += pmoe_tensor_numel(&p->value) * (int64_t)sizeof(float);
        if (p->grad.data) bytes += pmoe_tensor_numel(&p->grad) * (int64_t)sizeof(float);
        if (p->velocity.data) bytes += pmoe_tensor_numel(&p->velocity) * (int64_t)sizeof(float);
    }
    return bytes;
}

/* The split both model kinds share, given their activation and backward
 * bytes: parameters, the backend's peak, the workspace as the rest of it,
 * and the host's batch (images and labels). */
static void set_memory(const model_target *s, int64_t act, int64_t backward,
                       pmoe_bench_memory *mem) {
    const pmoe_model *m = s->model;
    const int64_t B = m->image.batch, F = (int64_t)sizeof(float), IDX = (int64_t)sizeof(int32_t);
    const int64_t image = (int64_t)m->image.channels * m->image.height * m->image.width;
    mem->parameter_bytes = parameter_bytes(m);
    mem->activation_bytes = act;
    mem->backward_bytes = backward;
    mem->device_peak_bytes = s->be->mem.peak_bytes;
    mem->workspace_bytes = mem->device_peak_bytes - mem->parameter_bytes - act;
    mem->host_bytes = B * image * F + B * IDX;
    mem->peak_bytes = mem->device_peak_bytes + mem->host_bytes;
}

/* What two_layer_create allocates, split as bench.h says (mirroring its
 * list). Workspace is what else the backend held at its peak: the backward
 * buffers and any op's transient scratch; the test holds the backward
 * buffers to at most that, and the CNN's (which has no scratch) to exactly. */
static void two_layer_memory(const model_target *s, pmoe_bench_memory *mem) {
    const pmoe_model *m = s->model;
    const int64_t B = m->image.batch, n = m->patch_count, d = m->patch_dim, k = m->experts;
    const int64_t l = m->topl, h = m->hidden, c = m->classes, rows = B * l, F = 4, IDX = 4;
    const int64_t image = (int64_t)m->image.channels * m->image.height * m->image.width;
    int64_t act = B * image * F + B * n * d * F + k * rows * h * F + B * c * F + B * IDX;
    int64_t backward = k * rows * h * F + B * c * F + 2 * F;
    if (m->has_router) {
        act += B * n * k * F + B * k * l * F + B * k * l * IDX;
        if (m->expert_in) act += k * rows * d * F; /* not with the fused gather */
        backward += B * n * k * F + B * k * l * F + B * IDX + B * F;
    }
    set_memory(s, act, backward, mem);
}

/* A deep model's split: activations are the layer list's outputs (the
 * images included), the labels and the loss's statistics; backward buffers
 * are their gradients. Workspace holds those gradients and the rest of the
 * backend's peak: batch norm's saved statistics, the pMoE layer's own
 * buffers (patches, scores, gathered rows and their gradients) and the
 * convolutions' transient im2col scratch. */
static void deep_memory(const model_target *s, pmoe_bench_memory *mem) {
    const pmoe_model *m = s->model;
    const pmoe_deep_model *d = m->deep;
    const int64_t B = m->image.batch, F = (int64_t)sizeof(float), IDX = (int64_t)sizeof(int32_t);
    int64_t act = B * IDX + 2 * F, backward = 0;
    for (int i = 0; i < d->act_count; i++) {
        const int64_t bytes = B * deep_act_size(&d->acts[i]) * F;
        act += bytes;
        if (d->acts[i].grad) backward += bytes;
    }
    set_memory(s, act, backward, mem);
}

static void set_per_sample(pmoe_bench_model *out) {
    for (int k = 0; k < PMOE_FLOPS_KINDS; k++) {
        out->train_flops[k] = pmoe_flops_train_per_sample(&out->flops, (pmoe_flop_kind)k);
        out->infer_flops[k] = pmoe_flops_infer_per_sample(&out->flops, (pmoe_flop_kind)k);
    }
}

static void two_layer_describe(const bench_target *t, pmoe_bench_model *out) {
    const model_target *s = t->state;
    const pmoe_model *m = s->model;
    snprintf(out->model, sizeof out->model, "%s", m->has_router ? "pmoe" : "cnn");
    snprintf(out->gate, sizeof out->gate, "%s", pmoe_gate_mode_name(m->gate_mode));
    out->patches = m->patch_count;
    out->dim = m->patch_dim;
    out->experts = m->experts;
    out->topl = m->topl;
    out->hidden = m->hidden * m->experts;
    out->classes = m->classes;
    out->params = pmoe_model_param_count(m);
    pmoe_two_layer_cost_shape shape = pmoe_two_layer_cost_shape_of(m, &s->cfg->train);
    pmoe_flops_two_layer(&shape, s->batch, &out->flops);
    out->learn_router = shape.learn_router;
    out->train_output = shape.train_output;
    set_per_sample(out);
    two_layer_memory(s, &out->mem);
}

static const char *moe_impl_name(int impl) {
    return impl == PMOE_MOE_DENSE_MASKED ? "dense_masked" : "sparse";
}

static void deep_describe(const bench_target *t, pmoe_bench_model *out) {
    const model_target *s = t->state;
    const pmoe_model *m = s->model;
    const pmoe_deep_model *d = m->deep;
    snprintf(out->model, sizeof out->model, "%s", pmoe_model_type_name(s->cfg->model.type));
    snprintf(out->gate, sizeof out->gate, "%s", pmoe_gate_mode_name(m->gate_mode));
    out->width = s->cfg->model.width;
    out->patches = m->patch_count;
    out->dim = m->patch_dim;
    out->experts = m->experts;
    out->topl = m->topl;
    out->hidden = 0;
    out->classes = m->classes;
    out->params = pmoe_model_param_count(m);
    if (d->moe >= 0) {
        const moe_conv_layer *L = d->layers[d->moe].moe;
        snprintf(out->moe_impl, sizeof out->moe_impl, "%s", moe_impl_name(L->impl));
        out->learn_router = pmoe_model_updates(m, L->first_param);
    }
    out->train_output = 1; /* the head's fully connected layer */
    pmoe_flops_deep(m, &s->cfg->train, s->batch, &out->flops);
    set_per_sample(out);
    deep_memory(s, &out->mem);
}

static pmoe_status model_train_step(bench_target *t, double *loss, pmoe_error *err) {
    model_target *s = t->state;
    const pmoe_train_config *tc = &s->cfg->train;
    int64_t correct;
    pmoe_model_forward(s->model, s->batch);
    pmoe_status st = pmoe_model_loss(s->model, 1, loss, &correct, err);
    if (st) return st;
    pmoe_timer_enter(s->model->timer, PMOE_T_OPTIMIZER, 0);
    pmoe_model_sgd(s->model, BENCH_LR, (float)tc->momentum, (float)tc->weight_decay);
    st = s->be->synchronize(s->be, err);
    pmoe_timer_stop(s->model->timer);
    return st;
}

static void wait_for_backend(void *ctx) {
    pmoe_backend *be = ctx;
    be->synchronize(be, NULL); /* a failure shows at the step's own synchronize */
}

static void model_set_timer(bench_target *t, pmoe_phase_timer *timer) {
    model_target *s = t->state;
    if (timer && s->be->clock) { /* the device's events: no wait at each phase */
        timer->clock = s->be->clock;
        pmoe_timer_reset(timer);
    } else if (timer && s->be->asynchronous) {
        timer->wait = wait_for_backend;
        timer->wait_ctx = s->be;
    }
    s->model->timer = timer;
}

static pmoe_status two_layer_infer_step(bench_target *t, pmoe_error *err) {
    model_target *s = t->state;
    pmoe_model_forward(s->model, s->batch);
    return s->be->synchronize(s->be, err);
}

/* As an evaluation pass runs it: running statistics, and the loss (which
 * reads the loss and the correct count back: the synchronisation). */
static pmoe_status deep_infer_step(bench_target *t, pmoe_error *err) {
    model_target *s = t->state;
    double loss;
    int64_t correct;
    s->model->training = 0;
    pmoe_model_forward(s->model, s->batch);
    pmoe_status st = pmoe_model_loss(s->model, 0, &loss, &correct, err);
    s->model->training = 1;
    return st;
}

static pmoe_status model_export_peer(const bench_target *t, const char *dir, pmoe_error *err) {
    const model_target *s = t->state;
    const char *name = s->model->deep ? pmoe_model_type_name(s->cfg->model.type)
                       : s->model->has_router ? "pmoe" : "cnn";
    char path[1200];
    pmoe_status st = pmoe_make_dir(dir, "--peer folder", err);
    if (st) return st;
    snprintf(path, sizeof path, "%s/%s.init.safetensors", dir, name);
    pmoe_train_position pos;
    memset(&pos, 0, sizeof pos);
    pos.phase = PMOE_PHASE_MAIN;
    pos.epoch = 1;
    st = pmoe_checkpoint_save(path, s->model, s->cfg, &pos, err);
    if (st) return st;
    snprintf(path, sizeof path, "%s/%s.batch.safetensors", dir, name);
    const pmoe_st_entry entries[2] = {
        {"images", 4, {s->batch, s->channels, s->height, s->width}, s->host_images},
        {"labels", 1, {s->batch}, s->host_labels_float},
    };
    const pmoe_st_meta meta[1] = {{"format", "pmoe-bench-batch-1"}};
    return pmoe_safetensors_write(path, entries, 2, meta, 1, err);
}

/* Builds cfg's model (either family) on a fresh backend and composes the
 * first `batch` training samples (wrapping around a smaller set) into it. */
static pmoe_status model_open(const pmoe_config *cfg, const pmoe_dataset *ds, int patch,
                              int64_t batch, bench_target *t, pmoe_error *err) {
    memset(t, 0, sizeof *t);
    model_target *s = calloc(1, sizeof *s);
    if (!s) return pmoe_fail(err, PMOE_ERR_OOM, "bench: cannot allocate a target");
    const int deep = pmoe_model_is_deep(cfg->model.type);
    t->state = s;
    t->describe = deep ? deep_describe : two_layer_describe;
    t->train_step = model_train_step;
    t->set_timer = model_set_timer;
    t->infer_step = deep ? deep_infer_step : two_layer_infer_step;
    t->export_peer = model_export_peer;
    t->destroy = model_destroy;
    s->cfg = cfg;
    s->batch = batch;
    s->channels = ds->channels;
    s->height = ds->height;
    s->width = ds->width;
    const int64_t per_sample = (int64_t)ds->channels * ds->height * ds->width;
    s->host_images = malloc((size_t)(batch * per_sample) * sizeof(float));
    s->host_labels = malloc((size_t)batch * sizeof(int32_t));
    s->host_labels_float = malloc((size_t)batch * sizeof(float));
    if (!s->host_images || !s->host_labels || !s->host_labels_float)
        return pmoe_fail(err, PMOE_ERR_OOM, "bench: out of host memory for a batch of %lld",
                         (long long)batch);
    pmoe_status st = pmoe_backend_create(cfg->train.device, cfg->train.threads, &s->be, err);
    if (!st) st = pmoe_backend_set_cpu_kernels(s->be, (pmoe_cpu_kernels)cfg->train.cpu_kernels, err);
    if (!st)
        st = pmoe_model_create(s->be, cfg, ds->channels, ds->height, ds->width, patch,
                               ds->classes, batch, &s->model, err);
    if (st) return st;
    for (int64_t i = 0; i < batch; i++) {
        const int64_t index = i % ds->count;
        ds->compose(ds, index, s->host_images + i * per_sample);
        s->host_labels[i] = ds->labels[index];
        s->host_labels_float[i] = (float)ds->labels[index];
    }
    st = s->be->copy_in(s->be, s->model->images, s->host_images,
                        (size_t)(batch * per_sample) * sizeof(float), err);
    if (!st)
        st = s->be->copy_in(s->be, s->model->labels, s->host_labels,
                            (size_t)batch * sizeof(int32_t), err);
    return st;
}

/* An isolated block of the deep bench (bench.h): a network of layers.h
 * holding only the WRN layers the pMoE layer replaces, or only the pMoE
 * layer, on random inputs, with a fixed random gradient at its output. A
 * train step is its forward and backward (no update: the models' update
 * is timed in their own steps), an inference step its evaluation forward. */
typedef struct block_target {
    pmoe_backend *be;
    pmoe_model *model;
    int64_t batch;
} block_target;

static void block_destroy(bench_target *t) {
    block_target *s = t->state;
    if (!s) return;
    if (s->model) {
        deep_release(s->model);
        free(s->model->deep);
        free(s->model);
    }
    pmoe_backend_destroy(s->be);
    free(s);
    t->state = NULL;
}

static pmoe_status block_train_step(bench_target *t, double *loss, pmoe_error *err) {
    block_target *s = t->state;
    *loss = 0.0;
    s->model->training = 1;
    deep_forward(s->model, s->batch);
    deep_backward(s->model, s->batch);
    return s->be->synchronize(s->be, err);
}

static pmoe_status block_infer_step(bench_target *t, pmoe_error *err) {
    block_target *s = t->state;
    s->model->training = 0;
    deep_forward(s->model, s->batch);
    s->model->training = 1;
    return s->be->synchronize(s->be, err);
}

static void block_set_timer(bench_target *t, pmoe_phase_timer *timer) {
    block_target *s = t->state;
    s->model->timer = timer;
}

/* Fills `count` floats on the backend with N(0, 1) values of stream `stream`. */
static pmoe_status fill_normal(pmoe_backend *be, float *dst, int64_t count, uint64_t seed,
                               uint64_t stream, pmoe_error *err) {
    float *host = malloc((size_t)count * sizeof(float));
    if (!host)
        return pmoe_fail(err, PMOE_ERR_OOM, "bench: cannot allocate %lld bytes of inputs",
                         (long long)count * 4);
    const pmoe_rng r = pmoe_rng_make(seed, stream);
    for (int64_t i = 0; i < count; i++) host[i] = (float)pmoe_rng_normal_at(&r, (uint64_t)i);
    pmoe_status st = be->copy_in(be, dst, host, (size_t)count * sizeof(float), err);
    free(host);
    return st;
}

#define BLOCK_STREAM 0x626c6f636bULL /* "block": the inputs' random streams */

/* Builds block `which` (PMOE_BENCH_BLOCK_*) for a C x H x W map routed in
 * patch x patch patches. The WRN block mirrors group 3 of wrn.c after its
 * first convolution, with the same layer names, so that its FLOP rows are
 * the WRN's; the pMoE blocks are the layer as wrn.c adds it, with
 * model.moe_impl set to the block's form. */
static pmoe_status block_open(const pmoe_config *cfg, int which, int C, int H, int W, int patch,
                              int64_t batch, bench_target *t, pmoe_error *err) {
    memset(t, 0, sizeof *t);
    block_target *s = calloc(1, sizeof *s);
    if (!s) return pmoe_fail(err, PMOE_ERR_OOM, "bench: cannot allocate a target");
    t->state = s;
    t->train_step = block_train_step;
    t->infer_step = block_infer_step;
    t->set_timer = block_set_timer;
    t->destroy = block_destroy;
    s->batch = batch;
    pmoe_status st = pmoe_backend_create(cfg->train.device, cfg->train.threads, &s->be, err);
    if (!st) st = pmoe_backend_set_cpu_kernels(s->be, (pmoe_cpu_kernels)cfg->train.cpu_kernels, err);
    if (st) return st;
    pmoe_model *m = calloc(1, sizeof *m);
    pmoe_deep_model *d = calloc(1, sizeof *d);
    if (!m || !d) {
        free(m);
        free(d);
        return pmoe_fail(err, PMOE_ERR_OOM, "bench: cannot allocate a block");
    }
    s->model = m;
    m->be = s->be;
    m->deep = d;
    m->params = d->params;
    m->training = 1;
    m->ranks = 1;
    m->local_experts = 1;
    m->max_batch = batch;
    m->image = (pmoe_patch_shape){batch, C, H, W, patch};
    m->experts = m->topl = m->patch_count = 1;
    m->gate_mode = PMOE_GATE_ONES;
    d->seed = cfg->train.seed;
    d->moe = -1;
    int x = -1, shortcut_in = -1, out = -1;
    st = deep_add_activation(m, C, H, W, 0, &x, err);
    if (!st && which == PMOE_BENCH_BLOCK_WRN) {
        int bn, act, conv, shortcut;
        st = deep_add_activation(m, C / 2, 2 * H, 2 * W, 0, &shortcut_in, err);
        if (!st) st = deep_batchnorm(m, "group3.bn2", x, &bn, err);
        if (!st) st = deep_relu(m, "group3.relu2", bn, &act, err);
        if (!st) st = deep_conv(m, "group3.conv2", act, C, 3, 1, 0, &conv, err);
        if (!st) st = deep_conv(m, "group3.shortcut", shortcut_in, C, 1, 2, 0, &shortcut, err);
        if (!st) st = deep_add(m, "group3.add", conv, shortcut, &out, err);
    } else if (!st) {
        pmoe_config one = *cfg;
        one.model.moe_impl = which == PMOE_BENCH_BLOCK_DENSE ? PMOE_MOE_DENSE_MASKED : PMOE_MOE_SPARSE;
        moe_conv_layer *moe = NULL;
        st = moe_conv_create(m, &one, C, H, W, patch, &moe, err);
        if (!st) st = deep_moe(m, "group3.moe", moe, x, &out, err);
        if (!st) m->gate_mode = moe->gate_mode;
    }
    if (st) return st;
    d->logits = out; /* deep_backward keeps its gradient: the fixed output gradient */
    st = fill_normal(s->be, d->acts[x].value, batch * deep_act_size(&d->acts[x]),
                     cfg->train.seed, BLOCK_STREAM, err);
    if (!st && shortcut_in >= 0)
        st = fill_normal(s->be, d->acts[shortcut_in].value,
                         batch * deep_act_size(&d->acts[shortcut_in]), cfg->train.seed,
                         BLOCK_STREAM + 1, err);
    if (!st)
        st = fill_normal(s->be, d->acts[out].grad, batch * deep_act_size(&d->acts[out]),
                         cfg->train.seed, BLOCK_STREAM + 2, err);
    return st;
}

/* The block's FLOPs per sample: its rows (no loss, no update). */
static void block_flops(const bench_target *t, const pmoe_config *cfg, pmoe_bench_block *out) {
    const block_target *s = t->state;
    pmoe_flop_report *r = malloc(sizeof *r);
    if (!r) return;
    pmoe_flops_deep(s->model, &cfg->train, s->batch, r);
    for (int k = 0; k < PMOE_FLOPS_KINDS; k++) {
        out->train_flops[k] = out->infer_flops[k] = 0.0;
        for (int i = 0; i < r->layer_count; i++) {
            if (r->layers[i].is_loss) continue;
            out->train_flops[k] += pmoe_layer_flops_train(&r->layers[i], (pmoe_flop_kind)k);
            out->infer_flops[k] += pmoe_layer_flops_infer(&r->layers[i], (pmoe_flop_kind)k);
        }
    }
    free(r);
}

/* ---- timing ---- */

static int compare_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Runs warmup + repeats steps, timing each of the last `repeats` alone. */
static pmoe_status time_steps(bench_target *t, int train, int warmup, int repeats,
                              pmoe_timing *out, double *first_loss, double *last_loss,
                              pmoe_error *err) {
    double *ms = malloc((size_t)repeats * sizeof(double));
    if (!ms) return pmoe_fail(err, PMOE_ERR_OOM, "bench: cannot allocate %d timings", repeats);
    pmoe_status st = PMOE_OK;
    for (int i = 0; !st && i < warmup + repeats; i++) {
        double loss = 0.0;
        const double began = now_seconds();
        st = train ? t->train_step(t, &loss, err) : t->infer_step(t, err);
        const double took = now_seconds() - began;
        if (i >= warmup) ms[i - warmup] = 1e3 * took;
        if (train && i == 0 && first_loss) *first_loss = loss;
        if (train && last_loss) *last_loss = loss;
    }
    if (!st) {
        qsort(ms, (size_t)repeats, sizeof *ms, compare_double);
        out->min_ms = ms[0];
        out->max_ms = ms[repeats - 1];
        out->median_ms = repeats % 2 ? ms[repeats / 2] : 0.5 * (ms[repeats / 2 - 1] + ms[repeats / 2]);
    }
    free(ms);
    return st;
}

static pmoe_status bench_target_measure(bench_target *t, const pmoe_config *cfg,
                                        const pmoe_bench_options *options, pmoe_bench_model *out,
                                        pmoe_error *err) {
    pmoe_status st = PMOE_OK;
    if (options && options->peer_dir) st = t->export_peer(t, options->peer_dir, err);
    if (!st)
        st = time_steps(t, 1, cfg->bench.warmup, cfg->bench.repeats, &out->train,
                        &out->first_loss, &out->last_loss, err);
    if (!st) st = time_steps(t, 0, cfg->bench.warmup, cfg->bench.repeats, &out->infer, NULL, NULL, err);
    if (!st) t->describe(t, out); /* before the profiled pass: the peak is the timed steps' */
    if (!st) { /* where a train step's time goes */
        pmoe_phase_timer timer;
        memset(&timer, 0, sizeof timer); /* no wait hook unless set_timer adds one */
        pmoe_timer_reset(&timer);
        t->set_timer(t, &timer);
        double loss;
        for (int i = 0; !st && i < cfg->bench.repeats; i++) st = t->train_step(t, &loss, err);
        t->set_timer(t, NULL);
        for (int i = 0; i < PMOE_T_COUNT; i++)
            out->phase_ms[i] = 1e3 * timer.seconds[i] / (double)cfg->bench.repeats;
    }
    return st;
}

/* ---- the machine ---- */

static void cpu_model_name(char *out, size_t size) {
    snprintf(out, size, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) != 0) continue;
        const char *v = strchr(line, ':');
        if (!v) break;
        v++;
        while (*v == ' ' || *v == '\t') v++;
        snprintf(out, size, "%s", v);
        out[strcspn(out, "\n")] = '\0';
        break;
    }
    fclose(f);
}

/* CPU time spent by the whole machine (from /proc/stat) and by this
 * process, in seconds, so a run can tell how much of the machine other work
 * took meanwhile. busy < 0 where /proc/stat cannot be read. */
typedef struct cpu_clock {
    double wall, busy, self;
} cpu_clock;

static cpu_clock read_cpu_clock(void) {
    cpu_clock c = {now_seconds(), -1.0, 0.0};
    FILE *f = fopen("/proc/stat", "r");
    if (f) {
        unsigned long long v[8] = {0};
        if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                   &v[4], &v[5], &v[6], &v[7]) == 8) /* user nice system idle iowait irq softirq steal */
            c.busy = (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / 100.0; /* USER_HZ */
        fclose(f);
    }
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    c.self = (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
    return c;
}

/* The share of all cores that other processes kept busy between a and b. */
static double others_share(cpu_clock a, cpu_clock b, int cores) {
    if (a.busy < 0 || b.busy < 0 || b.wall <= a.wall) return -1.0;
    const double others = (b.busy - a.busy) - (b.self - a.self);
    const double share = others / ((b.wall - a.wall) * cores);
    return share < 0 ? 0.0 : share > 1 ? 1.0 : share;
}

/* The 1-minute load average, or -1. */
static double load_average(void) {
    double v = -1.0;
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%lf", &v) != 1) v = -1.0;
        fclose(f);
    }
    return v;
}

pmoe_status pmoe_bench_peak_gflops(const pmoe_config *cfg, int size, double *gflops,
                                   pmoe_error *err) {
    pmoe_backend *be = NULL;
    pmoe_status st = pmoe_backend_create(cfg->train.device, cfg->train.threads, &be, err);
    if (st) return st;
    const int64_t count = (int64_t)size * size;
    float *a = NULL, *b = NULL, *c = NULL;
    st = be->alloc(be, (size_t)count * sizeof(float), (void **)&a, err);
    if (!st) st = be->alloc(be, (size_t)count * sizeof(float), (void **)&b, err);
    if (!st) st = be->alloc(be, (size_t)count * sizeof(float), (void **)&c, err);
    const int on_cpu = strcmp(be->name, "cpu") == 0;
    double best = INFINITY;
    if (!st) {
        be->fill(be, a, 0.5f, count);
        be->fill(be, b, 0.25f, count);
        /* On the CPU the peak is OpenBLAS's own threaded SGEMM with the run's
         * thread count (the engine's GEMMs run single-threaded OpenBLAS in
         * fixed blocks; see cpu_backend.c); elsewhere, the backend's GEMM. */
        if (on_cpu) openblas_set_num_threads(omp_get_max_threads());
        for (int rep = 0; !st && rep < 4; rep++) {
            const double began = now_seconds();
            if (on_cpu)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, size, size, size, 1.0f, a,
                            size, b, size, 0.0f, c, size);
            else
                be->ops->gemm(be, 0, 0, size, size, size, 1.0f, a, size, 0, b, size, 0, 0.0f, c,
                              size, 0, 1);
            st = be->synchronize(be, err);
            const double took = now_seconds() - began;
            if (rep > 0 && took < best) best = took; /* rep 0 warms up */
        }
        if (on_cpu) openblas_set_num_threads(1);
    }
    be->release(be, a, (size_t)count * sizeof(float));
    be->release(be, b, (size_t)count * sizeof(float));
    be->release(be, c, (size_t)count * sizeof(float));
    pmoe_backend_destroy(be);
    if (!st) *gflops = 2.0 * (double)size * size * size / best / 1e9;
    return st;
}

/* ---- the run ---- */

/* The single-expert model a pMoE replaces (bench.h): the CNN of eq. 5 for
 * the two-layer pMoE (the same data and total hidden m; k = 1, l = n, no
 * router); the WRN for WRN-pMoE (model.type = wrn, all else the same: the
 * pMoE keys mean nothing to it); a WRN itself for a WRN. */
static void baseline_config(const pmoe_config *cfg, pmoe_config *base) {
    *base = *cfg;
    base->train.mode = PMOE_TRAIN_JOINT; /* a baseline has no router phase */
    if (pmoe_model_is_deep(cfg->model.type)) base->model.type = PMOE_MODEL_WRN;
    else base->model.type = PMOE_MODEL_CNN;
}

/* Measures cfg's model; for a model with a pMoE layer also writes the map
 * that layer routes to map[0..2] (C, H, W), else zeros. */
static pmoe_status measure_model(const pmoe_config *cfg, const pmoe_dataset *ds, int patch,
                                 const pmoe_bench_options *options, pmoe_bench_model *out,
                                 int map[3], pmoe_error *err) {
    bench_target t;
    map[0] = map[1] = map[2] = 0;
    pmoe_status st = model_open(cfg, ds, patch, cfg->train.batch, &t, err);
    if (!st) st = bench_target_measure(&t, cfg, options, out, err);
    const model_target *s = t.state;
    if (!st && s->model->deep && s->model->deep->moe >= 0) {
        const moe_conv_layer *L = s->model->deep->layers[s->model->deep->moe].moe;
        map[0] = L->channels;
        map[1] = L->height;
        map[2] = L->width;
    }
    if (t.destroy) t.destroy(&t);
    return st;
}

static const char *const BLOCK_NAMES[PMOE_BENCH_BLOCKS] = {"wrn_block", "pmoe_sparse",
                                                           "pmoe_dense_masked"};

/* Times one isolated block (bench.h) and counts its FLOPs. */
static pmoe_status measure_block(const pmoe_config *cfg, int which, const pmoe_bench_result *r,
                                 pmoe_bench_block *out, pmoe_error *err) {
    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "%s", BLOCK_NAMES[which]);
    bench_target t;
    pmoe_status st = block_open(cfg, which, r->map_channels, r->map_height, r->map_width,
                                r->patch, cfg->train.batch, &t, err);
    if (!st)
        st = time_steps(&t, 1, cfg->bench.warmup, cfg->bench.repeats, &out->train, NULL, NULL, err);
    if (!st)
        st = time_steps(&t, 0, cfg->bench.warmup, cfg->bench.repeats, &out->infer, NULL, NULL, err);
    if (!st) block_flops(&t, cfg, out);
    if (t.destroy) t.destroy(&t);
    return st;
}

pmoe_status pmoe_bench_run(const pmoe_config *cfg, const pmoe_bench_options *options,
                           pmoe_bench_result *out, pmoe_error *err) {
    memset(out, 0, sizeof *out);
    out->sgemm_gflops = -1.0;
    out->load_before = load_average();
    const cpu_clock began = read_cpu_clock();
    pmoe_status st = pmoe_config_check(cfg, err);
    if (st) return st;
    if (cfg->model.type == PMOE_MODEL_CNN)
        return pmoe_fail(err, PMOE_ERR_CONFIG,
                         "config: model.type = %s: pmoe bench compares a pMoE (model.type = "
                         "pmoe) with its CNN baseline, or a WRN-pMoE (wrn_pmoe) with its WRN",
                         pmoe_model_type_name(cfg->model.type));
    pmoe_config base;
    baseline_config(cfg, &base);

    pmoe_dataset *train = NULL, *test = NULL;
    pmoe_data_source chosen = cfg->data.source;
    int patch = 0;
    st = pmoe_data_open(&cfg->data, &train, &test, &chosen, err);
    if (!st) st = pmoe_resolve_patch(cfg, train, &patch, err);
    if (!st) {
        snprintf(out->data, sizeof out->data, "%s", train->description);
        out->channels = train->channels;
        out->height = train->height;
        out->width = train->width;
        out->patch = patch;
    }
    out->batch = cfg->train.batch;
    out->warmup = cfg->bench.warmup;
    out->repeats = cfg->bench.repeats;
    snprintf(out->mode, sizeof out->mode, "%s", pmoe_train_mode_name(cfg->train.mode));
    out->lr = BENCH_LR;
    out->momentum = cfg->train.momentum;
    out->weight_decay = cfg->train.weight_decay;
    out->sgemm_size = cfg->bench.sgemm_size;
    if (!st && options && options->sgemm_gflops >= 0.0) out->sgemm_gflops = options->sgemm_gflops;
    else if (!st && cfg->bench.sgemm_size > 0)
        st = pmoe_bench_peak_gflops(cfg, cfg->bench.sgemm_size, &out->sgemm_gflops, err);
    out->deep = pmoe_model_is_deep(cfg->model.type);
    int map[3] = {0, 0, 0}, unused[3];
    if (!st) st = measure_model(cfg, train, patch, options, &out->pmoe, map, err);
    if (!st) st = measure_model(&base, train, patch, options, &out->baseline, unused, err);
    pmoe_dataset_free(train);
    pmoe_dataset_free(test);
    if (st) return st;
    if (map[0] > 0) { /* WRN-pMoE: the pMoE layer alone against what it replaces */
        out->map_channels = map[0];
        out->map_height = map[1];
        out->map_width = map[2];
        for (int i = 0; !st && i < PMOE_BENCH_BLOCKS; i++)
            st = measure_block(cfg, i, out, &out->blocks[i], err);
        if (st) return st;
        out->block_count = PMOE_BENCH_BLOCKS;
    }

    /* The backend that ran the models, and where. */
    pmoe_backend *be = NULL;
    st = pmoe_backend_create(cfg->train.device, cfg->train.threads, &be, err);
    if (!st) st = pmoe_backend_set_cpu_kernels(be, (pmoe_cpu_kernels)cfg->train.cpu_kernels, err);
    if (st) return st;
    snprintf(out->backend, sizeof out->backend, "%s", be->name);
    out->threads = omp_get_max_threads();
    pmoe_backend_destroy(be);
    out->cores = omp_get_num_procs();
    out->load_after = load_average();
    out->others_cpu_share = others_share(began, read_cpu_clock(), out->cores);
    cpu_model_name(out->cpu, sizeof out->cpu);
    snprintf(out->blas, sizeof out->blas, "%s", openblas_get_config());
    const time_t t = time(NULL);
    struct tm utc;
    gmtime_r(&t, &utc);
    strftime(out->date, sizeof out->date, "%Y-%m-%dT%H:%M:%SZ", &utc);
    return PMOE_OK;
}

/* ---- reporting ---- */

double pmoe_bench_train_gflops(const pmoe_bench_result *r, const pmoe_bench_model *m) {
    return m->train_flops[PMOE_FLOPS_EXECUTED] * (double)r->batch / (m->train.median_ms * 1e-3) / 1e9;
}

double pmoe_bench_infer_gflops(const pmoe_bench_result *r, const pmoe_bench_model *m) {
    return m->infer_flops[PMOE_FLOPS_EXECUTED] * (double)r->batch / (m->infer.median_ms * 1e-3) / 1e9;
}

static void print_row(FILE *out, const pmoe_bench_result *r, const pmoe_bench_model *m) {
    const double train_gf = pmoe_bench_train_gflops(r, m);
    fprintf(out, "%-8s %3d %4d  %8.3f %8.3f  %8.3f %8.3f  %7.2f  %7.3f [%.3f-%.3f]  %7.3f [%.3f-%.3f]  %9.0f %7.2f",
            m->model, m->experts, m->topl, m->train_flops[PMOE_FLOPS_USEFUL] / 1e6,
            m->train_flops[PMOE_FLOPS_EXECUTED] / 1e6, m->infer_flops[PMOE_FLOPS_USEFUL] / 1e6,
            m->infer_flops[PMOE_FLOPS_EXECUTED] / 1e6, (double)m->mem.peak_bytes / 1048576.0,
            m->train.median_ms, m->train.min_ms, m->train.max_ms, m->infer.median_ms,
            m->infer.min_ms, m->infer.max_ms, (double)r->batch / (m->train.median_ms * 1e-3),
            train_gf);
    if (r->sgemm_gflops > 0) fprintf(out, " %6.1f%%", 100.0 * train_gf / r->sgemm_gflops);
    fprintf(out, "\n");
}

/* The pMoE layer's share of a deep train step: its phases (moe_conv.c
 * enters them; every other layer is layers_forward / layers_backward). */
static double moe_layer_phase_ms(const pmoe_bench_model *m) {
    static const pmoe_phase_id phases[] = {PMOE_T_PATCH,       PMOE_T_GATE,        PMOE_T_DISPATCH,
                                           PMOE_T_EXPERTS,     PMOE_T_COMBINE,     PMOE_T_COMBINE_BWD,
                                           PMOE_T_EXPERTS_BWD, PMOE_T_GATE_BWD};
    double ms = 0.0;
    for (size_t i = 0; i < sizeof phases / sizeof phases[0]; i++) ms += m->phase_ms[phases[i]];
    return ms;
}

static void print_layer_row(FILE *out, const char *name, const pmoe_bench_model *p,
                            const pmoe_layer_flops *lp, const pmoe_bench_model *b,
                            const pmoe_layer_flops *lb) {
    fprintf(out, "  %-22s", name);
    const pmoe_bench_model *models[2] = {p, b};
    const pmoe_layer_flops *rows[2] = {lp, lb};
    for (int i = 0; i < 2; i++) {
        if (rows[i])
            fprintf(out, "  %s %9.4f / %9.4f / %9.4f", models[i]->model,
                    pmoe_layer_flops_train(rows[i], PMOE_FLOPS_USEFUL) / 1e6,
                    pmoe_layer_flops_train(rows[i], PMOE_FLOPS_EXECUTED) / 1e6,
                    pmoe_layer_flops_train(rows[i], PMOE_FLOPS_DENSE_MASKED) / 1e6);
        else
            fprintf(out, "  %s %9s   %9s   %9s", models[i]->model, "-", "-", "-");
    }
    fputc('\n', out);
}

static void print_blocks(FILE *out, const pmoe_bench_result *r) {
    const pmoe_bench_block *w = &r->blocks[PMOE_BENCH_BLOCK_WRN];
    fprintf(out,
            "\nthe pMoE layer alone against the WRN layers it replaces (group 3's bn2, relu2, "
            "conv2, shortcut and add),\neach on a %dx%dx%d map (the shortcut: %dx%dx%d), batch "
            "%lld; train = forward + backward, infer = evaluation forward;\nMFLOP/sample useful / "
            "executed, ms median [min-max], ratios to wrn_block:\n",
            r->map_channels, r->map_height, r->map_width, r->map_channels / 2,
            2 * r->map_height, 2 * r->map_width, (long long)r->batch);
    fprintf(out, "  %-18s  %-19s  %-26s  %-19s  %-26s  %-13s  %-13s\n", "block", "train MFLOP",
            "train ms", "infer MFLOP", "infer ms", "train ratio", "infer ratio");
    fprintf(out, "  %-18s  %-19s  %-26s  %-19s  %-26s  %-13s  %-13s\n", "", "", "", "", "",
            "FLOP   time", "FLOP   time");
    for (int i = 0; i < r->block_count; i++) {
        const pmoe_bench_block *k = &r->blocks[i];
        fprintf(out,
                "  %-18s  %8.3f / %8.3f  %7.3f [%7.3f-%7.3f]  %8.3f / %8.3f  %7.3f [%7.3f-%7.3f]"
                "  %5.3f %6.3f  %5.3f %6.3f\n",
                k->name, k->train_flops[PMOE_FLOPS_USEFUL] / 1e6,
                k->train_flops[PMOE_FLOPS_EXECUTED] / 1e6, k->train.median_ms, k->train.min_ms,
                k->train.max_ms, k->infer_flops[PMOE_FLOPS_USEFUL] / 1e6,
                k->infer_flops[PMOE_FLOPS_EXECUTED] / 1e6, k->infer.median_ms, k->infer.min_ms,
                k->infer.max_ms,
                k->train_flops[PMOE_FLOPS_EXECUTED] / w->train_flops[PMOE_FLOPS_EXECUTED],
                k->train.median_ms / w->train.median_ms,
                k->infer_flops[PMOE_FLOPS_EXECUTED] / w->infer_flops[PMOE_FLOPS_EXECUTED],
                k->infer.median_ms / w->infer.median_ms);
    }
}

void pmoe_bench_print_table(FILE *out, const pmoe_bench_result *r) {
    const pmoe_bench_model *p = &r->pmoe, *b = &r->baseline;
    if (r->deep && r->map_channels > 0)
        fprintf(out,
                "pmoe bench: %s; %s (w = %d) against %s; pMoE layer on the %dx%dx%d map: n = %d "
                "patches of %dx%d (d = %d), k = %d, l = %d, %s; batch %lld\n",
                r->data, p->model, p->width, b->model, r->map_channels, r->map_height,
                r->map_width, p->patches, r->patch, r->patch, p->dim, p->experts, p->topl,
                p->moe_impl, (long long)r->batch);
    else if (r->deep)
        fprintf(out, "pmoe bench: %s; %s (w = %d) against itself (an A/A run: the ratios are "
                     "the timing noise); batch %lld\n",
                r->data, p->model, p->width, (long long)r->batch);
    else
        fprintf(out, "pmoe bench: %s; n = %d patches of d = %d, m = %d hidden, batch %lld\n",
                r->data, p->patches, p->dim, p->hidden, (long long)r->batch);
    fprintf(out, "machine: %s, %d cores; backend %s, %d threads; %s\n", r->cpu, r->cores,
            r->backend, r->threads, r->blas);
    if (r->sgemm_gflops > 0)
        fprintf(out, "peak: SGEMM %d^3 = %.1f GFLOP/s\n", r->sgemm_size, r->sgemm_gflops);
    if (r->others_cpu_share > 0.05)
        fprintf(out, "warning: other processes kept %.0f%% of the %d cores busy during the run "
                     "(load average %.2f before, %.2f after): these times, above all the threaded "
                     "ones, are not reliable\n",
                100.0 * r->others_cpu_share, r->cores, r->load_before, r->load_after);
    fprintf(out,
            "time: %d warm-up + %d timed steps, median [min-max]; train step = forward + "
            "backward + SGD (learning rate 0: the weights stay at their initial values)%s\n%s",
            r->warmup, r->repeats,
            strcmp(r->mode, "separate") == 0 ? " (separate mode: the expert phase)" : "",
            r->deep ? "" : "\n");
    if (r->deep)
        fprintf(out, "inference step = evaluation mode (batch norm on running statistics): "
                     "forward + loss, no backward\n\n");
    fprintf(out, "%-8s %3s %4s  %-17s  %-17s  %7s  %-26s  %-26s  %9s %7s %7s\n", "", "", "",
            "train MFLOP/sample", "infer MFLOP/sample", "peak", "train ms/step", "infer ms/step",
            "train", "train", "of");
    fprintf(out, "%-8s %3s %4s  %8s %8s  %8s %8s  %7s  %-26s  %-26s  %9s %7s %7s\n", "model", "k",
            "l", "useful", "executed", "useful", "executed", "MiB", "median [min-max]",
            "median [min-max]", "samples/s", "GFLOP/s", "peak");
    print_row(out, r, p);
    print_row(out, r, b);
    fprintf(out, "%-8s %3s %4s  %8.3f %8.3f  %8.3f %8.3f  %7.2f  %7.3f %18s  %7.3f %18s  %9.3f %7.2f\n",
            "ratio", "", "", p->train_flops[0] / b->train_flops[0],
            p->train_flops[PMOE_FLOPS_EXECUTED] / b->train_flops[PMOE_FLOPS_EXECUTED],
            p->infer_flops[0] / b->infer_flops[0],
            p->infer_flops[PMOE_FLOPS_EXECUTED] / b->infer_flops[PMOE_FLOPS_EXECUTED],
            (double)p->mem.peak_bytes / (double)b->mem.peak_bytes,
            p->train.median_ms / b->train.median_ms, "", p->infer.median_ms / b->infer.median_ms,
            "", b->train.median_ms / p->train.median_ms,
            pmoe_bench_train_gflops(r, p) / pmoe_bench_train_gflops(r, b));
    fprintf(out, "\ntrain step by phase, ms (mean of %d steps with the phase timer on):\n",
            r->repeats);
    for (int i = 0; i < PMOE_T_COUNT; i++)
        if (p->phase_ms[i] > 0 || b->phase_ms[i] > 0)
            fprintf(out, "  %-20s %-8s %8.3f   %-8s %8.3f\n", pmoe_timer_name((pmoe_phase_id)i),
                    p->model, p->phase_ms[i], b->model, b->phase_ms[i]);
    if (r->deep && r->map_channels > 0)
        fprintf(out, "  %-20s %-8s %8.3f   (the pMoE layer's phases above, forward and backward)\n",
                "pMoE layer", p->model, moe_layer_phase_ms(p));
    fprintf(out, "\nper layer, MFLOP/sample, forward + backward (useful / executed / dense-masked):\n");
    for (int i = 0; i < p->flops.layer_count; i++) {
        const pmoe_layer_flops *lp = &p->flops.layers[i];
        print_layer_row(out, lp->name, p, lp, b, pmoe_flops_layer(&b->flops, lp->name));
    }
    for (int i = 0; i < b->flops.layer_count; i++) { /* the baseline's own layers */
        const pmoe_layer_flops *lb = &b->flops.layers[i];
        if (!pmoe_flops_layer(&p->flops, lb->name)) print_layer_row(out, lb->name, p, NULL, b, lb);
    }
    fprintf(out, "  %-22s  %s %9.4f / %9.4f / %9.4f  %s %9.4f / %9.4f / %9.4f  (per step / batch)\n",
            "update", p->model, p->flops.update[0] / 1e6 / (double)r->batch,
            p->flops.update[1] / 1e6 / (double)r->batch, p->flops.update[2] / 1e6 / (double)r->batch,
            b->model, b->flops.update[0] / 1e6 / (double)r->batch,
            b->flops.update[1] / 1e6 / (double)r->batch, b->flops.update[2] / 1e6 / (double)r->batch);
    if (r->block_count > 0) print_blocks(out, r);
}

/* A number, or null when not finite (JSON has no NaN). */
static void json_number(FILE *out, const char *key, double v) {
    if (isfinite(v)) fprintf(out, "\"%s\":%.9g", key, v);
    else fprintf(out, "\"%s\":null", key);
}

/* The train and inference steps' median, min and max, each field followed
 * by a comma. */
static void json_timings(FILE *out, const pmoe_timing *train, const pmoe_timing *infer) {
    const struct {
        const char *key;
        double v;
    } fields[] = {
        {"train_ms_per_step", train->median_ms}, {"train_ms_min", train->min_ms},
        {"train_ms_max", train->max_ms},         {"infer_ms_per_step", infer->median_ms},
        {"infer_ms_min", infer->min_ms},         {"infer_ms_max", infer->max_ms},
    };
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        json_number(out, fields[i].key, fields[i].v);
        fputc(',', out);
    }
}

static void json_kinds(FILE *out, const double *v) {
    fprintf(out, "{");
    for (int k = 0; k < PMOE_FLOPS_KINDS; k++) {
        if (k) fputc(',', out);
        json_number(out, pmoe_flop_kind_name((pmoe_flop_kind)k), v[k]);
    }
    fprintf(out, "}");
}

static void json_model(FILE *out, const pmoe_bench_result *r, const pmoe_bench_model *m) {
    const double train_gf = pmoe_bench_train_gflops(r, m), infer_gf = pmoe_bench_infer_gflops(r, m);
    fprintf(out, "{\"model\":\"%s\",\"gate\":\"%s\",\"experts\":%d,\"topl\":%d,\"patches\":%d,"
                 "\"dim\":%d,\"hidden\":%d,\"classes\":%d,\"params\":%lld,\"learn_router\":%d,"
                 "\"train_output\":%d,",
            m->model, m->gate, m->experts, m->topl, m->patches, m->dim, m->hidden, m->classes,
            (long long)m->params, m->learn_router, m->train_output);
    if (r->deep) fprintf(out, "\"width\":%d,\"moe_impl\":\"%s\",", m->width, m->moe_impl);
    json_number(out, "train_flops_per_sample", m->train_flops[PMOE_FLOPS_USEFUL]);
    fputc(',', out);
    json_number(out, "infer_flops_per_sample", m->infer_flops[PMOE_FLOPS_USEFUL]);
    fputc(',', out);
    json_number(out, "executed_train_flops_per_sample", m->train_flops[PMOE_FLOPS_EXECUTED]);
    fputc(',', out);
    json_number(out, "executed_infer_flops_per_sample", m->infer_flops[PMOE_FLOPS_EXECUTED]);
    fputc(',', out);
    json_number(out, "dense_masked_train_flops_per_sample", m->train_flops[PMOE_FLOPS_DENSE_MASKED]);
    fputc(',', out);
    json_number(out, "dense_masked_infer_flops_per_sample", m->infer_flops[PMOE_FLOPS_DENSE_MASKED]);
    fprintf(out, ",\"peak_bytes\":%lld,\"parameter_bytes\":%lld,\"activation_bytes\":%lld,"
                 "\"workspace_bytes\":%lld,\"backward_bytes\":%lld,\"device_peak_bytes\":%lld,"
                 "\"host_bytes\":%lld,",
            (long long)m->mem.peak_bytes, (long long)m->mem.parameter_bytes,
            (long long)m->mem.activation_bytes, (long long)m->mem.workspace_bytes,
            (long long)m->mem.backward_bytes, (long long)m->mem.device_peak_bytes,
            (long long)m->mem.host_bytes);
    json_timings(out, &m->train, &m->infer);
    const struct {
        const char *key;
        double v;
    } numbers[] = {
        {"train_samples_per_s", (double)r->batch / (m->train.median_ms * 1e-3)},
        {"infer_samples_per_s", (double)r->batch / (m->infer.median_ms * 1e-3)},
        {"train_gflops", train_gf},
        {"infer_gflops", infer_gf},
        {"train_peak_share", r->sgemm_gflops > 0 ? train_gf / r->sgemm_gflops : NAN},
        {"infer_peak_share", r->sgemm_gflops > 0 ? infer_gf / r->sgemm_gflops : NAN},
        {"first_loss", m->first_loss},
        {"last_loss", m->last_loss},
    };
    for (size_t i = 0; i < sizeof numbers / sizeof numbers[0]; i++) {
        json_number(out, numbers[i].key, numbers[i].v);
        fputc(',', out);
    }
    fprintf(out, "\"phase_ms\":{");
    for (int i = 0, first = 1; i < PMOE_T_COUNT; i++)
        if (m->phase_ms[i] > 0) {
            fprintf(out, "%s\"%s\":%.6g", first ? "" : ",", pmoe_timer_name((pmoe_phase_id)i),
                    m->phase_ms[i]);
            first = 0;
        }
    fprintf(out, "}");
    if (r->deep && m->moe_impl[0]) {
        fputc(',', out);
        json_number(out, "moe_layer_phase_ms", moe_layer_phase_ms(m));
    }
    fprintf(out, ",\"update_flops_per_step\":");
    json_kinds(out, m->flops.update);
    fprintf(out, ",\"layers\":[");
    for (int i = 0; i < m->flops.layer_count; i++) {
        const pmoe_layer_flops *L = &m->flops.layers[i];
        fprintf(out, "%s{\"name\":\"%s\",\"forward\":", i ? "," : "", L->name);
        json_kinds(out, L->forward);
        fprintf(out, ",\"backward\":");
        json_kinds(out, L->backward);
        if (L->has_eval) {
            fprintf(out, ",\"eval_forward\":");
            json_kinds(out, L->eval_forward);
        }
        fprintf(out, "}");
    }
    fprintf(out, "]}");
}

void pmoe_bench_write_json(FILE *out, const pmoe_bench_result *r) {
    fprintf(out, "{\"bench\":\"%s\",\"date\":\"%s\",\"machine\":{\"cpu\":",
            r->deep ? "deep" : "two_layer", r->date);
    pmoe_write_json_string(out, r->cpu);
    fprintf(out, ",\"cores\":%d,\"backend\":", r->cores);
    pmoe_write_json_string(out, r->backend);
    fprintf(out, ",\"blas\":");
    pmoe_write_json_string(out, r->blas);
    fprintf(out, "},\"threads\":%d,", r->threads);
    json_number(out, "load_before", r->load_before >= 0 ? r->load_before : NAN);
    fputc(',', out);
    json_number(out, "load_after", r->load_after >= 0 ? r->load_after : NAN);
    fputc(',', out);
    json_number(out, "others_cpu_share", r->others_cpu_share >= 0 ? r->others_cpu_share : NAN);
    fprintf(out, ",\"batch\":%lld,\"warmup\":%d,\"repeats\":%d,\"data\":", (long long)r->batch,
            r->warmup, r->repeats);
    pmoe_write_json_string(out, r->data);
    fprintf(out, ",\"channels\":%d,\"height\":%d,\"width\":%d,\"patch\":%d,\"mode\":\"%s\",",
            r->channels, r->height, r->width, r->patch, r->mode);
    json_number(out, "lr", r->lr);
    fputc(',', out);
    json_number(out, "momentum", r->momentum);
    fputc(',', out);
    json_number(out, "weight_decay", r->weight_decay);
    fprintf(out, ",\"sgemm_size\":%d,", r->sgemm_size);
    json_number(out, "sgemm_gflops", r->sgemm_gflops > 0 ? r->sgemm_gflops : NAN);
    fprintf(out, ",\"pmoe\":");
    json_model(out, r, &r->pmoe);
    fprintf(out, ",\"baseline\":");
    json_model(out, r, &r->baseline);
    const pmoe_bench_model *p = &r->pmoe, *b = &r->baseline;
    fprintf(out, ",\"ratio\":{");
    json_number(out, "train_flops", p->train_flops[0] / b->train_flops[0]);
    fputc(',', out);
    json_number(out, "executed_train_flops",
                p->train_flops[PMOE_FLOPS_EXECUTED] / b->train_flops[PMOE_FLOPS_EXECUTED]);
    fputc(',', out);
    json_number(out, "infer_flops", p->infer_flops[0] / b->infer_flops[0]);
    fputc(',', out);
    json_number(out, "executed_infer_flops",
                p->infer_flops[PMOE_FLOPS_EXECUTED] / b->infer_flops[PMOE_FLOPS_EXECUTED]);
    fputc(',', out);
    json_number(out, "train_ms", p->train.median_ms / b->train.median_ms);
    fputc(',', out);
    json_number(out, "infer_ms", p->infer.median_ms / b->infer.median_ms);
    fputc(',', out);
    json_number(out, "peak_bytes", (double)p->mem.peak_bytes / (double)b->mem.peak_bytes);
    fprintf(out, "}");
    if (r->deep)
        fprintf(out, ",\"map\":{\"channels\":%d,\"height\":%d,\"width\":%d}", r->map_channels,
                r->map_height, r->map_width);
    if (r->block_count > 0) {
        const pmoe_bench_block *w = &r->blocks[PMOE_BENCH_BLOCK_WRN];
        fprintf(out, ",\"blocks\":[");
        for (int i = 0; i < r->block_count; i++) {
            const pmoe_bench_block *k = &r->blocks[i];
            fprintf(out, "%s{\"name\":\"%s\",\"train_flops_per_sample\":", i ? "," : "", k->name);
            json_kinds(out, k->train_flops);
            fprintf(out, ",\"infer_flops_per_sample\":");
            json_kinds(out, k->infer_flops);
            fputc(',', out);
            json_timings(out, &k->train, &k->infer);
            const struct {
                const char *key;
                double v;
            } numbers[] = {
                {"executed_train_flops_ratio",
                 k->train_flops[PMOE_FLOPS_EXECUTED] / w->train_flops[PMOE_FLOPS_EXECUTED]},
                {"train_ms_ratio", k->train.median_ms / w->train.median_ms},
                {"executed_infer_flops_ratio",
                 k->infer_flops[PMOE_FLOPS_EXECUTED] / w->infer_flops[PMOE_FLOPS_EXECUTED]},
                {"infer_ms_ratio", k->infer.median_ms / w->infer.median_ms},
            };
            for (size_t j = 0; j < sizeof numbers / sizeof numbers[0]; j++) {
                if (j) fputc(',', out);
                json_number(out, numbers[j].key, numbers[j].v);
            }
            fprintf(out, "}");
        }
        fprintf(out, "]");
    }
    fprintf(out, "}");
}
