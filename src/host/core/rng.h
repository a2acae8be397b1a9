/* rng.h: a seeded, counter-based random generator.
 *
 * Every value is a pure function of (seed, stream, counter): element i of a
 * tensor initialised on stream s is the same whichever thread draws it and in
 * whatever order, so results never depend on the thread count. A stream is a
 * named purpose (a parameter, an epoch's shuffle, a dataset); the counter is
 * an index within it. The mixer is splitmix64's finaliser, which is a
 * bijection on 64-bit words with good avalanche. */
#ifndef PMOE_CORE_RNG_H
#define PMOE_CORE_RNG_H

#include <stdint.h>

typedef struct pmoe_rng {
    uint64_t key;     /* derived from (seed, stream) */
    uint64_t counter; /* next index for the sequential helpers */
} pmoe_rng;

/* The 64-bit word at (seed, stream, counter). */
uint64_t pmoe_rng_bits(uint64_t seed, uint64_t stream, uint64_t counter);

pmoe_rng pmoe_rng_make(uint64_t seed, uint64_t stream);

/* Pure accessors at an explicit counter (thread safe). */
double pmoe_rng_uniform_at(const pmoe_rng *r, uint64_t counter); /* [0, 1) */
double pmoe_rng_normal_at(const pmoe_rng *r, uint64_t counter);  /* N(0, 1) */

/* Sequential helpers: draw at r->counter and advance it. */
uint64_t pmoe_rng_next_bits(pmoe_rng *r);
double pmoe_rng_next_uniform(pmoe_rng *r);
double pmoe_rng_next_normal(pmoe_rng *r);
/* A uniform integer in [0, n), n > 0, without modulo bias. */
uint64_t pmoe_rng_next_below(pmoe_rng *r, uint64_t n);

/* Fisher-Yates shuffle of a permutation of [0, count). */
void pmoe_rng_shuffle(pmoe_rng *r, int64_t *items, int64_t count);

#endif
