#!/usr/bin/env bash
# test_device_check.sh: tools/device_check.sh on a machine without a GPU, so
# that CI catches a broken device check before a GPU call is spent on it.
# --dry-run: the stage plan fits the limit and every stage is listed with its
# budget; --no-gpu --skip-build: every GPU stage is skipped with its reason,
# the script exits 0, and the JSON is valid before and after every stage
# (what a call cut off by its time limit would keep); $OUT stays within what
# the device tool returns (8 files, 16 MiB each, 2 folders deep).
# Usage: test_device_check.sh REPO_ROOT
set -uo pipefail
ROOT=$1
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
# the interpreter itself, not a launcher script (the JSON is written about 30 times)
PYEXE=$(python3 -c "import sys; print(sys.executable)") || fail "no python3"
bash -n "$ROOT/tools/device_check.sh" || fail "bash -n tools/device_check.sh"

for mode in dry-run no-gpu; do
  args=(--dry-run --snapshots)
  [ "$mode" = no-gpu ] && args=(--no-gpu --skip-build --snapshots)
  OUT=$WORK/$mode/out PYTHON=$PYEXE PMOE_DEVICE_BUILD=$WORK/$mode/build bash "$ROOT/tools/device_check.sh" "${args[@]}" \
    >"$WORK/$mode.txt" 2>&1
  rc=$?
  [ "$rc" = 0 ] || { cat "$WORK/$mode.txt"; fail "$mode: exit $rc, expected 0"; }
  python3 - "$mode" "$WORK/$mode/out" "$WORK/$mode/build/logs" <<'PYEOF' || { cat "$WORK/$mode.txt"; fail "$mode: checks"; }
import glob, json, os, sys
mode, out, logs = sys.argv[1:4]
GPU_STAGES = ["gpu_tests", "gpu_tests_blocking", "memcheck", "racecheck", "synccheck", "nsys",
              "gpu_bench", "deep_bench", "torch_two_layer", "torch_wrn"]
def check(cond, what):
    if not cond:
        print(f"{mode}: {what}")
        sys.exit(1)
final = json.load(open(os.path.join(out, "device_check.json")))
stages = final["stages"]
names = list(stages)
check(names[:4] == ["locate", "deps", "configure", "build"], f"stage order {names}")
for name in GPU_STAGES:
    check(name in stages, f"stage {name} missing from the plan")
total = sum(s["budget_s"] for s in stages.values())
check(total == final["budget_sum_s"] and total <= final["limit_s"] <= 480,
      f"budgets {total} s, limit {final['limit_s']} s: over the device tool's 480 s call")
check(final["finished"] and final["running"] is None, "the final JSON does not say finished")
print(f"{mode}: budgets sum to {total} s of {final['limit_s']} s (480 s call)")
# every version of the JSON parses; each 'before' names its stage as running, unfinished;
# each 'after' has that stage's final status
snaps = sorted(glob.glob(os.path.join(logs, "json-*.json")))
check(len(snaps) >= len(stages) + 2, f"{len(snaps)} JSON versions for {len(stages)} stages")
seen_after = []
for path in snaps:
    r = json.load(open(path))  # raises on invalid JSON
    phase = os.path.basename(path)[8:-5]
    if phase.startswith("before-"):
        check(r["running"] == phase[7:] and not r["finished"], f"{phase}: running {r['running']}")
        check(r["stages"][phase[7:]]["status"] == "running", f"{phase}: status not running")
    elif phase.startswith("after-"):
        name = phase[6:]
        check(r["stages"][name]["status"] not in ("running", "not reached"), f"{phase}: no status")
        check(not r["finished"], f"{phase}: finished before the end")
        later = names[names.index(name) + 1:]
        check(all(r["stages"][n]["status"] == "not reached" for n in later), f"{phase}: later stages ran")
        seen_after.append(name)
check(seen_after == names, f"JSON after each stage: {seen_after}")
if mode == "dry-run":
    check(all(s["status"] == "dry run" for s in stages.values()), "a dry run ran a stage")
else:
    check(final["no_gpu_reason"] == "no GPU: --no-gpu given", f"reason {final['no_gpu_reason']}")
    for name in GPU_STAGES:
        s = stages[name]
        check(s["status"] == "skipped" and s.get("detail"), f"{name}: {s}")
    check(stages["build"]["status"] == "skipped" and stages["build"]["detail"] == "--skip-build",
          f"build: {stages['build']}")
# what comes back from the device tool
files = [os.path.join(d, f) for d, _, fs in os.walk(out) for f in fs]
check(len(files) <= 8, f"{len(files)} files in OUT, the device tool returns 8")
for f in files:
    check(os.path.getsize(f) < 16 << 20, f"{f}: over 16 MiB")
    check(os.path.relpath(f, out).count(os.sep) <= 2, f"{f}: deeper than 2 folders")
print(f"{mode}: ok ({len(snaps)} JSON versions, {len(files)} files in OUT)")
PYEOF
done

# The PyTorch peer's code paths (two-layer and deep jobs, the JSON, torch.compile
# or its absence) on the CPU at toy sizes, where /usr/bin/python3 has torch.
if /usr/bin/python3 -c "import torch" 2>/dev/null; then
  /usr/bin/python3 "$ROOT/bench/torch_gpu_peer.py" --device cpu --quick --deep --compile --steps 1 \
    --json "$WORK/peer.json" >"$WORK/peer.txt" 2>&1 || { cat "$WORK/peer.txt"; fail "torch_gpu_peer.py on the CPU"; }
  python3 - "$WORK/peer.json" <<'PYEOF' || fail "torch_gpu_peer.py's JSON"
import json, math, sys
r = json.load(open(sys.argv[1]))
want = {"pmoe_paper", "pmoe_large", "cnn_paper", "cnn_large", "wrn_w1", "wrn_pmoe_w1"}
assert set(r["steps"]) == want, r["steps"].keys()
assert all(s["torch_ms"] > 0 and math.isfinite(s["last_loss"]) for s in r["steps"].values()), r
assert r["precision"] == "fp32, TF32 off" and r["compiled"], r
print(f"torch_gpu_peer on the CPU: {len(r['steps'])} jobs, compiled: {list(r['compiled'])}")
PYEOF
else
  echo "torch_gpu_peer.py: not run (no torch for /usr/bin/python3)"
fi
echo "test_device_check: ok"
