/* table.c: a bench result as a table (pmoe_bench_print_table, bench.h):
 * a row per model and their ratio, where a train step's time goes by
 * phase, the FLOPs per layer, and for WRN-pMoE the isolated blocks. */
#include <string.h>

#include "bench/bench_internal.h"

static void print_row(FILE *out, const pmoe_bench_result *r, const pmoe_bench_model *m) {
    const double train_gf = pmoe_bench_train_gflops(r, m);
    fprintf(out,
            "%-8s %3d %4d  %8.3f %8.3f  %8.3f %8.3f  %7.2f  %7.3f [%.3f-%.3f]  %7.3f [%.3f-%.3f]  "
            "%9.0f %7.2f",
            m->model, m->experts, m->topl, m->train_flops[PMOE_FLOPS_USEFUL] / 1e6,
            m->train_flops[PMOE_FLOPS_EXECUTED] / 1e6, m->infer_flops[PMOE_FLOPS_USEFUL] / 1e6,
            m->infer_flops[PMOE_FLOPS_EXECUTED] / 1e6, (double)m->mem.peak_bytes / 1048576.0,
            m->train.median_ms, m->train.min_ms, m->train.max_ms, m->infer.median_ms,
            m->infer.min_ms, m->infer.max_ms, (double)r->batch / (m->train.median_ms * 1e-3),
            train_gf);
    if (r->sgemm_gflops > 0) fprintf(out, " %6.1f%%", 100.0 * train_gf / r->sgemm_gflops);
    fprintf(out, "\n");
}

static void print_layer_row(FILE *out, const char *name, const pmoe_bench_model *p,
                            const pmoe_layer_flops *lp, const pmoe_bench_model *b,
                            const pmoe_layer_flops *lb) {
    fprintf(out, "  %-22s", name);
    const pmoe_bench_model *models[2] = {p, b};
    const pmoe_layer_flops *rows[2] = {lp, lb};
    for (int i = 0; i < 2; i++) {
        if (rows[i])
            fprintf(out, "  %s %9.4f / %9.4f / %9.4f", models[i]->model,
                    pmoe_layer_flops_train(rows[i], PMOE_FLOPS_USEFUL) / 1e6,
                    pmoe_layer_flops_train(rows[i], PMOE_FLOPS_EXECUTED) / 1e6,
                    pmoe_layer_flops_train(rows[i], PMOE_FLOPS_DENSE_MASKED) / 1e6);
        else fprintf(out, "  %s %9s   %9s   %9s", models[i]->model, "-", "-", "-");
    }
    fputc('\n', out);
}

static void print_blocks(FILE *out, const pmoe_bench_result *r) {
    const pmoe_bench_block *w = &r->blocks[PMOE_BENCH_BLOCK_WRN];
    fprintf(out,
            "\nthe pMoE layer alone against the WRN layers it replaces (group 3's bn2, relu2, "
            "conv2, shortcut and add),\neach on a %dx%dx%d map (the shortcut: %dx%dx%d), batch "
            "%lld; train = forward + backward, infer = evaluation forward;\nMFLOP/sample useful / "
            "executed, ms median [min-max], ratios to wrn_block:\n",
            r->map_channels, r->map_height, r->map_width, r->map_channels / 2, 2 * r->map_height,
            2 * r->map_width, (long long)r->batch);
    fprintf(out, "  %-18s  %-19s  %-26s  %-19s  %-26s  %-13s  %-13s\n", "block", "train MFLOP",
            "train ms", "infer MFLOP", "infer ms", "train ratio", "infer ratio");
    fprintf(out, "  %-18s  %-19s  %-26s  %-19s  %-26s  %-13s  %-13s\n", "", "", "", "", "",
            "FLOP   time", "FLOP   time");
    for (int i = 0; i < r->block_count; i++) {
        const pmoe_bench_block *k = &r->blocks[i];
        fprintf(out,
                "  %-18s  %8.3f / %8.3f  %7.3f [%7.3f-%7.3f]  %8.3f / %8.3f  %7.3f [%7.3f-%7.3f]"
                "  %5.3f %6.3f  %5.3f %6.3f\n",
                k->name, k->train_flops[PMOE_FLOPS_USEFUL] / 1e6,
                k->train_flops[PMOE_FLOPS_EXECUTED] / 1e6, k->train.median_ms, k->train.min_ms,
                k->train.max_ms, k->infer_flops[PMOE_FLOPS_USEFUL] / 1e6,
                k->infer_flops[PMOE_FLOPS_EXECUTED] / 1e6, k->infer.median_ms, k->infer.min_ms,
                k->infer.max_ms,
                k->train_flops[PMOE_FLOPS_EXECUTED] / w->train_flops[PMOE_FLOPS_EXECUTED],
                k->train.median_ms / w->train.median_ms,
                k->infer_flops[PMOE_FLOPS_EXECUTED] / w->infer_flops[PMOE_FLOPS_EXECUTED],
                k->infer.median_ms / w->infer.median_ms);
    }
}

void pmoe_bench_print_table(FILE *out, const pmoe_bench_result *r) {
    const pmoe_bench_model *p = &r->pmoe, *b = &r->baseline;
    if (r->deep && r->map_channels > 0)
        fprintf(out,
                "pmoe bench: %s; %s (w = %d) against %s; pMoE layer on the %dx%dx%d map: n = %d "
                "patches of %dx%d (d = %d), k = %d, l = %d, %s; batch %lld\n",
                r->data, p->model, p->width, b->model, r->map_channels, r->map_height, r->map_width,
                p->patches, r->patch, r->patch, p->dim, p->experts, p->topl, p->moe_impl,
                (long long)r->batch);
    else if (r->deep)
        fprintf(out,
                "pmoe bench: %s; %s (w = %d) against itself (an A/A run: the ratios are "
                "the timing noise); batch %lld\n",
                r->data, p->model, p->width, (long long)r->batch);
    else
        fprintf(out, "pmoe bench: %s; n = %d patches of d = %d, m = %d hidden, batch %lld\n",
                r->data, p->patches, p->dim, p->hidden, (long long)r->batch);
    fprintf(out, "machine: %s, %d cores; backend %s, %d threads; %s\n", r->cpu, r->cores,
            r->backend, r->threads, r->blas);
    if (r->sgemm_gflops > 0)
        fprintf(out, "peak: SGEMM %d^3 = %.1f GFLOP/s\n", r->sgemm_size, r->sgemm_gflops);
    if (r->others_cpu_share > 0.05)
        fprintf(out,
                "warning: other processes kept %.0f%% of the %d cores busy during the run "
                "(load average %.2f before, %.2f after): these times, above all the threaded "
                "ones, are not reliable\n",
                100.0 * r->others_cpu_share, r->cores, r->load_before, r->load_after);
    fprintf(out,
            "time: %d warm-up + %d timed steps, median [min-max]; train step = forward + "
            "backward + SGD (learning rate 0: the weights stay at their initial values)%s\n%s",
            r->warmup, r->repeats,
            strcmp(r->mode, "separate") == 0 ? " (separate mode: the expert phase)" : "",
            r->deep ? "" : "\n");
    if (r->deep)
        fprintf(out, "inference step = evaluation mode (batch norm on running statistics): "
                     "forward + loss, no backward\n\n");
    fprintf(out, "%-8s %3s %4s  %-17s  %-17s  %7s  %-26s  %-26s  %9s %7s %7s\n", "", "", "",
            "train MFLOP/sample", "infer MFLOP/sample", "peak", "train ms/step", "infer ms/step",
            "train", "train", "of");
    fprintf(out, "%-8s %3s %4s  %8s %8s  %8s %8s  %7s  %-26s  %-26s  %9s %7s %7s\n", "model", "k",
            "l", "useful", "executed", "useful", "executed", "MiB", "median [min-max]",
            "median [min-max]", "samples/s", "GFLOP/s", "peak");
    print_row(out, r, p);
    print_row(out, r, b);
    fprintf(out,
            "%-8s %3s %4s  %8.3f %8.3f  %8.3f %8.3f  %7.2f  %7.3f %18s  %7.3f %18s  %9.3f %7.2f\n",
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
            fprintf(out, "  %-20s %-8s %8.3f   %-8s %8.3f\n", pmoe_timer_name((pmoe_phase_id)i),
                    p->model, p->phase_ms[i], b->model, b->phase_ms[i]);
    if (r->deep && r->map_channels > 0)
        fprintf(out, "  %-20s %-8s %8.3f   (the pMoE layer's phases above, forward and backward)\n",
                "pMoE layer", p->model, bench_moe_layer_phase_ms(p));
    fprintf(out,
            "\nper layer, MFLOP/sample, forward + backward (useful / executed / dense-masked):\n");
    for (int i = 0; i < p->flops.layer_count; i++) {
        const pmoe_layer_flops *lp = &p->flops.layers[i];
        print_layer_row(out, lp->name, p, lp, b, pmoe_flops_layer(&b->flops, lp->name));
    }
    for (int i = 0; i < b->flops.layer_count; i++) { /* the baseline's own layers */
        const pmoe_layer_flops *lb = &b->flops.layers[i];
        if (!pmoe_flops_layer(&p->flops, lb->name)) print_layer_row(out, lb->name, p, NULL, b, lb);
    }
    fprintf(
        out, "  %-22s  %s %9.4f / %9.4f / %9.4f  %s %9.4f / %9.4f / %9.4f  (per step / batch)\n",
        "update", p->model, p->flops.update[0] / 1e6 / (double)r->batch,
        p->flops.update[1] / 1e6 / (double)r->batch, p->flops.update[2] / 1e6 / (double)r->batch,
        b->model, b->flops.update[0] / 1e6 / (double)r->batch,
        b->flops.update[1] / 1e6 / (double)r->batch, b->flops.update[2] / 1e6 / (double)r->batch);
    if (r->block_count > 0) print_blocks(out, r);
}
