/* idx.h: reading IDX files (the MNIST format), plain or gzip-compressed.
 *
 * An IDX file is a big-endian header (two zero bytes, a type byte, the number
 * of dimensions, then one 32-bit size per dimension) followed by the data.
 * pmoe reads unsigned-byte files only (type 0x08): images (3 dimensions) and
 * labels (1 dimension). Every malformed input is rejected with the file, the
 * byte offset and what was expected; nothing is read past what the header
 * promises or the file holds. */
#ifndef PMOE_DATA_IDX_H
#define PMOE_DATA_IDX_H

#include <stddef.h>
#include <stdint.h>

#include "pmoe/status.h"

typedef struct pmoe_idx {
    int ndim;        /* 1 or 3 */
    int64_t dims[3]; /* dims[0] = count */
    uint8_t *data;   /* product of dims bytes */
} pmoe_idx;

/* Reads path; gzip input is recognised by its magic bytes, not its name. */
pmoe_status pmoe_idx_read(const char *path, int expected_ndim, pmoe_idx *out, pmoe_error *err);
void pmoe_idx_free(pmoe_idx *idx);

/* Finds "<dir>/<base>" or "<dir>/<base>.gz"; writes the path found to out.
 * Returns PMOE_ERR_IO naming both candidates when neither exists. */
pmoe_status pmoe_idx_find(const char *dir, const char *base, char *out, int out_size,
                          pmoe_error *err);

/* The classes of the IDX datasets pmoe reads (Fashion-MNIST, MNIST): every
 * label is in [0, IDX_CLASSES). */
#define IDX_CLASSES 10

/* An images file and its labels file, checked for matching counts. */
typedef struct pmoe_idx_split {
    pmoe_idx images;                           /* count x rows x cols */
    pmoe_idx labels;                           /* count */
    char images_path[1100], labels_path[1100]; /* the files read, for messages */
} pmoe_idx_split;

/* Loads "train" or "t10k" images and labels from dir. */
pmoe_status pmoe_idx_split_load(const char *dir, const char *prefix, pmoe_idx_split *out,
                                pmoe_error *err);
void pmoe_idx_split_free(pmoe_idx_split *split);

/* Checks every label is in [0, classes); PMOE_ERR_FORMAT naming the labels
 * file and the first bad index otherwise. */
pmoe_status pmoe_idx_check_labels(const pmoe_idx_split *split, int classes, pmoe_error *err);

/* The name of the folder the IDX files are in, for a dataset's description:
 * the last component of dir (trailing slashes ignored), written to buf, or
 * "IDX items" when dir has none. */
const char *pmoe_idx_dir_name(const char *dir, char *buf, size_t buf_size);

#endif
