/* predict.c: pmoe_predict (include/pmoe/predict.h).
 *
 * The files become one dataset through the same code the folder source
 * trains with (data/image_set.c), under the rule the checkpoint saved, so
 * an image is prepared as its training data were. The model then runs its
 * evaluation forward pass (batch norm on running statistics) batch by
 * batch, and each row of logits becomes a class and its probability: the
 * largest logit (the first of equal ones, as evaluation counts accuracy)
 * and its softmax share, or for a binary model sign(f) and its sigmoid.
 * Asked for the routing, it copies each batch's picks and gates back and
 * keeps them as pmoe route keeps the test set's (train.h's pmoe_routing),
 * with the images shown as read: the picture is of the files, not of their
 * normalised values. */
#include "pmoe/predict.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "data/idx.h"
#include "data/image_fit.h"
#include "data/image_set.h"
#include "model/model.h"
#include "train/checkpoint.h"
#include "train/class_figures.h"
#include "train/input_spec.h"
#include "train/resolve.h"

enum { PREDICT_BATCH = 32 };

/* The inputs: image files as they are, IDX files opened into images. */
typedef struct inputs {
    pmoe_image_item *items;
    char **names;       /* per item: "FILE[i]" for IDX images, else NULL (the path) */
    pmoe_image *images; /* per item: the IDX image, or unused */
    pmoe_idx *idx;      /* per file */
    int files;
    int64_t count;
} inputs;

static void inputs_free(inputs *in) {
    for (int64_t i = 0; i < in->count; i++) free(in->names[i]);
    for (int f = 0; f < in->files; f++) pmoe_idx_free(&in->idx[f]);
    free(in->items);
    free(in->names);
    free(in->images);
    free(in->idx);
    memset(in, 0, sizeof *in);
}

static int looks_like_image(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return 1; /* the image reader names the failure */
    uint8_t head[8];
    const size_t got = fread(head, 1, sizeof head, f);
    fclose(f);
    return pmoe_image_sniff(head, got) || got < 4;
}

static pmoe_status open_inputs(const char *const *files, int file_count, inputs *in,
                               pmoe_error *err) {
    memset(in, 0, sizeof *in);
    in->idx = calloc((size_t)(file_count ? file_count : 1), sizeof *in->idx);
    if (!in->idx) return pmoe_fail(err, PMOE_ERR_OOM, "out of memory");
    in->files = file_count;
    int64_t total = 0;
    for (int f = 0; f < file_count; f++) {
        if (looks_like_image(files[f])) {
            total++;
            continue;
        }
        pmoe_error idx_err;
        if (pmoe_idx_read(files[f], 3, &in->idx[f], &idx_err) != PMOE_OK)
            return pmoe_fail(err, PMOE_ERR_FORMAT, "%s: not a PNG, JPEG or IDX image file (%s)",
                             files[f], idx_err.message);
        total += in->idx[f].dims[0];
    }
    in->items = calloc((size_t)(total ? total : 1), sizeof *in->items);
    in->names = calloc((size_t)(total ? total : 1), sizeof *in->names);
    in->images = calloc((size_t)(total ? total : 1), sizeof *in->images);
    if (!in->items || !in->names || !in->images)
        return pmoe_fail(err, PMOE_ERR_OOM, "out of memory");
    for (int f = 0; f < file_count; f++) {
        const pmoe_idx *x = &in->idx[f];
        if (!x->data) {
            in->items[in->count++] = (pmoe_image_item){files[f], NULL, 0};
            continue;
        }
        const size_t pixels = (size_t)x->dims[1] * x->dims[2];
        for (int64_t i = 0; i < x->dims[0]; i++) {
            const size_t len = strlen(files[f]) + 24;
            char *name = malloc(len);
            if (!name) return pmoe_fail(err, PMOE_ERR_OOM, "out of memory");
            snprintf(name, len, "%s[%lld]", files[f], (long long)i);
            in->names[in->count] = name;
            in->images[in->count] =
                (pmoe_image){(int)x->dims[2], (int)x->dims[1], 1, x->data + (size_t)i * pixels};
            in->items[in->count] = (pmoe_image_item){name, &in->images[in->count], 0};
            in->count++;
        }
    }
    return PMOE_OK;
}

/* Class (evaluation's rule: class_figures.h) and probability from one row
 * of logits. */
static void decide(const float *z, int classes, int *best, double *probability) {
    const int b = pmoe_predicted_class(z, classes);
    *best = b;
    if (classes == 1) {
        const double p = 1.0 / (1.0 + exp(-(double)z[0]));
        *probability = b ? p : 1.0 - p;
        return;
    }
    double denom = 0.0;
    for (int c = 0; c < classes; c++) denom += exp((double)z[c] - (double)z[b]);
    *probability = 1.0 / denom;
}

/* The routing's shape and buffers, for the model m on the images of ds. */
static pmoe_status routing_open(const pmoe_config *cfg, const pmoe_model *m, const pmoe_dataset *ds,
                                int patch, int samples, pmoe_routing *out, pmoe_error *err) {
    const pmoe_routing_view v = pmoe_model_routing(m);
    memset(out, 0, sizeof *out);
    if (!v.routes)
        return pmoe_fail(err, PMOE_ERR_CONFIG, "model.type = %s has no router to draw",
                         pmoe_model_type_name(cfg->model.type));
    const int input_patch = pmoe_input_patch(cfg, patch);
    pmoe_run_info *in = &out->info;
    snprintf(in->data, sizeof in->data, "the images given to pmoe predict");
    snprintf(in->model, sizeof in->model, "%s", pmoe_model_type_name(cfg->model.type));
    in->test_size = ds->count;
    in->patches = v.patch_count;
    in->patch_dim = v.patch_dim;
    in->patch = patch;
    in->classes = m->classes;
    in->experts = v.experts;
    in->topl = v.topl;
    in->ranks = 1;
    out->channels = ds->channels;
    out->height = ds->height;
    out->width = ds->width;
    out->patch = input_patch;
    out->grid_rows = ds->height / input_patch;
    out->grid_cols = ds->width / input_patch;
    out->experts = v.experts;
    out->topl = v.topl;
    out->classes = m->classes;
    out->samples = (int)(samples < ds->count ? samples : ds->count);
    out->test_size = ds->count;
    out->test_acc = -1.0;
    out->router_recall = -1.0;
    const size_t per = (size_t)ds->channels * ds->height * ds->width;
    const size_t kl = (size_t)v.experts * v.topl, n = (size_t)out->samples;
    out->images = malloc(sizeof(float) * per * (n ? n : 1));
    out->labels = malloc(sizeof(int32_t) * (n ? n : 1));
    out->decisive = malloc(sizeof(int32_t) * (n ? n : 1));
    out->selected = malloc(sizeof(int32_t) * kl * (n ? n : 1));
    out->gate = malloc(sizeof(float) * kl * (n ? n : 1));
    out->by_position = calloc((size_t)v.experts * v.patch_count, sizeof(int64_t));
    if (!out->images || !out->labels || !out->decisive || !out->selected || !out->gate ||
        !out->by_position)
        return pmoe_fail(err, PMOE_ERR_OOM, "out of memory for the routing of %d images",
                         out->samples);
    return PMOE_OK;
}

/* One batch's picks: counted by position for every image, kept whole for
 * the first out->samples (images as read: the normalisation undone). */
static pmoe_status routing_add(const pmoe_model *m, const pmoe_dataset *ds, int64_t start,
                               int64_t b, const float *host, const pmoe_prediction *preds,
                               int32_t *selected, pmoe_routing *out, pmoe_error *err) {
    const pmoe_routing_view v = pmoe_model_routing(m);
    const int64_t kl = (int64_t)v.experts * v.topl;
    pmoe_status s =
        m->be->copy_out(m->be, selected, v.selected, sizeof(int32_t) * (size_t)(b * kl), err);
    if (s) return s;
    for (int64_t i = 0; i < b * kl; i++)
        out->by_position[(i % kl) / v.topl * v.patch_count + selected[i]]++;
    const int64_t kept =
        start < out->samples ? (out->samples - start < b ? out->samples - start : b) : 0;
    if (kept <= 0) return PMOE_OK;
    s = m->be->copy_out(m->be, out->gate + start * kl, v.gate, sizeof(float) * (size_t)(kept * kl),
                        err);
    if (s) return s;
    memcpy(out->selected + start * kl, selected, sizeof(int32_t) * (size_t)(kept * kl));
    const int64_t plane = (int64_t)ds->height * ds->width, per = ds->channels * plane;
    for (int64_t i = 0; i < kept; i++) {
        out->labels[start + i] = preds[start + i].class_index;
        out->decisive[start + i] = -1;
        for (int c = 0; c < ds->channels; c++)
            for (int64_t p = 0; p < plane; p++) {
                const int64_t at = i * per + c * plane + p;
                out->images[start * per + at] = host[at] * ds->std[c] + ds->mean[c];
            }
    }
    return PMOE_OK;
}

static pmoe_status run_model(const pmoe_config *cfg, const pmoe_st_file *file,
                             const pmoe_input_spec *spec, const pmoe_dataset *ds,
                             const pmoe_predict_options *options, pmoe_prediction *out,
                             pmoe_error *err) {
    pmoe_backend *be = NULL;
    pmoe_model *m = NULL;
    float *host = NULL, *logits = NULL;
    int32_t *selected = NULL;
    int patch = 0;
    const int64_t batch = ds->count < PREDICT_BATCH ? ds->count : PREDICT_BATCH;
    const size_t per = (size_t)ds->channels * ds->height * ds->width;
    const char *device = options && options->device ? options->device : cfg->train.device;
    pmoe_routing *routing = options ? options->routing : NULL;
    pmoe_status s = pmoe_resolve_patch(cfg, ds, &patch, err);
    if (!s) s = pmoe_backend_create(device, cfg->train.threads, &be, err);
    if (!s) s = pmoe_backend_set_precision(be, (pmoe_precision)cfg->train.precision, err);
    if (!s)
        s = pmoe_model_create(be, cfg, ds->channels, ds->height, ds->width, patch, spec->classes,
                              batch, &m, err);
    if (!s) s = pmoe_checkpoint_restore(file, m, NULL, err);
    if (!s && routing) s = routing_open(cfg, m, ds, patch, options->route_samples, routing, err);
    if (!s) {
        host = malloc(sizeof(float) * per * (size_t)batch);
        logits = malloc(sizeof(float) * (size_t)(batch * spec->classes));
        if (routing)
            selected = malloc(sizeof(int32_t) * (size_t)(batch * routing->experts * routing->topl));
        if (!host || !logits || (routing && !selected))
            s = pmoe_fail(err, PMOE_ERR_OOM, "out of memory for a batch");
    }
    if (!s) m->training = 0;
    const pmoe_progress *progress = options ? options->progress : NULL;
    if (!s) pmoe_progress_report(progress, "images", 0, ds->count);
    for (int64_t start = 0; !s && start < ds->count; start += batch) {
        const int64_t b = ds->count - start < batch ? ds->count - start : batch;
        for (int64_t i = 0; i < b; i++) ds->compose(ds, start + i, host + (size_t)i * per);
        s = be->copy_in(be, m->images, host, sizeof(float) * per * (size_t)b, err);
        if (s) break;
        pmoe_model_forward(m, b);
        s = be->copy_out(be, logits, m->logits, sizeof(float) * (size_t)(b * spec->classes), err);
        for (int64_t i = 0; !s && i < b; i++) {
            pmoe_prediction *p = &out[start + i];
            decide(logits + i * spec->classes, spec->classes, &p->class_index, &p->probability);
            if (spec->class_names)
                snprintf(p->class_name, sizeof p->class_name, "%s",
                         spec->class_names[p->class_index]);
            else snprintf(p->class_name, sizeof p->class_name, "%d", p->class_index);
        }
        if (!s && routing) s = routing_add(m, ds, start, b, host, out, selected, routing, err);
        pmoe_progress_report(progress, "images", start + b, ds->count);
    }
    if (!s) s = be->synchronize(be, err);
    if (s && routing) pmoe_routing_free(routing);
    free(host);
    free(logits);
    free(selected);
    pmoe_model_free(m);
    pmoe_backend_destroy(be);
    return s;
}

pmoe_status pmoe_predict(const char *checkpoint, const char *const *files, int file_count,
                         const pmoe_predict_options *options, pmoe_prediction **out, int64_t *count,
                         pmoe_error *err) {
    *out = NULL;
    *count = 0;
    if (options && options->routing) memset(options->routing, 0, sizeof *options->routing);
    if (file_count < 1) return pmoe_fail(err, PMOE_ERR_CONFIG, "predict: no image files given");
    pmoe_st_file file;
    pmoe_status s = pmoe_checkpoint_open(checkpoint, &file, err);
    if (s) return s;
    pmoe_config cfg;
    pmoe_input_spec spec;
    memset(&spec, 0, sizeof spec);
    inputs in;
    memset(&in, 0, sizeof in);
    pmoe_dataset *ds = NULL;
    pmoe_prediction *preds = NULL;
    s = pmoe_checkpoint_config(&file, &cfg, err);
    if (!s) s = pmoe_input_spec_read(&file, &spec, err);
    if (!s) s = open_inputs(files, file_count, &in, err);
    if (!s) {
        pmoe_image_rule rule = {spec.channels,
                                spec.height,
                                spec.width,
                                spec.fit,
                                0,
                                0,
                                {spec.mean[0], spec.mean[1], spec.mean[2]},
                                {spec.std[0], spec.std[1], spec.std[2]},
                                in.count};
        int64_t skipped = 0;
        s = pmoe_image_set_open(in.items, in.count, spec.classes, &rule, &ds, &skipped, err);
    }
    if (!s) {
        ds->default_patch = spec.default_patch;
        preds = calloc((size_t)ds->count, sizeof *preds);
        if (!preds)
            s = pmoe_fail(err, PMOE_ERR_OOM, "out of memory for %lld predictions",
                          (long long)ds->count);
    }
    for (int64_t i = 0; !s && i < ds->count; i++)
        snprintf(preds[i].source, sizeof preds[i].source, "%s", in.items[i].path);
    if (!s) s = run_model(&cfg, &file, &spec, ds, options, preds, err);
    if (!s) {
        *out = preds;
        *count = ds->count;
    } else {
        free(preds);
    }
    pmoe_dataset_free(ds);
    inputs_free(&in);
    pmoe_input_spec_free(&spec);
    pmoe_safetensors_free(&file);
    return s;
}
