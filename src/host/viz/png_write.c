/* png_write.c: see png_write.h.
 *
 * libpng reports errors by longjmp from its error callback; the callback
 * keeps libpng's own words so the one-line message can say what failed. */
#include "viz/png_write.h"

#include "core/files.h"

#include <errno.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct png_failure {
    char what[256];
} png_failure;

static void on_png_error(png_structp png, png_const_charp message) {
    png_failure *f = png_get_error_ptr(png);
    snprintf(f->what, sizeof f->what, "%s", message);
    png_longjmp(png, 1);
}

static void on_png_warning(png_structp png, png_const_charp message) {
    (void)png;
    (void)message; /* warnings (none are expected for RGB8) do not fail the write */
}

/* Encodes c into an open stream; returns 0 or fills what. */
static int encode(FILE *file, const pmoe_canvas *c, png_failure *failure) {
    png_structp png =
        png_create_write_struct(PNG_LIBPNG_VER_STRING, failure, on_png_error, on_png_warning);
    if (!png) {
        snprintf(failure->what, sizeof failure->what, "libpng could not start (out of memory)");
        return -1;
    }
    png_infop info = png_create_info_struct(png);
    if (!info) {
        png_destroy_write_struct(&png, NULL);
        snprintf(failure->what, sizeof failure->what, "libpng could not start (out of memory)");
        return -1;
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        return -1;
    }
    png_init_io(png, file);
    png_set_IHDR(png, info, (png_uint_32)c->width, (png_uint_32)c->height, 8, PNG_COLOR_TYPE_RGB,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_set_compression_level(png, 9);
    png_write_info(png, info);
    for (int y = 0; y < c->height; y++)
        png_write_row(png, c->pixels + (size_t)y * (size_t)c->width * 3);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    return 0;
}

pmoe_status pmoe_png_write(const char *path, const pmoe_canvas *c, pmoe_error *err) {
    pmoe_atomic_file out;
    pmoe_status s = pmoe_atomic_open(&out, path, err);
    if (s) return s;
    png_failure failure = {""};
    errno = 0;
    if (encode(out.stream, c, &failure) == 0) return pmoe_atomic_commit(&out, err);
    /* libpng's write callback says only "Write Error"; errno says why */
    if (!strcmp(failure.what, "Write Error") && errno)
        snprintf(failure.what, sizeof failure.what, "writing failed: %s", strerror(errno));
    pmoe_atomic_abandon(&out);
    return pmoe_fail(err, PMOE_ERR_IO, "%s: PNG not written (%s); nothing was replaced", path,
                     failure.what);
}
