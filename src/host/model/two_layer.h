/* two_layer.h: the two-layer pMoE and CNN behind model.h (model.c calls
 * these for model.type = pmoe | cnn). What each does is said at its
 * pmoe_model_* counterpart in model.h. */
#ifndef PMOE_MODEL_TWO_LAYER_H
#define PMOE_MODEL_TWO_LAYER_H

#include "model/model.h"

pmoe_status two_layer_create_sharded(pmoe_backend *be, pmoe_comm *comm, const pmoe_config *cfg,
                                     int channels, int height, int width, int patch, int classes,
                                     int64_t max_batch, pmoe_model **out, pmoe_error *err);
void two_layer_free(pmoe_model *m);
void two_layer_forward_valid(pmoe_model *m, int64_t batch, int64_t valid);
pmoe_status two_layer_loss(pmoe_model *m, int backward, double *loss, int64_t *correct,
                           pmoe_error *err);
int two_layer_updates(const pmoe_model *m, int i);
/* Whether the router's weight gradient rides on the fused experts'
 * backward, over the l picks only (the backend's fused ops run and the
 * renormalised gate leaves the score gradient zero off the picks). */
int two_layer_folds_router(const pmoe_model *m);
pmoe_status two_layer_router_loss(pmoe_model *m, int64_t batch, double *loss, pmoe_error *err);

#endif
