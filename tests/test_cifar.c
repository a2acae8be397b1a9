/* test_cifar.c: the CIFAR-10 binary reader, on tiny batch files the test
 * writes itself.
 *
 * Every pixel byte encodes its record, channel, row and column, so a composed
 * sample can be checked exactly against the channel-major layout (float
 * index c * 1024 + y * 32 + x); each broken file is broken in one way, and
 * the check names the offset the message must give. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data/dataset.h"
#include "test_util.h"

enum { RECORD = PMOE_CIFAR_RECORD_BYTES, SIDE = PMOE_CIFAR_SIDE, PLANE = SIDE * SIDE };

static const char *const TRAIN_FILES[5] = {"data_batch_1.bin", "data_batch_2.bin",
                                           "data_batch_3.bin", "data_batch_4.bin",
                                           "data_batch_5.bin"};

static uint8_t pixel_byte(int record, int channel, int y, int x) {
    return (uint8_t)(record * 29 + channel * 85 + y * 7 + x * 3);
}

static int label_of(int record) { return (record * 3 + 1) % 10; }

/* count records numbered first, first + 1, ...; caller frees. */
static uint8_t *make_records(int first, int count) {
    uint8_t *b = malloc((size_t)count * RECORD + 1);
    for (int r = 0; r < count; r++) {
        uint8_t *rec = b + (size_t)r * RECORD;
        rec[0] = (uint8_t)label_of(first + r);
        for (int c = 0; c < 3; c++)
            for (int y = 0; y < SIDE; y++)
                for (int x = 0; x < SIDE; x++)
                    rec[1 + c * PLANE + y * SIDE + x] = pixel_byte(first + r, c, y, x);
    }
    return b;
}

static void write_file(const char *dir, const char *name, const uint8_t *bytes, size_t n) {
    char path[1200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || (n && fwrite(bytes, 1, n, f) != n) || fclose(f) != 0) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(2);
    }
}

static void remove_file(const char *dir, const char *name) {
    char path[1200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    unlink(path);
}

/* A folder with train records 0..10 spread as 3, 1, 2, 4, 1 over the five
 * batches, and test records 100..104. */
static const int BATCH_RECORDS[5] = {3, 1, 2, 4, 1};
enum { TRAIN_RECORDS = 11, TEST_RECORDS = 5, TEST_FIRST = 100 };

static void write_good_folder(const char *dir) {
    int first = 0;
    for (int i = 0; i < 5; i++) {
        uint8_t *b = make_records(first, BATCH_RECORDS[i]);
        write_file(dir, TRAIN_FILES[i], b, (size_t)BATCH_RECORDS[i] * RECORD);
        free(b);
        first += BATCH_RECORDS[i];
    }
    uint8_t *b = make_records(TEST_FIRST, TEST_RECORDS);
    write_file(dir, "test_batch.bin", b, (size_t)TEST_RECORDS * RECORD);
    free(b);
}

static void remove_folder(const char *dir) {
    for (int i = 0; i < 5; i++) remove_file(dir, TRAIN_FILES[i]);
    remove_file(dir, "test_batch.bin");
    remove_file(dir, "data_batch_1");
    rmdir(dir);
}

static void check_failure(const char *what, pmoe_status st, const pmoe_error *err, pmoe_status code,
                          const char *also, const char *also2) {
    CHECK_MSG(st == code, "%s: status %s, want %s (%s)", what, pmoe_status_name(st),
              pmoe_status_name(code), err->message);
    CHECK_MSG(!also || strstr(err->message, also), "%s: message lacks \"%s\": %s", what, also,
              err->message);
    CHECK_MSG(!also2 || strstr(err->message, also2), "%s: message lacks \"%s\": %s", what, also2,
              err->message);
}

/* Counts composed values that differ from the expected pixel / 255. */
static int64_t layout_errors(const pmoe_dataset *ds, int64_t index, int record) {
    float x[3 * PLANE];
    ds->compose(ds, index, x);
    int64_t wrong = 0;
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < SIDE; y++)
            for (int xx = 0; xx < SIDE; xx++)
                wrong += x[c * PLANE + y * SIDE + xx] !=
                         (float)pixel_byte(record, c, y, xx) / 255.0f;
    return wrong;
}

static pmoe_data_config cifar_config(const char *dir, int64_t train_size, int64_t test_size) {
    pmoe_config full;
    pmoe_config_default(&full);
    pmoe_data_config cfg = full.data;
    cfg.source = PMOE_DATA_CIFAR10;
    snprintf(cfg.path, sizeof cfg.path, "%s", dir);
    cfg.train_size = train_size;
    cfg.test_size = test_size;
    return cfg;
}

static void test_good_folder(const char *dir) {
    pmoe_data_config cfg = cifar_config(dir, TRAIN_RECORDS, 4);
    pmoe_dataset *train = NULL, *test = NULL;
    pmoe_data_source chosen = PMOE_DATA_AUTO;
    pmoe_error err = {0};
    pmoe_status st = pmoe_data_open(&cfg, &train, &test, &chosen, &err);
    CHECK_MSG(st == PMOE_OK, "%s", err.message);
    if (st) return;
    CHECK(chosen == PMOE_DATA_CIFAR10);
    CHECK(train->channels == 3 && train->height == SIDE && train->width == SIDE);
    CHECK(train->classes == 10 && train->count == TRAIN_RECORDS && test->count == 4);
    CHECK(train->decisive_patch == NULL && train->decisive_patch_size == 0);
    CHECK(train->default_patch == 4 && test->default_patch == 4);
    CHECK(strstr(train->description, "CIFAR-10") != NULL);
    int64_t wrong = 0;
    for (int i = 0; i < TRAIN_RECORDS; i++) { /* records in file order across the batches */
        wrong += train->labels[i] != label_of(i);
        wrong += layout_errors(train, i, i);
    }
    for (int i = 0; i < 4; i++) {
        wrong += test->labels[i] != label_of(TEST_FIRST + i);
        wrong += layout_errors(test, i, TEST_FIRST + i);
    }
    CHECK_MSG(wrong == 0, "%lld wrong labels or pixels", (long long)wrong);
    /* Spot checks of the layout by hand: red (0,0), green (0,1), blue (31,31). */
    float x[3 * PLANE];
    train->compose(train, 5, x);
    CHECK(x[0] == (float)pixel_byte(5, 0, 0, 0) / 255.0f);
    CHECK(x[PLANE + 1] == (float)pixel_byte(5, 1, 0, 1) / 255.0f);
    CHECK(x[3 * PLANE - 1] == (float)pixel_byte(5, 2, 31, 31) / 255.0f);
    pmoe_dataset_free(train);
    pmoe_dataset_free(test);

    /* A prefix stays within the first batch. */
    cfg = cifar_config(dir, 2, 1);
    st = pmoe_cifar_open(&cfg, &train, &test, &err);
    CHECK_MSG(st == PMOE_OK, "%s", err.message);
    if (st) return;
    CHECK(train->count == 2 && test->count == 1 && layout_errors(train, 1, 1) == 0);
    pmoe_dataset_free(train);
    pmoe_dataset_free(test);
}

static void test_counts(const char *dir) {
    pmoe_dataset *train = (pmoe_dataset *)1, *test = (pmoe_dataset *)1;
    pmoe_error err = {0};
    pmoe_data_config cfg = cifar_config(dir, TRAIN_RECORDS + 1, 1);
    pmoe_status st = pmoe_cifar_open(&cfg, &train, &test, &err);
    check_failure("too many train", st, &err, PMOE_ERR_CONFIG, "data.train_size = 12",
                  "hold only 11 images");
    CHECK(train == NULL && test == NULL);
    cfg = cifar_config(dir, 1, TEST_RECORDS + 1);
    st = pmoe_cifar_open(&cfg, &train, &test, &err);
    check_failure("too many test", st, &err, PMOE_ERR_CONFIG, "data.test_size = 6",
                  "hold only 5 images");
    CHECK(train == NULL && test == NULL);
    cfg = cifar_config(dir, 0, 1);
    st = pmoe_cifar_open(&cfg, &train, &test, &err);
    check_failure("zero train", st, &err, PMOE_ERR_CONFIG, "data.train_size must be >= 1", NULL);
}

static void test_broken_files(const char *dir) {
    pmoe_dataset *train = (pmoe_dataset *)1, *test = (pmoe_dataset *)1;
    pmoe_error err = {0};
    pmoe_data_config cfg = cifar_config(dir, 1, 1);
    char path[1200];

    /* Truncated: batch 3 (2 records) loses its last 100 bytes. */
    uint8_t *b = make_records(4, 2);
    write_file(dir, "data_batch_3.bin", b, 2 * RECORD - 100);
    snprintf(path, sizeof path, "%s/data_batch_3.bin", dir);
    pmoe_status st = pmoe_cifar_open(&cfg, &train, &test, &err);
    check_failure("truncated", st, &err, PMOE_ERR_FORMAT, path,
                  "size 6046 is not a multiple of the 3073-byte CIFAR-10 record");
    check_failure("truncated offset", st, &err, PMOE_ERR_FORMAT,
                  "the last whole record ends at offset 3073", "and 2973 bytes follow");
    CHECK(train == NULL && test == NULL);
    write_file(dir, "data_batch_3.bin", b, 2 * RECORD + 1); /* one byte too many */
    st = pmoe_cifar_open(&cfg, &train, &test, &err);
    check_failure("one extra byte", st, &err, PMOE_ERR_FORMAT, "ends at offset 6146", NULL);
    write_file(dir, "data_batch_3.bin", b, 0);
    st = pmoe_cifar_open(&cfg, &train, &test, &err);
    check_failure("empty", st, &err, PMOE_ERR_FORMAT, path, "empty");

    /* A bad label in the second record of batch 3 (global record 5). */
    b[RECORD] = 10;
    write_file(dir, "data_batch_3.bin", b, 2 * RECORD);
    cfg = cifar_config(dir, TRAIN_RECORDS, 1);
    st = pmoe_cifar_open(&cfg, &train, &test, &err);
    check_failure("bad label", st, &err, PMOE_ERR_FORMAT, path,
                  "offset 3073: label of record 1 is 10, expected 0..9");
    CHECK(train == NULL && test == NULL);
    b[RECORD] = 255;
    write_file(dir, "data_batch_3.bin", b, 2 * RECORD);
    st = pmoe_cifar_open(&cfg, &train, &test, &err);
    check_failure("label 255", st, &err, PMOE_ERR_FORMAT, "label of record 1 is 255", NULL);
    /* In the test batch, after the train split opened fine. */
    b[RECORD] = (uint8_t)label_of(5);
    write_file(dir, "data_batch_3.bin", b, 2 * RECORD);
    free(b);
    b = make_records(TEST_FIRST, TEST_RECORDS);
    b[0] = 12;
    write_file(dir, "test_batch.bin", b, (size_t)TEST_RECORDS * RECORD);
    st = pmoe_cifar_open(&cfg, &train, &test, &err);
    check_failure("bad test label", st, &err, PMOE_ERR_FORMAT, "test_batch.bin: offset 0", NULL);
    CHECK(train == NULL && test == NULL);
    free(b);
    write_good_folder(dir);

    /* Missing files are all named, with where to get them. */
    remove_file(dir, "data_batch_2.bin");
    remove_file(dir, "test_batch.bin");
    st = pmoe_cifar_open(&cfg, &train, &test, &err);
    check_failure("missing", st, &err, PMOE_ERR_IO,
                  "missing CIFAR-10 files data_batch_2.bin, "
                  "test_batch.bin",
                  "cifar-10-batches-bin");
    check_failure("missing hint", st, &err, PMOE_ERR_IO, dir, "cifar-10-binary.tar.gz");
    CHECK(train == NULL && test == NULL);
    write_file(dir, "data_batch_1", (const uint8_t *)"\x80\x02", 2); /* a pickle */
    st = pmoe_cifar_open(&cfg, &train, &test, &err);
    check_failure("python version", st, &err, PMOE_ERR_IO, "Python version", NULL);
    write_good_folder(dir);

    cfg = cifar_config("/nonexistent-pmoe-cifar", 1, 1);
    st = pmoe_cifar_open(&cfg, &train, &test, &err);
    check_failure("no folder", st, &err, PMOE_ERR_IO, "data_batch_1.bin, data_batch_2.bin",
                  "test_batch.bin");
}

static void test_parse_in_memory(void) {
    pmoe_cifar_batch batch;
    pmoe_error err = {0};
    uint8_t *b = make_records(7, 3);
    pmoe_status st = pmoe_cifar_parse(b, 3 * RECORD, "mem", &batch, &err);
    CHECK_MSG(st == PMOE_OK, "%s", err.message);
    CHECK(batch.count == 3 && batch.records && memcmp(batch.records, b, 3 * RECORD) == 0);
    pmoe_cifar_batch_free(&batch);
    CHECK(batch.records == NULL && batch.count == 0);

    st = pmoe_cifar_parse(b, 3 * RECORD - 1, "mem", &batch, &err);
    check_failure("parse short", st, &err, PMOE_ERR_FORMAT, "mem: size 9218",
                  "ends at offset 6146");
    CHECK(batch.records == NULL);
    st = pmoe_cifar_parse(b, 0, "mem", &batch, &err);
    check_failure("parse empty", st, &err, PMOE_ERR_FORMAT, "mem: empty", NULL);
    b[2 * RECORD] = 200;
    st = pmoe_cifar_parse(b, 3 * RECORD, "mem", &batch, &err);
    check_failure("parse label", st, &err, PMOE_ERR_FORMAT,
                  "mem: offset 6146: label of record 2 is 200", NULL);
    CHECK(batch.records == NULL);
    free(b);
}

static void test_config_word(void) {
    pmoe_config cfg;
    pmoe_config_default(&cfg);
    pmoe_error err = {0};
    CHECK(pmoe_config_set(&cfg, "data.source=cifar10", &err) == PMOE_OK);
    CHECK(cfg.data.source == PMOE_DATA_CIFAR10);
    CHECK(strcmp(pmoe_data_source_name(PMOE_DATA_CIFAR10), "cifar10") == 0);
    char ini[8192];
    pmoe_config_to_ini(&cfg, ini, sizeof ini);
    CHECK(strstr(ini, "source = cifar10") != NULL);
}

int main(void) {
    char dir[1100];
    make_temp_dir(dir, sizeof dir);
    write_good_folder(dir);
    test_good_folder(dir);
    test_counts(dir);
    test_broken_files(dir);
    test_parse_in_memory();
    test_config_word();
    remove_folder(dir);
    return test_finish("test_cifar");
}
