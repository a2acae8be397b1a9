/* json.c: a bench result as one JSON object on one line
 * (pmoe_bench_write_json, bench.h); a figure that is not finite is null. */
#include <math.h>

#include "bench/bench_internal.h"
#include "train/report.h"

/* A number, or null when not finite (JSON has no NaN). */
static void json_number(FILE *out, const char *key, double v) {
    if (isfinite(v)) fprintf(out, "\"%s\":%.9g", key, v);
    else fprintf(out, "\"%s\":null", key);
}

/* The train and inference steps' median, min and max, each field followed
 * by a comma. */
static void json_timings(FILE *out, const pmoe_timing *train, const pmoe_timing *infer) {
    const struct {
        const char *key;
        double v;
    } fields[] = {
        {"train_ms_per_step", train->median_ms}, {"train_ms_min", train->min_ms},
        {"train_ms_max", train->max_ms},         {"infer_ms_per_step", infer->median_ms},
        {"infer_ms_min", infer->min_ms},         {"infer_ms_max", infer->max_ms},
    };
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        json_number(out, fields[i].key, fields[i].v);
        fputc(',', out);
    }
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
    fprintf(out,
            "{\"model\":\"%s\",\"gate\":\"%s\",\"experts\":%d,\"topl\":%d,\"patches\":%d,"
            "\"dim\":%d,\"hidden\":%d,\"classes\":%d,\"params\":%lld,\"learn_router\":%d,"
            "\"train_output\":%d,",
            m->model, m->gate, m->experts, m->topl, m->patches, m->dim, m->hidden, m->classes,
            (long long)m->params, m->learn_router, m->train_output);
    if (r->deep) fprintf(out, "\"width\":%d,\"moe_impl\":\"%s\",", m->width, m->moe_impl);
    json_number(out, "train_flops_per_sample", m->train_flops[PMOE_FLOPS_USEFUL]);
    fputc(',', out);
    json_number(out, "infer_flops_per_sample", m->infer_flops[PMOE_FLOPS_USEFUL]);
    fputc(',', out);
    json_number(out, "executed_train_flops_per_sample", m->train_flops[PMOE_FLOPS_EXECUTED]);
    fputc(',', out);
    json_number(out, "executed_infer_flops_per_sample", m->infer_flops[PMOE_FLOPS_EXECUTED]);
    fputc(',', out);
    json_number(out, "dense_masked_train_flops_per_sample",
                m->train_flops[PMOE_FLOPS_DENSE_MASKED]);
    fputc(',', out);
    json_number(out, "dense_masked_infer_flops_per_sample",
                m->infer_flops[PMOE_FLOPS_DENSE_MASKED]);
    fprintf(out,
            ",\"peak_bytes\":%lld,\"parameter_bytes\":%lld,\"activation_bytes\":%lld,"
            "\"workspace_bytes\":%lld,\"backward_bytes\":%lld,\"device_peak_bytes\":%lld,"
            "\"host_bytes\":%lld,",
            (long long)m->mem.peak_bytes, (long long)m->mem.parameter_bytes,
            (long long)m->mem.activation_bytes, (long long)m->mem.workspace_bytes,
            (long long)m->mem.backward_bytes, (long long)m->mem.device_peak_bytes,
            (long long)m->mem.host_bytes);
    json_timings(out, &m->train, &m->infer);
    const struct {
        const char *key;
        double v;
    } numbers[] = {
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
    fprintf(out, "}");
    if (r->deep && m->moe_impl[0]) {
        fputc(',', out);
        json_number(out, "moe_layer_phase_ms", bench_moe_layer_phase_ms(m));
    }
    fprintf(out, ",\"update_flops_per_step\":");
    json_kinds(out, m->flops.update);
    fprintf(out, ",\"layers\":[");
    for (int i = 0; i < m->flops.layer_count; i++) {
        const pmoe_layer_flops *L = &m->flops.layers[i];
        fprintf(out, "%s{\"name\":\"%s\",\"forward\":", i ? "," : "", L->name);
        json_kinds(out, L->forward);
        fprintf(out, ",\"backward\":");
        json_kinds(out, L->backward);
        if (L->has_eval) {
            fprintf(out, ",\"eval_forward\":");
            json_kinds(out, L->eval_forward);
        }
        fprintf(out, "}");
    }
    fprintf(out, "]}");
}

void pmoe_bench_write_json(FILE *out, const pmoe_bench_result *r) {
    fprintf(out, "{\"bench\":\"%s\",\"date\":\"%s\",\"machine\":{\"cpu\":",
            r->deep ? "deep" : "two_layer", r->date);
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
    fprintf(out, "}");
    if (r->deep)
        fprintf(out, ",\"map\":{\"channels\":%d,\"height\":%d,\"width\":%d}", r->map_channels,
                r->map_height, r->map_width);
    if (r->block_count > 0) {
        const pmoe_bench_block *w = &r->blocks[PMOE_BENCH_BLOCK_WRN];
        fprintf(out, ",\"blocks\":[");
        for (int i = 0; i < r->block_count; i++) {
            const pmoe_bench_block *k = &r->blocks[i];
            fprintf(out, "%s{\"name\":\"%s\",\"train_flops_per_sample\":", i ? "," : "", k->name);
            json_kinds(out, k->train_flops);
            fprintf(out, ",\"infer_flops_per_sample\":");
            json_kinds(out, k->infer_flops);
            fputc(',', out);
            json_timings(out, &k->train, &k->infer);
            const struct {
                const char *key;
                double v;
            } numbers[] = {
                {"executed_train_flops_ratio",
                 k->train_flops[PMOE_FLOPS_EXECUTED] / w->train_flops[PMOE_FLOPS_EXECUTED]},
                {"train_ms_ratio", k->train.median_ms / w->train.median_ms},
                {"executed_infer_flops_ratio",
                 k->infer_flops[PMOE_FLOPS_EXECUTED] / w->infer_flops[PMOE_FLOPS_EXECUTED]},
                {"infer_ms_ratio", k->infer.median_ms / w->infer.median_ms},
            };
            for (size_t j = 0; j < sizeof numbers / sizeof numbers[0]; j++) {
                if (j) fputc(',', out);
                json_number(out, numbers[j].key, numbers[j].v);
            }
            fprintf(out, "}");
        }
        fprintf(out, "]");
    }
    fprintf(out, "}");
}
