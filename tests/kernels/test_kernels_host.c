/* test_kernels_host.c: every custom kernel, run on the CPU through host
 * execution (src/kernels/host_exec.h), against its CPU twin (cpu_ops.h).
 *
 * Each launch runs twice (three times for the router and the dispatch
 * adjoint), under different orders of the block's threads between barriers
 * (forward, a seeded shuffle, backward), and the outputs must be the same
 * bits: a missing barrier or a race shows up as a difference. Outputs start
 * as NaN (ints as -1) before every run, so an element a kernel fails to
 * write is caught. Shapes include the n = 64, l = 16, k = 8, odd
 * sizes that fill no warp, l = n, n = 1024, and a dispatch with more patches
 * than one shared table holds; router inputs include exact ties. Sums are
 * compared with tolerances (the CPU accumulates in double, the kernels in
 * float, in another order); copies, selections and the dispatch adjoint
 * (the same float additions in the same order) must match exactly. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/cpu_ops.h"
#include "core/rng.h"
#include "guard_cases.h"
#include "host_exec_test_util.h"

/* ------------------------------------------------------------ buffers */

/* fbuf, ibuf, frand and free_all are test_util.h's (floats start as NaN,
 * ints as -1); run_orders is host_exec_test_util.h's. */

/* Small integers: every dot product of a few dozen of them is exact in
 * float whatever the order, so scores tie exactly where they tie. */
static float *fints(int64_t n, uint64_t seed, int lo, int hi) {
    float *p = fbuf(n);
    pmoe_rng r = pmoe_rng_make(seed, 0x1d7);
    for (int64_t i = 0; i < n; i++)
        p[i] = (float)(lo + (int)pmoe_rng_next_below(&r, (uint64_t)(hi - lo + 1)));
    return p;
}

/* ------------------------------------------------------------ patch extraction */

typedef struct patch_case {
    pmoe_patch_shape s;
    const float *in;
    float *out;
    int backward;
} patch_case;

static int call_patch(void *v) {
    patch_case *c = v;
    const pmoe_patch_shape *s = &c->s;
    return c->backward ? pmoe_hx_patch_extract_backward(s->batch, s->channels, s->height, s->width,
                                                        s->patch, c->in, c->out, NULL)
                       : pmoe_hx_patch_extract_forward(s->batch, s->channels, s->height, s->width,
                                                       s->patch, c->in, c->out, NULL);
}

static void test_patch_extract(void) {
    printf("patch extraction\n");
    /* p does not divide H or W: the uncovered pixels must come back zero. */
    pmoe_patch_shape s = {3, 2, 13, 10, 4};
    const int64_t pixels = s.batch * s.channels * s.height * s.width;
    const int64_t elems = s.batch * pmoe_patch_count(&s) * pmoe_patch_dim(&s);
    float *images = frand(pixels, 1, -1, 1), *dpatches = frand(elems, 2, -1, 1);
    float *patches = fbuf(elems), *want = fbuf(elems);
    float *dimages = fbuf(pixels), *dwant = fbuf(pixels);
    patch_case f = {s, images, patches, 0}, b = {s, dpatches, dimages, 1};
    out_buf fo = {patches, (size_t)elems * 4}, bo = {dimages, (size_t)pixels * 4};
    if (run_orders("patch_extract_forward", call_patch, &f, &fo, 1, 2)) {
        cpu_patch_extract_forward(NULL, &s, images, want);
        check_exact_f("patch_extract_forward vs CPU", patches, want, elems);
    }
    if (run_orders("patch_extract_backward", call_patch, &b, &bo, 1, 2)) {
        cpu_patch_extract_backward(NULL, &s, dpatches, dwant);
        check_exact_f("patch_extract_backward vs CPU", dimages, dwant, pixels);
    }
    free_all();
}

/* ------------------------------------------------------------ router */

typedef struct route_case {
    pmoe_route_shape s;
    const float *patches, *router, *scores_in, *gate_in, *dgate;
    const int32_t *selected_in;
    float *scores, *gate, *dscores;
    int32_t *selected;
} route_case;

static int call_gate_forward(void *v) {
    route_case *c = v;
    const pmoe_route_shape *s = &c->s;
    return pmoe_hx_gate_topl_forward(s->batch, s->patches, s->dim, s->experts, s->topl,
                                     (int)s->gate, c->patches, c->router, c->scores, c->selected,
                                     c->gate, NULL);
}

static int call_gate_backward(void *v) {
    route_case *c = v;
    const pmoe_route_shape *s = &c->s;
    return pmoe_hx_gate_topl_backward_scores(s->batch, s->patches, s->experts, s->topl,
                                             (int)s->gate, c->scores_in, c->selected_in, c->gate_in,
                                             c->dgate, c->dscores, NULL);
}

/* ties: integer inputs with many exact ties; the CPU's picks must then be
 * reproduced exactly. Otherwise the picks must be exactly the CPU rule
 * applied to the kernel's own scores (two float sums of the same numbers in
 * different orders may break a near-tie differently). */
static void check_router(const char *label, pmoe_route_shape s, int ties, uint64_t seed) {
    const int64_t B = s.batch, n = s.patches, d = s.dim, k = s.experts, l = s.topl;
    char what[192];
    route_case c = {.s = s};
    c.patches = ties ? fints(B * n * d, seed, -1, 1) : frand(B * n * d, seed, -1, 1);
    c.router = ties ? fints(k * d, seed + 1, -1, 1) : frand(k * d, seed + 1, -0.5f, 0.5f);
    c.scores = fbuf(B * n * k);
    c.gate = fbuf(B * k * l);
    c.selected = ibuf(B * k * l);
    out_buf outs[3] = {{c.scores, (size_t)(B * n * k) * 4},
                       {c.selected, (size_t)(B * k * l) * 4},
                       {c.gate, (size_t)(B * k * l) * 4}};
    snprintf(what, sizeof what, "gate_topl_forward %s", label);
    if (!run_orders(what, call_gate_forward, &c, outs, 3, 3)) return;

    float *scores = fbuf(B * n * k), *gate = fbuf(B * k * l);
    int32_t *selected = ibuf(B * k * l), *own = ibuf(B * k * l);
    cpu_gate_topl_forward(NULL, &s, c.patches, c.router, scores, selected, gate);
    snprintf(what, sizeof what, "  scores %s", label);
    check_close_f(what, c.scores, scores, B * n * k, 1e-5, 1e-5);
    for (int64_t b = 0; b < B; b++)
        for (int e = 0; e < k; e++)
            cpu_topl_select(c.scores + b * n * k + e, k, (int)n, (int)l, own + (b * k + e) * l);
    snprintf(what, sizeof what, "  picks = CPU rule on own scores %s", label);
    check_exact_i(what, c.selected, own, B * k * l);
    if (ties) {
        /* The case must really tie at the cut: the l-th pick's score equal
         * to a patch left out, so only the index rule decides. */
        int cut_ties = 0;
        for (int64_t q = 0; q < B * k && l < n; q++) {
            const float *col = scores + (q / k) * n * k + q % k;
            const float last = col[(int64_t)selected[q * l + l - 1] * k];
            int taken_equal = 0, equal = 0;
            for (int t = 0; t < l; t++)
                taken_equal += col[(int64_t)selected[q * l + t] * k] == last;
            for (int64_t j = 0; j < n; j++) equal += col[j * k] == last;
            cut_ties += equal > taken_equal;
        }
        printf("  %-44s %d of %lld (sample, expert) cuts\n", "ties at the top-l cut", cut_ties,
               (long long)(B * k));
        CHECK_MSG(cut_ties > 0 || l == n, "the tie case has no tie at the cut");
        check_exact_f("  scores (exact integers) vs CPU", c.scores, scores, B * n * k);
        snprintf(what, sizeof what, "  picks vs CPU %s", label);
        check_exact_i(what, c.selected, selected, B * k * l);
    }
    snprintf(what, sizeof what, "  gate %s", label);
    check_close_f(what, c.gate, gate, B * k * l, 1e-6, 2e-5);

    /* Backward from the CPU's forward, so both sides see the same picks. */
    float *dgate = frand(B * k * l, seed + 2, -1, 1), *dscores = fbuf(B * n * k);
    float *drouter = fbuf(k * d);
    c.scores_in = scores;
    c.selected_in = selected;
    c.gate_in = gate;
    c.dgate = dgate;
    c.dscores = fbuf(B * n * k);
    out_buf bo = {c.dscores, (size_t)(B * n * k) * 4};
    snprintf(what, sizeof what, "gate_topl_backward %s", label);
    if (!run_orders(what, call_gate_backward, &c, &bo, 1, 2)) return;
    cpu_gate_topl_backward(NULL, &s, c.patches, c.router, scores, selected, gate, dgate, dscores,
                           drouter, NULL);
    snprintf(what, sizeof what, "  dscores %s", label);
    check_close_f(what, c.dscores, dscores, B * n * k, 1e-6, 2e-5);
}

static void test_router(void) {
    printf("fused gate / top-l\n");
    static const char *mode_names[] = {"renorm", "softmax_all", "ones"};
    for (int mode = 0; mode < 3; mode++) {
        char label[96];
        /* The routing shape (n = 64, l = 16, k = 8), small B and d. */
        snprintf(label, sizeof label, "B3 n64 l16 k8 d96 %s", mode_names[mode]);
        check_router(label, (pmoe_route_shape){3, 64, 96, 8, 16, (pmoe_gate_mode)mode}, 0,
                     10 + mode);
        snprintf(label, sizeof label, "ties B2 n64 l16 k8 d24 %s", mode_names[mode]);
        check_router(label, (pmoe_route_shape){2, 64, 24, 8, 16, (pmoe_gate_mode)mode}, 1,
                     20 + mode);
        free_all();
    }
    /* Odd sizes: no full warp of patches, experts past a group of 8, l = n. */
    check_router("B2 n13 l13 k11 d7 renorm", (pmoe_route_shape){2, 13, 7, 11, 13, PMOE_GATE_RENORM},
                 0, 31);
    check_router("ties B2 n37 l5 k3 d33 softmax_all",
                 (pmoe_route_shape){2, 37, 33, 3, 5, PMOE_GATE_SOFTMAX_ALL}, 1, 32);
    free_all();
    /* n = 1024 patches, l up to n. */
    check_router("B1 n1024 l1000 k2 d5 renorm",
                 (pmoe_route_shape){1, 1024, 5, 2, 1000, PMOE_GATE_RENORM}, 0, 33);
    free_all();
}

/* ------------------------------------------------------------ dispatch */

typedef struct dispatch_case {
    pmoe_route_shape s;
    const float *in;
    const int32_t *selected;
    float *out;
    int backward;
} dispatch_case;

static int call_dispatch(void *v) {
    dispatch_case *c = v;
    const pmoe_route_shape *s = &c->s;
    return c->backward ? pmoe_hx_dispatch_gather_backward(s->batch, s->patches, s->dim, s->experts,
                                                          s->topl, c->in, c->selected, c->out, NULL)
                       : pmoe_hx_dispatch_gather(s->batch, s->patches, s->dim, s->experts, s->topl,
                                                 c->in, c->selected, c->out, NULL);
}

/* Picks as top-l produces them: l distinct patches per (sample, expert). */
static int32_t *random_picks(const pmoe_route_shape *s, uint64_t seed) {
    int32_t *sel = ibuf(s->batch * s->experts * s->topl);
    int64_t *perm = malloc(sizeof(int64_t) * (size_t)s->patches);
    pmoe_rng r = pmoe_rng_make(seed, 0xd15);
    for (int64_t q = 0; q < s->batch * s->experts; q++) {
        for (int j = 0; j < s->patches; j++) perm[j] = j;
        pmoe_rng_shuffle(&r, perm, s->patches);
        for (int t = 0; t < s->topl; t++) sel[q * s->topl + t] = (int32_t)perm[t];
    }
    free(perm);
    return sel;
}

static void check_dispatch(const char *label, pmoe_route_shape s, uint64_t seed) {
    const int64_t B = s.batch, n = s.patches, d = s.dim, k = s.experts, l = s.topl;
    char what[192];
    int32_t *sel = random_picks(&s, seed);
    float *patches = frand(B * n * d, seed + 1, -1, 1),
          *dexp = frand(k * B * l * d, seed + 2, -1, 1);
    float *expert_in = fbuf(k * B * l * d), *want = fbuf(k * B * l * d);
    float *dpatches = fbuf(B * n * d), *dwant = fbuf(B * n * d);
    dispatch_case f = {s, patches, sel, expert_in, 0}, b = {s, dexp, sel, dpatches, 1};
    out_buf fo = {expert_in, (size_t)(k * B * l * d) * 4}, bo = {dpatches, (size_t)(B * n * d) * 4};
    snprintf(what, sizeof what, "dispatch_gather %s", label);
    if (run_orders(what, call_dispatch, &f, &fo, 1, 2)) {
        cpu_dispatch_gather(NULL, &s, patches, sel, want);
        check_exact_f("  vs CPU", expert_in, want, k * B * l * d);
    }
    snprintf(what, sizeof what, "dispatch_gather_backward %s", label);
    if (run_orders(what, call_dispatch, &b, &bo, 1, 3)) {
        cpu_dispatch_gather_backward(NULL, &s, dexp, sel, dwant);
        check_exact_f("  vs CPU (same additions, same order)", dpatches, dwant, B * n * d);
    }
}

static void test_dispatch(void) {
    printf("dispatch\n");
    check_dispatch("B3 n64 l16 k8 d40", (pmoe_route_shape){3, 64, 40, 8, 16, PMOE_GATE_RENORM}, 40);
    check_dispatch("B2 n9 l9 k3 d5", (pmoe_route_shape){2, 9, 5, 3, 9, PMOE_GATE_RENORM}, 41);
    /* 1100 patches: the inverse table holds 7 experts at a time, so 8 take two chunks. */
    check_dispatch("B1 n1100 l300 k8 d3", (pmoe_route_shape){1, 1100, 3, 8, 300, PMOE_GATE_RENORM},
                   42);
    free_all();
}

/* ------------------------------------------------------------ experts' ReLU */

typedef struct relu_case {
    int64_t count;
    const float *source, *out;
    float *x;
    int backward;
} relu_case;

static int call_relu(void *v) {
    relu_case *c = v;
    memcpy(c->x, c->source, (size_t)c->count * 4); /* in place: restore first */
    return c->backward ? pmoe_hx_relu_backward(c->count, c->out, c->x, NULL)
                       : pmoe_hx_relu_forward(c->count, c->x, NULL);
}

static void test_relu(void) {
    printf("ReLU\n");
    /* The CPU twin of both is inside cpu_expert_*; with W = identity-free
     * products that cannot be isolated, so the rule itself is the twin:
     * forward !(x > 0) -> 0 (NaN too), backward zero where out <= 0. */
    const int64_t count = 3000;
    float *src = frand(count, 50, -1, 1), *out = frand(count, 51, -1, 1), *x = fbuf(count);
    src[7] = NAN;
    src[8] = -0.0f;
    out[9] = 0.0f;
    relu_case f = {count, src, NULL, x, 0};
    out_buf o = {x, (size_t)count * 4};
    if (run_orders("relu_forward", call_relu, &f, &o, 1, 2)) {
        float *want = fbuf(count);
        for (int64_t i = 0; i < count; i++) want[i] = src[i] > 0.0f ? src[i] : 0.0f;
        check_exact_f("  vs rule", x, want, count);
    }
    relu_case b = {count, src, out, x, 1};
    if (run_orders("relu_backward", call_relu, &b, &o, 1, 2)) {
        float *want = fbuf(count);
        for (int64_t i = 0; i < count; i++) want[i] = out[i] > 0.0f ? src[i] : 0.0f;
        check_exact_f("  vs rule", x, want, count);
    }
    /* And the expert layer as the CPU runs it: GEMM then this ReLU. */
    const int k = 3, h = 5, dim = 7;
    const int64_t rows = 11;
    float *in = frand(k * rows * dim, 52, -1, 1), *w = frand(k * h * dim, 53, -1, 1);
    float *hidden = fbuf(k * rows * h), *want = fbuf(k * rows * h);
    cpu_gemm(NULL, 0, 1, rows, h, dim, 1.0f, in, dim, rows * dim, w, dim, (int64_t)h * dim, 0.0f,
             hidden, h, rows * h, k);
    CHECK(pmoe_hx_relu_forward(k * rows * h, hidden, NULL) == 0);
    cpu_expert_forward(NULL, k, rows, dim, h, in, w, want);
    check_exact_f("expert_forward = GEMM + relu_forward", hidden, want, k * rows * h);
    free_all();
}

/* ------------------------------------------------------------ combine */

typedef struct combine_case {
    pmoe_combine_shape s;
    const float *hidden, *gate, *out_w, *dlogits;
    float *logits, *dhidden, *dgate, *dout_w;
    int backward;
} combine_case;

static int call_combine(void *v) {
    combine_case *c = v;
    const pmoe_combine_shape *s = &c->s;
    return c->backward
               ? pmoe_hx_combine_backward(s->batch, s->experts, s->topl, s->hidden, s->classes,
                                          c->dlogits, c->hidden, c->gate, c->out_w, c->dhidden,
                                          c->dgate, c->dout_w, NULL)
               : pmoe_hx_combine_forward(s->batch, s->experts, s->topl, s->hidden, s->classes,
                                         c->hidden, c->gate, c->out_w, c->logits, NULL);
}

static void check_combine(const char *label, pmoe_combine_shape s, int with_gate, int grads,
                          uint64_t seed) {
    const int64_t B = s.batch, k = s.experts, l = s.topl, h = s.hidden, C = s.classes;
    char what[192];
    combine_case c = {.s = s};
    c.hidden = frand(k * B * l * h, seed, 0, 1);
    c.gate = with_gate ? frand(B * k * l, seed + 1, 0, 1) : NULL;
    c.out_w = frand(k * h * C, seed + 2, -1, 1);
    c.dlogits = frand(B * C, seed + 3, -1, 1);
    c.logits = fbuf(B * C);
    c.dhidden = fbuf(k * B * l * h);
    c.dgate = grads && with_gate ? fbuf(B * k * l) : NULL;
    c.dout_w = grads ? fbuf(k * h * C) : NULL;
    out_buf fo = {c.logits, (size_t)(B * C) * 4};
    snprintf(what, sizeof what, "combine_forward %s", label);
    if (run_orders(what, call_combine, &c, &fo, 1, 2)) {
        float *want = fbuf(B * C);
        cpu_combine_forward(NULL, &s, c.hidden, c.gate, c.out_w, want);
        check_close_f("  logits", c.logits, want, B * C, 1e-5, 1e-5);
    }
    out_buf bo[3] = {{c.dhidden, (size_t)(k * B * l * h) * 4}};
    int nb = 1;
    if (c.dgate) bo[nb++] = (out_buf){c.dgate, (size_t)(B * k * l) * 4};
    if (c.dout_w) bo[nb++] = (out_buf){c.dout_w, (size_t)(k * h * C) * 4};
    c.backward = 1;
    snprintf(what, sizeof what, "combine_backward %s", label);
    if (run_orders(what, call_combine, &c, bo, nb, 2)) {
        float *dhidden = fbuf(k * B * l * h), *dgate = fbuf(B * k * l), *dout_w = fbuf(k * h * C);
        cpu_combine_backward(NULL, &s, c.dlogits, c.hidden, c.gate, c.out_w, dhidden,
                             c.dgate ? dgate : NULL, c.dout_w ? dout_w : NULL);
        check_close_f("  dhidden", c.dhidden, dhidden, k * B * l * h, 1e-6, 1e-5);
        if (c.dgate) check_close_f("  dgate", c.dgate, dgate, B * k * l, 1e-6, 1e-5);
        if (c.dout_w) check_close_f("  dout_w", c.dout_w, dout_w, k * h * C, 1e-5, 1e-5);
    }
}

static void test_combine(void) {
    printf("combine\n");
    check_combine("B3 k8 l16 h5 c1 gate", (pmoe_combine_shape){3, 8, 16, 5, 1}, 1, 1, 60);
    check_combine("B4 k3 l7 h9 c10 gate", (pmoe_combine_shape){4, 3, 7, 9, 10}, 1, 1, 61);
    check_combine("B5 k1 l64 h6 c2 G=1 (CNN)", (pmoe_combine_shape){5, 1, 64, 6, 2}, 0, 1, 62);
    check_combine("B3 k8 l6 h5 c1 no dout_w", (pmoe_combine_shape){3, 8, 6, 5, 1}, 1, 0, 63);
    free_all();
}

/* ------------------------------------------------------------ losses, SGD, fill */

typedef struct loss_case {
    int kind;
    int64_t batch;
    int classes, patches, experts;
    const float *logits, *scores, *weight;
    const int32_t *labels, *pair;
    float *dlogits, *stats, *dscores;
} loss_case;

static int call_loss(void *v) {
    loss_case *c = v;
    return pmoe_hx_loss_forward_backward(c->kind, c->batch, c->classes, c->logits, c->labels,
                                         c->dlogits, c->stats, NULL);
}

static int call_router_loss(void *v) {
    loss_case *c = v;
    return pmoe_hx_router_linear_loss(c->batch, c->patches, c->experts, c->scores, c->pair,
                                      c->weight, c->dscores, c->stats, NULL);
}

static void test_losses(void) {
    printf("losses\n");
    for (int kind = 0; kind < 2; kind++) {
        loss_case c = {.kind = kind, .batch = 300, .classes = kind ? 10 : 1};
        const int64_t n = c.batch * c.classes;
        c.logits = frand(n, 70 + kind, -4, 4);
        int32_t *labels = ibuf(c.batch);
        for (int64_t b = 0; b < c.batch; b++) labels[b] = (int32_t)((b * 7 + 3) % (kind ? 10 : 2));
        c.labels = labels;
        c.dlogits = fbuf(n);
        c.stats = fbuf(2);
        out_buf o[2] = {{c.dlogits, (size_t)n * 4}, {c.stats, 8}};
        const char *name = kind ? "loss softmax CE B300 c10" : "loss logistic B300";
        if (!run_orders(name, call_loss, &c, o, 2, 2)) continue;
        float *dwant = fbuf(n), *swant = fbuf(2);
        cpu_loss_forward_backward(NULL, (pmoe_loss_kind)kind, c.batch, c.classes, c.logits,
                                  c.labels, dwant, swant);
        check_close_f("  dlogits", c.dlogits, dwant, n, 1e-8, 1e-5);
        check_close_f("  mean loss", c.stats, swant, 1, 1e-6, 1e-5);
        check_exact_f("  correct count", c.stats + 1, swant + 1, 1);
    }
    {
        loss_case c = {.batch = 6, .patches = 16, .experts = 4};
        const int64_t n = c.batch * c.patches * c.experts;
        c.scores = frand(n, 80, -1, 1);
        c.weight = frand(c.batch, 81, -0.5f, 0.5f);
        int32_t *pair = ibuf(c.batch);
        for (int b = 0; b < c.batch; b++) pair[b] = b % 2;
        c.pair = pair;
        c.dscores = fbuf(n);
        c.stats = fbuf(2);
        c.stats[1] = 0.0f;
        out_buf o[2] = {{c.dscores, (size_t)n * 4}, {c.stats, 4}};
        if (run_orders("router_linear_loss B6 n16 k4", call_router_loss, &c, o, 2, 2)) {
            float *dwant = fbuf(n), *swant = fbuf(2);
            cpu_router_linear_loss(NULL, c.batch, c.patches, c.experts, c.scores, c.pair, c.weight,
                                   dwant, swant);
            check_exact_f("  dscores", c.dscores, dwant, n);
            check_close_f("  loss", c.stats, swant, 1, 1e-5, 1e-5);
        }
    }
    free_all();
}

typedef struct sgd_case {
    int64_t count;
    const float *param0, *velocity0, *grad;
    float *param, *velocity;
    float lr, momentum, decay;
    const int32_t *skip; /* the guard's verdict, or NULL */
} sgd_case;

static int call_sgd(void *v) {
    sgd_case *c = v;
    memcpy(c->param, c->param0, (size_t)c->count * 4);
    if (c->velocity) memcpy(c->velocity, c->velocity0, (size_t)c->count * 4);
    return pmoe_hx_sgd_update(c->count, c->param, c->grad, c->velocity, c->lr, c->momentum,
                              c->decay, c->skip, NULL);
}

static int call_fill(void *v) {
    sgd_case *c = v;
    return pmoe_hx_fill(c->count, c->param, c->lr, NULL);
}

static void test_sgd_fill(void) {
    printf("SGD and fill\n");
    const int64_t count = 2500;
    for (int with_momentum = 0; with_momentum < 2; with_momentum++) {
        sgd_case c = {count,
                      frand(count, 90, -1, 1),
                      frand(count, 91, -1, 1),
                      frand(count, 92, -1, 1),
                      fbuf(count),
                      with_momentum ? fbuf(count) : NULL,
                      0.2f,
                      with_momentum ? 0.9f : 0.0f,
                      1e-3f,
                      NULL};
        out_buf o[2] = {{c.param, (size_t)count * 4}, {c.velocity, (size_t)count * 4}};
        if (!run_orders(with_momentum ? "sgd_update momentum" : "sgd_update plain", call_sgd, &c, o,
                        with_momentum ? 2 : 1, 2))
            continue;
        float *p = fbuf(count), *v = with_momentum ? fbuf(count) : NULL;
        memcpy(p, c.param0, (size_t)count * 4);
        if (v) memcpy(v, c.velocity0, (size_t)count * 4);
        cpu_sgd_update(NULL, count, p, c.grad, v, c.lr, c.momentum, c.decay, NULL);
        check_close_f("  param", c.param, p, count, 1e-7, 1e-6);
        if (v) check_close_f("  velocity", c.velocity, v, count, 1e-7, 1e-6);
    }
    /* A nonzero verdict leaves param and velocity as they were, bit for bit;
     * a zero one updates as with no verdict at all. */
    for (int verdict = 0; verdict < 2; verdict++) {
        int32_t *skip = ibuf(1);
        skip[0] = verdict ? 3 : 0;
        sgd_case c = {count,
                      frand(count, 93, -1, 1),
                      frand(count, 94, -1, 1),
                      frand(count, 95, -1, 1),
                      fbuf(count),
                      fbuf(count),
                      0.2f,
                      0.9f,
                      1e-3f,
                      skip};
        out_buf o[2] = {{c.param, (size_t)count * 4}, {c.velocity, (size_t)count * 4}};
        if (!run_orders(verdict ? "sgd_update skipped" : "sgd_update verdict 0", call_sgd, &c, o, 2,
                        2))
            continue;
        float *p = fbuf(count), *v = fbuf(count);
        memcpy(p, c.param0, (size_t)count * 4);
        memcpy(v, c.velocity0, (size_t)count * 4);
        if (!verdict) cpu_sgd_update(NULL, count, p, c.grad, v, c.lr, c.momentum, c.decay, NULL);
        check_exact_f(verdict ? "  param untouched" : "  param", c.param, p, count);
        check_exact_f(verdict ? "  velocity untouched" : "  velocity", c.velocity, v, count);
    }
    sgd_case f = {.count = count, .param = fbuf(count), .lr = 0.25f};
    out_buf o = {f.param, (size_t)count * 4};
    if (run_orders("fill", call_fill, &f, &o, 1, 2)) {
        int ok = 1;
        for (int64_t i = 0; i < count; i++) ok &= f.param[i] == 0.25f;
        CHECK_MSG(ok, "fill wrote other values");
    }
    free_all();
}

/* ------------------------------------------------------------ non-finite guard */

typedef struct guard_run {
    const guard_case *c;
    const int32_t *before; /* the guard's state the step starts from */
    int64_t step;
    int hold;
    int32_t *guard, *verdict;
} guard_run;

static int call_guard(void *v) {
    guard_run *g = v;
    memcpy(g->guard, g->before, 4 * sizeof *g->guard);
    return pmoe_hx_nonfinite_guard(g->c->arrays, (const float *const *)g->c->x, g->c->count,
                                   g->step, g->hold, g->guard, g->verdict, NULL);
}

/* Random cases (guard_cases.h), each from a clean state and from one that
 * already holds a bad step, with and without hold: the kernels, the CPU
 * twin and the expected answer agree on every word. Arrays of up to 70000
 * values span many blocks of the scan and the twin's threaded path. */
static void test_guard(void) {
    printf("non-finite guard\n");
    pmoe_rng r = pmoe_rng_make(20261207, 0x9a4d);
    int agreed = 0, cases = 0, bad_cases = 0;
    for (int i = 0; i < 40; i++) {
        const guard_case c = guard_case_make(&r, i % 8 == 7 ? 70000 : 300, 1);
        bad_cases += c.expect != 0;
        for (int from = 0; from < 2; from++)
            for (int hold = 0; hold < 2; hold++) {
                int32_t before[4], want[4], want_verdict, twin[4], twin_verdict = -7;
                guard_state(before, from ? 2 : 0, from ? (int64_t)5 << 32 | 17 : 0);
                const int64_t step = ((int64_t)1 << 33) + i;
                guard_run g = {&c, before, step, hold, ibuf(4), ibuf(1)};
                out_buf o[2] = {{g.guard, 16}, {g.verdict, 4}};
                cases++;
                if (!run_orders("nonfinite_guard", call_guard, &g, o, 2, 2)) continue;
                guard_expect(&c, before, step, hold, want, &want_verdict);
                memcpy(twin, before, sizeof twin);
                cpu_nonfinite_guard(NULL, c.arrays, (const float *const *)c.x, c.count, step, hold,
                                    twin, &twin_verdict);
                const int ok = !memcmp(g.guard, want, sizeof want) && *g.verdict == want_verdict &&
                               !memcmp(twin, want, sizeof want) && twin_verdict == want_verdict;
                CHECK_MSG(ok,
                          "case %d (from %d, hold %d): verdict kernel %d twin %d want %d, "
                          "first %d/%d/%d",
                          i, from, hold, *g.verdict, twin_verdict, want_verdict, g.guard[0],
                          twin[0], want[0]);
                agreed += ok;
            }
        free_all();
    }
    printf("  %d of %d steps agree (%d of 40 cases poisoned)\n", agreed, cases, bad_cases);
    CHECK(bad_cases > 5 && bad_cases < 35);
    CHECK(pmoe_hx_nonfinite_guard(1, NULL, NULL, 0, 0, NULL, NULL, NULL) == PMOE_KERNEL_ERR_ARGS);
}

/* ------------------------------------------------------------ argument errors */

static void test_errors(void) {
    printf("argument errors\n");
    int rc = pmoe_hx_gate_topl_forward(1, 4, 3, 2, 5, 0, NULL, NULL, NULL, NULL, NULL, NULL);
    CHECK(rc == PMOE_KERNEL_ERR_ARGS);
    CHECK_MSG(strstr(pmoe_hx_error_string(rc), "l=5") != NULL, "message: %s",
              pmoe_hx_error_string(rc));
    CHECK(pmoe_hx_dispatch_gather_backward(1, 20000, 1, 1, 1, NULL, NULL, NULL, NULL) ==
          PMOE_KERNEL_ERR_ARGS);
    CHECK(pmoe_hx_patch_extract_forward(1, 1, 3, 3, 4, NULL, NULL, NULL) == PMOE_KERNEL_ERR_ARGS);
    CHECK(pmoe_hx_fill(0, NULL, 1.0f, NULL) == 0); /* nothing to do is no error */
}

int main(void) {
    const clock_t start = clock();
    test_patch_extract();
    test_router();
    test_dispatch();
    test_relu();
    test_combine();
    test_losses();
    test_sgd_fill();
    test_guard();
    test_errors();
    return host_exec_finish("test_kernels_host", start);
}
