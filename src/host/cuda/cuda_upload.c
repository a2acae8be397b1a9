/* cuda_upload.c: the CUDA backend's overlapped input (be.upload, backend.h's
 * pmoe_upload_ops): pinned host memory, a copy stream beside the compute
 * stream, and the events that order them on the device.
 *
 * upload: the copy stream waits for `landed` (the compute stream has read
 * the staging area), copies the pinned batch in, and records `uploaded`
 * and the slot's `slot_read`. land: the compute stream waits for
 * `uploaded` and copies the staging area into the model's buffers, then
 * records `landed`. Only slot_wait blocks the host, and only on a copy (the
 * upload from a buffer the host wants to compose into again), never on
 * compute. CUDA waits on an event's latest record; `landed` is first
 * recorded when the stream is made, so the first upload follows the
 * compute work queued before it (a staging area's setup). The stream
 * and events are made on first use, so a run that never overlaps (the
 * CPU-composing paths, the tests of other ops) pays nothing. */
#include "cuda/cuda_internal.h"

static pmoe_status failed(cuda_context *c, pmoe_error *err) {
    if (err) *err = c->error;
    return c->error.code;
}

static pmoe_status make_stream(cuda_context *c, pmoe_error *err) {
    if (c->upload_made || c->error.code) return c->error.code ? failed(c, err) : PMOE_OK;
    PMOE_CUDA_CHECK(c, cudaStreamCreateWithFlags(&c->copy_stream, cudaStreamNonBlocking));
    cudaEvent_t *events[4] = {&c->uploaded, &c->landed, &c->slot_read[0], &c->slot_read[1]};
    for (int i = 0; i < 4 && !c->error.code; i++)
        PMOE_CUDA_CHECK(c, cudaEventCreateWithFlags(events[i], cudaEventDisableTiming));
    /* the first upload follows whatever compute work came before it (the
     * staging area's own setup among it) */
    if (!c->error.code) PMOE_CUDA_CHECK(c, cudaEventRecord(c->landed, c->stream));
    if (c->error.code) return failed(c, err);
    c->upload_made = 1;
    return PMOE_OK;
}

static pmoe_status pinned_alloc(pmoe_backend *be, size_t bytes, void **out, pmoe_error *err) {
    cuda_context *c = cuda_context_of(be);
    *out = NULL;
    cudaError_t e = cudaHostAlloc(out, bytes ? bytes : 1, cudaHostAllocDefault);
    if (e != cudaSuccess) {
        cudaGetLastError(); /* an allocation failure is not sticky */
        *out = NULL;
        return pmoe_fail(err, PMOE_ERR_OOM,
                         "%s: cudaHostAlloc(%zu bytes) of pinned memory for "
                         "the input failed: %s",
                         c->name, bytes, cudaGetErrorString(e));
    }
    return PMOE_OK;
}

static void pinned_release(pmoe_backend *be, void *ptr) {
    if (ptr) PMOE_CUDA_CHECK(cuda_context_of(be), cudaFreeHost(ptr));
}

static pmoe_status upload(pmoe_backend *be, int slot, void *staging, const void *src, size_t bytes,
                          pmoe_error *err) {
    cuda_context *c = cuda_context_of(be);
    if (slot < 0 || slot > 1)
        return pmoe_fail(err, PMOE_ERR_INTERNAL, "%s: upload slot %d is not 0 or 1", c->name, slot);
    if (make_stream(c, err)) return c->error.code;
    PMOE_CUDA_CHECK(c, cudaStreamWaitEvent(c->copy_stream, c->landed, 0));
    if (!c->error.code && bytes)
        PMOE_CUDA_CHECK(
            c, cudaMemcpyAsync(staging, src, bytes, cudaMemcpyHostToDevice, c->copy_stream));
    if (!c->error.code) PMOE_CUDA_CHECK(c, cudaEventRecord(c->uploaded, c->copy_stream));
    if (!c->error.code) PMOE_CUDA_CHECK(c, cudaEventRecord(c->slot_read[slot], c->copy_stream));
    return c->error.code ? failed(c, err) : PMOE_OK;
}

static pmoe_status land(pmoe_backend *be, int count, void *const *dst, const void *const *src,
                        const size_t *bytes, pmoe_error *err) {
    cuda_context *c = cuda_context_of(be);
    if (make_stream(c, err)) return c->error.code;
    PMOE_CUDA_CHECK(c, cudaStreamWaitEvent(c->stream, c->uploaded, 0));
    for (int i = 0; i < count && !c->error.code; i++)
        if (bytes[i])
            PMOE_CUDA_CHECK(
                c, cudaMemcpyAsync(dst[i], src[i], bytes[i], cudaMemcpyDeviceToDevice, c->stream));
    if (!c->error.code) PMOE_CUDA_CHECK(c, cudaEventRecord(c->landed, c->stream));
    return c->error.code ? failed(c, err) : PMOE_OK;
}

static pmoe_status slot_wait(pmoe_backend *be, int slot, pmoe_error *err) {
    cuda_context *c = cuda_context_of(be);
    if (make_stream(c, err)) return c->error.code;
    if (slot >= 0 && slot <= 1) PMOE_CUDA_CHECK(c, cudaEventSynchronize(c->slot_read[slot]));
    return c->error.code ? failed(c, err) : PMOE_OK;
}

static const pmoe_upload_ops CUDA_UPLOAD = {pinned_alloc, pinned_release, upload, land, slot_wait};

void cuda_upload_init(cuda_context *c) { c->be.upload = &CUDA_UPLOAD; }

void cuda_upload_release(cuda_context *c) {
    if (!c->upload_made) return;
    cudaStreamSynchronize(c->copy_stream);
    cudaEventDestroy(c->uploaded);
    cudaEventDestroy(c->landed);
    cudaEventDestroy(c->slot_read[0]);
    cudaEventDestroy(c->slot_read[1]);
    cudaStreamDestroy(c->copy_stream);
    c->upload_made = 0;
}
