/* canvas.c: see canvas.h. */
#include "viz/canvas.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

pmoe_status pmoe_canvas_init(pmoe_canvas *c, int width, int height, pmoe_rgb background,
                             pmoe_error *err) {
    memset(c, 0, sizeof *c);
    /* 16384 pixels a side keeps width * height * 3 far inside size_t and int. */
    if (width < 1 || height < 1 || width > 16384 || height > 16384)
        return pmoe_fail(err, PMOE_ERR_CONFIG, "a %d x %d picture is out of range [1, 16384]",
                         width, height);
    const size_t bytes = (size_t)width * (size_t)height * 3;
    c->pixels = malloc(bytes);
    if (!c->pixels)
        return pmoe_fail(err, PMOE_ERR_OOM,
                         "out of host memory: %zu bytes asked for a %d x %d picture", bytes, width,
                         height);
    c->width = width;
    c->height = height;
    pmoe_canvas_fill_rect(c, 0, 0, width, height, background);
    return PMOE_OK;
}

void pmoe_canvas_free(pmoe_canvas *c) {
    free(c->pixels);
    memset(c, 0, sizeof *c);
}

pmoe_rgb pmoe_canvas_get(const pmoe_canvas *c, int x, int y) {
    if (x < 0 || y < 0 || x >= c->width || y >= c->height) return (pmoe_rgb){0, 0, 0};
    const uint8_t *p = c->pixels + ((size_t)y * c->width + x) * 3;
    return (pmoe_rgb){p[0], p[1], p[2]};
}

void pmoe_canvas_set(pmoe_canvas *c, int x, int y, pmoe_rgb colour) {
    if (x < 0 || y < 0 || x >= c->width || y >= c->height) return;
    uint8_t *p = c->pixels + ((size_t)y * c->width + x) * 3;
    p[0] = colour.r;
    p[1] = colour.g;
    p[2] = colour.b;
}

void pmoe_canvas_fill_rect(pmoe_canvas *c, int x, int y, int w, int h, pmoe_rgb colour) {
    int x0 = x < 0 ? 0 : x, y0 = y < 0 ? 0 : y;
    int x1 = x + w > c->width ? c->width : x + w, y1 = y + h > c->height ? c->height : y + h;
    for (int row = y0; row < y1; row++) {
        uint8_t *p = c->pixels + ((size_t)row * c->width + x0) * 3;
        for (int col = x0; col < x1; col++, p += 3) {
            p[0] = colour.r;
            p[1] = colour.g;
            p[2] = colour.b;
        }
    }
}

void pmoe_canvas_outline_rect(pmoe_canvas *c, int x, int y, int w, int h, int thickness,
                              pmoe_rgb colour) {
    if (w <= 0 || h <= 0 || thickness <= 0) return;
    if (2 * thickness >= w || 2 * thickness >= h) {
        pmoe_canvas_fill_rect(c, x, y, w, h, colour);
        return;
    }
    pmoe_canvas_fill_rect(c, x, y, w, thickness, colour);                 /* top */
    pmoe_canvas_fill_rect(c, x, y + h - thickness, w, thickness, colour); /* bottom */
    pmoe_canvas_fill_rect(c, x, y + thickness, thickness, h - 2 * thickness, colour);
    pmoe_canvas_fill_rect(c, x + w - thickness, y + thickness, thickness, h - 2 * thickness,
                          colour);
}

/* ---- the font ---- */

/* Five rows of three bits each, the high bit on the left. */
typedef struct glyph {
    char ch;
    uint8_t rows[PMOE_FONT_HEIGHT];
} glyph;

static const glyph FONT[] = {
    {'0', {7, 5, 5, 5, 7}}, {'1', {2, 6, 2, 2, 7}}, {'2', {7, 1, 7, 4, 7}},  {'3', {7, 1, 7, 1, 7}},
    {'4', {5, 5, 7, 1, 1}}, {'5', {7, 4, 7, 1, 7}}, {'6', {7, 4, 7, 5, 7}},  {'7', {7, 1, 1, 2, 2}},
    {'8', {7, 5, 7, 5, 7}}, {'9', {7, 5, 7, 1, 7}}, {'A', {2, 5, 7, 5, 5}},  {'B', {6, 5, 6, 5, 6}},
    {'C', {3, 4, 4, 4, 3}}, {'D', {6, 5, 5, 5, 6}}, {'E', {7, 4, 6, 4, 7}},  {'F', {7, 4, 6, 4, 4}},
    {'G', {3, 4, 5, 5, 3}}, {'H', {5, 5, 7, 5, 5}}, {'I', {7, 2, 2, 2, 7}},  {'J', {1, 1, 1, 5, 2}},
    {'K', {5, 5, 6, 5, 5}}, {'L', {4, 4, 4, 4, 7}}, {'M', {5, 7, 7, 5, 5}},  {'N', {6, 5, 5, 5, 5}},
    {'O', {2, 5, 5, 5, 2}}, {'P', {6, 5, 6, 4, 4}}, {'Q', {2, 5, 5, 6, 3}},  {'R', {6, 5, 6, 5, 5}},
    {'S', {3, 4, 2, 1, 6}}, {'T', {7, 2, 2, 2, 2}}, {'U', {5, 5, 5, 5, 7}},  {'V', {5, 5, 5, 5, 2}},
    {'W', {5, 5, 7, 7, 5}}, {'X', {5, 5, 2, 5, 5}}, {'Y', {5, 5, 2, 2, 2}},  {'Z', {7, 1, 2, 4, 7}},
    {'.', {0, 0, 0, 0, 2}}, {',', {0, 0, 0, 2, 4}}, {'-', {0, 0, 7, 0, 0}},  {'+', {0, 2, 7, 2, 0}},
    {'=', {0, 7, 0, 7, 0}}, {'%', {4, 1, 2, 4, 1}}, {':', {0, 2, 0, 2, 0}},  {'/', {1, 1, 2, 4, 4}},
    {'#', {5, 7, 5, 7, 5}}, {'(', {2, 4, 4, 4, 2}}, {')', {2, 1, 1, 1, 2}},  {'<', {1, 2, 4, 2, 1}},
    {'>', {4, 2, 1, 2, 4}}, {'_', {0, 0, 0, 0, 7}}, {'\'', {2, 2, 0, 0, 0}},
};

static const glyph *find_glyph(char ch) {
    ch = (char)toupper((unsigned char)ch);
    for (size_t i = 0; i < sizeof FONT / sizeof FONT[0]; i++)
        if (FONT[i].ch == ch) return &FONT[i];
    return NULL; /* a blank, such as ' ' */
}

int pmoe_text_width(const char *text, int scale) {
    const int n = (int)strlen(text);
    return n == 0 ? 0 : ((n - 1) * PMOE_FONT_ADVANCE + PMOE_FONT_WIDTH) * scale;
}

int pmoe_canvas_text(pmoe_canvas *c, int x, int y, int scale, const char *text, pmoe_rgb colour) {
    int pen = x;
    for (const char *p = text; *p; p++, pen += PMOE_FONT_ADVANCE * scale) {
        const glyph *g = find_glyph(*p);
        if (!g) continue;
        for (int row = 0; row < PMOE_FONT_HEIGHT; row++)
            for (int col = 0; col < PMOE_FONT_WIDTH; col++)
                if (g->rows[row] & (4 >> col))
                    pmoe_canvas_fill_rect(c, pen + col * scale, y + row * scale, scale, scale,
                                          colour);
    }
    return pmoe_text_width(text, scale);
}

double pmoe_rgb_luma(pmoe_rgb colour) {
    return 0.299 * colour.r + 0.587 * colour.g + 0.114 * colour.b;
}

int pmoe_rgb_equal(pmoe_rgb a, pmoe_rgb b) { return a.r == b.r && a.g == b.g && a.b == b.b; }
