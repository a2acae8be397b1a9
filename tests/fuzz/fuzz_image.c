/* fuzz_image.c: libFuzzer target for the PNG / JPEG reader and the size rules.
 *
 * Each input is decoded in memory (pmoe_image_decode: libpng's simplified
 * reader or libjpeg with its warnings turned into errors), and an image that
 * decodes is fitted every way the folder source and pmoe predict fit one:
 * crop_resize to 3 x 16 x 16, pad and exact to gray at its own size and
 * larger. A crash, a leak or an out-of-bounds access is a failure. */
#include <stdint.h>
#include <stdlib.h>

#include "data/image_fit.h"

static volatile uint8_t sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    pmoe_image img;
    pmoe_error err;
    if (pmoe_image_decode(data, size, "fuzz", &img, &err) != PMOE_OK) return 0;
    uint8_t small[3 * 16 * 16];
    if (pmoe_image_fit(&img, 3, 16, 16, PMOE_FIT_CROP_RESIZE, small, "fuzz", &err) == PMOE_OK)
        sink = small[3 * 16 * 16 - 1];
    if ((int64_t)img.width * img.height <= 1 << 20) {
        const int h = img.height + 3, w = img.width + 2;
        uint8_t *out = malloc((size_t)h * w);
        if (out) {
            if (pmoe_image_fit(&img, 1, img.height, img.width, PMOE_FIT_EXACT, out, "fuzz", &err) ==
                PMOE_OK)
                sink = out[0];
            if (pmoe_image_fit(&img, 1, h, w, PMOE_FIT_PAD, out, "fuzz", &err) == PMOE_OK)
                sink = out[(size_t)h * w - 1];
            free(out);
        }
    }
    pmoe_image_free(&img);
    return 0;
}
