#!/usr/bin/env bash
# test_configure.sh: configure-time detection of CUDA, cuDNN and NCCL.
#
# 1. This build: what configure wrote in generated/pmoe_build_config.h must
#    agree with the cache (nvcc, PMOE_ENABLE_CUDA, the architectures: an
#    explicit list, never native) and with what the engine library holds
#    (the kernels and the CUDA backend, or the stub; cuDNN's wrapper or its
#    stub).
# 2. A fresh configure with -DPMOE_ENABLE_CUDA=OFF says the CPU engine alone
#    is built, and that engine builds and runs: train.device=auto trains on
#    the CPU, train.device=cuda fails saying the build has no CUDA backend.
# 3. Where this machine has CUDA and cuDNN: a fresh configure with
#    CUDNN_ROOT pointing at the layout of the Python wheels
#    (nvidia/cudnn/{include,lib}, versioned library only) finds cuDNN there.
#
# Usage: test_configure.sh SOURCE_DIR BUILD_DIR CMAKE
set -u
SRC=${1:?usage: test_configure.sh SOURCE_DIR BUILD_DIR CMAKE}
BUILD=${2:?} CMAKE=${3:?}
HEADER=$BUILD/generated/pmoe_build_config.h
CACHE=$BUILD/CMakeCache.txt
ENGINE=$BUILD/libpmoe_engine.a
TMP=$(mktemp -d "${TMPDIR:-/tmp}/pmoe-configure-XXXXXX")
trap 'rm -rf "$TMP"' EXIT
passed=0 failed=0
ok() { passed=$((passed + 1)); echo "  ok: $*"; }
bad() { failed=$((failed + 1)); echo "FAIL: $*"; }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }

define() { sed -n "s/^#define $1 //p" "$HEADER" | tr -d '"'; }
cached() { sed -n "s/^$1:[A-Za-z]*=//p" "$CACHE" | head -1; }
defines() { nm --defined-only "$ENGINE" 2>/dev/null | grep -q " T $1\$"; }
refers() { nm --undefined-only "$ENGINE" 2>/dev/null | grep -q " U $1\$"; }

echo "1. this build ($BUILD)"
CUDA=$(define PMOE_BUILD_CUDA) CUDNN=$(define PMOE_BUILD_CUDNN) NCCL=$(define PMOE_BUILD_NCCL)
echo "   header: CUDA=$CUDA cuDNN=$CUDNN NCCL=$NCCL, compiler '$(define PMOE_BUILD_CUDA_COMPILER)'," \
     "architectures '$(define PMOE_BUILD_CUDA_ARCHITECTURES)'"
check "the header says 0 or 1 for each" test -n "$CUDA" -a -n "$CUDNN" -a -n "$NCCL"
COMPILER=$(cached CMAKE_CUDA_COMPILER)
if [ "$CUDA" = 1 ]; then
  check "nvcc of the build runs" "$COMPILER" --version
  check "PMOE_ENABLE_CUDA is on" test "$(cached PMOE_ENABLE_CUDA)" = ON
  ARCHS=$(cached CMAKE_CUDA_ARCHITECTURES)
  check "architectures '$ARCHS' are an explicit list" bash -c "[[ '$ARCHS' =~ ^[0-9]+([a-z]?)(-real|-virtual)?(;[0-9]+[a-z]?(-real|-virtual)?)*\$ ]]"
  check "the engine holds the kernels" defines pmoe_k_gate_topl_forward
  check "the engine holds the CUDA backend" refers cublasCreate_v2
else
  check "the engine holds no kernels" bash -c "! nm --defined-only '$ENGINE' | grep -q ' T pmoe_k_'"
  check "the engine holds the CUDA stub" bash -c "! nm --undefined-only '$ENGINE' | grep -q cudaGetDeviceCount"
  if [ "$(cached PMOE_ENABLE_CUDA)" != OFF ] && [ -n "$COMPILER" ] && [ "${COMPILER%NOTFOUND}" = "$COMPILER" ]; then
    echo "   (nvcc $COMPILER was found but the CUDA libraries were not)"
  fi
fi
if [ "$CUDNN" = 1 ]; then
  check "cuDNN only with CUDA" test "$CUDA" = 1
  check "the cuDNN library exists" test -e "$(define PMOE_BUILD_CUDNN_LIBRARY)"
  check "the engine calls cuDNN" refers cudnnCreate
else
  check "no cuDNN call in the engine" bash -c "! nm --undefined-only '$ENGINE' | grep -q ' U cudnnCreate\$'"
fi
if [ "$NCCL" = 1 ]; then
  check "the NCCL library exists" test -e "$(define PMOE_BUILD_NCCL_LIBRARY)"
fi

# The options that found this build's libraries, passed on to fresh configures.
GEN=$(cached CMAKE_GENERATOR)
ROOTS=()
for v in OPENBLAS_ROOT INIH_ROOT CJSON_ROOT ZLIB_ROOT PNG_ROOT CUDNN_ROOT NCCL_ROOT; do
  val=$(cached "$v")
  [ -n "$val" ] && ROOTS+=("-D$v=$val")
done

echo "2. a fresh configure with PMOE_ENABLE_CUDA=OFF"
OFF=$TMP/off
"$CMAKE" -S "$SRC" -B "$OFF" -G "$GEN" -DPMOE_ENABLE_CUDA=OFF -DBUILD_TESTING=OFF "${ROOTS[@]}" >"$TMP/off.log" 2>&1
rc=$?
check "configure succeeds" test $rc -eq 0
check "configure says the CPU engine alone is built" grep -q "pmoe: CUDA      off (PMOE_ENABLE_CUDA=OFF): the CPU engine alone is built" "$TMP/off.log"
check "its header says no CUDA" grep -q "^#define PMOE_BUILD_CUDA 0" "$OFF/generated/pmoe_build_config.h"
if [ $rc -eq 0 ]; then
  "$CMAKE" --build "$OFF" --target pmoe -j "$(nproc)" >"$TMP/off-build.log" 2>&1
  check "the CPU engine builds" test -x "$OFF/pmoe"
  if [ -x "$OFF/pmoe" ]; then
    SYN=(--set data.source=synthetic --set data.train_size=40 --set data.test_size=20 --set train.epochs=1 --json)
    "$OFF/pmoe" train "${SYN[@]}" --set train.device=auto >"$TMP/auto.out" 2>&1
    check "train.device=auto trains on the CPU" grep -q '"backend":"cpu"' "$TMP/auto.out"
    "$OFF/pmoe" train "${SYN[@]}" --set train.device=cuda >"$TMP/cuda.out" 2>&1
    check "train.device=cuda fails" test $? -ne 0
    check "... saying this build has no CUDA backend" grep -q "this build has no CUDA backend" "$TMP/cuda.out"
  fi
fi

if [ "$CUDA" = 1 ] && [ "$CUDNN" = 1 ]; then
  echo "3. cuDNN found through CUDNN_ROOT in the Python wheels' layout"
  REAL_LIB=$(readlink -f "$(define PMOE_BUILD_CUDNN_LIBRARY)")
  REAL_INC=$(cached CUDNN_INCLUDE_DIR)
  WHEEL=$TMP/site-packages/nvidia/cudnn
  mkdir -p "$WHEEL/include" "$WHEEL/lib"
  ln -s "$REAL_INC"/cudnn*.h "$WHEEL/include/"
  ln -s "$REAL_LIB" "$WHEEL/lib/libcudnn.so.9" # wheels ship the versioned name only
  ARGS=()
  for r in "${ROOTS[@]}"; do [ "${r#-DCUDNN_ROOT=}" = "$r" ] && ARGS+=("$r"); done
  "$CMAKE" -S "$SRC" -B "$TMP/wheel-build" -G "$GEN" -DBUILD_TESTING=OFF "-DCUDNN_ROOT=$WHEEL" \
    -DCMAKE_CUDA_ARCHITECTURES="$(cached CMAKE_CUDA_ARCHITECTURES)" "${ARGS[@]}" >"$TMP/wheel.log" 2>&1
  check "configure succeeds" test $? -eq 0
  check "cuDNN is found in the wheel layout" grep -q "pmoe: cuDNN     found: $WHEEL/lib/libcudnn.so.9" "$TMP/wheel.log"
fi

echo "test_configure: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
