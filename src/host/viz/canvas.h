/* canvas.h: an RGB raster to draw figures on, with rectangles, outlines and
 * a tiny built-in bitmap font.
 *
 * The figures pmoe draws (routing pictures) are boxes, outlines and short
 * numbers, so a 3x5-pixel font (digits, upper-case letters and a little
 * punctuation, drawn at an integer scale) replaces a font library. Every
 * drawing call clips to the canvas, so layout code never needs to. */
#ifndef PMOE_VIZ_CANVAS_H
#define PMOE_VIZ_CANVAS_H

#include <stdint.h>

#include "pmoe/status.h"

typedef struct pmoe_rgb {
    uint8_t r, g, b;
} pmoe_rgb;

typedef struct pmoe_canvas {
    int width, height;
    uint8_t *pixels; /* height x width x 3, rows top to bottom */
} pmoe_canvas;

/* A width x height canvas filled with background; fails with
 * PMOE_ERR_OOM (or PMOE_ERR_CONFIG for a size out of range). */
pmoe_status pmoe_canvas_init(pmoe_canvas *c, int width, int height, pmoe_rgb background,
                             pmoe_error *err);
void pmoe_canvas_free(pmoe_canvas *c);

/* The pixel at (x, y); (0, 0, 0) outside the canvas. */
pmoe_rgb pmoe_canvas_get(const pmoe_canvas *c, int x, int y);
void pmoe_canvas_set(pmoe_canvas *c, int x, int y, pmoe_rgb colour);

void pmoe_canvas_fill_rect(pmoe_canvas *c, int x, int y, int w, int h, pmoe_rgb colour);

/* A frame `thickness` pixels wide lying inside the rectangle (x, y, w, h). */
void pmoe_canvas_outline_rect(pmoe_canvas *c, int x, int y, int w, int h, int thickness,
                              pmoe_rgb colour);

/* The font: every glyph is 3 x 5 cells of `scale` pixels, advancing 4 cells.
 * Lower-case letters are drawn as upper case; characters the font lacks as
 * a blank. */
#define PMOE_FONT_WIDTH 3
#define PMOE_FONT_HEIGHT 5
#define PMOE_FONT_ADVANCE 4

/* The width in pixels of text at scale (no trailing gap). */
int pmoe_text_width(const char *text, int scale);
static inline int pmoe_text_height(int scale) { return PMOE_FONT_HEIGHT * scale; }

/* Draws text with its top-left corner at (x, y); returns the width drawn. */
int pmoe_canvas_text(pmoe_canvas *c, int x, int y, int scale, const char *text, pmoe_rgb colour);

/* 0.299 R + 0.587 G + 0.114 B, in [0, 255]: picks black or white text on a colour. */
double pmoe_rgb_luma(pmoe_rgb colour);
int pmoe_rgb_equal(pmoe_rgb a, pmoe_rgb b);

#endif
