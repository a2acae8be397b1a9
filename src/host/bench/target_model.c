/* target_model.c: a model of either family (the two-layer pMoE and its
 * CNN; WRN-pMoE and its WRN) as a bench_target. It asks the model what it
 * is (pmoe_model_describe), what it holds (pmoe_model_memory_plan) and what
 * it costs (model/flops.h); the families differ here only in the inference
 * step (bench.h). */
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "bench/bench_internal.h"
#include "core/files.h"
#include "core/safetensors.h"
#include "model/model.h"
#include "train/checkpoint.h"

typedef struct model_target {
    const pmoe_config *cfg;
    pmoe_model *model;
    int64_t batch;
    int channels, height, width;
    float *host_images;
    int32_t *host_labels;
    float *host_labels_float; /* for the peer export */
} model_target;

static void model_free_state(void *state) {
    model_target *s = state;
    pmoe_model_free(s->model);
    free(s->host_images);
    free(s->host_labels);
    free(s->host_labels_float);
    free(s);
}

/* The memory split of bench.h: the model's parameters and activations, the
 * backend's peak, the workspace as the rest of it (the backward buffers and
 * any op's transient scratch: the test holds the backward buffers to at most
 * that, and the CNN's, which has no scratch, to exactly), and the host's
 * batch (images and labels). */
static void memory(const bench_target *t, pmoe_bench_memory *mem) {
    const model_target *s = t->state;
    const pmoe_model *m = s->model;
    const pmoe_memory_plan plan = pmoe_model_memory_plan(m);
    const int64_t B = m->image.batch, F = (int64_t)sizeof(float), IDX = (int64_t)sizeof(int32_t);
    const int64_t image = (int64_t)m->image.channels * m->image.height * m->image.width;
    mem->parameter_bytes = plan.parameter_bytes;
    mem->activation_bytes = plan.activation_bytes;
    mem->backward_bytes = plan.backward_bytes;
    mem->device_peak_bytes = t->be->mem.peak_bytes;
    mem->workspace_bytes = mem->device_peak_bytes - mem->parameter_bytes - plan.activation_bytes;
    mem->host_bytes = B * image * F + B * IDX;
    mem->peak_bytes = mem->device_peak_bytes + mem->host_bytes;
}

static void model_describe(const bench_target *t, pmoe_bench_model *out) {
    const model_target *s = t->state;
    pmoe_model_description d;
    pmoe_model_describe(s->model, &d);
    snprintf(out->model, sizeof out->model, "%s", d.model);
    snprintf(out->gate, sizeof out->gate, "%s", d.gate);
    snprintf(out->moe_impl, sizeof out->moe_impl, "%s", d.moe_impl);
    out->width = d.width;
    out->patches = d.patches;
    out->dim = d.dim;
    out->experts = d.experts;
    out->topl = d.topl;
    out->hidden = d.hidden;
    out->classes = d.classes;
    out->params = d.params;
    out->learn_router = d.learn_router;
    out->train_output = d.train_output;
    pmoe_flops_model(s->model, &s->cfg->train, s->batch, &out->flops);
    for (int k = 0; k < PMOE_FLOPS_KINDS; k++) {
        out->train_flops[k] = pmoe_flops_train_per_sample(&out->flops, (pmoe_flop_kind)k);
        out->infer_flops[k] = pmoe_flops_infer_per_sample(&out->flops, (pmoe_flop_kind)k);
    }
    memory(t, &out->mem);
}

void bench_model_map(const bench_target *t, int map[3]) {
    const model_target *s = t->state;
    pmoe_model_description d;
    pmoe_model_describe(s->model, &d);
    map[0] = d.map_channels;
    map[1] = d.map_height;
    map[2] = d.map_width;
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
    st = t->be->synchronize(t->be, err);
    pmoe_timer_stop(s->model->timer);
    return st;
}

static void model_set_timer(bench_target *t, pmoe_phase_timer *timer) {
    model_target *s = t->state;
    if (timer) pmoe_backend_time_phases(t->be, timer);
    s->model->timer = timer;
}

static pmoe_status two_layer_infer_step(bench_target *t, pmoe_error *err) {
    model_target *s = t->state;
    pmoe_model_forward(s->model, s->batch);
    return t->be->synchronize(t->be, err);
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
    pmoe_model_description d;
    pmoe_model_describe(s->model, &d);
    char path[1200];
    pmoe_status st = pmoe_make_dir(dir, "--peer folder", err);
    if (st) return st;
    snprintf(path, sizeof path, "%s/%s.init.safetensors", dir, d.model);
    pmoe_train_position pos;
    memset(&pos, 0, sizeof pos);
    pos.phase = PMOE_PHASE_MAIN;
    pos.epoch = 1;
    st = pmoe_checkpoint_save(path, s->model, s->cfg, &pos, err);
    if (st) return st;
    snprintf(path, sizeof path, "%s/%s.batch.safetensors", dir, d.model);
    const pmoe_st_entry entries[2] = {
        {"images", 4, {s->batch, s->channels, s->height, s->width}, s->host_images},
        {"labels", 1, {s->batch}, s->host_labels_float},
    };
    const pmoe_st_meta meta[1] = {{"format", "pmoe-bench-batch-1"}};
    return pmoe_safetensors_write(path, entries, 2, meta, 1, err);
}

/* The families differ only in the inference step. */
static pmoe_status model_infer_step(bench_target *t, pmoe_error *err) {
    const model_target *s = t->state;
    return pmoe_model_is_deep(s->cfg->model.type) ? deep_infer_step(t, err)
                                                  : two_layer_infer_step(t, err);
}

static const bench_target_calls MODEL_CALLS = {
    .describe = model_describe,
    .train_step = model_train_step,
    .set_timer = model_set_timer,
    .infer_step = model_infer_step,
    .export_peer = model_export_peer,
    .free_state = model_free_state,
};

pmoe_status bench_model_open(const pmoe_config *cfg, const pmoe_dataset *ds, int patch,
                             int64_t batch, bench_target *t, pmoe_error *err) {
    pmoe_status st = bench_target_open(t, &MODEL_CALLS, sizeof(model_target), cfg, err);
    if (st) return st;
    model_target *s = t->state;
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
    st = pmoe_model_create(t->be, cfg, ds->channels, ds->height, ds->width, patch, ds->classes,
                           batch, &s->model, err);
    if (st) return st;
    for (int64_t i = 0; i < batch; i++) {
        const int64_t index = i % ds->count;
        ds->compose(ds, index, s->host_images + i * per_sample);
        s->host_labels[i] = ds->labels[index];
        s->host_labels_float[i] = (float)ds->labels[index];
    }
    st = t->be->copy_in(t->be, s->model->images, s->host_images,
                        (size_t)(batch * per_sample) * sizeof(float), err);
    if (!st)
        st = t->be->copy_in(t->be, s->model->labels, s->host_labels,
                            (size_t)batch * sizeof(int32_t), err);
    return st;
}
