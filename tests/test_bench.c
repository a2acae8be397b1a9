/* test_bench.c: `pmoe bench` on tiny configs (a second or two in all).
 *
 * The library result: every figure present and consistent (executed >=
 * useful, min <= median <= max, the memory split adding up to the backend's
 * peak, the FLOP ratio matching the two models' counts); a pMoE with one
 * expert and l = n against its CNN. The command: the --json line holds every
 * field the issue names, consistent with itself; --sweep writes its CSV,
 * JSON Lines and a PNG; bad arguments fail with one line. The deep models,
 * on generated CIFAR-10 files: WRN-pMoE against its WRN (rows of the same
 * name equal, the isolated blocks' FLOPs equal to the rows the models do not
 * share), the dense-masked model executing its dense-masked counts, a WRN
 * against itself, and the --json line's deep fields. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench.h"
#include "test_util.h"

#define PMOE PMOE_BINARY_DIR "/pmoe"

/* Tiny synthetic data: n = 16 patches of d = 16. */
static void tiny_config(pmoe_config *cfg) {
    pmoe_config_default(cfg);
    cfg->data.source = PMOE_DATA_SYNTHETIC;
    cfg->data.train_size = 40;
    cfg->data.test_size = 8;
    cfg->data.synthetic_dim = 16;
    cfg->model.experts = 4;
    cfg->model.topl = 4;
    cfg->model.hidden = 8;
    cfg->train.batch = 10;
    cfg->train.threads = 1;
    cfg->bench.warmup = 1;
    cfg->bench.repeats = 3;
    cfg->bench.sgemm_size = 64;
}

static void check_model(const pmoe_bench_model *m, const char *name) {
    CHECK(strcmp(m->model, name) == 0);
    CHECK(m->train_flops[PMOE_FLOPS_EXECUTED] >= m->train_flops[PMOE_FLOPS_USEFUL]);
    CHECK(m->infer_flops[PMOE_FLOPS_EXECUTED] >= m->infer_flops[PMOE_FLOPS_USEFUL]);
    CHECK(m->train_flops[PMOE_FLOPS_DENSE_MASKED] >= m->train_flops[PMOE_FLOPS_EXECUTED]);
    CHECK(m->train_flops[PMOE_FLOPS_USEFUL] > m->infer_flops[PMOE_FLOPS_USEFUL]);
    CHECK(m->train.min_ms > 0 && m->train.min_ms <= m->train.median_ms &&
          m->train.median_ms <= m->train.max_ms);
    CHECK(m->infer.min_ms > 0 && m->infer.min_ms <= m->infer.median_ms &&
          m->infer.median_ms <= m->infer.max_ms);
    CHECK(m->mem.parameter_bytes + m->mem.activation_bytes + m->mem.workspace_bytes ==
          m->mem.device_peak_bytes);
    /* the analytic buffers fit in the measured peak; the CNN's ops use no scratch, so for
     * it the mirror of two_layer_create's list must be exact */
    const int64_t scratch = m->mem.workspace_bytes - m->mem.backward_bytes;
    CHECK_MSG(scratch >= 0 && (strcmp(name, "cnn") || scratch == 0),
              "%s: params %lld + activations %lld + backward %lld vs backend peak %lld", name,
              (long long)m->mem.parameter_bytes, (long long)m->mem.activation_bytes,
              (long long)m->mem.backward_bytes, (long long)m->mem.device_peak_bytes);
    CHECK(m->mem.host_bytes > 0 &&
          m->mem.peak_bytes == m->mem.device_peak_bytes + m->mem.host_bytes);
    CHECK(isfinite(m->first_loss) && m->first_loss > 0);
}

/* What a run told its progress: every step once, in order, under its
 * target's name, ending at exactly the total pmoe_bench_steps promised. */
typedef struct progress_record {
    int64_t calls, last_done, total, steps, backwards;
    int totals_differ;
    char seen[1024]; /* each distinct `what`, ';'-separated */
} progress_record;

static void record_progress(void *user, const char *what, int64_t done, int64_t total) {
    progress_record *p = user;
    if (!what) return;
    if (p->calls++ == 0) p->total = total;
    p->totals_differ |= total != p->total;
    p->backwards += done < p->last_done;
    p->steps += done == p->last_done + 1;
    p->last_done = done;
    char item[128];
    snprintf(item, sizeof item, "%s;", what);
    if (!strstr(p->seen, item) && strlen(p->seen) + strlen(item) < sizeof p->seen)
        strcat(p->seen, item);
}

static void check_progress(const progress_record *p, int64_t want_total, const char *const *names,
                           int name_count) {
    CHECK_MSG(p->total == want_total && !p->totals_differ && p->backwards == 0,
              "progress total %lld (want %lld), %s, %lld steps back", (long long)p->total,
              (long long)want_total, p->totals_differ ? "changing" : "fixed",
              (long long)p->backwards);
    CHECK_MSG(p->last_done == want_total && p->steps == want_total,
              "progress ends at %lld of %lld after %lld single steps", (long long)p->last_done,
              (long long)want_total, (long long)p->steps);
    for (int i = 0; i < name_count; i++) {
        char item[128];
        snprintf(item, sizeof item, "%s;", names[i]);
        CHECK_MSG(strstr(p->seen, item) != NULL, "progress never said '%s' (said: %s)", names[i],
                  p->seen);
    }
}

static void test_library(void) {
    pmoe_config cfg;
    tiny_config(&cfg);
    pmoe_bench_result r;
    pmoe_error err;
    progress_record told = {0};
    const pmoe_progress progress = {&told, record_progress};
    const pmoe_bench_options options = {NULL, -1.0, &progress};
    pmoe_status s = pmoe_bench_run(&cfg, &options, &r, &err);
    CHECK_MSG(s == PMOE_OK, "%s", err.message);
    if (s) return;
    check_model(&r.pmoe, "pmoe");
    check_model(&r.baseline, "cnn");
    CHECK(r.pmoe.experts == 4 && r.pmoe.topl == 4 && r.pmoe.patches == 16 && r.pmoe.dim == 16);
    CHECK(r.baseline.experts == 1 && r.baseline.topl == 16 && r.baseline.hidden == 8);
    CHECK(r.batch == 10 && r.warmup == 1 && r.repeats == 3 && r.threads == 1);
    CHECK(r.sgemm_gflops > 0 && r.cores >= 1 && r.date[0] == '2' && r.cpu[0]);
    /* 4 experts on 4 of 16 patches with 2 units each: the experts cost 1/4 of the CNN's */
    const pmoe_layer_flops *pe = pmoe_flops_layer(&r.pmoe.flops, "experts");
    const pmoe_layer_flops *ce = pmoe_flops_layer(&r.baseline.flops, "experts");
    CHECK(pe && ce &&
          fabs(4 * pe->forward[PMOE_FLOPS_EXECUTED] - ce->forward[PMOE_FLOPS_EXECUTED]) < 1e-9);
    /* two models of (1 + 3) train, (1 + 3) inference and 3 profiled steps */
    const char *names[] = {"pmoe: train steps",          "pmoe: inference steps",
                           "pmoe: profiled train steps", "cnn: train steps",
                           "cnn: inference steps",       "cnn: profiled train steps"};
    CHECK(pmoe_bench_steps(&cfg) == 22);
    check_progress(&told, 22, names, 6);

    /* model.type = cnn is not something to compare with itself */
    cfg.model.type = PMOE_MODEL_CNN;
    CHECK(pmoe_bench_run(&cfg, NULL, &r, &err) == PMOE_ERR_CONFIG &&
          strstr(err.message, "model.type"));
    tiny_config(&cfg);
    cfg.model.topl = 17;
    CHECK(pmoe_bench_run(&cfg, NULL, &r, &err) == PMOE_ERR_CONFIG &&
          strstr(err.message, "model.topl"));
}

/* A sweep counts all its runs as one task, each run's steps under its value
 * (here runs of different lengths: bench.repeats = 1, then 2). */
static void test_sweep_progress(void) {
    pmoe_config cfg;
    tiny_config(&cfg);
    cfg.bench.sgemm_size = 0;
    char dir[512];
    make_temp_dir(dir, sizeof dir);
    progress_record told = {0};
    const pmoe_progress progress = {&told, record_progress};
    pmoe_error err;
    pmoe_status s = pmoe_bench_sweep(&cfg, "bench.repeats=1,2", dir, NULL, &progress, &err);
    CHECK_MSG(s == PMOE_OK, "%s", err.message);
    /* (2 (1 + 1) + 1) 2 + (2 (1 + 2) + 2) 2 */
    const char *names[] = {"bench.repeats=1 (1/2): pmoe: train steps",
                           "bench.repeats=2 (2/2): cnn: profiled train steps"};
    check_progress(&told, 26, names, 2);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
}

static void test_one_expert_is_the_cnn(void) {
    /* k = 1, l = n: the same expert weights' shapes and counts as the CNN's, except the
     * router and its gate; ones-gate (no router learning) in separate-mode terms is
     * covered by test_flops. */
    pmoe_config cfg;
    tiny_config(&cfg);
    cfg.model.experts = 1;
    cfg.model.topl = 16;
    cfg.bench.sgemm_size = 0;
    pmoe_bench_result r;
    pmoe_error err;
    pmoe_status s = pmoe_bench_run(&cfg, NULL, &r, &err);
    CHECK_MSG(s == PMOE_OK, "%s", err.message);
    if (s) return;
    CHECK(r.sgemm_gflops < 0);
    for (int i = 0; i < r.pmoe.flops.layer_count; i++) {
        const pmoe_layer_flops *a = &r.pmoe.flops.layers[i];
        const pmoe_layer_flops *b = pmoe_flops_layer(&r.baseline.flops, a->name);
        if (!strcmp(a->name, "router") || !strcmp(a->name, "gate_topl") || !b) continue;
        for (int k = 0; k < PMOE_FLOPS_KINDS; k++)
            CHECK_MSG(a->forward[k] == b->forward[k] && a->backward[k] == b->backward[k], "%s",
                      a->name);
    }
    /* the same expert parameters: the pMoE adds only the router's k d = 16 values */
    CHECK(r.pmoe.params - r.baseline.params == 16);
}

/* Runs cmd, returns its last stdout line (malloc'd) and exit status. */
static char *run_last_line(const char *cmd, int *status) {
    FILE *p = popen(cmd, "r");
    if (!p) return NULL;
    static char line[1 << 16];
    char *last = NULL;
    while (fgets(line, sizeof line, p)) {
        free(last);
        last = strdup(line);
    }
    *status = pclose(p);
    return last;
}

static double number(const cJSON *obj, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    CHECK_MSG(cJSON_IsNumber(v), "JSON field %s missing or not a number", key);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

/* The fields the issue names in the pmoe and baseline objects, consistent with
 * themselves, for a run of `batch` samples per step. */
static void check_json_models(const cJSON *j, int batch) {
    const char *models[2] = {"pmoe", "baseline"};
    for (int i = 0; i < 2; i++) {
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(j, models[i]);
        CHECK_MSG(cJSON_IsObject(m), "no %s object", models[i]);
        if (!cJSON_IsObject(m)) continue;
        const double useful = number(m, "train_flops_per_sample");
        const double infer = number(m, "infer_flops_per_sample");
        const double executed = number(m, "executed_train_flops_per_sample");
        const double peak = number(m, "peak_bytes");
        const double train_ms = number(m, "train_ms_per_step");
        const double infer_ms = number(m, "infer_ms_per_step");
        CHECK(executed >= useful && useful > infer && infer > 0);
        CHECK(number(m, "executed_infer_flops_per_sample") >= infer);
        CHECK(peak == number(m, "device_peak_bytes") + number(m, "host_bytes"));
        CHECK(number(m, "parameter_bytes") + number(m, "activation_bytes") +
                  number(m, "workspace_bytes") ==
              number(m, "device_peak_bytes"));
        CHECK(number(m, "workspace_bytes") >= number(m, "backward_bytes"));
        CHECK(train_ms > 0 && infer_ms > 0 && number(m, "train_ms_min") <= train_ms &&
              train_ms <= number(m, "train_ms_max"));
        CHECK(fabs(number(m, "train_gflops") - executed * batch / (train_ms * 1e-3) / 1e9) <=
              1e-6 * number(m, "train_gflops"));
        CHECK(cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(m, "layers")));
    }
}

static void test_command_json(void) {
    int status = -1;
    char *line = run_last_line(
        PMOE " bench --json --quiet --set data.source=synthetic --set data.train_size=40"
             " --set data.test_size=8 --set data.synthetic_dim=16 --set model.experts=4"
             " --set model.topl=4 --set model.hidden=8 --set train.batch=10"
             " --set train.threads=1 --set bench.warmup=1 --set bench.repeats=3"
             " --set bench.sgemm_size=64",
        &status);
    CHECK_MSG(status == 0 && line, "pmoe bench --json exited %d", status);
    cJSON *j = line ? cJSON_Parse(line) : NULL;
    CHECK_MSG(j != NULL, "the last line is not JSON: %s", line ? line : "(none)");
    free(line);
    if (!j) return;
    check_json_models(j, 10);
    CHECK(number(j, "threads") == 1 && number(j, "batch") == 10 && number(j, "sgemm_gflops") > 0);
    const cJSON *machine = cJSON_GetObjectItemCaseSensitive(j, "machine");
    CHECK(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(machine, "cpu")));
    CHECK(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(j, "date")));
    const cJSON *ratio = cJSON_GetObjectItemCaseSensitive(j, "ratio");
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(j, "pmoe");
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(j, "baseline");
    if (ratio && p && b)
        CHECK(fabs(number(ratio, "executed_train_flops") -
                   number(p, "executed_train_flops_per_sample") /
                       number(b, "executed_train_flops_per_sample")) < 1e-6);
    cJSON_Delete(j);
}

static long file_size(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fclose(f);
    return n;
}

static int count_lines(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    int n = 0, ch;
    while ((ch = fgetc(f)) != EOF) n += ch == '\n';
    fclose(f);
    return n;
}

static void test_command_sweep(void) {
    char dir[512], cmd[2048], path[700];
    make_temp_dir(dir, sizeof dir);
    snprintf(cmd, sizeof cmd,
             PMOE " bench --quiet --set data.source=synthetic --set data.train_size=40"
                  " --set data.test_size=8 --set data.synthetic_dim=16 --set model.experts=4"
                  " --set model.hidden=8 --set train.batch=10 --set train.threads=1"
                  " --set bench.warmup=1 --set bench.repeats=2 --set bench.sgemm_size=0"
                  " --sweep model.topl=1,4,16 --sweep train.batch=5,10 --out %s",
             dir);
    CHECK_MSG(system(cmd) == 0, "%s", cmd);
    snprintf(path, sizeof path, "%s/sweep-model.topl.csv", dir);
    CHECK_MSG(count_lines(path) == 1 + 3 * 2, "%s: %d lines", path, count_lines(path));
    snprintf(path, sizeof path, "%s/sweep-model.topl.jsonl", dir);
    CHECK(count_lines(path) == 3);
    snprintf(path, sizeof path, "%s/sweep-train.batch.csv", dir);
    CHECK(count_lines(path) == 1 + 2 * 2);
    snprintf(path, sizeof path, "%s/sweep-model.topl.png", dir);
    FILE *f = fopen(path, "rb");
    unsigned char sig[8] = {0};
    CHECK_MSG(f && fread(sig, 1, 8, f) == 8 && memcmp(sig, "\x89PNG\r\n\x1a\n", 8) == 0, "%s",
              path);
    if (f) fclose(f);
    CHECK(file_size(path) > 1000);
    /* a value that is not valid fails before anything runs, naming the key */
    snprintf(cmd, sizeof cmd, PMOE " bench --quiet --sweep model.topl=2,x --out %s 2>%s/err", dir,
             dir);
    CHECK(system(cmd) != 0);
    snprintf(path, sizeof path, "%s/err", dir);
    CHECK(count_lines(path) == 1);
    snprintf(cmd, sizeof cmd, PMOE " bench --quiet --sweep nokey --out %s 2>/dev/null", dir);
    CHECK(system(cmd) != 0);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
}

/* ---- the deep models ---- */

/* CIFAR-10 binary batches of `per_file` records each (a label byte, then 3 x 32 x 32
 * pixel bytes) in dir: a 32 x 32 x 3 image source that needs no download. */
static int write_cifar(const char *dir, int per_file) {
    static const char *const files[6] = {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin",
                                         "data_batch_4.bin", "data_batch_5.bin", "test_batch.bin"};
    enum { RECORD = 1 + 3 * 32 * 32 };
    static unsigned char record[RECORD];
    for (int f = 0; f < 6; f++) {
        char path[700];
        snprintf(path, sizeof path, "%s/%s", dir, files[f]);
        FILE *out = fopen(path, "wb");
        if (!out) return 0;
        for (int i = 0; i < per_file; i++) {
            record[0] = (unsigned char)((f * per_file + i) % 10);
            for (int j = 1; j < RECORD; j++)
                record[j] = (unsigned char)((j * 37 + i * 101 + f * 7) & 0xff);
            if (fwrite(record, 1, RECORD, out) != RECORD) {
                fclose(out);
                return 0;
            }
        }
        if (fclose(out) != 0) return 0;
    }
    return 1;
}

static char cifar_dir[512];

/* WRN-pMoE w = 1 on the CIFAR files: the 32x32 setting (64 x 8 x 8 map, 1x1 patches,
 * n = 64, k = 4, l = 16, 1x1 experts), batch 4. */
static void deep_config(pmoe_config *cfg) {
    pmoe_config_default(cfg);
    cfg->data.source = PMOE_DATA_CIFAR10;
    snprintf(cfg->data.path, sizeof cfg->data.path, "%s", cifar_dir);
    cfg->data.train_size = 8;
    cfg->data.test_size = 4;
    cfg->model.type = PMOE_MODEL_WRN_PMOE;
    cfg->model.width = 1;
    cfg->model.experts = 4;
    cfg->model.topl = 16;
    cfg->model.patch = 1;
    cfg->model.expert_kernel = 1;
    cfg->train.batch = 4;
    cfg->train.threads = 1;
    cfg->train.momentum = 0.9;
    cfg->bench.warmup = 1;
    cfg->bench.repeats = 3;
    cfg->bench.sgemm_size = 0;
}

static int close_to(double a, double b) { return fabs(a - b) <= 1e-9 * (fabs(a) + fabs(b)); }

static void check_timing(const pmoe_timing *t) {
    CHECK(t->min_ms > 0 && t->min_ms <= t->median_ms && t->median_ms <= t->max_ms);
}

static void test_deep_library(void) {
    pmoe_config cfg;
    deep_config(&cfg);
    static pmoe_bench_result r;
    pmoe_error err;
    progress_record told = {0};
    const pmoe_progress progress = {&told, record_progress};
    const pmoe_bench_options options = {NULL, -1.0, &progress};
    pmoe_status s = pmoe_bench_run(&cfg, &options, &r, &err);
    CHECK_MSG(s == PMOE_OK, "%s", err.message);
    if (s) return;
    /* the models, then the three blocks alone */
    const char *names[] = {"wrn_pmoe: train steps", "wrn: profiled train steps",
                           "wrn_block: train steps", "pmoe_sparse: inference steps",
                           "pmoe_dense_masked: train steps"};
    check_progress(&told, pmoe_bench_steps(&cfg), names, 5);
    check_model(&r.pmoe, "wrn_pmoe");
    check_model(&r.baseline, "wrn");
    CHECK(r.deep && r.batch == 4 && r.channels == 3 && r.height == 32 && r.patch == 1);
    CHECK(r.map_channels == 64 && r.map_height == 8 && r.map_width == 8);
    CHECK(r.pmoe.patches == 64 && r.pmoe.dim == 64 && r.pmoe.experts == 4 && r.pmoe.topl == 16);
    CHECK(!strcmp(r.pmoe.moe_impl, "sparse") && r.pmoe.width == 1 && r.pmoe.learn_router);
    CHECK(r.baseline.experts == 1 && r.baseline.moe_impl[0] == '\0');
    /* the WRN-pMoE saves FLOPs; its dense-masked form would run more than the WRN's */
    CHECK(r.pmoe.train_flops[PMOE_FLOPS_EXECUTED] < r.baseline.train_flops[PMOE_FLOPS_EXECUTED]);
    CHECK(r.pmoe.infer_flops[PMOE_FLOPS_USEFUL] < r.pmoe.infer_flops[PMOE_FLOPS_DENSE_MASKED]);
    /* a row of the same name is the same layer on the same shape */
    for (int i = 0; i < r.pmoe.flops.layer_count; i++) {
        const pmoe_layer_flops *a = &r.pmoe.flops.layers[i];
        const pmoe_layer_flops *b = pmoe_flops_layer(&r.baseline.flops, a->name);
        if (!b) continue;
        for (int k = 0; k < PMOE_FLOPS_KINDS; k++)
            CHECK_MSG(a->forward[k] == b->forward[k] && a->backward[k] == b->backward[k], "%s",
                      a->name);
    }
    /* the isolated blocks: their FLOPs are the rows the two models do not share */
    CHECK(r.block_count == PMOE_BENCH_BLOCKS);
    pmoe_layer_flops moe, replaced;
    CHECK(pmoe_flops_unshared(&r.pmoe.flops, &r.baseline.flops, "moe", &moe) == 5);
    CHECK(pmoe_flops_unshared(&r.baseline.flops, &r.pmoe.flops, "replaced", &replaced) == 5);
    const pmoe_bench_block *w = &r.blocks[PMOE_BENCH_BLOCK_WRN];
    const pmoe_bench_block *sp = &r.blocks[PMOE_BENCH_BLOCK_SPARSE];
    const pmoe_bench_block *dm = &r.blocks[PMOE_BENCH_BLOCK_DENSE];
    CHECK(!strcmp(w->name, "wrn_block") && !strcmp(sp->name, "pmoe_sparse") &&
          !strcmp(dm->name, "pmoe_dense_masked"));
    for (int k = 0; k < PMOE_FLOPS_KINDS; k++) {
        CHECK_MSG(close_to(w->train_flops[k], pmoe_layer_flops_train(&replaced, (pmoe_flop_kind)k)),
                  "wrn block %s: %.10g vs %.10g", pmoe_flop_kind_name((pmoe_flop_kind)k),
                  w->train_flops[k], pmoe_layer_flops_train(&replaced, (pmoe_flop_kind)k));
        CHECK(close_to(w->infer_flops[k], pmoe_layer_flops_infer(&replaced, (pmoe_flop_kind)k)));
        CHECK(close_to(sp->train_flops[k], pmoe_layer_flops_train(&moe, (pmoe_flop_kind)k)));
        CHECK(close_to(sp->infer_flops[k], pmoe_layer_flops_infer(&moe, (pmoe_flop_kind)k)));
    }
    /* the dense-masked block executes what the sparse one counts as dense-masked */
    CHECK(close_to(dm->train_flops[PMOE_FLOPS_EXECUTED], sp->train_flops[PMOE_FLOPS_DENSE_MASKED]));
    CHECK(close_to(dm->train_flops[PMOE_FLOPS_USEFUL], sp->train_flops[PMOE_FLOPS_USEFUL]));
    CHECK(sp->train_flops[PMOE_FLOPS_EXECUTED] < w->train_flops[PMOE_FLOPS_EXECUTED]);
    for (int i = 0; i < PMOE_BENCH_BLOCKS; i++) {
        check_timing(&r.blocks[i].train);
        check_timing(&r.blocks[i].infer);
    }
    CHECK(r.pmoe.phase_ms[PMOE_T_EXPERTS] > 0 && r.pmoe.phase_ms[PMOE_T_LAYERS] > 0 &&
          r.baseline.phase_ms[PMOE_T_EXPERTS] == 0);

    /* the dense-masked model executes its dense-masked counts */
    cfg.model.moe_impl = PMOE_MOE_DENSE_MASKED;
    cfg.bench.repeats = 1;
    s = pmoe_bench_run(&cfg, NULL, &r, &err);
    CHECK_MSG(s == PMOE_OK, "%s", err.message);
    if (!s) {
        CHECK(!strcmp(r.pmoe.moe_impl, "dense_masked"));
        CHECK(close_to(r.pmoe.train_flops[PMOE_FLOPS_EXECUTED],
                       r.pmoe.train_flops[PMOE_FLOPS_DENSE_MASKED]));
        CHECK(r.pmoe.train_flops[PMOE_FLOPS_EXECUTED] > r.pmoe.train_flops[PMOE_FLOPS_USEFUL]);
    }

    /* a WRN is its own baseline: an A/A run, with the same counts and no blocks */
    deep_config(&cfg);
    cfg.model.type = PMOE_MODEL_WRN;
    cfg.bench.repeats = 1;
    s = pmoe_bench_run(&cfg, NULL, &r, &err);
    CHECK_MSG(s == PMOE_OK, "%s", err.message);
    if (!s) {
        CHECK(!strcmp(r.pmoe.model, "wrn") && !strcmp(r.baseline.model, "wrn"));
        CHECK(r.block_count == 0 && r.map_channels == 0);
        CHECK(r.pmoe.train_flops[PMOE_FLOPS_EXECUTED] ==
              r.baseline.train_flops[PMOE_FLOPS_EXECUTED]);
        CHECK(r.pmoe.params == r.baseline.params);
    }
}

static void test_deep_command_json(void) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             PMOE " bench --json --quiet --set data.source=cifar10 --set data.path=%s"
                  " --set data.train_size=8 --set data.test_size=4 --set model.type=wrn_pmoe"
                  " --set model.width=1 --set model.experts=4 --set model.topl=16"
                  " --set model.patch=1 --set model.expert_kernel=1 --set train.batch=4"
                  " --set train.threads=1 --set bench.warmup=1 --set bench.repeats=2"
                  " --set bench.sgemm_size=64",
             cifar_dir);
    int status = -1;
    char *line = run_last_line(cmd, &status);
    CHECK_MSG(status == 0 && line, "%s exited %d", cmd, status);
    cJSON *j = line ? cJSON_Parse(line) : NULL;
    CHECK_MSG(j != NULL, "the last line is not JSON: %s", line ? line : "(none)");
    free(line);
    if (!j) return;
    const cJSON *bench = cJSON_GetObjectItemCaseSensitive(j, "bench");
    CHECK(cJSON_IsString(bench) && !strcmp(bench->valuestring, "deep"));
    check_json_models(j, 4);
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(j, "pmoe");
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(j, "baseline");
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(p, "model");
    const cJSON *impl = cJSON_GetObjectItemCaseSensitive(p, "moe_impl");
    CHECK(cJSON_IsString(model) && !strcmp(model->valuestring, "wrn_pmoe"));
    CHECK(cJSON_IsString(impl) && !strcmp(impl->valuestring, "sparse"));
    model = cJSON_GetObjectItemCaseSensitive(b, "model");
    CHECK(cJSON_IsString(model) && !strcmp(model->valuestring, "wrn"));
    CHECK(number(p, "width") == 1 && number(p, "moe_layer_phase_ms") > 0);
    /* pMoE rows against WRN rows: fewer FLOPs for the WRN-pMoE, executed and useful */
    CHECK(number(p, "executed_train_flops_per_sample") <
          number(b, "executed_train_flops_per_sample"));
    CHECK(number(p, "infer_flops_per_sample") < number(b, "infer_flops_per_sample"));
    const cJSON *ratio = cJSON_GetObjectItemCaseSensitive(j, "ratio");
    CHECK(fabs(number(ratio, "executed_train_flops") -
               number(p, "executed_train_flops_per_sample") /
                   number(b, "executed_train_flops_per_sample")) < 1e-6);
    CHECK(number(j, "batch") == 4 && number(j, "sgemm_gflops") > 0);
    const cJSON *map = cJSON_GetObjectItemCaseSensitive(j, "map");
    CHECK(number(map, "channels") == 64 && number(map, "height") == 8 && number(map, "width") == 8);
    const cJSON *blocks = cJSON_GetObjectItemCaseSensitive(j, "blocks");
    CHECK(cJSON_IsArray(blocks) && cJSON_GetArraySize(blocks) == 3);
    const char *const names[3] = {"wrn_block", "pmoe_sparse", "pmoe_dense_masked"};
    double wrn_executed = NAN;
    for (int i = 0; cJSON_IsArray(blocks) && i < cJSON_GetArraySize(blocks) && i < 3; i++) {
        const cJSON *k = cJSON_GetArrayItem(blocks, i);
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(k, "name");
        CHECK(cJSON_IsString(name) && !strcmp(name->valuestring, names[i]));
        const cJSON *train = cJSON_GetObjectItemCaseSensitive(k, "train_flops_per_sample");
        const cJSON *infer = cJSON_GetObjectItemCaseSensitive(k, "infer_flops_per_sample");
        const double useful = number(train, "useful"), executed = number(train, "executed");
        CHECK(executed >= useful && useful > number(infer, "useful") &&
              number(infer, "useful") > 0);
        CHECK(number(infer, "executed") >= number(infer, "useful"));
        const double ms = number(k, "train_ms_per_step");
        CHECK(ms > 0 && number(k, "train_ms_min") <= ms && ms <= number(k, "train_ms_max"));
        CHECK(number(k, "infer_ms_per_step") > 0);
        if (i == 0) wrn_executed = executed;
        CHECK(fabs(number(k, "executed_train_flops_ratio") - executed / wrn_executed) < 1e-6);
        if (i == 1) CHECK(executed < wrn_executed);
    }
    cJSON_Delete(j);
}

static void test_deep(void) {
    make_temp_dir(cifar_dir, sizeof cifar_dir);
    CHECK_MSG(write_cifar(cifar_dir, 4), "cannot write CIFAR files in %s", cifar_dir);
    test_deep_library();
    test_deep_command_json();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", cifar_dir);
    CHECK(system(cmd) == 0);
}

int main(void) {
    test_library();
    test_one_expert_is_the_cnn();
    test_sweep_progress();
    test_command_json();
    test_command_sweep();
    test_deep();
    return test_finish("test_bench");
}
