/* cpu_guard.c: the non-finite guard on the CPU (backend.h, nonfinite_guard),
 * twin of src/kernels/nonfinite_guard.cu.
 *
 * The same decision in the same words of backend memory as the kernels:
 * arrays are scanned in list order and the first one holding a NaN or Inf
 * decides the verdict, so the host reads nothing per step on either
 * backend. A value is non-finite when its exponent bits are all ones; the
 * test is an OR over the bits, which vectorises (a branch per value on
 * isfinite() does not), split among OpenMP threads for large arrays (an OR
 * gives the same answer in any order). Arrays after the first bad one are
 * not read. */
#include <string.h>

#include "backend/cpu_ops.h"

static int has_nonfinite(const float *x, int64_t n) {
    uint32_t bad = 0;
#pragma omp parallel for schedule(static) reduction(| : bad) if (n > 65536)
    for (int64_t j = 0; j < n; j++) {
        uint32_t bits;
        memcpy(&bits, &x[j], sizeof bits);
        bad |= (uint32_t)((bits & 0x7f800000u) == 0x7f800000u);
    }
    return bad != 0;
}

void cpu_nonfinite_guard(pmoe_backend *be, int arrays, const float *const *x, const int64_t *count,
                         int64_t step, int hold, int32_t *guard, int32_t *verdict) {
    (void)be;
    int32_t found = 0;
    for (int i = 0; i < arrays && !found; i++)
        if (count[i] > 0 && has_nonfinite(x[i], count[i])) found = i + 1;
    guard[PMOE_GUARD_SCAN] = 0;
    if (guard[PMOE_GUARD_FIRST] == 0 && found != 0) {
        guard[PMOE_GUARD_FIRST] = found;
        guard[PMOE_GUARD_STEP_LOW] = (int32_t)(uint32_t)((uint64_t)step & 0xffffffffu);
        guard[PMOE_GUARD_STEP_HIGH] = (int32_t)(uint32_t)((uint64_t)step >> 32);
    } else if (hold && guard[PMOE_GUARD_FIRST] != 0) {
        found = guard[PMOE_GUARD_FIRST];
    }
    *verdict = found;
}
