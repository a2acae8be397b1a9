#!/usr/bin/python3
"""Result 1 (the paper's Fig. 4): mosaic test accuracy against the number of
training samples N for the CNN, separate pMoE (k = 2, l = 2) and joint pMoE
(k = 8, l = 6), all with m = 40 hidden units, the paper's training settings
(SGD lr 0.2, batch 20, 150 epochs, router 100 epochs), last-epoch test
accuracy on 1000 test mosaics, mean and standard deviation over seeds; and
the share of the CNN's samples that each pMoE needs to reach the CNN's
accuracy at the largest N.

  --reduced  one seed, N = 100, 300, 1000, the three models (9 runs, minutes)
  --full     5 seeds, N = 100, 300, 500, 1000, the three models, plus three
             variants that explain the numbers: the CNN at the paper code's
             width (m = 4) and at the engine's default init (experts
             N(0, 0.01^2)), and separate pMoE with its experts at lr 0.2
             instead of 0.2 * l / n (common.py says why)

Writes (to --out-dir, default reproduce-out/)
fig4_sample_complexity[-reduced].{csv,png}; seed s
sets data.seed = train.seed = s (so the training set, the test set and the
init all change with the seed).
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

NAME = "fig4_sample_complexity"
PAPER = {  # spec section 6, read off the paper's Fig. 4
    "cnn": {100: 78.5, 300: 89.5, 500: 92.7, 1000: 95.1},
    "separate": {100: 82.3, 300: 92.3, 500: 94.7, 1000: 96.0},
    "joint": {100: 89.0, 300: 94.3, 500: 94.7, 1000: 96.0},
}
MODELS = {
    "cnn": ("CNN (m=40)", common.CNN),
    "separate": ("separate pMoE (k=2, l=2)", common.SEPARATE_MOSAIC),
    "joint": ("joint pMoE (k=8, l=6)", common.JOINT),
    "cnn_m4": ("CNN (m=4, the paper code's width)", dict(common.CNN, **{"model.hidden": 4})),
    "cnn_init001": ("CNN (m=40, experts N(0,0.01^2))",
                    dict(common.CNN, **{"model.expert_init_std": 0.01})),
    "separate_lr02": ("separate pMoE (k=2, l=2), experts at lr 0.2", common.SEPARATE),
}


def samples_to_reach(ns, accs, target):
    """Smallest N where the mean curve (linear between measured N) reaches
    target; None when it never does. Returns (N, exact) where exact is False
    when the first measured point is already above the target."""
    for i, (n, a) in enumerate(zip(ns, accs)):
        if a >= target:
            if i == 0:
                return n, False
            n0, a0 = ns[i - 1], accs[i - 1]
            return n0 + (target - a0) * (n - n0) / (a - a0), True
    return None, True


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_args(p, "one seed, N = 100, 300, 1000", "5 seeds, N = 100, 300, 500, 1000, "
                           "with the CNN variants")
    p.add_argument("--seeds", type=int, help="number of seeds (default: 1 reduced, 5 full)")
    p.add_argument("--sizes", help="comma-separated N (default by mode)")
    p.add_argument("--models", help="comma-separated, of " + ", ".join(MODELS) +
                   " (default: the first three, and the CNN variants in --full)")
    args = p.parse_args()
    common.check_data(args)
    full = args.mode == "full"
    seeds = list(range(1, (args.seeds or (5 if full else 1)) + 1))
    sizes = [int(x) for x in args.sizes.split(",")] if args.sizes else \
        ([100, 300, 500, 1000] if full else [100, 300, 1000])
    models = args.models.split(",") if args.models else \
        ["cnn", "separate", "joint"] + (["cnn_m4", "cnn_init001", "separate_lr02"] if full else [])
    for m in ("cnn", "separate", "joint"):
        if m not in models:
            raise SystemExit(f"--models must include {m}")

    runner = common.Runner(args, NAME)
    base = common.mosaic_settings(args)
    extra = common.extra_settings(args)
    jobs, keys = [], []
    # Largest N first: the long runs start early and the two processes stay busy.
    for n in sorted(sizes, reverse=True):
        for model in models:
            for seed in seeds:
                s = dict(base, **MODELS[model][1])
                s.update({"data.train_size": n, "data.seed": seed, "train.seed": seed})
                s.update(extra)
                jobs.append((s, True, False))
                keys.append((model, n, seed))
    common.log(f"{NAME}: {len(jobs)} runs with {runner.pmoe}")
    results = runner.map(jobs)

    acc = {}
    for (model, n, seed), res in zip(keys, results):
        acc.setdefault(model, {}).setdefault(n, []).append(100 * res["test_acc"])
        best = max(r["test_acc"] for r in res["epochs_log"] if r["phase"] == "main")
        acc.setdefault(model + "#best", {}).setdefault(n, []).append(100 * best)
        acc.setdefault(model + "#train", {}).setdefault(n, []).append(100 * res["train_acc"])

    rows = []
    for model in models:
        for n in sizes:
            m, sd = common.mean_std(acc[model][n])
            bm, _ = common.mean_std(acc[model + "#best"][n])
            tm, _ = common.mean_std(acc[model + "#train"][n])
            paper = PAPER.get(model, {}).get(n, float("nan"))
            rows.append([model, n, len(acc[model][n]), m, sd, min(acc[model][n]),
                         max(acc[model][n]), bm, tm, paper,
                         " ".join(f"{a:.1f}" for a in acc[model][n])])
    common.write_csv(common.output_path(args, NAME, "csv"),
                     ["model", "N", "seeds", "test_acc_mean", "test_acc_std", "test_acc_min",
                      "test_acc_max", "best_epoch_test_acc_mean", "train_acc_mean", "paper",
                      "test_acc_per_seed"], rows)

    # The share of the CNN's samples that pMoE needs to reach the CNN at the largest N.
    nmax = max(sizes)
    means = {m: [common.mean_std(acc[m][n])[0] for n in sizes] for m in models}
    target = means["cnn"][-1]
    summary = [f"CNN mean test accuracy at N = {nmax}: {target:.2f}%"]
    for model in ("separate", "joint"):
        n_star, exact = samples_to_reach(sizes, means[model], target)
        if n_star is None:
            summary.append(f"{model}: does not reach {target:.2f}% within N <= {nmax}")
        elif not exact:
            summary.append(f"{model}: reaches {target:.2f}% already at N = {n_star} "
                           f"(<= {100 * n_star / nmax:.0f}% of the CNN's samples)")
        else:
            summary.append(f"{model}: reaches {target:.2f}% at N ~ {n_star:.0f} "
                           f"({100 * n_star / nmax:.0f}% of the CNN's samples)")
    for model in ("cnn", "separate", "joint"):
        n95, exact = samples_to_reach(sizes, means[model], 95.0)
        summary.append(f"N to reach 95% ({model}): " +
                       ("not reached" if n95 is None else
                        (f"<= {n95}" if not exact else f"~{n95:.0f}")))
    common.write_text(common.output_path(args, NAME, "txt"), summary)
    print("\n".join(summary))

    plt = common.pyplot()
    if plt:
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        colors = {"cnn": "tab:blue", "separate": "tab:orange", "joint": "tab:green",
                  "cnn_m4": "tab:blue", "cnn_init001": "tab:gray", "separate_lr02": "tab:orange"}
        for model in models:
            ms = [common.mean_std(acc[model][n]) for n in sizes]
            style = "-" if model in PAPER else ":"
            ax.errorbar(sizes, [m for m, _ in ms], yerr=[s for _, s in ms], fmt="o" + style,
                        color=colors[model], capsize=3, ms=4, label=MODELS[model][0] + ", pmoe")
            if model in PAPER:
                ns = sorted(PAPER[model])
                ax.plot(ns, [PAPER[model][n] for n in ns], "x--", color=colors[model], alpha=0.6,
                        label=MODELS[model][0].split(" (")[0] + ", paper (MNIST)")
        ax.set_xlabel("training samples N")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"Sample complexity ({common.data_label(args)}; "
                     f"{len(seeds)} seed{'s' if len(seeds) > 1 else ''}, mean ± std)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
        common.save_png(plt, fig, common.output_path(args, NAME, "png"))


if __name__ == "__main__":
    main()
