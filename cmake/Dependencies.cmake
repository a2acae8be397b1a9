# Dependencies.cmake: find what pmoe links, and say what was found.
#
# Required for the CPU engine: OpenBLAS, OpenMP, zlib, inih, cJSON. Optional, each
# reported on its own line: CUDA (nvcc), cuDNN, NCCL, MPI.

find_package(OpenMP REQUIRED COMPONENTS C)
find_package(ZLIB REQUIRED)
find_package(PkgConfig REQUIRED)

# OpenBLAS: Debian installs cblas.h under an alternatives-managed folder.
find_path(OPENBLAS_INCLUDE_DIR cblas.h
  PATH_SUFFIXES openblas openblas-pthread openblas-openmp x86_64-linux-gnu x86_64-linux-gnu/openblas-pthread)
find_library(OPENBLAS_LIBRARY NAMES openblas)
if(NOT OPENBLAS_INCLUDE_DIR OR NOT OPENBLAS_LIBRARY)
  message(FATAL_ERROR "pmoe: OpenBLAS not found (install libopenblas-dev)")
endif()
add_library(PMOE::openblas INTERFACE IMPORTED)
target_include_directories(PMOE::openblas INTERFACE ${OPENBLAS_INCLUDE_DIR})
target_link_libraries(PMOE::openblas INTERFACE ${OPENBLAS_LIBRARY})
message(STATUS "pmoe: OpenBLAS  found: ${OPENBLAS_LIBRARY}")

pkg_check_modules(INIH REQUIRED IMPORTED_TARGET inih)
add_library(PMOE::inih ALIAS PkgConfig::INIH)
message(STATUS "pmoe: inih      found: ${INIH_LINK_LIBRARIES}")

pkg_check_modules(CJSON REQUIRED IMPORTED_TARGET libcjson)
add_library(PMOE::cjson ALIAS PkgConfig::CJSON)
message(STATUS "pmoe: cJSON     found: ${CJSON_LINK_LIBRARIES}")

# Optional accelerators and communicators: reported now, used by later backends.
include(CheckLanguage)
check_language(CUDA)
if(CMAKE_CUDA_COMPILER)
  set(PMOE_HAVE_CUDA ON)
  message(STATUS "pmoe: CUDA      found: ${CMAKE_CUDA_COMPILER}")
else()
  set(PMOE_HAVE_CUDA OFF)
  message(STATUS "pmoe: CUDA      not found (no nvcc): the CPU engine alone is built")
endif()

set(_pmoe_cuda_hints /usr/local/cuda $ENV{CUDA_HOME})
find_path(CUDNN_INCLUDE_DIR cudnn.h HINTS $ENV{CUDNN_ROOT} ${CUDNN_ROOT} ${_pmoe_cuda_hints}
  PATH_SUFFIXES include include/x86_64-linux-gnu)
find_library(CUDNN_LIBRARY cudnn HINTS $ENV{CUDNN_ROOT} ${CUDNN_ROOT} ${_pmoe_cuda_hints}
  PATH_SUFFIXES lib lib64 lib/x86_64-linux-gnu)
if(CUDNN_INCLUDE_DIR AND CUDNN_LIBRARY)
  set(PMOE_HAVE_CUDNN ON)
  message(STATUS "pmoe: cuDNN     found: ${CUDNN_LIBRARY}")
else()
  set(PMOE_HAVE_CUDNN OFF)
  message(STATUS "pmoe: cuDNN     not found (set CUDNN_ROOT)")
endif()

find_path(NCCL_INCLUDE_DIR nccl.h HINTS $ENV{NCCL_ROOT} ${NCCL_ROOT} ${_pmoe_cuda_hints}
  PATH_SUFFIXES include)
find_library(NCCL_LIBRARY nccl HINTS $ENV{NCCL_ROOT} ${NCCL_ROOT} ${_pmoe_cuda_hints}
  PATH_SUFFIXES lib lib64)
if(NCCL_INCLUDE_DIR AND NCCL_LIBRARY)
  set(PMOE_HAVE_NCCL ON)
  message(STATUS "pmoe: NCCL      found: ${NCCL_LIBRARY}")
else()
  set(PMOE_HAVE_NCCL OFF)
  message(STATUS "pmoe: NCCL      not found (set NCCL_ROOT)")
endif()

find_package(MPI QUIET COMPONENTS C)
if(MPI_C_FOUND)
  set(PMOE_HAVE_MPI ON)
  message(STATUS "pmoe: MPI       found: ${MPI_C_LIBRARIES}")
else()
  set(PMOE_HAVE_MPI OFF)
  message(STATUS "pmoe: MPI       not found (install libopenmpi-dev): single-process only")
endif()
