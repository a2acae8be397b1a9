/* confusion_image.h: the confusion matrix as a picture (pmoe eval --out).
 *
 * A title line; then a grid of classes x classes cells, rows the true class
 * and columns the predicted one (the diagonal: right), each cell coloured
 * by its share of its row, the routing heatmaps' scale (route_image.h's
 * pmoe_heat_colour: brighter is more), holding its count where the cell is
 * wide enough; left of each row its index, name (cut to 20 characters) and
 * accuracy, above each column its index. An empty row (a class with no
 * test samples) is drawn as zero shares. */
#ifndef PMOE_VIZ_CONFUSION_IMAGE_H
#define PMOE_VIZ_CONFUSION_IMAGE_H

#include "pmoe/train.h"
#include "viz/canvas.h"

typedef struct pmoe_confusion_layout {
    int width, height;  /* the picture */
    int cell;           /* pitch of a cell; a cell is cell - 1 square */
    int grid_x, grid_y; /* the top-left corner of cell (0, 0) */
} pmoe_confusion_layout;

/* Draws f into canvas (free with pmoe_canvas_free) under title; layout may
 * be NULL. Fails (PMOE_ERR_CONFIG) when the picture would exceed 16384
 * pixels a side or f has no classes. */
pmoe_status pmoe_confusion_draw(const pmoe_class_figures *f, const char *title, pmoe_canvas *canvas,
                                pmoe_confusion_layout *layout, pmoe_error *err);

#endif
