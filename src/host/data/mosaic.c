/* mosaic.c: the mosaic task (the paper's "MNIST" experiment; docs/reproduction.md,
 * "Data").
 *
 * A mosaic is a grid x grid arrangement of IDX items (28x28 for MNIST and
 * Fashion-MNIST). One item, at a uniformly random cell, decides the label:
 * class data.pos_class gives label 1, data.neg_class label 0; every other
 * cell holds an item of any other class. Train mosaics take their items from
 * the IDX "train" split and test mosaics from "t10k", so no item is shared.
 *
 * A mosaic is held as its grid*grid item indices and the split's images stay
 * uint8, so N mosaics cost 4 g^2 N bytes, not 4 (28 g)^2 N; compose() pastes
 * the items on demand. Labels alternate (label 1 at even indices), which
 * balances every prefix; all random choices come from data.seed at open. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "data/dataset.h"
#include "data/idx.h"

enum { STREAM_MOSAIC_TRAIN = 0x305a0001, STREAM_MOSAIC_TEST = 0x305a0002 };

typedef struct mosaic {
    pmoe_idx_split split;
    int grid;
    int item_size;  /* rows == cols */
    int32_t *items; /* [count][grid * grid] indices into split.images */
} mosaic;

/* Asks for an item's bytes ahead of their use. */
static inline void prefetch_item(const mosaic *m, int32_t item, size_t item_bytes) {
    const char *src = (const char *)(m->split.images.data + (size_t)item * item_bytes);
    for (size_t at = 0; at < item_bytes; at += 64) __builtin_prefetch(src + at);
}

static void mosaic_compose(const pmoe_dataset *ds, int64_t index, float *out) {
    const mosaic *m = ds->impl;
    const int g = m->grid, s = m->item_size, width = ds->width;
    const size_t item_bytes = (size_t)s * s;
    const int32_t *items = m->items + (size_t)index * g * g;
    /* The items lie at random in a 47 MB array: each cell's bytes are asked
     * for two cells ahead, so their cache misses overlap the conversion
     * instead of each cell waiting for its own (the data phase was 40% of a
     * training run). */
    enum { AHEAD = 2 };
    for (int cell = 0; cell < AHEAD && cell < g * g; cell++)
        prefetch_item(m, items[cell], item_bytes);
    for (int cell = 0; cell < g * g; cell++) {
        if (cell + AHEAD < g * g) prefetch_item(m, items[cell + AHEAD], item_bytes);
        const uint8_t *src = m->split.images.data + (size_t)items[cell] * item_bytes;
        float *dst = out + (size_t)(cell / g) * s * width + (size_t)(cell % g) * s;
        for (int r = 0; r < s; r++)
            for (int c = 0; c < s; c++) dst[(size_t)r * width + c] = (float)src[r * s + c] / 255.0f;
    }
}

static int mosaic_patch_class(const pmoe_dataset *ds, int64_t index, int patch) {
    const mosaic *m = ds->impl;
    return m->split.labels.data[m->items[(size_t)index * m->grid * m->grid + patch]];
}

static void mosaic_destroy(pmoe_dataset *ds) {
    mosaic *m = ds->impl;
    if (m) {
        pmoe_idx_split_free(&m->split);
        free(m->items);
    }
    free(m);
    ds->impl = NULL;
}

/* The indices of the split's images whose class is `cls`, or (cls < 0) is
 * neither pos nor neg. */
static pmoe_status images_of(const pmoe_idx_split *split, int cls, int pos, int neg, int32_t **out,
                             int64_t *count, pmoe_error *err) {
    const uint8_t *labels = split->labels.data;
    const int64_t total = split->labels.dims[0];
    int64_t n = 0;
    for (int64_t i = 0; i < total; i++)
        n += cls >= 0 ? labels[i] == cls : (labels[i] != pos && labels[i] != neg);
    pmoe_status st = pmoe_data_malloc((void **)out, n, sizeof(int32_t), "mosaic item lists", err);
    if (st) return st;
    n = 0;
    for (int64_t i = 0; i < total; i++)
        if (cls >= 0 ? labels[i] == cls : (labels[i] != pos && labels[i] != neg))
            (*out)[n++] = (int32_t)i;
    *count = n;
    return PMOE_OK;
}

/* Draws every mosaic's items (the split is already loaded into m). */
static pmoe_status draw_mosaics(const pmoe_data_config *cfg, mosaic *m, pmoe_dataset *ds,
                                uint64_t stream, pmoe_error *err) {
    const int g = m->grid;
    int32_t *lists[3] = {NULL, NULL, NULL}; /* neg, pos, other */
    int64_t sizes[3] = {0, 0, 0};
    pmoe_status st = images_of(&m->split, cfg->neg_class, 0, 0, &lists[0], &sizes[0], err);
    if (!st) st = images_of(&m->split, cfg->pos_class, 0, 0, &lists[1], &sizes[1], err);
    if (!st)
        st = images_of(&m->split, -1, cfg->pos_class, cfg->neg_class, &lists[2], &sizes[2], err);
    if (st) goto done;
    for (int role = 0; role < 2; role++)
        if (sizes[role] == 0) {
            st = pmoe_fail(err, PMOE_ERR_CONFIG, "%s = %d: %s has no item of class %d",
                           role ? "data.pos_class" : "data.neg_class",
                           role ? cfg->pos_class : cfg->neg_class, m->split.labels_path,
                           role ? cfg->pos_class : cfg->neg_class);
            goto done;
        }
    if (g * g > 1 && sizes[2] == 0) {
        st = pmoe_fail(err, PMOE_ERR_CONFIG,
                       "data.grid = %d needs items of classes other than %d and %d, but %s "
                       "has none",
                       g, cfg->pos_class, cfg->neg_class, m->split.labels_path);
        goto done;
    }
    char what[64];
    snprintf(what, sizeof what, "the item indices of %lld mosaics", (long long)ds->count);
    st =
        pmoe_data_malloc((void **)&m->items, ds->count, sizeof(int32_t) * (size_t)g * g, what, err);
    if (st) goto done;

    pmoe_rng rng = pmoe_rng_make(cfg->seed, stream);
    for (int64_t i = 0; i < ds->count; i++) {
        int label = i % 2 == 0;
        int decisive = (int)pmoe_rng_next_below(&rng, (uint64_t)g * g);
        int32_t *items = m->items + (size_t)i * g * g;
        for (int cell = 0; cell < g * g; cell++) {
            int role = cell == decisive ? label : 2;
            items[cell] = lists[role][pmoe_rng_next_below(&rng, (uint64_t)sizes[role])];
        }
        ds->labels[i] = label;
        ds->decisive_patch[i] = decisive;
    }
done:
    for (int role = 0; role < 3; role++) free(lists[role]);
    return st;
}

static pmoe_status open_split(const pmoe_data_config *cfg, const char *prefix, int64_t count,
                              uint64_t stream, pmoe_dataset **out, pmoe_error *err) {
    pmoe_dataset *ds;
    pmoe_status st = pmoe_dataset_alloc(count, 1, sizeof(mosaic), mosaic_destroy, &ds, err);
    if (st) return st;
    mosaic *m = ds->impl;
    m->grid = cfg->grid;

    st = pmoe_idx_split_load(cfg->path, prefix, &m->split, err);
    if (!st) st = pmoe_idx_check_labels(&m->split, IDX_CLASSES, err);
    if (st) goto fail;
    const int64_t rows = m->split.images.dims[1], cols = m->split.images.dims[2];
    if (rows != cols) {
        /* decisive_patch indexes a grid of square patches. */
        st = pmoe_fail(err, PMOE_ERR_FORMAT,
                       "%s: items are %lld x %lld; the mosaic needs square items",
                       m->split.images_path, (long long)rows, (long long)cols);
        goto fail;
    }
    if (rows * cfg->grid > 46340) { /* keeps (g * rows)^2 and g^2 within int */
        st = pmoe_fail(err, PMOE_ERR_CONFIG,
                       "data.grid = %d: a mosaic of %lld-pixel items would be %lld pixels wide",
                       cfg->grid, (long long)rows, (long long)rows * cfg->grid);
        goto fail;
    }
    m->item_size = (int)rows;
    st = draw_mosaics(cfg, m, ds, stream, err);
    if (st) goto fail;

    char name[48];
    snprintf(ds->description, sizeof ds->description, "mosaic %dx%d of %s (%d vs %d)", cfg->grid,
             cfg->grid, pmoe_idx_dir_name(cfg->path, name, sizeof name), cfg->pos_class,
             cfg->neg_class);
    ds->channels = 1;
    ds->height = ds->width = m->item_size * cfg->grid;
    ds->classes = 1;
    ds->decisive_patch_size = m->item_size;
    ds->default_patch = m->item_size; /* one patch per item */
    ds->compose = mosaic_compose;
    ds->patch_class = mosaic_patch_class;
    ds->patch_classes = IDX_CLASSES;
    *out = ds;
    return PMOE_OK;
fail:
    pmoe_dataset_free(ds);
    return st;
}

pmoe_status pmoe_mosaic_open(const pmoe_data_config *cfg, pmoe_dataset **train, pmoe_dataset **test,
                             pmoe_error *err) {
    *train = *test = NULL;
    if (cfg->pos_class < 0 || cfg->pos_class >= IDX_CLASSES)
        return pmoe_fail(err, PMOE_ERR_CONFIG, "data.pos_class must be in [0, 9] (got %d)",
                         cfg->pos_class);
    if (cfg->neg_class < 0 || cfg->neg_class >= IDX_CLASSES)
        return pmoe_fail(err, PMOE_ERR_CONFIG, "data.neg_class must be in [0, 9] (got %d)",
                         cfg->neg_class);
    if (cfg->pos_class == cfg->neg_class)
        return pmoe_fail(err, PMOE_ERR_CONFIG,
                         "data.pos_class and data.neg_class must differ (both are %d)",
                         cfg->pos_class);
    if (cfg->grid < 1)
        return pmoe_fail(err, PMOE_ERR_CONFIG, "data.grid must be >= 1 (got %d)", cfg->grid);
    pmoe_status st = pmoe_data_check_sizes(cfg, err);
    if (st) return st;

    st = open_split(cfg, "train", cfg->train_size, STREAM_MOSAIC_TRAIN, train, err);
    if (!st) st = open_split(cfg, "t10k", cfg->test_size, STREAM_MOSAIC_TEST, test, err);
    if (!st && (*train)->height != (*test)->height) {
        const mosaic *a = (*train)->impl, *b = (*test)->impl;
        st = pmoe_fail(err, PMOE_ERR_FORMAT, "%s has %dx%d items but %s has %dx%d",
                       a->split.images_path, a->item_size, a->item_size, b->split.images_path,
                       b->item_size, b->item_size);
    }
    if (st) {
        pmoe_dataset_free(*train);
        pmoe_dataset_free(*test);
        *train = *test = NULL;
    }
    return st;
}
