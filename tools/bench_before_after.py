#!/usr/bin/env python3
"""bench_before_after.py: the two-layer bench of two pmoe builds, alternated.

    tools/bench_before_after.py --before OLD/build/pmoe --after build/pmoe \
        --out bench/results/NAME.json [--before-note TEXT] [--after-note TEXT] [--reps 3]
        [--threads "1 2"] [--batches "20 256"] [--config FILE] [--set KEY=VALUE ...]

Runs `pmoe bench --json` for each thread count and batch ("" = the config's
own), before and after in turn (so that a change in the machine's load hits
both alike), `reps` times each, writes every run's JSON to --out and prints
the medians as the Markdown table BENCHMARKS.md shows (pMoE against its
baseline: the CNN, or for model.type = wrn_pmoe the WRN). Build the old commit in a git
worktree: git worktree add /tmp/before COMMIT && cmake -S /tmp/before -B
/tmp/before/build && cmake --build /tmp/before/build --target pmoe."""
import argparse
import datetime
import json
import statistics
import subprocess


def bench(exe, threads, batch, config, sets):
    cmd = [exe, "bench"] + (["--config", config] if config else [])
    for kv in sets + ([f"train.batch={batch}"] if batch else []) + [f"train.threads={threads}", "bench.sgemm_size=0"]:
        cmd += ["--set", kv]
    cmd.append("--json")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", required=True)
    ap.add_argument("--after", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--before-note", default="")
    ap.add_argument("--after-note", default="")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", default="1 2")
    ap.add_argument("--batches", default="20 256")
    ap.add_argument("--config", default="")
    ap.add_argument("--set", action="append", default=[], dest="sets")
    a = ap.parse_args()
    batches = [int(b) for b in a.batches.split()] or [0]
    shapes = [(int(t), b) for t in a.threads.split() for b in batches]
    runs = []
    for _ in range(a.reps):
        for threads, batch in shapes:
            for variant, exe in (("before", a.before), ("after", a.after)):
                runs.append({"variant": variant, "run": bench(exe, threads, batch, a.config, a.sets)})
    doc = {"kind": "two-layer bench before/after", "before": a.before_note, "after": a.after_note,
           "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
           "config": a.config, "sets": a.sets, "machine": runs[0]["run"]["machine"], "runs": runs}
    with open(a.out, "w") as f:
        json.dump(doc, f, indent=1)
    print("| threads | batch | version | pMoE train ms | pMoE infer ms | pMoE peak MiB | baseline train ms "
          "| pMoE / baseline | executed-FLOP ratio | others' CPU (max) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for threads, batch in shapes:
        for variant in ("before", "after"):
            sel = [x["run"] for x in runs if x["variant"] == variant and x["run"]["threads"] == threads
                   and (not batch or x["run"]["batch"] == batch)]
            p, c = sel[0]["pmoe"], sel[0]["baseline"]
            med = lambda f: statistics.median(f(r) for r in sel)
            train = med(lambda r: r["pmoe"]["train_ms_per_step"])
            infer = med(lambda r: r["pmoe"]["infer_ms_per_step"])
            cnn = med(lambda r: r["baseline"]["train_ms_per_step"])
            ratio = med(lambda r: r["pmoe"]["train_ms_per_step"] / r["baseline"]["train_ms_per_step"])
            flops = p["executed_train_flops_per_sample"] / c["executed_train_flops_per_sample"]
            others = max(r.get("others_cpu_share") or 0 for r in sel)
            print(f"| {threads} | {sel[0]['batch']} | {variant} | {train:.3f} | {infer:.3f} | {p['peak_bytes'] / 2**20:.2f} "
                  f"| {cnn:.3f} | {ratio:.3f} | {flops:.3f} | {others * 100:.0f}% |")


if __name__ == "__main__":
    main()
