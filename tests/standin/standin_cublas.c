/* standin_cublas.c: the cuBLAS calls pmoe makes, on the CPU, against the
 * real cublas_v2.h.
 *
 * cublasSgemmStridedBatched_64 computes, for every batch entry i,
 * C_i = alpha op(A_i) op(B_i) + beta C_i in column-major storage, as the
 * cuBLAS documentation defines it: op(A) is m x k (A is lda-strided m x k,
 * or k x m when transposed), op(B) is k x n, C is m x n with leading
 * dimension ldc, and A_i = A + i strideA. The arguments are checked as the
 * documentation lists (CUBLAS_STATUS_NOT_INITIALIZED for a handle that is
 * not one; CUBLAS_STATUS_INVALID_VALUE for negative sizes, an unknown
 * operation, a leading dimension below its minimum, a NULL alpha or beta);
 * beta = 0 never reads C (NaN in C does not survive). Each product is
 * OpenBLAS's column-major sgemm (test_standin_libs checks it against the
 * definition, a triple loop), enqueued on the handle's stream; in
 * CUBLAS_TF32_TENSOR_OP_MATH the inputs are first rounded to TF32 (round to
 * nearest even, float_round.h: what tensor cores read of a float). A range
 * that leaves its device allocation is what the GPU would fault on: it is
 * reported and becomes the device's sticky illegal-address error. */
#include <cblas.h>
#include <cublas_v2.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "float_round.h"
#include "standin.h"

#define HANDLE_MAGIC 0x424c4153u

struct cublasContext {
    uint32_t magic;
    cudaStream_t stream;
    cublasMath_t math;
};

static struct cublasContext *handle_of(cublasHandle_t h) {
    return h && h->magic == HANDLE_MAGIC ? h : NULL;
}

cublasStatus_t cublasCreate_v2(cublasHandle_t *handle) {
    if (!handle) return CUBLAS_STATUS_INVALID_VALUE;
    *handle = NULL;
    if (standin_fault("cublasCreate")) return CUBLAS_STATUS_NOT_INITIALIZED;
    struct cublasContext *h = calloc(1, sizeof *h);
    if (!h) return CUBLAS_STATUS_ALLOC_FAILED;
    h->magic = HANDLE_MAGIC;
    h->math = CUBLAS_DEFAULT_MATH;
    *handle = h;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy_v2(cublasHandle_t handle) {
    struct cublasContext *h = handle_of(handle);
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    h->magic = 0;
    free(h);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream_v2(cublasHandle_t handle, cudaStream_t stream) {
    struct cublasContext *h = handle_of(handle);
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!standin_stream_of(stream) || standin_fault("cublasSetStream"))
        return CUBLAS_STATUS_INVALID_VALUE;
    h->stream = stream;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGetStream_v2(cublasHandle_t handle, cudaStream_t *stream) {
    struct cublasContext *h = handle_of(handle);
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!stream) return CUBLAS_STATUS_INVALID_VALUE;
    *stream = h->stream;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode) {
    struct cublasContext *h = handle_of(handle);
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    const unsigned base = (unsigned)mode &
                          ~(unsigned)CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION;
    if (base != CUBLAS_DEFAULT_MATH && base != CUBLAS_TENSOR_OP_MATH &&
        base != CUBLAS_PEDANTIC_MATH && base != CUBLAS_TF32_TENSOR_OP_MATH)
        return CUBLAS_STATUS_INVALID_VALUE;
    h->math = mode;
    return CUBLAS_STATUS_SUCCESS;
}

const char *cublasGetStatusName(cublasStatus_t status) {
    switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    default: return "CUBLAS_STATUS_UNKNOWN";
    }
}

const char *cublasGetStatusString(cublasStatus_t status) {
    switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "success";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "the library was not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED: return "the resource allocation failed";
    case CUBLAS_STATUS_INVALID_VALUE: return "an invalid numeric value was used as an argument";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "the GPU program failed to execute";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "the functionality requested is not supported";
    default: return "unknown error";
    }
}

typedef struct gemm_work {
    int trans_a, trans_b, round; /* round: PMOE_ROUND_* for the inputs */
    int64_t m, n, k, lda, ldb, ldc, stride_a, stride_b, stride_c, batch;
    float alpha, beta;
    const float *a, *b;
    float *c;
} gemm_work;

/* A copy of a column-major rows x cols operand (leading dimension ld), each
 * element rounded as `round` (PMOE_ROUND_*) asks; NULL when out of memory. */
static float *rounded_copy(const float *m, int64_t rows, int64_t cols, int64_t ld, int round) {
    const int64_t span = rows == 0 || cols == 0 ? 1 : ld * (cols - 1) + rows;
    float *copy = malloc((size_t)span * sizeof(float));
    if (!copy) return NULL;
    for (int64_t col = 0; col < cols; col++)
        for (int64_t row = 0; row < rows; row++)
            copy[row + col * ld] = pmoe_round_as(m[row + col * ld], round);
    return copy;
}

static int run_gemm(void *arg) {
    const gemm_work *g = arg;
    for (int64_t i = 0; i < g->batch; i++) {
        const float *a = g->a + i * g->stride_a, *b = g->b + i * g->stride_b;
        float *c = g->c + i * g->stride_c;
        float *ra = NULL, *rb = NULL; /* the inputs as the math mode reads them */
        if (g->round != PMOE_ROUND_NONE) {
            ra = rounded_copy(a, g->trans_a ? g->k : g->m, g->trans_a ? g->m : g->k, g->lda,
                              g->round);
            rb = rounded_copy(b, g->trans_b ? g->n : g->k, g->trans_b ? g->k : g->n, g->ldb,
                              g->round);
            if (!ra || !rb) {
                free(ra), free(rb);
                return 3; /* CUBLAS_STATUS_ALLOC_FAILED */
            }
            a = ra, b = rb;
        }
        if (g->beta == 0.0f) /* C is written, never read: NaN there does not survive */
            for (int64_t col = 0; col < g->n; col++) memset(c + col * g->ldc, 0, (size_t)g->m * 4);
        cblas_sgemm(CblasColMajor, g->trans_a ? CblasTrans : CblasNoTrans,
                    g->trans_b ? CblasTrans : CblasNoTrans, (blasint)g->m, (blasint)g->n,
                    (blasint)g->k, g->alpha, a, (blasint)g->lda, b, (blasint)g->ldb, g->beta, c,
                    (blasint)g->ldc);
        free(ra), free(rb);
    }
    return 0;
}

/* Elements a column-major rows x cols matrix with leading dimension ld
 * spans, over batch entries stride apart. */
static int64_t extent(int64_t rows, int64_t cols, int64_t ld, int64_t stride, int64_t batch) {
    if (rows == 0 || cols == 0) return 0;
    return (batch - 1) * stride + (cols - 1) * ld + rows;
}

static int in_device(const float *p, int64_t elements, const char *what) {
    if (elements == 0) return 1;
    if (standin_device_range(p, (size_t)elements * sizeof(float))) return 1;
    standin_warn("cublasSgemmStridedBatched_64: %s (%p, %lld floats) is not inside one device "
                 "allocation",
                 what, (const void *)p, (long long)elements);
    return 0;
}

static int op_ok(cublasOperation_t op) {
    return op == CUBLAS_OP_N || op == CUBLAS_OP_T || op == CUBLAS_OP_C;
}

static int64_t max1(int64_t v) { return v > 1 ? v : 1; }

cublasStatus_t cublasSgemmStridedBatched_64(cublasHandle_t handle, cublasOperation_t transa,
                                            cublasOperation_t transb, int64_t m, int64_t n,
                                            int64_t k, const float *alpha, const float *A,
                                            int64_t lda, long long int strideA, const float *B,
                                            int64_t ldb, long long int strideB, const float *beta,
                                            float *C, int64_t ldc, long long int strideC,
                                            int64_t batchCount) {
    struct cublasContext *h = handle_of(handle);
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    const int ta = transa != CUBLAS_OP_N, tb = transb != CUBLAS_OP_N; /* real data: C is T */
    if (m < 0 || n < 0 || k < 0 || batchCount < 0 || !op_ok(transa) || !op_ok(transb) ||
        lda < max1(ta ? k : m) || ldb < max1(tb ? n : k) || ldc < max1(m) || !alpha || !beta)
        return CUBLAS_STATUS_INVALID_VALUE;
    if (standin_fault("cublasSgemmStridedBatched_64")) return CUBLAS_STATUS_EXECUTION_FAILED;
    if (m > INT_MAX || n > INT_MAX || k > INT_MAX || lda > INT_MAX || ldb > INT_MAX ||
        ldc > INT_MAX) { /* a limit of the stand-in (OpenBLAS's int sizes), not of cuBLAS */
        standin_warn("cublasSgemmStridedBatched_64: sizes above 2^31 - 1 are beyond the stand-in");
        return CUBLAS_STATUS_NOT_SUPPORTED;
    }
    if (m == 0 || n == 0 || batchCount == 0) return CUBLAS_STATUS_SUCCESS;
    standin_stream *s = standin_stream_of(h->stream);
    if (!s || standin_sticky()) return CUBLAS_STATUS_EXECUTION_FAILED;
    const int ok = in_device(A, extent(ta ? k : m, ta ? m : k, lda, strideA, batchCount), "A") &
                   in_device(B, extent(tb ? n : k, tb ? k : n, ldb, strideB, batchCount), "B") &
                   in_device(C, extent(m, n, ldc, strideC, batchCount), "C");
    if (!ok) {
        standin_enqueue_fault(s, 700 /* cudaErrorIllegalAddress */);
        return CUBLAS_STATUS_SUCCESS; /* the launch itself succeeds; the kernel faults */
    }
    gemm_work *g = malloc(sizeof *g);
    if (!g) return CUBLAS_STATUS_ALLOC_FAILED;
    const unsigned base = (unsigned)h->math &
                          ~(unsigned)CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION;
    *g = (gemm_work){
        ta,         tb,      base == CUBLAS_TF32_TENSOR_OP_MATH ? PMOE_ROUND_TF32 : PMOE_ROUND_NONE,
        m,          n,       k,
        lda,        ldb,     ldc,
        strideA,    strideB, strideC,
        batchCount, *alpha,  *beta,
        A,          B,       C};
    standin_enqueue(s, run_gemm, g, free);
    return CUBLAS_STATUS_SUCCESS;
}
