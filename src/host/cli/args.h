/* args.h: the arguments the pmoe subcommands share.
 *
 * Every subcommand that builds a config takes --config FILE (any number,
 * applied first, in order) and --set section.key=value (applied after, in
 * order); the rest are flags a subcommand allows or not. */
#ifndef PMOE_CLI_ARGS_H
#define PMOE_CLI_ARGS_H

#include "pmoe/config.h"
#include "train/progress_line.h"

enum {
    ARG_LOG = 1 << 0,         /* --log FILE */
    ARG_RESUME = 1 << 1,      /* --resume PATH */
    ARG_CHECKPOINT = 1 << 2,  /* --checkpoint PATH */
    ARG_JSON = 1 << 3,        /* --json */
    ARG_QUIET = 1 << 4,       /* --quiet */
    ARG_SWEEP = 1 << 5,       /* --sweep section.key=v1,v2,... (repeatable) */
    ARG_OUT = 1 << 6,         /* --out DIR (bench), --out FILE (route) */
    ARG_PEER = 1 << 7,        /* --peer DIR */
    ARG_SAMPLES = 1 << 8,     /* --samples N, an integer in [1, 1024] */
    ARG_NO_PROGRESS = 1 << 9, /* --no-progress: plain lines, never a redrawn bar */
    ARG_PER_CLASS = 1 << 10,  /* --per-class: per-class accuracy and the confusion matrix */
};

#define CLI_MAX_ITEMS 256

typedef struct cli_args {
    const char *config_files[CLI_MAX_ITEMS];
    int config_count;
    const char *sets[CLI_MAX_ITEMS];
    int set_count;
    const char *log, *resume, *checkpoint;
    int json, quiet, help, no_progress, per_class;
    const char *sweeps[CLI_MAX_ITEMS];
    int sweep_count;
    const char *out, *peer;
    int samples; /* --samples N; 0 when not given */
} cli_args;

/* Parses argv for `command`; prints one line and returns 2 on a bad
 * argument, else 0. */
int cli_parse(int argc, char **argv, const char *command, unsigned allowed, cli_args *out);

/* --samples N: *out = N, an integer in [1, 1024]; else prints one line and
 * returns 2. */
int cli_samples_value(const char *value, int *out);

/* The progress line of a long command (bench, eval, route, predict) on
 * stderr, so that stdout stays the result: silent with --quiet and on
 * every rank but the launcher's rank 0; plain lines with --no-progress,
 * off a terminal or under an MPI launcher (train_command.c says why). */
pmoe_progress cli_progress(int quiet, int no_progress, pmoe_progress_line *line, const char *task);

/* A picture a command writes at its end, tried before its work: a
 * temporary file is created beside path and removed (core/files.h's
 * pmoe_atomic_open), so a FIFO, folder or device in its place, or a folder
 * that is missing or not writable, fails at once with that call's message. */
pmoe_status cli_check_output(const char *path, pmoe_error *err);

/* Defaults (or the config saved in base_checkpoint when not NULL), then the
 * --config files, then the --set overrides. */
pmoe_status cli_build_config(const cli_args *a, const char *base_checkpoint, pmoe_config *cfg,
                             pmoe_error *err);

#endif
