/* plot.h: small line charts written as PNG files, for the bench's sweeps.
 *
 * pmoe has no plotting dependency: a chart is drawn into an RGB raster (lines,
 * square markers, a built-in 5x7 font drawn at twice its size) and written
 * as a PNG with zlib, which the engine links anyway. A figure is a row of
 * panels sharing one x axis; each panel has its own y axis from 0 and its
 * own series. */
#ifndef PMOE_BENCH_PLOT_H
#define PMOE_BENCH_PLOT_H

#include "pmoe/status.h"

#define PMOE_PLOT_MAX_POINTS 64
#define PMOE_PLOT_MAX_SERIES 4
#define PMOE_PLOT_MAX_PANELS 4

typedef struct pmoe_plot_series {
    const char *label;
    double y[PMOE_PLOT_MAX_POINTS];
} pmoe_plot_series;

typedef struct pmoe_plot_panel {
    const char *title;
    int series_count;
    pmoe_plot_series series[PMOE_PLOT_MAX_SERIES];
} pmoe_plot_panel;

typedef struct pmoe_plot_figure {
    const char *x_label;
    int point_count;
    double x[PMOE_PLOT_MAX_POINTS];           /* used when x_numeric */
    const char *x_text[PMOE_PLOT_MAX_POINTS]; /* tick labels */
    int x_numeric;                            /* else points are equally spaced */
    int panel_count;
    pmoe_plot_panel panels[PMOE_PLOT_MAX_PANELS];
} pmoe_plot_figure;

/* Draws the figure and writes it to path (atomically enough for a plot: a
 * failed write leaves a partial file and an error). */
pmoe_status pmoe_plot_write_png(const pmoe_plot_figure *fig, const char *path, pmoe_error *err);

#endif
