/* model.c: the model API of model.h: picks a family's table by
 * model.type and dispatches through it, and holds what both families
 * share: the SGD step over the parameter list, the parameter count and
 * the parameters' bytes. */
#include "model/model.h"

#include <stdio.h>
#include <string.h>

#include "model/two_layer.h"
#include "model/wrn.h"

pmoe_status pmoe_model_create(pmoe_backend *be, const pmoe_config *cfg, int channels, int height,
                              int width, int patch, int classes, int64_t max_batch,
                              pmoe_model **out, pmoe_error *err) {
    return pmoe_model_create_sharded(be, NULL, cfg, channels, height, width, patch, classes,
                                     max_batch, out, err);
}

pmoe_status pmoe_model_create_sharded(pmoe_backend *be, pmoe_comm *comm, const pmoe_config *cfg,
                                      int channels, int height, int width, int patch, int classes,
                                      int64_t max_batch, pmoe_model **out, pmoe_error *err) {
    const pmoe_model_ops *family = pmoe_model_is_deep(cfg->model.type) ? &wrn_model_ops
                                                                       : &two_layer_model_ops;
    return family->create(be, comm, cfg, channels, height, width, patch, classes, max_batch, out,
                          err);
}

void pmoe_model_free(pmoe_model *m) {
    if (m) m->ops->free(m);
}

void pmoe_model_forward(pmoe_model *m, int64_t batch) {
    pmoe_model_forward_valid(m, batch, batch * m->ranks);
}

void pmoe_model_forward_valid(pmoe_model *m, int64_t batch, int64_t valid) {
    m->ops->forward(m, batch, valid);
}

void pmoe_model_loss_queued(pmoe_model *m, int backward) {
    m->ops->loss(m, backward);
    if (backward) m->ops->backward(m);
}

pmoe_status pmoe_model_loss(pmoe_model *m, int backward, double *loss, int64_t *correct,
                            pmoe_error *err) {
    pmoe_model_loss_queued(m, backward);
    float stats[2];
    pmoe_status s = m->be->copy_out(m->be, stats, m->stats, sizeof stats, err);
    if (s) return s;
    *loss = stats[0];
    *correct = (int64_t)stats[1];
    return PMOE_OK;
}

void pmoe_model_backward(pmoe_model *m) { m->ops->backward(m); }

int pmoe_model_updates(const pmoe_model *m, int i) { return m->ops->updates(m, i); }

void pmoe_model_sgd(pmoe_model *m, float lr, float momentum, float weight_decay) {
    m->ops->sgd(m, lr, momentum, weight_decay, NULL);
}

void pmoe_model_sgd_guarded(pmoe_model *m, float lr, float momentum, float weight_decay,
                            const int32_t *skip) {
    m->ops->sgd(m, lr, momentum, weight_decay, skip);
}

void pmoe_model_sgd_params(pmoe_model *m, float lr, float momentum, float weight_decay,
                           const int32_t *skip) {
    for (int i = 0; i < m->param_count; i++) {
        pmoe_param *p = &m->params[i];
        if (!pmoe_model_updates(m, i)) continue;
        m->be->ops->sgd_update(m->be, pmoe_tensor_numel(&p->value), p->value.data, p->grad.data,
                               p->velocity.data, lr, momentum, weight_decay, skip);
    }
}

pmoe_status pmoe_model_router_loss(pmoe_model *m, int64_t batch, double *loss, pmoe_error *err) {
    if (!m->ops->router_loss)
        return pmoe_fail(err, PMOE_ERR_CONFIG,
                         "separate router training is for the two-layer "
                         "models only");
    return m->ops->router_loss(m, batch, loss, err);
}

int64_t pmoe_model_param_count(const pmoe_model *m) {
    int64_t total = 0;
    for (int i = 0; i < m->param_count; i++)
        if (m->params[i].value.data)
            total += pmoe_tensor_numel(&m->params[i].value) *
                     (m->params[i].sharded ? m->expert_ranks : 1);
    return total;
}

int64_t pmoe_model_parameter_bytes(const pmoe_model *m) {
    int64_t bytes = 0;
    for (int i = 0; i < m->param_count; i++) {
        const pmoe_param *p = &m->params[i];
        if (p->value.data) bytes += pmoe_tensor_numel(&p->value) * (int64_t)sizeof(float);
        if (p->grad.data) bytes += pmoe_tensor_numel(&p->grad) * (int64_t)sizeof(float);
        if (p->velocity.data) bytes += pmoe_tensor_numel(&p->velocity) * (int64_t)sizeof(float);
    }
    return bytes;
}

pmoe_routing_view pmoe_model_routing(const pmoe_model *m) {
    pmoe_routing_view v = {0};
    m->ops->routing(m, &v);
    return v;
}

pmoe_memory_plan pmoe_model_memory_plan(const pmoe_model *m) {
    pmoe_memory_plan plan = {0};
    m->ops->memory_plan(m, &plan);
    return plan;
}

void pmoe_model_describe(const pmoe_model *m, pmoe_model_description *out) {
    memset(out, 0, sizeof *out);
    const pmoe_routing_view v = pmoe_model_routing(m);
    snprintf(out->gate, sizeof out->gate, "%s", pmoe_gate_mode_name(v.gate_mode));
    out->patches = v.patch_count;
    out->dim = v.patch_dim;
    out->experts = v.experts;
    out->topl = v.topl;
    out->classes = m->classes;
    out->params = pmoe_model_param_count(m);
    m->ops->describe(m, out);
}

void pmoe_model_all_reduce(pmoe_model *m, pmoe_comm *comm, float *buf, int64_t count) {
    if (!comm || comm->size == 1) return;
    comm->all_reduce_sum(comm, buf, count);
    pmoe_model_count_all_reduce(m, comm, count);
}

void pmoe_model_count_all_reduce(pmoe_model *m, const pmoe_comm *comm, int64_t count) {
    const int64_t chunk = (count + comm->size - 1) / comm->size; /* reduce-scatter + all-gather */
    m->exchange_bytes += (int64_t)sizeof(float) * 2 * (comm->size - 1) * chunk;
}

const float *pmoe_model_sharded_loss(pmoe_model *m, float *logits_all, float *dlogits_all,
                                     int backward) {
    pmoe_backend *be = m->be;
    const int64_t b = m->batch, c = m->classes, all = b * m->ranks;
    pmoe_timer_enter(m->timer, PMOE_T_ALL_REDUCE, (uint64_t)b);
    m->comm->all_gather(m->comm, m->logits, logits_all, b * c);
    m->exchange_bytes += (int64_t)sizeof(float) * (m->ranks - 1) * b * c;
    pmoe_timer_enter(m->timer, PMOE_T_LOSS, (uint64_t)m->valid);
    be->ops->loss_forward_backward(be, m->classes == 1 ? PMOE_LOSS_LOGISTIC : PMOE_LOSS_SOFTMAX_CE,
                                   m->valid, m->classes, logits_all, m->labels,
                                   backward ? dlogits_all : NULL, m->stats);
    if (backward && m->valid < all)
        be->fill(be, dlogits_all + m->valid * c, 0.0f, (all - m->valid) * c);
    return dlogits_all + m->rank * b * c;
}
