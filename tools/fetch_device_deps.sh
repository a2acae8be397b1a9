#!/usr/bin/env bash
# fetch_device_deps.sh: the Debian packages that the GPU machine may lack,
# downloaded here for tools/device_check.sh to carry there.
#
# The GPU machine has CUDA (nvcc, cuBLAS), PyTorch with its nvidia-cudnn /
# nvidia-nccl wheels, cmake and ninja, but no package registry, and maybe
# not the development files of the CPU engine's libraries (OpenBLAS, inih,
# cJSON, libpng, zlib) nor pkg-config. This script runs HERE: it downloads
# those packages with `apt-get download` (no install) into .deps/, which it
# adds to .git/info/exclude so git ignores it; the device tool's run call
# carries .deps, and device_check.sh unpacks the packages there with
# `dpkg -x` into build-device/deps-root and points CMake at them (OPENBLAS_ROOT,
# INIH_ROOT, CJSON_ROOT, PNG_ROOT, ZLIB_ROOT). About 15 MB.
#
# Usage: tools/fetch_device_deps.sh   (then see tools/device_check.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
EXCLUDE=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$EXCLUDE")"
grep -qxF '/.deps/' "$EXCLUDE" 2>/dev/null || echo '/.deps/' >>"$EXCLUDE"

# The -dev packages, their runtime libraries, and what those need that an
# image with only gcc may not have (libgfortran for OpenBLAS).
PACKAGES=(
  libopenblas-dev libopenblas-pthread-dev libopenblas0-pthread libopenblas0
  libgfortran5 libquadmath0
  libinih-dev libinih1 libinireader0
  libcjson-dev libcjson1
  libpng-dev libpng16-16
  zlib1g-dev
)
mkdir -p .deps
cd .deps
# Only the .deb files travel (the carry limit is 64 MiB; unpacked they are 105 MB).
rm -rf ./*.deb root
if ! apt-get download "${PACKAGES[@]}" 2>/dev/null; then
  echo "fetch_device_deps: apt-get download failed; refreshing the package lists" >&2
  apt-get update -qq
  apt-get download "${PACKAGES[@]}"
fi
ls -1 ./*.deb
du -sh .
echo "fetch_device_deps: ready; carry .deps in the device run (see tools/device_check.sh)"
