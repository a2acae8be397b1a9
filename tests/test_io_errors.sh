#!/usr/bin/env bash
# test_io_errors.sh: every write failure, special file and limit ends in one
# line on stderr and a non-zero exit, and no file written earlier is harmed.
#
#  - outputs: stdout and --log on /dev/full; a full file system (a small
#    tmpfs, root only) under the checkpoints and the log: earlier files stay
#    byte-identical and the log ends at a whole line; a file-size limit
#    (ulimit -f): a message, no temporary file left; a read-only file system
#    (root only): every writer refuses at its start; a checkpoint folder that
#    cannot be created fails at the start; a memory limit (a memory cgroup,
#    root only, and ulimit -v): the out-of-memory line, not a kill, for the
#    model and for each data source's own buffers (synthetic labels, CIFAR
#    records, IDX data, folder images), naming what was being loaded;
#    progress into a full stdout stops the run at the first failed write,
#    its checkpoint saved, the earlier ones untouched;
#  - signals: SIGTERM during the final evaluation saves and exits 143;
#  - special files: a FIFO as checkpoint, config or newest file of a resume
#    folder is refused without hanging; route and bench never replace a FIFO,
#    a device node or a folder, and bench finds one before its runs;
#  - messages that name the key, folder or limit at fault.
# Parts that need root (mount, mknod, cgroups) say "skipped" elsewhere.
# Usage: test_io_errors.sh PATH/TO/pmoe
set -u
PMOE=${1:?usage: test_io_errors.sh PATH/TO/pmoe}
. "$(dirname "$0")/memory_cgroup.sh"
TMP=$(mktemp -d)
MNT="" CGROUP=""
cleanup() {
  [ -n "$MNT" ] && umount "$MNT" 2>/dev/null
  memory_cgroup_remove
  rm -rf "$TMP"
}
trap cleanup EXIT
passed=0 failed=0 skipped=0
ok() { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL: $*"; }
skip() { skipped=$((skipped + 1)); echo "skipped: $*"; }
ROOT=0; [ "$(id -u)" -eq 0 ] && ROOT=1

# expect_fail NEEDLE CMD...: CMD (run with a 60 s timeout, so a hang fails
# rather than stalls) exits non-zero but not by the timeout, and stderr is
# exactly one line holding NEEDLE.
expect_fail() {
  local needle=$1; shift
  timeout 60 "$@" >"$TMP/out" 2>"$TMP/err" </dev/null
  local rc=$?
  if [ $rc -eq 0 ]; then bad "$* exited 0 (wanted '$needle')"; return 1; fi
  if [ $rc -eq 124 ]; then bad "$* hung (killed after 60 s)"; return 1; fi
  if ! grep -qF -- "$needle" "$TMP/err"; then bad "$*: stderr lacks '$needle': $(cat "$TMP/err")"; return 1; fi
  if [ "$(wc -l <"$TMP/err")" -ne 1 ]; then bad "$*: $(wc -l <"$TMP/err") stderr lines: $(cat "$TMP/err")"; return 1; fi
  ok
}

# whole_lines FILE: every line of FILE is a JSON object and the file ends with a newline.
whole_lines() {
  [ ! -s "$1" ] && return 0
  [ "$(tail -c 1 "$1" | od -An -c | tr -d ' ')" = '\n' ] || return 1
  while IFS= read -r line; do
    case $line in '{'*'}') ;; *) return 1 ;; esac
  done <"$1"
}

SYN=(--set data.source=synthetic --set data.train_size=40 --set data.test_size=20 --set train.epochs=1)
CKPT=(--set train.checkpoint_every=1)

# ---- 2. outputs ----
timeout 60 "$PMOE" keys >/dev/full 2>"$TMP/err"; rc=$?
if [ $rc -ne 0 ] && grep -q "standard output: writing failed: No space left on device" "$TMP/err" &&
   [ "$(wc -l <"$TMP/err")" -eq 1 ]; then ok; else bad "pmoe keys > /dev/full: exit $rc: $(cat "$TMP/err")"; fi
timeout 120 "$PMOE" train "${SYN[@]}" --json --quiet >/dev/full 2>"$TMP/err"; rc=$?
if [ $rc -ne 0 ] && grep -q "standard output: writing failed" "$TMP/err"; then ok; else bad "--json > /dev/full: exit $rc: $(cat "$TMP/err")"; fi
expect_fail "/dev/full: writing failed: No space left on device" "$PMOE" train "${SYN[@]}" --quiet --log /dev/full
# Progress into a full stdout: the first failed write (the run's first
# line) stops the run after that step, not at its end, saving its checkpoint
# as a signal does; resumed the same way, it stops after one more step, the
# earlier checkpoint byte-identical and both loadable.
FULL=(--set train.batch=10 --set train.epochs=50 --set train.checkpoint_every=1000 --set train.checkpoint_dir="$TMP/full-out")
full_stdout() { # full_stdout STEP ARGS...: pmoe ARGS > /dev/full stops after STEP with its checkpoint
  local step=$1; shift
  timeout 120 "$PMOE" "$@" >/dev/full 2>"$TMP/err"; local rc=$?
  local ck="$TMP/full-out/step-00000000$step.safetensors"
  if [ $rc -eq 1 ] && [ "$(wc -l <"$TMP/err")" -eq 1 ] &&
     grep -qF "standard output: writing failed: No space left on device; stopped after step $step; checkpoint $ck" "$TMP/err"
  then ok; else bad "progress > /dev/full: exit $rc: $(cat "$TMP/err")"; fi
  "$PMOE" eval --checkpoint "$ck" >/dev/null 2>"$TMP/err" && ok || bad "progress > /dev/full: $ck does not load: $(cat "$TMP/err")"
}
full_stdout 1 train "${SYN[@]}" "${FULL[@]}"
sum_before=$(md5sum "$TMP/full-out/step-000000001.safetensors")
full_stdout 2 train --resume "$TMP/full-out"
[ "$(md5sum "$TMP/full-out/step-000000001.safetensors")" = "$sum_before" ] && ok ||
  bad "progress > /dev/full: the resumed run changed the checkpoint before it"
# resumed at an epoch's end, it stops before its first step: the state is the
# file it resumed from, which is named and left as it was (not saved again)
"$PMOE" train "${SYN[@]}" --set train.batch=10 "${CKPT[@]}" --set train.checkpoint_dir="$TMP/full-end" --quiet
sum_before=$(md5sum "$TMP/full-end/step-000000004.safetensors")
expect_fail "standard output: writing failed: No space left on device; stopped after step 4; checkpoint $TMP/full-end/step-000000004.safetensors" \
  sh -c 'exec "$@" >/dev/full' sh "$PMOE" train --resume "$TMP/full-end" --set train.epochs=50
[ "$(md5sum "$TMP/full-end/step-000000004.safetensors")" = "$sum_before" ] && ok ||
  bad "a resumed run stopped before its first step rewrote the checkpoint it resumed from"

# A file-size limit: a write error with a message, no temporary file left, the earlier checkpoint whole.
BIG=(--set data.source=synthetic --set data.train_size=40 --set data.test_size=20 --set data.synthetic_dim=1024 --set model.hidden=64)
"$PMOE" train "${BIG[@]}" --set train.epochs=1 "${CKPT[@]}" --set train.checkpoint_dir="$TMP/fsize" --quiet
sum_before=$(md5sum "$TMP"/fsize/step-*.safetensors)
(ulimit -f 8 && exec "$PMOE" train --resume "$TMP/fsize" --set train.epochs=2 --quiet) \
  >"$TMP/out" 2>"$TMP/err"; rc=$? # 8 KiB: less than one checkpoint
if [ $rc -ne 0 ] && [ $rc -lt 128 ] && grep -q "File too large" "$TMP/err" && [ "$(wc -l <"$TMP/err")" -eq 1 ]; then ok
else bad "ulimit -f: exit $rc: $(cat "$TMP/err")"; fi
if ls "$TMP/fsize" | grep -q '\.tmp\.'; then bad "ulimit -f left a temporary file: $(ls "$TMP/fsize")"; else ok; fi
[ "$(md5sum "$TMP"/fsize/step-000000002.safetensors)" = "$(echo "$sum_before" | grep step-000000002)" ] && ok ||
  bad "ulimit -f: the earlier checkpoint changed"

# A checkpoint folder that cannot be created: an error at the start, before any step.
expect_fail "/proc/pmoe-nope: cannot create the checkpoint folder" \
  "$PMOE" train "${SYN[@]}" --set train.checkpoint_every=1000 --set train.checkpoint_dir=/proc/pmoe-nope --quiet --log "$TMP/early.log"
[ ! -s "$TMP/early.log" ] && ok || bad "the run trained before finding its checkpoint folder missing"

# A full file system (root: a 1 MiB tmpfs): checkpoints and the log stop with
# one line; every file there before is byte-identical; the log has whole lines.
if [ $ROOT -eq 1 ] && mkdir -p "$TMP/mnt" && mount -t tmpfs -o size=1m tmpfs "$TMP/mnt" 2>/dev/null; then
  MNT="$TMP/mnt"
  "$PMOE" train "${BIG[@]}" --set train.epochs=1 "${CKPT[@]}" --set train.keep=100 --set train.checkpoint_dir="$MNT/ck" \
    --log "$MNT/run.log" --quiet 2>"$TMP/err" || bad "full disk: the first run failed: $(cat "$TMP/err")"
  (cd "$MNT" && find . -type f ! -name run.log ! -name .pmoe.lock -exec md5sum {} + | sort) >"$TMP/before"
  dd if=/dev/zero of="$MNT/filler" bs=4k 2>/dev/null # fill what is left
  timeout 120 "$PMOE" train --resume "$MNT/ck" --set train.epochs=4 --log "$MNT/run.log" --quiet >/dev/null 2>"$TMP/err"; rc=$?
  if [ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -q "No space left on device" "$TMP/err" && [ "$(wc -l <"$TMP/err")" -eq 1 ]; then ok
  else bad "full disk: exit $rc: $(cat "$TMP/err")"; fi
  (cd "$MNT" && find . -type f ! -name run.log ! -name filler ! -name .pmoe.lock -exec md5sum {} + | sort) >"$TMP/after"
  if grep -v filler "$TMP/before" | diff - "$TMP/after" >/dev/null; then ok; else bad "full disk: earlier files changed: $(diff "$TMP/before" "$TMP/after")"; fi
  whole_lines "$MNT/run.log" && ok || bad "full disk: the log ends in half a line: $(tail -c 80 "$MNT/run.log")"
  # the log alone on the full disk
  rm -rf "$MNT/ck"; rm -f "$MNT/run.log" "$MNT/filler"
  dd if=/dev/zero of="$MNT/filler" bs=1k count=1010 2>/dev/null
  expect_fail "run.log: writing failed: No space left on device" \
    "$PMOE" train "${BIG[@]}" --set train.epochs=20 --log "$MNT/run.log" --quiet
  whole_lines "$MNT/run.log" && ok || bad "full disk: the log ends in half a line"
  umount "$MNT" && MNT=""
else
  skip "a full file system (needs root and mount)"
fi

# A read-only file system (root: a tmpfs remounted read-only): every writer
# refuses at its start, nothing there changes, and reading still works.
if [ $ROOT -eq 1 ] && mkdir -p "$TMP/ro" && mount -t tmpfs -o size=4m tmpfs "$TMP/ro" 2>/dev/null; then
  MNT="$TMP/ro"
  "$PMOE" train "${SYN[@]}" "${CKPT[@]}" --set train.checkpoint_dir="$MNT/ck" --quiet
  mount -o remount,ro "$MNT"
  (cd "$MNT" && find . -type f -exec md5sum {} + | sort) >"$TMP/before"
  expect_fail "$MNT/ck: cannot write in the checkpoint folder: Read-only file system" \
    "$PMOE" train --resume "$MNT/ck" --set train.epochs=2 --quiet --log "$TMP/ro.log"
  [ ! -s "$TMP/ro.log" ] && ok || bad "read-only: the resumed run trained before finding its folder read-only"
  expect_fail "$MNT/new: cannot create the checkpoint folder: Read-only file system" \
    "$PMOE" train "${SYN[@]}" "${CKPT[@]}" --set train.checkpoint_dir="$MNT/new" --quiet
  expect_fail "$MNT/run.log: cannot open the log for writing: Read-only file system" \
    "$PMOE" train "${SYN[@]}" --quiet --log "$MNT/run.log"
  expect_fail "$MNT/r.png: cannot create" "$PMOE" route --checkpoint "$MNT/ck" --out "$MNT/r.png"
  expect_fail "$MNT/sweep: cannot create the --out folder: Read-only file system" \
    "$PMOE" bench --sweep model.topl=2 --out "$MNT/sweep"
  "$PMOE" eval --checkpoint "$MNT/ck" --quiet >/dev/null 2>"$TMP/err" && ok || bad "read-only: eval failed: $(cat "$TMP/err")"
  (cd "$MNT" && find . -type f -exec md5sum {} + | sort) >"$TMP/after"
  diff -q "$TMP/before" "$TMP/after" >/dev/null && ok || bad "read-only: files changed: $(diff "$TMP/before" "$TMP/after")"
  umount "$MNT" && MNT=""
else
  skip "a read-only file system (needs root and mount)"
fi

# Memory: a limit below the model's footprint, or the data's, is the one-line error, never a kill.
# Data bigger than the limits below, cheaply: sparse CIFAR-10 and IDX files of
# zeros (label 0), one picture taking the size of many (PNG of zeros).
DATA_HUGE=(--set data.source=synthetic --set data.train_size=600000000 --set data.test_size=20 --quiet)
mkdir "$TMP/cifar" "$TMP/idx"
truncate -s $((3073 * 1500000)) "$TMP/cifar/data_batch_1.bin"
for f in data_batch_2 data_batch_3 data_batch_4 data_batch_5 test_batch; do truncate -s 3073 "$TMP/cifar/$f.bin"; done
CIFAR_HUGE=(--set data.source=cifar10 --set data.path="$TMP/cifar" --set data.test_size=1 --set train.epochs=1 --quiet)
be32() { printf "$(printf '\\%03o\\%03o\\%03o\\%03o' $(($1 >> 24 & 255)) $(($1 >> 16 & 255)) $(($1 >> 8 & 255)) $(($1 & 255)))"; }
idx_file() { # idx_file PATH COUNT [ROWS COLS]: an IDX file of COUNT zero items (ubyte)
  local items=1
  { printf '\000\000\010'; printf "$(printf '\\%03o' $(($# - 1)))"; } >"$1"
  for n in "${@:2}"; do be32 "$n" >>"$1"; items=$((items * n)); done
  truncate -s $(($(stat -c %s "$1") + items)) "$1"
}
idx_file "$TMP/idx/train-images-idx3-ubyte" 400000 28 28 # 299 MiB
idx_file "$TMP/idx/train-labels-idx1-ubyte" 400000
idx_file "$TMP/idx/t10k-images-idx3-ubyte" 10 28 28
idx_file "$TMP/idx/t10k-labels-idx1-ubyte" 10
HUGE=(--set data.source=synthetic --set data.train_size=40 --set data.test_size=20 --set train.epochs=1
      --set data.synthetic_dim=4096 --set model.hidden=8000 --quiet)   # about 440 MB
if ldd "$PMOE" 2>/dev/null | grep -q libasan; then
  # AddressSanitizer reserves terabytes of shadow address space at start, which
  # no address-space limit allows: the sanitizer build cannot run this case.
  skip "ulimit -v: an AddressSanitizer build cannot start under an address-space limit"
else
  (ulimit -v 4000000 && exec "$PMOE" train "${HUGE[@]}" --set model.hidden=400000) >"$TMP/out" 2>"$TMP/err"; rc=$?
  if [ $rc -eq 1 ] && grep -q "out of host memory" "$TMP/err" && [ "$(wc -l <"$TMP/err")" -eq 1 ]; then ok
  else bad "ulimit -v: exit $rc: $(cat "$TMP/err")"; fi
  # the data's own buffers, weighed before they are taken
  expect_fail "out of host memory: loading the labels and decisive patches of 600000000 samples needs 4577.6 MiB, only" \
    sh -c 'ulimit -v 4000000 && exec "$@"' sh "$PMOE" train "${DATA_HUGE[@]}" &&
    { grep -q "MiB available (ulimit -v)$" "$TMP/err" && ok || bad "the data's limit is not named: $(cat "$TMP/err")"; }
  expect_fail "out of host memory: loading CIFAR-10 train (1500000 images) needs 4396.0 MiB" \
    sh -c 'ulimit -v 4000000 && exec "$@"' sh "$PMOE" train "${CIFAR_HUGE[@]}" --set data.train_size=1500000
fi
if [ $ROOT -eq 1 ] && memory_cgroup $((200 << 20)); then
  "${IN_CGROUP[@]}" "$PMOE" train "${HUGE[@]}" >"$TMP/out" 2>"$TMP/err"; rc=$?
  if [ $rc -eq 1 ] && grep -q "out of host memory" "$TMP/err" && [ "$(wc -l <"$TMP/err")" -eq 1 ]; then ok
  else bad "a 200 MiB memory cgroup: exit $rc: $(cat "$TMP/err")"; fi
  # each data source's own buffers (a kill, exit 137, without the check)
  expect_fail "out of host memory: loading the labels and decisive patches of 50000000 samples needs 381.5 MiB, only" \
    "${IN_CGROUP[@]}" "$PMOE" train "${DATA_HUGE[@]}" --set data.train_size=50000000
  expect_fail "out of host memory: loading CIFAR-10 train (100000 images) needs 293.1 MiB, only" \
    "${IN_CGROUP[@]}" "$PMOE" train "${CIFAR_HUGE[@]}" --set data.train_size=100000
  expect_fail "out of host memory: loading the IDX data of $TMP/idx/train-images-idx3-ubyte needs" \
    "${IN_CGROUP[@]}" "$PMOE" train --set data.source=idx --set data.path="$TMP/idx" --set data.train_size=10 \
    --set data.test_size=10 --set train.epochs=1 --quiet
  if command -v python3 >/dev/null; then # 5000 x 5000 gray PNGs of zeros (25 KiB each)
    mkdir -p "$TMP/folder/train/a" "$TMP/folder/train/b" "$TMP/folder/test/a"
    python3 -c 'import struct, sys, zlib
def chunk(kind, data): return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
side = 5000
png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
png += chunk(b"IDAT", zlib.compress(bytes((side + 1) * side), 9)) + chunk(b"IEND", b"")
open(sys.argv[1], "wb").write(png)' "$TMP/folder/train/a/1.png"
    cp "$TMP/folder/train/a/1.png" "$TMP/folder/train/a/2.png"
    cp "$TMP/folder/train/a/1.png" "$TMP/folder/train/b/1.png"
    cp "$TMP/folder/train/a/1.png" "$TMP/folder/test/a/1.png"
    expect_fail "out of host memory: loading 3 5000x5000 images from $TMP/folder/train/a needs 214.6 MiB, only" \
      "${IN_CGROUP[@]}" "$PMOE" train --set data.source=folder --set data.path="$TMP/folder" --set data.image_size=0 \
      --set train.epochs=1 --quiet
  else
    skip "folder images in a memory cgroup (needs python3 to write the PNGs)"
  fi
  memory_cgroup_remove
else
  skip "a memory cgroup (needs root and a writable cgroup file system)"
fi

# SIGTERM during the final evaluation: one step, a long evaluation; the
# signal comes once the step's checkpoint exists (so: in the evaluation).
EVAL=(--set data.source=synthetic --set data.train_size=20 --set data.test_size=3000 --set train.epochs=1
      --set train.checkpoint_every=1 --set train.checkpoint_dir="$TMP/final" --quiet)
"$PMOE" train "${EVAL[@]}" >/dev/null 2>"$TMP/err" &
pid=$!
for _ in $(seq 600); do [ -e "$TMP/final/step-000000001.safetensors" ] && break; sleep 0.1; done
kill -TERM $pid
wait $pid; rc=$?
if [ $rc -eq 143 ] && grep -q "stopped after step 1; checkpoint $TMP/final/step-000000001.safetensors" "$TMP/err"; then ok
else bad "SIGTERM in the final evaluation: exit $rc: $(cat "$TMP/err")"; fi

# ---- 4. special files ----
"$PMOE" train "${SYN[@]}" "${CKPT[@]}" --set train.checkpoint_dir="$TMP/ck" --quiet
mkfifo "$TMP/fifo"
expect_fail "fifo: cannot open: it is a FIFO, not a regular file" "$PMOE" eval --checkpoint "$TMP/fifo"
expect_fail "cannot open config: it is a FIFO" "$PMOE" train --config "$TMP/fifo"
expect_fail "fifo: cannot open the log for writing: it is a FIFO that no process reads" \
  "$PMOE" train "${SYN[@]}" --quiet --log "$TMP/fifo"
cp -r "$TMP/ck" "$TMP/ck-fifo" && mkfifo "$TMP/ck-fifo/step-999999999.safetensors"
timeout 60 "$PMOE" train --resume "$TMP/ck-fifo" --set train.epochs=2 --quiet >/dev/null 2>"$TMP/err"; rc=$?
[ $rc -ne 0 ] && [ $rc -ne 124 ] && ok || bad "a FIFO in a --resume folder: exit $rc: $(cat "$TMP/err")"
# route --out and bench outputs never replace what is not a regular file
expect_fail "fifo: is a FIFO, not a regular file; not replaced" "$PMOE" route --checkpoint "$TMP/ck" --out "$TMP/fifo"
[ -p "$TMP/fifo" ] && ok || bad "route replaced the FIFO"
mkdir "$TMP/folder.png"
expect_fail "folder.png: is a folder, not a regular file" "$PMOE" route --checkpoint "$TMP/ck" --out "$TMP/folder.png"
if [ $ROOT -eq 1 ] && mknod "$TMP/null" c 1 3 2>/dev/null; then
  expect_fail "null: is a character device, not a regular file; not replaced" "$PMOE" route --checkpoint "$TMP/ck" --out "$TMP/null"
  [ -c "$TMP/null" ] && ok || bad "route replaced the device node"
else
  skip "a device node as route --out (needs root and mknod)"
fi
# bench finds an output it may not write before any run: nothing is run,
# nothing written (not the .csv before a FIFO as .png, nor the first of
# two sweeps before the second's), the FIFO stays
BENCH=(bench "${SYN[@]}" --set bench.warmup=0 --set bench.repeats=1 --set bench.sgemm_size=0)
mkdir "$TMP/sweep" && mkfifo "$TMP/sweep/sweep-model.topl.png"
expect_fail "sweep-model.topl.png: is a FIFO, not a regular file; not replaced" "$PMOE" "${BENCH[@]}" \
  --sweep model.topl=2 --out "$TMP/sweep"
! grep -q "ms/step" "$TMP/out" && [ "$(ls "$TMP/sweep")" = sweep-model.topl.png ] && [ -p "$TMP/sweep/sweep-model.topl.png" ] &&
  ok || bad "bench --sweep ran before refusing its FIFO output: $(ls "$TMP/sweep"): $(cat "$TMP/out")"
rm "$TMP/sweep/sweep-model.topl.png" && mkfifo "$TMP/sweep/sweep-model.experts.csv"
expect_fail "sweep-model.experts.csv: is a FIFO" "$PMOE" "${BENCH[@]}" --sweep model.topl=2 --sweep model.experts=4 --out "$TMP/sweep"
! grep -q "ms/step" "$TMP/out" && [ "$(ls "$TMP/sweep")" = sweep-model.experts.csv ] &&
  ok || bad "bench ran the first sweep before refusing the second's FIFO: $(ls "$TMP/sweep")"
mkdir "$TMP/peer" && mkfifo "$TMP/peer/pmoe-bench.json"
expect_fail "pmoe-bench.json: is a FIFO" "$PMOE" "${BENCH[@]}" --peer "$TMP/peer" --quiet
[ "$(ls "$TMP/peer")" = pmoe-bench.json ] && ok || bad "bench --peer wrote before refusing its FIFO: $(ls "$TMP/peer")"

# ---- 5. messages name what is at fault ----
expect_fail "config: train.checkpoint_dir must not be empty" "$PMOE" train --set train.checkpoint_dir=
expect_fail "config: train.lr: 1e-310 is too small for a double" "$PMOE" train --set train.lr=1e-310
expect_fail "config: train.lr: 1e999 is too large for a double" "$PMOE" train --set train.lr=1e999
expect_fail "/proc/pmoe-out: cannot create the --out folder" "$PMOE" bench --sweep model.topl=2 --out /proc/pmoe-out
expect_fail "/proc/pmoe-peer: cannot create the --peer folder" "$PMOE" bench --peer /proc/pmoe-peer
# crafted safetensors: a header over the limit; a shape whose product overflows
printf '\x00\x00\x00\x10\x00\x00\x00\x00{}' >"$TMP/big-header.safetensors"
expect_fail "over pmoe's limit of 104857600 bytes" "$PMOE" eval --checkpoint "$TMP/big-header.safetensors"
header='{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}}'
printf "$(printf '\\x%02x' ${#header})\x00\x00\x00\x00\x00\x00\x00%s" "$header" >"$TMP/overflow.safetensors"
expect_fail "the product of its shape's sizes overflows" "$PMOE" eval --checkpoint "$TMP/overflow.safetensors"

echo "test_io_errors: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
