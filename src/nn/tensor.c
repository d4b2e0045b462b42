/*
 * tensor.c - the whole-tensor helpers of tensor.h: zeroing the padded
 * lanes and the storage margin of a BLOCK16 tensor and copying between
 * layouts, element types and storage grids.
 *
 * Everything else about tensors is an inline view computation in tensor.h;
 * these two loop over data, so they live here and split their work over
 * channels with OpenMP like the ops in ops.c.
 */
#include "nn/tensor.h"

#include <assert.h>
#include <stdint.h>
#include <string.h>

void nn_tensor_zero_padding(const nn_tensor_t *t) {
    if (t->layout != NN_LAYOUT_BLOCK16 || t->c % 16 == 0)
        return;
    /* Only the last block has padded lanes: channels c .. round_up(c, 16). */
    size_t hw = (size_t)nn_tensor_sh(t) * (size_t)nn_tensor_sw(t), es = nn_dtype_size(t->dtype);
    int first = t->c % 16;
    char *block = (char *)t->data + (size_t)(t->c / 16) * hw * 16 * es;
    for (size_t i = 0; i < hw; i++)
        memset(block + (i * 16 + (size_t)first) * es, 0, (size_t)(16 - first) * es);
}

void nn_tensor_zero_margins(const nn_tensor_t *t) {
    nn_tensor_zero_padding(t);
    if (!nn_tensor_padded(t))
        return;
    assert(t->layout == NN_LAYOUT_BLOCK16);
    size_t sh = (size_t)nn_tensor_sh(t), sw = (size_t)nn_tensor_sw(t), es = nn_dtype_size(t->dtype);
    size_t px = 16 * es, h = (size_t)t->h, w = (size_t)t->w;
    int n_blocks = (t->c + 15) / 16;
    for (int b = 0; b < n_blocks; b++) {
        char *blk = (char *)t->data + (size_t)b * sh * sw * px;
        if (sw > w)
            for (size_t y = 0; y < h; y++)
                memset(blk + (y * sw + w) * px, 0, (sw - w) * px);
        memset(blk + h * sw * px, 0, (sh - h) * sw * px);
    }
}

static float bf16_to_f32(uint16_t v) {
    uint32_t u = (uint32_t)v << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static uint16_t f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40); /* NaN stays a (quiet) NaN */
    u += 0x7fffu + ((u >> 16) & 1u);         /* round to nearest even */
    return (uint16_t)(u >> 16);
}

/*
 * Pixel stride and first element (in elements) of channel ch, any dtype;
 * rows are nn_tensor_sw pixels apart.
 */
static size_t plane_at(const nn_tensor_t *t, int ch, size_t *stride) {
    size_t hw = (size_t)nn_tensor_sh(t) * (size_t)nn_tensor_sw(t);
    switch (t->layout) {
    case NN_LAYOUT_BLOCK16: *stride = 16; return (size_t)(ch / 16) * hw * 16 + (size_t)(ch % 16);
    case NN_LAYOUT_NHWC: *stride = (size_t)t->c; return (size_t)ch;
    default: *stride = 1; return (size_t)ch * hw;
    }
}

void nn_tensor_copy(const nn_tensor_t *dst, const nn_tensor_t *src) {
    assert(dst->c == src->c && dst->h == src->h && dst->w == src->w);
    if (dst->layout == src->layout && dst->dtype == src->dtype && nn_tensor_sh(dst) == nn_tensor_sh(src) &&
        nn_tensor_sw(dst) == nn_tensor_sw(src)) {
        memcpy(dst->data, src->data, nn_tensor_bytes(src));
        nn_tensor_zero_margins(dst);
        return;
    }
    int c = src->c, h = src->h, w = src->w;
    size_t ssw = (size_t)nn_tensor_sw(src), dsw = (size_t)nn_tensor_sw(dst);
#pragma omp parallel for schedule(static)
    for (int ch = 0; ch < c; ch++) {
        size_t ss, ds;
        size_t so = plane_at(src, ch, &ss), dof = plane_at(dst, ch, &ds);
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                size_t si = so + ((size_t)y * ssw + (size_t)x) * ss,
                       di = dof + ((size_t)y * dsw + (size_t)x) * ds;
                float v = src->dtype == NN_DTYPE_BF16 ? bf16_to_f32(((const uint16_t *)src->data)[si])
                                                      : src->data[si];
                if (dst->dtype == NN_DTYPE_BF16)
                    ((uint16_t *)dst->data)[di] = f32_to_bf16(v);
                else
                    dst->data[di] = v;
            }
    }
    nn_tensor_zero_margins(dst);
}
