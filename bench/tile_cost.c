/*
 * tile_cost.c - the network's time per pixel against the tile edge, the
 * figure the automatic tile caps come from (upscale.h,
 * UPSCALE_AUTO_TILE_MAX and UPSCALE_AUTO_TILE_MAX_BF16).
 *
 * One net of MODEL on the dnnl backend in the given precision runs a
 * random EDGE x EDGE input for each edge given (a network input: the tile
 * plus 10 pixels of context on each side), once to plan and then best of
 * a few runs. It prints the time, the time per network pixel, and the
 * time per useful pixel ((EDGE - 20)^2, what a tile of that edge adds to
 * the output): the automatic tile should sit where the last is lowest.
 *
 * Usage: bench_tile_cost MODEL fp32|bf16 THREADS EDGE...   (MODEL: path
 *        without .param/.bin)
 * e.g.   build/bench_tile_cost models/realesr-animevideov3-x4 bf16 2 148 212 276 532
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nn/nn.h"
#include "upscale/upscale.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    nn_precision_t prec;
    if (argc < 5 || nn_precision_parse(argv[2], &prec) || prec == NN_PRECISION_AUTO) {
        fprintf(stderr, "usage: bench_tile_cost MODEL fp32|bf16 THREADS EDGE...\n");
        return 2;
    }
    int threads = atoi(argv[3]);
    char p[4096], b[4096];
    snprintf(p, sizeof p, "%s.param", argv[1]);
    snprintf(b, sizeof b, "%s.bin", argv[1]);
    nn_model_t *m = NULL;
    nn_net_t *net = NULL;
    up_error_t err;
    int rc = 1;
    float *in = NULL, *out = NULL;
    if (nn_model_load(p, b, &m, &err) || nn_net_new(m, NN_BACKEND_DNNL, threads, &net, &err) ||
        nn_net_set_precision(net, prec, &err))
        goto fail;
    printf("%s, %s, %d threads; useful = (edge - %d)^2, the pixels a tile of that edge adds\n", argv[1],
           nn_precision_name(prec), threads, 2 * UPSCALE_PAD);
    printf("%6s %6s %10s %14s %17s\n", "edge", "tile", "best_s", "us_per_net_px", "us_per_useful_px");
    srand(1);
    for (int a = 4; a < argc; a++) {
        int e = atoi(argv[a]), oc, oh, ow;
        if (e <= 2 * UPSCALE_PAD) {
            up_error_set(&err, UP_ERR_INVALID, 0, "an edge must be over %d, not %s", 2 * UPSCALE_PAD,
                         argv[a]);
            goto fail;
        }
        if (nn_model_output_shape(m, 3, e, e, &oc, &oh, &ow, &err))
            goto fail;
        size_t n_in = (size_t)3 * e * e;
        free(in);
        free(out);
        in = malloc(n_in * sizeof *in);
        out = malloc((size_t)oc * oh * ow * sizeof *out);
        if (!in || !out) {
            up_error_set(&err, UP_ERR_NOMEM, 0, "cannot allocate the %dx%d input and output", e, e);
            goto fail;
        }
        for (size_t i = 0; i < n_in; i++)
            in[i] = (float)rand() / (float)RAND_MAX;
        if (nn_net_run(net, in, 3, e, e, out, &err)) /* plans */
            goto fail;
        int runs = e < 200 ? 5 : e < 400 ? 3 : 2;
        double best = 1e30;
        for (int r = 0; r < runs; r++) {
            double t0 = now();
            if (nn_net_run(net, in, 3, e, e, out, &err))
                goto fail;
            double t = now() - t0;
            best = t < best ? t : best;
        }
        int u = e - 2 * UPSCALE_PAD;
        printf("%6d %6d %10.4f %14.3f %17.3f\n", e, u, best, best / ((double)e * e) * 1e6,
               best / ((double)u * u) * 1e6);
        fflush(stdout);
    }
    rc = 0;
fail:
    if (rc)
        fprintf(stderr, "bench_tile_cost: %s\n", err.msg);
    free(in);
    free(out);
    nn_net_free(net);
    nn_model_free(m);
    return rc;
}
