# Dependencies.cmake: find what pmoe links, and say what was found.
#
# Required for the CPU engine: OpenBLAS, OpenMP, zlib, inih, cJSON, libpng, libjpeg (each
# also found under <NAME>_ROOT, a prefix, for machines without pkg-config or
# the -dev packages). Optional, each reported on its own line: CUDA (nvcc),
# cuDNN, NCCL (cmake/Accelerators.cmake), MPI.

find_package(OpenMP REQUIRED COMPONENTS C)
# FindZLIB honours ZLIB_ROOT, a prefix (such as Debian packages unpacked with
# dpkg -x on a machine without them: see tools/fetch_device_deps.sh).
find_package(ZLIB REQUIRED)
# pkg-config is used where present; a machine without it names prefixes.
find_package(PkgConfig QUIET)

# OpenBLAS: Debian installs cblas.h under an alternatives-managed folder;
# OPENBLAS_ROOT (cache or environment) names another prefix to look in first.
set(_pmoe_blas_root ${OPENBLAS_ROOT} $ENV{OPENBLAS_ROOT})
list(TRANSFORM _pmoe_blas_root APPEND /include OUTPUT_VARIABLE _pmoe_blas_include_hints)
list(TRANSFORM _pmoe_blas_root APPEND /lib OUTPUT_VARIABLE _pmoe_blas_lib_hints)
find_path(OPENBLAS_INCLUDE_DIR cblas.h HINTS ${_pmoe_blas_include_hints}
  PATH_SUFFIXES openblas openblas-pthread openblas-openmp x86_64-linux-gnu
    x86_64-linux-gnu/openblas-pthread x86_64-linux-gnu/openblas-openmp)
find_library(OPENBLAS_LIBRARY NAMES openblas HINTS ${_pmoe_blas_lib_hints}
  PATH_SUFFIXES x86_64-linux-gnu x86_64-linux-gnu/openblas-pthread x86_64-linux-gnu/openblas-openmp)
if(NOT OPENBLAS_INCLUDE_DIR OR NOT OPENBLAS_LIBRARY)
  message(FATAL_ERROR "pmoe: OpenBLAS not found (install libopenblas-dev, or set OPENBLAS_ROOT to a prefix)")
endif()
add_library(PMOE::openblas INTERFACE IMPORTED)
target_include_directories(PMOE::openblas INTERFACE ${OPENBLAS_INCLUDE_DIR})
target_link_libraries(PMOE::openblas INTERFACE ${OPENBLAS_LIBRARY})
message(STATUS "pmoe: OpenBLAS  found: ${OPENBLAS_LIBRARY}")

# pmoe_find_plain(VAR TARGET HEADER LIBRARY PKG_MODULE DEBIAN_PACKAGE [SUFFIX]):
# a C library with one header and one .so, as PMOE::<TARGET>. With VAR_ROOT
# set (cache or environment) it looks there first; else pkg-config; else the
# default paths.
function(pmoe_find_plain var target header library module package)
  set(root ${${var}_ROOT} $ENV{${var}_ROOT})
  if(NOT root AND PKG_CONFIG_FOUND)
    pkg_check_modules(${var} QUIET IMPORTED_TARGET ${module})
    if(${var}_FOUND)
      add_library(PMOE::${target} ALIAS PkgConfig::${var})
      message(STATUS "pmoe: ${target}${ARGN} found: ${${var}_LINK_LIBRARIES}")
      return()
    endif()
  endif()
  list(TRANSFORM root APPEND /include OUTPUT_VARIABLE include_hints)
  list(TRANSFORM root APPEND /lib OUTPUT_VARIABLE lib_hints)
  find_path(${var}_INCLUDE_DIR ${header} HINTS ${include_hints})
  find_library(${var}_LIBRARY NAMES ${library} HINTS ${lib_hints} PATH_SUFFIXES x86_64-linux-gnu)
  if(NOT ${var}_INCLUDE_DIR OR NOT ${var}_LIBRARY)
    message(FATAL_ERROR "pmoe: ${target} not found (install ${package}, or set ${var}_ROOT to a prefix)")
  endif()
  add_library(PMOE::${target} INTERFACE IMPORTED)
  target_include_directories(PMOE::${target} INTERFACE ${${var}_INCLUDE_DIR})
  target_link_libraries(PMOE::${target} INTERFACE ${${var}_LIBRARY})
  message(STATUS "pmoe: ${target}${ARGN} found: ${${var}_LIBRARY}")
endfunction()

pmoe_find_plain(INIH inih ini.h inih inih libinih-dev "     ")
pmoe_find_plain(CJSON cjson cjson/cJSON.h cjson libcjson libcjson-dev "    ")

# libpng: `pmoe route` writes its pictures with it. FindPNG honours PNG_ROOT.
find_package(PNG QUIET)
if(NOT PNG_FOUND)
  message(FATAL_ERROR "pmoe: libpng not found (install libpng-dev, or set PNG_ROOT to a prefix)")
endif()
message(STATUS "pmoe: libpng    found: ${PNG_LIBRARIES}")

# libjpeg (Debian/Ubuntu: libjpeg-dev, which is libjpeg-turbo): the folder
# source and pmoe predict read JPEG files with it. FindJPEG honours JPEG_ROOT.
find_package(JPEG QUIET)
if(NOT JPEG_FOUND)
  message(FATAL_ERROR "pmoe: libjpeg not found (install libjpeg-dev, i.e. libjpeg62-turbo-dev on "
    "Debian or libjpeg-turbo8-dev on Ubuntu, or set JPEG_ROOT to a prefix)")
endif()
message(STATUS "pmoe: libjpeg   found: ${JPEG_LIBRARIES}")

include(cmake/Accelerators.cmake)
find_package(MPI QUIET COMPONENTS C)
if(MPI_C_FOUND)
  set(PMOE_HAVE_MPI ON)
  message(STATUS "pmoe: MPI       found: ${MPI_C_LIBRARIES}")
else()
  set(PMOE_HAVE_MPI OFF)
  message(STATUS "pmoe: MPI       not found (install libopenmpi-dev): single-process only")
endif()
