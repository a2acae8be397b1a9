/* flops.c: the FLOP counts of the two-layer model and of the deep models
 * (see flops.h).
 *
 * THE TWO-LAYER MODEL. Per sample, with n patches of dimension d, k experts, top-l, h hidden units
 * per expert (m = k h in all), c classes (1 for the logistic output), batch B:
 *
 *   patch_extract  0: copies.
 *   router         forward 2 n k d (every patch against every router).
 *                  backward (only when the router learns) useful 2 k l d with
 *                  the renormalised gate (dscores is zero off the l picks)
 *                  and 2 n k d with softmax_all; executed 2 n k d (one dense
 *                  GEMM over all n rows, zeros included), or the useful 2 k l
 *                  d where the fused experts' backward folds it in over the
 *                  picks (router_over_picks). No gradient to the
 *                  patches: they are input data, so none is computed.
 *   gate_topl      top-l is comparisons: 0 FLOPs. The softmax is counted at a
 *                  nominal 4 FLOPs per element (subtract the max, exp, sum,
 *                  divide) forward: renorm 4 k l, softmax_all 4 k n, ones 0;
 *                  backward: the Jacobian, 4 k l (renorm) or 4 k l + 4 k n
 *                  (softmax_all), plus dL/dG = sum_r dunit[r] h[r] / l, 2 l m
 *                  + k l. That contraction runs inside combine_backward but
 *                  is booked here, to the layer whose learning needs it, so
 *                  that the combine layer costs the same with and without a
 *                  router.
 *   dispatch       0: a gather (and no backward: the patches need none).
 *   experts        forward 2 l m d, backward 2 l m d (dW only; ReLU and its
 *                  mask are comparisons). dense_masked: n in place of l.
 *   combine        forward c (2 l m + 2 k l) + c: contract each selected
 *                  row's h units with a, scale by G and sum, then / l.
 *                  backward, dL/dh: executed l m (2 c + 2) (the kernel
 *                  recomputes dunit[r] = sum_c dL/df_c a[r, c] for every
 *                  row), useful 2 m c + l m + k l (dunit once per sample and
 *                  expert, then times G / l). With trained output weights,
 *                  dL/da: executed 3 l m c, useful 2 l m c + l m, plus m c / B
 *                  for the final / l.
 *   loss           nominal 4 c forward and 4 c backward; not in inference.
 *   update         per step, per updated parameter: useful 2 (lr times
 *                  gradient, subtract) + 2 for weight decay + 2 for momentum;
 *                  executed 4 + 2 for momentum (the kernel always adds the
 *                  weight-decay term).
 *
 * The CNN is the same list with k = 1, l = n, G = 1 and no router, gate or
 * dispatch. So a pMoE with k = 1 and l = n has exactly the CNN's counts in
 * every layer but router and gate_topl, and its update exceeds the CNN's by
 * the router's k d parameters; the test holds the code to that.
 *
 * THE DEEP MODELS (WRN, WRN-pMoE), per sample, one row per layer of the list.
 * A convolution has K output channels of P x Q from C x H x W with an R x S
 * kernel; an elementwise layer has N values per sample (its output's C H W;
 * batch norm and pooling: their input's).
 *   conv        forward 2 K C R S P Q (+ K P Q with a bias); backward the
 *               weight gradient 2 K C R S P Q (+ K P Q) and the input
 *               gradient 2 K C R S P Q, except where the input has no
 *               gradient (the first convolution reads the images): the
 *               kernel skips it, and nothing needs it. Useful = executed:
 *               im2col's zero padding is inside the count, as is usual.
 *   batch norm  per element: training forward 7 (mean 1; variance: subtract,
 *               square, add 3; normalise: subtract, scale, shift 3); the
 *               evaluation forward 3 (running statistics: no sums);
 *               backward 12 (the two sums, 5; then dx, 7). Per-channel terms
 *               (C per step) are left out.
 *   relu        1 forward (the select), 1 backward (the masked add).
 *   add         useful 1 forward and 1 backward (the two branches' gradients
 *               summed at the fork); executed: forward a scaled copy (1) and
 *               an axpby (3: alpha x + beta y), backward two axpby (6).
 *   pool        1 per input element forward (the sum; the divide is per
 *               row), 1 backward.
 *   fc          forward 2 I O + O; backward 2 I O (weights) + O (bias) +
 *               2 I O (input, when it has a gradient).
 *   loss        nominal 4 c forward and 4 c backward, as above.
 *   update      as above, over the parameters the SGD step updates (batch
 *               norm's running statistics are not among them).
 * The pMoE layer on a C x H x W map: n = H W / p^2 patches of d = C p^2, k
 * experts of e = C / k output channels and an r x r kernel, top-l. Its input
 * always has a gradient (it follows a convolution). Sparse: each expert's
 * rows are its l patches; dense-masked: the whole map, i.e. n "patches".
 * With R = l (sparse) or n (dense-masked):
 *   router      forward 2 n k d (every patch against every router), in every
 *               form. Backward, when the gate learns: useful 2 k l d for the
 *               router's gradient and 2 k l d for the patches' (the scores'
 *               gradient is zero off the picks; softmax_all: 2 n k d each);
 *               executed two dense GEMMs, 4 n k d. Executed also folds the
 *               patches' gradient onto the map and adds it to dx (an axpby,
 *               3 n d): sparse always, dense-masked when the gate learns.
 *   gate_topl   forward: the softmax at 4 per value, 4 k l (renorm) or 4 k n
 *               (softmax_all), 0 with G = 1. Backward, when it learns: the
 *               Jacobian (4 k l, or 4 k l + 4 k n) and dL/dG, the gated
 *               output against its gradient: 2 l d sparse (k l picks of e p^2
 *               values), 2 n d dense-masked (every expert's whole map).
 *   dispatch    sparse: the gather is copies (0); backward the experts'
 *               patch gradients added into the patches' (k l d). Dense-masked:
 *               forward the mask times the map per expert (k n d), backward
 *               dx += mask * gradient per expert (2 k n d).
 *   experts     per expert batch norm (7), ReLU (1) on R d values and the
 *               convolution 2 e C r^2 p^2 per patch: forward k R d (7 + 1) +
 *               2 R C^2 r^2 p^2 (evaluation: 3 in place of 7); backward
 *               k R d (12 + 1) + 4 R C^2 r^2 p^2. Useful: R = l. So the
 *               dense-masked experts execute exactly n / l times the sparse.
 *   combine     the gate's scale: forward l d (sparse) or n d (dense-masked:
 *               the gate map over each expert's whole map); backward l d or
 *               2 n d (the dense form's dx += weight * dy); useful l d each
 *               way, 0 with G = 1 (a scale by one). The scatter and channel
 *               copies are 0.
 * Every layer outside the pMoE layer costs the same in a WRN-pMoE as in its
 * WRN (the same layer on the same shape); the test holds the code to that. */
#include "model/flops.h"

#include <stdio.h>
#include <string.h>

#include "model/deep_layers.h"
#include "model/moe_conv.h"
#include "model/two_layer.h"
#include "model/wrn.h"

_Static_assert(
    PMOE_FLOP_MAX_LAYERS >= DEEP_MAX_LAYERS + 5,
    "a flop report holds every layer of a deep model, the pMoE layer's split and the loss");

pmoe_two_layer_cost_shape pmoe_two_layer_cost_shape_of(const pmoe_model *m,
                                                       const pmoe_train_config *train) {
    const two_layer_model *t = two_layer_of_const(m);
    pmoe_two_layer_cost_shape s;
    memset(&s, 0, sizeof s);
    s.has_router = t->has_router;
    s.patches = t->patch_count;
    s.dim = t->patch_dim;
    s.experts = t->experts;
    s.topl = t->topl;
    s.hidden = t->hidden;
    s.classes = m->classes;
    s.gate = t->gate_mode;
    s.learn_router = t->has_router && pmoe_model_updates(m, PARAM_ROUTER);
    s.router_over_picks = t->has_router && two_layer_folds_router(t);
    s.train_output = pmoe_model_updates(m, PARAM_OUTPUT);
    s.momentum = train->momentum > 0.0;
    s.weight_decay = train->weight_decay > 0.0;
    return s;
}

/* The next row; a report that is full (never, by the assertion above) keeps
 * rewriting its last row rather than overflow. */
static pmoe_layer_flops *add_layer(pmoe_flop_report *r, const char *name) {
    if (r->layer_count == PMOE_FLOP_MAX_LAYERS) r->layer_count--;
    pmoe_layer_flops *L = &r->layers[r->layer_count++];
    memset(L, 0, sizeof *L);
    snprintf(L->name, sizeof L->name, "%s", name);
    return L;
}

static void set3(double *v, double useful, double executed, double dense_masked) {
    v[PMOE_FLOPS_USEFUL] = useful;
    v[PMOE_FLOPS_EXECUTED] = executed;
    v[PMOE_FLOPS_DENSE_MASKED] = dense_masked;
}

void pmoe_flops_two_layer(const pmoe_two_layer_cost_shape *s, int64_t batch,
                          pmoe_flop_report *out) {
    memset(out, 0, sizeof *out);
    out->batch = batch;
    const double n = s->patches, d = s->dim, c = s->classes, B = (double)batch;
    const double k = s->has_router ? s->experts : 1, l = s->has_router ? s->topl : s->patches;
    const double m = k * s->hidden;
    const int router = s->has_router, learn = s->has_router && s->learn_router;

    add_layer(out, "patch_extract");

    pmoe_layer_flops *L = add_layer(out, "router");
    if (router) {
        set3(L->forward, 2 * n * k * d, 2 * n * k * d, 2 * n * k * d);
        if (learn) {
            const double useful = s->gate == PMOE_GATE_SOFTMAX_ALL ? 2 * n * k * d : 2 * k * l * d;
            set3(L->backward, useful, s->router_over_picks ? useful : 2 * n * k * d, 2 * n * k * d);
        }
    }

    L = add_layer(out, "gate_topl");
    if (router && s->gate != PMOE_GATE_ONES) {
        const double fwd = s->gate == PMOE_GATE_RENORM ? 4 * k * l : 4 * k * n;
        set3(L->forward, fwd, fwd, fwd);
        if (learn) {
            const double jac = s->gate == PMOE_GATE_RENORM ? 4 * k * l : 4 * k * l + 4 * k * n;
            /* dL/dG over the l picks (dense_masked: over all n) */
            const double dg = 2 * l * m + k * l, dg_dense = 2 * n * m + k * n;
            set3(L->backward, jac + dg, jac + dg, jac + dg_dense);
        }
    }

    add_layer(out, "dispatch");

    L = add_layer(out, "experts");
    set3(L->forward, 2 * l * m * d, 2 * l * m * d, 2 * n * m * d);
    set3(L->backward, 2 * l * m * d, 2 * l * m * d, 2 * n * m * d);

    L = add_layer(out, "combine");
    set3(L->forward, c * (2 * l * m + 2 * k * l) + c, c * (2 * l * m + 2 * k * l) + c,
         c * (2 * n * m + 2 * k * n) + c);
    set3(L->backward, 2 * m * c + l * m + k * l, l * m * (2 * c + 2), n * m * (2 * c + 2));
    if (s->train_output) {
        const double per_step = m * c / B;
        L->backward[PMOE_FLOPS_USEFUL] += 2 * l * m * c + l * m + per_step;
        L->backward[PMOE_FLOPS_EXECUTED] += 3 * l * m * c + per_step;
        L->backward[PMOE_FLOPS_DENSE_MASKED] += 3 * n * m * c + per_step;
    }

    L = add_layer(out, "loss");
    L->is_loss = 1;
    set3(L->forward, 4 * c, 4 * c, 4 * c);
    set3(L->backward, 4 * c, 4 * c, 4 * c);

    const double params = (learn ? k * d : 0) + m * d + (s->train_output ? m * c : 0);
    const double useful = params * (2 + 2 * (s->weight_decay != 0) + 2 * (s->momentum != 0));
    const double executed = params * (4 + 2 * (s->momentum != 0));
    set3(out->update, useful, executed, executed);
}

/* ---- the deep models ---- */

/* Per-element constants of the cheap layers (see the header comment). */
enum {
    BN_FORWARD_TRAIN = 7,
    BN_FORWARD_EVAL = 3,
    BN_BACKWARD = 12,
    RELU_FORWARD = 1,
    RELU_BACKWARD = 1,
    ADD_EXECUTED_FORWARD = 4,  /* a scaled copy, then an axpby */
    ADD_EXECUTED_BACKWARD = 6, /* two axpby */
    AXPBY = 3                  /* alpha x + beta y */
};

static void set_all(double *v, double x) { set3(v, x, x, x); }

/* useful, then executed in the layer's own form, then dense-masked. */
static void set_form(double *v, int dense_form, double useful, double sparse, double dense) {
    set3(v, useful, dense_form ? dense : sparse, dense);
}

static double values(const deep_activation *a) {
    return (double)a->channels * a->height * a->width;
}

/* The SGD update over the parameters the step updates. */
static void set_update(pmoe_flop_report *out, double params, const pmoe_train_config *train) {
    const int momentum = train && train->momentum > 0.0, decay = train && train->weight_decay > 0.0;
    const double useful = params * (2 + 2 * decay + 2 * momentum);
    const double executed = params * (4 + 2 * momentum);
    set3(out->update, useful, executed, executed);
}

static void conv_row(const pmoe_deep_model *d, const deep_layer *L, pmoe_layer_flops *row) {
    const pmoe_conv_shape *c = &L->conv;
    const double outputs = (double)c->out_channels * pmoe_conv_out_height(c) *
                           pmoe_conv_out_width(c);
    const double gemm = 2.0 * outputs * c->in_channels * c->kernel_h * c->kernel_w;
    const double bias = L->has_bias ? outputs : 0.0;
    set_all(row->forward, gemm + bias);
    set_all(row->backward, gemm + bias + (d->acts[L->in].grad ? gemm : 0.0));
}

/* The pMoE layer's five rows. */
static void moe_rows(const pmoe_model *m, const deep_layer *DL, pmoe_flop_report *out) {
    const moe_conv_layer *L = DL->moe;
    const double n = L->patches, d = L->dim, k = L->experts, l = L->topl, C = L->channels;
    const double e = L->expert_channels, pp = (double)L->patch * L->patch;
    const double r2 = (double)L->kernel * L->kernel;
    const double od = k * e * pp; /* output values per patch (C_out p^2) */
    const int gated = L->gate_mode != PMOE_GATE_ONES;
    const int learn = gated && m->params[L->first_param].trainable;
    const int all = L->gate_mode == PMOE_GATE_SOFTMAX_ALL;
    const int dense = L->impl == PMOE_MOE_DENSE_MASKED;
    char name[sizeof out->layers[0].name];
#define ROW(part) (snprintf(name, sizeof name, "%s.%s", DL->name, part), add_layer(out, name))

    pmoe_layer_flops *R = ROW("router");
    set_all(R->forward, 2 * n * k * d);
    const double gemms = 4 * n * k * d, fold = AXPBY * n * d;
    if (learn)
        set_form(R->backward, dense, all ? gemms : 4 * k * l * d, gemms + fold, gemms + fold);
    else set_form(R->backward, dense, 0, fold, 0);

    R = ROW("gate_topl");
    const double softmax = !gated ? 0 : all ? 4 * k * n : 4 * k * l;
    set_all(R->forward, softmax);
    if (learn) {
        const double jacobian = all ? 4 * k * l + 4 * k * n : 4 * k * l;
        set_form(R->backward, dense, jacobian + 2 * l * od, jacobian + 2 * l * od,
                 jacobian + 2 * n * od);
    }

    R = ROW("dispatch");
    set_form(R->forward, dense, 0, 0, k * n * d);
    set_form(R->backward, dense, k * l * d, k * l * d, 2 * k * n * d);

    /* per expert: batch norm and ReLU on its rows' values, then the convolution */
    const double conv_per_patch = 2 * k * e * C * r2 * pp;
#define EXPERTS(rows, bn) (k * (rows)*d * ((bn) + RELU_FORWARD) + conv_per_patch * (rows))
    R = ROW("experts");
    set_form(R->forward, dense, EXPERTS(l, BN_FORWARD_TRAIN), EXPERTS(l, BN_FORWARD_TRAIN),
             EXPERTS(n, BN_FORWARD_TRAIN));
    R->has_eval = 1;
    set_form(R->eval_forward, dense, EXPERTS(l, BN_FORWARD_EVAL), EXPERTS(l, BN_FORWARD_EVAL),
             EXPERTS(n, BN_FORWARD_EVAL));
    const double bwd_values = BN_BACKWARD + RELU_BACKWARD;
    set_form(R->backward, dense, k * l * d * bwd_values + 2 * conv_per_patch * l,
             k * l * d * bwd_values + 2 * conv_per_patch * l,
             k * n * d * bwd_values + 2 * conv_per_patch * n);
#undef EXPERTS

    R = ROW("combine");
    set_form(R->forward, dense, gated ? l * od : 0, l * od, n * od);
    set_form(R->backward, dense, gated ? l * od : 0, l * od, 2 * n * od);
#undef ROW
}

void pmoe_flops_deep(const pmoe_model *m, const pmoe_train_config *train, int64_t batch,
                     pmoe_flop_report *out) {
    memset(out, 0, sizeof *out);
    out->batch = batch;
    if (m->ops != &wrn_model_ops) return;
    const pmoe_deep_model *d = deep_of_const(m);
    for (int i = 0; i < d->layer_count; i++) {
        const deep_layer *L = &d->layers[i];
        if (L->kind == LAYER_MOE) {
            moe_rows(m, L, out);
            continue;
        }
        pmoe_layer_flops *row = add_layer(out, L->name);
        const double in = values(&d->acts[L->in]), outs = values(&d->acts[L->out]);
        switch (L->kind) {
        case LAYER_CONV: conv_row(d, L, row); break;
        case LAYER_BN:
            set_all(row->forward, BN_FORWARD_TRAIN * in);
            row->has_eval = 1;
            set_all(row->eval_forward, BN_FORWARD_EVAL * in);
            set_all(row->backward, BN_BACKWARD * in);
            break;
        case LAYER_RELU:
            set_all(row->forward, RELU_FORWARD * outs);
            set_all(row->backward, RELU_BACKWARD * outs);
            break;
        case LAYER_ADD:
            set3(row->forward, outs, ADD_EXECUTED_FORWARD * outs, ADD_EXECUTED_FORWARD * outs);
            set3(row->backward, outs, ADD_EXECUTED_BACKWARD * outs, ADD_EXECUTED_BACKWARD * outs);
            break;
        case LAYER_POOL:
            set_all(row->forward, in);
            set_all(row->backward, in);
            break;
        case LAYER_FC:
            set_all(row->forward, 2 * in * outs + outs);
            set_all(row->backward,
                    2 * in * outs + outs + (d->acts[L->in].grad ? 2 * in * outs : 0));
            break;
        case LAYER_MOE: break;
        }
    }
    pmoe_layer_flops *loss = add_layer(out, "loss");
    loss->is_loss = 1;
    set_all(loss->forward, 4.0 * m->classes);
    set_all(loss->backward, 4.0 * m->classes);
    double params = 0;
    for (int i = 0; i < m->param_count; i++)
        if (pmoe_model_updates(m, i)) params += (double)pmoe_tensor_numel(&m->params[i].value);
    set_update(out, params, train);
}

/* ---- sums ---- */

double pmoe_layer_flops_train(const pmoe_layer_flops *L, pmoe_flop_kind kind) {
    return L->forward[kind] + L->backward[kind];
}

double pmoe_layer_flops_infer(const pmoe_layer_flops *L, pmoe_flop_kind kind) {
    return L->has_eval ? L->eval_forward[kind] : L->forward[kind];
}

double pmoe_flops_train_per_sample(const pmoe_flop_report *r, pmoe_flop_kind kind) {
    double total = 0.0;
    for (int i = 0; i < r->layer_count; i++)
        total += r->layers[i].forward[kind] + r->layers[i].backward[kind];
    return total + (r->batch > 0 ? r->update[kind] / (double)r->batch : 0.0);
}

double pmoe_flops_infer_per_sample(const pmoe_flop_report *r, pmoe_flop_kind kind) {
    double total = 0.0;
    for (int i = 0; i < r->layer_count; i++)
        if (!r->layers[i].is_loss) total += pmoe_layer_flops_infer(&r->layers[i], kind);
    return total;
}

const pmoe_layer_flops *pmoe_flops_layer(const pmoe_flop_report *r, const char *name) {
    for (int i = 0; i < r->layer_count; i++)
        if (strcmp(r->layers[i].name, name) == 0) return &r->layers[i];
    return NULL;
}

int pmoe_flops_unshared(const pmoe_flop_report *a, const pmoe_flop_report *b, const char *name,
                        pmoe_layer_flops *out) {
    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "%s", name);
    out->has_eval = 1;
    int count = 0;
    for (int i = 0; i < a->layer_count; i++) {
        const pmoe_layer_flops *L = &a->layers[i];
        if (pmoe_flops_layer(b, L->name)) continue;
        count++;
        for (int k = 0; k < PMOE_FLOPS_KINDS; k++) {
            out->forward[k] += L->forward[k];
            out->backward[k] += L->backward[k];
            out->eval_forward[k] += pmoe_layer_flops_infer(L, (pmoe_flop_kind)k);
        }
    }
    return count;
}

const char *pmoe_flop_kind_name(pmoe_flop_kind kind) {
    switch (kind) {
    case PMOE_FLOPS_USEFUL: return "useful";
    case PMOE_FLOPS_EXECUTED: return "executed";
    case PMOE_FLOPS_DENSE_MASKED: return "dense_masked";
    default: return "?";
    }
}

void pmoe_flops_model(const pmoe_model *m, const pmoe_train_config *train, int64_t batch,
                      pmoe_flop_report *out) {
    if (m->ops == &wrn_model_ops) {
        pmoe_flops_deep(m, train, batch, out);
        return;
    }
    const pmoe_two_layer_cost_shape shape = pmoe_two_layer_cost_shape_of(m, train);
    pmoe_flops_two_layer(&shape, batch, out);
}
