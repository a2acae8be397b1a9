/* cuda_clock.c: the CUDA backend's device clock (pmoe_device_clock in
 * core/phase_timer.h): CUDA events recorded on the backend's stream.
 *
 * A phase timer marks each phase boundary with one event and reads the
 * intervals when it stops, so timing a step costs one wait for the device
 * (at the step's end, where the loss is read anyway) instead of one per
 * phase. The events are made on first use and kept; reset() only rewinds
 * the pool. A failure to make or record an event is recorded like any
 * other backend failure and the mark is refused (-1), which the timer
 * survives; an interval that cannot be read counts as 0. */
#include "cuda/cuda_internal.h"

static int clock_mark(void *ctx) {
    cuda_context *c = ctx;
    if (c->clock_used == CUDA_CLOCK_MARKS) return -1;
    const int i = c->clock_used;
    if (i == c->clock_made) {
        cudaError_t e = cudaEventCreate(&c->clock_events[i]);
        if (e != cudaSuccess) {
            cuda_record(c, PMOE_ERR_INTERNAL, "cudaEventCreate failed: %s", cudaGetErrorString(e));
            return -1;
        }
        c->clock_made++;
    }
    cudaError_t e = cudaEventRecord(c->clock_events[i], c->stream);
    if (e != cudaSuccess) {
        cuda_record(c, PMOE_ERR_INTERNAL, "cudaEventRecord failed: %s", cudaGetErrorString(e));
        return -1;
    }
    c->clock_used++;
    return i;
}

static double clock_seconds(void *ctx, int from, int to) {
    cuda_context *c = ctx;
    if (from < 0 || to < 0 || from >= c->clock_used || to >= c->clock_used) return 0.0;
    float ms = 0.0f;
    if (cudaEventSynchronize(c->clock_events[to]) != cudaSuccess ||
        cudaEventElapsedTime(&ms, c->clock_events[from], c->clock_events[to]) != cudaSuccess) {
        cudaGetLastError(); /* a failed kernel reports itself at the next synchronize */
        return 0.0;
    }
    return 1e-3 * (double)ms;
}

static void clock_reset(void *ctx) {
    cuda_context *c = ctx;
    c->clock_used = 0;
}

void cuda_clock_init(cuda_context *c) {
    c->clock = (pmoe_device_clock){c, CUDA_CLOCK_MARKS, clock_mark, clock_seconds, clock_reset};
    c->be.clock = &c->clock;
}

void cuda_clock_release(cuda_context *c) {
    for (int i = 0; i < c->clock_made; i++) cudaEventDestroy(c->clock_events[i]);
    c->clock_made = c->clock_used = 0;
}
