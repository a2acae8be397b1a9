/* deep_parallel.c: the deep models' rank layout, batch norm domains and
 * gradient sums (deep_parallel.h). */
#include "model/deep_parallel.h"

#include <stdlib.h>

#include "model/moe_conv.h"

/* Gradients waiting to be summed over one communicator (all ranks, or the
 * replicas of this rank's experts). */
typedef struct deep_bucket {
    pmoe_comm *comm;
    float *bufs[DEEP_MAX_PARAMS];
    int64_t counts[DEEP_MAX_PARAMS];
    int n;
    int64_t floats;
} deep_bucket;

pmoe_status pmoe_model_expert_parallel(const pmoe_config *cfg, int ranks, int local_size, int *out,
                                       pmoe_error *err) {
    const int k = cfg->model.type == PMOE_MODEL_WRN_PMOE ? cfg->model.experts : 1;
    const int asked = cfg->train.expert_parallel;
    *out = 1;
    if (!pmoe_model_is_deep(cfg->model.type)) { /* the two-layer models split over all ranks */
        *out = ranks;
        return PMOE_OK;
    }
    if (asked > 0) {
        if (ranks % asked || k % asked)
            return pmoe_fail(err, PMOE_ERR_CONFIG,
                             "config: train.expert_parallel = %d must divide the %d ranks and "
                             "model.experts = %d%s",
                             asked, ranks, k,
                             cfg->model.type == PMOE_MODEL_WRN ? " (a WRN has no experts: 1)" : "");
        if (asked > 1 && cfg->model.moe_impl != PMOE_MOE_SPARSE)
            return pmoe_fail(err, PMOE_ERR_CONFIG,
                             "config: train.expert_parallel = %d needs model.moe_impl = sparse "
                             "(dense_masked runs every expert on every rank: use 1)",
                             asked);
        *out = asked;
        return PMOE_OK;
    }
    if (cfg->model.moe_impl != PMOE_MOE_SPARSE) return PMOE_OK;
    const int node = local_size < ranks ? local_size : ranks; /* a group stays on one node */
    for (int e = node; e > 1; e--)
        if (k % e == 0 && ranks % e == 0) {
            *out = e;
            break;
        }
    return PMOE_OK;
}

pmoe_status deep_parallel_open(pmoe_model *m, pmoe_comm *comm, const pmoe_config *cfg,
                               int64_t global_batch, int64_t *local_batch, pmoe_error *err) {
    /* train.comm = mpi or nccl named with one rank runs this path too (to test it) */
    if (comm && !comm->distributed) comm = NULL;
    const int R = comm ? comm->size : 1;
    m->ranks = R;
    m->rank = comm ? comm->rank : 0;
    m->comm = comm;
    m->expert_ranks = 1;
    m->max_batch = global_batch;
    *local_batch = global_batch;
    if (!comm) return PMOE_OK;
    if (global_batch % R)
        return pmoe_fail(err, PMOE_ERR_CONFIG,
                         "config: a batch of %lld samples does not split evenly over %d ranks; "
                         "choose train.batch divisible by the rank count",
                         (long long)global_batch, R);
    if (R > 1 && cfg->train.sync_bn &&
        (!m->be->ops->batchnorm_moments || !m->be->ops->batchnorm_backward_input))
        return pmoe_fail(err, PMOE_ERR_CONFIG,
                         "config: train.sync_bn: the %s backend has no cross-rank batch norm yet; "
                         "set train.sync_bn = false",
                         m->be->name);
    int E = 1;
    pmoe_status s = pmoe_model_expert_parallel(cfg, R, comm->local_size, &E, err);
    if (s) return s;
    *local_batch = global_batch / R;
    m->expert_ranks = E;
    const int k = cfg->model.type == PMOE_MODEL_WRN_PMOE ? cfg->model.experts : 1;
    m->local_experts = k / E;
    m->expert_base = (m->rank % E) * m->local_experts;
    /* collective, in the same order on every rank: all agree on E */
    if (E > 1) s = comm->split(comm, m->rank / E, m->rank, &m->expert_comm, err);
    if (!s && R / E > 1) s = comm->split(comm, m->rank % E, m->rank, &m->replica_comm, err);
    return s;
}

/* The domain of statistics taken over `over` (NULL or one rank: this rank's). */
static deep_bn_domain domain(pmoe_comm *over, int sync, float *scratch, float *host) {
    deep_bn_domain d = {1, NULL, NULL, scratch, host};
    if (over && over->size > 1) {
        if (sync) d.sync = over;
        else d.average = over;
    }
    return d;
}

pmoe_status deep_parallel_finish(pmoe_model *m, const pmoe_config *cfg, pmoe_error *err) {
    pmoe_deep_model *d = deep_of(m);
    int widest = 1;
    for (int i = 0; i < d->layer_count; i++) {
        const deep_layer *L = &d->layers[i];
        const int c = L->kind == LAYER_BN ? d->acts[L->in].channels : L->moe ? L->moe->channels : 0;
        if (c > widest) widest = c;
    }
    d->bn_channels = widest;
    d->bn_scratch_floats = (int64_t)(2 * m->ranks + 6) * widest;
    const size_t bytes = (size_t)d->bn_scratch_floats * sizeof(float);
    pmoe_status s = m->be->alloc(m->be, bytes, (void **)&d->bn_scratch, err);
    d->bn_host = s ? NULL : malloc(bytes);
    if (!s && !d->bn_host) s = pmoe_fail(err, PMOE_ERR_OOM, "cannot allocate the model");
    if (!s && m->comm) {
        d->buckets = calloc(2, sizeof *d->buckets);
        if (!d->buckets) s = pmoe_fail(err, PMOE_ERR_OOM, "cannot allocate the model");
        else {
            d->buckets[0].comm = m->comm;
            d->buckets[1].comm = m->replica_comm; /* NULL: one replica, nothing to sum */
        }
    }
    if (!s && m->comm) {
        const size_t logits = (size_t)(m->max_batch * m->classes) * sizeof(float);
        s = m->be->alloc(m->be, logits, (void **)&d->logits_all, err);
        if (!s) s = m->be->alloc(m->be, logits, (void **)&d->dlogits_all, err);
    }
    if (s) return s;
    const int sync = cfg->train.sync_bn;
    d->bn = domain(m->comm, sync, d->bn_scratch, d->bn_host);
    d->expert_bn =
        domain(m->expert_ranks > 1 ? m->replica_comm : m->comm, sync, d->bn_scratch, d->bn_host);
    return PMOE_OK;
}

void deep_parallel_close(pmoe_model *m) {
    pmoe_deep_model *d = deep_of(m);
    const size_t logits = (size_t)(m->max_batch * m->classes) * sizeof(float);
    m->be->release(m->be, d->bn_scratch, (size_t)d->bn_scratch_floats * sizeof(float));
    m->be->release(m->be, d->logits_all, logits);
    m->be->release(m->be, d->dlogits_all, logits);
    free(d->bn_host);
    free(d->buckets);
    d->buckets = NULL;
    pmoe_comm_close(m->replica_comm);
    pmoe_comm_close(m->expert_comm);
    d->bn_scratch = d->bn_host = d->logits_all = d->dlogits_all = NULL;
    m->replica_comm = m->expert_comm = NULL;
}

/* ---- the gradients' buckets ---- */

static void start(pmoe_model *m, deep_bucket *b) {
    if (!b->n) return;
    pmoe_timer_enter(m->timer, PMOE_T_ALL_REDUCE, (uint64_t)m->batch);
    b->comm->all_reduce_start(b->comm, b->bufs, b->counts, b->n);
    for (int i = 0; i < b->n; i++) pmoe_model_count_all_reduce(m, b->comm, b->counts[i]);
    b->n = 0;
    b->floats = 0;
}

/* The layer's parameters: from its first to the next layer's first. */
void deep_parallel_layer_done(pmoe_model *m, int layer) {
    pmoe_deep_model *d = deep_of(m);
    const int end = layer + 1 < d->layer_count ? d->layers[layer + 1].param : d->param_count;
    for (int i = d->layers[layer].param; i < end; i++) {
        pmoe_param *p = &m->params[i];
        deep_bucket *b = &d->buckets[p->sharded ? 1 : 0];
        if (!b->comm || !pmoe_model_updates(m, i)) continue;
        b->bufs[b->n] = p->grad.data;
        b->counts[b->n] = pmoe_tensor_numel(&p->grad);
        b->floats += b->counts[b->n++];
        if (b->floats >= DEEP_BUCKET_FLOATS || b->n == DEEP_MAX_PARAMS) start(m, b);
    }
}

void deep_parallel_reduce_gradients(pmoe_model *m) {
    pmoe_deep_model *d = deep_of(m);
    if (!m->comm) return;
    pmoe_timer_enter(m->timer, PMOE_T_ALL_REDUCE, (uint64_t)m->batch);
    for (int i = 0; i < 2; i++) {
        start(m, &d->buckets[i]);
        if (d->buckets[i].comm) d->buckets[i].comm->all_reduce_wait(d->buckets[i].comm);
    }
}

pmoe_status deep_parallel_reference_groups(pmoe_model *m, int groups, int expert_groups,
                                           pmoe_error *err) {
    pmoe_deep_model *d = deep_of(m);
    if (m->comm || groups < 1 || expert_groups < 1 || groups > DEEP_BN_MAX_GROUPS ||
        expert_groups > DEEP_BN_MAX_GROUPS || m->image.batch % groups ||
        m->image.batch % expert_groups)
        return pmoe_fail(err, PMOE_ERR_CONFIG,
                         "batch norm groups %d / %d: one process, at most %d, dividing the "
                         "batch of %lld",
                         groups, expert_groups, DEEP_BN_MAX_GROUPS, (long long)m->image.batch);
    d->bn.groups = groups;
    d->expert_bn.groups = expert_groups;
    return PMOE_OK;
}
