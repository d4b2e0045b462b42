/*
 * tensor.c - the two whole-tensor helpers of tensor.h: zeroing the padded
 * lanes of a BLOCK16 tensor and copying between layouts and element types.
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
    size_t hw = (size_t)t->h * (size_t)t->w, es = nn_dtype_size(t->dtype);
    int first = t->c % 16;
    char *block = (char *)t->data + (size_t)(t->c / 16) * hw * 16 * es;
    for (size_t i = 0; i < hw; i++)
        memset(block + (i * 16 + (size_t)first) * es, 0, (size_t)(16 - first) * es);
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

/* Pixel stride and first element (in elements) of channel ch, any dtype. */
static size_t plane_at(const nn_tensor_t *t, int ch, size_t *stride) {
    size_t hw = (size_t)t->h * (size_t)t->w;
    switch (t->layout) {
    case NN_LAYOUT_BLOCK16: *stride = 16; return (size_t)(ch / 16) * hw * 16 + (size_t)(ch % 16);
    case NN_LAYOUT_NHWC: *stride = (size_t)t->c; return (size_t)ch;
    default: *stride = 1; return (size_t)ch * hw;
    }
}

void nn_tensor_copy(const nn_tensor_t *dst, const nn_tensor_t *src) {
    assert(dst->c == src->c && dst->h == src->h && dst->w == src->w);
    size_t hw = (size_t)src->h * (size_t)src->w;
    if (dst->layout == src->layout && dst->dtype == src->dtype) {
        memcpy(dst->data, src->data, nn_tensor_bytes(src));
        nn_tensor_zero_padding(dst);
        return;
    }
    int c = src->c;
#pragma omp parallel for schedule(static)
    for (int ch = 0; ch < c; ch++) {
        size_t ss, ds;
        size_t so = plane_at(src, ch, &ss), dof = plane_at(dst, ch, &ds);
        for (size_t i = 0; i < hw; i++) {
            float v = src->dtype == NN_DTYPE_BF16 ? bf16_to_f32(((const uint16_t *)src->data)[so + i * ss])
                                                  : src->data[so + i * ss];
            if (dst->dtype == NN_DTYPE_BF16)
                ((uint16_t *)dst->data)[dof + i * ds] = f32_to_bf16(v);
            else
                dst->data[dof + i * ds] = v;
        }
    }
    nn_tensor_zero_padding(dst);
}
