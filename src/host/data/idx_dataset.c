/* idx_dataset.c: plain 10-class classification on IDX images (MNIST,
 * Fashion-MNIST): the first train_size images of the "train" split and the
 * first test_size of "t10k", each 1 x rows x cols with values pixel / 255.
 *
 * The split stays uint8 in memory and compose() converts one image on
 * demand, so the dataset costs a quarter of a float copy. data.image_size
 * pads each image with zeros, centred, to a square canvas (28 -> 32 lets a
 * model that halves its maps three times, or cuts 4 x 4 patches of 8, take
 * MNIST); padding happens in compose(), so it costs no memory either. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/dataset.h"
#include "data/image_fit.h"
#include "data/idx.h"

typedef struct idx_images {
    pmoe_idx_split split;
    int rows, cols; /* as stored */
    int top, left;  /* where the stored image sits on the (padded) sample */
} idx_images;

static void idx_compose(const pmoe_dataset *ds, int64_t index, float *out) {
    const idx_images *m = ds->impl;
    const size_t pixels = (size_t)m->rows * m->cols;
    const uint8_t *src = m->split.images.data + (size_t)index * pixels;
    if (m->rows == ds->height && m->cols == ds->width) {
        for (size_t i = 0; i < pixels; i++) out[i] = (float)src[i] / 255.0f;
        return;
    }
    memset(out, 0, sizeof(float) * (size_t)ds->height * ds->width);
    for (int r = 0; r < m->rows; r++) {
        float *dst = out + (size_t)(m->top + r) * ds->width + m->left;
        for (int c = 0; c < m->cols; c++) dst[c] = (float)src[(size_t)r * m->cols + c] / 255.0f;
    }
}

static void idx_destroy(pmoe_dataset *ds) {
    idx_images *m = ds->impl;
    if (m) pmoe_idx_split_free(&m->split);
    free(m);
    ds->impl = NULL;
}

static pmoe_status open_split(const pmoe_data_config *cfg, const char *prefix, int64_t count,
                              const char *size_key, pmoe_dataset **out, pmoe_error *err) {
    if (count < 1)
        return pmoe_fail(err, PMOE_ERR_CONFIG, "%s must be >= 1 (got %lld)", size_key,
                         (long long)count);
    idx_images *m = calloc(1, sizeof *m);
    if (!m)
        return pmoe_fail(err, PMOE_ERR_OOM, "cannot allocate %zu bytes for a dataset", sizeof *m);
    pmoe_idx_split *split = &m->split;
    pmoe_status st = pmoe_idx_split_load(cfg->path, prefix, split, err);
    if (!st) st = pmoe_idx_check_labels(split, IDX_CLASSES, err);
    if (!st && count > split->labels.dims[0])
        st = pmoe_fail(err, PMOE_ERR_CONFIG, "%s = %lld, but %s holds only %lld images", size_key,
                       (long long)count, split->images_path, (long long)split->labels.dims[0]);
    if (!st && split->images.dims[1] * split->images.dims[2] > INT32_MAX)
        st = pmoe_fail(err, PMOE_ERR_FORMAT, "%s: images of %lld x %lld pixels are too large",
                       split->images_path, (long long)split->images.dims[1],
                       (long long)split->images.dims[2]);
    if (!st && cfg->image_size &&
        (cfg->image_size < split->images.dims[1] || cfg->image_size < split->images.dims[2]))
        st = pmoe_fail(err, PMOE_ERR_CONFIG,
                       "data.image_size = %d is smaller than the %lld x %lld images of %s",
                       cfg->image_size, (long long)split->images.dims[1],
                       (long long)split->images.dims[2], split->images_path);
    pmoe_dataset *ds = NULL;
    if (!st) st = pmoe_dataset_alloc(count, 0, 0, NULL, &ds, err);
    if (st) {
        pmoe_idx_split_free(split);
        free(m);
        return st;
    }
    m->rows = (int)split->images.dims[1];
    m->cols = (int)split->images.dims[2];
    ds->impl = m;
    ds->destroy = idx_destroy;
    snprintf(ds->description, sizeof ds->description, "IDX %s (%lld images)", prefix,
             (long long)count);
    ds->channels = 1;
    ds->fit = cfg->image_size ? PMOE_FIT_PAD : PMOE_FIT_EXACT;
    ds->height = cfg->image_size ? cfg->image_size : m->rows;
    ds->width = cfg->image_size ? cfg->image_size : m->cols;
    m->top = (ds->height - m->rows) / 2;
    m->left = (ds->width - m->cols) / 2;
    ds->classes = IDX_CLASSES;
    /* 4 x 4 patches (7 for a 28 x 28 MNIST image, 8 padded to 32); none
     * when the side does not allow it. */
    ds->default_patch = ds->height == ds->width && ds->width % 4 == 0 ? ds->width / 4 : 0;
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
    if (!st) {
        const idx_images *a = (*train)->impl, *b = (*test)->impl;
        if (a->rows != b->rows || a->cols != b->cols)
            st = pmoe_fail(err, PMOE_ERR_FORMAT, "%s has %dx%d images but %s has %dx%d",
                           a->split.images_path, a->rows, a->cols, b->split.images_path, b->rows,
                           b->cols);
    }
    if (st) {
        pmoe_dataset_free(*train);
        pmoe_dataset_free(*test);
        *train = *test = NULL;
    }
    return st;
}
