#!/usr/bin/env bash
# test_cli_reporting.sh: nothing pmoe train does goes unsaid.
#
# - train.on_nonfinite = skip: the skipped steps are in the epoch line, the
#   summary, the --json result and the --log records;
# - data.source = auto with no IDX files in data.path: the first line says
#   so and that the synthetic model is used;
# - the summary's step count is --json's "steps", router steps apart;
# - separate training's banner names both epoch keys, and its router lines
#   say the loss is the linear one;
# - the summary names the saved model, or says how to keep it;
# - a NaN before any checkpoint says so in a sentence;
# - on a terminal the progress is a redrawn bar, and --no-progress makes it
#   plain lines (checked through a pty, so the test can see the bar);
# - the --log records carry the load grid's shape; bench --sweep says where
#   it writes; tools/bench_tables.py --help works.
# Usage: test_cli_reporting.sh PATH/TO/pmoe
set -u
PMOE=${1:?usage: test_cli_reporting.sh PATH/TO/pmoe}
PMOE=$(cd "$(dirname "$PMOE")" && pwd)/$(basename "$PMOE")
REPO=$(cd "$(dirname "$0")/.." && pwd)
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
cd "$TMP" || exit 1
passed=0 failed=0
ok() { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL: $*"; }

SYN=(--set data.source=synthetic --set data.train_size=40 --set data.test_size=20)

# Skipped steps: step 3 of 4 gets a NaN batch and is dropped.
if "$PMOE" train "${SYN[@]}" --set train.epochs=2 --set train.on_nonfinite=skip \
    --set train.fault_nan_step=3 --json --log skip.jsonl >skip.out 2>skip.err; then
  if "$PY" - skip.out skip.jsonl <<'PYEOF'
import json, sys
out = open(sys.argv[1]).read().splitlines()
res = json.loads(out[-1])
assert res['skipped_steps'] == 1, res
epochs = [l for l in out if l.startswith('train  epoch')]
assert 'skipped' not in epochs[0] and 'skipped 1' in epochs[1], epochs
assert any(l.startswith('1 step skipped for a non-finite') for l in out), out
log = [json.loads(l) for l in open(sys.argv[2])]
assert [e['skipped_steps'] for e in log] == [0, 1], log
# the load grid's shape, for tools/plot_metrics.py: the synthetic model's 16 patches in a row
assert (log[-1]['grid_rows'], log[-1]['grid_cols']) == (1, 16), log[-1]
PYEOF
  then ok; else bad "skipped steps not reported: $(cat skip.out)"; fi
else bad "the skip run failed: $(cat skip.err)"; fi
# A run with nothing skipped says 0 in --json and nothing in words.
"$PMOE" train "${SYN[@]}" --set train.epochs=1 --json >clean.out 2>&1
if tail -1 clean.out | grep -q '"skipped_steps":0' && ! grep -q skipped <(head -n -1 clean.out); then ok
else bad "a clean run: $(cat clean.out)"; fi

# data.source = auto with a mistyped path: the first line says so.
"$PMOE" train --set data.path="$TMP/no-such-data" --set data.train_size=40 --set data.test_size=20 \
  --set train.epochs=1 >auto.out 2>&1
if [ "$(head -1 auto.out)" = "pmoe: no IDX files in $TMP/no-such-data: using the synthetic data model (data.source = auto)" ]; then ok
else bad "auto fallback: first line '$(head -1 auto.out)'"; fi

# Separate training: banner, router loss, step counts as in --json.
"$PMOE" train "${SYN[@]}" --set train.mode=separate --set model.experts=2 --set model.topl=2 \
  --set train.epochs=2 --set train.router_epochs=3 --json >sep.out 2>&1
steps=$(tail -1 sep.out | grep -o '"steps":[0-9]*' | cut -d: -f2)
rsteps=$(tail -1 sep.out | grep -o '"router_steps":[0-9]*' | cut -d: -f2)
if [ -n "$steps" ] && grep -q "^done: .*, $steps steps (and $rsteps router steps) in" sep.out; then ok
else bad "separate: the summary's steps disagree with --json ($steps, $rsteps): $(grep '^done' sep.out)"; fi
if grep -q "3 epochs (train.router_epochs)" sep.out && grep -q "2 epochs (train.epochs)" sep.out &&
   grep -q "^router epoch   1/3  linear loss" sep.out; then ok
else bad "separate: banner or router lines: $(head -8 sep.out)"; fi
"$PMOE" train "${SYN[@]}" --set train.epochs=1 >joint.out 2>&1
if grep -q "^      1 epochs (train.epochs)" joint.out && grep -q "^done: .*, 2 steps in" joint.out; then ok
else bad "joint: banner or summary: $(cat joint.out)"; fi

# Where the model is, or how to keep it.
if grep -q "^model not saved: add --set train.checkpoint_every=N" joint.out; then ok
else bad "the default run does not say how to keep the model"; fi
"$PMOE" train "${SYN[@]}" --set train.epochs=1 --set train.checkpoint_every=1000 \
  --set train.checkpoint_dir=ck >saved.out 2>&1
if grep -q "^model saved: ck/step-0*2.safetensors$" saved.out; then ok
else bad "a saving run does not name its checkpoint: $(grep model saved.out)"; fi

# A NaN before any checkpoint: a sentence, not "is none".
"$PMOE" train "${SYN[@]}" --set train.epochs=2 --set train.fault_nan_step=3 >nan.out 2>nan.err
if grep -q "no checkpoint was written before it$" nan.err && ! grep -q "is none" nan.err; then ok
else bad "NaN message: $(cat nan.err)"; fi

# A pty: the bar with its '\r' and escape codes, and none with --no-progress.
pty_run() {
  "$PY" - "$@" <<'PYEOF'
import os, pty, sys
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
data = b''
while True:
    try:
        chunk = os.read(fd, 4096)
    except OSError:
        break
    if not chunk:
        break
    data += chunk
os.waitpid(pid, 0)
data = data.replace(b'\r\n', b'\n')  # the pty's own newline translation
sys.stdout.write('bar' if (b'\r' in data or b'\x1b' in data) else 'plain')
PYEOF
}
if [ "$(pty_run "$PMOE" train "${SYN[@]}" --set train.epochs=1)" = bar ]; then ok
else bad "no progress bar on a terminal (the pty check cannot see one)"; fi
if [ "$(pty_run "$PMOE" train "${SYN[@]}" --set train.epochs=1 --no-progress)" = plain ]; then ok
else bad "--no-progress still draws a bar"; fi
if [ "$(OMPI_COMM_WORLD_SIZE=1 OMPI_COMM_WORLD_RANK=0 pty_run "$PMOE" train "${SYN[@]}" \
        --set train.epochs=1 --set train.comm=single)" = plain ]; then ok
else bad "under an MPI launcher's variables the bar is still drawn"; fi

# bench --sweep says where it writes before it runs.
"$PMOE" bench --set data.source=synthetic --set data.train_size=40 --set data.test_size=8 \
  --set data.synthetic_dim=16 --set model.experts=4 --set model.hidden=8 --set train.batch=10 \
  --set train.threads=1 --set bench.warmup=1 --set bench.repeats=1 --set bench.sgemm_size=0 \
  --sweep model.topl=1,2 --out sweep >sweep.out 2>&1
if [ "$(head -1 sweep.out)" = "pmoe: bench --sweep model.topl: writing sweep/sweep-model.topl.{csv,jsonl,png}" ] &&
   [ -s sweep/sweep-model.topl.csv ]; then ok
else bad "bench --sweep: $(head -3 sweep.out)"; fi
# bench says what it does on stderr, stdout staying the result: plain lines
# per target off a terminal, a bar on one, nothing with --quiet.
BENCH=(--set data.source=synthetic --set data.train_size=40 --set data.test_size=8
       --set data.synthetic_dim=16 --set model.experts=4 --set model.hidden=8 --set train.batch=10
       --set train.threads=1 --set bench.warmup=1 --set bench.repeats=1 --set bench.sgemm_size=0)
"$PMOE" bench "${BENCH[@]}" --json >bench.out 2>bench.err
if grep -q "^bench: pmoe: train steps  0/10$" bench.err &&
   grep -q "^bench: cnn: profiled train steps  9/10  [0-9]* s, about [0-9]* s left$" bench.err &&
   tail -1 bench.out | "$PY" -c 'import json, sys; json.load(sys.stdin)'; then ok
else bad "bench progress off a terminal: $(cat bench.err)"; fi
"$PMOE" bench "${BENCH[@]}" --quiet >bench.out 2>bench.err
if [ ! -s bench.err ] && [ ! -s bench.out ]; then ok; else bad "bench --quiet printed: $(cat bench.err bench.out)"; fi
if [ "$(pty_run "$PMOE" bench "${BENCH[@]}")" = bar ]; then ok
else bad "bench draws no progress bar on a terminal"; fi
if [ "$(pty_run "$PMOE" bench "${BENCH[@]}" --no-progress)" = plain ]; then ok
else bad "bench --no-progress still draws a bar"; fi
if grep -q "^bench: model.topl=2 (2/2): pmoe: train steps  10/20  " sweep.out; then ok
else bad "bench --sweep progress: $(cat sweep.out)"; fi
# tools/bench_tables.py --help answers (it used to read --help as a file name).
if "$PY" "$REPO/tools/bench_tables.py" --help | grep -q "^usage: bench_tables.py"; then ok
else bad "tools/bench_tables.py --help"; fi

echo "test_cli_reporting: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
