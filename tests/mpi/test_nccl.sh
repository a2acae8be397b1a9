#!/usr/bin/env bash
# test_nccl.sh: the NCCL communicator on a GPU (label gpu).
#
#   test_nccl.sh PMOE COMPARE_CHECKPOINTS
#
# R = 1 with train.comm = nccl (a one-rank MPI job started without mpirun;
# NCCL sends and receives to itself) runs the whole exchange path on the
# GPU and must train the model the single-process GPU run trains: the same
# per-epoch losses and accuracies, parameters within 1e-5 relative (the
# routers are fixed, model.gate = ones, so nothing but the exchange differs).
# With mpirun and two or more GPUs it also runs R = 2. Without a CUDA device
# it exits 77 (skipped), never "passed".
set -u
PMOE=$1
COMPARE=$2
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
HERE=$(cd "$(dirname "$0")" && pwd)  # this folder, for same_logs.py
cd "$TMP" || exit 1
ARGS=(--quiet --set data.source=synthetic --set data.train_size=64 --set data.test_size=64
      --set train.batch=16 --set model.experts=4 --set model.topl=3 --set model.hidden=16
      --set model.gate=ones --set model.expert_init_std=0.1 --set train.lr=1 --set train.epochs=3
      --set train.device=cuda --set train.checkpoint_every=100000)
if ! "$PMOE" train "${ARGS[@]}" --set train.comm=single --set train.checkpoint_dir=single \
    --log single.log 2>single.err; then
  if grep -q "train.device = cuda" single.err; then
    echo "test_nccl: skipped: $(head -1 single.err)"
    exit 77
  fi
  echo "FAIL: the single-process GPU run: $(cat single.err)"
  exit 1
fi
failed=0
check() { # NAME LOG DIR
  if python3 "$HERE/same_logs.py" single.log "$2" train_loss train_acc test_acc router_recall
  then echo "  ok: $1: the single run's losses and accuracies"
  else echo "FAIL: $1: the logs differ"; failed=1; fi
  if out=$("$COMPARE" single/step-000000012.safetensors "$3/step-000000012.safetensors" 1e-5); then
    echo "  ok: $1: $out"
  else echo "FAIL: $1: $out"; failed=1; fi
}
if "$PMOE" train "${ARGS[@]}" --set train.comm=nccl --set train.checkpoint_dir=nccl1 --log nccl1.log; then
  check "nccl, R = 1" nccl1.log nccl1
else echo "FAIL: train.comm = nccl, R = 1"; failed=1; fi
# WRN-pMoE through the deep models' rank path (the logits' all-gather, the
# gradients' buckets as NCCL groups on the communicator's stream, awaited
# before the update): R = 1 over NCCL trains the single GPU run's model.
if [ -d /usr/share/datasets/fashion-mnist ]; then
  DEEP=(--quiet --set model.type=wrn_pmoe --set model.width=1 --set data.source=noisy
        --set data.image_size=16 --set data.train_size=16 --set data.test_size=16 --set train.batch=8
        --set train.epochs=2 --set model.experts=2 --set model.topl=2 --set model.patch=1
        --set model.expert_kernel=1 --set train.momentum=0.9 --set train.device=cuda
        --set train.checkpoint_every=100000)
  if "$PMOE" train "${DEEP[@]}" --set train.comm=single --set train.checkpoint_dir=deep1 &&
     "$PMOE" train "${DEEP[@]}" --set train.comm=nccl --set train.checkpoint_dir=deepn &&
     out=$("$COMPARE" deep1/step-000000004.safetensors deepn/step-000000004.safetensors 1e-5); then
    echo "  ok: wrn_pmoe over nccl, R = 1: $out"
  else echo "FAIL: wrn_pmoe over nccl, R = 1: ${out:-a run failed}"; failed=1; fi
fi
gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')
if command -v mpirun >/dev/null && [ "${gpus:-0}" -ge 2 ]; then
  if mpirun -np 2 "$PMOE" train "${ARGS[@]}" --set train.comm=nccl --set train.checkpoint_dir=nccl2 --log nccl2.log; then
    check "nccl, R = 2" nccl2.log nccl2
  else echo "FAIL: train.comm = nccl, R = 2"; failed=1; fi
else
  echo "  (R = 2 over NCCL needs mpirun and two GPUs; $gpus here)"
fi
[ "$failed" -eq 0 ] && echo "test_nccl: passed"
exit $failed
