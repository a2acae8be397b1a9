/* test_class_figures.c: per-class figures (train/class_figures.h), their
 * text and JSON (report.h) and their picture (viz/confusion_image.h).
 *
 * - The predicted class is the loss's: on random logits with ties made on
 *   purpose, the confusion matrix's diagonal equals the correct count the
 *   CPU backend's loss returns, for softmax (10 classes) and the logistic
 *   (binary) loss; rows sum to each class's samples.
 * - The JSON members parse (cJSON) and hold the same counts; the text has
 *   a row per class with its accuracy.
 * - The picture: every cell's colour is its share of its row on the
 *   routing heatmaps' scale, and a class count that cannot fit is refused. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "core/rng.h"
#include "test_util.h"
#include "train/class_figures.h"
#include "train/report.h"
#include "viz/confusion_image.h"
#include "viz/route_image.h"

enum { N = 500 };

/* Logits in a few levels, so equal maxima happen often. */
static void random_case(int classes, uint64_t seed, float *logits, int32_t *labels) {
    pmoe_rng r = pmoe_rng_make(seed, 3);
    const int width = classes == 1 ? 1 : classes;
    for (int64_t i = 0; i < (int64_t)N * width; i++)
        logits[i] = (float)((int)pmoe_rng_next_below(&r, 5) - 2);
    for (int i = 0; i < N; i++)
        labels[i] = (int32_t)pmoe_rng_next_below(&r, (uint64_t)(classes == 1 ? 2 : classes));
}

static void check_against_loss(pmoe_backend *be, int classes) {
    float *logits = fbuf((int64_t)N * classes);
    int32_t *labels = ibuf(N);
    random_case(classes, 11 + (uint64_t)classes, logits, labels);
    float stats[2];
    be->ops->loss_forward_backward(be, classes == 1 ? PMOE_LOSS_LOGISTIC : PMOE_LOSS_SOFTMAX_CE, N,
                                   classes, logits, labels, NULL, stats);
    pmoe_class_figures f;
    pmoe_error err;
    CHECK(pmoe_class_figures_init(&f, classes, NULL, &err) == PMOE_OK);
    pmoe_class_figures_add(&f, logits, labels, N);
    int64_t diagonal = 0, total = 0, rows_right = 1;
    for (int c = 0; c < f.classes; c++) {
        diagonal += pmoe_class_correct(&f, c);
        total += pmoe_class_samples(&f, c);
        int64_t want = 0;
        for (int i = 0; i < N; i++) want += (classes == 1 ? labels[i] == 1 : labels[i]) == c;
        rows_right &= pmoe_class_samples(&f, c) == want;
    }
    CHECK_MSG(diagonal == (int64_t)stats[1],
              "%d classes: diagonal %lld, the loss's correct count %.0f", classes,
              (long long)diagonal, stats[1]);
    CHECK(total == N && rows_right && f.classes == (classes == 1 ? 2 : classes));
    printf("%d logits per sample: diagonal %lld = the loss's correct count over %d samples\n",
           classes, (long long)diagonal, N);
    pmoe_class_figures_free(&f);
}

static void check_outputs(void) {
    char *names[3] = {"cat", "dog", "a \"quoted\" bird"};
    pmoe_class_figures f;
    pmoe_error err;
    CHECK(pmoe_class_figures_init(&f, 3, names, &err) == PMOE_OK);
    const int64_t counts[9] = {8, 2, 0, 1, 9, 0, 0, 0, 0}; /* bird: no samples */
    memcpy(f.counts, counts, sizeof counts);
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    fputc('{', out);
    pmoe_class_figures_write_json(out, &f);
    fputc('}', out);
    fclose(out);
    cJSON *j = cJSON_Parse(text);
    CHECK_MSG(j != NULL, "not JSON: %s", text);
    const cJSON *rows = cJSON_GetObjectItem(j, "per_class"),
                *m = cJSON_GetObjectItem(j, "confusion");
    CHECK(cJSON_GetArraySize(rows) == 3 && cJSON_GetArraySize(m) == 3);
    const cJSON *dog = cJSON_GetArrayItem(rows, 1), *bird = cJSON_GetArrayItem(rows, 2);
    CHECK(!strcmp(cJSON_GetObjectItem(dog, "class")->valuestring, "dog"));
    CHECK(cJSON_GetObjectItem(dog, "samples")->valueint == 10 &&
          cJSON_GetObjectItem(dog, "correct")->valueint == 9 &&
          cJSON_GetObjectItem(dog, "accuracy")->valuedouble == 0.9);
    CHECK(!strcmp(cJSON_GetObjectItem(bird, "class")->valuestring, "a \"quoted\" bird") &&
          cJSON_IsNull(cJSON_GetObjectItem(bird, "accuracy")));
    CHECK(cJSON_GetArrayItem(cJSON_GetArrayItem(m, 0), 1)->valueint == 2);
    cJSON_Delete(j);
    free(text);
    out = open_memstream(&text, &len);
    pmoe_class_figures_print(out, &f);
    fclose(out);
    CHECK_MSG(strstr(text, "\n  0  cat                    10    80.00%\n") &&
                  strstr(text, "\n  2  a \"quoted\" bird         0         -\n") &&
                  strstr(text, "\n  1  1 9 0\n"),
              "%s", text);
    printf("%s", text);
    free(text);

    pmoe_canvas c;
    pmoe_confusion_layout L;
    CHECK(pmoe_confusion_draw(&f, "test", &c, &L, &err) == PMOE_OK);
    int right = 0;
    for (int t = 0; t < 3; t++)
        for (int p = 0; p < 3; p++) {
            const int64_t n = pmoe_class_samples(&f, t);
            const pmoe_rgb want = pmoe_heat_colour(n ? (double)counts[t * 3 + p] / (double)n : 0.0);
            const int x = L.grid_x + p * L.cell, y = L.grid_y + t * L.cell;
            right += pmoe_rgb_equal(pmoe_canvas_get(&c, x, y), want) &&
                     pmoe_rgb_equal(pmoe_canvas_get(&c, x + L.cell - 2, y + L.cell - 2), want);
        }
    CHECK_MSG(right == 9, "%d of 9 cells have their share's colour", right);
    pmoe_canvas_free(&c);
    pmoe_class_figures_free(&f);
    /* 5000 classes at 8 pixels a cell: over 16384 a side */
    CHECK(pmoe_class_figures_init(&f, 5000, NULL, &err) == PMOE_OK);
    CHECK(pmoe_confusion_draw(&f, "big", &c, NULL, &err) == PMOE_ERR_CONFIG &&
          strstr(err.message, "5000 classes"));
    pmoe_class_figures_free(&f);
}

int main(void) {
    pmoe_backend *be = NULL;
    pmoe_error err;
    if (pmoe_backend_create("cpu", 1, &be, &err)) {
        fprintf(stderr, "%s\n", err.message);
        return 1;
    }
    check_against_loss(be, 10);
    check_against_loss(be, 1);
    pmoe_backend_destroy(be);
    check_outputs();
    free_all();
    return test_finish("test_class_figures");
}
