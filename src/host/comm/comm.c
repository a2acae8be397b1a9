/* comm.c: choosing a communicator, agreeing on outcomes, and the
 * single-process communicator (see comm.h).
 *
 * The single communicator is rank 0 of 1: its collectives are copies or
 * nothing at all, so code written for R ranks runs unchanged on one. The
 * model never calls its data ops (one process skips the exchange), but they
 * are real, so the communicator tests hold every implementation to the same
 * hand-computed answers. */
#include "comm/comm.h"
#include "core/host_memory.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the launcher's environment ---- */

/* Open MPI, MPICH/Hydra and Slurm's PMI/PMIx set these in every rank. */
static const char *const SIZE_VARS[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE",
                                        "MV2_COMM_WORLD_SIZE", NULL};
static const char *const RANK_VARS[] = {"OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK",
                                        "MV2_COMM_WORLD_RANK", NULL};

static int first_env_int(const char *const *names, int *out) {
    for (int i = 0; names[i]; i++) {
        const char *v = getenv(names[i]);
        if (v && *v) {
            *out = atoi(v);
            return 1;
        }
    }
    return 0;
}

int pmoe_comm_launched(void) {
    int size = 0, rank = 0;
    return first_env_int(SIZE_VARS, &size) || first_env_int(RANK_VARS, &rank);
}

int pmoe_comm_launch_rank(void) {
    int rank = 0;
    return first_env_int(RANK_VARS, &rank) ? rank : 0;
}

/* ---- single ---- */

static void single_all_to_all(pmoe_comm *c, const float *send, float *recv,
                              const pmoe_exchange_layout *l) {
    for (int j = 0; j < l->blocks; j++)
        memmove(recv + j * l->recv_block_stride, send + j * l->send_block_stride,
                (size_t)l->count * sizeof(float));
}

static void single_all_gather(pmoe_comm *c, const float *send, float *recv, int64_t count) {
    memmove(recv, send, (size_t)count * sizeof(float));
}

static void single_all_reduce_sum(pmoe_comm *c, float *buf, int64_t count) {}
static void single_broadcast(pmoe_comm *c, float *buf, int64_t count, int root) {}
static void single_all_reduce_wait(pmoe_comm *c) {}

/* The blocking form of all_reduce_start (mpi, single): each buffer now. */
void pmoe_comm_all_reduce_each(pmoe_comm *c, float *const *bufs, const int64_t *counts, int n) {
    for (int i = 0; i < n; i++) c->all_reduce_sum(c, bufs[i], counts[i]);
}
static void single_agree_min(pmoe_comm *c, int *values, int count) {}
static void single_sum_i64(pmoe_comm *c, int64_t *values, int count) {}
static void single_host_broadcast(pmoe_comm *c, void *buf, size_t bytes, int root) {}

static void single_host_gather(pmoe_comm *c, const void *send, void *recv, size_t bytes, int root) {
    memmove(recv, send, bytes);
}

static void single_barrier(pmoe_comm *c) {}

static void single_abort(pmoe_comm *c, int code, const char *message) {
    fprintf(stderr, "pmoe: error: %s\n", message);
    fflush(stderr);
    exit(code);
}

static void single_destroy(pmoe_comm *c) { free(c); }

static pmoe_status single_split(pmoe_comm *c, int color, int key, pmoe_comm **out,
                                pmoe_error *err) {
    (void)color;
    (void)key;
    pmoe_status s = pmoe_comm_single_open(out, err);
    if (!s) (*out)->distributed = c->distributed;
    return s;
}

void pmoe_comm_failf(pmoe_comm *c, const char *fmt, ...) {
    char message[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    c->abort(c, 1, message);
    exit(1); /* abort does not return; this keeps the compiler sure of it */
}

pmoe_status pmoe_comm_single_open(pmoe_comm **out, pmoe_error *err) {
    pmoe_comm *c = calloc(1, sizeof *c);
    if (!c) return pmoe_fail(err, PMOE_ERR_OOM, "cannot allocate the communicator");
    c->name = "single";
    c->kind = PMOE_COMM_SINGLE;
    c->rank = 0;
    c->size = 1;
    c->local_rank = 0;
    c->local_size = 1;
    c->distributed = 0;
    c->all_to_all = single_all_to_all;
    c->all_gather = single_all_gather;
    c->all_reduce_sum = single_all_reduce_sum;
    c->broadcast = single_broadcast;
    c->all_reduce_start = pmoe_comm_all_reduce_each;
    c->all_reduce_wait = single_all_reduce_wait;
    c->agree_min = single_agree_min;
    c->sum_i64 = single_sum_i64;
    c->host_broadcast = single_host_broadcast;
    c->host_gather = single_host_gather;
    c->barrier = single_barrier;
    c->split = single_split;
    c->abort = single_abort;
    c->destroy = single_destroy;
    *out = c;
    return PMOE_OK;
}

/* ---- the exchange's layouts ---- */

pmoe_exchange_layout pmoe_exchange_to_owners(int64_t block, int local_experts, int ranks) {
    return (pmoe_exchange_layout){block, local_experts, local_experts * block,
                                  block, block,         ranks * block};
}

pmoe_exchange_layout pmoe_exchange_from_owners(int64_t block, int local_experts, int ranks) {
    return (pmoe_exchange_layout){block,         local_experts,         block,
                                  ranks * block, local_experts * block, block};
}

/* ---- choosing ---- */

pmoe_status pmoe_comm_open(pmoe_comm_kind kind, pmoe_comm **out, pmoe_error *err) {
    *out = NULL;
    switch (kind) {
    case PMOE_COMM_SINGLE: return pmoe_comm_single_open(out, err);
    case PMOE_COMM_AUTO: {
        int size = 1;
        first_env_int(SIZE_VARS, &size);
        if (pmoe_comm_launched() && pmoe_comm_mpi_built()) break;
        if (size > 1) /* R copies of one run would write the same files */
            return pmoe_fail(err, PMOE_ERR_CONFIG,
                             "config: started as one of %d MPI ranks, but this build has no MPI "
                             "(install libopenmpi-dev and configure again), or set "
                             "train.comm = single to run each process alone",
                             size);
        return pmoe_comm_single_open(out, err);
    }
    case PMOE_COMM_NCCL:
        if (!pmoe_comm_nccl_built())
            return pmoe_fail(err, PMOE_ERR_CONFIG,
                             "config: train.comm = nccl: this build has no NCCL communicator "
                             "(it needs CUDA, NCCL and MPI at configure time); use mpi or auto");
        break;
    case PMOE_COMM_MPI:
        if (!pmoe_comm_mpi_built())
            return pmoe_fail(err, PMOE_ERR_CONFIG,
                             "config: train.comm = mpi: this build has no MPI (install "
                             "libopenmpi-dev and configure again); use single or auto");
        break;
    }
    pmoe_status s = pmoe_comm_mpi_open(out, err);
    if (s) return s;
    /* Named explicitly, the exchange runs even on one rank (to test it);
     * chosen automatically, one rank runs exactly as a single process. */
    (*out)->distributed = (*out)->size > 1 || kind == PMOE_COMM_MPI || kind == PMOE_COMM_NCCL;
    /* every memory check from here on counts on this rank's share of the node */
    pmoe_host_memory_set_ranks_on_node((*out)->local_size);
    return PMOE_OK;
}

pmoe_status pmoe_comm_use_device(pmoe_comm **comm, pmoe_comm_kind kind, int cuda_device,
                                 void *cuda_stream, pmoe_error *err) {
    pmoe_comm *c = *comm;
    if (kind == PMOE_COMM_NCCL && cuda_device < 0)
        return pmoe_fail(err, PMOE_ERR_CONFIG,
                         "config: train.comm = nccl moves GPU buffers and needs the CUDA backend "
                         "(train.device = cuda or auto on a machine with a GPU); use mpi for "
                         "the CPU");
    const int want = kind == PMOE_COMM_NCCL ||
                     (kind == PMOE_COMM_AUTO && c->kind == PMOE_COMM_MPI && c->size > 1 &&
                      cuda_device >= 0 && pmoe_comm_nccl_built());
    if (!want) return PMOE_OK;
    pmoe_comm *nccl = NULL;
    pmoe_status s = pmoe_comm_nccl_open(c, cuda_device, cuda_stream, &nccl, err);
    if (s) return s;
    nccl->distributed = c->distributed;
    *comm = nccl;
    return PMOE_OK;
}

void pmoe_comm_close(pmoe_comm *c) {
    if (c) c->destroy(c);
    pmoe_host_memory_set_ranks_on_node(1);
}

/* ---- agreeing ---- */

typedef struct agreed_error {
    int code;
    char message[sizeof(((pmoe_error *)0)->message)];
} agreed_error;

pmoe_status pmoe_comm_agree(pmoe_comm *c, pmoe_status mine, pmoe_error *err, int *values,
                            int count) {
    if (c->size == 1) return mine;
    enum { MOST = 16 };
    int v[MOST + 2];
    if (count > MOST) count = MOST; /* callers pass a handful */
    v[0] = mine ? c->rank : INT_MAX;
    v[1] = mine ? 1 : 0; /* its minimum is 1 when every rank failed */
    for (int i = 0; i < count; i++) v[2 + i] = values[i];
    c->agree_min(c, v, count + 2);
    for (int i = 0; i < count; i++) values[i] = v[2 + i];
    if (v[0] == INT_MAX) return PMOE_OK;
    agreed_error e;
    memset(&e, 0, sizeof e);
    if (c->rank == v[0]) {
        e.code = mine;
        snprintf(e.message, sizeof e.message, "%s", err ? err->message : "(no message)");
    }
    c->host_broadcast(c, &e, sizeof e, v[0]);
    char text[sizeof e.message];
    snprintf(text, sizeof text, "%s", e.message);
    if (v[1] == 1) /* everywhere (a bad key, say): rank 0's words, as one process says them */
        return pmoe_fail(err, (pmoe_status)e.code, "%s", text);
    return pmoe_fail(err, (pmoe_status)e.code, "rank %d of %d: %s", v[0], c->size, text);
}
