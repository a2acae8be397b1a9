/* kernel_common.cuh: what every kernel file shares: warp reductions with a
 * fixed order, grid sizing, and argument errors.
 *
 * Determinism rule for every kernel in this folder: a sum is split the same
 * way on every run (a per-thread loop with a fixed stride, then an xor
 * butterfly, then per-warp partials added in warp order), never with
 * atomics, so two runs give the same bits and the emulator's thread orders
 * cannot change a result. */
#ifndef PMOE_KERNEL_COMMON_CUH
#define PMOE_KERNEL_COMMON_CUH

#include "host_exec.h"
#if PMOE_HOST_EXEC && !defined(PMOE_KERNELS_HOST_EXEC)
#define PMOE_KERNELS_HOST_EXEC /* the pmoe_hx_ launcher names */
#endif
#include "pmoe_kernels.h"

#if PMOE_HOST_EXEC
#define PMOE_KERNEL_NS pmoe_hx_internal
#else
#define PMOE_KERNEL_NS pmoe_k_internal
#endif

#define PMOE_FULL_MASK 0xffffffffu

namespace PMOE_KERNEL_NS {

/* Records a message for error_string() and returns PMOE_KERNEL_ERR_ARGS. */
int argument_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Remembers the name of the kernel this thread launches (PMOE_LAUNCH), for
 * last_launch(): a launch's status names the kernel it follows. */
void note_launch(const char *kernel);

/* Blocks for a grid-stride loop over `total` items: enough to fill a large
 * GPU, capped so the grid stays within limits (the loop covers the rest). */
static inline unsigned grid_for(int64_t total, int threads) {
    int64_t blocks = (total + threads - 1) / threads;
    if (blocks < 1) blocks = 1;
    if (blocks > 65536) blocks = 65536;
    return (unsigned)blocks;
}

/* Every lane gets the same bits: lane a adds v_a + v_b and lane b adds
 * v_b + v_a, and float addition commutes. */
/* Where value i of an expert-major block (k x (B l) x width: expert s's
 * rows b l + t, as dispatch_gather lays them out) comes from: its expert,
 * sample, slot and column, and `pick`, the index of (b, s, t) in the
 * B x k x l selection and gate arrays. */
typedef struct expert_row_place {
    int64_t expert, sample, slot, pick;
    int col;
} expert_row_place;

static __device__ __forceinline__ expert_row_place expert_row_of(int64_t i, int width,
                                                                 int64_t batch, int k, int l) {
    expert_row_place p;
    const int64_t row = i / width, rows_per_expert = batch * l;
    p.col = (int)(i - row * width);
    p.expert = row / rows_per_expert;
    const int64_t r = row - p.expert * rows_per_expert;
    p.sample = r / l;
    p.slot = r - p.sample * l;
    p.pick = (p.sample * k + p.expert) * l + p.slot;
    return p;
}

static __device__ __forceinline__ float warp_sum(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(PMOE_FULL_MASK, v, offset);
    return v;
}
static __device__ __forceinline__ float warp_max(float v) {
    for (int offset = 16; offset > 0; offset >>= 1)
        v = fmaxf(v, __shfl_xor_sync(PMOE_FULL_MASK, v, offset));
    return v;
}
static __device__ __forceinline__ int warp_sum_int(int v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(PMOE_FULL_MASK, v, offset);
    return v;
}

/* Sum over the block of every thread's v; the result reaches every thread.
 * partials must hold blockDim.x / 32 floats of shared memory. Two barriers:
 * the first publishes the warp sums, the second keeps a following call from
 * overwriting them while slow warps still read. */
static __device__ __forceinline__ float block_sum(float v, float *partials) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = warp_sum(v);
    if (lane == 0) partials[warp] = v;
    __syncthreads();
    float total = 0.0f;
    for (int w = 0; w < warps; w++) total += partials[w];
    __syncthreads();
    return total;
}

} /* namespace PMOE_KERNEL_NS */

#endif
