/* train.h: training a model from a config, with progress callbacks.
 *
 * pmoe_train() owns the whole run: it opens the data, builds the backend and
 * the model, runs the router phase (separate training) and the main phase,
 * evaluates on the test set, and reports through callbacks. It prints
 * nothing itself; the CLI's reporter turns the callbacks into a progress bar
 * and a JSON log. */
#ifndef PMOE_TRAIN_H
#define PMOE_TRAIN_H

#include <stdint.h>

#include "pmoe/config.h"
#include "pmoe/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define PMOE_MAX_REPORTED_EXPERTS 64

typedef enum { PMOE_PHASE_ROUTER, PMOE_PHASE_MAIN } pmoe_phase;

typedef struct pmoe_run_info {
    char data[160];          /* what data the run uses, in words */
    pmoe_data_source source; /* the source chosen (AUTO resolved) */
    char backend[32];
    char model[16];
    int64_t params;
    int64_t train_size, test_size;
    int patches, patch_dim, patch, classes, experts, topl;
    int64_t steps_per_epoch;
    int epochs, router_epochs; /* router_epochs = 0 without a router phase */
} pmoe_run_info;

typedef struct pmoe_step_report {
    pmoe_phase phase;
    int epoch, epochs;           /* 1-based */
    int64_t step;                /* global, 1-based, per phase */
    int64_t batch_index, batches;/* within the epoch, 1-based */
    double loss;                 /* this batch's mean loss */
    int64_t samples;             /* seen in this phase so far */
    double elapsed;              /* seconds since the phase began */
} pmoe_step_report;

typedef struct pmoe_epoch_report {
    pmoe_phase phase;
    int epoch, epochs;
    int64_t step;
    double train_loss;     /* mean over the epoch's samples */
    double train_acc;      /* main phase; -1 in the router phase */
    double test_acc;       /* -1 when not evaluated this epoch */
    double router_recall;  /* -1 when the task has no deciding patch or no router */
    int experts_reported;
    double expert_recall[PMOE_MAX_REPORTED_EXPERTS];
    double seconds;        /* this epoch, evaluation included */
    double elapsed;        /* since the run began */
} pmoe_epoch_report;

typedef struct pmoe_train_callbacks {
    void *user;
    void (*on_start)(void *user, const pmoe_run_info *info);
    void (*on_step)(void *user, const pmoe_step_report *r);
    void (*on_epoch)(void *user, const pmoe_epoch_report *r);
} pmoe_train_callbacks;

typedef struct pmoe_train_result {
    pmoe_run_info info;
    double test_acc;
    double train_loss;
    double train_acc;
    double router_recall;  /* -1 when not applicable */
    int64_t steps;         /* main-phase steps */
    int64_t router_steps;
    double seconds;
    int64_t peak_bytes;    /* the backend's peak */
} pmoe_train_result;

/* Trains as cfg says. callbacks may be NULL. */
pmoe_status pmoe_train(const pmoe_config *cfg, const pmoe_train_callbacks *callbacks,
                       pmoe_train_result *result, pmoe_error *err);

#ifdef __cplusplus
}
#endif
#endif
