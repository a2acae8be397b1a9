/* image_file.h: reading one PNG or JPEG file into 8-bit pixels.
 *
 * The format is told by the file's first bytes, not its name. PNG goes
 * through libpng's simplified reader (palette, 1..16-bit, alpha: all come
 * out as 8-bit gray or RGB; transparent pixels are composed onto black),
 * JPEG through libjpeg(-turbo) (gray or YCbCr/RGB; CMYK is refused). A
 * truncated or corrupt file is an error, including what libjpeg would only
 * warn about (it pads a truncated file with gray and carries on). Every
 * failure is one line naming the file. */
#ifndef PMOE_DATA_IMAGE_FILE_H
#define PMOE_DATA_IMAGE_FILE_H

#include <stddef.h>
#include <stdint.h>

#include "pmoe/status.h"

/* Rows top to bottom, pixels interleaved (H x W x C). */
typedef struct pmoe_image {
    int width, height;
    int channels;    /* 1 (gray) or 3 (RGB) */
    uint8_t *pixels; /* height * width * channels */
} pmoe_image;

/* The largest image read (pixels): a guard against a forged header asking
 * for gigabytes. */
#define PMOE_IMAGE_MAX_PIXELS (1LL << 28)

/* PMOE_ERR_IO when the file cannot be opened or read, PMOE_ERR_FORMAT when
 * it is not a PNG or JPEG, or is truncated or corrupt. */
pmoe_status pmoe_image_read(const char *path, pmoe_image *out, pmoe_error *err);
void pmoe_image_free(pmoe_image *img);

/* The same on a file's bytes held in memory; origin names it in messages. */
pmoe_status pmoe_image_decode(const uint8_t *bytes, size_t size, const char *origin,
                              pmoe_image *out, pmoe_error *err);

/* 1 when bytes[0..size) start like a PNG or a JPEG file. */
int pmoe_image_sniff(const uint8_t *bytes, size_t size);

#endif
