/* target.c: the one constructor of a bench_target (bench_internal.h) and
 * its close. Every target, model or block, starts the same way: zeroed
 * state, its table of calls, and a backend of its own so that the backend's
 * peak is the target's alone. */
#include <stdlib.h>
#include <string.h>

#include "bench/bench_internal.h"

pmoe_status bench_target_open(bench_target *t, const bench_target_calls *calls, size_t state_size,
                              const pmoe_config *cfg, pmoe_error *err) {
    memset(t, 0, sizeof *t);
    t->calls = calls;
    t->state = calloc(1, state_size);
    if (!t->state) return pmoe_fail(err, PMOE_ERR_OOM, "bench: cannot allocate a target");
    pmoe_status st = pmoe_backend_create(cfg->train.device, cfg->train.threads, &t->be, err);
    if (!st)
        st = pmoe_backend_set_cpu_kernels(t->be, (pmoe_cpu_kernels)cfg->train.cpu_kernels, err);
    if (!st) st = pmoe_backend_set_precision(t->be, (pmoe_precision)cfg->train.precision, err);
    return st;
}

void bench_target_close(bench_target *t) {
    if (t->state && t->calls) t->calls->free_state(t->state); /* the model before its backend */
    t->state = NULL;
    pmoe_backend_destroy(t->be);
    t->be = NULL;
}
