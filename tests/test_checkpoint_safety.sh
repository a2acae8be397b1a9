#!/usr/bin/env bash
# test_checkpoint_safety.sh: a run never harms a file it did not write, and
# nothing read from a checkpoint is trusted (issue 17, classes 1 and 3).
#
# Class 1, the invariant: after a sequence of fresh runs and resumes in one
# folder (holding a foreign step-best.safetensors, notes, a FIFO, a killed
# writer's temporary and, later, another run's checkpoint), and a copied
# checkpoint resumed elsewhere, every file no run of ours wrote is
# byte-identical (sha256 before and after), the run keeps exactly its own
# newest checkpoints, and the killed writer's temporary is gone. A second
# writer on a locked folder is refused in one line; a lock left by kill -9
# blocks nobody; a run that saves only on a signal writes beside another
# run's checkpoints.
# Class 3: crafted metadata (epochs 2^31 and 2^32-1, a step near INT64_MAX,
# signs, a next batch out of range, steps inconsistent with the epoch, a NaN
# partial sum or weight, a bad run id) is refused in one line with exit 1;
# a changed train.batch or model shape, and a finished run resumed without
# more epochs, in one line with exit 2; more epochs resume.
# Usage: test_checkpoint_safety.sh PATH/TO/pmoe
set -u
PMOE=${1:?usage: test_checkpoint_safety.sh PATH/TO/pmoe}
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
TMP=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
  rm -rf "$TMP"
}
trap cleanup EXIT
passed=0 failed=0
ok() { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL: $*"; }

# expect CODE NEEDLE ARGS...: exits CODE with one stderr line containing NEEDLE.
expect() {
  local code=$1 needle=$2; shift 2
  "$PMOE" "$@" >"$TMP/out" 2>"$TMP/err"
  local rc=$?
  if [ "$rc" -ne "$code" ]; then bad "pmoe $*: exit $rc, wanted $code ($(cat "$TMP/err"))"; return; fi
  if ! grep -qF -- "$needle" "$TMP/err"; then bad "pmoe $*: stderr lacks '$needle': $(cat "$TMP/err")"; return; fi
  if [ "$(wc -l <"$TMP/err")" -ne 1 ]; then bad "pmoe $*: $(wc -l <"$TMP/err") stderr lines, wanted 1"; return; fi
  ok
}

# 100 samples, batch 10: 10 steps an epoch.
RUN=(--quiet --set data.source=synthetic --set data.train_size=100 --set data.test_size=20
     --set train.batch=10 --set model.experts=2 --set model.topl=2 --set model.hidden=8
     --set train.threads=1)

# hashes DIR: the sha256 of every entry but the names listed after DIR (FIFOs by name).
hashes() {
  local dir=$1; shift
  (cd "$dir" && for f in * .[!.]*; do
     [ -e "$f" ] || [ -L "$f" ] || continue
     local skip=0
     for x in "$@"; do [ "$f" = "$x" ] && skip=1; done
     [ $skip = 1 ] && continue
     if [ -p "$f" ]; then echo "fifo $f"; else echo "$(sha256sum <"$f" | cut -c1-64) $f"; fi
   done)
}

# ---- class 1 ----
F=$TMP/shared
mkdir -p "$F" "$TMP/other"
"$PMOE" train "${RUN[@]}" --set train.epochs=1 --set train.checkpoint_every=10 \
  --set train.checkpoint_dir="$TMP/other" || bad "the other run failed"
cp "$TMP/other/step-000000010.safetensors" "$F/step-best.safetensors"
echo "keep me" >"$F/notes.txt"
mkfifo "$F/step-fifo.safetensors"
ln -s notes.txt "$F/step-link.safetensors"
cp "$F/notes.txt" "$F/step-7.safetensors"                        # not a name pmoe writes
cp "$F/notes.txt" "$F/step-000000005.safetensors.tmp.x"          # not a temporary of pmoe's
printf 'half a checkpoint' >"$F/step-000000005.safetensors.tmp.4242" # a killed writer's
before=$(hashes "$F" step-000000005.safetensors.tmp.4242)

"$PMOE" train "${RUN[@]}" --set train.epochs=2 --set train.checkpoint_every=5 --set train.keep=2 \
  --set train.checkpoint_dir="$F" || bad "the run in the shared folder failed"
mine=$(cd "$F" && ls step-0*.safetensors | tr '\n' ' ')
if [ "$mine" = "step-000000015.safetensors step-000000020.safetensors " ]; then ok
else bad "fresh run with keep = 2 left: $mine"; fi
if [ -e "$F/step-000000005.safetensors.tmp.4242" ]; then bad "the killed writer's temporary was not swept"; else ok; fi
# Resumed in place with more epochs; the file it resumed from is kept too.
"$PMOE" train --resume "$F" --set train.epochs=3 --quiet || bad "resume in place failed"
mine=$(cd "$F" && ls step-0*.safetensors | tr '\n' ' ')
if [ "$mine" = "step-000000020.safetensors step-000000025.safetensors step-000000030.safetensors " ]; then ok
else bad "resume with keep = 2 left: $mine"; fi
# A copy resumed elsewhere writes beside the copy; the origin folder is untouched.
snapshot=$(hashes "$F")
mkdir -p "$TMP/copy"
cp "$F/step-000000030.safetensors" "$TMP/copy/"
"$PMOE" train --resume "$TMP/copy/step-000000030.safetensors" --set train.epochs=4 --quiet ||
  bad "resume of a copy failed"
if [ -f "$TMP/copy/step-000000040.safetensors" ] && [ "$(hashes "$F")" = "$snapshot" ]; then ok
else bad "a copy resumed elsewhere: $(ls "$TMP/copy"), origin changed: $(diff <(echo "$snapshot") <(hashes "$F"))"; fi
# A fresh run into the folder: refused, since its names would collide.
expect 1 "holds another run's checkpoint" train "${RUN[@]}" --set train.epochs=1 \
  --set train.checkpoint_every=5 --set train.checkpoint_dir="$F"
# Another run's checkpoint dropped in: resume from the folder is ambiguous,
# and the run no longer writes there.
cp "$TMP/other/step-000000010.safetensors" "$F/step-000000010.safetensors"
expect 1 "holds checkpoints of more than one run" train --resume "$F"
expect 1 "holds another run's checkpoint step-000000010.safetensors" \
  train --resume "$F/step-000000030.safetensors" --set train.epochs=5
after=$(hashes "$F" .pmoe.lock step-000000020.safetensors step-000000025.safetensors step-000000030.safetensors \
        step-000000010.safetensors)
if [ "$after" = "$before" ]; then ok
else bad "files the runs did not write changed: $(diff <(echo "$before") <(echo "$after"))"; fi
[ "$(cmp "$F/step-000000010.safetensors" "$TMP/other/step-000000010.safetensors" && echo same)" = same ] &&
  ok || bad "the other run's checkpoint changed"

# The lock: a second writer is refused in one line while the first runs; a
# run killed with -9 leaves no lock that blocks.
L=$TMP/locked
"$PMOE" train "${RUN[@]}" --set train.epochs=100000 --set train.checkpoint_every=1000000 \
  --set train.checkpoint_dir="$L" >/dev/null 2>&1 &
first=$!
pids+=("$first")
for _ in $(seq 300); do [ -s "$L/.pmoe.lock" ] && break; sleep 0.1; done
expect 1 "another pmoe run (pid $first) is writing checkpoints in this folder" \
  train "${RUN[@]}" --set train.epochs=1 --set train.checkpoint_every=5 --set train.checkpoint_dir="$L"
kill -TERM "$first"
wait "$first"
rc=$?
if [ "$rc" -eq 143 ] && ls "$L"/step-0*.safetensors >/dev/null 2>&1; then ok
else bad "the first writer, stopped by SIGTERM: exit $rc"; fi
# kill -9 the holder: the lock dies with it, and the next run takes the folder.
for round in killed next; do
  "$PMOE" train --resume "$L" --set train.epochs=100000 >/dev/null 2>&1 &
  holder=$!
  pids+=("$holder")
  for _ in $(seq 300); do grep -q "pid $holder " "$L/.pmoe.lock" 2>/dev/null && break; sleep 0.1; done
  if grep -q "pid $holder " "$L/.pmoe.lock"; then ok; else bad "the $round run never took the lock"; fi
  kill -9 "$holder"
  wait "$holder" 2>/dev/null
done

# A run that saves only when a signal stops it (checkpoint_every = 0, the
# default) may share a folder with another run's checkpoints: it writes its
# one file beside them.
S=$TMP/signal
mkdir -p "$S"
cp "$TMP/other/step-000000010.safetensors" "$S/"
"$PMOE" train "${RUN[@]}" --set train.epochs=100000 --set train.checkpoint_dir="$S" \
  --log "$TMP/signal.log" >/dev/null 2>&1 &
holder=$!
pids+=("$holder")
for _ in $(seq 300); do [ -s "$TMP/signal.log" ] && break; sleep 0.1; done
kill -TERM "$holder"
wait "$holder"
rc=$?
if [ "$rc" -eq 143 ] && [ "$(ls "$S" | grep -c '^step-0.*safetensors$')" -eq 2 ] &&
   cmp -s "$S/step-000000010.safetensors" "$TMP/other/step-000000010.safetensors"; then ok
else bad "a signal's checkpoint beside another run's: exit $rc, $(ls "$S" | tr '\n' ' ')"; fi

# ---- class 3 ----
C=$TMP/crafted
"$PMOE" train "${RUN[@]}" --set train.epochs=2 --set train.checkpoint_every=15 \
  --set train.checkpoint_dir="$C" || bad "the run to craft from failed"
good=$C/step-000000015.safetensors # epoch 2, next batch 5 of 10
# craft OUT KEY=VALUE ...: a copy of $good with metadata replaced (nan=NAME
# puts a NaN into tensor NAME).
craft() {
  local out=$1; shift
  "$PY" - "$good" "$out" "$@" <<'PYEOF'
import json, struct, sys
src, dst, edits = sys.argv[1], sys.argv[2], sys.argv[3:]
raw = open(src, 'rb').read()
n = struct.unpack('<Q', raw[:8])[0]
head, data = json.loads(raw[8:8 + n]), bytearray(raw[8 + n:])
for e in edits:
    k, v = e.split('=', 1)
    if k == 'nan':
        at = head[v]['data_offsets'][0]
        data[at:at + 4] = struct.pack('<f', float('nan'))
    else:
        head['__metadata__'][k] = v
text = json.dumps(head, separators=(',', ':')).encode()
text += b' ' * (-len(text) % 8)
open(dst, 'wb').write(struct.pack('<Q', len(text)) + text + bytes(data))
PYEOF
}
n=0
refused() { # refused CODE NEEDLE KEY=VALUE... [-- ARGS]: resuming the crafted copy fails so
  local code=$1 needle=$2; shift 2
  local edits=() extra=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do edits+=("$1"); shift; done
  [ $# -gt 0 ] && shift && extra=("$@")
  n=$((n + 1))
  mkdir -p "$TMP/c$n"
  craft "$TMP/c$n/step-000000015.safetensors" "${edits[@]}"
  expect "$code" "$needle" train --resume "$TMP/c$n/step-000000015.safetensors" "${extra[@]}"
}
refused 1 "metadata 'epoch' is 2147483648" epoch=2147483648
refused 1 "metadata 'epoch' is 4294967295" epoch=4294967295
refused 1 "metadata 'epoch' is -1" epoch=-1
refused 1 "metadata 'epoch' is +2" epoch=+2
refused 1 "metadata 'step' is 9223372036854775807" step=9223372036854775807
refused 1 "metadata 'step' is 9223372036854775808" step=9223372036854775808
refused 1 "metadata 'router_steps' is 9223372036854775000" router_steps=9223372036854775000
refused 1 "next batch 11 of an epoch of 10 batches" next_batch=11 step=21
refused 1 "16 steps, but epoch 2 batch 5 of 10 means 15" step=16
refused 1 "epoch 4, but its config has 2 main epochs" epoch=4 step=35
refused 1 "metadata 'epoch_loss_sum' is nan" epoch_loss_sum=nan
refused 1 "partial sums" epoch_correct_sum=51
refused 1 "metadata 'run_id'" run_id=../../etc
refused 1 "tensor 'router.weight' holds NaN or Inf" nan=router.weight
refused 1 "tensor 'experts.1.weight' holds NaN or Inf" nan=experts.1.weight
refused 2 "train.batch = 20, but the checkpoint was trained with 10" -- --set train.batch=20
refused 2 "model.hidden = 16, but the checkpoint was trained with 8" -- --set model.hidden=16
refused 2 "model.topl = 1, but the checkpoint was trained with 2" -- --set model.topl=1
refused 2 "data.train_size = 90" -- --set data.train_size=90
# A NaN checkpoint is never evaluated either.
expect 1 "holds NaN or Inf" eval --checkpoint "$TMP/c14/step-000000015.safetensors"
# The run's end: resumed without more epochs, it says so; with more, it trains on.
expect 2 "nothing to train: the run has done 2 epochs and train.epochs = 2" train --resume "$C"
expect 2 "nothing to train: the run has done 2 epochs and train.epochs = 1" \
  train --resume "$C" --set train.epochs=1
if "$PMOE" train --resume "$C" --set train.epochs=3 --json --quiet | tail -1 | grep -q '"steps":30'; then ok
else bad "a finished run resumed with more epochs did not train on"; fi
# Fewer epochs, but not below the epoch in progress: finishes that epoch.
if "$PMOE" train --resume "$good" --set train.epochs=2 --set train.checkpoint_dir="$TMP/short" --json --quiet |
   tail -1 | grep -q '"steps":20'; then ok
else bad "resume from epoch 2 of 2 did not finish it"; fi

echo "test_checkpoint_safety: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
