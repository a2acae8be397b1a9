/* image_fit.h: one decoded image to the model's input, as uint8 planes.
 *
 * Channels first: gray to RGB repeats the gray value, RGB to gray takes the
 * luma (299 R + 587 G + 114 B) / 1000 rounded, in integers (ITU-R BT.601).
 * Then the size, by the rule the data source trained with:
 *   exact        the image must be height x width already;
 *   pad          centred on a zero canvas (an odd margin puts the extra row
 *                or column bottom / right), the IDX source's rule;
 *   crop_resize  the centred square of side min(w, h) (the odd pixel of an
 *                odd margin goes bottom / right), resized bilinearly to
 *                height x width with pixel centres at half-integers (as
 *                PyTorch's interpolate with align_corners=False, no
 *                antialiasing), rounded to the nearest integer: the folder
 *                source's rule when data.image_size is set. */
#ifndef PMOE_DATA_IMAGE_FIT_H
#define PMOE_DATA_IMAGE_FIT_H

#include <stdint.h>

#include "data/image_file.h"
#include "pmoe/status.h"

typedef enum { PMOE_FIT_NONE = -1, PMOE_FIT_EXACT, PMOE_FIT_PAD, PMOE_FIT_CROP_RESIZE } pmoe_fit;

/* "exact", "pad", "crop_resize"; NULL for others. */
const char *pmoe_fit_name(int fit);
/* The fit named, or PMOE_FIT_NONE. */
int pmoe_fit_from_name(const char *name);

/* Writes img, fitted, to out (channels x height x width). Fails with
 * PMOE_ERR_FORMAT naming origin when the rule cannot take the image (exact:
 * another size; pad: larger than the canvas). */
pmoe_status pmoe_image_fit(const pmoe_image *img, int channels, int height, int width, int fit,
                           uint8_t *out, const char *origin, pmoe_error *err);

#endif
