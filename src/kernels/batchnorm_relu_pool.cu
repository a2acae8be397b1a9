/* batchnorm_relu_pool.cu: the deep models' dense layers other than the convolution
 * itself (cuDNN's): ReLU out of place, axpby, global average pooling, the
 * per-channel bias, and batch norm (training statistics, evaluation mode,
 * backward), with their CPU twins in cpu_layers.c.
 *
 * Elementwise kernels are grid-stride loops, one thread per output element.
 * The bias gradient runs in one block per channel: thread t sums the
 * channel's values t, t + 256, ... of its batch * spatial in that order,
 * then a fixed-shape tree in shared memory adds the 256 partials.
 *
 * Batch norm is memory bound, and one block per channel left SMs idle when
 * channels are few (16 in a WRN's first group) and kept one load in flight
 * per thread. Its reductions now split each channel's batch * spatial
 * values into `splits` contiguous ranges, one block each (splits depends on
 * the count alone: about 4096 values a block, at most 64 blocks a channel),
 * and each thread keeps UNROLL independent loads in flight (accumulators
 * a..d, added in a fixed order). A block's sum goes through the same tree to
 * a per-block partial in the caller's workspace
 * (batchnorm_workspace_floats), and every block that needs a channel's
 * total adds that channel's partials in split order. Two runs, and any
 * thread order of the emulator, give the same bits; nothing is atomic.
 * The design target for a GPU (60% of the card's memory bandwidth on a
 * 128 x 640 x 8 x 8 map) is not measured: no GPU has run it yet.
 *
 * Batch norm's variance is a second pass over (x - mean)^2 rather than
 * E[x^2] - mean^2, which cancels badly for inputs far from zero. Backwards
 * add into dx (the table's contract: a residual block's input collects two
 * gradients); parameter gradients are overwritten; a NULL gradient is not
 * computed. */
#include "kernel_common.cuh"

using namespace PMOE_KERNEL_NS;

enum { ELEMENT_THREADS = 256, CHANNEL_THREADS = 256 };

/* Sums every thread's v[0..N) over the block with a tree of fixed shape;
 * the totals reach every thread. sums holds N * CHANNEL_THREADS floats and
 * blockDim.x must be CHANNEL_THREADS (a power of two). The barrier inside
 * the loop makes each level read the finished level above it; the last
 * keeps a following call from overwriting sums[0] before every thread has
 * read it. Without either one, test_kernels_host_layers fails (its thread
 * orders give different sums). */
template <int N>
static __device__ __forceinline__ void channel_sums(float (&v)[N], float *sums) {
    const int t = threadIdx.x;
    for (int m = 0; m < N; m++) sums[m * CHANNEL_THREADS + t] = v[m];
    __syncthreads();
    for (int half = CHANNEL_THREADS / 2; half > 0; half >>= 1) {
        if (t < half)
            for (int m = 0; m < N; m++)
                sums[m * CHANNEL_THREADS + t] += sums[m * CHANNEL_THREADS + t + half];
        __syncthreads();
    }
    for (int m = 0; m < N; m++) v[m] = sums[m * CHANNEL_THREADS];
    __syncthreads();
}

/* Offset of the q-th value of channel c (q < batch * spatial, in batch-major
 * order) in a batch x channels x spatial tensor. count < 2^31 (checked by
 * the launchers), so the split of q is a 32-bit division. */
static __device__ __forceinline__ int64_t channel_at(unsigned q, unsigned spatial, int channels,
                                                     int c) {
    const unsigned b = q / spatial, i = q - b * spatial;
    return ((int64_t)b * channels + c) * spatial + i;
}

/* ---------------------------------------------------------------- elementwise */

static __global__ void relu_forward_out_kernel(int64_t count, const float *x, float *y) {
    const int64_t step = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += step) {
        const float v = x[i];
        y[i] = v > 0.0f ? v : 0.0f; /* NaN -> 0 */
    }
}

static __global__ void relu_backward_accumulate_kernel(int64_t count, const float *__restrict__ y,
                                                       const float *dy, float *dx) {
    const int64_t step = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += step)
        if (y[i] > 0.0f) dx[i] += dy[i];
}

static __global__ void axpby_kernel(int64_t count, float alpha, const float *x, float beta,
                                    float *y) {
    const int64_t step = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += step)
        y[i] = beta == 0.0f ? alpha * x[i] : alpha * x[i] + beta * y[i]; /* beta 0: y unread */
}

/* One warp per row, lanes striding over its spatial values. */
static __global__ void avgpool_forward_kernel(int64_t rows, int64_t spatial,
                                              const float *__restrict__ x, float *__restrict__ y) {
    const int lane = threadIdx.x & 31;
    const int64_t warps = (int64_t)gridDim.x * (blockDim.x >> 5);
    for (int64_t r = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); r < rows;
         r += warps) {
        const float *row = x + r * spatial;
        float acc = 0.0f;
        for (int64_t i = lane; i < spatial; i += 32) acc += row[i];
        acc = warp_sum(acc);
        if (lane == 0) y[r] = acc / (float)spatial;
    }
}

static __global__ void avgpool_backward_kernel(int64_t total, int64_t spatial,
                                               const float *__restrict__ dy,
                                               float *__restrict__ dx) {
    const int64_t step = (int64_t)gridDim.x * blockDim.x;
    const float count = (float)spatial;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step)
        dx[i] += dy[i / spatial] / count;
}

static __global__ void channel_bias_forward_kernel(int64_t total, int channels, int64_t spatial,
                                                   const float *__restrict__ bias,
                                                   float *__restrict__ y) {
    const int64_t step = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step)
        y[i] += bias[(i / spatial) % channels];
}

static __global__ void batchnorm_eval_kernel(int64_t total, int channels, int64_t spatial,
                                             float eps, const float *x,
                                             const float *__restrict__ gamma,
                                             const float *__restrict__ beta,
                                             const float *__restrict__ running_mean,
                                             const float *__restrict__ running_var, float *y) {
    const int64_t step = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
        const int c = (int)((i / spatial) % channels);
        const float scale = gamma[c] / sqrtf(running_var[c] + eps);
        y[i] = (x[i] - running_mean[c]) * scale + beta[c];
    }
}

/* ---------------------------------------------------------------- per channel */

static __global__ void channel_bias_backward_kernel(int channels, unsigned count, unsigned spatial,
                                                    const float *__restrict__ dy,
                                                    float *__restrict__ dbias) {
    PMOE_SHARED(float, sums, CHANNEL_THREADS);
    const int c = blockIdx.x;
    float v[1] = {0.0f};
    for (unsigned q = threadIdx.x; q < count; q += CHANNEL_THREADS)
        v[0] += dy[channel_at(q, spatial, channels, c)];
    channel_sums(v, sums);
    if (threadIdx.x == 0) dbias[c] = v[0];
}

enum { BN_UNROLL = 4, BN_VALUES_PER_BLOCK = 4096, BN_MAX_SPLITS = 64 };

/* Blocks per channel for count values: a function of the shape alone. */
static inline unsigned bn_splits(unsigned count) {
    const unsigned s = (count + BN_VALUES_PER_BLOCK - 1) / BN_VALUES_PER_BLOCK,
                   most = BN_MAX_SPLITS;
    return s < 1u ? 1u : s > most ? most : s;
}

/* This block's channel c and range [lo, hi) of the channel's values. */
struct bn_range {
    int c;
    unsigned split, lo, hi;
};
static __device__ __forceinline__ bn_range bn_block_range(unsigned count, unsigned splits) {
    bn_range r;
    r.c = (int)(blockIdx.x / splits);
    r.split = blockIdx.x - (unsigned)r.c * splits;
    const unsigned chunk = (count + splits - 1) / splits;
    r.lo = r.split * chunk;
    r.hi = r.lo + chunk < count ? r.lo + chunk : count;
    if (r.lo > count) r.lo = count;
    return r;
}

/* The thread's share of sum f(q) over q in [lo, hi): UNROLL loads in flight,
 * four accumulators added in a fixed order. */
template <class F>
static __device__ __forceinline__ float bn_thread_sum(const bn_range &r, F f) {
    float a = 0.0f, b = 0.0f, cc = 0.0f, d = 0.0f;
    const unsigned stride = CHANNEL_THREADS * BN_UNROLL;
    unsigned q = r.lo + threadIdx.x;
    for (; q + 3 * CHANNEL_THREADS < r.hi; q += stride) {
        a += f(q);
        b += f(q + CHANNEL_THREADS);
        cc += f(q + 2 * CHANNEL_THREADS);
        d += f(q + 3 * CHANNEL_THREADS);
    }
    for (; q < r.hi; q += CHANNEL_THREADS) a += f(q);
    return (a + b) + (cc + d);
}

/* A channel's total: its splits' partials added in split order. */
static __device__ __forceinline__ float bn_total(const float *partials, int c, unsigned splits) {
    float t = 0.0f;
    for (unsigned i = 0; i < splits; i++) t += partials[(size_t)c * splits + i];
    return t;
}

/* Pass 1 and 2 of the statistics: partial sums of x (mean == NULL) or of
 * (x - mean)^2, with mean from pass 1's partials. */
static __global__ void batchnorm_partial_kernel(int channels, unsigned count, unsigned spatial,
                                                unsigned splits, const float *x,
                                                const float *__restrict__ sums,
                                                float *__restrict__ out) {
    PMOE_SHARED(float, tree, CHANNEL_THREADS);
    const bn_range r = bn_block_range(count, splits);
    float v[1];
    if (!sums) {
        v[0] =
            bn_thread_sum(r, [&](unsigned q) { return x[channel_at(q, spatial, channels, r.c)]; });
    } else {
        const float mean = bn_total(sums, r.c, splits) / (float)count;
        v[0] = bn_thread_sum(r, [&](unsigned q) {
            const float dv = x[channel_at(q, spatial, channels, r.c)] - mean;
            return dv * dv;
        });
    }
    channel_sums(v, tree);
    if (threadIdx.x == 0) out[(size_t)r.c * splits + r.split] = v[0];
}

/* Pass 3: y over the block's range; split 0 of each channel saves the
 * statistics and moves the running ones. */
static __global__ void batchnorm_normalize_kernel(
    int channels, unsigned count, unsigned spatial, unsigned splits, float eps, float momentum,
    const float *x, const float *__restrict__ gamma, const float *__restrict__ beta, float *y,
    const float *__restrict__ sums, const float *__restrict__ squares,
    float *__restrict__ save_mean, float *__restrict__ save_invstd,
    float *__restrict__ running_mean, float *__restrict__ running_var) {
    const bn_range r = bn_block_range(count, splits);
    const int c = r.c;
    const float mean = bn_total(sums, c, splits) / (float)count;
    const float var = bn_total(squares, c, splits) / (float)count; /* biased, for normalising */
    const float invstd = 1.0f / sqrtf(var + eps);
    const float scale = gamma[c] * invstd, shift = beta[c];
    for (unsigned q = r.lo + threadIdx.x; q < r.hi; q += CHANNEL_THREADS) {
        const int64_t at = channel_at(q, spatial, channels, c);
        y[at] = (x[at] - mean) * scale + shift; /* y may be x: the same thread reads first */
    }
    if (r.split == 0 && threadIdx.x == 0) {
        save_mean[c] = mean;
        save_invstd[c] = invstd;
        /* The running variance is unbiased (PyTorch's); one value has none. */
        const float unbiased = count > 1 ? var * (float)count / (float)(count - 1) : var;
        if (running_mean) running_mean[c] = (1.0f - momentum) * running_mean[c] + momentum * mean;
        if (running_var) running_var[c] = (1.0f - momentum) * running_var[c] + momentum * unbiased;
    }
}

/* With xhat = (x - mean) invstd: dbeta = sum dy, dgamma = sum dy xhat, and
 * dx += gamma invstd (dy - dbeta / N - xhat dgamma / N). Pass 1: each
 * block's partial sum dy and sum dy xhat (partials: 2 x channels x splits). */
static __global__ void
batchnorm_backward_partial_kernel(int channels, unsigned count, unsigned spatial, unsigned splits,
                                  const float *__restrict__ x, const float *__restrict__ save_mean,
                                  const float *__restrict__ save_invstd, const float *dy,
                                  float *__restrict__ partials) {
    PMOE_SHARED(float, tree, 2 * CHANNEL_THREADS);
    const bn_range r = bn_block_range(count, splits);
    const float mean = save_mean[r.c], invstd = save_invstd[r.c];
    float v[2];
    v[0] = bn_thread_sum(r, [&](unsigned q) { return dy[channel_at(q, spatial, channels, r.c)]; });
    v[1] = bn_thread_sum(r, [&](unsigned q) {
        const int64_t at = channel_at(q, spatial, channels, r.c);
        return dy[at] * ((x[at] - mean) * invstd);
    });
    channel_sums(v, tree);
    if (threadIdx.x == 0) {
        partials[(size_t)r.c * splits + r.split] = v[0];
        partials[((size_t)channels + r.c) * splits + r.split] = v[1];
    }
}

/* Pass 2: the totals; split 0 writes dgamma and dbeta, every block its
 * range of dx (when dx is not NULL). */
static __global__ void batchnorm_backward_apply_kernel(
    int channels, unsigned count, unsigned spatial, unsigned splits, const float *__restrict__ x,
    const float *__restrict__ gamma, const float *__restrict__ save_mean,
    const float *__restrict__ save_invstd, const float *dy, float *dx,
    const float *__restrict__ partials, float *__restrict__ dgamma, float *__restrict__ dbeta) {
    const bn_range r = bn_block_range(count, splits);
    const int c = r.c;
    const float sum_dy = bn_total(partials, c, splits);
    const float sum_dy_xhat = bn_total(partials + (size_t)channels * splits, c, splits);
    if (r.split == 0 && threadIdx.x == 0) {
        if (dbeta) dbeta[c] = sum_dy;
        if (dgamma) dgamma[c] = sum_dy_xhat;
    }
    if (!dx) return;
    const float mean = save_mean[c], invstd = save_invstd[c];
    const float scale = gamma[c] * invstd;
    const float mean_dy = sum_dy / (float)count, mean_dy_xhat = sum_dy_xhat / (float)count;
    for (unsigned q = r.lo + threadIdx.x; q < r.hi; q += CHANNEL_THREADS) {
        const int64_t at = channel_at(q, spatial, channels, c);
        const float xhat = (x[at] - mean) * invstd;
        dx[at] += scale * (dy[at] - mean_dy - xhat * mean_dy_xhat);
    }
}

/* ---------------------------------------------------------------- launchers */

static int check_count(const char *op, int64_t count) {
    return count < 0 ? argument_error("%s: count %lld", op, (long long)count) : 0;
}

static int check_pool(const char *op, int64_t rows, int64_t spatial) {
    return rows < 0 || spatial < 1 ? argument_error("%s: rows %lld spatial %lld", op,
                                                    (long long)rows, (long long)spatial)
                                   : 0;
}

/* batch x channels x spatial; per-channel kernels also need a channel's
 * batch * spatial values to fit the 32-bit split. */
static int check_channels(const char *op, int64_t batch, int channels, int64_t spatial,
                          int per_channel) {
    if (batch < 0 || channels < 1 || spatial < 1 || (per_channel && batch * spatial > 0x7fffffff))
        return argument_error("%s: bad shape B=%lld C=%d spatial=%lld", op, (long long)batch,
                              channels, (long long)spatial);
    return 0;
}

extern "C" int PMOE_KERNEL(relu_forward_out)(int64_t count, const float *x, float *y,
                                             void *stream) {
    int rc = check_count("relu_forward_out", count);
    if (rc || !count) return rc;
    PMOE_LAUNCH(relu_forward_out_kernel, dim3(grid_for(count, ELEMENT_THREADS)),
                dim3(ELEMENT_THREADS), 0, stream, count, x, y);
    return PMOE_LAUNCH_STATUS();
}

extern "C" int PMOE_KERNEL(relu_backward_accumulate)(int64_t count, const float *y, const float *dy,
                                                     float *dx, void *stream) {
    int rc = check_count("relu_backward_accumulate", count);
    if (rc || !count) return rc;
    PMOE_LAUNCH(relu_backward_accumulate_kernel, dim3(grid_for(count, ELEMENT_THREADS)),
                dim3(ELEMENT_THREADS), 0, stream, count, y, dy, dx);
    return PMOE_LAUNCH_STATUS();
}

extern "C" int PMOE_KERNEL(axpby)(int64_t count, float alpha, const float *x, float beta, float *y,
                                  void *stream) {
    int rc = check_count("axpby", count);
    if (rc || !count) return rc;
    PMOE_LAUNCH(axpby_kernel, dim3(grid_for(count, ELEMENT_THREADS)), dim3(ELEMENT_THREADS), 0,
                stream, count, alpha, x, beta, y);
    return PMOE_LAUNCH_STATUS();
}

extern "C" int PMOE_KERNEL(avgpool_forward)(int64_t rows, int64_t spatial, const float *x, float *y,
                                            void *stream) {
    int rc = check_pool("avgpool_forward", rows, spatial);
    if (rc || !rows) return rc;
    PMOE_LAUNCH(avgpool_forward_kernel, dim3(grid_for(rows, ELEMENT_THREADS / 32)),
                dim3(ELEMENT_THREADS), 0, stream, rows, spatial, x, y);
    return PMOE_LAUNCH_STATUS();
}

extern "C" int PMOE_KERNEL(avgpool_backward)(int64_t rows, int64_t spatial, const float *dy,
                                             float *dx, void *stream) {
    int rc = check_pool("avgpool_backward", rows, spatial);
    if (rc || !rows) return rc;
    const int64_t total = rows * spatial;
    PMOE_LAUNCH(avgpool_backward_kernel, dim3(grid_for(total, ELEMENT_THREADS)),
                dim3(ELEMENT_THREADS), 0, stream, total, spatial, dy, dx);
    return PMOE_LAUNCH_STATUS();
}

extern "C" int PMOE_KERNEL(channel_bias_forward)(int64_t batch, int channels, int64_t spatial,
                                                 const float *bias, float *y, void *stream) {
    int rc = check_channels("channel_bias_forward", batch, channels, spatial, 0);
    if (rc || !batch) return rc;
    const int64_t total = batch * channels * spatial;
    PMOE_LAUNCH(channel_bias_forward_kernel, dim3(grid_for(total, ELEMENT_THREADS)),
                dim3(ELEMENT_THREADS), 0, stream, total, channels, spatial, bias, y);
    return PMOE_LAUNCH_STATUS();
}

extern "C" int PMOE_KERNEL(channel_bias_backward)(int64_t batch, int channels, int64_t spatial,
                                                  const float *dy, float *dbias, void *stream) {
    int rc = check_channels("channel_bias_backward", batch, channels, spatial, !!batch);
    if (rc) return rc;
    if (!batch) return PMOE_KERNEL(fill)(channels, dbias, 0.0f, stream); /* an empty sum */
    PMOE_LAUNCH(channel_bias_backward_kernel, dim3((unsigned)channels), dim3(CHANNEL_THREADS), 0,
                stream, channels, (unsigned)(batch * spatial), (unsigned)spatial, dy, dbias);
    return PMOE_LAUNCH_STATUS();
}

extern "C" int64_t PMOE_KERNEL(batchnorm_workspace_floats)(int64_t batch, int channels,
                                                           int64_t spatial) {
    if (batch <= 0 || channels < 1 || spatial < 1 || batch * spatial > 0x7fffffff) return 0;
    return 2 * (int64_t)channels * bn_splits((unsigned)(batch * spatial));
}

extern "C" int PMOE_KERNEL(batchnorm_forward_train)(int64_t batch, int channels, int64_t spatial,
                                                    float eps, const float *x, const float *gamma,
                                                    const float *beta, float *y, float *save_mean,
                                                    float *save_invstd, float *running_mean,
                                                    float *running_var, float momentum,
                                                    float *workspace, void *stream) {
    int rc = check_channels("batchnorm_forward_train", batch, channels, spatial, !!batch);
    if (!rc && !(eps > 0.0f)) rc = argument_error("batchnorm_forward_train: eps %g", (double)eps);
    if (rc || !batch) return rc; /* an empty batch has no statistics to take or move */
    const unsigned count = (unsigned)(batch * spatial), splits = bn_splits(count);
    const unsigned blocks = (unsigned)channels * splits;
    float *sums = workspace, *squares = workspace + (size_t)channels * splits;
    PMOE_LAUNCH(batchnorm_partial_kernel, dim3(blocks), dim3(CHANNEL_THREADS), 0, stream, channels,
                count, (unsigned)spatial, splits, x, (const float *)NULL, sums);
    if ((rc = PMOE_LAUNCH_STATUS())) return rc;
    PMOE_LAUNCH(batchnorm_partial_kernel, dim3(blocks), dim3(CHANNEL_THREADS), 0, stream, channels,
                count, (unsigned)spatial, splits, x, (const float *)sums, squares);
    if ((rc = PMOE_LAUNCH_STATUS())) return rc;
    PMOE_LAUNCH(batchnorm_normalize_kernel, dim3(blocks), dim3(CHANNEL_THREADS), 0, stream,
                channels, count, (unsigned)spatial, splits, eps, momentum, x, gamma, beta, y,
                (const float *)sums, (const float *)squares, save_mean, save_invstd, running_mean,
                running_var);
    return PMOE_LAUNCH_STATUS();
}

extern "C" int PMOE_KERNEL(batchnorm_forward_eval)(int64_t batch, int channels, int64_t spatial,
                                                   float eps, const float *x, const float *gamma,
                                                   const float *beta, const float *running_mean,
                                                   const float *running_var, float *y,
                                                   void *stream) {
    int rc = check_channels("batchnorm_forward_eval", batch, channels, spatial, 0);
    if (rc || !batch) return rc;
    const int64_t total = batch * channels * spatial;
    PMOE_LAUNCH(batchnorm_eval_kernel, dim3(grid_for(total, ELEMENT_THREADS)),
                dim3(ELEMENT_THREADS), 0, stream, total, channels, spatial, eps, x, gamma, beta,
                running_mean, running_var, y);
    return PMOE_LAUNCH_STATUS();
}

extern "C" int PMOE_KERNEL(batchnorm_backward)(int64_t batch, int channels, int64_t spatial,
                                               const float *x, const float *gamma,
                                               const float *save_mean, const float *save_invstd,
                                               const float *dy, float *dx, float *dgamma,
                                               float *dbeta, float *workspace, void *stream) {
    int rc = check_channels("batchnorm_backward", batch, channels, spatial, !!batch);
    if (rc || !batch || (!dx && !dgamma && !dbeta)) return rc; /* as the twin: nothing to do */
    const unsigned count = (unsigned)(batch * spatial), splits = bn_splits(count);
    const unsigned blocks = (unsigned)channels * splits;
    PMOE_LAUNCH(batchnorm_backward_partial_kernel, dim3(blocks), dim3(CHANNEL_THREADS), 0, stream,
                channels, count, (unsigned)spatial, splits, x, save_mean, save_invstd, dy,
                workspace);
    if ((rc = PMOE_LAUNCH_STATUS())) return rc;
    PMOE_LAUNCH(batchnorm_backward_apply_kernel, dim3(blocks), dim3(CHANNEL_THREADS), 0, stream,
                channels, count, (unsigned)spatial, splits, x, gamma, save_mean, save_invstd, dy,
                dx, (const float *)workspace, dgamma, dbeta);
    return PMOE_LAUNCH_STATUS();
}
