/* test_phase_timer.c: the phase timer tiles time into phases, and the NVTX
 * ranges are on or off as the build says. Built twice (tests/CMakeLists.txt):
 * with NVTX where the headers exist, and always once without, so both
 * builds compile and run. EXPECT_NVTX says which this is. */
#include <time.h>

#include "core/phase_timer.h"
#include "test_util.h"

static void spin(double seconds) {
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    do clock_gettime(CLOCK_MONOTONIC, &b);
    while ((double)(b.tv_sec - a.tv_sec) + 1e-9 * (double)(b.tv_nsec - a.tv_nsec) < seconds);
}

int main(void) {
    CHECK(pmoe_trace_enabled() == EXPECT_NVTX);
    pmoe_phase_timer t;
    pmoe_timer_reset(&t);
    t.wait = NULL;
    pmoe_timer_enter(&t, PMOE_T_DATA, 1);
    spin(0.02);
    pmoe_timer_enter(&t, PMOE_T_EXPERTS, 2); /* closes data */
    spin(0.01);
    pmoe_timer_stop(&t);
    pmoe_timer_stop(&t); /* a second stop is harmless */
    pmoe_timer_enter(NULL, PMOE_T_GATE, 0); /* a NULL timer is a no-op */
    /* lower bounds are exact; upper bounds only catch nonsense (loaded CI machines) */
    CHECK_MSG(t.seconds[PMOE_T_DATA] >= 0.02 && t.seconds[PMOE_T_DATA] < 10.0, "data %g", t.seconds[PMOE_T_DATA]);
    CHECK_MSG(t.seconds[PMOE_T_EXPERTS] >= 0.01 && t.seconds[PMOE_T_EXPERTS] < 10.0, "experts %g",
              t.seconds[PMOE_T_EXPERTS]);
    CHECK(t.seconds[PMOE_T_GATE] == 0.0 && t.current == -1);
    pmoe_trace_push("step", 7);
    pmoe_trace_pop();
    for (int i = 0; i < PMOE_T_COUNT; i++) CHECK(pmoe_timer_name((pmoe_phase_id)i)[0] != '?');
    return test_finish(EXPECT_NVTX ? "test_phase_timer (NVTX on)" : "test_phase_timer (NVTX off)");
}
