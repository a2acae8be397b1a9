#!/usr/bin/env bash
# standin_coverage.sh: line coverage of pmoe's CUDA host code after the
# stand-in tests ran (ctest -L standin), from the --coverage counters of
# pmoe_engine_standin (tests/standin/CMakeLists.txt), with gcovr.
#
#   tools/standin_coverage.sh [BUILD_DIR]      (default: build)
#
# Prints the lines and functions run in src/host/cuda/, comm_nccl.c and
# src/host/train/ and src/host/model/ (whose non-host-memory branches only
# the CUDA backend takes), and fails when src/host/cuda/ is below 90% of its
# lines or 100% of its functions. The stubs used by builds without CUDA
# (cuda_stub.c, cuda_conv_stub.c) are not part of the stand-in build.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
OBJ="$BUILD/tests/standin/CMakeFiles/pmoe_engine_standin.dir"
if ! command -v gcovr >/dev/null; then
  echo "standin_coverage: gcovr is missing (tools/setup.sh --test installs it)" >&2
  exit 1
fi
if ! ls "$OBJ"/__/__/src/host/cuda/*.gcda >/dev/null 2>&1; then
  echo "standin_coverage: no coverage counters under $OBJ: run ctest -L standin first" >&2
  exit 1
fi
common=(--root . --object-directory "$OBJ" --exclude '.*_stub\.c')
echo "== line coverage of the CUDA host code on the stand-in"
gcovr "${common[@]}" --filter 'src/host/cuda/' --filter 'src/host/comm/comm_nccl\.c' \
  --filter 'src/host/train/' --filter 'src/host/model/' --txt
summary=$(gcovr "${common[@]}" --filter 'src/host/cuda/' --json-summary)
python3 - "$summary" <<'EOF'
import json, sys
s = json.loads(sys.argv[1])
lines, funcs = s['line_percent'], s['function_percent']
print(f'src/host/cuda/: {lines:.1f}% of lines ({s["line_covered"]} of {s["line_total"]}), '
      f'{funcs:.1f}% of functions ({s["function_covered"]} of {s["function_total"]}); '
      'required: 90% of lines, 100% of functions')
missing = [f['filename'] for f in s['files'] if f['function_covered'] < f['function_total']]
if missing:
    print('files with functions never run: ' + ', '.join(missing))
sys.exit(0 if lines >= 90.0 and funcs >= 100.0 else 1)
EOF
