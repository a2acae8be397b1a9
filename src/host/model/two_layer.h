/* two_layer.h: the paper's two-layer pMoE (eq. 1) and its CNN baseline (eq. 5).
 *
 * One structure serves both: the CNN is the pMoE with k = 1, l = n, G = 1
 * and no router, and it skips the dispatch (its expert reads the patches in
 * place), so what it executes is what it needs. All buffers are sized for
 * max_batch once at creation; a step uses the first B <= max_batch rows.
 * Everything runs through the backend table: this file never touches data. */
#ifndef PMOE_MODEL_TWO_LAYER_H
#define PMOE_MODEL_TWO_LAYER_H

#include "backend/backend.h"
#include "core/phase_timer.h"
#include "pmoe/config.h"

typedef struct pmoe_param {
    const char *name;     /* stable; per-expert tensors are saved as "experts.<s>.<field>" */
    const char *field;    /* per-expert: the part after the expert id; NULL otherwise */
    pmoe_tensor value, grad, velocity; /* velocity only with momentum */
    int trainable;
} pmoe_param;

enum { PARAM_ROUTER, PARAM_EXPERT, PARAM_OUTPUT, PARAM_COUNT };

typedef struct pmoe_two_layer {
    pmoe_backend *be;
    int has_router;        /* 0 for the CNN */
    pmoe_patch_shape image;/* batch = max_batch */
    int patch_count, patch_dim; /* n, d */
    int experts, topl;     /* k, l (CNN: 1, n) */
    int hidden;            /* h, per expert */
    int classes;           /* c; 1 = binary logistic */
    pmoe_gate_mode gate_mode;
    pmoe_param params[PARAM_COUNT];

    /* activations and their gradients, for max_batch samples */
    float *images, *patches, *scores, *gate, *expert_in, *hidden_out, *logits;
    float *dlogits, *dhidden, *dgate, *dscores;
    int32_t *selected, *labels, *router_pair;
    float *router_weight, *stats;
    int64_t batch;         /* B of the last forward */
    pmoe_phase_timer *timer; /* NULL: untimed; else each op is a timed, NVTX-named phase */
} pmoe_two_layer;

/* Builds the model for samples of image shape (C, H, W) with `classes`
 * outputs; initialises parameters from train.seed as the paper does. */
pmoe_status pmoe_two_layer_create(pmoe_backend *be, const pmoe_config *cfg, int channels,
                                  int height, int width, int patch, int classes,
                                  int64_t max_batch, pmoe_two_layer **out, pmoe_error *err);
void pmoe_two_layer_free(pmoe_two_layer *m);

/* Forward pass on the B images already in m->images. */
void pmoe_two_layer_forward(pmoe_two_layer *m, int64_t batch);

/* Loss on m->labels; with backward != 0 also every trainable gradient.
 * Reads back stats: *loss is the batch mean, *correct the count. */
pmoe_status pmoe_two_layer_loss(pmoe_two_layer *m, int backward, double *loss, int64_t *correct,
                                pmoe_error *err);

/* Whether the SGD step updates parameter i (trainable, and for the router,
 * only while its gate carries a gradient). */
int pmoe_two_layer_updates(const pmoe_two_layer *m, int i);

/* One SGD step on every parameter that pmoe_two_layer_updates() names. */
void pmoe_two_layer_sgd(pmoe_two_layer *m, float lr, float momentum, float weight_decay);

/* The separate-training router step: forward scores of m->images, the
 * linear loss with m->router_pair / m->router_weight, and the gradient into
 * the router's grad. Returns the loss in *loss. */
pmoe_status pmoe_two_layer_router_loss(pmoe_two_layer *m, int64_t batch, double *loss,
                                       pmoe_error *err);

/* Count of parameters (trainable or not). */
int64_t pmoe_two_layer_param_count(const pmoe_two_layer *m);

#endif
