/* png_write.h: writing a canvas as a PNG file with libpng.
 *
 * The file is written through pmoe_atomic_file (core/files.h): under a
 * temporary name beside PATH, renamed over it when complete, so a failure
 * (a full disk, a missing folder) never leaves a truncated picture under
 * PATH, and PATH is never anything but a regular file. */
#ifndef PMOE_VIZ_PNG_WRITE_H
#define PMOE_VIZ_PNG_WRITE_H

#include "pmoe/status.h"
#include "viz/canvas.h"

/* Writes c as an 8-bit RGB PNG; a failure is PMOE_ERR_IO with one line
 * naming the file and what failed. */
pmoe_status pmoe_png_write(const char *path, const pmoe_canvas *c, pmoe_error *err);

#endif
