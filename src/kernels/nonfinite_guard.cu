/* nonfinite_guard.cu: the non-finite guard (backend.h, nonfinite_guard),
 * decided on the device so the host never waits for a step's verdict.
 *
 * One scan launch per array, in the order of the list, then one
 * single-thread launch that turns the scan into the step's verdict. A
 * value is non-finite when its exponent bits are all ones (NaN and Inf
 * alike). The scan of array i writes 1 + i into guard[SCAN] only while
 * the word is 0: launches on one stream run in order, so an earlier array's
 * mark is already there and wins, and within one launch every writer
 * writes the same value, so plain stores need no atomics and the result
 * does not depend on which thread or block gets there first. The finishing
 * launch resets SCAN to 0, which is also the state of a zeroed guard, so
 * the next step starts clean. The verdict's word is written only by the
 * finishing launch, after every scan, so update kernels queued behind it
 * read the whole step's answer. */
#include <string.h>

#include "kernel_common.cuh"

using namespace PMOE_KERNEL_NS;

static __device__ __forceinline__ int nonfinite(float v) {
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    return (bits & 0x7f800000u) == 0x7f800000u;
}

static __global__ void guard_scan_kernel(int64_t count, const float *__restrict__ x, int32_t mark,
                                         int32_t *__restrict__ guard) {
    if (guard[PMOE_KERNEL_GUARD_SCAN] != 0) return; /* an earlier array already decided */
    const int64_t step = (int64_t)gridDim.x * blockDim.x;
    int bad = 0;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += step)
        bad |= nonfinite(x[i]);
    if (bad) guard[PMOE_KERNEL_GUARD_SCAN] = mark;
}

static __global__ void guard_finish_kernel(int64_t step, int hold, int32_t *__restrict__ guard,
                                           int32_t *__restrict__ verdict) {
    if (threadIdx.x != 0 || blockIdx.x != 0) return;
    int32_t found = guard[PMOE_KERNEL_GUARD_SCAN];
    guard[PMOE_KERNEL_GUARD_SCAN] = 0;
    if (guard[PMOE_KERNEL_GUARD_FIRST] == 0 && found != 0) {
        guard[PMOE_KERNEL_GUARD_FIRST] = found;
        guard[PMOE_KERNEL_GUARD_STEP_LOW] = (int32_t)(uint32_t)((uint64_t)step & 0xffffffffu);
        guard[PMOE_KERNEL_GUARD_STEP_HIGH] = (int32_t)(uint32_t)((uint64_t)step >> 32);
    } else if (hold && guard[PMOE_KERNEL_GUARD_FIRST] != 0) {
        found = guard[PMOE_KERNEL_GUARD_FIRST];
    }
    *verdict = found;
}

enum { SCAN_THREADS = 256 };

extern "C" int PMOE_KERNEL(nonfinite_guard)(int arrays, const float *const *x, const int64_t *count,
                                            int64_t step, int hold, int32_t *guard,
                                            int32_t *verdict, void *stream) {
    if (arrays < 0 || (arrays > 0 && (!x || !count)) || !guard || !verdict)
        return argument_error("nonfinite_guard: bad arguments (arrays %d)", arrays);
    for (int i = 0; i < arrays; i++) {
        if (count[i] < 0)
            return argument_error("nonfinite_guard: array %d has count %lld", i,
                                  (long long)count[i]);
        if (!count[i]) continue;
        PMOE_LAUNCH(guard_scan_kernel, dim3(grid_for(count[i], SCAN_THREADS)), dim3(SCAN_THREADS),
                    0, stream, count[i], x[i], (int32_t)(i + 1), guard);
        const int rc = PMOE_LAUNCH_STATUS();
        if (rc) return rc;
    }
    PMOE_LAUNCH(guard_finish_kernel, dim3(1), dim3(1), 0, stream, step, hold, guard, verdict);
    return PMOE_LAUNCH_STATUS();
}
