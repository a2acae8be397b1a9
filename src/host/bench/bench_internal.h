/* bench_internal.h: what the files of `pmoe bench` share (bench.h is the
 * public side). One file per purpose:
 *   bench.c         the run: data, the baseline, the models and blocks measured;
 *                   the figures derived from a result
 *   target.c        a bench_target's one constructor and its close
 *   target_model.c  a model of either family as a bench_target
 *   target_block.c  an isolated block of the deep bench (wrn.h) as a bench_target
 *   timing.c        warm-up, the timed steps, the profiled pass
 *   machine.c       the CPU, the load, other processes' share, the SGEMM peak
 *   table.c, json.c the result as a table, as JSON
 *   sweep.c, plot.c --sweep: a run per value, a CSV and a plot */
#ifndef PMOE_BENCH_BENCH_INTERNAL_H
#define PMOE_BENCH_BENCH_INTERNAL_H

#include "backend/backend.h"
#include "bench/bench.h"
#include "data/dataset.h"

/* The learning rate of the timed steps. The update's arithmetic runs in full,
 * but the weights keep their initial values, so every timed step computes on
 * the same numbers: with the configured rate, the one repeated batch is
 * learnt by heart within a few dozen steps (at batch 1 within a few), and
 * the vanishing gradients turn subnormal, which costs x86 up to 100 times
 * per operation: a cost of the benchmark, not of training. */
#define BENCH_LR 0.0f

/* Something timed: it builds itself on a fresh backend (so the backend's
 * peak is its alone), says what it costs, and runs one train or inference
 * step on the inputs it made at build time. Timing, table and JSON only see
 * targets. Each kind of target (a model, a block) keeps one static table of
 * its calls; bench_target_open is the one constructor. */
typedef struct bench_target bench_target;
typedef struct bench_target_calls {
    /* Fills out's shape, params, FLOPs and memory (timings are the caller's);
     * NULL for a block (measure_block counts its FLOPs). */
    void (*describe)(const bench_target *t, pmoe_bench_model *out);
    /* One training step; *loss is the batch's loss before the update. */
    pmoe_status (*train_step)(bench_target *t, double *loss, pmoe_error *err);
    /* Attaches a phase timer to the model's steps (NULL detaches it). */
    void (*set_timer)(bench_target *t, pmoe_phase_timer *timer);
    pmoe_status (*infer_step)(bench_target *t, pmoe_error *err);
    /* Writes dir/<model>.init.safetensors and dir/<model>.batch.safetensors;
     * NULL for a block. */
    pmoe_status (*export_peer)(const bench_target *t, const char *dir, pmoe_error *err);
    /* Frees what the state holds and the state itself (not the backend:
     * bench_target_close destroys it after). */
    void (*free_state)(void *state);
} bench_target_calls;
struct bench_target {
    const bench_target_calls *calls;
    void *state;
    pmoe_backend *be; /* the target's own */
};

/* target.c: t as a target of `calls`, with state_size bytes of zeroed state
 * and a fresh backend as cfg's train.device, train.threads and
 * train.cpu_kernels ask. bench_target_close frees what open made, also after
 * an open that failed. */
pmoe_status bench_target_open(bench_target *t, const bench_target_calls *calls, size_t state_size,
                              const pmoe_config *cfg, pmoe_error *err);
void bench_target_close(bench_target *t);

/* target_model.c: cfg's model (either family) on a fresh backend with the
 * first `batch` training samples of ds composed into it (wrapping around a
 * smaller set). *map gets the C, H, W of the map a pMoE layer routes (zeros
 * without one) once described. */
pmoe_status bench_model_open(const pmoe_config *cfg, const pmoe_dataset *ds, int patch,
                             int64_t batch, bench_target *t, pmoe_error *err);
void bench_model_map(const bench_target *t, int map[3]);

/* target_block.c: block `which` (PMOE_BENCH_BLOCK_*) on a C x H x W map in
 * patch x patch patches, and its FLOPs per sample (no loss, no update). */
pmoe_status bench_block_open(const pmoe_config *cfg, int which, int C, int H, int W, int patch,
                             int64_t batch, bench_target *t, pmoe_error *err);
void bench_block_flops(const bench_target *t, const pmoe_config *cfg, pmoe_bench_block *out);

/* How far a run has come, for options->progress: steps done of the run's
 * pmoe_bench_steps, and the target and pass under way. */
typedef struct bench_meter {
    const pmoe_progress *to; /* NULL: nobody is told */
    int64_t done, total;
    char what[64];
} bench_meter;

/* timing.c: warmup + repeats steps, each of the last `repeats` timed alone
 * (the loss of the first and the last into *first_loss / *last_loss when
 * not NULL), each counted on meter as `name`'s train or inference steps;
 * and a model's whole measurement: the peer export when asked, the train
 * and inference timings, its description, and a pass with the phase timer
 * on. */
pmoe_status bench_time_steps(bench_target *t, const char *name, int train, int warmup, int repeats,
                             bench_meter *meter, pmoe_timing *out, double *first_loss,
                             double *last_loss, pmoe_error *err);
pmoe_status bench_target_measure(bench_target *t, const pmoe_config *cfg,
                                 const pmoe_bench_options *options, bench_meter *meter,
                                 pmoe_bench_model *out, pmoe_error *err);

/* machine.c: CPU time of the whole machine and of this process, so a run
 * can tell how much of the machine other work took meanwhile (busy < 0
 * where /proc/stat cannot be read); the 1-minute load average (or -1); the
 * CPU's model name. */
typedef struct bench_cpu_clock {
    double wall, busy, self;
} bench_cpu_clock;
bench_cpu_clock bench_read_cpu_clock(void);
double bench_others_share(bench_cpu_clock a, bench_cpu_clock b, int cores);
double bench_load_average(void);
void bench_cpu_model_name(char *out, size_t size);

/* bench.c: the pMoE layer's share of a deep train step: its phases
 * (moe_conv.c enters them; every other layer is layers_forward /
 * layers_backward). */
double bench_moe_layer_phase_ms(const pmoe_bench_model *m);

#endif
