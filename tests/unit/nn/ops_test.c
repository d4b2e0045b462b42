/*
 * ops_test.c - tests of src/nn/ops.c, shape.c, tensor.c and the ref backend.
 *
 * Three kinds of checks: small cases worked out by hand from ncnn's
 * formulas; ops against slow, independent implementations written here
 * (double precision, clamp-to-edge resampling, bounds-checked convolution);
 * and every op run on PLANAR and BLOCK16 tensors in all combinations, which
 * must give bit-identical results with the BLOCK16 padding lanes zeroed.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn/backend/backend.h"
#include "core/xmalloc.h"
#include "nn/ops.h"
#include "nn/tensor.h"
#include "test.h"

/* ---- helpers ---- */

static unsigned rng_state = 12345u;

static float frand(void) { /* uniform in [-1, 1) */
    rng_state = rng_state * 1664525u + 1013904223u;
    return (float)(rng_state >> 8) / (float)(1u << 23) - 1.f;
}

static void fill_rand(float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        x[i] = frand();
}

/* A tensor with its own buffer, every float (padding too) set to garbage. */
static nn_tensor_t tensor_new(int c, int h, int w, nn_layout_t layout) {
    nn_tensor_t t = {NULL, c, h, w, layout, NN_DTYPE_F32, 0, 0};
    size_t n = nn_tensor_floats(&t);
    t.data = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        t.data[i] = 1234.5f;
    return t;
}

static void tensor_free(nn_tensor_t *t) {
    free(t->data);
    t->data = NULL;
}

static float *at(const nn_tensor_t *t, int ch, int y, int x) {
    int s;
    float *p = nn_tensor_plane(t, ch, &s);
    return p + ((size_t)y * t->w + x) * s;
}

static void tensor_set(const nn_tensor_t *t, const float *planar) {
    for (int ch = 0; ch < t->c; ch++)
        for (int y = 0; y < t->h; y++)
            for (int x = 0; x < t->w; x++)
                *at(t, ch, y, x) = planar[((size_t)ch * t->h + y) * t->w + x];
}

static void tensor_get(const nn_tensor_t *t, float *planar) {
    for (int ch = 0; ch < t->c; ch++)
        for (int y = 0; y < t->h; y++)
            for (int x = 0; x < t->w; x++)
                planar[((size_t)ch * t->h + y) * t->w + x] = *at(t, ch, y, x);
}

/* A tensor of the layout holding the given planar values (padding garbage). */
static nn_tensor_t tensor_from(const float *planar, int c, int h, int w, nn_layout_t layout) {
    nn_tensor_t t = tensor_new(c, h, w, layout);
    tensor_set(&t, planar);
    return t;
}

/* 1 when every padded lane of a BLOCK16 tensor is 0. */
static int padding_zero(const nn_tensor_t *t) {
    if (t->layout != NN_LAYOUT_BLOCK16)
        return 1;
    int cp = nn_layout_channels(t->layout, t->c);
    size_t hw = (size_t)t->h * t->w;
    for (int ch = t->c; ch < cp; ch++)
        for (size_t i = 0; i < hw; i++)
            if (t->data[(size_t)(ch / 16) * hw * 16 + i * 16 + ch % 16] != 0.f)
                return 0;
    return 1;
}

static double max_abs_diff(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= m)) /* NaN counts as a difference */
            m = isnan(d) ? INFINITY : d;
    }
    return m;
}

static int near(float a, float b) { return fabsf(a - b) <= 1e-5f * (1.f + fabsf(b)); }

static const nn_layout_t layouts[2] = {NN_LAYOUT_PLANAR, NN_LAYOUT_BLOCK16};

/* ---- convolution ---- */

static nn_conv_param_t conv_param(int n_in, int n_out, int k, float *weight, float *bias) {
    nn_conv_param_t p;
    memset(&p, 0, sizeof p);
    p.n_in = n_in, p.n_out = n_out;
    p.kernel_w = p.kernel_h = k;
    p.dilation_w = p.dilation_h = 1;
    p.stride_w = p.stride_h = 1;
    p.bias_term = bias != NULL;
    p.weight_data_size = n_out * n_in * k * k;
    p.weight = weight, p.bias = bias;
    return p;
}

static void conv_out_size(const nn_conv_param_t *p, int h, int w, int *oh, int *ow) {
    *oh = (h + p->pad_top + p->pad_bottom - (p->dilation_h * (p->kernel_h - 1) + 1)) / p->stride_h + 1;
    *ow = (w + p->pad_left + p->pad_right - (p->dilation_w * (p->kernel_w - 1) + 1)) / p->stride_w + 1;
}

/* Runs nn_op_conv on planar values and returns the planar output (new). */
static float *run_conv(const nn_conv_param_t *p, const nn_epilogue_t *epi, const float *in, int h, int w,
                       nn_layout_t lin, nn_layout_t lout, int *oh, int *ow) {
    conv_out_size(p, h, w, oh, ow);
    nn_tensor_t ti = tensor_from(in, p->n_in, h, w, lin);
    nn_tensor_t to = tensor_new(p->n_out, *oh, *ow, lout);
    nn_op_conv(p, epi, &ti, &to, NULL);
    CHECK(padding_zero(&to));
    float *r = malloc(sizeof(float) * p->n_out * *oh * *ow);
    tensor_get(&to, r);
    tensor_free(&ti);
    tensor_free(&to);
    return r;
}

static float test_act(nn_act_t act, const float *pr, float v) {
    switch (act) {
    case NN_ACT_NONE: return v;
    case NN_ACT_RELU: return v >= 0 ? v : v * pr[0];
    case NN_ACT_LEAKY: return v >= 0 ? v : v * pr[0];
    case NN_ACT_CLIP: return v < pr[0] ? pr[0] : v > pr[1] ? pr[1] : v;
    case NN_ACT_SIGMOID: return (float)(1.0 / (1.0 + exp(-(double)v)));
    }
    return v;
}

/* Bounds-checked direct convolution in double, then the same epilogue. */
static void naive_conv(const nn_conv_param_t *p, const nn_epilogue_t *epi, const float *sum, const float *in,
                       int h, int w, float *out, int oh, int ow) {
    for (int oc = 0; oc < p->n_out; oc++)
        for (int oy = 0; oy < oh; oy++)
            for (int ox = 0; ox < ow; ox++) {
                double s = p->bias ? p->bias[oc] : 0;
                for (int q = 0; q < p->n_in; q++)
                    for (int ky = 0; ky < p->kernel_h; ky++)
                        for (int kx = 0; kx < p->kernel_w; kx++) {
                            int iy = oy * p->stride_h - p->pad_top + ky * p->dilation_h;
                            int ix = ox * p->stride_w - p->pad_left + kx * p->dilation_w;
                            double v = p->pad_value;
                            if (iy >= 0 && iy < h && ix >= 0 && ix < w)
                                v = in[((size_t)q * h + iy) * w + ix];
                            s +=
                                v *
                                p->weight[(((size_t)oc * p->n_in + q) * p->kernel_h + ky) * p->kernel_w + kx];
                        }
                float v = test_act(p->act, p->act_params, (float)s);
                size_t i = ((size_t)oc * oh + oy) * ow + ox;
                if (epi) {
                    if (epi->prelu) {
                        float sl = epi->prelu->n_slope > 1 ? epi->prelu->slope[oc] : epi->prelu->slope[0];
                        v = v < 0 ? v * sl : v;
                    }
                    v = epi->scale * v + (sum ? sum[i] : 0.f);
                }
                out[i] = v;
            }
}

static void test_conv_by_hand(void) {
    float in9[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9}, ones[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1}, one = 1.f;
    int oh, ow;

    /* 3x3 box filter, pad 1, bias 1. */
    nn_conv_param_t p = conv_param(1, 1, 3, ones, &one);
    p.pad_left = p.pad_right = p.pad_top = p.pad_bottom = 1;
    float *o = run_conv(&p, NULL, in9, 3, 3, NN_LAYOUT_PLANAR, NN_LAYOUT_PLANAR, &oh, &ow);
    float want[9] = {13, 22, 17, 28, 46, 34, 25, 40, 29};
    CHECK(oh == 3 && ow == 3);
    CHECKF(max_abs_diff(o, want, 9) == 0, "box %g %g %g %g", o[0], o[1], o[4], o[8]);
    free(o);

    /* pad_value 1: the corner sees 5 padded cells of 1. */
    p.pad_value = 1.f;
    o = run_conv(&p, NULL, in9, 3, 3, NN_LAYOUT_PLANAR, NN_LAYOUT_BLOCK16, &oh, &ow);
    CHECKF(o[0] == 13 + 5 && o[4] == 46 && o[1] == 22 + 3, "pad_value %g %g %g", o[0], o[1], o[4]);
    free(o);

    /* Stride 2 and dilation 2 on 0..24 (5x5), no padding. */
    float in25[25];
    for (int i = 0; i < 25; i++)
        in25[i] = (float)i;
    p = conv_param(1, 1, 3, ones, NULL);
    p.stride_w = p.stride_h = 2;
    o = run_conv(&p, NULL, in25, 5, 5, NN_LAYOUT_BLOCK16, NN_LAYOUT_PLANAR, &oh, &ow);
    CHECK(oh == 2 && ow == 2);
    CHECKF(o[0] == 54 && o[1] == 72 && o[2] == 144 && o[3] == 162, "stride %g %g %g %g", o[0], o[1], o[2],
           o[3]);
    free(o);
    p = conv_param(1, 1, 3, ones, NULL);
    p.dilation_w = p.dilation_h = 2;
    o = run_conv(&p, NULL, in25, 5, 5, NN_LAYOUT_PLANAR, NN_LAYOUT_PLANAR, &oh, &ow);
    CHECK(oh == 1 && ow == 1);
    CHECKF(o[0] == 108, "dilation %g", o[0]);
    free(o);

    /* Asymmetric padding, stride 1 horizontally and 2 vertically, 2x1 kernel. */
    float k21[2] = {1, 10};
    p = conv_param(1, 1, 1, k21, NULL);
    p.kernel_h = 2, p.kernel_w = 1, p.stride_h = 2, p.pad_left = 1, p.pad_bottom = 1;
    o = run_conv(&p, NULL, in9, 3, 3, NN_LAYOUT_PLANAR, NN_LAYOUT_PLANAR, &oh, &ow);
    CHECK(oh == 2 && ow == 4);
    /* rows (0,1) and (2,pad): 1*row0 + 10*row1, 1*row2 + 0 */
    float want2[8] = {0, 41, 52, 63, 0, 7, 8, 9};
    CHECKF(max_abs_diff(o, want2, 8) == 0, "asym %g %g %g %g", o[0], o[1], o[5], o[7]);
    free(o);

    /* Fused activations and epilogue on a 1x1 conv of weight 1. */
    float vals[4] = {-2, -0.5f, 0.5f, 2}, w1 = 1.f;
    p = conv_param(1, 1, 1, &w1, NULL);
    p.act = NN_ACT_LEAKY, p.act_params[0] = 0.1f;
    o = run_conv(&p, NULL, vals, 2, 2, NN_LAYOUT_PLANAR, NN_LAYOUT_PLANAR, &oh, &ow);
    CHECK(near(o[0], -0.2f) && near(o[1], -0.05f) && o[2] == 0.5f && o[3] == 2);
    free(o);
    float slope = 0.5f;
    nn_prelu_param_t pr = {1, &slope};
    float sumv[4] = {1, 1, 1, 1};
    nn_tensor_t st = tensor_from(sumv, 1, 2, 2, NN_LAYOUT_PLANAR);
    nn_epilogue_t epi = {&pr, 0.2f, &st};
    p.act = NN_ACT_NONE;
    o = run_conv(&p, &epi, vals, 2, 2, NN_LAYOUT_PLANAR, NN_LAYOUT_PLANAR, &oh, &ow);
    /* x<0: 0.2 * 0.5x + 1; x>=0: 0.2x + 1 */
    CHECKF(near(o[0], 0.8f) && near(o[1], 0.95f) && near(o[2], 1.1f) && near(o[3], 1.4f),
           "epilogue %g %g %g %g", o[0], o[1], o[2], o[3]);
    free(o);
    tensor_free(&st);
}

typedef struct conv_case {
    int n_in, n_out, kw, kh, sw, sh, dw, dh, pl, pr, pt, pb;
    float pad_value;
    int h, w;
    nn_act_t act;
    float ap0, ap1;
    int prelu; /* 0 none, 1 shared, 2 per channel */
    float scale;
    int sum;
} conv_case_t;

static void test_conv_random(void) {
    const conv_case_t cases[] = {
        {3, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 0.f, 9, 11, NN_ACT_NONE, 0, 0, 0, 1.f, 0},
        {17, 5, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 0.25f, 7, 6, NN_ACT_LEAKY, 0.2f, 0, 2, 0.2f, 1},
        {4, 3, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0.f, 5, 8, NN_ACT_RELU, 0, 0, 1, 1.f, 1},
        {5, 6, 5, 3, 2, 1, 1, 2, 2, 1, 0, 3, -0.5f, 10, 9, NN_ACT_CLIP, -0.3f, 0.4f, 0, 1.f, 0},
        {2, 33, 3, 2, 3, 2, 2, 1, 0, 2, 1, 0, 1.f, 8, 13, NN_ACT_SIGMOID, 0, 0, 0, 0.5f, 1},
        {16, 17, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 0.f, 12, 20, NN_ACT_RELU, 0.1f, 0, 2, 1.f, 0},
        {3, 2, 2, 2, 1, 1, 3, 3, 0, 0, 0, 0, 0.f, 7, 7, NN_ACT_NONE, 0, 0, 0, 1.f, 0},
    };
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const conv_case_t *k = &cases[ci];
        size_t nw = (size_t)k->n_out * k->n_in * k->kh * k->kw;
        float *wt = malloc(nw * sizeof(float)), *bias = malloc(k->n_out * sizeof(float));
        float *slopes = malloc(k->n_out * sizeof(float));
        fill_rand(wt, nw);
        fill_rand(bias, (size_t)k->n_out);
        fill_rand(slopes, (size_t)k->n_out);
        nn_conv_param_t p = conv_param(k->n_in, k->n_out, k->kw, wt, bias);
        p.kernel_h = k->kh, p.stride_w = k->sw, p.stride_h = k->sh, p.dilation_w = k->dw,
        p.dilation_h = k->dh;
        p.pad_left = k->pl, p.pad_right = k->pr, p.pad_top = k->pt, p.pad_bottom = k->pb;
        p.pad_value = k->pad_value, p.act = k->act, p.act_params[0] = k->ap0, p.act_params[1] = k->ap1;
        int oh, ow;
        conv_out_size(&p, k->h, k->w, &oh, &ow);
        size_t n_in = (size_t)k->n_in * k->h * k->w, n_out = (size_t)k->n_out * oh * ow;
        float *in = malloc(n_in * sizeof(float)), *sum = malloc(n_out * sizeof(float));
        float *want = malloc(n_out * sizeof(float)), *first = NULL;
        fill_rand(in, n_in);
        fill_rand(sum, n_out);
        nn_prelu_param_t pr = {k->prelu == 2 ? k->n_out : 1, slopes};
        nn_epilogue_t epi = {k->prelu ? &pr : NULL, k->scale, NULL};
        int use_epi = k->prelu || k->scale != 1.f || k->sum;
        naive_conv(&p, use_epi ? &epi : NULL, k->sum ? sum : NULL, in, k->h, k->w, want, oh, ow);

        for (int li = 0; li < 2; li++)
            for (int lo = 0; lo < 2; lo++) {
                nn_tensor_t ti = tensor_from(in, k->n_in, k->h, k->w, layouts[li]);
                nn_tensor_t to = tensor_new(k->n_out, oh, ow, layouts[lo]);
                nn_tensor_t ts = tensor_from(sum, k->n_out, oh, ow, layouts[lo]);
                epi.sum = k->sum ? &ts : NULL;
                /* mixed layouts run on a prepared two-thread scratch, the rest allocate per call */
                nn_conv_scratch_t cs;
                int use_scratch = li != lo;
                nn_conv_scratch_plan(&cs, &p, &ti, &to, 2);
                cs.buf = use_scratch ? up_aligned_alloc(nn_conv_scratch_bytes(&cs), 1) : NULL;
                nn_op_conv(&p, use_epi ? &epi : NULL, &ti, &to, use_scratch ? &cs : NULL);
                up_aligned_free(cs.buf);
                float *got = malloc(n_out * sizeof(float));
                tensor_get(&to, got);
                CHECK(padding_zero(&to));
                double d = max_abs_diff(got, want, n_out);
                CHECKF(d < 1e-4, "conv case %zu layouts %d%d: max diff %g", ci, li, lo, d);
                if (!first) {
                    first = got;
                } else {
                    CHECKF(memcmp(first, got, n_out * sizeof(float)) == 0,
                           "conv case %zu layouts %d%d differ from planar", ci, li, lo);
                    free(got);
                }
                if (k->sum) {
                    /* The sum tensor may be the output itself (in-place residual). */
                    nn_tensor_t tio = tensor_from(sum, k->n_out, oh, ow, layouts[lo]);
                    epi.sum = &tio;
                    nn_op_conv(&p, &epi, &ti, &tio, NULL);
                    float *got2 = malloc(n_out * sizeof(float));
                    tensor_get(&tio, got2);
                    CHECKF(memcmp(first, got2, n_out * sizeof(float)) == 0,
                           "conv case %zu: sum aliasing out differs", ci);
                    CHECK(padding_zero(&tio));
                    free(got2);
                    tensor_free(&tio);
                }
                tensor_free(&ti);
                tensor_free(&to);
                tensor_free(&ts);
            }
        free(first);
        free(wt), free(bias), free(slopes), free(in), free(sum), free(want);
    }
}

/* ---- activation, prelu, eltwise, binary ---- */

static void test_activation(void) {
    float pz[2] = {0, 0}, ps[2] = {0.1f, 0}, pc[2] = {-0.5f, 0.5f};
    float x[4] = {-1, -0.25f, 0.25f, 2};
    nn_op_activation(NN_ACT_RELU, pz, x, 4);
    CHECK(x[0] == 0 && x[1] == 0 && x[2] == 0.25f && x[3] == 2);
    float y[2] = {-1, 3};
    nn_op_activation(NN_ACT_RELU, ps, y, 2);
    CHECK(near(y[0], -0.1f) && y[1] == 3);
    float z[2] = {-2, 3};
    nn_op_activation(NN_ACT_LEAKY, ps, z, 2);
    CHECK(near(z[0], -0.2f) && z[1] == 3);
    float c[3] = {-2, 0.1f, 2};
    nn_op_activation(NN_ACT_CLIP, pc, c, 3);
    CHECK(c[0] == -0.5f && c[1] == 0.1f && c[2] == 0.5f);
    float s[4] = {0, 2, -1000, 1000};
    nn_op_activation(NN_ACT_SIGMOID, pz, s, 4);
    CHECK(s[0] == 0.5f && near(s[1], 0.880797078f) && s[2] >= 0 && s[2] < 1e-30f && s[3] == 1.f);
    float n[1] = {-3};
    nn_op_activation(NN_ACT_NONE, pz, n, 1);
    CHECK(n[0] == -3);
}

static void test_prelu(void) {
    float v[6] = {-1, 2, -3, 4, -5, 6}; /* 3 channels of 1x2 */
    float shared = 0.5f, per[3] = {0.1f, 0.2f, 0.3f};
    nn_prelu_param_t p1 = {1, &shared}, p3 = {3, per};
    for (int li = 0; li < 2; li++)
        for (int lo = 0; lo < 2; lo++) {
            nn_tensor_t ti = tensor_from(v, 3, 1, 2, layouts[li]);
            nn_tensor_t to = tensor_new(3, 1, 2, layouts[lo]);
            float got[6];
            nn_op_prelu(&p1, &ti, &to);
            tensor_get(&to, got);
            CHECK(got[0] == -0.5f && got[1] == 2 && got[2] == -1.5f && got[4] == -2.5f);
            CHECK(padding_zero(&to));
            nn_op_prelu(&p3, &ti, &to);
            tensor_get(&to, got);
            CHECK(near(got[0], -0.1f) && near(got[2], -0.6f) && near(got[4], -1.5f) && got[5] == 6);
            /* In place. */
            nn_op_prelu(&p3, &ti, &ti);
            tensor_get(&ti, got);
            CHECK(near(got[2], -0.6f) && got[3] == 4);
            tensor_free(&ti);
            tensor_free(&to);
        }
}

static void test_eltwise_binary_by_hand(void) {
    float a[2] = {1, -2}, b[2] = {3, 4}, c[2] = {-1, 10};
    nn_tensor_t in[3] = {tensor_from(a, 1, 1, 2, NN_LAYOUT_PLANAR),
                         tensor_from(b, 1, 1, 2, NN_LAYOUT_BLOCK16),
                         tensor_from(c, 1, 1, 2, NN_LAYOUT_PLANAR)};
    nn_tensor_t out = tensor_new(1, 1, 2, NN_LAYOUT_BLOCK16);
    float got[2];
    nn_eltwise_param_t e;
    memset(&e, 0, sizeof e);

    e.op = NN_ELTWISE_SUM;
    nn_op_eltwise(&e, in, 3, &out);
    tensor_get(&out, got);
    CHECK(got[0] == 3 && got[1] == 12);
    e.n_coeffs = 3, e.coeffs[0] = 0.5f, e.coeffs[1] = 2.f, e.coeffs[2] = -1.f;
    nn_op_eltwise(&e, in, 3, &out);
    tensor_get(&out, got);
    CHECK(got[0] == 7.5f && got[1] == -3);
    e.n_coeffs = 2, e.coeffs[0] = 0.2f, e.coeffs[1] = 1.f;
    nn_op_eltwise(&e, in, 2, &out);
    tensor_get(&out, got);
    CHECK(near(got[0], 3.2f) && near(got[1], 3.6f));
    e.n_coeffs = 0, e.op = NN_ELTWISE_PROD;
    nn_op_eltwise(&e, in, 3, &out);
    tensor_get(&out, got);
    CHECK(got[0] == -3 && got[1] == -80);
    e.op = NN_ELTWISE_MAX;
    nn_op_eltwise(&e, in, 3, &out);
    tensor_get(&out, got);
    CHECK(got[0] == 3 && got[1] == 10);
    CHECK(padding_zero(&out));

    /* BinaryOp: a op b for every op, then the scalar form with b = 2. */
    const float want[9][2] = {{4, 2},  {-2, -6}, {3, -8}, {1.f / 3, -0.5f}, {3, 4},
                              {1, -2}, {1, 16},  {2, 6},  {3, -2}};
    const float want_s[9][2] = {{3, 0},  {-1, -4}, {2, -4}, {0.5f, -1}, {2, 2},
                                {1, -2}, {1, 4},   {1, 4},  {2, -1}};
    for (int op = 0; op <= NN_BINARY_RDIV; op++) {
        nn_binary_param_t bp = {(nn_binary_op_t)op, 0, 0.f};
        nn_op_binary(&bp, in, 2, &out);
        tensor_get(&out, got);
        CHECKF(near(got[0], want[op][0]) && near(got[1], want[op][1]), "binary %d: %g %g", op, got[0],
               got[1]);
        bp.with_scalar = 1, bp.b = 2.f;
        nn_op_binary(&bp, in, 1, &out);
        tensor_get(&out, got);
        CHECKF(near(got[0], want_s[op][0]) && near(got[1], want_s[op][1]), "binary scalar %d: %g %g", op,
               got[0], got[1]);
        CHECK(padding_zero(&out));
    }
    for (int i = 0; i < 3; i++)
        tensor_free(&in[i]);
    tensor_free(&out);
}

/* ---- interp ---- */

static float *run_interp(const nn_interp_param_t *p, const float *in, int c, int h, int w, int oh, int ow,
                         nn_layout_t lin, nn_layout_t lout) {
    nn_tensor_t ti = tensor_from(in, c, h, w, lin);
    nn_tensor_t to = tensor_new(c, oh, ow, lout);
    nn_op_interp(p, &ti, &to);
    CHECK(padding_zero(&to));
    float *r = malloc(sizeof(float) * c * oh * ow);
    tensor_get(&to, r);
    tensor_free(&ti);
    tensor_free(&to);
    return r;
}

/* Keys' cubic kernel, A = -0.75. */
static double keys(double d) {
    const double A = -0.75;
    d = fabs(d);
    if (d <= 1)
        return (A + 2) * d * d * d - (A + 3) * d * d + 1;
    if (d < 2)
        return A * d * d * d - 5 * A * d * d + 8 * A * d - 4 * A;
    return 0;
}

static int clampt(int v, int n) { return v < 0 ? 0 : v >= n ? n - 1 : v; }

/*
 * Independent resampler: half-pixel source positions, clamp-to-edge taps,
 * in double. With align_corner = 0 ncnn's border rules reduce to this.
 */
static void slow_resample(int cubic, const float *in, int c, int h, int w, float *out, int oh, int ow) {
    for (int ch = 0; ch < c; ch++)
        for (int y = 0; y < oh; y++)
            for (int x = 0; x < ow; x++) {
                double fy = (y + 0.5) * h / oh - 0.5, fx = (x + 0.5) * w / ow - 0.5;
                int y0 = (int)floor(fy), x0 = (int)floor(fx);
                double s = 0;
                if (cubic) {
                    for (int j = -1; j <= 2; j++)
                        for (int i = -1; i <= 2; i++)
                            s += keys(fy - (y0 + j)) * keys(fx - (x0 + i)) *
                                 in[((size_t)ch * h + clampt(y0 + j, h)) * w + clampt(x0 + i, w)];
                } else {
                    double ty = fy - y0, tx = fx - x0;
                    for (int j = 0; j <= 1; j++)
                        for (int i = 0; i <= 1; i++)
                            s += (j ? ty : 1 - ty) * (i ? tx : 1 - tx) *
                                 in[((size_t)ch * h + clampt(y0 + j, h)) * w + clampt(x0 + i, w)];
                }
                out[((size_t)ch * oh + y) * ow + x] = (float)s;
            }
}

static void test_interp(void) {
    nn_interp_param_t p;
    memset(&p, 0, sizeof p);

    /* Nearest x2: each pixel becomes a 2x2 block. */
    float q[4] = {1, 2, 3, 4};
    p.type = NN_INTERP_NEAREST, p.height_scale = p.width_scale = 2.f;
    float *o = run_interp(&p, q, 1, 2, 2, 4, 4, NN_LAYOUT_PLANAR, NN_LAYOUT_BLOCK16);
    float want4[16] = {1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4};
    CHECK(max_abs_diff(o, want4, 16) == 0);
    free(o);

    /* Nearest x0.5: (int)(y * 2) picks rows and columns 0 and 2. */
    float s16[16];
    for (int i = 0; i < 16; i++)
        s16[i] = (float)i;
    p.height_scale = p.width_scale = 0.5f;
    o = run_interp(&p, s16, 1, 4, 4, 2, 2, NN_LAYOUT_BLOCK16, NN_LAYOUT_PLANAR);
    CHECK(o[0] == 0 && o[1] == 2 && o[2] == 8 && o[3] == 10);
    free(o);

    /* Nearest x1.5 (3 -> 4): in_x = (int)(x * (1/1.5f)) = 0, 0, 1, 2. */
    float r3[3] = {10, 20, 30};
    p.height_scale = 1.f, p.width_scale = 1.5f;
    o = run_interp(&p, r3, 1, 1, 3, 1, 4, NN_LAYOUT_PLANAR, NN_LAYOUT_PLANAR);
    CHECKF(o[0] == 10 && o[1] == 10 && o[2] == 20 && o[3] == 30, "nearest 1.5: %g %g %g %g", o[0], o[1], o[2],
           o[3]);
    free(o);
    /* Fixed size 3 -> 5: in_x = (int)(x * (3 / 5.f)) = 0, 0, 1, 1, 2. */
    p.out_h = 1, p.out_w = 5;
    o = run_interp(&p, r3, 1, 1, 3, 1, 5, NN_LAYOUT_PLANAR, NN_LAYOUT_PLANAR);
    CHECK(o[0] == 10 && o[1] == 10 && o[2] == 20 && o[3] == 20 && o[4] == 30);
    free(o);
    p.out_h = p.out_w = 0;

    /* Bilinear 2x2 -> 4x4: weights along each axis 0, .25, .75, 1. */
    float b4[4] = {0, 1, 2, 3};
    p.type = NN_INTERP_BILINEAR, p.height_scale = p.width_scale = 2.f;
    o = run_interp(&p, b4, 1, 2, 2, 4, 4, NN_LAYOUT_PLANAR, NN_LAYOUT_PLANAR);
    const float t[4] = {0, 0.25f, 0.75f, 1};
    int ok = 1;
    for (int y = 0; y < 4; y++)
        for (int x = 0; x < 4; x++)
            ok &= near(o[y * 4 + x], 2 * t[y] + t[x]);
    CHECK(ok);
    free(o);

    /* Bicubic by hand, 4 -> 2 (scale 0.5): position 2x + 0.5, taps x-1..x+2
       with weights (-0.09375, 0.59375, 0.59375, -0.09375); at x = 0 the tap
       at -1 folds onto pixel 0. Row 0, 4, 8, 12 ... of a ramp stays a ramp. */
    float ramp[16];
    for (int i = 0; i < 16; i++)
        ramp[i] = (float)(i % 4);
    p.type = NN_INTERP_BICUBIC, p.height_scale = p.width_scale = 0.5f;
    o = run_interp(&p, ramp, 1, 4, 4, 2, 2, NN_LAYOUT_PLANAR, NN_LAYOUT_PLANAR);
    /* x=0: 0*(-0.09375+0.59375) + 1*0.59375 + 2*(-0.09375) = 0.40625
       x=1: 1*(-0.09375) + 2*0.59375 + 3*(0.59375-0.09375) = 2.59375 */
    CHECKF(near(o[0], 0.40625f) && near(o[1], 2.59375f) && near(o[2], 0.40625f) && near(o[3], 2.59375f),
           "bicubic by hand: %g %g %g %g", o[0], o[1], o[2], o[3]);
    free(o);

    /* Against the slow resampler: bilinear and bicubic, up and down, odd ratios. */
    const int sizes[][4] = {{12, 12, 6, 6}, {12, 9, 9, 7}, {8, 10, 16, 20}, {7, 6, 21, 17}, {9, 9, 3, 5}};
    for (int cubic = 0; cubic <= 1; cubic++)
        for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
            int h = sizes[si][0], w = sizes[si][1], oh = sizes[si][2], ow = sizes[si][3], c = 3;
            float *in = malloc(sizeof(float) * c * h * w), *want = malloc(sizeof(float) * c * oh * ow);
            fill_rand(in, (size_t)c * h * w);
            slow_resample(cubic, in, c, h, w, want, oh, ow);
            p.type = cubic ? NN_INTERP_BICUBIC : NN_INTERP_BILINEAR;
            p.out_h = oh, p.out_w = ow;
            o = run_interp(&p, in, c, h, w, oh, ow, NN_LAYOUT_PLANAR, NN_LAYOUT_PLANAR);
            double d = max_abs_diff(o, want, (size_t)c * oh * ow);
            CHECKF(d < 2e-5, "%s %dx%d -> %dx%d: max diff %g", cubic ? "bicubic" : "bilinear", w, h, ow, oh,
                   d);
            free(o), free(in), free(want);
        }
    p.out_h = p.out_w = 0;

    /* Align corners: the corners map onto the corners. */
    float a2[2] = {0, 3};
    p.type = NN_INTERP_BILINEAR, p.align_corner = 1, p.out_h = 1, p.out_w = 4;
    o = run_interp(&p, a2, 1, 1, 2, 1, 4, NN_LAYOUT_PLANAR, NN_LAYOUT_PLANAR);
    CHECK(near(o[0], 0) && near(o[1], 1) && near(o[2], 2) && near(o[3], 3));
    free(o);
    p.align_corner = 0, p.out_h = p.out_w = 0;

    /* Same size: a copy. */
    p.type = NN_INTERP_BICUBIC, p.height_scale = p.width_scale = 1.f;
    o = run_interp(&p, s16, 1, 4, 4, 4, 4, NN_LAYOUT_BLOCK16, NN_LAYOUT_PLANAR);
    CHECK(max_abs_diff(o, s16, 16) == 0);
    free(o);

    /* Tiny inputs ncnn would read outside of: stay finite, constant stays constant. */
    float k1[2] = {5, 5};
    p.type = NN_INTERP_BICUBIC, p.out_h = 3, p.out_w = 5;
    o = run_interp(&p, k1, 1, 1, 2, 3, 5, NN_LAYOUT_PLANAR, NN_LAYOUT_PLANAR);
    ok = 1;
    for (int i = 0; i < 15; i++)
        ok &= near(o[i], 5);
    CHECK(ok);
    free(o);
    p.type = NN_INTERP_BILINEAR;
    o = run_interp(&p, k1, 1, 1, 2, 3, 5, NN_LAYOUT_PLANAR, NN_LAYOUT_PLANAR);
    ok = 1;
    for (int i = 0; i < 15; i++)
        ok &= near(o[i], 5);
    CHECK(ok);
    free(o);
}

/* ---- pixelshuffle, concat, tensor copy ---- */

static void test_pixelshuffle(void) {
    /* 8 channels of 2x2, r = 2 -> 2 channels of 4x4; value = q*100 + y*10 + x. */
    float in[8 * 4];
    for (int q = 0; q < 8; q++)
        for (int y = 0; y < 2; y++)
            for (int x = 0; x < 2; x++)
                in[q * 4 + y * 2 + x] = (float)(q * 100 + y * 10 + x);
    for (int mode = 0; mode <= 1; mode++) {
        nn_pixelshuffle_param_t p = {2, mode};
        float *first = NULL;
        for (int li = 0; li < 2; li++)
            for (int lo = 0; lo < 2; lo++) {
                nn_tensor_t ti = tensor_from(in, 8, 2, 2, layouts[li]);
                nn_tensor_t to = tensor_new(2, 4, 4, layouts[lo]);
                nn_op_pixelshuffle(&p, &ti, &to);
                float got[32];
                tensor_get(&to, got);
                CHECK(padding_zero(&to));
                /* out(1, 3, 2): y=1, sh=1, x=1, sw=0 -> q = 4+2+0 = 6 (mode 0) or (2)*2+1 = 5. */
                CHECKF(got[16 + 3 * 4 + 2] == (mode == 0 ? 611 : 511), "pixelshuffle mode %d: %g", mode,
                       got[16 + 14]);
                /* out(0, 0, 1): sw=1 -> q = 1 (mode 0) or 2 (mode 1). */
                CHECK(got[1] == (mode == 0 ? 100 : 200));
                /* out(0, 1, 0): sh=1 -> q = 2 (mode 0) or 4 (mode 1). */
                CHECK(got[4] == (mode == 0 ? 200 : 400));
                if (!first) {
                    first = malloc(sizeof got);
                    memcpy(first, got, sizeof got);
                } else {
                    CHECK(memcmp(first, got, sizeof got) == 0);
                }
                tensor_free(&ti);
                tensor_free(&to);
            }
        free(first);
    }
}

static void test_concat_copy(void) {
    const int cs[3] = {3, 17, 5}, h = 3, w = 4;
    float *vals[3];
    for (int i = 0; i < 3; i++) {
        vals[i] = malloc(sizeof(float) * cs[i] * h * w);
        fill_rand(vals[i], (size_t)cs[i] * h * w);
    }
    for (int li = 0; li < 2; li++)
        for (int lo = 0; lo < 2; lo++) {
            nn_tensor_t in[3];
            for (int i = 0; i < 3; i++)
                in[i] = tensor_from(vals[i], cs[i], h, w, layouts[(li + i) % 2]);
            nn_tensor_t out = tensor_new(25, h, w, layouts[lo]);
            nn_op_concat(in, 3, &out);
            CHECK(padding_zero(&out));
            float got[25 * 12];
            tensor_get(&out, got);
            CHECK(memcmp(got, vals[0], sizeof(float) * 3 * 12) == 0);
            CHECK(memcmp(got + 3 * 12, vals[1], sizeof(float) * 17 * 12) == 0);
            CHECK(memcmp(got + 20 * 12, vals[2], sizeof(float) * 5 * 12) == 0);

            /* Copy both ways through the other layout and back. */
            nn_tensor_t other = tensor_new(25, h, w, layouts[1 - lo]),
                        back = tensor_new(25, h, w, layouts[lo]);
            nn_tensor_copy(&other, &out);
            nn_tensor_copy(&back, &other);
            CHECK(padding_zero(&other) && padding_zero(&back));
            float got2[25 * 12];
            tensor_get(&back, got2);
            CHECK(memcmp(got, got2, sizeof got) == 0);
            tensor_get(&other, got2);
            CHECK(memcmp(got, got2, sizeof got) == 0);

            /* Into an aligned channel view of a bigger tensor. */
            nn_tensor_t big = tensor_new(41, h, w, layouts[lo]);
            nn_tensor_t view = nn_tensor_channels(&big, 16, 25);
            nn_op_concat(in, 3, &view);
            CHECK(padding_zero(&big));
            float got3[41 * 12];
            tensor_get(&big, got3);
            CHECK(memcmp(got3 + 16 * 12, got, sizeof got) == 0);
            tensor_free(&big);
            tensor_free(&other);
            tensor_free(&back);
            tensor_free(&out);
            for (int i = 0; i < 3; i++)
                tensor_free(&in[i]);
        }
    for (int i = 0; i < 3; i++)
        free(vals[i]);

    /* zero_padding touches only the padded lanes. */
    nn_tensor_t t = tensor_new(17, 2, 2, NN_LAYOUT_BLOCK16);
    nn_tensor_zero_padding(&t);
    CHECK(padding_zero(&t) && *at(&t, 16, 1, 1) == 1234.5f && *at(&t, 0, 0, 0) == 1234.5f);
    tensor_free(&t);
}

/* ---- every op, every layout combination, odd channel counts ---- */

static void test_layouts_random(void) {
    const int chans[3] = {3, 17, 48};
    for (int ci = 0; ci < 3; ci++) {
        int c = chans[ci], h = 5, w = 7;
        size_t n = (size_t)c * h * w;
        float *a = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float)), *d = malloc(n * sizeof(float));
        fill_rand(a, n), fill_rand(b, n), fill_rand(d, n);
        float *slopes = malloc(c * sizeof(float));
        fill_rand(slopes, (size_t)c);
        nn_prelu_param_t pr = {c, slopes};
        nn_eltwise_param_t el;
        memset(&el, 0, sizeof el);
        el.op = NN_ELTWISE_SUM, el.n_coeffs = 3, el.coeffs[0] = 0.2f, el.coeffs[1] = 1.f, el.coeffs[2] = -3.f;
        nn_binary_param_t bi = {NN_BINARY_MUL, 0, 0.f};
        nn_interp_param_t ip;
        memset(&ip, 0, sizeof ip);
        nn_pixelshuffle_param_t ps = {2, 0};

        for (int op = 0; op < 6; op++) {
            float *first = NULL;
            size_t n_out = 0;
            for (int li = 0; li < 2; li++)
                for (int lo = 0; lo < 2; lo++) {
                    nn_tensor_t in[3] = {tensor_from(a, c, h, w, layouts[li]),
                                         tensor_from(b, c, h, w, layouts[1 - li]),
                                         tensor_from(d, c, h, w, layouts[li])};
                    nn_tensor_t out;
                    switch (op) {
                    case 0:
                        out = tensor_new(c, h, w, layouts[lo]);
                        nn_op_prelu(&pr, &in[0], &out);
                        break;
                    case 1:
                        out = tensor_new(c, h, w, layouts[lo]);
                        nn_op_eltwise(&el, in, 3, &out);
                        break;
                    case 2:
                        out = tensor_new(c, h, w, layouts[lo]);
                        nn_op_binary(&bi, in, 2, &out);
                        break;
                    case 3:
                        ip.type = NN_INTERP_BICUBIC, ip.height_scale = 0.75f, ip.width_scale = 1.5f;
                        out = tensor_new(c, 3, 10, layouts[lo]);
                        nn_op_interp(&ip, &in[0], &out);
                        break;
                    case 4:
                        ip.type = NN_INTERP_NEAREST, ip.height_scale = 2.f, ip.width_scale = 0.5f;
                        out = tensor_new(c, 10, 3, layouts[lo]);
                        nn_op_interp(&ip, &in[0], &out);
                        break;
                    default:
                        if (c % 4 != 0) { /* pixelshuffle needs c divisible by 4 */
                            out = tensor_new(c, h, w, layouts[lo]);
                            nn_tensor_copy(&out, &in[0]);
                        } else {
                            out = tensor_new(c / 4, h * 2, w * 2, layouts[lo]);
                            nn_op_pixelshuffle(&ps, &in[0], &out);
                        }
                        break;
                    }
                    CHECKF(padding_zero(&out), "op %d c %d layouts %d%d: padding", op, c, li, lo);
                    n_out = (size_t)out.c * out.h * out.w;
                    float *got = malloc(n_out * sizeof(float));
                    tensor_get(&out, got);
                    if (!first) {
                        first = got;
                    } else {
                        CHECKF(memcmp(first, got, n_out * sizeof(float)) == 0,
                               "op %d c %d layouts %d%d differ", op, c, li, lo);
                        free(got);
                    }
                    tensor_free(&out);
                    for (int i = 0; i < 3; i++)
                        tensor_free(&in[i]);
                }
            free(first);
        }
        free(a), free(b), free(d), free(slopes);
    }
}

/* ---- shape inference ---- */

static nn_layer_t layer(nn_op_t op, const char *type, int n_out) {
    nn_layer_t l;
    memset(&l, 0, sizeof l);
    l.op = op;
    strcpy(l.type, type);
    strcpy(l.name, "L_7");
    l.line = 42;
    l.n_out = n_out;
    return l;
}

static int shape_is(const int s[3], int c, int h, int w) { return s[0] == c && s[1] == h && s[2] == w; }

static void test_shapes(void) {
    int out[4][3];
    up_error_t err;
    memset(&err, 0, sizeof err);

    nn_layer_t l = layer(NN_OP_INPUT, "Input", 1);
    const int i3[1][3] = {{3, 64, 48}};
    CHECK(nn_layer_output_shapes(&l, i3, 1, out, &err) == 0 && shape_is(out[0], 3, 64, 48));

    l = layer(NN_OP_SPLIT, "Split", 3);
    CHECK(nn_layer_output_shapes(&l, i3, 1, out, &err) == 0 && shape_is(out[0], 3, 64, 48) &&
          shape_is(out[2], 3, 64, 48));

    l = layer(NN_OP_CONV, "Convolution", 1);
    l.p.conv = conv_param(3, 64, 3, NULL, NULL);
    l.p.conv.pad_left = l.p.conv.pad_right = l.p.conv.pad_top = l.p.conv.pad_bottom = 1;
    CHECK(nn_layer_output_shapes(&l, i3, 1, out, &err) == 0 && shape_is(out[0], 64, 64, 48));
    l.p.conv.stride_w = l.p.conv.stride_h = 2;
    const int i3odd[1][3] = {{3, 7, 5}};
    CHECK(nn_layer_output_shapes(&l, i3odd, 1, out, &err) == 0 && shape_is(out[0], 64, 4, 3));
    l.p.conv.stride_w = l.p.conv.stride_h = 1;
    l.p.conv.pad_left = l.p.conv.pad_right = l.p.conv.pad_top = l.p.conv.pad_bottom = 0;
    l.p.conv.dilation_h = 2; /* extent 5 */
    CHECK(nn_layer_output_shapes(&l, i3odd, 1, out, &err) == 0 && shape_is(out[0], 64, 3, 3));
    const int tiny[1][3] = {{3, 4, 5}};
    CHECK(nn_layer_output_shapes(&l, tiny, 1, out, &err) == UP_ERR_FORMAT && err.line == 42);
    const int i4[1][3] = {{4, 64, 48}};
    memset(&err, 0, sizeof err);
    CHECK(nn_layer_output_shapes(&l, i4, 1, out, &err) == UP_ERR_FORMAT);
    CHECKF(err.code == UP_ERR_FORMAT && err.line == 42 && strstr(err.msg, "L_7") &&
               strstr(err.msg, "Convolution") && strstr(err.msg, "42"),
           "message: %s", err.msg);

    l = layer(NN_OP_PRELU, "PReLU", 1);
    l.p.prelu.n_slope = 1;
    CHECK(nn_layer_output_shapes(&l, i3, 1, out, &err) == 0 && shape_is(out[0], 3, 64, 48));
    l.p.prelu.n_slope = 3;
    CHECK(nn_layer_output_shapes(&l, i3, 1, out, &err) == 0);
    l.p.prelu.n_slope = 64;
    CHECK(nn_layer_output_shapes(&l, i3, 1, out, &err) == UP_ERR_FORMAT);

    l = layer(NN_OP_CONCAT, "Concat", 1);
    const int cat[3][3] = {{64, 8, 9}, {32, 8, 9}, {3, 8, 9}};
    CHECK(nn_layer_output_shapes(&l, cat, 3, out, &err) == 0 && shape_is(out[0], 99, 8, 9));
    const int catbad[2][3] = {{64, 8, 9}, {32, 8, 10}};
    CHECK(nn_layer_output_shapes(&l, catbad, 2, out, &err) == UP_ERR_FORMAT);
    l.p.concat.axis = 1;
    CHECK(nn_layer_output_shapes(&l, cat, 3, out, &err) != 0);

    l = layer(NN_OP_ELTWISE, "Eltwise", 1);
    l.p.eltwise.op = NN_ELTWISE_SUM;
    const int el2[2][3] = {{64, 8, 9}, {64, 8, 9}}, el2bad[2][3] = {{64, 8, 9}, {32, 8, 9}};
    CHECK(nn_layer_output_shapes(&l, el2, 2, out, &err) == 0 && shape_is(out[0], 64, 8, 9));
    CHECK(nn_layer_output_shapes(&l, el2bad, 2, out, &err) == UP_ERR_FORMAT);
    CHECK(nn_layer_output_shapes(&l, el2, 1, out, &err) == UP_ERR_FORMAT);
    l.p.eltwise.n_coeffs = 1;
    CHECK(nn_layer_output_shapes(&l, el2, 2, out, &err) == UP_ERR_FORMAT);

    l = layer(NN_OP_BINARY, "BinaryOp", 1);
    CHECK(nn_layer_output_shapes(&l, el2, 2, out, &err) == 0 && shape_is(out[0], 64, 8, 9));
    CHECK(nn_layer_output_shapes(&l, el2bad, 2, out, &err) == UP_ERR_FORMAT);
    CHECK(nn_layer_output_shapes(&l, el2, 1, out, &err) == UP_ERR_FORMAT);
    l.p.binary.with_scalar = 1;
    CHECK(nn_layer_output_shapes(&l, el2, 1, out, &err) == 0 && shape_is(out[0], 64, 8, 9));

    /* Interp sizes: (int)(w * scale) in float, truncated. */
    l = layer(NN_OP_INTERP, "Interp", 1);
    l.p.interp.type = NN_INTERP_BICUBIC;
    l.p.interp.height_scale = 0.5f, l.p.interp.width_scale = 0.75f;
    const int big[1][3] = {{3, 85, 148}};
    CHECK(nn_layer_output_shapes(&l, big, 1, out, &err) == 0 && shape_is(out[0], 3, 42, 111));
    l.p.interp.height_scale = 2.5f, l.p.interp.width_scale = 0.15f;
    const int s7[1][3] = {{3, 7, 10}};
    CHECK(nn_layer_output_shapes(&l, s7, 1, out, &err) == 0 && shape_is(out[0], 3, 17, 1));
    l.p.interp.width_scale = 0.05f; /* 10 * 0.05 = 0.5 -> 0 */
    CHECK(nn_layer_output_shapes(&l, s7, 1, out, &err) == UP_ERR_FORMAT);
    l.p.interp.out_h = 20, l.p.interp.out_w = 30; /* fixed size wins */
    CHECK(nn_layer_output_shapes(&l, s7, 1, out, &err) == 0 && shape_is(out[0], 3, 20, 30));
    l.p.interp.out_w = 0; /* only one set: both from the scales, as ncnn */
    l.p.interp.width_scale = 2.f;
    CHECK(nn_layer_output_shapes(&l, s7, 1, out, &err) == 0 && shape_is(out[0], 3, 17, 20));
    l.p.interp.type = (nn_interp_t)7;
    CHECK(nn_layer_output_shapes(&l, s7, 1, out, &err) == UP_ERR_FORMAT);

    l = layer(NN_OP_PIXELSHUFFLE, "PixelShuffle", 1);
    l.p.pixelshuffle.factor = 4;
    const int ps[1][3] = {{48, 10, 12}};
    CHECK(nn_layer_output_shapes(&l, ps, 1, out, &err) == 0 && shape_is(out[0], 3, 40, 48));
    l.p.pixelshuffle.factor = 5;
    CHECK(nn_layer_output_shapes(&l, ps, 1, out, &err) == UP_ERR_FORMAT);
    l.p.pixelshuffle.factor = 0;
    CHECK(nn_layer_output_shapes(&l, ps, 1, out, &err) == UP_ERR_FORMAT);

    /* Zero-sized inputs are refused everywhere. */
    l = layer(NN_OP_SPLIT, "Split", 1);
    const int zero[1][3] = {{3, 0, 4}};
    CHECK(nn_layer_output_shapes(&l, zero, 1, out, &err) == UP_ERR_FORMAT);
}

/* ---- the ref backend through its vtable ---- */

static void test_ref_backend(void) {
    const nn_backend_vtbl_t *b = &nn_backend_ref;
    up_error_t err;
    void *st = NULL, *ls = (void *)1;
    size_t scratch = 99;
    CHECK(strcmp(b->name, "ref") == 0);
    CHECK(b->create(NULL, 2, &st, &err) == 0 && st);

    nn_layer_t l = layer(NN_OP_CONV, "Convolution", 1);
    CHECK(b->blob_layout(st, &l, 64) == NN_LAYOUT_PLANAR);
    float wt[2 * 3 * 9], bias[2];
    fill_rand(wt, 54), fill_rand(bias, 2);
    l.p.conv = conv_param(3, 2, 3, wt, bias);
    l.p.conv.pad_left = l.p.conv.pad_right = l.p.conv.pad_top = l.p.conv.pad_bottom = 1;
    l.p.conv.act = NN_ACT_LEAKY, l.p.conv.act_params[0] = 0.2f;
    float in[3 * 6 * 5], sumv[2 * 6 * 5];
    fill_rand(in, sizeof in / sizeof in[0]), fill_rand(sumv, sizeof sumv / sizeof sumv[0]);
    nn_tensor_t ti = tensor_from(in, 3, 6, 5, NN_LAYOUT_PLANAR),
                ts = tensor_from(sumv, 2, 6, 5, NN_LAYOUT_PLANAR);
    nn_tensor_t to = tensor_new(2, 6, 5, NN_LAYOUT_PLANAR), tw = tensor_new(2, 6, 5, NN_LAYOUT_PLANAR);
    nn_epilogue_t epi = {NULL, 0.2f, &ts};
    CHECK(b->layer_prepare(st, &l, &epi, &ti, 1, &to, 1, &ls, &scratch, &err) == 0);
    /* a conv keeps its row scratch size; the backend one shared buffer */
    CHECK(ls != NULL && scratch >= (3 * 3 * 7 + 5) * sizeof(float));
    CHECK(b->layer_run(st, ls, &l, &epi, &ti, 1, &to, 1, &err) == 0);
    nn_op_conv(&l.p.conv, &epi, &ti, &tw, NULL);
    CHECK(memcmp(to.data, tw.data, sizeof(float) * 60) == 0);
    b->layer_release(st, ls);

    nn_layer_t li = layer(NN_OP_INPUT, "Input", 1);
    CHECK(b->layer_prepare(st, &li, NULL, &ti, 1, &to, 1, &ls, &scratch, &err) == UP_ERR_UNSUPPORTED);
    CHECK(b->layer_run(st, NULL, &li, NULL, &ti, 1, &to, 1, &err) == UP_ERR_UNSUPPORTED);

    /* Another op through the table: pixelshuffle of 8 -> 2 channels. */
    nn_layer_t lp = layer(NN_OP_PIXELSHUFFLE, "PixelShuffle", 1);
    lp.p.pixelshuffle.factor = 2;
    float pin[8 * 4];
    fill_rand(pin, 32);
    nn_tensor_t pi = tensor_from(pin, 8, 2, 2, NN_LAYOUT_PLANAR), po = tensor_new(2, 4, 4, NN_LAYOUT_PLANAR);
    CHECK(b->layer_run(st, NULL, &lp, NULL, &pi, 1, &po, 1, &err) == 0);
    CHECK(po.data[1] == pin[4]); /* out(0,0,1) = in(1,0,0) */
    tensor_free(&pi), tensor_free(&po);

    b->destroy(st);
    tensor_free(&ti), tensor_free(&ts), tensor_free(&to), tensor_free(&tw);
}

int main(void) {
    test_conv_by_hand();
    test_conv_random();
    test_activation();
    test_prelu();
    test_eltwise_binary_by_hand();
    test_interp();
    test_pixelshuffle();
    test_concat_copy();
    test_layouts_random();
    test_shapes();
    test_ref_backend();
    return test_summary();
}
