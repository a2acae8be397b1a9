#!/usr/bin/env bash
# run_tests.sh: set up, build and run the whole test suite: labels cpu,
# standin and mpi run here; gpu tests report skipped (exit 77) where no
# device answers; then the stand-in's coverage of the CUDA host code.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh --test
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$(nproc)"
# ctest runs tests side by side, each with its own OpenMP threads, so the
# cores are oversubscribed: threads that spin at OpenMP barriers (libgomp's
# default) then steal the core from the thread they wait for, which made the
# deep-model tests up to 90x slower. Waiting threads sleep instead.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
ctest --test-dir build --output-on-failure -j"$(nproc)"
# The CUDA host code's coverage by the stand-in tests (label standin), where
# they were built: printed, and below its floor a failure.
if [ -x build/tests/standin/pmoe-standin ]; then
  bash tools/standin_coverage.sh build
fi
