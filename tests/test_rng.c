/* test_rng.c: the counter-based generator is a pure function of
 * (seed, stream, counter), its normals have the right moments, and the
 * shuffle is a permutation. */
#include <math.h>
#include <stdlib.h>

#include "core/rng.h"
#include "test_util.h"

int main(void) {
    /* Same key and counter, same value; any change of the three changes it. */
    CHECK(pmoe_rng_bits(1, 2, 3) == pmoe_rng_bits(1, 2, 3));
    CHECK(pmoe_rng_bits(1, 2, 3) != pmoe_rng_bits(2, 2, 3));
    CHECK(pmoe_rng_bits(1, 2, 3) != pmoe_rng_bits(1, 3, 3));
    CHECK(pmoe_rng_bits(1, 2, 3) != pmoe_rng_bits(1, 2, 4));

    /* Sequential draws equal the pure accessor at the same counters, so a
     * thread drawing element i directly gets what a loop would. */
    pmoe_rng a = pmoe_rng_make(7, 11), b = pmoe_rng_make(7, 11);
    int same = 1;
    for (uint64_t i = 0; i < 100; i++)
        same &= pmoe_rng_next_normal(&a) == pmoe_rng_normal_at(&b, i);
    CHECK(same);

    /* Moments of 200k normals and uniforms. */
    pmoe_rng r = pmoe_rng_make(3, 5);
    const int N = 200000;
    double sum = 0, sq = 0, usum = 0;
    for (int i = 0; i < N; i++) {
        double x = pmoe_rng_normal_at(&r, (uint64_t)i);
        sum += x;
        sq += x * x;
        double u = pmoe_rng_uniform_at(&r, (uint64_t)i);
        CHECK_MSG(u >= 0.0 && u < 1.0, "uniform %g out of [0,1)", u);
        usum += u;
    }
    double mean = sum / N, var = sq / N - mean * mean;
    CHECK_MSG(fabs(mean) < 0.01, "normal mean %g", mean);
    CHECK_MSG(fabs(var - 1.0) < 0.02, "normal variance %g", var);
    CHECK_MSG(fabs(usum / N - 0.5) < 0.005, "uniform mean %g", usum / N);

    /* next_below stays in range and hits every value. */
    int seen[7] = {0};
    for (int i = 0; i < 1000; i++) {
        uint64_t v = pmoe_rng_next_below(&r, 7);
        CHECK(v < 7);
        if (v < 7) seen[v]++;
    }
    for (int i = 0; i < 7; i++) CHECK(seen[i] > 50);

    /* Shuffle: a permutation, deterministic, and not the identity. */
    int64_t p[100], q[100];
    for (int i = 0; i < 100; i++) p[i] = q[i] = i;
    pmoe_rng s1 = pmoe_rng_make(9, 1), s2 = pmoe_rng_make(9, 1);
    pmoe_rng_shuffle(&s1, p, 100);
    pmoe_rng_shuffle(&s2, q, 100);
    int count[100] = {0}, identical = 1, moved = 0;
    for (int i = 0; i < 100; i++) {
        count[p[i]]++;
        identical &= p[i] == q[i];
        moved += p[i] != i;
    }
    int perm = 1;
    for (int i = 0; i < 100; i++) perm &= count[i] == 1;
    CHECK(perm);
    CHECK(identical);
    CHECK(moved > 50);
    return test_finish("test_rng");
}
