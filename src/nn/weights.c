/*
 * weights.c - reader for ncnn's .bin weight file, and IEEE half decoding.
 *
 * The .bin has no header and no index: it is the concatenation of each
 * layer's weights in the order the layers appear in the .param, so it can
 * only be read against a parsed model (param.c). Every value is converted to
 * fp32 in arrays the layer owns (nn_model_fini frees them). The bytes come
 * from a file we did not write: every read is checked against what is left,
 * before anything is allocated for it.
 *
 * FORMAT (ncnn ModelBinFromDataReader; all little-endian):
 *
 *   layer         blob          encoding
 *   Convolution   weight_data   tagged, weight_data_size values
 *                 bias_data     raw fp32, num_output values, when bias_term
 *   PReLU         slope_data    raw fp32, num_slope values
 *   (others)      nothing
 *
 *   tagged blob:  u32 tag, then the values
 *     tag 0x01306B47   IEEE fp16, 2 bytes each, then zero to 2 bytes of
 *                      padding so that the blob ends on a 4-byte boundary
 *     tag 0x00000000   fp32, 4 bytes each
 *     (ncnn's int8 0x000D4B38 and 256-entry table forms are not supported)
 *   raw fp32 blob: the values, 4 bytes each, no tag
 *
 * The file must end exactly after the last layer's weights: bytes left over
 * mean the .bin belongs to another .param.
 */
#include "nn/model.h"

#include <assert.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "core/xmalloc.h"

#define TAG_FP16 0x01306B47u
#define TAG_FP32 0x00000000u

typedef struct {
    const unsigned char *p;
    size_t size;
    size_t pos; /* bytes consumed */
    const nn_layer_t *layer;
    up_error_t *err;
} reader_t;

float nn_half_to_float(unsigned short h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    uint32_t bits;

    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (mant << 13); /* inf, or nan keeping its payload */
    } else if (exp != 0) {
        bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    } else if (mant == 0) {
        bits = sign; /* +-0 */
    } else {
        /* subnormal: mant * 2^-24; shift the leading 1 into the implicit bit */
        int e = -14;
        while (!(mant & 0x400u)) {
            mant <<= 1;
            e--;
        }
        bits = sign | ((uint32_t)(e + 127) << 23) | ((mant & 0x3ffu) << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static uint32_t get_u32le(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static float get_f32le(const unsigned char *p) {
    uint32_t bits = get_u32le(p);
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/*
 * Read n values of one weight blob into *out (new, 64-byte aligned).
 * tagged: a tag selects fp16 or fp32; else raw fp32.
 */
static int read_blob(reader_t *rd, const char *what, size_t n, int tagged, float **out) {
    const nn_layer_t *l = rd->layer;
    size_t left = rd->size - rd->pos, bytes, value_size = 4;
    uint32_t tag = TAG_FP32;

    if (tagged) {
        if (left < 4)
            return up_error_set(rd->err, UP_ERR_FORMAT, 0,
                                "layer %s (line %d): %s needs a 4-byte tag at byte offset %zu, but only "
                                "%zu bytes are left",
                                l->name, l->line, what, rd->pos, left);
        tag = get_u32le(rd->p + rd->pos);
        if (tag != TAG_FP16 && tag != TAG_FP32)
            return up_error_set(rd->err, UP_ERR_FORMAT, 0,
                                "layer %s (line %d): unsupported weight tag 0x%08x at byte offset %zu",
                                l->name, l->line, (unsigned)tag, rd->pos);
        rd->pos += 4;
        left -= 4;
        if (tag == TAG_FP16)
            value_size = 2;
    }
    if (up_mul_overflow(n, value_size, &bytes) || bytes > SIZE_MAX - 3)
        return up_error_set(rd->err, UP_ERR_FORMAT, 0, "layer %s (line %d): %s is too large", l->name,
                            l->line, what);
    bytes = (bytes + 3) & ~(size_t)3; /* fp16 blobs end on a 4-byte boundary */
    if (left < bytes)
        return up_error_set(rd->err, UP_ERR_FORMAT, 0,
                            "layer %s (line %d): %s needs %zu bytes (%zu %s values) at byte offset "
                            "%zu, but only %zu bytes are left",
                            l->name, l->line, what, bytes, n, value_size == 2 ? "fp16" : "fp32", rd->pos,
                            left);

    float *v = up_aligned_alloc(n, sizeof *v);
    if (!v)
        return up_error_set(rd->err, UP_ERR_NOMEM, 0, "layer %s (line %d): out of memory for %zu %s values",
                            l->name, l->line, n, what);
    const unsigned char *src = rd->p + rd->pos;
    for (size_t i = 0; i < n; i++) {
        if (value_size == 2)
            v[i] = nn_half_to_float((unsigned short)(src[2 * i] | src[2 * i + 1] << 8));
        else
            v[i] = get_f32le(src + 4 * i);
        if (!isfinite(v[i])) {
            int rc = up_error_set(rd->err, UP_ERR_FORMAT, 0,
                                  "layer %s (line %d): %s value %zu (byte offset %zu) is not a finite number",
                                  l->name, l->line, what, i, rd->pos + i * value_size);
            up_aligned_free(v);
            return rc;
        }
    }
    rd->pos += bytes;
    *out = v;
    return 0;
}

int nn_weights_load(nn_model_t *model, const void *bin, size_t size, up_error_t *err) {
    reader_t rd = {.p = bin, .size = bin ? size : 0, .pos = 0, .layer = NULL, .err = err};
    int rc;

    for (int li = 0; li < model->n_layers; li++) {
        nn_layer_t *l = &model->layers[li];
        rd.layer = l;
        if (l->op == NN_OP_CONV) {
            nn_conv_param_t *c = &l->p.conv;
            assert(!c->weight && !c->bias);
            if ((rc = read_blob(&rd, "weight_data", (size_t)c->weight_data_size, 1, &c->weight)))
                return rc;
            if (c->bias_term && (rc = read_blob(&rd, "bias_data", (size_t)c->n_out, 0, &c->bias)))
                return rc;
        } else if (l->op == NN_OP_PRELU) {
            assert(!l->p.prelu.slope);
            if ((rc = read_blob(&rd, "slope_data", (size_t)l->p.prelu.n_slope, 0, &l->p.prelu.slope)))
                return rc;
        }
    }
    if (rd.pos != rd.size)
        return up_error_set(err, UP_ERR_FORMAT, 0,
                            "%zu bytes are left over after the last layer's weights (%zu of %zu used): "
                            "the .bin does not match the .param",
                            rd.size - rd.pos, rd.pos, rd.size);
    return 0;
}
