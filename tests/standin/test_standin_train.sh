#!/usr/bin/env bash
# test_standin_train.sh: pmoe's CUDA backend end to end on the CPU stand-in,
# against the CPU backend on the same seeds (label standin).
#
#   test_standin_train.sh PMOE PMOE_STANDIN COMPARE_CHECKPOINTS
#
# Each model trains twice, with train.device = cpu on pmoe and cuda on
# pmoe-standin: the two-layer pMoE (joint with and without momentum,
# separate) and CNN (with and without momentum), WRN, and WRN-pMoE sparse
# and dense-masked. Per epoch the accuracies and router recall must be
# equal and the losses close; the final checkpoints close too. Tolerances:
# the experts' products run through cuBLAS (the stand-in's plain float sum
# over k) and the convolutions through cuDNN (a direct sum), against
# OpenBLAS and im2col on the CPU, so float32 rounding differs: 1e-5
# relative for the two-layer models, 1e-4 for the deep ones (their batch
# norms divide by small variances); the same at tf32 and bf16 (tolerances
# below). Then, on the stand-in alone: a run
# stopped after one epoch and resumed equals the run left alone bit for
# bit (checkpoints and logs); eval of a checkpoint gives the CPU's
# accuracy; route draws its picture; bench runs its targets on the device.
set -u
PMOE=${1:?usage: test_standin_train.sh PMOE PMOE_STANDIN COMPARE_CHECKPOINTS}
PMOE=$(realpath "$PMOE")
STANDIN=$(realpath "$2")
COMPARE=$(realpath "$3")
HERE=$(cd "$(dirname "$0")" && pwd)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
cd "$TMP" || exit 1
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}

TWO=(--quiet --set data.source=synthetic --set data.train_size=64 --set data.test_size=64
     --set train.batch=16 --set model.experts=4 --set model.topl=3 --set model.hidden=16
     --set train.epochs=2 --set train.checkpoint_every=100000)
DEEP=(--quiet --set data.source=noisy --set data.image_size=16 --set data.train_size=16
      --set data.test_size=16 --set train.batch=8 --set train.epochs=2 --set model.experts=2
      --set model.topl=2 --set model.patch=1 --set model.expert_kernel=1 --set train.lr=0.05
      --set train.checkpoint_every=100000)
failed=0
fail() { echo "FAIL: $*"; failed=1; }
newest() { ls "$1"/*.safetensors 2>/dev/null | tail -n 1; }

# pair NAME TOLERANCE ARGS...: CPU and stand-in runs of one config, compared.
pair() {
  local name=$1 tol=$2
  shift 2
  if ! "$PMOE" train "$@" --set train.device=cpu --set train.checkpoint_dir="$name-cpu" \
      --log "$name-cpu.log" 2>"$name-cpu.err"; then
    fail "$name: the CPU run: $(tail -n 1 "$name-cpu.err")"
    return
  fi
  if ! "$STANDIN" train "$@" --set train.device=cuda --set train.checkpoint_dir="$name-cuda" \
      --log "$name-cuda.log" 2>"$name-cuda.err"; then
    fail "$name: the stand-in run: $(tail -n 1 "$name-cuda.err")"
    return
  fi
  if python3 "$HERE/close_logs.py" "$name-cpu.log" "$name-cuda.log" "$tol"; then
    echo "  ok: $name: per-epoch accuracies equal, losses within $tol"
  else fail "$name: the logs differ"; fi
  if out=$("$COMPARE" "$(newest "$name-cpu")" "$(newest "$name-cuda")" "$tol"); then
    echo "  ok: $name: final parameters: $out"
  else fail "$name: final parameters: $out"; fi
}

echo "the CUDA backend on the stand-in against the CPU backend"
pair pmoe_joint 1e-5 "${TWO[@]}"
pair pmoe_joint_momentum 1e-5 "${TWO[@]}" --set train.momentum=0.9
pair pmoe_separate 1e-5 "${TWO[@]}" --set train.mode=separate --set model.experts=2 \
  --set model.topl=2 --set train.router_epochs=1
pair cnn 1e-5 "${TWO[@]}" --set model.type=cnn
pair cnn_momentum 1e-5 "${TWO[@]}" --set model.type=cnn --set train.momentum=0.9
pair wrn 1e-4 "${DEEP[@]}" --set model.type=wrn
pair wrn_pmoe_sparse 1e-4 "${DEEP[@]}" --set model.type=wrn_pmoe --set train.momentum=0.9
pair wrn_pmoe_dense_masked 1e-4 "${DEEP[@]}" --set model.type=wrn_pmoe \
  --set model.moe_impl=dense_masked
# train.precision: both backends round the same inputs of the same ops
# (float_round.h), and each op agrees with the CPU's to 1e-6 at every
# precision (test_standin_backend). Whole runs drift further: a float32
# summation difference (batch norm's sums run in another order) tips an
# input across a TF32 or bfloat16 rounding boundary now and then, and that
# input then moves by a whole rounding step. The two-layer models (no batch
# norm) stay within 1e-5 over two epochs (measured: 0.006 and 0.004 of that);
# WRN-pMoE is held after one step, to 1e-2 of each tensor's largest value
# at tf32 (measured 1e-3) and 0.25 at bf16 (measured 0.058, in the batch
# norms' biases, sums of gradients that nearly cancel).
ONE_STEP=(--set data.train_size=8 --set train.epochs=1)
pair pmoe_joint_tf32 1e-5 "${TWO[@]}" --set train.precision=tf32
pair pmoe_joint_bf16 1e-5 "${TWO[@]}" --set train.precision=bf16
pair wrn_pmoe_sparse_tf32 1e-2 "${DEEP[@]}" "${ONE_STEP[@]}" --set model.type=wrn_pmoe \
  --set train.precision=tf32
pair wrn_pmoe_sparse_bf16 0.25 "${DEEP[@]}" "${ONE_STEP[@]}" --set model.type=wrn_pmoe \
  --set train.precision=bf16

echo "checkpoint and resume on the stand-in"
# Against the straight runs above: pmoe_joint, and wrn_pmoe_sparse (momentum on).
for name in pmoe_joint wrn_pmoe_sparse; do
  if [ $name = pmoe_joint ]; then args=("${TWO[@]}")
  else args=("${DEEP[@]}" --set model.type=wrn_pmoe --set train.momentum=0.9); fi
  if "$STANDIN" train "${args[@]}" --set train.device=cuda --set train.epochs=1 \
        --set train.checkpoint_dir=resume-$name 2>resume.err &&
     "$STANDIN" train "${args[@]}" --set train.device=cuda --resume resume-$name \
        --log resume-$name.log 2>resume.err; then
    if out=$("$COMPARE" "$(newest $name-cuda)" "$(newest resume-$name)" 0 2>&1); then
      echo "  ok: $name: stopped after an epoch and resumed: bit-identical parameters ($out)"
    else fail "$name: the resumed run differs: $out"; fi
    if [ "$(tail -n 1 $name-cuda.log | cut -d, -f1-6)" = "$(tail -n 1 resume-$name.log | cut -d, -f1-6)" ]; then
      echo "  ok: $name: the resumed run's last epoch logs the straight run's loss bit for bit"
    else fail "$name: last epochs differ: $(tail -n 1 $name-cuda.log | cut -d, -f1-6) vs $(tail -n 1 resume-$name.log | cut -d, -f1-6)"; fi
  else fail "$name: stop and resume on the stand-in: $(tail -n 1 resume.err)"; fi
done

echo "eval, route and bench on the stand-in"
ck=$(newest pmoe_joint-cuda)
if a=$("$STANDIN" eval --checkpoint "$ck" --json 2>eval.err | tail -n 1) &&
   b=$("$PMOE" eval --checkpoint "$ck" --set train.device=cpu --json | tail -n 1); then
  acc() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])["test_acc"])' "$1" 2>/dev/null; }
  acc_a=$(acc "$a")
  acc_b=$(acc "$b")
  if [ -n "$acc_a" ] && [ "$acc_a" = "$acc_b" ]; then echo "  ok: eval: test accuracy $acc_a on both backends"
  else fail "eval: $acc_a on the stand-in, $acc_b on the CPU"; fi
else fail "eval: $(cat eval.err)"; fi
for name in pmoe_joint wrn_pmoe_sparse; do
  if "$STANDIN" route --quiet --checkpoint "$(newest $name-cuda)" --out route-$name.png \
       --samples 4 2>route.err && [ -s route-$name.png ]; then
    echo "  ok: route: $name drawn on the stand-in"
  else fail "route: $name: $(cat route.err)"; fi
done
if out=$("$STANDIN" bench "${TWO[@]}" --set train.device=cuda --set bench.warmup=0 \
          --set bench.repeats=1 --set bench.sgemm_size=0 --json 2>bench.err | tail -n 1) &&
   echo "$out" | grep -q '"backend":"cuda:0'; then
  echo "  ok: bench: its targets ran on the stand-in's device"
else fail "bench: $(tail -n 2 bench.err) $out"; fi

[ "$failed" -eq 0 ] && echo "test_standin_train: passed"
exit $failed
