/* cpu_ops.h: the CPU backend's ops, callable directly.
 *
 * These are the reference implementations every other backend is tested
 * against (the "CPU twins" of the CUDA kernels). They take host pointers and
 * ignore the backend argument except for errors, so tests may call them with
 * be = NULL. Shapes and layouts are documented in backend.h. */
#ifndef PMOE_BACKEND_CPU_OPS_H
#define PMOE_BACKEND_CPU_OPS_H

#include <stdint.h>
#include <string.h>

#include "backend/backend.h"

/* a where c > 0, else b (NaN c gives b), chosen by a bit mask rather than
 * a branch: under GCC's default trapping math a float comparison does not
 * become a vector select, and a branch on the signs of activations
 * mispredicts half the time (relu_backward ran 28x slower than relu_forward). */
static inline float cpu_where_positive(float c, float a, float b) {
    uint32_t ab, bb;
    memcpy(&ab, &a, sizeof ab);
    memcpy(&bb, &b, sizeof bb);
    const uint32_t keep = 0u - (uint32_t)(c > 0.0f);
    const uint32_t r = (ab & keep) | (bb & ~keep);
    float out;
    memcpy(&out, &r, sizeof out);
    return out;
}

void cpu_gemm(pmoe_backend *be, int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
              float alpha, const float *a, int64_t lda, int64_t stride_a, const float *b,
              int64_t ldb, int64_t stride_b, float beta, float *c, int64_t ldc, int64_t stride_c,
              int64_t batch);

void cpu_patch_extract_forward(pmoe_backend *be, const pmoe_patch_shape *s, const float *images,
                               float *patches);
void cpu_patch_extract_backward(pmoe_backend *be, const pmoe_patch_shape *s, const float *dpatches,
                                float *dimages);

/* Top-l of one score row: scores[j * stride] for j < n; writes l indices,
 * best first, ties to the lower index. */
void cpu_topl_select(const float *scores, int64_t stride, int n, int l, int32_t *out);

void cpu_gate_topl_forward(pmoe_backend *be, const pmoe_route_shape *s, const float *patches,
                           const float *router_w, float *scores, int32_t *selected, float *gate);
void cpu_patch_extract_route(pmoe_backend *be, const pmoe_patch_shape *ps,
                             const pmoe_route_shape *s, const float *images, const float *router_w,
                             float *patches, float *scores, int32_t *selected, float *gate);
void cpu_gate_topl_backward(pmoe_backend *be, const pmoe_route_shape *s, const float *patches,
                            const float *router_w, const float *scores, const int32_t *selected,
                            const float *gate, const float *dgate, float *dscores, float *drouter_w,
                            float *dpatches);

void cpu_dispatch_gather(pmoe_backend *be, const pmoe_route_shape *s, const float *patches,
                         const int32_t *selected, float *expert_in);
void cpu_dispatch_gather_backward(pmoe_backend *be, const pmoe_route_shape *s,
                                  const float *dexpert_in, const int32_t *selected,
                                  float *dpatches);

void cpu_expert_forward(pmoe_backend *be, int experts, int64_t rows, int dim, int hidden,
                        const float *expert_in, const float *expert_w, float *hidden_out);
void cpu_expert_backward(pmoe_backend *be, int experts, int64_t rows, int dim, int hidden,
                         const float *expert_in, const float *expert_w, const float *hidden_out,
                         float *dhidden, float *dexpert_w, float *dexpert_in);

/* The fused forms (see backend.h): cpu_dispatch_gather followed by
 * cpu_expert_forward / cpu_expert_backward (without dexpert_in), equal to
 * rounding: on CPUs with AVX-512 they run their own kernels, elsewhere a
 * gather into cache and OpenBLAS (cpu_expert.c says why). */
void cpu_expert_forward_gathered(pmoe_backend *be, const pmoe_route_shape *s, int hidden,
                                 const float *patches, const int32_t *selected,
                                 const float *expert_w, float *hidden_out);
void cpu_expert_backward_gathered(pmoe_backend *be, const pmoe_route_shape *s, int hidden,
                                  const float *patches, const int32_t *selected,
                                  const float *expert_w, const float *hidden_out, float *dhidden,
                                  const float *dscores, float *dexpert_w, float *drouter_w);

void cpu_combine_forward(pmoe_backend *be, const pmoe_combine_shape *s, const float *hidden,
                         const float *gate, const float *out_w, float *logits);
void cpu_combine_backward(pmoe_backend *be, const pmoe_combine_shape *s, const float *dlogits,
                          const float *hidden, const float *gate, const float *out_w,
                          float *dhidden, float *dgate, float *dout_w);

void cpu_loss_forward_backward(pmoe_backend *be, pmoe_loss_kind kind, int64_t batch, int classes,
                               const float *logits, const int32_t *labels, float *dlogits,
                               float *stats);
void cpu_router_linear_loss(pmoe_backend *be, int64_t batch, int patches, int experts,
                            const float *scores, const int32_t *pair, const float *weight,
                            float *dscores, float *stats);

void cpu_sgd_update(pmoe_backend *be, int64_t count, float *param, const float *grad,
                    float *velocity, float lr, float momentum, float weight_decay,
                    const int32_t *skip);
/* cpu_guard.c */
void cpu_nonfinite_guard(pmoe_backend *be, int arrays, const float *const *x, const int64_t *count,
                         int64_t step, int hold, int32_t *guard, int32_t *verdict);

/* The deep models' layers (backend.h, "Deep-model layers"): cpu_conv.c
 * (convolution as im2col + OpenBLAS), cpu_batchnorm.c, cpu_elementwise.c
 * (ReLU, axpby, pool, bias) and cpu_moe_layer.c (the pMoE layer's scatter,
 * masks, patch scale). */
void cpu_conv2d_forward(pmoe_backend *be, const pmoe_conv_shape *s, const float *x, const float *w,
                        const float *bias, float *y);
void cpu_conv2d_backward(pmoe_backend *be, const pmoe_conv_shape *s, const float *x, const float *w,
                         const float *dy, float *dx, float *dw, float *dbias);
void cpu_batchnorm_forward_train(pmoe_backend *be, const pmoe_bn_shape *s, const float *x,
                                 const float *gamma, const float *beta, float *y, float *save_mean,
                                 float *save_invstd, float *running_mean, float *running_var,
                                 float momentum);
void cpu_batchnorm_forward_eval(pmoe_backend *be, const pmoe_bn_shape *s, const float *x,
                                const float *gamma, const float *beta, const float *running_mean,
                                const float *running_var, float *y);
void cpu_batchnorm_backward(pmoe_backend *be, const pmoe_bn_shape *s, const float *x,
                            const float *gamma, const float *save_mean, const float *save_invstd,
                            const float *dy, float *dx, float *dgamma, float *dbeta);
void cpu_batchnorm_moments(pmoe_backend *be, const pmoe_bn_shape *s, const float *x, float *mean,
                           float *m2);
void cpu_batchnorm_backward_input(pmoe_backend *be, const pmoe_bn_shape *s, const float *x,
                                  const float *gamma, const float *mean, const float *invstd,
                                  const float *dy, const float *sum_dy, const float *sum_dy_xhat,
                                  int64_t count, float *dx);
void cpu_relu_forward(pmoe_backend *be, int64_t count, const float *x, float *y);
void cpu_relu_backward(pmoe_backend *be, int64_t count, const float *y, const float *dy, float *dx);
void cpu_axpby(pmoe_backend *be, int64_t count, float alpha, const float *x, float beta, float *y);
void cpu_avgpool_forward(pmoe_backend *be, int64_t rows, int64_t spatial, const float *x, float *y);
void cpu_avgpool_backward(pmoe_backend *be, int64_t rows, int64_t spatial, const float *dy,
                          float *dx);
void cpu_channel_bias_forward(pmoe_backend *be, int64_t batch, int channels, int64_t spatial,
                              const float *bias, float *y);
void cpu_channel_bias_backward(pmoe_backend *be, int64_t batch, int channels, int64_t spatial,
                               const float *dy, float *dbias);
void cpu_moe_scatter_forward(pmoe_backend *be, const pmoe_scatter_shape *s, const float *expert_out,
                             const int32_t *selected, const float *gate, float *out_patches);
void cpu_moe_scatter_backward(pmoe_backend *be, const pmoe_scatter_shape *s,
                              const float *dout_patches, const float *expert_out,
                              const int32_t *selected, const float *gate, float *dexpert_out,
                              float *dgate);
void cpu_moe_position_weights(pmoe_backend *be, const pmoe_route_shape *s, const int32_t *selected,
                              const float *gate, float *weights);
void cpu_moe_position_weights_backward(pmoe_backend *be, const pmoe_route_shape *s,
                                       const int32_t *selected, const float *dweights,
                                       float *dgate);
void cpu_patch_scale_forward(pmoe_backend *be, const pmoe_patch_shape *s, const float *weight,
                             const float *x, float *y);
void cpu_patch_scale_backward(pmoe_backend *be, const pmoe_patch_shape *s, const float *weight,
                              const float *x, const float *dy, float *dx, float *dweight);
void cpu_channel_copy(pmoe_backend *be, int64_t batch, int64_t spatial, int channels,
                      const float *src, int src_channels, int src_offset, float *dst,
                      int dst_channels, int dst_offset);

#endif
