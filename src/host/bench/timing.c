/* timing.c: how a bench_target is timed (bench.h): warm-up steps, then
 * each timed step alone (its median, min and max kept), then a pass with
 * the phase timer on to see where a train step's time goes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench_internal.h"

static int compare_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* One step done: the meter advances and says so. */
static void meter_step(bench_meter *meter) {
    if (!meter) return;
    meter->done++;
    pmoe_progress_report(meter->to, meter->what, meter->done, meter->total);
}

static void meter_begin(bench_meter *meter, const char *name, const char *pass) {
    if (!meter) return;
    snprintf(meter->what, sizeof meter->what, "%s: %s", name, pass);
    pmoe_progress_report(meter->to, meter->what, meter->done, meter->total);
}

pmoe_status bench_time_steps(bench_target *t, const char *name, int train, int warmup, int repeats,
                             bench_meter *meter, pmoe_timing *out, double *first_loss,
                             double *last_loss, pmoe_error *err) {
    double *ms = malloc((size_t)repeats * sizeof(double));
    if (!ms) return pmoe_fail(err, PMOE_ERR_OOM, "bench: cannot allocate %d timings", repeats);
    pmoe_status st = PMOE_OK;
    meter_begin(meter, name, train ? "train steps" : "inference steps");
    for (int i = 0; !st && i < warmup + repeats; i++) {
        double loss = 0.0;
        const double began = pmoe_now_seconds();
        st = train ? t->calls->train_step(t, &loss, err) : t->calls->infer_step(t, err);
        const double took = pmoe_now_seconds() - began;
        if (i >= warmup) ms[i - warmup] = 1e3 * took;
        if (train && i == 0 && first_loss) *first_loss = loss;
        if (train && last_loss) *last_loss = loss;
        meter_step(meter);
    }
    if (!st) {
        qsort(ms, (size_t)repeats, sizeof *ms, compare_double);
        out->min_ms = ms[0];
        out->max_ms = ms[repeats - 1];
        out->median_ms = repeats % 2 ? ms[repeats / 2]
                                     : 0.5 * (ms[repeats / 2 - 1] + ms[repeats / 2]);
    }
    free(ms);
    return st;
}

pmoe_status bench_target_measure(bench_target *t, const pmoe_config *cfg,
                                 const pmoe_bench_options *options, bench_meter *meter,
                                 pmoe_bench_model *out, pmoe_error *err) {
    pmoe_status st = PMOE_OK;
    const char *name = pmoe_model_type_name(cfg->model.type);
    if (options && options->peer_dir) st = t->calls->export_peer(t, options->peer_dir, err);
    if (!st)
        st = bench_time_steps(t, name, 1, cfg->bench.warmup, cfg->bench.repeats, meter, &out->train,
                              &out->first_loss, &out->last_loss, err);
    if (!st)
        st = bench_time_steps(t, name, 0, cfg->bench.warmup, cfg->bench.repeats, meter, &out->infer,
                              NULL, NULL, err);
    /* before the profiled pass: the peak is the timed steps' */
    if (!st) t->calls->describe(t, out);
    if (!st) { /* where a train step's time goes */
        pmoe_phase_timer timer;
        memset(&timer, 0, sizeof timer); /* no wait hook unless set_timer adds one */
        pmoe_timer_reset(&timer);
        t->calls->set_timer(t, &timer);
        double loss;
        meter_begin(meter, name, "profiled train steps");
        for (int i = 0; !st && i < cfg->bench.repeats; i++) {
            st = t->calls->train_step(t, &loss, err);
            meter_step(meter);
        }
        t->calls->set_timer(t, NULL);
        for (int i = 0; i < PMOE_T_COUNT; i++)
            out->phase_ms[i] = 1e3 * timer.seconds[i] / (double)cfg->bench.repeats;
    }
    return st;
}
