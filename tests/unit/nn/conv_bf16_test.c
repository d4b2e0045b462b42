/*
 * conv_bf16_test.c - our bf16 3x3 convolution (src/nn/backend/conv_bf16.c)
 * against a double-precision convolution of the same bf16 inputs and
 * bf16-rounded weights.
 *
 * Shapes cover the kernel's edges: widths below, at and past its 14-pixel
 * block (the left and right windows, a short last block), one-row images,
 * channel counts that are not multiples of 16 on either side, one and two
 * blocks of 16 output channels per group. Every destination and sum kind
 * (bf16 and float32 NHWC, float32 BLOCK16 on a wider storage grid) and
 * every epilogue (ReLU, leaky ReLU, PReLU shared and per channel, scale,
 * sum) is checked; elements the kernel must not write (past an NHWC
 * tensor, a grid's margin) hold a sentinel that must survive, and a
 * BLOCK16 tensor's padded lanes must be zero.
 *
 * Tolerance: the products and sums are exact in float32 up to summation
 * order (relative 1e-5 of the largest |output|); a bf16 destination adds
 * its rounding (2^-8 relative to the element). Skipped, saying so, on CPUs
 * without AVX512_BF16.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/xmalloc.h"
#include "nn/backend/conv_bf16.h"
#include "test.h"

#define SENTINEL 12288.f /* exact in bf16 */

static unsigned rng = 99u;
static float frand(void) {
    rng = rng * 1664525u + 1013904223u;
    return (float)(rng >> 8) / (float)(1u << 23) - 1.f;
}

static uint16_t bf(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static float fb(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* A tensor of the given kind with every storage element set to fill (bf16: its rounding). */
typedef enum { K_NHWC_BF16, K_NHWC_F32, K_BLOCK16, K_BLOCK16_GRID } kind_t;
static const char *kind_name[] = {"nhwc-bf16", "nhwc-f32", "block16", "block16-grid"};

static nn_tensor_t make(kind_t k, int c, int h, int w, float fill) {
    nn_tensor_t t = {NULL,
                     c,
                     h,
                     w,
                     k <= K_NHWC_F32 ? NN_LAYOUT_NHWC : NN_LAYOUT_BLOCK16,
                     k == K_NHWC_BF16 ? NN_DTYPE_BF16 : NN_DTYPE_F32,
                     0,
                     0};
    if (k == K_BLOCK16_GRID)
        t.ph = h + 2, t.pw = w + 3;
    size_t n = nn_tensor_floats(&t) + 16; /* 16 more: a write past the end shows */
    t.data = up_aligned_alloc(n * 4, 1);
    for (size_t i = 0; i < n; i++) {
        if (t.dtype == NN_DTYPE_BF16)
            ((uint16_t *)(void *)t.data)[i] = bf(fill);
        else
            t.data[i] = fill;
    }
    return t;
}

/* Element (ch, y, x), and whether it is part of the image (else margin, lane or past the end). */
static size_t off(const nn_tensor_t *t, int ch, int y, int x) {
    if (t->layout == NN_LAYOUT_NHWC)
        return ((size_t)y * t->w + x) * t->c + ch;
    return ((size_t)(ch / 16) * nn_tensor_sh(t) * nn_tensor_sw(t) + (size_t)y * nn_tensor_sw(t) + x) * 16 +
           ch % 16;
}

static float get(const nn_tensor_t *t, size_t i) {
    return t->dtype == NN_DTYPE_BF16 ? fb(((uint16_t *)(void *)t->data)[i]) : t->data[i];
}

static void set(const nn_tensor_t *t, size_t i, float v) {
    if (t->dtype == NN_DTYPE_BF16)
        ((uint16_t *)(void *)t->data)[i] = bf(v);
    else
        t->data[i] = v;
}

typedef struct {
    int cin, cout, h, w;
    int act;     /* NN_ACT_NONE, RELU (slope 0), LEAKY (0.1) */
    int prelu;   /* 0 none, 1 shared, 2 per channel */
    int sum;     /* -1 none, else the sum's kind */
    float scale; /* epilogue scale */
    kind_t out;
} tcase_t;

static void run_case(const tcase_t *c) {
    char name[160];
    snprintf(name, sizeof name, "cin %d cout %d %dx%d act %d prelu %d sum %s scale %g out %s", c->cin,
             c->cout, c->h, c->w, c->act, c->prelu, c->sum < 0 ? "-" : kind_name[c->sum], c->scale,
             kind_name[c->out]);
    nn_conv_param_t p = {0};
    p.n_in = c->cin, p.n_out = c->cout, p.kernel_w = p.kernel_h = 3, p.dilation_w = p.dilation_h = 1;
    p.stride_w = p.stride_h = 1, p.pad_left = p.pad_right = p.pad_top = p.pad_bottom = 1, p.bias_term = 1;
    p.act = (nn_act_t)c->act, p.act_params[0] = c->act == NN_ACT_LEAKY ? 0.1f : 0.f;
    p.weight = xmalloc((size_t)c->cout * c->cin * 9 * sizeof(float));
    p.bias = xmalloc((size_t)c->cout * sizeof(float));
    for (size_t i = 0; i < (size_t)c->cout * c->cin * 9; i++)
        p.weight[i] = frand() / sqrtf((float)c->cin * 9.f);
    for (int i = 0; i < c->cout; i++)
        p.bias[i] = frand() * 0.2f;
    float slopes[64];
    for (int i = 0; i < 64; i++)
        slopes[i] = 0.05f + 0.3f * (frand() + 1.f);
    nn_prelu_param_t pr = {c->prelu == 1 ? 1 : c->cout, slopes};
    nn_tensor_t in = make(K_NHWC_BF16, c->cin, c->h, c->w, 0.f);
    for (size_t i = 0; i < nn_tensor_floats(&in); i++)
        set(&in, i, frand());
    nn_tensor_t out = make(c->out, c->cout, c->h, c->w, SENTINEL), sum = {0};
    if (c->sum >= 0) {
        sum = make((kind_t)c->sum, c->cout, c->h, c->w, 0.f);
        for (int ch = 0; ch < c->cout; ch++)
            for (int y = 0; y < c->h; y++)
                for (int x = 0; x < c->w; x++)
                    set(&sum, off(&sum, ch, y, x), frand());
    }
    nn_epilogue_t epi = {c->prelu ? &pr : NULL, c->scale, c->sum >= 0 ? &sum : NULL};
    CHECKF(cbf16_takes(&p, &epi, &in, &out), "%s: refused", name);
    cbf16_weights_t *w = cbf16_pack(&p);
    CHECK(w != NULL);
    cbf16_run(w, &p, &epi, &in, &out, 2);

    double maxref = 1e-3, maxerr = 0;
    int bad = 0;
    for (int ch = 0; ch < c->cout; ch++)
        for (int y = 0; y < c->h; y++)
            for (int x = 0; x < c->w; x++) {
                double s = p.bias[ch];
                for (int ky = 0; ky < 3; ky++)
                    for (int kx = 0; kx < 3; kx++) {
                        int iy = y + ky - 1, ix = x + kx - 1;
                        if (iy < 0 || iy >= c->h || ix < 0 || ix >= c->w)
                            continue;
                        for (int ic = 0; ic < c->cin; ic++)
                            s += (double)get(&in, off(&in, ic, iy, ix)) *
                                 (double)fb(bf(p.weight[((size_t)ch * c->cin + ic) * 9 + ky * 3 + kx]));
                    }
                if (s < 0)
                    s *= p.act_params[0] * (c->act != NN_ACT_NONE) + (c->act == NN_ACT_NONE);
                if (c->prelu && s < 0)
                    s *= slopes[c->prelu == 1 ? 0 : ch];
                s *= c->scale;
                if (c->sum >= 0)
                    s += get(&sum, off(&sum, ch, y, x));
                double got = get(&out, off(&out, ch, y, x));
                if (fabs(s) > maxref)
                    maxref = fabs(s);
                double e = fabs(got - s);
                if (out.dtype == NN_DTYPE_BF16)
                    e -= fabs(s) / 256.0; /* its rounding */
                if (e > maxerr)
                    maxerr = e;
                if (!(fabs(got) < 1e6))
                    bad++;
            }
    CHECKF(bad == 0, "%s: %d outputs not written", name, bad);
    CHECKF(maxerr <= 1e-5 * maxref, "%s: max error %.3g of max |output| %.3g", name, maxerr, maxref);
    /* what the kernel must leave alone, or zero */
    size_t n_store = nn_tensor_floats(&out);
    int touched = 0, lane = 0;
    for (size_t i = n_store; i < n_store + 16; i++)
        touched += get(&out, i) != SENTINEL;
    if (out.layout == NN_LAYOUT_BLOCK16) {
        int cp = nn_layout_channels(out.layout, out.c);
        for (int ch = 0; ch < cp; ch++)
            for (int y = 0; y < nn_tensor_sh(&out); y++)
                for (int x = 0; x < nn_tensor_sw(&out); x++) {
                    float v = get(&out, off(&out, ch, y, x));
                    if (y >= out.h || x >= out.w)
                        touched += v != SENTINEL; /* the margin is the caller's to zero */
                    else if (ch >= out.c)
                        lane += v != 0.f;
                }
    }
    CHECKF(touched == 0, "%s: %d elements written outside the image", name, touched);
    CHECKF(lane == 0, "%s: %d padded lanes not zero", name, lane);
    cbf16_free(w);
    up_aligned_free(in.data);
    up_aligned_free(out.data);
    if (sum.data)
        up_aligned_free(sum.data);
    free(p.weight);
    free(p.bias);
}

static void test_takes(void) {
    nn_conv_param_t p = {0};
    p.n_in = 8, p.n_out = 16, p.kernel_w = p.kernel_h = 3, p.dilation_w = p.dilation_h = 1;
    p.stride_w = p.stride_h = 1, p.pad_left = p.pad_right = p.pad_top = p.pad_bottom = 1;
    nn_tensor_t in = {NULL, 8, 10, 10, NN_LAYOUT_NHWC, NN_DTYPE_BF16, 0, 0};
    nn_tensor_t out = {NULL, 16, 10, 10, NN_LAYOUT_NHWC, NN_DTYPE_BF16, 0, 0};
    CHECK(cbf16_takes(&p, NULL, &in, &out));
    nn_tensor_t odd = in;
    odd.c = p.n_in = 7;
    CHECK(!cbf16_takes(&p, NULL, &odd, &out)); /* channel pairs */
    p.n_in = 8;
    nn_tensor_t f32 = in;
    f32.dtype = NN_DTYPE_F32;
    CHECK(!cbf16_takes(&p, NULL, &f32, &out));
    p.stride_w = 2;
    CHECK(!cbf16_takes(&p, NULL, &in, &out));
    p.stride_w = 1, p.pad_value = 1.f;
    CHECK(!cbf16_takes(&p, NULL, &in, &out));
    p.pad_value = 0.f, p.act = NN_ACT_SIGMOID;
    CHECK(!cbf16_takes(&p, NULL, &in, &out));
    p.act = NN_ACT_NONE, p.kernel_w = 1;
    CHECK(!cbf16_takes(&p, NULL, &in, &out));
}

int main(void) {
    if (!cbf16_cpu_ok()) {
        printf("SKIP conv_bf16: this CPU has no AVX512_BF16\n");
        return 0;
    }
    test_takes();
    static const int widths[] = {1, 2, 13, 14, 15, 16, 29, 30, 43};
    for (size_t i = 0; i < sizeof widths / sizeof *widths; i++) {
        run_case(&(tcase_t){8, 16, 5, widths[i], NN_ACT_NONE, 0, -1, 1.f, K_NHWC_BF16});
        run_case(&(tcase_t){64, 32, 3, widths[i], NN_ACT_LEAKY, 0, K_NHWC_F32, 0.2f, K_NHWC_F32});
    }
    run_case(&(tcase_t){2, 3, 1, 20, NN_ACT_RELU, 0, -1, 1.f, K_NHWC_F32});
    run_case(&(tcase_t){6, 48, 4, 17, NN_ACT_LEAKY, 0, -1, 1.f, K_NHWC_BF16});
    run_case(&(tcase_t){34, 20, 6, 15, NN_ACT_NONE, 2, K_NHWC_BF16, 1.f, K_BLOCK16});
    run_case(&(tcase_t){96, 64, 7, 31, NN_ACT_NONE, 1, -1, 1.f, K_BLOCK16_GRID});
    run_case(&(tcase_t){64, 64, 6, 18, NN_ACT_LEAKY, 0, K_BLOCK16_GRID, 0.2f, K_BLOCK16_GRID});
    run_case(&(tcase_t){192, 64, 4, 28, NN_ACT_LEAKY, 0, K_NHWC_F32, 0.2f, K_NHWC_F32});
    run_case(&(tcase_t){64, 3, 5, 16, NN_ACT_NONE, 0, K_BLOCK16, 1.f, K_BLOCK16});
    run_case(&(tcase_t){16, 64, 9, 9, NN_ACT_NONE, 2, K_NHWC_BF16, 1.f, K_NHWC_BF16});

    /* cbf16_round rounds to nearest even, as the reference does */
    float src[37];
    uint16_t got[37];
    for (int i = 0; i < 37; i++)
        src[i] = frand() * 100.f;
    src[3] = 1.f + 1.f / 256.f; /* a tie: rounds to even, 1.0 */
    cbf16_round(got, src, 37, 2);
    int diff = 0;
    for (int i = 0; i < 37; i++)
        diff += got[i] != bf(src[i]);
    CHECKF(diff == 0, "cbf16_round: %d of 37 differ", diff);
    CHECK(fb(got[3]) == 1.f);
    return test_summary();
}
