/* keys_command.c: `pmoe keys`: every config key with its default, as INI. */
#include <stdio.h>
#include <stdlib.h>

#include "cli/commands.h"
#include "pmoe/config.h"

int pmoe_cli_keys(int argc, char **argv) {
    pmoe_config cfg;
    pmoe_config_default(&cfg);
    int need = pmoe_config_to_ini(&cfg, NULL, 0) + 1;
    char *text = malloc((size_t)need);
    if (!text) return 1;
    pmoe_config_to_ini(&cfg, text, need);
    fputs(text, stdout);
    free(text);
    return 0;
}
