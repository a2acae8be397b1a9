/* cpu_expert.c: the CPU twins of the expert layer, the combine with the
 * fixed output weights, and the losses.
 *
 * The experts are k independent GEMMs over their B*l dispatched rows. The
 * combine and losses are small loops parallel over their outputs, each sum
 * in a fixed order, so the result is the same for any thread count. */
#include <math.h>
#include <string.h>

#include "backend/cpu_ops.h"

void cpu_expert_forward(pmoe_backend *be, int experts, int64_t rows, int dim, int hidden,
                        const float *expert_in, const float *expert_w, float *hidden_out) {
    /* hidden[s] (rows x h) = expert_in[s] (rows x d) W_s^T (d x h) */
    cpu_gemm(be, 0, 1, rows, hidden, dim, 1.0f, expert_in, dim, rows * dim, expert_w, dim,
             (int64_t)hidden * dim, 0.0f, hidden_out, hidden, rows * hidden, experts);
    const int64_t total = (int64_t)experts * rows * hidden;
#pragma omp parallel for schedule(static) if (total > 65536)
    for (int64_t i = 0; i < total; i++)
        if (!(hidden_out[i] > 0.0f)) hidden_out[i] = 0.0f;
}

void cpu_expert_backward(pmoe_backend *be, int experts, int64_t rows, int dim, int hidden,
                         const float *expert_in, const float *expert_w, const float *hidden_out,
                         float *dhidden, float *dexpert_w, float *dexpert_in) {
    const int64_t total = (int64_t)experts * rows * hidden;
#pragma omp parallel for schedule(static) if (total > 65536)
    for (int64_t i = 0; i < total; i++)
        if (!(hidden_out[i] > 0.0f)) dhidden[i] = 0.0f;
    /* dW_s (h x d) = dpre_s^T (h x rows) expert_in[s] (rows x d) */
    cpu_gemm(be, 1, 0, hidden, dim, rows, 1.0f, dhidden, hidden, rows * hidden, expert_in, dim,
             rows * dim, 0.0f, dexpert_w, dim, (int64_t)hidden * dim, experts);
    if (dexpert_in) /* dX_s (rows x d) = dpre_s (rows x h) W_s (h x d) */
        cpu_gemm(be, 0, 0, rows, dim, hidden, 1.0f, dhidden, hidden, rows * hidden, expert_w,
                 dim, (int64_t)hidden * dim, 0.0f, dexpert_in, dim, rows * dim, experts);
}

void cpu_combine_forward(pmoe_backend *be, const pmoe_combine_shape *s, const float *hidden,
                         const float *gate, const float *out_w, float *logits) {
    const int k = s->experts, l = s->topl, h = s->hidden, C = s->classes;
    const int64_t rows = s->batch * l;
    const double inv_l = 1.0 / l;
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < s->batch; b++)
        for (int c = 0; c < C; c++) {
            double f = 0.0;
            for (int e = 0; e < k; e++)
                for (int t = 0; t < l; t++) {
                    const float *hrow = hidden + (e * rows + b * l + t) * h;
                    double unit_sum = 0.0;
                    for (int r = 0; r < h; r++)
                        unit_sum += (double)out_w[((int64_t)e * h + r) * C + c] * hrow[r];
                    const double g = gate ? gate[(b * k + e) * (int64_t)l + t] : 1.0;
                    f += g * unit_sum;
                }
            logits[b * C + c] = (float)(f * inv_l);
        }
}

void cpu_combine_backward(pmoe_backend *be, const pmoe_combine_shape *s, const float *dlogits,
                          const float *hidden, const float *gate, const float *out_w,
                          float *dhidden, float *dgate, float *dout_w) {
    const int k = s->experts, l = s->topl, h = s->hidden, C = s->classes;
    const int64_t rows = s->batch * l;
    const double inv_l = 1.0 / l;
#pragma omp parallel for collapse(3) schedule(static)
    for (int e = 0; e < k; e++)
        for (int64_t b = 0; b < s->batch; b++)
            for (int t = 0; t < l; t++) {
                const int64_t row = e * rows + b * l + t;
                const double g = gate ? gate[(b * k + e) * (int64_t)l + t] : 1.0;
                double dg = 0.0;
                for (int r = 0; r < h; r++) {
                    double dunit = 0.0; /* sum_c dL/df_c a[e, r, c] */
                    for (int c = 0; c < C; c++)
                        dunit += (double)dlogits[b * C + c] * out_w[((int64_t)e * h + r) * C + c];
                    dhidden[row * h + r] = (float)(dunit * g * inv_l);
                    dg += dunit * hidden[row * h + r];
                }
                if (dgate) dgate[(b * k + e) * (int64_t)l + t] = (float)(dg * inv_l);
            }
    if (!dout_w) return;
#pragma omp parallel for collapse(3) schedule(static)
    for (int e = 0; e < k; e++)
        for (int r = 0; r < h; r++)
            for (int c = 0; c < C; c++) {
                double acc = 0.0;
                for (int64_t b = 0; b < s->batch; b++)
                    for (int t = 0; t < l; t++) {
                        const double g = gate ? gate[(b * k + e) * (int64_t)l + t] : 1.0;
                        acc += (double)dlogits[b * C + c] * g * hidden[(e * rows + b * l + t) * h + r];
                    }
                dout_w[((int64_t)e * h + r) * C + c] = (float)(acc * inv_l);
            }
}

/* log(1 + exp(z)) without overflow. */
static double softplus(double z) { return z > 0 ? z + log1p(exp(-z)) : log1p(exp(z)); }

void cpu_loss_forward_backward(pmoe_backend *be, pmoe_loss_kind kind, int64_t batch, int classes,
                               const float *logits, const int32_t *labels, float *dlogits,
                               float *stats) {
    double loss = 0.0;
    int64_t correct = 0;
    const double inv_b = 1.0 / (double)batch;
    for (int64_t b = 0; b < batch; b++) {
        if (kind == PMOE_LOSS_LOGISTIC) {
            const double y = labels[b] == 1 ? 1.0 : -1.0, f = logits[b];
            loss += softplus(-y * f);
            /* d/df log(1 + e^{-y f}) = -y sigmoid(-y f) */
            if (dlogits) dlogits[b] = (float)(-y / (1.0 + exp(y * f)) * inv_b);
            correct += (f > 0.0) == (labels[b] == 1);
        } else {
            const float *z = logits + b * classes;
            int best = 0;
            for (int c = 1; c < classes; c++)
                if (z[c] > z[best]) best = c;
            double denom = 0.0;
            for (int c = 0; c < classes; c++) denom += exp((double)z[c] - z[best]);
            loss += log(denom) - ((double)z[labels[b]] - z[best]);
            if (dlogits)
                for (int c = 0; c < classes; c++)
                    dlogits[b * classes + c] =
                        (float)((exp((double)z[c] - z[best]) / denom - (c == labels[b])) * inv_b);
            correct += best == labels[b];
        }
    }
    stats[0] = (float)(loss * inv_b);
    stats[1] = (float)correct;
}

void cpu_router_linear_loss(pmoe_backend *be, int64_t batch, int patches, int experts,
                            const float *scores, const int32_t *pair, const float *weight,
                            float *dscores, float *stats) {
    const int n = patches, k = experts;
    memset(dscores, 0, (size_t)(batch * n * k) * sizeof(float));
    double loss = 0.0;
    for (int64_t b = 0; b < batch; b++) {
        const int plus = 2 * pair[b], minus = plus + 1;
        const float w = weight[b];
        for (int j = 0; j < n; j++) {
            const int64_t at = (b * n + j) * k;
            loss -= (double)w * ((double)scores[at + plus] - scores[at + minus]);
            dscores[at + plus] = -w;
            dscores[at + minus] = w;
        }
    }
    stats[0] = (float)loss;
}
