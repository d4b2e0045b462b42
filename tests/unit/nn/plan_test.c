/*
 * plan_test.c - the planner and executor (src/nn/plan.c).
 *
 * Small graphs with random fp32 weights run through nn_net_run on both
 * backends and are compared with the same graph computed op by op with
 * nn_op_* on separate planar tensors (no fusion, no views, no reuse). The
 * graphs hold every trick the planner plays: Split aliases, Conv->PReLU and
 * Conv->Eltwise/BinaryOp fusion, concat views that grow (a dense block),
 * a concat that must copy, and buffer reuse along a chain (checked through
 * the planned size). Shape errors and replanning are covered too, and the
 * abort flag (nn_net_set_abort): set while a shape is planned, planning
 * stops; set before a run, the run stops at once with UP_ERR_CANCELLED and
 * leaves the output alone; set by another thread
 * during a run, it stops between two layers; cleared, the next run gives
 * the same result as a run that never had a flag.
 *
 * Storage grids (tensor.h): at 148 rows oneDNN's Winograd wants a taller
 * grid, so on dnnl the same graphs at 3x148x8 plan their values on padded
 * grids; they must match the op-by-op result, plan fewer bytes than with
 * grids off (UPRES_DNNL_GRIDS=0, where every such conv keeps a grown copy
 * of its input and output in the scratch: the grids are really there) and
 * agree with the grid-less plan.
 *
 * bf16 (nn_net_set_precision): the same graphs on dnnl in bf16 against dnnl
 * in fp32, within a bf16 tolerance (PSNR >= 35 dB on the output's range),
 * not bit-identical (bf16 really ran), with a smaller planned size where
 * most values can be bf16 (they really are stored in bf16), stable across
 * runs and replans; on a CPU
 * without AVX512_BF16 these checks are skipped, saying why. The ref backend
 * refuses bf16 and resolves auto to fp32.
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/clock.h"
#include "nn/model.h"
#include "nn/nn.h"
#include "nn/ops.h"
#include "test.h"

static uint32_t rng = 12345;
static float frand(void) {
    rng = rng * 1664525u + 1013904223u;
    return (float)(rng >> 8) / (float)(1u << 24) * 2.0f - 1.0f;
}

/* A .bin for the model text: tag 0 + fp32 weights for convs, raw biases and slopes. */
static void *make_bin(const char *param, size_t *size) {
    nn_model_t m = {0};
    up_error_t err;
    if (nn_param_parse(param, strlen(param), &m, &err)) {
        fprintf(stderr, "bad test model: %s\n", err.msg);
        exit(2);
    }
    size_t cap = 1 << 20, n = 0;
    unsigned char *b = malloc(cap);
#define PUT(ptr, len)                                                                                        \
    do {                                                                                                     \
        while (n + (len) > cap)                                                                              \
            b = realloc(b, cap *= 2);                                                                        \
        memcpy(b + n, (ptr), (len));                                                                         \
        n += (len);                                                                                          \
    } while (0)
    for (int i = 0; i < m.n_layers; i++) {
        const nn_layer_t *l = &m.layers[i];
        if (l->op == NN_OP_CONV) {
            uint32_t tag = 0;
            PUT(&tag, 4);
            for (int k = 0; k < l->p.conv.weight_data_size; k++) {
                float v = frand() * 0.3f;
                PUT(&v, 4);
            }
            for (int k = 0; l->p.conv.bias_term && k < l->p.conv.n_out; k++) {
                float v = frand() * 0.1f;
                PUT(&v, 4);
            }
        } else if (l->op == NN_OP_PRELU) {
            for (int k = 0; k < l->p.prelu.n_slope; k++) {
                float v = frand() * 0.5f;
                PUT(&v, 4);
            }
        }
    }
#undef PUT
    nn_model_fini(&m);
    *size = n;
    return b;
}

/* The graph computed op by op on planar tensors, one buffer per blob. */
static float *run_plain(const nn_model_t *m, const float *in, int c, int h, int w, int *oc, int *oh,
                        int *ow) {
    nn_tensor_t *t = calloc((size_t)m->n_blobs, sizeof *t);
    int done = 0;
    /* layers are in file order, which is topological in these test graphs */
    for (int i = 0; i < m->n_layers; i++) {
        const nn_layer_t *l = &m->layers[i];
        int ins[16][3], outs[16][3];
        for (int k = 0; k < l->n_in; k++) {
            ins[k][0] = t[l->in[k]].c;
            ins[k][1] = t[l->in[k]].h;
            ins[k][2] = t[l->in[k]].w;
        }
        if (l->op == NN_OP_INPUT) {
            outs[0][0] = c, outs[0][1] = h, outs[0][2] = w;
        } else if (nn_layer_output_shapes(l, (const int(*)[3])ins, l->n_in, outs, NULL)) {
            goto out;
        }
        for (int k = 0; k < l->n_out; k++) {
            nn_tensor_t *o = &t[l->out[k]];
            *o = (nn_tensor_t){.c = outs[k][0], .h = outs[k][1], .w = outs[k][2], .layout = NN_LAYOUT_PLANAR};
            o->data = calloc(nn_tensor_floats(o), sizeof(float));
        }
        nn_tensor_t in_t[16];
        for (int k = 0; k < l->n_in; k++)
            in_t[k] = t[l->in[k]];
        const nn_tensor_t *o = &t[l->out[0]];
        switch (l->op) {
        case NN_OP_INPUT: memcpy(o->data, in, sizeof(float) * (size_t)c * h * w); break;
        case NN_OP_SPLIT:
            for (int k = 0; k < l->n_out; k++)
                memcpy(t[l->out[k]].data, in_t[0].data, sizeof(float) * nn_tensor_floats(&in_t[0]));
            break;
        case NN_OP_CONV: nn_op_conv(&l->p.conv, NULL, &in_t[0], o, NULL); break;
        case NN_OP_PRELU: nn_op_prelu(&l->p.prelu, &in_t[0], o); break;
        case NN_OP_CONCAT: nn_op_concat(in_t, l->n_in, o); break;
        case NN_OP_ELTWISE: nn_op_eltwise(&l->p.eltwise, in_t, l->n_in, o); break;
        case NN_OP_BINARY: nn_op_binary(&l->p.binary, in_t, l->n_in, o); break;
        case NN_OP_INTERP: nn_op_interp(&l->p.interp, &in_t[0], o); break;
        case NN_OP_PIXELSHUFFLE: nn_op_pixelshuffle(&l->p.pixelshuffle, &in_t[0], o); break;
        default: break;
        }
    }
    done = 1;
out:;
    float *result = NULL;
    if (done) {
        nn_tensor_t *o = &t[m->output_blob];
        *oc = o->c, *oh = o->h, *ow = o->w;
        result = o->data;
        o->data = NULL;
    }
    for (int b = 0; b < m->n_blobs; b++)
        free(t[b].data);
    free(t);
    return result;
}

static void check_graph(const char *name, const char *param, int c, int h, int w) {
    size_t bin_size;
    void *bin = make_bin(param, &bin_size);
    nn_model_t *m = NULL;
    up_error_t err;
    CHECKF(nn_model_load_mem(param, strlen(param), bin, bin_size, &m, &err) == 0, "%s: %s", name, err.msg);
    free(bin);
    if (!m)
        return;
    size_t n_in = (size_t)c * h * w;
    float *in = malloc(n_in * sizeof(float));
    for (size_t i = 0; i < n_in; i++)
        in[i] = frand() * 0.5f + 0.5f;
    int oc = 0, oh = 0, ow = 0;
    float *want = run_plain(m, in, c, h, w, &oc, &oh, &ow);
    CHECK(want != NULL);
    int sc, sh, sw;
    CHECK(nn_model_output_shape(m, c, h, w, &sc, &sh, &sw, &err) == 0 && sc == oc && sh == oh && sw == ow);
    for (int be = NN_BACKEND_REF; want && be <= NN_BACKEND_DNNL; be++) {
        nn_net_t *net = NULL;
        CHECKF(nn_net_new(m, (nn_backend_kind_t)be, 2, &net, &err) == 0, "%s", err.msg);
        if (!net)
            continue;
        size_t n_out = (size_t)oc * oh * ow;
        float *got = malloc(n_out * sizeof(float));
        /* twice: the second run reuses the plan and must give the same bits */
        for (int rep = 0; rep < 2; rep++) {
            CHECKF(nn_net_run(net, in, c, h, w, got, &err) == 0, "%s: %s", name, err.msg);
            double max_err = 0, max_val = 0;
            for (size_t i = 0; i < n_out; i++) {
                double d = fabs((double)got[i] - want[i]);
                max_err = d > max_err ? d : max_err;
                max_val = fabs(want[i]) > max_val ? fabs(want[i]) : max_val;
            }
            CHECKF(max_err <= 1e-4 * (1 + max_val), "%s on %s: max abs error %g (max value %g)", name,
                   nn_backend_name((nn_backend_kind_t)be), max_err, max_val);
        }
        /* a different shape replans; back again replans again */
        float *small = calloc((size_t)oc * (oh / 2) * (ow / 2) * 4, sizeof(float));
        CHECKF(nn_net_run(net, in, c, h / 2, w / 2, small, &err) == 0, "%s replan: %s", name, err.msg);
        CHECK(nn_net_run(net, in, c, h, w, got, &err) == 0);
        free(small);
        free(got);
        nn_net_free(net);
    }
    free(want);
    free(in);
    nn_model_free(m);
}

/* Every planner trick in one graph; a dense block like RRDB's. */
static const char *dense = "7767517\n"
                           "16 21\n"
                           "Input        data  0 1 data\n"
                           "Split        sp    1 2 data d0 d1\n"
                           "Convolution  c0    1 1 d0 x 0=16 1=3 4=1 5=1 6=432\n"
                           "Split        sx    1 4 x x_a x_b x_c x_d\n"
                           "Convolution  c1    1 1 x_a y 0=16 1=3 4=1 5=1 6=2304 9=2 -23310=1,2.000000e-01\n"
                           "Split        sy    1 2 y y_a y_b\n"
                           "Concat       cat1  2 1 x_b y_a xy\n"
                           "Convolution  c2    1 1 xy z 0=16 1=3 4=1 5=1 6=4608\n"
                           "PReLU        pr    1 1 z zp 0=16\n"
                           "Concat       cat2  3 1 x_c y_b zp xyz\n"
                           "Convolution  c3    1 1 xyz wv 0=16 1=3 4=1 5=1 6=6912\n"
                           "Eltwise      e     2 1 wv x_d s 0=1 -23301=2,2.000000e-01,1.000000e+00\n"
                           "Convolution  c4    1 1 s o 0=12 1=3 4=1 5=1 6=1728\n"
                           "PixelShuffle ps    1 1 o o2 0=2\n"
                           "Interp       up    1 1 d1 d1u 0=1 1=2.000000e+00 2=2.000000e+00\n"
                           "BinaryOp     add   2 1 o2 d1u output 0=0\n";

/* Concats that cannot be views on BLOCK16 (5 channels; the graph input). */
static const char *copies = "7767517\n"
                            "6 7\n"
                            "Input        data  0 1 data\n"
                            "Split        sp    1 2 data d0 d1\n"
                            "Convolution  a     1 1 d0 av 0=5 1=3 4=1 5=1 6=135 9=1\n"
                            "Concat       cat   2 1 av d1 cv\n"
                            "Convolution  b     1 1 cv bv 0=4 1=1 5=1 6=32\n"
                            "Interp       dn    1 1 bv output 0=3 1=5.000000e-01 2=5.000000e-01\n";

/* bf16 against fp32 on dnnl (see the top of the file). */
/* smaller: the planned size must shrink (graphs whose values are mostly bf16, not a few tiny ones) */
static void check_bf16(const char *name, const char *param, int c, int h, int w, int smaller) {
    size_t bin_size;
    void *bin = make_bin(param, &bin_size);
    nn_model_t *m = NULL;
    nn_net_t *f32 = NULL, *b16 = NULL, *ref = NULL;
    up_error_t err;
    CHECKF(nn_model_load_mem(param, strlen(param), bin, bin_size, &m, &err) == 0, "%s: %s", name, err.msg);
    free(bin);
    if (!m)
        return;
    /* the ref backend computes in fp32 only */
    CHECK(nn_net_new(m, NN_BACKEND_REF, 1, &ref, &err) == 0);
    if (ref) {
        CHECK(nn_net_set_precision(ref, NN_PRECISION_BF16, &err) == UP_ERR_UNSUPPORTED);
        CHECK(nn_net_set_precision(ref, NN_PRECISION_AUTO, &err) == 0);
        CHECK(nn_net_precision(ref, NULL) == NN_PRECISION_FP32);
        nn_net_free(ref);
    }
    CHECK(nn_net_new(m, NN_BACKEND_DNNL, 2, &f32, &err) == 0 &&
          nn_net_new(m, NN_BACKEND_DNNL, 2, &b16, &err) == 0);
    CHECK(f32 && nn_net_precision(f32, NULL) == NN_PRECISION_FP32); /* the default */
    if (!f32 || !b16)
        goto done;
    if (nn_net_set_precision(b16, NN_PRECISION_BF16, &err) != 0) {
        printf("SKIP bf16 %s: %s\n", name, err.msg);
        CHECK(nn_net_precision(b16, NULL) == NN_PRECISION_FP32);
        goto done;
    }
    CHECK(nn_net_precision(b16, NULL) == NN_PRECISION_BF16);
    size_t n_in = (size_t)c * h * w;
    int oc, oh, ow;
    CHECK(nn_model_output_shape(m, c, h, w, &oc, &oh, &ow, &err) == 0);
    size_t n_out = (size_t)oc * oh * ow;
    float *in = malloc(n_in * sizeof(float)), *want = malloc(n_out * sizeof(float)),
          *got = malloc(n_out * sizeof(float)), *again = malloc(n_out * sizeof(float));
    for (size_t i = 0; i < n_in; i++)
        in[i] = frand() * 0.5f + 0.5f;
    CHECKF(nn_net_run(f32, in, c, h, w, want, &err) == 0, "%s: %s", name, err.msg);
    CHECKF(nn_net_run(b16, in, c, h, w, got, &err) == 0, "%s bf16: %s", name, err.msg);
    double se = 0, lo = want[0], hi = want[0];
    for (size_t i = 0; i < n_out; i++) {
        se += ((double)got[i] - want[i]) * ((double)got[i] - want[i]);
        lo = want[i] < lo ? want[i] : lo;
        hi = want[i] > hi ? want[i] : hi;
    }
    double range = hi - lo > 0 ? hi - lo : 1;
    double psnr = se == 0 ? 999 : 10 * log10(range * range / (se / (double)n_out));
    printf("bf16 %s %dx%dx%d: PSNR %.1f dB against fp32 (output range %.3g)\n", name, c, h, w, psnr, range);
    CHECKF(psnr >= 35, "%s: bf16 PSNR %.1f dB against fp32", name, psnr);
    CHECKF(se > 0, "%s: bf16 output is bit-identical to fp32: bf16 did not run", name);
    size_t size_f32 = 0, size_b16 = 0;
    CHECK(nn_net_plan_size(f32, c, h, w, &size_f32, &err) == 0 &&
          nn_net_plan_size(b16, c, h, w, &size_b16, &err) == 0);
    printf("bf16 %s: planned %zu bytes, fp32 %zu\n", name, size_b16, size_f32);
    CHECKF(!smaller || size_b16 < size_f32, "%s: bf16 plan %zu bytes, fp32 %zu", name, size_b16, size_f32);
    /* the same bits again, after a replan for another shape and back */
    float *small = malloc(n_out * sizeof(float));
    CHECK(nn_net_run(b16, in, c, h / 2, w / 2, small, &err) == 0);
    CHECK(nn_net_run(b16, in, c, h, w, again, &err) == 0);
    CHECKF(memcmp(got, again, n_out * sizeof(float)) == 0, "%s: bf16 runs differ", name);
    /* back to fp32: the fp32 bits exactly */
    CHECK(nn_net_set_precision(b16, NN_PRECISION_FP32, &err) == 0);
    CHECK(nn_net_run(b16, in, c, h, w, again, &err) == 0);
    CHECKF(memcmp(want, again, n_out * sizeof(float)) == 0, "%s: fp32 after bf16 differs", name);
    free(small);
    free(in);
    free(want);
    free(got);
    free(again);
done:
    nn_net_free(f32);
    nn_net_free(b16);
    nn_model_free(m);
}

/*
 * An RRDB-like block at 64 channels (what the AMX kernels are built for):
 * a dense block over a concat, a residual sum in a conv's epilogue and one
 * as an Eltwise, a nearest 2x Interp, and a 3-channel last conv.
 */
static const char *rrdb = "7767517\n"
                          "13 17\n"
                          "Input        data  0 1 data\n"
                          "Convolution  c0    1 1 data f 0=64 1=3 4=1 5=1 6=1728\n"
                          "Split        sf    1 3 f f_a f_b f_c\n"
                          "Convolution  c1    1 1 f_a y 0=32 1=3 4=1 5=1 6=18432 9=2 -23310=1,2.000000e-01\n"
                          "Split        sy    1 2 y y_a y_b\n"
                          "Concat       cat1  2 1 f_b y_a fy\n"
                          "Convolution  c2    1 1 fy z 0=64 1=3 4=1 5=1 6=55296\n"
                          "Eltwise      e1    2 1 z f_c r 0=1 -23301=2,2.000000e-01,1.000000e+00\n"
                          "Split        sr    1 2 r r_a r_b\n"
                          "Eltwise      e2    2 1 r_a r_b t 0=1 -23301=2,5.000000e-01,2.500000e-01\n"
                          "Interp       up    1 1 t tu 0=1 1=2.000000e+00 2=2.000000e+00\n"
                          "Convolution  c3    1 1 tu u 0=64 1=3 4=1 5=1 6=36864 9=1\n"
                          "Convolution  c4    1 1 u output 0=3 1=3 4=1 5=1 6=1728\n";

/* A chain of ten convolutions: two buffers must be enough. */
static void check_reuse(void) {
    char param[4096];
    int n = snprintf(param, sizeof param, "7767517\n11 11\nInput data 0 1 data\n");
    for (int i = 0; i < 10; i++) {
        char src[16], dst[16];
        snprintf(src, sizeof src, i ? "b%d" : "data", i - 1);
        snprintf(dst, sizeof dst, i == 9 ? "output" : "b%d", i);
        n +=
            snprintf(param + n, sizeof param - (size_t)n, "Convolution c%d 1 1 %s %s 0=16 1=3 4=1 5=1 6=%d\n",
                     i, src, dst, (i ? 16 : 3) * 16 * 9);
    }
    size_t bin_size;
    void *bin = make_bin(param, &bin_size);
    nn_model_t *m = NULL;
    up_error_t err;
    CHECKF(nn_model_load_mem(param, strlen(param), bin, bin_size, &m, &err) == 0, "%s", err.msg);
    free(bin);
    nn_net_t *net = NULL;
    if (m && nn_net_new(m, NN_BACKEND_REF, 1, &net, &err) == 0) {
        size_t bytes = 0;
        CHECK(nn_net_plan_size(net, 3, 32, 32, &bytes, &err) == 0);
        /* two ping-pong buffers, the input, and one row scratch for all convs */
        size_t one = 16 * 32 * 32 * sizeof(float), input = 3 * 32 * 32 * sizeof(float);
        size_t rows = (16 * 3 * 34 + 32 + 16) * sizeof(float);
        CHECKF(bytes <= 2 * one + input + rows, "a chain of 10 convs planned %zu bytes, expected at most %zu",
               bytes, 2 * one + input + rows);
    }
    nn_net_free(net);
    nn_model_free(m);
}

/* Sets *flag once delay_s seconds have passed since start (mono_s). */
typedef struct setter {
    atomic_int *flag;
    double start, delay_s;
} setter_t;

static void *set_later(void *arg) {
    setter_t *st = arg;
    while (mono_s() - st->start < st->delay_s)
        usleep(1000);
    atomic_store(st->flag, 1);
    return NULL;
}

#define ABORT_CONVS 30

/* The abort flag: before a run, during a run (another thread), cleared. */
static void check_abort(void) {
    char param[8192];
    int n = snprintf(param, sizeof param, "7767517\n%d %d\nInput data 0 1 data\n", ABORT_CONVS + 1,
                     ABORT_CONVS + 1);
    for (int i = 0; i < ABORT_CONVS; i++) {
        char src[16], dst[16];
        snprintf(src, sizeof src, i ? "b%d" : "data", i - 1);
        snprintf(dst, sizeof dst, i == ABORT_CONVS - 1 ? "output" : "b%d", i);
        n += snprintf(param + n, sizeof param - (size_t)n,
                      "Convolution c%d 1 1 %s %s 0=%d 1=3 4=1 5=1 6=%d\n", i, src, dst,
                      i == ABORT_CONVS - 1 ? 3 : 16, (i ? 16 : 3) * (i == ABORT_CONVS - 1 ? 3 : 16) * 9);
    }
    size_t bin_size;
    void *bin = make_bin(param, &bin_size);
    nn_model_t *m = NULL;
    nn_net_t *net = NULL;
    up_error_t err;
    CHECKF(nn_model_load_mem(param, strlen(param), bin, bin_size, &m, &err) == 0, "%s", err.msg);
    free(bin);
    if (!m || nn_net_new(m, NN_BACKEND_REF, 1, &net, &err) != 0) {
        CHECK(0);
        nn_model_free(m);
        return;
    }
    /* a run of about 0.2 s (ref, 1 thread): room for another thread to wake */
    const int C = 3, H = test_sanitized() ? 64 : 192, W = H;
    size_t n_out = (size_t)C * H * W;
    float *in = malloc(n_out * sizeof *in), *a = malloc(n_out * sizeof *a), *b = malloc(n_out * sizeof *b);
    for (size_t i = 0; i < n_out; i++)
        in[i] = (frand() + 1.0f) * 0.5f;
    atomic_int flag;
    atomic_init(&flag, 1);

    /* set while the shape is new: planning stops, and no half plan is kept */
    nn_net_set_abort(net, &flag);
    CHECK(nn_net_run(net, in, C, H, W, a, &err) == UP_ERR_CANCELLED);
    CHECKF(strstr(err.msg, "planning") != NULL, "%s", err.msg);
    nn_net_set_abort(net, NULL);

    /* no flag: the reference result, and its time (planned by a first run) */
    CHECKF(nn_net_run(net, in, C, H, W, a, &err) == 0, "%s", err.msg);
    double t0 = mono_s();
    CHECKF(nn_net_run(net, in, C, H, W, a, &err) == 0, "%s", err.msg);
    double t_full = mono_s() - t0;

    /* a flag that is not set costs nothing and changes nothing */
    atomic_store(&flag, 0);
    nn_net_set_abort(net, &flag);
    t0 = mono_s();
    CHECKF(nn_net_run(net, in, C, H, W, b, &err) == 0, "%s", err.msg);
    double t_watched = mono_s() - t0;
    CHECK(!memcmp(a, b, n_out * sizeof *a));

    /* set before the run: stops before the first layer, the output untouched */
    atomic_store(&flag, 1);
    memset(b, 0x7f, n_out * sizeof *b);
    float sentinel = b[0];
    t0 = mono_s();
    CHECK(nn_net_run(net, in, C, H, W, b, &err) == UP_ERR_CANCELLED);
    double t_set = mono_s() - t0;
    CHECKF(strstr(err.msg, "step 0 of") != NULL, "%s", err.msg);
    int untouched = 1;
    for (size_t i = 0; i < n_out; i++)
        untouched &= b[i] == sentinel || (isnan(b[i]) && isnan(sentinel));
    CHECK(untouched);
    CHECKF(t_set < t_full / 4, "a set flag took %.3f s, a full run %.3f s", t_set, t_full);

    /* set by another thread a quarter into the run: stops between two layers */
    atomic_store(&flag, 0);
    setter_t st = {.flag = &flag, .start = mono_s(), .delay_s = t_full / 4};
    pthread_t th;
    CHECK(pthread_create(&th, NULL, set_later, &st) == 0);
    int rc = nn_net_run(net, in, C, H, W, b, &err);
    double t_mid = mono_s() - st.start;
    pthread_join(th, NULL);
    int step = -1, n_steps = -1;
    const char *at = strstr(err.msg, "step ");
    if (at)
        sscanf(at, "step %d of %d", &step, &n_steps);
    CHECKF(rc == UP_ERR_CANCELLED && step > 0 && step < n_steps && n_steps == ABORT_CONVS,
           "rc %d: %s (stopped at step %d of %d)", rc, rc ? err.msg : "ran to the end", step, n_steps);
    CHECKF(t_mid < t_full * 0.75, "stopped after %.3f s of a %.3f s run", t_mid, t_full);

    /* cleared: the net is whole again */
    atomic_store(&flag, 0);
    CHECKF(nn_net_run(net, in, C, H, W, b, &err) == 0, "%s", err.msg);
    CHECK(!memcmp(a, b, n_out * sizeof *a));
    nn_net_set_abort(net, NULL);
    atomic_store(&flag, 1);
    CHECKF(nn_net_run(net, in, C, H, W, b, &err) == 0, "%s", err.msg);
    printf("abort: full run %.3f s (%.3f s watched by a clear flag), set flag %.6f s, set mid-run: stopped "
           "at step %d of %d after %.3f s\n",
           t_full, t_watched, t_set, step, n_steps, t_mid);
    free(in);
    free(a);
    free(b);
    nn_net_free(net);
    nn_model_free(m);
}

static void check_errors(void) {
    size_t bin_size;
    void *bin = make_bin(dense, &bin_size);
    nn_model_t *m = NULL;
    up_error_t err;
    CHECK(nn_model_load_mem(dense, strlen(dense), bin, bin_size, &m, &err) == 0);
    free(bin);
    if (!m)
        return;
    int oc, oh, ow;
    /* a 4-channel input does not fit the first conv (3 in) */
    CHECK(nn_model_output_shape(m, 4, 8, 8, &oc, &oh, &ow, &err) == UP_ERR_FORMAT);
    CHECKF(strstr(err.msg, "c0") != NULL, "message names the layer: %s", err.msg);
    CHECK(nn_model_output_shape(m, 3, 0, 8, &oc, &oh, &ow, &err) == UP_ERR_INVALID);
    nn_net_t *net = NULL;
    CHECK(nn_net_new(m, NN_BACKEND_REF, 1, &net, &err) == 0);
    float buf[4 * 8 * 8] = {0}, out[3 * 16 * 16 * 4];
    CHECK(nn_net_run(net, buf, 4, 8, 8, out, &err) == UP_ERR_FORMAT);
    CHECK(nn_net_run(net, buf, 3, 8, 8, out, &err) == 0); /* and the net still works */
    CHECK(nn_model_conv_flops(m, 3, 8, 8) > 0);
    nn_net_free(net);
    nn_model_free(m);
}

/* dnnl with and without grids on c x h x w (see the top of the file). */
static void check_grids(const char *name, const char *param, int c, int h, int w) {
    size_t bin_size;
    void *bin = make_bin(param, &bin_size);
    nn_model_t *m = NULL;
    nn_net_t *on = NULL, *off = NULL;
    up_error_t err;
    CHECKF(nn_model_load_mem(param, strlen(param), bin, bin_size, &m, &err) == 0, "%s: %s", name, err.msg);
    free(bin);
    if (!m)
        return;
    CHECK(nn_net_new(m, NN_BACKEND_DNNL, 2, &on, &err) == 0);
    setenv("UPRES_DNNL_GRIDS", "0", 1);
    CHECK(nn_net_new(m, NN_BACKEND_DNNL, 2, &off, &err) == 0);
    unsetenv("UPRES_DNNL_GRIDS");
    int oc, oh, ow;
    CHECK(nn_model_output_shape(m, c, h, w, &oc, &oh, &ow, &err) == 0);
    size_t n_in = (size_t)c * h * w, n_out = (size_t)oc * oh * ow, size_on = 0, size_off = 0;
    float *in = malloc(n_in * sizeof(float)), *a = malloc(n_out * sizeof(float)),
          *b = malloc(n_out * sizeof(float));
    for (size_t i = 0; i < n_in; i++)
        in[i] = frand() * 0.5f + 0.5f;
    if (on && off) {
        CHECK(nn_net_plan_size(on, c, h, w, &size_on, &err) == 0 &&
              nn_net_plan_size(off, c, h, w, &size_off, &err) == 0);
        /* without grids a grown conv keeps copies of its input and output in the scratch: more bytes */
        CHECKF(size_on < size_off, "%s: %zu bytes planned with grids, %zu without: no grid?", name, size_on,
               size_off);
        CHECKF(nn_net_run(on, in, c, h, w, a, &err) == 0, "%s: %s", name, err.msg);
        CHECKF(nn_net_run(off, in, c, h, w, b, &err) == 0, "%s: %s", name, err.msg);
        double worst = 0, mag = 1;
        for (size_t i = 0; i < n_out; i++) {
            worst = fabs((double)a[i] - b[i]) > worst ? fabs((double)a[i] - b[i]) : worst;
            mag = fabs(b[i]) > mag ? fabs(b[i]) : mag;
        }
        printf("grids %s %dx%dx%d: %zu bytes planned (%zu without), max difference %.3g\n", name, c, h, w,
               size_on, size_off, worst);
        CHECKF(worst <= 1e-5 * mag, "%s: grids change the output by %g", name, worst);
    }
    free(in);
    free(a);
    free(b);
    nn_net_free(on);
    nn_net_free(off);
    nn_model_free(m);
}

int main(void) {
    check_graph("dense", dense, 3, 20, 24);
    check_graph("dense on grids", dense, 3, 148, 8);
    check_graph("rrdb on grids", rrdb, 3, 148, 8);
    check_grids("dense", dense, 3, 148, 8);
    check_grids("rrdb", rrdb, 3, 148, 8);
    check_graph("copies", copies, 3, 18, 14);
    check_bf16("dense", dense, 3, 20, 24, 1);
    check_bf16("copies", copies, 3, 18, 14, 0);
    check_bf16("rrdb", rrdb, 3, 24, 20, 1);
    check_reuse();
    check_errors();
    check_abort();
    return test_summary();
}
