/* predict.h: classifying image files with a trained model.
 *
 * The checkpoint says how its training data became the model's input
 * (channels, size rule, per-channel mean and std, class names: see
 * src/host/train/input_spec.h), and every file goes through exactly that.
 * Inputs are PNG or JPEG files, or IDX image files (each image in one is a
 * prediction of its own). */
#ifndef PMOE_PREDICT_H
#define PMOE_PREDICT_H

#include <stdint.h>

#include "pmoe/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct pmoe_prediction {
    char source[1100];    /* the file, or "FILE[i]" for image i of an IDX file */
    int class_index;      /* 0-based; for a binary model 1 is y = +1 */
    char class_name[128]; /* the training folder's name, or the index */
    double probability;   /* the model's probability of that class */
} pmoe_prediction;

/* Predicts every image of files[0..file_count); *out (free() it) gets
 * *count predictions in order. device: NULL for the checkpoint's
 * train.device. Fails naming the file that cannot be read or fitted. */
pmoe_status pmoe_predict(const char *checkpoint, const char *const *files, int file_count,
                         const char *device, pmoe_prediction **out, int64_t *count,
                         pmoe_error *err);

#ifdef __cplusplus
}
#endif
#endif
