/* test_route.c: the routing picture (pmoe_route, the drawing, the PNG).
 *
 * A small mosaic model is trained through the library on fake IDX items
 * written here (10 classes, 20 items each, 28x28), saved, routed and drawn;
 * the PNG is decoded with libpng and checked pixel by pixel against what
 * pmoe_route returned and what route_image.h promises: the size the layout
 * says, every picking expert's frame corner in its colour at its nesting
 * level, no expert's colour on a patch it did not pick, the deciding-patch
 * triangle, and heatmap cells whose colour is the share of picks (so the
 * most-picked position is the brightest). The theory's synthetic data (not
 * an image) is drawn as columns and checked the same way; a model without a
 * router and an unwritable PNG path fail with one clear message. */
#include <dirent.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pmoe/train.h"
#include "test_util.h"
#include "viz/canvas.h"
#include "viz/png_write.h"
#include "viz/route_image.h"

/* ---- files ---- */

static void remove_tree(const char *path) {
    DIR *d = opendir(path);
    if (d) {
        struct dirent *entry;
        while ((entry = readdir(d))) {
            if (!strcmp(entry->d_name, ".") || !strcmp(entry->d_name, "..")) continue;
            char child[4096];
            snprintf(child, sizeof child, "%s/%s", path, entry->d_name);
            remove_tree(child);
        }
        closedir(d);
        rmdir(path);
    } else {
        remove(path);
    }
}

static void write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, n, f) != n || fclose(f) != 0) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(2);
    }
}

static void put_be32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (24 - 8 * i));
}

/* 10 classes x 20 items of 28x28: class c is a bright bar at rows 2c..2c+7
 * over faint noise, so the classes differ where a router can see it. */
static void write_fake_split(const char *dir, const char *prefix, unsigned seed) {
    enum { CLASSES = 10, PER_CLASS = 20, COUNT = CLASSES * PER_CLASS, SIDE = 28 };
    static uint8_t images[16 + COUNT * SIDE * SIDE], labels[8 + COUNT];
    images[2] = 0x08, images[3] = 3;
    put_be32(images + 4, COUNT), put_be32(images + 8, SIDE), put_be32(images + 12, SIDE);
    labels[2] = 0x08, labels[3] = 1;
    put_be32(labels + 4, COUNT);
    for (int i = 0; i < COUNT; i++) {
        const int c = i % CLASSES;
        labels[8 + i] = (uint8_t)c;
        uint8_t *img = images + 16 + (size_t)i * SIDE * SIDE;
        for (int y = 0; y < SIDE; y++)
            for (int x = 0; x < SIDE; x++) {
                seed = seed * 1103515245u + 12345u;
                const int bar = y >= 2 * c && y < 2 * c + 8 && x >= 4 && x < 24;
                img[y * SIDE + x] = (uint8_t)(bar ? 200 + (seed >> 27) : (seed >> 26));
            }
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/%s-images-idx3-ubyte", dir, prefix);
    write_file(path, images, sizeof images);
    snprintf(path, sizeof path, "%s/%s-labels-idx1-ubyte", dir, prefix);
    write_file(path, labels, sizeof labels);
}

/* ---- decoding ---- */

/* The PNG at path as RGB8 (free the pixels); NULL when libpng cannot read it. */
static uint8_t *read_png(const char *path, int *width, int *height) {
    png_image image;
    memset(&image, 0, sizeof image);
    image.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_file(&image, path)) {
        fprintf(stderr, "  libpng: %s: %s\n", path, image.message);
        return NULL;
    }
    image.format = PNG_FORMAT_RGB;
    uint8_t *pixels = malloc(PNG_IMAGE_SIZE(image));
    if (!pixels || !png_image_finish_read(&image, NULL, pixels, 0, NULL)) {
        fprintf(stderr, "  libpng: %s: %s\n", path, image.message);
        free(pixels);
        png_image_free(&image);
        return NULL;
    }
    *width = (int)image.width;
    *height = (int)image.height;
    return pixels;
}

typedef struct decoded {
    int width, height;
    const uint8_t *pixels;
} decoded;

static pmoe_rgb pixel(const decoded *d, int x, int y) {
    const uint8_t *p = d->pixels + ((size_t)y * d->width + x) * 3;
    return (pmoe_rgb){p[0], p[1], p[2]};
}

/* ---- the checks ---- */

/* Which experts picked patch j of sample s, in expert order. */
static int pickers_of(const pmoe_routing *r, int s, int j, int *out) {
    int count = 0;
    for (int e = 0; e < r->experts; e++)
        for (int t = 0; t < r->topl; t++)
            if (r->selected[((int64_t)s * r->experts + e) * r->topl + t] == j) {
                out[count++] = e;
                break;
            }
    return count;
}

/* Frames, colours and the deciding mark of every drawn sample. */
static void check_samples(const pmoe_routing *r, const pmoe_route_layout *L, const decoded *d) {
    const int n = r->grid_rows * r->grid_cols;
    int frames_checked = 0, patches_clean = 0, unpicked = 0, wrong_frames = 0, stray = 0;
    for (int s = 0; s < r->samples; s++)
        for (int j = 0; j < n; j++) {
            int pickers[64];
            const int count = pickers_of(r, s, j, pickers);
            int px, py;
            pmoe_route_patch_origin(L, s, j, &px, &py);
            /* every picker's frame: its top-left and bottom-right pixels, at its level */
            for (int level = 0; level < count; level++) {
                const pmoe_rgb want = pmoe_expert_colour(pickers[level]);
                const int in = level * L->outline;
                const int ok =
                    pmoe_rgb_equal(pixel(d, px + in, py + in), want) &&
                    pmoe_rgb_equal(pixel(d, px + L->cell_w - 1 - in, py + L->cell_h - 1 - in),
                                   want);
                if (!ok && wrong_frames++ < 5)
                    fprintf(stderr,
                            "  sample %d patch %d: expert %d's frame (level %d) is missing\n", s, j,
                            pickers[level], level);
                frames_checked += ok;
            }
            /* no colour of an expert that did not pick the patch, anywhere on it */
            unpicked += count == 0;
            int clean = 1;
            for (int e = 0; e < r->experts; e++) {
                int picked = 0;
                for (int i = 0; i < count; i++) picked |= pickers[i] == e;
                if (picked) continue;
                const pmoe_rgb colour = pmoe_expert_colour(e);
                for (int y = py; y < py + L->cell_h && clean; y++)
                    for (int x = px; x < px + L->cell_w && clean; x++)
                        if (pmoe_rgb_equal(pixel(d, x, y), colour)) {
                            clean = 0;
                            if (stray++ < 5)
                                fprintf(stderr,
                                        "  sample %d patch %d: expert %d's colour at (%d, %d), "
                                        "but it did not pick the patch\n",
                                        s, j, e, x, y);
                        }
            }
            patches_clean += clean;
        }
    CHECK_MSG(wrong_frames == 0, "%d frames missing", wrong_frames);
    CHECK_MSG(stray == 0, "%d patches show a colour of an expert that did not pick them", stray);
    CHECK(frames_checked == r->samples * r->experts * r->topl);
    CHECK(patches_clean == r->samples * n);
    printf("  %d frames in place, %d patches free of stray expert colours (%d picked by none)\n",
           frames_checked, patches_clean, unpicked);
    /* the deciding patch's white triangle */
    int marked = 0, decisive_known = 0;
    for (int s = 0; s < r->samples; s++) {
        if (r->router_recall < 0 || r->decisive[s] < 0 || r->decisive[s] >= n) continue;
        decisive_known++;
        int px, py;
        pmoe_route_patch_origin(L, s, r->decisive[s], &px, &py);
        marked += pmoe_rgb_equal(pixel(d, px + L->cell_w - 1, py), (pmoe_rgb){255, 255, 255}) &&
                  pmoe_rgb_equal(pixel(d, px + L->cell_w - 1, py + L->marker - 3),
                                 (pmoe_rgb){255, 255, 255});
    }
    CHECK_MSG(marked == decisive_known &&
                  decisive_known == (r->router_recall >= 0 ? r->samples : 0),
              "%d of %d deciding patches marked", marked, decisive_known);
}

/* Every heatmap cell's colour is its share of the test set; expert 0's
 * most-picked position is its brightest cell. */
static void check_heatmaps(const pmoe_routing *r, const pmoe_route_layout *L, const decoded *d) {
    const int n = r->grid_rows * r->grid_cols;
    int right = 0;
    for (int e = 0; e < r->experts; e++)
        for (int j = 0; j < n; j++) {
            int x, y;
            pmoe_route_heat_origin(L, e, j, &x, &y);
            const pmoe_rgb want =
                pmoe_heat_colour((double)r->by_position[e * n + j] / (double)r->test_size);
            right += pmoe_rgb_equal(pixel(d, x, y), want) &&
                     pmoe_rgb_equal(pixel(d, x + L->heat_cell - 2, y + L->heat_cell - 2), want);
        }
    CHECK_MSG(right == r->experts * n, "%d of %d heatmap cells have their share's colour", right,
              r->experts * n);
    int most = 0;
    for (int j = 1; j < n; j++)
        if (r->by_position[j] > r->by_position[most]) most = j;
    int x, y;
    pmoe_route_heat_origin(L, 0, most, &x, &y);
    const double brightest = pmoe_rgb_luma(pixel(d, x, y));
    int brighter = 0, dimmer = 0;
    for (int j = 0; j < n; j++) {
        pmoe_route_heat_origin(L, 0, j, &x, &y);
        const double luma = pmoe_rgb_luma(pixel(d, x, y));
        brighter += luma > brightest;
        dimmer += r->by_position[j] < r->by_position[most] && luma < brightest;
    }
    CHECK_MSG(brighter == 0, "%d cells of expert 0 are brighter than its most-picked position %d",
              brighter, most);
    int fewer = 0;
    for (int j = 0; j < n; j++) fewer += r->by_position[j] < r->by_position[most];
    CHECK_MSG(dimmer == fewer, "%d of the %d less-picked cells are dimmer", dimmer, fewer);
    printf("  heatmaps: expert 0 picks position %d most (%lld of %lld samples)\n", most,
           (long long)r->by_position[most], (long long)r->test_size);
}

/* Draws routing to path, decodes it, and runs every pixel check. */
static void draw_and_check(const pmoe_routing *r, const pmoe_route_image_options *options,
                           const char *path, int expect_columns) {
    pmoe_canvas canvas;
    pmoe_route_layout L;
    pmoe_error err = {PMOE_OK, ""};
    pmoe_status s = pmoe_route_draw(r, options, &canvas, &L, &err);
    CHECK_MSG(s == PMOE_OK, "%s", err.message);
    if (s) return;
    CHECK(L.as_columns == expect_columns);
    s = pmoe_png_write(path, &canvas, &err);
    CHECK_MSG(s == PMOE_OK, "%s", err.message);
    decoded d = {0, 0, NULL};
    uint8_t *pixels = s ? NULL : read_png(path, &d.width, &d.height);
    CHECK_MSG(pixels != NULL, "%s does not decode", path);
    if (pixels) {
        d.pixels = pixels;
        printf("  %s: %d x %d, %d samples of %d x %d, patches %d x %d pixels\n", path, d.width,
               d.height, r->samples, L.image_w, L.image_h, L.cell_w, L.cell_h);
        CHECK_MSG(d.width == L.width && d.height == L.height, "decoded %d x %d, layout %d x %d",
                  d.width, d.height, L.width, L.height);
        /* the image width the layout promises: the grid of patches at its scale */
        CHECK(L.image_w == L.grid_cols * L.cell_w && L.image_h == L.grid_rows * L.cell_h);
        if (!expect_columns) CHECK(L.cell_w == r->patch * L.scale_x);
        else CHECK(L.cell_h == r->channels * L.scale_y);
        CHECK(d.width == canvas.width && d.height == canvas.height &&
              memcmp(pixels, canvas.pixels, (size_t)d.width * d.height * 3) == 0);
        check_samples(r, &L, &d);
        check_heatmaps(r, &L, &d);
        free(pixels);
    }
    pmoe_canvas_free(&canvas);
}

/* The routing's own invariants: every expert takes l distinct patches of a
 * sample, gates are probabilities, every row of by_position sums to N l. */
static void check_routing(const pmoe_routing *r, int want_samples) {
    const int k = r->experts, l = r->topl, n = r->grid_rows * r->grid_cols;
    CHECK(r->samples == want_samples);
    int bad_picks = 0;
    for (int64_t i = 0; i < (int64_t)r->samples * k; i++)
        for (int t = 0; t < l; t++) {
            const int32_t j = r->selected[i * l + t];
            const float g = r->gate[i * l + t];
            bad_picks += j < 0 || j >= n || !(g >= 0.0f && g <= 1.0f);
            for (int u = 0; u < t; u++) bad_picks += r->selected[i * l + u] == j;
        }
    CHECK_MSG(bad_picks == 0, "%d picks out of range or repeated", bad_picks);
    int bad_rows = 0;
    for (int e = 0; e < k; e++) {
        int64_t sum = 0;
        for (int j = 0; j < n; j++) sum += r->by_position[e * n + j];
        bad_rows += sum != r->test_size * l;
    }
    CHECK_MSG(bad_rows == 0, "%d experts' position counts do not sum to N l", bad_rows);
}

/* Pictures of other images (pmoe predict's): captions replace "#i class c",
 * one wider than its image is cut at the image's edge (the gap to the next
 * sample stays background), and the frames are as before. */
static void check_captions(const pmoe_routing *r, const char *tmp) {
    const char *captions[3] = {"#0  A CAPTION FAR WIDER THAN ITS IMAGE OF 112 PIXELS AT ANY SCALE",
                               "#1  SHORT", NULL};
    const pmoe_route_image_options options = {0, 0, "predicted images", captions};
    char path[1200];
    snprintf(path, sizeof path, "%s/captions.png", tmp);
    draw_and_check(r, &options, path, 0);
    pmoe_canvas c;
    pmoe_route_layout L;
    pmoe_error err = {PMOE_OK, ""};
    if (pmoe_route_draw(r, &options, &c, &L, &err)) {
        CHECK_MSG(0, "%s", err.message);
        return;
    }
    const int line = L.tile_pitch_y - L.image_h - (L.tile_pitch_x - L.image_w);
    int in_gap = 0, on_image[3] = {0, 0, 0};
    for (int s = 0; s < 3 && s < r->samples; s++) {
        int x0, y0;
        pmoe_route_patch_origin(&L, s, 0, &x0, &y0);
        for (int y = y0 - line; y < y0; y++)
            for (int x = x0; x < x0 + L.tile_pitch_x && x < c.width; x++) {
                const int ink =
                    !pmoe_rgb_equal(pmoe_canvas_get(&c, x, y), (pmoe_rgb){255, 255, 255});
                if (x < x0 + L.image_w) on_image[s] += ink;
                else in_gap += ink;
            }
    }
    CHECK_MSG(in_gap == 0, "%d caption pixels in the gap between samples", in_gap);
    CHECK_MSG(on_image[0] > on_image[1] && on_image[1] > 0 && on_image[2] > 0,
              "caption ink %d, %d, %d", on_image[0], on_image[1], on_image[2]);
    pmoe_canvas_free(&c);
}

static pmoe_status train_to(pmoe_config *cfg, const char *const *sets, int count,
                            const char *ck_dir, char *checkpoint, size_t size, pmoe_error *err) {
    pmoe_config_default(cfg);
    pmoe_status s = PMOE_OK;
    char set[4200];
    snprintf(set, sizeof set, "train.checkpoint_dir=%s", ck_dir);
    const char *common[] = {"train.checkpoint_every=1000000", "train.threads=2", set};
    for (int i = 0; !s && i < 3; i++) s = pmoe_config_set(cfg, common[i], err);
    for (int i = 0; !s && i < count; i++) s = pmoe_config_set(cfg, sets[i], err);
    pmoe_train_result res;
    if (!s) s = pmoe_train(cfg, NULL, NULL, &res, err);
    if (!s) snprintf(checkpoint, size, "%s", res.last_checkpoint);
    return s;
}

int main(void) {
    char tmp[1024], path[1200], data_set[1200], ck[1200], checkpoint[1024];
    make_temp_dir(tmp, sizeof tmp);
    pmoe_error err = {PMOE_OK, ""};
    pmoe_config cfg;

    /* The mosaic of fake items: k = 4, l = 3 leaves at least 4 of 16 patches unpicked. */
    write_fake_split(tmp, "train", 1);
    write_fake_split(tmp, "t10k", 2);
    snprintf(data_set, sizeof data_set, "data.path=%s", tmp);
    snprintf(ck, sizeof ck, "%s/ck-mosaic", tmp);
    const char *mosaic[] = {"data.source=mosaic", data_set,          "data.train_size=60",
                            "data.test_size=30",  "model.experts=4", "model.topl=3",
                            "model.hidden=8",     "train.epochs=2",  "train.batch=10"};
    pmoe_status s = train_to(&cfg, mosaic, 9, ck, checkpoint, sizeof checkpoint, &err);
    CHECK_MSG(s == PMOE_OK && checkpoint[0], "training the mosaic: %s", err.message);
    if (!s) {
        pmoe_routing routing;
        s = pmoe_route(&cfg, checkpoint, 3, NULL, &routing, &err);
        CHECK_MSG(s == PMOE_OK, "%s", err.message);
        if (!s) {
            CHECK(routing.channels == 1 && routing.height == 112 && routing.width == 112);
            CHECK(routing.patch == 28 && routing.grid_rows == 4 && routing.grid_cols == 4);
            CHECK(routing.experts == 4 && routing.topl == 3 && routing.test_size == 30);
            check_routing(&routing, 3);
            snprintf(path, sizeof path, "%s/mosaic.png", tmp);
            draw_and_check(&routing, NULL, path, 0);
            check_captions(&routing, tmp);
            /* more samples than the test set holds: all of it */
            pmoe_routing_free(&routing);
            s = pmoe_route(&cfg, checkpoint, 1000, NULL, &routing, &err);
            CHECK_MSG(s == PMOE_OK && routing.samples == 30, "%s", err.message);
            pmoe_routing_free(&routing);
        }
    }

    /* The synthetic data model is not an image: its patches are drawn as columns. */
    snprintf(ck, sizeof ck, "%s/ck-synthetic", tmp);
    const char *synthetic[] = {"data.source=synthetic", "data.train_size=40", "data.test_size=20",
                               "train.epochs=1",        "model.experts=4",    "model.topl=2",
                               "model.hidden=8"};
    s = train_to(&cfg, synthetic, 7, ck, checkpoint, sizeof checkpoint, &err);
    CHECK_MSG(s == PMOE_OK, "training the synthetic model: %s", err.message);
    if (!s) {
        pmoe_routing routing;
        s = pmoe_route(&cfg, checkpoint, 2, NULL, &routing, &err);
        CHECK_MSG(s == PMOE_OK, "%s", err.message);
        if (!s) {
            check_routing(&routing, 2);
            snprintf(path, sizeof path, "%s/synthetic.png", tmp);
            draw_and_check(&routing, NULL, path, 1);
            pmoe_routing_free(&routing);
        }
    }

    /* A CNN has no router to draw. */
    snprintf(ck, sizeof ck, "%s/ck-cnn", tmp);
    const char *cnn[] = {"data.source=synthetic", "data.train_size=40", "data.test_size=20",
                         "train.epochs=1", "model.type=cnn"};
    s = train_to(&cfg, cnn, 5, ck, checkpoint, sizeof checkpoint, &err);
    CHECK_MSG(s == PMOE_OK, "training the CNN: %s", err.message);
    if (!s) {
        pmoe_routing routing;
        s = pmoe_route(&cfg, checkpoint, 2, NULL, &routing, &err);
        CHECK_MSG(s == PMOE_ERR_CONFIG && strstr(err.message, "no router"), "CNN: %s", err.message);
        CHECK(routing.images == NULL && routing.selected == NULL);
    }

    /* A PNG that cannot be written: one line naming the file and why; nothing left. */
    pmoe_canvas small;
    CHECK(pmoe_canvas_init(&small, 4, 3, (pmoe_rgb){1, 2, 3}, &err) == PMOE_OK);
    snprintf(path, sizeof path, "%s/no-such-folder/x.png", tmp);
    s = pmoe_png_write(path, &small, &err);
    CHECK_MSG(s == PMOE_ERR_IO && strstr(err.message, path) && strstr(err.message, "No such file"),
              "%s", err.message);
    CHECK(strchr(err.message, '\n') == NULL);
    snprintf(path, sizeof path, "%s/no-such-folder", tmp);
    CHECK(access(path, F_OK) != 0);
    pmoe_canvas_free(&small);
    CHECK(pmoe_canvas_init(&small, 0, 3, (pmoe_rgb){0, 0, 0}, &err) == PMOE_ERR_CONFIG);

    /* The font: fixed advance, nothing drawn outside the text's box. */
    CHECK(pmoe_text_width("12", 2) == (PMOE_FONT_ADVANCE + PMOE_FONT_WIDTH) * 2);
    CHECK(pmoe_canvas_init(&small, 40, 20, (pmoe_rgb){255, 255, 255}, &err) == PMOE_OK);
    const int w = pmoe_canvas_text(&small, 2, 3, 2, "8%", (pmoe_rgb){0, 0, 0});
    int inside = 0, outside = 0;
    for (int y = 0; y < small.height; y++)
        for (int x = 0; x < small.width; x++) {
            const int ink = pmoe_canvas_get(&small, x, y).r == 0;
            const int in_box = x >= 2 && x < 2 + w && y >= 3 && y < 3 + pmoe_text_height(2);
            inside += ink && in_box;
            outside += ink && !in_box;
        }
    CHECK(inside > 0 && outside == 0);
    pmoe_canvas_free(&small);

    remove_tree(tmp);
    return test_finish("test_route");
}
