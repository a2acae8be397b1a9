/* standin_ranks.c: rank threads taking turns on the stand-in, and their
 * meetings (see standin_ranks.h). */
#include "standin_ranks.h"

#include <pthread.h>
#include <stdlib.h>

static pthread_mutex_t baton = PTHREAD_MUTEX_INITIALIZER;

struct standin_meeting {
    int ranks, arrived, aborted, result;
    unsigned long generation;
    pthread_cond_t changed;
    void **entries;
};

standin_meeting *standin_meeting_new(int ranks) {
    standin_meeting *m = calloc(1, sizeof *m);
    void **entries = calloc((size_t)(ranks > 0 ? ranks : 1), sizeof *entries);
    if (!m || !entries || pthread_cond_init(&m->changed, NULL)) {
        free(m), free(entries);
        return NULL;
    }
    m->ranks = ranks;
    m->entries = entries;
    return m;
}

void standin_meeting_free(standin_meeting *m) {
    if (!m) return;
    pthread_cond_destroy(&m->changed);
    free(m->entries);
    free(m);
}

int standin_meet(standin_meeting *m, int rank, void *mine,
                 int (*act)(void **entries, int ranks, void *user), void *user, int aborted) {
    if (m->aborted) return aborted;
    const unsigned long generation = m->generation;
    m->entries[rank] = mine;
    if (++m->arrived == m->ranks) {
        m->result = act(m->entries, m->ranks, user);
        m->arrived = 0;
        m->generation++;
        pthread_cond_broadcast(&m->changed);
        return m->result;
    }
    /* The result stays until every rank has read it: the next meeting
     * cannot end before this rank arrives there. */
    while (m->generation == generation && !m->aborted) pthread_cond_wait(&m->changed, &baton);
    return m->generation == generation ? aborted : m->result;
}

void standin_meeting_abort(standin_meeting *m) {
    m->aborted = 1;
    pthread_cond_broadcast(&m->changed);
}

typedef struct rank_start {
    int rank;
    void (*body)(int rank, void *arg);
    void *arg;
} rank_start;

static void *rank_main(void *p) {
    const rank_start *s = p;
    pthread_mutex_lock(&baton);
    s->body(s->rank, s->arg);
    pthread_mutex_unlock(&baton);
    return NULL;
}

int standin_ranks_run(int ranks, void (*body)(int rank, void *arg), void *arg) {
    pthread_t *threads = calloc((size_t)ranks, sizeof *threads);
    rank_start *starts = calloc((size_t)ranks, sizeof *starts);
    int started = 0, status = threads && starts ? 0 : -1;
    for (; status == 0 && started < ranks; started++) {
        starts[started] = (rank_start){started, body, arg};
        if (pthread_create(&threads[started], NULL, rank_main, &starts[started])) status = -1;
    }
    if (status) started--; /* the one that failed to start */
    for (int r = 0; r < started; r++) pthread_join(threads[r], NULL);
    free(threads), free(starts);
    return status;
}
