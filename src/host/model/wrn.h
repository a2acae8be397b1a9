/* wrn.h: the deep family behind model.h (model.type = wrn | wrn_pmoe), and
 * the block a pMoE layer replaces, built alone so that it can be timed
 * against the pMoE layer without the rest of the network (pmoe bench).
 * wrn.c says how the networks are laid out. */
#ifndef PMOE_MODEL_WRN_H
#define PMOE_MODEL_WRN_H

#include "model/model.h"

extern const pmoe_model_ops wrn_model_ops;

/* The isolated blocks: what WRN-pMoE's pMoE layer stands in for, and the
 * layer itself in each of its two forms. */
typedef enum {
    PMOE_BLOCK_WRN_GROUP3, /* the WRN's group 3 after its first convolution: batch norm,
                                ReLU, 3x3 convolution, the 1x1 shortcut and the residual add */
    PMOE_BLOCK_MOE_SPARSE, /* the pMoE layer, model.moe_impl = sparse */
    PMOE_BLOCK_MOE_DENSE,  /* the pMoE layer, model.moe_impl = dense_masked */
    PMOE_BLOCK_KINDS
} pmoe_block_kind;

/* Builds block `kind` for a C x H x W map (the one WRN-pMoE's pMoE layer
 * routes, in patch x patch patches; the WRN block's shortcut reads the
 * C/2 x 2H x 2W map before it) as a deep model of its own on `be`, with
 * random N(0, 1) inputs and a fixed random gradient in m->dlogits (the
 * block's output), all from train.seed. Its layers carry the names they
 * have in the full networks, so their FLOP rows match. A train step is
 * pmoe_model_forward + pmoe_model_backward (no loss); evaluation sets
 * m->training = 0. */
pmoe_status pmoe_model_create_block(pmoe_backend *be, const pmoe_config *cfg, pmoe_block_kind kind,
                                    int channels, int height, int width, int patch, int64_t batch,
                                    pmoe_model **out, pmoe_error *err);

#endif
