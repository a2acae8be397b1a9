/* model.h: a model the training loop drives, whichever its family.
 *
 * A model is a pmoe_model (what every family has: parameters, the batch's
 * images, labels and logits, the rank layout) whose `ops` points at its
 * family's table of operations, as backend.h's table does for ops. Two
 * families implement it, each in its own file:
 *   two_layer.c  the paper's two-layer pMoE (eq. 1) and its CNN baseline
 *                (eq. 5), also split over ranks (expert parallelism:
 *                docs/expert-parallelism.md);
 *   wrn.c        the deep models of the paper's section 4, WRN and
 *                WRN-pMoE: a list of layers (deep_layers.c) with one pMoE
 *                convolution layer (moe_conv.c); see docs/deep-models.md.
 * Callers use the pmoe_model_* calls below, which dispatch through the
 * table; nothing outside model/ reads a family's own state. What a caller
 * needs to know of the routing (to measure recall and expert load, to draw
 * the picks) is a pmoe_routing_view; what a tool needs to know of the
 * model's size and shape is a pmoe_memory_plan and a
 * pmoe_model_description. All buffers are sized for max_batch once at
 * creation; a step uses the first B <= max_batch rows. */
#ifndef PMOE_MODEL_MODEL_H
#define PMOE_MODEL_MODEL_H

#include "backend/backend.h"
#include "comm/comm.h"
#include "core/phase_timer.h"
#include "pmoe/config.h"

typedef struct pmoe_param {
    const char *name;  /* stable; per-expert tensors are saved as "experts.<s>.<field>" */
    const char *field; /* per-expert: the part after the expert id; NULL otherwise */
    pmoe_tensor value, grad, velocity; /* velocity only with momentum */
    int trainable;
    int sharded; /* per-expert and split over ranks: this rank holds experts
                             expert_base .. expert_base + local_experts - 1 */
} pmoe_param;

/* What the training loop, evaluation and `pmoe route` read of a model's
 * routing. A model that routes nothing (the CNN, the WRN) has routes 0,
 * one expert, and selected / gate NULL. */
typedef struct pmoe_routing_view {
    int routes;                 /* routers pick patches */
    int experts, topl;          /* k (global), l; CNN: 1, n; WRN: 1, 1 */
    int patch_count, patch_dim; /* n, d of the routed input (WRN: 1, 0) */
    pmoe_gate_mode gate_mode;
    int router_param;        /* the routers' weights in the parameter list; -1: none */
    const int32_t *selected; /* backend memory, B x k x l: the last forward's picks */
    const float *gate;       /* backend memory, B x k x l: their gate values */
} pmoe_routing_view;

/* The bytes a model holds on its backend, by what they are for. */
typedef struct pmoe_memory_plan {
    int64_t parameter_bytes;  /* values, gradients and optimizer state */
    int64_t activation_bytes; /* forward buffers for max_batch samples, the images and
                                 labels included (deep models: and the loss's statistics) */
    int64_t backward_bytes;   /* the gradients of those buffers (two-layer models: and the
                                 loss's statistics and the separate router phase's inputs) */
} pmoe_memory_plan;

/* What a model is, for reports (pmoe bench) and comparisons. */
typedef struct pmoe_model_description {
    char model[16];                  /* "pmoe", "cnn", "wrn_pmoe", "wrn" */
    char gate[16];                   /* the gate mode the steps use */
    char moe_impl[16];               /* wrn_pmoe: "sparse" or "dense_masked"; else "" */
    int width;                       /* deep models: model.width; else 0 */
    int patches, dim, experts, topl; /* n, d, k, l of the routed input (a WRN: 1, 0, 1, 1) */
    int hidden;                      /* m, total over experts (deep models: 0) */
    int classes;
    int learn_router; /* the SGD step updates a router */
    int train_output; /* ... and the output layer (the deep models' head: always) */
    int map_channels, map_height, map_width; /* wrn_pmoe: the map its pMoE layer routes; else 0 */
    int64_t params;                          /* pmoe_model_param_count */
} pmoe_model_description;

typedef struct pmoe_model pmoe_model;

/* A family's table. Every entry is required unless it says what NULL means. */
typedef struct pmoe_model_ops {
    const char *family; /* "two_layer", "deep" */
    /* Builds the model for samples of image shape (C, H, W) with `classes`
     * outputs over comm's ranks (NULL or a single communicator: one
     * process), parameters initialised from train.seed. */
    pmoe_status (*create)(pmoe_backend *be, pmoe_comm *comm, const pmoe_config *cfg, int channels,
                          int height, int width, int patch, int classes, int64_t max_batch,
                          pmoe_model **out, pmoe_error *err);
    /* Forward on this rank's `batch` images in m->images, of a global batch
     * whose first `valid` samples are real; writes m->logits. */
    void (*forward)(pmoe_model *m, int64_t batch, int64_t valid);
    /* The loss of the last forward on m->labels into m->stats (loss, correct);
     * with backward != 0 also dlogits. Queued: nothing is read back. */
    void (*loss)(pmoe_model *m, int backward);
    /* From dlogits (the loss's, or for a network without a loss a gradient
     * the caller wrote) into every trainable parameter's gradient,
     * overwriting it. */
    void (*backward)(pmoe_model *m);
    /* Whether the SGD step updates parameter i. */
    int (*updates)(const pmoe_model *m, int i);
    /* One SGD step on every parameter updates() names, skipped where skip
     * (backend memory, may be NULL) holds a nonzero guard verdict (both
     * families use pmoe_model_sgd_params). */
    void (*sgd)(pmoe_model *m, float lr, float momentum, float weight_decay, const int32_t *skip);
    void (*memory_plan)(const pmoe_model *m, pmoe_memory_plan *out);
    /* What only the family knows (model, hidden, moe_impl, width, map,
     * learn_router, train_output): pmoe_model_describe has filled the rest
     * from the routing view. */
    void (*describe)(const pmoe_model *m, pmoe_model_description *out);
    void (*routing)(const pmoe_model *m, pmoe_routing_view *out);
    /* The separate-training router step (see pmoe_model_router_loss); NULL:
     * the family has no separate router phase. */
    pmoe_status (*router_loss)(pmoe_model *m, int64_t batch, double *loss, pmoe_error *err);
    void (*free)(pmoe_model *m);
} pmoe_model_ops;

/* What every family has. A family's own state extends it (two_layer.h,
 * deep_layers.h), with this struct as its first member. */
struct pmoe_model {
    const pmoe_model_ops *ops;
    pmoe_backend *be;
    pmoe_patch_shape image; /* batch = this rank's max_batch share */
    int classes;            /* c; 1 = binary logistic */
    pmoe_param *params;     /* param_count trainable or saved tensors */
    int param_count;
    int training;            /* batch norm: batch statistics (1) or running ones (0, evaluation) */
    float *images;           /* image.batch x C x H x W, filled by the caller */
    int32_t *labels;         /* max_batch (the global batch's), filled by the caller */
    float *logits, *dlogits; /* B x c */
    float *stats;            /* 2: the last loss and correct count */
    /* The separate router phase's inputs (filled by the caller), where the
     * family has one (ops->router_loss); else NULL. */
    int32_t *router_pair;
    float *router_weight;
    int64_t batch;           /* B of the last forward (this rank's samples) */
    int64_t valid;           /* real samples of the last forward's global batch */
    int64_t max_batch;       /* the global batch the buffers are sized for */
    pmoe_phase_timer *timer; /* NULL: untimed; else each op is a timed, NVTX-named phase */

    /* Expert parallelism; in one process comm is NULL, ranks 1, local_experts k.
     * The two-layer models split their experts over all ranks (expert_comm =
     * comm, expert_ranks = ranks). The deep models split the batch over all
     * ranks and the pMoE layer's experts over groups of E = expert_ranks
     * consecutive ranks (rank r is member r mod E of group r / E); the ranks
     * that hold the same experts, one per group, form replica_comm. */
    pmoe_comm *comm; /* distributed: the exchange runs through it */
    int rank, ranks;
    int local_experts;       /* k / expert_ranks */
    int expert_base;         /* global id of this rank's first expert */
    pmoe_comm *expert_comm;  /* this rank's group; NULL when E = 1 (no exchange) */
    pmoe_comm *replica_comm; /* sums the sharded gradients; NULL when R = E (one replica) */
    int expert_ranks;        /* E: how many ranks split the experts (1: none) */
    int64_t exchange_bytes;  /* sent to other ranks since created (the caller may reset it) */
};

/* Builds cfg's model (its family by model.type) in one process. */
pmoe_status pmoe_model_create(pmoe_backend *be, const pmoe_config *cfg, int channels, int height,
                              int width, int patch, int classes, int64_t max_batch,
                              pmoe_model **out, pmoe_error *err);
void pmoe_model_free(pmoe_model *m);

/* The same model split over comm's ranks when comm is distributed (else
 * exactly pmoe_model_create). max_batch is the global batch: it and
 * model.experts must be divisible by the rank count (a config error says so
 * otherwise); this rank's buffers hold max_batch / ranks samples. The deep
 * models split the batch over every rank and the pMoE layer's experts over
 * groups of train.expert_parallel ranks (model/deep_parallel.h). */
pmoe_status pmoe_model_create_sharded(pmoe_backend *be, pmoe_comm *comm, const pmoe_config *cfg,
                                      int channels, int height, int width, int patch, int classes,
                                      int64_t max_batch, pmoe_model **out, pmoe_error *err);

/* How many ranks split the experts (E) when cfg's model runs over `ranks`
 * ranks with `local_size` per node: the two-layer models all of them; the
 * deep models train.expert_parallel, or when 0 the largest E <= the ranks on
 * one node that divides both the ranks and model.experts (a WRN: 1).
 * A config error when the asked E does not fit. */
pmoe_status pmoe_model_expert_parallel(const pmoe_config *cfg, int ranks, int local_size,
                                       int *expert_ranks, pmoe_error *err);

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

/* pmoe_model_loss without the read: loss (and with backward != 0 the
 * gradients) queued, the batch's loss and correct count left in m->stats. */
void pmoe_model_loss_queued(pmoe_model *m, int backward);

/* The backward pass alone, from the gradient in m->dlogits (see
 * pmoe_model_ops.backward). */
void pmoe_model_backward(pmoe_model *m);

/* Whether the SGD step updates parameter i (trainable, and for a router,
 * only while its gate carries a gradient). */
int pmoe_model_updates(const pmoe_model *m, int i);

/* One SGD step on every parameter that pmoe_model_updates() names; the
 * guarded form changes nothing where skip (an int32 of backend memory, a
 * nonfinite_guard verdict) is not 0 when the update runs. */
void pmoe_model_sgd(pmoe_model *m, float lr, float momentum, float weight_decay);
void pmoe_model_sgd_guarded(pmoe_model *m, float lr, float momentum, float weight_decay,
                            const int32_t *skip);

/* The separate-training router step: forward scores of m->images, the
 * linear loss with m->router_pair / m->router_weight, and the gradient into
 * the router's grad. Returns the loss in *loss; a config error for a family
 * without a separate router phase. */
pmoe_status pmoe_model_router_loss(pmoe_model *m, int64_t batch, double *loss, pmoe_error *err);

/* Count of parameters (trainable or not), over all ranks' experts. */
int64_t pmoe_model_param_count(const pmoe_model *m);

/* The routing the last forward did, and the model's routing shape. */
pmoe_routing_view pmoe_model_routing(const pmoe_model *m);

/* The model's bytes on its backend (see pmoe_memory_plan). */
pmoe_memory_plan pmoe_model_memory_plan(const pmoe_model *m);

/* What the model is (see pmoe_model_description). */
void pmoe_model_describe(const pmoe_model *m, pmoe_model_description *out);

/* For the families: the SGD step over the parameter list, and the bytes of
 * the list's values, gradients and velocities. */
void pmoe_model_sgd_params(pmoe_model *m, float lr, float momentum, float weight_decay,
                           const int32_t *skip);
int64_t pmoe_model_parameter_bytes(const pmoe_model *m);

/* For the families over ranks: buf summed over comm's ranks in place (rank
 * order, comm.h; nothing with one rank or none), its bytes counted in
 * exchange_bytes. */
void pmoe_model_all_reduce(pmoe_model *m, pmoe_comm *comm, float *buf, int64_t count);
/* The bytes one such sum of count floats sends from this rank. */
void pmoe_model_count_all_reduce(pmoe_model *m, const pmoe_comm *comm, int64_t count);

/* The loss over m->comm's ranks: every rank computes the one-process loss
 * on the gathered logits (logits_all, max_batch x c) of the global batch's
 * m->valid samples (the same op on the same numbers: the same loss, bit for
 * bit, and dlogits_all scaled by 1 / valid, the padding's rows zeroed);
 * returns this rank's rows of dlogits_all. */
const float *pmoe_model_sharded_loss(pmoe_model *m, float *logits_all, float *dlogits_all,
                                     int backward);

#endif
