/* comm_mpi.c: the MPI communicator (CPU buffers); see comm.h.
 *
 * Each communicator is a duplicate of MPI_COMM_WORLD with errors returned
 * rather than fatal, so a failing call is reported with this rank's number
 * and the call's name before the job is aborted. MPI itself is initialised
 * on the first open (MPI_THREAD_FUNNELED: only the main thread calls MPI;
 * OpenMP threads never do) and finalised at exit.
 *
 * The exchange is one MPI_Alltoall: a side whose blocks are not laid out
 * rank-major and contiguous is described by a vector datatype (blocks of
 * `count` floats, `block_stride` apart) resized to the rank stride, so MPI
 * gathers and scatters the blocks itself and nothing is packed by hand. */
#include <limits.h>
#include <mpi.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm/comm.h"

typedef struct mpi_impl {
    MPI_Comm comm;
    float *scratch; /* all_reduce_sum's workspace */
    size_t scratch_floats;
} mpi_impl;

static MPI_Comm comm_of(pmoe_comm *c) { return ((mpi_impl *)c->impl)->comm; }

int pmoe_comm_mpi_built(void) { return 1; }

/* Names the rank in the job (the world), not in a split communicator. */
static void abort_job(pmoe_comm *c, int code, const char *message) {
    int rank = c->rank, size = c->size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (size > 1) fprintf(stderr, "pmoe: rank %d of %d: error: %s\n", rank, size, message);
    else fprintf(stderr, "pmoe: error: %s\n", message);
    fflush(stderr);
    fflush(stdout);
    MPI_Abort(MPI_COMM_WORLD, code);
    exit(code); /* MPI_Abort does not return; this keeps the compiler sure of it */
}

#define MPI_CHECK(c, call)                                                                         \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        if (rc_ != MPI_SUCCESS) {                                                                  \
            char text_[MPI_MAX_ERROR_STRING];                                                      \
            int len_ = 0;                                                                          \
            MPI_Error_string(rc_, text_, &len_);                                                   \
            pmoe_comm_failf((c), "%s failed: %s (%s:%d)", #call, text_, __FILE__, __LINE__);       \
        }                                                                                          \
    } while (0)

/* MPI counts are ints; pmoe's are 64-bit. */
static int as_int(pmoe_comm *c, int64_t value, const char *what) {
    if (value < 0 || value > INT_MAX)
        pmoe_comm_failf(
            c,
            "%s = %lld does not fit MPI's int counts; use fewer samples per rank or the "
            "nccl communicator",
            what, (long long)value);
    return (int)value;
}

/* One side of an exchange: a plain run of blocks * count floats when the
 * blocks of a rank are contiguous and ranks follow each other, else a
 * resized vector type. *type is MPI_DATATYPE_NULL when no type was made. */
static void side_type(pmoe_comm *c, const pmoe_exchange_layout *l, int64_t rank_stride,
                      int64_t block_stride, MPI_Datatype *type, int *count) {
    const int64_t per_rank = l->count * l->blocks;
    if (rank_stride == per_rank && (l->blocks == 1 || block_stride == l->count)) {
        *type = MPI_DATATYPE_NULL;
        *count = as_int(c, per_rank, "floats per rank of an exchange");
        return;
    }
    MPI_Datatype vector;
    MPI_CHECK(c, MPI_Type_vector(l->blocks, as_int(c, l->count, "floats per block"),
                                 as_int(c, block_stride, "an exchange's block stride"), MPI_FLOAT,
                                 &vector));
    MPI_CHECK(c, MPI_Type_create_resized(vector, 0, (MPI_Aint)rank_stride * (MPI_Aint)sizeof(float),
                                         type));
    MPI_CHECK(c, MPI_Type_commit(type));
    MPI_CHECK(c, MPI_Type_free(&vector));
    *count = 1;
}

static void mpi_all_to_all(pmoe_comm *c, const float *send, float *recv,
                           const pmoe_exchange_layout *l) {
    MPI_Datatype st, rt;
    int sn, rn;
    side_type(c, l, l->send_rank_stride, l->send_block_stride, &st, &sn);
    side_type(c, l, l->recv_rank_stride, l->recv_block_stride, &rt, &rn);
    MPI_CHECK(c, MPI_Alltoall(send, sn, st == MPI_DATATYPE_NULL ? MPI_FLOAT : st, recv, rn,
                              rt == MPI_DATATYPE_NULL ? MPI_FLOAT : rt, comm_of(c)));
    if (st != MPI_DATATYPE_NULL) MPI_CHECK(c, MPI_Type_free(&st));
    if (rt != MPI_DATATYPE_NULL) MPI_CHECK(c, MPI_Type_free(&rt));
}

static void mpi_all_gather(pmoe_comm *c, const float *send, float *recv, int64_t count) {
    const int n = as_int(c, count, "floats per rank of an all-gather");
    MPI_CHECK(c, MPI_Allgather(send, n, MPI_FLOAT, recv, n, MPI_FLOAT, comm_of(c)));
}

static float *scratch(pmoe_comm *c, size_t floats) {
    mpi_impl *m = c->impl;
    if (floats > m->scratch_floats) {
        free(m->scratch);
        m->scratch = malloc(floats * sizeof(float));
        if (!m->scratch)
            pmoe_comm_failf(c, "out of host memory: %zu bytes for an all-reduce",
                            floats * sizeof(float));
        m->scratch_floats = floats;
    }
    return m->scratch;
}

/* Reduce-scatter by all-to-all, each chunk summed by its owner in rank order
 * (in double, rounded once), then all-gather: every rank ends with the same
 * floats, and the order of the sums never depends on sizes or algorithms. */
static void mpi_all_reduce_sum(pmoe_comm *c, float *buf, int64_t count) {
    const int R = c->size;
    if (R == 1 || count == 0) return;
    const int64_t chunk = (count + R - 1) / R;
    float *padded = scratch(c, (size_t)(3 * R * chunk));
    float *gathered = padded + R * chunk, *mine = gathered + R * chunk;
    memcpy(padded, buf, (size_t)count * sizeof(float));
    memset(padded + count, 0, (size_t)(R * chunk - count) * sizeof(float));
    const int n = as_int(c, chunk, "floats per rank of an all-reduce");
    /* gathered[p * chunk + i] = rank p's element (my chunk) i */
    MPI_CHECK(c, MPI_Alltoall(padded, n, MPI_FLOAT, gathered, n, MPI_FLOAT, comm_of(c)));
    for (int64_t i = 0; i < chunk; i++) {
        double sum = gathered[i];
        for (int p = 1; p < R; p++) sum += gathered[p * chunk + i];
        mine[i] = (float)sum;
    }
    MPI_CHECK(c, MPI_Allgather(mine, n, MPI_FLOAT, padded, n, MPI_FLOAT, comm_of(c)));
    memcpy(buf, padded, (size_t)count * sizeof(float));
}

static void mpi_broadcast(pmoe_comm *c, float *buf, int64_t count, int root) {
    MPI_CHECK(
        c, MPI_Bcast(buf, as_int(c, count, "floats of a broadcast"), MPI_FLOAT, root, comm_of(c)));
}

static void mpi_all_reduce_wait(pmoe_comm *c) {}

static void mpi_agree_min(pmoe_comm *c, int *values, int count) {
    MPI_CHECK(c, MPI_Allreduce(MPI_IN_PLACE, values, count, MPI_INT, MPI_MIN, comm_of(c)));
}

static void mpi_sum_i64(pmoe_comm *c, int64_t *values, int count) {
    MPI_CHECK(c, MPI_Allreduce(MPI_IN_PLACE, values, count, MPI_INT64_T, MPI_SUM, comm_of(c)));
}

/* Host messages go in pieces of at most 1 GiB, so sizes past int are fine. */
enum { PIECE = 1 << 30 };

static void mpi_host_broadcast(pmoe_comm *c, void *buf, size_t bytes, int root) {
    for (size_t at = 0; at < bytes; at += PIECE) {
        const size_t n = bytes - at < PIECE ? bytes - at : PIECE;
        MPI_CHECK(c, MPI_Bcast((char *)buf + at, (int)n, MPI_BYTE, root, comm_of(c)));
    }
}

static void mpi_host_gather(pmoe_comm *c, const void *send, void *recv, size_t bytes, int root) {
    if (bytes <= PIECE) {
        MPI_CHECK(c, MPI_Gather(send, (int)bytes, MPI_BYTE, recv, (int)bytes, MPI_BYTE, root,
                                comm_of(c)));
        return;
    }
    /* Larger: each rank's piece in turn (rank-major in recv). */
    for (int p = 0; p < c->size; p++)
        for (size_t at = 0; at < bytes; at += PIECE) {
            const int n = (int)(bytes - at < PIECE ? bytes - at : PIECE);
            if (p == root && c->rank == root)
                memcpy((char *)recv + (size_t)p * bytes + at, (const char *)send + at, (size_t)n);
            else if (c->rank == p)
                MPI_CHECK(c, MPI_Send((const char *)send + at, n, MPI_BYTE, root, 0, comm_of(c)));
            else if (c->rank == root)
                MPI_CHECK(c, MPI_Recv((char *)recv + (size_t)p * bytes + at, n, MPI_BYTE, p, 0,
                                      comm_of(c), MPI_STATUS_IGNORE));
        }
}

static void mpi_barrier(pmoe_comm *c) { MPI_CHECK(c, MPI_Barrier(comm_of(c))); }

static void mpi_destroy(pmoe_comm *c) {
    mpi_impl *m = c->impl;
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Comm_free(&m->comm);
    free(m->scratch);
    free(m);
    free(c);
}

static void finalize_at_exit(void) {
    int initialized = 0, finalized = 0;
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    if (initialized && !finalized) MPI_Finalize();
}

static pmoe_status wrap(MPI_Comm comm, pmoe_comm **out, pmoe_error *err);

static pmoe_status mpi_split(pmoe_comm *c, int color, int key, pmoe_comm **out, pmoe_error *err) {
    MPI_Comm part;
    MPI_CHECK(c, MPI_Comm_split(comm_of(c), color, key, &part));
    pmoe_status s = wrap(part, out, err);
    if (s) {
        MPI_Comm_free(&part);
        return s;
    }
    (*out)->distributed = c->distributed;
    return PMOE_OK;
}

pmoe_status pmoe_comm_mpi_open(pmoe_comm **out, pmoe_error *err) {
    int initialized = 0, finalized = 0;
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    if (finalized) return pmoe_fail(err, PMOE_ERR_INTERNAL, "MPI was already finalised");
    if (!initialized) {
        int provided = 0;
        if (MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
            return pmoe_fail(err, PMOE_ERR_IO,
                             "MPI_Init failed (is this process started by mpirun, and can it "
                             "reach the other ranks?)");
        atexit(finalize_at_exit);
    }
    MPI_Comm world;
    if (MPI_Comm_dup(MPI_COMM_WORLD, &world) != MPI_SUCCESS)
        return pmoe_fail(err, PMOE_ERR_IO, "MPI_Comm_dup of the world failed");
    pmoe_status s = wrap(world, out, err);
    if (s) MPI_Comm_free(&world);
    return s;
}

/* A pmoe_comm that owns `comm` (a duplicate or a split of the world). */
static pmoe_status wrap(MPI_Comm comm, pmoe_comm **out, pmoe_error *err) {
    pmoe_comm *c = calloc(1, sizeof *c);
    mpi_impl *m = calloc(1, sizeof *m);
    if (!c || !m) {
        free(c);
        free(m);
        return pmoe_fail(err, PMOE_ERR_OOM, "cannot allocate the communicator");
    }
    c->impl = m;
    c->name = "mpi";
    c->kind = PMOE_COMM_MPI;
    c->abort = abort_job;
    m->comm = comm;
    MPI_Comm_rank(comm, &c->rank);
    MPI_Comm_size(comm, &c->size);
    MPI_CHECK(c, MPI_Comm_set_errhandler(m->comm, MPI_ERRORS_RETURN));
    MPI_Comm node;
    MPI_CHECK(c, MPI_Comm_split_type(m->comm, MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL, &node));
    MPI_Comm_rank(node, &c->local_rank);
    MPI_Comm_size(node, &c->local_size);
    MPI_Comm_free(&node);
    c->distributed = c->size > 1;
    c->all_to_all = mpi_all_to_all;
    c->all_gather = mpi_all_gather;
    c->all_reduce_sum = mpi_all_reduce_sum;
    c->broadcast = mpi_broadcast;
    c->all_reduce_start = pmoe_comm_all_reduce_each;
    c->all_reduce_wait = mpi_all_reduce_wait;
    c->agree_min = mpi_agree_min;
    c->sum_i64 = mpi_sum_i64;
    c->host_broadcast = mpi_host_broadcast;
    c->host_gather = mpi_host_gather;
    c->barrier = mpi_barrier;
    c->split = mpi_split;
    c->destroy = mpi_destroy;
    *out = c;
    return PMOE_OK;
}
