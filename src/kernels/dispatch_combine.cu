/* dispatch_combine.cu: moving patches to their experts and expert outputs
 * back to their samples, forward and backward, with fixed summation orders
 * and no atomics.
 *
 * dispatch_gather copies row selected[b, e, t] of sample b to row b l + t of
 * expert e. Its adjoint is a scatter-add, done here as a gather: a block per
 * sample builds, in shared memory, the inverse of the sample's picks (for a
 * chunk of experts: which slot t of expert e took patch j, or -1; a patch is
 * picked at most once per expert), then every patch element adds its
 * contributions in expert order. With the same float additions in the same
 * order as the CPU twin, the result is bit-identical to it.
 *
 * combine_forward: one warp per (sample, class) sums its k l rows. The
 * backward writes dhidden and dgate with one thread per row, and dout_w (a
 * reduction over all B l rows of an expert) with one block per weight. */
#include "kernel_common.cuh"

using namespace PMOE_KERNEL_NS;

enum { INVERSE_TABLE_INTS = 8192, INVERSE_TABLE_MAX_INTS = 12288 };

static __global__ void dispatch_gather_kernel(int64_t total, int64_t batch, int n, int d, int k,
                                              int l, const float *__restrict__ patches,
                                              const int32_t *__restrict__ selected,
                                              float *__restrict__ expert_in) {
    const int64_t step = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
        const expert_row_place p = expert_row_of(i, d, batch, k, l);
        const int32_t j = selected[p.pick];
        expert_in[i] = (unsigned)j < (unsigned)n ? patches[(p.sample * n + j) * (int64_t)d + p.col]
                                                 : 0.0f;
    }
}

static __global__ void dispatch_gather_backward_kernel(int64_t batch, int n, int d, int k, int l,
                                                       int chunk,
                                                       const float *__restrict__ dexpert_in,
                                                       const int32_t *__restrict__ selected,
                                                       float *dpatches) {
    PMOE_SHARED_DYNAMIC(int, slot_of); /* slot_of[e n + j] for the chunk's experts */
    const int64_t b = blockIdx.x;
    const int64_t elements = (int64_t)n * d;
    float *mine = dpatches + b * elements;
    for (int e0 = 0; e0 < k; e0 += chunk) {
        const int count = k - e0 < chunk ? k - e0 : chunk;
        for (int i = threadIdx.x; i < count * n; i += blockDim.x) slot_of[i] = -1;
        __syncthreads();
        for (int i = threadIdx.x; i < count * l; i += blockDim.x) {
            const int e = i / l, t = i - e * l;
            const int32_t j = selected[(b * k + e0 + e) * l + t];
            if ((unsigned)j < (unsigned)n) slot_of[e * n + j] = t;
        }
        __syncthreads();
        for (int64_t i = (int64_t)blockIdx.y * blockDim.x + threadIdx.x; i < elements;
             i += (int64_t)gridDim.y * blockDim.x) {
            const int j = (int)(i / d), col = (int)(i - (int64_t)j * d);
            float acc = e0 == 0 ? 0.0f : mine[i];
            for (int e = 0; e < count; e++) {
                const int t = slot_of[e * n + j];
                if (t >= 0) acc += dexpert_in[(((int64_t)(e0 + e) * batch + b) * l + t) * d + col];
            }
            mine[i] = acc;
        }
        __syncthreads(); /* the table is rebuilt for the next chunk */
    }
}

static __global__ void combine_forward_kernel(int64_t batch, int k, int l, int h, int classes,
                                              const float *__restrict__ hidden,
                                              const float *__restrict__ gate,
                                              const float *__restrict__ out_w,
                                              float *__restrict__ logits) {
    const int64_t b = blockIdx.x;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    const int rows = k * l;
    for (int c = warp; c < classes; c += warps) {
        float acc = 0.0f;
        for (int q = lane; q < rows; q += 32) {
            const int e = q / l, t = q - e * l;
            const float *row = hidden + (((int64_t)e * batch + b) * l + t) * h;
            const float *a = out_w + (int64_t)e * h * classes + c;
            float unit = 0.0f;
            for (int r = 0; r < h; r++) unit += a[(int64_t)r * classes] * row[r];
            acc += (gate ? gate[(b * k + e) * l + t] : 1.0f) * unit;
        }
        acc = warp_sum(acc);
        if (lane == 0) logits[b * classes + c] = acc / (float)l;
    }
}

/* One thread per row (e, b, t) of hidden. */
static __global__ void
combine_backward_rows_kernel(int64_t batch, int k, int l, int h, int classes,
                             const float *__restrict__ dlogits, const float *__restrict__ hidden,
                             const float *__restrict__ gate, const float *__restrict__ out_w,
                             float *__restrict__ dhidden, float *__restrict__ dgate) {
    const int64_t rows = (int64_t)k * batch * l;
    const int64_t step = (int64_t)gridDim.x * blockDim.x;
    const float inv_l = 1.0f / (float)l;
    for (int64_t row = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; row < rows; row += step) {
        const int64_t e = row / (batch * l), r = row - e * batch * l;
        const int64_t b = r / l, t = r - b * l;
        const int64_t gate_at = (b * k + e) * l + t;
        const float g = gate ? gate[gate_at] : 1.0f;
        const float *dlog = dlogits + b * classes;
        float dg = 0.0f;
        for (int u = 0; u < h; u++) {
            const float *a = out_w + (e * h + u) * (int64_t)classes;
            float dunit = 0.0f; /* sum_c dL/df_c a[e, u, c] */
            for (int c = 0; c < classes; c++) dunit += dlog[c] * a[c];
            dhidden[row * h + u] = dunit * g * inv_l;
            dg += dunit * hidden[row * h + u];
        }
        if (dgate) dgate[gate_at] = dg * inv_l;
    }
}

/* One block per weight (e, u, c): a block-wide sum over the expert's B l rows. */
static __global__ void
combine_backward_weights_kernel(int64_t batch, int k, int l, int h, int classes,
                                const float *__restrict__ dlogits, const float *__restrict__ hidden,
                                const float *__restrict__ gate, float *__restrict__ dout_w) {
    PMOE_SHARED(float, partials, 32);
    const int64_t w = blockIdx.x;
    const int c = (int)(w % classes);
    const int64_t eu = w / classes;
    const int u = (int)(eu % h);
    const int64_t e = eu / h;
    const int64_t rows = batch * l;
    float acc = 0.0f;
    for (int64_t q = threadIdx.x; q < rows; q += blockDim.x) {
        const int64_t b = q / l, t = q - b * l;
        const float g = gate ? gate[(b * k + e) * l + t] : 1.0f;
        acc += dlogits[b * classes + c] * g * hidden[(e * rows + q) * h + u];
    }
    const float total = block_sum(acc, partials);
    if (threadIdx.x == 0) dout_w[w] = total / (float)l;
}

static int check_route(const char *op, int64_t batch, int n, int d, int k, int l) {
    if (batch < 0 || batch > 0x7fffffff || n < 1 || d < 1 || k < 1 || l < 1 || l > n)
        return argument_error("%s: bad shape B=%lld n=%d d=%d k=%d l=%d", op, (long long)batch, n,
                              d, k, l);
    return 0;
}

extern "C" int PMOE_KERNEL(dispatch_gather)(int64_t batch, int patches, int dim, int experts,
                                            int topl, const float *patch_data,
                                            const int32_t *selected, float *expert_in,
                                            void *stream) {
    int rc = check_route("dispatch_gather", batch, patches, dim, experts, topl);
    if (rc || !batch) return rc;
    const int64_t total = (int64_t)experts * batch * topl * dim;
    PMOE_LAUNCH(dispatch_gather_kernel, dim3(grid_for(total, 256)), dim3(256), 0, stream, total,
                batch, patches, dim, experts, topl, patch_data, selected, expert_in);
    return PMOE_LAUNCH_STATUS();
}

extern "C" int PMOE_KERNEL(dispatch_gather_backward)(int64_t batch, int patches, int dim,
                                                     int experts, int topl, const float *dexpert_in,
                                                     const int32_t *selected, float *dpatches,
                                                     void *stream) {
    int rc = check_route("dispatch_gather_backward", batch, patches, dim, experts, topl);
    if (!rc && patches > INVERSE_TABLE_MAX_INTS)
        rc = argument_error("dispatch_gather_backward: n = %d patches exceed the %d of one block's "
                            "shared table",
                            patches, INVERSE_TABLE_MAX_INTS);
    if (rc || !batch) return rc;
    int chunk = INVERSE_TABLE_INTS / patches;
    chunk = chunk < 1 ? 1 : chunk > experts ? experts : chunk;
    /* Enough blocks per sample to fill the GPU at small B, each at least
     * 2048 elements so the table is built for a useful amount of work. */
    int64_t split = ((int64_t)patches * dim + 2047) / 2048;
    split = split < 1 ? 1 : split > 64 ? 64 : split;
    PMOE_LAUNCH(dispatch_gather_backward_kernel, dim3((unsigned)batch, (unsigned)split), dim3(256),
                (size_t)chunk * patches * sizeof(int), stream, batch, patches, dim, experts, topl,
                chunk, dexpert_in, selected, dpatches);
    return PMOE_LAUNCH_STATUS();
}

static int check_combine(const char *op, int64_t batch, int k, int l, int h, int classes) {
    if (batch < 0 || batch > 0x7fffffff || k < 1 || l < 1 || h < 1 || classes < 1)
        return argument_error("%s: bad shape B=%lld k=%d l=%d h=%d c=%d", op, (long long)batch, k,
                              l, h, classes);
    return 0;
}

extern "C" int PMOE_KERNEL(combine_forward)(int64_t batch, int experts, int topl, int hidden,
                                            int classes, const float *hidden_data,
                                            const float *gate, const float *out_w, float *logits,
                                            void *stream) {
    int rc = check_combine("combine_forward", batch, experts, topl, hidden, classes);
    if (rc || !batch) return rc;
    const int warps = classes < 4 ? classes : 4;
    PMOE_LAUNCH(combine_forward_kernel, dim3((unsigned)batch), dim3(32 * warps), 0, stream, batch,
                experts, topl, hidden, classes, hidden_data, gate, out_w, logits);
    return PMOE_LAUNCH_STATUS();
}

extern "C" int PMOE_KERNEL(combine_backward)(int64_t batch, int experts, int topl, int hidden,
                                             int classes, const float *dlogits,
                                             const float *hidden_data, const float *gate,
                                             const float *out_w, float *dhidden, float *dgate,
                                             float *dout_w, void *stream) {
    int rc = check_combine("combine_backward", batch, experts, topl, hidden, classes);
    if (rc || !batch) return rc;
    const int64_t rows = (int64_t)experts * batch * topl;
    PMOE_LAUNCH(combine_backward_rows_kernel, dim3(grid_for(rows, 128)), dim3(128), 0, stream,
                batch, experts, topl, hidden, classes, dlogits, hidden_data, gate, out_w, dhidden,
                dgate);
    rc = PMOE_LAUNCH_STATUS();
    if (rc || !dout_w) return rc;
    const int64_t weights = (int64_t)experts * hidden * classes;
    if (weights > 0x7fffffff)
        return argument_error("combine_backward: %lld output weights", (long long)weights);
    PMOE_LAUNCH(combine_backward_weights_kernel, dim3((unsigned)weights), dim3(128), 0, stream,
                batch, experts, topl, hidden, classes, dlogits, hidden_data, gate, dout_w);
    return PMOE_LAUNCH_STATUS();
}
