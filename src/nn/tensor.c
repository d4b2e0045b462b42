/*
 * tensor.c - the two whole-tensor helpers of tensor.h: zeroing the padded
 * lanes of a BLOCK16 tensor and copying between layouts.
 *
 * Everything else about tensors is an inline view computation in tensor.h;
 * these two loop over data, so they live here and split their work over
 * channels with OpenMP like the ops in ops.c.
 */
#include "nn/tensor.h"

#include <assert.h>
#include <string.h>

void nn_tensor_zero_padding(const nn_tensor_t *t) {
    if (t->layout != NN_LAYOUT_BLOCK16 || t->c % 16 == 0)
        return;
    /* Only the last block has padded lanes: channels c .. round_up(c, 16). */
    size_t hw = (size_t)t->h * (size_t)t->w;
    int first = t->c % 16;
    float *block = t->data + (size_t)(t->c / 16) * hw * 16;
    for (size_t i = 0; i < hw; i++)
        memset(block + i * 16 + first, 0, (size_t)(16 - first) * sizeof(float));
}

void nn_tensor_copy(const nn_tensor_t *dst, const nn_tensor_t *src) {
    assert(dst->c == src->c && dst->h == src->h && dst->w == src->w);
    size_t hw = (size_t)src->h * (size_t)src->w;
    if (dst->layout == src->layout) {
        memcpy(dst->data, src->data, nn_tensor_floats(src) * sizeof(float));
        nn_tensor_zero_padding(dst);
        return;
    }
    int c = src->c;
#pragma omp parallel for schedule(static)
    for (int ch = 0; ch < c; ch++) {
        int ss, ds;
        const float *s = nn_tensor_plane(src, ch, &ss);
        float *d = nn_tensor_plane(dst, ch, &ds);
        for (size_t i = 0; i < hw; i++)
            d[i * (size_t)ds] = s[i * (size_t)ss];
    }
    nn_tensor_zero_padding(dst);
}
