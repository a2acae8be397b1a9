/* host_exec.cpp: the scheduler behind host execution (see host_exec.h).
 *
 * A launch runs its blocks in order on the calling OS thread. For a block,
 * every thread becomes a fiber on a stack from a per-OS-thread pool
 * (64 KiB each by default, PMOE_EMU_STACK_KIB to change; a guard page below
 * each turns an overflow into a crash rather than silent corruption). On
 * x86-64 a fiber switch saves and restores the callee-saved registers in a
 * few instructions (switch_stacks below); elsewhere, under AddressSanitizer
 * (whose fiber annotations expect it), or where a shadow stack
 * is active, it is ucontext's swapcontext, whose signal-mask system calls
 * made them 85% of the time of a kernel-heavy test. The
 * scheduler resumes the runnable fibers in the chosen order; each runs until
 * it waits at a barrier (block or warp) or returns. A thread starts on its
 * own stack, or, when the thread before it in the order returned without
 * waiting, on that thread's stack in the same fiber, with no switch: the
 * same order, but a barrier-free kernel runs its block on one warm stack
 * rather than touching a fresh one per thread. When no fiber is
 * runnable it releases every warp whose mask is complete, else the block
 * barrier once every live fiber waits there, else reports a deadlock (a
 * barrier that some thread never reaches). Everything lives in thread_local
 * state, so separate OS threads may run separate launches. */
#include "host_exec.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

/* Under AddressSanitizer every switch between stacks is announced, or ASan
 * takes a fiber's stack for a buffer overflow (PMOE_SANITIZE builds). */
#if defined(__SANITIZE_ADDRESS__)
#define PMOE_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define PMOE_EMU_ASAN 1
#endif
#endif
#ifdef PMOE_EMU_ASAN
#include <sanitizer/common_interface_defs.h>
#endif

#ifndef PMOE_KERNELS_HOST_EXEC
#define PMOE_KERNELS_HOST_EXEC
#endif
#include "pmoe_kernels.h"

#if defined(__x86_64__) && !defined(PMOE_EMU_UCONTEXT) && !defined(PMOE_EMU_ASAN)
extern "C" void pmoe_emu_switch_stacks(void **save_sp, void *load_sp);
#endif

namespace pmoe_emu {

__thread thread_view *current_thread = nullptr;
__thread block_view *current_block = nullptr;

namespace {

enum fiber_state { NOT_STARTED, RUNNABLE, AT_BLOCK_BARRIER, AT_WARP_BARRIER, FINISHED };

/* ---- switching stacks ----
 * A saved context: the stack pointer of a suspended fast switch, or a
 * ucontext. The fast switch, switch_stacks(&from_sp, to_sp), pushes the
 * System V callee-saved registers (the caller saves every other one, and
 * the SSE control word and x87 state are never changed by a kernel body),
 * stores the stack pointer, loads the other one and pops its registers.
 * A fresh fiber's stack holds six zero registers and fiber_entry as the
 * return address, so its first switch "returns" into fiber_entry with the
 * stack aligned as at a call. */
struct saved_context {
    void *sp;
    ucontext_t uc;
};

#if defined(__x86_64__) && !defined(PMOE_EMU_UCONTEXT) && !defined(PMOE_EMU_ASAN)
#define PMOE_EMU_FAST_SWITCH 1
__asm__(".pushsection .text\n"
        ".p2align 4\n"
        ".type pmoe_emu_switch_stacks, @function\n"
        "pmoe_emu_switch_stacks:\n"
        "  pushq %rbp\n  pushq %rbx\n  pushq %r12\n  pushq %r13\n  pushq %r14\n  pushq %r15\n"
        "  movq %rsp, (%rdi)\n"
        "  movq %rsi, %rsp\n"
        "  popq %r15\n  popq %r14\n  popq %r13\n  popq %r12\n  popq %rbx\n  popq %rbp\n"
        "  ret\n"
        ".size pmoe_emu_switch_stacks, .-pmoe_emu_switch_stacks\n"
        ".popsection\n");
/* True while a CET shadow stack is active (rdsspq reads 0, a no-op, when not):
 * the fast switch's ret would then fault, so ucontext is used. */
bool shadow_stack_active() {
    unsigned long ssp = 0;
    __asm__ volatile(".byte 0xf3, 0x48, 0x0f, 0x1e, 0xc8" : "+a"(ssp)); /* rdsspq %rax */
    return ssp != 0;
}
#else
#define PMOE_EMU_FAST_SWITCH 0
bool shadow_stack_active() { return true; }
#endif
bool use_fast_switch = false; /* chosen in load_settings */

void fiber_main();
void fiber_entry() { fiber_main(); }

void context_start(saved_context &c, unsigned char *stack, size_t bytes, ucontext_t *link) {
    if (use_fast_switch) {
        uintptr_t top = ((uintptr_t)stack + bytes) & ~(uintptr_t)15;
        void **sp = reinterpret_cast<void **>(top);
        *--sp = nullptr; /* fiber_entry's return address: it never returns */
        *--sp = reinterpret_cast<void *>(&fiber_entry);
        for (int i = 0; i < 6; i++) *--sp = nullptr; /* rbp, rbx, r12-r15 */
        c.sp = sp;
        return;
    }
    getcontext(&c.uc);
    c.uc.uc_stack.ss_sp = stack;
    c.uc.uc_stack.ss_size = bytes;
    c.uc.uc_link = link;
    makecontext(&c.uc, fiber_main, 0);
}

void context_switch(saved_context &from, saved_context &to) {
#if PMOE_EMU_FAST_SWITCH
    if (use_fast_switch) {
        pmoe_emu_switch_stacks(&from.sp, to.sp);
        return;
    }
#endif
    swapcontext(&from.uc, &to.uc);
}

struct fiber {
    thread_view view; /* first, so current_thread can point at it */
    saved_context context;
    fiber_state state;
    int linear;         /* x + y X + z X Y */
    unsigned warp_mask; /* the mask of the warp operation it waits in */
    uint64_t warp_ops;  /* warp operations completed */
    size_t shared_seen; /* shared declarations reached */
    int stack;          /* the pool stack it runs on (its own, or a predecessor's) */
    void *asan_fake_stack;
};

struct warp_slots {
    uint64_t slot[2][32];
};

enum { ARENA_BYTES = 48 * 1024 };

struct block_run {
    block_view view;
    std::vector<fiber> fibers;
    std::vector<warp_slots> warps;
    saved_context scheduler;
    const std::function<void()> *body = nullptr;
    alignas(16) unsigned char arena[ARENA_BYTES];
    size_t arena_used = 0;
    std::vector<size_t> shared_offsets, shared_sizes;
    size_t dynamic_bytes = 0;
    bool failed = false;
    std::vector<int> order; /* this pass's order of the threads */
    int pos = 0;            /* the place in it of the thread running now */
};

struct settings {
    bool loaded = false;
    int order = PMOE_EMU_FORWARD;
    uint64_t seed = 1;
#ifdef PMOE_EMU_ASAN
    size_t stack_bytes = 256 * 1024; /* ASan's redzones need room */
#else
    size_t stack_bytes = 64 * 1024;
#endif
};

thread_local block_run *run = nullptr;
thread_local fiber *self = nullptr;
thread_local int status = 0;
thread_local std::string message;
thread_local std::vector<unsigned char *> stacks;
thread_local size_t stacks_bytes = 0;
settings config; /* process-wide; set before launches */
uint64_t switch_count = 0;

void load_settings() {
    if (config.loaded) return;
    config.loaded = true;
    const char *order = getenv("PMOE_EMU_ORDER");
    if (order && *order) {
        if (strncmp(order, "backward", 8) == 0) config.order = PMOE_EMU_BACKWARD;
        else if (strncmp(order, "shuffle", 7) == 0) {
            config.order = PMOE_EMU_SHUFFLE;
            if (order[7] == ':') config.seed = strtoull(order + 8, nullptr, 10);
        }
    }
    const char *kib = getenv("PMOE_EMU_STACK_KIB");
    if (kib && atoi(kib) >= 16) config.stack_bytes = (size_t)atoi(kib) * 1024;
    use_fast_switch = PMOE_EMU_FAST_SWITCH && !shadow_stack_active();
}

void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void fail(const char *fmt, ...) {
    if (status) return; /* keep the first fault */
    char buf[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    message = buf;
    status = PMOE_KERNEL_ERR_EMULATOR;
    if (run) run->failed = true;
}

std::string where() {
    char buf[160];
    if (!run || !self) return "";
    snprintf(buf, sizeof buf, " (block %u,%u,%u thread %u,%u,%u)", run->view.block_idx.x,
             run->view.block_idx.y, run->view.block_idx.z, self->view.thread_idx.x,
             self->view.thread_idx.y, self->view.thread_idx.z);
    return buf;
}

uint64_t splitmix(uint64_t &state) {
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

bool ensure_stacks(size_t count) {
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    if (stacks_bytes != config.stack_bytes) { /* size changed: start over */
        for (unsigned char *s : stacks) munmap(s - page, stacks_bytes + page);
        stacks.clear();
        stacks_bytes = config.stack_bytes;
    }
    while (stacks.size() < count) {
        void *p = mmap(nullptr, stacks_bytes + page, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED) return false;
        mprotect(p, page, PROT_NONE); /* the guard page below the stack */
        stacks.push_back(static_cast<unsigned char *>(p) + page);
    }
    return true;
}

#ifdef PMOE_EMU_ASAN
thread_local const void *scheduler_stack = nullptr;
thread_local size_t scheduler_stack_size = 0;
void entered_fiber() {
    __sanitizer_finish_switch_fiber(self->asan_fake_stack, &scheduler_stack, &scheduler_stack_size);
}
void leaving_fiber(bool for_good) {
    __sanitizer_start_switch_fiber(for_good ? nullptr : &self->asan_fake_stack, scheduler_stack,
                                   scheduler_stack_size);
}
#else
void entered_fiber() {}
void leaving_fiber(bool) {}
#endif

void fiber_main() {
    entered_fiber();
    for (;;) {
        (*run->body)();
        self->state = FINISHED;
        /* The next thread of the pass, when it has not started, runs here. */
        block_run &b = *run;
        if (b.failed || b.pos + 1 >= (int)b.order.size()) break;
        fiber &next = b.fibers[b.order[b.pos + 1]];
        if (next.state != NOT_STARTED) break;
        b.pos++;
        next.state = RUNNABLE;
        next.stack = self->stack;
        self = &next;
        current_thread = &next.view;
    }
    leaving_fiber(true);
    context_switch(self->context, run->scheduler); /* never resumed */
    abort();
}

void switch_to_scheduler() {
    switch_count++;
    leaving_fiber(false);
    context_switch(self->context, run->scheduler);
    entered_fiber();
}

/* Releases every warp whose waiting lanes form complete masks. */
bool release_warps(block_run &b) {
    bool released = false;
    const int count = (int)b.fibers.size();
    for (int w = 0; w * 32 < count; w++) {
        const int first = w * 32, last = first + 32 < count ? first + 32 : count;
        for (int i = first; i < last; i++) {
            fiber &f = b.fibers[i];
            if (f.state != AT_WARP_BARRIER) continue;
            bool complete = true;
            for (int lane = 0; lane < 32 && complete; lane++) {
                if (!((f.warp_mask >> lane) & 1u)) continue;
                const fiber &g = b.fibers[first + lane]; /* mask checked against the block size */
                complete = g.state == AT_WARP_BARRIER && g.warp_mask == f.warp_mask;
                if (complete && g.warp_ops != f.warp_ops) {
                    self = &b.fibers[i];
                    fail("lanes %d and %d of warp %d meet in different warp operations%s",
                         i - first, lane, w, where().c_str());
                    return false;
                }
            }
            if (!complete) continue;
            for (int lane = 0; lane < 32; lane++)
                if ((f.warp_mask >> lane) & 1u) b.fibers[first + lane].state = RUNNABLE;
            released = true;
        }
    }
    return released;
}

bool release_block(block_run &b) {
    int waiting = 0, finished = -1;
    for (fiber &f : b.fibers) {
        if (f.state == AT_BLOCK_BARRIER) waiting++;
        else if (f.state == FINISHED) finished = f.linear;
        else return false;
    }
    if (!waiting) return false;
    if (finished >= 0) {
        fail("__syncthreads() not reached by thread %d, which returned, in block %u,%u,%u",
             finished, b.view.block_idx.x, b.view.block_idx.y, b.view.block_idx.z);
        return false;
    }
    for (fiber &f : b.fibers) f.state = RUNNABLE;
    return true;
}

void init_fiber(block_run &b, int i, dim3 dim) {
    fiber &f = b.fibers[i];
    f.linear = i;
    f.view.thread_idx = {(unsigned)i % dim.x, ((unsigned)i / dim.x) % dim.y,
                         (unsigned)i / (dim.x * dim.y)};
    f.state = NOT_STARTED;
    f.warp_mask = 0;
    f.warp_ops = 0;
    f.shared_seen = 0;
    f.stack = i;
    f.asan_fake_stack = nullptr;
}

/* Kept out of run_block: getcontext "returns twice" as far as the compiler
 * knows, which would pin run_block's locals to memory. */
__attribute__((noinline)) void start_fiber(block_run &b, fiber &f) {
    context_start(f.context, stacks[f.stack], stacks_bytes, &b.scheduler.uc);
    f.state = RUNNABLE;
}

void run_block(block_run &b, uint64_t block_linear) {
    const int count = (int)b.fibers.size();
    const dim3 dim = b.view.block_dim;
    /* Dynamic shared memory is filled here, each static array when it is
     * declared (shared_array): no byte is read that was not filled. */
    memset(b.arena, 0xff, b.dynamic_bytes);
    b.arena_used = 0;
    b.shared_offsets.clear();
    b.shared_sizes.clear();
    b.failed = false;
    for (int i = 0; i < count; i++) init_fiber(b, i, dim);
    if (b.dynamic_bytes) b.arena_used = (b.dynamic_bytes + 15) / 16 * 16;
    std::vector<int> &order = b.order;
    order.resize(count);
    uint64_t rng = config.seed * 0x2545f4914f6cdd1dull + block_linear;
    for (;;) {
        for (int i = 0; i < count; i++)
            order[i] = config.order == PMOE_EMU_BACKWARD ? count - 1 - i : i;
        if (config.order == PMOE_EMU_SHUFFLE) /* a fresh order at every barrier */
            for (int i = count - 1; i > 0; i--) {
                const int j = (int)(splitmix(rng) % (uint64_t)(i + 1));
                const int t = order[i];
                order[i] = order[j];
                order[j] = t;
            }
        for (b.pos = 0; b.pos < count; b.pos++) { /* a fiber that chains moves b.pos on */
            fiber &f = b.fibers[order[b.pos]];
            if (f.state == NOT_STARTED) start_fiber(b, f);
            else if (f.state != RUNNABLE) continue;
            self = &f;
            current_thread = &f.view;
            switch_count++;
#ifdef PMOE_EMU_ASAN
            void *fake_stack = nullptr;
            __sanitizer_start_switch_fiber(&fake_stack, stacks[f.stack], stacks_bytes);
            context_switch(b.scheduler, f.context);
            __sanitizer_finish_switch_fiber(fake_stack, nullptr, nullptr);
#else
            context_switch(b.scheduler, f.context);
#endif
            if (b.failed) break;
        }
        self = nullptr;
        if (b.failed) return;
        bool all_done = true;
        for (const fiber &f : b.fibers) all_done = all_done && f.state == FINISHED;
        if (all_done) return;
        if (release_warps(b) || (!b.failed && release_block(b))) continue;
        if (b.failed) return;
        int stuck = -1;
        for (const fiber &f : b.fibers)
            if (f.state == AT_WARP_BARRIER) {
                stuck = f.linear;
                break;
            }
        fail("deadlock in block %u,%u,%u: thread %d waits in a warp operation (mask %08x) "
             "that some lane of its mask never joins",
             b.view.block_idx.x, b.view.block_idx.y, b.view.block_idx.z, stuck,
             stuck >= 0 ? b.fibers[stuck].warp_mask : 0u);
        return;
    }
}

} /* namespace */

void launch_impl(dim3 grid, dim3 block, size_t shared_bytes, const std::function<void()> &body) {
    load_settings();
    const uint64_t threads = (uint64_t)block.x * block.y * block.z;
    if (!threads || threads > 1024 || block.z > 64 || !grid.x || !grid.y || !grid.z ||
        grid.y > 65535 || grid.z > 65535 || grid.x > 0x7fffffffu) {
        fail("invalid launch configuration: grid %u,%u,%u block %u,%u,%u", grid.x, grid.y, grid.z,
             block.x, block.y, block.z);
        return;
    }
    if (shared_bytes > ARENA_BYTES) {
        fail("launch asks %zu bytes of dynamic shared memory (over 48 KiB)", shared_bytes);
        return;
    }
    if (!ensure_stacks(threads)) {
        fail("cannot map %llu fiber stacks of %zu bytes", (unsigned long long)threads,
             config.stack_bytes);
        return;
    }
    /* One block_run per launch, reused for each block; it holds a 48 KiB
     * arena, so it lives on the heap. */
    std::unique_ptr<block_run> holder(new block_run);
    block_run &b = *holder;
    b.fibers.resize(threads);
    b.warps.resize((threads + 31) / 32);
    b.body = &body;
    b.dynamic_bytes = shared_bytes;
    b.view.block_dim = block;
    b.view.grid_dim = grid;
    block_run *outer_run = run;
    block_view *outer_block = current_block;
    run = &b;
    current_block = &b.view;
    uint64_t linear = 0;
    for (unsigned z = 0; z < grid.z && !status; z++)
        for (unsigned y = 0; y < grid.y && !status; y++)
            for (unsigned x = 0; x < grid.x && !status; x++, linear++) {
                b.view.block_idx = {x, y, z};
                run_block(b, linear);
            }
    run = outer_run;
    current_block = outer_block;
}

int take_status() {
    const int s = status;
    status = 0;
    return s;
}

const char *last_message() { return message.c_str(); }

void syncthreads() {
    self->state = AT_BLOCK_BARRIER;
    switch_to_scheduler();
}

int lane_id() { return self->linear & 31; }

const uint64_t *warp_exchange(unsigned mask, uint64_t mine) {
    fiber &f = *self;
    const int lane = f.linear & 31, warp = f.linear >> 5;
    const int count = (int)run->fibers.size();
    const int lanes_here = count - warp * 32 < 32 ? count - warp * 32 : 32;
    const unsigned existing = lanes_here == 32 ? 0xffffffffu : (1u << lanes_here) - 1u;
    if (!((mask >> lane) & 1u)) {
        fail("a warp operation's mask %08x leaves out its own lane %d%s", mask, lane,
             where().c_str());
        switch_to_scheduler();
    }
    if (mask & ~existing) {
        fail("a warp operation's mask %08x names lanes beyond the block's %d threads%s", mask,
             count, where().c_str());
        switch_to_scheduler();
    }
    warp_slots &w = run->warps[warp];
    const int buffer = (int)(f.warp_ops & 1);
    w.slot[buffer][lane] = mine;
    f.warp_mask = mask;
    f.state = AT_WARP_BARRIER;
    switch_to_scheduler();
    f.warp_ops++;
    return w.slot[buffer];
}

void report(const char *what) { fail("%s%s", what, where().c_str()); }

void *shared_array(size_t bytes, size_t align) {
    block_run &b = *run;
    fiber &f = *self;
    const size_t index = f.shared_seen++;
    if (index < b.shared_offsets.size()) {
        if (b.shared_sizes[index] != bytes)
            fail("shared declaration %zu has %zu bytes here and %zu in another thread%s", index,
                 bytes, b.shared_sizes[index], where().c_str());
        return b.arena + b.shared_offsets[index];
    }
    if (index != b.shared_offsets.size()) {
        fail("shared declarations reached out of order%s", where().c_str());
        return b.arena;
    }
    size_t offset = (b.arena_used + (align < 16 ? 16 : align) - 1) / 16 * 16;
    if (offset + bytes > ARENA_BYTES) {
        fail("shared memory over 48 KiB (%zu bytes static + dynamic)%s", offset + bytes,
             where().c_str());
        switch_to_scheduler();
    }
    b.arena_used = offset + bytes;
    memset(b.arena + offset, 0xff, bytes); /* NaN, -1: a read before a write shows */
    b.shared_offsets.push_back(offset);
    b.shared_sizes.push_back(bytes);
    return b.arena + offset;
}

void *dynamic_shared() { return run->arena; }

} /* namespace pmoe_emu */

extern "C" void pmoe_emu_set_order(int order, uint64_t seed) {
    pmoe_emu::load_settings();
    pmoe_emu::config.order = order;
    pmoe_emu::config.seed = seed;
}

extern "C" uint64_t pmoe_emu_switches(void) { return pmoe_emu::switch_count; }
