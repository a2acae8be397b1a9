/* moe_conv.h: the pMoE convolution layer of WRN-pMoE (the paper's section 4;
 * docs/deep-models.md).
 *
 * Input x: B x C x H x W. k routers score the n = (H/p)(W/p) patches of
 * p x p (a convolution with kernel and stride p and k output channels is
 * exactly patches x router^T, so the two-layer model's patch extraction and
 * fused gate / top-l ops serve unchanged); each router keeps its l best
 * patches and their gate values. Expert s is BN -> ReLU -> convolution
 * (C -> C_out / k channels, 1x1 or 3x3 with zero padding inside the patch).
 *
 * sparse (the point of pmoe): dispatch gathers expert s's B l patches into
 * k x (B l) x C x p x p, the expert runs on those only (batch norm's
 * statistics over them), and the scatter writes each output patch, times
 * its gate, at its position in expert s's channel block of a zero map:
 * the experts' outputs are concatenated along channels.
 *
 * dense_masked (the paper code's form, kept to measure what sparsity saves):
 * expert s runs on the whole map x times its 0/1 mask of selected patches
 * (batch norm over all B H W positions, the 3x3 convolution crossing patch
 * borders), and its output is multiplied by the gate map (the gate value on
 * its selected patches, zero elsewhere) and copied to its channel block.
 * With l = n, G = 1 and 1x1 expert convolutions the two forms compute the
 * same function (tested).
 *
 * Parameters (in the model's list, first_param onwards): router.weight
 * (k x C p p), experts.bn.weight / .bias / .running_mean / .running_var
 * (k x C), experts.conv.weight (k x C_out/k x C x r x r).
 *
 * Over ranks (model.h): every rank routes its own samples with the
 * replicated routers; with E > 1 the experts' tensors hold this rank's
 * k / E experts (sharded), the dispatched patches go to their owners and
 * the outputs come back with the equal-split exchange, and in the backward
 * the output gradients go to the owners and the input gradients come back.
 * Sparse only (dense_masked over E > 1 is a config error). */
#ifndef PMOE_MODEL_MOE_CONV_H
#define PMOE_MODEL_MOE_CONV_H

#include "model/model.h"

typedef struct moe_conv_layer {
    pmoe_moe_impl impl;
    pmoe_gate_mode gate_mode;
    int channels, height, width, patch; /* C, H, W, p */
    int patches, dim;                   /* n, d = C p p */
    int experts, topl;                  /* k, l */
    int local_experts;                  /* this rank's: k / E (model.h); k in one process */
    int out_channels, expert_channels;  /* C_out, C_out / k */
    int kernel;                         /* r: 1 or 3 */
    int64_t max_batch;
    int first_param; /* router; then bn weight, bias, mean, var; conv */

    /* routing (both forms) */
    float *patches_buf, *dpatches, *scores, *dscores, *gate, *dgate;
    int32_t *selected;
    float *map_scratch; /* B x C x H x W: the router's share of dx */
    /* sparse: k x (B l) x ... */
    float *expert_in, *dexpert_in;                    /* x C p p */
    float *normed, *dnormed, *activated, *dactivated; /* x C p p */
    float *expert_out, *dexpert_out;                  /* x C_out/k p p */
    float *out_patches;                               /* B x n x C_out p p (also their gradient) */
    float *save_mean, *save_invstd;                   /* k x C x DEEP_BN_MAX_GROUPS */
    /* expert parallelism (E > 1): the owners' rows, local_experts x (E b l) x ... */
    float *owned_in, *owned_din;   /* x C p p */
    float *owned_out, *owned_dout; /* x C_out/k p p */
    /* dense_masked: k x B x ... */
    float *mask, *gate_map, *dgate_map; /* x n */
    float *masked, *dmasked;            /* x C x H x W (normed and activated reuse the
                                           sparse names, sized for the whole map) */
    float *expert_map, *dexpert_map;    /* x C_out/k x H x W, before the gate */
    float *scaled;                      /* B x C_out/k x H x W: one expert's gated output */
    int64_t bytes;                      /* everything above, for release */
} moe_conv_layer;

/* Builds the layer for maps of C x H x W and adds its parameters to the
 * model's list. */
pmoe_status moe_conv_create(pmoe_model *m, const pmoe_config *cfg, int channels, int height,
                            int width, int patch, moe_conv_layer **out, pmoe_error *err);
void moe_conv_free(pmoe_model *m, moe_conv_layer *L);

/* y (B x C_out x H x W) from x; in training mode (m->training) batch norm
 * uses and updates the batch statistics. */
void moe_conv_forward(pmoe_model *m, moe_conv_layer *L, const float *x, float *y, int64_t batch);
/* Parameter gradients (the router's only when its gate carries one) and
 * dx += the layer's input gradient. */
void moe_conv_backward(pmoe_model *m, moe_conv_layer *L, const float *x, const float *dy, float *dx,
                       int64_t batch);

#endif
