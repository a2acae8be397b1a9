/* test_folder.c: your own images (data.source = folder) and pmoe predict.
 *
 * The test writes its image folders itself, PNG through libpng and JPEG
 * through libjpeg, so it needs nothing beyond the build's libraries.
 * - a good folder of both formats: classes sorted by name, samples round
 *   robin over classes, RGB, the normalised training split has per-channel
 *   mean 0 and std 1, class names travel with the dataset;
 * - the size rules: crop_resize takes the centred square and averages 2x2
 *   blocks when halving, RGB to gray is the BT.601 luma, pad centres;
 * - broken files (truncated PNG, truncated JPEG, garbage, empty, wrong size)
 *   each stop the open with one line naming the file, and with
 *   data.on_bad_image = skip are skipped and counted; layout errors (no
 *   train/, a test class train/ lacks, an empty class) name the folder;
 * - a model trained for a few epochs on a separable toy folder predicts
 *   every test image right, and pmoe predict's accuracy over the test files
 *   equals pmoe eval's on the same checkpoint; an IDX file predicts too. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jpeglib.h>
#include <png.h>

#include "core/rng.h"
#include "data/dataset.h"
#include "data/image_fit.h"
#include "pmoe/predict.h"
#include "pmoe/train.h"
#include "test_util.h"

static char tmp[512];

static void make_dirs(const char *path) {
    char cmd[1400];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", path);
    if (system(cmd) != 0) fprintf(stderr, "mkdir -p %s failed\n", path);
}

static void write_png(const char *path, int w, int h, int channels, const uint8_t *hwc) {
    png_image image;
    memset(&image, 0, sizeof image);
    image.version = PNG_IMAGE_VERSION;
    image.width = (png_uint_32)w;
    image.height = (png_uint_32)h;
    image.format = channels == 3 ? PNG_FORMAT_RGB : PNG_FORMAT_GRAY;
    CHECK_MSG(png_image_write_to_file(&image, path, 0, hwc, 0, NULL), "writing %s: %s", path,
              image.message);
}

static void write_jpeg(const char *path, int w, int h, int channels, const uint8_t *hwc) {
    FILE *f = fopen(path, "wb");
    CHECK_MSG(f != NULL, "%s: %s", path, strerror(errno));
    if (!f) return;
    struct jpeg_compress_struct info;
    struct jpeg_error_mgr jerr;
    info.err = jpeg_std_error(&jerr);
    jpeg_create_compress(&info);
    jpeg_stdio_dest(&info, f);
    info.image_width = (JDIMENSION)w;
    info.image_height = (JDIMENSION)h;
    info.input_components = channels;
    info.in_color_space = channels == 3 ? JCS_RGB : JCS_GRAYSCALE;
    jpeg_set_defaults(&info);
    jpeg_set_quality(&info, 95, TRUE);
    jpeg_start_compress(&info, TRUE);
    while (info.next_scanline < info.image_height) {
        JSAMPROW row = (JSAMPROW)(hwc + (size_t)info.next_scanline * w * channels);
        jpeg_write_scanlines(&info, &row, 1);
    }
    jpeg_finish_compress(&info);
    jpeg_destroy_compress(&info);
    fclose(f);
}

/* A toy image of class c: noise, and a 6x6 block bright in channel c. */
static void toy_image(int c, uint64_t seed, int side, uint8_t *hwc) {
    pmoe_rng r = pmoe_rng_make(seed, 77);
    for (int i = 0; i < side * side * 3; i++) hwc[i] = (uint8_t)pmoe_rng_next_below(&r, 50);
    const int top = (int)pmoe_rng_next_below(&r, (uint64_t)side - 5);
    const int left = (int)pmoe_rng_next_below(&r, (uint64_t)side - 5);
    for (int y = top; y < top + 6; y++)
        for (int x = left; x < left + 6; x++)
            for (int ch = 0; ch < 3; ch++) hwc[(y * side + x) * 3 + ch] = ch == c ? 230 : 30;
}

static const char *const TOY_CLASSES[3] = {"blue_b", "green_g", "red_r"}; /* sorted: b, g, r */
static const int TOY_CHANNEL[3] = {2, 1, 0};

/* root/{train,test}/<class>/: train_per and test_per images per class, PNG
 * and JPEG alternating. */
static void write_toy(const char *root, int train_per, int test_per) {
    uint8_t img[16 * 16 * 3];
    for (int split = 0; split < 2; split++)
        for (int c = 0; c < 3; c++) {
            char dir[1100];
            snprintf(dir, sizeof dir, "%s/%s/%s", root, split ? "test" : "train", TOY_CLASSES[c]);
            make_dirs(dir);
            const int n = split ? test_per : train_per;
            for (int i = 0; i < n; i++) {
                char path[1200];
                snprintf(path, sizeof path, "%s/img%03d.%s", dir, i, i % 2 ? "jpg" : "png");
                toy_image(TOY_CHANNEL[c], (uint64_t)(split * 100000 + c * 1000 + i), 16, img);
                if (i % 2) write_jpeg(path, 16, 16, 3, img);
                else write_png(path, 16, 16, 3, img);
            }
        }
}

static void set_all(pmoe_config *cfg, const char *const *sets, int n) {
    pmoe_error err;
    for (int i = 0; i < n; i++)
        CHECK_MSG(pmoe_config_set(cfg, sets[i], &err) == PMOE_OK, "%s", err.message);
}

static pmoe_status open_folder(const char *root, const char *extra, pmoe_dataset **train,
                               pmoe_dataset **test, pmoe_error *err) {
    pmoe_config cfg;
    pmoe_config_default(&cfg);
    char set[1200];
    snprintf(set, sizeof set, "data.path=%s", root);
    const char *sets[] = {"data.source=folder", set};
    set_all(&cfg, sets, 2);
    if (extra) pmoe_config_set(&cfg, extra, NULL);
    return pmoe_data_open(&cfg.data, train, test, NULL, err);
}

static void test_good_folder(void) {
    char root[700];
    snprintf(root, sizeof root, "%s/good", tmp);
    write_toy(root, 5, 2);
    pmoe_dataset *train = NULL, *test = NULL;
    pmoe_error err = {PMOE_OK, ""};
    pmoe_status s = open_folder(root, NULL, &train, &test, &err);
    CHECK_MSG(s == PMOE_OK, "%s", err.message);
    if (s) return;
    CHECK(train->count == 15 && test->count == 6 && train->classes == 3 && test->classes == 3);
    CHECK(train->channels == 3 && train->height == 16 && train->width == 16 &&
          train->default_patch == 4);
    CHECK(train->class_names && !strcmp(train->class_names[0], "blue_b") &&
          !strcmp(train->class_names[2], "red_r") && !strcmp(test->class_names[1], "green_g"));
    int round_robin = 1;
    for (int64_t i = 0; i < train->count; i++) round_robin &= train->labels[i] == i % 3;
    CHECK_MSG(round_robin, "samples are not taken round robin over the classes");
    CHECK(strstr(train->description, "15 16x16 RGB images, 3 classes") != NULL);
    /* the training split normalised: mean 0, std 1 per channel */
    const size_t per = 3 * 16 * 16, plane = 256;
    float *x = fbuf((int64_t)per);
    double sum[3] = {0}, sq[3] = {0};
    for (int64_t i = 0; i < train->count; i++) {
        train->compose(train, i, x);
        for (int c = 0; c < 3; c++)
            for (size_t j = 0; j < plane; j++) {
                sum[c] += x[c * plane + j];
                sq[c] += (double)x[c * plane + j] * x[c * plane + j];
            }
    }
    double worst = 0.0;
    const double n = (double)train->count * plane;
    for (int c = 0; c < 3; c++) {
        const double m = sum[c] / n, sd = sqrt(sq[c] / n - m * m);
        worst = fmax(worst, fmax(fabs(m), fabs(sd - 1.0)));
    }
    CHECK_MSG(worst < 1e-5, "normalised training split: worst |mean| or |std - 1| %.3g", worst);
    printf("good folder: 15 + 6 images of PNG and JPEG, 3 classes round robin; normalised "
           "channels within %.2g of mean 0 / std 1 (limit 1e-5)\n",
           worst);
    /* test_size caps the test split, still round robin */
    pmoe_dataset_free(train);
    pmoe_dataset_free(test);
    s = open_folder(root, "data.test_size=4", &train, &test, &err);
    CHECK(s == PMOE_OK && test->count == 4 && test->labels[3] == 0);
    pmoe_dataset_free(train);
    pmoe_dataset_free(test);
    /* data.image_size resizes every image */
    s = open_folder(root, "data.image_size=8", &train, &test, &err);
    CHECK(s == PMOE_OK && train->height == 8 && train->width == 8 && test->width == 8);
    pmoe_dataset_free(train);
    pmoe_dataset_free(test);
}

static void test_fit_rules(void) {
    /* 20 x 16 RGB, constant on 2x2 blocks: the centred 16 x 16 square
     * starts at x = 2, and halving averages each block to its value. */
    uint8_t px[16 * 20 * 3];
    for (int y = 0; y < 16; y++)
        for (int x = 0; x < 20; x++)
            for (int c = 0; c < 3; c++)
                px[(y * 20 + x) * 3 + c] = (uint8_t)(3 * (x / 2) + 20 * (y / 2) + c);
    pmoe_image img = {20, 16, 3, px};
    uint8_t out[3 * 8 * 8];
    pmoe_error err;
    CHECK(pmoe_image_fit(&img, 3, 8, 8, PMOE_FIT_CROP_RESIZE, out, "x", &err) == PMOE_OK);
    int ok = 1;
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < 8; y++)
            for (int x = 0; x < 8; x++) ok &= out[(c * 8 + y) * 8 + x] == 3 * (1 + x) + 20 * y + c;
    CHECK_MSG(ok, "crop_resize: not the centred square halved");
    /* RGB to gray: BT.601 luma, rounded */
    uint8_t rgb[3] = {100, 150, 200}, gray;
    pmoe_image one = {1, 1, 3, rgb};
    CHECK(pmoe_image_fit(&one, 1, 1, 1, PMOE_FIT_EXACT, &gray, "x", &err) == PMOE_OK &&
          gray == 141);
    /* gray to RGB repeats; pad centres (odd margin bottom / right) */
    uint8_t g[2] = {7, 9}, padded[3 * 3 * 4];
    pmoe_image two = {2, 1, 1, g};
    CHECK(pmoe_image_fit(&two, 3, 3, 4, PMOE_FIT_PAD, padded, "x", &err) == PMOE_OK);
    CHECK(padded[4 + 1] == 7 && padded[4 + 2] == 9 && padded[12 + 4 + 1] == 7 && padded[0] == 0 &&
          padded[2 * 12 + 4 + 2] == 9 && padded[4 + 3] == 0);
    /* exact refuses another size, naming the file */
    CHECK(pmoe_image_fit(&img, 3, 8, 8, PMOE_FIT_EXACT, out, "some.png", &err) == PMOE_ERR_FORMAT &&
          strstr(err.message, "some.png: 20x16 image"));
    printf(
        "fit rules: centred crop + bilinear halving, BT.601 luma, centred padding, exact size\n");
}

static void copy_file(const char *from, const char *to, long keep) {
    FILE *a = fopen(from, "rb"), *b = fopen(to, "wb");
    if (!a || !b) {
        CHECK_MSG(0, "copy %s -> %s", from, to);
        if (a) fclose(a);
        if (b) fclose(b);
        return;
    }
    char buf[65536];
    size_t n = fread(buf, 1, sizeof buf, a);
    if (keep >= 0 && (size_t)keep < n) n = (size_t)keep;
    if (keep < 0) n = (size_t)((long)n + keep);
    fwrite(buf, 1, n, b);
    fclose(a);
    fclose(b);
}

static long file_size(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 ? (long)sb.st_size : 0;
}

/* Writes bad file `which` into root/train/blue_b/; returns its path in out. */
static void write_bad(const char *root, int which, char *out, size_t size) {
    static const char *const names[] = {"zz_truncated.png", "zz_truncated.jpg", "zz_garbage.jpg",
                                        "zz_empty.png", "zz_wide.png"};
    char good_png[1200], good_jpg[1200];
    snprintf(good_png, sizeof good_png, "%s/train/blue_b/img000.png", root);
    snprintf(good_jpg, sizeof good_jpg, "%s/train/blue_b/img001.jpg", root);
    snprintf(out, size, "%s/train/blue_b/%s", root, names[which]);
    if (which == 0) copy_file(good_png, out, file_size(good_png) / 2);
    if (which == 1) copy_file(good_jpg, out, file_size(good_jpg) * 6 / 10);
    if (which == 2) {
        FILE *f = fopen(out, "wb");
        if (f) {
            fputs("hello, this is not a JPEG", f);
            fclose(f);
        }
    }
    if (which == 3) fclose(fopen(out, "wb"));
    if (which == 4) {
        uint8_t wide[16 * 20 * 3] = {0};
        write_png(out, 20, 16, 3, wide);
    }
}

static void test_bad_files(void) {
    const char *needles[] = {"truncated or corrupt PNG", "truncated or corrupt JPEG",
                             "not a PNG or JPEG", "empty file", "20x16 image"};
    for (int which = 0; which < 5; which++) {
        char root[700], bad[1300];
        snprintf(root, sizeof root, "%s/bad%d", tmp, which);
        write_toy(root, 3, 1);
        write_bad(root, which, bad, sizeof bad);
        pmoe_dataset *train = NULL, *test = NULL;
        pmoe_error err = {PMOE_OK, ""};
        pmoe_status s = open_folder(root, NULL, &train, &test, &err);
        CHECK_MSG(s == PMOE_ERR_FORMAT && strstr(err.message, bad) &&
                      strstr(err.message, needles[which]) && !strchr(err.message, '\n'),
                  "bad file %d: status %d, '%s'", which, s, err.message);
        printf("bad file %d: %s\n", which, err.message);
    }
    /* all five in one folder, skipped and counted */
    char root[700], bad[1300];
    snprintf(root, sizeof root, "%s/bad-all", tmp);
    write_toy(root, 3, 1);
    for (int which = 0; which < 5; which++) write_bad(root, which, bad, sizeof bad);
    pmoe_dataset *train = NULL, *test = NULL;
    pmoe_error err = {PMOE_OK, ""};
    pmoe_status s = open_folder(root, "data.on_bad_image=skip", &train, &test, &err);
    CHECK_MSG(s == PMOE_OK && train->count == 9 &&
                  strstr(train->description, "5 bad files skipped"),
              "skip: status %d, %lld images, '%s' '%s'", s, train ? (long long)train->count : -1LL,
              train ? train->description : "", err.message);
    pmoe_dataset_free(train);
    pmoe_dataset_free(test);

    /* layout errors name the folder */
    struct {
        const char *setup, *needle;
    } layout[] = {
        {"", "train: cannot open"},
        {"mkdir -p '%s/train/a' '%s/test/b'", "a classifier needs at least 2"},
        {"mkdir -p '%s/train/a' '%s/train/b' '%s/test/c'",
         "test/c: a test class that train/ does not have"},
        {"mkdir -p '%s/train/a' '%s/train/b' '%s/test'", "train/a: no .png or .jpg images"},
    };
    for (size_t i = 0; i < sizeof layout / sizeof layout[0]; i++) {
        char dir[700], cmd[4000];
        snprintf(dir, sizeof dir, "%s/layout%zu", tmp, i);
        if (layout[i].setup[0]) {
            snprintf(cmd, sizeof cmd, layout[i].setup, dir, dir, dir);
            if (system(cmd) != 0) CHECK_MSG(0, "%s", cmd);
        }
        s = open_folder(dir, NULL, &train, &test, &err);
        CHECK_MSG(s != PMOE_OK && strstr(err.message, layout[i].needle), "layout %zu: '%s'", i,
                  err.message);
    }
}

/* predict's routing of the test files, given in the test split's order
 * (round robin over the classes), is route's of the test set: the same
 * picks, gates and counts, labels (the predictions: all right), and the
 * images as read, which route shows normalised. */
static void test_predict_routing(const pmoe_config *cfg, const char *checkpoint, const char *root) {
    const char *files[18];
    char names[18][1100];
    int n = 0;
    for (int i = 0; i < 6; i++)
        for (int c = 0; c < 3; c++) {
            snprintf(names[n], sizeof names[n], "%s/test/%s/img%03d.%s", root, TOY_CLASSES[c], i,
                     i % 2 ? "jpg" : "png");
            files[n] = names[n];
            n++;
        }
    pmoe_error err = {PMOE_OK, ""};
    pmoe_routing want, got;
    pmoe_status s = pmoe_route(cfg, checkpoint, 5, NULL, &want, &err);
    CHECK_MSG(s == PMOE_OK, "route: %s", err.message);
    if (s) return;
    pmoe_prediction *p = NULL;
    int64_t count = 0;
    pmoe_predict_options options = {NULL, &got, 5, NULL};
    s = pmoe_predict(checkpoint, files, n, &options, &p, &count, &err);
    CHECK_MSG(s == PMOE_OK && count == n, "predict: %s", err.message);
    if (s) {
        pmoe_routing_free(&want);
        return;
    }
    const int k = want.experts, l = want.topl, cells = want.grid_rows * want.grid_cols;
    CHECK(got.samples == 5 && got.test_size == n && got.experts == k && got.topl == l);
    CHECK(got.grid_rows == want.grid_rows && got.grid_cols == want.grid_cols &&
          got.patch == want.patch && got.channels == 3 && got.height == 16 && got.width == 16);
    CHECK(got.test_acc < 0 && got.router_recall < 0);
    CHECK(memcmp(got.selected, want.selected, sizeof(int32_t) * (size_t)(5 * k * l)) == 0);
    CHECK(memcmp(got.gate, want.gate, sizeof(float) * (size_t)(5 * k * l)) == 0);
    CHECK(memcmp(got.by_position, want.by_position, sizeof(int64_t) * (size_t)(k * cells)) == 0);
    int labels = 1;
    for (int i = 0; i < 5; i++)
        labels &= got.labels[i] == p[i].class_index && got.labels[i] == want.labels[i] &&
                  got.decisive[i] == -1;
    CHECK(labels);
    /* PNG files hold the pixels exactly: the image as read is byte / 255 */
    uint8_t hwc[16 * 16 * 3];
    double worst = 0.0;
    for (int i = 0; i < 5; i++) {
        const int c = i % 3, index = i / 3;
        if (index % 2) continue; /* a JPEG */
        toy_image(TOY_CHANNEL[c], (uint64_t)(100000 + c * 1000 + index), 16, hwc);
        for (int ch = 0; ch < 3; ch++)
            for (int at = 0; at < 256; at++)
                worst = fmax(worst,
                             fabs(got.images[(i * 3 + ch) * 256 + at] - hwc[at * 3 + ch] / 255.0));
    }
    CHECK_MSG(worst < 1e-6, "predict's routing images differ from the files by %g", worst);
    printf("predict --route-out: the same picks, gates and counts as pmoe route on %d test "
           "images; images as read within %.2g (limit 1e-6)\n",
           n, worst);
    free(p);
    pmoe_routing_free(&got);
    pmoe_routing_free(&want);
}

/* Per-class figures of a model that is not always right (a CNN trained at
 * learning rate 0): eval's confusion matrix is the one predict's classes make on the
 * test files (given in the test split's order), its diagonal is eval's
 * accuracy, its classes are the folders' names, and train's final
 * evaluation reported the same. */
static void test_per_class(const pmoe_config *cfg, const pmoe_train_result *trained,
                           const char *root) {
    pmoe_error err = {PMOE_OK, ""};
    pmoe_eval_result ev;
    const pmoe_eval_options options = {1, NULL};
    pmoe_status s = pmoe_eval(cfg, trained->last_checkpoint, &options, &ev, &err);
    CHECK_MSG(s == PMOE_OK, "eval --per-class: %s", err.message);
    if (s) return;
    const pmoe_class_figures *f = &ev.per_class;
    CHECK(f->classes == 3 && !f->binary && f->names);
    for (int c = 0; f->names && c < 3; c++) CHECK(!strcmp(f->names[c], TOY_CLASSES[c]));
    const char *files[18];
    char names[18][1100];
    int truth[18], n = 0;
    for (int i = 0; i < 6; i++)
        for (int c = 0; c < 3; c++) {
            snprintf(names[n], sizeof names[n], "%s/test/%s/img%03d.%s", root, TOY_CLASSES[c], i,
                     i % 2 ? "jpg" : "png");
            files[n] = names[n];
            truth[n++] = c;
        }
    pmoe_prediction *p = NULL;
    int64_t count = 0;
    s = pmoe_predict(trained->last_checkpoint, files, n, NULL, &p, &count, &err);
    CHECK_MSG(s == PMOE_OK && count == n, "%s", err.message);
    int64_t counts[9] = {0}, diagonal = 0;
    for (int i = 0; !s && i < n; i++) counts[truth[i] * 3 + p[i].class_index]++;
    for (int c = 0; c < 3; c++) diagonal += f->counts[c * 3 + c];
    CHECK_MSG(!s && memcmp(counts, f->counts, sizeof counts) == 0,
              "eval's confusion matrix is not predict's");
    CHECK_MSG(diagonal == (int64_t)llround(ev.test_acc * n), "diagonal %lld, accuracy %.4f of %d",
              (long long)diagonal, ev.test_acc, n);
    CHECK(trained->per_class.classes == 3 &&
          memcmp(trained->per_class.counts, f->counts, sizeof counts) == 0);
    printf("per class of a CNN left untrained (lr 0): accuracy %.3f, diagonal %lld of %d, the "
           "matrix of "
           "predict's classes and of train's final evaluation\n",
           ev.test_acc, (long long)diagonal, n);
    free(p);
    pmoe_class_figures_free(&ev.per_class);
}

static void test_train_and_predict(void) {
    char root[700], ckdir[800];
    snprintf(root, sizeof root, "%s/toy", tmp);
    snprintf(ckdir, sizeof ckdir, "train.checkpoint_dir=%s/toy-ck", tmp);
    write_toy(root, 20, 6);
    pmoe_config cfg;
    pmoe_config_default(&cfg);
    char path[800];
    snprintf(path, sizeof path, "data.path=%s", root);
    const char *sets[] = {"data.source=folder",
                          path,
                          "model.experts=4",
                          "model.topl=4",
                          "train.epochs=8",
                          "train.batch=6",
                          "train.lr=0.2",
                          "train.checkpoint_every=1000",
                          ckdir,
                          "data.flip=1",
                          "data.crop_pad=2"};
    set_all(&cfg, sets, (int)(sizeof sets / sizeof sets[0]));
    pmoe_train_result res;
    pmoe_error err = {PMOE_OK, ""};
    pmoe_status s = pmoe_train(&cfg, NULL, NULL, &res, &err);
    CHECK_MSG(s == PMOE_OK, "%s", err.message);
    if (s) return;
    CHECK_MSG(res.test_acc == 1.0, "toy folder: test accuracy %.3f after 8 epochs", res.test_acc);
    pmoe_eval_result ev;
    s = pmoe_eval(&cfg, res.last_checkpoint, NULL, &ev, &err);
    CHECK_MSG(s == PMOE_OK, "%s", err.message);

    /* predict every test file, named as the test split holds them */
    const char *files[18];
    char names[18][1100];
    int expected[18], n = 0;
    for (int c = 0; c < 3; c++)
        for (int i = 0; i < 6; i++) {
            snprintf(names[n], sizeof names[n], "%s/test/%s/img%03d.%s", root, TOY_CLASSES[c], i,
                     i % 2 ? "jpg" : "png");
            files[n] = names[n];
            expected[n++] = c;
        }
    pmoe_prediction *p = NULL;
    int64_t count = 0;
    s = pmoe_predict(res.last_checkpoint, files, n, NULL, &p, &count, &err);
    CHECK_MSG(s == PMOE_OK && count == n, "predict: %s", err.message);
    if (s) return;
    int right = 0, named = 1;
    double least = 1.0;
    for (int i = 0; i < n; i++) {
        right += p[i].class_index == expected[i];
        named &= !strcmp(p[i].class_name, TOY_CLASSES[p[i].class_index]) &&
                 !strcmp(p[i].source, files[i]);
        least = fmin(least, p[i].probability);
    }
    CHECK_MSG(right == n, "predict: %d of %d right", right, n);
    CHECK(named);
    CHECK_MSG((double)right / n == ev.test_acc, "predict's accuracy %g, eval's %g",
              (double)right / n, ev.test_acc);
    printf("toy folder: trained to test accuracy %.3f; predict gets %d/%d right (eval %.3f), "
           "least probability %.3f\n",
           res.test_acc, right, n, ev.test_acc, least);
    free(p);

    /* a file of another size is refused, naming it; an IDX file predicts too */
    char wrong[1100];
    snprintf(wrong, sizeof wrong, "%s/wrong.png", tmp);
    uint8_t img[20 * 20 * 3] = {0};
    write_png(wrong, 20, 20, 3, img);
    const char *one[1] = {wrong};
    s = pmoe_predict(res.last_checkpoint, one, 1, NULL, &p, &count, &err);
    CHECK_MSG(s == PMOE_ERR_FORMAT && strstr(err.message, wrong), "%d %s", s, err.message);
    /* IDX: two 16x16 gray images (gray to RGB repeats the channel) */
    char idx[1100];
    snprintf(idx, sizeof idx, "%s/two.idx", tmp);
    FILE *f = fopen(idx, "wb");
    const uint8_t header[16] = {0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 16, 0, 0, 0, 16};
    uint8_t pixels[2 * 256] = {0};
    if (f) {
        fwrite(header, 1, 16, f);
        fwrite(pixels, 1, sizeof pixels, f);
        fclose(f);
    }
    one[0] = idx;
    s = pmoe_predict(res.last_checkpoint, one, 1, NULL, &p, &count, &err);
    CHECK_MSG(s == PMOE_OK && count == 2 && strstr(p[1].source, "two.idx[1]"), "%d %s", s,
              err.message);
    if (!s) free(p);
    test_predict_routing(&cfg, res.last_checkpoint, root);

    /* a model without routers has no routing to draw: refused, nothing returned */
    snprintf(ckdir, sizeof ckdir, "train.checkpoint_dir=%s/toy-cnn", tmp);
    const char *cnn[] = {"model.type=cnn", "train.epochs=1", "train.lr=0", ckdir};
    set_all(&cfg, cnn, 4);
    const pmoe_train_options per_class = {NULL, NULL, 1};
    s = pmoe_train(&cfg, NULL, &per_class, &res, &err);
    CHECK_MSG(s == PMOE_OK, "cnn: %s", err.message);
    if (!s) test_per_class(&cfg, &res, root);
    pmoe_class_figures_free(&res.per_class);
    pmoe_routing routing;
    pmoe_predict_options options = {NULL, &routing, 4, NULL};
    one[0] = files[0];
    if (!s) s = pmoe_predict(res.last_checkpoint, one, 1, &options, &p, &count, &err);
    CHECK_MSG(s == PMOE_ERR_CONFIG && strstr(err.message, "has no router to draw") && !p &&
                  !routing.images && !routing.by_position,
              "cnn --route-out: %d %s", s, err.message);
}

int main(void) {
    snprintf(tmp, sizeof tmp, "/tmp/pmoe-test-folder-%d", (int)getpid());
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf %s && mkdir -p %s", tmp, tmp);
    if (system(cmd) != 0) return 2;
    test_fit_rules();
    test_good_folder();
    test_bad_files();
    test_train_and_predict();
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp);
    free_all();
    return test_finish("test_folder");
}
