/* backend.h: the table of operations that model and training code run on.
 *
 * The model never touches memory or loops over data itself: it allocates
 * through a backend and calls the ops below, so the CPU backend (cpu_*.c) and
 * a CUDA backend implement the same table and the model code is written once.
 * Pointers passed to ops are backend memory. Ops are asynchronous by contract
 * (they return nothing; a backend records the first failure and reports it at
 * synchronize()), which is what a CUDA stream needs and costs the CPU nothing.
 *
 * Layouts (row-major; shapes as in the spec):
 *   images    B x C x H x W
 *   patches   B x n x d          n = (H/p)(W/p), d = C p p, flattened (c, y, x)
 *   scores    B x n x k          router s's score of patch j
 *   selected  B x k x l (int32)  top-l patch indices, best first, ties to the lower index
 *   gate      B x k x l          gate value of each selected patch
 *   expert_in k x (B l) x d      row b*l + t of expert s = patch selected[b, s, t]
 *   hidden    k x (B l) x h      ReLU(expert_in W_s^T), h = m / k
 *   logits    B x c */
#ifndef PMOE_BACKEND_H
#define PMOE_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "core/tensor.h"
#include "pmoe/config.h"
#include "pmoe/status.h"

typedef struct pmoe_backend pmoe_backend;

typedef struct pmoe_patch_shape {
    int64_t batch;
    int channels, height, width, patch;
} pmoe_patch_shape;

static inline int pmoe_patch_count(const pmoe_patch_shape *s) {
    return (s->height / s->patch) * (s->width / s->patch);
}
static inline int pmoe_patch_dim(const pmoe_patch_shape *s) {
    return s->channels * s->patch * s->patch;
}

typedef struct pmoe_route_shape {
    int64_t batch;
    int patches; /* n */
    int dim;     /* d */
    int experts; /* k */
    int topl;    /* l */
    pmoe_gate_mode gate;
} pmoe_route_shape;

typedef struct pmoe_combine_shape {
    int64_t batch;
    int experts;   /* k */
    int topl;      /* l: the 1/l of eq. 1 and the rows per sample */
    int hidden;    /* h, per expert */
    int classes;   /* c (1 for the binary logistic output) */
} pmoe_combine_shape;

typedef enum { PMOE_LOSS_LOGISTIC, PMOE_LOSS_SOFTMAX_CE } pmoe_loss_kind;

typedef struct pmoe_ops {
    /* C[b] = alpha * op(A[b]) op(B[b]) + beta * C[b] for b < batch, row-major,
     * op(X) = X or X^T; strides in elements between consecutive matrices. */
    void (*gemm)(pmoe_backend *be, int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                 float alpha, const float *a, int64_t lda, int64_t stride_a, const float *b,
                 int64_t ldb, int64_t stride_b, float beta, float *c, int64_t ldc,
                 int64_t stride_c, int64_t batch);

    /* images -> patches, and the adjoint (dpatches -> dimages, overwriting). */
    void (*patch_extract_forward)(pmoe_backend *be, const pmoe_patch_shape *s, const float *images,
                                  float *patches);
    void (*patch_extract_backward)(pmoe_backend *be, const pmoe_patch_shape *s,
                                   const float *dpatches, float *dimages);

    /* Scores every patch against every router (router_w is k x d), picks the
     * top-l per (sample, expert) and computes the gate values. */
    void (*gate_topl_forward)(pmoe_backend *be, const pmoe_route_shape *s, const float *patches,
                              const float *router_w, float *scores, int32_t *selected,
                              float *gate);
    /* From dgate (B x k x l): dscores (B x n x k, a workspace the op fills),
     * drouter_w (k x d, overwritten) and, when dpatches is not NULL, adds the
     * router's share of the patch gradient into dpatches. */
    void (*gate_topl_backward)(pmoe_backend *be, const pmoe_route_shape *s, const float *patches,
                               const float *router_w, const float *scores,
                               const int32_t *selected, const float *gate, const float *dgate,
                               float *dscores, float *drouter_w, float *dpatches);

    /* patches -> expert_in, and the adjoint: dpatches (overwritten) sums the
     * rows of dexpert_in that came from each patch, in expert-then-slot order. */
    void (*dispatch_gather)(pmoe_backend *be, const pmoe_route_shape *s, const float *patches,
                            const int32_t *selected, float *expert_in);
    void (*dispatch_gather_backward)(pmoe_backend *be, const pmoe_route_shape *s,
                                     const float *dexpert_in, const int32_t *selected,
                                     float *dpatches);

    /* hidden[s] = ReLU(expert_in[s] W_s^T) for each of k experts with `rows`
     * rows, W (k x h x d). Backward overwrites dexpert_w, and dexpert_in when
     * not NULL; dhidden is consumed as scratch (masked by ReLU in place). */
    void (*expert_forward)(pmoe_backend *be, int experts, int64_t rows, int dim, int hidden,
                           const float *expert_in, const float *expert_w, float *hidden_out);
    void (*expert_backward)(pmoe_backend *be, int experts, int64_t rows, int dim, int hidden,
                            const float *expert_in, const float *expert_w, const float *hidden_out,
                            float *dhidden, float *dexpert_w, float *dexpert_in);

    /* Optional (NULL where a backend lacks them): dispatch_gather and
     * expert_forward / expert_backward in one op each, reading every
     * expert's rows straight from patches through selected, so expert_in is
     * never written (the model then does not allocate it). Results are
     * those of the pair each replaces, to rounding (a sum may run in another
     * fixed order); the backward gives dexpert_w only (the patches are input
     * data and need no gradient). */
    void (*expert_forward_gathered)(pmoe_backend *be, const pmoe_route_shape *s, int hidden,
                                    const float *patches, const int32_t *selected,
                                    const float *expert_w, float *hidden_out);
    void (*expert_backward_gathered)(pmoe_backend *be, const pmoe_route_shape *s, int hidden,
                                     const float *patches, const int32_t *selected,
                                     const float *expert_w, const float *hidden_out,
                                     float *dhidden, float *dexpert_w);

    /* logits[b, c] = sum_s sum_r out_w[s, r, c] / l * sum_t gate[b, s, t] *
     * hidden[s, b l + t, r]; gate may be NULL for G = 1. Backward overwrites
     * dhidden, dgate (when not NULL) and dout_w (when not NULL). */
    void (*combine_forward)(pmoe_backend *be, const pmoe_combine_shape *s, const float *hidden,
                            const float *gate, const float *out_w, float *logits);
    void (*combine_backward)(pmoe_backend *be, const pmoe_combine_shape *s, const float *dlogits,
                             const float *hidden, const float *gate, const float *out_w,
                             float *dhidden, float *dgate, float *dout_w);

    /* Mean loss over the batch. Writes dlogits (when not NULL) and
     * stats[0] = summed loss, stats[1] = number of correct predictions.
     * Binary: label 1 is y = +1, 0 is y = -1, prediction sign(f). */
    void (*loss_forward_backward)(pmoe_backend *be, pmoe_loss_kind kind, int64_t batch,
                                  int classes, const float *logits, const int32_t *labels,
                                  float *dlogits, float *stats);

    /* The separate-training router loss, l_r = -sum_b w_b sum_j
     * (scores[b, j, 2 q_b] - scores[b, j, 2 q_b + 1]), with sample weight w_b
     * (the sign y_b over the pair's sample count) and router pair q_b.
     * Writes dscores (B x n x k) and stats[0] = l_r. */
    void (*router_linear_loss)(pmoe_backend *be, int64_t batch, int patches, int experts,
                               const float *scores, const int32_t *pair, const float *weight,
                               float *dscores, float *stats);

    /* v = momentum v + (grad + weight_decay param); param -= lr v
     * (velocity may be NULL when momentum is 0). */
    void (*sgd_update)(pmoe_backend *be, int64_t count, float *param, const float *grad,
                       float *velocity, float lr, float momentum, float weight_decay);
} pmoe_ops;

struct pmoe_backend {
    const char *name;       /* "cpu", "cuda:0" */
    const pmoe_ops *ops;
    pmoe_mem_stats mem;     /* this backend's memory */
    void *impl;
    pmoe_status (*alloc)(pmoe_backend *be, size_t bytes, void **out, pmoe_error *err);
    void (*release)(pmoe_backend *be, void *ptr, size_t bytes);
    pmoe_status (*copy_in)(pmoe_backend *be, void *dst, const void *host_src, size_t bytes,
                           pmoe_error *err);
    pmoe_status (*copy_out)(pmoe_backend *be, void *host_dst, const void *src, size_t bytes,
                            pmoe_error *err);
    void (*fill)(pmoe_backend *be, float *dst, float value, int64_t count);
    pmoe_status (*synchronize)(pmoe_backend *be, pmoe_error *err);
    void (*destroy)(pmoe_backend *be);
    int asynchronous;  /* ops return before their work is done (CUDA): timers must wait */
    /* Optional (NULL when absent): start (1) or stop (0) the device profiler's
     * capture, for `nsys --capture-range=cudaProfilerApi`. */
    void (*profiler)(pmoe_backend *be, int start);
};

/* The CPU backend. threads <= 0 leaves OpenMP's and OpenBLAS's choice. */
pmoe_status pmoe_cpu_backend_create(int threads, pmoe_backend **out, pmoe_error *err);

/* Picks a backend for train.device ("auto", "cpu", "cuda", "cuda:N"). */
pmoe_status pmoe_backend_create(const char *device, int threads, pmoe_backend **out,
                                pmoe_error *err);
void pmoe_backend_destroy(pmoe_backend *be);

/* Allocates a tensor of the given shape on be (contents undefined). */
pmoe_status pmoe_tensor_alloc(pmoe_backend *be, pmoe_tensor *t, int ndim, const int64_t *shape,
                              pmoe_error *err);
void pmoe_tensor_release(pmoe_backend *be, pmoe_tensor *t);

#endif
