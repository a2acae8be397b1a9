#!/usr/bin/env bash
# run_tests.sh: set up, build and run the whole test suite: labels cpu and
# mpi run here; gpu tests report skipped (exit 77) where no device answers.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh --test
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$(nproc)"
ctest --test-dir build --output-on-failure -j"$(nproc)"
