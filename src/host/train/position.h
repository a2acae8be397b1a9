/* position.h: what a checkpoint's metadata says about its run: the run's
 * identity, its position, and the config it was trained with.
 *
 * Nothing read back is trusted: every count is parsed as a 64-bit decimal
 * (digits only: no sign, space or exponent) and range-checked on its own
 * before it is narrowed; train/resume.h then checks the fields against each
 * other, the config and the data. These functions need no model, so the
 * fuzzer (tests/fuzz/fuzz_checkpoint.c) drives them directly. */
#ifndef PMOE_TRAIN_POSITION_H
#define PMOE_TRAIN_POSITION_H

#include <stdint.h>

#include "core/safetensors.h"
#include "pmoe/config.h"
#include "pmoe/status.h"

#define PMOE_CHECKPOINT_FORMAT "pmoe-checkpoint-1"
#define PMOE_RUN_ID_CHARS 32

typedef struct pmoe_train_position {
    int phase;                          /* pmoe_phase */
    int epoch;                          /* the epoch in progress, 1-based */
    int64_t next_batch;                 /* the next batch of that epoch to run, 0-based */
    int64_t step;                       /* steps done in this phase */
    int64_t router_steps;               /* steps done by the router phase */
    int64_t skipped;                    /* steps skipped for non-finite values */
    double loss_sum;                    /* the epoch so far: summed sample losses */
    int64_t correct_sum;                /* the epoch so far: correct predictions */
    char run_id[PMOE_RUN_ID_CHARS + 1]; /* the run's identity ("": none, an older file) */
    /* train.keep_best: the main phase's best evaluation so far (best.safetensors);
     * best_epoch 0: none yet (or an older file) */
    int best_epoch;
    double best_acc;
} pmoe_train_position;

/* A fresh run identity: 32 lowercase hex digits (128 random bits). */
void pmoe_run_id_new(char out[PMOE_RUN_ID_CHARS + 1]);

/* 1 when text is a run identity as pmoe_run_id_new writes it. */
int pmoe_run_id_valid(const char *text);

/* The position in file's metadata, each field range-checked: an epoch in
 * [1, INT_MAX - 1], step counts in [0, 2^62] (so router + main steps cannot
 * overflow), a finite loss sum, a well-formed run id or none, and a best
 * evaluation (best_epoch in [1, INT_MAX - 1] with best_test_acc in [0, 1])
 * or none. */
pmoe_status pmoe_checkpoint_position(const pmoe_st_file *file, pmoe_train_position *pos,
                                     pmoe_error *err);

/* The saved config (defaults, then the saved INI text). */
pmoe_status pmoe_checkpoint_config(const pmoe_st_file *file, pmoe_config *cfg, pmoe_error *err);

#endif
