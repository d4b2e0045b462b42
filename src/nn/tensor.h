/*
 * tensor.h - activation tensors inside the engine (private to src/nn).
 *
 * A tensor is a view: c x h x w elements in one of three layouts, pointing
 * into the plan's arena. Elements are float32 (NN_DTYPE_F32, everything the
 * C ops and the ref backend see) or bfloat16 (NN_DTYPE_BF16: the top half
 * of a float32, stored as uint16; only oneDNN primitives read or write
 * those, see the dnnl backend's Precision notes). data is a float pointer
 * either way: for bf16 it points at the uint16 storage. Layouts:
 *
 *   NN_LAYOUT_PLANAR   ncnn/PyTorch "CHW": element (ch, y, x) at
 *                      ch*h*w + y*w + x. What the ref backend uses.
 *   NN_LAYOUT_BLOCK16  oneDNN "nChw16c": channels in blocks of 16, each block
 *                      an h x w image of 16-float pixels: element (ch, y, x)
 *                      at (ch/16)*h*w*16 + (y*w + x)*16 + ch%16. The channel
 *                      count is padded up to a multiple of 16; padded lanes
 *                      hold zeros (oneDNN relies on it), so every op that
 *                      writes a BLOCK16 tensor must zero them.
 *   NN_LAYOUT_NHWC     channels innermost: element (ch, y, x) at
 *                      (y*w + x)*c + ch, no padding. What oneDNN's AMX bf16
 *                      convolutions want; used for bf16 values only. A
 *                      channel range of it is not a tensor (the pixel
 *                      stride stays c), so it never holds a concat view.
 *
 * In PLANAR and BLOCK16 a channel range starting at a multiple of the block (1 or
 * 16) is itself a valid tensor of that layout, which is what makes concat a
 * view rather than a copy.
 *
 * Storage padding (BLOCK16 float32 only). A tensor may be stored on a grid
 * larger than its image: ph x pw pixels (ph >= h, pw >= w; 0 means h, w),
 * the image in the top-left corner, so that element (ch, y, x) sits at
 * (ch/16)*ph*pw*16 + (y*pw + x)*16 + ch%16. The margin (columns w..pw-1 of
 * every row, rows h..ph-1) holds zeros: every op writing such a tensor
 * zeroes it again (nn_tensor_zero_margins). A shape-preserving convolution
 * can then run on the whole grid and read there what its zero padding
 * would have read. The dnnl backend asks for it where oneDNN's Winograd
 * wants a wider grid than the image (see its wino_plan); the C ops in ops.c
 * never see a padded tensor.
 */
#ifndef UPRES_NN_TENSOR_H
#define UPRES_NN_TENSOR_H

#include <stddef.h>

typedef enum {
    NN_LAYOUT_PLANAR = 0,
    NN_LAYOUT_BLOCK16 = 1,
    NN_LAYOUT_NHWC = 2,
} nn_layout_t;

typedef enum {
    NN_DTYPE_F32 = 0,
    NN_DTYPE_BF16 = 1,
} nn_dtype_t;

typedef struct nn_tensor {
    float *data; /* borrowed: the plan's arena (or a test buffer); uint16 storage for bf16 */
    int c, h, w; /* logical shape, no padding */
    nn_layout_t layout;
    nn_dtype_t dtype; /* NN_DTYPE_F32 (0) unless set */
    int ph, pw;       /* storage grid in pixels (>= h, w), 0: h, w (see Storage padding) */
} nn_tensor_t;

/* Storage rows and columns (the image's when not padded). */
static inline int nn_tensor_sh(const nn_tensor_t *t) { return t->ph > t->h ? t->ph : t->h; }
static inline int nn_tensor_sw(const nn_tensor_t *t) { return t->pw > t->w ? t->pw : t->w; }

/* Whether t is stored on a grid larger than its image. */
static inline int nn_tensor_padded(const nn_tensor_t *t) { return t->ph > t->h || t->pw > t->w; }

/* Bytes per element. */
static inline size_t nn_dtype_size(nn_dtype_t dtype) { return dtype == NN_DTYPE_BF16 ? 2 : 4; }

/* Channels rounded up to the layout's block. */
static inline int nn_layout_channels(nn_layout_t layout, int c) {
    return layout == NN_LAYOUT_BLOCK16 ? (c + 15) / 16 * 16 : c;
}

/* Elements the tensor occupies, padding included. */
static inline size_t nn_tensor_floats(const nn_tensor_t *t) {
    return (size_t)nn_layout_channels(t->layout, t->c) * (size_t)nn_tensor_sh(t) * (size_t)nn_tensor_sw(t);
}

/* Bytes the tensor occupies, padding included. */
static inline size_t nn_tensor_bytes(const nn_tensor_t *t) {
    return nn_tensor_floats(t) * nn_dtype_size(t->dtype);
}

/* Channel alignment at which a sub-range of channels is a valid view (NHWC: none is). */
static inline int nn_layout_align(nn_layout_t layout) { return layout == NN_LAYOUT_BLOCK16 ? 16 : 1; }

/*
 * First element of channel ch of a float32 tensor; successive pixels (x,
 * then rows of w) are *pixel_stride floats apart. Lets one loop serve every
 * layout, but not a padded tensor (whose rows are pw apart).
 */
static inline float *nn_tensor_plane(const nn_tensor_t *t, int ch, int *pixel_stride) {
    size_t hw = (size_t)t->h * (size_t)t->w;
    if (t->layout == NN_LAYOUT_BLOCK16) {
        *pixel_stride = 16;
        return t->data + (size_t)(ch / 16) * hw * 16 + (size_t)(ch % 16);
    }
    if (t->layout == NN_LAYOUT_NHWC) {
        *pixel_stride = t->c;
        return t->data + ch;
    }
    *pixel_stride = 1;
    return t->data + (size_t)ch * hw;
}

/*
 * A view of channels [c0, c0 + n) of t; c0 must be a multiple of the
 * layout's align (for NHWC only the whole tensor, c0 = 0 and n = c).
 */
static inline nn_tensor_t nn_tensor_channels(const nn_tensor_t *t, int c0, int n) {
    nn_tensor_t v = *t;
    v.data = (float *)(void *)((char *)t->data + (size_t)c0 * (size_t)nn_tensor_sh(t) *
                                                     (size_t)nn_tensor_sw(t) * nn_dtype_size(t->dtype));
    v.c = n;
    return v;
}

/* Zero the padded channel lanes of a BLOCK16 tensor (no-op otherwise). */
void nn_tensor_zero_padding(const nn_tensor_t *t);

/*
 * Zero the storage margin of a padded tensor, and its padded channel lanes
 * (no-op for a tensor that is neither).
 */
void nn_tensor_zero_margins(const nn_tensor_t *t);

/*
 * Copy between layouts, element types and storage grids (same logical
 * shape), padding lanes and margin of dst zeroed. bf16 is rounded to
 * nearest even.
 */
void nn_tensor_copy(const nn_tensor_t *dst, const nn_tensor_t *src);

#endif
