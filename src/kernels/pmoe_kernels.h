/* pmoe_kernels.h: the C launchers of pmoe's own kernels.
 *
 * Each launcher checks its arguments, enqueues its kernel(s) on `stream` (a
 * cudaStream_t, passed as void * so this header needs no CUDA header; NULL is
 * the default stream) and returns at once: 0, a cudaError_t from the launch
 * itself (> 0), or a PMOE_KERNEL_ERR_* (< 0). It never synchronises, so a
 * fault inside a kernel shows up at the caller's next synchronisation.
 * Pointers are device memory; shapes and layouts are those of
 * src/host/backend/backend.h, and every kernel has its CPU twin in cpu_ops.h.
 *
 * The same sources are also compiled as C++ for host execution (see
 * host_exec.h). That build defines PMOE_KERNELS_HOST_EXEC and its launchers
 * carry a pmoe_hx_ prefix instead of pmoe_k_, so the emulated and the CUDA
 * kernels can live in one program (the tests link both). */
#ifndef PMOE_KERNELS_H
#define PMOE_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifdef PMOE_KERNELS_HOST_EXEC
#define PMOE_KERNEL(name) pmoe_hx_##name
#else
#define PMOE_KERNEL(name) pmoe_k_##name
#endif

enum {
    PMOE_KERNEL_ERR_ARGS = -1,    /* a shape the kernels do not support */
    PMOE_KERNEL_ERR_EMULATOR = -2 /* host execution found a fault (barrier, warp mask, ...) */
};

/* Gate modes and loss kinds, numbered as pmoe_gate_mode and pmoe_loss_kind
 * (the CUDA backend checks that at compile time). */
enum { PMOE_KERNEL_GATE_RENORM = 0, PMOE_KERNEL_GATE_SOFTMAX_ALL = 1, PMOE_KERNEL_GATE_ONES = 2 };
enum { PMOE_KERNEL_LOSS_LOGISTIC = 0, PMOE_KERNEL_LOSS_SOFTMAX_CE = 1 };

/* A one-line description of a launcher's return code. */
const char *PMOE_KERNEL(error_string)(int code);
/* The name of the kernel this thread launched last ("fill_kernel"). */
const char *PMOE_KERNEL(last_launch)(void);

/* images (B x C x H x W) -> patches (B x n x d), and the adjoint, which
 * overwrites every pixel of dimages (zero outside every patch). */
int PMOE_KERNEL(patch_extract_forward)(int64_t batch, int channels, int height, int width,
                                       int patch, const float *images, float *patches,
                                       void *stream);
int PMOE_KERNEL(patch_extract_backward)(int64_t batch, int channels, int height, int width,
                                        int patch, const float *dpatches, float *dimages,
                                        void *stream);

/* The fused router: scores (B x n x k), top-l picks (B x k x l, best first,
 * ties to the lower index) and gate values (B x k x l), one block per sample. */
int PMOE_KERNEL(gate_topl_forward)(int64_t batch, int patches, int dim, int experts, int topl,
                                   int gate_mode, const float *patch_data, const float *router_w,
                                   float *scores, int32_t *selected, float *gate, void *stream);
/* dscores (B x n x k, every element written) from dgate; the router and
 * patch gradients that follow are GEMMs the caller runs. */
int PMOE_KERNEL(gate_topl_backward_scores)(int64_t batch, int patches, int experts, int topl,
                                           int gate_mode, const float *scores,
                                           const int32_t *selected, const float *gate,
                                           const float *dgate, float *dscores, void *stream);

/* patches -> expert_in (k x B l x d), and the adjoint (dpatches overwritten,
 * each patch's rows summed in expert order, without atomics). */
int PMOE_KERNEL(dispatch_gather)(int64_t batch, int patches, int dim, int experts, int topl,
                                 const float *patch_data, const int32_t *selected, float *expert_in,
                                 void *stream);
int PMOE_KERNEL(dispatch_gather_backward)(int64_t batch, int patches, int dim, int experts,
                                          int topl, const float *dexpert_in,
                                          const int32_t *selected, float *dpatches, void *stream);

/* x = ReLU(x) in place (NaN -> 0, as the CPU); dx = 0 where out <= 0. */
int PMOE_KERNEL(relu_forward)(int64_t count, float *x, void *stream);
int PMOE_KERNEL(relu_backward)(int64_t count, const float *out, float *dout, void *stream);

/* logits (B x c) from hidden (k x B l x h), gate (B x k x l, NULL for G = 1)
 * and out_w (k x h x c); backward writes dhidden, dgate and dout_w (each
 * optional but dhidden), every sum in a fixed order. */
int PMOE_KERNEL(combine_forward)(int64_t batch, int experts, int topl, int hidden, int classes,
                                 const float *hidden_data, const float *gate, const float *out_w,
                                 float *logits, void *stream);
int PMOE_KERNEL(combine_backward)(int64_t batch, int experts, int topl, int hidden, int classes,
                                  const float *dlogits, const float *hidden_data, const float *gate,
                                  const float *out_w, float *dhidden, float *dgate, float *dout_w,
                                  void *stream);

/* Mean loss and dlogits (optional); stats[0] = mean loss, stats[1] = correct. */
int PMOE_KERNEL(loss_forward_backward)(int kind, int64_t batch, int classes, const float *logits,
                                       const int32_t *labels, float *dlogits, float *stats,
                                       void *stream);
/* The separate-training router loss (see backend.h): dscores and stats[0]. */
int PMOE_KERNEL(router_linear_loss)(int64_t batch, int patches, int experts, const float *scores,
                                    const int32_t *pair, const float *weight, float *dscores,
                                    float *stats, void *stream);

/* v = momentum v + (grad + weight_decay param); param -= lr v (velocity may
 * be NULL when momentum is 0); nothing changes where skip (may be NULL)
 * holds a nonzero verdict. */
int PMOE_KERNEL(sgd_update)(int64_t count, float *param, const float *grad, float *velocity,
                            float lr, float momentum, float weight_decay, const int32_t *skip,
                            void *stream);

/* nonfinite_guard.cu: the step's verdict from the loss and gradients (the
 * list itself is host memory; see backend.h's nonfinite_guard). guard has
 * PMOE_KERNEL_GUARD_WORDS int32, numbered as backend.h's PMOE_GUARD_*. */
enum {
    PMOE_KERNEL_GUARD_FIRST = 0,
    PMOE_KERNEL_GUARD_STEP_LOW = 1,
    PMOE_KERNEL_GUARD_STEP_HIGH = 2,
    PMOE_KERNEL_GUARD_SCAN = 3,
    PMOE_KERNEL_GUARD_WORDS = 4
};
int PMOE_KERNEL(nonfinite_guard)(int arrays, const float *const *x, const int64_t *count,
                                 int64_t step, int hold, int32_t *guard, int32_t *verdict,
                                 void *stream);
int PMOE_KERNEL(fill)(int64_t count, float *dst, float value, void *stream);

/* float_round.cu. dst[i] = src[i] rounded as precision (PMOE_ROUND_* of
 * float_round.h: 0 none, 1 TF32, 2 bfloat16), round to nearest even. */
int PMOE_KERNEL(round_floats)(int64_t count, const float *src, float *dst, int precision,
                              void *stream);

/* ---- The deep models' layers (backend.h, "Deep-model layers"): every
 * backward adds into dx, parameter gradients are overwritten, a NULL
 * gradient is not computed. Feature maps are batch x channels x spatial. */

/* batchnorm_relu_pool.cu. y = max(x, 0) (NaN -> 0; y may be x); dx += dy where y > 0. */
int PMOE_KERNEL(relu_forward_out)(int64_t count, const float *x, float *y, void *stream);
int PMOE_KERNEL(relu_backward_accumulate)(int64_t count, const float *y, const float *dy, float *dx,
                                          void *stream);
/* y = alpha x + beta y; beta = 0 never reads y. */
int PMOE_KERNEL(axpby)(int64_t count, float alpha, const float *x, float beta, float *y,
                       void *stream);
/* y[r] = mean of x[r, :] (rows x spatial); dx[r, :] += dy[r] / spatial. */
int PMOE_KERNEL(avgpool_forward)(int64_t rows, int64_t spatial, const float *x, float *y,
                                 void *stream);
int PMOE_KERNEL(avgpool_backward)(int64_t rows, int64_t spatial, const float *dy, float *dx,
                                  void *stream);
/* y[b, c, :] += bias[c]; dbias[c] = sum of dy[:, c, :] (one block per channel). */
int PMOE_KERNEL(channel_bias_forward)(int64_t batch, int channels, int64_t spatial,
                                      const float *bias, float *y, void *stream);
int PMOE_KERNEL(channel_bias_backward)(int64_t batch, int channels, int64_t spatial,
                                       const float *dy, float *dbias, void *stream);
/* Batch norm, several blocks per channel for the statistics (batch *
 * spatial below 2^31), their per-block partials in `workspace` (device
 * memory of batchnorm_workspace_floats floats, scratch: its contents are
 * not kept between calls): training mode writes y, save_mean, save_invstd
 * and moves the running statistics when not NULL (unbiased variance);
 * evaluation mode normalises with the running statistics; the backward
 * writes dgamma, dbeta and adds into dx, each optional. y may be x. */
int64_t PMOE_KERNEL(batchnorm_workspace_floats)(int64_t batch, int channels, int64_t spatial);
int PMOE_KERNEL(batchnorm_forward_train)(int64_t batch, int channels, int64_t spatial, float eps,
                                         const float *x, const float *gamma, const float *beta,
                                         float *y, float *save_mean, float *save_invstd,
                                         float *running_mean, float *running_var, float momentum,
                                         float *workspace, void *stream);
int PMOE_KERNEL(batchnorm_forward_eval)(int64_t batch, int channels, int64_t spatial, float eps,
                                        const float *x, const float *gamma, const float *beta,
                                        const float *running_mean, const float *running_var,
                                        float *y, void *stream);
int PMOE_KERNEL(batchnorm_backward)(int64_t batch, int channels, int64_t spatial, const float *x,
                                    const float *gamma, const float *save_mean,
                                    const float *save_invstd, const float *dy, float *dx,
                                    float *dgamma, float *dbeta, float *workspace, void *stream);

/* moe_layer.cu. The scatter of expert_out (k x B l x e) into out_patches
 * (B x n x k e, overwritten, zero where nothing was picked), gate NULL for
 * 1; backward: dexpert_out (gathered) and dgate (one fixed-order sum per
 * pick), each optional. */
int PMOE_KERNEL(moe_scatter_forward)(int64_t batch, int patches, int experts, int topl,
                                     int expert_dim, const float *expert_out,
                                     const int32_t *selected, const float *gate, float *out_patches,
                                     void *stream);
int PMOE_KERNEL(moe_scatter_backward)(int64_t batch, int patches, int experts, int topl,
                                      int expert_dim, const float *dout_patches,
                                      const float *expert_out, const int32_t *selected,
                                      const float *gate, float *dexpert_out, float *dgate,
                                      void *stream);
/* weights (k x B x n, overwritten): gate (or 1) at the picks, else 0;
 * dgate[b, s, t] = dweights[s, b, selected[b, s, t]]. */
int PMOE_KERNEL(moe_position_weights)(int64_t batch, int patches, int experts, int topl,
                                      const int32_t *selected, const float *gate, float *weights,
                                      void *stream);
int PMOE_KERNEL(moe_position_weights_backward)(int64_t batch, int patches, int experts, int topl,
                                               const int32_t *selected, const float *dweights,
                                               float *dgate, void *stream);
/* y = weight[b, j] x on the p x p patch j (B x C x H x W; pixels outside
 * every patch scale by 0); backward dx += weight dy and dweight[b, j] = sum
 * over patch j of dy x, each optional. */
int PMOE_KERNEL(patch_scale_forward)(int64_t batch, int channels, int height, int width, int patch,
                                     const float *weight, const float *x, float *y, void *stream);
int PMOE_KERNEL(patch_scale_backward)(int64_t batch, int channels, int height, int width, int patch,
                                      const float *weight, const float *x, const float *dy,
                                      float *dx, float *dweight, void *stream);
/* dst[b, dst_offset + c, i] = src[b, src_offset + c, i] for c < channels,
 * maps of batch x {src,dst}_channels x spatial; the rest of dst is not
 * touched. The two blocks must not overlap (as the twin's memcpy). */
int PMOE_KERNEL(channel_copy)(int64_t batch, int64_t spatial, int channels, const float *src,
                              int src_channels, int src_offset, float *dst, int dst_channels,
                              int dst_offset, void *stream);

#ifdef PMOE_KERNELS_HOST_EXEC
/* Host execution only: the order in which a block's fibers are resumed
 * between barriers (seed is used by the shuffle). Overrides PMOE_EMU_ORDER. */
enum { PMOE_EMU_FORWARD = 0, PMOE_EMU_BACKWARD = 1, PMOE_EMU_SHUFFLE = 2 };
void pmoe_emu_set_order(int order, uint64_t seed);
/* Number of fiber switches so far (a cost measure for tests). */
uint64_t pmoe_emu_switches(void);
#endif

#ifdef __cplusplus
}
#endif
#endif
