#!/usr/bin/env bash
# test_standin_faults.sh: pmoe's CUDA backend when its libraries fail, on the
# CPU stand-in (label standin).
#
#   test_standin_faults.sh PMOE_STANDIN PMOE COMPARE_CHECKPOINTS
#
# The stand-in fails the N-th call of a named function (standin.h,
# PMOE_STANDIN_FAULT). For each failure pmoe must end with exactly one line
# on stderr (the stand-in's own "pmoe-standin:" notices aside) naming the
# failing call and its cause, exit non-zero, and leave the checkpoints saved
# before the failure whole (they still load and evaluate on the CPU).
# A cuDNN algorithm that fails must not end the run: pmoe falls back to the
# next candidate and trains exactly the model of the run without the fault.
# The backend's host-side buffers are weighed against the host's memory
# (ulimit -v) like the CPU backend's: a one-line refusal, not a kill.
set -u
STANDIN=${1:?usage: test_standin_faults.sh PMOE_STANDIN PMOE COMPARE_CHECKPOINTS}
STANDIN=$(realpath "$STANDIN")
PMOE=$(realpath "$2")
COMPARE=$(realpath "$3")
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
cd "$TMP" || exit 1
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
TWO=(--quiet --set data.source=synthetic --set data.train_size=64 --set data.test_size=64
     --set train.batch=16 --set model.experts=4 --set model.topl=3 --set model.hidden=16
     --set train.epochs=2 --set train.device=cuda --set train.checkpoint_every=4)
DEEP=(--quiet --set data.source=noisy --set data.image_size=16 --set data.train_size=16
      --set data.test_size=8 --set train.batch=8 --set train.epochs=1 --set model.experts=2
      --set model.topl=2 --set model.patch=1 --set model.expert_kernel=1 --set model.type=wrn_pmoe
      --set train.device=cuda --set train.checkpoint_every=100000)
failed=0
fail() { echo "FAIL: $*"; failed=1; }

# How often each counted function is called in a clean run (for choosing N).
PMOE_STANDIN_REPORT=calls.txt "$STANDIN" train "${TWO[@]}" --set train.checkpoint_dir=clean \
  2>/dev/null || fail "the clean two-layer run"
calls() { awk -v n="$1" '$1 == n { print $2 }' calls.txt; }
echo "a clean two-layer run: $(calls launch) launches, $(calls cudaMalloc) cudaMalloc calls"

# expect_failure NAME FAULT PATTERN ARGS...: one error line matching PATTERN, a
# non-zero exit, and every checkpoint left behind loads and evaluates.
expect_failure() {
  local name=$1 fault=$2 pattern=$3
  shift 3
  rm -rf "ck-$name"
  PMOE_STANDIN_FAULT=$fault "$STANDIN" train "$@" --set train.checkpoint_dir="ck-$name" 2>"$name.err"
  local rc=$?
  # the stand-in's notices and Open MPI's own text (the banner MPI_Abort
  # prints when the NCCL communicator ends the job, a singleton's log) aside
  grep -v -e '^pmoe-standin: ' -e 'ORTE_ERROR_LOG' -e '^-----' -e 'MPI_ABORT' \
    -e '^with errorcode' -e '^You may or may not' -e '^exactly when Open MPI' -e '^$' \
    "$name.err" >"$name.lines"
  if [ "$rc" -eq 0 ]; then fail "$name: exit 0 despite $fault"; return; fi
  if [ "$(wc -l <"$name.lines")" -ne 1 ]; then
    fail "$name: expected one error line, got: $(cat "$name.lines")"; return
  fi
  if ! grep -Eq "$pattern" "$name.lines"; then fail "$name: '$(cat "$name.lines")' does not say /$pattern/"; return; fi
  echo "  ok: $name ($fault): exit $rc, one line: $(cut -c1-150 "$name.lines")"
  for ck in "ck-$name"/*.safetensors; do
    [ -e "$ck" ] || continue
    if "$PMOE" eval --checkpoint "$ck" --set train.device=cpu --quiet >/dev/null 2>&1; then
      echo "  ok: $name: the checkpoint saved before the failure loads: $(basename "$ck")"
    else fail "$name: $ck does not load"; fi
  done
}

total_launch=$(calls launch)
late=$(( total_launch * 3 / 4 ))
echo "pmoe ends with one line naming the failing call"
expect_failure malloc_oom cudaMalloc:3 "out of GPU memory" "${TWO[@]}"
expect_failure launch_refused "launch:$late" "launching [a-z_]+_kernel \\(pmoe_k_[a-z_]+\\) failed: cudaErrorLaunchOutOfResources \\(too many resources requested" "${TWO[@]}"
expect_failure kernel_fault "kernel:$late" "unspecified launch failure" "${TWO[@]}"
ls ck-kernel_fault/*.safetensors >/dev/null 2>&1 ||
  fail "kernel_fault: the checkpoint of step 4 is missing (the fault came at launch $late of $total_launch)"
expect_failure cublas_failure "cublasSgemmStridedBatched_64:$(( $(calls cublasSgemmStridedBatched_64) / 2 ))" \
  "cublasSgemmStridedBatched_64.*CUBLAS_STATUS_EXECUTION_FAILED" "${TWO[@]}"
expect_failure sync_failure "cudaStreamSynchronize:3" "cudaStreamSynchronize.*unspecified launch failure" "${TWO[@]}"
expect_failure event_failure "cudaEventCreate:1" "cudaEventCreate" "${TWO[@]}"
expect_failure cublas_create cublasCreate:1 "cuBLAS does not start" "${TWO[@]}"
expect_failure no_device cudaGetDeviceCount:1 "train.device = cuda: no CUDA device answers" "${TWO[@]}"
expect_failure cudnn_every_algorithm "cudnnConvolutionForward:1+" \
  "cuDNN convolution forward failed with every one of its [0-9]+ candidate algorithms" "${DEEP[@]}"
expect_failure cudnn_create cudnnCreate:1 "cudnnCreate failed" "${DEEP[@]}"

# NCCL (train.comm = nccl: a one-rank MPI job over the stand-in's NCCL)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
NCCL=("${TWO[@]}" --set model.gate=ones --set train.comm=nccl)
expect_failure nccl_send ncclSend:1 "ncclSend.*unhandled system error" "${NCCL[@]}"
expect_failure nccl_async ncclCommGetAsyncError:1 "NCCL reported an asynchronous error" "${NCCL[@]}"
expect_failure nccl_init ncclCommInitRank:1 "ncclCommInitRank.*unhandled system error" "${NCCL[@]}"

echo "a refused cuDNN algorithm falls back to the next candidate"
if "$STANDIN" train "${DEEP[@]}" --set train.checkpoint_dir=deep-clean 2>/dev/null &&
   PMOE_STANDIN_FAULT=cudnnConvolutionForward:1,cudnnConvolutionBackwardData:2,cudnnConvolutionBackwardFilter:1 \
     "$STANDIN" train "${DEEP[@]}" --set train.checkpoint_dir=deep-fallback 2>fallback.err; then
  if out=$("$COMPARE" deep-clean/*.safetensors deep-fallback/*.safetensors 0); then
    echo "  ok: three refused algorithms, the same model bit for bit ($out)"
  else fail "fallback: the model differs: $out"; fi
  [ "$(grep -c 'injected fault' fallback.err)" -eq 3 ] || fail "fallback: the faults were not all injected"
else fail "fallback: the run with refused algorithms failed: $(grep -v '^pmoe-standin' fallback.err)"; fi

echo "the CUDA backend's host buffers are weighed against the host's memory"
if ldd "$STANDIN" 2>/dev/null | grep -q libasan; then
  echo "  skipped: an AddressSanitizer build cannot start under an address-space limit"
else # a 6.5 GB init buffer under a 4 GB address-space limit: refused before malloc
  (ulimit -v 4000000 && exec "$STANDIN" train "${TWO[@]}" --set data.synthetic_dim=4096 \
     --set model.hidden=400000 --set train.checkpoint_dir=host-memory) 2>host-memory.err
  rc=$?
  grep -v '^pmoe-standin: ' host-memory.err >host-memory.lines
  if [ $rc -eq 1 ] && [ "$(wc -l <host-memory.lines)" -eq 1 ] &&
     grep -q "out of host memory: [0-9]* bytes asked for the parameters' initial values .*(ulimit -v)" host-memory.lines
  then echo "  ok: $(cat host-memory.lines)"
  else fail "host memory on cuda: exit $rc: $(cat host-memory.lines)"; fi
fi

echo "train.device = auto without a device runs on the CPU"
if out=$(PMOE_STANDIN_DEVICES=0 "$STANDIN" train "${TWO[@]}" --set train.device=auto --json \
           --set train.checkpoint_dir=auto 2>&1 | tail -n 1) && echo "$out" | grep -q '"backend":"cpu"'; then
  echo "  ok: no device answers: the CPU backend, without a word"
else fail "device auto: $out"; fi

echo "train.device = auto says in its banner why it runs on the CPU"
for case in "no_driver:1+|no NVIDIA driver is installed" \
            "old_driver:1+|the NVIDIA driver is too old: it supports CUDA 12.2, this build needs CUDA 13.0" \
            "failing_driver:1+|the NVIDIA driver \(CUDA 13.0\) fails: cudaGetDeviceCount: cudaErrorInitializationError"; do
  fault=${case%%|*} says=${case#*|}
  if PMOE_STANDIN_FAULT=$fault "$STANDIN" train "${TWO[@]:1}" --set train.device=auto --set train.epochs=1 \
       --no-progress --set train.checkpoint_dir="banner-${fault%%:*}" >banner.out 2>&1 &&
     grep -Eq "^      train.device = auto found no GPU: $says" banner.out; then
    echo "  ok: $fault: $(grep 'found no GPU' banner.out | cut -c1-150)"
  else fail "$fault: the banner does not say /$says/: $(head -n 4 banner.out)"; fi
done

[ "$failed" -eq 0 ] && echo "test_standin_faults: passed"
exit $failed
