/* idx.c: reading IDX files, plain or gzip-compressed (see idx.h).
 *
 * Every file goes through zlib's gz reader, which passes non-gzip input
 * through unchanged, so one code path serves both kinds; the first two bytes
 * are peeked only so that messages can say "gzip" (offsets in messages are
 * then offsets in the decompressed stream). The header is checked field by
 * field before anything is allocated, and the size it promises is capped at
 * 2^31 bytes. The data buffer then grows with the bytes actually read
 * (doubling from 1 MiB), so a 20-byte file whose header promises 2 GiB costs
 * 1 MiB before it is rejected as truncated, not 2 GiB; each growth is
 * weighed against the host memory available first. One byte
 * past the data is read to reject trailing garbage. (zlib itself skips
 * non-gzip garbage after a gzip member, so only plain files and extra gzip
 * members are caught there.) */
#include "data/idx.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "core/files.h"
#include "core/host_memory.h"

#define IDX_MAX_DATA_BYTES ((int64_t)1 << 31)
#define IDX_FIRST_CHUNK ((int64_t)1 << 20)
#define IDX_TYPE_UBYTE 0x08

typedef struct idx_reader {
    gzFile gz;
    const char *path;
    const char *kind; /* "" or " (gzip)", appended to the path in messages */
    int64_t offset;   /* bytes consumed so far (decompressed) */
} idx_reader;

/* Reads up to n bytes into buf and sets *got; a short count means end of
 * file. Fails only on a read or decompression error. */
static pmoe_status read_bytes(idx_reader *r, void *buf, int64_t n, int64_t *got, pmoe_error *err) {
    *got = 0;
    while (*got < n) {
        int64_t chunk = n - *got;
        if (chunk > ((int64_t)1 << 30)) chunk = (int64_t)1 << 30; /* gzread takes unsigned */
        int k = gzread(r->gz, (char *)buf + *got, (unsigned)chunk);
        if (k <= 0) break;
        *got += k;
    }
    r->offset += *got;
    if (*got < n) {
        int errnum = Z_OK;
        const char *msg = gzerror(r->gz, &errnum);
        if (errnum == Z_ERRNO)
            return pmoe_fail(err, PMOE_ERR_IO, "%s%s: read error at offset %lld: %s", r->path,
                             r->kind, (long long)r->offset, strerror(errno));
        if (errnum != Z_OK) {
            /* zlib prefixes its message with the path, which we print already. */
            size_t path_len = strlen(r->path);
            if (strncmp(msg, r->path, path_len) == 0 && strncmp(msg + path_len, ": ", 2) == 0)
                msg += path_len + 2;
            return pmoe_fail(err, PMOE_ERR_FORMAT,
                             "%s%s: gzip error: %s (reading at decompressed offset %lld)", r->path,
                             r->kind, msg, (long long)r->offset);
        }
    }
    return PMOE_OK;
}

static uint32_t big_endian_u32(const uint8_t *b) {
    return ((uint32_t)b[0] << 24) | ((uint32_t)b[1] << 16) | ((uint32_t)b[2] << 8) | b[3];
}

/* Reads and checks the header; fills out->ndim and out->dims and the data size. */
static pmoe_status read_header(idx_reader *r, int expected_ndim, pmoe_idx *out, int64_t *data_bytes,
                               pmoe_error *err) {
    uint8_t head[4 + 4 * 3];
    int64_t got;
    pmoe_status st = read_bytes(r, head, 4, &got, err);
    if (st) return st;
    if (got < 4)
        return pmoe_fail(err, PMOE_ERR_FORMAT,
                         "%s%s: truncated at offset %lld: expected 4 bytes of IDX header", r->path,
                         r->kind, (long long)r->offset);
    if (head[0] != 0 || head[1] != 0)
        return pmoe_fail(err, PMOE_ERR_FORMAT,
                         "%s%s: offset 0: expected IDX magic 0x00 0x00, found 0x%02x 0x%02x "
                         "(not an IDX file)",
                         r->path, r->kind, head[0], head[1]);
    if (head[2] != IDX_TYPE_UBYTE)
        return pmoe_fail(err, PMOE_ERR_FORMAT,
                         "%s%s: offset 2: expected IDX type 0x08 (unsigned byte), found 0x%02x",
                         r->path, r->kind, head[2]);
    if (head[3] != expected_ndim)
        return pmoe_fail(err, PMOE_ERR_FORMAT, "%s%s: offset 3: expected %d dimension%s, found %d",
                         r->path, r->kind, expected_ndim, expected_ndim == 1 ? "" : "s", head[3]);

    int64_t dims_bytes = 4 * (int64_t)expected_ndim;
    st = read_bytes(r, head + 4, dims_bytes, &got, err);
    if (st) return st;
    if (got < dims_bytes)
        return pmoe_fail(err, PMOE_ERR_FORMAT,
                         "%s%s: truncated at offset %lld: expected %lld bytes of IDX header",
                         r->path, r->kind, (long long)r->offset, (long long)(4 + dims_bytes));

    int64_t total = 1;
    for (int i = 0; i < expected_ndim; i++) {
        int64_t dim = big_endian_u32(head + 4 + 4 * i);
        if (dim == 0)
            return pmoe_fail(err, PMOE_ERR_FORMAT, "%s%s: offset %d: dimension %d is 0", r->path,
                             r->kind, 4 + 4 * i, i);
        /* total <= 2^31 and dim < 2^32 here, so the product cannot overflow. */
        total *= dim;
        if (total > IDX_MAX_DATA_BYTES)
            return pmoe_fail(err, PMOE_ERR_FORMAT,
                             "%s%s: offset %d: dimension %d (%lld) makes the data larger than "
                             "the 2^31-byte limit",
                             r->path, r->kind, 4 + 4 * i, i, (long long)dim);
        out->dims[i] = dim;
    }
    out->ndim = expected_ndim;
    *data_bytes = total;
    return PMOE_OK;
}

pmoe_status pmoe_idx_read(const char *path, int expected_ndim, pmoe_idx *out, pmoe_error *err) {
    memset(out, 0, sizeof *out);
    if (expected_ndim < 1 || expected_ndim > 3)
        return pmoe_fail(err, PMOE_ERR_INTERNAL, "%s: pmoe_idx_read asked for %d dimensions", path,
                         expected_ndim);
    /* Opened here (a regular file, never blocking on a FIFO), then handed to
     * zlib, which also reads plain files. */
    FILE *probe = pmoe_open_regular(path, NULL, NULL, err);
    if (!probe) return PMOE_ERR_IO;
    unsigned char magic[2] = {0, 0};
    const int gzip = fread(magic, 1, 2, probe) == 2 && magic[0] == 0x1f && magic[1] == 0x8b;
    const int fd = dup(fileno(probe));
    fclose(probe);
    idx_reader r = {NULL, path, gzip ? " (gzip)" : "", 0};
    r.gz = fd >= 0 && lseek(fd, 0, SEEK_SET) == 0 ? gzdopen(fd, "rb") : NULL;
    if (!r.gz) {
        const int code = errno;
        if (fd >= 0) close(fd);
        return pmoe_fail(err, PMOE_ERR_IO, "%s: cannot open: %s", path, strerror(code));
    }
    gzbuffer(r.gz, 1 << 18);

    pmoe_idx idx = {0};
    int64_t data_bytes = 0, got = 0;
    pmoe_status st = read_header(&r, expected_ndim, &idx, &data_bytes, err);
    if (st) goto fail;

    const int64_t data_start = r.offset;
    int64_t have = 0, capacity = 0;
    while (have < data_bytes) {
        if (have == capacity) {
            int64_t grown = capacity ? 2 * capacity : IDX_FIRST_CHUNK;
            if (grown > data_bytes) grown = data_bytes;
            if (grown - capacity >= IDX_FIRST_CHUNK) { /* weighed before its pages fill */
                char what[1200];
                snprintf(what, sizeof what, "the IDX data of %s", path);
                st = pmoe_host_memory_check(grown - capacity, what, err);
                if (st) goto fail;
            }
            uint8_t *bigger = realloc(idx.data, (size_t)grown);
            if (!bigger) {
                st = pmoe_fail(err, PMOE_ERR_OOM, "%s: cannot allocate %lld bytes for the IDX data",
                               path, (long long)grown);
                goto fail;
            }
            idx.data = bigger;
            capacity = grown;
        }
        st = read_bytes(&r, idx.data + have, capacity - have, &got, err);
        if (st) goto fail;
        const int at_end = got < capacity - have;
        have += got;
        if (at_end) break;
    }
    if (have < data_bytes) {
        st = pmoe_fail(err, PMOE_ERR_FORMAT,
                       "%s%s: truncated at offset %lld: expected %lld bytes of data from offset "
                       "%lld, found %lld",
                       path, r.kind, (long long)r.offset, (long long)data_bytes,
                       (long long)data_start, (long long)have);
        goto fail;
    }
    uint8_t extra;
    st = read_bytes(&r, &extra, 1, &got, err);
    if (st) goto fail;
    if (got != 0) {
        st = pmoe_fail(err, PMOE_ERR_FORMAT,
                       "%s%s: unexpected bytes after offset %lld (the end of the data the "
                       "header promises)",
                       path, r.kind, (long long)(data_start + data_bytes));
        goto fail;
    }
    gzclose(r.gz);
    *out = idx;
    return PMOE_OK;

fail:
    gzclose(r.gz);
    free(idx.data);
    return st;
}

void pmoe_idx_free(pmoe_idx *idx) {
    if (!idx) return;
    free(idx->data);
    memset(idx, 0, sizeof *idx);
}

static int is_regular_file(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

pmoe_status pmoe_idx_find(const char *dir, const char *base, char *out, int out_size,
                          pmoe_error *err) {
    const char *sep = dir[0] ? "/" : "";
    int n = snprintf(out, (size_t)out_size, "%s%s%s", dir, sep, base);
    if (n < 0 || n + 3 >= out_size)
        return pmoe_fail(err, PMOE_ERR_IO, "%s%s%s: path longer than %d characters", dir, sep, base,
                         out_size - 4);
    if (is_regular_file(out)) return PMOE_OK;
    strcat(out, ".gz");
    if (is_regular_file(out)) return PMOE_OK;
    out[n] = '\0';
    return pmoe_fail(err, PMOE_ERR_IO, "%s: no such file (nor %s.gz)", out, out);
}

pmoe_status pmoe_idx_split_load(const char *dir, const char *prefix, pmoe_idx_split *out,
                                pmoe_error *err) {
    memset(out, 0, sizeof *out);
    char base[256];
    snprintf(base, sizeof base, "%s-images-idx3-ubyte", prefix);
    pmoe_status st = pmoe_idx_find(dir, base, out->images_path, (int)sizeof out->images_path, err);
    if (st) return st;
    snprintf(base, sizeof base, "%s-labels-idx1-ubyte", prefix);
    st = pmoe_idx_find(dir, base, out->labels_path, (int)sizeof out->labels_path, err);
    if (st) return st;

    st = pmoe_idx_read(out->images_path, 3, &out->images, err);
    if (st) return st;
    st = pmoe_idx_read(out->labels_path, 1, &out->labels, err);
    if (st) {
        pmoe_idx_free(&out->images);
        return st;
    }
    if (out->images.dims[0] != out->labels.dims[0]) {
        st = pmoe_fail(err, PMOE_ERR_FORMAT, "%s holds %lld images but %s holds %lld labels",
                       out->images_path, (long long)out->images.dims[0], out->labels_path,
                       (long long)out->labels.dims[0]);
        pmoe_idx_split_free(out);
        return st;
    }
    return PMOE_OK;
}

void pmoe_idx_split_free(pmoe_idx_split *split) {
    if (!split) return;
    pmoe_idx_free(&split->images);
    pmoe_idx_free(&split->labels);
}

pmoe_status pmoe_idx_check_labels(const pmoe_idx_split *split, int classes, pmoe_error *err) {
    for (int64_t i = 0; i < split->labels.dims[0]; i++)
        if (split->labels.data[i] >= classes)
            return pmoe_fail(err, PMOE_ERR_FORMAT,
                             "%s: label at index %lld (offset %lld) is %d, expected 0..%d",
                             split->labels_path, (long long)i, (long long)(8 + i),
                             split->labels.data[i], classes - 1);
    return PMOE_OK;
}

const char *pmoe_idx_dir_name(const char *dir, char *buf, size_t buf_size) {
    size_t len = strlen(dir);
    while (len > 1 && dir[len - 1] == '/') len--;
    size_t start = len;
    while (start > 0 && dir[start - 1] != '/') start--;
    snprintf(buf, buf_size, "%.*s", (int)(len - start), dir + start);
    return buf[0] ? buf : "IDX items";
}
