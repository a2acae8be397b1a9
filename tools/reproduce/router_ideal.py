#!/usr/bin/python3
"""Why separate pMoE routes well on some mosaic class pairs and badly on
others: the recall of the ideal separate-training router, for every pair.

With the linear router loss of spec section 3 and plain SGD the router's
gradient does not depend on its weights, so after training w_0 - w_1 points
along the mean over the router set of y * (sum of the sample's patches); with
balanced labels the irrelevant items cancel in expectation and what is left
is delta = mean(pos item) - mean(neg item). Router 0 then ranks patches by
<delta, x>, router 1 by -<delta, x> (w_1 ~ -w_0). This script takes delta
from the whole IDX training split (the limit N_r -> infinity), scores the
t10k items, and computes exactly, for each l, the probability that the
deciding item of a random test mosaic is among the l best of its router when
the other 15 cells hold items of the remaining classes (drawn uniformly, as
the engine's mosaics do):

  P(rank < l) = E_s [ sum_{j<l} Binom(15, q(s))[j] ],  q(s) = P(other item scores above s).

No pmoe run is needed (numpy only). Writes
reproduce-out/router_ideal_recall.csv (--out-dir): per ordered class pair (pos, neg)
and l, the recall of router 0 on y = +1, of router 1 on y = -1, and their
mean (the "proper expert" recall of fig8_router_recall.py), and prints the
pairs closest to the paper's Fig. 8 (MNIST 1 vs 0).
"""

import argparse
import gzip
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

TOPL = [1, 2, 4, 6, 8]
PAPER_MID = {1: 79, 2: 89.5, 4: 96, 6: 98, 8: 99}  # mid-points of spec section 6's ranges


def load_idx(folder, name, offset):
    for path in (os.path.join(folder, name), os.path.join(folder, name + ".gz")):
        if os.path.exists(path):
            raw = gzip.open(path).read() if path.endswith(".gz") else open(path, "rb").read()
            return np.frombuffer(raw, np.uint8, offset=offset)
    raise SystemExit(f"{folder}: {name} is missing")


def rank_recall(s_dec, s_other, ls):
    """P(the deciding item's score is among the l best of 16) for each l."""
    s_other = np.sort(s_other)
    # q: share of other items scoring strictly above each deciding score
    # (ties go to the lower patch index in the engine; ties have probability ~0 here)
    q = 1.0 - np.searchsorted(s_other, s_dec, side="right") / len(s_other)
    out = []
    for l in ls:
        p = np.zeros_like(q)
        for j in range(min(l, 16)):
            p += math.comb(15, j) * q ** j * (1 - q) ** (15 - j)
        out.append(float(p.mean()))
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-path", default=common.FASHION_MNIST)
    p.add_argument("--tag", default="")
    p.add_argument("--out-dir", default=common.OUT_DIR)
    # run_all.sh hands every script the same options; the others' are not ours.
    args, _ = p.parse_known_args()
    X = load_idx(args.data_path, "train-images-idx3-ubyte", 16).reshape(-1, 784) / 255.0
    Y = load_idx(args.data_path, "train-labels-idx1-ubyte", 8)
    Xt = load_idx(args.data_path, "t10k-images-idx3-ubyte", 16).reshape(-1, 784) / 255.0
    Yt = load_idx(args.data_path, "t10k-labels-idx1-ubyte", 8)
    means = np.stack([X[Y == c].mean(0) for c in range(10)])

    rows = []
    for pos in range(10):
        for neg in range(10):
            if pos == neg:
                continue
            delta = means[pos] - means[neg]
            score = Xt @ delta
            other = score[(Yt != pos) & (Yt != neg)]
            r0 = rank_recall(score[Yt == pos], other, TOPL)
            r1 = rank_recall(-score[Yt == neg], -other, TOPL)
            for i, l in enumerate(TOPL):
                rows.append([pos, neg, l, 100 * r0[i], 100 * r1[i], 50 * (r0[i] + r1[i])])
    name = "router_ideal_recall" + ("-" + args.tag if args.tag else "")
    os.makedirs(args.out_dir, exist_ok=True)
    common.write_csv(os.path.join(args.out_dir, name + ".csv"),
                     ["pos_class", "neg_class", "l", "recall_pos_router0", "recall_neg_router1",
                      "recall_proper"], rows)

    # Distance of each unordered pair's proper recall curve from the paper's.
    dist = {}
    for pos, neg, l, _, _, prop in rows:
        if pos < neg:
            dist.setdefault((pos, neg), []).append((l, prop))
    ranked = sorted(dist.items(), key=lambda kv: sum(abs(v - PAPER_MID[l]) for l, v in kv[1]))
    print("pairs whose ideal separate-router recall is closest to the paper's Fig. 8 "
          "(l = 1, 2, 4, 6, 8):")
    for (pos, neg), curve in ranked[:5]:
        print(f"  {pos} vs {neg}: " + ", ".join(f"{v:.1f}" for _, v in curve))
    for pos, neg in ((1, 0),):
        curve = dist[(min(pos, neg), max(pos, neg))]
        print(f"the default pair {pos} vs {neg}: " + ", ".join(f"{v:.1f}" for _, v in curve))


if __name__ == "__main__":
    main()
