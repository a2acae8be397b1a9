/* test_standin_nccl_ranks.c: comm_nccl.c with 2, 3 and 4 ranks inside one
 * process (one thread per rank, standin_ranks.h), on the stand-in's NCCL.
 *
 * Each rank has its own CUDA backend (stream, handles) on the one stand-in
 * device, and an "MPI" communicator over threads (control ops through the
 * stand-in's meetings) that pmoe_comm_nccl_open bootstraps from, as it
 * would from MPI: rank 0's unique id broadcast, ncclCommInitRank by every
 * rank. Then every data op of the NCCL communicator on device buffers that
 * start NaN: the plain all-to-all and the model's two blocked transposes
 * (each value names sender, receiver, block and element, so a misplaced
 * block shows), all-gather, the all-reduce sum (values whose float sum
 * depends on the order: NCCL here sums as the MPI communicator does, in
 * double in rank order, so the bits are MPI's), broadcast from the last
 * rank; and its control ops. Then the ranks close the communicator. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "comm/comm.h"
#include "cuda/cuda_backend.h"
#include "standin_ranks.h"
#include "test_util.h"

/* ---- an MPI-kind communicator over rank threads (control ops only) ---- */

typedef struct control {
    void *data;
    size_t bytes;
    int count, root;
    const void *send;
} control;

typedef struct thread_world {
    int ranks;
    standin_meeting *meeting;
} thread_world;

static thread_world world;

static int act_min(void **e, int ranks, void *user) {
    (void)user;
    control **c = (control **)e;
    int *out = c[0]->data;
    for (int r = 1; r < ranks; r++)
        for (int i = 0; i < c[0]->count; i++) {
            const int v = ((int *)c[r]->data)[i];
            if (v < out[i]) out[i] = v;
        }
    for (int r = 1; r < ranks; r++) memcpy(c[r]->data, out, (size_t)c[0]->count * sizeof(int));
    return 0;
}

static int act_sum(void **e, int ranks, void *user) {
    (void)user;
    control **c = (control **)e;
    int64_t *out = c[0]->data;
    for (int r = 1; r < ranks; r++)
        for (int i = 0; i < c[0]->count; i++) out[i] += ((int64_t *)c[r]->data)[i];
    for (int r = 1; r < ranks; r++) memcpy(c[r]->data, out, (size_t)c[0]->count * sizeof(int64_t));
    return 0;
}

static int act_broadcast(void **e, int ranks, void *user) {
    (void)user;
    control **c = (control **)e;
    for (int r = 0; r < ranks; r++)
        if (r != c[0]->root) memcpy(c[r]->data, c[c[0]->root]->data, c[0]->bytes);
    return 0;
}

static int act_gather(void **e, int ranks, void *user) {
    (void)user;
    control **c = (control **)e;
    unsigned char *out = c[c[0]->root]->data;
    for (int r = 0; r < ranks; r++) memcpy(out + (size_t)r * c[0]->bytes, c[r]->send, c[0]->bytes);
    return 0;
}

static int act_none(void **e, int ranks, void *user) {
    (void)e, (void)ranks, (void)user;
    return 0;
}

static void meet_control(pmoe_comm *c, control *mine, int (*act)(void **, int, void *)) {
    if (standin_meet(world.meeting, c->rank, mine, act, NULL, -1))
        c->abort(c, 1, "a peer aborted the thread communicator");
}

static void t_agree_min(pmoe_comm *c, int *v, int n) {
    control m = {v, 0, n, 0, NULL};
    meet_control(c, &m, act_min);
}
static void t_sum_i64(pmoe_comm *c, int64_t *v, int n) {
    control m = {v, 0, n, 0, NULL};
    meet_control(c, &m, act_sum);
}
static void t_host_broadcast(pmoe_comm *c, void *buf, size_t bytes, int root) {
    control m = {buf, bytes, 0, root, NULL};
    meet_control(c, &m, act_broadcast);
}
static void t_host_gather(pmoe_comm *c, const void *send, void *recv, size_t bytes, int root) {
    control m = {recv, bytes, 0, root, send};
    meet_control(c, &m, act_gather);
}
static void t_barrier(pmoe_comm *c) {
    control m = {0};
    meet_control(c, &m, act_none);
}
static void t_abort(pmoe_comm *c, int code, const char *message) {
    fprintf(stderr, "pmoe: rank %d of %d: error: %s\n", c->rank, c->size, message);
    fflush(stderr);
    exit(code); /* the whole test fails, as MPI_Abort ends the job */
}
static void t_destroy(pmoe_comm *c) { free(c); }

static pmoe_comm *thread_comm(int rank) {
    pmoe_comm *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    *c = (pmoe_comm){.name = "threads",
                     .kind = PMOE_COMM_MPI,
                     .rank = rank,
                     .size = world.ranks,
                     .local_rank = 0,
                     .local_size = 1,
                     .distributed = 1,
                     .agree_min = t_agree_min,
                     .sum_i64 = t_sum_i64,
                     .host_broadcast = t_host_broadcast,
                     .host_gather = t_host_gather,
                     .barrier = t_barrier,
                     .abort = t_abort,
                     .destroy = t_destroy};
    return c;
}

/* ---- each rank's checks ---- */

static float code(int from, int to, int j, int i) {
    return (float)(from * 1000000 + to * 10000 + j * 100 + i);
}

typedef struct rank_ctx {
    pmoe_backend *be;
    pmoe_comm *c;
    int rank, ranks, failures;
} rank_ctx;

#define RANK_CHECK(x, cond, ...)                                                                   \
    do {                                                                                           \
        if (!(cond) && (x)->failures++ < 10) {                                                     \
            fprintf(stderr, "FAIL (rank %d) %s:%d: ", (x)->rank, __FILE__, __LINE__);              \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)

static float *device_from(rank_ctx *x, const float *host, int64_t n) {
    pmoe_error err = {PMOE_OK, ""};
    void *d = NULL;
    if (x->be->alloc(x->be, (size_t)n * 4, &d, &err) ||
        (host && x->be->copy_in(x->be, d, host, (size_t)n * 4, &err))) {
        fprintf(stderr, "rank %d: %s\n", x->rank, err.message);
        exit(1);
    }
    return d;
}

static float *host_from(rank_ctx *x, const float *dev, int64_t n) {
    pmoe_error err = {PMOE_OK, ""};
    float *h = malloc((size_t)n * 4);
    if (!h || x->be->copy_out(x->be, h, dev, (size_t)n * 4, &err) ||
        x->be->synchronize(x->be, &err)) {
        fprintf(stderr, "rank %d: %s\n", x->rank, err.message);
        exit(1);
    }
    return h;
}

static void check_exchanges(rank_ctx *x) {
    enum { BLOCKS = 3, COUNT = 4 };
    const int R = x->ranks, me = x->rank;
    const int64_t total = (int64_t)R * BLOCKS * COUNT;
    float *send = malloc(sizeof(float) * total);
    for (int q = 0; q < R; q++)
        for (int j = 0; j < BLOCKS; j++)
            for (int i = 0; i < COUNT; i++) send[(q * BLOCKS + j) * COUNT + i] = code(me, q, j, i);
    float *d_send = device_from(x, send, total), *d_mid = device_from(x, NULL, total),
          *d_back = device_from(x, NULL, total);
    /* plain: BLOCKS * COUNT floats per peer, rank-major both sides */
    const pmoe_exchange_layout plain = {BLOCKS * COUNT, 1, BLOCKS * COUNT, 0, BLOCKS * COUNT, 0};
    x->c->all_to_all(x->c, d_send, d_mid, &plain);
    float *mid = host_from(x, d_mid, total);
    for (int p = 0; p < R; p++)
        for (int k = 0; k < BLOCKS * COUNT; k++)
            RANK_CHECK(x, mid[p * BLOCKS * COUNT + k] == code(p, me, k / COUNT, k % COUNT),
                       "plain all_to_all from %d [%d] = %g", p, k, mid[p * BLOCKS * COUNT + k]);
    free(mid);
    /* the model's transposes: [dest][block] -> [block][source], and back */
    const pmoe_exchange_layout to_owners = {COUNT, BLOCKS, BLOCKS * COUNT,
                                            COUNT, COUNT,  (int64_t)R * COUNT};
    const pmoe_exchange_layout from_owners = {COUNT,          BLOCKS, COUNT, (int64_t)R * COUNT,
                                              BLOCKS * COUNT, COUNT};
    x->c->all_to_all(x->c, d_send, d_mid, &to_owners);
    x->c->all_to_all(x->c, d_mid, d_back, &from_owners);
    mid = host_from(x, d_mid, total);
    for (int j = 0; j < BLOCKS; j++)
        for (int p = 0; p < R; p++)
            for (int i = 0; i < COUNT; i++)
                RANK_CHECK(x, mid[(j * R + p) * COUNT + i] == code(p, me, j, i),
                           "to owners: block %d from %d [%d] = %g", j, p, i,
                           mid[(j * R + p) * COUNT + i]);
    float *back = host_from(x, d_back, total);
    RANK_CHECK(x, memcmp(back, send, sizeof(float) * (size_t)total) == 0, "the round trip differs");
    free(mid), free(back), free(send);
    x->be->release(x->be, d_send, (size_t)total * 4);
    x->be->release(x->be, d_mid, (size_t)total * 4);
    x->be->release(x->be, d_back, (size_t)total * 4);
}

static void check_collectives(rank_ctx *x) {
    enum { N = 7 };
    const int R = x->ranks, me = x->rank;
    /* all_gather of 3 floats each */
    float mine[3];
    for (int i = 0; i < 3; i++) mine[i] = code(me, 0, 0, i);
    float *d_mine = device_from(x, mine, 3), *d_all = device_from(x, NULL, 3 * R);
    x->c->all_gather(x->c, d_mine, d_all, 3);
    float *all = host_from(x, d_all, 3 * R);
    for (int p = 0; p < R; p++)
        for (int i = 0; i < 3; i++)
            RANK_CHECK(x, all[p * 3 + i] == code(p, 0, 0, i), "all_gather [%d][%d] = %g", p, i,
                       all[p * 3 + i]);
    free(all);
    /* all_reduce_sum: [0] is 1 on rank 0, 2^-24 elsewhere; in double in rank
     * order, rounded once: R = 2: 1 (a tie, to even), 3: 1 + 2^-23, 4:
     * 1 + 2^-22 (a tie, to even); in float from rank 0 on, always 1 */
    float v[N];
    v[0] = me == 0 ? 1.0f : ldexpf(1.0f, -24);
    for (int i = 1; i < N; i++) v[i] = (float)(me + i);
    float *d_v = device_from(x, v, N);
    x->c->all_reduce_sum(x->c, d_v, N);
    float *sum = host_from(x, d_v, N);
    const float want0[] = {1.0f, 1.0f, 1.0f + ldexpf(1.0f, -23), 1.0f + ldexpf(1.0f, -22)};
    RANK_CHECK(x, sum[0] == want0[R - 1], "all_reduce_sum [0] = %.9g, want %.9g", sum[0],
               want0[R - 1]);
    for (int i = 1; i < N; i++)
        RANK_CHECK(x, sum[i] == (float)(R * (R - 1) / 2 + R * i), "all_reduce_sum [%d] = %g", i,
                   sum[i]);
    free(sum);
    /* broadcast from the last rank, in place */
    for (int i = 0; i < N; i++) v[i] = code(me, 9, 9, i);
    float *d_b = device_from(x, v, N);
    x->c->broadcast(x->c, d_b, N, R - 1);
    float *b = host_from(x, d_b, N);
    for (int i = 0; i < N; i++)
        RANK_CHECK(x, b[i] == code(R - 1, 9, 9, i), "broadcast [%d] = %g", i, b[i]);
    free(b);
    x->be->release(x->be, d_mine, 3 * 4);
    x->be->release(x->be, d_all, (size_t)(3 * R) * 4);
    x->be->release(x->be, d_v, N * 4);
    x->be->release(x->be, d_b, N * 4);
    /* control ops, through the NCCL communicator (MPI's in a real job) */
    int values[2] = {10 + me, 5 - me};
    x->c->agree_min(x->c, values, 2);
    RANK_CHECK(x, values[0] == 10 && values[1] == 5 - (R - 1), "agree_min %d %d", values[0],
               values[1]);
    int64_t counts[1] = {(int64_t)1 << (40 + me)};
    x->c->sum_i64(x->c, counts, 1);
    int64_t want = 0;
    for (int p = 0; p < R; p++) want += (int64_t)1 << (40 + p);
    RANK_CHECK(x, counts[0] == want, "sum_i64 %lld", (long long)counts[0]);
    int gathered[4] = {-1, -1, -1, -1}, mine_i = 100 + me;
    x->c->host_gather(x->c, &mine_i, gathered, sizeof mine_i, 0);
    if (me == 0)
        for (int p = 0; p < R; p++) RANK_CHECK(x, gathered[p] == 100 + p, "host_gather [%d]", p);
    x->c->barrier(x->c);
}

static void rank_body(int rank, void *arg) {
    rank_ctx *ranks = arg, *x = &ranks[rank];
    pmoe_error err = {PMOE_OK, ""};
    x->rank = rank;
    x->ranks = world.ranks;
    if (pmoe_cuda_backend_create(0, &x->be, &err) ||
        pmoe_comm_nccl_open(thread_comm(rank), 0, pmoe_cuda_backend_stream(x->be), &x->c, &err)) {
        fprintf(stderr, "rank %d: %s\n", rank, err.message);
        exit(1);
    }
    RANK_CHECK(x,
               strcmp(x->c->name, "nccl") == 0 && x->c->rank == rank && x->c->size == world.ranks,
               "communicator %s, rank %d of %d", x->c->name, x->c->rank, x->c->size);
    check_exchanges(x);
    check_collectives(x);
    pmoe_comm_close(x->c);
    pmoe_backend_destroy(x->be);
}

int main(void) {
    for (int R = 2; R <= 4; R++) {
        world.ranks = R;
        world.meeting = standin_meeting_new(R);
        rank_ctx ranks[4];
        memset(ranks, 0, sizeof ranks);
        CHECK(world.meeting && standin_ranks_run(R, rank_body, ranks) == 0);
        int failures = 0;
        for (int r = 0; r < R; r++) failures += ranks[r].failures;
        CHECK_MSG(failures == 0, "%d ranks: %d failures", R, failures);
        printf("%d ranks on threads: the NCCL communicator's exchanges, collectives and control "
               "ops %s\n",
               R, failures ? "FAIL" : "as expected");
        standin_meeting_free(world.meeting);
    }
    return test_finish("test_standin_nccl_ranks");
}
