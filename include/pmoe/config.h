/* config.h: every setting of a pmoe run, and how it is read.
 *
 * A run is described by INI text ("[model]\nexperts = 8") and by
 * `section.key=value` overrides applied on top, in that order. The key names
 * are a contract that scripts rely on; pmoe_config_keys() lists them. Values
 * are checked for type and range as they are read; checks that need the data
 * (l <= n, the patch size dividing the image, class indices) happen when the
 * run starts, in pmoe_resolve_patch() (src/host/train/resolve.h) and the
 * data's open. */
#ifndef PMOE_CONFIG_H
#define PMOE_CONFIG_H

#include <stdint.h>

#include "pmoe/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    PMOE_DATA_AUTO,
    PMOE_DATA_SYNTHETIC,
    PMOE_DATA_MOSAIC,
    PMOE_DATA_IDX,
    PMOE_DATA_CIFAR10, /* the CIFAR-10 binary batches in data.path */
    PMOE_DATA_NOISY,   /* an IDX item shrunk and pasted on a cluttered background */
    PMOE_DATA_FOLDER   /* your own PNG / JPEG images: data.path/{train,test}/<class>/ */
} pmoe_data_source;
/* pmoe and cnn: the two-layer models of the theory (the paper's eq. 1 and
 * eq. 5); wrn and wrn_pmoe: the deep models (its section 4). */
typedef enum {
    PMOE_MODEL_PMOE,
    PMOE_MODEL_CNN,
    PMOE_MODEL_WRN,
    PMOE_MODEL_WRN_PMOE
} pmoe_model_type;
/* The WRN-pMoE layer: sparse runs each expert on its selected patches only;
 * dense_masked is the paper code's form (mask the map, run every expert on
 * all of it), kept for fidelity and to measure what sparsity saves. */
typedef enum { PMOE_MOE_SPARSE, PMOE_MOE_DENSE_MASKED } pmoe_moe_impl;
/* The noisy task's background: fragments of other items, or Gaussian noise. */
typedef enum { PMOE_BACKGROUND_ITEMS, PMOE_BACKGROUND_NOISE } pmoe_background;
typedef enum { PMOE_TRAIN_JOINT, PMOE_TRAIN_SEPARATE } pmoe_train_mode;
/* renorm: softmax over the l selected scores (the paper's eq. 1);
 * softmax_all: softmax over all n scores, keep the l selected, no renormalising;
 * ones: G = 1 (the expert phase of separate training). */
typedef enum { PMOE_GATE_RENORM, PMOE_GATE_SOFTMAX_ALL, PMOE_GATE_ONES } pmoe_gate_mode;
typedef enum { PMOE_OUTPUT_INIT_NORMAL, PMOE_OUTPUT_INIT_SIGN } pmoe_output_init;
/* How the ranks of an expert-parallel job talk (src/host/comm): auto (MPI
 * when started by mpirun and built with MPI, NCCL on top when the backend is
 * CUDA and NCCL is built; else one process), one process, MPI, NCCL. */
typedef enum { PMOE_COMM_AUTO, PMOE_COMM_SINGLE, PMOE_COMM_MPI, PMOE_COMM_NCCL } pmoe_comm_kind;
/* The learning rate over a phase (train/lr_schedule.h): constant, multiplied
 * by train.lr_gamma after each epoch of train.lr_steps, or a cosine from
 * train.lr down to train.lr_min; each after train.warmup_epochs of linear warmup. */
typedef enum { PMOE_SCHEDULE_CONSTANT, PMOE_SCHEDULE_STEP, PMOE_SCHEDULE_COSINE } pmoe_schedule;
/* What the folder source does with a file it cannot use: stop the run, or skip it. */
typedef enum { PMOE_BAD_IMAGE_STOP, PMOE_BAD_IMAGE_SKIP } pmoe_on_bad_image;
/* What a non-finite loss or gradient does: end the run, or skip that step's update. */
typedef enum { PMOE_NONFINITE_STOP, PMOE_NONFINITE_SKIP } pmoe_on_nonfinite;
/* train.precision: the inputs of convolutions and GEMMs as float32 (the
 * reference), rounded to TF32, or rounded to bfloat16; sums, weights,
 * optimizer state and the router stay float32 in every mode. */
typedef enum { PMOE_PRECISION_FP32, PMOE_PRECISION_TF32, PMOE_PRECISION_BF16 } pmoe_precision;

typedef struct pmoe_data_config {
    pmoe_data_source source;
    char path[1024]; /* folder holding the IDX files (CIFAR-10: cifar-10-batches-bin;
                              folder: the one holding train/ and test/) */
    int64_t train_size;
    int64_t test_size;
    uint64_t seed;
    int pos_class, neg_class; /* mosaic: the deciding item's class for y = +1 / -1 */
    int grid;                 /* mosaic: items per side (4 -> 16 items) */
    /* the theory's data model */
    int synthetic_patches;  /* n */
    int synthetic_dim;      /* d */
    int synthetic_clusters; /* number of class-irrelevant patterns */
    double delta_d;         /* <o1, o2> */
    double delta_r;         /* max |<o, q>| for irrelevant q */
    double noise;           /* standard deviation of the Gaussian noise per coordinate */
    /* idx: pad each image (centred, zeros) to image_size x image_size; 0 = as stored.
     * folder: crop each image to its centred square and resize that
     * (bilinear) to image_size x image_size; 0 = all images must be one size.
     * noisy: the side of the canvas (the item is pasted at half of it). */
    int image_size;
    int background; /* noisy: pmoe_background */
    /* Augmentation of training samples (data/augment.h), off by default: a
     * random crop of the image padded with crop_pad zeros on every side, and
     * a horizontal flip with probability 1/2. */
    int crop_pad;
    int flip;
    int on_bad_image; /* folder: pmoe_on_bad_image */
} pmoe_data_config;

typedef struct pmoe_model_config {
    pmoe_model_type type;
    int experts; /* k */
    int topl;    /* l */
    int hidden;  /* m, total over experts */
    int patch;   /* p; 0 = the data's natural patch size */
    pmoe_gate_mode gate;
    pmoe_output_init output_init;
    int train_output; /* train the output weights a (off in the paper) */
    double expert_init_std;
    double router_init_std; /* < 0: the paper's default for the mode */
    /* deep models (wrn, wrn_pmoe) */
    int width;         /* w: groups of 16w, 32w, 64w channels */
    int expert_kernel; /* wrn_pmoe: 1 or 3 (3 pads within the patch) */
    int moe_impl;      /* wrn_pmoe: pmoe_moe_impl */
} pmoe_model_config;

typedef struct pmoe_train_config {
    pmoe_train_mode mode;
    int epochs;
    int batch;
    double lr;
    int schedule;       /* pmoe_schedule, over each phase's own steps */
    int warmup_epochs;  /* linear warmup over the first epochs of a phase */
    char lr_steps[128]; /* step: "E1,E2,...": after epoch Ei the rate is multiplied by lr_gamma */
    double lr_gamma;
    double lr_min; /* cosine: the rate the cosine ends at */
    double momentum;
    double weight_decay;
    uint64_t seed;
    int threads;     /* 0 = what OpenMP chooses */
    char device[32]; /* auto | cpu | cuda | cuda:N */
    int cpu_kernels; /* pmoe_cpu_kernels (backend.h): 0 reference, 1 fast (oneDNN) */
    int precision;   /* pmoe_precision */
    /* separate training, router phase */
    int router_epochs;
    int router_batch;
    double router_lr;
    int64_t router_size;    /* N_r; 0 = the whole training set */
    int eval_every;         /* epochs between test evaluations (the last epoch always) */
    int64_t fault_nan_step; /* testing aid: poison this main-phase step's batch with NaN; 0 = off */
    int64_t checkpoint_every; /* steps between checkpoints; 0 = only when stopped by a signal */
    int keep;                 /* checkpoints kept in checkpoint_dir (the newest) */
    int keep_best;            /* also keep checkpoint_dir/best.safetensors: the best test
                                 accuracy so far, never pruned */
    char checkpoint_dir[1024];
    int on_nonfinite;   /* pmoe_on_nonfinite */
    int64_t sync_every; /* steps between the host's reads of losses and the guard; 0 = auto */
    int overlap_input; /* compose and upload batch i + 1 during step i (backends with a copy stream) */
    char profile_steps[32]; /* "A:B": bracket global steps A..B with the profiler API; "" = off */
    int profile_experts;    /* two-layer: one call and NVTX range per expert (slower) */
    int comm;               /* pmoe_comm_kind */
    int fault_rank;         /* testing aid: this rank's data open fails; -1 = off */
    int sync_bn;            /* deep models over ranks: batch norm over the global batch */
    int expert_parallel;    /* deep models: E, ranks per expert-parallel group; 0 = auto */
} pmoe_train_config;

/* pmoe bench: how long to warm up and how often to time a step. */
typedef struct pmoe_bench_config {
    int warmup;     /* untimed steps before timing */
    int repeats;    /* timed steps: the median, min and max are reported */
    int sgemm_size; /* the square SGEMM that measures the machine's peak; 0 = skip */
} pmoe_bench_config;

typedef struct pmoe_config {
    pmoe_data_config data;
    pmoe_model_config model;
    pmoe_train_config train;
    pmoe_bench_config bench;
} pmoe_config;

/* The defaults: joint pMoE (k = 8, l = 6, m = 40) on the mosaic with the
 * paper's two-layer training settings, sized to finish in about two minutes. */
void pmoe_config_default(pmoe_config *cfg);

/* Applies INI text; an unknown section or key, or a bad value, fails naming
 * the key and, when origin is given, the origin and line. */
pmoe_status pmoe_config_apply_ini(pmoe_config *cfg, const char *text, const char *origin,
                                  pmoe_error *err);
pmoe_status pmoe_config_load_file(pmoe_config *cfg, const char *path, pmoe_error *err);
/* Applies one "section.key=value" override. */
pmoe_status pmoe_config_set(pmoe_config *cfg, const char *assignment, pmoe_error *err);
/* Applies one value to "section.key". */
pmoe_status pmoe_config_set_value(pmoe_config *cfg, const char *key, const char *value,
                                  pmoe_error *err);

/* Checks the settings that need no data (k >= 1, m divisible by k, ...). */
pmoe_status pmoe_config_check(const pmoe_config *cfg, pmoe_error *err);

/* Writes the full config as INI text (every key, current values). Returns the
 * length that the whole text needs, like snprintf. */
int pmoe_config_to_ini(const pmoe_config *cfg, char *out, int out_size);

/* The NULL-terminated list of "section.key" names. */
const char *const *pmoe_config_keys(void);

const char *pmoe_data_source_name(pmoe_data_source s);
const char *pmoe_model_type_name(pmoe_model_type t);
const char *pmoe_train_mode_name(pmoe_train_mode m);
const char *pmoe_gate_mode_name(pmoe_gate_mode g);
/* 1 for wrn and wrn_pmoe. */
int pmoe_model_is_deep(pmoe_model_type t);

#ifdef __cplusplus
}
#endif
#endif
