# Accelerators.cmake: CUDA (nvcc, the runtime, cuBLAS), cuDNN and NCCL,
# found rather than assumed, each reported on its own line.
#
# Sets PMOE_HAVE_CUDA, PMOE_HAVE_CUDNN, PMOE_HAVE_NCCL and, when found, the
# targets PMOE::cudnn and PMOE::nccl. The CUDA backend is built whenever nvcc
# is found (-DPMOE_ENABLE_CUDA=OFF builds the CPU engine alone), for the
# architectures in CMAKE_CUDA_ARCHITECTURES, "80;90" unless given (an
# explicit list, so a build machine without a GPU makes the same binary as
# one with). cuDNN and NCCL are looked for, in this order, under CUDNN_ROOT /
# NCCL_ROOT (cache or environment), the CUDA toolkit, and the Python wheels
# nvidia-cudnn-* / nvidia-nccl-* (site-packages/nvidia/<lib>/{include,lib},
# found by asking python3 where the package nvidia.<lib> is). Wheels ship
# only versioned libraries (libcudnn.so.9), so those names are tried too.

# pmoe_wheel_root(LIB OUT): site-packages/nvidia/LIB of python3's wheels, or "".
function(pmoe_wheel_root lib out)
  set(${out} "" PARENT_SCOPE)
  find_program(PMOE_PYTHON3 NAMES python3)
  if(NOT PMOE_PYTHON3)
    return()
  endif()
  execute_process(
    COMMAND ${PMOE_PYTHON3} -c "import importlib.util as u; s = u.find_spec('nvidia.${lib}'); print(list(s.submodule_search_locations)[0] if s and s.submodule_search_locations else '')"
    OUTPUT_VARIABLE dir OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET TIMEOUT 30)
  if(dir AND EXISTS "${dir}/include")
    set(${out} "${dir}" PARENT_SCOPE)
  endif()
endfunction()

option(PMOE_ENABLE_CUDA "Build the CUDA backend when nvcc is found" ON)
set(PMOE_HAVE_CUDA OFF)
if(PMOE_ENABLE_CUDA)
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    if(NOT CMAKE_CUDA_ARCHITECTURES)
      set(CMAKE_CUDA_ARCHITECTURES "80;90" CACHE STRING "CUDA architectures to build for (an explicit list, never native)")
    elseif(CMAKE_CUDA_ARCHITECTURES MATCHES "native")
      message(WARNING "pmoe: CMAKE_CUDA_ARCHITECTURES=native builds for this machine's GPU only")
    endif()
    enable_language(CUDA)
    # Programs that merely link the engine are linked by their own language
    # (gcc for C), as without CUDA, rather than by nvcc: the link flags of
    # the other options (sanitizers) then apply unchanged.
    set(CMAKE_CUDA_LINKER_PREFERENCE_PROPAGATES 0)
    find_package(CUDAToolkit QUIET)
    # A toolkit without cuBLAS (nvcc alone): take it from CUBLAS_ROOT or the
    # Python wheels (CUDA 13: site-packages/nvidia/cu13, 12: nvidia/cublas).
    if(CUDAToolkit_FOUND AND NOT TARGET CUDA::cublas)
      pmoe_wheel_root(cu13 _pmoe_cu13)
      pmoe_wheel_root(cublas _pmoe_cublas)
      set(_pmoe_roots ${CUBLAS_ROOT} $ENV{CUBLAS_ROOT} ${_pmoe_cu13} ${_pmoe_cublas})
      find_library(PMOE_CUBLAS_LIBRARY NAMES cublas libcublas.so.13 libcublas.so.12 NAMES_PER_DIR
        HINTS ${_pmoe_roots} PATH_SUFFIXES lib lib64)
      find_path(PMOE_CUBLAS_INCLUDE_DIR cublas_v2.h HINTS ${CUDAToolkit_INCLUDE_DIRS} ${_pmoe_roots}
        PATH_SUFFIXES include)
      if(PMOE_CUBLAS_LIBRARY AND PMOE_CUBLAS_INCLUDE_DIR)
        add_library(CUDA::cublas INTERFACE IMPORTED)
        target_include_directories(CUDA::cublas INTERFACE ${PMOE_CUBLAS_INCLUDE_DIR})
        target_link_libraries(CUDA::cublas INTERFACE ${PMOE_CUBLAS_LIBRARY})
        message(STATUS "pmoe: cuBLAS    found: ${PMOE_CUBLAS_LIBRARY} (outside the toolkit)")
      endif()
    endif()
    if(CUDAToolkit_FOUND AND TARGET CUDA::cublas AND TARGET CUDA::cudart_static)
      set(PMOE_HAVE_CUDA ON)
      message(STATUS "pmoe: CUDA      found: ${CMAKE_CUDA_COMPILER} (CUDA ${CUDAToolkit_VERSION}, "
                     "architectures ${CMAKE_CUDA_ARCHITECTURES}): the CUDA backend is built")
    else()
      message(STATUS "pmoe: CUDA      nvcc found, but not cuBLAS or the static runtime: "
                     "the CPU engine alone is built")
    endif()
  else()
    message(STATUS "pmoe: CUDA      not found (no nvcc): the CPU engine alone is built")
  endif()
else()
  message(STATUS "pmoe: CUDA      off (PMOE_ENABLE_CUDA=OFF): the CPU engine alone is built")
endif()

set(_pmoe_toolkit_roots ${CUDAToolkit_LIBRARY_ROOT} /usr/local/cuda $ENV{CUDA_HOME} $ENV{CUDA_PATH})

# pmoe_find_accelerator_lib(VAR TARGET HEADER NAMES...): VAR_INCLUDE_DIR,
# VAR_LIBRARY and PMOE_HAVE_<VAR> (cuDNN and NCCL have the same layouts).
function(pmoe_find_accelerator_lib var lib header)
  set(roots ${${var}_ROOT} $ENV{${var}_ROOT} ${_pmoe_toolkit_roots})
  pmoe_wheel_root(${lib} wheel)
  list(APPEND roots ${wheel})
  find_path(${var}_INCLUDE_DIR ${header} HINTS ${roots} PATH_SUFFIXES include include/x86_64-linux-gnu)
  # NAMES_PER_DIR: the first root that has any of the names wins (an unversioned
  # name elsewhere must not beat the wheel's versioned one under CUDNN_ROOT).
  find_library(${var}_LIBRARY NAMES ${ARGN} NAMES_PER_DIR HINTS ${roots}
    PATH_SUFFIXES lib lib64 lib/x86_64-linux-gnu)
  if(${var}_INCLUDE_DIR AND ${var}_LIBRARY)
    set(PMOE_HAVE_${var} ON PARENT_SCOPE)
    add_library(PMOE::${lib} INTERFACE IMPORTED GLOBAL)
    target_include_directories(PMOE::${lib} INTERFACE ${${var}_INCLUDE_DIR})
    target_link_libraries(PMOE::${lib} INTERFACE ${${var}_LIBRARY})
  else()
    set(PMOE_HAVE_${var} OFF PARENT_SCOPE)
  endif()
endfunction()

pmoe_find_accelerator_lib(CUDNN cudnn cudnn.h cudnn libcudnn.so.9 libcudnn.so.8)
if(PMOE_HAVE_CUDNN)
  file(READ ${CUDNN_INCLUDE_DIR}/cudnn_version.h _pmoe_cudnn_header)
  set(PMOE_CUDNN_VERSION "")
  foreach(_pmoe_part MAJOR MINOR PATCHLEVEL)
    if(_pmoe_cudnn_header MATCHES "#define CUDNN_${_pmoe_part} +([0-9]+)")
      list(APPEND PMOE_CUDNN_VERSION ${CMAKE_MATCH_1})
    endif()
  endforeach()
  list(JOIN PMOE_CUDNN_VERSION "." PMOE_CUDNN_VERSION)
  message(STATUS "pmoe: cuDNN     found: ${CUDNN_LIBRARY} (${PMOE_CUDNN_VERSION})")
else()
  message(STATUS "pmoe: cuDNN     not found (set CUDNN_ROOT, or install the nvidia-cudnn wheel): "
                 "no convolution wrapper")
endif()

pmoe_find_accelerator_lib(NCCL nccl nccl.h nccl libnccl.so.2)
if(PMOE_HAVE_NCCL)
  message(STATUS "pmoe: NCCL      found: ${NCCL_LIBRARY}")
else()
  message(STATUS "pmoe: NCCL      not found (set NCCL_ROOT, or install the nvidia-nccl wheel)")
endif()
if(NOT PMOE_HAVE_CUDA)
  set(PMOE_HAVE_CUDNN OFF)
  set(PMOE_HAVE_NCCL OFF)
endif()

# What this configure decided, for the tests that check it and for the run.
foreach(_pmoe_flag CUDA CUDNN NCCL)
  if(PMOE_HAVE_${_pmoe_flag})
    set(PMOE_BUILD_${_pmoe_flag} 1)
  else()
    set(PMOE_BUILD_${_pmoe_flag} 0)
  endif()
endforeach()
file(CONFIGURE OUTPUT ${PROJECT_BINARY_DIR}/generated/pmoe_build_config.h CONTENT [[
/* pmoe_build_config.h: written by cmake/Accelerators.cmake at configure time. */
#ifndef PMOE_BUILD_CONFIG_H
#define PMOE_BUILD_CONFIG_H
#define PMOE_BUILD_CUDA @PMOE_BUILD_CUDA@
#define PMOE_BUILD_CUDNN @PMOE_BUILD_CUDNN@
#define PMOE_BUILD_NCCL @PMOE_BUILD_NCCL@
#define PMOE_BUILD_CUDA_COMPILER "@CMAKE_CUDA_COMPILER@"
#define PMOE_BUILD_CUDA_VERSION "@CUDAToolkit_VERSION@"
#define PMOE_BUILD_CUDA_ARCHITECTURES "@CMAKE_CUDA_ARCHITECTURES@"
#define PMOE_BUILD_CUDNN_LIBRARY "@CUDNN_LIBRARY@"
#define PMOE_BUILD_CUDNN_VERSION "@PMOE_CUDNN_VERSION@"
#define PMOE_BUILD_NCCL_LIBRARY "@NCCL_LIBRARY@"
#endif
]] @ONLY)
