#!/usr/bin/env bash
# run_fuzz.sh: build the libFuzzer targets (tests/fuzz) with clang and run
# each for a bounded time.
#
#   tools/run_fuzz.sh [SECONDS]     SECONDS per target, default 30
#
# Builds in build-fuzz (PMOE_FUZZ=ON, CUDA off), copies each seed corpus to a
# scratch folder (the repository is never written), and runs the targets one
# after another with -max_total_time=SECONDS and -rss_limit_mb=2048. Exits
# non-zero when any target crashes, leaks, times out or runs out of memory;
# the input that did it is kept under build-fuzz/artifacts/ and its path
# printed, so `build-fuzz/tests/fuzz/<target> <file>` replays it.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-30}"
case "$seconds" in '' | *[!0-9]*) echo "run_fuzz: SECONDS must be a whole number, got '$seconds'" >&2; exit 2 ;; esac

# The build's libraries, then clang and its libFuzzer runtime when missing.
bash tools/setup.sh
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
apt_install() {
  echo "run_fuzz: installing $*"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@"
}
command -v clang >/dev/null || apt_install clang
fuzzer_runtime() {
  local dir
  dir="$(clang --print-runtime-dir 2>/dev/null || true)"
  [ -n "$dir" ] && ls "$dir"/libclang_rt.fuzzer*.a >/dev/null 2>&1
}
if ! fuzzer_runtime; then
  major="$(clang -dumpversion | cut -d. -f1)"
  apt_install "libclang-rt-${major}-dev"
fi
fuzzer_runtime || { echo "run_fuzz: clang has no libFuzzer runtime (libclang_rt.fuzzer)" >&2; exit 2; }

cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DPMOE_FUZZ=ON -DBUILD_TESTING=OFF -DPMOE_ENABLE_CUDA=OFF --no-warn-unused-cli >/dev/null
cmake --build build-fuzz --target pmoe_fuzz -j"$(nproc)"

scratch="$(mktemp -d "${TMPDIR:-/tmp}/pmoe-fuzz.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT
artifacts="$PWD/build-fuzz/artifacts"
mkdir -p "$artifacts"
export ASAN_OPTIONS="abort_on_error=1:detect_leaks=1:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:${UBSAN_OPTIONS:-}"

failed=()
for name in idx cifar config safetensors checkpoint image; do
  target="fuzz_$name"
  corpus="$scratch/$name"
  mkdir -p "$corpus"
  cp tests/fuzz/corpus/"$name"/* "$corpus"/
  dict=()
  [ -f "tests/fuzz/$name.dict" ] && dict=(-dict="tests/fuzz/$name.dict")
  echo "run_fuzz: $target for ${seconds}s"
  log="$scratch/$target.log"
  if build-fuzz/tests/fuzz/"$target" "$corpus" "${dict[@]}" -max_total_time="$seconds" \
       -rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=10 -max_len=16384 -print_final_stats=1 \
       -artifact_prefix="$artifacts/$target-" >"$log" 2>&1; then
    execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")"
    cov="$(grep -o 'cov: [0-9]*' "$log" | tail -1)"
    echo "run_fuzz: $target ok: ${execs:-?} runs, $cov, corpus $(ls "$corpus" | wc -l) inputs"
  else
    tail -n 60 "$log"
    echo "run_fuzz: $target FAILED; the input is under $artifacts/ ($(ls "$artifacts" | grep "^$target-" | tr '\n' ' '))" >&2
    failed+=("$target")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "run_fuzz: failures in ${failed[*]}" >&2
  exit 1
fi
echo "run_fuzz: all targets ran ${seconds}s without a failure"
