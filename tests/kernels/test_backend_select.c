/* test_backend_select.c: what train.device chooses, on whatever machine
 * runs the test.
 *
 * - "auto" gives cuda:0 when a CUDA device answers and the CPU otherwise,
 *   printing nothing either way (checked by capturing stdout and stderr);
 * - "cpu" is always the CPU;
 * - "cuda" and "cuda:N" never fall back: with no such device they fail as
 *   unsupported, naming the device asked for and why ("no CUDA device
 *   answers", "no CUDA device 7", or "this build has no CUDA backend");
 * - malformed names ("cuda:", "cuda:x", "cuda:-1", "gpu") are config errors;
 * - the build's answer agrees with what configure decided. */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend/backend.h"
#include "cuda/cuda_backend.h"
#include "pmoe_build_config.h"
#include "test_util.h"

/* Runs pmoe_backend_create with stdout and stderr sent to a file, and
 * returns how many bytes were printed. */
static pmoe_status create_quietly(const char *device, pmoe_backend **be, pmoe_error *err,
                                  long *printed) {
    char path[] = "/tmp/pmoe-select-XXXXXX";
    int fd = mkstemp(path);
    fflush(stdout);
    fflush(stderr);
    int saved_out = dup(1), saved_err = dup(2);
    dup2(fd, 1);
    dup2(fd, 2);
    pmoe_status s = pmoe_backend_create(device, 1, be, err);
    fflush(stdout);
    fflush(stderr);
    dup2(saved_out, 1);
    dup2(saved_err, 2);
    close(saved_out);
    close(saved_err);
    *printed = lseek(fd, 0, SEEK_END);
    close(fd);
    unlink(path);
    return s;
}

static void expect_failure(const char *device, pmoe_status code, const char *needle1,
                           const char *needle2) {
    pmoe_backend *be = NULL;
    pmoe_error err = {PMOE_OK, ""};
    long printed = 0;
    pmoe_status s = create_quietly(device, &be, &err, &printed);
    printf("  %-10s -> %s: %s\n", device, pmoe_status_name(s), err.message);
    CHECK_MSG(s == code, "%s: status %s, wanted %s", device, pmoe_status_name(s),
              pmoe_status_name(code));
    CHECK_MSG(strstr(err.message, needle1) != NULL, "%s: message lacks '%s'", device, needle1);
    CHECK_MSG(!needle2 || strstr(err.message, needle2) != NULL, "%s: message lacks '%s'", device,
              needle2);
    CHECK_MSG(printed == 0, "%s: printed %ld bytes", device, printed);
    if (s == PMOE_OK) pmoe_backend_destroy(be);
}

int main(void) {
    char why[256] = "";
    const int count = pmoe_cuda_device_count(why, sizeof why);
    printf("CUDA backend in this build: %s; devices answering: %d%s%s\n",
           pmoe_cuda_built() ? "yes" : "no", count, count ? "" : " -- ", count ? "" : why);
    CHECK_MSG(pmoe_cuda_built() == PMOE_BUILD_CUDA,
              "the engine's CUDA (%d) disagrees with configure (%d)", pmoe_cuda_built(),
              PMOE_BUILD_CUDA);
    CHECK_MSG(count > 0 || why[0], "no device and no reason given");

    pmoe_backend *be = NULL;
    pmoe_error err = {PMOE_OK, ""};
    long printed = 0;
    pmoe_status s = create_quietly("auto", &be, &err, &printed);
    CHECK_MSG(s == PMOE_OK, "auto: %s", err.message);
    if (s == PMOE_OK) {
        printf("  %-10s -> %s\n", "auto", be->name);
        if (count > 0)
            CHECK_MSG(strncmp(be->name, "cuda:0 (", 8) == 0, "auto with a device gave %s",
                      be->name);
        else CHECK_MSG(strcmp(be->name, "cpu") == 0, "auto without a device gave %s", be->name);
        pmoe_backend_destroy(be);
    }
    CHECK_MSG(printed == 0, "auto printed %ld bytes", printed);

    s = create_quietly("cpu", &be, &err, &printed);
    CHECK(s == PMOE_OK && strcmp(be->name, "cpu") == 0 && printed == 0);
    if (s == PMOE_OK) pmoe_backend_destroy(be);

    if (count == 0) {
        const char *reason = pmoe_cuda_built() ? "no CUDA device answers"
                                               : "this build has no CUDA backend";
        expect_failure("cuda", PMOE_ERR_UNSUPPORTED, "train.device = cuda:", reason);
        expect_failure("cuda:0", PMOE_ERR_UNSUPPORTED, "train.device = cuda:0", reason);
    } else {
        s = create_quietly("cuda", &be, &err, &printed);
        CHECK_MSG(s == PMOE_OK && strncmp(be->name, "cuda:0", 6) == 0, "cuda: %s", err.message);
        if (s == PMOE_OK) pmoe_backend_destroy(be);
    }
    if (count < 8)
        expect_failure("cuda:7", PMOE_ERR_UNSUPPORTED, "train.device = cuda:7",
                       count > 0           ? "no CUDA device 7"
                       : pmoe_cuda_built() ? "no CUDA device"
                                           : "no CUDA backend");
    expect_failure("cuda:", PMOE_ERR_CONFIG, "'cuda:' is not one of", NULL);
    expect_failure("cuda:x", PMOE_ERR_CONFIG, "'cuda:x' is not one of", NULL);
    expect_failure("cuda:-1", PMOE_ERR_CONFIG, "'cuda:-1' is not one of", NULL);
    expect_failure("gpu", PMOE_ERR_CONFIG, "'gpu' is not one of", NULL);
    return test_finish("test_backend_select");
}
