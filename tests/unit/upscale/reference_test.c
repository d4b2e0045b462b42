/*
 * reference_test.c - the engine against ncnn's reference outputs.
 *
 * For every model and every input in shared/data/ref (files
 * out/MODEL__INPUT.f32 and .png), on both backends:
 *   - the float output of the pipeline's core (reflect-101 pad 10, network,
 *     crop) against the .f32: PSNR >= 50 dB on the 0..1 scale;
 *   - the full image pipeline (decode, upscale, quantise, PNG encode, decode)
 *     against the .png: PSNR >= 50 dB on the 0..255 scale.
 * The same for dnnl in bf16 (nn_net_set_precision) on a CPU that has it:
 * every model must stay >= 50 dB from ncnn's fp32 outputs; on a CPU without
 * AVX512_BF16 those checks are skipped, saying so.
 * Then tiled against untiled on a photo: PSNR >= 45 dB, printed.
 *
 * The sanitizer build runs the heavy models on dnnl only and the ref
 * backend on the light ones (the instrumented plain-C convolution is slow).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "image/image.h"
#include "test.h"
#include "upscale/upscale.h"

static const char *models[] = {"realesrgan-x4plus",       "realesrgan-x4fast",
                               "realesrgan-x4plus-anime", "realesr-animevideov3-x2",
                               "realesr-animevideov3-x3", "realesr-animevideov3-x4"};
static const char *inputs[] = {"astronaut_lr64", "chelsea_lr64", "astronaut_lr128"};

static int heavy(const char *model) { return strstr(model, "x4plus") != NULL; }

static float *read_f32(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    float *v = malloc((size_t)size);
    *n = fread(v, 1, (size_t)size, f) / sizeof(float);
    fclose(f);
    return v;
}

static double psnr_f(const float *a, const float *b, size_t n, double peak) {
    double se = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - (double)b[i];
        se += d * d;
    }
    return se == 0 ? 999.0 : 10.0 * log10(peak * peak / (se / (double)n));
}

static double psnr_u8(const up_image_t *a, const up_image_t *b) {
    if (a->width != b->width || a->height != b->height || a->bands != b->bands || a->depth != 8)
        return -1;
    size_t n = (size_t)a->width * a->height * a->bands;
    double se = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)((uint8_t *)a->pixels)[i] - (double)((uint8_t *)b->pixels)[i];
        se += d * d;
    }
    return se == 0 ? 999.0 : 10.0 * log10(255.0 * 255.0 / (se / (double)n));
}

static float *planes_of(const up_image_t *img) {
    size_t hw = (size_t)img->width * img->height;
    float *p = malloc(3 * hw * sizeof(float));
    for (int c = 0; c < 3; c++)
        for (size_t i = 0; i < hw; i++)
            p[c * hw + i] = ((uint8_t *)img->pixels)[i * img->bands + (img->bands >= 3 ? c : 0)] / 255.0f;
    return p;
}

static void check_model(const upscale_registry_t *reg, const char *data, const char *model,
                        nn_backend_kind_t be, nn_precision_t prec) {
    const upscale_variant_t *v = NULL;
    upscaler_t *up = NULL;
    up_error_t err;
    CHECKF(upscale_registry_resolve(reg, model, 0, &v, &err) == 0, "%s", err.msg);
    if (!v)
        return;
    CHECKF(upscaler_new(reg, v, be, 0, &up, &err) == 0, "%s", err.msg);
    if (!up)
        return;
    CHECKF(upscaler_set_precision(up, prec, &err) == 0, "%s", err.msg);
    const char *pname = prec == NN_PRECISION_BF16 ? "dnnl-bf16" : nn_backend_name(be);
    int s = upscaler_scale(up);
    for (size_t i = 0; i < sizeof inputs / sizeof *inputs; i++) {
        char in_path[2048], f32_path[2048], png_path[2048];
        snprintf(in_path, sizeof in_path, "%s/ref/in/%s.png", data, inputs[i]);
        snprintf(f32_path, sizeof f32_path, "%s/ref/out/%s__%s.f32", data, model, inputs[i]);
        snprintf(png_path, sizeof png_path, "%s/ref/out/%s__%s.png", data, model, inputs[i]);
        if (access(f32_path, R_OK) != 0)
            continue;
        up_image_t *in = NULL, *ref_png = NULL, *out = NULL, *back = NULL;
        CHECK(image_load_file(in_path, NULL, &in, &err) == 0);
        CHECK(image_load_file(png_path, NULL, &ref_png, &err) == 0);
        if (!in || !ref_png)
            goto next;
        size_t n_ref = 0, n = (size_t)3 * in->width * s * in->height * s;
        float *ref = read_f32(f32_path, &n_ref);
        CHECKF(n_ref == n, "%s: %zu floats, expected %zu", f32_path, n_ref, n);
        float *planes = planes_of(in), *got = malloc(n * sizeof(float));
        int rc = upscaler_run_planes(up, planes, 3, in->height, in->width, got, 0, NULL, 0, 1, &err);
        CHECKF(rc == 0, "%s", err.msg);
        double p_f32 = rc == 0 && n_ref == n ? psnr_f(got, ref, n, 1.0) : -1;
        CHECKF(p_f32 >= 50.0, "%s %s %s: float PSNR %.2f dB", pname, model, inputs[i], p_f32);

        /* the whole image path, through a PNG file */
        upscale_opts_t opts;
        upscale_opts_init(&opts);
        rc = upscaler_run(up, in, &opts, &out, &err);
        CHECKF(rc == 0, "%s", err.msg);
        char tmp[] = "/tmp/upres-ref-XXXXXX.png";
        int fd = mkstemps(tmp, 4);
        close(fd);
        image_save_opts_t so = {.format = "png"};
        double p_png = -1;
        if (rc == 0 && image_save_file(out, tmp, &so, &err) == 0 &&
            image_load_file(tmp, NULL, &back, &err) == 0)
            p_png = psnr_u8(back, ref_png);
        unlink(tmp);
        CHECKF(p_png >= 50.0, "%s %s %s: PNG PSNR %.2f dB", pname, model, inputs[i], p_png);
        printf("%-9s %-24s %-16s float %6.2f dB  png %6.2f dB\n", pname, model, inputs[i], p_f32, p_png);
        fflush(stdout);
        free(ref);
        free(planes);
        free(got);
    next:
        image_free(in);
        image_free(ref_png);
        image_free(out);
        image_free(back);
    }
    upscaler_free(up);
}

/* Tiled against untiled on a real photo. */
static void check_tiling(const upscale_registry_t *reg, const char *data) {
    const char *model = "realesrgan-x4fast";
    const upscale_variant_t *v = NULL;
    upscaler_t *up = NULL;
    up_error_t err;
    up_image_t *in = NULL;
    char path[2048];
    snprintf(path, sizeof path, "%s/images/chelsea.png", data);
    CHECK(image_load_file(path, NULL, &in, &err) == 0);
    CHECK(upscale_registry_resolve(reg, model, 0, &v, &err) == 0);
    CHECKF(v && upscaler_new(reg, v, NN_BACKEND_DNNL, 0, &up, &err) == 0, "%s", err.msg);
    if (up)
        CHECK(upscaler_set_precision(up, NN_PRECISION_FP32, &err) == 0);
    if (!in || !up)
        goto done;
    int w = in->width, h = in->height, s = upscaler_scale(up);
    if (test_sanitized()) { /* a 160x120 crop keeps the instrumented run short */
        w = 160;
        h = 120;
    }
    size_t hw = (size_t)w * h, n = 3 * hw * s * s;
    float *planes = malloc(3 * hw * sizeof(float)), *whole = malloc(n * sizeof(float)),
          *tiled = malloc(n * sizeof(float));
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                planes[c * hw + (size_t)y * w + x] =
                    ((uint8_t *)in->pixels)[((size_t)y * in->width + x) * in->bands + c] / 255.0f;
    CHECK(upscaler_run_planes(up, planes, 3, h, w, whole, 0, NULL, 0, 1, &err) == 0);
    const int tiles[] = {64, 100};
    for (int k = 0; k < 2; k++) {
        CHECK(upscaler_run_planes(up, planes, 3, h, w, tiled, tiles[k], NULL, 0, 0, &err) == 0);
        double p = psnr_f(whole, tiled, n, 1.0);
        printf("tiled (%d px) vs untiled, %s on %dx%d chelsea: PSNR %.2f dB\n", tiles[k], model, w, h, p);
        CHECKF(p >= 45.0, "tiled vs untiled PSNR %.2f dB", p);
    }
    free(planes);
    free(whole);
    free(tiled);
done:
    image_free(in);
    upscaler_free(up);
}

int main(void) {
    const char *data = test_env("UPRES_SHARED_DATA");
    const char *dir = test_env("UPRES_TEST_MODELS");
    upscale_registry_t *reg = NULL;
    up_error_t err;
    CHECK(image_init() == 0);
    CHECKF(upscale_registry_scan(dir, &reg, &err) == 0, "%s", err.msg);
    if (!reg)
        return test_summary();
    /* whether this CPU has bf16: ask a net of the lightest model */
    const upscale_variant_t *v = NULL;
    upscaler_t *probe = NULL;
    int have_bf16 = 0;
    if (upscale_registry_resolve(reg, "realesr-animevideov3-x2", 0, &v, &err) == 0 && v &&
        upscaler_new(reg, v, NN_BACKEND_DNNL, 0, &probe, &err) == 0)
        have_bf16 = upscaler_set_precision(probe, NN_PRECISION_BF16, &err) == 0;
    if (!have_bf16)
        printf("SKIP bf16 checks: %s\n", probe ? err.msg : "no probe model");
    upscaler_free(probe);
    for (size_t m = 0; m < sizeof models / sizeof *models; m++) {
        check_model(reg, data, models[m], NN_BACKEND_DNNL, NN_PRECISION_FP32);
        if (have_bf16)
            check_model(reg, data, models[m], NN_BACKEND_DNNL, NN_PRECISION_BF16);
        if (!(test_sanitized() && heavy(models[m])))
            check_model(reg, data, models[m], NN_BACKEND_REF, NN_PRECISION_FP32);
    }
    check_tiling(reg, data);
    upscale_registry_free(reg);
    return test_summary();
}
