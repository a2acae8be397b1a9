/* deep_layers.c: the deep networks' layer list (deep_layers.h): building it, walking
 * it forward and back through the backend table, and freeing it. */
#include "model/deep_layers.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "model/deep_parallel.h"
#include "model/moe_conv.h"

enum { STREAM_DEEP_PARAMS = 1000 }; /* + parameter index */

pmoe_status deep_add_activation(pmoe_model *m, int channels, int height, int width, int no_grad,
                                int *id, pmoe_error *err) {
    pmoe_deep_model *d = deep_of(m);
    if (d->act_count == DEEP_MAX_ACTIVATIONS)
        return pmoe_fail(err, PMOE_ERR_INTERNAL, "deep model: more than %d activations",
                         DEEP_MAX_ACTIVATIONS);
    deep_activation *a = &d->acts[d->act_count];
    *a = (deep_activation){channels, height, width, NULL, NULL};
    const size_t bytes = (size_t)(m->image.batch * deep_act_size(a)) * sizeof(float);
    pmoe_status s = m->be->alloc(m->be, bytes, (void **)&a->value, err);
    if (!s && !no_grad) s = m->be->alloc(m->be, bytes, (void **)&a->grad, err);
    if (s) return s;
    *id = d->act_count++;
    return PMOE_OK;
}

pmoe_status deep_add_param(pmoe_model *m, const char *name, int ndim, const int64_t *shape,
                           int trainable, deep_init init, double value, int *index,
                           pmoe_error *err) {
    return deep_add_param_part(m, name, ndim, shape, trainable, init, value, 0, index, err);
}

pmoe_status deep_add_param_part(pmoe_model *m, const char *name, int ndim, const int64_t *shape,
                                int trainable, deep_init init, double value, int64_t first,
                                int *index, pmoe_error *err) {
    pmoe_deep_model *d = deep_of(m);
    if (d->param_count == DEEP_MAX_PARAMS)
        return pmoe_fail(err, PMOE_ERR_INTERNAL, "deep model: more than %d parameters",
                         DEEP_MAX_PARAMS);
    const int i = d->param_count;
    pmoe_param *p = &d->params[i];
    snprintf(d->param_names[i], sizeof d->param_names[i], "%s", name);
    p->name = d->param_names[i];
    p->trainable = trainable;
    pmoe_status s = pmoe_tensor_alloc(m->be, &p->value, ndim, shape, err);
    if (s) return s;
    d->param_count++; /* from here on deep_release frees it */
    m->param_count = d->param_count;
    const int64_t count = pmoe_tensor_numel(&p->value);
    if (trainable) s = pmoe_tensor_alloc(m->be, &p->grad, ndim, shape, err);
    if (!s && trainable && d->with_velocity) {
        s = pmoe_tensor_alloc(m->be, &p->velocity, ndim, shape, err);
        if (!s) m->be->fill(m->be, p->velocity.data, 0.0f, count);
    }
    if (s) return s;
    if (init == INIT_CONSTANT) {
        m->be->fill(m->be, p->value.data, (float)value, count);
    } else {
        float *host = NULL;
        s = pmoe_backend_host_alloc(m->be, (size_t)count * sizeof(float), name, (void **)&host,
                                    err);
        if (s) return s;
        const pmoe_rng r = pmoe_rng_make(d->seed, STREAM_DEEP_PARAMS + (uint64_t)i);
        for (int64_t j = 0; j < count; j++)
            host[j] = (float)(value * pmoe_rng_normal_at(&r, (uint64_t)(first + j)));
        s = m->be->copy_in(m->be, p->value.data, host, (size_t)count * sizeof(float), err);
        pmoe_backend_host_free(m->be, host, (size_t)count * sizeof(float));
    }
    if (!s) *index = i;
    return s;
}

static pmoe_status add_layer(pmoe_model *m, deep_layer_kind kind, const char *name, int in,
                             deep_layer **out, pmoe_error *err) {
    pmoe_deep_model *d = deep_of(m);
    if (d->layer_count == DEEP_MAX_LAYERS)
        return pmoe_fail(err, PMOE_ERR_INTERNAL, "deep model: more than %d layers",
                         DEEP_MAX_LAYERS);
    deep_layer *L = &d->layers[d->layer_count++];
    memset(L, 0, sizeof *L);
    L->kind = kind;
    snprintf(L->name, sizeof L->name, "%s", name);
    L->in = in;
    L->in2 = -1;
    L->param = d->param_count;
    *out = L;
    return PMOE_OK;
}

static pmoe_status param_named(pmoe_model *m, const char *layer, const char *field, int ndim,
                               const int64_t *shape, int trainable, deep_init init, double value,
                               pmoe_error *err) {
    char name[48];
    snprintf(name, sizeof name, "%s.%s", layer, field);
    int ignored;
    return deep_add_param(m, name, ndim, shape, trainable, init, value, &ignored, err);
}

pmoe_status deep_conv(pmoe_model *m, const char *name, int in, int out_channels, int kernel,
                      int stride, int bias, int *out, pmoe_error *err) {
    const deep_activation a = deep_of(m)->acts[in];
    deep_layer *L = NULL;
    pmoe_status s = add_layer(m, LAYER_CONV, name, in, &L, err);
    if (s) return s;
    L->conv = (pmoe_conv_shape){m->image.batch, a.channels, a.height, a.width,         out_channels,
                                kernel,         kernel,     stride,   (kernel - 1) / 2};
    L->has_bias = bias;
    /* He initialisation: N(0, 2 / fan_in) */
    const double std = sqrt(2.0 / ((double)a.channels * kernel * kernel));
    s = param_named(m, name, "weight", 4, (int64_t[]){out_channels, a.channels, kernel, kernel}, 1,
                    INIT_NORMAL, std, err);
    if (!s && bias)
        s = param_named(m, name, "bias", 1, (int64_t[]){out_channels}, 1, INIT_CONSTANT, 0.0, err);
    if (!s)
        s = deep_add_activation(m, out_channels, pmoe_conv_out_height(&L->conv),
                                pmoe_conv_out_width(&L->conv), 0, &L->out, err);
    if (!s) *out = L->out;
    return s;
}

pmoe_status deep_batchnorm(pmoe_model *m, const char *name, int in, int *out, pmoe_error *err) {
    const deep_activation a = deep_of(m)->acts[in];
    deep_layer *L = NULL;
    pmoe_status s = add_layer(m, LAYER_BN, name, in, &L, err);
    const int64_t c[1] = {a.channels};
    if (!s) s = param_named(m, name, "weight", 1, c, 1, INIT_CONSTANT, 1.0, err);
    if (!s) s = param_named(m, name, "bias", 1, c, 1, INIT_CONSTANT, 0.0, err);
    if (!s) s = param_named(m, name, "running_mean", 1, c, 0, INIT_CONSTANT, 0.0, err);
    if (!s) s = param_named(m, name, "running_var", 1, c, 0, INIT_CONSTANT, 1.0, err);
    const size_t bytes = (size_t)a.channels * DEEP_BN_MAX_GROUPS * sizeof(float);
    if (!s) s = m->be->alloc(m->be, bytes, (void **)&L->save_mean, err);
    if (!s) s = m->be->alloc(m->be, bytes, (void **)&L->save_invstd, err);
    if (!s) s = deep_add_activation(m, a.channels, a.height, a.width, 0, &L->out, err);
    if (!s) *out = L->out;
    return s;
}

static pmoe_status same_shape_layer(pmoe_model *m, deep_layer_kind kind, const char *name, int in,
                                    int *out, deep_layer **layer, pmoe_error *err) {
    const deep_activation a = deep_of(m)->acts[in];
    deep_layer *L = NULL;
    pmoe_status s = add_layer(m, kind, name, in, &L, err);
    if (!s) s = deep_add_activation(m, a.channels, a.height, a.width, 0, &L->out, err);
    if (!s) *out = L->out;
    if (layer) *layer = L;
    return s;
}

pmoe_status deep_relu(pmoe_model *m, const char *name, int in, int *out, pmoe_error *err) {
    return same_shape_layer(m, LAYER_RELU, name, in, out, NULL, err);
}

pmoe_status deep_add(pmoe_model *m, const char *name, int a, int b, int *out, pmoe_error *err) {
    const deep_activation *x = &deep_of(m)->acts[a], *y = &deep_of(m)->acts[b];
    if (deep_act_size(x) != deep_act_size(y))
        return pmoe_fail(err, PMOE_ERR_INTERNAL, "deep model: %s adds %dx%dx%d to %dx%dx%d", name,
                         x->channels, x->height, x->width, y->channels, y->height, y->width);
    deep_layer *L = NULL;
    pmoe_status s = same_shape_layer(m, LAYER_ADD, name, a, out, &L, err);
    if (!s) L->in2 = b;
    return s;
}

pmoe_status deep_pool(pmoe_model *m, const char *name, int in, int *out, pmoe_error *err) {
    const deep_activation a = deep_of(m)->acts[in];
    deep_layer *L = NULL;
    pmoe_status s = add_layer(m, LAYER_POOL, name, in, &L, err);
    if (!s) s = deep_add_activation(m, a.channels, 1, 1, 0, &L->out, err);
    if (!s) *out = L->out;
    return s;
}

pmoe_status deep_fc(pmoe_model *m, const char *name, int in, int outputs, int *out,
                    pmoe_error *err) {
    const int64_t inputs = deep_act_size(&deep_of(m)->acts[in]);
    deep_layer *L = NULL;
    pmoe_status s = add_layer(m, LAYER_FC, name, in, &L, err);
    if (!s)
        s = param_named(m, name, "weight", 2, (int64_t[]){outputs, inputs}, 1, INIT_NORMAL,
                        1.0 / sqrt((double)inputs), err);
    if (!s) s = param_named(m, name, "bias", 1, (int64_t[]){outputs}, 1, INIT_CONSTANT, 0.0, err);
    if (!s) s = deep_add_activation(m, outputs, 1, 1, 0, &L->out, err);
    if (!s) *out = L->out;
    return s;
}

pmoe_status deep_moe(pmoe_model *m, const char *name, struct moe_conv_layer *moe, int in, int *out,
                     pmoe_error *err) {
    deep_layer *L = NULL;
    pmoe_status s = add_layer(m, LAYER_MOE, name, in, &L, err);
    if (s) {
        moe_conv_free(m, moe);
        return s;
    }
    L->moe = moe;
    L->param = moe->first_param;
    deep_of(m)->moe = deep_of(m)->layer_count - 1;
    const deep_activation a = deep_of(m)->acts[in];
    s = deep_add_activation(m, moe->out_channels, a.height, a.width, 0, &L->out, err);
    if (!s) *out = L->out;
    return s;
}

/* ---- the walk ---- */

static pmoe_bn_shape bn_shape(const deep_activation *a, int64_t batch) {
    return (pmoe_bn_shape){batch, a->channels, (int64_t)a->height * a->width, DEEP_BN_EPS};
}

static void layer_forward(pmoe_model *m, deep_layer *L, int64_t batch) {
    pmoe_backend *be = m->be;
    const pmoe_ops *op = be->ops;
    deep_activation *acts = deep_of(m)->acts;
    deep_activation *x = &acts[L->in], *y = &acts[L->out];
    const int64_t count = batch * deep_act_size(y);
    switch (L->kind) {
    case LAYER_CONV: {
        pmoe_conv_shape cs = L->conv;
        cs.batch = batch;
        const float *bias = L->has_bias ? deep_value(m, L->param + DEEP_BIAS) : NULL;
        op->conv2d_forward(be, &cs, x->value, deep_value(m, L->param + DEEP_WEIGHT), bias,
                           y->value);
        break;
    }
    case LAYER_BN: {
        const pmoe_bn_shape bs = bn_shape(x, batch);
        float *weight = deep_value(m, L->param + DEEP_BN_WEIGHT);
        float *bias = deep_value(m, L->param + DEEP_BN_BIAS);
        float *mean = deep_value(m, L->param + DEEP_BN_RUNNING_MEAN);
        float *var = deep_value(m, L->param + DEEP_BN_RUNNING_VAR);
        if (m->training)
            deep_bn_forward_train(m, &deep_of(m)->bn, &bs, x->value, weight, bias, y->value,
                                  L->save_mean, L->save_invstd, mean, var);
        else op->batchnorm_forward_eval(be, &bs, x->value, weight, bias, mean, var, y->value);
        break;
    }
    case LAYER_RELU: op->relu_forward(be, count, x->value, y->value); break;
    case LAYER_ADD:
        op->axpby(be, count, 1.0f, x->value, 0.0f, y->value);
        op->axpby(be, count, 1.0f, acts[L->in2].value, 1.0f, y->value);
        break;
    case LAYER_POOL:
        op->avgpool_forward(be, batch * x->channels, (int64_t)x->height * x->width, x->value,
                            y->value);
        break;
    case LAYER_FC: {
        const int64_t in = deep_act_size(x), outs = deep_act_size(y);
        op->gemm(be, 0, 1, batch, outs, in, 1.0f, x->value, in, 0,
                 deep_value(m, L->param + DEEP_WEIGHT), in, 0, 0.0f, y->value, outs, 0, 1);
        op->channel_bias_forward(be, batch, (int)outs, 1, deep_value(m, L->param + DEEP_BIAS),
                                 y->value);
        break;
    }
    case LAYER_MOE: moe_conv_forward(m, L->moe, x->value, y->value, batch); break;
    }
}

static void layer_backward(pmoe_model *m, deep_layer *L, int64_t batch) {
    pmoe_backend *be = m->be;
    const pmoe_ops *op = be->ops;
    deep_activation *acts = deep_of(m)->acts;
    deep_activation *x = &acts[L->in], *y = &acts[L->out];
    const int64_t count = batch * deep_act_size(y);
    switch (L->kind) {
    case LAYER_CONV: {
        pmoe_conv_shape cs = L->conv;
        cs.batch = batch;
        float *dbias = L->has_bias ? deep_grad(m, L->param + DEEP_BIAS) : NULL;
        op->conv2d_backward(be, &cs, x->value, deep_value(m, L->param + DEEP_WEIGHT), y->grad,
                            x->grad, deep_grad(m, L->param + DEEP_WEIGHT), dbias);
        break;
    }
    case LAYER_BN: {
        const pmoe_bn_shape bs = bn_shape(x, batch);
        deep_bn_backward(m, &deep_of(m)->bn, &bs, x->value,
                         deep_value(m, L->param + DEEP_BN_WEIGHT), L->save_mean, L->save_invstd,
                         y->grad, x->grad, deep_grad(m, L->param + DEEP_BN_WEIGHT),
                         deep_grad(m, L->param + DEEP_BN_BIAS));
        break;
    }
    case LAYER_RELU: op->relu_backward(be, count, y->value, y->grad, x->grad); break;
    case LAYER_ADD:
        op->axpby(be, count, 1.0f, y->grad, 1.0f, x->grad);
        op->axpby(be, count, 1.0f, y->grad, 1.0f, acts[L->in2].grad);
        break;
    case LAYER_POOL:
        op->avgpool_backward(be, batch * x->channels, (int64_t)x->height * x->width, y->grad,
                             x->grad);
        break;
    case LAYER_FC: {
        const int64_t in = deep_act_size(x), outs = deep_act_size(y);
        op->gemm(be, 1, 0, outs, in, batch, 1.0f, y->grad, outs, 0, x->value, in, 0, 0.0f,
                 deep_grad(m, L->param + DEEP_WEIGHT), in, 0, 1);
        op->channel_bias_backward(be, batch, (int)outs, 1, y->grad,
                                  deep_grad(m, L->param + DEEP_BIAS));
        op->gemm(be, 0, 0, batch, in, outs, 1.0f, y->grad, outs, 0,
                 deep_value(m, L->param + DEEP_WEIGHT), in, 0, 1.0f, x->grad, in, 0, 1);
        break;
    }
    case LAYER_MOE: moe_conv_backward(m, L->moe, x->value, y->grad, x->grad, batch); break;
    }
}

void deep_forward(pmoe_model *m, int64_t batch) {
    pmoe_deep_model *d = deep_of(m);
    for (int i = 0; i < d->layer_count; i++) {
        deep_layer *L = &d->layers[i];
        if (L->kind != LAYER_MOE) pmoe_timer_enter(m->timer, PMOE_T_LAYERS, (uint64_t)batch);
        layer_forward(m, L, batch);
    }
}

void deep_backward(pmoe_model *m, int64_t batch) {
    pmoe_deep_model *d = deep_of(m);
    pmoe_timer_enter(m->timer, PMOE_T_LAYERS_BWD, (uint64_t)batch);
    for (int i = 0; i < d->act_count; i++) /* the logits' gradient comes from the loss */
        if (d->acts[i].grad && i != d->logits)
            m->be->fill(m->be, d->acts[i].grad, 0.0f, batch * deep_act_size(&d->acts[i]));
    for (int i = d->layer_count - 1; i >= 0; i--) {
        deep_layer *L = &d->layers[i];
        if (L->kind != LAYER_MOE) pmoe_timer_enter(m->timer, PMOE_T_LAYERS_BWD, (uint64_t)batch);
        layer_backward(m, L, batch);
        if (m->comm) deep_parallel_layer_done(m, i); /* its gradients may travel now */
    }
}

void deep_release(pmoe_model *m) {
    pmoe_deep_model *d = deep_of(m);
    if (!d) return;
    pmoe_backend *be = m->be;
    const int64_t B = m->image.batch;
    for (int i = 0; i < d->layer_count; i++) {
        deep_layer *L = &d->layers[i];
        if (L->kind == LAYER_BN) {
            const size_t bytes = (size_t)d->acts[L->in].channels * DEEP_BN_MAX_GROUPS *
                                 sizeof(float);
            be->release(be, L->save_mean, bytes);
            be->release(be, L->save_invstd, bytes);
        }
        if (L->moe) moe_conv_free(m, L->moe);
    }
    for (int i = 0; i < d->act_count; i++) {
        const size_t bytes = (size_t)(B * deep_act_size(&d->acts[i])) * sizeof(float);
        be->release(be, d->acts[i].value, bytes);
        be->release(be, d->acts[i].grad, bytes);
    }
    for (int i = 0; i < d->param_count; i++) {
        pmoe_tensor_release(be, &d->params[i].value);
        pmoe_tensor_release(be, &d->params[i].grad);
        pmoe_tensor_release(be, &d->params[i].velocity);
    }
}
