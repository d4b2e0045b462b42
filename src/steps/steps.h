/*
 * steps.h - a job's pipeline: an ordered list of steps run over one decoded
 * image (a still, or the frames of an animation), from the job's input
 * asset to its encoded result.
 *
 * A pipeline is data: a JSON array kept in the job's record, each element
 * an object with "op" and that step's fields, so a new step is a new
 * function and a row in the step table (steps.c), never a schema change:
 *
 *   {"op":"upscale", "model":"realesrgan-x4plus", "scale":4, "tile":0, "alpha":"resample"}
 *       model: a registry family or file stem (required; letters, digits
 *              and . _ + -, at most 127);
 *       scale: output / input, 0.1 .. 16 (a non-integer factor: the network
 *              runs at its smallest native scale >= the factor, then an exact
 *              Lanczos resample); 0 or absent = the model's native scale;
 *       tile: tile edge in input pixels, 16 .. 8192, 0 = automatic;
 *       alpha: "resample" (default) or "model".
 *   {"op":"resize", "width":800, "height":600, "fit":"pad", "background":"#ffffff"}
 *       width and/or height (1 .. 65535; one alone keeps the aspect ratio,
 *       the other side rounded half up, at least 1);
 *       fit, only with both: "stretch" (default: exactly that size), "pad"
 *       (scaled to fit inside, centred on bars of background), "crop"
 *       (scaled to cover, the centre cut out); background, only with "pad":
 *       "#rrggbb" or "#rrggbbaa", absent = transparent where the image has
 *       alpha, else white; an alpha below ff gives an image without alpha
 *       an alpha band, a colour that is not gray makes a gray image RGB.
 *   {"op":"encode", "format":"webp", "quality":80, "target_bytes":200000, "frames":100}
 *       format: "png", "jpg" ("jpeg" is read as "jpg"), "webp", "avif",
 *       "gif", "ico", or absent = the input's own if it is png, jpg or
 *       webp, else png (image_format_default_output);
 *       quality (jpg, webp, avif, gif; ico ignores it) 1..100, 0 or
 *       absent = the format's default (image_format_default_quality; for
 *       gif it picks colours, dither and inter-frame loss: image.h); a png
 *       below 100 is quantised to a 256-colour palette at that quality
 *       (libimagequant), 100 or absent is lossless;
 *       target_bytes 1 .. 10^9, 0 or absent = none: the largest result
 *       wanted, met by searching quality below the one asked (and for PNG
 *       8 bits, then palette quantisation; ico: its one encode), never by
 *       changing the dimensions; unreachable = the step fails naming the
 *       smallest size it reached;
 *       frames 1 .. 10000, 0 or absent = 1: the frame limit. With gif or
 *       webp output (asked for, or webp as the input's own) an animated
 *       input keeps its first `frames` frames, delays and loop count, and
 *       every step runs on each frame alone; otherwise, and with frames 1,
 *       the result is the input's first frame, still. The input must
 *       hold those frames: steps_frame_limit says how many the worker
 *       loads (image_load_file_frames).
 *       ico holds one image of at most 256x256 (its directory stores a
 *       side in one byte): a larger image is first resampled to fit,
 *       keeping its aspect ratio (the longer side 256, the other rounded
 *       half up), and the encode's "out" and steps_output_size say so.
 *
 * A pipeline has at least one step; encode, when present, is last, and a
 * pipeline without one ends with the default encode. Parsing checks every
 * field (ranges, names, unknown fields refused), so a pipeline that was
 * accepted at submission runs; whether a model exists is the caller's
 * check (it depends on the registry: steps_resolve).
 *
 * Running: steps_run decodes nothing and encodes once (a target_bytes
 * search: up to 8 times, 14 for PNG). Animations run frame by frame:
 * upscale and resize never see across a frame's border (the upscaler pads
 * its tiles with neighbouring pixels). It keeps one image
 * between the steps, reports progress over the whole pipeline (each step
 * weighted by its expected cost: upscales by the pixels the network makes, the rest
 * a small share), and records what each step did in a JSON array parallel
 * to the steps (sizes in and out, the model variant run, the quality an
 * encode chose, seconds).
 *
 * Thread safety: parsing is pure; steps_run uses the caller's upscalers,
 * one thread at a time each.
 */
#ifndef UPRES_STEPS_STEPS_H
#define UPRES_STEPS_STEPS_H

#include <jansson.h>
#include <stdatomic.h>

#include "core/err.h"
#include "image/image.h"
#include "upscale/upscale.h"

#define STEPS_MAX 8 /* steps in one pipeline */

typedef enum {
    STEP_UPSCALE = 0,
    STEP_RESIZE = 1,
    STEP_ENCODE = 2,
} step_kind_t;

typedef enum {
    STEP_FIT_STRETCH = 0,
    STEP_FIT_PAD = 1,
    STEP_FIT_CROP = 2,
} step_fit_t;

typedef struct step {
    step_kind_t kind;
    struct {
        char model[128];       /* registry family or file stem */
        double scale;          /* 0 = native */
        int tile;              /* 0 = automatic */
        upscale_alpha_t alpha; /* UPSCALE_ALPHA_RESAMPLE (default) or UPSCALE_ALPHA_MODEL */
    } upscale;
    struct {
        int width, height;           /* 0 = from the other side's ratio; at least one >= 1 */
        step_fit_t fit;              /* with both sides */
        int has_background;          /* 0 = transparent with alpha, else white */
        unsigned char background[4]; /* RGBA */
    } resize;
    struct {
        char format[8];         /* "png", "jpg", "webp", "avif", "gif", "ico"; "" = the input's if png,
                                   jpg or webp, else png */
        int quality;            /* 1..100, 0 = default */
        long long target_bytes; /* 0 = none */
        int frames;             /* frames of an animation kept for gif/webp output, 1..10000; 0 = 1 */
    } encode;
} step_t;

typedef struct steps {
    int n;
    step_t step[STEPS_MAX];
} steps_t;

/*
 * Parse and check a pipeline (a JSON array, borrowed) into *out. Refusals
 * are UP_ERR_INVALID with a message fit for a client that names the step
 * and the field ("step 2 (resize): width must be 1 to 65535").
 */
int steps_parse(const json_t *array, steps_t *out, up_error_t *err);

/* The same from JSON text (as the job record keeps it). */
int steps_parse_text(const char *text, steps_t *out, up_error_t *err);

/* The pipeline as JSON text, the form steps_parse_text reads (new: free()). NULL when out of memory. */
char *steps_text(const steps_t *steps);

/* The one-step pipeline the older dialects submit: upscale with model and scale, then encode. */
void steps_upscale(steps_t *out, const char *model, double scale, int tile, const char *format, int quality);

/*
 * How many frames the worker decodes for this pipeline, the max_frames of
 * image_load_file_frames: the encode step's frames when it writes gif or
 * webp, or leaves the format to the input (a WebP stays WebP), else 1.
 * steps_run keeps at most this many of the frames it is given.
 */
int steps_frame_limit(const steps_t *steps);

/* The first upscale step, or NULL (borrowed: for a job's summary fields, model and scale). */
const step_t *steps_first_upscale(const steps_t *steps);

/*
 * Check every upscale step's model against reg (borrowed) and settle its
 * scale: a scale of 0 becomes the native scale of the variant the registry
 * picks for it (the largest of a family), so that steps_output_size is
 * exact and the job record says what will run. Returns 0, or
 * UP_ERR_NOT_FOUND with "step N (upscale): unknown model '...' (installed:
 * ...)". Pure apart from *steps; call it at submission.
 */
int steps_resolve(steps_t *steps, const upscale_registry_t *reg, up_error_t *err);

/*
 * The output size the pipeline will make from a w x h input (one frame:
 * an animation of n frames makes n of these), for checks at submission
 * (pixel limits, tiers): *ow, *oh, exactly what steps_run makes
 * (the same size functions; an upscale is round(w * scale), a side kept in
 * proportion round half up, at least 1). An upscale with scale 0 counts as
 * the scale its model's name ends in ("-x2") or else 4: steps_resolve
 * first for the registry's answer. 0 x 0 when a step would make the image
 * empty (a scale of 0.1 on a 4-pixel side; steps_run then fails); sides
 * are capped at INT_MAX.
 */
void steps_output_size(const steps_t *steps, int w, int h, int *ow, int *oh);

/* What steps_run needs from the worker that runs it. */
typedef struct steps_env {
    /*
     * The upscaler for model at scale (the worker's cache: loaded on first
     * use, borrowed). Errors as upscale_registry_resolve / upscaler_new.
     */
    int (*upscaler)(void *ctx, const char *model, double scale, upscaler_t **out, up_error_t *err);
    void *ctx;
    /* progress over the whole pipeline 0..100; non-zero return cancels (UP_ERR_CANCELLED); may be NULL */
    upscale_progress_fn progress;
    void *progress_ctx;
    const atomic_int *abort;              /* borrowed, may be NULL: stop between layers */
    size_t tile_memory;                   /* 0 = upscale_opts_init's */
    unsigned long long max_output_pixels; /* 0 = no limit: checked before each step runs, over all
                                             the frames it makes */
    int srgb;                             /* encode: convert to sRGB, no ICC profile */
    int strip;                            /* encode: no metadata */
} steps_env_t;

/*
 * What a pipeline made. The report holds one object per step run, with
 * "op", "in" and "out" ([width, height]) and "seconds", and per op:
 *   upscale: "model" (as asked), "variant_scale" (the native scale run),
 *            "scale" (the factor made), "alpha" when "model" on alpha;
 *   resize:  "fit" (with both sides), "background" ("#rrggbbaa", pad only);
 *   encode:  "format", "quality" (jpg, webp, avif, gif: the one used),
 *            "bytes", and with target_bytes "target_bytes" and "encodes"
 *            (how many tried); for a PNG that had to shrink "depth": 8 or
 *            "palette": {"colours", "quality" (the quantiser's), "dither"}.
 * Every entry of an animation also has "frames" (how many it ran on).
 */
typedef struct steps_result {
    void *data;        /* the encoded result (new: free()) */
    size_t size;       /* bytes */
    char format[8];    /* "png", "jpg", "webp", "avif", "gif", "ico" */
    int width, height; /* of a frame */
    int n_frames;      /* frames in the result: 1, or an animation's (gif, webp) */
    json_t *report;    /* one object per step run, the default encode included (new reference) */
} steps_result_t;

/*
 * Run steps over in (taken over: freed by the call, whatever happens; its
 * frames beyond what the encode keeps are dropped first, see "frames")
 * and fill *res. Returns 0, UP_ERR_CANCELLED (progress said so or abort was
 * set), UP_ERR_TOO_LARGE (a step would pass max_output_pixels, or an
 * encode cannot reach target_bytes: "cannot reach N bytes: the smallest is
 * M bytes (webp, quality 1)"), or the failing step's error with its
 * message prefixed by the step ("step 3 (encode): ..."; every error is
 * prefixed so). On error *res holds nothing to free.
 * Progress: non-decreasing, 0..99 while running (the callback is also
 * asked before each step and between a search's encodes, so that it can
 * cancel), then 100 once after the last step, whose return is ignored.
 */
int steps_run(const steps_t *steps, up_image_t *in, const steps_env_t *env, steps_result_t *res,
              up_error_t *err);

/*
 * The same in two halves, for a worker that encodes on another thread
 * than the one that runs the network: steps_run_begin runs every step but
 * the final encode (the default one when the pipeline has none) and
 * returns what is left in *out (new: steps_run_end or steps_pending_free);
 * steps_run_end runs the encode, fills *res and takes p over, whatever
 * happens. Returns and progress as steps_run (progress stays below 100
 * until the end, which reports 100). env (borrowed) is used by both and
 * must outlive steps_run_end; the two may run on different threads, one
 * after the other. steps_run is begin then end.
 */
typedef struct steps_pending steps_pending_t;

int steps_run_begin(const steps_t *steps, up_image_t *in, const steps_env_t *env, steps_pending_t **out,
                    up_error_t *err);
int steps_run_end(steps_pending_t *p, steps_result_t *res, up_error_t *err);

/* Free a pending run that will not be ended (the image it holds, its report). Accepts NULL. */
void steps_pending_free(steps_pending_t *p);

/* Free what a steps_result holds (accepts a zeroed one). */
void steps_result_fini(steps_result_t *res);

#endif
