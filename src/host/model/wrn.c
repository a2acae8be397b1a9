/* wrn.c: the deep family (model.h's table for model.type = wrn |
 * wrn_pmoe): the wide ResNet and WRN-pMoE of the paper's section 4 as layer
 * lists (deep_layers.h), and the isolated blocks of wrn.h.
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

#include "core/rng.h"
#include "model/deep_layers.h"
#include "model/deep_parallel.h"
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
    if (!s && (deep_of(m)->acts[in].channels != channels || stride != 1))
        s = deep_conv(m, NAMED("shortcut"), act1, channels, 1, stride, 0, &shortcut, err);
    if (!s) s = deep_add(m, NAMED("add"), conv2, shortcut, out, err);
#undef NAMED
    return s;
}

static pmoe_status build(pmoe_model *m, const pmoe_config *cfg, int input, int patch,
                         pmoe_error *err) {
    pmoe_deep_model *d = deep_of(m);
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

static void wrn_free(pmoe_model *m);

/* An empty deep model on be for batch samples of C x H x W (over comm's
 * ranks: this rank's share of them), its input activation in *input (a
 * model's with no gradient, a block's with one unused). */
static pmoe_status deep_model_new(pmoe_backend *be, pmoe_comm *comm, const pmoe_config *cfg,
                                  int channels, int height, int width, int patch, int64_t max_batch,
                                  int input_no_grad, pmoe_model **out, int *input,
                                  pmoe_error *err) {
    pmoe_deep_model *d = calloc(1, sizeof *d);
    if (!d) return pmoe_fail(err, PMOE_ERR_OOM, "cannot allocate the model");
    pmoe_model *m = &d->base;
    m->ops = &wrn_model_ops;
    m->be = be;
    m->params = d->params;
    m->training = 1;
    m->ranks = 1;
    m->expert_ranks = 1;
    m->max_batch = max_batch;
    m->image = (pmoe_patch_shape){max_batch, channels, height, width, patch};
    m->local_experts = 1;
    d->with_velocity = cfg->train.momentum > 0.0;
    d->seed = cfg->train.seed;
    d->width = cfg->model.width;
    d->moe = -1;
    d->logits = -1;
    *out = m;
    int64_t local = max_batch;
    pmoe_status s = deep_parallel_open(m, comm, cfg, max_batch, &local, err);
    m->image.batch = local;
    if (!s) s = deep_add_activation(m, channels, height, width, input_no_grad, input, err);
    if (!s) m->images = d->acts[*input].value;
    return s;
}

static pmoe_status wrn_create(pmoe_backend *be, pmoe_comm *comm, const pmoe_config *cfg,
                              int channels, int height, int width, int patch, int classes,
                              int64_t max_batch, pmoe_model **out, pmoe_error *err) {
    pmoe_model *m = NULL;
    int input;
    pmoe_status s = deep_model_new(be, comm, cfg, channels, height, width, patch, max_batch, 1, &m,
                                   &input, err);
    if (m) m->classes = classes;
    if (!s) s = be->alloc(be, (size_t)max_batch * sizeof(int32_t), (void **)&m->labels, err);
    if (!s) s = be->alloc(be, 2 * sizeof(float), (void **)&m->stats, err);
    if (!s) s = build(m, cfg, input, patch, err);
    if (!s) s = deep_parallel_finish(m, cfg, err);
    if (s) {
        wrn_free(m);
        return s;
    }
    *out = m;
    return PMOE_OK;
}

static void wrn_free(pmoe_model *m) {
    if (!m) return;
    deep_release(m);
    deep_parallel_close(m);
    m->be->release(m->be, m->labels, (size_t)m->max_batch * sizeof(int32_t));
    m->be->release(m->be, m->stats, 2 * sizeof(float));
    free(deep_of(m));
}

static void wrn_forward(pmoe_model *m, int64_t batch, int64_t valid) {
    m->batch = batch;
    m->valid = m->comm ? valid : batch; /* one process: valid = batch */
    deep_forward(m, batch);
}

static void wrn_loss(pmoe_model *m, int backward) {
    if (m->comm) { /* the global batch's loss; this rank's rows of its gradient */
        pmoe_deep_model *d = deep_of(m);
        const float *mine = pmoe_model_sharded_loss(m, d->logits_all, d->dlogits_all, backward);
        if (backward) m->be->ops->axpby(m->be, m->batch * m->classes, 1.0f, mine, 0.0f, m->dlogits);
        return;
    }
    pmoe_timer_enter(m->timer, PMOE_T_LOSS, (uint64_t)m->batch);
    m->be->ops->loss_forward_backward(
        m->be, m->classes == 1 ? PMOE_LOSS_LOGISTIC : PMOE_LOSS_SOFTMAX_CE, m->batch, m->classes,
        m->logits, m->labels, backward ? m->dlogits : NULL, m->stats);
}

static void wrn_backward(pmoe_model *m) {
    deep_backward(m, m->batch);
    deep_parallel_reduce_gradients(m);
}

static const moe_conv_layer *moe_layer(const pmoe_model *m) {
    const pmoe_deep_model *d = deep_of_const(m);
    return d->moe >= 0 ? d->layers[d->moe].moe : NULL;
}

static int wrn_updates(const pmoe_model *m, int i) {
    const pmoe_param *p = &m->params[i];
    if (!p->value.data || !p->trainable) return 0;
    const moe_conv_layer *moe = moe_layer(m);
    if (!moe || i != moe->first_param) return 1;
    return moe->gate_mode != PMOE_GATE_ONES; /* G = 1 carries no gradient */
}

/* Activations are the layer list's outputs (the images included), the
 * labels and the loss's statistics; backward buffers are their gradients.
 * Not counted here: batch norm's saved statistics, the pMoE layer's own
 * buffers (patches, scores, gathered rows and their gradients) and the
 * convolutions' transient im2col scratch. */
static void wrn_memory_plan(const pmoe_model *m, pmoe_memory_plan *out) {
    const pmoe_deep_model *d = deep_of_const(m);
    const int64_t B = m->image.batch, F = (int64_t)sizeof(float);
    out->parameter_bytes = pmoe_model_parameter_bytes(m);
    out->activation_bytes = (m->labels ? B * (int64_t)sizeof(int32_t) : 0) + (m->stats ? 2 * F : 0);
    for (int i = 0; i < d->act_count; i++) {
        const int64_t bytes = B * deep_act_size(&d->acts[i]) * F;
        out->activation_bytes += bytes;
        if (d->acts[i].grad) out->backward_bytes += bytes;
    }
}

static void wrn_routing(const pmoe_model *m, pmoe_routing_view *out) {
    const moe_conv_layer *L = moe_layer(m);
    if (!L) { /* a WRN routes nothing */
        *out = (pmoe_routing_view){0, 1, 1, 1, 0, PMOE_GATE_ONES, -1, NULL, NULL};
        return;
    }
    *out = (pmoe_routing_view){1,      L->experts,   L->topl,        L->patches,
                               L->dim, L->gate_mode, L->first_param, L->selected,
                               L->gate};
}

static void wrn_describe(const pmoe_model *m, pmoe_model_description *out) {
    const moe_conv_layer *L = moe_layer(m);
    snprintf(out->model, sizeof out->model, "%s", L ? "wrn_pmoe" : "wrn");
    out->width = deep_of_const(m)->width;
    if (L) {
        snprintf(out->moe_impl, sizeof out->moe_impl, "%s",
                 L->impl == PMOE_MOE_DENSE_MASKED ? "dense_masked" : "sparse");
        out->learn_router = wrn_updates(m, L->first_param);
        out->map_channels = L->channels;
        out->map_height = L->height;
        out->map_width = L->width;
    }
    out->train_output = 1; /* the head's fully connected layer */
}

const pmoe_model_ops wrn_model_ops = {
    .family = "deep",
    .create = wrn_create,
    .forward = wrn_forward,
    .loss = wrn_loss,
    .backward = wrn_backward,
    .updates = wrn_updates,
    .sgd = pmoe_model_sgd_params,
    .memory_plan = wrn_memory_plan,
    .describe = wrn_describe,
    .routing = wrn_routing,
    .router_loss = NULL,
    .free = wrn_free,
};

/* ---- the isolated blocks ---- */

/* Fills `count` floats on the backend with N(0, 1) values of stream `stream`. */
static pmoe_status fill_normal(pmoe_backend *be, float *dst, int64_t count, uint64_t seed,
                               uint64_t stream, pmoe_error *err) {
    float *host = malloc((size_t)count * sizeof(float));
    if (!host)
        return pmoe_fail(err, PMOE_ERR_OOM, "cannot allocate %lld bytes of block inputs",
                         (long long)count * 4);
    const pmoe_rng r = pmoe_rng_make(seed, stream);
    for (int64_t i = 0; i < count; i++) host[i] = (float)pmoe_rng_normal_at(&r, (uint64_t)i);
    pmoe_status st = be->copy_in(be, dst, host, (size_t)count * sizeof(float), err);
    free(host);
    return st;
}

#define BLOCK_STREAM 0x626c6f636bULL /* "block": the inputs' random streams */

pmoe_status pmoe_model_create_block(pmoe_backend *be, const pmoe_config *cfg, pmoe_block_kind kind,
                                    int C, int H, int W, int patch, int64_t batch, pmoe_model **out,
                                    pmoe_error *err) {
    pmoe_model *m = NULL;
    int x = -1, shortcut_in = -1, y = -1;
    pmoe_status st = deep_model_new(be, NULL, cfg, C, H, W, patch, batch, 0, &m, &x, err);
    pmoe_deep_model *d = m ? deep_of(m) : NULL;
    if (!st && kind == PMOE_BLOCK_WRN_GROUP3) { /* wrn.c's group 3 after its first convolution */
        int bn, act, conv, shortcut;
        st = deep_add_activation(m, C / 2, 2 * H, 2 * W, 0, &shortcut_in, err);
        if (!st) st = deep_batchnorm(m, "group3.bn2", x, &bn, err);
        if (!st) st = deep_relu(m, "group3.relu2", bn, &act, err);
        if (!st) st = deep_conv(m, "group3.conv2", act, C, 3, 1, 0, &conv, err);
        if (!st) st = deep_conv(m, "group3.shortcut", shortcut_in, C, 1, 2, 0, &shortcut, err);
        if (!st) st = deep_add(m, "group3.add", conv, shortcut, &y, err);
    } else if (!st) { /* the layer as wrn.c adds it, in the block's form */
        pmoe_config one = *cfg;
        one.model.moe_impl = kind == PMOE_BLOCK_MOE_DENSE ? PMOE_MOE_DENSE_MASKED : PMOE_MOE_SPARSE;
        moe_conv_layer *moe = NULL;
        st = moe_conv_create(m, &one, C, H, W, patch, &moe, err);
        if (!st) st = deep_moe(m, "group3.moe", moe, x, &y, err);
    }
    if (!st) {
        d->logits = y; /* deep_backward keeps its gradient: the fixed output gradient */
        m->logits = d->acts[y].value;
        m->dlogits = d->acts[y].grad;
        st = fill_normal(be, d->acts[x].value, batch * deep_act_size(&d->acts[x]), cfg->train.seed,
                         BLOCK_STREAM, err);
    }
    if (!st && shortcut_in >= 0)
        st = fill_normal(be, d->acts[shortcut_in].value,
                         batch * deep_act_size(&d->acts[shortcut_in]), cfg->train.seed,
                         BLOCK_STREAM + 1, err);
    if (!st)
        st = fill_normal(be, d->acts[y].grad, batch * deep_act_size(&d->acts[y]), cfg->train.seed,
                         BLOCK_STREAM + 2, err);
    if (st) {
        wrn_free(m);
        return st;
    }
    *out = m;
    return PMOE_OK;
}
