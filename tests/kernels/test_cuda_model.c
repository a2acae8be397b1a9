/* test_cuda_model.c: whole training steps of the two-layer pMoE and the CNN,
 * and of WRN and WRN-pMoE (sparse and dense-masked), on the CUDA backend
 * against the CPU backend, and GPU determinism.
 *
 * The same config builds the model on both backends (the parameters are
 * initialised on the host from train.seed, so they start identical); the
 * same images and labels go in; forward, loss and backward run through each
 * backend's table. Compared: logits, loss, correct count, scores, picks,
 * gate values, every gradient, and the parameters after an SGD step with
 * momentum. Then two fresh GPU models run three steps each and must agree
 * bit for bit, and pmoe_train runs a short synthetic job on train.device =
 * cuda and on cpu and their per-step losses must agree closely. Without a
 * CUDA device the test exits 77 (skipped). */
#include "core/rng.h"
#include "gpu_test_util.h"
#include "model/model.h"
#include "model/two_layer.h"
#include "pmoe/train.h"

static pmoe_backend *gpu, *cpu;
static uint64_t seed0;

typedef struct setup {
    const char *name;
    const char *sets[8];
    int channels, height, width, patch, classes;
    int64_t batch;
} setup;

static float *host_copy(pmoe_backend *be, const void *src, int64_t count) {
    if (be == cpu) {
        float *p = malloc((size_t)count * 4);
        memcpy(p, src, (size_t)count * 4);
        return p;
    }
    return from_device(be, src, (size_t)count * 4);
}

static double max_abs(const float *x, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) m = fabs(x[i]) > m ? fabs(x[i]) : m;
    return m;
}

/* Compares a tensor of both models, tolerance scaled by the CPU's largest value. */
static void compare(const char *what, pmoe_model *g, pmoe_model *c, const void *gp, const void *cp,
                    int64_t count, double rel) {
    if (!gp || !cp) return;
    float *a = host_copy(g->be, gp, count), *b = host_copy(c->be, cp, count);
    const double top = max_abs(b, count);
    check_close_f(what, a, b, count, rel * (top > 0 ? top : 1), rel);
    free(a);
    free(b);
}

static pmoe_status build(pmoe_backend *be, const setup *u, pmoe_model **m, pmoe_error *err) {
    pmoe_config cfg;
    pmoe_config_default(&cfg);
    for (int i = 0; u->sets[i]; i++) {
        pmoe_status s = pmoe_config_set(&cfg, u->sets[i], err);
        if (s) return s;
    }
    return pmoe_model_create(be, &cfg, u->channels, u->height, u->width, u->patch, u->classes,
                             u->batch, m, err);
}

static void load_batch(pmoe_model *m, const setup *u, const float *images, const int32_t *labels) {
    pmoe_error err = {PMOE_OK, ""};
    const int64_t pixels = u->batch * u->channels * u->height * u->width;
    gpu_die(m->be->copy_in(m->be, m->images, images, (size_t)pixels * 4, &err), &err);
    gpu_die(m->be->copy_in(m->be, m->labels, labels, (size_t)u->batch * 4, &err), &err);
}

static void step(pmoe_model *m, int64_t batch, double *loss, int64_t *correct) {
    pmoe_error err = {PMOE_OK, ""};
    pmoe_model_forward(m, batch);
    gpu_die(pmoe_model_loss(m, 1, loss, correct, &err), &err);
}

static void test_step(const setup *u) {
    printf("%s: B%lld, %dx%dx%d images, p = %d, c = %d\n", u->name, (long long)u->batch,
           u->channels, u->height, u->width, u->patch, u->classes);
    pmoe_error err = {PMOE_OK, ""};
    pmoe_model *g = NULL, *c = NULL;
    gpu_die(build(gpu, u, &g, &err), &err);
    gpu_die(build(cpu, u, &c, &err), &err);
    const int64_t pixels = u->batch * u->channels * u->height * u->width;
    float *images = malloc((size_t)pixels * 4);
    fill_uniform(images, pixels, seed0 + 1, -1, 1);
    int32_t *labels = malloc((size_t)u->batch * 4);
    pmoe_rng r = pmoe_rng_make(seed0, 77);
    for (int64_t b = 0; b < u->batch; b++)
        labels[b] = (int32_t)pmoe_rng_next_below(&r, u->classes == 1 ? 2 : (uint64_t)u->classes);
    load_batch(g, u, images, labels);
    load_batch(c, u, images, labels);

    double gl, cl;
    int64_t gc, cc;
    step(g, u->batch, &gl, &gc);
    step(c, u->batch, &cl, &cc);
    const two_layer_model *gt = two_layer_of(g), *ct = two_layer_of(c);
    const int64_t B = u->batch, n = ct->patch_count, k = ct->experts, l = ct->topl;
    const int64_t rows = B * l, h = ct->hidden, C = c->classes;
    printf("  loss GPU %.9g CPU %.9g, correct %lld / %lld\n", gl, cl, (long long)gc, (long long)cc);
    CHECK_MSG(fabs(gl - cl) <= 1e-5 * (1 + fabs(cl)), "loss %.9g vs %.9g", gl, cl);
    CHECK(gc == cc);
    compare("logits", g, c, g->logits, c->logits, B * C, 1e-5);
    if (ct->has_router) {
        compare("scores", g, c, gt->scores, ct->scores, B * n * k, 1e-5);
        int32_t *gs = from_device(gpu, gt->selected, (size_t)(B * k * l) * 4);
        int64_t differ = 0;
        for (int64_t i = 0; i < B * k * l; i++) differ += gs[i] != ct->selected[i];
        CHECK_MSG(differ == 0, "%lld picks differ", (long long)differ);
        printf("  %-44s n=%-7lld %s\n", "picks", (long long)(B * k * l),
               differ ? "DIFFER" : "identical");
        free(gs);
        compare("gate", g, c, gt->gate, ct->gate, B * k * l, 1e-5);
    }
    compare("hidden", g, c, gt->hidden_out, ct->hidden_out, k * rows * h, 1e-5);
    char what[96];
    for (int i = 0; i < c->param_count; i++) /* every gradient, then every value after SGD */
        if (c->params[i].grad.data && pmoe_model_updates(c, i)) {
            snprintf(what, sizeof what, "%s grad", c->params[i].name);
            compare(what, g, c, g->params[i].grad.data, c->params[i].grad.data,
                    pmoe_tensor_numel(&c->params[i].grad), 1e-4);
        }
    pmoe_model_sgd(g, 0.2f, 0.9f, 1e-4f);
    pmoe_model_sgd(c, 0.2f, 0.9f, 1e-4f);
    for (int i = 0; i < c->param_count; i++) /* running statistics included */
        if (c->params[i].value.data) {
            snprintf(what, sizeof what, "%s after SGD", c->params[i].name);
            compare(what, g, c, g->params[i].value.data, c->params[i].value.data,
                    pmoe_tensor_numel(&c->params[i].value), 1e-5);
        }
    gpu_die(gpu->synchronize(gpu, &err), &err);
    pmoe_model_free(g);
    pmoe_model_free(c);

    /* Determinism: two fresh GPU models, three steps, the same bits. */
    enum { MOST_PARAMS = 128 };
    double losses[2][3];
    float *params[2][MOST_PARAMS] = {{0}};
    int64_t counts[MOST_PARAMS] = {0};
    for (int run = 0; run < 2; run++) {
        gpu_die(build(gpu, u, &g, &err), &err);
        load_batch(g, u, images, labels);
        for (int s = 0; s < 3; s++) {
            int64_t correct;
            step(g, u->batch, &losses[run][s], &correct);
            pmoe_model_sgd(g, 0.2f, 0.9f, 1e-4f);
        }
        for (int i = 0; i < g->param_count && i < MOST_PARAMS; i++)
            if (g->params[i].value.data) {
                counts[i] = pmoe_tensor_numel(&g->params[i].value);
                params[run][i] = from_device(gpu, g->params[i].value.data, (size_t)counts[i] * 4);
            }
        pmoe_model_free(g);
    }
    int same = memcmp(losses[0], losses[1], sizeof losses[0]) == 0;
    for (int i = 0; i < MOST_PARAMS; i++)
        if (params[0][i]) {
            same &= memcmp(params[0][i], params[1][i], (size_t)counts[i] * 4) == 0;
            free(params[0][i]);
            free(params[1][i]);
        }
    printf("  %-44s %s\n", "two GPU runs of 3 steps", same ? "bit-identical" : "DIFFER");
    CHECK_MSG(same, "%s: two GPU runs differ", u->name);
    free(images);
    free(labels);
}

typedef struct trace {
    int64_t steps;
    double loss[4096];
    char backend[sizeof(((pmoe_run_info *)0)->backend)];
} trace;

static void on_start(void *user, const pmoe_run_info *info) {
    trace *t = user;
    snprintf(t->backend, sizeof t->backend, "%s", info->backend);
}
static void on_step(void *user, const pmoe_step_report *r) {
    trace *t = user;
    if (t->steps < 4096) t->loss[t->steps] = r->loss;
    t->steps++;
}

static void test_train(const char *model) {
    printf("pmoe_train, %s on the synthetic data, cuda against cpu\n", model);
    trace *t[2];
    pmoe_train_result res[2];
    const char *devices[2] = {"train.device=cuda", "train.device=cpu"};
    for (int i = 0; i < 2; i++) {
        t[i] = calloc(1, sizeof(trace));
        pmoe_config cfg;
        pmoe_config_default(&cfg);
        char type[64];
        snprintf(type, sizeof type, "model.type=%s", model);
        const char *sets[] = {"data.source=synthetic",
                              "data.train_size=400",
                              "data.test_size=200",
                              "train.epochs=2",
                              "train.batch=20",
                              type,
                              devices[i]};
        pmoe_error err = {PMOE_OK, ""};
        for (size_t s = 0; s < sizeof sets / sizeof *sets; s++)
            gpu_die(pmoe_config_set(&cfg, sets[s], &err), &err);
        pmoe_train_callbacks cb = {t[i], on_start, on_step, NULL};
        pmoe_status s = pmoe_train(&cfg, &cb, NULL, &res[i], &err);
        CHECK_MSG(s == PMOE_OK, "%s: %s", devices[i], err.message);
    }
    printf("  backends %s / %s, test accuracy %.3f / %.3f, %lld steps\n", t[0]->backend,
           t[1]->backend, res[0].test_acc, res[1].test_acc, (long long)t[0]->steps);
    CHECK(strncmp(t[0]->backend, "cuda:0", 6) == 0 && strcmp(t[1]->backend, "cpu") == 0);
    CHECK(t[0]->steps == t[1]->steps && t[0]->steps > 0);
    double worst = 0;
    for (int64_t s = 0; s < t[0]->steps && s < 4096; s++) {
        const double e = fabs(t[0]->loss[s] - t[1]->loss[s]) / (1e-3 + fabs(t[1]->loss[s]));
        worst = e > worst ? e : worst;
    }
    printf("  worst relative loss difference over the run %.2e (limit 1e-3)\n", worst);
    CHECK(worst <= 1e-3);
    CHECK(fabs(res[0].test_acc - res[1].test_acc) <= 0.02);
    free(t[0]);
    free(t[1]);
}

int main(void) {
    gpu = gpu_or_skip("test_cuda_model");
    seed0 = test_seed();
    pmoe_error err = {PMOE_OK, ""};
    gpu_die(pmoe_cpu_backend_create(0, &cpu, &err), &err);
    const setup setups[] = {
        {"joint pMoE, binary, n64 l16 k8 d640",
         {"model.experts=8", "model.topl=16", "model.hidden=40", "model.router_init_std=0.1", NULL},
         40,
         32,
         32,
         4,
         1,
         128},
        {"joint pMoE, 10 classes, softmax_all, trained output",
         {"model.experts=4", "model.topl=6", "model.hidden=40", "model.gate=softmax_all",
          "model.train_output=1", "model.router_init_std=0.1", NULL},
         1,
         28,
         28,
         7,
         10,
         33},
        {"CNN, binary, n64 d640",
         {"model.type=cnn", "model.hidden=40", NULL},
         40,
         32,
         32,
         4,
         1,
         128},
        {"CNN, 10 classes", {"model.type=cnn", "model.hidden=24", NULL}, 1, 28, 28, 7, 10, 20},
        /* the deep models (patch: on group 3's map, a quarter of the input) */
        {"WRN, w = 2", {"model.type=wrn", "model.width=2", NULL}, 3, 32, 32, 1, 10, 32},
        {"WRN-pMoE sparse, 1x1 patches, k4 l16, 1x1 experts",
         {"model.type=wrn_pmoe", "model.width=2", "model.experts=4", "model.topl=16",
          "model.expert_kernel=1", NULL},
         3,
         32,
         32,
         1,
         10,
         32},
        {"WRN-pMoE sparse, 4x4 patches, k8 l2, 3x3 experts",
         {"model.type=wrn_pmoe", "model.width=1", "model.experts=8", "model.topl=2",
          "model.expert_kernel=3", NULL},
         1,
         64,
         64,
         4,
         10,
         16},
        {"WRN-pMoE dense-masked, 3x3 experts",
         {"model.type=wrn_pmoe", "model.width=1", "model.experts=4", "model.topl=4",
          "model.moe_impl=dense_masked", NULL},
         1,
         32,
         32,
         2,
         10,
         16},
    };
    for (size_t i = 0; i < sizeof setups / sizeof *setups; i++) test_step(&setups[i]);
    test_train("pmoe");
    test_train("cnn");
    pmoe_backend_destroy(cpu);
    pmoe_backend_destroy(gpu);
    return test_finish("test_cuda_model");
}
