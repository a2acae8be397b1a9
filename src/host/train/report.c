/* report.c: progress bar, plain progress lines, JSON log and result (see report.h). */
#include "train/report.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/files.h"
#include "core/phase_timer.h"
#include "train/class_figures.h"
#include "train/progress_line.h"

void pmoe_write_json_string(FILE *out, const char *s) {
    fputc('"', out);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') fprintf(out, "\\%c", *p);
        else if (*p < 0x20) fprintf(out, "\\u%04x", *p);
        else fputc(*p, out);
    }
    fputc('"', out);
}

/* A number, or null where it is not defined (negative means "not measured"). */
static void json_measure(FILE *out, const char *key, double v) {
    if (v < 0.0 || !isfinite(v)) fprintf(out, ",\"%s\":null", key);
    else fprintf(out, ",\"%s\":%.6g", key, v);
}

/* After each flush of progress: the first failure is kept, and stops the run. */
static void check_progress(pmoe_reporter *rep) {
    if (rep->failed.code) return;
    const char *name = rep->progress_name ? rep->progress_name : "standard output";
    if (pmoe_stream_check(rep->progress, name, &rep->failed) && rep->stop) *rep->stop = 1;
}

static void on_start(void *user, const pmoe_run_info *in) {
    pmoe_reporter *rep = user;
    if (!rep->progress) return;
    fprintf(rep->progress,
            "pmoe: %s model on %s (%s backend)\n"
            "      %lld train / %lld test samples, n = %d patches of %dx%d (d = %d), "
            "k = %d, l = %d, %lld parameters\n",
            in->model, in->data, in->backend, (long long)in->train_size, (long long)in->test_size,
            in->patches, in->patch, in->patch, in->patch_dim, in->experts, in->topl,
            (long long)in->params);
    if (in->backend_why[0]) fprintf(rep->progress, "      %s\n", in->backend_why);
    /* Which key sets which phase's epochs, and what the router phase's loss is. */
    if (in->router_epochs > 0)
        fprintf(
            rep->progress,
            "      separate training: first the routers alone, %d epochs (train.router_epochs)"
            " on their\n"
            "      linear loss -y <w_0 - w_1, sum of the patches> (unbounded: it falls below 0"
            " as they\n"
            "      learn), then the experts with the routers frozen, %d epochs (train.epochs)\n",
            in->router_epochs, in->epochs);
    else fprintf(rep->progress, "      %d epochs (train.epochs)\n", in->epochs);
    if (in->ranks > 1 && in->expert_ranks > 0) /* a deep model */
        fprintf(rep->progress,
                "      data parallel: %d ranks over %s, 1/%d of each batch per rank; "
                "experts in groups of %d (train.expert_parallel): %d per rank; batch norm %s\n",
                in->ranks, in->comm, in->ranks, in->expert_ranks, in->experts / in->expert_ranks,
                in->sync_bn ? "over the global batch (train.sync_bn)" : "per rank");
    else if (in->ranks > 1)
        fprintf(
            rep->progress,
            "      expert parallel: %d ranks over %s, %d experts and 1/%d of each batch per rank\n",
            in->ranks, in->comm, in->experts / in->ranks, in->ranks);
    check_progress(rep);
}

static void clear_bar(pmoe_reporter *rep) {
    if (rep->bar_shown) fprintf(rep->progress, "\r\033[K");
    rep->bar_shown = 0;
}

/* Off a terminal: a plain line every PLAIN_EVERY seconds inside long epochs. */
enum { PLAIN_EVERY = 30 };

static void on_step(void *user, const pmoe_step_report *r) {
    pmoe_reporter *rep = user;
    if (!rep->progress) return;
    double t = pmoe_now_seconds();
    if (!rep->is_terminal) {
        if (rep->last_line == 0.0) rep->last_line = t;
        if (t - rep->last_line < PLAIN_EVERY) return;
        rep->last_line = t;
        fprintf(rep->progress,
                "%s epoch %d/%d  step %lld  batch %lld/%lld  loss %.4f  %.0f samples/s\n",
                r->phase == PMOE_PHASE_ROUTER ? "router" : "train ", r->epoch, r->epochs,
                (long long)r->step, (long long)r->batch_index, (long long)r->batches, r->loss,
                r->elapsed > 0 ? (double)r->samples / r->elapsed : 0.0);
        check_progress(rep);
        return;
    }
    if (t - rep->last_draw < 0.1 && r->batch_index != r->batches) return;
    rep->last_draw = t;
    const double done = ((r->epoch - 1) + (double)r->batch_index / (double)r->batches) / r->epochs;
    const double eta = done > 0 ? r->elapsed * (1.0 - done) / done : 0.0;
    char bar[PMOE_PROGRESS_BAR_WIDTH + 1];
    pmoe_progress_bar(done, bar);
    fprintf(rep->progress,
            "\r\033[K%s [%s] epoch %d/%d  step %lld  loss %.4f  %.0f samples/s  ETA %d:%02d",
            r->phase == PMOE_PHASE_ROUTER ? "router" : "train ", bar, r->epoch, r->epochs,
            (long long)r->step, r->loss, r->elapsed > 0 ? (double)r->samples / r->elapsed : 0.0,
            (int)eta / 60, (int)eta % 60);
    rep->bar_shown = 1;
    check_progress(rep);
}

/* One epoch as one JSON object on one line. */
static void write_epoch_json(FILE *f, const pmoe_epoch_report *r) {
    fprintf(f, "{\"phase\":\"%s\",\"epoch\":%d,\"epochs\":%d,\"step\":%lld,\"train_loss\":%.9g",
            r->phase == PMOE_PHASE_ROUTER ? "router" : "main", r->epoch, r->epochs,
            (long long)r->step, r->train_loss);
    fprintf(f, ",\"lr\":%.9g", r->lr);
    json_measure(f, "train_acc", r->train_acc);
    json_measure(f, "test_acc", r->test_acc);
    json_measure(f, "router_recall", r->router_recall);
    if (r->experts_reported > 0) {
        fprintf(f, ",\"expert_recall\":[");
        for (int e = 0; e < r->experts_reported; e++)
            fprintf(f, "%s%.6g", e ? "," : "", r->expert_recall[e]);
        fprintf(f, "]");
    }
    const pmoe_expert_load *ld = &r->load;
    if (ld->experts > 0) {
        fprintf(f, ",\"expert_load_position\":[");
        for (int e = 0; e < ld->experts; e++) {
            fprintf(f, "%s[", e ? "," : "");
            for (int j = 0; j < ld->positions; j++)
                fprintf(f, "%s%lld", j ? "," : "",
                        (long long)ld->by_position[e * ld->positions + j]);
            fprintf(f, "]");
        }
        fprintf(f, "],\"expert_load_class\":[");
        for (int e = 0; e < ld->experts; e++) {
            fprintf(f, "%s[", e ? "," : "");
            for (int c = 0; c < ld->classes; c++)
                fprintf(f, "%s%lld", c ? "," : "", (long long)ld->by_class[e * ld->classes + c]);
            fprintf(f, "]");
        }
        fprintf(f, "],\"load_samples\":%lld,\"grid_rows\":%d,\"grid_cols\":%d",
                (long long)ld->samples, ld->grid_rows, ld->grid_cols);
    }
    fprintf(f, ",\"phase_seconds\":{");
    for (int i = 0; i < pmoe_phase_count(); i++)
        fprintf(f, "%s\"%s\":%.6g", i ? "," : "", pmoe_phase_name(i), r->phase_seconds[i]);
    fprintf(f, "},\"step_seconds\":%.6g", r->step_seconds);
    if (r->exchange_bytes > 0) fprintf(f, ",\"exchange_bytes\":%lld", (long long)r->exchange_bytes);
    fprintf(f, ",\"skipped_steps\":%lld", (long long)r->skipped_steps);
    fprintf(f, ",\"seconds\":%.6g,\"elapsed\":%.6g}\n", r->seconds, r->elapsed);
}

static pmoe_status on_epoch(void *user, const pmoe_epoch_report *r, pmoe_error *err) {
    pmoe_reporter *rep = user;
    if (rep->progress) {
        const int every = r->phase == PMOE_PHASE_ROUTER && r->epochs > 10 ? r->epochs / 10 : 1;
        if (r->epoch % every == 0 || r->epoch == r->epochs) {
            clear_bar(rep);
            fprintf(rep->progress, "%s epoch %3d/%d  %s %.4f",
                    r->phase == PMOE_PHASE_ROUTER ? "router" : "train ", r->epoch, r->epochs,
                    r->phase == PMOE_PHASE_ROUTER ? "linear loss" : "loss", r->train_loss);
            if (r->train_acc >= 0) fprintf(rep->progress, "  train %5.1f%%", 100 * r->train_acc);
            if (r->test_acc >= 0) fprintf(rep->progress, "  test %5.1f%%", 100 * r->test_acc);
            if (r->router_recall >= 0)
                fprintf(rep->progress, "  recall %5.1f%%", 100 * r->router_recall);
            if (r->skipped_steps > 0)
                fprintf(rep->progress, "  skipped %lld", (long long)r->skipped_steps);
            fprintf(rep->progress, "  lr %.4g  %.2f s\n", r->lr, r->seconds);
            check_progress(rep);
        }
        if (rep->failed.code && !rep->stop) { /* no flag to raise: end the run here */
            *err = rep->failed;
            return rep->failed.code;
        }
    }
    if (!rep->log) return PMOE_OK;
    /* composed in memory, then appended in one piece */
    char *line = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&line, &len);
    if (!f) return pmoe_fail(err, PMOE_ERR_OOM, "%s: cannot compose a log line", rep->log_name);
    write_epoch_json(f, r);
    const int composed = fclose(f) == 0;
    pmoe_status s =
        composed ? pmoe_stream_append(rep->log, rep->log_name, line, len, err)
                 : pmoe_fail(err, PMOE_ERR_OOM, "%s: cannot compose a log line", rep->log_name);
    free(line);
    return s;
}

pmoe_train_callbacks pmoe_reporter_callbacks(pmoe_reporter *rep) {
    pmoe_train_callbacks cb = {rep, on_start, on_step, on_epoch};
    return cb;
}

/* Where the run's time went, one line per phase that took any. */
static void phase_table(FILE *out, const pmoe_train_result *res) {
    double total = 0.0;
    for (int i = 0; i < pmoe_phase_count(); i++) total += res->phase_seconds[i];
    if (total <= 0.0) return;
    fprintf(out,
            "time by phase (s, share of the timed total %.2f s; steps measured whole: %.2f s)\n",
            total, res->step_seconds);
    for (int i = 0; i < pmoe_phase_count(); i++)
        if (res->phase_seconds[i] > 0.0)
            fprintf(out, "  %-20s %9.3f  %5.1f%%\n", pmoe_phase_name(i), res->phase_seconds[i],
                    100.0 * res->phase_seconds[i] / total);
}

void pmoe_reporter_summary(pmoe_reporter *rep, const pmoe_train_result *res) {
    if (!rep->progress) return;
    clear_bar(rep);
    phase_table(rep->progress, res);
    fprintf(rep->progress, "done: test accuracy %.2f%%", 100 * res->test_acc);
    if (res->router_recall >= 0)
        fprintf(rep->progress, ", router recall %.2f%%", 100 * res->router_recall);
    /* the step counts of --json: main-phase steps, router steps apart */
    fprintf(rep->progress, ", final train loss %.4f, %lld steps", res->train_loss,
            (long long)res->steps);
    if (res->router_steps > 0)
        fprintf(rep->progress, " (and %lld router steps)", (long long)res->router_steps);
    fprintf(rep->progress, " in %.1f s\n", res->seconds);
    /* The default job keeps no weights (no files left behind by a first try),
     * so say where they are, or how to keep them for pmoe eval and route. */
    if (rep->saves_final && res->last_checkpoint[0])
        fprintf(rep->progress, "model saved: %s\n", res->last_checkpoint);
    if (res->best_checkpoint[0])
        fprintf(rep->progress, "best model: %s (epoch %d, test accuracy %.2f%%; train.keep_best)\n",
                res->best_checkpoint, res->best_epoch, 100 * res->best_test_acc);
    else
        fprintf(rep->progress,
                "model not saved: add --set train.checkpoint_every=N to save it every N steps "
                "and at the end\n(in train.checkpoint_dir) for pmoe eval and pmoe route\n");
    if (res->skipped_steps > 0)
        fprintf(rep->progress,
                "%lld step%s skipped for a non-finite loss or gradient (train.on_nonfinite = "
                "skip)\n",
                (long long)res->skipped_steps, res->skipped_steps == 1 ? "" : "s");
    fflush(rep->progress);
}

void pmoe_class_figures_print(FILE *out, const pmoe_class_figures *f) {
    int width = 5; /* the widest name, for the name column */
    char buf[16];
    for (int c = 0; c < f->classes; c++) {
        const int len = (int)strlen(pmoe_class_name(f, c, buf));
        if (len > width) width = len < 32 ? len : 32;
    }
    int64_t most = 0;
    for (int64_t i = 0; i < (int64_t)f->classes * f->classes; i++)
        if (f->counts[i] > most) most = f->counts[i];
    int cell = snprintf(NULL, 0, "%lld", (long long)most);
    const int index_width = snprintf(NULL, 0, "%d", f->classes - 1);
    if (cell < index_width) cell = index_width;
    fprintf(out, "per class (accuracy: the share of the class's test samples predicted right)\n");
    fprintf(out, "  %*s  %-*s  %8s  %8s\n", index_width, "#", width, "class", "samples",
            "accuracy");
    for (int c = 0; c < f->classes; c++) {
        const int64_t n = pmoe_class_samples(f, c);
        fprintf(out, "  %*d  %-*.*s  %8lld  ", index_width, c, width, width,
                pmoe_class_name(f, c, buf), (long long)n);
        if (n > 0) fprintf(out, "%7.2f%%\n", 100.0 * (double)pmoe_class_correct(f, c) / (double)n);
        else fprintf(out, "%8s\n", "-");
    }
    fprintf(out, "confusion matrix (rows: the true class, columns: the predicted class, by #)\n");
    fprintf(out, "  %*s ", index_width, "");
    for (int p = 0; p < f->classes; p++) fprintf(out, " %*d", cell, p);
    fputc('\n', out);
    for (int t = 0; t < f->classes; t++) {
        fprintf(out, "  %*d ", index_width, t);
        for (int p = 0; p < f->classes; p++)
            fprintf(out, " %*lld", cell, (long long)f->counts[(int64_t)t * f->classes + p]);
        fputc('\n', out);
    }
}

void pmoe_class_figures_write_json(FILE *out, const pmoe_class_figures *f) {
    char buf[16];
    fprintf(out, "\"per_class\":[");
    for (int c = 0; c < f->classes; c++) {
        const int64_t n = pmoe_class_samples(f, c), right = pmoe_class_correct(f, c);
        fprintf(out, "%s{\"index\":%d,\"class\":", c ? "," : "", c);
        pmoe_write_json_string(out, pmoe_class_name(f, c, buf));
        fprintf(out, ",\"samples\":%lld,\"correct\":%lld", (long long)n, (long long)right);
        if (n > 0) fprintf(out, ",\"accuracy\":%.6g}", (double)right / (double)n);
        else fprintf(out, ",\"accuracy\":null}");
    }
    fprintf(out, "],\"confusion\":[");
    for (int t = 0; t < f->classes; t++) {
        fprintf(out, "%s[", t ? "," : "");
        for (int p = 0; p < f->classes; p++)
            fprintf(out, "%s%lld", p ? "," : "", (long long)f->counts[(int64_t)t * f->classes + p]);
        fputc(']', out);
    }
    fputc(']', out);
}

void pmoe_write_result_json(FILE *out, const pmoe_train_result *res) {
    fprintf(out, "{\"model\":");
    pmoe_write_json_string(out, res->info.model);
    fprintf(out, ",\"data\":");
    pmoe_write_json_string(out, res->info.data);
    fprintf(out, ",\"backend\":");
    pmoe_write_json_string(out, res->info.backend);
    fprintf(out, ",\"test_acc\":%.6g,\"train_loss\":%.9g,\"train_acc\":%.6g", res->test_acc,
            res->train_loss, res->train_acc);
    if (res->router_recall >= 0) fprintf(out, ",\"router_recall\":%.6g", res->router_recall);
    if (res->info.ranks > 1) /* expert parallel (peak_bytes below is rank 0's) */
        fprintf(out, ",\"ranks\":%d,\"comm\":\"%s\"", res->info.ranks, res->info.comm);
    fprintf(out,
            ",\"steps\":%lld,\"router_steps\":%lld,\"skipped_steps\":%lld,\"seconds\":%.6g,"
            "\"params\":%lld,"
            "\"experts\":%d,\"topl\":%d,\"patches\":%d,\"peak_bytes\":%lld",
            (long long)res->steps, (long long)res->router_steps, (long long)res->skipped_steps,
            res->seconds, (long long)res->info.params, res->info.experts, res->info.topl,
            res->info.patches, (long long)res->peak_bytes);
    if (res->best_epoch > 0) {
        fprintf(out, ",\"best_checkpoint\":");
        pmoe_write_json_string(out, res->best_checkpoint);
        fprintf(out, ",\"best_epoch\":%d,\"best_test_acc\":%.6g", res->best_epoch,
                res->best_test_acc);
    }
    if (res->per_class.classes > 0) {
        fputc(',', out);
        pmoe_class_figures_write_json(out, &res->per_class);
    }
    fputc('}', out);
}
