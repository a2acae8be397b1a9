#!/usr/bin/env bash
# device_check.sh: everything pmoe can learn from one call on a GPU machine
# (build, GPU tests, compute-sanitizer, nsys, benchmarks, the PyTorch peers),
# in stages with their own time limits that sum under 8 minutes.
#
# The two steps (README, "GPUs"): once, on a machine with the package registry,
#     tools/fetch_device_deps.sh          # Debian -dev packages into .deps/ (ignored by git)
# then on the GPU machine (for the device tool: command `bash tools/device_check.sh`,
# carry [".deps"], timeout_s 480):
#     bash tools/device_check.sh
#
# Results, in $OUT (default build-device/out): device_check.json, rewritten
# atomically before and after every stage (so a call cut off keeps what was
# measured: "running" names the stage it was in), and device_check.log (each
# stage's last lines; the whole logs stay in build-device/logs). Nothing else
# goes to $OUT: the device tool returns at most 8 files.
#
# Stages needing what the machine lacks (a GPU, CUDA in the build,
# compute-sanitizer, nsys, torch) are recorded as skipped with the reason, and
# the script still exits 0: the JSON is the verdict. A stage's status is ok,
# failed (exit N), timed out (after N s), skipped (reason).
#
# Options (for tests, and for a machine with no GPU):
#   --dry-run      check the plan (budgets sum under the limit), run no stage,
#                  write the JSON as every stage would
#   --no-gpu       behave as if no GPU answered
#   --skip-build   do not configure or build (stages needing the build are skipped)
#   --snapshots    also keep each JSON version in build-device/logs/json-NN-<stage>.json
# shellcheck disable=SC2317 # the stage functions are called by name (run_stage, bash -c)
set -uo pipefail
T0=$(date +%s)
cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD
LIMIT_S=470 # the whole run: under the device tool's 480 s call
DRY_RUN=0 NO_GPU=0 SKIP_BUILD=0 SNAPSHOTS=0
for a in "$@"; do
  case $a in
    --dry-run) DRY_RUN=1 ;;
    --no-gpu) NO_GPU=1 ;;
    --skip-build) SKIP_BUILD=1 ;;
    --snapshots) SNAPSHOTS=1 ;;
    *) echo "device_check: unknown option $a (see the header of $0)" >&2; exit 2 ;;
  esac
done

# name, budget in seconds (a stage's most: one that ends early leaves the rest
# unused, one that overruns is stopped), what it needs (gpu: a GPU answers;
# configured: the configure stage succeeded; cuda: the build succeeded with
# the CUDA backend; sanitizer: compute-sanitizer;
# nsys; torch: $PY imports torch). In the order they run.
PLAN=(
  "locate 15 -"
  "deps 10 -"
  "configure 25 -"
  "build 150 configured"
  "gpu_tests 40 gpu,cuda"
  "gpu_tests_blocking 25 gpu,cuda"
  "memcheck 25 gpu,cuda,sanitizer"
  "racecheck 20 gpu,cuda,sanitizer"
  "synccheck 15 gpu,cuda,sanitizer"
  "nsys 15 gpu,cuda,nsys"
  "gpu_bench 20 gpu,cuda"
  "deep_bench 25 gpu,cuda"
  "torch_two_layer 25 gpu,torch"
  "torch_wrn 35 gpu,torch"
)
BUDGET_SUM=0
for s in "${PLAN[@]}"; do read -r _ b _ <<<"$s"; BUDGET_SUM=$((BUDGET_SUM + b)); done
if [ "$BUDGET_SUM" -gt "$LIMIT_S" ]; then
  echo "device_check: the stage budgets sum to $BUDGET_SUM s, over the $LIMIT_S s limit" >&2
  exit 2
fi

export OUT=${OUT:-$ROOT/build-device/out} # build-device/ is ignored by git
export BUILD=${PMOE_DEVICE_BUILD:-$ROOT/build-device}
export LOGDIR=$BUILD/logs
export PY=${PYTHON:-python3}
mkdir -p "$OUT" "$LOGDIR"
rm -f "$LOGDIR"/*.log "$LOGDIR"/*.json "$LOGDIR"/*.results "$LOGDIR"/*.detail "$LOGDIR"/*.out \
  "$LOGDIR"/*.txt "$LOGDIR"/stages.tsv
LOG=$OUT/device_check.log
: >"$LOG"
: >"$LOGDIR/stages.tsv"
say() { echo "$*" | tee -a "$LOG"; }
export GPU_NAME="" DRIVER="" NVCC_VERSION="" TORCH="" GPU_REASON="" SANITIZER="" NSYS=""
RUNNING="" SNAP=0 FINISHED=0 PHASE=start

# The JSON from the stage table and what the stages left in $LOGDIR.
write_json() {
  local tmp=$OUT/device_check.json.tmp
  if "$PY" - "$LOGDIR" "$tmp" "$RUNNING" "$(($(date +%s) - T0))" "$DRY_RUN" "$BUDGET_SUM" \
    "$LIMIT_S" "$FINISHED" "${PLAN[@]}" <<'EOF' 2>>"$LOG"; then
import datetime, json, os, re, sys
logdir, path, running, elapsed, dry, budget_sum, limit, finished = sys.argv[1:9]
plan = [p.split() for p in sys.argv[9:]]
def load(name):
    try:
        with open(os.path.join(logdir, name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
stages = {}
with open(os.path.join(logdir, "stages.tsv")) as f:
    for line in f:
        name, status, seconds, budget, detail = (line.rstrip("\n").split("\t") + [""] * 5)[:5]
        stages[name] = {"status": status, "seconds": int(seconds), "budget_s": int(budget)}
        if detail:
            stages[name]["detail"] = detail
for name, budget, needs in plan:
    stages.setdefault(name, {"status": "running" if name == running else "not reached",
                             "budget_s": int(budget), "needs": needs})
for tool in ("memcheck", "racecheck", "synccheck"):
    try:
        rows = [l.rstrip("\n").split("\t") for l in open(os.path.join(logdir, tool + ".results"))]
        stages[tool]["targets"] = {r[0]: {"exit": int(r[1]), "summary": r[2] if len(r) > 2 else ""}
                                   for r in rows if len(r) >= 2}
    except OSError:
        pass
build = {}
try:
    for line in open(os.path.join(os.path.dirname(logdir), "generated", "pmoe_build_config.h")):
        m = re.match(r'#define PMOE_BUILD_(\w+) "?([^"]*)"?', line)
        if m:
            build[m.group(1).lower()] = m.group(2)
except OSError:
    pass
env = lambda k: os.environ.get(k, "")
result = {
    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "dry_run": dry == "1", "finished": finished == "1", "running": running or None,
    "seconds": int(elapsed), "limit_s": int(limit), "budget_sum_s": int(budget_sum),
    "gpu": env("GPU_NAME") or None, "no_gpu_reason": env("GPU_REASON") or None,
    "driver": env("DRIVER") or None, "nvcc": env("NVCC_VERSION") or None,
    "torch": env("TORCH") or None, "compute_sanitizer": env("SANITIZER") or None,
    "nsys": env("NSYS") or None, "precision": "fp32 (TF32 off), pmoe and the torch peers",
    "build": build, "stages": stages, "gpu_tests": load("gpu_tests.json"),
    "gpu_tests_blocking": load("gpu_tests_blocking.json"), "bench": load("gpu_bench.json"),
    "deep_bench": load("deep_bench.json"), "torch_two_layer": load("torch_two_layer.json"),
    "torch_wrn": load("torch_wrn.json"),
}
with open(path, "w") as f:
    json.dump(result, f, indent=1)
EOF
    mv -f "$tmp" "$OUT/device_check.json"
    if [ "$SNAPSHOTS" = 1 ]; then
      SNAP=$((SNAP + 1))
      cp "$OUT/device_check.json" "$LOGDIR/json-$(printf %02d "$SNAP")-$PHASE.json"
    fi
  else
    say "device_check: could not write the JSON (python3: $PY)"
  fi
}

record() { # name status seconds budget detail
  printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "${5//$'\t'/ }" >>"$LOGDIR/stages.tsv"
  say "   -> $1: $2 (${3} s of ${4})${5:+: $5}"
}

# Why a stage cannot run, or nothing.
missing() {
  local need
  for need in ${1//,/ }; do
    case $need in
      -) ;;
      configured) [ "${CONFIGURE_OK:-0}" = 1 ] || { echo "configure did not succeed"; return; } ;;
      gpu) [ -n "$GPU_REASON" ] && { echo "$GPU_REASON"; return; } ;;
      cuda)
        [ "$SKIP_BUILD" = 1 ] && { echo "no build (--skip-build)"; return; }
        [ "${BUILD_OK:-0}" = 1 ] || { echo "the build did not succeed"; return; }
        [ -x "$BUILD/tests/kernels/test_cuda_ops" ] ||
          { echo "the build has no CUDA backend (see configure in the log)"; return; } ;;
      sanitizer) [ -n "$SANITIZER" ] || { echo "no compute-sanitizer on this machine"; return; } ;;
      nsys) [ -n "$NSYS" ] || { echo "no nsys on this machine"; return; } ;;
      torch) [ -n "$TORCH" ] || { echo "no torch for $PY"; return; } ;;
    esac
  done
}

# run_stage NAME: the stage function stage_NAME, under its budget (and what is
# left of the whole limit), its output in $LOGDIR/NAME.log, the JSON written
# before and after.
BUILD_OK=0 CONFIGURE_OK=0
run_stage() {
  local name=$1 budget=0 needs=- s n b w why left t b0 rc status detail=""
  for s in "${PLAN[@]}"; do
    read -r n b w <<<"$s"
    [ "$n" = "$name" ] && budget=$b && needs=$w
  done
  say ""
  say "== $name (budget $budget s, at $(($(date +%s) - T0)) s)"
  why=""
  [ "$DRY_RUN" = 1 ] || why=$(missing "$needs")
  [ "$name" = configure ] || [ "$name" = build ] && [ "$SKIP_BUILD" = 1 ] && why="--skip-build"
  if [ -n "$why" ]; then
    record "$name" "skipped" 0 "$budget" "$why"
    PHASE=after-$name
    write_json
    return
  fi
  left=$((LIMIT_S - ($(date +%s) - T0)))
  t=$((budget < left ? budget : left))
  if [ "$t" -lt 3 ]; then
    record "$name" "skipped" 0 "$budget" "out of time ($left s left of $LIMIT_S)"
    PHASE=after-$name
    write_json
    return
  fi
  RUNNING=$name PHASE=before-$name
  write_json
  b0=$(date +%s)
  if [ "$DRY_RUN" = 1 ]; then
    rc=dry
    detail="would run stage_$name under timeout $t"
  elif [ "$name" = locate ] || [ "$name" = deps ]; then
    # these set the environment of the later stages: run in this shell, so
    # not under timeout; each command in them has its own short one
    "stage_$name" >"$LOGDIR/$name.log" 2>&1
    rc=$?
  else
    STAGE_BUDGET=$t timeout -k 5 "$t" bash -c "stage_$name" >"$LOGDIR/$name.log" 2>&1
    rc=$?
  fi
  RUNNING=""
  case $rc in
    0) status=ok ;;
    dry) status="dry run" ;;
    77) status=skipped; detail=$(grep -m1 -i "skipped" "$LOGDIR/$name.log" | cut -c1-200) ;;
    124 | 137) status="timed out (after $t s)" ;;
    *) status="failed (exit $rc)" ;;
  esac
  [ "$name" = configure ] && [ "$rc" = 0 ] && CONFIGURE_OK=1
  [ "$name" = build ] && [ "$rc" = 0 ] && BUILD_OK=1
  [ -f "$LOGDIR/$name.log" ] && tail -40 "$LOGDIR/$name.log" | cut -c1-300 >>"$LOG"
  [ -f "$LOGDIR/$name.detail" ] && detail=$(head -c 300 "$LOGDIR/$name.detail")
  record "$name" "$status" "$(($(date +%s) - b0))" "$budget" "$detail"
  PHASE=after-$name
  write_json
}

# ---- the stages ------------------------------------------------------------
# locate: GPU, driver, nvcc, cuDNN and NCCL wheels, torch, compute-sanitizer, nsys.
stage_locate() {
  wheel_root() {
    timeout 5 "$PY" - "$1" 2>/dev/null <<'EOF'
import importlib.util, sys
s = importlib.util.find_spec('nvidia.' + sys.argv[1])
print(list(s.submodule_search_locations)[0] if s and s.submodule_search_locations else '')
EOF
  }
  CUDNN_ROOT=${CUDNN_ROOT:-$(wheel_root cudnn)}
  NCCL_ROOT=${NCCL_ROOT:-$(wheel_root nccl)}
  if ! command -v nvcc >/dev/null; then
    for d in /usr/local/cuda/bin /usr/local/cuda-13*/bin; do
      [ -x "$d/nvcc" ] && export PATH=$d:$PATH && break
    done
  fi
  NVCC_VERSION=$(timeout 10 nvcc --version 2>/dev/null | tail -1)
  echo "nvcc: $(command -v nvcc || echo 'not found') $NVCC_VERSION"
  echo "cuDNN: ${CUDNN_ROOT:-not found}   NCCL: ${NCCL_ROOT:-not found}"
  if [ "$NO_GPU" = 1 ]; then
    GPU_REASON="no GPU: --no-gpu given"
  elif ! command -v nvidia-smi >/dev/null; then
    GPU_REASON="no GPU: nvidia-smi not found (no NVIDIA driver on this machine)"
  else
    local q
    if ! q=$(timeout 15 nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>&1); then
      GPU_REASON="no GPU: nvidia-smi failed: $(echo "$q" | head -1 | cut -c1-200)"
    elif [ -z "$q" ]; then
      GPU_REASON="no GPU: nvidia-smi lists no device"
    else
      GPU_NAME=$(echo "$q" | head -1 | cut -d, -f1)
      DRIVER=$(echo "$q" | head -1 | cut -d, -f2 | tr -d ' ')
    fi
  fi
  echo "GPU: ${GPU_NAME:-none} ${DRIVER:+driver $DRIVER} ${GPU_REASON}"
  [ -z "$GPU_REASON" ] && ! command -v nvcc >/dev/null &&
    echo "nvcc not found: the build will have no CUDA backend"
  TORCH=$(timeout 20 "$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null)
  echo "torch: ${TORCH:-absent} ($PY)"
  SANITIZER=$(command -v compute-sanitizer || true)
  if [ -z "$SANITIZER" ] && command -v nvcc >/dev/null; then
    local c
    for c in "$(dirname "$(command -v nvcc)")/compute-sanitizer" \
      "$(dirname "$(command -v nvcc)")/../compute-sanitizer/compute-sanitizer"; do
      [ -x "$c" ] && SANITIZER=$c && break
    done
  fi
  NSYS=$(command -v nsys || true)
  echo "compute-sanitizer: ${SANITIZER:-none}; nsys: ${NSYS:-none}"
  echo "cmake: $(timeout 5 cmake --version 2>/dev/null | head -1); compiler: $(timeout 5 cc --version 2>/dev/null | head -1)"
  export CUDNN_ROOT NCCL_ROOT NVCC_VERSION GPU_REASON GPU_NAME DRIVER TORCH SANITIZER NSYS
}

# deps: the carried Debian packages (tools/fetch_device_deps.sh), used only
# for what the machine lacks.
ROOTS=()
stage_deps() {
  if ! ls .deps/*.deb >/dev/null 2>&1; then
    echo "no carried packages (.deps): the machine's own libraries must do"
    return 0
  fi
  # unpacked under the build folder, so .deps keeps only the .deb files
  mkdir -p "$BUILD/deps-root"
  local f z
  for f in .deps/*.deb; do timeout 10 dpkg -x "$f" "$BUILD/deps-root" || echo "cannot unpack $f"; done
  local deps=$BUILD/deps-root/usr multi=$BUILD/deps-root/usr/lib/x86_64-linux-gnu
  # zlib1g-dev links libz.so to an absolute /lib path of its own version
  if [ -L "$multi/libz.so" ] && [ ! -e "$multi/libz.so" ]; then
    for z in /lib/x86_64-linux-gnu/libz.so.1 /usr/lib/x86_64-linux-gnu/libz.so.1; do
      [ -e "$z" ] && ln -sf "$z" "$multi/libz.so" && break
    done
  fi
  have_header() { compgen -G "/usr/include/$1" >/dev/null || compgen -G "/usr/include/*/$1" >/dev/null ||
                  compgen -G "/usr/include/*/*/$1" >/dev/null; }
  have_header cblas.h || ROOTS+=("-DOPENBLAS_ROOT=$deps")
  have_header ini.h || ROOTS+=("-DINIH_ROOT=$deps")
  have_header cjson/cJSON.h || ROOTS+=("-DCJSON_ROOT=$deps")
  have_header png.h || ROOTS+=("-DPNG_ROOT=$deps")
  have_header zlib.h || ROOTS+=("-DZLIB_ROOT=$deps")
  # appended, so the machine's own libraries win where it has them
  export LD_LIBRARY_PATH=${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$multi:$multi/openblas-pthread
  echo "carried packages unpacked; used for: ${ROOTS[*]:-nothing}"
}

stage_configure() {
  local gen=()
  command -v ninja >/dev/null && gen=(-G Ninja)
  # shellcheck disable=SC2086 # PMOE_DC_ROOTS: the -D options of stage_deps, space-separated
  cmake -S . -B "$BUILD" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 \
    ${CUDNN_ROOT:+-DCUDNN_ROOT=$CUDNN_ROOT} ${NCCL_ROOT:+-DNCCL_ROOT=$NCCL_ROOT} $PMOE_DC_ROOTS
  local rc=$?
  grep -h "pmoe:" "$LOGDIR/configure.log" >"$LOGDIR/configure.detail" 2>/dev/null
  return "$rc"
}

stage_build() {
  cmake --build "$BUILD" -j"$(nproc)" 2>&1 | grep -vE '^\[[0-9]+/[0-9]+\] (Building|Linking)'
  return "${PIPESTATUS[0]}"
}

# ctest, its per-test outcome as JSON in $LOGDIR/<stage>.json
ctest_json() { # stage, then ctest's arguments
  local stage=$1
  shift
  ctest --test-dir "$BUILD" --output-on-failure --timeout 60 "$@"
  local rc=$?
  "$PY" - "$LOGDIR/$stage.log" "$LOGDIR/$stage.json" <<'EOF'
import json, re, sys
tests = {}
for line in open(sys.argv[1], errors="replace"):
    m = re.search(r"Test +#\d+: (\S+) [.*\s]*(Passed|Skipped|Failed|Timeout|Exception|Not Run)", line)
    if m:
        tests[m.group(1)] = m.group(2).lower()
json.dump({"tests": tests, "passed": sum(v == "passed" for v in tests.values()),
           "failed": sum(v not in ("passed", "skipped", "not run") for v in tests.values()),
           "skipped": sum(v in ("skipped", "not run") for v in tests.values())}, open(sys.argv[2], "w"))
EOF
  return "$rc"
}
# the GPU tests, the backend selection (which must pick the GPU here), and the
# NVTX ranges of a CUDA run as Nsight receives them (the recorder injected)
stage_gpu_tests() {
  ctest_json gpu_tests -L gpu
  local rc=$?
  ctest --test-dir "$BUILD" --output-on-failure -R '^test_backend_select$' || rc=1
  if [ -f "$BUILD/tests/libnvtx_recorder.so" ]; then
    PMOE_TEST_DEVICE=cuda bash tests/test_nvtx_ranges.sh "$BUILD/pmoe" "$BUILD/tests/libnvtx_recorder.so" || rc=1
  fi
  return "$rc"
}
# once more with every launch synchronous, so that a fault is reported at the
# launch that made it (stream capture may behave differently in this mode:
# the run above is the verdict on CUDA graphs)
stage_gpu_tests_blocking() { CUDA_LAUNCH_BLOCKING=1 ctest_json gpu_tests_blocking -L gpu; }

# compute-sanitizer TOOL over the kernel tests and a 20-step training run,
# each target with a share of the stage's budget; "target exit summary" rows.
train20() { # DIR, then a command that takes pmoe's path and arguments (e.g. the sanitizer)
  local dir=$1
  shift
  mkdir -p "$dir"
  "$@" "$BUILD/pmoe" train --quiet --set train.device=cuda --set data.source=synthetic \
    --set data.train_size=400 --set data.test_size=40 --set train.batch=20 --set train.epochs=1 \
    --set train.checkpoint_dir="$dir" --set train.profile_experts=true
}
sanitize() {
  local tool=$1 targets=(test_cuda_ops test_cuda_layers test_cuda_conv test_cuda_model train20)
  local share=$(((STAGE_BUDGET - 2) / ${#targets[@]})) target rc summary
  [ "$share" -lt 2 ] && share=2
  for target in "${targets[@]}"; do
    echo "-- $tool: $target (limit $share s)"
    if [ "$target" = train20 ]; then
      train20 "$BUILD/train20-$tool" timeout -k 3 "$share" "$SANITIZER" --tool "$tool" --error-exitcode 99
    else
      timeout -k 3 "$share" "$SANITIZER" --tool "$tool" --error-exitcode 99 "$BUILD/tests/kernels/$target"
    fi >"$LOGDIR/$tool-$target.out" 2>&1
    rc=$?
    summary=$(grep -m1 "ERROR SUMMARY\|RACECHECK SUMMARY" "$LOGDIR/$tool-$target.out" | cut -c1-150)
    [ "$rc" = 124 ] || [ "$rc" = 137 ] && summary="timed out after $share s${summary:+; $summary}"
    grep -E "^=========" "$LOGDIR/$tool-$target.out" | head -30
    printf '%s\t%s\t%s\n' "$target" "$rc" "$summary" >>"$LOGDIR/$tool.results"
  done
  # errors fail the stage; a target that timed out or skipped (77) does not
  ! awk -F'\t' '$2 != 0 && $2 != 77 && $2 != 124 && $2 != 137 { bad = 1 } END { exit !bad }' \
    "$LOGDIR/$tool.results"
}
stage_memcheck() { sanitize memcheck; }
stage_racecheck() { sanitize racecheck; }
stage_synccheck() { sanitize synccheck; }

# a real Nsight Systems capture; only its NVTX summary is kept
stage_nsys() {
  train20 "$BUILD/train20-nsys" "$NSYS" profile -t nvtx,cuda -o "$BUILD/pmoe-nsys" --force-overwrite true &&
    "$NSYS" stats --report nvtx_sum "$BUILD/pmoe-nsys.nsys-rep"
}

stage_gpu_bench() { "$BUILD/gpu_bench" --json "$LOGDIR/gpu_bench.json"; }

# WRN-pMoE against its WRN at the paper's 32x32 setting, w = 10 (the bench
# needs a data source for the shapes only: a few generated CIFAR-10 records)
stage_deep_bench() {
  "$PY" - "$BUILD/cifar" <<'EOF' || return
import os, random, sys
random.seed(1)
os.makedirs(sys.argv[1], exist_ok=True)
rec = lambda: bytes([random.randrange(10)]) + bytes(random.randrange(256) for _ in range(3072))
for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
    open(os.path.join(sys.argv[1], name), "wb").write(b"".join(rec() for _ in range(256)))
EOF
  "$BUILD/pmoe" bench --config configs/wrn_pmoe_cifar10.ini --set data.path="$BUILD/cifar" \
    --set data.train_size=1280 --set data.test_size=256 --set train.device=cuda \
    --set bench.warmup=3 --set bench.repeats=10 --json >"$LOGDIR/deep_bench.txt"
  local rc=$?
  grep -v '^{' "$LOGDIR/deep_bench.txt"
  tail -1 "$LOGDIR/deep_bench.txt" >"$LOGDIR/deep_bench.json"
  return "$rc"
}

# The PyTorch peers at pmoe's precision (fp32, TF32 off): eager, then
# torch.compile where it works; their JSON is rewritten after every figure.
# --time-limit: no compile is started past it (one in progress may overrun: the
# stage's timeout ends it, and the JSON keeps the figures before it).
stage_torch_two_layer() {
  "$PY" bench/torch_gpu_peer.py --compile --time-limit $((STAGE_BUDGET - 5)) --json "$LOGDIR/torch_two_layer.json"
}
stage_torch_wrn() {
  "$PY" bench/torch_gpu_peer.py --deep --only-deep --compile --steps 20 --time-limit $((STAGE_BUDGET - 5)) \
    --json "$LOGDIR/torch_wrn.json"
}

export -f train20 ctest_json sanitize stage_configure stage_build stage_gpu_tests stage_gpu_tests_blocking \
  stage_memcheck stage_racecheck stage_synccheck stage_nsys stage_gpu_bench stage_deep_bench \
  stage_torch_two_layer stage_torch_wrn

# ---- the run -------------------------------------------------------------------
say "pmoe device check: $(date -u +%FT%TZ), stage budgets sum to $BUDGET_SUM s of $LIMIT_S s"
write_json
if [ "$DRY_RUN" = 1 ]; then
  for s in "${PLAN[@]}"; do run_stage "${s%% *}"; done
else
  # locate and deps run in this shell: their findings are set for the stages after them
  run_stage locate
  run_stage deps
  # cuDNN loads its sub-libraries by name at run time: they must be on the path
  for r in "${CUDNN_ROOT:-}" "${NCCL_ROOT:-}"; do
    [ -n "$r" ] && [ -d "$r/lib" ] && export LD_LIBRARY_PATH=$r/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  done
  export PMOE_DC_ROOTS="${ROOTS[*]:-}" PATH
  for s in "${PLAN[@]:2}"; do run_stage "${s%% *}"; done
fi
FINISHED=1 PHASE=finished
write_json

if [ -n "$GPU_NAME" ] && [ "$DRY_RUN" = 0 ] && [ -w bench ]; then
  mkdir -p bench/results &&
    cp "$OUT/device_check.json" "bench/results/device_check-$(date -u +%Y%m%d-%H%M%S).json" 2>/dev/null
fi

# the short table, last
"$PY" - "$OUT/device_check.json" <<'EOF' | tee -a "$LOG"
import json, sys
r = json.load(open(sys.argv[1]))
print("")
print(f"pmoe device check: {r['gpu'] or r['no_gpu_reason']}, driver {r['driver']}, {r['nvcc']}, "
      f"torch {r['torch']}, {r['date']}, {r['seconds']} s")
for name, s in r["stages"].items():
    print(f"  {name:<20} {s['status']:<26} {s.get('seconds', 0):>4} s / {s['budget_s']:>3}  {s.get('detail', '')[:90]}")
b, t = r.get("bench") or {}, (r.get("torch_two_layer") or {}).get("steps", {})
for name, s in (b.get("steps") or {}).items():
    peer = t.get(name, {}).get("torch_ms")
    ratio = f"{peer / s['gpu_ms']:.1f}x torch eager" if peer else "no torch figure"
    print(f"  step {name:<15} pmoe {s['gpu_ms']:.3f} ms (B{s['batch']}), torch eager {peer} ms: {ratio}")
for name, s in ((r.get("torch_wrn") or {}).get("steps") or {}).items():
    print(f"  torch eager {name:<15} {s['torch_ms']} ms (B{s['batch']})")
print(f"  results: {sys.argv[1]}")
EOF
exit 0
