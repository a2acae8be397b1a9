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

# wait_for_epochs LOG N: until the run has logged N epochs (at most 60 s), so
# a signal arrives mid-training however loaded the machine is.
wait_for_epochs() {
  for _ in $(seq 600); do
    [ -f "$1" ] && [ "$(wc -l <"$1")" -ge "$2" ] && return 0
    sleep 0.1
  done
  return 1
}

# stop_with SIGNAL WANT_RC: start, let it train, signal it, check the exit and the checkpoint.
stop_with() {
  local sig=$1 want=$2 dir="$TMP/$1"
  "$PMOE" train "${LONG[@]}" --set train.checkpoint_dir="$dir" --log "$TMP/$1.log" 2>"$TMP/err" &
  local pid=$!
  wait_for_epochs "$TMP/$1.log" 2 || bad "$sig: the run logged no epochs in 60 s"
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

# SIGKILL during checkpoint writes: a big model saved every step, killed at
# several moments after its first checkpoint; every checkpoint left behind
# must load.
count=0 broken=0 leftovers=0
for delay in 0.1 0.3 0.5 0.7 1.0; do
  dir="$TMP/kill-$delay"
  "$PMOE" train --set data.source=synthetic --set data.synthetic_dim=2048 --set model.hidden=400 \
      --set data.train_size=400 --set data.test_size=40 --set train.epochs=1000 \
      --set train.checkpoint_every=1 --set train.keep=1000000 --set train.checkpoint_dir="$dir" \
      --quiet >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 600); do
    ls "$dir"/step-*.safetensors >/dev/null 2>&1 && break
    sleep 0.1
  done
  sleep "$delay"
  kill -9 "$pid"
  wait "$pid" 2>/dev/null
  leftovers=$((leftovers + $(ls "$dir" | grep -c '\.tmp\.' || true)))
  for f in "$dir"/step-*.safetensors; do
    [ -e "$f" ] || continue
    count=$((count + 1))
    "$PMOE" eval --checkpoint "$f" --quiet >/dev/null 2>"$TMP/err" ||
      { broken=$((broken + 1)); echo "broken: $f: $(cat "$TMP/err")"; }
  done
done
if [ "$count" -gt 0 ] && [ "$broken" -eq 0 ]; then ok; else bad "after kill -9: $count checkpoints, $broken broken"; fi
echo "  kill -9: $count checkpoints written, all loadable; $leftovers interrupted temporary files left behind"

echo "test_signals: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
