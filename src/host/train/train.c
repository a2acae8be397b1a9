/* train.c: the training loop of every model family (pmoe_train in
 * train.h). The rooms beside it (run.h lists their calls): run_setup.c opens
 * and closes a run, batches.c loads one batch, evaluate.c measures the test
 * set (and is pmoe_eval), route.c is pmoe_route, saved_model.c reads a model
 * back from a checkpoint.
 *
 * A run resolves the config against the data (patch size, n, classes),
 * builds backend and model, and walks its phases: separate training first
 * runs the router phase on the linear loss, then the main phase with frozen
 * routers and G = 1. Both phases share one loop. Its position (phase, epoch,
 * next batch, step counts, the epoch's partial sums) is all a checkpoint
 * needs besides the weights, because each epoch's shuffle is a pure function
 * of (train.seed, epoch): a resumed run replays exactly.
 *
 * Expert parallelism (a distributed communicator, see comm/comm.h and
 * model/model.h): every rank opens the same data and computes the same
 * shuffle, then composes only its shard of each global batch (rank r: the
 * batch's samples [r B/R, (r+1) B/R)). A batch that does not split evenly
 * (an epoch's last, or the test set's) is padded with zero images up to a
 * multiple of R; padding carries no loss and no gradient, so every rank count
 * trains on exactly the one-process batches. The loss, its sums and the
 * correct counts are the global batch's on every rank; evaluation's recall
 * and load counts are summed over ranks exactly (integers). Ranks agree on
 * every outcome a rank can meet alone (a failed data open, a NaN in its
 * experts' gradients, a signal) at fixed points: after setup and once per
 * step (one all-reduce of three ints), so they stop together with the
 * failing rank's message; callbacks run on rank 0 only. */
#include "pmoe/train.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/rng.h"
#include "train/lr_schedule.h"
#include "train/resume.h"
#include "train/run.h"

enum { STREAM_SHUFFLE = 0x5eed, STREAM_ROUTER_SHUFFLE = 0x5eee };

_Static_assert(PMOE_T_COUNT <= PMOE_MAX_PHASES, "raise PMOE_MAX_PHASES in train.h");

int pmoe_phase_count(void) { return PMOE_T_COUNT; }
int pmoe_step_phase_count(void) { return PMOE_T_STEP_PHASES; }
const char *pmoe_phase_name(int phase) { return pmoe_timer_name((pmoe_phase_id)phase); }

/* ---- one step ---- */

/* The non-finite guard's list for a phase: the loss, then the gradient of
 * every parameter the phase updates (sharded: this rank's experts and the
 * replicated rest). */
static void list_guarded(run *r, pmoe_phase phase) {
    pmoe_model *m = r->model;
    r->guard_x[0] = m->stats;
    r->guard_n[0] = 1;
    r->guard_param[0] = -1;
    r->guard_count = 1;
    for (int i = 0; i < m->param_count; i++) {
        const int updated = phase == PMOE_PHASE_ROUTER ? i == r->routing.router_param
                                                       : pmoe_model_updates(m, i);
        if (!updated || !m->params[i].grad.data) continue;
        r->guard_x[r->guard_count] = m->params[i].grad.data;
        r->guard_n[r->guard_count] = pmoe_tensor_numel(&m->params[i].grad);
        r->guard_param[r->guard_count++] = i;
    }
}

/* ---- the loop ---- */

typedef struct phase_plan {
    pmoe_phase phase;
    int64_t size; /* samples: the first `size` of the training set */
    int64_t batch;
    int epochs;
    double lr; /* the schedule's base rate */
    uint64_t shuffle_stream;
} phase_plan;

/* Writes the model at *pos to path in the run's folder (every rank takes
 * part; rank 0 writes), only where path is absent or the run's own. */
static pmoe_status write_checkpoint(run *r, const char *path, const pmoe_train_position *pos,
                                    pmoe_error *err) {
    pmoe_status s = PMOE_OK;
    if (r->rank == 0) { /* rank 0 writes; a run with checkpoint_every = 0 claims the folder now */
        s = pmoe_checkpoint_folder_claim(&r->folder, 0, err);
        if (!s) s = pmoe_checkpoint_folder_may_write(&r->folder, path, err);
    }
    s = pmoe_comm_agree(r->comm, s, err, NULL, 0);
    if (!s) {
        const pmoe_st_meta input[2] = {{"input", r->input_meta},
                                       {"class_names", r->class_names_meta}};
        const int described = !r->describes_input ? 0 : r->class_names_meta ? 2 : 1;
        s = pmoe_checkpoint_save_with(path, r->model, r->cfg, pos, input, described, err);
    }
    return s;
}

static pmoe_status save_checkpoint(run *r, const pmoe_train_position *pos, pmoe_error *err) {
    char path[sizeof r->last_checkpoint];
    pmoe_checkpoint_path(r->folder.dir, run_global_step(pos), path, sizeof path);
    pmoe_status s = write_checkpoint(r, path, pos, err);
    if (s) {
        /* say what survives: the file named in the message was not replaced */
        char detail[sizeof err->message];
        snprintf(detail, sizeof detail, "%s", err->message);
        return pmoe_fail(err, s, "checkpoint not saved (%s); %s%s", detail,
                         r->last_checkpoint[0] ? "the last good checkpoint is "
                                               : "no earlier checkpoint was written",
                         r->last_checkpoint);
    }
    snprintf(r->last_checkpoint, sizeof r->last_checkpoint, "%s", path);
    r->saved_step = run_global_step(pos);
    if (r->rank == 0) pmoe_checkpoint_folder_prune(&r->folder, r->cfg->train.keep);
    return PMOE_OK;
}

/* Whether a stop was asked for outside a step (sharded: on any rank, and
 * every rank learns it). */
static int stop_requested(run *r) {
    int asked = r->stop && *r->stop ? -1 : 0;
    if (r->sharded) pmoe_comm_agree(r->comm, PMOE_OK, NULL, &asked, 1);
    return asked < 0;
}

/* The end of a stopped run: a checkpoint of *pos (unless the last one is
 * of this very step) and PMOE_ERR_INTERRUPTED. */
static pmoe_status stop_at(run *r, const pmoe_train_position *pos, pmoe_error *err) {
    if (r->saved_step != run_global_step(pos)) {
        pmoe_timer_enter(&r->timer, PMOE_T_CHECKPOINT, (uint64_t)run_global_step(pos));
        pmoe_status s = save_checkpoint(r, pos, err);
        pmoe_timer_stop(&r->timer);
        if (s) return s;
    }
    return pmoe_fail(err, PMOE_ERR_INTERRUPTED, "stopped after step %lld; checkpoint %s",
                     (long long)run_global_step(pos), r->last_checkpoint);
}

/* One step on the global batch of `count` samples, this rank's share `sh` of
 * it in the model, queued without reading anything back: the loss and
 * correct count go to the step ring's next row, the non-finite guard
 * (backend.h) decides the row's verdict from the loss and the gradients,
 * and the updates read the verdict, so a step with a NaN or Inf changes no
 * parameter (with on_nonfinite = stop, neither does any step after it).
 * `step` is the phase's 1-based step number the guard records. Sharded,
 * `loaded` is the batch load's outcome: a rank whose load failed still runs
 * the step's collectives, and before anyone updates the ranks agree on
 * failures, the verdict (each rank sees only its experts' gradients) and
 * stop requests, so all of them update or none does. */
static pmoe_status take_step(run *r, const phase_plan *plan, float lr, int64_t count,
                             const shard *sh, pmoe_status loaded, int64_t step, pmoe_error *err) {
    pmoe_model *m = r->model;
    pmoe_backend *be = r->be;
    const pmoe_train_config *t = &r->cfg->train;
    pmoe_error ignored; /* a rank's later failures, once it has one */
    pmoe_status s = loaded, next;
    int32_t *verdict = step_ring_verdict(&r->ring);
    if (plan->phase == PMOE_PHASE_ROUTER) {
        double loss = 0.0; /* the family reads it back; the ring keeps it */
        next = run_set_router_targets(r, count, s ? &ignored : err);
        if (!s) s = next;
        if (!s || r->sharded) {
            next = pmoe_model_router_loss(m, sh->local, &loss, s ? &ignored : err);
            if (!s) s = next;
        }
    } else {
        m->training = 1;
        pmoe_model_forward_valid(m, sh->local, count);
        pmoe_model_loss_queued(m, 1);
    }
    if (!s) {
        /* stats[1], the correct count, is the main phase's only */
        be->ops->axpby(be, plan->phase == PMOE_PHASE_MAIN ? 2 : 1, 1.0f, m->stats, 0.0f,
                       step_ring_stats(&r->ring));
        pmoe_timer_enter(&r->timer, PMOE_T_GUARD, 0);
        be->ops->nonfinite_guard(be, r->guard_count, r->guard_x, r->guard_n, step,
                                 t->on_nonfinite == PMOE_NONFINITE_STOP, r->ring.guard, verdict);
    }
    if (r->sharded) {
        int32_t mine = 0;
        if (!s) s = be->copy_out(be, &mine, verdict, sizeof mine, err);
        int agreed[2] = {mine ? mine : INT_MAX, r->stop && *r->stop ? -1 : 0};
        s = pmoe_comm_agree(r->comm, s, err, agreed, 2);
        r->stop_agreed = agreed[1] < 0;
        const int32_t all = agreed[0] == INT_MAX ? 0 : agreed[0];
        if (!s && all != mine) s = be->copy_in(be, verdict, &all, sizeof all, err);
    }
    if (s) return s;
    pmoe_timer_enter(&r->timer, PMOE_T_OPTIMIZER, 0);
    if (plan->phase == PMOE_PHASE_ROUTER) {
        pmoe_param *router = &m->params[r->routing.router_param];
        be->ops->sgd_update(be, pmoe_tensor_numel(&router->value), router->value.data,
                            router->grad.data, router->velocity.data, lr, (float)t->momentum,
                            (float)t->weight_decay, verdict);
    } else {
        pmoe_model_sgd_guarded(m, lr, (float)t->momentum, (float)t->weight_decay, verdict);
    }
    return PMOE_OK;
}

static pmoe_status report_epoch(run *r, const phase_plan *plan, const pmoe_train_position *pos,
                                pmoe_epoch_report *er, double epoch_began, pmoe_error *err) {
    er->phase = plan->phase;
    er->epoch = pos->epoch;
    er->epochs = plan->epochs;
    er->step = pos->step;
    er->train_loss = pos->loss_sum / (double)plan->size;
    er->train_acc = plan->phase == PMOE_PHASE_MAIN ? (double)pos->correct_sum / (double)plan->size
                                                   : -1.0;
    memcpy(er->phase_seconds, r->timer.seconds, sizeof r->timer.seconds);
    er->step_seconds = r->step_seconds;
    er->seconds = pmoe_now_seconds() - epoch_began;
    er->elapsed = pmoe_now_seconds() - r->started;
    er->skipped_steps = pos->skipped;
    return r->cb && r->cb->on_epoch ? r->cb->on_epoch(r->cb->user, er, err) : PMOE_OK;
}

/* train.profile_steps: the device profiler's capture starts before step A
 * and stops after step B; each edge is also a zero-length NVTX range
 * ("profile_start" / "profile_stop", payload the step), so that any NVTX
 * tool (and the CPU, which has no profiler) sees where the window lies. */
static void profile_edge(run *r, int start, int64_t step) {
    if (!start && r->be->profiler) r->be->profiler(r->be, 0);
    pmoe_trace_push(start ? "profile_start" : "profile_stop", (uint64_t)step);
    pmoe_trace_pop();
    if (start && r->be->profiler) r->be->profiler(r->be, 1);
}

/* The epoch's order of the phase's samples: a pure function of (train.seed,
 * epoch), so a resumed run replays the same batches. */
static void shuffle_epoch(run *r, const phase_plan *plan, int epoch) {
    for (int64_t i = 0; i < plan->size; i++) r->order[i] = i;
    pmoe_rng rng = pmoe_rng_make(r->cfg->train.seed, plan->shuffle_stream + (uint64_t)epoch * 2);
    pmoe_rng_shuffle(&rng, r->order, plan->size);
}

/* One batch of the phase, samples order[start, start + count), from its load
 * to its queued update: timed and traced as step run_global_step(pos) + 1,
 * with the profiler's window opened before it or closed after it where
 * train.profile_steps says. With the input feed, the next batch of the epoch
 * starts composing once this step is queued. */
static pmoe_status timed_step(run *r, const phase_plan *plan, const pmoe_lr_schedule *schedule,
                              const pmoe_train_position *pos, int64_t start, int64_t count,
                              int64_t batches, pmoe_error *err) {
    const pmoe_config *cfg = r->cfg;
    const int64_t this_step = run_global_step(pos) + 1;
    if (this_step == r->profile_first) profile_edge(r, 1, this_step);
    const double step_began = pmoe_now_seconds();
    pmoe_trace_push("step", (uint64_t)this_step);
    pmoe_timer_enter(&r->timer, PMOE_T_DATA, (uint64_t)count);
    shard sh;
    /* augmentation passes: the main phase's epochs, the router phase's above them */
    const int64_t pass = pos->epoch + (plan->phase == PMOE_PHASE_ROUTER ? (1LL << 32) : 0);
    pmoe_status s = run_load_batch(r, r->train, r->order + start, count, pass, &sh, err);
    if (!s && plan->phase == PMOE_PHASE_MAIN && pos->step + 1 == cfg->train.fault_nan_step)
        s = run_poison_batch(r, err);
    if (!s || r->sharded)
        s = take_step(r, plan, (float)pmoe_lr_at(schedule, pos->step), count, &sh, s, pos->step + 1,
                      err);
    if (!s && pos->next_batch + 1 < batches) {
        const int64_t next = start + plan->batch, left = plan->size - next;
        s = run_prefetch_batch(r, r->train, r->order + next,
                               left < plan->batch ? left : plan->batch, pass, err);
    }
    pmoe_timer_stop(&r->timer);
    pmoe_trace_pop();
    r->step_seconds += pmoe_now_seconds() - step_began;
    if (this_step == r->profile_last) profile_edge(r, 0, this_step);
    return s;
}

/* train.on_nonfinite = stop at the first bad step a read found: its number
 * and epoch, what the guard found first (the loss or a parameter's
 * gradient), and which checkpoint survives. Nothing from that step on was
 * applied. */
static pmoe_status nonfinite_stop(const run *r, const phase_plan *plan, const step_meta *at,
                                  int32_t verdict, pmoe_error *err) {
    const int listed = verdict - 1; /* 0: the loss */
    const int loss = listed <= 0 || listed >= r->guard_count;
    return pmoe_fail(err, PMOE_ERR_NONFINITE,
                     "non-finite value (NaN or Inf) in %s%s at step %lld (%s phase, "
                     "epoch %d): the batch or the weights hold NaN or Inf (if the "
                     "weights diverged, lower the learning rate); %s%s",
                     loss ? "" : "the gradient of ",
                     loss ? "the loss" : r->model->params[r->guard_param[listed]].name,
                     (long long)at->step, plan->phase == PMOE_PHASE_ROUTER ? "router" : "main",
                     at->epoch,
                     r->last_checkpoint[0] ? "the last good checkpoint is "
                                           : "no checkpoint was written before it",
                     r->last_checkpoint);
}

/* Reads the ring's pending steps (one wait for the backend) and accounts
 * for them in order, as a read after every step would have: the loss and
 * correct sums, the skipped steps, the on_step callbacks (rank 0 only:
 * other ranks have none); with on_nonfinite = stop, the first bad step ends
 * the run. */
static pmoe_status read_steps(run *r, const phase_plan *plan, pmoe_train_position *pos,
                              int64_t batches, int64_t first_step, pmoe_error *err) {
    step_ring *ring = &r->ring;
    if (!ring->pending) return PMOE_OK;
    const double began = pmoe_now_seconds(); /* the wait for the device joins the steps' time */
    pmoe_status s = step_ring_read(ring, err);
    r->step_seconds += pmoe_now_seconds() - began;
    for (int i = 0; i < ring->pending && !s; i++) {
        const step_meta *at = &ring->meta[i];
        const double loss = ring->host_stats[2 * i];
        const int32_t verdict = ring->host_verdicts[i];
        if (verdict && r->cfg->train.on_nonfinite == PMOE_NONFINITE_STOP) {
            s = nonfinite_stop(r, plan, at, verdict, err);
            break;
        }
        if (verdict) {
            pos->skipped++;
        } else {
            pos->loss_sum += loss * (double)at->count;
            if (plan->phase == PMOE_PHASE_MAIN)
                pos->correct_sum += (int64_t)ring->host_stats[2 * i + 1];
        }
        if (r->cb && r->cb->on_step) {
            pmoe_step_report sr = {
                plan->phase,     at->epoch, plan->epochs, at->step,
                at->batch_index, batches,   loss,         (at->step - first_step) * plan->batch,
                at->elapsed};
            r->cb->on_step(r->cb->user, &sr);
        }
    }
    step_ring_clear(ring);
    return s;
}

/* A queued step joins the ring and *pos moves past its update; the host
 * reads the ring every train.sync_every steps, and before anything that
 * reports or keeps the steps: the epoch's end, a checkpoint, a stop.
 * *stopping: whether the run stops after this step (asked for before the
 * read, or by a step callback during it), with the ring read. */
static pmoe_status queue_step(run *r, const phase_plan *plan, pmoe_train_position *pos,
                              int64_t count, int64_t batches, int64_t sync_every,
                              int64_t first_step, double began, int *stopping, pmoe_error *err) {
    const step_meta queued = {pos->epoch, pos->step + 1, pos->next_batch + 1, count,
                              pmoe_now_seconds() - began};
    step_ring_push(&r->ring, &queued);
    pos->step++;
    *stopping = r->sharded ? r->stop_agreed : r->stop && *r->stop;
    const int64_t every = r->cfg->train.checkpoint_every;
    const int saving = every > 0 && run_global_step(pos) % every == 0;
    if (!*stopping && !saving && pos->next_batch + 1 < batches && r->ring.pending < sync_every &&
        !step_ring_full(&r->ring))
        return PMOE_OK;
    pmoe_status s = read_steps(r, plan, pos, batches, first_step, err);
    if (!r->sharded) *stopping = *stopping || (r->stop && *r->stop);
    return s;
}

/* After a step, with *pos still on its batch: a stop asked for during it
 * (queue_step says) ends the run here (*pos moved past the batch, saved, and
 * PMOE_ERR_INTERRUPTED); else a checkpoint every train.checkpoint_every
 * steps. */
static pmoe_status checkpoint_or_stop(run *r, pmoe_train_position *pos, int stopping,
                                      pmoe_error *err) {
    pmoe_train_position after = *pos;
    after.next_batch++;
    const int64_t every = r->cfg->train.checkpoint_every;
    if (stopping) {
        *pos = after;
        return stop_at(r, pos, err);
    }
    if (every > 0 && run_global_step(&after) % every == 0) {
        pmoe_timer_enter(&r->timer, PMOE_T_CHECKPOINT, (uint64_t)run_global_step(&after));
        pmoe_status s = save_checkpoint(r, &after, err);
        pmoe_timer_stop(&r->timer);
        if (s) return s;
    }
    return PMOE_OK;
}

/* train.keep_best: an evaluation better than the best so far (the first of
 * equal ones stays) becomes the position's best and best.safetensors, the
 * finished epoch's checkpoint. Every rank decides alike (the accuracy is
 * the global one) and takes part in the save. */
static pmoe_status keep_if_best(run *r, pmoe_train_position *pos, double accuracy,
                                pmoe_error *err) {
    if (!r->cfg->train.keep_best || (pos->best_epoch > 0 && !(accuracy > pos->best_acc)))
        return PMOE_OK;
    pos->best_epoch = pos->epoch;
    pos->best_acc = accuracy;
    char path[sizeof r->last_checkpoint];
    pmoe_checkpoint_best_path(r->folder.dir, path, sizeof path);
    pmoe_timer_enter(&r->timer, PMOE_T_CHECKPOINT, (uint64_t)run_global_step(pos));
    pmoe_status s = write_checkpoint(r, path, pos, err);
    pmoe_timer_stop(&r->timer);
    if (!s) return PMOE_OK;
    char detail[sizeof err->message];
    snprintf(detail, sizeof detail, "%s", err->message);
    return pmoe_fail(err, s, "the best checkpoint (train.keep_best) not saved: %s", detail);
}

/* The end of an epoch: the main phase evaluates every train.eval_every
 * epochs and at its last (where it also counts the per-class figures asked
 * for), keeps the best (train.keep_best), the on_epoch callback reports, a
 * stop asked for meanwhile ends the run, and the epoch's times join *res. */
static pmoe_status end_epoch(run *r, const phase_plan *plan, pmoe_train_position *pos,
                             const pmoe_lr_schedule *schedule, int64_t batches, double epoch_began,
                             pmoe_train_result *res, pmoe_error *err) {
    const pmoe_config *cfg = r->cfg;
    pmoe_epoch_report er;
    memset(&er, 0, sizeof er);
    er.test_acc = er.router_recall = -1.0;
    er.exchange_bytes = r->model->exchange_bytes; /* the steps' (evaluation's not counted) */
    er.lr = pmoe_lr_at(schedule, (int64_t)(pos->epoch - 1) * batches);
    if (plan->phase == PMOE_PHASE_MAIN &&
        (pos->epoch == plan->epochs || pos->epoch % cfg->train.eval_every == 0)) {
        eval_stats st = {0};
        if (r->per_class && pos->epoch == plan->epochs) st.figures = &res->per_class;
        pmoe_status s = run_timed_evaluate(r, &st, err);
        if (s == PMOE_ERR_INTERRUPTED) return stop_at(r, pos, err); /* its epoch redone */
        if (!s) s = keep_if_best(r, pos, st.accuracy, err);
        if (s) return s;
        run_fill_report_eval(r, &st, &er);
        res->test_acc = er.test_acc;
        res->router_recall = er.router_recall;
    }
    pmoe_status reported = report_epoch(r, plan, pos, &er, epoch_began, err);
    if (reported) return reported;
    /* a signal during the evaluation (sharded: the ranks finish it together) */
    if (stop_requested(r)) return stop_at(r, pos, err);
    for (int i = 0; i < PMOE_T_COUNT; i++) res->phase_seconds[i] += r->timer.seconds[i];
    res->step_seconds += r->step_seconds;
    pmoe_timer_reset(&r->timer);
    r->step_seconds = 0.0;
    r->model->exchange_bytes = 0;
    if (plan->phase == PMOE_PHASE_MAIN) {
        res->train_loss = er.train_loss;
        res->train_acc = er.train_acc;
    }
    return PMOE_OK;
}

/* Runs a phase from *pos to its end, updating *pos as it goes. */
static pmoe_status run_phase(run *r, const phase_plan *plan, pmoe_train_position *pos,
                             pmoe_train_result *res, pmoe_error *err) {
    const pmoe_config *cfg = r->cfg;
    const int64_t batches = (plan->size + plan->batch - 1) / plan->batch;
    const double began = pmoe_now_seconds();
    const int64_t first_step = pos->step;
    const pmoe_lr_schedule schedule =
        pmoe_lr_schedule_make(&cfg->train, plan->lr, plan->epochs, batches);
    const int64_t sync_every = run_sync_interval(r, batches);
    r->model->exchange_bytes = 0;
    list_guarded(r, plan->phase);
    for (; pos->epoch <= plan->epochs;
         pos->epoch++, pos->next_batch = 0, pos->loss_sum = 0, pos->correct_sum = 0) {
        const double epoch_began = pmoe_now_seconds();
        shuffle_epoch(r, plan, pos->epoch);
        for (; pos->next_batch < batches; pos->next_batch++) {
            const int64_t start = pos->next_batch * plan->batch;
            const int64_t count = plan->size - start < plan->batch ? plan->size - start
                                                                   : plan->batch;
            int stopping = 0;
            pmoe_status s = timed_step(r, plan, &schedule, pos, start, count, batches, err);
            if (!s)
                s = queue_step(r, plan, pos, count, batches, sync_every, first_step, began,
                               &stopping, err);
            if (!s) s = checkpoint_or_stop(r, pos, stopping, err);
            if (s) return s;
        }
        pmoe_status s = end_epoch(r, plan, pos, &schedule, batches, epoch_began, res, err);
        if (s) return s;
    }
    return PMOE_OK;
}

static pmoe_status train_phases(run *r, pmoe_train_position *pos, pmoe_train_result *res,
                                pmoe_error *err) {
    const pmoe_train_config *t = &r->cfg->train;
    pmoe_status s = PMOE_OK;
    if (r->info.router_epochs > 0 && pos->phase == PMOE_PHASE_ROUTER) {
        const int64_t size = t->router_size > 0 && t->router_size < r->train->count
                                 ? t->router_size
                                 : r->train->count;
        const phase_plan plan = {PMOE_PHASE_ROUTER, size,         t->router_batch,
                                 t->router_epochs,  t->router_lr, STREAM_ROUTER_SHUFFLE};
        s = run_phase(r, &plan, pos, res, err);
        if (s) return s;
        const pmoe_train_position main_start = {
            PMOE_PHASE_MAIN, 1, 0, 0, pos->step, pos->skipped, 0, 0, "", 0, 0.0};
        const pmoe_train_position done = *pos;
        *pos = main_start;
        memcpy(pos->run_id, done.run_id, sizeof pos->run_id);
    }
    pos->phase = PMOE_PHASE_MAIN;
    if (r->info.router_epochs > 0) /* frozen */
        r->model->params[r->routing.router_param].trainable = 0;
    res->router_steps = pos->router_steps;
    const phase_plan plan = {PMOE_PHASE_MAIN, r->train->count, t->batch,
                             t->epochs,       t->lr,           STREAM_SHUFFLE};
    s = run_phase(r, &plan, pos, res, err);
    res->steps = pos->step;
    res->skipped_steps = pos->skipped;
    if (!s && t->epochs == 0) { /* still report the untrained model's accuracy */
        eval_stats st = {0};
        if (r->per_class) st.figures = &res->per_class;
        s = run_evaluate(r, &st, err);
        if (s == PMOE_ERR_INTERRUPTED) return stop_at(r, pos, err);
        res->test_acc = st.accuracy;
        res->router_recall = st.recall;
    }
    if (!s && t->checkpoint_every > 0 && run_global_step(pos) % t->checkpoint_every != 0)
        s = save_checkpoint(r, pos, err); /* the final state, when the last step left none */
    if (!s && stop_requested(r)) return stop_at(r, pos, err); /* during the last save */
    return s;
}

/* Restores the model and *pos from a checkpoint (every rank reads the file
 * and takes its own experts), once the position passes resume.h's rules. */
static pmoe_status resume_from(run *r, const char *resume, pmoe_train_position *pos,
                               pmoe_error *err) {
    pmoe_st_file file;
    pmoe_status s = pmoe_checkpoint_open(resume, &file, err);
    if (!s) {
        s = pmoe_resume_check_config(&file, r->cfg, err);
        if (!s) s = pmoe_checkpoint_restore(&file, r->model, pos, err);
        if (!s) s = pmoe_resume_check(&file, r->cfg, r->train->count, r->routing.routes, pos, err);
        if (!s) snprintf(r->last_checkpoint, sizeof r->last_checkpoint, "%s", file.origin);
        if (!s) r->saved_step = run_global_step(pos); /* a stop before the next step: saved */
        if (!s) run_adopt_saved_input(r, &file);
        pmoe_safetensors_free(&file);
    }
    return pmoe_comm_agree(r->comm, s, err, NULL, 0);
}

/* The run's identity (a resume keeps its checkpoint's) and its checkpoint
 * folder: a run that saves every N steps takes the folder before its first
 * step, so a second writer or another run's files stop it before anything
 * changes; one that saves only when stopped by a signal takes it then, and
 * fails only when that one name is another's. A run that keeps its best
 * (train.keep_best) writes from its first evaluation on, so it takes the
 * folder at once too, and refuses one whose best.safetensors is another's. */
static pmoe_status start_folder(run *r, pmoe_train_position *pos, pmoe_error *err) {
    if (!pos->run_id[0]) pmoe_run_id_new(pos->run_id);
    pmoe_checkpoint_folder_init(&r->folder, r->cfg->train.checkpoint_dir, pos->run_id,
                                r->last_checkpoint[0] ? r->last_checkpoint : NULL);
    pmoe_status s = PMOE_OK;
    const pmoe_train_config *t = &r->cfg->train;
    if (r->rank == 0 && (t->checkpoint_every > 0 || t->keep_best))
        s = pmoe_checkpoint_folder_claim(&r->folder, t->checkpoint_every > 0, err);
    if (!s && r->rank == 0 && t->keep_best) s = pmoe_checkpoint_folder_check_best(&r->folder, err);
    return pmoe_comm_agree(r->comm, s, err, NULL, 0);
}

pmoe_status pmoe_train(const pmoe_config *cfg, const pmoe_train_callbacks *callbacks,
                       const pmoe_train_options *options, pmoe_train_result *result,
                       pmoe_error *err) {
    run r;
    memset(&r, 0, sizeof r);
    r.cfg = cfg;
    r.cb = callbacks;
    r.stop = options ? options->stop : NULL;
    r.per_class = options ? options->per_class : 0;
    /* A copy: the caller may pass a path that lives in *result. */
    char resume[sizeof result->last_checkpoint] = "";
    if (options && options->resume) snprintf(resume, sizeof resume, "%s", options->resume);
    memset(result, 0, sizeof *result);
    result->test_acc = result->router_recall = -1.0;
    pmoe_train_position pos = {PMOE_PHASE_ROUTER, 1, 0, 0, 0, 0, 0.0, 0, "", 0, 0.0};
    r.saved_step = -1;
    pmoe_status s = run_open(&r, err);
    result->info.rank = r.rank;
    result->info.ranks = r.ranks > 0 ? r.ranks : 1;
    if (r.rank != 0) r.cb = NULL; /* rank 0 reports for the job */
    if (!s && resume[0]) s = resume_from(&r, resume, &pos, err);
    if (!s) s = start_folder(&r, &pos, err);
    if (!s) {
        result->info = r.info;
        if (r.cb && r.cb->on_start) r.cb->on_start(r.cb->user, &r.info);
        s = train_phases(&r, &pos, result, err);
    }
    if (!s) s = pmoe_comm_agree(r.comm, r.be->synchronize(r.be, err), err, NULL, 0);
    result->steps = pos.phase == PMOE_PHASE_MAIN ? pos.step : 0;
    result->router_steps = pos.phase == PMOE_PHASE_MAIN ? pos.router_steps : pos.step;
    result->skipped_steps = pos.skipped;
    result->seconds = pmoe_now_seconds() - r.started;
    if (r.be) result->peak_bytes = r.be->mem.peak_bytes;
    snprintf(result->last_checkpoint, sizeof result->last_checkpoint, "%s", r.last_checkpoint);
    if (cfg->train.keep_best && pos.best_epoch > 0) { /* written by this process or a resumed one */
        pmoe_checkpoint_best_path(r.folder.dir, result->best_checkpoint,
                                  sizeof result->best_checkpoint);
        result->best_epoch = pos.best_epoch;
        result->best_test_acc = pos.best_acc;
    }
    if (s) pmoe_class_figures_free(&result->per_class);
    pmoe_checkpoint_folder_release(&r.folder);
    run_close(&r);
    return s;
}
