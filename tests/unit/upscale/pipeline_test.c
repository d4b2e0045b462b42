/*
 * pipeline_test.c - the upscale pipeline around the network (src/upscale).
 *
 * With the fast real models (realesr-animevideov3, realesrgan-x4fast) on
 * real images: gray stays gray, alpha is kept (both alpha modes), 16-bit
 * stays 16-bit and agrees with the 8-bit result, non-native scales give the
 * exact size, progress rises to 100 and cancelling stops between tiles,
 * the abort flag (upscale_opts_t.abort) stops inside a tile and is not kept
 * by the upscaler after the call,
 * output is deterministic, tile 0 picks tiles from the memory budget, the
 * output limit is enforced, the output carries the input's ICC profile,
 * EXIF and XMP; and the model registry (families, exact file
 * names, unknown names, broken files skipped).
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/clock.h"
#include "image/image.h"
#include "test.h"
#include "upscale/upscale.h"

static upscale_registry_t *reg;
static const char *data;

static up_image_t *load(const char *rel) {
    char path[2048];
    up_error_t err;
    up_image_t *img = NULL;
    snprintf(path, sizeof path, "%s/%s", data, rel);
    CHECKF(image_load_file(path, NULL, &img, &err) == 0, "%s: %s", rel, err.msg);
    return img;
}

/* A w x h crop of img at (x0, y0), same bands and depth. */
static up_image_t *crop(const up_image_t *img, int x0, int y0, int w, int h) {
    up_image_t *c = image_new(w, h, img->bands, img->depth);
    size_t px = (size_t)img->bands * (img->depth / 8);
    for (int y = 0; y < h; y++)
        memcpy((char *)c->pixels + (size_t)y * w * px,
               (char *)img->pixels + ((size_t)(y0 + y) * img->width + x0) * px, (size_t)w * px);
    snprintf(c->format, sizeof c->format, "%s", img->format);
    return c;
}

static upscaler_t *open_model(const char *name, double scale) {
    const upscale_variant_t *v = NULL;
    upscaler_t *up = NULL;
    up_error_t err;
    CHECKF(upscale_registry_resolve(reg, name, scale, &v, &err) == 0, "%s", err.msg);
    if (v)
        CHECKF(upscaler_new(reg, v, NN_BACKEND_DNNL, 0, &up, &err) == 0, "%s", err.msg);
    return up;
}

static double psnr8(const up_image_t *a, const up_image_t *b) {
    size_t n = (size_t)a->width * a->height * a->bands;
    double se = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)((uint8_t *)a->pixels)[i] - ((uint8_t *)b->pixels)[i];
        se += d * d;
    }
    return se == 0 ? 999 : 10 * log10(255.0 * 255.0 * (double)n / se);
}

static void test_gray_alpha_depth(void) {
    upscaler_t *up = open_model("realesr-animevideov3", 2);
    up_image_t *photo = load("images/astronaut.png"), *cam = load("images/camera.png");
    if (!up || !photo || !cam)
        goto done;
    up_error_t err;
    upscale_opts_t opts;
    upscale_opts_init(&opts);

    /* gray */
    up_image_t *gray = crop(cam, 200, 200, 48, 40), *out = NULL;
    CHECKF(upscaler_run(up, gray, &opts, &out, &err) == 0, "%s", err.msg);
    CHECK(out && out->bands == 1 && out->width == 96 && out->height == 80 && out->depth == 8);
    image_free(out);

    /* RGBA: astronaut with camera as a real, varying alpha */
    up_image_t *rgba = image_new(48, 40, 4, 8);
    for (int y = 0; y < 40; y++)
        for (int x = 0; x < 48; x++) {
            uint8_t *d = (uint8_t *)rgba->pixels + ((size_t)y * 48 + x) * 4;
            memcpy(d, (uint8_t *)photo->pixels + ((size_t)(100 + y) * photo->width + 100 + x) * 3, 3);
            d[3] = ((uint8_t *)cam->pixels)[(size_t)(200 + y) * cam->width + 200 + x];
        }
    up_image_t *rgb = crop(photo, 100, 100, 48, 40), *out_rgb = NULL;
    CHECK(upscaler_run(up, rgb, &opts, &out_rgb, &err) == 0);
    for (int mode = 0; mode < 2; mode++) {
        opts.alpha = mode ? UPSCALE_ALPHA_MODEL : UPSCALE_ALPHA_RESAMPLE;
        CHECKF(upscaler_run(up, rgba, &opts, &out, &err) == 0, "%s", err.msg);
        CHECK(out && out->bands == 4 && out->width == 96 && out->height == 80);
        if (out && out_rgb) {
            /* colour planes are exactly the RGB result; alpha follows the gray plane */
            int same = 1;
            double a_err = 0;
            up_image_t *alpha_in = crop(gray, 0, 0, 48, 40), *alpha_big = NULL;
            image_resize(alpha_in, 96, 80, &alpha_big, &err);
            for (size_t i = 0; i < 96 * 80; i++) {
                same &= !memcmp((uint8_t *)out->pixels + i * 4, (uint8_t *)out_rgb->pixels + i * 3, 3);
                a_err +=
                    fabs((double)((uint8_t *)out->pixels)[i * 4 + 3] - ((uint8_t *)alpha_big->pixels)[i]);
            }
            CHECKF(same, "alpha mode %d: colour differs from the RGB run", mode);
            CHECKF(a_err / (96 * 80) < 6.0, "alpha mode %d: mean alpha error %.2f", mode, a_err / (96 * 80));
            image_free(alpha_in);
            image_free(alpha_big);
        }
        image_free(out);
    }
    opts.alpha = UPSCALE_ALPHA_RESAMPLE;

    /* 16-bit in, 16-bit out, agreeing with the 8-bit run */
    up_image_t *deep = image_new(48, 40, 3, 16);
    for (size_t i = 0; i < 48 * 40 * 3; i++)
        ((uint16_t *)deep->pixels)[i] = (uint16_t)(((uint8_t *)rgb->pixels)[i] * 257);
    CHECK(upscaler_run(up, deep, &opts, &out, &err) == 0);
    CHECK(out && out->depth == 16 && out->bands == 3);
    if (out && out_rgb) {
        int max_d = 0;
        for (size_t i = 0; i < 96 * 80 * 3; i++) {
            int d = abs((int)lround(((uint16_t *)out->pixels)[i] / 257.0) - ((uint8_t *)out_rgb->pixels)[i]);
            max_d = d > max_d ? d : max_d;
        }
        CHECKF(max_d <= 1, "16-bit result differs from 8-bit by %d levels", max_d);
    }
    image_free(out);
    image_free(deep);
    image_free(rgb);
    image_free(out_rgb);
    image_free(rgba);
    image_free(gray);
done:
    image_free(photo);
    image_free(cam);
    upscaler_free(up);
}

typedef struct progress_log {
    int n, last, monotonic, cancel_at;
} progress_log_t;

static int on_progress(void *ctx, int pct) {
    progress_log_t *p = ctx;
    p->monotonic &= pct >= p->last;
    p->last = pct;
    return p->cancel_at >= 0 && p->n++ == p->cancel_at;
}

static void test_scales_tiles_progress(void) {
    upscaler_t *up = open_model("realesrgan-x4fast", 0);
    up_image_t *photo = load("images/chelsea.png");
    if (!up || !photo)
        goto done;
    up_image_t *in = crop(photo, 50, 40, 90, 70), *a = NULL, *b = NULL;
    up_error_t err;
    upscale_opts_t opts;
    upscale_opts_init(&opts);

    /* exact sizes for non-native scales */
    const double scales[] = {3, 2.5, 1.5, 6};
    for (int i = 0; i < 4; i++) {
        opts.scale = scales[i];
        CHECKF(upscaler_run(up, in, &opts, &a, &err) == 0, "%s", err.msg);
        CHECKF(a && a->width == lround(90 * scales[i]) && a->height == lround(70 * scales[i]),
               "scale %g: %dx%d", scales[i], a ? a->width : 0, a ? a->height : 0);
        image_free(a);
        a = NULL;
    }
    opts.scale = 0;

    /* progress, tiles, determinism */
    progress_log_t log = {.last = 0, .monotonic = 1, .cancel_at = -1};
    opts.tile = 32;
    opts.progress = on_progress;
    opts.progress_ctx = &log;
    CHECK(upscaler_run(up, in, &opts, &a, &err) == 0);
    CHECK(log.monotonic && log.last == 100 && log.n == 0);
    CHECK(upscaler_run(up, in, &opts, &b, &err) == 0);
    CHECK(a && b && !memcmp(a->pixels, b->pixels, image_size(a)));
    image_free(b);
    b = NULL;
    /* tiles of 32 against one tile */
    opts.tile = 0;
    CHECK(upscaler_run(up, in, &opts, &b, &err) == 0);
    if (a && b) {
        double p = psnr8(a, b);
        printf("32-px tiles vs one tile on a 90x70 crop: %.2f dB\n", p);
        CHECKF(p >= 45, "tiled vs untiled %.2f dB", p);
    }
    image_free(a);
    image_free(b);
    a = b = NULL;

    /* cancel at the third tile */
    log = (progress_log_t){.last = 0, .monotonic = 1, .cancel_at = 2};
    opts.tile = 32;
    CHECK(upscaler_run(up, in, &opts, &a, &err) == UP_ERR_CANCELLED);
    CHECK(a == NULL && strstr(err.msg, "cancel") != NULL);

    /* automatic tiles from a small budget */
    opts.tile = 0;
    opts.progress = NULL;
    opts.tile_memory = 3u << 20; /* x4fast needs ~0.5 KB per padded pixel */
    int t = upscaler_choose_tile(up, 70, 90, &opts, &err);
    CHECKF(t >= 32 && t < 90, "3 MB budget chose tile %d", t);
    opts.tile_memory = 4u << 30;
    CHECK(upscaler_choose_tile(up, 70, 90, &opts, &err) == 0); /* one tile fits */
    /* the tiles split a side evenly: n tiles of t cover 1024 with less than 4 px each to spare
     * (the budget's own edge, e.g. 736, would take 2 x 736 for 1024: 448 px shifted over) */
    for (int mb = 60; mb <= 600; mb *= 2) {
        opts.tile_memory = (size_t)mb << 20;
        int et = upscaler_choose_tile(up, 1024, 1024, &opts, &err);
        int n = et > 0 ? (1024 + et - 1) / et : 1;
        CHECKF(et >= 0 && (et == 0 || (n * et - 1024 < 4 * n && et % 4 == 0)), "%d MB: tile %d", mb, et);
    }
    /* a budget that fits the whole image still splits a large one into tiles of at most
     * UPSCALE_AUTO_TILE_MAX (faster: bench/tile_choice.py), and leaves a small one whole */
    opts.tile_memory = UPSCALE_TILE_MEMORY_MAX;
    int big = upscaler_choose_tile(up, 2048, 2000, &opts, &err);
    CHECKF(big == UPSCALE_AUTO_TILE_MAX, "8 GiB, 2048 x 2000: tile %d", big);
    CHECK(upscaler_choose_tile(up, 1000, 1000, &opts, &err) == 500); /* 2 x 500, not 512 + a shifted 512 */
    CHECK(upscaler_choose_tile(up, 512, 300, &opts, &err) == 0);
    /* in bf16 the cap is smaller (memory-bound convolutions: bench/tile_cost.c) */
    if (upscaler_set_precision(up, NN_PRECISION_BF16, &err) == 0) {
        int bt = upscaler_choose_tile(up, 2048, 2000, &opts, &err);
        CHECKF(bt > 0 && bt <= UPSCALE_AUTO_TILE_MAX_BF16 && bt >= UPSCALE_AUTO_TILE_MAX_BF16 * 3 / 4,
               "bf16, 8 GiB, 2048 x 2000: tile %d", bt);
        CHECK(upscaler_choose_tile(up, 300, 300, &opts, &err) == 152); /* 2 x 152 */
        CHECK(upscaler_choose_tile(up, 180, 150, &opts, &err) == 0);
        CHECK(upscaler_set_precision(up, NN_PRECISION_FP32, &err) == 0);
    } else {
        printf("skipped: the bf16 tile cap (this CPU runs no bf16: %s)\n", err.msg);
    }
    /* the default budget: half the available memory over the workers, within its bounds */
    size_t one = upscale_tile_memory_auto(1), two = upscale_tile_memory_auto(2);
    CHECKF(one >= UPSCALE_TILE_MEMORY_MIN && one <= UPSCALE_TILE_MEMORY_MAX && two <= one &&
               upscale_tile_memory_auto(100000) == UPSCALE_TILE_MEMORY_MIN,
           "%zu, %zu", one, two);
    upscale_opts_t fresh;
    upscale_opts_init(&fresh); /* read once per process (the same tiles all run long) */
    CHECK(fresh.tile_memory >= UPSCALE_TILE_MEMORY_MIN && fresh.tile_memory <= UPSCALE_TILE_MEMORY_MAX);

    /* the output limit */
    opts.max_output_pixels = 100000;
    CHECK(upscaler_run(up, in, &opts, &a, &err) == UP_ERR_TOO_LARGE);
    CHECK(strstr(err.msg, "megapixels") != NULL);
    image_free(in);
done:
    image_free(photo);
    upscaler_free(up);
}

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

/* opts.abort: set before, set during one tile by another thread, and left set after the call. */
static void test_abort(void) {
    upscaler_t *up = open_model("realesrgan-x4fast", 0);
    up_image_t *photo = load("images/chelsea.png");
    if (!up || !photo)
        goto done;
    up_image_t *in = crop(photo, 100, 40, 192, 192), *a = NULL, *b = NULL;
    up_error_t err;
    upscale_opts_t opts;
    upscale_opts_init(&opts);
    atomic_int flag;
    atomic_init(&flag, 0);
    opts.tile = 0; /* one tile, planned by a first run */
    CHECKF(upscaler_run(up, in, &opts, &a, &err) == 0, "%s", err.msg);
    image_free(a);
    double t0 = mono_s();
    CHECKF(upscaler_run(up, in, &opts, &a, &err) == 0, "%s", err.msg);
    double t_full = mono_s() - t0;

    /* a clear flag changes nothing */
    opts.abort = &flag;
    CHECKF(upscaler_run(up, in, &opts, &b, &err) == 0, "%s", err.msg);
    CHECK(a && b && !memcmp(a->pixels, b->pixels, image_size(a)));
    image_free(b);
    b = NULL;

    /* set before the call: nothing runs, no image */
    atomic_store(&flag, 1);
    CHECK(upscaler_run(up, in, &opts, &b, &err) == UP_ERR_CANCELLED);
    CHECKF(b == NULL && strstr(err.msg, "stopped") != NULL, "%s", err.msg);

    /* set a quarter into the only tile: the network stops between two layers */
    atomic_store(&flag, 0);
    setter_t st = {.flag = &flag, .start = mono_s(), .delay_s = t_full / 4};
    pthread_t th;
    CHECK(pthread_create(&th, NULL, set_later, &st) == 0);
    int rc = upscaler_run(up, in, &opts, &b, &err);
    double t_mid = mono_s() - st.start;
    pthread_join(th, NULL);
    CHECKF(rc == UP_ERR_CANCELLED && b == NULL && strstr(err.msg, "before step") != NULL, "rc %d: %s", rc,
           rc ? err.msg : "ran to the end");
    CHECKF(t_mid < t_full * 0.75, "stopped after %.3f s of a %.3f s tile", t_mid, t_full);
    printf("abort: a 212x212 tile of x4fast takes %.3f s; set after %.3f s, stopped after %.3f s (%s)\n",
           t_full, st.delay_s, t_mid, err.msg);

    /* the flag is borrowed for one call only: still set, but not passed, it stops nothing */
    opts.abort = NULL;
    CHECKF(upscaler_run(up, in, &opts, &b, &err) == 0, "%s", err.msg);
    CHECK(a && b && !memcmp(a->pixels, b->pixels, image_size(a)));
    image_free(a);
    image_free(b);
    image_free(in);
done:
    image_free(photo);
    upscaler_free(up);
}

/* The output carries the input's ICC profile, EXIF and XMP, and its values
 * are those of the same input without them: the network ran on the input's
 * own values (an Adobe RGB photo stays Adobe RGB). */
static void test_metadata(void) {
    upscaler_t *up = open_model("realesr-animevideov3", 2);
    up_image_t *photo = load("images/chelsea.png");
    char path[2048];
    snprintf(path, sizeof path, "%s/image/adobe-rgb-1998.icc", test_env("UPRES_TEST_CASES"));
    FILE *f = fopen(path, "rb");
    CHECKF(f != NULL, "cannot open %s", path);
    static uint8_t icc[4096];
    size_t icc_n = f ? fread(icc, 1, sizeof icc, f) : 0;
    if (f)
        fclose(f);
    static const char exif[] = "Exif\0\0II*\0\10\0\0\0\0\0", xmp[] = "<x:xmpmeta xmlns:x='adobe:ns:meta/'/>";
    if (!up || !photo || icc_n < 128)
        goto done;
    up_image_t *plain = crop(photo, 100, 100, 48, 40), *tagged = crop(photo, 100, 100, 48, 40);
    up_image_t src = {.icc = icc,
                      .icc_size = icc_n,
                      .exif = (void *)exif,
                      .exif_size = sizeof exif - 1,
                      .xmp = (void *)xmp,
                      .xmp_size = sizeof xmp - 1};
    CHECK(image_copy_metadata(tagged, &src) == 0);
    up_error_t err;
    upscale_opts_t opts;
    upscale_opts_init(&opts);
    for (int i = 0; i < 2; i++) {
        opts.scale = i ? 1.5 : 0; /* native, then through the final resize */
        up_image_t *a = NULL, *b = NULL;
        CHECKF(upscaler_run(up, plain, &opts, &a, &err) == 0, "%s", err.msg);
        CHECKF(upscaler_run(up, tagged, &opts, &b, &err) == 0, "%s", err.msg);
        if (a && b) {
            CHECK(a->icc == NULL && a->exif == NULL && a->xmp == NULL);
            CHECKF(b->icc && b->icc != tagged->icc && b->icc_size == icc_n && !memcmp(b->icc, icc, icc_n),
                   "scale %g: the ICC profile is not the input's", opts.scale);
            CHECK(b->exif_size == sizeof exif - 1 && !memcmp(b->exif, exif, b->exif_size));
            CHECK(b->xmp_size == sizeof xmp - 1 && !memcmp(b->xmp, xmp, b->xmp_size));
            CHECKF(a->width == b->width && a->height == b->height &&
                       !memcmp(a->pixels, b->pixels, image_size(a)),
                   "scale %g: the profile changed the values", opts.scale);
        }
        image_free(a);
        image_free(b);
    }
    image_free(plain);
    image_free(tagged);
done:
    image_free(photo);
    upscaler_free(up);
}

static void test_registry(const char *models) {
    const upscale_model_info_t *m = upscale_registry_find(reg, "realesr-animevideov3");
    CHECK(m && m->n_variants == 3 && m->variants[0].scale == 2 && m->variants[2].scale == 4);
    CHECK(m && upscale_model_pick(m, 3)->scale == 3);
    CHECK(m && upscale_model_pick(m, 2.5)->scale == 3);
    CHECK(m && upscale_model_pick(m, 8)->scale == 4);
    CHECK(m && upscale_model_pick(m, 0)->scale == 4);
    const upscale_variant_t *v = NULL;
    up_error_t err;
    CHECK(upscale_registry_resolve(reg, "realesr-animevideov3-x2", 4, &v, &err) == 0 && v->scale == 2);
    CHECK(upscale_registry_resolve(reg, "nope", 4, &v, &err) == UP_ERR_NOT_FOUND);
    CHECK(strstr(err.msg, "realesrgan-x4plus") != NULL);

    /* a folder with one good model under a new name and one broken file */
    char dir[] = "/tmp/upres-reg-XXXXXX", cmd[4096];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(
        cmd, sizeof cmd,
        "cp %s/realesrgan-x4fast.param %s/mine-x4.param && cp %s/realesrgan-x4fast.bin %s/mine-x4.bin && "
        "echo broken > %s/bad.param && : > %s/bad.bin",
        models, dir, models, dir, dir, dir);
    CHECK(system(cmd) == 0);
    upscale_registry_t *r2 = NULL;
    CHECK(upscale_registry_scan(dir, &r2, &err) == 0);
    CHECK(r2 && r2->n_models == 1 && !strcmp(r2->models[0].name, "mine") &&
          r2->models[0].variants[0].scale == 4);
    upscale_registry_free(r2);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
    CHECK(upscale_registry_scan("/nonexistent/models", &r2, &err) == UP_ERR_NOT_FOUND);
}

int main(void) {
    data = test_env("UPRES_SHARED_DATA");
    const char *models = test_env("UPRES_TEST_MODELS");
    up_error_t err;
    CHECK(image_init() == 0);
    CHECKF(upscale_registry_scan(models, &reg, &err) == 0, "%s", err.msg);
    if (!reg)
        return test_summary();
    test_registry(models);
    test_gray_alpha_depth();
    test_scales_tiles_progress();
    test_abort();
    test_metadata();
    upscale_registry_free(reg);
    return test_summary();
}
