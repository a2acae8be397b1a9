/* test_augment.c: random crops and flips (data/augment.h).
 *
 * - a draw is a function of (seed, epoch, sample): the same key gives the
 *   same draw, another seed or epoch other draws;
 * - bounds: shifts stay in [-P, P] and take every value there, flips come
 *   about half the time;
 * - the in-place result equals the definition computed out of place, bit
 *   for bit, and the adjoint identity <A x, y> = <x, A^T y> holds exactly
 *   with A^T written here as the scatter that the definition implies (on
 *   integer-valued images, so every sum is exact);
 * - training with crops and flips on the IDX source: a stopped-and-resumed
 *   run equals the run left alone, and the augmentation changes the losses
 *   (skipped without the Fashion-MNIST files). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/rng.h"
#include "data/augment.h"
#include "pmoe/train.h"
#include "test_util.h"
#include "train_trace.h"

static void test_draws(void) {
    pmoe_augment a = {4, 1, 7}, b = {4, 1, 8};
    int same_seed = 1, differ_seed = 0, differ_epoch = 0, flips = 0;
    int seen_dy[9] = {0}, seen_dx[9] = {0}, in_bounds = 1;
    const int N = 20000;
    for (int64_t i = 0; i < N; i++) {
        pmoe_augment_draw d1 = pmoe_augment_draw_at(&a, 3, i), d2 = pmoe_augment_draw_at(&a, 3, i);
        pmoe_augment_draw e = pmoe_augment_draw_at(&b, 3, i), f = pmoe_augment_draw_at(&a, 4, i);
        same_seed &= d1.dy == d2.dy && d1.dx == d2.dx && d1.flip == d2.flip;
        differ_seed += d1.dy != e.dy || d1.dx != e.dx || d1.flip != e.flip;
        differ_epoch += d1.dy != f.dy || d1.dx != f.dx || d1.flip != f.flip;
        in_bounds &= d1.dy >= -4 && d1.dy <= 4 && d1.dx >= -4 && d1.dx <= 4 &&
                     (d1.flip == 0 || d1.flip == 1);
        if (!in_bounds) break;
        seen_dy[d1.dy + 4]++;
        seen_dx[d1.dx + 4]++;
        flips += d1.flip;
    }
    CHECK(same_seed);
    CHECK(in_bounds);
    /* two independent draws of 81 * 2 outcomes agree 1/162 of the time */
    CHECK_MSG(differ_seed > N * 0.98, "only %d of %d draws differ across seeds", differ_seed, N);
    CHECK_MSG(differ_epoch > N * 0.98, "only %d of %d draws differ across epochs", differ_epoch, N);
    int every = 1;
    for (int v = 0; v < 9; v++) every &= seen_dy[v] > N / 9 * 0.9 && seen_dx[v] > N / 9 * 0.9;
    CHECK_MSG(every, "some shift in [-4, 4] is rare or never drawn");
    CHECK_MSG(flips > N * 0.48 && flips < N * 0.52, "%d flips in %d draws", flips, N);
    /* crop off, flip off: nothing drawn */
    pmoe_augment none = {0, 0, 7};
    pmoe_augment_draw z = pmoe_augment_draw_at(&none, 1, 5);
    CHECK(!pmoe_augment_active(&none) && z.dy == 0 && z.dx == 0 && z.flip == 0);
    printf(
        "draws: deterministic, %d/%d differ across seeds, %d flips in %d, shifts cover [-4, 4]\n",
        differ_seed, N, flips, N);
}

/* The definition, out of place. */
static void forward_reference(const pmoe_augment_draw *d, int C, int H, int W, const float *in,
                              float *out) {
    for (int c = 0; c < C; c++)
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                const int sy = y + d->dy, sx = (d->flip ? W - 1 - x : x) + d->dx;
                out[((size_t)c * H + y) * W + x] = sy >= 0 && sy < H && sx >= 0 && sx < W
                                                       ? in[((size_t)c * H + sy) * W + sx]
                                                       : 0.0f;
            }
}

/* A^T: each output pixel's value goes back to the input pixel it copied. */
static void adjoint_reference(const pmoe_augment_draw *d, int C, int H, int W, const float *y_img,
                              float *out) {
    memset(out, 0, sizeof(float) * (size_t)C * H * W);
    for (int c = 0; c < C; c++)
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                const int sy = y + d->dy, sx = (d->flip ? W - 1 - x : x) + d->dx;
                if (sy >= 0 && sy < H && sx >= 0 && sx < W)
                    out[((size_t)c * H + sy) * W + sx] += y_img[((size_t)c * H + y) * W + x];
            }
}

static double dot(const float *a, const float *b, int64_t n) {
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) s += (double)a[i] * (double)b[i];
    return s;
}

static void test_apply(void) {
    const int C = 3, H = 7, W = 9;
    const int64_t n = (int64_t)C * H * W;
    float *x = fbuf(n), *y = fbuf(n), *ax = fbuf(n), *ref = fbuf(n), *aty = fbuf(n);
    int exact = 1, adjoint = 1, cases = 0;
    pmoe_rng rng = pmoe_rng_make(11, 1);
    for (int dy = -9; dy <= 9; dy += 3)
        for (int dx = -10; dx <= 10; dx += 2)
            for (int flip = 0; flip <= 1; flip++) {
                const pmoe_augment_draw d = {dy, dx, flip};
                for (int64_t i = 0; i < n; i++) {
                    x[i] = (float)(int)(pmoe_rng_next_below(&rng, 19)) - 9.0f;
                    y[i] = (float)(int)(pmoe_rng_next_below(&rng, 19)) - 9.0f;
                }
                memcpy(ax, x, sizeof(float) * (size_t)n);
                pmoe_augment_apply(&d, C, H, W, ax);
                forward_reference(&d, C, H, W, x, ref);
                exact &= memcmp(ax, ref, sizeof(float) * (size_t)n) == 0;
                adjoint_reference(&d, C, H, W, y, aty);
                adjoint &= dot(ax, y, n) == dot(x, aty, n);
                cases++;
            }
    CHECK_MSG(exact, "in-place crop/flip differs from the definition");
    CHECK_MSG(adjoint, "<A x, y> != <x, A^T y>");
    printf("apply: %d shifts and flips (some past the border) equal the definition bit for bit; "
           "<Ax,y> = <x,A^T y> exactly\n",
           cases);
}

/* ---- training ---- */

static char tmp[512];

static void config(pmoe_config *cfg, const char *dir, int augment) {
    pmoe_config_default(cfg);
    const char *sets[] = {"data.source=idx",    "data.train_size=200",
                          "data.test_size=100", "data.image_size=32",
                          "model.experts=4",    "model.topl=4",
                          "model.patch=8",      "train.epochs=3",
                          "train.lr=0.05",      "train.checkpoint_every=1000"};
    for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++) pmoe_config_set(cfg, sets[i], NULL);
    if (augment) {
        pmoe_config_set(cfg, "data.crop_pad=4", NULL);
        pmoe_config_set(cfg, "data.flip=true", NULL);
    }
    char set[700];
    snprintf(set, sizeof set, "train.checkpoint_dir=%s/%s", tmp, dir);
    pmoe_config_set(cfg, set, NULL);
}

static int test_training(void) {
    static trace whole, first, rest, plain;
    pmoe_config cfg;
    pmoe_train_result res_whole, res;
    pmoe_error err = {PMOE_OK, ""};
    config(&cfg, "whole", 1);
    pmoe_status s = trace_train(&cfg, &whole, NULL, &res_whole, &err);
    if (s == PMOE_ERR_IO) {
        printf("skipped: %s\n", err.message);
        return 77;
    }
    CHECK_MSG(s == PMOE_OK && whole.steps == 30, "%s", err.message);
    volatile sig_atomic_t stop = 0;
    config(&cfg, "part", 1);
    first.stop = &stop;
    first.stop_at = 13;
    CHECK(trace_train(&cfg, &first, NULL, &res, &err) == PMOE_ERR_INTERRUPTED);
    CHECK_MSG(trace_train(&cfg, &rest, res.last_checkpoint, &res, &err) == PMOE_OK, "%s",
              err.message);
    CHECK(first.steps == 13 && rest.steps == 17);
    CHECK_MSG(trace_resumed_equals(&whole, &first, &rest),
              "augmented run: resumed losses differ from the uninterrupted run");
    CHECK(res.test_acc == res_whole.test_acc);
    config(&cfg, "plain", 0);
    CHECK(trace_train(&cfg, &plain, NULL, &res, &err) == PMOE_OK);
    CHECK_MSG(plain.loss[0] != whole.loss[0], "the augmentation did not reach the batches");
    /* the synthetic model is refused: its samples are not images */
    pmoe_config_default(&cfg);
    pmoe_config_set(&cfg, "data.source=synthetic", NULL);
    pmoe_config_set(&cfg, "data.flip=1", NULL);
    s = pmoe_train(&cfg, NULL, NULL, &res, &err);
    CHECK_MSG(s == PMOE_ERR_CONFIG && strstr(err.message, "data.flip"), "%d %s", s, err.message);
    printf("training: augmented run stopped at 13 and resumed = left alone, bit for bit\n");
    return 0;
}

int main(void) {
    snprintf(tmp, sizeof tmp, "/tmp/pmoe-test-augment-%d", (int)getpid());
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf %s && mkdir -p %s", tmp, tmp);
    if (system(cmd) != 0) return 2;
    test_draws();
    test_apply();
    int skipped = test_training();
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp);
    free_all();
    const int rc = test_finish("test_augment");
    return rc ? rc : skipped;
}
