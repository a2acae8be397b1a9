/* standin_cudnn.c: the cuDNN calls pmoe makes (the legacy convolution
 * API), on the CPU, against the real cudnn.h.
 *
 * Descriptors hold what their setters were given and are checked as the
 * cuDNN documentation states (positive sizes, non-negative padding,
 * positive stride and dilation, float NCHW only, else BAD_PARAM or
 * NOT_SUPPORTED). The three directions compute, for every algorithm, the
 * definition, with padding, stride, dilation, and the kernel flipped in
 * CUDNN_CONVOLUTION mode, as im2col and one OpenBLAS GEMM per image
 * (test_standin_libs holds each direction to a direct loop);
 * y = alpha conv + beta y, where beta = 0 never reads y. Any math type but
 * CUDNN_FMA_MATH lets cuDNN use TF32 tensor cores on float data, so there
 * the operands are rounded to TF32 (float_round.h) before the products, and
 * the heuristics report the descriptor's math type. Each call checks
 * its descriptors against one another and its pointers and workspace
 * against the device allocations, then enqueues the work on the handle's
 * stream.
 *
 * The _v7 heuristics return a candidate list in a fixed order, shaped to
 * make a caller choose: backward data and filter list a non-deterministic
 * algorithm first (as cuDNN's ALGO_0 is), the FFT algorithms report
 * NOT_SUPPORTED for strides above 1, and each algorithm asks for its own
 * workspace size (the same figure cudnnGet*WorkspaceSize gives). An
 * algorithm outside the list a direction supports is NOT_SUPPORTED. */
#include <cblas.h>
#include <cudnn.h>
#include <stdlib.h>
#include <string.h>

#include "float_round.h"
#include "standin.h"

#define MAGIC_HANDLE 0x444e4e48u
#define MAGIC_TENSOR 0x444e4e54u
#define MAGIC_FILTER 0x444e4e46u
#define MAGIC_CONV 0x444e4e43u

struct cudnnContext {
    uint32_t magic;
    cudaStream_t stream;
};
struct cudnnTensorStruct {
    uint32_t magic;
    int set, n, c, h, w;
};
struct cudnnFilterStruct {
    uint32_t magic;
    int set, k, c, r, s;
};
struct cudnnConvolutionStruct {
    uint32_t magic;
    int set, pad_h, pad_w, stride_h, stride_w, dil_h, dil_w;
    cudnnConvolutionMode_t mode;
    cudnnMathType_t math;
};

typedef struct cudnnContext handle_t;
typedef struct cudnnTensorStruct tensor_t;
typedef struct cudnnFilterStruct filter_t;
typedef struct cudnnConvolutionStruct conv_t;

const char *cudnnGetErrorString(cudnnStatus_t status) {
    switch (status) {
    case CUDNN_STATUS_SUCCESS: return "CUDNN_STATUS_SUCCESS";
    case CUDNN_STATUS_NOT_INITIALIZED: return "CUDNN_STATUS_NOT_INITIALIZED";
    case CUDNN_STATUS_BAD_PARAM: return "CUDNN_STATUS_BAD_PARAM";
    case CUDNN_STATUS_BAD_PARAM_NULL_POINTER: return "CUDNN_STATUS_BAD_PARAM_NULL_POINTER";
    case CUDNN_STATUS_NOT_SUPPORTED: return "CUDNN_STATUS_NOT_SUPPORTED";
    case CUDNN_STATUS_INTERNAL_ERROR: return "CUDNN_STATUS_INTERNAL_ERROR";
    case CUDNN_STATUS_EXECUTION_FAILED: return "CUDNN_STATUS_EXECUTION_FAILED";
    default: return "CUDNN_STATUS_UNKNOWN";
    }
}

/* ---- handle and descriptors ---- */

cudnnStatus_t cudnnCreate(cudnnHandle_t *handle) {
    if (!handle) return CUDNN_STATUS_BAD_PARAM_NULL_POINTER;
    *handle = NULL;
    if (standin_fault("cudnnCreate")) return CUDNN_STATUS_NOT_INITIALIZED;
    handle_t *h = calloc(1, sizeof *h);
    if (!h) return CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED;
    h->magic = MAGIC_HANDLE;
    *handle = h;
    return CUDNN_STATUS_SUCCESS;
}

static handle_t *handle_of(cudnnHandle_t h) { return h && h->magic == MAGIC_HANDLE ? h : NULL; }

cudnnStatus_t cudnnDestroy(cudnnHandle_t handle) {
    handle_t *h = handle_of(handle);
    if (!h) return CUDNN_STATUS_BAD_PARAM;
    h->magic = 0;
    free(h);
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnSetStream(cudnnHandle_t handle, cudaStream_t stream) {
    handle_t *h = handle_of(handle);
    if (!h) return CUDNN_STATUS_BAD_PARAM;
    if (!standin_stream_of(stream)) return CUDNN_STATUS_BAD_PARAM;
    h->stream = stream;
    return CUDNN_STATUS_SUCCESS;
}

#define DESCRIPTOR_FUNCTIONS(type, Name, magic_value)                                              \
    cudnnStatus_t cudnnCreate##Name##Descriptor(type##Descriptor_t *d) {                           \
        if (!d) return CUDNN_STATUS_BAD_PARAM_NULL_POINTER;                                        \
        *d = calloc(1, sizeof **d);                                                                \
        if (!*d) return CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED;                        \
        (*d)->magic = magic_value;                                                                 \
        return CUDNN_STATUS_SUCCESS;                                                               \
    }                                                                                              \
    cudnnStatus_t cudnnDestroy##Name##Descriptor(type##Descriptor_t d) {                           \
        if (!d) return CUDNN_STATUS_SUCCESS; /* documented: NULL is a no-op */                     \
        if (d->magic != magic_value) return CUDNN_STATUS_BAD_PARAM;                                \
        d->magic = 0;                                                                              \
        free(d);                                                                                   \
        return CUDNN_STATUS_SUCCESS;                                                               \
    }
DESCRIPTOR_FUNCTIONS(cudnnTensor, Tensor, MAGIC_TENSOR)
DESCRIPTOR_FUNCTIONS(cudnnFilter, Filter, MAGIC_FILTER)
DESCRIPTOR_FUNCTIONS(cudnnConvolution, Convolution, MAGIC_CONV)

static tensor_t *tensor_of(const tensor_t *t) {
    return t && t->magic == MAGIC_TENSOR && t->set ? (tensor_t *)t : NULL;
}
static filter_t *filter_of(const filter_t *f) {
    return f && f->magic == MAGIC_FILTER && f->set ? (filter_t *)f : NULL;
}
static conv_t *conv_of(const conv_t *c) {
    return c && c->magic == MAGIC_CONV && c->set ? (conv_t *)c : NULL;
}

cudnnStatus_t cudnnSetTensor4dDescriptor(cudnnTensorDescriptor_t d, cudnnTensorFormat_t format,
                                         cudnnDataType_t type, int n, int c, int h, int w) {
    if (!d || d->magic != MAGIC_TENSOR) return CUDNN_STATUS_BAD_PARAM;
    if (n <= 0 || c <= 0 || h <= 0 || w <= 0) return CUDNN_STATUS_BAD_PARAM;
    if (format != CUDNN_TENSOR_NCHW || type != CUDNN_DATA_FLOAT) return CUDNN_STATUS_NOT_SUPPORTED;
    *d = (tensor_t){MAGIC_TENSOR, 1, n, c, h, w};
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnSetFilter4dDescriptor(cudnnFilterDescriptor_t d, cudnnDataType_t type,
                                         cudnnTensorFormat_t format, int k, int c, int h, int w) {
    if (!d || d->magic != MAGIC_FILTER) return CUDNN_STATUS_BAD_PARAM;
    if (k <= 0 || c <= 0 || h <= 0 || w <= 0) return CUDNN_STATUS_BAD_PARAM;
    if (format != CUDNN_TENSOR_NCHW || type != CUDNN_DATA_FLOAT) return CUDNN_STATUS_NOT_SUPPORTED;
    *d = (filter_t){MAGIC_FILTER, 1, k, c, h, w};
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnSetConvolution2dDescriptor(cudnnConvolutionDescriptor_t d, int pad_h, int pad_w,
                                              int u, int v, int dilation_h, int dilation_w,
                                              cudnnConvolutionMode_t mode,
                                              cudnnDataType_t compute) {
    if (!d || d->magic != MAGIC_CONV) return CUDNN_STATUS_BAD_PARAM;
    if (pad_h < 0 || pad_w < 0 || u <= 0 || v <= 0 || dilation_h <= 0 || dilation_w <= 0 ||
        (mode != CUDNN_CONVOLUTION && mode != CUDNN_CROSS_CORRELATION))
        return CUDNN_STATUS_BAD_PARAM;
    if (compute != CUDNN_DATA_FLOAT) return CUDNN_STATUS_NOT_SUPPORTED;
    const cudnnMathType_t math = d->math;
    *d = (conv_t){MAGIC_CONV, 1, pad_h, pad_w, u, v, dilation_h, dilation_w, mode, math};
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnSetConvolutionMathType(cudnnConvolutionDescriptor_t d, cudnnMathType_t math) {
    if (!d || d->magic != MAGIC_CONV) return CUDNN_STATUS_BAD_PARAM;
    if (math != CUDNN_DEFAULT_MATH && math != CUDNN_TENSOR_OP_MATH &&
        math != CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION && math != CUDNN_FMA_MATH)
        return CUDNN_STATUS_BAD_PARAM;
    d->math = math;
    return CUDNN_STATUS_SUCCESS;
}

static int out_size(int in, int pad, int filter, int dil, int stride) {
    return 1 + (in + 2 * pad - ((filter - 1) * dil + 1)) / stride;
}

cudnnStatus_t cudnnGetConvolution2dForwardOutputDim(const cudnnConvolutionDescriptor_t cd,
                                                    const cudnnTensorDescriptor_t xd,
                                                    const cudnnFilterDescriptor_t wd, int *n,
                                                    int *c, int *h, int *w) {
    const conv_t *cv = conv_of(cd);
    const tensor_t *x = tensor_of(xd);
    const filter_t *f = filter_of(wd);
    if (!cv || !x || !f || !n || !c || !h || !w) return CUDNN_STATUS_BAD_PARAM;
    if (x->c != f->c) return CUDNN_STATUS_BAD_PARAM;
    const int oh = out_size(x->h, cv->pad_h, f->r, cv->dil_h, cv->stride_h);
    const int ow = out_size(x->w, cv->pad_w, f->s, cv->dil_w, cv->stride_w);
    if (oh <= 0 || ow <= 0) return CUDNN_STATUS_BAD_PARAM;
    *n = x->n, *c = f->k, *h = oh, *w = ow;
    return CUDNN_STATUS_SUCCESS;
}

/* ---- a convolution problem: descriptors checked against one another ---- */
typedef struct problem {
    int n, c, h, w, k, r, s, p, q;
    int pad_h, pad_w, stride_h, stride_w, dil_h, dil_w, flip;
    cudnnMathType_t math;
} problem;

static cudnnStatus_t make_problem(const tensor_t *xd, const filter_t *wd, const conv_t *cd,
                                  const tensor_t *yd, problem *pr) {
    const tensor_t *x = tensor_of(xd), *y = tensor_of(yd);
    const filter_t *f = filter_of(wd);
    const conv_t *cv = conv_of(cd);
    if (!x || !y || !f || !cv) return CUDNN_STATUS_BAD_PARAM;
    int n, k, p, q;
    cudnnStatus_t st = cudnnGetConvolution2dForwardOutputDim((conv_t *)cd, (tensor_t *)xd,
                                                             (filter_t *)wd, &n, &k, &p, &q);
    if (st) return st;
    if (y->n != n || y->c != k || y->h != p || y->w != q) return CUDNN_STATUS_BAD_PARAM;
    *pr = (problem){x->n,
                    x->c,
                    x->h,
                    x->w,
                    f->k,
                    f->r,
                    f->s,
                    p,
                    q,
                    cv->pad_h,
                    cv->pad_w,
                    cv->stride_h,
                    cv->stride_w,
                    cv->dil_h,
                    cv->dil_w,
                    cv->mode == CUDNN_CONVOLUTION,
                    cv->math};
    return CUDNN_STATUS_SUCCESS;
}

static size_t x_count(const problem *p) { return (size_t)p->n * p->c * p->h * p->w; }
static size_t w_count(const problem *p) { return (size_t)p->k * p->c * p->r * p->s; }
static size_t y_count(const problem *p) { return (size_t)p->n * p->k * p->p * p->q; }

/* ---- algorithms: what each supports and the workspace it asks ---- */
enum { DIR_FWD, DIR_BWD_DATA, DIR_BWD_FILTER };

typedef struct algo_info {
    int algo;
    int deterministic;
    int fft; /* stride 1 only */
} algo_info;

static const algo_info FWD[] = {{CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM, 1, 0},
                                {CUDNN_CONVOLUTION_FWD_ALGO_FFT, 1, 1},
                                {CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, 1, 0},
                                {CUDNN_CONVOLUTION_FWD_ALGO_GEMM, 1, 0}};
static const algo_info BWD_DATA[] = {{CUDNN_CONVOLUTION_BWD_DATA_ALGO_0, 0, 0},
                                     {CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT, 1, 1},
                                     {CUDNN_CONVOLUTION_BWD_DATA_ALGO_1, 1, 0}};
static const algo_info BWD_FILTER[] = {{CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0, 0, 0},
                                       {CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT, 1, 1},
                                       {CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1, 1, 0},
                                       {CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3, 0, 0}};

static const algo_info *algos_of(int dir, int *count) {
    switch (dir) {
    case DIR_FWD: *count = (int)(sizeof FWD / sizeof *FWD); return FWD;
    case DIR_BWD_DATA: *count = (int)(sizeof BWD_DATA / sizeof *BWD_DATA); return BWD_DATA;
    default: *count = (int)(sizeof BWD_FILTER / sizeof *BWD_FILTER); return BWD_FILTER;
    }
}

static const algo_info *find_algo(int dir, int algo) {
    int count = 0;
    const algo_info *list = algos_of(dir, &count);
    for (int i = 0; i < count; i++)
        if (list[i].algo == algo) return &list[i];
    return NULL;
}

/* NOT_SUPPORTED for an algorithm the problem cannot use. */
static cudnnStatus_t algo_supports(const algo_info *a, const problem *p) {
    if (!a) return CUDNN_STATUS_NOT_SUPPORTED;
    if (a->fft && (p->stride_h != 1 || p->stride_w != 1 || p->dil_h != 1 || p->dil_w != 1))
        return CUDNN_STATUS_NOT_SUPPORTED;
    return CUDNN_STATUS_SUCCESS;
}

/* A workspace that differs per algorithm, so a caller that sizes it for
 * the wrong one is caught (zero for the plain ones). */
static size_t workspace_for(int dir, int algo, const problem *p) {
    const size_t column = (size_t)p->c * p->r * p->s * p->p * p->q * sizeof(float);
    if (dir == DIR_FWD && algo == CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM)
        return (size_t)p->c * p->r * p->s * sizeof(int);
    if (dir == DIR_FWD && algo == CUDNN_CONVOLUTION_FWD_ALGO_GEMM) return column;
    if (algo_supports(find_algo(dir, algo), p) == CUDNN_STATUS_SUCCESS && find_algo(dir, algo)->fft)
        return 2 * column + 4096;
    if (dir == DIR_BWD_FILTER && algo == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3) return column;
    return 0;
}

typedef struct perf_any { /* the fields every *AlgoPerf_t shares, in order */
    int algo;
    cudnnStatus_t status;
    float time;
    size_t memory;
    cudnnDeterminism_t determinism;
    cudnnMathType_t mathType;
    int reserved[3];
} perf_any;
_Static_assert(sizeof(perf_any) == sizeof(cudnnConvolutionFwdAlgoPerf_t) &&
                   sizeof(perf_any) == sizeof(cudnnConvolutionBwdDataAlgoPerf_t) &&
                   sizeof(perf_any) == sizeof(cudnnConvolutionBwdFilterAlgoPerf_t),
               "the perf structs share one layout");

static cudnnStatus_t heuristics(int dir, const char *name, cudnnHandle_t handle, const tensor_t *x,
                                const filter_t *w, const conv_t *cd, const tensor_t *y,
                                int requested, int *returned, perf_any *out) {
    if (!handle_of(handle)) return CUDNN_STATUS_BAD_PARAM;
    if (!returned || !out || requested < 1) return CUDNN_STATUS_BAD_PARAM;
    problem p;
    cudnnStatus_t st = make_problem(x, w, cd, y, &p);
    if (st) return st;
    if (standin_fault(name)) return CUDNN_STATUS_NOT_SUPPORTED;
    int count = 0;
    const algo_info *list = algos_of(dir, &count);
    *returned = 0;
    for (int i = 0; i < count && *returned < requested; i++) {
        perf_any *r = &out[(*returned)++];
        memset(r, 0, sizeof *r);
        r->algo = list[i].algo;
        r->status = algo_supports(&list[i], &p);
        r->time = -1.0f; /* heuristics time nothing */
        r->memory = r->status ? 0 : workspace_for(dir, list[i].algo, &p);
        r->determinism = list[i].deterministic ? CUDNN_DETERMINISTIC : CUDNN_NON_DETERMINISTIC;
        r->mathType = p.math;
    }
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnGetConvolutionForwardAlgorithm_v7(
    cudnnHandle_t handle, const cudnnTensorDescriptor_t x, const cudnnFilterDescriptor_t w,
    const cudnnConvolutionDescriptor_t conv, const cudnnTensorDescriptor_t y, const int requested,
    int *returned, cudnnConvolutionFwdAlgoPerf_t *perf) {
    return heuristics(DIR_FWD, "cudnnGetConvolutionForwardAlgorithm_v7", handle, x, w, conv, y,
                      requested, returned, (perf_any *)perf);
}

cudnnStatus_t cudnnGetConvolutionBackwardDataAlgorithm_v7(
    cudnnHandle_t handle, const cudnnFilterDescriptor_t w, const cudnnTensorDescriptor_t dy,
    const cudnnConvolutionDescriptor_t conv, const cudnnTensorDescriptor_t dx, const int requested,
    int *returned, cudnnConvolutionBwdDataAlgoPerf_t *perf) {
    return heuristics(DIR_BWD_DATA, "cudnnGetConvolutionBackwardDataAlgorithm_v7", handle, dx, w,
                      conv, dy, requested, returned, (perf_any *)perf);
}

cudnnStatus_t cudnnGetConvolutionBackwardFilterAlgorithm_v7(
    cudnnHandle_t handle, const cudnnTensorDescriptor_t x, const cudnnTensorDescriptor_t dy,
    const cudnnConvolutionDescriptor_t conv, const cudnnFilterDescriptor_t dw, const int requested,
    int *returned, cudnnConvolutionBwdFilterAlgoPerf_t *perf) {
    return heuristics(DIR_BWD_FILTER, "cudnnGetConvolutionBackwardFilterAlgorithm_v7", handle, x,
                      dw, conv, dy, requested, returned, (perf_any *)perf);
}

static cudnnStatus_t workspace_query(int dir, cudnnHandle_t handle, const tensor_t *x,
                                     const filter_t *w, const conv_t *cd, const tensor_t *y,
                                     int algo, size_t *bytes) {
    if (!handle_of(handle) || !bytes) return CUDNN_STATUS_BAD_PARAM;
    problem p;
    cudnnStatus_t st = make_problem(x, w, cd, y, &p);
    if (st) return st;
    st = algo_supports(find_algo(dir, algo), &p);
    if (st) return st;
    *bytes = workspace_for(dir, algo, &p);
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnGetConvolutionForwardWorkspaceSize(
    cudnnHandle_t handle, const cudnnTensorDescriptor_t x, const cudnnFilterDescriptor_t w,
    const cudnnConvolutionDescriptor_t conv, const cudnnTensorDescriptor_t y,
    cudnnConvolutionFwdAlgo_t algo, size_t *bytes) {
    return workspace_query(DIR_FWD, handle, x, w, conv, y, algo, bytes);
}

cudnnStatus_t cudnnGetConvolutionBackwardDataWorkspaceSize(
    cudnnHandle_t handle, const cudnnFilterDescriptor_t w, const cudnnTensorDescriptor_t dy,
    const cudnnConvolutionDescriptor_t conv, const cudnnTensorDescriptor_t dx,
    cudnnConvolutionBwdDataAlgo_t algo, size_t *bytes) {
    return workspace_query(DIR_BWD_DATA, handle, dx, w, conv, dy, algo, bytes);
}

cudnnStatus_t cudnnGetConvolutionBackwardFilterWorkspaceSize(
    cudnnHandle_t handle, const cudnnTensorDescriptor_t x, const cudnnTensorDescriptor_t dy,
    const cudnnConvolutionDescriptor_t conv, const cudnnFilterDescriptor_t dw,
    cudnnConvolutionBwdFilterAlgo_t algo, size_t *bytes) {
    return workspace_query(DIR_BWD_FILTER, handle, x, dw, conv, dy, algo, bytes);
}

/* ---- the three directions ---- */
typedef struct conv_work {
    int dir;
    problem p;
    float alpha, beta;
    const float *a, *b; /* fwd: x, w; bwd data: w, dy; bwd filter: x, dy */
    float *out;
} conv_work;

/* Each direction is one GEMM per image over the im2col matrix: row
 * (c, r, s) of the filter's own layout (so the kernel's flip in
 * CUDNN_CONVOLUTION mode is taken here), column (oy, ox), holding the input
 * pixel that filter element meets at that output, or 0 in the padding.
 * OpenBLAS does the products (the stand-in is a test double: the
 * definition it must equal is test_standin_libs's direct loops). */
static int input_row(const problem *p, int r, int oy) {
    if (p->flip) r = p->r - 1 - r;
    return oy * p->stride_h - p->pad_h + r * p->dil_h;
}
static int input_col(const problem *p, int s, int ox) {
    if (p->flip) s = p->s - 1 - s;
    return ox * p->stride_w - p->pad_w + s * p->dil_w;
}

static void im2col(const problem *p, const float *x, float *col) {
    for (int c = 0; c < p->c; c++)
        for (int r = 0; r < p->r; r++)
            for (int s = 0; s < p->s; s++) {
                float *row = col + ((size_t)(c * p->r + r) * p->s + s) * p->p * p->q;
                for (int oy = 0; oy < p->p; oy++) {
                    const int iy = input_row(p, r, oy);
                    for (int ox = 0; ox < p->q; ox++) {
                        const int ix = input_col(p, s, ox);
                        row[oy * p->q + ox] = iy < 0 || iy >= p->h || ix < 0 || ix >= p->w
                                                  ? 0.0f
                                                  : x[((size_t)c * p->h + iy) * p->w + ix];
                    }
                }
            }
}

/* The adjoint of im2col: every column entry added back to its pixel. */
static void col2im(const problem *p, const float *col, float *x) {
    for (int c = 0; c < p->c; c++)
        for (int r = 0; r < p->r; r++)
            for (int s = 0; s < p->s; s++) {
                const float *row = col + ((size_t)(c * p->r + r) * p->s + s) * p->p * p->q;
                for (int oy = 0; oy < p->p; oy++) {
                    const int iy = input_row(p, r, oy);
                    if (iy < 0 || iy >= p->h) continue;
                    for (int ox = 0; ox < p->q; ox++) {
                        const int ix = input_col(p, s, ox);
                        if (ix >= 0 && ix < p->w)
                            x[((size_t)c * p->h + iy) * p->w + ix] += row[oy * p->q + ox];
                    }
                }
            }
}

/* out = alpha sum + beta out over count floats; beta = 0 never reads out. */
static void blend(float *out, const float *sum, size_t count, float alpha, float beta) {
    for (size_t i = 0; i < count; i++)
        out[i] = beta == 0.0f ? alpha * sum[i] : alpha * sum[i] + beta * out[i];
}

/* Rounds count floats to TF32 in place (what tensor-op math reads). */
static void round_tf32(float *x, size_t count) {
    for (size_t i = 0; i < count; i++) x[i] = pmoe_round_tf32(x[i]);
}

/* A TF32-rounded copy of count floats, or NULL when out of memory. */
static float *tf32_copy(const float *x, size_t count) {
    float *copy = malloc(count * sizeof(float));
    if (copy) memcpy(copy, x, count * sizeof(float)), round_tf32(copy, count);
    return copy;
}

/* Returns 0, or cudaErrorMemoryAllocation when the host scratch is refused. */
static int run_gemm_conv(const conv_work *cw) {
    const problem *p = &cw->p;
    const int crs = p->c * p->r * p->s, pq = p->p * p->q;
    const size_t image = (size_t)p->c * p->h * p->w, output = (size_t)p->k * pq;
    const size_t sum_count = cw->dir == DIR_FWD        ? output
                             : cw->dir == DIR_BWD_DATA ? image
                                                       : (size_t)p->k * crs;
    const int tf32 = p->math != CUDNN_FMA_MATH;
    /* The filter (a in backward data, b in forward) and dy (b in both
     * backwards), as the math type reads them. */
    const float *filter = cw->dir == DIR_BWD_DATA ? cw->a : cw->b;
    const float *dy = cw->dir == DIR_FWD ? NULL : cw->b;
    float *rounded_filter = NULL, *rounded_dy = NULL;
    if (tf32 && cw->dir != DIR_BWD_FILTER)
        filter = rounded_filter = tf32_copy(filter, (size_t)p->k * crs);
    if (tf32 && dy) dy = rounded_dy = tf32_copy(dy, (size_t)p->n * output);
    float *col = malloc((size_t)crs * pq * sizeof(float));
    float *sum = calloc(sum_count, sizeof(float));
    if (!col || !sum || (tf32 && cw->dir != DIR_BWD_FILTER && !rounded_filter) ||
        (tf32 && dy && !rounded_dy)) {
        free(col), free(sum), free(rounded_filter), free(rounded_dy);
        return 2; /* cudaErrorMemoryAllocation */
    }
    for (int n = 0; n < p->n; n++) {
        if (cw->dir == DIR_FWD) { /* y_n = W col(x_n) */
            im2col(p, cw->a + n * image, col);
            if (tf32) round_tf32(col, (size_t)crs * pq);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, p->k, pq, crs, 1.0f, filter, crs,
                        col, pq, 0.0f, sum, pq);
            blend(cw->out + n * output, sum, output, cw->alpha, cw->beta);
        } else if (cw->dir == DIR_BWD_DATA) { /* dx_n = col2im(W^T dy_n) */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, crs, pq, p->k, 1.0f, filter, crs,
                        dy + n * output, pq, 0.0f, col, pq);
            memset(sum, 0, image * sizeof(float));
            col2im(p, col, sum);
            blend(cw->out + n * image, sum, image, cw->alpha, cw->beta);
        } else { /* dW = sum over n of dy_n col(x_n)^T */
            im2col(p, cw->a + n * image, col);
            if (tf32) round_tf32(col, (size_t)crs * pq);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, p->k, crs, pq, 1.0f,
                        dy + n * output, pq, col, pq, 1.0f, sum, crs);
        }
    }
    if (cw->dir == DIR_BWD_FILTER) blend(cw->out, sum, sum_count, cw->alpha, cw->beta);
    free(col), free(sum), free(rounded_filter), free(rounded_dy);
    return 0;
}

static int run_conv(void *arg) { return run_gemm_conv(arg); }

static int device_floats(const void *p, size_t count, const char *call, const char *what) {
    if (standin_device_range(p, count * sizeof(float))) return 1;
    standin_warn("%s: %s (%p, %zu floats) is not inside one device allocation", call, what, p,
                 count);
    return 0;
}

static cudnnStatus_t enqueue(int dir, const char *call, cudnnHandle_t handle, const void *alpha,
                             const void *beta, const problem *p, int algo, void *workspace,
                             size_t workspace_bytes, const void *a, size_t a_count,
                             const char *a_name, const void *b, size_t b_count, const char *b_name,
                             void *out, size_t out_count, const char *out_name) {
    handle_t *h = handle_of(handle);
    if (!h) return CUDNN_STATUS_BAD_PARAM;
    if (!alpha || !beta || !a || !b || !out) return CUDNN_STATUS_BAD_PARAM_NULL_POINTER;
    cudnnStatus_t st = algo_supports(find_algo(dir, algo), p);
    if (st) return st;
    if (workspace_bytes < workspace_for(dir, algo, p)) return CUDNN_STATUS_BAD_PARAM;
    if (workspace_bytes && !standin_device_range(workspace, workspace_bytes)) {
        standin_warn("%s: the workspace (%p, %zu bytes) is not device memory", call, workspace,
                     workspace_bytes);
        return CUDNN_STATUS_BAD_PARAM;
    }
    if (((uintptr_t)a | (uintptr_t)b | (uintptr_t)out) % sizeof(float))
        return CUDNN_STATUS_BAD_PARAM_MISALIGNED_POINTER;
    if (standin_fault(call)) return CUDNN_STATUS_NOT_SUPPORTED;
    standin_stream *s = standin_stream_of(h->stream);
    if (!s || standin_sticky()) return CUDNN_STATUS_EXECUTION_FAILED;
    if (!device_floats(a, a_count, call, a_name) || !device_floats(b, b_count, call, b_name) ||
        !device_floats(out, out_count, call, out_name)) {
        standin_enqueue_fault(s, 700 /* cudaErrorIllegalAddress: the GPU faults */);
        return CUDNN_STATUS_SUCCESS;
    }
    conv_work *cw = malloc(sizeof *cw);
    if (!cw) return CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED;
    *cw = (conv_work){dir, *p, *(const float *)alpha, *(const float *)beta, a, b, out};
    standin_enqueue(s, run_conv, cw, free);
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnConvolutionForward(cudnnHandle_t handle, const void *alpha,
                                      const cudnnTensorDescriptor_t xd, const void *x,
                                      const cudnnFilterDescriptor_t wd, const void *w,
                                      const cudnnConvolutionDescriptor_t cd,
                                      cudnnConvolutionFwdAlgo_t algo, void *workspace,
                                      size_t workspace_bytes, const void *beta,
                                      const cudnnTensorDescriptor_t yd, void *y) {
    problem p;
    cudnnStatus_t st = make_problem(xd, wd, cd, yd, &p);
    if (st) return st;
    return enqueue(DIR_FWD, "cudnnConvolutionForward", handle, alpha, beta, &p, algo, workspace,
                   workspace_bytes, x, x_count(&p), "x", w, w_count(&p), "w", y, y_count(&p), "y");
}

cudnnStatus_t cudnnConvolutionBackwardData(cudnnHandle_t handle, const void *alpha,
                                           const cudnnFilterDescriptor_t wd, const void *w,
                                           const cudnnTensorDescriptor_t dyd, const void *dy,
                                           const cudnnConvolutionDescriptor_t cd,
                                           cudnnConvolutionBwdDataAlgo_t algo, void *workspace,
                                           size_t workspace_bytes, const void *beta,
                                           const cudnnTensorDescriptor_t dxd, void *dx) {
    problem p;
    cudnnStatus_t st = make_problem(dxd, wd, cd, dyd, &p);
    if (st) return st;
    return enqueue(DIR_BWD_DATA, "cudnnConvolutionBackwardData", handle, alpha, beta, &p, algo,
                   workspace, workspace_bytes, w, w_count(&p), "w", dy, y_count(&p), "dy", dx,
                   x_count(&p), "dx");
}

cudnnStatus_t cudnnConvolutionBackwardFilter(cudnnHandle_t handle, const void *alpha,
                                             const cudnnTensorDescriptor_t xd, const void *x,
                                             const cudnnTensorDescriptor_t dyd, const void *dy,
                                             const cudnnConvolutionDescriptor_t cd,
                                             cudnnConvolutionBwdFilterAlgo_t algo, void *workspace,
                                             size_t workspace_bytes, const void *beta,
                                             const cudnnFilterDescriptor_t dwd, void *dw) {
    problem p;
    cudnnStatus_t st = make_problem(xd, dwd, cd, dyd, &p);
    if (st) return st;
    return enqueue(DIR_BWD_FILTER, "cudnnConvolutionBackwardFilter", handle, alpha, beta, &p, algo,
                   workspace, workspace_bytes, x, x_count(&p), "x", dy, y_count(&p), "dy", dw,
                   w_count(&p), "dw");
}
