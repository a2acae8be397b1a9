/* image_file.c: PNG and JPEG files to 8-bit pixels (see image_file.h).
 *
 * The whole file is read into memory first, so both decoders parse a buffer
 * of known size and an I/O error is told apart from a format error. libjpeg
 * reports errors by calling error_exit, which must not return: it jumps
 * back here (setjmp), and warnings (corrupt or missing data, which libjpeg
 * would paper over) jump back the same way. Nothing allocated by the
 * decoder outlives the jump: jpeg_destroy_decompress frees it, and the
 * pixel buffer is a volatile pointer freed on the way out. */
#include "data/image_file.h"
#include "data/dataset.h"

#include <errno.h>
#include <setjmp.h>
#include <stdio.h> /* before jpeglib.h, which uses FILE and size_t */
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <png.h>

static const uint8_t PNG_MAGIC[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

int pmoe_image_sniff(const uint8_t *bytes, size_t size) {
    if (size >= 8 && memcmp(bytes, PNG_MAGIC, 8) == 0) return 1;
    return size >= 3 && bytes[0] == 0xff && bytes[1] == 0xd8 && bytes[2] == 0xff;
}

void pmoe_image_free(pmoe_image *img) {
    if (!img) return;
    free(img->pixels);
    memset(img, 0, sizeof *img);
}

/* How a decoded image is named where its buffer is refused. */
static void decoded_name(const char *path, int width, int height, char *out, size_t size) {
    snprintf(out, size, "the %dx%d image %s", width, height, path);
}

static pmoe_status read_whole(const char *path, uint8_t **out, size_t *size, pmoe_error *err) {
    *out = NULL;
    *size = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return pmoe_fail(err, PMOE_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 1 << 16, used = 0;
    uint8_t *buf = malloc(cap);
    while (buf) {
        used += fread(buf + used, 1, cap - used, f);
        if (used < cap || ferror(f)) break;
        uint8_t *grown = cap < (size_t)1 << 31 ? realloc(buf, cap * 2) : NULL;
        if (!grown) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = grown;
        cap *= 2;
    }
    const int failed = ferror(f);
    fclose(f);
    if (!buf)
        return pmoe_fail(err, PMOE_ERR_OOM,
                         "%s: out of memory reading the file (or it is over 2 GiB)", path);
    if (failed) {
        free(buf);
        return pmoe_fail(err, PMOE_ERR_IO, "%s: read error after %zu bytes", path, used);
    }
    *out = buf;
    *size = used;
    return PMOE_OK;
}

static pmoe_status check_dims(const char *path, long long width, long long height,
                              pmoe_error *err) {
    if (width < 1 || height < 1 || width * height > PMOE_IMAGE_MAX_PIXELS)
        return pmoe_fail(err, PMOE_ERR_FORMAT,
                         "%s: image of %lld x %lld pixels (at most %lld pixels)", path, width,
                         height, (long long)PMOE_IMAGE_MAX_PIXELS);
    return PMOE_OK;
}

static pmoe_status decode_png(const char *path, const uint8_t *bytes, size_t size, pmoe_image *out,
                              pmoe_error *err) {
    png_image image;
    memset(&image, 0, sizeof image);
    image.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_memory(&image, bytes, size))
        return pmoe_fail(err, PMOE_ERR_FORMAT, "%s: corrupt PNG (libpng: %s)", path, image.message);
    pmoe_status s = check_dims(path, image.width, image.height, err);
    if (s) {
        png_image_free(&image);
        return s;
    }
    const int color = (image.format & PNG_FORMAT_FLAG_COLOR) != 0;
    image.format = color ? PNG_FORMAT_RGB : PNG_FORMAT_GRAY;
    out->width = (int)image.width;
    out->height = (int)image.height;
    out->channels = color ? 3 : 1;
    char what[1200];
    decoded_name(path, out->width, out->height, what, sizeof what);
    s = pmoe_data_malloc((void **)&out->pixels, (int64_t)PNG_IMAGE_SIZE(image), 1, what, err);
    if (s) {
        png_image_free(&image);
        return s;
    }
    const png_color black = {0, 0, 0};
    if (!png_image_finish_read(&image, &black, out->pixels, 0, NULL)) {
        pmoe_image_free(out);
        return pmoe_fail(err, PMOE_ERR_FORMAT, "%s: truncated or corrupt PNG (libpng: %s)", path,
                         image.message);
    }
    return PMOE_OK;
}

typedef struct jpeg_failure {
    struct jpeg_error_mgr mgr;
    jmp_buf back;
    char message[JMSG_LENGTH_MAX];
} jpeg_failure;

static void jpeg_on_error(j_common_ptr info) {
    jpeg_failure *f = (jpeg_failure *)info->err;
    f->mgr.format_message(info, f->message);
    longjmp(f->back, 1);
}

/* Level -1 is a warning about the data (truncation, a corrupt segment):
 * for training data that is as bad as an error. Trace messages are ignored. */
static void jpeg_on_message(j_common_ptr info, int level) {
    if (level < 0) jpeg_on_error(info);
}

static pmoe_status decode_jpeg(const char *path, const uint8_t *bytes, size_t size, pmoe_image *out,
                               pmoe_error *err) {
    struct jpeg_decompress_struct info;
    jpeg_failure failure;
    uint8_t *volatile pixels = NULL;
    info.err = jpeg_std_error(&failure.mgr);
    failure.mgr.error_exit = jpeg_on_error;
    failure.mgr.emit_message = jpeg_on_message;
    if (setjmp(failure.back)) {
        jpeg_destroy_decompress(&info);
        free(pixels);
        return pmoe_fail(err, PMOE_ERR_FORMAT, "%s: truncated or corrupt JPEG (libjpeg: %s)", path,
                         failure.message);
    }
    jpeg_create_decompress(&info);
    jpeg_mem_src(&info, bytes, (unsigned long)size);
    jpeg_read_header(&info, TRUE);
    if (info.num_components != 1 && info.num_components != 3) {
        jpeg_destroy_decompress(&info);
        return pmoe_fail(err, PMOE_ERR_FORMAT,
                         "%s: JPEG with %d colour components (CMYK?): only gray and RGB are read",
                         path, info.num_components);
    }
    info.out_color_space = info.num_components == 1 ? JCS_GRAYSCALE : JCS_RGB;
    pmoe_status s = check_dims(path, info.image_width, info.image_height, err);
    if (s) {
        jpeg_destroy_decompress(&info);
        return s;
    }
    jpeg_start_decompress(&info);
    const size_t stride = (size_t)info.output_width * info.output_components;
    char what[1200];
    decoded_name(path, (int)info.output_width, (int)info.output_height, what, sizeof what);
    void *buffer = NULL;
    s = pmoe_data_malloc(&buffer, (int64_t)info.output_height, stride, what, err);
    if (s) {
        jpeg_destroy_decompress(&info);
        return s;
    }
    pixels = buffer;
    while (info.output_scanline < info.output_height) {
        JSAMPROW row = pixels + stride * info.output_scanline;
        jpeg_read_scanlines(&info, &row, 1);
    }
    jpeg_finish_decompress(&info);
    out->width = (int)info.output_width;
    out->height = (int)info.output_height;
    out->channels = info.output_components;
    out->pixels = pixels;
    jpeg_destroy_decompress(&info);
    return PMOE_OK;
}

pmoe_status pmoe_image_decode(const uint8_t *bytes, size_t size, const char *origin,
                              pmoe_image *out, pmoe_error *err) {
    memset(out, 0, sizeof *out);
    if (size == 0) return pmoe_fail(err, PMOE_ERR_FORMAT, "%s: empty file", origin);
    if (!pmoe_image_sniff(bytes, size))
        return pmoe_fail(err, PMOE_ERR_FORMAT,
                         "%s: not a PNG or JPEG file (it starts with %02x %02x)", origin, bytes[0],
                         size > 1 ? bytes[1] : 0);
    if (bytes[0] == 0x89) return decode_png(origin, bytes, size, out, err);
    return decode_jpeg(origin, bytes, size, out, err);
}

pmoe_status pmoe_image_read(const char *path, pmoe_image *out, pmoe_error *err) {
    memset(out, 0, sizeof *out);
    uint8_t *bytes = NULL;
    size_t size = 0;
    pmoe_status s = read_whole(path, &bytes, &size, err);
    if (s) return s;
    s = pmoe_image_decode(bytes, size, path, out, err);
    free(bytes);
    return s;
}
