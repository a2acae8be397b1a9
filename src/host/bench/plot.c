/* plot.c: see plot.h. The PNG is 8-bit RGB, one IDAT chunk, filter 0. */
#include "bench/plot.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "core/files.h"

typedef struct canvas {
    int width, height;
    uint8_t *rgb;
} canvas;

typedef struct color {
    uint8_t r, g, b;
} color;

static const color BLACK = {0, 0, 0}, GRID = {225, 225, 225}, AXIS = {90, 90, 90};
static const color SERIES_COLORS[PMOE_PLOT_MAX_SERIES] = {
    {31, 119, 180}, {230, 115, 0}, {44, 160, 44}, {200, 40, 40}};

static void put(canvas *c, int x, int y, color col) {
    if (x < 0 || y < 0 || x >= c->width || y >= c->height) return;
    uint8_t *p = c->rgb + ((size_t)y * c->width + x) * 3;
    p[0] = col.r;
    p[1] = col.g;
    p[2] = col.b;
}

static void fill_rect(canvas *c, int x0, int y0, int x1, int y1, color col) {
    for (int y = y0; y <= y1; y++)
        for (int x = x0; x <= x1; x++) put(c, x, y, col);
}

/* A line `thick` pixels wide (a square brush along Bresenham's path). */
static void line(canvas *c, int x0, int y0, int x1, int y1, int thick, color col) {
    const int dx = abs(x1 - x0), dy = -abs(y1 - y0), sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1;
    int e = dx + dy;
    for (;;) {
        fill_rect(c, x0 - thick / 2, y0 - thick / 2, x0 + (thick - 1) / 2, y0 + (thick - 1) / 2,
                  col);
        if (x0 == x1 && y0 == y1) break;
        const int e2 = 2 * e;
        if (e2 >= dy) {
            e += dy;
            x0 += sx;
        }
        if (e2 <= dx) {
            e += dx;
            y0 += sy;
        }
    }
}

/* ---- text: a 5x7 font, rows top to bottom, bit 4 the leftmost pixel ---- */

typedef struct glyph {
    char ch;
    uint8_t rows[7];
} glyph;

static const glyph FONT[] = {
    {'A', {14, 17, 17, 31, 17, 17, 17}}, {'B', {30, 17, 17, 30, 17, 17, 30}},
    {'C', {14, 17, 16, 16, 16, 17, 14}}, {'D', {30, 17, 17, 17, 17, 17, 30}},
    {'E', {31, 16, 16, 30, 16, 16, 31}}, {'F', {31, 16, 16, 30, 16, 16, 16}},
    {'G', {14, 17, 16, 23, 17, 17, 15}}, {'H', {17, 17, 17, 31, 17, 17, 17}},
    {'I', {14, 4, 4, 4, 4, 4, 14}},      {'J', {7, 2, 2, 2, 2, 18, 12}},
    {'K', {17, 18, 20, 24, 20, 18, 17}}, {'L', {16, 16, 16, 16, 16, 16, 31}},
    {'M', {17, 27, 21, 21, 17, 17, 17}}, {'N', {17, 17, 25, 21, 19, 17, 17}},
    {'O', {14, 17, 17, 17, 17, 17, 14}}, {'P', {30, 17, 17, 30, 16, 16, 16}},
    {'Q', {14, 17, 17, 17, 21, 18, 13}}, {'R', {30, 17, 17, 30, 20, 18, 17}},
    {'S', {15, 16, 16, 14, 1, 1, 30}},   {'T', {31, 4, 4, 4, 4, 4, 4}},
    {'U', {17, 17, 17, 17, 17, 17, 14}}, {'V', {17, 17, 17, 17, 17, 10, 4}},
    {'W', {17, 17, 17, 21, 21, 21, 10}}, {'X', {17, 17, 10, 4, 10, 17, 17}},
    {'Y', {17, 17, 10, 4, 4, 4, 4}},     {'Z', {31, 1, 2, 4, 8, 16, 31}},
    {'0', {14, 17, 19, 21, 25, 17, 14}}, {'1', {4, 12, 4, 4, 4, 4, 14}},
    {'2', {14, 17, 1, 2, 4, 8, 31}},     {'3', {31, 2, 4, 2, 1, 17, 14}},
    {'4', {2, 6, 10, 18, 31, 2, 2}},     {'5', {31, 16, 30, 1, 1, 17, 14}},
    {'6', {6, 8, 16, 30, 17, 17, 14}},   {'7', {31, 1, 2, 4, 8, 8, 8}},
    {'8', {14, 17, 17, 14, 17, 17, 14}}, {'9', {14, 17, 17, 15, 1, 2, 12}},
    {'.', {0, 0, 0, 0, 0, 12, 12}},      {'/', {0, 1, 2, 4, 8, 16, 0}},
    {'_', {0, 0, 0, 0, 0, 0, 31}},       {'-', {0, 0, 0, 31, 0, 0, 0}},
    {'=', {0, 0, 31, 0, 31, 0, 0}},      {':', {0, 12, 12, 0, 12, 12, 0}},
    {'(', {2, 4, 8, 8, 8, 4, 2}},        {')', {8, 4, 2, 2, 2, 4, 8}},
    {',', {0, 0, 0, 0, 12, 4, 8}},       {'%', {24, 25, 2, 4, 8, 19, 3}},
    {'+', {0, 4, 4, 31, 4, 4, 0}},       {'^', {4, 10, 17, 0, 0, 0, 0}},
    {'[', {14, 8, 8, 8, 8, 8, 14}},      {']', {14, 2, 2, 2, 2, 2, 14}},
};

enum { SCALE = 2, CHAR_W = 6 * SCALE, CHAR_H = 7 * SCALE };

static const glyph *find_glyph(char ch) {
    ch = (char)toupper((unsigned char)ch);
    for (size_t i = 0; i < sizeof FONT / sizeof FONT[0]; i++)
        if (FONT[i].ch == ch) return &FONT[i];
    return NULL; /* a space, or a character the font lacks */
}

static int text_width(const char *s) { return (int)strlen(s) * CHAR_W - SCALE; }

/* Draws s with its top-left corner at (x, y). */
static void text(canvas *c, int x, int y, const char *s, color col) {
    for (; *s; s++, x += CHAR_W) {
        const glyph *g = find_glyph(*s);
        if (!g) continue;
        for (int row = 0; row < 7; row++)
            for (int bit = 0; bit < 5; bit++)
                if (g->rows[row] & (16 >> bit))
                    fill_rect(c, x + bit * SCALE, y + row * SCALE, x + bit * SCALE + SCALE - 1,
                              y + row * SCALE + SCALE - 1, col);
    }
}

/* ---- the chart ---- */

/* 1, 2 or 5 times a power of ten, at least x. */
static double nice_step(double x) {
    if (!(x > 0)) return 1.0;
    const double p = pow(10.0, floor(log10(x)));
    const double f = x / p;
    return (f <= 1.0 ? 1.0 : f <= 2.0 ? 2.0 : f <= 5.0 ? 5.0 : 10.0) * p;
}

static void draw_panel(canvas *c, const pmoe_plot_figure *fig, const pmoe_plot_panel *panel,
                       int left, int top, int width, int height) {
    /* y range: 0 .. a nice top above every finite value */
    double ymax = 0.0;
    for (int s = 0; s < panel->series_count; s++)
        for (int i = 0; i < fig->point_count; i++)
            if (isfinite(panel->series[s].y[i]) && panel->series[s].y[i] > ymax)
                ymax = panel->series[s].y[i];
    const double step = nice_step(ymax > 0 ? ymax / 5.0 : 1.0);
    const double ytop = step * ceil((ymax > 0 ? ymax : 1.0) / step);
    double xmin = 0, xmax = fig->point_count > 1 ? fig->point_count - 1 : 1;
    if (fig->x_numeric) {
        xmin = xmax = fig->x[0];
        for (int i = 0; i < fig->point_count; i++) {
            if (fig->x[i] < xmin) xmin = fig->x[i];
            if (fig->x[i] > xmax) xmax = fig->x[i];
        }
        if (xmax == xmin) xmax = xmin + 1;
    }
    const int pad = 14;
    const int x0 = left, x1 = left + width, y0 = top + height, y1 = top;
#define PX(v) (x0 + pad + (int)lround(((v)-xmin) / (xmax - xmin) * (double)(width - 2 * pad)))
    /* the legend (top-left, below) gets a band of its own above the data, so no
     * curve runs under it */
    const int legend_h = 6 + panel->series_count * (CHAR_H + 6);
    const int data_h = height - legend_h > height / 2 ? height - legend_h : height / 2;
#define PY(v) (y0 - (int)lround((v) / ytop * (double)data_h))
    text(c, left + (width - text_width(panel->title)) / 2, top - CHAR_H - 10, panel->title, BLACK);
    char label[32];
    for (double v = 0; v <= ytop * (1 + 1e-9); v += step) {
        const int y = PY(v);
        line(c, x0, y, x1, y, 1, GRID);
        snprintf(label, sizeof label, "%g", v);
        text(c, x0 - text_width(label) - 6, y - CHAR_H / 2, label, AXIS);
    }
    for (int i = 0; i < fig->point_count; i++) {
        const int x = PX(fig->x_numeric ? fig->x[i] : (double)i);
        line(c, x, y0, x, y0 + 4, 1, AXIS);
        text(c, x - text_width(fig->x_text[i]) / 2, y0 + 8, fig->x_text[i], AXIS);
    }
    line(c, x0, y0, x1, y0, 1, AXIS);
    line(c, x0, y0, x0, y1, 1, AXIS);
    for (int s = 0; s < panel->series_count; s++) {
        const pmoe_plot_series *ser = &panel->series[s];
        int px = 0, py = 0, have = 0;
        for (int i = 0; i < fig->point_count; i++) {
            if (!isfinite(ser->y[i])) {
                have = 0;
                continue;
            }
            const int x = PX(fig->x_numeric ? fig->x[i] : (double)i), y = PY(ser->y[i]);
            if (have) line(c, px, py, x, y, 2, SERIES_COLORS[s]);
            fill_rect(c, x - 3, y - 3, x + 3, y + 3, SERIES_COLORS[s]);
            px = x;
            py = y;
            have = 1;
        }
    }
    /* the legend on a white box, top-left inside the panel, in its band */
    int legend_w = 0;
    for (int s = 0; s < panel->series_count; s++)
        if (text_width(panel->series[s].label) > legend_w)
            legend_w = text_width(panel->series[s].label);
    const color WHITE = {255, 255, 255};
    for (int s = 0; s < panel->series_count; s++) {
        const int ly = top + 6 + s * (CHAR_H + 6);
        fill_rect(c, x0 + 6, ly - 3, x0 + 36 + legend_w, ly + CHAR_H + 3, WHITE);
        fill_rect(c, x0 + 10, ly + 3, x0 + 26, ly + CHAR_H - 4, SERIES_COLORS[s]);
        text(c, x0 + 32, ly, panel->series[s].label, BLACK);
    }
#undef PX
#undef PY
}

static void put_u32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static int write_chunk(FILE *f, const char *type, const uint8_t *data, uint32_t len) {
    uint8_t head[8];
    put_u32(head, len);
    memcpy(head + 4, type, 4);
    uLong crc = crc32(0L, (const Bytef *)type, 4);
    if (len) crc = crc32(crc, data, len);
    uint8_t tail[4];
    put_u32(tail, (uint32_t)crc);
    return fwrite(head, 1, 8, f) == 8 && (len == 0 || fwrite(data, 1, len, f) == len) &&
           fwrite(tail, 1, 4, f) == 4;
}

static pmoe_status write_png(const canvas *c, const char *path, pmoe_error *err) {
    const size_t stride = (size_t)c->width * 3 + 1, raw_len = stride * (size_t)c->height;
    uint8_t *raw = malloc(raw_len);
    uLongf packed_len = compressBound((uLong)raw_len);
    uint8_t *packed = malloc(packed_len);
    pmoe_status s = PMOE_OK;
    if (!raw || !packed) s = pmoe_fail(err, PMOE_ERR_OOM, "%s: cannot allocate the image", path);
    if (!s) {
        for (int y = 0; y < c->height; y++) {
            raw[(size_t)y * stride] = 0; /* filter: none */
            memcpy(raw + (size_t)y * stride + 1, c->rgb + (size_t)y * c->width * 3, stride - 1);
        }
        if (compress2(packed, &packed_len, raw, (uLong)raw_len, 9) != Z_OK)
            s = pmoe_fail(err, PMOE_ERR_INTERNAL, "%s: zlib could not compress the image", path);
    }
    pmoe_atomic_file out;
    if (!s) s = pmoe_atomic_open(&out, path, err);
    if (!s) {
        static const uint8_t signature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
        uint8_t ihdr[13];
        put_u32(ihdr, (uint32_t)c->width);
        put_u32(ihdr + 4, (uint32_t)c->height);
        ihdr[8] = 8; /* bits per channel */
        ihdr[9] = 2; /* RGB */
        ihdr[10] = ihdr[11] = ihdr[12] = 0;
        FILE *f = out.stream;
        (void)(fwrite(signature, 1, 8, f) == 8 && write_chunk(f, "IHDR", ihdr, 13) &&
               write_chunk(f, "IDAT", packed, (uint32_t)packed_len) &&
               write_chunk(f, "IEND", NULL, 0)); /* a failed write is found by the commit */
        s = pmoe_atomic_commit(&out, err);
    }
    free(raw);
    free(packed);
    return s;
}

pmoe_status pmoe_plot_write_png(const pmoe_plot_figure *fig, const char *path, pmoe_error *err) {
    if (fig->point_count < 1 || fig->point_count > PMOE_PLOT_MAX_POINTS || fig->panel_count < 1 ||
        fig->panel_count > PMOE_PLOT_MAX_PANELS)
        return pmoe_fail(err, PMOE_ERR_INTERNAL, "%s: a plot of %d points in %d panels", path,
                         fig->point_count, fig->panel_count);
    const int panel_w = 380, panel_h = 300, margin_left = 80, gap = 90, top = 50, bottom = 70;
    canvas c;
    c.width = margin_left + fig->panel_count * panel_w + (fig->panel_count - 1) * gap + 30;
    c.height = top + panel_h + bottom;
    c.rgb = malloc((size_t)c.width * c.height * 3);
    if (!c.rgb) return pmoe_fail(err, PMOE_ERR_OOM, "%s: cannot allocate the image", path);
    memset(c.rgb, 255, (size_t)c.width * c.height * 3);
    for (int p = 0; p < fig->panel_count; p++)
        draw_panel(&c, fig, &fig->panels[p], margin_left + p * (panel_w + gap), top, panel_w,
                   panel_h);
    text(&c, (c.width - text_width(fig->x_label)) / 2, top + panel_h + 40, fig->x_label, BLACK);
    pmoe_status s = write_png(&c, path, err);
    free(c.rgb);
    return s;
}
