/* resolve.c: see resolve.h. */
#include "train/resolve.h"

#include "model/model.h"

/* The deep models route on the feature map of group 3, a quarter of the
 * input's side (two stride-2 convolutions). */
enum { DEEP_MAP_REDUCTION = 4 };

int pmoe_input_patch(const pmoe_config *cfg, int model_patch) {
    return pmoe_model_is_deep(cfg->model.type) ? model_patch * DEEP_MAP_REDUCTION : model_patch;
}

static pmoe_status resolve_deep(const pmoe_config *cfg, const pmoe_dataset *ds, int *patch,
                                pmoe_error *err) {
    if (ds->height % DEEP_MAP_REDUCTION || ds->width % DEEP_MAP_REDUCTION)
        return pmoe_fail(err, PMOE_ERR_CONFIG,
                         "config: model.type = %s needs an input side divisible by 4, not "
                         "%dx%d (%s)",
                         pmoe_model_type_name(cfg->model.type), ds->height, ds->width,
                         ds->description);
    const int map_h = ds->height / DEEP_MAP_REDUCTION, map_w = ds->width / DEEP_MAP_REDUCTION;
    int p = cfg->model.patch;
    if (p == 0) p = map_h % 4 == 0 && map_w % 4 == 0 ? map_h / 4 : 1; /* a 4x4 grid if it fits */
    if (map_h % p || map_w % p)
        return pmoe_fail(err, PMOE_ERR_CONFIG,
                         "config: model.patch = %d does not divide the %dx%d feature map that "
                         "the pMoE layer routes (a quarter of the %dx%d input)",
                         p, map_h, map_w, ds->height, ds->width);
    const int n = (map_h / p) * (map_w / p);
    if (cfg->model.type == PMOE_MODEL_WRN_PMOE && cfg->model.topl > n)
        return pmoe_fail(err, PMOE_ERR_CONFIG,
                         "config: model.topl = %d exceeds the %d patches of the %dx%d feature "
                         "map (model.patch = %d)",
                         cfg->model.topl, n, map_h, map_w, p);
    *patch = p;
    return PMOE_OK;
}

pmoe_status pmoe_resolve_patch(const pmoe_config *cfg, const pmoe_dataset *ds, int *patch,
                               pmoe_error *err) {
    if (pmoe_model_is_deep(cfg->model.type)) return resolve_deep(cfg, ds, patch, err);
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

/* train.batch over the ranks. */
static pmoe_status batch_splits(const pmoe_config *cfg, int R, pmoe_error *err) {
    if (cfg->train.batch % R == 0) return PMOE_OK;
    return pmoe_fail(err, PMOE_ERR_CONFIG,
                     "config: train.batch = %d is not divisible by the %d ranks: each rank "
                     "takes B / R samples of every batch",
                     cfg->train.batch, R);
}

pmoe_status pmoe_resolve_ranks(const pmoe_config *cfg, const pmoe_dataset *ds, int ranks,
                               int local_size, int *expert_ranks, pmoe_error *err) {
    const int R = ranks;
    pmoe_status s = PMOE_OK;
    if (pmoe_model_is_deep(cfg->model.type)) {
        s = pmoe_model_expert_parallel(cfg, R, local_size, expert_ranks, err);
        if (!s) s = batch_splits(cfg, R, err);
        const int64_t last = ds->count % cfg->train.batch;
        if (!s && last % R)
            s = pmoe_fail(err, PMOE_ERR_CONFIG,
                          "config: an epoch's last batch of %lld samples (%lld training "
                          "samples, train.batch = %d) does not split evenly over %d ranks, "
                          "and batch norm takes no padding: choose data.train_size so that "
                          "it does",
                          (long long)last, (long long)ds->count, cfg->train.batch, R);
        return s;
    }
    *expert_ranks = R;
    const int k = cfg->model.type == PMOE_MODEL_PMOE ? cfg->model.experts : 1;
    if (k % R)
        return pmoe_fail(err, PMOE_ERR_CONFIG,
                         "config: model.experts = %d is not divisible by the %d ranks: expert "
                         "parallelism gives each rank k / R experts; start a rank count that "
                         "divides %d%s",
                         k, R, k,
                         cfg->model.type == PMOE_MODEL_CNN
                             ? " (the CNN is one expert: run it in one process)"
                             : "");
    s = batch_splits(cfg, R, err);
    if (!s && cfg->train.mode == PMOE_TRAIN_SEPARATE && cfg->train.router_batch % R)
        s = pmoe_fail(err, PMOE_ERR_CONFIG,
                      "config: train.router_batch = %d is not divisible by the %d ranks",
                      cfg->train.router_batch, R);
    return s;
}
