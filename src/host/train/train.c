/* train.c: the training loop of the two-layer models (pmoe_train in train.h).
 *
 * A run: resolve the config against the data (patch size, n, classes), build
 * backend and model, then for each epoch shuffle (an RNG stream per epoch, so
 * any epoch's order is reproducible on its own), compose each batch on the
 * host, copy it in, step, and evaluate. Separate training first runs the
 * router phase on the linear loss, then the main phase with frozen routers
 * and G = 1. */
#include "pmoe/train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/backend.h"
#include "core/rng.h"
#include "data/dataset.h"
#include "model/two_layer.h"

enum { STREAM_SHUFFLE = 0x5eed, STREAM_ROUTER_SHUFFLE = 0x5eee };

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct run {
    const pmoe_config *cfg;
    const pmoe_train_callbacks *cb;
    pmoe_dataset *train, *test;
    pmoe_backend *be;
    pmoe_two_layer *model;
    int patch;
    int64_t max_batch;
    float *host_images;   /* max_batch composed samples */
    int32_t *host_labels, *host_selected, *host_pair;
    float *host_weight;
    int64_t *order;       /* the epoch's permutation of the training set */
    pmoe_run_info info;
    double started;
} run;

/* Checks that need the data: patch size, l <= n, separate-training layout. */
static pmoe_status resolve_against_data(run *r, pmoe_error *err) {
    const pmoe_config *cfg = r->cfg;
    const pmoe_dataset *ds = r->train;
    int p = cfg->model.patch;
    if (p == 0) p = ds->decisive_patch_size > 0 ? ds->decisive_patch_size : 7;
    if (ds->height % p || ds->width % p)
        return pmoe_fail(err, PMOE_ERR_CONFIG,
                         "config: model.patch = %d does not divide the %dx%d input of %s", p,
                         ds->height, ds->width, ds->description);
    r->patch = p;
    const int n = (ds->height / p) * (ds->width / p);
    const int k = cfg->model.experts, l = cfg->model.topl;
    if (cfg->model.type == PMOE_MODEL_PMOE) {
        if (l > n)
            return pmoe_fail(err, PMOE_ERR_CONFIG,
                             "config: model.topl = %d exceeds the %d patches per sample "
                             "(model.patch = %d)",
                             l, n, p);
        if (cfg->train.mode == PMOE_TRAIN_SEPARATE) {
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
    }
    if (cfg->model.type == PMOE_MODEL_CNN && cfg->train.mode == PMOE_TRAIN_SEPARATE)
        return pmoe_fail(err, PMOE_ERR_CONFIG,
                         "config: train.mode = separate needs model.type = pmoe (the CNN has no "
                         "router)");
    return PMOE_OK;
}

static pmoe_status host_alloc(void **out, size_t bytes, const char *what, pmoe_error *err) {
    *out = malloc(bytes ? bytes : 1);
    if (!*out)
        return pmoe_fail(err, PMOE_ERR_OOM, "out of host memory: %zu bytes asked for %s", bytes,
                         what);
    return PMOE_OK;
}

/* Composes samples order[0..count) into the model's image buffer and labels. */
static pmoe_status load_batch(run *r, const pmoe_dataset *ds, const int64_t *indices,
                              int64_t count, pmoe_error *err) {
    const int64_t per_sample = (int64_t)ds->channels * ds->height * ds->width;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < count; i++)
        ds->compose(ds, indices[i], r->host_images + i * per_sample);
    for (int64_t i = 0; i < count; i++) r->host_labels[i] = ds->labels[indices[i]];
    pmoe_backend *be = r->be;
    pmoe_status s = be->copy_in(be, r->model->images, r->host_images,
                                (size_t)(count * per_sample) * sizeof(float), err);
    if (!s)
        s = be->copy_in(be, r->model->labels, r->host_labels, (size_t)count * sizeof(int32_t),
                        err);
    return s;
}

/* train.fault_nan_step: makes the first pixel of the batch NaN, so tests can
 * drive the non-finite guard through the real path. */
static pmoe_status poison_batch(run *r, pmoe_error *err) {
    const float nan = NAN;
    return r->be->copy_in(r->be, r->model->images, &nan, sizeof nan, err);
}

static pmoe_status check_finite(double loss, const char *phase, int64_t step, int epoch,
                                pmoe_error *err) {
    if (isfinite(loss)) return PMOE_OK;
    return pmoe_fail(err, PMOE_ERR_NONFINITE,
                     "non-finite loss (%g) in the %s phase at step %lld (epoch %d): the batch "
                     "or the weights hold NaN or Inf (if the weights diverged, lower train.lr)",
                     loss, phase, (long long)step, epoch);
}

/* Test accuracy and, where the task knows the deciding patch and the model
 * routes on the same patch grid, router recall: the share of samples whose
 * deciding patch is among the l picks of at least one expert (and per expert). */
static pmoe_status evaluate(run *r, double *accuracy, double *recall, double *expert_recall,
                            pmoe_error *err) {
    pmoe_two_layer *m = r->model;
    const pmoe_dataset *ds = r->test;
    const int k = m->experts, l = m->topl;
    const int measure_recall = m->has_router && ds->decisive_patch &&
                               ds->decisive_patch_size == r->patch;
    int64_t correct_total = 0, recalled_any = 0;
    int64_t recalled[PMOE_MAX_REPORTED_EXPERTS] = {0};
    for (int64_t start = 0; start < ds->count; start += r->max_batch) {
        int64_t count = ds->count - start < r->max_batch ? ds->count - start : r->max_batch;
        for (int64_t i = 0; i < count; i++) r->order[i] = start + i;
        pmoe_status s = load_batch(r, ds, r->order, count, err);
        if (s) return s;
        pmoe_two_layer_forward(m, count);
        double loss;
        int64_t correct;
        s = pmoe_two_layer_loss(m, 0, &loss, &correct, err);
        if (s) return s;
        correct_total += correct;
        if (!measure_recall) continue;
        s = r->be->copy_out(r->be, r->host_selected, m->selected,
                            (size_t)(count * k * l) * sizeof(int32_t), err);
        if (s) return s;
        for (int64_t i = 0; i < count; i++) {
            const int32_t want = ds->decisive_patch[start + i];
            int any = 0;
            for (int e = 0; e < k; e++) {
                int hit = 0;
                for (int t = 0; t < l; t++) hit |= r->host_selected[(i * k + e) * l + t] == want;
                any |= hit;
                if (e < PMOE_MAX_REPORTED_EXPERTS) recalled[e] += hit;
            }
            recalled_any += any;
        }
    }
    *accuracy = (double)correct_total / (double)ds->count;
    *recall = measure_recall ? (double)recalled_any / (double)ds->count : -1.0;
    for (int e = 0; e < k && e < PMOE_MAX_REPORTED_EXPERTS; e++)
        expert_recall[e] = measure_recall ? (double)recalled[e] / (double)ds->count : -1.0;
    return PMOE_OK;
}

/* The separate-training router phase: the linear loss on N_r samples, routers
 * in pairs (2q, 2q + 1); each sample's weight is its sign over its pair's
 * count in the batch, so every pair sees a batch mean. */
static pmoe_status router_phase(run *r, pmoe_train_result *res, pmoe_error *err) {
    const pmoe_config *cfg = r->cfg;
    pmoe_two_layer *m = r->model;
    const int64_t size = cfg->train.router_size > 0 && cfg->train.router_size < r->train->count
                             ? cfg->train.router_size
                             : r->train->count;
    const int64_t B = cfg->train.router_batch;
    const int64_t batches = (size + B - 1) / B;
    const int epochs = cfg->train.router_epochs;
    const int classes = r->train->classes;
    pmoe_param *router = &m->params[PARAM_ROUTER];
    int64_t step = 0;
    const double began = now_seconds();
    for (int epoch = 1; epoch <= epochs; epoch++) {
        const double epoch_began = now_seconds();
        for (int64_t i = 0; i < size; i++) r->order[i] = i;
        pmoe_rng rng = pmoe_rng_make(cfg->train.seed, STREAM_ROUTER_SHUFFLE + (uint64_t)epoch * 2);
        pmoe_rng_shuffle(&rng, r->order, size);
        double loss_sum = 0.0;
        for (int64_t bi = 0; bi < batches; bi++) {
            const int64_t start = bi * B, count = size - start < B ? size - start : B;
            pmoe_status s = load_batch(r, r->train, r->order + start, count, err);
            if (s) return s;
            int64_t pair_count[PMOE_MAX_REPORTED_EXPERTS] = {0};
            for (int64_t i = 0; i < count; i++) {
                const int label = r->host_labels[i];
                r->host_pair[i] = classes == 1 ? 0 : label / 2;
                pair_count[r->host_pair[i]]++;
            }
            for (int64_t i = 0; i < count; i++) {
                const int label = r->host_labels[i];
                const int positive = classes == 1 ? label == 1 : label % 2 == 0;
                r->host_weight[i] = (positive ? 1.0f : -1.0f) / (float)pair_count[r->host_pair[i]];
            }
            s = r->be->copy_in(r->be, m->router_pair, r->host_pair, (size_t)count * 4, err);
            if (!s) s = r->be->copy_in(r->be, m->router_weight, r->host_weight, (size_t)count * 4, err);
            double loss = 0.0;
            if (!s) s = pmoe_two_layer_router_loss(m, count, &loss, err);
            if (!s) s = check_finite(loss, "router", step + 1, epoch, err);
            if (s) return s;
            r->be->ops->sgd_update(r->be, pmoe_tensor_numel(&router->value), router->value.data,
                                   router->grad.data, router->velocity.data,
                                   (float)cfg->train.router_lr, (float)cfg->train.momentum,
                                   (float)cfg->train.weight_decay);
            step++;
            loss_sum += loss * (double)count;
            if (r->cb && r->cb->on_step) {
                pmoe_step_report sr = {PMOE_PHASE_ROUTER, epoch, epochs, step, bi + 1, batches,
                                       loss, step * B < size * epoch ? step * B : size * epoch,
                                       now_seconds() - began};
                r->cb->on_step(r->cb->user, &sr);
            }
        }
        if (r->cb && r->cb->on_epoch) {
            pmoe_epoch_report er = {0};
            er.phase = PMOE_PHASE_ROUTER;
            er.epoch = epoch;
            er.epochs = epochs;
            er.step = step;
            er.train_loss = loss_sum / (double)size;
            er.train_acc = er.test_acc = er.router_recall = -1.0;
            er.seconds = now_seconds() - epoch_began;
            er.elapsed = now_seconds() - r->started;
            r->cb->on_epoch(r->cb->user, &er);
        }
    }
    router->trainable = 0;
    res->router_steps = step;
    return PMOE_OK;
}

static pmoe_status main_phase(run *r, pmoe_train_result *res, pmoe_error *err) {
    const pmoe_config *cfg = r->cfg;
    pmoe_two_layer *m = r->model;
    const int64_t N = r->train->count, B = cfg->train.batch;
    const int64_t batches = (N + B - 1) / B;
    const int epochs = cfg->train.epochs;
    int64_t step = 0;
    const double began = now_seconds();
    res->test_acc = -1.0;
    res->router_recall = -1.0;
    for (int epoch = 1; epoch <= epochs; epoch++) {
        const double epoch_began = now_seconds();
        for (int64_t i = 0; i < N; i++) r->order[i] = i;
        pmoe_rng rng = pmoe_rng_make(cfg->train.seed, STREAM_SHUFFLE + (uint64_t)epoch * 2);
        pmoe_rng_shuffle(&rng, r->order, N);
        double loss_sum = 0.0;
        int64_t correct_sum = 0;
        for (int64_t bi = 0; bi < batches; bi++) {
            const int64_t start = bi * B, count = N - start < B ? N - start : B;
            pmoe_status s = load_batch(r, r->train, r->order + start, count, err);
            if (!s && step + 1 == cfg->train.fault_nan_step) s = poison_batch(r, err);
            if (s) return s;
            pmoe_two_layer_forward(m, count);
            double loss;
            int64_t correct;
            s = pmoe_two_layer_loss(m, 1, &loss, &correct, err);
            if (!s) s = check_finite(loss, "main", step + 1, epoch, err);
            if (s) return s;
            pmoe_two_layer_sgd(m, (float)cfg->train.lr, (float)cfg->train.momentum,
                               (float)cfg->train.weight_decay);
            step++;
            loss_sum += loss * (double)count;
            correct_sum += correct;
            if (r->cb && r->cb->on_step) {
                pmoe_step_report sr = {PMOE_PHASE_MAIN, epoch, epochs, step, bi + 1, batches,
                                       loss, (epoch - 1) * N + start + count,
                                       now_seconds() - began};
                r->cb->on_step(r->cb->user, &sr);
            }
        }
        pmoe_epoch_report er = {0};
        er.phase = PMOE_PHASE_MAIN;
        er.epoch = epoch;
        er.epochs = epochs;
        er.step = step;
        er.train_loss = loss_sum / (double)N;
        er.train_acc = (double)correct_sum / (double)N;
        er.test_acc = er.router_recall = -1.0;
        if (epoch == epochs || epoch % cfg->train.eval_every == 0) {
            pmoe_status s = evaluate(r, &er.test_acc, &er.router_recall, er.expert_recall, err);
            if (s) return s;
            er.experts_reported = er.router_recall >= 0.0
                                      ? (m->experts < PMOE_MAX_REPORTED_EXPERTS
                                             ? m->experts
                                             : PMOE_MAX_REPORTED_EXPERTS)
                                      : 0;
            res->test_acc = er.test_acc;
            res->router_recall = er.router_recall;
        }
        er.seconds = now_seconds() - epoch_began;
        er.elapsed = now_seconds() - r->started;
        res->train_loss = er.train_loss;
        res->train_acc = er.train_acc;
        if (r->cb && r->cb->on_epoch) r->cb->on_epoch(r->cb->user, &er);
    }
    res->steps = step;
    if (epochs == 0) { /* still report the untrained model's accuracy */
        double expert_recall[PMOE_MAX_REPORTED_EXPERTS];
        return evaluate(r, &res->test_acc, &res->router_recall, expert_recall, err);
    }
    return PMOE_OK;
}

static void fill_info(run *r, pmoe_data_source chosen) {
    pmoe_run_info *in = &r->info;
    const pmoe_two_layer *m = r->model;
    snprintf(in->data, sizeof in->data, "%s", r->train->description);
    in->source = chosen;
    snprintf(in->backend, sizeof in->backend, "%s", r->be->name);
    snprintf(in->model, sizeof in->model, "%s", pmoe_model_type_name(r->cfg->model.type));
    in->params = pmoe_two_layer_param_count(m);
    in->train_size = r->train->count;
    in->test_size = r->test->count;
    in->patches = m->patch_count;
    in->patch_dim = m->patch_dim;
    in->patch = r->patch;
    in->classes = m->classes;
    in->experts = m->experts;
    in->topl = m->topl;
    in->steps_per_epoch = (r->train->count + r->cfg->train.batch - 1) / r->cfg->train.batch;
    in->epochs = r->cfg->train.epochs;
    in->router_epochs = m->has_router && r->cfg->train.mode == PMOE_TRAIN_SEPARATE
                            ? r->cfg->train.router_epochs
                            : 0;
}

pmoe_status pmoe_train(const pmoe_config *cfg, const pmoe_train_callbacks *callbacks,
                       pmoe_train_result *result, pmoe_error *err) {
    run r = {0};
    r.cfg = cfg;
    r.cb = callbacks;
    r.started = now_seconds();
    memset(result, 0, sizeof *result);
    pmoe_data_source chosen = cfg->data.source;
    pmoe_status s = pmoe_config_check(cfg, err);
    if (!s) s = pmoe_data_open(&cfg->data, &r.train, &r.test, &chosen, err);
    if (!s) s = resolve_against_data(&r, err);
    if (!s) s = pmoe_backend_create(cfg->train.device, cfg->train.threads, &r.be, err);
    if (!s) {
        const int separate = cfg->train.mode == PMOE_TRAIN_SEPARATE;
        r.max_batch = cfg->train.batch;
        if (separate && cfg->train.router_batch > r.max_batch) r.max_batch = cfg->train.router_batch;
        s = pmoe_two_layer_create(r.be, cfg, r.train->channels, r.train->height, r.train->width,
                                  r.patch, r.train->classes, r.max_batch, &r.model, err);
    }
    if (!s) {
        const pmoe_two_layer *m = r.model;
        const int64_t B = r.max_batch;
        const int64_t most = r.train->count > r.test->count ? r.train->count : r.test->count;
        const size_t per_sample = (size_t)r.train->channels * r.train->height * r.train->width;
        s = host_alloc((void **)&r.host_images, (size_t)B * per_sample * sizeof(float), "a batch", err);
        if (!s) s = host_alloc((void **)&r.host_labels, (size_t)B * 4, "labels", err);
        if (!s) s = host_alloc((void **)&r.host_pair, (size_t)B * 4, "router pairs", err);
        if (!s) s = host_alloc((void **)&r.host_weight, (size_t)B * 4, "router weights", err);
        if (!s)
            s = host_alloc((void **)&r.host_selected, (size_t)(B * m->experts * m->topl) * 4,
                           "the selections", err);
        if (!s) s = host_alloc((void **)&r.order, (size_t)most * sizeof(int64_t), "the order", err);
    }
    if (!s) {
        fill_info(&r, chosen);
        result->info = r.info;
        if (r.cb && r.cb->on_start) r.cb->on_start(r.cb->user, &r.info);
        if (r.info.router_epochs > 0) s = router_phase(&r, result, err);
    }
    if (!s) s = main_phase(&r, result, err);
    if (!s) s = r.be->synchronize(r.be, err);
    result->seconds = now_seconds() - r.started;
    if (r.be) result->peak_bytes = r.be->mem.peak_bytes;
    free(r.host_images);
    free(r.host_labels);
    free(r.host_pair);
    free(r.host_weight);
    free(r.host_selected);
    free(r.order);
    pmoe_two_layer_free(r.model);
    pmoe_backend_destroy(r.be);
    pmoe_dataset_free(r.train);
    pmoe_dataset_free(r.test);
    return s;
}
