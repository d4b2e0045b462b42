/*
 * pngz_test.c - src/image/pngz.c: a PNG's pixel data deflated again.
 *
 * For each kind of PNG libvips writes for us (gray, gray+alpha, RGB, RGBA;
 * 8 and 16 bits; with and without an ICC profile, EXIF and XMP) the
 * recompressed file must decode to exactly the pixels of the stored one,
 * keep every other chunk byte for byte and in order, be smaller, and carry
 * its data in IDAT chunks of at most 1 MiB with correct CRCs. Broken files
 * (cut short, a bad signature, a chunk longer than the file, data that does
 * not inflate, no IDAT, IDATs split by another chunk, bytes after the
 * stream) must fail with UP_ERR_IMAGE and no output.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vips/vips.h>
#include <zlib.h>

#include "image/pngz.h"
#include "test.h"

static uint32_t get32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* An image of w x h with `bands` bands: smooth gradients plus noise (like an upscaled photo). */
static VipsImage *picture(int w, int h, int bands, int depth) {
    VipsImage *x = NULL, *noise = NULL, *sum = NULL, *cast = NULL, *out = NULL, *ramp[4];
    double scale = depth == 16 ? 65535.0 : 255.0;
    if (vips_xyz(&x, w, h, NULL))
        return NULL;
    for (int b = 0; b < bands; b++) {
        VipsImage *band = NULL, *lin = NULL;
        vips_extract_band(x, &band, b % 2, NULL);
        vips_linear1(band, &lin, scale * 0.8 / (b % 2 ? h : w), scale * 0.05 * b, NULL);
        g_object_unref(band);
        ramp[b] = lin;
    }
    VipsImage *joined = NULL;
    vips_bandjoin(ramp, &joined, bands, NULL);
    for (int b = 0; b < bands; b++)
        g_object_unref(ramp[b]);
    vips_gaussnoise(&noise, w, h, "sigma", scale * 0.02, "mean", 0.0, NULL);
    vips_add(joined, noise, &sum, NULL);
    vips_cast(sum, &cast, depth == 16 ? VIPS_FORMAT_USHORT : VIPS_FORMAT_UCHAR, NULL);
    VipsInterpretation in = bands <= 2 ? (depth == 16 ? VIPS_INTERPRETATION_GREY16 : VIPS_INTERPRETATION_B_W)
                                       : (depth == 16 ? VIPS_INTERPRETATION_RGB16 : VIPS_INTERPRETATION_sRGB);
    vips_copy(cast, &out, "interpretation", in, NULL);
    g_object_unref(x);
    g_object_unref(noise);
    g_object_unref(joined);
    g_object_unref(sum);
    g_object_unref(cast);
    return out;
}

typedef struct chunk {
    char type[5];
    const uint8_t *data;
    uint32_t n;
} chunk_t;

/* The file's chunks (at most max), 0 when any is malformed or has a wrong CRC; *n_idat, *idat_max the IDATs.
 */
static int chunks_of(const uint8_t *p, size_t size, chunk_t *c, int max, int *n_idat, uint32_t *idat_max) {
    int n = 0;
    *n_idat = 0;
    *idat_max = 0;
    for (size_t i = 8; i < size; n++) {
        if (n == max || size - i < 12)
            return 0;
        uint32_t len = get32(p + i);
        if (size - i - 12 < len || get32(p + i + 8 + len) != (uint32_t)crc32(0, p + i + 4, 4 + len))
            return 0;
        memcpy(c[n].type, p + i + 4, 4);
        c[n].type[4] = '\0';
        c[n].data = p + i + 8;
        c[n].n = len;
        if (!strcmp(c[n].type, "IDAT")) {
            (*n_idat)++;
            *idat_max = len > *idat_max ? len : *idat_max;
        }
        i += 12 + len;
    }
    return n;
}

/* Whether the two files decode to the same pixels, band format and size. */
static int same_pixels(const void *a, size_t na, const void *b, size_t nb) {
    VipsImage *x = vips_image_new_from_buffer(a, na, "", "fail", TRUE, NULL);
    VipsImage *y = vips_image_new_from_buffer(b, nb, "", "fail", TRUE, NULL);
    size_t sx = 0, sy = 0;
    void *px = x ? vips_image_write_to_memory(x, &sx) : NULL;
    void *py = y ? vips_image_write_to_memory(y, &sy) : NULL;
    int same = px && py && sx == sy && x->Bands == y->Bands && x->BandFmt == y->BandFmt &&
               x->Xsize == y->Xsize && memcmp(px, py, sx) == 0;
    if (!same)
        fprintf(stderr, "pixels differ: %s\n", vips_error_buffer());
    g_free(px);
    g_free(py);
    if (x)
        g_object_unref(x);
    if (y)
        g_object_unref(y);
    return same;
}

static void test_kinds(void) {
    static const struct {
        int w, h, bands, depth, meta;
    } kinds[] = {
        {97, 61, 1, 8, 0},     {97, 61, 2, 8, 0},   {300, 200, 3, 8, 1}, {300, 200, 4, 8, 0},
        {120, 90, 1, 16, 1},   {120, 90, 3, 16, 0}, {64, 33, 4, 16, 1},  {1, 1, 3, 8, 0},
        {1200, 1100, 3, 8, 0}, /* over 1 MiB of data: several IDAT chunks */
    };
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        VipsImage *im = picture(kinds[k].w, kinds[k].h, kinds[k].bands, kinds[k].depth);
        CHECK(im != NULL);
        if (!im)
            continue;
        if (kinds[k].meta) { /* an XMP packet and EXIF as libvips keeps them: chunks to carry over */
            static const char xmp[] = "<x:xmpmeta xmlns:x='adobe:ns:meta/'>pngz test</x:xmpmeta>";
            vips_image_set_blob_copy(im, VIPS_META_XMP_NAME, xmp, sizeof xmp - 1);
            VipsImage *one = NULL, *back = NULL;
            void *jpg = NULL;
            size_t n_jpg = 0;
            const void *exif = NULL;
            size_t n_exif = 0;
            /* libvips makes an EXIF block from exif-* fields when it writes a JPEG */
            CHECK(vips_black(&one, 8, 8, NULL) == 0);
            vips_image_set_string(one, "exif-ifd0-Artist", "Ann Artist");
            CHECK(vips_jpegsave_buffer(one, &jpg, &n_jpg, NULL) == 0);
            back = vips_image_new_from_buffer(jpg, n_jpg, "", NULL);
            CHECK(back && vips_image_get_blob(back, VIPS_META_EXIF_NAME, &exif, &n_exif) == 0);
            if (exif)
                vips_image_set_blob_copy(im, VIPS_META_EXIF_NAME, exif, n_exif);
            g_object_unref(one);
            if (back)
                g_object_unref(back);
            g_free(jpg);
        }
        void *stored = NULL, *out = NULL;
        size_t n_stored = 0, n_out = 0;
        CHECK(vips_pngsave_buffer(im, &stored, &n_stored, "compression", 0, "filter",
                                  VIPS_FOREIGN_PNG_FILTER_AVG, "strip", !kinds[k].meta, NULL) == 0);
        up_error_t err = {0};
        int rc = pngz_recompress(stored, n_stored, &out, &n_out, &err);
        CHECKF(rc == 0 && out, "kind %zu: %s", k, err.msg);
        if (rc == 0) {
            CHECKF(same_pixels(stored, n_stored, out, n_out), "kind %zu", k);
            CHECKF(n_out < n_stored, "kind %zu: %zu bytes from %zu", k, n_out, n_stored);
            static chunk_t a[4096], b[4096];
            int ia, ib;
            uint32_t ma, mb;
            int na = chunks_of(stored, n_stored, a, 4096, &ia, &ma),
                nb = chunks_of(out, n_out, b, 4096, &ib, &mb);
            CHECKF(na > 0 && nb > 0 && ib >= 1 && mb <= (1u << 20), "kind %zu: %d, %d chunks", k, na, nb);
            if (kinds[k].w == 1200)
                CHECKF(ib >= 2, "%d IDAT chunks", ib);
            /* the same chunks but IDAT, in the same order, byte for byte */
            int x = 0, y = 0, meta = 0;
            for (;;) {
                while (x < na && !strcmp(a[x].type, "IDAT"))
                    x++;
                while (y < nb && !strcmp(b[y].type, "IDAT"))
                    y++;
                if (x == na || y == nb)
                    break;
                CHECKF(!strcmp(a[x].type, b[y].type) && a[x].n == b[y].n &&
                           !memcmp(a[x].data, b[y].data, a[x].n),
                       "kind %zu: chunk %s vs %s", k, a[x].type, b[y].type);
                meta +=
                    !strcmp(a[x].type, "iTXt") || !strcmp(a[x].type, "zTXt") || !strcmp(a[x].type, "eXIf");
                x++;
                y++;
            }
            CHECKF(x == na && y == nb, "kind %zu: chunk counts differ", k);
            if (kinds[k].meta)
                CHECKF(meta >= 2, "kind %zu: the XMP and EXIF chunks are missing (%d)", k, meta);
        }
        g_free(stored);
        free(out);
        g_object_unref(im);
    }
}

/* Fails as it should: UP_ERR_IMAGE, no output, the message naming why. */
static void expect_bad(const uint8_t *p, size_t n, const char *why, const char *label) {
    void *out = (void *)1;
    size_t n_out = 1;
    up_error_t err = {0};
    int rc = pngz_recompress(p, n, &out, &n_out, &err);
    CHECKF(rc == UP_ERR_IMAGE && out == NULL && n_out == 0 && strstr(err.msg, why), "%s: rc %d, '%s'", label,
           rc, err.msg);
    if (rc == 0)
        free(out);
}

/* A file built from the stored PNG's chunks with one change; returns its size. */
static size_t rebuild(const chunk_t *c, int n, uint8_t *dst, int drop, const chunk_t *insert_before_last) {
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    size_t at = 8;
    memcpy(dst, sig, 8);
    for (int i = 0; i < n; i++) {
        const chunk_t *one = &c[i];
        chunk_t extra;
        if (i == drop)
            continue;
        for (int pass = 0; pass < 2; pass++) {
            if (pass == 0 && !(insert_before_last && i == n - 1))
                continue;
            if (pass == 0)
                extra = *insert_before_last;
            const chunk_t *w = pass == 0 ? &extra : one;
            put32(dst + at, w->n);
            memcpy(dst + at + 4, w->type, 4);
            memcpy(dst + at + 8, w->data, w->n);
            put32(dst + at + 8 + w->n, (uint32_t)crc32(crc32(0, dst + at + 4, 4), w->data, w->n));
            at += 12 + w->n;
        }
    }
    return at;
}

static void test_broken(void) {
    VipsImage *im = picture(200, 150, 3, 8);
    void *stored = NULL;
    size_t n = 0;
    CHECK(im && vips_pngsave_buffer(im, &stored, &n, "compression", 0, "strip", TRUE, NULL) == 0);
    if (!stored)
        return;
    const uint8_t *s = stored;
    uint8_t *buf = malloc(n + 4096);
    chunk_t c[64];
    int n_idat;
    uint32_t idat_max;
    int nc = chunks_of(s, n, c, 64, &n_idat, &idat_max);
    CHECK(nc >= 3 && !strcmp(c[nc - 1].type, "IEND") && n_idat >= 1);

    expect_bad(s, 7, "not a PNG", "7 bytes");
    memcpy(buf, s, n);
    buf[1] = 'Q';
    expect_bad(buf, n, "not a PNG", "bad signature");
    expect_bad(s, n - 20, "", "cut inside the last chunks");
    memcpy(buf, s, n);
    put32(buf + 8, 0x10000000u); /* IHDR claims 256 MB */
    expect_bad(buf, n, "longer than the file", "chunk length");

    /* no IDAT at all */
    int first_idat = -1;
    for (int i = 0; i < nc && first_idat < 0; i++)
        if (!strcmp(c[i].type, "IDAT"))
            first_idat = i;
    chunk_t kept[64];
    int nk = 0;
    for (int i = 0; i < nc; i++)
        if (strcmp(c[i].type, "IDAT"))
            kept[nk++] = c[i];
    expect_bad(buf, rebuild(kept, nk, buf, -1, NULL), "no IDAT", "no IDAT");

    /* pixel data that does not inflate: a flipped byte in the zlib header */
    uint8_t *bad_data = malloc(c[first_idat].n);
    memcpy(bad_data, c[first_idat].data, c[first_idat].n);
    bad_data[0] ^= 0xff;
    chunk_t saved = c[first_idat];
    c[first_idat].data = bad_data;
    expect_bad(buf, rebuild(c, nc, buf, -1, NULL), "does not inflate", "corrupt zlib header");
    c[first_idat] = saved;

    /* the stream cut short: the last IDAT dropped */
    int last_idat = first_idat + n_idat - 1;
    if (n_idat >= 2) {
        expect_bad(buf, rebuild(c, nc, buf, last_idat, NULL), "ends early", "last IDAT dropped");
    } else { /* one IDAT: keep only its first half */
        c[first_idat].n /= 2;
        expect_bad(buf, rebuild(c, nc, buf, -1, NULL), "ends early", "IDAT halved");
        c[first_idat] = saved;
    }

    /* an IDAT after another chunk that follows the run, and bytes after the stream */
    static const uint8_t junk[] = "junk";
    chunk_t late = {"IDAT", junk, 4};
    expect_bad(buf, rebuild(c, nc, buf, -1, &late), "bytes follow", "IDAT of junk after the stream");
    /* bytes after the end of the stream inside its last IDAT */
    uint8_t *longer = malloc(c[last_idat].n + 4);
    memcpy(longer, c[last_idat].data, c[last_idat].n);
    memcpy(longer + c[last_idat].n, junk, 4);
    chunk_t last_saved = c[last_idat];
    c[last_idat].data = longer;
    c[last_idat].n += 4;
    expect_bad(buf, rebuild(c, nc, buf, -1, NULL), "bytes follow", "junk after the stream in its IDAT");
    c[last_idat] = last_saved;
    free(longer);
    chunk_t text = {"tEXt", (const uint8_t *)"a\0b", 3};
    /* tEXt between the IDATs and IEND, then an IDAT: built by hand */
    chunk_t order[66];
    int no = 0;
    for (int i = 0; i < nc - 1; i++)
        order[no++] = c[i];
    order[no++] = text;
    order[no++] = late;
    order[no++] = c[nc - 1];
    expect_bad(buf, rebuild(order, no, buf, -1, NULL), "not consecutive", "IDAT after tEXt");

    /* and the untouched file still goes through (the rebuild itself is sound) */
    void *out = NULL;
    size_t n_out = 0;
    up_error_t err = {0};
    size_t nb = rebuild(c, nc, buf, -1, NULL);
    CHECKF(pngz_recompress(buf, nb, &out, &n_out, &err) == 0 && same_pixels(s, n, out, n_out), "%s", err.msg);
    free(out);
    free(bad_data);
    free(buf);
    g_free(stored);
    g_object_unref(im);
}

int main(int argc, char **argv) {
    (void)argc;
    if (VIPS_INIT(argv[0]))
        return 1;
    test_kinds();
    test_broken();
    vips_shutdown();
    return test_summary();
}
