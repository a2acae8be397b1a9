/* timing.c: how a bench_target is timed (bench.h): warm-up steps, then
 * each timed step alone (its median, min and max kept), then a pass with
 * the phase timer on to see where a train step's time goes. */
#include <stdlib.h>
#include <string.h>

#include "bench/bench_internal.h"

static int compare_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

pmoe_status bench_time_steps(bench_target *t, int train, int warmup, int repeats,
                             pmoe_timing *out, double *first_loss, double *last_loss,
                             pmoe_error *err) {
    double *ms = malloc((size_t)repeats * sizeof(double));
    if (!ms) return pmoe_fail(err, PMOE_ERR_OOM, "bench: cannot allocate %d timings", repeats);
    pmoe_status st = PMOE_OK;
    for (int i = 0; !st && i < warmup + repeats; i++) {
        double loss = 0.0;
        const double began = pmoe_now_seconds();
        st = train ? t->calls->train_step(t, &loss, err) : t->calls->infer_step(t, err);
        const double took = pmoe_now_seconds() - began;
        if (i >= warmup) ms[i - warmup] = 1e3 * took;
        if (train && i == 0 && first_loss) *first_loss = loss;
        if (train && last_loss) *last_loss = loss;
    }
    if (!st) {
        qsort(ms, (size_t)repeats, sizeof *ms, compare_double);
        out->min_ms = ms[0];
        out->max_ms = ms[repeats - 1];
        out->median_ms = repeats % 2 ? ms[repeats / 2] : 0.5 * (ms[repeats / 2 - 1] + ms[repeats / 2]);
    }
    free(ms);
    return st;
}

pmoe_status bench_target_measure(bench_target *t, const pmoe_config *cfg,
                                 const pmoe_bench_options *options, pmoe_bench_model *out,
                                 pmoe_error *err) {
    pmoe_status st = PMOE_OK;
    if (options && options->peer_dir) st = t->calls->export_peer(t, options->peer_dir, err);
    if (!st)
        st = bench_time_steps(t, 1, cfg->bench.warmup, cfg->bench.repeats, &out->train,
                        &out->first_loss, &out->last_loss, err);
    if (!st)
        st = bench_time_steps(t, 0, cfg->bench.warmup, cfg->bench.repeats, &out->infer, NULL,
                              NULL, err);
    /* before the profiled pass: the peak is the timed steps' */
    if (!st) t->calls->describe(t, out);
    if (!st) { /* where a train step's time goes */
        pmoe_phase_timer timer;
        memset(&timer, 0, sizeof timer); /* no wait hook unless set_timer adds one */
        pmoe_timer_reset(&timer);
        t->calls->set_timer(t, &timer);
        double loss;
        for (int i = 0; !st && i < cfg->bench.repeats; i++)
            st = t->calls->train_step(t, &loss, err);
        t->calls->set_timer(t, NULL);
        for (int i = 0; i < PMOE_T_COUNT; i++)
            out->phase_ms[i] = 1e3 * timer.seconds[i] / (double)cfg->bench.repeats;
    }
    return st;
}
