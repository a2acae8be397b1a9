/* deep_parallel.h: WRN and WRN-pMoE over R ranks (docs/expert-parallelism.md).
 *
 * Data parallel: every rank takes B / R samples of each global batch (the
 * training loop composes them, model.h), runs the whole network on them,
 * and the loss is the one-process loss on the gathered logits
 * (pmoe_model_sharded_loss). After the backward, every replicated
 * parameter's gradient is summed over all ranks (comm.h's all-reduce: in
 * rank order, in double, rounded once), parameter by parameter in list
 * order; the pMoE layer's sharded expert tensors over replica_comm.
 *
 * Expert parallel (WRN-pMoE, train.expert_parallel = E > 1): the ranks form
 * R / E groups of E consecutive ranks; member j of a group owns experts
 * j k/E .. (j + 1) k/E - 1, and the layer exchanges within the group
 * (moe_conv.h). E = 1 keeps every expert on every rank.
 *
 * Batch norm (deep_batchnorm.h): per-rank statistics by default, the
 * running ones averaged over the ranks every step; train.sync_bn takes them
 * over the global batch. The experts' statistics are over the rows their
 * owner holds (a group's samples), synced or averaged over the replicas. */
#ifndef PMOE_MODEL_DEEP_PARALLEL_H
#define PMOE_MODEL_DEEP_PARALLEL_H

#include "model/deep_layers.h"

/* Before the layers are built: the rank layout from comm (NULL or not
 * distributed: one process) and cfg, the groups' communicators, and this
 * rank's share of the global batch in *local_batch. Config errors for a
 * layout that does not fit. */
pmoe_status deep_parallel_open(pmoe_model *m, pmoe_comm *comm, const pmoe_config *cfg,
                               int64_t global_batch, int64_t *local_batch, pmoe_error *err);

/* After the layers: the batch norms' domains and scratch, the gathered
 * logits' buffers. */
pmoe_status deep_parallel_finish(pmoe_model *m, const pmoe_config *cfg, pmoe_error *err);

/* Frees what the two above made (the groups' communicators included). */
void deep_parallel_close(pmoe_model *m);

/* The gradients' all-reduce, in buckets overlapping the backward pass:
 * deep_backward calls layer_done after each layer's backward (walking back
 * to front), which adds the layer's gradients to the bucket of their
 * communicator (all ranks, or the replicas for sharded experts) and starts
 * it (comm.h's all_reduce_start) once it holds DEEP_BUCKET_FLOATS;
 * reduce_gradients starts what is left and waits for all. Every rank walks
 * the same layers: the same buckets in the same order. On mpi a start is a
 * blocking sum, so the values are those of one all_reduce_sum per tensor. */
enum { DEEP_BUCKET_FLOATS = 1 << 20 }; /* 4 MiB of fp32 */
void deep_parallel_layer_done(pmoe_model *m, int layer);
void deep_parallel_reduce_gradients(pmoe_model *m);

/* One process only: batch norm statistics per group of batch / groups
 * samples in the dense layers and of rows / expert_groups in the experts,
 * the running statistics averaged over the groups: what R ranks with E per
 * group compute with per-rank statistics (groups = R, expert_groups = R /
 * E). The tests' reference for per-rank batch norm. */
pmoe_status deep_parallel_reference_groups(pmoe_model *m, int groups, int expert_groups,
                                           pmoe_error *err);

#endif
