/* png_write.h: writing a canvas as a PNG file with libpng.
 *
 * The file is written under a temporary name beside PATH and renamed over
 * it when complete, so a failure (a full disk, a missing folder) never
 * leaves a truncated picture under PATH. */
#ifndef PMOE_VIZ_PNG_WRITE_H
#define PMOE_VIZ_PNG_WRITE_H

#include "pmoe/status.h"
#include "viz/canvas.h"

/* Writes c as an 8-bit RGB PNG; a failure is PMOE_ERR_IO with one line
 * naming the file and what failed. */
pmoe_status pmoe_png_write(const char *path, const pmoe_canvas *c, pmoe_error *err);

#endif
