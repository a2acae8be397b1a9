/* cores.h: how many cores this process may use, and whether other
 * processes keep them busy: the facts behind the CPU defaults (thread count,
 * OpenMP's wait policy) on a machine shared with other work. */
#ifndef PMOE_CORE_CORES_H
#define PMOE_CORE_CORES_H

/* The cores this process may run on: sched_getaffinity's count, capped by
 * a cgroup v2 CPU quota (cpu.max "quota period", rounded up); at least 1. */
int pmoe_cores_available(void);

/* 1 when other processes are busy on those cores now: another runnable
 * task besides this one (/proc/loadavg's running count) or a 1-minute load
 * average of 1 or more. 0 when idle or when it cannot be told. */
int pmoe_cores_shared(void);

#endif
