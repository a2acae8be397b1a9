# Nvtx.cmake: NVTX 3 ranges for Nsight (header-only, shipped with the CUDA
# toolkit). Found: the engine emits ranges in the domain "pmoe". Absent, or
# -DPMOE_NVTX=OFF: the ranges compile to nothing. Included after pmoe_engine
# is defined.
option(PMOE_NVTX "Emit NVTX ranges when the NVTX 3 headers are found" ON)
find_path(NVTX3_INCLUDE_DIR nvtx3/nvToolsExt.h
  HINTS $ENV{CUDA_HOME} $ENV{CUDA_PATH} /usr/local/cuda ${CUDAToolkit_INCLUDE_DIRS}
  PATH_SUFFIXES include)
if(PMOE_NVTX AND NVTX3_INCLUDE_DIR)
  set(PMOE_HAVE_NVTX ON)
  target_compile_definitions(pmoe_engine PRIVATE PMOE_HAVE_NVTX)
  target_include_directories(pmoe_engine SYSTEM PRIVATE ${NVTX3_INCLUDE_DIR})
  target_link_libraries(pmoe_engine PUBLIC ${CMAKE_DL_LIBS})
  message(STATUS "pmoe: NVTX      found: ${NVTX3_INCLUDE_DIR}/nvtx3 (ranges in domain \"pmoe\")")
elseif(NOT PMOE_NVTX)
  set(PMOE_HAVE_NVTX OFF)
  message(STATUS "pmoe: NVTX      off (PMOE_NVTX=OFF): ranges compiled out")
else()
  set(PMOE_HAVE_NVTX OFF)
  message(STATUS "pmoe: NVTX      not found (no nvtx3/nvToolsExt.h): ranges compiled out")
endif()
