/* phase_timer.c: see phase_timer.h. NVTX 3 is header-only: the ranges cost
 * a branch when no tool is attached, and nothing at all when the build has
 * no NVTX headers (PMOE_HAVE_NVTX undefined). */
#include "core/phase_timer.h"

#include <string.h>
#include <time.h>

#ifdef PMOE_HAVE_NVTX
#include <nvtx3/nvToolsExt.h>
#endif

static const char *const NAMES[PMOE_T_COUNT] = {
    "data",
    "patch_extract",
    "gate_topl",
    "dispatch",
    "experts_forward",
    "combine",
    "loss",
    "combine_backward",
    "experts_backward",
    "gate_topl_backward",
    "nonfinite_check",
    "optimizer",
    "exchange",
    "exchange_back",
    "exchange_backward",
    "all_reduce",
    "layers_forward",
    "layers_backward",
    "checkpoint",
    "eval",
};

/* Distinct colours per phase, for the Nsight timeline. */
static const uint32_t COLORS[PMOE_T_COUNT] = {
    0xff9e9e9e, 0xff42a5f5, 0xffab47bc, 0xff26a69a, 0xffef5350, 0xffffa726, 0xff8d6e63,
    0xffffca28, 0xffe57373, 0xffce93d8, 0xff78909c, 0xff66bb6a, 0xffd4e157, 0xff9ccc65,
    0xffaed581, 0xff8e24aa, 0xff7e57c2, 0xffec407a, 0xff5c6bc0, 0xff26c6da,
};

const char *pmoe_timer_name(pmoe_phase_id phase) {
    return phase >= 0 && phase < PMOE_T_COUNT ? NAMES[phase] : "?";
}

double pmoe_now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#ifdef PMOE_HAVE_NVTX
static nvtxDomainHandle_t domain(void) {
    static nvtxDomainHandle_t d;
    if (!d) d = nvtxDomainCreateA("pmoe");
    return d;
}

static void push(const char *name, uint32_t color, uint64_t payload) {
    nvtxEventAttributes_t a;
    memset(&a, 0, sizeof a);
    a.version = NVTX_VERSION;
    a.size = NVTX_EVENT_ATTRIB_STRUCT_SIZE;
    a.colorType = NVTX_COLOR_ARGB;
    a.color = color;
    a.payloadType = NVTX_PAYLOAD_TYPE_UNSIGNED_INT64;
    a.payload.ullValue = payload;
    a.messageType = NVTX_MESSAGE_TYPE_ASCII;
    a.message.ascii = name;
    nvtxDomainRangePushEx(domain(), &a);
}

static void pop(void) { nvtxDomainRangePop(domain()); }
int pmoe_trace_enabled(void) { return 1; }
#else
static void push(const char *name, uint32_t color, uint64_t payload) {
    (void)name;
    (void)color;
    (void)payload;
}
static void pop(void) {}
int pmoe_trace_enabled(void) { return 0; }
#endif

void pmoe_trace_push(const char *name, uint64_t payload) { push(name, 0xffffffff, payload); }
void pmoe_trace_pop(void) { pop(); }

void pmoe_timer_reset(pmoe_phase_timer *t) {
    memset(t->seconds, 0, sizeof t->seconds);
    t->current = -1;
    t->spans = t->marks = 0;
    if (t->clock) t->clock->reset(t->clock->ctx);
}

/* Device clock: reads the recorded intervals into the phases (waiting for
 * the last of them) and frees every mark. */
static void read_spans(pmoe_phase_timer *t) {
    const pmoe_device_clock *c = t->clock;
    for (int i = 0; i < t->spans; i++) {
        const double s = c->seconds(c->ctx, t->span_from[i], t->span_to[i]);
        if (s > 0.0) t->seconds[t->span_phase[i]] += s;
    }
    t->spans = t->marks = 0;
    c->reset(c->ctx);
}

static int take_mark(pmoe_phase_timer *t) {
    const int m = t->clock->mark(t->clock->ctx);
    if (m >= 0) t->marks++;
    return m;
}

/* Device clock: closes the open phase at a new mark and returns it (the
 * next phase starts there); -1 if the clock failed to mark. */
static int close_at_mark(pmoe_phase_timer *t) {
    const int m = take_mark(t);
    if (m < 0 || t->open_mark < 0) return m;
    t->span_phase[t->spans] = t->current;
    t->span_from[t->spans] = t->open_mark;
    t->span_to[t->spans] = m;
    t->spans++;
    return m;
}

void pmoe_timer_stop(pmoe_phase_timer *t) {
    if (!t || t->current < 0) return;
    if (t->clock) {
        close_at_mark(t);
        read_spans(t);
    } else {
        if (t->wait) t->wait(t->wait_ctx);
        t->seconds[t->current] += pmoe_now_seconds() - t->since;
    }
    t->current = -1;
    pop();
}

void pmoe_timer_enter(pmoe_phase_timer *t, pmoe_phase_id phase, uint64_t payload) {
    if (!t) return;
    /* The open phase entered again (a layer list, phase by layer): it goes
     * on, one range and one interval rather than one per layer. */
    if (t->current == (int)phase && t->payload == payload) return;
    t->payload = payload;
    if (t->clock) {
        int m;
        if (t->current >= 0) {
            m = close_at_mark(t);
            pop();
        } else {
            m = take_mark(t);
        }
        /* No room to close the phase opening now: read what is held (one
         * wait for the device) and start again from a fresh mark; the
         * moment between the two marks is not counted. */
        if (m < 0 || t->spans == PMOE_TIMER_SPANS || t->marks >= t->clock->capacity) {
            read_spans(t);
            m = take_mark(t);
        }
        t->current = (int)phase;
        t->open_mark = m;
        push(NAMES[phase], COLORS[phase], payload);
        return;
    }
    pmoe_timer_stop(t);
    t->current = (int)phase;
    push(NAMES[phase], COLORS[phase], payload);
    t->since = pmoe_now_seconds(); /* the previous phase's wait already drained the device */
}
