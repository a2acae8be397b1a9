/* cpu_ops.h: the CPU backend's ops, callable directly.
 *
 * These are the reference implementations every other backend is tested
 * against (the "CPU twins" of the CUDA kernels). They take host pointers and
 * ignore the backend argument except for errors, so tests may call them with
 * be = NULL. Shapes and layouts are documented in backend.h. */
#ifndef PMOE_BACKEND_CPU_OPS_H
#define PMOE_BACKEND_CPU_OPS_H

#include "backend/backend.h"

void cpu_gemm(pmoe_backend *be, int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
              float alpha, const float *a, int64_t lda, int64_t stride_a, const float *b,
              int64_t ldb, int64_t stride_b, float beta, float *c, int64_t ldc, int64_t stride_c,
              int64_t batch);

void cpu_patch_extract_forward(pmoe_backend *be, const pmoe_patch_shape *s, const float *images,
                               float *patches);
void cpu_patch_extract_backward(pmoe_backend *be, const pmoe_patch_shape *s,
                                const float *dpatches, float *dimages);

/* Top-l of one score row: scores[j * stride] for j < n; writes l indices,
 * best first, ties to the lower index. */
void cpu_topl_select(const float *scores, int64_t stride, int n, int l, int32_t *out);

void cpu_gate_topl_forward(pmoe_backend *be, const pmoe_route_shape *s, const float *patches,
                           const float *router_w, float *scores, int32_t *selected, float *gate);
void cpu_gate_topl_backward(pmoe_backend *be, const pmoe_route_shape *s, const float *patches,
                            const float *router_w, const float *scores, const int32_t *selected,
                            const float *gate, const float *dgate, float *dscores,
                            float *drouter_w, float *dpatches);

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
                                  float *dexpert_w);

/* Whether the fused forms use their AVX-512 kernels: on = 1 asks for them
 * (granted only where the CPU has AVX-512F), 0 forbids them, -1 only asks.
 * Returns the setting in force. For tests; the default is on. */
int cpu_expert_gathered_simd(int on);

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
                    float *velocity, float lr, float momentum, float weight_decay);

#endif
