/* flops.c: the two-layer model's FLOP counts (see flops.h).
 *
 * Per sample, with n patches of dimension d, k experts, top-l, h hidden units
 * per expert (m = k h in all), c classes (1 for the logistic output), batch B:
 *
 *   patch_extract  0: copies.
 *   router         forward 2 n k d (every patch against every router).
 *                  backward (only when the router learns) useful 2 k l d with
 *                  the renormalised gate (dscores is zero off the l picks)
 *                  and 2 n k d with softmax_all; executed 2 n k d (one dense
 *                  GEMM over all n rows, zeros included). No gradient to the
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
 * the router's k d parameters; the test holds the code to that. */
#include "model/flops.h"

#include <string.h>

pmoe_two_layer_cost_shape pmoe_two_layer_cost_shape_of(const pmoe_two_layer *m,
                                                       const pmoe_train_config *train) {
    pmoe_two_layer_cost_shape s;
    memset(&s, 0, sizeof s);
    s.has_router = m->has_router;
    s.patches = m->patch_count;
    s.dim = m->patch_dim;
    s.experts = m->experts;
    s.topl = m->topl;
    s.hidden = m->hidden;
    s.classes = m->classes;
    s.gate = m->gate_mode;
    s.learn_router = m->has_router && pmoe_two_layer_updates(m, PARAM_ROUTER);
    s.train_output = pmoe_two_layer_updates(m, PARAM_OUTPUT);
    s.momentum = train->momentum > 0.0;
    s.weight_decay = train->weight_decay > 0.0;
    return s;
}

static pmoe_layer_flops *add_layer(pmoe_flop_report *r, const char *name) {
    pmoe_layer_flops *L = &r->layers[r->layer_count++];
    memset(L, 0, sizeof *L);
    L->name = name;
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
            set3(L->backward, useful, 2 * n * k * d, 2 * n * k * d);
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

double pmoe_flops_train_per_sample(const pmoe_flop_report *r, pmoe_flop_kind kind) {
    double total = 0.0;
    for (int i = 0; i < r->layer_count; i++)
        total += r->layers[i].forward[kind] + r->layers[i].backward[kind];
    return total + (r->batch > 0 ? r->update[kind] / (double)r->batch : 0.0);
}

double pmoe_flops_infer_per_sample(const pmoe_flop_report *r, pmoe_flop_kind kind) {
    double total = 0.0;
    for (int i = 0; i < r->layer_count; i++)
        if (!r->layers[i].is_loss) total += r->layers[i].forward[kind];
    return total;
}

const pmoe_layer_flops *pmoe_flops_layer(const pmoe_flop_report *r, const char *name) {
    for (int i = 0; i < r->layer_count; i++)
        if (strcmp(r->layers[i].name, name) == 0) return &r->layers[i];
    return NULL;
}

const char *pmoe_flop_kind_name(pmoe_flop_kind kind) {
    switch (kind) {
    case PMOE_FLOPS_USEFUL: return "useful";
    case PMOE_FLOPS_EXECUTED: return "executed";
    case PMOE_FLOPS_DENSE_MASKED: return "dense_masked";
    default: return "?";
    }
}
