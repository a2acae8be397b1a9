/* safetensors.c: see safetensors.h. */
#include "core/safetensors.h"

#include "core/files.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum { HEADER_LIMIT = 100 << 20 }; /* a larger JSON header is not a pmoe file */

static int host_is_little_endian(void) {
    const uint16_t one = 1;
    return *(const uint8_t *)&one == 1;
}

/* ---- writing ---- */

static char *build_header(const pmoe_st_entry *t, int count, const pmoe_st_meta *meta,
                          int meta_count, int64_t *data_bytes, pmoe_error *err) {
    cJSON *root = cJSON_CreateObject();
    if (!root) return NULL;
    if (meta_count > 0) {
        cJSON *m = cJSON_AddObjectToObject(root, "__metadata__");
        for (int i = 0; m && i < meta_count; i++)
            cJSON_AddStringToObject(m, meta[i].key, meta[i].value);
    }
    int64_t offset = 0;
    for (int i = 0; i < count; i++) {
        int64_t n = 1;
        for (int d = 0; d < t[i].ndim; d++) n *= t[i].shape[d];
        cJSON *e = cJSON_AddObjectToObject(root, t[i].name);
        if (!e) break;
        cJSON_AddStringToObject(e, "dtype", "F32");
        cJSON *shape = cJSON_AddArrayToObject(e, "shape");
        for (int d = 0; shape && d < t[i].ndim; d++)
            cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)t[i].shape[d]));
        cJSON *off = cJSON_AddArrayToObject(e, "data_offsets");
        if (off) {
            cJSON_AddItemToArray(off, cJSON_CreateNumber((double)offset));
            cJSON_AddItemToArray(off, cJSON_CreateNumber((double)(offset + 4 * n)));
        }
        offset += 4 * n;
    }
    char *text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!text) pmoe_fail(err, PMOE_ERR_OOM, "safetensors: cannot build the header");
    *data_bytes = offset;
    return text;
}

pmoe_status pmoe_safetensors_write(const char *path, const pmoe_st_entry *tensors, int tensor_count,
                                   const pmoe_st_meta *meta, int meta_count, pmoe_error *err) {
    if (!host_is_little_endian())
        return pmoe_fail(err, PMOE_ERR_UNSUPPORTED,
                         "safetensors: big-endian hosts are not supported");
    int64_t data_bytes = 0;
    char *header = build_header(tensors, tensor_count, meta, meta_count, &data_bytes, err);
    if (!header) return PMOE_ERR_OOM;
    /* Pad the header with spaces so the data starts 8-byte aligned. */
    size_t len = strlen(header), padded = (len + 8 + 7) / 8 * 8 - 8;
    pmoe_atomic_file out;
    pmoe_status s = pmoe_atomic_open(&out, path, err);
    if (s) {
        free(header);
        return s;
    }
    FILE *f = out.stream;
    uint8_t size_le[8];
    for (int i = 0; i < 8; i++) size_le[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    int ok = fwrite(size_le, 1, 8, f) == 8 && fwrite(header, 1, len, f) == len;
    for (size_t i = len; ok && i < padded; i++) ok = fputc(' ', f) != EOF;
    free(header);
    for (int i = 0; ok && i < tensor_count; i++) {
        int64_t n = 1;
        for (int d = 0; d < tensors[i].ndim; d++) n *= tensors[i].shape[d];
        ok = n == 0 || fwrite(tensors[i].data, sizeof(float), (size_t)n, f) == (size_t)n;
    }
    (void)data_bytes;
    return pmoe_atomic_commit(&out, err); /* a failed write above is found there */
}

/* ---- reading ---- */

static pmoe_status bad(pmoe_error *err, const char *origin, int64_t offset, const char *what) {
    return pmoe_fail(err, PMOE_ERR_FORMAT, "%s: offset %lld: %s", origin, (long long)offset, what);
}

/* A JSON number that is a non-negative integer below 2^53. */
static int as_count(const cJSON *v, int64_t *out) {
    if (!cJSON_IsNumber(v)) return 0;
    double d = v->valuedouble;
    if (!(d >= 0 && d <= 9007199254740992.0) || d != (double)(int64_t)d) return 0;
    *out = (int64_t)d;
    return 1;
}

/* The file offset of entry `name`'s key in the header text, so a message can
 * point at the entry; the header's start (8) when the key is not found
 * verbatim (it was written with escapes). */
static int64_t entry_offset(const char *text, const char *name) {
    const size_t len = strlen(name);
    for (const char *p = strchr(text, '"'); p; p = strchr(p + 1, '"')) {
        if (strncmp(p + 1, name, len) != 0 || p[1 + len] != '"') continue;
        const char *q = p + 2 + len;
        while (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r') q++;
        if (*q == ':') return 8 + (int64_t)(p - text);
    }
    return 8;
}

typedef struct data_span {
    int64_t begin, end;
    const char *name;
} data_span;

static int span_order(const void *a, const void *b) {
    const data_span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return (x->end > y->end) - (x->end < y->end);
}

/* safetensors requires the tensors' data to tile the data section exactly:
 * no overlap, no gap, nothing after the last tensor (the Python package
 * rejects anything else), so a checkpoint pmoe accepts, PyTorch opens too. */
static pmoe_status check_tiling(const pmoe_st_file *f, const char *origin, int64_t data_start,
                                pmoe_error *err) {
    data_span *spans = malloc(sizeof *spans * (size_t)(f->tensor_count + 1));
    if (!spans) return pmoe_fail(err, PMOE_ERR_OOM, "%s: cannot allocate the tensor table", origin);
    for (int i = 0; i < f->tensor_count; i++) {
        const int64_t begin = 4 * (int64_t)(f->tensors[i].data - f->data);
        spans[i] = (data_span){begin, begin + 4 * f->tensors[i].count, f->tensors[i].name};
    }
    qsort(spans, (size_t)f->tensor_count, sizeof *spans, span_order);
    int64_t covered = 0;
    pmoe_status s = PMOE_OK;
    for (int i = 0; !s && i < f->tensor_count; i++) {
        if (spans[i].begin != covered)
            s = pmoe_fail(err, PMOE_ERR_FORMAT,
                          "%s: offset %lld: tensor '%s' starts at data offset %lld, expected %lld "
                          "(tensors must cover the data without gaps or overlaps)",
                          origin, (long long)(data_start + spans[i].begin), spans[i].name,
                          (long long)spans[i].begin, (long long)covered);
        covered = spans[i].end;
    }
    if (!s && covered != f->data_bytes)
        s = pmoe_fail(err, PMOE_ERR_FORMAT,
                      "%s: offset %lld: %lld data bytes follow the last tensor (expected the "
                      "tensors to end at the end of the file)",
                      origin, (long long)(data_start + covered),
                      (long long)(f->data_bytes - covered));
    free(spans);
    return s;
}

pmoe_status pmoe_safetensors_parse(const uint8_t *bytes, size_t size, const char *origin,
                                   pmoe_st_file *out, pmoe_error *err) {
    memset(out, 0, sizeof *out);
    snprintf(out->origin, sizeof out->origin, "%s", origin);
    if (!host_is_little_endian())
        return pmoe_fail(err, PMOE_ERR_UNSUPPORTED,
                         "safetensors: big-endian hosts are not supported");
    if (size < 8)
        return bad(err, origin, (int64_t)size, "file too short for the 8-byte header length");
    uint64_t header_len = 0;
    for (int i = 0; i < 8; i++) header_len |= (uint64_t)bytes[i] << (8 * i);
    if (header_len > HEADER_LIMIT)
        return pmoe_fail(err, PMOE_ERR_FORMAT,
                         "%s: offset 0: header length %llu is over pmoe's limit of %d bytes "
                         "(100 MiB)",
                         origin, (unsigned long long)header_len, (int)HEADER_LIMIT);
    if (header_len > size - 8)
        return pmoe_fail(err, PMOE_ERR_FORMAT,
                         "%s: offset 0: header length %llu does not fit the file of %zu bytes",
                         origin, (unsigned long long)header_len, size);
    const int64_t data_start = 8 + (int64_t)header_len, data_size = (int64_t)size - data_start;
    char *text = malloc(header_len + 1);
    if (!text) return pmoe_fail(err, PMOE_ERR_OOM, "%s: cannot allocate the header", origin);
    memcpy(text, bytes + 8, header_len);
    text[header_len] = '\0';
    if (strlen(text) != header_len) {
        const int64_t nul_at = 8 + (int64_t)strlen(text);
        free(text);
        return bad(err, origin, nul_at, "NUL byte inside the JSON header");
    }
    cJSON *root = cJSON_Parse(text);
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        const int64_t error_at = at && at >= text && at <= text + header_len ? at - text : 0;
        free(text);
        return bad(err, origin, 8 + error_at, "the header is not valid JSON");
    }
    pmoe_status s = PMOE_OK;
    if (!cJSON_IsObject(root)) s = bad(err, origin, 8, "the header is not a JSON object");
    int entries = 0, meta_cap = 0;
    for (cJSON *e = root->child; !s && e; e = e->next) entries++;
    meta_cap = entries;
    if (!s) {
        out->tensors = calloc((size_t)entries + 1, sizeof *out->tensors);
        out->meta_keys = calloc((size_t)entries + 1, sizeof(char *));
        out->meta_values = calloc((size_t)entries + 1, sizeof(char *));
        out->data = malloc((size_t)data_size + 4);
        if (!out->tensors || !out->meta_keys || !out->meta_values || !out->data)
            s = pmoe_fail(err, PMOE_ERR_OOM, "%s: cannot allocate %lld bytes", origin,
                          (long long)data_size);
    }
    if (!s) {
        memcpy(out->data, bytes + data_start, (size_t)data_size);
        out->data_bytes = data_size;
    }
    for (cJSON *e = root ? root->child : NULL; !s && e; e = e->next) {
        char what[256];
        if (!e->string || strlen(e->string) >= PMOE_ST_MAX_NAME) {
            s = bad(err, origin, e->string ? entry_offset(text, e->string) : 8,
                    "a tensor name is missing or longer than 127 bytes");
            break;
        }
        if (strcmp(e->string, "__metadata__") == 0) {
            if (!cJSON_IsObject(e)) {
                s = bad(err, origin, entry_offset(text, e->string),
                        "__metadata__ is not an object");
                break;
            }
            for (cJSON *m = e->child; !s && m; m = m->next) {
                if (!cJSON_IsString(m) || !m->string) {
                    snprintf(what, sizeof what, "metadata '%.100s' is not a string",
                             m->string ? m->string : "");
                    s = bad(err, origin, m->string ? entry_offset(text, m->string) : 8, what);
                    break;
                }
                if (out->meta_count >= meta_cap) { /* grow: metadata can outnumber entries */
                    int cap = out->meta_count * 2 + 8;
                    char **k = realloc(out->meta_keys, (size_t)cap * sizeof(char *));
                    if (k) out->meta_keys = k;
                    char **v = realloc(out->meta_values, (size_t)cap * sizeof(char *));
                    if (v) out->meta_values = v;
                    if (!k || !v) {
                        s = pmoe_fail(err, PMOE_ERR_OOM, "%s: metadata", origin);
                        break;
                    }
                    meta_cap = cap;
                }
                out->meta_keys[out->meta_count] = strdup(m->string);
                out->meta_values[out->meta_count] = strdup(m->valuestring);
                out->meta_count++;
                if (!out->meta_keys[out->meta_count - 1] || !out->meta_values[out->meta_count - 1])
                    s = pmoe_fail(err, PMOE_ERR_OOM, "%s: metadata", origin);
            }
            continue;
        }
        const int64_t at = entry_offset(text, e->string);
        if (!cJSON_IsObject(e)) {
            snprintf(what, sizeof what,
                     "tensor '%s': expected an object with dtype, shape and data_offsets",
                     e->string);
            s = bad(err, origin, at, what);
            break;
        }
        if (pmoe_safetensors_find(out, e->string)) {
            snprintf(what, sizeof what, "tensor '%s' appears twice", e->string);
            s = bad(err, origin, at, what);
            break;
        }
        const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(e, "dtype");
        const cJSON *shape = cJSON_GetObjectItemCaseSensitive(e, "shape");
        const cJSON *offs = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
        if (!cJSON_IsString(dtype) || strcmp(dtype->valuestring, "F32") != 0) {
            snprintf(what, sizeof what, "tensor '%s': expected dtype F32", e->string);
            s = bad(err, origin, at, what);
            break;
        }
        pmoe_st_tensor *t = &out->tensors[out->tensor_count];
        snprintf(t->name, sizeof t->name, "%s", e->string);
        int ndim = cJSON_IsArray(shape) ? cJSON_GetArraySize(shape) : -1;
        int64_t count = 1, begin = 0, end = 0;
        int shape_ok = ndim >= 0 && ndim <= PMOE_ST_MAX_DIMS, overflow = 0;
        for (int d = 0; shape_ok && d < ndim; d++) {
            shape_ok = as_count(cJSON_GetArrayItem(shape, d), &t->shape[d]);
            overflow |= shape_ok && t->shape[d] != 0 && count > (INT64_MAX / 8) / t->shape[d];
            if (shape_ok && !overflow) count *= t->shape[d];
        }
        for (int d = 0; shape_ok && d < ndim; d++) /* a zero anywhere makes it empty */
            if (t->shape[d] == 0) overflow = 0, count = 0;
        if (!shape_ok || overflow) {
            if (overflow)
                snprintf(what, sizeof what,
                         "tensor '%s': the product of its shape's sizes overflows (more than "
                         "2^60 elements)",
                         e->string);
            else
                snprintf(what, sizeof what,
                         "tensor '%s': expected a shape of at most %d non-negative integer sizes",
                         e->string, PMOE_ST_MAX_DIMS);
            s = bad(err, origin, at, what);
            break;
        }
        if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2 ||
            !as_count(cJSON_GetArrayItem(offs, 0), &begin) ||
            !as_count(cJSON_GetArrayItem(offs, 1), &end) || begin > end || end > data_size ||
            end - begin != 4 * count || begin % 4 != 0) {
            snprintf(
                what, sizeof what,
                "tensor '%s': data_offsets must span 4 x %lld bytes inside the %lld data bytes",
                e->string, (long long)count, (long long)data_size);
            s = bad(err, origin, at, what);
            break;
        }
        t->ndim = ndim;
        t->count = count;
        t->data = out->data + begin / 4;
        out->tensor_count++;
    }
    cJSON_Delete(root);
    free(text);
    if (!s) s = check_tiling(out, origin, data_start, err);
    if (s) pmoe_safetensors_free(out);
    return s;
}

pmoe_status pmoe_safetensors_read(const char *path, pmoe_st_file *out, pmoe_error *err) {
    memset(out, 0, sizeof *out);
    size_t size = 0;
    FILE *f = pmoe_open_regular(path, NULL, &size, err);
    if (!f) return PMOE_ERR_IO;
    uint8_t *bytes = malloc(size ? size : 1);
    if (!bytes) {
        fclose(f);
        return pmoe_fail(err, PMOE_ERR_OOM, "%s: cannot allocate %zu bytes", path, size);
    }
    size_t got = fread(bytes, 1, size, f);
    fclose(f);
    pmoe_status s = got == size
                        ? pmoe_safetensors_parse(bytes, size, path, out, err)
                        : pmoe_fail(err, PMOE_ERR_IO, "%s: read %zu of %zu bytes", path, got, size);
    free(bytes);
    return s;
}

void pmoe_safetensors_free(pmoe_st_file *f) {
    for (int i = 0; i < f->meta_count; i++) {
        free(f->meta_keys[i]);
        free(f->meta_values[i]);
    }
    free(f->meta_keys);
    free(f->meta_values);
    free(f->tensors);
    free(f->data);
    memset(f, 0, sizeof *f);
}

const pmoe_st_tensor *pmoe_safetensors_find(const pmoe_st_file *f, const char *name) {
    for (int i = 0; i < f->tensor_count; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

const char *pmoe_safetensors_meta(const pmoe_st_file *f, const char *key) {
    for (int i = 0; i < f->meta_count; i++)
        if (strcmp(f->meta_keys[i], key) == 0) return f->meta_values[i];
    return NULL;
}
