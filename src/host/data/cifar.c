/* cifar.c: CIFAR-10, binary version (the "cifar-10-batches-bin" folder).
 *
 * A batch file is a bare run of 3073-byte records: a label byte (0..9), then
 * the 1024 red, 1024 green and 1024 blue bytes of a 32 x 32 image, rows top
 * to bottom. That is already the channel-major C x H x W layout a dataset
 * composes, so a record is kept as read and compose() only scales it.
 *
 * The files carry no header, so the size is the only structure to check:
 * every file must hold a whole number of records, which is known from its
 * size before anything is allocated. train_size / test_size take the first
 * records in file order (data_batch_1 .. 5, then test_batch), so only the
 * records taken are read (and their labels checked), but every file's
 * presence and size is checked first: a broken download fails at once,
 * naming what is wrong. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/files.h"
#include "data/dataset.h"

#define CIFAR_CLASSES 10
#define CIFAR_FILES 6 /* five training batches, one test batch */
#define CIFAR_HINT                                                                                 \
    "get the binary version (cifar-10-binary.tar.gz) from "                                        \
    "https://www.cs.toronto.edu/~kriz/cifar.html and set data.path to its "                        \
    "cifar-10-batches-bin folder"

/* ---- checks shared by the in-memory parser and the file reader ---------- */

static pmoe_status check_size(const char *origin, int64_t size, pmoe_error *err) {
    const int64_t whole = size / PMOE_CIFAR_RECORD_BYTES * PMOE_CIFAR_RECORD_BYTES;
    if (size == 0)
        return pmoe_fail(err, PMOE_ERR_FORMAT, "%s: empty: expected %d-byte CIFAR-10 records",
                         origin, PMOE_CIFAR_RECORD_BYTES);
    if (size == whole) return PMOE_OK;
    return pmoe_fail(err, PMOE_ERR_FORMAT,
                     "%s: size %lld is not a multiple of the %d-byte CIFAR-10 record (1 label "
                     "+ 3072 pixel bytes): the last whole record ends at offset %lld and %lld "
                     "bytes follow it",
                     origin, (long long)size, PMOE_CIFAR_RECORD_BYTES, (long long)whole,
                     (long long)(size - whole));
}

/* records[count] are the first records of origin. */
static pmoe_status check_labels(const char *origin, const uint8_t *records, int64_t count,
                                pmoe_error *err) {
    for (int64_t i = 0; i < count; i++) {
        const uint8_t label = records[i * PMOE_CIFAR_RECORD_BYTES];
        if (label >= CIFAR_CLASSES)
            return pmoe_fail(err, PMOE_ERR_FORMAT,
                             "%s: offset %lld: label of record %lld is %d, expected 0..%d", origin,
                             (long long)(i * PMOE_CIFAR_RECORD_BYTES), (long long)i, label,
                             CIFAR_CLASSES - 1);
    }
    return PMOE_OK;
}

pmoe_status pmoe_cifar_parse(const uint8_t *bytes, size_t size, const char *origin,
                             pmoe_cifar_batch *out, pmoe_error *err) {
    memset(out, 0, sizeof *out);
    if (size > (size_t)INT64_MAX)
        return pmoe_fail(err, PMOE_ERR_FORMAT, "%s: %zu bytes is too large", origin, size);
    pmoe_status st = check_size(origin, (int64_t)size, err);
    if (st) return st;
    const int64_t count = (int64_t)(size / PMOE_CIFAR_RECORD_BYTES);
    st = check_labels(origin, bytes, count, err);
    if (st) return st;
    st = pmoe_data_malloc((void **)&out->records, count, PMOE_CIFAR_RECORD_BYTES,
                          "CIFAR-10 records", err);
    if (st) return st;
    memcpy(out->records, bytes, size);
    out->count = count;
    return PMOE_OK;
}

void pmoe_cifar_batch_free(pmoe_cifar_batch *batch) {
    if (!batch) return;
    free(batch->records);
    memset(batch, 0, sizeof *batch);
}

/* ---- the dataset -------------------------------------------------------- */

static void cifar_compose(const pmoe_dataset *ds, int64_t index, float *out) {
    const pmoe_cifar_batch *batch = ds->impl;
    const uint8_t *pixels = batch->records + (size_t)index * PMOE_CIFAR_RECORD_BYTES + 1;
    for (int i = 0; i < PMOE_CIFAR_PIXEL_BYTES; i++) out[i] = (float)pixels[i] / 255.0f;
}

static void cifar_destroy(pmoe_dataset *ds) {
    pmoe_cifar_batch_free(ds->impl);
    free(ds->impl);
    ds->impl = NULL;
}

typedef struct cifar_file {
    char path[1100];
    int64_t records;
} cifar_file;

/* Checks that every file is present and a whole number of records; the
 * message for missing files names all of them. */
static pmoe_status survey(const char *dir, const char *const *names, int count, cifar_file *files,
                          pmoe_error *err) {
    char missing[400] = "";
    int missing_count = 0;
    const char *sep = dir[0] ? "/" : "";
    for (int i = 0; i < count; i++) {
        int n = snprintf(files[i].path, sizeof files[i].path, "%s%s%s", dir, sep, names[i]);
        if (n < 0 || n >= (int)sizeof files[i].path)
            return pmoe_fail(err, PMOE_ERR_IO, "data.path: '%s' is longer than %d characters", dir,
                             (int)sizeof files[i].path - 20);
        struct stat sb;
        if (stat(files[i].path, &sb) != 0 || !S_ISREG(sb.st_mode)) {
            size_t used = strlen(missing);
            snprintf(missing + used, sizeof missing - used, "%s%s", missing_count ? ", " : "",
                     names[i]);
            missing_count++;
            continue;
        }
        pmoe_status st = check_size(files[i].path, (int64_t)sb.st_size, err);
        if (st) return st;
        files[i].records = (int64_t)sb.st_size / PMOE_CIFAR_RECORD_BYTES;
    }
    if (missing_count) {
        /* The Python version's batches have the same names without ".bin". */
        char pickle[1100];
        struct stat sb;
        snprintf(pickle, sizeof pickle, "%s%sdata_batch_1", dir, sep);
        const int python_version = stat(pickle, &sb) == 0;
        return pmoe_fail(err, PMOE_ERR_IO, "%s: missing CIFAR-10 %s %s%s; " CIFAR_HINT,
                         dir[0] ? dir : ".", missing_count == 1 ? "file" : "files", missing,
                         python_version ? " (this folder holds the Python version)" : "");
    }
    return PMOE_OK;
}

/* Reads the first `want` records of files[0..count) into dst, checking labels. */
static pmoe_status read_records(const cifar_file *files, int count, int64_t want, uint8_t *dst,
                                pmoe_error *err) {
    for (int i = 0; i < count && want > 0; i++) {
        const int64_t take = want < files[i].records ? want : files[i].records;
        if (take == 0) continue;
        FILE *f = pmoe_open_regular(files[i].path, NULL, NULL, err);
        if (!f) return PMOE_ERR_IO;
        const size_t bytes = (size_t)take * PMOE_CIFAR_RECORD_BYTES;
        const size_t got = fread(dst, 1, bytes, f);
        const int read_error = ferror(f);
        fclose(f);
        if (read_error)
            return pmoe_fail(err, PMOE_ERR_IO, "%s: read error at offset %zu", files[i].path, got);
        if (got < bytes) /* the file shrank since survey() */
            return pmoe_fail(err, PMOE_ERR_FORMAT,
                             "%s: truncated at offset %zu: expected %lld records (%zu bytes)",
                             files[i].path, got, (long long)take, bytes);
        pmoe_status st = check_labels(files[i].path, dst, take, err);
        if (st) return st;
        dst += bytes;
        want -= take;
    }
    return PMOE_OK;
}

static pmoe_status open_split(const pmoe_data_config *cfg, const cifar_file *files, int count,
                              int64_t size, const char *size_key, const char *split_name,
                              pmoe_dataset **out, pmoe_error *err) {
    *out = NULL;
    if (size < 1)
        return pmoe_fail(err, PMOE_ERR_CONFIG, "%s must be >= 1 (got %lld)", size_key,
                         (long long)size);
    int64_t available = 0;
    for (int i = 0; i < count; i++) available += files[i].records;
    if (size > available)
        return pmoe_fail(err, PMOE_ERR_CONFIG,
                         "%s = %lld, but the CIFAR-10 %s files in %s hold only %lld images",
                         size_key, (long long)size, split_name, cfg->path, (long long)available);

    pmoe_dataset *ds = NULL;
    pmoe_status st = pmoe_dataset_alloc(size, 0, sizeof(pmoe_cifar_batch), cifar_destroy, &ds, err);
    if (st) return st;
    pmoe_cifar_batch *batch = ds->impl;
    char what[64];
    snprintf(what, sizeof what, "CIFAR-10 %s (%lld images)", split_name, (long long)size);
    st = pmoe_data_malloc((void **)&batch->records, size, PMOE_CIFAR_RECORD_BYTES, what, err);
    if (!st) st = read_records(files, count, size, batch->records, err);
    if (st) {
        pmoe_dataset_free(ds);
        return st;
    }
    batch->count = size;
    snprintf(ds->description, sizeof ds->description, "CIFAR-10 %s (%lld images)", split_name,
             (long long)size);
    ds->channels = 3;
    ds->height = ds->width = PMOE_CIFAR_SIDE;
    ds->classes = CIFAR_CLASSES;
    ds->default_patch = 4; /* 8 x 8 patches of 4 x 4 pixels */
    ds->compose = cifar_compose;
    for (int64_t i = 0; i < size; i++)
        ds->labels[i] = batch->records[(size_t)i * PMOE_CIFAR_RECORD_BYTES];
    *out = ds;
    return PMOE_OK;
}

pmoe_status pmoe_cifar_open(const pmoe_data_config *cfg, pmoe_dataset **train, pmoe_dataset **test,
                            pmoe_error *err) {
    /* The training files in the order their records are taken, then the test file. */
    static const char *const names[CIFAR_FILES] = {"data_batch_1.bin", "data_batch_2.bin",
                                                   "data_batch_3.bin", "data_batch_4.bin",
                                                   "data_batch_5.bin", "test_batch.bin"};
    *train = *test = NULL;
    cifar_file files[CIFAR_FILES];
    memset(files, 0, sizeof files);
    pmoe_status st = survey(cfg->path, names, CIFAR_FILES, files, err);
    if (!st)
        st = open_split(cfg, files, CIFAR_FILES - 1, cfg->train_size, "data.train_size", "train",
                        train, err);
    if (!st)
        st = open_split(cfg, files + CIFAR_FILES - 1, 1, cfg->test_size, "data.test_size", "test",
                        test, err);
    if (st) {
        pmoe_dataset_free(*train);
        *train = NULL;
    }
    return st;
}
