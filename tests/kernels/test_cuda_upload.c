/* test_cuda_upload.c: the CUDA backend's overlapped input (be->upload),
 * driven as the training loop drives it: batch i + 1 is composed in the
 * other pinned buffer and uploaded on the copy stream after step i's work
 * is queued, then landed on the compute stream before step i + 1.
 *
 * Each "step" copies the landed images into its own result row (axpby, a
 * compute-stream op; the labels land straight into theirs), and nothing is read back until the end, so a
 * landing that ran before its upload, an upload that overwrote the staging
 * area before the last landing had read it, or a pinned buffer composed
 * into before its upload had read it shows as a wrong row. On the
 * stand-in, which runs queued work only at synchronising calls and reads a
 * pinned source when the copy runs, each of those mistakes gives a wrong
 * row. Exits 77 (skipped) without a CUDA device. */
#include "gpu_test_util.h"

enum { BATCHES = 7, IMAGES = 3000, LABELS = 40 };

/* Batch b's values: image j is b * 10000 + j, label j is b * 100 + j. */
static void compose(float *images, int32_t *labels, int b) {
    for (int j = 0; j < IMAGES; j++) images[j] = (float)(b * 10000 + j);
    for (int j = 0; j < LABELS; j++) labels[j] = b * 100 + j;
}

int main(void) {
    pmoe_backend *gpu = gpu_or_skip("test_cuda_upload");
    pmoe_error err = {PMOE_OK, ""};
    const pmoe_upload_ops *up = gpu->upload;
    CHECK_MSG(up != NULL, "the CUDA backend offers overlapped uploads");
    if (!up) return test_finish("test_cuda_upload");
    const size_t image_bytes = IMAGES * sizeof(float), bytes = image_bytes + LABELS * 4;
    void *pinned[2];
    for (int s = 0; s < 2; s++) gpu_die(up->pinned_alloc(gpu, bytes, &pinned[s], &err), &err);
    char *staging = poisoned(gpu, bytes);
    float *images = poisoned(gpu, image_bytes);
    float *rows = poisoned(gpu, (size_t)BATCHES * image_bytes);
    int32_t *label_rows = poisoned(gpu, (size_t)BATCHES * LABELS * 4);
    const void *src[2] = {staging, staging + image_bytes};
    const size_t sizes[2] = {image_bytes, LABELS * 4};

    compose(pinned[0], (int32_t *)((char *)pinned[0] + image_bytes), 0);
    gpu_die(up->upload(gpu, 0, staging, pinned[0], bytes, &err), &err);
    for (int i = 0; i < BATCHES; i++) {
        /* the labels land in their own row, the images where step i reads them */
        void *dst[2] = {images, label_rows + (int64_t)i * LABELS};
        gpu_die(up->land(gpu, 2, dst, src, sizes, &err), &err);
        gpu->ops->axpby(gpu, IMAGES, 1.0f, images, 0.0f, rows + (int64_t)i * IMAGES);
        if (i + 1 == BATCHES) break;
        const int slot = (i + 1) % 2;
        gpu_die(up->slot_wait(gpu, slot, &err), &err);
        compose(pinned[slot], (int32_t *)((char *)pinned[slot] + image_bytes), i + 1);
        gpu_die(up->upload(gpu, slot, staging, pinned[slot], bytes, &err), &err);
        /* the other buffer's upload has run: scribbling on it must change nothing */
        gpu_die(up->slot_wait(gpu, 1 - slot, &err), &err);
        memset(pinned[1 - slot], 0x7f, bytes);
    }
    float *got = from_device(gpu, rows, (size_t)BATCHES * image_bytes);
    int32_t *got_labels = from_device(gpu, label_rows, (size_t)BATCHES * LABELS * 4);
    for (int b = 0; b < BATCHES; b++) {
        float want[IMAGES];
        int32_t want_labels[LABELS];
        compose(want, want_labels, b);
        char what[64];
        snprintf(what, sizeof what, "batch %d images", b);
        check_exact_f(what, got + (int64_t)b * IMAGES, want, IMAGES);
        snprintf(what, sizeof what, "batch %d labels", b);
        check_exact_i(what, got_labels + (int64_t)b * LABELS, want_labels, LABELS);
    }
    free(got);
    free(got_labels);
    for (int s = 0; s < 2; s++) up->pinned_release(gpu, pinned[s]);
    device_free(gpu, staging, bytes);
    device_free(gpu, images, image_bytes);
    device_free(gpu, rows, (size_t)BATCHES * image_bytes);
    device_free(gpu, label_rows, (size_t)BATCHES * LABELS * 4);
    CHECK_MSG(gpu->synchronize(gpu, &err) == PMOE_OK, "%s", err.message);
    pmoe_backend_destroy(gpu);
    return test_finish("test_cuda_upload");
}
