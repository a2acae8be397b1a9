/* resolve.h: the checks a config needs the data for, shared by training and
 * the bench: which patch size the model uses (model.patch, or the data's
 * default), that it divides the input, and that l <= n for a routing model. */
#ifndef PMOE_TRAIN_RESOLVE_H
#define PMOE_TRAIN_RESOLVE_H

#include "data/dataset.h"
#include "pmoe/config.h"

pmoe_status pmoe_resolve_patch(const pmoe_config *cfg, const pmoe_dataset *ds, int *patch,
                               pmoe_error *err);

#endif
