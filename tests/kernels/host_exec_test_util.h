/* host_exec_test_util.h: what the host-execution kernel tests
 * (test_kernels_host.c, test_kernels_host_layers.c) share: running a launch
 * under several orders of a block's threads between barriers (forward, a
 * seeded shuffle, backward) and requiring the same output bits under all of
 * them, and the closing line with the emulator's fiber switches.
 *
 * A missing barrier or a race shows up as a difference between orders.
 * Outputs are poisoned (0xff bytes: NaN as floats, -1 as ints) before every
 * run, so an element a kernel fails to write is caught; a call that adds
 * into an output restores what it starts from itself. */
#ifndef PMOE_HOST_EXEC_TEST_UTIL_H
#define PMOE_HOST_EXEC_TEST_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pmoe_kernels.h"
#include "test_util.h"

typedef struct out_buf {
    void *ptr;
    size_t bytes;
} out_buf;

typedef int (*kernel_call)(void *ctx);

static const struct {
    int order;
    uint64_t seed;
    const char *name;
} ORDERS[] = {{PMOE_EMU_FORWARD, 0, "forward"},
              {PMOE_EMU_SHUFFLE, 20240917, "shuffle"},
              {PMOE_EMU_BACKWARD, 0, "backward"}};

/* When set, run_orders prints each launch's name before running it. */
static int run_orders_announce;

/* Runs call under `orders` (at most 3) thread orders, the count (at most 8)
 * outputs poisoned before each, and requires status 0 and identical output
 * bits. The last run's outputs stay; the order is forward again after. */
static inline int run_orders(const char *what, kernel_call call, void *ctx, out_buf *outs,
                             int count, int orders) {
    unsigned char *first[8] = {0};
    int same = 1;
    if (run_orders_announce) printf(" %s\n", what);
    for (int o = 0; o < orders; o++) {
        for (int i = 0; i < count; i++) memset(outs[i].ptr, 0xff, outs[i].bytes);
        pmoe_emu_set_order(ORDERS[o].order, ORDERS[o].seed);
        int rc = call(ctx);
        CHECK_MSG(rc == 0, "%s under %s order: %s", what, ORDERS[o].name, pmoe_hx_error_string(rc));
        if (rc) {
            for (int i = 0; i < count; i++) free(first[i]);
            pmoe_emu_set_order(PMOE_EMU_FORWARD, 0);
            return 0;
        }
        for (int i = 0; i < count; i++) {
            if (o == 0) {
                first[i] = malloc(outs[i].bytes);
                memcpy(first[i], outs[i].ptr, outs[i].bytes);
            } else if (memcmp(first[i], outs[i].ptr, outs[i].bytes) != 0) {
                same = 0;
                fprintf(stderr, "FAIL %s: output %d differs between the forward and %s orders\n",
                        what, i, ORDERS[o].name);
            }
        }
    }
    for (int i = 0; i < count; i++) free(first[i]);
    CHECK_MSG(same, "%s: identical under %d thread orders", what, orders);
    pmoe_emu_set_order(PMOE_EMU_FORWARD, 0);
    return same;
}

/* Prints the emulator's fiber switches and the CPU time since start, then
 * the test's summary; returns the exit code. */
static inline int host_exec_finish(const char *name, clock_t start) {
    printf("%llu fiber switches, %.1f s CPU\n", (unsigned long long)pmoe_emu_switches(),
           (double)(clock() - start) / CLOCKS_PER_SEC);
    return test_finish(name);
}

#endif
