#!/usr/bin/python3
"""Result 5 (the paper's Figs. 14-16): WRN-pMoE against WRN, test accuracy
against the number of training samples N on the noisy-background task, and
the training time of WRN-pMoE as a share of WRN's at equal N.

The setting is a pmoe config file (default configs/wrn_pmoe_small.ini: the
paper's 32x32 setting at width 1, k = 4 routers, l = 16 of the 64 1x1
patches of group 3's 8x8 map, 1x1 experts; a Fashion-MNIST item of 16x16
pasted on dimmed item fragments, data.background = items, 10 classes). WRN
is the same file with model.type = wrn. Both models of a pair get the same
seed (data.seed = train.seed = s: the same training set, test set and data
order), the same epochs and every other setting of the file (SGD lr 0.05,
momentum 0.9, weight decay 5e-4, batch 64, constant learning rate). The
training sets are nested in N (sample i of a seed's stream does not depend
on N) and the test set is the same at every N.

Epochs: max(min_epochs, min(max_epochs, ceil(presentations / N))), so small
N still get enough steps (at least presentations / batch of them) and large
N do not cost more than they need; the defaults are below.

  --reduced  one seed, N = 1000, 5000, 1000 test samples, at least 20000
             presentations (N = 1000: 20 epochs, 5000: 8): ~5 min on 2 cores
  --full     2 seeds, N = 1000, 2000, 5000, 10000, 2000 test samples,
             100000 presentations, 15..100 epochs (N = 1000: 100 epochs,
             2000: 50, 5000: 20, 10000: 15): ~40 min on 2 free cores

Accuracy is reported three ways, all on the test set evaluated after every
epoch: the last epoch's (the headline number: no choice made on the test
set), the mean of the last five epochs (the learning rate is constant, so
single epochs are noisy), and the best epoch's (optimistic: chosen on the
test set). Time is the sum of the epochs' step seconds (training steps
only, from the --log records) and the run's wall seconds (`pmoe train
--json`, which includes the per-epoch test evaluation). With --jobs 2 the
two models of a pair run side by side, one thread each.

Writes (to --out-dir, default reproduce-out/)
fig14_wrn_vs_pmoe[-TAG][-reduced].{csv,png,txt};
--config configs/wrn_pmoe_small64.ini --tag 64 runs the 64x64 setting
(k = 8, l = 2 of 16 4x4 patches, 3x3 experts; about four times the cost).
"""

import argparse
import configparser
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

NAME = "fig14_wrn_vs_pmoe"
DEFAULT_CONFIG = os.path.join(common.REPO, "configs", "wrn_pmoe_small.ini")
# Spec section 6, read off the paper's figures: CIFAR-10 + ImageNet noise,
# N = 10k..50k, w = 10, final test accuracy (%).
PAPER_N = [10000, 20000, 30000, 40000, 50000]
PAPER = {"wrn": [42, 56, 63, 67, 70], "wrn_pmoe": [54, 64, 69, 71.5, 73.5]}
PAPER_TIME_RATIO = (0.57, 0.60)  # CelebA 4-class, one GPU: 156 s vs 260 s at N = 4000
LABEL = {"wrn": "WRN", "wrn_pmoe": "WRN-pMoE"}
COLOR = {"wrn": "tab:blue", "wrn_pmoe": "tab:red"}
LAST_K = 5  # epochs in the smoothed accuracy


def read_config(path):
    """A pmoe .ini file as a {section.key: value} dict (passed as --set, so the
    cache key holds every setting)."""
    cp = configparser.ConfigParser(inline_comment_prefixes=(";", "#"))
    cp.optionxform = str
    with open(path) as f:
        cp.read_file(f)
    return {f"{sec}.{key}": val.strip() for sec in cp.sections() for key, val in cp[sec].items()}


class DeepRunner(common.Runner):
    """common.Runner that keeps, per epoch, the step seconds and the
    evaluation seconds besides the accuracies (common.Runner keeps the
    two-layer experiments' fields only), and the per-position expert load of
    the last epoch."""

    def cache_extras(self, want_log, want_routing):
        return {"log": "deep-v1"}

    def keep_log(self, result, rows):
        keep = ("epoch", "train_loss", "train_acc", "test_acc", "router_recall",
                "step_seconds", "seconds")
        result["epochs_log"] = []
        for r in rows:
            e = {k: r.get(k) for k in keep}
            e["eval_seconds"] = (r.get("phase_seconds") or {}).get("eval")
            result["epochs_log"].append(e)
        if rows and rows[-1].get("expert_load_position") is not None:
            result["last_load_position"] = rows[-1]["expert_load_position"]


def epochs_for(n, presentations, min_epochs, max_epochs):
    return max(min_epochs, min(max_epochs, math.ceil(presentations / n)))


def summarize(res):
    log_ = res["epochs_log"]
    accs = [100 * e["test_acc"] for e in log_ if e.get("test_acc") is not None]
    step_s = sum(e["step_seconds"] or 0.0 for e in log_)
    eval_s = sum(e["eval_seconds"] or 0.0 for e in log_)
    best = max(range(len(accs)), key=lambda i: accs[i])
    return {"final": accs[-1], "lastk": sum(accs[-LAST_K:]) / len(accs[-LAST_K:]),
            "best": accs[best], "best_epoch": best + 1, "train_acc": 100 * log_[-1]["train_acc"],
            "step_seconds": step_s, "eval_seconds": eval_s, "seconds": res["seconds"],
            "params": res.get("params"), "curve": accs}


def fmt_ms(vals, digits=1):
    m, sd = common.mean_std(vals)
    if len(vals) < 2:
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} ± {sd:.{digits}f}"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--reduced", dest="mode", action="store_const", const="reduced",
                      help="one seed, N = 1000, 5000 (the default)")
    mode.add_argument("--full", dest="mode", action="store_const", const="full",
                      help="2 seeds, N = 1000, 2000, 5000, 10000")
    p.set_defaults(mode="reduced")
    p.add_argument("--pmoe", help="the pmoe binary (default: $PMOE, else build-repro/pmoe "
                   "or build/pmoe under the repository)")
    p.add_argument("--jobs", type=int, default=2,
                   help="pmoe processes at once, each with train.threads = 1 (default 2)")
    p.add_argument("--config", default=DEFAULT_CONFIG,
                   help="the WRN-pMoE setting (default configs/wrn_pmoe_small.ini); WRN is the "
                   "same with model.type = wrn")
    p.add_argument("--data-path", default=common.FASHION_MNIST,
                   help="folder with the four IDX files the items come from (default Fashion-MNIST)")
    p.add_argument("--seeds", type=int, help="number of seeds (default: 1 reduced, 2 full)")
    p.add_argument("--sizes", help="comma-separated N (default by mode)")
    p.add_argument("--test-size", type=int, help="test samples (default: 1000 reduced, 2000 full)")
    p.add_argument("--presentations", type=int,
                   help="samples shown per run at least, epochs = presentations / N within the "
                   "bounds below (default: 20000 reduced, 100000 full)")
    p.add_argument("--min-epochs", type=int, help="(default: 8 reduced, 15 full)")
    p.add_argument("--max-epochs", type=int, help="(default: 20 reduced, 100 full)")
    p.add_argument("--tag", default="", help="suffix for the output names (e.g. 64 with "
                   "--config configs/wrn_pmoe_small64.ini)")
    p.add_argument("--out-dir", default=common.OUT_DIR, help="where the CSV, PNG and TXT go "
                   "(default reproduce-out/; the committed results: docs/reproduction)")
    p.add_argument("--no-cache", action="store_true",
                   help="rerun everything instead of reusing cached results")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="an extra pmoe setting for every run (repeatable)")
    # Accepted so that run_all.sh can hand every script the same options; the
    # noisy task has all ten classes.
    p.add_argument("--pos-class", type=int, help=argparse.SUPPRESS)
    p.add_argument("--neg-class", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if not common.idx_present(args.data_path):
        raise SystemExit(f"{args.data_path}: the IDX files are missing (Fashion-MNIST: "
                         f"apt-get install dataset-fashion-mnist)")
    full = args.mode == "full"
    seeds = list(range(1, (args.seeds or (2 if full else 1)) + 1))
    sizes = [int(x) for x in args.sizes.split(",")] if args.sizes else \
        ([1000, 2000, 5000, 10000] if full else [1000, 5000])
    test_size = args.test_size or (2000 if full else 1000)
    presentations = args.presentations or (100000 if full else 20000)
    min_epochs = args.min_epochs or (15 if full else 8)
    max_epochs = args.max_epochs or (100 if full else 20)

    base = read_config(args.config)
    base.update({"data.path": args.data_path, "data.test_size": test_size})
    extra = common.extra_settings(args)
    runner = DeepRunner(args, NAME)
    jobs, keys = [], []
    # Largest N first, and the two models of a pair next to each other, so
    # that with --jobs 2 they run side by side under the same machine load.
    for n in sorted(sizes, reverse=True):
        for seed in seeds:
            for model in ("wrn", "wrn_pmoe"):
                s = dict(base)
                s.update({"model.type": model, "data.train_size": n,
                          "train.epochs": epochs_for(n, presentations, min_epochs, max_epochs),
                          "data.seed": seed, "train.seed": seed})
                s.update(extra)
                jobs.append((s, True, False))
                keys.append((model, n, seed))
    common.log(f"{NAME}: {len(jobs)} runs with {runner.pmoe}, config "
               f"{os.path.relpath(args.config, common.REPO)}")
    results = runner.map(jobs)
    summ = {k: summarize(r) for k, r in zip(keys, results)}
    example = dict(jobs[-1][0])

    rows = []
    per = {}
    for model in ("wrn", "wrn_pmoe"):
        for n in sorted(sizes):
            ss = [summ[(model, n, s)] for s in seeds]
            d = {f: [x[f] for x in ss] for f in ("final", "lastk", "best", "train_acc",
                                                  "step_seconds", "seconds")}
            per[(model, n)] = d
            fm, fsd = common.mean_std(d["final"])
            rows.append([model, n, epochs_for(n, presentations, min_epochs, max_epochs), len(seeds),
                         fm, fsd, common.mean_std(d["lastk"])[0], common.mean_std(d["best"])[0],
                         common.mean_std(d["train_acc"])[0],
                         common.mean_std(d["step_seconds"])[0], common.mean_std(d["seconds"])[0],
                         ss[0]["params"],
                         " ".join(f"{v:.1f}" for v in d["final"]),
                         " ".join(f"{v:.1f}" for v in d["best"]),
                         " ".join(str(x["best_epoch"]) for x in ss)])
    ratio = {}
    for n in sorted(sizes):
        step = [summ[("wrn_pmoe", n, s)]["step_seconds"] / summ[("wrn", n, s)]["step_seconds"]
                for s in seeds]
        wall = [summ[("wrn_pmoe", n, s)]["seconds"] / summ[("wrn", n, s)]["seconds"] for s in seeds]
        ratio[n] = (step, wall)

    header = ["model", "N", "epochs", "seeds", "test_acc_final_mean", "test_acc_final_std",
              f"test_acc_last{LAST_K}_mean", "test_acc_best_mean", "train_acc_final_mean",
              "train_step_seconds_mean", "wall_seconds_mean", "params",
              "test_acc_final_per_seed", "test_acc_best_per_seed", "best_epoch_per_seed"]
    common.write_csv(common.output_path(args, NAME, "csv"), header, rows)

    # The learning curves, one file beside the CSV (one row per run and epoch).
    curves = []
    for (model, n, seed), r in zip(keys, results):
        for e in r["epochs_log"]:
            curves.append([model, n, seed, e["epoch"], e["train_loss"], 100 * e["train_acc"],
                           100 * e["test_acc"], e["step_seconds"]])
    common.write_csv(common.output_path(args, NAME + "_curves", "csv"),
                     ["model", "N", "seed", "epoch", "train_loss", "train_acc", "test_acc",
                      "step_seconds"], curves)

    # The text table.
    lines = [f"{NAME} ({args.mode}): {os.path.relpath(args.config, common.REPO)}, "
             f"noisy task (data.background = {base.get('data.background', 'items')}), "
             f"{test_size} test samples, seeds {seeds}, epochs = max({min_epochs}, "
             f"min({max_epochs}, ceil({presentations} / N)))",
             "accuracy: test %, mean ± std over seeds; final = last epoch, last5 = mean of the "
             "last 5 epochs, best = best epoch (chosen on the test set)",
             "time: training-step seconds summed over epochs (no evaluation), one thread per run",
             "",
             f"{'N':>6} {'ep':>4} | {'WRN final':>12} {'last5':>6} {'best':>6} | "
             f"{'pMoE final':>12} {'last5':>6} {'best':>6} | {'diff':>5} | "
             f"{'WRN s':>7} {'pMoE s':>7} {'ratio':>6}"]
    for n in sorted(sizes):
        w, q = per[("wrn", n)], per[("wrn_pmoe", n)]
        diff = common.mean_std(q["final"])[0] - common.mean_std(w["final"])[0]
        lines.append(
            f"{n:>6} {epochs_for(n, presentations, min_epochs, max_epochs):>4} | "
            f"{fmt_ms(w['final']):>12} {common.mean_std(w['lastk'])[0]:>6.1f} "
            f"{common.mean_std(w['best'])[0]:>6.1f} | "
            f"{fmt_ms(q['final']):>12} {common.mean_std(q['lastk'])[0]:>6.1f} "
            f"{common.mean_std(q['best'])[0]:>6.1f} | {diff:>+5.1f} | "
            f"{common.mean_std(w['step_seconds'])[0]:>7.1f} "
            f"{common.mean_std(q['step_seconds'])[0]:>7.1f} "
            f"{common.mean_std(ratio[n][0])[0]:>6.3f}")
    all_step = [x for n in sizes for x in ratio[n][0]]
    all_wall = [x for n in sizes for x in ratio[n][1]]
    lines += ["",
              f"time ratio WRN-pMoE / WRN, training steps: {fmt_ms(all_step, 3)} "
              f"(range {min(all_step):.3f}..{max(all_step):.3f}); wall incl. evaluation: "
              f"{fmt_ms(all_wall, 3)}; the paper: {PAPER_TIME_RATIO[0]:.2f}-{PAPER_TIME_RATIO[1]:.2f}",
              f"params: WRN {summ[('wrn', sizes[0], seeds[0])]['params']}, WRN-pMoE "
              f"{summ[('wrn_pmoe', sizes[0], seeds[0])]['params']}",
              "",
              "one run (the last of the list; the script adds --json --quiet --log FILE):",
              "  " + common.command_line(runner.pmoe, example)]
    common.write_text(common.output_path(args, NAME, "txt"), lines)
    print("\n".join(lines))

    plt = common.pyplot()
    if plt:
        fig, (ax, ax2, ax3) = plt.subplots(1, 3, figsize=(14, 4.2),
                                           gridspec_kw={"width_ratios": [1.2, 1.2, 0.8]})
        ns = sorted(sizes)
        for model in ("wrn", "wrn_pmoe"):
            fin = [common.mean_std(per[(model, n)]["final"]) for n in ns]
            ax.errorbar(ns, [m for m, _ in fin], yerr=[sd for _, sd in fin], fmt="o-",
                        color=COLOR[model], capsize=3, ms=4,
                        label=f"{LABEL[model]}, pmoe (last epoch)")
            ax.plot(ns, [common.mean_std(per[(model, n)]["best"])[0] for n in ns], "^:",
                    color=COLOR[model], alpha=0.7, ms=4, label=f"{LABEL[model]}, pmoe (best epoch)")
            ax.plot(PAPER_N, PAPER[model], "x--", color=COLOR[model], alpha=0.45,
                    label=f"{LABEL[model]}, paper (CIFAR + ImageNet noise, w=10)")
        ax.set_xscale("log")
        ax.set_xlabel("training samples N")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"WRN vs WRN-pMoE, noisy task ({os.path.basename(args.config)}; "
                     f"{len(seeds)} seed{'s' if len(seeds) > 1 else ''})", fontsize=8)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=6.5, loc="lower right")

        # Learning curves at the largest N, seed 1.
        nmax = max(sizes)
        for model in ("wrn", "wrn_pmoe"):
            for seed in seeds:
                c = summ[(model, nmax, seed)]["curve"]
                ax2.plot(range(1, len(c) + 1), c, "-", color=COLOR[model], lw=1,
                         alpha=1.0 if seed == seeds[0] else 0.45,
                         label=f"{LABEL[model]}, seed {seed}")
        ax2.set_xlabel("epoch")
        ax2.set_ylabel("test accuracy (%)")
        ax2.set_title(f"test accuracy per epoch at N = {nmax}", fontsize=8)
        ax2.grid(alpha=0.3)
        ax2.legend(fontsize=6.5, loc="lower right")

        rs = [common.mean_std(ratio[n][0]) for n in ns]
        ax3.errorbar(ns, [m for m, _ in rs], yerr=[sd for _, sd in rs], fmt="o-", color="k",
                     capsize=3, ms=4, label="pmoe, CPU, 1 thread (training steps)")
        ax3.axhspan(*PAPER_TIME_RATIO, color="tab:red", alpha=0.2,
                    label="paper (CelebA, 1 GPU, w=10)")
        ax3.axhline(1.0, color="grey", lw=0.8)
        ax3.set_xscale("log")
        ax3.set_ylim(0.4, 1.2)
        ax3.set_xlabel("training samples N")
        ax3.set_ylabel("time WRN-pMoE / WRN")
        ax3.set_title("training time ratio at equal N", fontsize=8)
        ax3.grid(alpha=0.3, which="both")
        ax3.legend(fontsize=6.5, loc="lower right")
        common.save_png(plt, fig, common.output_path(args, NAME, "png"))


if __name__ == "__main__":
    main()
