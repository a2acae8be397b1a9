/* cores.c: the available cores and whether they are shared (cores.h).
 *
 * sched_getaffinity gives the cores a launcher (taskset, a container, an
 * MPI binding) left to this process; a cgroup v2 quota (docker --cpus)
 * further limits the time it may use, which more threads than the quota
 * only slice finer. "Shared" reads /proc/loadavg: its fourth field counts
 * the tasks runnable at this instant (this process among them), which sees
 * a busy neighbour started a second ago; the load average sees one that
 * is busy on and off. */
#define _GNU_SOURCE
#include "core/cores.h"

#include <sched.h>
#include <stdio.h>
#include <stdlib.h>

static int quota_cores(void) {
    FILE *f = fopen("/sys/fs/cgroup/cpu.max", "r");
    if (!f) return 0;
    char quota[32] = "";
    long period = 0;
    const int got = fscanf(f, "%31s %ld", quota, &period);
    fclose(f);
    if (got != 2 || period <= 0 || quota[0] < '0' || quota[0] > '9') return 0; /* "max" */
    const long q = strtol(quota, NULL, 10);
    return q > 0 ? (int)((q + period - 1) / period) : 0;
}

int pmoe_cores_available(void) {
    int cores = 0;
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) cores = CPU_COUNT(&set);
    const int quota = quota_cores();
    if (quota > 0 && (cores == 0 || quota < cores)) cores = quota;
    return cores > 0 ? cores : 1;
}

int pmoe_cores_shared(void) {
    FILE *f = fopen("/proc/loadavg", "r");
    if (!f) return 0;
    double load1 = 0.0;
    int running = 0, total = 0;
    const int got = fscanf(f, "%lf %*f %*f %d/%d", &load1, &running, &total);
    fclose(f);
    if (got != 3) return 0;
    return running - 1 >= 1 || load1 >= 1.0;
}
