/* route.c: pmoe_route, the picks a saved model's routers make on the first
 * test samples (with the images, labels, deciding patches and gates) and the
 * load over the whole test set, for the routing pictures of viz/. One
 * process only: it keeps samples from the one evaluation pass. */
#include <stdlib.h>
#include <string.h>

#include "train/run.h"

pmoe_status pmoe_route(const pmoe_config *cfg, const char *checkpoint, int samples,
                       const pmoe_progress *progress, pmoe_routing *out, pmoe_error *err) {
    run r;
    memset(out, 0, sizeof *out);
    char origin[1024];
    int64_t step = 0;
    pmoe_status s = run_open_saved(&r, cfg, checkpoint, origin, sizeof origin, &step, err);
    if (!s && !r.routing.routes)
        s = pmoe_fail(err, PMOE_ERR_CONFIG, "%s: model.type = %s has no router to draw", origin,
                      r.info.model);
    if (!s && r.sharded)
        s = pmoe_fail(err, PMOE_ERR_CONFIG,
                      "pmoe route runs in one process (train.comm = single, or no mpirun)");
    if (!s) {
        const pmoe_routing_view *m = &r.routing;
        out->info = r.info;
        out->channels = r.test->channels;
        out->height = r.test->height;
        out->width = r.test->width;
        out->patch = r.input_patch;
        out->grid_rows = r.test->height / r.input_patch;
        out->grid_cols = r.test->width / r.input_patch;
        out->experts = m->experts;
        out->topl = m->topl;
        out->classes = r.load_classes;
        out->samples = (int)(samples < r.test->count ? samples : r.test->count);
        out->test_size = r.test->count;
        const int64_t per = (int64_t)out->channels * out->height * out->width,
                      kl = m->experts * m->topl;
        const int64_t kn = (int64_t)m->experts * m->patch_count;
        s = run_host_alloc(&r, &out->images, sizeof(float) * (size_t)(out->samples * per), "images",
                           err);
        if (!s)
            s = run_host_alloc(&r, &out->labels, sizeof(int32_t) * (size_t)out->samples, "labels",
                               err);
        if (!s)
            s = run_host_alloc(&r, &out->decisive, sizeof(int32_t) * (size_t)out->samples,
                               "decisive patches", err);
        if (!s)
            s = run_host_alloc(&r, &out->selected, sizeof(int32_t) * (size_t)(out->samples * kl),
                               "picks", err);
        if (!s)
            s = run_host_alloc(&r, &out->gate, sizeof(float) * (size_t)(out->samples * kl), "gates",
                               err);
        if (!s)
            s = run_host_alloc(&r, &out->by_position, sizeof(int64_t) * (size_t)kn, "counts", err);
        eval_stats st = {0};
        st.keep = out;
        st.progress = progress;
        if (!s) s = run_evaluate(&r, &st, err);
        if (!s) {
            memcpy(out->by_position, r.load_position, sizeof(int64_t) * (size_t)kn);
            out->test_acc = st.accuracy;
            out->router_recall = st.recall;
        }
    }
    run_close(&r);
    if (s) pmoe_routing_free(out);
    return s;
}

void pmoe_routing_free(pmoe_routing *routing) {
    free(routing->images);
    free(routing->labels);
    free(routing->decisive);
    free(routing->selected);
    free(routing->gate);
    free(routing->by_position);
    memset(routing, 0, sizeof *routing);
}
