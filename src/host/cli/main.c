/* main.c: the pmoe command: dispatch to a subcommand.
 *
 * Each subcommand lives in its own file (cli/commands.h) and only parses
 * arguments, calls the library and prints; a failed status becomes one line
 * on stderr and a non-zero exit. Standard output is checked once, at the
 * end (a full disk or /dev/full behind it is an error, not a silent loss),
 * and SIGXFSZ is ignored so a file-size limit is a write error with a
 * message and the temporary file removed, not a kill. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/commands.h"
#include "core/cores.h"
#include "core/files.h"

typedef struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} command;

static const command COMMANDS[] = {
    {"train", pmoe_cli_train, "train a model (see pmoe train --help)"},
    {"eval", pmoe_cli_eval, "test accuracy of a checkpoint (see pmoe eval --help)"},
    {"bench", pmoe_cli_bench,
     "FLOPs, memory and time of pMoE against its CNN (see pmoe bench --help)"},
    {"route", pmoe_cli_route,
     "draw what a checkpoint's experts pick, as a PNG (see pmoe route --help)"},
    {"predict", pmoe_cli_predict,
     "class and probability of image files by a checkpoint (see pmoe predict --help)"},
    {"keys", pmoe_cli_keys, "list every config key with its default, as INI"},
};
#define NCOMMANDS ((int)(sizeof COMMANDS / sizeof COMMANDS[0]))

int pmoe_cli_fail(const pmoe_error *err) {
    fprintf(stderr, "pmoe: error: %s\n", err->message);
    return err->code == PMOE_ERR_CONFIG ? 2 : 1;
}

static void usage(FILE *out) {
    fprintf(out, "usage: pmoe COMMAND [ARGS]\n       pmoe --version\n\n");
    for (int i = 0; i < NCOMMANDS; i++)
        fprintf(out, "  %-8s %s\n", COMMANDS[i].name, COMMANDS[i].summary);
}

/* OpenMP's threads spin at a barrier by default, which on cores other
 * processes keep busy takes the core from the thread they wait for (the
 * two-layer step went from 0.36 to 36 ms under two busy processes).
 * libgomp reads OMP_WAIT_POLICY when it loads, before main, so when the
 * user set no policy and the cores are shared now, the policy is set to
 * passive and pmoe starts itself again; on an idle machine the spinning
 * default (the faster there) stays. If the restart fails, pmoe carries on. */
static void choose_wait_policy(char **argv) {
    if (getenv("OMP_WAIT_POLICY") || getenv("GOMP_SPINCOUNT") || !pmoe_cores_shared()) return;
    if (setenv("OMP_WAIT_POLICY", "passive", 1) != 0) return;
    execv("/proc/self/exe", argv);
}

/* A command that succeeded fails after all when what it printed did not
 * reach standard output; one that failed has said so already. */
static int check_stdout(int rc) {
    pmoe_error err = {PMOE_OK, ""};
    pmoe_status s = pmoe_stream_check(stdout, "standard output", &err);
    if (fclose(stdout) != 0 && !s)
        s = pmoe_fail(&err, PMOE_ERR_IO, "standard output: closing failed: %s", strerror(errno));
    return s && rc == 0 ? pmoe_cli_fail(&err) : rc;
}

int main(int argc, char **argv) {
    choose_wait_policy(argv);
    signal(SIGXFSZ, SIG_IGN);
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    for (int i = 0; i < NCOMMANDS; i++)
        if (strcmp(argv[1], COMMANDS[i].name) == 0)
            return check_stdout(COMMANDS[i].run(argc - 2, argv + 2));
    if (strcmp(argv[1], "--version") == 0)
        return check_stdout(pmoe_cli_version(argc - 2, argv + 2));
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(stdout);
        return check_stdout(0);
    }
    fprintf(stderr, "pmoe: error: unknown command '%s' (see pmoe --help)\n", argv[1]);
    return 2;
}
