/* test_schedule.c: learning-rate schedules (train/lr_schedule.h).
 *
 * - each schedule against its closed form, written out here independently,
 *   at chosen steps (warmup edges, milestones, the cosine's quarter points);
 * - the constant schedule returns the base rate unchanged (the paper's runs);
 * - bad train.lr_steps / lr_min are one-line config errors naming the key;
 * - a run with a schedule stopped at step 37 and resumed gives the losses of
 *   the run left alone, bit for bit (main phase, and the router phase of
 *   separate training), and the rate reported per epoch is the schedule's;
 * - the schedule really reaches the updates: its losses differ from the
 *   constant run's. */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pmoe/train.h"
#include "test_util.h"
#include "train_trace.h"
#include "train/lr_schedule.h"

static const double PI = 3.14159265358979323846;

/* |got - want| <= 1e-15 |want|: the closed forms below round differently
 * from the library's order of operations only in the last bit or two. */
static int near(double got, double want) { return fabs(got - want) <= 1e-15 * fabs(want) + 1e-300; }

static pmoe_lr_schedule make(const char *const *sets, int count, double base, int epochs,
                             int64_t per_epoch) {
    pmoe_config cfg;
    pmoe_config_default(&cfg);
    pmoe_error err;
    for (int i = 0; i < count; i++)
        CHECK_MSG(pmoe_config_set(&cfg, sets[i], &err) == PMOE_OK, "%s", err.message);
    CHECK_MSG(pmoe_lr_schedule_check(&cfg.train, &err) == PMOE_OK, "%s", err.message);
    return pmoe_lr_schedule_make(&cfg.train, base, epochs, per_epoch);
}

static void test_closed_forms(void) {
    /* constant: the base itself, every step */
    pmoe_lr_schedule c = make(NULL, 0, 0.2, 150, 500);
    CHECK(pmoe_lr_at(&c, 0) == 0.2 && pmoe_lr_at(&c, 37) == 0.2 && pmoe_lr_at(&c, 74999) == 0.2);
    CHECK((float)pmoe_lr_at(&c, 12345) == (float)0.2);

    /* step: S = 10, gamma 0.1 after epochs 3 and 7 */
    const char *step_sets[] = {"train.schedule=step", "train.lr_steps=3,7", "train.lr_gamma=0.1"};
    pmoe_lr_schedule s = make(step_sets, 3, 0.1, 10, 10);
    const struct {
        int64_t t;
        double want;
    } st[] = {{0, 0.1},
              {29, 0.1},
              {30, 0.1 * 0.1},
              {69, 0.1 * 0.1},
              {70, 0.1 * 0.1 * 0.1},
              {99, 0.1 * 0.1 * 0.1}};
    for (size_t i = 0; i < sizeof st / sizeof st[0]; i++)
        CHECK_MSG(near(pmoe_lr_at(&s, st[i].t), st[i].want), "step t=%lld: %.17g, want %.17g",
                  (long long)st[i].t, pmoe_lr_at(&s, st[i].t), st[i].want);

    /* constant with 2 warmup epochs of 10 steps: base (t + 1) / 20, then base */
    const char *warm_sets[] = {"train.warmup_epochs=2"};
    pmoe_lr_schedule w = make(warm_sets, 1, 0.5, 5, 10);
    const int64_t wt[] = {0, 1, 9, 18, 19, 20, 49};
    for (size_t i = 0; i < sizeof wt / sizeof wt[0]; i++) {
        const double want = wt[i] < 20 ? 0.5 * (double)(wt[i] + 1) / 20.0 : 0.5;
        CHECK_MSG(near(pmoe_lr_at(&w, wt[i]), want), "warmup t=%lld: %.17g, want %.17g",
                  (long long)wt[i], pmoe_lr_at(&w, wt[i]), want);
    }

    /* cosine from 0.1 to 0.001 over T = 100 steps, then with W = 20 */
    for (int warm = 0; warm <= 2; warm += 2) {
        char wset[40];
        snprintf(wset, sizeof wset, "train.warmup_epochs=%d", warm);
        const char *cos_sets[] = {"train.schedule=cosine", "train.lr_min=0.001", wset};
        pmoe_lr_schedule k = make(cos_sets, 3, 0.1, 10, 10);
        const int64_t W = warm * 10, T = 100;
        const int64_t kt[] = {0,    W / 2, W, W + (T - W) / 4, W + (T - W) / 2, W + 3 * (T - W) / 4,
                              T - 1};
        for (size_t i = 0; i < sizeof kt / sizeof kt[0]; i++) {
            const int64_t t = kt[i];
            const double u = t < W ? 0.0 : (double)(t - W) / (double)(T - W);
            double want = 0.001 + (0.1 - 0.001) * (1.0 + cos(PI * u)) / 2.0;
            if (t < W) want *= (double)(t + 1) / (double)W;
            CHECK_MSG(near(pmoe_lr_at(&k, t), want), "cosine W=%lld t=%lld: %.17g, want %.17g",
                      (long long)W, (long long)t, pmoe_lr_at(&k, t), want);
        }
        /* the quarter points of the cosine, by their exact values */
        CHECK(near(pmoe_lr_at(&k, W + (T - W) / 2), 0.0505));
        CHECK(pmoe_lr_at(&k, T - 1) > 0.001 && pmoe_lr_at(&k, T - 1) < 0.0011);
    }
    printf("closed forms: constant, step, warmup and cosine agree at every chosen step\n");
}

static void test_config_errors(void) {
    const struct {
        const char *set[2];
        const char *needle;
    } bad[] = {
        {{"train.schedule=step", NULL}, "train.lr_steps"},
        {{"train.lr_steps=3,2", NULL}, "must increase"},
        {{"train.lr_steps=a", NULL}, "train.lr_steps"},
        {{"train.lr_steps=3,", NULL}, "comma"},
        {{"train.lr_steps=0", NULL}, "train.lr_steps"},
        {{"train.schedule=cosine", "train.lr_min=1"}, "train.lr_min"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        pmoe_config cfg;
        pmoe_config_default(&cfg);
        pmoe_error err = {PMOE_OK, ""};
        for (int j = 0; j < 2 && bad[i].set[j]; j++) pmoe_config_set(&cfg, bad[i].set[j], NULL);
        pmoe_status s = pmoe_lr_schedule_check(&cfg.train, &err);
        CHECK_MSG(s == PMOE_ERR_CONFIG && strstr(err.message, bad[i].needle) &&
                      !strchr(err.message, '\n'),
                  "case %zu: status %d '%s'", i, s, err.message);
    }
    pmoe_config cfg;
    pmoe_config_default(&cfg);
    CHECK(pmoe_config_set(&cfg, "train.schedule=linear", NULL) == PMOE_ERR_CONFIG);
}

/* ---- training with a schedule ---- */

static char tmp[512];

static void base_config(pmoe_config *cfg, const char *dir, const char *schedule) {
    pmoe_config_default(cfg);
    const char *sets[] = {"data.source=synthetic",     "data.train_size=200",
                          "data.test_size=100",        "train.epochs=10",
                          "train.momentum=0.9",        "train.lr=0.05",
                          "train.checkpoint_every=50", "train.warmup_epochs=2",
                          "train.lr_min=0.001",        "train.lr_steps=4,8"};
    for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++) pmoe_config_set(cfg, sets[i], NULL);
    char set[700];
    snprintf(set, sizeof set, "train.schedule=%s", schedule);
    pmoe_config_set(cfg, set, NULL);
    snprintf(set, sizeof set, "train.checkpoint_dir=%s/%s", tmp, dir);
    pmoe_config_set(cfg, set, NULL);
}

static void test_resume(const char *schedule) {
    static trace whole, first, rest;
    first.stop = NULL;
    pmoe_config cfg;
    pmoe_train_result res_whole, res;
    pmoe_error err = {PMOE_OK, ""};
    char dir[64];
    snprintf(dir, sizeof dir, "whole-%s", schedule);
    base_config(&cfg, dir, schedule);
    CHECK_MSG(trace_train(&cfg, &whole, NULL, &res_whole, &err) == PMOE_OK, "%s", err.message);
    CHECK(whole.steps == 100);
    /* the rate reported for each epoch is the schedule's at its first step */
    pmoe_lr_schedule sched = pmoe_lr_schedule_make(&cfg.train, cfg.train.lr, 10, 10);
    int lr_ok = 1;
    for (int e = 0; e < 10; e++) lr_ok &= whole.lr[e] == pmoe_lr_at(&sched, 10 * e);
    CHECK_MSG(lr_ok, "%s: the epoch reports' lr is not the schedule's", schedule);

    volatile sig_atomic_t stop = 0;
    snprintf(dir, sizeof dir, "part-%s", schedule);
    base_config(&cfg, dir, schedule);
    first.stop = &stop;
    first.stop_at = 37;
    pmoe_status s = trace_train(&cfg, &first, NULL, &res, &err);
    CHECK_MSG(s == PMOE_ERR_INTERRUPTED && first.steps == 37, "status %d: %s", s, err.message);
    char path[1100];
    snprintf(path, sizeof path, "%s/%s", tmp, dir);
    pmoe_config saved;
    CHECK(pmoe_checkpoint_load_config(path, &saved, &err) == PMOE_OK);
    s = trace_train(&saved, &rest, path, &res, &err);
    CHECK_MSG(s == PMOE_OK && rest.steps == 63, "status %d, %lld steps: %s", s,
              (long long)rest.steps, err.message);
    CHECK_MSG(trace_resumed_equals(&whole, &first, &rest),
              "%s: resumed losses differ from the uninterrupted run", schedule);
    CHECK(res.test_acc == res_whole.test_acc && res.train_loss == res_whole.train_loss);
    printf("%s schedule: stopped at 37 and resumed = left alone, bit for bit\n", schedule);

    /* The schedule reaches the updates: a constant run without warmup
     * takes other steps from its first update on. */
    static trace flat;
    snprintf(dir, sizeof dir, "flat-%s", schedule);
    base_config(&cfg, dir, "constant");
    pmoe_config_set(&cfg, "train.warmup_epochs=0", NULL);
    CHECK(trace_train(&cfg, &flat, NULL, &res, &err) == PMOE_OK);
    CHECK_MSG(flat.loss[1] != whole.loss[1] && flat.loss[99] != whole.loss[99],
              "%s: the schedule changed nothing", schedule);
}

static void test_resume_router_phase(void) {
    static trace whole, first, rest;
    pmoe_config cfg;
    pmoe_train_result res_whole, res;
    pmoe_error err = {PMOE_OK, ""};
    const char *sets[] = {"train.mode=separate",   "model.experts=2", "model.topl=2",
                          "train.router_epochs=3", "train.epochs=2",  "train.momentum=0",
                          "train.lr_steps=1,2"};
    base_config(&cfg, "sep-whole", "step");
    for (int i = 0; i < 7; i++) pmoe_config_set(&cfg, sets[i], NULL);
    CHECK_MSG(trace_train(&cfg, &whole, NULL, &res_whole, &err) == PMOE_OK, "%s", err.message);
    CHECK(whole.steps == 50 && res_whole.router_steps == 30);
    volatile sig_atomic_t stop = 0;
    base_config(&cfg, "sep", "step");
    for (int i = 0; i < 7; i++) pmoe_config_set(&cfg, sets[i], NULL);
    first.stop = &stop;
    first.stop_at = 17; /* inside the router phase */
    CHECK(trace_train(&cfg, &first, NULL, &res, &err) == PMOE_ERR_INTERRUPTED);
    CHECK(trace_train(&cfg, &rest, res.last_checkpoint, &res, &err) == PMOE_OK);
    CHECK_MSG(trace_resumed_equals(&whole, &first, &rest),
              "separate training: resumed losses differ");
    CHECK(res.test_acc == res_whole.test_acc);
    printf("router phase with a step schedule: resumed = left alone, bit for bit\n");
}

int main(void) {
    snprintf(tmp, sizeof tmp, "/tmp/pmoe-test-schedule-%d", (int)getpid());
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf %s && mkdir -p %s", tmp, tmp);
    if (system(cmd) != 0) return 2;
    test_closed_forms();
    test_config_errors();
    test_resume("cosine");
    test_resume("step");
    test_resume_router_phase();
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp);
    return test_finish("test_schedule");
}
