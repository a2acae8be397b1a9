/* input_feed.h: one host thread that runs one job at a time beside the
 * training loop (train.overlap_input: composing batch i + 1 while the
 * device runs step i, and while the host waits for the device at a read).
 *
 * start() hands the thread a job and returns at once; wait() returns when
 * it is done. A job is whatever work() makes of its pointer, which must stay
 * valid until wait() returns. Between start and wait the caller must not
 * touch what the job writes. */
#ifndef PMOE_TRAIN_INPUT_FEED_H
#define PMOE_TRAIN_INPUT_FEED_H

#include "pmoe/status.h"

typedef struct input_feed input_feed;
typedef void (*input_feed_work)(void *ctx, void *job);

pmoe_status input_feed_open(input_feed **out, input_feed_work work, void *ctx, pmoe_error *err);
void input_feed_start(input_feed *f, void *job);
/* 1 while a started job has not been waited for. */
int input_feed_busy(const input_feed *f);
void input_feed_wait(input_feed *f);
/* Waits for a running job, ends the thread, frees f (NULL is fine). */
void input_feed_close(input_feed *f);

#endif
