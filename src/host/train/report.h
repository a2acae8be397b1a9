/* report.h: turning training callbacks into what a person or a script reads.
 *
 * Progress goes to a stream: a redrawn bar when the stream is a terminal,
 * one plain line per epoch otherwise. The JSON log gets one object per epoch
 * (JSON Lines), appended whole or not at all: a failed write (a full disk)
 * stops the run with an error, and the log ends at its last whole line.
 * Progress is checked at every flush too: the first write that fails (a
 * full disk, /dev/full) is kept in `failed` and raises *stop, the flag a
 * signal raises, so the run ends after that step with a checkpoint saved
 * and the caller reports `failed` (without a stop flag the run ends with
 * the error at the epoch's end). Both are plain callbacks on pmoe_train,
 * so a library user can use them or write their own. */
#ifndef PMOE_TRAIN_REPORT_H
#define PMOE_TRAIN_REPORT_H

#include <signal.h>
#include <stdio.h>

#include "pmoe/train.h"

typedef struct pmoe_reporter {
    FILE *progress;              /* NULL: quiet */
    const char *progress_name;   /* for messages; NULL: "standard output" */
    volatile sig_atomic_t *stop; /* raised (set to 1) when progress cannot be written; may
                                    be NULL (the run's stop flag, pmoe_train_options) */
    pmoe_error failed;           /* the first failed progress write (code PMOE_OK: none) */
    int is_terminal;             /* draw a bar */
    FILE *log;                   /* NULL: no JSON log */
    const char *log_name;        /* its path, for messages */
    double last_draw;
    double last_line; /* when not a terminal: the last periodic line */
    int bar_shown;
    int saves_final; /* train.checkpoint_every > 0: the run ends with a checkpoint, which
                        the summary names (else it says how to keep the model) */
} pmoe_reporter;

/* Callbacks that feed rep (which must outlive the run). */
pmoe_train_callbacks pmoe_reporter_callbacks(pmoe_reporter *rep);

/* The run's closing summary, in words. */
void pmoe_reporter_summary(pmoe_reporter *rep, const pmoe_train_result *res);

/* The result as one JSON object on one line (no newline). */
void pmoe_write_result_json(FILE *out, const pmoe_train_result *res);

/* Per-class figures as text: a row per class (its name, test samples,
 * accuracy), then the confusion matrix (rows: the true class, columns:
 * the predicted one, headed by class index). */
void pmoe_class_figures_print(FILE *out, const pmoe_class_figures *f);

/* The same as JSON members, with no braces and no leading comma:
 * "per_class":[{"index":0,"class":"cat","samples":10,"correct":9,
 * "accuracy":0.9},...],"confusion":[[9,1],[2,8]]. */
void pmoe_class_figures_write_json(FILE *out, const pmoe_class_figures *f);

/* Writes s as a JSON string literal, quotes included. */
void pmoe_write_json_string(FILE *out, const char *s);

#endif
