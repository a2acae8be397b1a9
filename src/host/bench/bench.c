/* bench.c: pmoe_bench_run (bench.h): opens the data, measures the
 * configured model and its baseline (and for WRN-pMoE the isolated
 * blocks), and records the machine; and the figures derived from a
 * result. bench_internal.h lists the other files. */
#include <cblas.h>
#include <omp.h>
#include <string.h>
#include <time.h>

#include "backend/backend.h"
#include "bench/bench_internal.h"
#include "train/resolve.h"

/* The single-expert model a pMoE replaces (bench.h): the CNN of eq. 5 for
 * the two-layer pMoE (the same data and total hidden m; k = 1, l = n, no
 * router); the WRN for WRN-pMoE (model.type = wrn, all else the same: the
 * pMoE keys mean nothing to it); a WRN itself for a WRN. */
static void baseline_config(const pmoe_config *cfg, pmoe_config *base) {
    *base = *cfg;
    base->train.mode = PMOE_TRAIN_JOINT; /* a baseline has no router phase */
    if (pmoe_model_is_deep(cfg->model.type)) base->model.type = PMOE_MODEL_WRN;
    else base->model.type = PMOE_MODEL_CNN;
}

/* Measures cfg's model; for a model with a pMoE layer also writes the map
 * that layer routes to map[0..2] (C, H, W), else zeros. */
static pmoe_status measure_model(const pmoe_config *cfg, const pmoe_dataset *ds, int patch,
                                 const pmoe_bench_options *options, bench_meter *meter,
                                 pmoe_bench_model *out, int map[3], pmoe_error *err) {
    bench_target t;
    map[0] = map[1] = map[2] = 0;
    pmoe_status st = bench_model_open(cfg, ds, patch, cfg->train.batch, &t, err);
    if (!st) st = bench_target_measure(&t, cfg, options, meter, out, err);
    if (!st) bench_model_map(&t, map);
    bench_target_close(&t);
    return st;
}

static const char *const BLOCK_NAMES[PMOE_BENCH_BLOCKS] = {"wrn_block", "pmoe_sparse",
                                                           "pmoe_dense_masked"};

/* Times one isolated block (bench.h) and counts its FLOPs. */
static pmoe_status measure_block(const pmoe_config *cfg, int which, const pmoe_bench_result *r,
                                 bench_meter *meter, pmoe_bench_block *out, pmoe_error *err) {
    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "%s", BLOCK_NAMES[which]);
    bench_target t;
    pmoe_status st = bench_block_open(cfg, which, r->map_channels, r->map_height, r->map_width,
                                      r->patch, cfg->train.batch, &t, err);
    if (!st)
        st = bench_time_steps(&t, out->name, 1, cfg->bench.warmup, cfg->bench.repeats, meter,
                              &out->train, NULL, NULL, err);
    if (!st)
        st = bench_time_steps(&t, out->name, 0, cfg->bench.warmup, cfg->bench.repeats, meter,
                              &out->infer, NULL, NULL, err);
    if (!st) bench_block_flops(&t, cfg, out);
    bench_target_close(&t);
    return st;
}

int64_t pmoe_bench_steps(const pmoe_config *cfg) {
    const int64_t w = cfg->bench.warmup, r = cfg->bench.repeats;
    const int64_t model = 2 * (w + r) + r; /* train, inference, the profiled pass */
    const int64_t block = 2 * (w + r);     /* train, inference */
    return 2 * model + (cfg->model.type == PMOE_MODEL_WRN_PMOE ? PMOE_BENCH_BLOCKS * block : 0);
}

pmoe_status pmoe_bench_run(const pmoe_config *cfg, const pmoe_bench_options *options,
                           pmoe_bench_result *out, pmoe_error *err) {
    memset(out, 0, sizeof *out);
    out->sgemm_gflops = -1.0;
    out->load_before = bench_load_average();
    const bench_cpu_clock began = bench_read_cpu_clock();
    pmoe_status st = pmoe_config_check(cfg, err);
    if (st) return st;
    if (cfg->model.type == PMOE_MODEL_CNN)
        return pmoe_fail(err, PMOE_ERR_CONFIG,
                         "config: model.type = %s: pmoe bench compares a pMoE (model.type = "
                         "pmoe) with its CNN baseline, or a WRN-pMoE (wrn_pmoe) with its WRN",
                         pmoe_model_type_name(cfg->model.type));
    pmoe_config base;
    baseline_config(cfg, &base);
    bench_meter meter = {options ? options->progress : NULL, 0, pmoe_bench_steps(cfg), "data"};
    pmoe_progress_report(meter.to, "opening the data", 0, meter.total);

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
    else if (!st && cfg->bench.sgemm_size > 0) {
        pmoe_progress_report(meter.to, "the peak (one SGEMM)", 0, meter.total);
        st = pmoe_bench_peak_gflops(cfg, cfg->bench.sgemm_size, &out->sgemm_gflops, err);
    }
    out->deep = pmoe_model_is_deep(cfg->model.type);
    int map[3] = {0, 0, 0}, unused[3];
    if (!st) st = measure_model(cfg, train, patch, options, &meter, &out->pmoe, map, err);
    if (!st) st = measure_model(&base, train, patch, options, &meter, &out->baseline, unused, err);
    pmoe_dataset_free(train);
    pmoe_dataset_free(test);
    if (st) return st;
    if (map[0] > 0) { /* WRN-pMoE: the pMoE layer alone against what it replaces */
        out->map_channels = map[0];
        out->map_height = map[1];
        out->map_width = map[2];
        for (int i = 0; !st && i < PMOE_BENCH_BLOCKS; i++)
            st = measure_block(cfg, i, out, &meter, &out->blocks[i], err);
        if (st) return st;
        out->block_count = PMOE_BENCH_BLOCKS;
    }

    /* The backend that ran the models, and where. */
    pmoe_backend *be = NULL;
    st = pmoe_backend_create(cfg->train.device, cfg->train.threads, &be, err);
    if (!st) st = pmoe_backend_set_cpu_kernels(be, (pmoe_cpu_kernels)cfg->train.cpu_kernels, err);
    if (st) return st;
    snprintf(out->backend, sizeof out->backend, "%s", be->name);
    out->threads = omp_get_max_threads();
    pmoe_backend_destroy(be);
    out->cores = omp_get_num_procs();
    out->load_after = bench_load_average();
    out->others_cpu_share = bench_others_share(began, bench_read_cpu_clock(), out->cores);
    bench_cpu_model_name(out->cpu, sizeof out->cpu);
    snprintf(out->blas, sizeof out->blas, "%s", openblas_get_config());
    const time_t t = time(NULL);
    struct tm utc;
    gmtime_r(&t, &utc);
    strftime(out->date, sizeof out->date, "%Y-%m-%dT%H:%M:%SZ", &utc);
    return PMOE_OK;
}

double pmoe_bench_train_gflops(const pmoe_bench_result *r, const pmoe_bench_model *m) {
    return m->train_flops[PMOE_FLOPS_EXECUTED] * (double)r->batch / (m->train.median_ms * 1e-3) /
           1e9;
}

double pmoe_bench_infer_gflops(const pmoe_bench_result *r, const pmoe_bench_model *m) {
    return m->infer_flops[PMOE_FLOPS_EXECUTED] * (double)r->batch / (m->infer.median_ms * 1e-3) /
           1e9;
}

double bench_moe_layer_phase_ms(const pmoe_bench_model *m) {
    static const pmoe_phase_id phases[] = {PMOE_T_PATCH,       PMOE_T_GATE,    PMOE_T_DISPATCH,
                                           PMOE_T_EXPERTS,     PMOE_T_COMBINE, PMOE_T_COMBINE_BWD,
                                           PMOE_T_EXPERTS_BWD, PMOE_T_GATE_BWD};
    double ms = 0.0;
    for (size_t i = 0; i < sizeof phases / sizeof phases[0]; i++) ms += m->phase_ms[phases[i]];
    return ms;
}
