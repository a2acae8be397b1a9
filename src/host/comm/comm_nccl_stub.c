/* comm_nccl_stub.c: the NCCL entry points of a build without CUDA, NCCL or
 * MPI (all three are needed for the NCCL communicator). */
#include "comm/comm.h"

int pmoe_comm_nccl_built(void) { return 0; }

pmoe_status pmoe_comm_nccl_open(pmoe_comm *mpi, int cuda_device, void *cuda_stream, pmoe_comm **out,
                                pmoe_error *err) {
    *out = NULL;
    return pmoe_fail(err, PMOE_ERR_UNSUPPORTED,
                     "this build has no NCCL communicator (it needs CUDA, NCCL and MPI at "
                     "configure time)");
}
