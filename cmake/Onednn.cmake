# Onednn.cmake: the CPU backend's fast path (train.cpu_kernels = fast).
#
# oneDNN (Debian: libdnnl-dev) is looked for, not assumed: found, the fast
# path's convolutions and batch norms (src/host/backend/fast/cpu_fast.c) are
# built in; absent, a stub answers train.cpu_kernels = fast with a one-line
# error and the reference path is all there is. Included from CMakeLists.txt
# after pmoe_engine is defined.
set(_pmoe_fast ${PROJECT_SOURCE_DIR}/src/host/backend/fast)
option(PMOE_WITH_ONEDNN "Build the CPU fast path when oneDNN is found" ON)
if(PMOE_WITH_ONEDNN)
  find_package(dnnl CONFIG QUIET)
endif()
if(PMOE_WITH_ONEDNN AND dnnl_FOUND)
  set(PMOE_HAVE_ONEDNN ON)
  target_sources(pmoe_engine PRIVATE ${_pmoe_fast}/cpu_fast.c)
  target_link_libraries(pmoe_engine PUBLIC DNNL::dnnl)
  message(STATUS "pmoe: cpu fast  oneDNN ${dnnl_VERSION} (train.cpu_kernels = fast available)")
else()
  set(PMOE_HAVE_ONEDNN OFF)
  target_sources(pmoe_engine PRIVATE ${_pmoe_fast}/cpu_fast_stub.c)
  message(STATUS "pmoe: cpu fast  absent (no oneDNN: install libdnnl-dev for train.cpu_kernels = fast)")
endif()
