/* lr_schedule.h: the learning rate of every step of a phase.
 *
 * The rate of step t (0-based, counted within the phase: the router phase
 * of separate training and the main phase each follow the schedule over
 * their own steps, from train.router_lr and train.lr) is a pure function of
 * t and the config, so a resumed run, which restarts at its saved step
 * count, continues the schedule exactly and a checkpoint needs no state for
 * it. With S steps per epoch, E epochs (T = E S steps), W = warmup_epochs S:
 *
 *   constant  base
 *   step      base * lr_gamma^(number of epochs e in lr_steps with t >= e S),
 *             i.e. multiplied by gamma once epoch e has ended (PyTorch's
 *             MultiStepLR with milestones counted in finished epochs)
 *   cosine    lr_min + (base - lr_min) (1 + cos(pi u)) / 2,
 *             u = (t - W) / (T - W) after the warmup, 0 during it
 *             (CosineAnnealingLR stepped every batch)
 *
 * and during the warmup (t < W) that value times (t + 1) / W. The constant
 * schedule with no warmup returns base unchanged, so the paper's runs are
 * bit-identical to those from before schedules existed. Changing
 * train.epochs on a resume moves the cosine's end with it. */
#ifndef PMOE_TRAIN_LR_SCHEDULE_H
#define PMOE_TRAIN_LR_SCHEDULE_H

#include <stdint.h>

#include "pmoe/config.h"

enum { PMOE_MAX_LR_STEPS = 32 };

typedef struct pmoe_lr_schedule {
    int kind; /* pmoe_schedule */
    double base, min, gamma;
    int64_t steps_per_epoch; /* S */
    int64_t total_steps;     /* T */
    int64_t warmup_steps;    /* W */
    int milestone_count;
    int64_t milestones[PMOE_MAX_LR_STEPS]; /* epochs, increasing */
} pmoe_lr_schedule;

/* Parses train.lr_steps ("" or "E1,E2,..." of increasing epochs >= 1). */
pmoe_status pmoe_lr_steps_parse(const char *text, int64_t *epochs, int *count, pmoe_error *err);

/* Checks the schedule keys of t (PMOE_ERR_CONFIG naming the key). */
pmoe_status pmoe_lr_schedule_check(const pmoe_train_config *t, pmoe_error *err);

/* The schedule of a phase of `epochs` epochs of `steps_per_epoch` steps
 * starting from `base` (t must have passed pmoe_lr_schedule_check). */
pmoe_lr_schedule pmoe_lr_schedule_make(const pmoe_train_config *t, double base, int epochs,
                                       int64_t steps_per_epoch);

/* The rate of step `step` (0-based within the phase). */
double pmoe_lr_at(const pmoe_lr_schedule *s, int64_t step);

#endif
