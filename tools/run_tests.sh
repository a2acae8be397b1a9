#!/usr/bin/env bash
# run_tests.sh: set up, build from scratch and run the test suite (label cpu:
# everything this machine can run; gpu and mpi tests report skipped).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh --test
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$(nproc)"
ctest --test-dir build --output-on-failure -j"$(nproc)"
