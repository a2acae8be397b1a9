/* standin_pinned.c: page-locked host memory (cudaHostAlloc, cudaMallocHost,
 * cudaFreeHost) on the stand-in.
 *
 * What matters to pmoe is when a copy reads it: cudaMemcpyAsync stages a
 * pageable source before it returns, but reads a pinned one only when its
 * stream gets there. The stand-in keeps that difference (standin_runtime.c
 * asks standin_is_pinned before staging), so a host that rewrites a pinned
 * buffer before the upload from it has run sends the new bytes, as on a
 * GPU, and a test sees the race. Allocations are listed in a small table;
 * the memory is ordinary heap, filled with 0xff bytes like device memory. */
#include <cuda_runtime_api.h>
#include <stdlib.h>
#include <string.h>

#include "standin.h"

enum { MAX_PINNED = 64 };
static struct {
    char *base;
    size_t bytes;
} pinned[MAX_PINNED];

int standin_is_pinned(const void *p, size_t bytes) {
    const char *q = p;
    for (int i = 0; i < MAX_PINNED; i++)
        if (pinned[i].base && q >= pinned[i].base && q + bytes <= pinned[i].base + pinned[i].bytes)
            return 1;
    return 0;
}

cudaError_t cudaHostAlloc(void **ptr, size_t bytes, unsigned int flags) {
    (void)flags;
    if (!ptr) return cudaErrorInvalidValue;
    *ptr = NULL;
    if (standin_sticky()) return (cudaError_t)standin_sticky();
    if (standin_fault("cudaHostAlloc")) return cudaErrorMemoryAllocation;
    if (!bytes) return cudaSuccess;
    int slot = 0;
    while (slot < MAX_PINNED && pinned[slot].base) slot++;
    char *p = slot < MAX_PINNED ? aligned_alloc(256, (bytes + 255) & ~(size_t)255) : NULL;
    if (!p) return cudaErrorMemoryAllocation;
    memset(p, 0xff, bytes);
    pinned[slot].base = p;
    pinned[slot].bytes = bytes;
    *ptr = p;
    return cudaSuccess;
}

cudaError_t cudaMallocHost(void **ptr, size_t bytes) { return cudaHostAlloc(ptr, bytes, 0); }

cudaError_t cudaFreeHost(void *ptr) {
    if (!ptr) return cudaSuccess;
    standin_drain_all(); /* documented: it waits for the device, as cudaFree does */
    for (int i = 0; i < MAX_PINNED; i++)
        if (pinned[i].base == ptr) {
            free(ptr);
            pinned[i].base = NULL;
            return cudaSuccess;
        }
    standin_warn("cudaFreeHost(%p): not a live pinned allocation", ptr);
    return cudaErrorInvalidValue;
}
