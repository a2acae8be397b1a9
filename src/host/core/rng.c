/* rng.c: counter-based random numbers (see rng.h for the design). */
#include "core/rng.h"

#include <math.h>

static uint64_t mix64(uint64_t z) {
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t key_of(uint64_t seed, uint64_t stream) {
    return mix64(seed ^ mix64(stream ^ 0x5851f42d4c957f2dULL));
}

static uint64_t bits_with_key(uint64_t key, uint64_t counter) {
    /* Two rounds so that neighbouring counters decorrelate fully. */
    return mix64(mix64(key + counter * 0xd1b54a32d192ed03ULL) ^ key);
}

uint64_t pmoe_rng_bits(uint64_t seed, uint64_t stream, uint64_t counter) {
    return bits_with_key(key_of(seed, stream), counter);
}

pmoe_rng pmoe_rng_make(uint64_t seed, uint64_t stream) {
    pmoe_rng r = {key_of(seed, stream), 0};
    return r;
}

static double to_unit(uint64_t bits) { return (double)(bits >> 11) * (1.0 / 9007199254740992.0); }

double pmoe_rng_uniform_at(const pmoe_rng *r, uint64_t counter) {
    return to_unit(bits_with_key(r->key, counter));
}

double pmoe_rng_normal_at(const pmoe_rng *r, uint64_t counter) {
    /* Box-Muller on two words derived from the same counter. */
    uint64_t a = bits_with_key(r->key, 2 * counter);
    uint64_t b = bits_with_key(r->key, 2 * counter + 1);
    double u1 = 1.0 - to_unit(a); /* (0, 1]: log stays finite */
    double u2 = to_unit(b);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

uint64_t pmoe_rng_next_bits(pmoe_rng *r) { return bits_with_key(r->key, r->counter++); }
double pmoe_rng_next_uniform(pmoe_rng *r) { return to_unit(pmoe_rng_next_bits(r)); }
double pmoe_rng_next_normal(pmoe_rng *r) { return pmoe_rng_normal_at(r, r->counter++); }

uint64_t pmoe_rng_next_below(pmoe_rng *r, uint64_t n) {
    uint64_t limit = UINT64_MAX - UINT64_MAX % n; /* reject the biased tail */
    uint64_t x;
    do {
        x = pmoe_rng_next_bits(r);
    } while (x >= limit);
    return x % n;
}

void pmoe_rng_shuffle(pmoe_rng *r, int64_t *items, int64_t count) {
    for (int64_t i = count - 1; i > 0; i--) {
        int64_t j = (int64_t)pmoe_rng_next_below(r, (uint64_t)i + 1);
        int64_t t = items[i];
        items[i] = items[j];
        items[j] = t;
    }
}
