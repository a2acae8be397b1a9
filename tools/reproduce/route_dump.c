/* route_dump.c: what a saved pMoE model's routers pick on every test sample,
 * as one JSON object on stdout, for the reproduction scripts.
 *
 *   route_dump CHECKPOINT
 *
 * prints {"experts":k,"topl":l,"test_size":N,"test_acc":..,"router_recall":..,
 * "labels":[N],"decisive":[N],"selected":[N][k][l]}. The engine's own
 * router_recall counts a sample when its deciding patch is among the picks of
 * any expert; the scripts also need it per expert and per class (the paper's
 * Fig. 8 asks whether the deciding patch reaches the expert meant for its
 * class), which these per-sample picks give. Built by tools/reproduce/common.py
 * against the engine library of a pmoe build folder. */
#include <stdio.h>
#include <stdlib.h>

#include "pmoe/config.h"
#include "pmoe/train.h"

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: route_dump CHECKPOINT\n");
        return 2;
    }
    pmoe_config cfg;
    pmoe_error err = {PMOE_OK, ""};
    pmoe_config_default(&cfg);
    if (pmoe_checkpoint_load_config(argv[1], &cfg, &err)) {
        fprintf(stderr, "route_dump: error: %s\n", err.message);
        return 1;
    }
    cfg.train.threads = 1;
    pmoe_routing r;
    const int all = cfg.data.test_size > 0x7fffffff ? 0x7fffffff : (int)cfg.data.test_size;
    if (pmoe_route(&cfg, argv[1], all, NULL, &r, &err)) {
        fprintf(stderr, "route_dump: error: %s\n", err.message);
        return 1;
    }
    const int k = r.experts, l = r.topl;
    printf("{\"experts\":%d,\"topl\":%d,\"patches\":%d,\"test_size\":%d,\"test_acc\":%.6g,"
           "\"router_recall\":%.6g,\"labels\":[",
           k, l, r.grid_rows * r.grid_cols, r.samples, r.test_acc, r.router_recall);
    for (int i = 0; i < r.samples; i++) printf("%s%d", i ? "," : "", r.labels[i]);
    printf("],\"decisive\":[");
    for (int i = 0; i < r.samples; i++) printf("%s%d", i ? "," : "", r.decisive[i]);
    printf("],\"selected\":[");
    for (int i = 0; i < r.samples; i++) {
        printf("%s[", i ? "," : "");
        for (int e = 0; e < k; e++) {
            printf("%s[", e ? "," : "");
            for (int t = 0; t < l; t++)
                printf("%s%d", t ? "," : "", r.selected[((size_t)i * k + e) * l + t]);
            printf("]");
        }
        printf("]");
    }
    printf("]}\n");
    pmoe_routing_free(&r);
    return 0;
}
