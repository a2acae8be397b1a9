#!/usr/bin/env bash
# test_cli.sh: the pmoe command as a user meets it.
#
# Every kind of bad input ends with exit != 0 and ONE line on stderr naming
# the key or file and the problem; a good run prints progress, a summary, a
# JSON result as its last line with --json, and one JSON object per epoch
# with --log. Usage: test_cli.sh PATH/TO/pmoe
set -u
PMOE=${1:?usage: test_cli.sh PATH/TO/pmoe}
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
passed=0 failed=0

ok() { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL: $*"; }

# expect_error NEEDLE ARGS...: exits non-zero, one stderr line containing NEEDLE.
expect_error() {
  local needle=$1; shift
  "$PMOE" "$@" >"$TMP/out" 2>"$TMP/err"
  local rc=$? lines
  lines=$(wc -l <"$TMP/err")
  if [ $rc -eq 0 ]; then bad "pmoe $* exited 0 (wanted an error about '$needle')"; return; fi
  if ! grep -qF -- "$needle" "$TMP/err"; then
    bad "pmoe $*: stderr lacks '$needle': $(cat "$TMP/err")"; return
  fi
  if [ "$lines" -ne 1 ]; then bad "pmoe $*: $lines stderr lines, wanted 1"; return; fi
  ok
}

SYN=(--set data.source=synthetic --set data.train_size=40 --set data.test_size=20 --set train.epochs=1)

# Config errors.
expect_error "unknown key 'model.nope'" train --set model.nope=3
expect_error "model.topl = 17 exceeds the 16 patches" train "${SYN[@]}" --set model.topl=17
expect_error "model.experts" train --set model.experts=0
expect_error "model.hidden = 40 is not divisible by model.experts = 3" train --set model.experts=3
expect_error "model.patch = 5 does not divide" train "${SYN[@]}" --set model.patch=5
expect_error "data.pos_class" train --set data.pos_class=11
expect_error "unknown argument '--frobnicate'" train --frobnicate
expect_error "unknown command 'fly'" fly
printf '[model]\nexperts = 4\ndepth = 2\n' >"$TMP/bad.ini"
expect_error "bad.ini:3: unknown key 'model.depth'" train --config "$TMP/bad.ini"
# The deep models' settings (checked before any data is read).
WRN=(--set model.type=wrn_pmoe --set model.width=1)
expect_error "model.expert_kernel = 2 (1 or 3)" train "${WRN[@]}" --set model.expert_kernel=2
expect_error "model.experts = 3 does not divide the pMoE layer's 64 channels" train "${WRN[@]}" --set model.experts=3
expect_error "train.mode = separate is defined for the two-layer models only" train "${WRN[@]}" --set train.mode=separate --set model.experts=2
expect_error "model.moe_impl" train "${WRN[@]}" --set model.moe_impl=masked
if [ -d /usr/share/datasets/fashion-mnist ]; then
  NOISY=(--set data.source=noisy --set data.train_size=20 --set data.test_size=10)
  expect_error "model.topl = 65 exceeds the 64 patches of the 8x8 feature map" train "${WRN[@]}" "${NOISY[@]}" --set model.patch=1 --set model.topl=65
  expect_error "model.patch = 3 does not divide the 8x8 feature map" train "${WRN[@]}" "${NOISY[@]}" --set model.patch=3
  # A deep model resumes bit for bit (batch-norm running statistics and
  # velocities travel in the checkpoint): two epochs whole, or one and a resume.
  DEEP=("${WRN[@]}" "${NOISY[@]}" --set data.train_size=64 --set train.batch=16 --set train.momentum=0.9
        --set model.experts=4 --set model.topl=4 --set train.threads=2 --json --quiet)
  whole=$("$PMOE" train "${DEEP[@]}" --set train.epochs=2 --set train.checkpoint_dir="$TMP/deep-a" | tail -1 | grep -o '"test_acc":[^,]*,"train_loss":[^,]*')
  "$PMOE" train "${DEEP[@]}" --set train.epochs=1 --set train.checkpoint_dir="$TMP/deep-b" --set train.checkpoint_every=100 >/dev/null
  resumed=$("$PMOE" train --resume "$TMP/deep-b" --set train.epochs=2 --json --quiet | tail -1 | grep -o '"test_acc":[^,]*,"train_loss":[^,]*')
  if [ -n "$whole" ] && [ "$whole" = "$resumed" ]; then ok; else bad "wrn_pmoe resume: '$whole' against '$resumed'"; fi
  expect_error "needs an input side divisible by 4" train "${WRN[@]}" --set data.source=idx --set data.train_size=20 --set data.test_size=10 --set data.image_size=30
fi
expect_error "cannot open config" train --config "$TMP/missing.ini"
# A missing --config file is a config error: exit 2, as README says.
"$PMOE" train --config "$TMP/missing.ini" >/dev/null 2>&1
rc=$?; if [ $rc -eq 2 ]; then ok; else bad "missing --config exited $rc, wanted 2"; fi
# Integer keys print their range as integers.
expect_error "model.topl = 0 is out of range [1, 1048576]" train --set model.topl=0
# --version: the release, the commit baked in at build time, the backends.
if "$PMOE" --version | grep -Eq '^pmoe [0-9]+\.[0-9]+\.[0-9]+ \(commit ([0-9a-f]{7,}|unknown)(\+changes)?\); backends: cpu'; then
  ok; else bad "pmoe --version: $("$PMOE" --version 2>&1)"; fi
# ... and that commit is one of this repository's (HEAD when freshly built;
# an older one when commits came after the build, which is not an error).
built=$("$PMOE" --version | sed -n 's/.*(commit \([0-9a-f]*\).*/\1/p')
if git -C "$(dirname "$0")" rev-parse HEAD >/dev/null 2>&1 &&
   ! git -C "$(dirname "$0")" cat-file -e "${built:-none}^{commit}" 2>/dev/null; then
  bad "pmoe --version names '$built', which is no commit of this repository"
else ok; fi

# Data errors: a missing dataset, a truncated file, a wrong magic, a gzip error.
expect_error "/nonexistent/data" train --set data.source=mosaic --set data.path=/nonexistent/data
mkdir -p "$TMP/idx"
# A valid 2-image IDX header, then build broken variants of it.
"$PY" - "$TMP/idx" <<'PYEOF'
import gzip, os, struct, sys
d = sys.argv[1]
def images(n): return struct.pack('>BBBBIII', 0, 0, 8, 3, n, 28, 28) + bytes(range(256)) * (n * 784 // 256) + bytes(n * 784 % 256)
def labels(n): return struct.pack('>BBBBI', 0, 0, 8, 1, n) + bytes(i % 10 for i in range(n))
for split in ('train', 't10k'):
    open(os.path.join(d, f'{split}-labels-idx1-ubyte'), 'wb').write(labels(20))
    open(os.path.join(d, f'{split}-images-idx3-ubyte'), 'wb').write(images(20))
PYEOF
cp -r "$TMP/idx" "$TMP/trunc"; head -c 5000 "$TMP/idx/train-images-idx3-ubyte" >"$TMP/trunc/train-images-idx3-ubyte"
expect_error "truncated" train --set data.source=idx --set data.path="$TMP/trunc" --set data.train_size=10
cp -r "$TMP/idx" "$TMP/magic"; printf '\x01\x02' | dd of="$TMP/magic/train-images-idx3-ubyte" conv=notrunc status=none
expect_error "train-images-idx3-ubyte" train --set data.source=idx --set data.path="$TMP/magic" --set data.train_size=10
cp -r "$TMP/idx" "$TMP/gz"; gzip -c "$TMP/idx/train-images-idx3-ubyte" | head -c 300 >"$TMP/gz/train-images-idx3-ubyte.gz"
rm "$TMP/gz/train-images-idx3-ubyte"
expect_error "train-images-idx3-ubyte.gz" train --set data.source=idx --set data.path="$TMP/gz" --set data.train_size=10
# A NaN stops training and names the step.
expect_error "step 3" train "${SYN[@]}" --set train.epochs=2 --set train.fault_nan_step=3

# A good run: progress, summary, --json last line, --log per epoch.
if "$PMOE" train "${SYN[@]}" --set train.epochs=3 --json --log "$TMP/log.jsonl" >"$TMP/out" 2>"$TMP/err"; then
  if "$PY" - "$TMP/out" "$TMP/log.jsonl" <<'PYEOF'
import json, sys
out = open(sys.argv[1]).read().splitlines()
res = json.loads(out[-1])
for key in ('test_acc', 'train_loss', 'steps', 'seconds', 'model', 'params', 'router_recall'):
    assert key in res, f'result lacks {key}'
assert res['model'] == 'pmoe' and res['steps'] == 3 * 2 and 0 <= res['test_acc'] <= 1, res
assert any(line.startswith('done:') for line in out), 'no summary line'
log = [json.loads(l) for l in open(sys.argv[2])]
assert [e['epoch'] for e in log] == [1, 2, 3], log
for e in log:
    for key in ('train_loss', 'lr', 'train_acc', 'test_acc', 'router_recall', 'seconds',
                'phase_seconds', 'step_seconds', 'expert_load_position', 'expert_load_class'):
        assert key in e, f'log lacks {key}'
    assert len(e['expert_load_position']) == 8, 'one load row per expert'
    for row in e['expert_load_position']:
        assert sum(row) == e['load_samples'] * 6, 'each expert takes l = 6 patches per sample'
    phases = e['phase_seconds']
    assert 'gate_topl' in phases and 'experts_forward' in phases and 'optimizer' in phases, phases
PYEOF
  then ok; else bad "the --json result or the --log lines are wrong"; fi
else
  bad "a good run failed: $(cat "$TMP/err")"
fi
# The CNN has no router, so no router_recall; `pmoe keys` lists every key.
if "$PMOE" train "${SYN[@]}" --set model.type=cnn --json --quiet | tail -1 | grep -q '"model":"cnn"' &&
   ! "$PMOE" train "${SYN[@]}" --set model.type=cnn --json --quiet | grep -q router_recall; then ok; else bad "cnn --json"; fi
if "$PMOE" keys | grep -q '^topl = 6$'; then ok; else bad "pmoe keys"; fi

# pmoe route: a PNG of what a checkpoint's experts pick; one line for each misuse.
CK=(--set train.checkpoint_every=1000000)
expect_error "route needs --out FILE.png" route --checkpoint "$TMP/none"
expect_error "route needs --checkpoint PATH" route --out "$TMP/r.png"
expect_error "--samples: expected an integer" route --checkpoint "$TMP/none" --out "$TMP/r.png" --samples 0
if "$PMOE" train "${SYN[@]}" "${CK[@]}" --set train.checkpoint_dir="$TMP/ck-route" --quiet 2>"$TMP/err" &&
   "$PMOE" route --checkpoint "$TMP/ck-route" --out "$TMP/route.png" --samples 2 >"$TMP/out" 2>"$TMP/err" &&
   grep -q "^wrote $TMP/route.png: [0-9]* x [0-9]* pixels" "$TMP/out" &&
   [ "$(head -c 8 "$TMP/route.png" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ]; then
  ok
else
  bad "pmoe route on a pMoE checkpoint: $(cat "$TMP/err")"
fi
expect_error "$TMP/no-such-folder/r.png: cannot create" route --checkpoint "$TMP/ck-route" --out "$TMP/no-such-folder/r.png"
if "$PMOE" train "${SYN[@]}" "${CK[@]}" --set model.type=cnn --set train.checkpoint_dir="$TMP/ck-cnn" --quiet 2>"$TMP/err"; then
  expect_error "has no router to draw" route --checkpoint "$TMP/ck-cnn" --out "$TMP/cnn.png"
  if [ ! -e "$TMP/cnn.png" ]; then ok; else bad "route on a CNN left $TMP/cnn.png"; fi
else
  bad "cnn checkpoint run: $(cat "$TMP/err")"
fi

# pmoe predict: one line (or JSON object) per image, by the checkpoint's input.
"$PMOE" predict >/dev/null 2>&1
if [ $? -eq 2 ]; then ok; else bad "pmoe predict without arguments: not exit 2"; fi
expect_error "unknown argument '--frob'" predict --frob
expect_error "does not describe its input" predict --checkpoint "$TMP/ck-route" "$TMP/idx/t10k-images-idx3-ubyte"
IDX=(--set data.source=idx --set data.path="$TMP/idx" --set data.train_size=20 --set data.test_size=20 --set train.epochs=1)
if "$PMOE" train "${IDX[@]}" "${CK[@]}" --set train.checkpoint_dir="$TMP/ck-idx" --quiet 2>"$TMP/err" &&
   "$PMOE" predict --json --checkpoint "$TMP/ck-idx" "$TMP/idx/t10k-images-idx3-ubyte" >"$TMP/pred" 2>"$TMP/err" &&
   "$PY" - "$TMP/pred" <<'PYEOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert len(rows) == 20, len(rows)
for i, r in enumerate(rows):
    assert r['file'].endswith(f't10k-images-idx3-ubyte[{i}]'), r
    assert r['class'] == str(r['index']) and 0 <= r['index'] < 10 and 0 < r['probability'] <= 1, r
PYEOF
then ok; else bad "pmoe predict on an IDX file: $(cat "$TMP/err")"; fi
expect_error "$TMP/none.png: cannot open" predict --checkpoint "$TMP/ck-idx" "$TMP/none.png"
# --route-out: the routing picture of the predicted images; never over a FIFO or a folder
if "$PMOE" predict --checkpoint "$TMP/ck-idx" --route-out "$TMP/pred.png" --samples 3 \
     "$TMP/idx/t10k-images-idx3-ubyte" >"$TMP/out" 2>"$TMP/err" &&
   [ "$(wc -l <"$TMP/out")" -eq 20 ] &&
   grep -q "^wrote $TMP/pred.png: [0-9]* x [0-9]* pixels, 3 of 20 images drawn" "$TMP/err" &&
   [ "$(head -c 8 "$TMP/pred.png" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ]; then ok
else bad "pmoe predict --route-out: $(cat "$TMP/err")"; fi
expect_error "--samples N counts the images --route-out draws" predict --checkpoint "$TMP/ck-idx" --samples 3 "$TMP/idx/t10k-images-idx3-ubyte"
mkfifo "$TMP/pred-fifo" && mkdir "$TMP/pred-dir.png"
expect_error "pred-fifo: is a FIFO, not a regular file; not replaced" predict --checkpoint "$TMP/ck-idx" --route-out "$TMP/pred-fifo" "$TMP/idx/t10k-images-idx3-ubyte"
expect_error "pred-dir.png: is a folder, not a regular file" predict --checkpoint "$TMP/ck-idx" --route-out "$TMP/pred-dir.png" "$TMP/idx/t10k-images-idx3-ubyte"
if [ -p "$TMP/pred-fifo" ] && [ -z "$(ls -A "$TMP/pred-dir.png")" ]; then ok; else bad "predict --route-out replaced a FIFO or wrote into a folder"; fi

# train --per-class: the final evaluation's figures (binary: classes -1 and +1), in --json too
if "$PMOE" train "${SYN[@]}" --per-class --json >"$TMP/out" 2>"$TMP/err" &&
   grep -q "^per class (accuracy" "$TMP/out" &&
   tail -1 "$TMP/out" | "$PY" -c '
import json, sys
j = json.loads(sys.stdin.read())
m = j["confusion"]
assert [r["class"] for r in j["per_class"]] == ["-1", "+1"] and sum(map(sum, m)) == 20, j
assert abs((m[0][0] + m[1][1]) / 20 - j["test_acc"]) < 1e-6, j'; then ok
else bad "pmoe train --per-class --json: $(cat "$TMP/err")"; fi
# eval --per-class: a row per class and the confusion matrix, in --json too; --out draws it
if "$PMOE" eval --checkpoint "$TMP/ck-idx" --per-class --json --out "$TMP/confusion.png" \
     >"$TMP/out" 2>"$TMP/err" &&
   grep -q "^wrote $TMP/confusion.png$" "$TMP/out" &&
   grep -q "^confusion matrix (rows: the true class, columns: the predicted class" "$TMP/out" &&
   tail -1 "$TMP/out" | "$PY" -c '
import json, sys
j = json.loads(sys.stdin.read())
m, n = j["confusion"], j["test_size"]
assert len(m) == 10 and all(len(r) == 10 for r in m) and sum(map(sum, m)) == n, m
assert abs(sum(m[i][i] for i in range(10)) / n - j["test_acc"]) < 1e-6, j
assert [r["samples"] for r in j["per_class"]] == [sum(r) for r in m], j["per_class"]' &&
   [ "$(head -c 8 "$TMP/confusion.png" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ]; then ok
else bad "pmoe eval --per-class --json --out: $(cat "$TMP/err")"; fi
expect_error "pred-fifo: is a FIFO, not a regular file; not replaced" eval --checkpoint "$TMP/ck-idx" --out "$TMP/pred-fifo"
if "$PMOE" eval --checkpoint "$TMP/ck-idx" --no-progress >"$TMP/out" 2>"$TMP/err" &&
   grep -q "^eval: test set  0/20$" "$TMP/err"; then ok
else bad "eval progress: $(cat "$TMP/err")"; fi

echo "test_cli: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
