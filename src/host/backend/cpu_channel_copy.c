/* cpu_channel_copy.c: the CPU twin of the channel_copy op (backend.h): a
 * block of channels moved between two NCHW maps, one memcpy per sample
 * (each sample's block is contiguous in both maps). */
#include <string.h>

#include "backend/cpu_ops.h"

void cpu_channel_copy(pmoe_backend *be, int64_t batch, int64_t spatial, int channels,
                      const float *src, int src_channels, int src_offset, float *dst,
                      int dst_channels, int dst_offset) {
    const size_t bytes = (size_t)channels * (size_t)spatial * sizeof(float);
#pragma omp parallel for schedule(static) if (batch * channels * spatial > 65536)
    for (int64_t b = 0; b < batch; b++)
        memcpy(dst + (b * dst_channels + dst_offset) * spatial,
               src + (b * src_channels + src_offset) * spatial, bytes);
}
