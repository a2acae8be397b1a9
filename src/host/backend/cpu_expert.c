/* cpu_expert.c: the CPU twins of the expert layer, the combine with the
 * fixed output weights, and the losses.
 *
 * The experts are k independent GEMMs over their B*l dispatched rows. The
 * combine and losses are small loops parallel over their outputs, each sum
 * in a fixed order, so the result is the same for any thread count. */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
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

/* The fused forms never write the k x B l x d copy of the patches (three
 * times the patches' size on the mosaic): each expert reads its rows straight
 * from the patches through selected. With h = m / k small (5 on the mosaic)
 * an expert's GEMM is too thin for OpenBLAS's kernels, which vectorise over
 * rows and broadcast the h columns, so there are 5 FMAs per load: on CPUs
 * with AVX-512 the fused ops run their own kernels instead, vectorised along
 * d, 4 rows by up to 6 units (forward) or 64 columns by up to 6 units
 * (backward) at a time, 20 or more FMAs per 9 loads (2.3x OpenBLAS on the
 * mosaic's experts). Elsewhere (or with cpu_expert_gathered_simd(0)) they
 * gather rows into a per-thread buffer that stays in cache and call OpenBLAS:
 * the forward in blocks of GATHER_ROWS rows, the very calls cpu_expert_forward
 * makes (bit-identical), the backward per slab of GATHER_COLS columns,
 * accumulating over the row blocks. Every sum runs in an order fixed by the
 * shapes, never by the thread count; both paths agree with the unfused ops to
 * rounding. The buffers are noted in be->mem while they live. */
enum { GATHER_ROWS = 64, GATHER_COLS = 512 };

/* nthreads buffers of `per_thread` floats, 64-byte aligned, or NULL. */
static float *gather_scratch(pmoe_backend *be, size_t per_thread, int nthreads, size_t *bytes) {
    per_thread = (per_thread + 15) / 16 * 16;
    *bytes = per_thread * (size_t)nthreads * sizeof(float);
    float *p = aligned_alloc(64, *bytes);
    if (p && be) pmoe_mem_note_alloc(&be->mem, *bytes);
    return p;
}

static void gather_scratch_free(pmoe_backend *be, float *p, size_t bytes) {
    if (p && be) pmoe_mem_note_free(&be->mem, bytes);
    free(p);
}

/* The patch row of row r (= b l + t) of expert e. */
static inline const float *gathered_row(const pmoe_route_shape *s, const float *patches,
                                        const int32_t *selected, int e, int64_t r) {
    const int64_t b = r / s->topl, t = r % s->topl;
    const int32_t j = selected[(b * s->experts + e) * (int64_t)s->topl + t];
    return patches + (b * s->patches + j) * (int64_t)s->dim;
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define PMOE_GATHERED_SIMD 1
#define AVX512 __attribute__((target("avx512f")))

/* o[i * ldo + u] = <x_i, w_u> for 4 rows x_i and U units w_u (rows of w, d apart).
 * Written so that, with U a constant, the 4 U accumulators stay in registers:
 * unmasked main loop, one masked tail. */
#define DOT_STEP(load)                                                                       \
    do {                                                                                     \
        const __m512 v0 = load(x[0] + c), v1 = load(x[1] + c), v2 = load(x[2] + c),          \
                     v3 = load(x[3] + c);                                                    \
        for (int u = 0; u < U; u++) {                                                        \
            const __m512 wv = load(w + (int64_t)u * d + c);                                  \
            a0[u] = _mm512_fmadd_ps(v0, wv, a0[u]);                                          \
            a1[u] = _mm512_fmadd_ps(v1, wv, a1[u]);                                          \
            a2[u] = _mm512_fmadd_ps(v2, wv, a2[u]);                                          \
            a3[u] = _mm512_fmadd_ps(v3, wv, a3[u]);                                          \
        }                                                                                    \
    } while (0)

AVX512 __attribute__((always_inline)) static inline void dot_rows4(const float *const *x,
                                                                   const float *w, int d, int U,
                                                                   float *o, int ldo) {
    __m512 a0[6], a1[6], a2[6], a3[6];
    for (int u = 0; u < U; u++) a0[u] = a1[u] = a2[u] = a3[u] = _mm512_setzero_ps();
    int c = 0;
#define LOAD_ALL(p) _mm512_loadu_ps(p)
    for (; c + 16 <= d; c += 16) DOT_STEP(LOAD_ALL);
    if (c < d) {
        const __mmask16 m = (__mmask16)((1u << (d - c)) - 1);
#define LOAD_TAIL(p) _mm512_maskz_loadu_ps(m, p)
        DOT_STEP(LOAD_TAIL);
    }
    for (int u = 0; u < U; u++) {
        o[u] = _mm512_reduce_add_ps(a0[u]);
        o[ldo + u] = _mm512_reduce_add_ps(a1[u]);
        o[2 * ldo + u] = _mm512_reduce_add_ps(a2[u]);
        o[3 * ldo + u] = _mm512_reduce_add_ps(a3[u]);
    }
#undef LOAD_ALL
#undef LOAD_TAIL
}
#undef DOT_STEP

/* The same with U known at compile time, so the accumulators live in registers. */
AVX512 static void dot_rows4_any(const float *const *x, const float *w, int d, int U, float *o) {
    switch (U) {
    case 1: dot_rows4(x, w, d, 1, o, 6); break;
    case 2: dot_rows4(x, w, d, 2, o, 6); break;
    case 3: dot_rows4(x, w, d, 3, o, 6); break;
    case 4: dot_rows4(x, w, d, 4, o, 6); break;
    case 5: dot_rows4(x, w, d, 5, o, 6); break;
    default: dot_rows4(x, w, d, 6, o, 6); break;
    }
}

/* hidden rows r0 .. r0 + len of expert e (before the ReLU) */
AVX512 static void forward_rows_simd(const pmoe_route_shape *s, const float *patches,
                                     const int32_t *selected, int e, int64_t r0, int64_t len,
                                     const float *w, int h, float *out) {
    float tile[4 * 6];
    for (int64_t i = 0; i < len; i += 4) {
        const int rows = len - i < 4 ? (int)(len - i) : 4;
        const float *x[4];
        for (int q = 0; q < 4; q++) /* a short last group repeats its first row */
            x[q] = gathered_row(s, patches, selected, e, r0 + i + (q < rows ? q : 0));
        for (int u0 = 0; u0 < h; u0 += 6) {
            const int U = h - u0 < 6 ? h - u0 : 6;
            dot_rows4_any(x, w + (int64_t)u0 * s->dim, s->dim, U, tile);
            for (int q = 0; q < rows; q++)
                for (int u = 0; u < U; u++) out[(i + q) * h + u0 + u] = tile[q * 6 + u];
        }
    }
}

/* dw[u * ldw + c] = sum over expert e's rows r (in order) of g[r h + u] x_r[c0 + c],
 * for U units and cols <= 64 columns. */
/* dw[u * ldw + c] (+)= sum over expert e's rows r of samples b0 .. b1 (in order) of
 * g[r h + u] x_r[c0 + c], for U units and cols <= 64 columns; adds to dw unless b0 = 0. */
AVX512 __attribute__((always_inline)) static inline void outer_cols64(
    const pmoe_route_shape *s, const float *patches, const int32_t *selected, int e, int64_t b0,
    int64_t b1, int64_t c0, int cols, const float *g, int h, int U, float *dw, int64_t ldw) {
    __m512 a0[6], a1[6], a2[6], a3[6];
    __mmask16 m[4];
    for (int j = 0; j < 4; j++) {
        const int left = cols - 16 * j;
        m[j] = left >= 16 ? (__mmask16)0xFFFF : left <= 0 ? (__mmask16)0 : (__mmask16)((1u << left) - 1);
    }
    for (int u = 0; u < U; u++) {
        if (b0 == 0) {
            a0[u] = a1[u] = a2[u] = a3[u] = _mm512_setzero_ps();
        } else {
            a0[u] = _mm512_maskz_loadu_ps(m[0], dw + u * ldw);
            a1[u] = _mm512_maskz_loadu_ps(m[1], dw + u * ldw + 16);
            a2[u] = _mm512_maskz_loadu_ps(m[2], dw + u * ldw + 32);
            a3[u] = _mm512_maskz_loadu_ps(m[3], dw + u * ldw + 48);
        }
    }
    const int l = s->topl, k = s->experts;
    const int64_t n = s->patches, d = s->dim;
    for (int64_t b = b0, r = b0 * l; b < b1; b++)
        for (int t = 0; t < l; t++, r++) {
            const float *x = patches + (b * n + selected[(b * k + e) * (int64_t)l + t]) * d + c0;
            const __m512 v0 = _mm512_maskz_loadu_ps(m[0], x), v1 = _mm512_maskz_loadu_ps(m[1], x + 16);
            const __m512 v2 = _mm512_maskz_loadu_ps(m[2], x + 32), v3 = _mm512_maskz_loadu_ps(m[3], x + 48);
            for (int u = 0; u < U; u++) {
                const __m512 gu = _mm512_set1_ps(g[r * h + u]);
                a0[u] = _mm512_fmadd_ps(gu, v0, a0[u]);
                a1[u] = _mm512_fmadd_ps(gu, v1, a1[u]);
                a2[u] = _mm512_fmadd_ps(gu, v2, a2[u]);
                a3[u] = _mm512_fmadd_ps(gu, v3, a3[u]);
            }
        }
    for (int u = 0; u < U; u++) {
        _mm512_mask_storeu_ps(dw + u * ldw, m[0], a0[u]);
        _mm512_mask_storeu_ps(dw + u * ldw + 16, m[1], a1[u]);
        _mm512_mask_storeu_ps(dw + u * ldw + 32, m[2], a2[u]);
        _mm512_mask_storeu_ps(dw + u * ldw + 48, m[3], a3[u]);
    }
}

AVX512 static void backward_cols_simd(const pmoe_route_shape *s, const float *patches,
                                      const int32_t *selected, int e, int64_t b0, int64_t b1,
                                      int64_t c0, int cols, const float *dpre, int h, float *dw) {
    for (int u0 = 0; u0 < h; u0 += 6) {
        const int U = h - u0 < 6 ? h - u0 : 6;
        const float *g = dpre + u0;
        float *out = dw + (int64_t)u0 * s->dim + c0;
        switch (U) {
        case 1: outer_cols64(s, patches, selected, e, b0, b1, c0, cols, g, h, 1, out, s->dim); break;
        case 2: outer_cols64(s, patches, selected, e, b0, b1, c0, cols, g, h, 2, out, s->dim); break;
        case 3: outer_cols64(s, patches, selected, e, b0, b1, c0, cols, g, h, 3, out, s->dim); break;
        case 4: outer_cols64(s, patches, selected, e, b0, b1, c0, cols, g, h, 4, out, s->dim); break;
        case 5: outer_cols64(s, patches, selected, e, b0, b1, c0, cols, g, h, 5, out, s->dim); break;
        default: outer_cols64(s, patches, selected, e, b0, b1, c0, cols, g, h, 6, out, s->dim); break;
        }
    }
}
#else
#define PMOE_GATHERED_SIMD 0
#endif

/* -1: not decided yet; then whether the AVX-512 kernels run. */
static int use_simd = -1;

int cpu_expert_gathered_simd(int on) {
    if (on >= 0) {
#if PMOE_GATHERED_SIMD
        __builtin_cpu_init();
        use_simd = on && __builtin_cpu_supports("avx512f");
#else
        use_simd = 0;
#endif
    }
    return use_simd;
}

static int simd_on(void) {
    if (use_simd < 0) cpu_expert_gathered_simd(1);
    return use_simd;
}

void cpu_expert_forward_gathered(pmoe_backend *be, const pmoe_route_shape *s, int hidden,
                                 const float *patches, const int32_t *selected,
                                 const float *expert_w, float *hidden_out) {
    const int k = s->experts, d = s->dim, h = hidden;
    const int64_t rows = s->batch * s->topl, blocks = (rows + GATHER_ROWS - 1) / GATHER_ROWS;
    /* block-major, so neighbouring tasks (one thread's share) read the same samples */
    const int64_t tasks = blocks * k;
    const int simd = simd_on(), nthreads = omp_get_max_threads();
    size_t scratch_bytes = 0;
    float *scratch = simd ? NULL : gather_scratch(be, (size_t)GATHER_ROWS * d, nthreads, &scratch_bytes);
    const size_t stride = scratch ? scratch_bytes / sizeof(float) / (size_t)nthreads : 0;
    const double work = (double)rows * h * d * k;
#pragma omp parallel for schedule(static) if (tasks > 1 && work > 2e5)
    for (int64_t task = 0; task < tasks; task++) {
        const int e = (int)(task % k);
        const int64_t r0 = (task / k) * GATHER_ROWS;
        const int64_t len = rows - r0 < GATHER_ROWS ? rows - r0 : GATHER_ROWS;
        const float *w = expert_w + (int64_t)e * h * d;
        float *out = hidden_out + ((int64_t)e * rows + r0) * h;
        if (simd) {
#if PMOE_GATHERED_SIMD
            forward_rows_simd(s, patches, selected, e, r0, len, w, h, out);
#endif
        } else if (scratch) {
            float *buf = scratch + (size_t)omp_get_thread_num() * stride;
            for (int64_t i = 0; i < len; i++)
                memcpy(buf + i * d, gathered_row(s, patches, selected, e, r0 + i),
                       (size_t)d * sizeof(float));
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)len, h, d, 1.0f, buf,
                        d, w, d, 0.0f, out, h);
        } else { /* no memory for the buffer: one product per row, in place */
            for (int64_t i = 0; i < len; i++)
                cblas_sgemv(CblasRowMajor, CblasNoTrans, h, d, 1.0f, w, d,
                            gathered_row(s, patches, selected, e, r0 + i), 1, 0.0f, out + i * h, 1);
        }
        for (int64_t i = 0; i < len * h; i++)
            if (!(out[i] > 0.0f)) out[i] = 0.0f;
    }
    gather_scratch_free(be, scratch, scratch_bytes);
}

void cpu_expert_backward_gathered(pmoe_backend *be, const pmoe_route_shape *s, int hidden,
                                  const float *patches, const int32_t *selected,
                                  const float *expert_w, const float *hidden_out, float *dhidden,
                                  float *dexpert_w) {
    const int k = s->experts, d = s->dim, h = hidden;
    const int64_t rows = s->batch * s->topl, total = (int64_t)k * rows * h;
#pragma omp parallel for schedule(static) if (total > 65536)
    for (int64_t i = 0; i < total; i++)
        if (!(hidden_out[i] > 0.0f)) dhidden[i] = 0.0f;
    /* dW_s[:, c0..] (h x w) = sum over rows of dpre[r]^T X[r, c0..], per column slab */
    const int simd = simd_on(), nthreads = omp_get_max_threads();
    const double work = (double)rows * h * d * k;
#if PMOE_GATHERED_SIMD
    if (simd) {
        /* Samples in chunks of about 1 MiB of patches, each chunk's rows added in order
         * to every expert's 64-column slabs: the chunk stays in cache while all k
         * experts read it, and the sums' order depends on the shapes alone. */
        const int64_t per_sample = (int64_t)s->patches * d * (int64_t)sizeof(float);
        const int64_t chunk = per_sample >= (1 << 20) ? 1 : (1 << 20) / per_sample;
        const int64_t slabs = (d + 63) / 64, tasks = slabs * k;
#pragma omp parallel if (tasks > 1 && work > 2e5)
        for (int64_t b0 = 0; b0 < s->batch; b0 += chunk) {
            const int64_t b1 = s->batch - b0 < chunk ? s->batch : b0 + chunk;
#pragma omp for schedule(static)
            for (int64_t task = 0; task < tasks; task++) {
                const int e = (int)(task / slabs);
                const int64_t c0 = (task % slabs) * 64;
                backward_cols_simd(s, patches, selected, e, b0, b1, c0, (int)(d - c0 < 64 ? d - c0 : 64),
                                   dhidden + (int64_t)e * rows * h, h, dexpert_w + (int64_t)e * h * d);
            }
        }
        return;
    }
#endif
    (void)simd;
    const int64_t slabs = (d + GATHER_COLS - 1) / GATHER_COLS, tasks = slabs * k;
    size_t scratch_bytes = 0;
    float *scratch = gather_scratch(be, (size_t)GATHER_ROWS * GATHER_COLS, nthreads, &scratch_bytes);
    const size_t stride = scratch ? scratch_bytes / sizeof(float) / (size_t)nthreads : 0;
#pragma omp parallel for schedule(static) if (tasks > 1 && work > 2e5)
    for (int64_t task = 0; task < tasks; task++) {
        const int e = (int)(task / slabs);
        const int64_t c0 = (task % slabs) * GATHER_COLS;
        const int width = (int)(d - c0 < GATHER_COLS ? d - c0 : GATHER_COLS);
        const float *dpre = dhidden + (int64_t)e * rows * h;
        float *dw = dexpert_w + (int64_t)e * h * d + c0;
        if (!scratch) { /* no memory for the buffer: rank-one updates, row by row */
            for (int u = 0; u < h; u++) memset(dw + (int64_t)u * d, 0, (size_t)width * sizeof(float));
            for (int64_t r = 0; r < rows; r++)
                cblas_sger(CblasRowMajor, h, width, 1.0f, dpre + r * h, 1,
                           gathered_row(s, patches, selected, e, r) + c0, 1, dw, d);
            continue;
        }
        float *buf = scratch + (size_t)omp_get_thread_num() * stride;
        for (int64_t r0 = 0; r0 < rows; r0 += GATHER_ROWS) {
            const int64_t len = rows - r0 < GATHER_ROWS ? rows - r0 : GATHER_ROWS;
            for (int64_t i = 0; i < len; i++)
                memcpy(buf + i * width, gathered_row(s, patches, selected, e, r0 + i) + c0,
                       (size_t)width * sizeof(float));
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, h, width, (blasint)len, 1.0f,
                        dpre + r0 * h, h, buf, width, r0 ? 1.0f : 0.0f, dw, d);
        }
    }
    gather_scratch_free(be, scratch, scratch_bytes);
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
