/* flops.h: analytic FLOP counts of a model, per layer, per sample.
 *
 * A count is what a layer's arithmetic costs, with a multiply-add = 2 FLOPs,
 * counted from the shapes (never measured). Three kinds:
 *   useful        what the sparse model must compute: the least arithmetic
 *                 that yields the loss and the gradients of what it trains;
 *   executed      what pmoe's kernels actually run (>= useful: a kernel may
 *                 run a dense GEMM over zeros or recompute a shared term);
 *   dense_masked  what the paper's form runs: every expert on every patch,
 *                 then masked (executed, with l replaced by n in the expert
 *                 and combine layers).
 *
 * A report is a list of named layers, so a deeper model (WRN, WRN-pMoE)
 * fills the same structure with its own layers; pmoe_flops_two_layer() is
 * the two-layer model's. Per-step costs (the optimizer) are kept apart and
 * shared over the batch: train per sample = sum of forward and backward +
 * update / batch; inference per sample = the forward of every layer but the
 * loss. The conventions of each two-layer layer are in flops.c. */
#ifndef PMOE_MODEL_FLOPS_H
#define PMOE_MODEL_FLOPS_H

#include <stdint.h>

#include "model/two_layer.h"
#include "pmoe/config.h"

#define PMOE_FLOP_MAX_LAYERS 16

typedef enum { PMOE_FLOPS_USEFUL, PMOE_FLOPS_EXECUTED, PMOE_FLOPS_DENSE_MASKED, PMOE_FLOPS_KINDS } pmoe_flop_kind;

typedef struct pmoe_layer_flops {
    const char *name;    /* "router", "experts", ... (static storage) */
    int is_loss;         /* not part of inference */
    double forward[PMOE_FLOPS_KINDS];  /* per sample */
    double backward[PMOE_FLOPS_KINDS]; /* per sample */
} pmoe_layer_flops;

typedef struct pmoe_flop_report {
    int layer_count;
    pmoe_layer_flops layers[PMOE_FLOP_MAX_LAYERS];
    double update[PMOE_FLOPS_KINDS]; /* the optimizer, per step */
    int64_t batch;                   /* what update is shared over */
} pmoe_flop_report;

/* The two-layer model's shape, as far as its cost goes. */
typedef struct pmoe_two_layer_cost_shape {
    int has_router;     /* 0: the CNN (k = 1, l = n, G = 1, no router) */
    int patches, dim;   /* n, d */
    int experts, topl;  /* k, l */
    int hidden;         /* h, per expert (m = k h) */
    int classes;        /* c; 1 = binary logistic */
    pmoe_gate_mode gate;
    int learn_router;   /* the router gets a gradient and an update */
    int train_output;   /* the output weights a get a gradient and an update */
    int momentum, weight_decay; /* non-zero when the optimizer uses them */
} pmoe_two_layer_cost_shape;

/* The cost shape of a built model under the given training settings. */
pmoe_two_layer_cost_shape pmoe_two_layer_cost_shape_of(const pmoe_two_layer *m,
                                                       const pmoe_train_config *train);

/* Fills out with the layers patch_extract, router, gate_topl, dispatch,
 * experts, combine, loss (the CNN lists the same names, its router, gate and
 * dispatch at 0) and the SGD update, for steps of `batch` samples. */
void pmoe_flops_two_layer(const pmoe_two_layer_cost_shape *s, int64_t batch,
                          pmoe_flop_report *out);

/* Forward + backward + update / batch, per sample. */
double pmoe_flops_train_per_sample(const pmoe_flop_report *r, pmoe_flop_kind kind);
/* Forward of every layer but the loss, per sample. */
double pmoe_flops_infer_per_sample(const pmoe_flop_report *r, pmoe_flop_kind kind);
/* The layer of that name, or NULL. */
const pmoe_layer_flops *pmoe_flops_layer(const pmoe_flop_report *r, const char *name);

const char *pmoe_flop_kind_name(pmoe_flop_kind kind);

#endif
