/* eval_command.c: `pmoe eval --checkpoint PATH`: test accuracy and router
 * recall of a saved model, on the data its saved config names (or on what
 * --set says instead). Under mpirun every rank evaluates; rank 0 alone
 * prints. */
#include <stdio.h>
#include <string.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "comm/comm.h"
#include "pmoe/train.h"
#include "train/report.h"

int pmoe_cli_eval(int argc, char **argv) {
    cli_args a;
    int rc = cli_parse(argc, argv, "eval", ARG_CHECKPOINT | ARG_JSON | ARG_QUIET, &a);
    if (rc) return rc;
    if (a.help || !a.checkpoint) {
        fprintf(a.help ? stdout : stderr,
                "usage: pmoe eval --checkpoint PATH [--set section.key=value ...] [--json]\n");
        return a.help ? 0 : 2;
    }
    pmoe_config cfg;
    pmoe_error err = {PMOE_OK, ""};
    const int speaker = pmoe_comm_launch_rank() == 0;
    pmoe_eval_result res;
    if (cli_build_config(&a, a.checkpoint, &cfg, &err) || pmoe_eval(&cfg, a.checkpoint, &res, &err))
        return speaker ? pmoe_cli_fail(&err) : err.code == PMOE_ERR_CONFIG ? 2 : 1;
    if (!speaker) return 0;
    if (!a.quiet) {
        printf("%s (step %lld): %s model on %s\n", res.checkpoint, (long long)res.step,
               res.info.model, res.info.data);
        printf("test accuracy %.2f%% on %lld samples", 100 * res.test_acc,
               (long long)res.info.test_size);
        if (res.router_recall >= 0) printf(", router recall %.2f%%", 100 * res.router_recall);
        printf("\n");
    }
    if (a.json) {
        printf("{\"checkpoint\":");
        pmoe_write_json_string(stdout, res.checkpoint);
        printf(",\"step\":%lld,\"model\":", (long long)res.step);
        pmoe_write_json_string(stdout, res.info.model);
        printf(",\"test_size\":%lld,\"test_acc\":%.6g", (long long)res.info.test_size, res.test_acc);
        if (res.router_recall >= 0) {
            printf(",\"router_recall\":%.6g,\"expert_recall\":[", res.router_recall);
            for (int e = 0; e < res.experts_reported; e++) printf("%s%.6g", e ? "," : "", res.expert_recall[e]);
            printf("]");
        }
        printf("}\n");
    }
    return 0;
}
