/* gpu_bench.c: the GPU figures of the CUDA-backend issue (run by
 * tools/device_check.sh; prints figures, asserts nothing about speed).
 *
 * 1. Copy bandwidth: a device-to-device cudaMemcpyAsync of 1 GiB, counted
 *    as bytes read plus bytes written over the time; the memory floor of a
 *    kernel is its bytes (each read or written once) over this bandwidth.
 * 2. The fused gate/top-l kernel at B = 256, n = 64, k = 8, d = 640,
 *    l = 16: checked against the CPU first (scores within tolerance, picks
 *    exactly the CPU rule on the kernel's scores), then timed with CUDA
 *    events over many launches, against its floor.
 * 3. One training step of the two-layer pMoE (forward, loss, backward,
 *    SGD), and of the CNN, through the backend table as `pmoe train` runs
 *    it, in two sizes: the paper's mosaic job (B = 20, n = 16, d = 784,
 *    k = 8, l = 6, m = 40) and a large one (B = 256, n = 64, d = 640,
 *    k = 8, l = 16, m = 640). The step includes the loss read-back that a
 *    real step does; the CPU backend's step time is given beside it.
 *
 * Usage: gpu_bench [--json FILE] [--quick]. Exits 77 without a device. */
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/cpu_ops.h"
#include "cuda/cuda_backend.h"
#include "kernels/pmoe_kernels.h"
#include "model/model.h"

#define CHECK_CUDA(call)                                                                           \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) {                                                                   \
            fprintf(stderr, "gpu_bench: %s failed: %s at %s:%d\n", #call, cudaGetErrorString(e_),  \
                    __FILE__, __LINE__);                                                           \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

static void die(pmoe_status s, const pmoe_error *err) {
    if (!s) return;
    fprintf(stderr, "gpu_bench: %s\n", err->message);
    exit(1);
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static void fill(float *x, int64_t n, uint64_t seed, float lo, float hi) {
    uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;
    for (int64_t i = 0; i < n; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        x[i] = lo + (hi - lo) * (float)((s >> 11) * (1.0 / 9007199254740992.0));
    }
}

static void *dev(pmoe_backend *be, const void *host, size_t bytes) {
    void *p = NULL;
    pmoe_error err = {PMOE_OK, ""};
    die(be->alloc(be, bytes, &p, &err), &err);
    if (host) die(be->copy_in(be, p, host, bytes, &err), &err);
    return p;
}

/* Milliseconds per launch of fn over reps, by CUDA events on the stream. */
typedef void (*timed_fn)(void *ctx);
static double time_events(cudaStream_t stream, timed_fn fn, void *ctx, int warmup, int reps) {
    for (int i = 0; i < warmup; i++) fn(ctx);
    cudaEvent_t a, b;
    CHECK_CUDA(cudaEventCreate(&a));
    CHECK_CUDA(cudaEventCreate(&b));
    CHECK_CUDA(cudaEventRecord(a, stream));
    for (int i = 0; i < reps; i++) fn(ctx);
    CHECK_CUDA(cudaEventRecord(b, stream));
    CHECK_CUDA(cudaEventSynchronize(b));
    float ms = 0;
    CHECK_CUDA(cudaEventElapsedTime(&ms, a, b));
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    return ms / reps;
}

typedef struct copy_ctx {
    void *dst, *src;
    size_t bytes;
    cudaStream_t stream;
} copy_ctx;
static void do_copy(void *v) {
    copy_ctx *c = v;
    CHECK_CUDA(cudaMemcpyAsync(c->dst, c->src, c->bytes, cudaMemcpyDeviceToDevice, c->stream));
}

typedef struct gate_ctx {
    int64_t B;
    int n, d, k, l;
    const float *patches, *router;
    float *scores, *gate;
    int32_t *selected;
    cudaStream_t stream;
} gate_ctx;
static void do_gate(void *v) {
    gate_ctx *g = v;
    int rc = pmoe_k_gate_topl_forward(g->B, g->n, g->d, g->k, g->l, PMOE_KERNEL_GATE_RENORM,
                                      g->patches, g->router, g->scores, g->selected, g->gate,
                                      g->stream);
    if (rc) {
        fprintf(stderr, "gpu_bench: gate kernel: %s\n", pmoe_k_error_string(rc));
        exit(1);
    }
}

typedef struct step_figures {
    const char *name;
    double gpu_ms, cpu_ms;
    double loss_gpu, loss_cpu;
} step_figures;

/* Milliseconds per training step of the model on be, over `steps` steps
 * after `warmup` ones; *first_loss is the loss of the first step. */
static double time_steps(pmoe_backend *be, const char *const *sets, int channels, int size,
                         int patch, int classes, int64_t batch, int warmup, int steps,
                         double *first_loss) {
    pmoe_config cfg;
    pmoe_config_default(&cfg);
    pmoe_error err = {PMOE_OK, ""};
    for (int i = 0; sets[i]; i++) die(pmoe_config_set(&cfg, sets[i], &err), &err);
    pmoe_model *m = NULL;
    die(pmoe_model_create(be, &cfg, channels, size, size, patch, classes, batch, &m, &err), &err);
    const int64_t pixels = batch * channels * size * size;
    float *images = malloc((size_t)pixels * 4);
    fill(images, pixels, 5, 0, 1);
    int32_t *labels = malloc((size_t)batch * 4);
    for (int64_t b = 0; b < batch; b++) labels[b] = (int32_t)(b % (classes == 1 ? 2 : classes));
    die(be->copy_in(be, m->images, images, (size_t)pixels * 4, &err), &err);
    die(be->copy_in(be, m->labels, labels, (size_t)batch * 4, &err), &err);
    double t0 = 0, loss = 0;
    int64_t correct;
    for (int s = 0; s < warmup + steps; s++) {
        if (s == warmup) {
            die(be->synchronize(be, &err), &err);
            t0 = now();
        }
        pmoe_model_forward(m, batch);
        die(pmoe_model_loss(m, 1, &loss, &correct, &err), &err);
        pmoe_model_sgd(m, (float)cfg.train.lr, 0.0f, 0.0f);
        if (s == 0) *first_loss = loss;
    }
    die(be->synchronize(be, &err), &err);
    const double ms = (now() - t0) * 1e3 / steps;
    pmoe_model_free(m);
    free(images);
    free(labels);
    return ms;
}

int main(int argc, char **argv) {
    const char *json_path = NULL;
    int quick = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json") && i + 1 < argc) json_path = argv[++i];
        else if (!strcmp(argv[i], "--quick")) quick = 1;
        else {
            fprintf(stderr, "usage: gpu_bench [--json FILE] [--quick]\n");
            return 2;
        }
    }
    char why[256] = "";
    if (pmoe_cuda_device_count(why, sizeof why) == 0) {
        printf("gpu_bench: skipped: %s\n", why);
        return 77;
    }
    pmoe_error err = {PMOE_OK, ""};
    pmoe_backend *be = NULL, *cpu = NULL;
    die(pmoe_cuda_backend_create(0, &be, &err), &err);
    die(pmoe_cpu_backend_create(0, &cpu, &err), &err);
    cudaStream_t stream = (cudaStream_t)pmoe_cuda_backend_stream(be);
    printf("gpu_bench on %s\n", be->name);

    /* 1. Bandwidth. */
    const size_t copy_bytes = (size_t)1 << 30;
    copy_ctx cc = {dev(be, NULL, copy_bytes), dev(be, NULL, copy_bytes), copy_bytes, stream};
    CHECK_CUDA(cudaMemsetAsync(cc.src, 0, copy_bytes, stream));
    const double copy_ms = time_events(stream, do_copy, &cc, 2, quick ? 5 : 20);
    const double bandwidth = 2.0 * copy_bytes / (copy_ms * 1e-3); /* bytes/s, read + write */
    be->release(be, cc.dst, copy_bytes);
    be->release(be, cc.src, copy_bytes);
    printf("device-to-device copy: %.3f ms per GiB, %.0f GB/s (read + write)\n", copy_ms,
           bandwidth / 1e9);

    /* 2. The fused gate / top-l kernel. */
    gate_ctx g = {.B = 256, .n = 64, .d = 640, .k = 8, .l = 16};
    const int64_t pn = g.B * g.n * g.d, sn = g.B * g.n * g.k, gn = g.B * g.k * g.l;
    float *patches = malloc((size_t)pn * 4), *router = malloc((size_t)g.k * g.d * 4);
    fill(patches, pn, 1, -1, 1);
    fill(router, (int64_t)g.k * g.d, 2, -0.5f, 0.5f);
    g.patches = dev(be, patches, (size_t)pn * 4);
    g.router = dev(be, router, (size_t)g.k * g.d * 4);
    g.scores = dev(be, NULL, (size_t)sn * 4);
    g.gate = dev(be, NULL, (size_t)gn * 4);
    g.selected = dev(be, NULL, (size_t)gn * 4);
    g.stream = stream;
    do_gate(&g);
    float *scores = malloc((size_t)sn * 4), *gate = malloc((size_t)gn * 4);
    float *want_scores = malloc((size_t)sn * 4), *want_gate = malloc((size_t)gn * 4);
    int32_t *selected = malloc((size_t)gn * 4), *want_sel = malloc((size_t)gn * 4);
    int32_t *own = malloc((size_t)gn * 4);
    die(be->copy_out(be, scores, g.scores, (size_t)sn * 4, &err), &err);
    die(be->copy_out(be, gate, g.gate, (size_t)gn * 4, &err), &err);
    die(be->copy_out(be, selected, g.selected, (size_t)gn * 4, &err), &err);
    pmoe_route_shape rs = {g.B, g.n, g.d, g.k, g.l, PMOE_GATE_RENORM};
    cpu_gate_topl_forward(NULL, &rs, patches, router, want_scores, want_sel, want_gate);
    double worst_score = 0, worst_gate = 0;
    int64_t pick_errors = 0;
    for (int64_t i = 0; i < sn; i++)
        worst_score =
            fmax(worst_score, fabs(scores[i] - want_scores[i]) / (1e-3 + fabs(want_scores[i])));
    for (int64_t i = 0; i < gn; i++)
        worst_gate = fmax(worst_gate, fabs(gate[i] - want_gate[i]) / (1e-6 + fabs(want_gate[i])));
    for (int64_t q = 0; q < g.B * g.k; q++)
        cpu_topl_select(scores + (q / g.k) * g.n * g.k + q % g.k, g.k, g.n, g.l, own + q * g.l);
    for (int64_t i = 0; i < gn; i++) pick_errors += own[i] != selected[i];
    const int valid = worst_score < 1e-4 && worst_gate < 1e-4 && pick_errors == 0;
    printf("gate kernel check: worst relative score error %.1e, gate %.1e, %lld wrong picks: %s\n",
           worst_score, worst_gate, (long long)pick_errors, valid ? "ok" : "FAILED");
    const double gate_ms = time_events(stream, do_gate, &g, 10, quick ? 50 : 200);
    const double gate_bytes = 4.0 * ((double)pn + (double)g.k * g.d + (double)sn + 2.0 * gn);
    const double floor_ms = gate_bytes / bandwidth * 1e3;
    printf("fused gate/top-l B256 n64 k8 d640 l16: %.2f us, floor %.2f us (%.1f MB once), "
           "%.2fx the floor, %.0f GB/s\n",
           gate_ms * 1e3, floor_ms * 1e3, gate_bytes / 1e6, gate_ms / floor_ms,
           gate_bytes / (gate_ms * 1e-3) / 1e9);
    be->release(be, (void *)g.patches, (size_t)pn * 4);
    be->release(be, (void *)g.router, (size_t)g.k * g.d * 4);
    be->release(be, g.scores, (size_t)sn * 4);
    be->release(be, g.gate, (size_t)gn * 4);
    be->release(be, g.selected, (size_t)gn * 4);

    /* 3. Training steps. */
    static const char *paper_pmoe[] = {"model.experts=8", "model.topl=6", "model.hidden=40", NULL};
    static const char *large_pmoe[] = {"model.experts=8", "model.topl=16", "model.hidden=640",
                                       NULL};
    static const char *paper_cnn[] = {"model.type=cnn", "model.hidden=40", NULL};
    static const char *large_cnn[] = {"model.type=cnn", "model.hidden=640", NULL};
    struct {
        const char *name;
        const char *const *sets;
        int channels, size, patch;
        int64_t batch;
        int cpu_steps;
    } jobs[] = {
        {"pmoe_paper", paper_pmoe, 1, 112, 28, 20, 20},
        {"pmoe_large", large_pmoe, 40, 32, 4, 256, 3},
        {"cnn_paper", paper_cnn, 1, 112, 28, 20, 20},
        {"cnn_large", large_cnn, 40, 32, 4, 256, 2},
    };
    enum { JOBS = sizeof jobs / sizeof *jobs };
    step_figures steps[JOBS];
    for (int j = 0; j < JOBS; j++) {
        steps[j].name = jobs[j].name;
        steps[j].gpu_ms = time_steps(be, jobs[j].sets, jobs[j].channels, jobs[j].size,
                                     jobs[j].patch, 1, jobs[j].batch, 5, quick ? 20 : 100,
                                     &steps[j].loss_gpu);
        steps[j].cpu_ms = time_steps(cpu, jobs[j].sets, jobs[j].channels, jobs[j].size,
                                     jobs[j].patch, 1, jobs[j].batch, 1, jobs[j].cpu_steps,
                                     &steps[j].loss_cpu);
        printf("train step %-11s B%-3lld GPU %8.3f ms  CPU %9.3f ms  (first loss %.6f / %.6f)\n",
               jobs[j].name, (long long)jobs[j].batch, steps[j].gpu_ms, steps[j].cpu_ms,
               steps[j].loss_gpu, steps[j].loss_cpu);
    }

    if (json_path) {
        FILE *f = fopen(json_path, "w");
        if (!f) {
            perror(json_path);
            return 1;
        }
        fprintf(f,
                "{\"device\": \"%s\", \"copy_bandwidth_gbs\": %.1f, \"gate_check\": %s, "
                "\"gate_us\": %.3f, \"gate_floor_us\": %.3f, \"gate_over_floor\": %.3f, "
                "\"gate_shape\": \"B256 n64 k8 d640 l16\", \"steps\": {",
                be->name, bandwidth / 1e9, valid ? "true" : "false", gate_ms * 1e3, floor_ms * 1e3,
                gate_ms / floor_ms);
        for (int j = 0; j < JOBS; j++)
            fprintf(f, "%s\"%s\": {\"gpu_ms\": %.4f, \"cpu_ms\": %.3f, \"batch\": %lld}",
                    j ? ", " : "", steps[j].name, steps[j].gpu_ms, steps[j].cpu_ms,
                    (long long)jobs[j].batch);
        fprintf(f, "}}\n");
        fclose(f);
    }
    free(patches), free(router), free(scores), free(gate), free(want_scores), free(want_gate);
    free(selected), free(want_sel), free(own);
    pmoe_backend_destroy(cpu);
    pmoe_backend_destroy(be);
    return valid ? 0 : 1;
}
