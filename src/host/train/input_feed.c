/* input_feed.c: the input feed's thread (input_feed.h): a mutex, one
 * condition each way, and a job slot. The thread sleeps until a job or the
 * end is posted, runs work() outside the lock, and signals done. */
#include "train/input_feed.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct input_feed {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t posted, done;
    input_feed_work work;
    void *ctx;
    void *job; /* posted and not yet finished */
    int busy;  /* started and not yet waited for */
    int ending;
};

static void *feed_main(void *arg) {
    input_feed *f = arg;
    pthread_mutex_lock(&f->lock);
    for (;;) {
        while (!f->job && !f->ending) pthread_cond_wait(&f->posted, &f->lock);
        if (!f->job) break;
        void *job = f->job;
        pthread_mutex_unlock(&f->lock);
        f->work(f->ctx, job);
        pthread_mutex_lock(&f->lock);
        f->job = NULL;
        pthread_cond_broadcast(&f->done);
    }
    pthread_mutex_unlock(&f->lock);
    return NULL;
}

pmoe_status input_feed_open(input_feed **out, input_feed_work work, void *ctx, pmoe_error *err) {
    *out = NULL;
    input_feed *f = calloc(1, sizeof *f);
    if (!f) return pmoe_fail(err, PMOE_ERR_OOM, "out of host memory for the input thread");
    f->work = work;
    f->ctx = ctx;
    pthread_mutex_init(&f->lock, NULL);
    pthread_cond_init(&f->posted, NULL);
    pthread_cond_init(&f->done, NULL);
    const int rc = pthread_create(&f->thread, NULL, feed_main, f);
    if (rc) {
        pthread_cond_destroy(&f->posted);
        pthread_cond_destroy(&f->done);
        pthread_mutex_destroy(&f->lock);
        free(f);
        return pmoe_fail(err, PMOE_ERR_INTERNAL,
                         "cannot start the input thread (train.overlap_input = 0 runs without "
                         "it): %s",
                         strerror(rc));
    }
    *out = f;
    return PMOE_OK;
}

void input_feed_start(input_feed *f, void *job) {
    pthread_mutex_lock(&f->lock);
    f->job = job;
    f->busy = 1;
    pthread_cond_signal(&f->posted);
    pthread_mutex_unlock(&f->lock);
}

int input_feed_busy(const input_feed *f) { return f && f->busy; }

void input_feed_wait(input_feed *f) {
    pthread_mutex_lock(&f->lock);
    while (f->job) pthread_cond_wait(&f->done, &f->lock);
    f->busy = 0;
    pthread_mutex_unlock(&f->lock);
}

void input_feed_close(input_feed *f) {
    if (!f) return;
    input_feed_wait(f);
    pthread_mutex_lock(&f->lock);
    f->ending = 1;
    pthread_cond_signal(&f->posted);
    pthread_mutex_unlock(&f->lock);
    pthread_join(f->thread, NULL);
    pthread_cond_destroy(&f->posted);
    pthread_cond_destroy(&f->done);
    pthread_mutex_destroy(&f->lock);
    free(f);
}
