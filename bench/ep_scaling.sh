#!/usr/bin/env bash
# ep_scaling.sh: expert parallelism on the CPU, R = 1 to 4 ranks at a fixed
# per-rank batch (weak scaling), with the per-step breakdown and the bytes
# each rank sends per step.
#
#   bench/ep_scaling.sh [PMOE]            (default build/pmoe)
#   RANKS="1 2 4" PER_RANK=20 STEPS=40 EPOCHS=4 REPEATS=3 bench/ep_scaling.sh build-mpi/pmoe
#
# Each R trains the joint two-layer pMoE (k = 8, l = 6, m = 40) on the
# Fashion-MNIST mosaic (synthetic data when it is absent) with a global
# batch of R * PER_RANK samples for EPOCHS epochs of STEPS steps, and reads
# rank 0's --log; the first epoch is warm-up, the rest are averaged. R = 1 is
# the plain single process (no exchange). The phases: route = patch
# extraction + gate/top-l + dispatch (+ their backward), exchange = patches
# to the experts' ranks, experts = the experts' GEMMs forward and backward,
# back = outputs to the samples' ranks, bwd-x = output gradients to the
# experts' ranks, combine = combine + loss (+ backward), reduce = the logits'
# all-gather and the router gradient's all-reduce, rest = data, the
# non-finite check and the optimizer. An exchange's time includes waiting
# for the slowest rank: on oversubscribed cores it is mostly that. Each R
# runs REPEATS times and the fastest run is kept (a shared machine's other
# work only ever adds time); the load average is printed with the table.
set -euo pipefail
PMOE=${1:-build/pmoe}
RANKS=${RANKS:-1 2 4}
PER_RANK=${PER_RANK:-20}
STEPS=${STEPS:-40}
EPOCHS=${EPOCHS:-4}
REPEATS=${REPEATS:-3}
MPIRUN=${MPIRUN:-mpirun}   # may hold flags: MPIRUN="mpirun --bind-to none"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_WAIT_POLICY=passive
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
cores=$(nproc)
echo "ep_scaling: $PMOE, $cores cores, per-rank batch $PER_RANK, $EPOCHS epochs of $STEPS steps" \
     "(first is warm-up), best of $REPEATS; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for R in $RANKS; do
  B=$((R * PER_RANK))
  for ((i = 1; i <= REPEATS; i++)); do
    args=(train --quiet --set train.batch=$B --set data.train_size=$((B * STEPS)) --set data.test_size=$B
          --set train.epochs="$EPOCHS" --set train.eval_every=100000 --log "$TMP/r$R.$i.log")
    if [ "$R" = 1 ]; then
      "$PMOE" "${args[@]}" >/dev/null
    else
      $MPIRUN --oversubscribe -np "$R" "$PMOE" "${args[@]}" >/dev/null
    fi
  done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$TMP" "$cores" "$PER_RANK" "$STEPS" "$REPEATS" $RANKS <<'PYEOF'
import json, sys
tmp, cores, per_rank, steps, repeats = (sys.argv[1], int(sys.argv[2]), int(sys.argv[3]),
                                        int(sys.argv[4]), int(sys.argv[5]))
groups = {
    'route': ['patch_extract', 'gate_topl', 'dispatch', 'gate_topl_backward'],
    'exchange': ['exchange'],
    'experts': ['experts_forward', 'experts_backward'],
    'back': ['exchange_back'],
    'bwd-x': ['exchange_backward'],
    'combine': ['combine', 'loss', 'combine_backward'],
    'reduce': ['all_reduce'],
    'rest': ['data', 'nonfinite_check', 'optimizer'],
}
head = f"{'R':>2} {'B':>4} {'step ms':>8} " + ' '.join(f'{g:>8}' for g in groups) + \
       f" {'KB/step':>8} {'samples/s':>9} {'vs R=1':>7}"
print(head)
print('-' * len(head))
base = None
def timed_epochs(path):
    log = [json.loads(l) for l in open(path)]
    return log[1:] if len(log) > 1 else log  # the first epoch warms up
for R in sys.argv[6:]:
    R = int(R)
    runs = [timed_epochs(f'{tmp}/r{R}.{i}.log') for i in range(1, repeats + 1)]
    timed = min(runs, key=lambda t: sum(e['step_seconds'] for e in t))
    n = steps * len(timed)
    step_ms = 1e3 * sum(e['step_seconds'] for e in timed) / n
    parts = {g: 1e3 * sum(e['phase_seconds'].get(p, 0) for e in timed for p in ps) / n
             for g, ps in groups.items()}
    kb = sum(e.get('exchange_bytes', 0) for e in timed) / n / 1024
    rate = R * per_rank / (step_ms / 1e3)
    base = base or rate
    print(f'{R:>2} {R * per_rank:>4} {step_ms:>8.2f} ' + ' '.join(f'{parts[g]:>8.2f}' for g in groups) +
          f' {kb:>8.1f} {rate:>9.0f} {rate / base:>6.2f}x' + ('  (oversubscribed)' if R > cores else ''))
print('phases in ms per step (rank 0); KB/step: bytes rank 0 sends to other ranks per step')
PYEOF
