/* image_set.h: a dataset made of image files (or decoded images), each
 * fitted to one input shape (data/image_fit.h) and kept as uint8 planes;
 * compose() gives (pixel / 255 - mean[c]) / std[c].
 *
 * The folder source builds its splits with it, and pmoe predict builds the
 * images it is given with the rule saved in the checkpoint, so both prepare
 * an image by the same code. */
#ifndef PMOE_DATA_IMAGE_SET_H
#define PMOE_DATA_IMAGE_SET_H

#include "data/dataset.h"
#include "data/image_file.h"

typedef struct pmoe_image_item {
    const char *path;        /* read when image is NULL; names the item in messages */
    const pmoe_image *image; /* already decoded (an IDX image), or NULL */
    int32_t label;
} pmoe_image_item;

typedef struct pmoe_image_rule {
    int channels;          /* 1 or 3; 0: 3 when any image taken is colour, else 1 */
    int height, width;     /* 0: the first image taken's size (fit must then be exact) */
    int fit;               /* pmoe_fit */
    int skip_bad;          /* 1: a file that cannot be read or fitted is skipped and counted */
    int compute_stats;     /* 1: mean and std per channel over the images taken */
    float mean[3], std[3]; /* used when compute_stats is 0 */
    int64_t limit;         /* take at most this many images (in item order) */
} pmoe_image_rule;

/* Builds the dataset of the first rule->limit usable items (classes as
 * given), filling in the rule's open values (channels, size, statistics).
 * *skipped counts the items skipped. Fails naming the item when one is bad
 * and skip_bad is 0, or when no item is usable. */
pmoe_status pmoe_image_set_open(const pmoe_image_item *items, int64_t count, int classes,
                                pmoe_image_rule *rule, pmoe_dataset **out, int64_t *skipped,
                                pmoe_error *err);

#endif
