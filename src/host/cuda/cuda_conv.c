/* cuda_conv.c: the cuDNN convolution wrapper (see cuda_conv.h).
 *
 * Uses cuDNN's convolution API (cudnnConvolutionForward and its two
 * backward calls), which cuDNN 9 still ships, marked deprecated in favour of
 * the graph API; it is the smallest dependable surface for three fixed
 * directions, and the descriptors and algorithm choices are cached per
 * shape, so moving to the graph API later changes this file only. Plans
 * live in a short list (a model has a handful of conv shapes). */
#include <cudnn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/cuda_backend.h"
#include "cuda/cuda_conv.h"
#include "cuda/cuda_internal.h"

/* Largest workspace an algorithm may ask for; a slower one that fits is
 * chosen past it. */
#define WORKSPACE_LIMIT ((size_t)1 << 30)

typedef struct conv_plan {
    pmoe_conv_shape shape;
    int deterministic;
    cudnnTensorDescriptor_t x, y;
    cudnnFilterDescriptor_t w;
    cudnnConvolutionDescriptor_t conv;
    int chosen[3]; /* forward, backward data, backward filter */
    cudnnConvolutionFwdAlgo_t forward;
    cudnnConvolutionBwdDataAlgo_t backward_data;
    cudnnConvolutionBwdFilterAlgo_t backward_filter;
    size_t workspace[3];
    struct conv_plan *next;
} conv_plan;

struct cuda_conv_state {
    cudnnHandle_t handle;
    int deterministic;
    conv_plan *plans;
    void *workspace;
    size_t workspace_bytes;
};

#define CUDNN_FAIL(err, ctx, status, call)                                                    \
    pmoe_fail((err), PMOE_ERR_INTERNAL, "%s: %s failed: %s at %s:%d", (ctx)->name, call,     \
              cudnnGetErrorString(status), __FILE__, __LINE__)

/* cuDNN calls made while building a plan return their failure at once. */
#define CUDNN_TRY(err, ctx, call)                                                             \
    do {                                                                                      \
        cudnnStatus_t st_ = (call);                                                           \
        if (st_ != CUDNN_STATUS_SUCCESS) return CUDNN_FAIL(err, ctx, st_, #call);             \
    } while (0)

/* ... and those that enqueue work are recorded like any other op failure. */
#define PMOE_CUDNN_CHECK(ctx, call)                                                           \
    do {                                                                                      \
        cudnnStatus_t st_ = (call);                                                           \
        if (st_ != CUDNN_STATUS_SUCCESS)                                                      \
            cuda_record((ctx), PMOE_ERR_INTERNAL, "%s failed: %s at %s:%d", #call,            \
                        cudnnGetErrorString(st_), __FILE__, __LINE__);                        \
    } while (0)

int pmoe_cuda_conv_built(void) { return 1; }

static void free_plan(conv_plan *p) {
    if (p->x) cudnnDestroyTensorDescriptor(p->x);
    if (p->y) cudnnDestroyTensorDescriptor(p->y);
    if (p->w) cudnnDestroyFilterDescriptor(p->w);
    if (p->conv) cudnnDestroyConvolutionDescriptor(p->conv);
    free(p);
}

void cuda_conv_release(cuda_context *c) {
    cuda_conv_state *st = c->conv;
    if (!st) return;
    for (conv_plan *p = st->plans, *next; p; p = next) {
        next = p->next;
        free_plan(p);
    }
    if (st->workspace) {
        cudaFree(st->workspace);
        pmoe_mem_note_free(&c->be.mem, st->workspace_bytes);
    }
    if (st->handle) cudnnDestroy(st->handle);
    free(st);
    c->conv = NULL;
}

static pmoe_status state_of(pmoe_backend *be, cuda_conv_state **out, pmoe_error *err) {
    if (!pmoe_backend_is_cuda(be))
        return pmoe_fail(err, PMOE_ERR_UNSUPPORTED, "cuDNN convolution on the %s backend",
                         be ? be->name : "(no)");
    cuda_context *c = cuda_context_of(be);
    if (!c->conv) {
        cuda_conv_state *st = calloc(1, sizeof *st);
        if (!st) return pmoe_fail(err, PMOE_ERR_OOM, "cannot allocate the cuDNN state");
        st->deterministic = 1;
        cudnnStatus_t s = cudnnCreate(&st->handle);
        if (s == CUDNN_STATUS_SUCCESS) s = cudnnSetStream(st->handle, c->stream);
        if (s != CUDNN_STATUS_SUCCESS) {
            if (st->handle) cudnnDestroy(st->handle);
            free(st);
            return CUDNN_FAIL(err, c, s, "cudnnCreate");
        }
        c->conv = st;
    }
    *out = c->conv;
    return PMOE_OK;
}

static int same_shape(const pmoe_conv_shape *a, const pmoe_conv_shape *b) {
    return a->batch == b->batch && a->in_channels == b->in_channels && a->height == b->height &&
           a->width == b->width && a->out_channels == b->out_channels &&
           a->kernel_h == b->kernel_h && a->kernel_w == b->kernel_w && a->stride == b->stride &&
           a->pad == b->pad;
}

static pmoe_status make_plan(cuda_context *c, cuda_conv_state *st, const pmoe_conv_shape *s,
                             conv_plan **out, pmoe_error *err) {
    for (conv_plan *p = st->plans; p; p = p->next)
        if (same_shape(&p->shape, s) && p->deterministic == st->deterministic) {
            *out = p;
            return PMOE_OK;
        }
    if (s->batch < 1 || s->batch > 0x7fffffff || s->in_channels < 1 || s->out_channels < 1 ||
        s->kernel_h < 1 || s->kernel_w < 1 || s->stride < 1 || s->pad < 0 ||
        pmoe_conv_out_height(s) < 1 || pmoe_conv_out_width(s) < 1)
        return pmoe_fail(err, PMOE_ERR_UNSUPPORTED,
                         "convolution shape B=%lld C=%d H=%d W=%d K=%d R=%d S=%d stride %d pad %d",
                         (long long)s->batch, s->in_channels, s->height, s->width,
                         s->out_channels, s->kernel_h, s->kernel_w, s->stride, s->pad);
    conv_plan *p = calloc(1, sizeof *p);
    if (!p) return pmoe_fail(err, PMOE_ERR_OOM, "cannot allocate a convolution plan");
    p->shape = *s;
    p->deterministic = st->deterministic;
    pmoe_status status = PMOE_OK;
#define PLAN_TRY(call)                                                                        \
    do {                                                                                      \
        cudnnStatus_t st_ = (call);                                                           \
        if (st_ != CUDNN_STATUS_SUCCESS) {                                                    \
            status = CUDNN_FAIL(err, c, st_, #call);                                          \
            goto fail;                                                                        \
        }                                                                                     \
    } while (0)
    PLAN_TRY(cudnnCreateTensorDescriptor(&p->x));
    PLAN_TRY(cudnnCreateTensorDescriptor(&p->y));
    PLAN_TRY(cudnnCreateFilterDescriptor(&p->w));
    PLAN_TRY(cudnnCreateConvolutionDescriptor(&p->conv));
    PLAN_TRY(cudnnSetTensor4dDescriptor(p->x, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, (int)s->batch,
                                        s->in_channels, s->height, s->width));
    PLAN_TRY(cudnnSetFilter4dDescriptor(p->w, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW,
                                        s->out_channels, s->in_channels, s->kernel_h,
                                        s->kernel_w));
    /* Cross-correlation, as every framework's "convolution". */
    PLAN_TRY(cudnnSetConvolution2dDescriptor(p->conv, s->pad, s->pad, s->stride, s->stride, 1, 1,
                                             CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    /* FMA only: no TF32 tensor-core math, so float32 parity holds. */
    PLAN_TRY(cudnnSetConvolutionMathType(p->conv, CUDNN_FMA_MATH));
    int n, k, h, w;
    PLAN_TRY(cudnnGetConvolution2dForwardOutputDim(p->conv, p->x, p->w, &n, &k, &h, &w));
    if (h != pmoe_conv_out_height(s) || w != pmoe_conv_out_width(s)) {
        status = pmoe_fail(err, PMOE_ERR_INTERNAL, "cuDNN output %dx%d, expected %dx%d", h, w,
                           pmoe_conv_out_height(s), pmoe_conv_out_width(s));
        goto fail;
    }
    PLAN_TRY(cudnnSetTensor4dDescriptor(p->y, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, n, k, h, w));
    p->next = st->plans;
    st->plans = p;
    *out = p;
    return PMOE_OK;
fail:
    free_plan(p);
    return status;
#undef PLAN_TRY
}

/* The first algorithm in cuDNN's heuristic order that succeeds, uses FMA
 * math, fits the workspace limit and, when asked, is deterministic. */
#define CHOOSE(perf_type, count_enum, getter, ...)                                            \
    do {                                                                                      \
        perf_type perf[count_enum];                                                           \
        int returned = 0, found = -1;                                                         \
        CUDNN_TRY(err, c, getter(st->handle, __VA_ARGS__, count_enum, &returned, perf));      \
        for (int i = 0; i < returned && found < 0; i++)                                       \
            if (perf[i].status == CUDNN_STATUS_SUCCESS && perf[i].mathType == CUDNN_FMA_MATH && \
                perf[i].memory <= WORKSPACE_LIMIT &&                                          \
                (!p->deterministic || perf[i].determinism == CUDNN_DETERMINISTIC))            \
                found = i;                                                                    \
        if (found < 0)                                                                        \
            return pmoe_fail(err, PMOE_ERR_UNSUPPORTED,                                       \
                             "%s: cuDNN offers no %s FMA algorithm for this convolution "      \
                             "(%d candidates)", c->name,                                      \
                             p->deterministic ? "deterministic" : "", returned);              \
        algo = perf[found].algo;                                                              \
        bytes = perf[found].memory;                                                           \
    } while (0)

static pmoe_status ensure_workspace(cuda_context *c, cuda_conv_state *st, size_t bytes,
                                    pmoe_error *err) {
    if (bytes <= st->workspace_bytes) return PMOE_OK;
    if (st->workspace) { /* cudaFree waits for the work that still uses it */
        cudaFree(st->workspace);
        pmoe_mem_note_free(&c->be.mem, st->workspace_bytes);
        st->workspace = NULL;
        st->workspace_bytes = 0;
    }
    void *p = NULL;
    pmoe_status status = c->be.alloc(&c->be, bytes, &p, err);
    if (status) return status;
    st->workspace = p;
    st->workspace_bytes = bytes;
    return PMOE_OK;
}

static pmoe_status prepare(pmoe_backend *be, const pmoe_conv_shape *s, int direction,
                           cuda_conv_state **st_out, conv_plan **plan_out, pmoe_error *err) {
    cuda_conv_state *st = NULL;
    pmoe_status status = state_of(be, &st, err);
    if (status) return status;
    cuda_context *c = cuda_context_of(be);
    if (c->error.code) {
        if (err) *err = c->error;
        return c->error.code;
    }
    conv_plan *p = NULL;
    status = make_plan(c, st, s, &p, err);
    if (status) return status;
    if (!p->chosen[direction]) {
        size_t bytes = 0;
        if (direction == 0) {
            cudnnConvolutionFwdAlgo_t algo;
            CHOOSE(cudnnConvolutionFwdAlgoPerf_t, CUDNN_CONVOLUTION_FWD_ALGO_COUNT,
                   cudnnGetConvolutionForwardAlgorithm_v7, p->x, p->w, p->conv, p->y);
            p->forward = algo;
        } else if (direction == 1) {
            cudnnConvolutionBwdDataAlgo_t algo;
            CHOOSE(cudnnConvolutionBwdDataAlgoPerf_t, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT,
                   cudnnGetConvolutionBackwardDataAlgorithm_v7, p->w, p->y, p->conv, p->x);
            p->backward_data = algo;
        } else {
            cudnnConvolutionBwdFilterAlgo_t algo;
            CHOOSE(cudnnConvolutionBwdFilterAlgoPerf_t, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT,
                   cudnnGetConvolutionBackwardFilterAlgorithm_v7, p->x, p->y, p->conv, p->w);
            p->backward_filter = algo;
        }
        p->workspace[direction] = bytes;
        p->chosen[direction] = 1;
    }
    status = ensure_workspace(c, st, p->workspace[direction], err);
    if (status) return status;
    *st_out = st;
    *plan_out = p;
    return PMOE_OK;
}

pmoe_status pmoe_cuda_conv_forward(pmoe_backend *be, const pmoe_conv_shape *s, const float *x,
                                   const float *w, float *y, pmoe_error *err) {
    cuda_conv_state *st = NULL;
    conv_plan *p = NULL;
    pmoe_status status = prepare(be, s, 0, &st, &p, err);
    if (status) return status;
    const float one = 1.0f, zero = 0.0f;
    PMOE_CUDNN_CHECK(cuda_context_of(be),
                     cudnnConvolutionForward(st->handle, &one, p->x, x, p->w, w, p->conv,
                                             p->forward, st->workspace, p->workspace[0], &zero,
                                             p->y, y));
    return PMOE_OK;
}

/* dx = dx_old beta + the data gradient: beta 0 overwrites (dx's old
 * contents are not read, as cuDNN documents for beta = 0), 1 accumulates. */
static pmoe_status backward_data(pmoe_backend *be, const pmoe_conv_shape *s, const float *dy,
                                 const float *w, float beta, float *dx, pmoe_error *err) {
    cuda_conv_state *st = NULL;
    conv_plan *p = NULL;
    pmoe_status status = prepare(be, s, 1, &st, &p, err);
    if (status) return status;
    const float one = 1.0f;
    PMOE_CUDNN_CHECK(cuda_context_of(be),
                     cudnnConvolutionBackwardData(st->handle, &one, p->w, w, p->y, dy, p->conv,
                                                  p->backward_data, st->workspace,
                                                  p->workspace[1], &beta, p->x, dx));
    return PMOE_OK;
}

pmoe_status pmoe_cuda_conv_backward_data(pmoe_backend *be, const pmoe_conv_shape *s,
                                         const float *dy, const float *w, float *dx,
                                         pmoe_error *err) {
    return backward_data(be, s, dy, w, 0.0f, dx, err);
}

pmoe_status pmoe_cuda_conv_backward_data_accumulate(pmoe_backend *be, const pmoe_conv_shape *s,
                                                    const float *dy, const float *w, float *dx,
                                                    pmoe_error *err) {
    return backward_data(be, s, dy, w, 1.0f, dx, err);
}

pmoe_status pmoe_cuda_conv_backward_filter(pmoe_backend *be, const pmoe_conv_shape *s,
                                           const float *x, const float *dy, float *dw,
                                           pmoe_error *err) {
    cuda_conv_state *st = NULL;
    conv_plan *p = NULL;
    pmoe_status status = prepare(be, s, 2, &st, &p, err);
    if (status) return status;
    const float one = 1.0f, zero = 0.0f;
    PMOE_CUDNN_CHECK(cuda_context_of(be),
                     cudnnConvolutionBackwardFilter(st->handle, &one, p->x, x, p->y, dy, p->conv,
                                                    p->backward_filter, st->workspace,
                                                    p->workspace[2], &zero, p->w, dw));
    return PMOE_OK;
}

pmoe_status pmoe_cuda_conv_set_deterministic(pmoe_backend *be, int deterministic,
                                             pmoe_error *err) {
    cuda_conv_state *st = NULL;
    pmoe_status status = state_of(be, &st, err);
    if (status) return status;
    st->deterministic = deterministic != 0;
    return PMOE_OK;
}
