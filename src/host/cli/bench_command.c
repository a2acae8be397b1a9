/* bench_command.c: `pmoe bench`: the configured pMoE against its baseline
 * (the two-layer pMoE against its CNN, WRN-pMoE against its WRN: FLOPs,
 * memory, time), as a table and optionally JSON; sweeps over a key; and the
 * files the PyTorch peer (bench/torch_peer.py) starts from. */
#include <stdio.h>
#include <string.h>

#include "bench/bench.h"
#include "cli/args.h"
#include "cli/commands.h"
#include "core/files.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: pmoe bench [--config FILE] [--set section.key=value ...] [--json] [--quiet]\n"
            "                  [--no-progress] [--sweep section.key=v1,v2,... ...] [--out DIR]\n"
            "                  [--peer DIR]\n"
            "Times the configured pMoE and its single-expert CNN baseline (model.type = cnn,\n"
            "the same data and total hidden m) on one composed batch of train.batch samples:\n"
            "bench.warmup untimed steps, then bench.repeats timed ones (median, min, max).\n"
            "With model.type = wrn_pmoe the baseline is the WRN it replaces (model.type = wrn),\n"
            "and the pMoE layer is also timed alone, sparse and dense-masked, against the WRN\n"
            "layers it replaces; model.type = wrn runs the WRN against itself (an A/A run).\n"
            "A train step is forward + backward + SGD update (at learning rate 0, so every\n"
            "step sees the initial weights); an inference step is the forward pass (deep\n"
            "models: in evaluation mode, with the loss).\n"
            "FLOPs are counted analytically per layer (useful, executed,\n"
            "dense-masked); the peak is a bench.sgemm_size^3 SGEMM on the same threads.\n"
            "  --json        the last line of stdout is the result as one JSON object\n"
            "  --sweep K=V,. runs the bench per value of K; writes DIR/sweep-K.csv, .jsonl\n"
            "                and .png (DIR from --out, default bench-out)\n"
            "  --peer DIR    also writes the initial weights, the batch and the result\n"
            "                (DIR/pmoe-bench.json) for bench/torch_peer.py\n"
            "Progress (the target, step i of n, the time left) goes to stderr: a redrawn\n"
            "line on a terminal, else (and with --no-progress) a plain line per target and\n"
            "every 30 s; --quiet silences it with the table.\n");
}

int pmoe_cli_bench(int argc, char **argv) {
    cli_args a;
    int rc = cli_parse(argc, argv, "bench",
                       ARG_JSON | ARG_QUIET | ARG_NO_PROGRESS | ARG_SWEEP | ARG_OUT | ARG_PEER, &a);
    if (rc) return rc;
    if (a.help) {
        usage(stdout);
        return 0;
    }
    pmoe_config cfg;
    pmoe_error err = {PMOE_OK, ""};
    if (cli_build_config(&a, NULL, &cfg, &err)) return pmoe_cli_fail(&err);
    pmoe_progress_line line;
    const pmoe_progress progress = cli_progress(a.quiet, a.no_progress, &line, "bench");
    if (a.sweep_count > 0) {
        if (a.peer) {
            pmoe_fail(&err, PMOE_ERR_CONFIG,
                      "--peer and --sweep do not go together: run the peer per config");
            return pmoe_cli_fail(&err);
        }
        const char *dir = a.out ? a.out : "bench-out";
        for (int i = 0; i < a.sweep_count; i++) /* every sweep's outputs before any run */
            if (pmoe_bench_sweep_check(&cfg, a.sweeps[i], dir, &err)) return pmoe_cli_fail(&err);
        for (int i = 0; i < a.sweep_count; i++) {
            /* where the results go, before the minutes it takes */
            const char *eq = strchr(a.sweeps[i], '=');
            if (!a.quiet)
                printf("pmoe: bench --sweep %.*s: writing %s/sweep-%.*s.{csv,jsonl,png}\n",
                       eq ? (int)(eq - a.sweeps[i]) : (int)strlen(a.sweeps[i]), a.sweeps[i], dir,
                       eq ? (int)(eq - a.sweeps[i]) : (int)strlen(a.sweeps[i]), a.sweeps[i]);
            fflush(stdout); /* before the progress lines on stderr */
            pmoe_status s =
                pmoe_bench_sweep(&cfg, a.sweeps[i], dir, a.quiet ? NULL : stdout, &progress, &err);
            pmoe_progress_line_end(&line);
            if (s) return pmoe_cli_fail(&err);
        }
        return 0;
    }
    pmoe_bench_result res;
    pmoe_bench_options options = {a.peer, -1.0, &progress};
    char peer_json[1200] = "";
    if (a.peer) snprintf(peer_json, sizeof peer_json, "%s/pmoe-bench.json", a.peer);
    if (a.peer && (pmoe_make_dir(a.peer, "--peer folder", &err) || /* before the runs, not after */
                   pmoe_check_replaceable(peer_json, &err)))
        return pmoe_cli_fail(&err);
    pmoe_status s = pmoe_bench_run(&cfg, &options, &res, &err);
    pmoe_progress_line_end(&line);
    if (s) return pmoe_cli_fail(&err);
    if (a.peer) {
        pmoe_atomic_file out;
        s = pmoe_atomic_open(&out, peer_json, &err);
        if (!s) {
            pmoe_bench_write_json(out.stream, &res);
            fputc('\n', out.stream);
            s = pmoe_atomic_commit(&out, &err);
        }
        if (s) return pmoe_cli_fail(&err);
    }
    if (!a.quiet) pmoe_bench_print_table(stdout, &res);
    if (a.json) {
        pmoe_bench_write_json(stdout, &res);
        fputc('\n', stdout);
    }
    return 0;
}
