#!/usr/bin/env python3
"""bench_cpu_kernels.py: the deep models on the CPU, pmoe's reference and fast
kernels (train.cpu_kernels) and the PyTorch peer side by side, alternated.

    tools/bench_cpu_kernels.py [--pmoe build/pmoe] [--reps 3] [--threads 2]
        [--cases small,wide,defaults] [--busy N] [--out FILE.json]
        [--steps 10] [--warmup 3]
    tools/bench_cpu_kernels.py --table FILE.json      # the table of a saved run

Cases: small = configs/wrn_pmoe_small.ini (width 1, batch 64); wide = the
same at width 10, batch 16; defaults = the engine's defaults for the deep
model (--set data.source=noisy --set model.type=wrn_pmoe --set model.width=2
--set train.batch=32: 3x3 experts on 2x2 patches of the 8x8 map, k = 8,
l = 6). Each repetition runs `pmoe bench --json` with the reference, then
with the fast kernels (which also writes the peer's folder: the initial
weights and the batch), then bench/torch_peer.py on that folder (which
checks its first loss against pmoe's before timing), so that a change in
the machine's load hits all three alike. --busy N keeps N `yes` loops
running (bounded by timeout) during the runs: the shared-machine test.

Prints, per case, the medians of the train and inference steps (ms) of
WRN-pMoE and WRN for each of the three, pmoe's speed-up over PyTorch, the
WRN-pMoE / WRN time ratio against the executed-FLOP ratio, and the load
(`uptime`, and the other processes' CPU share pmoe bench measured). Writes
every run's JSON to --out when given."""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

CASES = {
    "small": ["--config", "configs/wrn_pmoe_small.ini"],
    "wide": ["--config", "configs/wrn_pmoe_small.ini", "--set", "model.width=10",
             "--set", "train.batch=16"],
    "defaults": ["--set", "data.source=noisy", "--set", "model.type=wrn_pmoe",
                 "--set", "model.width=2", "--set", "train.batch=32"],
}


def load():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def pmoe_bench(exe, case, kernels, threads, peer_dir, steps, warmup):
    cmd = [exe, "bench", "--quiet", "--json"] + CASES[case] + [
        "--set", f"train.cpu_kernels={kernels}", "--set", f"train.threads={threads}",
        "--set", "bench.sgemm_size=0", "--set", f"bench.repeats={steps}",
        "--set", f"bench.warmup={warmup}"]
    if peer_dir:
        cmd += ["--peer", peer_dir]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def torch_peer(peer_dir):
    r = subprocess.run(["/usr/bin/python3", "bench/torch_peer.py", peer_dir, "--json"],
                       capture_output=True, text=True)
    if r.returncode == 77:
        return None
    if r.returncode != 0:
        raise SystemExit(f"bench_cpu_kernels: the peer failed: {r.stderr.strip()[-400:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pmoe", default="build/pmoe")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cases", default="small,wide,defaults")
    ap.add_argument("--busy", type=int, default=0)
    ap.add_argument("--out")
    ap.add_argument("--table", help="print the table of a saved --out FILE, run nothing")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per run (bench.repeats)")
    ap.add_argument("--warmup", type=int, default=3, help="warm-up steps per run (bench.warmup)")
    a = ap.parse_args()
    if a.table:
        with open(a.table) as f:
            saved = json.load(f)
        a.busy, a.threads = saved["busy"], saved["threads"]
        a.cases = ",".join(dict.fromkeys(r["case"] for r in saved["runs"]))
        table(a, saved["runs"])
        return
    os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    busy = [subprocess.Popen(["timeout", "3600", "yes"], stdout=subprocess.DEVNULL)
            for _ in range(a.busy)]
    runs = []
    try:
        for case in a.cases.split(","):
            for rep in range(a.reps):
                with tempfile.TemporaryDirectory() as peer_dir:
                    before = load()
                    ref = pmoe_bench(a.pmoe, case, "reference", a.threads, None, a.steps,
                                     a.warmup)
                    fast = pmoe_bench(a.pmoe, case, "fast", a.threads, peer_dir, a.steps,
                                      a.warmup)
                    peer = torch_peer(peer_dir)
                    runs.append({"case": case, "rep": rep, "load_before": before,
                                 "load_after": load(), "reference": ref, "fast": fast,
                                 "peer": peer})
                    if a.out:  # after every repetition: a stopped run keeps what it measured
                        with open(a.out, "w") as f:
                            json.dump({"busy": a.busy, "threads": a.threads, "runs": runs}, f,
                                      indent=1)
                    print(f"{case} repetition {rep + 1} of {a.reps} done", file=sys.stderr,
                          flush=True)
    finally:
        for p in busy:
            p.kill()
    table(a, runs)


def table(a, runs):
    med = statistics.median
    reps = max((r["rep"] + 1 for r in runs), default=0)
    print(f"threads {a.threads}, busy loops {a.busy}, up to {reps} alternated repetitions; "
          "median ms per step, train / inference")
    print("| case | model | reference | fast | PyTorch | fast vs PyTorch | "
          "time ratio ref / fast / PyTorch | executed FLOP ratio | load | others' CPU |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for case in a.cases.split(","):
        rs = [r for r in runs if r["case"] == case]
        if not rs:
            continue

        def m(kind, model, step):
            part = "pmoe" if model == "wrn_pmoe" else "baseline"
            if kind == "peer":
                vals = []
                for r in rs:
                    if not r["peer"]:
                        continue
                    forms = r["peer"][part]
                    form = forms.get("sparse") or forms.get("dense")
                    vals.append(form[f"{step}_ms_per_step"])
                return med(vals) if vals else float("nan")
            return med(r[kind][part][f"{step}_ms_per_step"] for r in rs)

        flop = {s: rs[0]["fast"]["ratio"][f"executed_{s}_flops"] for s in ("train", "infer")}
        loads = f"{min(r['load_before'] for r in rs):.1f}-{max(r['load_after'] for r in rs):.1f}"
        share = med(r["fast"]["others_cpu_share"] for r in rs)
        for model in ("wrn_pmoe", "wrn"):
            cells = []
            for kind in ("reference", "fast", "peer"):
                cells.append(f"{m(kind, model, 'train'):.1f} / {m(kind, model, 'infer'):.1f}")
            speed = (f"{m('peer', model, 'train') / m('fast', model, 'train'):.2f}x / "
                     f"{m('peer', model, 'infer') / m('fast', model, 'infer'):.2f}x")
            ratio = flops = ""
            if model == "wrn_pmoe":
                ratio = " / ".join(
                    f"{m(k, 'wrn_pmoe', 'train') / m(k, 'wrn', 'train'):.2f}"
                    for k in ("reference", "fast", "peer"))
                flops = f"{flop['train']:.2f}"
            print(f"| {case} | {model} | " + " | ".join(cells) +
                  f" | {speed} | {ratio} | {flops} | {loads} | {share:.2f} |")


if __name__ == "__main__":
    main()
