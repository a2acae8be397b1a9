/* test_kernels_host_layers.c: the deep models' layer kernels (batchnorm_relu_pool.cu,
 * moe_layer.cu), run on the CPU through host execution, against their CPU
 * twins (cpu_conv.c, cpu_batchnorm.c, cpu_elementwise.c, cpu_moe_layer.c,
 * cpu_channel_copy.c).
 *
 * As in test_kernels_host.c, each launch runs under two or three orders of a
 * block's threads between barriers (forward, a seeded shuffle, backward) and
 * must give the same bits under all of them: a missing barrier in a
 * reduction shows up as a difference (and as a wrong sum). Outputs a kernel
 * overwrites start as NaN before every run, so an element it fails to write
 * is caught; outputs it adds into (dx) start from the same random values
 * every run, and the channel copy's dst, which it writes only in part, from
 * a pattern no source value matches. Shapes include channels with fewer values than a block has
 * threads, spatial 1, patch sizes that do not divide the map, l = n, and
 * inputs far from zero for batch norm's variance.
 *
 * Copies, scatters and elementwise arithmetic written as in the twin must
 * match bit for bit. Sums are held to a tolerance: the twins sum in double,
 * the kernels in float in another (fixed) order. A limit is
 * rel (scale + |want|), the scale being the largest |want| (close_scaled)
 * or, for sums that may cancel, the largest sum of |terms| (close_sum); the
 * worst error is printed as a share of it, and the shares measured when
 * the tolerances were set are in the comments. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/cpu_ops.h"
#include "host_exec_test_util.h"

/* ------------------------------------------------------------ helpers */

/* fbuf, ibuf, frand, fcopy, free_all, close_scaled, close_sum and
 * channel_mass are test_util.h's (floats start as NaN, ints as -1);
 * run_orders is host_exec_test_util.h's. close_sum's rel = 4e-7 below is a
 * few float ulps of the mass (the result itself is rounded once to float on
 * both sides). */

/* l distinct patches per (sample, expert), as top-l picks them. */
static int32_t *random_picks(int64_t batch, int n, int k, int l, uint64_t seed) {
    int32_t *sel = ibuf(batch * k * l);
    fill_random_picks(sel, batch * k, n, l, seed, 0xd15);
    return sel;
}

/* ------------------------------------------------------------ ReLU, axpby */

typedef struct elementwise_case {
    int64_t count;
    float alpha, beta;
    const float *x, *y, *dy, *start; /* start: what the output holds before the call */
    float *out;
    int op; /* 0 relu forward (out of place), 1 relu forward in place, 2 relu backward, 3 axpby */
} elementwise_case;

static int call_elementwise(void *v) {
    elementwise_case *c = v;
    if (c->start) memcpy(c->out, c->start, (size_t)c->count * 4);
    switch (c->op) {
    case 0: return pmoe_hx_relu_forward_out(c->count, c->x, c->out, NULL);
    case 1: return pmoe_hx_relu_forward_out(c->count, c->out, c->out, NULL);
    case 2: return pmoe_hx_relu_backward_accumulate(c->count, c->y, c->dy, c->out, NULL);
    default: return pmoe_hx_axpby(c->count, c->alpha, c->x, c->beta, c->out, NULL);
    }
}

static void test_relu_axpby(void) {
    printf("ReLU and axpby\n");
    const int64_t n = 3001;
    float *x = frand(n, 1, -1, 1), *y = frand(n, 2, -1, 1), *dy = frand(n, 3, -1, 1);
    float *dx0 = frand(n, 4, -1, 1), *out = fbuf(n), *want = fbuf(n);
    x[5] = NAN; /* -> 0, in both */
    x[6] = -0.0f;
    x[7] = 0.0f;
    y[8] = 0.0f; /* no gradient where y = 0 */
    out_buf o = {out, (size_t)n * 4};

    elementwise_case c = {.count = n, .x = x, .out = out, .op = 0};
    if (run_orders("relu_forward_out", call_elementwise, &c, &o, 1, 2)) {
        cpu_relu_forward(NULL, n, x, want);
        check_exact_f("  vs CPU", out, want, n);
    }
    c = (elementwise_case){.count = n, .start = x, .out = out, .op = 1};
    if (run_orders("relu_forward_out in place (y = x)", call_elementwise, &c, &o, 1, 2)) {
        cpu_relu_forward(NULL, n, x, want);
        check_exact_f("  vs CPU", out, want, n);
    }
    c = (elementwise_case){.count = n, .y = y, .dy = dy, .start = dx0, .out = out, .op = 2};
    if (run_orders("relu_backward_accumulate", call_elementwise, &c, &o, 1, 2)) {
        memcpy(want, dx0, (size_t)n * 4);
        cpu_relu_backward(NULL, n, y, dy, want);
        check_exact_f("  dx += dy where y > 0, vs CPU", out, want, n);
    }
    x[5] = 0.25f;
    c = (elementwise_case){
        .count = n, .alpha = 0.7f, .beta = -1.3f, .x = x, .start = dx0, .out = out, .op = 3};
    if (run_orders("axpby beta -1.3", call_elementwise, &c, &o, 1, 2)) {
        memcpy(want, dx0, (size_t)n * 4);
        cpu_axpby(NULL, n, 0.7f, x, -1.3f, want);
        check_exact_f("  vs CPU", out, want, n);
    }
    /* beta = 0 on a NaN-poisoned y: a scaled copy, nothing of y leaks. */
    c = (elementwise_case){.count = n, .alpha = -2.5f, .beta = 0.0f, .x = x, .out = out, .op = 3};
    if (run_orders("axpby beta 0 over NaN", call_elementwise, &c, &o, 1, 2)) {
        for (int64_t i = 0; i < n; i++) want[i] = NAN;
        cpu_axpby(NULL, n, -2.5f, x, 0.0f, want);
        check_exact_f("  vs CPU (no NaN from y)", out, want, n);
    }
    free_all();
}

/* ------------------------------------------------------------ pooling, bias */

typedef struct pool_case {
    int64_t batch, spatial;
    int channels;
    const float *in, *bias, *start;
    float *out;
    int op; /* 0 pool forward, 1 pool backward, 2 bias forward, 3 bias backward */
} pool_case;

static int call_pool(void *v) {
    pool_case *c = v;
    const int64_t rows = c->batch * c->channels;
    if (c->start) memcpy(c->out, c->start, (size_t)(rows * c->spatial) * 4);
    switch (c->op) {
    case 0: return pmoe_hx_avgpool_forward(rows, c->spatial, c->in, c->out, NULL);
    case 1: return pmoe_hx_avgpool_backward(rows, c->spatial, c->in, c->out, NULL);
    case 2:
        return pmoe_hx_channel_bias_forward(c->batch, c->channels, c->spatial, c->bias, c->out,
                                            NULL);
    default:
        return pmoe_hx_channel_bias_backward(c->batch, c->channels, c->spatial, c->in, c->out,
                                             NULL);
    }
}

static void check_pool_bias(int64_t B, int C, int64_t S, uint64_t seed) {
    char label[64], what[160];
    snprintf(label, sizeof label, "B%lld C%d spatial %lld", (long long)B, C, (long long)S);
    const int64_t rows = B * C, n = rows * S;
    float *x = frand(n, seed, -1, 1), *dy = frand(rows, seed + 1, -1, 1);
    float *bias = frand(C, seed + 2, -1, 1), *start = frand(n, seed + 3, -1, 1);
    float *out = fbuf(n), *want = fbuf(n);

    pool_case c = {B, S, C, x, NULL, NULL, out, 0};
    out_buf o = {out, (size_t)rows * 4};
    snprintf(what, sizeof what, "avgpool_forward %s", label);
    if (run_orders(what, call_pool, &c, &o, 1, 2)) {
        cpu_avgpool_forward(NULL, rows, S, x, want);
        /* measured: worst 0.04 of this limit */
        close_sum("  mean (float vs double sum)", out, want, rows,
                  channel_mass(x, NULL, NULL, NULL, 1, (int)rows, S) / (double)S, 4e-7);
    }
    c = (pool_case){B, S, C, dy, NULL, start, out, 1};
    o.bytes = (size_t)n * 4;
    snprintf(what, sizeof what, "avgpool_backward %s", label);
    if (run_orders(what, call_pool, &c, &o, 1, 2)) {
        memcpy(want, start, (size_t)n * 4);
        cpu_avgpool_backward(NULL, rows, S, dy, want);
        check_exact_f("  dx += dy / spatial, vs CPU", out, want, n);
    }
    c = (pool_case){B, S, C, NULL, bias, start, out, 2};
    snprintf(what, sizeof what, "channel_bias_forward %s", label);
    if (run_orders(what, call_pool, &c, &o, 1, 2)) {
        memcpy(want, start, (size_t)n * 4);
        cpu_channel_bias_forward(NULL, B, C, S, bias, want);
        check_exact_f("  y += bias, vs CPU", out, want, n);
    }
    c = (pool_case){B, S, C, x, NULL, NULL, out, 3};
    o.bytes = (size_t)C * 4;
    snprintf(what, sizeof what, "channel_bias_backward %s", label);
    if (run_orders(what, call_pool, &c, &o, 1, 3)) {
        cpu_channel_bias_backward(NULL, B, C, S, x, want);
        /* measured: worst 0.05 of this limit */
        close_sum("  dbias (float tree vs double sum)", out, want, C,
                  channel_mass(x, NULL, NULL, NULL, B, C, S), 4e-7);
    }
}

static void test_pool_bias(void) {
    printf("average pooling and channel bias\n");
    check_pool_bias(3, 5, 64, 10);     /* a WRN's 8 x 8 head */
    check_pool_bias(4, 3, 300, 20);    /* more values per channel than threads */
    check_pool_bias(37, 10, 1, 30);    /* a fully connected layer's bias */
    check_pool_bias(128, 2, 1024, 40); /* 131072 values per channel */
    free_all();
}

/* ------------------------------------------------------------ batch norm */

typedef struct bn_case {
    pmoe_bn_shape s;
    const float *x, *gamma, *beta, *rm0, *rv0, *mean, *invstd, *dy, *dx0;
    float *y, *save_mean, *save_invstd, *rm, *rv, *dx, *dgamma, *dbeta;
    float *workspace; /* the per-block partials (NaN at the start) */
    float momentum;
    int op; /* 0 train, 1 eval, 2 backward, 3 train in place (y = x) */
} bn_case;

static int call_bn(void *v) {
    bn_case *c = v;
    const pmoe_bn_shape *s = &c->s;
    const int64_t n = s->batch * s->channels * s->spatial;
    switch (c->op) {
    case 0:
    case 3:
        if (c->rm) memcpy(c->rm, c->rm0, (size_t)s->channels * 4);
        if (c->rv) memcpy(c->rv, c->rv0, (size_t)s->channels * 4);
        if (c->op == 3) memcpy(c->y, c->x, (size_t)n * 4);
        return pmoe_hx_batchnorm_forward_train(
            s->batch, s->channels, s->spatial, s->eps, c->op == 3 ? c->y : c->x, c->gamma, c->beta,
            c->y, c->save_mean, c->save_invstd, c->rm, c->rv, c->momentum, c->workspace, NULL);
    case 1:
        return pmoe_hx_batchnorm_forward_eval(s->batch, s->channels, s->spatial, s->eps, c->x,
                                              c->gamma, c->beta, c->rm0, c->rv0, c->y, NULL);
    default:
        if (c->dx) memcpy(c->dx, c->dx0, (size_t)n * 4);
        return pmoe_hx_batchnorm_backward(s->batch, s->channels, s->spatial, c->x, c->gamma,
                                          c->mean, c->invstd, c->dy, c->dx, c->dgamma, c->dbeta,
                                          c->workspace, NULL);
    }
}

static void check_batchnorm(pmoe_bn_shape s, float lo, float hi, uint64_t seed) {
    char label[96], what[192];
    snprintf(label, sizeof label, "B%lld C%d spatial %lld x in [%g, %g)", (long long)s.batch,
             s.channels, (long long)s.spatial, lo, hi);
    const int C = s.channels;
    const int64_t n = s.batch * C * s.spatial;
    bn_case c = {.s = s, .momentum = 0.1f};
    c.x = frand(n, seed, lo, hi);
    c.gamma = frand(C, seed + 1, 0.5f, 1.5f);
    c.beta = frand(C, seed + 2, -0.5f, 0.5f);
    c.rm0 = frand(C, seed + 3, -0.2f, 0.2f);
    c.rv0 = frand(C, seed + 4, 0.5f, 2.0f);
    c.y = fbuf(n), c.save_mean = fbuf(C), c.save_invstd = fbuf(C), c.rm = fbuf(C), c.rv = fbuf(C);
    c.workspace = fbuf(pmoe_hx_batchnorm_workspace_floats(s.batch, C, s.spatial));

    /* The twin's forward, the reference for the kernels and the input of the backward. */
    float *y = fbuf(n), *mean = fbuf(C), *invstd = fbuf(C);
    float *rm = fcopy(c.rm0, C), *rv = fcopy(c.rv0, C);
    cpu_batchnorm_forward_train(NULL, &s, c.x, c.gamma, c.beta, y, mean, invstd, rm, rv,
                                c.momentum);
    const double mean_mass = channel_mass(c.x, NULL, NULL, NULL, s.batch, C, s.spatial) /
                             (double)(s.batch * s.spatial);

    out_buf fo[5] = {{c.y, (size_t)n * 4},
                     {c.save_mean, (size_t)C * 4},
                     {c.save_invstd, (size_t)C * 4},
                     {c.rm, (size_t)C * 4},
                     {c.rv, (size_t)C * 4}};
    snprintf(what, sizeof what, "batchnorm_forward_train %s", label);
    if (run_orders(what, call_bn, &c, fo, 5, 3)) {
        /* measured at the most: 0.09 (y, inputs far from zero), 0.12 (mean), 0.04
         * (invstd), 0.03 (running statistics) of these limits */
        close_scaled("  y", c.y, y, n, 1e-5);
        close_sum("  save_mean", c.save_mean, mean, C, mean_mass, 4e-7);
        close_scaled("  save_invstd", c.save_invstd, invstd, C, 1e-6);
        close_sum("  running_mean", c.rm, rm, C, mean_mass, 4e-7);
        close_scaled("  running_var (unbiased)", c.rv, rv, C, 1e-6);
    }
    c.op = 3; /* y = x: the same thread reads each value before writing it */
    snprintf(what, sizeof what, "batchnorm_forward_train in place %s", label);
    if (run_orders(what, call_bn, &c, fo + 1, 4, 2)) close_scaled("  y", c.y, y, n, 1e-5);

    c.op = 1;
    snprintf(what, sizeof what, "batchnorm_forward_eval %s", label);
    if (run_orders(what, call_bn, &c, fo, 1, 2)) {
        float *want = fbuf(n);
        cpu_batchnorm_forward_eval(NULL, &s, c.x, c.gamma, c.beta, c.rm0, c.rv0, want);
        /* the scale in float against the twin's in double: about an ulp;
         * measured at the most 0.06 of this limit */
        close_scaled("  y (running statistics)", c.y, want, n, 1e-6);
    }

    c.op = 2;
    c.mean = mean, c.invstd = invstd;
    c.dy = frand(n, seed + 5, -1, 1);
    c.dx0 = frand(n, seed + 6, -1, 1);
    c.dx = fbuf(n), c.dgamma = fbuf(C), c.dbeta = fbuf(C);
    float *dx = fcopy(c.dx0, n), *dgamma = fbuf(C), *dbeta = fbuf(C);
    cpu_batchnorm_backward(NULL, &s, c.x, c.gamma, mean, invstd, c.dy, dx, dgamma, dbeta);
    const double dbeta_mass = channel_mass(c.dy, NULL, NULL, NULL, s.batch, C, s.spatial);
    const double dgamma_mass = channel_mass(c.dy, c.x, mean, invstd, s.batch, C, s.spatial);
    out_buf bo[3] = {{c.dx, (size_t)n * 4}, {c.dgamma, (size_t)C * 4}, {c.dbeta, (size_t)C * 4}};
    snprintf(what, sizeof what, "batchnorm_backward %s", label);
    if (run_orders(what, call_bn, &c, bo, 3, 3)) {
        /* measured at the most: 0.01 (dx), 0.08 (dgamma), 0.03 (dbeta) of these limits */
        close_scaled("  dx (accumulated)", c.dx, dx, n, 1e-5);
        close_sum("  dgamma", c.dgamma, dgamma, C, dgamma_mass, 4e-7);
        close_sum("  dbeta", c.dbeta, dbeta, C, dbeta_mass, 4e-7);
    }
    /* Parameter gradients only (dx NULL), then dx only. */
    float *dx_given = c.dx;
    c.dx = NULL;
    snprintf(what, sizeof what, "batchnorm_backward dx NULL %s", label);
    if (run_orders(what, call_bn, &c, bo + 1, 2, 2)) {
        close_sum("  dgamma", c.dgamma, dgamma, C, dgamma_mass, 4e-7);
        close_sum("  dbeta", c.dbeta, dbeta, C, dbeta_mass, 4e-7);
    }
    c.dx = dx_given;
    c.dgamma = c.dbeta = NULL;
    snprintf(what, sizeof what, "batchnorm_backward dx only %s", label);
    if (run_orders(what, call_bn, &c, bo, 1, 2)) close_scaled("  dx", c.dx, dx, n, 1e-5);
}

static void test_batchnorm(void) {
    printf("batch norm\n");
    check_batchnorm((pmoe_bn_shape){3, 5, 63, 1e-5f}, -1, 1,
                    100); /* 189 per channel: idle threads */
    check_batchnorm((pmoe_bn_shape){4, 3, 300, 1e-5f}, -1, 1, 110); /* 1200: several per thread */
    check_batchnorm((pmoe_bn_shape){37, 6, 1, 1e-3f}, -2, 3, 120);  /* spatial 1 */
    check_batchnorm((pmoe_bn_shape){5, 2, 256, 1e-5f}, 9, 11, 130); /* mean far from zero */
    /* A WRN's first group at B = 128: 131072 values per channel, 512 per thread. */
    check_batchnorm((pmoe_bn_shape){128, 2, 32 * 32, 1e-5f}, 9, 11, 140);
    free_all();
}

/* ------------------------------------------------------------ the pMoE layer */

typedef struct moe_case {
    pmoe_scatter_shape s;
    const int32_t *selected;
    const float *expert_out, *gate, *dout, *dweights;
    float *out, *dexpert, *dgate, *weights;
    int op; /* 0 scatter forward, 1 scatter backward, 2 weights, 3 weights backward */
} moe_case;

static int call_moe(void *v) {
    moe_case *c = v;
    const pmoe_scatter_shape *s = &c->s;
    switch (c->op) {
    case 0:
        return pmoe_hx_moe_scatter_forward(s->batch, s->patches, s->experts, s->topl, s->expert_dim,
                                           c->expert_out, c->selected, c->gate, c->out, NULL);
    case 1:
        return pmoe_hx_moe_scatter_backward(s->batch, s->patches, s->experts, s->topl,
                                            s->expert_dim, c->dout, c->expert_out, c->selected,
                                            c->gate, c->dexpert, c->dgate, NULL);
    case 2:
        return pmoe_hx_moe_position_weights(s->batch, s->patches, s->experts, s->topl, c->selected,
                                            c->gate, c->weights, NULL);
    default:
        return pmoe_hx_moe_position_weights_backward(s->batch, s->patches, s->experts, s->topl,
                                                     c->selected, c->dweights, c->dgate, NULL);
    }
}

static void check_moe(pmoe_scatter_shape s, int with_gate, uint64_t seed) {
    char label[96], what[192];
    snprintf(label, sizeof label, "B%lld n%d k%d l%d e%d%s", (long long)s.batch, s.patches,
             s.experts, s.topl, s.expert_dim, with_gate ? "" : " gate NULL");
    const int64_t B = s.batch, n = s.patches, k = s.experts, l = s.topl, e = s.expert_dim;
    const int64_t values = k * B * l * e, outs = B * n * k * e, picks = B * k * l;
    const pmoe_route_shape r = {B, (int)n, 1, (int)k, (int)l, PMOE_GATE_RENORM};
    moe_case c = {.s = s, .selected = random_picks(B, (int)n, (int)k, (int)l, seed)};
    c.expert_out = frand(values, seed + 1, -1, 1);
    c.gate = with_gate ? frand(picks, seed + 2, 0, 1) : NULL;
    c.dout = frand(outs, seed + 3, -1, 1);
    c.dweights = frand(k * B * n, seed + 4, -1, 1);
    c.out = fbuf(outs), c.dexpert = fbuf(values), c.dgate = fbuf(picks);
    c.weights = fbuf(k * B * n);

    out_buf o = {c.out, (size_t)outs * 4};
    snprintf(what, sizeof what, "moe_scatter_forward %s", label);
    if (run_orders(what, call_moe, &c, &o, 1, 2)) {
        float *want = fbuf(outs);
        cpu_moe_scatter_forward(NULL, &s, c.expert_out, c.selected, c.gate, want);
        check_exact_f("  out_patches vs CPU", c.out, want, outs);
    }
    c.op = 1;
    out_buf bo[2] = {{c.dexpert, (size_t)values * 4}, {c.dgate, (size_t)picks * 4}};
    float *dexpert = fbuf(values), *dgate = fbuf(picks);
    cpu_moe_scatter_backward(NULL, &s, c.dout, c.expert_out, c.selected, c.gate, dexpert, dgate);
    snprintf(what, sizeof what, "moe_scatter_backward %s", label);
    if (run_orders(what, call_moe, &c, bo, 2, 2)) {
        check_exact_f("  dexpert_out vs CPU", c.dexpert, dexpert, values);
        /* measured at the most: 0.06 of this limit */
        close_scaled("  dgate (warp sum vs double)", c.dgate, dgate, picks, 1e-6);
    }
    float *dgate_given = c.dgate;
    c.dgate = NULL;
    snprintf(what, sizeof what, "moe_scatter_backward dgate NULL %s", label);
    if (run_orders(what, call_moe, &c, bo, 1, 2))
        check_exact_f("  dexpert_out vs CPU", c.dexpert, dexpert, values);
    c.dgate = dgate_given;

    c.op = 2;
    o = (out_buf){c.weights, (size_t)(k * B * n) * 4};
    snprintf(what, sizeof what, "moe_position_weights %s", label);
    if (run_orders(what, call_moe, &c, &o, 1, 2)) {
        float *want = fbuf(k * B * n);
        cpu_moe_position_weights(NULL, &r, c.selected, c.gate, want);
        check_exact_f("  weights vs CPU", c.weights, want, k * B * n);
    }
    c.op = 3;
    o = (out_buf){c.dgate, (size_t)picks * 4};
    snprintf(what, sizeof what, "moe_position_weights_backward %s", label);
    if (run_orders(what, call_moe, &c, &o, 1, 2)) {
        float *want = fbuf(picks);
        cpu_moe_position_weights_backward(NULL, &r, c.selected, c.dweights, want);
        check_exact_f("  dgate vs CPU", c.dgate, want, picks);
    }
}

typedef struct scale_case {
    pmoe_patch_shape s;
    const float *weight, *x, *dy, *dx0;
    float *y, *dx, *dweight;
    int op; /* 0 forward, 1 backward */
} scale_case;

static int call_scale(void *v) {
    scale_case *c = v;
    const pmoe_patch_shape *s = &c->s;
    if (!c->op)
        return pmoe_hx_patch_scale_forward(s->batch, s->channels, s->height, s->width, s->patch,
                                           c->weight, c->x, c->y, NULL);
    if (c->dx) memcpy(c->dx, c->dx0, (size_t)(s->batch * s->channels * s->height * s->width) * 4);
    return pmoe_hx_patch_scale_backward(s->batch, s->channels, s->height, s->width, s->patch,
                                        c->weight, c->x, c->dy, c->dx, c->dweight, NULL);
}

static void check_patch_scale(pmoe_patch_shape s, uint64_t seed) {
    char label[96], what[192];
    snprintf(label, sizeof label, "B%lld C%d %dx%d p%d", (long long)s.batch, s.channels, s.height,
             s.width, s.patch);
    const int64_t pixels = s.batch * s.channels * s.height * s.width;
    const int64_t wn = s.batch * pmoe_patch_count(&s);
    scale_case c = {.s = s};
    c.weight = frand(wn, seed, 0, 1);
    c.x = frand(pixels, seed + 1, -1, 1);
    c.dy = frand(pixels, seed + 2, -1, 1);
    c.dx0 = frand(pixels, seed + 3, -1, 1);
    c.y = fbuf(pixels), c.dx = fbuf(pixels), c.dweight = fbuf(wn);
    out_buf o = {c.y, (size_t)pixels * 4};
    snprintf(what, sizeof what, "patch_scale_forward %s", label);
    if (run_orders(what, call_scale, &c, &o, 1, 2)) {
        float *want = fbuf(pixels);
        cpu_patch_scale_forward(NULL, &s, c.weight, c.x, want);
        check_exact_f("  y vs CPU", c.y, want, pixels);
    }
    c.op = 1;
    float *dx = fcopy(c.dx0, pixels), *dweight = fbuf(wn);
    cpu_patch_scale_backward(NULL, &s, c.weight, c.x, c.dy, dx, dweight);
    out_buf bo[2] = {{c.dx, (size_t)pixels * 4}, {c.dweight, (size_t)wn * 4}};
    snprintf(what, sizeof what, "patch_scale_backward %s", label);
    if (run_orders(what, call_scale, &c, bo, 2, 2)) {
        check_exact_f("  dx += weight dy, vs CPU", c.dx, dx, pixels);
        /* measured at the most: 0.05 of this limit */
        close_scaled("  dweight (warp sum vs double)", c.dweight, dweight, wn, 1e-6);
    }
    float *dx_given = c.dx;
    c.dx = NULL;
    snprintf(what, sizeof what, "patch_scale_backward dx NULL %s", label);
    if (run_orders(what, call_scale, &c, bo + 1, 1, 2))
        close_scaled("  dweight", c.dweight, dweight, wn, 1e-6);
    c.dx = dx_given;
    c.dweight = NULL;
    snprintf(what, sizeof what, "patch_scale_backward dweight NULL %s", label);
    if (run_orders(what, call_scale, &c, bo, 1, 2)) check_exact_f("  dx vs CPU", c.dx, dx, pixels);
}

static void test_moe_layer(void) {
    printf("pMoE layer: scatter, position weights, patch scaling\n");
    check_moe((pmoe_scatter_shape){3, 16, 4, 5, 7}, 1, 200);
    check_moe((pmoe_scatter_shape){2, 9, 3, 9, 33}, 0, 210);   /* l = n, e past a warp */
    check_moe((pmoe_scatter_shape){2, 64, 8, 16, 40}, 1, 220); /* the n, k, l */
    free_all();
    check_patch_scale((pmoe_patch_shape){2, 3, 16, 16, 4}, 300);
    check_patch_scale((pmoe_patch_shape){3, 2, 13, 10, 4}, 310); /* p divides neither side */
    check_patch_scale((pmoe_patch_shape){1, 20, 8, 8, 8}, 320);  /* one patch, 1280 values */
    free_all();
}

/* ------------------------------------------------------------ channel copy */

typedef struct copy_shape {
    int64_t batch, spatial;
    int channels, src_channels, src_offset, dst_channels, dst_offset;
} copy_shape;

typedef struct copy_case {
    copy_shape s;
    const float *src, *start; /* start: dst's sentinel pattern */
    float *dst;
} copy_case;

static int call_copy(void *v) {
    copy_case *c = v;
    const copy_shape *s = &c->s;
    memcpy(c->dst, c->start, (size_t)(s->batch * s->dst_channels * s->spatial) * 4);
    return pmoe_hx_channel_copy(s->batch, s->spatial, s->channels, c->src, s->src_channels,
                                s->src_offset, c->dst, s->dst_channels, s->dst_offset, NULL);
}

/* dst starts as 1000 + its index, a value src (in [-1, 1)) never holds and
 * different at every place, so a value written outside the block, a block
 * value missed, or one written to the wrong place all show as a
 * difference from the reference over the whole of dst. */
static void check_channel_copy(copy_shape s, uint64_t seed) {
    char label[128], what[192];
    snprintf(label, sizeof label, "B%lld spatial %lld, %d channels: src %d+ of %d -> dst %d+ of %d",
             (long long)s.batch, (long long)s.spatial, s.channels, s.src_offset, s.src_channels,
             s.dst_offset, s.dst_channels);
    const int64_t sn = s.batch * s.src_channels * s.spatial;
    const int64_t dn = s.batch * s.dst_channels * s.spatial;
    copy_case c = {.s = s, .src = frand(sn, seed, -1, 1), .dst = fbuf(dn)};
    float *start = fbuf(dn);
    for (int64_t i = 0; i < dn; i++) start[i] = 1000.0f + (float)i; /* exact below 2^24 */
    c.start = start;

    /* The naive loop, the reference for the twin. */
    float *naive = fcopy(start, dn);
    for (int64_t b = 0; b < s.batch; b++)
        for (int ch = 0; ch < s.channels; ch++)
            for (int64_t i = 0; i < s.spatial; i++)
                naive[(b * s.dst_channels + s.dst_offset + ch) * s.spatial + i] =
                    c.src[(b * s.src_channels + s.src_offset + ch) * s.spatial + i];
    float *twin = fcopy(start, dn);
    cpu_channel_copy(NULL, s.batch, s.spatial, s.channels, c.src, s.src_channels, s.src_offset,
                     twin, s.dst_channels, s.dst_offset);
    snprintf(what, sizeof what, " cpu_channel_copy %s", label);
    printf("%s\n", what);
    check_exact_f("  twin vs naive loop (whole dst)", twin, naive, dn);

    out_buf o = {c.dst, (size_t)dn * 4};
    snprintf(what, sizeof what, "channel_copy %s", label);
    if (run_orders(what, call_copy, &c, &o, 1, 2))
        check_exact_f("  vs CPU (whole dst)", c.dst, twin, dn);
}

static void test_channel_copy(void) {
    printf("channel copy\n");
    /* moe_conv's uses: an expert's e channels into the output map at s e, the
     * first and the last expert, and the gradient's block back out */
    check_channel_copy((copy_shape){3, 64, 4, 4, 0, 16, 0}, 400);
    check_channel_copy((copy_shape){3, 64, 4, 4, 0, 16, 12}, 410);
    check_channel_copy((copy_shape){3, 64, 4, 16, 12, 4, 0}, 420);
    check_channel_copy((copy_shape){2, 49, 5, 20, 0, 20, 15}, 430); /* start to end */
    check_channel_copy((copy_shape){2, 49, 5, 20, 15, 20, 0}, 440); /* end to start */
    check_channel_copy((copy_shape){37, 1, 3, 8, 2, 9, 5}, 450);    /* spatial 1, middles */
    check_channel_copy((copy_shape){2, 300, 7, 7, 0, 7, 0}, 460);   /* whole maps */
    check_channel_copy((copy_shape){4, 13, 1, 3, 1, 5, 4}, 470);    /* one channel, odd sizes */
    /* 81920 values: the twin's OpenMP path, 320 blocks in the emulator */
    check_channel_copy((copy_shape){16, 32 * 32, 5, 10, 5, 20, 15}, 480);
    free_all();
}

/* ------------------------------------------------------------ argument errors */

static void test_errors(void) {
    printf("argument errors\n");
    int rc = pmoe_hx_batchnorm_forward_train(70000, 2, 40000, 1e-5f, NULL, NULL, NULL, NULL, NULL,
                                             NULL, NULL, NULL, 0.1f, NULL, NULL);
    CHECK_MSG(rc == PMOE_KERNEL_ERR_ARGS, "2.8e9 values in a channel: rc %d", rc);
    CHECK(pmoe_hx_batchnorm_forward_train(1, 2, 3, 0.0f, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                                          NULL, 0.1f, NULL, NULL) == PMOE_KERNEL_ERR_ARGS);
    rc = pmoe_hx_moe_scatter_forward(1, 4, 2, 5, 3, NULL, NULL, NULL, NULL, NULL);
    CHECK(rc == PMOE_KERNEL_ERR_ARGS);
    CHECK_MSG(strstr(pmoe_hx_error_string(rc), "l=5") != NULL, "message: %s",
              pmoe_hx_error_string(rc));
    CHECK(pmoe_hx_patch_scale_forward(1, 1, 3, 3, 4, NULL, NULL, NULL, NULL) ==
          PMOE_KERNEL_ERR_ARGS);
    CHECK(pmoe_hx_axpby(-1, 1.0f, NULL, 0.0f, NULL, NULL) == PMOE_KERNEL_ERR_ARGS);
    /* A block past either map's channels, or before its first. */
    rc = pmoe_hx_channel_copy(2, 4, 3, NULL, 8, 6, NULL, 8, 0, NULL);
    CHECK(rc == PMOE_KERNEL_ERR_ARGS);
    CHECK_MSG(strstr(pmoe_hx_error_string(rc), "src 6+3 of 8") != NULL, "message: %s",
              pmoe_hx_error_string(rc));
    CHECK(pmoe_hx_channel_copy(2, 4, 3, NULL, 8, 0, NULL, 8, 6, NULL) == PMOE_KERNEL_ERR_ARGS);
    CHECK(pmoe_hx_channel_copy(2, 4, 3, NULL, 8, -1, NULL, 8, 0, NULL) == PMOE_KERNEL_ERR_ARGS);
    CHECK(pmoe_hx_channel_copy(2, 4, 3, NULL, 8, 0, NULL, 8, -1, NULL) == PMOE_KERNEL_ERR_ARGS);
    CHECK(pmoe_hx_channel_copy(2, 4, 0x7fffffff, NULL, 8, 0x7fffffff, NULL, 8, 0, NULL) ==
          PMOE_KERNEL_ERR_ARGS); /* offset + channels past INT_MAX */
    CHECK(pmoe_hx_channel_copy(-1, 4, 3, NULL, 8, 0, NULL, 8, 0, NULL) == PMOE_KERNEL_ERR_ARGS);
    /* Nothing to copy is no error and touches nothing. */
    CHECK(pmoe_hx_channel_copy(0, 4, 3, NULL, 8, 0, NULL, 8, 0, NULL) == 0);
    CHECK(pmoe_hx_channel_copy(2, 4, 0, NULL, 8, 8, NULL, 8, 8, NULL) == 0);
    CHECK(pmoe_hx_axpby(0, 1.0f, NULL, 0.0f, NULL, NULL) == 0); /* nothing to do is no error */
    /* An empty batch: the bias gradient is an empty sum, 0; batch norm does
     * nothing, as its twin. */
    float dbias[3] = {NAN, NAN, NAN};
    CHECK(pmoe_hx_channel_bias_backward(0, 3, 5, NULL, dbias, NULL) == 0);
    CHECK(dbias[0] == 0.0f && dbias[1] == 0.0f && dbias[2] == 0.0f);
    CHECK(pmoe_hx_batchnorm_forward_train(0, 3, 5, 1e-5f, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                                          NULL, 0.1f, NULL, NULL) == 0);
    CHECK(pmoe_hx_batchnorm_backward(0, 3, 5, NULL, NULL, NULL, NULL, NULL, NULL, dbias, NULL, NULL,
                                     NULL) == 0);
}

int main(void) {
    const clock_t start = clock();
    run_orders_announce = 1;
    test_relu_axpby();
    test_pool_bias();
    test_batchnorm();
    test_moe_layer();
    test_channel_copy();
    test_errors();
    return host_exec_finish("test_kernels_host_layers", start);
}
