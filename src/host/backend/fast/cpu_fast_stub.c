/* cpu_fast_stub.c: the fast path's stand-in in a build without oneDNN
 * (cmake/Onednn.cmake): asking for it is an error that names the cure. */
#include "backend/cpu_fast.h"

pmoe_status cpu_fast_open(cpu_impl *impl, pmoe_error *err) {
    return pmoe_fail(err, PMOE_ERR_UNSUPPORTED,
                     "train.cpu_kernels = fast: this build has no oneDNN (install libdnnl-dev "
                     "and rebuild); use reference");
}

void cpu_fast_close(cpu_impl *impl) {}
