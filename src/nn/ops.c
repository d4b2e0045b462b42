/*
 * ops.c - every op of the engine in plain C, generic over tensor layout.
 *
 * The ref backend runs all of these; other backends run the ones they have
 * no primitive for. Each op reads and writes channels through
 * nn_tensor_plane(), which gives a channel's first element and the distance
 * between its pixels (1 for PLANAR, 16 for BLOCK16), so one loop serves any
 * mix of layouts. Outputs in BLOCK16 get their padded lanes zeroed at the end.
 *
 * Semantics follow ncnn's layers formula for formula (ncnn made the
 * reference outputs), noted at each op. Arithmetic is evaluated in the same
 * order as ncnn's plain C paths; only the convolution sums in its own order.
 *
 * DESIGN
 *   Threads: each op splits its outermost loop (channels, or output rows for
 *   the convolution) with `#pragma omp parallel for`, using the calling
 *   thread's OpenMP team size; the ops keep no state between calls.
 *   Memory: only nn_op_conv allocates, one row buffer per thread per call
 *   (input rows with padding, sized by the layer); should that fail it falls
 *   back to a slower direct loop that needs none. Interp computes its
 *   coefficients on the fly instead of keeping tables.
 */
#include "nn/ops.h"

#include <assert.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* ---- activations (ncnn fused_activation.h, activation_ss) ---- */

static inline float act_one(nn_act_t act, const float params[2], float v) {
    switch (act) {
    case NN_ACT_NONE: return v;
    case NN_ACT_RELU:
        /* ncnn ReLU layer: slope 0 is max(v, 0), else a leaky slope. */
        if (params[0] == 0.f)
            return v > 0.f ? v : 0.f;
        return v < 0.f ? v * params[0] : v;
    case NN_ACT_LEAKY: return v > 0.f ? v : v * params[0];
    case NN_ACT_CLIP:
        if (v < params[0])
            v = params[0];
        if (v > params[1])
            v = params[1];
        return v;
    case NN_ACT_SIGMOID:
        /* ncnn clamps the argument so expf neither overflows nor flushes. */
        v = v < 88.3762626647949f ? v : 88.3762626647949f;
        v = v > -88.3762626647949f ? v : -88.3762626647949f;
        return 1.f / (1.f + expf(-v));
    }
    return v;
}

void nn_op_activation(nn_act_t act, const float params[2], float *x, size_t n) {
    if (act == NN_ACT_NONE)
        return;
    for (size_t i = 0; i < n; i++)
        x[i] = act_one(act, params, x[i]);
}

/* ---- convolution ---- */

/*
 * Geometry shared by the row kernels: padded input width, kernel extents.
 */
typedef struct conv_geom {
    int pw;     /* padded input row width, pixels */
    int ow, oh; /* output size */
    int kw, kh, dw, dh, sw, sh;
    size_t rows_n; /* floats of the padded row buffer: n_in * kh * pw */
} conv_geom_t;

/*
 * Bias, fused activation, then the planner's epilogue for one value v of
 * output channel oc; s is the matching element of epi->sum or NULL.
 */
static inline float conv_finish(const nn_conv_param_t *p, const nn_epilogue_t *epi, int oc, float v,
                                const float *s) {
    v += p->bias ? p->bias[oc] : 0.f;
    v = act_one(p->act, p->act_params, v);
    if (!epi)
        return v;
    if (epi->prelu) {
        float slope = epi->prelu->n_slope > 1 ? epi->prelu->slope[oc] : epi->prelu->slope[0];
        if (v < 0.f)
            v *= slope;
    }
    return epi->scale * v + (s ? *s : 0.f);
}

/* Finish one output row of channel oc (ow sums in acc) into out row oy. */
static void conv_finish_row(const nn_conv_param_t *p, const nn_epilogue_t *epi, int oc, int oy,
                            const float *acc, int ow, const nn_tensor_t *out) {
    int os, ss = 0;
    float *o = nn_tensor_plane(out, oc, &os) + (size_t)oy * out->w * os;
    const float *s = NULL;
    if (epi && epi->sum)
        s = nn_tensor_plane(epi->sum, oc, &ss) + (size_t)oy * out->w * ss;
    /* sum may be out itself: each element is read before it is written. */
    for (int x = 0; x < ow; x++)
        o[(size_t)x * os] = conv_finish(p, epi, oc, acc[x], s ? s + (size_t)x * ss : NULL);
}

/*
 * Fill rows (n_in x kh rows of pw floats) with the input rows that output
 * row oy reads, padding columns and out-of-range rows set to pad_value.
 */
static void conv_fill_rows(const nn_conv_param_t *p, const conv_geom_t *g, const nn_tensor_t *in, int oy,
                           float *rows) {
    for (int q = 0; q < p->n_in; q++) {
        int is;
        const float *plane = nn_tensor_plane(in, q, &is);
        for (int ky = 0; ky < g->kh; ky++) {
            float *r = rows + ((size_t)q * g->kh + ky) * g->pw;
            int iy = oy * g->sh - p->pad_top + ky * g->dh;
            if (iy < 0 || iy >= in->h) {
                for (int x = 0; x < g->pw; x++)
                    r[x] = p->pad_value;
                continue;
            }
            const float *s = plane + (size_t)iy * in->w * is;
            for (int x = 0; x < p->pad_left; x++)
                r[x] = p->pad_value;
            if (is == 1) {
                memcpy(r + p->pad_left, s, (size_t)in->w * sizeof(float));
            } else {
                for (int x = 0; x < in->w; x++)
                    r[p->pad_left + x] = s[(size_t)x * is];
            }
            for (int x = p->pad_left + in->w; x < g->pw; x++)
                r[x] = p->pad_value;
        }
    }
}

/* acc[x] = sum over inputs and taps for output channel oc, from padded rows. */
static void conv_accumulate(const nn_conv_param_t *p, const conv_geom_t *g, int oc, const float *rows,
                            float *acc) {
    const int ow = g->ow, kw = g->kw, kh = g->kh;
    memset(acc, 0, (size_t)ow * sizeof(float));
    const float *wp = p->weight + (size_t)oc * p->n_in * kh * kw;
    for (int q = 0; q < p->n_in; q++) {
        for (int ky = 0; ky < kh; ky++, wp += kw) {
            const float *r = rows + ((size_t)q * kh + ky) * g->pw;
            if (g->sw == 1 && g->dw == 1 && kw == 3) {
                /* The 3x3 case of every model: three taps per pass over acc. */
                const float w0 = wp[0], w1 = wp[1], w2 = wp[2];
#pragma omp simd
                for (int x = 0; x < ow; x++)
                    acc[x] += w0 * r[x] + w1 * r[x + 1] + w2 * r[x + 2];
            } else if (g->sw == 1) {
                for (int kx = 0; kx < kw; kx++) {
                    const float wv = wp[kx];
                    const float *rk = r + kx * g->dw;
#pragma omp simd
                    for (int x = 0; x < ow; x++)
                        acc[x] += wv * rk[x];
                }
            } else {
                for (int kx = 0; kx < kw; kx++) {
                    const float wv = wp[kx];
                    const float *rk = r + kx * g->dw;
                    for (int x = 0; x < ow; x++)
                        acc[x] += wv * rk[(size_t)x * g->sw];
                }
            }
        }
    }
}

/*
 * The fallback when a per-call row buffer could not be had: each output
 * value summed straight from the input with bounds checks.
 */
static void conv_direct_row(const nn_conv_param_t *p, const nn_epilogue_t *epi, const conv_geom_t *g,
                            const nn_tensor_t *in, int oy, const nn_tensor_t *out) {
    for (int oc = 0; oc < p->n_out; oc++) {
        for (int ox = 0; ox < g->ow; ox++) {
            float sum = 0.f;
            const float *wp = p->weight + (size_t)oc * p->n_in * g->kh * g->kw;
            for (int q = 0; q < p->n_in; q++) {
                int is;
                const float *plane = nn_tensor_plane(in, q, &is);
                for (int ky = 0; ky < g->kh; ky++) {
                    int iy = oy * g->sh - p->pad_top + ky * g->dh;
                    for (int kx = 0; kx < g->kw; kx++, wp++) {
                        int ix = ox * g->sw - p->pad_left + kx * g->dw;
                        float v = p->pad_value;
                        if (iy >= 0 && iy < in->h && ix >= 0 && ix < in->w)
                            v = plane[((size_t)iy * in->w + ix) * is];
                        sum += *wp * v;
                    }
                }
            }
            int os, ss;
            float *o = nn_tensor_plane(out, oc, &os) + ((size_t)oy * out->w + ox) * os;
            const float *s = NULL;
            if (epi && epi->sum)
                s = nn_tensor_plane(epi->sum, oc, &ss) + ((size_t)oy * out->w + ox) * ss;
            *o = conv_finish(p, epi, oc, sum, s);
        }
    }
}

/* Floats one thread needs: the padded rows of every input channel, and an accumulator row. */
static size_t conv_thread_floats(const nn_conv_param_t *p, const nn_tensor_t *in, const nn_tensor_t *out) {
    size_t pw = (size_t)in->w + (size_t)p->pad_left + (size_t)p->pad_right;
    return (size_t)p->n_in * (size_t)p->kernel_h * pw + (size_t)out->w;
}

void nn_conv_scratch_plan(nn_conv_scratch_t *s, const nn_conv_param_t *p, const nn_tensor_t *in,
                          const nn_tensor_t *out, int n_threads) {
    s->buf = NULL;
    s->n_threads = n_threads > 0 ? n_threads : 1;
    s->per_thread = (conv_thread_floats(p, in, out) + 15) / 16 * 16; /* keep slices 64-byte aligned */
}

size_t nn_conv_scratch_bytes(const nn_conv_scratch_t *s) {
    return s->per_thread * (size_t)s->n_threads * sizeof(float);
}

void nn_op_conv(const nn_conv_param_t *p, const nn_epilogue_t *epi, const nn_tensor_t *in,
                const nn_tensor_t *out, const nn_conv_scratch_t *scratch) {
    conv_geom_t g;
    g.kw = p->kernel_w, g.kh = p->kernel_h;
    g.dw = p->dilation_w, g.dh = p->dilation_h;
    g.sw = p->stride_w, g.sh = p->stride_h;
    g.pw = in->w + p->pad_left + p->pad_right;
    g.ow = out->w, g.oh = out->h;
    g.rows_n = (size_t)p->n_in * g.kh * g.pw;
    assert(in->c == p->n_in && out->c == p->n_out);
    assert(g.ow == (g.pw - (g.dw * (g.kw - 1) + 1)) / g.sw + 1);
    assert(g.oh == (in->h + p->pad_top + p->pad_bottom - (g.dh * (g.kh - 1) + 1)) / g.sh + 1);
    assert(!epi || !epi->sum || (epi->sum->c == out->c && epi->sum->h == out->h && epi->sum->w == out->w));
    assert(!scratch || (scratch->buf && scratch->per_thread >= conv_thread_floats(p, in, out)));

    int n_threads = scratch ? scratch->n_threads : omp_get_max_threads();
#pragma omp parallel num_threads(n_threads)
    {
        float *buf = scratch ? scratch->buf + scratch->per_thread * (size_t)omp_get_thread_num()
                             : malloc(conv_thread_floats(p, in, out) * sizeof(float));
#pragma omp for schedule(static)
        for (int oy = 0; oy < g.oh; oy++) {
            if (!buf) {
                conv_direct_row(p, epi, &g, in, oy, out);
                continue;
            }
            float *acc = buf + g.rows_n;
            conv_fill_rows(p, &g, in, oy, buf);
            for (int oc = 0; oc < p->n_out; oc++) {
                conv_accumulate(p, &g, oc, buf, acc);
                conv_finish_row(p, epi, oc, oy, acc, g.ow, out);
            }
        }
        if (!scratch)
            free(buf);
    }
    nn_tensor_zero_padding(out);
}

/* ---- PReLU (ncnn prelu.cpp: if (v < 0) v *= slope) ---- */

void nn_op_prelu(const nn_prelu_param_t *p, const nn_tensor_t *in, const nn_tensor_t *out) {
    assert(in->c == out->c && in->h == out->h && in->w == out->w);
    assert(p->n_slope == 1 || p->n_slope == in->c);
    size_t hw = (size_t)in->h * (size_t)in->w;
    int c = in->c;
#pragma omp parallel for schedule(static)
    for (int ch = 0; ch < c; ch++) {
        float slope = p->n_slope > 1 ? p->slope[ch] : p->slope[0];
        int is, os;
        const float *s = nn_tensor_plane(in, ch, &is);
        float *d = nn_tensor_plane(out, ch, &os);
        for (size_t i = 0; i < hw; i++) {
            float v = s[i * is];
            d[i * os] = v < 0.f ? v * slope : v;
        }
    }
    nn_tensor_zero_padding(out);
}

/* ---- Eltwise (ncnn eltwise.cpp) ---- */

void nn_op_eltwise(const nn_eltwise_param_t *p, const nn_tensor_t *in, int n_in, const nn_tensor_t *out) {
    assert(n_in >= 2);
    assert(p->n_coeffs == 0 || p->n_coeffs >= n_in);
    size_t hw = (size_t)out->h * (size_t)out->w;
    int c = out->c;
#pragma omp parallel for schedule(static)
    for (int ch = 0; ch < c; ch++) {
        int os, s0, s1;
        float *d = nn_tensor_plane(out, ch, &os);
        const float *a = nn_tensor_plane(&in[0], ch, &s0);
        const float *b = nn_tensor_plane(&in[1], ch, &s1);
        /* First two inputs make the output, the rest fold into it, in order. */
        switch (p->op) {
        case NN_ELTWISE_PROD:
            for (size_t i = 0; i < hw; i++)
                d[i * os] = a[i * s0] * b[i * s1];
            break;
        case NN_ELTWISE_SUM:
            if (p->n_coeffs == 0) {
                for (size_t i = 0; i < hw; i++)
                    d[i * os] = a[i * s0] + b[i * s1];
            } else {
                const float c0 = p->coeffs[0], c1 = p->coeffs[1];
                for (size_t i = 0; i < hw; i++)
                    d[i * os] = a[i * s0] * c0 + b[i * s1] * c1;
            }
            break;
        case NN_ELTWISE_MAX:
            for (size_t i = 0; i < hw; i++) {
                float x = a[i * s0], y = b[i * s1];
                d[i * os] = x < y ? y : x; /* std::max */
            }
            break;
        }
        for (int k = 2; k < n_in; k++) {
            int ks;
            const float *e = nn_tensor_plane(&in[k], ch, &ks);
            switch (p->op) {
            case NN_ELTWISE_PROD:
                for (size_t i = 0; i < hw; i++)
                    d[i * os] *= e[i * ks];
                break;
            case NN_ELTWISE_SUM:
                if (p->n_coeffs == 0) {
                    for (size_t i = 0; i < hw; i++)
                        d[i * os] += e[i * ks];
                } else {
                    const float ck = p->coeffs[k];
                    for (size_t i = 0; i < hw; i++)
                        d[i * os] += e[i * ks] * ck;
                }
                break;
            case NN_ELTWISE_MAX:
                for (size_t i = 0; i < hw; i++) {
                    float x = d[i * os], y = e[i * ks];
                    d[i * os] = x < y ? y : x;
                }
                break;
            }
        }
    }
    nn_tensor_zero_padding(out);
}

/* ---- BinaryOp (ncnn binaryop.cpp functors) ---- */

static inline float binary_one(nn_binary_op_t op, float x, float y) {
    switch (op) {
    case NN_BINARY_ADD: return x + y;
    case NN_BINARY_SUB: return x - y;
    case NN_BINARY_MUL: return x * y;
    case NN_BINARY_DIV: return x / y;
    case NN_BINARY_MAX: return x < y ? y : x; /* std::max */
    case NN_BINARY_MIN: return y < x ? y : x; /* std::min */
    case NN_BINARY_POW: return powf(x, y);
    case NN_BINARY_RSUB: return y - x;
    case NN_BINARY_RDIV: return y / x;
    }
    return x;
}

void nn_op_binary(const nn_binary_param_t *p, const nn_tensor_t *in, int n_in, const nn_tensor_t *out) {
    assert(p->with_scalar ? n_in >= 1 : n_in >= 2);
    size_t hw = (size_t)out->h * (size_t)out->w;
    int c = out->c;
#pragma omp parallel for schedule(static)
    for (int ch = 0; ch < c; ch++) {
        int os, as;
        float *d = nn_tensor_plane(out, ch, &os);
        const float *a = nn_tensor_plane(&in[0], ch, &as);
        if (p->with_scalar) {
            for (size_t i = 0; i < hw; i++)
                d[i * os] = binary_one(p->op, a[i * as], p->b);
        } else {
            int bs;
            const float *b = nn_tensor_plane(&in[1], ch, &bs);
            for (size_t i = 0; i < hw; i++)
                d[i * os] = binary_one(p->op, a[i * as], b[i * bs]);
        }
    }
    nn_tensor_zero_padding(out);
}

/* ---- Interp (ncnn interp.cpp, interp_bilinear.h, interp_bicubic.h) ---- */

/*
 * Source position of output index d along an axis of in -> out samples, as
 * ncnn's linear_coeffs/cubic_coeffs: scale = in/out in double, the position
 * (d + 0.5) * scale - 0.5 rounded to float (align_corner: d * (in-1)/(out-1)),
 * split into floor and fraction.
 */
static inline void interp_pos(int d, int n_in, int n_out, int align_corner, int *s, float *f) {
    float fx;
    if (align_corner) {
        double scale = n_out > 1 ? (double)(n_in - 1) / (n_out - 1) : 0.0;
        fx = (float)(d * scale);
    } else {
        double scale = (double)n_in / n_out;
        fx = (float)((d + 0.5) * scale - 0.5);
    }
    int sx = (int)floorf(fx);
    *s = sx;
    *f = fx - (float)sx;
}

/* Bilinear tap at index s with weights a[0], a[1] (ncnn linear_coeffs border rules). */
static inline void linear_coeffs_at(int d, int n_in, int n_out, int align_corner, int *s, float a[2]) {
    int sx;
    float fx;
    interp_pos(d, n_in, n_out, align_corner, &sx, &fx);
    if (sx < 0) {
        sx = 0;
        fx = 0.f;
    }
    if (sx >= n_in - 1) {
        sx = n_in - 2;
        fx = 1.f;
    }
    *s = sx;
    a[0] = 1.f - fx;
    a[1] = fx;
}

/*
 * Bicubic taps s-1 .. s+2 with weights a[0..3]: Keys' kernel with A = -0.75
 * (ncnn interpolate_cubic, the OpenCV choice), then ncnn's border rules,
 * which fold the weights of taps outside the image onto the edge pixels.
 * The rules run one after another as in ncnn (each may move s again).
 */
static inline void cubic_coeffs_at(int d, int n_in, int n_out, int align_corner, int *s, float a[4]) {
    int sx;
    float fx;
    interp_pos(d, n_in, n_out, align_corner, &sx, &fx);
    const float A = -0.75f;
    float fx0 = fx + 1, fx1 = fx, fx2 = 1 - fx;
    a[0] = A * fx0 * fx0 * fx0 - 5 * A * fx0 * fx0 + 8 * A * fx0 - 4 * A;
    a[1] = (A + 2) * fx1 * fx1 * fx1 - (A + 3) * fx1 * fx1 + 1;
    a[2] = (A + 2) * fx2 * fx2 * fx2 - (A + 3) * fx2 * fx2 + 1;
    a[3] = 1.f - a[0] - a[1] - a[2];
    if (sx <= -1) {
        sx = 1;
        a[0] = 1.f - a[3];
        a[1] = a[3];
        a[2] = 0.f;
        a[3] = 0.f;
    }
    if (sx == 0) {
        sx = 1;
        a[0] = a[0] + a[1];
        a[1] = a[2];
        a[2] = a[3];
        a[3] = 0.f;
    }
    if (sx == n_in - 2) {
        sx = n_in - 3;
        a[3] = a[2] + a[3];
        a[2] = a[1];
        a[1] = a[0];
        a[0] = 0.f;
    }
    if (sx >= n_in - 1) {
        sx = n_in - 3;
        a[3] = 1.f - a[0];
        a[2] = a[0];
        a[1] = 0.f;
        a[0] = 0.f;
    }
    *s = sx;
}

/*
 * ncnn reads outside the image when an axis is shorter than the kernel
 * (bilinear < 2, bicubic < 4 pixels); we clamp such reads to the edge.
 */
static inline int clampi(int v, int n) { return v < 0 ? 0 : v >= n ? n - 1 : v; }

void nn_op_interp(const nn_interp_param_t *p, const nn_tensor_t *in, const nn_tensor_t *out) {
    assert(in->c == out->c);
    const int w = in->w, h = in->h, ow = out->w, oh = out->h;
    const int c = in->c;
    if (ow == w && oh == h) {
        /* ncnn passes the blob through unchanged. */
        nn_tensor_copy(out, in);
        return;
    }
    const int ac = p->align_corner;

    if (p->type == NN_INTERP_NEAREST) {
        /* ncnn: in_y = min((int)(y * hs), h - 1), hs = h / (float)outh for a
           fixed output size, else 1.f / height_scale. */
        const float hs = p->out_h ? (float)h / (float)oh : 1.f / p->height_scale;
        const float ws = p->out_w ? (float)w / (float)ow : 1.f / p->width_scale;
#pragma omp parallel for schedule(static)
        for (int ch = 0; ch < c; ch++) {
            int is, os;
            const float *s = nn_tensor_plane(in, ch, &is);
            float *d = nn_tensor_plane(out, ch, &os);
            for (int y = 0; y < oh; y++) {
                int iy = (int)((float)y * hs);
                iy = iy < h - 1 ? iy : h - 1;
                const float *sr = s + (size_t)iy * w * is;
                float *dr = d + (size_t)y * ow * os;
                for (int x = 0; x < ow; x++) {
                    int ix = (int)((float)x * ws);
                    ix = ix < w - 1 ? ix : w - 1;
                    dr[(size_t)x * os] = sr[(size_t)ix * is];
                }
            }
        }
    } else if (p->type == NN_INTERP_BILINEAR) {
#pragma omp parallel for schedule(static)
        for (int ch = 0; ch < c; ch++) {
            int is, os;
            const float *s = nn_tensor_plane(in, ch, &is);
            float *d = nn_tensor_plane(out, ch, &os);
            for (int y = 0; y < oh; y++) {
                int sy;
                float b[2];
                linear_coeffs_at(y, h, oh, ac, &sy, b);
                const float *r0 = s + (size_t)clampi(sy, h) * w * is;
                const float *r1 = s + (size_t)clampi(sy + 1, h) * w * is;
                float *dr = d + (size_t)y * ow * os;
                for (int x = 0; x < ow; x++) {
                    int sx;
                    float a[2];
                    linear_coeffs_at(x, w, ow, ac, &sx, a);
                    size_t x0 = (size_t)clampi(sx, w) * is, x1 = (size_t)clampi(sx + 1, w) * is;
                    /* ncnn: horizontal pass into two rows, then the vertical mix. */
                    float h0 = r0[x0] * a[0] + r0[x1] * a[1];
                    float h1 = r1[x0] * a[0] + r1[x1] * a[1];
                    dr[(size_t)x * os] = h0 * b[0] + h1 * b[1];
                }
            }
        }
    } else {
        assert(p->type == NN_INTERP_BICUBIC);
#pragma omp parallel for schedule(static)
        for (int ch = 0; ch < c; ch++) {
            int is, os;
            const float *s = nn_tensor_plane(in, ch, &is);
            float *d = nn_tensor_plane(out, ch, &os);
            for (int y = 0; y < oh; y++) {
                int sy;
                float b[4];
                cubic_coeffs_at(y, h, oh, ac, &sy, b);
                const float *r[4];
                for (int k = 0; k < 4; k++)
                    r[k] = s + (size_t)clampi(sy - 1 + k, h) * w * is;
                float *dr = d + (size_t)y * ow * os;
                for (int x = 0; x < ow; x++) {
                    int sx;
                    float a[4];
                    cubic_coeffs_at(x, w, ow, ac, &sx, a);
                    size_t xi[4];
                    for (int k = 0; k < 4; k++)
                        xi[k] = (size_t)clampi(sx - 1 + k, w) * is;
                    float hr[4];
                    for (int k = 0; k < 4; k++)
                        hr[k] =
                            r[k][xi[0]] * a[0] + r[k][xi[1]] * a[1] + r[k][xi[2]] * a[2] + r[k][xi[3]] * a[3];
                    dr[(size_t)x * os] = hr[0] * b[0] + hr[1] * b[1] + hr[2] * b[2] + hr[3] * b[3];
                }
            }
        }
    }
    nn_tensor_zero_padding(out);
}

/* ---- PixelShuffle (ncnn pixelshuffle.cpp) ---- */

void nn_op_pixelshuffle(const nn_pixelshuffle_param_t *p, const nn_tensor_t *in, const nn_tensor_t *out) {
    const int r = p->factor, w = in->w, h = in->h, oc = out->c;
    assert(in->c == oc * r * r && out->h == h * r && out->w == w * r);
#pragma omp parallel for schedule(static)
    for (int ch = 0; ch < oc; ch++) {
        int os;
        float *d = nn_tensor_plane(out, ch, &os);
        for (int sh = 0; sh < r; sh++) {
            for (int sw = 0; sw < r; sw++) {
                /* mode 0: PyTorch DepthToSpace/pixel_shuffle order; 1: the other. */
                int q = p->mode == 0 ? ch * r * r + sh * r + sw : (sh * r + sw) * oc + ch;
                int is;
                const float *s = nn_tensor_plane(in, q, &is);
                for (int y = 0; y < h; y++) {
                    const float *sr = s + (size_t)y * w * is;
                    float *dr = d + ((size_t)(y * r + sh) * out->w + sw) * os;
                    for (int x = 0; x < w; x++)
                        dr[(size_t)x * r * os] = sr[(size_t)x * is];
                }
            }
        }
    }
    nn_tensor_zero_padding(out);
}

/* ---- Concat along channels ---- */

void nn_op_concat(const nn_tensor_t *in, int n_in, const nn_tensor_t *out) {
    size_t hw = (size_t)out->h * (size_t)out->w;
    int c0 = 0;
    for (int k = 0; k < n_in; k++) {
        assert(in[k].h == out->h && in[k].w == out->w);
        const nn_tensor_t *src = &in[k];
        int c = src->c, base = c0;
#pragma omp parallel for schedule(static)
        for (int ch = 0; ch < c; ch++) {
            int is, os;
            const float *s = nn_tensor_plane(src, ch, &is);
            float *d = nn_tensor_plane(out, base + ch, &os);
            if (is == 1 && os == 1) {
                memcpy(d, s, hw * sizeof(float));
            } else {
                for (size_t i = 0; i < hw; i++)
                    d[i * os] = s[i * is];
            }
        }
        c0 += c;
    }
    assert(c0 == out->c);
    nn_tensor_zero_padding(out);
}

/* ---- dispatch ---- */

int nn_op_run(const nn_layer_t *layer, const nn_epilogue_t *epi, const nn_conv_scratch_t *scratch,
              const nn_tensor_t *in, int n_in, const nn_tensor_t *out, up_error_t *err) {
    /*
     * the loops here are float32 on unpadded grids only: a bf16 or padded
     * tensor reaching them is a planning bug
     */
    int bad = out[0].dtype != NN_DTYPE_F32 || nn_tensor_padded(&out[0]) ||
              (epi && epi->sum && (epi->sum->dtype != NN_DTYPE_F32 || nn_tensor_padded(epi->sum)));
    for (int k = 0; k < n_in; k++)
        bad |= in[k].dtype != NN_DTYPE_F32 || nn_tensor_padded(&in[k]);
    if (bad)
        return up_error_set(err, UP_ERR_UNSUPPORTED, layer->line,
                            "layer %s '%s' (line %d): the C ops take unpadded float32 tensors only",
                            layer->type, layer->name, layer->line);
    switch (layer->op) {
    case NN_OP_CONV: nn_op_conv(&layer->p.conv, epi, &in[0], &out[0], scratch); return 0;
    case NN_OP_PRELU: nn_op_prelu(&layer->p.prelu, &in[0], &out[0]); return 0;
    case NN_OP_CONCAT: nn_op_concat(in, n_in, &out[0]); return 0;
    case NN_OP_ELTWISE: nn_op_eltwise(&layer->p.eltwise, in, n_in, &out[0]); return 0;
    case NN_OP_BINARY: nn_op_binary(&layer->p.binary, in, n_in, &out[0]); return 0;
    case NN_OP_INTERP: nn_op_interp(&layer->p.interp, &in[0], &out[0]); return 0;
    case NN_OP_PIXELSHUFFLE: nn_op_pixelshuffle(&layer->p.pixelshuffle, &in[0], &out[0]); return 0;
    default: break;
    }
    return up_error_set(err, UP_ERR_UNSUPPORTED, layer->line, "layer %s '%s' (line %d) cannot run as an op",
                        layer->type, layer->name, layer->line);
}
