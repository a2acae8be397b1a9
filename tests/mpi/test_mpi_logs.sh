#!/usr/bin/env bash
# test_mpi_logs.sh: what pmoe prints under mpirun is a readable log.
#
#   test_mpi_logs.sh PMOE MPIRUN [MPIRUN FLAGS...]
#
# Open MPI gives every rank a pty even when mpirun's own output goes to a
# file, so a program that asks isatty() draws its progress bar ('\r' and
# escape codes) into the batch system's log. Under a launcher pmoe prints
# plain lines: the output of `mpirun -np 2 pmoe train` redirected to a file
# holds no control character but the newline, and its banner and summary come
# once (rank 0 speaks); `mpirun -np 2 pmoe eval` prints its result once.
set -u
PMOE=$1
shift
MPIRUN=("$@")
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_WAIT_POLICY=passive
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
cd "$TMP" || exit 1
passed=0 failed=0
ok() { passed=$((passed + 1)); echo "  ok: $1"; }
bad() { failed=$((failed + 1)); echo "FAIL: $1"; }

# no_control FILE: no byte below 0x20 but '\n' (and none 0x7f) in FILE.
no_control() {
  /usr/bin/python3 - "$1" <<'PYEOF'
import sys
data = open(sys.argv[1], 'rb').read()
bad = sorted({b for b in data if (b < 0x20 and b != 0x0a) or b == 0x7f})
if bad:
    print('control bytes ' + ', '.join(hex(b) for b in bad))
    sys.exit(1)
PYEOF
}

SMALL=(--set data.source=synthetic --set data.train_size=64 --set data.test_size=32 --set train.batch=16
       --set model.experts=4 --set model.topl=3 --set model.hidden=8 --set train.epochs=3
       --set train.checkpoint_every=100000 --set train.checkpoint_dir=ck)
timeout 300 "${MPIRUN[@]}" -np 2 "$PMOE" train "${SMALL[@]}" >train.out 2>&1
rc=$?
if [ $rc -ne 0 ]; then bad "mpirun -np 2 pmoe train exited $rc: $(tail -3 train.out)"; fi
if why=$(no_control train.out); then ok "mpirun -np 2 pmoe train: plain lines ($(wc -l <train.out) lines)"
else bad "mpirun -np 2 pmoe train: $why in its output"; fi
n=$(grep -c '^pmoe: pmoe model on' train.out)
if [ "$n" -eq 1 ]; then ok "the banner once"; else bad "the banner $n times"; fi
n=$(grep -c '^done: ' train.out)
if [ "$n" -eq 1 ]; then ok "the summary once"; else bad "the summary $n times"; fi
n=$(grep -c '^train  epoch' train.out)
if [ "$n" -eq 3 ]; then ok "one line per epoch"; else bad "$n epoch lines, wanted 3"; fi

timeout 300 "${MPIRUN[@]}" -np 2 "$PMOE" eval --checkpoint ck >eval.out 2>&1
rc=$?
if [ $rc -ne 0 ]; then bad "mpirun -np 2 pmoe eval exited $rc: $(tail -3 eval.out)"; fi
n=$(grep -c '^test accuracy' eval.out)
if [ "$n" -eq 1 ]; then ok "mpirun -np 2 pmoe eval: its result once"
else bad "mpirun -np 2 pmoe eval: its result $n times: $(cat eval.out)"; fi
if why=$(no_control eval.out); then ok "pmoe eval: plain lines"; else bad "pmoe eval: $why"; fi

echo "test_mpi_logs: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
