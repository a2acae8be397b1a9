/* comm.h: the communicator: how the ranks of an expert-parallel job move data.
 *
 * One small table of operations with three implementations, chosen at run
 * time (train.comm):
 *   single  rank 0 of 1; always built. Its data ops copy host memory.
 *   mpi     CPU buffers over MPI (built when CMake finds MPI).
 *   nccl    GPU buffers over NCCL on a dedicated CUDA stream; bootstrapped
 *           over MPI (the NCCL unique id is an MPI broadcast), and its control
 *           ops go over MPI (built when CUDA, NCCL and MPI are all found).
 * The struct exists in every build (a build without MPI links stubs that
 * fail to open with a message), so model and training code hold a
 * pmoe_comm * and never an #ifdef. Nothing here is specific to a model: the
 * equal-split exchange with its block layout serves any pMoE layer (the
 * two-layer model today, WRN-pMoE's layer later).
 *
 * Two kinds of operations:
 * - data ops, on backend memory (host memory for single and mpi, device
 *   memory for nccl): all_to_all, all_gather, all_reduce_sum, broadcast. On
 *   nccl they are asynchronous, ordered after the work already queued on the
 *   bound compute stream, and work queued after them waits for them.
 * - control ops, on host memory: agree_min, sum_i64, host_broadcast,
 *   host_gather, barrier.
 * Every op is collective: all ranks call it in the same order. A transport
 * failure cannot be undone (the peers sit inside the same collective and
 * would wait forever), so a communicator that sees one prints
 * "pmoe: rank r of R: error: <call>: <cause>" and aborts the whole job
 * (MPI_Abort; on nccl ncclCommAbort first). That is the one place where pmoe
 * library code ends the process; errors a rank finds on its own (a missing
 * file) are instead agreed with pmoe_comm_agree() and returned on every rank.
 *
 * Determinism: all_reduce_sum on mpi reduces in a fixed order, by rank:
 * element i of the result is (float)((((double)x_0[i] + x_1[i]) + x_2[i]) +
 * ... + x_{R-1}[i]) on every rank, whatever the message sizes (it is a
 * reduce-scatter by all-to-all, summed in that order by the chunk's owner,
 * then an all-gather: the bandwidth of a ring all-reduce). nccl uses
 * ncclAllReduce: identical on every rank and from run to run for a fixed
 * rank count and topology, but in NCCL's order (ring or tree), not by rank. */
#ifndef PMOE_COMM_H
#define PMOE_COMM_H

#include <stddef.h>
#include <stdint.h>

#include "pmoe/config.h"
#include "pmoe/status.h"

typedef struct pmoe_comm pmoe_comm;

/* An equal-split all-to-all, in `blocks` blocks of `count` floats per peer:
 *   block j for rank q is read from  send + q * send_rank_stride + j * send_block_stride,
 *   block j from rank p is written to recv + p * recv_rank_stride + j * recv_block_stride
 * (strides in floats). blocks = 1 with both rank strides = count is the
 * plain MPI_Alltoall; more blocks let one call transpose (rank, block)
 * layouts, which is what keeps an expert's rows in global sample order. */
typedef struct pmoe_exchange_layout {
    int64_t count;
    int blocks;
    int64_t send_rank_stride, send_block_stride;
    int64_t recv_rank_stride, recv_block_stride;
} pmoe_exchange_layout;

/* The equal-split exchange of a pMoE layer over `ranks` ranks that each own
 * `local_experts` experts, `block` floats per (expert, rank): to the owners,
 * every rank's k x (b rows) x width (expert-major) becomes the owner's
 * local_experts x (ranks b rows) x width, block j of rank q's send being
 * expert q local_experts + j and rank p's block landing at rows p b .., so
 * an expert's rows stay in global sample order; from the owners is the
 * inverse. */
pmoe_exchange_layout pmoe_exchange_to_owners(int64_t block, int local_experts, int ranks);
pmoe_exchange_layout pmoe_exchange_from_owners(int64_t block, int local_experts, int ranks);

struct pmoe_comm {
    const char *name; /* "single", "mpi", "nccl" */
    pmoe_comm_kind kind;
    int rank, size;             /* in the job */
    int local_rank, local_size; /* on this node (MPI_COMM_TYPE_SHARED; 1 without MPI): the
                                   GPU a rank takes is its local rank, and pmoe_comm_open
                                   gives each rank 1/local_size of the node's memory
                                   (core/host_memory.h) */
    /* 1 when the model must exchange through this communicator: more than one
     * rank, or mpi / nccl asked for by name (so that one rank runs the
     * exchange path too, to test it); 0 for single and an automatic one-rank
     * choice, where the model skips the exchange and runs exactly as alone. */
    int distributed;

    /* data ops (backend memory) */
    void (*all_to_all)(pmoe_comm *c, const float *send, float *recv,
                       const pmoe_exchange_layout *layout);
    /* recv (size * count) = every rank's send (count), in rank order */
    void (*all_gather)(pmoe_comm *c, const float *send, float *recv, int64_t count);
    /* in place; identical on every rank (see above for the order) */
    void (*all_reduce_sum)(pmoe_comm *c, float *buf, int64_t count);
    void (*broadcast)(pmoe_comm *c, float *buf, int64_t count, int root);
    /* A bucket of the gradient all-reduce, to overlap the backward pass:
     * each of the n buffers summed in place as all_reduce_sum sums it,
     * ordered after the work already queued, but the work queued after the
     * call does NOT wait for it (nccl: one NCCL group on the communicator's
     * stream) until all_reduce_wait, which orders every started bucket
     * before the work queued after it. mpi and single sum at once (a
     * blocking call, so the CPU path is the plain one) and wait does
     * nothing. */
    void (*all_reduce_start)(pmoe_comm *c, float *const *bufs, const int64_t *counts, int n);
    void (*all_reduce_wait)(pmoe_comm *c);

    /* control ops (host memory) */
    void (*agree_min)(pmoe_comm *c, int *values, int count);   /* element-wise minimum */
    void (*sum_i64)(pmoe_comm *c, int64_t *values, int count); /* exact sums */
    void (*host_broadcast)(pmoe_comm *c, void *buf, size_t bytes, int root);
    /* root's recv (size * bytes) = every rank's send (bytes), in rank order */
    void (*host_gather)(pmoe_comm *c, const void *send, void *recv, size_t bytes, int root);
    void (*barrier)(pmoe_comm *c);

    /* A new communicator over the ranks that pass the same `color`, ranked
     * by `key` (ties by rank): MPI_Comm_split, for nccl a second NCCL
     * communicator bootstrapped over the split MPI one. Collective over c;
     * the new one is closed with pmoe_comm_close, before c. Its
     * `distributed` is c's. Expert parallelism's groups and replica sets
     * (model.h) are made this way. */
    pmoe_status (*split)(pmoe_comm *c, int color, int key, pmoe_comm **out, pmoe_error *err);

    /* Prints "pmoe: rank r of R: error: message" (one rank: "pmoe: error:
     * message") and ends the job with exit code `code`. Does not return. */
    void (*abort)(pmoe_comm *c, int code, const char *message);
    void (*destroy)(pmoe_comm *c);
    void *impl;
};

/* Formats a message and calls c->abort(c, 1, message): for a failed call
 * inside an implementation. Does not return. */
void pmoe_comm_failf(pmoe_comm *c, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3), noreturn))
#endif
    ;

/* all_reduce_start as a blocking loop of all_reduce_sum (mpi and single
 * use it; their all_reduce_wait does nothing). */
void pmoe_comm_all_reduce_each(pmoe_comm *c, float *const *bufs, const int64_t *counts, int n);

/* Which implementations this build holds. */
int pmoe_comm_mpi_built(void);
int pmoe_comm_nccl_built(void);

/* Whether an MPI launcher (mpirun, srun with PMI) started this process, read
 * from its environment (OMPI_COMM_WORLD_SIZE, PMI_SIZE, PMIX_RANK, ...), and
 * the rank it gave (0 when not launched). Never initialises MPI. */
int pmoe_comm_launched(void);
int pmoe_comm_launch_rank(void);

/* The process-level communicator for train.comm:
 *   single  rank 0 of 1;
 *   mpi     MPI (fails with a message in a build without it);
 *   nccl    MPI for now (ranks, local ranks), upgraded to NCCL by
 *           pmoe_comm_use_device() once the CUDA backend exists;
 *   auto    MPI when an MPI launcher started us and MPI is built, else single.
 * MPI is initialised on first use and finalised at exit, so one process may
 * open and close communicators many times (each a duplicate of the world). */
pmoe_status pmoe_comm_open(pmoe_comm_kind kind, pmoe_comm **out, pmoe_error *err);

/* After the backend exists: replaces *comm by an NCCL communicator over the
 * same ranks when kind is nccl, or auto with more than one rank, a CUDA
 * backend (cuda_device >= 0) and NCCL built. The NCCL communicator binds to
 * CUDA device cuda_device and orders its work with cuda_stream (the
 * backend's stream; NULL: the legacy default stream). kind = nccl without a
 * CUDA backend, or in a build without NCCL, is a config error. */
pmoe_status pmoe_comm_use_device(pmoe_comm **comm, pmoe_comm_kind kind, int cuda_device,
                                 void *cuda_stream, pmoe_error *err);

void pmoe_comm_close(pmoe_comm *c);

/* A control collective that turns per-rank outcomes into one. Every rank
 * passes its own status (with err filled when it failed) and `count` ints;
 * every rank returns the status of the lowest rank that failed, with err set
 * to "rank r of R: <that rank's message>" (just rank 0's message when every
 * rank failed: a cause they share), or PMOE_OK when none failed, and
 * values[] replaced by their minimum over the ranks. With one rank it
 * returns `mine` and leaves err and values as they are. */
pmoe_status pmoe_comm_agree(pmoe_comm *c, pmoe_status mine, pmoe_error *err, int *values,
                            int count);

/* The implementations' constructors (comm.c, comm_mpi.c, comm_nccl.c or their stubs). */
pmoe_status pmoe_comm_single_open(pmoe_comm **out, pmoe_error *err);
pmoe_status pmoe_comm_mpi_open(pmoe_comm **out, pmoe_error *err);
/* Takes over `mpi` (destroyed with the NCCL communicator) on success. */
pmoe_status pmoe_comm_nccl_open(pmoe_comm *mpi, int cuda_device, void *cuda_stream, pmoe_comm **out,
                                pmoe_error *err);

#endif
