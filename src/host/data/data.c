/* data.c: what every data source shares (allocation, freeing) and the choice
 * of source.
 *
 * Ownership rule: a source's destroy() frees only its impl; labels,
 * decisive_patch and the struct itself are freed here, so every source
 * allocates them the same way, through pmoe_dataset_alloc. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/host_memory.h"
#include "data/dataset.h"
#include "data/image_fit.h"
#include "data/idx.h"

pmoe_status pmoe_data_malloc(void **out, int64_t count, size_t elem_size, const char *what,
                             pmoe_error *err) {
    *out = NULL;
    if (count < 0 || (elem_size && (uint64_t)count > (uint64_t)SIZE_MAX / elem_size))
        return pmoe_fail(err, PMOE_ERR_OOM, "cannot allocate %lld x %zu bytes for %s",
                         (long long)count, elem_size, what);
    size_t bytes = (size_t)count * elem_size;
    /* Linux grants more than it has and kills when the pages are filled, so
     * a large buffer is weighed first (a small one fails at malloc, if at all) */
    if (bytes >= PMOE_DATA_CHECKED_BYTES) {
        pmoe_status s = pmoe_host_memory_check((int64_t)bytes, what, err);
        if (s) return s;
    }
    *out = malloc(bytes ? bytes : 1);
    if (!*out) return pmoe_fail(err, PMOE_ERR_OOM, "cannot allocate %zu bytes for %s", bytes, what);
    return PMOE_OK;
}

pmoe_status pmoe_data_check_sizes(const pmoe_data_config *cfg, pmoe_error *err) {
    if (cfg->train_size < 1)
        return pmoe_fail(err, PMOE_ERR_CONFIG, "data.train_size must be >= 1 (got %lld)",
                         (long long)cfg->train_size);
    if (cfg->test_size < 1)
        return pmoe_fail(err, PMOE_ERR_CONFIG, "data.test_size must be >= 1 (got %lld)",
                         (long long)cfg->test_size);
    return PMOE_OK;
}

pmoe_status pmoe_dataset_alloc(int64_t count, int with_decisive, size_t impl_bytes,
                               void (*destroy)(pmoe_dataset *ds), pmoe_dataset **out,
                               pmoe_error *err) {
    *out = NULL;
    pmoe_dataset *ds = calloc(1, sizeof *ds);
    if (!ds)
        return pmoe_fail(err, PMOE_ERR_OOM, "cannot allocate %zu bytes for a dataset", sizeof *ds);
    ds->count = count;
    ds->fit = PMOE_FIT_EXACT;
    for (int c = 0; c < 3; c++) ds->std[c] = 1.0f;
    char what[80];
    snprintf(what, sizeof what, "the labels%s of %lld samples",
             with_decisive ? " and decisive patches" : "", (long long)count);
    const int64_t both = count < INT64_MAX / 8 ? count * 2 * (int64_t)sizeof(int32_t) : INT64_MAX;
    pmoe_status st = with_decisive && both >= (int64_t)PMOE_DATA_CHECKED_BYTES
                         ? pmoe_host_memory_check(both, what, err) /* both before either fills */
                         : PMOE_OK;
    if (!st) st = pmoe_data_malloc((void **)&ds->labels, count, sizeof(int32_t), what, err);
    if (!st && with_decisive)
        st = pmoe_data_malloc((void **)&ds->decisive_patch, count, sizeof(int32_t), what, err);
    if (!st && impl_bytes > 0) {
        ds->impl = calloc(1, impl_bytes);
        if (!ds->impl)
            st =
                pmoe_fail(err, PMOE_ERR_OOM, "cannot allocate %zu bytes for a dataset", impl_bytes);
        else ds->destroy = destroy;
    }
    if (st) {
        pmoe_dataset_free(ds);
        return st;
    }
    *out = ds;
    return PMOE_OK;
}

void pmoe_dataset_free(pmoe_dataset *ds) {
    if (!ds) return;
    if (ds->destroy) ds->destroy(ds);
    free(ds->labels);
    free(ds->decisive_patch);
    if (ds->class_names)
        for (int c = 0; c < ds->classes; c++) free(ds->class_names[c]);
    free(ds->class_names);
    free(ds);
}

pmoe_data_source pmoe_data_auto_source(const char *path) {
    char found[1100];
    return pmoe_idx_find(path, "train-images-idx3-ubyte", found, (int)sizeof found, NULL) == PMOE_OK
               ? PMOE_DATA_MOSAIC
               : PMOE_DATA_SYNTHETIC;
}

pmoe_status pmoe_data_open(const pmoe_data_config *cfg, pmoe_dataset **train, pmoe_dataset **test,
                           pmoe_data_source *chosen, pmoe_error *err) {
    *train = *test = NULL;
    pmoe_data_source source = cfg->source;
    if (source == PMOE_DATA_AUTO) source = pmoe_data_auto_source(cfg->path);
    if (chosen) *chosen = source;
    switch (source) {
    case PMOE_DATA_SYNTHETIC: return pmoe_synthetic_open(cfg, train, test, err);
    case PMOE_DATA_MOSAIC: return pmoe_mosaic_open(cfg, train, test, err);
    case PMOE_DATA_IDX: return pmoe_idx_dataset_open(cfg, train, test, err);
    case PMOE_DATA_CIFAR10: return pmoe_cifar_open(cfg, train, test, err);
    case PMOE_DATA_NOISY: return pmoe_noisy_open(cfg, train, test, err);
    case PMOE_DATA_FOLDER: return pmoe_folder_open(cfg, train, test, err);
    case PMOE_DATA_AUTO: break;
    }
    return pmoe_fail(err, PMOE_ERR_CONFIG, "data.source: unknown source %d", (int)cfg->source);
}
