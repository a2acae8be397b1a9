/* phase_timer.h: where a step's time goes, for people and for Nsight.
 *
 * A step is cut into named phases (data, patch extraction, gate/top-l,
 * dispatch, experts, combine, loss, their backwards, the gradient check, the
 * optimizer). pmoe_timer_enter() closes the phase in progress and opens the
 * next, so the phases tile the step and their sum is the step time. Each
 * phase is also an NVTX range in the domain "pmoe" (with a payload such as
 * the step number or the patches per expert), so Nsight Systems shows the
 * same names; without NVTX the ranges compile to nothing. Times come from
 * the host clock; on an asynchronous backend the timer first waits for the
 * device (the wait hook), since a host clock around asynchronous launches
 * measures only the launches. That wait serialises host and device; a
 * backend with a clock of its own (CUDA events: pmoe_device_clock) avoids
 * it: the timer then marks each boundary on the device's queue without
 * waiting and reads the intervals when it stops (once a step), so the
 * phases are the device's own time and the host runs ahead as it would
 * untimed. Both ways, the phases tile the timed span. */
#ifndef PMOE_CORE_PHASE_TIMER_H
#define PMOE_CORE_PHASE_TIMER_H

#include <stdint.h>

typedef enum pmoe_phase_id {
    PMOE_T_DATA,     /* composing the batch and copying it in */
    PMOE_T_PATCH,    /* patch extraction */
    PMOE_T_GATE,     /* router scores, top-l, gate values */
    PMOE_T_DISPATCH, /* gathering each expert's patches */
    PMOE_T_EXPERTS,  /* the experts' forward */
    PMOE_T_COMBINE,  /* combine with the output weights */
    PMOE_T_LOSS,     /* loss and its gradient */
    PMOE_T_COMBINE_BWD,
    PMOE_T_EXPERTS_BWD,
    PMOE_T_GATE_BWD,
    PMOE_T_GUARD, /* the non-finite check of the gradients */
    PMOE_T_OPTIMIZER,
    PMOE_T_EXCHANGE,      /* expert parallelism: patches to the experts' ranks */
    PMOE_T_EXCHANGE_BACK, /* the experts' outputs back to the samples' ranks */
    PMOE_T_EXCHANGE_BWD,  /* the outputs' gradients to the experts' ranks */
    PMOE_T_ALL_REDUCE,    /* replicated parameters' gradients (and the loss's logits) */
    PMOE_T_LAYERS,     /* deep models: the dense layers' forward (convolutions, batch norm, ...) */
    PMOE_T_LAYERS_BWD, /* and their backward */
    PMOE_T_CHECKPOINT,
    PMOE_T_EVAL, /* test-set evaluation, as one phase */
    PMOE_T_COUNT
} pmoe_phase_id;

/* The phases that make up a training step (all before PMOE_T_CHECKPOINT). */
#define PMOE_T_STEP_PHASES PMOE_T_CHECKPOINT

/* A device's own clock. mark() records a timestamp on the device's queue
 * and returns at once with its id (-1 on failure); seconds() waits for the
 * later mark and returns the time between two; reset() frees every mark.
 * It holds `capacity` marks (>= 2) between resets. */
typedef struct pmoe_device_clock {
    void *ctx;
    int capacity;
    int (*mark)(void *ctx);
    double (*seconds)(void *ctx, int from, int to);
    void (*reset)(void *ctx);
} pmoe_device_clock;

/* Intervals a timer with a device clock holds until it stops. */
#define PMOE_TIMER_SPANS 64

typedef struct pmoe_phase_timer {
    double seconds[PMOE_T_COUNT]; /* accumulated since the last reset */
    int current;                  /* -1: none open */
    uint64_t payload;             /* the open phase's */
    double since;                 /* host clock at the current phase's start */
    void (*wait)(void *ctx);      /* NULL, or waits for queued device work */
    void *wait_ctx;
    /* With a device clock (NULL: the host clock, after wait): */
    const pmoe_device_clock *clock;
    int open_mark; /* the current phase's starting mark */
    int marks;     /* marks taken since the clock's last reset */
    int spans;     /* intervals recorded, not yet read */
    int span_phase[PMOE_TIMER_SPANS], span_from[PMOE_TIMER_SPANS], span_to[PMOE_TIMER_SPANS];
} pmoe_phase_timer;

/* Zeroes the seconds and closes any phase; keeps wait and clock. */
void pmoe_timer_reset(pmoe_phase_timer *t);
/* Closes the open phase (if any) and opens `phase`; t may be NULL (a no-op).
 * Entering the phase that is open, with the same payload, continues it. */
void pmoe_timer_enter(pmoe_phase_timer *t, pmoe_phase_id phase, uint64_t payload);
/* Closes the open phase. */
void pmoe_timer_stop(pmoe_phase_timer *t);
const char *pmoe_timer_name(pmoe_phase_id phase);

/* The monotonic host clock, in seconds. */
double pmoe_now_seconds(void);

/* A named NVTX range outside the phase timer (the step, an epoch). */
void pmoe_trace_push(const char *name, uint64_t payload);
void pmoe_trace_pop(void);
/* Whether this build emits NVTX ranges. */
int pmoe_trace_enabled(void);

#endif
