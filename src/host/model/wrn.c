/* wrn.c: the wide ResNet and WRN-pMoE of spec section 4, as layer lists.
 *
 * WRN (pre-activation, one block per group): conv3x3 16; group 1 (16w
 * channels), group 2 (32w, stride 2), group 3 (64w, stride 2), each block
 * BN-ReLU-conv3x3-BN-ReLU-conv3x3 plus the shortcut (the block's input, or
 * a 1x1 convolution of its activated input when the shape changes, as the
 * reference WRN code does); then BN-ReLU-global average pool-fully
 * connected. WRN-pMoE keeps groups 1 and 2, then BN-ReLU-conv3x3 (64w,
 * stride 2) and, in place of group 3's second convolution and without its
 * residual, the pMoE convolution layer (moe_conv.h) on that map; the same
 * head follows. Convolutions have no bias (batch norm follows each). */
#include "model/wrn.h"

#include <stdio.h>
#include <stdlib.h>

#include "model/layers.h"
#include "model/moe_conv.h"

static pmoe_status block(pmoe_model *m, const char *group, int in, int channels, int stride,
                         int *out, pmoe_error *err) {
    char name[32];
    int bn1, act1, conv1, bn2, act2, conv2, shortcut = in;
#define NAMED(part) (snprintf(name, sizeof name, "%s.%s", group, part), name)
    pmoe_status s = deep_batchnorm(m, NAMED("bn1"), in, &bn1, err);
    if (!s) s = deep_relu(m, NAMED("relu1"), bn1, &act1, err);
    if (!s) s = deep_conv(m, NAMED("conv1"), act1, channels, 3, stride, 0, &conv1, err);
    if (!s) s = deep_batchnorm(m, NAMED("bn2"), conv1, &bn2, err);
    if (!s) s = deep_relu(m, NAMED("relu2"), bn2, &act2, err);
    if (!s) s = deep_conv(m, NAMED("conv2"), act2, channels, 3, 1, 0, &conv2, err);
    if (!s && (m->deep->acts[in].channels != channels || stride != 1))
        s = deep_conv(m, NAMED("shortcut"), act1, channels, 1, stride, 0, &shortcut, err);
    if (!s) s = deep_add(m, NAMED("add"), conv2, shortcut, out, err);
#undef NAMED
    return s;
}

static pmoe_status build(pmoe_model *m, const pmoe_config *cfg, int input, int patch,
                         pmoe_error *err) {
    pmoe_deep_model *d = m->deep;
    const int w = cfg->model.width;
    int a, bn, act;
    pmoe_status s = deep_conv(m, "conv0", input, 16, 3, 1, 0, &a, err);
    if (!s) s = block(m, "group1", a, 16 * w, 1, &a, err);
    if (!s) s = block(m, "group2", a, 32 * w, 2, &a, err);
    if (!s && cfg->model.type == PMOE_MODEL_WRN) s = block(m, "group3", a, 64 * w, 2, &a, err);
    if (!s && cfg->model.type == PMOE_MODEL_WRN_PMOE) {
        s = deep_batchnorm(m, "group3.bn1", a, &bn, err);
        if (!s) s = deep_relu(m, "group3.relu1", bn, &act, err);
        if (!s) s = deep_conv(m, "group3.conv1", act, 64 * w, 3, 2, 0, &a, err);
        moe_conv_layer *moe = NULL;
        const deep_activation map = d->acts[a];
        if (!s) s = moe_conv_create(m, cfg, map.channels, map.height, map.width, patch, &moe, err);
        if (!s) s = deep_moe(m, "group3.moe", moe, a, &a, err);
        if (!s) {
            m->has_router = 1;
            m->experts = moe->experts;
            m->topl = moe->topl;
            m->patch_count = moe->patches;
            m->patch_dim = moe->dim;
            m->gate_mode = moe->gate_mode;
            m->selected = moe->selected;
            m->gate = moe->gate;
        }
    }
    if (!s) s = deep_batchnorm(m, "head.bn", a, &bn, err);
    if (!s) s = deep_relu(m, "head.relu", bn, &act, err);
    if (!s) s = deep_pool(m, "head.pool", act, &a, err);
    if (!s) s = deep_fc(m, "head.fc", a, m->classes, &d->logits, err);
    if (!s) {
        m->logits = d->acts[d->logits].value;
        m->dlogits = d->acts[d->logits].grad;
    }
    return s;
}

pmoe_status wrn_create(pmoe_backend *be, const pmoe_config *cfg, int channels, int height,
                       int width, int patch, int classes, int64_t max_batch, pmoe_model **out,
                       pmoe_error *err) {
    pmoe_model *m = calloc(1, sizeof *m);
    pmoe_deep_model *d = calloc(1, sizeof *d);
    if (!m || !d) {
        free(m);
        free(d);
        return pmoe_fail(err, PMOE_ERR_OOM, "cannot allocate the model");
    }
    m->be = be;
    m->deep = d;
    m->params = d->params;
    m->training = 1;
    m->ranks = 1;
    m->max_batch = max_batch;
    m->image = (pmoe_patch_shape){max_batch, channels, height, width, patch};
    m->classes = classes;
    m->experts = m->topl = m->patch_count = 1; /* a WRN routes nothing */
    m->gate_mode = PMOE_GATE_ONES;
    m->local_experts = 1;
    d->with_velocity = cfg->train.momentum > 0.0;
    d->seed = cfg->train.seed;
    d->moe = -1;
    int input;
    pmoe_status s = deep_add_activation(m, channels, height, width, 1, &input, err);
    if (!s) m->images = d->acts[input].value;
    if (!s) s = be->alloc(be, (size_t)max_batch * sizeof(int32_t), (void **)&m->labels, err);
    if (!s) s = be->alloc(be, 2 * sizeof(float), (void **)&m->stats, err);
    if (!s) s = build(m, cfg, input, patch, err);
    if (s) {
        wrn_free(m);
        return s;
    }
    *out = m;
    return PMOE_OK;
}

void wrn_free(pmoe_model *m) {
    if (!m) return;
    deep_release(m);
    m->be->release(m->be, m->labels, (size_t)m->max_batch * sizeof(int32_t));
    m->be->release(m->be, m->stats, 2 * sizeof(float));
    free(m->deep);
    free(m);
}

void wrn_forward(pmoe_model *m, int64_t batch) {
    m->batch = batch;
    m->valid = batch;
    deep_forward(m, batch);
}

pmoe_status wrn_loss(pmoe_model *m, int backward, double *loss, int64_t *correct,
                     pmoe_error *err) {
    pmoe_backend *be = m->be;
    pmoe_timer_enter(m->timer, PMOE_T_LOSS, (uint64_t)m->batch);
    be->ops->loss_forward_backward(be, m->classes == 1 ? PMOE_LOSS_LOGISTIC : PMOE_LOSS_SOFTMAX_CE,
                                   m->batch, m->classes, m->logits, m->labels,
                                   backward ? m->dlogits : NULL, m->stats);
    if (backward) deep_backward(m, m->batch);
    float stats[2];
    pmoe_status s = be->copy_out(be, stats, m->stats, sizeof stats, err);
    if (s) return s;
    *loss = stats[0];
    *correct = (int64_t)stats[1];
    return PMOE_OK;
}

int wrn_updates(const pmoe_model *m, int i) {
    const pmoe_param *p = &m->params[i];
    if (!p->value.data || !p->trainable) return 0;
    const pmoe_deep_model *d = m->deep;
    const int router = d->moe >= 0 ? d->layers[d->moe].moe->first_param : -1;
    return i != router || m->gate_mode != PMOE_GATE_ONES; /* G = 1 carries no gradient */
}
