/* host_memory.h: how much host memory this process may still take.
 *
 * Linux hands out memory lazily: an allocation beyond what is really there
 * succeeds, and the process is killed without a word (the OOM killer, or a
 * memory cgroup's limit) when the pages are first touched. So a backend asks
 * here once, before it allocates the model, and refuses an allocation that
 * would go beyond the answer with a one-line error instead. */
#ifndef PMOE_CORE_HOST_MEMORY_H
#define PMOE_CORE_HOST_MEMORY_H

#include <stddef.h>
#include <stdint.h>

/* The smallest of: MemAvailable + SwapFree (/proc/meminfo); each enclosing
 * memory cgroup's limit less its usage (v2 memory.max, v1
 * memory.limit_in_bytes; page cache counted as free); the address-space
 * limit (ulimit -v) less the process's size and what `threads` threads
 * will map on their first GEMM. Names the binding one in `source` ("cgroup
 * memory.max", "MemAvailable", "ulimit -v"). -1 when nothing is known. */
int64_t pmoe_host_memory_available(int threads, char *source, size_t source_size);

#endif
