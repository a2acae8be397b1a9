#!/usr/bin/env bash
# run_sanitized_tests.sh: the CPU test suite under AddressSanitizer and
# UndefinedBehaviorSanitizer.
#
#   tools/run_sanitized_tests.sh
#
# Builds in build-asan (PMOE_SANITIZE=ON, RelWithDebInfo so the suite stays
# fast, CUDA off) and runs `ctest -L cpu`. Any memory error, leak or
# undefined behaviour aborts the test that hit it with a stack trace, so the
# run fails. No leak suppressions are needed (OpenMP's thread pool included);
# should a library's own leak appear, suppress it in a file passed through
# LSAN_OPTIONS=suppressions=..., with the reason.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh --test
cmake -S . -B build-asan -DPMOE_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DPMOE_ENABLE_CUDA=OFF --no-warn-unused-cli >/dev/null
cmake --build build-asan -j"$(nproc)"

# Settings already in the environment come last, so they win.
export ASAN_OPTIONS="halt_on_error=1:abort_on_error=1:detect_leaks=1:strict_string_checks=1:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:${UBSAN_OPTIONS:-}"
# ctest runs tests side by side, each with its own OpenMP threads, so the
# cores are oversubscribed: threads that spin at OpenMP barriers (libgomp's
# default) then steal the core from the thread they wait for, which made the
# deep-model tests up to 90x slower. Waiting threads sleep instead.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
ctest --test-dir build-asan -L cpu --output-on-failure -j"$(nproc)"
