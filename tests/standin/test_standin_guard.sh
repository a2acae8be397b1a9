#!/usr/bin/env bash
# test_standin_guard.sh: the non-finite guard and the deferred reads of the
# steps (train.on_nonfinite, train.sync_every) and the overlapped input
# (train.overlap_input) on the CUDA backend over the CPU stand-in, against
# the CPU backend (label standin).
#
#   test_standin_guard.sh PMOE PMOE_STANDIN COMPARE_CHECKPOINTS
#
# A NaN is put into step 6's batch (train.fault_nan_step) of a 12-step run
# that saves every 4 steps and reads its steps every 3, so the bad step is
# found at the read of step 8's checkpoint, in the middle of a window.
# stop: on both backends one line naming step 6 and what was non-finite
# (the CPU's top-l picks the NaN patch and its loss is NaN; the CUDA
# kernel's does not, and the NaN first shows in the router's gradient,
# which reads every patch), exit 1, and
# step 4's checkpoint the last one (step 8 never saved), equal on both
# backends within float rounding. skip: both finish with one step skipped
# and final parameters within rounding of each other; on the stand-in the
# run reading every step and the one reading every 3 are bit-identical, and
# so are the runs with and without the overlapped input.
set -u
PMOE=$(realpath "${1:?usage: test_standin_guard.sh PMOE PMOE_STANDIN COMPARE_CHECKPOINTS}")
STANDIN=$(realpath "$2")
COMPARE=$(realpath "$3")
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
cd "$TMP" || exit 1
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
RUN=(--quiet --set data.source=synthetic --set data.train_size=64 --set data.test_size=32
     --set train.batch=16 --set model.experts=4 --set model.topl=3 --set model.hidden=16
     --set train.epochs=3 --set train.momentum=0.9 --set train.fault_nan_step=6
     --set train.checkpoint_every=4 --set train.sync_every=3)
failed=0
fail() { echo "FAIL: $*"; failed=1; }
newest() { ls "$1"/*.safetensors 2>/dev/null | tail -n 1; }
# train NAME BINARY DEVICE ARGS...: exit status in NAME.rc, stderr in NAME.err
train() {
  local name=$1 binary=$2 device=$3
  shift 3
  rm -rf "$name"
  "$binary" train "${RUN[@]}" --set train.device="$device" --set train.checkpoint_dir="$name" \
    "$@" >"$name.out" 2>"$name.err"
  echo $? >"$name.rc"
}

echo "on_nonfinite = stop"
for side in cpu cuda; do
  if [ $side = cpu ]; then train stop-$side "$PMOE" cpu; else train stop-$side "$STANDIN" cuda; fi
  grep -v -e '^pmoe-standin: ' -e '^libgcov profiling error' stop-$side.err >stop-$side.lines
  if [ "$(cat stop-$side.rc)" = 1 ] && [ "$(wc -l <stop-$side.lines)" = 1 ] &&
     grep -Eq "in (the loss|the gradient of router.weight) at step 6 \(main phase, epoch 2\).*step-000000004.safetensors" stop-$side.lines &&
     [ "$(ls stop-$side)" = "step-000000004.safetensors" ]; then
    echo "  ok: $side: exit 1, step 4's checkpoint the last: $(cut -c1-110 stop-$side.lines)"
  else fail "$side: exit $(cat stop-$side.rc), files $(ls stop-$side | tr '\n' ' '): $(cat stop-$side.err)"; fi
done
if out=$("$COMPARE" stop-cpu/step-000000004.safetensors stop-cuda/step-000000004.safetensors 1e-5); then
  echo "  ok: step 4's checkpoints agree: $out"
else fail "step 4's checkpoints differ: $out"; fi

echo "on_nonfinite = skip"
train skip-cpu "$PMOE" cpu --set train.on_nonfinite=skip --json
train skip-cuda "$STANDIN" cuda --set train.on_nonfinite=skip --json
train skip-cuda-every "$STANDIN" cuda --set train.on_nonfinite=skip --json --set train.sync_every=1
for name in skip-cpu skip-cuda skip-cuda-every; do
  if [ "$(cat $name.rc)" = 0 ] && tail -n 1 $name.out | grep -q '"skipped_steps":1[,}]'; then
    echo "  ok: $name: finished, one step skipped"
  else fail "$name: exit $(cat $name.rc): $(tail -n 2 $name.err) $(tail -n 1 $name.out)"; fi
done
if out=$("$COMPARE" "$(newest skip-cpu)" "$(newest skip-cuda)" 1e-5); then
  echo "  ok: CPU and stand-in final parameters: $out"
else fail "skip: CPU and stand-in differ: $out"; fi
if out=$("$COMPARE" "$(newest skip-cuda)" "$(newest skip-cuda-every)" 0); then
  echo "  ok: reading every step or every 3: bit-identical ($out)"
else fail "skip: sync_every 1 and 3 differ: $out"; fi

echo "overlapped input (train.overlap_input)"
# 60 samples in batches of 16: the last batch of each epoch is partial.
for o in 0 1; do
  PMOE_STANDIN_REPORT=calls-$o.txt "$STANDIN" train "${RUN[@]}" --set train.fault_nan_step=0 \
    --set data.train_size=60 --set train.device=cuda --set train.overlap_input=$o \
    --set train.checkpoint_every=100 --set train.checkpoint_dir=overlap-$o --log overlap-$o.log \
    >/dev/null 2>overlap-$o.err || fail "overlap_input=$o: $(tail -n 1 overlap-$o.err)"
done
pinned() { awk '$1 == "cudaHostAlloc" { print $2 }' "$1"; }
if [ "$(pinned calls-1.txt)" = 2 ] && [ -z "$(pinned calls-0.txt)" -o "$(pinned calls-0.txt)" = 0 ]; then
  echo "  ok: two pinned buffers with the overlap, none without"
else fail "cudaHostAlloc calls: $(pinned calls-1.txt) with the overlap, $(pinned calls-0.txt) without"; fi
if out=$("$COMPARE" "$(newest overlap-0)" "$(newest overlap-1)" 0) &&
   cmp -s <(cut -d, -f1-6 overlap-0.log) <(cut -d, -f1-6 overlap-1.log); then
  echo "  ok: with and without the overlap: bit-identical parameters and logged losses ($out)"
else fail "overlap on and off differ: $out"; fi

[ "$failed" -eq 0 ] && echo "test_standin_guard: passed"
exit $failed
