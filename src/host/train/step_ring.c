/* step_ring.c: the steps the host has not read yet (step_ring.h). Backend
 * buffers for the rows and the guard, host copies of them; one copy_out per
 * kind of row and read. */
#include "train/step_ring.h"

#include <stdlib.h>
#include <string.h>

pmoe_status step_ring_open(step_ring *ring, pmoe_backend *be, int capacity, pmoe_error *err) {
    memset(ring, 0, sizeof *ring);
    ring->be = be;
    ring->capacity = capacity < 1 ? 1 : capacity;
    const size_t rows = (size_t)ring->capacity;
    static const int32_t zero[PMOE_GUARD_WORDS] = {0};
    pmoe_status s = be->alloc(be, rows * 2 * sizeof(float), (void **)&ring->stats, err);
    if (!s) s = be->alloc(be, rows * sizeof(int32_t), (void **)&ring->verdicts, err);
    if (!s) s = be->alloc(be, sizeof zero, (void **)&ring->guard, err);
    if (!s) s = be->copy_in(be, ring->guard, zero, sizeof zero, err);
    if (!s) {
        ring->host_stats = malloc(rows * 2 * sizeof(float));
        ring->host_verdicts = malloc(rows * sizeof(int32_t));
        ring->meta = malloc(rows * sizeof(step_meta));
        if (!ring->host_stats || !ring->host_verdicts || !ring->meta)
            s = pmoe_fail(err, PMOE_ERR_OOM, "out of host memory for %d steps' results",
                          ring->capacity);
    }
    if (s) step_ring_close(ring);
    return s;
}

void step_ring_close(step_ring *ring) {
    pmoe_backend *be = ring->be;
    const size_t rows = (size_t)ring->capacity;
    if (be) {
        if (ring->stats) be->release(be, ring->stats, rows * 2 * sizeof(float));
        if (ring->verdicts) be->release(be, ring->verdicts, rows * sizeof(int32_t));
        if (ring->guard) be->release(be, ring->guard, PMOE_GUARD_WORDS * sizeof(int32_t));
    }
    free(ring->host_stats);
    free(ring->host_verdicts);
    free(ring->meta);
    memset(ring, 0, sizeof *ring);
}

void step_ring_push(step_ring *ring, const step_meta *meta) { ring->meta[ring->pending++] = *meta; }

pmoe_status step_ring_read(step_ring *ring, pmoe_error *err) {
    pmoe_backend *be = ring->be;
    const size_t rows = (size_t)ring->pending;
    pmoe_status s = be->copy_out(be, ring->host_guard, ring->guard, sizeof ring->host_guard, err);
    if (!s && rows)
        s = be->copy_out(be, ring->host_stats, ring->stats, rows * 2 * sizeof(float), err);
    if (!s && rows)
        s = be->copy_out(be, ring->host_verdicts, ring->verdicts, rows * sizeof(int32_t), err);
    return s;
}
