/* comm_nccl.c: the NCCL communicator (GPU buffers); see comm.h.
 *
 * Bootstrap: the ranks and local ranks come from the MPI communicator it
 * wraps; rank 0 makes the NCCL unique id and broadcasts it over MPI; every
 * rank binds its CUDA device (its local rank, chosen by the caller) and
 * joins with ncclCommInitRank. Control ops (agreeing on errors, counts,
 * gathering a checkpoint to rank 0) stay on MPI: they are host data.
 *
 * Data ops run on a dedicated stream. Each one is ordered after the work
 * already queued on the compute stream (an event the NCCL stream waits for)
 * and before the work queued after it (an event the compute stream waits
 * for), so nothing blocks the host. The exchange is grouped ncclSend /
 * ncclRecv, one pair per (peer, block): each block is contiguous on both
 * sides, so the (rank, block) transposes of the layout cost no packing.
 * The sum is ncclAllReduce (identical on every rank, in NCCL's order).
 *
 * Any NCCL or CUDA error (and an asynchronous NCCL error, looked for before
 * every control op) aborts the NCCL communicator, so no peer is left
 * waiting inside a kernel, then the whole job through MPI with this rank's
 * number and the failing call. Compiled only where CUDA, NCCL and MPI are
 * found; never run on a machine without a GPU. */
#include <cuda_runtime_api.h>
#include <nccl.h>
#ifdef PMOE_HAVE_NVTX
#include <nvtx3/nvToolsExtCudaRt.h> /* to name the stream in Nsight's timeline */
#endif
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm/comm.h"

typedef struct nccl_impl {
    pmoe_comm *mpi; /* bootstrap and control ops */
    ncclComm_t nccl;
    int device;
    cudaStream_t stream;  /* the communicator's own */
    cudaStream_t compute; /* the backend's: data ops are ordered with it */
    cudaEvent_t ready, done;
    int started; /* buckets started since the last all_reduce_wait */
} nccl_impl;

static nccl_impl *impl_of(pmoe_comm *c) { return c->impl; }

int pmoe_comm_nccl_built(void) { return 1; }

static void nccl_abort(pmoe_comm *c, int code, const char *message) {
    nccl_impl *n = impl_of(c);
    if (n->nccl) ncclCommAbort(n->nccl); /* frees peers stuck in this communicator's kernels */
    n->nccl = NULL;
    n->mpi->abort(n->mpi, code, message);
}

#define NCCL_CHECK(c, call)                                                                        \
    do {                                                                                           \
        ncclResult_t r_ = (call);                                                                  \
        if (r_ != ncclSuccess && r_ != ncclInProgress) {                                           \
            const char *last_ = impl_of(c)->nccl ? ncclGetLastError(impl_of(c)->nccl) : "";        \
            pmoe_comm_failf((c), "%s failed: %s%s%s (%s:%d)", #call, ncclGetErrorString(r_),       \
                            last_ &&*last_ ? ": " : "", last_ ? last_ : "", __FILE__, __LINE__);   \
        }                                                                                          \
    } while (0)

#define CUDA_CHECK(c, call)                                                                        \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess)                                                                     \
            pmoe_comm_failf((c), "%s failed: %s (%s) (%s:%d)", #call, cudaGetErrorName(e_),        \
                            cudaGetErrorString(e_), __FILE__, __LINE__);                           \
    } while (0)

/* The data ops' bracket: the NCCL stream waits for the compute stream's
 * work so far; afterwards the compute stream waits for the NCCL work. */
static void begin(pmoe_comm *c) {
    nccl_impl *n = impl_of(c);
    CUDA_CHECK(c, cudaEventRecord(n->ready, n->compute));
    CUDA_CHECK(c, cudaStreamWaitEvent(n->stream, n->ready, 0));
}

static void end(pmoe_comm *c) {
    nccl_impl *n = impl_of(c);
    CUDA_CHECK(c, cudaEventRecord(n->done, n->stream));
    CUDA_CHECK(c, cudaStreamWaitEvent(n->compute, n->done, 0));
}

static void nccl_all_to_all(pmoe_comm *c, const float *send, float *recv,
                            const pmoe_exchange_layout *l) {
    nccl_impl *n = impl_of(c);
    begin(c);
    NCCL_CHECK(c, ncclGroupStart());
    for (int p = 0; p < c->size; p++)
        for (int j = 0; j < l->blocks; j++) {
            /* pairs to one peer match in the order they are posted */
            NCCL_CHECK(c, ncclSend(send + p * l->send_rank_stride + j * l->send_block_stride,
                                   (size_t)l->count, ncclFloat, p, n->nccl, n->stream));
            NCCL_CHECK(c, ncclRecv(recv + p * l->recv_rank_stride + j * l->recv_block_stride,
                                   (size_t)l->count, ncclFloat, p, n->nccl, n->stream));
        }
    NCCL_CHECK(c, ncclGroupEnd());
    end(c);
}

static void nccl_all_gather(pmoe_comm *c, const float *send, float *recv, int64_t count) {
    nccl_impl *n = impl_of(c);
    begin(c);
    NCCL_CHECK(c, ncclAllGather(send, recv, (size_t)count, ncclFloat, n->nccl, n->stream));
    end(c);
}

static void nccl_all_reduce_sum(pmoe_comm *c, float *buf, int64_t count) {
    nccl_impl *n = impl_of(c);
    begin(c);
    NCCL_CHECK(c, ncclAllReduce(buf, buf, (size_t)count, ncclFloat, ncclSum, n->nccl, n->stream));
    end(c);
}

/* A bucket: one NCCL group after the compute stream's work so far; the
 * compute stream goes on (its next kernels overlap the sums) until
 * nccl_all_reduce_wait. */
static void nccl_all_reduce_start(pmoe_comm *c, float *const *bufs, const int64_t *counts, int n) {
    nccl_impl *x = impl_of(c);
    begin(c);
    NCCL_CHECK(c, ncclGroupStart());
    for (int i = 0; i < n; i++)
        NCCL_CHECK(c, ncclAllReduce(bufs[i], bufs[i], (size_t)counts[i], ncclFloat, ncclSum,
                                    x->nccl, x->stream));
    NCCL_CHECK(c, ncclGroupEnd());
    x->started = 1;
}

static void nccl_all_reduce_wait(pmoe_comm *c) {
    nccl_impl *x = impl_of(c);
    if (!x->started) return;
    end(c);
    x->started = 0;
}

static void nccl_broadcast(pmoe_comm *c, float *buf, int64_t count, int root) {
    nccl_impl *n = impl_of(c);
    begin(c);
    NCCL_CHECK(c, ncclBroadcast(buf, buf, (size_t)count, ncclFloat, root, n->nccl, n->stream));
    end(c);
}

/* Before a control op: an NCCL failure that happened asynchronously (a peer
 * gone, a network error) ends the job here rather than in a later hang. */
static void check_async(pmoe_comm *c) {
    nccl_impl *n = impl_of(c);
    ncclResult_t async = ncclSuccess;
    NCCL_CHECK(c, ncclCommGetAsyncError(n->nccl, &async));
    if (async != ncclSuccess && async != ncclInProgress)
        pmoe_comm_failf(c, "NCCL reported an asynchronous error: %s: %s", ncclGetErrorString(async),
                        ncclGetLastError(n->nccl));
}

static void nccl_agree_min(pmoe_comm *c, int *values, int count) {
    check_async(c);
    impl_of(c)->mpi->agree_min(impl_of(c)->mpi, values, count);
}

static void nccl_sum_i64(pmoe_comm *c, int64_t *values, int count) {
    check_async(c);
    impl_of(c)->mpi->sum_i64(impl_of(c)->mpi, values, count);
}

static void nccl_host_broadcast(pmoe_comm *c, void *buf, size_t bytes, int root) {
    check_async(c);
    impl_of(c)->mpi->host_broadcast(impl_of(c)->mpi, buf, bytes, root);
}

static void nccl_host_gather(pmoe_comm *c, const void *send, void *recv, size_t bytes, int root) {
    check_async(c);
    impl_of(c)->mpi->host_gather(impl_of(c)->mpi, send, recv, bytes, root);
}

static void nccl_barrier(pmoe_comm *c) {
    check_async(c);
    impl_of(c)->mpi->barrier(impl_of(c)->mpi);
}

static void nccl_destroy(pmoe_comm *c) {
    nccl_impl *n = impl_of(c);
    if (n->stream) cudaStreamSynchronize(n->stream);
    if (n->nccl) {
        ncclCommFinalize(n->nccl);
        ncclCommDestroy(n->nccl);
    }
    if (n->ready) cudaEventDestroy(n->ready);
    if (n->done) cudaEventDestroy(n->done);
    if (n->stream) cudaStreamDestroy(n->stream);
    pmoe_comm_close(n->mpi);
    free(n);
    free(c);
}

/* A second NCCL communicator over a split of the MPI one, on the same
 * device and compute stream (ncclCommSplit needs NCCL 2.18; this needs
 * only what the first one did). */
static pmoe_status nccl_split(pmoe_comm *c, int color, int key, pmoe_comm **out, pmoe_error *err) {
    nccl_impl *n = impl_of(c);
    pmoe_comm *part = NULL;
    pmoe_status s = n->mpi->split(n->mpi, color, key, &part, err);
    if (s) return s;
    s = pmoe_comm_nccl_open(part, n->device, n->compute, out, err);
    if (s) {
        pmoe_comm_close(part);
        return s;
    }
    (*out)->distributed = c->distributed;
    return PMOE_OK;
}

pmoe_status pmoe_comm_nccl_open(pmoe_comm *mpi, int cuda_device, void *cuda_stream, pmoe_comm **out,
                                pmoe_error *err) {
    *out = NULL;
    if (mpi->kind != PMOE_COMM_MPI)
        return pmoe_fail(err, PMOE_ERR_INTERNAL, "the NCCL communicator needs an MPI one to start");
    pmoe_comm *c = calloc(1, sizeof *c);
    nccl_impl *n = calloc(1, sizeof *n);
    if (!c || !n) {
        free(c);
        free(n);
        return pmoe_fail(err, PMOE_ERR_OOM, "cannot allocate the communicator");
    }
    *c = *mpi; /* rank, size, local rank */
    c->impl = n;
    c->name = "nccl";
    c->kind = PMOE_COMM_NCCL;
    c->abort = nccl_abort;
    n->mpi = mpi;
    n->device = cuda_device;
    n->compute = (cudaStream_t)cuda_stream;
    /* From here on a failure aborts the job: the peers are inside the same
     * bootstrap (the id broadcast, ncclCommInitRank). */
    CUDA_CHECK(c, cudaSetDevice(cuda_device));
    ncclUniqueId id;
    memset(&id, 0, sizeof id);
    if (c->rank == 0) NCCL_CHECK(c, ncclGetUniqueId(&id));
    mpi->host_broadcast(mpi, &id, sizeof id, 0);
    NCCL_CHECK(c, ncclCommInitRank(&n->nccl, c->size, id, c->rank));
    CUDA_CHECK(c, cudaStreamCreateWithFlags(&n->stream, cudaStreamNonBlocking));
#ifdef PMOE_HAVE_NVTX
    nvtxNameCudaStreamA(n->stream, "pmoe nccl exchange");
#endif
    CUDA_CHECK(c, cudaEventCreateWithFlags(&n->ready, cudaEventDisableTiming));
    CUDA_CHECK(c, cudaEventCreateWithFlags(&n->done, cudaEventDisableTiming));
    c->all_to_all = nccl_all_to_all;
    c->all_gather = nccl_all_gather;
    c->all_reduce_sum = nccl_all_reduce_sum;
    c->broadcast = nccl_broadcast;
    c->all_reduce_start = nccl_all_reduce_start;
    c->all_reduce_wait = nccl_all_reduce_wait;
    c->agree_min = nccl_agree_min;
    c->sum_i64 = nccl_sum_i64;
    c->host_broadcast = nccl_host_broadcast;
    c->host_gather = nccl_host_gather;
    c->barrier = nccl_barrier;
    c->split = nccl_split;
    c->destroy = nccl_destroy;
    *out = c;
    return PMOE_OK;
}
