#!/usr/bin/env bash
# ep_scaling_deep.sh: WRN-pMoE (or WRN) over R = 1, 2, 4 ranks on the CPU:
# weak scaling (a fixed per-rank batch) and strong scaling (a fixed global
# batch), the per-step breakdown, the bytes rank 0 sends per step and the
# share of the step spent communicating.
#
#   bench/ep_scaling_deep.sh [PMOE]           (default build/pmoe)
#   RANKS="1 2 4" PER_RANK=8 GLOBAL=16 STEPS=8 EPOCHS=3 REPEATS=2 MODEL=wrn_pmoe WIDTH=1 \
#     SYNC_BN=0 bench/ep_scaling_deep.sh build/pmoe
#
# The noisy task (Fashion-MNIST items on a noise background, 32 x 32;
# synthetic images need those files too), k = 4, l = 4, the expert-parallel
# group E chosen by default (the largest that divides R and k on one node:
# E = R here). The first epoch is warm-up; the rest are averaged; the fastest
# of REPEATS runs is kept (a shared machine's other work only adds time), and
# the load average is printed with the table. Phases (rank 0's, ms per
# step): layers = the dense layers forward and backward (batch norm's
# cross-rank sums included), experts = routing, dispatch, the experts and
# the scatter, exchange = the three all-to-alls of the pMoE layer, reduce =
# the logits' all-gather and the gradients' all-reduce, rest = data, guard,
# optimizer. comm % = (exchange + reduce) / step: it includes waiting for the
# slowest rank, which on oversubscribed cores is most of it.
set -euo pipefail
PMOE=${1:-build/pmoe}
RANKS=${RANKS:-1 2 4}
PER_RANK=${PER_RANK:-8}
GLOBAL=${GLOBAL:-16}
STEPS=${STEPS:-8}
EPOCHS=${EPOCHS:-3}
REPEATS=${REPEATS:-2}
MODEL=${MODEL:-wrn_pmoe}
WIDTH=${WIDTH:-1}
SYNC_BN=${SYNC_BN:-0}
MPIRUN=${MPIRUN:-mpirun}   # may hold flags: MPIRUN="mpirun --bind-to none"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_WAIT_POLICY=passive
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
cores=$(nproc)
echo "ep_scaling_deep: $PMOE, $MODEL width $WIDTH, $cores cores, sync_bn $SYNC_BN, $EPOCHS epochs" \
     "of $STEPS steps (first is warm-up), best of $REPEATS; load average before:" \
     "$(cut -d' ' -f1-3 /proc/loadavg)"
run_all() { # kind batch-of-R...
  local kind=$1 R B i
  for R in $RANKS; do
    if [ "$kind" = weak ]; then B=$((R * PER_RANK)); else B=$GLOBAL; fi
    for ((i = 1; i <= REPEATS; i++)); do
      args=(train --quiet --set model.type="$MODEL" --set model.width="$WIDTH" --set model.experts=4
            --set model.topl=4 --set data.source=noisy --set train.batch=$B
            --set data.train_size=$((B * STEPS)) --set data.test_size=$B --set train.sync_bn="$SYNC_BN"
            --set train.threads=$(( cores / R > 0 ? cores / R : 1 ))
            --set train.epochs="$EPOCHS" --set train.eval_every=100000 --log "$TMP/$kind.r$R.$i.log")
      if [ "$R" = 1 ]; then "$PMOE" "${args[@]}" >/dev/null
      else $MPIRUN --oversubscribe -np "$R" "$PMOE" "${args[@]}" >/dev/null; fi
    done
  done
}
run_all weak
run_all strong
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$TMP" "$cores" "$PER_RANK" "$GLOBAL" "$STEPS" "$REPEATS" $RANKS <<'PYEOF'
import json, sys
tmp, cores, per_rank, global_batch, steps, repeats = (sys.argv[1], int(sys.argv[2]),
    int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]))
ranks = [int(r) for r in sys.argv[7:]]
groups = {
    'layers': ['layers_forward', 'layers_backward', 'loss'],
    'experts': ['patch_extract', 'gate_topl', 'dispatch', 'experts_forward', 'combine',
                'combine_backward', 'experts_backward', 'gate_topl_backward'],
    'exchange': ['exchange', 'exchange_back', 'exchange_backward'],
    'reduce': ['all_reduce'],
    'rest': ['data', 'nonfinite_check', 'optimizer'],
}
def timed_epochs(path):
    log = [json.loads(l) for l in open(path)]
    return log[1:] if len(log) > 1 else log
for kind in ('weak', 'strong'):
    print(f"\n{kind} scaling ({'%d samples per rank' % per_rank if kind == 'weak' else 'global batch %d' % global_batch}):")
    head = f"{'R':>2} {'B':>4} {'step ms':>8} " + ' '.join(f'{g:>8}' for g in groups) + \
           f" {'comm %':>7} {'KB/step':>8} {'samples/s':>9} {'vs R=1':>7}"
    print(head)
    print('-' * len(head))
    base = None
    for R in ranks:
        B = R * per_rank if kind == 'weak' else global_batch
        runs = [timed_epochs(f'{tmp}/{kind}.r{R}.{i}.log') for i in range(1, repeats + 1)]
        timed = min(runs, key=lambda t: sum(e['step_seconds'] for e in t))
        n = steps * len(timed)
        step_ms = 1e3 * sum(e['step_seconds'] for e in timed) / n
        parts = {g: 1e3 * sum(e['phase_seconds'].get(p, 0) for e in timed for p in ps) / n
                 for g, ps in groups.items()}
        kb = sum(e.get('exchange_bytes', 0) for e in timed) / n / 1024
        rate = B / (step_ms / 1e3)
        base = base or rate
        comm = 100 * (parts['exchange'] + parts['reduce']) / step_ms
        print(f'{R:>2} {B:>4} {step_ms:>8.2f} ' + ' '.join(f'{parts[g]:>8.2f}' for g in groups) +
              f' {comm:>6.1f}% {kb:>8.1f} {rate:>9.1f} {rate / base:>6.2f}x' +
              ('  (oversubscribed)' if R > cores else ''))
print('\nphases in ms per step (rank 0); KB/step: bytes rank 0 sends to other ranks per step')
PYEOF
