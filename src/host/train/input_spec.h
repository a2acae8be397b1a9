/* input_spec.h: what a checkpoint records about its model's input, so that
 * pmoe predict prepares an image file exactly as training prepared the
 * data, and prints class names.
 *
 * Two metadata entries, written when the data are images:
 *   "input"        "channels=3 height=32 width=32 fit=crop_resize classes=10
 *                   default_patch=8 mean=m0,m1,m2 std=s0,s1,s2"
 *                  (floats printed with 9 digits: they read back bit for bit)
 *   "class_names"  one name per line, when the data have names.
 * A resumed run or an evaluation uses the saved mean and std, not ones
 * computed again, so a model always sees the normalisation it was trained
 * with. */
#ifndef PMOE_TRAIN_INPUT_SPEC_H
#define PMOE_TRAIN_INPUT_SPEC_H

#include <stddef.h>

#include "core/safetensors.h"
#include "data/dataset.h"

typedef struct pmoe_input_spec {
    int channels, height, width;
    int fit;     /* pmoe_fit */
    int classes; /* as the model has them: 1 for a binary task */
    int default_patch;
    float mean[3], std[3];
    char **class_names; /* [classes], or NULL */
} pmoe_input_spec;

/* Writes ds's "input" text to input and its names (malloc'd, or NULL) to
 * *names. Returns 0, writing nothing, when ds's samples are not images. */
int pmoe_input_spec_describe(const pmoe_dataset *ds, char *input, size_t input_size, char **names);

/* Reads a checkpoint's entries; PMOE_ERR_FORMAT naming the file when
 * "input" is absent or malformed. */
pmoe_status pmoe_input_spec_read(const pmoe_st_file *f, pmoe_input_spec *out, pmoe_error *err);
void pmoe_input_spec_free(pmoe_input_spec *spec);

/* Replaces ds's normalisation by the checkpoint's, where f has one and its
 * channel count is ds's. */
void pmoe_input_spec_adopt(const pmoe_st_file *f, pmoe_dataset *ds);

#endif
