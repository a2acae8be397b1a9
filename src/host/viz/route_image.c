/* route_image.c: see route_image.h.
 *
 * Layout and drawing share one walk over the legend (measure_legend draws
 * when given a canvas), so the two never disagree about where things are. */
#include "viz/route_image.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

enum {
    MARGIN = 12,
    GAP = 16,                                 /* between samples, between heatmaps */
    TEXT_SCALE = 2,                           /* titles, captions, legend */
    LINE = PMOE_FONT_HEIGHT * TEXT_SCALE + 4, /* one line of text */
    SWATCH = PMOE_FONT_HEIGHT * TEXT_SCALE,   /* a legend's colour square */
    COLOUR_BAR = 128,
};

static const pmoe_rgb BACKGROUND = {255, 255, 255}, INK = {32, 32, 32};
static const pmoe_rgb WHITE = {255, 255, 255}, BLACK = {0, 0, 0};

/* Sasha Trubetskoy's 20 distinct colours, less grey, white and black (a grey
 * image would hide them, and a test tells experts from image pixels by
 * colour), plus dark green; the eight most distinct come first. */
static const pmoe_rgb PALETTE[PMOE_PALETTE_SIZE] = {
    {230, 25, 75},   {60, 180, 75},   {255, 225, 25},  {67, 99, 216},   {245, 130, 49},
    {145, 30, 180},  {66, 212, 244},  {240, 50, 230},  {191, 239, 69},  {250, 190, 212},
    {70, 153, 144},  {220, 190, 255}, {154, 99, 36},   {255, 250, 200}, {128, 0, 0},
    {170, 255, 195}, {128, 128, 0},   {255, 216, 177}, {0, 0, 117},     {0, 100, 0},
};

pmoe_rgb pmoe_expert_colour(int expert) {
    return PALETTE[(expert < 0 ? -expert : expert) % PMOE_PALETTE_SIZE];
}

pmoe_rgb pmoe_heat_colour(double share) {
    /* viridis at nine stops; linear between them keeps the luma rising */
    static const pmoe_rgb STOPS[9] = {{68, 1, 84},    {71, 44, 122},  {59, 81, 139},
                                      {44, 113, 142}, {33, 144, 141}, {39, 173, 129},
                                      {92, 200, 99},  {170, 220, 50}, {253, 231, 37}};
    if (!(share > 0.0)) share = 0.0; /* NaN too */
    if (share > 1.0) share = 1.0;
    const double at = share * 8.0;
    int i = (int)at;
    if (i > 7) i = 7;
    const double f = at - i;
    const pmoe_rgb a = STOPS[i], b = STOPS[i + 1];
    return (pmoe_rgb){(uint8_t)lround(a.r + f * (b.r - a.r)),
                      (uint8_t)lround(a.g + f * (b.g - a.g)),
                      (uint8_t)lround(a.b + f * (b.b - a.b))};
}

static pmoe_rgb text_on(pmoe_rgb background) {
    return pmoe_rgb_luma(background) > 150.0 ? BLACK : WHITE;
}

static int max_int(int a, int b) { return a > b ? a : b; }
static int min_int(int a, int b) { return a < b ? a : b; }

/* The gate in whole percent, as a tag shows it. */
static int gate_percent(float gate) {
    double p = 100.0 * (double)gate;
    if (!(p > 0.0)) return 0;
    return p >= 100.0 ? 100 : (int)lround(p);
}

/* ---- texts ---- */

static const pmoe_route_image_options NO_OPTIONS = {0, 0, NULL, NULL};

static const char *population(const pmoe_route_image_options *o) {
    return o->population ? o->population : "test samples";
}

static void title_lines(const pmoe_routing *r, const pmoe_route_image_options *o, char line1[256],
                        char line2[256]) {
    snprintf(line1, 256, "%s on %s: %d experts, each picks %d of %d patches", r->info.model,
             r->info.data, r->experts, r->topl, r->grid_rows * r->grid_cols);
    int n = r->test_acc >= 0.0
                ? snprintf(line2, 256, "test accuracy %.1f%% on %lld %s", 100.0 * r->test_acc,
                           (long long)r->test_size, population(o))
                : snprintf(line2, 256, "%lld %s", (long long)r->test_size, population(o));
    if (r->router_recall >= 0.0 && n > 0 && n < 256)
        snprintf(line2 + n, (size_t)(256 - n), ", router recall %.1f%%", 100.0 * r->router_recall);
}

static void heat_header(const pmoe_routing *r, const pmoe_route_image_options *o, char out[256]) {
    snprintf(out, 256, "share of the %lld %s in which each expert picks each position:",
             (long long)r->test_size, population(o));
}

static void heat_label(int expert, char out[32]) { snprintf(out, 32, "expert %d", expert); }

/* The legend from (x, y) within width avail: the experts' swatches, then a
 * key to the marks, each row wrapped. Draws when c is not NULL; returns the
 * height used. */
static int measure_legend(pmoe_canvas *c, const pmoe_routing *r, const pmoe_route_layout *L, int x,
                          int y, int avail) {
    int cx = x, cy = y;
    const char *head = "experts:";
    if (c) pmoe_canvas_text(c, cx, cy, TEXT_SCALE, head, INK);
    cx += pmoe_text_width(head, TEXT_SCALE) + 12;
    for (int e = 0; e < r->experts; e++) {
        char num[16];
        snprintf(num, sizeof num, "%d", e);
        const int w = SWATCH + 4 + pmoe_text_width(num, TEXT_SCALE);
        if (cx + w > x + avail && cx > x) {
            cx = x;
            cy += LINE;
        }
        if (c) {
            pmoe_canvas_fill_rect(c, cx, cy, SWATCH, SWATCH, pmoe_expert_colour(e));
            pmoe_canvas_text(c, cx + SWATCH + 4, cy, TEXT_SCALE, num, INK);
        }
        cx += w + 12;
    }
    /* The key: the deciding-patch triangle, a tag, the nesting. */
    cx = x;
    cy += LINE + 4;
    const char *keys[3] = {"deciding patch", "gate value in % (tag in the expert's colour)",
                           "frames nest where several experts picked a patch"};
    const int tag_demo = pmoe_text_width("42", TEXT_SCALE) + 4;
    for (int i = 0; i < 3; i++) {
        const int mark = i == 0 ? SWATCH : i == 1 ? tag_demo : 2 * SWATCH;
        const int w = mark + 6 + pmoe_text_width(keys[i], TEXT_SCALE);
        if (cx + w > x + avail && cx > x) {
            cx = x;
            cy += LINE + 4;
        }
        if (c) {
            if (i == 0) {
                pmoe_canvas_fill_rect(c, cx, cy, SWATCH, SWATCH, (pmoe_rgb){96, 96, 96});
                for (int row = 0; row < SWATCH; row++) { /* the triangle, as on a patch */
                    pmoe_canvas_fill_rect(c, cx + row, cy + row, SWATCH - row, 1, WHITE);
                    pmoe_canvas_fill_rect(c, cx + row, cy + row, SWATCH - row < 2 ? 1 : 2, 1,
                                          BLACK);
                }
            } else if (i == 1) {
                pmoe_canvas_fill_rect(c, cx, cy - 2, tag_demo, SWATCH + 4, pmoe_expert_colour(0));
                pmoe_canvas_text(c, cx + 2, cy, TEXT_SCALE, "42", text_on(pmoe_expert_colour(0)));
            } else {
                pmoe_canvas_fill_rect(c, cx, cy - 2, mark, SWATCH + 4, (pmoe_rgb){96, 96, 96});
                for (int level = 0; level < 3; level++)
                    pmoe_canvas_outline_rect(c, cx + 2 * level, cy - 2 + 2 * level,
                                             mark - 4 * level, SWATCH + 4 - 4 * level, 2,
                                             pmoe_expert_colour(level));
            }
            pmoe_canvas_text(c, cx + mark + 6, cy, TEXT_SCALE, keys[i], INK);
        }
        cx += w + 24;
    }
    (void)L;
    return cy + LINE - y;
}

/* ---- layout ---- */

/* The most experts that picked one patch of one drawn sample. */
static int most_pickers(const pmoe_routing *r, int *any_full) {
    const int k = r->experts, l = r->topl, n = r->grid_rows * r->grid_cols;
    int most = 1;
    *any_full = 0;
    for (int s = 0; s < r->samples; s++)
        for (int j = 0; j < n; j++) {
            int count = 0;
            for (int e = 0; e < k; e++)
                for (int t = 0; t < l; t++) {
                    const int64_t at = ((int64_t)s * k + e) * l + t;
                    if (r->selected[at] == j) {
                        count++;
                        *any_full |= gate_percent(r->gate[at]) >= 100;
                    }
                }
            most = max_int(most, count);
        }
    return most;
}

/* How many tags of size tw x th fit inside a patch framed `pickers` deep. */
static int tag_capacity(const pmoe_route_layout *L, int pickers, int decisive, int tw, int th,
                        int *cols_out, int *inset_out, int *top_out) {
    const int inset = pickers * L->outline + 1;
    const int top = decisive ? max_int(inset, L->marker + 1) : inset;
    const int iw = L->cell_w - 2 * inset, ih = L->cell_h - inset - top;
    const int cols = iw < tw ? 0 : (iw + 1) / (tw + 1);
    const int rows = ih < th ? 0 : (ih + 1) / (th + 1);
    if (cols_out) *cols_out = cols;
    if (inset_out) *inset_out = inset;
    if (top_out) *top_out = top;
    return cols * rows;
}

pmoe_status pmoe_route_layout_make(const pmoe_routing *r, const pmoe_route_image_options *options,
                                   pmoe_route_layout *L, pmoe_error *err) {
    memset(L, 0, sizeof *L);
    const pmoe_route_image_options *o = options ? options : &NO_OPTIONS;
    if (r->experts < 1 || r->topl < 1 || r->grid_rows < 1 || r->grid_cols < 1 || r->patch < 1)
        return pmoe_fail(err, PMOE_ERR_CONFIG,
                         "nothing to draw: %d experts, top-%d, a %d x %d patch grid", r->experts,
                         r->topl, r->grid_rows, r->grid_cols);
    if (o->scale < 0 || o->scale > 64 || o->columns < 0)
        return pmoe_fail(err, PMOE_ERR_CONFIG, "picture scale %d or columns %d out of range",
                         o->scale, o->columns);
    L->grid_rows = r->grid_rows;
    L->grid_cols = r->grid_cols;
    L->as_columns = r->height == 1 && r->patch == 1;
    if (L->as_columns) {
        L->scale_y = o->scale ? o->scale : max_int(1, 192 / max_int(1, r->channels));
        L->cell_h = r->channels * L->scale_y;
        L->cell_w = max_int(12, min_int(56, 896 / r->grid_cols));
        L->scale_x = L->cell_w;
    } else {
        const int side = max_int(r->height, r->width);
        int scale = o->scale;
        if (!scale) scale = max_int(1, min_int((84 + r->patch - 1) / r->patch, 448 / side));
        L->scale_x = L->scale_y = scale;
        L->cell_w = L->cell_h = r->patch * scale;
    }
    if ((int64_t)L->cell_w * r->grid_cols > 16384 || (int64_t)L->cell_h * r->grid_rows > 16384)
        return pmoe_fail(err, PMOE_ERR_CONFIG,
                         "a %d x %d grid of %d x %d-pixel patches is too big to draw", r->grid_rows,
                         r->grid_cols, L->cell_h, L->cell_w);
    L->image_w = L->cell_w * r->grid_cols;
    L->image_h = L->cell_h * r->grid_rows;
    const int cell = min_int(L->cell_w, L->cell_h);
    L->outline = cell >= 40 ? 2 : 1;
    L->marker = max_int(6, min_int(24, cell / 4));

    /* Tags: scale 2 when the worst patch drawn (decisive and most picked) holds them all. */
    int full = 0;
    const int pickers = r->samples > 0 ? most_pickers(r, &full) : 1;
    const char *widest = full ? "100" : "99";
    L->tag_scale = 1;
    for (int scale = 2; scale >= 1; scale--) {
        const int tw = pmoe_text_width(widest, scale) + 2, th = pmoe_text_height(scale) + 2;
        if (scale == 1 || tag_capacity(L, pickers, 1, tw, th, NULL, NULL, NULL) >= pickers) {
            L->tag_scale = scale;
            L->tag_w = tw;
            L->tag_h = th;
            break;
        }
    }

    /* The samples' grid. */
    L->tile_pitch_x = L->image_w + GAP;
    L->tile_pitch_y = LINE + L->image_h + GAP;
    L->tile_columns = o->columns ? o->columns : min_int(4, max_int(1, 1440 / L->tile_pitch_x));
    if (r->samples > 0) L->tile_columns = min_int(L->tile_columns, r->samples);
    const int tile_rows = r->samples > 0 ? (r->samples + L->tile_columns - 1) / L->tile_columns : 0;
    const int grid_w = r->samples > 0 ? L->tile_columns * L->tile_pitch_x - GAP : 0;

    /* The heatmaps. */
    /* about 128 pixels a side; a single row (columns data) may be twice as long */
    L->heat_cell = max_int(
        6, min_int(32, (r->grid_rows == 1 ? 256 : 128) / max_int(r->grid_rows, r->grid_cols)));
    const int heat_w = r->grid_cols * L->heat_cell - 1, heat_h = r->grid_rows * L->heat_cell - 1;
    char label[32];
    heat_label(r->experts - 1, label);
    const int label_w = SWATCH + 4 + pmoe_text_width(label, TEXT_SCALE);
    L->heat_pitch_x = max_int(heat_w, label_w) + GAP;
    L->heat_pitch_y = LINE + heat_h + GAP;
    const int content_w = max_int(grid_w, min_int(r->experts, 4) * L->heat_pitch_x - GAP);
    L->heat_columns = min_int(r->experts, max_int(1, (content_w + GAP) / L->heat_pitch_x));
    const int heat_rows = (r->experts + L->heat_columns - 1) / L->heat_columns;

    /* Texts decide the width where they are wider than the content. */
    char line1[256], line2[256], header[256];
    title_lines(r, o, line1, line2);
    heat_header(r, o, header);
    int width = content_w;
    width = max_int(width, pmoe_text_width(line1, TEXT_SCALE));
    width = max_int(width, pmoe_text_width(line2, TEXT_SCALE));
    width = max_int(width, pmoe_text_width(header, TEXT_SCALE) + 12 + 3 * 4 * TEXT_SCALE +
                               COLOUR_BAR + 12 + pmoe_text_width("100%", TEXT_SCALE));

    int y = MARGIN + 2 * LINE + 6;
    y += measure_legend(NULL, r, L, MARGIN, y, width) + 10;
    L->images_x = MARGIN;
    L->images_y = y + LINE;
    y += tile_rows * L->tile_pitch_y;
    y += LINE + 8; /* the heatmaps' header and colour bar */
    L->heat_x = MARGIN;
    L->heat_y = y + LINE;
    y += heat_rows * L->heat_pitch_y - GAP;
    L->width = width + 2 * MARGIN;
    L->height = y + MARGIN;
    if (L->width > 16384 || L->height > 16384)
        return pmoe_fail(err, PMOE_ERR_CONFIG,
                         "the routing picture would be %d x %d pixels; draw fewer samples",
                         L->width, L->height);
    return PMOE_OK;
}

void pmoe_route_patch_origin(const pmoe_route_layout *L, int sample, int patch, int *x, int *y) {
    *x = L->images_x + (sample % L->tile_columns) * L->tile_pitch_x +
         (patch % L->grid_cols) * L->cell_w;
    *y = L->images_y + (sample / L->tile_columns) * L->tile_pitch_y +
         (patch / L->grid_cols) * L->cell_h;
}

void pmoe_route_heat_origin(const pmoe_route_layout *L, int expert, int position, int *x, int *y) {
    *x = L->heat_x + (expert % L->heat_columns) * L->heat_pitch_x +
         (position % L->grid_cols) * L->heat_cell;
    *y = L->heat_y + (expert / L->heat_columns) * L->heat_pitch_y +
         (position / L->grid_cols) * L->heat_cell;
}

/* ---- drawing ---- */

static uint8_t to_byte(double v) {
    if (!(v > 0.0)) return 0;
    return v >= 1.0 ? 255 : (uint8_t)lround(255.0 * v);
}

static void draw_pixels(pmoe_canvas *c, const pmoe_routing *r, const pmoe_route_layout *L, int s) {
    const int64_t plane = (int64_t)r->height * r->width;
    const float *img = r->images + (int64_t)s * r->channels * plane;
    int x0, y0;
    pmoe_route_patch_origin(L, s, 0, &x0, &y0);
    if (L->as_columns) {
        /* patch j's d values are channel t of column j */
        float lo = img[0], hi = img[0];
        for (int64_t i = 1; i < r->channels * plane; i++) {
            lo = img[i] < lo ? img[i] : lo;
            hi = img[i] > hi ? img[i] : hi;
        }
        const double span = hi > lo ? (double)hi - lo : 1.0;
        for (int j = 0; j < r->width; j++)
            for (int t = 0; t < r->channels; t++) {
                const uint8_t v = to_byte(((double)img[t * plane + j] - lo) / span);
                pmoe_canvas_fill_rect(c, x0 + j * L->cell_w, y0 + t * L->scale_y, L->cell_w,
                                      L->scale_y, (pmoe_rgb){v, v, v});
            }
        return;
    }
    const int rgb = r->channels == 3, sx = L->scale_x;
    for (int y = 0; y < r->height; y++)
        for (int x = 0; x < r->width; x++) {
            const int64_t at = (int64_t)y * r->width + x;
            const uint8_t v = to_byte(img[at]);
            const pmoe_rgb colour =
                rgb ? (pmoe_rgb){v, to_byte(img[plane + at]), to_byte(img[2 * plane + at])}
                    : (pmoe_rgb){v, v, v};
            pmoe_canvas_fill_rect(c, x0 + x * sx, y0 + y * sx, sx, sx, colour);
        }
}

static void draw_sample(pmoe_canvas *c, const pmoe_routing *r, const pmoe_route_image_options *o,
                        const pmoe_route_layout *L, int s) {
    const int k = r->experts, l = r->topl, n = r->grid_rows * r->grid_cols;
    int x, y;
    pmoe_route_patch_origin(L, s, 0, &x, &y);
    char caption[256];
    if (o->captions && o->captions[s]) snprintf(caption, sizeof caption, "%s", o->captions[s]);
    else if (r->info.classes <= 1)
        snprintf(caption, sizeof caption, "#%d  y = %s", s, r->labels[s] ? "+1" : "-1");
    else snprintf(caption, sizeof caption, "#%d  class %d", s, (int)r->labels[s]);
    /* within the image's width: the gap to the next sample stays clear */
    for (size_t len = strlen(caption);
         len > 0 && pmoe_text_width(caption, TEXT_SCALE) > L->image_w;)
        caption[--len] = '\0';
    pmoe_canvas_text(c, x, y - LINE + 1, TEXT_SCALE, caption, INK);
    draw_pixels(c, r, L, s);

    /* pmoe_route passes the data's deciding patch as it is; it indexes this
     * patch grid only where router recall was measured (the same condition) */
    const int decisive =
        r->router_recall >= 0.0 && r->decisive[s] >= 0 && r->decisive[s] < n ? r->decisive[s] : -1;
    for (int j = 0; j < n; j++) {
        int pickers[PMOE_MAX_REPORTED_EXPERTS * 4], count = 0;
        float gates[PMOE_MAX_REPORTED_EXPERTS * 4];
        for (int e = 0; e < k && count < (int)(sizeof pickers / sizeof pickers[0]); e++)
            for (int t = 0; t < l; t++) {
                const int64_t at = ((int64_t)s * k + e) * l + t;
                if (r->selected[at] == j) {
                    pickers[count] = e;
                    gates[count++] = r->gate[at];
                    break;
                }
            }
        int px, py;
        pmoe_route_patch_origin(L, s, j, &px, &py);
        const int o = L->outline;
        for (int i = 0; i < count; i++)
            pmoe_canvas_outline_rect(c, px + i * o, py + i * o, L->cell_w - 2 * i * o,
                                     L->cell_h - 2 * i * o, o, pmoe_expert_colour(pickers[i]));
        if (j == decisive) {
            /* a white right triangle in the top-right corner, its hypotenuse black */
            const int m = L->marker;
            for (int row = 0; row < m; row++) {
                const int len = m - row;
                pmoe_canvas_fill_rect(c, px + L->cell_w - len, py + row, len, 1, WHITE);
                pmoe_canvas_fill_rect(c, px + L->cell_w - len, py + row, len < 2 ? len : 2, 1,
                                      BLACK);
            }
        }
        int cols, inset, top;
        const int fit =
            tag_capacity(L, count, j == decisive, L->tag_w, L->tag_h, &cols, &inset, &top);
        for (int i = 0; i < count && i < fit; i++) {
            const int tx = px + inset + (i % cols) * (L->tag_w + 1);
            const int ty = py + top + (i / cols) * (L->tag_h + 1);
            const pmoe_rgb colour = pmoe_expert_colour(pickers[i]);
            char text[8];
            snprintf(text, sizeof text, "%d", gate_percent(gates[i]));
            pmoe_canvas_fill_rect(c, tx, ty, L->tag_w, L->tag_h, colour);
            pmoe_canvas_text(c, tx + L->tag_w - 1 - pmoe_text_width(text, L->tag_scale), ty + 1,
                             L->tag_scale, text, text_on(colour));
        }
    }
}

static void draw_heatmaps(pmoe_canvas *c, const pmoe_routing *r, const pmoe_route_image_options *o,
                          const pmoe_route_layout *L) {
    const int n = r->grid_rows * r->grid_cols, hc = L->heat_cell;
    int x, y;
    pmoe_route_heat_origin(L, 0, 0, &x, &y);
    /* the header and the colour bar */
    char header[256];
    heat_header(r, o, header);
    const int hy = y - 2 * LINE - 8 + 1;
    int cx = x + pmoe_canvas_text(c, x, hy, TEXT_SCALE, header, INK) + 12;
    cx += pmoe_canvas_text(c, cx, hy, TEXT_SCALE, "0%", INK) + 6;
    for (int i = 0; i < COLOUR_BAR; i++)
        pmoe_canvas_fill_rect(c, cx + i, hy - 1, 1, SWATCH + 2,
                              pmoe_heat_colour(i / (double)(COLOUR_BAR - 1)));
    pmoe_canvas_text(c, cx + COLOUR_BAR + 6, hy, TEXT_SCALE, "100%", INK);

    const int text_scale = hc >= 28 ? 2 : 1;
    for (int e = 0; e < r->experts; e++) {
        pmoe_route_heat_origin(L, e, 0, &x, &y);
        char label[32];
        heat_label(e, label);
        pmoe_canvas_fill_rect(c, x, y - LINE + 1, SWATCH, SWATCH, pmoe_expert_colour(e));
        pmoe_canvas_text(c, x + SWATCH + 4, y - LINE + 1, TEXT_SCALE, label, INK);
        for (int j = 0; j < n; j++) {
            const double share = r->test_size > 0 ? (double)r->by_position[(int64_t)e * n + j] /
                                                        (double)r->test_size
                                                  : 0.0;
            const pmoe_rgb colour = pmoe_heat_colour(share);
            pmoe_route_heat_origin(L, e, j, &x, &y);
            pmoe_canvas_fill_rect(c, x, y, hc - 1, hc - 1, colour);
            if (hc < 16) continue;
            char text[8];
            snprintf(text, sizeof text, "%d", (int)lround(100.0 * (share > 1.0 ? 1.0 : share)));
            const int tw = pmoe_text_width(text, text_scale), th = pmoe_text_height(text_scale);
            pmoe_canvas_text(c, x + (hc - 1 - tw) / 2, y + (hc - 1 - th) / 2, text_scale, text,
                             text_on(colour));
        }
    }
}

pmoe_status pmoe_route_draw(const pmoe_routing *r, const pmoe_route_image_options *options,
                            pmoe_canvas *canvas, pmoe_route_layout *layout, pmoe_error *err) {
    pmoe_route_layout local;
    pmoe_route_layout *L = layout ? layout : &local;
    const pmoe_route_image_options *o = options ? options : &NO_OPTIONS;
    memset(canvas, 0, sizeof *canvas);
    pmoe_status s = pmoe_route_layout_make(r, options, L, err);
    if (!s) s = pmoe_canvas_init(canvas, L->width, L->height, BACKGROUND, err);
    if (s) return s;
    char line1[256], line2[256];
    title_lines(r, o, line1, line2);
    pmoe_canvas_text(canvas, MARGIN, MARGIN, TEXT_SCALE, line1, INK);
    pmoe_canvas_text(canvas, MARGIN, MARGIN + LINE, TEXT_SCALE, line2, INK);
    measure_legend(canvas, r, L, MARGIN, MARGIN + 2 * LINE + 6, L->width - 2 * MARGIN);
    for (int i = 0; i < r->samples; i++) draw_sample(canvas, r, o, L, i);
    draw_heatmaps(canvas, r, o, L);
    return PMOE_OK;
}
