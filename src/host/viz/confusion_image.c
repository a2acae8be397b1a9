/* confusion_image.c: see confusion_image.h. */
#include "viz/confusion_image.h"

#include <stdio.h>
#include <string.h>

#include "train/class_figures.h"
#include "viz/route_image.h"

enum { MARGIN = 12, TEXT_SCALE = 2, LINE = PMOE_FONT_HEIGHT * TEXT_SCALE + 4, NAME_CHARS = 20 };

static const pmoe_rgb BACKGROUND = {255, 255, 255}, INK = {32, 32, 32};

/* "index name accuracy%" left of row c ("index accuracy%" without names). */
static void row_label(const pmoe_class_figures *f, int c, char out[64]) {
    char buf[16];
    const int64_t n = pmoe_class_samples(f, c);
    char acc[16] = "-";
    if (n > 0)
        snprintf(acc, sizeof acc, "%.1f%%", 100.0 * (double)pmoe_class_correct(f, c) / (double)n);
    if (!f->names && !f->binary) snprintf(out, 64, "%d %s", c, acc); /* the name is the index */
    else snprintf(out, 64, "%d %.*s %s", c, NAME_CHARS, pmoe_class_name(f, c, buf), acc);
}

static double share(const pmoe_class_figures *f, int t, int p) {
    const int64_t n = pmoe_class_samples(f, t);
    return n > 0 ? (double)f->counts[(int64_t)t * f->classes + p] / (double)n : 0.0;
}

pmoe_status pmoe_confusion_draw(const pmoe_class_figures *f, const char *title, pmoe_canvas *canvas,
                                pmoe_confusion_layout *layout, pmoe_error *err) {
    pmoe_confusion_layout local;
    pmoe_confusion_layout *L = layout ? layout : &local;
    memset(L, 0, sizeof *L);
    memset(canvas, 0, sizeof *canvas);
    const int k = f->classes;
    if (k < 1 || !f->counts) return pmoe_fail(err, PMOE_ERR_CONFIG, "no per-class figures to draw");
    L->cell = 768 / k > 48 ? 48 : 768 / k < 8 ? 8 : 768 / k; /* about 768 pixels a side */
    int label_w = 0;
    for (int c = 0; c < k; c++) {
        char label[64];
        row_label(f, c, label);
        const int w = pmoe_text_width(label, TEXT_SCALE);
        if (w > label_w) label_w = w;
    }
    const char *axes = "rows: true class, columns: predicted class; colour: share of the row";
    L->grid_x = MARGIN + label_w + 8;
    L->grid_y = MARGIN + 3 * LINE;
    const int64_t width = (int64_t)L->grid_x + (int64_t)k * L->cell + MARGIN;
    const int64_t height = (int64_t)L->grid_y + (int64_t)k * L->cell + MARGIN;
    L->width = (int)(width > 16384 ? 16385 : width);
    L->height = (int)(height > 16384 ? 16385 : height);
    const int text_w = MARGIN + pmoe_text_width(title, TEXT_SCALE) + MARGIN;
    const int axes_w = MARGIN + pmoe_text_width(axes, TEXT_SCALE) + MARGIN;
    if (L->width < text_w) L->width = text_w;
    if (L->width < axes_w) L->width = axes_w;
    if (L->width > 16384 || L->height > 16384)
        return pmoe_fail(err, PMOE_ERR_CONFIG,
                         "a confusion matrix of %d classes would be %lld x %lld pixels, over "
                         "16384 a side",
                         k, (long long)width, (long long)height);
    pmoe_status s = pmoe_canvas_init(canvas, L->width, L->height, BACKGROUND, err);
    if (s) return s;
    pmoe_canvas_text(canvas, MARGIN, MARGIN, TEXT_SCALE, title, INK);
    pmoe_canvas_text(canvas, MARGIN, MARGIN + LINE, TEXT_SCALE, axes, INK);
    const int text_scale = L->cell >= 40 ? 2 : 1;
    for (int p = 0; p < k && L->cell >= 16; p++) { /* column heads: the index */
        char head[16];
        snprintf(head, sizeof head, "%d", p);
        const int w = pmoe_text_width(head, text_scale);
        if (w <= L->cell - 1)
            pmoe_canvas_text(canvas, L->grid_x + p * L->cell + (L->cell - 1 - w) / 2,
                             L->grid_y - pmoe_text_height(text_scale) - 4, text_scale, head, INK);
    }
    for (int t = 0; t < k; t++) {
        const int y = L->grid_y + t * L->cell;
        char label[64];
        row_label(f, t, label);
        if (L->cell - 1 >= pmoe_text_height(TEXT_SCALE))
            pmoe_canvas_text(canvas, MARGIN, y + (L->cell - 1 - pmoe_text_height(TEXT_SCALE)) / 2,
                             TEXT_SCALE, label, INK);
        for (int p = 0; p < k; p++) {
            const int x = L->grid_x + p * L->cell;
            const pmoe_rgb colour = pmoe_heat_colour(share(f, t, p));
            pmoe_canvas_fill_rect(canvas, x, y, L->cell - 1, L->cell - 1, colour);
            char count[24];
            snprintf(count, sizeof count, "%lld", (long long)f->counts[(int64_t)t * k + p]);
            const int w = pmoe_text_width(count, text_scale), h = pmoe_text_height(text_scale);
            if (L->cell >= 16 && w <= L->cell - 3)
                pmoe_canvas_text(canvas, x + (L->cell - 1 - w) / 2, y + (L->cell - 1 - h) / 2,
                                 text_scale, count,
                                 pmoe_rgb_luma(colour) > 150.0 ? (pmoe_rgb){0, 0, 0}
                                                               : (pmoe_rgb){255, 255, 255});
        }
    }
    return PMOE_OK;
}
