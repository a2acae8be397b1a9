/* target_block.c: an isolated block of the deep bench (bench.h) as a
 * bench_target: the WRN layers a pMoE layer replaces, or the pMoE layer
 * alone, as model/wrn.h builds them, on random inputs with a fixed random
 * gradient at the output. A train step is its forward and backward (no
 * update: the models' update is timed in their own steps), an inference
 * step its evaluation forward. */
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "bench/bench_internal.h"
#include "model/wrn.h"

typedef struct block_target {
    pmoe_backend *be;
    pmoe_model *model;
    int64_t batch;
} block_target;

_Static_assert((int)PMOE_BENCH_BLOCKS == (int)PMOE_BLOCK_KINDS &&
                   (int)PMOE_BENCH_BLOCK_WRN == (int)PMOE_BLOCK_WRN_GROUP3 &&
                   (int)PMOE_BENCH_BLOCK_SPARSE == (int)PMOE_BLOCK_MOE_SPARSE &&
                   (int)PMOE_BENCH_BLOCK_DENSE == (int)PMOE_BLOCK_MOE_DENSE,
               "the bench's blocks are wrn.h's, in its order");

static void block_destroy(bench_target *t) {
    block_target *s = t->state;
    if (!s) return;
    pmoe_model_free(s->model);
    pmoe_backend_destroy(s->be);
    free(s);
    t->state = NULL;
}

static pmoe_status block_train_step(bench_target *t, double *loss, pmoe_error *err) {
    block_target *s = t->state;
    *loss = 0.0;
    s->model->training = 1;
    pmoe_model_forward(s->model, s->batch);
    pmoe_model_backward(s->model);
    return s->be->synchronize(s->be, err);
}

static pmoe_status block_infer_step(bench_target *t, pmoe_error *err) {
    block_target *s = t->state;
    s->model->training = 0;
    pmoe_model_forward(s->model, s->batch);
    s->model->training = 1;
    return s->be->synchronize(s->be, err);
}

static void block_set_timer(bench_target *t, pmoe_phase_timer *timer) {
    block_target *s = t->state;
    s->model->timer = timer;
}

pmoe_status bench_block_open(const pmoe_config *cfg, int which, int C, int H, int W, int patch,
                             int64_t batch, bench_target *t, pmoe_error *err) {
    memset(t, 0, sizeof *t);
    block_target *s = calloc(1, sizeof *s);
    if (!s) return pmoe_fail(err, PMOE_ERR_OOM, "bench: cannot allocate a target");
    t->state = s;
    t->train_step = block_train_step;
    t->infer_step = block_infer_step;
    t->set_timer = block_set_timer;
    t->destroy = block_destroy;
    s->batch = batch;
    pmoe_status st = pmoe_backend_create(cfg->train.device, cfg->train.threads, &s->be, err);
    if (!st) st = pmoe_backend_set_cpu_kernels(s->be, (pmoe_cpu_kernels)cfg->train.cpu_kernels, err);
    if (!st) st = pmoe_backend_set_precision(s->be, (pmoe_precision)cfg->train.precision, err);
    if (!st)
        st = pmoe_model_create_block(s->be, cfg, (pmoe_block_kind)which, C, H, W, patch, batch,
                                     &s->model, err);
    return st;
}

void bench_block_flops(const bench_target *t, const pmoe_config *cfg, pmoe_bench_block *out) {
    const block_target *s = t->state;
    pmoe_flop_report *r = malloc(sizeof *r);
    if (!r) return;
    pmoe_flops_model(s->model, &cfg->train, s->batch, r);
    for (int k = 0; k < PMOE_FLOPS_KINDS; k++) {
        out->train_flops[k] = out->infer_flops[k] = 0.0;
        for (int i = 0; i < r->layer_count; i++) {
            if (r->layers[i].is_loss) continue;
            out->train_flops[k] += pmoe_layer_flops_train(&r->layers[i], (pmoe_flop_kind)k);
            out->infer_flops[k] += pmoe_layer_flops_infer(&r->layers[i], (pmoe_flop_kind)k);
        }
    }
    free(r);
}
