/* resolve.c: see resolve.h. */
#include "train/resolve.h"

pmoe_status pmoe_resolve_patch(const pmoe_config *cfg, const pmoe_dataset *ds, int *patch,
                               pmoe_error *err) {
    int p = cfg->model.patch;
    if (p == 0) p = ds->default_patch;
    if (p <= 0)
        return pmoe_fail(err, PMOE_ERR_CONFIG,
                         "config: model.patch: %s has no default patch size; set one",
                         ds->description);
    if (ds->height % p || ds->width % p)
        return pmoe_fail(err, PMOE_ERR_CONFIG,
                         "config: model.patch = %d does not divide the %dx%d input of %s", p,
                         ds->height, ds->width, ds->description);
    const int n = (ds->height / p) * (ds->width / p);
    if (cfg->model.type == PMOE_MODEL_PMOE && cfg->model.topl > n)
        return pmoe_fail(err, PMOE_ERR_CONFIG,
                         "config: model.topl = %d exceeds the %d patches per sample "
                         "(model.patch = %d)",
                         cfg->model.topl, n, p);
    *patch = p;
    return PMOE_OK;
}
