/* deep_layers.h: a deep network as a list of layers walked forward, then back.
 *
 * The network holds activations (each C x H x W per sample, allocated for
 * max_batch samples with a gradient of the same size, except the input's,
 * which needs none) and layers that read one or two activations and write
 * one. Forward walks the list in order; backward zeroes every activation
 * gradient once and walks the list in reverse, each layer ADDING its input
 * gradients (the backend's layer contract), so an activation read by two
 * layers (a residual block's input) gets the sum without special cases.
 * Parameters live in the model's list (model.h) so that the optimizer, the
 * checkpoints and the gradient guard see them like any other; batch norm's
 * running statistics are parameters with no gradient (saved, never updated).
 * Everything runs through the backend table: no data is touched here. */
#ifndef PMOE_MODEL_DEEP_LAYERS_H
#define PMOE_MODEL_DEEP_LAYERS_H

#include "model/deep_batchnorm.h"
#include "model/model.h"

struct moe_conv_layer;

typedef enum {
    LAYER_CONV, /* params: DEEP_WEIGHT (K x C x R x S) [, DEEP_BIAS (K)] */
    LAYER_BN,   /* params: DEEP_BN_* (C each) */
    LAYER_RELU,
    LAYER_ADD,  /* out = in + in2 */
    LAYER_POOL, /* global average: C x H x W -> C x 1 x 1 */
    LAYER_FC,   /* params: DEEP_WEIGHT (O x I), DEEP_BIAS (O); I = C H W of the input */
    LAYER_MOE   /* the pMoE convolution layer (moe_conv.h) */
} deep_layer_kind;

/* A layer's parameters, as offsets from its first (deep_layer.param). */
enum { DEEP_WEIGHT = 0, DEEP_BIAS = 1 };
enum { DEEP_BN_WEIGHT = 0, DEEP_BN_BIAS = 1, DEEP_BN_RUNNING_MEAN = 2, DEEP_BN_RUNNING_VAR = 3 };

typedef struct deep_activation {
    int channels, height, width;
    float *value, *grad; /* max_batch x C x H x W; grad NULL for the network's input */
} deep_activation;

typedef struct deep_layer {
    deep_layer_kind kind;
    char name[32];
    int in, in2, out;               /* activation ids (in2: LAYER_ADD only) */
    int param;                      /* the layer's first parameter in the model's list */
    int has_bias;                   /* LAYER_CONV */
    pmoe_conv_shape conv;           /* LAYER_CONV; batch is set per step */
    float *save_mean, *save_invstd; /* LAYER_BN: the batch statistics for backward */
    struct moe_conv_layer *moe;     /* LAYER_MOE */
} deep_layer;

/* Batch norm everywhere in the deep models (the dense layers and the pMoE
 * layer's experts), as PyTorch's defaults. */
#define DEEP_BN_EPS 1e-5f
#define DEEP_BN_MOMENTUM 0.1f

enum { DEEP_MAX_LAYERS = 64, DEEP_MAX_ACTIVATIONS = 64, DEEP_MAX_PARAMS = 96 };

/* The deep family's state (wrn.c builds it; the isolated blocks of
 * wrn_block_create too). */
typedef struct pmoe_deep_model {
    pmoe_model base; /* first: a pmoe_model * of this family points here */
    deep_activation acts[DEEP_MAX_ACTIVATIONS];
    int act_count;
    deep_layer layers[DEEP_MAX_LAYERS];
    int layer_count;
    pmoe_param params[DEEP_MAX_PARAMS];
    char param_names[DEEP_MAX_PARAMS][48];
    int param_count;
    int with_velocity; /* train.momentum > 0 */
    uint64_t seed;     /* train.seed: every parameter's init derives from it */
    int logits;        /* the activation holding the logits */
    int moe;           /* the pMoE layer's index, or -1 */
    int width;         /* model.width (for descriptions) */
    /* over ranks (deep_parallel.h) */
    deep_bn_domain bn;           /* whose samples the dense batch norms' statistics cover */
    deep_bn_domain expert_bn;    /* ... and the pMoE layer's experts' */
    int bn_channels;             /* the widest batch norm: the scratch's unit */
    float *bn_scratch, *bn_host; /* the domains' scratch (backend, host) */
    int64_t bn_scratch_floats;
    float *logits_all, *dlogits_all; /* distributed: the global batch's, max_batch x c */
    struct deep_bucket *buckets;     /* distributed: the gradients' all-reduce being filled */
} pmoe_deep_model;

/* The family's state of a model wrn.c built. */
static inline pmoe_deep_model *deep_of(pmoe_model *m) { return (pmoe_deep_model *)m; }
static inline const pmoe_deep_model *deep_of_const(const pmoe_model *m) {
    return (const pmoe_deep_model *)m;
}

/* Initial values of a new parameter. */
typedef enum { INIT_NORMAL, INIT_CONSTANT } deep_init;

/* Adds an activation of C x H x W per sample (with a gradient unless
 * no_grad); returns its id in *id. */
pmoe_status deep_add_activation(pmoe_model *m, int channels, int height, int width, int no_grad,
                                int *id, pmoe_error *err);

/* Adds a parameter named `name` of the given shape to the model's list,
 * initialised to N(0, value^2) or the constant value; trainable ones get a
 * gradient (and a velocity with momentum). Returns its index in *index. */
pmoe_status deep_add_param(pmoe_model *m, const char *name, int ndim, const int64_t *shape,
                           int trainable, deep_init init, double value, int *index,
                           pmoe_error *err);

/* The same for a part of a parameter split over ranks: its values are
 * elements first .. of the whole parameter's draw (an expert-parallel rank's
 * experts start as they do in one process). */
pmoe_status deep_add_param_part(pmoe_model *m, const char *name, int ndim, const int64_t *shape,
                                int trainable, deep_init init, double value, int64_t first,
                                int *index, pmoe_error *err);

/* Layer builders: each adds its parameters and output activation, and
 * returns the output's id in *out. */
pmoe_status deep_conv(pmoe_model *m, const char *name, int in, int out_channels, int kernel,
                      int stride, int bias, int *out, pmoe_error *err);
pmoe_status deep_batchnorm(pmoe_model *m, const char *name, int in, int *out, pmoe_error *err);
pmoe_status deep_relu(pmoe_model *m, const char *name, int in, int *out, pmoe_error *err);
pmoe_status deep_add(pmoe_model *m, const char *name, int a, int b, int *out, pmoe_error *err);
pmoe_status deep_pool(pmoe_model *m, const char *name, int in, int *out, pmoe_error *err);
pmoe_status deep_fc(pmoe_model *m, const char *name, int in, int outputs, int *out,
                    pmoe_error *err);
/* Appends an already built pMoE layer reading `in` into a new activation. */
pmoe_status deep_moe(pmoe_model *m, const char *name, struct moe_conv_layer *moe, int in, int *out,
                     pmoe_error *err);

/* The walk. */
void deep_forward(pmoe_model *m, int64_t batch);
void deep_backward(pmoe_model *m, int64_t batch);

/* Frees what the builders allocated (activations, batch-norm statistics,
 * parameters, the pMoE layer). */
void deep_release(pmoe_model *m);

/* A parameter's value / gradient on the backend. */
static inline float *deep_value(pmoe_model *m, int index) { return m->params[index].value.data; }
static inline float *deep_grad(pmoe_model *m, int index) { return m->params[index].grad.data; }

/* Elements of one sample of an activation. */
static inline int64_t deep_act_size(const deep_activation *a) {
    return (int64_t)a->channels * a->height * a->width;
}

#endif
