/* standin_nccl.c: the NCCL calls pmoe makes, for one rank, on the CPU,
 * against the real nccl.h.
 *
 * A communicator holds one rank (ncclCommInitRank with nranks != 1 is
 * ncclInvalidArgument: several ranks would need several processes or
 * threads, which the stand-in does not model). With one rank every
 * collective is a copy from the send buffer to the receive buffer (in
 * place: nothing), enqueued on the given stream; a send to itself must be
 * paired with a receive inside one group (ncclGroupStart / ncclGroupEnd),
 * matched in posting order, with the same count and type, as NCCL
 * requires; outside a group it would deadlock, and is refused as
 * ncclInvalidUsage. Buffers must be device memory of the stated size.
 * After ncclCommAbort or ncclCommDestroy the handle is dead. */
#include <nccl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "standin.h"
#include "standin_internal.h"

#define COMM_MAGIC 0x4e43434cu
#define PENDING_MAX 256

struct ncclComm {
    uint32_t magic;
    char last_error[256];
};

typedef struct pending {
    int is_send;
    void *buf;
    size_t bytes;
    cudaStream_t stream;
} pending;

static int group_depth;
static pending posted[PENDING_MAX];
static int posted_count;
static ncclResult_t group_error;

static struct ncclComm *comm_of(ncclComm_t c) { return c && c->magic == COMM_MAGIC ? c : NULL; }

static ncclResult_t fail(struct ncclComm *c, ncclResult_t r, const char *what) {
    if (c) snprintf(c->last_error, sizeof c->last_error, "%s", what);
    if (group_depth && !group_error) group_error = r;
    return r;
}

const char *ncclGetErrorString(ncclResult_t result) {
    switch (result) {
    case ncclSuccess: return "no error";
    case ncclUnhandledCudaError: return "unhandled cuda error (run with NCCL_DEBUG=INFO for details)";
    case ncclSystemError: return "unhandled system error (run with NCCL_DEBUG=INFO for details)";
    case ncclInternalError: return "internal error - please report this issue to the NCCL developers";
    case ncclInvalidArgument: return "invalid argument (run with NCCL_DEBUG=WARN for details)";
    case ncclInvalidUsage: return "invalid usage (run with NCCL_DEBUG=WARN for details)";
    case ncclRemoteError: return "remote process exited or there was a network error";
    case ncclInProgress: return "NCCL operation in progress";
    default: return "unknown result code";
    }
}

const char *ncclGetLastError(ncclComm_t comm) {
    struct ncclComm *c = comm_of(comm);
    return c ? c->last_error : "";
}

ncclResult_t ncclGetUniqueId(ncclUniqueId *id) {
    if (!id) return ncclInvalidArgument;
    if (standin_fault("ncclGetUniqueId")) return ncclSystemError;
    memset(id, 0, sizeof *id);
    snprintf(id->internal, sizeof id->internal, "pmoe-standin");
    return ncclSuccess;
}

ncclResult_t ncclCommInitRank(ncclComm_t *comm, int nranks, ncclUniqueId id, int rank) {
    if (!comm) return ncclInvalidArgument;
    *comm = NULL;
    if (strcmp(id.internal, "pmoe-standin") != 0) return ncclInvalidArgument;
    if (nranks != 1 || rank != 0) return ncclInvalidArgument;
    if (standin_fault("ncclCommInitRank")) return ncclSystemError;
    struct ncclComm *c = calloc(1, sizeof *c);
    if (!c) return ncclSystemError;
    c->magic = COMM_MAGIC;
    *comm = c;
    return ncclSuccess;
}

static ncclResult_t release(ncclComm_t comm) {
    struct ncclComm *c = comm_of(comm);
    if (!c) return ncclInvalidArgument;
    c->magic = 0;
    free(c);
    return ncclSuccess;
}

ncclResult_t ncclCommFinalize(ncclComm_t comm) {
    return comm_of(comm) ? ncclSuccess : ncclInvalidArgument;
}
ncclResult_t ncclCommDestroy(ncclComm_t comm) { return release(comm); }
ncclResult_t ncclCommAbort(ncclComm_t comm) { return release(comm); }

ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t *async) {
    struct ncclComm *c = comm_of(comm);
    if (!c || !async) return ncclInvalidArgument;
    *async = standin_fault("ncclCommGetAsyncError") ? ncclRemoteError : ncclSuccess;
    if (*async) snprintf(c->last_error, sizeof c->last_error, "injected asynchronous error");
    return ncclSuccess;
}

/* Checks common to every data op; the stream it runs on in *s. */
static ncclResult_t check_op(struct ncclComm *c, const char *name, ncclDataType_t type,
                             const void *a, const void *b, size_t bytes, cudaStream_t stream,
                             standin_stream **s) {
    if (!c) return ncclInvalidArgument;
    if (type != ncclFloat32) return fail(c, ncclInvalidArgument, "only ncclFloat32 is modelled");
    *s = standin_stream_of(stream);
    if (!*s) return fail(c, ncclInvalidArgument, "not a stream");
    if (bytes && ((a && !standin_device_range(a, bytes)) || (b && !standin_device_range(b, bytes)))) {
        standin_warn("%s: a buffer of %zu bytes is not inside one device allocation", name, bytes);
        return fail(c, ncclInvalidArgument, "a buffer is not device memory");
    }
    if (standin_fault(name)) return fail(c, ncclSystemError, "injected fault");
    if (standin_sticky()) return fail(c, ncclUnhandledCudaError, "the device has failed");
    return ncclSuccess;
}

static void enqueue_copy(standin_stream *s, void *dst, const void *src, size_t bytes) {
    if (!bytes || dst == src) return;
    standin_copy *c = calloc(1, sizeof *c);
    if (!c) {
        standin_enqueue_fault(s, 2 /* cudaErrorMemoryAllocation */);
        return;
    }
    *c = (standin_copy){dst, src, bytes, NULL};
    standin_enqueue(s, standin_run_copy, c, standin_free_copy);
}

static ncclResult_t copy_op(const char *name, const void *send, void *recv, size_t count,
                            ncclDataType_t type, ncclComm_t comm, cudaStream_t stream) {
    struct ncclComm *c = comm_of(comm);
    standin_stream *s = NULL;
    ncclResult_t r = check_op(c, name, type, send, recv, count * sizeof(float), stream, &s);
    if (r) return r;
    if (!send || !recv) return fail(c, ncclInvalidArgument, "a NULL buffer");
    enqueue_copy(s, recv, send, count * sizeof(float));
    return ncclSuccess;
}

ncclResult_t ncclAllReduce(const void *send, void *recv, size_t count, ncclDataType_t type,
                           ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream) {
    if (op != ncclSum && op != ncclProd && op != ncclMax && op != ncclMin && op != ncclAvg)
        return fail(comm_of(comm), ncclInvalidArgument, "unknown reduction");
    return copy_op("ncclAllReduce", send, recv, count, type, comm, stream);
}

ncclResult_t ncclBroadcast(const void *send, void *recv, size_t count, ncclDataType_t type,
                           int root, ncclComm_t comm, cudaStream_t stream) {
    if (root != 0) return fail(comm_of(comm), ncclInvalidArgument, "root outside the ranks");
    return copy_op("ncclBroadcast", send, recv, count, type, comm, stream);
}

ncclResult_t ncclAllGather(const void *send, void *recv, size_t count, ncclDataType_t type,
                           ncclComm_t comm, cudaStream_t stream) {
    return copy_op("ncclAllGather", send, recv, count, type, comm, stream);
}

static ncclResult_t post(const char *name, int is_send, void *buf, size_t count,
                         ncclDataType_t type, int peer, ncclComm_t comm, cudaStream_t stream) {
    struct ncclComm *c = comm_of(comm);
    standin_stream *s = NULL;
    ncclResult_t r = check_op(c, name, type, buf, NULL, count * sizeof(float), stream, &s);
    if (r) return r;
    if (peer != 0) return fail(c, ncclInvalidArgument, "peer outside the ranks");
    if (!group_depth) return fail(c, ncclInvalidUsage, "a send to oneself outside a group deadlocks");
    if (posted_count == PENDING_MAX) return fail(c, ncclInternalError, "too many posted");
    posted[posted_count++] = (pending){is_send, buf, count * sizeof(float), stream};
    return ncclSuccess;
}

ncclResult_t ncclSend(const void *send, size_t count, ncclDataType_t type, int peer,
                      ncclComm_t comm, cudaStream_t stream) {
    return post("ncclSend", 1, (void *)send, count, type, peer, comm, stream);
}

ncclResult_t ncclRecv(void *recv, size_t count, ncclDataType_t type, int peer, ncclComm_t comm,
                      cudaStream_t stream) {
    return post("ncclRecv", 0, recv, count, type, peer, comm, stream);
}

ncclResult_t ncclGroupStart(void) {
    if (group_depth++ == 0) {
        posted_count = 0;
        group_error = ncclSuccess;
    }
    return ncclSuccess;
}

/* Pairs the k-th send with the k-th receive (one peer: itself). */
ncclResult_t ncclGroupEnd(void) {
    if (group_depth == 0) return ncclInvalidUsage;
    if (--group_depth) return ncclSuccess;
    if (group_error) return group_error;
    int sends = 0, recvs = 0;
    for (int i = 0; i < posted_count; i++) posted[i].is_send ? sends++ : recvs++;
    if (sends != recvs) return ncclInvalidUsage;
    for (int i = 0, j = 0; i < posted_count; i++) {
        if (!posted[i].is_send) continue;
        while (posted[j].is_send) j++;
        if (posted[i].bytes != posted[j].bytes || posted[i].stream != posted[j].stream)
            return ncclInvalidUsage;
        enqueue_copy(standin_stream_of(posted[i].stream), posted[j].buf, posted[i].buf,
                     posted[i].bytes);
        j++;
    }
    posted_count = 0;
    return ncclSuccess;
}
