/* test_comm.c: the communicator's operations against hand-computed answers.
 *
 *   test_comm single          one process, the single communicator
 *   mpirun -np R test_comm mpi    R ranks over MPI (ctest runs R = 2, 3, 4)
 *
 * Every value a rank sends encodes (sender, receiver, block, element), so a
 * block delivered to the wrong place, from the wrong rank or in the wrong
 * order shows up as a wrong number. The sums use values whose float sum
 * depends on the order (1 and 2^-24), so "summed in double in rank order,
 * rounded once" is checked bit for bit, and every rank must hold the same
 * bits. Each rank reports its failures; rank 0 prints the verdict. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm/comm.h"
#include "rank_expect.h"

static int failures;

/* What rank `from` sends rank `to`, block j, element i. */
static float code(int from, int to, int j, int i) {
    return (float)(from * 1000000 + to * 10000 + j * 100 + i);
}

int main(int argc, char **argv) {
    const int want_mpi = argc > 1 && strcmp(argv[1], "mpi") == 0;
    pmoe_error err = {PMOE_OK, ""};
    pmoe_comm *c = NULL;
    int rank = 0;
    if (pmoe_comm_open(want_mpi ? PMOE_COMM_MPI : PMOE_COMM_SINGLE, &c, &err)) {
        fprintf(stderr, "FAIL: cannot open the communicator: %s\n", err.message);
        return 1;
    }
    rank = c->rank;
    const int R = c->size;
    EXPECT(strcmp(c->name, want_mpi ? "mpi" : "single") == 0, "name %s", c->name);
    EXPECT(rank >= 0 && rank < R, "rank %d of %d", rank, R);
    EXPECT(c->local_rank >= 0 && c->local_rank < c->local_size && c->local_size <= R,
           "local rank %d of %d", c->local_rank, c->local_size);
    EXPECT(!want_mpi || rank == pmoe_comm_launch_rank(), "launcher rank %d",
           pmoe_comm_launch_rank());
    EXPECT(c->distributed == want_mpi, "distributed %d", c->distributed);

    /* The plain all-to-all: count floats per rank, rank-major both sides. */
    {
        enum { COUNT = 5 };
        float *send = malloc(sizeof(float) * R * COUNT), *recv = malloc(sizeof(float) * R * COUNT);
        for (int q = 0; q < R; q++)
            for (int i = 0; i < COUNT; i++) send[q * COUNT + i] = code(rank, q, 0, i);
        const pmoe_exchange_layout plain = {COUNT, 1, COUNT, COUNT, COUNT, COUNT};
        c->all_to_all(c, send, recv, &plain);
        for (int p = 0; p < R; p++)
            for (int i = 0; i < COUNT; i++)
                EXPECT(recv[p * COUNT + i] == code(p, rank, 0, i), "plain all_to_all [%d][%d] = %g",
                       p, i, recv[p * COUNT + i]);
        free(send);
        free(recv);
    }

    /* The model's two transposes, with 3 blocks per peer (local experts) of
     * 4 floats: send [dest][block] -> recv [block][source], and back. */
    {
        enum { BLOCKS = 3, COUNT = 4 };
        const int64_t total = (int64_t)R * BLOCKS * COUNT;
        float *send = malloc(sizeof(float) * total), *mid = malloc(sizeof(float) * total),
              *back = malloc(sizeof(float) * total);
        for (int q = 0; q < R; q++)
            for (int j = 0; j < BLOCKS; j++)
                for (int i = 0; i < COUNT; i++)
                    send[(q * BLOCKS + j) * COUNT + i] = code(rank, q, j, i);
        const pmoe_exchange_layout to_owners = {COUNT, BLOCKS, BLOCKS * COUNT,
                                                COUNT, COUNT,  (int64_t)R * COUNT};
        c->all_to_all(c, send, mid, &to_owners);
        for (int j = 0; j < BLOCKS; j++)
            for (int p = 0; p < R; p++)
                for (int i = 0; i < COUNT; i++)
                    EXPECT(mid[(j * R + p) * COUNT + i] == code(p, rank, j, i),
                           "to owners: block %d from %d [%d] = %g", j, p, i,
                           mid[(j * R + p) * COUNT + i]);
        /* Back: every rank returns what it received; the original returns. */
        const pmoe_exchange_layout from_owners = {COUNT,          BLOCKS, COUNT, (int64_t)R * COUNT,
                                                  BLOCKS * COUNT, COUNT};
        c->all_to_all(c, mid, back, &from_owners);
        EXPECT(memcmp(back, send, sizeof(float) * (size_t)total) == 0, "the round trip differs");
        free(send);
        free(mid);
        free(back);
    }

    /* all_gather: every rank's 3 floats, in rank order. */
    {
        float mine[3], all[3 * 64];
        for (int i = 0; i < 3; i++) mine[i] = code(rank, 0, 0, i);
        if (R <= 64) {
            c->all_gather(c, mine, all, 3);
            for (int p = 0; p < R; p++)
                for (int i = 0; i < 3; i++)
                    EXPECT(all[p * 3 + i] == code(p, 0, 0, i), "all_gather [%d][%d] = %g", p, i,
                           all[p * 3 + i]);
        }
    }

    /* all_reduce_sum, 7 elements (not a multiple of R, so chunks pad):
     *   [0]: rank 0 gives 1, every other rank 2^-24. In double, in rank
     *        order, rounded once: R = 1: 1; R = 2: 1 + 2^-24, a tie, rounds
     *        to even: 1; R = 3: 1 + 2^-23 exactly; R = 4: 1 + 3 2^-24, a
     *        tie between 1 + 2^-23 and 1 + 2^-22, to even: 1 + 2^-22.
     *        (Summed in float from rank 0 on, every R would give 1.)
     *   [1..6]: rank p gives p + i: the sum is R (R - 1) / 2 + R i. */
    {
        enum { N = 7 };
        float v[N];
        const float tiny = ldexpf(1.0f, -24);
        v[0] = rank == 0 ? 1.0f : tiny;
        for (int i = 1; i < N; i++) v[i] = (float)(rank + i);
        c->all_reduce_sum(c, v, N);
        const float want0[] = {1.0f, 1.0f, 1.0f + ldexpf(1.0f, -23), 1.0f + ldexpf(1.0f, -22)};
        if (R <= 4)
            EXPECT(v[0] == want0[R - 1], "all_reduce_sum [0] = %.9g, want %.9g", v[0],
                   want0[R - 1]);
        for (int i = 1; i < N; i++)
            EXPECT(v[i] == (float)(R * (R - 1) / 2 + R * i), "all_reduce_sum [%d] = %g", i, v[i]);
        /* every rank holds the same bits */
        float all[N * 64];
        if (R <= 64) {
            c->all_gather(c, v, all, N);
            for (int p = 0; p < R; p++)
                EXPECT(memcmp(all + p * N, v, sizeof v) == 0, "rank %d's sum differs", p);
        }
    }

    /* broadcast from the last rank */
    {
        float b[4] = {0, 0, 0, 0};
        if (rank == R - 1)
            for (int i = 0; i < 4; i++) b[i] = code(rank, 0, 0, i);
        c->broadcast(c, b, 4, R - 1);
        for (int i = 0; i < 4; i++)
            EXPECT(b[i] == code(R - 1, 0, 0, i), "broadcast [%d] = %g", i, b[i]);
    }

    /* control ops */
    {
        int v[2] = {10 + rank, rank == R - 1 ? -5 : 7};
        c->agree_min(c, v, 2);
        EXPECT(v[0] == 10 && v[1] == (R == 1 ? -5 : -5), "agree_min = %d %d", v[0], v[1]);
        int64_t s[2] = {rank, (int64_t)1 << 40};
        c->sum_i64(c, s, 2);
        EXPECT(s[0] == (int64_t)R * (R - 1) / 2 && s[1] == ((int64_t)R << 40),
               "sum_i64 = %lld %lld", (long long)s[0], (long long)s[1]);
        char text[32] = "";
        if (rank == 0) snprintf(text, sizeof text, "from rank 0");
        c->host_broadcast(c, text, sizeof text, 0);
        EXPECT(strcmp(text, "from rank 0") == 0, "host_broadcast '%s'", text);
        int mine[2] = {rank, -rank}, *all = calloc((size_t)R * 2, sizeof(int));
        c->host_gather(c, mine, all, sizeof mine, 0);
        if (rank == 0)
            for (int p = 0; p < R; p++)
                EXPECT(all[2 * p] == p && all[2 * p + 1] == -p, "host_gather [%d]", p);
        free(all);
        c->barrier(c);
    }

    /* pmoe_comm_agree: the lowest failing rank's status and message reach
     * every rank, with its number; no failure gives OK everywhere. */
    {
        pmoe_error e = {PMOE_OK, ""};
        int v[1] = {rank};
        pmoe_status s = pmoe_comm_agree(c, PMOE_OK, &e, v, 1);
        EXPECT(s == PMOE_OK && v[0] == 0, "agree without failure: %d, %d", (int)s, v[0]);
        const int bad = R > 1 ? 1 : 0;
        pmoe_status mine = PMOE_OK;
        if (rank >= bad) mine = pmoe_fail(&e, PMOE_ERR_IO, "boom on rank %d", rank);
        s = pmoe_comm_agree(c, mine, &e, NULL, 0);
        char want[96];
        if (R > 1) snprintf(want, sizeof want, "rank %d of %d: boom on rank %d", bad, R, bad);
        else snprintf(want, sizeof want, "boom on rank 0");
        EXPECT(s == PMOE_ERR_IO && strcmp(e.message, want) == 0, "agree: %d '%s', want '%s'",
               (int)s, e.message, want);
        /* every rank failed: rank 0's message, without a rank */
        mine = pmoe_fail(&e, PMOE_ERR_CONFIG, "bad key on rank %d", rank);
        s = pmoe_comm_agree(c, mine, &e, NULL, 0);
        EXPECT(s == PMOE_ERR_CONFIG && strcmp(e.message, "bad key on rank 0") == 0,
               "agree, all failed: %d '%s'", (int)s, e.message);
    }

    /* split: groups of two consecutive ranks, and the ranks of equal parity
     * across them (expert parallelism's groups and replicas); each sums its
     * members' world ranks exactly */
    {
        pmoe_error e = {PMOE_OK, ""};
        pmoe_comm *group = NULL, *replica = NULL;
        pmoe_status s = c->split(c, rank / 2, rank, &group, &e);
        if (!s) s = c->split(c, rank % 2, rank, &replica, &e);
        EXPECT(s == PMOE_OK, "split: %s", e.message);
        if (!s) {
            const int first = rank / 2 * 2, members = first + 1 < R ? 2 : 1;
            EXPECT(group->size == members && group->rank == rank - first, "group: rank %d of %d",
                   group->rank, group->size);
            EXPECT(replica->size == (R - rank % 2 + 1) / 2 && replica->rank == rank / 2,
                   "replica: rank %d of %d", replica->rank, replica->size);
            EXPECT(group->distributed == c->distributed, "group distributed %d",
                   group->distributed);
            int64_t sums[2] = {rank, 1};
            group->sum_i64(group, sums, 2);
            EXPECT(sums[0] == (members == 2 ? 2 * first + 1 : first) && sums[1] == members,
                   "group sum %lld over %lld", (long long)sums[0], (long long)sums[1]);
            float x[1] = {(float)rank};
            replica->all_reduce_sum(replica, x, 1);
            float want = 0.0f;
            for (int q = rank % 2; q < R; q += 2) want += (float)q;
            EXPECT(x[0] == want, "replica all-reduce %g, want %g", x[0], want);
        }
        pmoe_comm_close(replica);
        pmoe_comm_close(group);
    }

    int total[1] = {-failures}; /* min of -failures: the worst rank's count */
    c->agree_min(c, total, 1);
    if (rank == 0) {
        if (total[0] == 0)
            printf("test_comm (%s, %d rank%s): all passed\n", c->name, R, R > 1 ? "s" : "");
        else printf("test_comm (%s, %d ranks): a rank had %d failures\n", c->name, R, -total[0]);
    }
    pmoe_comm_close(c);
    return total[0] == 0 ? 0 : 1;
}
