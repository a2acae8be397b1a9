/* test_keep_best.c: train.keep_best, best.safetensors and the folder rules.
 *
 * - A run whose test accuracy rises and falls keeps, in best.safetensors,
 *   the first epoch of its highest accuracy (read from the epoch reports):
 *   its metadata says that epoch and accuracy, pmoe_eval of it gives that
 *   accuracy exactly, train.keep = 1 prunes the step files but never it,
 *   the newest of the folder is still a step file, and every checkpoint
 *   carries the best so far.
 * - Stopped after its best epoch and resumed, a run ends with the same best
 *   (epoch, accuracy, weights bit for bit): the resume kept the best value,
 *   where forgetting it would let a later, worse epoch replace the file.
 * - A fresh keep_best run refuses a folder holding another run's
 *   best.safetensors before its first step; a killed writer's
 *   best.safetensors.tmp.<pid> is swept. */
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/safetensors.h"
#include "pmoe/train.h"
#include "train/checkpoint.h"
#include "train/position.h"
#include "test_util.h"

enum { EPOCHS = 12, STEPS_PER_EPOCH = 10 };

typedef struct record {
    double test_acc[EPOCHS + 1]; /* by epoch, 1-based */
    int64_t stop_at;
    int64_t steps;
    volatile sig_atomic_t *stop;
} record;

static void on_step(void *user, const pmoe_step_report *r) {
    (void)r;
    record *t = user;
    if (t->stop && ++t->steps == t->stop_at) *t->stop = 1;
}

static pmoe_status on_epoch(void *user, const pmoe_epoch_report *r, pmoe_error *err) {
    (void)err;
    record *t = user;
    if (r->phase == PMOE_PHASE_MAIN && r->epoch >= 1 && r->epoch <= EPOCHS)
        t->test_acc[r->epoch] = r->test_acc;
    return PMOE_OK;
}

static char tmp[512];

/* Synthetic data, 10 steps an epoch, noisy enough that the test accuracy
 * rises and falls (86% first at epoch 5, again at 7, 84% at the end). */
static void config(pmoe_config *cfg, const char *dir, int keep_best) {
    pmoe_config_default(cfg);
    const char *sets[] = {"data.source=synthetic",     "data.train_size=200", "data.test_size=100",
                          "train.momentum=0.9",        "train.lr=0.5",        "train.keep=1",
                          "train.checkpoint_every=10", "train.threads=1",     "data.noise=0.3"};
    for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++) pmoe_config_set(cfg, sets[i], NULL);
    cfg->train.epochs = EPOCHS;
    cfg->train.keep_best = keep_best;
    snprintf(cfg->train.checkpoint_dir, sizeof cfg->train.checkpoint_dir, "%s/%s", tmp, dir);
}

static pmoe_status run(const pmoe_config *cfg, record *t, const char *resume,
                       pmoe_train_result *res, pmoe_error *err) {
    pmoe_train_callbacks cb = {t, NULL, on_step, on_epoch};
    pmoe_train_options opt = {resume, t->stop, 0};
    return pmoe_train(cfg, &cb, &opt, res, err);
}

/* The position saved in path (best_epoch 0 when unreadable). */
static pmoe_train_position position_of(const char *path) {
    pmoe_train_position pos;
    memset(&pos, 0, sizeof pos);
    pmoe_st_file f;
    pmoe_error err;
    if (pmoe_safetensors_read(path, &f, &err) == PMOE_OK) {
        if (pmoe_checkpoint_position(&f, &pos, &err)) memset(&pos, 0, sizeof pos);
        pmoe_safetensors_free(&f);
    }
    return pos;
}

/* 1 when the two files hold the same tensors, bit for bit. */
static int same_tensors(const char *a, const char *b) {
    pmoe_st_file x, y;
    pmoe_error err;
    if (pmoe_safetensors_read(a, &x, &err)) return 0;
    if (pmoe_safetensors_read(b, &y, &err)) {
        pmoe_safetensors_free(&x);
        return 0;
    }
    int same = x.tensor_count == y.tensor_count && x.data_bytes == y.data_bytes &&
               memcmp(x.data, y.data, (size_t)x.data_bytes) == 0;
    pmoe_safetensors_free(&x);
    pmoe_safetensors_free(&y);
    return same;
}

static int count_entries(const char *dir, const char *suffix) {
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));) {
        const size_t len = strlen(e->d_name), sl = strlen(suffix);
        n += len >= sl && !strcmp(e->d_name + len - sl, suffix);
    }
    if (d) closedir(d);
    return n;
}

int main(void) {
    make_temp_dir(tmp, sizeof tmp);
    pmoe_config cfg;
    pmoe_error err = {PMOE_OK, ""};
    pmoe_train_result whole;
    record a;
    memset(&a, 0, sizeof a);
    config(&cfg, "a", 1);
    pmoe_status s = run(&cfg, &a, NULL, &whole, &err);
    CHECK_MSG(s == PMOE_OK, "%s", err.message);
    if (s) return test_finish("test_keep_best");
    int best = 1;
    for (int e = 2; e <= EPOCHS; e++)
        if (a.test_acc[e] > a.test_acc[best]) best = e;
    printf("test accuracy by epoch:");
    for (int e = 1; e <= EPOCHS; e++) printf(" %.2f", a.test_acc[e]);
    printf("; best epoch %d\n", best);
    CHECK_MSG(best < EPOCHS && a.test_acc[EPOCHS] < a.test_acc[best],
              "the accuracy only rose: this run cannot tell the best from the last");
    char path[1200], dir[1100];
    snprintf(dir, sizeof dir, "%s/a", tmp);
    pmoe_checkpoint_best_path(dir, path, sizeof path);
    CHECK_MSG(whole.best_epoch == best && whole.best_test_acc == a.test_acc[best] &&
                  !strcmp(whole.best_checkpoint, path),
              "result: best epoch %d (%.4f) at '%s'", whole.best_epoch, whole.best_test_acc,
              whole.best_checkpoint);
    const pmoe_train_position bp = position_of(path);
    CHECK_MSG(bp.best_epoch == best && bp.best_acc == a.test_acc[best] && bp.epoch == best,
              "best.safetensors: epoch %d, best_epoch %d, best_test_acc %.17g", bp.epoch,
              bp.best_epoch, bp.best_acc);
    pmoe_eval_result ev;
    s = pmoe_eval(&cfg, path, NULL, &ev, &err);
    CHECK_MSG(s == PMOE_OK && ev.test_acc == a.test_acc[best], "eval of best: %.4f (%s)",
              ev.test_acc, err.message);
    /* keep = 1: one step file, and the best beside it */
    CHECK(count_entries(dir, ".safetensors") == 2);
    char newest[1200];
    CHECK(pmoe_checkpoint_newest(dir, newest, sizeof newest, &err) == PMOE_OK &&
          strstr(newest, "/step-") && !strcmp(newest, whole.last_checkpoint));
    const pmoe_train_position last = position_of(whole.last_checkpoint);
    CHECK(last.best_epoch == best && last.best_acc == a.test_acc[best]);

    /* stopped two steps into the epoch after the best, then resumed */
    volatile sig_atomic_t stop = 0;
    record b;
    memset(&b, 0, sizeof b);
    b.stop = &stop;
    b.stop_at = (int64_t)best * STEPS_PER_EPOCH + 2;
    config(&cfg, "b", 1);
    pmoe_train_result first, rest;
    s = run(&cfg, &b, NULL, &first, &err);
    CHECK_MSG(s == PMOE_ERR_INTERRUPTED, "%d %s", s, err.message);
    record c;
    memset(&c, 0, sizeof c);
    snprintf(dir, sizeof dir, "%s/b", tmp);
    s = run(&cfg, &c, dir, &rest, &err);
    CHECK_MSG(s == PMOE_OK, "resume: %s", err.message);
    char path_b[1200];
    pmoe_checkpoint_best_path(dir, path_b, sizeof path_b);
    CHECK_MSG(rest.best_epoch == best && rest.best_test_acc == a.test_acc[best] &&
                  same_tensors(path, path_b),
              "resumed: best epoch %d (%.4f), the same weights: %d", rest.best_epoch,
              rest.best_test_acc, same_tensors(path, path_b));

    /* another run's best.safetensors: refused before the first step */
    snprintf(dir, sizeof dir, "%s/c", tmp);
    mkdir(dir, 0755);
    char cmd[4000], foreign[1200];
    snprintf(foreign, sizeof foreign, "%s/best.safetensors", dir);
    snprintf(cmd, sizeof cmd, "cp '%s' '%s' && touch '%s/best.safetensors.tmp.12345'", path,
             foreign, dir);
    CHECK(system(cmd) == 0);
    config(&cfg, "c", 1);
    record d;
    memset(&d, 0, sizeof d);
    pmoe_train_result refused;
    s = run(&cfg, &d, NULL, &refused, &err);
    CHECK_MSG(s == PMOE_ERR_IO && strstr(err.message, foreign) &&
                  strstr(err.message, "another run"),
              "foreign best: %d %s", s, err.message);
    CHECK(count_entries(dir, ".safetensors") == 1);           /* nothing written */
    CHECK(count_entries(dir, ".safetensors.tmp.12345") == 0); /* the temporary swept */
    printf("a foreign best.safetensors: %s\n", err.message);
    /* without keep_best the file is nobody's concern */
    config(&cfg, "c", 0);
    cfg.train.epochs = 1;
    memset(&d, 0, sizeof d);
    s = run(&cfg, &d, NULL, &refused, &err);
    CHECK_MSG(s == PMOE_OK && refused.best_checkpoint[0] == '\0', "%s", err.message);
    CHECK(same_tensors(foreign, path));

    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp);
    return test_finish("test_keep_best");
}
