"""bench_tables.py: the Markdown tables of BENCHMARKS.md, from a recorded run.

Usage: /usr/bin/python3 tools/bench_tables.py bench/results/NAME.json

Reads the file tools/bench_record.sh writes (the machine, versions, pmoe
against PyTorch at each batch, and the sweeps) and prints the tables that
BENCHMARKS.md shows, so the document is regenerated, not retyped.
"""
import argparse
import json
import os


def ms(m, step):
    return f"{m[step + '_ms_per_step']:.3f} [{m[step + '_ms_min']:.3f}-{m[step + '_ms_max']:.3f}]"


def model_rows(run):
    p, b = run["pmoe"], run["baseline"]
    peak = run.get("sgemm_gflops")
    out = ["| model | k | l | train MFLOP/sample useful / executed | infer MFLOP/sample | peak MiB "
           "| train ms/step median [min-max] | infer ms/step | train samples/s | train GFLOP/s | of peak |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for m in (p, b):
        share = f"{100 * m['train_peak_share']:.1f}%" if m.get("train_peak_share") else "-"
        out.append(f"| {m['model']} | {m['experts']} | {m['topl']} | "
                   f"{m['train_flops_per_sample'] / 1e6:.3f} / {m['executed_train_flops_per_sample'] / 1e6:.3f} | "
                   f"{m['infer_flops_per_sample'] / 1e6:.3f} | {m['peak_bytes'] / 2**20:.2f} | {ms(m, 'train')} | "
                   f"{ms(m, 'infer')} | {m['train_samples_per_s']:.0f} | {m['train_gflops']:.1f} | {share} |")
    r = run["ratio"]
    out.append(f"| **pMoE / CNN** | | | {r['train_flops']:.3f} / {r['executed_train_flops']:.3f} | "
               f"{r['infer_flops']:.3f} | {r['peak_bytes']:.2f} | **{r['train_ms']:.3f}** | "
               f"{r['infer_ms']:.3f} | | | |")
    head = (f"batch {run['batch']}, {run['threads']} threads, {run['warmup']} warm-up + {run['repeats']} "
            f"timed steps; SGEMM {run['sgemm_size']}^3 peak {peak:.1f} GFLOP/s; other processes "
            f"kept {100 * run['others_cpu_share']:.0f}% of the cores busy meanwhile" if peak else
            f"batch {run['batch']}, {run['threads']} threads")
    verdict = r["train_ms"] / r["executed_train_flops"]
    tail = (f"Train time ratio {r['train_ms']:.3f} against an executed-FLOP ratio "
            f"{r['executed_train_flops']:.3f}: {verdict:.2f} times the FLOP ratio "
            f"(target: within 1.15).")
    return [head, ""] + out + ["", tail]


def peer_rows(doc):
    out = ["| batch | step | pmoe ms | torch sparse ms | torch dense-masked ms | speed-up vs sparse "
           "| vs dense-masked | pmoe CNN ms | torch CNN ms | speed-up | others' CPU, pmoe / peer |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]

    def share(x):
        return "-" if x is None else f"{100 * x:.0f}%"

    for run in doc["runs"]:
        pm, peer = run["pmoe"], run["peer"]
        peer_shares = [peer["pmoe"][f].get("others_cpu_share") for f in ("sparse", "dense_masked")]
        peer_shares = [x for x in peer_shares if x is not None]
        busy = f"{share(pm.get('others_cpu_share'))} / {share(max(peer_shares) if peer_shares else None)}"
        for step in ("train", "infer"):
            k = f"{step}_ms_per_step"
            p, s, d = pm["pmoe"][k], peer["pmoe"]["sparse"][k], peer["pmoe"]["dense_masked"][k]
            c, tc = pm["baseline"][k], peer["baseline"]["dense"][k]
            out.append(f"| {run['batch']} | {step} | {p:.3f} | {s:.3f} | {d:.3f} | **{s / p:.2f}x** | "
                       f"{d / p:.2f}x | {c:.3f} | {tc:.3f} | {tc / c:.2f}x | {busy} |")
    checks = [(run["batch"], f, run["peer"]["pmoe" if f != "dense" else "baseline"][f]["loss_rel_diff"])
              for run in doc["runs"] for f in ("sparse", "dense_masked", "dense")]
    worst = max(c[2] for c in checks)
    return out + ["", f"First-loss check before timing: worst relative difference {worst:.1e} "
                      f"(limit 1e-5) over every form and batch."]


def sweep_rows(key, runs, folder):
    out = [f"**{key}** ([plot]({folder}/sweep-{key}.png), [CSV]({folder}/sweep-{key}.csv))", "",
           "| value | n | k | l | batch | pMoE ms | CNN ms | time ratio | executed-FLOP ratio "
           "| pMoE GFLOP/s | CNN GFLOP/s | pMoE peak MiB | others' CPU |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for run in runs:
        p, b, r = run["pmoe"], run["baseline"], run["ratio"]
        value = {"model.topl": p["topl"], "model.experts": p["experts"], "train.batch": run["batch"],
                 "data.grid": int(round(p["patches"] ** 0.5))}.get(key, "?")
        out.append(f"| {value} | {p['patches']} | {p['experts']} | {p['topl']} | {run['batch']} | "
                   f"{p['train_ms_per_step']:.3f} | {b['train_ms_per_step']:.3f} | {r['train_ms']:.3f} | "
                   f"{r['executed_train_flops']:.3f} | {p['train_gflops']:.1f} | {b['train_gflops']:.1f} | "
                   f"{p['peak_bytes'] / 2**20:.2f} | {100 * run['others_cpu_share']:.0f}% |")
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="Prints Markdown on stdout.")
    p.add_argument("record", help="a recorded run, bench/results/NAME.json (tools/bench_record.sh)")
    path = p.parse_args().record
    with open(path) as f:
        doc = json.load(f)
    folder = os.path.splitext(os.path.basename(path))[0]
    m = doc["machine"]
    lines = [f"Machine: {m['cpu']}, {m['cores']} cores; {m['blas']}; date {doc['date']}."]
    if "versions" in doc:
        v = doc["versions"]
        lines[0] += f" PyTorch {v.get('torch')}, Python {v.get('python')}, pmoe {v.get('pmoe_commit')}."
    lines.append("")
    if "runs" in doc:
        lines.append("### pMoE against its CNN")
        for run in doc["runs"]:
            lines += [""] + model_rows(run["pmoe"])
        lines += ["", "### pmoe against PyTorch", ""] + peer_rows(doc)
    if doc.get("sweeps"):
        lines += ["", "### Sweeps"]
        for key, runs in doc["sweeps"].items():
            lines += [""] + sweep_rows(key, runs, f"bench/results/{folder}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
