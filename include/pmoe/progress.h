/* progress.h: how a long call says how far it has come.
 *
 * pmoe_bench_run, pmoe_bench_sweep, pmoe_eval, pmoe_route and pmoe_predict
 * can each take a pmoe_progress; they call update after every unit of work
 * (a timed step, a batch of samples) with what they are doing and how many
 * of the call's units are done, and print nothing themselves. The CLI's
 * line (src/host/train/progress_line.h) turns the calls into a redrawn bar
 * on a terminal and plain lines elsewhere, as pmoe train's reporter does. */
#ifndef PMOE_PROGRESS_H
#define PMOE_PROGRESS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct pmoe_progress {
    void *user;
    /* `what`: the current target in words ("wrn_pmoe: train steps", "eval");
     * done of total units of the whole call (total is fixed for a call and
     * done never falls). Called often: the callee rate-limits its drawing.
     * what = NULL: the caller is about to print a line of its own (a sweep's
     * result): a bar on the screen is cleared, to be drawn again next time. */
    void (*update)(void *user, const char *what, int64_t done, int64_t total);
} pmoe_progress;

/* Calls p->update when p is not NULL. */
static inline void pmoe_progress_report(const pmoe_progress *p, const char *what, int64_t done,
                                        int64_t total) {
    if (p && p->update) p->update(p->user, what, done, total);
}

#ifdef __cplusplus
}
#endif
#endif
