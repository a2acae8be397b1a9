/* args.c: see args.h. */
#include "cli/args.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <unistd.h>

#include "comm/comm.h"
#include "core/files.h"
#include "pmoe/train.h"

typedef struct flag_spec {
    const char *name;
    unsigned bit;
    int takes_value;
} flag_spec;

static const flag_spec FLAGS[] = {
    {"--log", ARG_LOG, 1},
    {"--resume", ARG_RESUME, 1},
    {"--checkpoint", ARG_CHECKPOINT, 1},
    {"--json", ARG_JSON, 0},
    {"--quiet", ARG_QUIET, 0},
    {"--sweep", ARG_SWEEP, 1},
    {"--out", ARG_OUT, 1},
    {"--peer", ARG_PEER, 1},
    {"--samples", ARG_SAMPLES, 1},
    {"--no-progress", ARG_NO_PROGRESS, 0},
    {"--per-class", ARG_PER_CLASS, 0},
};

int cli_samples_value(const char *v, int *out) {
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (errno || end == v || *end || n < 1 || n > 1024) {
        fprintf(stderr, "pmoe: error: --samples: expected an integer in [1, 1024], got '%s'\n", v);
        return 2;
    }
    *out = (int)n;
    return 0;
}

int cli_parse(int argc, char **argv, const char *command, unsigned allowed, cli_args *out) {
    memset(out, 0, sizeof *out);
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            out->help = 1;
            continue;
        }
        if (!strcmp(a, "--config") || !strcmp(a, "--set")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "pmoe: error: %s needs a value\n", a);
                return 2;
            }
            int is_config = a[2] == 'c';
            int *count = is_config ? &out->config_count : &out->set_count;
            if (*count == CLI_MAX_ITEMS) {
                fprintf(stderr, "pmoe: error: more than %d %s arguments\n", CLI_MAX_ITEMS, a);
                return 2;
            }
            (is_config ? out->config_files : out->sets)[(*count)++] = argv[++i];
            continue;
        }
        const flag_spec *f = NULL;
        for (size_t j = 0; j < sizeof FLAGS / sizeof FLAGS[0]; j++)
            if (!strcmp(a, FLAGS[j].name) && (allowed & FLAGS[j].bit)) f = &FLAGS[j];
        if (!f) {
            fprintf(stderr, "pmoe: error: unknown argument '%s' (see pmoe %s --help)\n", a,
                    command);
            return 2;
        }
        if (f->takes_value && i + 1 >= argc) {
            fprintf(stderr, "pmoe: error: %s needs a value\n", a);
            return 2;
        }
        switch (f->bit) {
        case ARG_LOG: out->log = argv[++i]; break;
        case ARG_RESUME: out->resume = argv[++i]; break;
        case ARG_CHECKPOINT: out->checkpoint = argv[++i]; break;
        case ARG_JSON: out->json = 1; break;
        case ARG_QUIET: out->quiet = 1; break;
        case ARG_NO_PROGRESS: out->no_progress = 1; break;
        case ARG_PER_CLASS: out->per_class = 1; break;
        case ARG_SWEEP:
            if (out->sweep_count == CLI_MAX_ITEMS) {
                fprintf(stderr, "pmoe: error: more than %d --sweep arguments\n", CLI_MAX_ITEMS);
                return 2;
            }
            out->sweeps[out->sweep_count++] = argv[++i];
            break;
        case ARG_OUT: out->out = argv[++i]; break;
        case ARG_PEER: out->peer = argv[++i]; break;
        case ARG_SAMPLES:
            if (cli_samples_value(argv[++i], &out->samples)) return 2;
            break;
        }
    }
    return 0;
}

pmoe_progress cli_progress(int quiet, int no_progress, pmoe_progress_line *line, const char *task) {
    const int speaker = pmoe_comm_launch_rank() == 0;
    const int terminal = isatty(fileno(stderr)) && !no_progress && !pmoe_comm_launched();
    return pmoe_progress_line_start(line, quiet || !speaker ? NULL : stderr, terminal, task);
}

pmoe_status cli_check_output(const char *path, pmoe_error *err) {
    pmoe_atomic_file probe;
    pmoe_status s = pmoe_atomic_open(&probe, path, err);
    if (!s) pmoe_atomic_abandon(&probe);
    return s;
}

pmoe_status cli_build_config(const cli_args *a, const char *base_checkpoint, pmoe_config *cfg,
                             pmoe_error *err) {
    pmoe_status s = PMOE_OK;
    if (base_checkpoint) s = pmoe_checkpoint_load_config(base_checkpoint, cfg, err);
    else pmoe_config_default(cfg);
    for (int i = 0; !s && i < a->config_count; i++)
        s = pmoe_config_load_file(cfg, a->config_files[i], err);
    for (int i = 0; !s && i < a->set_count; i++) s = pmoe_config_set(cfg, a->sets[i], err);
    return s;
}
