/* test_phase_timer.c: the phase timer tiles time into phases, on the host
 * clock and on a device clock (a fake one standing in for CUDA events,
 * including running out of marks), and the NVTX ranges are on or off as
 * the build says. Built twice (tests/CMakeLists.txt):
 * with NVTX where the headers exist, and always once without, so both
 * builds compile and run. EXPECT_NVTX says which this is. */
#include <math.h>
#include <string.h>
#include <time.h>

#include "core/phase_timer.h"
#include "test_util.h"

static void spin(double seconds) {
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    do clock_gettime(CLOCK_MONOTONIC, &b);
    while ((double)(b.tv_sec - a.tv_sec) + 1e-9 * (double)(b.tv_nsec - a.tv_nsec) < seconds);
}

/* A device clock whose time the test sets: `now` in seconds, `capacity` marks. */
typedef struct fake_clock {
    double now, at[256];
    int used, capacity, resets;
} fake_clock;
static int fake_mark(void *ctx) {
    fake_clock *f = ctx;
    if (f->used == f->capacity) return -1;
    f->at[f->used] = f->now;
    return f->used++;
}
static double fake_seconds(void *ctx, int from, int to) {
    fake_clock *f = ctx;
    return f->at[to] - f->at[from];
}
static void fake_reset(void *ctx) {
    fake_clock *f = ctx;
    f->used = 0;
    f->resets++;
}
static int waits;
static void count_wait(void *ctx) { waits++; }

/* Alternates two phases `steps` times, each lasting 1 ms of the fake
 * clock, then stops: the phases must hold 1 ms per entry, whatever the
 * clock's capacity or the timer's span buffer forces. */
static void check_device_clock(int capacity, int steps) {
    fake_clock f = {0};
    f.capacity = capacity;
    const pmoe_device_clock clock = {&f, capacity, fake_mark, fake_seconds, fake_reset};
    pmoe_phase_timer t;
    memset(&t, 0, sizeof t);
    t.clock = &clock;
    t.wait = count_wait; /* must not be called: the clock replaces waiting */
    pmoe_timer_reset(&t);
    waits = 0;
    for (int i = 0; i < steps; i++) {
        pmoe_timer_enter(&t, i % 2 ? PMOE_T_EXPERTS : PMOE_T_DATA, (uint64_t)i);
        f.now += 1e-3;
    }
    pmoe_timer_stop(&t);
    const double data = t.seconds[PMOE_T_DATA], experts = t.seconds[PMOE_T_EXPERTS];
    const double want_data = 1e-3 * ((steps + 1) / 2), want_experts = 1e-3 * (steps / 2);
    CHECK_MSG(fabs(data - want_data) < 1e-9 && fabs(experts - want_experts) < 1e-9,
              "capacity %d, %d phases: data %.6f (want %.6f), experts %.6f (want %.6f)", capacity,
              steps, data, want_data, experts, want_experts);
    CHECK(waits == 0 && t.current == -1 && t.spans == 0 && f.used == 0);
    pmoe_timer_stop(&t); /* a second stop is harmless */
    CHECK(fabs(t.seconds[PMOE_T_DATA] - data) < 1e-12);
}

/* Entering the open phase again with its payload continues it (no new
 * mark, no new range); another payload opens a new interval of the same
 * phase; the time adds up either way. */
static void check_reentry(void) {
    fake_clock f = {0};
    f.capacity = 256;
    const pmoe_device_clock clock = {&f, 256, fake_mark, fake_seconds, fake_reset};
    pmoe_phase_timer t;
    memset(&t, 0, sizeof t);
    t.clock = &clock;
    pmoe_timer_reset(&t);
    pmoe_timer_enter(&t, PMOE_T_LAYERS, 8);
    f.now += 1e-3;
    pmoe_timer_enter(&t, PMOE_T_LAYERS, 8); /* the next layer of the same walk */
    f.now += 1e-3;
    CHECK_MSG(f.used == 1 && t.spans == 0, "re-entry took %d marks, %d spans", f.used, t.spans);
    pmoe_timer_enter(&t, PMOE_T_LAYERS, 4); /* another payload: a new interval */
    f.now += 1e-3;
    CHECK(f.used == 2 && t.spans == 1);
    pmoe_timer_enter(&t, PMOE_T_LOSS, 8);
    pmoe_timer_stop(&t);
    CHECK_MSG(fabs(t.seconds[PMOE_T_LAYERS] - 3e-3) < 1e-9, "layers %.6f (want 0.003)",
              t.seconds[PMOE_T_LAYERS]);
}

int main(void) {
    check_reentry();
    CHECK(pmoe_trace_enabled() == EXPECT_NVTX);
    check_device_clock(256, 2);   /* one step's phases, read at stop */
    check_device_clock(256, 150); /* more than the timer's span buffer */
    check_device_clock(7, 40);    /* a clock that runs out of marks */
    pmoe_phase_timer t;
    memset(&t, 0, sizeof t);
    pmoe_timer_reset(&t);
    t.wait = NULL;
    pmoe_timer_enter(&t, PMOE_T_DATA, 1);
    spin(0.02);
    pmoe_timer_enter(&t, PMOE_T_EXPERTS, 2); /* closes data */
    spin(0.01);
    pmoe_timer_stop(&t);
    pmoe_timer_stop(&t);                    /* a second stop is harmless */
    pmoe_timer_enter(NULL, PMOE_T_GATE, 0); /* a NULL timer is a no-op */
    /* lower bounds are exact; upper bounds only catch nonsense (loaded CI machines) */
    CHECK_MSG(t.seconds[PMOE_T_DATA] >= 0.02 && t.seconds[PMOE_T_DATA] < 10.0, "data %g",
              t.seconds[PMOE_T_DATA]);
    CHECK_MSG(t.seconds[PMOE_T_EXPERTS] >= 0.01 && t.seconds[PMOE_T_EXPERTS] < 10.0, "experts %g",
              t.seconds[PMOE_T_EXPERTS]);
    CHECK(t.seconds[PMOE_T_GATE] == 0.0 && t.current == -1);
    pmoe_trace_push("step", 7);
    pmoe_trace_pop();
    for (int i = 0; i < PMOE_T_COUNT; i++) CHECK(pmoe_timer_name((pmoe_phase_id)i)[0] != '?');
    return test_finish(EXPECT_NVTX ? "test_phase_timer (NVTX on)" : "test_phase_timer (NVTX off)");
}
