#!/usr/bin/env bash
# format.sh: lay out pmoe's C, CUDA and C++ sources and headers (src/, include/,
# tests/, bench/, tools/) with clang-format and the repository's .clang-format.
#
#   tools/format.sh           rewrite every file that differs, in place
#   tools/format.sh --check   change nothing; list the files that differ, exit 1 if any
#
# Without clang-format it says so and exits 0 (so a --check step never fails a
# machine that lacks the tool); CLANG_FORMAT=path picks another binary. The
# layout .clang-format asks for was checked with clang-format 14; other
# versions may place a few lines differently.
set -euo pipefail
cd "$(dirname "$0")/.."
check=0
case "${1:-}" in
  --check) check=1 ;;
  "") ;;
  *) echo "usage: tools/format.sh [--check]" >&2; exit 2 ;;
esac
tool="${CLANG_FORMAT:-clang-format}"
if ! command -v "$tool" >/dev/null 2>&1; then
  echo "format: $tool not found (tools/setup.sh --test installs it); nothing checked"
  exit 0
fi
dirs=(src include tests bench tools)
pattern='\.(c|h|cu|cuh|cc|cpp|hpp)$'
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  mapfile -t files < <(git ls-files -- "${dirs[@]}" | grep -E "$pattern" || true)
else
  mapfile -t files < <(find "${dirs[@]}" -type f 2>/dev/null | grep -E "$pattern" | sort || true)
fi
if [ ${#files[@]} -eq 0 ]; then
  echo "format: no sources found"
  exit 0
fi
if [ $check -eq 0 ]; then
  printf '%s\0' "${files[@]}" | xargs -0 "$tool" -i --style=file
  echo "format: ${#files[@]} files formatted with $("$tool" --version | head -1)"
  exit 0
fi
differ=0
for f in "${files[@]}"; do
  if ! "$tool" --style=file "$f" | cmp -s - "$f"; then
    echo "$f"
    differ=$((differ + 1))
  fi
done
if [ $differ -gt 0 ]; then
  echo "format: $differ of ${#files[@]} files differ from .clang-format (tools/format.sh rewrites them)" >&2
  exit 1
fi
echo "format: all ${#files[@]} files match .clang-format"
