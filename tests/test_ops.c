/* test_ops.c: the CPU ops against hand-computed values, their backward
 * passes against finite differences, and their results against themselves
 * under different thread counts.
 *
 * Forward checks use numbers written out by hand or a naive loop in double
 * precision that shares no code with the op. Backward checks take a scalar
 * L = sum(out * R) for a fixed random R, perturb every input element in turn
 * and compare the central difference (Richardson-extrapolated, accumulated in
 * double) with the op's analytic gradient; linear ops are checked as exact
 * adjoints, <A x, y> == <x, A^T y>. Output buffers start as NaN so that an op
 * that fails to overwrite what its contract says it overwrites is caught. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu_dot.h"
#include "backend/cpu_ops.h"
#include "op_test_util.h"

/* ---------------------------------------------------------------- helpers */

/* The buffers (fbuf, dbuf, ibuf, bbuf, frand, fcopy, free_all) are
 * test_util.h's; dot_ff, all_finite, fd_derivative and the determinism
 * check are op_test_util.h's. */

static int all_zero(const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (x[i] != 0.0f) return 0;
    return 1;
}
static void check_exact(const char *what, const float *got, const double *want, int64_t n) {
    check_close(what, got, want, n, 1e-30, 0.0);
}
/* Relative agreement of two double scalars (adjoint identities). */
static void check_scalar(const char *what, double got, double want, double rtol) {
    double share = fabs(got - want) / (rtol * (fabs(want) + 1e-300));
    int ok = isfinite(got) && isfinite(want) && share <= 1.0;
    printf("  %-44s %.12g vs %.12g: %.3f of limit (rtol %.0e)%s\n", what, got, want, share, rtol,
           ok ? "" : "  <-- FAIL");
    CHECK_MSG(ok, "%s: %.17g vs %.17g", what, got, want);
}

/* ------------------------------------------------------ finite differences */

/* fd_derivative (op_test_util.h) w.r.t. each x[i]. Elements whose
 * perturbation changed a discrete choice are marked in skip. */
static void fd_grad(objective_fn f, void *ctx, float *x, int64_t n, double eps, double *grad,
                    unsigned char *skip) {
    for (int64_t i = 0; i < n; i++) {
        int ok = 1;
        grad[i] = fd_derivative(f, ctx, x, i, eps, &ok);
        skip[i] = !ok;
    }
    int dummy = 1;
    f(ctx, &dummy); /* leave the context's outputs at the unperturbed point */
}

/* check_close over the elements not skipped; at most half may be skipped. */
static void check_grad(const char *what, const float *got, const double *want,
                       const unsigned char *skip, int64_t n, double atol, double rtol) {
    float *g = malloc((size_t)n * sizeof(float));
    double *w = malloc((size_t)n * sizeof(double));
    int64_t kept = 0;
    for (int64_t i = 0; i < n; i++)
        if (!skip || !skip[i]) {
            g[kept] = got[i];
            w[kept] = want[i];
            kept++;
        }
    char label[128];
    if (kept < n) snprintf(label, sizeof label, "%s (%lld skipped)", what, (long long)(n - kept));
    else snprintf(label, sizeof label, "%s", what);
    check_close(label, g, w, kept, atol, rtol);
    CHECK_MSG(2 * kept >= n, "%s: %lld of %lld elements skipped", what, (long long)(n - kept),
              (long long)n);
    free(g);
    free(w);
}

/* ------------------------------------------------------------------- GEMM */

/* want (same layout as c, including padding) = alpha op(A) op(B) + beta C0,
 * by a triple loop in double; beta == 0 ignores C0 (BLAS convention). */
static void ref_gemm(int ta, int tb, int64_t m, int64_t n, int64_t k, double alpha, const float *a,
                     int64_t lda, int64_t sa, const float *b, int64_t ldb, int64_t sb, double beta,
                     const float *c0, int64_t ldc, int64_t sc, int64_t batch, int64_t c_total,
                     double *want) {
    for (int64_t i = 0; i < c_total; i++) want[i] = c0[i];
    for (int64_t q = 0; q < batch; q++)
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++) {
                double acc = 0.0;
                for (int64_t p = 0; p < k; p++) {
                    const double av = ta ? a[q * sa + p * lda + i] : a[q * sa + i * lda + p];
                    const double bv = tb ? b[q * sb + j * ldb + p] : b[q * sb + p * ldb + j];
                    acc += av * bv;
                }
                const int64_t at = q * sc + i * ldc + j;
                want[at] = alpha * acc + (beta == 0.0 ? 0.0 : beta * (double)c0[at]);
            }
}

/* One GEMM with padded leading dimensions and strides; the padding of C
 * (sentinel 777) must come back untouched. nan_c fills C with NaN, which
 * beta = 0 must ignore. */
static void gemm_case(int ta, int tb, int64_t m, int64_t n, int64_t k, int64_t batch, float alpha,
                      float beta, int nan_c, uint64_t seed) {
    const int pad = 3;
    const int64_t a_rows = ta ? k : m, a_cols = ta ? m : k;
    const int64_t b_rows = tb ? n : k, b_cols = tb ? k : n;
    const int64_t lda = a_cols + pad, ldb = b_cols + pad, ldc = n + pad;
    const int64_t sa = a_rows * lda + 5, sb = b_rows * ldb + 7, sc = m * ldc + 2;
    float *A = frand(sa * batch, seed, -1, 1), *B = frand(sb * batch, seed + 1, -1, 1);
    float *C = fbuf(sc * batch);
    for (int64_t i = 0; i < sc * batch; i++) C[i] = 777.0f;
    float *fill = frand(m * n, seed + 2, -1, 1);
    for (int64_t q = 0; q < batch; q++)
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++)
                C[q * sc + i * ldc + j] = nan_c ? NAN : fill[i * n + j] + (float)q;
    float *C0 = fcopy(C, sc * batch);
    double *want = dbuf(sc * batch);
    ref_gemm(ta, tb, m, n, k, alpha, A, lda, sa, B, ldb, sb, beta, C0, ldc, sc, batch, sc * batch,
             want);
    cpu_gemm(NULL, ta, tb, m, n, k, alpha, A, lda, sa, B, ldb, sb, beta, C, ldc, sc, batch);
    char what[96];
    snprintf(what, sizeof what, "gemm %c%c m=%lld n=%lld k=%lld b=%lld a=%g b=%g%s", ta ? 'T' : 'N',
             tb ? 'T' : 'N', (long long)m, (long long)n, (long long)k, (long long)batch, alpha,
             beta, nan_c ? " C=NaN" : "");
    check_close(what, C, want, sc * batch, 1e-5, 1e-5);
}

static void test_gemm(void) {
    printf("gemm\n");
    /* 2 x 2 by hand: A = [1 2; 3 4], B = [5 6; 7 8]. */
    const float A[4] = {1, 2, 3, 4}, B[4] = {5, 6, 7, 8};
    const double want[4][4] = {{19, 22, 43, 50},  /* A B */
                               {17, 23, 39, 53},  /* A B^T */
                               {26, 30, 38, 44},  /* A^T B */
                               {23, 31, 34, 46}}; /* A^T B^T */
    const char *names[4] = {"gemm 2x2 NN by hand", "gemm 2x2 NT by hand", "gemm 2x2 TN by hand",
                            "gemm 2x2 TT by hand"};
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            float C[4] = {NAN, NAN, NAN, NAN};
            cpu_gemm(NULL, ta, tb, 2, 2, 2, 1.0f, A, 2, 0, B, 2, 0, 0.0f, C, 2, 0, 1);
            check_exact(names[ta * 2 + tb], C, want[ta * 2 + tb], 4);
        }
    { /* alpha 2, beta 0.5, C0 = [1 2; 3 4]: 2 A B + C0 / 2 */
        float C[4] = {1, 2, 3, 4};
        const double w[4] = {38.5, 45, 87.5, 102};
        cpu_gemm(NULL, 0, 0, 2, 2, 2, 2.0f, A, 2, 0, B, 2, 0, 0.5f, C, 2, 0, 1);
        check_exact("gemm 2x2 alpha=2 beta=0.5 by hand", C, w, 4);
    }
    { /* batch 2 with strides: A2 = [0 1; 1 0] (stride 5 with one pad), B
         * shared through stride 0, C stride 6 with two sentinels. */
        const float Ab[10] = {1, 2, 3, 4, -9, 0, 1, 1, 0, -9};
        float C[12] = {NAN, NAN, NAN, NAN, 777, 777, NAN, NAN, NAN, NAN, 777, 777};
        const double w[12] = {19, 22, 43, 50, 777, 777, 7, 8, 5, 6, 777, 777};
        cpu_gemm(NULL, 0, 0, 2, 2, 2, 1.0f, Ab, 2, 5, B, 2, 0, 0.0f, C, 2, 6, 2);
        check_exact("gemm batch 2 strided by hand", C, w, 12);
    }
    /* Against the triple loop: every trans combination, padded, batched,
     * alpha/beta, and shapes cut into several 64-blocks both ways. */
    uint64_t seed = 100;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            gemm_case(ta, tb, 3, 4, 5, 2, 1.5f, -0.5f, 0, seed += 10);
            gemm_case(ta, tb, 130, 3, 5, 2, 1.0f, 0.0f, 1, seed += 10);
            gemm_case(ta, tb, 3, 150, 4, 2, -0.75f, 2.0f, 0, seed += 10);
            gemm_case(ta, tb, 200, 70, 24, 2, 1.0f, 1.0f, 0, seed += 10); /* parallel blocks */
            gemm_case(ta, tb, 33, 260, 12, 3, 0.5f, 0.0f, 1, seed += 10);
        }
}

/* ------------------------------------------------------- patch extraction */

static void test_patch_extract(void) {
    printf("patch_extract\n");
    { /* 1x1 patches (a transpose of each sample's C x HW map), both ways */
        pmoe_patch_shape s = {3, 5, 3, 4, 1};
        const int n = pmoe_patch_count(&s), d = pmoe_patch_dim(&s);
        CHECK(n == 12 && d == 5);
        const int64_t ni = 3 * 5 * 12;
        float *img = frand(ni, 9, -1, 1), *pat = fbuf(ni), *back = fbuf(ni);
        double *want = dbuf(ni), *want_img = dbuf(ni);
        cpu_patch_extract_forward(NULL, &s, img, pat);
        for (int b = 0; b < 3; b++)
            for (int j = 0; j < n; j++)
                for (int c = 0; c < d; c++) want[(b * n + j) * d + c] = img[(b * 5 + c) * n + j];
        check_exact("patch forward p=1", pat, want, ni);
        cpu_patch_extract_backward(NULL, &s, pat, back); /* back starts as NaN */
        for (int64_t i = 0; i < ni; i++) want_img[i] = img[i];
        check_exact("patch backward p=1 (the inverse)", back, want_img, ni);
    }
    { /* B=2 C=2 H=4 W=6 p=2: n = 2 x 3 patches of d = 8; pixel value
         * 1000 b + 100 c + 10 y + x. */
        pmoe_patch_shape s = {2, 2, 4, 6, 2};
        CHECK(pmoe_patch_count(&s) == 6 && pmoe_patch_dim(&s) == 8);
        float *img = fbuf(2 * 2 * 4 * 6), *pat = fbuf(2 * 6 * 8);
        for (int b = 0; b < 2; b++)
            for (int c = 0; c < 2; c++)
                for (int y = 0; y < 4; y++)
                    for (int x = 0; x < 6; x++)
                        img[((b * 2 + c) * 4 + y) * 6 + x] =
                            (float)(1000 * b + 100 * c + 10 * y + x);
        cpu_patch_extract_forward(NULL, &s, img, pat);
        /* Patch 4 of sample 1 is grid (1, 1): rows 2-3, columns 2-3. Patch 2 of
         * sample 0 is grid (0, 2): rows 0-1, columns 4-5. */
        const double p14[8] = {1022, 1023, 1032, 1033, 1122, 1123, 1132, 1133};
        const double p02[8] = {4, 5, 14, 15, 104, 105, 114, 115};
        check_exact("patch sample 1 patch 4 by hand", pat + (1 * 6 + 4) * 8, p14, 8);
        check_exact("patch sample 0 patch 2 by hand", pat + (0 * 6 + 2) * 8, p02, 8);
        double *want = dbuf(2 * 6 * 8);
        for (int b = 0; b < 2; b++)
            for (int j = 0; j < 6; j++)
                for (int c = 0; c < 2; c++)
                    for (int y = 0; y < 2; y++)
                        for (int x = 0; x < 2; x++)
                            want[(b * 6 + j) * 8 + (c * 2 + y) * 2 + x] =
                                1000 * b + 100 * c + 10 * ((j / 3) * 2 + y) + (j % 3) * 2 + x;
        check_exact("patch forward all (c,y,x) / row-major grid", pat, want, 2 * 6 * 8);
    }
    { /* p = 2 does not divide H = 5 or W = 7: last row and column unused. */
        pmoe_patch_shape s = {2, 3, 5, 7, 2};
        const int n = pmoe_patch_count(&s), d = pmoe_patch_dim(&s);
        CHECK(n == 6 && d == 12);
        const int64_t ni = 2 * 3 * 5 * 7, np = 2 * (int64_t)n * d;
        float *img = frand(ni, 7, -1, 1), *pat = fbuf(np);
        cpu_patch_extract_forward(NULL, &s, img, pat);
        double *want = dbuf(np);
        for (int b = 0; b < 2; b++)
            for (int j = 0; j < n; j++)
                for (int c = 0; c < 3; c++)
                    for (int y = 0; y < 2; y++)
                        for (int x = 0; x < 2; x++)
                            want[(b * n + j) * d + (c * 2 + y) * 2 + x] =
                                img[((b * 3 + c) * 5 + (j / 3) * 2 + y) * 7 + (j % 3) * 2 + x];
        check_exact("patch forward H=5 W=7 p=2", pat, want, np);

        /* Backward: each covered pixel gets its patch element, the rest 0
         * (dimages starts as NaN: it must be overwritten everywhere). */
        float *dpat = frand(np, 8, -1, 1), *dimg = fbuf(ni);
        cpu_patch_extract_backward(NULL, &s, dpat, dimg);
        double *wimg = dbuf(ni);
        for (int b = 0; b < 2; b++)
            for (int c = 0; c < 3; c++)
                for (int y = 0; y < 5; y++)
                    for (int x = 0; x < 7; x++) {
                        double v = 0.0;
                        if (y < 4 && x < 6) {
                            const int j = (y / 2) * 3 + x / 2;
                            v = dpat[(b * n + j) * d + (c * 2 + y % 2) * 2 + x % 2];
                        }
                        wimg[((b * 3 + c) * 5 + y) * 7 + x] = v;
                    }
        check_exact("patch backward, uncovered pixels 0", dimg, wimg, ni);
        /* Adjoint: <P x, y> == <x, P^T y>. */
        check_scalar("patch adjoint <Px,y> vs <x,P^T y>", dot_ff(pat, dpat, np),
                     dot_ff(img, dimg, ni), 1e-12);
    }
}

/* ------------------------------------------------------------ top-l, gate */

/* The first maximum among the not yet taken, l times. */
static void naive_topl(const float *v, int64_t stride, int n, int l, int32_t *out) {
    unsigned char taken[64] = {0};
    for (int t = 0; t < l; t++) {
        int best = -1;
        for (int j = 0; j < n; j++)
            if (!taken[j] && (best < 0 || v[j * stride] > v[best * stride])) best = j;
        taken[best] = 1;
        out[t] = best;
    }
}

static int same_ints(const int32_t *a, const int32_t *b, int64_t n) {
    return memcmp(a, b, (size_t)n * sizeof(int32_t)) == 0;
}

static void test_topl_select(void) {
    printf("topl_select\n");
    const float v[5] = {1, 3, 3, 2, 3};
    int32_t out[5];
    const int32_t w2[2] = {1, 2}, w3[3] = {1, 2, 4}, w5[5] = {1, 2, 4, 3, 0}, w1[1] = {1};
    cpu_topl_select(v, 1, 5, 2, out);
    CHECK_MSG(same_ints(out, w2, 2), "[1,3,3,2,3] l=2 -> %d %d", out[0], out[1]);
    cpu_topl_select(v, 1, 5, 3, out);
    CHECK(same_ints(out, w3, 3));
    cpu_topl_select(v, 1, 5, 5, out);
    CHECK_MSG(same_ints(out, w5, 5), "l=n -> %d %d %d %d %d", out[0], out[1], out[2], out[3],
              out[4]);
    cpu_topl_select(v, 1, 5, 1, out);
    CHECK(same_ints(out, w1, 1));
    { /* strided: only every third element is a score */
        const float sv[15] = {1, 9, 9, 3, 9, 9, 3, -9, -9, 2, 9, 9, 3, 9, 9};
        cpu_topl_select(sv, 3, 5, 2, out);
        CHECK(same_ints(out, w2, 2));
    }
    { /* all equal: the first l in order; ascending: the last, reversed */
        const float eq[4] = {0.5f, 0.5f, 0.5f, 0.5f}, up[4] = {-3, -2, -1, 0};
        const int32_t we[3] = {0, 1, 2}, wu[3] = {3, 2, 1};
        cpu_topl_select(eq, 1, 4, 3, out);
        CHECK(same_ints(out, we, 3));
        cpu_topl_select(up, 1, 4, 3, out);
        CHECK(same_ints(out, wu, 3));
    }
    /* Many tie-heavy rows against the naive rule. */
    int bad = 0, trials = 0;
    float row[2 * 12];
    for (int trial = 0; trial < 400; trial++) {
        const int n = 1 + trial % 12;
        fill_uniform(row, 2 * n, 1000 + trial, 0, 4);
        for (int i = 0; i < 2 * n; i++) row[i] = floorf(row[i]); /* values 0..3 */
        for (int l = 1; l <= n; l++) {
            int32_t got[12], want[12];
            cpu_topl_select(row, 2, n, l, got);
            naive_topl(row, 2, n, l, want);
            bad += !same_ints(got, want, l);
            trials++;
        }
    }
    printf("  topl vs naive on tie-heavy rows: %d of %d differ\n", bad, trials);
    CHECK_MSG(bad == 0, "%d of %d rows differ from the naive top-l", bad, trials);
}

/* Double-precision gate values of one (sample, expert) from float scores. */
static void ref_gate(pmoe_gate_mode mode, const float *row, int64_t stride, int n, int l,
                     const int32_t *picks, double *g) {
    double denom = 0.0;
    if (mode == PMOE_GATE_ONES) {
        for (int t = 0; t < l; t++) g[t] = 1.0;
        return;
    }
    if (mode == PMOE_GATE_RENORM)
        for (int t = 0; t < l; t++) denom += exp((double)row[picks[t] * stride]);
    else
        for (int j = 0; j < n; j++) denom += exp((double)row[j * stride]);
    for (int t = 0; t < l; t++) g[t] = exp((double)row[picks[t] * stride]) / denom;
}

/* Hand case: d = k = 2 and router_w = I, so score[b, j, s] = patch[b, j][s]. */
static void gate_hand_case(int k, int l, const int32_t *want_sel) {
    const int B = 2, n = 5, d = 2;
    const float e0[2][5] = {{1, 3, 3, 2, 3}, {-2, -1, -3, -1, -5}};
    const float e1[2][5] = {{0.5f, -1, 2, 1.5f, 0}, {4, 0, 0, 4, 4}};
    float *patches = fbuf(B * n * d), *router = fbuf(k * d);
    for (int b = 0; b < B; b++)
        for (int j = 0; j < n; j++) {
            patches[(b * n + j) * d] = e0[b][j];
            patches[(b * n + j) * d + 1] = e1[b][j];
        }
    const float eye[4] = {1, 0, 0, 1};
    memcpy(router, eye, (size_t)(k * d) * sizeof(float));
    const pmoe_gate_mode modes[3] = {PMOE_GATE_RENORM, PMOE_GATE_SOFTMAX_ALL, PMOE_GATE_ONES};
    const char *mname[3] = {"renorm", "softmax_all", "ones"};
    for (int mi = 0; mi < 3; mi++) {
        pmoe_route_shape s = {B, n, d, k, l, modes[mi]};
        float *scores = fbuf(B * n * k), *gate = fbuf(B * k * l);
        int32_t *sel = ibuf(B * k * l);
        cpu_gate_topl_forward(NULL, &s, patches, router, scores, sel, gate);
        double *wsc = dbuf(B * n * k), *wg = dbuf(B * k * l);
        for (int b = 0; b < B; b++)
            for (int j = 0; j < n; j++)
                for (int e = 0; e < k; e++) wsc[(b * n + j) * k + e] = e == 0 ? e0[b][j] : e1[b][j];
        double sums[4] = {0};
        for (int b = 0; b < B; b++)
            for (int e = 0; e < k; e++) {
                const int at = (b * k + e) * l;
                double z = 0.0, num[5];
                const float *ev = e == 0 ? e0[b] : e1[b];
                for (int t = 0; t < l; t++) num[t] = exp((double)ev[want_sel[at + t]]);
                if (modes[mi] == PMOE_GATE_RENORM)
                    for (int t = 0; t < l; t++) z += num[t];
                else
                    for (int j = 0; j < n; j++) z += exp((double)ev[j]);
                for (int t = 0; t < l; t++) {
                    wg[at + t] = modes[mi] == PMOE_GATE_ONES ? 1.0 : num[t] / z;
                    sums[b * k + e] += gate[at + t];
                }
            }
        char what[96];
        snprintf(what, sizeof what, "gate %s k=%d l=%d: scores", mname[mi], k, l);
        check_exact(what, scores, wsc, B * n * k);
        CHECK_MSG(same_ints(sel, want_sel, B * k * l), "gate %s k=%d l=%d: selection", mname[mi], k,
                  l);
        snprintf(what, sizeof what, "gate %s k=%d l=%d: gate values", mname[mi], k, l);
        check_close(what, gate, wg, B * k * l, 1e-7, 1e-6);
        for (int i = 0; i < B * k; i++) {
            if (modes[mi] == PMOE_GATE_RENORM || (modes[mi] == PMOE_GATE_SOFTMAX_ALL && l == n))
                CHECK_MSG(fabs(sums[i] - 1.0) < 1e-6, "%s l=%d gate sum %g", mname[mi], l, sums[i]);
            else if (modes[mi] == PMOE_GATE_SOFTMAX_ALL)
                CHECK_MSG(sums[i] < 1.0 - 1e-3, "softmax_all l<n gate sum %g", sums[i]);
        }
    }
}

static void test_gate_forward(void) {
    printf("gate_topl_forward\n");
    /* Rows: (b0,e0) [1 3 3 2 3], (b0,e1) [.5 -1 2 1.5 0],
     *       (b1,e0) [-2 -1 -3 -1 -5], (b1,e1) [4 0 0 4 4]. */
    const int32_t sel2[8] = {1, 2, 2, 3, 1, 3, 0, 3};
    const int32_t sel5[20] = {1, 2, 4, 3, 0, 2, 3, 0, 4, 1, 1, 3, 0, 2, 4, 0, 3, 4, 1, 2};
    const int32_t sel1[4] = {1, 2, 1, 0};
    const int32_t sel2k1[4] = {1, 2, 1, 3};
    gate_hand_case(2, 2, sel2);
    gate_hand_case(2, 5, sel5);
    gate_hand_case(2, 1, sel1);
    gate_hand_case(1, 2, sel2k1);

    /* Random case against a double reference built on the op's own scores. */
    const int B = 3, n = 9, d = 5, k = 3, l = 4;
    float *patches = frand(B * n * d, 21, -1, 1), *router = frand(k * d, 22, -1, 1);
    double *wsc = dbuf(B * n * k);
    for (int b = 0; b < B; b++)
        for (int j = 0; j < n; j++)
            for (int e = 0; e < k; e++) {
                double acc = 0.0;
                for (int i = 0; i < d; i++)
                    acc += (double)patches[(b * n + j) * d + i] * router[e * d + i];
                wsc[(b * n + j) * k + e] = acc;
            }
    const pmoe_gate_mode modes[3] = {PMOE_GATE_RENORM, PMOE_GATE_SOFTMAX_ALL, PMOE_GATE_ONES};
    const char *mname[3] = {"renorm", "softmax_all", "ones"};
    for (int mi = 0; mi < 3; mi++) {
        pmoe_route_shape s = {B, n, d, k, l, modes[mi]};
        float *scores = fbuf(B * n * k), *gate = fbuf(B * k * l);
        int32_t *sel = ibuf(B * k * l), *wsel = ibuf(B * k * l);
        double *wg = dbuf(B * k * l);
        cpu_gate_topl_forward(NULL, &s, patches, router, scores, sel, gate);
        for (int b = 0; b < B; b++)
            for (int e = 0; e < k; e++) {
                const float *row = scores + (int64_t)b * n * k + e;
                naive_topl(row, k, n, l, wsel + (b * k + e) * l);
                ref_gate(modes[mi], row, k, n, l, wsel + (b * k + e) * l, wg + (b * k + e) * l);
            }
        char what[96];
        snprintf(what, sizeof what, "gate random %s: scores", mname[mi]);
        check_close(what, scores, wsc, B * n * k, 1e-6, 1e-5);
        CHECK_MSG(same_ints(sel, wsel, B * k * l), "gate random %s: selection", mname[mi]);
        snprintf(what, sizeof what, "gate random %s: gate values", mname[mi]);
        check_close(what, gate, wg, B * k * l, 1e-7, 1e-6);
    }
}

/* --------------------------------------------------------- gate backward */

/* L = sum_{b,e,t} gate[b,e,t] R[b,e,selected[b,e,t]]: the weight follows the
 * patch, not the slot, so L is smooth while the selected SET is unchanged
 * (with l = n the order of near-equal scores may swap under a perturbation;
 * the set cannot change then). */
typedef struct {
    pmoe_route_shape s;
    float *patches, *router, *scores, *gate;
    int32_t *sel, *sel0;
    const float *R; /* B x k x n */
} gate_ctx;

static int same_sets(const int32_t *a, const int32_t *b, int64_t groups, int l, int n) {
    for (int64_t g = 0; g < groups; g++) {
        unsigned char in[64] = {0};
        for (int t = 0; t < l; t++) in[a[g * l + t]] ^= 1;
        for (int t = 0; t < l; t++) in[b[g * l + t]] ^= 1;
        for (int j = 0; j < n; j++)
            if (in[j]) return 0;
    }
    return 1;
}

static double gate_objective(void *p, int *same) {
    gate_ctx *c = p;
    const int64_t groups = c->s.batch * c->s.experts;
    const int n = c->s.patches, l = c->s.topl;
    cpu_gate_topl_forward(NULL, &c->s, c->patches, c->router, c->scores, c->sel, c->gate);
    *same = same_sets(c->sel, c->sel0, groups, l, n);
    double L = 0.0;
    for (int64_t g = 0; g < groups; g++)
        for (int t = 0; t < l; t++)
            L += (double)c->gate[g * l + t] * c->R[g * n + c->sel[g * l + t]];
    return L;
}

static void gate_backward_case(pmoe_gate_mode mode, int B, int n, int d, int k, int l,
                               uint64_t seed) {
    const char *mname = mode == PMOE_GATE_RENORM        ? "renorm"
                        : mode == PMOE_GATE_SOFTMAX_ALL ? "softmax_all"
                                                        : "ones";
    pmoe_route_shape s = {B, n, d, k, l, mode};
    const int64_t np = (int64_t)B * n * d, nw = (int64_t)k * d, ns = (int64_t)B * n * k,
                  ng = (int64_t)B * k * l;
    gate_ctx c = {s,
                  frand(np, seed, -1, 1),
                  frand(nw, seed + 1, -1, 1),
                  fbuf(ns),
                  fbuf(ng),
                  ibuf(ng),
                  ibuf(ng),
                  frand((int64_t)B * k * n, seed + 2, -1, 1)};
    cpu_gate_topl_forward(NULL, &s, c.patches, c.router, c.scores, c.sel0, c.gate);
    float *scores0 = fcopy(c.scores, ns), *gate0 = fcopy(c.gate, ng);

    /* Analytic: dgate = R; dscores / drouter start as NaN; dpatches starts
     * at D0 and must come back as D0 + the router's share. */
    float *dgate = fbuf(ng), *dscores = fbuf(ns), *drouter = fbuf(nw);
    for (int64_t g = 0; g < (int64_t)B * k; g++)
        for (int t = 0; t < l; t++) dgate[g * l + t] = c.R[g * n + c.sel0[g * l + t]];
    float *D0 = frand(np, seed + 3, -2, 2), *dpatches = fcopy(D0, np);
    cpu_gate_topl_backward(NULL, &s, c.patches, c.router, scores0, c.sel0, gate0, dgate, dscores,
                           drouter, dpatches);
    float *dp_share = fbuf(np);
    for (int64_t i = 0; i < np; i++) dp_share[i] = dpatches[i] - D0[i];

    char what[128];
    if (mode == PMOE_GATE_ONES) {
        snprintf(what, sizeof what, "gate backward ones B=%d n=%d k=%d l=%d", B, n, k, l);
        CHECK_MSG(all_zero(drouter, nw), "%s: drouter_w not zero", what);
        CHECK_MSG(all_zero(dscores, ns), "%s: dscores not zero", what);
        CHECK_MSG(memcmp(dpatches, D0, (size_t)np * sizeof(float)) == 0, "%s: dpatches changed",
                  what);
        printf("  %-44s drouter, dscores zero; dpatches untouched\n", what);
        return;
    }
    CHECK_MSG(all_finite(dscores, ns), "gate backward %s: dscores not fully written", mname);
    if (mode == PMOE_GATE_RENORM) { /* only the selected patches get a score gradient */
        int stray = 0;
        for (int b = 0; b < B; b++)
            for (int e = 0; e < k; e++)
                for (int j = 0; j < n; j++) {
                    int picked = 0;
                    for (int t = 0; t < l; t++) picked |= c.sel0[(b * k + e) * l + t] == j;
                    stray += !picked && dscores[((int64_t)b * n + j) * k + e] != 0.0f;
                }
        CHECK_MSG(stray == 0, "renorm: %d unselected patches have a nonzero dscore", stray);
    }

    double *fd = dbuf(np > nw ? np : nw);
    unsigned char *skip = bbuf(np > nw ? np : nw);
    const double eps = 1e-2;
    fd_grad(gate_objective, &c, c.router, nw, eps, fd, skip);
    snprintf(what, sizeof what, "gate %s B=%d n=%d k=%d l=%d: drouter_w", mname, B, n, k, l);
    check_grad(what, drouter, fd, skip, nw, 2e-5, 2e-4);
    fd_grad(gate_objective, &c, c.patches, np, eps, fd, skip);
    snprintf(what, sizeof what, "gate %s B=%d n=%d k=%d l=%d: dpatches (+=)", mname, B, n, k, l);
    check_grad(what, dp_share, fd, skip, np, 2e-5, 2e-4);

    /* dpatches NULL is accepted and changes nothing else. */
    float *dscores2 = fbuf(ns), *drouter2 = fbuf(nw);
    cpu_gate_topl_backward(NULL, &s, c.patches, c.router, scores0, c.sel0, gate0, dgate, dscores2,
                           drouter2, NULL);
    CHECK_MSG(memcmp(drouter, drouter2, (size_t)nw * sizeof(float)) == 0 &&
                  memcmp(dscores, dscores2, (size_t)ns * sizeof(float)) == 0,
              "gate backward %s: dpatches = NULL changes drouter/dscores", mname);
    /* Accumulation: from zero, the share alone. */
    float *dp0 = fbuf(np);
    memset(dp0, 0, (size_t)np * sizeof(float));
    cpu_gate_topl_backward(NULL, &s, c.patches, c.router, scores0, c.sel0, gate0, dgate, dscores2,
                           drouter2, dp0);
    double *share = dbuf(np);
    for (int64_t i = 0; i < np; i++) share[i] = (double)D0[i] + dp0[i];
    snprintf(what, sizeof what, "gate %s: dpatches D0 + share == accumulated", mname);
    check_close(what, dpatches, share, np, 1e-6, 1e-6);
}

static void test_gate_backward(void) {
    printf("gate_topl_backward (finite differences, eps 1e-2, Richardson)\n");
    gate_backward_case(PMOE_GATE_RENORM, 2, 6, 4, 3, 2, 300);
    gate_backward_case(PMOE_GATE_RENORM, 2, 6, 4, 3, 6, 310);
    gate_backward_case(PMOE_GATE_RENORM, 2, 7, 3, 1, 3, 320);
    gate_backward_case(PMOE_GATE_SOFTMAX_ALL, 2, 6, 4, 3, 2, 330);
    gate_backward_case(PMOE_GATE_SOFTMAX_ALL, 2, 6, 4, 3, 1, 340);
    gate_backward_case(PMOE_GATE_SOFTMAX_ALL, 2, 6, 4, 3, 6, 350);
    gate_backward_case(PMOE_GATE_SOFTMAX_ALL, 3, 5, 3, 1, 2, 360);
    gate_backward_case(PMOE_GATE_ONES, 2, 6, 4, 3, 2, 370);
}

/* --------------------------------------------------------------- dispatch */

static void test_dispatch(void) {
    printf("dispatch_gather\n");
    /* B=2 n=4 d=3 k=3 l=2; patch value 100 b + 10 j + i. Sample 0: patch 2
     * goes to all three experts, patch 3 to none; sample 1: patch 2 to none. */
    const int B = 2, n = 4, d = 3, k = 3, l = 2;
    const int32_t sel[12] = {2, 0, 2, 1, 0, 2, /* b0: e0 e1 e2 */
                             1, 3, 3, 1, 0, 3 /* b1 */};
    pmoe_route_shape s = {B, n, d, k, l, PMOE_GATE_RENORM};
    float *patches = fbuf(B * n * d), *xin = fbuf(k * B * l * d);
    for (int b = 0; b < B; b++)
        for (int j = 0; j < n; j++)
            for (int i = 0; i < d; i++)
                patches[(b * n + j) * d + i] = (float)(100 * b + 10 * j + i);
    cpu_dispatch_gather(NULL, &s, patches, sel, xin);
    /* Expert 2, sample 1, slot 1 is row (2 B + 1) l + 1 = 11: patch 3 of sample 1. */
    const double row11[3] = {130, 131, 132};
    check_exact("dispatch row e2 b1 t1 by hand", xin + 11 * d, row11, d);
    double *want = dbuf(k * B * l * d);
    for (int e = 0; e < k; e++)
        for (int b = 0; b < B; b++)
            for (int t = 0; t < l; t++)
                for (int i = 0; i < d; i++)
                    want[((e * B + b) * l + t) * d + i] = 100 * b + 10 * sel[(b * k + e) * l + t] +
                                                          i;
    check_exact("dispatch rows at e*(B*l) + b*l + t", xin, want, k * B * l * d);

    /* Backward: the sum over the rows each patch went to, 0 where none. */
    const int64_t nx = (int64_t)k * B * l * d, np = (int64_t)B * n * d;
    float *dx = frand(nx, 41, -1, 1), *dp = fbuf(np);
    cpu_dispatch_gather_backward(NULL, &s, dx, sel, dp);
    double *wdp = dbuf(np);
    for (int e = 0; e < k; e++)
        for (int b = 0; b < B; b++)
            for (int t = 0; t < l; t++)
                for (int i = 0; i < d; i++)
                    wdp[(b * n + sel[(b * k + e) * l + t]) * d + i] +=
                        dx[((e * B + b) * l + t) * d + i];
    check_close("dispatch backward (multi-picked, unpicked 0)", dp, wdp, np, 1e-6, 1e-6);
    CHECK(all_zero(dp + (0 * n + 3) * d, d) && all_zero(dp + (1 * n + 2) * d, d));
    float *xr = frand(np, 42, -1, 1);
    cpu_dispatch_gather(NULL, &s, xr, sel, xin);
    check_scalar("dispatch adjoint <Gx,y> vs <x,G^T y>", dot_ff(xin, dx, nx), dot_ff(xr, dp, np),
                 1e-12);
}

/* ----------------------------------------------------------------- expert */

typedef struct {
    int k, d, h;
    int64_t rows;
    float *x, *w, *hid;
    const float *hid0, *R;
} expert_ctx;

static double expert_objective(void *p, int *same) {
    expert_ctx *c = p;
    const int64_t nh = (int64_t)c->k * c->rows * c->h;
    cpu_expert_forward(NULL, c->k, c->rows, c->d, c->h, c->x, c->w, c->hid);
    for (int64_t i = 0; i < nh; i++)
        if ((c->hid[i] > 0.0f) != (c->hid0[i] > 0.0f)) *same = 0;
    return dot_ff(c->hid, c->R, nh);
}

static void test_expert(void) {
    printf("expert\n");
    { /* k=2 rows=2 d=2 h=2 by hand; expert 1 must use W_1 on X_1. */
        const float X[8] = {1, 2, -1, 0.5f, /* X_0 */ 2, 1, 0, -1 /* X_1 */};
        const float W[8] = {1, -1, 0.5f, 0.5f, /* W_0 */ 1, 1, -1, -2 /* W_1 */};
        /* X_0 W_0^T = [-1 1.5; -1.5 -0.25], X_1 W_1^T = [3 -4; -1 2] */
        const double want[8] = {0, 1.5, 0, 0, 3, 0, 0, 2};
        float *hid = fbuf(8);
        cpu_expert_forward(NULL, 2, 2, 2, 2, X, W, hid);
        check_exact("expert forward by hand (ReLU, per expert)", hid, want, 8);
    }
    const int k = 3, d = 5, h = 4;
    const int64_t rows = 6, nx = k * rows * d, nw = (int64_t)k * h * d, nh = k * rows * h;
    expert_ctx c = {k,
                    d,
                    h,
                    rows,
                    frand(nx, 51, -1, 1),
                    frand(nw, 52, -1, 1),
                    fbuf(nh),
                    NULL,
                    frand(nh, 53, -1, 1)};
    cpu_expert_forward(NULL, k, rows, d, h, c.x, c.w, c.hid);
    double *want = dbuf(nh);
    int negatives = 0;
    for (int e = 0; e < k; e++)
        for (int64_t r = 0; r < rows; r++)
            for (int u = 0; u < h; u++) {
                double acc = 0.0;
                for (int i = 0; i < d; i++)
                    acc += (double)c.x[(e * rows + r) * d + i] * c.w[((int64_t)e * h + u) * d + i];
                want[(e * rows + r) * h + u] = acc > 0 ? acc : 0.0;
                negatives += acc < 0;
            }
    check_close("expert forward random vs loop", c.hid, want, nh, 1e-6, 1e-5);
    CHECK_MSG(negatives > nh / 5 && negatives < nh * 4 / 5, "ReLU barely exercised: %d of %lld",
              negatives, (long long)nh);
    float *hid0 = fcopy(c.hid, nh);
    c.hid0 = hid0;

    float *dh = fcopy(c.R, nh), *dw = fbuf(nw), *dx = fbuf(nx);
    cpu_expert_backward(NULL, k, rows, d, h, c.x, c.w, hid0, dh, dw, dx);
    double *fd = dbuf(nx > nw ? nx : nw);
    unsigned char *skip = bbuf(nx > nw ? nx : nw);
    fd_grad(expert_objective, &c, c.w, nw, 1e-2, fd, skip);
    check_grad("expert backward dW (FD)", dw, fd, skip, nw, 1e-4, 1e-4);
    fd_grad(expert_objective, &c, c.x, nx, 1e-2, fd, skip);
    check_grad("expert backward dX (FD)", dx, fd, skip, nx, 1e-4, 1e-4);
    /* dexpert_in NULL: dW alone, the same. */
    float *dh2 = fcopy(c.R, nh), *dw2 = fbuf(nw);
    cpu_expert_backward(NULL, k, rows, d, h, c.x, c.w, hid0, dh2, dw2, NULL);
    CHECK_MSG(memcmp(dw, dw2, (size_t)nw * sizeof(float)) == 0, "expert dX = NULL changes dW");
}

/* ---------------------------------------------------------------- combine */

typedef struct {
    pmoe_combine_shape s;
    float *hidden, *gate, *out_w, *logits;
    const float *R;
} combine_ctx;

static double combine_objective(void *p, int *same) {
    combine_ctx *c = p;
    cpu_combine_forward(NULL, &c->s, c->hidden, c->gate, c->out_w, c->logits);
    return dot_ff(c->logits, c->R, c->s.batch * c->s.classes);
}

static void combine_case(int with_gate, uint64_t seed) {
    const int B = 2, k = 2, l = 3, h = 4, C = 3;
    pmoe_combine_shape s = {B, k, l, h, C};
    const int64_t nh = (int64_t)k * B * l * h, ng = (int64_t)B * k * l, nw = (int64_t)k * h * C;
    combine_ctx c = {s,
                     frand(nh, seed, 0, 1),
                     with_gate ? frand(ng, seed + 1, 0, 1) : NULL,
                     frand(nw, seed + 2, -1, 1),
                     fbuf(B * C),
                     frand(B * C, seed + 3, -1, 1)};
    cpu_combine_forward(NULL, &s, c.hidden, c.gate, c.out_w, c.logits);
    double *want = dbuf(B * C);
    for (int b = 0; b < B; b++)
        for (int cc = 0; cc < C; cc++) {
            double f = 0.0;
            for (int e = 0; e < k; e++)
                for (int r = 0; r < h; r++)
                    for (int t = 0; t < l; t++) {
                        const double g = with_gate ? c.gate[(b * k + e) * l + t] : 1.0;
                        f += c.out_w[(e * h + r) * C + cc] / (double)l * g *
                             c.hidden[((int64_t)e * B * l + b * l + t) * h + r];
                    }
            want[b * C + cc] = f;
        }
    const char *tag = with_gate ? "gate" : "gate NULL";
    char what[96];
    snprintf(what, sizeof what, "combine forward random (%s) vs loop", tag);
    check_close(what, c.logits, want, B * C, 1e-6, 1e-5);

    float *dlogits = fcopy(c.R, B * C), *dh = fbuf(nh), *dg = fbuf(ng), *dw = fbuf(nw);
    cpu_combine_backward(NULL, &s, dlogits, c.hidden, c.gate, c.out_w, dh, with_gate ? dg : NULL,
                         dw);
    /* Linear in each input: big steps, no truncation error. */
    double *fd = dbuf(nh);
    unsigned char *skip = bbuf(nh);
    fd_grad(combine_objective, &c, c.hidden, nh, 0.25, fd, skip);
    snprintf(what, sizeof what, "combine (%s) dhidden (FD)", tag);
    check_grad(what, dh, fd, NULL, nh, 1e-5, 1e-4);
    if (with_gate) {
        fd_grad(combine_objective, &c, c.gate, ng, 0.25, fd, skip);
        check_grad("combine (gate) dgate (FD)", dg, fd, NULL, ng, 1e-5, 1e-4);
    }
    fd_grad(combine_objective, &c, c.out_w, nw, 0.25, fd, skip);
    snprintf(what, sizeof what, "combine (%s) dout_w (FD)", tag);
    check_grad(what, dw, fd, NULL, nw, 1e-5, 1e-4);
    /* dgate and dout_w NULL accepted; dhidden the same. */
    float *dh2 = fbuf(nh);
    cpu_combine_backward(NULL, &s, dlogits, c.hidden, c.gate, c.out_w, dh2, NULL, NULL);
    CHECK_MSG(memcmp(dh, dh2, (size_t)nh * sizeof(float)) == 0,
              "combine (%s): NULL dgate/dout_w changes dhidden", tag);
}

static void test_combine(void) {
    printf("combine\n");
    { /* B=1 k=2 l=2 h=1 c=1: hidden e0 [2 3], e1 [1 4]; gate e0 [.25 .75],
         * e1 [.5 .5]; a = [1, -2]. f = (1/2)(1 (.5 + 2.25) - 2 (.5 + 2)) = -1.125;
         * G = 1: f = (1/2)(1 * 5 - 2 * 5) = -2.5. */
        pmoe_combine_shape s = {1, 2, 2, 1, 1};
        const float hid[4] = {2, 3, 1, 4}, gate[4] = {0.25f, 0.75f, 0.5f, 0.5f}, a[2] = {1, -2};
        float f[1] = {NAN};
        const double w1[1] = {-1.125}, w2[1] = {-2.5};
        cpu_combine_forward(NULL, &s, hid, gate, a, f);
        check_exact("combine by hand with gate (1/l factor)", f, w1, 1);
        cpu_combine_forward(NULL, &s, hid, NULL, a, f);
        check_exact("combine by hand gate NULL (G = 1)", f, w2, 1);
    }
    combine_case(1, 61);
    combine_case(0, 71);
}

/* ------------------------------------------------------------------ losses */

typedef struct {
    pmoe_loss_kind kind;
    int64_t batch;
    int classes;
    float *logits;
    const int32_t *labels;
} loss_ctx;

static double loss_objective(void *p, int *same) {
    loss_ctx *c = p;
    float stats[2];
    cpu_loss_forward_backward(NULL, c->kind, c->batch, c->classes, c->logits, c->labels, NULL,
                              stats);
    return stats[0];
}

static void test_loss(void) {
    printf("loss_forward_backward\n");
    { /* Logistic: label 1 is y = +1, 0 is y = -1; prediction +1 iff f > 0. */
        const float f[4] = {2, -1, 0, 3};
        const int32_t lab[4] = {1, 1, 0, 0};
        float dl[4] = {NAN, NAN, NAN, NAN}, st[2] = {NAN, NAN};
        cpu_loss_forward_backward(NULL, PMOE_LOSS_LOGISTIC, 4, 1, f, lab, dl, st);
        const double loss =
            (log1p(exp(-2.0)) + log1p(exp(-1.0 * 1 * -1)) + log1p(exp(0.0)) + log1p(exp(3.0))) / 4;
        const double wst[2] = {loss, 2}; /* right: f=2 (y+), f=0 (y-) */
        const double wdl[4] = {-1 / (1 + exp(2.0)) / 4, -1 / (1 + exp(-1.0)) / 4,
                               1 / (1 + exp(0.0)) / 4, 1 / (1 + exp(-3.0)) / 4};
        check_close("logistic loss and correct count by hand", st, wst, 2, 1e-7, 1e-6);
        check_close("logistic dlogits by hand", dl, wdl, 4, 1e-8, 1e-6);
    }
    { /* Softmax CE: argmax takes the first maximum. */
        const float z[9] = {1, 2, 3, 0, 0, 0, 5, 5, 1};
        const int32_t lab[3] = {2, 1, 1};
        float dl[9], st[2];
        for (int i = 0; i < 9; i++) dl[i] = NAN;
        cpu_loss_forward_backward(NULL, PMOE_LOSS_SOFTMAX_CE, 3, 3, z, lab, dl, st);
        double loss = 0.0, wdl[9];
        for (int b = 0; b < 3; b++) {
            double den = 0.0;
            for (int c = 0; c < 3; c++) den += exp((double)z[b * 3 + c]);
            loss += log(den) - z[b * 3 + lab[b]];
            for (int c = 0; c < 3; c++)
                wdl[b * 3 + c] = (exp((double)z[b * 3 + c]) / den - (c == lab[b])) / 3;
        }
        const double wst[2] = {loss / 3, 1}; /* only sample 0; [5 5 1] predicts 0 */
        check_close("softmax CE loss and correct count by hand", st, wst, 2, 1e-7, 1e-6);
        check_close("softmax CE dlogits by hand", dl, wdl, 9, 1e-8, 1e-6);
    }
    { /* Extreme logits: finite loss and gradients. */
        const float f[8] = {100, -100, 1000, -1000, 100, -100, 1000, -1000};
        const int32_t lab[8] = {1, 1, 1, 1, 0, 0, 0, 0};
        float dl[8], st[2];
        cpu_loss_forward_backward(NULL, PMOE_LOSS_LOGISTIC, 8, 1, f, lab, dl, st);
        const double wst[2] = {(100 + 1000 + 100 + 1000) / 8.0, 4};
        const double wdl[8] = {0, -1.0 / 8, 0, -1.0 / 8, 1.0 / 8, 0, 1.0 / 8, 0};
        check_close("logistic extreme logits: loss, correct", st, wst, 2, 1e-6, 1e-6);
        check_close("logistic extreme logits: dlogits", dl, wdl, 8, 1e-12, 1e-6);
        const float z[6] = {1000, -1000, 0, -1000, 1000, 1000};
        const int32_t lz[2] = {1, 2};
        float dz[6], sz[2];
        cpu_loss_forward_backward(NULL, PMOE_LOSS_SOFTMAX_CE, 2, 3, z, lz, dz, sz);
        /* sample 0: 2000; sample 1: log 2 (two equal maxima, label one of them) */
        const double wsz[2] = {(2000 + log(2.0)) / 2, 0};
        const double wdz[6] = {0.5, -0.5, 0, 0, 0.25, -0.25};
        check_close("softmax CE extreme logits: loss, correct", sz, wsz, 2, 1e-6, 1e-6);
        check_close("softmax CE extreme logits: dlogits", dz, wdz, 6, 1e-12, 1e-6);
    }
    { /* Finite differences of the mean loss. */
        int32_t lab[6] = {1, 0, 0, 1, 1, 0};
        loss_ctx c = {PMOE_LOSS_LOGISTIC, 6, 1, frand(6, 81, -3, 3), lab};
        float *dl = fbuf(6), st[2];
        cpu_loss_forward_backward(NULL, c.kind, 6, 1, c.logits, lab, dl, st);
        double *fd = dbuf(24);
        unsigned char *skip = bbuf(24);
        fd_grad(loss_objective, &c, c.logits, 6, 1e-2, fd, skip);
        check_grad("logistic dlogits (FD)", dl, fd, NULL, 6, 2e-5, 1e-3);
        int32_t lz[4] = {3, 0, 2, 2};
        loss_ctx cz = {PMOE_LOSS_SOFTMAX_CE, 4, 5, frand(20, 82, -3, 3), lz};
        float *dz = fbuf(20);
        cpu_loss_forward_backward(NULL, cz.kind, 4, 5, cz.logits, lz, dz, st);
        fd_grad(loss_objective, &cz, cz.logits, 20, 1e-2, fd, skip);
        check_grad("softmax CE dlogits (FD)", dz, fd, NULL, 20, 2e-5, 1e-3);
    }
}

/* ------------------------------------------------------ router linear loss */

typedef struct {
    int64_t batch;
    int n, k;
    float *scores, *dscores;
    const int32_t *pair;
    const float *weight;
} router_ctx;

static double router_objective(void *p, int *same) {
    router_ctx *c = p;
    float st[1];
    cpu_router_linear_loss(NULL, c->batch, c->n, c->k, c->scores, c->pair, c->weight, c->dscores,
                           st);
    return st[0];
}

static void test_router_linear_loss(void) {
    printf("router_linear_loss\n");
    const int B = 3, n = 3, k = 4;
    const int32_t pair[3] = {1, 0, 1};
    const float weight[3] = {0.5f, -0.25f, 0.125f};
    router_ctx c = {B, n, k, frand(B * n * k, 91, -1, 1), fbuf(B * n * k), pair, weight};
    float st[1] = {NAN};
    cpu_router_linear_loss(NULL, B, n, k, c.scores, pair, weight, c.dscores, st);
    double loss = 0.0, *wd = dbuf(B * n * k);
    for (int b = 0; b < B; b++)
        for (int j = 0; j < n; j++) {
            const float *row = c.scores + (b * n + j) * k;
            loss -= weight[b] * ((double)row[2 * pair[b]] - row[2 * pair[b] + 1]);
            wd[(b * n + j) * k + 2 * pair[b]] = -weight[b];
            wd[(b * n + j) * k + 2 * pair[b] + 1] = weight[b];
        }
    const double wl[1] = {loss};
    check_close("router linear loss vs loop", st, wl, 1, 1e-7, 1e-6);
    check_exact("router linear dscores (others 0)", c.dscores, wd, B * n * k);
    float *ds = fcopy(c.dscores, B * n * k);
    double *fd = dbuf(B * n * k);
    unsigned char *skip = bbuf(B * n * k);
    fd_grad(router_objective, &c, c.scores, B * n * k, 0.25, fd, skip);
    check_grad("router linear dscores (FD)", ds, fd, NULL, B * n * k, 1e-5, 1e-4);
}

/* -------------------------------------------------------------------- SGD */

static void test_sgd(void) {
    printf("sgd_update\n");
    { /* plain, no velocity */
        float p[3] = {1, -2, 0.5f};
        const float g[3] = {0.5f, 1, -4};
        cpu_sgd_update(NULL, 3, p, g, NULL, 0.1f, 0.0f, 0.0f, NULL);
        const double w[3] = {0.95, -2.1, 0.9};
        check_close("sgd plain", p, w, 3, 1e-7, 1e-6);
    }
    { /* weight decay 0.5: p -= lr (g + wd p) */
        float p[3] = {1, -2, 0.5f};
        const float g[3] = {0.5f, 1, -4};
        cpu_sgd_update(NULL, 3, p, g, NULL, 0.1f, 0.0f, 0.5f, NULL);
        const double w[3] = {1 - 0.1 * (0.5 + 0.5), -2 - 0.1 * (1 - 1), 0.5 - 0.1 * (-4 + 0.25)};
        check_close("sgd weight decay", p, w, 3, 1e-7, 1e-6);
    }
    { /* momentum 0.9 and weight decay 0.1, two steps, by hand */
        float p[2] = {1, -1}, v[2] = {0, 0};
        const float g1[2] = {1, 2}, g2[2] = {-1, 0.5f};
        const double lr = 0.1, mu = 0.9, wd = 0.1;
        double P[2] = {1, -1}, V[2] = {0, 0};
        const float *gs[2] = {g1, g2};
        for (int step = 0; step < 2; step++) {
            cpu_sgd_update(NULL, 2, p, gs[step], v, (float)lr, (float)mu, (float)wd, NULL);
            for (int i = 0; i < 2; i++) {
                V[i] = mu * V[i] + gs[step][i] + wd * P[i];
                P[i] -= lr * V[i];
            }
        }
        /* step 1: v = [1.1, 1.9], p = [0.89, -1.19]; step 2: v = [0.079, 2.091],
         * p = [0.8821, -1.3991] */
        const double wp[2] = {0.8821, -1.3991}, wv[2] = {0.079, 2.091};
        check_close("sgd momentum two steps: param", p, wp, 2, 1e-6, 1e-6);
        check_close("sgd momentum two steps: velocity", v, wv, 2, 1e-6, 1e-6);
        check_close("sgd momentum: hand values vs loop", p, P, 2, 1e-6, 1e-6);
    }
}

/* ------------------------------------------------------------ determinism */

static void det_run(det_result *r) {
    r->count = 0;
    { /* GEMMs cut into several 64-blocks: rows (5 x 2) and columns (8 x 2) */
        const int64_t m = 300, n = 40, k = 30;
        float *A = frand(2 * m * k, 501, -1, 1), *B = frand(2 * k * n, 502, -1, 1);
        float *C = frand(2 * m * n, 503, -1, 1);
        cpu_gemm(NULL, 0, 0, m, n, k, 1.3f, A, k, m * k, B, n, k * n, 0.7f, C, n, m * n, 2);
        det_add(r, "gemm NN 300x40x30 b2", C, 2 * m * n);
        const int64_t m2 = 20, n2 = 500;
        float *A2 = frand(2 * k * m2, 504, -1, 1), *B2 = frand(2 * n2 * k, 505, -1, 1);
        float *C2 = fbuf(2 * m2 * n2);
        cpu_gemm(NULL, 1, 1, m2, n2, k, 1.0f, A2, m2, k * m2, B2, k, n2 * k, 0.0f, C2, n2, m2 * n2,
                 2);
        det_add(r, "gemm TT 20x500x30 b2", C2, 2 * m2 * n2);
    }
    const int B = 64, n = 16, d = 64, k = 4, l = 4, h = 80, C = 10;
    const int64_t np = (int64_t)B * n * d, ns = (int64_t)B * n * k, ng = (int64_t)B * k * l,
                  rows = (int64_t)B * l, nx = k * rows * d, nh = k * rows * h;
    float *patches = frand(np, 511, -1, 1), *router = frand(k * d, 512, -0.5f, 0.5f);
    const pmoe_gate_mode modes[2] = {PMOE_GATE_RENORM, PMOE_GATE_SOFTMAX_ALL};
    for (int mi = 0; mi < 2; mi++) {
        pmoe_route_shape s = {B, n, d, k, l, modes[mi]};
        float *scores = fbuf(ns), *gate = fbuf(ng), *dgate = frand(ng, 513, -1, 1);
        int32_t *sel = ibuf(ng);
        float *dscores = fbuf(ns), *drouter = fbuf(k * d), *dp = frand(np, 514, -1, 1);
        cpu_gate_topl_forward(NULL, &s, patches, router, scores, sel, gate);
        cpu_gate_topl_backward(NULL, &s, patches, router, scores, sel, gate, dgate, dscores,
                               drouter, dp);
        det_add(r, mi ? "gate fwd softmax_all: scores" : "gate fwd renorm: scores", scores, ns);
        det_add_bytes(r, mi ? "gate fwd softmax_all: selected" : "gate fwd renorm: selected", sel,
                      (size_t)ng * sizeof(int32_t));
        det_add(r, mi ? "gate fwd softmax_all: gate" : "gate fwd renorm: gate", gate, ng);
        det_add(r, mi ? "gate bwd softmax_all: dscores" : "gate bwd renorm: dscores", dscores, ns);
        det_add(r, mi ? "gate bwd softmax_all: drouter" : "gate bwd renorm: drouter", drouter,
                k * d);
        det_add(r, mi ? "gate bwd softmax_all: dpatches" : "gate bwd renorm: dpatches", dp, np);
        if (mi) continue;

        /* dispatch, experts and combine on this routing */
        float *xin = fbuf(nx), *dxin = frand(nx, 515, -1, 1), *dpat = fbuf(np);
        cpu_dispatch_gather(NULL, &s, patches, sel, xin);
        cpu_dispatch_gather_backward(NULL, &s, dxin, sel, dpat);
        det_add(r, "dispatch gather", xin, nx);
        det_add(r, "dispatch backward", dpat, np);
        float *W = frand((int64_t)k * h * d, 516, -0.2f, 0.2f), *hid = fbuf(nh);
        cpu_expert_forward(NULL, k, rows, d, h, xin, W, hid);
        det_add(r, "expert forward", hid, nh);
        pmoe_combine_shape cs = {B, k, l, h, C};
        float *a = frand((int64_t)k * h * C, 517, -1, 1), *logits = fbuf(B * C);
        cpu_combine_forward(NULL, &cs, hid, gate, a, logits);
        det_add(r, "combine forward", logits, B * C);
        float *dl = frand(B * C, 518, -1, 1), *dh = fbuf(nh), *dg = fbuf(ng),
              *da = fbuf((int64_t)k * h * C);
        cpu_combine_backward(NULL, &cs, dl, hid, gate, a, dh, dg, da);
        det_add(r, "combine backward: dhidden", dh, nh);
        det_add(r, "combine backward: dgate", dg, ng);
        det_add(r, "combine backward: dout_w", da, k * h * C);
        float *dW = fbuf((int64_t)k * h * d), *dX = fbuf(nx);
        cpu_expert_backward(NULL, k, rows, d, h, xin, W, hid, dh, dW, dX);
        det_add(r, "expert backward: dW", dW, k * h * d);
        det_add(r, "expert backward: dX", dX, nx);
    }
}

/* The routing's fast paths against the reference: cpu_gate_topl_forward
 * (top-l by ranks for n <= 32, the insertion sort beyond and for rows with
 * a NaN) picks what cpu_topl_select picks from the same scores, on
 * tie-heavy integer scores; and cpu_patch_extract_route (one pass per
 * sample) gives what patch extraction followed by gate_topl_forward gives:
 * the same bits with the AVX-512 kernels, the scores to rounding and the
 * same picks through OpenBLAS. */
static void route_case(int B, int C, int side, int p, int k, int l, int ties, int with_nan) {
    const pmoe_patch_shape ps = {B, C, side, side, p};
    const int n = pmoe_patch_count(&ps), d = pmoe_patch_dim(&ps);
    const pmoe_route_shape rs = {B, n, d, k, l, PMOE_GATE_RENORM};
    const int64_t pixels = (int64_t)B * C * side * side;
    float *images = fbuf(pixels), *router = fbuf((int64_t)k * d);
    float *patches = fbuf((int64_t)B * n * d), *scores = fbuf((int64_t)B * n * k);
    float *gate = fbuf((int64_t)B * k * l);
    float *patches2 = fbuf((int64_t)B * n * d), *scores2 = fbuf((int64_t)B * n * k);
    float *gate2 = fbuf((int64_t)B * k * l);
    int32_t *sel = ibuf((int64_t)B * k * l), *sel2 = ibuf((int64_t)B * k * l);
    int32_t *want = ibuf(l);
    fill_uniform(images, pixels, 300 + n + k, ties ? 0 : -1, ties ? 3 : 1);
    fill_uniform(router, (int64_t)k * d, 400 + n, ties ? 0 : -0.5f, ties ? 2 : 0.5f);
    if (ties) { /* small integers: exact scores, many equal */
        for (int64_t i = 0; i < pixels; i++) images[i] = floorf(images[i]);
        for (int64_t i = 0; i < (int64_t)k * d; i++) router[i] = floorf(router[i]);
    }
    if (with_nan) images[(int64_t)(B / 2) * C * side * side] = NAN; /* one patch of one sample */
    char what[120];
    snprintf(what, sizeof what, "B=%d n=%d d=%d k=%d l=%d%s%s", B, n, d, k, l, ties ? ", ties" : "",
             with_nan ? ", a NaN" : "");
    for (int ask = 1; ask >= 0; ask--) {
        /* What runs, not what was asked: a CPU without AVX-512 takes the OpenBLAS path at 1 too. */
        const int simd = cpu_simd_kernels(ask);
        cpu_patch_extract_forward(NULL, &ps, images, patches);
        cpu_gate_topl_forward(NULL, &rs, patches, router, scores, sel, gate);
        int bad = 0;
        for (int64_t b = 0; b < B; b++)
            for (int e = 0; e < k; e++) {
                cpu_topl_select(scores + b * n * k + e, k, n, l, want);
                bad += !same_ints(sel + (b * k + e) * l, want, l);
            }
        CHECK_MSG(bad == 0, "%s: %d of %d picks differ from cpu_topl_select on the same scores",
                  what, bad, B * k);
        cpu_patch_extract_route(NULL, &ps, &rs, images, router, patches2, scores2, sel2, gate2);
        CHECK_MSG(memcmp(patches, patches2, sizeof(float) * B * n * d) == 0,
                  "%s: fused patches differ", what);
        CHECK_MSG(same_ints(sel, sel2, (int64_t)B * k * l), "%s, simd %d: fused picks differ", what,
                  simd);
        if (simd || ties) { /* scored patch by patch alike (integer sums are exact) */
            CHECK_MSG(memcmp(scores, scores2, sizeof(float) * B * n * k) == 0,
                      "%s: fused scores differ", what);
            CHECK_MSG(memcmp(gate, gate2, sizeof(float) * B * k * l) == 0 || with_nan,
                      "%s: fused gates differ", what);
        } else {
            double worst = 0.0;
            for (int64_t i = 0; i < (int64_t)B * n * k; i++)
                worst = fmax(worst, fabs((double)scores[i] - scores2[i]) /
                                        (1.0 + fabs((double)scores[i])));
            CHECK_MSG(worst < 1e-5, "%s, OpenBLAS: fused scores off by %.3g", what, worst);
        }
    }
    cpu_simd_kernels(1);
}

static void test_route_paths(void) {
    printf("gate_topl fast paths and the fused patch_extract_route\n");
    route_case(9, 2, 12, 3, 5, 4, 1, 0);   /* n = 16: ranks, many ties */
    route_case(9, 2, 12, 3, 5, 4, 1, 1);   /* a NaN score row: the insertion sort */
    route_case(6, 1, 12, 2, 3, 5, 1, 0);   /* n = 36: the insertion sort, ties */
    route_case(5, 1, 112, 28, 8, 6, 0, 0); /* the mosaic's shape, random scores */
    route_case(3, 3, 8, 4, 7, 4, 0, 0);    /* n = 4 = l, d = 48, k = 7 (passes of 4 + 3) */
}

int main(void) {
    /* The backend keeps OpenBLAS to one thread; the ops themselves take NULL. */
    pmoe_backend *be = cpu_backend_or_exit();
    test_gemm();
    test_patch_extract();
    test_topl_select();
    test_gate_forward();
    test_route_paths();
    test_gate_backward();
    test_dispatch();
    test_expert();
    test_combine();
    test_loss();
    test_router_linear_loss();
    test_sgd();
    check_thread_determinism(det_run, 0);
    free_all();
    pmoe_backend_destroy(be);
    return test_finish("test_ops");
}
