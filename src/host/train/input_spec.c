/* input_spec.c: the "input" and "class_names" checkpoint metadata (see
 * input_spec.h). */
#include "train/input_spec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/image_fit.h"

int pmoe_input_spec_describe(const pmoe_dataset *ds, char *input, size_t input_size, char **names) {
    *names = NULL;
    if (ds->fit == PMOE_FIT_NONE || !pmoe_fit_name(ds->fit) || ds->channels > 3) return 0;
    const float *m = ds->mean, *s = ds->std;
    snprintf(input, input_size,
             "channels=%d height=%d width=%d fit=%s classes=%d default_patch=%d "
             "mean=%.9g,%.9g,%.9g std=%.9g,%.9g,%.9g",
             ds->channels, ds->height, ds->width, pmoe_fit_name(ds->fit), ds->classes,
             ds->default_patch, m[0], m[1], m[2], s[0], s[1], s[2]);
    if (!ds->class_names) return 1;
    size_t len = 1;
    for (int c = 0; c < ds->classes; c++) len += strlen(ds->class_names[c]) + 1;
    char *text = malloc(len);
    if (!text) return 1; /* the names are a convenience: predict prints indices */
    text[0] = '\0';
    for (int c = 0; c < ds->classes; c++) {
        strcat(text, ds->class_names[c]);
        if (c + 1 < ds->classes) strcat(text, "\n");
    }
    *names = text;
    return 1;
}

void pmoe_input_spec_free(pmoe_input_spec *spec) {
    if (spec->class_names)
        for (int c = 0; c < spec->classes; c++) free(spec->class_names[c]);
    free(spec->class_names);
    memset(spec, 0, sizeof *spec);
}

static pmoe_status read_names(const pmoe_st_file *f, pmoe_input_spec *out, pmoe_error *err) {
    const char *text = pmoe_safetensors_meta(f, "class_names");
    if (!text) return PMOE_OK;
    out->class_names = calloc((size_t)out->classes, sizeof(char *));
    if (!out->class_names) return pmoe_fail(err, PMOE_ERR_OOM, "out of memory for class names");
    const char *p = text;
    for (int c = 0; c < out->classes; c++) {
        const char *end = strchr(p, '\n');
        const size_t len = end ? (size_t)(end - p) : strlen(p);
        if ((!end && c + 1 < out->classes) || (end && c + 1 == out->classes))
            return pmoe_fail(err, PMOE_ERR_FORMAT,
                             "%s: metadata 'class_names' does not hold %d names", f->origin,
                             out->classes);
        out->class_names[c] = malloc(len + 1);
        if (!out->class_names[c])
            return pmoe_fail(err, PMOE_ERR_OOM, "out of memory for class names");
        memcpy(out->class_names[c], p, len);
        out->class_names[c][len] = '\0';
        p = end ? end + 1 : p + len;
    }
    return PMOE_OK;
}

pmoe_status pmoe_input_spec_read(const pmoe_st_file *f, pmoe_input_spec *out, pmoe_error *err) {
    memset(out, 0, sizeof *out);
    const char *text = pmoe_safetensors_meta(f, "input");
    if (!text)
        return pmoe_fail(err, PMOE_ERR_FORMAT,
                         "%s: the checkpoint does not describe its input (saved before pmoe "
                         "predict existed, or trained on the synthetic model, whose samples are "
                         "not images)",
                         f->origin);
    char fit[32] = "";
    int used = 0;
    const int got = sscanf(text,
                           "channels=%d height=%d width=%d fit=%31s classes=%d default_patch=%d "
                           "mean=%f,%f,%f std=%f,%f,%f%n",
                           &out->channels, &out->height, &out->width, fit, &out->classes,
                           &out->default_patch, &out->mean[0], &out->mean[1], &out->mean[2],
                           &out->std[0], &out->std[1], &out->std[2], &used);
    out->fit = pmoe_fit_from_name(fit);
    if (got != 12 || text[used] != '\0' || out->fit == PMOE_FIT_NONE || out->channels < 1 ||
        out->channels > 3 || out->height < 1 || out->width < 1 || out->classes < 1 ||
        out->height > 1 << 16 || out->width > 1 << 16 || out->classes > 1 << 20) {
        memset(out, 0, sizeof *out);
        return pmoe_fail(err, PMOE_ERR_FORMAT, "%s: metadata 'input' is malformed: '%.200s'",
                         f->origin, text);
    }
    pmoe_status s = read_names(f, out, err);
    if (s) pmoe_input_spec_free(out);
    return s;
}

void pmoe_input_spec_adopt(const pmoe_st_file *f, pmoe_dataset *ds) {
    pmoe_input_spec spec;
    pmoe_error ignored;
    if (pmoe_input_spec_read(f, &spec, &ignored) != PMOE_OK) return;
    if (spec.channels == ds->channels) {
        memcpy(ds->mean, spec.mean, sizeof ds->mean);
        memcpy(ds->std, spec.std, sizeof ds->std);
    }
    pmoe_input_spec_free(&spec);
}
