#!/usr/bin/env bash
# test_bench_peer.sh: the PyTorch peer starts from pmoe's initial weights and
# batch and reproduces pmoe's first loss to 1e-5 (relative), for the pMoE in
# both its forms (sparse gather, dense-masked) and for the CNN, with each gate.
# Exits 77 (skipped) when /usr/bin/python3 lacks torch or safetensors.
# Usage: test_bench_peer.sh PATH/TO/pmoe PATH/TO/bench/torch_peer.py
set -u
PMOE=${1:?usage: test_bench_peer.sh PATH/TO/pmoe PATH/TO/torch_peer.py}
PEER=${2:?usage: test_bench_peer.sh PATH/TO/pmoe PATH/TO/torch_peer.py}
PY=/usr/bin/python3
if [ ! -x "$PY" ]; then echo "skipped: no /usr/bin/python3"; exit 77; fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
passed=0 failed=0
TINY=(--set data.source=synthetic --set data.train_size=40 --set data.test_size=8
      --set data.synthetic_dim=16 --set model.experts=4 --set model.topl=3 --set model.hidden=8
      --set train.batch=10 --set train.threads=1 --set bench.warmup=0 --set bench.repeats=1
      --set bench.sgemm_size=0 --set model.expert_init_std=0.5 --set model.router_init_std=1)
for gate in renorm softmax_all; do
  dir="$TMP/$gate"
  if ! "$PMOE" bench --quiet "${TINY[@]}" --set model.gate=$gate --peer "$dir"; then
    echo "FAIL: pmoe bench --peer ($gate)"; failed=$((failed + 1)); continue
  fi
  "$PY" "$PEER" "$dir" --check-only >"$TMP/out" 2>&1
  rc=$?
  if [ $rc -eq 77 ]; then cat "$TMP/out"; exit 77; fi
  if [ $rc -ne 0 ] || [ "$(grep -c 'relative difference' "$TMP/out")" -ne 3 ]; then
    echo "FAIL: the peer's first-loss check ($gate), exit $rc:"; cat "$TMP/out"; failed=$((failed + 1))
  else
    passed=$((passed + 1))
  fi
done
# A wrong first loss must fail the check (and time nothing).
dir="$TMP/renorm"
if [ -f "$dir/pmoe-bench.json" ]; then
  "$PY" - "$dir/pmoe-bench.json" <<'PYEOF'
import json, sys
p = sys.argv[1]
r = json.load(open(p))
r["pmoe"]["first_loss"] *= 1 + 1e-4
json.dump(r, open(p, "w"))
PYEOF
  if "$PY" "$PEER" "$dir" --check-only >"$TMP/out" 2>&1; then
    echo "FAIL: the peer accepted a first loss off by 1e-4"; failed=$((failed + 1))
  elif grep -q "pmoe sparse: first loss .* != pmoe's" "$TMP/out"; then
    passed=$((passed + 1))
  else
    echo "FAIL: the peer's mismatch message:"; cat "$TMP/out"; failed=$((failed + 1))
  fi
fi
echo "test_bench_peer: $passed passed, $failed failed"
[ $failed -eq 0 ]
