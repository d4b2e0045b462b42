/*
 * backend_test.c - the dnnl backend against the ref backend, op by op
 * (ggml's test-backend-ops), and whole models through the planner.
 *
 * Each case builds a one-layer model by hand with random weights, runs it
 * through nn_backend_ref on PLANAR tensors and through nn_backend_dnnl on
 * the layouts dnnl's blob_layout picks (inputs PLANAR and BLOCK16 both),
 * converts the result back with nn_tensor_copy and compares. The dnnl
 * output must also have zeros in its BLOCK16 padding lanes, and outputs
 * are filled with garbage beforehand so an unwritten element shows.
 *
 * Tolerance: max |dnnl - ref| <= tol * max(1, max |ref|), with inputs and
 * weights scaled so that outputs are O(1). Direct convolution and the other
 * ops differ from ref only in summation order: observed up to 5e-7, tol
 * 5e-6. Winograd F(4x4,3x3) adds the rounding of its transforms (whose
 * coefficients reach 8 and 1/8): observed up to 1.5e-6, tol 2e-5. Both are
 * far below one step of an 8-bit image (4e-3). Whole models get 5e-5
 * (observed 7.5e-6 for realesrgan-x4plus, 351 convs).
 *
 * Storage grids (tensor.h, Storage padding): convs and the other ops on
 * padded tensors, on one grid, between grids and onto or off a grid, must
 * give ref's image and leave zeros in the output's margin, on a second run
 * too; blob_pad must ask for Winograd's grid exactly where it degenerates.
 *
 * When the real models are present (UPRES_TEST_MODELS), whole networks
 * run through nn_net_run on both backends on a small random input.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/xmalloc.h"
#include "nn/backend/backend.h"
#include "nn/model.h"
#include "nn/nn.h"
#include "nn/ops.h"
#include "nn/tensor.h"
#include "test.h"

#define TOL 5e-6
#define TOL_WINOGRAD 2e-5
#define MAX_IN 4

/* ---- helpers ---- */

static unsigned rng_state = 777u;

static float frand(void) { /* uniform in [-1, 1) */
    rng_state = rng_state * 1664525u + 1013904223u;
    return (float)(rng_state >> 8) / (float)(1u << 23) - 1.f;
}

static float *rand_buf(size_t n, float lo, float hi) {
    float *x = xmalloc((n ? n : 1) * sizeof *x);
    for (size_t i = 0; i < n; i++)
        x[i] = lo + (hi - lo) * (frand() + 1.f) * 0.5f;
    return x;
}

/* A tensor with its own 64-byte aligned buffer, every float set to garbage. */
static nn_tensor_t tensor_new(int c, int h, int w, nn_layout_t layout) {
    nn_tensor_t t = {NULL, c, h, w, layout, NN_DTYPE_F32, 0, 0};
    size_t n = nn_tensor_floats(&t);
    t.data = up_aligned_alloc(n ? n : 1, sizeof(float));
    for (size_t i = 0; i < n; i++)
        t.data[i] = 1234.5f;
    return t;
}

/* t (any layout) filled from planar data. */
static nn_tensor_t tensor_from(const float *planar, int c, int h, int w, nn_layout_t layout) {
    nn_tensor_t t = tensor_new(c, h, w, layout);
    nn_tensor_t src = {(float *)planar, c, h, w, NN_LAYOUT_PLANAR, NN_DTYPE_F32, 0, 0};
    nn_tensor_copy(&t, &src);
    return t;
}

/* 1 when every padded lane of a BLOCK16 tensor is zero. */
static int padding_is_zero(const nn_tensor_t *t) {
    if (t->layout != NN_LAYOUT_BLOCK16 || t->c % 16 == 0)
        return 1;
    size_t hw = (size_t)t->h * t->w;
    const float *block = t->data + (size_t)(t->c / 16) * hw * 16;
    for (size_t i = 0; i < hw; i++)
        for (int l = t->c % 16; l < 16; l++)
            if (block[i * 16 + l] != 0.f)
                return 0;
    return 1;
}

/* One layer under test, in a model of its own. */
typedef struct one {
    nn_model_t model;
    nn_layer_t layer;
    int in_blobs[MAX_IN], out_blob;
} one_t;

static void one_init(one_t *o, nn_op_t op, const char *type, int n_in) {
    memset(o, 0, sizeof *o);
    o->layer.op = op;
    snprintf(o->layer.type, sizeof o->layer.type, "%s", type);
    snprintf(o->layer.name, sizeof o->layer.name, "test_%s", type);
    o->layer.line = 1;
    o->layer.n_in = n_in;
    o->layer.n_out = 1;
    o->layer.in = o->in_blobs;
    o->layer.out = &o->out_blob;
    o->model.n_layers = 1;
    o->model.layers = &o->layer;
    o->model.input_blob = o->model.output_blob = -1;
}

/* Conv layer with random weights (scaled by fan-in) and bias. */
static void conv_init(one_t *o, int ic, int oc, int k, int stride, int dil, int pad, int bias) {
    one_init(o, NN_OP_CONV, "Convolution", 1);
    nn_conv_param_t *p = &o->layer.p.conv;
    p->n_in = ic, p->n_out = oc;
    p->kernel_w = p->kernel_h = k;
    p->stride_w = p->stride_h = stride;
    p->dilation_w = p->dilation_h = dil;
    p->pad_left = p->pad_right = p->pad_top = p->pad_bottom = pad;
    p->bias_term = bias;
    p->weight_data_size = oc * ic * k * k;
    float sc = 1.f / sqrtf((float)(ic * k * k));
    p->weight = rand_buf((size_t)p->weight_data_size, -sc, sc);
    p->bias = bias ? rand_buf((size_t)oc, -0.5f, 0.5f) : NULL;
}

static void one_fini(one_t *o) {
    if (o->layer.op == NN_OP_CONV) {
        free(o->layer.p.conv.weight);
        free(o->layer.p.conv.bias);
    } else if (o->layer.op == NN_OP_PRELU) {
        free(o->layer.p.prelu.slope);
    }
}

/* What a case feeds the layer: planar inputs and the optional epilogue. */
typedef struct feed {
    int n_in;
    int shape[MAX_IN][3];
    float *in[MAX_IN]; /* planar */
    const nn_prelu_param_t *prelu;
    float scale; /* epilogue scale, 1 when unused */
    float *sum;  /* planar, of the output shape, or NULL */
} feed_t;

/*
 * Run the layer of o on backend be: inputs in layouts in_layout[k], the
 * output in out_layout. Returns the output as a new planar buffer, or NULL
 * on a backend error (reported). *scratch gets the reported scratch bytes.
 */
static float *run_on(const nn_backend_vtbl_t *be, void *state, one_t *o, const feed_t *f,
                     const nn_layout_t *in_layout, nn_layout_t out_layout, const int out_shape[3],
                     size_t *scratch, int n_runs) {
    nn_tensor_t in[MAX_IN], out, sum = {0};
    for (int k = 0; k < f->n_in; k++)
        in[k] = tensor_from(f->in[k], f->shape[k][0], f->shape[k][1], f->shape[k][2], in_layout[k]);
    out = tensor_new(out_shape[0], out_shape[1], out_shape[2], out_layout);
    nn_epilogue_t epi = {f->prelu, f->scale, NULL};
    if (f->sum) {
        sum = tensor_from(f->sum, out_shape[0], out_shape[1], out_shape[2], out_layout);
        epi.sum = &sum;
    }
    const nn_epilogue_t *ep = o->layer.op == NN_OP_CONV ? &epi : NULL;
    up_error_t err = {0};
    void *ls = NULL;
    size_t sb = 0;
    float *res = NULL;
    int rc = be->layer_prepare(state, &o->layer, ep, in, f->n_in, &out, 1, &ls, &sb, &err);
    CHECKF(rc == 0, "%s prepare: %s", be->name, err.msg);
    if (rc == 0) {
        for (int r = 0; r < n_runs && rc == 0; r++) {
            rc = be->layer_run(state, ls, &o->layer, ep, in, f->n_in, &out, 1, &err);
            CHECKF(rc == 0, "%s run: %s", be->name, err.msg);
        }
        be->layer_release(state, ls);
    }
    if (rc == 0) {
        CHECKF(padding_is_zero(&out), "%s: padding lanes of the output are not zero", be->name);
        size_t n = (size_t)out_shape[0] * out_shape[1] * out_shape[2];
        res = xmalloc((n ? n : 1) * sizeof *res);
        nn_tensor_t dst = {res, out.c, out.h, out.w, NN_LAYOUT_PLANAR, NN_DTYPE_F32, 0, 0};
        nn_tensor_copy(&dst, &out);
    }
    if (scratch)
        *scratch = sb;
    for (int k = 0; k < f->n_in; k++)
        up_aligned_free(in[k].data);
    up_aligned_free(out.data);
    up_aligned_free(sum.data);
    return res;
}

/* max |a - b| / max(1, max |b|) over n floats; NaN anywhere counts as infinite. */
static double rel_err(const float *a, const float *b, size_t n) {
    double worst = 0, mag = 1;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (isnan(a[i]) != isnan(b[i]) || isnan(d))
            return INFINITY;
        if (d > worst)
            worst = d;
        if (fabs((double)b[i]) > mag)
            mag = fabs((double)b[i]);
    }
    return worst / mag;
}

static int out_shape_of(one_t *o, const feed_t *f, int out[3]) {
    int(*out_shapes)[3] = (int(*)[3])out;
    up_error_t err = {0};
    int rc = nn_layer_output_shapes(&o->layer, (const int(*)[3])f->shape, f->n_in, out_shapes, &err);
    CHECKF(rc == 0, "output shape: %s", err.msg);
    return rc;
}

/* State of a backend for o's model, with UPRES_DNNL_CONV_ALG set to alg (NULL: unset). */
static void *state_new(const nn_backend_vtbl_t *be, one_t *o, const char *alg) {
    if (alg)
        setenv("UPRES_DNNL_CONV_ALG", alg, 1);
    void *st = NULL;
    up_error_t err = {0};
    int rc = be->create(&o->model, 2, &st, &err);
    unsetenv("UPRES_DNNL_CONV_ALG");
    CHECKF(rc == 0, "%s create: %s", be->name, err.msg);
    return rc == 0 ? st : NULL;
}

/*
 * Compare dnnl against ref for o fed with f, for each combination of input
 * layouts (all PLANAR, all BLOCK16, and what blob_layout would give a conv
 * producer). alg: UPRES_DNNL_CONV_ALG for dnnl. Returns the worst error.
 */
static double compare(const char *what, one_t *o, const feed_t *f, const char *alg, double tol) {
    int os[3];
    if (out_shape_of(o, f, os))
        return INFINITY;
    size_t n = (size_t)os[0] * os[1] * os[2];
    void *rs = state_new(&nn_backend_ref, o, NULL);
    nn_layout_t planar[MAX_IN] = {NN_LAYOUT_PLANAR, NN_LAYOUT_PLANAR, NN_LAYOUT_PLANAR, NN_LAYOUT_PLANAR};
    float *want = rs ? run_on(&nn_backend_ref, rs, o, f, planar, NN_LAYOUT_PLANAR, os, NULL, 1) : NULL;
    if (rs)
        nn_backend_ref.destroy(rs);
    if (!want)
        return INFINITY;

    void *ds = state_new(&nn_backend_dnnl, o, alg);
    double worst = 0;
    nn_layout_t out_layout = ds ? nn_backend_dnnl.blob_layout(ds, &o->layer, os[0]) : NN_LAYOUT_PLANAR;
    for (int variant = 0; ds && variant < 2; variant++) {
        nn_layout_t lay[MAX_IN];
        for (int k = 0; k < MAX_IN; k++)
            lay[k] = variant ? NN_LAYOUT_BLOCK16 : NN_LAYOUT_PLANAR;
        float *got = run_on(&nn_backend_dnnl, ds, o, f, lay, out_layout, os, NULL, 2);
        double e = got ? rel_err(got, want, n) : INFINITY;
        CHECKF(e <= tol, "%s (input %s, output %s): error %.3g > %.3g", what, variant ? "BLOCK16" : "PLANAR",
               out_layout == NN_LAYOUT_BLOCK16 ? "BLOCK16" : "PLANAR", e, tol);
        if (e > worst)
            worst = e;
        free(got);
    }
    if (ds)
        nn_backend_dnnl.destroy(ds);
    free(want);
    return worst;
}

static void feed_free(feed_t *f) {
    for (int k = 0; k < f->n_in; k++)
        free(f->in[k]);
    free(f->sum);
}

static feed_t feed_rand(int n_in, int c, int h, int w, float lo, float hi) {
    feed_t f = {.n_in = n_in, .scale = 1.f};
    for (int k = 0; k < n_in; k++) {
        f.shape[k][0] = c, f.shape[k][1] = h, f.shape[k][2] = w;
        f.in[k] = rand_buf((size_t)c * h * w, lo, hi);
    }
    return f;
}

/* ---- convolution ---- */

typedef struct conv_case {
    int ic, oc, h, w, k, stride, dil, pad;
} conv_case_t;

static const char *act_names[] = {"none", "relu", "leaky", "clip", "sigmoid"};

static void set_act(nn_conv_param_t *p, int act, int relu_slope) {
    p->act = (nn_act_t)act;
    p->act_params[0] = p->act_params[1] = 0.f;
    if (act == NN_ACT_RELU && relu_slope)
        p->act_params[0] = 0.1f; /* ncnn ReLU with a slope is leaky */
    if (act == NN_ACT_LEAKY)
        p->act_params[0] = 0.2f;
    if (act == NN_ACT_CLIP)
        p->act_params[0] = -0.25f, p->act_params[1] = 0.5f;
}

enum { EPI_NONE, EPI_PRELU, EPI_PRELU1, EPI_SCALE, EPI_SUM, EPI_SUM_SCALED, EPI_PRELU_SUM, EPI_COUNT };
static const char *epi_names[] = {"none", "prelu", "prelu-shared", "scale", "sum", "sum*0.2", "prelu+sum"};

static void conv_case(const conv_case_t *c, int act, int relu_slope, int epi, int bias, const char *alg,
                      double tol) {
    one_t o;
    conv_init(&o, c->ic, c->oc, c->k, c->stride, c->dil, c->pad, bias);
    set_act(&o.layer.p.conv, act, relu_slope);
    feed_t f = feed_rand(1, c->ic, c->h, c->w, -1.f, 1.f);
    int os[3];
    nn_prelu_param_t prelu = {0};
    if (out_shape_of(&o, &f, os) == 0) {
        if (epi == EPI_PRELU || epi == EPI_PRELU1 || epi == EPI_PRELU_SUM) {
            prelu.n_slope = epi == EPI_PRELU1 ? 1 : c->oc;
            prelu.slope = rand_buf((size_t)prelu.n_slope, 0.f, 0.5f);
            f.prelu = &prelu;
        }
        if (epi == EPI_SCALE || epi == EPI_SUM_SCALED)
            f.scale = 0.2f;
        if (epi == EPI_SUM || epi == EPI_SUM_SCALED || epi == EPI_PRELU_SUM)
            f.sum = rand_buf((size_t)os[0] * os[1] * os[2], -1.f, 1.f);
        char what[200];
        snprintf(what, sizeof what, "conv %d->%d %dx%d k%d s%d d%d p%d act %s%s epi %s bias %d alg %s", c->ic,
                 c->oc, c->h, c->w, c->k, c->stride, c->dil, c->pad, act_names[act],
                 relu_slope ? "(slope)" : "", epi_names[epi], bias, alg ? alg : "rule");
        compare(what, &o, &f, alg, tol);
    }
    free(prelu.slope);
    feed_free(&f);
    one_fini(&o);
}

static void test_conv(void) {
    int small = test_sanitized();
    const conv_case_t shapes[] = {
        {3, 16, 19, 23, 3, 1, 1, 1},                                /* planar image in */
        {3, 48, 12, 9, 3, 1, 1, 1},                                 /* 3 -> 48 */
        {17, 48, 10, 11, 3, 1, 1, 1},                               /* odd channels */
        {48, 17, 9, 13, 3, 1, 1, 1},  {64, 3, 11, 10, 3, 1, 1, 1},  /* realesrgan's last conv */
        {16, 32, 9, 9, 1, 1, 1, 0},                                 /* 1x1 */
        {32, 32, 15, 14, 3, 2, 1, 1},                               /* stride 2 */
        {16, 16, 12, 12, 3, 1, 2, 2},                               /* dilation 2 */
        {8, 24, 13, 11, 5, 1, 1, 2},                                /* 5x5 */
        {64, 64, 21, 18, 3, 1, 1, 1}, {96, 32, 14, 15, 3, 1, 1, 1}, /* RRDB dense conv */
    };
    int n_shapes = (int)(sizeof shapes / sizeof shapes[0]);
    /* every shape plain, with bias and without */
    for (int i = 0; i < n_shapes; i++)
        for (int bias = 0; bias < 2; bias++)
            conv_case(&shapes[i], NN_ACT_NONE, 0, EPI_NONE, bias, NULL, TOL);
    /* every activation with every epilogue on a few shapes */
    const int picks[] = {0, 2, 3, 9};
    for (int s = 0; s < (small ? 2 : 4); s++)
        for (int act = 0; act <= NN_ACT_SIGMOID; act++)
            for (int epi = 0; epi < EPI_COUNT; epi++)
                conv_case(&shapes[picks[s]], act, 0, epi, 1, NULL, TOL);
    conv_case(&shapes[2], NN_ACT_RELU, 1, EPI_SUM_SCALED, 1, NULL, TOL);
    /* asymmetric padding */
    {
        conv_case_t c = {16, 16, 10, 12, 3, 1, 1, 0};
        one_t o;
        conv_init(&o, c.ic, c.oc, c.k, 1, 1, 0, 1);
        o.layer.p.conv.pad_left = 2, o.layer.p.conv.pad_right = 0;
        o.layer.p.conv.pad_top = 0, o.layer.p.conv.pad_bottom = 1;
        feed_t f = feed_rand(1, c.ic, c.h, c.w, -1.f, 1.f);
        compare("conv asymmetric padding", &o, &f, NULL, TOL);
        feed_free(&f);
        one_fini(&o);
    }
    /* a pad_value oneDNN cannot do: plain C */
    {
        one_t o;
        conv_init(&o, 16, 16, 3, 1, 1, 1, 1);
        o.layer.p.conv.pad_value = 0.5f;
        feed_t f = feed_rand(1, 16, 9, 9, -1.f, 1.f);
        compare("conv pad_value 0.5", &o, &f, NULL, TOL);
        feed_free(&f);
        one_fini(&o);
    }
    /* every algorithm forced, with the model-like epilogues */
    const char *algs[] = {"direct", "winograd", "auto", "winograd-plain"};
    const conv_case_t wino[] = {
        {64, 64, 24, 20, 3, 1, 1, 1},
        {32, 48, 17, 13, 3, 1, 1, 1},
        {17, 32, 9, 9, 3, 1, 1, 1}, /* Winograd wants multiples of 16: falls back */
    };
    for (int a = 0; a < 4; a++)
        for (int i = 0; i < 3; i++) {
            double tol = a == 1 || a == 3 ? TOL_WINOGRAD : TOL;
            conv_case(&wino[i], NN_ACT_NONE, 0, EPI_NONE, 1, algs[a], tol);
            conv_case(&wino[i], NN_ACT_RELU, 0, EPI_SUM_SCALED, 1, algs[a], tol);
            conv_case(&wino[i], NN_ACT_LEAKY, 0, EPI_NONE, 1, algs[a], tol);
            conv_case(&wino[i], NN_ACT_NONE, 0, EPI_PRELU, 1, algs[a], tol);
            conv_case(&wino[i], NN_ACT_SIGMOID, 0, EPI_PRELU_SUM, 0, algs[a], tol);
        }
    /*
     * Shapes whose 4x4 tile grid (37 x 2) blocks badly: Winograd runs on a
     * grown copy. The backend's own rule picks that for these.
     */
    const conv_case_t grown[] = {
        {64, 64, 148, 8, 3, 1, 1, 1},
        {48, 32, 147, 6, 3, 1, 1, 1},
    };
    for (int i = 0; i < 2; i++) {
        conv_case(&grown[i], NN_ACT_NONE, 0, EPI_NONE, 1, NULL, TOL_WINOGRAD);
        conv_case(&grown[i], NN_ACT_RELU, 0, EPI_NONE, 0, NULL, TOL_WINOGRAD);
        conv_case(&grown[i], NN_ACT_LEAKY, 0, EPI_SUM_SCALED, 1, NULL, TOL_WINOGRAD);
        conv_case(&grown[i], NN_ACT_NONE, 0, EPI_PRELU, 1, NULL, TOL_WINOGRAD);
        conv_case(&grown[i], NN_ACT_SIGMOID, 0, EPI_PRELU_SUM, 1, NULL, TOL_WINOGRAD);
    }
    /* a size where the rule picks plain Winograd */
    if (!small) {
        conv_case_t big = {64, 64, 200, 200, 3, 1, 1, 1};
        conv_case(&big, NN_ACT_LEAKY, 0, EPI_NONE, 1, NULL, TOL_WINOGRAD);
    }
}

/*
 * One state, one conv layer prepared for several shapes in turn (the
 * weight cache is reused) and two live at once (the shared scratchpad).
 */
static void test_conv_reprepare(void) {
    one_t o;
    conv_init(&o, 32, 32, 3, 1, 1, 1, 1);
    o.layer.p.conv.act = NN_ACT_LEAKY;
    o.layer.p.conv.act_params[0] = 0.2f;
    void *ds = state_new(&nn_backend_dnnl, &o, "winograd");
    void *rs = state_new(&nn_backend_ref, &o, NULL);
    const int sizes[][2] = {{20, 20}, {33, 17}, {148, 8}, {20, 20}, {8, 40}};
    nn_layout_t blk[MAX_IN] = {NN_LAYOUT_BLOCK16}, pl[MAX_IN] = {NN_LAYOUT_PLANAR};
    for (int i = 0; ds && rs && i < 5; i++) {
        feed_t f = feed_rand(1, 32, sizes[i][0], sizes[i][1], -1.f, 1.f);
        int os[3];
        if (out_shape_of(&o, &f, os) == 0) {
            size_t scratch = 0;
            float *got = run_on(&nn_backend_dnnl, ds, &o, &f, blk, NN_LAYOUT_BLOCK16, os, &scratch, 1);
            float *want = run_on(&nn_backend_ref, rs, &o, &f, pl, NN_LAYOUT_PLANAR, os, NULL, 1);
            double e = got && want ? rel_err(got, want, (size_t)os[0] * os[1] * os[2]) : INFINITY;
            CHECKF(e <= TOL_WINOGRAD, "reprepare %dx%d: error %.3g", sizes[i][0], sizes[i][1], e);
            CHECKF(scratch > 0, "winograd reports no scratchpad");
            free(got);
            free(want);
        }
        feed_free(&f);
    }
    /*
     * Two prepared at once and run in turn: the first (grown Winograd, its
     * copies in the shared scratch) must follow the scratch when the second
     * grows it.
     */
    if (ds) {
        feed_t f1 = feed_rand(1, 32, 148, 8, -1.f, 1.f), f2 = feed_rand(1, 32, 64, 60, -1.f, 1.f);
        nn_tensor_t in1 = tensor_from(f1.in[0], 32, 148, 8, NN_LAYOUT_BLOCK16);
        nn_tensor_t in2 = tensor_from(f2.in[0], 32, 64, 60, NN_LAYOUT_BLOCK16);
        nn_tensor_t out1 = tensor_new(32, 148, 8, NN_LAYOUT_BLOCK16);
        nn_tensor_t out2 = tensor_new(32, 64, 60, NN_LAYOUT_BLOCK16);
        nn_epilogue_t epi = {NULL, 1.f, NULL};
        void *l1 = NULL, *l2 = NULL;
        size_t s1 = 0, s2 = 0;
        up_error_t err = {0};
        int rc = nn_backend_dnnl.layer_prepare(ds, &o.layer, &epi, &in1, 1, &out1, 1, &l1, &s1, &err);
        if (rc == 0)
            rc = nn_backend_dnnl.layer_prepare(ds, &o.layer, &epi, &in2, 1, &out2, 1, &l2, &s2, &err);
        for (int r = 0; rc == 0 && r < 2; r++) {
            rc = nn_backend_dnnl.layer_run(ds, l2, &o.layer, &epi, &in2, 1, &out2, 1, &err);
            if (rc == 0)
                rc = nn_backend_dnnl.layer_run(ds, l1, &o.layer, &epi, &in1, 1, &out1, 1, &err);
        }
        CHECKF(rc == 0, "two live layers: %s", err.msg);
        CHECKF(s2 > 0, "the second layer did not grow the scratch");
        const feed_t *fs[2] = {&f1, &f2};
        const nn_tensor_t *outs[2] = {&out1, &out2};
        for (int k = 0; rc == 0 && k < 2; k++) {
            int os[3] = {32, outs[k]->h, outs[k]->w};
            size_t n = (size_t)os[0] * os[1] * os[2];
            float *want = run_on(&nn_backend_ref, rs, &o, fs[k], pl, NN_LAYOUT_PLANAR, os, NULL, 1);
            float *got = xmalloc(n * sizeof *got);
            nn_tensor_t dst = {got, os[0], os[1], os[2], NN_LAYOUT_PLANAR, NN_DTYPE_F32, 0, 0};
            nn_tensor_copy(&dst, outs[k]);
            double e = want ? rel_err(got, want, n) : INFINITY;
            CHECKF(e <= TOL_WINOGRAD, "two live layers, layer %d: error %.3g", k, e);
            free(got);
            free(want);
        }
        nn_backend_dnnl.layer_release(ds, l1);
        nn_backend_dnnl.layer_release(ds, l2);
        up_aligned_free(in1.data);
        up_aligned_free(in2.data);
        up_aligned_free(out1.data);
        up_aligned_free(out2.data);
        feed_free(&f1);
        feed_free(&f2);
    }
    if (ds)
        nn_backend_dnnl.destroy(ds);
    if (rs)
        nn_backend_ref.destroy(rs);
    one_fini(&o);
}

/* ---- the other ops ---- */

static void test_prelu(void) {
    const int cs[] = {3, 17, 48, 64};
    for (int i = 0; i < 4; i++)
        for (int shared = 0; shared < 2; shared++) {
            one_t o;
            one_init(&o, NN_OP_PRELU, "PReLU", 1);
            o.layer.p.prelu.n_slope = shared ? 1 : cs[i];
            o.layer.p.prelu.slope = rand_buf((size_t)o.layer.p.prelu.n_slope, -0.5f, 0.5f);
            feed_t f = feed_rand(1, cs[i], 13, 11, -1.f, 1.f);
            char what[64];
            snprintf(what, sizeof what, "prelu c%d %s", cs[i], shared ? "shared" : "per-channel");
            compare(what, &o, &f, NULL, TOL);
            feed_free(&f);
            one_fini(&o);
        }
}

static void test_concat(void) {
    const int sets[][MAX_IN] = {
        {16, 16, 32, 0}, {16, 17, 0, 0}, {3, 5, 0, 0}, {17, 3, 16, 0}, {64, 32, 32, 32},
    };
    for (int s = 0; s < 5; s++) {
        one_t o;
        feed_t f = {.scale = 1.f};
        for (int k = 0; k < MAX_IN && sets[s][k]; k++) {
            f.shape[k][0] = sets[s][k], f.shape[k][1] = 7, f.shape[k][2] = 9;
            f.in[k] = rand_buf((size_t)sets[s][k] * 7 * 9, -1.f, 1.f);
            f.n_in++;
        }
        one_init(&o, NN_OP_CONCAT, "Concat", f.n_in);
        char what[64];
        snprintf(what, sizeof what, "concat set %d", s);
        compare(what, &o, &f, NULL, TOL);
        feed_free(&f);
        one_fini(&o);
    }
}

static void test_eltwise(void) {
    const int cs[] = {3, 17, 64};
    for (int i = 0; i < 3; i++)
        for (int op = 0; op < 3; op++)
            for (int variant = 0; variant < 3; variant++) {
                one_t o;
                int n_in = variant == 2 ? 3 : 2;
                one_init(&o, NN_OP_ELTWISE, "Eltwise", n_in);
                nn_eltwise_param_t *p = &o.layer.p.eltwise;
                p->op = (nn_eltwise_op_t)op;
                if (variant >= 1) {
                    p->n_coeffs = n_in;
                    p->coeffs[0] = 0.2f, p->coeffs[1] = 1.f, p->coeffs[2] = -0.5f;
                }
                feed_t f = feed_rand(n_in, cs[i], 9, 10, -1.f, 1.f);
                char what[64];
                snprintf(what, sizeof what, "eltwise op %d c%d inputs %d coeffs %d", op, cs[i], n_in,
                         p->n_coeffs);
                compare(what, &o, &f, NULL, TOL);
                feed_free(&f);
                one_fini(&o);
            }
}

static void test_binary(void) {
    const int cs[] = {3, 17, 64};
    for (int i = 0; i < 3; i++)
        for (int op = 0; op <= NN_BINARY_RDIV; op++)
            for (int scalar = 0; scalar < 2; scalar++) {
                one_t o;
                one_init(&o, NN_OP_BINARY, "BinaryOp", scalar ? 1 : 2);
                nn_binary_param_t *p = &o.layer.p.binary;
                p->op = (nn_binary_op_t)op;
                p->with_scalar = scalar;
                p->b = 0.75f;
                /* positive inputs away from zero keep div and pow finite */
                int pos = op == NN_BINARY_DIV || op == NN_BINARY_RDIV || op == NN_BINARY_POW;
                feed_t f = feed_rand(scalar ? 1 : 2, cs[i], 8, 11, pos ? 0.5f : -1.f, pos ? 1.5f : 1.f);
                char what[64];
                snprintf(what, sizeof what, "binary op %d c%d %s", op, cs[i], scalar ? "scalar" : "tensor");
                compare(what, &o, &f, NULL, TOL);
                feed_free(&f);
                one_fini(&o);
            }
}

static void test_interp(void) {
    typedef struct {
        int type;
        float hs, ws;
        int oh, ow, ac;
    } ic_t;
    const ic_t cases[] = {
        {NN_INTERP_NEAREST, 2.f, 2.f, 0, 0, 0},   {NN_INTERP_NEAREST, 3.f, 3.f, 0, 0, 0},
        {NN_INTERP_NEAREST, 4.f, 2.f, 0, 0, 0},   {NN_INTERP_NEAREST, 0.f, 0.f, 22, 30, 0},
        {NN_INTERP_NEAREST, 1.5f, 1.5f, 0, 0, 0}, {NN_INTERP_NEAREST, 0.5f, 0.5f, 0, 0, 0},
        {NN_INTERP_BILINEAR, 2.f, 2.f, 0, 0, 0},  {NN_INTERP_BILINEAR, 0.f, 0.f, 17, 9, 1},
        {NN_INTERP_BICUBIC, 2.f, 2.f, 0, 0, 0},   {NN_INTERP_BICUBIC, 0.75f, 0.75f, 0, 0, 0},
    };
    const int cs[] = {3, 17, 64};
    for (int i = 0; i < 3; i++)
        for (int k = 0; k < (int)(sizeof cases / sizeof cases[0]); k++) {
            one_t o;
            one_init(&o, NN_OP_INTERP, "Interp", 1);
            nn_interp_param_t *p = &o.layer.p.interp;
            p->type = (nn_interp_t)cases[k].type;
            p->height_scale = cases[k].hs, p->width_scale = cases[k].ws;
            p->out_h = cases[k].oh, p->out_w = cases[k].ow;
            p->align_corner = cases[k].ac;
            feed_t f = feed_rand(1, cs[i], 11, 15, -1.f, 1.f);
            char what[64];
            snprintf(what, sizeof what, "interp case %d c%d", k, cs[i]);
            compare(what, &o, &f, NULL, TOL);
            feed_free(&f);
            one_fini(&o);
        }
}

static void test_pixelshuffle(void) {
    const int rs[][2] = {{2, 3}, {4, 3}, {2, 16}, {2, 5}};
    for (int i = 0; i < 4; i++)
        for (int mode = 0; mode < 2; mode++) {
            one_t o;
            one_init(&o, NN_OP_PIXELSHUFFLE, "PixelShuffle", 1);
            o.layer.p.pixelshuffle.factor = rs[i][0];
            o.layer.p.pixelshuffle.mode = mode;
            feed_t f = feed_rand(1, rs[i][1] * rs[i][0] * rs[i][0], 7, 6, -1.f, 1.f);
            char what[64];
            snprintf(what, sizeof what, "pixelshuffle r%d c%d mode %d", rs[i][0], rs[i][1], mode);
            compare(what, &o, &f, NULL, TOL);
            feed_free(&f);
            one_fini(&o);
        }
}

/* ---- storage grids (tensor.h: Storage padding) ---- */

/* A tensor of c x h x w stored on a ph x pw grid (0: none), every float garbage. */
static nn_tensor_t grid_new(int c, int h, int w, nn_layout_t layout, int ph, int pw) {
    nn_tensor_t t = {NULL, c, h, w, layout, NN_DTYPE_F32, ph, pw};
    size_t n = nn_tensor_floats(&t);
    t.data = up_aligned_alloc(n * sizeof(float), 1);
    for (size_t i = 0; i < n; i++)
        t.data[i] = 1e30f;
    return t;
}

/* 1 when the grid margin and the padded lanes of t are all zero. */
static int margins_are_zero(const nn_tensor_t *t) {
    int sh = nn_tensor_sh(t), sw = nn_tensor_sw(t), n_blocks = nn_layout_channels(t->layout, t->c) / 16;
    for (int b = 0; b < n_blocks; b++)
        for (int y = 0; y < sh; y++)
            for (int x = 0; x < sw; x++)
                for (int l = 0; l < 16; l++) {
                    int in_image = y < t->h && x < t->w && b * 16 + l < t->c;
                    if (!in_image && t->data[(((size_t)b * sh + y) * sw + x) * 16 + l] != 0.f)
                        return 0;
                }
    return 1;
}

/* One tensor of a grid case: shape, layout and grid (0: unpadded). */
typedef struct gspec {
    int c, h, w;
    nn_layout_t layout;
    int ph, pw;
} gspec_t;

/*
 * Run o on dnnl with inputs and output (and the epilogue sum, on the
 * output's grid) as specified, twice, and compare the output's image with
 * ref on planar tensors; the output's margin must come back zero.
 */
static void grid_case(const char *what, one_t *o, int n_in, const gspec_t *ins, const gspec_t *outs,
                      int with_sum, float scale, double tol) {
    feed_t f = {.n_in = n_in, .scale = scale};
    for (int k = 0; k < n_in; k++) {
        f.shape[k][0] = ins[k].c, f.shape[k][1] = ins[k].h, f.shape[k][2] = ins[k].w;
        f.in[k] = rand_buf((size_t)ins[k].c * ins[k].h * ins[k].w, -1.f, 1.f);
    }
    size_t n = (size_t)outs->c * outs->h * outs->w;
    if (with_sum)
        f.sum = rand_buf(n, -1.f, 1.f);
    void *rs = state_new(&nn_backend_ref, o, NULL), *ds = state_new(&nn_backend_dnnl, o, NULL);
    nn_layout_t planar[MAX_IN] = {NN_LAYOUT_PLANAR, NN_LAYOUT_PLANAR, NN_LAYOUT_PLANAR, NN_LAYOUT_PLANAR};
    int os[3] = {outs->c, outs->h, outs->w};
    float *want = rs ? run_on(&nn_backend_ref, rs, o, &f, planar, NN_LAYOUT_PLANAR, os, NULL, 1) : NULL;
    nn_tensor_t in[MAX_IN], out = grid_new(outs->c, outs->h, outs->w, outs->layout, outs->ph, outs->pw),
                            sum = {0};
    for (int k = 0; k < n_in; k++) {
        in[k] = grid_new(ins[k].c, ins[k].h, ins[k].w, ins[k].layout, ins[k].ph, ins[k].pw);
        nn_tensor_t src = {f.in[k], ins[k].c, ins[k].h, ins[k].w, NN_LAYOUT_PLANAR, NN_DTYPE_F32, 0, 0};
        nn_tensor_copy(&in[k], &src);
        CHECKF(margins_are_zero(&in[k]), "%s: nn_tensor_copy left garbage in input %d's margin", what, k);
    }
    nn_epilogue_t epi = {NULL, scale, NULL};
    if (with_sum) {
        sum = grid_new(outs->c, outs->h, outs->w, outs->layout, outs->ph, outs->pw);
        nn_tensor_t src = {f.sum, outs->c, outs->h, outs->w, NN_LAYOUT_PLANAR, NN_DTYPE_F32, 0, 0};
        nn_tensor_copy(&sum, &src);
        epi.sum = &sum;
    }
    const nn_epilogue_t *ep = o->layer.op == NN_OP_CONV ? &epi : NULL;
    up_error_t err = {0};
    void *ls = NULL;
    size_t sb = 0;
    int rc =
        ds && want ? nn_backend_dnnl.layer_prepare(ds, &o->layer, ep, in, n_in, &out, 1, &ls, &sb, &err) : -1;
    CHECKF(rc == 0, "%s: prepare: %s", what, err.msg);
    for (int r = 0; rc == 0 && r < 2; r++) {
        rc = nn_backend_dnnl.layer_run(ds, ls, &o->layer, ep, in, n_in, &out, 1, &err);
        CHECKF(rc == 0, "%s: run: %s", what, err.msg);
        if (rc == 0 && out.layout == NN_LAYOUT_BLOCK16)
            CHECKF(margins_are_zero(&out), "%s: run %d left garbage in the output's margin", what, r);
        if (rc == 0 && r == 0) /* the second run must rewrite the margin too */
            for (size_t i = 0; i < nn_tensor_floats(&out); i++)
                out.data[i] = out.data[i] == 0.f ? 1e30f : out.data[i];
    }
    if (ls)
        nn_backend_dnnl.layer_release(ds, ls);
    if (rc == 0) {
        float *got = xmalloc(n * sizeof *got);
        nn_tensor_t dst = {got, outs->c, outs->h, outs->w, NN_LAYOUT_PLANAR, NN_DTYPE_F32, 0, 0};
        nn_tensor_copy(&dst, &out);
        double e = rel_err(got, want, n);
        CHECKF(e <= tol, "%s: error %.3g > %.3g", what, e, tol);
        free(got);
    }
    for (int k = 0; k < n_in; k++)
        up_aligned_free(in[k].data);
    up_aligned_free(out.data);
    up_aligned_free(sum.data);
    free(want);
    if (rs)
        nn_backend_ref.destroy(rs);
    if (ds)
        nn_backend_dnnl.destroy(ds);
    feed_free(&f);
}

static void test_grids(void) {
    const nn_layout_t B = NN_LAYOUT_BLOCK16, P = NN_LAYOUT_PLANAR;
    one_t o;
    /* the backend wants a grid where Winograd's tile grid degenerates, and only there */
    conv_init(&o, 64, 64, 3, 1, 1, 1, 1);
    void *ds = state_new(&nn_backend_dnnl, &o, NULL);
    int ph = 0, pw = 0;
    if (ds) {
        nn_backend_dnnl.blob_pad(ds, 64, 148, 148, &ph, &pw);
        CHECKF(ph == 148 && pw == 149, "148x148 gets a %dx%d grid, not 148x149", ph, pw);
        int qh, qw;
        nn_backend_dnnl.blob_pad(ds, 64, 152, 152, &qh, &qw);
        CHECKF(qh == 152 && qw == 152, "152x152 gets a %dx%d grid", qh, qw);
        nn_backend_dnnl.blob_pad(ds, 64, 148, 8, &ph, &pw);
        CHECKF(ph * pw > 148 * 8, "148x8 gets no grid (%dx%d)", ph, pw);
        nn_backend_dnnl.destroy(ds);
    }
    o.layer.p.conv.act = NN_ACT_LEAKY;
    o.layer.p.conv.act_params[0] = 0.2f;
    gspec_t g20 = {64, 20, 20, B, 21, 23}, g20b = {64, 20, 20, B, 24, 21}, plain20 = {64, 20, 20, B, 0, 0};
    /* on the grid, input in place (Winograd), a residual sum on the grid too */
    grid_case("conv 64->64 on the grid, sum*0.2", &o, 1, &g20, &g20, 1, 0.2f, TOL_WINOGRAD);
    /* on the output's grid, the input copied from another grid / from no grid */
    grid_case("conv 64->64 from another grid", &o, 1, &g20b, &g20, 0, 1.f, TOL_WINOGRAD);
    grid_case("conv 64->64 onto a grid", &o, 1, &plain20, &g20, 1, 1.f, TOL_WINOGRAD);
    /* off the grid: a dense copy of the input */
    grid_case("conv 64->64 off the grid", &o, 1, &g20, &plain20, 1, 1.f, TOL_WINOGRAD);
    /* Winograd grown onto the input's own grid, the output copied out */
    gspec_t tall = {64, 148, 8, B, ph, pw}, tall_plain = {64, 148, 8, B, 0, 0};
    grid_case("conv 64->64 grown in place", &o, 1, &tall, &tall_plain, 0, 1.f, TOL_WINOGRAD);
    grid_case("conv 64->64 148x8 on the grid", &o, 1, &tall, &tall, 1, 0.2f, TOL_WINOGRAD);
    one_fini(&o);
    /* a planar 3-channel input onto a grid (the first conv of a network) */
    conv_init(&o, 3, 64, 3, 1, 1, 1, 1);
    gspec_t rgb = {3, 20, 20, P, 0, 0};
    grid_case("conv 3->64 planar onto a grid", &o, 1, &rgb, &g20, 0, 1.f, TOL);
    one_fini(&o);
    /* a stride-2 conv writing a padded output: a dense copy moved into the image */
    conv_init(&o, 32, 32, 3, 2, 1, 1, 0);
    o.layer.p.conv.act = NN_ACT_SIGMOID;
    gspec_t big = {32, 40, 40, B, 0, 0}, small = {32, 20, 20, B, 21, 23};
    grid_case("conv stride 2 onto a grid, sum", &o, 1, &big, &small, 1, 1.f, TOL);
    one_fini(&o);
    /* 17 channels: padded lanes and margin both */
    conv_init(&o, 48, 17, 3, 1, 1, 1, 1);
    gspec_t g48 = {48, 20, 20, B, 21, 23}, g17 = {17, 20, 20, B, 21, 23};
    grid_case("conv 48->17 on the grid", &o, 1, &g48, &g17, 0, 1.f, TOL_WINOGRAD);
    one_fini(&o);

    /* the other ops on one grid, and off it */
    one_init(&o, NN_OP_PRELU, "PReLU", 1);
    o.layer.p.prelu.n_slope = 64;
    o.layer.p.prelu.slope = rand_buf(64, -0.5f, 0.5f);
    grid_case("prelu on the grid", &o, 1, &g20, &g20, 0, 1.f, TOL);
    grid_case("prelu between grids", &o, 1, &g20, &g20b, 0, 1.f, TOL);
    one_fini(&o);
    one_init(&o, NN_OP_ELTWISE, "Eltwise", 2);
    o.layer.p.eltwise.op = NN_ELTWISE_SUM;
    o.layer.p.eltwise.n_coeffs = 2;
    o.layer.p.eltwise.coeffs[0] = 0.2f, o.layer.p.eltwise.coeffs[1] = 1.f;
    gspec_t two[2] = {g20, g20}, mixed[2] = {g20, plain20};
    grid_case("eltwise sum on the grid", &o, 2, two, &g20, 0, 1.f, TOL);
    grid_case("eltwise sum of mixed grids", &o, 2, mixed, &g20, 0, 1.f, TOL);
    one_fini(&o);
    one_init(&o, NN_OP_CONCAT, "Concat", 2);
    gspec_t cat_in[2] = {{32, 20, 20, B, 21, 23}, {16, 20, 20, B, 21, 23}}, cat_out = {48, 20, 20, B, 21, 23};
    grid_case("concat on the grid", &o, 2, cat_in, &cat_out, 0, 1.f, TOL);
    one_fini(&o);
    one_init(&o, NN_OP_INTERP, "Interp", 1);
    o.layer.p.interp.type = NN_INTERP_NEAREST;
    o.layer.p.interp.height_scale = o.layer.p.interp.width_scale = 2.f;
    gspec_t up = {64, 40, 40, B, 0, 0};
    grid_case("nearest x2 from a grid", &o, 1, &g20, &up, 0, 1.f, TOL);
    one_fini(&o);
}

/* ---- errors ---- */

static void test_errors(void) {
    /* a layer type the backend does not run */
    one_t o;
    one_init(&o, NN_OP_SPLIT, "Split", 1);
    void *ds = state_new(&nn_backend_dnnl, &o, NULL);
    if (ds) {
        nn_tensor_t in = tensor_new(3, 4, 4, NN_LAYOUT_PLANAR), out = tensor_new(3, 4, 4, NN_LAYOUT_PLANAR);
        void *ls = NULL;
        size_t sb = 0;
        up_error_t err = {0};
        int rc = nn_backend_dnnl.layer_prepare(ds, &o.layer, NULL, &in, 1, &out, 1, &ls, &sb, &err);
        CHECK(rc == UP_ERR_UNSUPPORTED);
        CHECK(strstr(err.msg, "test_Split") != NULL);
        up_aligned_free(in.data);
        up_aligned_free(out.data);
        nn_backend_dnnl.destroy(ds);
    }
    /* shapes oneDNN refuses: the message names the layer and the status */
    one_t c;
    conv_init(&c, 16, 16, 3, 1, 1, 1, 1);
    ds = state_new(&nn_backend_dnnl, &c, NULL);
    if (ds) {
        nn_tensor_t in = tensor_new(16, 8, 8, NN_LAYOUT_BLOCK16);
        nn_tensor_t out = tensor_new(16, 3, 3, NN_LAYOUT_BLOCK16);
        nn_epilogue_t epi = {NULL, 1.f, NULL};
        void *ls = NULL;
        size_t sb = 0;
        up_error_t err = {0};
        int rc = nn_backend_dnnl.layer_prepare(ds, &c.layer, &epi, &in, 1, &out, 1, &ls, &sb, &err);
        CHECK(rc == UP_ERR_BACKEND);
        CHECKF(strstr(err.msg, "test_Convolution") && strstr(err.msg, "invalid"), "message: %s", err.msg);
        if (rc == 0)
            nn_backend_dnnl.layer_release(ds, ls);
        up_aligned_free(in.data);
        up_aligned_free(out.data);
        nn_backend_dnnl.destroy(ds);
    }
    one_fini(&c);
}

/* ---- whole models ---- */

static int file_exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0;
}

static void test_model(const char *dir, const char *name, int size) {
    char param[1024], bin[1024];
    snprintf(param, sizeof param, "%s/%s.param", dir, name);
    snprintf(bin, sizeof bin, "%s/%s.bin", dir, name);
    if (!file_exists(param) || !file_exists(bin)) {
        printf("skip %s: not in %s\n", name, dir);
        return;
    }
    nn_model_t *m = NULL;
    nn_net_t *ref = NULL, *dn = NULL;
    up_error_t err = {0};
    int rc = nn_model_load(param, bin, &m, &err);
    CHECKF(rc == 0, "load %s: %s", name, err.msg);
    if (rc)
        return;
    int oc, oh, ow;
    rc = nn_model_output_shape(m, 3, size, size, &oc, &oh, &ow, &err);
    CHECKF(rc == 0, "%s output shape: %s", name, err.msg);
    if (rc == 0)
        rc = nn_net_new(m, NN_BACKEND_REF, 2, &ref, &err);
    if (rc == 0)
        rc = nn_net_new(m, NN_BACKEND_DNNL, 2, &dn, &err);
    CHECKF(rc == 0, "%s nets: %s", name, err.msg);
    if (rc == 0) {
        float *in = rand_buf((size_t)3 * size * size, 0.f, 1.f);
        size_t n = (size_t)oc * oh * ow;
        float *want = xmalloc(n * sizeof *want), *got = xmalloc(n * sizeof *got);
        rc = nn_net_run(ref, in, 3, size, size, want, &err);
        CHECKF(rc == 0, "%s ref run: %s", name, err.msg);
        for (int r = 0; rc == 0 && r < 2; r++) {
            rc = nn_net_run(dn, in, 3, size, size, got, &err);
            CHECKF(rc == 0, "%s dnnl run: %s", name, err.msg);
        }
        if (rc == 0) {
            double e = rel_err(got, want, n);
            /* hundreds of layers in fp32: still far below one 8-bit step */
            CHECKF(e <= 5e-5, "%s %dx%d: dnnl vs ref error %.3g", name, size, size, e);
            printf("%s %dx%d: dnnl vs ref max error %.3g\n", name, size, size, e);
        }
        free(in);
        free(want);
        free(got);
    }
    nn_net_free(dn);
    nn_net_free(ref);
    nn_model_free(m);
}

int main(void) {
    test_conv();
    test_conv_reprepare();
    test_prelu();
    test_concat();
    test_eltwise();
    test_binary();
    test_interp();
    test_pixelshuffle();
    test_grids();
    test_errors();
    const char *models = getenv("UPRES_TEST_MODELS");
    if (models && *models) {
        int small = test_sanitized();
        test_model(models, "realesr-animevideov3-x4", small ? 12 : 24);
        test_model(models, "realesr-animevideov3-x3", small ? 10 : 20);
        test_model(models, "realesrgan-x4plus", small ? 6 : 12);
    }
    return test_summary();
}
