/* train_trace.h: recording a training run's losses step by step, stopping
 * it at a chosen step, and comparing a stopped-and-resumed run with one left
 * alone (the tests of schedules and augmentation; header-only, since
 * test_util.c is also linked without the engine). */
#ifndef PMOE_TESTS_TRAIN_TRACE_H
#define PMOE_TESTS_TRAIN_TRACE_H

#include <signal.h>
#include <string.h>

#include "pmoe/train.h"

#define TRACE_MAX_STEPS 256
#define TRACE_MAX_EPOCHS 64

typedef struct trace {
    int64_t steps;
    double loss[TRACE_MAX_STEPS];
    double lr[TRACE_MAX_EPOCHS]; /* the main phase's epoch reports */
    int64_t stop_at;             /* set *stop when this step is reported */
    volatile sig_atomic_t *stop;
} trace;

static inline void trace_on_step(void *user, const pmoe_step_report *r) {
    trace *t = user;
    if (t->steps < TRACE_MAX_STEPS) t->loss[t->steps] = r->loss;
    t->steps++;
    if (t->stop && t->steps == t->stop_at) *t->stop = 1;
}

static inline pmoe_status trace_on_epoch(void *user, const pmoe_epoch_report *r, pmoe_error *err) {
    (void)err;
    trace *t = user;
    if (r->phase == PMOE_PHASE_MAIN && r->epoch >= 1 && r->epoch <= TRACE_MAX_EPOCHS)
        t->lr[r->epoch - 1] = r->lr;
    return PMOE_OK;
}

/* Trains cfg (from the checkpoint `resume` when not NULL) into a fresh t. */
static inline pmoe_status trace_train(const pmoe_config *cfg, trace *t, const char *resume,
                                      pmoe_train_result *res, pmoe_error *err) {
    volatile sig_atomic_t *stop = t->stop;
    const int64_t stop_at = t->stop_at;
    memset(t, 0, sizeof *t);
    t->stop = stop;
    t->stop_at = stop_at;
    pmoe_train_callbacks cb = {t, NULL, trace_on_step, trace_on_epoch};
    pmoe_train_options opt = {resume, stop, 0};
    return pmoe_train(cfg, &cb, &opt, res, err);
}

/* 1 when first's then rest's losses are whole's, bit for bit. */
static inline int trace_resumed_equals(const trace *whole, const trace *first, const trace *rest) {
    int same = first->steps + rest->steps == whole->steps && whole->steps <= TRACE_MAX_STEPS;
    for (int64_t i = 0; same && i < first->steps; i++) same = first->loss[i] == whole->loss[i];
    for (int64_t i = 0; same && i < rest->steps; i++)
        same = rest->loss[i] == whole->loss[first->steps + i];
    return same;
}

#endif
