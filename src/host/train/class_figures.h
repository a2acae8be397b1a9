/* class_figures.h: per-class figures of an evaluation (train.h's
 * pmoe_class_figures): the confusion matrix and what it gives per class.
 *
 * A sample's predicted class follows the loss's rule exactly (backend.h's
 * loss_forward_backward): the largest logit, the first of equal ones; for a
 * binary model (one logit f) class 1 (y = +1) when f > 0, else class 0. So
 * the matrix's diagonal sums to the correct count the accuracy is made of,
 * and pmoe predict (which decides by the same call) names the class the
 * matrix counts. */
#ifndef PMOE_TRAIN_CLASS_FIGURES_H
#define PMOE_TRAIN_CLASS_FIGURES_H

#include <stdint.h>

#include "pmoe/train.h"

/* The predicted class of one row of logits (model_classes of them; 1: binary). */
int pmoe_predicted_class(const float *logits, int model_classes);

/* Zeroed counts for a model with model_classes logits (2 classes for a
 * binary model), with a copy of names[0..classes) when not NULL. */
pmoe_status pmoe_class_figures_init(pmoe_class_figures *f, int model_classes, char *const *names,
                                    pmoe_error *err);

/* Counts count samples: logits is count x model_classes, labels count
 * (binary: 1 is y = +1, 0 is y = -1). */
void pmoe_class_figures_add(pmoe_class_figures *f, const float *logits, const int32_t *labels,
                            int64_t count);

/* Test samples of class c, and those predicted right. */
int64_t pmoe_class_samples(const pmoe_class_figures *f, int c);
int64_t pmoe_class_correct(const pmoe_class_figures *f, int c);

/* Class c's name: names[c], else "-1" / "+1" for a binary model, else its
 * index (buf holds it). */
const char *pmoe_class_name(const pmoe_class_figures *f, int c, char buf[16]);

#endif
