#!/usr/bin/env bash
# check_reduced.sh [PMOE]: reruns part of the reduced reproduction with the
# given pmoe (default $PMOE, else build/pmoe) and fails if its outputs differ
# from the ones committed in docs/reproduction/ (compare_outputs.py says what
# is compared: everything but the stamp, wall-clock times and PNGs, exactly).
# CI runs it (.ci/run), so a change that moves the numerics must commit its
# regenerated results with it (docs/reproduction.md, "Keeping the results
# current").
#
# The subset: every two-layer result of run_all.sh --reduced (results 1-4 on
# both class pairs, 48 short runs, and the ideal router), which covers the
# CNN, separate and joint pMoE, the mosaic and the synthetic data model, and
# the per-sample routing dump. Result 5 (the deep models, fig14) is left out:
# its reduced run alone takes about as long as all of the rest together on 2
# cores; test_golden and the deep-model tests pin those numerics instead.
#
# Exact comparison needs the floating-point path of the machine that made the
# committed results, which docs/reproduction/numerics.txt names (numerics.sh:
# whether pmoe's AVX-512F kernels run, and OpenBLAS's kernels): on a machine
# whose path differs the sums round otherwise, each 150-epoch run follows
# another trajectory, and no tolerance both passes honest runs and catches a
# real change (docs/reproduction.md gives the measured spread), so the check
# says so and is skipped (exit 0), as it is without Fashion-MNIST.
# PMOE_REPRODUCE_COMMITTED=DIR compares with DIR instead of docs/reproduction.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
pmoe=${1:-${PMOE:-$repo/build/pmoe}}
pmoe=$(cd "$(dirname "$pmoe")" && pwd)/$(basename "$pmoe")
committed=${PMOE_REPRODUCE_COMMITTED:-$repo/docs/reproduction}
py=/usr/bin/python3
want=$(cat "$committed/numerics.txt" 2>/dev/null || echo "not recorded")
have=$("$here/numerics.sh" "$pmoe")
if [ "$have" != "$want" ]; then
    echo "check_reduced: skipped: this machine's floating-point path ($have) is not the one that made the committed results ($want)"
    exit 0
fi
if [ ! -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte ] &&
   [ ! -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
    echo "check_reduced: skipped: no Fashion-MNIST in /usr/share/datasets/fashion-mnist"
    exit 0
fi
out=$(mktemp -d "${TMPDIR:-/tmp}/pmoe-check-reduced.XXXXXX")
trap 'rm -rf "$out"' EXIT
export PMOE_REPRODUCE_CACHE="$out/cache" # never a cached result
common=(--reduced --pmoe "$pmoe" --out-dir "$out" --no-cache)
start=$(date +%s)
"$py" "$here/router_ideal.py" --out-dir "$out" > /dev/null
"$py" "$here/fig4_sample_complexity.py" "${common[@]}" > /dev/null
"$py" "$here/fig8_router_recall.py" "${common[@]}" > /dev/null
"$py" "$here/fig7_choice_of_l.py" "${common[@]}" > /dev/null
"$py" "$here/fig5_phase_transition.py" "${common[@]}" > /dev/null
"$py" "$here/fig4_sample_complexity.py" "${common[@]}" --pos-class 1 --neg-class 9 --tag 1v9 \
    --models cnn,separate,joint,separate_lr02 > /dev/null
"$py" "$here/fig8_router_recall.py" "${common[@]}" --pos-class 1 --neg-class 9 --tag 1v9 > /dev/null
echo "check_reduced: $(( $(date +%s) - start )) s of runs"
"$py" "$here/compare_outputs.py" "$committed" "$out" \
    router_ideal_recall.csv \
    fig4_sample_complexity-reduced.csv fig4_sample_complexity-reduced.txt \
    fig8_router_recall-reduced.csv fig7_choice_of_l-reduced.csv \
    fig5_phase_transition-reduced.csv fig5_phase_transition-reduced.txt \
    fig4_sample_complexity-1v9-reduced.csv fig4_sample_complexity-1v9-reduced.txt \
    fig8_router_recall-1v9-reduced.csv
