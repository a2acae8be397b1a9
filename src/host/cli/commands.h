/* commands.h: the pmoe subcommands, one file each. Each takes the arguments
 * after its name and returns the process exit code. */
#ifndef PMOE_CLI_COMMANDS_H
#define PMOE_CLI_COMMANDS_H

#include "pmoe/status.h"

int pmoe_cli_train(int argc, char **argv);
int pmoe_cli_keys(int argc, char **argv);
int pmoe_cli_eval(int argc, char **argv);
int pmoe_cli_route(int argc, char **argv);
int pmoe_cli_bench(int argc, char **argv);
int pmoe_cli_predict(int argc, char **argv);
int pmoe_cli_version(int argc, char **argv); /* pmoe --version */

/* Prints "pmoe: error: MESSAGE" on stderr; returns 2 for config errors, else 1. */
int pmoe_cli_fail(const pmoe_error *err);

#endif
