/* model.c: the model API of model.h, dispatching to the two-layer models
 * (two_layer.c) or the deep ones (wrn.c), and the parts both share: the
 * SGD step over the parameter list and the parameter count. */
#include "model/model.h"

#include "model/two_layer.h"
#include "model/wrn.h"

pmoe_status pmoe_model_create(pmoe_backend *be, const pmoe_config *cfg, int channels, int height,
                              int width, int patch, int classes, int64_t max_batch,
                              pmoe_model **out, pmoe_error *err) {
    return pmoe_model_create_sharded(be, NULL, cfg, channels, height, width, patch, classes,
                                     max_batch, out, err);
}

pmoe_status pmoe_model_create_sharded(pmoe_backend *be, pmoe_comm *comm, const pmoe_config *cfg,
                                      int channels, int height, int width, int patch,
                                      int classes, int64_t max_batch, pmoe_model **out,
                                      pmoe_error *err) {
    if (!pmoe_model_is_deep(cfg->model.type))
        return two_layer_create_sharded(be, comm, cfg, channels, height, width, patch, classes,
                                        max_batch, out, err);
    if (comm && comm->distributed && comm->size > 1)
        return pmoe_fail(err, PMOE_ERR_CONFIG,
                         "config: model.type = %s runs in one process; expert parallelism "
                         "over %d ranks is built for the two-layer models only",
                         pmoe_model_type_name(cfg->model.type), comm->size);
    return wrn_create(be, cfg, channels, height, width, patch, classes, max_batch, out, err);
}

void pmoe_model_free(pmoe_model *m) {
    if (!m) return;
    if (m->deep)
        wrn_free(m);
    else
        two_layer_free(m);
}

void pmoe_model_forward(pmoe_model *m, int64_t batch) {
    pmoe_model_forward_valid(m, batch, batch * m->ranks);
}

void pmoe_model_forward_valid(pmoe_model *m, int64_t batch, int64_t valid) {
    if (m->deep)
        wrn_forward(m, batch);
    else
        two_layer_forward_valid(m, batch, valid);
}

pmoe_status pmoe_model_loss(pmoe_model *m, int backward, double *loss, int64_t *correct,
                            pmoe_error *err) {
    return m->deep ? wrn_loss(m, backward, loss, correct, err)
                   : two_layer_loss(m, backward, loss, correct, err);
}

int pmoe_model_updates(const pmoe_model *m, int i) {
    return m->deep ? wrn_updates(m, i) : two_layer_updates(m, i);
}

void pmoe_model_sgd(pmoe_model *m, float lr, float momentum, float weight_decay) {
    for (int i = 0; i < m->param_count; i++) {
        pmoe_param *p = &m->params[i];
        if (!pmoe_model_updates(m, i)) continue;
        m->be->ops->sgd_update(m->be, pmoe_tensor_numel(&p->value), p->value.data, p->grad.data,
                               p->velocity.data, lr, momentum, weight_decay);
    }
}

pmoe_status pmoe_model_router_loss(pmoe_model *m, int64_t batch, double *loss, pmoe_error *err) {
    if (m->deep)
        return pmoe_fail(err, PMOE_ERR_CONFIG, "separate router training is for the two-layer "
                                               "models only");
    return two_layer_router_loss(m, batch, loss, err);
}

int64_t pmoe_model_param_count(const pmoe_model *m) {
    int64_t total = 0;
    for (int i = 0; i < m->param_count; i++)
        if (m->params[i].value.data)
            total += pmoe_tensor_numel(&m->params[i].value) * (m->params[i].sharded ? m->ranks : 1);
    return total;
}
