/* idx_dataset.c: plain 10-class classification on IDX images (MNIST,
 * Fashion-MNIST): the first train_size images of the "train" split and the
 * first test_size of "t10k", each 1 x rows x cols with values pixel / 255.
 *
 * The split stays uint8 in memory and compose() converts one image on
 * demand, so the dataset costs a quarter of a float copy. */
#include <stdio.h>
#include <stdlib.h>

#include "data/dataset.h"
#include "data/idx.h"

#define IDX_CLASSES 10

static void idx_compose(const pmoe_dataset *ds, int64_t index, float *out) {
    const pmoe_idx_split *split = ds->impl;
    const size_t pixels = (size_t)ds->height * ds->width;
    const uint8_t *src = split->images.data + (size_t)index * pixels;
    for (size_t i = 0; i < pixels; i++) out[i] = (float)src[i] / 255.0f;
}

static void idx_destroy(pmoe_dataset *ds) {
    pmoe_idx_split_free(ds->impl);
    free(ds->impl);
    ds->impl = NULL;
}

static pmoe_status open_split(const pmoe_data_config *cfg, const char *prefix, int64_t count,
                              const char *size_key, pmoe_dataset **out, pmoe_error *err) {
    if (count < 1)
        return pmoe_fail(err, PMOE_ERR_CONFIG, "%s must be >= 1 (got %lld)", size_key,
                         (long long)count);
    pmoe_idx_split *split = calloc(1, sizeof *split);
    if (!split)
        return pmoe_fail(err, PMOE_ERR_OOM, "cannot allocate %zu bytes for a dataset",
                         sizeof *split);
    pmoe_status st = pmoe_idx_split_load(cfg->path, prefix, split, err);
    if (!st) st = pmoe_idx_check_labels(split, IDX_CLASSES, err);
    if (!st && count > split->labels.dims[0])
        st = pmoe_fail(err, PMOE_ERR_CONFIG, "%s = %lld, but %s holds only %lld images",
                       size_key, (long long)count, split->images_path,
                       (long long)split->labels.dims[0]);
    if (!st && split->images.dims[1] * split->images.dims[2] > INT32_MAX)
        st = pmoe_fail(err, PMOE_ERR_FORMAT, "%s: images of %lld x %lld pixels are too large",
                       split->images_path, (long long)split->images.dims[1],
                       (long long)split->images.dims[2]);
    pmoe_dataset *ds = NULL;
    if (!st) st = pmoe_dataset_alloc(count, 0, 0, NULL, &ds, err);
    if (st) {
        pmoe_idx_split_free(split);
        free(split);
        return st;
    }
    ds->impl = split;
    ds->destroy = idx_destroy;
    snprintf(ds->description, sizeof ds->description, "IDX %s (%lld images)", prefix,
             (long long)count);
    ds->channels = 1;
    ds->height = (int)split->images.dims[1];
    ds->width = (int)split->images.dims[2];
    ds->classes = IDX_CLASSES;
    ds->default_patch = 7; /* 4 x 4 patches of a 28 x 28 MNIST image */
    ds->compose = idx_compose;
    for (int64_t i = 0; i < count; i++) ds->labels[i] = split->labels.data[i];
    *out = ds;
    return PMOE_OK;
}

pmoe_status pmoe_idx_dataset_open(const pmoe_data_config *cfg, pmoe_dataset **train,
                                  pmoe_dataset **test, pmoe_error *err) {
    *train = *test = NULL;
    pmoe_status st = open_split(cfg, "train", cfg->train_size, "data.train_size", train, err);
    if (!st) st = open_split(cfg, "t10k", cfg->test_size, "data.test_size", test, err);
    if (!st && ((*train)->height != (*test)->height || (*train)->width != (*test)->width)) {
        const pmoe_idx_split *a = (*train)->impl, *b = (*test)->impl;
        st = pmoe_fail(err, PMOE_ERR_FORMAT, "%s has %dx%d images but %s has %dx%d",
                       a->images_path, (*train)->height, (*train)->width, b->images_path,
                       (*test)->height, (*test)->width);
    }
    if (st) {
        pmoe_dataset_free(*train);
        pmoe_dataset_free(*test);
        *train = *test = NULL;
    }
    return st;
}
