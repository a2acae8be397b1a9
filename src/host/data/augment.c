/* augment.c: random crops and flips (see augment.h).
 *
 * In place without a second image: the vertical shift moves whole rows, in
 * the order that never overwrites a row still to be read (like memmove);
 * the horizontal shift and the flip then rebuild each row from a copy of
 * it, on the stack (PMOE_AUGMENT_MAX_WIDTH floats). */
#include "data/augment.h"

#include <string.h>

#include "core/rng.h"

enum { STREAM_AUGMENT = 0x61756700 }; /* + the epoch, shifted clear of the other streams */

pmoe_augment pmoe_augment_from_config(const pmoe_config *cfg) {
    pmoe_augment a = {cfg->data.crop_pad, cfg->data.flip, cfg->train.seed};
    return a;
}

int pmoe_augment_active(const pmoe_augment *a) { return a->crop_pad > 0 || a->flip; }

pmoe_augment_draw pmoe_augment_draw_at(const pmoe_augment *a, uint64_t epoch, int64_t index) {
    const pmoe_rng r = pmoe_rng_make(a->seed, ((uint64_t)STREAM_AUGMENT << 32) ^ epoch);
    const uint64_t at = 3 * (uint64_t)index;
    const int span = 2 * a->crop_pad + 1;
    pmoe_augment_draw d = {0, 0, 0};
    if (a->crop_pad > 0) {
        d.dy = (int)(pmoe_rng_uniform_at(&r, at) * span) - a->crop_pad;
        d.dx = (int)(pmoe_rng_uniform_at(&r, at + 1) * span) - a->crop_pad;
    }
    if (a->flip) d.flip = pmoe_rng_uniform_at(&r, at + 2) < 0.5;
    return d;
}

void pmoe_augment_apply(const pmoe_augment_draw *d, int channels, int height, int width,
                        float *image) {
    if (d->dy == 0 && d->dx == 0 && !d->flip) return;
    const size_t row_bytes = sizeof(float) * (size_t)width;
    float row[PMOE_AUGMENT_MAX_WIDTH];
    for (int c = 0; c < channels; c++) {
        float *plane = image + (size_t)c * height * width;
        /* rows: out row y = in row y + dy */
        if (d->dy != 0) {
            const int down = d->dy < 0; /* out y reads a row above: walk bottom up */
            for (int i = 0; i < height; i++) {
                const int y = down ? height - 1 - i : i, from = y + d->dy;
                float *dst = plane + (size_t)y * width;
                if (from < 0 || from >= height) memset(dst, 0, row_bytes);
                else memcpy(dst, plane + (size_t)from * width, row_bytes);
            }
        }
        if (d->dx == 0 && !d->flip) continue;
        for (int y = 0; y < height; y++) {
            float *dst = plane + (size_t)y * width;
            memcpy(row, dst, row_bytes);
            for (int x = 0; x < width; x++) {
                const int from = (d->flip ? width - 1 - x : x) + d->dx;
                dst[x] = from >= 0 && from < width ? row[from] : 0.0f;
            }
        }
    }
}
