/* machine.c: what a bench result says of the machine: the CPU's name, the
 * load and the share of the cores other processes took during the run
 * (threaded timings are unreliable on a busy machine), and the peak a
 * large SGEMM reaches, which the run's GFLOP/s are held against. */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>
#include <time.h>

#include "backend/backend.h"
#include "bench/bench_internal.h"

void bench_cpu_model_name(char *out, size_t size) {
    snprintf(out, size, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) != 0) continue;
        const char *v = strchr(line, ':');
        if (!v) break;
        v++;
        while (*v == ' ' || *v == '\t') v++;
        snprintf(out, size, "%s", v);
        out[strcspn(out, "\n")] = '\0';
        break;
    }
    fclose(f);
}

bench_cpu_clock bench_read_cpu_clock(void) {
    bench_cpu_clock c = {pmoe_now_seconds(), -1.0, 0.0};
    FILE *f = fopen("/proc/stat", "r");
    if (f) {
        unsigned long long v[8] = {0};
        if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                   &v[4], &v[5], &v[6],
                   &v[7]) == 8) /* user nice system idle iowait irq softirq steal */
            c.busy = (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / 100.0; /* USER_HZ */
        fclose(f);
    }
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    c.self = (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
    return c;
}

/* The share of all cores that other processes kept busy between a and b. */
double bench_others_share(bench_cpu_clock a, bench_cpu_clock b, int cores) {
    if (a.busy < 0 || b.busy < 0 || b.wall <= a.wall) return -1.0;
    const double others = (b.busy - a.busy) - (b.self - a.self);
    const double share = others / ((b.wall - a.wall) * cores);
    return share < 0 ? 0.0 : share > 1 ? 1.0 : share;
}

double bench_load_average(void) {
    double v = -1.0;
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%lf", &v) != 1) v = -1.0;
        fclose(f);
    }
    return v;
}

pmoe_status pmoe_bench_peak_gflops(const pmoe_config *cfg, int size, double *gflops,
                                   pmoe_error *err) {
    pmoe_backend *be = NULL;
    pmoe_status st = pmoe_backend_create(cfg->train.device, cfg->train.threads, &be, err);
    if (st) return st;
    const int64_t count = (int64_t)size * size;
    float *a = NULL, *b = NULL, *c = NULL;
    st = be->alloc(be, (size_t)count * sizeof(float), (void **)&a, err);
    if (!st) st = be->alloc(be, (size_t)count * sizeof(float), (void **)&b, err);
    if (!st) st = be->alloc(be, (size_t)count * sizeof(float), (void **)&c, err);
    const int on_cpu = strcmp(be->name, "cpu") == 0;
    double best = INFINITY;
    if (!st) {
        be->fill(be, a, 0.5f, count);
        be->fill(be, b, 0.25f, count);
        /* On the CPU the peak is OpenBLAS's own threaded SGEMM with the run's
         * thread count (the engine's GEMMs run single-threaded OpenBLAS in
         * fixed blocks; see cpu_backend.c); elsewhere, the backend's GEMM. */
        if (on_cpu) openblas_set_num_threads(omp_get_max_threads());
        for (int rep = 0; !st && rep < 4; rep++) {
            const double began = pmoe_now_seconds();
            if (on_cpu)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, size, size, size, 1.0f, a,
                            size, b, size, 0.0f, c, size);
            else
                be->ops->gemm(be, 0, 0, size, size, size, 1.0f, a, size, 0, b, size, 0, 0.0f, c,
                              size, 0, 1);
            st = be->synchronize(be, err);
            const double took = pmoe_now_seconds() - began;
            if (rep > 0 && took < best) best = took; /* rep 0 warms up */
        }
        if (on_cpu) openblas_set_num_threads(1);
    }
    be->release(be, a, (size_t)count * sizeof(float));
    be->release(be, b, (size_t)count * sizeof(float));
    be->release(be, c, (size_t)count * sizeof(float));
    pmoe_backend_destroy(be);
    if (!st) *gflops = 2.0 * (double)size * size * size / best / 1e9;
    return st;
}
