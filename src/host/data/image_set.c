/* image_set.c: a dataset of fitted images (see image_set.h).
 *
 * Images are fitted as they are read, so memory holds the fitted bytes,
 * never a folder of full-size photos. When the channel count is open, every
 * image is kept as RGB while reading (a gray one repeated) and the set is
 * packed to one channel at the end when none was colour. The statistics
 * are exact integer sums, so they do not depend on the order or the thread
 * that sums them; std is the population standard deviation (1 for a
 * channel that never varies). */
#include "data/image_set.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/image_fit.h"

typedef struct image_pixels {
    uint8_t *pixels; /* count x C x H x W */
} image_pixels;

static void image_set_compose(const pmoe_dataset *ds, int64_t index, float *out) {
    const image_pixels *p = ds->impl;
    const size_t plane = (size_t)ds->height * ds->width;
    const uint8_t *src = p->pixels + (size_t)index * ds->channels * plane;
    for (int c = 0; c < ds->channels; c++) {
        const float mean = ds->mean[c], std = ds->std[c];
        for (size_t i = 0; i < plane; i++)
            out[c * plane + i] = ((float)src[c * plane + i] / 255.0f - mean) / std;
    }
}

static void image_set_destroy(pmoe_dataset *ds) {
    image_pixels *p = ds->impl;
    if (p) free(p->pixels);
    free(p);
    ds->impl = NULL;
}

static void compute_stats(const uint8_t *pixels, int64_t count, int channels, size_t plane,
                          float *mean, float *std) {
    for (int c = 0; c < channels; c++) {
        uint64_t sum = 0, squares = 0;
        for (int64_t i = 0; i < count; i++) {
            const uint8_t *p = pixels + ((size_t)i * channels + c) * plane;
            for (size_t j = 0; j < plane; j++) {
                sum += p[j];
                squares += (uint64_t)p[j] * p[j];
            }
        }
        const double n = (double)count * (double)plane;
        const double m = (double)sum / n / 255.0;
        const double var = (double)squares / n / (255.0 * 255.0) - m * m;
        mean[c] = (float)m;
        std[c] = var > 1e-12 ? (float)sqrt(var) : 1.0f;
    }
}

pmoe_status pmoe_image_set_open(const pmoe_image_item *items, int64_t count, int classes,
                                pmoe_image_rule *rule, pmoe_dataset **out, int64_t *skipped,
                                pmoe_error *err) {
    *out = NULL;
    *skipped = 0;
    const int open_channels = rule->channels == 0;
    const int work_channels = open_channels ? 3 : rule->channels;
    const int64_t want = rule->limit < count ? rule->limit : count;
    uint8_t *pixels = NULL;
    int32_t *labels = NULL;
    int64_t taken = 0;
    int any_color = 0;
    size_t per = 0;
    char what[160];
    snprintf(what, sizeof what, "the labels of %lld images", (long long)want);
    pmoe_status s = pmoe_data_malloc((void **)&labels, want, sizeof(int32_t), what, err);
    for (int64_t i = 0; !s && i < count && taken < want; i++) {
        const pmoe_image_item *it = &items[i];
        pmoe_image read;
        memset(&read, 0, sizeof read);
        const pmoe_image *img = it->image;
        pmoe_error local;
        pmoe_status bad = img ? PMOE_OK : pmoe_image_read(it->path, &read, &local);
        if (!img && !bad) img = &read;
        if (!bad && rule->height == 0) { /* the first image sets the size */
            rule->height = img->height;
            rule->width = img->width;
        }
        if (!bad && !pixels) { /* the first image sets the size of them all */
            per = (size_t)work_channels * rule->height * rule->width;
            const char *slash = strrchr(it->path, '/');
            snprintf(what, sizeof what, "%lld %dx%d images from %.*s", (long long)want, rule->width,
                     rule->height, slash ? (int)(slash - it->path) : 1, slash ? it->path : ".");
            s = pmoe_data_malloc((void **)&pixels, want, per, what, err);
        }
        if (!bad && !s)
            bad = pmoe_image_fit(img, work_channels, rule->height, rule->width, rule->fit,
                                 pixels + per * (size_t)taken, it->path, &local);
        if (!bad && !s) {
            any_color |= img->channels == 3;
            labels[taken++] = it->label;
        }
        pmoe_image_free(&read);
        if (s) break;
        if (bad == PMOE_ERR_OOM || (bad && !rule->skip_bad)) {
            *err = local;
            s = bad;
        } else if (bad) {
            (*skipped)++;
        }
    }
    if (!s && taken == 0)
        s = pmoe_fail(err, PMOE_ERR_FORMAT, "%s: no usable image among %lld%s",
                      count ? items[0].path : "(none)", (long long)count,
                      *skipped ? " (every one skipped as bad)" : "");
    if (!s && open_channels) {
        rule->channels = any_color ? 3 : 1;
        if (!any_color) { /* keep the first of the three equal planes */
            const size_t plane = (size_t)rule->height * rule->width;
            for (int64_t i = 0; i < taken; i++)
                memmove(pixels + (size_t)i * plane, pixels + (size_t)i * 3 * plane, plane);
        }
    }
    if (!s && (taken < want || rule->channels < work_channels)) { /* give back the unused rest */
        uint8_t *fit =
            realloc(pixels, (size_t)rule->channels * rule->height * rule->width * (size_t)taken);
        if (fit) pixels = fit;
    }
    pmoe_dataset *ds = NULL;
    if (!s) s = pmoe_dataset_alloc(taken, 0, sizeof(image_pixels), image_set_destroy, &ds, err);
    if (s) {
        free(pixels);
        free(labels);
        return s;
    }
    const size_t plane = (size_t)rule->height * rule->width;
    image_pixels *p = ds->impl;
    p->pixels = pixels;
    ds->channels = rule->channels;
    ds->height = rule->height;
    ds->width = rule->width;
    ds->classes = classes;
    ds->fit = rule->fit;
    ds->compose = image_set_compose;
    ds->default_patch = ds->height == ds->width && ds->width % 4 == 0 ? ds->width / 4 : 0;
    memcpy(ds->labels, labels, sizeof(int32_t) * (size_t)taken);
    free(labels);
    if (rule->compute_stats)
        compute_stats(pixels, taken, ds->channels, plane, rule->mean, rule->std);
    for (int c = 0; c < 3; c++) {
        ds->mean[c] = c < ds->channels ? rule->mean[c] : 0.0f;
        ds->std[c] = c < ds->channels ? rule->std[c] : 1.0f;
    }
    snprintf(ds->description, sizeof ds->description, "%lld images", (long long)taken);
    *out = ds;
    return PMOE_OK;
}
