/*
 * bench.c - `upres bench`: how fast the engine is on this machine.
 *
 * Prints, for each model on one input image run as a single tile with the
 * 10-pixel reflect padding (as the reference outputs are made): wall time
 * with 1 and 2 threads (best of a few runs after a warm-up run that plans),
 * the model's convolution FLOPs counted as direct convolutions, effective
 * GFLOP/s, and peak RSS. In the same run it measures the machine's fp32 FMA
 * peak with a vector FMA loop on the same thread counts, and prints
 * effective / peak.
 *
 * Every measurement runs in a forked child: peak RSS is then per model, and
 * no OpenMP thread pool crosses a fork.
 */
#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "image/image.h"
#include "upscale/upscale.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/*
 * FMA_CHAINS independent accumulators per thread, enough to cover FMA latency
 * x pipes (4 x 2 on current cores), written out as named variables so that
 * they stay in registers whatever the optimiser does with arrays.
 */
#define FMA_CHAINS 12
#define FMA_BODY(T, SET1, FMADD, STORE, LANES)                                                               \
    T b = SET1(0.999999f), c = SET1(1e-7f);                                                                  \
    T a0 = SET1(0), a1 = SET1(1), a2 = SET1(2), a3 = SET1(3), a4 = SET1(4), a5 = SET1(5);                    \
    T a6 = SET1(6), a7 = SET1(7), a8 = SET1(8), a9 = SET1(9), a10 = SET1(10), a11 = SET1(11);                \
    for (long i = 0; i < iters; i++) {                                                                       \
        a0 = FMADD(a0, b, c), a1 = FMADD(a1, b, c), a2 = FMADD(a2, b, c), a3 = FMADD(a3, b, c);              \
        a4 = FMADD(a4, b, c), a5 = FMADD(a5, b, c), a6 = FMADD(a6, b, c), a7 = FMADD(a7, b, c);              \
        a8 = FMADD(a8, b, c), a9 = FMADD(a9, b, c), a10 = FMADD(a10, b, c), a11 = FMADD(a11, b, c);          \
    }                                                                                                        \
    float lanes[LANES];                                                                                      \
    STORE(lanes, a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11);                               \
    return lanes[0];

__attribute__((target("avx512f"))) static double fma_loop_avx512(long iters) {
    FMA_BODY(__m512, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_storeu_ps, 16)
}

__attribute__((target("avx2,fma"))) static double fma_loop_avx2(long iters) {
    FMA_BODY(__m256, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_storeu_ps, 8)
}

/* fp32 FMA peak in GFLOP/s on n threads (child process); wide: 512-bit vectors. */
static double fma_peak(int n, int wide) {
    int lanes = wide ? 16 : 8;
    long iters = 20 * 1000 * 1000;
    double best = 0, sink = 0;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = now();
#pragma omp parallel num_threads(n) reduction(+ : sink)
        sink += wide ? fma_loop_avx512(iters) : fma_loop_avx2(iters);
        double t = now() - t0;
        double g = 2.0 * FMA_CHAINS * lanes * (double)iters * n / t / 1e9;
        if (g > best)
            best = g;
    }
    if (sink == 12345.678)
        fputc(' ', stderr);
    return best;
}

typedef struct model_result {
    double seconds, gflop, rss_mb;
    int ok;
    char error[sizeof(((up_error_t *)0)->msg)];
} model_result_t;

/* One model on one thread count (child process). */
static model_result_t bench_model(const char *dir, const char *name, const char *image, nn_backend_kind_t be,
                                  int threads, int runs) {
    model_result_t r = {0};
    up_error_t err;
    upscale_registry_t *reg = NULL;
    const upscale_variant_t *v = NULL;
    upscaler_t *up = NULL;
    up_image_t *img = NULL;
    float *in = NULL, *out = NULL;
    if (image_init() || image_load_file(image, NULL, &img, &err) || upscale_registry_scan(dir, &reg, &err) ||
        upscale_registry_resolve(reg, name, 0, &v, &err) || upscaler_new(reg, v, be, threads, &up, &err)) {
        snprintf(r.error, sizeof r.error, "%s", err.msg);
        goto done;
    }
    int w = img->width, h = img->height, s = upscaler_scale(up);
    in = malloc(sizeof(float) * 3 * w * h);
    out = malloc(sizeof(float) * 3 * (size_t)w * h * s * s);
    for (int c = 0; c < 3; c++)
        for (int i = 0; i < w * h; i++) {
            int b = img->bands >= 3 ? c : 0;
            size_t k = (size_t)i * img->bands + b;
            in[c * w * h + i] = img->depth == 16 ? ((unsigned short *)img->pixels)[k] / 65535.0f
                                                 : ((unsigned char *)img->pixels)[k] / 255.0f;
        }
    r.seconds = 1e30;
    for (int i = 0; i <= runs; i++) { /* run 0 plans and warms up */
        double t0 = now();
        if (upscaler_run_planes(up, in, 3, h, w, out, 0, NULL, 0, 1, &err)) {
            snprintf(r.error, sizeof r.error, "%s", err.msg);
            goto done;
        }
        double t = now() - t0;
        if (i > 0 && t < r.seconds)
            r.seconds = t;
    }
    nn_model_t *m = NULL;
    char p[2048], b[2048];
    snprintf(p, sizeof p, "%s/%s.param", reg->dir, v->file);
    snprintf(b, sizeof b, "%s/%s.bin", reg->dir, v->file);
    if (nn_model_load(p, b, &m, &err) == 0) {
        r.gflop = nn_model_conv_flops(m, 3, h + 2 * UPSCALE_PAD, w + 2 * UPSCALE_PAD) / 1e9;
        nn_model_free(m);
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    r.rss_mb = ru.ru_maxrss / 1024.0;
    r.ok = 1;
done:
    free(in);
    free(out);
    image_free(img);
    upscaler_free(up);
    upscale_registry_free(reg);
    return r;
}

/* Run fn in a child and read back its result bytes. */
#define IN_CHILD(result, expr)                                                                               \
    do {                                                                                                     \
        int fds[2];                                                                                          \
        memset(&(result), 0, sizeof(result));                                                                \
        if (pipe(fds) == 0) {                                                                                \
            fflush(NULL);                                                                                    \
            pid_t pid = fork();                                                                              \
            if (pid == 0) {                                                                                  \
                close(fds[0]);                                                                               \
                __typeof__(result) r_ = (expr);                                                              \
                ssize_t w_ = write(fds[1], &r_, sizeof r_);                                                  \
                _exit(w_ == (ssize_t)sizeof r_ ? 0 : 1);                                                     \
            }                                                                                                \
            close(fds[1]);                                                                                   \
            ssize_t n_ = read(fds[0], &(result), sizeof(result));                                            \
            (void)n_;                                                                                        \
            close(fds[0]);                                                                                   \
            waitpid(pid, NULL, 0);                                                                           \
        }                                                                                                    \
    } while (0)

int cmd_bench(int argc, char **argv) {
    const char *models[8] = {"realesrgan-x4plus", "realesr-animevideov3-x4"};
    int n_models = 0, runs = 2, c, max_threads = 2;
    const char *dir_opt = NULL, *image = NULL;
    nn_backend_kind_t be = NN_BACKEND_DNNL;
    optind = 0;
    while ((c = getopt(argc + 1, argv - 1, "n:i:m:r:b:j:h")) != -1) {
        switch (c) {
        case 'n':
            if (n_models < 8)
                models[n_models++] = optarg;
            break;
        case 'i': image = optarg; break;
        case 'm': dir_opt = optarg; break;
        case 'r': runs = atoi(optarg) > 0 ? atoi(optarg) : 1; break;
        case 'j': max_threads = atoi(optarg) > 0 ? atoi(optarg) : 1; break;
        case 'b':
            if (nn_backend_parse(optarg, &be)) {
                cli_error("bad backend '%s'", optarg);
                return 2;
            }
            break;
        case 'h':
        default:
            printf("usage: upres bench [-n MODEL]... [-i IMAGE] [-m MODELDIR] [-r RUNS] [-j MAXTHREADS] [-b "
                   "BACKEND]\n"
                   "  defaults: realesrgan-x4plus and realesr-animevideov3-x4 on samples/astronaut_128.png,\n"
                   "  best of 2 runs after a warm-up, 1 and 2 threads, backend dnnl\n");
            return c == 'h' ? 0 : 2;
        }
    }
    if (n_models == 0)
        n_models = 2;
    char ibuf[2048];
    if (!image) {
        snprintf(ibuf, sizeof ibuf, "%s/../samples/astronaut_128.png", UPRES_DEFAULT_MODELS_DIR);
        image = ibuf;
    }
    char buf[1024];
    const char *dir = upscale_models_dir(dir_opt, buf, sizeof buf);

    /* The ratio uses the widest vectors the machine has; the AVX2 figure is
       printed too, for comparison with peaks quoted from 256-bit loops. */
    double peak[65] = {0}, narrow;
    int wide = __builtin_cpu_supports("avx512f");
    for (int pass = wide ? 0 : 1; pass < 2; pass++) {
        printf("fp32 FMA peak (%s FMA loop):", pass == 0 ? "AVX-512" : "AVX2");
        for (int t = 1; t <= max_threads && t <= 64; t++) {
            IN_CHILD(narrow, fma_peak(t, pass == 0));
            if (pass == 0 || !wide)
                peak[t] = narrow;
            printf(" %d thread%s %.1f GFLOP/s%s", t, t > 1 ? "s" : "", narrow, t < max_threads ? "," : "\n");
        }
    }
    printf("ratio = effective GFLOP/s / %s peak on the same thread count\n", wide ? "AVX-512" : "AVX2");
    printf("input %s, one tile with %d px reflect padding, backend %s, best of %d runs\n", image, UPSCALE_PAD,
           nn_backend_name(be), runs);
    printf("%-26s %7s %9s %9s %9s %7s %10s\n", "model", "threads", "time_s", "GFLOP", "GFLOP/s", "ratio",
           "peak_RSS_MB");
    int failed = 0;
    for (int i = 0; i < n_models; i++)
        for (int t = 1; t <= max_threads && t <= 64; t++) {
            model_result_t r;
            IN_CHILD(r, bench_model(dir, models[i], image, be, t, runs));
            if (!r.ok) {
                cli_error("%s: %s", models[i], r.error[0] ? r.error : "benchmark process failed");
                failed = 1;
                break;
            }
            double g = r.gflop / r.seconds;
            printf("%-26s %7d %9.3f %9.1f %9.1f %7.2f %10.0f\n", models[i], t, r.seconds, r.gflop, g,
                   g / peak[t], r.rss_mb);
            fflush(stdout);
        }
    return failed;
}
