/* noisy.c: the noisy-background task (the analog of the paper's CIFAR-10 +
 * ImageNet-noise experiment; docs/deep-models.md, "Data for the deep models").
 *
 * A sample is an S x S canvas (S = data.image_size, 0 meaning 32; a
 * multiple of 4, at least 8), one channel. One IDX item (Fashion-MNIST or
 * MNIST), shrunk to s x s with s = S / 2, is pasted opaquely at a uniformly
 * random position (every top-left corner in [0, S - s]^2); the label is its
 * class (10 classes). Train samples take items from the IDX "train" split,
 * test samples from "t10k".
 *
 * Shrinking is area averaging (a box filter): destination pixel d on an axis
 * of n source pixels covers the source interval [d n / s, (d + 1) n / s) and
 * is the overlap-weighted mean of the pixels it meets. It is exact for
 * non-integer ratios (28 -> 16 is 1.75), never aliases, keeps an item's
 * mean brightness, and needs no scratch: each output pixel reads at most
 * ceil(n / s) + 1 source pixels per axis, weights precomputed at open.
 *
 * Backgrounds (data.background):
 * - items: the canvas is tiled by (S / 4)-sided tiles, the tiling shifted by
 *   a random offset per sample, each tile a random crop of a random item
 *   (any class, same split, shrunk like the pasted one) dimmed by
 *   BACKGROUND_DIM. A crop is a quarter of an item, so the only complete,
 *   coherent item is the pasted one, but the fragments carry the same
 *   textures and class evidence. Undimmed, the only cue to the item is its
 *   coherence (a brightest-window search finds it in 4% of samples); dimmed
 *   to 0 the task is a clean paste. At 0.5 every fragment stays clearly
 *   visible, yet the item is the brightest thing often enough to be found:
 *   on 2000 + 2000 32 x 32 Fashion-MNIST samples, logistic regression on the
 *   whole image reaches 19% test accuracy (chance 10%), on the window found
 *   by brightness 42%, on the item's true window 79%. A model must learn
 *   where to look, and can. The random tiling offset keeps fragment edges
 *   off the patch grid, so where edges fall does not tell background from
 *   item.
 * - noise: i.i.d. Gaussian N(0, sigma^2) per background pixel (not clipped,
 *   so the background has mean 0), sigma = data.noise when > 0, else
 *   DEFAULT_NOISE_STD. The control without structured clutter: the
 *   background carries no class evidence, only noise of the order of the
 *   items' own contrast (logistic regression, as above: whole image 18%,
 *   brightest window 55%, true window 79% at sigma = 0.3).
 *
 * The decisive patch is the one, on the grid of (S / 4)-sided patches, that
 * holds pixel (row + s / 2, col + s / 2), the item's centre (its lower-right
 * middle pixel, s being even). Since s = 2 (S / 4), that patch always lies
 * wholly inside the pasted item.
 *
 * Memory: each sample holds its item index and position (three int32); the
 * background is re-derived in compose() from a counter-based RNG keyed by
 * (data.seed, split) at counter = sample index * stride + k, so compose() is
 * a pure function of the index and thread safe, like the mosaic's. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "data/dataset.h"
#include "data/idx.h"

#define DEFAULT_IMAGE_SIZE 32
#define DEFAULT_NOISE_STD 0.3
#define BACKGROUND_DIM 0.5f
enum {
    STREAM_NOISY_TRAIN_LAYOUT = 0x4e010001,
    STREAM_NOISY_TEST_LAYOUT = 0x4e010002,
    STREAM_NOISY_TRAIN_BACKGROUND = 0x4e010003,
    STREAM_NOISY_TEST_BACKGROUND = 0x4e010004
};

/* Area-averaging weights for one axis: n source pixels -> s destination
 * pixels; destination d reads source[start[d] .. start[d] + taps) with
 * weight[d * taps + j] (zero past the pixels it overlaps). */
typedef struct resample_axis {
    int taps;
    int *start;    /* [s] */
    float *weight; /* [s * taps] */
} resample_axis;

typedef struct noisy {
    pmoe_idx_split split;
    int item_rows, item_cols; /* as stored */
    int canvas, item_side, tile;
    int background; /* pmoe_background */
    float noise_std;
    resample_axis rows, cols;
    pmoe_rng background_rng;
    int32_t *placement; /* [count][3]: item index in split, top row, left column */
} noisy;

/* Random values per sample in the items background: two for the tiling
 * offset, then three per tile (item, crop row, crop column); tiles per side
 * are at most canvas / tile + 1 = 5. */
enum { TILES_PER_SIDE = 5, BACKGROUND_DRAWS = 2 + 3 * TILES_PER_SIDE * TILES_PER_SIDE };

static int uniform_below(const pmoe_rng *rng, uint64_t counter, int n) {
    int v = (int)(pmoe_rng_uniform_at(rng, counter) * n);
    return v < n ? v : n - 1;
}

/* Writes rows [r0, r0 + h) x columns [c0, c0 + w) of item `item` shrunk to
 * item_side, times `scale`, onto the canvas at (top, left), clipped. */
static void paste_shrunk(const noisy *m, int item, int r0, int c0, int h, int w, int top, int left,
                         float scale, float *out) {
    const uint8_t *src = m->split.images.data + (size_t)item * m->item_rows * m->item_cols;
    const int S = m->canvas, tr = m->rows.taps, tc = m->cols.taps;
    for (int r = 0; r < h; r++) {
        const int y = top + r;
        if (y < 0 || y >= S) continue;
        const int sr = m->rows.start[r0 + r];
        const float *wr = m->rows.weight + (size_t)(r0 + r) * tr;
        for (int c = 0; c < w; c++) {
            const int x = left + c;
            if (x < 0 || x >= S) continue;
            const int sc = m->cols.start[c0 + c];
            const float *wc = m->cols.weight + (size_t)(c0 + c) * tc;
            float sum = 0.0f;
            for (int i = 0; i < tr && sr + i < m->item_rows; i++) {
                const uint8_t *line = src + (size_t)(sr + i) * m->item_cols + sc;
                float row_sum = 0.0f;
                for (int j = 0; j < tc && sc + j < m->item_cols; j++)
                    row_sum += wc[j] * (float)line[j];
                sum += wr[i] * row_sum;
            }
            out[(size_t)y * S + x] = scale * sum / 255.0f;
        }
    }
}

static void noisy_compose(const pmoe_dataset *ds, int64_t index, float *out) {
    const noisy *m = ds->impl;
    const int S = m->canvas, s = m->item_side, t = m->tile;
    const pmoe_rng *rng = &m->background_rng;
    if (m->background == PMOE_BACKGROUND_NOISE) {
        const uint64_t base = (uint64_t)index * (uint64_t)S * (uint64_t)S;
        for (int p = 0; p < S * S; p++)
            out[p] = m->noise_std * (float)pmoe_rng_normal_at(rng, base + (uint64_t)p);
    } else {
        const uint64_t base = (uint64_t)index * BACKGROUND_DRAWS;
        const int oy = uniform_below(rng, base, t), ox = uniform_below(rng, base + 1, t);
        const int items = (int)m->split.images.dims[0];
        for (int ty = 0; ty < TILES_PER_SIDE; ty++)
            for (int tx = 0; tx < TILES_PER_SIDE; tx++) {
                const uint64_t k = base + 2 + 3 * (uint64_t)(ty * TILES_PER_SIDE + tx);
                const int item = uniform_below(rng, k, items);
                const int cr = uniform_below(rng, k + 1, s - t + 1);
                const int cc = uniform_below(rng, k + 2, s - t + 1);
                paste_shrunk(m, item, cr, cc, t, t, ty * t - oy, tx * t - ox, BACKGROUND_DIM, out);
            }
    }
    const int32_t *place = m->placement + (size_t)index * 3;
    paste_shrunk(m, place[0], 0, 0, s, s, place[1], place[2], 1.0f, out);
}

int pmoe_noisy_placement(const pmoe_dataset *ds, int64_t index, int *top, int *left) {
    if (!ds || ds->compose != noisy_compose || index < 0 || index >= ds->count) return -1;
    const noisy *m = ds->impl;
    const int32_t *place = m->placement + (size_t)index * 3;
    if (top) *top = place[1];
    if (left) *left = place[2];
    return place[0];
}

static void axis_free(resample_axis *a) {
    free(a->start);
    free(a->weight);
    a->start = NULL;
    a->weight = NULL;
}

static void noisy_destroy(pmoe_dataset *ds) {
    noisy *m = ds->impl;
    if (m) {
        pmoe_idx_split_free(&m->split);
        axis_free(&m->rows);
        axis_free(&m->cols);
        free(m->placement);
    }
    free(m);
    ds->impl = NULL;
}

/* Box-filter weights from n source pixels to s destination pixels, in units
 * of 1 / s so every overlap is an exact integer: destination d spans
 * [d n, (d + 1) n), source i spans [i s, (i + 1) s). */
static pmoe_status axis_make(int n, int s, resample_axis *a, pmoe_error *err) {
    a->taps = (n + s - 1) / s + 1;
    pmoe_status st = pmoe_data_malloc((void **)&a->start, s, sizeof(int), "resampling", err);
    if (!st)
        st = pmoe_data_malloc((void **)&a->weight, (int64_t)s * a->taps, sizeof(float),
                              "resampling", err);
    if (st) return st;
    for (int d = 0; d < s; d++) {
        const int64_t lo = (int64_t)d * n, hi = (int64_t)(d + 1) * n;
        const int first = (int)(lo / s);
        a->start[d] = first;
        for (int j = 0; j < a->taps; j++) {
            const int64_t i = first + j;
            int64_t from = i * s > lo ? i * s : lo, to = (i + 1) * s < hi ? (i + 1) * s : hi;
            a->weight[(size_t)d * a->taps + j] =
                i < n && to > from ? (float)((double)(to - from) / (double)n) : 0.0f;
        }
    }
    return PMOE_OK;
}

static pmoe_status open_split(const pmoe_data_config *cfg, int canvas, const char *prefix,
                              int64_t count, uint64_t layout_stream, uint64_t background_stream,
                              pmoe_dataset **out, pmoe_error *err) {
    pmoe_dataset *ds;
    pmoe_status st = pmoe_dataset_alloc(count, 1, sizeof(noisy), noisy_destroy, &ds, err);
    if (st) return st;
    noisy *m = ds->impl;
    m->canvas = canvas;
    m->item_side = canvas / 2;
    m->tile = canvas / 4;
    m->background = cfg->background;
    m->noise_std = (float)(cfg->noise > 0 ? cfg->noise : DEFAULT_NOISE_STD);
    m->background_rng = pmoe_rng_make(cfg->seed, background_stream);

    st = pmoe_idx_split_load(cfg->path, prefix, &m->split, err);
    if (!st) st = pmoe_idx_check_labels(&m->split, IDX_CLASSES, err);
    if (!st && m->split.images.dims[0] > INT32_MAX)
        st = pmoe_fail(err, PMOE_ERR_FORMAT, "%s: %lld images are too many", m->split.images_path,
                       (long long)m->split.images.dims[0]);
    if (st) goto fail;
    m->item_rows = (int)m->split.images.dims[1];
    m->item_cols = (int)m->split.images.dims[2];
    st = axis_make(m->item_rows, m->item_side, &m->rows, err);
    if (!st) st = axis_make(m->item_cols, m->item_side, &m->cols, err);
    if (!st) {
        char what[64];
        snprintf(what, sizeof what, "the placements of %lld noisy samples", (long long)count);
        st = pmoe_data_malloc((void **)&m->placement, count, 3 * sizeof(int32_t), what, err);
    }
    if (st) goto fail;

    const int positions = canvas - m->item_side + 1, patch = m->tile;
    pmoe_rng rng = pmoe_rng_make(cfg->seed, layout_stream);
    for (int64_t i = 0; i < count; i++) {
        int32_t *place = m->placement + (size_t)i * 3;
        place[0] = (int32_t)pmoe_rng_next_below(&rng, (uint64_t)m->split.images.dims[0]);
        place[1] = (int32_t)pmoe_rng_next_below(&rng, (uint64_t)positions);
        place[2] = (int32_t)pmoe_rng_next_below(&rng, (uint64_t)positions);
        ds->labels[i] = m->split.labels.data[place[0]];
        const int centre_row = place[1] + m->item_side / 2,
                  centre_col = place[2] + m->item_side / 2;
        ds->decisive_patch[i] = (centre_row / patch) * (canvas / patch) + centre_col / patch;
    }

    char name[48];
    snprintf(ds->description, sizeof ds->description, "%s item (%dx%d) on %dx%d %s",
             pmoe_idx_dir_name(cfg->path, name, sizeof name), m->item_side, m->item_side, canvas,
             canvas, cfg->background == PMOE_BACKGROUND_NOISE ? "noise" : "item fragments");
    ds->channels = 1;
    ds->height = ds->width = canvas;
    ds->classes = IDX_CLASSES;
    ds->decisive_patch_size = patch;
    ds->default_patch = 0; /* the deep models choose their own patch size */
    ds->compose = noisy_compose;
    ds->patch_class = NULL;
    *out = ds;
    return PMOE_OK;
fail:
    pmoe_dataset_free(ds);
    return st;
}

pmoe_status pmoe_noisy_open(const pmoe_data_config *cfg, pmoe_dataset **train, pmoe_dataset **test,
                            pmoe_error *err) {
    *train = *test = NULL;
    const int canvas = cfg->image_size ? cfg->image_size : DEFAULT_IMAGE_SIZE;
    if (canvas < 8 || canvas % 4 != 0 || canvas > 4096)
        return pmoe_fail(err, PMOE_ERR_CONFIG,
                         "data.image_size = %d: the noisy task needs a multiple of 4 in "
                         "[8, 4096] (or 0 for %d)",
                         cfg->image_size, DEFAULT_IMAGE_SIZE);
    if (cfg->background != PMOE_BACKGROUND_ITEMS && cfg->background != PMOE_BACKGROUND_NOISE)
        return pmoe_fail(err, PMOE_ERR_CONFIG, "data.background: unknown value %d",
                         cfg->background);
    if (!(cfg->noise >= 0) || !isfinite(cfg->noise))
        return pmoe_fail(err, PMOE_ERR_CONFIG, "data.noise must be finite and >= 0 (got %g)",
                         cfg->noise);
    pmoe_status st = pmoe_data_check_sizes(cfg, err);
    if (st) return st;

    st = open_split(cfg, canvas, "train", cfg->train_size, STREAM_NOISY_TRAIN_LAYOUT,
                    STREAM_NOISY_TRAIN_BACKGROUND, train, err);
    if (!st)
        st = open_split(cfg, canvas, "t10k", cfg->test_size, STREAM_NOISY_TEST_LAYOUT,
                        STREAM_NOISY_TEST_BACKGROUND, test, err);
    if (st) {
        pmoe_dataset_free(*train);
        pmoe_dataset_free(*test);
        *train = *test = NULL;
    }
    return st;
}
