/* test_flops.c: the FLOP counts of the two-layer and deep models
 * (model/flops.h).
 *
 * Two-layer: every layer of two shapes against numbers worked out by hand
 * from the formulas in flops.c (the working is in the comments); executed >=
 * useful and dense-masked >= executed over a grid of shapes; a pMoE with
 * k = 1 and l = n against the CNN, layer by layer; and the cost shape read
 * off built models. Deep: every row of a built WRN (1 x 8 x 8) and the pMoE
 * layer's rows of a built WRN-pMoE (1 x 16 x 16, 2x2 patches, 3x3 experts)
 * by hand; the dense-masked layer's experts at n / l times the sparse
 * layer's; every other WRN-pMoE row equal to its WRN's; executed >= useful. */
#include <math.h>
#include <string.h>

#include "backend/backend.h"
#include "model/flops.h"
#include "model/two_layer.h"
#include "test_util.h"

#define U PMOE_FLOPS_USEFUL
#define E PMOE_FLOPS_EXECUTED
#define D PMOE_FLOPS_DENSE_MASKED

static const pmoe_layer_flops *layer(const pmoe_flop_report *r, const char *name) {
    const pmoe_layer_flops *L = pmoe_flops_layer(r, name);
    CHECK_MSG(L != NULL, "no layer %s", name);
    static const pmoe_layer_flops none;
    return L ? L : &none;
}

/* forward then backward, each useful / executed / dense-masked */
static void expect_layer(const pmoe_flop_report *r, const char *name, double fu, double fe,
                         double fd, double bu, double be, double bd) {
    const pmoe_layer_flops *L = layer(r, name);
    const double want[6] = {fu, fe, fd, bu, be, bd};
    const double got[6] = {L->forward[U],  L->forward[E],  L->forward[D],
                           L->backward[U], L->backward[E], L->backward[D]};
    for (int i = 0; i < 6; i++)
        CHECK_MSG(fabs(got[i] - want[i]) <= 1e-9 * (1 + fabs(want[i])),
                  "%s %s %s: got %.10g, want %.10g", name, i < 3 ? "forward" : "backward",
                  pmoe_flop_kind_name((pmoe_flop_kind)(i % 3)), got[i], want[i]);
}

static void test_mosaic_shape(void) {
    /* The paper's mosaic model: n = 16, d = 784, k = 8, l = 6, h = 5 (m = 40),
     * c = 1, renormalised gate, joint training, plain SGD, B = 20. */
    pmoe_two_layer_cost_shape s = {1, 16, 784, 8, 6, 5, 1, PMOE_GATE_RENORM, 1, 0, 0, 0, 0};
    pmoe_flop_report r;
    pmoe_flops_two_layer(&s, 20, &r);
    CHECK(r.layer_count == 7);
    expect_layer(&r, "patch_extract", 0, 0, 0, 0, 0, 0);
    /* router: 2 n k d = 2*16*8*784 = 200704; useful backward 2 k l d = 2*8*6*784 = 75264 */
    expect_layer(&r, "router", 200704, 200704, 200704, 75264, 200704, 200704);
    /* gate: 4 k l = 192 forward; backward 4 k l + 2 l m + k l = 192 + 480 + 48 = 720;
     * dense-masked 192 + 2 n m + k n = 192 + 1280 + 128 = 1600 */
    expect_layer(&r, "gate_topl", 192, 192, 192, 720, 720, 1600);
    expect_layer(&r, "dispatch", 0, 0, 0, 0, 0, 0);
    /* experts: 2 l m d = 2*6*40*784 = 376320; dense 2 n m d = 2*16*40*784 = 1003520 */
    expect_layer(&r, "experts", 376320, 376320, 1003520, 376320, 376320, 1003520);
    /* combine forward c (2 l m + 2 k l) + c = 480 + 96 + 1 = 577; dense 1280 + 256 + 1 = 1537.
     * backward useful 2 m c + l m + k l = 80 + 240 + 48 = 368; executed l m (2c + 2) =
     * 240*4 = 960; dense n m (2c + 2) = 640*4 = 2560 */
    expect_layer(&r, "combine", 577, 577, 1537, 368, 960, 2560);
    expect_layer(&r, "loss", 4, 4, 4, 4, 4, 4);
    /* update: k d + m d = 6272 + 31360 = 37632 parameters, 2 useful, 4 executed each */
    CHECK(r.update[U] == 75264 && r.update[E] == 150528 && r.update[D] == 150528);
    /* train per sample, useful: 200704 + 75264 + 192 + 720 + 2*376320 + 577 + 368 + 8
     * + 75264/20 = 1030473 + 3763.2 */
    CHECK_MSG(fabs(pmoe_flops_train_per_sample(&r, U) - 1034236.2) < 1e-6, "%.9g",
              pmoe_flops_train_per_sample(&r, U));
    /* inference: 200704 + 192 + 376320 + 577 (no loss) = 577793 */
    CHECK(pmoe_flops_infer_per_sample(&r, U) == 577793);
    CHECK(pmoe_flops_infer_per_sample(&r, E) == 577793);
    CHECK(pmoe_flops_infer_per_sample(&r, D) == 200704 + 192 + 1003520 + 1537);
    /* the router's backward folded into the fused experts' backward: executed = useful */
    s.router_over_picks = 1;
    pmoe_flops_two_layer(&s, 20, &r);
    expect_layer(&r, "router", 200704, 200704, 200704, 75264, 75264, 200704);
    s.router_over_picks = 0;

    /* its CNN: k = 1, l = n = 16, h = 40 */
    pmoe_two_layer_cost_shape cnn = {0, 16, 784, 1, 16, 40, 1, PMOE_GATE_ONES, 0, 0, 0, 0, 0};
    pmoe_flops_two_layer(&cnn, 20, &r);
    expect_layer(&r, "router", 0, 0, 0, 0, 0, 0);
    expect_layer(&r, "gate_topl", 0, 0, 0, 0, 0, 0);
    expect_layer(&r, "experts", 1003520, 1003520, 1003520, 1003520, 1003520, 1003520);
    /* combine: c (2 n m + 2 n) + c = 1280 + 32 + 1 = 1313; backward useful 2 m + n m + n =
     * 80 + 640 + 16 = 736, executed n m * 4 = 2560 */
    expect_layer(&r, "combine", 1313, 1313, 1313, 736, 2560, 2560);
    CHECK(r.update[U] == 2 * 31360 && r.update[E] == 4 * 31360);
}

static void test_multiclass_shape(void) {
    /* n = 64, d = 12, k = 4, l = 16, h = 3 (m = 12), c = 10, softmax over all n,
     * trained output weights, momentum and weight decay, B = 128. */
    pmoe_two_layer_cost_shape s = {1, 64, 12, 4, 16, 3, 10, PMOE_GATE_SOFTMAX_ALL, 1, 1, 1, 1, 0};
    pmoe_flop_report r;
    pmoe_flops_two_layer(&s, 128, &r);
    /* router 2 n k d = 2*64*4*12 = 6144, useful backward too (softmax over all n) */
    expect_layer(&r, "router", 6144, 6144, 6144, 6144, 6144, 6144);
    /* gate forward 4 k n = 1024; backward 4 k l + 4 k n + 2 l m + k l = 256 + 1024 + 384 + 64 =
     * 1728; dense 256 + 1024 + 2 n m + k n = 1280 + 1536 + 256 = 3072 */
    expect_layer(&r, "gate_topl", 1024, 1024, 1024, 1728, 1728, 3072);
    /* experts 2 l m d = 2*16*12*12 = 4608; dense 2*64*12*12 = 18432 */
    expect_layer(&r, "experts", 4608, 4608, 18432, 4608, 4608, 18432);
    /* combine forward 10 (2*16*12 + 2*4*16) + 10 = 5130; dense 10 (1536 + 512) + 10 = 20490.
     * backward useful: 2 m c + l m + k l = 240 + 192 + 64, plus dL/da 2 l m c + l m + m c / B =
     * 3840 + 192 + 120/128: 4528.9375. executed: l m (2c + 2) + 3 l m c + m c / B = 4224 + 5760
     * + 0.9375; dense: 768*22 + 23040 + 0.9375 */
    expect_layer(&r, "combine", 5130, 5130, 20490, 4528.9375, 9984.9375, 39936.9375);
    expect_layer(&r, "loss", 40, 40, 40, 40, 40, 40);
    /* update: k d + m d + m c = 48 + 144 + 120 = 312 parameters; useful 2 + 2 (decay) + 2
     * (momentum) = 6 each, executed 4 + 2 = 6 each */
    CHECK(r.update[U] == 1872 && r.update[E] == 1872 && r.update[D] == 1872);
    CHECK(r.batch == 128);
    /* train per sample = every forward and backward + update / B */
    double sum = 0;
    for (int i = 0; i < r.layer_count; i++) sum += r.layers[i].forward[E] + r.layers[i].backward[E];
    CHECK(fabs(pmoe_flops_train_per_sample(&r, E) - (sum + 1872.0 / 128)) < 1e-9);
}

static void test_orderings(void) {
    /* executed >= useful and dense-masked >= executed, per layer and in total */
    const int ns[] = {4, 16, 64}, ks[] = {1, 2, 8}, cs[] = {1, 10};
    const pmoe_gate_mode gates[] = {PMOE_GATE_RENORM, PMOE_GATE_SOFTMAX_ALL, PMOE_GATE_ONES};
    int bad = 0, cases = 0;
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 3; b++)
            for (int c = 0; c < 2; c++)
                for (int g = 0; g < 3; g++)
                    for (int l = 1; l <= ns[a]; l *= 2)
                        for (int flags = 0; flags < 8; flags++) {
                            pmoe_two_layer_cost_shape s = {
                                1,         ns[a],     49,
                                ks[b],     l,         3,
                                cs[c],     gates[g],  gates[g] != PMOE_GATE_ONES,
                                flags & 1, flags & 2, flags & 4,
                                0};
                            pmoe_flop_report r;
                            pmoe_flops_two_layer(&s, 1 + flags * 7, &r);
                            cases++;
                            for (int i = 0; i < r.layer_count; i++) {
                                const pmoe_layer_flops *L = &r.layers[i];
                                bad += L->forward[E] < L->forward[U] ||
                                       L->forward[D] < L->forward[E];
                                bad += L->backward[E] < L->backward[U] ||
                                       L->backward[D] < L->backward[E];
                            }
                            bad += pmoe_flops_train_per_sample(&r, E) <
                                   pmoe_flops_train_per_sample(&r, U);
                            bad += pmoe_flops_infer_per_sample(&r, D) <
                                   pmoe_flops_infer_per_sample(&r, E);
                            bad += r.update[E] < r.update[U];
                        }
    CHECK_MSG(bad == 0, "%d orderings broken in %d shapes", bad, cases);
}

static void test_pmoe_with_one_expert_is_the_cnn(void) {
    /* k = 1, l = n: every layer but router and gate_topl costs what the CNN's does, in
     * every kind; the update differs by the router's k d parameters (when it learns). */
    const pmoe_gate_mode gates[] = {PMOE_GATE_RENORM, PMOE_GATE_SOFTMAX_ALL, PMOE_GATE_ONES};
    for (int g = 0; g < 3; g++)
        for (int train_output = 0; train_output < 2; train_output++) {
            const int learn = gates[g] != PMOE_GATE_ONES;
            pmoe_two_layer_cost_shape p = {1,        16,    784,          1, 16, 40, 2,
                                           gates[g], learn, train_output, 0, 0,  0};
            pmoe_two_layer_cost_shape c = {0, 16,           784, 1, 16, 40, 2, PMOE_GATE_ONES,
                                           0, train_output, 0,   0, 0};
            pmoe_flop_report rp, rc;
            pmoe_flops_two_layer(&p, 32, &rp);
            pmoe_flops_two_layer(&c, 32, &rc);
            CHECK(rp.layer_count == rc.layer_count);
            double extra[PMOE_FLOPS_KINDS] = {0};
            for (int i = 0; i < rp.layer_count; i++) {
                const pmoe_layer_flops *a = &rp.layers[i], *b = &rc.layers[i];
                CHECK(strcmp(a->name, b->name) == 0);
                const int routing = !strcmp(a->name, "router") || !strcmp(a->name, "gate_topl");
                for (int k = 0; k < PMOE_FLOPS_KINDS; k++) {
                    if (routing) {
                        extra[k] += a->forward[k] + a->backward[k];
                        CHECK(b->forward[k] == 0 && b->backward[k] == 0);
                    } else {
                        CHECK_MSG(a->forward[k] == b->forward[k] &&
                                      a->backward[k] == b->backward[k],
                                  "%s %s differs: %g+%g vs %g+%g", a->name,
                                  pmoe_flop_kind_name((pmoe_flop_kind)k), a->forward[k],
                                  a->backward[k], b->forward[k], b->backward[k]);
                    }
                }
            }
            for (int k = 0; k < PMOE_FLOPS_KINDS; k++) {
                const double per_param = k == U ? 2 : 4;
                CHECK(rp.update[k] - rc.update[k] == (learn ? 784 * per_param : 0));
                const double want = extra[k] + (learn ? 784 * per_param / 32 : 0);
                CHECK_MSG(fabs(pmoe_flops_train_per_sample(&rp, k) -
                               pmoe_flops_train_per_sample(&rc, k) - want) < 1e-6,
                          "gate %d: train difference is not router + gate + router update", g);
            }
        }
}

static void test_shape_of_models(void) {
    pmoe_backend *be;
    pmoe_error err;
    CHECK(pmoe_cpu_backend_create(1, &be, &err) == PMOE_OK);
    pmoe_config cfg;
    pmoe_config_default(&cfg);
    cfg.model.experts = 4;
    cfg.model.topl = 3;
    cfg.model.hidden = 12;
    cfg.train.momentum = 0.9;
    pmoe_model *m = NULL;
    CHECK(pmoe_model_create(be, &cfg, 2, 8, 8, 2, 1, 5, &m, &err) == PMOE_OK);
    if (m) {
        pmoe_two_layer_cost_shape s = pmoe_two_layer_cost_shape_of(m, &cfg.train);
        CHECK(s.has_router && s.patches == 16 && s.dim == 8 && s.experts == 4 && s.topl == 3);
        CHECK(s.hidden == 3 && s.classes == 1 && s.gate == PMOE_GATE_RENORM && s.learn_router);
        CHECK(!s.train_output && s.momentum && !s.weight_decay);
        /* the CPU backend's fused ops run, with the renormalised gate */
        CHECK(s.router_over_picks == two_layer_of(m)->gathered && two_layer_of(m)->gathered);
        pmoe_model_free(m);
    }
    cfg.model.type = PMOE_MODEL_CNN;
    CHECK(pmoe_model_create(be, &cfg, 2, 8, 8, 2, 1, 5, &m, &err) == PMOE_OK);
    if (m) {
        pmoe_two_layer_cost_shape s = pmoe_two_layer_cost_shape_of(m, &cfg.train);
        CHECK(!s.has_router && s.experts == 1 && s.topl == 16 && s.hidden == 12 && !s.learn_router);
        pmoe_model_free(m);
    }
    cfg.model.type = PMOE_MODEL_PMOE;
    cfg.train.mode = PMOE_TRAIN_SEPARATE; /* the expert phase: G = 1, the router frozen */
    cfg.model.experts = 2;
    CHECK(pmoe_model_create(be, &cfg, 2, 8, 8, 2, 1, 5, &m, &err) == PMOE_OK);
    if (m) {
        pmoe_two_layer_cost_shape s = pmoe_two_layer_cost_shape_of(m, &cfg.train);
        CHECK(s.gate == PMOE_GATE_ONES && !s.learn_router);
        pmoe_flop_report r;
        pmoe_flops_two_layer(&s, 5, &r);
        CHECK(layer(&r, "router")->backward[E] == 0 && layer(&r, "gate_topl")->forward[E] == 0);
        pmoe_model_free(m);
    }
    pmoe_backend_destroy(be);
}

/* ---- the deep models ---- */

/* A deep model on 1 x side x side inputs of 10 classes, plain SGD. */
static pmoe_model *deep_model(pmoe_backend *be, const char *type, int side, int patch,
                              const char *impl, pmoe_config *cfg) {
    pmoe_config_default(cfg);
    const char *sets[] = {type,           "model.width=1",         "model.experts=4",
                          "model.topl=2", "model.expert_kernel=3", "model.gate=renorm",
                          impl,           "train.momentum=0",      "train.weight_decay=0"};
    pmoe_error err;
    for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++)
        if (pmoe_config_set(cfg, sets[i], &err)) {
            CHECK_MSG(0, "%s: %s", sets[i], err.message);
            return NULL;
        }
    pmoe_model *m = NULL;
    pmoe_status s = pmoe_config_check(cfg, &err);
    if (!s) s = pmoe_model_create(be, cfg, 1, side, side, patch, 10, 2, &m, &err);
    CHECK_MSG(s == PMOE_OK, "%s %dx%d: %s", type, side, side, err.message);
    return s ? NULL : m;
}

/* forward, backward (useful, executed: dense-masked = executed outside the
 * pMoE layer), and the evaluation forward (-1: the same as forward) */
typedef struct deep_row {
    const char *name;
    double fu, fe, bu, be, eval;
} deep_row;

static void expect_deep_row(const pmoe_flop_report *r, const deep_row *w) {
    const pmoe_layer_flops *L = layer(r, w->name);
    const double eval = w->eval < 0 ? w->fu : w->eval;
    const double want[7] = {w->fu, w->fe, w->fe, w->bu, w->be, w->be, eval};
    const double got[7] = {L->forward[U],
                           L->forward[E],
                           L->forward[D],
                           L->backward[U],
                           L->backward[E],
                           L->backward[D],
                           pmoe_layer_flops_infer(L, U)};
    static const char *const what[7] = {"forward useful",  "forward executed",  "forward dense",
                                        "backward useful", "backward executed", "backward dense",
                                        "eval forward"};
    for (int i = 0; i < 7; i++)
        CHECK_MSG(got[i] == want[i], "%s %s: got %.10g, want %.10g", w->name, what[i], got[i],
                  want[i]);
}

static void test_wrn_shape(pmoe_backend *be) {
    /* WRN w = 1 on 1 x 8 x 8: conv0 16 (8x8); group 1 16 ch (8x8, no shortcut: the shapes
     * match); group 2 32 ch (4x4); group 3 64 ch (2x2); head 64 -> 10. Per element: batch
     * norm 7 / 12 / eval 3, ReLU 1 / 1, add useful 1 / 1, executed 4 / 6, pool 1 / 1. */
    pmoe_config cfg;
    pmoe_model *m = deep_model(be, "model.type=wrn", 8, 1, "model.moe_impl=sparse", &cfg);
    if (!m) return;
    pmoe_flop_report r;
    pmoe_flops_deep(m, &cfg.train, 2, &r);
    static const deep_row rows[] = {
        /* 2 K C R S P Q = 2*16*1*9*64; the images need no gradient: backward = dW only */
        {"conv0", 18432, 18432, 18432, 18432, -1},
        /* 16 x 8 x 8 = 1024 values */
        {"group1.bn1", 7168, 7168, 12288, 12288, 3072},
        {"group1.relu1", 1024, 1024, 1024, 1024, -1},
        {"group1.conv1", 294912, 294912, 589824, 589824, -1}, /* 2*16*16*9*64, x2 back */
        {"group1.bn2", 7168, 7168, 12288, 12288, 3072},
        {"group1.relu2", 1024, 1024, 1024, 1024, -1},
        {"group1.conv2", 294912, 294912, 589824, 589824, -1},
        {"group1.add", 1024, 4096, 1024, 6144, -1},
        {"group2.bn1", 7168, 7168, 12288, 12288, 3072},
        {"group2.relu1", 1024, 1024, 1024, 1024, -1},
        {"group2.conv1", 147456, 147456, 294912, 294912, -1}, /* 2*32*16*9*16 */
        /* 32 x 4 x 4 = 512 values */
        {"group2.bn2", 3584, 3584, 6144, 6144, 1536},
        {"group2.relu2", 512, 512, 512, 512, -1},
        {"group2.conv2", 294912, 294912, 589824, 589824, -1}, /* 2*32*32*9*16 */
        {"group2.shortcut", 16384, 16384, 32768, 32768, -1},  /* 2*32*16*16 */
        {"group2.add", 512, 2048, 512, 3072, -1},
        {"group3.bn1", 3584, 3584, 6144, 6144, 1536},
        {"group3.relu1", 512, 512, 512, 512, -1},
        {"group3.conv1", 147456, 147456, 294912, 294912, -1}, /* 2*64*32*9*4 */
        /* 64 x 2 x 2 = 256 values */
        {"group3.bn2", 1792, 1792, 3072, 3072, 768},
        {"group3.relu2", 256, 256, 256, 256, -1},
        {"group3.conv2", 294912, 294912, 589824, 589824, -1}, /* 2*64*64*9*4 */
        {"group3.shortcut", 16384, 16384, 32768, 32768, -1},  /* 2*64*32*4 */
        {"group3.add", 256, 1024, 256, 1536, -1},
        {"head.bn", 1792, 1792, 3072, 3072, 768},
        {"head.relu", 256, 256, 256, 256, -1},
        {"head.pool", 256, 256, 256, 256, -1},
        /* 2 I O + O = 1280 + 10; back 2 I O + O + 2 I O */
        {"head.fc", 1290, 1290, 2570, 2570, -1},
        {"loss", 40, 40, 40, 40, -1},
    };
    const int count = (int)(sizeof rows / sizeof rows[0]);
    CHECK_MSG(r.layer_count == count, "%d rows, want %d", r.layer_count, count);
    double train = 0, infer = 0;
    for (int i = 0; i < count; i++) {
        expect_deep_row(&r, &rows[i]);
        if (i < r.layer_count) CHECK_MSG(!strcmp(r.layers[i].name, rows[i].name), "row %d", i);
        train += rows[i].fu + rows[i].bu;
        if (strcmp(rows[i].name, "loss")) infer += rows[i].eval < 0 ? rows[i].fu : rows[i].eval;
    }
    /* trainable parameters: conv0 144; group 1 32 + 2304 + 32 + 2304; group 2 32 + 4608 +
     * 64 + 9216 + 512; group 3 64 + 18432 + 128 + 36864 + 2048; head 128 + 650 = 77562
     * (batch norm's running statistics are not updated) */
    CHECK_MSG(r.update[U] == 2 * 77562.0 && r.update[E] == 4 * 77562.0, "update %.10g %.10g",
              r.update[U], r.update[E]);
    CHECK(fabs(pmoe_flops_train_per_sample(&r, U) - (train + 2 * 77562.0 / 2)) < 1e-6);
    CHECK(pmoe_flops_infer_per_sample(&r, U) == infer);
    CHECK(pmoe_flops_infer_per_sample(&r, D) == pmoe_flops_infer_per_sample(&r, E));
    pmoe_model_free(m);
}

/* Executed >= useful in every row and in total; dense-masked >= executed in total. */
static void check_orderings(const pmoe_flop_report *r, const char *what) {
    int bad = 0;
    for (int i = 0; i < r->layer_count; i++) {
        const pmoe_layer_flops *L = &r->layers[i];
        bad += L->forward[E] < L->forward[U] || L->backward[E] < L->backward[U];
        bad += pmoe_layer_flops_infer(L, E) < pmoe_layer_flops_infer(L, U);
    }
    CHECK_MSG(bad == 0, "%s: %d rows with executed < useful", what, bad);
    CHECK(pmoe_flops_train_per_sample(r, E) >= pmoe_flops_train_per_sample(r, U));
    CHECK(pmoe_flops_train_per_sample(r, D) >= pmoe_flops_train_per_sample(r, E));
    CHECK(pmoe_flops_infer_per_sample(r, D) >= pmoe_flops_infer_per_sample(r, E));
}

static void test_wrn_pmoe_shape(pmoe_backend *be) {
    /* WRN-pMoE w = 1 on 1 x 16 x 16: the pMoE layer on group 3's 64 x 4 x 4 map with 2 x 2
     * patches: n = 4, d = 64*4 = 256, k = 4 experts of e = 16 channels, 3x3 kernels, l = 2,
     * renormalised gate (learnt). Output values per patch k e p^2 = 256. */
    pmoe_config cfg, dcfg, wcfg;
    pmoe_model *m = deep_model(be, "model.type=wrn_pmoe", 16, 2, "model.moe_impl=sparse", &cfg);
    pmoe_model *dm =
        deep_model(be, "model.type=wrn_pmoe", 16, 2, "model.moe_impl=dense_masked", &dcfg);
    pmoe_model *w = deep_model(be, "model.type=wrn", 16, 2, "model.moe_impl=sparse", &wcfg);
    if (!m || !dm || !w) return;
    static pmoe_flop_report r, dr, wr;
    pmoe_flops_deep(m, &cfg.train, 2, &r);
    pmoe_flops_deep(dm, &dcfg.train, 2, &dr);
    pmoe_flops_deep(w, &wcfg.train, 2, &wr);

    /* router: forward 2 n k d = 8192; backward useful 2 k l d + 2 k l d = 8192; executed
     * two dense GEMMs 4 n k d = 16384 + the fold onto the map 3 n d = 3072 */
    expect_layer(&r, "group3.moe.router", 8192, 8192, 8192, 8192, 19456, 19456);
    /* gate: 4 k l = 32; backward 32 + dL/dG 2 l (k e p^2) = 1024; dense 32 + 2 n 256 = 2048 */
    expect_layer(&r, "group3.moe.gate_topl", 32, 32, 32, 1056, 1056, 2080);
    /* dispatch: sparse a gather (0), back k l d = 2048; dense: the mask k n d = 4096, back
     * 2 k n d = 8192 */
    expect_layer(&r, "group3.moe.dispatch", 0, 0, 4096, 2048, 2048, 8192);
    /* experts: the convolution per patch (all k experts) 2 k e C r^2 p^2 = 2*4*16*64*9*4 =
     * 294912. forward k l d (7 + 1) + 294912 l = 16384 + 589824 = 606208; dense (l -> n)
     * 32768 + 1179648 = 1212416. backward k l d (12 + 1) + 2*294912 l = 26624 + 1179648 =
     * 1206272; dense 53248 + 2359296 = 2412544. evaluation: k l d (3 + 1) + 589824 */
    expect_layer(&r, "group3.moe.experts", 606208, 606208, 1212416, 1206272, 1206272, 2412544);
    CHECK(pmoe_layer_flops_infer(layer(&r, "group3.moe.experts"), U) == 8192 + 589824);
    CHECK(pmoe_layer_flops_infer(layer(&r, "group3.moe.experts"), D) == 16384 + 1179648);
    /* combine: the gate's scale l 256 = 512; dense n 256 = 1024, back 2 n 256 = 2048 */
    expect_layer(&r, "group3.moe.combine", 512, 512, 1024, 512, 512, 2048);

    /* the dense-masked layer executes its own column; its experts n / l = 2 times the
     * sparse layer's, forward, backward and evaluation */
    const pmoe_layer_flops *se = layer(&r, "group3.moe.experts");
    const pmoe_layer_flops *de = layer(&dr, "group3.moe.experts");
    CHECK(de->forward[E] == 2 * se->forward[E] && de->backward[E] == 2 * se->backward[E]);
    CHECK(pmoe_layer_flops_infer(de, E) == 2 * pmoe_layer_flops_infer(se, E));
    for (int i = 0; i < dr.layer_count; i++) {
        const pmoe_layer_flops *L = &dr.layers[i];
        for (int k = 0; k < PMOE_FLOPS_KINDS; k++) {
            const pmoe_flop_kind want = k == E ? D : (pmoe_flop_kind)k;
            const pmoe_layer_flops *S = layer(&r, L->name);
            CHECK_MSG(L->forward[k] == S->forward[want] && L->backward[k] == S->backward[want],
                      "%s %s", L->name, pmoe_flop_kind_name((pmoe_flop_kind)k));
        }
    }

    /* every other row is the WRN's, in every kind; the WRN's own rows are the five
     * group 3 layers the pMoE layer replaces */
    int moe_rows = 0;
    for (int i = 0; i < r.layer_count; i++) {
        const pmoe_layer_flops *a = &r.layers[i], *b = pmoe_flops_layer(&wr, a->name);
        if (!strncmp(a->name, "group3.moe.", 11)) {
            moe_rows++;
            CHECK_MSG(b == NULL, "%s in the WRN", a->name);
            continue;
        }
        CHECK_MSG(b != NULL, "%s: not in the WRN", a->name);
        if (!b) continue;
        for (int k = 0; k < PMOE_FLOPS_KINDS; k++)
            CHECK_MSG(a->forward[k] == b->forward[k] && a->backward[k] == b->backward[k] &&
                          pmoe_layer_flops_infer(a, (pmoe_flop_kind)k) ==
                              pmoe_layer_flops_infer(b, (pmoe_flop_kind)k),
                      "%s %s differs from the WRN's", a->name,
                      pmoe_flop_kind_name((pmoe_flop_kind)k));
    }
    CHECK(moe_rows == 5);
    pmoe_layer_flops moe, replaced;
    CHECK(pmoe_flops_unshared(&r, &wr, "moe", &moe) == 5);
    CHECK(pmoe_flops_unshared(&wr, &r, "replaced", &replaced) == 5);
    const char *const gone[5] = {"group3.bn2", "group3.relu2", "group3.conv2", "group3.shortcut",
                                 "group3.add"};
    double replaced_train = 0;
    for (int i = 0; i < 5; i++) {
        CHECK_MSG(pmoe_flops_layer(&r, gone[i]) == NULL, "%s in the WRN-pMoE", gone[i]);
        replaced_train += pmoe_layer_flops_train(layer(&wr, gone[i]), E);
    }
    CHECK(pmoe_layer_flops_train(&replaced, E) == replaced_train);
    CHECK(pmoe_layer_flops_train(&moe, U) ==
          8192 + 8192 + 32 + 1056 + 0 + 2048 + 606208 + 1206272 + 512 + 512);
    /* so the whole models differ by those rows and the update alone */
    const double common_p = pmoe_flops_train_per_sample(&r, E) - pmoe_layer_flops_train(&moe, E) -
                            r.update[E] / 2;
    const double common_w = pmoe_flops_train_per_sample(&wr, E) -
                            pmoe_layer_flops_train(&replaced, E) - wr.update[E] / 2;
    CHECK_MSG(fabs(common_p - common_w) < 1e-6 * common_w, "%.10g vs %.10g", common_p, common_w);

    check_orderings(&r, "wrn_pmoe sparse");
    check_orderings(&dr, "wrn_pmoe dense_masked");
    check_orderings(&wr, "wrn");
    pmoe_model_free(m);
    pmoe_model_free(dm);
    pmoe_model_free(w);
}

static void test_deep(void) {
    pmoe_backend *be;
    pmoe_error err;
    CHECK(pmoe_cpu_backend_create(1, &be, &err) == PMOE_OK);
    test_wrn_shape(be);
    test_wrn_pmoe_shape(be);
    pmoe_backend_destroy(be);
}

int main(void) {
    test_mosaic_shape();
    test_multiclass_shape();
    test_orderings();
    test_pmoe_with_one_expert_is_the_cnn();
    test_shape_of_models();
    test_deep();
    return test_finish("test_flops");
}
