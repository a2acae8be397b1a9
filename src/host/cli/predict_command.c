/* predict_command.c: `pmoe predict --checkpoint PATH IMAGE...`: the class of
 * each image and its probability, one line per image (--json: one JSON
 * object per line), by the preprocessing saved in the checkpoint; with
 * --route-out FILE.png, the routing picture of the images (what `pmoe route`
 * draws for the test set), each captioned with its prediction. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "pmoe/predict.h"
#include "train/report.h"
#include "viz/png_write.h"
#include "viz/route_image.h"

#define DEFAULT_ROUTE_SAMPLES 16

static void usage(FILE *out) {
    fprintf(out,
            "usage: pmoe predict --checkpoint PATH [--json] [--route-out FILE.png [--samples N]]\n"
            "                    [--quiet] [--no-progress] IMAGE...\n"
            "IMAGE: a PNG or JPEG file, or an IDX image file (every image in it). Each is\n"
            "prepared as the checkpoint's training data were (size, channels, mean/std).\n"
            "  --route-out FILE.png  a pMoE model's routing picture: the first N images\n"
            "                        (--samples, default %d), each captioned #i (its line in\n"
            "                        the output, from 0) with its predicted class, the patches\n"
            "                        each expert picked framed, and where each expert picks\n"
            "                        over all the images\n"
            "Progress goes to stderr (--quiet: none; --no-progress: plain lines).\n",
            DEFAULT_ROUTE_SAMPLES);
}

/* "#i NAME P%" per drawn image; NULL when out of memory. */
static char **route_captions(const pmoe_prediction *preds, int samples) {
    char **captions = calloc((size_t)(samples > 0 ? samples : 1), sizeof *captions);
    for (int i = 0; captions && i < samples; i++) {
        const size_t len = strlen(preds[i].class_name) + 48;
        captions[i] = malloc(len);
        if (!captions[i]) {
            for (int j = 0; j < i; j++) free(captions[j]);
            free(captions);
            return NULL;
        }
        snprintf(captions[i], len, "#%d  %s %.0f%%", i, preds[i].class_name,
                 100.0 * preds[i].probability);
    }
    return captions;
}

/* The routing picture of the predictions, written atomically to path. */
static pmoe_status write_route_picture(const char *path, const pmoe_routing *routing,
                                       const pmoe_prediction *preds, int quiet, pmoe_error *err) {
    char **captions = route_captions(preds, routing->samples);
    if (!captions) return pmoe_fail(err, PMOE_ERR_OOM, "out of memory for the captions");
    pmoe_route_image_options options = {0, 0, "predicted images", (const char *const *)captions};
    pmoe_canvas canvas;
    pmoe_status s = pmoe_route_draw(routing, &options, &canvas, NULL, err);
    if (!s) s = pmoe_png_write(path, &canvas, err);
    if (!s && !quiet)
        fprintf(stderr, "wrote %s: %d x %d pixels, %d of %lld images drawn\n", path, canvas.width,
                canvas.height, routing->samples, (long long)routing->test_size);
    pmoe_canvas_free(&canvas);
    for (int i = 0; i < routing->samples; i++) free(captions[i]);
    free(captions);
    return s;
}

int pmoe_cli_predict(int argc, char **argv) {
    const char *checkpoint = NULL, *route_out = NULL;
    int json = 0, samples = 0, quiet = 0, no_progress = 0;
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
        } else if (!strcmp(a, "--route-out") && i + 1 < argc) {
            route_out = argv[++i];
        } else if (!strcmp(a, "--samples") && i + 1 < argc) {
            if (cli_samples_value(argv[++i], &samples)) {
                free(files);
                return 2;
            }
        } else if (!strcmp(a, "--json")) {
            json = 1;
        } else if (!strcmp(a, "--quiet")) {
            quiet = 1;
        } else if (!strcmp(a, "--no-progress")) {
            no_progress = 1;
        } else if (a[0] == '-' && a[1] == '-') {
            fprintf(stderr, "pmoe: error: unknown argument '%s' (see pmoe predict --help)\n", a);
            free(files);
            return 2;
        } else {
            files[file_count++] = a;
        }
    }
    if (!checkpoint || file_count == 0 || (samples && !route_out)) {
        if (samples && !route_out)
            fprintf(stderr, "pmoe: error: --samples N counts the images --route-out draws; give "
                            "--route-out FILE.png\n");
        else usage(stderr);
        free(files);
        return 2;
    }
    pmoe_error err = {PMOE_OK, ""};
    /* a FIFO, folder or missing folder as the picture is refused before any work */
    if (route_out && cli_check_output(route_out, &err)) {
        free(files);
        return pmoe_cli_fail(&err);
    }
    pmoe_prediction *preds = NULL;
    int64_t count = 0;
    pmoe_routing routing;
    pmoe_progress_line line;
    const pmoe_progress progress = cli_progress(quiet, no_progress, &line, "predict");
    pmoe_predict_options options = {NULL, route_out ? &routing : NULL,
                                    samples ? samples : DEFAULT_ROUTE_SAMPLES, &progress};
    pmoe_status s = pmoe_predict(checkpoint, files, file_count, &options, &preds, &count, &err);
    pmoe_progress_line_end(&line);
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
    fflush(stdout);
    if (route_out) {
        s = write_route_picture(route_out, &routing, preds, quiet, &err);
        pmoe_routing_free(&routing);
    }
    free(preds);
    return s ? pmoe_cli_fail(&err) : 0;
}
