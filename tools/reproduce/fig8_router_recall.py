#!/usr/bin/python3
"""Result 2 (the paper's Fig. 8): router recall of separately trained pMoE
(k = 2) against l, for a few router training sizes N_r.

The routers of separate training minimise the linear loss of spec section 3
on the first N_r training mosaics (100 epochs, batch 20, lr 0.2, init
N(0, 0.1^2)); router 0 is trained towards y = +1, router 1 towards y = -1.
Recall is measured on the 1000 test mosaics, two ways:

  recall_proper  the deciding patch is among the l picks of the expert meant
                 for its class (router 0 for y = +1, router 1 for y = -1):
                 the paper's discriminative-routing property, what we compare
                 with its Fig. 8;
  recall_any     the deciding patch is among the picks of either expert (the
                 engine's router_recall); with k = 2 separately trained
                 routers this is inflated, since router 1 is close to the
                 negative of router 0 and the two together cover up to 2l of
                 the 16 patches whatever they learnt.

The expert phase does not change the routers (they are frozen), so each run
trains the experts for a single epoch only (train.epochs = 1).

  --reduced  one seed, N_r = 100, 1000, l = 1, 2, 4, 6, 8
  --full     5 seeds, N_r = 100, 300, 1000, l = 1, 2, 4, 6, 8

Writes (to --out-dir, default reproduce-out/)
fig8_router_recall[-reduced].{csv,png}.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

NAME = "fig8_router_recall"
PAPER = {1: (73, 85), 2: (87, 92), 4: (95, 97), 6: (98, 98), 8: (99, 99)}  # spec section 6
TOPL = [1, 2, 4, 6, 8]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_args(p, "one seed, N_r = 100, 1000", "5 seeds, N_r = 100, 300, 1000")
    p.add_argument("--seeds", type=int, help="number of seeds (default: 1 reduced, 5 full)")
    p.add_argument("--router-sizes", help="comma-separated N_r (default by mode)")
    args = p.parse_args()
    common.check_data(args)
    full = args.mode == "full"
    seeds = list(range(1, (args.seeds or (5 if full else 1)) + 1))
    sizes = [int(x) for x in args.router_sizes.split(",")] if args.router_sizes else \
        ([100, 300, 1000] if full else [100, 1000])

    runner = common.Runner(args, NAME)
    base = dict(common.mosaic_settings(args), **common.SEPARATE)
    base.update({"data.train_size": max(sizes), "train.epochs": 1})
    base.update(common.extra_settings(args))
    jobs, keys = [], []
    for nr in sizes:
        for l in TOPL:
            for seed in seeds:
                s = dict(base, **{"train.router_size": nr, "model.topl": l,
                                  "data.seed": seed, "train.seed": seed})
                jobs.append((s, False, True))
                keys.append((nr, l, seed))
    common.log(f"{NAME}: {len(jobs)} runs with {runner.pmoe}")
    results = runner.map(jobs)

    table = {}
    for (nr, l, seed), res in zip(keys, results):
        st = common.recall_stats(res["routing"])
        if abs(st["recall_any"] - res["router_recall"]) > 1e-9:
            raise SystemExit(f"route_dump disagrees with pmoe's router_recall: {st['recall_any']} "
                             f"vs {res['router_recall']}")
        ec = st["expert_class_recall"]
        table.setdefault((nr, l), []).append(
            (100 * st["recall_proper"], 100 * st["recall_any"], 100 * ec[0][1], 100 * ec[1][0]))

    rows = []
    for nr in sizes:
        for l in TOPL:
            vals = table[(nr, l)]
            prop = common.mean_std([v[0] for v in vals])
            anyr = common.mean_std([v[1] for v in vals])
            pos = common.mean_std([v[2] for v in vals])[0]
            neg = common.mean_std([v[3] for v in vals])[0]
            lo, hi = PAPER[l]
            rows.append([nr, l, len(vals), prop[0], prop[1], anyr[0], anyr[1], pos, neg, lo, hi])
    common.write_csv(common.output_path(args, NAME, "csv"),
                     ["router_size", "l", "seeds", "recall_proper_mean", "recall_proper_std",
                      "recall_any_mean", "recall_any_std", "recall_pos_by_router0",
                      "recall_neg_by_router1", "paper_low", "paper_high"], rows)

    plt = common.pyplot()
    if plt:
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        ax.fill_between(TOPL, [PAPER[l][0] for l in TOPL], [PAPER[l][1] for l in TOPL],
                        color="black", alpha=0.12, label="paper (MNIST 1 vs 0), range")
        for i, nr in enumerate(sizes):
            c = f"C{i}"
            r = [x for x in rows if x[0] == nr]
            ax.errorbar(TOPL, [x[3] for x in r], yerr=[x[4] for x in r], fmt="o-", color=c,
                        capsize=3, ms=4, label=f"N_r = {nr}: proper expert")
            ax.plot(TOPL, [x[5] for x in r], "s:", color=c, ms=3, alpha=0.7,
                    label=f"N_r = {nr}: either expert")
        ax.set_xlabel("l (patches per expert, of n = 16)")
        ax.set_ylabel("router recall (%)")
        ax.set_xticks(TOPL)
        ax.set_title(f"Router recall, separate pMoE k=2 ({common.data_label(args)}; "
                     f"{len(seeds)} seed{'s' if len(seeds) > 1 else ''})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
        common.save_png(plt, fig, common.output_path(args, NAME, "png"))


if __name__ == "__main__":
    main()
