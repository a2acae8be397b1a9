/* test_wrn.c: the deep models on the CPU backend, above the single ops
 * (which test_layers checks one by one).
 *
 * - the pMoE convolution layer, sparse and dense-masked, 1x1 and 3x3
 *   experts: its input, router, batch-norm and convolution gradients against
 *   central finite differences of L = sum(y R) (the layer is piecewise
 *   smooth: an element whose perturbation changes the top-l picks is
 *   skipped, and few may be);
 * - with l = n, G = 1 and 1x1 experts the sparse and dense-masked layers
 *   give the same output and gradients;
 * - whole networks (WRN, WRN-pMoE): gradients of the loss with respect to
 *   parameters all along the list, against finite differences, which
 *   checks the walk (residual sums, the pMoE layer in place);
 * - evaluation mode: a sample's logits do not depend on the rest of its
 *   batch (running statistics), while in training mode they do;
 * - a small WRN-pMoE and a small WRN learn the noisy task well above chance
 *   (skipped without Fashion-MNIST).
 * With --fast every check runs on the CPU fast path (train.cpu_kernels =
 * fast, oneDNN), with the same finite-difference limits; skipped (77) in a
 * build without oneDNN. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend/backend.h"
#include "model/deep_layers.h"
#include "model/model.h"
#include "model/moe_conv.h"
#include "pmoe/train.h"
#include "test_util.h"

static pmoe_backend *be;
static int fast; /* --fast: train.cpu_kernels = fast */

static void set_all(pmoe_config *cfg, const char *const *sets, int count) {
    for (int i = 0; i < count; i++) {
        pmoe_error err;
        if (pmoe_config_set(cfg, sets[i], &err)) {
            fprintf(stderr, "test_wrn: %s\n", err.message);
            exit(2);
        }
    }
}

/* A deep model on 1 x side x side inputs of 10 classes. */
static pmoe_model *make_model(const char *const *sets, int count, int side, int patch,
                              int64_t batch) {
    pmoe_config cfg;
    pmoe_config_default(&cfg);
    set_all(&cfg, sets, count);
    pmoe_error err;
    pmoe_model *m = NULL;
    if (pmoe_config_check(&cfg, &err) ||
        pmoe_model_create(be, &cfg, 1, side, side, patch, 10, batch, &m, &err)) {
        fprintf(stderr, "test_wrn: %s\n", err.message);
        exit(2);
    }
    return m;
}

static moe_conv_layer *moe_of(pmoe_model *m, deep_activation **in, deep_activation **out) {
    pmoe_deep_model *d = deep_of(m);
    deep_layer *L = &d->layers[d->moe];
    *in = &d->acts[L->in];
    *out = &d->acts[L->out];
    return L->moe;
}

static double weighted_sum(const float *y, const float *r, int64_t n) {
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++) sum += (double)y[i] * r[i];
    return sum;
}

/* ---------------------------------------------------- the pMoE layer alone */

typedef struct layer_case {
    pmoe_model *m;
    moe_conv_layer *L;
    float *x, *y, *r, *dx;
    int64_t batch, in_count, out_count;
} layer_case;

static layer_case layer_case_make(const char *const *sets, int count, int64_t batch) {
    layer_case c = {0};
    /* side 16: the pMoE layer sees a 4 x 4 map of 64 channels (width 1) */
    c.m = make_model(sets, count, 16, 2, batch);
    deep_activation *in, *out;
    c.L = moe_of(c.m, &in, &out);
    c.batch = batch;
    c.x = in->value;
    c.y = out->value;
    c.in_count = batch * deep_act_size(in);
    c.out_count = batch * deep_act_size(out);
    c.r = malloc((size_t)c.out_count * sizeof(float));
    c.dx = malloc((size_t)c.in_count * sizeof(float));
    fill_uniform(c.x, c.in_count, 11, -1.0f, 1.0f);
    fill_uniform(c.r, c.out_count, 12, -1.0f, 1.0f);
    /* weights of moderate size, so that ReLU kinks are rare at the eps used */
    fill_uniform(deep_value(c.m, c.L->first_param), c.L->experts * c.L->dim, 13, -0.5f, 0.5f);
    return c;
}

static void layer_case_free(layer_case *c) {
    free(c->r);
    free(c->dx);
    pmoe_model_free(c->m);
}

/* The experts' batch-norm outputs feed a ReLU: their signs say which side
 * of each kink the layer is on. */
static int64_t normed_count(const layer_case *c) {
    const moe_conv_layer *L = c->L;
    return L->impl == PMOE_MOE_SPARSE ? L->experts * c->batch * L->topl * L->dim
                                      : L->experts * c->batch * L->channels * L->height * L->width;
}

/* The forward pass's L = sum(y R); picks (when not NULL) receives the
 * selections followed by the ReLU signs, as int32 words. */
static double layer_loss(layer_case *c, int32_t *picks) {
    moe_conv_forward(c->m, c->L, c->x, c->y, c->batch);
    if (picks) {
        const int64_t sel = c->batch * c->L->experts * c->L->topl;
        memcpy(picks, c->L->selected, sizeof(int32_t) * (size_t)sel);
        for (int64_t i = 0; i < normed_count(c); i++) picks[sel + i] = c->L->normed[i] > 0.0f;
    }
    return weighted_sum(c->y, c->r, c->out_count);
}

/* One element's central difference fd against its gradient, within
 * atol + rtol |fd|: the worst share of that limit so far goes to *worst and
 * the misses are counted in *bad, the first `report` of them printed. */
static void fd_compare(const char *what, int64_t i, double fd, double grad, double atol,
                       double rtol, int report, double *worst, int *bad) {
    const double share = fabs(fd - grad) / (atol + rtol * fabs(fd));
    if (share > *worst) *worst = share;
    if (share > 1.0 && (*bad)++ < report)
        fprintf(stderr, "  %s[%lld]: finite difference %.6g, gradient %.6g\n", what, (long long)i,
                fd, grad);
}

/* Checks d(layer_loss)/d(target[i]) against grad[i] for `samples` elements
 * spread over the tensor. Returns the skipped count (picks or ReLU sides
 * changed: the finite difference then straddles a kink). */
static int fd_check(const char *what, layer_case *c, float *target, const float *grad,
                    int64_t count, int samples, double eps, int32_t *base, int32_t *picks) {
    const int64_t sel = c->batch * c->L->experts * c->L->topl + normed_count(c);
    double worst = 0.0;
    int skipped = 0, bad = 0;
    for (int t = 0; t < samples; t++) {
        const int64_t i = (int64_t)t * count / samples + (t * 7919) % (count / samples + 1);
        if (i >= count) continue;
        const float keep = target[i];
        target[i] = keep + (float)eps;
        const double up = layer_loss(c, picks);
        const int same_up = memcmp(picks, base, sizeof(int32_t) * (size_t)sel) == 0;
        target[i] = keep - (float)eps;
        const double down = layer_loss(c, picks);
        const int same_down = memcmp(picks, base, sizeof(int32_t) * (size_t)sel) == 0;
        target[i] = keep;
        if (!same_up || !same_down) {
            skipped++;
            continue;
        }
        fd_compare(what, i, (up - down) / (2.0 * eps), grad[i], 2e-3, 2e-2, 3, &worst, &bad);
    }
    printf("  %-26s worst %.3f of the limit, %d of %d skipped (a kink crossed)\n", what, worst,
           skipped, samples);
    CHECK_MSG(bad == 0, "%s: %d elements off", what, bad);
    CHECK_MSG(skipped <= samples / 4, "%s: %d of %d perturbations changed the picks", what, skipped,
              samples);
    return skipped;
}

static void check_layer_gradients(const char *label, const char *const *sets, int count) {
    printf(" pMoE layer, %s\n", label);
    layer_case c = layer_case_make(sets, count, 3);
    pmoe_model *m = c.m;
    moe_conv_layer *L = c.L;
    const int64_t sel = c.batch * L->experts * L->topl + normed_count(&c);
    int32_t *base = malloc(sizeof(int32_t) * (size_t)sel),
            *picks = malloc(sizeof(int32_t) * (size_t)sel);
    layer_loss(&c, base);
    memset(c.dx, 0, sizeof(float) * (size_t)c.in_count);
    const float before = 0.25f; /* dx accumulates: start it away from zero */
    for (int64_t i = 0; i < c.in_count; i++) c.dx[i] = before;
    moe_conv_backward(m, L, c.x, c.r, c.dx, c.batch);
    for (int64_t i = 0; i < c.in_count; i++) c.dx[i] -= before;
    const int P = L->first_param;
    fd_check("input", &c, c.x, c.dx, c.in_count, 40, 1e-3, base, picks);
    fd_check("router.weight", &c, deep_value(m, P), deep_grad(m, P),
             pmoe_tensor_numel(&m->params[P].value), 24, 1e-2, base, picks);
    fd_check("experts.bn.weight", &c, deep_value(m, P + 1), deep_grad(m, P + 1),
             pmoe_tensor_numel(&m->params[P + 1].value), 24, 1e-2, base, picks);
    fd_check("experts.bn.bias", &c, deep_value(m, P + 2), deep_grad(m, P + 2),
             pmoe_tensor_numel(&m->params[P + 2].value), 24, 1e-3, base, picks);
    fd_check("experts.conv.weight", &c, deep_value(m, P + 5), deep_grad(m, P + 5),
             pmoe_tensor_numel(&m->params[P + 5].value), 40, 1e-2, base, picks);
    free(base);
    free(picks);
    layer_case_free(&c);
}

/* ------------------------------------------------ sparse == dense at l = n */

static void check_sparse_equals_dense(void) {
    const char *sparse_sets[] = {"model.type=wrn_pmoe", "model.experts=4", "model.topl=4",
                                 "model.gate=ones", "model.expert_kernel=1"};
    const char *dense_sets[] = {"model.type=wrn_pmoe",   "model.experts=4",
                                "model.topl=4",          "model.gate=ones",
                                "model.expert_kernel=1", "model.moe_impl=dense_masked"};
    layer_case a = layer_case_make(sparse_sets, 5, 3), b = layer_case_make(dense_sets, 6, 3);
    CHECK(a.L->patches == a.L->topl && b.L->impl == PMOE_MOE_DENSE_MASKED);
    layer_loss(&a, NULL);
    layer_loss(&b, NULL);
    memset(a.dx, 0, sizeof(float) * (size_t)a.in_count);
    memset(b.dx, 0, sizeof(float) * (size_t)b.in_count);
    moe_conv_backward(a.m, a.L, a.x, a.r, a.dx, a.batch);
    moe_conv_backward(b.m, b.L, b.x, b.r, b.dx, b.batch);
    printf(" sparse against dense-masked, l = n, G = 1, 1x1 experts\n");
    check_close_f("output", a.y, b.y, a.out_count, 1e-5, 1e-4);
    check_close_f("input gradient", a.dx, b.dx, a.in_count, 1e-5, 1e-4);
    const char *names[] = {"bn.weight gradient", "bn.bias gradient", "conv.weight gradient"};
    const int offsets[] = {1, 2, 5};
    for (int i = 0; i < 3; i++) {
        const int pa = a.L->first_param + offsets[i], pb = b.L->first_param + offsets[i];
        check_close_f(names[i], deep_grad(a.m, pa), deep_grad(b.m, pb),
                      pmoe_tensor_numel(&a.m->params[pa].value), 1e-5, 1e-4);
    }
    check_close_f("running mean", deep_value(a.m, a.L->first_param + 3),
                  deep_value(b.m, b.L->first_param + 3),
                  pmoe_tensor_numel(&a.m->params[a.L->first_param + 3].value), 1e-6, 1e-4);
    layer_case_free(&a);
    layer_case_free(&b);
}

/* ------------------------------------------------------- whole networks */

static double model_loss(pmoe_model *m, int64_t batch, int backward) {
    pmoe_model_forward(m, batch);
    double loss;
    int64_t correct;
    pmoe_error err;
    if (pmoe_model_loss(m, backward, &loss, &correct, &err)) {
        fprintf(stderr, "test_wrn: %s\n", err.message);
        exit(2);
    }
    return loss;
}

/* Which side of every kink the network is on: each ReLU's output signs,
 * and the pMoE layer's picks and expert ReLU signs. Returns the length. */
static int64_t network_pattern(pmoe_model *m, int64_t batch, unsigned char *out) {
    pmoe_deep_model *d = deep_of(m);
    int64_t n = 0;
    for (int i = 0; i < d->layer_count; i++) {
        const deep_layer *L = &d->layers[i];
        if (L->kind == LAYER_RELU) {
            const deep_activation *a = &d->acts[L->out];
            for (int64_t j = 0; j < batch * deep_act_size(a); j++, n++)
                if (out) out[n] = a->value[j] > 0.0f;
        } else if (L->kind == LAYER_MOE) {
            const moe_conv_layer *M = L->moe;
            const int64_t sel = batch * M->experts * M->topl;
            const int64_t normed = M->impl == PMOE_MOE_SPARSE
                                       ? M->experts * batch * M->topl * M->dim
                                       : M->experts * batch * M->channels * M->height * M->width;
            for (int64_t j = 0; j < sel; j++, n++)
                if (out) out[n] = (unsigned char)M->selected[j];
            for (int64_t j = 0; j < normed; j++, n++)
                if (out) out[n] = M->normed[j] > 0.0f;
        }
    }
    return n;
}

static void check_network_gradients(const char *label, const char *const *sets, int count) {
    const int64_t B = 2;
    pmoe_model *m = make_model(sets, count, 16, 1, B);
    fill_uniform(m->images, B * 16 * 16, 21, 0.0f, 1.0f);
    for (int i = 0; i < B; i++) m->labels[i] = (i * 3) % 10;
    model_loss(m, B, 1);
    const int64_t pattern_size = network_pattern(m, B, NULL);
    unsigned char *base = malloc((size_t)pattern_size), *now = malloc((size_t)pattern_size);
    network_pattern(m, B, base);
    /* gradients are overwritten by the next backward: keep copies */
    int checked = 0, bad = 0, skipped = 0;
    double worst = 0.0;
    for (int p = 0; p < m->param_count; p++) {
        if (!pmoe_model_updates(m, p)) continue;
        const int64_t n = pmoe_tensor_numel(&m->params[p].value);
        float *g = malloc(sizeof(float) * (size_t)n);
        memcpy(g, m->params[p].grad.data, sizeof(float) * (size_t)n);
        for (int t = 0; t < 4; t++) {
            const int64_t i = (t * 977 + p * 131) % n;
            float *v = m->params[p].value.data;
            const float keep = v[i];
            const double eps = 1e-3;
            v[i] = keep + (float)eps;
            const double up = model_loss(m, B, 0);
            network_pattern(m, B, now);
            int same = memcmp(now, base, (size_t)pattern_size) == 0;
            v[i] = keep - (float)eps;
            const double down = model_loss(m, B, 0);
            network_pattern(m, B, now);
            same = same && memcmp(now, base, (size_t)pattern_size) == 0;
            v[i] = keep;
            if (!same) { /* the difference straddles a kink */
                skipped++;
                continue;
            }
            fd_compare(m->params[p].name, i, (up - down) / (2.0 * eps), g[i], 2e-4, 5e-2, 4, &worst,
                       &bad);
            checked++;
        }
        free(g);
    }
    printf(" %s: %d parameters' elements along the network, worst %.3f of the limit, %d skipped "
           "(a kink crossed)\n",
           label, checked, worst, skipped);
    CHECK_MSG(bad == 0, "%s: %d gradients off", label, bad);
    CHECK_MSG(checked >= 40 && skipped <= checked, "%s: %d checked, %d skipped", label, checked,
              skipped);
    free(base);
    free(now);
    pmoe_model_free(m);
}

/* ------------------------------------------------------ evaluation mode */

static void check_eval_uses_running_statistics(void) {
    const char *sets[] = {"model.type=wrn_pmoe", "model.experts=4", "model.topl=2"};
    const int64_t B = 6;
    pmoe_model *m = make_model(sets, 3, 16, 1, B);
    fill_uniform(m->images, B * 16 * 16, 31, 0.0f, 1.0f);
    for (int i = 0; i < B; i++) m->labels[i] = i % 10;
    for (int step = 0; step < 3; step++) { /* move the running statistics */
        model_loss(m, B, 1);
        pmoe_model_sgd(m, 0.05f, 0.0f, 0.0f);
    }
    float full[10], alone[10];
    m->training = 0;
    model_loss(m, B, 0);
    memcpy(full, m->logits, sizeof full);
    model_loss(m, 1, 0); /* the first sample by itself */
    memcpy(alone, m->logits, sizeof alone);
    printf(" evaluation mode: sample 0 alone against in a batch of %lld\n", (long long)B);
    check_close_f("logits", alone, full, 10, 1e-5, 1e-4);
    m->training = 1;
    model_loss(m, B, 0);
    memcpy(full, m->logits, sizeof full);
    model_loss(m, 1, 0);
    double diff = 0.0;
    for (int i = 0; i < 10; i++) diff += fabs(full[i] - m->logits[i]);
    CHECK_MSG(diff > 1e-3,
              "training mode: batch statistics should make the logits differ "
              "(|diff| %.3g)",
              diff);
    pmoe_model_free(m);
}

/* --------------------------------------------------------- learning */

static void check_learns(const char *label, const char *type) {
    pmoe_config cfg;
    pmoe_config_default(&cfg);
    char type_set[64];
    snprintf(type_set, sizeof type_set, "model.type=%s", type);
    const char *sets[] = {type_set,
                          "data.source=noisy",
                          "data.train_size=2000",
                          "data.test_size=500",
                          "model.experts=4",
                          "model.topl=4",
                          "model.width=1",
                          "train.epochs=4",
                          "train.batch=32",
                          "train.lr=0.05",
                          "train.momentum=0.9",
                          "train.threads=2",
                          fast ? "train.cpu_kernels=fast" : "train.cpu_kernels=reference"};
    set_all(&cfg, sets, (int)(sizeof sets / sizeof sets[0]));
    pmoe_train_result res;
    pmoe_error err = {PMOE_OK, ""};
    pmoe_status s = pmoe_train(&cfg, NULL, NULL, &res, &err);
    if (s == PMOE_ERR_IO && access("/usr/share/datasets/fashion-mnist", R_OK) != 0) {
        printf(" %s: skipped (no Fashion-MNIST)\n", label);
        return;
    }
    CHECK_MSG(s == PMOE_OK, "%s: %s", label, err.message);
    printf(" %s on the noisy task (2000 samples, 4 epochs): test accuracy %.3f in %.1f s\n", label,
           res.test_acc, res.seconds);
    CHECK_MSG(res.test_acc >= 0.3, "%s: test accuracy %.3f (chance 0.1)", label, res.test_acc);
}

int main(int argc, char **argv) {
    pmoe_error err;
    int training = 1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--fast") == 0) fast = 1;
        if (strcmp(argv[i], "--no-training") == 0) training = 0;
    }
    if (pmoe_cpu_backend_create(2, &be, &err)) {
        fprintf(stderr, "test_wrn: %s\n", err.message);
        return 2;
    }
    if (fast && pmoe_backend_set_cpu_kernels(be, PMOE_CPU_KERNELS_FAST, &err)) {
        printf("test_wrn --fast: skipped (%s)\n", err.message);
        pmoe_backend_destroy(be);
        return 77;
    }
    printf("kernels: %s\n", be->name);
    const char *sparse1[] = {"model.type=wrn_pmoe", "model.experts=4", "model.topl=2",
                             "model.expert_kernel=1"};
    const char *sparse3[] = {"model.type=wrn_pmoe", "model.experts=4", "model.topl=2",
                             "model.expert_kernel=3"};
    const char *dense3[] = {"model.type=wrn_pmoe", "model.experts=4", "model.topl=2",
                            "model.expert_kernel=3", "model.moe_impl=dense_masked"};
    check_layer_gradients("sparse, 1x1 experts", sparse1, 4);
    check_layer_gradients("sparse, 3x3 experts", sparse3, 4);
    check_layer_gradients("dense-masked, 3x3 experts", dense3, 5);
    check_sparse_equals_dense();
    /* l = n for the whole networks: no pick can change under a perturbation */
    const char *all3[] = {"model.type=wrn_pmoe", "model.experts=4", "model.topl=16",
                          "model.expert_kernel=3"};
    const char *dense_all3[] = {"model.type=wrn_pmoe", "model.experts=4", "model.topl=16",
                                "model.expert_kernel=3", "model.moe_impl=dense_masked"};
    check_network_gradients("WRN", (const char *[]){"model.type=wrn"}, 1);
    check_network_gradients("WRN-pMoE", all3, 4);
    check_network_gradients("WRN-pMoE dense-masked", dense_all3, 5);
    check_eval_uses_running_statistics();
    if (training) {
        check_learns("WRN-pMoE", "wrn_pmoe");
        check_learns("WRN", "wrn");
    }
    pmoe_backend_destroy(be);
    return test_finish("test_wrn");
}
