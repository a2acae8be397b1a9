/* standin_nccl.c: the NCCL calls pmoe makes, on the CPU, against the real
 * nccl.h.
 *
 * One rank: every collective is a copy from the send buffer to the receive
 * buffer (in place: nothing), enqueued on the given stream; a send to
 * itself must be paired with a receive inside one group (ncclGroupStart /
 * ncclGroupEnd), matched in posting order, with the same count and type,
 * as NCCL requires; outside a group it would deadlock, and is refused as
 * ncclInvalidUsage. Buffers must be device memory of the stated size.
 * After ncclCommAbort or ncclCommDestroy the handle is dead.
 *
 * Several ranks: one thread per rank in this process, started with
 * standin_ranks_run (standin_ranks.h); the ranks share the one stand-in
 * device. ncclCommInitRank meets every rank of the unique id. A collective
 * (and a group's sends and receives, at ncclGroupEnd) runs the device's
 * queued work, then meets the other ranks' same call; the last to arrive
 * checks that the calls agree (the same op, count, root; each send matched
 * by the peer's receive, in posting order, of the same size) and moves the
 * data. So the ranks' collectives happen in call order, which NCCL allows
 * (every rank issues them in the same order), and the sum is in rank order
 * in double, rounded once: the MPI communicator's bits. A group meets
 * every rank of its one communicator, as pmoe's all-to-all does. A rank's
 * ncclCommAbort wakes its waiting peers with ncclRemoteError. */
#include <nccl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "standin.h"
#include "standin_internal.h"
#include "standin_ranks.h"

#define COMM_MAGIC 0x4e43434cu
#define PENDING_MAX 256

/* The ranks of one unique id (several ranks only). */
typedef struct clique {
    char id[sizeof(((ncclUniqueId *)0)->internal)];
    int ranks, members;
    standin_meeting *meeting;
    struct clique *next;
} clique;

struct ncclComm {
    uint32_t magic;
    int rank, ranks;
    clique *clique; /* NULL for one rank */
    char last_error[256];
};

typedef struct pending {
    int is_send;
    void *buf;
    size_t bytes;
    cudaStream_t stream;
    int peer;
    struct ncclComm *comm;
} pending;

/* Group state is the calling thread's, as in NCCL. */
static __thread int group_depth;
static __thread pending posted[PENDING_MAX];
static __thread int posted_count;
static __thread ncclResult_t group_error;
static clique *cliques; /* read and changed by rank threads holding the baton */
static unsigned long ids_made;

static struct ncclComm *comm_of(ncclComm_t c) { return c && c->magic == COMM_MAGIC ? c : NULL; }

static ncclResult_t fail(struct ncclComm *c, ncclResult_t r, const char *what) {
    if (c) snprintf(c->last_error, sizeof c->last_error, "%s", what);
    if (group_depth && !group_error) group_error = r;
    return r;
}

const char *ncclGetErrorString(ncclResult_t result) {
    switch (result) {
    case ncclSuccess: return "no error";
    case ncclUnhandledCudaError:
        return "unhandled cuda error (run with NCCL_DEBUG=INFO for details)";
    case ncclSystemError: return "unhandled system error (run with NCCL_DEBUG=INFO for details)";
    case ncclInternalError:
        return "internal error - please report this issue to the NCCL developers";
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
    snprintf(id->internal, sizeof id->internal, "pmoe-standin %lu", ++ids_made);
    return ncclSuccess;
}

static int join_nothing(void **entries, int ranks, void *user) {
    (void)entries, (void)ranks, (void)user;
    return ncclSuccess;
}

/* The clique of id, made by its first member; NULL when out of memory. */
static clique *clique_join(const char *id, int ranks) {
    for (clique *q = cliques; q; q = q->next)
        if (strcmp(q->id, id) == 0) return q;
    clique *q = calloc(1, sizeof *q);
    if (!q || !(q->meeting = standin_meeting_new(ranks))) {
        free(q);
        return NULL;
    }
    snprintf(q->id, sizeof q->id, "%s", id);
    q->ranks = ranks;
    q->next = cliques;
    cliques = q;
    return q;
}

static void clique_leave(clique *q) {
    if (!q || --q->members > 0) return;
    for (clique **at = &cliques; *at; at = &(*at)->next)
        if (*at == q) {
            *at = q->next;
            break;
        }
    standin_meeting_free(q->meeting);
    free(q);
}

ncclResult_t ncclCommInitRank(ncclComm_t *comm, int nranks, ncclUniqueId id, int rank) {
    if (!comm) return ncclInvalidArgument;
    *comm = NULL;
    if (strncmp(id.internal, "pmoe-standin ", 13) != 0) return ncclInvalidArgument;
    if (nranks < 1 || rank < 0 || rank >= nranks) return ncclInvalidArgument;
    if (standin_fault("ncclCommInitRank")) return ncclSystemError;
    struct ncclComm *c = calloc(1, sizeof *c);
    if (!c) return ncclSystemError;
    *c = (struct ncclComm){COMM_MAGIC, rank, nranks, NULL, ""};
    if (nranks > 1) { /* every rank of the id arrives before any returns */
        clique *q = clique_join(id.internal, nranks);
        if (!q || q->ranks != nranks) {
            free(c);
            return q ? ncclInvalidArgument : ncclSystemError;
        }
        q->members++;
        c->clique = q;
        ncclResult_t r =
            (ncclResult_t)standin_meet(q->meeting, rank, NULL, join_nothing, NULL, ncclRemoteError);
        if (r) {
            clique_leave(q);
            free(c);
            return r;
        }
    }
    *comm = c;
    return ncclSuccess;
}

static ncclResult_t release(ncclComm_t comm, int abort) {
    struct ncclComm *c = comm_of(comm);
    if (!c) return ncclInvalidArgument;
    if (abort && c->clique) standin_meeting_abort(c->clique->meeting);
    clique_leave(c->clique);
    c->magic = 0;
    free(c);
    return ncclSuccess;
}

ncclResult_t ncclCommFinalize(ncclComm_t comm) {
    return comm_of(comm) ? ncclSuccess : ncclInvalidArgument;
}
ncclResult_t ncclCommDestroy(ncclComm_t comm) { return release(comm, 0); }
ncclResult_t ncclCommAbort(ncclComm_t comm) { return release(comm, 1); }

ncclResult_t ncclCommCount(const ncclComm_t comm, int *count) {
    struct ncclComm *c = comm_of(comm);
    if (!c || !count) return ncclInvalidArgument;
    *count = c->ranks;
    return ncclSuccess;
}

ncclResult_t ncclCommUserRank(const ncclComm_t comm, int *rank) {
    struct ncclComm *c = comm_of(comm);
    if (!c || !rank) return ncclInvalidArgument;
    *rank = c->rank;
    return ncclSuccess;
}

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
    if (bytes &&
        ((a && !standin_device_range(a, bytes)) || (b && !standin_device_range(b, bytes)))) {
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

/* ---- several ranks: the meetings behind each call ---- */

typedef struct collective {
    int kind; /* 0 all-reduce, 1 broadcast, 2 all-gather */
    const float *send;
    float *recv;
    size_t count;
    int op, root;
} collective;

static int run_collective(void **entries, int ranks, void *user) {
    (void)user;
    collective **e = (collective **)entries;
    for (int r = 1; r < ranks; r++)
        if (e[r]->kind != e[0]->kind || e[r]->count != e[0]->count || e[r]->op != e[0]->op ||
            e[r]->root != e[0]->root) {
            standin_warn("NCCL: ranks 0 and %d called different collectives (or counts, ops, "
                         "roots) at the same point",
                         r);
            return ncclInvalidUsage;
        }
    const size_t count = e[0]->count, total = e[0]->kind == 2 ? count * (size_t)ranks : count;
    float *result = malloc((total ? total : 1) * sizeof(float));
    if (!result) return ncclSystemError;
    if (e[0]->kind == 0) { /* in rank order, in double, rounded once */
        for (size_t i = 0; i < count; i++) {
            double v = e[0]->send[i];
            for (int r = 1; r < ranks; r++) {
                const double x = e[r]->send[i];
                switch (e[0]->op) {
                case ncclProd: v *= x; break;
                case ncclMax: v = x > v ? x : v; break;
                case ncclMin: v = x < v ? x : v; break;
                default: v += x; break; /* ncclSum, ncclAvg */
                }
            }
            result[i] = (float)(e[0]->op == ncclAvg ? v / ranks : v);
        }
    } else if (e[0]->kind == 1) {
        memcpy(result, e[e[0]->root]->send, count * sizeof(float));
    } else {
        for (int r = 0; r < ranks; r++)
            memcpy(result + (size_t)r * count, e[r]->send, count * sizeof(float));
    }
    for (int r = 0; r < ranks; r++) memcpy(e[r]->recv, result, total * sizeof(float));
    free(result);
    return ncclSuccess;
}

/* A multi-rank call: the device's queued work runs (so the buffers hold
 * what the stream order gives them), then the ranks meet. */
static ncclResult_t meet(struct ncclComm *c, void *entry,
                         int (*act)(void **entries, int ranks, void *user)) {
    if (standin_drain_all()) return fail(c, ncclUnhandledCudaError, "the device has failed");
    ncclResult_t r =
        (ncclResult_t)standin_meet(c->clique->meeting, c->rank, entry, act, NULL, ncclRemoteError);
    if (r == ncclRemoteError) return fail(c, r, "a peer aborted the communicator");
    if (r) return fail(c, r, "the ranks' calls do not match");
    return ncclSuccess;
}

static ncclResult_t collective_op(const char *name, collective e, ncclDataType_t type,
                                  ncclComm_t comm, cudaStream_t stream) {
    struct ncclComm *c = comm_of(comm);
    standin_stream *s = NULL;
    ncclResult_t r = check_op(c, name, type, e.send, e.recv, e.count * sizeof(float), stream, &s);
    if (r) return r;
    if (!e.send || !e.recv) return fail(c, ncclInvalidArgument, "a NULL buffer");
    const size_t gathered = e.count * (size_t)c->ranks * sizeof(float);
    if (e.kind == 2 && gathered && !standin_device_range(e.recv, gathered)) {
        standin_warn("%s: the receive buffer of %zu bytes is not inside one device allocation",
                     name, gathered);
        return fail(c, ncclInvalidArgument, "a buffer is not device memory");
    }
    if (e.root < 0 || e.root >= c->ranks)
        return fail(c, ncclInvalidArgument, "root outside the ranks");
    if (c->ranks == 1) {
        enqueue_copy(s, e.recv, e.send, e.count * sizeof(float));
        return ncclSuccess;
    }
    if (group_depth)
        return fail(c, ncclInvalidUsage, "the stand-in groups sends and receives only");
    return meet(c, &e, run_collective);
}

ncclResult_t ncclAllReduce(const void *send, void *recv, size_t count, ncclDataType_t type,
                           ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream) {
    if (op != ncclSum && op != ncclProd && op != ncclMax && op != ncclMin && op != ncclAvg)
        return fail(comm_of(comm), ncclInvalidArgument, "unknown reduction");
    return collective_op("ncclAllReduce", (collective){0, send, recv, count, op, 0}, type, comm,
                         stream);
}

ncclResult_t ncclBroadcast(const void *send, void *recv, size_t count, ncclDataType_t type,
                           int root, ncclComm_t comm, cudaStream_t stream) {
    /* only the root's send buffer is read; the others may pass recv */
    return collective_op("ncclBroadcast", (collective){1, send ? send : recv, recv, count, 0, root},
                         type, comm, stream);
}

ncclResult_t ncclAllGather(const void *send, void *recv, size_t count, ncclDataType_t type,
                           ncclComm_t comm, cudaStream_t stream) {
    return collective_op("ncclAllGather", (collective){2, send, recv, count, 0, 0}, type, comm,
                         stream);
}

static ncclResult_t post(const char *name, int is_send, void *buf, size_t count,
                         ncclDataType_t type, int peer, ncclComm_t comm, cudaStream_t stream) {
    struct ncclComm *c = comm_of(comm);
    standin_stream *s = NULL;
    ncclResult_t r = check_op(c, name, type, buf, NULL, count * sizeof(float), stream, &s);
    if (r) return r;
    if (peer < 0 || peer >= c->ranks) return fail(c, ncclInvalidArgument, "peer outside the ranks");
    if (!group_depth && c->ranks == 1)
        return fail(c, ncclInvalidUsage, "a send to oneself outside a group deadlocks");
    if (!group_depth)
        return fail(c, ncclInvalidUsage, "the stand-in needs sends and receives grouped");
    if (posted_count && posted[0].comm != c)
        return fail(c, ncclInvalidUsage, "the stand-in groups one communicator's calls");
    if (posted_count == PENDING_MAX) return fail(c, ncclInternalError, "too many posted");
    posted[posted_count++] = (pending){is_send, buf, count * sizeof(float), stream, peer, c};
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

/* One rank's posted list, as a meeting entry. */
typedef struct posted_list {
    const pending *ops;
    int count;
} posted_list;

/* The k-th of rank r's sends to p, or p's receives from r (NULL: none). */
static const pending *nth(const posted_list *l, int is_send, int peer, int k) {
    for (int i = 0; i < l->count; i++)
        if (l->ops[i].is_send == is_send && l->ops[i].peer == peer && k-- == 0) return &l->ops[i];
    return NULL;
}

static int count_of(const posted_list *l, int is_send, int peer) {
    int n = 0;
    for (int i = 0; i < l->count; i++) n += l->ops[i].is_send == is_send && l->ops[i].peer == peer;
    return n;
}

/* Every rank's sends to each peer match that peer's receives from it, in
 * posting order and size; then all of them are delivered. */
static int run_exchange(void **entries, int ranks, void *user) {
    (void)user;
    posted_list **l = (posted_list **)entries;
    for (int from = 0; from < ranks; from++)
        for (int to = 0; to < ranks; to++) {
            const int sends = count_of(l[from], 1, to), recvs = count_of(l[to], 0, from);
            if (sends != recvs) {
                standin_warn("NCCL group: rank %d posts %d sends to rank %d, which posts %d "
                             "receives from it",
                             from, sends, to, recvs);
                return ncclInvalidUsage;
            }
            for (int k = 0; k < sends; k++)
                if (nth(l[from], 1, to, k)->bytes != nth(l[to], 0, from, k)->bytes) {
                    standin_warn("NCCL group: send %d from rank %d to rank %d has another size "
                                 "than its receive",
                                 k, from, to);
                    return ncclInvalidUsage;
                }
        }
    for (int from = 0; from < ranks; from++)
        for (int to = 0; to < ranks; to++)
            for (int k = 0, n = count_of(l[from], 1, to); k < n; k++) {
                const pending *s = nth(l[from], 1, to, k), *r = nth(l[to], 0, from, k);
                if (s->bytes && s->buf != r->buf) memmove(r->buf, s->buf, s->bytes);
            }
    return ncclSuccess;
}

/* One rank: pairs the k-th send with the k-th receive (its one peer, itself). */
static ncclResult_t deliver_to_self(void) {
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
    return ncclSuccess;
}

ncclResult_t ncclGroupEnd(void) {
    if (group_depth == 0) return ncclInvalidUsage;
    if (--group_depth) return ncclSuccess;
    if (group_error) return group_error;
    ncclResult_t r = ncclSuccess;
    if (posted_count && posted[0].comm->ranks > 1) {
        posted_list mine = {posted, posted_count};
        r = meet(posted[0].comm, &mine, run_exchange);
    } else {
        r = deliver_to_self();
    }
    posted_count = 0;
    return r;
}
