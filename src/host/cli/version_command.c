/* version_command.c: `pmoe --version`: the release, the commit the binary was
 * built from (generated/pmoe_version.h, rewritten at every build by
 * cmake/WriteVersion.cmake, so a rebuilt binary never names a stale commit)
 * and what this build holds: backends and communicators. The reproduction
 * scripts stamp their outputs with this line. */
#include <stdio.h>

#include "cli/commands.h"
#include "comm/comm.h"
#include "cuda/cuda_backend.h"
#include "cuda/cuda_conv.h"
#include "pmoe_version.h"

int pmoe_cli_version(int argc, char **argv) {
    (void)argc;
    (void)argv;
    printf("pmoe %s (commit %s); backends: cpu%s%s; communicators: single%s%s\n", PMOE_VERSION,
           PMOE_GIT_COMMIT, pmoe_cuda_built() ? ", cuda" : "",
           pmoe_cuda_conv_built() ? ", cudnn" : "", pmoe_comm_mpi_built() ? ", mpi" : "",
           pmoe_comm_nccl_built() ? ", nccl" : "");
    return 0;
}
