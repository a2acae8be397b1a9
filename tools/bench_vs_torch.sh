#!/usr/bin/env bash
# bench_vs_torch.sh: pmoe against the PyTorch peer (bench/torch_peer.py) on the
# same configs, the same batch, the same thread count, and the pmoe/peer ratios.
#
#   tools/bench_vs_torch.sh [--pmoe PATH] [--threads N] [--batches "20 256"]
#                           [--out DIR] [--record FILE] [-- pmoe bench arguments...]
#
# For each batch it runs `pmoe bench --peer DIR/b<batch>` (which writes the
# initial weights, the composed batch and pmoe's result) and then the peer on
# that folder; the peer checks its first loss against pmoe's to 1e-5 before it
# times anything. The summary gives, per batch, each train and inference step
# time and pmoe's speed-up over the peer's sparse (topk + gather) and
# dense-masked forms. --record FILE writes every run's JSON, the machine and the
# versions into one file (bench/results/ keeps them). The peer needs torch and
# safetensors for /usr/bin/python3; without them this prints the peer's
# "skipped: ..." and exits 77.
set -euo pipefail
cd "$(dirname "$0")/.."
PMOE=build/pmoe
THREADS=2
BATCHES="20 256"
OUT=""
RECORD=""
while [ $# -gt 0 ]; do
  case "$1" in
    --pmoe) PMOE=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --batches) BATCHES=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --record) RECORD=$2; shift 2 ;;
    --) shift; break ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "bench_vs_torch.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
PY=/usr/bin/python3
[ -x "$PMOE" ] || { echo "bench_vs_torch.sh: $PMOE not found: build first (cmake --build build)" >&2; exit 2; }
[ -x "$PY" ] || { echo "skipped: no /usr/bin/python3"; exit 77; }
if [ -z "$OUT" ]; then
  OUT=$(mktemp -d)
  trap 'rm -rf "$OUT"' EXIT
fi
mkdir -p "$OUT"
runs=()
for B in $BATCHES; do
  dir="$OUT/b$B"
  echo "== batch $B, $THREADS threads: pmoe bench" >&2
  "$PMOE" bench --quiet --json --set "train.batch=$B" --set "train.threads=$THREADS" --peer "$dir" "$@" \
    | tail -n 1 >"$dir.pmoe.json"
  echo "== batch $B, $THREADS threads: the PyTorch peer" >&2
  set +e
  "$PY" bench/torch_peer.py "$dir" --json >"$dir.peer.out"
  rc=$?
  set -e
  if [ $rc -eq 77 ]; then cat "$dir.peer.out"; exit 77; fi
  sed '$d' "$dir.peer.out" >&2
  [ $rc -eq 0 ] || { echo "bench_vs_torch.sh: the peer failed (exit $rc) at batch $B" >&2; exit 1; }
  tail -n 1 "$dir.peer.out" >"$dir.peer.json"
  runs+=("$B")
done

"$PY" - "$OUT" "$RECORD" "$THREADS" "${runs[@]}" <<'PYEOF'
import json, os, platform, subprocess, sys
out, record, threads, batches = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
rows = []
print()
print(f"pmoe against PyTorch, {threads} threads: ms per step (median); speed-up = peer / pmoe")
print(f"{'batch':>5} {'step':6} {'pmoe':>9} {'torch sparse':>13} {'dense-masked':>13} "
      f"{'x sparse':>9} {'x dense':>8} | {'pmoe cnn':>9} {'torch cnn':>10} {'x':>6}")
for b in batches:
    pm = json.load(open(os.path.join(out, f"b{b}.pmoe.json")))
    peer = json.load(open(os.path.join(out, f"b{b}.peer.json")))
    rows.append({"batch": int(b), "pmoe": pm, "peer": peer})
    for step in ("train", "infer"):
        k = f"{step}_ms_per_step"
        p, s, d = pm["pmoe"][k], peer["pmoe"]["sparse"][k], peer["pmoe"]["dense_masked"][k]
        c, tc = pm["baseline"][k], peer["baseline"]["dense"][k]
        print(f"{b:>5} {step:6} {p:9.3f} {s:13.3f} {d:13.3f} {s / p:9.2f} {d / p:8.2f} | "
              f"{c:9.3f} {tc:10.3f} {tc / c:6.2f}")
busy = ", ".join(f"{100 * r['pmoe']['others_cpu_share']:.0f}%" for r in rows)
print(f"other processes kept {busy} of the {rows[0]['pmoe']['machine']['cores']} cores busy during "
      f"each pmoe run (above a few percent, threaded times are not reliable)")
if record:
    def version(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
        except Exception:
            return None
    doc = {
        "kind": "pmoe vs torch",
        "date": rows[0]["pmoe"]["date"],
        "machine": rows[0]["pmoe"]["machine"],
        "threads": threads,
        "versions": {
            "openblas": rows[0]["pmoe"]["machine"]["blas"],
            "torch": rows[0]["peer"]["torch"],
            "python": platform.python_version(),
            "pmoe_commit": version(["git", "rev-parse", "--short", "HEAD"]),
        },
        "runs": rows,
    }
    os.makedirs(os.path.dirname(os.path.abspath(record)), exist_ok=True)
    with open(record, "w") as f:
        json.dump(doc, f, indent=1)
    print(f"wrote {record}")
PYEOF
