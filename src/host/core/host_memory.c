/* host_memory.c: see host_memory.h.
 *
 * The cgroup is found from /proc/self/cgroup under the usual mount points
 * (v2 at /sys/fs/cgroup or /sys/fs/cgroup/unified, v1's memory controller at
 * /sys/fs/cgroup/memory); inside a cgroup namespace the process's path is
 * "/", the mount's root. A limit counts what its cgroup already uses less
 * the file cache it can drop (shared memory and tmpfs files stay counted),
 * and v2 limits are read at every level up to the root, since each binds.
 * Under an address-space limit (ulimit -v) the threads' later mappings are
 * kept aside too.
 *
 * Ranks on one node are told apart only by the count the communicator sets:
 * each takes an equal share of the node-wide figure, whether or not the
 * others have started allocating (a rank that measures after another has
 * loaded its data sees less, and so errs on the side of refusing). */
#include "core/host_memory.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

/* The number after `key` in a "key value" text file (kB lines too), or -1. */
static int64_t read_field(const char *path, const char *key) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[256];
    int64_t value = -1;
    const size_t len = strlen(key);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, key, len) == 0 &&
            (line[len] == ' ' || line[len] == ':' || line[len] == '\t')) {
            value = strtoll(line + len + 1, NULL, 10);
            break;
        }
    fclose(f);
    return value;
}

/* A file holding one number ("max" and missing files: -1). */
static int64_t read_number(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char text[64] = "";
    const int got = fgets(text, sizeof text, f) != NULL;
    fclose(f);
    if (!got || text[0] < '0' || text[0] > '9') return -1;
    return strtoll(text, NULL, 10);
}

static void take(int64_t *best, char *source, size_t size, int64_t candidate, const char *what) {
    if (candidate < 0) candidate = 0;
    if (*best >= 0 && candidate >= *best) return;
    *best = candidate;
    snprintf(source, size, "%s", what);
}

/* The cgroup path of this process for controller `name` (v2: ""), or 0. */
static int cgroup_path(const char *name, char *out, size_t size) {
    FILE *f = fopen("/proc/self/cgroup", "r");
    if (!f) return 0;
    char line[1024];
    int found = 0;
    while (!found && fgets(line, sizeof line, f)) {
        char *first = strchr(line, ':'), *second = first ? strchr(first + 1, ':') : NULL;
        if (!second) continue;
        *second = '\0';
        const char *controllers = first + 1, *path = second + 1;
        int match = !name[0] ? controllers[0] == '\0' : 0;
        for (const char *c = controllers; name[0] && *c;) { /* a comma-separated list */
            const size_t n = strcspn(c, ",");
            match |= n == strlen(name) && strncmp(c, name, n) == 0;
            c += n + (c[n] == ',');
        }
        if (match) {
            snprintf(out, size, "%s", path);
            out[strcspn(out, "\n")] = '\0';
            found = 1;
        }
    }
    fclose(f);
    return found;
}

/* The folder of the cgroup at `path` under mount `root`; falls back on the
 * root itself (a cgroup namespace shows the mount's root as the path). */
static int cgroup_folder(const char *root, const char *path, const char *probe, char *out,
                         size_t size) {
    char file[1400];
    snprintf(out, size, "%s%s", root, path);
    snprintf(file, sizeof file, "%s/%s", out, probe);
    FILE *f = fopen(file, "r");
    if (!f) {
        snprintf(out, size, "%s", root);
        snprintf(file, sizeof file, "%s/%s", out, probe);
        f = fopen(file, "r");
    }
    if (f) fclose(f);
    return f != NULL;
}

static void cgroup_v2(int64_t *best, char *source, size_t size) {
    static const char *const roots[] = {"/sys/fs/cgroup", "/sys/fs/cgroup/unified"};
    char path[1024], folder[1200], file[1300];
    if (!cgroup_path("", path, sizeof path)) return;
    for (int r = 0; r < 2; r++) {
        if (!cgroup_folder(roots[r], path, "memory.current", folder, sizeof folder)) continue;
        for (;;) { /* this level, then each parent up to the mount's root */
            snprintf(file, sizeof file, "%s/memory.max", folder);
            const int64_t max = read_number(file);
            snprintf(file, sizeof file, "%s/memory.current", folder);
            const int64_t used = read_number(file);
            snprintf(file, sizeof file, "%s/memory.stat", folder);
            const int64_t active = read_field(file, "active_file"),
                          inactive = read_field(file, "inactive_file");
            const int64_t cache = (active > 0 ? active : 0) + (inactive > 0 ? inactive : 0);
            if (max >= 0 && used >= 0)
                take(best, source, size, max - (used - cache), "cgroup memory.max");
            char *slash = strrchr(folder, '/');
            if (!slash || strlen(folder) <= strlen(roots[r])) break;
            *slash = '\0';
        }
        return;
    }
}

static void cgroup_v1(int64_t *best, char *source, size_t size) {
    char path[1024], folder[1200], file[1300];
    if (!cgroup_path("memory", path, sizeof path)) return;
    if (!cgroup_folder("/sys/fs/cgroup/memory", path, "memory.usage_in_bytes", folder,
                       sizeof folder))
        return;
    snprintf(file, sizeof file, "%s/memory.stat", folder);
    int64_t limit = read_field(file, "hierarchical_memory_limit"); /* the tightest above too */
    const int64_t active = read_field(file, "total_active_file"),
                  inactive = read_field(file, "total_inactive_file");
    snprintf(file, sizeof file, "%s/memory.limit_in_bytes", folder);
    const int64_t own = read_number(file);
    if (limit < 0 || (own >= 0 && own < limit)) limit = own;
    snprintf(file, sizeof file, "%s/memory.usage_in_bytes", folder);
    const int64_t used = read_number(file);
    const int64_t cache = (active > 0 ? active : 0) + (inactive > 0 ? inactive : 0);
    if (limit >= 0 && used >= 0 && limit < INT64_MAX / 2) /* "no limit" is about 2^63 */
        take(best, source, size, limit - (used - cache), "cgroup memory.limit_in_bytes");
}

static int ranks_on_node = 1;

void pmoe_host_memory_set_ranks_on_node(int ranks) { ranks_on_node = ranks > 1 ? ranks : 1; }

int pmoe_host_memory_ranks_on_node(void) { return ranks_on_node; }

int64_t pmoe_host_memory_available(int threads, char *source, size_t source_size) {
    int64_t best = -1;
    const int64_t available = read_field("/proc/meminfo", "MemAvailable"),
                  swap = read_field("/proc/meminfo", "SwapFree");
    if (available >= 0)
        take(&best, source, source_size, 1024 * (available + (swap > 0 ? swap : 0)),
             "MemAvailable");
    cgroup_v2(&best, source, source_size);
    cgroup_v1(&best, source, source_size);
    if (best >= 0 && ranks_on_node > 1) { /* the node's memory, shared by its ranks */
        char node_wide[40];
        snprintf(node_wide, sizeof node_wide, "%s", source);
        best /= ranks_on_node;
        snprintf(source, source_size, "%s / %d ranks on this node", node_wide, ranks_on_node);
    }
    struct rlimit as;
    if (getrlimit(RLIMIT_AS, &as) == 0 && as.rlim_cur != RLIM_INFINITY) {
        /* address space each thread maps later, on its first use: OpenBLAS's
         * GEMM buffer (128 MiB; OpenBLAS retries forever when it cannot map
         * it), a malloc arena (64 MiB) and a stack (8 MiB) */
        const int64_t later = (int64_t)(threads > 0 ? threads : 1) * (200 << 20);
        const int64_t size = read_field("/proc/self/status", "VmSize");
        if (size >= 0)
            take(&best, source, source_size, (int64_t)as.rlim_cur - 1024 * size - later,
                 "ulimit -v");
    }
    return best;
}

pmoe_status pmoe_host_memory_check(int64_t bytes, const char *what, pmoe_error *err) {
    char source[64] = "";
    const int64_t available = pmoe_host_memory_available(1, source, sizeof source);
    if (available < 0 || bytes <= available) return PMOE_OK;
    return pmoe_fail(err, PMOE_ERR_OOM,
                     "out of host memory: loading %s needs %.1f MiB, only %.1f MiB available (%s)",
                     what, (double)bytes / 1048576.0, (double)available / 1048576.0, source);
}
