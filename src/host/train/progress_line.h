/* progress_line.h: a pmoe_progress (include/pmoe/progress.h) that prints.
 *
 * On a terminal it redraws one line at most ten times a second:
 *   "bench [#########.....................] wrn: train steps  57/180  ETA 1:12"
 * Elsewhere (a file, a pipe, under an MPI launcher, or asked with
 * --no-progress) it prints plain lines, never '\r' or escape codes: one
 * when `what` changes and one every 30 seconds, as pmoe train does off a
 * terminal. The estimate is the elapsed time scaled by the units left, so
 * it is as good as the units are equal. */
#ifndef PMOE_TRAIN_PROGRESS_LINE_H
#define PMOE_TRAIN_PROGRESS_LINE_H

#include <stdio.h>

#include "pmoe/progress.h"

typedef struct pmoe_progress_line {
    FILE *out;       /* NULL: silent */
    int is_terminal; /* redraw a bar; else plain lines */
    char task[32];   /* the line's first word: "bench", "eval" */
    char what[96];   /* the last `what` printed */
    double started, last_draw, last_line;
    int shown; /* a bar is on the screen */
} pmoe_progress_line;

/* Starts line (writing nothing yet) and returns the pmoe_progress that
 * feeds it; line must outlive the call it is given to. */
pmoe_progress pmoe_progress_line_start(pmoe_progress_line *line, FILE *out, int is_terminal,
                                       const char *task);

/* Clears the bar from the terminal (before a result is printed). */
void pmoe_progress_line_end(pmoe_progress_line *line);

/* The bar of fraction done, BAR_WIDTH characters of '#' and '.'; shared
 * with pmoe train's reporter. */
#define PMOE_PROGRESS_BAR_WIDTH 30
void pmoe_progress_bar(double fraction, char bar[PMOE_PROGRESS_BAR_WIDTH + 1]);

#endif
