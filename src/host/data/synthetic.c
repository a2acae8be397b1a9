/* synthetic.c: the theory's data model (the paper's; docs/reproduction.md,
 * result 4).
 *
 * A sample is n patches of dimension d, laid out as an "image" of d channels,
 * height 1 and width n, so patch size 1 makes patch j column j. One patch
 * (the decisive one) holds o1 (label 1, y = +1) or o2 (label 0, y = -1); each
 * other patch holds an irrelevant pattern q_c, c uniform in [0, p) and drawn
 * independently of the label; N(0, noise^2) is added to every coordinate.
 *
 * Patterns: e_1..e_{p+2} is an orthonormal basis (Gram-Schmidt on seeded
 * Gaussian vectors), and
 *     o1  = e_1
 *     o2  = delta_d e_1 + sqrt(1 - delta_d^2) e_2           so <o1,o2> = delta_d
 *     q_c = delta_r e_1 + sqrt(1 - delta_r^2) e_{c+3}
 * so all are unit vectors, <o1,q_c> = delta_r and <o2,q_c> = delta_d delta_r,
 * i.e. |<o,q>| <= delta_r holds with equality for o1: the worst case the
 * theory allows.
 *
 * Nothing per sample is stored but the label and decisive position: compose()
 * re-derives the cluster choices and the noise from a per-sample generator
 * keyed on (data.seed, split, index), so it is a pure function of the index
 * and memory stays O(N + p d). Labels alternate (label 1 at even indices),
 * which balances every prefix too. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "data/dataset.h"
#include "data/image_fit.h"
#include "data/synthetic.h"

/* RNG streams of data.seed; the two splits never share a stream. */
enum {
    STREAM_PATTERNS = 0x5e7a0001,
    STREAM_TRAIN = 0x5e7a0002,
    STREAM_TEST = 0x5e7a0003,
    /* purposes within one sample's generator */
    PURPOSE_LAYOUT = 1,
    PURPOSE_NOISE = 2
};

typedef struct synthetic {
    int patches, dim, clusters;
    double noise;
    uint64_t seed, split_stream;
    double *patterns; /* (2 + clusters) x dim: o1, o2, q_0 .. q_{p-1} */
} synthetic;

static pmoe_rng sample_rng(const synthetic *s, int64_t index, uint64_t purpose) {
    return pmoe_rng_make(pmoe_rng_bits(s->seed, s->split_stream, (uint64_t)index), purpose);
}

/* Which pattern each of the n patches of sample `index` shows: 0 (o1),
 * 1 (o2) or 2 + c (cluster c), drawn from the sample's own generator. */
static void sample_layout(const pmoe_dataset *ds, int64_t index, int *which) {
    const synthetic *s = ds->impl;
    const int n = s->patches;
    pmoe_rng layout = sample_rng(s, index, PURPOSE_LAYOUT);
    /* Redraw the position exactly as at open time, so the cluster draws that
     * follow line up with it. */
    const int decisive = (int)pmoe_rng_next_below(&layout, (uint64_t)n);
    for (int j = 0; j < n; j++)
        which[j] = j == decisive ? (ds->labels[index] ? 0 : 1)
                                 : 2 + (int)pmoe_rng_next_below(&layout, (uint64_t)s->clusters);
}

static void synthetic_compose(const pmoe_dataset *ds, int64_t index, float *out) {
    const synthetic *s = ds->impl;
    const int n = s->patches, d = s->dim;
    int small[256], *which = n <= 256 ? small : malloc(sizeof(int) * (size_t)n);
    if (!which) { /* compose cannot fail; an unallocatable layout is all noise-free zeros */
        for (size_t i = 0; i < (size_t)n * d; i++) out[i] = 0.0f;
        return;
    }
    sample_layout(ds, index, which);
    for (int j = 0; j < n; j++) {
        const double *pattern = s->patterns + (size_t)which[j] * d;
        for (int c = 0; c < d; c++) out[(size_t)c * n + j] = (float)pattern[c];
    }
    if (which != small) free(which);
    if (s->noise > 0) {
        pmoe_rng noise = sample_rng(s, index, PURPOSE_NOISE);
        for (size_t i = 0; i < (size_t)n * d; i++)
            out[i] += (float)(s->noise * pmoe_rng_normal_at(&noise, i));
    }
}

/* Classes by what a patch shows: 0 for o2 (y = -1), 1 for o1 (y = +1), so
 * the deciding patch's class is the sample's label; 2 + c for cluster c. */
static int synthetic_patch_class(const pmoe_dataset *ds, int64_t index, int patch) {
    const synthetic *s = ds->impl;
    int small[256], *which = s->patches <= 256 ? small : malloc(sizeof(int) * (size_t)s->patches);
    if (!which) return 2; /* cannot happen in practice; any irrelevant class is harmless */
    sample_layout(ds, index, which);
    const int pattern = which[patch];
    if (which != small) free(which);
    return pattern == 0 ? 1 : pattern == 1 ? 0 : pattern;
}

static void synthetic_destroy(pmoe_dataset *ds) {
    synthetic *s = ds->impl;
    if (s) free(s->patterns);
    free(s);
    ds->impl = NULL;
}

const double *pmoe_synthetic_pattern(const pmoe_dataset *ds, int which) {
    if (!ds || ds->compose != synthetic_compose) return NULL;
    const synthetic *s = ds->impl;
    if (which < 0 || which >= 2 + s->clusters) return NULL;
    return s->patterns + (size_t)which * s->dim;
}

static double dot(const double *a, const double *b, int d) {
    double sum = 0;
    for (int i = 0; i < d; i++) sum += a[i] * b[i];
    return sum;
}

/* Writes `count` orthonormal vectors of dimension d (count <= d). */
static void orthonormal_basis(uint64_t seed, int count, int d, double *basis) {
    pmoe_rng rng = pmoe_rng_make(seed, STREAM_PATTERNS);
    for (int k = 0; k < count; k++) {
        double *v = basis + (size_t)k * d;
        for (;;) {
            for (int i = 0; i < d; i++) v[i] = pmoe_rng_next_normal(&rng);
            /* Two passes of classical Gram-Schmidt keep the basis orthogonal
             * to rounding even for large count. */
            for (int pass = 0; pass < 2; pass++)
                for (int j = 0; j < k; j++) {
                    const double *e = basis + (size_t)j * d;
                    double proj = dot(v, e, d);
                    for (int i = 0; i < d; i++) v[i] -= proj * e[i];
                }
            double norm = sqrt(dot(v, v, d));
            if (norm > 1e-6) { /* otherwise (probability ~0) draw again */
                for (int i = 0; i < d; i++) v[i] /= norm;
                break;
            }
        }
    }
}

static pmoe_status make_patterns(const pmoe_data_config *cfg, double **out, pmoe_error *err) {
    const int d = cfg->synthetic_dim, p = cfg->synthetic_clusters;
    double *basis, *patterns;
    pmoe_status st = pmoe_data_malloc((void **)&basis, (int64_t)(p + 2) * d, sizeof(double),
                                      "the synthetic basis", err);
    if (st) return st;
    st = pmoe_data_malloc((void **)&patterns, (int64_t)(p + 2) * d, sizeof(double),
                          "the synthetic patterns", err);
    if (st) {
        free(basis);
        return st;
    }
    orthonormal_basis(cfg->seed, p + 2, d, basis);
    const double *e1 = basis, *e2 = basis + d;
    double *o1 = patterns, *o2 = patterns + d;
    double dd = cfg->delta_d, dr = cfg->delta_r;
    for (int i = 0; i < d; i++) {
        o1[i] = e1[i];
        o2[i] = dd * e1[i] + sqrt(1 - dd * dd) * e2[i];
    }
    for (int c = 0; c < p; c++) {
        const double *e = basis + (size_t)(c + 2) * d;
        double *q = patterns + (size_t)(c + 2) * d;
        for (int i = 0; i < d; i++) q[i] = dr * e1[i] + sqrt(1 - dr * dr) * e[i];
    }
    free(basis);
    *out = patterns;
    return PMOE_OK;
}

static pmoe_status check_config(const pmoe_data_config *cfg, pmoe_error *err) {
    if (cfg->synthetic_patches < 1)
        return pmoe_fail(err, PMOE_ERR_CONFIG, "data.synthetic_patches must be >= 1 (got %d)",
                         cfg->synthetic_patches);
    if (cfg->synthetic_dim < 1)
        return pmoe_fail(err, PMOE_ERR_CONFIG, "data.synthetic_dim must be >= 1 (got %d)",
                         cfg->synthetic_dim);
    if (cfg->synthetic_clusters < 1)
        return pmoe_fail(err, PMOE_ERR_CONFIG, "data.synthetic_clusters must be >= 1 (got %d)",
                         cfg->synthetic_clusters);
    if ((int64_t)cfg->synthetic_dim < (int64_t)cfg->synthetic_clusters + 2)
        return pmoe_fail(err, PMOE_ERR_CONFIG,
                         "data.synthetic_dim (%d) must be >= data.synthetic_clusters (%d) + 2, "
                         "so that o1, o2 and every cluster get their own basis direction",
                         cfg->synthetic_dim, cfg->synthetic_clusters);
    if ((int64_t)cfg->synthetic_patches * cfg->synthetic_dim > INT32_MAX)
        return pmoe_fail(err, PMOE_ERR_CONFIG,
                         "data.synthetic_patches x data.synthetic_dim (%d x %d) is too large",
                         cfg->synthetic_patches, cfg->synthetic_dim);
    if (!(cfg->delta_d >= -1 && cfg->delta_d < 1))
        return pmoe_fail(err, PMOE_ERR_CONFIG, "data.delta_d must be in [-1, 1) (got %g)",
                         cfg->delta_d);
    if (!(cfg->delta_r >= 0 && cfg->delta_r < 1))
        return pmoe_fail(err, PMOE_ERR_CONFIG, "data.delta_r must be in [0, 1) (got %g)",
                         cfg->delta_r);
    if (!(cfg->noise >= 0 && isfinite(cfg->noise)))
        return pmoe_fail(err, PMOE_ERR_CONFIG, "data.noise must be >= 0 (got %g)", cfg->noise);
    return pmoe_data_check_sizes(cfg, err);
}

static pmoe_status open_split(const pmoe_data_config *cfg, const double *patterns, int64_t count,
                              uint64_t split_stream, const char *split_name, pmoe_dataset **out,
                              pmoe_error *err) {
    const int n = cfg->synthetic_patches, d = cfg->synthetic_dim, p = cfg->synthetic_clusters;
    pmoe_dataset *ds;
    pmoe_status st = pmoe_dataset_alloc(count, 1, sizeof(synthetic), synthetic_destroy, &ds, err);
    if (st) return st;
    synthetic *s = ds->impl;
    *s = (synthetic){n, d, p, cfg->noise, cfg->seed, split_stream, NULL};
    st = pmoe_data_malloc((void **)&s->patterns, (int64_t)(p + 2) * d, sizeof(double),
                          "the synthetic patterns", err);
    if (st) {
        pmoe_dataset_free(ds);
        return st;
    }
    memcpy(s->patterns, patterns, sizeof(double) * (size_t)(p + 2) * d);

    snprintf(ds->description, sizeof ds->description,
             "synthetic %s: n=%d d=%d clusters=%d delta_d=%g delta_r=%g noise=%g", split_name, n, d,
             p, cfg->delta_d, cfg->delta_r, cfg->noise);
    ds->channels = d;
    ds->fit = PMOE_FIT_NONE; /* a sample is patch vectors, not an image */
    ds->height = 1;
    ds->width = n;
    ds->classes = 1;
    ds->decisive_patch_size = 1;
    ds->default_patch = 1; /* one patch per column: the model's n patches */
    ds->compose = synthetic_compose;
    ds->patch_class = synthetic_patch_class;
    ds->patch_classes = 2 + cfg->synthetic_clusters;
    for (int64_t i = 0; i < count; i++) {
        ds->labels[i] = i % 2 == 0;
        pmoe_rng layout = sample_rng(s, i, PURPOSE_LAYOUT);
        ds->decisive_patch[i] = (int32_t)pmoe_rng_next_below(&layout, (uint64_t)n);
    }
    *out = ds;
    return PMOE_OK;
}

pmoe_status pmoe_synthetic_open(const pmoe_data_config *cfg, pmoe_dataset **train,
                                pmoe_dataset **test, pmoe_error *err) {
    *train = *test = NULL;
    pmoe_status st = check_config(cfg, err);
    if (st) return st;
    double *patterns;
    st = make_patterns(cfg, &patterns, err);
    if (st) return st;
    st = open_split(cfg, patterns, cfg->train_size, STREAM_TRAIN, "train", train, err);
    if (!st) st = open_split(cfg, patterns, cfg->test_size, STREAM_TEST, "test", test, err);
    free(patterns);
    if (st) {
        pmoe_dataset_free(*train);
        *train = NULL;
    }
    return st;
}
