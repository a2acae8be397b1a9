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

#include "backend/cpu_dot.h"
#include "backend/cpu_ops.h"

void cpu_expert_forward(pmoe_backend *be, int experts, int64_t rows, int dim, int hidden,
                        const float *expert_in, const float *expert_w, float *hidden_out) {
    /* hidden[s] (rows x h) = expert_in[s] (rows x d) W_s^T (d x h) */
    cpu_gemm(be, 0, 1, rows, hidden, dim, 1.0f, expert_in, dim, rows * dim, expert_w, dim,
             (int64_t)hidden * dim, 0.0f, hidden_out, hidden, rows * hidden, experts);
    const int64_t total = (int64_t)experts * rows * hidden;
#pragma omp parallel for schedule(static) if (total > 65536)
    for (int64_t i = 0; i < total; i++)
        hidden_out[i] = cpu_where_positive(hidden_out[i], hidden_out[i], 0.0f);
}

void cpu_expert_backward(pmoe_backend *be, int experts, int64_t rows, int dim, int hidden,
                         const float *expert_in, const float *expert_w, const float *hidden_out,
                         float *dhidden, float *dexpert_w, float *dexpert_in) {
    const int64_t total = (int64_t)experts * rows * hidden;
#pragma omp parallel for schedule(static) if (total > 65536)
    for (int64_t i = 0; i < total; i++)
        dhidden[i] = cpu_where_positive(hidden_out[i], dhidden[i], 0.0f);
    /* dW_s (h x d) = dpre_s^T (h x rows) expert_in[s] (rows x d) */
    cpu_gemm(be, 1, 0, hidden, dim, rows, 1.0f, dhidden, hidden, rows * hidden, expert_in, dim,
             rows * dim, 0.0f, dexpert_w, dim, (int64_t)hidden * dim, experts);
    if (dexpert_in) /* dX_s (rows x d) = dpre_s (rows x h) W_s (h x d) */
        cpu_gemm(be, 0, 0, rows, dim, hidden, 1.0f, dhidden, hidden, rows * hidden, expert_w, dim,
                 (int64_t)hidden * dim, 0.0f, dexpert_in, dim, rows * dim, experts);
}

/* The fused forms never write the k x B l x d copy of the patches (three
 * times the patches' size on the mosaic): each expert reads its rows straight
 * from the patches through selected. With h = m / k small (5 on the mosaic)
 * an expert's GEMM is too thin for OpenBLAS's kernels (see cpu_dot.h): on
 * CPUs with AVX-512 the forward runs cpu_dot_rows4 and the backward its own
 * kernel, 64 columns by up to 6 units at a time, over the batch's two halves
 * apart (each on the threads that routed it; see the op). Elsewhere (or with
 * cpu_simd_kernels(0)) they gather rows into a per-thread buffer that stays
 * in cache and call OpenBLAS: the forward in blocks of GATHER_ROWS rows, the
 * very calls cpu_expert_forward makes (bit-identical), the backward per slab
 * of GATHER_COLS columns, accumulating over the row blocks. The backward can
 * also give the router's weight gradient, as one more unit per expert (see
 * backend.h). Every sum runs in an order fixed by the shapes, never by the
 * thread count; both paths agree with the unfused ops to rounding. The
 * buffers are noted in be->mem while they live. */
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
enum { PREFETCH_ROWS = 10, CHUNK_ROWS = 1024 };

/* out[u][c0 + c] (+)= sum over the rows x_r (in order) of g[r ldg + u]
 * x_r[c0 + c], for U units and cols <= 64 columns, the 4 U accumulators in
 * registers; adds to out unless first. The picked rows lie scattered over
 * the chunk, so the hardware sees no stream to fetch ahead: each row's slab
 * is asked for PREFETCH_ROWS rows early (about 10% faster on the mosaic at
 * batch 256). */
AVX512 __attribute__((always_inline)) static inline void
outer_cols64(const float *const *rows, int64_t count, int64_t c0, int cols, const float *g, int ldg,
             int U, int first, float *const *out) {
    __m512 a0[6], a1[6], a2[6], a3[6];
    __mmask16 m[4];
    for (int j = 0; j < 4; j++) {
        const int left = cols - 16 * j;
        m[j] = left >= 16  ? (__mmask16)0xFFFF
               : left <= 0 ? (__mmask16)0
                           : (__mmask16)((1u << left) - 1);
    }
    for (int u = 0; u < U; u++) {
        if (first) {
            a0[u] = a1[u] = a2[u] = a3[u] = _mm512_setzero_ps();
        } else {
            a0[u] = _mm512_maskz_loadu_ps(m[0], out[u] + c0);
            a1[u] = _mm512_maskz_loadu_ps(m[1], out[u] + c0 + 16);
            a2[u] = _mm512_maskz_loadu_ps(m[2], out[u] + c0 + 32);
            a3[u] = _mm512_maskz_loadu_ps(m[3], out[u] + c0 + 48);
        }
    }
    for (int64_t r = 0; r < count; r++) {
        const float *x = rows[r] + c0;
        if (r + PREFETCH_ROWS < count) {
            const char *ahead = (const char *)(rows[r + PREFETCH_ROWS] + c0);
            for (int line = 0; line < 4; line++) _mm_prefetch(ahead + 64 * line, _MM_HINT_T0);
        }
        const __m512 v0 = _mm512_maskz_loadu_ps(m[0], x), v1 = _mm512_maskz_loadu_ps(m[1], x + 16);
        const __m512 v2 = _mm512_maskz_loadu_ps(m[2], x + 32),
                     v3 = _mm512_maskz_loadu_ps(m[3], x + 48);
        for (int u = 0; u < U; u++) {
            const __m512 gu = _mm512_set1_ps(g[r * ldg + u]);
            a0[u] = _mm512_fmadd_ps(gu, v0, a0[u]);
            a1[u] = _mm512_fmadd_ps(gu, v1, a1[u]);
            a2[u] = _mm512_fmadd_ps(gu, v2, a2[u]);
            a3[u] = _mm512_fmadd_ps(gu, v3, a3[u]);
        }
    }
    for (int u = 0; u < U; u++) {
        _mm512_mask_storeu_ps(out[u] + c0, m[0], a0[u]);
        _mm512_mask_storeu_ps(out[u] + c0 + 16, m[1], a1[u]);
        _mm512_mask_storeu_ps(out[u] + c0 + 32, m[2], a2[u]);
        _mm512_mask_storeu_ps(out[u] + c0 + 48, m[3], a3[u]);
    }
}

/* Columns c0 .. c0 + cols of one expert's unit rows from `count` picked
 * rows: dwe's h rows (d apart) and, when router_row is not NULL, a last one
 * there (g then has h + 1 values per row, the last the router's). */
AVX512 static void backward_cols_simd(const float *const *rows, int64_t count, int64_t d,
                                      int64_t c0, int cols, const float *g, int h, float *dwe,
                                      float *router_row, int first) {
    const int units = h + (router_row != NULL);
    for (int u0 = 0; u0 < units; u0 += 6) {
        const int U = units - u0 < 6 ? units - u0 : 6;
        float *out[6];
        for (int u = 0; u < U; u++) out[u] = u0 + u < h ? dwe + (int64_t)(u0 + u) * d : router_row;
        const float *gu = g + u0;
        switch (U) {
        case 1: outer_cols64(rows, count, c0, cols, gu, units, 1, first, out); break;
        case 2: outer_cols64(rows, count, c0, cols, gu, units, 2, first, out); break;
        case 3: outer_cols64(rows, count, c0, cols, gu, units, 3, first, out); break;
        case 4: outer_cols64(rows, count, c0, cols, gu, units, 4, first, out); break;
        case 5: outer_cols64(rows, count, c0, cols, gu, units, 5, first, out); break;
        default: outer_cols64(rows, count, c0, cols, gu, units, 6, first, out); break;
        }
    }
}
#else
#define PMOE_GATHERED_SIMD 0
#endif

static int simd_on(void) { return PMOE_GATHERED_SIMD && cpu_simd_kernels(-1); }

/* hidden rows r0 .. r0 + len of expert e (before the ReLU) */
static void forward_rows_simd(const pmoe_route_shape *s, const float *patches,
                              const int32_t *selected, int e, int64_t r0, int64_t len,
                              const float *w, int h, float *out) {
    for (int64_t i = 0; i < len; i += 4) {
        const int rows = len - i < 4 ? (int)(len - i) : 4;
        const float *x[4];
        for (int q = 0; q < rows; q++) x[q] = gathered_row(s, patches, selected, e, r0 + i + q);
        cpu_dot_rows4(x, rows, w, h, s->dim, out + i * h, h);
    }
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
    float *scratch = simd ? NULL
                          : gather_scratch(be, (size_t)GATHER_ROWS * d, nthreads, &scratch_bytes);
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
            forward_rows_simd(s, patches, selected, e, r0, len, w, h, out);
        } else if (scratch) {
            float *buf = scratch + (size_t)omp_get_thread_num() * stride;
            for (int64_t i = 0; i < len; i++)
                memcpy(buf + i * d, gathered_row(s, patches, selected, e, r0 + i),
                       (size_t)d * sizeof(float));
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)len, h, d, 1.0f, buf, d,
                        w, d, 0.0f, out, h);
        } else { /* no memory for the buffer: one product per row, in place */
            for (int64_t i = 0; i < len; i++)
                cblas_sgemv(CblasRowMajor, CblasNoTrans, h, d, 1.0f, w, d,
                            gathered_row(s, patches, selected, e, r0 + i), 1, 0.0f, out + i * h, 1);
        }
        for (int64_t i = 0; i < len * h; i++) out[i] = cpu_where_positive(out[i], out[i], 0.0f);
    }
    gather_scratch_free(be, scratch, scratch_bytes);
}

/* The packed backward input when the router's gradient rides along: per
 * expert, rows x (h + 1), the masked dpre of each row and, last, the
 * router's score gradient at that row's pick. NULL when out of memory. */
static float *pack_router_unit(pmoe_backend *be, const pmoe_route_shape *s, int h,
                               const float *dpre, const float *dscores, const int32_t *selected,
                               size_t *bytes) {
    const int k = s->experts, l = s->topl, n = s->patches, units = h + 1;
    const int64_t rows = s->batch * l;
    float *g = gather_scratch(be, (size_t)k * (size_t)rows * (size_t)units, 1, bytes);
    if (!g) return NULL;
#pragma omp parallel for schedule(static) if ((int64_t)k * rows > 4096)
    for (int64_t er = 0; er < (int64_t)k * rows; er++) {
        const int64_t e = er / rows, b = (er % rows) / l, t = (er % rows) % l;
        float *out = g + er * units;
        for (int u = 0; u < h; u++) out[u] = dpre[er * h + u]; /* a few values: no call */
        const int32_t j = selected[(b * k + e) * (int64_t)l + t];
        out[h] = dscores[(b * n + j) * (int64_t)k + e];
    }
    return g;
}

void cpu_expert_backward_gathered(pmoe_backend *be, const pmoe_route_shape *s, int hidden,
                                  const float *patches, const int32_t *selected,
                                  const float *expert_w, const float *hidden_out, float *dhidden,
                                  const float *dscores, float *dexpert_w, float *drouter_w) {
    const int k = s->experts, d = s->dim, h = hidden;
    const int64_t rows = s->batch * s->topl, total = (int64_t)k * rows * h;
#pragma omp parallel for schedule(static) if (total > 65536)
    for (int64_t i = 0; i < total; i++)
        dhidden[i] = cpu_where_positive(hidden_out[i], dhidden[i], 0.0f);
    /* With the router: h + 1 units per expert, the last one writing the
     * router's row of drouter_w rather than a row of dW_s. */
    int units = h;
    const float *g = dhidden;
    float *packed = NULL;
    size_t packed_bytes = 0;
    if (dscores && drouter_w) {
        packed = pack_router_unit(be, s, h, dhidden, dscores, selected, &packed_bytes);
        if (packed) {
            units = h + 1, g = packed;
        } else { /* no memory: the router's gradient by the dense product over all patches */
            cpu_gemm(be, 1, 0, k, d, s->batch * s->patches, 1.0f, dscores, k, 0, patches, d, 0,
                     0.0f, drouter_w, d, 0, 1);
        }
    }
    const int router = units > h;
    /* dW_s[:, c0..] (units x w) = sum over rows of g[r]^T X[r, c0..], per column slab */
    const int simd = simd_on(), nthreads = omp_get_max_threads();
    const double work = (double)rows * units * d * k;
    if (simd) {
#if PMOE_GATHERED_SIMD
        /* The batch is summed as two halves (sample blocks), added at the
         * end: the routing pass cut out each half's patches on the thread
         * that now reads them back, from its own cache (reading the other
         * core's freshly written half cost a third more at batch 20). Within
         * a half, threads share the columns (16-float vectors); each walks
         * its samples in chunks whose band of patches (about 1 MiB) stays in
         * its L2 while all k experts read their picks from it, adding the
         * rows in order into 64-column slabs. The halves are fixed by the
         * batch, so every sum runs in one order whatever the thread count. */
        const int halves = s->batch > 1 ? 2 : 1;
        size_t second_bytes = 0;
        float *second =
            halves > 1 ? gather_scratch(be, (size_t)k * (size_t)units * (size_t)d, 1, &second_bytes)
                       : NULL;
        const int split = second != NULL ? halves : 1; /* no memory: one block */
        const int64_t vecs = (d + 15) / 16;
#pragma omp parallel if (vecs > 1 && work > 2e5)
        {
            const int nt = omp_get_num_threads();
            const int bands = nt / split > 1 ? nt / split : 1;
            const int l = s->topl;
            const float *picked[CHUNK_ROWS > 1 ? CHUNK_ROWS : 1];
#pragma omp for schedule(static)
            for (int task = 0; task < split * bands; task++) {
                const int half = task / bands, band_id = task % bands;
                const int64_t s_lo = s->batch * half / split;
                const int64_t s_hi = s->batch * (half + 1) / split;
                const int64_t c_lo = 16 * (vecs * band_id / bands);
                const int64_t c_end = 16 * (vecs * (band_id + 1) / bands);
                const int64_t c_hi = c_end < d ? c_end : d;
                /* the first half into dW and the router's rows, the second into `second` */
                float *dw_base = half ? second : dexpert_w;
                float *router_base = half ? second + (int64_t)k * h * d : drouter_w;
                const int64_t band = (int64_t)s->patches * (c_hi - c_lo) * (int64_t)sizeof(float);
                int64_t chunk = band <= 0 || band >= (1 << 20) ? 1 : (1 << 20) / band;
                if (chunk * l > CHUNK_ROWS) chunk = CHUNK_ROWS / l > 1 ? CHUNK_ROWS / l : 1;
                for (int64_t b0 = s_lo; c_lo < c_hi && b0 < s_hi; b0 += chunk) {
                    const int64_t b1 = s_hi - b0 < chunk ? s_hi : b0 + chunk;
                    const int64_t count = (b1 - b0) * l;
                    for (int e = 0; e < k; e++) {
                        for (int64_t i = 0; i < count; i++)
                            picked[i] = gathered_row(s, patches, selected, e, b0 * l + i);
                        for (int64_t c0 = c_lo; c0 < c_hi; c0 += 64)
                            backward_cols_simd(
                                picked, count, d, c0, (int)(c_hi - c0 < 64 ? c_hi - c0 : 64),
                                g + ((int64_t)e * rows + b0 * l) * units, h,
                                dw_base + (int64_t)e * h * d,
                                router ? router_base + (int64_t)e * d : NULL, b0 == s_lo);
                    }
                }
            }
            if (split > 1) { /* dW = first half + second half, element by element */
#pragma omp for schedule(static)
                for (int64_t i = 0; i < (int64_t)k * h * d; i++) dexpert_w[i] += second[i];
                if (router) {
#pragma omp for schedule(static)
                    for (int64_t i = 0; i < (int64_t)k * d; i++)
                        drouter_w[i] += second[(int64_t)k * h * d + i];
                }
            }
        }
        gather_scratch_free(be, second, second_bytes);
#endif
    } else {
        const int64_t slabs = (d + GATHER_COLS - 1) / GATHER_COLS, tasks = slabs * k;
        size_t scratch_bytes = 0;
        float *scratch =
            gather_scratch(be, (size_t)GATHER_ROWS * GATHER_COLS, nthreads, &scratch_bytes);
        const size_t stride = scratch ? scratch_bytes / sizeof(float) / (size_t)nthreads : 0;
#pragma omp parallel for schedule(static) if (tasks > 1 && work > 2e5)
        for (int64_t task = 0; task < tasks; task++) {
            const int e = (int)(task / slabs);
            const int64_t c0 = (task % slabs) * GATHER_COLS;
            const int width = (int)(d - c0 < GATHER_COLS ? d - c0 : GATHER_COLS);
            const float *dpre = g + (int64_t)e * rows * units;
            /* the h rows of dW_s, then (with the router) its row of drouter_w */
            float *out[2] = {dexpert_w + (int64_t)e * h * d + c0,
                             router ? drouter_w + (int64_t)e * d + c0 : NULL};
            const int first[2] = {0, h}, count[2] = {h, 1};
            if (!scratch) { /* no memory for the buffer: rank-one updates, row by row */
                for (int part = 0; part < 1 + router; part++) {
                    for (int u = 0; u < count[part]; u++)
                        memset(out[part] + (int64_t)u * d, 0, (size_t)width * sizeof(float));
                    for (int64_t r = 0; r < rows; r++)
                        cblas_sger(CblasRowMajor, count[part], width, 1.0f,
                                   dpre + r * units + first[part], 1,
                                   gathered_row(s, patches, selected, e, r) + c0, 1, out[part], d);
                }
                continue;
            }
            float *buf = scratch + (size_t)omp_get_thread_num() * stride;
            for (int64_t r0 = 0; r0 < rows; r0 += GATHER_ROWS) {
                const int64_t len = rows - r0 < GATHER_ROWS ? rows - r0 : GATHER_ROWS;
                for (int64_t i = 0; i < len; i++)
                    memcpy(buf + i * width, gathered_row(s, patches, selected, e, r0 + i) + c0,
                           (size_t)width * sizeof(float));
                for (int part = 0; part < 1 + router; part++)
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, count[part], width,
                                (blasint)len, 1.0f, dpre + r0 * units + first[part], units, buf,
                                width, r0 ? 1.0f : 0.0f, out[part], d);
            }
        }
        gather_scratch_free(be, scratch, scratch_bytes);
    }
    gather_scratch_free(be, packed, packed_bytes);
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
                        acc += (double)dlogits[b * C + c] * g *
                               hidden[(e * rows + b * l + t) * h + r];
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
