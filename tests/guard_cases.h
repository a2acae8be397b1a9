/* guard_cases.h: the non-finite guard's random cases, one list for the
 * kernel's host-execution test (tests/kernels/test_kernels_host.c) and the
 * backends' test (tests/kernels/test_cuda_guard.c).
 *
 * A case is a list of arrays of random finite values (FLT_MAX, the
 * smallest normal and a denormal among them: large or tiny is still
 * finite); about half the cases poison some arrays with NaN (quiet, with a
 * sign, with a payload) or +-Inf at random positions, the first and last
 * included. Its expected verdict is 1 + the first poisoned array, 0 when
 * none is: the answer the op must give, worked out here without the op. */
#ifndef PMOE_GUARD_CASES_H
#define PMOE_GUARD_CASES_H

#include <float.h>
#include <stdint.h>
#include <string.h>

#include "core/rng.h"
#include "test_util.h"

enum { GUARD_MAX_ARRAYS = 8 };

typedef struct guard_case {
    int arrays;
    float *x[GUARD_MAX_ARRAYS]; /* host memory, test_util.h's buffers */
    int64_t count[GUARD_MAX_ARRAYS];
    int32_t expect;
} guard_case;

static inline float guard_bits(uint32_t bits) {
    float v;
    memcpy(&v, &bits, sizeof v);
    return v;
}

/* A case with arrays of up to max_count values (some empty, some of one);
 * may_poison 0 keeps it finite. */
static inline guard_case guard_case_make(pmoe_rng *r, int64_t max_count, int may_poison) {
    static const uint32_t poisons[] = {0x7fc00000u, 0xffc00000u, 0x7f800001u,
                                       0x7fffffffu, 0x7f800000u, 0xff800000u};
    const float finite_edges[] = {FLT_MAX, -FLT_MAX, FLT_MIN, guard_bits(1u), -0.0f};
    guard_case c;
    memset(&c, 0, sizeof c);
    c.arrays = 1 + (int)pmoe_rng_next_below(r, GUARD_MAX_ARRAYS);
    const int poisoned = may_poison && pmoe_rng_next_below(r, 2) == 0;
    for (int i = 0; i < c.arrays; i++) {
        const uint64_t kind = pmoe_rng_next_below(r, 6);
        const int64_t n = kind == 0   ? 0
                          : kind == 1 ? 1
                                      : (int64_t)pmoe_rng_next_below(r, (uint64_t)max_count) + 1;
        float *x = fbuf(n);
        for (int64_t j = 0; j < n; j++) x[j] = (float)(2.0 * pmoe_rng_next_uniform(r) - 1.0);
        for (int e = 0; e < 5 && n > 0; e++)
            x[pmoe_rng_next_below(r, (uint64_t)n)] = finite_edges[e];
        if (poisoned && n > 0 && pmoe_rng_next_below(r, 3) == 0) {
            const int64_t where[3] = {0, n - 1, (int64_t)pmoe_rng_next_below(r, (uint64_t)n)};
            const int places = 1 + (int)pmoe_rng_next_below(r, 3);
            for (int p = 0; p < places; p++)
                x[where[pmoe_rng_next_below(r, 3)]] =
                    guard_bits(poisons[pmoe_rng_next_below(r, sizeof poisons / sizeof *poisons)]);
            if (!c.expect) c.expect = i + 1;
        }
        c.x[i] = x;
        c.count[i] = n;
    }
    return c;
}

/* The state a case's step starts from: clean, or a run whose step `step`
 * was bad earlier (verdict `first`). */
static inline void guard_state(int32_t *guard, int32_t first, int64_t step) {
    guard[0] = first; /* PMOE_GUARD_FIRST */
    guard[1] = first ? (int32_t)(uint32_t)((uint64_t)step & 0xffffffffu) : 0;
    guard[2] = first ? (int32_t)(uint32_t)((uint64_t)step >> 32) : 0;
    guard[3] = 0; /* PMOE_GUARD_SCAN: clean between steps */
}

/* What the op must leave after a step numbered `step` of case c from state
 * `before` (hold: train.on_nonfinite = stop). */
static inline void guard_expect(const guard_case *c, const int32_t *before, int64_t step, int hold,
                                int32_t *after, int32_t *verdict) {
    memcpy(after, before, 4 * sizeof *after);
    *verdict = c->expect;
    if (!before[0] && c->expect) guard_state(after, c->expect, step);
    else if (before[0] && hold) *verdict = before[0];
}

#endif
