/* float_round.cu: copies of float buffers rounded to TF32 or bfloat16, the
 * inputs a CUDA backend hands cuBLAS and cuDNN under train.precision = bf16
 * (and the CPU twin: cpu_precision.c). Elementwise through float_round.h,
 * the one rounding function every backend uses, so both backends round to
 * the same bits; a grid-stride loop with consecutive threads on consecutive
 * floats. */
#include "float_round.h"
#include "kernel_common.cuh"

using namespace PMOE_KERNEL_NS;

static __global__ void round_floats_kernel(int64_t count, const float *__restrict__ src,
                                           float *__restrict__ dst, int precision) {
    const int64_t step = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += step)
        dst[i] = pmoe_round_as(src[i], precision);
}

extern "C" int PMOE_KERNEL(round_floats)(int64_t count, const float *src, float *dst, int precision,
                                         void *stream) {
    if (count < 0 || precision < PMOE_ROUND_NONE || precision > PMOE_ROUND_BF16)
        return argument_error("round_floats: count %lld precision %d", (long long)count, precision);
    if (!count) return 0;
    PMOE_LAUNCH(round_floats_kernel, dim3(grid_for(count, 256)), dim3(256), 0, stream, count, src,
                dst, precision);
    return PMOE_LAUNCH_STATUS();
}
