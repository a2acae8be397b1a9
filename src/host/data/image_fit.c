/* image_fit.c: channel conversion and the size rules (see image_fit.h).
 *
 * The bilinear weights are computed in float once per output row and
 * column, and every pixel is summed in one fixed order, so an image fits to
 * the same bytes wherever it is done: the folder source at training time and
 * pmoe predict later give the model identical input. */
#include "data/image_fit.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const FIT_NAMES[] = {"exact", "pad", "crop_resize"};

const char *pmoe_fit_name(int fit) { return fit >= 0 && fit < 3 ? FIT_NAMES[fit] : NULL; }

int pmoe_fit_from_name(const char *name) {
    for (int i = 0; i < 3; i++)
        if (strcmp(name, FIT_NAMES[i]) == 0) return i;
    return PMOE_FIT_NONE;
}

/* Pixel (x, y) of img in channel c of a `channels`-channel conversion. */
static inline uint8_t sample(const pmoe_image *img, int channels, int c, int x, int y) {
    const uint8_t *p = img->pixels + ((size_t)y * img->width + x) * img->channels;
    if (img->channels == channels) return p[c];
    if (img->channels == 1) return p[0]; /* gray to RGB */
    return (uint8_t)((299 * p[0] + 587 * p[1] + 114 * p[2] + 500) / 1000);
}

/* One axis of the bilinear resize: source index and weight of the second
 * tap for each of `out` positions over `in` source pixels. */
static void bilinear_axis(int in, int out, int *first, float *weight) {
    const float scale = (float)in / (float)out;
    for (int i = 0; i < out; i++) {
        float src = ((float)i + 0.5f) * scale - 0.5f;
        if (src < 0.0f) src = 0.0f;
        int lo = (int)src;
        if (lo > in - 1) lo = in - 1;
        first[i] = lo;
        weight[i] = lo + 1 < in ? src - (float)lo : 0.0f;
    }
}

static pmoe_status crop_resize(const pmoe_image *img, int channels, int height, int width,
                               uint8_t *out, const char *origin, pmoe_error *err) {
    const int side = img->width < img->height ? img->width : img->height;
    const int x0 = (img->width - side) / 2, y0 = (img->height - side) / 2;
    int *xs = malloc(sizeof(int) * (size_t)(width + height));
    float *wx = malloc(sizeof(float) * (size_t)(width + height));
    if (!xs || !wx) {
        free(xs);
        free(wx);
        return pmoe_fail(err, PMOE_ERR_OOM, "%s: out of memory resizing", origin);
    }
    int *ys = xs + width;
    float *wy = wx + width;
    bilinear_axis(side, width, xs, wx);
    bilinear_axis(side, height, ys, wy);
    for (int c = 0; c < channels; c++)
        for (int y = 0; y < height; y++) {
            const int ya = y0 + ys[y], yb = ys[y] + 1 < side ? ya + 1 : ya;
            for (int x = 0; x < width; x++) {
                const int xa = x0 + xs[x], xb = xs[x] + 1 < side ? xa + 1 : xa;
                const float top = (1.0f - wx[x]) * sample(img, channels, c, xa, ya) +
                                  wx[x] * sample(img, channels, c, xb, ya);
                const float bottom = (1.0f - wx[x]) * sample(img, channels, c, xa, yb) +
                                     wx[x] * sample(img, channels, c, xb, yb);
                const float v = (1.0f - wy[y]) * top + wy[y] * bottom;
                out[((size_t)c * height + y) * width + x] =
                    (uint8_t)lrintf(v < 255.0f ? v : 255.0f);
            }
        }
    free(xs);
    free(wx);
    return PMOE_OK;
}

pmoe_status pmoe_image_fit(const pmoe_image *img, int channels, int height, int width, int fit,
                           uint8_t *out, const char *origin, pmoe_error *err) {
    if (fit == PMOE_FIT_CROP_RESIZE)
        return crop_resize(img, channels, height, width, out, origin, err);
    if (fit == PMOE_FIT_EXACT && (img->width != width || img->height != height))
        return pmoe_fail(err, PMOE_ERR_FORMAT,
                         "%s: %dx%d image, the model takes %dx%d (set data.image_size to resize "
                         "every image)",
                         origin, img->width, img->height, width, height);
    if (fit == PMOE_FIT_PAD && (img->width > width || img->height > height))
        return pmoe_fail(err, PMOE_ERR_FORMAT,
                         "%s: %dx%d image is larger than the model's %dx%d input", origin,
                         img->width, img->height, width, height);
    if (fit != PMOE_FIT_EXACT && fit != PMOE_FIT_PAD)
        return pmoe_fail(err, PMOE_ERR_INTERNAL, "%s: unknown fit %d", origin, fit);
    const int top = (height - img->height) / 2, left = (width - img->width) / 2;
    memset(out, 0, (size_t)channels * height * width);
    for (int c = 0; c < channels; c++)
        for (int y = 0; y < img->height; y++) {
            uint8_t *dst = out + ((size_t)c * height + top + y) * width + left;
            for (int x = 0; x < img->width; x++) dst[x] = sample(img, channels, c, x, y);
        }
    return PMOE_OK;
}
