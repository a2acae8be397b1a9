/* bench.c: pmoe_bench_run and its table and JSON (see bench.h).
 *
 * Each model family is a bench_target: it builds itself on a fresh backend
 * (so the backend's peak is that model's alone), says what it costs, and
 * runs one train or inference step on the batch it composed at build time.
 * The timing, the memory split, the table and the JSON only see targets.
 * Today the one family is the two-layer model (pMoE and its CNN). */
#include "bench/bench.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/backend.h"
#include "data/dataset.h"
#include "model/two_layer.h"
#include "train/resolve.h"
#include "train/checkpoint.h"
#include "train/report.h"

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The learning rate of the timed steps. The update's arithmetic runs in full,
 * but the weights keep their initial values, so every timed step computes on
 * the same numbers: with the configured rate, the one repeated batch is
 * learnt by heart within a few dozen steps (at batch 1 within a few), and
 * the vanishing gradients turn subnormal, which costs x86 up to 100 times
 * per operation: a cost of the benchmark, not of training. */
#define BENCH_LR 0.0f

/* ---- targets ---- */

typedef struct bench_target bench_target;
struct bench_target {
    void *state;
    /* Fills out's shape, params, FLOPs and memory (timings are the caller's). */
    void (*describe)(const bench_target *t, pmoe_bench_model *out);
    /* One training step; *loss is the batch's loss before the update. */
    pmoe_status (*train_step)(bench_target *t, double *loss, pmoe_error *err);
    /* Attaches a phase timer to the model's steps (NULL detaches it). */
    void (*set_timer)(bench_target *t, pmoe_phase_timer *timer);
    pmoe_status (*infer_step)(bench_target *t, pmoe_error *err);
    /* Writes dir/<model>.init.safetensors and dir/<model>.batch.safetensors. */
    pmoe_status (*export_peer)(const bench_target *t, const char *dir, pmoe_error *err);
    void (*destroy)(bench_target *t);
};

/* The two-layer model on its batch. */
typedef struct two_layer_target {
    const pmoe_config *cfg;
    pmoe_backend *be;
    pmoe_two_layer *model;
    int64_t batch;
    int channels, height, width;
    float *host_images;
    int32_t *host_labels;
    float *host_labels_float; /* for the peer export */
} two_layer_target;

static void two_layer_destroy(bench_target *t) {
    two_layer_target *s = t->state;
    if (!s) return;
    pmoe_two_layer_free(s->model);
    pmoe_backend_destroy(s->be);
    free(s->host_images);
    free(s->host_labels);
    free(s->host_labels_float);
    free(s);
    t->state = NULL;
}

/* What two_layer_create allocates, split as bench.h says (mirroring its
 * list). Workspace is what else the backend held at its peak: the backward
 * buffers and any op's transient scratch; the test holds the backward
 * buffers to at most that, and the CNN's (which has no scratch) to exactly. */
static void two_layer_memory(const two_layer_target *s, pmoe_bench_memory *mem) {
    const pmoe_two_layer *m = s->model;
    const int64_t B = m->image.batch, n = m->patch_count, d = m->patch_dim, k = m->experts;
    const int64_t l = m->topl, h = m->hidden, c = m->classes, rows = B * l, F = 4, IDX = 4;
    const int64_t image = (int64_t)m->image.channels * m->image.height * m->image.width;
    int64_t params = 0;
    for (int i = 0; i < PARAM_COUNT; i++) {
        const pmoe_param *p = &m->params[i];
        if (p->value.data) params += pmoe_tensor_numel(&p->value) * F;
        if (p->grad.data) params += pmoe_tensor_numel(&p->grad) * F;
        if (p->velocity.data) params += pmoe_tensor_numel(&p->velocity) * F;
    }
    int64_t act = B * image * F + B * n * d * F + k * rows * h * F + B * c * F + B * IDX;
    int64_t backward = k * rows * h * F + B * c * F + 2 * F;
    if (m->has_router) {
        act += B * n * k * F + B * k * l * F + B * k * l * IDX;
        if (m->expert_in) act += k * rows * d * F; /* not with the fused gather */
        backward += B * n * k * F + B * k * l * F + B * IDX + B * F;
    }
    mem->parameter_bytes = params;
    mem->activation_bytes = act;
    mem->backward_bytes = backward;
    mem->device_peak_bytes = s->be->mem.peak_bytes;
    mem->workspace_bytes = mem->device_peak_bytes - params - act;
    mem->host_bytes = B * image * F + B * IDX;
    mem->peak_bytes = mem->device_peak_bytes + mem->host_bytes;
}

static void two_layer_describe(const bench_target *t, pmoe_bench_model *out) {
    const two_layer_target *s = t->state;
    const pmoe_two_layer *m = s->model;
    snprintf(out->model, sizeof out->model, "%s", m->has_router ? "pmoe" : "cnn");
    snprintf(out->gate, sizeof out->gate, "%s", pmoe_gate_mode_name(m->gate_mode));
    out->patches = m->patch_count;
    out->dim = m->patch_dim;
    out->experts = m->experts;
    out->topl = m->topl;
    out->hidden = m->hidden * m->experts;
    out->classes = m->classes;
    out->params = pmoe_two_layer_param_count(m);
    pmoe_two_layer_cost_shape shape = pmoe_two_layer_cost_shape_of(m, &s->cfg->train);
    pmoe_flops_two_layer(&shape, s->batch, &out->flops);
    out->learn_router = shape.learn_router;
    out->train_output = shape.train_output;
    for (int k = 0; k < PMOE_FLOPS_KINDS; k++) {
        out->train_flops[k] = pmoe_flops_train_per_sample(&out->flops, (pmoe_flop_kind)k);
        out->infer_flops[k] = pmoe_flops_infer_per_sample(&out->flops, (pmoe_flop_kind)k);
    }
    two_layer_memory(s, &out->mem);
}

static pmoe_status two_layer_train_step(bench_target *t, double *loss, pmoe_error *err) {
    two_layer_target *s = t->state;
    const pmoe_train_config *tc = &s->cfg->train;
    int64_t correct;
    pmoe_two_layer_forward(s->model, s->batch);
    pmoe_status st = pmoe_two_layer_loss(s->model, 1, loss, &correct, err);
    if (st) return st;
    pmoe_timer_enter(s->model->timer, PMOE_T_OPTIMIZER, 0);
    pmoe_two_layer_sgd(s->model, BENCH_LR, (float)tc->momentum, (float)tc->weight_decay);
    st = s->be->synchronize(s->be, err);
    pmoe_timer_stop(s->model->timer);
    return st;
}

static void wait_for_backend(void *ctx) {
    pmoe_backend *be = ctx;
    be->synchronize(be, NULL); /* a failure shows at the step's own synchronize */
}

static void two_layer_set_timer(bench_target *t, pmoe_phase_timer *timer) {
    two_layer_target *s = t->state;
    if (timer && s->be->asynchronous) {
        timer->wait = wait_for_backend;
        timer->wait_ctx = s->be;
    }
    s->model->timer = timer;
}

static pmoe_status two_layer_infer_step(bench_target *t, pmoe_error *err) {
    two_layer_target *s = t->state;
    pmoe_two_layer_forward(s->model, s->batch);
    return s->be->synchronize(s->be, err);
}

static pmoe_status two_layer_export_peer(const bench_target *t, const char *dir, pmoe_error *err) {
    const two_layer_target *s = t->state;
    const char *name = s->model->has_router ? "pmoe" : "cnn";
    char path[1200];
    pmoe_status st = pmoe_checkpoint_make_dir(dir, err);
    if (st) return st;
    snprintf(path, sizeof path, "%s/%s.init.safetensors", dir, name);
    pmoe_train_position pos;
    memset(&pos, 0, sizeof pos);
    pos.phase = PMOE_PHASE_MAIN;
    pos.epoch = 1;
    st = pmoe_checkpoint_save(path, s->model, s->cfg, &pos, err);
    if (st) return st;
    snprintf(path, sizeof path, "%s/%s.batch.safetensors", dir, name);
    const pmoe_st_entry entries[2] = {
        {"images", 4, {s->batch, s->channels, s->height, s->width}, s->host_images},
        {"labels", 1, {s->batch}, s->host_labels_float},
    };
    const pmoe_st_meta meta[1] = {{"format", "pmoe-bench-batch-1"}};
    return pmoe_safetensors_write(path, entries, 2, meta, 1, err);
}

/* Builds cfg's two-layer model on a fresh backend and composes the first
 * `batch` training samples (wrapping around a smaller set) into it. */
static pmoe_status two_layer_open(const pmoe_config *cfg, const pmoe_dataset *ds, int patch,
                                  int64_t batch, bench_target *t, pmoe_error *err) {
    memset(t, 0, sizeof *t);
    two_layer_target *s = calloc(1, sizeof *s);
    if (!s) return pmoe_fail(err, PMOE_ERR_OOM, "bench: cannot allocate a target");
    t->state = s;
    t->describe = two_layer_describe;
    t->train_step = two_layer_train_step;
    t->set_timer = two_layer_set_timer;
    t->infer_step = two_layer_infer_step;
    t->export_peer = two_layer_export_peer;
    t->destroy = two_layer_destroy;
    s->cfg = cfg;
    s->batch = batch;
    s->channels = ds->channels;
    s->height = ds->height;
    s->width = ds->width;
    const int64_t per_sample = (int64_t)ds->channels * ds->height * ds->width;
    s->host_images = malloc((size_t)(batch * per_sample) * sizeof(float));
    s->host_labels = malloc((size_t)batch * sizeof(int32_t));
    s->host_labels_float = malloc((size_t)batch * sizeof(float));
    if (!s->host_images || !s->host_labels || !s->host_labels_float)
        return pmoe_fail(err, PMOE_ERR_OOM, "bench: out of host memory for a batch of %lld",
                         (long long)batch);
    pmoe_status st = pmoe_backend_create(cfg->train.device, cfg->train.threads, &s->be, err);
    if (!st)
        st = pmoe_two_layer_create(s->be, cfg, ds->channels, ds->height, ds->width, patch,
                                   ds->classes, batch, &s->model, err);
    if (st) return st;
    for (int64_t i = 0; i < batch; i++) {
        const int64_t index = i % ds->count;
        ds->compose(ds, index, s->host_images + i * per_sample);
        s->host_labels[i] = ds->labels[index];
        s->host_labels_float[i] = (float)ds->labels[index];
    }
    st = s->be->copy_in(s->be, s->model->images, s->host_images,
                        (size_t)(batch * per_sample) * sizeof(float), err);
    if (!st)
        st = s->be->copy_in(s->be, s->model->labels, s->host_labels,
                            (size_t)batch * sizeof(int32_t), err);
    return st;
}

/* ---- timing ---- */

static int compare_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Runs warmup + repeats steps, timing each of the last `repeats` alone. */
static pmoe_status time_steps(bench_target *t, int train, int warmup, int repeats,
                              pmoe_timing *out, double *first_loss, double *last_loss,
                              pmoe_error *err) {
    double *ms = malloc((size_t)repeats * sizeof(double));
    if (!ms) return pmoe_fail(err, PMOE_ERR_OOM, "bench: cannot allocate %d timings", repeats);
    pmoe_status st = PMOE_OK;
    for (int i = 0; !st && i < warmup + repeats; i++) {
        double loss = 0.0;
        const double began = now_seconds();
        st = train ? t->train_step(t, &loss, err) : t->infer_step(t, err);
        const double took = now_seconds() - began;
        if (i >= warmup) ms[i - warmup] = 1e3 * took;
        if (train && i == 0 && first_loss) *first_loss = loss;
        if (train && last_loss) *last_loss = loss;
    }
    if (!st) {
        qsort(ms, (size_t)repeats, sizeof *ms, compare_double);
        out->min_ms = ms[0];
        out->max_ms = ms[repeats - 1];
        out->median_ms = repeats % 2 ? ms[repeats / 2] : 0.5 * (ms[repeats / 2 - 1] + ms[repeats / 2]);
    }
    free(ms);
    return st;
}

static pmoe_status bench_target_measure(bench_target *t, const pmoe_config *cfg,
                                        const pmoe_bench_options *options, pmoe_bench_model *out,
                                        pmoe_error *err) {
    pmoe_status st = PMOE_OK;
    if (options && options->peer_dir) st = t->export_peer(t, options->peer_dir, err);
    if (!st)
        st = time_steps(t, 1, cfg->bench.warmup, cfg->bench.repeats, &out->train,
                        &out->first_loss, &out->last_loss, err);
    if (!st) st = time_steps(t, 0, cfg->bench.warmup, cfg->bench.repeats, &out->infer, NULL, NULL, err);
    if (!st) t->describe(t, out); /* before the profiled pass: the peak is the timed steps' */
    if (!st) { /* where a train step's time goes */
        pmoe_phase_timer timer;
        memset(&timer, 0, sizeof timer); /* no wait hook unless set_timer adds one */
        pmoe_timer_reset(&timer);
        t->set_timer(t, &timer);
        double loss;
        for (int i = 0; !st && i < cfg->bench.repeats; i++) st = t->train_step(t, &loss, err);
        t->set_timer(t, NULL);
        for (int i = 0; i < PMOE_T_COUNT; i++)
            out->phase_ms[i] = 1e3 * timer.seconds[i] / (double)cfg->bench.repeats;
    }
    return st;
}

/* ---- the machine ---- */

static void cpu_model_name(char *out, size_t size) {
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

/* CPU time spent by the whole machine (from /proc/stat) and by this
 * process, in seconds, so a run can tell how much of the machine other work
 * took meanwhile. busy < 0 where /proc/stat cannot be read. */
typedef struct cpu_clock {
    double wall, busy, self;
} cpu_clock;

static cpu_clock read_cpu_clock(void) {
    cpu_clock c = {now_seconds(), -1.0, 0.0};
    FILE *f = fopen("/proc/stat", "r");
    if (f) {
        unsigned long long v[8] = {0};
        if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                   &v[4], &v[5], &v[6], &v[7]) == 8) /* user nice system idle iowait irq softirq steal */
            c.busy = (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / 100.0; /* USER_HZ */
        fclose(f);
    }
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    c.self = (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
    return c;
}

/* The share of all cores that other processes kept busy between a and b. */
static double others_share(cpu_clock a, cpu_clock b, int cores) {
    if (a.busy < 0 || b.busy < 0 || b.wall <= a.wall) return -1.0;
    const double others = (b.busy - a.busy) - (b.self - a.self);
    const double share = others / ((b.wall - a.wall) * cores);
    return share < 0 ? 0.0 : share > 1 ? 1.0 : share;
}

/* The 1-minute load average, or -1. */
static double load_average(void) {
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
            const double began = now_seconds();
            if (on_cpu)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, size, size, size, 1.0f, a,
                            size, b, size, 0.0f, c, size);
            else
                be->ops->gemm(be, 0, 0, size, size, size, 1.0f, a, size, 0, b, size, 0, 0.0f, c,
                              size, 0, 1);
            st = be->synchronize(be, err);
            const double took = now_seconds() - began;
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

/* ---- the run ---- */

/* The patch size and the checks that need the data (as a training run
 * makes them). */
/* The target for cfg's model. The two-layer pMoE and CNN are the only models
 * today; WRN and WRN-pMoE add their family here (and their baseline in
 * baseline_config), and everything else stays as it is. */
static pmoe_status open_target(const pmoe_config *cfg, const pmoe_dataset *ds, int patch,
                               int64_t batch, bench_target *t, pmoe_error *err) {
    return two_layer_open(cfg, ds, patch, batch, t, err);
}

/* The single-expert model a pMoE replaces: the CNN of eq. 5 for the
 * two-layer pMoE (the same data and total hidden m; k = 1, l = n, no router). */
static void baseline_config(const pmoe_config *cfg, pmoe_config *base) {
    *base = *cfg;
    base->model.type = PMOE_MODEL_CNN;
    base->train.mode = PMOE_TRAIN_JOINT; /* the CNN has no router phase */
}

static pmoe_status measure_model(const pmoe_config *cfg, const pmoe_dataset *ds, int patch,
                                 const pmoe_bench_options *options, pmoe_bench_model *out,
                                 pmoe_error *err) {
    bench_target t;
    pmoe_status st = open_target(cfg, ds, patch, cfg->train.batch, &t, err);
    if (!st) st = bench_target_measure(&t, cfg, options, out, err);
    if (t.destroy) t.destroy(&t);
    return st;
}

pmoe_status pmoe_bench_run(const pmoe_config *cfg, const pmoe_bench_options *options,
                           pmoe_bench_result *out, pmoe_error *err) {
    memset(out, 0, sizeof *out);
    out->sgemm_gflops = -1.0;
    out->load_before = load_average();
    const cpu_clock began = read_cpu_clock();
    pmoe_status st = pmoe_config_check(cfg, err);
    if (st) return st;
    if (cfg->model.type != PMOE_MODEL_PMOE)
        return pmoe_fail(err, PMOE_ERR_CONFIG,
                         "config: model.type = %s: pmoe bench compares a pMoE (model.type = "
                         "pmoe) with its CNN baseline",
                         pmoe_model_type_name(cfg->model.type));
    pmoe_config base;
    baseline_config(cfg, &base);

    pmoe_dataset *train = NULL, *test = NULL;
    pmoe_data_source chosen = cfg->data.source;
    int patch = 0;
    st = pmoe_data_open(&cfg->data, &train, &test, &chosen, err);
    if (!st) st = pmoe_resolve_patch(cfg, train, &patch, err);
    if (!st) {
        snprintf(out->data, sizeof out->data, "%s", train->description);
        out->channels = train->channels;
        out->height = train->height;
        out->width = train->width;
        out->patch = patch;
    }
    out->batch = cfg->train.batch;
    out->warmup = cfg->bench.warmup;
    out->repeats = cfg->bench.repeats;
    snprintf(out->mode, sizeof out->mode, "%s", pmoe_train_mode_name(cfg->train.mode));
    out->lr = BENCH_LR;
    out->momentum = cfg->train.momentum;
    out->weight_decay = cfg->train.weight_decay;
    out->sgemm_size = cfg->bench.sgemm_size;
    if (!st && options && options->sgemm_gflops >= 0.0) out->sgemm_gflops = options->sgemm_gflops;
    else if (!st && cfg->bench.sgemm_size > 0)
        st = pmoe_bench_peak_gflops(cfg, cfg->bench.sgemm_size, &out->sgemm_gflops, err);
    if (!st) st = measure_model(cfg, train, patch, options, &out->pmoe, err);
    if (!st) st = measure_model(&base, train, patch, options, &out->baseline, err);
    pmoe_dataset_free(train);
    pmoe_dataset_free(test);
    if (st) return st;

    /* The backend that ran the models, and where. */
    pmoe_backend *be = NULL;
    st = pmoe_backend_create(cfg->train.device, cfg->train.threads, &be, err);
    if (st) return st;
    snprintf(out->backend, sizeof out->backend, "%s", be->name);
    out->threads = omp_get_max_threads();
    pmoe_backend_destroy(be);
    out->cores = omp_get_num_procs();
    out->load_after = load_average();
    out->others_cpu_share = others_share(began, read_cpu_clock(), out->cores);
    cpu_model_name(out->cpu, sizeof out->cpu);
    snprintf(out->blas, sizeof out->blas, "%s", openblas_get_config());
    const time_t t = time(NULL);
    struct tm utc;
    gmtime_r(&t, &utc);
    strftime(out->date, sizeof out->date, "%Y-%m-%dT%H:%M:%SZ", &utc);
    return PMOE_OK;
}

/* ---- reporting ---- */

double pmoe_bench_train_gflops(const pmoe_bench_result *r, const pmoe_bench_model *m) {
    return m->train_flops[PMOE_FLOPS_EXECUTED] * (double)r->batch / (m->train.median_ms * 1e-3) / 1e9;
}

double pmoe_bench_infer_gflops(const pmoe_bench_result *r, const pmoe_bench_model *m) {
    return m->infer_flops[PMOE_FLOPS_EXECUTED] * (double)r->batch / (m->infer.median_ms * 1e-3) / 1e9;
}

static void print_row(FILE *out, const pmoe_bench_result *r, const pmoe_bench_model *m) {
    const double train_gf = pmoe_bench_train_gflops(r, m);
    fprintf(out, "%-8s %3d %4d  %8.3f %8.3f  %8.3f %8.3f  %7.2f  %7.3f [%.3f-%.3f]  %7.3f [%.3f-%.3f]  %9.0f %7.2f",
            m->model, m->experts, m->topl, m->train_flops[PMOE_FLOPS_USEFUL] / 1e6,
            m->train_flops[PMOE_FLOPS_EXECUTED] / 1e6, m->infer_flops[PMOE_FLOPS_USEFUL] / 1e6,
            m->infer_flops[PMOE_FLOPS_EXECUTED] / 1e6, (double)m->mem.peak_bytes / 1048576.0,
            m->train.median_ms, m->train.min_ms, m->train.max_ms, m->infer.median_ms,
            m->infer.min_ms, m->infer.max_ms, (double)r->batch / (m->train.median_ms * 1e-3),
            train_gf);
    if (r->sgemm_gflops > 0) fprintf(out, " %6.1f%%", 100.0 * train_gf / r->sgemm_gflops);
    fprintf(out, "\n");
}

void pmoe_bench_print_table(FILE *out, const pmoe_bench_result *r) {
    const pmoe_bench_model *p = &r->pmoe, *b = &r->baseline;
    fprintf(out, "pmoe bench: %s; n = %d patches of d = %d, m = %d hidden, batch %lld\n", r->data,
            p->patches, p->dim, p->hidden, (long long)r->batch);
    fprintf(out, "machine: %s, %d cores; backend %s, %d threads; %s\n", r->cpu, r->cores,
            r->backend, r->threads, r->blas);
    if (r->sgemm_gflops > 0)
        fprintf(out, "peak: SGEMM %d^3 = %.1f GFLOP/s\n", r->sgemm_size, r->sgemm_gflops);
    if (r->others_cpu_share > 0.05)
        fprintf(out, "warning: other processes kept %.0f%% of the %d cores busy during the run "
                     "(load average %.2f before, %.2f after): these times, above all the threaded "
                     "ones, are not reliable\n",
                100.0 * r->others_cpu_share, r->cores, r->load_before, r->load_after);
    fprintf(out,
            "time: %d warm-up + %d timed steps, median [min-max]; train step = forward + "
            "backward + SGD (learning rate 0: the weights stay at their initial values)%s\n\n",
            r->warmup, r->repeats,
            strcmp(r->mode, "separate") == 0 ? " (separate mode: the expert phase)" : "");
    fprintf(out, "%-8s %3s %4s  %-17s  %-17s  %7s  %-26s  %-26s  %9s %7s %7s\n", "", "", "",
            "train MFLOP/sample", "infer MFLOP/sample", "peak", "train ms/step", "infer ms/step",
            "train", "train", "of");
    fprintf(out, "%-8s %3s %4s  %8s %8s  %8s %8s  %7s  %-26s  %-26s  %9s %7s %7s\n", "model", "k",
            "l", "useful", "executed", "useful", "executed", "MiB", "median [min-max]",
            "median [min-max]", "samples/s", "GFLOP/s", "peak");
    print_row(out, r, p);
    print_row(out, r, b);
    fprintf(out, "%-8s %3s %4s  %8.3f %8.3f  %8.3f %8.3f  %7.2f  %7.3f %18s  %7.3f %18s  %9.3f %7.2f\n",
            "ratio", "", "", p->train_flops[0] / b->train_flops[0],
            p->train_flops[PMOE_FLOPS_EXECUTED] / b->train_flops[PMOE_FLOPS_EXECUTED],
            p->infer_flops[0] / b->infer_flops[0],
            p->infer_flops[PMOE_FLOPS_EXECUTED] / b->infer_flops[PMOE_FLOPS_EXECUTED],
            (double)p->mem.peak_bytes / (double)b->mem.peak_bytes,
            p->train.median_ms / b->train.median_ms, "", p->infer.median_ms / b->infer.median_ms,
            "", b->train.median_ms / p->train.median_ms,
            pmoe_bench_train_gflops(r, p) / pmoe_bench_train_gflops(r, b));
    fprintf(out, "\ntrain step by phase, ms (mean of %d steps with the phase timer on):\n",
            r->repeats);
    for (int i = 0; i < PMOE_T_COUNT; i++)
        if (p->phase_ms[i] > 0 || b->phase_ms[i] > 0)
            fprintf(out, "  %-20s pmoe %8.3f   %s %8.3f\n", pmoe_timer_name((pmoe_phase_id)i),
                    p->phase_ms[i], b->model, b->phase_ms[i]);
    fprintf(out, "\nper layer, MFLOP/sample, forward + backward (useful / executed / dense-masked):\n");
    for (int i = 0; i < p->flops.layer_count; i++) {
        const pmoe_layer_flops *lp = &p->flops.layers[i];
        const pmoe_layer_flops *lb = pmoe_flops_layer(&b->flops, lp->name);
        fprintf(out, "  %-14s pmoe %8.4f / %8.4f / %8.4f   %s %8.4f / %8.4f / %8.4f\n", lp->name,
                (lp->forward[0] + lp->backward[0]) / 1e6, (lp->forward[1] + lp->backward[1]) / 1e6,
                (lp->forward[2] + lp->backward[2]) / 1e6, b->model,
                lb ? (lb->forward[0] + lb->backward[0]) / 1e6 : 0.0,
                lb ? (lb->forward[1] + lb->backward[1]) / 1e6 : 0.0,
                lb ? (lb->forward[2] + lb->backward[2]) / 1e6 : 0.0);
    }
    fprintf(out, "  %-14s pmoe %8.4f / %8.4f / %8.4f   %s %8.4f / %8.4f / %8.4f  (per step / batch)\n",
            "update", p->flops.update[0] / 1e6 / (double)r->batch,
            p->flops.update[1] / 1e6 / (double)r->batch, p->flops.update[2] / 1e6 / (double)r->batch,
            b->model, b->flops.update[0] / 1e6 / (double)r->batch,
            b->flops.update[1] / 1e6 / (double)r->batch, b->flops.update[2] / 1e6 / (double)r->batch);
}

/* A number, or null when not finite (JSON has no NaN). */
static void json_number(FILE *out, const char *key, double v) {
    if (isfinite(v)) fprintf(out, "\"%s\":%.9g", key, v);
    else fprintf(out, "\"%s\":null", key);
}

static void json_kinds(FILE *out, const double *v) {
    fprintf(out, "{");
    for (int k = 0; k < PMOE_FLOPS_KINDS; k++) {
        if (k) fputc(',', out);
        json_number(out, pmoe_flop_kind_name((pmoe_flop_kind)k), v[k]);
    }
    fprintf(out, "}");
}

static void json_model(FILE *out, const pmoe_bench_result *r, const pmoe_bench_model *m) {
    const double train_gf = pmoe_bench_train_gflops(r, m), infer_gf = pmoe_bench_infer_gflops(r, m);
    fprintf(out, "{\"model\":\"%s\",\"gate\":\"%s\",\"experts\":%d,\"topl\":%d,\"patches\":%d,"
                 "\"dim\":%d,\"hidden\":%d,\"classes\":%d,\"params\":%lld,\"learn_router\":%d,"
                 "\"train_output\":%d,",
            m->model, m->gate, m->experts, m->topl, m->patches, m->dim, m->hidden, m->classes,
            (long long)m->params, m->learn_router, m->train_output);
    json_number(out, "train_flops_per_sample", m->train_flops[PMOE_FLOPS_USEFUL]);
    fputc(',', out);
    json_number(out, "infer_flops_per_sample", m->infer_flops[PMOE_FLOPS_USEFUL]);
    fputc(',', out);
    json_number(out, "executed_train_flops_per_sample", m->train_flops[PMOE_FLOPS_EXECUTED]);
    fputc(',', out);
    json_number(out, "executed_infer_flops_per_sample", m->infer_flops[PMOE_FLOPS_EXECUTED]);
    fputc(',', out);
    json_number(out, "dense_masked_train_flops_per_sample", m->train_flops[PMOE_FLOPS_DENSE_MASKED]);
    fputc(',', out);
    json_number(out, "dense_masked_infer_flops_per_sample", m->infer_flops[PMOE_FLOPS_DENSE_MASKED]);
    fprintf(out, ",\"peak_bytes\":%lld,\"parameter_bytes\":%lld,\"activation_bytes\":%lld,"
                 "\"workspace_bytes\":%lld,\"backward_bytes\":%lld,\"device_peak_bytes\":%lld,"
                 "\"host_bytes\":%lld,",
            (long long)m->mem.peak_bytes, (long long)m->mem.parameter_bytes,
            (long long)m->mem.activation_bytes, (long long)m->mem.workspace_bytes,
            (long long)m->mem.backward_bytes, (long long)m->mem.device_peak_bytes,
            (long long)m->mem.host_bytes);
    const struct {
        const char *key;
        double v;
    } numbers[] = {
        {"train_ms_per_step", m->train.median_ms},
        {"train_ms_min", m->train.min_ms},
        {"train_ms_max", m->train.max_ms},
        {"infer_ms_per_step", m->infer.median_ms},
        {"infer_ms_min", m->infer.min_ms},
        {"infer_ms_max", m->infer.max_ms},
        {"train_samples_per_s", (double)r->batch / (m->train.median_ms * 1e-3)},
        {"infer_samples_per_s", (double)r->batch / (m->infer.median_ms * 1e-3)},
        {"train_gflops", train_gf},
        {"infer_gflops", infer_gf},
        {"train_peak_share", r->sgemm_gflops > 0 ? train_gf / r->sgemm_gflops : NAN},
        {"infer_peak_share", r->sgemm_gflops > 0 ? infer_gf / r->sgemm_gflops : NAN},
        {"first_loss", m->first_loss},
        {"last_loss", m->last_loss},
    };
    for (size_t i = 0; i < sizeof numbers / sizeof numbers[0]; i++) {
        json_number(out, numbers[i].key, numbers[i].v);
        fputc(',', out);
    }
    fprintf(out, "\"phase_ms\":{");
    for (int i = 0, first = 1; i < PMOE_T_COUNT; i++)
        if (m->phase_ms[i] > 0) {
            fprintf(out, "%s\"%s\":%.6g", first ? "" : ",", pmoe_timer_name((pmoe_phase_id)i),
                    m->phase_ms[i]);
            first = 0;
        }
    fprintf(out, "},\"update_flops_per_step\":");
    json_kinds(out, m->flops.update);
    fprintf(out, ",\"layers\":[");
    for (int i = 0; i < m->flops.layer_count; i++) {
        const pmoe_layer_flops *L = &m->flops.layers[i];
        fprintf(out, "%s{\"name\":\"%s\",\"forward\":", i ? "," : "", L->name);
        json_kinds(out, L->forward);
        fprintf(out, ",\"backward\":");
        json_kinds(out, L->backward);
        fprintf(out, "}");
    }
    fprintf(out, "]}");
}

void pmoe_bench_write_json(FILE *out, const pmoe_bench_result *r) {
    fprintf(out, "{\"bench\":\"two_layer\",\"date\":\"%s\",\"machine\":{\"cpu\":", r->date);
    pmoe_write_json_string(out, r->cpu);
    fprintf(out, ",\"cores\":%d,\"backend\":", r->cores);
    pmoe_write_json_string(out, r->backend);
    fprintf(out, ",\"blas\":");
    pmoe_write_json_string(out, r->blas);
    fprintf(out, "},\"threads\":%d,", r->threads);
    json_number(out, "load_before", r->load_before >= 0 ? r->load_before : NAN);
    fputc(',', out);
    json_number(out, "load_after", r->load_after >= 0 ? r->load_after : NAN);
    fputc(',', out);
    json_number(out, "others_cpu_share", r->others_cpu_share >= 0 ? r->others_cpu_share : NAN);
    fprintf(out, ",\"batch\":%lld,\"warmup\":%d,\"repeats\":%d,\"data\":", (long long)r->batch,
            r->warmup, r->repeats);
    pmoe_write_json_string(out, r->data);
    fprintf(out, ",\"channels\":%d,\"height\":%d,\"width\":%d,\"patch\":%d,\"mode\":\"%s\",",
            r->channels, r->height, r->width, r->patch, r->mode);
    json_number(out, "lr", r->lr);
    fputc(',', out);
    json_number(out, "momentum", r->momentum);
    fputc(',', out);
    json_number(out, "weight_decay", r->weight_decay);
    fprintf(out, ",\"sgemm_size\":%d,", r->sgemm_size);
    json_number(out, "sgemm_gflops", r->sgemm_gflops > 0 ? r->sgemm_gflops : NAN);
    fprintf(out, ",\"pmoe\":");
    json_model(out, r, &r->pmoe);
    fprintf(out, ",\"baseline\":");
    json_model(out, r, &r->baseline);
    const pmoe_bench_model *p = &r->pmoe, *b = &r->baseline;
    fprintf(out, ",\"ratio\":{");
    json_number(out, "train_flops", p->train_flops[0] / b->train_flops[0]);
    fputc(',', out);
    json_number(out, "executed_train_flops",
                p->train_flops[PMOE_FLOPS_EXECUTED] / b->train_flops[PMOE_FLOPS_EXECUTED]);
    fputc(',', out);
    json_number(out, "infer_flops", p->infer_flops[0] / b->infer_flops[0]);
    fputc(',', out);
    json_number(out, "executed_infer_flops",
                p->infer_flops[PMOE_FLOPS_EXECUTED] / b->infer_flops[PMOE_FLOPS_EXECUTED]);
    fputc(',', out);
    json_number(out, "train_ms", p->train.median_ms / b->train.median_ms);
    fputc(',', out);
    json_number(out, "infer_ms", p->infer.median_ms / b->infer.median_ms);
    fputc(',', out);
    json_number(out, "peak_bytes", (double)p->mem.peak_bytes / (double)b->mem.peak_bytes);
    fprintf(out, "}}");
}
