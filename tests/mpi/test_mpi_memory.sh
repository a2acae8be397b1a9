#!/usr/bin/env bash
# test_mpi_memory.sh: ranks on one node share its memory.
#
#   test_mpi_memory.sh PMOE MPIRUN [MPIRUN FLAGS...]
#
# Each rank used to count on all the memory its node (or its cgroup) had
# left, so two ranks each loading data that fit once would both start and
# be killed together. In a 1 GiB memory cgroup holding mpirun and its ranks,
# training data of 560 MiB (synthetic labels, held by every rank) fits one
# rank, which goes on to fail later for a reason of its own (a CUDA device
# that is not there), but not two: each refuses with the one-line error
# that says the node's memory is shared, "... / 2 ranks on this node",
# instead of both passing the check (each sees about 800 MiB) and one being
# killed. Needs root and a writable cgroup file system: exit 77 (skipped)
# elsewhere.
set -u
PMOE=$1
shift
MPIRUN=("$@")
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_WAIT_POLICY=passive
. "$(dirname "$0")/../memory_cgroup.sh"
TMP=$(mktemp -d)
CGROUP=""
trap 'memory_cgroup_remove; rm -rf "$TMP"' EXIT
if [ "$(id -u)" -ne 0 ] || ! memory_cgroup $((1 << 30)); then
  echo "skipped: a memory cgroup (needs root and a writable cgroup file system)"
  exit 77
fi
failed=0
DATA=(train --set data.source=synthetic --set data.train_size=73400320 --set data.test_size=20
      --set train.device=cuda:7 --quiet) # 73400320 x 8 bytes = 560 MiB of labels and decisive patches

timeout 300 "${IN_CGROUP[@]}" "${MPIRUN[@]}" -np 1 "$PMOE" "${DATA[@]}" >"$TMP/one" 2>&1
rc=$?
if [ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -q "pmoe: error: train.device = cuda:7" "$TMP/one" &&
   ! grep -q "out of host memory" "$TMP/one"; then
  echo "  ok: one rank loads the data (and stops at the missing device)"
else
  echo "FAIL: one rank: exit $rc: $(grep -v '^[- ]' "$TMP/one" | head -5)"; failed=1
fi

timeout 300 "${IN_CGROUP[@]}" "${MPIRUN[@]}" -np 2 "$PMOE" "${DATA[@]}" >"$TMP/two" 2>&1
rc=$?
line="pmoe: error: out of host memory: loading the labels and decisive patches of 73400320 samples needs 560.0 MiB"
if [ $rc -ne 0 ] && [ $rc -ne 124 ] && [ "$(grep -c "^pmoe: error:" "$TMP/two")" -eq 1 ] &&
   grep "^$line" "$TMP/two" | grep -q "MiB available (cgroup memory\.[a-z_.]* / 2 ranks on this node)$"; then
  echo "  ok: two ranks refuse: $(grep '^pmoe: error:' "$TMP/two")"
else
  echo "FAIL: two ranks: exit $rc: $(grep -v '^[- ]' "$TMP/two" | head -5)"; failed=1
fi
[ $failed -eq 0 ] && echo "test_mpi_memory: passed"
exit $failed
