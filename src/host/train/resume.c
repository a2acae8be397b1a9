/* resume.c: see resume.h.
 *
 * The saved config is the one the position was counted in, so the position
 * is checked against it first (a mismatch is a damaged file); then the run's
 * config against the saved one (a mismatch is the user's to fix). Every
 * quantity is bounded before it is multiplied: epochs <= 1e7 and a batch
 * count <= the training set's size keep each product far below 2^63. */
#include "train/resume.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pmoe/train.h"

/* The sizes one phase's position is measured in. */
typedef struct frame {
    int64_t size, batch, batches;
    int epochs; /* 0: the phase does not exist */
} frame;

static frame main_frame(const pmoe_config *c, int64_t count) {
    frame f = {count, c->train.batch, 0, c->train.epochs};
    f.batches = (f.size + f.batch - 1) / f.batch;
    return f;
}

static frame router_frame(const pmoe_config *c, int64_t count, int has_router) {
    const pmoe_train_config *t = &c->train;
    frame f = {t->router_size > 0 && t->router_size < count ? t->router_size : count,
               t->router_batch, 0,
               has_router && t->mode == PMOE_TRAIN_SEPARATE ? t->router_epochs : 0};
    f.batches = (f.size + f.batch - 1) / f.batch;
    return f;
}

/* The value of "section.key" in INI text as pmoe_config_to_ini writes it. */
static void ini_value(const char *text, const char *key, char *out, size_t size) {
    const char *dot = strchr(key, '.');
    const size_t section_len = (size_t)(dot - key), name_len = strlen(dot + 1);
    int in_section = 0;
    out[0] = '\0';
    for (const char *line = text; line && *line;
         line = strchr(line, '\n'), line = line ? line + 1 : NULL) {
        const size_t len = strcspn(line, "\n");
        if (line[0] == '[') {
            in_section = len == section_len + 2 && strncmp(line + 1, key, section_len) == 0;
        } else if (in_section && len > name_len + 3 && strncmp(line, dot + 1, name_len) == 0 &&
                   strncmp(line + name_len, " = ", 3) == 0) {
            snprintf(out, size, "%.*s", (int)(len - name_len - 3), line + name_len + 3);
            return;
        }
    }
}

static int fixed_on_resume(const char *key, int main_phase) {
    static const char *const fixed[] = {
        "model.type",         "model.experts",     "model.topl",
        "model.hidden",       "model.patch",       "model.gate",
        "model.train_output", "model.width",       "model.expert_kernel",
        "train.mode",         "train.batch",       "train.seed",
        "train.router_batch", "train.router_size", NULL};
    if (strncmp(key, "data.", 5) == 0)
        return strcmp(key, "data.path") && strcmp(key, "data.test_size");
    if (main_phase && strcmp(key, "train.router_epochs") == 0) return 1; /* that phase is over */
    for (int i = 0; fixed[i]; i++)
        if (strcmp(key, fixed[i]) == 0) return 1;
    return 0;
}

/* The first key that must not change and did, as a PMOE_ERR_CONFIG. */
static pmoe_status check_fixed_keys(const char *origin, const pmoe_config *saved,
                                    const pmoe_config *now, int main_phase, pmoe_error *err) {
    const int len_a = pmoe_config_to_ini(saved, NULL, 0) + 1,
              len_b = pmoe_config_to_ini(now, NULL, 0) + 1;
    char *a = malloc((size_t)len_a), *b = malloc((size_t)len_b);
    pmoe_status s = PMOE_OK;
    if (!a || !b) s = pmoe_fail(err, PMOE_ERR_OOM, "resume: cannot allocate the configs' text");
    if (!s) {
        pmoe_config_to_ini(saved, a, len_a);
        pmoe_config_to_ini(now, b, len_b);
    }
    for (const char *const *key = pmoe_config_keys(); !s && *key; key++) {
        if (!fixed_on_resume(*key, main_phase)) continue;
        char was[200], is[200];
        ini_value(a, *key, was, sizeof was);
        ini_value(b, *key, is, sizeof is);
        if (strcmp(was, is) != 0)
            s = pmoe_fail(err, PMOE_ERR_CONFIG,
                          "%s: %s = %.60s, but the checkpoint was trained with %.60s; the run's "
                          "position and weights depend on it, so a resume keeps it (start a "
                          "fresh run to change it)",
                          origin, *key, is, was);
    }
    free(a);
    free(b);
    return s;
}

static pmoe_status damaged(const char *origin, const char *what, pmoe_error *err) {
    return pmoe_fail(err, PMOE_ERR_FORMAT, "%s: inconsistent run position: %s", origin, what);
}

/* The position against the config it was saved with. */
static pmoe_status check_position(const char *origin, const pmoe_config *saved, int64_t count,
                                  int has_router, const pmoe_train_position *p, pmoe_error *err) {
    const frame r = router_frame(saved, count, has_router), m = main_frame(saved, count);
    const int router = p->phase == PMOE_PHASE_ROUTER;
    const frame *f = router ? &r : &m;
    char what[200];
    if (router && r.epochs == 0)
        return damaged(origin, "saved in a router phase, but its own config has none", err);
    /* the main phase's last checkpoint sits just past its last epoch */
    const int last_epoch = router ? r.epochs : m.epochs + 1;
    if (p->epoch > last_epoch) {
        snprintf(what, sizeof what, "epoch %d, but its config has %d %s epochs", p->epoch,
                 f->epochs, router ? "router" : "main");
        return damaged(origin, what, err);
    }
    if (p->next_batch > f->batches || (!router && p->epoch == last_epoch && p->next_batch != 0)) {
        snprintf(what, sizeof what, "next batch %lld of an epoch of %lld batches (epoch %d)",
                 (long long)p->next_batch, (long long)f->batches, p->epoch);
        return damaged(origin, what, err);
    }
    const int64_t steps = (int64_t)(p->epoch - 1) * f->batches + p->next_batch;
    if (p->step != steps) {
        snprintf(what, sizeof what, "%lld steps, but epoch %d batch %lld of %lld means %lld",
                 (long long)p->step, p->epoch, (long long)p->next_batch, (long long)f->batches,
                 (long long)steps);
        return damaged(origin, what, err);
    }
    const int64_t router_steps = router ? 0 : (int64_t)r.epochs * r.batches;
    if (p->router_steps != router_steps) {
        snprintf(what, sizeof what, "%lld router steps, expected %lld", (long long)p->router_steps,
                 (long long)router_steps);
        return damaged(origin, what, err);
    }
    if (p->skipped > p->step + p->router_steps) {
        snprintf(what, sizeof what, "%lld skipped steps of %lld", (long long)p->skipped,
                 (long long)(p->step + p->router_steps));
        return damaged(origin, what, err);
    }
    const int64_t seen = p->next_batch * f->batch < f->size ? p->next_batch * f->batch : f->size;
    if (p->correct_sum > (router ? 0 : seen) || (p->next_batch == 0 && p->loss_sum != 0.0)) {
        snprintf(what, sizeof what, "partial sums (loss %g, %lld correct) after %lld samples",
                 p->loss_sum, (long long)p->correct_sum, (long long)seen);
        return damaged(origin, what, err);
    }
    return PMOE_OK;
}

pmoe_status pmoe_resume_check_config(const pmoe_st_file *file, const pmoe_config *now,
                                     pmoe_error *err) {
    pmoe_config saved;
    pmoe_status s = pmoe_checkpoint_config(file, &saved, err);
    const char *phase = pmoe_safetensors_meta(file, "phase");
    const int main_phase = !phase || strcmp(phase, "router") != 0; /* restore checks the word */
    if (!s) s = check_fixed_keys(file->origin, &saved, now, main_phase, err);
    return s;
}

pmoe_status pmoe_resume_check(const pmoe_st_file *file, const pmoe_config *now, int64_t train_count,
                              int has_router, const pmoe_train_position *pos, pmoe_error *err) {
    pmoe_config saved;
    pmoe_status s = pmoe_checkpoint_config(file, &saved, err);
    if (!s) s = check_position(file->origin, &saved, train_count, has_router, pos, err);
    if (s) return s;
    if (pos->phase == PMOE_PHASE_ROUTER) {
        const frame r = router_frame(now, train_count, has_router);
        if (r.epochs == 0)
            return pmoe_fail(err, PMOE_ERR_CONFIG,
                             "%s: saved in a router phase, but this config has none "
                             "(train.router_epochs = 0)",
                             file->origin);
        if (pos->epoch > r.epochs)
            return pmoe_fail(err, PMOE_ERR_CONFIG,
                             "%s: saved in router epoch %d, past train.router_epochs = %d; a "
                             "resume may shorten a phase only down to the epoch in progress",
                             file->origin, pos->epoch, r.epochs);
        return PMOE_OK;
    }
    if (pos->epoch > now->train.epochs)
        return pmoe_fail(err, PMOE_ERR_CONFIG,
                         "%s: nothing to train: the run has done %d epochs and train.epochs = %d; "
                         "resume with a larger train.epochs to train on (pmoe eval "
                         "--checkpoint evaluates it)",
                         file->origin, pos->epoch - 1, now->train.epochs);
    return PMOE_OK;
}
