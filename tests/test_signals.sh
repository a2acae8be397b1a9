#!/usr/bin/env bash
# test_signals.sh: a run stopped by SIGTERM or SIGINT saves a checkpoint and
# exits 143 or 130; a run killed with SIGKILL while writing checkpoints
# leaves only whole, loadable checkpoints behind. Usage: test_signals.sh PMOE
set -u
PMOE=${1:?usage: test_signals.sh PATH/TO/pmoe}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
passed=0 failed=0
ok() { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL: $*"; }

LONG=(--set data.source=synthetic --set data.train_size=2000 --set data.test_size=100
      --set train.epochs=100000 --quiet)

# stop_with SIGNAL WANT_RC: start, let it train, signal it, check the exit and the checkpoint.
stop_with() {
  local sig=$1 want=$2 dir="$TMP/$1"
  "$PMOE" train "${LONG[@]}" --set train.checkpoint_dir="$dir" 2>"$TMP/err" &
  local pid=$!
  sleep 1.5
  kill -s "$sig" "$pid"
  wait "$pid"
  local rc=$?
  if [ "$rc" -ne "$want" ]; then bad "$sig: exit $rc, wanted $want ($(cat "$TMP/err"))"; return; fi
  if ! grep -q "checkpoint $dir/step-" "$TMP/err"; then bad "$sig: no checkpoint named: $(cat "$TMP/err")"; return; fi
  if ! "$PMOE" eval --checkpoint "$dir" --quiet --json >"$TMP/eval" 2>"$TMP/err"; then
    bad "$sig: the checkpoint does not load: $(cat "$TMP/err")"; return
  fi
  ok
}
stop_with TERM 143
stop_with INT 130

# SIGKILL during checkpoint writes: a big model saved every step.
dir="$TMP/kill"
BIG=(--set data.source=synthetic --set data.synthetic_dim=2048 --set model.hidden=400
     --set data.train_size=400 --set data.test_size=40 --set train.epochs=1000
     --set train.checkpoint_every=1 --set train.keep=1000000 --set train.checkpoint_dir="$dir" --quiet)
for delay in 0.7 0.9 1.3 1.6 2.0; do
  "$PMOE" train "${BIG[@]}" >/dev/null 2>&1 &
  pid=$!
  sleep "$delay"
  kill -9 "$pid"
  wait "$pid" 2>/dev/null
done
count=0 broken=0
for f in "$dir"/step-*.safetensors; do
  [ -e "$f" ] || continue
  count=$((count + 1))
  "$PMOE" eval --checkpoint "$f" --quiet >/dev/null 2>"$TMP/err" || { broken=$((broken + 1)); echo "broken: $f: $(cat "$TMP/err")"; }
done
if [ "$count" -gt 0 ] && [ "$broken" -eq 0 ]; then ok; else bad "after kill -9: $count checkpoints, $broken broken"; fi
echo "  kill -9: $count checkpoints written, all loadable; $(ls "$dir" | grep -c '\.tmp\.' || true) temporary files left behind"

echo "test_signals: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
