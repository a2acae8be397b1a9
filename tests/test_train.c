/* test_train.c: end-to-end training through the library API.
 *
 * - joint pMoE learns the theory's data model to >= 95% test accuracy;
 * - separate training runs its router phase, then learns; the CNN learns;
 * - the same seed gives bit-identical per-step losses with 1 and 2 threads,
 *   and a different seed gives different ones;
 * - a NaN in a batch stops training with a message naming the step;
 * - the mosaic runs for both models when Fashion-MNIST is installed. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pmoe/train.h"
#include "test_util.h"

#define MAX_STEPS 4096

typedef struct trace {
    int64_t steps;
    double loss[MAX_STEPS];
    int epochs_seen;
    double last_recall;
    int load_checked, load_wrong; /* epochs whose expert load was checked / wrong */
    double phase_sum, step_sum;   /* the step phases' seconds, the whole steps' seconds */
    int expect_topl;
} trace;

static void on_step(void *user, const pmoe_step_report *r) {
    trace *t = user;
    if (t->steps < MAX_STEPS) t->loss[t->steps] = r->loss;
    t->steps++;
}

static pmoe_status on_epoch(void *user, const pmoe_epoch_report *r, pmoe_error *err) {
    (void)err;
    trace *t = user;
    t->epochs_seen++;
    t->last_recall = r->router_recall;
    for (int i = 0; i < pmoe_step_phase_count(); i++) t->phase_sum += r->phase_seconds[i];
    t->step_sum += r->step_seconds;
    const pmoe_expert_load *ld = &r->load;
    if (ld->experts == 0) return PMOE_OK;
    /* Every expert takes exactly l patches of every test sample. */
    t->load_checked++;
    for (int e = 0; e < ld->experts; e++) {
        int64_t by_position = 0, by_class = 0;
        for (int j = 0; j < ld->positions; j++)
            by_position += ld->by_position[e * ld->positions + j];
        for (int c = 0; c < ld->classes; c++) by_class += ld->by_class[e * ld->classes + c];
        if (by_position != ld->samples * t->expect_topl || by_class != by_position) t->load_wrong++;
    }
    return PMOE_OK;
}

static pmoe_status run(const char *const *sets, int count, trace *t, pmoe_train_result *res,
                       pmoe_error *err) {
    pmoe_config cfg;
    pmoe_config_default(&cfg);
    pmoe_config_set(&cfg, "data.source=synthetic", NULL);
    pmoe_config_set(&cfg, "data.train_size=1000", NULL);
    pmoe_config_set(&cfg, "data.test_size=1000", NULL);
    pmoe_config_set(&cfg, "train.epochs=5", NULL);
    for (int i = 0; i < count; i++) {
        pmoe_status s = pmoe_config_set(&cfg, sets[i], err);
        if (s) return s;
    }
    memset(t, 0, sizeof *t);
    t->expect_topl = cfg.model.topl;
    pmoe_train_callbacks cb = {t, NULL, on_step, on_epoch};
    return pmoe_train(&cfg, &cb, NULL, res, err);
}

int main(void) {
    static trace a, b, c;
    pmoe_train_result res;
    pmoe_error err = {PMOE_OK, ""};

    /* Joint pMoE on the data model. */
    pmoe_status s = run((const char *[]){"train.threads=2"}, 1, &a, &res, &err);
    CHECK_MSG(s == PMOE_OK, "%s", err.message);
    printf("  joint pMoE, synthetic: test %.3f, recall %.3f, %.2f s\n", res.test_acc,
           res.router_recall, res.seconds);
    CHECK_MSG(res.test_acc >= 0.95, "joint pMoE test accuracy %.3f < 0.95", res.test_acc);
    CHECK(res.steps == 5 * 50 && a.steps == res.steps && a.epochs_seen == 5);
    CHECK(res.router_recall >= 0.0 && res.router_recall <= 1.0);
    CHECK(a.loss[res.steps - 1] < a.loss[0]); /* it learned */
    /* The log's expert load: l picks per sample per expert, every epoch. */
    CHECK(a.load_checked == 5 && a.load_wrong == 0);
    /* The phase timers tile the steps: their sum is the measured step time. */
    CHECK_MSG(a.step_sum > 0 && fabs(a.phase_sum - a.step_sum) <= 0.05 * a.step_sum,
              "phases %.6f s against steps %.6f s", a.phase_sum, a.step_sum);
    CHECK(fabs(res.step_seconds - a.step_sum) <= 1e-9 * a.step_sum + 1e-12);

    /* Determinism: same seed, 1 thread against 2 threads, bit for bit. */
    s = run((const char *[]){"train.threads=1"}, 1, &b, &res, &err);
    CHECK_MSG(s == PMOE_OK, "%s", err.message);
    CHECK(a.steps == b.steps && memcmp(a.loss, b.loss, sizeof(double) * (size_t)a.steps) == 0);
    s = run((const char *[]){"train.threads=2", "train.seed=2"}, 2, &c, &res, &err);
    CHECK(s == PMOE_OK && memcmp(a.loss, c.loss, sizeof(double) * (size_t)a.steps) != 0);
    /* ... and for the CNN and separate training, on a batch big enough that the
     * GEMMs are cut into blocks run by both threads. */
    const char *cnn1[] = {"model.type=cnn", "train.batch=256", "train.threads=1"};
    const char *cnn2[] = {"model.type=cnn", "train.batch=256", "train.threads=2"};
    run(cnn1, 3, &b, &res, &err);
    run(cnn2, 3, &c, &res, &err);
    CHECK(b.steps == c.steps && b.steps > 0 &&
          memcmp(b.loss, c.loss, sizeof(double) * (size_t)b.steps) == 0);

    /* Separate training: routers on the linear loss, then experts with G = 1. */
    const char *sep[] = {"train.mode=separate", "model.experts=2", "model.topl=2",
                         "train.router_epochs=3"};
    s = run(sep, 4, &b, &res, &err);
    CHECK_MSG(s == PMOE_OK, "%s", err.message);
    printf("  separate pMoE, synthetic: test %.3f, recall %.3f\n", res.test_acc, res.router_recall);
    CHECK(res.router_steps == 3 * 50 && res.steps == 5 * 50);
    CHECK(b.steps == res.router_steps + res.steps);
    CHECK_MSG(res.test_acc >= 0.95, "separate pMoE test accuracy %.3f", res.test_acc);
    /* The trained routers find the deciding patch among l = 2 of 16. */
    CHECK_MSG(res.router_recall >= 0.9, "separate router recall %.3f", res.router_recall);

    /* The CNN learns too, and has no router to report. */
    s = run((const char *[]){"model.type=cnn"}, 1, &b, &res, &err);
    CHECK_MSG(s == PMOE_OK, "%s", err.message);
    printf("  CNN, synthetic: test %.3f\n", res.test_acc);
    CHECK(res.test_acc >= 0.9 && res.router_recall < 0.0 && res.info.experts == 1 &&
          res.info.topl == 16);

    /* With l = n both gate modes normalise over the same n scores, so they
     * must train alike (up to summation order). */
    const char *renorm[] = {"model.topl=16", "model.gate=renorm", "train.epochs=2"};
    const char *all[] = {"model.topl=16", "model.gate=softmax_all", "train.epochs=2"};
    run(renorm, 3, &b, &res, &err);
    run(all, 3, &c, &res, &err);
    int close = b.steps == c.steps;
    for (int64_t i = 0; i < b.steps && close; i++)
        close = fabs(b.loss[i] - c.loss[i]) <= 1e-5 * fabs(b.loss[i]);
    CHECK_MSG(close, "gate renorm and softmax_all differ at l = n");

    /* A NaN in the data stops the run at that step, naming it. */
    s = run((const char *[]){"train.fault_nan_step=7"}, 1, &b, &res, &err);
    CHECK_MSG(s == PMOE_ERR_NONFINITE && strstr(err.message, "step 7"), "status %d: %s", s,
              err.message);
    CHECK(b.steps == 6);

    /* The real mosaic, when its data is installed. */
    if (access("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz", R_OK) == 0) {
        const char *mosaic[] = {"data.source=mosaic", "data.train_size=200", "data.test_size=100",
                                "train.epochs=2"};
        s = run(mosaic, 4, &b, &res, &err);
        CHECK_MSG(s == PMOE_OK, "%s", err.message);
        CHECK(res.info.patches == 16 && res.info.patch_dim == 784 && res.router_recall >= 0.0);
        const char *mosaic_cnn[] = {"data.source=mosaic", "data.train_size=200",
                                    "data.test_size=100", "train.epochs=2", "model.type=cnn"};
        s = run(mosaic_cnn, 5, &b, &res, &err);
        CHECK_MSG(s == PMOE_OK, "%s", err.message);
        CHECK(res.steps == 20 && res.test_acc >= 0.0);
        /* Plain 10-class IDX: softmax loss, routers trained in class pairs. */
        const char *idx[] = {"data.source=idx", "data.train_size=200",  "data.test_size=100",
                             "train.epochs=2",  "train.mode=separate",  "model.experts=10",
                             "model.topl=4",    "train.router_epochs=2"};
        s = run(idx, 8, &b, &res, &err);
        CHECK_MSG(s == PMOE_OK, "%s", err.message);
        CHECK(res.info.classes == 10 && res.router_steps == 20 && res.router_recall < 0.0);
        CHECK_MSG(res.test_acc > 0.15, "10-class accuracy %.3f is no better than chance",
                  res.test_acc);
    } else {
        printf("  skipped the mosaic part: fashion-mnist is not installed\n");
    }
    return test_finish("test_train");
}
