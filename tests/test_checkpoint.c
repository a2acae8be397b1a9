/* test_checkpoint.c: checkpoints, resume and the guards around them.
 *
 * - safetensors: write, read back every tensor and metadata bit for bit;
 *   every malformed header is rejected with the origin and an offset;
 * - a model saved and restored into a differently seeded model is equal;
 * - resume is bit-exact: a run stopped at step 37 of 100 and resumed gives
 *   the losses of the run left alone (main phase with momentum, and inside
 *   the router phase of separate training);
 * - a NaN stops the run, names the step and the last good checkpoint, which
 *   still loads; train.on_nonfinite = skip carries on; a save of a model
 *   holding a NaN or Inf (weight or velocity) is refused and leaves the file
 *   of that name byte-identical (the run's guard never lets one reach it);
 * - a full disk (RLIMIT_FSIZE) while saving leaves the previous checkpoint;
 * - train.keep prunes to the newest; pmoe_eval matches the run's accuracy;
 * - only the names pmoe writes are checkpoint names, run ids are 32 hex
 *   digits and two drawn differ (test_checkpoint_safety.sh holds the
 *   folder rules and crafted metadata end to end). */
#include <dirent.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "backend/backend.h"
#include "core/safetensors.h"
#include "model/model.h"
#include "pmoe/train.h"
#include "train/checkpoint.h"
#include "train/checkpoint_folder.h"
#include "test_util.h"

#define MAX_STEPS 2048

typedef struct trace {
    int64_t steps;
    double loss[MAX_STEPS];
    int64_t stop_at; /* set *stop when this step is reported */
    volatile sig_atomic_t *stop;
} trace;

static void on_step(void *user, const pmoe_step_report *r) {
    trace *t = user;
    if (t->steps < MAX_STEPS) t->loss[t->steps] = r->loss;
    t->steps++;
    if (t->stop && t->steps == t->stop_at) *t->stop = 1;
}

static char tmp[512];

static void base_config(pmoe_config *cfg, const char *dir) {
    pmoe_config_default(cfg);
    pmoe_config_set(cfg, "data.source=synthetic", NULL);
    pmoe_config_set(cfg, "data.train_size=200", NULL); /* 10 steps per epoch */
    pmoe_config_set(cfg, "data.test_size=100", NULL);
    pmoe_config_set(cfg, "train.epochs=10", NULL);
    pmoe_config_set(cfg, "train.momentum=0.9", NULL);
    pmoe_config_set(cfg, "train.lr=0.05", NULL);
    char set[1100];
    snprintf(set, sizeof set, "train.checkpoint_dir=%s/%s", tmp, dir);
    pmoe_config_set(cfg, set, NULL);
}

static pmoe_status train(const pmoe_config *cfg, trace *t, const char *resume,
                         pmoe_train_result *res, pmoe_error *err) {
    pmoe_train_callbacks cb = {t, NULL, on_step, NULL};
    pmoe_train_options opt = {resume, t->stop, 0};
    return pmoe_train(cfg, &cb, &opt, res, err);
}

static int count_checkpoints(const char *dir) {
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));) n += strstr(e->d_name, ".safetensors") != NULL;
    if (d) closedir(d);
    return n;
}

static void test_safetensors_format(void) {
    float a[6] = {1, -2, 3.5f, NAN, 1e-30f, 7}, b[1] = {42};
    pmoe_st_entry e[] = {{"alpha", 2, {2, 3}, a}, {"beta.x", 1, {1}, b}, {"empty", 1, {0}, a}};
    pmoe_st_meta meta[] = {{"note", "hello \"world\"\n"}, {"n", "17"}};
    char path[600];
    snprintf(path, sizeof path, "%s/t.safetensors", tmp);
    pmoe_error err = {PMOE_OK, ""};
    CHECK(pmoe_safetensors_write(path, e, 3, meta, 2, &err) == PMOE_OK);
    pmoe_st_file f;
    CHECK_MSG(pmoe_safetensors_read(path, &f, &err) == PMOE_OK, "%s", err.message);
    const pmoe_st_tensor *ta = pmoe_safetensors_find(&f, "alpha"),
                         *tb = pmoe_safetensors_find(&f, "beta.x");
    CHECK(ta && ta->ndim == 2 && ta->shape[0] == 2 && ta->shape[1] == 3 && ta->count == 6 &&
          memcmp(ta->data, a, sizeof a) == 0);
    CHECK(tb && tb->count == 1 && tb->data[0] == 42.0f);
    CHECK(pmoe_safetensors_find(&f, "empty") && pmoe_safetensors_find(&f, "empty")->count == 0);
    CHECK(!pmoe_safetensors_find(&f, "gamma"));
    CHECK(pmoe_safetensors_meta(&f, "note") &&
          !strcmp(pmoe_safetensors_meta(&f, "note"), "hello \"world\"\n"));
    pmoe_safetensors_free(&f);

    /* Malformed files: each rejected with its origin and an offset. */
    struct {
        const char *json;
        const char *needle;
    } bad[] = {
        {"{\"a\"", "not valid JSON"},
        {"[1,2]", "not a JSON object"},
        {"{\"t\":{\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[0,2]}}", "expected dtype F32"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1],\"data_offsets\":[0,4]}}", "shape"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", "shape"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", "data_offsets"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", "data_offsets"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", "data_offsets"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
         "\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
         "appears twice"},
        {"{\"__metadata__\":{\"a\":1}}", "not a string"},
        {"{\"__metadata__\":[]}", "not an object"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint8_t buf[512];
        size_t len = strlen(bad[i].json);
        for (int j = 0; j < 8; j++) buf[j] = (uint8_t)(len >> (8 * j));
        memcpy(buf + 8, bad[i].json, len);
        memset(buf + 8 + len, 0, 4); /* 4 data bytes */
        pmoe_status s = pmoe_safetensors_parse(buf, 8 + len + 4, "bad.st", &f, &err);
        CHECK_MSG(s == PMOE_ERR_FORMAT && strstr(err.message, "bad.st: offset") &&
                      strstr(err.message, bad[i].needle),
                  "case %zu: status %d, '%s'", i, s, err.message);
    }
    uint8_t tiny[12] = {255, 255, 255, 255, 0, 0, 0, 0, '{', '}', 0, 0};
    CHECK(pmoe_safetensors_parse(tiny, 5, "short.st", &f, &err) == PMOE_ERR_FORMAT &&
          strstr(err.message, "too short"));
    CHECK(pmoe_safetensors_parse(tiny, 12, "huge.st", &f, &err) == PMOE_ERR_FORMAT &&
          strstr(err.message, "over pmoe's limit of 104857600 bytes"));
    tiny[0] = 200, tiny[1] = tiny[2] = tiny[3] = 0; /* under the limit, beyond the file */
    CHECK(pmoe_safetensors_parse(tiny, 12, "long.st", &f, &err) == PMOE_ERR_FORMAT &&
          strstr(err.message, "does not fit"));
    CHECK(pmoe_safetensors_read("/nonexistent/x.st", &f, &err) == PMOE_ERR_IO);
}

static void test_resume_main_phase(void) {
    static trace whole, first, rest;
    pmoe_config cfg;
    pmoe_train_result res_whole, res;
    pmoe_error err = {PMOE_OK, ""};
    base_config(&cfg, "whole");
    pmoe_config_set(&cfg, "train.checkpoint_every=50", NULL); /* saves the final state */
    CHECK_MSG(train(&cfg, &whole, NULL, &res_whole, &err) == PMOE_OK, "%s", err.message);
    CHECK(whole.steps == 100);

    volatile sig_atomic_t stop = 0;
    base_config(&cfg, "resume");
    pmoe_config_set(&cfg, "train.checkpoint_every=50", NULL);
    first.stop = &stop;
    first.stop_at = 37;
    pmoe_status s = train(&cfg, &first, NULL, &res, &err);
    CHECK_MSG(s == PMOE_ERR_INTERRUPTED && first.steps == 37, "status %d after %lld steps: %s", s,
              (long long)first.steps, err.message);
    CHECK(strstr(res.last_checkpoint, "step-000000037.safetensors") != NULL);

    /* Resume from the folder (its newest checkpoint), with the saved config. */
    char dir[700];
    snprintf(dir, sizeof dir, "%s/resume", tmp);
    pmoe_config saved;
    CHECK(pmoe_checkpoint_load_config(dir, &saved, &err) == PMOE_OK);
    CHECK(saved.train.momentum == 0.9 && saved.data.train_size == 200);
    s = train(&saved, &rest, dir, &res, &err);
    CHECK_MSG(s == PMOE_OK, "%s", err.message);
    CHECK(rest.steps == 63 && res.steps == 100);
    int same = first.steps + rest.steps == whole.steps;
    for (int64_t i = 0; same && i < 37; i++) same = first.loss[i] == whole.loss[i];
    for (int64_t i = 0; same && i < 63; i++) same = rest.loss[i] == whole.loss[37 + i];
    CHECK_MSG(same, "resumed losses differ from the uninterrupted run");
    CHECK(res.test_acc == res_whole.test_acc && res.train_loss == res_whole.train_loss);

    /* The final parameters agree too: evaluate both final states. */
    pmoe_eval_result ev;
    s = pmoe_eval(&saved, dir, NULL, &ev, &err);
    CHECK_MSG(s == PMOE_OK && ev.test_acc == res_whole.test_acc && ev.step == 100,
              "eval: status %d acc %g (run %g) step %lld: %s", s, ev.test_acc, res_whole.test_acc,
              (long long)ev.step, err.message);
}

static void test_resume_router_phase(void) {
    static trace whole, first, rest;
    pmoe_config cfg;
    pmoe_train_result res_whole, res;
    pmoe_error err = {PMOE_OK, ""};
    const char *sets[] = {"train.mode=separate",   "model.experts=2", "model.topl=2",
                          "train.router_epochs=3", "train.epochs=2",  "train.momentum=0"};
    base_config(&cfg, "sep-whole");
    for (int i = 0; i < 6; i++) pmoe_config_set(&cfg, sets[i], NULL);
    CHECK_MSG(train(&cfg, &whole, NULL, &res_whole, &err) == PMOE_OK, "%s", err.message);
    CHECK(whole.steps == 50 && res_whole.router_steps == 30);
    volatile sig_atomic_t stop = 0;
    base_config(&cfg, "sep");
    for (int i = 0; i < 6; i++) pmoe_config_set(&cfg, sets[i], NULL);
    first.stop = &stop;
    first.stop_at = 17; /* inside the router phase */
    CHECK(train(&cfg, &first, NULL, &res, &err) == PMOE_ERR_INTERRUPTED);
    CHECK(train(&cfg, &rest, res.last_checkpoint, &res, &err) == PMOE_OK);
    int same = first.steps == 17 && rest.steps == 33;
    for (int64_t i = 0; same && i < 17; i++) same = first.loss[i] == whole.loss[i];
    for (int64_t i = 0; same && i < 33; i++) same = rest.loss[i] == whole.loss[17 + i];
    CHECK_MSG(same, "separate training: resumed losses differ");
    CHECK(res.router_steps == 30 && res.steps == 20 && res.test_acc == res_whole.test_acc);
}

static void test_guards(void) {
    pmoe_config cfg;
    pmoe_train_result res;
    pmoe_error err = {PMOE_OK, ""};
    trace t;
    memset(&t, 0, sizeof t);

    /* NaN at step 12 with checkpoints every 5: stops, names step 12 and step 10's file. */
    base_config(&cfg, "nan");
    pmoe_config_set(&cfg, "train.checkpoint_every=5", NULL);
    pmoe_config_set(&cfg, "train.fault_nan_step=12", NULL);
    pmoe_status s = train(&cfg, &t, NULL, &res, &err);
    CHECK_MSG(s == PMOE_ERR_NONFINITE && strstr(err.message, "step 12") &&
                  strstr(err.message, "step-000000010.safetensors"),
              "%d: %s", s, err.message);
    char dir[700];
    snprintf(dir, sizeof dir, "%s/nan", tmp);
    pmoe_eval_result ev;
    CHECK(pmoe_eval(&cfg, dir, NULL, &ev, &err) == PMOE_OK && ev.step == 10);

    /* The same with the host reading the steps every 7 (train.sync_every):
     * step 12 is found at the read of step 15's checkpoint, in the middle of
     * a window; the message still names step 12 and what was non-finite,
     * step 15 is never saved, and step 10's file stays the last. */
    base_config(&cfg, "nan_sync");
    pmoe_config_set(&cfg, "train.checkpoint_every=5", NULL);
    pmoe_config_set(&cfg, "train.fault_nan_step=12", NULL);
    pmoe_config_set(&cfg, "train.sync_every=7", NULL);
    memset(&t, 0, sizeof t);
    s = train(&cfg, &t, NULL, &res, &err);
    CHECK_MSG(s == PMOE_ERR_NONFINITE && strstr(err.message, "in the loss at step 12 (main") &&
                  strstr(err.message, "step-000000010.safetensors"),
              "%d: %s", s, err.message);
    CHECK_MSG(t.steps == 11, "%lld steps reported before the bad one", (long long)t.steps);
    snprintf(dir, sizeof dir, "%s/nan_sync", tmp);
    CHECK(count_checkpoints(dir) == 2 && pmoe_eval(&cfg, dir, NULL, &ev, &err) == PMOE_OK &&
          ev.step == 10);

    /* skip: the bad step's update is dropped and the run completes, with
     * the same losses, bit for bit, whether the host reads the steps after
     * each one (sync_every = 1), every 7 or every 100 (the run's length). */
    double skip_loss[3], skip_acc[3], first_losses[MAX_STEPS];
    int64_t first_steps = 0;
    const char *every[3] = {"train.sync_every=1", "train.sync_every=7", "train.sync_every=100"};
    for (int e = 0; e < 3; e++) {
        base_config(&cfg, "nan");
        pmoe_config_set(&cfg, "train.fault_nan_step=12", NULL);
        pmoe_config_set(&cfg, "train.on_nonfinite=skip", NULL);
        pmoe_config_set(&cfg, every[e], NULL);
        memset(&t, 0, sizeof t);
        s = train(&cfg, &t, NULL, &res, &err);
        CHECK_MSG(s == PMOE_OK && res.skipped_steps == 1 && res.steps == 100, "%s: %d %lld: %s",
                  every[e], s, (long long)res.skipped_steps, err.message);
        CHECK(isfinite(res.train_loss) && t.steps == 100 && isnan(t.loss[11]));
        skip_loss[e] = res.train_loss;
        skip_acc[e] = res.test_acc;
        if (e == 0) {
            first_steps = t.steps;
            memcpy(first_losses, t.loss, sizeof first_losses);
        } else {
            CHECK_MSG(t.steps == first_steps &&
                          !memcmp(first_losses, t.loss, sizeof(double) * (size_t)t.steps),
                      "%s: step losses differ from sync_every = 1", every[e]);
        }
    }
    CHECK_MSG(skip_loss[1] == skip_loss[0] && skip_loss[2] == skip_loss[0] &&
                  skip_acc[1] == skip_acc[0] && skip_acc[2] == skip_acc[0],
              "skip: train loss %.9g / %.9g / %.9g", skip_loss[0], skip_loss[1], skip_loss[2]);

    /* keep = 3 of 10 checkpoints, the newest. */
    memset(&t, 0, sizeof t);
    base_config(&cfg, "keep");
    pmoe_config_set(&cfg, "train.epochs=1", NULL);
    pmoe_config_set(&cfg, "train.checkpoint_every=1", NULL);
    pmoe_config_set(&cfg, "train.keep=3", NULL);
    CHECK(train(&cfg, &t, NULL, &res, &err) == PMOE_OK);
    snprintf(dir, sizeof dir, "%s/keep", tmp);
    CHECK_MSG(count_checkpoints(dir) == 3, "%d checkpoints kept", count_checkpoints(dir));
    char path[800];
    snprintf(path, sizeof path, "%s/step-000000010.safetensors", dir);
    CHECK(access(path, R_OK) == 0);
    snprintf(path, sizeof path, "%s/step-000000007.safetensors", dir);
    CHECK(access(path, R_OK) != 0);

    /* A full disk: the file-size limit makes the second save fail; the first stays. */
    memset(&t, 0, sizeof t);
    base_config(&cfg, "full");
    pmoe_config_set(&cfg, "train.epochs=1", NULL);
    pmoe_config_set(&cfg, "train.checkpoint_every=5", NULL);
    CHECK(train(&cfg, &t, NULL, &res, &err) == PMOE_OK);
    snprintf(dir, sizeof dir, "%s/full", tmp);
    pmoe_config_set(&cfg, "train.epochs=2", NULL);
    struct rlimit old, tiny = {4096, 0};
    getrlimit(RLIMIT_FSIZE, &old);
    tiny.rlim_max = old.rlim_max;
    signal(SIGXFSZ, SIG_IGN);
    setrlimit(RLIMIT_FSIZE, &tiny);
    memset(&t, 0, sizeof t);
    s = train(&cfg, &t, dir, &res, &err);
    setrlimit(RLIMIT_FSIZE, &old);
    CHECK_MSG(s == PMOE_ERR_IO && strstr(err.message, "checkpoint not saved") &&
                  strstr(err.message, "step-000000010.safetensors is") == NULL &&
                  strstr(err.message, "last good checkpoint is") &&
                  strstr(err.message, "step-000000010.safetensors"),
              "%d: %s", s, err.message);
    CHECK(pmoe_eval(&cfg, dir, NULL, &ev, &err) == PMOE_OK && ev.step == 10);
    CHECK(count_checkpoints(dir) == 2); /* steps 5 and 10, no temporary left */

    /* A checkpoint does not load into a model of another shape. */
    pmoe_config_set(&cfg, "model.experts=4", NULL);
    s = pmoe_eval(&cfg, dir, NULL, &ev, &err);
    CHECK_MSG(s == PMOE_ERR_FORMAT && strstr(err.message, "router.weight") &&
                  strstr(err.message, "shape"),
              "%d: %s", s, err.message);
}

/* The whole file, malloc'd, or NULL; *size its length. */
static unsigned char *read_all(const char *path, long *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *size = ftell(f);
    rewind(f);
    unsigned char *bytes = malloc(*size > 0 ? (size_t)*size : 1);
    if (bytes && fread(bytes, 1, (size_t)*size, f) != (size_t)*size) {
        free(bytes);
        bytes = NULL;
    }
    fclose(f);
    return bytes;
}

/* pmoe_checkpoint_save itself refuses a model with a non-finite tensor,
 * naming it, and leaves the earlier file of that name as it was: the
 * training loop's NaN guard stops a run before any save, so only a direct
 * call reaches this. */
static void test_save_refuses_nonfinite(void) {
    pmoe_config cfg;
    base_config(&cfg, "nonfinite");
    pmoe_config_set(&cfg, "train.momentum=0.9", NULL); /* velocities are saved too */
    pmoe_error err = {PMOE_OK, ""};
    pmoe_backend *be = NULL;
    pmoe_model *m = NULL;
    CHECK(pmoe_cpu_backend_create(1, &be, &err) == PMOE_OK);
    CHECK_MSG(pmoe_model_create(be, &cfg, 1, 8, 8, 2, 1, 4, &m, &err) == PMOE_OK, "%s",
              err.message);
    if (!m) {
        pmoe_backend_destroy(be);
        return;
    }
    char dir[700], path[800];
    snprintf(dir, sizeof dir, "%s/nonfinite", tmp);
    CHECK(pmoe_checkpoint_make_dir(dir, &err) == PMOE_OK);
    pmoe_checkpoint_path(dir, 1, path, sizeof path);
    pmoe_train_position pos;
    memset(&pos, 0, sizeof pos);
    pos.phase = PMOE_PHASE_MAIN;
    pos.epoch = 1;
    pos.step = 1;
    pmoe_run_id_new(pos.run_id);
    CHECK_MSG(pmoe_checkpoint_save(path, m, &cfg, &pos, &err) == PMOE_OK, "%s", err.message);
    long before_size = 0, after_size = 0;
    unsigned char *before = read_all(path, &before_size);
    CHECK(before != NULL && before_size > 0);

    /* NaN in a weight, then Inf in a velocity: each refused, the file untouched. */
    int checked = 0;
    for (int i = 0; i < m->param_count && checked < 2; i++) {
        pmoe_param *p = &m->params[i];
        float *slot = checked == 0 ? p->value.data : p->velocity.data;
        if (!slot || pmoe_tensor_numel(checked == 0 ? &p->value : &p->velocity) < 3) continue;
        const float kept = slot[2];
        slot[2] = checked == 0 ? NAN : INFINITY; /* the CPU backend's memory is the host's */
        pos.step = 2;
        pmoe_status s = pmoe_checkpoint_save(path, m, &cfg, &pos, &err);
        slot[2] = kept;
        CHECK_MSG(s == PMOE_ERR_NONFINITE && strstr(err.message, p->field ? p->field : p->name) &&
                      strstr(err.message, "element 2") &&
                      strstr(err.message, "nothing was written"),
                  "%s %d: %s", p->name, s, err.message);
        unsigned char *after = read_all(path, &after_size);
        CHECK_MSG(after && after_size == before_size &&
                      memcmp(before, after, (size_t)before_size) == 0,
                  "the refused save of %s changed %s", p->name, path);
        free(after);
        checked++;
    }
    CHECK_MSG(checked == 2, "found %d of a weight and a velocity to poison", checked);
    CHECK(count_checkpoints(dir) == 1); /* no temporary left beside it */
    pmoe_st_file file;
    const pmoe_status opened = pmoe_checkpoint_open(path, &file, &err); /* and it still loads */
    CHECK(opened == PMOE_OK);
    if (opened == PMOE_OK) pmoe_safetensors_free(&file);
    free(before);
    pmoe_model_free(m);
    pmoe_backend_destroy(be);
}

static void test_names(void) {
    static const struct {
        const char *name;
        int ok;
        int64_t step;
    } cases[] = {
        {"step-000000005.safetensors", 1, 5},
        {"step-1234567890.safetensors", 1, 1234567890},
        {"step-9223372036854775807.safetensors", 1, INT64_MAX},
        {"step-best.safetensors", 0, 0},
        {"step-5.safetensors", 0, 0},          /* not zero-padded as pmoe writes */
        {"step-0000000005.safetensors", 0, 0}, /* one zero too many */
        {"step-000000005.safetensors.tmp.12", 0, 0},
        {"step--00000005.safetensors", 0, 0},
        {"step-+00000005.safetensors", 0, 0},
        {"step-9223372036854775808.safetensors", 0, 0}, /* past INT64_MAX */
        {"step-000000005.safetensor", 0, 0},
        {"xstep-000000005.safetensors", 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int64_t step = -1;
        const int ok = pmoe_checkpoint_name_step(cases[i].name, &step);
        CHECK_MSG(ok == cases[i].ok && (!ok || step == cases[i].step), "%s: %d, step %lld",
                  cases[i].name, ok, (long long)step);
    }
    char a[PMOE_RUN_ID_CHARS + 1], b[PMOE_RUN_ID_CHARS + 1];
    pmoe_run_id_new(a);
    pmoe_run_id_new(b);
    CHECK(pmoe_run_id_valid(a) && pmoe_run_id_valid(b) && strcmp(a, b) != 0);
    CHECK(!pmoe_run_id_valid("") && !pmoe_run_id_valid("0123456789ABCDEF0123456789abcdef") &&
          !pmoe_run_id_valid("0123456789abcdef0123456789abcde"));
}

int main(void) {
    make_temp_dir(tmp, sizeof tmp);
    test_names();
    test_safetensors_format();
    test_resume_main_phase();
    test_resume_router_phase();
    test_guards();
    test_save_refuses_nonfinite();
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp);
    return test_finish("test_checkpoint");
}
