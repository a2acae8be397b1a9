/* train_command.c: `pmoe train`: parse arguments into a config, run
 * pmoe_train with the standard reporter, print the result. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli/commands.h"
#include "pmoe/config.h"
#include "pmoe/train.h"
#include "train/report.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: pmoe train [--config FILE] [--set section.key=value ...] [--log FILE]\n"
            "                  [--json] [--quiet]\n"
            "With no arguments it trains joint pMoE on the Fashion-MNIST mosaic (or on the\n"
            "synthetic data model when the dataset is not installed).\n");
}

int pmoe_cli_fail(const pmoe_error *err) {
    fprintf(stderr, "pmoe: error: %s\n", err->message);
    return err->code == PMOE_ERR_CONFIG ? 2 : 1;
}

int pmoe_cli_train(int argc, char **argv) {
    pmoe_config cfg;
    pmoe_config_default(&cfg);
    pmoe_error err = {PMOE_OK, ""};
    const char *log_path = NULL;
    int json = 0, quiet = 0;
    /* Config files first, then --set in order, whatever order they came in. */
    for (int i = 0; i < argc; i++)
        if (strcmp(argv[i], "--config") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "pmoe: error: --config needs a file\n");
                return 2;
            }
            if (pmoe_config_load_file(&cfg, argv[++i], &err)) return pmoe_cli_fail(&err);
        }
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--config") == 0) {
            i++;
        } else if (strcmp(a, "--set") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "pmoe: error: --set needs section.key=value\n");
                return 2;
            }
            if (pmoe_config_set(&cfg, argv[++i], &err)) return pmoe_cli_fail(&err);
        } else if (strcmp(a, "--log") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "pmoe: error: --log needs a file\n");
                return 2;
            }
            log_path = argv[++i];
        } else if (strcmp(a, "--json") == 0) {
            json = 1;
        } else if (strcmp(a, "--quiet") == 0) {
            quiet = 1;
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "pmoe: error: unknown argument '%s' (see pmoe train --help)\n", a);
            return 2;
        }
    }
    pmoe_reporter rep = {0};
    rep.progress = quiet ? NULL : stdout;
    rep.is_terminal = isatty(fileno(stdout));
    if (log_path) {
        rep.log = fopen(log_path, "w");
        if (!rep.log) {
            perror(log_path);
            fprintf(stderr, "pmoe: error: %s: cannot open the log for writing\n", log_path);
            return 1;
        }
    }
    if (!quiet && cfg.data.source == PMOE_DATA_AUTO)
        printf("pmoe: data.source = auto: the mosaic if IDX files are in %s, else synthetic\n",
               cfg.data.path);
    pmoe_train_callbacks cb = pmoe_reporter_callbacks(&rep);
    pmoe_train_result res;
    pmoe_status s = pmoe_train(&cfg, &cb, &res, &err);
    if (rep.log && fclose(rep.log) != 0 && !s)
        s = pmoe_fail(&err, PMOE_ERR_IO, "%s: error writing the log", log_path);
    if (s) {
        if (rep.bar_shown) fprintf(stdout, "\n");
        fflush(stdout);
        return pmoe_cli_fail(&err);
    }
    pmoe_reporter_summary(&rep, &res);
    if (json) {
        pmoe_write_result_json(stdout, &res);
        fputc('\n', stdout);
    }
    return 0;
}

