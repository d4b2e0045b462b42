/*
 * conv.c - micro-benchmark of single convolution layers on the dnnl backend.
 *
 * For each convolution shape of the two reference models (RRDB's dense
 * block convs of realesrgan-x4plus, its upsampling convs, the VGG-style
 * convs of realesr-animevideov3) it builds a one-layer model with random
 * weights, prepares it on the dnnl backend as the planner would (BLOCK16
 * tensors, a PLANAR 3-channel input for a first conv, the same fused
 * activation and epilogue as in the model) and times layer_run, for 1 and
 * 2 threads and for each convolution algorithm (UPRES_DNNL_CONV_ALG):
 * direct, auto (oneDNN's choice), winograd-plain (Winograd on the tensors
 * as they are), winograd (grown where its tile blocking degenerates, see
 * src/nn/backend/dnnl.c) and the backend's own rule.
 *
 * Figures are "effective" GFLOP/s: 2*Cin*Cout*kh*kw*H*W per run, counted
 * as a direct convolution whatever the algorithm, over the best of the
 * repetitions (the machine is shared; the best run is the least disturbed
 * one). The ratio column divides the rule's figure by the fp32 FMA peak
 * measured here with an AVX-512 loop on the same thread count, as `upres
 * bench` does for whole models.
 *
 * Usage: bench_conv [reps] [threads]   (defaults: 10, both 1 and 2)
 */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/xmalloc.h"
#include "nn/backend/backend.h"
#include "nn/model.h"
#include "nn/tensor.h"

typedef struct conv_cfg {
    const char *name;
    int ic, oc, hw;
    nn_act_t act;
    int epi; /* 0 none, 1 prelu, 2 sum with scale 0.2, 3 sum */
} conv_cfg_t;

static const conv_cfg_t cfgs[] = {
    {"rrdb dense 64->32", 64, 32, 148, NN_ACT_LEAKY, 0},
    {"rrdb dense 96->32", 96, 32, 148, NN_ACT_LEAKY, 0},
    {"rrdb dense 128->32", 128, 32, 148, NN_ACT_LEAKY, 0},
    {"rrdb dense 160->32", 160, 32, 148, NN_ACT_LEAKY, 0},
    {"rrdb dense 192->64 +0.2x+sum", 192, 64, 148, NN_ACT_NONE, 2},
    {"esrgan body 64->64 +sum", 64, 64, 148, NN_ACT_NONE, 3},
    {"esrgan up1 64->64 @296", 64, 64, 296, NN_ACT_LEAKY, 0},
    {"esrgan up2/hr 64->64 @592", 64, 64, 592, NN_ACT_LEAKY, 0},
    {"esrgan last 64->3 @592", 64, 3, 592, NN_ACT_NONE, 0},
    {"anime first 3->64 +prelu", 3, 64, 148, NN_ACT_NONE, 1},
    {"anime body 64->64 +prelu", 64, 64, 148, NN_ACT_NONE, 1},
    {"anime last 64->48", 64, 48, 148, NN_ACT_NONE, 0},
    {"64->64 plain @148", 64, 64, 148, NN_ACT_NONE, 0},
    {"64->32 plain @148", 64, 32, 148, NN_ACT_NONE, 0},
};

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static float frand(unsigned *s) {
    *s = *s * 1664525u + 1013904223u;
    return (float)(*s >> 8) / (float)(1u << 23) - 1.f;
}

/* AVX-512 FMA throughput of n_threads threads, GFLOP/s; 0 without AVX-512. */
__attribute__((target("avx512f"))) static double fma_peak_avx512(int n_threads) {
    typedef float v16 __attribute__((vector_size(64)));
    const long iters = 20000000;
    double t = now();
    float sink = 0;
#pragma omp parallel num_threads(n_threads) reduction(+ : sink)
    {
        v16 a0 = {0}, a1 = a0 + 1, a2 = a0 + 2, a3 = a0 + 3, a4 = a0 + 4, a5 = a0 + 5;
        v16 a6 = a0 + 6, a7 = a0 + 7, a8 = a0 + 8, a9 = a0 + 9, a10 = a0 + 10, a11 = a0 + 11;
        v16 b = a0 + 0.999999f, c = a0 + 1e-7f;
        for (long k = 0; k < iters; k++) {
            /* 12 independent chains cover the FMA latency on two pipes */
            __asm__(
                "vfmadd132ps %[b], %[c], %[a0]\n\tvfmadd132ps %[b], %[c], %[a1]\n\t"
                "vfmadd132ps %[b], %[c], %[a2]\n\tvfmadd132ps %[b], %[c], %[a3]\n\t"
                "vfmadd132ps %[b], %[c], %[a4]\n\tvfmadd132ps %[b], %[c], %[a5]\n\t"
                "vfmadd132ps %[b], %[c], %[a6]\n\tvfmadd132ps %[b], %[c], %[a7]\n\t"
                "vfmadd132ps %[b], %[c], %[a8]\n\tvfmadd132ps %[b], %[c], %[a9]\n\t"
                "vfmadd132ps %[b], %[c], %[a10]\n\tvfmadd132ps %[b], %[c], %[a11]"
                : [a0] "+v"(a0), [a1] "+v"(a1), [a2] "+v"(a2), [a3] "+v"(a3), [a4] "+v"(a4), [a5] "+v"(a5),
                  [a6] "+v"(a6), [a7] "+v"(a7), [a8] "+v"(a8), [a9] "+v"(a9), [a10] "+v"(a10), [a11] "+v"(a11)
                : [b] "v"(b), [c] "v"(c));
        }
        v16 s = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11;
        sink += s[0];
    }
    t = now() - t;
    if (sink == 12345.f)
        printf(" ");
    return (double)n_threads * iters * 12 * 32 / t * 1e-9;
}

static double fma_peak(int n_threads) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") ? fma_peak_avx512(n_threads) : 0;
}

/*
 * Time one config on the dnnl backend with alg ("direct", "winograd" or
 * NULL for the backend's rule). Returns the best ms, or -1 on error.
 */
static double bench_one(const conv_cfg_t *c, const char *alg, int n_threads, int reps) {
    unsigned seed = 1;
    nn_layer_t layer;
    memset(&layer, 0, sizeof layer);
    layer.op = NN_OP_CONV;
    snprintf(layer.type, sizeof layer.type, "Convolution");
    snprintf(layer.name, sizeof layer.name, "%s", c->name);
    layer.n_in = layer.n_out = 1;
    nn_conv_param_t *p = &layer.p.conv;
    p->n_in = c->ic, p->n_out = c->oc;
    p->kernel_w = p->kernel_h = 3;
    p->dilation_w = p->dilation_h = p->stride_w = p->stride_h = 1;
    p->pad_left = p->pad_right = p->pad_top = p->pad_bottom = 1;
    p->bias_term = 1;
    p->weight_data_size = c->oc * c->ic * 9;
    p->act = c->act;
    p->act_params[0] = 0.2f;
    p->weight = xmalloc((size_t)p->weight_data_size * sizeof(float));
    p->bias = xmalloc((size_t)c->oc * sizeof(float));
    for (int i = 0; i < p->weight_data_size; i++)
        p->weight[i] = frand(&seed) * 0.05f;
    for (int i = 0; i < c->oc; i++)
        p->bias[i] = frand(&seed) * 0.1f;
    float *slope = xmalloc((size_t)c->oc * sizeof(float));
    for (int i = 0; i < c->oc; i++)
        slope[i] = 0.1f;
    nn_prelu_param_t prelu = {c->oc, slope};
    nn_model_t model = {.n_layers = 1, .layers = &layer, .input_blob = -1, .output_blob = -1};

    nn_tensor_t in = {NULL,         c->ic, c->hw, c->hw, c->ic < 16 ? NN_LAYOUT_PLANAR : NN_LAYOUT_BLOCK16,
                      NN_DTYPE_F32, 0,     0};
    nn_tensor_t out = {NULL, c->oc, c->hw, c->hw, NN_LAYOUT_BLOCK16, NN_DTYPE_F32, 0, 0};
    nn_tensor_t sum = out;
    in.data = up_aligned_alloc(nn_tensor_floats(&in), sizeof(float));
    out.data = up_aligned_alloc(nn_tensor_floats(&out), sizeof(float));
    sum.data = up_aligned_alloc(nn_tensor_floats(&sum), sizeof(float));
    for (size_t i = 0; i < nn_tensor_floats(&in); i++)
        in.data[i] = frand(&seed);
    for (size_t i = 0; i < nn_tensor_floats(&sum); i++)
        sum.data[i] = frand(&seed);
    nn_tensor_zero_padding(&in);
    nn_tensor_zero_padding(&sum);
    nn_epilogue_t epi = {c->epi == 1 ? &prelu : NULL, c->epi == 2 ? 0.2f : 1.f, c->epi >= 2 ? &sum : NULL};

    if (alg)
        setenv("UPRES_DNNL_CONV_ALG", alg, 1);
    else
        unsetenv("UPRES_DNNL_CONV_ALG");
    omp_set_num_threads(n_threads);
    void *st = NULL, *ls = NULL;
    size_t scratch = 0;
    up_error_t err = {0};
    double best = -1;
    int rc = nn_backend_dnnl.create(&model, n_threads, &st, &err);
    if (rc == 0)
        rc = nn_backend_dnnl.layer_prepare(st, &layer, &epi, &in, 1, &out, 1, &ls, &scratch, &err);
    for (int r = 0; rc == 0 && r < reps + 1; r++) {
        double t = now();
        rc = nn_backend_dnnl.layer_run(st, ls, &layer, &epi, &in, 1, &out, 1, &err);
        t = now() - t;
        if (r > 0 && (best < 0 || t < best)) /* the first run warms caches and pages */
            best = t;
    }
    if (rc) {
        fprintf(stderr, "%s: %s\n", c->name, err.msg);
        best = -1;
    }
    if (ls)
        nn_backend_dnnl.layer_release(st, ls);
    nn_backend_dnnl.destroy(st);
    unsetenv("UPRES_DNNL_CONV_ALG");
    up_aligned_free(in.data);
    up_aligned_free(out.data);
    up_aligned_free(sum.data);
    free(p->weight);
    free(p->bias);
    free(slope);
    return best < 0 ? -1 : best * 1e3;
}

int main(int argc, char **argv) {
    int reps = argc > 1 ? atoi(argv[1]) : 10;
    int only_threads = argc > 2 ? atoi(argv[2]) : 0;
    if (reps < 1)
        reps = 1;
    double peak[3] = {0, fma_peak(1), fma_peak(2)};
    printf("fp32 FMA peak (AVX-512 loop): %.0f GFLOP/s with 1 thread, %.0f with 2\n", peak[1], peak[2]);
    static const char *algs[] = {"direct", "auto", "winograd-plain", "winograd", NULL};
    enum { N_ALGS = 5 };
    printf("effective GFLOP/s per algorithm; ratio = the rule's / the peak on the same thread count\n");
    printf("%-30s %3s %8s %8s %8s %8s %8s %6s  %s\n", "conv", "thr", "direct", "auto", "wino-pl", "winograd",
           "rule", "ratio", "rule ms");
    for (int t = 1; t <= 2; t++) {
        if (only_threads && t != only_threads)
            continue;
        for (size_t i = 0; i < sizeof cfgs / sizeof cfgs[0]; i++) {
            const conv_cfg_t *c = &cfgs[i];
            double flop = 2.0 * 9 * c->ic * c->oc * (double)c->hw * c->hw;
            double ms[N_ALGS];
            for (int a = 0; a < N_ALGS; a++)
                ms[a] = bench_one(c, algs[a], t, reps);
            printf("%-30s %3d", c->name, t);
            for (int a = 0; a < N_ALGS; a++) {
                if (ms[a] < 0)
                    printf(" %8s", "error");
                else
                    printf(" %8.1f", flop / (ms[a] * 1e-3) * 1e-9);
            }
            double rule = ms[N_ALGS - 1];
            printf(" %6.2f  %.2f\n", rule > 0 && peak[t] > 0 ? flop / (rule * 1e-3) * 1e-9 / peak[t] : NAN,
                   rule);
            fflush(stdout);
        }
    }
    return 0;
}
