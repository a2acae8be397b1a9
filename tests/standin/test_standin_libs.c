/* test_standin_libs.c: the stand-in itself, against what the CUDA, cuBLAS,
 * cuDNN and NCCL documentation promises, through the real headers.
 *
 * - runtime: fresh device memory is NaN; copies of the wrong kind or size
 *   are refused with the documented codes; an asynchronous copy to the host
 *   has not happened before its stream is synchronised; streams ordered
 *   through events; timing events; the sticky error after a kernel fault;
 *   cudaGetLastError's reset; out of memory; fault injection;
 * - cuBLAS: the strided-batched GEMM in all four transpose pairs with
 *   padded leading dimensions, strides and beta (0 never reads C), against
 *   a naive triple loop written here from the column-major definition; the
 *   documented argument errors; an operand past its allocation faults;
 * - cuDNN: forward, backward data and backward filter, each against a
 *   naive loop written here (padding, stride, dilation, both modes; beta 0
 *   into NaN and beta 0.5 into old values), and the adjoint identities
 *   <conv(x, w), dy> = <x, bwd_data(w, dy)> = <w, bwd_filter(x, dy)>; the
 *   heuristics' list and the workspace queries agree; bad descriptors, an
 *   unsupported algorithm and a short workspace give the documented codes;
 * - NCCL, one rank: collectives, grouped send/receive, misuse refused. */
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>
#include <math.h>
#include <nccl.h>
#include <stdlib.h>
#include <string.h>

#include "standin.h"
#include "test_util.h"

static float *dev_floats(size_t n) {
    void *p = NULL;
    CHECK(cudaMalloc(&p, n * sizeof(float)) == cudaSuccess);
    return p;
}

static float *dev_copy(const float *host, size_t n) {
    float *d = dev_floats(n);
    CHECK(cudaMemcpy(d, host, n * sizeof(float), cudaMemcpyHostToDevice) == cudaSuccess);
    return d;
}

static float *host_copy(const float *dev, size_t n) {
    float *h = fbuf((int64_t)n);
    CHECK(cudaMemcpy(h, dev, n * sizeof(float), cudaMemcpyDeviceToHost) == cudaSuccess);
    return h;
}

static void test_runtime(void) {
    printf("runtime\n");
    int count = 0;
    CHECK(cudaGetDeviceCount(&count) == cudaSuccess && count == 1);
    float *d = dev_floats(100);
    float *h = host_copy(d, 100);
    int nan = 1;
    for (int i = 0; i < 100; i++) nan &= isnan(h[i]);
    CHECK_MSG(nan, "fresh device memory is NaN");
    CHECK(standin_device_range(d, 400) && !standin_device_range(d, 401) &&
          !standin_device_range(h, 4));
    /* wrong kinds and sizes */
    CHECK(cudaMemcpy(h, d, 400, cudaMemcpyHostToDevice) == cudaErrorInvalidMemcpyDirection);
    CHECK(cudaMemcpy(d, h, 400, cudaMemcpyDeviceToHost) == cudaErrorInvalidMemcpyDirection);
    CHECK(cudaMemcpy(d, h, 404, cudaMemcpyHostToDevice) == cudaErrorInvalidValue);
    CHECK(cudaGetLastError() == cudaErrorInvalidValue);
    CHECK(cudaGetLastError() == cudaSuccess); /* reading resets it */
    int on_stack = 0;
    CHECK(cudaFree(&on_stack) == cudaErrorInvalidValue);
    cudaGetLastError();
    /* an asynchronous copy to the host lands at the synchronisation */
    cudaStream_t a, b;
    CHECK(cudaStreamCreateWithFlags(&a, cudaStreamNonBlocking) == cudaSuccess);
    CHECK(cudaStreamCreateWithFlags(&b, cudaStreamNonBlocking) == cudaSuccess);
    float ones[100];
    for (int i = 0; i < 100; i++) ones[i] = 1.0f;
    CHECK(cudaMemcpyAsync(d, ones, 400, cudaMemcpyHostToDevice, a) == cudaSuccess);
    ones[0] = 5.0f; /* the pageable source was staged: the copy keeps 1 */
    float back[100];
    memset(back, 0, sizeof back);
    CHECK(cudaMemcpyAsync(back, d, 400, cudaMemcpyDeviceToHost, a) == cudaSuccess);
    CHECK_MSG(back[0] == 0.0f, "the copy to the host happened before the stream got there");
    CHECK(cudaStreamSynchronize(a) == cudaSuccess);
    CHECK(back[0] == 1.0f && back[99] == 1.0f);
    /* stream b reads what a writes, ordered by an event */
    float *d2 = dev_floats(100);
    cudaEvent_t ready, t0, t1;
    CHECK(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming) == cudaSuccess);
    CHECK(cudaEventCreate(&t0) == cudaSuccess && cudaEventCreate(&t1) == cudaSuccess);
    CHECK(cudaEventRecord(t0, a) == cudaSuccess);
    CHECK(cudaMemsetAsync(d, 0, 400, a) == cudaSuccess);
    CHECK(cudaEventRecord(ready, a) == cudaSuccess);
    CHECK(cudaEventRecord(t1, a) == cudaSuccess);
    CHECK(cudaStreamWaitEvent(b, ready, 0) == cudaSuccess);
    CHECK(cudaMemcpyAsync(d2, d, 400, cudaMemcpyDeviceToDevice, b) == cudaSuccess);
    CHECK(cudaMemcpyAsync(back, d2, 400, cudaMemcpyDeviceToHost, b) == cudaSuccess);
    CHECK(cudaStreamSynchronize(b) == cudaSuccess);
    CHECK_MSG(back[0] == 0.0f && back[50] == 0.0f, "b ran before the event it waits for");
    float ms = -1.0f;
    CHECK(cudaEventSynchronize(t1) == cudaSuccess);
    CHECK(cudaEventElapsedTime(&ms, t0, t1) == cudaSuccess && ms >= 0.0f);
    CHECK(cudaEventElapsedTime(&ms, t0, ready) == cudaErrorInvalidResourceHandle);
    cudaGetLastError();
    /* out of memory, and an injected one */
    void *p = NULL;
    CHECK(cudaMalloc(&p, (size_t)1 << 50) == cudaErrorMemoryAllocation && p == NULL);
    standin_fault_set("cudaMalloc", 1, 0);
    CHECK(cudaMalloc(&p, 16) == cudaErrorMemoryAllocation);
    CHECK(cudaMalloc(&p, 16) == cudaSuccess);
    CHECK(cudaFree(p) == cudaSuccess);
    cudaGetLastError();
    CHECK(cudaEventDestroy(ready) == cudaSuccess && cudaEventDestroy(t0) == cudaSuccess &&
          cudaEventDestroy(t1) == cudaSuccess);
    CHECK(cudaStreamDestroy(a) == cudaSuccess && cudaStreamDestroy(b) == cudaSuccess);
    CHECK(cudaStreamSynchronize(a) == cudaErrorInvalidResourceHandle);
    cudaGetLastError();
    CHECK(cudaFree(d) == cudaSuccess && cudaFree(d2) == cudaSuccess);
}

/* op(M)[r, c] of a column-major matrix with leading dimension ld. */
static float at(const float *m, int trans, int64_t ld, int64_t r, int64_t c) {
    return trans ? m[c + r * ld] : m[r + c * ld];
}

static void test_gemm_case(cublasHandle_t h, int ta, int tb) {
    const int64_t m = 7, n = 5, k = 6, batch = 3;
    const int64_t lda = (ta ? k : m) + 2, ldb = (tb ? n : k) + 1, ldc = m + 3;
    const int64_t sa = lda * (ta ? m : k) + 4, sb = ldb * (tb ? k : n), sc = ldc * n + 1;
    float *a = frand(sa * batch, 11 + ta, -1, 1), *b = frand(sb * batch, 21 + tb, -1, 1);
    float *c = frand(sc * batch, 31, -1, 1);
    float *da = dev_copy(a, sa * batch), *db = dev_copy(b, sb * batch),
          *dc = dev_copy(c, sc * batch);
    const float alpha = 0.75f, beta = -0.5f;
    CHECK(cublasSgemmStridedBatched_64(
              h, ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb ? CUBLAS_OP_T : CUBLAS_OP_N, m, n, k, &alpha,
              da, lda, sa, db, ldb, sb, &beta, dc, ldc, sc, batch) == CUBLAS_STATUS_SUCCESS);
    CHECK(cudaDeviceSynchronize() == cudaSuccess);
    float *got = host_copy(dc, sc * batch);
    double *want = dbuf(sc * batch);
    for (int64_t i = 0; i < sc * batch; i++) want[i] = c[i]; /* outside the m x n block: kept */
    for (int64_t q = 0; q < batch; q++)
        for (int64_t col = 0; col < n; col++)
            for (int64_t row = 0; row < m; row++) {
                double sum = 0;
                for (int64_t p = 0; p < k; p++)
                    sum += (double)at(a + q * sa, ta, lda, row, p) *
                           at(b + q * sb, tb, ldb, p, col);
                const int64_t i = q * sc + row + col * ldc;
                want[i] = alpha * sum + beta * (double)c[i];
            }
    char what[64];
    snprintf(what, sizeof what, "  op(A) %s, op(B) %s", ta ? "T" : "N", tb ? "T" : "N");
    CHECK(check_close(what, got, want, sc * batch, 1e-6, 1e-5));
    cudaFree(da), cudaFree(db), cudaFree(dc);
}

static void test_cublas(void) {
    printf("cuBLAS strided-batched GEMM against the column-major definition\n");
    cublasHandle_t h = NULL;
    CHECK(cublasCreate(&h) == CUBLAS_STATUS_SUCCESS);
    cudaStream_t s;
    cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
    CHECK(cublasSetStream(h, s) == CUBLAS_STATUS_SUCCESS);
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) test_gemm_case(h, ta, tb);
    /* beta = 0 never reads C: NaN in C does not survive */
    float *a = dev_copy(frand(4, 1, -1, 1), 4), *c = dev_floats(4);
    const float one = 1.0f, zero = 0.0f;
    CHECK(cublasSgemmStridedBatched_64(h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &one, a, 2, 0, a, 2, 0,
                                       &zero, c, 2, 0, 1) == CUBLAS_STATUS_SUCCESS);
    cudaStreamSynchronize(s);
    float *got = host_copy(c, 4);
    CHECK_MSG(!isnan(got[0]) && !isnan(got[3]), "beta = 0 read the NaN of C");
    /* the documented argument errors */
    CHECK(cublasSgemmStridedBatched_64(NULL, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &one, a, 2, 0, a, 2,
                                       0, &zero, c, 2, 0, 1) == CUBLAS_STATUS_NOT_INITIALIZED);
    CHECK(cublasSgemmStridedBatched_64(h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &one, a, 1, 0, a, 2, 0,
                                       &zero, c, 2, 0, 1) == CUBLAS_STATUS_INVALID_VALUE);
    CHECK(cublasSgemmStridedBatched_64(h, CUBLAS_OP_T, CUBLAS_OP_N, 2, 3, 1, &one, a, 0, 0, a, 2, 0,
                                       &zero, c, 2, 0, 1) == CUBLAS_STATUS_INVALID_VALUE);
    CHECK(cublasSgemmStridedBatched_64(h, CUBLAS_OP_N, CUBLAS_OP_N, -1, 2, 2, &one, a, 2, 0, a, 2,
                                       0, &zero, c, 2, 0, 1) == CUBLAS_STATUS_INVALID_VALUE);
    CHECK(cublasSgemmStridedBatched_64(h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, NULL, a, 2, 0, a, 2, 0,
                                       &zero, c, 2, 0, 1) == CUBLAS_STATUS_INVALID_VALUE);
    CHECK(cublasSgemmStridedBatched_64(h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &one, a, 2, 0, a, 2, 0,
                                       &zero, c, 2, 0, -1) == CUBLAS_STATUS_INVALID_VALUE);
    CHECK(cublasSgemmStridedBatched_64(h, CUBLAS_OP_N, CUBLAS_OP_N, 0, 2, 2, &one, a, 2, 0, a, 2, 0,
                                       &zero, c, 2, 0, 1) == CUBLAS_STATUS_SUCCESS);
    standin_fault_set("cublasSgemmStridedBatched_64", 1, 0);
    CHECK(cublasSgemmStridedBatched_64(h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &one, a, 2, 0, a, 2, 0,
                                       &zero, c, 2, 0, 1) == CUBLAS_STATUS_EXECUTION_FAILED);
    CHECK(strcmp(cublasGetStatusName(CUBLAS_STATUS_INVALID_VALUE), "CUBLAS_STATUS_INVALID_VALUE") ==
          0);
    cudaFree(a), cudaFree(c);
    CHECK(cublasDestroy(h) == CUBLAS_STATUS_SUCCESS);
    cudaStreamDestroy(s);
}

typedef struct conv_case {
    int n, c, h, w, k, r, s, pad, stride, dil;
    cudnnConvolutionMode_t mode;
} conv_case;

static double dot(const float *a, const float *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

static void test_conv_case(cudnnHandle_t h, const conv_case *cc) {
    cudnnTensorDescriptor_t xd, yd;
    cudnnFilterDescriptor_t wd;
    cudnnConvolutionDescriptor_t cd;
    cudnnCreateTensorDescriptor(&xd), cudnnCreateTensorDescriptor(&yd);
    cudnnCreateFilterDescriptor(&wd), cudnnCreateConvolutionDescriptor(&cd);
    CHECK(cudnnSetTensor4dDescriptor(xd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, cc->n, cc->c, cc->h,
                                     cc->w) == CUDNN_STATUS_SUCCESS);
    CHECK(cudnnSetFilter4dDescriptor(wd, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, cc->k, cc->c, cc->r,
                                     cc->s) == CUDNN_STATUS_SUCCESS);
    CHECK(cudnnSetConvolution2dDescriptor(cd, cc->pad, cc->pad, cc->stride, cc->stride, cc->dil,
                                          cc->dil, cc->mode,
                                          CUDNN_DATA_FLOAT) == CUDNN_STATUS_SUCCESS);
    CHECK(cudnnSetConvolutionMathType(cd, CUDNN_FMA_MATH) == CUDNN_STATUS_SUCCESS);
    int n, k, p, q;
    CHECK(cudnnGetConvolution2dForwardOutputDim(cd, xd, wd, &n, &k, &p, &q) ==
          CUDNN_STATUS_SUCCESS);
    const int ep = (cc->h + 2 * cc->pad - (cc->r - 1) * cc->dil - 1) / cc->stride + 1;
    const int eq = (cc->w + 2 * cc->pad - (cc->s - 1) * cc->dil - 1) / cc->stride + 1;
    CHECK(n == cc->n && k == cc->k && p == ep && q == eq);
    CHECK(cudnnSetTensor4dDescriptor(yd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, n, k, p, q) ==
          CUDNN_STATUS_SUCCESS);
    const size_t nx = (size_t)cc->n * cc->c * cc->h * cc->w,
                 nw = (size_t)cc->k * cc->c * cc->r * cc->s, ny = (size_t)n * k * p * q;
    float *x = frand(nx, 1, -1, 1), *w = frand(nw, 2, -1, 1), *dy = frand(ny, 3, -1, 1);
    float *dx_ = dev_copy(x, nx), *dw_ = dev_copy(w, nw), *ddy = dev_copy(dy, ny);
    float *y_d = dev_floats(ny), *gx_d = dev_floats(nx), *gw_d = dev_floats(nw);
    /* the heuristics' list and the workspace each entry asks */
    cudnnConvolutionFwdAlgoPerf_t perf[8];
    int returned = 0;
    CHECK(cudnnGetConvolutionForwardAlgorithm_v7(h, xd, wd, cd, yd, 8, &returned, perf) ==
              CUDNN_STATUS_SUCCESS &&
          returned > 1);
    size_t most = 0;
    for (int i = 0; i < returned; i++) {
        size_t bytes = 0;
        cudnnStatus_t st =
            cudnnGetConvolutionForwardWorkspaceSize(h, xd, wd, cd, yd, perf[i].algo, &bytes);
        CHECK(st == perf[i].status && (st || bytes == perf[i].memory));
        if (!st && bytes > most) most = bytes;
    }
    void *ws = NULL;
    cudaMalloc(&ws, most + 4);
    const float one = 1.0f, zero = 0.0f;
    int ran = 0;
    for (int i = 0; i < returned; i++) {
        if (perf[i].status != CUDNN_STATUS_SUCCESS) {
            CHECK(cudnnConvolutionForward(h, &one, xd, dx_, wd, dw_, cd, perf[i].algo, ws, most,
                                          &zero, yd, y_d) == CUDNN_STATUS_NOT_SUPPORTED);
            continue;
        }
        if (perf[i].memory > 0)
            CHECK(cudnnConvolutionForward(h, &one, xd, dx_, wd, dw_, cd, perf[i].algo, ws,
                                          perf[i].memory - 1, &zero, yd,
                                          y_d) == CUDNN_STATUS_BAD_PARAM);
        CHECK(cudnnConvolutionForward(h, &one, xd, dx_, wd, dw_, cd, perf[i].algo, ws, most, &zero,
                                      yd, y_d) == CUDNN_STATUS_SUCCESS);
        ran++;
    }
    CHECK(ran > 0);
    CHECK(cudnnConvolutionBackwardData(h, &one, wd, dw_, yd, ddy, cd,
                                       CUDNN_CONVOLUTION_BWD_DATA_ALGO_1, ws, most, &zero, xd,
                                       gx_d) == CUDNN_STATUS_SUCCESS);
    CHECK(cudnnConvolutionBackwardFilter(h, &one, xd, dx_, yd, ddy, cd,
                                         CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1, ws, most, &zero, wd,
                                         gw_d) == CUDNN_STATUS_SUCCESS);
    /* alpha 2, beta 0.5 into old values, each direction */
    float *y0 = frand(ny, 4, -1, 1), *gx0 = frand(nx, 5, -1, 1), *gw0 = frand(nw, 6, -1, 1);
    float *yb_d = dev_copy(y0, ny), *gxb_d = dev_copy(gx0, nx), *gwb_d = dev_copy(gw0, nw);
    const float two = 2.0f, half = 0.5f;
    CHECK(cudnnConvolutionForward(h, &two, xd, dx_, wd, dw_, cd,
                                  CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, ws, most, &half, yd,
                                  yb_d) == CUDNN_STATUS_SUCCESS);
    CHECK(cudnnConvolutionBackwardData(h, &two, wd, dw_, yd, ddy, cd,
                                       CUDNN_CONVOLUTION_BWD_DATA_ALGO_1, ws, most, &half, xd,
                                       gxb_d) == CUDNN_STATUS_SUCCESS);
    CHECK(cudnnConvolutionBackwardFilter(h, &two, xd, dx_, yd, ddy, cd,
                                         CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1, ws, most, &half, wd,
                                         gwb_d) == CUDNN_STATUS_SUCCESS);
    CHECK(cudaDeviceSynchronize() == cudaSuccess);
    float *y = host_copy(y_d, ny), *gx = host_copy(gx_d, nx), *gw = host_copy(gw_d, nw);
    double *want = dbuf(ny), *want_gx = dbuf(nx), *want_gw = dbuf(nw);
    /* the definition: every (output, filter element) pair that meets an
     * input pixel adds x w to y, dy w to dx and x dy to dw */
    for (int in = 0; in < n; in++)
        for (int ik = 0; ik < k; ik++)
            for (int op = 0; op < p; op++)
                for (int oq = 0; oq < q; oq++) {
                    const int yi = ((in * k + ik) * p + op) * q + oq;
                    double sum = 0;
                    for (int ic = 0; ic < cc->c; ic++)
                        for (int r = 0; r < cc->r; r++)
                            for (int s = 0; s < cc->s; s++) {
                                const int iy = op * cc->stride - cc->pad + r * cc->dil;
                                const int ix = oq * cc->stride - cc->pad + s * cc->dil;
                                if (iy < 0 || ix < 0 || iy >= cc->h || ix >= cc->w) continue;
                                const int fr = cc->mode == CUDNN_CONVOLUTION ? cc->r - 1 - r : r;
                                const int fs = cc->mode == CUDNN_CONVOLUTION ? cc->s - 1 - s : s;
                                const int xi = ((in * cc->c + ic) * cc->h + iy) * cc->w + ix;
                                const int wi = ((ik * cc->c + ic) * cc->r + fr) * cc->s + fs;
                                sum += (double)x[xi] * w[wi];
                                want_gx[xi] += (double)dy[yi] * w[wi];
                                want_gw[wi] += (double)x[xi] * dy[yi];
                            }
                    want[yi] = sum;
                }
    char what[128];
    snprintf(what, sizeof what, "  B%d C%d %dx%d K%d %dx%d pad %d stride %d dil %d %s", cc->n,
             cc->c, cc->h, cc->w, cc->k, cc->r, cc->s, cc->pad, cc->stride, cc->dil,
             cc->mode == CUDNN_CONVOLUTION ? "conv" : "xcorr");
    CHECK(check_close(what, y, want, ny, 1e-5, 1e-5));
    CHECK(check_close("    backward data", gx, want_gx, nx, 1e-5, 1e-5));
    CHECK(check_close("    backward filter", gw, want_gw, nw, 1e-5, 1e-5));
    /* y = 2 conv + 0.5 y_old, and likewise backward */
    for (size_t i = 0; i < ny; i++) want[i] = 2 * want[i] + 0.5 * y0[i];
    for (size_t i = 0; i < nx; i++) want_gx[i] = 2 * want_gx[i] + 0.5 * gx0[i];
    for (size_t i = 0; i < nw; i++) want_gw[i] = 2 * want_gw[i] + 0.5 * gw0[i];
    CHECK(check_close("    forward, alpha 2, beta 0.5", host_copy(yb_d, ny), want, ny, 1e-5, 1e-5));
    CHECK(check_close("    backward data, alpha 2, beta 0.5", host_copy(gxb_d, nx), want_gx, nx,
                      1e-5, 1e-5));
    CHECK(check_close("    backward filter, alpha 2, beta 0.5", host_copy(gwb_d, nw), want_gw, nw,
                      1e-5, 1e-5));
    cudaFree(yb_d), cudaFree(gxb_d), cudaFree(gwb_d);
    /* the adjoint identities hold the two backward directions to the forward */
    const double fwd = dot(y, dy, ny), bd = dot(x, gx, nx), bf = dot(w, gw, nw);
    const double scale = 1e-5 * (1 + fabs(fwd)) * sqrt((double)ny);
    CHECK_MSG(fabs(fwd - bd) <= scale, "<y, dy> %g, <x, dx> %g", fwd, bd);
    CHECK_MSG(fabs(fwd - bf) <= scale, "<y, dy> %g, <w, dw> %g", fwd, bf);
    printf("    adjoints: <y,dy> %.6g, <x,dx> %.6g, <w,dw> %.6g\n", fwd, bd, bf);
    /* mismatched descriptors */
    cudnnTensorDescriptor_t bad;
    cudnnCreateTensorDescriptor(&bad);
    CHECK(cudnnSetTensor4dDescriptor(bad, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, n, k + 1, p, q) ==
          0);
    CHECK(cudnnConvolutionForward(h, &one, xd, dx_, wd, dw_, cd,
                                  CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, ws, most, &zero, bad,
                                  y_d) == CUDNN_STATUS_BAD_PARAM);
    cudnnDestroyTensorDescriptor(bad);
    cudnnDestroyTensorDescriptor(xd), cudnnDestroyTensorDescriptor(yd);
    cudnnDestroyFilterDescriptor(wd), cudnnDestroyConvolutionDescriptor(cd);
    cudaFree(dx_), cudaFree(dw_), cudaFree(ddy), cudaFree(y_d), cudaFree(gx_d), cudaFree(gw_d);
    cudaFree(ws);
}

static void test_cudnn(void) {
    printf("cuDNN convolutions against the definition\n");
    cudnnHandle_t h = NULL;
    CHECK(cudnnCreate(&h) == CUDNN_STATUS_SUCCESS);
    const conv_case cases[] = {
        {2, 3, 7, 6, 4, 3, 3, 1, 1, 1, CUDNN_CROSS_CORRELATION},
        {2, 2, 9, 8, 3, 3, 2, 2, 2, 1, CUDNN_CROSS_CORRELATION},
        {1, 3, 10, 10, 2, 3, 3, 2, 1, 2, CUDNN_CONVOLUTION},
        {3, 4, 5, 5, 5, 1, 1, 0, 2, 1, CUDNN_CROSS_CORRELATION},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) test_conv_case(h, &cases[i]);
    cudnnTensorDescriptor_t t;
    cudnnConvolutionDescriptor_t cd;
    cudnnCreateTensorDescriptor(&t), cudnnCreateConvolutionDescriptor(&cd);
    CHECK(cudnnSetTensor4dDescriptor(t, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 0, 1, 1, 1) ==
          CUDNN_STATUS_BAD_PARAM);
    CHECK(cudnnSetTensor4dDescriptor(t, CUDNN_TENSOR_NHWC, CUDNN_DATA_FLOAT, 1, 1, 1, 1) ==
          CUDNN_STATUS_NOT_SUPPORTED);
    CHECK(cudnnSetConvolution2dDescriptor(cd, -1, 0, 1, 1, 1, 1, CUDNN_CROSS_CORRELATION,
                                          CUDNN_DATA_FLOAT) == CUDNN_STATUS_BAD_PARAM);
    CHECK(cudnnSetConvolution2dDescriptor(cd, 0, 0, 0, 1, 1, 1, CUDNN_CROSS_CORRELATION,
                                          CUDNN_DATA_FLOAT) == CUDNN_STATUS_BAD_PARAM);
    CHECK(cudnnConvolutionForward(NULL, NULL, t, NULL, NULL, NULL, cd, 0, NULL, 0, NULL, t, NULL) ==
          CUDNN_STATUS_BAD_PARAM);
    cudnnDestroyTensorDescriptor(t), cudnnDestroyConvolutionDescriptor(cd);
    CHECK(cudnnDestroy(h) == CUDNN_STATUS_SUCCESS);
}

static void test_nccl(void) {
    printf("NCCL, one rank\n");
    ncclUniqueId id;
    ncclComm_t comm = NULL;
    CHECK(ncclGetUniqueId(&id) == ncclSuccess);
    CHECK(ncclCommInitRank(&comm, 2, id, 2) == ncclInvalidArgument); /* a rank outside the ranks */
    CHECK(ncclCommInitRank(&comm, 1, id, 0) == ncclSuccess);
    cudaStream_t s;
    cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
    float *src = frand(64, 5, -1, 1);
    float *a = dev_copy(src, 64), *b = dev_floats(64);
    CHECK(ncclAllReduce(a, b, 64, ncclFloat, ncclSum, comm, s) == ncclSuccess);
    cudaStreamSynchronize(s);
    CHECK(check_exact_f("  all-reduce of one rank", host_copy(b, 64), src, 64));
    CHECK(ncclSend(a, 32, ncclFloat, 0, comm, s) == ncclInvalidUsage); /* no group: deadlock */
    CHECK(ncclGroupStart() == ncclSuccess);
    CHECK(ncclSend(a + 32, 32, ncclFloat, 0, comm, s) == ncclSuccess);
    CHECK(ncclRecv(b, 32, ncclFloat, 0, comm, s) == ncclSuccess);
    CHECK(ncclGroupEnd() == ncclSuccess);
    cudaStreamSynchronize(s);
    CHECK(check_exact_f("  send/receive to itself", host_copy(b, 32), src + 32, 32));
    CHECK(ncclAllGather(src, b, 64, ncclFloat, comm, s) == ncclInvalidArgument); /* host buffer */
    CHECK(ncclBroadcast(a, b, 64, ncclFloat, 1, comm, s) == ncclInvalidArgument);
    standin_fault_set("ncclAllReduce", 1, 0);
    CHECK(ncclAllReduce(a, b, 64, ncclFloat, ncclSum, comm, s) == ncclSystemError);
    CHECK(ncclCommDestroy(comm) == ncclSuccess);
    cudaFree(a), cudaFree(b);
    cudaStreamDestroy(s);
}

/* Last: a kernel fault is sticky, as on a GPU. */
static void test_sticky(void) {
    printf("sticky errors\n");
    cudaStream_t s;
    cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
    float *d = dev_floats(4);
    standin_enqueue_fault(standin_stream_of(s), cudaErrorIllegalAddress);
    CHECK(cudaStreamSynchronize(s) == cudaErrorIllegalAddress);
    void *p = NULL;
    CHECK(cudaMalloc(&p, 4) == cudaErrorIllegalAddress);
    CHECK(cudaGetLastError() == cudaErrorIllegalAddress);
    CHECK(cudaGetLastError() == cudaErrorIllegalAddress); /* sticky: not reset by reading */
    CHECK(cudaDeviceReset() == cudaSuccess);
    CHECK(cudaMalloc(&p, 4) == cudaSuccess);
    cudaFree(p), cudaFree(d);
}

int main(void) {
    test_runtime();
    test_cublas();
    test_cudnn();
    test_nccl();
    test_sticky();
    free_all();
    return test_finish("test_standin_libs");
}
