/* test_ops_gathered.c: the CPU backend's fused gather + expert ops.
 *
 * cpu_expert_forward_gathered and cpu_expert_backward_gathered against
 * cpu_dispatch_gather followed by cpu_expert_forward / cpu_expert_backward
 * and against sums in double precision: equal to rounding, with the AVX-512
 * kernels (where the CPU has them) and with the portable gather + OpenBLAS
 * path, whose forward makes the unfused op's very calls and so must match it
 * bit for bit. The backward with the router's gradient folded in (dscores
 * given) must give the router's dW of the dense product and, on the
 * AVX-512 path, the very same expert dW. Each path must give the same bits with 1 and 2 threads. The
 * shapes sit on both sides of every block edge (4-row groups, 6-unit groups,
 * 64-row blocks, 64- and 512-column slabs, h above and below d, one expert
 * taking every patch). The portable path's scratch must show in the
 * backend's peak and be gone afterwards. */
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu_dot.h"
#include "backend/cpu_ops.h"
#include "test_util.h"

typedef struct shape {
    int batch, n, d, k, l, h;
} shape;

static int same_bits(const float *a, const float *b, int64_t count, int64_t *where) {
    for (int64_t i = 0; i < count; i++)
        if (memcmp(&a[i], &b[i], sizeof(float)) != 0) {
            *where = i;
            return 0;
        }
    return 1;
}

/* The 1-thread results of the current shape and path, for the 2-thread run. */
static float *first_hidden, *first_dw, *first_drouter;

static void check_shape(const shape *sh, int simd, int threads, uint64_t seed) {
    omp_set_num_threads(threads);
    const int64_t B = sh->batch, n = sh->n, d = sh->d, k = sh->k, l = sh->l, h = sh->h;
    const int64_t rows = B * l;
    char what[160];
    snprintf(what, sizeof what, "B=%d n=%d d=%d k=%d l=%d h=%d, %s, %d threads", sh->batch, sh->n,
             sh->d, sh->k, sh->l, sh->h, simd ? "AVX-512" : "OpenBLAS", threads);
    float *patches = malloc(sizeof(float) * B * n * d), *w = malloc(sizeof(float) * k * h * d);
    float *scores = malloc(sizeof(float) * B * n * k);
    int32_t *selected = malloc(sizeof(int32_t) * B * k * l);
    float *expert_in = malloc(sizeof(float) * k * rows * d);
    float *hidden_ref = malloc(sizeof(float) * k * rows * h),
          *hidden = malloc(sizeof(float) * k * rows * h);
    float *dh_ref = malloc(sizeof(float) * k * rows * h),
          *dh = malloc(sizeof(float) * k * rows * h);
    float *dw_ref = malloc(sizeof(float) * k * h * d), *dw = malloc(sizeof(float) * k * h * d);
    double *want_hidden = calloc((size_t)(k * rows * h), sizeof(double));
    double *want_dw = calloc((size_t)(k * h * d), sizeof(double));
    fill_uniform(patches, B * n * d, seed, -1, 1);
    fill_uniform(w, k * h * d, seed + 1, -0.5f, 0.5f);
    fill_uniform(scores, B * n * k, seed + 2, -1, 1);
    fill_uniform(dh_ref, k * rows * h, seed + 3, -1, 1);
    memcpy(dh, dh_ref, sizeof(float) * k * rows * h);
    for (int64_t b = 0; b < B; b++)
        for (int e = 0; e < k; e++)
            cpu_topl_select(scores + b * n * k + e, k, (int)n, (int)l, selected + (b * k + e) * l);
    pmoe_route_shape rs = {B, (int)n, (int)d, (int)k, (int)l, PMOE_GATE_RENORM};

    cpu_dispatch_gather(NULL, &rs, patches, selected, expert_in);
    cpu_expert_forward(NULL, (int)k, rows, (int)d, (int)h, expert_in, w, hidden_ref);
    cpu_expert_backward(NULL, (int)k, rows, (int)d, (int)h, expert_in, w, hidden_ref, dh_ref,
                        dw_ref, NULL);
    /* in double: ReLU(<w_u, x_r>), and dW from the masked dpre that dh_ref now holds */
    double hidden_scale = 0.0, dw_scale = 0.0;
    for (int e = 0; e < k; e++)
        for (int64_t r = 0; r < rows; r++) {
            const float *x = expert_in + ((int64_t)e * rows + r) * d;
            for (int u = 0; u < h; u++) {
                double dot = 0.0;
                for (int i = 0; i < d; i++) {
                    const double term = (double)w[((int64_t)e * h + u) * d + i] * x[i];
                    dot += term;
                    hidden_scale += term < 0 ? -term : term;
                    const double g = (double)dh_ref[((int64_t)e * rows + r) * h + u] * x[i];
                    want_dw[((int64_t)e * h + u) * d + i] += g;
                    dw_scale += g < 0 ? -g : g;
                }
                want_hidden[((int64_t)e * rows + r) * h + u] = dot > 0 ? dot : 0.0;
            }
        }

    CHECK(cpu_simd_kernels(simd) == simd || !simd); /* AVX-512 may be absent */
    pmoe_backend *be = NULL;
    pmoe_error err;
    CHECK(pmoe_cpu_backend_create(threads, &be, &err) == PMOE_OK);
    const int64_t before = be ? be->mem.current_bytes : 0;
    cpu_expert_forward_gathered(be, &rs, (int)h, patches, selected, w, hidden);
    /* the backward on the unfused forward's output, so both mask dpre alike */
    cpu_expert_backward_gathered(be, &rs, (int)h, patches, selected, w, hidden_ref, dh, NULL, dw,
                                 NULL);
    /* The router's weight gradient folded in as one more unit per expert:
     * dscores zero but at the picks, as the renormalised gate leaves it. */
    float *dscores = calloc((size_t)(B * n * k), sizeof(float)),
          *pick_grad = malloc(sizeof(float) * B * k * l);
    float *dw_folded = malloc(sizeof(float) * k * h * d), *drouter = malloc(sizeof(float) * k * d);
    double *want_drouter = calloc((size_t)(k * d), sizeof(double)), drouter_scale = 0.0;
    fill_uniform(pick_grad, B * k * l, seed + 4, -1, 1);
    for (int64_t b = 0; b < B; b++)
        for (int e = 0; e < k; e++)
            for (int t = 0; t < l; t++) {
                const int32_t j = selected[(b * k + e) * l + t];
                const float g = pick_grad[(b * k + e) * l + t];
                dscores[(b * n + j) * k + e] = g;
                for (int i = 0; i < d; i++) {
                    const double term = (double)g * patches[(b * n + j) * d + i];
                    want_drouter[e * d + i] += term;
                    drouter_scale += term < 0 ? -term : term;
                }
            }
    cpu_expert_backward_gathered(be, &rs, (int)h, patches, selected, w, hidden_ref, dh, dscores,
                                 dw_folded, drouter);
    char label[200];
    snprintf(label, sizeof label, "hidden, %s", what);
    CHECK(check_close(label, hidden, want_hidden, k * rows * h,
                      1e-6 * (1.0 + hidden_scale / (double)(k * rows * h)), 1e-5));
    snprintf(label, sizeof label, "dW, %s", what);
    CHECK(check_close(label, dw, want_dw, k * h * d, 1e-6 * (1.0 + dw_scale / (double)(k * h * d)),
                      1e-5));
    snprintf(label, sizeof label, "router dW, %s", what);
    CHECK(check_close(label, drouter, want_drouter, k * d,
                      1e-6 * (1.0 + drouter_scale / (double)(k * d)), 1e-5));
    snprintf(label, sizeof label, "dW with the router folded in, %s", what);
    CHECK(check_close(label, dw_folded, want_dw, k * h * d,
                      1e-6 * (1.0 + dw_scale / (double)(k * h * d)), 1e-5));
    int64_t at = -1;
    if (simd) /* each unit's sums are its own: the extra unit changes none of them */
        CHECK_MSG(same_bits(dw_folded, dw, k * h * d, &at),
                  "dW with the router, %s: element %lld differs", what, (long long)at);
    if (threads == 1) {
        CHECK(check_close("dW, unfused", dw_ref, want_dw, k * h * d,
                          1e-6 * (1.0 + dw_scale / (double)(k * h * d)), 1e-5));
    }
    int64_t where = -1;
    if (!simd)
        CHECK_MSG(same_bits(hidden, hidden_ref, k * rows * h, &where),
                  "forward, %s: element %lld %.9g != unfused %.9g", what, (long long)where,
                  where >= 0 ? hidden[where] : 0.0, where >= 0 ? hidden_ref[where] : 0.0);
    CHECK_MSG(same_bits(dh, dh_ref, k * rows * h, &where), "masked dhidden, %s: element %lld", what,
              (long long)where);
    if (threads == 1) {
        free(first_hidden), free(first_dw);
        first_hidden = malloc(sizeof(float) * k * rows * h);
        first_dw = malloc(sizeof(float) * k * h * d);
        memcpy(first_hidden, hidden, sizeof(float) * k * rows * h);
        memcpy(first_dw, dw, sizeof(float) * k * h * d);
        free(first_drouter);
        first_drouter = malloc(sizeof(float) * k * d);
        memcpy(first_drouter, drouter, sizeof(float) * k * d);
    } else {
        CHECK_MSG(same_bits(drouter, first_drouter, k * d, &where),
                  "router dW, %s: element %lld differs from 1 thread", what, (long long)where);
        CHECK_MSG(same_bits(hidden, first_hidden, k * rows * h, &where),
                  "forward, %s: element %lld differs from 1 thread", what, (long long)where);
        CHECK_MSG(same_bits(dw, first_dw, k * h * d, &where),
                  "dW, %s: element %lld differs from 1 thread", what, (long long)where);
    }
    if (be) {
        CHECK(be->mem.current_bytes == before);
        if (!simd) CHECK(be->mem.peak_bytes >= (int64_t)sizeof(float) * 64 * d); /* one row block */
        pmoe_backend_destroy(be);
    }
    free(patches), free(w), free(scores), free(selected), free(expert_in);
    free(hidden_ref), free(hidden), free(dh_ref), free(dh), free(dw_ref), free(dw);
    free(want_hidden), free(want_dw);
    free(dscores), free(pick_grad), free(dw_folded), free(drouter), free(want_drouter);
}

int main(void) {
    const shape shapes[] = {
        {20, 16, 784, 8, 6, 5}, /* the mosaic model */
        {37, 16, 130, 3, 7, 9}, /* row groups, unit groups and column slabs with remainders */
        {5, 4, 4, 2, 2, 10},    /* h > d, d below one vector */
        {1, 16, 8, 4, 2, 40},   /* fewer rows than units: the unfused forward splits columns */
        {3, 9, 12, 1, 9, 7},    /* one expert taking every patch */
        {64, 4, 64, 2, 1, 64},  /* exactly one row block */
        {70, 5, 1100, 2, 2, 3}, /* 512-column slabs with a remainder, 3 row blocks */
    };
    const int have_simd = cpu_simd_kernels(1);
    printf("AVX-512 kernels: %s\n", have_simd ? "available, tested" : "not on this CPU, skipped");
    for (int simd = have_simd; simd >= 0; simd--)
        for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
            for (int threads = 1; threads <= 2; threads++)
                check_shape(&shapes[i], simd, threads, 100 + i);
    cpu_simd_kernels(1);
    free(first_hidden), free(first_dw), free(first_drouter);
    return test_finish("test_ops_gathered");
}
