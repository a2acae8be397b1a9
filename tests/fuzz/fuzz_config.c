/* fuzz_config.c: libFuzzer target for the config parser (INI through inih,
 * then our value parsing) and for --set assignments.
 *
 * The input, NUL-terminated, is applied as INI text and as one
 * "section.key=value" assignment. A config that applied must also survive
 * the round trip checkpoints rely on: written back with pmoe_config_to_ini,
 * it must read back to the very same text. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pmoe/config.h"

static char *ini_text(const pmoe_config *cfg) {
    int need = pmoe_config_to_ini(cfg, NULL, 0) + 1;
    char *text = malloc((size_t)need);
    if (!text || pmoe_config_to_ini(cfg, text, need) != need - 1) abort();
    return text;
}

static void round_trip(const pmoe_config *cfg) {
    char *text = ini_text(cfg);
    pmoe_config again;
    pmoe_config_default(&again);
    pmoe_error err;
    if (pmoe_config_apply_ini(&again, text, "round trip", &err) != PMOE_OK) {
        fprintf(stderr, "written config does not read back: %s\n%s", err.message, text);
        abort();
    }
    char *text_again = ini_text(&again);
    if (strcmp(text, text_again) != 0) {
        fprintf(stderr, "config changed in the round trip:\n%s\n---\n%s", text, text_again);
        abort();
    }
    free(text_again);
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = '\0';

    pmoe_config cfg;
    pmoe_error err;
    pmoe_config_default(&cfg);
    if (pmoe_config_apply_ini(&cfg, text, "fuzz.ini", &err) == PMOE_OK) {
        (void)pmoe_config_check(&cfg, &err);
        round_trip(&cfg);
    }
    pmoe_config_default(&cfg);
    if (pmoe_config_set(&cfg, text, &err) == PMOE_OK) round_trip(&cfg);
    free(text);
    return 0;
}
