/* cpu_elementwise.c: the CPU twins of the deep models' small ops: ReLU,
 * axpby, global average pooling and the channel bias. Plain loops; pooling
 * and the bias sum one row or channel per thread in double, in a fixed
 * order. */
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu_ops.h"

/* ------------------------------------------------------------ elementwise */

void cpu_relu_forward(pmoe_backend *be, int64_t count, const float *x, float *y) {
#pragma omp parallel for schedule(static) if (count > 65536)
    for (int64_t i = 0; i < count; i++) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

void cpu_relu_backward(pmoe_backend *be, int64_t count, const float *y, const float *dy,
                       float *dx) {
#pragma omp parallel for schedule(static) if (count > 65536)
    for (int64_t i = 0; i < count; i++) dx[i] = cpu_where_positive(y[i], dx[i] + dy[i], dx[i]);
}

void cpu_axpby(pmoe_backend *be, int64_t count, float alpha, const float *x, float beta, float *y) {
    if (beta == 0.0f) {
#pragma omp parallel for schedule(static) if (count > 65536)
        for (int64_t i = 0; i < count; i++) y[i] = alpha * x[i];
    } else {
#pragma omp parallel for schedule(static) if (count > 65536)
        for (int64_t i = 0; i < count; i++) y[i] = alpha * x[i] + beta * y[i];
    }
}

/* ---------------------------------------------------- pooling and the bias */

void cpu_avgpool_forward(pmoe_backend *be, int64_t rows, int64_t spatial, const float *x,
                         float *y) {
#pragma omp parallel for schedule(static) if (rows * spatial > 65536)
    for (int64_t r = 0; r < rows; r++) {
        double sum = 0.0;
        for (int64_t i = 0; i < spatial; i++) sum += x[r * spatial + i];
        y[r] = (float)(sum / (double)spatial);
    }
}

void cpu_avgpool_backward(pmoe_backend *be, int64_t rows, int64_t spatial, const float *dy,
                          float *dx) {
#pragma omp parallel for schedule(static) if (rows * spatial > 65536)
    for (int64_t r = 0; r < rows; r++) {
        const float g = (float)((double)dy[r] / (double)spatial);
        for (int64_t i = 0; i < spatial; i++) dx[r * spatial + i] += g;
    }
}

void cpu_channel_bias_forward(pmoe_backend *be, int64_t batch, int channels, int64_t spatial,
                              const float *bias, float *y) {
    const int64_t rows = batch * channels;
#pragma omp parallel for schedule(static) if (rows * spatial > 65536)
    for (int64_t r = 0; r < rows; r++) {
        const float add = bias[r % channels];
        for (int64_t i = 0; i < spatial; i++) y[r * spatial + i] += add;
    }
}

void cpu_channel_bias_backward(pmoe_backend *be, int64_t batch, int channels, int64_t spatial,
                               const float *dy, float *dbias) {
#pragma omp parallel for schedule(static) if (channels > 1 && batch * channels * spatial > 65536)
    for (int c = 0; c < channels; c++) {
        double sum = 0.0;
        for (int64_t b = 0; b < batch; b++) {
            const float *row = dy + (b * channels + c) * spatial;
            for (int64_t i = 0; i < spatial; i++) sum += row[i];
        }
        dbias[c] = (float)sum;
    }
}
