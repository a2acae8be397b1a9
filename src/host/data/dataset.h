/* dataset.h: the one shape every data source takes.
 *
 * A dataset is N labelled samples of C x H x W floats. Samples are composed
 * on demand by compose() (a mosaic is held as its item indices, never as N
 * full images), so the memory is that of the sources, not of the samples.
 * compose() is a pure function of the index: it is called from many threads.
 *
 * Labels: binary tasks (classes == 1) use 1 for y = +1 and 0 for y = -1;
 * c-class tasks use 0..c-1. Tasks that know which patch decides the label
 * (the mosaic, the noisy task, the theory's data model) give its index in
 * the grid of decisive_patch_size x decisive_patch_size patches, so router
 * recall can be measured. */
#ifndef PMOE_DATA_DATASET_H
#define PMOE_DATA_DATASET_H

#include <stddef.h>
#include <stdint.h>

#include "pmoe/config.h"
#include "pmoe/status.h"

typedef struct pmoe_dataset pmoe_dataset;
struct pmoe_dataset {
    char description[128]; /* e.g. "mosaic 4x4 of fashion-mnist (1 vs 0)" */
    int channels, height, width;
    int classes; /* 1 = binary (logistic), else the number of classes */
    int64_t count;
    int32_t *labels;         /* [count] */
    int32_t *decisive_patch; /* [count], or NULL when the task has none */
    int decisive_patch_size; /* patch size at which decisive_patch is an index */
    int default_patch;       /* the patch size model.patch = 0 means; 0 = none */
    void *impl;
    /* Writes sample `index` to out[channels * height * width]. Thread safe. */
    void (*compose)(const pmoe_dataset *ds, int64_t index, float *out);
    void (*destroy)(pmoe_dataset *ds);
    /* Optional (NULL when patches have no class of their own): the class of
     * what patch `patch` (on the decisive_patch_size grid) of sample `index`
     * shows, in [0, patch_classes). Mosaic: the item's class; synthetic:
     * 0 for o2, 1 for o1, 2 + c for irrelevant cluster c. Thread safe. */
    int (*patch_class)(const pmoe_dataset *ds, int64_t index, int patch);
    int patch_classes;
    /* How an image file becomes a sample, so that pmoe predict prepares a
     * file exactly as training did (saved with checkpoints: input_spec.h):
     * fit is the size rule (data/image_fit.h; PMOE_FIT_NONE when samples
     * are not images), then sample = (pixel / 255 - mean[c]) / std[c]
     * (mean 0, std 1 unless the source normalises: the folder source
     * computes them on its training split). class_names[classes] (NULL:
     * the class indices) is freed with the dataset. pmoe_dataset_alloc sets
     * exact, 0, 1, NULL. */
    int fit;
    float mean[3], std[3];
    char **class_names;
};

/* Frees a dataset made by any of the openers below (NULL is fine): calls
 * destroy (which frees impl only), then frees labels, decisive_patch,
 * class_names and ds. */
void pmoe_dataset_free(pmoe_dataset *ds);

/* For data sources: a zeroed dataset with labels[count] (and
 * decisive_patch[count] when with_decisive) allocated; count >= 1. With
 * impl_bytes > 0 it also allocates a zeroed impl of that size and sets
 * destroy (which must free impl), so one call undoes everything on error. */
pmoe_status pmoe_dataset_alloc(int64_t count, int with_decisive, size_t impl_bytes,
                               void (*destroy)(pmoe_dataset *ds), pmoe_dataset **out,
                               pmoe_error *err);

/* For data sources: PMOE_ERR_CONFIG unless data.train_size and
 * data.test_size are both >= 1 (train checked first). */
pmoe_status pmoe_data_check_sizes(const pmoe_data_config *cfg, pmoe_error *err);

/* For data sources: malloc of count * elem_size bytes, failing with
 * PMOE_ERR_OOM naming `what` and the bytes asked (overflow included). A
 * buffer of PMOE_DATA_CHECKED_BYTES or more is first weighed against the
 * host memory available (core/host_memory.h): "out of host memory: loading
 * WHAT needs X MiB, only Y MiB available (SOURCE)" before anything is
 * allocated, where the kernel would otherwise kill the process as the
 * buffer fills. Every large buffer a source keeps comes from here. */
#define PMOE_DATA_CHECKED_BYTES ((size_t)1 << 20)
pmoe_status pmoe_data_malloc(void **out, int64_t count, size_t elem_size, const char *what,
                             pmoe_error *err);

/* The theory's data model; train and test come from disjoint RNG streams. */
pmoe_status pmoe_synthetic_open(const pmoe_data_config *cfg, pmoe_dataset **train,
                                pmoe_dataset **test, pmoe_error *err);

/* The mosaic of IDX items (Fashion-MNIST or MNIST) found under cfg->path:
 * train mosaics draw items from the IDX training split, test mosaics from the
 * test split. */
pmoe_status pmoe_mosaic_open(const pmoe_data_config *cfg, pmoe_dataset **train, pmoe_dataset **test,
                             pmoe_error *err);

/* Plain 10-class IDX classification (the first train_size / test_size images),
 * each padded with zeros, centred, to data.image_size x data.image_size when
 * that is not 0 (an odd margin puts the extra row / column bottom / right). */
pmoe_status pmoe_idx_dataset_open(const pmoe_data_config *cfg, pmoe_dataset **train,
                                  pmoe_dataset **test, pmoe_error *err);

/* The noisy-background task (noisy.c): an IDX item from cfg->path, shrunk
 * to half of a data.image_size canvas (0 = 32), pasted at a random place on
 * a background of other items' fragments or Gaussian noise (data.background);
 * 10 classes, the pasted item's. Train samples draw items from the IDX
 * training split, test samples from the test split. */
pmoe_status pmoe_noisy_open(const pmoe_data_config *cfg, pmoe_dataset **train, pmoe_dataset **test,
                            pmoe_error *err);

/* For tests and pictures: the pasted item of noisy sample `index` (its
 * index in the split) and its top-left corner on the canvas; -1 when ds is
 * not a noisy dataset or index is out of range. */
int pmoe_noisy_placement(const pmoe_dataset *ds, int64_t index, int *top, int *left);

/* CIFAR-10, binary version: data_batch_1.bin .. data_batch_5.bin (train, in
 * that order) and test_batch.bin under cfg->path; the first train_size /
 * test_size records, each 3 x 32 x 32 with values pixel / 255. */
pmoe_status pmoe_cifar_open(const pmoe_data_config *cfg, pmoe_dataset **train, pmoe_dataset **test,
                            pmoe_error *err);

/* One CIFAR-10 binary batch held in memory: count records of
 * PMOE_CIFAR_RECORD_BYTES bytes, each a label byte (0..9) then 1024 red,
 * 1024 green and 1024 blue bytes, rows top to bottom. */
#define PMOE_CIFAR_SIDE 32
#define PMOE_CIFAR_PIXEL_BYTES (3 * PMOE_CIFAR_SIDE * PMOE_CIFAR_SIDE)
#define PMOE_CIFAR_RECORD_BYTES (1 + PMOE_CIFAR_PIXEL_BYTES)
typedef struct pmoe_cifar_batch {
    int64_t count;
    uint8_t *records; /* [count][PMOE_CIFAR_RECORD_BYTES] */
} pmoe_cifar_batch;

/* Parses a whole batch file held in memory (origin names it in messages):
 * rejects a size that is not a whole number of records and any label above
 * 9, with the offset. Never reads outside bytes[0, size). */
pmoe_status pmoe_cifar_parse(const uint8_t *bytes, size_t size, const char *origin,
                             pmoe_cifar_batch *out, pmoe_error *err);
void pmoe_cifar_batch_free(pmoe_cifar_batch *batch);

/* Your own images (folder.c): cfg->path/train/<class>/ and
 * cfg->path/test/<class>/ holding PNG and JPEG files, classes sorted by
 * name; see folder.c for the rules. */
pmoe_status pmoe_folder_open(const pmoe_data_config *cfg, pmoe_dataset **train, pmoe_dataset **test,
                             pmoe_error *err);
/* What data.source = auto means for data.path: the mosaic when the IDX
 * training images are there, else the synthetic model. */
pmoe_data_source pmoe_data_auto_source(const char *path);

/* Dispatches on cfg->source; PMOE_DATA_AUTO picks the mosaic when the IDX
 * files exist under cfg->path and the synthetic model otherwise. *chosen says
 * which source was used. */
pmoe_status pmoe_data_open(const pmoe_data_config *cfg, pmoe_dataset **train, pmoe_dataset **test,
                           pmoe_data_source *chosen, pmoe_error *err);

#endif
