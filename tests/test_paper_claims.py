#!/usr/bin/python3
"""test_paper_claims.py PMOE: the paper's qualitative claims on the
Fashion-MNIST mosaic (trouser against T-shirt, the engine's default pair), at
the paper's training settings (SGD lr 0.2, batch 20, 150 epochs, 1000 test
mosaics) and the model settings of tools/reproduce (docs/reproduction.md):

  1. at N = 300, joint pMoE (k = 8, l = 6, m = 40) beats the CNN (m = 40) in
     test accuracy, averaged over seeds 1 and 2 (the reproduction's 5-seed
     gap is about 3 points; each seed must not lose either);
  2. router recall of separately trained pMoE (k = 2, N_r = 1000) is higher
     at l = 6 than at l = 1, on trouser against T-shirt and on trouser
     against ankle boot; on the latter, the pair whose linear separate router
     routes like the paper's MNIST 1 against 0 (tools/reproduce/router_ideal.py),
     recall at l = 6 is also at least 95% (paper: ~98%). On trouser against
     T-shirt it is far lower (~80%): a T-shirt is not linearly told apart
     from the other tops, docs/reproduction.md has the numbers.

Seeded, and the engine is bit-identical for any thread count, so the
numbers are the same on every run. Two pmoe processes run at a time, one
thread each. Exits 77 (skipped) when the Fashion-MNIST IDX files are absent.
"""

import concurrent.futures
import json
import os
import subprocess
import sys
import time

DATA = "/usr/share/datasets/fashion-mnist"
FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
         "t10k-labels-idx1-ubyte")

COMMON = {"data.source": "mosaic", "data.path": DATA, "data.pos_class": 1, "data.neg_class": 0,
          "data.test_size": 1000, "train.threads": 1, "train.eval_every": 1000}
CNN = {"model.type": "cnn", "model.hidden": 40, "model.expert_init_std": 0.1}
JOINT = {"model.type": "pmoe", "train.mode": "joint", "model.experts": 8, "model.topl": 6,
         "model.hidden": 40, "model.expert_init_std": 0.01}
SEPARATE = {"model.type": "pmoe", "train.mode": "separate", "model.experts": 2, "model.hidden": 40,
            "model.expert_init_std": 0.1, "model.output_init": "sign",
            "data.train_size": 1000, "train.epochs": 1}


def run(pmoe, settings):
    cmd = [pmoe, "train", "--json", "--quiet"]
    for k, v in sorted(settings.items()):
        cmd += ["--set", f"{k}={v}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"FAIL: pmoe exited {proc.returncode}: {' '.join(cmd)}\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: test_paper_claims.py PMOE")
    pmoe = sys.argv[1]
    if not all(os.path.exists(os.path.join(DATA, f)) or os.path.exists(os.path.join(DATA, f + ".gz"))
               for f in FILES):
        print(f"skipped: Fashion-MNIST is not installed in {DATA} (apt-get install dataset-fashion-mnist)")
        return 77
    start = time.time()
    jobs = {}
    for seed in (1, 2):
        seeded = {"data.seed": seed, "train.seed": seed, "data.train_size": 300}
        jobs[("joint", seed)] = dict(COMMON, **JOINT, **seeded)
        jobs[("cnn", seed)] = dict(COMMON, **CNN, **seeded)
    for neg in (0, 9):
        for l in (1, 6):
            jobs[("separate", neg, l)] = dict(COMMON, **SEPARATE,
                                              **{"model.topl": l, "data.neg_class": neg})
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        futures = {key: pool.submit(run, pmoe, s) for key, s in jobs.items()}
        res = {key: f.result() for key, f in futures.items()}

    failures = []
    joint = [res[("joint", s)]["test_acc"] for s in (1, 2)]
    cnn = [res[("cnn", s)]["test_acc"] for s in (1, 2)]
    print(f"N = 300 test accuracy, seeds 1, 2: joint pMoE {joint}, CNN {cnn}")
    if not sum(joint) / 2 > sum(cnn) / 2:
        failures.append(f"joint pMoE's mean test accuracy {sum(joint) / 2:.4f} does not beat the "
                        f"CNN's {sum(cnn) / 2:.4f} at N = 300")
    for s, (j, c) in enumerate(zip(joint, cnn), start=1):
        if j < c:
            failures.append(f"seed {s}: joint pMoE {j:.4f} below the CNN {c:.4f}")
    for neg in (0, 9):
        r1 = res[("separate", neg, 1)]["router_recall"]
        r6 = res[("separate", neg, 6)]["router_recall"]
        print(f"separate pMoE router recall, 1 vs {neg} (N_r = 1000): l = 1 {r1}, l = 6 {r6}")
        if not r6 > r1:
            failures.append(f"1 vs {neg}: router recall at l = 6 ({r6}) is not above that at "
                            f"l = 1 ({r1})")
        if neg == 9 and not r6 >= 0.95:
            failures.append(f"1 vs 9: router recall at l = 6 ({r6}) is below 0.95")
    print(f"{time.time() - start:.1f} s")
    for f in failures:
        print("FAIL: " + f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
