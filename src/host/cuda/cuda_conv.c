/* cuda_conv.c: the cuDNN convolution wrapper (see cuda_conv.h).
 *
 * Uses cuDNN's convolution API (cudnnConvolutionForward and its two
 * backward calls), which cuDNN 9 still ships, marked deprecated in favour of
 * the graph API; it is the smallest dependable surface for three fixed
 * directions, and the descriptors and algorithm choices are cached per
 * shape, so moving to the graph API later changes this file only. Plans
 * live in a short list (a model has a handful of conv shapes); a plan is
 * made whole at a shape's first call (all three directions' candidates,
 * their workspace queried and allocated, the choice logged), so the calls
 * after it never allocate unless an algorithm is refused. */
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

/* One direction's candidates: the algorithms cuDNN's heuristics list that
 * pass the filter below, in cuDNN's order, with the math each runs in, and
 * the one in use (`next`) with its workspace from cuDNN's workspace query.
 * An algorithm whose call fails is dropped for the next one. */
#define MAX_CANDIDATES 16
typedef struct conv_direction {
    int count, next;
    int algo[MAX_CANDIDATES];
    cudnnMathType_t math[MAX_CANDIDATES];
    size_t workspace; /* what `next` needs (cudnnGet*WorkspaceSize) */
} conv_direction;

enum { DIRECTION_FORWARD, DIRECTION_BACKWARD_DATA, DIRECTION_BACKWARD_FILTER, DIRECTIONS };
static const char *const DIRECTION_NAMES[DIRECTIONS] = {"forward", "backward data",
                                                        "backward filter"};

typedef struct conv_plan {
    pmoe_conv_shape shape;
    int deterministic;
    int precision; /* train.precision: fp32 takes FMA math only, tf32 and bf16 tensor-op math too */
    cudnnTensorDescriptor_t x, y;
    cudnnFilterDescriptor_t w;
    cudnnConvolutionDescriptor_t conv;
    conv_direction direction[DIRECTIONS];
    int listed[DIRECTIONS];   /* how many algorithms the heuristics returned */
    int ready;                /* candidates listed and workspace allocated */
    cudnnMathType_t math_set; /* the math type set on conv now */
    struct conv_plan *next;
} conv_plan;

struct cuda_conv_state {
    cudnnHandle_t handle;
    int deterministic;
    conv_plan *plans;
    void *workspace;
    size_t workspace_bytes;
};

#define CUDNN_FAIL(err, ctx, status, call)                                                         \
    pmoe_fail((err), PMOE_ERR_INTERNAL, "%s: %s failed: %s at %s:%d", (ctx)->name, call,           \
              cudnnGetErrorString(status), __FILE__, __LINE__)

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

static cudnnMathType_t plan_math(const conv_plan *p) {
    return p->precision == PMOE_PRECISION_FP32 ? CUDNN_FMA_MATH : CUDNN_TENSOR_OP_MATH;
}

static pmoe_status make_plan(cuda_context *c, cuda_conv_state *st, const pmoe_conv_shape *s,
                             conv_plan **out, pmoe_error *err) {
    for (conv_plan *p = st->plans; p; p = p->next)
        if (same_shape(&p->shape, s) && p->deterministic == st->deterministic &&
            p->precision == c->precision) {
            *out = p;
            return PMOE_OK;
        }
    if (s->batch < 1 || s->batch > 0x7fffffff || s->in_channels < 1 || s->out_channels < 1 ||
        s->kernel_h < 1 || s->kernel_w < 1 || s->stride < 1 || s->pad < 0 ||
        pmoe_conv_out_height(s) < 1 || pmoe_conv_out_width(s) < 1)
        return pmoe_fail(err, PMOE_ERR_UNSUPPORTED,
                         "convolution shape B=%lld C=%d H=%d W=%d K=%d R=%d S=%d stride %d pad %d",
                         (long long)s->batch, s->in_channels, s->height, s->width, s->out_channels,
                         s->kernel_h, s->kernel_w, s->stride, s->pad);
    conv_plan *p = calloc(1, sizeof *p);
    if (!p) return pmoe_fail(err, PMOE_ERR_OOM, "cannot allocate a convolution plan");
    p->shape = *s;
    p->deterministic = st->deterministic;
    p->precision = c->precision;
    pmoe_status status = PMOE_OK;
#define PLAN_TRY(call)                                                                             \
    do {                                                                                           \
        cudnnStatus_t st_ = (call);                                                                \
        if (st_ != CUDNN_STATUS_SUCCESS) {                                                         \
            status = CUDNN_FAIL(err, c, st_, #call);                                               \
            goto fail;                                                                             \
        }                                                                                          \
    } while (0)
    PLAN_TRY(cudnnCreateTensorDescriptor(&p->x));
    PLAN_TRY(cudnnCreateTensorDescriptor(&p->y));
    PLAN_TRY(cudnnCreateFilterDescriptor(&p->w));
    PLAN_TRY(cudnnCreateConvolutionDescriptor(&p->conv));
    PLAN_TRY(cudnnSetTensor4dDescriptor(p->x, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, (int)s->batch,
                                        s->in_channels, s->height, s->width));
    PLAN_TRY(cudnnSetFilter4dDescriptor(p->w, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, s->out_channels,
                                        s->in_channels, s->kernel_h, s->kernel_w));
    /* Cross-correlation, as every framework's "convolution". */
    PLAN_TRY(cudnnSetConvolution2dDescriptor(p->conv, s->pad, s->pad, s->stride, s->stride, 1, 1,
                                             CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    /* fp32: FMA only, no TF32 tensor-core math, so float32 parity holds;
     * tf32 and bf16: tensor-op math allowed (the heuristics then also list
     * tensor-core algorithms, whose math each call sets: run_direction). */
    PLAN_TRY(cudnnSetConvolutionMathType(p->conv, plan_math(p)));
    p->math_set = plan_math(p);
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

/* cuDNN's names of the algorithms, and the class the conv tests' tolerance
 * follows (cuda_conv.h). */
static const char *algorithm_name(int direction, int algo, pmoe_conv_algo_class *cls) {
    *cls = PMOE_CONV_ALGO_DIRECT;
    if (direction == DIRECTION_FORWARD) {
        switch ((cudnnConvolutionFwdAlgo_t)algo) {
        case CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM: return "IMPLICIT_GEMM";
        case CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM: return "IMPLICIT_PRECOMP_GEMM";
        case CUDNN_CONVOLUTION_FWD_ALGO_GEMM: return "GEMM";
        case CUDNN_CONVOLUTION_FWD_ALGO_DIRECT: return "DIRECT";
        case CUDNN_CONVOLUTION_FWD_ALGO_FFT: *cls = PMOE_CONV_ALGO_FFT; return "FFT";
        case CUDNN_CONVOLUTION_FWD_ALGO_FFT_TILING: *cls = PMOE_CONV_ALGO_FFT; return "FFT_TILING";
        case CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD: *cls = PMOE_CONV_ALGO_WINOGRAD; return "WINOGRAD";
        case CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED:
            *cls = PMOE_CONV_ALGO_WINOGRAD;
            return "WINOGRAD_NONFUSED";
        default: return "unknown";
        }
    }
    if (direction == DIRECTION_BACKWARD_DATA) {
        switch ((cudnnConvolutionBwdDataAlgo_t)algo) {
        case CUDNN_CONVOLUTION_BWD_DATA_ALGO_0: return "ALGO_0";
        case CUDNN_CONVOLUTION_BWD_DATA_ALGO_1: return "ALGO_1";
        case CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT: *cls = PMOE_CONV_ALGO_FFT; return "FFT";
        case CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT_TILING:
            *cls = PMOE_CONV_ALGO_FFT;
            return "FFT_TILING";
        case CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD:
            *cls = PMOE_CONV_ALGO_WINOGRAD;
            return "WINOGRAD";
        case CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD_NONFUSED:
            *cls = PMOE_CONV_ALGO_WINOGRAD;
            return "WINOGRAD_NONFUSED";
        default: return "unknown";
        }
    }
    switch ((cudnnConvolutionBwdFilterAlgo_t)algo) {
    case CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0: return "ALGO_0";
    case CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1: return "ALGO_1";
    case CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3: return "ALGO_3";
    case CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT: *cls = PMOE_CONV_ALGO_FFT; return "FFT";
    case CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT_TILING:
        *cls = PMOE_CONV_ALGO_FFT;
        return "FFT_TILING";
    case CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD_NONFUSED:
        *cls = PMOE_CONV_ALGO_WINOGRAD;
        return "WINOGRAD_NONFUSED";
    default: return "unknown";
    }
}

/* An algorithm cuDNN lists is a candidate when its status is success, its
 * math is the plan's (fp32: FMA only; tf32 and bf16: FMA or tensor-op),
 * it fits WORKSPACE_LIMIT and, when asked, is deterministic. The three
 * heuristics fill structs of three types with the same fields. */
#define KEEP_CANDIDATES(perf, returned, d, p)                                                      \
    for (int i_ = 0; i_ < (returned) && (d)->count < MAX_CANDIDATES; i_++)                         \
        if ((perf)[i_].status == CUDNN_STATUS_SUCCESS &&                                           \
            ((perf)[i_].mathType == CUDNN_FMA_MATH || plan_math(p) != CUDNN_FMA_MATH) &&           \
            (perf)[i_].memory <= WORKSPACE_LIMIT &&                                                \
            (!(p)->deterministic || (perf)[i_].determinism == CUDNN_DETERMINISTIC)) {              \
            (d)->algo[(d)->count] = (int)(perf)[i_].algo;                                          \
            (d)->math[(d)->count++] = (perf)[i_].mathType;                                         \
        }

/* Asks cuDNN's heuristics (no timing: the same list on every run) for the
 * direction's algorithms and keeps the candidates, in cuDNN's order. A
 * direction left with none fails when it is run (run_direction), not here:
 * a shape that only ever runs forward (evaluation) needs no backward. */
static pmoe_status list_candidates(cuda_context *c, cuda_conv_state *st, conv_plan *p,
                                   int direction, pmoe_error *err) {
    conv_direction *d = &p->direction[direction];
    int returned = 0;
    cudnnStatus_t s;
    const char *call;
    if (direction == DIRECTION_FORWARD) {
        cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
        call = "cudnnGetConvolutionForwardAlgorithm_v7";
        s = cudnnGetConvolutionForwardAlgorithm_v7(st->handle, p->x, p->w, p->conv, p->y,
                                                   CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &returned,
                                                   perf);
        if (s == CUDNN_STATUS_SUCCESS) KEEP_CANDIDATES(perf, returned, d, p);
    } else if (direction == DIRECTION_BACKWARD_DATA) {
        cudnnConvolutionBwdDataAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
        call = "cudnnGetConvolutionBackwardDataAlgorithm_v7";
        s = cudnnGetConvolutionBackwardDataAlgorithm_v7(st->handle, p->w, p->y, p->conv, p->x,
                                                        CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT,
                                                        &returned, perf);
        if (s == CUDNN_STATUS_SUCCESS) KEEP_CANDIDATES(perf, returned, d, p);
    } else {
        cudnnConvolutionBwdFilterAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
        call = "cudnnGetConvolutionBackwardFilterAlgorithm_v7";
        s = cudnnGetConvolutionBackwardFilterAlgorithm_v7(st->handle, p->x, p->y, p->conv, p->w,
                                                          CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT,
                                                          &returned, perf);
        if (s == CUDNN_STATUS_SUCCESS) KEEP_CANDIDATES(perf, returned, d, p);
    }
    if (s != CUDNN_STATUS_SUCCESS) return CUDNN_FAIL(err, c, s, call);
    p->listed[direction] = returned;
    return PMOE_OK;
}

/* The workspace the direction's current candidate needs, from cuDNN's
 * workspace query for that algorithm (not the heuristics' estimate). */
static pmoe_status query_workspace(cuda_context *c, cuda_conv_state *st, conv_plan *p,
                                   int direction, pmoe_error *err) {
    conv_direction *d = &p->direction[direction];
    d->workspace = 0;
    if (d->next >= d->count) return PMOE_OK;
    const int algo = d->algo[d->next];
    cudnnStatus_t s;
    if (direction == DIRECTION_FORWARD)
        s = cudnnGetConvolutionForwardWorkspaceSize(st->handle, p->x, p->w, p->conv, p->y,
                                                    (cudnnConvolutionFwdAlgo_t)algo, &d->workspace);
    else if (direction == DIRECTION_BACKWARD_DATA)
        s = cudnnGetConvolutionBackwardDataWorkspaceSize(st->handle, p->w, p->y, p->conv, p->x,
                                                         (cudnnConvolutionBwdDataAlgo_t)algo,
                                                         &d->workspace);
    else
        s = cudnnGetConvolutionBackwardFilterWorkspaceSize(st->handle, p->x, p->y, p->conv, p->w,
                                                           (cudnnConvolutionBwdFilterAlgo_t)algo,
                                                           &d->workspace);
    if (s != CUDNN_STATUS_SUCCESS)
        return CUDNN_FAIL(err, c, s, "cudnnGetConvolution*WorkspaceSize");
    return PMOE_OK;
}

static void describe_shape(const conv_plan *p, char *out, size_t size) {
    const pmoe_conv_shape *s = &p->shape;
    snprintf(out, size, "conv B=%lld C=%d %dx%d K=%d %dx%d stride %d pad %d (%s)",
             (long long)s->batch, s->in_channels, s->height, s->width, s->out_channels, s->kernel_h,
             s->kernel_w, s->stride, s->pad, pmoe_precision_name(p->precision));
}

/* With PMOE_CUDNN_LOG set (not "0"), one line on stderr per layer shape,
 * when its plan is made: each direction's algorithm and the workspace
 * allocated for them. Off by default, so a run's stderr stays its one
 * error line; a replaced algorithm is always reported (run_direction). */
static void log_choice(const cuda_context *c, const conv_plan *p, size_t workspace) {
    const char *on = getenv("PMOE_CUDNN_LOG");
    if (!on || !*on || strcmp(on, "0") == 0) return;
    char shape[160], part[DIRECTIONS][64];
    describe_shape(p, shape, sizeof shape);
    for (int i = 0; i < DIRECTIONS; i++) {
        const conv_direction *d = &p->direction[i];
        pmoe_conv_algo_class cls;
        if (d->count == 0) snprintf(part[i], sizeof part[i], "%s none", DIRECTION_NAMES[i]);
        else
            snprintf(part[i], sizeof part[i], "%s %s%s", DIRECTION_NAMES[i],
                     algorithm_name(i, d->algo[0], &cls),
                     d->math[0] == CUDNN_FMA_MATH ? "" : " (tensor op)");
    }
    fprintf(stderr, "pmoe: %s: cuDNN %s: %s, %s, %s; workspace %.1f KiB\n", c->name, shape, part[0],
            part[1], part[2], workspace / 1024.0);
}

/* On stderr, always: algorithms refused when called and the one that ran
 * instead (once per fallback; a run whose every candidate fails says so in
 * its one error line instead). */
static void log_fallback(const cuda_context *c, const conv_plan *p, int direction, int first,
                         int now) {
    char shape[160];
    pmoe_conv_algo_class cls;
    describe_shape(p, shape, sizeof shape);
    const conv_direction *d = &p->direction[direction];
    fprintf(stderr, "pmoe: %s: cuDNN %s: %s: %d algorithm%s refused from %s on; %s runs instead\n",
            c->name, shape, DIRECTION_NAMES[direction], now - first, now - first > 1 ? "s" : "",
            algorithm_name(direction, d->algo[first], &cls),
            algorithm_name(direction, d->algo[now], &cls));
}

/* A new shape's plan: descriptors, every direction's candidates and the
 * workspace their first choices need, allocated now (at the layer's first
 * call, before any step of it is timed or captured), so no call of the
 * steps that follow allocates; then the choice is logged, once. */
static pmoe_status new_plan(cuda_context *c, cuda_conv_state *st, const pmoe_conv_shape *s,
                            conv_plan **out, pmoe_error *err) {
    conv_plan *p = NULL;
    pmoe_status status = make_plan(c, st, s, &p, err);
    if (status || p->ready) {
        *out = p;
        return status;
    }
    size_t workspace = 0;
    for (int i = 0; i < DIRECTIONS && !status; i++) {
        status = list_candidates(c, st, p, i, err);
        if (!status) status = query_workspace(c, st, p, i, err);
        if (!status && p->direction[i].workspace > workspace) workspace = p->direction[i].workspace;
    }
    if (!status) status = ensure_workspace(c, st, workspace, err);
    if (status) return status; /* the plan stays listed, not ready: the next call retries */
    p->ready = 1;
    log_choice(c, p, st->workspace_bytes);
    *out = p;
    return PMOE_OK;
}

static pmoe_status prepare(pmoe_backend *be, const pmoe_conv_shape *s, cuda_conv_state **st_out,
                           conv_plan **plan_out, pmoe_error *err) {
    cuda_conv_state *st = NULL;
    pmoe_status status = state_of(be, &st, err);
    if (status) return status;
    cuda_context *c = cuda_context_of(be);
    if (c->error.code) {
        if (err) *err = c->error;
        return c->error.code;
    }
    conv_plan *p = NULL;
    status = new_plan(c, st, s, &p, err);
    if (status) return status;
    *st_out = st;
    *plan_out = p;
    return PMOE_OK;
}

/* The three directions' cuDNN calls, one signature: `in` and `other` are
 * x and w (forward), w and dy (backward data), x and dy (backward filter). */
static cudnnStatus_t call_cudnn(cuda_conv_state *st, conv_plan *p, int direction, int algo,
                                size_t workspace_bytes, const float *in, const float *other,
                                float beta, float *out) {
    const float one = 1.0f;
    switch (direction) {
    case DIRECTION_FORWARD:
        return cudnnConvolutionForward(st->handle, &one, p->x, in, p->w, other, p->conv,
                                       (cudnnConvolutionFwdAlgo_t)algo, st->workspace,
                                       workspace_bytes, &beta, p->y, out);
    case DIRECTION_BACKWARD_DATA:
        return cudnnConvolutionBackwardData(st->handle, &one, p->w, in, p->y, other, p->conv,
                                            (cudnnConvolutionBwdDataAlgo_t)algo, st->workspace,
                                            workspace_bytes, &beta, p->x, out);
    default:
        return cudnnConvolutionBackwardFilter(st->handle, &one, p->x, in, p->y, other, p->conv,
                                              (cudnnConvolutionBwdFilterAlgo_t)algo, st->workspace,
                                              workspace_bytes, &beta, p->w, out);
    }
}

/* bf16: `in` and `other` replaced by copies rounded to bfloat16 (the CPU
 * twin rounds the same two: cpu_precision.c); the tensor-op math that
 * follows holds them exactly and sums in float32. 0 with the failure
 * recorded when there is no room. */
static int round_inputs(cuda_context *c, const conv_plan *p, int direction, const float **in,
                        const float **other) {
    const pmoe_conv_shape *s = &p->shape;
    const int64_t n_in = direction == DIRECTION_BACKWARD_DATA ? pmoe_conv_w_count(s)
                                                              : pmoe_conv_x_count(s);
    const int64_t n_other = direction == DIRECTION_FORWARD ? pmoe_conv_w_count(s)
                                                           : pmoe_conv_y_count(s);
    float *room = cuda_scratch(c, n_in + n_other);
    if (!room) return 0;
    PMOE_KERNEL_CHECK(c, pmoe_k_round_floats(n_in, *in, room, PMOE_PRECISION_BF16, c->stream));
    PMOE_KERNEL_CHECK(
        c, pmoe_k_round_floats(n_other, *other, room + n_in, PMOE_PRECISION_BF16, c->stream));
    *in = room;
    *other = room + n_in;
    return !c->error.code;
}

/* Enqueues one direction with the plan's current candidate; when cuDNN
 * refuses it (NOT_SUPPORTED for this problem, a bad parameter, ...), the
 * candidate is dropped for good, the next one's workspace is queried (and
 * the workspace grown, the one allocation after setup, only on such a
 * fallback) and the next one is tried (the change logged once it runs), so a failing
 * algorithm costs one call, not the run. Only when every candidate has
 * failed is the last failure recorded in the context, naming the call and
 * cuDNN's status. Work that fails after it was enqueued reports itself at
 * the next synchronize, as every op's does. */
static pmoe_status run_direction(pmoe_backend *be, const pmoe_conv_shape *s, int direction,
                                 const float *in, const float *other, float beta, float *out,
                                 pmoe_error *err) {
    cuda_conv_state *st = NULL;
    conv_plan *p = NULL;
    pmoe_status status = prepare(be, s, &st, &p, err);
    if (status) return status;
    cuda_context *c = cuda_context_of(be);
    conv_direction *d = &p->direction[direction];
    if (d->count == 0) {
        cuda_record(c, PMOE_ERR_UNSUPPORTED,
                    "cuDNN offers no %s%s algorithm for this convolution's %s (%d listed)",
                    p->deterministic ? "deterministic " : "",
                    p->precision == PMOE_PRECISION_FP32 ? "FMA" : "FMA or tensor-op",
                    DIRECTION_NAMES[direction], p->listed[direction]);
        if (err) *err = c->error;
        return c->error.code;
    }
    if (p->precision == PMOE_PRECISION_BF16 && d->next < d->count &&
        !round_inputs(c, p, direction, &in, &other)) {
        if (err) *err = c->error;
        return c->error.code;
    }
    cudnnStatus_t last = CUDNN_STATUS_SUCCESS;
    const int first = d->next;
    while (d->next < d->count) {
        status = ensure_workspace(c, st, d->workspace, err);
        if (status) return status;
        if (d->math[d->next] != p->math_set) { /* the math the chosen algorithm runs in */
            cudnnStatus_t m = cudnnSetConvolutionMathType(p->conv, d->math[d->next]);
            if (m != CUDNN_STATUS_SUCCESS) {
                cuda_record(c, PMOE_ERR_INTERNAL, "cudnnSetConvolutionMathType failed: %s",
                            cudnnGetErrorString(m));
                if (err) *err = c->error;
                return c->error.code;
            }
            p->math_set = d->math[d->next];
        }
        last = call_cudnn(st, p, direction, d->algo[d->next], d->workspace, in, other, beta, out);
        if (last == CUDNN_STATUS_SUCCESS) {
            if (d->next > first) log_fallback(c, p, direction, first, d->next);
            return PMOE_OK;
        }
        d->next++;
        status = query_workspace(c, st, p, direction, err);
        if (status) return status;
    }
    cuda_record(c, PMOE_ERR_INTERNAL,
                "cuDNN convolution %s failed with every one of its %d "
                "candidate algorithms, the last with %s",
                DIRECTION_NAMES[direction], d->count,
                last == CUDNN_STATUS_SUCCESS ? "none left" : cudnnGetErrorString(last));
    if (err) *err = c->error;
    return c->error.code;
}

pmoe_status pmoe_cuda_conv_algorithm(pmoe_backend *be, const pmoe_conv_shape *s, int direction,
                                     const char **name, pmoe_conv_algo_class *cls,
                                     pmoe_error *err) {
    if (direction < 0 || direction >= DIRECTIONS)
        return pmoe_fail(err, PMOE_ERR_INTERNAL, "convolution direction %d", direction);
    cuda_conv_state *st = NULL;
    conv_plan *p = NULL;
    pmoe_status status = prepare(be, s, &st, &p, err);
    if (status) return status;
    const conv_direction *d = &p->direction[direction];
    if (d->next >= d->count)
        return pmoe_fail(err, PMOE_ERR_UNSUPPORTED, "no %s algorithm left for this shape",
                         DIRECTION_NAMES[direction]);
    *name = algorithm_name(direction, d->algo[d->next], cls);
    return PMOE_OK;
}

pmoe_status pmoe_cuda_conv_forward(pmoe_backend *be, const pmoe_conv_shape *s, const float *x,
                                   const float *w, float *y, pmoe_error *err) {
    return run_direction(be, s, DIRECTION_FORWARD, x, w, 0.0f, y, err);
}

/* dx = dx_old beta + the data gradient: beta 0 overwrites (dx's old
 * contents are not read, as cuDNN documents for beta = 0), 1 accumulates. */
pmoe_status pmoe_cuda_conv_backward_data(pmoe_backend *be, const pmoe_conv_shape *s,
                                         const float *dy, const float *w, float *dx,
                                         pmoe_error *err) {
    return run_direction(be, s, DIRECTION_BACKWARD_DATA, w, dy, 0.0f, dx, err);
}

pmoe_status pmoe_cuda_conv_backward_data_accumulate(pmoe_backend *be, const pmoe_conv_shape *s,
                                                    const float *dy, const float *w, float *dx,
                                                    pmoe_error *err) {
    return run_direction(be, s, DIRECTION_BACKWARD_DATA, w, dy, 1.0f, dx, err);
}

pmoe_status pmoe_cuda_conv_backward_filter(pmoe_backend *be, const pmoe_conv_shape *s,
                                           const float *x, const float *dy, float *dw,
                                           pmoe_error *err) {
    return run_direction(be, s, DIRECTION_BACKWARD_FILTER, x, dy, 0.0f, dw, err);
}

pmoe_status pmoe_cuda_conv_set_deterministic(pmoe_backend *be, int deterministic, pmoe_error *err) {
    cuda_conv_state *st = NULL;
    pmoe_status status = state_of(be, &st, err);
    if (status) return status;
    st->deterministic = deterministic != 0;
    return PMOE_OK;
}
