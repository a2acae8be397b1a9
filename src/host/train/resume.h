/* resume.h: what a checkpoint's position must satisfy before a run resumes
 * from it, and what may change on resume.
 *
 * The position (phase, epoch, next batch, step counts, partial sums) is
 * checked against the config it was saved with and the training set: the
 * epoch within the phase's epochs, the next batch within the epoch's
 * batches, the steps equal to the batches run so far, the router steps to
 * the router phase's, the partial sums to what that many samples can give.
 * A file that fails is refused as damaged (PMOE_ERR_FORMAT).
 *
 * On resume the keys a position is measured in, and those that define the
 * model and the training set, must keep their saved values (a change is
 * PMOE_ERR_CONFIG naming the key): [model] type, experts, topl, hidden,
 * patch, gate, train_output, width, expert_kernel; [data] everything but
 * path and test_size; [train] mode, batch, seed, router_batch, router_size,
 * and router_epochs once the router phase is over. train.epochs (and
 * router_epochs inside the router phase) may grow, or shrink down to the
 * epoch in progress; a run already past them is PMOE_ERR_CONFIG ("finished"),
 * never a silent no-op. Everything else (lr, momentum, checkpointing,
 * threads, device, ...) may change. */
#ifndef PMOE_TRAIN_RESUME_H
#define PMOE_TRAIN_RESUME_H

#include "core/safetensors.h"
#include "pmoe/config.h"
#include "train/position.h"

/* The keys that must keep their saved values (before any tensor is read,
 * so a changed model shape is named by its key). */
pmoe_status pmoe_resume_check_config(const pmoe_st_file *file, const pmoe_config *now,
                                     pmoe_error *err);

/* The restored position. file: the checkpoint (its saved config is read
 * from it); now: the run's config; train_count: the training set's size;
 * has_router: the model routes (a router phase exists only then). */
pmoe_status pmoe_resume_check(const pmoe_st_file *file, const pmoe_config *now, int64_t train_count,
                              int has_router, const pmoe_train_position *pos, pmoe_error *err);

#endif
