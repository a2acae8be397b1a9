/* predict_command.c: `pmoe predict --checkpoint PATH IMAGE...`: the class of
 * each image and its probability, one line per image (--json: one JSON
 * object per line), by the preprocessing saved in the checkpoint. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "pmoe/predict.h"
#include "train/report.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: pmoe predict --checkpoint PATH [--json] IMAGE...\n"
            "IMAGE: a PNG or JPEG file, or an IDX image file (every image in it). Each is\n"
            "prepared as the checkpoint's training data were (size, channels, mean/std).\n");
}

int pmoe_cli_predict(int argc, char **argv) {
    const char *checkpoint = NULL;
    int json = 0;
    const char **files = calloc((size_t)(argc > 0 ? argc : 1), sizeof *files);
    int file_count = 0;
    if (!files) {
        fprintf(stderr, "pmoe: error: out of memory\n");
        return 1;
    }
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            free(files);
            return 0;
        } else if (!strcmp(a, "--checkpoint") && i + 1 < argc) {
            checkpoint = argv[++i];
        } else if (!strcmp(a, "--json")) {
            json = 1;
        } else if (a[0] == '-' && a[1] == '-') {
            fprintf(stderr, "pmoe: error: unknown argument '%s' (see pmoe predict --help)\n", a);
            free(files);
            return 2;
        } else {
            files[file_count++] = a;
        }
    }
    if (!checkpoint || file_count == 0) {
        usage(stderr);
        free(files);
        return 2;
    }
    pmoe_error err = {PMOE_OK, ""};
    pmoe_prediction *preds = NULL;
    int64_t count = 0;
    pmoe_status s = pmoe_predict(checkpoint, files, file_count, NULL, &preds, &count, &err);
    free(files);
    if (s) return pmoe_cli_fail(&err);
    for (int64_t i = 0; i < count; i++) {
        const pmoe_prediction *p = &preds[i];
        if (json) {
            printf("{\"file\":");
            pmoe_write_json_string(stdout, p->source);
            printf(",\"class\":");
            pmoe_write_json_string(stdout, p->class_name);
            printf(",\"index\":%d,\"probability\":%.6g}\n", p->class_index, p->probability);
        } else {
            printf("%s: %s (p = %.4f)\n", p->source, p->class_name, p->probability);
        }
    }
    free(preds);
    return 0;
}
