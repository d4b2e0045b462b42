/*
 * conv_bf16.c - our bf16 3x3 convolution (src/nn/backend/conv_bf16.c) on
 * one layer shape, against oneDNN's bf16 convolution and its fp32
 * Winograd on the same shape is what `upres bench -p bf16` shows for
 * whole models; this prints the kernel alone: time, GFLOP/s, and its
 * largest difference from a double-precision convolution of the same
 * bf16 inputs and weights.
 *
 *   build/bench_conv_bf16 CIN COUT H W [THREADS] [RUNS]
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/xmalloc.h"
#include "nn/backend/conv_bf16.h"

static unsigned rng = 12345u;
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
static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s CIN COUT H W [THREADS] [RUNS]\n", argv[0]);
        return 2;
    }
    int cin = atoi(argv[1]), cout = atoi(argv[2]), h = atoi(argv[3]), w = atoi(argv[4]);
    int nt = argc > 5 ? atoi(argv[5]) : 0, runs = argc > 6 ? atoi(argv[6]) : 5;
    if (!cbf16_cpu_ok()) {
        printf("SKIP: this CPU has no AVX512_BF16\n");
        return 0;
    }
    nn_conv_param_t p = {0};
    p.n_in = cin, p.n_out = cout, p.kernel_w = p.kernel_h = 3, p.dilation_w = p.dilation_h = 1;
    p.stride_w = p.stride_h = 1, p.pad_left = p.pad_right = p.pad_top = p.pad_bottom = 1, p.bias_term = 1;
    p.act = NN_ACT_LEAKY, p.act_params[0] = 0.2f;
    p.weight = xmalloc((size_t)cout * cin * 9 * sizeof(float));
    p.bias = xmalloc((size_t)cout * sizeof(float));
    float ws = 1.f / sqrtf((float)cin * 9);
    for (size_t i = 0; i < (size_t)cout * cin * 9; i++)
        p.weight[i] = frand() * ws;
    for (int i = 0; i < cout; i++)
        p.bias[i] = frand() * 0.1f;
    size_t n_in = (size_t)h * w * cin, n_out = (size_t)h * w * cout;
    uint16_t *x = up_aligned_alloc(n_in * 2, 1);
    uint16_t *y = up_aligned_alloc(n_out * 2, 1);
    for (size_t i = 0; i < n_in; i++)
        x[i] = bf(frand());
    nn_tensor_t in = {(float *)(void *)x, cin, h, w, NN_LAYOUT_NHWC, NN_DTYPE_BF16, 0, 0};
    nn_tensor_t out = {(float *)(void *)y, cout, h, w, NN_LAYOUT_NHWC, NN_DTYPE_BF16, 0, 0};
    nn_epilogue_t epi = {NULL, 1.f, NULL};
    if (!cbf16_takes(&p, &epi, &in, &out)) {
        fprintf(stderr, "the kernel does not take this conv\n");
        return 2;
    }
    cbf16_weights_t *cw = cbf16_pack(&p);
    cbf16_run(cw, &p, &epi, &in, &out, nt);
    double best = 1e30;
    for (int r = 0; r < runs; r++) {
        double t0 = now();
        cbf16_run(cw, &p, &epi, &in, &out, nt);
        double t = now() - t0;
        if (t < best)
            best = t;
    }
    /* check every output against double precision on the bf16 operands */
    double maxerr = 0, maxref = 0;
    for (int yy = 0; yy < h; yy++)
        for (int xx = 0; xx < w; xx++)
            for (int oc = 0; oc < cout; oc++) {
                double s = p.bias[oc];
                for (int ky = 0; ky < 3; ky++)
                    for (int kx = 0; kx < 3; kx++) {
                        int iy = yy + ky - 1, ix = xx + kx - 1;
                        if (iy < 0 || iy >= h || ix < 0 || ix >= w)
                            continue;
                        const uint16_t *px = x + ((size_t)iy * w + ix) * cin;
                        const float *wk = p.weight + (size_t)oc * cin * 9 + ky * 3 + kx;
                        for (int ic = 0; ic < cin; ic++)
                            s += (double)fb(px[ic]) * (double)fb(bf(wk[(size_t)ic * 9]));
                    }
                if (s < 0)
                    s *= 0.2;
                double got = fb(y[((size_t)yy * w + xx) * cout + oc]);
                if (fabs(got - s) > maxerr)
                    maxerr = fabs(got - s);
                if (fabs(s) > maxref)
                    maxref = fabs(s);
            }
    double gflop = 2.0 * cin * cout * 9 * (double)h * w / 1e9;
    printf("cin %d cout %d %dx%d threads %d: %.3f ms, %.1f GFLOP/s, max |err| %.2e of max |ref| %.2f (%.1e "
           "relative)\n",
           cin, cout, h, w, nt, best * 1e3, gflop / best, maxerr, maxref, maxerr / maxref);
    cbf16_free(cw);
    up_aligned_free(x);
    up_aligned_free(y);
    free(p.weight);
    free(p.bias);
    return maxerr / maxref < 1e-2 ? 0 : 1;
}
