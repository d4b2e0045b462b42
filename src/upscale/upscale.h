/*
 * upscale.h - the upscale pipeline shared by the CLI and the server.
 *
 * An image goes in (any decoded up_image_t), a larger image comes out:
 *
 *   colour planes -> 0..1 floats -> tiles with reflect-101 context -> network
 *   -> crop, clamp, quantise -> stitched output -> alpha upscaled and
 *   re-attached -> Lanczos to the exact requested size when the requested
 *   scale is not the model's native one.
 *
 * Models are found by scanning a models folder (upscale_registry_*): every
 * NAME.param with its NAME.bin is a model, its native scale measured from
 * the graph; files named FAMILY-xN group into one model FAMILY offering
 * several native scales. Adding a model is dropping its two files in.
 *
 * Thread safety: a registry is read-only after scanning and may be shared;
 * an upscaler (one loaded model bound to a backend) is used by one thread at
 * a time.
 */
#ifndef UPRES_UPSCALE_UPSCALE_H
#define UPRES_UPSCALE_UPSCALE_H

#include <stdatomic.h>
#include <stddef.h>

#include "core/err.h"
#include "image/image.h"
#include "nn/nn.h"

#define UPSCALE_DEFAULT_MODEL "realesrgan-x4plus"
#define UPSCALE_MAX_VARIANTS 8
#define UPSCALE_PAD 10 /* context pixels around every tile, as realesrgan-ncnn-vulkan */

/* ---- model registry ---------------------------------------------------- */

typedef struct upscale_variant {
    int scale;      /* native scale */
    char file[128]; /* file stem in the models folder, e.g. "realesr-animevideov3-x2" */
} upscale_variant_t;

typedef struct upscale_model_info {
    char name[128]; /* e.g. "realesr-animevideov3" */
    int n_variants;
    upscale_variant_t variants[UPSCALE_MAX_VARIANTS]; /* sorted by scale */
} upscale_model_info_t;

typedef struct upscale_registry {
    char dir[1024];
    int n_models;
    upscale_model_info_t *models; /* owned, sorted by name */
} upscale_registry_t;

/*
 * The models folder to use: explicit (non-NULL, non-empty) wins, then
 * $UPRES_MODELS, then <executable's folder>/../models, then the source
 * tree's models/ (compiled in). Writes into buf (size bytes).
 */
const char *upscale_models_dir(const char *explicit_dir, char *buf, size_t size);

/* Scan dir for models. *out is new (upscale_registry_free). */
int upscale_registry_scan(const char *dir, upscale_registry_t **out, up_error_t *err);
void upscale_registry_free(upscale_registry_t *reg); /* accepts NULL */

/* The model called name (a family or a file stem), or NULL. Borrowed. */
const upscale_model_info_t *upscale_registry_find(const upscale_registry_t *reg, const char *name);

/*
 * The variant to run for a requested scale: the one with exactly that
 * native scale if any, else the smallest native scale above it, else the
 * largest. scale <= 0 picks the largest.
 */
const upscale_variant_t *upscale_model_pick(const upscale_model_info_t *model, double scale);

/*
 * Resolve a user's model name (a family, or an exact file stem) and scale to
 * the variant to load (borrowed). UP_ERR_NOT_FOUND names the models that
 * exist.
 */
int upscale_registry_resolve(const upscale_registry_t *reg, const char *name, double scale,
                             const upscale_variant_t **out, up_error_t *err);

/* ---- running ------------------------------------------------------------- */

typedef enum {
    UPSCALE_ALPHA_RESAMPLE = 0, /* image_resize: bicubic when enlarging */
    UPSCALE_ALPHA_MODEL = 1,    /* the network, on alpha as a gray image */
} upscale_alpha_t;

/*
 * Called between tiles; return non-zero to cancel (the call then fails with
 * UP_ERR_CANCELLED). To stop inside a tile, set upscale_opts_t.abort.
 */
typedef int (*upscale_progress_fn)(void *ctx, int percent);

typedef struct upscale_opts {
    double scale;       /* output / input; 0 = the model's native scale */
    int tile;           /* tile edge in input pixels; 0 = from tile_memory */
    size_t tile_memory; /* bytes the network may use when tile == 0 */
    upscale_alpha_t alpha;
    upscale_progress_fn progress; /* may be NULL */
    void *progress_ctx;
    const atomic_int *abort; /* borrowed, may be NULL; non-zero: stop between layers (UP_ERR_CANCELLED) */
    unsigned long long max_output_pixels; /* 0 = no limit */
    int max_plans; /* network plans kept for reuse, within tile_memory (nn_net_set_plan_cache);
                      0 = NN_PLAN_CACHE_DEFAULT, 1 = only the one in use */
} upscale_opts_t;

#define UPSCALE_DEFAULT_TILE_MEMORY ((size_t)1 << 30) /* when the machine's memory cannot be read */
#define UPSCALE_TILE_MEMORY_MIN ((size_t)256 << 20)
#define UPSCALE_TILE_MEMORY_MAX ((size_t)8 << 30)

/*
 * The automatic tile budget of one of n_workers networks running at once:
 * half of the memory available now (MemAvailable in /proc/meminfo) shared
 * between them, within [UPSCALE_TILE_MEMORY_MIN, UPSCALE_TILE_MEMORY_MAX];
 * UPSCALE_DEFAULT_TILE_MEMORY when it cannot be read. Larger tiles mean
 * fewer passes over the borders each tile recomputes (x4plus at 512^2: 25 s
 * in one tile, 36 s in tiles of 128), so the budget grows with the machine.
 */
size_t upscale_tile_memory_auto(int n_workers);
#define UPSCALE_DEFAULT_MAX_INPUT_PIXELS 40000000ULL   /* PRODUCT.md: 40 megapixels in */
#define UPSCALE_DEFAULT_MAX_OUTPUT_PIXELS 400000000ULL /* and at most 400 megapixels out */

/*
 * Defaults: native scale, automatic tiles within upscale_tile_memory_auto(1)
 * (read at the first call, the same for the whole run), alpha resampled,
 * output at most $UPRES_MAX_OUTPUT_PIXELS pixels (default 400 million).
 */
void upscale_opts_init(upscale_opts_t *opts);

/* Input pixel limit: $UPRES_MAX_PIXELS (default 40 million; 0 = none). */
unsigned long long upscale_max_input_pixels(void);

typedef struct upscaler upscaler_t;

/*
 * Load the variant file (stem in reg->dir) and bind it to backend with
 * n_threads (0 = all cores). *out is new (upscaler_free).
 */
int upscaler_new(const upscale_registry_t *reg, const upscale_variant_t *variant, nn_backend_kind_t backend,
                 int n_threads, upscaler_t **out, up_error_t *err);
void upscaler_free(upscaler_t *up); /* accepts NULL */

/*
 * The network's precision (nn_net_set_precision; upscaler_new gives fp32).
 * Logs once which precision the net then uses and why.
 */
int upscaler_set_precision(upscaler_t *up, nn_precision_t want, up_error_t *err);
int upscaler_scale(const upscaler_t *up); /* native scale */

/*
 * The network's plan cache counters (nn_net_plan_stats). Every call with
 * opts sets the cache's limits: opts->max_plans plans within
 * opts->tile_memory bytes (without opts: the defaults), so that the plans
 * an upscaler keeps for the tile shapes of different image sizes stay
 * within the memory its tiles may use.
 */
void upscaler_plan_stats(const upscaler_t *up, nn_plan_stats_t *out);

/*
 * The core of the pipeline on float planes: in is planar c x h x w (c = 3)
 * in 0..1; out (planar c x h*s x w*s, s native, caller-sized) receives the
 * network output after reflect-101 padding and cropping, unclamped, tile by
 * tile (tile as in upscale_opts_t; 0 = one tile). first/total are the tile
 * counts for progress across several calls. Returns 0, UP_ERR_CANCELLED (the
 * progress callback said so, or opts->abort was set: then out is partly
 * written), or an engine error.
 */
int upscaler_run_planes(upscaler_t *up, const float *in, int c, int h, int w, float *out, int tile,
                        const upscale_opts_t *opts, int first, int total, up_error_t *err);

/*
 * Automatic tiles are at most this edge: a tile recomputes 10 pixels of
 * context on each side (8% more pixels at 512), while a larger one costs
 * memory and cache (bench/tile_choice.py: animevideov3 on 2048^2 takes
 * 20.9 s in tiles of 512 and 24.6 s in one tile; x4plus on 512^2, 31.6 s
 * in one tile of 512, 41.6 s in tiles of 128).
 */
#define UPSCALE_AUTO_TILE_MAX 512

/*
 * ... and at most this edge where the net runs in bf16. On AMX the
 * convolutions are fast enough that memory decides: the time per network
 * pixel is flat up to a network input of about 240^2 and then rises by a
 * quarter to a half as the 64-channel activations outgrow the caches
 * (bench/tile_cost.c; x4plus on 512^2 in bf16: 14.2 s in one tile, 9.4 s in
 * tiles of 128), which the 10-pixel borders of smaller tiles cost far less.
 */
#define UPSCALE_AUTO_TILE_MAX_BF16 192

/*
 * The tile edge for this image (opts->tile if set): the largest that fits
 * opts->tile_memory, at most UPSCALE_AUTO_TILE_MAX (UPSCALE_AUTO_TILE_MAX_BF16
 * when the net runs in bf16), then the image split
 * evenly into as many tiles of it as that takes along the longer side.
 * 0 = one tile for the whole image.
 */
int upscaler_choose_tile(upscaler_t *up, int h, int w, const upscale_opts_t *opts, up_error_t *err);

/* How many tiles of that edge (0 = one) an h x w image takes: the loop's count, for progress and reports. */
int upscaler_tile_count(int h, int w, int tile);

/*
 * Upscale a decoded image. *out is new (image_free): same bands and depth
 * as in, size round(w*scale) x round(h*scale), with in's format, ICC
 * profile, EXIF and XMP (the network runs on in's values as they are, in
 * whatever profile they are in).
 */
int upscaler_run(upscaler_t *up, const up_image_t *in, const upscale_opts_t *opts, up_image_t **out,
                 up_error_t *err);

#endif
