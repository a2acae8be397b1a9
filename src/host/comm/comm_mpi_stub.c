/* comm_mpi_stub.c: the MPI entry points of a build without MPI.
 *
 * Linked instead of comm_mpi.c, so every build has the same symbols and
 * callers never need #ifdef: asking for MPI fails with a message that says
 * how to get it; train.comm = auto quietly runs as a single process. */
#include "comm/comm.h"

int pmoe_comm_mpi_built(void) { return 0; }

pmoe_status pmoe_comm_mpi_open(pmoe_comm **out, pmoe_error *err) {
    *out = NULL;
    return pmoe_fail(err, PMOE_ERR_UNSUPPORTED,
                     "this build has no MPI (install libopenmpi-dev and configure again)");
}
