/* resolve.h: the checks a config needs the data for, shared by training and
 * the bench: which patch size the model uses (model.patch, or the data's
 * default), that it divides the input, and that l <= n for a routing model.
 * For the deep models the patch is one of the pMoE layer's feature map
 * (a quarter of the input's side), and model.patch = 0 means a 4 x 4 grid. */
#ifndef PMOE_TRAIN_RESOLVE_H
#define PMOE_TRAIN_RESOLVE_H

#include "data/dataset.h"
#include "pmoe/config.h"

pmoe_status pmoe_resolve_patch(const pmoe_config *cfg, const pmoe_dataset *ds, int *patch,
                               pmoe_error *err);

/* The side, on the input image, of the region one routed patch covers:
 * model_patch for the two-layer models, 4 model_patch for the deep ones. */
int pmoe_input_patch(const pmoe_config *cfg, int model_patch);

/* Over R ranks (train.comm distributed): what must divide what, as config
 * errors. The two-layer models: R divides k (each rank owns k / R experts),
 * train.batch (and train.router_batch). The deep models: R divides
 * train.batch and every epoch's last batch (batch norm takes no padding),
 * and the expert-parallel group E (model.h's pmoe_model_expert_parallel,
 * returned in *expert_ranks; local_size: ranks on this node) fits. */
pmoe_status pmoe_resolve_ranks(const pmoe_config *cfg, const pmoe_dataset *ds, int ranks,
                               int local_size, int *expert_ranks, pmoe_error *err);

#endif
