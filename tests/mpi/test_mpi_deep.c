/* test_mpi_deep.c: WRN and WRN-pMoE over R ranks against one process.
 *
 *   mpirun -np R test_mpi_deep MODEL E SYNC     (MODEL wrn | wrn_pmoe, E =
 *                                                train.expert_parallel, SYNC 0 | 1)
 *
 * Every rank builds the model over the ranks and, beside it, the
 * one-process reference on the whole global batch (with per-rank batch norm
 * the reference takes its statistics per group of B / R samples, and the
 * experts' per group of B E / R: deep_parallel_reference_groups), then both
 * train the same STEPS steps (SGD with momentum) on the same global batches.
 * Checked:
 * - the loss of every step: within LOSS_BOUND relative of the reference's;
 * - every parameter and velocity after the steps (this rank's experts
 *   against their rows of the reference): max |difference| <= PARAM_BOUND x
 *   max |reference value| of the tensor (bit for bit at R = 1);
 * - every rank holds the same replicated tensors and running statistics,
 *   bit for bit (so evaluation, on running statistics, is the same on every
 *   rank), and evaluation logits match the reference's within LOSS_BOUND;
 * - a layout that does not fit (E = 3) is a one-line config error;
 * - the checkpoint the ranks write (rank 0 gathers the experts from its
 *   group) restores into one process and into every other layout that fits
 *   R (E' = 1, 2, 4), each tensor bit for bit what this rank holds.
 * Why the results may differ at all, and by how much: the ranks sum their
 * samples' gradients separately and the all-reduce adds the R partial sums
 * (in double, rounded once), where one process sums all B samples inside
 * each op; sync_bn combines per-rank moments (Chan's update) where one
 * process sums all values in double. Each is a few float roundings of a
 * gradient or statistic; over 3 steps they stay near 1e-7 relative
 * (printed: the worst share of the bound). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend/backend.h"
#include "comm/comm.h"
#include "rank_expect.h"
#include "model/deep_parallel.h"
#include "model/model.h"
#include "train/checkpoint.h"

enum { B = 8, SIDE = 16, CLASSES = 10, STEPS = 3 };
#define LOSS_BOUND 1e-5
#define PARAM_BOUND 1e-5

static int rank, failures, exact; /* exact: R = 1, where every bit must match */
static double worst_loss, worst_param;

static void configure(pmoe_config *cfg, const char *model, int E, int sync) {
    char sets[8][64];
    snprintf(sets[0], 64, "model.type=%s", model);
    snprintf(sets[1], 64, "train.expert_parallel=%d", E);
    snprintf(sets[2], 64, "train.sync_bn=%d", sync);
    snprintf(sets[3], 64, "model.width=1");
    snprintf(sets[4], 64, "model.experts=4");
    snprintf(sets[5], 64, "model.topl=2");
    snprintf(sets[6], 64, "train.momentum=0.9");
    snprintf(sets[7], 64, "train.seed=7");
    pmoe_config_default(cfg);
    for (int i = 0; i < 8; i++) {
        pmoe_error err;
        if (pmoe_config_set(cfg, sets[i], &err)) {
            fprintf(stderr, "test_mpi_deep: %s\n", err.message);
            exit(2);
        }
    }
}

/* Sample i of the global batch of step `step`: a smooth pattern plus a
 * sample-dependent ripple, so the routers see distinct patches. */
static void fill_sample(float *x, int step, int i) {
    for (int p = 0; p < SIDE * SIDE; p++)
        x[p] = (float)(0.5 * sin(0.37 * p + 1.3 * i + 0.7 * step) + 0.1 * ((p * 7 + i) % 5));
}

static int label_of(int step, int i) { return (3 * i + step) % CLASSES; }

static void load(pmoe_model *m, int step, int first, int count) {
    for (int i = 0; i < count; i++)
        fill_sample(m->images + (int64_t)i * SIDE * SIDE, step, first + i);
    for (int i = 0; i < B; i++) m->labels[i] = label_of(step, i);
}

static double step_loss(pmoe_model *m, int64_t batch, int64_t valid, int backward) {
    pmoe_error err;
    double loss = 0.0;
    int64_t correct = 0;
    pmoe_model_forward_valid(m, batch, valid);
    if (pmoe_model_loss(m, backward, &loss, &correct, &err)) {
        fprintf(stderr, "FAIL (rank %d): %s\n", rank, err.message);
        exit(1);
    }
    return loss;
}

/* Rows [first, first + count) of the reference's tensor, as this rank's. */
static void compare_tensor(const char *what, const pmoe_tensor *got, const pmoe_tensor *ref,
                           int64_t first_row) {
    const int64_t n = pmoe_tensor_numel(got), rows = ref->shape[0];
    const int64_t per_row = pmoe_tensor_numel(ref) / rows;
    const float *want = ref->data + first_row * per_row;
    double scale = 0.0, diff = 0.0;
    for (int64_t i = 0; i < pmoe_tensor_numel(ref); i++) scale = fmax(scale, fabs(ref->data[i]));
    for (int64_t i = 0; i < n; i++) diff = fmax(diff, fabs((double)got->data[i] - want[i]));
    const double share = scale > 0.0 ? diff / (PARAM_BOUND * scale) : (diff > 0.0 ? INFINITY : 0.0);
    if (share > worst_param) worst_param = share;
    EXPECT(share <= 1.0, "%s: max difference %.3g, bound %.3g (%.2f of it)", what, diff,
           PARAM_BOUND * scale, share);
    EXPECT(!exact || diff == 0.0, "%s: R = 1 differs from one process by %.3g", what, diff);
}

/* Every rank's copy of a replicated tensor equals rank 0's, bit for bit. */
static void same_everywhere(pmoe_comm *c, const char *what, const float *x, int64_t n) {
    float *zero = malloc((size_t)n * sizeof(float));
    memcpy(zero, x, (size_t)n * sizeof(float));
    c->host_broadcast(c, zero, (size_t)n * sizeof(float), 0);
    EXPECT(memcmp(zero, x, (size_t)n * sizeof(float)) == 0, "%s differs from rank 0's", what);
    free(zero);
}

/* Rows [first, first + rows of got) of want's tensor equal got's, bit for bit. */
static void same_rows(const char *what, const pmoe_tensor *got, int64_t got_first,
                      const pmoe_tensor *want, int64_t want_first, int64_t rows) {
    const int64_t per_row = pmoe_tensor_numel(got) / got->shape[0];
    EXPECT(memcmp(got->data + got_first * per_row, want->data + want_first * per_row,
                  (size_t)(rows * per_row) * sizeof(float)) == 0,
           "%s: restored rows differ", what);
}

/* Writes m's checkpoint (collective; rank 0 writes), restores it into one
 * process and into the sharded model of every E' that fits, and compares
 * each tensor with m's: the experts by global id. */
static void check_checkpoint(pmoe_comm *c, pmoe_backend *be, const pmoe_config *cfg,
                             pmoe_model *m) {
    int64_t id[1] = {c->rank == 0 ? (int64_t)getpid() : 0};
    c->sum_i64(c, id, 1);
    char path[96];
    snprintf(path, sizeof path, "/tmp/test_mpi_deep.%lld.safetensors", (long long)id[0]);
    pmoe_train_position pos;
    memset(&pos, 0, sizeof pos);
    pos.epoch = 1;
    pmoe_error err = {PMOE_OK, ""};
    if (pmoe_checkpoint_save(path, m, cfg, &pos, &err)) {
        EXPECT(0, "checkpoint save: %s", err.message);
        return;
    }
    pmoe_st_file file;
    if (pmoe_checkpoint_open(path, &file, &err)) {
        EXPECT(0, "checkpoint open: %s", err.message);
        return;
    }
    c->barrier(c); /* every rank has read it */
    if (c->rank == 0) remove(path);
    const int k = cfg->model.type == PMOE_MODEL_WRN_PMOE ? cfg->model.experts : 1;
    for (int E = 0; E <= c->size; E++) { /* E = 0: one process */
        if (E > 0 && (c->size % E || k % E)) continue;
        pmoe_config other = *cfg;
        other.train.expert_parallel = E > 0 ? E : 1;
        pmoe_model *o = NULL;
        pmoe_status s =
            E > 0 ? pmoe_model_create_sharded(be, c, &other, 1, SIDE, SIDE, 2, CLASSES, B, &o, &err)
                  : pmoe_model_create(be, &other, 1, SIDE, SIDE, 2, CLASSES, B, &o, &err);
        if (!s) s = pmoe_checkpoint_restore(&file, o, NULL, &err);
        EXPECT(!s, "restore at E' = %d: %s", E, err.message);
        for (int i = 0; !s && i < m->param_count; i++) {
            const pmoe_param *p = &m->params[i], *q = &o->params[i];
            const pmoe_tensor *tensors[2][2] = {{&p->value, &q->value},
                                                {&p->velocity, &q->velocity}};
            for (int t = 0; t < 2; t++) {
                const pmoe_tensor *mine = tensors[t][0], *theirs = tensors[t][1];
                if (!mine->data) continue;
                /* the global experts both hold: m's [a, a + n), o's [b, b + n') */
                const int64_t a = p->sharded ? m->expert_base : 0, n = mine->shape[0];
                const int64_t b2 = q->sharded ? o->expert_base : 0, n2 = theirs->shape[0];
                const int64_t lo = a > b2 ? a : b2, hi = a + n < b2 + n2 ? a + n : b2 + n2;
                char what[96];
                snprintf(what, sizeof what, "E' = %d: %s%s", E, p->name, t ? " (velocity)" : "");
                if (hi > lo) same_rows(what, theirs, lo - b2, mine, lo - a, hi - lo);
            }
        }
        pmoe_model_free(o);
    }
    pmoe_safetensors_free(&file);
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: mpirun -np R test_mpi_deep wrn|wrn_pmoe E SYNC\n");
        return 2;
    }
    const char *model = argv[1];
    const int E = atoi(argv[2]), sync = atoi(argv[3]);
    pmoe_error err = {PMOE_OK, ""};
    pmoe_comm *c = NULL;
    pmoe_backend *be = NULL;
    if (pmoe_comm_open(PMOE_COMM_MPI, &c, &err) || pmoe_cpu_backend_create(1, &be, &err)) {
        fprintf(stderr, "FAIL: %s\n", err.message);
        return 1;
    }
    rank = c->rank;
    const int R = c->size, b = B / R;
    exact = R == 1;
    pmoe_config cfg;
    configure(&cfg, model, E, sync);

    /* a layout that does not fit: one line, on every rank, before any collective */
    if (R > 1) {
        pmoe_config bad = cfg;
        bad.train.expert_parallel = 3;
        pmoe_model *none = NULL;
        pmoe_status s =
            pmoe_model_create_sharded(be, c, &bad, 1, SIDE, SIDE, 2, CLASSES, B, &none, &err);
        EXPECT(s == PMOE_ERR_CONFIG && strstr(err.message, "train.expert_parallel = 3") &&
                   !strchr(err.message, '\n'),
               "E = 3: status %d, '%s'", (int)s, err.message);
    }

    pmoe_model *m = NULL, *ref = NULL;
    if (pmoe_model_create_sharded(be, c, &cfg, 1, SIDE, SIDE, 2, CLASSES, B, &m, &err) ||
        pmoe_model_create(be, &cfg, 1, SIDE, SIDE, 2, CLASSES, B, &ref, &err)) {
        fprintf(stderr, "FAIL (rank %d): %s\n", rank, err.message);
        return 1;
    }
    const int used_E = m->expert_ranks;
    if (!sync && R > 1 && deep_parallel_reference_groups(ref, R, R / used_E, &err)) {
        fprintf(stderr, "FAIL: %s\n", err.message);
        return 1;
    }
    for (int step = 0; step < STEPS; step++) {
        load(ref, step, 0, B);
        load(m, step, rank * b, b);
        const double want = step_loss(ref, B, B, 1), got = step_loss(m, b, B, 1);
        const double share = fabs(got - want) / (LOSS_BOUND * fabs(want));
        if (share > worst_loss) worst_loss = share;
        EXPECT(share <= 1.0, "step %d: loss %.9g, one process %.9g", step, got, want);
        EXPECT(!exact || got == want, "R = 1, step %d: loss %.9g, one process %.9g", step, got,
               want);
        pmoe_model_sgd(ref, 0.05f, 0.9f, 0.0f);
        pmoe_model_sgd(m, 0.05f, 0.9f, 0.0f);
    }
    for (int i = 0; i < m->param_count; i++) {
        const pmoe_param *p = &m->params[i], *q = &ref->params[i];
        const int64_t first = p->sharded ? m->expert_base : 0;
        char what[96];
        snprintf(what, sizeof what, "%s", p->name);
        compare_tensor(what, &p->value, &q->value, first);
        if (p->velocity.data) {
            snprintf(what, sizeof what, "%s (velocity)", p->name);
            compare_tensor(what, &p->velocity, &q->velocity, first);
        }
        if (!p->sharded) same_everywhere(c, p->name, p->value.data, pmoe_tensor_numel(&p->value));
    }
    /* evaluation: running statistics, this rank's samples of a fresh batch */
    m->training = ref->training = 0;
    load(ref, STEPS, 0, B);
    load(m, STEPS, rank * b, b);
    const double want = step_loss(ref, B, B, 0), got = step_loss(m, b, B, 0);
    EXPECT(fabs(got - want) <= LOSS_BOUND * fabs(want), "evaluation loss %.9g, one process %.9g",
           got, want);
    if (R == 1) EXPECT(got == want, "R = 1: evaluation loss %.9g, one process %.9g", got, want);

    check_checkpoint(c, be, &cfg, m);

    /* a rank's error reaches every rank; here the sharded model must not hang */
    int total[1] = {-failures};
    c->agree_min(c, total, 1);
    double worst[2] = {worst_loss, worst_param};
    for (int i = 0; i < 2; i++) { /* the largest share over ranks: -min(-x) */
        int scaled[1] = {-(int)(worst[i] * 1e6)};
        c->agree_min(c, scaled, 1);
        worst[i] = -scaled[0] / 1e6;
    }
    if (rank == 0)
        printf("test_mpi_deep %s R = %d E = %d (chosen %d) sync_bn = %d: %s; worst share of the "
               "bound: losses %.3f (bound %.0e relative), parameters %.3f (bound %.0e of each "
               "tensor's largest value)\n",
               model, R, E, used_E, sync, total[0] == 0 ? "all passed" : "FAILED", worst[0],
               LOSS_BOUND, worst[1], PARAM_BOUND);
    pmoe_model_free(ref);
    pmoe_model_free(m);
    be->destroy(be);
    pmoe_comm_close(c);
    return total[0] == 0 ? 0 : 1;
}
