/* checkpoint.h: saving and restoring a training run in safetensors files.
 *
 * A checkpoint holds every parameter by a stable name (experts by global
 * expert id: "experts.3.weight", "experts.3.output"), the optimizer's
 * velocities ("optimizer.velocity.<name>"), and in its metadata the full
 * config as INI text and the run's position: phase, epoch, next batch, step
 * counts and the epoch's partial sums. The random state needs no bytes of
 * its own: every draw is a pure function of (train.seed, stream, counter),
 * so the position alone restarts the shuffle exactly. Together these make a
 * resumed run bit-identical to one left alone.
 *
 * Nothing read back is trusted: every metadata count is parsed as a 64-bit
 * decimal and range-checked before it is narrowed, and every tensor must be
 * finite (a file with a NaN weight is refused, so it is never evaluated nor
 * named as the last good checkpoint); a save refuses non-finite tensors
 * too. The metadata's reading is train/position.h's; how the position must
 * agree with the config and the data, train/resume.h's; which files of a
 * folder are a run's, checkpoint_folder.h's. */
#ifndef PMOE_TRAIN_CHECKPOINT_H
#define PMOE_TRAIN_CHECKPOINT_H

#include "core/safetensors.h"
#include "model/model.h"
#include "pmoe/config.h"
#include "pmoe/train.h"
#include "train/checkpoint_folder.h"
#include "train/position.h"

/* Writes path atomically (the previous file of that name stays whole on any
 * failure). */
pmoe_status pmoe_checkpoint_save(const char *path, const pmoe_model *m, const pmoe_config *cfg,
                                 const pmoe_train_position *pos, pmoe_error *err);

/* The same, with extra metadata pairs beside the run's own (about 20 fit):
 * the training loop adds the data's input description (input_spec.h). */
pmoe_status pmoe_checkpoint_save_with(const char *path, const pmoe_model *m, const pmoe_config *cfg,
                                      const pmoe_train_position *pos, const pmoe_st_meta *extra,
                                      int extra_count, pmoe_error *err);

/* Reads a checkpoint file, or the newest checkpoint in a folder (see
 * pmoe_checkpoint_newest), and checks that it is a pmoe checkpoint. The
 * path used is kept in file->origin. */
pmoe_status pmoe_checkpoint_open(const char *path, pmoe_st_file *file, pmoe_error *err);

/* Copies the saved parameters (and velocities, when the model has them)
 * into m, checking every name, shape and value (finite); fills pos, each
 * field range-checked on its own, when not NULL. */
pmoe_status pmoe_checkpoint_restore(const pmoe_st_file *file, pmoe_model *m,
                                    pmoe_train_position *pos, pmoe_error *err);

/* "<dir>/step-<global step, at least 9 digits>.safetensors"; dir NULL: the
 * name alone. */
void pmoe_checkpoint_path(const char *dir, int64_t global_step, char *out, size_t out_size);

/* "<dir>/best.safetensors": the checkpoint train.keep_best keeps, saved at
 * the end of the epoch whose evaluation was the best so far (metadata
 * best_epoch and best_test_acc say which and how good). Not a checkpoint
 * name (checkpoint_folder.h), so it is never pruned, never the newest of a
 * folder, and never resumed from unless named. */
#define PMOE_CHECKPOINT_BEST "best.safetensors"
void pmoe_checkpoint_best_path(const char *dir, char *out, size_t out_size);

/* Creates dir (one level) if missing. */
pmoe_status pmoe_checkpoint_make_dir(const char *dir, pmoe_error *err);

#endif
