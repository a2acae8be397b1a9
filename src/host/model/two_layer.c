/* two_layer.c: forward, backward and update of the two-layer pMoE and CNN
 * (see model.h), written once against the backend table and, for expert
 * parallelism, the communicator table: no #ifdef, no MPI or CUDA header. */
#include "model/two_layer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"

/* Stream ids for parameter initialisation, so each tensor's values depend
 * only on (train.seed, which tensor, index). */
enum { STREAM_ROUTER = 101, STREAM_EXPERT = 102, STREAM_OUTPUT = 103 };

static pmoe_status alloc_bytes(pmoe_backend *be, size_t bytes, void *out, pmoe_error *err) {
    return be->alloc(be, bytes, (void **)out, err);
}

static pmoe_status init_param(pmoe_model *m, pmoe_param *p, const char *name, const char *field,
                              int ndim, const int64_t *shape, int trainable, int with_velocity,
                              const float *host_init, pmoe_error *err) {
    p->name = name;
    p->field = field;
    p->trainable = trainable;
    pmoe_status s = pmoe_tensor_alloc(m->be, &p->value, ndim, shape, err);
    if (!s && trainable) s = pmoe_tensor_alloc(m->be, &p->grad, ndim, shape, err);
    if (!s && trainable && with_velocity) {
        s = pmoe_tensor_alloc(m->be, &p->velocity, ndim, shape, err);
        if (!s) m->be->fill(m->be, p->velocity.data, 0.0f, pmoe_tensor_numel(&p->velocity));
    }
    if (!s)
        s = m->be->copy_in(m->be, p->value.data, host_init,
                           (size_t)pmoe_tensor_numel(&p->value) * sizeof(float), err);
    return s;
}

static void fill_normal(float *x, int64_t count, uint64_t seed, uint64_t stream, double std) {
    pmoe_rng r = pmoe_rng_make(seed, stream);
    for (int64_t i = 0; i < count; i++) x[i] = (float)(std * pmoe_rng_normal_at(&r, (uint64_t)i));
}

/* Output weights a[s, r, c]: N(0, 1) (the paper) or +-1 with half of each
 * expert's units positive (the paper's code). */
static void fill_output(float *a, int k, int h, int c, pmoe_output_init how, uint64_t seed) {
    if (how == PMOE_OUTPUT_INIT_NORMAL) {
        fill_normal(a, (int64_t)k * h * c, seed, STREAM_OUTPUT, 1.0);
        return;
    }
    for (int s = 0; s < k; s++)
        for (int r = 0; r < h; r++)
            for (int j = 0; j < c; j++)
                a[((int64_t)s * h + r) * c + j] = ((r < (h + 1) / 2) ^ (j % 2)) ? 1.0f : -1.0f;
}

/* Sharded, with a backend that has the fused gather + expert ops (which one
 * process uses): the owners run their experts through the same ops, so each
 * expert's arithmetic is the one-process arithmetic whichever kernels the
 * backend picks. An owner's rows of expert j, global sample order, are a
 * batch of B "samples" of l patches each, all of them selected (the identity
 * table): the very rows, in the very order, one process reads through
 * selected. */
static int owner_fused(const pmoe_model *m) {
    const two_layer_model *t = two_layer_of_const(m);
    return m->comm && t->has_router && !t->profile_experts && m->be->ops->expert_forward_gathered &&
           m->be->ops->expert_backward_gathered;
}

static pmoe_route_shape owner_shape(const pmoe_model *m, int64_t global_batch) {
    const two_layer_model *t = two_layer_of_const(m);
    return (pmoe_route_shape){global_batch, t->topl, t->patch_dim, 1, t->topl, t->gate_mode};
}

static void two_layer_free(pmoe_model *m);
static int two_layer_updates(const pmoe_model *m, int i);

/* Every activation buffer of the model, in the order create allocates
 * them, with its size (0: this model has none: the CNN's routing, the
 * fused gather's expert_in, the exchange's buffers in one process) and
 * what it is for. create, free and the memory plan all read this one list. */
typedef enum { BUFFER_FORWARD, BUFFER_BACKWARD, BUFFER_EXCHANGE } buffer_kind;
typedef struct buffer {
    void *at; /* the address of the pointer field */
    int64_t bytes;
    buffer_kind kind;
} buffer;
enum { BUFFER_MAX = 24 };

static int buffers(two_layer_model *t, buffer *list) {
    pmoe_model *m = &t->base;
    const int64_t B = m->image.batch, n = t->patch_count, d = t->patch_dim, k = t->experts;
    const int64_t l = t->topl, h = t->hidden, c = m->classes, rows = B * l;
    const int64_t image = (int64_t)m->image.channels * m->image.height * m->image.width;
    const int64_t kr = m->local_experts, global_rows = m->max_batch * l, F = 4, I = 4;
    const int routes = t->has_router, comm = m->comm != NULL;
    const buffer all[] = {
        {&m->images, B * image * F, BUFFER_FORWARD},
        {&t->patches, B * n * d * F, BUFFER_FORWARD},
        {&t->scores, routes ? B * n * k * F : 0, BUFFER_FORWARD},
        {&t->dscores, routes ? B * n * k * F : 0, BUFFER_BACKWARD},
        {&t->gate, routes ? B * k * l * F : 0, BUFFER_FORWARD},
        {&t->dgate, routes ? B * k * l * F : 0, BUFFER_BACKWARD},
        {&t->selected, routes ? B * k * l * I : 0, BUFFER_FORWARD},
        {&t->expert_in, routes && !t->gathered ? k * rows * d * F : 0, BUFFER_FORWARD},
        {&m->router_pair, routes ? B * I : 0, BUFFER_BACKWARD},
        {&m->router_weight, routes ? B * F : 0, BUFFER_BACKWARD},
        {&t->hidden_out, k * rows * h * F, BUFFER_FORWARD},
        {&t->dhidden, k * rows * h * F, BUFFER_BACKWARD},
        {&m->logits, B * c * F, BUFFER_FORWARD},
        {&m->dlogits, B * c * F, BUFFER_BACKWARD},
        {&m->labels, m->max_batch * I, BUFFER_FORWARD},
        {&m->stats, 2 * F, BUFFER_BACKWARD},
        {&t->expert_rows, comm ? kr * global_rows * d * F : 0, BUFFER_EXCHANGE},
        {&t->expert_hidden, comm ? kr * global_rows * h * F : 0, BUFFER_EXCHANGE},
        {&t->expert_dhidden, comm ? kr * global_rows * h * F : 0, BUFFER_EXCHANGE},
        {&t->logits_all, comm ? m->max_batch * c * F : 0, BUFFER_EXCHANGE},
        {&t->dlogits_all, comm ? m->max_batch * c * F : 0, BUFFER_EXCHANGE},
        {&t->identity, comm && owner_fused(m) ? global_rows * I : 0, BUFFER_EXCHANGE},
    };
    _Static_assert(sizeof all / sizeof all[0] <= BUFFER_MAX, "raise BUFFER_MAX");
    const int count = (int)(sizeof all / sizeof all[0]);
    for (int i = 0; i < count; i++) list[i] = all[i];
    return count;
}

static pmoe_status two_layer_create(pmoe_backend *be, pmoe_comm *comm, const pmoe_config *cfg,
                                    int channels, int height, int width, int patch, int classes,
                                    int64_t max_batch, pmoe_model **out, pmoe_error *err) {
    const pmoe_model_config *mc = &cfg->model;
    if (comm && !comm->distributed) comm = NULL;
    const int ranks = comm ? comm->size : 1;
    const int all_experts = mc->type == PMOE_MODEL_PMOE ? mc->experts : 1;
    if (all_experts % ranks)
        return pmoe_fail(err, PMOE_ERR_CONFIG,
                         "config: model.experts = %d is not divisible by the %d ranks: each rank "
                         "owns k / R experts; start a rank count that divides it%s",
                         all_experts, ranks,
                         mc->type == PMOE_MODEL_CNN ? " (the CNN has one expert: one rank)" : "");
    if (max_batch % ranks)
        return pmoe_fail(err, PMOE_ERR_CONFIG,
                         "config: a batch of %lld samples does not split evenly over %d ranks; "
                         "choose train.batch (and train.router_batch) divisible by the rank count",
                         (long long)max_batch, ranks);
    two_layer_model *t = calloc(1, sizeof *t);
    if (!t) return pmoe_fail(err, PMOE_ERR_OOM, "cannot allocate the model");
    pmoe_model *m = &t->base;
    m->ops = &two_layer_model_ops;
    m->be = be;
    m->params = t->params;
    m->param_count = PARAM_COUNT;
    m->training = 1;
    m->comm = comm;
    m->ranks = ranks;
    m->rank = comm ? comm->rank : 0;
    m->max_batch = max_batch;
    max_batch /= ranks; /* from here on: this rank's share */
    m->image = (pmoe_patch_shape){max_batch, channels, height, width, patch};
    t->patch_count = pmoe_patch_count(&m->image);
    t->patch_dim = pmoe_patch_dim(&m->image);
    m->classes = classes;
    t->has_router = mc->type == PMOE_MODEL_PMOE;
    t->experts = t->has_router ? mc->experts : 1;
    t->topl = t->has_router ? mc->topl : t->patch_count;
    t->hidden = mc->hidden / t->experts;
    t->gate_mode = t->has_router ? mc->gate : PMOE_GATE_ONES;
    /* one process: the backend's fused gather + expert ops, when it has them (expert
     * parallelism sends the dispatched rows, so it needs them written) */
    t->profile_experts = cfg->train.profile_experts;
    t->gathered = t->has_router && !m->comm && !t->profile_experts &&
                  be->ops->expert_forward_gathered && be->ops->expert_backward_gathered;
    if (t->has_router && cfg->train.mode == PMOE_TRAIN_SEPARATE) t->gate_mode = PMOE_GATE_ONES;

    m->expert_comm = comm;
    m->expert_ranks = ranks;
    m->local_experts = t->experts / ranks;
    m->expert_base = m->rank * m->local_experts;
    const int64_t d = t->patch_dim, k = t->experts, l = t->topl, h = t->hidden, c = classes;
    const int64_t kr = m->local_experts, global_rows = m->max_batch * l;
    const int momentum = cfg->train.momentum > 0.0;
    const uint64_t seed = cfg->train.seed;

    /* Parameters, initialised on the host and copied in. */
    int64_t largest = (k * d > k * h * d ? k * d : k * h * d) + k * h * c;
    const size_t init_bytes = (size_t)largest * sizeof(float);
    float *host = NULL; /* held while the params come */
    pmoe_status s = pmoe_backend_host_alloc(be, init_bytes, "the parameters' initial values",
                                            (void **)&host, err);
    if (!s && t->has_router) {
        double std = mc->router_init_std >= 0.0            ? mc->router_init_std
                     : cfg->train.mode == PMOE_TRAIN_JOINT ? 1e-4
                                                           : 0.1;
        fill_normal(host, k * d, seed, STREAM_ROUTER, std);
        s = init_param(m, &m->params[PARAM_ROUTER], "router.weight", NULL, 2, (int64_t[]){k, d}, 1,
                       momentum, host, err);
    }
    if (!s) { /* every rank draws all experts and keeps its own: the same values at any R */
        fill_normal(host, k * h * d, seed, STREAM_EXPERT, mc->expert_init_std);
        s = init_param(m, &m->params[PARAM_EXPERT], "experts.weight", "weight", 3,
                       (int64_t[]){kr, h, d}, 1, momentum, host + m->expert_base * h * d, err);
        m->params[PARAM_EXPERT].sharded = comm != NULL;
    }
    if (!s) {
        fill_output(host, (int)k, (int)h, (int)c, mc->output_init, seed);
        s = init_param(m, &m->params[PARAM_OUTPUT], "experts.output", "output", 3,
                       (int64_t[]){k, h, c}, mc->train_output, momentum, host, err);
    }
    pmoe_backend_host_free(be, host, init_bytes);

    /* Activations, as buffers() lists them. The CNN's expert reads the patches in place. */
    buffer list[BUFFER_MAX];
    const int count = buffers(t, list);
    for (int i = 0; !s && i < count; i++)
        if (list[i].bytes > 0) s = alloc_bytes(be, (size_t)list[i].bytes, list[i].at, err);
    if (!s && t->identity) {
        int32_t *host_identity = malloc((size_t)global_rows * sizeof(int32_t));
        if (!host_identity) s = pmoe_fail(err, PMOE_ERR_OOM, "cannot allocate the model");
        for (int64_t r = 0; !s && r < global_rows; r++) host_identity[r] = (int32_t)(r % l);
        if (!s)
            s = be->copy_in(be, t->identity, host_identity, (size_t)global_rows * sizeof(int32_t),
                            err);
        free(host_identity);
    }
    if (s) {
        two_layer_free(m);
        return s;
    }
    *out = m;
    return PMOE_OK;
}

static void two_layer_free(pmoe_model *m) {
    if (!m) return;
    two_layer_model *t = two_layer_of(m);
    pmoe_backend *be = m->be;
    for (int i = 0; i < PARAM_COUNT; i++) {
        pmoe_tensor_release(be, &m->params[i].value);
        pmoe_tensor_release(be, &m->params[i].grad);
        pmoe_tensor_release(be, &m->params[i].velocity);
    }
    buffer list[BUFFER_MAX];
    const int count = buffers(t, list);
    for (int i = 0; i < count; i++) be->release(be, *(void **)list[i].at, (size_t)list[i].bytes);
    free(t);
}

static void two_layer_memory_plan(const pmoe_model *m, pmoe_memory_plan *out) {
    buffer list[BUFFER_MAX];
    const int count = buffers((two_layer_model *)two_layer_of_const(m), list);
    out->parameter_bytes = pmoe_model_parameter_bytes(m);
    for (int i = 0; i < count; i++) {
        if (!*(void **)list[i].at) continue;
        if (list[i].kind == BUFFER_FORWARD) out->activation_bytes += list[i].bytes;
        if (list[i].kind == BUFFER_BACKWARD) out->backward_bytes += list[i].bytes;
    }
}

static pmoe_route_shape route_shape(const pmoe_model *m, int64_t batch) {
    const two_layer_model *t = two_layer_of_const(m);
    return (pmoe_route_shape){batch,      t->patch_count, t->patch_dim,
                              t->experts, t->topl,        t->gate_mode};
}

static pmoe_combine_shape combine_shape(const pmoe_model *m, int64_t batch) {
    const two_layer_model *t = two_layer_of_const(m);
    return (pmoe_combine_shape){batch, t->experts, t->topl, t->hidden, m->classes};
}

/* What the experts read: the dispatched rows, or (CNN) the patches in place. */
static const float *expert_input(const pmoe_model *m) {
    const two_layer_model *t = two_layer_of_const(m);
    return t->has_router ? t->expert_in : t->patches;
}

/* ---- expert parallelism ----
 *
 * The two exchanges of a step. `width` is d (patches) or h (outputs, their
 * gradients); b is this rank's sample count, so a block (one expert's rows
 * of one rank's samples) holds b l width floats. */

/* k x (b l) x width on every rank -> local_experts x (R b l) x width on the
 * owners, and back (comm.h's layouts). */
static void exchange_to_owners(pmoe_model *m, int64_t b, int64_t width, const float *from,
                               float *to) {
    two_layer_model *t = two_layer_of(m);
    const int64_t block = b * t->topl * width;
    const pmoe_exchange_layout layout = pmoe_exchange_to_owners(block, m->local_experts, m->ranks);
    m->comm->all_to_all(m->comm, from, to, &layout);
    m->exchange_bytes += (int64_t)sizeof(float) * (m->ranks - 1) * m->local_experts * block;
}

static void exchange_from_owners(pmoe_model *m, int64_t b, int64_t width, const float *from,
                                 float *to) {
    two_layer_model *t = two_layer_of(m);
    const int64_t block = b * t->topl * width;
    const pmoe_exchange_layout layout =
        pmoe_exchange_from_owners(block, m->local_experts, m->ranks);
    m->comm->all_to_all(m->comm, from, to, &layout);
    m->exchange_bytes += (int64_t)sizeof(float) * (m->ranks - 1) * m->local_experts * block;
}

/* A replicated parameter's gradient, summed over the ranks' samples. */
static void all_reduce(pmoe_model *m, float *buf, int64_t count) {
    pmoe_model_all_reduce(m, m->comm, buf, count);
}

/* The experts' products for `count` experts (global ids from `first`) of
 * `rows` rows each: one batched call, or with train.profile_experts one call
 * per expert, each in its own NVTX range ("expert <s>", payload its rows),
 * so that Nsight shows every expert. */
static void experts_forward(pmoe_model *m, int first, int count, int64_t rows, const float *in,
                            float *out) {
    two_layer_model *t = two_layer_of(m);
    const pmoe_ops *op = m->be->ops;
    const int64_t d = t->patch_dim, h = t->hidden;
    const float *w = m->params[PARAM_EXPERT].value.data;
    if (!t->profile_experts) {
        op->expert_forward(m->be, count, rows, (int)d, (int)h, in, w, out);
        return;
    }
    for (int j = 0; j < count; j++) {
        char name[32];
        snprintf(name, sizeof name, "expert %d", first + j);
        pmoe_trace_push(name, (uint64_t)rows);
        op->expert_forward(m->be, 1, rows, (int)d, (int)h, in + j * rows * d, w + j * h * d,
                           out + j * rows * h);
        pmoe_trace_pop();
    }
}

static void experts_backward(pmoe_model *m, int first, int count, int64_t rows, const float *in,
                             const float *hidden, float *dhidden) {
    two_layer_model *t = two_layer_of(m);
    const pmoe_ops *op = m->be->ops;
    const int64_t d = t->patch_dim, h = t->hidden;
    const float *w = m->params[PARAM_EXPERT].value.data;
    float *dw = m->params[PARAM_EXPERT].grad.data;
    if (!t->profile_experts) {
        op->expert_backward(m->be, count, rows, (int)d, (int)h, in, w, hidden, dhidden, dw, NULL);
        return;
    }
    for (int j = 0; j < count; j++) {
        char name[40];
        snprintf(name, sizeof name, "expert %d backward", first + j);
        pmoe_trace_push(name, (uint64_t)rows);
        op->expert_backward(m->be, 1, rows, (int)d, (int)h, in + j * rows * d, w + j * h * d,
                            hidden + j * rows * h, dhidden + j * rows * h, dw + j * h * d, NULL);
        pmoe_trace_pop();
    }
}

static void two_layer_forward(pmoe_model *m, int64_t batch, int64_t valid) {
    two_layer_model *t = two_layer_of(m);
    pmoe_backend *be = m->be;
    const pmoe_ops *op = be->ops;
    pmoe_patch_shape img = m->image;
    img.batch = batch;
    m->batch = batch;
    m->valid = valid;
    /* payloads: samples, then patches per expert (the same for every expert) */
    const uint64_t per_expert = (uint64_t)(batch * t->topl);
    pmoe_timer_enter(m->timer, PMOE_T_PATCH, (uint64_t)batch);
    const pmoe_route_shape rs = route_shape(m, batch);
    const float *router_w = t->has_router ? m->params[PARAM_ROUTER].value.data : NULL;
    /* With the fused gather ops, also one pass for patches, scores and top-l:
     * the patch phase then holds the routing, and there is no gate phase. */
    const int fused_route = t->gathered && op->patch_extract_route;
    if (fused_route)
        op->patch_extract_route(be, &img, &rs, m->images, router_w, t->patches, t->scores,
                                t->selected, t->gate);
    else op->patch_extract_forward(be, &img, m->images, t->patches);
    if (t->has_router) {
        if (!fused_route) {
            pmoe_timer_enter(m->timer, PMOE_T_GATE, (uint64_t)batch);
            op->gate_topl_forward(be, &rs, t->patches, router_w, t->scores, t->selected, t->gate);
        }
        if (t->gathered) { /* the dispatch happens inside the experts' op */
            pmoe_timer_enter(m->timer, PMOE_T_EXPERTS, per_expert);
            op->expert_forward_gathered(be, &rs, t->hidden, t->patches, t->selected,
                                        m->params[PARAM_EXPERT].value.data, t->hidden_out);
        } else {
            pmoe_timer_enter(m->timer, PMOE_T_DISPATCH, per_expert);
            op->dispatch_gather(be, &rs, t->patches, t->selected, t->expert_in);
        }
    }
    if (m->comm) {
        const int64_t global_rows = batch * m->ranks * t->topl;
        pmoe_timer_enter(m->timer, PMOE_T_EXCHANGE, per_expert);
        exchange_to_owners(m, batch, t->patch_dim, expert_input(m), t->expert_rows);
        pmoe_timer_enter(m->timer, PMOE_T_EXPERTS, (uint64_t)global_rows);
        if (owner_fused(m)) {
            const pmoe_route_shape os = owner_shape(m, batch * m->ranks);
            const int64_t h = t->hidden, d = t->patch_dim;
            for (int j = 0; j < m->local_experts; j++)
                op->expert_forward_gathered(be, &os, t->hidden,
                                            t->expert_rows + j * global_rows * d, t->identity,
                                            m->params[PARAM_EXPERT].value.data + j * h * d,
                                            t->expert_hidden + j * global_rows * h);
        } else {
            experts_forward(m, m->expert_base, m->local_experts, global_rows, t->expert_rows,
                            t->expert_hidden);
        }
        pmoe_timer_enter(m->timer, PMOE_T_EXCHANGE_BACK, per_expert);
        exchange_from_owners(m, batch, t->hidden, t->expert_hidden, t->hidden_out);
    } else if (!t->gathered) { /* (gathered: ran with the dispatch above) */
        pmoe_timer_enter(m->timer, PMOE_T_EXPERTS, per_expert);
        experts_forward(m, 0, t->experts, batch * t->topl, expert_input(m), t->hidden_out);
    }
    pmoe_combine_shape cs = combine_shape(m, batch);
    pmoe_timer_enter(m->timer, PMOE_T_COMBINE, (uint64_t)batch);
    op->combine_forward(be, &cs, t->hidden_out, t->has_router ? t->gate : NULL,
                        m->params[PARAM_OUTPUT].value.data, m->logits);
}

static void two_layer_loss(pmoe_model *m, int backward) {
    two_layer_model *t = two_layer_of(m);
    t->dlogits_local = m->dlogits;
    if (m->comm) {
        t->dlogits_local = pmoe_model_sharded_loss(m, t->logits_all, t->dlogits_all, backward);
    } else {
        pmoe_timer_enter(m->timer, PMOE_T_LOSS, (uint64_t)m->batch);
        m->be->ops->loss_forward_backward(
            m->be, m->classes == 1 ? PMOE_LOSS_LOGISTIC : PMOE_LOSS_SOFTMAX_CE, m->batch,
            m->classes, m->logits, m->labels, backward ? m->dlogits : NULL, m->stats);
    }
}

/* From this rank's dlogits (the loss's; or m->dlogits where the caller
 * wrote them, in one process) to every trainable gradient. */
static void two_layer_backward(pmoe_model *m) {
    two_layer_model *t = two_layer_of(m);
    pmoe_backend *be = m->be;
    const pmoe_ops *op = be->ops;
    const int64_t batch = m->batch;
    const uint64_t per_expert = (uint64_t)(batch * t->topl);
    const float *dlogits = t->dlogits_local ? t->dlogits_local : m->dlogits;
    pmoe_param *router = &m->params[PARAM_ROUTER], *output = &m->params[PARAM_OUTPUT];
    const int learn_gate = two_layer_updates(m, PARAM_ROUTER);
    int router_folded = 0;
    pmoe_combine_shape cs = combine_shape(m, batch);
    pmoe_timer_enter(m->timer, PMOE_T_COMBINE_BWD, (uint64_t)batch);
    op->combine_backward(be, &cs, dlogits, t->hidden_out, t->has_router ? t->gate : NULL,
                         output->value.data, t->dhidden, learn_gate ? t->dgate : NULL,
                         output->trainable ? output->grad.data : NULL);
    if (m->comm) {
        const int64_t global_rows = batch * m->ranks * t->topl;
        pmoe_timer_enter(m->timer, PMOE_T_EXCHANGE_BWD, per_expert);
        exchange_to_owners(m, batch, t->hidden, t->dhidden, t->expert_dhidden);
        pmoe_timer_enter(m->timer, PMOE_T_EXPERTS_BWD, (uint64_t)global_rows);
        if (owner_fused(m)) {
            /* The real samples only: the padding, at the global batch's
             * end, has no gradient, and without it the op splits the
             * batch where one process splits it (at half the samples),
             * so the sums are one process's, bit for bit. */
            const pmoe_route_shape os = owner_shape(m, m->valid);
            const int64_t h = t->hidden, d = t->patch_dim;
            for (int j = 0; j < m->local_experts; j++)
                op->expert_backward_gathered(
                    be, &os, t->hidden, t->expert_rows + j * global_rows * d, t->identity,
                    m->params[PARAM_EXPERT].value.data + j * h * d,
                    t->expert_hidden + j * global_rows * h, t->expert_dhidden + j * global_rows * h,
                    NULL, m->params[PARAM_EXPERT].grad.data + j * h * d, NULL);
        } else {
            experts_backward(m, m->expert_base, m->local_experts, global_rows, t->expert_rows,
                             t->expert_hidden, t->expert_dhidden);
        }
    } else if (t->gathered) {
        pmoe_route_shape rs = route_shape(m, batch);
        /* The renormalised gate's score gradient is zero but at the picks,
         * so the router's weight gradient is one more unit of each
         * expert's backward, over the rows it reads anyway. */
        router_folded = two_layer_folds_router(t);
        if (router_folded) {
            pmoe_timer_enter(m->timer, PMOE_T_GATE_BWD, (uint64_t)batch);
            op->gate_topl_backward(be, &rs, t->patches, router->value.data, t->scores, t->selected,
                                   t->gate, t->dgate, t->dscores, NULL, NULL);
        }
        pmoe_timer_enter(m->timer, PMOE_T_EXPERTS_BWD, per_expert);
        op->expert_backward_gathered(
            be, &rs, t->hidden, t->patches, t->selected, m->params[PARAM_EXPERT].value.data,
            t->hidden_out, t->dhidden, router_folded ? t->dscores : NULL,
            m->params[PARAM_EXPERT].grad.data, router_folded ? router->grad.data : NULL);
    } else {
        pmoe_timer_enter(m->timer, PMOE_T_EXPERTS_BWD, per_expert);
        experts_backward(m, 0, t->experts, batch * t->topl, expert_input(m), t->hidden_out,
                         t->dhidden);
    }
    if (learn_gate && !router_folded) {
        pmoe_route_shape rs = route_shape(m, batch);
        pmoe_timer_enter(m->timer, PMOE_T_GATE_BWD, (uint64_t)batch);
        op->gate_topl_backward(be, &rs, t->patches, router->value.data, t->scores, t->selected,
                               t->gate, t->dgate, t->dscores, router->grad.data, NULL);
    }
    if (m->comm && (learn_gate || output->trainable)) {
        pmoe_timer_enter(m->timer, PMOE_T_ALL_REDUCE, (uint64_t)batch);
        if (learn_gate) all_reduce(m, router->grad.data, pmoe_tensor_numel(&router->grad));
        if (output->trainable) all_reduce(m, output->grad.data, pmoe_tensor_numel(&output->grad));
    }
}

static int two_layer_updates(const pmoe_model *m, int i) {
    const two_layer_model *t = two_layer_of_const(m);
    const pmoe_param *p = &m->params[i];
    if (!p->value.data || !p->trainable) return 0;
    return i != PARAM_ROUTER || t->gate_mode != PMOE_GATE_ONES; /* G = 1 carries no gradient */
}

int two_layer_folds_router(const two_layer_model *t) {
    return t->gathered && t->gate_mode == PMOE_GATE_RENORM &&
           two_layer_updates(&t->base, PARAM_ROUTER);
}

static pmoe_status two_layer_router_loss(pmoe_model *m, int64_t batch, double *loss,
                                         pmoe_error *err) {
    two_layer_model *t = two_layer_of(m);
    pmoe_backend *be = m->be;
    const pmoe_ops *op = be->ops;
    pmoe_patch_shape img = m->image;
    img.batch = batch;
    const int64_t n = t->patch_count, d = t->patch_dim, k = t->experts;
    pmoe_param *router = &m->params[PARAM_ROUTER];
    pmoe_timer_enter(m->timer, PMOE_T_PATCH, (uint64_t)batch);
    op->patch_extract_forward(be, &img, m->images, t->patches);
    pmoe_timer_enter(m->timer, PMOE_T_GATE, (uint64_t)batch);
    op->gemm_float32(be, 0, 1, batch * n, k, d, 1.0f, t->patches, d, 0, router->value.data, d, 0,
                     0.0f, t->scores, k, 0, 1);
    pmoe_timer_enter(m->timer, PMOE_T_LOSS, (uint64_t)batch);
    op->router_linear_loss(be, batch, (int)n, (int)k, t->scores, m->router_pair, m->router_weight,
                           t->dscores, m->stats);
    pmoe_timer_enter(m->timer, PMOE_T_GATE_BWD, (uint64_t)batch);
    op->gemm_float32(be, 1, 0, k, d, batch * n, 1.0f, t->dscores, k, 0, t->patches, d, 0, 0.0f,
                     router->grad.data, d, 0, 1);
    if (m->comm) { /* each rank's samples carry their share of the (global) loss and gradient */
        pmoe_timer_enter(m->timer, PMOE_T_ALL_REDUCE, (uint64_t)batch);
        all_reduce(m, router->grad.data, k * d);
        all_reduce(m, m->stats, 1);
    }
    float stats[2];
    pmoe_status s = be->copy_out(be, stats, m->stats, sizeof stats, err);
    if (!s) *loss = stats[0];
    return s;
}

static void two_layer_routing(const pmoe_model *m, pmoe_routing_view *out) {
    const two_layer_model *t = two_layer_of_const(m);
    *out = (pmoe_routing_view){t->has_router,
                               t->experts,
                               t->topl,
                               t->patch_count,
                               t->patch_dim,
                               t->gate_mode,
                               t->has_router ? PARAM_ROUTER : -1,
                               t->selected,
                               t->gate};
}

static void two_layer_describe(const pmoe_model *m, pmoe_model_description *out) {
    const two_layer_model *t = two_layer_of_const(m);
    snprintf(out->model, sizeof out->model, "%s", t->has_router ? "pmoe" : "cnn");
    out->hidden = t->hidden * t->experts;
    out->learn_router = t->has_router && two_layer_updates(m, PARAM_ROUTER);
    out->train_output = two_layer_updates(m, PARAM_OUTPUT);
}

const pmoe_model_ops two_layer_model_ops = {
    .family = "two_layer",
    .create = two_layer_create,
    .forward = two_layer_forward,
    .loss = two_layer_loss,
    .backward = two_layer_backward,
    .updates = two_layer_updates,
    .sgd = pmoe_model_sgd_params,
    .memory_plan = two_layer_memory_plan,
    .describe = two_layer_describe,
    .routing = two_layer_routing,
    .router_loss = two_layer_router_loss,
    .free = two_layer_free,
};
