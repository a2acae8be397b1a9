/* route_image.h: the routing picture `pmoe route` writes: what each expert
 * picked in some test images, and where it picks over the whole test set.
 *
 * From the top: two title lines (the data, accuracy, router recall); a
 * legend (each expert's colour and number, and a key to the marks); a grid
 * of the first samples, each captioned with its index and label and scaled
 * up by whole pixels; then one heatmap per expert of the share of test
 * samples in which it picks each patch position, with a colour bar.
 *
 * On a sample, every expert's picks are framed in the expert's colour. When
 * several experts pick one patch their frames nest: the expert with the
 * lowest number outermost, each next one `outline` pixels further in, so a
 * frame's level is the number of lower-numbered experts that picked the same
 * patch. Inside the frames, each picking expert has a tag in its colour
 * holding its gate value in percent (rounded), in expert order; the deciding
 * patch has a white triangle in its top-right corner (where router recall was
 * measured, so the task's deciding patch is on the model's patch grid). Nothing but an
 * expert's frame and tag uses its colour inside an image, so the picture
 * can be checked pixel by pixel (tests/test_route.c does).
 *
 * Image data is shown in grey (RGB when it has 3 channels, else its first
 * channel), values in [0, 1] mapped to 0..255. Data that is not an image
 * (the theory's synthetic model: 1 x n patches of d values each) is shown
 * as n columns, each patch's d values top to bottom, scaled per sample from
 * its minimum to its maximum. */
#ifndef PMOE_VIZ_ROUTE_IMAGE_H
#define PMOE_VIZ_ROUTE_IMAGE_H

#include "pmoe/train.h"
#include "viz/canvas.h"

typedef struct pmoe_route_image_options {
    int scale;   /* canvas pixels per image pixel; 0: a patch is about 84 pixels, an image
                    at most 448 */
    int columns; /* samples per row; 0: up to 4, a row at most 1440 pixels wide */
    /* What the samples are, for pictures of other images than the test set's
     * (pmoe predict): population names them in the titles (NULL: "test
     * samples"; the accuracy line is left out where routing->test_acc < 0),
     * and captions[i] replaces sample i's "#i class c" (NULL: that); a
     * caption wider than its image is cut to fit. */
    const char *population;
    const char *const *captions;
} pmoe_route_image_options;

/* Where everything lies; all in canvas pixels. */
typedef struct pmoe_route_layout {
    int width, height;        /* the picture */
    int as_columns;           /* not an image: each patch drawn as a column */
    int grid_rows, grid_cols; /* the patch grid */
    int scale_x, scale_y;     /* one data value's cell */
    int cell_w, cell_h;       /* one patch */
    int image_w, image_h;     /* one sample */
    int tile_columns;         /* samples per row */
    int images_x, images_y;   /* sample 0's top-left corner */
    int tile_pitch_x, tile_pitch_y;
    int outline;        /* one frame's width, and the step between nested frames */
    int tag_scale;      /* font scale of the gate tags */
    int tag_w, tag_h;   /* one tag */
    int marker;         /* the deciding patch's triangle: its legs */
    int heat_cell;      /* pitch of a heatmap cell; a cell is heat_cell - 1 square */
    int heat_columns;   /* heatmaps per row */
    int heat_x, heat_y; /* expert 0's first cell */
    int heat_pitch_x, heat_pitch_y;
} pmoe_route_layout;

/* The layout for routing; fails (PMOE_ERR_CONFIG) when the picture would
 * exceed 16384 pixels a side or routing has no experts. */
pmoe_status pmoe_route_layout_make(const pmoe_routing *routing,
                                   const pmoe_route_image_options *options,
                                   pmoe_route_layout *layout, pmoe_error *err);

/* Top-left corner of patch `patch` of sample `sample`. */
void pmoe_route_patch_origin(const pmoe_route_layout *layout, int sample, int patch, int *x,
                             int *y);

/* Top-left corner of the heatmap cell of `position` for `expert`. */
void pmoe_route_heat_origin(const pmoe_route_layout *layout, int expert, int position, int *x,
                            int *y);

/* Expert e's colour: a fixed palette of 20 distinct, saturated colours (none
 * grey), repeated beyond 20 experts. */
#define PMOE_PALETTE_SIZE 20
pmoe_rgb pmoe_expert_colour(int expert);

/* The heatmap's colour for a share in [0, 1] (viridis: its brightness rises
 * with the share). */
pmoe_rgb pmoe_heat_colour(double share);

/* Lays out and draws the picture into canvas (which the caller frees with
 * pmoe_canvas_free); layout may be NULL. */
pmoe_status pmoe_route_draw(const pmoe_routing *routing, const pmoe_route_image_options *options,
                            pmoe_canvas *canvas, pmoe_route_layout *layout, pmoe_error *err);

#endif
