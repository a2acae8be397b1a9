/* standin_internal.h: the stand-in's internals that its C files share but
 * the tests need not see (the allocation table and the stream bookkeeping
 * behind events). */
#ifndef PMOE_STANDIN_INTERNAL_H
#define PMOE_STANDIN_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "standin.h"

typedef struct standin_block {
    void *base;
    size_t bytes;
} standin_block;

int standin_block_add(void *base, size_t bytes);
int standin_block_remove(void *base, size_t *bytes);

standin_stream *standin_stream_create(void);
int standin_stream_destroy(standin_stream *s);
/* Items enqueued so far, items run so far, and running up to item `upto`. */
uint64_t standin_stream_position(const standin_stream *s);
uint64_t standin_stream_completed(const standin_stream *s);
int standin_stream_run_to(standin_stream *s, uint64_t upto);
const char *standin_sticky_why(void);
void standin_reset_sticky(void);

/* A copy of bytes between two places, run when its stream gets there. */
typedef struct standin_copy {
    void *dst;
    const void *src;
    size_t bytes;
    void *owned; /* a staged source, freed afterwards */
} standin_copy;
int standin_run_copy(void *arg);
void standin_free_copy(void *arg);

#endif
