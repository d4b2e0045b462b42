/*
 * image.c - safe image load, save and resize over libvips (see image.h).
 *
 * Sits between the bytes a user sent and the upscale pipeline: it turns any
 * readable image into an up_image_t (interleaved RGB or gray, 8 or 16 bits,
 * in its own ICC profile or sRGB, with its EXIF and XMP; the frames of an
 * animation when asked) and back into PNG, JPEG, WebP, AVIF, GIF or ICO,
 * and resamples with libvips' kernels.
 *
 * DESIGN
 *
 * Load runs in three steps, each of which can refuse the input:
 *   1. sniff: libvips picks a loader from the first bytes (never from a file
 *      name, so "x.png" holding a JPEG loads as JPEG); only the loaders in
 *      formats[] are accepted, and libvips' untrusted loaders (ImageMagick,
 *      PDF, SVG, ...) are also blocked in image_init;
 *   2. header: the loader reads only the header; the pixel and frame limits
 *      are checked here, before any decoding, so a 100000x100000 PNG or a
 *      10000-frame GIF costs nothing;
 *   3. decode: the whole image is pulled through the colour pipeline into our
 *      own buffer with vips_image_write, sequentially, so a truncated or
 *      corrupt file fails inside the load call. Loaders run with
 *      fail_on=error, JPEG with fail_on=warning (libjpeg reports a scan cut
 *      short only as a warning) and a second try when the only warnings
 *      are harmless ones (see jpeg_benign).
 * Images that need a rotation or a pass to measure their range are copied
 * into memory first, since sequential loads can be read only once.
 * Probe and verify run steps 1 and 2 the same way (same allow-list, limits
 * and messages) and then stop: probe after the header, reading the shape
 * the load would give from the colour pipeline built but never run;
 * verify after pulling the loader's pixels through vips_min of one band,
 * which keeps no image, so a truncated file fails as in step 3 while only
 * the sequential load's strip cache is held.
 *
 * Colour: the network works on whatever values it is given, so RGB and gray
 * images keep their values and their profile (checked at load by building
 * the transform to sRGB, which image_to_srgb and the savers run later when
 * asked). Only spaces the network cannot take (CMYK, Lab, ...) are
 * converted at load.
 *
 * EXIF on save: libvips rebuilds the EXIF block from the image's
 * "exif-ifdN-*" fields and drops every tag without one, and only its loaders
 * make those fields. So the saver hands the block to libvips' JPEG loader
 * (spliced into a 1x1 JPEG as an APP1 segment, header only) and copies the
 * fields it makes, all but the orientation.
 *
 * Frames: an animated GIF or WebP is opened a second time with libvips'
 * "n" (frames wanted), which decodes them stacked as one tall image with
 * "page-height", "delay" and "loop"; up_image_t keeps that layout, so a
 * load is one materialize and an animated save wraps the buffer as it is
 * and sets the same three fields for libvips' savers.
 *
 * Every VipsImage lives in a vips_object_local_array of one context object
 * per call; unreffing the context frees them all on every path.
 *
 * libvips keeps one error buffer for the whole process. Each failing call
 * takes a copy and clears it (vips_error_buffer_copy); when two threads fail
 * at the same instant one message can carry the other's line as well, which
 * is harmless for a message meant for people.
 */
#include "image/image.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <vips/vips.h>

#include "core/fileio.h"
#include "core/log.h"
#include "core/xmalloc.h"
#include "image/pngz.h"

#define PNG_FILTER VIPS_FOREIGN_PNG_FILTER_AVG /* the row filter of a full-colour PNG */
#define JPEG_DEFAULT_QUALITY 92
#define WEBP_DEFAULT_QUALITY 90
#define AVIF_DEFAULT_QUALITY 60 /* libvips' own is 50; upscaled detail deserves a little more */
#define GIF_DEFAULT_QUALITY 100 /* 256 colours, dithered, no inter-frame loss */
/* libvips' heifsave effort 0..9 (aom's speed 9 - effort); on a 512x512 photo at Q 60
 * effort 4 (libvips' default) took 346 ms and effort 2 55 ms for a file 3% smaller */
#define AVIF_EFFORT 2
#define ICO_MAX_SIDE 256   /* ICONDIRENTRY stores a side in one byte, 0 meaning 256 */
#define FRAME_DELAY_MS 100 /* a frame's delay when the file gives none (browsers' default) */

/* ---- start-up ---------------------------------------------------------- */

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static int init_rc = UP_ERR_BACKEND; /* set by init_vips */

/* libvips and the libraries under it warn through g_log in domain "VIPS";
 * those warnings repeat what the error buffer says, so they go to debug. */
static void vips_log_handler(const gchar *domain, GLogLevelFlags level, const gchar *msg, gpointer user) {
    (void)domain;
    (void)level;
    (void)user;
    char line[512];
    size_t n = 0;
    for (const char *p = msg; p && *p && n < sizeof line - 3; p++) { /* one line */
        if (*p == '\n') {
            if (p[1] && n > 0) {
                line[n++] = ';';
                line[n++] = ' ';
            }
        } else {
            line[n++] = *p;
        }
    }
    line[n] = '\0';
    if (n > 0)
        log_debug("libvips: %s", line);
}

static void init_vips(void) {
    if (VIPS_INIT("upres")) {
        char *why = vips_error_buffer_copy();
        log_error("image: libvips failed to start: %s", why);
        g_free(why);
        return;
    }
    g_log_set_handler("VIPS", G_LOG_LEVEL_MASK | G_LOG_FLAG_FATAL | G_LOG_FLAG_RECURSION, vips_log_handler,
                      NULL);
    /* Jobs run in parallel already; one libvips thread per call keeps the
     * cores for the network. VIPS_CONCURRENCY overrides, as libvips documents. */
    if (!getenv("VIPS_CONCURRENCY"))
        vips_concurrency_set(1);
    /* Each request brings a new image: the operation cache would only hold
     * pixels alive (and point into buffers we free). */
    vips_cache_set_max(0);
    vips_cache_set_max_mem(0);
    vips_cache_set_max_files(0);
    /* Loaders libvips marks untrusted (magick, pdf, svg, jxl, jp2k, ppm, fits,
     * csv, raw, vips, ...) are not fuzzed for hostile input; matrixload is
     * trusted but turns text files into "images". */
    vips_block_untrusted_set(TRUE);
    vips_operation_block_set("VipsForeignLoadMatrix", TRUE);
    init_rc = UP_OK;
}

int image_init(void) {
    pthread_once(&init_once, init_vips);
    return init_rc;
}

void image_shutdown(void) {
    if (init_rc == UP_OK)
        vips_shutdown();
}

/* ---- small helpers ----------------------------------------------------- */

/*
 * libvips' error buffer as one line (lines joined with "; ", duplicates
 * dropped, at most dst_size-1 bytes) into dst, and clear it. Returns the
 * length, 0 when libvips said nothing.
 */
static size_t vips_reason(char *dst, size_t dst_size) {
    char *all = vips_error_buffer_copy(); /* new, and the buffer is cleared */
    size_t n = 0;
    dst[0] = '\0';
    char *save = NULL;
    for (char *line = strtok_r(all, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        while (*line == ' ' || *line == '\t')
            line++;
        size_t len = strlen(line);
        while (len > 0 && (line[len - 1] == ' ' || line[len - 1] == '\r' || line[len - 1] == '\t'))
            line[--len] = '\0';
        if (len == 0 || strstr(dst, line))
            continue;
        int w = snprintf(dst + n, dst_size - n, "%s%s", n ? "; " : "", line);
        if (w < 0 || (size_t)w >= dst_size - n) {
            n = dst_size - 1;
            break;
        }
        n += (size_t)w;
    }
    g_free(all);
    return n;
}

/* Set err from a failed libvips call: "<what>: <libvips' reason>". */
static int vips_fail(up_error_t *err, int code, const char *what) {
    char why[320];
    if (vips_reason(why, sizeof why) == 0)
        snprintf(why, sizeof why, "no details from libvips");
    log_debug("image: %s: %s", what, why);
    return up_error_set(err, code, 0, "%s: %s", what, why);
}

static int depth_of(VipsBandFormat fmt) { return fmt == VIPS_FORMAT_USHORT ? 16 : 8; }

static VipsBandFormat band_format(int depth) { return depth == 16 ? VIPS_FORMAT_USHORT : VIPS_FORMAT_UCHAR; }

static VipsInterpretation interpretation(int bands, int depth) {
    if (bands <= 2)
        return depth == 16 ? VIPS_INTERPRETATION_GREY16 : VIPS_INTERPRETATION_B_W;
    return depth == 16 ? VIPS_INTERPRETATION_RGB16 : VIPS_INTERPRETATION_sRGB;
}

static int valid_image(const up_image_t *img) {
    return img && img->pixels && img->width > 0 && img->height > 0 && img->bands >= 1 && img->bands <= 4 &&
           (img->depth == 8 || img->depth == 16) && img->n_pages >= 0 && (img->n_pages <= 1 || img->delays);
}

/* Frames held: n_pages, where 0 (a struct filled by hand) means 1. */
static int n_pages_of(const up_image_t *img) { return img->n_pages > 1 ? img->n_pages : 1; }

/* A VipsImage over the first n_pages frames of img's pixels (borrowed: img
 * must outlive it), stacked (width x height*n_pages), tagged with the right
 * interpretation; stored in *out, a slot of a local array. */
static int wrap_frames(VipsObject *ctx, const up_image_t *img, int n_pages, VipsImage **out,
                       up_error_t *err) {
    VipsImage **t = (VipsImage **)vips_object_local_array(ctx, 1);
    assert(n_pages >= 1 && n_pages <= n_pages_of(img));
    t[0] = vips_image_new_from_memory(img->pixels, image_size(img) * (size_t)n_pages, img->width,
                                      img->height * n_pages, img->bands, band_format(img->depth));
    if (!t[0] || vips_copy(t[0], out, "interpretation", interpretation(img->bands, img->depth), NULL))
        return vips_fail(err, UP_ERR_IMAGE, "cannot wrap pixels for libvips");
    return UP_OK;
}

/* The first frame of img as a VipsImage (see wrap_frames). */
static int wrap_image(VipsObject *ctx, const up_image_t *img, VipsImage **out, up_error_t *err) {
    return wrap_frames(ctx, img, 1, out, err);
}

/*
 * Compute in (uchar or ushort, 1..4 bands) into a new up_image_t. Errors
 * raised while pixels are produced (a truncated file, a failing decoder)
 * surface here, described as "<what>: <reason>".
 */
static int materialize(VipsObject *ctx, VipsImage *in, const char *what, up_image_t **out, up_error_t *err) {
    assert(in->BandFmt == VIPS_FORMAT_UCHAR || in->BandFmt == VIPS_FORMAT_USHORT);
    assert(in->Bands >= 1 && in->Bands <= 4);
    int depth = depth_of(in->BandFmt);
    up_image_t *img = image_new(in->Xsize, in->Ysize, in->Bands, depth);
    if (!img)
        return up_error_set(err, UP_ERR_NOMEM, 0, "cannot allocate a %dx%d image (%d bands, %d-bit)",
                            in->Xsize, in->Ysize, in->Bands, depth);
    /* libvips writes straight into our buffer (as vips_image_write_to_memory
     * does into its own), so pixels are never copied twice */
    VipsImage **t = (VipsImage **)vips_object_local_array(ctx, 1);
    t[0] = vips_image_new_from_memory(img->pixels, image_size(img), img->width, img->height, img->bands,
                                      in->BandFmt);
    if (!t[0] || vips_image_write(in, t[0])) {
        image_free(img);
        return vips_fail(err, UP_ERR_IMAGE, what);
    }
    *out = img;
    return UP_OK;
}

/* ---- image objects ----------------------------------------------------- */

up_image_t *image_new_frames(int width, int height, int bands, int depth, int n_pages) {
    if (width < 1 || height < 1 || bands < 1 || bands > 4 || (depth != 8 && depth != 16) || n_pages < 1)
        return NULL;
    size_t n;
    if (up_mul_overflow((size_t)width, (size_t)height, &n) ||
        up_mul_overflow(n, (size_t)bands * (size_t)(depth / 8), &n) ||
        up_mul_overflow(n, (size_t)n_pages, &n))
        return NULL;
    up_image_t *img = calloc(1, sizeof *img);
    if (!img)
        return NULL;
    img->pixels = calloc(n, 1);
    if (!img->pixels || (n_pages > 1 && !(img->delays = calloc((size_t)n_pages, sizeof *img->delays)))) {
        free(img->pixels);
        free(img);
        return NULL;
    }
    img->width = width;
    img->height = height;
    img->bands = bands;
    img->depth = depth;
    img->n_frames = n_pages;
    img->n_pages = n_pages;
    return img;
}

up_image_t *image_new(int width, int height, int bands, int depth) {
    return image_new_frames(width, height, bands, depth, 1);
}

void image_free(up_image_t *img) {
    if (!img)
        return;
    free(img->pixels);
    free(img->delays);
    free(img->icc);
    free(img->exif);
    free(img->xmp);
    free(img);
}

up_image_t image_frame_view(const up_image_t *img, int i) {
    assert(img && i >= 0 && i < n_pages_of(img));
    up_image_t v = *img;
    v.pixels = image_frame_pixels(img, i);
    v.n_pages = 1;
    v.delays = NULL;
    v.loop = 0;
    return v;
}

void image_frames_keep(up_image_t *img, int n) {
    assert(img && n >= 1 && n <= n_pages_of(img));
    if (n == n_pages_of(img))
        return;
    void *smaller = realloc(img->pixels, image_size(img) * (size_t)n);
    if (smaller)
        img->pixels = smaller;
    img->n_pages = n;
    if (n == 1) {
        free(img->delays);
        img->delays = NULL;
        img->loop = 0;
    }
}

/* A malloc()ed copy of size bytes at p into *out (NULL when p is NULL or size 0). */
static int blob_dup(const void *p, size_t size, void **out) {
    *out = NULL;
    if (!p || size == 0)
        return UP_OK;
    if (!(*out = malloc(size)))
        return UP_ERR_NOMEM;
    memcpy(*out, p, size);
    return UP_OK;
}

int image_copy_metadata(up_image_t *dst, const up_image_t *src) {
    assert(dst && src);
    void *icc, *exif = NULL, *xmp = NULL;
    if (blob_dup(src->icc, src->icc_size, &icc) || blob_dup(src->exif, src->exif_size, &exif) ||
        blob_dup(src->xmp, src->xmp_size, &xmp))
        goto fail;
    free(dst->icc);
    free(dst->exif);
    free(dst->xmp);
    dst->icc = icc;
    dst->icc_size = icc ? src->icc_size : 0;
    dst->exif = exif;
    dst->exif_size = exif ? src->exif_size : 0;
    dst->xmp = xmp;
    dst->xmp_size = xmp ? src->xmp_size : 0;
    return UP_OK;
fail:
    free(icc);
    free(exif);
    free(xmp);
    return UP_ERR_NOMEM;
}

size_t image_size(const up_image_t *img) {
    return (size_t)img->width * (size_t)img->height * (size_t)img->bands * (size_t)(img->depth / 8);
}

/* ---- load -------------------------------------------------------------- */

/*
 * The formats we accept, by libvips loader class (vips_foreign_find_load_*
 * answers with the class name, "VipsForeignLoadPngSource"). Anything else
 * libvips might sniff is refused even when its loader is not blocked.
 */
static const struct {
    const char *loader; /* class name prefix */
    const char *name;   /* up_image_t.format */
    const char *label;  /* for messages */
    const char *magic;  /* leading bytes, to name a file libvips cannot open */
    size_t n_magic;
} formats[] = {
    {"VipsForeignLoadJpeg", "jpg", "JPEG", "\xff\xd8\xff", 3},
    {"VipsForeignLoadPng", "png", "PNG", "\x89PNG\r\n\x1a\n", 8},
    {"VipsForeignLoadWebp", "webp", "WebP", NULL, 0}, /* RIFF is not only WebP */
    {"VipsForeignLoadTiff", "tiff", "TIFF", "II*\0", 4},
    {"VipsForeignLoadTiff", "tiff", "TIFF", "MM\0*", 4},
    {"VipsForeignLoadNsgif", "gif", "GIF", "GIF8", 4},
    {"VipsForeignLoadHeif", "heif", "HEIF", NULL, 0},
};
#define N_FORMATS (sizeof formats / sizeof formats[0])

/* Index into formats[] for a loader class name, or -1. */
static int format_index(const char *loader) {
    for (size_t i = 0; i < N_FORMATS; i++)
        if (strncmp(loader, formats[i].loader, strlen(formats[i].loader)) == 0)
            return (int)i;
    return -1;
}

/* Index into formats[] for data that starts with a known signature, or -1. */
static int format_index_magic(const unsigned char *head, size_t n) {
    for (size_t i = 0; i < N_FORMATS; i++)
        if (formats[i].magic && n >= formats[i].n_magic &&
            memcmp(head, formats[i].magic, formats[i].n_magic) == 0)
            return (int)i;
    return -1;
}

static int is_colour_space(VipsInterpretation interp) {
    switch (interp) {
    case VIPS_INTERPRETATION_XYZ:
    case VIPS_INTERPRETATION_LAB:
    case VIPS_INTERPRETATION_CMYK:
    case VIPS_INTERPRETATION_LABQ:
    case VIPS_INTERPRETATION_RGB:
    case VIPS_INTERPRETATION_CMC:
    case VIPS_INTERPRETATION_LCH:
    case VIPS_INTERPRETATION_LABS:
    case VIPS_INTERPRETATION_sRGB:
    case VIPS_INTERPRETATION_YXY:
    case VIPS_INTERPRETATION_RGB16:
    case VIPS_INTERPRETATION_scRGB:
    case VIPS_INTERPRETATION_HSV: return 1;
    default: return 0;
    }
}

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/*
 * 1 when an ICC profile is an RGB profile whose description starts with
 * "sRGB" ("sRGB IEC61966-2.1", "sRGB built-in", ...): converting from it
 * to sRGB would only add rounding, and costs a colour transform per pixel.
 * The bytes come from the user's file: every offset is checked.
 *
 *   offset  size  ICC.1:2010 field
 *   16      4     data colour space, "RGB "
 *   128     4     tag count, then 12-byte entries: signature, offset, size
 *   tag "desc", type "desc" (v2): +8 ASCII length, +12 ASCII text
 *   tag "desc", type "mluc" (v4): +8 record count, +16 records of 12 bytes:
 *                                 language, country, length, offset (UTF-16BE)
 */
static int icc_is_srgb(const uint8_t *p, size_t n) {
    if (n < 132 || memcmp(p + 16, "RGB ", 4) != 0)
        return 0;
    uint32_t count = be32(p + 128);
    if (count > (n - 132) / 12)
        return 0;
    for (uint32_t i = 0; i < count; i++) {
        const uint8_t *e = p + 132 + 12 * (size_t)i;
        if (memcmp(e, "desc", 4) != 0)
            continue;
        uint32_t off = be32(e + 4), size = be32(e + 8);
        if (off > n || size > n - off || size < 12)
            return 0;
        const uint8_t *t = p + off;
        char text[5] = {0};
        if (memcmp(t, "desc", 4) == 0) {
            uint32_t len = be32(t + 8);
            if (len > size - 12)
                return 0;
            memcpy(text, t + 12, len < 4 ? len : 4);
        } else if (memcmp(t, "mluc", 4) == 0 && size >= 28 && be32(t + 8) >= 1) {
            uint32_t len = be32(t + 20), soff = be32(t + 24);
            if (soff > size || len > size - soff)
                return 0;
            for (uint32_t k = 0; k < 4 && 2 * k + 1 < len; k++)
                text[k] = t[soff + 2 * k] ? '?' : (char)t[soff + 2 * k + 1];
        } else {
            return 0;
        }
        return memcmp(text, "sRGB", 4) == 0;
    }
    return 0;
}

/* in's ICC profile (borrowed from in) into *data and *size; 0 when it has none. */
static int get_profile(VipsImage *in, const void **data, size_t *size) {
    return vips_image_get_typeof(in, VIPS_META_ICC_NAME) &&
           vips_image_get_blob(in, VIPS_META_ICC_NAME, data, size) == 0 && *size > 0;
}

/* The ICC data colour space of a profile ("RGB ", "GRAY", "CMYK", ...), or "". */
static void icc_space(const void *icc, size_t size, char space[5]) {
    memset(space, 0, 5);
    if (icc && size >= 20)
        memcpy(space, (const char *)icc + 16, 4);
}

/*
 * Convert in (any coding, band format and colour space) to what up_image_t
 * holds: RGB or gray, 1..4 bands with alpha last, uchar or ushort. The
 * result goes to *out (borrowed: it lives in ctx, as do all intermediate
 * images). *keep_icc is set to 1 when the values are left in the profile
 * embedded in in, which the caller then keeps; 0 when they are sRGB (or
 * gray). decode_what describes a decode failure, which can happen here when
 * in has to be measured first; with measure 0 nothing is measured (float
 * samples are only cast), which is enough to learn the shape of the result
 * from the header.
 */
static int convert(VipsObject *ctx, VipsImage *in, const char *decode_what, int measure, VipsImage **out,
                   int *keep_icc, up_error_t *err) {
    VipsImage **t = (VipsImage **)vips_object_local_array(ctx, 12);
    *keep_icc = 0;

    if (in->Coding != VIPS_CODING_NONE) {
        if (vips_image_decode(in, &t[0]))
            return vips_fail(err, UP_ERR_IMAGE, decode_what);
        in = t[0];
    }
    if (vips_band_format_iscomplex(in->BandFmt))
        return up_error_set(err, UP_ERR_IMAGE, 0, "complex-valued images are not supported");

    /* 8-bit sources stay 8-bit; 16-bit, 32-bit and float ones become 16-bit. */
    int depth = in->BandFmt == VIPS_FORMAT_UCHAR || in->BandFmt == VIPS_FORMAT_CHAR ? 8 : 16;
    VipsInterpretation interp = vips_image_guess_interpretation(in);
    int gray = interp == VIPS_INTERPRETATION_B_W || interp == VIPS_INTERPRETATION_GREY16 ||
               (!is_colour_space(interp) && in->Bands <= 2);
    int colour_done = 0;

    /* A profile describes device values: 8/16-bit RGB, gray or CMYK. Float
     * and Lab-like images already say what their numbers mean (and libvips
     * attaches profiles to them that do not apply). */
    int integer = in->BandFmt == VIPS_FORMAT_UCHAR || in->BandFmt == VIPS_FORMAT_USHORT;
    int device = integer && (interp == VIPS_INTERPRETATION_sRGB || interp == VIPS_INTERPRETATION_RGB ||
                             interp == VIPS_INTERPRETATION_RGB16 || interp == VIPS_INTERPRETATION_CMYK ||
                             interp == VIPS_INTERPRETATION_MULTIBAND);
    int cmyk = interp == VIPS_INTERPRETATION_CMYK;
    const void *icc;
    size_t icc_size;
    if (!gray && device && cmyk) {
        /* CMYK with no profile of its own goes through libvips' built-in one */
        if (vips_icc_transform(in, &t[1], "srgb", "embedded", TRUE, "input_profile", "cmyk", "intent",
                               VIPS_INTENT_RELATIVE, "black_point_compensation", TRUE, "depth", depth,
                               NULL) == 0) {
            in = t[1];
            colour_done = 1;
        } else {
            char why[320];
            vips_reason(why, sizeof why);
            log_debug("image: ignoring an unusable ICC profile: %s", why);
        }
    } else if ((gray ? integer : device) && get_profile(in, &icc, &icc_size)) {
        /* RGB or gray: the values stay as they are, in their profile, when
         * it is one libvips can convert from later (RGB for colour, gray
         * for gray: building the transform checks both, without running it) */
        char space[5];
        icc_space(icc, icc_size, space);
        if (strcmp(space, gray ? "GRAY" : "RGB ") == 0 &&
            vips_icc_transform(in, &t[1], "srgb", "embedded", TRUE, "intent", VIPS_INTENT_RELATIVE, NULL) ==
                0) {
            *keep_icc = 1;
        } else {
            char why[320];
            if (vips_reason(why, sizeof why) == 0)
                snprintf(why, sizeof why, "a '%s' profile on a %s image", space, gray ? "gray" : "colour");
            log_debug("image: ignoring an unusable ICC profile: %s", why);
        }
    }
    if (!gray && !colour_done && is_colour_space(interp) && interp != VIPS_INTERPRETATION_sRGB &&
        interp != VIPS_INTERPRETATION_RGB && interp != VIPS_INTERPRETATION_RGB16) {
        VipsInterpretation to = depth == 16 ? VIPS_INTERPRETATION_RGB16 : VIPS_INTERPRETATION_sRGB;
        if (vips_colourspace(in, &t[2], to, "source_space", interp, NULL))
            return vips_fail(err, UP_ERR_IMAGE, "cannot convert the image to sRGB");
        in = t[2];
    }

    /* One alpha band at most: extra bands (TIFF extra samples) are dropped. */
    int keep = gray ? (in->Bands >= 2 ? 2 : 1) : (in->Bands >= 4 ? 4 : 3);
    if (in->Bands < keep)
        return up_error_set(err, UP_ERR_IMAGE, 0, "a %d-band image is not supported", in->Bands);
    if (in->Bands > keep) {
        if (vips_extract_band(in, &t[3], 0, "n", keep, NULL))
            return vips_fail(err, UP_ERR_IMAGE, "cannot select the colour bands");
        in = t[3];
    }

    switch (in->BandFmt) {
    case VIPS_FORMAT_UCHAR:
    case VIPS_FORMAT_USHORT: break;
    case VIPS_FORMAT_CHAR: /* signed: negatives clip to 0 */
        if (vips_cast(in, &t[4], VIPS_FORMAT_UCHAR, NULL))
            return vips_fail(err, UP_ERR_IMAGE, "cannot convert the image to 8 bits");
        in = t[4];
        break;
    case VIPS_FORMAT_SHORT:
    case VIPS_FORMAT_UINT:
    case VIPS_FORMAT_INT: {
        /* 32-bit: keep the top 16 bits of the range; negatives clip to 0 */
        int shift = in->BandFmt == VIPS_FORMAT_UINT ? 16 : in->BandFmt == VIPS_FORMAT_INT ? 15 : 0;
        if (shift) {
            if (vips_rshift_const1(in, &t[5], shift, NULL))
                return vips_fail(err, UP_ERR_IMAGE, "cannot convert the image to 16 bits");
            in = t[5];
        }
        if (vips_cast(in, &t[6], VIPS_FORMAT_USHORT, NULL))
            return vips_fail(err, UP_ERR_IMAGE, "cannot convert the image to 16 bits");
        in = t[6];
        break;
    }
    default: {
        if (!measure) { /* the shape only: 16 bits, no pass over the pixels */
            if (vips_cast(in, &t[9], VIPS_FORMAT_USHORT, NULL))
                return vips_fail(err, UP_ERR_IMAGE, "cannot convert the image to 16 bits");
            in = t[9];
            break;
        }
        /* Float samples may be 0..1 (most float TIFFs) or 0..255 (libvips'
         * own convention): measure, which needs the pixels in memory. */
        double max;
        if (!(t[7] = vips_image_copy_memory(in)))
            return vips_fail(err, UP_ERR_IMAGE, decode_what);
        if (vips_max(t[7], &max, NULL))
            return vips_fail(err, UP_ERR_IMAGE, decode_what);
        double scale = max <= 1.0 ? 65535.0 : max <= 255.0 ? 257.0 : 1.0;
        if (vips_linear1(t[7], &t[8], scale, 0.5, NULL) || vips_cast(t[8], &t[9], VIPS_FORMAT_USHORT, NULL))
            return vips_fail(err, UP_ERR_IMAGE, "cannot convert the image to 16 bits");
        in = t[9];
        break;
    }
    }
    *out = in;
    return UP_OK;
}

/*
 * libvips loads a GIF as RGBA when any frame has transparency, even if the
 * first frame has none; drop an alpha band that is opaque everywhere (in
 * every frame held).
 */
static void drop_opaque_alpha(up_image_t *img) {
    if (img->bands != 4 || img->depth != 8)
        return;
    uint8_t *p = img->pixels;
    size_t n = (size_t)img->width * (size_t)img->height * (size_t)n_pages_of(img);
    for (size_t i = 0; i < n; i++)
        if (p[i * 4 + 3] != 255)
            return;
    for (size_t i = 0; i < n; i++)
        memmove(p + i * 3, p + i * 4, 3);
    img->bands = 3;
    void *smaller = realloc(img->pixels, n * 3);
    if (smaller)
        img->pixels = smaller;
}

/*
 * libjpeg warnings that do not mean missing pixels. JPEG loads with
 * fail_on=warning, because libjpeg reports a scan that ends early ("premature
 * end of data segment") only as a warning and fills the rest with gray; a
 * file whose first warning is one of these is loaded again with
 * fail_on=error.
 */
static const char *const jpeg_benign[] = {
    "extraneous bytes before marker", "Inconsistent progression sequence",
    "Unknown Adobe color transform",  "Invalid SOS parameters for sequential JPEG",
    "unknown JFIF revision number",   "thumbnail image size does not match",
};

/* 1 when every libjpeg message in msg ("...; VipsJpeg: ...; ...") is benign. */
static int is_benign_jpeg_warning(const char *msg) {
    int n_benign = 0;
    for (const char *p = strstr(msg, "VipsJpeg: "); p; p = strstr(p + 1, "VipsJpeg: ")) {
        const char *end = strstr(p, "; ");
        size_t len = end ? (size_t)(end - p) : strlen(p);
        int benign = 0;
        for (size_t i = 0; i < sizeof jpeg_benign / sizeof jpeg_benign[0] && !benign; i++) {
            const char *hit = strstr(p, jpeg_benign[i]);
            benign = hit && (size_t)(hit - p) < len;
        }
        if (!benign)
            return 0;
        n_benign++;
    }
    return n_benign > 0;
}

/* How far a load goes: the pixels (image_load_*), the header only
 * (image_probe_*), or every pixel decoded and dropped (image_verify_*). */
typedef enum load_mode { LOAD_PIXELS, LOAD_HEADER, LOAD_VERIFY } load_mode_t;

static int decode_source(VipsSource *src, int fi, VipsFailOn fail_on, const image_limits_t *lim,
                         load_mode_t mode, int want_frames, up_image_t **out, image_info_t *info,
                         up_error_t *err);

static uint16_t get16(const uint8_t *p, int le) {
    return le ? (uint16_t)(p[0] | p[1] << 8) : (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t get32(const uint8_t *p, int le) {
    return le ? (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24 : be32(p);
}

/*
 * Set the Orientation tag (0x0112) of IFD0 to 1 in an EXIF block (the
 * user's bytes: every offset is checked), once the loader has applied it.
 *
 *   "Exif\0\0" (optional), then TIFF: "II" or "MM", 42, offset of IFD0;
 *   IFD: entry count (2 bytes), 12-byte entries: tag, type, count, value
 *   (a SHORT value sits in the first 2 bytes of the 4-byte value field)
 */
static void exif_reset_orientation(uint8_t *p, size_t n) {
    if (n >= 6 && memcmp(p, "Exif\0\0", 6) == 0)
        p += 6, n -= 6;
    if (n < 8 || (memcmp(p, "II*\0", 4) != 0 && memcmp(p, "MM\0*", 4) != 0))
        return;
    int le = p[0] == 'I';
    uint32_t ifd = get32(p + 4, le);
    if (ifd > n - 2)
        return;
    uint32_t count = get16(p + ifd, le);
    if (count > (n - ifd - 2) / 12)
        return;
    for (uint32_t i = 0; i < count; i++) {
        uint8_t *e = p + ifd + 2 + 12 * (size_t)i;
        if (get16(e, le) == 0x0112 && get16(e + 2, le) == 3 && get32(e + 4, le) == 1) {
            e[8] = le ? 1 : 0;
            e[9] = le ? 0 : 1;
        }
    }
}

/* Set tiff:Orientation to 1 in an XMP packet, as an attribute
 * (tiff:Orientation="6") or an element (<tiff:Orientation>6<). */
static void xmp_reset_orientation(uint8_t *p, size_t n) {
    static const char key[] = "tiff:Orientation";
    const size_t k = sizeof key - 1;
    uint8_t *hit, *end = p + n;
    while ((hit = memmem(p, (size_t)(end - p), key, k))) {
        uint8_t *v = hit + k;
        while (v < end && (*v == ' ' || *v == '=' || *v == '"' || *v == '\'' || *v == '>'))
            v++;
        if (v < end && *v >= '2' && *v <= '8' && (v + 1 == end || v[1] < '0' || v[1] > '9'))
            *v = '1';
        p = hit + k;
    }
}

/* Copy a blob field of v (NULL/0 when absent) into a new buffer. */
static int take_blob(VipsImage *v, const char *name, void **out, size_t *size) {
    const void *data;
    *out = NULL;
    *size = 0;
    if (!vips_image_get_typeof(v, name) || vips_image_get_blob(v, name, &data, size) || *size == 0) {
        *size = 0;
        return UP_OK;
    }
    if (blob_dup(data, *size, out)) {
        *size = 0;
        return UP_ERR_NOMEM;
    }
    return UP_OK;
}

/*
 * Copy the loaded image's ICC profile (only when the values were kept in
 * it), EXIF and XMP into img, with their orientation reset: it has been
 * applied.
 */
static int take_metadata(VipsImage *v, int keep_icc, up_image_t *img, up_error_t *err) {
    if ((keep_icc && take_blob(v, VIPS_META_ICC_NAME, &img->icc, &img->icc_size)) ||
        take_blob(v, VIPS_META_EXIF_NAME, &img->exif, &img->exif_size) ||
        take_blob(v, VIPS_META_XMP_NAME, &img->xmp, &img->xmp_size))
        return up_error_set(err, UP_ERR_NOMEM, 0, "cannot allocate the image's metadata");
    if (img->exif)
        exif_reset_orientation(img->exif, img->exif_size);
    if (img->xmp)
        xmp_reset_orientation(img->xmp, img->xmp_size);
    return UP_OK;
}

/* The format name of a loaded file: formats[fi].name, except "avif" for
 * HEIF holding AV1. */
static const char *source_format(VipsImage *in, int fi) {
    const char *compression;
    if (strcmp(formats[fi].name, "heif") == 0 && vips_image_get_typeof(in, "heif-compression") &&
        vips_image_get_string(in, "heif-compression", &compression) == 0 && strcmp(compression, "av1") == 0)
        return "avif";
    return formats[fi].name;
}

/* Sniff src, then decode it (mode says how far; want_frames: at most that
 * many frames of an animation) with the format's fail_on policy. */
static int load_source(VipsSource *src, load_mode_t mode, const image_limits_t *lim, int want_frames,
                       up_image_t **out, image_info_t *info, up_error_t *err) {
    const char *loader = vips_foreign_find_load_source(src);
    int fi = loader ? format_index(loader) : -1;
    if (fi < 0) {
        /* name the format when the bytes say what they meant to be */
        unsigned char head[8];
        gint64 n = loader ? 0 : (vips_source_rewind(src) ? 0 : vips_source_read(src, head, sizeof head));
        int mi = n > 0 ? format_index_magic(head, (size_t)n) : -1;
        vips_error_clear();
        if (mi >= 0)
            return up_error_set(err, UP_ERR_IMAGE, 0, "truncated or corrupt %s data: libvips cannot open it",
                                formats[mi].label);
        return up_error_set(err, UP_ERR_IMAGE, 0,
                            "not an image libvips can read (unknown or unsupported format)");
    }
    /* fail_on=error elsewhere: truncation and decoder errors fail the load,
     * warnings (odd ancillary PNG chunks, ...) do not. */
    int jpeg = strcmp(formats[fi].name, "jpg") == 0;
    up_error_t e = {0};
    int rc = decode_source(src, fi, jpeg ? VIPS_FAIL_ON_WARNING : VIPS_FAIL_ON_ERROR, lim, mode, want_frames,
                           out, info, &e);
    if (rc == UP_ERR_IMAGE && jpeg && is_benign_jpeg_warning(e.msg)) {
        log_debug("image: loading a JPEG despite: %s", e.msg);
        rc = decode_source(src, fi, VIPS_FAIL_ON_ERROR, lim, mode, want_frames, out, info, &e);
    }
    if (rc && err)
        *err = e;
    return rc;
}

/*
 * Verify passes at once are bounded by the memory their decoders hold,
 * not by their count: a sequential PNG, JPEG or TIFF load holds a strip
 * of rows (libvips' line cache), while GIF, WebP, HEIF and interlaced PNG
 * or progressive JPEG decode whole frames; eight 6300x6300 uploads
 * verified at once would hold 80 MB as PNGs and 2.4 GB as WebPs. A pass
 * waits until its estimate fits in VERIFY_BUDGET beside the others; one
 * always runs, however large (the worker will need as much to load it).
 */
#define VERIFY_BUDGET ((uint64_t)32 << 20) /* bytes of decoder memory for all verify passes at once */
#define STRIP_ROWS 544 /* rows a sequential load holds (libvips 8.14: 9.8 MB for 6300 x RGB) */

static pthread_mutex_t budget_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t budget_cond = PTHREAD_COND_INITIALIZER;
static uint64_t budget_used; /* bytes, under budget_lock */

static void budget_take(uint64_t n) {
    pthread_mutex_lock(&budget_lock);
    while (budget_used > 0 && budget_used + n > VERIFY_BUDGET)
        pthread_cond_wait(&budget_cond, &budget_lock);
    budget_used += n;
    pthread_mutex_unlock(&budget_lock);
}

static void budget_give(uint64_t n) {
    pthread_mutex_lock(&budget_lock);
    assert(budget_used >= n);
    budget_used -= n;
    pthread_cond_broadcast(&budget_cond);
    pthread_mutex_unlock(&budget_lock);
}

/* Bytes that decoding in (the loader's image of format fi) holds at its
 * peak: estimates from measuring libvips 8.14 on 6300x6300 images. */
static uint64_t decode_memory(VipsImage *in, int fi) {
    uint64_t px = (uint64_t)in->Xsize * (uint64_t)in->Ysize, pel = (uint64_t)VIPS_IMAGE_SIZEOF_PEL(in);
    const char *name = formats[fi].name;
    int interlaced = 0;
    if (vips_image_get_typeof(in, "interlaced"))
        vips_image_get_int(in, "interlaced", &interlaced);
    if (strcmp(name, "gif") == 0) /* an RGBA canvas */
        return px * 4;
    if (strcmp(name, "webp") == 0 || strcmp(name, "heif") == 0) /* RGBA, decoded then copied */
        return px * 8;
    uint64_t rows = interlaced ? (uint64_t)in->Ysize : VIPS_MIN((uint64_t)in->Ysize, STRIP_ROWS);
    return rows * (uint64_t)in->Xsize * pel;
}

/* libvips' "loop" (0 = forever; 0 when absent). */
static int get_loop(VipsImage *in) {
    int loop = 0;
    if (vips_image_get_typeof(in, "loop") && vips_image_get_int(in, "loop", &loop) == 0 && loop > 0)
        return loop;
    return 0;
}

/*
 * Fill *info from in, the loader's image with only its header read, with
 * what the load would make of it: bands and depth from convert() on the
 * header (nothing measured), the size as seen (orientations 5-8 are a
 * quarter turn). With stream, every pixel of in is then pulled through a
 * reduction that keeps none (vips_min of one band, in strips of the
 * sequential load: memory O(width x strip), within VERIFY_BUDGET), so that
 * a truncated or corrupt file fails here as it fails in the load; and a GIF's alpha band, found
 * opaque everywhere, is dropped as drop_opaque_alpha does after a load.
 */
static int describe(VipsObject *ctx, VipsImage *in, int fi, int n_frames, int stream, const char *what,
                    image_info_t *info, up_error_t *err) {
    VipsImage **t = (VipsImage **)vips_object_local_array(ctx, 2);
    VipsImage *x;
    int keep_icc, rc = convert(ctx, in, what, 0, &x, &keep_icc, err); /* x: borrowed from ctx */
    if (rc)
        return rc;
    int orientation = vips_image_get_orientation(in), swap = orientation >= 5 && orientation <= 8;
    image_info_t i = {.width = swap ? in->Ysize : in->Xsize,
                      .height = swap ? in->Xsize : in->Ysize,
                      .bands = x->Bands,
                      .depth = depth_of(x->BandFmt),
                      .n_frames = n_frames,
                      .loop = n_frames > 1 ? get_loop(in) : 0};
    if (n_frames > 1) { /* the header holds every frame's delay (GIF and WebP count frames) */
        int *d = NULL, n = 0;
        long long sum = 0;
        if (vips_image_get_typeof(in, "delay") && vips_image_get_array_int(in, "delay", &d, &n) == 0) {
            n = VIPS_MIN(n, n_frames);
            for (int k = 0; k < n; k++)
                sum += d[k] > 0 ? d[k] : 0;
        }
        i.fps = sum > 0 ? 1000.0 * n / (double)sum : 0;
    }
    snprintf(i.format, sizeof i.format, "%s", source_format(in, fi));
    if (stream) {
        VipsImage *d = in;
        double min;
        if (d->Coding != VIPS_CODING_NONE) {
            if (vips_image_decode(d, &t[0]))
                return vips_fail(err, UP_ERR_IMAGE, what);
            d = t[0];
        }
        uint64_t need = decode_memory(in, fi);
        budget_take(need);
        int failed = vips_extract_band(d, &t[1], d->Bands - 1, NULL) || vips_min(t[1], &min, NULL);
        budget_give(need);
        if (failed)
            return vips_fail(err, UP_ERR_IMAGE, what);
        if (strcmp(i.format, "gif") == 0 && i.bands == 4 && i.depth == 8 && min >= 255.0)
            i.bands = 3;
    }
    *info = i;
    return UP_OK;
}

/*
 * How many frames of a file with n_frames frames (header in in, format fi)
 * to decode when want are asked for: 1 unless it is an animated GIF or
 * WebP; an animated WebP with an orientation to apply keeps its first
 * frame only (vips_autorot turns a whole image, not frame by frame).
 */
static int frames_to_load(VipsImage *in, int fi, int n_frames, int want) {
    const char *name = formats[fi].name;
    if (want <= 1 || n_frames <= 1 || (strcmp(name, "gif") != 0 && strcmp(name, "webp") != 0))
        return 1;
    int orientation = vips_image_get_orientation(in);
    if (orientation > 1 && orientation <= 8) {
        log_debug("image: an animated %s with EXIF orientation %d: its first frame only", formats[fi].label,
                  orientation);
        return 1;
    }
    return want < n_frames ? want : n_frames;
}

/*
 * Make img (materialized from a stack of n frames of height h) an image of
 * n frames: its delays from libvips' "delay" on in (ms; FRAME_DELAY_MS
 * where the file gives none) and its loop count.
 */
static int set_frames(VipsImage *in, int n, int h, up_image_t *img, up_error_t *err) {
    if (n == 1) /* (a still image may have been turned: h is not its height) */
        return UP_OK;
    assert(img->height == h * n && img->n_pages == 1);
    int *delays = malloc((size_t)n * sizeof *delays), *d = NULL, n_d = 0;
    if (!delays)
        return up_error_set(err, UP_ERR_NOMEM, 0, "cannot allocate the frame delays");
    if (!vips_image_get_typeof(in, "delay") || vips_image_get_array_int(in, "delay", &d, &n_d))
        n_d = 0;
    for (int i = 0; i < n; i++)
        delays[i] = i < n_d ? (d[i] > 0 ? d[i] : 0) : FRAME_DELAY_MS;
    img->height = h;
    img->n_pages = n;
    img->delays = delays;
    img->loop = get_loop(in);
    return UP_OK;
}

/* Check the header against lim, then (mode) decode and convert src into
 * *out (the first want_frames frames of an animation), or describe it in
 * *info. */
static int decode_source(VipsSource *src, int fi, VipsFailOn fail_on, const image_limits_t *lim,
                         load_mode_t mode, int want_frames, up_image_t **out, image_info_t *info,
                         up_error_t *err) {
    const char *label = formats[fi].label;
    char what[96];

    VipsObject *ctx = VIPS_OBJECT(vips_image_new());
    VipsImage **t = (VipsImage **)vips_object_local_array(ctx, 4);
    int rc;

    if (vips_source_rewind(src)) {
        rc = vips_fail(err, UP_ERR_IO, "cannot read the image");
        goto done;
    }
    t[0] = vips_image_new_from_source(src, "", "access", VIPS_ACCESS_SEQUENTIAL, "fail_on", fail_on, NULL);
    if (!t[0]) {
        snprintf(what, sizeof what, "not a valid %s image", label);
        rc = vips_fail(err, UP_ERR_IMAGE, what);
        goto done;
    }
    VipsImage *in = t[0];

    uint64_t n_pixels = (uint64_t)in->Xsize * (uint64_t)in->Ysize;
    if (lim && lim->max_pixels && n_pixels > lim->max_pixels) {
        rc = up_error_set(err, UP_ERR_TOO_LARGE, 0,
                          "image is %dx%d (%.1f megapixels), over the limit of %.1f megapixels", in->Xsize,
                          in->Ysize, n_pixels / 1e6, lim->max_pixels / 1e6);
        goto done;
    }
    /* "n-pages" comes from the header (GIF and WebP frames, TIFF pages, HEIF
     * images); the loader decodes only the first one */
    int n_frames = vips_image_get_n_pages(in);
    if (lim && lim->max_frames > 0 && n_frames > lim->max_frames) {
        rc = up_error_set(err, UP_ERR_TOO_LARGE, 0, "the image has %d frames; the limit is %d frame%s",
                          n_frames, lim->max_frames, lim->max_frames == 1 ? "" : "s");
        goto done;
    }

    snprintf(what, sizeof what, "truncated or corrupt %s data", label);
    if (mode != LOAD_PIXELS) {
        rc = describe(ctx, in, fi, n_frames, mode == LOAD_VERIFY, what, info, err);
        goto done;
    }
    int n_load = frames_to_load(in, fi, n_frames, want_frames), frame_h = in->Ysize;
    if (n_load > 1) {
        /* all frames together within the pixel limit, still from the header */
        if (lim && lim->max_pixels && n_pixels * (uint64_t)n_load > lim->max_pixels) {
            rc = up_error_set(err, UP_ERR_TOO_LARGE, 0,
                              "%d frames of %dx%d are %.1f megapixels, over the limit of %.1f megapixels",
                              n_load, in->Xsize, in->Ysize, (double)(n_pixels * (uint64_t)n_load) / 1e6,
                              lim->max_pixels / 1e6);
            goto done;
        }
        if (vips_source_rewind(src)) {
            rc = vips_fail(err, UP_ERR_IO, "cannot read the image");
            goto done;
        }
        t[3] = vips_image_new_from_source(src, "", "access", VIPS_ACCESS_SEQUENTIAL, "fail_on", fail_on, "n",
                                          n_load, NULL);
        if (!t[3]) {
            snprintf(what, sizeof what, "not a valid %s image", label);
            rc = vips_fail(err, UP_ERR_IMAGE, what);
            goto done;
        }
        if (t[3]->Xsize != in->Xsize || t[3]->Ysize != frame_h * n_load) {
            rc = up_error_set(err, UP_ERR_IMAGE, 0, "%s: %d frames of %dx%d decoded as %dx%d", what, n_load,
                              in->Xsize, frame_h, t[3]->Xsize, t[3]->Ysize);
            goto done;
        }
        in = t[3];
    }
    int keep_icc;
    if ((rc = convert(ctx, in, what, 1, &in, &keep_icc, err))) /* in: borrowed from ctx */
        goto done;

    /* Rotating needs the whole image: decode into memory first. autorot
     * also drops the orientation tag. */
    int orientation = vips_image_get_orientation(t[0]);
    if (orientation > 1 && orientation <= 8) {
        if (!(t[1] = vips_image_copy_memory(in))) {
            rc = vips_fail(err, UP_ERR_IMAGE, what);
            goto done;
        }
        if (vips_autorot(t[1], &t[2], NULL)) {
            rc = vips_fail(err, UP_ERR_IMAGE, "cannot apply the EXIF orientation");
            goto done;
        }
        in = t[2];
    }

    if ((rc = materialize(ctx, in, what, out, err)))
        goto done;
    (*out)->n_frames = n_frames;
    if ((rc = set_frames(n_load > 1 ? t[3] : t[0], n_load, frame_h, *out, err)) ||
        (rc = take_metadata(t[0], keep_icc, *out, err))) {
        image_free(*out);
        *out = NULL;
        goto done;
    }
    if (strcmp(formats[fi].name, "gif") == 0)
        drop_opaque_alpha(*out);
    snprintf((*out)->format, sizeof(*out)->format, "%s", source_format(t[0], fi));

done:
    g_object_unref(ctx);
    return rc;
}

/* A source over the file at path (new) into *src; the file errors of image_load_file. */
static int file_source(const char *path, VipsSource **src, up_error_t *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        char buf[128];
        return up_error_set(err, e == ENOENT || e == ENOTDIR ? UP_ERR_NOT_FOUND : UP_ERR_IO, 0,
                            "cannot open the image: %s", strerror_r(e, buf, sizeof buf));
    }
    struct stat st;
    if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
        close(fd);
        return up_error_set(err, UP_ERR_IO, 0, "cannot read the image: not a regular file");
    }
    if (st.st_size == 0) {
        close(fd);
        return up_error_set(err, UP_ERR_IMAGE, 0, "not an image: the file is empty (0 bytes)");
    }
    *src = vips_source_new_from_descriptor(fd); /* dups fd */
    close(fd);
    return *src ? UP_OK : vips_fail(err, UP_ERR_IO, "cannot read the image");
}

static int load_file(const char *path, load_mode_t mode, const image_limits_t *lim, int want_frames,
                     up_image_t **out, image_info_t *info, up_error_t *err) {
    int rc = image_init();
    if (rc)
        return up_error_set(err, rc, 0, "libvips is not available");
    VipsSource *src;
    if ((rc = file_source(path, &src, err)))
        return rc;
    rc = load_source(src, mode, lim, want_frames, out, info, err);
    g_object_unref(src);
    return rc;
}

static int load_buffer(const void *buf, size_t size, load_mode_t mode, const image_limits_t *lim,
                       int want_frames, up_image_t **out, image_info_t *info, up_error_t *err) {
    int rc = image_init();
    if (rc)
        return up_error_set(err, rc, 0, "libvips is not available");
    if (!buf || size == 0)
        return up_error_set(err, UP_ERR_IMAGE, 0, "not an image: the data is empty (0 bytes)");
    VipsSource *src = vips_source_new_from_memory(buf, size);
    if (!src)
        return vips_fail(err, UP_ERR_IMAGE, "cannot read the image");
    rc = load_source(src, mode, lim, want_frames, out, info, err);
    g_object_unref(src);
    return rc;
}

int image_load_file(const char *path, const image_limits_t *lim, up_image_t **out, up_error_t *err) {
    return image_load_file_frames(path, lim, 1, out, err);
}

int image_load_buffer(const void *buf, size_t size, const image_limits_t *lim, up_image_t **out,
                      up_error_t *err) {
    return image_load_buffer_frames(buf, size, lim, 1, out, err);
}

int image_load_file_frames(const char *path, const image_limits_t *lim, int max_frames, up_image_t **out,
                           up_error_t *err) {
    assert(path && out);
    *out = NULL;
    return load_file(path, LOAD_PIXELS, lim, max_frames, out, NULL, err);
}

int image_load_buffer_frames(const void *buf, size_t size, const image_limits_t *lim, int max_frames,
                             up_image_t **out, up_error_t *err) {
    assert(out);
    *out = NULL;
    return load_buffer(buf, size, LOAD_PIXELS, lim, max_frames, out, NULL, err);
}

int image_probe_file(const char *path, const image_limits_t *lim, image_info_t *info, up_error_t *err) {
    assert(path && info);
    memset(info, 0, sizeof *info);
    return load_file(path, LOAD_HEADER, lim, 1, NULL, info, err);
}

int image_probe_buffer(const void *buf, size_t size, const image_limits_t *lim, image_info_t *info,
                       up_error_t *err) {
    assert(info);
    memset(info, 0, sizeof *info);
    return load_buffer(buf, size, LOAD_HEADER, lim, 1, NULL, info, err);
}

int image_verify_file(const char *path, const image_limits_t *lim, image_info_t *info, up_error_t *err) {
    assert(path && info);
    memset(info, 0, sizeof *info);
    return load_file(path, LOAD_VERIFY, lim, 1, NULL, info, err);
}

int image_verify_buffer(const void *buf, size_t size, const image_limits_t *lim, image_info_t *info,
                        up_error_t *err) {
    assert(info);
    memset(info, 0, sizeof *info);
    return load_buffer(buf, size, LOAD_VERIFY, lim, 1, NULL, info, err);
}

/* ---- output formats ---------------------------------------------------- */

/* The formats image_save_* writes: the one list (image_format_canonical). */
static const struct {
    const char *name;  /* canonical */
    const char *alias; /* another name for it, or NULL */
    const char *mime;  /* Content-Type */
    int quality;       /* for quality 0; 0 = has none */
    int animated;      /* writes every frame */
} outputs[] = {
    {"png", NULL, "image/png", 0, 0},
    {"jpg", "jpeg", "image/jpeg", JPEG_DEFAULT_QUALITY, 0},
    {"webp", NULL, "image/webp", WEBP_DEFAULT_QUALITY, 1},
    {"avif", NULL, "image/avif", AVIF_DEFAULT_QUALITY, 0},
    {"gif", NULL, "image/gif", GIF_DEFAULT_QUALITY, 1},
    {"ico", NULL, "image/x-icon", 0, 0},
};
#define N_OUTPUTS ((int)(sizeof outputs / sizeof outputs[0]))

/* The index in outputs[] of any name of an output format, or -1 (also for NULL). */
static int output_index(const char *fmt) {
    for (int i = 0; fmt && i < N_OUTPUTS; i++)
        if (strcasecmp(fmt, outputs[i].name) == 0 ||
            (outputs[i].alias && strcasecmp(fmt, outputs[i].alias) == 0))
            return i;
    return -1;
}

/* The canonical name for an output format, or NULL when we cannot write it. */
static const char *output_format(const char *fmt) {
    int i = output_index(fmt);
    return i < 0 ? NULL : outputs[i].name;
}

int image_format_supported_for_output(const char *fmt) { return output_index(fmt) >= 0; }

const char *image_format_canonical(const char *fmt) { return output_format(fmt); }

int image_format_default_quality(const char *fmt) {
    int i = output_index(fmt);
    return i < 0 ? 0 : outputs[i].quality;
}

const char *image_format_default_output(const char *source) {
    const char *f = output_format(source);
    return f && (!strcmp(f, "png") || !strcmp(f, "jpg") || !strcmp(f, "webp")) ? f : "png";
}

const char *image_content_type(const char *fmt) {
    int i = output_index(fmt);
    return i < 0 ? NULL : outputs[i].mime;
}

int image_format_animated(const char *fmt) {
    int i = output_index(fmt);
    return i >= 0 && outputs[i].animated;
}

void image_format_output_size(const char *fmt, long long w, long long h, long long *ow, long long *oh) {
    *ow = w;
    *oh = h;
    const char *f = output_format(fmt);
    if (!f || strcmp(f, "ico") != 0 || (w <= ICO_MAX_SIDE && h <= ICO_MAX_SIDE) || w < 1 || h < 1)
        return;
    /* the longer side ICO_MAX_SIDE, the other in proportion, round half up */
    if (w >= h) {
        *ow = ICO_MAX_SIDE;
        *oh = VIPS_MAX(1, (2 * h * ICO_MAX_SIDE + w) / (2 * w));
    } else {
        *oh = ICO_MAX_SIDE;
        *ow = VIPS_MAX(1, (2 * w * ICO_MAX_SIDE + h) / (2 * h));
    }
}

const char *image_format_from_path(const char *path) {
    if (!path)
        return NULL;
    const char *slash = strrchr(path, '/');
    const char *dot = strrchr(slash ? slash + 1 : path, '.');
    if (!dot)
        return NULL;
    dot++;
    if (strcasecmp(dot, "jpe") == 0)
        return "jpg";
    return output_format(dot);
}

/* ---- colour ------------------------------------------------------------ */

/*
 * in (img's values, wrapped) converted from img->icc to sRGB into *out
 * (borrowed from ctx): same bands and depth; gray stays gray (through
 * sRGB, then back to one band with sRGB's tone curve), alpha passes through.
 */
static int srgb_from_profile(VipsObject *ctx, VipsImage *in, const up_image_t *img, VipsImage **out,
                             up_error_t *err) {
    VipsImage **t = (VipsImage **)vips_object_local_array(ctx, 5);
    assert(img->icc && img->icc_size > 0);
    if (vips_copy(in, &t[0], NULL))
        return vips_fail(err, UP_ERR_IMAGE, "cannot prepare the image");
    vips_image_set_blob_copy(t[0], VIPS_META_ICC_NAME, img->icc, img->icc_size);
    if (vips_icc_transform(t[0], &t[1], "srgb", "embedded", TRUE, "intent", VIPS_INTENT_RELATIVE,
                           "black_point_compensation", TRUE, "depth", img->depth, NULL))
        return vips_fail(err, UP_ERR_IMAGE, "cannot convert the image from its ICC profile to sRGB");
    VipsImage *x = t[1];
    if (img->bands <= 2) {
        if (vips_colourspace(x, &t[2],
                             img->depth == 16 ? VIPS_INTERPRETATION_GREY16 : VIPS_INTERPRETATION_B_W, NULL))
            return vips_fail(err, UP_ERR_IMAGE, "cannot convert the image to sRGB gray");
        x = t[2];
    }
    if (x->BandFmt != band_format(img->depth)) {
        if (vips_cast(x, &t[3], band_format(img->depth), NULL))
            return vips_fail(err, UP_ERR_IMAGE, "cannot convert the image to sRGB");
        x = t[3];
    }
    if (x->Bands != img->bands)
        return up_error_set(err, UP_ERR_IMAGE, 0, "converting to sRGB gave %d bands, not %d", x->Bands,
                            img->bands);
    *out = x;
    return UP_OK;
}

/* 1 when img's values are in a profile other than sRGB. */
static int has_foreign_profile(const up_image_t *img) {
    return img->icc && img->icc_size > 0 && !icc_is_srgb(img->icc, img->icc_size);
}

int image_to_srgb(up_image_t *img, up_error_t *err) {
    if (!valid_image(img))
        return up_error_set(err, UP_ERR_INVALID, 0, "cannot convert: not a valid image");
    int rc = UP_OK;
    if (has_foreign_profile(img)) {
        if (image_init())
            return up_error_set(err, UP_ERR_BACKEND, 0, "libvips is not available");
        VipsObject *ctx = VIPS_OBJECT(vips_image_new());
        VipsImage **t = (VipsImage **)vips_object_local_array(ctx, 1);
        VipsImage *x;
        up_image_t *conv = NULL;
        /* every frame: in place, so the whole buffer changes */
        if (!(rc = wrap_frames(ctx, img, n_pages_of(img), &t[0], err)) &&
            !(rc = srgb_from_profile(ctx, t[0], img, &x, err)) &&
            !(rc = materialize(ctx, x, "cannot convert the image to sRGB", &conv, err))) {
            free(img->pixels); /* same shape: only the buffer changes hands */
            img->pixels = conv->pixels;
            conv->pixels = NULL;
        }
        image_free(conv);
        g_object_unref(ctx);
        if (rc)
            return rc;
    }
    free(img->icc);
    img->icc = NULL;
    img->icc_size = 0;
    return UP_OK;
}

/* ---- save -------------------------------------------------------------- */

/* vips_image_map callback: copy the EXIF tag fields ("exif-ifdN-Name") of
 * a parsed header to the image a (the orientation stays out: it is 1). */
static void *copy_exif_field(VipsImage *from, const char *name, GValue *value, void *a) {
    (void)from;
    if (strncmp(name, "exif-ifd", 8) == 0 && strcmp(name, "exif-ifd0-Orientation") != 0)
        vips_image_set((VipsImage *)a, name, value);
    return NULL;
}

/*
 * Attach img's EXIF block to v, the image about to be saved, with the tag
 * fields libvips' savers rebuild it from (see DESIGN). A block libvips
 * cannot parse, or one over JPEG's 64 KB segment, is left out: the image
 * is still written, without EXIF.
 */
static void attach_exif(VipsImage *v, const up_image_t *img) {
    const uint8_t *x = img->exif;
    size_t n = img->exif_size, prefix = n >= 6 && memcmp(x, "Exif\0\0", 6) == 0 ? 0 : 6;
    if (n + prefix > 65533) {
        log_debug("image: EXIF of %zu bytes is over 64 KB; not written", n);
        return;
    }
    VipsObject *ctx = VIPS_OBJECT(vips_image_new());
    VipsImage **t = (VipsImage **)vips_object_local_array(ctx, 3);
    void *jpg = NULL;
    size_t jpg_size = 0;
    uint8_t *spliced = NULL;
    if (vips_black(&t[0], 1, 1, NULL) || vips_cast(t[0], &t[1], VIPS_FORMAT_UCHAR, NULL) ||
        vips_jpegsave_buffer(t[1], &jpg, &jpg_size, "strip", TRUE, NULL) || jpg_size < 4)
        goto fail;
    /* SOI, then APP1 "Exif\0\0" + block, then the rest of the 1x1 JPEG */
    size_t seg = 2 + prefix + n, total = jpg_size + 2 + seg;
    spliced = xmalloc(total);
    uint8_t *p = spliced;
    memcpy(p, jpg, 2);
    p += 2;
    *p++ = 0xff;
    *p++ = 0xe1;
    *p++ = (uint8_t)(seg >> 8);
    *p++ = (uint8_t)(seg & 0xff);
    memcpy(p, "Exif\0\0", prefix);
    p += prefix;
    memcpy(p, x, n);
    p += n;
    memcpy(p, (const uint8_t *)jpg + 2, jpg_size - 2);
    if (!(t[2] = vips_image_new_from_buffer(spliced, total, "", NULL)) ||
        !vips_image_get_typeof(t[2], VIPS_META_EXIF_NAME))
        goto fail;
    vips_image_map(t[2], copy_exif_field, v);
    vips_image_set_blob_copy(v, VIPS_META_EXIF_NAME, x, n);
    goto done;
fail:;
    char why[320];
    if (vips_reason(why, sizeof why) == 0)
        snprintf(why, sizeof why, "libvips does not read it");
    log_debug("image: EXIF not written: %s", why);
done:
    g_object_unref(ctx); /* before spliced: t[2] reads from it */
    free(spliced);
    g_free(jpg);
}

static uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/*
 * Remove the EXIF chunk from a WebP file in place (*size shrinks): libvips
 * 8.14 writes a small one of its own even when told to strip. The bytes
 * are libwebp's output, still every length is checked.
 *
 *   "RIFF", file size - 8 (LE32), "WEBP", then chunks: fourcc, payload
 *   size (LE32), payload padded to an even length. VP8X's first payload
 *   byte holds the feature flags; 0x08 says an EXIF chunk follows.
 */
static void webp_drop_exif(uint8_t *p, size_t *size) {
    size_t n = *size, off = 12;
    if (n < 12 || memcmp(p, "RIFF", 4) != 0 || memcmp(p + 8, "WEBP", 4) != 0)
        return;
    while (off + 8 <= n) {
        size_t len = le32(p + off + 4), chunk = 8 + len + (len & 1);
        if (chunk > n - off)
            return;
        if (memcmp(p + off, "VP8X", 4) == 0 && len >= 1)
            p[off + 8] &= (uint8_t)~0x08;
        if (memcmp(p + off, "EXIF", 4) == 0) {
            memmove(p + off, p + off + chunk, n - off - chunk);
            n -= chunk;
            uint32_t riff = (uint32_t)(n - 8);
            for (int i = 0; i < 4; i++)
                p[4 + i] = (uint8_t)(riff >> (8 * i));
            continue;
        }
        off += chunk;
    }
    *size = n;
}

/*
 * GIF's knobs for a quality q (1..100), see image_save_buffer: libvips'
 * bitdepth (2^bits colours), dither and interframe_maxerror.
 */
static void gif_params(int q, int *bits, double *dither, double *maxerror) {
    *bits = VIPS_CLIP(1, (8 * q + 99) / 100, 8);
    *dither = q >= 50 ? 1.0 : 0.0; /* error diffusion's noise costs LZW bytes */
    *maxerror = (100 - q) * 0.32;  /* libvips' range: 0..32 */
}

/*
 * Encode img as fmt ("png", "jpg", "webp", "avif" or "gif") into *buf (new,
 * free()): every frame for webp and gif, the first for the others. With
 * rgba (ico's PNG) the values become 8-bit RGBA in sRGB, with no metadata.
 */
static int encode(const up_image_t *img, const char *fmt, const image_save_opts_t *opts, int rgba, void **buf,
                  size_t *size, up_error_t *err) {
    VipsObject *ctx = VIPS_OBJECT(vips_image_new());
    VipsImage **t = (VipsImage **)vips_object_local_array(ctx, 8);
    void *vbuf = NULL;
    size_t vsize = 0;
    int png = strcmp(fmt, "png") == 0, jpg = strcmp(fmt, "jpg") == 0, webp = strcmp(fmt, "webp") == 0;
    int avif = strcmp(fmt, "avif") == 0, gif = strcmp(fmt, "gif") == 0;
    int quality = opts && opts->quality ? opts->quality : image_format_default_quality(fmt);
    /* GIF carries no metadata here (cgif writes none); ico's PNG none either */
    int strip = (opts && opts->strip) || gif || rgba;
    int n_pages = image_format_animated(fmt) ? n_pages_of(img) : 1;
    int rc = wrap_frames(ctx, img, n_pages, &t[0], err);
    if (rc)
        goto done;
    VipsImage *in = t[0];

    /* The profile goes into the file when asked for and when the file can
     * carry it: WebP, AVIF and GIF are always RGB, so a gray profile cannot
     * go there, and GIF takes none at all. */
    int palette = png && opts ? opts->png_palette : 0;
    int gray_out = img->bands <= 2 && !rgba && ((png && !palette) || jpg); /* a palette is RGB */
    char space[5];
    icc_space(img->icc, img->icc_size, space);
    int fits = strcmp(space, gray_out ? "GRAY" : "RGB ") == 0;
    int write_icc = img->icc && !strip && !(opts && opts->srgb) && fits;
    if (img->icc && !write_icc && has_foreign_profile(img)) {
        if ((rc = srgb_from_profile(ctx, in, img, &in, err)))
            goto done;
    }

    int bands = img->bands, depth = img->depth, failed;
    int to8 = !png || palette || rgba || (opts && opts->png_depth == 8);
    if (to8) {
        if (img->depth == 16) { /* round to 8 bits: v * 255/65535 = v / 257 */
            if (vips_linear1(in, &t[1], 1.0 / 257.0, 0.5, NULL) ||
                vips_cast(t[1], &t[2], VIPS_FORMAT_UCHAR, NULL)) {
                rc = vips_fail(err, UP_ERR_IMAGE, "cannot convert the image to 8 bits");
                goto done;
            }
            in = t[2];
            depth = 8;
        }
        if (jpg && image_has_alpha(img)) { /* JPEG has no alpha */
            VipsArrayDouble *white = vips_array_double_newv(1, 255.0);
            failed = vips_flatten(in, &t[3], "background", white, "max_alpha", 255.0, NULL);
            vips_area_unref(VIPS_AREA(white));
            if (failed) {
                rc = vips_fail(err, UP_ERR_IMAGE, "cannot flatten the alpha channel");
                goto done;
            }
            in = t[3];
            bands--;
        }
    }
    if (rgba) { /* gray to RGB (the values are sRGB gray by now), then an opaque alpha where none */
        if (bands <= 2) {
            VipsImage *parts[4];
            if (vips_extract_band(in, &t[5], 0, NULL)) {
                rc = vips_fail(err, UP_ERR_IMAGE, "cannot convert the image to RGB");
                goto done;
            }
            parts[0] = parts[1] = parts[2] = t[5];
            if (bands == 2 && vips_extract_band(in, &t[6], 1, NULL)) {
                rc = vips_fail(err, UP_ERR_IMAGE, "cannot convert the image to RGB");
                goto done;
            }
            parts[3] = t[6];
            if (vips_bandjoin(parts, &t[7], bands == 2 ? 4 : 3, NULL)) {
                rc = vips_fail(err, UP_ERR_IMAGE, "cannot convert the image to RGB");
                goto done;
            }
            in = t[7];
            bands = bands == 2 ? 4 : 3;
        }
        if (bands == 3) {
            VipsImage **u = (VipsImage **)vips_object_local_array(ctx, 1);
            if (vips_bandjoin_const1(in, &u[0], 255.0, NULL)) {
                rc = vips_fail(err, UP_ERR_IMAGE, "cannot add an alpha band");
                goto done;
            }
            in = u[0];
            bands = 4;
        }
    }
    /* a fresh header: exactly the metadata chosen here, nothing inherited */
    if (vips_copy(in, &t[4], "interpretation", interpretation(bands, depth), NULL)) {
        rc = vips_fail(err, UP_ERR_IMAGE, "cannot prepare the image");
        goto done;
    }
    in = t[4];
    vips_image_remove(in, VIPS_META_ICC_NAME);
    vips_image_remove(in, VIPS_META_EXIF_NAME);
    vips_image_remove(in, VIPS_META_XMP_NAME);
    if (write_icc)
        vips_image_set_blob_copy(in, VIPS_META_ICC_NAME, img->icc, img->icc_size);
    if (!strip && img->exif)
        attach_exif(in, img);
    if (!strip && img->xmp)
        vips_image_set_blob_copy(in, VIPS_META_XMP_NAME, img->xmp, img->xmp_size);
    if (n_pages > 1) { /* an animation: libvips' savers read these three */
        vips_image_set_int(in, VIPS_META_PAGE_HEIGHT, img->height);
        vips_image_set_array_int(in, "delay", img->delays, n_pages);
        vips_image_set_int(in, "loop", img->loop);
    }
    /* no metadata at all: libvips' strip, as before metadata was kept */
    int bare = !vips_image_get_typeof(in, VIPS_META_ICC_NAME) &&
               !vips_image_get_typeof(in, VIPS_META_EXIF_NAME) &&
               !vips_image_get_typeof(in, VIPS_META_XMP_NAME);

    if (palette) {
        int q = opts->png_palette_quality ? opts->png_palette_quality : 100;
        int bits = palette == 2 ? 1 : palette == 4 ? 2 : palette == 16 ? 4 : 8;
        failed = vips_pngsave_buffer(in, &vbuf, &vsize, "compression", 6, "strip", bare, "palette", TRUE, "Q",
                                     q, "dither", opts->png_dither ? 1.0 : 0.0, "bitdepth", bits, NULL);
    } else if (png) {
        /* the avg row filter, stored (level 0), then deflated again with Z_RLE (pngz.h): on upscaled
         * photos and graphics 13-19% smaller than level 2 with avg and 1.1-1.2x faster; half the size of
         * libvips' default (level 6, no filter) in half the time (bench/png_levels.c, docs/benchmarks.md) */
        failed = vips_pngsave_buffer(in, &vbuf, &vsize, "compression", 0, "filter", PNG_FILTER, "strip", bare,
                                     "bitdepth", depth, NULL);
    } else if (jpg) {
        failed = vips_jpegsave_buffer(in, &vbuf, &vsize, "Q", quality, "strip", bare, "optimize_coding", TRUE,
                                      NULL);
    } else if (webp) {
        failed = vips_webpsave_buffer(in, &vbuf, &vsize, "Q", quality, "strip", bare, NULL);
    } else if (avif) {
        /* the encoder libheif has for AV1 (Debian's: aom; rav1e or SVT where built in) */
        failed = vips_heifsave_buffer(in, &vbuf, &vsize, "Q", quality, "compression",
                                      VIPS_FOREIGN_HEIF_COMPRESSION_AV1, "effort", AVIF_EFFORT, "bitdepth", 8,
                                      "strip", bare, NULL);
    } else {
        assert(gif);
        int bits;
        double dither, maxerror;
        gif_params(quality, &bits, &dither, &maxerror);
        failed = vips_gifsave_buffer(in, &vbuf, &vsize, "bitdepth", bits, "dither", dither,
                                     "interframe_maxerror", maxerror, "strip", TRUE, NULL);
    }
    if (failed) {
        char what[64];
        snprintf(what, sizeof what, "cannot encode the image as %s", fmt);
        rc = vips_fail(err, UP_ERR_IMAGE, what);
        goto done;
    }
    if (png && !palette) {
        rc = pngz_recompress(vbuf, vsize, buf, size, err);
        goto done;
    }
    /* copy out of glib's allocator so that callers release with free() */
    if (!(*buf = malloc(vsize ? vsize : 1))) {
        rc = up_error_set(err, UP_ERR_NOMEM, 0, "cannot allocate %zu bytes for the encoded image", vsize);
        goto done;
    }
    memcpy(*buf, vbuf, vsize);
    *size = vsize;
    if (webp && !vips_image_get_typeof(in, VIPS_META_EXIF_NAME))
        webp_drop_exif(*buf, size);
done:
    g_free(vbuf);
    g_object_unref(ctx);
    return rc;
}

static void put16(uint8_t *p, unsigned v) {
    p[0] = (uint8_t)(v & 0xff);
    p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/*
 * ICO: the first frame of img, fitted into 256x256, as one PNG entry.
 * All fields little-endian:
 *
 *   offset  size  ICONDIR
 *   0       2     reserved, 0
 *   2       2     type: 1 = icon
 *   4       2     number of images: 1
 *           ICONDIRENTRY
 *   6       1     width in pixels, 0 meaning 256
 *   7       1     height, likewise
 *   8       1     colours in a palette: 0 (none)
 *   9       1     reserved, 0
 *   10      2     colour planes: 1
 *   12      2     bits per pixel: 32 (the PNG is 8-bit RGBA)
 *   14      4     bytes of the image data
 *   18      4     offset of the image data: 22
 *   22      ...   the PNG file, whole (readers since Windows Vista take PNG entries)
 */
static int encode_ico(const up_image_t *img, const image_save_opts_t *opts, void **buf, size_t *size,
                      up_error_t *err) {
    long long w, h;
    image_format_output_size("ico", img->width, img->height, &w, &h);
    up_image_t *small = NULL;
    const up_image_t *src = img;
    void *png = NULL;
    size_t png_size = 0;
    int rc = UP_OK;
    if (w != img->width || h != img->height) {
        if ((rc = image_resize(img, (int)w, (int)h, &small, err)))
            return rc;
        src = small;
    }
    image_save_opts_t o = {.format = "png", .srgb = 1, .strip = 1};
    (void)opts; /* quality and the PNG options do not apply: one full-colour entry */
    if ((rc = encode(src, "png", &o, 1, &png, &png_size, err)))
        goto done;
    assert(png_size < UINT32_MAX - 22); /* 256x256 RGBA: under 300 KB */
    uint8_t *p = malloc(22 + png_size);
    if (!p) {
        rc = up_error_set(err, UP_ERR_NOMEM, 0, "cannot allocate %zu bytes for the encoded image",
                          22 + png_size);
        goto done;
    }
    memset(p, 0, 22);
    put16(p + 2, 1);
    put16(p + 4, 1);
    p[6] = (uint8_t)(src->width >= ICO_MAX_SIDE ? 0 : src->width);
    p[7] = (uint8_t)(src->height >= ICO_MAX_SIDE ? 0 : src->height);
    put16(p + 10, 1);
    put16(p + 12, 32);
    put32(p + 14, (uint32_t)png_size);
    put32(p + 18, 22);
    memcpy(p + 22, png, png_size);
    *buf = p;
    *size = 22 + png_size;
done:
    free(png);
    image_free(small);
    return rc;
}

/* Encode img as fmt (canonical) into *buf (new, free()). */
static int encode_any(const up_image_t *img, const char *fmt, const image_save_opts_t *opts, void **buf,
                      size_t *size, up_error_t *err) {
    if (strcmp(fmt, "ico") == 0)
        return encode_ico(img, opts, buf, size, err);
    return encode(img, fmt, opts, 0, buf, size, err);
}

/* Check the arguments shared by both savers; fmt is already canonical or NULL. */
static int check_save(const up_image_t *img, const char *fmt, const image_save_opts_t *opts,
                      up_error_t *err) {
    if (!valid_image(img))
        return up_error_set(err, UP_ERR_INVALID, 0, "cannot save: not a valid image");
    if (opts && opts->format && !fmt)
        return up_error_set(err, UP_ERR_INVALID, 0,
                            "cannot write format '%s' (png, jpg, webp, avif, gif and ico are supported)",
                            opts->format);
    if (opts && (opts->quality < 0 || opts->quality > 100))
        return up_error_set(err, UP_ERR_INVALID, 0, "quality %d is out of range 1..100", opts->quality);
    if (opts && opts->png_depth != 0 && opts->png_depth != 8 && opts->png_depth != 16)
        return up_error_set(err, UP_ERR_INVALID, 0, "PNG depth %d is not 8 or 16", opts->png_depth);
    if (opts && opts->png_palette != 0 && opts->png_palette != 2 && opts->png_palette != 4 &&
        opts->png_palette != 16 && opts->png_palette != 256)
        return up_error_set(err, UP_ERR_INVALID, 0, "a PNG palette of %d colours is not 2, 4, 16 or 256",
                            opts->png_palette);
    if (opts && (opts->png_palette_quality < 0 || opts->png_palette_quality > 100))
        return up_error_set(err, UP_ERR_INVALID, 0, "palette quality %d is out of range 1..100",
                            opts->png_palette_quality);
    if (opts && opts->png_dither != 0 && opts->png_dither != 1)
        return up_error_set(err, UP_ERR_INVALID, 0, "dither %d is not 0 or 1", opts->png_dither);
    return image_init() ? up_error_set(err, UP_ERR_BACKEND, 0, "libvips is not available") : UP_OK;
}

int image_save_buffer(const up_image_t *img, const image_save_opts_t *opts, void **buf, size_t *size,
                      up_error_t *err) {
    assert(buf && size);
    *buf = NULL;
    *size = 0;
    const char *fmt = opts ? output_format(opts->format) : NULL;
    int rc = check_save(img, fmt, opts, err);
    if (rc)
        return rc;
    if (!fmt)
        fmt = image_format_default_output(img->format);
    return encode_any(img, fmt, opts, buf, size, err);
}

/* Write size bytes to path through a temporary file in the same folder. */
static int write_file(const char *path, const void *data, size_t size, up_error_t *err) {
    static atomic_uint seq;
    char tmp[PATH_MAX], ebuf[128];
    int n = snprintf(tmp, sizeof tmp, "%s.tmp-%ld-%u", path, (long)getpid(), atomic_fetch_add(&seq, 1));
    if (n < 0 || (size_t)n >= sizeof tmp)
        return up_error_set(err, UP_ERR_IO, 0, "cannot write the image: path too long");
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0)
        return up_error_set(err, UP_ERR_IO, 0, "cannot write the image: %s",
                            strerror_r(errno, ebuf, sizeof ebuf));
    if (write_all(fd, data, size))
        goto fail;
    if (close(fd)) {
        fd = -1;
        goto fail;
    }
    fd = -1;
    if (rename(tmp, path))
        goto fail;
    return UP_OK;
fail:;
    int e = errno ? errno : EIO;
    if (fd >= 0)
        close(fd);
    unlink(tmp);
    return up_error_set(err, UP_ERR_IO, 0, "cannot write the image: %s", strerror_r(e, ebuf, sizeof ebuf));
}

int image_save_file(const up_image_t *img, const char *path, const image_save_opts_t *opts, up_error_t *err) {
    assert(path);
    const char *fmt = opts ? output_format(opts->format) : NULL;
    int rc = check_save(img, fmt, opts, err);
    if (rc)
        return rc;
    if (!fmt)
        fmt = image_format_from_path(path);
    if (!fmt)
        fmt = image_format_default_output(img->format);
    void *buf;
    size_t size;
    if ((rc = encode_any(img, fmt, opts, &buf, &size, err)))
        return rc;
    rc = write_file(path, buf, size, err);
    free(buf);
    return rc;
}

/* ---- resize ------------------------------------------------------------ */

int image_resize(const up_image_t *in, int width, int height, up_image_t **out, up_error_t *err) {
    assert(out);
    *out = NULL;
    if (!valid_image(in))
        return up_error_set(err, UP_ERR_INVALID, 0, "cannot resize: not a valid image");
    if (width < 1 || height < 1 || width > VIPS_MAX_COORD || height > VIPS_MAX_COORD)
        return up_error_set(err, UP_ERR_INVALID, 0, "cannot resize to %dx%d", width, height);
    if (image_init())
        return up_error_set(err, UP_ERR_BACKEND, 0, "libvips is not available");

    VipsObject *ctx = VIPS_OBJECT(vips_image_new());
    VipsImage **t = (VipsImage **)vips_object_local_array(ctx, 10);
    int rc = wrap_image(ctx, in, &t[0], err);
    if (rc)
        goto done;
    VipsImage *x = t[0];
    int alpha = image_has_alpha(in);
    double max_alpha = in->depth == 16 ? 65535.0 : 255.0;

    /* Premultiplied, so that the colour of transparent pixels does not
     * bleed into their neighbours. */
    if (alpha) {
        if (vips_premultiply(x, &t[1], "max_alpha", max_alpha, NULL))
            goto fail;
        x = t[1];
    }
    if (vips_resize(x, &t[2], (double)width / in->width, "vscale", (double)height / in->height, "kernel",
                    VIPS_KERNEL_LANCZOS3, NULL))
        goto fail;
    x = t[2];
    /* vips_resize rounds its output size; make it exact by cropping or
     * repeating the last row or column (at most a pixel or so). */
    if (x->Xsize > width || x->Ysize > height) {
        if (vips_crop(x, &t[3], 0, 0, VIPS_MIN(x->Xsize, width), VIPS_MIN(x->Ysize, height), NULL))
            goto fail;
        x = t[3];
    }
    if (x->Xsize < width || x->Ysize < height) {
        if (vips_embed(x, &t[4], 0, 0, width, height, "extend", VIPS_EXTEND_COPY, NULL))
            goto fail;
        x = t[4];
    }
    if (alpha) {
        if (vips_unpremultiply(x, &t[5], "max_alpha", max_alpha, NULL))
            goto fail;
        x = t[5];
    }
    if (x->BandFmt != band_format(in->depth)) { /* round, clip */
        if (vips_linear1(x, &t[6], 1.0, 0.5, NULL) || vips_cast(t[6], &t[7], band_format(in->depth), NULL))
            goto fail;
        x = t[7];
    }
    if ((rc = materialize(ctx, x, "cannot resize the image", out, err)))
        goto done;
    memcpy((*out)->format, in->format, sizeof in->format);
    if (image_copy_metadata(*out, in)) {
        image_free(*out);
        *out = NULL;
        rc = up_error_set(err, UP_ERR_NOMEM, 0, "cannot allocate the image's metadata");
    }
    goto done;
fail:
    rc = vips_fail(err, UP_ERR_IMAGE, "cannot resize the image");
done:
    g_object_unref(ctx);
    return rc;
}

/* ---- canvas: embed and crop ---------------------------------------------- */

/* Copy in's format and metadata (unless drop_icc) to out; on failure free *out. */
static int finish_copy(const up_image_t *in, int drop_icc, up_image_t **out, up_error_t *err) {
    memcpy((*out)->format, in->format, sizeof in->format);
    if (image_copy_metadata(*out, in)) {
        image_free(*out);
        *out = NULL;
        return up_error_set(err, UP_ERR_NOMEM, 0, "cannot allocate the image's metadata");
    }
    if (drop_icc) {
        free((*out)->icc);
        (*out)->icc = NULL;
        (*out)->icc_size = 0;
    }
    return UP_OK;
}

int image_embed(const up_image_t *in, int width, int height, int left, int top,
                const unsigned char background[4], up_image_t **out, up_error_t *err) {
    assert(out && background);
    *out = NULL;
    if (!valid_image(in))
        return up_error_set(err, UP_ERR_INVALID, 0, "cannot embed: not a valid image");
    if (width < 1 || height < 1 || width > VIPS_MAX_COORD || height > VIPS_MAX_COORD)
        return up_error_set(err, UP_ERR_INVALID, 0, "cannot embed on a %dx%d canvas", width, height);
    if (image_init())
        return up_error_set(err, UP_ERR_BACKEND, 0, "libvips is not available");

    int alpha_in = image_has_alpha(in), alpha_out = alpha_in || background[3] < 255;
    int gray_bg = background[0] == background[1] && background[1] == background[2];
    int to_rgb = in->bands <= 2 && !gray_bg, colour = in->bands >= 3 || to_rgb ? 3 : 1;
    int drop_icc = to_rgb && in->icc != NULL;
    double unit = in->depth == 16 ? 257.0 : 1.0;
    VipsObject *ctx = VIPS_OBJECT(vips_image_new());
    VipsImage **t = (VipsImage **)vips_object_local_array(ctx, 8);
    int rc = wrap_image(ctx, in, &t[0], err);
    if (rc)
        goto done;
    VipsImage *x = t[0];
    /* a gray profile cannot describe RGB values: go through sRGB first */
    if (drop_icc && has_foreign_profile(in) && (rc = srgb_from_profile(ctx, x, in, &x, err)))
        goto done;
    if (to_rgb) {
        VipsImage *parts[4];
        if (vips_extract_band(x, &t[1], 0, NULL))
            goto fail;
        parts[0] = parts[1] = parts[2] = t[1];
        if (alpha_in) {
            if (vips_extract_band(x, &t[2], 1, NULL))
                goto fail;
            parts[3] = t[2];
        }
        if (vips_bandjoin(parts, &t[3], alpha_in ? 4 : 3, NULL))
            goto fail;
        x = t[3];
    }
    if (alpha_out && !alpha_in) { /* the image itself is opaque */
        if (vips_bandjoin_const1(x, &t[4], 255.0 * unit, NULL))
            goto fail;
        x = t[4];
    }
    double bg[4];
    int n = 0;
    for (int i = 0; i < colour; i++)
        bg[n++] = background[i] * unit;
    if (alpha_out)
        bg[n++] = background[3] * unit;
    VipsArrayDouble *arr = vips_array_double_new(bg, n);
    int failed = vips_embed(x, &t[5], left, top, width, height, "extend", VIPS_EXTEND_BACKGROUND,
                            "background", arr, NULL);
    vips_area_unref(VIPS_AREA(arr));
    if (failed)
        goto fail;
    x = t[5];
    if (x->BandFmt != band_format(in->depth)) {
        if (vips_cast(x, &t[6], band_format(in->depth), NULL))
            goto fail;
        x = t[6];
    }
    if (!(rc = materialize(ctx, x, "cannot embed the image", out, err)))
        rc = finish_copy(in, drop_icc, out, err);
    goto done;
fail:
    rc = vips_fail(err, UP_ERR_IMAGE, "cannot embed the image");
done:
    g_object_unref(ctx);
    return rc;
}

int image_crop(const up_image_t *in, int left, int top, int width, int height, up_image_t **out,
               up_error_t *err) {
    assert(out);
    *out = NULL;
    if (!valid_image(in))
        return up_error_set(err, UP_ERR_INVALID, 0, "cannot crop: not a valid image");
    if (left < 0 || top < 0 || width < 1 || height < 1 || (long long)left + width > in->width ||
        (long long)top + height > in->height)
        return up_error_set(err, UP_ERR_INVALID, 0, "cannot crop %dx%d at (%d, %d) from a %dx%d image", width,
                            height, left, top, in->width, in->height);
    if (image_init())
        return up_error_set(err, UP_ERR_BACKEND, 0, "libvips is not available");
    VipsObject *ctx = VIPS_OBJECT(vips_image_new());
    VipsImage **t = (VipsImage **)vips_object_local_array(ctx, 2);
    int rc = wrap_image(ctx, in, &t[0], err);
    if (!rc && vips_extract_area(t[0], &t[1], left, top, width, height, NULL))
        rc = vips_fail(err, UP_ERR_IMAGE, "cannot crop the image");
    if (!rc && !(rc = materialize(ctx, t[1], "cannot crop the image", out, err)))
        rc = finish_copy(in, 0, out, err);
    g_object_unref(ctx);
    return rc;
}

/* ---- PNG palettes ---------------------------------------------------------- */

static pthread_once_t palette_once = PTHREAD_ONCE_INIT;
static int palette_ok; /* set by probe_palette */

/*
 * A libvips built without a quantiser either refuses "palette" or writes
 * truecolour instead, so the answer is the written file's colour type:
 *
 *   offset  size  PNG
 *   0       8     signature
 *   8       8     IHDR chunk length and type
 *   16      8     width, height
 *   24      1     bit depth
 *   25      1     colour type: 3 = indexed (palette)
 */
static void probe_palette(void) {
    if (image_init())
        return;
    VipsImage *t[2] = {NULL, NULL};
    void *buf = NULL;
    size_t size = 0;
    palette_ok = !vips_black(&t[0], 2, 2, "bands", 3, NULL) &&
                 !vips_cast(t[0], &t[1], VIPS_FORMAT_UCHAR, NULL) &&
                 !vips_pngsave_buffer(t[1], &buf, &size, "palette", TRUE, NULL) && size > 25 &&
                 ((const uint8_t *)buf)[25] == 3;
    if (!palette_ok) {
        char why[320];
        if (vips_reason(why, sizeof why) == 0)
            snprintf(why, sizeof why, "it writes truecolour");
        log_info("image: this libvips cannot quantise PNGs to a palette (%s)", why);
    }
    g_free(buf);
    for (int i = 0; i < 2; i++)
        if (t[i])
            g_object_unref(t[i]);
}

int image_png_palette_supported(void) {
    pthread_once(&palette_once, probe_palette);
    return palette_ok;
}
