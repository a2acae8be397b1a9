/* test_data.c: the data sources (IDX reading, the theory's synthetic model,
 * the mosaic, plain and padded IDX classification, the noisy-background
 * task, and the AUTO choice).
 *
 * IDX inputs are written by the test itself into a temporary folder, plain
 * and gzip, well-formed and broken in one way each, so every check knows the
 * exact bytes it expects. Fake images encode their own index in their pixels,
 * so a composed mosaic can be decoded back into the items it was built from. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "core/rng.h"
#include "data/dataset.h"
#include "data/idx.h"
#include "data/synthetic.h"
#include "test_util.h"

/* ---- temporary files ---------------------------------------------------- */

static char *created[256];
static int created_count;

static void remember(const char *path) {
    if (created_count < 256) created[created_count++] = strdup(path);
}

static void remove_created(void) {
    for (int i = created_count - 1; i >= 0; i--) { /* files before their folders */
        if (remove(created[i]) != 0) rmdir(created[i]);
        free(created[i]);
    }
}

static void new_dir(char *out, int out_size) {
    make_temp_dir(out, out_size);
    remember(out);
}

static void join(char *out, size_t out_size, const char *dir, const char *name) {
    snprintf(out, out_size, "%s/%s", dir, name);
}

static void write_bytes(const char *path, const void *data, size_t n, int gzip) {
    if (gzip) {
        gzFile gz = gzopen(path, "wb");
        if (!gz || (n && gzwrite(gz, data, (unsigned)n) != (int)n) || gzclose(gz) != Z_OK) {
            fprintf(stderr, "cannot write %s\n", path);
            exit(2);
        }
    } else {
        FILE *f = fopen(path, "wb");
        if (!f || fwrite(data, 1, n, f) != n || fclose(f) != 0) {
            fprintf(stderr, "cannot write %s\n", path);
            exit(2);
        }
    }
    remember(path);
}

static uint8_t *read_whole(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc(*n);
    if (fread(buf, 1, *n, f) != *n) exit(2);
    fclose(f);
    return buf;
}

/* An IDX file image in memory: header (type byte, ndim, dims) then data. */
static uint8_t *idx_bytes(int type, int ndim, const uint32_t *dims, const uint8_t *data,
                          size_t data_bytes, size_t *total) {
    *total = 4 + 4 * (size_t)ndim + data_bytes;
    uint8_t *b = malloc(*total);
    b[0] = b[1] = 0;
    b[2] = (uint8_t)type;
    b[3] = (uint8_t)ndim;
    for (int i = 0; i < ndim; i++)
        for (int k = 0; k < 4; k++) b[4 + 4 * i + k] = (uint8_t)(dims[i] >> (24 - 8 * k));
    if (data_bytes) memcpy(b + 4 + 4 * ndim, data, data_bytes);
    return b;
}

static void write_idx(const char *path, int ndim, const uint32_t *dims, const uint8_t *data,
                      int gzip) {
    size_t data_bytes = 1, total;
    for (int i = 0; i < ndim; i++) data_bytes *= dims[i];
    uint8_t *b = idx_bytes(0x08, ndim, dims, data, data_bytes, &total);
    write_bytes(path, b, total, gzip);
    free(b);
}

/* Checks that a call failed with `code` and a message naming `path`
 * (and containing `also` when given). */
static void check_failure(const char *what, pmoe_status st, const pmoe_error *err, pmoe_status code,
                          const char *path, const char *also) {
    CHECK_MSG(st == code, "%s: status %s, want %s (%s)", what, pmoe_status_name(st),
              pmoe_status_name(code), err->message);
    CHECK_MSG(!path || strstr(err->message, path), "%s: message lacks the path: %s", what,
              err->message);
    CHECK_MSG(!also || strstr(err->message, also), "%s: message lacks \"%s\": %s", what, also,
              err->message);
}

/* ---- IDX ---------------------------------------------------------------- */

static void test_idx_read_roundtrip(const char *dir) {
    uint32_t dims[3] = {3, 2, 5};
    uint8_t data[30];
    for (int i = 0; i < 30; i++) data[i] = (uint8_t)(i * 37 + 11);
    for (int gzip = 0; gzip < 2; gzip++) {
        char path[1200];
        join(path, sizeof path, dir, gzip ? "round.gz" : "round");
        write_idx(path, 3, dims, data, gzip);
        pmoe_idx idx;
        pmoe_error err = {0};
        pmoe_status st = pmoe_idx_read(path, 3, &idx, &err);
        CHECK_MSG(st == PMOE_OK, "%s", err.message);
        if (st) continue;
        CHECK(idx.ndim == 3 && idx.dims[0] == 3 && idx.dims[1] == 2 && idx.dims[2] == 5);
        CHECK(memcmp(idx.data, data, 30) == 0);
        pmoe_idx_free(&idx);
        CHECK(idx.data == NULL);
    }
    uint32_t one[1] = {4};
    char path[1200];
    join(path, sizeof path, dir, "labels1");
    write_idx(path, 1, one, data, 0);
    pmoe_idx idx;
    pmoe_error err = {0};
    CHECK(pmoe_idx_read(path, 1, &idx, &err) == PMOE_OK);
    CHECK(idx.ndim == 1 && idx.dims[0] == 4 && memcmp(idx.data, data, 4) == 0);
    pmoe_idx_free(&idx);

    /* find: plain first, then .gz */
    char found[1200];
    CHECK(pmoe_idx_find(dir, "round", found, sizeof found, &err) == PMOE_OK);
    CHECK(strcmp(found + strlen(found) - 6, "/round") == 0);
    join(path, sizeof path, dir, "onlygz.gz");
    write_idx(path, 3, dims, data, 1);
    CHECK(pmoe_idx_find(dir, "onlygz", found, sizeof found, &err) == PMOE_OK);
    CHECK(strcmp(found, path) == 0);
    pmoe_status st = pmoe_idx_find(dir, "absent", found, sizeof found, &err);
    check_failure("find absent", st, &err, PMOE_ERR_IO, "absent", "absent.gz");
}

static void expect_read_failure(const char *what, const char *dir, const char *name,
                                const uint8_t *bytes, size_t n, int gzip, int ndim,
                                pmoe_status code, const char *also) {
    char path[1200];
    join(path, sizeof path, dir, name);
    write_bytes(path, bytes, n, gzip);
    pmoe_idx idx;
    pmoe_error err = {0};
    pmoe_status st = pmoe_idx_read(path, ndim, &idx, &err);
    check_failure(what, st, &err, code, path, also);
    CHECK(idx.data == NULL);
}

static void test_idx_errors(const char *dir) {
    uint32_t dims[3] = {3, 2, 4};
    uint8_t data[24] = {0};
    size_t n;
    uint8_t *good = idx_bytes(0x08, 3, dims, data, 24, &n);

    expect_read_failure("truncated data", dir, "trunc", good, n - 4, 0, 3, PMOE_ERR_FORMAT,
                        "truncated at offset 36: expected 24 bytes of data");
    expect_read_failure("truncated header", dir, "trunchead", good, 9, 0, 3, PMOE_ERR_FORMAT,
                        "truncated at offset 9");
    expect_read_failure("tiny file", dir, "tiny", good, 2, 0, 3, PMOE_ERR_FORMAT, "truncated");
    expect_read_failure("empty file", dir, "empty", good, 0, 0, 3, PMOE_ERR_FORMAT, "truncated");

    uint8_t *bad = malloc(n + 8);
    memcpy(bad, good, n);
    bad[0] = 0x12;
    expect_read_failure("wrong magic", dir, "magic", bad, n, 0, 3, PMOE_ERR_FORMAT, "offset 0");
    memcpy(bad, good, n);
    bad[2] = 0x0d;
    expect_read_failure("wrong type", dir, "type", bad, n, 0, 3, PMOE_ERR_FORMAT,
                        "offset 2: expected IDX type 0x08 (unsigned byte), found 0x0d");
    expect_read_failure("wrong ndim", dir, "ndim", good, n, 0, 1, PMOE_ERR_FORMAT, "offset 3");
    memcpy(bad, good, n);
    memset(bad + 8, 0, 4); /* dims[1] = 0 */
    expect_read_failure("zero dimension", dir, "zerodim", bad, n, 0, 3, PMOE_ERR_FORMAT,
                        "dimension 1 is 0");
    uint32_t huge[3] = {60000, 60000, 60000};
    uint8_t *absurd = idx_bytes(0x08, 3, huge, NULL, 0, &n);
    expect_read_failure("absurd size", dir, "absurd", absurd, n, 0, 3, PMOE_ERR_FORMAT, "2^31");
    free(absurd);
    /* A header promising the 2^31-byte maximum on a 16-byte file: rejected as
     * truncated (the buffer grows with the data read, so this costs 1 MiB). */
    uint32_t most[3] = {2048, 1024, 1024};
    absurd = idx_bytes(0x08, 3, most, NULL, 0, &n);
    expect_read_failure("promise without data", dir, "promise", absurd, n, 0, 3, PMOE_ERR_FORMAT,
                        "truncated at offset 16: expected 2147483648 bytes of data from offset "
                        "16, found 0");
    free(absurd);

    n = 4 + 12 + 24;
    memcpy(bad, good, n);
    memcpy(bad + n, "garbage!", 8);
    expect_read_failure("trailing bytes", dir, "trailing", bad, n + 8, 0, 3, PMOE_ERR_FORMAT,
                        "unexpected bytes after offset 40");
    free(bad);
    free(good);

    /* A gzip stream cut in the middle, and one with a corrupted body. Random
     * data keeps the compressed stream long enough to cut inside deflate. */
    uint32_t big_dims[3] = {10, 40, 50};
    uint8_t *noise = malloc(20000);
    pmoe_rng rng = pmoe_rng_make(99, 1);
    for (int i = 0; i < 20000; i++) noise[i] = (uint8_t)pmoe_rng_next_bits(&rng);
    char path[1200];
    join(path, sizeof path, dir, "whole.gz");
    write_idx(path, 3, big_dims, noise, 1);
    size_t gz_n;
    uint8_t *gz = read_whole(path, &gz_n);
    CHECK(gz_n > 10000 && gz[0] == 0x1f && gz[1] == 0x8b);
    expect_read_failure("gzip cut", dir, "cut.gz", gz, gz_n / 2, 0, 3, PMOE_ERR_FORMAT, "gzip");
    gz[gz_n - 6] ^= 0xff; /* inside the CRC32 trailer */
    expect_read_failure("gzip corrupt", dir, "corrupt.gz", gz, gz_n, 0, 3, PMOE_ERR_FORMAT,
                        "gzip error");
    free(gz);
    free(noise);

    char missing[1200];
    join(missing, sizeof missing, dir, "no-such-file");
    pmoe_idx idx;
    pmoe_error err = {0};
    pmoe_status st = pmoe_idx_read(missing, 3, &idx, &err);
    check_failure("missing file", st, &err, PMOE_ERR_IO, missing, "cannot open");

    /* A split whose counts disagree names both files. */
    char split_dir[1100], images[1200], labels[1200];
    new_dir(split_dir, sizeof split_dir);
    uint32_t image_dims[3] = {3, 2, 2}, label_dims[1] = {4};
    uint8_t zeros[12] = {0};
    join(images, sizeof images, split_dir, "train-images-idx3-ubyte");
    join(labels, sizeof labels, split_dir, "train-labels-idx1-ubyte.gz");
    write_idx(images, 3, image_dims, zeros, 0);
    write_idx(labels, 1, label_dims, zeros, 1);
    pmoe_idx_split split;
    st = pmoe_idx_split_load(split_dir, "train", &split, &err);
    check_failure("count mismatch", st, &err, PMOE_ERR_FORMAT, images, labels);
    CHECK(split.images.data == NULL && split.labels.data == NULL);
    st = pmoe_idx_split_load(split_dir, "t10k", &split, &err);
    check_failure("missing split", st, &err, PMOE_ERR_IO, "t10k-images-idx3-ubyte", NULL);
}

static void test_idx_growing_buffer(const char *dir) {
    /* Larger than the first 1 MiB buffer, so the read grows it twice; plain
     * and gzip, whole and one byte short. */
    uint32_t big_dims[3] = {3, 700, 700};
    const size_t big_n = 3 * 700 * 700;
    uint8_t *big = malloc(big_n);
    for (size_t i = 0; i < big_n; i++) big[i] = (uint8_t)(i * 2654435761u >> 13);
    for (int gzip = 0; gzip < 2; gzip++) {
        char path[1200];
        join(path, sizeof path, dir, gzip ? "big.gz" : "big");
        write_idx(path, 3, big_dims, big, gzip);
        pmoe_idx idx;
        pmoe_error err = {0};
        pmoe_status st = pmoe_idx_read(path, 3, &idx, &err);
        CHECK_MSG(st == PMOE_OK, "%s", err.message);
        if (st) continue;
        CHECK(idx.dims[0] == 3 && idx.dims[1] == 700 && memcmp(idx.data, big, big_n) == 0);
        pmoe_idx_free(&idx);
    }
    size_t big_file_n;
    uint8_t *big_file = idx_bytes(0x08, 3, big_dims, big, big_n, &big_file_n);
    expect_read_failure("big truncated", dir, "bigcut", big_file, big_file_n - 1, 0, 3,
                        PMOE_ERR_FORMAT, "found 1469999");
    free(big_file);
    free(big);
}

/* ---- the theory's synthetic model -------------------------------------- */

static pmoe_data_config synthetic_config(void) {
    pmoe_data_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.source = PMOE_DATA_SYNTHETIC;
    cfg.train_size = 101;
    cfg.test_size = 50;
    cfg.seed = 7;
    cfg.pos_class = 1;
    cfg.neg_class = 0;
    cfg.grid = 4;
    cfg.synthetic_patches = 8;
    cfg.synthetic_dim = 12;
    cfg.synthetic_clusters = 4;
    cfg.delta_d = 0.3;
    cfg.delta_r = 0.2;
    cfg.noise = 0.0;
    return cfg;
}

static double dot(const double *a, const double *b, int d) {
    double s = 0;
    for (int i = 0; i < d; i++) s += a[i] * b[i];
    return s;
}

/* The pattern (index as in pmoe_synthetic_pattern) that column j of a
 * noise-free sample equals exactly, or -1. */
static int column_pattern(const pmoe_dataset *ds, const float *x, int j, int patterns) {
    const int n = ds->width, d = ds->channels;
    for (int k = 0; k < patterns; k++) {
        const double *p = pmoe_synthetic_pattern(ds, k);
        int same = 1;
        for (int c = 0; c < d && same; c++) same = x[c * n + j] == (float)p[c];
        if (same) return k;
    }
    return -1;
}

static int same_samples(const pmoe_dataset *a, const pmoe_dataset *b, int64_t count) {
    size_t size = (size_t)a->channels * a->height * a->width;
    float *xa = malloc(size * sizeof *xa), *xb = malloc(size * sizeof *xb);
    int same = 1;
    for (int64_t i = 0; i < count && same; i++) {
        a->compose(a, i, xa);
        b->compose(b, i, xb);
        same = memcmp(xa, xb, size * sizeof *xa) == 0 && a->labels[i] == b->labels[i];
        if (a->decisive_patch) same = same && a->decisive_patch[i] == b->decisive_patch[i];
    }
    free(xa);
    free(xb);
    return same;
}

static void test_synthetic_patterns_and_samples(void) {
    pmoe_data_config cfg = synthetic_config();
    pmoe_dataset *train, *test;
    pmoe_error err = {0};
    pmoe_status st = pmoe_synthetic_open(&cfg, &train, &test, &err);
    CHECK_MSG(st == PMOE_OK, "%s", err.message);
    if (st) return;
    const int n = cfg.synthetic_patches, d = cfg.synthetic_dim, p = cfg.synthetic_clusters;
    CHECK(train->channels == d && train->height == 1 && train->width == n);
    CHECK(train->classes == 1 && train->decisive_patch_size == 1 && train->count == 101);
    CHECK(train->default_patch == 1 && test->default_patch == 1);
    CHECK(test->count == 50 && train->decisive_patch && test->decisive_patch);

    const double *o1 = pmoe_synthetic_pattern(train, 0), *o2 = pmoe_synthetic_pattern(train, 1);
    CHECK(o1 && o2 && !pmoe_synthetic_pattern(train, 2 + p) && !pmoe_synthetic_pattern(train, -1));
    CHECK(fabs(dot(o1, o1, d) - 1) < 1e-6 && fabs(dot(o2, o2, d) - 1) < 1e-6);
    CHECK_MSG(fabs(dot(o1, o2, d) - cfg.delta_d) < 1e-6, "<o1,o2> = %g", dot(o1, o2, d));
    for (int c = 0; c < p; c++) {
        const double *q = pmoe_synthetic_pattern(train, 2 + c);
        CHECK(fabs(dot(q, q, d) - 1) < 1e-6);
        CHECK(fabs(dot(o1, q, d)) <= cfg.delta_r + 1e-6);
        CHECK(fabs(dot(o2, q, d)) <= cfg.delta_r + 1e-6);
        for (int c2 = 0; c2 < c; c2++) /* distinct clusters */
            CHECK(fabs(dot(q, pmoe_synthetic_pattern(train, 2 + c2), d)) < 0.999);
    }
    /* Train and test share the patterns. */
    CHECK(memcmp(o1, pmoe_synthetic_pattern(test, 0), sizeof(double) * d) == 0);

    /* Noise-free samples: exactly one o1/o2 column, at decisive_patch,
     * matching the label; every other column a cluster pattern. */
    float *x = malloc(sizeof(float) * n * d);
    int64_t positives = 0, bad = 0, position_hits[8] = {0};
    int64_t cluster_uses[2][4] = {{0}};
    for (int64_t i = 0; i < train->count; i++) {
        train->compose(train, i, x);
        int label = train->labels[i];
        CHECK(label == 0 || label == 1);
        positives += label;
        int decisive = train->decisive_patch[i];
        if (decisive < 0 || decisive >= n) {
            bad++;
            continue;
        }
        position_hits[decisive]++;
        for (int j = 0; j < n; j++) {
            int k = column_pattern(train, x, j, 2 + p);
            if (j == decisive) bad += k != (label ? 0 : 1);
            else if (k < 2) bad++;
            else cluster_uses[label][k - 2]++;
        }
    }
    CHECK_MSG(bad == 0, "%lld patches break the data model", (long long)bad);
    int64_t negatives = train->count - positives;
    CHECK(llabs(positives - negatives) <= 1);
    for (int j = 0; j < n; j++) CHECK_MSG(position_hits[j] > 0, "position %d never decisive", j);
    /* Clusters appear about equally often in both classes (~90 uses each). */
    for (int c = 0; c < p; c++) {
        double pos_share = (double)cluster_uses[1][c] / (positives * (n - 1));
        double neg_share = (double)cluster_uses[0][c] / (negatives * (n - 1));
        CHECK_MSG(fabs(pos_share - neg_share) < 0.1 && pos_share > 0.1 && neg_share > 0.1,
                  "cluster %d: share %.3f in y=+1, %.3f in y=-1", c, pos_share, neg_share);
    }

    /* compose() is a pure function of the index. */
    float *again = malloc(sizeof(float) * n * d);
    train->compose(train, 5, x);
    train->compose(train, 3, again);
    train->compose(train, 5, again);
    CHECK(memcmp(x, again, sizeof(float) * n * d) == 0);

    /* Noise: the same seed gives the same patterns and layout, so the
     * difference from the noise-free sample is the noise alone. */
    pmoe_data_config noisy_cfg = cfg;
    noisy_cfg.noise = 0.5;
    pmoe_dataset *noisy, *noisy_test;
    st = pmoe_synthetic_open(&noisy_cfg, &noisy, &noisy_test, &err);
    CHECK_MSG(st == PMOE_OK, "%s", err.message);
    if (!st) {
        double sum = 0, sum_sq = 0;
        int64_t count = 0;
        for (int64_t i = 0; i < noisy->count; i++) {
            train->compose(train, i, x);
            noisy->compose(noisy, i, again);
            for (int k = 0; k < n * d; k++) {
                double e = (double)again[k] - x[k];
                sum += e;
                sum_sq += e * e;
                count++;
            }
        }
        double mean = sum / count, std = sqrt(sum_sq / count - mean * mean);
        CHECK_MSG(fabs(mean) < 0.03 && fabs(std - 0.5) < 0.025, "noise mean %g std %g", mean, std);

        /* Determinism: same seed, same samples; another seed, others. */
        pmoe_dataset *same, *same_test;
        CHECK(pmoe_synthetic_open(&noisy_cfg, &same, &same_test, &err) == PMOE_OK);
        CHECK(same_samples(noisy, same, noisy->count));
        CHECK(same_samples(noisy_test, same_test, noisy_test->count));
        pmoe_dataset_free(same);
        pmoe_dataset_free(same_test);
        noisy_cfg.seed = 8;
        CHECK(pmoe_synthetic_open(&noisy_cfg, &same, &same_test, &err) == PMOE_OK);
        CHECK(!same_samples(noisy, same, 1));
        CHECK(!same_samples(noisy_test, same_test, 1));
        pmoe_dataset_free(same);
        pmoe_dataset_free(same_test);
        /* Train and test are different draws. */
        int layouts_differ = 0;
        for (int64_t i = 0; i < noisy_test->count; i++)
            layouts_differ += noisy->decisive_patch[i] != noisy_test->decisive_patch[i];
        CHECK(layouts_differ > 0);
        CHECK(!same_samples(noisy, noisy_test, 1));
        pmoe_dataset_free(noisy);
        pmoe_dataset_free(noisy_test);
    }
    free(x);
    free(again);
    pmoe_dataset_free(train);
    pmoe_dataset_free(test);
}

static void expect_synthetic_config_error(const char *key, pmoe_data_config cfg) {
    pmoe_dataset *train = (pmoe_dataset *)1, *test = (pmoe_dataset *)1;
    pmoe_error err = {0};
    pmoe_status st = pmoe_synthetic_open(&cfg, &train, &test, &err);
    check_failure(key, st, &err, PMOE_ERR_CONFIG, key, NULL);
    CHECK(train == NULL && test == NULL);
}

static void test_synthetic_config_errors(void) {
    pmoe_data_config cfg = synthetic_config();
    cfg.synthetic_patches = 0;
    expect_synthetic_config_error("data.synthetic_patches", cfg);
    cfg = synthetic_config();
    cfg.synthetic_dim = 0;
    expect_synthetic_config_error("data.synthetic_dim", cfg);
    cfg = synthetic_config();
    cfg.synthetic_dim = 5; /* < 4 clusters + 2 */
    expect_synthetic_config_error("data.synthetic_dim", cfg);
    expect_synthetic_config_error("data.synthetic_clusters", cfg);
    cfg = synthetic_config();
    cfg.delta_d = 1.0;
    expect_synthetic_config_error("data.delta_d", cfg);
    cfg.delta_d = -1.5;
    expect_synthetic_config_error("data.delta_d", cfg);
    cfg = synthetic_config();
    cfg.delta_r = -0.1;
    expect_synthetic_config_error("data.delta_r", cfg);
    cfg.delta_r = 1.0;
    expect_synthetic_config_error("data.delta_r", cfg);
    cfg = synthetic_config();
    cfg.noise = -1;
    expect_synthetic_config_error("data.noise", cfg);
    cfg = synthetic_config();
    cfg.train_size = 0;
    expect_synthetic_config_error("data.train_size", cfg);
    cfg = synthetic_config();
    cfg.test_size = 0;
    expect_synthetic_config_error("data.test_size", cfg);

    /* The boundary values are accepted: delta_d = -1, d = clusters + 2, n = 1. */
    cfg = synthetic_config();
    cfg.delta_d = -1;
    cfg.synthetic_dim = 6;
    cfg.synthetic_patches = 1;
    pmoe_dataset *train, *test;
    pmoe_error err = {0};
    CHECK_MSG(pmoe_synthetic_open(&cfg, &train, &test, &err) == PMOE_OK, "%s", err.message);
    if (train) {
        CHECK(fabs(dot(pmoe_synthetic_pattern(train, 0), pmoe_synthetic_pattern(train, 1), 6) + 1) <
              1e-6);
        CHECK(train->decisive_patch[0] == 0);
    }
    pmoe_dataset_free(train);
    pmoe_dataset_free(test);
}

/* ---- the mosaic and plain IDX ----------------------------------------- */

/* Fake items: image i of a split has pixel (r, c) = 5 i + tag + (r + c) % 3,
 * where tag is 0 for train and 1 for t10k (so 5 i + tag at (0, 0) names the
 * image and its split); labels are i % 10. */
enum { ITEM = 28, TRAIN_ITEMS = 40, TEST_ITEMS = 20 };

static uint8_t fake_pixel(int image, int tag, int r, int c) {
    return (uint8_t)(5 * image + tag + (r + c) % 3);
}

static void write_fake_split(const char *dir, const char *prefix, int count, int tag, int gzip,
                             int bad_label_at) {
    uint8_t *images = malloc((size_t)count * ITEM * ITEM), *labels = malloc((size_t)count);
    for (int i = 0; i < count; i++) {
        labels[i] = (uint8_t)(i % 10);
        for (int r = 0; r < ITEM; r++)
            for (int c = 0; c < ITEM; c++)
                images[((size_t)i * ITEM + r) * ITEM + c] = fake_pixel(i, tag, r, c);
    }
    if (bad_label_at >= 0) labels[bad_label_at] = 12;
    char path[1200], name[128];
    uint32_t image_dims[3] = {(uint32_t)count, ITEM, ITEM}, label_dims[1] = {(uint32_t)count};
    snprintf(name, sizeof name, "%s-images-idx3-ubyte%s", prefix, gzip ? ".gz" : "");
    join(path, sizeof path, dir, name);
    write_idx(path, 3, image_dims, images, gzip);
    snprintf(name, sizeof name, "%s-labels-idx1-ubyte%s", prefix, gzip ? ".gz" : "");
    join(path, sizeof path, dir, name);
    write_idx(path, 1, label_dims, labels, gzip);
    free(images);
    free(labels);
}

static pmoe_data_config mosaic_config(const char *dir) {
    pmoe_data_config cfg = synthetic_config();
    cfg.source = PMOE_DATA_MOSAIC;
    snprintf(cfg.path, sizeof cfg.path, "%s", dir);
    cfg.train_size = 60;
    cfg.test_size = 31;
    cfg.seed = 3;
    return cfg;
}

/* Decodes every cell of a mosaic; checks its pixels and its split and
 * returns the number of broken rules. */
static int64_t check_mosaic(const pmoe_dataset *ds, int tag, int split_items, int pos, int neg) {
    const int g = ds->width / ITEM;
    float *x = malloc(sizeof(float) * ds->width * ds->height);
    int64_t broken = 0;
    for (int64_t i = 0; i < ds->count; i++) {
        ds->compose(ds, i, x);
        for (int cell = 0; cell < g * g; cell++) {
            int top = cell / g * ITEM, left = cell % g * ITEM;
            int corner = (int)lroundf(x[top * ds->width + left] * 255.0f);
            int image = (corner - tag) / 5;
            if ((corner - tag) % 5 != 0 || image < 0 || image >= split_items) {
                broken++;
                continue;
            }
            for (int r = 0; r < ITEM; r++)
                for (int c = 0; c < ITEM; c++)
                    broken += x[(top + r) * ds->width + left + c] !=
                              (float)fake_pixel(image, tag, r, c) / 255.0f;
            int cls = image % 10;
            if (cell == ds->decisive_patch[i]) broken += cls != (ds->labels[i] ? pos : neg);
            else broken += cls == pos || cls == neg;
        }
    }
    free(x);
    return broken;
}

static void test_mosaic(const char *dir) {
    pmoe_data_config cfg = mosaic_config(dir);
    pmoe_dataset *train, *test;
    pmoe_error err = {0};
    pmoe_status st = pmoe_mosaic_open(&cfg, &train, &test, &err);
    CHECK_MSG(st == PMOE_OK, "%s", err.message);
    if (st) return;
    CHECK(train->channels == 1 && train->height == 112 && train->width == 112);
    CHECK(train->classes == 1 && train->decisive_patch_size == ITEM);
    CHECK(train->default_patch == ITEM && test->default_patch == ITEM);
    CHECK(train->count == 60 && test->count == 31 && test->height == 112);
    CHECK(check_mosaic(train, 0, TRAIN_ITEMS, 1, 0) == 0);
    CHECK(check_mosaic(test, 1, TEST_ITEMS, 1, 0) == 0);
    int64_t positives = 0, cell_hits[16] = {0};
    for (int64_t i = 0; i < train->count; i++) {
        positives += train->labels[i];
        if (train->decisive_patch[i] >= 0 && train->decisive_patch[i] < 16)
            cell_hits[train->decisive_patch[i]]++;
    }
    CHECK(positives == 30);
    int cells_used = 0;
    for (int c = 0; c < 16; c++) cells_used += cell_hits[c] > 0;
    CHECK_MSG(cells_used >= 12, "only %d of 16 cells ever decisive", cells_used);
    int64_t test_positives = 0;
    for (int64_t i = 0; i < test->count; i++) test_positives += test->labels[i];
    CHECK(test_positives == 16 || test_positives == 15);
    int layouts_differ = 0; /* train and test draw from different streams */
    for (int64_t i = 0; i < test->count; i++)
        layouts_differ += train->decisive_patch[i] != test->decisive_patch[i];
    CHECK(layouts_differ > 0);

    /* Determinism from data.seed. */
    pmoe_dataset *again, *again_test;
    CHECK(pmoe_mosaic_open(&cfg, &again, &again_test, &err) == PMOE_OK);
    CHECK(same_samples(train, again, train->count) && same_samples(test, again_test, test->count));
    pmoe_dataset_free(again);
    pmoe_dataset_free(again_test);
    cfg.seed = 4;
    CHECK(pmoe_mosaic_open(&cfg, &again, &again_test, &err) == PMOE_OK);
    CHECK(!same_samples(train, again, train->count));
    pmoe_dataset_free(again);
    pmoe_dataset_free(again_test);
    pmoe_dataset_free(train);
    pmoe_dataset_free(test);

    /* Another grid and class pair; more mosaics than items. */
    cfg = mosaic_config(dir);
    cfg.grid = 2;
    cfg.pos_class = 7;
    cfg.neg_class = 3;
    cfg.train_size = 200;
    st = pmoe_mosaic_open(&cfg, &train, &test, &err);
    CHECK_MSG(st == PMOE_OK, "%s", err.message);
    if (!st) {
        CHECK(train->height == 56 && train->width == 56 && train->count == 200);
        CHECK(check_mosaic(train, 0, TRAIN_ITEMS, 7, 3) == 0);
        CHECK(check_mosaic(test, 1, TEST_ITEMS, 7, 3) == 0);
        pmoe_dataset_free(train);
        pmoe_dataset_free(test);
    }
}

static void expect_mosaic_error(const char *what, pmoe_data_config cfg, pmoe_status code,
                                const char *also, const char *also2) {
    pmoe_dataset *train = (pmoe_dataset *)1, *test = (pmoe_dataset *)1;
    pmoe_error err = {0};
    pmoe_status st = pmoe_mosaic_open(&cfg, &train, &test, &err);
    check_failure(what, st, &err, code, also, also2);
    CHECK(train == NULL && test == NULL);
}

static void test_mosaic_errors(const char *dir) {
    pmoe_data_config cfg = mosaic_config(dir);
    cfg.pos_class = cfg.neg_class = 2;
    expect_mosaic_error("same classes", cfg, PMOE_ERR_CONFIG, "data.pos_class", "data.neg_class");
    cfg = mosaic_config(dir);
    cfg.pos_class = 10;
    expect_mosaic_error("pos_class range", cfg, PMOE_ERR_CONFIG, "data.pos_class", NULL);
    cfg = mosaic_config(dir);
    cfg.neg_class = -1;
    expect_mosaic_error("neg_class range", cfg, PMOE_ERR_CONFIG, "data.neg_class", NULL);
    cfg = mosaic_config(dir);
    cfg.grid = 0;
    expect_mosaic_error("grid", cfg, PMOE_ERR_CONFIG, "data.grid", NULL);

    /* A label outside 0..9, in the test split only. */
    char bad_dir[1100], labels_path[1200];
    new_dir(bad_dir, sizeof bad_dir);
    write_fake_split(bad_dir, "train", TRAIN_ITEMS, 0, 0, -1);
    write_fake_split(bad_dir, "t10k", TEST_ITEMS, 1, 0, 5);
    join(labels_path, sizeof labels_path, bad_dir, "t10k-labels-idx1-ubyte");
    cfg = mosaic_config(bad_dir);
    expect_mosaic_error("label range", cfg, PMOE_ERR_FORMAT, labels_path, "index 5");

    /* A class with no item in the split (only 5 items: classes 0..4). */
    char small_dir[1100];
    new_dir(small_dir, sizeof small_dir);
    write_fake_split(small_dir, "train", 5, 0, 0, -1);
    write_fake_split(small_dir, "t10k", 5, 1, 0, -1);
    cfg = mosaic_config(small_dir);
    cfg.pos_class = 6;
    expect_mosaic_error("absent class", cfg, PMOE_ERR_CONFIG, "data.pos_class", small_dir);

    /* No IDX files at all. */
    char empty_dir[1100];
    new_dir(empty_dir, sizeof empty_dir);
    cfg = mosaic_config(empty_dir);
    expect_mosaic_error("no files", cfg, PMOE_ERR_IO, "train-images-idx3-ubyte", NULL);
}

static void test_real_fashion_mnist(void) {
    const char *dir = "/usr/share/datasets/fashion-mnist";
    char found[1200];
    if (pmoe_idx_find(dir, "train-images-idx3-ubyte", found, sizeof found, NULL) != PMOE_OK) {
        printf("  skipped: fashion-mnist not installed\n");
        return;
    }
    pmoe_data_config cfg = mosaic_config(dir);
    cfg.train_size = 6;
    cfg.test_size = 4;
    pmoe_dataset *train, *test;
    pmoe_error err = {0};
    pmoe_status st = pmoe_mosaic_open(&cfg, &train, &test, &err);
    CHECK_MSG(st == PMOE_OK, "%s", err.message);
    if (st) return;
    CHECK(train->channels == 1 && train->height == 112 && train->width == 112);
    CHECK(test->height == 112 && train->decisive_patch_size == 28 && test->count == 4);
    CHECK(strstr(train->description, "fashion-mnist") != NULL);
    float *x = malloc(sizeof(float) * 112 * 112);
    int in_range = 1;
    double total = 0;
    for (int64_t i = 0; i < test->count; i++) {
        test->compose(test, i, x);
        for (int k = 0; k < 112 * 112; k++) {
            in_range = in_range && x[k] >= 0 && x[k] <= 1;
            total += x[k];
        }
    }
    CHECK(in_range && total > 0);
    printf("  real mosaic: %s\n", train->description);
    free(x);
    pmoe_dataset_free(train);
    pmoe_dataset_free(test);
}

static void test_idx_dataset(const char *dir) {
    pmoe_data_config cfg = mosaic_config(dir);
    cfg.source = PMOE_DATA_IDX;
    cfg.train_size = TRAIN_ITEMS;
    cfg.test_size = 7;
    pmoe_dataset *train, *test;
    pmoe_error err = {0};
    pmoe_status st = pmoe_idx_dataset_open(&cfg, &train, &test, &err);
    CHECK_MSG(st == PMOE_OK, "%s", err.message);
    if (st) return;
    CHECK(train->count == TRAIN_ITEMS && test->count == 7 && train->classes == 10);
    CHECK(train->channels == 1 && train->height == ITEM && train->width == ITEM);
    CHECK(train->decisive_patch == NULL && train->default_patch == 7);
    float x[ITEM * ITEM];
    int64_t broken = 0;
    for (int64_t i = 0; i < train->count; i++) {
        broken += train->labels[i] != i % 10;
        train->compose(train, i, x);
        for (int r = 0; r < ITEM; r++)
            for (int c = 0; c < ITEM; c++)
                broken += x[r * ITEM + c] != (float)fake_pixel((int)i, 0, r, c) / 255.0f;
    }
    for (int64_t i = 0; i < test->count; i++) {
        broken += test->labels[i] != i % 10;
        test->compose(test, i, x);
        broken += x[1] != (float)fake_pixel((int)i, 1, 0, 1) / 255.0f;
    }
    CHECK(broken == 0);
    pmoe_dataset_free(train);
    pmoe_dataset_free(test);

    train = test = (pmoe_dataset *)1;
    cfg.train_size = TRAIN_ITEMS + 1;
    st = pmoe_idx_dataset_open(&cfg, &train, &test, &err);
    check_failure("too many train", st, &err, PMOE_ERR_CONFIG, "data.train_size", NULL);
    CHECK(train == NULL && test == NULL);
    cfg.train_size = 3;
    cfg.test_size = TEST_ITEMS + 1;
    st = pmoe_idx_dataset_open(&cfg, &train, &test, &err);
    check_failure("too many test", st, &err, PMOE_ERR_CONFIG, "data.test_size", NULL);
}

/* data.image_size pads each image with zeros, centred; the stored image is
 * untouched in the middle. An odd margin puts the extra row and column at
 * the bottom and right. */
static void test_idx_padding(const char *dir) {
    const int sizes[3] = {32, 31, 28}, margins[3] = {2, 1, 0};
    for (int k = 0; k < 3; k++) {
        pmoe_data_config cfg = mosaic_config(dir);
        cfg.source = PMOE_DATA_IDX;
        cfg.train_size = 12;
        cfg.test_size = 5;
        cfg.image_size = sizes[k];
        pmoe_dataset *train, *test;
        pmoe_error err = {0};
        pmoe_status st = pmoe_idx_dataset_open(&cfg, &train, &test, &err);
        CHECK_MSG(st == PMOE_OK, "image_size %d: %s", sizes[k], err.message);
        if (st) continue;
        const int side = sizes[k], m = margins[k];
        CHECK(train->channels == 1 && train->height == side && train->width == side);
        CHECK(test->height == side && test->width == side && train->classes == 10);
        CHECK_MSG(train->default_patch == (side % 4 ? 0 : side / 4), "image_size %d: patch %d",
                  side, train->default_patch);
        float *x = malloc(sizeof(float) * side * side);
        int64_t border_nonzero = 0, centre_wrong = 0;
        const pmoe_dataset *sets[2] = {train, test};
        for (int which = 0; which < 2; which++)
            for (int64_t i = 0; i < sets[which]->count; i++) {
                CHECK(sets[which]->labels[i] == i % 10);
                sets[which]->compose(sets[which], i, x);
                for (int r = 0; r < side; r++)
                    for (int c = 0; c < side; c++) {
                        const float v = x[r * side + c];
                        if (r < m || r >= m + ITEM || c < m || c >= m + ITEM)
                            border_nonzero += v != 0.0f;
                        else
                            centre_wrong += v !=
                                            (float)fake_pixel((int)i, which, r - m, c - m) / 255.0f;
                    }
            }
        CHECK_MSG(border_nonzero == 0 && centre_wrong == 0,
                  "image_size %d: %lld border pixels not zero, %lld centre pixels wrong", side,
                  (long long)border_nonzero, (long long)centre_wrong);
        free(x);
        pmoe_dataset_free(train);
        pmoe_dataset_free(test);
    }

    /* Smaller than the stored images: a config error naming the key. */
    pmoe_data_config cfg = mosaic_config(dir);
    cfg.source = PMOE_DATA_IDX;
    cfg.train_size = 10;
    cfg.test_size = 5;
    cfg.image_size = ITEM - 1;
    pmoe_dataset *train = (pmoe_dataset *)1, *test = (pmoe_dataset *)1;
    pmoe_error err = {0};
    pmoe_status st = pmoe_idx_dataset_open(&cfg, &train, &test, &err);
    check_failure("idx image_size too small", st, &err, PMOE_ERR_CONFIG, "data.image_size",
                  "28 x 28");
    CHECK(train == NULL && test == NULL);
}

/* ---- the noisy-background task ----------------------------------------- */

static pmoe_data_config noisy_config(const char *dir, int background) {
    pmoe_data_config cfg = mosaic_config(dir);
    cfg.source = PMOE_DATA_NOISY;
    cfg.image_size = 32;
    cfg.background = background;
    cfg.noise = 0.25;
    return cfg;
}

/* The item of fake_pixel(image, tag), shrunk to s x s by area averaging,
 * computed independently of noisy.c: destination pixel d covers the
 * continuous source interval [d 28 / s, (d + 1) 28 / s). */
static void expected_shrunk(int image, int tag, int s, double *out) {
    const double span = (double)ITEM / s;
    for (int r = 0; r < s; r++)
        for (int c = 0; c < s; c++) {
            double sum = 0;
            for (int i = 0; i < ITEM; i++) {
                double wr = fmin((r + 1) * span, i + 1.0) - fmax(r * span, (double)i);
                if (wr <= 0) continue;
                for (int j = 0; j < ITEM; j++) {
                    double wc = fmin((c + 1) * span, j + 1.0) - fmax(c * span, (double)j);
                    if (wc > 0) sum += wr * wc * fake_pixel(image, tag, i, j);
                }
            }
            out[r * s + c] = sum / (span * span) / 255.0;
        }
}

/* The fake image whose mean the region shows (area averaging keeps an
 * item's mean), or -1 when it is not 5 i + tag plus the pattern's mean. */
static int decode_by_mean(const float *x, int side, int top, int left, int s, int tag) {
    double pattern = 0, sum = 0;
    for (int r = 0; r < ITEM; r++)
        for (int c = 0; c < ITEM; c++) pattern += (r + c) % 3;
    pattern /= ITEM * ITEM;
    for (int r = 0; r < s; r++)
        for (int c = 0; c < s; c++) sum += x[(top + r) * side + left + c];
    const double v = sum / (s * s) * 255.0 - pattern - tag;
    const long image = lround(v / 5);
    return fabs(v - 5.0 * image) < 1e-3 ? (int)image : -1;
}

/* Checks every sample of a noisy dataset over fake items: placement, label,
 * decisive patch, the pasted item's exact pixels and its split; returns the
 * number of broken rules. Background pixels go to stats (sum, sum of
 * squares, count, min, max). */
static int64_t check_noisy(const pmoe_dataset *ds, int tag, int split_items, double stats[5],
                           int positions_seen[2]) {
    const int S = ds->width, s = S / 2, p = S / 4;
    float *x = malloc(sizeof(float) * S * S);
    double *want = malloc(sizeof(double) * s * s);
    int64_t broken = 0;
    int seen_top[4096] = {0}, seen_patch[16] = {0};
    stats[0] = stats[1] = stats[2] = 0;
    stats[3] = 1e30;
    stats[4] = -1e30;
    for (int64_t i = 0; i < ds->count; i++) {
        int top = -1, left = -1;
        const int item = pmoe_noisy_placement(ds, i, &top, &left);
        if (item < 0 || item >= split_items || top < 0 || top > S - s || left < 0 || left > S - s) {
            broken++;
            continue;
        }
        seen_top[top] = 1;
        broken += ds->labels[i] != item % 10 || ds->labels[i] < 0 || ds->labels[i] > 9;
        const int decisive = ds->decisive_patch[i];
        broken += decisive != ((top + s / 2) / p) * (S / p) + (left + s / 2) / p;
        if (decisive >= 0 && decisive < 16) seen_patch[decisive] = 1;
        /* The decisive patch lies inside the pasted item. */
        const int pr = decisive / (S / p) * p, pc = decisive % (S / p) * p;
        broken += pr < top || pr + p > top + s || pc < left || pc + p > left + s;

        ds->compose(ds, i, x);
        expected_shrunk(item, tag, s, want);
        for (int r = 0; r < s; r++)
            for (int c = 0; c < s; c++)
                broken += fabs(x[(top + r) * S + left + c] - want[r * s + c]) > 1e-5;
        broken += decode_by_mean(x, S, top, left, s, tag) != item;
        for (int r = 0; r < S; r++)
            for (int c = 0; c < S; c++) {
                if (r >= top && r < top + s && c >= left && c < left + s) continue;
                const double v = x[r * S + c];
                stats[0] += v;
                stats[1] += v * v;
                stats[2] += 1;
                stats[3] = fmin(stats[3], v);
                stats[4] = fmax(stats[4], v);
            }
    }
    positions_seen[0] = positions_seen[1] = 0;
    for (int t = 0; t < S; t++) positions_seen[0] += seen_top[t];
    for (int k = 0; k < 16; k++) positions_seen[1] += seen_patch[k];
    free(x);
    free(want);
    return broken;
}

/* Over consecutive samples, the background pixels (outside both items) that
 * are equal, and the pairs whose backgrounds are wholly equal: the background
 * must be drawn per sample. */
static void background_repeats(const pmoe_dataset *ds, int64_t *equal_pixels,
                               int64_t *equal_pairs) {
    const int S = ds->width, s = S / 2;
    float *a = malloc(sizeof(float) * S * S), *b = malloc(sizeof(float) * S * S);
    *equal_pixels = *equal_pairs = 0;
    for (int64_t i = 0; i + 1 < ds->count; i++) {
        int ta, la, tb, lb;
        pmoe_noisy_placement(ds, i, &ta, &la);
        pmoe_noisy_placement(ds, i + 1, &tb, &lb);
        ds->compose(ds, i, a);
        ds->compose(ds, i + 1, b);
        int64_t equal = 0, compared = 0;
        for (int r = 0; r < S; r++)
            for (int c = 0; c < S; c++) {
                if ((r >= ta && r < ta + s && c >= la && c < la + s) ||
                    (r >= tb && r < tb + s && c >= lb && c < lb + s))
                    continue;
                compared++;
                equal += a[r * S + c] == b[r * S + c];
            }
        *equal_pixels += equal;
        *equal_pairs += equal == compared;
    }
    free(a);
    free(b);
}

static void test_noisy(const char *dir) {
    for (int background = 0; background < 2; background++) {
        const char *name = background == PMOE_BACKGROUND_NOISE ? "noise" : "items";
        pmoe_data_config cfg = noisy_config(dir, background);
        pmoe_dataset *train, *test;
        pmoe_error err = {0};
        pmoe_status st = pmoe_noisy_open(&cfg, &train, &test, &err);
        CHECK_MSG(st == PMOE_OK, "%s: %s", name, err.message);
        if (st) continue;
        CHECK(train->channels == 1 && train->height == 32 && train->width == 32);
        CHECK(test->channels == 1 && test->height == 32 && test->width == 32);
        CHECK(train->classes == 10 && train->count == 60 && test->count == 31);
        CHECK(train->decisive_patch && train->decisive_patch_size == 8);
        CHECK(train->default_patch == 0 && train->patch_class == NULL);

        /* Train items come from the train split (tag 0), test from t10k. */
        double stats[5];
        int seen[2];
        int64_t broken = check_noisy(train, 0, TRAIN_ITEMS, stats, seen);
        CHECK_MSG(broken == 0, "%s train: %lld broken rules", name, (long long)broken);
        CHECK_MSG(seen[0] >= 12 && seen[1] >= 6, "%s: %d rows, %d decisive patches used", name,
                  seen[0], seen[1]);
        const double mean = stats[0] / stats[2];
        const double std = sqrt(stats[1] / stats[2] - mean * mean);
        if (background == PMOE_BACKGROUND_NOISE) {
            CHECK_MSG(fabs(mean) < 0.01 && fabs(std - 0.25) < 0.01, "noise mean %g std %g", mean,
                      std);
        } else {
            /* Dimmed fragments of fake items: inside [0, 0.5 * max pixel] and not empty. */
            CHECK_MSG(stats[3] >= 0 && stats[4] <= 0.5 * 203 / 255.0 + 1e-6 && mean > 0.05,
                      "items background: min %g max %g mean %g", stats[3], stats[4], mean);
        }
        broken = check_noisy(test, 1, TEST_ITEMS, stats, seen);
        CHECK_MSG(broken == 0, "%s test: %lld broken rules", name, (long long)broken);
        int64_t equal_pixels, equal_pairs;
        background_repeats(train, &equal_pixels, &equal_pairs);
        if (background == PMOE_BACKGROUND_NOISE)
            CHECK_MSG(equal_pixels == 0, "noise: %lld background pixels repeat",
                      (long long)equal_pixels);
        else
            CHECK_MSG(equal_pairs == 0, "items: %lld samples repeat the previous background",
                      (long long)equal_pairs);
        /* Train and test are different draws, not only different items. */
        int layouts_differ = 0;
        for (int64_t i = 0; i < test->count; i++) {
            int ta, la, tb, lb;
            pmoe_noisy_placement(train, i, &ta, &la);
            pmoe_noisy_placement(test, i, &tb, &lb);
            layouts_differ += ta != tb || la != lb;
        }
        CHECK(layouts_differ > test->count / 2);

        /* compose() is a pure function of the index. */
        float *x = malloc(sizeof(float) * 32 * 32), *y = malloc(sizeof(float) * 32 * 32);
        train->compose(train, 5, x);
        train->compose(train, 3, y);
        train->compose(train, 5, y);
        CHECK(memcmp(x, y, sizeof(float) * 32 * 32) == 0);
        test->compose(test, 5, y); /* another split, another draw */
        CHECK(memcmp(x, y, sizeof(float) * 32 * 32) != 0);
        free(x);
        free(y);

        /* Determinism from data.seed: same seed, same samples; another, others. */
        pmoe_dataset *again, *again_test;
        CHECK(pmoe_noisy_open(&cfg, &again, &again_test, &err) == PMOE_OK);
        CHECK(same_samples(train, again, train->count));
        CHECK(same_samples(test, again_test, test->count));
        pmoe_dataset_free(again);
        pmoe_dataset_free(again_test);
        cfg.seed = 4;
        CHECK(pmoe_noisy_open(&cfg, &again, &again_test, &err) == PMOE_OK);
        CHECK(!same_samples(train, again, 1) && !same_samples(test, again_test, 1));
        pmoe_dataset_free(again);
        pmoe_dataset_free(again_test);

        /* data.noise = 0 means the default noise, not none. */
        if (background == PMOE_BACKGROUND_NOISE) {
            cfg = noisy_config(dir, background);
            cfg.noise = 0;
            CHECK(pmoe_noisy_open(&cfg, &again, &again_test, &err) == PMOE_OK);
            check_noisy(again, 0, TRAIN_ITEMS, stats, seen);
            const double m0 = stats[0] / stats[2], s0 = sqrt(stats[1] / stats[2] - m0 * m0);
            CHECK_MSG(s0 > 0.2 && s0 < 0.4, "default noise std %g", s0);
            pmoe_dataset_free(again);
            pmoe_dataset_free(again_test);
        }
        CHECK(pmoe_noisy_placement(train, train->count, NULL, NULL) == -1);
        pmoe_dataset_free(train);
        pmoe_dataset_free(test);
    }

    /* Other canvases: 56 pastes the 28 x 28 items unscaled, 64 enlarges them,
     * 0 means 32; through pmoe_data_open. */
    const int sizes[3] = {56, 64, 0}, sides[3] = {56, 64, 32};
    for (int k = 0; k < 3; k++) {
        pmoe_data_config cfg = noisy_config(dir, PMOE_BACKGROUND_ITEMS);
        cfg.image_size = sizes[k];
        cfg.train_size = 20;
        pmoe_dataset *train, *test;
        pmoe_data_source chosen = PMOE_DATA_AUTO;
        pmoe_error err = {0};
        pmoe_status st = pmoe_data_open(&cfg, &train, &test, &chosen, &err);
        CHECK_MSG(st == PMOE_OK, "image_size %d: %s", sizes[k], err.message);
        if (st) continue;
        CHECK(chosen == PMOE_DATA_NOISY && train->height == sides[k] && test->width == sides[k]);
        CHECK(train->decisive_patch_size == sides[k] / 4);
        double stats[5];
        int seen[2];
        int64_t broken = check_noisy(train, 0, TRAIN_ITEMS, stats, seen);
        broken += check_noisy(test, 1, TEST_ITEMS, stats, seen);
        CHECK_MSG(broken == 0, "image_size %d: %lld broken rules", sizes[k], (long long)broken);
        pmoe_dataset_free(train);
        pmoe_dataset_free(test);
    }

    /* Not a noisy dataset: no placement. */
    pmoe_data_config cfg = mosaic_config(dir);
    pmoe_dataset *train, *test;
    pmoe_error err = {0};
    CHECK(pmoe_mosaic_open(&cfg, &train, &test, &err) == PMOE_OK);
    CHECK(pmoe_noisy_placement(train, 0, NULL, NULL) == -1);
    CHECK(pmoe_noisy_placement(NULL, 0, NULL, NULL) == -1);
    pmoe_dataset_free(train);
    pmoe_dataset_free(test);
}

static void expect_noisy_error(const char *what, pmoe_data_config cfg, pmoe_status code,
                               const char *also, const char *also2) {
    pmoe_dataset *train = (pmoe_dataset *)1, *test = (pmoe_dataset *)1;
    pmoe_error err = {0};
    pmoe_status st = pmoe_noisy_open(&cfg, &train, &test, &err);
    check_failure(what, st, &err, code, also, also2);
    CHECK_MSG(strchr(err.message, '\n') == NULL, "%s: message is not one line: %s", what,
              err.message);
    CHECK(train == NULL && test == NULL);
}

static void test_noisy_errors(const char *dir) {
    char missing[1200];
    join(missing, sizeof missing, dir, "no-such-folder");
    pmoe_data_config cfg = noisy_config(missing, PMOE_BACKGROUND_ITEMS);
    expect_noisy_error("missing folder", cfg, PMOE_ERR_IO, missing, "train-images-idx3-ubyte");
    cfg = noisy_config(dir, PMOE_BACKGROUND_ITEMS);
    cfg.image_size = 4;
    expect_noisy_error("image_size too small", cfg, PMOE_ERR_CONFIG, "data.image_size", NULL);
    cfg.image_size = 30;
    expect_noisy_error("image_size not a multiple of 4", cfg, PMOE_ERR_CONFIG, "data.image_size",
                       NULL);
    cfg = noisy_config(dir, 7);
    expect_noisy_error("background", cfg, PMOE_ERR_CONFIG, "data.background", NULL);
    cfg = noisy_config(dir, PMOE_BACKGROUND_NOISE);
    cfg.test_size = 0;
    expect_noisy_error("test_size", cfg, PMOE_ERR_CONFIG, "data.test_size", NULL);

    /* A bad label in the test split: named like the other IDX sources. */
    char bad_dir[1100], labels_path[1200];
    new_dir(bad_dir, sizeof bad_dir);
    write_fake_split(bad_dir, "train", TRAIN_ITEMS, 0, 0, -1);
    write_fake_split(bad_dir, "t10k", TEST_ITEMS, 1, 0, 3);
    join(labels_path, sizeof labels_path, bad_dir, "t10k-labels-idx1-ubyte");
    cfg = noisy_config(bad_dir, PMOE_BACKGROUND_ITEMS);
    expect_noisy_error("label range", cfg, PMOE_ERR_FORMAT, labels_path, "index 3");
}

/* On real Fashion-MNIST: every label is the IDX label of the pasted item,
 * and the pasted region keeps that item's mean brightness. */
static void test_real_noisy(void) {
    const char *dir = "/usr/share/datasets/fashion-mnist";
    char found[1200];
    if (pmoe_idx_find(dir, "train-images-idx3-ubyte", found, sizeof found, NULL) != PMOE_OK) {
        printf("  skipped: fashion-mnist not installed (noisy)\n");
        return;
    }
    pmoe_idx_split splits[2];
    pmoe_error err = {0};
    if (pmoe_idx_split_load(dir, "train", &splits[0], &err) != PMOE_OK ||
        pmoe_idx_split_load(dir, "t10k", &splits[1], &err) != PMOE_OK) {
        CHECK_MSG(0, "%s", err.message);
        return;
    }
    for (int background = 0; background < 2; background++) {
        pmoe_data_config cfg = noisy_config(dir, background);
        cfg.train_size = 40;
        cfg.test_size = 40;
        pmoe_dataset *sets[2];
        pmoe_status st = pmoe_noisy_open(&cfg, &sets[0], &sets[1], &err);
        CHECK_MSG(st == PMOE_OK, "%s", err.message);
        if (st) continue;
        CHECK(strstr(sets[0]->description, "fashion-mnist") != NULL);
        float x[32 * 32];
        int64_t broken = 0, out_of_range = 0;
        for (int which = 0; which < 2; which++)
            for (int64_t i = 0; i < sets[which]->count; i++) {
                int top, left;
                const int item = pmoe_noisy_placement(sets[which], i, &top, &left);
                broken += item < 0 || sets[which]->labels[i] != splits[which].labels.data[item];
                if (item < 0) continue;
                sets[which]->compose(sets[which], i, x);
                double sum = 0, want = 0;
                for (int r = 0; r < 16; r++)
                    for (int c = 0; c < 16; c++) sum += x[(top + r) * 32 + left + c];
                for (int k = 0; k < 28 * 28; k++)
                    want += splits[which].images.data[(size_t)item * 28 * 28 + k];
                broken += fabs(sum / 256 - want / (28 * 28 * 255.0)) > 1e-4;
                for (int k = 0; k < 32 * 32 && background == PMOE_BACKGROUND_ITEMS; k++)
                    out_of_range += x[k] < 0 || x[k] > 1;
            }
        CHECK_MSG(broken == 0 && out_of_range == 0, "real noisy: %lld broken, %lld out of range",
                  (long long)broken, (long long)out_of_range);
        printf("  real noisy: %s\n", sets[0]->description);
        pmoe_dataset_free(sets[0]);
        pmoe_dataset_free(sets[1]);
    }
    pmoe_idx_split_free(&splits[0]);
    pmoe_idx_split_free(&splits[1]);
}

static void test_data_open(const char *fake_dir) {
    char empty_dir[1100];
    new_dir(empty_dir, sizeof empty_dir);
    pmoe_data_config cfg = mosaic_config(empty_dir);
    cfg.source = PMOE_DATA_AUTO;
    pmoe_dataset *train, *test;
    pmoe_data_source chosen = PMOE_DATA_IDX;
    pmoe_error err = {0};
    CHECK(pmoe_data_open(&cfg, &train, &test, &chosen, &err) == PMOE_OK);
    CHECK(chosen == PMOE_DATA_SYNTHETIC && pmoe_synthetic_pattern(train, 0) != NULL);
    pmoe_dataset_free(train);
    pmoe_dataset_free(test);

    cfg = mosaic_config(fake_dir);
    cfg.source = PMOE_DATA_AUTO;
    CHECK(pmoe_data_open(&cfg, &train, &test, &chosen, &err) == PMOE_OK);
    CHECK(chosen == PMOE_DATA_MOSAIC && train->height == 112 && train->decisive_patch);
    pmoe_dataset_free(train);
    pmoe_dataset_free(test);

    cfg.source = PMOE_DATA_IDX;
    cfg.train_size = 10;
    cfg.test_size = 10;
    CHECK(pmoe_data_open(&cfg, &train, &test, &chosen, &err) == PMOE_OK);
    CHECK(chosen == PMOE_DATA_IDX && train->classes == 10);
    pmoe_dataset_free(train);
    pmoe_dataset_free(test);
    pmoe_dataset_free(NULL);
}

int main(void) {
    char dir[1100], fake_dir[1100];
    new_dir(dir, sizeof dir);
    test_idx_read_roundtrip(dir);
    test_idx_errors(dir);
    test_idx_growing_buffer(dir);
    test_synthetic_patterns_and_samples();
    test_synthetic_config_errors();

    new_dir(fake_dir, sizeof fake_dir);
    write_fake_split(fake_dir, "train", TRAIN_ITEMS, 0, 0, -1);
    write_fake_split(fake_dir, "t10k", TEST_ITEMS, 1, 1, -1); /* gzip: found as .gz */
    test_mosaic(fake_dir);
    test_mosaic_errors(fake_dir);
    test_real_fashion_mnist();
    test_idx_dataset(fake_dir);
    test_idx_padding(fake_dir);
    test_noisy(fake_dir);
    test_noisy_errors(fake_dir);
    test_real_noisy();
    test_data_open(fake_dir);
    remove_created();
    return test_finish("test_data");
}
