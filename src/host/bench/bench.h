/* bench.h: `pmoe bench`: what a configuration costs, against its baseline.
 *
 * A bench run builds the configured pMoE and its single-expert baseline, and
 * times their steps on one real batch composed into each model once: after
 * bench.warmup untimed steps, each of bench.repeats steps is timed on its
 * own and the median, min and max are kept. The baselines:
 *   model.type = pmoe      the CNN of eq. 5 (model.type = cnn, the same data,
 *                          the same total hidden m);
 *   model.type = wrn_pmoe  the WRN it replaces (the same config with
 *                          model.type = wrn: group 3 a full residual block);
 *   model.type = wrn       the WRN itself, built and timed a second time on
 *                          a fresh backend: its ratio row is an A/A
 *                          comparison, 1 up to the timing noise, which is
 *                          what a WRN-pMoE ratio must be read against.
 * (model.type = cnn is refused: it is a baseline.) What is inside the timed
 * region:
 *   train step     forward + loss and backward + SGD update + synchronize
 *                  (this reads the loss back, 8 bytes); the update runs with
 *                  learning rate 0, so every step sees the initial weights
 *                  (bench_internal.h says why);
 *   inference step the two-layer models: forward + synchronize; the deep
 *                  ones: evaluation mode (batch norm on running statistics),
 *                  forward + loss without backward (which reads the loss back;
 *                  the loss's 4 c FLOPs stay out of the inference count).
 * Batch composition and its copy in are outside (done once); so are the
 * training loop's non-finite gradient check and its bookkeeping.
 * Alongside: the analytic FLOPs (model/flops.h), the memory (parameters,
 * activations, workspace on the backend; the bench's own host staging), and
 * the machine's peak measured by one large SGEMM.
 *
 * For WRN-pMoE the run also isolates the pMoE layer: it builds, each alone
 * on its own backend (model/wrn.h's pmoe_model_create_block), (1) the WRN layers it
 * replaces (group 3's second batch norm, ReLU and 3x3 convolution, the 1x1
 * shortcut and the residual add), (2) the sparse pMoE layer and (3) the
 * dense-masked one, on random inputs of the shapes they have in the models
 * (the map group 3's first convolution writes, C x H x W, and for the
 * shortcut the C/2 x 2H x 2W map it reads), and times forward + backward
 * (train) and the evaluation forward (infer) of each at the same batch.
 * Their FLOPs are the same rows as in the models' reports, so the time
 * ratio of the pMoE layer to what it replaces can be held against its FLOP
 * ratio without the rest of the network in the way.
 *
 * The models and the blocks are bench_targets (bench_internal.h, which
 * lists the files: one per purpose), sharing the timing, table, JSON and
 * sweeps; a model is asked what it is and holds through model.h's calls. */
#ifndef PMOE_BENCH_BENCH_H
#define PMOE_BENCH_BENCH_H

#include <stdint.h>
#include <stdio.h>

#include "core/phase_timer.h"
#include "model/flops.h"
#include "pmoe/config.h"
#include "pmoe/progress.h"
#include "pmoe/status.h"

typedef struct pmoe_timing {
    double median_ms, min_ms, max_ms;
} pmoe_timing;

typedef struct pmoe_bench_memory {
    int64_t parameter_bytes;   /* values, gradients, optimizer state */
    int64_t activation_bytes;  /* forward buffers for the batch */
    int64_t workspace_bytes;   /* the rest of the backend's peak: backward buffers and the
                                  ops' transient scratch */
    int64_t backward_bytes;    /* of which the backward buffers */
    int64_t device_peak_bytes; /* the backend's peak (on the CPU backend, host memory) */
    int64_t host_bytes;        /* the bench's host staging (one batch) */
    int64_t peak_bytes;        /* device_peak_bytes + host_bytes */
} pmoe_bench_memory;

typedef struct pmoe_bench_model {
    char model[16]; /* "pmoe", "cnn", "wrn_pmoe", "wrn" */
    char gate[16];
    char moe_impl[16]; /* wrn_pmoe: "sparse" or "dense_masked"; else "" */
    int width;         /* deep models: model.width; else 0 */
    int patches, dim, experts, topl, hidden, classes; /* n, d, k, l, m (total; deep: 0), c;
                                                         a WRN has n = k = l = 1, d = 0 */
    int learn_router, train_output; /* what the train step updates besides the experts */
    int64_t params;
    pmoe_flop_report flops;
    double train_flops[PMOE_FLOPS_KINDS]; /* per sample */
    double infer_flops[PMOE_FLOPS_KINDS]; /* per sample */
    pmoe_bench_memory mem;
    pmoe_timing train, infer;
    double first_loss, last_loss; /* before any update; after the last timed step */
    /* A second pass of `repeats` train steps with the phase timer on: the mean ms per step
     * of each phase (the timer's clock reads, and on an asynchronous backend its waits,
     * make this pass a little slower than the timed one). */
    double phase_ms[PMOE_T_COUNT];
} pmoe_bench_model;

/* One isolated block of the deep bench (see above). */
typedef struct pmoe_bench_block {
    char name[24];                        /* "wrn_block", "pmoe_sparse", "pmoe_dense_masked" */
    double train_flops[PMOE_FLOPS_KINDS]; /* forward + backward, per sample */
    double infer_flops[PMOE_FLOPS_KINDS]; /* the evaluation forward, per sample */
    pmoe_timing train, infer;             /* forward + backward; evaluation forward */
} pmoe_bench_block;

enum { PMOE_BENCH_BLOCK_WRN, PMOE_BENCH_BLOCK_SPARSE, PMOE_BENCH_BLOCK_DENSE, PMOE_BENCH_BLOCKS };

typedef struct pmoe_bench_result {
    char date[32]; /* UTC, ISO 8601 */
    char cpu[128]; /* the CPU's model name */
    int cores;     /* online CPUs */
    char backend[32];
    char blas[128];                 /* the BLAS library and its build */
    int threads;                    /* threads the run used */
    double load_before, load_after; /* the 1-minute load average around the run (< 0: unknown) */
    double others_cpu_share; /* the share of all cores other processes kept busy during the run
                                (< 0: unknown): other work makes threaded timings unreliable */
    char data[128];
    int channels, height, width, patch;      /* the input; patch: deep models, on the pMoE map */
    int deep;                                /* the models are deep (wrn_pmoe / wrn) */
    int map_channels, map_height, map_width; /* wrn_pmoe: the map the pMoE layer routes */
    int64_t batch;
    int warmup, repeats;
    char mode[16];                     /* train.mode; separate: the expert phase is timed */
    double lr, momentum, weight_decay; /* of the timed steps: lr is 0 (bench_internal.h) */
    int sgemm_size;
    double sgemm_gflops; /* < 0: not measured */
    pmoe_bench_model pmoe, baseline;
    int block_count; /* wrn_pmoe: PMOE_BENCH_BLOCKS; else 0 */
    pmoe_bench_block blocks[PMOE_BENCH_BLOCKS];
} pmoe_bench_result;

typedef struct pmoe_bench_options {
    /* When not NULL, a folder that receives what the PyTorch peer needs:
     * <model>.init.safetensors (the initial weights, as a checkpoint) and
     * <model>.batch.safetensors (images B x C x H x W, labels B as floats). */
    const char *peer_dir;
    /* When >= 0, the peak to use instead of measuring it (sweeps measure once). */
    double sgemm_gflops;
    /* When not NULL, told after every step (warm-up, timed and profiled)
     * of every target; the units are steps (pmoe_bench_steps). */
    const pmoe_progress *progress;
} pmoe_bench_options;

/* The steps (the units of options->progress) a pmoe_bench_run of cfg takes. */
int64_t pmoe_bench_steps(const pmoe_config *cfg);

/* Runs the bench for cfg (model.type pmoe, wrn_pmoe or wrn). */
pmoe_status pmoe_bench_run(const pmoe_config *cfg, const pmoe_bench_options *options,
                           pmoe_bench_result *out, pmoe_error *err);

/* GFLOP/s of one size^3 SGEMM on the device cfg names, with its threads
 * (best of three after a warm-up). */
pmoe_status pmoe_bench_peak_gflops(const pmoe_config *cfg, int size, double *gflops,
                                   pmoe_error *err);

/* The result as a table: a row per model and a ratio row (and for
 * WRN-pMoE the isolated blocks, with their ratios to the WRN block). */
void pmoe_bench_print_table(FILE *out, const pmoe_bench_result *r);

/* The result as one JSON object on one line (no newline). */
void pmoe_bench_write_json(FILE *out, const pmoe_bench_result *r);

/* Derived figures. */
double pmoe_bench_train_gflops(const pmoe_bench_result *r, const pmoe_bench_model *m);
double pmoe_bench_infer_gflops(const pmoe_bench_result *r, const pmoe_bench_model *m);

/* --sweep KEY=V1,V2,...: runs the bench once per value (cfg with KEY=value)
 * and writes dir/sweep-KEY.csv, .jsonl and .png (cost against the value);
 * a line per value and per file written goes to log, and the steps of all
 * the runs to progress, when not NULL. Before the first run it checks what
 * pmoe_bench_sweep_check does. */
pmoe_status pmoe_bench_sweep(const pmoe_config *cfg, const char *sweep, const char *dir, FILE *log,
                             const pmoe_progress *progress, pmoe_error *err);

/* What would refuse a sweep's results, without running it: the form of
 * the sweep and its values, the folder (created if missing), and each
 * output path (absent or a regular file, never a FIFO or device). So that
 * several sweeps fail before the first one's runs. */
pmoe_status pmoe_bench_sweep_check(const pmoe_config *cfg, const char *sweep, const char *dir,
                                   pmoe_error *err);

#endif
