/* evaluate.c: one pass over the test set, and pmoe_eval.
 *
 * The pass measures, batch by batch, in functions of one job each: test
 * accuracy (count_correct); when asked, the confusion matrix of the samples'
 * classes (count_classes: this rank's rows of logits, the loss's rule);
 * where the model routes, each expert's load by
 * patch position and by class (count_load); where the task knows the
 * deciding patch and the model routes on the same patch grid, router recall
 * (count_recall); for pmoe_route, the first samples with their picks and
 * gates (keep_samples); and, sharded, the exact integer sums of those counts
 * over the ranks (sum_across_ranks). Accuracy needs no sum: the loss
 * reports the global batch's correct count on every rank. */
#include <stdlib.h>
#include <string.h>

#include "train/class_figures.h"
#include "train/run.h"

/* Router recall's counts over the test set. */
typedef struct recall_counts {
    int64_t any;                                  /* some expert picked the deciding patch */
    int64_t by_expert[PMOE_MAX_REPORTED_EXPERTS]; /* expert e picked it */
} recall_counts;

static int reported_experts(const run *r) {
    return r->routing.experts < PMOE_MAX_REPORTED_EXPERTS ? r->routing.experts
                                                          : PMOE_MAX_REPORTED_EXPERTS;
}

/* The batch in the model through the forward pass and the loss (in
 * evaluation mode): *correct gets the global batch's correct count. */
static pmoe_status count_correct(run *r, const shard *sh, int64_t count, int64_t *correct,
                                 pmoe_error *err) {
    double loss;
    pmoe_model_forward_valid(r->model, sh->local, count);
    return pmoe_model_loss(r->model, 0, &loss, correct, err);
}

/* Adds this rank's real samples to the confusion matrix: its rows of the
 * logits (the model's, before any gathering) against their labels. */
static pmoe_status count_classes(run *r, const shard *sh, float *logits, pmoe_class_figures *f,
                                 pmoe_error *err) {
    const pmoe_model *m = r->model;
    pmoe_status s = r->be->copy_out(r->be, logits, m->logits,
                                    sizeof(float) * (size_t)(sh->local * m->classes), err);
    if (!s) pmoe_class_figures_add(f, logits, r->host_labels + sh->first, sh->real);
    return s;
}

static void clear_load(run *r) {
    const int k = r->routing.experts, n = r->routing.patch_count, c = r->load_classes;
    memset(r->load_position, 0, sizeof(int64_t) * (size_t)(k * n));
    memset(r->load_class, 0, sizeof(int64_t) * (size_t)(k * c));
}

/* Adds this rank's real samples' picks (r->host_selected) to the load: by
 * patch position, and by class: what each picked patch shows where the data
 * say, else the sample's class (l picks each). */
static void count_load(run *r, const pmoe_dataset *ds, int64_t start, const shard *sh) {
    const pmoe_routing_view *rv = &r->routing;
    const int k = rv->experts, l = rv->topl, n = rv->patch_count, c = r->load_classes;
    for (int64_t i = 0; i < sh->real; i++) {
        const int label = r->host_labels[sh->first + i];
        for (int e = 0; e < k; e++) {
            for (int t = 0; t < l; t++) {
                const int32_t j = r->host_selected[(i * k + e) * l + t];
                r->load_position[e * n + j]++;
                if (r->load_by_patch_class)
                    r->load_class[e * c + ds->patch_class(ds, start + sh->first + i, j)]++;
            }
            if (!r->load_by_patch_class) r->load_class[e * c + label] += l;
        }
    }
}

/* Adds this rank's real samples to the recall counts: a sample counts for an
 * expert whose l picks hold its deciding patch, and once for any expert. */
static void count_recall(const run *r, const pmoe_dataset *ds, int64_t start, const shard *sh,
                         recall_counts *recalled) {
    const int k = r->routing.experts, l = r->routing.topl;
    for (int64_t i = 0; i < sh->real; i++) {
        const int32_t want = ds->decisive_patch[start + sh->first + i];
        int any = 0;
        for (int e = 0; e < k; e++) {
            int hit = 0;
            for (int t = 0; t < l; t++) hit |= r->host_selected[(i * k + e) * l + t] == want;
            any |= hit;
            if (e < PMOE_MAX_REPORTED_EXPERTS) recalled->by_expert[e] += hit;
        }
        recalled->any += any;
    }
}

/* Copies the batch's samples below keep->samples (images, picks, gates,
 * labels, deciding patches) into keep: one process only (pmoe_route). */
static pmoe_status keep_samples(run *r, const pmoe_dataset *ds, pmoe_routing *keep, int64_t start,
                                int64_t count, pmoe_error *err) {
    const pmoe_routing_view *rv = &r->routing;
    const int k = rv->experts, l = rv->topl;
    const int64_t per_sample = (int64_t)ds->channels * ds->height * ds->width;
    const int64_t kept =
        start < keep->samples ? (keep->samples - start < count ? keep->samples - start : count) : 0;
    if (kept <= 0) return PMOE_OK;
    memcpy(keep->images + start * per_sample, run_composed_images(r),
           sizeof(float) * (size_t)(kept * per_sample));
    memcpy(keep->selected + start * k * l, r->host_selected,
           sizeof(int32_t) * (size_t)(kept * k * l));
    pmoe_status s = r->be->copy_out(r->be, keep->gate + start * k * l, rv->gate,
                                    sizeof(float) * (size_t)(kept * k * l), err);
    if (s) return s;
    for (int64_t i = 0; i < kept; i++) {
        keep->labels[start + i] = r->host_labels[i];
        keep->decisive[start + i] = ds->decisive_patch ? ds->decisive_patch[start + i] : -1;
    }
    return PMOE_OK;
}

/* Sharded: every rank's recall and load counts summed exactly (integers),
 * then the ranks agree on `failed`, so all of them learn of one's failure. */
static pmoe_status sum_across_ranks(run *r, recall_counts *recalled, pmoe_class_figures *figures,
                                    pmoe_status failed, pmoe_error *err) {
    const int k = r->routing.experts, n = r->routing.patch_count, c = r->load_classes;
    int64_t counts[1 + PMOE_MAX_REPORTED_EXPERTS];
    const int reported = reported_experts(r);
    counts[0] = recalled->any;
    memcpy(counts + 1, recalled->by_expert, sizeof(int64_t) * (size_t)reported);
    r->comm->sum_i64(r->comm, counts, 1 + reported);
    recalled->any = counts[0];
    memcpy(recalled->by_expert, counts + 1, sizeof(int64_t) * (size_t)reported);
    if (r->routing.routes) {
        r->comm->sum_i64(r->comm, r->load_position, k * n);
        r->comm->sum_i64(r->comm, r->load_class, k * c);
    }
    if (figures) r->comm->sum_i64(r->comm, figures->counts, figures->classes * figures->classes);
    return pmoe_comm_agree(r->comm, failed, err, NULL, 0);
}

/* Test accuracy; where the model routes, per-expert load by position and by
 * class (into r->load_*); and where the task knows the deciding patch and the
 * model routes on the same patch grid, router recall: the share of samples
 * whose deciding patch is among the l picks of at least one expert (and per
 * expert). */
static pmoe_status evaluate_pass(run *r, eval_stats *st, float *logits, pmoe_error *err) {
    pmoe_model *m = r->model;
    const pmoe_dataset *ds = r->test;
    const pmoe_routing_view *rv = &r->routing;
    const int k = rv->experts, l = rv->topl;
    const int routes = rv->routes;
    const int measure_recall = routes && ds->decisive_patch &&
                               ds->decisive_patch_size == r->input_patch;
    int64_t correct_total = 0;
    recall_counts recalled;
    memset(&recalled, 0, sizeof recalled);
    m->training = 0; /* batch norm on its running statistics (the step sets it back) */
    if (routes) clear_load(r);
    /* Sharded, a rank that fails keeps taking part in the collectives until
     * the agreement at the end, where every rank learns of it; alone it
     * returns at once. */
    pmoe_status failed = PMOE_OK;
    pmoe_error ignored;
    pmoe_progress_report(st->progress, "test set", 0, ds->count);
    for (int64_t start = 0; start < ds->count; start += r->max_batch) {
        /* one process stops between batches (the caller saves and says so) */
        if (!r->sharded && r->stop && *r->stop) return PMOE_ERR_INTERRUPTED;
        int64_t count = ds->count - start < r->max_batch ? ds->count - start : r->max_batch;
        for (int64_t i = 0; i < count; i++) r->order[i] = start + i;
        shard sh;
        pmoe_status s = run_load_batch(r, ds, r->order, count, -1, &sh, failed ? &ignored : err);
        if (s && !r->sharded) return s;
        if (!failed) failed = s;
        int64_t correct = 0;
        s = count_correct(r, &sh, count, &correct, failed ? &ignored : err);
        if (s && !r->sharded) return s;
        if (!failed) failed = s;
        correct_total += correct; /* the global batch's, on every rank */
        pmoe_progress_report(st->progress, "test set", start + count, ds->count);
        if (st->figures) {
            s = count_classes(r, &sh, logits, st->figures, failed ? &ignored : err);
            if (s && !r->sharded) return s;
            if (!failed) failed = s;
        }
        if (!routes) continue;
        s = r->be->copy_out(r->be, r->host_selected, rv->selected,
                            (size_t)(sh.local * k * l) * sizeof(int32_t), failed ? &ignored : err);
        if (s && !r->sharded) return s;
        if (!failed) failed = s;
        count_load(r, ds, start, &sh);
        if (measure_recall) count_recall(r, ds, start, &sh, &recalled);
        if (st->keep) {
            s = keep_samples(r, ds, st->keep, start, count, err);
            if (s) return s;
        }
    }
    if (r->sharded) {
        failed = sum_across_ranks(r, &recalled, st->figures, failed, err);
        if (failed) return failed;
    }
    st->accuracy = (double)correct_total / (double)ds->count;
    st->recall = measure_recall ? (double)recalled.any / (double)ds->count : -1.0;
    st->measured_load = routes;
    for (int e = 0; e < k && e < PMOE_MAX_REPORTED_EXPERTS; e++)
        st->expert_recall[e] = measure_recall ? (double)recalled.by_expert[e] / (double)ds->count
                                              : -1.0;
    return PMOE_OK;
}

pmoe_status run_evaluate(run *r, eval_stats *st, pmoe_error *err) {
    float *logits = NULL; /* this rank's rows of a batch, for the confusion matrix */
    size_t logits_bytes = 0;
    if (st->figures) {
        const int classes = r->model->classes;
        logits_bytes = sizeof(float) * (size_t)(r->max_batch * classes);
        pmoe_status s = pmoe_class_figures_init(st->figures, classes, r->test->class_names, err);
        if (!s) s = run_host_alloc(r, &logits, logits_bytes, "a batch's logits", err);
        s = pmoe_comm_agree(r->comm, s, err, NULL, 0);
        if (s) {
            pmoe_backend_host_free(r->be, logits, logits_bytes);
            return s;
        }
    }
    pmoe_status s = evaluate_pass(r, st, logits, err);
    pmoe_backend_host_free(r->be, logits, logits_bytes);
    return s;
}

/* Evaluation as one timed phase: the model's own phases stay out of it. */
pmoe_status run_timed_evaluate(run *r, eval_stats *st, pmoe_error *err) {
    pmoe_timer_enter(&r->timer, PMOE_T_EVAL, (uint64_t)r->test->count);
    r->model->timer = NULL;
    pmoe_status s = run_evaluate(r, st, err);
    r->model->timer = &r->timer;
    pmoe_timer_stop(&r->timer);
    return s;
}

/* Copies an evaluation into an epoch report (load points into r). */
void run_fill_report_eval(const run *r, const eval_stats *st, pmoe_epoch_report *er) {
    er->test_acc = st->accuracy;
    er->router_recall = st->recall;
    if (st->recall >= 0.0) {
        er->experts_reported = reported_experts(r);
        memcpy(er->expert_recall, st->expert_recall, sizeof er->expert_recall);
    }
    if (st->measured_load)
        er->load = (pmoe_expert_load){r->routing.experts,
                                      r->routing.patch_count,
                                      r->load_classes,
                                      r->load_position,
                                      r->load_class,
                                      r->test->count,
                                      r->test->height / r->input_patch,
                                      r->test->width / r->input_patch};
}

pmoe_status pmoe_eval(const pmoe_config *cfg, const char *checkpoint,
                      const pmoe_eval_options *options, pmoe_eval_result *result, pmoe_error *err) {
    run r;
    memset(result, 0, sizeof *result);
    pmoe_status s = run_open_saved(&r, cfg, checkpoint, result->checkpoint,
                                   sizeof result->checkpoint, &result->step, err);
    if (!s) {
        eval_stats st = {0};
        st.figures = options && options->per_class ? &result->per_class : NULL;
        st.progress = options ? options->progress : NULL;
        result->info = r.info;
        s = run_evaluate(&r, &st, err);
        result->test_acc = st.accuracy;
        result->router_recall = st.recall;
        if (st.recall >= 0.0) {
            result->experts_reported = reported_experts(&r);
            memcpy(result->expert_recall, st.expert_recall, sizeof result->expert_recall);
        }
    }
    run_close(&r);
    if (s) pmoe_class_figures_free(&result->per_class);
    return s;
}
