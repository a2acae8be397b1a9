#!/usr/bin/python3
"""Result 4 (the paper's Fig. 5): the phase transition of separate pMoE on
the theory's data model. For a grid of l (patches per expert) and N
(training samples), the share of seeds in which separate pMoE (k = 2,
m = 40) succeeds, against the CNN (m = 40, every patch), which is the l = n
end of the same axis.

Success: last-epoch test accuracy >= 95% on 1000 test samples.

The data model (data.source = synthetic, spec section 5): n = 16 patches of
d = 64 values; one patch holds o1 (y = +1) or o2 (y = -1), the other 15 one
of p irrelevant cluster centres, with <o, q> = delta_r; N(0, noise^2) on
every value. The defaults below (noise 0.2, 8 clusters, delta_r 0.2, d 64)
were chosen so that N matters over the grid: with the engine's default noise
0.1 every pMoE succeeds from N = 50 on, with noise 0.3 nothing reaches 95% by
N = 800. docs/reproduction.md shows the exploration.

The paper's training settings: SGD lr 0.2, batch 20, 150 epochs (router 100
epochs on all N samples), router init N(0, 0.1^2), experts N(0, 0.1^2).

  --reduced  one seed, l = 1, 2, 4, 8 and the CNN, N = 25, 100, 400, 1600
  --full     5 seeds, l = 1, 2, 4, 8 and the CNN, N = 25, 50, 100, 200, 400, 800, 1600

Writes (to --out-dir, default reproduce-out/)
fig5_phase_transition[-reduced].{csv,png}.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

NAME = "fig5_phase_transition"
SUCCESS = 95.0
TOPL = [1, 2, 4, 8]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_args(p, "one seed, N = 25, 100, 400, 1600",
                           "5 seeds, N = 25, 50, 100, 200, 400, 800, 1600")
    p.add_argument("--seeds", type=int, help="number of seeds (default: 1 reduced, 5 full)")
    p.add_argument("--sizes", help="comma-separated N (default by mode)")
    p.add_argument("--noise", type=float, default=0.2, help="data.noise (default 0.2)")
    p.add_argument("--clusters", type=int, default=8, help="data.synthetic_clusters (default 8)")
    p.add_argument("--delta-r", type=float, default=0.2, help="data.delta_r (default 0.2)")
    p.add_argument("--dim", type=int, default=64, help="data.synthetic_dim d (default 64)")
    p.add_argument("--epochs", type=int, default=150, help="train.epochs (default 150)")
    args = p.parse_args()
    full = args.mode == "full"
    seeds = list(range(1, (args.seeds or (5 if full else 1)) + 1))
    sizes = [int(x) for x in args.sizes.split(",")] if args.sizes else \
        ([25, 50, 100, 200, 400, 800, 1600] if full else [25, 100, 400, 1600])

    runner = common.Runner(args, NAME)
    data = {"data.source": "synthetic", "data.synthetic_patches": 16,
            "data.synthetic_dim": args.dim, "data.synthetic_clusters": args.clusters,
            "data.delta_r": args.delta_r, "data.delta_d": 0.0, "data.noise": args.noise,
            "data.test_size": 1000, "train.epochs": args.epochs,
            "train.eval_every": 1000000}  # evaluate once, after the last epoch
    extra = common.extra_settings(args)
    models = [("cnn", 16, dict(common.CNN))] + \
        [("separate", l, dict(common.SEPARATE, **{"model.topl": l})) for l in TOPL]
    jobs, keys = [], []
    for n in sorted(sizes, reverse=True):
        for name, l, settings in models:
            for seed in seeds:
                s = dict(data, **settings)
                s.update({"data.train_size": n, "data.seed": seed, "train.seed": seed}, **extra)
                jobs.append((s, False, False))
                keys.append((name, l, n, seed))
    common.log(f"{NAME}: {len(jobs)} runs with {runner.pmoe}")
    results = runner.map(jobs)

    acc, rec = {}, {}
    for (name, l, n, seed), res in zip(keys, results):
        acc.setdefault((name, l, n), []).append(100 * res["test_acc"])
        if res.get("router_recall") is not None:
            rec.setdefault((name, l, n), []).append(100 * res["router_recall"])

    rows = []
    for name, l, _ in models:
        for n in sizes:
            a = acc[(name, l, n)]
            m, sd = common.mean_std(a)
            succ = sum(x >= SUCCESS for x in a) / len(a)
            r = common.mean_std(rec.get((name, l, n), []))[0]
            rows.append([name, l, n, len(a), succ, m, sd, r, " ".join(f"{x:.1f}" for x in a)])
    common.write_csv(common.output_path(args, NAME, "csv"),
                     ["model", "l", "N", "seeds", "success_rate", "test_acc_mean", "test_acc_std",
                      "router_recall_mean", "test_acc_per_seed"], rows)

    # The smallest N at which each model succeeds in at least half of the seeds.
    summary = [f"success: test accuracy >= {SUCCESS}% (noise {args.noise}, {args.clusters} "
               f"clusters, delta_r {args.delta_r}, d {args.dim}, n 16)"]
    for name, l, _ in models:
        ok = [n for n in sizes if sum(x >= SUCCESS for x in acc[(name, l, n)]) * 2 >=
              len(acc[(name, l, n)])]
        label = "CNN" if name == "cnn" else f"separate pMoE l={l}"
        summary.append(f"{label}: smallest N with success in >= half the seeds: "
                       f"{min(ok) if ok else f'> {max(sizes)}'}")
    common.write_text(common.output_path(args, NAME, "txt"), summary)
    print("\n".join(summary))

    plt = common.pyplot()
    if plt:
        import numpy as np
        labels = [f"separate pMoE l={l}" for l in TOPL] + ["CNN (l=n=16)"]
        order = [("separate", l) for l in TOPL] + [("cnn", 16)]
        grid = np.array([[sum(x >= SUCCESS for x in acc[(nm, l, n)]) / len(acc[(nm, l, n)])
                          for n in sizes] for nm, l in order])
        means = np.array([[common.mean_std(acc[(nm, l, n)])[0] for n in sizes] for nm, l in order])
        fig, ax = plt.subplots(figsize=(6.4, 3.6))
        im = ax.imshow(grid, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto", origin="lower")
        for i in range(grid.shape[0]):
            for j in range(grid.shape[1]):
                dark = grid[i, j] < 0.25 or grid[i, j] > 0.85
                ax.text(j, i, f"{means[i, j]:.1f}", ha="center", va="center", fontsize=7,
                        color="white" if dark else "black")
        ax.set_xticks(range(len(sizes)))
        ax.set_xticklabels([str(n) for n in sizes])
        ax.set_yticks(range(len(labels)))
        ax.set_yticklabels(labels)
        ax.set_xlabel("training samples N")
        ax.set_title(f"Success (test acc >= {SUCCESS:.0f}%) rate over {len(seeds)} seed"
                     f"{'s' if len(seeds) > 1 else ''}; numbers: mean test acc (%)\n"
                     f"synthetic n=16, d={args.dim}, {args.clusters} clusters, "
                     f"delta_r={args.delta_r}, noise={args.noise}", fontsize=8)
        fig.colorbar(im, ax=ax, label="success rate", fraction=0.04)
        common.save_png(plt, fig, common.output_path(args, NAME, "png"))


if __name__ == "__main__":
    main()
