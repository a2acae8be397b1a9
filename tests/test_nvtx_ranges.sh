#!/usr/bin/env bash
# test_nvtx_ranges.sh: the NVTX ranges Nsight Systems would show, checked
# without Nsight. The real CLI trains a few steps with tests/nvtx_recorder.c
# injected (NVTX_INJECTION64_PATH), which writes each push and pop to a file
# (format in its header); awk then checks that
#   - pushes and pops balance on every thread, and all ranges are in the
#     domain "pmoe" on the thread that runs the training loop;
#   - the step ranges' payloads count 1, 2, 3, ... across epochs and phases,
#     and a checkpoint's range carries the step it saves;
#   - every phase of a step is a range inside its step, with the payload
#     docs/profiling.md promises: the samples for data/patch/gate/combine/
#     loss and their backwards, B*l (patches per expert) for dispatch and
#     the experts (B is the step's batch, smaller in an epoch's last step);
#   - train.profile_steps = A:B: a profile_start range just before step A
#     and a profile_stop just after step B (where the device profiler's
#     capture starts and stops), once each;
#   - WRN-pMoE: "expert <s>" (and "expert <s> backward") once per expert per
#     forward (backward) inside the experts' phase, payload that expert's
#     patch count B*l; in evaluation they cover the test set once.
# Two-layer data is the synthetic model and WRN-pMoE's a handful of IDX
# images made here, so no dataset is needed. Under a second on 2 cores.
# Usage: test_nvtx_ranges.sh PATH/TO/pmoe PATH/TO/libnvtx_recorder.so
# (PMOE_TEST_DEVICE=cuda runs the same checks on a GPU.)
set -u
PMOE=${1:?usage: test_nvtx_ranges.sh PATH/TO/pmoe PATH/TO/libnvtx_recorder.so}
RECORDER=${2:-}
if [ -z "$RECORDER" ] || [ ! -f "$RECORDER" ]; then
  echo "SKIP: no NVTX recorder library ('$RECORDER'): build the nvtx_recorder target (needs the NVTX 3 headers)"
  exit 77
fi
DEVICE=${PMOE_TEST_DEVICE:-cpu}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
failed=0

# record NAME ARGS...: trains under the recorder; the ranges land in $TMP/NAME.nvtx.
record() {
  local name=$1; shift
  if ! NVTX_INJECTION64_PATH=$RECORDER PMOE_NVTX_RECORD=$TMP/$name.nvtx \
       "$PMOE" train --quiet --set train.device="$DEVICE" --set train.threads=2 "$@" \
       >"$TMP/$name.out" 2>&1; then
    echo "FAIL: $name: pmoe train $* failed: $(tail -3 "$TMP/$name.out")"
    failed=$((failed + 1)); return 1
  fi
  if ! grep -q '^push ' "$TMP/$name.nvtx" 2>/dev/null; then
    echo "FAIL: $name: expected ranges in $TMP/$name.nvtx, saw none (was the recorder loaded? $(head -c 300 "$TMP/$name.out"))"
    failed=$((failed + 1)); return 1
  fi
}

# check NAME VAR=VALUE...: the checks above on $TMP/NAME.nvtx. Variables:
# need (phases every step must hold), per_sample / per_expert (phases whose
# payload must be B / B*topl where they appear), train_size and batch (for
# B; 0: do not check payloads), topl, experts (>0: expect expert ranges),
# test_size, want_steps, want_checkpoints.
check() {
  local name=$1; shift
  local vars=() v
  for v in "$@"; do vars+=(-v "$v"); done
  if ! awk -v run="$name" "${vars[@]}" "$CHECKS" "$TMP/$name.nvtx"; then
    failed=$((failed + 1))
  fi
}

CHECKS='
function fail(msg) { if (++bad <= 20 || ending) print "FAIL: " run ": " msg }
function message(   i, s) { s = $6; for (i = 7; i <= NF; i++) s = s " " $i; return s }
function value(p) { sub(/^u64:/, "", p); return p }
# Patches per sample each expert computes on: l, or n in the dense-masked form.
function computes() { return expert_load > 0 ? expert_load : topl }
# The batch of main-phase step s (1-based): the last of an epoch may be short.
function batch_of(s,   per_epoch, i) {
  per_epoch = int((train_size + batch - 1) / batch)
  i = (s - 1) % per_epoch
  return i < per_epoch - 1 ? batch : train_size - i * batch
}
# The phases of the step so far, repeats folded: "data layers_forward*19 ...".
function phase_list(   i, s) {
  for (i = 1; i <= nphases; i++) s = s " " phase[i] (times[i] > 1 ? "*" times[i] : "")
  return s
}
function end_step(   i, n, names, phases) {
  if (!step) return
  phases = phase_list()
  n = split(need, names, " ")
  for (i = 1; i <= n; i++)
    if (!((names[i]) in seen))
      fail("step " step ": expected a \"" names[i] "\" range inside it, saw: " phases)
  if (experts > 0 && forwards[step] < 1)
    fail("step " step ": expected the experts as \"expert <s>\" ranges, saw none")
  delete seen; nphases = 0
}
# The expert ranges of one experts phase (or evaluation batch) were ids
# 0..experts-1 once each, in order, with equal payloads: returns the payload.
function expert_group(what, ids, loads, count,   s, list) {
  for (s = 0; s < count; s++) list = list " " ids[s] "=" loads[s]
  if (count != experts) { fail(what ": expected " experts " expert ranges, saw " count ":" list); return -1 }
  for (s = 0; s < count; s++)
    if (ids[s] != s || loads[s] != loads[0]) {
      fail(what ": expected expert 0.." experts - 1 " in order with one payload, saw" list); return -1
    }
  return loads[0]
}
function close_group(   load) {
  if (!group_open) return
  load = expert_group(group_what, gid, gload, gcount)
  if (load >= 0 && group_in == "eval") eval_patches += load
  else if (load >= 0 && load != group_want)
    fail(group_what ": expected each expert payload u64:" group_want " (B*" computes() " = " group_b "*" computes() "), saw u64:" load)
  group_open = 0; gcount = 0
}
BEGIN { gcount = 0 } # an index: unset it would be "", not 0
/^#/ { next }
$1 == "stream" { s = $4; for (i = 5; i <= NF; i++) s = s " " $i; streams = streams "|" s "|" }
$1 == "push" || $1 == "pop" {
  key = $2 " " $3
  if (!trainer && $1 == "push" && message() == "step") trainer = $2
  if ($3 != "pmoe") fail("line " NR ": expected every range in the domain pmoe, saw \"" $0 "\"")
  if (trainer && $2 != trainer) fail("line " NR ": expected every range on the training thread " trainer ", saw thread " $2 ": " $0)
}
$1 == "push" {
  name = message(); d = ++depth[key]; open_name[key, d] = name
  parent = d > 1 ? open_name[key, d - 1] : ""
  if (name == "step") {
    end_step()
    steps++; step = value($5)
    if (d != 1) fail("step " step ": expected at depth 1, saw depth " d)
    if (step != steps) fail("step range #" steps ": expected payload u64:" steps ", saw " $5)
    b = train_size > 0 ? batch_of(steps) : 0
    if (profile_next != "" && step != profile_next)
      fail("profile_start (u64:" profile_next "): expected the next step range to be that step, saw step " step)
    profile_next = ""
  } else if (name == "profile_start" || name == "profile_stop") {
    if (d != 1) fail(name ": expected at depth 1 (between steps), saw depth " d)
    if (name == "profile_start") { starts++; profile_next = value($5) }
    else {
      stops++
      if (value($5) != steps) fail("profile_stop (" $5 "): expected right after that step, saw it after step " steps)
    }
    profile_seen = profile_seen " " name ":" value($5)
  } else if (name == "checkpoint" && ++checkpoints && value($5) != steps) {
    fail("line " NR ": expected the checkpoint after step " steps " to carry u64:" steps ", saw " $5)
  } else if (parent == "step") {
    seen[name] = 1
    if (nphases && phase[nphases] == name) times[nphases]++
    else { phase[++nphases] = name; times[nphases] = 1 }
    if (b > 0 && index(" " per_sample " ", " " name " ") && value($5) != b)
      fail("step " step ", " name ": expected payload u64:" b " (the batch), saw " $5)
    if (b > 0 && index(" " per_expert " ", " " name " ") && value($5) != b * topl)
      fail("step " step ", " name ": expected payload u64:" b * topl " (B*l = " b "*" topl "), saw " $5)
    if (b > 0 && index(" " computed " ", " " name " ") && value($5) != b * computes())
      fail("step " step ", " name ": expected payload u64:" b * computes() " (B*" computes() " = " b "*" computes() "), saw " $5)
  }
  if (name ~ /^expert [0-9]+( backward)?$/) {
    if (experts <= 0) { fail("line " NR ": expected no expert ranges in this model, saw \"" name "\""); next }
    want_parent = name ~ /backward$/ ? "experts_backward" : "experts_forward"
    if (parent != want_parent && parent != "eval")
      fail("line " NR ": expected \"" name "\" inside " want_parent " or eval, saw it inside \"" parent "\"")
    split(name, w, " ")
    if (w[2] == 0) close_group() # the experts run again (the next evaluation batch)
    if (!group_open) {
      group_open = 1; group_in = parent; group_b = b; group_want = b * computes()
      group_what = parent == "eval" ? "eval" : "step " step " " parent
      if (parent == "experts_forward") forwards[step]++
      groups_here++
    }
    gid[gcount] = w[2]; gload[gcount] = value($5); gcount++
  } else {
    close_group()
    if (name == "experts_forward" || name == "experts_backward") groups_here = 0
  }
}
$1 == "pop" {
  if (depth[key] <= 0) { fail("line " NR ": pop with no range open on thread " $2 " (nesting would go negative)"); next }
  if ($4 != depth[key]) fail("line " NR ": the recorder counted depth " $4 " where the test counts " depth[key])
  closing = open_name[key, depth[key]]
  if (closing == "experts_forward" || closing == "experts_backward" || closing == "eval") close_group()
  if (experts > 0 && (closing == "experts_forward" || closing == "experts_backward") && groups_here != 1)
    fail("step " step " " closing ": expected its " experts " expert ranges once, saw them " groups_here " times")
  depth[key]--
}
END {
  ending = 1 # the summary failures below always print
  if (bad > 20) print "FAIL: " run ": (" bad - 20 " more failures not shown)"
  end_step(); close_group()
  for (k in depth) if (depth[k] != 0) {
    s = depth[k] > 8 ? " ..." : ""
    for (i = depth[k] > 8 ? depth[k] - 7 : 1; i <= depth[k]; i++) s = s " \"" open_name[k, i] "\""
    fail("thread/domain " k ": expected every range closed at exit, saw " depth[k] " open:" s)
  }
  if (steps != want_steps) fail("expected " want_steps " step ranges, saw " steps)
  if (want_stream != "" && index(streams, "|" want_stream "|") == 0)
    fail("expected a CUDA stream named \"" want_stream "\", saw:" (streams == "" ? " none" : " " streams))
  if (profile != "" && profile_seen != " profile_start:" substr(profile, 1, index(profile, ":") - 1) " profile_stop:" substr(profile, index(profile, ":") + 1))
    fail("train.profile_steps = " profile ": expected one profile_start and one profile_stop range at those steps, saw:" profile_seen)
  if (profile == "" && profile_seen != "") fail("expected no profile ranges, saw:" profile_seen)
  if (checkpoints + 0 != want_checkpoints + 0) fail("expected " want_checkpoints + 0 " checkpoint ranges, saw " checkpoints + 0)
  if (experts > 0 && test_size > 0 && eval_patches != test_size * computes())
    fail("eval: expected the expert ranges to cover the test set, " test_size "*" computes() " = " test_size * computes() " patches per expert, saw " eval_patches)
  if (!bad) printf "ok: %s: %d steps, ranges balanced, phases and payloads as documented\n", run, steps
  exit (bad > 0)
}'

# The CPU backend cuts out, scores and routes each sample's patches in one
# op (patch_extract_route), so its two-layer steps have no gate_topl range.
if [ "$DEVICE" = cpu ]; then ROUTE_PHASE=; else ROUTE_PHASE=gate_topl; fi
# On a GPU the backend names its stream (nvtxNameCudaStreamA).
if [ "$DEVICE" = cpu ]; then COMPUTE_STREAM=; else COMPUTE_STREAM="pmoe compute"; fi
TWO_LAYER_PHASES="data patch_extract $ROUTE_PHASE experts_forward combine loss combine_backward experts_backward gate_topl_backward nonfinite_check optimizer"
SAMPLE_PHASES="data patch_extract gate_topl combine loss combine_backward gate_topl_backward layers_forward layers_backward"
EXPERT_PHASES="dispatch experts_forward experts_backward"
# (per_expert: payload B*l; computed: B times the patches each expert computes on)

# Two-layer pMoE, joint: 50 samples in batches of 20 (the third step of
# each epoch has 10), two epochs, and a checkpoint range between steps.
if record two_layer --set data.source=synthetic --set data.train_size=50 --set data.test_size=20 \
     --set train.batch=20 --set train.epochs=2 --set model.topl=6 \
     --set train.checkpoint_every=2 --set train.checkpoint_dir="$TMP/ckpt" \
     --set train.profile_steps=2:4; then
  check two_layer want_steps=6 want_checkpoints=3 train_size=50 batch=20 topl=6 experts=0 profile=2:4 \
    "want_stream=$COMPUTE_STREAM" \
    "need=$TWO_LAYER_PHASES" "per_sample=$SAMPLE_PHASES" "per_expert=$EXPERT_PHASES"
fi

# The same with train.profile_experts: each expert's products in a range of
# its own inside the experts' phases (and in evaluation), payload B*l.
if record two_layer_experts --set data.source=synthetic --set data.train_size=50 \
     --set data.test_size=20 --set train.batch=20 --set train.epochs=1 --set model.topl=6 \
     --set model.experts=4 --set train.profile_experts=true; then
  check two_layer_experts want_steps=3 train_size=50 batch=20 topl=6 experts=4 test_size=20 \
    "need=data patch_extract gate_topl dispatch experts_forward combine loss combine_backward experts_backward gate_topl_backward nonfinite_check optimizer" \
    "per_sample=$SAMPLE_PHASES" "per_expert=$EXPERT_PHASES"
fi

# Separate training: the router's steps, then the main phase's, numbered on.
if record separate --set data.source=synthetic --set data.train_size=40 --set data.test_size=20 \
     --set train.mode=separate --set model.experts=2 --set model.topl=2 \
     --set train.router_epochs=1 --set train.router_batch=20 --set train.batch=20 --set train.epochs=1; then
  check separate want_steps=4 train_size=0 experts=0 "need=data patch_extract $ROUTE_PHASE loss optimizer"
fi

# WRN-pMoE (configs/wrn_pmoe_small.ini: k = 4, l = 16, 1x1 patches of an
# 8x8 map) on 24 made-up 28x28 IDX images (fixed text bytes: the ranges do
# not depend on the pixels, and the run is the same every time) padded to
# 32: 20 to train in batches of 8 (8, 8, 4), 12 to test. The sparse form,
# whose experts run on their B*l patches only.
byte() { printf "\\$(printf '%03o' "$1")"; }
mkdir -p "$TMP/idx"
for split in train t10k; do
  { printf '\0\0\010\003\0\0\0'; byte 24; printf '\0\0\0\034\0\0\0\034'; yes pmoe-nvtx | head -c $((24 * 784)); } \
    >"$TMP/idx/$split-images-idx3-ubyte"
  { printf '\0\0\010\001\0\0\0'; byte 24; for i in $(seq 0 23); do byte $((i % 10)); done; } \
    >"$TMP/idx/$split-labels-idx1-ubyte"
done
SRC=$(cd "$(dirname "$0")/.." && pwd)
if record wrn_pmoe --config "$SRC/configs/wrn_pmoe_small.ini" --set data.source=idx \
     --set data.path="$TMP/idx" --set data.image_size=32 --set data.train_size=20 \
     --set data.test_size=12 --set train.batch=8 --set train.epochs=1; then
  check wrn_pmoe want_steps=3 train_size=20 batch=8 topl=16 experts=4 test_size=12 \
    "need=data layers_forward patch_extract gate_topl dispatch experts_forward combine loss layers_backward combine_backward experts_backward gate_topl_backward nonfinite_check optimizer" \
    "per_sample=$SAMPLE_PHASES" "per_expert=$EXPERT_PHASES"
fi

# The dense-masked form: each expert computes on all n = 64 positions, so
# its ranges and the experts' phases carry B*n; the dispatch (the masks of
# the picks) still B*l.
if record wrn_dense --config "$SRC/configs/wrn_pmoe_small.ini" --set data.source=idx \
     --set data.path="$TMP/idx" --set data.image_size=32 --set data.train_size=20 \
     --set data.test_size=12 --set train.batch=8 --set train.epochs=1 \
     --set model.moe_impl=dense_masked; then
  check wrn_dense want_steps=3 train_size=20 batch=8 topl=16 expert_load=64 experts=4 test_size=12 \
    "need=data layers_forward patch_extract gate_topl dispatch experts_forward combine loss layers_backward combine_backward experts_backward gate_topl_backward nonfinite_check optimizer" \
    "per_sample=$SAMPLE_PHASES" "per_expert=dispatch" "computed=experts_forward experts_backward"
fi

if [ $failed -ne 0 ]; then echo "test_nvtx_ranges: $failed run(s) failed"; exit 1; fi
echo "test_nvtx_ranges: passed"
