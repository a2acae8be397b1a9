/* two_layer.h: the two-layer pMoE (eq. 1) and CNN (eq. 5) family behind
 * model.h (model.type = pmoe | cnn).
 *
 * One structure serves both: the CNN is the pMoE with k = 1, l = n, G = 1
 * and no router, and it skips the dispatch (its expert reads the patches
 * in place), so what it executes is what it needs. Split over ranks
 * (expert parallelism), each rank holds k/R experts and 1/R of every
 * batch; the exchanges and why they keep the one-process arithmetic are in
 * docs/expert-parallelism.md ("The parallel layout of the two-layer
 * model"). Everything runs through the backend and communicator tables:
 * this family never touches data. */
#ifndef PMOE_MODEL_TWO_LAYER_H
#define PMOE_MODEL_TWO_LAYER_H

#include "model/model.h"

enum { PARAM_ROUTER, PARAM_EXPERT, PARAM_OUTPUT, PARAM_COUNT };

typedef struct two_layer_model {
    pmoe_model base;            /* first: a pmoe_model * of this family points here */
    int has_router;             /* 0 for the CNN */
    int patch_count, patch_dim; /* n, d */
    int experts, topl;          /* k, l (CNN: 1, n) */
    int hidden;                 /* h, per expert */
    pmoe_gate_mode gate_mode;
    pmoe_param params[PARAM_COUNT]; /* base.params points here, indexed by PARAM_* */
    int gathered;                   /* the backend's fused gather + expert ops run: no expert_in */
    int profile_experts;            /* train.profile_experts: one call and NVTX range per expert */

    /* activations and their gradients, for this rank's max_batch samples */
    float *patches, *scores, *gate, *expert_in, *hidden_out;
    float *dhidden, *dgate, *dscores;
    int32_t *selected;
    const float *dlogits_local; /* the last loss's dlogits of this rank's samples */

    /* Expert parallelism only (NULL in one process). */
    float *expert_rows; /* local_experts x (B l) x d: this rank's experts' rows, global order */
    float *expert_hidden, *expert_dhidden; /* local_experts x (B l) x h */
    float *logits_all, *dlogits_all;       /* B x c: the global batch */
    int32_t *identity; /* B x l: t at [b, t]: an owner's rows as "patches" of the fused ops */
} two_layer_model;

extern const pmoe_model_ops two_layer_model_ops;

/* The family's state of a model two_layer_model_ops built. */
static inline two_layer_model *two_layer_of(pmoe_model *m) { return (two_layer_model *)m; }
static inline const two_layer_model *two_layer_of_const(const pmoe_model *m) {
    return (const two_layer_model *)m;
}

/* Whether the router's weight gradient rides on the fused experts'
 * backward, over the l picks only (the backend's fused ops run and the
 * renormalised gate leaves the score gradient zero off the picks). */
int two_layer_folds_router(const two_layer_model *t);

#endif
