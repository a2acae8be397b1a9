/* cuda_internal.h: the CUDA backend's context and its check macros, shared
 * by cuda_backend.c and cuda_conv.c (and nothing outside src/host/cuda).
 *
 * Ops are asynchronous and return nothing, so a failing CUDA, cuBLAS, cuDNN
 * or kernel-launcher call is recorded in the context (the first failure
 * wins: later ones are usually its consequences) with the call's text, the
 * library's error name, file and line; every op does nothing once the
 * context has failed, and synchronize() / copy_out() report the failure. */
#ifndef PMOE_CUDA_INTERNAL_H
#define PMOE_CUDA_INTERNAL_H

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "backend/backend.h"
#include "kernels/pmoe_kernels.h"

typedef struct cuda_conv_state cuda_conv_state;

/* Marks of the device clock (cuda_clock.c): a step's phases need about 20. */
#define CUDA_CLOCK_MARKS 160

typedef struct cuda_context {
    pmoe_backend be; /* be.impl points back here */
    int device;
    cudaStream_t stream; /* every op of this backend runs on it, in order */
    cublasHandle_t blas;
    pmoe_error error;        /* the first failure; code PMOE_OK while none */
    char name[160];          /* "cuda:0 (NVIDIA H200)" */
    cuda_conv_state *conv;   /* cuDNN handle, plans and workspace; made on first use */
    pmoe_device_clock clock; /* be.clock: CUDA events on the stream */
    cudaEvent_t clock_events[CUDA_CLOCK_MARKS]; /* made on first use */
    int clock_made, clock_used;
    int precision;  /* train.precision (pmoe_precision) */
    int blas_math;  /* the cuBLAS math mode set on blas (a cublasMath_t) */
    float *scratch; /* one op's scratch (bf16's rounded inputs, batch norm's
                             partials): its contents live within one op, which the
                             one stream keeps apart from the next op's */
    size_t scratch_bytes;
    /* be.upload (cuda_upload.c): the copy stream and its events, made on first use */
    cudaStream_t copy_stream;
    cudaEvent_t uploaded, landed, slot_read[2];
    int upload_made;
} cuda_context;

static inline cuda_context *cuda_context_of(pmoe_backend *be) { return (cuda_context *)be->impl; }

void cuda_record(cuda_context *c, pmoe_status code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Sets up be.clock (cuda_clock.c); frees its events. */
void cuda_clock_init(cuda_context *c);
void cuda_clock_release(cuda_context *c);

/* Room for `count` floats of op scratch (grown to the largest need, met in
 * the first step; never shrunk); NULL with the failure recorded. */
float *cuda_scratch(cuda_context *c, int64_t count);
/* Sets up be.upload (cuda_upload.c); frees its stream and events. */
void cuda_upload_init(cuda_context *c);
void cuda_upload_release(cuda_context *c);

/* Frees the cuDNN state (cuda_conv.c, or its stub without cuDNN). */
void cuda_conv_release(cuda_context *c);

#define PMOE_CUDA_CHECK(ctx, call)                                                                 \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess)                                                                     \
            cuda_record((ctx), e_ == cudaErrorMemoryAllocation ? PMOE_ERR_OOM : PMOE_ERR_INTERNAL, \
                        "%s failed: %s (%s) at %s:%d", #call, cudaGetErrorName(e_),                \
                        cudaGetErrorString(e_), __FILE__, __LINE__);                               \
    } while (0)

#define PMOE_CUBLAS_CHECK(ctx, call)                                                               \
    do {                                                                                           \
        cublasStatus_t s_ = (call);                                                                \
        if (s_ != CUBLAS_STATUS_SUCCESS)                                                           \
            cuda_record((ctx), PMOE_ERR_INTERNAL, "%s failed: %s (%s) at %s:%d", #call,            \
                        cublasGetStatusName(s_), cublasGetStatusString(s_), __FILE__, __LINE__);   \
    } while (0)

/* A launcher's failure (rc: a PMOE_KERNEL_ERR_* or a cudaError_t),
 * recorded naming the launcher (the text of `call` up to its '('). A
 * cudaError_t is either the launch's own (a bad configuration) or the
 * sticky error of asynchronous work enqueued before it; the runtime is
 * asked again after clearing (a sticky error stays), and a sticky one is
 * reported as the earlier work's, never as this launch's fault. */
void cuda_record_kernel(cuda_context *c, int rc, const char *call, const char *file, int line);

#define PMOE_KERNEL_CHECK(ctx, call)                                                               \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        if (rc_) cuda_record_kernel((ctx), rc_, #call, __FILE__, __LINE__);                        \
    } while (0)

#endif
