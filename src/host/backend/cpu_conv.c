/* cpu_conv.c: the CPU twin of the deep models' convolution (forward and
 * both backwards).
 *
 * Convolution is im2col + one OpenBLAS GEMM per task. A task is a fixed run
 * of whole samples chosen from the shape alone: enough samples that the
 * GEMM has about CONV_COLUMNS columns, so a batch of 2048 1x1 maps runs 16
 * GEMMs of 128 columns rather than 2048 matrix-vector products, and one
 * sample per task for maps that are already wide. 128 keeps a task's
 * columns in L2 (64 channels, 3x3: 288 KiB); on 2 cores 512 was up to 1.5x
 * slower for K = 8, and one sample per task 1.4x slower for 1x1 maps.
 * Each task's columns are (C R S) x (samples P Q); the GEMM's
 * K x (samples P Q) result is then reordered into the samples' K x P x Q
 * planes (one sample writes straight into y). im2col has three forms:
 * planes copied whole (1x1, stride 1, no padding), row segments with zero
 * ends (wide maps), and rows read from a zero-bordered copy of each plane
 * (narrow maps, where segments of 4 values made im2col cost more than a
 * K = 8 GEMM).
 *
 * Tasks are shared among OpenMP threads with OpenBLAS kept to one thread
 * (as in cpu_gemm), and since the cut depends only on the shape, so does
 * every sum: results are bit-identical for any thread count. The weight
 * gradient sums over all tasks: it is split into at most CONV_DW_GROUPS
 * fixed groups of consecutive tasks, each summed into its own buffer, and
 * the buffers are added in group order. Whole samples per task keep the
 * backward's col2im additions into dx free of races. If the workspace
 * cannot be allocated, direct loops give the same results to rounding. */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu_ops.h"

enum {
    CONV_COLUMNS = 128,        /* GEMM columns a task aims for */
    CONV_COL_FLOATS = 1 << 20, /* im2col per task at most (4 MiB) unless one sample needs more */
    CONV_DW_GROUPS = 16,       /* fixed split of the weight-gradient sum */
    CONV_DW_FLOATS = 1 << 23,  /* at most this much for the groups' partial sums (32 MiB) */
    CONV_NARROW = 16           /* output rows shorter than this take im2col_narrow */
};

/* ------------------------------------------------------------ convolution */

typedef struct conv_plan {
    int64_t B;
    int C, H, W, K, R, S, stride, pad, P, Q;
    int64_t HW, PQ, RS, CRS;
    int64_t per_task; /* samples per task */
    int64_t tasks;
    int identity; /* 1x1, stride 1, no padding: x[b] is its own column matrix */
    int narrow;   /* output rows shorter than CONV_NARROW: im2col through a bordered copy */
    int PH, PW;   /* the bordered plane, H + 2 pad by W + 2 pad */
    double flops;
} conv_plan;

/* Returns 0 when there is nothing to compute. */
static int conv_plan_make(const pmoe_conv_shape *s, conv_plan *p) {
    p->B = s->batch;
    p->C = s->in_channels, p->H = s->height, p->W = s->width, p->K = s->out_channels;
    p->R = s->kernel_h, p->S = s->kernel_w, p->stride = s->stride, p->pad = s->pad;
    p->P = pmoe_conv_out_height(s), p->Q = pmoe_conv_out_width(s);
    if (p->B <= 0 || p->K <= 0 || p->C <= 0 || p->P <= 0 || p->Q <= 0) return 0;
    p->HW = (int64_t)p->H * p->W, p->PQ = (int64_t)p->P * p->Q;
    p->RS = (int64_t)p->R * p->S, p->CRS = p->C * p->RS;
    int64_t nb = p->PQ >= CONV_COLUMNS ? 1 : CONV_COLUMNS / p->PQ;
    const int64_t fit = CONV_COL_FLOATS / (p->CRS * p->PQ);
    if (nb > fit) nb = fit > 1 ? fit : 1;
    if (nb > p->B) nb = p->B;
    p->per_task = nb;
    p->tasks = (p->B + nb - 1) / nb;
    p->identity = p->R == 1 && p->S == 1 && p->stride == 1 && p->pad == 0;
    p->narrow = p->Q < CONV_NARROW && !p->identity;
    p->PH = p->H + 2 * p->pad, p->PW = p->W + 2 * p->pad;
    p->flops = 2.0 * (double)p->B * p->K * (double)p->PQ * (double)p->CRS;
    return 1;
}

/* Output positions o in [lo, hi) read input o * stride + offset inside [0, limit). */
static void conv_span(int offset, int stride, int limit, int out, int *lo, int *hi) {
    int first = offset >= 0 ? 0 : (-offset + stride - 1) / stride;
    const int need = limit - offset;
    int end = need <= 0 ? 0 : (need + stride - 1) / stride;
    if (first > out) first = out;
    if (end > out) end = out;
    if (end < first) end = first;
    *lo = first, *hi = end;
}

/* col (CRS x cnt PQ) = the receptive fields of samples b0..b0+cnt-1:
 * col[(c R + r) S + s, b PQ + oy Q + ox] = x[b0 + b, c, oy st + r - pad, ox st + s - pad]
 * (0 outside the map). Wide maps: row segments copied with their zero ends. */
static void im2col_wide(const conv_plan *p, const float *x, int64_t b0, int64_t cnt, float *col) {
    const int64_t ld = cnt * p->PQ;
    const int Q = p->Q, st = p->stride;
    for (int c = 0; c < p->C; c++)
        for (int r = 0; r < p->R; r++)
            for (int s = 0; s < p->S; s++) {
                float *row = col + ((int64_t)(c * p->R + r) * p->S + s) * ld;
                const int dx = s - p->pad;
                int lo, hi;
                conv_span(dx, st, p->W, Q, &lo, &hi);
                for (int64_t b = 0; b < cnt; b++) {
                    const float *plane = x + ((b0 + b) * p->C + c) * p->HW;
                    for (int oy = 0; oy < p->P; oy++) {
                        float *o = row + b * p->PQ + (int64_t)oy * Q;
                        const int iy = oy * st + r - p->pad;
                        if (iy < 0 || iy >= p->H) {
                            memset(o, 0, (size_t)Q * sizeof(float));
                            continue;
                        }
                        const float *in = plane + (int64_t)iy * p->W;
                        for (int ox = 0; ox < lo; ox++) o[ox] = 0.0f;
                        if (st == 1)
                            memcpy(o + lo, in + lo + dx, (size_t)(hi - lo) * sizeof(float));
                        else
                            for (int ox = lo; ox < hi; ox++) o[ox] = in[ox * st + dx];
                        for (int ox = hi; ox < Q; ox++) o[ox] = 0.0f;
                    }
                }
            }
}

/* The adjoint of im2col_wide, adding: dx[b0 + b, c, iy, ix] += every col
 * entry read from there, in (c, r, s) order. */
static void col2im_add_wide(const conv_plan *p, const float *col, int64_t b0, int64_t cnt,
                            float *dx) {
    const int64_t ld = cnt * p->PQ;
    const int Q = p->Q, st = p->stride;
    for (int c = 0; c < p->C; c++)
        for (int r = 0; r < p->R; r++)
            for (int s = 0; s < p->S; s++) {
                const float *row = col + ((int64_t)(c * p->R + r) * p->S + s) * ld;
                const int dxo = s - p->pad;
                int lo, hi;
                conv_span(dxo, st, p->W, Q, &lo, &hi);
                for (int64_t b = 0; b < cnt; b++) {
                    float *plane = dx + ((b0 + b) * p->C + c) * p->HW;
                    for (int oy = 0; oy < p->P; oy++) {
                        const int iy = oy * st + r - p->pad;
                        if (iy < 0 || iy >= p->H) continue;
                        const float *o = row + b * p->PQ + (int64_t)oy * Q;
                        float *in = plane + (int64_t)iy * p->W;
                        if (st == 1)
                            for (int ox = lo; ox < hi; ox++) in[ox + dxo] += o[ox];
                        else
                            for (int ox = lo; ox < hi; ox++) in[ox * st + dxo] += o[ox];
                    }
                }
            }
}

/* Narrow maps (4 x 4 patches, 1 x 1 maps): row segments of a few values
 * would cost a call and a few branches each, so every plane is first copied
 * into a zero-bordered PH x PW buffer, from which each (r, s) row of the
 * columns is P rows of Q values without bounds checks; with stride 1 and
 * Q <= 8 a case of its own, a constant Q the compiler turns into a few
 * vector moves (this halved the 4 x 4 im2col). */
#define CONV_ROWS(QC, body)                                                                        \
    case QC:                                                                                       \
        for (int oy = 0; oy < P; oy++)                                                             \
            for (int ox = 0; ox < QC; ox++) body;                                                  \
        break;

/* o[oy Q + ox] = src[oy st PW + ox st] */
static inline void narrow_gather(float *o, const float *src, int P, int Q, int PW, int st) {
    if (st == 1) {
        switch (Q) {
            CONV_ROWS(1, o[oy * 1 + ox] = src[oy * PW + ox])
            CONV_ROWS(2, o[oy * 2 + ox] = src[oy * PW + ox])
            CONV_ROWS(3, o[oy * 3 + ox] = src[oy * PW + ox])
            CONV_ROWS(4, o[oy * 4 + ox] = src[oy * PW + ox])
            CONV_ROWS(5, o[oy * 5 + ox] = src[oy * PW + ox])
            CONV_ROWS(6, o[oy * 6 + ox] = src[oy * PW + ox])
            CONV_ROWS(7, o[oy * 7 + ox] = src[oy * PW + ox])
            CONV_ROWS(8, o[oy * 8 + ox] = src[oy * PW + ox])
        default:
            for (int oy = 0; oy < P; oy++)
                for (int ox = 0; ox < Q; ox++) o[oy * Q + ox] = src[oy * PW + ox];
        }
        return;
    }
    for (int oy = 0; oy < P; oy++)
        for (int ox = 0; ox < Q; ox++) o[oy * Q + ox] = src[oy * st * PW + ox * st];
}

/* The adjoint: dst[oy st PW + ox st] += o[oy Q + ox] */
static inline void narrow_scatter_add(const float *o, float *dst, int P, int Q, int PW, int st) {
    if (st == 1) {
        switch (Q) {
            CONV_ROWS(1, dst[oy * PW + ox] += o[oy * 1 + ox])
            CONV_ROWS(2, dst[oy * PW + ox] += o[oy * 2 + ox])
            CONV_ROWS(3, dst[oy * PW + ox] += o[oy * 3 + ox])
            CONV_ROWS(4, dst[oy * PW + ox] += o[oy * 4 + ox])
            CONV_ROWS(5, dst[oy * PW + ox] += o[oy * 5 + ox])
            CONV_ROWS(6, dst[oy * PW + ox] += o[oy * 6 + ox])
            CONV_ROWS(7, dst[oy * PW + ox] += o[oy * 7 + ox])
            CONV_ROWS(8, dst[oy * PW + ox] += o[oy * 8 + ox])
        default:
            for (int oy = 0; oy < P; oy++)
                for (int ox = 0; ox < Q; ox++) dst[oy * PW + ox] += o[oy * Q + ox];
        }
        return;
    }
    for (int oy = 0; oy < P; oy++)
        for (int ox = 0; ox < Q; ox++) dst[oy * st * PW + ox * st] += o[oy * Q + ox];
}
#undef CONV_ROWS

static void im2col_narrow(const conv_plan *p, const float *x, int64_t b0, int64_t cnt,
                          float *bordered, float *col) {
    const int64_t ld = cnt * p->PQ;
    memset(bordered, 0, (size_t)p->PH * p->PW * sizeof(float)); /* the border stays 0 */
    for (int c = 0; c < p->C; c++)
        for (int64_t b = 0; b < cnt; b++) {
            const float *plane = x + ((b0 + b) * p->C + c) * p->HW;
            for (int iy = 0; iy < p->H; iy++)
                memcpy(bordered + (int64_t)(iy + p->pad) * p->PW + p->pad,
                       plane + (int64_t)iy * p->W, (size_t)p->W * sizeof(float));
            for (int r = 0; r < p->R; r++)
                for (int s = 0; s < p->S; s++)
                    narrow_gather(col + (c * p->RS + r * p->S + s) * ld + b * p->PQ,
                                  bordered + r * p->PW + s, p->P, p->Q, p->PW, p->stride);
        }
}

static void col2im_add_narrow(const conv_plan *p, const float *col, int64_t b0, int64_t cnt,
                              float *bordered, float *dx) {
    const int64_t ld = cnt * p->PQ;
    for (int c = 0; c < p->C; c++)
        for (int64_t b = 0; b < cnt; b++) {
            memset(bordered, 0, (size_t)p->PH * p->PW * sizeof(float));
            for (int r = 0; r < p->R; r++)
                for (int s = 0; s < p->S; s++)
                    narrow_scatter_add(col + (c * p->RS + r * p->S + s) * ld + b * p->PQ,
                                       bordered + r * p->PW + s, p->P, p->Q, p->PW, p->stride);
            float *plane = dx + ((b0 + b) * p->C + c) * p->HW;
            for (int iy = 0; iy < p->H; iy++) {
                const float *src = bordered + (int64_t)(iy + p->pad) * p->PW + p->pad;
                float *dst = plane + (int64_t)iy * p->W;
                for (int ix = 0; ix < p->W; ix++) dst[ix] += src[ix];
            }
        }
}

/* One call's workspace: each thread's area holds the columns (or their
 * gradient), a K x columns matrix (the GEMM's output or the gathered dy) and,
 * for narrow maps, the bordered plane; after the threads' areas come
 * `shared` floats (the weight gradient's partial sums). */
typedef struct conv_work {
    float *scratch;
    size_t col_size, mat_size, per_thread, total;
} conv_work;

/* Per-thread sizes rounded to 16 floats (64 bytes). */
static size_t round16(int64_t floats) { return (size_t)((floats + 15) / 16 * 16); }

static size_t conv_work_bytes(const conv_work *wk) {
    return (wk->total * sizeof(float) + 63) / 64 * 64;
}

/* Returns 0 when the memory is not there. */
static int conv_work_make(pmoe_backend *be, const conv_plan *p, int need_col, int need_mat,
                          size_t shared, conv_work *wk) {
    const int64_t cols = p->per_task * p->PQ; /* columns of a full task */
    wk->col_size = need_col ? round16(p->CRS * cols) : 0;
    wk->mat_size = need_mat ? round16(p->K * cols) : 0;
    const size_t plane = need_col && p->narrow ? round16((int64_t)p->PH * p->PW) : 0;
    wk->per_thread = wk->col_size + wk->mat_size + plane;
    wk->total = wk->per_thread * (size_t)omp_get_max_threads() + shared;
    wk->scratch = NULL;
    if (!wk->total) return 1;
    if (!(wk->scratch = aligned_alloc(64, conv_work_bytes(wk)))) return 0;
    if (be) pmoe_mem_note_alloc(&be->mem, conv_work_bytes(wk));
    return 1;
}

static void conv_work_free(pmoe_backend *be, conv_work *wk) {
    if (wk->scratch && be) pmoe_mem_note_free(&be->mem, conv_work_bytes(wk));
    free(wk->scratch);
}

/* This thread's columns, matrix and bordered plane. */
static float *conv_area(const conv_work *wk) {
    return wk->scratch ? wk->scratch + (size_t)omp_get_thread_num() * wk->per_thread : NULL;
}

/* The columns of samples b0..b0+cnt-1 into this thread's area (CRS x cnt PQ);
 * for 1x1, stride 1, no padding they are the planes side by side. */
static void im2col(const conv_plan *p, const conv_work *wk, float *area, const float *x, int64_t b0,
                   int64_t cnt) {
    if (p->identity) {
        for (int c = 0; c < p->C; c++)
            for (int64_t b = 0; b < cnt; b++)
                memcpy(area + (c * cnt + b) * p->PQ, x + ((b0 + b) * p->C + c) * p->HW,
                       (size_t)p->HW * sizeof(float));
    } else if (p->narrow) im2col_narrow(p, x, b0, cnt, area + wk->col_size + wk->mat_size, area);
    else im2col_wide(p, x, b0, cnt, area);
}

static void col2im_add(const conv_plan *p, const conv_work *wk, float *area, int64_t b0,
                       int64_t cnt, float *dx) {
    if (p->identity) {
        for (int c = 0; c < p->C; c++)
            for (int64_t b = 0; b < cnt; b++) {
                const float *src = area + (c * cnt + b) * p->PQ;
                float *dst = dx + ((b0 + b) * p->C + c) * p->HW;
                for (int64_t i = 0; i < p->HW; i++) dst[i] += src[i];
            }
    } else if (p->narrow)
        col2im_add_narrow(p, area, b0, cnt, area + wk->col_size + wk->mat_size, dx);
    else col2im_add_wide(p, area, b0, cnt, dx);
}

/* Offsets of x[b, c, iy, ix], y[b, k, oy, ox] and w[k, c, r, s]. */
static inline int64_t x_at(const conv_plan *p, int64_t b, int c, int iy, int ix) {
    return ((b * p->C + c) * p->H + iy) * (int64_t)p->W + ix;
}
static inline int64_t y_at(const conv_plan *p, int64_t b, int k, int oy, int ox) {
    return ((b * p->K + k) * p->P + oy) * (int64_t)p->Q + ox;
}
static inline int64_t w_at(const conv_plan *p, int k, int c, int r, int s) {
    return (((int64_t)k * p->C + c) * p->R + r) * p->S + s;
}

/* The fallback without workspace: each output one double sum; dx one
 * sample per thread, added to in a fixed order. */
static void conv_direct_forward(const conv_plan *p, const float *x, const float *w,
                                const float *bias, float *y) {
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t b = 0; b < p->B; b++)
        for (int k = 0; k < p->K; k++)
            for (int oy = 0; oy < p->P; oy++)
                for (int ox = 0; ox < p->Q; ox++) {
                    double acc = bias ? bias[k] : 0.0;
                    for (int c = 0; c < p->C; c++)
                        for (int r = 0; r < p->R; r++)
                            for (int s = 0; s < p->S; s++) {
                                const int iy = oy * p->stride + r - p->pad;
                                const int ix = ox * p->stride + s - p->pad;
                                if (iy < 0 || iy >= p->H || ix < 0 || ix >= p->W) continue;
                                acc += (double)w[w_at(p, k, c, r, s)] * x[x_at(p, b, c, iy, ix)];
                            }
                    y[y_at(p, b, k, oy, ox)] = (float)acc;
                }
}

static void conv_direct_backward(const conv_plan *p, const float *x, const float *w,
                                 const float *dy, float *dx, float *dw) {
    if (dx) {
#pragma omp parallel for schedule(static)
        for (int64_t b = 0; b < p->B; b++)
            for (int k = 0; k < p->K; k++)
                for (int c = 0; c < p->C; c++)
                    for (int r = 0; r < p->R; r++)
                        for (int s = 0; s < p->S; s++)
                            for (int oy = 0; oy < p->P; oy++)
                                for (int ox = 0; ox < p->Q; ox++) {
                                    const int iy = oy * p->stride + r - p->pad;
                                    const int ix = ox * p->stride + s - p->pad;
                                    if (iy < 0 || iy >= p->H || ix < 0 || ix >= p->W) continue;
                                    dx[x_at(p, b, c, iy, ix)] += w[w_at(p, k, c, r, s)] *
                                                                 dy[y_at(p, b, k, oy, ox)];
                                }
    }
    if (dw) {
#pragma omp parallel for collapse(2) schedule(static)
        for (int k = 0; k < p->K; k++)
            for (int c = 0; c < p->C; c++)
                for (int r = 0; r < p->R; r++)
                    for (int s = 0; s < p->S; s++) {
                        double acc = 0.0;
                        for (int64_t b = 0; b < p->B; b++)
                            for (int oy = 0; oy < p->P; oy++)
                                for (int ox = 0; ox < p->Q; ox++) {
                                    const int iy = oy * p->stride + r - p->pad;
                                    const int ix = ox * p->stride + s - p->pad;
                                    if (iy < 0 || iy >= p->H || ix < 0 || ix >= p->W) continue;
                                    acc += (double)dy[y_at(p, b, k, oy, ox)] *
                                           x[x_at(p, b, c, iy, ix)];
                                }
                        dw[w_at(p, k, c, r, s)] = (float)acc;
                    }
    }
}

/* A 1x1 stride-1 convolution of 1x1 maps (the pMoE layer's 1x1 experts on
 * 1x1 patches) is one matrix product over the batch: y (B x K) = x (B x C)
 * w^T. cpu_gemm cuts it into fixed row blocks, so results do not depend on
 * the thread count. */
static int conv_is_product(const conv_plan *p) { return p->identity && p->HW == 1; }

void cpu_conv2d_forward(pmoe_backend *be, const pmoe_conv_shape *s, const float *x, const float *w,
                        const float *bias, float *y) {
    conv_plan p;
    if (!conv_plan_make(s, &p)) return;
    if (conv_is_product(&p)) {
        cpu_gemm(be, 0, 1, p.B, p.K, p.C, 1.0f, x, p.C, 0, w, p.C, 0, 0.0f, y, p.K, 0, 1);
        if (bias) cpu_channel_bias_forward(be, p.B, p.K, 1, bias, y);
        return;
    }
    /* x[b] is the column matrix of a lone 1x1 sample; one sample's output goes straight to y */
    const int need_col = !(p.identity && p.per_task == 1), need_mat = p.per_task > 1;
    conv_work wk;
    if (!conv_work_make(be, &p, need_col, need_mat, 0, &wk)) {
        conv_direct_forward(&p, x, w, bias, y);
        return;
    }
#pragma omp parallel for schedule(static) if (p.tasks > 1 && p.flops > 2e5)
    for (int64_t task = 0; task < p.tasks; task++) {
        const int64_t b0 = task * p.per_task;
        const int64_t cnt = p.B - b0 < p.per_task ? p.B - b0 : p.per_task, n = cnt * p.PQ;
        float *area = conv_area(&wk);
        const float *cm = x + b0 * p.C * p.HW; /* columns: CRS x n */
        if (need_col) {
            im2col(&p, &wk, area, x, b0, cnt);
            cm = area;
        }
        /* ym (K x n) = w (K x CRS) cm (CRS x n) */
        float *ym = cnt == 1 ? y + b0 * p.K * p.PQ : area + wk.col_size;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, p.K, (blasint)n, (blasint)p.CRS,
                    1.0f, w, (blasint)p.CRS, cm, (blasint)n, 0.0f, ym, (blasint)n);
        /* then y[b0 + b, k, :] = ym[k, b PQ ..] + bias[k] */
        for (int64_t b = 0; b < cnt; b++)
            for (int k = 0; k < p.K; k++) {
                float *dst = y + ((b0 + b) * p.K + k) * p.PQ;
                const float *src = ym + (int64_t)k * n + b * p.PQ;
                const float add = bias ? bias[k] : 0.0f;
                if (cnt == 1) {
                    if (bias)
                        for (int64_t i = 0; i < p.PQ; i++) dst[i] += add;
                } else if (bias) {
                    for (int64_t i = 0; i < p.PQ; i++) dst[i] = src[i] + add;
                } else {
                    memcpy(dst, src, (size_t)p.PQ * sizeof(float));
                }
            }
    }
    conv_work_free(be, &wk);
}

/* dyt (K x cnt PQ) = dy of samples b0.. with the samples side by side. */
static void gather_dy(const conv_plan *p, const float *dy, int64_t b0, int64_t cnt, float *dyt) {
    const int64_t n = cnt * p->PQ;
    for (int64_t b = 0; b < cnt; b++)
        for (int k = 0; k < p->K; k++)
            memcpy(dyt + (int64_t)k * n + b * p->PQ, dy + ((b0 + b) * p->K + k) * p->PQ,
                   (size_t)p->PQ * sizeof(float));
}

void cpu_conv2d_backward(pmoe_backend *be, const pmoe_conv_shape *s, const float *x, const float *w,
                         const float *dy, float *dx, float *dw, float *dbias) {
    conv_plan p;
    if (!conv_plan_make(s, &p)) { /* no outputs: the parameter gradients are 0 */
        const int K = s->out_channels > 0 ? s->out_channels : 0;
        if (dw)
            memset(dw, 0, (size_t)K * s->in_channels * s->kernel_h * s->kernel_w * sizeof(float));
        if (dbias) memset(dbias, 0, (size_t)K * sizeof(float));
        return;
    }
    if (dbias) {
#pragma omp parallel for schedule(static) if (p.K > 1 && p.B * p.K * p.PQ > 65536)
        for (int k = 0; k < p.K; k++) {
            double acc = 0.0;
            for (int64_t b = 0; b < p.B; b++) {
                const float *row = dy + (b * p.K + k) * p.PQ;
                for (int64_t i = 0; i < p.PQ; i++) acc += row[i];
            }
            dbias[k] = (float)acc;
        }
    }
    if (!dx && !dw) return;
    if (conv_is_product(&p)) { /* dx += dy w; dw = dy^T x */
        if (dx) cpu_gemm(be, 0, 0, p.B, p.C, p.K, 1.0f, dy, p.K, 0, w, p.C, 0, 1.0f, dx, p.C, 0, 1);
        if (dw) cpu_gemm(be, 1, 0, p.K, p.C, p.B, 1.0f, dy, p.K, 0, x, p.C, 0, 0.0f, dw, p.C, 0, 1);
        return;
    }

    /* The weight gradient's fixed groups of consecutive tasks. */
    const int64_t KCRS = p.K * p.CRS;
    int64_t groups = p.tasks < CONV_DW_GROUPS ? p.tasks : CONV_DW_GROUPS;
    if (groups * KCRS > CONV_DW_FLOATS)
        groups = CONV_DW_FLOATS / KCRS > 1 ? CONV_DW_FLOATS / KCRS : 1;
    if (!dw) groups = 1;
    const int need_col = !(p.identity && p.per_task == 1), need_mat = p.per_task > 1;
    conv_work wk;
    const size_t partial_size = groups > 1 ? (size_t)(groups * KCRS) : 0;
    if (!conv_work_make(be, &p, need_col, need_mat, partial_size, &wk)) {
        conv_direct_backward(&p, x, w, dy, dx, dw);
        return;
    }
    const int parallel = p.tasks > 1 && p.flops > 2e5;

    if (dx) {
#pragma omp parallel for schedule(static) if (parallel)
        for (int64_t task = 0; task < p.tasks; task++) {
            const int64_t b0 = task * p.per_task;
            const int64_t cnt = p.B - b0 < p.per_task ? p.B - b0 : p.per_task, n = cnt * p.PQ;
            float *area = conv_area(&wk);
            const float *dym = dy + b0 * p.K * p.PQ; /* K x n */
            if (cnt > 1) {
                gather_dy(&p, dy, b0, cnt, area + wk.col_size);
                dym = area + wk.col_size;
            }
            if (!need_col) { /* dx[b0] (C x HW) += w^T (C x K) dy[b0] (K x HW) */
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, p.C, (blasint)n, p.K, 1.0f, w,
                            (blasint)p.CRS, dym, (blasint)n, 1.0f, dx + b0 * p.C * p.HW,
                            (blasint)n);
                continue;
            }
            /* dcol (CRS x n) = w^T (CRS x K) dy (K x n), then folded back onto dx */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (blasint)p.CRS, (blasint)n, p.K,
                        1.0f, w, (blasint)p.CRS, dym, (blasint)n, 0.0f, area, (blasint)n);
            col2im_add(&p, &wk, area, b0, cnt, dx);
        }
    }

    if (dw) {
        float *partial = wk.scratch ? wk.scratch + wk.total - partial_size : NULL;
        /* group g sums tasks [g T / G, (g + 1) T / G) in order into its own K x CRS */
#pragma omp parallel for schedule(static) if (parallel && groups > 1)
        for (int64_t g = 0; g < groups; g++) {
            const int64_t t0 = g * p.tasks / groups, t1 = (g + 1) * p.tasks / groups;
            float *acc = groups > 1 ? partial + g * KCRS : dw;
            float *area = conv_area(&wk);
            for (int64_t task = t0; task < t1; task++) {
                const int64_t b0 = task * p.per_task;
                const int64_t cnt = p.B - b0 < p.per_task ? p.B - b0 : p.per_task, n = cnt * p.PQ;
                const float *dym = dy + b0 * p.K * p.PQ, *cm = x + b0 * p.C * p.HW;
                if (cnt > 1) {
                    gather_dy(&p, dy, b0, cnt, area + wk.col_size);
                    dym = area + wk.col_size;
                }
                if (need_col) {
                    im2col(&p, &wk, area, x, b0, cnt);
                    cm = area;
                }
                /* acc (K x CRS) (+)= dy (K x n) cm^T (n x CRS) */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, p.K, (blasint)p.CRS,
                            (blasint)n, 1.0f, dym, (blasint)n, cm, (blasint)n,
                            task == t0 ? 0.0f : 1.0f, acc, (blasint)p.CRS);
            }
        }
        if (groups > 1) {
#pragma omp parallel for schedule(static) if (KCRS > 16384)
            for (int64_t i = 0; i < KCRS; i++) {
                double sum = 0.0;
                for (int64_t g = 0; g < groups; g++) sum += partial[g * KCRS + i];
                dw[i] = (float)sum;
            }
        }
    }
    conv_work_free(be, &wk);
}
