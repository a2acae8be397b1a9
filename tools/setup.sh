#!/usr/bin/env bash
# setup.sh: install what pmoe needs on a fresh Debian/Ubuntu machine.
#
#   tools/setup.sh          the build tools, libraries and the Fashion-MNIST data
#   tools/setup.sh --test   the same, plus what the test suite uses
# Runs apt-get (through sudo when not root). Installing twice is harmless.
set -euo pipefail
# libdnnl-dev: oneDNN, the CPU fast path (train.cpu_kernels = fast); optional, the build says so without it
packages=(build-essential cmake pkg-config libopenblas-dev libinih-dev libcjson-dev libpng-dev libjpeg-dev
          zlib1g-dev libdnnl-dev dataset-fashion-mnist)
if [ "${1:-}" = "--test" ]; then
  # PyTorch and numpy: the reference in the checkpoint test; matplotlib: the plot test
  # (each is skipped without them); Open MPI: the expert-parallel tests
  packages+=(python3 python3-pip python3-numpy python3-torch python3-matplotlib gzip
            libopenmpi-dev openmpi-bin)
  # Open MPI: the expert-parallel tests (label mpi) run 2 to 4 ranks with mpirun
  packages+=(libopenmpi-dev openmpi-bin)
  # gcovr: the line coverage of the CUDA host code on the stand-in (tools/standin_coverage.sh)
  packages+=(gcovr)
  # clang-format: tools/format.sh and its --check (.clang-format was tuned with version 14)
  packages+=(clang-format)
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: all packages present"
fi
if [ "${1:-}" = "--test" ] && ! /usr/bin/python3 -c "import safetensors" 2>/dev/null; then
  # Not packaged by Debian; its test reports skipped if this install fails.
  $SUDO /usr/bin/python3 -m pip install -q --break-system-packages safetensors ||
    echo "setup: could not install the safetensors Python package; its test will be skipped"
fi
