/* cpu_routing.c: the CPU twins of patch extraction, gate scoring with top-l
 * selection, and dispatch; and patch_extract_route, the three in one pass
 * per sample.
 *
 * Top-l keeps a sorted list of the best l seen so far and inserts a new
 * score only when it is strictly better than the list's last entry, so of
 * equal scores the lower patch index always wins: routing is deterministic
 * and the CUDA kernel must reproduce exactly this order (the rank-based
 * path for few patches picks the same). */
#include <cblas.h>
#include <math.h>
#include <string.h>

#include "backend/cpu_dot.h"
#include "backend/cpu_ops.h"

/* Patches j0 .. j1 of sample b, row-major within each, channel by channel.
 * Copies of short rows are written inline (a memcpy call per 28-float row
 * cost more than the copy); 1x1 patches make it a transpose of the sample's
 * C x n map, done as one. */
static void extract_patches(const pmoe_patch_shape *s, int64_t b, int j0, int j1,
                            const float *images, float *patches) {
    const int p = s->patch, C = s->channels, H = s->height, W = s->width;
    const int per_row = W / p, n = pmoe_patch_count(s), d = pmoe_patch_dim(s);
    if (p == 1 && n == H * W && j0 == 0 && j1 == n) {
        const float *in = images + b * C * (int64_t)n;
        float *out = patches + b * n * (int64_t)C;
        for (int c = 0; c < C; c++)
            for (int j = 0; j < n; j++) out[(int64_t)j * C + c] = in[(int64_t)c * n + j];
        return;
    }
    for (int j = j0; j < j1; j++) {
        const int y0 = (j / per_row) * p, x0 = (j % per_row) * p;
        float *out = patches + (b * n + j) * (int64_t)d;
        for (int c = 0; c < C; c++)
            for (int y = 0; y < p; y++) {
                const float *row = images + ((b * C + c) * (int64_t)H + y0 + y) * W + x0;
                float *dst = out + (c * p + y) * p;
                for (int x = 0; x < p; x++) dst[x] = row[x];
            }
    }
}

/* The adjoint for sample b: its patches written back into its map, every
 * pixel outside the patches (when p does not divide H or W) set to zero. */
static void place_sample(const pmoe_patch_shape *s, int64_t b, const float *dpatches,
                         float *dimages) {
    const int p = s->patch, C = s->channels, H = s->height, W = s->width;
    const int per_row = W / p, n = pmoe_patch_count(s), d = pmoe_patch_dim(s);
    const int64_t map = (int64_t)C * H * W;
    if (p == 1 && n == H * W) {
        const float *in = dpatches + b * n * (int64_t)C;
        float *out = dimages + b * map;
        for (int c = 0; c < C; c++)
            for (int j = 0; j < n; j++) out[(int64_t)c * n + j] = in[(int64_t)j * C + c];
        return;
    }
    if (per_row * p != W || (H / p) * p != H)
        memset(dimages + b * map, 0, (size_t)map * sizeof(float));
    for (int j = 0; j < n; j++) {
        const int y0 = (j / per_row) * p, x0 = (j % per_row) * p;
        const float *in = dpatches + (b * n + j) * (int64_t)d;
        for (int c = 0; c < C; c++)
            for (int y = 0; y < p; y++) {
                float *row = dimages + ((b * C + c) * (int64_t)H + y0 + y) * W + x0;
                const float *src = in + (c * p + y) * p;
                for (int x = 0; x < p; x++) row[x] = src[x];
            }
    }
}

void cpu_patch_extract_forward(pmoe_backend *be, const pmoe_patch_shape *s, const float *images,
                               float *patches) {
#pragma omp parallel for schedule(static) if (s->batch > 1)
    for (int64_t b = 0; b < s->batch; b++)
        extract_patches(s, b, 0, pmoe_patch_count(s), images, patches);
}

void cpu_patch_extract_backward(pmoe_backend *be, const pmoe_patch_shape *s, const float *dpatches,
                                float *dimages) {
#pragma omp parallel for schedule(static) if (s->batch > 1)
    for (int64_t b = 0; b < s->batch; b++) place_sample(s, b, dpatches, dimages);
}

void cpu_topl_select(const float *scores, int64_t stride, int n, int l, int32_t *out) {
    int filled = 0;
    for (int j = 0; j < n; j++) {
        const float v = scores[j * stride];
        if (filled == l && !(v > scores[out[l - 1] * stride])) continue;
        int pos = filled < l ? filled++ : l - 1;
        /* Shift worse entries down; equal scores stay ahead (lower index). */
        while (pos > 0 && v > scores[out[pos - 1] * stride]) {
            out[pos] = out[pos - 1];
            pos--;
        }
        out[pos] = j;
    }
}

/* Gate values of one (sample, expert) from its scores (stride k) and picks. */
static void gate_values(pmoe_gate_mode mode, const float *scores, int64_t stride, int n, int l,
                        const int32_t *picks, float *gate) {
    if (mode == PMOE_GATE_ONES) {
        for (int t = 0; t < l; t++) gate[t] = 1.0f;
        return;
    }
    /* picks[0] is the largest selected score, and the largest overall. */
    const float top = scores[picks[0] * stride];
    double denom = 0.0;
    if (mode == PMOE_GATE_RENORM && l <= 64) { /* each exp once (the same values and order) */
        double e[64];
        for (int t = 0; t < l; t++) denom += e[t] = exp((double)scores[picks[t] * stride] - top);
        for (int t = 0; t < l; t++) gate[t] = (float)(e[t] / denom);
        return;
    }
    if (mode == PMOE_GATE_RENORM)
        for (int t = 0; t < l; t++) denom += exp((double)scores[picks[t] * stride] - top);
    else
        for (int j = 0; j < n; j++) denom += exp((double)scores[j * stride] - top);
    for (int t = 0; t < l; t++)
        gate[t] = (float)(exp((double)scores[picks[t] * stride] - top) / denom);
}

/* scores[r k + u] = <patch r, router u> for the patch rows r0 .. r1: a thin
 * product (k columns), so by cpu_dot_rows4 where it runs, 4 patches at a
 * time; else by OpenBLAS. */
static void score_rows(const pmoe_route_shape *s, int64_t r0, int64_t r1, const float *patches,
                       const float *router_w, float *scores) {
    const int d = s->dim, k = s->experts;
    if (cpu_simd_kernels(-1)) {
        for (int64_t r = r0; r < r1; r += 4) {
            const int count = r1 - r < 4 ? (int)(r1 - r) : 4;
            const float *x[4];
            for (int q = 0; q < count; q++) x[q] = patches + (r + q) * d;
            cpu_dot_rows4(x, count, router_w, k, d, scores + r * k, k);
        }
    } else {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)(r1 - r0), k, d, 1.0f,
                    patches + r0 * d, d, router_w, d, 0.0f, scores + r0 * k, k);
    }
}

/* Top-l of every expert of sample b by ranks: patch j's rank for expert e
 * counts the patches ahead of it (a higher score, or an equal one at a
 * lower index), and the l of rank < l are the picks, in rank order. The
 * same picks as cpu_topl_select, without its data-dependent branches, and
 * vectorised over the k experts (a sample's scores are n x k, row-major).
 * Its n^2 k comparisons pay off for few patches (n <= RANK_PATCHES; the
 * mosaic's 16), not for WRN-pMoE's 64 positions. Only for no NaN among the
 * scores (their order under cpu_topl_select is not a ranking); returns 0 to
 * leave the rest to it. */
enum { RANK_PATCHES = 32, RANK_MAX = 4096 };

static int topl_by_rank(const float *sc, int n, int k, int l, int32_t *picks) {
    if (n > RANK_PATCHES || (int64_t)n * k > RANK_MAX) return 0;
    int nan = 0;
    for (int i = 0; i < n * k; i++) nan |= sc[i] != sc[i];
    if (nan) return 0;
    int32_t rank[RANK_MAX];
    for (int j = 0; j < n; j++) {
        int32_t *rj = rank + j * k;
        const float *sj = sc + j * k;
        for (int e = 0; e < k; e++) rj[e] = 0;
        for (int i = 0; i < j; i++) /* ahead on ties */
            for (int e = 0; e < k; e++) rj[e] += sc[i * k + e] >= sj[e];
        for (int i = j + 1; i < n; i++)
            for (int e = 0; e < k; e++) rj[e] += sc[i * k + e] > sj[e];
    }
    for (int j = 0; j < n; j++)
        for (int e = 0; e < k; e++)
            if (rank[j * k + e] < l) picks[e * l + rank[j * k + e]] = j;
    return 1;
}

/* Top-l and gate values of sample b for every expert, from its scores. */
static void route_sample(const pmoe_route_shape *s, int64_t b, const float *scores,
                         int32_t *selected, float *gate) {
    const int n = s->patches, k = s->experts, l = s->topl;
    const float *block = scores + b * n * (int64_t)k;
    int32_t *picks = selected + b * k * (int64_t)l;
    const int ranked = topl_by_rank(block, n, k, l, picks);
    for (int e = 0; e < k; e++) {
        if (!ranked) cpu_topl_select(block + e, k, n, l, picks + e * l);
        gate_values(s->gate, block + e, k, n, l, picks + e * l, gate + (b * k + e) * (int64_t)l);
    }
}

void cpu_gate_topl_forward(pmoe_backend *be, const pmoe_route_shape *s, const float *patches,
                           const float *router_w, float *scores, int32_t *selected, float *gate) {
    const int n = s->patches, d = s->dim, k = s->experts;
    const int64_t rows = s->batch * n;
    /* scores (B n x k) = patches (B n x d) router_w^T (d x k) */
    if (cpu_simd_kernels(-1)) {
        const int64_t groups = (rows + 3) / 4;
#pragma omp parallel for schedule(static) if (rows * k * (int64_t)d > 200000)
        for (int64_t g = 0; g < groups; g++)
            score_rows(s, 4 * g, 4 * g + 4 < rows ? 4 * g + 4 : rows, patches, router_w, scores);
    } else {
        cpu_gemm(be, 0, 1, rows, k, d, 1.0f, patches, d, 0, router_w, d, 0, 0.0f, scores, k, 0, 1);
    }
#pragma omp parallel for schedule(static) if (s->batch > 1)
    for (int64_t b = 0; b < s->batch; b++) route_sample(s, b, scores, selected, gate);
}

/* One pass per sample: its n patches are cut out, scored and routed while
 * they sit in cache, rather than written out and read back twice. The
 * scores are those of cpu_gate_topl_forward (bit for bit with the AVX-512
 * kernel, which scores each patch alone; to rounding through OpenBLAS). */
void cpu_patch_extract_route(pmoe_backend *be, const pmoe_patch_shape *ps,
                             const pmoe_route_shape *s, const float *images, const float *router_w,
                             float *patches, float *scores, int32_t *selected, float *gate) {
    const int n = s->patches;
#pragma omp parallel for schedule(static) if (s->batch > 1)
    for (int64_t b = 0; b < s->batch; b++) {
        /* 4 patches at a time, scored while they sit in L1 beside the routers */
        for (int j = 0; j < n; j += 4) {
            const int j1 = n - j < 4 ? n : j + 4;
            extract_patches(ps, b, j, j1, images, patches);
            score_rows(s, b * n + j, b * n + j1, patches, router_w, scores);
        }
        route_sample(s, b, scores, selected, gate);
    }
}

void cpu_gate_topl_backward(pmoe_backend *be, const pmoe_route_shape *s, const float *patches,
                            const float *router_w, const float *scores, const int32_t *selected,
                            const float *gate, const float *dgate, float *dscores, float *drouter_w,
                            float *dpatches) {
    const int n = s->patches, d = s->dim, k = s->experts, l = s->topl;
    memset(dscores, 0, (size_t)(s->batch * n * k) * sizeof(float));
    if (s->gate != PMOE_GATE_ONES) {
#pragma omp parallel for collapse(2) schedule(static)
        for (int64_t b = 0; b < s->batch; b++)
            for (int e = 0; e < k; e++) {
                const int64_t slot = (b * k + e) * (int64_t)l;
                const float *row = scores + b * n * (int64_t)k + e;
                float *drow = dscores + b * n * (int64_t)k + e;
                /* dot = sum_t G_t dG_t, the softmax Jacobian's shared term */
                double dot = 0.0;
                for (int t = 0; t < l; t++) dot += (double)gate[slot + t] * dgate[slot + t];
                if (s->gate == PMOE_GATE_RENORM) {
                    for (int t = 0; t < l; t++)
                        drow[selected[slot + t] * (int64_t)k] =
                            (float)(gate[slot + t] * ((double)dgate[slot + t] - dot));
                } else { /* softmax over all n: every patch's score moves P */
                    const float top = row[selected[slot] * (int64_t)k];
                    double denom = 0.0;
                    for (int j = 0; j < n; j++) denom += exp((double)row[j * (int64_t)k] - top);
                    for (int j = 0; j < n; j++)
                        drow[j * (int64_t)k] =
                            (float)(-exp((double)row[j * (int64_t)k] - top) / denom * dot);
                    for (int t = 0; t < l; t++)
                        drow[selected[slot + t] * (int64_t)k] +=
                            (float)((double)gate[slot + t] * dgate[slot + t]);
                }
            }
    }
    /* drouter_w (k x d) = dscores^T (k x B n) patches (B n x d) */
    if (drouter_w)
        cpu_gemm(be, 1, 0, k, d, s->batch * n, 1.0f, dscores, k, 0, patches, d, 0, 0.0f, drouter_w,
                 d, 0, 1);
    if (dpatches)
        cpu_gemm(be, 0, 0, s->batch * n, d, k, 1.0f, dscores, k, 0, router_w, d, 0, 1.0f, dpatches,
                 d, 0, 1);
}

void cpu_dispatch_gather(pmoe_backend *be, const pmoe_route_shape *s, const float *patches,
                         const int32_t *selected, float *expert_in) {
    const int n = s->patches, d = s->dim, k = s->experts, l = s->topl;
#pragma omp parallel for collapse(3) schedule(static)
    for (int e = 0; e < k; e++)
        for (int64_t b = 0; b < s->batch; b++)
            for (int t = 0; t < l; t++) {
                const int32_t j = selected[(b * k + e) * (int64_t)l + t];
                memcpy(expert_in + ((e * s->batch + b) * (int64_t)l + t) * d,
                       patches + (b * n + j) * (int64_t)d, (size_t)d * sizeof(float));
            }
}

void cpu_dispatch_gather_backward(pmoe_backend *be, const pmoe_route_shape *s,
                                  const float *dexpert_in, const int32_t *selected,
                                  float *dpatches) {
    const int n = s->patches, d = s->dim, k = s->experts, l = s->topl;
    /* One thread per sample: its patches receive from every expert in a fixed
     * (expert, slot) order, with no atomics. */
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < s->batch; b++) {
        float *mine = dpatches + b * n * (int64_t)d;
        memset(mine, 0, (size_t)n * d * sizeof(float));
        for (int e = 0; e < k; e++)
            for (int t = 0; t < l; t++) {
                const int32_t j = selected[(b * k + e) * (int64_t)l + t];
                const float *src = dexpert_in + ((e * s->batch + b) * (int64_t)l + t) * d;
                float *dst = mine + j * (int64_t)d;
                for (int i = 0; i < d; i++) dst[i] += src[i];
            }
    }
}
