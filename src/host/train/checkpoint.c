/* checkpoint.c: see checkpoint.h.
 *
 * Expert parallelism: a checkpoint is one file whatever the rank count. To
 * save, every rank copies its experts out and rank 0 gathers them from its
 * expert-parallel group (by global expert id: member p of a group of E holds
 * experts p k/E ..., so the gathered tensor is in global order; the other
 * groups hold the same values) and writes the file alone; every rank then
 * learns whether the write worked. To restore, every rank reads the file
 * and takes the replicated tensors and its own experts' slices, so a file
 * saved by any layout loads into any other that fits. */
#include "train/checkpoint.h"

#include "core/files.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define FORMAT PMOE_CHECKPOINT_FORMAT

/* One saved tensor: a whole parameter, or one expert's slice of it. */
typedef struct slice {
    char name[PMOE_ST_MAX_NAME];
    const pmoe_param *param;
    const pmoe_tensor *tensor; /* value or velocity */
    int64_t offset, count;     /* elements within the tensor */
    int64_t file_offset;       /* elements within the file's tensor (restoring a rank's share) */
    int ndim;
    int64_t shape[PMOE_ST_MAX_DIMS];
} slice;

/* Values and velocities, each whole or split into one slice per expert. */
static size_t max_slices(const pmoe_model *m) {
    return (size_t)(2 * m->param_count * (pmoe_model_routing(m).experts + 1));
}

/* Lists what a model saves, in a fixed order. Returns the count. With
 * whole != 0 a sharded tensor is listed with every rank's experts (what rank
 * 0 gathers and writes; offsets then index the gathered copy), else with
 * this rank's (what it restores), named by global expert id either way. */
static int list_slices(const pmoe_model *m, slice *out, int with_velocity, int whole) {
    int n = 0;
    for (int kind = 0; kind < (with_velocity ? 2 : 1); kind++)
        for (int i = 0; i < m->param_count; i++) {
            const pmoe_param *p = &m->params[i];
            const pmoe_tensor *t = kind ? &p->velocity : &p->value;
            if (!t->data) continue;
            const char *prefix = kind ? "optimizer.velocity." : "";
            const int64_t total = pmoe_tensor_numel(t);
            /* sharded without per-expert names (the deep pMoE layer's tensors):
             * saved whole, k x ..., as one process saves them; a rank
             * restores its experts' rows of it */
            const int stacked = p->sharded && !p->field;
            const int local_parts = p->field ? (int)t->shape[0] : 1;
            const int parts = local_parts * (whole && p->sharded && !stacked ? m->expert_ranks : 1);
            const int first = !whole && p->sharded ? m->expert_base : 0;
            for (int s = 0; s < parts; s++) {
                slice *sl = &out[n++];
                sl->param = p;
                sl->tensor = t;
                sl->count = total / local_parts;
                sl->offset = s * sl->count;
                sl->file_offset = 0;
                if (stacked && whole) sl->count = total * m->expert_ranks;
                if (stacked && !whole) sl->file_offset = first * (total / t->shape[0]);
                if (p->field) {
                    snprintf(sl->name, sizeof sl->name, "%sexperts.%d.%s", prefix, first + s,
                             p->field);
                    sl->ndim = t->ndim - 1;
                    memcpy(sl->shape, t->shape + 1, sizeof(int64_t) * (size_t)sl->ndim);
                } else {
                    snprintf(sl->name, sizeof sl->name, "%s%s", prefix, p->name);
                    sl->ndim = t->ndim;
                    memcpy(sl->shape, t->shape, sizeof(int64_t) * (size_t)sl->ndim);
                    if (stacked) sl->shape[0] *= m->expert_ranks;
                }
            }
        }
    return n;
}

/* Every rank's outcome, on every rank (alone: its own). */
static pmoe_status agree(const pmoe_model *m, pmoe_status mine, pmoe_error *err) {
    return m->comm ? pmoe_comm_agree(m->comm, mine, err, NULL, 0) : mine;
}

/* Copies the tensors into host (rank 0's; NULL elsewhere) in list_slices
 * order, gathering the sharded ones from every rank. Collective. */
static pmoe_status gather_tensors(const pmoe_model *m, float *host, float *local, pmoe_error *err) {
    pmoe_status s = PMOE_OK;
    int64_t at = 0;
    const int first_group = m->rank < m->expert_ranks;
    for (int kind = 0; kind < 2; kind++)
        for (int i = 0; i < m->param_count; i++) {
            const pmoe_param *p = &m->params[i];
            const pmoe_tensor *t = kind ? &p->velocity : &p->value;
            if (!t->data) continue;
            const int64_t count = pmoe_tensor_numel(t);
            const size_t bytes = (size_t)count * sizeof(float);
            if (p->sharded) { /* a failed copy still takes part in the gather */
                pmoe_status c = m->be->copy_out(m->be, local, t->data, bytes, err);
                if (!s) s = c;
                if (first_group) /* rank 0's group holds every expert once */
                    m->expert_comm->host_gather(m->expert_comm, local, host ? host + at : NULL,
                                                bytes, 0);
                at += count * m->expert_ranks;
            } else {
                if (host && !s) s = m->be->copy_out(m->be, host + at, t->data, bytes, err);
                at += count;
            }
        }
    return s;
}

static pmoe_status write_file(const char *path, const pmoe_config *cfg,
                              const pmoe_train_position *pos, const slice *slices,
                              pmoe_st_entry *entries, int n, float *host, char *config,
                              int config_len, const pmoe_st_meta *extra, int extra_count,
                              pmoe_error *err);

pmoe_status pmoe_checkpoint_save(const char *path, const pmoe_model *m, const pmoe_config *cfg,
                                 const pmoe_train_position *pos, pmoe_error *err) {
    return pmoe_checkpoint_save_with(path, m, cfg, pos, NULL, 0, err);
}

pmoe_status pmoe_checkpoint_save_with(const char *path, const pmoe_model *m, const pmoe_config *cfg,
                                      const pmoe_train_position *pos, const pmoe_st_meta *extra,
                                      int extra_count, pmoe_error *err) {
    const int writer = !m->comm || m->comm->rank == 0;
    slice *slices = calloc(max_slices(m), sizeof *slices);
    pmoe_st_entry *entries = calloc(max_slices(m), sizeof *entries);
    int n = slices && entries ? list_slices(m, slices, 1, 1) : 0;
    int64_t total = 0, largest_shard = 0;
    for (int i = 0; i < n; i++) total += slices[i].count;
    for (int i = 0; i < m->param_count; i++)
        if (m->params[i].sharded && pmoe_tensor_numel(&m->params[i].value) > largest_shard)
            largest_shard = pmoe_tensor_numel(&m->params[i].value);
    float *host = writer ? malloc((size_t)(total ? total : 1) * sizeof(float)) : NULL;
    float *local = largest_shard ? malloc((size_t)largest_shard * sizeof(float)) : NULL;
    int config_len = pmoe_config_to_ini(cfg, NULL, 0) + 1;
    char *config = malloc((size_t)config_len);
    pmoe_status s = PMOE_OK;
    if (!slices || !entries || (writer && !host) || (largest_shard && !local) || !config)
        s = pmoe_fail(err, PMOE_ERR_OOM, "checkpoint: cannot allocate %lld bytes for %s",
                      (long long)total * 4, path);
    s = agree(m, s, err); /* the gathers below need every rank's buffers */
    if (!s) s = agree(m, gather_tensors(m, host, local, err), err);
    if (!s) {
        pmoe_status written = PMOE_OK;
        if (writer)
            written = write_file(path, cfg, pos, slices, entries, n, host, config, config_len,
                                 extra, extra_count, err);
        s = agree(m, written, err); /* everyone learns whether rank 0's write worked */
    }
    free(slices);
    free(entries);
    free(host);
    free(local);
    free(config);
    return s;
}

/* The index of the first NaN or Inf in data, or -1. */
static int64_t first_nonfinite(const float *data, int64_t count) {
    for (int64_t i = 0; i < count; i++)
        if (!isfinite(data[i])) return i;
    return -1;
}

/* Rank 0 (or the one process): the file, from the gathered host copy. */
static pmoe_status write_file(const char *path, const pmoe_config *cfg,
                              const pmoe_train_position *pos, const slice *slices,
                              pmoe_st_entry *entries, int n, float *host, char *config,
                              int config_len, const pmoe_st_meta *extra, int extra_count,
                              pmoe_error *err) {
    int64_t at = 0;
    for (int i = 0; i < n; i++) {
        const slice *sl = &slices[i];
        entries[i].name = sl->name;
        entries[i].ndim = sl->ndim;
        memcpy(entries[i].shape, sl->shape, sizeof sl->shape);
        entries[i].data = host + at;
        const int64_t bad = first_nonfinite(host + at, sl->count);
        if (bad >= 0) /* a damaged model must never become "the last good checkpoint" */
            return pmoe_fail(err, PMOE_ERR_NONFINITE,
                             "%s: tensor '%s' holds NaN or Inf at element %lld; nothing was "
                             "written",
                             path, sl->name, (long long)bad);
        at += sl->count;
    }
    pmoe_config_to_ini(cfg, config, config_len);
    char phase[8], epoch[24], next[24], step[24], router[24], skipped[24], loss[40], correct[24];
    snprintf(phase, sizeof phase, "%s", pos->phase == PMOE_PHASE_ROUTER ? "router" : "main");
    snprintf(epoch, sizeof epoch, "%d", pos->epoch);
    snprintf(next, sizeof next, "%" PRId64, pos->next_batch);
    snprintf(step, sizeof step, "%" PRId64, pos->step);
    snprintf(router, sizeof router, "%" PRId64, pos->router_steps);
    snprintf(skipped, sizeof skipped, "%" PRId64, pos->skipped);
    snprintf(loss, sizeof loss, "%.17g", pos->loss_sum);
    snprintf(correct, sizeof correct, "%" PRId64, pos->correct_sum);
    enum { ROOM = 32 }; /* the run's own entries, then the extra ones */
    pmoe_st_meta meta[ROOM] = {
        {"format", FORMAT},
        {"config", config},
        {"phase", phase},
        {"epoch", epoch},
        {"next_batch", next},
        {"step", step},
        {"router_steps", router},
        {"skipped_steps", skipped},
        {"epoch_loss_sum", loss},
        {"epoch_correct_sum", correct},
        {"rng", "counter-based: the shuffle of an epoch is a function of (train.seed, epoch)"},
        {"run_id", pos->run_id}, /* last: left out when the run has none */
    };
    int own = 0;
    while (own < ROOM && meta[own].key) own++;
    if (!pos->run_id[0]) own--;        /* run_id, the last, is left out when the run has none */
    char best_epoch[24], best_acc[40]; /* train.keep_best: the best evaluation so far */
    if (pos->best_epoch > 0) {
        snprintf(best_epoch, sizeof best_epoch, "%d", pos->best_epoch);
        snprintf(best_acc, sizeof best_acc, "%.17g", pos->best_acc);
        meta[own++] = (pmoe_st_meta){"best_epoch", best_epoch};
        meta[own++] = (pmoe_st_meta){"best_test_acc", best_acc};
    }
    if (extra_count < 0 || own + extra_count > ROOM)
        return pmoe_fail(err, PMOE_ERR_INTERNAL,
                         "checkpoint: %d extra metadata entries (room for %d)", extra_count,
                         ROOM - own);
    for (int i = 0; i < extra_count; i++) meta[own + i] = extra[i];
    return pmoe_safetensors_write(path, entries, n, meta, own + extra_count, err);
}

void pmoe_checkpoint_best_path(const char *dir, char *out, size_t out_size) {
    snprintf(out, out_size, "%s/%s", dir, PMOE_CHECKPOINT_BEST);
}

void pmoe_checkpoint_path(const char *dir, int64_t global_step, char *out, size_t out_size) {
    snprintf(out, out_size, "%s%sstep-%09" PRId64 ".safetensors", dir ? dir : "", dir ? "/" : "",
             global_step);
}

pmoe_status pmoe_checkpoint_open(const char *path, pmoe_st_file *file, pmoe_error *err) {
    char chosen[4096];
    struct stat st;
    snprintf(chosen, sizeof chosen, "%s", path);
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        pmoe_status s = pmoe_checkpoint_newest(path, chosen, sizeof chosen, err);
        if (s) return s;
    }
    pmoe_status s = pmoe_safetensors_read(chosen, file, err);
    if (s) return s;
    const char *format = pmoe_safetensors_meta(file, "format");
    if (!format || strcmp(format, FORMAT) != 0) {
        pmoe_safetensors_free(file);
        return pmoe_fail(err, PMOE_ERR_FORMAT,
                         "%s: not a pmoe checkpoint (metadata 'format' is %s, expected %s)", chosen,
                         format ? format : "missing", FORMAT);
    }
    return PMOE_OK;
}

static void shape_text(int ndim, const int64_t *shape, char *out, size_t size) {
    size_t used = (size_t)snprintf(out, size, "[");
    for (int i = 0; i < ndim && used < size; i++)
        used +=
            (size_t)snprintf(out + used, size - used, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (used < size) snprintf(out + used, size - used, "]");
}

pmoe_status pmoe_checkpoint_restore(const pmoe_st_file *file, pmoe_model *m,
                                    pmoe_train_position *pos, pmoe_error *err) {
    slice *slices = calloc(max_slices(m), sizeof *slices);
    if (!slices) return pmoe_fail(err, PMOE_ERR_OOM, "checkpoint: out of memory");
    const int n = list_slices(m, slices, 1, 0);
    pmoe_status s = PMOE_OK;
    for (int i = 0; !s && i < n; i++) {
        const slice *sl = &slices[i];
        const int is_velocity = sl->tensor == &sl->param->velocity;
        const pmoe_st_tensor *t = pmoe_safetensors_find(file, sl->name);
        float *dst = sl->tensor->data + sl->offset;
        if (!t && is_velocity) { /* saved without momentum: start from rest */
            m->be->fill(m->be, dst, 0.0f, sl->count);
            continue;
        }
        if (!t) {
            s = pmoe_fail(err, PMOE_ERR_FORMAT, "%s: no tensor '%s' (the model has %d experts)",
                          file->origin, sl->name, pmoe_model_routing(m).experts);
            break;
        }
        int same = t->ndim == sl->ndim;
        for (int d = 0; same && d < sl->ndim; d++) same = t->shape[d] == sl->shape[d];
        if (!same) {
            char have[96], want[96];
            shape_text(t->ndim, t->shape, have, sizeof have);
            shape_text(sl->ndim, sl->shape, want, sizeof want);
            s = pmoe_fail(err, PMOE_ERR_FORMAT,
                          "%s: tensor '%s' has shape %s, the model expects %s", file->origin,
                          sl->name, have, want);
            break;
        }
        const float *from = t->data + sl->file_offset;
        const int64_t bad = first_nonfinite(from, sl->count);
        if (bad >= 0) {
            s = pmoe_fail(err, PMOE_ERR_FORMAT,
                          "%s: tensor '%s' holds NaN or Inf at element %lld; a damaged "
                          "checkpoint, not used",
                          file->origin, sl->name, (long long)bad);
            break;
        }
        s = m->be->copy_in(m->be, dst, from, (size_t)sl->count * sizeof(float), err);
    }
    free(slices);
    if (s || !pos) return s;
    return pmoe_checkpoint_position(file, pos, err);
}

pmoe_status pmoe_checkpoint_make_dir(const char *dir, pmoe_error *err) {
    return pmoe_make_dir(dir, "checkpoint folder", err);
}
