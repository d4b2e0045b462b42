/*
 * image.h - decode, encode and resize images through libvips.
 *
 * This is the only part of upres that talks to libvips. Everything above it
 * (the upscale pipeline, the HTTP layer) sees images as plain interleaved
 * 8- or 16-bit pixel buffers, whatever the file looked like:
 *
 *   - any format this libvips build reads and trusts (JPEG, PNG, WebP, TIFF,
 *     GIF first frame, HEIF/AVIF); libvips' "untrusted" loaders (ImageMagick,
 *     PDF, SVG, JPEG-XL, JPEG 2000, PPM, FITS, ...) are blocked for safety;
 *   - EXIF orientation applied, so width and height are as the image is seen;
 *   - colour: RGB and gray images keep their own values and their embedded
 *     ICC profile (up_image_t.icc), so a wide-gamut Adobe RGB or Display P3
 *     photo is not clipped to sRGB; images without a profile are sRGB.
 *     CMYK / Lab / other spaces are converted to sRGB (icc NULL). Gray stays
 *     gray; palettes become RGB(A); alpha is kept as the last band;
 *   - EXIF and XMP are kept (up_image_t.exif, .xmp), with their orientation
 *     reset to 1 since it has been applied;
 *   - 8-bit stays 8-bit, 16-bit stays 16-bit, anything else (float, 32-bit
 *     integer, 1-bit) becomes 8 or 16 bits;
 *   - multi-frame images (animated GIF/WebP, multi-page TIFF, HEIF
 *     collections): the frame count is read from the header and checked
 *     against a limit; only the first frame is decoded;
 *   - truncated or corrupt files are errors, never half images, and the
 *     pixel and frame limits are enforced from the header before anything
 *     is decoded;
 *   - what a file is (format, size, bands, depth, frames) can be learnt
 *     without holding its pixels: image_probe_* reads the header only,
 *     image_verify_* also decodes every pixel in strips and drops them.
 *
 * Saving writes the image's ICC profile, EXIF and XMP back (PNG, JPEG and
 * WebP all carry them), or converts to sRGB and writes no profile when asked
 * to (image_save_opts_t.srgb), or writes no metadata at all (.strip).
 *
 * Every function that takes an up_error_t fills it (when not NULL) with a
 * one-line message fit to show to a user, and returns the same code.
 *
 * Threads: all functions may be called from several threads at once once
 * image_init() has run (each public function also runs it on first use).
 * libvips runs each call on the calling thread only (concurrency 1): the
 * server gets its parallelism from running several jobs at once.
 */
#ifndef UPRES_IMAGE_IMAGE_H
#define UPRES_IMAGE_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "core/err.h"

typedef struct up_image {
    int width, height; /* pixels, >= 1 */
    int bands;         /* 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA */
    int depth;         /* bits per sample: 8 (uint8_t) or 16 (uint16_t) */
    void *pixels;      /* owned, malloc()ed: width*height*bands samples, interleaved, row-major */
    char format[8];    /* source format: "png","jpg","webp","tiff","gif","heif","avif", or "" */
    int n_frames;      /* frames (pages) in the source, of which only the first is decoded; 1 for a
                          still image and for image_new */
    /* Metadata, each owned and malloc()ed, NULL (size 0) when absent: */
    void *icc;        /* the ICC profile the pixel values are in (RGB profile for 3-4 bands, gray
                         for 1-2); NULL = sRGB */
    size_t icc_size;  /* bytes */
    void *exif;       /* EXIF block as libvips holds it (usually "Exif\0\0" then the TIFF
                         structure); its orientation, if any, is 1 */
    size_t exif_size; /* bytes */
    void *xmp;        /* XMP packet (XML, not NUL-terminated); its tiff:Orientation is 1 */
    size_t xmp_size;  /* bytes */
} up_image_t;

typedef struct image_limits {
    uint64_t max_pixels; /* width*height of the decoded image; 0 = no limit */
    int max_frames;      /* frames (pages) in the file; 0 = no limit */
} image_limits_t;

/* What image_load_* would make of a file, learnt without keeping its pixels. */
typedef struct image_info {
    char format[8]; /* as up_image_t.format: "png","jpg","webp","tiff","gif","heif","avif" */
    int width;      /* pixels as the image is seen: EXIF orientations 5-8 swap width and height */
    int height;     /* pixels, likewise */
    int bands;      /* as up_image_t.bands (see image_probe_file for GIF) */
    int depth;      /* as up_image_t.depth: 8 or 16 bits per sample */
    int n_frames;   /* as up_image_t.n_frames: 1 for a still image */
} image_info_t;

typedef struct image_save_opts {
    const char *format; /* "png", "jpg" (or "jpeg"), "webp"; NULL = from the path's
                           extension, else the image's source format if writable, else png */
    int quality;        /* 1..100 for jpg/webp; 0 = default (jpg 92, webp 90); ignored for png */
    int srgb;           /* 1: convert the values from img->icc to sRGB and write no ICC profile
                           (EXIF and XMP are still written); 0: write the values and img->icc as
                           they are */
    int strip;          /* 1: write no metadata at all (no ICC, EXIF or XMP); implies srgb, so
                           that colours stay right */
    /* PNG only (ignored for jpg and webp); all 0 = the image as it is, losslessly: */
    int png_depth;           /* 8: write a 16-bit image at 8 bits (rounded); 0 or 16 = its own depth */
    int png_palette;         /* 0 = no palette; 2, 4, 16 or 256 = quantised (libimagequant, see
                                image_png_palette_supported) to at most that many colours, 8-bit,
                                alpha kept; a gray image becomes an RGB palette (a gray ICC profile
                                is then converted to sRGB, as for webp) */
    int png_palette_quality; /* with png_palette: the quantiser's quality 1..100 (lower: fewer
                                colours, a smaller file); 0 = 100 */
    int png_dither;          /* with png_palette: 1 = error diffusion (libvips' amount 1.0), 0 = none */
} image_save_opts_t;

/*
 * Start libvips once for the process: thread-safe and idempotent (later calls
 * return the first call's result). Sets libvips to one worker thread per
 * call (unless VIPS_CONCURRENCY is set in the environment), turns off its
 * operation cache, blocks its untrusted loaders and routes its log messages
 * to our debug log instead of stderr.
 * Returns 0, or UP_ERR_BACKEND when libvips cannot start.
 */
int image_init(void);

/*
 * Stop libvips and free its global state. Call once at process exit, after
 * every other image_* call has returned; libvips cannot be started again.
 */
void image_shutdown(void);

/*
 * Decode a whole image file into *out (new; free with image_free). lim may be
 * NULL (no limit). On error *out is NULL and the code is:
 *   UP_ERR_NOT_FOUND  the file does not exist
 *   UP_ERR_IO         it cannot be opened or read, or is not a regular file
 *   UP_ERR_IMAGE      empty, not an image, an unsupported format, truncated or corrupt
 *   UP_ERR_TOO_LARGE  width*height over lim->max_pixels, or more frames than
 *                     lim->max_frames (refused before decoding; the message, e.g.
 *                     "the image has 1000 frames; the limit is 100 frames", stands alone)
 *   UP_ERR_NOMEM      the pixel buffer cannot be allocated
 * The message in err does not name the path: prefix it where that helps.
 */
int image_load_file(const char *path, const image_limits_t *lim, up_image_t **out, up_error_t *err);

/*
 * Decode an image held in memory (buf is borrowed, only read during the
 * call). Same rules and errors as image_load_file, without NOT_FOUND and IO.
 */
int image_load_buffer(const void *buf, size_t size, const image_limits_t *lim, up_image_t **out,
                      up_error_t *err);

/*
 * What image_load_file would make of path, from the header only, into *info
 * (cleared first): the format from the bytes (same allow-list as the load),
 * the size as seen, bands, depth and frame count, nothing decoded. lim may
 * be NULL. Errors and messages as image_load_file's (UP_ERR_TOO_LARGE
 * before any decoding), except that a file cut short or corrupt after its
 * header is not noticed (image_verify_file notices). bands is the load's,
 * save for a GIF with transparency somewhere: 4 here, 3 after a load when
 * its first frame is opaque (image_verify_file knows). Cost: the header
 * (for GIF and WebP the file is read: frames are counted), no pixels.
 */
int image_probe_file(const char *path, const image_limits_t *lim, image_info_t *info, up_error_t *err);

/* image_probe_file for an image held in memory (buf borrowed, only read
 * during the call); errors as image_load_buffer's. */
int image_probe_buffer(const void *buf, size_t size, const image_limits_t *lim, image_info_t *info,
                       up_error_t *err);

/*
 * image_probe_file, then every pixel of the first frame decoded in strips
 * and dropped (a reduction over a sequential load: memory O(width x a few
 * hundred rows), not O(width x height)), so that a truncated or corrupt
 * file gives the error image_load_file gives (UP_ERR_IMAGE "truncated or
 * corrupt PNG data: ..."), and *info equals the load's, GIF bands
 * included. Takes
 * about the decoder's time; no colour conversion, rotation or copy.
 * Formats that decode whole frames (GIF, WebP, HEIF, interlaced PNG,
 * progressive JPEG) hold a frame meanwhile, as their load does. Calls in
 * several threads share a budget of 32 MB of decoder memory: a call whose
 * estimate does not fit waits for others to finish (one always runs).
 */
int image_verify_file(const char *path, const image_limits_t *lim, image_info_t *info, up_error_t *err);

/* image_verify_file for an image held in memory (buf borrowed). */
int image_verify_buffer(const void *buf, size_t size, const image_limits_t *lim, image_info_t *info,
                        up_error_t *err);

/*
 * A new image with zeroed pixels, format "", n_frames 1 and no metadata
 * (sRGB). bands 1..4, depth 8 or 16. Returns NULL on a bad argument, on
 * size overflow or when out of memory.
 */
up_image_t *image_new(int width, int height, int bands, int depth);

/* Free an image, its pixels and its metadata; accepts NULL. */
void image_free(up_image_t *img);

/*
 * Replace dst's ICC profile, EXIF and XMP with copies of src's (borrowed),
 * for an image made from src's values (an upscaled or resized copy). dst's
 * old metadata is freed. Returns 0, or UP_ERR_NOMEM (dst then keeps its old
 * metadata).
 */
int image_copy_metadata(up_image_t *dst, const up_image_t *src);

/*
 * Convert img's values, in place, from its ICC profile to sRGB (gray stays
 * gray, in sRGB's tone curve; same bands, depth and alpha), then free the
 * profile (icc NULL). A no-op for an image without a profile; an sRGB
 * profile is dropped without touching the values. EXIF and XMP are kept.
 * Errors: UP_ERR_INVALID (bad image), UP_ERR_IMAGE (libvips cannot use the
 * profile; img is unchanged), UP_ERR_NOMEM.
 */
int image_to_srgb(up_image_t *img, up_error_t *err);

/* Bytes of img->pixels: width*height*bands*depth/8. */
size_t image_size(const up_image_t *img);

/* 1 when the last band is alpha (bands 2 or 4). */
static inline int image_has_alpha(const up_image_t *img) { return img->bands == 2 || img->bands == 4; }

/*
 * Encode img (borrowed) to *buf (new, release with free()) and *size bytes.
 * png keeps depth and alpha; jpg flattens alpha onto white and writes 8 bits;
 * webp keeps alpha and writes 8 bits. Metadata: img->icc, img->exif (with
 * orientation 1, EXIF over 64 KB dropped) and img->xmp are written unless
 * opts says srgb (values converted to sRGB, no ICC profile) or strip (no
 * metadata, values converted to sRGB). A profile the format cannot carry
 * (a gray profile in WebP, which is always RGB) is converted to sRGB
 * instead. opts may be NULL.
 * Errors: UP_ERR_INVALID (unknown output format, quality out of range, bad
 * image), UP_ERR_IMAGE (the encoder failed), UP_ERR_NOMEM.
 */
int image_save_buffer(const up_image_t *img, const image_save_opts_t *opts, void **buf, size_t *size,
                      up_error_t *err);

/*
 * Encode img (borrowed) as image_save_buffer does and write it to path. The
 * file is written under a temporary name in the same folder and renamed into
 * place, so path never holds a partial image. Errors: as image_save_buffer,
 * plus UP_ERR_IO when the file cannot be written.
 */
int image_save_file(const up_image_t *img, const char *path, const image_save_opts_t *opts, up_error_t *err);

/*
 * Resample in (borrowed) to exactly width x height into *out (new; same
 * bands, depth, format and metadata as in), through vips_resize with kernel lanczos3,
 * the two axes scaled independently. An axis that shrinks is filtered with
 * Lanczos3 (vips_reduce); an axis that grows is interpolated bicubically,
 * which is what vips_resize does for every kernel in libvips 8.14
 * (vips_reduce cannot enlarge). Alpha images are resampled premultiplied,
 * so transparent pixels do not bleed colour. Errors: UP_ERR_INVALID (size
 * < 1 or bad image), UP_ERR_NOMEM, UP_ERR_IMAGE (libvips failed).
 */
int image_resize(const up_image_t *in, int width, int height, up_image_t **out, up_error_t *err);

/*
 * Place in (borrowed) with its top-left corner at (left, top) on a new
 * width x height canvas of background into *out (new); what of in falls
 * outside the canvas is cut, and left/top may be negative. background is
 * RGBA in 8-bit values (times 257 for a 16-bit image), taken as values in
 * in's colour profile. *out has in's depth, format and metadata, and in's
 * bands widened where the background needs it: an alpha band (in's pixels
 * opaque) when background[3] < 255 and in has none; RGB when in is gray and
 * the background is not (r, g, b not all equal), the gray values then
 * converted from a gray ICC profile to sRGB first and the profile dropped.
 * Errors: UP_ERR_INVALID (size < 1, bad image), UP_ERR_NOMEM, UP_ERR_IMAGE.
 */
int image_embed(const up_image_t *in, int width, int height, int left, int top,
                const unsigned char background[4], up_image_t **out, up_error_t *err);

/*
 * The width x height area of in (borrowed) at (left, top), which must lie
 * inside in, into *out (new; same bands, depth, format and metadata).
 * Errors: UP_ERR_INVALID (an area not inside in, bad image), UP_ERR_NOMEM,
 * UP_ERR_IMAGE.
 */
int image_crop(const up_image_t *in, int left, int top, int width, int height, up_image_t **out,
               up_error_t *err);

/*
 * 1 when this libvips build can quantise PNGs to a palette
 * (image_save_opts_t.png_palette: libvips built with libimagequant or
 * quantizr), else 0. Learnt once per process by encoding a tiny image.
 */
int image_png_palette_supported(void);

/*
 * Output format named by a path's extension, case-insensitive: "png" (.png),
 * "jpg" (.jpg, .jpeg, .jpe), "webp" (.webp); NULL for anything else. The
 * returned string is static.
 */
const char *image_format_from_path(const char *path);

/* 1 when image_save_* can write fmt ("png", "jpg", "jpeg", "webp"), else 0. */
int image_format_supported_for_output(const char *fmt);

/*
 * The canonical name of an output format image_save_* can write, given any
 * of its names, case-insensitive: "png", "jpg" (for "jpg" and "jpeg") or
 * "webp"; NULL for anything else (and for NULL). The string is static.
 */
const char *image_format_canonical(const char *fmt);

/* The quality image_save_* uses for quality 0: 92 for jpg, 90 for webp, 0 for png or anything else. */
int image_format_default_quality(const char *fmt);

#endif
