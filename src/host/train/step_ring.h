/* step_ring.h: the steps the host has not read yet (train.sync_every).
 *
 * A training step leaves its loss, its correct count and the non-finite
 * guard's verdict in backend memory, in the ring's next row; the host
 * reads every pending row in one copy every train.sync_every steps and at
 * every epoch end, checkpoint and stop, so that on an asynchronous backend
 * the host runs ahead of the device instead of waiting for it each step.
 * The guard's run-long words (backend.h, nonfinite_guard) live here too.
 * Host-side facts of each pending step (its number, epoch, batch, time)
 * ride along in `meta`, so that what is reported at a read is exactly what
 * a per-step read would have reported. */
#ifndef PMOE_TRAIN_STEP_RING_H
#define PMOE_TRAIN_STEP_RING_H

#include <stdint.h>

#include "backend/backend.h"

typedef struct step_meta {
    int epoch;
    int64_t step;        /* the phase's 1-based step */
    int64_t batch_index; /* within the epoch, 1-based */
    int64_t count;       /* samples in the batch */
    double elapsed;      /* seconds since the phase began, when it was queued */
} step_meta;

typedef struct step_ring {
    pmoe_backend *be;
    int capacity, pending;
    float *stats;      /* backend: capacity x 2 (loss, correct) */
    int32_t *verdicts; /* backend: capacity */
    int32_t *guard;    /* backend: PMOE_GUARD_WORDS, zeroed at open */
    /* What the last read brought back (rows 0 .. pending - 1): */
    float *host_stats;
    int32_t *host_verdicts;
    int32_t host_guard[PMOE_GUARD_WORDS];
    step_meta *meta;
} step_ring;

/* Room for `capacity` pending steps on be. */
pmoe_status step_ring_open(step_ring *ring, pmoe_backend *be, int capacity, pmoe_error *err);
void step_ring_close(step_ring *ring);

/* The next row: where the step's stats are copied and its verdict goes. */
static inline float *step_ring_stats(const step_ring *ring) {
    return ring->stats + 2 * (int64_t)ring->pending;
}
static inline int32_t *step_ring_verdict(const step_ring *ring) {
    return ring->verdicts + ring->pending;
}
static inline int step_ring_full(const step_ring *ring) { return ring->pending == ring->capacity; }

/* Closes the next row (its ops are queued) with its host-side facts. */
void step_ring_push(step_ring *ring, const step_meta *meta);

/* Brings the pending rows and the guard words back (one wait for the
 * backend); the caller reads them, then step_ring_clear starts over. */
pmoe_status step_ring_read(step_ring *ring, pmoe_error *err);
static inline void step_ring_clear(step_ring *ring) { ring->pending = 0; }

/* The first bad step the guard recorded (0: none). */
static inline int64_t step_ring_first_bad(const step_ring *ring) {
    return ring->host_guard[PMOE_GUARD_FIRST]
               ? (int64_t)((uint64_t)(uint32_t)ring->host_guard[PMOE_GUARD_STEP_HIGH] << 32 |
                           (uint32_t)ring->host_guard[PMOE_GUARD_STEP_LOW])
               : 0;
}

#endif
