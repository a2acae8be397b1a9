/* standin_core.c: the stand-in's device model (see standin.h): the table of
 * device allocations, the streams' queues, the sticky error and the fault
 * counters. Single-threaded, as pmoe drives its device from one thread. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "standin.h"
#include "standin_internal.h"

/* ---- allocations: sorted by address ---- */
static standin_block *blocks;
static size_t block_count, block_cap;

static size_t block_search(uintptr_t p) { /* the first block with base > p */
    size_t lo = 0, hi = block_count;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if ((uintptr_t)blocks[mid].base <= p) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

int standin_block_add(void *base, size_t bytes) {
    if (block_count == block_cap) {
        size_t cap = block_cap ? 2 * block_cap : 64;
        standin_block *b = realloc(blocks, cap * sizeof *b);
        if (!b) return -1;
        blocks = b;
        block_cap = cap;
    }
    size_t at = block_search((uintptr_t)base);
    memmove(blocks + at + 1, blocks + at, (block_count - at) * sizeof *blocks);
    blocks[at] = (standin_block){base, bytes};
    block_count++;
    return 0;
}

int standin_block_remove(void *base, size_t *bytes) {
    size_t at = block_search((uintptr_t)base);
    if (at == 0 || blocks[at - 1].base != base) return -1;
    if (bytes) *bytes = blocks[at - 1].bytes;
    memmove(blocks + at - 1, blocks + at, (block_count - at) * sizeof *blocks);
    block_count--;
    return 0;
}

int standin_is_device(const void *p, size_t *room) {
    if (!p || !block_count) return 0;
    size_t at = block_search((uintptr_t)p);
    if (at == 0) return 0;
    const standin_block *b = &blocks[at - 1];
    const uintptr_t off = (uintptr_t)p - (uintptr_t)b->base;
    if (off >= b->bytes) return 0;
    if (room) *room = b->bytes - off;
    return 1;
}

int standin_device_range(const void *p, size_t bytes) {
    size_t room = 0;
    return standin_is_device(p, &room) && bytes <= room;
}

size_t standin_device_bytes_in_use(void) {
    size_t total = 0;
    for (size_t i = 0; i < block_count; i++) total += blocks[i].bytes;
    return total;
}

/* ---- streams ---- */
typedef struct work {
    int (*run)(void *);
    void *arg;
    void (*free_arg)(void *);
    struct work *next;
} work;

struct standin_stream {
    work *head, *tail;
    uint64_t enqueued, done; /* counters: an event records `enqueued` */
    struct standin_stream *next_live;
};

static standin_stream default_stream;
static standin_stream *live_streams;
static int sticky;
static char sticky_why[256];

standin_stream *standin_stream_create(void) {
    standin_stream *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->next_live = live_streams;
    live_streams = s;
    return s;
}

standin_stream *standin_stream_of(void *cuda_stream) {
    if (!cuda_stream) return &default_stream;
    for (standin_stream *s = live_streams; s; s = s->next_live)
        if ((void *)s == cuda_stream) return s;
    return NULL;
}

int standin_stream_destroy(standin_stream *s) {
    standin_stream **link = &live_streams;
    while (*link && *link != s) link = &(*link)->next_live;
    if (!*link) return -1;
    standin_stream_drain(s); /* the documented behaviour: pending work completes */
    *link = s->next_live;
    free(s);
    return 0;
}

void standin_enqueue(standin_stream *s, int (*run)(void *), void *arg, void (*free_arg)(void *)) {
    work *w = calloc(1, sizeof *w);
    if (!w) {
        standin_set_sticky(2 /* cudaErrorMemoryAllocation */, "host memory for the stream queue");
        if (free_arg) free_arg(arg);
        return;
    }
    *w = (work){run, arg, free_arg, NULL};
    if (s->tail) s->tail->next = w;
    else s->head = w;
    s->tail = w;
    s->enqueued++;
}

static int run_fault(void *arg) { return (int)(intptr_t)arg; }

void standin_enqueue_fault(standin_stream *s, int cuda_error) {
    standin_enqueue(s, run_fault, (void *)(intptr_t)cuda_error, NULL);
}

/* Runs s's work up to and including item number `upto` (1-based count). */
int standin_stream_run_to(standin_stream *s, uint64_t upto) {
    while (s->head && s->done < upto) {
        work *w = s->head;
        s->head = w->next;
        if (!s->head) s->tail = NULL;
        s->done++;
        if (!sticky) { /* after a fault the device runs nothing more */
            int e = w->run(w->arg);
            if (e) standin_set_sticky(e, "enqueued work failed");
        }
        if (w->free_arg) w->free_arg(w->arg);
        free(w);
    }
    return sticky;
}

uint64_t standin_stream_position(const standin_stream *s) { return s->enqueued; }
uint64_t standin_stream_completed(const standin_stream *s) { return s->done; }

int standin_stream_drain(standin_stream *s) { return standin_stream_run_to(s, UINT64_MAX); }

int standin_drain_all(void) {
    standin_stream_drain(&default_stream);
    for (standin_stream *s = live_streams; s; s = s->next_live) standin_stream_drain(s);
    return sticky;
}

int standin_sticky(void) { return sticky; }

const char *standin_sticky_why(void) { return sticky_why; }

void standin_set_sticky(int cuda_error, const char *why) {
    if (sticky || !cuda_error) return;
    sticky = cuda_error;
    snprintf(sticky_why, sizeof sticky_why, "%s", why);
}

void standin_reset_sticky(void) { /* cudaDeviceReset: a fresh device */
    sticky = 0;
    sticky_why[0] = 0;
}

void standin_warn(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("pmoe-standin: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* ---- faults ---- */
typedef struct fault_rule {
    char name[64];
    long calls, nth;
    int from_on;
} fault_rule;

#define FAULT_RULES 64
static fault_rule rules[FAULT_RULES];
static int rule_count, env_read;

static fault_rule *rule_of(const char *name, int make) {
    for (int i = 0; i < rule_count; i++)
        if (strcmp(rules[i].name, name) == 0) return &rules[i];
    if (!make || rule_count == FAULT_RULES) return NULL;
    fault_rule *r = &rules[rule_count++];
    memset(r, 0, sizeof *r);
    snprintf(r->name, sizeof r->name, "%s", name);
    return r;
}

/* PMOE_STANDIN_REPORT=FILE: every counted function's calls, one
 * "name count" line each, written at exit (for choosing N in a test). */
static void write_report(void) {
    const char *path = getenv("PMOE_STANDIN_REPORT");
    FILE *f = path && *path ? fopen(path, "w") : NULL;
    if (!f) return;
    for (int i = 0; i < rule_count; i++) fprintf(f, "%s %ld\n", rules[i].name, rules[i].calls);
    fclose(f);
}

static void read_env(void) {
    if (env_read) return;
    env_read = 1;
    atexit(write_report);
    const char *spec = getenv("PMOE_STANDIN_FAULT");
    if (!spec || !*spec) return;
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", spec);
    for (char *save = NULL, *item = strtok_r(buf, ",", &save); item;
         item = strtok_r(NULL, ",", &save)) {
        char *colon = strrchr(item, ':');
        if (!colon) {
            standin_warn("PMOE_STANDIN_FAULT: '%s' is not name:N", item);
            continue;
        }
        *colon = 0;
        char *end = NULL;
        long nth = strtol(colon + 1, &end, 10);
        int from_on = end && *end == '+';
        if (nth < 1) {
            standin_warn("PMOE_STANDIN_FAULT: '%s': N must be 1 or more", item);
            continue;
        }
        standin_fault_set(item, nth, from_on);
    }
}

int standin_fault(const char *name) {
    read_env();
    fault_rule *r = rule_of(name, 1);
    if (!r) return 0;
    r->calls++;
    if (r->nth > 0 && (r->calls == r->nth || (r->from_on && r->calls > r->nth))) {
        standin_warn("injected fault: call %ld of %s fails", r->calls, name);
        return 1;
    }
    return 0;
}

void standin_fault_set(const char *name, long nth, int from_on) {
    read_env();
    fault_rule *r = rule_of(name, 1);
    if (!r) return;
    r->nth = r->calls + nth; /* counted from now */
    r->from_on = from_on;
}

void standin_fault_clear(void) {
    read_env();
    for (int i = 0; i < rule_count; i++) rules[i].nth = 0;
}

long standin_calls(const char *name) {
    read_env();
    fault_rule *r = rule_of(name, 0);
    return r ? r->calls : 0;
}
