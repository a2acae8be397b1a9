/* moe_layer.cu: the pMoE convolution layer's routing glue (model/moe_conv.c),
 * with CPU twins in cpu_moe_layer.c: the scatter of expert outputs into the
 * layer's output patches, the dense-masked form's position weights, and the
 * per-patch scaling of a feature map, each forward and backward; and the
 * channel copy (cpu_channel_copy.c) that moves one expert's block of
 * channels into the layer's output map and its gradient back out.
 *
 * The scatters write a zeroed output in two launches: a zero fill, then one
 * thread per picked value writing its one place (the l picks of a sample and
 * expert are distinct, so no two threads share an output and nothing needs
 * atomics). Their adjoints are gathers. The two reductions (dgate of the
 * scatter, dweight of the patch scaling) give one warp to each sum, lanes
 * striding over its terms in the layout's order and then a fixed xor
 * butterfly, so they are bit-identical from run to run. A pick outside
 * [0, n) (which top-l never makes) is skipped: it writes nothing and reads
 * as zero. The channel copy is one thread per copied value in the block's
 * order, so reads and writes are contiguous within each sample. */
#include "kernel_common.cuh"

using namespace PMOE_KERNEL_NS;

enum { ELEMENT_THREADS = 256, WARP_THREADS = 256 };

static __global__ void zero_kernel(int64_t count, float *__restrict__ dst) {
    const int64_t step = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += step)
        dst[i] = 0.0f;
}

/* ---------------------------------------------------------------- scatter */

/* One thread per value of expert_out (k x B l x e), in its order, so the
 * reads are contiguous and each thread writes one place of out_patches
 * (B x n x k e). */
static __global__ void moe_scatter_forward_kernel(int64_t total, int64_t batch, int n, int k, int l,
                                                  int e, const float *__restrict__ expert_out,
                                                  const int32_t *__restrict__ selected,
                                                  const float *__restrict__ gate,
                                                  float *__restrict__ out_patches) {
    const int64_t step = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
        const expert_row_place p = expert_row_of(i, e, batch, k, l);
        const int32_t j = selected[p.pick];
        if ((unsigned)j >= (unsigned)n) continue;
        const float g = gate ? gate[p.pick] : 1.0f;
        out_patches[((p.sample * n + j) * k + p.expert) * (int64_t)e + p.col] = g * expert_out[i];
    }
}

/* dexpert_out = gate dout at the picked places: the forward's gather. */
static __global__ void moe_scatter_backward_values_kernel(int64_t total, int64_t batch, int n,
                                                          int k, int l, int e,
                                                          const float *__restrict__ dout_patches,
                                                          const int32_t *__restrict__ selected,
                                                          const float *__restrict__ gate,
                                                          float *__restrict__ dexpert_out) {
    const int64_t step = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
        const expert_row_place p = expert_row_of(i, e, batch, k, l);
        const int32_t j = selected[p.pick];
        float v = 0.0f;
        if ((unsigned)j < (unsigned)n) {
            const float g = gate ? gate[p.pick] : 1.0f;
            v = g * dout_patches[((p.sample * n + j) * k + p.expert) * (int64_t)e + p.col];
        }
        dexpert_out[i] = v;
    }
}

/* dgate[b, s, t]: one warp per pick, over its e values. */
static __global__ void moe_scatter_backward_gate_kernel(int64_t picks, int64_t batch, int n, int k,
                                                        int l, int e,
                                                        const float *__restrict__ dout_patches,
                                                        const float *__restrict__ expert_out,
                                                        const int32_t *__restrict__ selected,
                                                        float *__restrict__ dgate) {
    const int lane = threadIdx.x & 31;
    const int64_t warps = (int64_t)gridDim.x * (blockDim.x >> 5);
    for (int64_t pick = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); pick < picks;
         pick += warps) {
        const int64_t t = pick % l, bs = pick / l;
        const int64_t s = bs % k, b = bs / k;
        const int32_t j = selected[pick];
        float acc = 0.0f;
        if ((unsigned)j < (unsigned)n) {
            const float *dout = dout_patches + ((b * n + j) * k + s) * (int64_t)e;
            const float *value = expert_out + ((s * batch + b) * l + t) * (int64_t)e;
            for (int i = lane; i < e; i += 32) acc += dout[i] * value[i];
        }
        acc = warp_sum(acc);
        if (lane == 0) dgate[pick] = acc;
    }
}

/* ---------------------------------------------------------------- position weights */

/* weights (k x B x n) at each pick: one thread per pick. */
static __global__ void moe_position_weights_kernel(int64_t picks, int64_t batch, int n, int k,
                                                   int l, const int32_t *__restrict__ selected,
                                                   const float *__restrict__ gate,
                                                   float *__restrict__ weights) {
    const int64_t step = (int64_t)gridDim.x * blockDim.x;
    for (int64_t pick = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; pick < picks;
         pick += step) {
        const int64_t bs = pick / l, s = bs % k, b = bs / k;
        const int32_t j = selected[pick];
        if ((unsigned)j < (unsigned)n) weights[(s * batch + b) * n + j] = gate ? gate[pick] : 1.0f;
    }
}

static __global__ void moe_position_weights_backward_kernel(int64_t picks, int64_t batch, int n,
                                                            int k, int l,
                                                            const int32_t *__restrict__ selected,
                                                            const float *__restrict__ dweights,
                                                            float *__restrict__ dgate) {
    const int64_t step = (int64_t)gridDim.x * blockDim.x;
    for (int64_t pick = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; pick < picks;
         pick += step) {
        const int64_t bs = pick / l, s = bs % k, b = bs / k;
        const int32_t j = selected[pick];
        dgate[pick] = (unsigned)j < (unsigned)n ? dweights[(s * batch + b) * n + j] : 0.0f;
    }
}

/* ---------------------------------------------------------------- patch scaling */

/* The patch of pixel (y, x), or -1 outside every patch (p does not divide
 * H or W): such a pixel's y is 0 and its dx is left as it was, as patch
 * extraction drops it. */
static __device__ __forceinline__ int patch_of(int y, int x, int patch, int per_row,
                                               int per_column) {
    const int py = y / patch, px = x / patch;
    return py < per_column && px < per_row ? py * per_row + px : -1;
}

/* forward: y = w x; backward (dx != NULL): dx += w dy. One thread per pixel. */
static __global__ void patch_scale_kernel(int64_t total, int channels, int height, int width,
                                          int patch, const float *__restrict__ weight,
                                          const float *in, float *out, int accumulate) {
    const int64_t step = (int64_t)gridDim.x * blockDim.x;
    const int per_row = width / patch, per_column = height / patch, n = per_row * per_column;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
        const int x = (int)(i % width);
        const int64_t rest = i / width;
        const int y = (int)(rest % height);
        const int64_t b = rest / height / channels;
        const int j = patch_of(y, x, patch, per_row, per_column);
        if (accumulate) {
            if (j >= 0) out[i] += weight[b * n + j] * in[i];
        } else {
            out[i] = j >= 0 ? weight[b * n + j] * in[i] : 0.0f;
        }
    }
}

/* dweight[b, j] = sum over patch j of dy x, one warp per patch, its C p p
 * values in patch_extract's (c, y, x) order. */
static __global__ void patch_scale_weight_kernel(int64_t patches_total, int channels, int height,
                                                 int width, int patch, const float *__restrict__ x,
                                                 const float *__restrict__ dy,
                                                 float *__restrict__ dweight) {
    const int lane = threadIdx.x & 31;
    const int64_t warps = (int64_t)gridDim.x * (blockDim.x >> 5);
    const int per_row = width / patch, n = per_row * (height / patch);
    const int pp = patch * patch, d = channels * pp;
    for (int64_t q = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
         q < patches_total; q += warps) {
        const int64_t b = q / n;
        const int j = (int)(q - b * n);
        const int y0 = (j / per_row) * patch, x0 = (j % per_row) * patch;
        float acc = 0.0f;
        for (int col = lane; col < d; col += 32) {
            const int c = col / pp, within = col - c * pp;
            const int64_t at = ((b * channels + c) * height + y0 + within / patch) *
                                   (int64_t)width +
                               x0 + within % patch;
            acc += dy[at] * x[at];
        }
        acc = warp_sum(acc);
        if (lane == 0) dweight[q] = acc;
    }
}

/* ---------------------------------------------------------------- channel copy */

/* dst[b, dst_offset + c, i] = src[b, src_offset + c, i]: one thread per
 * value of the block (batch x channels x spatial). Each sample's block is
 * contiguous in both maps, so the split is only into sample and place
 * within it; src and dst start at the block of sample 0. */
static __global__ void channel_copy_kernel(int64_t total, int64_t block, int64_t src_stride,
                                           int64_t dst_stride, const float *__restrict__ src,
                                           float *__restrict__ dst) {
    const int64_t step = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
        const int64_t b = i / block, within = i - b * block;
        dst[b * dst_stride + within] = src[b * src_stride + within];
    }
}

/* ---------------------------------------------------------------- launchers */

static int check_scatter(const char *op, int64_t batch, int n, int k, int l, int e) {
    if (batch < 0 || batch > 0x7fffffff || n < 1 || k < 1 || l < 1 || l > n || e < 1)
        return argument_error("%s: bad shape B=%lld n=%d k=%d l=%d e=%d", op, (long long)batch, n,
                              k, l, e);
    return 0;
}

static int zero(int64_t count, float *dst, void *stream) {
    PMOE_LAUNCH(zero_kernel, dim3(grid_for(count, ELEMENT_THREADS)), dim3(ELEMENT_THREADS), 0,
                stream, count, dst);
    return PMOE_LAUNCH_STATUS();
}

extern "C" int PMOE_KERNEL(moe_scatter_forward)(int64_t batch, int patches, int experts, int topl,
                                                int expert_dim, const float *expert_out,
                                                const int32_t *selected, const float *gate,
                                                float *out_patches, void *stream) {
    int rc = check_scatter("moe_scatter_forward", batch, patches, experts, topl, expert_dim);
    if (rc || !batch) return rc;
    rc = zero(batch * patches * (int64_t)experts * expert_dim, out_patches, stream);
    if (rc) return rc;
    const int64_t total = (int64_t)experts * batch * topl * expert_dim;
    PMOE_LAUNCH(moe_scatter_forward_kernel, dim3(grid_for(total, ELEMENT_THREADS)),
                dim3(ELEMENT_THREADS), 0, stream, total, batch, patches, experts, topl, expert_dim,
                expert_out, selected, gate, out_patches);
    return PMOE_LAUNCH_STATUS();
}

extern "C" int PMOE_KERNEL(moe_scatter_backward)(int64_t batch, int patches, int experts, int topl,
                                                 int expert_dim, const float *dout_patches,
                                                 const float *expert_out, const int32_t *selected,
                                                 const float *gate, float *dexpert_out,
                                                 float *dgate, void *stream) {
    int rc = check_scatter("moe_scatter_backward", batch, patches, experts, topl, expert_dim);
    if (rc || !batch) return rc;
    if (dexpert_out) {
        const int64_t total = (int64_t)experts * batch * topl * expert_dim;
        PMOE_LAUNCH(moe_scatter_backward_values_kernel, dim3(grid_for(total, ELEMENT_THREADS)),
                    dim3(ELEMENT_THREADS), 0, stream, total, batch, patches, experts, topl,
                    expert_dim, dout_patches, selected, gate, dexpert_out);
        rc = PMOE_LAUNCH_STATUS();
        if (rc) return rc;
    }
    if (dgate) {
        const int64_t picks = batch * experts * (int64_t)topl;
        PMOE_LAUNCH(moe_scatter_backward_gate_kernel, dim3(grid_for(picks, WARP_THREADS / 32)),
                    dim3(WARP_THREADS), 0, stream, picks, batch, patches, experts, topl, expert_dim,
                    dout_patches, expert_out, selected, dgate);
        rc = PMOE_LAUNCH_STATUS();
    }
    return rc;
}

extern "C" int PMOE_KERNEL(moe_position_weights)(int64_t batch, int patches, int experts, int topl,
                                                 const int32_t *selected, const float *gate,
                                                 float *weights, void *stream) {
    int rc = check_scatter("moe_position_weights", batch, patches, experts, topl, 1);
    if (rc || !batch) return rc;
    rc = zero((int64_t)experts * batch * patches, weights, stream);
    if (rc) return rc;
    const int64_t picks = batch * experts * (int64_t)topl;
    PMOE_LAUNCH(moe_position_weights_kernel, dim3(grid_for(picks, ELEMENT_THREADS)),
                dim3(ELEMENT_THREADS), 0, stream, picks, batch, patches, experts, topl, selected,
                gate, weights);
    return PMOE_LAUNCH_STATUS();
}

extern "C" int PMOE_KERNEL(moe_position_weights_backward)(int64_t batch, int patches, int experts,
                                                          int topl, const int32_t *selected,
                                                          const float *dweights, float *dgate,
                                                          void *stream) {
    int rc = check_scatter("moe_position_weights_backward", batch, patches, experts, topl, 1);
    if (rc || !batch) return rc;
    const int64_t picks = batch * experts * (int64_t)topl;
    PMOE_LAUNCH(moe_position_weights_backward_kernel, dim3(grid_for(picks, ELEMENT_THREADS)),
                dim3(ELEMENT_THREADS), 0, stream, picks, batch, patches, experts, topl, selected,
                dweights, dgate);
    return PMOE_LAUNCH_STATUS();
}

static int check_patch_scale(const char *op, int64_t batch, int channels, int height, int width,
                             int patch) {
    if (batch < 0 || channels < 1 || patch < 1 || height < patch || width < patch)
        return argument_error("%s: bad shape B=%lld C=%d H=%d W=%d p=%d", op, (long long)batch,
                              channels, height, width, patch);
    return 0;
}

extern "C" int PMOE_KERNEL(patch_scale_forward)(int64_t batch, int channels, int height, int width,
                                                int patch, const float *weight, const float *x,
                                                float *y, void *stream) {
    int rc = check_patch_scale("patch_scale_forward", batch, channels, height, width, patch);
    if (rc || !batch) return rc;
    const int64_t total = batch * channels * (int64_t)height * width;
    PMOE_LAUNCH(patch_scale_kernel, dim3(grid_for(total, ELEMENT_THREADS)), dim3(ELEMENT_THREADS),
                0, stream, total, channels, height, width, patch, weight, x, y, 0);
    return PMOE_LAUNCH_STATUS();
}

extern "C" int PMOE_KERNEL(patch_scale_backward)(int64_t batch, int channels, int height, int width,
                                                 int patch, const float *weight, const float *x,
                                                 const float *dy, float *dx, float *dweight,
                                                 void *stream) {
    int rc = check_patch_scale("patch_scale_backward", batch, channels, height, width, patch);
    if (rc || !batch) return rc;
    if (dx) {
        const int64_t total = batch * channels * (int64_t)height * width;
        PMOE_LAUNCH(patch_scale_kernel, dim3(grid_for(total, ELEMENT_THREADS)),
                    dim3(ELEMENT_THREADS), 0, stream, total, channels, height, width, patch, weight,
                    dy, dx, 1);
        rc = PMOE_LAUNCH_STATUS();
        if (rc) return rc;
    }
    if (dweight) {
        const int64_t patches_total = batch * (int64_t)(height / patch) * (width / patch);
        PMOE_LAUNCH(patch_scale_weight_kernel, dim3(grid_for(patches_total, WARP_THREADS / 32)),
                    dim3(WARP_THREADS), 0, stream, patches_total, channels, height, width, patch, x,
                    dy, dweight);
        rc = PMOE_LAUNCH_STATUS();
    }
    return rc;
}

extern "C" int PMOE_KERNEL(channel_copy)(int64_t batch, int64_t spatial, int channels,
                                         const float *src, int src_channels, int src_offset,
                                         float *dst, int dst_channels, int dst_offset,
                                         void *stream) {
    if (batch < 0 || spatial < 0 || channels < 0 || src_offset < 0 || dst_offset < 0 ||
        (int64_t)src_offset + channels > src_channels ||
        (int64_t)dst_offset + channels > dst_channels)
        return argument_error("channel_copy: bad shape B=%lld spatial=%lld channels=%d "
                              "src %d+%d of %d, dst %d+%d of %d",
                              (long long)batch, (long long)spatial, channels, src_offset, channels,
                              src_channels, dst_offset, channels, dst_channels);
    const int64_t block = (int64_t)channels * spatial, total = batch * block;
    if (!total) return 0;
    PMOE_LAUNCH(channel_copy_kernel, dim3(grid_for(total, ELEMENT_THREADS)), dim3(ELEMENT_THREADS),
                0, stream, total, block, (int64_t)src_channels * spatial,
                (int64_t)dst_channels * spatial, src + (int64_t)src_offset * spatial,
                dst + (int64_t)dst_offset * spatial);
    return PMOE_LAUNCH_STATUS();
}
