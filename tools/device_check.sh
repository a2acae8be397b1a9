#!/usr/bin/env bash
# device_check.sh: build pmoe on a GPU machine, run its GPU tests and GPU
# benchmarks, save the results, and print a short table last.
#
# For the device tool (a GPU machine with CUDA, PyTorch and its nvidia wheels,
# cmake and ninja, but no package registry). Once, here:
#     tools/fetch_device_deps.sh        # Debian -dev packages into .deps/ (ignored by git)
# then the tool's call:
#     run  command: bash tools/device_check.sh
#          carry:   [".deps"]
#          timeout_s: 420
# It must finish in under 6 minutes; each stage has its own time limit and
# a stage that fails is reported in the table, the later stages still run
# where they can. Results: $OUT/device_check.json (GPU name, date,
# versions, test outcome, figures), $OUT/device_check.log (everything), and
# a copy in bench/results/ when writable (on the device machine that copy is
# lost with the machine: keep the one from $OUT, e.g.
#     cp /work/.device/.../device_check.json bench/results/h200-YYYY-MM-DD.json).
#
# Anywhere else: bash tools/device_check.sh (needs a GPU; results in build-device/out
# unless OUT names a folder).
set -uo pipefail
T0=$(date +%s)
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-$ROOT/build-device/out} # build-device/ is ignored by git
mkdir -p "$OUT"
LOG=$OUT/device_check.log
: >"$LOG"
BUILD=$ROOT/build-device
PY=${PYTHON:-python3}
declare -A STATUS
say() { echo "$*" | tee -a "$LOG"; }
stage() { say ""; say "== $* ($(($(date +%s) - T0)) s)"; }

# ---- 1. where everything is ---------------------------------------------
stage "locating CUDA, cuDNN, NCCL"
# cuDNN and NCCL from python3's nvidia wheels (site-packages/nvidia/<lib>),
# unless given.
wheel_root() {
  "$PY" - "$1" 2>/dev/null <<'EOF'
import importlib.util, sys
s = importlib.util.find_spec('nvidia.' + sys.argv[1])
print(list(s.submodule_search_locations)[0] if s and s.submodule_search_locations else '')
EOF
}
CUDNN_ROOT=${CUDNN_ROOT:-$(wheel_root cudnn)}
NCCL_ROOT=${NCCL_ROOT:-$(wheel_root nccl)}
CU13_ROOT=$(wheel_root cu13)
if ! command -v nvcc >/dev/null; then
  for d in /usr/local/cuda/bin /usr/local/cuda-13*/bin; do [ -x "$d/nvcc" ] && export PATH=$d:$PATH && break; done
fi
NVCC=$(command -v nvcc || true)
say "nvcc:  ${NVCC:-not found} $($NVCC --version 2>/dev/null | tail -1)"
say "cuDNN: ${CUDNN_ROOT:-not found}   NCCL: ${NCCL_ROOT:-not found}   cu13 wheel: ${CU13_ROOT:-none}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee -a "$LOG"
GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
DRIVER=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -1)
TORCH=$("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null)
say "torch: ${TORCH:-absent}; cmake: $(cmake --version | head -1); compiler: $(cc --version | head -1)"

# ---- 2. libraries the machine may lack: carried Debian packages -----------
stage "CPU-engine libraries"
ROOTS=()
if ls .deps/*.deb >/dev/null 2>&1; then
  # Unpacked under the build folder, so .deps keeps only the .deb files
  # (unpacked they are over 100 MB, too much to carry).
  mkdir -p "$BUILD/deps-root"
  for f in .deps/*.deb; do dpkg -x "$f" "$BUILD/deps-root" 2>>"$LOG" || say "cannot unpack $f"; done
  DEPS=$BUILD/deps-root/usr
  MULTI=$DEPS/lib/x86_64-linux-gnu
  # zlib1g-dev links libz.so to an absolute /lib path of its own version.
  if [ -L "$MULTI/libz.so" ] && [ ! -e "$MULTI/libz.so" ]; then
    for z in /lib/x86_64-linux-gnu/libz.so.1 /usr/lib/x86_64-linux-gnu/libz.so.1; do
      [ -e "$z" ] && ln -sf "$z" "$MULTI/libz.so" && break
    done
  fi
  # A carried package is used only for what the machine lacks.
  have_header() { compgen -G "/usr/include/$1" >/dev/null || compgen -G "/usr/include/*/$1" >/dev/null ||
                  compgen -G "/usr/include/*/*/$1" >/dev/null; }
  have_header cblas.h || ROOTS+=("-DOPENBLAS_ROOT=$DEPS")
  have_header ini.h || ROOTS+=("-DINIH_ROOT=$DEPS")
  have_header cjson/cJSON.h || ROOTS+=("-DCJSON_ROOT=$DEPS")
  have_header png.h || ROOTS+=("-DPNG_ROOT=$DEPS")
  have_header zlib.h || ROOTS+=("-DZLIB_ROOT=$DEPS")
  # Appended, so the machine's own libraries win where it has them.
  export LD_LIBRARY_PATH=${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$MULTI:$MULTI/openblas-pthread
  say "carried packages unpacked; used for: ${ROOTS[*]:-nothing}"
else
  say "no carried packages (.deps): the machine's own libraries must do"
fi
# cuDNN loads its sub-libraries by name at run time: they must be on the path.
for r in "$CUDNN_ROOT" "$NCCL_ROOT"; do
  [ -n "$r" ] && [ -d "$r/lib" ] && export LD_LIBRARY_PATH=$r/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
done

# ---- 3. configure and build --------------------------------------------------
stage "configure"
GEN=()
command -v ninja >/dev/null && GEN=(-G Ninja)
timeout 120 cmake -S . -B "$BUILD" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_CUDA_ARCHITECTURES=90 ${CUDNN_ROOT:+-DCUDNN_ROOT=$CUDNN_ROOT} \
  ${NCCL_ROOT:+-DNCCL_ROOT=$NCCL_ROOT} "${ROOTS[@]}" >"$OUT/configure.log" 2>&1
STATUS[configure]=$?
grep "pmoe:" "$OUT/configure.log" | tee -a "$LOG"
[ "${STATUS[configure]}" -ne 0 ] && tail -30 "$OUT/configure.log" | tee -a "$LOG"
STATUS[build]=skipped
if [ "${STATUS[configure]}" -eq 0 ]; then
  stage "build"
  B0=$(date +%s)
  timeout 200 cmake --build "$BUILD" -j16 >"$OUT/build.log" 2>&1
  STATUS[build]=$?
  BUILD_SECONDS=$(($(date +%s) - B0))
  [ "${STATUS[build]}" -ne 0 ] && grep -E "error|FAILED" "$OUT/build.log" | head -30 | tee -a "$LOG"
  say "build: status ${STATUS[build]} in ${BUILD_SECONDS} s"
fi

# ---- 4. tests ----------------------------------------------------------------
TESTS_SUMMARY="not run"
if [ "${STATUS[build]}" = 0 ]; then
  stage "GPU tests (ctest -L gpu) and the selection and kernel tests"
  timeout 150 ctest --test-dir "$BUILD" -L gpu --output-on-failure >"$OUT/ctest_gpu.log" 2>&1
  STATUS[gpu_tests]=$?
  timeout 60 ctest --test-dir "$BUILD" -R 'test_backend_select|test_kernels_host|test_host_exec' \
    --output-on-failure >"$OUT/ctest_select.log" 2>&1
  STATUS[cpu_tests]=$?
  # The NVTX ranges of CUDA runs, as Nsight receives them (the recorder
  # injected), and, where the machine has Nsight Systems, a real capture.
  PMOE_TEST_DEVICE=cuda timeout 60 bash tests/test_nvtx_ranges.sh "$BUILD/pmoe" \
    "$BUILD/tests/libnvtx_recorder.so" >"$OUT/nvtx_ranges.log" 2>&1
  STATUS[nvtx_ranges]=$?
  cat "$OUT/nvtx_ranges.log" | tee -a "$LOG" | tail -8
  if command -v nsys >/dev/null; then
    timeout 90 nsys profile -t nvtx,cuda -o "$OUT/pmoe-nsys" --force-overwrite true \
      "$BUILD/pmoe" train --quiet --set train.device=cuda --set data.source=synthetic \
      --set data.train_size=200 --set data.test_size=50 --set train.epochs=1 \
      --set train.profile_experts=true >"$OUT/nsys.log" 2>&1 &&
      timeout 60 nsys stats --report nvtx_sum "$OUT/pmoe-nsys.nsys-rep" >"$OUT/nvtx_sum.txt" 2>&1
    STATUS[nsys]=$?
    rm -f "$OUT/pmoe-nsys.nsys-rep" "$OUT/pmoe-nsys.sqlite" # large; the summary is kept
    head -40 "$OUT/nvtx_sum.txt" | tee -a "$LOG"
  else
    STATUS[nsys]="no nsys"
  fi
  cat "$OUT/ctest_gpu.log" "$OUT/ctest_select.log" >>"$LOG"
  grep -E "Test +#|tests passed|Skipped|Failed" "$OUT/ctest_gpu.log" "$OUT/ctest_select.log" | sed 's/^[^:]*://'
  count() { cat "$OUT/ctest_gpu.log" "$OUT/ctest_select.log" | grep -cE "Test +#[0-9]+: .*($1)"; }
  TESTS_SUMMARY="$(count ' Passed') passed, $(count 'Skipped') skipped, $(count 'Failed|Exception|Timeout') failed (label gpu, then selection and host-mode kernels)"
fi

# ---- 5. benchmarks -----------------------------------------------------------
if [ "${STATUS[build]}" = 0 ]; then
  stage "benchmarks"
  timeout 90 "$BUILD/gpu_bench" --json "$OUT/gpu_bench.json" 2>&1 | tee -a "$LOG"
  STATUS[gpu_bench]=${PIPESTATUS[0]}
fi
if [ "${STATUS[build]}" = 0 ]; then
  # WRN-pMoE against its WRN at the paper's 32x32 setting, w = 10 (the bench
  # needs a data source for the shapes only: a few generated CIFAR-10 records)
  mkdir -p "$OUT/cifar"
  "$PY" - "$OUT/cifar" <<'PYEOF'
import os, random, sys
random.seed(1)
rec = lambda: bytes([random.randrange(10)]) + bytes(random.randrange(256) for _ in range(3072))
for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
    open(os.path.join(sys.argv[1], name), "wb").write(b"".join(rec() for _ in range(256)))
PYEOF
  timeout 150 "$BUILD/pmoe" bench --config configs/wrn_pmoe_cifar10.ini --set data.path="$OUT/cifar" \
    --set data.train_size=1280 --set data.test_size=256 --set train.device=cuda \
    --set bench.warmup=3 --set bench.repeats=10 --json >"$OUT/deep_bench.txt" 2>&1
  STATUS[deep_bench]=$?
  tail -1 "$OUT/deep_bench.txt" >"$OUT/deep_bench.json"
  grep -v '^{' "$OUT/deep_bench.txt" | tee -a "$LOG" | tail -25
fi
if [ -n "$TORCH" ]; then
  timeout 90 "$PY" bench/torch_gpu_peer.py --json "$OUT/torch_peer.json" 2>&1 | tee -a "$LOG"
  STATUS[torch_peer]=${PIPESTATUS[0]}
fi

# ---- 6. results and the table ------------------------------------------------
ELAPSED=$(($(date +%s) - T0))
STATUS_JSON=$(for k in "${!STATUS[@]}"; do printf '"%s": "%s",' "$k" "${STATUS[$k]}"; done)
"$PY" - "$OUT" "$GPU_NAME" "$DRIVER" "$($NVCC --version 2>/dev/null | tail -1)" "$TORCH" \
  "{${STATUS_JSON%,}}" "$ELAPSED" "$TESTS_SUMMARY" "$BUILD/generated/pmoe_build_config.h" <<'EOF' >>"$LOG" 2>&1
import datetime, json, os, re, sys
out, gpu, driver, nvcc, torch, status, elapsed, tests, header = sys.argv[1:10]
def load(name):
    try:
        with open(os.path.join(out, name)) as f:
            return json.load(f)
    except Exception:
        return None
build = {}
try:
    for line in open(header):
        m = re.match(r'#define PMOE_BUILD_(\w+) "?([^"]*)"?', line)
        if m: build[m.group(1).lower()] = m.group(2)
except OSError:
    pass
result = {"gpu": gpu, "driver": driver, "nvcc": nvcc, "torch": torch,
          "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
          "build": build, "status": json.loads(status), "gpu_tests": tests,
          "seconds": int(elapsed), "bench": load("gpu_bench.json"), "torch_peer": load("torch_peer.json"),
          "deep_bench": load("deep_bench.json")}
with open(os.path.join(out, "device_check.json"), "w") as f:
    json.dump(result, f, indent=1)
EOF
if [ -w bench ]; then
  mkdir -p bench/results && cp "$OUT/device_check.json" "bench/results/device_check-$(date -u +%Y%m%d-%H%M%S).json" 2>/dev/null
fi

"$PY" - "$OUT" <<'EOF'
import json, os, sys
out = sys.argv[1]
r = json.load(open(os.path.join(out, "device_check.json")))
b, t = r.get("bench") or {}, (r.get("torch_peer") or {}).get("steps", {})
print("")
print(f"pmoe device check: {r['gpu'] or 'no GPU'}, driver {r['driver']}, {r['nvcc']}, torch {r['torch']}, {r['date']}")
print(f"  {'stage status':<34} " + ", ".join(f"{k} {v}" for k, v in sorted(r["status"].items())))
print(f"  {'GPU tests':<34} {r['gpu_tests']}")
if b:
    print(f"  {'copy bandwidth (read + write)':<34} {b['copy_bandwidth_gbs']:.0f} GB/s")
    print(f"  {'fused gate/top-l ' + b['gate_shape']:<34} {b['gate_us']:.2f} us, floor {b['gate_floor_us']:.2f} us,"
          f" {b['gate_over_floor']:.2f}x the floor (aim <= 2), check {'ok' if b['gate_check'] else 'FAILED'}")
    for name, s in b["steps"].items():
        peer = t.get(name, {}).get("torch_ms")
        ratio = f"{peer / s['gpu_ms']:.1f}x faster than torch" if peer else "no torch figure"
        print(f"  {'train step ' + name:<34} {s['gpu_ms']:.3f} ms (B{s['batch']}), torch eager "
              f"{peer if peer is not None else '-'} ms: {ratio}; CPU {s['cpu_ms']:.1f} ms")
print(f"  {'results':<34} {os.path.join(out, 'device_check.json')}  ({r['seconds']} s)")
EOF
