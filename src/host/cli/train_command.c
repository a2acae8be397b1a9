/* train_command.c: `pmoe train`: build a config, run pmoe_train with the
 * standard reporter, print the result.
 *
 * SIGINT and SIGTERM set a flag that the loop reads after each step: it
 * saves a checkpoint and returns, and the command exits 130 or 143. A second
 * signal kills at once (the handler is one-shot). Progress that cannot be
 * written (a full disk behind stdout) raises the same flag: the run stops
 * after that step with its checkpoint, and the command says why and exits 1.
 *
 * Progress is a redrawn bar only on a terminal that no MPI launcher gave us:
 * Open MPI hands every rank a pty even when mpirun's output goes to a file,
 * and a batch log full of '\r' and escape codes is unreadable. Under a
 * launcher, off a terminal, or with --no-progress it is plain lines.
 *
 * Under mpirun every rank runs this command; rank 0 alone prints, writes the
 * log and the JSON result (errors are agreed by all ranks, see
 * comm/comm.h, so rank 0's line names the failing rank), and every rank
 * exits with the same code. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli/args.h"
#include "cli/commands.h"
#include "comm/comm.h"
#include "core/files.h"
#include "data/dataset.h"
#include "pmoe/train.h"
#include "train/report.h"

static volatile sig_atomic_t stop_signal = 0;

static void on_signal(int sig) { stop_signal = sig; }

static void install_handlers(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESETHAND; /* the second signal takes the default action */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

static void usage(FILE *out) {
    fprintf(out,
            "usage: pmoe train [--config FILE] [--set section.key=value ...] [--resume PATH]\n"
            "                  [--log FILE] [--json] [--quiet] [--no-progress] [--per-class]\n"
            "With no arguments it trains joint pMoE on the Fashion-MNIST mosaic (or on the\n"
            "synthetic data model when the dataset is not installed). --resume continues\n"
            "a run from a checkpoint file (or the newest in a folder), with its saved\n"
            "config and any --set on top. SIGINT/SIGTERM save a checkpoint and exit.\n"
            "--no-progress prints plain lines, never a redrawn bar (also the default\n"
            "under mpirun, srun and other MPI launchers). --per-class prints the final\n"
            "evaluation's per-class accuracy and confusion matrix (and puts them in --json).\n");
}

int pmoe_cli_train(int argc, char **argv) {
    cli_args a;
    const unsigned flags = ARG_LOG | ARG_RESUME | ARG_JSON | ARG_QUIET | ARG_NO_PROGRESS |
                           ARG_PER_CLASS;
    int rc = cli_parse(argc, argv, "train", flags, &a);
    if (rc) return rc;
    if (a.help) {
        usage(stdout);
        return 0;
    }
    /* the launcher's rank (0 alone); the job's rank 0 speaks for it */
    const int speaker = pmoe_comm_launch_rank() == 0;
    pmoe_config cfg;
    pmoe_error err = {PMOE_OK, ""};
    if (cli_build_config(&a, a.resume, &cfg, &err))
        return speaker ? pmoe_cli_fail(&err) : err.code == PMOE_ERR_CONFIG ? 2 : 1;
    pmoe_reporter rep;
    memset(&rep, 0, sizeof rep);
    rep.progress = a.quiet || !speaker ? NULL : stdout;
    rep.stop = &stop_signal;
    rep.is_terminal = isatty(fileno(stdout)) && !a.no_progress && !pmoe_comm_launched();
    rep.saves_final = cfg.train.checkpoint_every > 0;
    if (a.log && speaker) {
        rep.log = pmoe_open_append(a.log, !a.resume, "log", &err);
        rep.log_name = a.log;
        if (!rep.log) return pmoe_cli_fail(&err);
    }
    /* data.source = auto never falls back in silence: a mistyped data.path
     * would train on synthetic data. The first line says which it is. */
    if (rep.progress && cfg.data.source == PMOE_DATA_AUTO) {
        if (pmoe_data_auto_source(cfg.data.path) == PMOE_DATA_SYNTHETIC)
            printf("pmoe: no IDX files in %s: using the synthetic data model (data.source = "
                   "auto)\n",
                   cfg.data.path);
        else printf("pmoe: data.source = auto: the mosaic of the IDX files in %s\n", cfg.data.path);
    }
    if (rep.progress && a.resume) printf("pmoe: resuming from %s\n", a.resume);
    install_handlers();
    pmoe_train_callbacks cb = pmoe_reporter_callbacks(&rep);
    pmoe_train_options options = {a.resume, &stop_signal, a.per_class};
    pmoe_train_result res;
    pmoe_status s = pmoe_train(&cfg, &cb, &options, &res, &err);
    if (rep.log && fclose(rep.log) != 0 && !s)
        s = pmoe_fail(&err, PMOE_ERR_IO, "%s: closing the log failed: %s", a.log, strerror(errno));
    if (rep.bar_shown) fprintf(stdout, "\n");
    fflush(stdout);
    /* sharded, a signal to any rank stops them all: the others report SIGTERM */
    const int sig = stop_signal ? (int)stop_signal : SIGTERM;
    if (res.info.rank != 0) /* an agreed outcome: rank 0 says it */
        return s == PMOE_ERR_INTERRUPTED ? 128 + sig : s ? (s == PMOE_ERR_CONFIG ? 2 : 1) : 0;
    if (rep.failed.code) { /* progress could not be written: that, then how the run ended */
        pmoe_error why = rep.failed;
        pmoe_fail(&why, rep.failed.code, "%s; %s", rep.failed.message,
                  s ? err.message : "the run ended");
        return pmoe_cli_fail(&why);
    }
    if (s == PMOE_ERR_INTERRUPTED) {
        fprintf(stderr, "pmoe: %s by signal %d: %s\n", sig == SIGINT ? "interrupted" : "terminated",
                sig, err.message);
        return 128 + sig;
    }
    if (s) return pmoe_cli_fail(&err);
    pmoe_reporter_summary(&rep, &res);
    if (rep.progress && res.per_class.classes > 0) pmoe_class_figures_print(stdout, &res.per_class);
    if (a.json) {
        pmoe_write_result_json(stdout, &res);
        fputc('\n', stdout);
    }
    pmoe_class_figures_free(&res.per_class);
    return 0;
}
