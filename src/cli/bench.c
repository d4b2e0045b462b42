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
 * Each model runs in fp32 and, where the CPU has AVX512_BF16, in bf16
 * (nn_net_set_precision; -p picks one). bf16 rows add the speedup over the
 * fp32 row, the ratio to a bf16 dot-product peak (a vdpbf16ps loop) and,
 * with AMX, to an AMX tile peak (a tdpbf16ps loop), and the PSNR of the
 * bf16 output against the fp32 output of the same input.
 *
 * Whole-image rows (-W MODEL:SIDE; default x4plus on 512^2 and animevideov3
 * on 1024^2) time what a user waits for: the image resized to SIDE x SIDE,
 * upscaled by upscaler_run with the automatic tile (its edge and count are
 * printed) from a fresh upscaler, planning included, once; their GFLOP
 * count every tile with its padding, so the ratios show what tiling costs.
 * -R model / whole keeps the run short.
 *
 * Every measurement runs in a forked child: peak RSS is then per model, and
 * no OpenMP thread pool crosses a fork.
 */
#include <getopt.h>
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
#include "core/log.h"
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

/* vdpbf16ps: 16 lanes x 2 bf16 products x 2 FLOP per instruction. */
__attribute__((target("avx512f,avx512bf16"))) static double dpbf16_loop(long iters) {
    /* distinct starting values: twelve identical chains were folded into one by the compiler */
    __m512 a0 = _mm512_set1_ps(0), a1 = _mm512_set1_ps(1), a2 = _mm512_set1_ps(2), a3 = _mm512_set1_ps(3);
    __m512 a4 = _mm512_set1_ps(4), a5 = _mm512_set1_ps(5), a6 = _mm512_set1_ps(6), a7 = _mm512_set1_ps(7);
    __m512 a8 = _mm512_set1_ps(8), a9 = _mm512_set1_ps(9), a10 = _mm512_set1_ps(10), a11 = _mm512_set1_ps(11);
    __m512bh x = (__m512bh)_mm512_set1_epi16(0x3f80), y = (__m512bh)_mm512_set1_epi16(0x3380); /* 1, ~6e-8 */
    for (long i = 0; i < iters; i++) {
        a0 = _mm512_dpbf16_ps(a0, x, y), a1 = _mm512_dpbf16_ps(a1, x, y), a2 = _mm512_dpbf16_ps(a2, x, y);
        a3 = _mm512_dpbf16_ps(a3, x, y), a4 = _mm512_dpbf16_ps(a4, x, y), a5 = _mm512_dpbf16_ps(a5, x, y);
        a6 = _mm512_dpbf16_ps(a6, x, y), a7 = _mm512_dpbf16_ps(a7, x, y), a8 = _mm512_dpbf16_ps(a8, x, y);
        a9 = _mm512_dpbf16_ps(a9, x, y), a10 = _mm512_dpbf16_ps(a10, x, y), a11 = _mm512_dpbf16_ps(a11, x, y);
    }
    float lanes[16];
    _mm512_storeu_ps(lanes, a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11);
    return lanes[0];
}

/* bf16 dot-product peak in GFLOP/s on n threads (child process). */
static double dpbf16_peak(int n) {
    long iters = 20 * 1000 * 1000;
    double best = 0, sink = 0;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = now();
#pragma omp parallel num_threads(n) reduction(+ : sink)
        sink += dpbf16_loop(iters);
        double t = now() - t0;
        double g = 2.0 * 2 * 16 * FMA_CHAINS * (double)iters * n / t / 1e9;
        if (g > best)
            best = g;
    }
    if (sink == 12345.678)
        fputc(' ', stderr);
    return best;
}

#if defined(__linux__) && defined(__x86_64__)
#include <sys/syscall.h>
#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

/* 64-byte tile configuration: palette 1, tiles 0-3 accumulators, 4-5 sources, 16 rows of 64 bytes. */
typedef struct __attribute__((packed)) tilecfg {
    unsigned char palette, start_row, reserved[14];
    unsigned short colsb[16];
    unsigned char rows[16];
} tilecfg_t;

/*
 * tdpbf16ps on 16x32 bf16 tiles into 16x16 fp32: 16*16*32*2 FLOP per
 * instruction; four independent accumulators.
 */
__attribute__((target("amx-tile,amx-bf16"))) static double amx_loop(long iters) {
    static _Thread_local unsigned short buf[16 * 32] __attribute__((aligned(64)));
    float out[16 * 16];
    tilecfg_t cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 6; t++) {
        cfg.colsb[t] = 64;
        cfg.rows[t] = 16;
    }
    _tile_loadconfig(&cfg);
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    _tile_loadd(4, buf, 64);
    _tile_loadd(5, buf, 64);
    for (long i = 0; i < iters; i++) {
        _tile_dpbf16ps(0, 4, 5);
        _tile_dpbf16ps(1, 4, 5);
        _tile_dpbf16ps(2, 4, 5);
        _tile_dpbf16ps(3, 4, 5);
    }
    _tile_stored(0, out, 64);
    _tile_release();
    return out[0];
}

/* AMX bf16 peak in GFLOP/s on n threads (child process), 0 when the kernel refuses AMX. */
static double amx_peak(int n) {
    if (syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) != 0)
        return 0;
    long iters = 5 * 1000 * 1000;
    double best = 0, sink = 0;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = now();
#pragma omp parallel num_threads(n) reduction(+ : sink)
        {
            /* each thread asks for itself too: the permission is per process, but harmless */
            sink += amx_loop(iters);
        }
        double t = now() - t0;
        double g = 4.0 * 16 * 16 * 32 * 2 * (double)iters * n / t / 1e9;
        if (g > best)
            best = g;
    }
    if (sink == 12345.678)
        fputc(' ', stderr);
    return best;
}

/* CPUID.(EAX=7,ECX=0):EDX bit 22 AMX-BF16, bit 24 AMX-TILE. */
static int have_amx(void) {
    unsigned a = 7, b, c = 0, d;
    __asm__ volatile("cpuid" : "+a"(a), "=b"(b), "+c"(c), "=d"(d));
    return (d >> 22 & 1) && (d >> 24 & 1);
}
#else
static double amx_peak(int n) {
    (void)n;
    return 0;
}
static int have_amx(void) { return 0; }
#endif

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
    double psnr; /* bf16 against fp32 output, dB; 0 for fp32 rows */
    int tile;    /* whole-image rows: the automatic tile edge (0 = one tile) */
    int n_tiles; /* and how many tiles it took */
    int ok;
    char error[sizeof(((up_error_t *)0)->msg)];
} model_result_t;

/* One model on one thread count (child process). */
static double psnr(const float *a, const float *b, size_t n) {
    double se = 0;
    for (size_t i = 0; i < n; i++)
        se += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    return se == 0 ? 999.0 : 10.0 * log10((double)n / se);
}

static model_result_t bench_model(const char *dir, const char *name, const char *image, nn_backend_kind_t be,
                                  nn_precision_t prec, int threads, int runs) {
    model_result_t r = {0};
    up_error_t err;
    upscale_registry_t *reg = NULL;
    const upscale_variant_t *v = NULL;
    upscaler_t *up = NULL;
    up_image_t *img = NULL;
    float *in = NULL, *out = NULL;
    if (image_init() || image_load_file(image, NULL, &img, &err) || upscale_registry_scan(dir, &reg, &err) ||
        upscale_registry_resolve(reg, name, 0, &v, &err) || upscaler_new(reg, v, be, threads, &up, &err) ||
        upscaler_set_precision(up, prec, &err)) {
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
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru); /* before the fp32 reference run below plans another arena */
    r.rss_mb = ru.ru_maxrss / 1024.0;
    if (prec == NN_PRECISION_BF16) {
        size_t n = (size_t)3 * w * h * s * s;
        float *ref = malloc(sizeof(float) * n);
        if (upscaler_set_precision(up, NN_PRECISION_FP32, &err) ||
            upscaler_run_planes(up, in, 3, h, w, ref, 0, NULL, 0, 1, &err)) {
            snprintf(r.error, sizeof r.error, "%s", err.msg);
            free(ref);
            goto done;
        }
        r.psnr = psnr(out, ref, n);
        free(ref);
    }
    nn_model_t *m = NULL;
    char p[2048], b[2048];
    snprintf(p, sizeof p, "%s/%s.param", reg->dir, v->file);
    snprintf(b, sizeof b, "%s/%s.bin", reg->dir, v->file);
    if (nn_model_load(p, b, &m, &err) == 0) {
        r.gflop = nn_model_conv_flops(m, 3, h + 2 * UPSCALE_PAD, w + 2 * UPSCALE_PAD) / 1e9;
        nn_model_free(m);
    }
    r.ok = 1;
done:
    free(in);
    free(out);
    image_free(img);
    upscaler_free(up);
    upscale_registry_free(reg);
    return r;
}

/*
 * One whole image (child process): image resized to side x side, upscaled
 * by upscaler_run as `upres upscale` does it, automatic tiles from the
 * memory available now, timed once from a fresh upscaler: planning (the
 * tile probe and the tile's plan) included, as every image of a new size
 * pays it. GFLOP counts every tile with its padding.
 */
static model_result_t bench_whole(const char *dir, const char *name, const char *image, int side,
                                  nn_backend_kind_t be, nn_precision_t prec, int threads) {
    model_result_t r = {0};
    up_error_t err;
    upscale_registry_t *reg = NULL;
    const upscale_variant_t *v = NULL;
    upscaler_t *up = NULL;
    up_image_t *src = NULL, *img = NULL, *out = NULL;
    nn_model_t *m = NULL;
    if (image_init() || image_load_file(image, NULL, &src, &err) ||
        image_resize(src, side, side, &img, &err) || upscale_registry_scan(dir, &reg, &err) ||
        upscale_registry_resolve(reg, name, 0, &v, &err) || upscaler_new(reg, v, be, threads, &up, &err) ||
        upscaler_set_precision(up, prec, &err)) {
        snprintf(r.error, sizeof r.error, "%s", err.msg);
        goto done;
    }
    upscale_opts_t opts;
    upscale_opts_init(&opts);
    double t0 = now();
    if (upscaler_run(up, img, &opts, &out, &err)) {
        snprintf(r.error, sizeof r.error, "%s", err.msg);
        goto done;
    }
    r.seconds = now() - t0;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    r.rss_mb = ru.ru_maxrss / 1024.0;
    /* the tile the run took: the same choice again, from the same budget (the probe is measured) */
    r.tile = upscaler_choose_tile(up, side, side, &opts, &err);
    if (r.tile < 0) {
        snprintf(r.error, sizeof r.error, "%s", err.msg);
        goto done;
    }
    r.n_tiles = upscaler_tile_count(side, side, r.tile);
    int edge = r.tile > 0 && r.tile < side ? r.tile : side;
    char p[2048], b[2048];
    snprintf(p, sizeof p, "%s/%s.param", reg->dir, v->file);
    snprintf(b, sizeof b, "%s/%s.bin", reg->dir, v->file);
    if (nn_model_load(p, b, &m, &err) == 0)
        r.gflop = r.n_tiles * nn_model_conv_flops(m, 3, edge + 2 * UPSCALE_PAD, edge + 2 * UPSCALE_PAD) / 1e9;
    r.ok = 1;
done:
    nn_model_free(m);
    image_free(src);
    image_free(img);
    image_free(out);
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

/* The ratio columns of a row: bf16_r, amx_r and speedup (fp32_s: the fp32 row's time, 0 = none). */
static void ratio_cols(double g, double bpeak, double apeak, int lo, double fp32_s, double secs, char *br,
                       char *ar, char *sp) {
    strcpy(br, "-"), strcpy(ar, "-"), strcpy(sp, "-");
    if (bpeak > 0)
        snprintf(br, 16, "%.2f", g / bpeak);
    if (apeak > 0)
        snprintf(ar, 16, "%.2f", g / apeak);
    if (lo && fp32_s > 0)
        snprintf(sp, 16, "%.2f", fp32_s / secs);
}

static void usage(FILE *f) {
    fprintf(
        f,
        "usage: upres bench [-n MODEL]... [-i IMAGE] [-m MODELDIR] [-r RUNS] [-j MAXTHREADS] [-b BACKEND]\n"
        "                   [-p fp32|bf16] [-R model|whole|all] [-W MODEL:SIDE]... [-v]\n"
        "  model rows (-n): the network alone on IMAGE as one tile with %d px reflect padding, best of\n"
        "    RUNS after a warm-up run that plans; default realesrgan-x4plus and realesr-animevideov3-x4\n"
        "    on samples/astronaut_128.png, best of 2\n"
        "  whole-image rows (-W): IMAGE resized to SIDE x SIDE and upscaled as `upres upscale` does it\n"
        "    (automatic tiles from the memory available now; the tile edge and count are printed), one\n"
        "    run from a fresh upscaler, planning included; default realesrgan-x4plus:512 and\n"
        "    realesr-animevideov3-x4:1024 (about 3 minutes on 2 cores: -R model leaves them out)\n"
        "  -R ROWS     model, whole or all (default all)\n"
        "  each on 1 to MAXTHREADS threads (default 2), backend dnnl, fp32 and (where the CPU has\n"
        "  AVX512_BF16) bf16 unless -p picks one\n",
        UPSCALE_PAD);
}

#define MAX_ROWS 8

int cmd_bench(int argc, char **argv) {
    const char *models[MAX_ROWS] = {"realesrgan-x4plus", "realesr-animevideov3-x4"};
    const char *wholes[MAX_ROWS] = {"realesrgan-x4plus", "realesr-animevideov3-x4"};
    int sides[MAX_ROWS] = {512, 1024};
    int n_models = 0, n_wholes = 0, runs = 2, c, max_threads = 2, do_model = 1, do_whole = 1;
    const char *dir_opt = NULL, *image = NULL;
    nn_backend_kind_t be = NN_BACKEND_DNNL;
    const char *prec_opt = NULL;
    static const struct option long_opts[] = {{"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    optind = 0;
    while ((c = getopt_long(argc + 1, argv - 1, "n:i:m:r:b:j:p:R:W:vh", long_opts, NULL)) != -1) {
        switch (c) {
        case 'n':
            if (n_models < MAX_ROWS)
                models[n_models++] = optarg;
            break;
        case 'W': {
            const char *colon = strrchr(optarg, ':');
            char *end;
            long side = colon ? strtol(colon + 1, &end, 10) : 0;
            if (!colon || colon == optarg || *end || side < 16 || side > 8192) {
                cli_error("bad whole-image row '%s': MODEL:SIDE, SIDE 16 to 8192", optarg);
                return 2;
            }
            if (n_wholes < MAX_ROWS) {
                /* the name part stays in argv: cut it there */
                *(char *)colon = '\0';
                wholes[n_wholes] = optarg;
                sides[n_wholes++] = (int)side;
            }
            break;
        }
        case 'R':
            if (strcmp(optarg, "model") && strcmp(optarg, "whole") && strcmp(optarg, "all")) {
                cli_error("bad rows '%s': model, whole or all", optarg);
                return 2;
            }
            do_model = strcmp(optarg, "whole") != 0;
            do_whole = strcmp(optarg, "model") != 0;
            break;
        case 'i': image = optarg; break;
        case 'm': dir_opt = optarg; break;
        case 'r': runs = atoi(optarg) > 0 ? atoi(optarg) : 1; break;
        case 'v': log_set_level(LOG_DEBUG); break;
        case 'j': max_threads = atoi(optarg) > 0 ? atoi(optarg) : 1; break;
        case 'p': {
            nn_precision_t p;
            if (nn_precision_parse(optarg, &p) || p == NN_PRECISION_AUTO) {
                cli_error("bad precision '%s' (fp32 or bf16)", optarg);
                return 2;
            }
            prec_opt = optarg;
            break;
        }
        case 'b':
            if (nn_backend_parse(optarg, &be)) {
                cli_error("bad backend '%s'", optarg);
                return 2;
            }
            break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (n_models == 0)
        n_models = 2;
    if (n_wholes == 0)
        n_wholes = 2;
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
    /* bf16 peaks, where the CPU has the instructions */
    double bpeak[65] = {0}, apeak[65] = {0};
    int bf16 = __builtin_cpu_supports("avx512bf16"), amx = have_amx();
    if (bf16) {
        printf("bf16 dot-product peak (vdpbf16ps loop):");
        for (int t = 1; t <= max_threads && t <= 64; t++) {
            IN_CHILD(bpeak[t], dpbf16_peak(t));
            printf(" %d thread%s %.1f GFLOP/s%s", t, t > 1 ? "s" : "", bpeak[t],
                   t < max_threads ? "," : "\n");
        }
    }
    if (amx) {
        printf("AMX bf16 peak (tdpbf16ps loop):");
        for (int t = 1; t <= max_threads && t <= 64; t++) {
            IN_CHILD(apeak[t], amx_peak(t));
            printf(" %d thread%s %.1f GFLOP/s%s", t, t > 1 ? "s" : "", apeak[t],
                   t < max_threads ? "," : "\n");
        }
    }
    nn_precision_t precs[2] = {NN_PRECISION_FP32, NN_PRECISION_BF16};
    int n_precs = bf16 && be == NN_BACKEND_DNNL ? 2 : 1;
    if (prec_opt) {
        nn_precision_parse(prec_opt, &precs[0]);
        n_precs = 1;
    }
    printf(
        "ratio = effective GFLOP/s / %s fp32 peak on the same thread count; bf16_r / amx_r: the same over\n"
        "the bf16 dot-product and AMX peaks; speedup: fp32 time / bf16 time; PSNR: bf16 against fp32 "
        "output\n",
        wide ? "AVX-512" : "AVX2");
    int failed = 0;
    if (do_model) {
        printf("model rows: input %s, one tile with %d px reflect padding, backend %s, best of %d runs\n",
               image, UPSCALE_PAD, nn_backend_name(be), runs);
        printf("%-26s %4s %7s %9s %9s %9s %7s %7s %7s %7s %8s %10s\n", "model", "prec", "threads", "time_s",
               "GFLOP", "GFLOP/s", "ratio", "bf16_r", "amx_r", "speedup", "PSNR_dB", "peak_RSS_MB");
    }
    for (int i = 0; do_model && i < n_models; i++)
        for (int t = 1; t <= max_threads && t <= 64; t++) {
            double fp32_s = 0;
            for (int k = 0; k < n_precs; k++) {
                model_result_t r;
                IN_CHILD(r, bench_model(dir, models[i], image, be, precs[k], t, runs));
                if (!r.ok) {
                    cli_error("%s: %s", models[i], r.error[0] ? r.error : "benchmark process failed");
                    failed = 1;
                    break;
                }
                double g = r.gflop / r.seconds;
                int lo = precs[k] == NN_PRECISION_BF16;
                if (!lo)
                    fp32_s = r.seconds;
                char br[16], ar[16], sp[16], ps[16] = "-";
                ratio_cols(g, bpeak[t], apeak[t], lo, fp32_s, r.seconds, br, ar, sp);
                if (lo)
                    snprintf(ps, sizeof ps, "%.2f", r.psnr);
                printf("%-26s %4s %7d %9.3f %9.1f %9.1f %7.2f %7s %7s %7s %8s %10.0f\n", models[i],
                       nn_precision_name(precs[k]), t, r.seconds, r.gflop, g, g / peak[t], br, ar, sp, ps,
                       r.rss_mb);
                fflush(stdout);
            }
        }
    if (do_whole) {
        printf(
            "whole-image rows: %s resized to each side, upscaled as `upres upscale` does (automatic tiles;\n"
            "tile 0 = one tile), one run from a fresh upscaler with planning; GFLOP counts the tiles' "
            "padding\n",
            image);
        printf("%-26s %4s %7s %9s %5s %5s %9s %9s %9s %7s %7s %7s %7s %10s\n", "model", "prec", "threads",
               "input", "tile", "tiles", "time_s", "GFLOP", "GFLOP/s", "ratio", "bf16_r", "amx_r", "speedup",
               "peak_RSS_MB");
    }
    for (int i = 0; do_whole && i < n_wholes; i++)
        for (int t = 1; t <= max_threads && t <= 64; t++) {
            double fp32_s = 0;
            for (int k = 0; k < n_precs; k++) {
                model_result_t r;
                IN_CHILD(r, bench_whole(dir, wholes[i], image, sides[i], be, precs[k], t));
                if (!r.ok) {
                    cli_error("%s: %s", wholes[i], r.error[0] ? r.error : "benchmark process failed");
                    failed = 1;
                    break;
                }
                double g = r.gflop / r.seconds;
                int lo = precs[k] == NN_PRECISION_BF16;
                if (!lo)
                    fp32_s = r.seconds;
                char br[16], ar[16], sp[16], in[24];
                ratio_cols(g, bpeak[t], apeak[t], lo, fp32_s, r.seconds, br, ar, sp);
                snprintf(in, sizeof in, "%dx%d", sides[i], sides[i]);
                printf("%-26s %4s %7d %9s %5d %5d %9.3f %9.1f %9.1f %7.2f %7s %7s %7s %10.0f\n", wholes[i],
                       nn_precision_name(precs[k]), t, in, r.tile, r.n_tiles, r.seconds, r.gflop, g,
                       g / peak[t], br, ar, sp, r.rss_mb);
                fflush(stdout);
            }
        }
    return failed;
}
