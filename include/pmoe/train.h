/* train.h: training a model from a config, with progress callbacks.
 *
 * pmoe_train() owns the whole run: it opens the data, builds the backend and
 * the model, runs the router phase (separate training) and the main phase,
 * evaluates on the test set, and reports through callbacks. It prints
 * nothing itself; the CLI's reporter turns the callbacks into a progress bar
 * and a JSON log. */
#ifndef PMOE_TRAIN_H
#define PMOE_TRAIN_H

#include <signal.h>
#include <stdint.h>

#include "pmoe/config.h"
#include "pmoe/progress.h"
#include "pmoe/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define PMOE_MAX_REPORTED_EXPERTS 64
#define PMOE_MAX_PHASES 24

/* The timed phases of a step, in order: "data", "patch_extract", "gate_topl",
 * ... (pmoe_phase_count() of them; the first pmoe_step_phase_count() make up
 * a training step, the rest are "checkpoint" and "eval"). */
int pmoe_phase_count(void);
int pmoe_step_phase_count(void);
const char *pmoe_phase_name(int phase);

typedef enum { PMOE_PHASE_ROUTER, PMOE_PHASE_MAIN } pmoe_phase;

typedef struct pmoe_run_info {
    char data[160];          /* what data the run uses, in words */
    pmoe_data_source source; /* the source chosen (AUTO resolved) */
    char backend[96];        /* e.g. "cpu", "cuda:0 (NVIDIA H200)" */
    char backend_why[256];   /* why auto chose it when it fell back to the CPU
                                 ("train.device = auto found no GPU: ..."), else "" */
    char model[16];
    int64_t params;
    int64_t train_size, test_size;
    int patches, patch_dim, patch, classes, experts, topl;
    int64_t steps_per_epoch;
    int epochs, router_epochs; /* router_epochs = 0 without a router phase */
    /* Expert parallelism: this process is rank `rank` of `ranks` (0 of 1
     * alone), talking through `comm` ("single", "mpi", "nccl"); it owns
     * experts [rank * k / ranks, (rank + 1) * k / ranks). Callbacks run on
     * rank 0 only. */
    int rank, ranks;
    char comm[16];
    /* The deep models: the experts split over groups of expert_ranks ranks
     * (1: every rank holds all k), batch norm over the global batch
     * (sync_bn) or each rank's. 0 for the two-layer models. */
    int expert_ranks, sync_bn;
} pmoe_run_info;

typedef struct pmoe_step_report {
    pmoe_phase phase;
    int epoch, epochs;            /* 1-based */
    int64_t step;                 /* global, 1-based, per phase */
    int64_t batch_index, batches; /* within the epoch, 1-based */
    double loss;                  /* this batch's mean loss */
    int64_t samples;              /* seen in this phase so far */
    double elapsed;               /* seconds since the phase began */
} pmoe_step_report;

/* Where the experts' picks fell over the test set. Every expert takes l
 * patches of every sample, so each row of by_position sums to samples * l. */
typedef struct pmoe_expert_load {
    int experts, positions, classes; /* 0 experts: not measured */
    const int64_t *by_position;      /* experts x positions */
    const int64_t *by_class;         /* experts x classes: what the picked patches show
                                        (mosaic: the item's class; synthetic: 0 = o2,
                                        1 = o1, 2 + c = cluster c), or else the sample's
                                        class (binary: 0 is y = -1, 1 is y = +1) */
    int64_t samples;
    int grid_rows, grid_cols; /* the positions as the input's patch grid (rows x cols) */
} pmoe_expert_load;

typedef struct pmoe_epoch_report {
    pmoe_phase phase;
    int epoch, epochs;
    int64_t step;
    double train_loss;    /* mean over the epoch's samples */
    double lr;            /* the learning rate of the epoch's first step (train.schedule) */
    double train_acc;     /* main phase; -1 in the router phase */
    double test_acc;      /* -1 when not evaluated this epoch */
    double router_recall; /* -1 when the task has no deciding patch or no router */
    int experts_reported;
    double expert_recall[PMOE_MAX_REPORTED_EXPERTS];
    pmoe_expert_load load;                 /* valid during the callback, when evaluated */
    double phase_seconds[PMOE_MAX_PHASES]; /* this epoch, by pmoe_phase_name() */
    double step_seconds;                   /* this epoch's steps, measured around each whole step */
    double seconds;                        /* this epoch, evaluation included */
    double elapsed;                        /* since the run began */
    int64_t exchange_bytes; /* expert parallelism: bytes this rank sent to other ranks this
                              epoch (exchanges and reductions); 0 alone */
    int64_t skipped_steps;  /* since the run began: steps whose update train.on_nonfinite =
                              skip dropped */
} pmoe_epoch_report;

typedef struct pmoe_train_callbacks {
    void *user;
    void (*on_start)(void *user, const pmoe_run_info *info);
    void (*on_step)(void *user, const pmoe_step_report *r);
    /* A failure (the log could not be written) stops the run with it. */
    pmoe_status (*on_epoch)(void *user, const pmoe_epoch_report *r, pmoe_error *err);
} pmoe_train_callbacks;

typedef struct pmoe_train_options {
    const char *resume;                /* a checkpoint file or folder; NULL: a fresh run */
    const volatile sig_atomic_t *stop; /* non-zero: finish the step, checkpoint, return
                                          PMOE_ERR_INTERRUPTED */
    int per_class;                     /* the final evaluation fills result->per_class */
} pmoe_train_options;

/* Per-class figures of one evaluation over the test set (asked for with
 * pmoe_eval_options.per_class or pmoe_train_options.per_class): the
 * confusion matrix counts[t * classes + p], the test samples of true class
 * t predicted as p, by the rule accuracy counts by (the largest logit, the
 * first of equal ones; a binary model's sign(f)). A class's accuracy is its
 * row's diagonal share. classes = 0: not measured. Free with
 * pmoe_class_figures_free. */
typedef struct pmoe_class_figures {
    int classes; /* the model's classes; 2 for a binary model (0: y = -1, 1: y = +1) */
    int binary;
    int64_t *counts; /* classes x classes, rows the true class */
    char **names;    /* the data's class names (the folder source's folders), or NULL */
} pmoe_class_figures;

void pmoe_class_figures_free(pmoe_class_figures *figures);

typedef struct pmoe_train_result {
    pmoe_run_info info;
    char last_checkpoint[1024]; /* "" when none was written */
    int64_t skipped_steps;      /* train.on_nonfinite = skip */
    double test_acc;
    double train_loss;
    double train_acc;
    double router_recall; /* -1 when not applicable */
    int64_t steps;        /* main-phase steps */
    int64_t router_steps;
    double seconds;
    int64_t peak_bytes;                    /* the backend's peak */
    double phase_seconds[PMOE_MAX_PHASES]; /* the whole run, by pmoe_phase_name() */
    double step_seconds;
    /* train.keep_best: best.safetensors ("" when none was written), and the
     * epoch and test accuracy it holds (the best of the run, resumes included;
     * best_epoch 0: none) */
    char best_checkpoint[1024];
    int best_epoch;
    double best_test_acc;
    pmoe_class_figures per_class; /* options->per_class: the final evaluation's; free it */
} pmoe_train_result;

/* Trains as cfg says; callbacks and options may be NULL. With
 * options->resume the parameters, optimizer state and position come from the
 * checkpoint (cfg should be the checkpoint's config, see
 * pmoe_checkpoint_load_config, with any overrides on top). */
pmoe_status pmoe_train(const pmoe_config *cfg, const pmoe_train_callbacks *callbacks,
                       const pmoe_train_options *options, pmoe_train_result *result,
                       pmoe_error *err);

/* The config saved in a checkpoint (a file, or a folder: its newest), with
 * train.checkpoint_dir set to the folder that holds that file: a resumed
 * run writes beside the checkpoint it resumed (a copy resumed elsewhere
 * never writes into its origin's folder), unless an override sets the key. */
pmoe_status pmoe_checkpoint_load_config(const char *path, pmoe_config *cfg, pmoe_error *err);

typedef struct pmoe_eval_result {
    pmoe_run_info info;
    char checkpoint[1024]; /* the file evaluated */
    double test_acc;
    double router_recall; /* -1 when not applicable */
    int experts_reported;
    double expert_recall[PMOE_MAX_REPORTED_EXPERTS];
    int64_t step;                 /* the global step the checkpoint was saved at */
    pmoe_class_figures per_class; /* options->per_class; free with pmoe_class_figures_free */
} pmoe_eval_result;

typedef struct pmoe_eval_options {
    int per_class;                 /* fill result->per_class */
    const pmoe_progress *progress; /* NULL, or told after each batch; units: test samples */
} pmoe_eval_options;

/* Test accuracy (and router recall) of the model saved at checkpoint, on the
 * data cfg describes; options may be NULL. */
pmoe_status pmoe_eval(const pmoe_config *cfg, const char *checkpoint,
                      const pmoe_eval_options *options, pmoe_eval_result *result, pmoe_error *err);

/* What a saved model's routers pick: the first `samples` test images with
 * their selections and gate values, and the per-expert counts by patch
 * position over the whole test set. Free with pmoe_routing_free. */
typedef struct pmoe_routing {
    pmoe_run_info info;
    int channels, height, width, patch; /* the image and the patch grid */
    int grid_rows, grid_cols;           /* n = grid_rows * grid_cols */
    int experts, topl, classes;
    int samples;
    float *images;        /* samples x C x H x W, as the model saw them */
    int32_t *labels;      /* samples */
    int32_t *decisive;    /* samples: the deciding patch, -1 when the task has none */
    int32_t *selected;    /* samples x k x l, best first */
    float *gate;          /* samples x k x l */
    int64_t *by_position; /* k x n: picks per position over the test set */
    int64_t test_size;
    double test_acc, router_recall;
} pmoe_routing;

/* progress: NULL, or told after each batch of the pass over the test set
 * (units: test samples). */
pmoe_status pmoe_route(const pmoe_config *cfg, const char *checkpoint, int samples,
                       const pmoe_progress *progress, pmoe_routing *out, pmoe_error *err);
void pmoe_routing_free(pmoe_routing *routing);

#ifdef __cplusplus
}
#endif
#endif
