/* safetensors.h: reading and writing the safetensors format.
 *
 * A file is an 8-byte little-endian header length N, N bytes of JSON (one
 * entry per tensor: dtype, shape, data_offsets into the data that follows,
 * plus "__metadata__", a map of strings), then the raw little-endian tensor
 * data. pmoe writes float32 ("F32") tensors only, so PyTorch users open its
 * checkpoints with the safetensors package. Parsing never trusts the file:
 * every length and offset is checked against the bytes present, and a bad
 * file is rejected with its name, the offset and what was expected. Writing
 * is atomic: a temporary file is written, flushed to disk and renamed over
 * the target, and the folder is synced, so a crash or a full disk leaves
 * the previous file whole. */
#ifndef PMOE_CORE_SAFETENSORS_H
#define PMOE_CORE_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "pmoe/status.h"

#define PMOE_ST_MAX_DIMS 5
#define PMOE_ST_MAX_NAME 128

typedef struct pmoe_st_entry { /* a tensor to write */
    const char *name;
    int ndim;
    int64_t shape[PMOE_ST_MAX_DIMS];
    const float *data;
} pmoe_st_entry;

typedef struct pmoe_st_meta { /* a metadata pair to write */
    const char *key;
    const char *value;
} pmoe_st_meta;

typedef struct pmoe_st_tensor { /* a tensor found in a file */
    char name[PMOE_ST_MAX_NAME];
    int ndim;
    int64_t shape[PMOE_ST_MAX_DIMS];
    int64_t count;     /* elements */
    const float *data; /* into the file's buffer (suitably aligned copy) */
} pmoe_st_tensor;

typedef struct pmoe_st_file {
    char origin[512];
    pmoe_st_tensor *tensors;
    int tensor_count;
    char **meta_keys, **meta_values;
    int meta_count;
    float *data; /* all tensor data, 4-byte aligned */
    int64_t data_bytes;
} pmoe_st_file;

/* Writes path atomically. */
pmoe_status pmoe_safetensors_write(const char *path, const pmoe_st_entry *tensors, int tensor_count,
                                   const pmoe_st_meta *meta, int meta_count, pmoe_error *err);

/* Parses a whole file held in memory; origin names it in messages. */
pmoe_status pmoe_safetensors_parse(const uint8_t *bytes, size_t size, const char *origin,
                                   pmoe_st_file *out, pmoe_error *err);
pmoe_status pmoe_safetensors_read(const char *path, pmoe_st_file *out, pmoe_error *err);
void pmoe_safetensors_free(pmoe_st_file *f);

/* NULL when absent. */
const pmoe_st_tensor *pmoe_safetensors_find(const pmoe_st_file *f, const char *name);
const char *pmoe_safetensors_meta(const pmoe_st_file *f, const char *key);

#endif
