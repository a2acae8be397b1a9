/* tensor.h: float32 tensors with shapes, and allocation accounting.
 *
 * A tensor is a pointer into a backend's memory plus its shape; it owns no
 * policy. Memory accounting (current and peak bytes, allocation count) is
 * kept per allocator, so `pmoe bench` can report host and device peaks
 * separately. */
#ifndef PMOE_CORE_TENSOR_H
#define PMOE_CORE_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#include "pmoe/status.h"

#define PMOE_MAX_DIMS 5

typedef struct pmoe_tensor {
    float *data;
    int ndim;
    int64_t shape[PMOE_MAX_DIMS];
} pmoe_tensor;

static inline int64_t pmoe_tensor_numel(const pmoe_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

/* Writes "[2, 3, 4]" to out. */
void pmoe_tensor_shape_string(const pmoe_tensor *t, char *out, size_t out_size);

typedef struct pmoe_mem_stats {
    int64_t current_bytes;
    int64_t peak_bytes;
    int64_t allocations; /* live allocations */
    /* Where the backend's memory is the host's (CPU): */
    int64_t limit_bytes;   /* > 0: refuse to go beyond (the host memory available at start) */
    char limit_source[64]; /* what set the limit (core/host_memory.h) */
    int64_t held_bytes;    /* host memory taken for a while outside the allocator (an init
                            buffer): counted against the limit, not in the peak */
} pmoe_mem_stats;

void pmoe_mem_note_alloc(pmoe_mem_stats *m, size_t bytes);
void pmoe_mem_note_free(pmoe_mem_stats *m, size_t bytes);

/* PMOE_OK when `bytes` more fit under the limit, else the one-line
 * "out of host memory" error (naming `what` the bytes are for, when not
 * NULL). */
pmoe_status pmoe_mem_check(const pmoe_mem_stats *m, size_t bytes, pmoe_error *err);
pmoe_status pmoe_mem_check_for(const pmoe_mem_stats *m, size_t bytes, const char *what,
                               pmoe_error *err);

#endif
