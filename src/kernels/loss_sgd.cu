/* loss_sgd.cu: the losses, the router's linear loss, the SGD update, and
 * the elementwise kernels (fill, ReLU and its mask); also the launchers'
 * error strings.
 *
 * The losses reduce over the batch in one block (B is a few hundred at most
 * in a step, and the per-sample work is a handful of flops), so the mean and
 * the count of correct predictions come out of one fixed-order block sum. */
#include <stdarg.h>
#include <stdio.h>

#include "kernel_common.cuh"

namespace PMOE_KERNEL_NS {

static thread_local char message[320];
static thread_local const char *launched = "no kernel";

void note_launch(const char *kernel) { launched = kernel; }

int argument_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    return PMOE_KERNEL_ERR_ARGS;
}

} /* namespace PMOE_KERNEL_NS */

using namespace PMOE_KERNEL_NS;

extern "C" const char *PMOE_KERNEL(last_launch)(void) { return launched; }

extern "C" const char *PMOE_KERNEL(error_string)(int code) {
    if (code == 0) return "no error";
    if (code == PMOE_KERNEL_ERR_ARGS) return message;
#if PMOE_HOST_EXEC
    if (code == PMOE_KERNEL_ERR_EMULATOR) return ::pmoe_emu::last_message();
#else
    if (code > 0) return cudaGetErrorString((cudaError_t)code);
#endif
    return "unknown kernel error";
}

enum { REDUCE_THREADS = 256 };

/* log(1 + exp(z)) without overflow. */
static __device__ __forceinline__ float softplus(float z) {
    return z > 0.0f ? z + log1pf(expf(-z)) : log1pf(expf(z));
}

static __global__ void loss_kernel(int kind, int64_t batch, int classes,
                                   const float *__restrict__ logits,
                                   const int32_t *__restrict__ labels, float *__restrict__ dlogits,
                                   float *__restrict__ stats) {
    PMOE_SHARED(float, partials, 32);
    const float inv_b = 1.0f / (float)batch;
    float loss = 0.0f, correct = 0.0f;
    for (int64_t b = threadIdx.x; b < batch; b += blockDim.x) {
        const int32_t label = labels[b];
        if (kind == PMOE_KERNEL_LOSS_LOGISTIC) {
            const float y = label == 1 ? 1.0f : -1.0f, f = logits[b];
            loss += softplus(-y * f);
            /* d/df log(1 + e^{-y f}) = -y sigmoid(-y f) */
            if (dlogits) dlogits[b] = -y / (1.0f + expf(y * f)) * inv_b;
            correct += (f > 0.0f) == (label == 1) ? 1.0f : 0.0f;
        } else {
            const float *z = logits + b * classes;
            int best = 0;
            for (int c = 1; c < classes; c++)
                if (z[c] > z[best]) best = c;
            float denom = 0.0f;
            for (int c = 0; c < classes; c++) denom += expf(z[c] - z[best]);
            const bool valid = label >= 0 && label < classes;
            loss += valid ? logf(denom) - (z[label] - z[best]) : NAN;
            if (dlogits)
                for (int c = 0; c < classes; c++)
                    dlogits[b * classes + c] =
                        (expf(z[c] - z[best]) / denom - (c == label ? 1.0f : 0.0f)) * inv_b;
            correct += best == label ? 1.0f : 0.0f;
        }
    }
    loss = block_sum(loss, partials);
    correct = block_sum(correct, partials); /* exact: integers below 2^24 */
    if (threadIdx.x == 0) {
        stats[0] = loss * inv_b;
        stats[1] = correct;
    }
}

static __global__ void router_linear_dscores_kernel(int64_t total, int n, int k,
                                                    const int32_t *__restrict__ pair,
                                                    const float *__restrict__ weight,
                                                    float *__restrict__ dscores) {
    const int64_t step = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
        const int e = (int)(i % k);
        const int64_t b = i / ((int64_t)n * k);
        const int plus = 2 * pair[b];
        const float w = weight[b];
        dscores[i] = e == plus ? -w : e == plus + 1 ? w : 0.0f;
    }
}

static __global__ void router_linear_loss_kernel(int64_t batch, int n, int k,
                                                 const float *__restrict__ scores,
                                                 const int32_t *__restrict__ pair,
                                                 const float *__restrict__ weight,
                                                 float *__restrict__ stats) {
    PMOE_SHARED(float, partials, 32);
    const int64_t items = batch * n;
    float acc = 0.0f;
    for (int64_t i = threadIdx.x; i < items; i += blockDim.x) {
        const int64_t b = i / n;
        const int plus = 2 * pair[b];
        acc += weight[b] * (scores[i * k + plus] - scores[i * k + plus + 1]);
    }
    acc = block_sum(acc, partials);
    if (threadIdx.x == 0) stats[0] = -acc;
}

static __global__ void sgd_kernel(int64_t count, float *__restrict__ param,
                                  const float *__restrict__ grad, float *__restrict__ velocity,
                                  float lr, float momentum, float weight_decay,
                                  const int32_t *__restrict__ skip) {
    if (skip && *skip) return; /* the non-finite guard's verdict */
    const int64_t step = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += step) {
        float s = grad[i] + weight_decay * param[i];
        if (velocity) {
            s = momentum * velocity[i] + s;
            velocity[i] = s;
        }
        param[i] -= lr * s;
    }
}

static __global__ void fill_kernel(int64_t count, float *__restrict__ dst, float value) {
    const int64_t step = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += step)
        dst[i] = value;
}

static __global__ void relu_forward_kernel(int64_t count, float *__restrict__ x) {
    const int64_t step = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += step)
        if (!(x[i] > 0.0f)) x[i] = 0.0f; /* NaN -> 0, as the CPU */
}

static __global__ void relu_backward_kernel(int64_t count, const float *__restrict__ out,
                                            float *__restrict__ dout) {
    const int64_t step = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += step)
        if (!(out[i] > 0.0f)) dout[i] = 0.0f;
}

extern "C" int PMOE_KERNEL(loss_forward_backward)(int kind, int64_t batch, int classes,
                                                  const float *logits, const int32_t *labels,
                                                  float *dlogits, float *stats, void *stream) {
    if (batch < 0 || classes < 1 ||
        (kind != PMOE_KERNEL_LOSS_LOGISTIC && kind != PMOE_KERNEL_LOSS_SOFTMAX_CE))
        return argument_error("loss: bad shape B=%lld c=%d kind=%d", (long long)batch, classes,
                              kind);
    if (!batch) return 0;
    PMOE_LAUNCH(loss_kernel, dim3(1), dim3(REDUCE_THREADS), 0, stream, kind, batch, classes, logits,
                labels, dlogits, stats);
    return PMOE_LAUNCH_STATUS();
}

extern "C" int PMOE_KERNEL(router_linear_loss)(int64_t batch, int patches, int experts,
                                               const float *scores, const int32_t *pair,
                                               const float *weight, float *dscores, float *stats,
                                               void *stream) {
    if (batch < 0 || patches < 1 || experts < 2)
        return argument_error("router_linear_loss: bad shape B=%lld n=%d k=%d", (long long)batch,
                              patches, experts);
    if (!batch) return 0;
    const int64_t total = batch * patches * (int64_t)experts;
    PMOE_LAUNCH(router_linear_dscores_kernel, dim3(grid_for(total, 256)), dim3(256), 0, stream,
                total, patches, experts, pair, weight, dscores);
    int rc = PMOE_LAUNCH_STATUS();
    if (rc) return rc;
    PMOE_LAUNCH(router_linear_loss_kernel, dim3(1), dim3(REDUCE_THREADS), 0, stream, batch, patches,
                experts, scores, pair, weight, stats);
    return PMOE_LAUNCH_STATUS();
}

extern "C" int PMOE_KERNEL(sgd_update)(int64_t count, float *param, const float *grad,
                                       float *velocity, float lr, float momentum,
                                       float weight_decay, const int32_t *skip, void *stream) {
    if (count <= 0)
        return count < 0 ? argument_error("sgd_update: count %lld", (long long)count) : 0;
    PMOE_LAUNCH(sgd_kernel, dim3(grid_for(count, 256)), dim3(256), 0, stream, count, param, grad,
                velocity, lr, momentum, weight_decay, skip);
    return PMOE_LAUNCH_STATUS();
}

extern "C" int PMOE_KERNEL(fill)(int64_t count, float *dst, float value, void *stream) {
    if (count <= 0) return count < 0 ? argument_error("fill: count %lld", (long long)count) : 0;
    PMOE_LAUNCH(fill_kernel, dim3(grid_for(count, 256)), dim3(256), 0, stream, count, dst, value);
    return PMOE_LAUNCH_STATUS();
}

extern "C" int PMOE_KERNEL(relu_forward)(int64_t count, float *x, void *stream) {
    if (count <= 0)
        return count < 0 ? argument_error("relu_forward: count %lld", (long long)count) : 0;
    PMOE_LAUNCH(relu_forward_kernel, dim3(grid_for(count, 256)), dim3(256), 0, stream, count, x);
    return PMOE_LAUNCH_STATUS();
}

extern "C" int PMOE_KERNEL(relu_backward)(int64_t count, const float *out, float *dout,
                                          void *stream) {
    if (count <= 0)
        return count < 0 ? argument_error("relu_backward: count %lld", (long long)count) : 0;
    PMOE_LAUNCH(relu_backward_kernel, dim3(grid_for(count, 256)), dim3(256), 0, stream, count, out,
                dout);
    return PMOE_LAUNCH_STATUS();
}
