/* cpu_moe_layer.c: the CPU twins of the pMoE convolution layer's routing
 * plumbing: the scatter of expert outputs back to their patches, the
 * dense-masked form's position weights, and the per-patch scaling of a
 * feature map.
 *
 * All are gathers and scatters driven by `selected`. Each runs parallel
 * over samples, and every output value has exactly one writer with any sum
 * over a patch taken in double in a fixed order, so the results do not
 * depend on the thread count. Outputs a contract says are overwritten are
 * zeroed first (one sample at a time, by the thread that then fills it). */
#include <string.h>

#include "backend/cpu_ops.h"

void cpu_moe_scatter_forward(pmoe_backend *be, const pmoe_scatter_shape *s, const float *expert_out,
                             const int32_t *selected, const float *gate, float *out_patches) {
    const int n = s->patches, k = s->experts, l = s->topl, e = s->expert_dim;
    const int64_t rows = s->batch * l, width = (int64_t)k * e; /* out_patches: B x n x (k e) */
#pragma omp parallel for schedule(static) if (s->batch * n * width > 65536)
    for (int64_t b = 0; b < s->batch; b++) {
        float *sample = out_patches + b * n * width;
        memset(sample, 0, (size_t)(n * width) * sizeof(float));
        for (int x = 0; x < k; x++)
            for (int t = 0; t < l; t++) {
                const int64_t pick = (b * k + x) * (int64_t)l + t;
                const float g = gate ? gate[pick] : 1.0f;
                const float *src = expert_out + ((int64_t)x * rows + b * l + t) * e;
                float *dst = sample + selected[pick] * width + (int64_t)x * e;
                for (int i = 0; i < e; i++) dst[i] = g * src[i];
            }
    }
}

void cpu_moe_scatter_backward(pmoe_backend *be, const pmoe_scatter_shape *s,
                              const float *dout_patches, const float *expert_out,
                              const int32_t *selected, const float *gate, float *dexpert_out,
                              float *dgate) {
    const int n = s->patches, k = s->experts, l = s->topl, e = s->expert_dim;
    const int64_t rows = s->batch * l, width = (int64_t)k * e;
#pragma omp parallel for schedule(static) if (s->batch * (int64_t)k * l * e > 65536)
    for (int64_t b = 0; b < s->batch; b++)
        for (int x = 0; x < k; x++)
            for (int t = 0; t < l; t++) {
                const int64_t pick = (b * k + x) * (int64_t)l + t;
                const float g = gate ? gate[pick] : 1.0f;
                const int64_t row = (int64_t)x * rows + b * l + t;
                const float *src = dout_patches + (b * n + selected[pick]) * width + (int64_t)x * e;
                float *dst = dexpert_out + row * e;
                for (int i = 0; i < e; i++) dst[i] = g * src[i];
                if (dgate) {
                    const float *val = expert_out + row * e;
                    double sum = 0.0;
                    for (int i = 0; i < e; i++) sum += (double)src[i] * val[i];
                    dgate[pick] = (float)sum;
                }
            }
}

void cpu_moe_position_weights(pmoe_backend *be, const pmoe_route_shape *s, const int32_t *selected,
                              const float *gate, float *weights) {
    const int n = s->patches, k = s->experts, l = s->topl;
    const int64_t B = s->batch; /* weights: k x B x n */
#pragma omp parallel for schedule(static) if (B * k * n > 65536)
    for (int64_t b = 0; b < B; b++)
        for (int x = 0; x < k; x++) {
            float *row = weights + ((int64_t)x * B + b) * n;
            memset(row, 0, (size_t)n * sizeof(float));
            for (int t = 0; t < l; t++) {
                const int64_t pick = (b * k + x) * (int64_t)l + t;
                row[selected[pick]] = gate ? gate[pick] : 1.0f;
            }
        }
}

void cpu_moe_position_weights_backward(pmoe_backend *be, const pmoe_route_shape *s,
                                       const int32_t *selected, const float *dweights,
                                       float *dgate) {
    const int n = s->patches, k = s->experts, l = s->topl;
    const int64_t B = s->batch;
#pragma omp parallel for schedule(static) if (B * k * l > 65536)
    for (int64_t b = 0; b < B; b++)
        for (int x = 0; x < k; x++)
            for (int t = 0; t < l; t++) {
                const int64_t pick = (b * k + x) * (int64_t)l + t;
                dgate[pick] = dweights[((int64_t)x * B + b) * n + selected[pick]];
            }
}

/* Pixels outside every patch (p not dividing H or W) belong to no patch:
 * they get weight 0, as patch_extract ignores them. */
void cpu_patch_scale_forward(pmoe_backend *be, const pmoe_patch_shape *s, const float *weight,
                             const float *x, float *y) {
    const int C = s->channels, H = s->height, W = s->width, p = s->patch;
    const int per_row = W / p, covered_h = (H / p) * p, covered_w = per_row * p;
    const int n = pmoe_patch_count(s);
    const int64_t planes = s->batch * C; /* x, y: B x C x H x W */
#pragma omp parallel for schedule(static) if (planes * H * W > 65536)
    for (int64_t plane = 0; plane < planes; plane++) {
        const float *wb = weight + (plane / C) * n; /* weight: B x n */
        const float *in = x + plane * H * W;
        float *out = y + plane * H * W;
        for (int py = 0; py < H; py++) {
            const float *wrow = wb + (py / p) * per_row;
            for (int px = 0; px < W; px++) {
                const int inside = py < covered_h && px < covered_w;
                out[py * W + px] = inside ? wrow[px / p] * in[py * W + px] : 0.0f;
            }
        }
    }
}

void cpu_patch_scale_backward(pmoe_backend *be, const pmoe_patch_shape *s, const float *weight,
                              const float *x, const float *dy, float *dx, float *dweight) {
    const int C = s->channels, H = s->height, W = s->width, p = s->patch;
    const int per_row = W / p;
    const int n = pmoe_patch_count(s);
    const int64_t planes = s->batch * C;
    if (dx) {
#pragma omp parallel for schedule(static) if (planes * H * W > 65536)
        for (int64_t plane = 0; plane < planes; plane++) {
            const float *wb = weight + (plane / C) * n;
            const float *g = dy + plane * H * W;
            float *out = dx + plane * H * W;
            for (int py = 0; py < (H / p) * p; py++) {
                const float *wrow = wb + (py / p) * per_row;
                for (int px = 0; px < per_row * p; px++)
                    out[py * W + px] += wrow[px / p] * g[py * W + px];
            }
        }
    }
    if (!dweight) return;
#pragma omp parallel for schedule(static) if (planes * H * W > 65536)
    for (int64_t b = 0; b < s->batch; b++)
        for (int j = 0; j < n; j++) {
            const int y0 = (j / per_row) * p, x0 = (j % per_row) * p;
            double sum = 0.0;
            for (int c = 0; c < C; c++) {
                const int64_t base = (b * C + c) * (int64_t)H * W;
                for (int yy = 0; yy < p; yy++)
                    for (int xx = 0; xx < p; xx++) {
                        const int64_t at = base + (int64_t)(y0 + yy) * W + x0 + xx;
                        sum += (double)dy[at] * x[at];
                    }
            }
            dweight[b * n + j] = (float)sum;
        }
}
