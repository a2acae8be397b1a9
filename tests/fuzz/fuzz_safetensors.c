/* fuzz_safetensors.c: libFuzzer target for the safetensors parser (the
 * 8-byte length, the JSON header through cJSON, the tensor table).
 *
 * A parse that succeeds must describe only bytes inside the data it copied:
 * every tensor element and every metadata string is read, so an offset that
 * escaped the checks shows up in ASan, and the lookups must find each name. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/safetensors.h"

static volatile float sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    pmoe_st_file f;
    pmoe_error err;
    if (pmoe_safetensors_parse(data, size, "fuzz.safetensors", &f, &err) != PMOE_OK) {
        if (f.tensors || f.data || f.meta_keys) abort(); /* nothing left to free */
        return 0;
    }
    float sum = 0;
    int64_t covered = 0;
    for (int i = 0; i < f.tensor_count; i++) {
        const pmoe_st_tensor *t = &f.tensors[i];
        int64_t count = 1;
        for (int d = 0; d < t->ndim; d++) count *= t->shape[d];
        if (count != t->count || pmoe_safetensors_find(&f, t->name) != t) abort();
        for (int64_t k = 0; k < t->count; k++) sum += t->data[k];
        covered += 4 * t->count;
    }
    sink = sum;                           /* keeps the reads */
    if (covered != f.data_bytes) abort(); /* the tensors tile the data exactly */
    for (int i = 0; i < f.meta_count; i++) {
        const char *value = pmoe_safetensors_meta(&f, f.meta_keys[i]);
        if (!value || strlen(value) > size) abort();
    }
    pmoe_safetensors_free(&f);
    return 0;
}
