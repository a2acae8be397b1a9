/* eval_command.c: `pmoe eval --checkpoint PATH`: test accuracy and router
 * recall of a saved model, on the data its saved config names (or on what
 * --set says instead); with --per-class each class's accuracy and the
 * confusion matrix, and with --out FILE.png its picture. Under mpirun every
 * rank evaluates; rank 0 alone prints. */
#include <stdio.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "comm/comm.h"
#include "pmoe/train.h"
#include "train/report.h"
#include "viz/confusion_image.h"
#include "viz/png_write.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: pmoe eval --checkpoint PATH [--set section.key=value ...] [--json] [--quiet]\n"
            "                 [--no-progress] [--per-class] [--out FILE.png]\n"
            "  --per-class     each class's accuracy and the confusion matrix (rows: the true\n"
            "                  class, columns: the predicted one), also in --json\n"
            "  --out FILE.png  the confusion matrix as a picture (implies --per-class)\n"
            "Progress goes to stderr (--quiet: none; --no-progress: plain lines).\n");
}

static pmoe_status write_picture(const char *path, const pmoe_eval_result *res, pmoe_error *err) {
    char title[512];
    snprintf(title, sizeof title, "%s model on %s: test accuracy %.2f%% on %lld samples",
             res->info.model, res->info.data, 100 * res->test_acc, (long long)res->info.test_size);
    pmoe_canvas canvas;
    pmoe_status s = pmoe_confusion_draw(&res->per_class, title, &canvas, NULL, err);
    if (!s) s = pmoe_png_write(path, &canvas, err);
    pmoe_canvas_free(&canvas);
    return s;
}

int pmoe_cli_eval(int argc, char **argv) {
    cli_args a;
    const unsigned flags = ARG_CHECKPOINT | ARG_JSON | ARG_QUIET | ARG_NO_PROGRESS | ARG_PER_CLASS |
                           ARG_OUT;
    int rc = cli_parse(argc, argv, "eval", flags, &a);
    if (rc) return rc;
    if (a.help || !a.checkpoint) {
        usage(a.help ? stdout : stderr);
        return a.help ? 0 : 2;
    }
    pmoe_config cfg;
    pmoe_error err = {PMOE_OK, ""};
    const int speaker = pmoe_comm_launch_rank() == 0;
    /* a FIFO, folder or missing folder as the picture is refused before the pass */
    if (speaker && a.out && cli_check_output(a.out, &err)) return pmoe_cli_fail(&err);
    pmoe_eval_result res;
    pmoe_progress_line line;
    const pmoe_progress progress = cli_progress(a.quiet, a.no_progress, &line, "eval");
    const int per_class = a.per_class || a.out != NULL;
    const pmoe_eval_options options = {per_class, &progress};
    pmoe_status s = cli_build_config(&a, a.checkpoint, &cfg, &err);
    if (!s) s = pmoe_eval(&cfg, a.checkpoint, &options, &res, &err);
    pmoe_progress_line_end(&line);
    if (s) return speaker ? pmoe_cli_fail(&err) : err.code == PMOE_ERR_CONFIG ? 2 : 1;
    if (!speaker) {
        pmoe_class_figures_free(&res.per_class);
        return 0;
    }
    if (a.out) { /* before the JSON, which is the last line */
        s = write_picture(a.out, &res, &err);
        if (s) {
            pmoe_class_figures_free(&res.per_class);
            return pmoe_cli_fail(&err);
        }
    }
    if (!a.quiet) {
        if (a.out) printf("wrote %s\n", a.out);
        printf("%s (step %lld): %s model on %s\n", res.checkpoint, (long long)res.step,
               res.info.model, res.info.data);
        printf("test accuracy %.2f%% on %lld samples", 100 * res.test_acc,
               (long long)res.info.test_size);
        if (res.router_recall >= 0) printf(", router recall %.2f%%", 100 * res.router_recall);
        printf("\n");
        if (per_class) pmoe_class_figures_print(stdout, &res.per_class);
    }
    if (a.json) {
        printf("{\"checkpoint\":");
        pmoe_write_json_string(stdout, res.checkpoint);
        printf(",\"step\":%lld,\"model\":", (long long)res.step);
        pmoe_write_json_string(stdout, res.info.model);
        printf(",\"test_size\":%lld,\"test_acc\":%.6g", (long long)res.info.test_size,
               res.test_acc);
        if (res.router_recall >= 0) {
            printf(",\"router_recall\":%.6g,\"expert_recall\":[", res.router_recall);
            for (int e = 0; e < res.experts_reported; e++)
                printf("%s%.6g", e ? "," : "", res.expert_recall[e]);
            printf("]");
        }
        if (per_class) {
            fputc(',', stdout);
            pmoe_class_figures_write_json(stdout, &res.per_class);
        }
        printf("}\n");
    }
    pmoe_class_figures_free(&res.per_class);
    return 0;
}
