/* model.h: a model the training loop drives, whichever its kind.
 *
 * Two families sit behind this one API (model.c dispatches): the paper's
 * two-layer pMoE (eq. 1) and its CNN baseline (eq. 5), in two_layer.c, and
 * the deep models WRN and WRN-pMoE (spec section 4), in wrn.c, which walk a
 * list of layers (layers.c) with one pMoE convolution layer (moe_conv.c).
 * The training loop sees the parameters as a list (params, param_count),
 * fills images and labels, and calls forward / loss / sgd; the fields
 * marked "two-layer" below mean nothing for a deep model, except that
 * experts, topl, patch_count and selected describe its pMoE layer (a WRN
 * has no router: has_router 0, experts 1).
 *
 * The two-layer models. One structure serves both: the CNN is the pMoE with k = 1, l = n, G = 1
 * and no router, and it skips the dispatch (its expert reads the patches in
 * place), so what it executes is what it needs. All buffers are sized for
 * max_batch once at creation; a step uses the first B <= max_batch rows.
 * Everything runs through the backend table: this file never touches data.
 *
 * Expert parallelism (a communicator that is distributed, see comm.h): R
 * ranks each hold a contiguous shard of every global batch (rank r has
 * global samples [r B/R, (r+1) B/R) of it) and k/R experts (global ids
 * rank * k/R ...); routers and output weights are replicated. Each rank
 * routes its own samples against all k routers and gathers its rows for
 * every expert (k x (b l) x d, as alone); one equal-split all-to-all sends
 * expert s's rows to s's owner, which receives them rank-major, i.e. in
 * global sample order: its expert input is exactly the one-process layout
 * (the rows of that expert for all B samples), so its experts run the
 * same ops on the same rows in the same order, bit for bit (with the
 * backend's fused gather ops too: see owner_fused in two_layer.c). The
 * outputs go back the same way, each rank combines
 * its own samples, and the logits of the global batch are all-gathered so
 * every rank computes the one-process loss over them (identical values, the
 * mean over the global batch) and keeps its shard of dlogits. The backward
 * pass mirrors this: dhidden to the owners, the expert gradients stay where
 * the experts live (they saw all their rows), and the replicated parameters'
 * gradients (routers; output weights when trained) are all-reduced. A
 * global batch may end in padding (zero images after the `valid` real
 * samples, so it splits evenly); padding gets zero loss weight and zero
 * gradient. Without a communicator (or a single one) none of this runs:
 * the one-process path is the code as it was, with no copy added. */
#ifndef PMOE_MODEL_MODEL_H
#define PMOE_MODEL_MODEL_H

#include "backend/backend.h"
#include "comm/comm.h"
#include "core/phase_timer.h"
#include "pmoe/config.h"

typedef struct pmoe_param {
    const char *name;     /* stable; per-expert tensors are saved as "experts.<s>.<field>" */
    const char *field;    /* per-expert: the part after the expert id; NULL otherwise */
    pmoe_tensor value, grad, velocity; /* velocity only with momentum */
    int trainable;
    int sharded;          /* per-expert and split over ranks: this rank holds experts
                             expert_base .. expert_base + local_experts - 1 */
} pmoe_param;

enum { PARAM_ROUTER, PARAM_EXPERT, PARAM_OUTPUT, PARAM_COUNT };

typedef struct pmoe_model {
    pmoe_backend *be;
    int has_router;        /* 0 for the CNN */
    pmoe_patch_shape image;/* batch = max_batch */
    int patch_count, patch_dim; /* n, d */
    int experts, topl;     /* k, l (CNN: 1, n) */
    int hidden;            /* h, per expert */
    int classes;           /* c; 1 = binary logistic */
    pmoe_gate_mode gate_mode;
    pmoe_param *params;    /* param_count trainable or saved tensors: the two-layer's
                              PARAM_COUNT (indexed by PARAM_*), or a deep model's list */
    int param_count;
    pmoe_param two_layer_params[PARAM_COUNT];
    struct pmoe_deep_model *deep; /* wrn / wrn_pmoe (wrn.h); NULL for the two-layer models */
    int training;          /* batch norm: batch statistics (1) or running ones (0, evaluation) */

    /* activations and their gradients, for max_batch samples */
    int gathered;          /* the backend's fused gather + expert ops run: no expert_in */
    int profile_experts;   /* train.profile_experts: one call and NVTX range per expert */
    float *images, *patches, *scores, *gate, *expert_in, *hidden_out, *logits;
    float *dlogits, *dhidden, *dgate, *dscores;
    int32_t *selected, *labels, *router_pair;
    float *router_weight, *stats;
    int64_t batch;         /* B of the last forward (this rank's samples) */
    pmoe_phase_timer *timer; /* NULL: untimed; else each op is a timed, NVTX-named phase */

    /* Expert parallelism; in one process comm is NULL, ranks 1, local_experts k. */
    pmoe_comm *comm;       /* distributed: the exchange runs through it */
    int rank, ranks;
    int local_experts;     /* k / ranks */
    int expert_base;       /* global id of this rank's first expert */
    int64_t max_batch;     /* the global batch the buffers are sized for (image.batch is
                              this rank's share) */
    int64_t valid;         /* real samples of the last forward's global batch */
    float *expert_rows;    /* local_experts x (B l) x d: this rank's experts' rows, global order */
    float *expert_hidden, *expert_dhidden; /* local_experts x (B l) x h */
    float *logits_all, *dlogits_all;       /* B x c: the global batch */
    int32_t *identity;     /* B x l: t at [b, t]: an owner's rows as "patches" of the fused ops */
    int64_t exchange_bytes; /* sent to other ranks since created (the caller may reset it) */
} pmoe_model;

/* Builds the model for samples of image shape (C, H, W) with `classes`
 * outputs; initialises parameters from train.seed as the paper does. */
pmoe_status pmoe_model_create(pmoe_backend *be, const pmoe_config *cfg, int channels,
                                  int height, int width, int patch, int classes,
                                  int64_t max_batch, pmoe_model **out, pmoe_error *err);
void pmoe_model_free(pmoe_model *m);

/* The same model split over comm's ranks when comm is distributed (else
 * exactly pmoe_two_layer_create). max_batch is the global batch: it and
 * model.experts must be divisible by the rank count (a config error says so
 * otherwise); this rank's buffers hold max_batch / ranks samples. */
pmoe_status pmoe_model_create_sharded(pmoe_backend *be, pmoe_comm *comm,
                                          const pmoe_config *cfg, int channels, int height,
                                          int width, int patch, int classes, int64_t max_batch,
                                          pmoe_model **out, pmoe_error *err);

/* Forward pass on the B images already in m->images. */
void pmoe_model_forward(pmoe_model *m, int64_t batch);

/* Sharded: forward on this rank's `batch` images of a global batch of
 * ranks * batch samples whose first `valid` are real (the rest padding,
 * which the loss ignores); labels hold the global batch's `valid` labels.
 * In one process valid must equal batch. pmoe_model_forward(m, b) is
 * this with valid = ranks * b. */
void pmoe_model_forward_valid(pmoe_model *m, int64_t batch, int64_t valid);

/* Loss on m->labels; with backward != 0 also every trainable gradient.
 * Reads back stats: *loss is the batch mean, *correct the count. */
pmoe_status pmoe_model_loss(pmoe_model *m, int backward, double *loss, int64_t *correct,
                                pmoe_error *err);

/* Whether the SGD step updates parameter i (trainable, and for the router,
 * only while its gate carries a gradient). */
int pmoe_model_updates(const pmoe_model *m, int i);

/* One SGD step on every parameter that pmoe_model_updates() names. */
void pmoe_model_sgd(pmoe_model *m, float lr, float momentum, float weight_decay);

/* The separate-training router step: forward scores of m->images, the
 * linear loss with m->router_pair / m->router_weight, and the gradient into
 * the router's grad. Returns the loss in *loss. */
pmoe_status pmoe_model_router_loss(pmoe_model *m, int64_t batch, double *loss,
                                       pmoe_error *err);

/* Count of parameters (trainable or not), over all ranks' experts. */
int64_t pmoe_model_param_count(const pmoe_model *m);

#endif
