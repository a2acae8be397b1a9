/* sweep.c: pmoe_bench_sweep (see bench.h): one bench per value of one key,
 * written as a CSV (a row per value and model), JSON Lines (each run's full
 * JSON) and a PNG with four panels against the value: train time per step,
 * train MFLOP per sample (pMoE useful, executed and dense-masked; the
 * baseline: the CNN, or for WRN-pMoE the WRN), peak memory and achieved
 * GFLOP/s. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench.h"
#include "bench/plot.h"
#include "core/files.h"

typedef struct sweep_values {
    char key[128];
    int count;
    char text[PMOE_PLOT_MAX_POINTS][64];
} sweep_values;

static pmoe_status parse_sweep(const char *sweep, sweep_values *out, pmoe_error *err) {
    memset(out, 0, sizeof *out);
    const char *eq = strchr(sweep, '=');
    if (!eq || eq == sweep || (size_t)(eq - sweep) >= sizeof out->key || !eq[1])
        return pmoe_fail(err, PMOE_ERR_CONFIG,
                         "--sweep '%s' is not of the form section.key=v1,v2,...", sweep);
    memcpy(out->key, sweep, (size_t)(eq - sweep));
    for (const char *v = eq + 1;;) {
        const size_t len = strcspn(v, ",");
        if (len == 0 || len >= sizeof out->text[0])
            return pmoe_fail(err, PMOE_ERR_CONFIG, "--sweep %s: an empty or overlong value in '%s'",
                             out->key, eq + 1);
        if (out->count == PMOE_PLOT_MAX_POINTS)
            return pmoe_fail(err, PMOE_ERR_CONFIG, "--sweep %s: more than %d values", out->key,
                             PMOE_PLOT_MAX_POINTS);
        memcpy(out->text[out->count++], v, len);
        if (!v[len]) break;
        v += len + 1;
    }
    return PMOE_OK;
}

static void csv_row(FILE *f, const sweep_values *sv, int i, const pmoe_bench_result *r,
                    const pmoe_bench_model *m) {
    fprintf(f,
            "%s,%s,%s,%d,%d,%d,%d,%d,%lld,%.9g,%.9g,%.9g,%.9g,%.9g,%lld,%.6g,%.6g,%.6g,%.6g,%.6g,%."
            "6g\n",
            sv->key, sv->text[i], m->model, m->experts, m->topl, m->patches, m->dim, m->hidden,
            (long long)r->batch, m->train_flops[PMOE_FLOPS_USEFUL],
            m->train_flops[PMOE_FLOPS_EXECUTED], m->train_flops[PMOE_FLOPS_DENSE_MASKED],
            m->infer_flops[PMOE_FLOPS_USEFUL], m->infer_flops[PMOE_FLOPS_EXECUTED],
            (long long)m->mem.peak_bytes, m->train.median_ms, m->train.min_ms, m->train.max_ms,
            m->infer.median_ms, pmoe_bench_train_gflops(r, m),
            (double)r->batch / (m->train.median_ms * 1e-3));
}

/* One of a run's figures for one of its two models. */
typedef double (*run_figure)(const pmoe_bench_result *r, const pmoe_bench_model *m);
static double train_ms(const pmoe_bench_result *r, const pmoe_bench_model *m) {
    (void)r;
    return m->train.median_ms;
}
static double peak_mib(const pmoe_bench_result *r, const pmoe_bench_model *m) {
    (void)r;
    return (double)m->mem.peak_bytes / 1048576.0;
}

/* A panel of two series, the pMoE model's and the baseline's, of figure(). */
static void model_pair_panel(pmoe_plot_panel *p, const char *title, const pmoe_bench_result *runs,
                             int count, run_figure figure) {
    p->title = title;
    p->series_count = 2;
    p->series[0].label = runs[0].pmoe.model;
    p->series[1].label = runs[0].baseline.model;
    for (int i = 0; i < count; i++) {
        p->series[0].y[i] = figure(&runs[i], &runs[i].pmoe);
        p->series[1].y[i] = figure(&runs[i], &runs[i].baseline);
    }
}

static void fill_figure(pmoe_plot_figure *fig, const sweep_values *sv,
                        const pmoe_bench_result *runs) {
    memset(fig, 0, sizeof *fig);
    fig->x_label = sv->key;
    fig->point_count = sv->count;
    fig->x_numeric = 1;
    for (int i = 0; i < sv->count; i++) {
        char *end = NULL;
        fig->x[i] = strtod(sv->text[i], &end);
        if (end == sv->text[i] || *end) fig->x_numeric = 0;
        fig->x_text[i] = sv->text[i];
    }
    fig->panel_count = 4;
    model_pair_panel(&fig->panels[0], "train ms/step", runs, sv->count, train_ms);
    pmoe_plot_panel *p = &fig->panels[1];
    p->title = "train MFLOP/sample";
    p->series_count = 4;
    p->series[0].label = "pmoe executed";
    p->series[1].label = runs[0].baseline.model;
    p->series[2].label = "pmoe useful";
    p->series[3].label = "pmoe dense-masked";
    for (int i = 0; i < sv->count; i++) {
        p->series[0].y[i] = runs[i].pmoe.train_flops[PMOE_FLOPS_EXECUTED] / 1e6;
        p->series[1].y[i] = runs[i].baseline.train_flops[PMOE_FLOPS_EXECUTED] / 1e6;
        p->series[2].y[i] = runs[i].pmoe.train_flops[PMOE_FLOPS_USEFUL] / 1e6;
        p->series[3].y[i] = runs[i].pmoe.train_flops[PMOE_FLOPS_DENSE_MASKED] / 1e6;
    }
    model_pair_panel(&fig->panels[2], "peak MiB", runs, sv->count, peak_mib);
    model_pair_panel(&fig->panels[3], "train GFLOP/s (executed)", runs, sv->count,
                     pmoe_bench_train_gflops);
}

/* The runs' steps as one count over the sweep, each labelled with its value. */
typedef struct sweep_progress {
    const pmoe_progress *to;
    const sweep_values *sv;
    int value;             /* the run under way */
    int64_t before, total; /* steps of the runs before it; of all the runs */
} sweep_progress;

static void sweep_update(void *user, const char *what, int64_t done, int64_t total) {
    const sweep_progress *p = user;
    (void)total;
    if (!what) {
        pmoe_progress_report(p->to, NULL, p->before + done, p->total);
        return;
    }
    char label[256];
    snprintf(label, sizeof label, "%s=%s (%d/%d): %s", p->sv->key, p->sv->text[p->value],
             p->value + 1, p->sv->count, what);
    pmoe_progress_report(p->to, label, p->before + done, p->total);
}

static const char *const OUTPUTS[] = {"csv", "jsonl", "png"};

static void output_path(const char *dir, const sweep_values *sv, const char *ext, char *out,
                        size_t size) {
    snprintf(out, size, "%s/sweep-%s.%s", dir, sv->key, ext);
}

static pmoe_status open_output(const char *dir, const sweep_values *sv, const char *ext,
                               pmoe_atomic_file *out, pmoe_error *err) {
    char path[sizeof out->path];
    output_path(dir, sv, ext, path, sizeof path);
    return pmoe_atomic_open(out, path, err);
}

/* Everything that could refuse the sweep's results, found before its runs. */
static pmoe_status check_sweep(const pmoe_config *cfg, const char *sweep, const char *dir,
                               sweep_values *sv, pmoe_error *err) {
    pmoe_status s = parse_sweep(sweep, sv, err);
    if (s) return s;
    pmoe_config probe = *cfg; /* every value must be a valid setting */
    for (int i = 0; !s && i < sv->count; i++)
        s = pmoe_config_set_value(&probe, sv->key, sv->text[i], err);
    if (!s) s = pmoe_make_dir(dir, "--out folder", err);
    for (int i = 0; !s && i < (int)(sizeof OUTPUTS / sizeof OUTPUTS[0]); i++) {
        char path[sizeof((pmoe_atomic_file *)0)->path];
        output_path(dir, sv, OUTPUTS[i], path, sizeof path);
        s = pmoe_check_replaceable(path, err); /* a FIFO, a device, a folder in the way */
    }
    return s;
}

pmoe_status pmoe_bench_sweep_check(const pmoe_config *cfg, const char *sweep, const char *dir,
                                   pmoe_error *err) {
    sweep_values sv;
    return check_sweep(cfg, sweep, dir, &sv, err);
}

pmoe_status pmoe_bench_sweep(const pmoe_config *cfg, const char *sweep, const char *dir, FILE *log,
                             const pmoe_progress *progress, pmoe_error *err) {
    sweep_values sv;
    pmoe_status s = check_sweep(cfg, sweep, dir, &sv, err);
    if (s) return s;
    pmoe_config probe = *cfg; /* the steps of every run, for one progress count */
    sweep_progress counted = {progress, &sv, 0, 0, 0};
    for (int i = 0; !s && i < sv.count; i++) {
        s = pmoe_config_set_value(&probe, sv.key, sv.text[i], err);
        if (!s) counted.total += pmoe_bench_steps(&probe);
    }
    const pmoe_progress relay = {&counted, sweep_update};
    if (s) return s;
    pmoe_bench_result *runs = calloc((size_t)sv.count, sizeof *runs);
    if (!runs) return pmoe_fail(err, PMOE_ERR_OOM, "--sweep: cannot allocate %d results", sv.count);
    pmoe_bench_options options = {NULL, -1.0, progress ? &relay : NULL};
    if (cfg->bench.sgemm_size > 0) {
        pmoe_progress_report(progress, "the peak (one SGEMM)", 0, counted.total);
        s = pmoe_bench_peak_gflops(cfg, cfg->bench.sgemm_size, &options.sgemm_gflops, err);
    }
    for (int i = 0; !s && i < sv.count; i++) {
        pmoe_config one = *cfg;
        s = pmoe_config_set_value(&one, sv.key, sv.text[i], err);
        counted.value = i;
        if (!s) s = pmoe_bench_run(&one, &options, &runs[i], err);
        if (!s) counted.before += pmoe_bench_steps(&one);
        pmoe_progress_report(options.progress, NULL, 0, 0); /* the line below prints alone */
        if (s) {
            char detail[sizeof err->message];
            snprintf(detail, sizeof detail, "%s", err->message);
            s = pmoe_fail(err, s, "--sweep %s=%s: %s", sv.key, sv.text[i], detail);
        } else if (log) {
            const pmoe_bench_result *r = &runs[i];
            fprintf(log,
                    "%s = %-8s %s %8.3f ms/step %8.3f MFLOP/sample | %s %8.3f ms/step %8.3f "
                    "MFLOP/sample | time ratio %.3f, executed FLOP ratio %.3f\n",
                    sv.key, sv.text[i], r->pmoe.model, r->pmoe.train.median_ms,
                    r->pmoe.train_flops[PMOE_FLOPS_EXECUTED] / 1e6, r->baseline.model,
                    r->baseline.train.median_ms, r->baseline.train_flops[PMOE_FLOPS_EXECUTED] / 1e6,
                    r->pmoe.train.median_ms / r->baseline.train.median_ms,
                    r->pmoe.train_flops[PMOE_FLOPS_EXECUTED] /
                        r->baseline.train_flops[PMOE_FLOPS_EXECUTED]);
            fflush(log);
        }
    }
    pmoe_atomic_file out;
    if (!s) s = open_output(dir, &sv, OUTPUTS[0], &out, err);
    if (!s) {
        fprintf(out.stream,
                "key,value,model,experts,topl,patches,dim,hidden,batch,train_flops_per_sample,"
                "executed_train_flops_per_sample,dense_masked_train_flops_per_sample,"
                "infer_flops_per_sample,executed_infer_flops_per_sample,peak_bytes,"
                "train_ms_per_step,train_ms_min,train_ms_max,infer_ms_per_step,train_gflops,"
                "train_samples_per_s\n");
        for (int i = 0; i < sv.count; i++) {
            csv_row(out.stream, &sv, i, &runs[i], &runs[i].pmoe);
            csv_row(out.stream, &sv, i, &runs[i], &runs[i].baseline);
        }
        s = pmoe_atomic_commit(&out, err);
        if (!s && log) fprintf(log, "wrote %s\n", out.path);
    }
    if (!s) s = open_output(dir, &sv, OUTPUTS[1], &out, err);
    if (!s) {
        for (int i = 0; i < sv.count; i++) {
            pmoe_bench_write_json(out.stream, &runs[i]);
            fputc('\n', out.stream);
        }
        s = pmoe_atomic_commit(&out, err);
        if (!s && log) fprintf(log, "wrote %s\n", out.path);
    }
    if (!s) {
        pmoe_plot_figure *fig = malloc(sizeof *fig);
        if (!fig) s = pmoe_fail(err, PMOE_ERR_OOM, "--sweep: cannot allocate the plot");
        else {
            fill_figure(fig, &sv, runs);
            char path[sizeof out.path];
            output_path(dir, &sv, OUTPUTS[2], path, sizeof path);
            s = pmoe_plot_write_png(fig, path, err);
            if (!s && log) fprintf(log, "wrote %s\n", path);
            free(fig);
        }
    }
    free(runs);
    return s;
}
