/*
 * image_test.c - tests for src/image/image.c: load, probe, save, resize.
 *
 * The odd inputs (16-bit, palette, EXIF orientation, CMYK, TIFF, GIF, WebP,
 * ICC profiles, EXIF and XMP, animations, HEIF/AVIF) are made at test time
 * from the shared photos with libvips itself, in a temporary folder, with
 * the Adobe RGB (1998) profile of tests/cases/image/ (made by the script
 * there); the broken ones live in tests/cases/images/<case>/ as `input.*`
 * plus an `expected` line:
 *
 *   ok <width> <height> <bands> <depth> <format>
 *   error <CODE> <text the message must contain>
 *
 * KEEP_TMP=1 keeps the temporary folder (its path is under $TMPDIR or /tmp).
 */
#include "image/image.h"

#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <vips/vips.h>

#include "test.h"

static const char *shared, *cases;
static char tmpdir[256];

static const char *shared_path(const char *name) {
    static char buf[1024];
    snprintf(buf, sizeof buf, "%s/images/%s", shared, name);
    return buf;
}

static const char *tmp_path(const char *name) {
    static char buf[2][1024];
    static int i;
    i ^= 1;
    snprintf(buf[i], sizeof buf[i], "%s/%s", tmpdir, name);
    return buf[i];
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static unsigned sample(const up_image_t *img, int x, int y, int b) {
    size_t i = ((size_t)y * img->width + x) * img->bands + b;
    return img->depth == 16 ? ((const uint16_t *)img->pixels)[i] : ((const uint8_t *)img->pixels)[i];
}

/* PSNR of two images of the same shape, on their own scale (255 or 65535). */
static double psnr(const up_image_t *a, const up_image_t *b) {
    if (a->width != b->width || a->height != b->height || a->bands != b->bands || a->depth != b->depth)
        return -1;
    double peak = a->depth == 16 ? 65535.0 : 255.0, se = 0;
    size_t n = (size_t)a->width * a->height * a->bands;
    for (size_t i = 0; i < n; i++) {
        double d = a->depth == 16 ? (double)((uint16_t *)a->pixels)[i] - ((uint16_t *)b->pixels)[i]
                                  : (double)((uint8_t *)a->pixels)[i] - ((uint8_t *)b->pixels)[i];
        se += d * d;
    }
    if (se == 0)
        return INFINITY;
    return 10 * log10(peak * peak / (se / n));
}

static int same_pixels(const up_image_t *a, const up_image_t *b) {
    return a->width == b->width && a->height == b->height && a->bands == b->bands && a->depth == b->depth &&
           memcmp(a->pixels, b->pixels, image_size(a)) == 0;
}

/* Equal where it shows: alpha everywhere, colour where alpha > 0 (lossless
 * WebP may rewrite the colour of fully transparent pixels). */
static int same_visible(const up_image_t *a, const up_image_t *b) {
    if (a->width != b->width || a->height != b->height || a->bands != 4 || b->bands != 4 || a->depth != 8 ||
        b->depth != 8)
        return 0;
    const uint8_t *p = a->pixels, *q = b->pixels;
    for (size_t i = 0; i < (size_t)a->width * a->height * 4; i += 4)
        if (p[i + 3] != q[i + 3] || (p[i + 3] && memcmp(p + i, q + i, 3)))
            return 0;
    return 1;
}

static int alpha_opaque(const up_image_t *img) {
    if (img->bands != 2 && img->bands != 4)
        return 0;
    for (int y = 0; y < img->height; y++)
        for (int x = 0; x < img->width; x++)
            if (sample(img, x, y, img->bands - 1) != (img->depth == 16 ? 65535u : 255u))
                return 0;
    return 1;
}

static up_image_t *load(const char *path) {
    up_image_t *img = NULL;
    up_error_t err = {0};
    int rc = image_load_file(path, NULL, &img, &err);
    CHECKF(rc == 0 && img, "load %s: %d %s", path, rc, err.msg);
    return img;
}

/* An up_image_t from a VipsImage (uchar or ushort), through libvips only. */
static up_image_t *from_vips(VipsImage *v) {
    int depth = v->BandFmt == VIPS_FORMAT_USHORT ? 16 : 8;
    up_image_t *img = image_new(v->Xsize, v->Ysize, v->Bands, depth);
    size_t size;
    void *data = vips_image_write_to_memory(v, &size);
    if (!img || !data || size != image_size(img)) {
        fprintf(stderr, "from_vips: %s\n", vips_error_buffer());
        image_free(img);
        g_free(data);
        vips_error_clear();
        return NULL;
    }
    memcpy(img->pixels, data, size);
    g_free(data);
    return img;
}

/* The file decoded by libvips directly: no rotation, no colour handling. */
static up_image_t *vips_decode(const char *path) {
    VipsImage *v = vips_image_new_from_file(path, NULL);
    if (!v)
        return NULL;
    up_image_t *img = from_vips(v);
    g_object_unref(v);
    return img;
}

static VipsImage *vips_load(const char *path) {
    VipsImage *v = vips_image_new_from_file(path, NULL);
    CHECKF(v != NULL, "vips load %s: %s", path, vips_error_buffer());
    return v;
}

/* Save v to tmp/name with libvips; returns the path or NULL. */
static const char *vips_save(VipsImage *v, const char *name, const char *opts) {
    char spec[1200];
    const char *path = tmp_path(name);
    snprintf(spec, sizeof spec, "%s%s", path, opts ? opts : "");
    if (vips_image_write_to_file(v, spec, NULL)) {
        fprintf(stderr, "vips save %s: %s\n", spec, vips_error_buffer());
        vips_error_clear();
        return NULL;
    }
    return path;
}

/* astronaut with camera as its alpha: RGBA with real transparency (new ref) */
static VipsImage *vips_rgba(void) {
    VipsImage *a = vips_load(shared_path("astronaut.png")), *c = vips_load(shared_path("camera.png"));
    VipsImage *j = NULL;
    if (a && c && vips_bandjoin2(a, c, &j, NULL))
        j = NULL;
    if (a)
        g_object_unref(a);
    if (c)
        g_object_unref(c);
    return j;
}

static int has_loader(const char *nickname) { return vips_type_find("VipsOperation", nickname) != 0; }

/* ---- the shared photos ------------------------------------------------- */

static void test_shared_images(void) {
    static const struct {
        const char *name;
        int w, h, bands;
    } imgs[] = {{"astronaut.png", 512, 512, 3},
                {"chelsea.png", 451, 300, 3},
                {"logo.png", 500, 500, 4},
                {"camera.png", 512, 512, 1}};
    for (size_t i = 0; i < sizeof imgs / sizeof imgs[0]; i++) {
        up_image_t *img = load(shared_path(imgs[i].name));
        if (!img)
            continue;
        CHECKF(img->width == imgs[i].w && img->height == imgs[i].h && img->bands == imgs[i].bands &&
                   img->depth == 8,
               "%s: %dx%d %d bands %d-bit", imgs[i].name, img->width, img->height, img->bands, img->depth);
        CHECK(strcmp(img->format, "png") == 0);
        up_image_t *ref = vips_decode(shared_path(imgs[i].name));
        CHECKF(ref && same_pixels(img, ref), "%s: pixels differ from libvips' decode", imgs[i].name);
        image_free(ref);

        /* the same bytes from memory */
        gchar *data;
        gsize size;
        if (g_file_get_contents(shared_path(imgs[i].name), &data, &size, NULL)) {
            up_image_t *b = NULL;
            up_error_t err;
            CHECK(image_load_buffer(data, size, NULL, &b, &err) == 0);
            CHECK(b && same_pixels(img, b));
            image_free(b);
            g_free(data);
        }
        image_free(img);
    }
    char path[1024];
    snprintf(path, sizeof path, "%s/ref/in/astronaut_lr64.png", shared);
    up_image_t *lr = load(path);
    CHECK(lr && lr->width == 64 && lr->height == 64 && lr->bands == 3 && lr->depth == 8);
    image_free(lr);
}

/* ---- formats and colour made at test time ------------------------------ */

static void test_png_16bit(void) {
    VipsImage *a = vips_load(shared_path("astronaut.png")), *c = vips_load(shared_path("camera.png"));
    VipsImage *a16, *a16u, *a16t, *c16, *c16t, *ca, *ca16, *ca16t, *alpha;
    if (!a || !c)
        return;
    /* v * 257 maps 0..255 onto 0..65535 exactly */
    CHECK(vips_linear1(a, &a16, 257, 0, NULL) == 0 && vips_cast(a16, &a16u, VIPS_FORMAT_USHORT, NULL) == 0 &&
          vips_copy(a16u, &a16t, "interpretation", VIPS_INTERPRETATION_RGB16, NULL) == 0);
    const char *p = vips_save(a16t, "rgb16.png", "[bitdepth=16]");
    up_image_t *img = p ? load(p) : NULL;
    up_image_t *ref = load(shared_path("astronaut.png"));
    CHECK(img && img->depth == 16 && img->bands == 3 && img->width == 512);
    if (img && ref) {
        int ok = 1;
        for (int y = 0; y < 512 && ok; y += 7)
            for (int x = 0; x < 512 && ok; x += 5)
                for (int b = 0; b < 3; b++)
                    ok &= sample(img, x, y, b) == sample(ref, x, y, b) * 257;
        CHECK(ok);
        /* 16-bit PNG round trip is exact */
        void *buf;
        size_t size;
        up_error_t err;
        up_image_t *back = NULL;
        image_save_opts_t o = {.format = "png"};
        CHECK(image_save_buffer(img, &o, &buf, &size, &err) == 0);
        CHECK(image_load_buffer(buf, size, NULL, &back, &err) == 0);
        CHECK(back && back->depth == 16 && same_pixels(back, img));
        image_free(back);
        free(buf);
        /* 16-bit to JPEG is 8-bit, rounded */
        o.format = "jpg";
        o.quality = 100;
        CHECK(image_save_buffer(img, &o, &buf, &size, &err) == 0);
        CHECK(image_load_buffer(buf, size, NULL, &back, &err) == 0);
        CHECK(back && back->depth == 8 && back->bands == 3);
        CHECKF(back && psnr(back, ref) > 40, "psnr %.1f", back ? psnr(back, ref) : 0);
        image_free(back);
        free(buf);
    }
    image_free(img);
    image_free(ref);

    /* 16-bit gray with alpha stays 2 bands, 16 bits */
    CHECK(vips_linear1(c, &c16, 257, 0, NULL) == 0 && vips_cast(c16, &c16t, VIPS_FORMAT_USHORT, NULL) == 0);
    CHECK(vips_linear1(c, &ca, -1, 255, NULL) == 0 && vips_cast(ca, &alpha, VIPS_FORMAT_UCHAR, NULL) == 0);
    CHECK(vips_bandjoin2(c, alpha, &ca16, NULL) == 0);
    VipsImage *ga16, *ga16u;
    CHECK(vips_linear1(ca16, &ga16, 257, 0, NULL) == 0 &&
          vips_cast(ga16, &ga16u, VIPS_FORMAT_USHORT, NULL) == 0);
    CHECK(vips_copy(ga16u, &ca16t, "interpretation", VIPS_INTERPRETATION_GREY16, NULL) == 0);
    p = vips_save(ca16t, "ga16.png", "[bitdepth=16]");
    img = p ? load(p) : NULL;
    CHECK(img && img->bands == 2 && img->depth == 16);
    if (img)
        CHECK(sample(img, 10, 10, 1) == (255 - sample(img, 10, 10, 0) / 257) * 257);
    image_free(img);
    g_object_unref(c16);
    g_object_unref(c16t);
    g_object_unref(ca);
    g_object_unref(alpha);
    g_object_unref(ca16);
    g_object_unref(ga16);
    g_object_unref(ga16u);
    g_object_unref(ca16t);
    g_object_unref(a16);
    g_object_unref(a16u);
    g_object_unref(a16t);
    g_object_unref(a);
    g_object_unref(c);
}

static void test_png_palette_and_gray(void) {
    VipsImage *logo = vips_rgba(), *ch = vips_load(shared_path("chelsea.png"));
    if (!logo || !ch)
        return;
    const char *p = vips_save(logo, "rgba_pal.png", "[palette,Q=100,effort=1]");
    up_image_t *img = p ? load(p) : NULL;
    up_image_t *ref = from_vips(logo);
    CHECKF(img && img->bands == 4 && img->depth == 8, "palette RGBA: %d bands", img ? img->bands : 0);
    CHECKF(img && ref && psnr(img, ref) > 20, "palette psnr %.1f", img && ref ? psnr(img, ref) : 0);
    image_free(img);
    image_free(ref);
    p = vips_save(ch, "chelsea_pal.png", "[palette,Q=100,effort=1]");
    img = p ? load(p) : NULL;
    CHECK(img && img->bands == 3 && img->depth == 8 && img->width == 451);
    image_free(img);
    /* 1-bit gray PNG expands to 0/255 */
    VipsImage *c = vips_load(shared_path("camera.png")), *bw;
    if (c && vips_moreeq_const1(c, &bw, 128, NULL) == 0) {
        p = vips_save(bw, "bw1.png", "[bitdepth=1]");
        img = p ? load(p) : NULL;
        CHECK(img && img->bands == 1 && img->depth == 8);
        if (img) {
            int ok = 1;
            for (size_t i = 0; i < image_size(img); i++)
                ok &= ((uint8_t *)img->pixels)[i] == 0 || ((uint8_t *)img->pixels)[i] == 255;
            CHECK(ok);
        }
        image_free(img);
        g_object_unref(bw);
    }
    if (c)
        g_object_unref(c);
    g_object_unref(logo);
    g_object_unref(ch);
}

static void test_jpeg_orientation(void) {
    VipsImage *ch = vips_load(shared_path("chelsea.png")), *tagged;
    if (!ch || vips_copy(ch, &tagged, NULL))
        return;
    vips_image_set_int(tagged, VIPS_META_ORIENTATION, 6);
    const char *p = vips_save(tagged, "orient6.jpg", "[Q=95]");
    up_image_t *img = p ? load(p) : NULL;
    CHECKF(img && img->width == 300 && img->height == 451, "orientation 6: %dx%d", img ? img->width : 0,
           img ? img->height : 0);
    CHECK(img && strcmp(img->format, "jpg") == 0);
    /* orientation 6 = rotate 90 degrees clockwise to display */
    VipsImage *raw = p ? vips_load(p) : NULL, *rot;
    if (img && raw && vips_rot(raw, &rot, VIPS_ANGLE_D90, NULL) == 0) {
        up_image_t *ref = from_vips(rot);
        CHECK(ref && same_pixels(img, ref));
        image_free(ref);
        g_object_unref(rot);
    }
    /* the tag is gone: saving and loading again does not rotate twice */
    if (img) {
        const char *q = tmp_path("orient6_again.jpg");
        up_error_t err;
        CHECK(image_save_file(img, q, NULL, &err) == 0);
        up_image_t *again = load(q);
        CHECK(again && again->width == 300 && again->height == 451);
        VipsImage *v = vips_load(q);
        CHECK(v && vips_image_get_orientation(v) == 1);
        if (v)
            g_object_unref(v);
        image_free(again);
    }
    /* a mirrored orientation (2) keeps the size and flips */
    vips_image_set_int(tagged, VIPS_META_ORIENTATION, 2);
    p = vips_save(tagged, "orient2.tif", NULL);
    up_image_t *m = p ? load(p) : NULL, *o = load(shared_path("chelsea.png"));
    CHECK(m && o && m->width == 451 && sample(m, 0, 5, 1) == sample(o, 450, 5, 1));
    image_free(m);
    image_free(o);
    if (raw)
        g_object_unref(raw);
    image_free(img);
    g_object_unref(tagged);
    g_object_unref(ch);
}

static void test_cmyk(void) {
    VipsImage *a = vips_load(shared_path("astronaut.png")), *cmyk, *bare;
    if (!a)
        return;
    if (vips_icc_transform(a, &cmyk, "cmyk", "input_profile", "srgb", NULL)) {
        CHECKF(0, "cannot make CMYK: %s", vips_error_buffer());
        vips_error_clear();
        g_object_unref(a);
        return;
    }
    CHECK(cmyk->Bands == 4 && cmyk->Type == VIPS_INTERPRETATION_CMYK);
    up_image_t *ref = load(shared_path("astronaut.png"));
    /* with its profile embedded */
    const char *p = vips_save(cmyk, "cmyk_icc.jpg", "[Q=95]");
    up_image_t *img = p ? load(p) : NULL;
    CHECK(img && img->bands == 3 && img->depth == 8 && img->width == 512);
    CHECKF(img && ref && psnr(img, ref) > 25, "CMYK+ICC psnr %.1f", img && ref ? psnr(img, ref) : 0);
    CHECK(img && img->icc == NULL); /* converted: the values are sRGB now */
    image_free(img);
    /* without a profile: libvips' built-in CMYK profile */
    CHECK(vips_copy(cmyk, &bare, NULL) == 0);
    vips_image_remove(bare, VIPS_META_ICC_NAME);
    p = vips_save(bare, "cmyk_bare.jpg", "[Q=95,strip]");
    img = p ? load(p) : NULL;
    CHECK(img && img->bands == 3 && img->depth == 8);
    CHECKF(img && ref && psnr(img, ref) > 25, "CMYK psnr %.1f", img && ref ? psnr(img, ref) : 0);
    image_free(img);
    image_free(ref);
    g_object_unref(bare);
    g_object_unref(cmyk);
    g_object_unref(a);
}

static void test_icc(void) {
    /* astronaut's colours re-encoded in Display P3, with that profile: the
     * loader keeps the file's values and profile; image_to_srgb converts
     * back to sRGB, close to the original */
    VipsImage *a = vips_load(shared_path("astronaut.png")), *p3, *p3_16, *t16;
    if (!a)
        return;
    if (vips_icc_transform(a, &p3, "p3", "input_profile", "srgb", NULL)) {
        CHECKF(0, "cannot make P3: %s", vips_error_buffer());
        vips_error_clear();
        g_object_unref(a);
        return;
    }
    const char *p = vips_save(p3, "p3.png", NULL);
    up_image_t *img = p ? load(p) : NULL, *ref = load(shared_path("astronaut.png"));
    up_image_t *raw = p ? vips_decode(p) : NULL;
    CHECK(img && img->bands == 3 && img->depth == 8 && img->icc && img->icc_size > 0);
    CHECKF(img && raw && same_pixels(img, raw), "P3: values not the file's own");
    up_error_t err;
    CHECK(img && image_to_srgb(img, &err) == 0 && img->icc == NULL && img->icc_size == 0);
    double d_conv = img && ref ? psnr(img, ref) : 0, d_raw = raw && ref ? psnr(raw, ref) : 0;
    CHECKF(d_conv > 38 && d_conv > d_raw + 4, "P3: converted %.1f dB, raw %.1f dB", d_conv, d_raw);
    CHECK(img && image_to_srgb(img, &err) == 0); /* no profile: a no-op */
    image_free(img);
    image_free(raw);

    /* 16-bit with a profile stays 16-bit */
    CHECK(vips_icc_transform(a, &p3_16, "p3", "input_profile", "srgb", "depth", 16, NULL) == 0);
    CHECK(vips_copy(p3_16, &t16, "interpretation", VIPS_INTERPRETATION_RGB16, NULL) == 0);
    p = vips_save(t16, "p3_16.png", "[bitdepth=16]");
    img = p ? load(p) : NULL;
    CHECK(img && img->depth == 16 && img->bands == 3 && img->icc);
    CHECK(img && image_to_srgb(img, &err) == 0 && img->depth == 16 && img->bands == 3 && !img->icc);
    if (img && ref) {
        double se = 0;
        for (int y = 0; y < 512; y += 3)
            for (int x = 0; x < 512; x += 3)
                for (int b = 0; b < 3; b++) {
                    double d = sample(img, x, y, b) / 257.0 - sample(ref, x, y, b);
                    se += d * d;
                }
        double d16 = 10 * log10(255.0 * 255.0 / (se / (171.0 * 171 * 3)));
        CHECKF(d16 > 38, "P3 16-bit psnr %.1f", d16);
    }
    image_free(img);

    /* 16-bit RGBA with a profile: alpha passes through untouched */
    VipsImage *c = vips_load(shared_path("camera.png")), *c16, *a16, *rgba16;
    if (c && vips_linear1(c, &c16, 257, 0, NULL) == 0 &&
        vips_cast(c16, &a16, VIPS_FORMAT_USHORT, NULL) == 0 && vips_bandjoin2(t16, a16, &rgba16, NULL) == 0) {
        p = vips_save(rgba16, "p3_rgba16.png", "[bitdepth=16]");
        img = p ? load(p) : NULL;
        up_image_t *c8 = load(shared_path("camera.png"));
        CHECK(img && img->depth == 16 && img->bands == 4 && img->icc);
        CHECK(img && image_to_srgb(img, &err) == 0 && img->bands == 4 && img->depth == 16);
        if (img && c8 && ref) {
            CHECK(sample(img, 100, 100, 3) == sample(c8, 100, 100, 0) * 257);
            CHECKF(abs((int)sample(img, 100, 100, 1) - (int)sample(ref, 100, 100, 1) * 257) < 400,
                   "P3 RGBA16 green %u vs %u", sample(img, 100, 100, 1), sample(ref, 100, 100, 1) * 257);
        }
        image_free(img);
        image_free(c8);
        g_object_unref(rgba16);
        g_object_unref(a16);
        g_object_unref(c16);
    }
    if (c)
        g_object_unref(c);
    image_free(ref);
    g_object_unref(t16);
    g_object_unref(p3_16);
    g_object_unref(p3);
    g_object_unref(a);
}

static void test_tiff(void) {
    VipsImage *a = vips_load(shared_path("astronaut.png")), *f, *u32, *u32t, *lab;
    if (!a)
        return;
    up_image_t *ref = load(shared_path("astronaut.png"));
    const char *p = vips_save(a, "a.tif", "[compression=deflate]");
    up_image_t *img = p ? load(p) : NULL;
    CHECK(img && strcmp(img->format, "tiff") == 0 && ref && same_pixels(img, ref));
    image_free(img);

    /* float (linear scRGB, as libvips writes and reads float RGB TIFF)
     * becomes 16-bit sRGB */
    CHECK(vips_colourspace(a, &f, VIPS_INTERPRETATION_scRGB, NULL) == 0);
    p = vips_save(f, "float.tif", NULL);
    img = p ? load(p) : NULL;
    CHECK(img && img->depth == 16 && img->bands == 3);
    if (img && ref)
        CHECKF(abs((int)sample(img, 100, 100, 0) - (int)sample(ref, 100, 100, 0) * 257) <= 300,
               "float tiff: %u vs %u", sample(img, 100, 100, 0), sample(ref, 100, 100, 0) * 257);
    image_free(img);
    /* float gray 0..1 becomes 16-bit gray */
    VipsImage *cam = vips_load(shared_path("camera.png")), *gf;
    if (cam && vips_linear1(cam, &gf, 1 / 255.0, 0, NULL) == 0) {
        p = vips_save(gf, "grayf.tif", NULL);
        img = p ? load(p) : NULL;
        up_image_t *c8 = load(shared_path("camera.png"));
        CHECK(img && img->depth == 16 && img->bands == 1);
        if (img && c8)
            CHECKF(abs((int)sample(img, 50, 60, 0) - (int)sample(c8, 50, 60, 0) * 257) <= 1,
                   "float gray tiff: %u vs %u", sample(img, 50, 60, 0), sample(c8, 50, 60, 0) * 257);
        image_free(img);
        image_free(c8);
        g_object_unref(gf);
    }
    if (cam)
        g_object_unref(cam);

    /* 32-bit unsigned becomes 16-bit */
    CHECK(vips_linear1(a, &u32, 16843009.0, 0, NULL) == 0 &&
          vips_cast(u32, &u32t, VIPS_FORMAT_UINT, NULL) == 0);
    p = vips_save(u32t, "u32.tif", NULL);
    img = p ? load(p) : NULL;
    CHECK(img && img->depth == 16 && img->bands == 3);
    if (img && ref)
        CHECKF(sample(img, 7, 9, 2) == sample(ref, 7, 9, 2) * 257, "u32 tiff: %u vs %u", sample(img, 7, 9, 2),
               sample(ref, 7, 9, 2) * 257);
    image_free(img);

    /* CIELAB becomes sRGB */
    CHECK(vips_colourspace(a, &lab, VIPS_INTERPRETATION_LAB, NULL) == 0);
    p = vips_save(lab, "lab.tif", NULL);
    img = p ? load(p) : NULL;
    CHECK(img && img->bands == 3);
    if (img && img->depth == 16 && ref) { /* compare on the 8-bit scale */
        up_image_t *i8 = image_new(512, 512, 3, 8);
        for (size_t i = 0; i < 512 * 512 * 3; i++)
            ((uint8_t *)i8->pixels)[i] = (uint8_t)((((uint16_t *)img->pixels)[i] + 128) / 257);
        CHECKF(psnr(i8, ref) > 40, "Lab psnr %.1f", psnr(i8, ref));
        image_free(i8);
    } else if (img && ref) {
        CHECKF(psnr(img, ref) > 40, "Lab psnr %.1f", psnr(img, ref));
    }
    image_free(img);

    /* 1-bit TIFF */
    VipsImage *c = vips_load(shared_path("camera.png")), *bw;
    if (c && vips_moreeq_const1(c, &bw, 128, NULL) == 0) {
        p = vips_save(bw, "bw.tif", "[bitdepth=1]");
        img = p ? load(p) : NULL;
        CHECK(img && img->bands == 1 && img->depth == 8);
        if (img)
            CHECK(sample(img, 0, 0, 0) == 0 || sample(img, 0, 0, 0) == 255);
        image_free(img);
        g_object_unref(bw);
    }
    if (c)
        g_object_unref(c);
    image_free(ref);
    g_object_unref(lab);
    g_object_unref(u32);
    g_object_unref(u32t);
    g_object_unref(f);
    g_object_unref(a);
}

static void test_gif(void) {
    /* two frames: chelsea, then chelsea inverted; only the first is loaded */
    VipsImage *ch = vips_load(shared_path("chelsea.png")), *inv, *inv8, *frames[2], *anim, *anim2;
    if (!ch)
        return;
    CHECK(vips_invert(ch, &inv, NULL) == 0 && vips_cast(inv, &inv8, VIPS_FORMAT_UCHAR, NULL) == 0);
    frames[0] = ch;
    frames[1] = inv8;
    CHECK(vips_arrayjoin(frames, &anim, 2, "across", 1, NULL) == 0);
    CHECK(vips_copy(anim, &anim2, NULL) == 0);
    vips_image_set_int(anim2, VIPS_META_PAGE_HEIGHT, 300);
    const char *p = vips_save(anim2, "anim.gif", NULL);
    up_image_t *img = p ? load(p) : NULL, *ref = load(shared_path("chelsea.png"));
    CHECKF(img && img->width == 451 && img->height == 300, "gif: %dx%d", img ? img->width : 0,
           img ? img->height : 0);
    CHECK(img && strcmp(img->format, "gif") == 0);
    if (img && ref && img->bands == 3)
        CHECKF(psnr(img, ref) > 20, "gif psnr %.1f", psnr(img, ref));
    else
        CHECKF(img && img->bands == 3, "gif bands %d", img ? img->bands : 0);
    image_free(img);
    image_free(ref);
    g_object_unref(anim2);
    g_object_unref(anim);
    g_object_unref(inv8);
    g_object_unref(inv);
    g_object_unref(ch);
}

static void test_webp_heif(void) {
    VipsImage *logo = vips_rgba(), *a = vips_load(shared_path("astronaut.png"));
    if (!logo || !a)
        return;
    const char *p = vips_save(logo, "rgba.webp", "[lossless]");
    up_image_t *img = p ? load(p) : NULL, *ref = from_vips(logo);
    CHECK(img && img->bands == 4 && strcmp(img->format, "webp") == 0);
    CHECK(img && ref && same_visible(img, ref));
    image_free(img);
    image_free(ref);

    ref = load(shared_path("astronaut.png"));
    p = vips_save(a, "a.webp", "[Q=90]");
    img = p ? load(p) : NULL;
    CHECK(img && img->bands == 3 && ref && psnr(img, ref) > 30);
    image_free(img);

    /* HEIF/AVIF: only where this libvips build can write them */
    VipsImage *crop;
    CHECK(vips_crop(a, &crop, 128, 128, 128, 128, NULL) == 0);
    up_image_t *cref = from_vips(crop);
    if (has_loader("heifsave") && has_loader("heifload")) {
        p = vips_save(crop, "a.avif", "[Q=90]");
        img = p ? load(p) : NULL;
        CHECK(img && img->width == 128 && img->bands == 3 && strcmp(img->format, "avif") == 0);
        CHECKF(img && cref && psnr(img, cref) > 30, "avif psnr %.1f", img && cref ? psnr(img, cref) : 0);
        image_free(img);
        p = vips_save(crop, "a.heic", "[Q=90,compression=hevc]");
        if (p) {
            img = load(p);
            CHECK(img && strcmp(img->format, "heif") == 0);
            CHECKF(img && cref && psnr(img, cref) > 30, "heic psnr %.1f", img && cref ? psnr(img, cref) : 0);
            image_free(img);
        } else {
            printf("note: this libvips cannot write HEVC HEIF; skipped\n");
        }
    } else {
        printf("note: no HEIF support in this libvips; skipped\n");
    }
    image_free(cref);
    image_free(ref);
    g_object_unref(crop);
    g_object_unref(a);
    g_object_unref(logo);
}

/* ---- colour profiles and metadata kept --------------------------------- */

/* The bytes of tests/cases/image/NAME (new, g_free), or NULL. */
static gchar *fixture(const char *name, gsize *size) {
    char path[1024];
    gchar *data = NULL;
    snprintf(path, sizeof path, "%s/image/%s", cases, name);
    CHECKF(g_file_get_contents(path, &data, size, NULL), "cannot read fixture %s", path);
    return data;
}

/* 1 when the file's (or buffer's) ICC profile is exactly icc/n; 0 when it
 * differs; -1 when it has none. */
static int file_icc_is(VipsImage *v, const void *icc, size_t n) {
    const void *d;
    size_t dn;
    if (!v || !vips_image_get_typeof(v, VIPS_META_ICC_NAME) ||
        vips_image_get_blob(v, VIPS_META_ICC_NAME, &d, &dn))
        return -1;
    return dn == n && memcmp(d, icc, n) == 0;
}

/* Largest difference between two same-shaped images, on their own scale. */
static int max_diff(const up_image_t *a, const up_image_t *b) {
    int worst = 0;
    for (int y = 0; y < a->height; y++)
        for (int x = 0; x < a->width; x++)
            for (int c = 0; c < a->bands; c++) {
                int d = abs((int)sample(a, x, y, c) - (int)sample(b, x, y, c));
                worst = d > worst ? d : worst;
            }
    return worst;
}

static void test_adobe_rgb(void) {
    gsize icc_n = 0;
    gchar *icc = fixture("adobe-rgb-1998.icc", &icc_n);
    VipsImage *a = vips_load(shared_path("astronaut.png")), *ad = NULL;
    char prof[1100];
    snprintf(prof, sizeof prof, "%s/image/adobe-rgb-1998.icc", cases);
    /* astronaut's sRGB colours re-encoded in Adobe RGB, the profile embedded */
    if (!icc || !a || vips_icc_transform(a, &ad, prof, "input_profile", "srgb", "embedded", FALSE, NULL)) {
        CHECKF(0, "cannot make the Adobe RGB image: %s", vips_error_buffer());
        vips_error_clear();
        goto done;
    }
    CHECK(file_icc_is(ad, icc, icc_n) == 1);
    const char *p = vips_save(ad, "adobe.png", NULL);
    up_image_t *img = p ? load(p) : NULL, *raw = p ? vips_decode(p) : NULL;
    up_image_t *ref = load(shared_path("astronaut.png"));
    if (!img || !raw || !ref)
        goto free_images;

    /* the network gets the file's own values, and the profile they are in */
    CHECKF(same_pixels(img, raw), "Adobe RGB: values were converted on load");
    CHECKF(img->icc && img->icc_size == icc_n && memcmp(img->icc, icc, icc_n) == 0,
           "Adobe RGB: profile not kept (%zu bytes)", img->icc_size);
    /* libvips' own conversion of the file to sRGB, for comparison */
    VipsImage *vraw = vips_load(p), *vsrgb = NULL;
    up_image_t *conv_ref = NULL;
    if (vraw && vips_icc_transform(vraw, &vsrgb, "srgb", "embedded", TRUE, "intent", VIPS_INTENT_RELATIVE,
                                   "black_point_compensation", TRUE, NULL) == 0)
        conv_ref = from_vips(vsrgb);
    int d_raw = max_diff(raw, ref);
    printf("adobe rgb: file values vs sRGB original: max diff %d, %.1f dB\n", d_raw, psnr(raw, ref));
    CHECKF(d_raw >= 20, "Adobe RGB values too close to sRGB (%d) for the test to mean anything", d_raw);

    /* saved as PNG, JPEG, WebP: the same profile bytes and the same values */
    static const char *fmts[] = {"png", "jpg", "webp"};
    for (int f = 0; f < 3; f++) {
        image_save_opts_t o = {.format = fmts[f], .quality = 100};
        void *buf = NULL;
        size_t size = 0;
        up_error_t err;
        CHECKF(image_save_buffer(img, &o, &buf, &size, &err) == 0, "%s: %s", fmts[f], err.msg);
        VipsImage *v = buf ? vips_image_new_from_buffer(buf, size, "", NULL) : NULL;
        CHECKF(file_icc_is(v, icc, icc_n) == 1, "%s: profile not written as is (%d)", fmts[f],
               file_icc_is(v, icc, icc_n));
        up_image_t *back = NULL;
        CHECK(image_load_buffer(buf, size, NULL, &back, &err) == 0);
        if (back && back->bands == 3) {
            double d = psnr(back, raw);
            printf("adobe rgb: %s with profile, values vs file: %.1f dB\n", fmts[f], d);
            CHECKF(f == 0 ? d == INFINITY : d > 35, "%s: values changed (%.1f dB)", fmts[f], d);
            CHECK(back->icc && back->icc_size == icc_n);
        }
        image_free(back);
        if (v)
            g_object_unref(v);
        free(buf);

        /* srgb: converted (close to libvips' own conversion), no profile; strip: the same, no metadata */
        for (int mode = 0; mode < 2; mode++) {
            o = (image_save_opts_t){.format = fmts[f], .quality = 100, .srgb = mode == 0, .strip = mode == 1};
            CHECK(image_save_buffer(img, &o, &buf, &size, &err) == 0);
            v = buf ? vips_image_new_from_buffer(buf, size, "", NULL) : NULL;
            CHECKF(file_icc_is(v, icc, icc_n) == -1, "%s %s: a profile was written", fmts[f],
                   mode ? "strip" : "srgb");
            back = NULL;
            CHECK(image_load_buffer(buf, size, NULL, &back, &err) == 0);
            if (back && conv_ref && back->bands == 3) {
                double d = psnr(back, conv_ref), d_ref = psnr(back, ref);
                printf("adobe rgb: %s %s vs libvips' conversion %.1f dB, vs sRGB original %.1f dB\n", fmts[f],
                       mode ? "strip" : "srgb", d, d_ref);
                CHECKF(d > (f == 0 ? 50 : 35) && d_ref > 35, "%s %s: not converted (%.1f dB, %.1f dB)",
                       fmts[f], mode ? "strip" : "srgb", d, d_ref);
            }
            CHECK(back && back->icc == NULL && back->exif == NULL && back->xmp == NULL);
            image_free(back);
            if (v)
                g_object_unref(v);
            free(buf);
        }
    }
    /* in place */
    up_error_t err;
    CHECK(image_to_srgb(img, &err) == 0 && img->icc == NULL);
    CHECKF(conv_ref && psnr(img, conv_ref) > 50, "image_to_srgb vs libvips: %.1f dB",
           conv_ref ? psnr(img, conv_ref) : 0);
    image_free(conv_ref);
    if (vsrgb)
        g_object_unref(vsrgb);
    if (vraw)
        g_object_unref(vraw);

    /* an sRGB profile: kept as is, and dropped without touching the values */
    up_image_t *s = load(shared_path("astronaut.png")), *s2 = load(shared_path("astronaut.png"));
    VipsImage *sv = vips_load(shared_path("astronaut.png")), *sp = NULL;
    if (s && s2 && sv &&
        vips_icc_transform(sv, &sp, "srgb", "input_profile", "srgb", "embedded", FALSE, NULL) == 0) {
        const char *q = vips_save(sp, "srgb_tagged.png", NULL);
        image_free(s);
        s = q ? load(q) : NULL;
        CHECK(s && s->icc && same_pixels(s, s2));
        CHECK(s && image_to_srgb(s, &err) == 0 && !s->icc && same_pixels(s, s2));
        g_object_unref(sp);
    }
    if (sv)
        g_object_unref(sv);
    image_free(s);
    image_free(s2);

    /* image_copy_metadata */
    up_image_t *c = image_new(4, 4, 3, 8), *d = image_new(4, 4, 3, 8);
    c->icc = malloc(icc_n);
    memcpy(c->icc, icc, icc_n);
    c->icc_size = icc_n;
    c->xmp = strdup("<x/>");
    c->xmp_size = 4;
    CHECK(image_copy_metadata(d, c) == 0 && d->icc != c->icc && d->icc_size == icc_n &&
          memcmp(d->icc, icc, icc_n) == 0 && d->xmp_size == 4 && !d->exif && d->exif_size == 0);
    CHECK(image_copy_metadata(d, d) == 0 && d->icc_size == icc_n && memcmp(d->icc, icc, icc_n) == 0);
    image_free(c);
    image_free(d);

free_images:
    image_free(img);
    image_free(raw);
    image_free(ref);
done:
    if (ad)
        g_object_unref(ad);
    if (a)
        g_object_unref(a);
    g_free(icc);
}

static void test_gray_profile(void) {
    gsize icc_n = 0;
    gchar *icc = fixture("gray-gamma-2.2.icc", &icc_n);
    VipsImage *c = vips_load(shared_path("camera.png")), *cp = NULL;
    if (!icc || !c || vips_copy(c, &cp, NULL))
        goto done;
    vips_image_set_blob_copy(cp, VIPS_META_ICC_NAME, icc, icc_n);
    const char *p = vips_save(cp, "gray_icc.png", NULL);
    up_image_t *img = p ? load(p) : NULL, *ref = load(shared_path("camera.png"));
    CHECKF(img && img->bands == 1 && img->icc && img->icc_size == icc_n && memcmp(img->icc, icc, icc_n) == 0,
           "gray profile not kept");
    CHECK(img && ref && same_pixels(img, ref));
    for (int f = 0; img && f < 2; f++) {
        /* PNG carries the gray profile; WebP is RGB only: converted, no profile */
        image_save_opts_t o = {.format = f ? "webp" : "png", .quality = 100};
        void *buf = NULL;
        size_t size = 0;
        up_error_t err;
        CHECK(image_save_buffer(img, &o, &buf, &size, &err) == 0);
        VipsImage *v = buf ? vips_image_new_from_buffer(buf, size, "", NULL) : NULL;
        CHECKF(file_icc_is(v, icc, icc_n) == (f ? -1 : 1), "gray %s: profile %d", o.format,
               file_icc_is(v, icc, icc_n));
        if (v)
            g_object_unref(v);
        free(buf);
    }
    up_error_t err;
    if (img && ref) {
        CHECK(image_to_srgb(img, &err) == 0 && img->bands == 1 && img->depth == 8 && !img->icc);
        int d = max_diff(img, ref);
        printf("gray profile: gamma 2.2 to sRGB moves values by up to %d levels\n", d);
        CHECKF(d > 0 && d < 40, "gray to sRGB: max diff %d", d);
    }
    image_free(img);
    image_free(ref);
done:
    if (cp)
        g_object_unref(cp);
    if (c)
        g_object_unref(c);
    g_free(icc);
}

/* The value of a string field of v ("" when absent). */
static const char *field(VipsImage *v, const char *name) {
    const char *s = NULL;
    if (v && vips_image_get_typeof(v, name) && vips_image_get_string(v, name, &s) == 0 && s)
        return s;
    return "";
}

static void test_exif_xmp(void) {
    static const char xmp[] = "<?xpacket begin='' id='W5M0MpCehiHzreSzNTczkc9d'?>"
                              "<x:xmpmeta xmlns:x='adobe:ns:meta/'><rdf:RDF "
                              "xmlns:rdf='http://www.w3.org/1999/02/22-rdf-syntax-ns#'>"
                              "<rdf:Description xmlns:tiff='http://ns.adobe.com/tiff/1.0/' "
                              "xmlns:dc='http://purl.org/dc/elements/1.1/' tiff:Orientation=\"6\">"
                              "<dc:rights>Copyright Test Rights Holder</dc:rights>"
                              "</rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end='w'?>";
    VipsImage *ch = vips_load(shared_path("chelsea.png")), *tagged;
    if (!ch || vips_copy(ch, &tagged, NULL))
        return;
    vips_image_set_int(tagged, VIPS_META_ORIENTATION, 6);
    vips_image_set_string(tagged, "exif-ifd0-Copyright", "Copyright Test Person");
    vips_image_set_string(tagged, "exif-ifd0-Artist", "Ann Artist");
    vips_image_set_string(tagged, "exif-ifd2-DateTimeOriginal", "2021:06:01 12:34:56");
    vips_image_set_blob_copy(tagged, VIPS_META_XMP_NAME, xmp, sizeof xmp - 1);
    const char *p = vips_save(tagged, "exif6.jpg", "[Q=95]");
    up_image_t *img = p ? load(p) : NULL;
    CHECK(img && img->width == 300 && img->height == 451 && img->exif && img->xmp);
    if (img && img->xmp)
        CHECK(memmem(img->xmp, img->xmp_size, "tiff:Orientation=\"1\"", 20) != NULL);
    static const char *fmts[] = {"jpg", "png", "webp"};
    for (int f = 0; img && f < 3; f++) {
        char name[32];
        snprintf(name, sizeof name, "exif_out.%s", fmts[f]);
        const char *q = tmp_path(name);
        up_error_t err;
        CHECKF(image_save_file(img, q, NULL, &err) == 0, "%s: %s", fmts[f], err.msg);
        VipsImage *v = vips_load(q);
        CHECKF(strstr(field(v, "exif-ifd0-Copyright"), "Copyright Test Person") &&
                   strstr(field(v, "exif-ifd0-Artist"), "Ann Artist") &&
                   strstr(field(v, "exif-ifd2-DateTimeOriginal"), "2021:06:01 12:34:56"),
               "%s: EXIF lost: copyright '%s', artist '%s', date '%s'", fmts[f],
               field(v, "exif-ifd0-Copyright"), field(v, "exif-ifd0-Artist"),
               field(v, "exif-ifd2-DateTimeOriginal"));
        CHECKF(v && vips_image_get_orientation(v) == 1, "%s: orientation %d", fmts[f],
               v ? vips_image_get_orientation(v) : -1);
        const void *x;
        size_t xn;
        int has_xmp = v && vips_image_get_typeof(v, VIPS_META_XMP_NAME) &&
                      vips_image_get_blob(v, VIPS_META_XMP_NAME, &x, &xn) == 0;
        CHECKF(has_xmp && memmem(x, xn, "Copyright Test Rights Holder", 28) &&
                   memmem(x, xn, "tiff:Orientation=\"1\"", 20),
               "%s: XMP lost or still rotated", fmts[f]);
        /* loaded again: not rotated a second time */
        up_image_t *again = load(q);
        CHECKF(again && again->width == 300 && again->height == 451, "%s: rotated again", fmts[f]);
        image_free(again);
        if (v)
            g_object_unref(v);
        /* strip: no metadata at all */
        image_save_opts_t o = {.strip = 1};
        CHECK(image_save_file(img, q, &o, &err) == 0);
        v = vips_load(q);
        CHECKF(v && !vips_image_get_typeof(v, VIPS_META_EXIF_NAME) &&
                   !vips_image_get_typeof(v, VIPS_META_XMP_NAME) &&
                   !vips_image_get_typeof(v, VIPS_META_ICC_NAME),
               "%s: strip wrote metadata", fmts[f]);
        if (v)
            g_object_unref(v);
    }
    image_free(img);
    g_object_unref(tagged);
    g_object_unref(ch);
}

/* ---- save -------------------------------------------------------------- */

static void test_round_trips(void) {
    static const char *names[] = {"astronaut.png", "logo.png", "camera.png", "chelsea.png"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        up_image_t *img = load(shared_path(names[i]));
        if (!img)
            continue;
        static const char *fmts[] = {"png", "jpg", "webp"};
        for (size_t f = 0; f < 3; f++) {
            image_save_opts_t o = {.format = fmts[f]};
            void *buf = NULL;
            size_t size = 0;
            up_error_t err;
            up_image_t *back = NULL;
            int rc = image_save_buffer(img, &o, &buf, &size, &err);
            CHECKF(rc == 0 && size > 0, "save %s as %s: %s", names[i], fmts[f], err.msg);
            CHECK(image_load_buffer(buf, size, NULL, &back, &err) == 0);
            CHECK(back && strcmp(back->format, fmts[f]) == 0);
            if (back && f == 0)
                CHECKF(same_pixels(back, img), "%s: png round trip not exact", names[i]);
            if (back && f == 1) {
                /* JPEG has no alpha: RGBA comes back RGB */
                CHECK(back->bands == (img->bands == 4 ? 3 : img->bands == 2 ? 1 : img->bands));
                if (back->bands == img->bands)
                    CHECKF(psnr(back, img) > 30, "%s jpg psnr %.1f", names[i], psnr(back, img));
            }
            if (back && f == 2) {
                /* gray comes back RGB; libwebp drops an all-opaque alpha */
                int want = img->bands <= 2 ? img->bands + 2 : img->bands;
                if (alpha_opaque(img))
                    want--;
                CHECKF(back->bands == want || back->bands == img->bands, "%s: webp %d bands, from %d",
                       names[i], back->bands, img->bands);
                if (back->bands == img->bands)
                    CHECKF(psnr(back, img) > 30, "%s webp psnr %.1f", names[i], psnr(back, img));
            }
            image_free(back);
            free(buf);

            /* through a file, format from the extension */
            char fname[64];
            snprintf(fname, sizeof fname, "rt_%zu.%s", i, fmts[f]);
            const char *path = tmp_path(fname);
            CHECK(image_save_file(img, path, NULL, &err) == 0);
            back = load(path);
            CHECK(back && strcmp(back->format, fmts[f]) == 0);
            if (back && f == 0)
                CHECK(same_pixels(back, img));
            image_free(back);
        }
        image_free(img);
    }
}

static void test_save_options(void) {
    up_image_t *img = load(shared_path("astronaut.png"));
    if (!img)
        return;
    up_error_t err;
    void *lo, *hi;
    size_t n_lo, n_hi;
    image_save_opts_t o = {.format = "jpeg", .quality = 20};
    CHECK(image_save_buffer(img, &o, &lo, &n_lo, &err) == 0);
    o.quality = 95;
    CHECK(image_save_buffer(img, &o, &hi, &n_hi, &err) == 0);
    CHECKF(n_lo * 2 < n_hi, "jpeg q20 %zu bytes, q95 %zu bytes", n_lo, n_hi);
    free(lo);
    free(hi);
    o = (image_save_opts_t){.format = "webp", .quality = 10};
    CHECK(image_save_buffer(img, &o, &lo, &n_lo, &err) == 0);
    o.quality = 0; /* default 90 */
    CHECK(image_save_buffer(img, &o, &hi, &n_hi, &err) == 0);
    CHECKF(n_lo < n_hi, "webp q10 %zu bytes, default %zu bytes", n_lo, n_hi);
    free(lo);
    free(hi);

    /* bad options */
    void *buf = (void *)1;
    size_t size = 1;
    o = (image_save_opts_t){.format = "bmp"};
    CHECK(image_save_buffer(img, &o, &buf, &size, &err) == UP_ERR_INVALID && buf == NULL);
    CHECK(strstr(err.msg, "bmp") != NULL);
    o = (image_save_opts_t){.format = "png", .quality = 101};
    CHECK(image_save_buffer(img, &o, &buf, &size, &err) == UP_ERR_INVALID);
    CHECK(image_save_file(img, "/nonexistent-dir/x.png", NULL, &err) == UP_ERR_IO);

    /* format: options, then extension, then source format, then png */
    const char *p = tmp_path("noext");
    CHECK(image_save_file(img, p, NULL, &err) == 0);
    up_image_t *back = load(p);
    CHECK(back && strcmp(back->format, "png") == 0);
    image_free(back);
    memcpy(img->format, "webp", 5);
    CHECK(image_save_file(img, p, NULL, &err) == 0);
    back = load(p);
    CHECK(back && strcmp(back->format, "webp") == 0);
    image_free(back);
    memcpy(img->format, "tiff", 5); /* not writable: png */
    CHECK(image_save_buffer(img, NULL, &buf, &size, &err) == 0);
    CHECK(size > 8 && memcmp(buf, "\x89PNG", 4) == 0);
    free(buf);
    o = (image_save_opts_t){.format = "JPG"};
    p = tmp_path("forced.png");
    CHECK(image_save_file(img, p, &o, &err) == 0);
    back = load(p);
    CHECK(back && strcmp(back->format, "jpg") == 0);
    image_free(back);
    image_free(img);

    CHECK(strcmp(image_format_from_path("a/b.JPEG"), "jpg") == 0);
    CHECK(strcmp(image_format_from_path("x.jpg"), "jpg") == 0);
    CHECK(strcmp(image_format_from_path("x.png"), "png") == 0);
    CHECK(strcmp(image_format_from_path("x.tar.webp"), "webp") == 0);
    CHECK(image_format_from_path("x.bmp") == NULL);
    CHECK(image_format_from_path("dir.png/file") == NULL);
    CHECK(image_format_from_path("png") == NULL);
    CHECK(image_format_supported_for_output("png") && image_format_supported_for_output("jpeg") &&
          image_format_supported_for_output("webp"));
    CHECK(!image_format_supported_for_output("tiff") && !image_format_supported_for_output(NULL));
}

static void test_flatten(void) {
    /* transparent black over white is white; opaque pixels are kept */
    up_image_t *img = image_new(16, 16, 4, 8);
    uint8_t *px = img->pixels;
    for (int i = 0; i < 16 * 16; i++) {
        int opaque = i % 16 >= 8;
        px[i * 4 + 0] = opaque ? 200 : 0;
        px[i * 4 + 1] = opaque ? 10 : 0;
        px[i * 4 + 2] = opaque ? 10 : 0;
        px[i * 4 + 3] = opaque ? 255 : 0;
    }
    image_save_opts_t o = {.format = "jpg", .quality = 100};
    void *buf;
    size_t size;
    up_error_t err;
    up_image_t *back = NULL;
    CHECK(image_save_buffer(img, &o, &buf, &size, &err) == 0);
    CHECK(image_load_buffer(buf, size, NULL, &back, &err) == 0);
    CHECK(back && back->bands == 3);
    if (back) {
        CHECKF(sample(back, 1, 1, 0) > 245 && sample(back, 1, 1, 1) > 245, "flattened %u %u",
               sample(back, 1, 1, 0), sample(back, 1, 1, 1));
        CHECK(sample(back, 14, 8, 0) > 180 && sample(back, 14, 8, 1) < 40);
    }
    image_free(back);
    free(buf);
    /* WebP keeps alpha */
    o.format = "webp";
    CHECK(image_save_buffer(img, &o, &buf, &size, &err) == 0);
    CHECK(image_load_buffer(buf, size, NULL, &back, &err) == 0);
    CHECK(back && back->bands == 4 && sample(back, 1, 1, 3) == 0 && sample(back, 14, 1, 3) == 255);
    image_free(back);
    free(buf);
    image_free(img);
}

/* ---- resize ------------------------------------------------------------ */

/* Lanczos3 weight. */
static double lanczos3(double x) {
    x = fabs(x);
    if (x < 1e-9)
        return 1;
    if (x >= 3)
        return 0;
    return 3 * sin(M_PI * x) * sin(M_PI * x / 3) / (M_PI * M_PI * x * x);
}

/* Reference separable Lanczos3 shrink (8-bit, any bands), centre aligned,
 * kernel widened by the shrink factor, edges clamped. */
static up_image_t *ref_shrink(const up_image_t *in, int w, int h) {
    up_image_t *out = image_new(w, h, in->bands, 8);
    double *tmp = calloc((size_t)w * in->height * in->bands, sizeof *tmp);
    double sx = (double)in->width / w, sy = (double)in->height / h;
    for (int y = 0; y < in->height; y++)
        for (int x = 0; x < w; x++) {
            double c = (x + 0.5) * sx - 0.5, sum[4] = {0}, ws = 0;
            for (int i = (int)floor(c - 3 * sx); i <= (int)ceil(c + 3 * sx); i++) {
                double wt = lanczos3((i - c) / sx);
                int ii = i < 0 ? 0 : i >= in->width ? in->width - 1 : i;
                for (int b = 0; b < in->bands; b++)
                    sum[b] += wt * sample(in, ii, y, b);
                ws += wt;
            }
            for (int b = 0; b < in->bands; b++)
                tmp[((size_t)y * w + x) * in->bands + b] = sum[b] / ws;
        }
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            double c = (y + 0.5) * sy - 0.5, sum[4] = {0}, ws = 0;
            for (int i = (int)floor(c - 3 * sy); i <= (int)ceil(c + 3 * sy); i++) {
                double wt = lanczos3((i - c) / sy);
                int ii = i < 0 ? 0 : i >= in->height ? in->height - 1 : i;
                for (int b = 0; b < in->bands; b++)
                    sum[b] += wt * tmp[((size_t)ii * w + x) * in->bands + b];
                ws += wt;
            }
            for (int b = 0; b < in->bands; b++) {
                double v = floor(sum[b] / ws + 0.5);
                ((uint8_t *)out->pixels)[((size_t)y * w + x) * in->bands + b] = (uint8_t)(v < 0     ? 0
                                                                                          : v > 255 ? 255
                                                                                                    : v);
            }
        }
    free(tmp);
    return out;
}

static void test_resize(void) {
    up_image_t *ch = load(shared_path("chelsea.png"));
    if (!ch)
        return;
    static const int sizes[][2] = {{1353, 900}, {677, 450}, {150, 100}, {451, 1}, {1000, 77}, {3, 2000}};
    VipsImage *v = vips_load(shared_path("chelsea.png"));
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        int w = sizes[i][0], h = sizes[i][1];
        up_image_t *r = NULL;
        up_error_t err;
        CHECKF(image_resize(ch, w, h, &r, &err) == 0, "resize to %dx%d: %s", w, h, err.msg);
        CHECKF(r && r->width == w && r->height == h && r->bands == 3 && r->depth == 8 &&
                   strcmp(r->format, "png") == 0,
               "resize to %dx%d gave %dx%d", w, h, r ? r->width : 0, r ? r->height : 0);
        /* libvips' own Lanczos3 resize of the same image */
        VipsImage *vr;
        if (r && v &&
            vips_resize(v, &vr, (double)w / 451, "vscale", (double)h / 300, "kernel", VIPS_KERNEL_LANCZOS3,
                        NULL) == 0) {
            if (vr->Xsize == w && vr->Ysize == h) {
                up_image_t *ref = from_vips(vr);
                CHECKF(ref && psnr(r, ref) > 45, "%dx%d vs vips_resize: %.1f dB", w, h,
                       ref ? psnr(r, ref) : 0);
                image_free(ref);
            }
            g_object_unref(vr);
        }
        image_free(r);
    }
    if (v)
        g_object_unref(v);

    /* an independent Lanczos3 for a shrink */
    up_image_t *r = NULL, *ref = ref_shrink(ch, 150, 100);
    up_error_t err;
    CHECK(image_resize(ch, 150, 100, &r, &err) == 0);
    CHECKF(r && psnr(r, ref) > 35, "150x100 vs reference Lanczos3: %.1f dB", r ? psnr(r, ref) : 0);
    image_free(r);
    image_free(ref);

    /* same size is a copy */
    CHECK(image_resize(ch, 451, 300, &r, &err) == 0 && r && same_pixels(r, ch));
    image_free(r);

    /* 1x1 -> 7x3: every pixel the same */
    up_image_t *one = image_new(1, 1, 3, 8);
    uint8_t *p = one->pixels;
    p[0] = 10, p[1] = 128, p[2] = 250;
    CHECK(image_resize(one, 7, 3, &r, &err) == 0);
    CHECK(r && r->width == 7 && r->height == 3);
    if (r) {
        int ok = 1;
        for (int y = 0; y < 3; y++)
            for (int x = 0; x < 7; x++)
                ok &= sample(r, x, y, 0) == 10 && sample(r, x, y, 1) == 128 && sample(r, x, y, 2) == 250;
        CHECK(ok);
    }
    image_free(r);
    image_free(one);

    /* 16-bit, gray and alpha keep their shape */
    up_image_t *g16 = image_new(31, 17, 2, 16);
    for (int i = 0; i < 31 * 17; i++) {
        ((uint16_t *)g16->pixels)[2 * i] = (uint16_t)(i * 100);
        ((uint16_t *)g16->pixels)[2 * i + 1] = 65535;
    }
    CHECK(image_resize(g16, 62, 9, &r, &err) == 0);
    CHECK(r && r->width == 62 && r->height == 9 && r->bands == 2 && r->depth == 16);
    if (r)
        CHECKF(sample(r, 30, 4, 1) == 65535, "opaque alpha became %u", sample(r, 30, 4, 1));
    image_free(r);
    image_free(g16);

    /* premultiplied: transparent red must not bleed into opaque blue */
    up_image_t *rb = image_new(20, 4, 4, 8);
    for (int y = 0; y < 4; y++)
        for (int x = 0; x < 20; x++) {
            uint8_t *q = (uint8_t *)rb->pixels + (y * 20 + x) * 4;
            if (x < 10)
                q[0] = 255, q[1] = 0, q[2] = 0, q[3] = 0;
            else
                q[0] = 0, q[1] = 0, q[2] = 255, q[3] = 255;
        }
    CHECK(image_resize(rb, 60, 12, &r, &err) == 0);
    if (r) {
        int worst = 0;
        for (int x = 0; x < 60; x++)
            if (sample(r, x, 6, 3) > 128 && (int)sample(r, x, 6, 0) > worst)
                worst = (int)sample(r, x, 6, 0);
        CHECKF(worst < 16, "red bled into opaque pixels: %d", worst);
    }
    image_free(r);
    CHECK(image_resize(rb, 7, 2, &r, &err) == 0 && r && r->width == 7 && r->bands == 4);
    image_free(r);
    image_free(rb);

    CHECK(image_resize(ch, 0, 10, &r, &err) == UP_ERR_INVALID && r == NULL);
    CHECK(image_resize(ch, 10, -1, &r, &err) == UP_ERR_INVALID);
    image_free(ch);
}

/* ---- broken input ------------------------------------------------------ */

static int one_line(const char *s) { return s[0] && !strchr(s, '\n'); }

static void expect_error(const char *what, int rc, const up_error_t *err, up_image_t *img, int code,
                         const char *needle) {
    CHECKF(rc == code && img == NULL, "%s: rc %d (%s), want %d", what, rc, err->msg, code);
    CHECKF(one_line(err->msg), "%s: message not one line: %s", what, err->msg);
    CHECKF(!needle || strcasestr(err->msg, needle), "%s: message '%s' lacks '%s'", what, err->msg, needle);
    image_free(img);
}

static void test_broken(void) {
    up_image_t *img = (up_image_t *)1;
    up_error_t err;
    int rc;

    rc = image_load_buffer("", 0, NULL, &img, &err);
    expect_error("empty buffer", rc, &err, img, UP_ERR_IMAGE, "empty");
    const char *empty = tmp_path("empty.png");
    FILE *f = fopen(empty, "w");
    fclose(f);
    rc = image_load_file(empty, NULL, &img, &err);
    expect_error("empty file", rc, &err, img, UP_ERR_IMAGE, "empty");

    const char *text = "Hello, this is not an image.\nJust text.\n";
    rc = image_load_buffer(text, strlen(text), NULL, &img, &err);
    expect_error("text", rc, &err, img, UP_ERR_IMAGE, "not an image");
    const char *matrix = "2 2\n1 2\n3 4\n"; /* libvips' matrix format, blocked */
    rc = image_load_buffer(matrix, strlen(matrix), NULL, &img, &err);
    expect_error("matrix text", rc, &err, img, UP_ERR_IMAGE, "not an image");
    const char *svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"10\" height=\"10\"></svg>";
    rc = image_load_buffer(svg, strlen(svg), NULL, &img, &err);
    CHECKF(rc == UP_ERR_IMAGE && img == NULL, "svg is blocked: rc %d", rc);

    rc = image_load_file(tmp_path("does-not-exist.png"), NULL, &img, &err);
    expect_error("missing", rc, &err, img, UP_ERR_NOT_FOUND, NULL);
    rc = image_load_file(tmpdir, NULL, &img, &err);
    expect_error("directory", rc, &err, img, UP_ERR_IO, NULL);

    /* truncated at half: JPEG, PNG, WebP, GIF, TIFF */
    VipsImage *a = vips_load(shared_path("astronaut.png"));
    static const struct {
        const char *name, *opts, *label;
    } trunc[] = {{"t.jpg", "[Q=90]", "JPEG"}, {"tp.jpg", "[Q=90,interlace]", "JPEG"},
                 {"t.png", NULL, "PNG"},      {"t.webp", NULL, "WebP"},
                 {"t.gif", NULL, "GIF"},      {"t.tif", NULL, "TIFF"}};
    for (size_t i = 0; a && i < sizeof trunc / sizeof trunc[0]; i++) {
        const char *p = vips_save(a, trunc[i].name, trunc[i].opts);
        gchar *data;
        gsize size;
        if (!p || !g_file_get_contents(p, &data, &size, NULL))
            continue;
        rc = image_load_buffer(data, size / 2, NULL, &img, &err);
        char what[64];
        snprintf(what, sizeof what, "truncated %s", trunc[i].label);
        expect_error(what, rc, &err, img, UP_ERR_IMAGE, trunc[i].label);
        if (i < 3)
            CHECKF(strstr(err.msg, "truncated"), "%s: %s", what, err.msg);
        /* and the complete file loads */
        rc = image_load_buffer(data, size, NULL, &img, &err);
        CHECKF(rc == 0, "complete %s: %s", trunc[i].label, err.msg);
        image_free(img);
        g_free(data);
    }
    if (a)
        g_object_unref(a);
}

static void test_limits(void) {
    up_image_t *img = NULL;
    up_error_t err;
    image_limits_t lim = {.max_pixels = 512 * 512};
    CHECK(image_load_file(shared_path("astronaut.png"), &lim, &img, &err) == 0);
    image_free(img);
    lim.max_pixels = 512 * 512 - 1;
    int rc = image_load_file(shared_path("astronaut.png"), &lim, &img, &err);
    expect_error("limit", rc, &err, img, UP_ERR_TOO_LARGE, "512x512");

    char path[1024];
    snprintf(path, sizeof path, "%s/images/bomb_100000x100000/input.png", cases);
    lim.max_pixels = 40000000;
    double t0 = now_s();
    img = NULL;
    rc = image_load_file(path, &lim, &img, &err);
    double dt = now_s() - t0;
    expect_error("PNG bomb", rc, &err, img, UP_ERR_TOO_LARGE, "100000x100000");
    CHECKF(dt < 1.0, "bomb refused in %.3f s", dt);
}

/* ---- frames ------------------------------------------------------------ */

/* An n-frame animation of w x h frames (frame i a gray level), saved as name. */
static const char *animation(const char *name, int n, int w, int h) {
    VipsImage *strip = NULL, *anim = NULL, **frames = calloc((size_t)n, sizeof *frames);
    const char *p = NULL;
    int ok = 1;
    for (int i = 0; i < n && ok; i++) {
        VipsImage *b, *l;
        ok = vips_black(&b, w, h, "bands", 3, NULL) == 0 &&
             vips_linear1(b, &l, 1, (i * 37) % 256, NULL) == 0 &&
             vips_cast(l, &frames[i], VIPS_FORMAT_UCHAR, NULL) == 0;
        g_object_unref(b);
        g_object_unref(l);
    }
    if (ok && vips_arrayjoin(frames, &strip, n, "across", 1, NULL) == 0 &&
        vips_copy(strip, &anim, "interpretation", VIPS_INTERPRETATION_sRGB, NULL) == 0) {
        vips_image_set_int(anim, VIPS_META_PAGE_HEIGHT, h);
        p = vips_save(anim, name, NULL);
    }
    for (int i = 0; i < n; i++)
        if (frames[i])
            g_object_unref(frames[i]);
    free(frames);
    if (strip)
        g_object_unref(strip);
    if (anim)
        g_object_unref(anim);
    CHECKF(p != NULL, "cannot make %s", name);
    return p;
}

static void test_frames(void) {
    up_image_t *img = NULL;
    up_error_t err;
    static const char *names[] = {"three.gif", "three.webp"};
    for (int i = 0; i < 2; i++) {
        const char *p = animation(names[i], 3, 40, 30);
        if (!p)
            continue;
        img = load(p);
        CHECKF(img && img->n_frames == 3 && img->width == 40 && img->height == 30, "%s: %d frames, %dx%d",
               names[i], img ? img->n_frames : 0, img ? img->width : 0, img ? img->height : 0);
        if (img) /* the first frame: black (lossy WebP: nearly) */
            CHECKF(sample(img, 5, 5, 0) < 8 && sample(img, 39, 29, 1) < 8, "%s: first frame %u", names[i],
                   sample(img, 5, 5, 0));
        image_free(img);
        image_limits_t lim = {.max_frames = 3};
        CHECK(image_load_file(p, &lim, &img, &err) == 0 && img && img->n_frames == 3);
        image_free(img);
        lim.max_frames = 2;
        int rc = image_load_file(p, &lim, &img, &err);
        expect_error(names[i], rc, &err, img, UP_ERR_TOO_LARGE,
                     "the image has 3 frames; the limit is 2 frames");
    }
    img = load(shared_path("chelsea.png"));
    CHECK(img && img->n_frames == 1);
    image_free(img);
    up_image_t *n = image_new(2, 2, 3, 8);
    CHECK(n && n->n_frames == 1 && !n->icc && !n->exif && !n->xmp);
    image_free(n);

    /* 1000 frames refused from the header: no decoding */
    int many = test_sanitized() ? 300 : 1000;
    const char *p = animation("many.gif", many, 64, 64);
    if (!p)
        return;
    image_limits_t lim = {.max_frames = 100};
    double t0 = now_s();
    int rc = image_load_file(p, &lim, &img, &err);
    double t_refuse = now_s() - t0;
    char want[80];
    snprintf(want, sizeof want, "the image has %d frames; the limit is 100 frames", many);
    expect_error("many frames", rc, &err, img, UP_ERR_TOO_LARGE, want);
    CHECKF(strcmp(err.msg, want) == 0, "message '%s'", err.msg);
    t0 = now_s();
    img = load(p);
    double t_load = now_s() - t0;
    CHECK(img && img->n_frames == many && img->width == 64 && img->height == 64);
    image_free(img);
    printf("frames: %d-frame GIF refused in %.1f ms, loaded (first frame) in %.1f ms\n", many, t_refuse * 1e3,
           t_load * 1e3);
    CHECKF(t_refuse < 0.5, "refused in %.3f s", t_refuse);
}

/* ---- data-driven cases: tests/cases/images/<case>/{input.*,expected} --- */

static int code_of(const char *name) {
    static const struct {
        const char *name;
        int code;
    } codes[] = {{"UP_ERR_IMAGE", UP_ERR_IMAGE},
                 {"UP_ERR_TOO_LARGE", UP_ERR_TOO_LARGE},
                 {"UP_ERR_NOT_FOUND", UP_ERR_NOT_FOUND},
                 {"UP_ERR_IO", UP_ERR_IO},
                 {"UP_ERR_NOMEM", UP_ERR_NOMEM}};
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++)
        if (strcmp(codes[i].name, name) == 0)
            return codes[i].code;
    return 1;
}

static void test_cases(void) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/images", cases);
    DIR *d = opendir(dir);
    CHECKF(d != NULL, "no case folder %s", dir);
    if (!d)
        return;
    int n_cases = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char cdir[1300], path[1600], input[1600] = "", line[512] = "";
        snprintf(cdir, sizeof cdir, "%s/%s", dir, e->d_name);
        DIR *cd = opendir(cdir);
        if (!cd)
            continue;
        struct dirent *ce;
        while ((ce = readdir(cd)))
            if (strncmp(ce->d_name, "input", 5) == 0)
                snprintf(input, sizeof input, "%s/%s", cdir, ce->d_name);
        closedir(cd);
        snprintf(path, sizeof path, "%s/expected", cdir);
        FILE *f = fopen(path, "r");
        if (!f || !input[0] || !fgets(line, sizeof line, f)) {
            CHECKF(0, "case %s: needs input.* and expected", e->d_name);
            if (f)
                fclose(f);
            continue;
        }
        fclose(f);
        line[strcspn(line, "\n")] = '\0';
        n_cases++;

        image_limits_t lim = {.max_pixels = 40000000};
        up_image_t *img = NULL;
        up_error_t err = {0};
        int rc = image_load_file(input, &lim, &img, &err);
        int w, h, bands, depth;
        char fmt[16], code[32];
        int off = 0;
        if (sscanf(line, "ok %d %d %d %d %15s", &w, &h, &bands, &depth, fmt) == 5) {
            CHECKF(rc == 0 && img && img->width == w && img->height == h && img->bands == bands &&
                       img->depth == depth && strcmp(img->format, fmt) == 0,
                   "case %s: rc %d %s", e->d_name, rc, err.msg);
            image_free(img);
        } else if (sscanf(line, "error %31s %n", code, &off) == 1) {
            expect_error(e->d_name, rc, &err, img, code_of(code), off ? line + off : NULL);
        } else {
            CHECKF(0, "case %s: bad expected line '%s'", e->d_name, line);
            image_free(img);
        }
    }
    closedir(d);
    CHECKF(n_cases >= 5, "only %d image cases", n_cases);
}

/* ---- probe and verify: what a file is, without its pixels -------------- */

/* Load, probe and verify path (file and bytes) with lim: the same code and
 * message prefix, and on success the same format, size, bands, depth and
 * frames (a probe's GIF may say 4 bands where the load says 3). */
static void same_as_load(const char *path, const image_limits_t *lim) {
    up_image_t *img = NULL;
    up_error_t le = {0}, pe = {0}, ve = {0}, be = {0};
    image_info_t pi, vi, bi;
    int lrc = image_load_file(path, lim, &img, &le);
    int prc = image_probe_file(path, lim, &pi, &pe);
    int vrc = image_verify_file(path, lim, &vi, &ve);
    gchar *data = NULL;
    gsize size = 0;
    int brc = 1;
    if (g_file_get_contents(path, &data, &size, NULL) && size > 0)
        brc = image_verify_buffer(data, size, lim, &bi, &be);
    else
        brc = vrc, bi = vi, be = ve;
    CHECKF(vrc == lrc && brc == lrc, "%s: load %d (%s), verify file %d (%s), buffer %d", path, lrc, le.msg,
           vrc, ve.msg, brc);
    if (lrc) { /* the same refusal: probe too, unless only the pixels are bad */
        size_t n = strcspn(le.msg, ":");
        CHECKF(strncmp(le.msg, ve.msg, n + 1) == 0, "%s: load '%s', verify '%s'", path, le.msg, ve.msg);
        CHECKF(prc == lrc || (prc == 0 && strstr(le.msg, "truncated or corrupt")),
               "%s: load %d, probe %d (%s)", path, lrc, prc, pe.msg);
        CHECKF(prc || pi.width > 0, "%s: probe ok but empty", path);
    } else {
        CHECKF(prc == 0, "%s: probe %d (%s)", path, prc, pe.msg);
        const image_info_t *is[] = {&pi, &vi, &bi};
        for (int k = 0; k < 3 && img; k++) {
            int bands_ok = is[k]->bands == img->bands || (k == 0 && strcmp(img->format, "gif") == 0 &&
                                                          img->bands == 3 && is[k]->bands == 4);
            CHECKF(strcmp(is[k]->format, img->format) == 0 && is[k]->width == img->width &&
                       is[k]->height == img->height && bands_ok && is[k]->depth == img->depth &&
                       is[k]->n_frames == img->n_frames,
                   "%s (%s): %s %dx%d %d bands %d-bit %d frames, load %s %dx%d %d %d-bit %d", path,
                   k == 0   ? "probe"
                   : k == 1 ? "verify"
                            : "verify buffer",
                   is[k]->format, is[k]->width, is[k]->height, is[k]->bands, is[k]->depth, is[k]->n_frames,
                   img->format, img->width, img->height, img->bands, img->depth, img->n_frames);
        }
    }
    image_free(img);
    g_free(data);
}

/* A field of /proc/self/status ("VmHWM", "VmRSS") in KB, or -1. */
static long status_kb(const char *field) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    size_t n = strlen(field);
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, field, n) == 0 && line[n] == ':' && sscanf(line + n + 1, "%ld", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb;
}

/* Reset the peak resident memory (VmHWM) to the current one (Linux >= 4.0,
 * "5" to clear_refs); returns the current resident KB, or -1 when the peak
 * cannot be reset. */
static long peak_reset(void) {
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (!f || fputs("5", f) < 0 || fclose(f) != 0)
        return -1;
    long rss = status_kb("VmRSS"), hwm = status_kb("VmHWM");
    return hwm >= 0 && rss >= 0 && hwm <= rss + 1024 ? rss : -1;
}

/* The peak since peak_reset() returned base, in KB above base. */
static long peak_growth(long base) { return base < 0 ? -1 : status_kb("VmHWM") - base; }

static void test_probe(void) {
    /* the shared photos and every file the tests above made (PNG 8/16-bit,
     * palette, gray, JPEG with orientation, CMYK, profiles, TIFF float / 32-bit
     * / Lab / 1-bit, GIF, WebP, HEIF, animations, ...) */
    static const char *photos[] = {"astronaut.png", "chelsea.png", "logo.png", "camera.png"};
    for (size_t i = 0; i < sizeof photos / sizeof photos[0]; i++)
        same_as_load(shared_path(photos[i]), NULL);
    int n_files = 0;
    DIR *d = opendir(tmpdir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.' || strstr(e->d_name, ".tmp-"))
            continue;
        same_as_load(tmp_path(e->d_name), NULL);
        n_files++;
    }
    if (d)
        closedir(d);
    CHECKF(n_files >= 20, "only %d files made by the tests", n_files);

    /* each format's name and size, from the header */
    static const struct {
        const char *file, *format;
        int w, h, frames;
    } want[] = {{"orient6.jpg", "jpg", 300, 451, 1}, {"orient2.tif", "tiff", 451, 300, 1},
                {"a.webp", "webp", 512, 512, 1},     {"anim.gif", "gif", 451, 300, 2},
                {"a.tif", "tiff", 512, 512, 1},      {"three.webp", "webp", 40, 30, 3}};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        image_info_t info;
        up_error_t err;
        int rc = image_probe_file(tmp_path(want[i].file), NULL, &info, &err);
        CHECKF(rc == 0 && strcmp(info.format, want[i].format) == 0 && info.width == want[i].w &&
                   info.height == want[i].h && info.n_frames == want[i].frames,
               "probe %s: rc %d %s %dx%d %d frames", want[i].file, rc, info.format, info.width, info.height,
               info.n_frames);
    }
    /* orientations 5-8 swap the size, 2-4 do not; a PNG probed from memory */
    VipsImage *ch = vips_load(shared_path("chelsea.png")), *tagged;
    for (int o = 1; ch && o <= 8 && vips_copy(ch, &tagged, NULL) == 0; o++) {
        vips_image_set_int(tagged, VIPS_META_ORIENTATION, o);
        char name[32];
        snprintf(name, sizeof name, "orient%d_probe.jpg", o);
        const char *p = vips_save(tagged, name, "[Q=80]");
        image_info_t info;
        up_error_t err;
        int swap = o >= 5;
        CHECKF(p && image_probe_file(p, NULL, &info, &err) == 0 && info.width == (swap ? 300 : 451) &&
                   info.height == (swap ? 451 : 300),
               "orientation %d: %dx%d", o, info.width, info.height);
        g_object_unref(tagged);
    }
    if (ch)
        g_object_unref(ch);
    gchar *data;
    gsize size;
    if (g_file_get_contents(shared_path("logo.png"), &data, &size, NULL)) {
        image_info_t info;
        up_error_t err;
        CHECK(image_probe_buffer(data, size, NULL, &info, &err) == 0 && strcmp(info.format, "png") == 0 &&
              info.width == 500 && info.height == 500 && info.bands == 4 && info.depth == 8 &&
              info.n_frames == 1);
        g_free(data);
    }

    /* limits: refused from the header, with the load's message */
    image_info_t info;
    up_error_t err;
    image_limits_t lim = {.max_pixels = 512 * 512 - 1};
    int rc = image_probe_file(shared_path("astronaut.png"), &lim, &info, &err);
    CHECKF(rc == UP_ERR_TOO_LARGE && strstr(err.msg, "512x512"), "probe limit: %d %s", rc, err.msg);
    rc = image_verify_file(shared_path("astronaut.png"), &lim, &info, &err);
    CHECKF(rc == UP_ERR_TOO_LARGE && strstr(err.msg, "512x512"), "verify limit: %d %s", rc, err.msg);
    lim.max_pixels = 512 * 512;
    CHECK(image_probe_file(shared_path("astronaut.png"), &lim, &info, &err) == 0);
    char bomb[1024];
    snprintf(bomb, sizeof bomb, "%s/images/bomb_100000x100000/input.png", cases);
    lim.max_pixels = 40000000;
    double t0 = now_s();
    rc = image_probe_file(bomb, &lim, &info, &err);
    int vrc = image_verify_file(bomb, &lim, &info, &err);
    CHECKF(rc == UP_ERR_TOO_LARGE && vrc == UP_ERR_TOO_LARGE && strstr(err.msg, "100000x100000"),
           "bomb: %d %d %s", rc, vrc, err.msg);
    rc = image_probe_file(bomb, NULL, &info, &err); /* no limit: the header alone, still nothing decoded */
    double dt = now_s() - t0;
    CHECKF(rc == 0 && info.width == 100000 && info.height == 100000, "bomb probed: %d %dx%d", rc, info.width,
           info.height);
    CHECKF(dt < 0.5, "bomb probed in %.3f s", dt);
    lim = (image_limits_t){.max_frames = 2};
    rc = image_probe_file(tmp_path("three.gif"), &lim, &info, &err);
    CHECKF(rc == UP_ERR_TOO_LARGE && strcmp(err.msg, "the image has 3 frames; the limit is 2 frames") == 0,
           "probe frames: %d %s", rc, err.msg);
    lim.max_frames = 100;
    t0 = now_s();
    rc = image_verify_file(tmp_path("many.gif"), &lim, &info, &err);
    dt = now_s() - t0;
    CHECKF(rc == UP_ERR_TOO_LARGE && strstr(err.msg, "frames; the limit is 100 frames"), "many: %d %s", rc,
           err.msg);
    CHECKF(dt < 0.5, "many frames refused in %.3f s", dt);

    /* not an image */
    const char *text = "Hello, this is not an image.\nJust text.\n";
    rc = image_probe_buffer(text, strlen(text), NULL, &info, &err);
    CHECKF(rc == UP_ERR_IMAGE && strstr(err.msg, "not an image") && info.width == 0, "text: %d %s", rc,
           err.msg);
    const char *svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"10\" height=\"10\"></svg>";
    CHECK(image_probe_buffer(svg, strlen(svg), NULL, &info, &err) == UP_ERR_IMAGE);
    CHECK(image_verify_buffer(svg, strlen(svg), NULL, &info, &err) == UP_ERR_IMAGE);
    const char *matrix = "2 2\n1 2\n3 4\n";
    CHECK(image_probe_buffer(matrix, strlen(matrix), NULL, &info, &err) == UP_ERR_IMAGE);
    CHECK(image_probe_buffer("", 0, NULL, &info, &err) == UP_ERR_IMAGE && strstr(err.msg, "empty"));
    CHECK(image_probe_file(tmp_path("empty.png"), NULL, &info, &err) == UP_ERR_IMAGE &&
          strstr(err.msg, "empty"));
    CHECK(image_probe_file(tmp_path("does-not-exist.png"), NULL, &info, &err) == UP_ERR_NOT_FOUND);
    CHECK(image_verify_file(tmpdir, NULL, &info, &err) == UP_ERR_IO);

    /* cut at half: the probe may pass (the header is whole), verify refuses
     * as the load does */
    VipsImage *a = vips_load(shared_path("astronaut.png"));
    static const char *cut[] = {"t.jpg", "tp.jpg", "t.png", "t.webp", "t.gif", "t.tif"};
    for (size_t i = 0; a && i < sizeof cut / sizeof cut[0]; i++) {
        if (!g_file_get_contents(tmp_path(cut[i]), &data, &size, NULL))
            continue;
        up_image_t *img = NULL;
        up_error_t le;
        int lrc = image_load_buffer(data, size / 2, NULL, &img, &le);
        rc = image_verify_buffer(data, size / 2, NULL, &info, &err);
        CHECKF(lrc == UP_ERR_IMAGE && rc == UP_ERR_IMAGE &&
                   strncmp(err.msg, le.msg, strcspn(le.msg, ":")) == 0,
               "cut %s: load %d '%s', verify %d '%s'", cut[i], lrc, le.msg, rc, err.msg);
        image_free(img);
        g_free(data);
    }
    if (a)
        g_object_unref(a);

    /* the data-driven cases: verify answers as the load does */
    snprintf(bomb, sizeof bomb, "%s/images", cases);
    d = opendir(bomb);
    lim = (image_limits_t){.max_pixels = 40000000};
    while (d && (e = readdir(d))) {
        char cdir[1300], input[1600] = "";
        if (e->d_name[0] == '.')
            continue;
        snprintf(cdir, sizeof cdir, "%s/%s", bomb, e->d_name);
        DIR *cd = opendir(cdir);
        struct dirent *ce;
        while (cd && (ce = readdir(cd)))
            if (strncmp(ce->d_name, "input", 5) == 0)
                snprintf(input, sizeof input, "%s/%s", cdir, ce->d_name);
        if (cd)
            closedir(cd);
        if (input[0])
            same_as_load(input, &lim);
    }
    if (d)
        closedir(d);
}

static void *verify_flat(void *path) {
    image_info_t info;
    up_error_t err;
    return image_verify_file(path, NULL, &info, &err) == 0 && info.bands == 3 ? NULL : (void *)1;
}

/*
 * What submission costs for a 6300x6300 PNG of ~150 KB, the upload of the
 * memory issue: probe (header), verify (every pixel, none kept) and load
 * (the pixels), each from a peak RSS reset to the current RSS.
 */
static void test_probe_memory(void) {
    VipsImage *b, *l, *u;
    int w = test_sanitized() ? 2000 : 6300;
    if (vips_black(&b, w, w, "bands", 3, NULL))
        return;
    CHECK(vips_linear1(b, &l, 1, 200, NULL) == 0 && vips_cast(l, &u, VIPS_FORMAT_UCHAR, NULL) == 0);
    const char *p = vips_save(u, "flat.png", "[compression=9]");
    g_object_unref(b);
    g_object_unref(l);
    g_object_unref(u);
    if (!p)
        return;
    struct stat st;
    stat(p, &st);
    image_info_t info;
    up_error_t err;
    up_image_t *img = NULL;
    long base = peak_reset();
    double t0 = now_s();
    CHECK(image_probe_file(p, NULL, &info, &err) == 0 && info.width == w);
    double t_probe = now_s() - t0;
    long m_probe = peak_growth(base);
    base = peak_reset();
    t0 = now_s();
    CHECK(image_verify_file(p, NULL, &info, &err) == 0 && info.width == w && info.bands == 3);
    double t_verify = now_s() - t0;
    long m_verify = peak_growth(base);
    base = peak_reset();
    t0 = now_s();
    CHECK(image_load_file(p, NULL, &img, &err) == 0);
    double t_load = now_s() - t0;
    long m_load = peak_growth(base);
    image_free(img);
    printf("submission check of a %dx%d PNG of %lld KB (time, peak RSS growth): probe %.2f ms %+.1f MB, "
           "verify %.0f ms %+.1f MB, load %.0f ms %+.1f MB\n",
           w, w, (long long)st.st_size / 1024, t_probe * 1e3, m_probe / 1024.0, t_verify * 1e3,
           m_verify / 1024.0, t_load * 1e3, m_load / 1024.0);
    if (base < 0) {
        printf("note: the peak RSS cannot be reset here; memory not checked\n");
        return;
    }
    /* 8 uploads checked at once, as the server's submit threads do: the
     * verify budget (32 MB) keeps them to a few at a time */
    pthread_t th[8];
    base = peak_reset();
    t0 = now_s();
    for (int i = 0; i < 8; i++)
        pthread_create(&th[i], NULL, verify_flat, (void *)p);
    int n_ok = 0;
    for (int i = 0; i < 8; i++) {
        void *res;
        pthread_join(th[i], &res);
        n_ok += res == NULL;
    }
    double t_eight = now_s() - t0;
    long m_eight = peak_growth(base);
    CHECKF(n_ok == 8, "%d of 8 verified", n_ok);
    printf("8 verified at once in %.0f ms, peak RSS growth %+.1f MB\n", t_eight * 1e3, m_eight / 1024.0);
    if (!test_sanitized()) {
        CHECKF(m_eight < 48 * 1024, "8 verifies: peak +%ld KB", m_eight);
        CHECKF(m_probe < 4 * 1024, "probe peak +%ld KB", m_probe);
        CHECKF(m_verify < 16 * 1024, "verify peak +%ld KB", m_verify);
        CHECKF(m_load > 100 * 1024, "load peak +%ld KB (the pixels are 113 MB)", m_load);
    }
}

/* ---- threads ----------------------------------------------------------- */

static void *worker(void *arg) {
    (void)arg;
    for (int i = 0; i < 3; i++) {
        up_image_t *img = NULL, *r = NULL;
        up_error_t err;
        char path[1024]; /* its own: shared_path's buffer is one for every thread */
        snprintf(path, sizeof path, "%s/images/%s", shared, i % 2 ? "logo.png" : "chelsea.png");
        if (image_load_file(path, NULL, &img, &err))
            return (void *)1;
        void *buf;
        size_t size;
        image_save_opts_t o = {.format = i % 2 ? "webp" : "jpg"};
        int bad = image_resize(img, 123, 77, &r, &err) || image_save_buffer(r, &o, &buf, &size, &err);
        if (!bad)
            free(buf);
        image_free(r);
        image_free(img);
        if (bad)
            return (void *)1;
    }
    return NULL;
}

static void test_threads(void) {
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&th[i], NULL, worker, NULL);
    for (int i = 0; i < 4; i++) {
        void *res;
        pthread_join(th[i], &res);
        CHECK(res == NULL);
    }
}

static void remove_tmpdir(void) {
    DIR *d = opendir(tmpdir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            unlink(tmp_path(e->d_name));
    closedir(d);
    rmdir(tmpdir);
}

/* ---- canvases: embed and crop ---------------------------------------------- */

/* A w x h image of the given shape whose samples are a pattern of x, y and band. */
static up_image_t *pattern(int w, int h, int bands, int depth) {
    up_image_t *img = image_new(w, h, bands, depth);
    for (int y = 0; img && y < h; y++)
        for (int x = 0; x < w; x++)
            for (int b = 0; b < bands; b++) {
                size_t i = ((size_t)y * w + x) * bands + b;
                unsigned v = (unsigned)(x * 7 + y * 13 + b * 50) % 256;
                if (depth == 16)
                    ((uint16_t *)img->pixels)[i] = (uint16_t)(v * 257 + 3);
                else
                    ((uint8_t *)img->pixels)[i] = (uint8_t)v;
            }
    return img;
}

/* 1 when out's w x h area at (ox, oy) holds in's pixels at (ix, iy), band by band. */
static int same_area(const up_image_t *out, int ox, int oy, const up_image_t *in, int ix, int iy, int w,
                     int h) {
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int b = 0; b < in->bands; b++)
                if (sample(out, ox + x, oy + y, b) != sample(in, ix + x, iy + y, b))
                    return 0;
    return 1;
}

static void test_embed_crop(void) {
    up_error_t err;
    up_image_t *out = NULL;
    static const unsigned char white[4] = {255, 255, 255, 255}, red_half[4] = {255, 0, 0, 128},
                               grey[4] = {40, 40, 40, 255}, clear[4] = {0, 0, 0, 0};

    /* RGB on white: same bands, bars white, the image where it was put */
    up_image_t *rgb = pattern(10, 6, 3, 8);
    snprintf(rgb->format, sizeof rgb->format, "jpg");
    rgb->xmp = malloc(3);
    memcpy(rgb->xmp, "<x>", 3);
    rgb->xmp_size = 3;
    CHECKF(image_embed(rgb, 14, 10, 2, 3, white, &out, &err) == 0, "%s", err.msg);
    CHECK(out && out->width == 14 && out->height == 10 && out->bands == 3 && out->depth == 8);
    CHECK(out && same_area(out, 2, 3, rgb, 0, 0, 10, 6));
    CHECK(out && sample(out, 0, 0, 0) == 255 && sample(out, 13, 9, 2) == 255 && sample(out, 1, 5, 1) == 255);
    CHECK(out && sample(out, 12, 5, 0) == 255 && sample(out, 5, 2, 0) == 255 && sample(out, 5, 9, 0) == 255);
    CHECK(out && !strcmp(out->format, "jpg") && out->xmp_size == 3 && !memcmp(out->xmp, "<x>", 3));
    image_free(out);

    /* a background with alpha adds an alpha band: opaque image, bars as given */
    CHECKF(image_embed(rgb, 12, 6, 1, 0, red_half, &out, &err) == 0, "%s", err.msg);
    CHECK(out && out->bands == 4);
    if (out) {
        CHECK(sample(out, 0, 0, 0) == 255 && sample(out, 0, 0, 1) == 0 && sample(out, 0, 0, 3) == 128);
        CHECK(sample(out, 11, 5, 3) == 128 && sample(out, 1, 0, 3) == 255 && sample(out, 10, 5, 3) == 255);
        int same = 1;
        for (int y = 0; y < 6; y++)
            for (int x = 0; x < 10; x++)
                for (int b = 0; b < 3; b++)
                    same &= sample(out, x + 1, y, b) == sample(rgb, x, y, b);
        CHECK(same);
    }
    image_free(out);

    /* negative offsets cut: a canvas smaller than the image is a crop */
    CHECKF(image_embed(rgb, 4, 3, -5, -2, white, &out, &err) == 0, "%s", err.msg);
    CHECK(out && out->bands == 3 && same_area(out, 0, 0, rgb, 5, 2, 4, 3));
    image_free(out);

    /* gray: a gray background keeps one band; a coloured one makes RGB */
    up_image_t *gray = pattern(5, 4, 1, 8);
    CHECK(image_embed(gray, 7, 4, 1, 0, grey, &out, &err) == 0);
    CHECK(out && out->bands == 1 && sample(out, 0, 0, 0) == 40 && same_area(out, 1, 0, gray, 0, 0, 5, 4));
    image_free(out);
    CHECK(image_embed(gray, 7, 4, 1, 0, red_half, &out, &err) == 0);
    CHECK(out && out->bands == 4 && sample(out, 0, 0, 0) == 255 && sample(out, 0, 0, 2) == 0 &&
          sample(out, 0, 0, 3) == 128);
    CHECK(out && sample(out, 3, 2, 0) == sample(gray, 2, 2, 0) &&
          sample(out, 3, 2, 2) == sample(gray, 2, 2, 0) && sample(out, 3, 2, 3) == 255);
    image_free(out);

    /* gray with a gray profile going RGB: values to sRGB, the profile dropped */
    gsize icc_n = 0;
    gchar *icc = fixture("gray-gamma-2.2.icc", &icc_n);
    if (icc) {
        gray->icc = malloc(icc_n);
        memcpy(gray->icc, icc, icc_n);
        gray->icc_size = icc_n;
        CHECK(image_embed(gray, 6, 4, 0, 0, grey, &out, &err) == 0);
        CHECK(out && out->bands == 1 && out->icc_size == icc_n); /* gray stays, profile kept */
        image_free(out);
        up_image_t *srgb = pattern(5, 4, 1, 8);
        srgb->icc = malloc(icc_n);
        memcpy(srgb->icc, icc, icc_n);
        srgb->icc_size = icc_n;
        CHECK(image_to_srgb(srgb, &err) == 0);
        CHECK(image_embed(gray, 6, 4, 0, 0, red_half, &out, &err) == 0);
        CHECK(out && out->bands == 4 && !out->icc && sample(out, 2, 1, 1) == sample(srgb, 2, 1, 0));
        image_free(out);
        image_free(srgb);
        g_free(icc);
    }

    /* gray + alpha on transparent; 16 bits: the background times 257 */
    up_image_t *ga16 = pattern(3, 3, 2, 16);
    CHECK(image_embed(ga16, 5, 3, 2, 0, clear, &out, &err) == 0);
    CHECK(out && out->bands == 2 && out->depth == 16 && sample(out, 0, 0, 0) == 0 &&
          sample(out, 1, 2, 1) == 0 && same_area(out, 2, 0, ga16, 0, 0, 3, 3));
    image_free(out);
    up_image_t *rgb16 = pattern(3, 2, 3, 16);
    CHECK(image_embed(rgb16, 3, 4, 0, 1, red_half, &out, &err) == 0);
    CHECK(out && out->bands == 4 && out->depth == 16 && sample(out, 0, 0, 0) == 65535 &&
          sample(out, 0, 0, 3) == 128 * 257 && sample(out, 0, 1, 3) == 65535);
    image_free(out);

    /* crop: exact pixels, metadata kept, areas outside refused */
    CHECKF(image_crop(rgb, 3, 2, 5, 3, &out, &err) == 0, "%s", err.msg);
    CHECK(out && out->width == 5 && out->height == 3 && same_area(out, 0, 0, rgb, 3, 2, 5, 3));
    CHECK(out && !strcmp(out->format, "jpg") && out->xmp_size == 3);
    image_free(out);
    CHECK(image_crop(rgb16, 0, 0, 3, 2, &out, &err) == 0 && out && same_pixels(out, rgb16));
    image_free(out);
    CHECK(image_crop(rgb, 6, 0, 5, 3, &out, &err) == UP_ERR_INVALID && !out && strstr(err.msg, "10x6"));
    CHECK(image_crop(rgb, -1, 0, 5, 3, &out, &err) == UP_ERR_INVALID);
    CHECK(image_crop(rgb, 0, 0, 0, 3, &out, &err) == UP_ERR_INVALID);
    CHECK(image_embed(rgb, 0, 3, 0, 0, white, &out, &err) == UP_ERR_INVALID && !out);

    image_free(rgb);
    image_free(gray);
    image_free(ga16);
    image_free(rgb16);
}

/* ---- PNG palettes and depth -------------------------------------------------- */

/* The colour type (IHDR byte 25: 3 = palette) and bit depth (byte 24) of a PNG. */
static int png_colour_type(const void *buf, size_t size) {
    return size > 25 ? ((const uint8_t *)buf)[25] : -1;
}
static int png_bit_depth(const void *buf, size_t size) { return size > 25 ? ((const uint8_t *)buf)[24] : -1; }

static void test_png_palette_options(void) {
    up_error_t err;
    CHECK(image_format_canonical("JPEG") && !strcmp(image_format_canonical("JPEG"), "jpg"));
    CHECK(image_format_canonical("webp") && !strcmp(image_format_canonical("webp"), "webp"));
    CHECK(!image_format_canonical("tiff") && !image_format_canonical(NULL));
    CHECK(image_format_default_quality("jpg") == 92 && image_format_default_quality("webp") == 90 &&
          image_format_default_quality("png") == 0);

    int ok = image_png_palette_supported();
    printf("PNG palette quantisation: %s\n", ok ? "available" : "not in this libvips");
    CHECK(ok == image_png_palette_supported());
    up_image_t *photo = load(shared_path("chelsea.png"));
    if (!photo)
        return;
    void *plain = NULL, *pal = NULL;
    size_t plain_n = 0, pal_n = 0;
    image_save_opts_t o = {.format = "png"};
    CHECK(image_save_buffer(photo, &o, &plain, &plain_n, &err) == 0 && png_colour_type(plain, plain_n) == 2);
    o.png_palette = 256;
    o.png_dither = 1;
    if (ok) {
        CHECKF(image_save_buffer(photo, &o, &pal, &pal_n, &err) == 0, "%s", err.msg);
        CHECK(png_colour_type(pal, pal_n) == 3 && png_bit_depth(pal, pal_n) == 8);
        CHECKF(pal_n < plain_n / 2, "palette %zu bytes, plain %zu", pal_n, plain_n);
        up_image_t *back = NULL;
        CHECK(image_load_buffer(pal, pal_n, NULL, &back, &err) == 0);
        CHECK(back && back->width == photo->width && back->height == photo->height && back->bands == 3);
        CHECKF(back && psnr(back, photo) > 25, "palette PSNR %.1f", back ? psnr(back, photo) : 0);
        image_free(back);
        free(pal);
        /* fewer colours, lower quality: smaller; 16 colours is 4 bits a pixel */
        o.png_palette = 16;
        o.png_dither = 0;
        o.png_palette_quality = 1;
        CHECK(image_save_buffer(photo, &o, &pal, &pal_n, &err) == 0 && png_bit_depth(pal, pal_n) == 4);
        free(pal);
        /* alpha kept in the palette */
        VipsImage *v = vips_rgba();
        up_image_t *rgba = v ? from_vips(v) : NULL;
        if (v)
            g_object_unref(v);
        o.png_palette = 256;
        CHECK(rgba && image_save_buffer(rgba, &o, &pal, &pal_n, &err) == 0);
        CHECK(image_load_buffer(pal, pal_n, NULL, &back, &err) == 0 && back && back->bands == 4);
        image_free(back);
        image_free(rgba);
        free(pal);
    }
    free(plain);

    /* 16-bit: png_depth 8 writes 8 bits, rounded as jpg/webp are */
    up_image_t *p16 = pattern(9, 5, 3, 16);
    o = (image_save_opts_t){.format = "png", .png_depth = 8};
    void *buf = NULL;
    size_t n = 0;
    CHECK(image_save_buffer(p16, &o, &buf, &n, &err) == 0 && png_bit_depth(buf, n) == 8);
    up_image_t *back = NULL;
    CHECK(buf && image_load_buffer(buf, n, NULL, &back, &err) == 0 && back && back->depth == 8);
    CHECK(back && sample(back, 4, 2, 1) == (sample(p16, 4, 2, 1) + 128) / 257);
    image_free(back);
    free(buf);
    o.png_depth = 0;
    CHECK(image_save_buffer(p16, &o, &buf, &n, &err) == 0 && png_bit_depth(buf, n) == 16);
    free(buf);
    if (ok) { /* a 16-bit palette is 8-bit values */
        o.png_palette = 256;
        CHECK(image_save_buffer(p16, &o, &buf, &n, &err) == 0 && png_colour_type(buf, n) == 3);
        free(buf);
    }

    /* bad values refused */
    static const image_save_opts_t bad[] = {
        {.format = "png", .png_depth = 12},
        {.format = "png", .png_palette = 3},
        {.format = "png", .png_palette = 300},
        {.format = "png", .png_palette = 256, .png_palette_quality = 101},
        {.format = "png", .png_palette = 256, .png_dither = 2},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        buf = NULL;
        CHECKF(image_save_buffer(p16, &bad[i], &buf, &n, &err) == UP_ERR_INVALID && !buf, "bad option %zu",
               i);
    }
    image_free(p16);
    image_free(photo);
}

int main(void) {
    shared = test_env("UPRES_SHARED_DATA");
    cases = test_env("UPRES_TEST_CASES");
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/upres-image-test-XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 2;
    }
    CHECK(image_init() == 0);
    CHECK(image_init() == 0);

    test_shared_images();
    test_png_16bit();
    test_png_palette_and_gray();
    test_jpeg_orientation();
    test_cmyk();
    test_icc();
    test_tiff();
    test_gif();
    test_webp_heif();
    test_adobe_rgb();
    test_gray_profile();
    test_exif_xmp();
    test_round_trips();
    test_save_options();
    test_flatten();
    test_resize();
    test_embed_crop();
    test_png_palette_options();
    test_broken();
    test_limits();
    test_frames();
    test_cases();
    test_probe();
    test_probe_memory();
    test_threads();

    if (!getenv("KEEP_TMP"))
        remove_tmpdir();
    image_shutdown();
    return test_summary();
}
