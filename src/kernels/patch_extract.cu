/* patch_extract.cu: images (B x C x H x W) <-> patches (B x n x d).
 *
 * Both directions are gathers with one thread per output element, so the
 * backward needs no atomics: every pixel finds the one patch element it came
 * from (patches do not overlap) or is zero when p does not divide H or W.
 * Consecutive threads write consecutive outputs; the reads are strided by
 * the patch layout, which costs little for p >= 4 and these are not the hot
 * ops of a step. */
#include "kernel_common.cuh"

using namespace PMOE_KERNEL_NS;

static __global__ void patch_extract_forward_kernel(int64_t total, int channels, int height,
                                                    int width, int patch, int per_row, int n, int d,
                                                    const float *__restrict__ images,
                                                    float *__restrict__ patches) {
    const int64_t step = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
        const int64_t row = i / d;
        const int col = (int)(i - row * d);
        const int64_t b = row / n;
        const int j = (int)(row - b * n);
        const int c = col / (patch * patch), within = col - c * patch * patch;
        const int y = (j / per_row) * patch + within / patch;
        const int x = (j % per_row) * patch + within % patch;
        patches[i] = images[((b * channels + c) * height + y) * (int64_t)width + x];
    }
}

static __global__ void patch_extract_backward_kernel(int64_t total, int channels, int height,
                                                     int width, int patch, int per_row, int n,
                                                     int d, const float *__restrict__ dpatches,
                                                     float *__restrict__ dimages) {
    const int64_t step = (int64_t)gridDim.x * blockDim.x;
    const int covered_h = (height / patch) * patch, covered_w = per_row * patch;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
        const int x = (int)(i % width);
        const int64_t rest = i / width;
        const int y = (int)(rest % height);
        const int64_t plane = rest / height; /* b * C + c */
        const int c = (int)(plane % channels);
        const int64_t b = plane / channels;
        float v = 0.0f;
        if (y < covered_h && x < covered_w) {
            const int j = (y / patch) * per_row + x / patch;
            const int col = (c * patch + y % patch) * patch + x % patch;
            v = dpatches[(b * n + j) * (int64_t)d + col];
        }
        dimages[i] = v;
    }
}

static int check_shape(int64_t batch, int channels, int height, int width, int patch) {
    if (batch < 0 || channels < 1 || patch < 1 || height < patch || width < patch)
        return argument_error("patch_extract: bad shape B=%lld C=%d H=%d W=%d p=%d",
                              (long long)batch, channels, height, width, patch);
    return 0;
}

extern "C" int PMOE_KERNEL(patch_extract_forward)(int64_t batch, int channels, int height,
                                                  int width, int patch, const float *images,
                                                  float *patches, void *stream) {
    int rc = check_shape(batch, channels, height, width, patch);
    if (rc) return rc;
    const int per_row = width / patch, n = (height / patch) * per_row;
    const int d = channels * patch * patch;
    const int64_t total = batch * n * (int64_t)d;
    if (!total) return 0;
    PMOE_LAUNCH(patch_extract_forward_kernel, dim3(grid_for(total, 256)), dim3(256), 0, stream,
                total, channels, height, width, patch, per_row, n, d, images, patches);
    return PMOE_LAUNCH_STATUS();
}

extern "C" int PMOE_KERNEL(patch_extract_backward)(int64_t batch, int channels, int height,
                                                   int width, int patch, const float *dpatches,
                                                   float *dimages, void *stream) {
    int rc = check_shape(batch, channels, height, width, patch);
    if (rc) return rc;
    const int per_row = width / patch, n = (height / patch) * per_row;
    const int d = channels * patch * patch;
    const int64_t total = batch * channels * (int64_t)height * width;
    if (!total) return 0;
    PMOE_LAUNCH(patch_extract_backward_kernel, dim3(grid_for(total, 256)), dim3(256), 0, stream,
                total, channels, height, width, patch, per_row, n, d, dpatches, dimages);
    return PMOE_LAUNCH_STATUS();
}
