/* wrn.h: the deep models behind model.h (model.c calls these for
 * model.type = wrn | wrn_pmoe). What each does is said at its pmoe_model_*
 * counterpart in model.h; wrn.c says how the networks are laid out. */
#ifndef PMOE_MODEL_WRN_H
#define PMOE_MODEL_WRN_H

#include "model/model.h"

/* patch: the pMoE layer's patch on the group-3 feature map (ignored by wrn). */
pmoe_status wrn_create(pmoe_backend *be, const pmoe_config *cfg, int channels, int height,
                       int width, int patch, int classes, int64_t max_batch, pmoe_model **out,
                       pmoe_error *err);
void wrn_free(pmoe_model *m);
void wrn_forward(pmoe_model *m, int64_t batch);
pmoe_status wrn_loss(pmoe_model *m, int backward, double *loss, int64_t *correct,
                     pmoe_error *err);
int wrn_updates(const pmoe_model *m, int i);

#endif
