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
 *     against a limit; image_load_file and image_load_buffer decode only
 *     the first frame, image_load_*_frames the first N frames of an
 *     animated GIF or WebP (see Frames below);
 *   - truncated or corrupt files are errors, never half images, and the
 *     pixel and frame limits are enforced from the header before anything
 *     is decoded;
 *   - what a file is (format, size, bands, depth, frames) can be learnt
 *     without holding its pixels: image_probe_* reads the header only,
 *     image_verify_* also decodes every pixel in strips and drops them.
 *
 * Saving writes PNG, JPEG, WebP, AVIF, GIF or ICO (image_format_canonical
 * names them). PNG, JPEG, WebP and AVIF carry the image's ICC profile, EXIF
 * and XMP back, or sRGB values and no profile when asked to
 * (image_save_opts_t.srgb), or no metadata at all (.strip); GIF and ICO
 * always hold sRGB values and no metadata.
 *
 * Frames. An up_image_t holds n_pages frames of width x height, one after
 * the other in pixels: libvips' own layout for animations, a width x
 * (height * n_pages) image whose page height is height. Frame i starts at
 * image_frame_pixels(img, i); every frame is a whole canvas (the loader has
 * applied the file's disposal and blending), with its display time in
 * delays[i] (ms) and the loop count in loop. Only image_load_*_frames makes
 * more than one; only image_save_* to gif or webp writes more than one (an
 * animation), and image_to_srgb converts them all; every other function
 * here reads the first frame alone, and
 * what it makes (a resized, cropped or embedded copy) has one frame. To
 * work on each frame, take image_frame_view(img, i) and assemble the
 * results in an image_new_frames image.
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
    int width, height; /* pixels of one frame, >= 1 */
    int bands;         /* 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA */
    int depth;         /* bits per sample: 8 (uint8_t) or 16 (uint16_t) */
    void *pixels;      /* owned, malloc()ed: width*height*bands samples, interleaved, row-major, times
                          n_pages frames one after another (see Frames) */
    char format[8];    /* source format: "png","jpg","webp","tiff","gif","heif","avif", or "" */
    int n_frames;      /* frames (pages) in the source, of which the first n_pages are decoded; 1 for a
                          still image and for image_new */
    int n_pages;       /* frames held in pixels, 1 .. n_frames: 1 but after image_load_*_frames or
                          image_new_frames (0, in a struct filled by hand, is read as 1) */
    int *delays;       /* owned, malloc()ed, n_pages entries when n_pages > 1, else NULL: how long each
                          frame shows, ms (GIF stores centiseconds: a multiple of 10) */
    int loop;          /* times an animation plays, 0 = forever (libvips' "loop": GIF's NETSCAPE2.0
                          count, WebP's ANIM count); 0 for a still image */
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
    double fps;     /* frames per second of an animation, as Tinify reports one at upload: 1000 /
                       the mean delay in ms over all n_frames frames (= 100 / the mean in GIF's
                       centiseconds); 0 for a still image and when the file says no delays (or
                       only delays of 0) */
    int loop;       /* as up_image_t.loop: times an animation plays, 0 = forever (and for a still
                       image) */
} image_info_t;

typedef struct image_save_opts {
    const char *format; /* any name image_format_canonical knows: "png", "jpg" (or "jpeg"),
                           "webp", "avif", "gif", "ico"; NULL = from the path's extension, else
                           image_format_default_output(the image's source format) */
    int quality;        /* 1..100 for jpg, webp, avif and gif; 0 = the format's default
                           (image_format_default_quality); ignored for png and ico. gif: see
                           image_save_buffer */
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
 * image_load_file, keeping an animation: an animated GIF or WebP decodes
 * its first min(max_frames, n_frames) frames into *out (n_pages of them,
 * each a whole canvas, with their delays and the loop count; see Frames).
 * Any other file, a still one, and max_frames <= 1 load as
 * image_load_file does (n_pages 1). lim applies as there: max_frames
 * refuses a file with more frames in all (so the caller's frame limit is
 * max_frames here, a file's is lim->max_frames); max_pixels bounds one
 * frame (the same message) and also all the frames decoded together:
 * UP_ERR_TOO_LARGE "5 frames of 4000x3000 are 60.0 megapixels, over the
 * limit of 40.0 megapixels", refused from the header. An animated WebP
 * with an EXIF orientation other than 1 (which libvips cannot turn frame
 * by frame) loads its first frame only, turned. Errors as
 * image_load_file's.
 */
int image_load_file_frames(const char *path, const image_limits_t *lim, int max_frames, up_image_t **out,
                           up_error_t *err);

/* image_load_file_frames for an image held in memory (buf borrowed, only
 * read during the call); errors as image_load_buffer's. */
int image_load_buffer_frames(const void *buf, size_t size, const image_limits_t *lim, int max_frames,
                             up_image_t **out, up_error_t *err);

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

/*
 * A new image of n_pages frames (>= 1; n_frames the same) with zeroed
 * pixels and, for n_pages > 1, zeroed delays (the caller sets them) and
 * loop 0; otherwise as image_new, which is image_new_frames(..., 1). NULL
 * on a bad argument, on size overflow or when out of memory.
 */
up_image_t *image_new_frames(int width, int height, int bands, int depth, int n_pages);

/* Free an image, its pixels, delays and metadata; accepts NULL. */
void image_free(up_image_t *img);

/* Bytes of one frame of img: width*height*bands*depth/8 (image_size). */
size_t image_size(const up_image_t *img);

/* The first sample of frame i (0 .. n_pages-1) of img (borrowed). */
static inline void *image_frame_pixels(const up_image_t *img, int i) {
    return (unsigned char *)img->pixels + (size_t)i * image_size(img);
}

/*
 * Frame i (0 .. n_pages-1) of img as a one-frame image, by value, for the
 * functions that take an image (image_resize, upscaler_run, ...): its
 * pixels, format and metadata are img's (borrowed: valid while img is,
 * never to be freed: do not pass the view to image_free), n_pages 1,
 * delays NULL, loop 0.
 */
up_image_t image_frame_view(const up_image_t *img, int i);

/*
 * Keep the first n frames of img (1 .. n_pages), in place: the pixel
 * buffer shrinks to them (when realloc can), and n 1 frees the delays and
 * sets loop 0. n_frames (the source's count) is untouched.
 */
void image_frames_keep(up_image_t *img, int n);

/*
 * Replace dst's ICC profile, EXIF and XMP with copies of src's (borrowed),
 * for an image made from src's values (an upscaled or resized copy). dst's
 * old metadata is freed. Returns 0, or UP_ERR_NOMEM (dst then keeps its old
 * metadata).
 */
int image_copy_metadata(up_image_t *dst, const up_image_t *src);

/*
 * Convert img's values (every frame), in place, from its ICC profile to sRGB (gray stays
 * gray, in sRGB's tone curve; same bands, depth and alpha), then free the
 * profile (icc NULL). A no-op for an image without a profile; an sRGB
 * profile is dropped without touching the values. EXIF and XMP are kept.
 * Errors: UP_ERR_INVALID (bad image), UP_ERR_IMAGE (libvips cannot use the
 * profile; img is unchanged), UP_ERR_NOMEM.
 */
int image_to_srgb(up_image_t *img, up_error_t *err);

/* 1 when the last band is alpha (bands 2 or 4). */
static inline int image_has_alpha(const up_image_t *img) { return img->bands == 2 || img->bands == 4; }

/*
 * Encode img (borrowed) to *buf (new, release with free()) and *size bytes.
 *   png   keeps depth and alpha;
 *   jpg   flattens alpha onto white and writes 8 bits;
 *   webp  keeps alpha and writes 8 bits; every frame of an image with
 *         n_pages > 1, as an animation with its delays and loop count;
 *   avif  AV1 in HEIF (libheif's aom encoder, libvips' effort 2 of 0..9),
 *         lossy at quality, 8 bits, alpha kept; the first frame;
 *   gif   a palette of up to 256 colours from libvips' quantiser (cgif),
 *         1-bit transparency; every frame, as an animation, like webp.
 *         quality q picks 2^ceil(8q/100) colours (88..100: 256, 76..87:
 *         128, ... 1..12: 2), error-diffusion dither from q 50 up, and in
 *         an animation lets a pixel that changes by at most (100-q)*0.32
 *         keep the previous frame's value (libvips' interframe_maxerror),
 *         so that lower qualities make smaller files;
 *   ico   one entry: a 32-bit RGBA PNG (gray made RGB, alpha added), the
 *         first frame fitted into 256x256 (image_format_output_size: ICO
 *         cannot hold more), written in the ICO container (ICONDIR and one
 *         ICONDIRENTRY, see image.c); quality ignored.
 * Metadata (png, jpg, webp, avif): img->icc, img->exif (with orientation
 * 1, EXIF over 64 KB dropped) and img->xmp are written unless opts says
 * srgb (values converted to sRGB, no ICC profile) or strip (no metadata,
 * values converted to sRGB). A profile the format cannot carry (a gray
 * profile in WebP or AVIF, which are always RGB) is converted to sRGB
 * instead. gif and ico: values converted to sRGB, no metadata. opts may
 * be NULL.
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
 * "jpg" (.jpg, .jpeg, .jpe), "webp" (.webp), "avif" (.avif), "gif" (.gif),
 * "ico" (.ico); NULL for anything else. The returned string is static.
 */
const char *image_format_from_path(const char *path);

/* 1 when image_save_* can write fmt (any name image_format_canonical knows), else 0. */
int image_format_supported_for_output(const char *fmt);

/*
 * The canonical name of an output format image_save_* can write, given any
 * of its names, case-insensitive: "png", "jpg" (for "jpg" and "jpeg"),
 * "webp", "avif", "gif" or "ico"; NULL for anything else (and for NULL).
 * The string is static. This list is the one list of output formats.
 */
const char *image_format_canonical(const char *fmt);

/*
 * The quality image_save_* uses for quality 0: 92 for jpg, 90 for webp, 60
 * for avif, 100 for gif (256 colours), 0 for png, ico or anything else.
 */
int image_format_default_quality(const char *fmt);

/*
 * The format written when none is asked for, from an image's source format
 * (up_image_t.format): the source's own when it is png, jpg or webp, else
 * "png" (a GIF, AVIF, TIFF or HEIF source, "" or NULL), as before avif, gif
 * and ico could be written. Static string.
 */
const char *image_format_default_output(const char *source);

/*
 * The HTTP Content-Type of an output format, any of its names
 * (case-insensitive): "image/png", "image/jpeg", "image/webp",
 * "image/avif", "image/gif", "image/x-icon"; NULL for anything else.
 * Static string.
 */
const char *image_content_type(const char *fmt);

/* 1 when image_save_* writes every frame of fmt (an animation: gif, webp), else 0. */
int image_format_animated(const char *fmt);

/*
 * The size image_save_* writes a w x h image at in fmt: w x h, but for ico
 * when a side is over 256: fitted into 256 x 256 keeping the aspect ratio
 * (the longer side 256, the other rounded half up, at least 1).
 */
void image_format_output_size(const char *fmt, long long w, long long h, long long *ow, long long *oh);

#endif
