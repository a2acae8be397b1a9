#!/usr/bin/env bash
# test_mpi_train.sh: expert parallelism end to end, through mpirun.
#
#   test_mpi_train.sh PMOE COMPARE_CHECKPOINTS MPIRUN [MPIRUN FLAGS...]
#
# - with fixed routers (model.gate = ones: G = 1 carries no router
#   gradient) R = 2 and 4 give the one-process run's losses, accuracies,
#   recalls and final parameters bit for bit, and so does R = 1 through the
#   MPI exchange path; the batches include padding (an epoch's last batch of
#   10 over 4 ranks, a test batch of 2);
# - with the routers learning (the default joint pMoE) the per-step losses
#   agree (bit for bit here) and the parameters within 1e-5 relative: the
#   router gradient is summed over ranks in another order; separate training
#   (a router phase on its linear loss, then the experts) within 1e-6;
# - a checkpoint saved by 2 ranks resumes in 1 and in 4 and ends where the
#   uninterrupted run ends, bit for bit; `pmoe eval` in one process reads it;
# - a rank whose data open fails (train.fault_rank) ends the job within
#   seconds, with one line naming the rank and the cause; a rank count that
#   does not divide k is a config error (exit 2); a NaN stops every rank at
#   the same step; SIGTERM to one rank stops all at the same step with a
#   checkpoint; a rank killed with SIGKILL ends the job, never a hang.
set -u
PMOE=$1
COMPARE=$2
shift 2
MPIRUN=("$@")
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_WAIT_POLICY=passive
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
HERE=$(cd "$(dirname "$0")" && pwd)  # this folder, for same_logs.py
cd "$TMP" || exit 1
passed=0
failed=0
ok() { passed=$((passed + 1)); echo "  ok: $1"; }
bad() { failed=$((failed + 1)); echo "FAIL: $1"; }

# run R ARGS...: R = 0 is one plain process; else mpirun -np R.
run() {
  local ranks=$1
  shift
  if [ "$ranks" = 0 ]; then "$PMOE" "$@"; else timeout 300 "${MPIRUN[@]}" -np "$ranks" "$PMOE" "$@"; fi
}

# The per-epoch measures of two logs agree bit for bit (tests/mpi/same_logs.py).
same_logs() {
  python3 "$HERE/same_logs.py" "$1" "$2" epoch step train_loss train_acc test_acc router_recall \
    expert_recall expert_load_position expert_load_class load_samples
}

SMALL=(--quiet --set data.source=synthetic --set data.test_size=50 --set train.batch=16
       --set model.experts=4 --set model.topl=3 --set model.hidden=8 --set train.checkpoint_every=100000)
FIXED=("${SMALL[@]}" --set model.gate=ones --set data.train_size=42 --set train.momentum=0.5
       --set model.hidden=16 --set model.expert_init_std=0.1 --set train.lr=1)

echo "fixed routers: R = 1, 1 over MPI, 2, 4 give the same run bit for bit"
run 0 train "${FIXED[@]}" --set train.epochs=4 --set train.checkpoint_dir=one --log one.log
final=one/step-000000012.safetensors
for case in "1 mpi" "2 auto" "4 auto"; do
  set -- $case
  ranks=$1 comm=$2
  start=$(date +%s%N)
  if ! run "$ranks" train "${FIXED[@]}" --set train.epochs=4 --set train.comm="$comm" \
      --set train.checkpoint_dir="r$ranks" --log "r$ranks.log"; then
    bad "R = $ranks ($comm) failed"
    continue
  fi
  ms=$(( ($(date +%s%N) - start) / 1000000 ))
  if same_logs one.log "r$ranks.log"; then ok "R = $ranks ($comm): the same losses, accuracies, recalls and loads ($ms ms)"
  else bad "R = $ranks ($comm): the logs differ"; fi
  if out=$("$COMPARE" "$final" "r$ranks/step-000000012.safetensors" 0); then ok "R = $ranks ($comm): the same parameters and velocities, bit for bit"
  else bad "R = $ranks ($comm): $out"; fi
done

echo "learning routers (joint): the same losses, parameters within 1e-5 relative"
JOINT=("${SMALL[@]}" --set data.train_size=32 --set train.batch=32 --set train.epochs=8 --set train.eval_every=100)
run 0 train "${JOINT[@]}" --set train.checkpoint_dir=joint1 --log joint1.log
for ranks in 2 4; do
  if ! run "$ranks" train "${JOINT[@]}" --set train.checkpoint_dir="joint$ranks" --log "joint$ranks.log"; then
    bad "joint R = $ranks failed"
    continue
  fi
  # one step per epoch: each logged loss is one step's
  if python3 - joint1.log "joint$ranks.log" <<'PYEOF'
import json, sys
a = [json.loads(l)['train_loss'] for l in open(sys.argv[1])]
b = [json.loads(l)['train_loss'] for l in open(sys.argv[2])]
worst = max(abs(x - y) / abs(x) for x, y in zip(a, b))
print(f'    {len(a)} steps: first loss {"equal" if a[0] == b[0] else "DIFFERENT"}, '
      f'largest relative difference {worst:.3g}')
sys.exit(0 if len(a) == len(b) == 8 and a[0] == b[0] and worst <= 1e-6 else 1)
PYEOF
  then ok "joint R = $ranks: per-step losses within 1e-6 relative (step 1 bit for bit)"
  else bad "joint R = $ranks: the losses differ"; fi
  if out=$("$COMPARE" joint1/step-000000008.safetensors "joint$ranks/step-000000008.safetensors" 1e-5); then
    ok "joint R = $ranks: parameters within 1e-5 relative: ${out#compared }"
  else bad "joint R = $ranks: $out"; fi
done

echo "separate training (router phase, then experts): the same losses within 1e-6"
SEPARATE=(--quiet --set data.source=synthetic --set data.train_size=95 --set data.test_size=50
          --set train.mode=separate --set model.experts=2 --set model.topl=2 --set model.hidden=8
          --set train.router_epochs=3 --set train.epochs=3 --set train.batch=10
          --set train.router_batch=10 --set train.checkpoint_every=100000)
run 0 train "${SEPARATE[@]}" --set train.checkpoint_dir=sep1 --log sep1.log
if run 2 train "${SEPARATE[@]}" --set train.checkpoint_dir=sep2 --log sep2.log &&
   python3 - sep1.log sep2.log <<'PYEOF'
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]
b = [json.loads(l) for l in open(sys.argv[2])]
worst = max(abs(x['train_loss'] - y['train_loss']) / abs(x['train_loss']) for x, y in zip(a, b))
print(f'    {len(a)} epochs (router and main), largest relative loss difference {worst:.3g}')
sys.exit(0 if len(a) == len(b) == 6 and worst <= 1e-6 and
         [x['test_acc'] for x in a] == [y['test_acc'] for y in b] else 1)
PYEOF
then ok "separate R = 2: router and expert phases within 1e-6 of one process, the same test accuracies"
else bad "separate R = 2 differs from one process"; fi

echo "a checkpoint saved by 2 ranks resumes in 1 and in 4"
run 2 train "${FIXED[@]}" --set train.epochs=2 --set train.checkpoint_dir=half --json > half.json
saved=half/step-000000006.safetensors
if [ -f "$saved" ]; then ok "R = 2 wrote one checkpoint"; else bad "R = 2 wrote no $saved"; fi
for ranks in 0 4; do
  dir=resumed$ranks
  cp -r half "$dir"
  if run "$ranks" train --resume "$dir" --quiet --set train.epochs=4 --set train.checkpoint_dir="$dir" &&
     out=$("$COMPARE" "$final" "$dir/step-000000012.safetensors" 0); then
    ok "resumed in $([ "$ranks" = 0 ] && echo 1 || echo "$ranks") rank(s): the uninterrupted run's parameters, bit for bit"
  else bad "resumed in R = $ranks: ${out:-the run failed}"; fi
done
want=$(python3 -c 'import json,sys; print(json.loads(open("half.json").read().splitlines()[-1])["test_acc"])')
got=$("$PMOE" eval --checkpoint "$saved" --json --quiet | tail -1 |
      python3 -c 'import json,sys; print(json.loads(sys.stdin.read())["test_acc"])')
if [ -n "$got" ] && [ "$got" = "$want" ]; then ok "pmoe eval in one process: test accuracy $got, as the 2-rank run reported"
else bad "pmoe eval: test accuracy '$got', the 2-rank run said '$want'"; fi
# the confusion matrix is counted per rank on its shard (padding left out) and summed
confusion() { tail -1 | python3 -c 'import json,sys; print(json.loads(sys.stdin.read())["confusion"])'; }
one=$("$PMOE" eval --checkpoint "$saved" --per-class --json --quiet | confusion)
two=$(run 2 eval --checkpoint "$saved" --per-class --json --quiet | confusion)
if [ -n "$one" ] && [ "$one" = "$two" ]; then ok "pmoe eval --per-class over 2 ranks: the one process's confusion matrix $one"
else bad "pmoe eval --per-class: one process '$one', 2 ranks '$two'"; fi

echo "failures"
start=$(date +%s)
run 4 train "${FIXED[@]}" --set train.epochs=2 --set train.fault_rank=1 >fault.out 2>fault.err
rc=$?
took=$(( $(date +%s) - start ))
if [ "$rc" -ne 0 ] && [ "$took" -lt 60 ] && grep -q "^pmoe: error: rank 1 of 4: .*pmoe-fault-rank-1" fault.err &&
   [ "$(grep -c '^pmoe: error' fault.err)" = 1 ]; then
  ok "a rank whose data open fails ends the job in $took s: $(grep '^pmoe: error' fault.err | cut -c1-110)..."
else bad "fault_rank: exit $rc after $took s: $(head -c 600 fault.err)"; fi

run 3 train "${FIXED[@]}" --set train.epochs=1 >ranks.out 2>ranks.err
rc=$?
if [ "$rc" -eq 2 ] && grep -q "model.experts = 4 is not divisible by the 3 ranks" ranks.err; then
  ok "3 ranks for 4 experts: exit 2, $(grep -o 'model.experts = 4 is not divisible by the 3 ranks' ranks.err)"
else bad "3 ranks, 4 experts: exit $rc: $(head -c 400 ranks.err)"; fi

run 2 train "${FIXED[@]}" --set train.epochs=2 --set train.fault_nan_step=2 >nan.out 2>nan.err
rc=$?
if [ "$rc" -eq 1 ] && grep -q "non-finite.*at step 2" nan.err && [ "$(grep -c '^pmoe: error' nan.err)" = 1 ]; then
  ok "a NaN stops both ranks at step 2, one message"
else bad "NaN: exit $rc: $(head -c 400 nan.err)"; fi

# pid_of_rank MPIRUN_PID RANK: the pmoe process of that rank (mpirun starts
# the ranks of a one-node job as its children).
pid_of_rank() {
  local child
  for child in $(pgrep -P "$1"); do
    if tr '\0' '\n' <"/proc/$child/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$2"; then
      echo "$child"
      return
    fi
  done
}

# wait_for PID SECONDS: 0 when PID ended in time (its status in $waited).
wait_for() {
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    if ! kill -0 "$1" 2>/dev/null; then
      wait "$1"
      waited=$?
      return 0
    fi
    sleep 0.1
  done
  return 1
}

LONG=("${FIXED[@]}" --set data.train_size=2000 --set train.epochs=1000)
for what in TERM KILL; do
  "${MPIRUN[@]}" -np 2 "$PMOE" train "${LONG[@]}" --set train.checkpoint_dir=stop >"$what.out" 2>"$what.err" &
  launcher=$!
  target=""
  tries=0
  while [ -z "$target" ] && [ "$tries" -lt 100 ]; do
    sleep 0.2
    target=$(pid_of_rank "$launcher" 1)
    tries=$((tries + 1))
  done
  sleep 2 # into the training loop
  if [ -z "$target" ]; then
    bad "SIG$what: rank 1's process not found"
    kill "$launcher" 2>/dev/null
    wait "$launcher"
    continue
  fi
  kill -s "$what" "$target"
  if ! wait_for "$launcher" 60; then
    bad "SIG$what to rank 1: the job still runs after 60 s"
    kill -s KILL "$launcher" 2>/dev/null
    wait "$launcher"
  elif [ "$what" = TERM ]; then
    if [ "$waited" -ne 0 ] && grep -q "^pmoe: terminated by signal 15: stopped after step" TERM.err &&
       ls stop/step-*.safetensors >/dev/null 2>&1; then
      ok "SIGTERM to rank 1: both ranks stopped at one step and saved $(ls stop) (exit $waited)"
    else bad "SIGTERM to rank 1: exit $waited: $(head -c 400 TERM.err)"; fi
  else
    if [ "$waited" -ne 0 ]; then ok "SIGKILL to rank 1: mpirun ended the job (exit $waited)"
    else bad "SIGKILL to rank 1: exit 0"; fi
  fi
done

echo "test_mpi_train: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
