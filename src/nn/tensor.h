/*
 * tensor.h - activation tensors inside the engine (private to src/nn).
 *
 * A tensor is a view: c x h x w floats in one of two layouts, pointing into
 * the plan's arena. Layouts:
 *
 *   NN_LAYOUT_PLANAR   ncnn/PyTorch "CHW": element (ch, y, x) at
 *                      ch*h*w + y*w + x. What the ref backend uses.
 *   NN_LAYOUT_BLOCK16  oneDNN "nChw16c": channels in blocks of 16, each block
 *                      an h x w image of 16-float pixels: element (ch, y, x)
 *                      at (ch/16)*h*w*16 + (y*w + x)*16 + ch%16. The channel
 *                      count is padded up to a multiple of 16; padded lanes
 *                      hold zeros (oneDNN relies on it), so every op that
 *                      writes a BLOCK16 tensor must zero them.
 *
 * In both layouts a channel range starting at a multiple of the block (1 or
 * 16) is itself a valid tensor of that layout, which is what makes concat a
 * view rather than a copy.
 */
#ifndef UPRES_NN_TENSOR_H
#define UPRES_NN_TENSOR_H

#include <stddef.h>

typedef enum {
    NN_LAYOUT_PLANAR = 0,
    NN_LAYOUT_BLOCK16 = 1,
} nn_layout_t;

typedef struct nn_tensor {
    float *data; /* borrowed: the plan's arena (or a test buffer) */
    int c, h, w; /* logical shape, no padding */
    nn_layout_t layout;
} nn_tensor_t;

/* Channels rounded up to the layout's block. */
static inline int nn_layout_channels(nn_layout_t layout, int c) {
    return layout == NN_LAYOUT_BLOCK16 ? (c + 15) / 16 * 16 : c;
}

/* Floats the tensor occupies, padding included. */
static inline size_t nn_tensor_floats(const nn_tensor_t *t) {
    return (size_t)nn_layout_channels(t->layout, t->c) * (size_t)t->h * (size_t)t->w;
}

/* Channel alignment at which a sub-range of channels is a valid view. */
static inline int nn_layout_align(nn_layout_t layout) { return layout == NN_LAYOUT_BLOCK16 ? 16 : 1; }

/*
 * First element of channel ch; successive pixels (x, then rows of w) are
 * *pixel_stride floats apart. Lets one loop serve both layouts.
 */
static inline float *nn_tensor_plane(const nn_tensor_t *t, int ch, int *pixel_stride) {
    size_t hw = (size_t)t->h * (size_t)t->w;
    if (t->layout == NN_LAYOUT_BLOCK16) {
        *pixel_stride = 16;
        return t->data + (size_t)(ch / 16) * hw * 16 + (size_t)(ch % 16);
    }
    *pixel_stride = 1;
    return t->data + (size_t)ch * hw;
}

/* A view of channels [c0, c0 + n) of t; c0 must be a multiple of the layout's align. */
static inline nn_tensor_t nn_tensor_channels(const nn_tensor_t *t, int c0, int n) {
    nn_tensor_t v = *t;
    v.data = t->data + (size_t)c0 * (size_t)t->h * (size_t)t->w;
    v.c = n;
    return v;
}

/* Zero the padded channel lanes of a BLOCK16 tensor (no-op otherwise). */
void nn_tensor_zero_padding(const nn_tensor_t *t);

/* Copy between layouts (same logical shape), padding lanes of dst zeroed. */
void nn_tensor_copy(const nn_tensor_t *dst, const nn_tensor_t *src);

#endif
