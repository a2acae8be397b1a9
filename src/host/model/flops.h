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
 * A report is a list of named layers: pmoe_flops_two_layer() fills it with
 * the two-layer model's, pmoe_flops_deep() with a deep model's (WRN,
 * WRN-pMoE: one row per layer of its list, the pMoE layer split into
 * router, gate_topl, dispatch, experts and combine rows). Per-step costs
 * (the optimizer) are kept apart and shared over the batch: train per
 * sample = sum of forward and backward + update / batch; inference per
 * sample = the forward of every layer but the loss, in evaluation mode
 * where that costs less (batch norm on its running statistics). The
 * conventions of each layer, and the per-element constants of the deep
 * models' batch norm, ReLU, residual add and pooling, are in flops.c. */
#ifndef PMOE_MODEL_FLOPS_H
#define PMOE_MODEL_FLOPS_H

#include <stdint.h>

#include "model/model.h"
#include "pmoe/config.h"

/* A deep model's list (deep_layers.h: 64) + the pMoE split + loss. */
#define PMOE_FLOP_MAX_LAYERS 72

typedef enum {
    PMOE_FLOPS_USEFUL,
    PMOE_FLOPS_EXECUTED,
    PMOE_FLOPS_DENSE_MASKED,
    PMOE_FLOPS_KINDS
} pmoe_flop_kind;

typedef struct pmoe_layer_flops {
    char name[48]; /* "router", "group2.conv1", "group3.moe.experts", ... */
    int is_loss;   /* not part of inference */
    int has_eval;  /* eval_forward holds the inference forward (else forward does) */
    double forward[PMOE_FLOPS_KINDS];      /* per sample, in training mode */
    double backward[PMOE_FLOPS_KINDS];     /* per sample */
    double eval_forward[PMOE_FLOPS_KINDS]; /* per sample, evaluation mode (when has_eval) */
} pmoe_layer_flops;

typedef struct pmoe_flop_report {
    int layer_count;
    pmoe_layer_flops layers[PMOE_FLOP_MAX_LAYERS];
    double update[PMOE_FLOPS_KINDS]; /* the optimizer, per step */
    int64_t batch;                   /* what update is shared over */
} pmoe_flop_report;

/* The two-layer model's shape, as far as its cost goes. */
typedef struct pmoe_two_layer_cost_shape {
    int has_router;    /* 0: the CNN (k = 1, l = n, G = 1, no router) */
    int patches, dim;  /* n, d */
    int experts, topl; /* k, l */
    int hidden;        /* h, per expert (m = k h) */
    int classes;       /* c; 1 = binary logistic */
    pmoe_gate_mode gate;
    int learn_router;           /* the router gets a gradient and an update */
    int train_output;           /* the output weights a get a gradient and an update */
    int momentum, weight_decay; /* non-zero when the optimizer uses them */
    int router_over_picks;      /* the router's backward runs over the l picks only
                              (folded into the CPU's fused experts' backward) */
} pmoe_two_layer_cost_shape;

/* The cost shape of a built two-layer model (pmoe or cnn) under the given
 * training settings. */
pmoe_two_layer_cost_shape pmoe_two_layer_cost_shape_of(const pmoe_model *m,
                                                       const pmoe_train_config *train);

/* Fills out with the layers patch_extract, router, gate_topl, dispatch,
 * experts, combine, loss (the CNN lists the same names, its router, gate and
 * dispatch at 0) and the SGD update, for steps of `batch` samples. */
void pmoe_flops_two_layer(const pmoe_two_layer_cost_shape *s, int64_t batch, pmoe_flop_report *out);

/* Fills out with a deep model's layers (model.type wrn or
 * wrn_pmoe, or any network built with deep_layers.h), in the order of its list,
 * then "loss" and the SGD update under `train`, for steps of `batch`
 * samples. Rows are named after the layers; the pMoE layer "X" gives the
 * rows "X.router", "X.gate_topl", "X.dispatch", "X.experts" and
 * "X.combine". Executed counts follow the layer's model.moe_impl;
 * dense_masked ones are what the dense-masked form would run. */
void pmoe_flops_deep(const pmoe_model *m, const pmoe_train_config *train, int64_t batch,
                     pmoe_flop_report *out);

/* Either family's report: pmoe_flops_two_layer of the model's cost shape,
 * or pmoe_flops_deep. */
void pmoe_flops_model(const pmoe_model *m, const pmoe_train_config *train, int64_t batch,
                      pmoe_flop_report *out);

/* Forward + backward + update / batch, per sample. */
double pmoe_flops_train_per_sample(const pmoe_flop_report *r, pmoe_flop_kind kind);
/* Forward of every layer but the loss (in evaluation mode where a row has one), per sample. */
double pmoe_flops_infer_per_sample(const pmoe_flop_report *r, pmoe_flop_kind kind);
/* The layer of that name, or NULL. */
const pmoe_layer_flops *pmoe_flops_layer(const pmoe_flop_report *r, const char *name);

/* Sums into out (named `name`) the rows of a that b has no row of the same
 * name: for WRN-pMoE against its WRN, the pMoE layer (a = WRN-pMoE) or the
 * layers it replaces (a = WRN), since every other row is the same layer on
 * the same shape. Returns the number of rows summed. */
int pmoe_flops_unshared(const pmoe_flop_report *a, const pmoe_flop_report *b, const char *name,
                        pmoe_layer_flops *out);
/* A row's forward + backward, and its inference forward, of one kind. */
double pmoe_layer_flops_train(const pmoe_layer_flops *L, pmoe_flop_kind kind);
double pmoe_layer_flops_infer(const pmoe_layer_flops *L, pmoe_flop_kind kind);

const char *pmoe_flop_kind_name(pmoe_flop_kind kind);

#endif
