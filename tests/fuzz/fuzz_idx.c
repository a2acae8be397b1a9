/* fuzz_idx.c: libFuzzer target for the IDX reader (plain and gzip).
 *
 * pmoe_idx_read takes a path, so each input is written to one memfd (no disk
 * traffic) and read back through /proc/self/fd/N, as labels (1 dimension)
 * and as images (3 dimensions). A success must hold exactly the bytes its
 * header promises: every one is read, so a short buffer shows up in ASan. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "data/idx.h"

static int input_fd = -1;
static volatile unsigned sink;
static char input_path[64];

static void check_read(int ndim) {
    pmoe_idx idx;
    pmoe_error err;
    if (pmoe_idx_read(input_path, ndim, &idx, &err) != PMOE_OK) {
        if (idx.data != NULL) abort(); /* a failure must leave nothing to free */
        return;
    }
    int64_t bytes = 1;
    for (int i = 0; i < idx.ndim; i++) bytes *= idx.dims[i];
    unsigned sum = 0;
    for (int64_t i = 0; i < bytes; i++) sum += idx.data[i];
    sink = sum;          /* keeps the reads */
    if (idx.ndim == 1) { /* the label check reads the same buffer */
        pmoe_idx_split split = {0};
        split.labels = idx;
        snprintf(split.labels_path, sizeof split.labels_path, "%s", input_path);
        (void)pmoe_idx_check_labels(&split, 10, &err);
    }
    pmoe_idx_free(&idx);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (input_fd < 0) {
        input_fd = memfd_create("pmoe-fuzz-idx", 0);
        if (input_fd < 0) abort();
        snprintf(input_path, sizeof input_path, "/proc/self/fd/%d", input_fd);
    }
    if (ftruncate(input_fd, 0) != 0) abort();
    for (size_t done = 0; done < size;) {
        ssize_t n = pwrite(input_fd, data + done, size - done, (off_t)done);
        if (n <= 0) abort();
        done += (size_t)n;
    }
    check_read(1);
    check_read(3);
    return 0;
}
