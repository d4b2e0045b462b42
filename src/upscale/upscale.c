/*
 * upscale.c - tiling, stitching, alpha and output scale (see upscale.h).
 *
 * DESIGN
 *
 * Tiles. The image is cut into tiles of T x T input pixels (fewer when the
 * image is smaller). Each tile is run with UPSCALE_PAD pixels of context on
 * every side, taken from the image itself where it exists and by reflect-101
 * (dcb|abcd|cba) past the image border, exactly the padding the untiled
 * reference uses; the network output is cropped by PAD*scale on each side.
 * The last tile of a row or column is shifted back inside the image rather
 * than shrunk, so every tile has the same shape and the network is planned
 * once per image (one oneDNN primitive set, no allocation per tile).
 *
 * Plans: the network keeps the plans of its recent tile shapes (the shape
 * follows the image size, so a folder or a server of mixed sizes goes back
 * to shapes it has seen), within the same tile_memory budget as one tile's
 * plan: see nn_net_set_plan_cache and docs/benchmarks.md.
 *
 * Memory: the network's arena is bounded by the tile (T is chosen from a
 * byte budget measured on a small probe plan, since every activation scales
 * with the tile area); the input is read and the output written directly in
 * their 8/16-bit interleaved form, converted per tile.
 *
 * One tile loop (run_tiles) serves both float planes (tests, reference
 * comparisons) and images, through a source that fills a padded float tile
 * and a sink that takes the cropped output.
 *
 * Stopping: the progress callback runs between tiles; opts->abort is handed
 * to the net for the length of the loop, so that a set flag stops the tile
 * between two layers (a tile of a big model takes seconds). A stopped tile
 * is not stitched in, and upscaler_run frees its partial output.
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/xmalloc.h"
#include "upscale/upscale.h"

struct upscaler {
    nn_model_t *model;
    nn_net_t *net;
    int scale;           /* native */
    double bytes_per_px; /* network memory per padded input pixel, 0 until measured */
    char file[128];      /* the variant's file stem, for the log */
};

/* A pixel count from the environment, or def when unset or not a number. */
static unsigned long long env_pixels(const char *name, unsigned long long def) {
    const char *v = getenv(name);
    char *end;
    if (!v || !*v)
        return def;
    unsigned long long n = strtoull(v, &end, 10);
    if (*end || v[0] == '-') {
        log_warn("%s=%s is not a pixel count; using %llu", name, v, def);
        return def;
    }
    return n;
}

size_t upscale_tile_memory_auto(int n_workers) {
    FILE *f = fopen("/proc/meminfo", "r");
    unsigned long long kb = 0;
    char line[128];
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1)
            break;
    if (f)
        fclose(f);
    if (kb == 0)
        return UPSCALE_DEFAULT_TILE_MEMORY;
    unsigned long long b = kb * 1024 / 2 / (unsigned long long)(n_workers > 0 ? n_workers : 1);
    return b < UPSCALE_TILE_MEMORY_MIN   ? UPSCALE_TILE_MEMORY_MIN
           : b > UPSCALE_TILE_MEMORY_MAX ? UPSCALE_TILE_MEMORY_MAX
                                         : (size_t)b;
}

static size_t once_budget;
static void once_budget_init(void) { once_budget = upscale_tile_memory_auto(1); }

void upscale_opts_init(upscale_opts_t *opts) {
    memset(opts, 0, sizeof *opts);
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, once_budget_init); /* read once: every image of a run gets the same tiles */
    opts->tile_memory = once_budget;
    opts->alpha = UPSCALE_ALPHA_RESAMPLE;
    opts->max_output_pixels = env_pixels("UPRES_MAX_OUTPUT_PIXELS", UPSCALE_DEFAULT_MAX_OUTPUT_PIXELS);
}

unsigned long long upscale_max_input_pixels(void) {
    return env_pixels("UPRES_MAX_PIXELS", UPSCALE_DEFAULT_MAX_INPUT_PIXELS);
}

int upscaler_new(const upscale_registry_t *reg, const upscale_variant_t *variant, nn_backend_kind_t backend,
                 int n_threads, upscaler_t **out, up_error_t *err) {
    char param[2048], bin[2048];
    snprintf(param, sizeof param, "%s/%s.param", reg->dir, variant->file);
    snprintf(bin, sizeof bin, "%s/%s.bin", reg->dir, variant->file);
    upscaler_t *up = xcalloc(1, sizeof *up);
    int rc = nn_model_load(param, bin, &up->model, err);
    if (rc == 0)
        rc = nn_net_new(up->model, backend, n_threads, &up->net, err);
    if (rc) {
        upscaler_free(up);
        return rc;
    }
    up->scale = variant->scale;
    snprintf(up->file, sizeof up->file, "%s", variant->file);
    *out = up;
    return 0;
}

void upscaler_free(upscaler_t *up) {
    if (!up)
        return;
    nn_net_free(up->net);
    nn_model_free(up->model);
    free(up);
}

int upscaler_scale(const upscaler_t *up) { return up->scale; }

void upscaler_plan_stats(const upscaler_t *up, nn_plan_stats_t *out) { nn_net_plan_stats(up->net, out); }

/* The plan cache's limits for a call with opts (may be NULL): see upscaler_plan_stats. */
static void plan_limits(upscaler_t *up, const upscale_opts_t *opts) {
    int n = opts && opts->max_plans > 0 ? opts->max_plans : NN_PLAN_CACHE_DEFAULT;
    size_t bytes = opts && opts->tile_memory ? opts->tile_memory : UPSCALE_DEFAULT_TILE_MEMORY;
    nn_net_set_plan_cache(up->net, n, bytes);
}

int upscaler_set_precision(upscaler_t *up, nn_precision_t want, up_error_t *err) {
    int rc = nn_net_set_precision(up->net, want, err);
    if (rc)
        return rc;
    const char *why = NULL;
    nn_precision_t got = nn_net_precision(up->net, &why);
    up->bytes_per_px = 0; /* bf16 activations take half the memory: measure again */
    log_info("upscale: %s runs in %s (%s asked: %s)", up->file, nn_precision_name(got),
             nn_precision_name(want), why);
    return 0;
}

/* reflect-101 index into [0, n): ... 2 1 | 0 1 2 ... n-1 | n-2 ... */
static int reflect101(int i, int n) {
    if (n == 1)
        return 0;
    int period = 2 * (n - 1);
    i %= period;
    if (i < 0)
        i += period;
    return i < n ? i : period - i;
}

/* ---- the tile loop --------------------------------------------------------- */

typedef struct tile_io {
    /* Fill dst (3 x ph x pw planar) with the input around (x0, y0), which may lie outside. */
    void (*fill)(void *ctx, float *dst, int x0, int y0, int pw, int ph);
    /*
     * Take rows [cy, cy + h) and columns [cx, cx + w) of src (3 x sh x sw planar)
     * as output pixels starting at (dx, dy).
     */
    void (*put)(void *ctx, const float *src, int sw, int sh, int cx, int cy, int w, int h, int dx, int dy);
    void *ctx;
} tile_io_t;

static int run_tiles(upscaler_t *up, const tile_io_t *io, int h, int w, int tile, const upscale_opts_t *opts,
                     int first, int total, up_error_t *err) {
    const int P = UPSCALE_PAD, s = up->scale;
    int th = tile > 0 && tile < h ? tile : h;
    int tw = tile > 0 && tile < w ? tile : w;
    int ph = th + 2 * P, pw = tw + 2 * P;
    int ny = (h + th - 1) / th, nx = (w + tw - 1) / tw;
    int oc, oh, ow, rc;
    const atomic_int *abort_flag = opts ? opts->abort : NULL;

    plan_limits(up, opts);
    rc = nn_model_output_shape(up->model, 3, ph, pw, &oc, &oh, &ow, err);
    if (rc)
        return rc;
    if (oc != 3 || oh != ph * s || ow != pw * s)
        return up_error_set(err, UP_ERR_UNSUPPORTED, 0,
                            "model output %dx%dx%d for a %dx%d tile is not a %dx RGB upscale", oc, ow, oh, pw,
                            ph, s);
    float *tin = up_aligned_alloc((size_t)3 * (size_t)ph * (size_t)pw, sizeof(float));
    float *tout = up_aligned_alloc((size_t)3 * (size_t)oh * (size_t)ow, sizeof(float));
    if (!tin || !tout) {
        rc = up_error_set(err, UP_ERR_NOMEM, 0, "cannot allocate tile buffers for %dx%d tiles", tw, th);
        goto done;
    }
    nn_net_set_abort(up->net, abort_flag); /* cleared at done: the flag is only borrowed for this call */
    for (int ty = 0; ty < ny; ty++) {
        for (int tx = 0; tx < nx; tx++) {
            int k = first + ty * nx + tx;
            if (opts && opts->progress && opts->progress(opts->progress_ctx, total ? k * 100 / total : 0)) {
                rc = up_error_set(err, UP_ERR_CANCELLED, 0, "cancelled after %d of %d tiles", k, total);
                goto done;
            }
            if (abort_flag && atomic_load(abort_flag)) {
                rc = up_error_set(err, UP_ERR_CANCELLED, 0, "stopped after %d of %d tiles", k, total);
                goto done;
            }
            /* the last tile is moved back inside rather than shrunk */
            int y0 = ty * th < h - th ? ty * th : h - th;
            int x0 = tx * tw < w - tw ? tx * tw : w - tw;
            io->fill(io->ctx, tin, x0 - P, y0 - P, pw, ph);
            rc = nn_net_run(up->net, tin, 3, ph, pw, tout, err);
            if (rc)
                goto done;
            io->put(io->ctx, tout, ow, oh, P * s, P * s, tw * s, th * s, x0 * s, y0 * s);
        }
    }
    if (opts && opts->progress && first + nx * ny == total)
        opts->progress(opts->progress_ctx, 100);
done:
    nn_net_set_abort(up->net, NULL);
    up_aligned_free(tin);
    up_aligned_free(tout);
    return rc;
}

int upscaler_tile_count(int h, int w, int tile) {
    int th = tile > 0 && tile < h ? tile : h;
    int tw = tile > 0 && tile < w ? tile : w;
    return ((h + th - 1) / th) * ((w + tw - 1) / tw);
}

int upscaler_choose_tile(upscaler_t *up, int h, int w, const upscale_opts_t *opts, up_error_t *err) {
    plan_limits(up, opts); /* before the probe plan below */
    if (opts->tile > 0)
        return opts->tile;
    const int probe = 64, P = UPSCALE_PAD;
    if (up->bytes_per_px == 0) {
        size_t bytes;
        int rc = nn_net_plan_size(up->net, 3, probe + 2 * P, probe + 2 * P, &bytes, err);
        if (rc)
            return rc;
        up->bytes_per_px = (double)bytes / ((probe + 2 * P) * (probe + 2 * P));
    }
    size_t budget = opts->tile_memory ? opts->tile_memory : UPSCALE_DEFAULT_TILE_MEMORY;
    int t = (int)floor(sqrt((double)budget / up->bytes_per_px)) - 2 * P;
    t = t / 16 * 16;
    if (t < 32)
        t = 32;
    /* past it a larger tile only costs memory and cache: see the header */
    int cap = nn_net_precision(up->net, NULL) == NN_PRECISION_BF16 ? UPSCALE_AUTO_TILE_MAX_BF16
                                                                   : UPSCALE_AUTO_TILE_MAX;
    if (t > cap)
        t = cap;
    int longest = h > w ? h : w;
    if (t >= longest)
        return 0;
    /* split evenly: as many tiles as the budget needs along the longer side, each as small as that
     * allows (1024 at a budget of 896 is 2 x 512, not 896 and a second 896 shifted back: 3.1x the
     * pixels); a multiple of 4 (the Winograd output tile) that never passes the budget's edge */
    int n = (longest + t - 1) / t;
    int even = ((longest + n - 1) / n + 3) / 4 * 4;
    return even < t ? even : t;
}

/* ---- float planes ------------------------------------------------------------ */

typedef struct planes_io {
    const float *in;
    float *out;
    int h, w, s;
} planes_io_t;

static void planes_fill(void *ctx, float *dst, int x0, int y0, int pw, int ph) {
    const planes_io_t *p = ctx;
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < ph; y++) {
            const float *row = p->in + ((size_t)c * p->h + (size_t)reflect101(y0 + y, p->h)) * p->w;
            float *d = dst + ((size_t)c * ph + y) * pw;
            for (int x = 0; x < pw; x++)
                d[x] = row[reflect101(x0 + x, p->w)];
        }
}

static void planes_put(void *ctx, const float *src, int sw, int sh, int cx, int cy, int w, int h, int dx,
                       int dy) {
    const planes_io_t *p = ctx;
    size_t ow = (size_t)p->w * p->s, ohh = (size_t)p->h * p->s;
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < h; y++)
            memcpy(p->out + ((size_t)c * ohh + (size_t)(dy + y)) * ow + (size_t)dx,
                   src + ((size_t)c * sh + (size_t)(cy + y)) * sw + cx, (size_t)w * sizeof(float));
}

int upscaler_run_planes(upscaler_t *up, const float *in, int c, int h, int w, float *out, int tile,
                        const upscale_opts_t *opts, int first, int total, up_error_t *err) {
    if (c != 3)
        return up_error_set(err, UP_ERR_INVALID, 0, "upscaler_run_planes takes 3 planes, not %d", c);
    planes_io_t p = {.in = in, .out = out, .h = h, .w = w, .s = up->scale};
    tile_io_t io = {planes_fill, planes_put, &p};
    if (total <= 0)
        total = upscaler_tile_count(h, w, tile);
    return run_tiles(up, &io, h, w, tile, opts, first, total, err);
}

/* ---- images ------------------------------------------------------------------ */

/*
 * Reads 8/16-bit interleaved pixels as three 0..1 planes: the colour bands
 * (gray replicated to RGB), or the alpha band replicated (alpha pass).
 * Writes the output back interleaved, quantised with round-half-up after
 * clamping in float (never convert a negative float to unsigned), gray and
 * alpha as the mean of the three output planes.
 */
typedef struct image_io {
    const up_image_t *in;
    up_image_t *out; /* native-scale output, same bands and depth */
    int alpha_pass;
} image_io_t;

static float sample(const up_image_t *img, size_t i) {
    return img->depth == 16 ? ((const uint16_t *)img->pixels)[i] * (1.0f / 65535.0f)
                            : ((const uint8_t *)img->pixels)[i] * (1.0f / 255.0f);
}

static void image_fill(void *ctx, float *dst, int x0, int y0, int pw, int ph) {
    const image_io_t *p = ctx;
    const up_image_t *img = p->in;
    int bands = img->bands, color = bands >= 3 ? 3 : 1;
    size_t plane = (size_t)ph * pw;
    for (int y = 0; y < ph; y++) {
        size_t row = (size_t)reflect101(y0 + y, img->height) * img->width;
        for (int x = 0; x < pw; x++) {
            size_t px = (row + (size_t)reflect101(x0 + x, img->width)) * bands;
            size_t o = (size_t)y * pw + x;
            if (p->alpha_pass) {
                dst[o] = dst[plane + o] = dst[2 * plane + o] = sample(img, px + (size_t)bands - 1);
            } else if (color == 3) {
                dst[o] = sample(img, px);
                dst[plane + o] = sample(img, px + 1);
                dst[2 * plane + o] = sample(img, px + 2);
            } else {
                dst[o] = dst[plane + o] = dst[2 * plane + o] = sample(img, px);
            }
        }
    }
}

static void store(up_image_t *img, size_t i, float v) {
    v = v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v;
    if (img->depth == 16)
        ((uint16_t *)img->pixels)[i] = (uint16_t)floorf(v * 65535.0f + 0.5f);
    else
        ((uint8_t *)img->pixels)[i] = (uint8_t)floorf(v * 255.0f + 0.5f);
}

static void image_put(void *ctx, const float *src, int sw, int sh, int cx, int cy, int w, int h, int dx,
                      int dy) {
    const image_io_t *p = ctx;
    up_image_t *img = p->out;
    int bands = img->bands, color = bands >= 3 ? 3 : 1;
    size_t plane = (size_t)sh * sw;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            size_t s = (size_t)(cy + y) * sw + (size_t)(cx + x);
            size_t px = ((size_t)(dy + y) * img->width + (size_t)(dx + x)) * bands;
            float r = src[s], g = src[plane + s], b = src[2 * plane + s];
            if (p->alpha_pass)
                store(img, px + (size_t)bands - 1, (r + g + b) * (1.0f / 3.0f));
            else if (color == 3) {
                store(img, px, r);
                store(img, px + 1, g);
                store(img, px + 2, b);
            } else {
                store(img, px, (r + g + b) * (1.0f / 3.0f));
            }
        }
}

/* Copy band `band` of img into a new 1-band image. */
static up_image_t *extract_band(const up_image_t *img, int band) {
    up_image_t *b = image_new(img->width, img->height, 1, img->depth);
    if (!b)
        return NULL;
    size_t n = (size_t)img->width * img->height;
    for (size_t i = 0; i < n; i++) {
        if (img->depth == 16)
            ((uint16_t *)b->pixels)[i] = ((const uint16_t *)img->pixels)[i * img->bands + band];
        else
            ((uint8_t *)b->pixels)[i] = ((const uint8_t *)img->pixels)[i * img->bands + band];
    }
    return b;
}

static void insert_band(up_image_t *img, int band, const up_image_t *b) {
    size_t n = (size_t)img->width * img->height;
    for (size_t i = 0; i < n; i++) {
        if (img->depth == 16)
            ((uint16_t *)img->pixels)[i * img->bands + band] = ((const uint16_t *)b->pixels)[i];
        else
            ((uint8_t *)img->pixels)[i * img->bands + band] = ((const uint8_t *)b->pixels)[i];
    }
}

int upscaler_run(upscaler_t *up, const up_image_t *in, const upscale_opts_t *opts, up_image_t **out,
                 up_error_t *err) {
    upscale_opts_t defaults;
    if (!opts) {
        upscale_opts_init(&defaults);
        opts = &defaults;
    }
    const int s = up->scale;
    double scale = opts->scale > 0 ? opts->scale : s;
    int has_alpha = in->bands == 2 || in->bands == 4;
    long long tw = llround(in->width * scale), th = llround(in->height * scale);
    long long nw = (long long)in->width * s, nh = (long long)in->height * s;
    up_image_t *native = NULL, *alpha = NULL, *alpha_big = NULL;
    int rc;

    if (tw < 1 || th < 1)
        return up_error_set(err, UP_ERR_INVALID, 0, "scale %g makes a %dx%d image empty", scale, in->width,
                            in->height);
    if (opts->max_output_pixels && (unsigned long long)(tw * th) > opts->max_output_pixels)
        return up_error_set(err, UP_ERR_TOO_LARGE, 0,
                            "output %lldx%lld (%.1f megapixels) is over the limit of %.1f megapixels", tw, th,
                            tw * th / 1e6, opts->max_output_pixels / 1e6);
    if (nw > INT32_MAX / 4 || nh > INT32_MAX / 4)
        return up_error_set(err, UP_ERR_TOO_LARGE, 0, "output %lldx%lld is too large", nw, nh);

    int tile = upscaler_choose_tile(up, in->height, in->width, opts, err);
    if (tile < 0)
        return tile;
    native = image_new((int)nw, (int)nh, in->bands, in->depth);
    if (!native)
        return up_error_set(err, UP_ERR_NOMEM, 0, "cannot allocate a %lldx%lld output image", nw, nh);
    if (log_get_level() >= LOG_DEBUG)
        log_debug("upscale %dx%d x%d: tile %d", in->width, in->height, s, tile);

    int passes = has_alpha && opts->alpha == UPSCALE_ALPHA_MODEL ? 2 : 1;
    int per_pass = upscaler_tile_count(in->height, in->width, tile);
    for (int pass = 0; pass < passes; pass++) {
        image_io_t p = {.in = in, .out = native, .alpha_pass = pass == 1};
        tile_io_t io = {image_fill, image_put, &p};
        rc = run_tiles(up, &io, in->height, in->width, tile, opts, pass * per_pass, passes * per_pass, err);
        if (rc)
            goto fail;
    }
    if (has_alpha && opts->alpha == UPSCALE_ALPHA_RESAMPLE) {
        alpha = extract_band(in, in->bands - 1);
        if (!alpha) {
            rc = up_error_set(err, UP_ERR_NOMEM, 0, "cannot allocate the alpha plane");
            goto fail;
        }
        rc = image_resize(alpha, (int)nw, (int)nh, &alpha_big, err);
        if (rc)
            goto fail;
        insert_band(native, native->bands - 1, alpha_big);
    }
    if (tw != nw || th != nh) {
        rc = image_resize(native, (int)tw, (int)th, out, err);
        if (rc)
            goto fail;
        image_free(native);
    } else {
        *out = native;
    }
    snprintf((*out)->format, sizeof(*out)->format, "%s", in->format);
    /* the network ran on the input's own values: the output is in the same
     * colour profile, and is the same picture for EXIF and XMP */
    if (image_copy_metadata(*out, in)) {
        image_free(*out);
        *out = NULL;
        native = NULL;
        rc = up_error_set(err, UP_ERR_NOMEM, 0, "cannot copy the image's metadata");
        goto fail;
    }
    image_free(alpha);
    image_free(alpha_big);
    return 0;
fail:
    image_free(native);
    image_free(alpha);
    image_free(alpha_big);
    return rc;
}
