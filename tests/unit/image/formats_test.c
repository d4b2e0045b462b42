/*
 * formats_test.c - the output formats and the frames of src/image/image.c:
 * AVIF, GIF and ICO beside PNG, JPEG and WebP, and animations.
 *
 * Names: image_format_canonical and friends, content types, the default
 * output, ICO's size. Encodes: every format written from RGB, RGBA, gray
 * and 16-bit images decodes back at its size (ICO through its own header:
 * libvips reads no ICO, so the test parses ICONDIR and decodes the PNG in
 * it), quality lowers AVIF's and GIF's bytes (GIF: at most 2^bits colours).
 * Frames: animated GIFs and WebPs (5 frames of 24x16 in flat colours, the
 * delays distinct, made here with libvips) load with their frames, delays
 * and loop count, the first N of them with a frame limit, within the pixel
 * limit counted over all frames; they are written back as animations with
 * the same delays and loop; the probe reports the frame count and fps.
 */
#include "image/image.h"

#include <math.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include <vips/vips.h>

#include "test.h"

static const char *shared;

static const char *shared_path(const char *name) {
    static char buf[1024];
    snprintf(buf, sizeof buf, "%s/images/%s", shared, name);
    return buf;
}

static unsigned sample(const up_image_t *img, int frame, int x, int y, int b) {
    size_t i = ((size_t)y * img->width + x) * img->bands + b;
    const void *p = image_frame_pixels(img, frame);
    return img->depth == 16 ? ((const uint16_t *)p)[i] : ((const uint8_t *)p)[i];
}

static up_image_t *load(const char *path) {
    up_image_t *img = NULL;
    up_error_t err = {0};
    int rc = image_load_file(path, NULL, &img, &err);
    CHECKF(rc == 0 && img, "load %s: %d %s", path, rc, err.msg);
    return img;
}

static up_image_t *decode(const void *buf, size_t size) {
    up_image_t *img = NULL;
    up_error_t err = {0};
    int rc = image_load_buffer(buf, size, NULL, &img, &err);
    CHECKF(rc == 0 && img, "decode: %d %s", rc, err.msg);
    return img;
}

/* The encoded size of img in fmt at quality q, or 0; the bytes in *out (new) when out is not NULL. */
static size_t encode(const up_image_t *img, const char *fmt, int q, void **out) {
    image_save_opts_t o = {.format = fmt, .quality = q};
    void *buf = NULL;
    size_t n = 0;
    up_error_t err = {0};
    int rc = image_save_buffer(img, &o, &buf, &n, &err);
    CHECKF(rc == 0 && buf && n > 0, "encode %s q%d: %d %s", fmt, q, rc, err.msg);
    if (out)
        *out = buf;
    else
        free(buf);
    return rc ? 0 : n;
}

/* A copy of img's first frame with bands 1..4 and depth 8/16 (gray from the green band). */
static up_image_t *variant(const up_image_t *img, int bands, int depth) {
    up_image_t *v = image_new(img->width, img->height, bands, depth);
    for (int y = 0; v && y < img->height; y++)
        for (int x = 0; x < img->width; x++)
            for (int b = 0; b < bands; b++) {
                int alpha = (bands == 2 || bands == 4) && b == bands - 1;
                unsigned s = alpha ? (unsigned)((x + y) % 256) : sample(img, 0, x, y, bands <= 2 ? 1 : b);
                size_t i = ((size_t)y * v->width + x) * bands + b;
                if (depth == 16)
                    ((uint16_t *)v->pixels)[i] = (uint16_t)(s * 257);
                else
                    ((uint8_t *)v->pixels)[i] = (uint8_t)s;
            }
    return v;
}

static uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/*
 * Check an ICO file (ICONDIR, one ICONDIRENTRY, a PNG) and decode its PNG:
 * the decoded image (new) or NULL. *w, *h: the entry's sides (0 read as 256).
 */
static up_image_t *ico_decode(const uint8_t *p, size_t n, int *w, int *h) {
    CHECKF(n > 22 + 33, "ico: %zu bytes", n);
    if (n <= 22 + 33)
        return NULL;
    CHECK(p[0] == 0 && p[1] == 0 && p[2] == 1 && p[3] == 0 && p[4] == 1 && p[5] == 0); /* icon, 1 image */
    *w = p[6] ? p[6] : 256;
    *h = p[7] ? p[7] : 256;
    CHECK(p[8] == 0 && p[9] == 0 && p[10] == 1 && p[11] == 0 && p[12] == 32 && p[13] == 0);
    uint32_t size = le32(p + 14), off = le32(p + 18);
    CHECKF(off == 22 && size == n - 22, "ico: entry of %u bytes at %u in %zu", size, off, n);
    const uint8_t *png = p + 22;
    CHECK(memcmp(png, "\x89PNG\r\n\x1a\n", 8) == 0);
    CHECKF(png[24] == 8 && png[25] == 6, "ico: PNG depth %d colour type %d, want 8-bit RGBA", png[24],
           png[25]);
    up_image_t *img = decode(png, n - 22);
    CHECK(!img || (img->width == *w && img->height == *h));
    return img;
}

/* ---- names ------------------------------------------------------------------ */

static void test_names(void) {
    static const struct {
        const char *name, *canon, *mime, *ext;
        int quality, animated;
    } fmts[] = {
        {"png", "png", "image/png", "a.png", 0, 0},        {"JPEG", "jpg", "image/jpeg", "a.jpeg", 92, 0},
        {"jpg", "jpg", "image/jpeg", "a.JPG", 92, 0},      {"webp", "webp", "image/webp", "a.webp", 90, 1},
        {"AVIF", "avif", "image/avif", "a.avif", 60, 0},   {"gif", "gif", "image/gif", "a.Gif", 100, 1},
        {"ico", "ico", "image/x-icon", "dir/a.ico", 0, 0},
    };
    for (size_t i = 0; i < sizeof fmts / sizeof fmts[0]; i++) {
        const char *c = image_format_canonical(fmts[i].name);
        CHECKF(c && !strcmp(c, fmts[i].canon), "%s: canonical %s", fmts[i].name, c ? c : "NULL");
        CHECK(image_format_supported_for_output(fmts[i].name));
        const char *m = image_content_type(fmts[i].name);
        CHECKF(m && !strcmp(m, fmts[i].mime), "%s: %s", fmts[i].name, m ? m : "NULL");
        const char *e = image_format_from_path(fmts[i].ext);
        CHECKF(e && !strcmp(e, fmts[i].canon), "%s: from path %s", fmts[i].ext, e ? e : "NULL");
        CHECK(image_format_default_quality(fmts[i].name) == fmts[i].quality);
        CHECK(image_format_animated(fmts[i].name) == fmts[i].animated);
    }
    static const char *const no[] = {"tiff", "heif", "bmp", "", "gifx", "x-icon"};
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
        CHECKF(!image_format_canonical(no[i]) && !image_format_supported_for_output(no[i]) &&
                   !image_content_type(no[i]) && !image_format_animated(no[i]),
               "%s is not an output format", no[i]);
    CHECK(!image_format_canonical(NULL) && !image_content_type(NULL) && !image_format_from_path("a.tif"));
    /* the default output: the source's own for png, jpg and webp only */
    static const char *const def[][2] = {{"png", "png"},  {"jpg", "jpg"},  {"webp", "webp"}, {"gif", "png"},
                                         {"avif", "png"}, {"tiff", "png"}, {"heif", "png"},  {"", "png"}};
    for (size_t i = 0; i < sizeof def / sizeof def[0]; i++)
        CHECKF(!strcmp(image_format_default_output(def[i][0]), def[i][1]), "default for %s", def[i][0]);
    CHECK(!strcmp(image_format_default_output(NULL), "png"));
    /* ICO fits into 256x256, the rest keep their size */
    static const long long sizes[][5] = {
        {600, 300, 256, 128, 0}, {300, 600, 128, 256, 0}, {256, 256, 256, 256, 0}, {257, 100, 256, 100, 0},
        {1000, 1, 256, 1, 0},    {16, 16, 16, 16, 0},     {3, 1000, 1, 256, 0},    {999, 998, 256, 256, 0}};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        long long w, h;
        image_format_output_size("ico", sizes[i][0], sizes[i][1], &w, &h);
        CHECKF(w == sizes[i][2] && h == sizes[i][3], "ico %lldx%lld: %lldx%lld", sizes[i][0], sizes[i][1], w,
               h);
        image_format_output_size("png", sizes[i][0], sizes[i][1], &w, &h);
        CHECK(w == sizes[i][0] && h == sizes[i][1]);
    }
}

/* ---- still encodes -------------------------------------------------------------- */

static void test_encodes(void) {
    up_image_t *photo = load(shared_path("chelsea.png")); /* 451x300 RGB */
    if (!photo)
        return;
    static const char *const fmts[] = {"png", "jpg", "webp", "avif", "gif", "ico"};
    static const int shapes[][2] = {{3, 8}, {4, 8}, {1, 8}, {2, 8}, {3, 16}, {4, 16}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        up_image_t *img = variant(photo, shapes[s][0], shapes[s][1]);
        for (size_t f = 0; img && f < sizeof fmts / sizeof fmts[0]; f++) {
            void *buf = NULL;
            size_t n = encode(img, fmts[f], 0, &buf);
            if (!n)
                continue;
            up_image_t *back;
            int w = img->width, h = img->height;
            if (!strcmp(fmts[f], "ico")) {
                back = ico_decode(buf, n, &w, &h);
                CHECKF(w == 256 && h == 170, "ico of 451x300: %dx%d", w, h);
                CHECK(back && back->bands == 4 && back->depth == 8);
            } else {
                back = decode(buf, n);
                CHECKF(back && !strcmp(back->format, fmts[f]), "%s: read back as %s", fmts[f],
                       back ? back->format : "?");
            }
            CHECKF(back && back->width == w && back->height == h, "%s %d bands %d-bit: %dx%d", fmts[f],
                   shapes[s][0], shapes[s][1], back ? back->width : 0, back ? back->height : 0);
            int alpha = shapes[s][0] == 2 || shapes[s][0] == 4;
            if (back && strcmp(fmts[f], "jpg") != 0 && strcmp(fmts[f], "ico") != 0)
                CHECKF(image_has_alpha(back) == alpha, "%s: alpha %d -> %d", fmts[f], alpha,
                       image_has_alpha(back));
            /* the picture survives: the green band at a few points, loosely (GIF has 256 colours) */
            if (back && !alpha && shapes[s][1] == 8) {
                int tol = !strcmp(fmts[f], "png") ? 0 : 40, bad = 0;
                for (int k = 0; k < 20; k++) {
                    int x = 20 + k * 19, y = 30 + k * 11;
                    if (back->width != img->width) { /* ico: scaled */
                        x = x * back->width / img->width;
                        y = y * back->height / img->height;
                    }
                    unsigned want =
                        sample(img, 0, back->width != img->width ? x * img->width / back->width : x,
                               back->height != img->height ? y * img->height / back->height : y,
                               img->bands >= 3 ? 1 : 0);
                    unsigned got = sample(back, 0, x, y, back->bands >= 3 ? 1 : 0);
                    bad += abs((int)got - (int)want) > tol;
                }
                CHECKF(bad <= 2, "%s from %d bands: %d of 20 points off", fmts[f], shapes[s][0], bad);
            }
            image_free(back);
            free(buf);
        }
        image_free(img);
    }

    /* AVIF and GIF: lower quality, fewer bytes; GIF's colours follow the quality */
    size_t a90 = encode(photo, "avif", 90, NULL), a60 = encode(photo, "avif", 0, NULL),
           a20 = encode(photo, "avif", 20, NULL);
    CHECKF(a90 > a60 && a60 > a20 && a60 == encode(photo, "avif", 60, NULL), "avif: %zu %zu %zu", a90, a60,
           a20);
    printf("avif 451x300: q90 %zu, q60 %zu, q20 %zu bytes\n", a90, a60, a20);
    size_t prev = 0;
    for (int q = 100; q >= 1; q -= 11) {
        void *buf = NULL;
        size_t n = encode(photo, "gif", q, &buf);
        up_image_t *back = n ? decode(buf, n) : NULL;
        if (back) { /* count the colours */
            int bits = (8 * q + 99) / 100, n_colours = 0;
            static uint8_t seen[1 << 24 >> 3];
            memset(seen, 0, sizeof seen);
            for (int y = 0; y < back->height; y++)
                for (int x = 0; x < back->width; x++) {
                    unsigned c = sample(back, 0, x, y, 0) << 16 | sample(back, 0, x, y, 1) << 8 |
                                 sample(back, 0, x, y, 2);
                    if (!(seen[c >> 3] & (1 << (c & 7)))) {
                        seen[c >> 3] |= (uint8_t)(1 << (c & 7));
                        n_colours++;
                    }
                }
            CHECKF(n_colours <= 1 << bits, "gif q%d: %d colours, want at most %d", q, n_colours, 1 << bits);
            printf("gif 451x300 q%d: %zu bytes, %d colours\n", q, n, n_colours);
        }
        CHECKF(!prev || n <= prev, "gif q%d: %zu bytes, over %zu", q, n, prev);
        prev = n;
        image_free(back);
        free(buf);
    }
    CHECK(encode(photo, "gif", 0, NULL) == encode(photo, "gif", 100, NULL) &&
          encode(photo, "gif", 1, NULL) < encode(photo, "gif", 100, NULL) / 4);

    /* ICO: a side of 256 is byte 0, small images keep their size; a file by extension */
    static const int ico_sizes[][4] = {
        {256, 256, 256, 256}, {16, 16, 16, 16}, {48, 20, 48, 20}, {300, 256, 256, 218}};
    for (size_t i = 0; i < sizeof ico_sizes / sizeof ico_sizes[0]; i++) {
        up_image_t *img = NULL;
        up_error_t err;
        CHECK(image_resize(photo, ico_sizes[i][0], ico_sizes[i][1], &img, &err) == 0);
        void *buf = NULL;
        size_t n = img ? encode(img, "ico", 0, &buf) : 0;
        int w = 0, h = 0;
        up_image_t *back = n ? ico_decode(buf, n, &w, &h) : NULL;
        CHECKF(back && w == ico_sizes[i][2] && h == ico_sizes[i][3], "ico %dx%d: %dx%d", ico_sizes[i][0],
               ico_sizes[i][1], w, h);
        if (n && ico_sizes[i][2] == 256)
            CHECK(((uint8_t *)buf)[6] == 0);
        image_free(back);
        image_free(img);
        free(buf);
    }
    char path[] = "/tmp/upres-formats-XXXXXX.ico";
    int fd = mkstemps(path, 4);
    up_error_t err;
    CHECK(fd >= 0 && image_save_file(photo, path, NULL, &err) == 0);
    if (fd >= 0) {
        uint8_t head[8] = {0};
        FILE *f = fopen(path, "rb");
        CHECK(f && fread(head, 1, 8, f) == 8 && head[2] == 1 && head[4] == 1 && head[6] == 0);
        if (f)
            fclose(f);
        close(fd);
        unlink(path);
    }
    /* no format and a GIF or AVIF source: PNG, as before */
    snprintf(photo->format, sizeof photo->format, "gif");
    void *buf = NULL;
    size_t n = 0;
    CHECK(image_save_buffer(photo, NULL, &buf, &n, &err) == 0 && n > 8 && !memcmp(buf, "\x89PNG", 4));
    free(buf);
    image_save_opts_t o = {.format = "tiff"};
    CHECK(image_save_buffer(photo, &o, &buf, &n, &err) == UP_ERR_INVALID &&
          strstr(err.msg, "png, jpg, webp, avif, gif and ico"));
    image_free(photo);
}

/* ---- frames ----------------------------------------------------------------- */

#define N_ANIM 5
static const int anim_delays[N_ANIM] = {50, 80, 120, 200, 300}; /* ms: GIF keeps multiples of 10, WebP > 10 */
static const unsigned char anim_colours[N_ANIM][3] = {
    {230, 20, 20}, {20, 200, 40}, {30, 40, 220}, {240, 220, 30}, {200, 40, 200}};

/* An animation of N_ANIM flat frames of w x h in fmt ("gif" or "webp" lossless), looping loop times: new
 * bytes. */
static void *make_animation(const char *fmt, int w, int h, int loop, size_t *size) {
    VipsImage *frames[N_ANIM] = {0}, *strip = NULL, *anim = NULL;
    void *buf = NULL;
    int ok = 1;
    for (int i = 0; i < N_ANIM && ok; i++) {
        VipsImage *b = NULL, *l = NULL;
        double one[3] = {1, 1, 1}, add[3] = {anim_colours[i][0], anim_colours[i][1], anim_colours[i][2]};
        ok = !vips_black(&b, w, h, "bands", 3, NULL) && !vips_linear(b, &l, one, add, 3, NULL) &&
             !vips_cast(l, &frames[i], VIPS_FORMAT_UCHAR, NULL);
        if (b)
            g_object_unref(b);
        if (l)
            g_object_unref(l);
    }
    if (ok && !vips_arrayjoin(frames, &strip, N_ANIM, "across", 1, NULL) &&
        !vips_copy(strip, &anim, "interpretation", VIPS_INTERPRETATION_sRGB, NULL)) {
        vips_image_set_int(anim, VIPS_META_PAGE_HEIGHT, h);
        vips_image_set_array_int(anim, "delay", anim_delays, N_ANIM);
        vips_image_set_int(anim, "loop", loop);
        int failed = !strcmp(fmt, "gif") ? vips_gifsave_buffer(anim, &buf, size, NULL)
                                         : vips_webpsave_buffer(anim, &buf, size, "lossless", TRUE, NULL);
        if (failed) {
            fprintf(stderr, "make_animation: %s\n", vips_error_buffer());
            vips_error_clear();
            buf = NULL;
        }
    }
    for (int i = 0; i < N_ANIM; i++)
        if (frames[i])
            g_object_unref(frames[i]);
    if (strip)
        g_object_unref(strip);
    if (anim)
        g_object_unref(anim);
    CHECKF(buf != NULL, "cannot make a %s animation", fmt);
    return buf;
}

/* Frame i of img is flat anim_colours[c] (within tol). */
static int frame_is(const up_image_t *img, int i, int c, int tol) {
    for (int y = 0; y < img->height; y++)
        for (int x = 0; x < img->width; x++)
            for (int b = 0; b < 3; b++)
                if (abs((int)sample(img, i, x, y, b) - anim_colours[c][b]) > tol)
                    return 0;
    return 1;
}

/* img holds frames first..first+n-1 of the animation, with its delays and loop. */
static void check_anim(const char *what, const up_image_t *img, int n, int loop, int w, int h) {
    CHECKF(img && img->n_pages == n && img->n_frames == N_ANIM && img->width == w && img->height == h,
           "%s: %d of %d frames, %dx%d", what, img ? img->n_pages : 0, img ? img->n_frames : 0,
           img ? img->width : 0, img ? img->height : 0);
    if (!img || img->n_pages != n)
        return;
    CHECKF(n == 1 ? !img->delays && img->loop == 0 : img->delays && img->loop == loop, "%s: loop %d", what,
           img->loop);
    for (int i = 0; i < n; i++) {
        if (n > 1)
            CHECKF(img->delays[i] == anim_delays[i], "%s: frame %d delay %d, want %d", what, i,
                   img->delays[i], anim_delays[i]);
        CHECKF(frame_is(img, i, i, 2), "%s: frame %d is not its colour (%u %u %u)", what, i,
               sample(img, i, 0, 0, 0), sample(img, i, 0, 0, 1), sample(img, i, 0, 0, 2));
    }
}

static void test_frames_load(void) {
    static const char *const fmts[] = {"gif", "webp"};
    for (int f = 0; f < 2; f++) {
        size_t size = 0;
        void *buf = make_animation(fmts[f], 24, 16, 3, &size);
        if (!buf)
            continue;
        up_image_t *img = NULL;
        up_error_t err = {0};
        char what[64];
        snprintf(what, sizeof what, "%s, all frames", fmts[f]);
        CHECKF(image_load_buffer_frames(buf, size, NULL, 100, &img, &err) == 0, "%s: %s", what, err.msg);
        check_anim(what, img, N_ANIM, 3, 24, 16);
        CHECK(img && !strcmp(img->format, fmts[f]));

        /* a view of each frame; keep the first 2 */
        if (img && img->n_pages == N_ANIM) {
            up_image_t v = image_frame_view(img, 3);
            CHECK(v.n_pages == 1 && !v.delays && v.width == 24 && v.height == 16 && frame_is(&v, 0, 3, 2));
            up_image_t *r = NULL;
            CHECK(image_resize(&v, 12, 8, &r, &err) == 0 && r && r->n_pages == 1 && frame_is(r, 0, 3, 3));
            image_free(r);
            /* the first frame alone for any other function */
            CHECK(image_resize(img, 12, 8, &r, &err) == 0 && r && r->n_pages == 1 && !r->delays &&
                  frame_is(r, 0, 0, 3));
            image_free(r);
            image_frames_keep(img, 2);
            CHECK(img->n_pages == 2 && img->delays && img->delays[1] == anim_delays[1]);
            image_frames_keep(img, 1);
            CHECK(img->n_pages == 1 && !img->delays && img->loop == 0 && img->n_frames == N_ANIM);
        }
        image_free(img);

        snprintf(what, sizeof what, "%s, 3 frames", fmts[f]);
        CHECKF(image_load_buffer_frames(buf, size, NULL, 3, &img, &err) == 0, "%s: %s", what, err.msg);
        check_anim(what, img, 3, 3, 24, 16);
        image_free(img);
        snprintf(what, sizeof what, "%s, 1 frame", fmts[f]);
        CHECK(image_load_buffer_frames(buf, size, NULL, 1, &img, &err) == 0);
        check_anim(what, img, 1, 3, 24, 16);
        image_free(img);
        CHECK(image_load_buffer(buf, size, NULL, &img, &err) == 0);
        check_anim("image_load_buffer", img, 1, 3, 24, 16);
        image_free(img);

        /* the pixel limit: one frame as before, all frames together as well */
        image_limits_t lim = {.max_pixels = 24 * 16 * 4};
        CHECK(image_load_buffer_frames(buf, size, &lim, 5, &img, &err) == UP_ERR_TOO_LARGE && !img);
        CHECKF(strstr(err.msg, "5 frames of 24x16 are 0.0 megapixels, over the limit of 0.0 megapixels"),
               "%s", err.msg);
        CHECK(image_load_buffer_frames(buf, size, &lim, 4, &img, &err) == 0 && img && img->n_pages == 4);
        image_free(img);
        lim.max_pixels = 24 * 16 - 1;
        CHECK(image_load_buffer_frames(buf, size, &lim, 1, &img, &err) == UP_ERR_TOO_LARGE &&
              strstr(err.msg, "image is 24x16"));
        /* the file's frame limit still refuses the whole file */
        lim = (image_limits_t){.max_frames = 4};
        CHECK(image_load_buffer_frames(buf, size, &lim, 2, &img, &err) == UP_ERR_TOO_LARGE &&
              strstr(err.msg, "the image has 5 frames; the limit is 4 frames"));

        /* the file loader */
        char path[64];
        snprintf(path, sizeof path, "/tmp/upres-frames-XXXXXX.%s", fmts[f]);
        int fd = mkstemps(path, (int)strlen(fmts[f]) + 1);
        CHECK(fd >= 0 && write(fd, buf, size) == (ssize_t)size);
        if (fd >= 0) {
            close(fd);
            CHECK(image_load_file_frames(path, NULL, 4, &img, &err) == 0);
            check_anim("image_load_file_frames", img, 4, 3, 24, 16);
            image_free(img);
            CHECK(image_load_file_frames("/nonexistent/a.gif", NULL, 4, &img, &err) == UP_ERR_NOT_FOUND &&
                  !img);

            /* the probe: frames, fps = 1000 / mean delay, loop */
            image_info_t info;
            double fps = 1000.0 * N_ANIM / (50 + 80 + 120 + 200 + 300);
            CHECK(image_probe_file(path, NULL, &info, &err) == 0);
            CHECKF(info.n_frames == N_ANIM && fabs(info.fps - fps) < 1e-9 && info.loop == 3,
                   "%s probe: %d frames, %g fps, loop %d", fmts[f], info.n_frames, info.fps, info.loop);
            CHECK(image_verify_file(path, NULL, &info, &err) == 0 && info.n_frames == N_ANIM &&
                  fabs(info.fps - fps) < 1e-9);
            CHECK(image_probe_buffer(buf, size, NULL, &info, &err) == 0 && fabs(info.fps - fps) < 1e-9);
            printf("%s probe: %d frames, %.3f fps, loop %d\n", fmts[f], info.n_frames, info.fps, info.loop);
            unlink(path);
        }
        free(buf);
    }
    /* still images: one frame, no fps; loop 0 = forever is kept */
    image_info_t info;
    up_error_t err;
    CHECK(image_probe_file(shared_path("chelsea.png"), NULL, &info, &err) == 0 && info.n_frames == 1 &&
          info.fps == 0 && info.loop == 0);
    up_image_t *img = NULL;
    CHECK(image_load_file_frames(shared_path("chelsea.png"), NULL, 10, &img, &err) == 0 && img &&
          img->n_pages == 1 && !img->delays);
    image_free(img);
    size_t size = 0;
    void *buf = make_animation("gif", 8, 8, 0, &size);
    CHECK(buf && image_load_buffer_frames(buf, size, NULL, 10, &img, &err) == 0 && img && img->loop == 0 &&
          img->n_pages == N_ANIM);
    image_free(img);
    free(buf);

    /* image_new_frames */
    up_image_t *n = image_new_frames(4, 3, 2, 16, 7);
    CHECK(n && n->n_pages == 7 && n->n_frames == 7 && n->delays && n->delays[6] == 0 && n->height == 3 &&
          image_size(n) == 4 * 3 * 2 * 2);
    CHECK(n && (uint8_t *)image_frame_pixels(n, 6) - (uint8_t *)n->pixels == 6 * 48);
    image_free(n);
    n = image_new_frames(4, 3, 3, 8, 1);
    CHECK(n && n->n_pages == 1 && !n->delays);
    image_free(n);
    CHECK(!image_new_frames(4, 3, 3, 8, 0) && !image_new_frames(1 << 20, 1 << 20, 4, 16, 1 << 30));
}

static void test_frames_save(void) {
    static const char *const fmts[] = {"gif", "webp"};
    for (int f = 0; f < 2; f++) {
        size_t size = 0;
        void *src = make_animation(fmts[f], 24, 16, 2, &size);
        up_image_t *img = NULL;
        up_error_t err = {0};
        if (!src || image_load_buffer_frames(src, size, NULL, 100, &img, &err)) {
            CHECKF(0, "%s: %s", fmts[f], err.msg);
            free(src);
            continue;
        }
        free(src);
        /* written as animations, gif and webp alike, from either */
        for (int g = 0; g < 2; g++) {
            void *buf = NULL;
            size_t n = encode(img, fmts[g], g == 1 ? 100 : 0, &buf);
            up_image_t *back = NULL;
            char what[64];
            snprintf(what, sizeof what, "%s -> %s", fmts[f], fmts[g]);
            CHECKF(n && image_load_buffer_frames(buf, n, NULL, 100, &back, &err) == 0, "%s: %s", what,
                   err.msg);
            check_anim(what, back, N_ANIM, 2, 24, 16);
            image_free(back);
            free(buf);
        }
        /* the still formats take the first frame */
        static const char *const still[] = {"png", "jpg", "avif", "ico"};
        for (int s = 0; s < 4; s++) {
            void *buf = NULL;
            size_t n = encode(img, still[s], 0, &buf);
            up_image_t *back = NULL;
            int w = 24, h = 16;
            if (n && !strcmp(still[s], "ico"))
                back = ico_decode(buf, n, &w, &h);
            else if (n)
                CHECK(image_load_buffer_frames(buf, n, NULL, 100, &back, &err) == 0);
            CHECKF(back && back->n_pages == 1 && back->n_frames == 1 && back->width == 24 &&
                       back->height == 16 &&
                       frame_is(back, 0, 0, !strcmp(still[s], "png") || !strcmp(still[s], "ico") ? 0 : 12),
                   "%s -> %s: not the first frame", fmts[f], still[s]);
            image_free(back);
            free(buf);
        }
        /* a 16-bit RGBA animation is written at 8 bits with its alpha */
        up_image_t *deep = image_new_frames(10, 6, 4, 16, 3);
        for (int i = 0; deep && i < 3; i++) {
            uint16_t *p = image_frame_pixels(deep, i);
            for (int k = 0; k < 10 * 6; k++) {
                p[4 * k] = (uint16_t)(anim_colours[i][0] * 257);
                p[4 * k + 1] = (uint16_t)(anim_colours[i][1] * 257);
                p[4 * k + 2] = (uint16_t)(anim_colours[i][2] * 257);
                p[4 * k + 3] = k < 10 ? 0 : 65535; /* the top row transparent */
            }
            deep->delays[i] = 100 * (i + 1);
        }
        void *buf = NULL;
        size_t n = deep ? encode(deep, fmts[f], 100, &buf) : 0;
        up_image_t *back = NULL;
        CHECK(n && image_load_buffer_frames(buf, n, NULL, 10, &back, &err) == 0);
        CHECKF(back && back->n_pages == 3 && back->bands == 4 && back->depth == 8 && back->delays[2] == 300 &&
                   sample(back, 1, 3, 0, 3) == 0 && sample(back, 1, 3, 3, 3) == 255,
               "%s 16-bit RGBA animation", fmts[f]);
        if (back && back->n_pages == 3)
            CHECK(abs((int)sample(back, 2, 5, 4, 2) - anim_colours[2][2]) <= 2);
        image_free(back);
        free(buf);
        image_free(deep);
        image_free(img);
    }
}

/* image_to_srgb converts every frame, each as it converts alone */
static void test_frames_srgb(void) {
    char path[1024];
    snprintf(path, sizeof path, "%s/image/adobe-rgb-1998.icc", test_env("UPRES_TEST_CASES"));
    FILE *f = fopen(path, "rb");
    CHECKF(f != NULL, "cannot open %s", path);
    if (!f)
        return;
    static uint8_t icc[8192];
    size_t icc_n = fread(icc, 1, sizeof icc, f);
    fclose(f);
    up_image_t *a = image_new_frames(6, 4, 3, 8, 3);
    if (!a)
        return;
    for (int i = 0; i < 3; i++) {
        uint8_t *p = image_frame_pixels(a, i);
        for (int k = 0; k < 6 * 4; k++)
            memcpy(p + 3 * k, anim_colours[i + 1], 3);
        a->delays[i] = 100;
    }
    a->icc = malloc(icc_n);
    memcpy(a->icc, icc, icc_n);
    a->icc_size = icc_n;
    up_image_t *one[3];
    up_error_t err;
    for (int i = 0; i < 3; i++) { /* each frame alone, converted */
        up_image_t v = image_frame_view(a, i);
        one[i] = NULL;
        CHECK(image_crop(&v, 0, 0, 6, 4, &one[i], &err) == 0 && one[i] && one[i]->icc &&
              image_to_srgb(one[i], &err) == 0);
    }
    CHECKF(image_to_srgb(a, &err) == 0 && !a->icc && a->n_pages == 3, "%s", err.msg);
    for (int i = 0; i < 3; i++) {
        CHECKF(one[i] && !memcmp(image_frame_pixels(a, i), one[i]->pixels, image_size(a)) &&
                   !frame_is(a, i, i + 1, 0),
               "frame %d: converted %u %u %u", i, sample(a, i, 0, 0, 0), sample(a, i, 0, 0, 1),
               sample(a, i, 0, 0, 2));
        image_free(one[i]);
    }
    image_free(a);
}

int main(void) {
    shared = test_env("UPRES_SHARED_DATA");
    CHECK(image_init() == 0);
    test_names();
    test_encodes();
    test_frames_load();
    test_frames_save();
    test_frames_srgb();
    image_shutdown();
    return test_summary();
}
