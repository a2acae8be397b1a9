#!/usr/bin/env bash
# numerics.sh PMOE: one line naming what decides the CPU engine's floating-
# point path on this machine, so that results are compared bit for bit only
# between machines that share it: whether pmoe's AVX-512F kernels run (it
# picks them by the CPU's features; they sum in another order than the
# portable path) and which kernels OpenBLAS's DYNAMIC_ARCH chose (its
# sgemm blocking differs between cores, and OPENBLAS_CORETYPE overrides it).
set -euo pipefail
pmoe=${1:?usage: numerics.sh PATH/TO/pmoe}
if grep -qw avx512f /proc/cpuinfo; then simd=yes; else simd=no; fi
core=$(OPENBLAS_VERBOSE=2 "$pmoe" --version 2>&1 >/dev/null | sed -n 's/^Core: //p' | head -1)
echo "x86-64 AVX-512F kernels: $simd; OpenBLAS core: ${core:-unknown}"
