#!/usr/bin/env bash
# test_plot_metrics.sh: tools/plot_metrics.py on the logs of short real runs.
#
# A joint pMoE run writes every figure; a separate-mode run (a router phase
# first) and a CNN run (no router, so no recall and no load) write what their
# logs allow; a log stripped of the load fields still plots. Every file
# written must be a valid PNG (signature, IHDR chunk with its CRC, IEND). A
# line that is not JSON fails with one line naming the file and line.
# Skipped (77) when matplotlib is missing. Usage: test_plot_metrics.sh PMOE PLOT_METRICS.PY
set -u
PMOE=${1:?usage: test_plot_metrics.sh PATH/TO/pmoe PATH/TO/plot_metrics.py}
PLOT=${2:?usage: test_plot_metrics.sh PATH/TO/pmoe PATH/TO/plot_metrics.py}
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
if ! "$PY" -c "import matplotlib" 2>/dev/null; then
  echo "test_plot_metrics: skipped: matplotlib is missing (apt-get install python3-matplotlib)"
  exit 77
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
passed=0 failed=0
ok() { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL: $*"; }

# check_pngs DIR NAME...: each DIR/NAME.png exists and is a valid PNG; nothing else is there.
check_pngs() {
  local dir=$1; shift
  if "$PY" - "$dir" "$@" <<'PYEOF'
import os, struct, sys, zlib
folder, names = sys.argv[1], sys.argv[2:]
present = sorted(os.listdir(folder))
want = sorted(f"{n}.png" for n in names)
assert present == want, f"{folder} holds {present}, wanted {want}"
for name in want:
    data = open(os.path.join(folder, name), "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{name}: no PNG signature"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13, f"{name}: first chunk is {kind}"
    body = data[16:16 + 13]
    (crc,) = struct.unpack(">I", data[29:33])
    assert crc == zlib.crc32(b"IHDR" + body), f"{name}: IHDR CRC mismatch"
    width, height = struct.unpack(">II", body[:8])
    assert 100 <= width <= 4000 and 100 <= height <= 4000, f"{name}: {width} x {height}"
    assert data[-12:] == b"\x00\x00\x00\x00IEND\xaeB`\x82", f"{name}: no IEND at the end"
PYEOF
  then ok; else bad "the figures in $dir"; fi
}

SYN=(--set data.source=synthetic --set data.train_size=40 --set data.test_size=20 --quiet)

# Joint pMoE: every figure.
if "$PMOE" train "${SYN[@]}" --set train.epochs=3 --log "$TMP/joint.jsonl" >/dev/null 2>"$TMP/err" &&
   "$PY" "$PLOT" "$TMP/joint.jsonl" --out "$TMP/joint" >"$TMP/out" 2>"$TMP/err"; then
  loads=()
  grep -q expert_load_position "$TMP/joint.jsonl" && loads=(expert_load load_position)
  timers=()
  grep -q phase_seconds "$TMP/joint.jsonl" && timers=(phase_seconds)
  check_pngs "$TMP/joint" loss accuracy recall "${loads[@]}" "${timers[@]}"
  # The same log without the load fields (as written before they existed) still plots.
  "$PY" - "$TMP/joint.jsonl" "$TMP/noload.jsonl" <<'PYEOF'
import json, sys
with open(sys.argv[2], "w") as out:
    for line in open(sys.argv[1]):
        e = json.loads(line)
        for key in ("expert_load_position", "expert_load_class", "load_samples", "phase_seconds"):
            e.pop(key, None)
        out.write(json.dumps(e) + "\n")
PYEOF
  if "$PY" "$PLOT" "$TMP/noload.jsonl" --out "$TMP/noload" >"$TMP/out" 2>"$TMP/err" &&
     grep -q "load_position.png: not written" "$TMP/out"; then
    check_pngs "$TMP/noload" loss accuracy recall
  else bad "a log without load fields: $(cat "$TMP/err")"; fi
else
  bad "joint run or plot failed: $(cat "$TMP/err")"
fi

# Separate training: router-phase epochs come first on the same axis.
if "$PMOE" train "${SYN[@]}" --set train.mode=separate --set model.experts=2 --set model.topl=2 \
     --set model.hidden=8 --set train.router_epochs=2 --set train.epochs=2 --log "$TMP/sep.jsonl" \
     >/dev/null 2>"$TMP/err" &&
   "$PY" "$PLOT" "$TMP/sep.jsonl" --out "$TMP/sep" >"$TMP/out" 2>"$TMP/err"; then
  if grep -q '"phase":"router"' "$TMP/sep.jsonl"; then ok; else bad "no router phase in the separate log"; fi
  [ -f "$TMP/sep/loss.png" ] && [ -f "$TMP/sep/accuracy.png" ] && ok || bad "separate: figures missing"
else
  bad "separate run or plot failed: $(cat "$TMP/err")"
fi

# The CNN: no router, so neither recall nor load; the rest is written.
if "$PMOE" train "${SYN[@]}" --set model.type=cnn --set train.epochs=2 --log "$TMP/cnn.jsonl" \
     >/dev/null 2>"$TMP/err" &&
   "$PY" "$PLOT" "$TMP/cnn.jsonl" --out "$TMP/cnn" >"$TMP/out" 2>"$TMP/err"; then
  timers=()
  grep -q phase_seconds "$TMP/cnn.jsonl" && timers=(phase_seconds)
  check_pngs "$TMP/cnn" loss accuracy "${timers[@]}"
  if grep -q "recall.png: not written" "$TMP/out"; then ok; else bad "cnn: recall not reported as skipped"; fi
else
  bad "cnn run or plot failed: $(cat "$TMP/err")"
fi

# A broken line: one line on stderr naming the file and the line, exit 1.
head -1 "$TMP/joint.jsonl" >"$TMP/broken.jsonl"
echo '{"epoch": 2, "train_loss": ' >>"$TMP/broken.jsonl"
"$PY" "$PLOT" "$TMP/broken.jsonl" --out "$TMP/broken" >/dev/null 2>"$TMP/err"
rc=$?
if [ $rc -eq 1 ] && [ "$(wc -l <"$TMP/err")" -eq 1 ] && grep -qF "broken.jsonl:2: not JSON" "$TMP/err"; then
  ok
else
  bad "broken log: rc $rc, stderr: $(cat "$TMP/err")"
fi
"$PY" "$PLOT" "$TMP/missing.jsonl" --out "$TMP/missing" >/dev/null 2>"$TMP/err"
if [ $? -eq 1 ] && grep -qF "missing.jsonl: cannot read" "$TMP/err"; then ok; else bad "missing log: $(cat "$TMP/err")"; fi

echo "test_plot_metrics: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
