/* test_flops.c: the two-layer model's FLOP counts (model/flops.h).
 *
 * Every layer of two shapes against numbers worked out by hand from the
 * formulas in flops.c (the working is in the comments); executed >= useful
 * and dense-masked >= executed over a grid of shapes; a pMoE with k = 1 and
 * l = n against the CNN, layer by layer; and the cost shape read off built
 * models. */
#include <math.h>
#include <string.h>

#include "backend/backend.h"
#include "model/flops.h"
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
    const double got[6] = {L->forward[U], L->forward[E], L->forward[D],
                           L->backward[U], L->backward[E], L->backward[D]};
    for (int i = 0; i < 6; i++)
        CHECK_MSG(fabs(got[i] - want[i]) <= 1e-9 * (1 + fabs(want[i])),
                  "%s %s %s: got %.10g, want %.10g", name, i < 3 ? "forward" : "backward",
                  pmoe_flop_kind_name((pmoe_flop_kind)(i % 3)), got[i], want[i]);
}

static void test_mosaic_shape(void) {
    /* The paper's mosaic model: n = 16, d = 784, k = 8, l = 6, h = 5 (m = 40),
     * c = 1, renormalised gate, joint training, plain SGD, B = 20. */
    pmoe_two_layer_cost_shape s = {1, 16, 784, 8, 6, 5, 1, PMOE_GATE_RENORM, 1, 0, 0, 0};
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

    /* its CNN: k = 1, l = n = 16, h = 40 */
    pmoe_two_layer_cost_shape cnn = {0, 16, 784, 1, 16, 40, 1, PMOE_GATE_ONES, 0, 0, 0, 0};
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
    pmoe_two_layer_cost_shape s = {1, 64, 12, 4, 16, 3, 10, PMOE_GATE_SOFTMAX_ALL, 1, 1, 1, 1};
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
                            pmoe_two_layer_cost_shape s = {1, ns[a], 49, ks[b], l, 3, cs[c], gates[g],
                                                           gates[g] != PMOE_GATE_ONES, flags & 1,
                                                           flags & 2, flags & 4};
                            pmoe_flop_report r;
                            pmoe_flops_two_layer(&s, 1 + flags * 7, &r);
                            cases++;
                            for (int i = 0; i < r.layer_count; i++) {
                                const pmoe_layer_flops *L = &r.layers[i];
                                bad += L->forward[E] < L->forward[U] || L->forward[D] < L->forward[E];
                                bad += L->backward[E] < L->backward[U] || L->backward[D] < L->backward[E];
                            }
                            bad += pmoe_flops_train_per_sample(&r, E) < pmoe_flops_train_per_sample(&r, U);
                            bad += pmoe_flops_infer_per_sample(&r, D) < pmoe_flops_infer_per_sample(&r, E);
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
            pmoe_two_layer_cost_shape p = {1, 16, 784, 1, 16, 40, 2, gates[g], learn, train_output, 0, 0};
            pmoe_two_layer_cost_shape c = {0, 16, 784, 1, 16, 40, 2, PMOE_GATE_ONES, 0, train_output, 0, 0};
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
                        CHECK_MSG(a->forward[k] == b->forward[k] && a->backward[k] == b->backward[k],
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
                CHECK_MSG(fabs(pmoe_flops_train_per_sample(&rp, k) - pmoe_flops_train_per_sample(&rc, k) - want) < 1e-6,
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
    pmoe_two_layer *m = NULL;
    CHECK(pmoe_two_layer_create(be, &cfg, 2, 8, 8, 2, 1, 5, &m, &err) == PMOE_OK);
    if (m) {
        pmoe_two_layer_cost_shape s = pmoe_two_layer_cost_shape_of(m, &cfg.train);
        CHECK(s.has_router && s.patches == 16 && s.dim == 8 && s.experts == 4 && s.topl == 3);
        CHECK(s.hidden == 3 && s.classes == 1 && s.gate == PMOE_GATE_RENORM && s.learn_router);
        CHECK(!s.train_output && s.momentum && !s.weight_decay);
        pmoe_two_layer_free(m);
    }
    cfg.model.type = PMOE_MODEL_CNN;
    CHECK(pmoe_two_layer_create(be, &cfg, 2, 8, 8, 2, 1, 5, &m, &err) == PMOE_OK);
    if (m) {
        pmoe_two_layer_cost_shape s = pmoe_two_layer_cost_shape_of(m, &cfg.train);
        CHECK(!s.has_router && s.experts == 1 && s.topl == 16 && s.hidden == 12 && !s.learn_router);
        pmoe_two_layer_free(m);
    }
    cfg.model.type = PMOE_MODEL_PMOE;
    cfg.train.mode = PMOE_TRAIN_SEPARATE; /* the expert phase: G = 1, the router frozen */
    cfg.model.experts = 2;
    CHECK(pmoe_two_layer_create(be, &cfg, 2, 8, 8, 2, 1, 5, &m, &err) == PMOE_OK);
    if (m) {
        pmoe_two_layer_cost_shape s = pmoe_two_layer_cost_shape_of(m, &cfg.train);
        CHECK(s.gate == PMOE_GATE_ONES && !s.learn_router);
        pmoe_flop_report r;
        pmoe_flops_two_layer(&s, 5, &r);
        CHECK(layer(&r, "router")->backward[E] == 0 && layer(&r, "gate_topl")->forward[E] == 0);
        pmoe_two_layer_free(m);
    }
    pmoe_backend_destroy(be);
}

int main(void) {
    test_mosaic_shape();
    test_multiclass_shape();
    test_orderings();
    test_pmoe_with_one_expert_is_the_cnn();
    test_shape_of_models();
    return test_finish("test_flops");
}
