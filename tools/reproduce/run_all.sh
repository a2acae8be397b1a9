#!/usr/bin/env bash
# run_all.sh [--reduced|--full] [extra options for every script]: every
# reproduction script in turn (results 1-5 of docs/reproduction.md), on the
# Fashion-MNIST mosaic's default pair (trouser vs T-shirt) and, for results 1
# and 2, on trouser vs ankle boot (the pair whose separate router routes like
# the paper's MNIST 1 vs 0); result 5 (WRN vs WRN-pMoE) on the noisy task.
# Writes to reproduce-out/ unless --out-dir DIR is given (the committed
# results: --out-dir docs/reproduction); each output's first line (a PNG's
# footer and metadata) names the commit and this command.
# Needs a built pmoe (build-repro/pmoe or build/pmoe, or $PMOE). --reduced
# takes minutes, --full a few hours on 2 cores;
# results are cached (~/.cache/pmoe-reproduce), so a stopped run resumes.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
mode=${1:---reduced}
shift || true
py=/usr/bin/python3
PMOE_REPRODUCE_COMMAND="tools/reproduce/run_all.sh $mode${*:+ $*}"
export PMOE_REPRODUCE_COMMAND
"$py" "$here/router_ideal.py" "$@"
"$py" "$here/fig4_sample_complexity.py" "$mode" "$@"
"$py" "$here/fig8_router_recall.py" "$mode" "$@"
"$py" "$here/fig7_choice_of_l.py" "$mode" "$@"
"$py" "$here/fig5_phase_transition.py" "$mode" "$@"
"$py" "$here/fig4_sample_complexity.py" "$mode" --pos-class 1 --neg-class 9 --tag 1v9 \
  --models cnn,separate,joint,separate_lr02 "$@"
"$py" "$here/fig8_router_recall.py" "$mode" --pos-class 1 --neg-class 9 --tag 1v9 "$@"
"$py" "$here/fig14_wrn_vs_pmoe.py" "$mode" "$@"
# The floating-point path that made these results (check_reduced.sh compares
# bit for bit only on a machine that shares it).
out_dir=$here/../../reproduce-out pmoe=${PMOE:-}
args=("$@")
for ((i = 0; i + 1 < ${#args[@]}; i++)); do
  case ${args[i]} in --out-dir) out_dir=${args[i + 1]} ;; --pmoe) pmoe=${args[i + 1]} ;; esac
done
for cand in "$pmoe" "$here/../../build-repro/pmoe" "$here/../../build/pmoe"; do
  if [ -n "$cand" ] && [ -x "$cand" ]; then pmoe=$cand; break; fi
done
"$here/numerics.sh" "$pmoe" > "$out_dir/numerics.txt"
