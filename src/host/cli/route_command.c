/* route_command.c: `pmoe route --checkpoint PATH --out FILE.png`: a picture
 * of what a saved model's experts pick (src/host/viz/route_image.h says what
 * is drawn), on the data its saved config names (or what --set says). */
#include <stdio.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "core/files.h"
#include "pmoe/train.h"
#include "viz/png_write.h"
#include "viz/route_image.h"

#define DEFAULT_SAMPLES 8

int pmoe_cli_route(int argc, char **argv) {
    cli_args a;
    int rc = cli_parse(argc, argv, "route",
                       ARG_CHECKPOINT | ARG_OUT | ARG_SAMPLES | ARG_QUIET | ARG_NO_PROGRESS, &a);
    if (rc) return rc;
    if (a.help || !a.checkpoint || !a.out) {
        if (!a.help) {
            fprintf(stderr,
                    "pmoe: error: route needs %s (usage: pmoe route --checkpoint PATH "
                    "--out FILE.png [--samples N] [--set section.key=value ...])\n",
                    !a.checkpoint ? "--checkpoint PATH" : "--out FILE.png");
            return 2;
        }
        printf("usage: pmoe route --checkpoint PATH --out FILE.png [--samples N] "
               "[--set section.key=value ...] [--quiet] [--no-progress]\n\n"
               "Draws the first N test images (default %d) with each expert's picks framed in\n"
               "its colour and its gate values in percent, and a heatmap per expert of how\n"
               "often it picks each patch position over the test set. Progress of the pass\n"
               "over the test set goes to stderr (--no-progress: plain lines).\n",
               DEFAULT_SAMPLES);
        return 0;
    }
    pmoe_config cfg;
    pmoe_error err = {PMOE_OK, ""};
    /* a FIFO, folder or missing folder as the picture is refused before the pass */
    if (cli_check_output(a.out, &err)) return pmoe_cli_fail(&err);
    if (cli_build_config(&a, a.checkpoint, &cfg, &err)) return pmoe_cli_fail(&err);
    /* a FIFO or device as --out is refused before the pass over the test set */
    if (pmoe_check_replaceable(a.out, &err)) return pmoe_cli_fail(&err);
    pmoe_routing routing;
    pmoe_progress_line line;
    const pmoe_progress progress = cli_progress(a.quiet, a.no_progress, &line, "route");
    pmoe_status routed = pmoe_route(&cfg, a.checkpoint, a.samples ? a.samples : DEFAULT_SAMPLES,
                                    &progress, &routing, &err);
    pmoe_progress_line_end(&line);
    if (routed) return pmoe_cli_fail(&err);
    pmoe_canvas canvas;
    pmoe_route_layout layout;
    pmoe_status s = pmoe_route_draw(&routing, NULL, &canvas, &layout, &err);
    if (!s) s = pmoe_png_write(a.out, &canvas, &err);
    if (!s && !a.quiet)
        printf("wrote %s: %d x %d pixels, %d test samples and %d expert heatmaps "
               "(%s, %lld test samples)\n",
               a.out, canvas.width, canvas.height, routing.samples, routing.experts,
               routing.info.data, (long long)routing.test_size);
    pmoe_canvas_free(&canvas);
    pmoe_routing_free(&routing);
    return s ? pmoe_cli_fail(&err) : 0;
}
