/*
 * image.h - decode, encode and resize images through libvips.
 *
 * This is the only part of upres that talks to libvips. Everything above it
 * (the upscale pipeline, the HTTP layer) sees images as plain interleaved
 * 8- or 16-bit pixel buffers in sRGB, whatever the file looked like:
 *
 *   - any format this libvips build reads and trusts (JPEG, PNG, WebP, TIFF,
 *     GIF first frame, HEIF/AVIF); libvips' "untrusted" loaders (ImageMagick,
 *     PDF, SVG, JPEG-XL, JPEG 2000, PPM, FITS, ...) are blocked for safety;
 *   - EXIF orientation applied, so width and height are as the image is seen;
 *   - embedded ICC profiles converted to sRGB, CMYK / Lab / other spaces
 *     converted to sRGB; grayscale stays grayscale; palettes become RGB(A);
 *     alpha is kept as the last band;
 *   - 8-bit stays 8-bit, 16-bit stays 16-bit, anything else (float, 32-bit
 *     integer, 1-bit) becomes 8 or 16 bits;
 *   - truncated or corrupt files are errors, never half images, and the
 *     pixel limit is enforced from the header before anything is decoded.
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
} up_image_t;

typedef struct image_limits {
    uint64_t max_pixels; /* width*height of the decoded image; 0 = no limit */
} image_limits_t;

typedef struct image_save_opts {
    const char *format; /* "png", "jpg" (or "jpeg"), "webp"; NULL = from the path's
                           extension, else the image's source format if writable, else png */
    int quality;        /* 1..100 for jpg/webp; 0 = default (jpg 92, webp 90); ignored for png */
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
 *   UP_ERR_TOO_LARGE  width*height over lim->max_pixels (refused before decoding)
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
 * A new image with zeroed pixels and format "". bands 1..4, depth 8 or 16.
 * Returns NULL on a bad argument, on size overflow or when out of memory.
 */
up_image_t *image_new(int width, int height, int bands, int depth);

/* Free an image and its pixels; accepts NULL. */
void image_free(up_image_t *img);

/* Bytes of img->pixels: width*height*bands*depth/8. */
size_t image_size(const up_image_t *img);

/* 1 when the last band is alpha (bands 2 or 4). */
static inline int image_has_alpha(const up_image_t *img) { return img->bands == 2 || img->bands == 4; }

/*
 * Encode img (borrowed) to *buf (new, release with free()) and *size bytes.
 * png keeps depth and alpha; jpg flattens alpha onto white and writes 8 bits;
 * webp keeps alpha and writes 8 bits. No metadata is written (no EXIF, no
 * orientation, no ICC profile): pixels are sRGB. opts may be NULL.
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
 * bands, depth and format as in), through vips_resize with kernel lanczos3,
 * the two axes scaled independently. An axis that shrinks is filtered with
 * Lanczos3 (vips_reduce); an axis that grows is interpolated bicubically,
 * which is what vips_resize does for every kernel in libvips 8.14
 * (vips_reduce cannot enlarge). Alpha images are resampled premultiplied,
 * so transparent pixels do not bleed colour. Errors: UP_ERR_INVALID (size
 * < 1 or bad image), UP_ERR_NOMEM, UP_ERR_IMAGE (libvips failed).
 */
int image_resize(const up_image_t *in, int width, int height, up_image_t **out, up_error_t *err);

/*
 * Output format named by a path's extension, case-insensitive: "png" (.png),
 * "jpg" (.jpg, .jpeg, .jpe), "webp" (.webp); NULL for anything else. The
 * returned string is static.
 */
const char *image_format_from_path(const char *path);

/* 1 when image_save_* can write fmt ("png", "jpg", "jpeg", "webp"), else 0. */
int image_format_supported_for_output(const char *fmt);

#endif
