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

#include "core/phase_timer.h"
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
    int experts; /* k */
    int topl;    /* l: the 1/l of eq. 1 and the rows per sample */
    int hidden;  /* h, per expert */
    int classes; /* c (1 for the binary logistic output) */
} pmoe_combine_shape;

typedef enum { PMOE_LOSS_LOGISTIC, PMOE_LOSS_SOFTMAX_CE } pmoe_loss_kind;

/* The words of nonfinite_guard's state (int32 each). */
enum {
    PMOE_GUARD_FIRST = 0,     /* the first bad step's verdict; 0 while none */
    PMOE_GUARD_STEP_LOW = 1,  /* its step number, low 32 bits */
    PMOE_GUARD_STEP_HIGH = 2, /* and high 32 bits */
    PMOE_GUARD_SCAN = 3,      /* scratch of the step being scanned; 0 between steps */
    PMOE_GUARD_WORDS = 4
};

/* The deep models' layers (model/wrn.c). Feature maps are NCHW. */
typedef struct pmoe_conv_shape {
    int64_t batch;
    int in_channels, height, width; /* input C x H x W */
    int out_channels;               /* K */
    int kernel_h, kernel_w;         /* R x S */
    int stride, pad;                /* the same along both axes */
} pmoe_conv_shape;

static inline int pmoe_conv_out_height(const pmoe_conv_shape *s) {
    return (s->height + 2 * s->pad - s->kernel_h) / s->stride + 1;
}
static inline int pmoe_conv_out_width(const pmoe_conv_shape *s) {
    return (s->width + 2 * s->pad - s->kernel_w) / s->stride + 1;
}
/* Floats in x (B C H W), w (K C R S) and y (B K P Q). */
static inline int64_t pmoe_conv_x_count(const pmoe_conv_shape *s) {
    return s->batch * s->in_channels * s->height * s->width;
}
static inline int64_t pmoe_conv_w_count(const pmoe_conv_shape *s) {
    return (int64_t)s->out_channels * s->in_channels * s->kernel_h * s->kernel_w;
}
static inline int64_t pmoe_conv_y_count(const pmoe_conv_shape *s) {
    return s->batch * s->out_channels * (int64_t)pmoe_conv_out_height(s) * pmoe_conv_out_width(s);
}

/* Batch norm over x (batch x channels x spatial): per channel, statistics
 * over batch * spatial values. */
typedef struct pmoe_bn_shape {
    int64_t batch;
    int channels;
    int64_t spatial;
    float eps; /* added to the variance */
} pmoe_bn_shape;

/* The pMoE convolution layer's scatter (model/moe_conv.c): k experts, each
 * with B*l output rows of e = (C_out / k) p p values (expert_out is
 * k x (B l) x e); the layer's output patches are B x n x (k e), expert s
 * owning the block [s e, (s + 1) e) of each patch, which is its C_out / k
 * channels in the (c, y, x) order patch_extract uses. */
typedef struct pmoe_scatter_shape {
    int64_t batch;
    int patches;    /* n */
    int experts;    /* k */
    int topl;       /* l */
    int expert_dim; /* e */
} pmoe_scatter_shape;

/* The pMoE layer's experts as one op (model/moe_conv.c): k experts, each
 * batch norm (over its own rows) -> ReLU -> convolution (C -> e channels,
 * r x r, stride 1, zero padding (r - 1) / 2) on `rows` maps of h x w. */
typedef struct pmoe_experts_shape {
    int experts;       /* k */
    int64_t rows;      /* maps per expert */
    int channels;      /* C */
    int height, width; /* h, w */
    int out_channels;  /* e, per expert */
    int kernel;        /* r */
    float eps;
} pmoe_experts_shape;

/* Elements a row-major op(X) of rows x cols spans (X is stored cols x rows
 * when transposed) with leading dimension ld, over batch entries stride
 * apart: what a gemm op reads of A or B. */
static inline int64_t pmoe_gemm_span(int trans, int64_t rows, int64_t cols, int64_t ld,
                                     int64_t stride, int64_t batch) {
    if (rows <= 0 || cols <= 0 || batch <= 0) return 0;
    const int64_t stored_rows = trans ? cols : rows, stored_cols = trans ? rows : cols;
    return (batch - 1) * stride + (stored_rows - 1) * ld + stored_cols;
}

typedef struct pmoe_ops {
    /* C[b] = alpha * op(A[b]) op(B[b]) + beta * C[b] for b < batch, row-major,
     * op(X) = X or X^T; strides in elements between consecutive matrices. */
    void (*gemm)(pmoe_backend *be, int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                 float alpha, const float *a, int64_t lda, int64_t stride_a, const float *b,
                 int64_t ldb, int64_t stride_b, float beta, float *c, int64_t ldc, int64_t stride_c,
                 int64_t batch);
    /* The same product with float32 inputs whatever train.precision says:
     * the router's (its scores and their gradient stay float32, so that
     * rounding cannot flip a route). */
    void (*gemm_float32)(pmoe_backend *be, int trans_a, int trans_b, int64_t m, int64_t n,
                         int64_t k, float alpha, const float *a, int64_t lda, int64_t stride_a,
                         const float *b, int64_t ldb, int64_t stride_b, float beta, float *c,
                         int64_t ldc, int64_t stride_c, int64_t batch);

    /* images -> patches, and the adjoint (dpatches -> dimages, overwriting). */
    void (*patch_extract_forward)(pmoe_backend *be, const pmoe_patch_shape *s, const float *images,
                                  float *patches);
    void (*patch_extract_backward)(pmoe_backend *be, const pmoe_patch_shape *s,
                                   const float *dpatches, float *dimages);

    /* Scores every patch against every router (router_w is k x d), picks the
     * top-l per (sample, expert) and computes the gate values. */
    void (*gate_topl_forward)(pmoe_backend *be, const pmoe_route_shape *s, const float *patches,
                              const float *router_w, float *scores, int32_t *selected, float *gate);
    /* From dgate (B x k x l): dscores (B x n x k, a workspace the op fills),
     * drouter_w (k x d, overwritten; when NULL, left to the caller, who
     * folds it into expert_backward_gathered) and, when dpatches is not
     * NULL, adds the router's share of the patch gradient into dpatches. */
    void (*gate_topl_backward)(pmoe_backend *be, const pmoe_route_shape *s, const float *patches,
                               const float *router_w, const float *scores, const int32_t *selected,
                               const float *gate, const float *dgate, float *dscores,
                               float *drouter_w, float *dpatches);

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
     * fixed order, set by the shape alone: the CPU backward sums the batch's
     * two halves apart, so rows of zero gradient appended to a batch change
     * its bits unless left out); the backward gives dexpert_w only (the patches are input
     * data and need no gradient). When dscores is not NULL (B x n x k, zero
     * but at the picks: the renormalised gate's gradient) it also writes
     * drouter_w (k x d), the router's weight gradient, from the same rows
     * (each pick's score gradient is one more unit of its expert), so the
     * router's backward costs 2 k l d per sample, not a dense 2 n k d. */
    void (*expert_forward_gathered)(pmoe_backend *be, const pmoe_route_shape *s, int hidden,
                                    const float *patches, const int32_t *selected,
                                    const float *expert_w, float *hidden_out);
    void (*expert_backward_gathered)(pmoe_backend *be, const pmoe_route_shape *s, int hidden,
                                     const float *patches, const int32_t *selected,
                                     const float *expert_w, const float *hidden_out, float *dhidden,
                                     const float *dscores, float *dexpert_w, float *drouter_w);

    /* Optional (NULL where a backend lacks it): patch_extract_forward and
     * gate_topl_forward in one op, each sample's patches cut out, scored and
     * routed while they are in cache; the same outputs, the scores to
     * rounding. */
    void (*patch_extract_route)(pmoe_backend *be, const pmoe_patch_shape *ps,
                                const pmoe_route_shape *s, const float *images,
                                const float *router_w, float *patches, float *scores,
                                int32_t *selected, float *gate);

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
    void (*loss_forward_backward)(pmoe_backend *be, pmoe_loss_kind kind, int64_t batch, int classes,
                                  const float *logits, const int32_t *labels, float *dlogits,
                                  float *stats);

    /* The separate-training router loss, l_r = -sum_b w_b sum_j
     * (scores[b, j, 2 q_b] - scores[b, j, 2 q_b + 1]), with sample weight w_b
     * (the sign y_b over the pair's sample count) and router pair q_b.
     * Writes dscores (B x n x k) and stats[0] = l_r. */
    void (*router_linear_loss)(pmoe_backend *be, int64_t batch, int patches, int experts,
                               const float *scores, const int32_t *pair, const float *weight,
                               float *dscores, float *stats);

    /* v = momentum v + (grad + weight_decay param); param -= lr v
     * (velocity may be NULL when momentum is 0). When skip is not NULL
     * (an int32 of backend memory: a nonfinite_guard verdict) and *skip is
     * not 0, param and velocity are left untouched. */
    void (*sgd_update)(pmoe_backend *be, int64_t count, float *param, const float *grad,
                       float *velocity, float lr, float momentum, float weight_decay,
                       const int32_t *skip);

    /* The non-finite guard (train.on_nonfinite), decided in backend memory
     * so that the host reads nothing per step. For step `step` it scans
     * x[i][0..count[i]) for i < arrays (the loss, then the gradients about
     * to be applied; the lists are host memory, the arrays backend memory)
     * and writes *verdict (int32, backend memory): 0 when all are finite,
     * else 1 + the lowest i holding a NaN or Inf. guard is
     * PMOE_GUARD_WORDS int32 of backend memory, zeroed once per run: the
     * first bad step's verdict (PMOE_GUARD_FIRST, 0: none yet) and number
     * (PMOE_GUARD_STEP_LOW / _HIGH, the 64-bit step in two halves), and the
     * scan's scratch. With hold != 0, once a bad step is recorded every
     * later verdict repeats its verdict (on_nonfinite = stop: nothing is
     * applied after it); sgd_update's skip reads the verdict. */
    void (*nonfinite_guard)(pmoe_backend *be, int arrays, const float *const *x,
                            const int64_t *count, int64_t step, int hold, int32_t *guard,
                            int32_t *verdict);

    /* ---- Deep-model layers. Convention: every backward ADDS its input
     * gradient into dx (dx += ...; the caller zeroes it once), so a tensor
     * read by two layers (a residual block's input) collects both
     * gradients; parameter gradients (dw, dbias, dgamma, dbeta) are
     * OVERWRITTEN. A NULL gradient pointer is not computed. */

    /* y = conv(x, w) (+ bias[K] on every output position when bias is not
     * NULL); x is B x C x H x W, w K x C x R x S (zero padding). */
    void (*conv2d_forward)(pmoe_backend *be, const pmoe_conv_shape *s, const float *x,
                           const float *w, const float *bias, float *y);
    void (*conv2d_backward)(pmoe_backend *be, const pmoe_conv_shape *s, const float *x,
                            const float *w, const float *dy, float *dx, float *dw, float *dbias);

    /* Training mode: normalises with the batch statistics, writes save_mean
     * and save_invstd (1 / sqrt(var + eps), biased var) per channel, and
     * moves the running statistics: r = (1 - momentum) r + momentum stat,
     * with the unbiased variance (as PyTorch). */
    void (*batchnorm_forward_train)(pmoe_backend *be, const pmoe_bn_shape *s, const float *x,
                                    const float *gamma, const float *beta, float *y,
                                    float *save_mean, float *save_invstd, float *running_mean,
                                    float *running_var, float momentum);
    /* Evaluation mode: y = gamma (x - running_mean) / sqrt(running_var + eps) + beta. */
    void (*batchnorm_forward_eval)(pmoe_backend *be, const pmoe_bn_shape *s, const float *x,
                                   const float *gamma, const float *beta, const float *running_mean,
                                   const float *running_var, float *y);
    /* The training-mode backward (through the batch statistics). */
    void (*batchnorm_backward)(pmoe_backend *be, const pmoe_bn_shape *s, const float *x,
                               const float *gamma, const float *save_mean, const float *save_invstd,
                               const float *dy, float *dx, float *dgamma, float *dbeta);
    /* Batch norm over several ranks (train.sync_bn, model/deep_batchnorm.c):
     * the pieces that let the statistics and the backward's two sums be
     * combined across ranks. NULL in a backend without them (sync_bn is then
     * a config error).
     * moments: per channel the mean and M2 = sum (x - mean)^2 of this rank's
     * batch * spatial values (two passes in double), overwritten (C each).
     * backward_input: dx += gamma invstd (dy - sum_dy / count - xhat
     * sum_dy_xhat / count), xhat = (x - mean) invstd, with the sums (C each)
     * and count over every rank's values (what batchnorm_backward computes
     * when they are this rank's own). */
    void (*batchnorm_moments)(pmoe_backend *be, const pmoe_bn_shape *s, const float *x, float *mean,
                              float *m2);
    void (*batchnorm_backward_input)(pmoe_backend *be, const pmoe_bn_shape *s, const float *x,
                                     const float *gamma, const float *mean, const float *invstd,
                                     const float *dy, const float *sum_dy, const float *sum_dy_xhat,
                                     int64_t count, float *dx);

    /* y = max(x, 0) (y may be x); dx += dy where y > 0. */
    void (*relu_forward)(pmoe_backend *be, int64_t count, const float *x, float *y);
    void (*relu_backward)(pmoe_backend *be, int64_t count, const float *y, const float *dy,
                          float *dx);

    /* y = alpha x + beta y; with beta = 0, y's old contents are not read
     * (NaN there does not leak): a scaled copy. */
    void (*axpby)(pmoe_backend *be, int64_t count, float alpha, const float *x, float beta,
                  float *y);

    /* Global average pooling of x (rows x spatial) into y (rows); backward
     * dx[r, :] += dy[r] / spatial. */
    void (*avgpool_forward)(pmoe_backend *be, int64_t rows, int64_t spatial, const float *x,
                            float *y);
    void (*avgpool_backward)(pmoe_backend *be, int64_t rows, int64_t spatial, const float *dy,
                             float *dx);

    /* y[b, c, i] += bias[c] for y of batch x channels x spatial (a fully
     * connected layer's bias: spatial 1); backward dbias[c] = sum of dy[:, c, :]. */
    void (*channel_bias_forward)(pmoe_backend *be, int64_t batch, int channels, int64_t spatial,
                                 const float *bias, float *y);
    void (*channel_bias_backward)(pmoe_backend *be, int64_t batch, int channels, int64_t spatial,
                                  const float *dy, float *dbias);

    /* The pMoE layer's combine: out_patches (B x n x k e, overwritten) is zero
     * except out_patches[b, selected[b, s, t], s e + i] = gate[b, s, t]
     * expert_out[s, b l + t, i] (gate NULL: 1). The l picks of one (b, s) are
     * distinct, so every output value has one writer. Backward overwrites
     * dexpert_out = gate dout at the same places and, when dgate is not
     * NULL, dgate[b, s, t] = sum_i dout[b, selected, s e + i] expert_out[s, b l + t, i]. */
    void (*moe_scatter_forward)(pmoe_backend *be, const pmoe_scatter_shape *s,
                                const float *expert_out, const int32_t *selected, const float *gate,
                                float *out_patches);
    void (*moe_scatter_backward)(pmoe_backend *be, const pmoe_scatter_shape *s,
                                 const float *dout_patches, const float *expert_out,
                                 const int32_t *selected, const float *gate, float *dexpert_out,
                                 float *dgate);

    /* The dense-masked form's masks: weights (k x B x n, overwritten) is zero
     * except weights[s, b, selected[b, s, t]] = gate[b, s, t] (gate NULL: 1).
     * Backward: dgate[b, s, t] = dweights[s, b, selected[b, s, t]] (overwritten). */
    void (*moe_position_weights)(pmoe_backend *be, const pmoe_route_shape *s,
                                 const int32_t *selected, const float *gate, float *weights);
    void (*moe_position_weights_backward)(pmoe_backend *be, const pmoe_route_shape *s,
                                          const int32_t *selected, const float *dweights,
                                          float *dgate);
    /* y = x scaled per patch: y[b, c, py, px] = weight[b, j] x[b, c, py, px] for
     * the p x p patch j (row-major over the (H/p) x (W/p) grid) holding (py, px);
     * x, y are s->batch x C x H x W. Backward: dx += weight dy (dx may be NULL),
     * dweight[b, j] = sum over patch j of dy x (overwritten; may be NULL). */
    void (*patch_scale_forward)(pmoe_backend *be, const pmoe_patch_shape *s, const float *weight,
                                const float *x, float *y);
    void (*patch_scale_backward)(pmoe_backend *be, const pmoe_patch_shape *s, const float *weight,
                                 const float *x, const float *dy, float *dx, float *dweight);

    /* Optional (NULL where a backend lacks it; the model then runs the
     * experts one by one through the ops above): all k experts in one
     * grouped computation. in is k x rows x C x h x w; bn_* are k x C
     * (running statistics moved in training as batchnorm_forward_train;
     * save_mean / save_invstd written); conv_w is k x e x C x r x r; out is
     * k x rows x e x h x w (overwritten). normed and activated (k rows C h w
     * each) receive the batch norm's output and its ReLU in a layout of the
     * op's choosing (their signs say which side of each kink the experts
     * are on); backward reads activated back, so the pair runs with the
     * same buffers, nothing in between writing them. Backward overwrites
     * din (k x rows x C x h x w: no zeros needed first), dgamma, dbeta
     * (k x C) and dconv_w; dnormed and dactivated are scratch of that size. */
    void (*moe_experts_forward)(pmoe_backend *be, const pmoe_experts_shape *s, int training,
                                const float *in, const float *bn_gamma, const float *bn_beta,
                                float *running_mean, float *running_var, float momentum,
                                const float *conv_w, float *save_mean, float *save_invstd,
                                float *normed, float *activated, float *out);
    void (*moe_experts_backward)(pmoe_backend *be, const pmoe_experts_shape *s, const float *in,
                                 const float *bn_gamma, const float *conv_w, const float *save_mean,
                                 const float *save_invstd, const float *normed,
                                 const float *activated, const float *dout, float *dnormed,
                                 float *dactivated, float *din, float *dgamma, float *dbeta,
                                 float *dconv_w);

    /* A block of channels from one map to another of the same batch and
     * spatial size: dst[b, dst_offset + c, i] = src[b, src_offset + c, i] for
     * c < channels (overwritten; the rest of dst untouched); src has
     * src_channels and dst dst_channels channels per sample. */
    void (*channel_copy)(pmoe_backend *be, int64_t batch, int64_t spatial, int channels,
                         const float *src, int src_channels, int src_offset, float *dst,
                         int dst_channels, int dst_offset);
} pmoe_ops;

/* Input that overlaps compute (train.c's batch feed): a backend with a
 * copy stream beside its compute stream. A batch composed in pinned host
 * memory is uploaded on the copy stream into a staging area of backend
 * memory while the compute stream runs the step before, and landed into
 * the model's buffers on the compute stream, which waits for the upload on
 * the device: the host never waits for compute. One staging area, so
 * uploads and landings alternate: upload, land, upload, land, ... */
typedef struct pmoe_upload_ops {
    /* Page-locked host memory (copies read it when they run, not when
     * they are enqueued). */
    pmoe_status (*pinned_alloc)(pmoe_backend *be, size_t bytes, void **out, pmoe_error *err);
    void (*pinned_release)(pmoe_backend *be, void *ptr);
    /* On the copy stream, once the last landing has read the staging area:
     * host (pinned) [src, src + bytes) -> staging (backend memory). slot
     * (0 or 1) names src's buffer for slot_wait. */
    pmoe_status (*upload)(pmoe_backend *be, int slot, void *staging, const void *src, size_t bytes,
                          pmoe_error *err);
    /* On the compute stream, after the last upload (a device-side wait):
     * dst[i] <- src[i] (backend memory, bytes[i]) for i < count; later
     * compute sees the batch, and the staging area is free again. */
    pmoe_status (*land)(pmoe_backend *be, int count, void *const *dst, const void *const *src,
                        const size_t *bytes, pmoe_error *err);
    /* The host waits until the upload from slot's buffer has read it, so
     * the buffer may be composed into again. */
    pmoe_status (*slot_wait)(pmoe_backend *be, int slot, pmoe_error *err);
} pmoe_upload_ops;

struct pmoe_backend {
    const char *name; /* "cpu", "cuda:0" */
    const pmoe_ops *ops;
    pmoe_mem_stats mem; /* this backend's memory */
    /* Where mem is not the host's (CUDA): the host memory taken beside it
     * (pmoe_backend_host_alloc), weighed against limit_bytes, the host
     * memory available when the backend was made. Unused where it is. */
    pmoe_mem_stats host_mem;
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
    int asynchronous; /* ops return before their work is done (CUDA): timers must wait */
    int host_memory;  /* its buffers are host memory the host may write directly (CPU):
                          a batch is composed in place rather than copied in */
    /* Optional (NULL when absent): start (1) or stop (0) the device profiler's
     * capture, for `nsys --capture-range=cudaProfilerApi`. */
    void (*profiler)(pmoe_backend *be, int start);
    /* Optional (NULL when absent): the device's own clock (CUDA events), so
     * phase timers need not wait for the device at each boundary. */
    const pmoe_device_clock *clock;
    /* Optional (NULL: fp32 only): switches train.precision (pmoe_precision);
     * call before the model is made (it may change which optional ops the
     * table offers). pmoe_backend_set_precision is the caller's way in. */
    pmoe_status (*set_precision)(pmoe_backend *be, int precision, pmoe_error *err);
    /* Why this backend was chosen, when it was not asked for by name (auto
     * falling back to the CPU: "no CUDA device: ..."); "" otherwise. */
    char chosen_because[256];
    /* Optional (NULL when absent: the CPU composes in place): overlapped
     * input uploads. */
    const pmoe_upload_ops *upload;
};

/* The CPU backend. threads <= 0: the cores this process may use
 * (pmoe_cores_available), unless OMP_NUM_THREADS says otherwise. */
pmoe_status pmoe_cpu_backend_create(int threads, pmoe_backend **out, pmoe_error *err);

/* Which CPU kernels a CPU backend runs (train.cpu_kernels): the reference
 * (bit-identical for any thread count; the default) or the fast path
 * (oneDNN: results to rounding, not bit-identical across thread counts).
 * Fast fails with a one-line cause when the build has no oneDNN; on a
 * non-CPU backend both are accepted and change nothing. */
typedef enum { PMOE_CPU_KERNELS_REFERENCE, PMOE_CPU_KERNELS_FAST } pmoe_cpu_kernels;
pmoe_status pmoe_backend_set_cpu_kernels(pmoe_backend *be, pmoe_cpu_kernels kernels,
                                         pmoe_error *err);

/* train.precision on be (pmoe_precision). fp32 is the reference and
 * changes nothing. tf32 and bf16 round the inputs of every convolution and
 * every GEMM the ops table runs for the models' layers and experts (the
 * gemm op, expert_forward / expert_backward, conv2d_forward /
 * conv2d_backward) to TF32 or bfloat16, round to nearest even
 * (kernels/float_round.h), and sum in float32; the router (scores, top-l,
 * its gradient), batch norm, the loss, the bias gradients and the optimizer
 * stay float32, and weights are kept in float32 (the rounded copies are
 * scratch). The CPU backend rounds the same inputs of the same ops as the
 * CUDA backend, and leaves its fused optional ops out of the table so both
 * run the same ops. Fails with a one-line cause on a backend without it. */
pmoe_status pmoe_backend_set_precision(pmoe_backend *be, pmoe_precision precision, pmoe_error *err);
/* "fp32", "tf32", "bf16". */
const char *pmoe_precision_name(pmoe_precision precision);

/* Picks a backend for train.device ("auto", "cpu", "cuda", "cuda:N"). */
pmoe_status pmoe_backend_create(const char *device, int threads, pmoe_backend **out,
                                pmoe_error *err);
void pmoe_backend_destroy(pmoe_backend *be);

/* What the layers above ask about devices, so that they need not include
 * cuda/: how many GPUs answer (0 with none, no driver, or a build without
 * CUDA; never prints, never fails); whether be runs on a CUDA device; and
 * the stream be queues its work on (a cudaStream_t; NULL for a backend
 * without one), for a communicator that orders its collectives with be's
 * work. */
int pmoe_backend_gpu_count(void);
int pmoe_backend_is_cuda(const pmoe_backend *be);
void *pmoe_backend_stream(pmoe_backend *be);

/* Makes timer measure be's work: with be's own clock where it has one,
 * else, on an asynchronous backend, by waiting for it at each phase
 * boundary (phase_timer.h says why); then resets the timer. */
void pmoe_backend_time_phases(pmoe_backend *be, pmoe_phase_timer *timer);

/* Host memory beside the backend's own, for a while (a parameter init
 * buffer, a staging batch): weighed first against the host memory left
 * (pmoe_mem_check: on the CPU, be->mem's limit and use, since the backend's
 * memory is the host's; elsewhere be->host_mem's), so a host that cannot
 * hold it gives the one-line "out of host memory" error rather than a kill;
 * held (counted against the limit, not in the backend's peak) until
 * pmoe_backend_host_free, or, for a buffer kept as long as the backend or
 * longer, until the backend goes (such a buffer is freed with free()). */
pmoe_status pmoe_backend_host_alloc(pmoe_backend *be, size_t bytes, const char *what, void **out,
                                    pmoe_error *err);
void pmoe_backend_host_free(pmoe_backend *be, void *ptr, size_t bytes);

/* Allocates a tensor of the given shape on be (contents undefined). */
pmoe_status pmoe_tensor_alloc(pmoe_backend *be, pmoe_tensor *t, int ndim, const int64_t *shape,
                              pmoe_error *err);
void pmoe_tensor_release(pmoe_backend *be, pmoe_tensor *t);

#endif
