/* moe_conv.c: the pMoE convolution layer, sparse and dense-masked (see
 * moe_conv.h), as a sequence of backend ops: patch extraction and the
 * fused gate / top-l of the two-layer model for routing, then per expert
 * batch norm, ReLU and convolution on its own rows (sparse) or its masked
 * map (dense_masked), then the scatter back into the output map. */
#include "model/moe_conv.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/phase_timer.h"
#include "model/deep_layers.h"

enum { P_ROUTER, P_BN_WEIGHT, P_BN_BIAS, P_BN_MEAN, P_BN_VAR, P_CONV, P_COUNT };

/* One allocation the layer owns, so release can give back what was taken. */
typedef struct owned {
    void **ptr;
    size_t bytes;
} owned;
enum { MAX_OWNED = 40 };
typedef struct moe_conv_owner {
    moe_conv_layer layer; /* first: a moe_conv_layer * is a moe_conv_owner * */
    owned list[MAX_OWNED];
    int count;
} moe_conv_owner;

static pmoe_status take(pmoe_model *m, moe_conv_owner *o, void *ptr_address, int64_t count,
                        size_t elem, pmoe_error *err) {
    void **ptr = ptr_address;
    if (o->count == MAX_OWNED)
        return pmoe_fail(err, PMOE_ERR_INTERNAL, "moe_conv: more than %d buffers", MAX_OWNED);
    const size_t bytes = (size_t)count * elem;
    pmoe_status s = m->be->alloc(m->be, bytes, ptr, err);
    if (s) return s;
    o->list[o->count++] = (owned){ptr, bytes};
    o->layer.bytes += (int64_t)bytes;
    return PMOE_OK;
}

void moe_conv_free(pmoe_model *m, moe_conv_layer *L) {
    if (!L) return;
    moe_conv_owner *o = (moe_conv_owner *)L;
    for (int i = 0; i < o->count; i++) m->be->release(m->be, *o->list[i].ptr, o->list[i].bytes);
    free(o);
}

static pmoe_status add_params(pmoe_model *m, const pmoe_config *cfg, moe_conv_layer *L,
                              pmoe_error *err) {
    const int64_t k = L->experts, kr = L->local_experts, C = L->channels, r = L->kernel;
    const double router_std = cfg->model.router_init_std >= 0.0 ? cfg->model.router_init_std
                                                                : 1.0 / sqrt((double)L->dim);
    const double conv_std = sqrt(2.0 / ((double)C * r * r)); /* He, as the dense convolutions */
    int index;
    pmoe_status s = deep_add_param(m, "moe.router.weight", 2, (int64_t[]){k, L->dim}, 1,
                                   INIT_NORMAL, router_std, &L->first_param, err);
    const int64_t kc[2] = {kr, C};
    if (!s)
        s = deep_add_param(m, "moe.experts.bn.weight", 2, kc, 1, INIT_CONSTANT, 1.0, &index, err);
    if (!s) s = deep_add_param(m, "moe.experts.bn.bias", 2, kc, 1, INIT_CONSTANT, 0.0, &index, err);
    if (!s)
        s = deep_add_param(m, "moe.experts.bn.running_mean", 2, kc, 0, INIT_CONSTANT, 0.0, &index,
                           err);
    if (!s)
        s = deep_add_param(m, "moe.experts.bn.running_var", 2, kc, 0, INIT_CONSTANT, 1.0, &index,
                           err);
    if (!s)
        s = deep_add_param_part(
            m, "moe.experts.conv.weight", 5, (int64_t[]){kr, L->expert_channels, C, r, r}, 1,
            INIT_NORMAL, conv_std, m->expert_base * L->expert_channels * C * r * r, &index, err);
    for (int i = L->first_param + P_BN_WEIGHT; !s && kr < k && i < L->first_param + P_COUNT; i++)
        m->params[i].sharded = 1;
    return s;
}

pmoe_status moe_conv_create(pmoe_model *m, const pmoe_config *cfg, int channels, int height,
                            int width, int patch, moe_conv_layer **out, pmoe_error *err) {
    moe_conv_owner *o = calloc(1, sizeof *o);
    if (!o) return pmoe_fail(err, PMOE_ERR_OOM, "cannot allocate the pMoE layer");
    moe_conv_layer *L = &o->layer;
    L->impl = (pmoe_moe_impl)cfg->model.moe_impl;
    L->gate_mode = cfg->model.gate;
    L->channels = channels;
    L->height = height;
    L->width = width;
    L->patch = patch;
    L->patches = (height / patch) * (width / patch);
    L->dim = channels * patch * patch;
    L->experts = cfg->model.experts;
    L->local_experts = L->experts / (m->expert_ranks > 0 ? m->expert_ranks : 1);
    L->topl = cfg->model.topl;
    L->out_channels = channels;
    L->expert_channels = channels / L->experts;
    L->kernel = cfg->model.expert_kernel;
    L->max_batch = m->image.batch;

    const int64_t B = L->max_batch, n = L->patches, d = L->dim, k = L->experts, l = L->topl;
    const int64_t map = (int64_t)channels * height * width;
    const int64_t expert_map = (int64_t)L->expert_channels * height * width;
    const size_t F = sizeof(float);
    pmoe_status s = add_params(m, cfg, L, err);
    float **routing[] = {&L->patches_buf, &L->dpatches};
    for (int i = 0; i < 2 && !s; i++) s = take(m, o, routing[i], B * n * d, F, err);
    if (!s) s = take(m, o, &L->scores, B * n * k, F, err);
    if (!s) s = take(m, o, &L->dscores, B * n * k, F, err);
    if (!s) s = take(m, o, &L->gate, B * k * l, F, err);
    if (!s) s = take(m, o, &L->dgate, B * k * l, F, err);
    if (!s) s = take(m, o, &L->selected, B * k * l, sizeof(int32_t), err);
    if (!s) s = take(m, o, &L->map_scratch, B * map, F, err);
    if (!s) s = take(m, o, &L->save_mean, k * channels * DEEP_BN_MAX_GROUPS, F, err);
    if (!s) s = take(m, o, &L->save_invstd, k * channels * DEEP_BN_MAX_GROUPS, F, err);
    if (L->impl == PMOE_MOE_SPARSE) {
        const int64_t rows = B * l;
        float **inputs[] = {&L->expert_in, &L->dexpert_in, &L->normed,
                            &L->dnormed,   &L->activated,  &L->dactivated};
        for (int i = 0; i < 6 && !s; i++) s = take(m, o, inputs[i], k * rows * d, F, err);
        const int64_t e = (int64_t)L->expert_channels * patch * patch;
        if (!s) s = take(m, o, &L->expert_out, k * rows * e, F, err);
        if (!s) s = take(m, o, &L->dexpert_out, k * rows * e, F, err);
        if (!s) s = take(m, o, &L->out_patches, B * n * L->out_channels * patch * patch, F, err);
        if (L->local_experts < k) {
            if (!s) s = take(m, o, &L->owned_in, k * rows * d, F, err);
            if (!s) s = take(m, o, &L->owned_din, k * rows * d, F, err);
            if (!s) s = take(m, o, &L->owned_out, k * rows * e, F, err);
            if (!s) s = take(m, o, &L->owned_dout, k * rows * e, F, err);
        }
    } else {
        float **weights[] = {&L->mask, &L->gate_map, &L->dgate_map};
        for (int i = 0; i < 3 && !s; i++) s = take(m, o, weights[i], k * B * n, F, err);
        float **maps[] = {&L->masked,  &L->dmasked,   &L->normed,
                          &L->dnormed, &L->activated, &L->dactivated};
        for (int i = 0; i < 6 && !s; i++) s = take(m, o, maps[i], k * B * map, F, err);
        if (!s) s = take(m, o, &L->expert_map, k * B * expert_map, F, err);
        if (!s) s = take(m, o, &L->dexpert_map, k * B * expert_map, F, err);
        if (!s) s = take(m, o, &L->scaled, B * expert_map, F, err);
    }
    if (s) {
        moe_conv_free(m, L);
        return s;
    }
    *out = L;
    return PMOE_OK;
}

/* ---- shapes of one step ---- */

static pmoe_patch_shape in_patches(const moe_conv_layer *L, int64_t batch) {
    return (pmoe_patch_shape){batch, L->channels, L->height, L->width, L->patch};
}
static pmoe_patch_shape out_patches(const moe_conv_layer *L, int channels, int64_t batch) {
    return (pmoe_patch_shape){batch, channels, L->height, L->width, L->patch};
}
static pmoe_route_shape route(const moe_conv_layer *L, int64_t batch) {
    return (pmoe_route_shape){batch, L->patches, L->dim, L->experts, L->topl, L->gate_mode};
}
/* Expert s's convolution over `batch` maps of h x w (sparse: the B l
 * patches, h = w = p; dense: the B whole maps). */
static pmoe_conv_shape expert_conv(const moe_conv_layer *L, int64_t batch, int h, int w) {
    return (pmoe_conv_shape){
        batch, L->channels, h, w, L->expert_channels, L->kernel, L->kernel, 1, (L->kernel - 1) / 2};
}

static pmoe_experts_shape experts_shape(const moe_conv_layer *L, int64_t rows, int h, int w) {
    return (pmoe_experts_shape){L->local_experts,   rows,      L->channels, h, w,
                                L->expert_channels, L->kernel, DEEP_BN_EPS};
}

static float *param(pmoe_model *m, const moe_conv_layer *L, int which) {
    return deep_value(m, L->first_param + which);
}
static float *grad(pmoe_model *m, const moe_conv_layer *L, int which) {
    return deep_grad(m, L->first_param + which);
}

static int learns_gate(pmoe_model *m, const moe_conv_layer *L) {
    return L->gate_mode != PMOE_GATE_ONES && m->params[L->first_param + P_ROUTER].trainable;
}

/* Batch norm, ReLU and convolution of every expert: in[s] (rows x C x h x w)
 * -> out[s] (rows x C_out/k x h x w), through normed and activated. Each
 * expert's ops are one NVTX range ("expert <s>"), whose payload is the
 * number of patches the expert computes on: B l sparse, B n dense-masked
 * (where a row is a whole masked map). */
static void experts_forward(pmoe_model *m, moe_conv_layer *L, const float *in, int64_t rows, int h,
                            int w, uint64_t patches, float *out) {
    pmoe_backend *be = m->be;
    const pmoe_ops *op = be->ops;
    const deep_bn_domain *dom = &deep_of(m)->expert_bn;
    const int64_t C = L->channels, k = L->local_experts, per = rows * C * h * w;
    const int64_t saved = C * DEEP_BN_MAX_GROUPS; /* one expert's saved statistics */
    const pmoe_bn_shape bs = {rows, L->channels, (int64_t)h * w, DEEP_BN_EPS};
    const pmoe_conv_shape cs = expert_conv(L, rows, h, w);
    const int64_t wsize = (int64_t)L->expert_channels * C * L->kernel * L->kernel;
    const int64_t out_per = rows * L->expert_channels * h * w;
    /* all the experts in one grouped op (the CPU fast path) when the
     * statistics are this rank's own */
    if (op->moe_experts_forward && (deep_bn_plain(dom) || !m->training)) {
        const pmoe_experts_shape es = experts_shape(L, rows, h, w);
        pmoe_trace_push("experts", patches);
        op->moe_experts_forward(be, &es, m->training, in, param(m, L, P_BN_WEIGHT),
                                param(m, L, P_BN_BIAS), param(m, L, P_BN_MEAN),
                                param(m, L, P_BN_VAR), DEEP_BN_MOMENTUM, param(m, L, P_CONV),
                                L->save_mean, L->save_invstd, L->normed, L->activated, out);
        pmoe_trace_pop();
        return;
    }
    for (int64_t s = 0; s < k; s++) {
        char range[32];
        snprintf(range, sizeof range, "expert %d", m->expert_base + (int)s);
        pmoe_trace_push(range, patches);
        if (m->training)
            deep_bn_forward_train(m, dom, &bs, in + s * per, param(m, L, P_BN_WEIGHT) + s * C,
                                  param(m, L, P_BN_BIAS) + s * C, L->normed + s * per,
                                  L->save_mean + s * saved, L->save_invstd + s * saved,
                                  param(m, L, P_BN_MEAN) + s * C, param(m, L, P_BN_VAR) + s * C);
        else
            op->batchnorm_forward_eval(be, &bs, in + s * per, param(m, L, P_BN_WEIGHT) + s * C,
                                       param(m, L, P_BN_BIAS) + s * C,
                                       param(m, L, P_BN_MEAN) + s * C,
                                       param(m, L, P_BN_VAR) + s * C, L->normed + s * per);
        op->relu_forward(be, per, L->normed + s * per, L->activated + s * per);
        op->conv2d_forward(be, &cs, L->activated + s * per, param(m, L, P_CONV) + s * wsize, NULL,
                           out + s * out_per);
        pmoe_trace_pop();
    }
}

/* The backward of experts_forward: dout[s] -> din[s] (overwritten), and the
 * experts' batch-norm and convolution gradients; one NVTX range per expert. */
static void experts_backward(pmoe_model *m, moe_conv_layer *L, const float *in, int64_t rows, int h,
                             int w, uint64_t patches, const float *dout, float *din) {
    pmoe_backend *be = m->be;
    const pmoe_ops *op = be->ops;
    const deep_bn_domain *dom = &deep_of(m)->expert_bn;
    const int64_t C = L->channels, k = L->local_experts, per = rows * C * h * w;
    const int64_t saved = C * DEEP_BN_MAX_GROUPS;
    const pmoe_conv_shape cs = expert_conv(L, rows, h, w);
    const int64_t wsize = (int64_t)L->expert_channels * C * L->kernel * L->kernel;
    const int64_t out_per = rows * L->expert_channels * h * w;
    const pmoe_bn_shape bs = {rows, L->channels, (int64_t)h * w, DEEP_BN_EPS};
    if (op->moe_experts_backward && deep_bn_plain(dom)) { /* overwrites din, needs no zeros */
        const pmoe_experts_shape es = experts_shape(L, rows, h, w);
        pmoe_trace_push("experts backward", patches);
        op->moe_experts_backward(be, &es, in, param(m, L, P_BN_WEIGHT), param(m, L, P_CONV),
                                 L->save_mean, L->save_invstd, L->normed, L->activated, dout,
                                 L->dnormed, L->dactivated, din, grad(m, L, P_BN_WEIGHT),
                                 grad(m, L, P_BN_BIAS), grad(m, L, P_CONV));
        pmoe_trace_pop();
        return;
    }
    be->fill(be, L->dactivated, 0.0f, k * per);
    be->fill(be, L->dnormed, 0.0f, k * per);
    be->fill(be, din, 0.0f, k * per);
    for (int64_t s = 0; s < k; s++) {
        char range[40];
        snprintf(range, sizeof range, "expert %d backward", m->expert_base + (int)s);
        pmoe_trace_push(range, patches);
        op->conv2d_backward(be, &cs, L->activated + s * per, param(m, L, P_CONV) + s * wsize,
                            dout + s * out_per, L->dactivated + s * per,
                            grad(m, L, P_CONV) + s * wsize, NULL);
        op->relu_backward(be, per, L->activated + s * per, L->dactivated + s * per,
                          L->dnormed + s * per);
        deep_bn_backward(m, dom, &bs, in + s * per, param(m, L, P_BN_WEIGHT) + s * C,
                         L->save_mean + s * saved, L->save_invstd + s * saved, L->dnormed + s * per,
                         din + s * per, grad(m, L, P_BN_WEIGHT) + s * C,
                         grad(m, L, P_BN_BIAS) + s * C);
        pmoe_trace_pop();
    }
}

/* Expert parallelism's exchange over the rank's group (comm.h's layouts):
 * `width` floats per row, b l rows per (expert, rank). */
static void exchange(pmoe_model *m, const moe_conv_layer *L, int64_t batch, int64_t width,
                     int to_owners, const float *from, float *to) {
    const int64_t block = batch * L->topl * width;
    const int E = m->expert_ranks;
    const pmoe_exchange_layout layout = to_owners
                                            ? pmoe_exchange_to_owners(block, L->local_experts, E)
                                            : pmoe_exchange_from_owners(block, L->local_experts, E);
    m->expert_comm->all_to_all(m->expert_comm, from, to, &layout);
    m->exchange_bytes += (int64_t)sizeof(float) * (E - 1) * L->local_experts * block;
}

void moe_conv_forward(pmoe_model *m, moe_conv_layer *L, const float *x, float *y, int64_t batch) {
    pmoe_backend *be = m->be;
    const pmoe_ops *op = be->ops;
    const pmoe_patch_shape ps = in_patches(L, batch);
    const pmoe_route_shape rs = route(L, batch);
    const int p = L->patch, k = L->experts, e = L->expert_channels;
    const uint64_t per_expert = (uint64_t)(batch * L->topl);
    pmoe_timer_enter(m->timer, PMOE_T_PATCH, (uint64_t)batch);
    op->patch_extract_forward(be, &ps, x, L->patches_buf);
    pmoe_timer_enter(m->timer, PMOE_T_GATE, (uint64_t)batch);
    op->gate_topl_forward(be, &rs, L->patches_buf, param(m, L, P_ROUTER), L->scores, L->selected,
                          L->gate);
    if (L->impl == PMOE_MOE_SPARSE) {
        pmoe_timer_enter(m->timer, PMOE_T_DISPATCH, per_expert);
        op->dispatch_gather(be, &rs, L->patches_buf, L->selected, L->expert_in);
        if (m->expert_comm) { /* to the owners, their experts, and back */
            const int64_t E = m->expert_ranks, epp = (int64_t)e * p * p;
            pmoe_timer_enter(m->timer, PMOE_T_EXCHANGE, per_expert);
            exchange(m, L, batch, L->dim, 1, L->expert_in, L->owned_in);
            pmoe_timer_enter(m->timer, PMOE_T_EXPERTS, per_expert * E);
            experts_forward(m, L, L->owned_in, E * batch * L->topl, p, p, per_expert * E,
                            L->owned_out);
            pmoe_timer_enter(m->timer, PMOE_T_EXCHANGE_BACK, per_expert);
            exchange(m, L, batch, epp, 0, L->owned_out, L->expert_out);
        } else {
            pmoe_timer_enter(m->timer, PMOE_T_EXPERTS, per_expert);
            experts_forward(m, L, L->expert_in, batch * L->topl, p, p, per_expert, L->expert_out);
        }
        pmoe_timer_enter(m->timer, PMOE_T_COMBINE, (uint64_t)batch);
        const pmoe_scatter_shape ss = {batch, L->patches, k, L->topl, e * p * p};
        op->moe_scatter_forward(be, &ss, L->expert_out, L->selected, L->gate, L->out_patches);
        const pmoe_patch_shape os = out_patches(L, L->out_channels, batch);
        op->patch_extract_backward(be, &os, L->out_patches, y);
        return;
    }
    const int64_t n = L->patches, map = (int64_t)L->channels * L->height * L->width;
    const int64_t hw = (int64_t)L->height * L->width;
    pmoe_timer_enter(m->timer, PMOE_T_DISPATCH, per_expert);
    op->moe_position_weights(be, &rs, L->selected, NULL, L->mask);
    op->moe_position_weights(be, &rs, L->selected, L->gate, L->gate_map);
    for (int s = 0; s < k; s++)
        op->patch_scale_forward(be, &ps, L->mask + s * batch * n, x, L->masked + s * batch * map);
    pmoe_timer_enter(m->timer, PMOE_T_EXPERTS, (uint64_t)batch * (uint64_t)n);
    experts_forward(m, L, L->masked, batch, L->height, L->width, (uint64_t)batch * (uint64_t)n,
                    L->expert_map);
    pmoe_timer_enter(m->timer, PMOE_T_COMBINE, (uint64_t)batch);
    const pmoe_patch_shape es = out_patches(L, e, batch);
    for (int s = 0; s < k; s++) {
        op->patch_scale_forward(be, &es, L->gate_map + s * batch * n,
                                L->expert_map + s * batch * e * hw, L->scaled);
        op->channel_copy(be, batch, hw, e, L->scaled, e, 0, y, L->out_channels, s * e);
    }
}

/* The router's share: dgate -> the router's gradient and, through the
 * scores, dx += the patches' gradient in dpatches (which holds the
 * experts' share already, or zeros). */
static void router_backward(pmoe_model *m, moe_conv_layer *L, float *dx, int64_t batch) {
    pmoe_backend *be = m->be;
    const pmoe_ops *op = be->ops;
    const pmoe_route_shape rs = route(L, batch);
    const pmoe_patch_shape ps = in_patches(L, batch);
    if (learns_gate(m, L))
        op->gate_topl_backward(be, &rs, L->patches_buf, param(m, L, P_ROUTER), L->scores,
                               L->selected, L->gate, L->dgate, L->dscores, grad(m, L, P_ROUTER),
                               L->dpatches);
    if (!dx) return;
    op->patch_extract_backward(be, &ps, L->dpatches, L->map_scratch);
    const int64_t count = batch * L->channels * L->height * L->width;
    op->axpby(be, count, 1.0f, L->map_scratch, 1.0f, dx);
}

void moe_conv_backward(pmoe_model *m, moe_conv_layer *L, const float *x, const float *dy, float *dx,
                       int64_t batch) {
    pmoe_backend *be = m->be;
    const pmoe_ops *op = be->ops;
    const int p = L->patch, k = L->experts, e = L->expert_channels;
    const int learn_gate = learns_gate(m, L);
    const pmoe_route_shape rs = route(L, batch);
    const uint64_t per_expert = (uint64_t)(batch * L->topl);
    if (L->impl == PMOE_MOE_SPARSE) {
        pmoe_timer_enter(m->timer, PMOE_T_COMBINE_BWD, (uint64_t)batch);
        const pmoe_patch_shape os = out_patches(L, L->out_channels, batch);
        op->patch_extract_forward(be, &os, dy, L->out_patches); /* now the output's gradient */
        const pmoe_scatter_shape ss = {batch, L->patches, k, L->topl, e * p * p};
        op->moe_scatter_backward(be, &ss, L->out_patches, L->expert_out, L->selected, L->gate,
                                 L->dexpert_out, learn_gate ? L->dgate : NULL);
        if (m->expert_comm) {
            const int64_t E = m->expert_ranks, epp = (int64_t)e * p * p;
            pmoe_timer_enter(m->timer, PMOE_T_EXCHANGE_BWD, per_expert);
            exchange(m, L, batch, epp, 1, L->dexpert_out, L->owned_dout);
            pmoe_timer_enter(m->timer, PMOE_T_EXPERTS_BWD, per_expert * E);
            experts_backward(m, L, L->owned_in, E * batch * L->topl, p, p, per_expert * E,
                             L->owned_dout, L->owned_din);
            pmoe_timer_enter(m->timer, PMOE_T_EXCHANGE_BWD, per_expert);
            exchange(m, L, batch, L->dim, 0, L->owned_din, L->dexpert_in);
        } else {
            pmoe_timer_enter(m->timer, PMOE_T_EXPERTS_BWD, per_expert);
            experts_backward(m, L, L->expert_in, batch * L->topl, p, p, per_expert, L->dexpert_out,
                             L->dexpert_in);
        }
        op->dispatch_gather_backward(be, &rs, L->dexpert_in, L->selected, L->dpatches);
        pmoe_timer_enter(m->timer, PMOE_T_GATE_BWD, (uint64_t)batch);
        router_backward(m, L, dx, batch);
        return;
    }
    const int64_t n = L->patches, hw = (int64_t)L->height * L->width;
    const int64_t map = (int64_t)L->channels * hw;
    const pmoe_patch_shape ps = in_patches(L, batch), es = out_patches(L, e, batch);
    pmoe_timer_enter(m->timer, PMOE_T_COMBINE_BWD, (uint64_t)batch);
    for (int s = 0; s < k; s++) {
        op->channel_copy(be, batch, hw, e, dy, L->out_channels, s * e, L->scaled, e, 0);
        float *dmap = L->dexpert_map + s * batch * e * hw;
        be->fill(be, dmap, 0.0f, batch * e * hw);
        op->patch_scale_backward(be, &es, L->gate_map + s * batch * n,
                                 L->expert_map + s * batch * e * hw, L->scaled, dmap,
                                 learn_gate ? L->dgate_map + s * batch * n : NULL);
    }
    pmoe_timer_enter(m->timer, PMOE_T_EXPERTS_BWD, (uint64_t)batch * (uint64_t)n);
    experts_backward(m, L, L->masked, batch, L->height, L->width, (uint64_t)batch * (uint64_t)n,
                     L->dexpert_map, L->dmasked);
    if (dx)
        for (int s = 0; s < k; s++)
            op->patch_scale_backward(be, &ps, L->mask + s * batch * n, x,
                                     L->dmasked + s * batch * map, dx, NULL);
    pmoe_timer_enter(m->timer, PMOE_T_GATE_BWD, (uint64_t)batch);
    if (!learn_gate) return; /* the masks are 0/1 picks: no gradient but the gate's */
    op->moe_position_weights_backward(be, &rs, L->selected, L->dgate_map, L->dgate);
    be->fill(be, L->dpatches, 0.0f, batch * n * L->dim);
    router_backward(m, L, dx, batch);
}
