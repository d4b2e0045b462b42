/*
 * grids.c - whole models on the dnnl backend in fp32, with and without the
 * Winograd storage grids (src/nn/backend/dnnl.c, Grids), runs interleaved.
 *
 * Two nets of one model in one process: "on" as the backend plans by
 * default, "off" created with UPRES_DNNL_GRIDS=0 (each Winograd conv whose
 * tile grid degenerates copies its input onto a grown grid and its output
 * back, as before the grids). After a warm-up run of each (which plans),
 * the runs alternate on, off, on, off..., so that a shared machine's load
 * falls on both alike; the figures are the median, fastest and slowest run
 * of each, and the on/off ratio of the medians. The input is random (the
 * time does not depend on the values); the two outputs must agree.
 *
 * Usage: bench_grids MODEL H W [RUNS] [THREADS]   (MODEL: path without .param/.bin;
 *        defaults 7 runs, 2 threads)
 * e.g.   build/bench_grids models/realesrgan-x4plus 148 148 9
 * With ONEDNN_VERBOSE=1 and one of UPRES_BENCH_GRIDS=on / off, only that
 * net runs, for bench/dnnl_profile.py.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nn/nn.h"

#define MAX_RUNS 99

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: bench_grids MODEL H W [RUNS] [THREADS]\n");
        return 2;
    }
    int h = atoi(argv[2]), w = atoi(argv[3]), runs = argc > 4 ? atoi(argv[4]) : 7;
    int threads = argc > 5 ? atoi(argv[5]) : 2;
    runs = runs < 1 ? 1 : runs > MAX_RUNS ? MAX_RUNS : runs;
    const char *only = getenv("UPRES_BENCH_GRIDS");
    char p[4096], b[4096];
    snprintf(p, sizeof p, "%s.param", argv[1]);
    snprintf(b, sizeof b, "%s.bin", argv[1]);
    nn_model_t *m = NULL;
    nn_net_t *net[2] = {NULL, NULL};
    up_error_t err;
    int oc, oh, ow, rc = 1;
    float *in = NULL, *out[2] = {NULL, NULL};
    if (nn_model_load(p, b, &m, &err) || nn_model_output_shape(m, 3, h, w, &oc, &oh, &ow, &err))
        goto fail;
    for (int k = 0; k < 2; k++) {
        if (only && strcmp(only, k ? "off" : "on") != 0)
            continue;
        if (k)
            setenv("UPRES_DNNL_GRIDS", "0", 1);
        int e = nn_net_new(m, NN_BACKEND_DNNL, threads, &net[k], &err);
        unsetenv("UPRES_DNNL_GRIDS");
        if (e || nn_net_set_precision(net[k], NN_PRECISION_FP32, &err))
            goto fail;
    }
    size_t n_in = (size_t)3 * h * w, n_out = (size_t)oc * oh * ow;
    in = malloc(n_in * sizeof *in);
    out[0] = malloc(n_out * sizeof(float));
    out[1] = malloc(n_out * sizeof(float));
    if (!in || !out[0] || !out[1])
        goto fail;
    srand(1);
    for (size_t i = 0; i < n_in; i++)
        in[i] = (float)rand() / (float)RAND_MAX;
    double t[2][MAX_RUNS];
    for (int k = 0; k < 2; k++)
        if (net[k] && nn_net_run(net[k], in, 3, h, w, out[k], &err))
            goto fail;
    for (int r = 0; r < runs; r++)
        for (int k = 0; k < 2; k++) {
            if (!net[k])
                continue;
            double t0 = now();
            if (nn_net_run(net[k], in, 3, h, w, out[k], &err))
                goto fail;
            t[k][r] = now() - t0;
        }
    double med[2] = {0, 0};
    for (int k = 0; k < 2; k++) {
        if (!net[k])
            continue;
        qsort(t[k], (size_t)runs, sizeof t[k][0], cmp_double);
        med[k] = t[k][runs / 2];
        printf(
            "%-40s %4dx%-4d %d threads grids %-3s median %8.4f s  fastest %8.4f  slowest %8.4f  (%d runs)\n",
            argv[1], w, h, threads, k ? "off" : "on", med[k], t[k][0], t[k][runs - 1], runs);
    }
    if (net[0] && net[1]) {
        double worst = 0;
        for (size_t i = 0; i < n_out; i++)
            worst = fmax(worst, fabs((double)out[0][i] - out[1][i]));
        printf("%-40s %4dx%-4d on/off %.3f, max |on - off| %.3g\n", argv[1], w, h, med[0] / med[1], worst);
        if (worst > 1e-4)
            fprintf(stderr, "bench_grids: the outputs differ by %g\n", worst);
    }
    rc = 0;
fail:
    if (rc)
        fprintf(stderr, "bench_grids: %s\n", err.msg);
    free(in);
    free(out[0]);
    free(out[1]);
    nn_net_free(net[0]);
    nn_net_free(net[1]);
    nn_model_free(m);
    return rc;
}
