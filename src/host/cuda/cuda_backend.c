/* cuda_backend.c: the backend table on one CUDA device.
 *
 * Every op is enqueued on the backend's one non-blocking stream and returns
 * at once; nothing synchronises except copy_out (the host needs the bytes)
 * and synchronize(). Dense products go to cuBLAS (row-major through the
 * usual transpose: a row-major C = A B is the column-major C^T = B^T A^T,
 * so A and B swap places and keep their own transpose flags), the experts
 * as one strided-batched GEMM over k; convolutions go to cuDNN
 * (cuda_conv.c: deterministic algorithms); everything else is pmoe's own
 * kernels (src/kernels). At train.precision = fp32 (the default) cuBLAS runs
 * in its default math mode, which for float32 never uses TF32, and cuDNN in
 * FMA math, so results stay within float32 rounding of the CPU; tf32 and
 * bf16 use tensor-op math on the layers' GEMMs and convolutions (bf16 on
 * inputs rounded first: cuda_gemm_as), never on the router's. A GEMM gives
 * the same bits on every run on one GPU, and the custom kernels use no
 * atomics, so two runs of a step are bit-identical.
 *
 * Longer than pmoe's other files (~780 lines) for one reason: it is the one
 * table of the backend's ~40 ops, each a short forwarding function; the
 * parts with a purpose of their own live beside it (cuda_conv.c, cuda_upload.c,
 * cuda_clock.c). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_profiler_api.h>
#ifdef PMOE_HAVE_NVTX
#include <nvtx3/nvToolsExtCudaRt.h> /* to name the stream in Nsight's timeline */
#endif

#include "core/host_memory.h"
#include "cuda/cuda_backend.h"
#include "cuda/cuda_conv.h"
#include "cuda/cuda_internal.h"

_Static_assert((int)PMOE_GATE_RENORM == (int)PMOE_KERNEL_GATE_RENORM &&
                   (int)PMOE_GATE_SOFTMAX_ALL == (int)PMOE_KERNEL_GATE_SOFTMAX_ALL &&
                   (int)PMOE_GATE_ONES == (int)PMOE_KERNEL_GATE_ONES,
               "gate modes numbered alike");
_Static_assert((int)PMOE_LOSS_LOGISTIC == (int)PMOE_KERNEL_LOSS_LOGISTIC &&
                   (int)PMOE_LOSS_SOFTMAX_CE == (int)PMOE_KERNEL_LOSS_SOFTMAX_CE,
               "loss kinds numbered alike");
_Static_assert((int)PMOE_GUARD_FIRST == (int)PMOE_KERNEL_GUARD_FIRST &&
                   (int)PMOE_GUARD_STEP_LOW == (int)PMOE_KERNEL_GUARD_STEP_LOW &&
                   (int)PMOE_GUARD_STEP_HIGH == (int)PMOE_KERNEL_GUARD_STEP_HIGH &&
                   (int)PMOE_GUARD_SCAN == (int)PMOE_KERNEL_GUARD_SCAN &&
                   (int)PMOE_GUARD_WORDS == (int)PMOE_KERNEL_GUARD_WORDS,
               "guard words numbered alike");

void cuda_record(cuda_context *c, pmoe_status code, const char *fmt, ...) {
    if (c->error.code != PMOE_OK) return;
    va_list ap;
    va_start(ap, fmt);
    char text[sizeof c->error.message];
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    pmoe_fail(&c->error, code, "%s: %s", c->name, text);
}

int pmoe_cuda_built(void) { return 1; }

void cuda_record_kernel(cuda_context *c, int rc, const char *call, const char *file, int line) {
    const int name = (int)strcspn(call, "(");
    if (rc < 0) {
        cuda_record(c, rc == PMOE_KERNEL_ERR_ARGS ? PMOE_ERR_UNSUPPORTED : PMOE_ERR_INTERNAL,
                    "%.*s failed: %s at %s:%d", name, call, pmoe_k_error_string(rc), file, line);
        return;
    }
    const char *kernel = pmoe_k_last_launch();
    cudaGetLastError(); /* clears the launch's own error; a sticky one stays */
    const cudaError_t sticky = cudaPeekAtLastError();
    if (sticky != cudaSuccess)
        cuda_record(c, PMOE_ERR_INTERNAL,
                    "the device had already failed when %.*s launched %s: %s (%s), a sticky "
                    "error of work enqueued before it (run with CUDA_LAUNCH_BLOCKING=1 to name "
                    "the kernel that faulted) at %s:%d",
                    name, call, kernel, cudaGetErrorName(sticky), cudaGetErrorString(sticky), file,
                    line);
    else
        cuda_record(c, PMOE_ERR_INTERNAL, "launching %s (%.*s) failed: %s (%s) at %s:%d", kernel,
                    name, call, cudaGetErrorName((cudaError_t)rc),
                    cudaGetErrorString((cudaError_t)rc), file, line);
}

/* "13.0" of a CUDA version number (13000). */
static void version_text(int version, char *out, size_t size) {
    snprintf(out, size, "%d.%d", version / 1000, version % 1000 / 10);
}

/* When no device answers, why, in the driver's own words: no driver at all
 * (cudaDriverGetVersion gives 0), a driver older than this build's CUDA,
 * a driver that fails (any other error, with its name and string), or a
 * working driver with no GPU. */
static void explain_no_device(cudaError_t e, char *why, size_t why_size) {
    int driver = 0, runtime = 0;
    const cudaError_t de = cudaDriverGetVersion(&driver);
    cudaRuntimeGetVersion(&runtime);
    cudaGetLastError(); /* not sticky: leave no trace for later calls */
    char have[16], need[16];
    version_text(driver, have, sizeof have);
    version_text(runtime, need, sizeof need);
    if (e == cudaSuccess)
        snprintf(why, why_size, "the NVIDIA driver (CUDA %s) answers but lists no CUDA device",
                 have);
    else if (de == cudaSuccess && driver == 0)
        snprintf(why, why_size,
                 "no NVIDIA driver is installed (cudaDriverGetVersion gives 0; "
                 "cudaGetDeviceCount: %s)",
                 cudaGetErrorString(e));
    else if (e == cudaErrorInsufficientDriver || (de == cudaSuccess && driver < runtime))
        snprintf(why, why_size,
                 "the NVIDIA driver is too old: it supports CUDA %s, this build needs CUDA %s "
                 "(cudaGetDeviceCount: %s)",
                 have, need, cudaGetErrorString(e));
    else if (e == cudaErrorNoDevice)
        snprintf(why, why_size, "no CUDA device: the NVIDIA driver (CUDA %s) finds no GPU (%s)",
                 have, cudaGetErrorString(e));
    else
        snprintf(why, why_size, "the NVIDIA driver (CUDA %s) fails: cudaGetDeviceCount: %s (%s)",
                 have, cudaGetErrorName(e), cudaGetErrorString(e));
}

int pmoe_cuda_device_count(char *why, size_t why_size) {
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e == cudaSuccess && count > 0) return count;
    if (e != cudaSuccess) cudaGetLastError(); /* not sticky: leave no trace for later calls */
    if (why) explain_no_device(e, why, why_size);
    return 0;
}

int pmoe_backend_is_cuda(const pmoe_backend *be) {
    return be && strncmp(be->name, "cuda:", 5) == 0;
}

void *pmoe_cuda_backend_stream(pmoe_backend *be) {
    return pmoe_backend_is_cuda(be) ? (void *)cuda_context_of(be)->stream : NULL;
}

/* ---- ops ---------------------------------------------------------------- */

float *cuda_scratch(cuda_context *c, int64_t count) {
    const size_t bytes = (size_t)count * sizeof(float);
    if (bytes <= c->scratch_bytes) return c->scratch;
    if (c->scratch) { /* cudaFree waits for the work that still reads it */
        PMOE_CUDA_CHECK(c, cudaFree(c->scratch));
        pmoe_mem_note_free(&c->be.mem, c->scratch_bytes);
        c->scratch = NULL;
        c->scratch_bytes = 0;
    }
    void *p = NULL;
    pmoe_error err = {PMOE_OK, ""};
    if (c->be.alloc(&c->be, bytes, &p, &err)) {
        cuda_record(c, err.code, "op scratch: %s", err.message);
        return NULL;
    }
    c->scratch = p;
    c->scratch_bytes = bytes;
    return p;
}

/* One GEMM at `precision`: fp32 in cuBLAS's default math (never TF32),
 * tf32 with TF32 tensor-op math (cuBLAS rounds the inputs), bf16 on copies
 * of A and B rounded to bfloat16 by pmoe's kernel (the rounding the CPU
 * twin does), then TF32 math, which holds every bfloat16 value exactly, so
 * the products are those of bfloat16 inputs summed in float32. */
static void cuda_gemm_as(cuda_context *c, int precision, int trans_a, int trans_b, int64_t m,
                         int64_t n, int64_t k, float alpha, const float *a, int64_t lda,
                         int64_t stride_a, const float *b, int64_t ldb, int64_t stride_b,
                         float beta, float *cm, int64_t ldc, int64_t stride_c, int64_t batch) {
    if (c->error.code) return; /* a failed context runs nothing more */
    if (m <= 0 || n <= 0 || batch <= 0) return;
    const cublasMath_t math = precision == PMOE_PRECISION_FP32 ? CUBLAS_DEFAULT_MATH
                                                               : CUBLAS_TF32_TENSOR_OP_MATH;
    if (c->blas_math != (int)math) {
        PMOE_CUBLAS_CHECK(c, cublasSetMathMode(c->blas, math));
        if (c->error.code) return;
        c->blas_math = (int)math;
    }
    if (precision == PMOE_PRECISION_BF16) {
        const int64_t na = pmoe_gemm_span(trans_a, m, k, lda, stride_a, batch),
                      nb = pmoe_gemm_span(trans_b, k, n, ldb, stride_b, batch);
        float *room = cuda_scratch(c, na + nb);
        if (!room) return;
        PMOE_KERNEL_CHECK(c, pmoe_k_round_floats(na, a, room, PMOE_PRECISION_BF16, c->stream));
        PMOE_KERNEL_CHECK(c, pmoe_k_round_floats(nb, b, room + na, PMOE_PRECISION_BF16, c->stream));
        if (c->error.code) return;
        a = room;
        b = room + na;
    }
    PMOE_CUBLAS_CHECK(c, cublasSgemmStridedBatched_64(c->blas, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                                                      trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k,
                                                      &alpha, b, ldb, stride_b, a, lda, stride_a,
                                                      &beta, cm, ldc, stride_c, batch));
}

static void cuda_gemm(pmoe_backend *be, int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                      float alpha, const float *a, int64_t lda, int64_t stride_a, const float *b,
                      int64_t ldb, int64_t stride_b, float beta, float *cm, int64_t ldc,
                      int64_t stride_c, int64_t batch) {
    cuda_context *c = cuda_context_of(be);
    cuda_gemm_as(c, c->precision, trans_a, trans_b, m, n, k, alpha, a, lda, stride_a, b, ldb,
                 stride_b, beta, cm, ldc, stride_c, batch);
}

static void cuda_gemm_float32(pmoe_backend *be, int trans_a, int trans_b, int64_t m, int64_t n,
                              int64_t k, float alpha, const float *a, int64_t lda, int64_t stride_a,
                              const float *b, int64_t ldb, int64_t stride_b, float beta, float *cm,
                              int64_t ldc, int64_t stride_c, int64_t batch) {
    cuda_gemm_as(cuda_context_of(be), PMOE_PRECISION_FP32, trans_a, trans_b, m, n, k, alpha, a, lda,
                 stride_a, b, ldb, stride_b, beta, cm, ldc, stride_c, batch);
}

static void cuda_patch_extract_forward(pmoe_backend *be, const pmoe_patch_shape *s,
                                       const float *images, float *patches) {
    cuda_context *c = cuda_context_of(be);
    if (c->error.code) return;
    PMOE_KERNEL_CHECK(c, pmoe_k_patch_extract_forward(s->batch, s->channels, s->height, s->width,
                                                      s->patch, images, patches, c->stream));
}

static void cuda_patch_extract_backward(pmoe_backend *be, const pmoe_patch_shape *s,
                                        const float *dpatches, float *dimages) {
    cuda_context *c = cuda_context_of(be);
    if (c->error.code) return;
    PMOE_KERNEL_CHECK(c, pmoe_k_patch_extract_backward(s->batch, s->channels, s->height, s->width,
                                                       s->patch, dpatches, dimages, c->stream));
}

static void cuda_gate_topl_forward(pmoe_backend *be, const pmoe_route_shape *s,
                                   const float *patches, const float *router_w, float *scores,
                                   int32_t *selected, float *gate) {
    cuda_context *c = cuda_context_of(be);
    if (c->error.code) return;
    PMOE_KERNEL_CHECK(c, pmoe_k_gate_topl_forward(s->batch, s->patches, s->dim, s->experts, s->topl,
                                                  (int)s->gate, patches, router_w, scores, selected,
                                                  gate, c->stream));
}

static void cuda_gate_topl_backward(pmoe_backend *be, const pmoe_route_shape *s,
                                    const float *patches, const float *router_w,
                                    const float *scores, const int32_t *selected, const float *gate,
                                    const float *dgate, float *dscores, float *drouter_w,
                                    float *dpatches) {
    cuda_context *c = cuda_context_of(be);
    if (c->error.code) return;
    const int64_t rows = s->batch * s->patches;
    const int d = s->dim, k = s->experts;
    PMOE_KERNEL_CHECK(c, pmoe_k_gate_topl_backward_scores(s->batch, s->patches, k, s->topl,
                                                          (int)s->gate, scores, selected, gate,
                                                          dgate, dscores, c->stream));
    /* drouter_w (k x d) = dscores^T (k x B n) patches (B n x d) */
    if (drouter_w) /* the router stays float32 at every train.precision */
        cuda_gemm_float32(be, 1, 0, k, d, rows, 1.0f, dscores, k, 0, patches, d, 0, 0.0f, drouter_w,
                          d, 0, 1);
    if (dpatches) /* dpatches (B n x d) += dscores (B n x k) router_w (k x d) */
        cuda_gemm_float32(be, 0, 0, rows, d, k, 1.0f, dscores, k, 0, router_w, d, 0, 1.0f, dpatches,
                          d, 0, 1);
}

static void cuda_dispatch_gather(pmoe_backend *be, const pmoe_route_shape *s, const float *patches,
                                 const int32_t *selected, float *expert_in) {
    cuda_context *c = cuda_context_of(be);
    if (c->error.code) return;
    PMOE_KERNEL_CHECK(c, pmoe_k_dispatch_gather(s->batch, s->patches, s->dim, s->experts, s->topl,
                                                patches, selected, expert_in, c->stream));
}

static void cuda_dispatch_gather_backward(pmoe_backend *be, const pmoe_route_shape *s,
                                          const float *dexpert_in, const int32_t *selected,
                                          float *dpatches) {
    cuda_context *c = cuda_context_of(be);
    if (c->error.code) return;
    PMOE_KERNEL_CHECK(c, pmoe_k_dispatch_gather_backward(s->batch, s->patches, s->dim, s->experts,
                                                         s->topl, dexpert_in, selected, dpatches,
                                                         c->stream));
}

static void cuda_expert_forward(pmoe_backend *be, int experts, int64_t rows, int dim, int hidden,
                                const float *expert_in, const float *expert_w, float *hidden_out) {
    cuda_context *c = cuda_context_of(be);
    if (c->error.code) return;
    /* hidden[s] (rows x h) = expert_in[s] (rows x d) W_s^T (d x h), for all s at once */
    cuda_gemm(be, 0, 1, rows, hidden, dim, 1.0f, expert_in, dim, rows * dim, expert_w, dim,
              (int64_t)hidden * dim, 0.0f, hidden_out, hidden, rows * hidden, experts);
    PMOE_KERNEL_CHECK(c,
                      pmoe_k_relu_forward((int64_t)experts * rows * hidden, hidden_out, c->stream));
}

static void cuda_expert_backward(pmoe_backend *be, int experts, int64_t rows, int dim, int hidden,
                                 const float *expert_in, const float *expert_w,
                                 const float *hidden_out, float *dhidden, float *dexpert_w,
                                 float *dexpert_in) {
    cuda_context *c = cuda_context_of(be);
    if (c->error.code) return;
    PMOE_KERNEL_CHECK(
        c, pmoe_k_relu_backward((int64_t)experts * rows * hidden, hidden_out, dhidden, c->stream));
    /* dW_s (h x d) = dpre_s^T (h x rows) expert_in[s] (rows x d) */
    cuda_gemm(be, 1, 0, hidden, dim, rows, 1.0f, dhidden, hidden, rows * hidden, expert_in, dim,
              rows * dim, 0.0f, dexpert_w, dim, (int64_t)hidden * dim, experts);
    if (dexpert_in) /* dX_s (rows x d) = dpre_s (rows x h) W_s (h x d) */
        cuda_gemm(be, 0, 0, rows, dim, hidden, 1.0f, dhidden, hidden, rows * hidden, expert_w, dim,
                  (int64_t)hidden * dim, 0.0f, dexpert_in, dim, rows * dim, experts);
}

static void cuda_combine_forward(pmoe_backend *be, const pmoe_combine_shape *s, const float *hidden,
                                 const float *gate, const float *out_w, float *logits) {
    cuda_context *c = cuda_context_of(be);
    if (c->error.code) return;
    PMOE_KERNEL_CHECK(c,
                      pmoe_k_combine_forward(s->batch, s->experts, s->topl, s->hidden, s->classes,
                                             hidden, gate, out_w, logits, c->stream));
}

static void cuda_combine_backward(pmoe_backend *be, const pmoe_combine_shape *s,
                                  const float *dlogits, const float *hidden, const float *gate,
                                  const float *out_w, float *dhidden, float *dgate, float *dout_w) {
    cuda_context *c = cuda_context_of(be);
    if (c->error.code) return;
    PMOE_KERNEL_CHECK(c, pmoe_k_combine_backward(s->batch, s->experts, s->topl, s->hidden,
                                                 s->classes, dlogits, hidden, gate, out_w, dhidden,
                                                 dgate, dout_w, c->stream));
}

static void cuda_loss_forward_backward(pmoe_backend *be, pmoe_loss_kind kind, int64_t batch,
                                       int classes, const float *logits, const int32_t *labels,
                                       float *dlogits, float *stats) {
    cuda_context *c = cuda_context_of(be);
    if (c->error.code) return;
    PMOE_KERNEL_CHECK(c, pmoe_k_loss_forward_backward((int)kind, batch, classes, logits, labels,
                                                      dlogits, stats, c->stream));
}

static void cuda_router_linear_loss(pmoe_backend *be, int64_t batch, int patches, int experts,
                                    const float *scores, const int32_t *pair, const float *weight,
                                    float *dscores, float *stats) {
    cuda_context *c = cuda_context_of(be);
    if (c->error.code) return;
    PMOE_KERNEL_CHECK(c, pmoe_k_router_linear_loss(batch, patches, experts, scores, pair, weight,
                                                   dscores, stats, c->stream));
}

static void cuda_sgd_update(pmoe_backend *be, int64_t count, float *param, const float *grad,
                            float *velocity, float lr, float momentum, float weight_decay,
                            const int32_t *skip) {
    cuda_context *c = cuda_context_of(be);
    if (c->error.code) return;
    PMOE_KERNEL_CHECK(c, pmoe_k_sgd_update(count, param, grad, velocity, lr, momentum, weight_decay,
                                           skip, c->stream));
}

static void cuda_nonfinite_guard(pmoe_backend *be, int arrays, const float *const *x,
                                 const int64_t *count, int64_t step, int hold, int32_t *guard,
                                 int32_t *verdict) {
    cuda_context *c = cuda_context_of(be);
    if (c->error.code) return;
    PMOE_KERNEL_CHECK(
        c, pmoe_k_nonfinite_guard(arrays, x, count, step, hold, guard, verdict, c->stream));
}

/* ---- deep-model layers: convolution through cuDNN (cuda_conv.c), the
 * rest pmoe's own kernels (batchnorm_relu_pool.cu, moe_layer.cu) ---------------------- */

/* A failure of the cuDNN wrapper, recorded like any op's. Its message may
 * already start with the device's name, which cuda_record adds again. */
static void record_conv(cuda_context *c, pmoe_status status, const pmoe_error *err) {
    if (status == PMOE_OK) return;
    const char *text = err->message;
    const size_t len = strlen(c->name);
    if (strncmp(text, c->name, len) == 0 && strncmp(text + len, ": ", 2) == 0) text += len + 2;
    cuda_record(c, status, "%s", text);
}

static void cuda_conv2d_forward(pmoe_backend *be, const pmoe_conv_shape *s, const float *x,
                                const float *w, const float *bias, float *y) {
    cuda_context *c = cuda_context_of(be);
    if (c->error.code) return;
    if (s->batch == 0) return;
    pmoe_error err = {PMOE_OK, ""};
    record_conv(c, pmoe_cuda_conv_forward(be, s, x, w, y, &err), &err);
    if (c->error.code) return;
    if (bias)
        PMOE_KERNEL_CHECK(c, pmoe_k_channel_bias_forward(s->batch, s->out_channels,
                                                         (int64_t)pmoe_conv_out_height(s) *
                                                             pmoe_conv_out_width(s),
                                                         bias, y, c->stream));
}

/* dbias and dw are overwritten, dx accumulates (cuDNN's beta = 1). */
static void cuda_conv2d_backward(pmoe_backend *be, const pmoe_conv_shape *s, const float *x,
                                 const float *w, const float *dy, float *dx, float *dw,
                                 float *dbias) {
    cuda_context *c = cuda_context_of(be);
    if (c->error.code) return;
    const int K = s->out_channels;
    if (s->batch == 0) { /* empty sums */
        if (dw)
            PMOE_KERNEL_CHECK(c,
                              pmoe_k_fill((int64_t)K * s->in_channels * s->kernel_h * s->kernel_w,
                                          dw, 0.0f, c->stream));
        if (dbias) PMOE_KERNEL_CHECK(c, pmoe_k_fill(K, dbias, 0.0f, c->stream));
        return;
    }
    pmoe_error err = {PMOE_OK, ""};
    if (dbias)
        PMOE_KERNEL_CHECK(c, pmoe_k_channel_bias_backward(s->batch, K,
                                                          (int64_t)pmoe_conv_out_height(s) *
                                                              pmoe_conv_out_width(s),
                                                          dy, dbias, c->stream));
    if (c->error.code) return;
    if (dw) record_conv(c, pmoe_cuda_conv_backward_filter(be, s, x, dy, dw, &err), &err);
    if (c->error.code) return;
    if (dx) record_conv(c, pmoe_cuda_conv_backward_data_accumulate(be, s, dy, w, dx, &err), &err);
}

static void cuda_batchnorm_forward_train(pmoe_backend *be, const pmoe_bn_shape *s, const float *x,
                                         const float *gamma, const float *beta, float *y,
                                         float *save_mean, float *save_invstd, float *running_mean,
                                         float *running_var, float momentum) {
    cuda_context *c = cuda_context_of(be);
    if (c->error.code) return;
    float *partials =
        cuda_scratch(c, pmoe_k_batchnorm_workspace_floats(s->batch, s->channels, s->spatial));
    if (c->error.code) return;
    PMOE_KERNEL_CHECK(c, pmoe_k_batchnorm_forward_train(s->batch, s->channels, s->spatial, s->eps,
                                                        x, gamma, beta, y, save_mean, save_invstd,
                                                        running_mean, running_var, momentum,
                                                        partials, c->stream));
}

static void cuda_batchnorm_forward_eval(pmoe_backend *be, const pmoe_bn_shape *s, const float *x,
                                        const float *gamma, const float *beta,
                                        const float *running_mean, const float *running_var,
                                        float *y) {
    cuda_context *c = cuda_context_of(be);
    if (c->error.code) return;
    PMOE_KERNEL_CHECK(c, pmoe_k_batchnorm_forward_eval(s->batch, s->channels, s->spatial, s->eps, x,
                                                       gamma, beta, running_mean, running_var, y,
                                                       c->stream));
}

static void cuda_batchnorm_backward(pmoe_backend *be, const pmoe_bn_shape *s, const float *x,
                                    const float *gamma, const float *save_mean,
                                    const float *save_invstd, const float *dy, float *dx,
                                    float *dgamma, float *dbeta) {
    cuda_context *c = cuda_context_of(be);
    if (c->error.code) return;
    float *partials =
        cuda_scratch(c, pmoe_k_batchnorm_workspace_floats(s->batch, s->channels, s->spatial));
    if (c->error.code) return;
    PMOE_KERNEL_CHECK(c, pmoe_k_batchnorm_backward(s->batch, s->channels, s->spatial, x, gamma,
                                                   save_mean, save_invstd, dy, dx, dgamma, dbeta,
                                                   partials, c->stream));
}

static void cuda_relu_forward(pmoe_backend *be, int64_t count, const float *x, float *y) {
    cuda_context *c = cuda_context_of(be);
    if (c->error.code) return;
    PMOE_KERNEL_CHECK(c, pmoe_k_relu_forward_out(count, x, y, c->stream));
}

static void cuda_relu_backward(pmoe_backend *be, int64_t count, const float *y, const float *dy,
                               float *dx) {
    cuda_context *c = cuda_context_of(be);
    if (c->error.code) return;
    PMOE_KERNEL_CHECK(c, pmoe_k_relu_backward_accumulate(count, y, dy, dx, c->stream));
}

static void cuda_axpby(pmoe_backend *be, int64_t count, float alpha, const float *x, float beta,
                       float *y) {
    cuda_context *c = cuda_context_of(be);
    if (c->error.code) return;
    PMOE_KERNEL_CHECK(c, pmoe_k_axpby(count, alpha, x, beta, y, c->stream));
}

static void cuda_avgpool_forward(pmoe_backend *be, int64_t rows, int64_t spatial, const float *x,
                                 float *y) {
    cuda_context *c = cuda_context_of(be);
    if (c->error.code) return;
    PMOE_KERNEL_CHECK(c, pmoe_k_avgpool_forward(rows, spatial, x, y, c->stream));
}

static void cuda_avgpool_backward(pmoe_backend *be, int64_t rows, int64_t spatial, const float *dy,
                                  float *dx) {
    cuda_context *c = cuda_context_of(be);
    if (c->error.code) return;
    PMOE_KERNEL_CHECK(c, pmoe_k_avgpool_backward(rows, spatial, dy, dx, c->stream));
}

static void cuda_channel_bias_forward(pmoe_backend *be, int64_t batch, int channels,
                                      int64_t spatial, const float *bias, float *y) {
    cuda_context *c = cuda_context_of(be);
    if (c->error.code) return;
    PMOE_KERNEL_CHECK(c, pmoe_k_channel_bias_forward(batch, channels, spatial, bias, y, c->stream));
}

static void cuda_channel_bias_backward(pmoe_backend *be, int64_t batch, int channels,
                                       int64_t spatial, const float *dy, float *dbias) {
    cuda_context *c = cuda_context_of(be);
    if (c->error.code) return;
    PMOE_KERNEL_CHECK(c,
                      pmoe_k_channel_bias_backward(batch, channels, spatial, dy, dbias, c->stream));
}

static void cuda_moe_scatter_forward(pmoe_backend *be, const pmoe_scatter_shape *s,
                                     const float *expert_out, const int32_t *selected,
                                     const float *gate, float *out_patches) {
    cuda_context *c = cuda_context_of(be);
    if (c->error.code) return;
    PMOE_KERNEL_CHECK(c, pmoe_k_moe_scatter_forward(s->batch, s->patches, s->experts, s->topl,
                                                    s->expert_dim, expert_out, selected, gate,
                                                    out_patches, c->stream));
}

static void cuda_moe_scatter_backward(pmoe_backend *be, const pmoe_scatter_shape *s,
                                      const float *dout_patches, const float *expert_out,
                                      const int32_t *selected, const float *gate,
                                      float *dexpert_out, float *dgate) {
    cuda_context *c = cuda_context_of(be);
    if (c->error.code) return;
    PMOE_KERNEL_CHECK(c, pmoe_k_moe_scatter_backward(
                             s->batch, s->patches, s->experts, s->topl, s->expert_dim, dout_patches,
                             expert_out, selected, gate, dexpert_out, dgate, c->stream));
}

static void cuda_moe_position_weights(pmoe_backend *be, const pmoe_route_shape *s,
                                      const int32_t *selected, const float *gate, float *weights) {
    cuda_context *c = cuda_context_of(be);
    if (c->error.code) return;
    PMOE_KERNEL_CHECK(c, pmoe_k_moe_position_weights(s->batch, s->patches, s->experts, s->topl,
                                                     selected, gate, weights, c->stream));
}

static void cuda_moe_position_weights_backward(pmoe_backend *be, const pmoe_route_shape *s,
                                               const int32_t *selected, const float *dweights,
                                               float *dgate) {
    cuda_context *c = cuda_context_of(be);
    if (c->error.code) return;
    PMOE_KERNEL_CHECK(c, pmoe_k_moe_position_weights_backward(s->batch, s->patches, s->experts,
                                                              s->topl, selected, dweights, dgate,
                                                              c->stream));
}

static void cuda_patch_scale_forward(pmoe_backend *be, const pmoe_patch_shape *s,
                                     const float *weight, const float *x, float *y) {
    cuda_context *c = cuda_context_of(be);
    if (c->error.code) return;
    PMOE_KERNEL_CHECK(c, pmoe_k_patch_scale_forward(s->batch, s->channels, s->height, s->width,
                                                    s->patch, weight, x, y, c->stream));
}

static void cuda_patch_scale_backward(pmoe_backend *be, const pmoe_patch_shape *s,
                                      const float *weight, const float *x, const float *dy,
                                      float *dx, float *dweight) {
    cuda_context *c = cuda_context_of(be);
    if (c->error.code) return;
    PMOE_KERNEL_CHECK(c,
                      pmoe_k_patch_scale_backward(s->batch, s->channels, s->height, s->width,
                                                  s->patch, weight, x, dy, dx, dweight, c->stream));
}

static void cuda_channel_copy(pmoe_backend *be, int64_t batch, int64_t spatial, int channels,
                              const float *src, int src_channels, int src_offset, float *dst,
                              int dst_channels, int dst_offset) {
    cuda_context *c = cuda_context_of(be);
    if (c->error.code) return;
    PMOE_KERNEL_CHECK(c, pmoe_k_channel_copy(batch, spatial, channels, src, src_channels,
                                             src_offset, dst, dst_channels, dst_offset, c->stream));
}

static const pmoe_ops CUDA_OPS = {
    .gemm = cuda_gemm,
    .gemm_float32 = cuda_gemm_float32,
    .patch_extract_forward = cuda_patch_extract_forward,
    .patch_extract_backward = cuda_patch_extract_backward,
    .gate_topl_forward = cuda_gate_topl_forward,
    .gate_topl_backward = cuda_gate_topl_backward,
    .dispatch_gather = cuda_dispatch_gather,
    .dispatch_gather_backward = cuda_dispatch_gather_backward,
    .expert_forward = cuda_expert_forward,
    .expert_backward = cuda_expert_backward,
    .combine_forward = cuda_combine_forward,
    .combine_backward = cuda_combine_backward,
    .loss_forward_backward = cuda_loss_forward_backward,
    .router_linear_loss = cuda_router_linear_loss,
    .sgd_update = cuda_sgd_update,
    .nonfinite_guard = cuda_nonfinite_guard,
    .conv2d_forward = cuda_conv2d_forward,
    .conv2d_backward = cuda_conv2d_backward,
    .batchnorm_forward_train = cuda_batchnorm_forward_train,
    .batchnorm_forward_eval = cuda_batchnorm_forward_eval,
    .batchnorm_backward = cuda_batchnorm_backward,
    .relu_forward = cuda_relu_forward,
    .relu_backward = cuda_relu_backward,
    .axpby = cuda_axpby,
    .avgpool_forward = cuda_avgpool_forward,
    .avgpool_backward = cuda_avgpool_backward,
    .channel_bias_forward = cuda_channel_bias_forward,
    .channel_bias_backward = cuda_channel_bias_backward,
    .moe_scatter_forward = cuda_moe_scatter_forward,
    .moe_scatter_backward = cuda_moe_scatter_backward,
    .moe_position_weights = cuda_moe_position_weights,
    .moe_position_weights_backward = cuda_moe_position_weights_backward,
    .patch_scale_forward = cuda_patch_scale_forward,
    .patch_scale_backward = cuda_patch_scale_backward,
    .channel_copy = cuda_channel_copy,
};

/* ---- memory and control ------------------------------------------------- */

static pmoe_status cuda_alloc(pmoe_backend *be, size_t bytes, void **out, pmoe_error *err) {
    cuda_context *c = cuda_context_of(be);
    *out = NULL;
    if (!bytes) return PMOE_OK;
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes);
    if (e == cudaErrorMemoryAllocation) {
        cudaGetLastError(); /* an allocation failure is not sticky; clear it */
        size_t free_bytes = 0, total_bytes = 0;
        cudaMemGetInfo(&free_bytes, &total_bytes);
        return pmoe_fail(err, PMOE_ERR_OOM,
                         "%s: out of GPU memory: %zu bytes (%.1f MiB) asked, %.1f MiB held by "
                         "pmoe, %.1f of %.1f MiB free; reduce train.batch, or the model "
                         "(model.hidden, model.experts, model.topl)",
                         c->name, bytes, bytes / 1048576.0, be->mem.current_bytes / 1048576.0,
                         free_bytes / 1048576.0, total_bytes / 1048576.0);
    }
    if (e != cudaSuccess)
        return pmoe_fail(err, PMOE_ERR_INTERNAL, "%s: cudaMalloc(%zu bytes) failed: %s", c->name,
                         bytes, cudaGetErrorString(e));
    pmoe_mem_note_alloc(&be->mem, bytes);
    *out = p;
    return PMOE_OK;
}

static void cuda_release(pmoe_backend *be, void *ptr, size_t bytes) {
    cuda_context *c = cuda_context_of(be);
    if (!ptr) return;
    PMOE_CUDA_CHECK(c, cudaFree(ptr));
    pmoe_mem_note_free(&be->mem, bytes);
}

/* The stream orders a copy after the kernels enqueued before it. A pageable
 * source is staged before cudaMemcpyAsync returns, so the caller may reuse
 * it at once. */
static pmoe_status cuda_copy_in(pmoe_backend *be, void *dst, const void *host_src, size_t bytes,
                                pmoe_error *err) {
    cuda_context *c = cuda_context_of(be);
    if (!bytes) return PMOE_OK;
    if (!c->error.code)
        PMOE_CUDA_CHECK(c,
                        cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, c->stream));
    if (c->error.code) {
        if (err) *err = c->error;
        return c->error.code;
    }
    return PMOE_OK;
}

static pmoe_status cuda_copy_out(pmoe_backend *be, void *host_dst, const void *src, size_t bytes,
                                 pmoe_error *err) {
    cuda_context *c = cuda_context_of(be);
    if (bytes && !c->error.code)
        PMOE_CUDA_CHECK(c,
                        cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, c->stream));
    if (!c->error.code) PMOE_CUDA_CHECK(c, cudaStreamSynchronize(c->stream));
    if (c->error.code) {
        if (err) *err = c->error;
        return c->error.code;
    }
    return PMOE_OK;
}

static void cuda_fill(pmoe_backend *be, float *dst, float value, int64_t count) {
    cuda_context *c = cuda_context_of(be);
    if (c->error.code) return;
    PMOE_KERNEL_CHECK(c, pmoe_k_fill(count, dst, value, c->stream));
}

static pmoe_status cuda_synchronize(pmoe_backend *be, pmoe_error *err) {
    cuda_context *c = cuda_context_of(be);
    if (!c->error.code) PMOE_CUDA_CHECK(c, cudaStreamSynchronize(c->stream));
    if (c->error.code) {
        if (err) *err = c->error;
        return c->error.code;
    }
    return PMOE_OK;
}

static void cuda_profiler(pmoe_backend *be, int start) {
    cuda_context *c = cuda_context_of(be);
    if (start) PMOE_CUDA_CHECK(c, cudaProfilerStart());
    else PMOE_CUDA_CHECK(c, cudaProfilerStop());
}

/* Takes effect from the next op: GEMMs pick their math mode per call, and
 * cuDNN plans are kept per precision (cuda_conv.c). */
static pmoe_status cuda_set_precision(pmoe_backend *be, int precision, pmoe_error *err) {
    cuda_context_of(be)->precision = precision;
    return PMOE_OK;
}

static void cuda_destroy(pmoe_backend *be) {
    cuda_context *c = cuda_context_of(be);
    cudaStreamSynchronize(c->stream);
    cuda_conv_release(c);
    cuda_clock_release(c);
    if (c->scratch) {
        cudaFree(c->scratch);
        pmoe_mem_note_free(&be->mem, c->scratch_bytes);
    }
    cuda_upload_release(c);
    if (c->blas) cublasDestroy(c->blas);
    if (c->stream) cudaStreamDestroy(c->stream);
    cudaGetLastError();
    free(c);
}

pmoe_status pmoe_cuda_backend_create(int device, pmoe_backend **out, pmoe_error *err) {
    char why[300] = "";
    const int count = pmoe_cuda_device_count(why, sizeof why);
    if (count == 0) return pmoe_fail(err, PMOE_ERR_UNSUPPORTED, "no CUDA device answers: %s", why);
    if (device < 0 || device >= count)
        return pmoe_fail(err, PMOE_ERR_UNSUPPORTED,
                         "no CUDA device %d: this machine has %d (cuda:0 to cuda:%d)", device,
                         count, count - 1);
    cuda_context *c = calloc(1, sizeof *c);
    if (!c) return pmoe_fail(err, PMOE_ERR_OOM, "cannot allocate the CUDA backend");
    c->device = device;
    snprintf(c->name, sizeof c->name, "cuda:%d", device);
    struct cudaDeviceProp prop;
    cudaError_t e = cudaSetDevice(device);
    if (e == cudaSuccess) e = cudaGetDeviceProperties(&prop, device);
    if (e == cudaSuccess) {
        snprintf(c->name, sizeof c->name, "cuda:%d (%.120s)", device, prop.name);
        e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking);
    }
#ifdef PMOE_HAVE_NVTX
    if (e == cudaSuccess) nvtxNameCudaStreamA(c->stream, "pmoe compute");
#endif
    if (e != cudaSuccess) {
        cudaGetLastError();
        pmoe_status s = pmoe_fail(err, PMOE_ERR_INTERNAL, "cuda:%d: cannot start: %s", device,
                                  cudaGetErrorString(e));
        free(c);
        return s;
    }
    cublasStatus_t b = cublasCreate(&c->blas);
    if (b == CUBLAS_STATUS_SUCCESS) b = cublasSetStream(c->blas, c->stream);
    if (b == CUBLAS_STATUS_SUCCESS) b = cublasSetMathMode(c->blas, CUBLAS_DEFAULT_MATH);
    if (b != CUBLAS_STATUS_SUCCESS) {
        pmoe_status s = pmoe_fail(err, PMOE_ERR_INTERNAL, "%s: cuBLAS does not start: %s", c->name,
                                  cublasGetStatusString(b));
        if (c->blas) cublasDestroy(c->blas);
        cudaStreamDestroy(c->stream);
        free(c);
        return s;
    }
    c->be.name = c->name;
    c->be.ops = &CUDA_OPS;
    c->be.impl = c;
    c->be.alloc = cuda_alloc;
    c->be.release = cuda_release;
    c->be.copy_in = cuda_copy_in;
    c->be.copy_out = cuda_copy_out;
    c->be.fill = cuda_fill;
    c->be.synchronize = cuda_synchronize;
    c->be.destroy = cuda_destroy;
    c->be.asynchronous = 1;
    c->be.profiler = cuda_profiler;
    /* The host side (init buffers, staging for batches and gradients) is
     * weighed like the CPU backend's memory, so a host that cannot hold it
     * refuses with a line rather than being killed as the pages fill. */
    const int64_t host_available = pmoe_host_memory_available(1, c->be.host_mem.limit_source,
                                                              sizeof c->be.host_mem.limit_source);
    c->be.host_mem.limit_bytes = host_available == 0 ? 1 : host_available; /* -1: no limit */
    c->be.set_precision = cuda_set_precision;
    c->blas_math = (int)CUBLAS_DEFAULT_MATH;
    cuda_clock_init(c);
    cuda_upload_init(c);
    *out = &c->be;
    return PMOE_OK;
}
