/* standin_ranks.h: several ranks inside one process, one thread each, for
 * the stand-in's multi-rank NCCL (and the tests' thread communicator).
 *
 * The stand-in's state (allocations, streams, the sticky error, fault
 * counters) is one device's and is not locked. So rank threads take turns:
 * a rank thread holds the baton, a process-wide mutex, whenever it runs,
 * and lets go of it only while it waits in a meeting for its peers. A
 * meeting is the rendezvous of a collective: every rank deposits its
 * entry; the last to arrive runs the action over all entries (the data
 * movement), and every rank returns the action's result. Code outside
 * rank threads (every single-rank use) never touches the baton. */
#ifndef PMOE_STANDIN_RANKS_H
#define PMOE_STANDIN_RANKS_H

#ifdef __cplusplus
extern "C" {
#endif

typedef struct standin_meeting standin_meeting;

/* A meeting place for `ranks` ranks; NULL when out of memory. */
standin_meeting *standin_meeting_new(int ranks);
void standin_meeting_free(standin_meeting *m);
/* Rank `rank` arrives with `mine`; the last arrival calls
 * act(entries, ranks, user) with every rank's entry in rank order; every
 * rank returns what it returned. A rank that waits releases the baton.
 * Returns `aborted` (and runs nothing) once the meeting is aborted. */
int standin_meet(standin_meeting *m, int rank, void *mine,
                 int (*act)(void **entries, int ranks, void *user), void *user, int aborted);
/* Wakes every waiting rank with its `aborted` result; later meetings fail too. */
void standin_meeting_abort(standin_meeting *m);

/* Runs body(rank, arg) for rank = 0 .. ranks - 1, each on its own thread
 * holding the baton as described above, and waits for all of them.
 * Returns 0, or -1 when a thread cannot be started. */
int standin_ranks_run(int ranks, void (*body)(int rank, void *arg), void *arg);

#ifdef __cplusplus
}
#endif
#endif
