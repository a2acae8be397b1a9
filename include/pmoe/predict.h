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

#include "pmoe/progress.h"
#include "pmoe/status.h"
#include "pmoe/train.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct pmoe_prediction {
    char source[1100];    /* the file, or "FILE[i]" for image i of an IDX file */
    int class_index;      /* 0-based; for a binary model 1 is y = +1 */
    char class_name[128]; /* the training folder's name, or the index */
    double probability;   /* the model's probability of that class */
} pmoe_prediction;

typedef struct pmoe_predict_options {
    const char *device; /* NULL: the checkpoint's train.device */
    /* When not NULL, what the routers picked, for a routing picture
     * (src/host/viz/route_image.h): the first route_samples images as read
     * (the normalisation undone), each one's picks and gates, its predicted
     * class as the label, and the picks of every image counted by position
     * (test_size is the image count; test_acc and router_recall are -1).
     * Free with pmoe_routing_free. A model without routers is refused
     * before anything runs. */
    pmoe_routing *routing;
    int route_samples;
    const pmoe_progress *progress; /* NULL, or told after each batch; units: images */
} pmoe_predict_options;

/* Predicts every image of files[0..file_count); *out (free() it) gets
 * *count predictions in order. options may be NULL. Fails naming the file
 * that cannot be read or fitted. */
pmoe_status pmoe_predict(const char *checkpoint, const char *const *files, int file_count,
                         const pmoe_predict_options *options, pmoe_prediction **out, int64_t *count,
                         pmoe_error *err);

#ifdef __cplusplus
}
#endif
#endif
