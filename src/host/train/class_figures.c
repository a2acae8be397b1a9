/* class_figures.c: see class_figures.h. */
#include "train/class_figures.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int pmoe_predicted_class(const float *z, int model_classes) {
    if (model_classes == 1) return z[0] > 0.0f;
    int best = 0;
    for (int c = 1; c < model_classes; c++)
        if (z[c] > z[best]) best = c;
    return best;
}

pmoe_status pmoe_class_figures_init(pmoe_class_figures *f, int model_classes, char *const *names,
                                    pmoe_error *err) {
    memset(f, 0, sizeof *f);
    f->binary = model_classes == 1;
    f->classes = f->binary ? 2 : model_classes;
    f->counts = calloc((size_t)f->classes * (size_t)f->classes, sizeof *f->counts);
    if (!f->counts)
        return pmoe_fail(err, PMOE_ERR_OOM, "out of memory for a %d x %d confusion matrix",
                         f->classes, f->classes);
    if (names && !f->binary) {
        f->names = calloc((size_t)f->classes, sizeof *f->names);
        for (int c = 0; f->names && c < f->classes; c++) {
            f->names[c] = strdup(names[c] ? names[c] : "");
            if (!f->names[c]) break;
        }
        if (!f->names || !f->names[f->classes - 1]) {
            pmoe_class_figures_free(f);
            return pmoe_fail(err, PMOE_ERR_OOM, "out of memory for class names");
        }
    }
    return PMOE_OK;
}

void pmoe_class_figures_add(pmoe_class_figures *f, const float *logits, const int32_t *labels,
                            int64_t count) {
    const int width = f->binary ? 1 : f->classes;
    for (int64_t i = 0; i < count; i++) {
        const int predicted = pmoe_predicted_class(logits + i * width, width);
        const int truth = f->binary ? labels[i] == 1 : labels[i];
        f->counts[(int64_t)truth * f->classes + predicted]++;
    }
}

int64_t pmoe_class_samples(const pmoe_class_figures *f, int c) {
    int64_t n = 0;
    for (int p = 0; p < f->classes; p++) n += f->counts[(int64_t)c * f->classes + p];
    return n;
}

int64_t pmoe_class_correct(const pmoe_class_figures *f, int c) {
    return f->counts[(int64_t)c * f->classes + c];
}

const char *pmoe_class_name(const pmoe_class_figures *f, int c, char buf[16]) {
    if (f->names) return f->names[c];
    if (f->binary) return c ? "+1" : "-1";
    snprintf(buf, 16, "%d", c);
    return buf;
}

void pmoe_class_figures_free(pmoe_class_figures *f) {
    if (f->names)
        for (int c = 0; c < f->classes; c++) free(f->names[c]);
    free(f->names);
    free(f->counts);
    memset(f, 0, sizeof *f);
}
