/* checkpoint_folder.h: which files in a checkpoint folder belong to a run.
 *
 * A folder (the default "checkpoints" is shared by every run started in one
 * directory) may hold anything: other runs' checkpoints, a user's
 * "step-best.safetensors", a FIFO. A run touches only what is provably its
 * own:
 * - a checkpoint name is exactly what pmoe_checkpoint_path writes,
 *   "step-<step, 9 or more digits, no extra leading zero>.safetensors", for a
 *   regular file (lstat: a FIFO or a link is never opened nor followed);
 * - every checkpoint carries its run's identity (metadata "run_id", 32 hex
 *   digits drawn at a fresh start, kept by every resume); a run prunes,
 *   replaces and sweeps only files with its own id;
 * - a run that writes holds an flock on "<folder>/.pmoe.lock" until it
 *   ends (the kernel drops it when the process dies, so a killed run leaves
 *   no stale lock): a second writer is refused before it changes anything;
 * - holding the lock, a run that saves every N steps refuses a folder that
 *   holds another run's checkpoints (its names would collide), and any run
 *   deletes the temporaries a killed writer left ("<checkpoint
 *   name>.tmp.<pid>", the safetensors writer's names). */
#ifndef PMOE_TRAIN_CHECKPOINT_FOLDER_H
#define PMOE_TRAIN_CHECKPOINT_FOLDER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "pmoe/status.h"
#include "train/position.h"

#define PMOE_CHECKPOINT_LOCK ".pmoe.lock"

/* 1 when name is a checkpoint name pmoe writes; sets *step. */
int pmoe_checkpoint_name_step(const char *name, int64_t *step);

/* The newest checkpoint (by step) in dir, into out. Several runs' checkpoints
 * in dir are an error naming two of them: pass the file itself. */
pmoe_status pmoe_checkpoint_newest(const char *dir, char *out, size_t out_size, pmoe_error *err);

/* A run's hold on its checkpoint folder. */
typedef struct pmoe_checkpoint_folder {
    char dir[1024];
    char run_id[PMOE_RUN_ID_CHARS + 1];
    int claimed; /* the lock is held (lock_fd open) */
    int lock_fd;
    dev_t keep_dev; /* the checkpoint the run resumed from, when it lies in dir: */
    ino_t keep_ino; /* never pruned by this run (0, 0: none) */
} pmoe_checkpoint_folder;

/* Sets up f for dir and run_id (nothing is touched yet); resumed_from, when
 * not NULL, is the checkpoint the run resumed from. */
void pmoe_checkpoint_folder_init(pmoe_checkpoint_folder *f, const char *dir, const char *run_id,
                                 const char *resumed_from);

/* Creates the folder (one level) when missing, takes its lock, and deletes
 * the temporaries killed writers left there; with refuse_foreign, refuses
 * the folder when it holds another run's checkpoints (a run that saves
 * every N steps would take their names; one that saves only when a signal
 * stops it checks its one name with may_write instead). Fails, changing
 * nothing, when another process holds the lock. */
pmoe_status pmoe_checkpoint_folder_claim(pmoe_checkpoint_folder *f, int refuse_foreign,
                                         pmoe_error *err);

/* Fails when path exists and is not this run's checkpoint (a save would
 * replace another's file). */
pmoe_status pmoe_checkpoint_folder_may_write(const pmoe_checkpoint_folder *f, const char *path,
                                             pmoe_error *err);

/* train.keep_best: fails when the folder's best.safetensors (checkpoint.h)
 * is there and not this run's: another run's best is never replaced. */
pmoe_status pmoe_checkpoint_folder_check_best(const pmoe_checkpoint_folder *f, pmoe_error *err);

/* Deletes this run's checkpoints in the folder but the newest `keep` (and
 * the one it resumed from). Only after claim. */
void pmoe_checkpoint_folder_prune(const pmoe_checkpoint_folder *f, int keep);

/* Drops the lock. */
void pmoe_checkpoint_folder_release(pmoe_checkpoint_folder *f);

#endif
