/* augment.h: random crops and flips of training images.
 *
 * data.crop_pad = P pads an image with P zeros on every side and takes the
 * H x W window at a random offset (oy, ox) in [0, 2P]^2 of the padded one;
 * data.flip mirrors the result left to right with probability 1/2
 * (torchvision's RandomCrop(padding=P) then RandomHorizontalFlip). So
 *
 *   out[c][y][x] = in[c][y + dy][x' + dx],  dy = oy - P, dx = ox - P,
 *   x' = W - 1 - x when flipped, else x;  zero where that lies outside.
 *
 * Every draw is a pure function of (train.seed, epoch, sample index) through
 * the counter-based RNG, so it depends on neither the batch a sample lands
 * in, nor the thread or rank that composes it: runs are reproducible and a
 * resumed run redraws exactly what the uninterrupted one drew.
 *
 * Where: on the host, in place, right after a training sample is composed
 * (train.c's batch loader), so every backend sees augmented batches and the
 * CUDA backend uploads them as it uploads any batch. The cost is one more
 * pass over the batch's bytes on the host, small next to composing them
 * (decoding uint8 to float); on the device it would save that pass but need
 * the sources' images there and a kernel per source. Test images are never
 * augmented. */
#ifndef PMOE_DATA_AUGMENT_H
#define PMOE_DATA_AUGMENT_H

#include <stdint.h>

#include "pmoe/config.h"

enum { PMOE_AUGMENT_MAX_WIDTH = 4096 }; /* the widest image it takes */

typedef struct pmoe_augment {
    int crop_pad;  /* P; 0 = no crop */
    int flip;      /* 1: random horizontal flips */
    uint64_t seed; /* train.seed */
} pmoe_augment;

/* One sample's draw: the shift (dy, dx), each in [-P, P], and the flip. */
typedef struct pmoe_augment_draw {
    int dy, dx, flip;
} pmoe_augment_draw;

/* The augmentation data.crop_pad / data.flip ask for, seeded by train.seed. */
pmoe_augment pmoe_augment_from_config(const pmoe_config *cfg);

/* 1 when it changes anything. */
int pmoe_augment_active(const pmoe_augment *a);

/* The draw for sample `index` in pass `epoch` (any number naming the pass:
 * the loop uses distinct numbers for the router and main phases). */
pmoe_augment_draw pmoe_augment_draw_at(const pmoe_augment *a, uint64_t epoch, int64_t index);

/* Applies a draw in place to image (channels x height x width). */
void pmoe_augment_apply(const pmoe_augment_draw *d, int channels, int height, int width,
                        float *image);

#endif
