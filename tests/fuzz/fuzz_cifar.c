/* fuzz_cifar.c: libFuzzer target for the CIFAR-10 binary reader.
 *
 * Each input goes through pmoe_cifar_parse (the bytes in memory), then, as
 * every one of the six batch files of a folder (symbolic links to one memfd),
 * through pmoe_cifar_open, whose records are all composed; train_size and
 * test_size come from the input's first byte, so the counts are fuzzed too. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "data/dataset.h"

static int input_fd = -1;
static volatile float sink;
static char folder[64];
static const char *const NAMES[6] = {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin",
                                     "data_batch_4.bin", "data_batch_5.bin", "test_batch.bin"};

static void remove_folder(void) {
    char path[128];
    for (int i = 0; i < 6; i++) {
        snprintf(path, sizeof path, "%s/%s", folder, NAMES[i]);
        unlink(path);
    }
    rmdir(folder);
}

static void set_up(void) {
    input_fd = memfd_create("pmoe-fuzz-cifar", 0);
    const char *tmp = getenv("TMPDIR");
    snprintf(folder, sizeof folder, "%s/pmoe-fuzz-cifar-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (input_fd < 0 || !mkdtemp(folder)) abort();
    char target[64], path[128];
    snprintf(target, sizeof target, "/proc/self/fd/%d", input_fd);
    for (int i = 0; i < 6; i++) {
        snprintf(path, sizeof path, "%s/%s", folder, NAMES[i]);
        if (symlink(target, path) != 0) abort();
    }
    atexit(remove_folder);
}

static void touch_dataset(const pmoe_dataset *ds) {
    static float sample[PMOE_CIFAR_PIXEL_BYTES];
    float sum = 0;
    for (int64_t i = 0; i < ds->count; i++) {
        if (ds->labels[i] < 0 || ds->labels[i] > 9) abort();
        ds->compose(ds, i, sample);
        sum += sample[0] + sample[PMOE_CIFAR_PIXEL_BYTES - 1];
    }
    sink = sum; /* keeps the reads */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (input_fd < 0) set_up();
    pmoe_cifar_batch batch;
    pmoe_error err;
    if (pmoe_cifar_parse(data, size, "fuzz.bin", &batch, &err) == PMOE_OK) {
        if (batch.count * PMOE_CIFAR_RECORD_BYTES != (int64_t)size) abort();
        if (memcmp(batch.records, data, size) != 0) abort();
        pmoe_cifar_batch_free(&batch);
    } else if (batch.records != NULL) {
        abort();
    }

    if (ftruncate(input_fd, 0) != 0) abort();
    for (size_t done = 0; done < size;) {
        ssize_t n = pwrite(input_fd, data + done, size - done, (off_t)done);
        if (n <= 0) abort();
        done += (size_t)n;
    }
    pmoe_config cfg;
    pmoe_config_default(&cfg);
    cfg.data.source = PMOE_DATA_CIFAR10;
    snprintf(cfg.data.path, sizeof cfg.data.path, "%s", folder);
    const int pick = size ? data[0] : 0;
    cfg.data.train_size = 1 + pick % 7;
    cfg.data.test_size = pick % 3; /* 0 is an error too */
    pmoe_dataset *train = NULL, *test = NULL;
    if (pmoe_cifar_open(&cfg.data, &train, &test, &err) == PMOE_OK) {
        touch_dataset(train);
        touch_dataset(test);
        pmoe_dataset_free(train);
        pmoe_dataset_free(test);
    } else if (train || test) {
        abort();
    }
    return 0;
}
