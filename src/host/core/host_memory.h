/* host_memory.h: how much host memory this process may still take.
 *
 * Linux hands out memory lazily: an allocation beyond what is really there
 * succeeds, and the process is killed without a word (the OOM killer, or a
 * memory cgroup's limit) when the pages are first touched. So a backend asks
 * here once, before it allocates the model, and refuses an allocation that
 * would go beyond the answer with a one-line error instead; a data loader
 * asks before each large buffer (pmoe_host_memory_check).
 *
 * Ranks of one job on one node share its memory: the communicator says how
 * many there are (pmoe_host_memory_set_ranks_on_node), and each rank counts
 * on its share of what the node (or the cgroup they share) has left. An
 * address-space limit (ulimit -v) is each process's own and is not shared. */
#ifndef PMOE_CORE_HOST_MEMORY_H
#define PMOE_CORE_HOST_MEMORY_H

#include <stddef.h>
#include <stdint.h>

#include "pmoe/status.h"

/* The smallest of: MemAvailable + SwapFree (/proc/meminfo); each enclosing
 * memory cgroup's limit less its usage (v2 memory.max, v1
 * memory.limit_in_bytes; page cache counted as free); the address-space
 * limit (ulimit -v) less the process's size and what `threads` threads
 * will map on their first GEMM. The node-wide ones (MemAvailable, cgroups)
 * are divided by the ranks on this node. Names the binding one in `source`
 * ("cgroup memory.max", "MemAvailable", "ulimit -v", or e.g. "MemAvailable
 * / 2 ranks on this node"; 64 bytes hold any). -1 when nothing is known. */
int64_t pmoe_host_memory_available(int threads, char *source, size_t source_size);

/* How many processes of this job share this node's memory (>= 1; 1 until a
 * communicator says otherwise). Process-wide, like the thread count: set
 * once by pmoe_comm_open, before the data and the backend are made. */
void pmoe_host_memory_set_ranks_on_node(int ranks);
int pmoe_host_memory_ranks_on_node(void);

/* PMOE_OK when `bytes` more fit in what is available (one thread's later
 * mappings kept aside under ulimit -v), else PMOE_ERR_OOM with the one
 * line "out of host memory: loading WHAT needs X MiB, only Y MiB available
 * (SOURCE)". Unknown availability passes. */
pmoe_status pmoe_host_memory_check(int64_t bytes, const char *what, pmoe_error *err);

#endif
