# Mpi.cmake: the communicator (src/host/comm) in pmoe_engine.
#
# Always the single-process communicator (comm.c). MPI (found by
# Dependencies.cmake as PMOE_HAVE_MPI): comm_mpi.c and MPI::MPI_C, else a stub
# that fails with a message, so train.comm = auto runs as one process. NCCL
# needs CUDA, NCCL (cmake/Accelerators.cmake) and MPI (its bootstrap and
# control ops): comm_nccl.c, else a stub. Included from CMakeLists.txt after
# pmoe_engine and the CUDA backend are defined.

set(_pmoe_comm ${PROJECT_SOURCE_DIR}/src/host/comm)
target_sources(pmoe_engine PRIVATE ${_pmoe_comm}/comm.c)

if(PMOE_HAVE_MPI)
  target_sources(pmoe_engine PRIVATE ${_pmoe_comm}/comm_mpi.c)
  target_link_libraries(pmoe_engine PUBLIC MPI::MPI_C)
  find_program(PMOE_MPIEXEC NAMES mpirun mpiexec HINTS ${MPI_HOME} ENV MPI_HOME PATH_SUFFIXES bin)
else()
  target_sources(pmoe_engine PRIVATE ${_pmoe_comm}/comm_mpi_stub.c)
endif()

if(PMOE_HAVE_MPI AND PMOE_HAVE_NCCL AND PMOE_HAVE_CUDA)
  set(PMOE_HAVE_NCCL_COMM ON)
  target_sources(pmoe_engine PRIVATE ${_pmoe_comm}/comm_nccl.c)
  target_link_libraries(pmoe_engine PUBLIC PMOE::nccl CUDA::cudart_static)
  message(STATUS "pmoe: comm      single, mpi, nccl (expert parallelism on CPUs and GPUs)")
elseif(PMOE_HAVE_MPI)
  set(PMOE_HAVE_NCCL_COMM OFF)
  target_sources(pmoe_engine PRIVATE ${_pmoe_comm}/comm_nccl_stub.c)
  message(STATUS "pmoe: comm      single, mpi (no nccl: it needs CUDA, NCCL and MPI)")
else()
  set(PMOE_HAVE_NCCL_COMM OFF)
  target_sources(pmoe_engine PRIVATE ${_pmoe_comm}/comm_nccl_stub.c)
  message(STATUS "pmoe: comm      single only (no MPI: install libopenmpi-dev for expert parallelism)")
endif()
