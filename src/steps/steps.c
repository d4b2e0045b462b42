/*
 * steps.c - a job's pipeline: parse and check it, print it, size it and run
 * it over one decoded image (see steps.h for the JSON form).
 *
 * Sits between the queue's worker (which decodes the input, supplies
 * upscalers and stores the result) and the pieces that do the work:
 * upscale.h for the network, image.h for resampling, canvases and encoding.
 *
 * DESIGN
 *
 * The op table. ops[], indexed by step_kind_t, holds everything one op is:
 * its name and fields (the unknown-field check and its message), parse,
 * print (to_json), size, cost, and an optional prepare and the run. A new
 * op is a row and its functions; nothing else switches on the kind.
 *
 * Sizes. The size functions are the one statement of how big a step's
 * output is: steps_output_size chains them for submission checks, and
 * steps_run calls the same one before each step to check max_output_pixels,
 * so the two cannot disagree. Rounding: an upscale is round(w * scale) as
 * upscaler_run makes it (llround); a resize side kept in proportion is
 * round half up in integers (never a float tie). Sizes are long long: a
 * chain of steps may pass int before a limit refuses it.
 *
 * Fit. "pad" resamples the image to fit inside the box and embeds it,
 * centred (the odd pixel right and below), on a canvas; "crop" cuts the
 * centre area of the source that has the box's aspect ratio, then resamples
 * it to the box: the same picture as scaling to cover and cutting, without
 * ever holding the scaled image, which for a long thin source can be far
 * larger than the box.
 *
 * Progress. Each step has a cost in units of one network output pixel:
 * an upscale its network pixels (input times the native scale squared,
 * twice with alpha through the model), a resize a hundredth of its input
 * and output pixels, an encode a fiftieth of its pixels (times six when it
 * searches for target_bytes). Percent = 100 * finished units / all units,
 * never lower than the last one reported, held at 99 until the pipeline
 * has finished, then 100 once. Cancellation is checked wherever progress is
 * reported: before each step, between tiles (the upscaler's callback) and
 * between the encodes of a search; env->abort also stops a tile between
 * layers.
 *
 * Encode search (target_bytes). jpg, webp, avif and gif: the requested quality (or
 * the format's default) first; when too big, a binary search below it that
 * keeps lo = the best quality known to fit and hi = the lowest known not
 * to, so the quality chosen is one whose next step up was tried and did not
 * fit: at most 1 + 7 encodes. png: the plain encode, then 8 bits for a
 * 16-bit image, then (where libvips can quantise) a 256-colour dithered
 * palette with a binary search on the quantiser's quality, then undithered
 * palettes of 256, 16, 4 and 2 colours at the lowest quality; the first
 * that fits wins. ico: its one encode (a full-colour PNG entry). The
 * dimensions never change (ico's fit into 256x256 comes before, as the
 * encode's size). When nothing fits, the step fails with UP_ERR_TOO_LARGE
 * naming the smallest result.
 *
 * Frames. An animation (up_image_t.n_pages > 1, from image_load_*_frames)
 * stays one only when the encode writes gif or webp with "frames" > 1:
 * steps_run first keeps that many frames, else the first alone, so a still
 * result never costs the other frames' work. Upscale and resize then run
 * frame by frame (each_frame): every frame goes through the op as an image
 * of its own (image_frame_view) and the results are stacked again, delays
 * and loop kept; never across frame borders, since the upscaler pads each
 * tile with its neighbouring pixels and the resampler's kernels reach
 * across rows. Sizes are per frame; costs and max_output_pixels count every
 * frame; cancellation is checked between frames too.
 *
 * Ownership in steps_run: one image (run_t.img) is held between steps;
 * each step makes its successor and the old one is freed at once, so at most
 * two are alive. The report entries are built per step and appended when
 * the step has succeeded.
 */
#include "steps/steps.h"

#include <assert.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/text.h"

#define SIDE_MAX 65535          /* resize width and height */
#define SIDE_LIMIT 10000000LL   /* any output side: libvips' VIPS_MAX_COORD */
#define SCALE_MIN 0.1           /* upscale scale, when not 0 */
#define SCALE_MAX 16.0          /* likewise */
#define TILE_MIN 16             /* upscale tile, when not 0: as the Upscale Service dialect */
#define TILE_MAX 8192           /* likewise */
#define TARGET_MAX 1000000000LL /* encode target_bytes: 1 GB */
#define FRAMES_MAX 10000        /* encode frames */
#define GUESS_SCALE 4           /* scale 0 of a model whose name says no -xN (see steps_output_size) */

/* ---- the op table -------------------------------------------------------- */

typedef struct run run_t;

/* What the parser knows about the step it reads: for its messages. */
typedef struct pctx {
    const json_t *obj; /* the step's object (borrowed) */
    int index;         /* 1-based */
    const char *op;    /* the op's name */
    up_error_t *err;
} pctx_t;

typedef struct op {
    const char *name;
    const char *const *fields; /* accepted fields besides "op", NULL-terminated */
    int (*parse)(pctx_t *p, step_t *s);
    json_t *(*to_json)(const step_t *s); /* new reference, NULL when out of memory */
    /* output size for a w x h input (0 x 0 when the image would become empty) */
    void (*size)(const step_t *s, long long w, long long h, long long *ow, long long *oh);
    double (*cost)(const step_t *s, long long w, long long h, long long ow, long long oh);
    /* before the size check: settle what the size depends on (s is the run's copy); may be NULL */
    int (*prepare)(run_t *r, step_t *s, up_error_t *err);
    /* replace r->img with the step's output, add to entry (borrowed) what the step did */
    int (*run)(run_t *r, const step_t *s, json_t *entry, up_error_t *err);
} op_t;

/* What a running pipeline holds. */
struct run {
    const steps_env_t *env;
    up_image_t *img; /* the one image between steps (owned) */
    upscaler_t *up;  /* the current upscale step's upscaler (borrowed from env) */
    steps_result_t *res;
    int n_pages;  /* frames run through the pipeline, >= 1 */
    int frame;    /* the frame each_frame is at, 0 .. n_pages-1 */
    double done;  /* cost units of the steps finished */
    double cost;  /* cost units of the step running */
    double total; /* cost units of the whole pipeline, > 0 */
    int last;     /* last percent reported, -1 before the first */
};

/* ---- parsing helpers ----------------------------------------------------- */

/* A client's string made fit for a one-line message: valid UTF-8, short, no control bytes. */
static void show(char *dst, size_t size, const char *s) {
    char cut[48];
    size_t len = strlen(s), n = text_utf8_copy(cut, sizeof cut - 3, s, len);
    if (n < len) /* cut short: say so */
        memcpy(cut + n, "...", 4);
    text_log_escape(dst, size, cut);
}

/* "step N (op): <message>" as UP_ERR_INVALID. */
static int bad(const pctx_t *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int bad(const pctx_t *p, const char *fmt, ...) {
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return up_error_set(p->err, UP_ERR_INVALID, 0, "step %d (%s): %s", p->index, p->op, msg);
}

/*
 * The integer field name into *out, when present: 1, or 0 when absent (*out
 * untouched), or UP_ERR_INVALID for another type or a value outside lo..hi
 * (range says which values are accepted, for the message). zero_ok lets 0
 * through as well.
 */
static int get_int(pctx_t *p, const char *name, long long lo, long long hi, int zero_ok, const char *range,
                   long long *out) {
    const json_t *v = json_object_get(p->obj, name);
    if (!v)
        return 0;
    if (!json_is_integer(v))
        return bad(p, "%s must be a whole number: %s", name, range);
    long long x = json_integer_value(v);
    if (!(x >= lo && x <= hi) && !(zero_ok && x == 0))
        return bad(p, "%s must be %s, not %lld", name, range, x);
    *out = x;
    return 1;
}

/* A string field: 1 with *out set (borrowed from p->obj), 0 when absent, or UP_ERR_INVALID. */
static int get_string(pctx_t *p, const char *name, const char **out) {
    const json_t *v = json_object_get(p->obj, name);
    if (!v)
        return 0;
    if (!json_is_string(v))
        return bad(p, "%s must be a string", name);
    *out = json_string_value(v);
    return 1;
}

/* The index of s in the NULL-terminated list names, or -1. */
static int lookup(const char *const *names, const char *s) {
    for (int i = 0; names[i]; i++)
        if (strcmp(names[i], s) == 0)
            return i;
    return -1;
}

/* An enum-like string field: 1 with *out = index in names, 0 when absent, or UP_ERR_INVALID. */
static int get_choice(pctx_t *p, const char *name, const char *const *names, const char *choices, int *out) {
    const char *s = NULL;
    int rc = get_string(p, name, &s);
    if (rc <= 0)
        return rc;
    int i = lookup(names, s);
    if (i < 0) {
        char shown[200];
        show(shown, sizeof shown, s);
        return bad(p, "%s must be %s, not \"%s\"", name, choices, shown);
    }
    *out = i;
    return 1;
}

static int hex_digit(char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* "#rrggbb" (alpha 255) or "#rrggbbaa" into rgba; -1 when s is neither. */
static int parse_colour(const char *s, unsigned char rgba[4]) {
    size_t n = strlen(s);
    if (s[0] != '#' || (n != 7 && n != 9))
        return -1;
    rgba[3] = 255;
    for (size_t i = 0; i < (n - 1) / 2; i++) {
        int hi = hex_digit(s[1 + 2 * i]), lo = hex_digit(s[2 + 2 * i]);
        if (hi < 0 || lo < 0)
            return -1;
        rgba[i] = (unsigned char)(hi * 16 + lo);
    }
    return 0;
}

/* (2a + b) / 2b: a / b rounded half up, for a >= 0, b > 0. */
static long long div_round(long long a, long long b) { return (2 * a + b) / (2 * b); }

static long long clamp_ll(long long v, long long lo, long long hi) { return v < lo ? lo : v > hi ? hi : v; }

/* ---- upscale ------------------------------------------------------------- */

static const char *const upscale_fields[] = {"model", "scale", "tile", "alpha", NULL};
static const char *const alpha_names[] = {"resample", "model", NULL}; /* by upscale_alpha_t */

/* Registry names are file stems: letters, digits and . _ + -, not starting with a dot. */
static int model_name_ok(const char *s) {
    if (!*s || *s == '.')
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '.' ||
              *s == '_' || *s == '+' || *s == '-'))
            return 0;
    return 1;
}

static int parse_upscale(pctx_t *p, step_t *s) {
    const char *model = NULL;
    int rc = get_string(p, "model", &model);
    if (rc < 0)
        return rc;
    if (rc == 0)
        return bad(p, "model is missing");
    if (strlen(model) >= sizeof s->upscale.model)
        return bad(p, "model must be at most %zu characters", sizeof s->upscale.model - 1);
    if (!model_name_ok(model)) {
        char shown[200];
        show(shown, sizeof shown, model);
        return bad(p, "model \"%s\" may hold only letters, digits and . _ + - (not first .)", shown);
    }
    snprintf(s->upscale.model, sizeof s->upscale.model, "%s", model);

    const json_t *v = json_object_get(p->obj, "scale");
    if (v) {
        if (!json_is_number(v))
            return bad(p, "scale must be a number: 0.1 to 16 (0 = the model's native scale)");
        double x = json_number_value(v);
        if (x != 0 && !(x >= SCALE_MIN && x <= SCALE_MAX))
            return bad(p, "scale must be 0.1 to 16 (0 = the model's native scale), not %g", x);
        s->upscale.scale = x;
    }
    long long tile = 0;
    if ((rc = get_int(p, "tile", TILE_MIN, TILE_MAX, 1, "0 (automatic) or 16 to 8192", &tile)) < 0)
        return rc;
    s->upscale.tile = (int)tile;
    int alpha = UPSCALE_ALPHA_RESAMPLE;
    if ((rc = get_choice(p, "alpha", alpha_names, "\"resample\" or \"model\"", &alpha)) < 0)
        return rc;
    s->upscale.alpha = (upscale_alpha_t)alpha;
    return UP_OK;
}

static json_t *upscale_to_json(const step_t *s) {
    json_t *o = json_pack("{s:s, s:s}", "op", "upscale", "model", s->upscale.model);
    if (o && s->upscale.scale != 0) {
        double x = s->upscale.scale; /* a whole scale prints as 4, not 4.0 */
        json_object_set_new(o, "scale", x == floor(x) ? json_integer((json_int_t)x) : json_real(x));
    }
    if (o && s->upscale.tile)
        json_object_set_new(o, "tile", json_integer(s->upscale.tile));
    if (o && s->upscale.alpha != UPSCALE_ALPHA_RESAMPLE)
        json_object_set_new(o, "alpha", json_string(alpha_names[s->upscale.alpha]));
    return o;
}

/* The native scale a model's name states ("...-x2" -> 2), else GUESS_SCALE. */
static int name_scale(const char *model) {
    const char *x = strrchr(model, 'x');
    if (!x || x == model || x[-1] != '-' || !x[1])
        return GUESS_SCALE;
    int n = 0;
    for (const char *c = x + 1; *c; c++) {
        if (*c < '0' || *c > '9' || n > 100)
            return GUESS_SCALE;
        n = n * 10 + (*c - '0');
    }
    return n >= 1 ? n : GUESS_SCALE;
}

static double upscale_factor(const step_t *s) {
    return s->upscale.scale > 0 ? s->upscale.scale : name_scale(s->upscale.model);
}

static void upscale_size(const step_t *s, long long w, long long h, long long *ow, long long *oh) {
    double f = upscale_factor(s); /* as upscaler_run: llround(width * scale) */
    *ow = llround((double)w * f);
    *oh = llround((double)h * f);
}

static double upscale_cost(const step_t *s, long long w, long long h, long long ow, long long oh) {
    (void)ow;
    (void)oh;
    double n = ceil(upscale_factor(s) - 1e-9); /* the network's scale, about */
    if (n < 2)
        n = 2;
    return (double)w * (double)h * n * n * (s->upscale.alpha == UPSCALE_ALPHA_MODEL ? 2 : 1);
}

static int upscale_prepare(run_t *r, step_t *s, up_error_t *err) {
    if (!r->env->upscaler)
        return up_error_set(err, UP_ERR_INVALID, 0, "no upscaler was supplied");
    int rc = r->env->upscaler(r->env->ctx, s->upscale.model, s->upscale.scale, &r->up, err);
    if (rc)
        return rc;
    if (s->upscale.scale <= 0) /* native: now known */
        s->upscale.scale = upscaler_scale(r->up);
    return UP_OK;
}

static int progress_at(run_t *r, double fraction);

/* The upscaler's progress (0..100 over one frame's tiles) as a share of this step. */
static int on_tiles(void *ctx, int percent) {
    run_t *r = ctx;
    return progress_at(r, (r->frame + percent / 100.0) / r->n_pages) != UP_OK;
}

static void replace_image(run_t *r, up_image_t *img) {
    image_free(r->img);
    r->img = img;
}

/* One frame's share of an op: in (borrowed, one frame) into *out (new), or *out NULL for "unchanged". */
typedef int (*frame_fn)(run_t *r, const step_t *s, const up_image_t *in, up_image_t **out, up_error_t *err);

/*
 * Replace r->img with what fn makes of each of its frames (DESIGN, Frames):
 * a still image goes to fn as it is; an animation frame by frame, the
 * results stacked in a new image with the same delays and loop. fn makes
 * every frame the same shape, the frames being alike.
 */
static int each_frame(run_t *r, const step_t *s, frame_fn fn, up_error_t *err) {
    up_image_t *img = r->img, *out = NULL, *all = NULL;
    int n = r->n_pages, rc = UP_OK;
    assert(n == (img->n_pages > 1 ? img->n_pages : 1));
    for (int i = 0; i < n; i++) {
        r->frame = i;
        if (i > 0 && (rc = progress_at(r, (double)i / n))) {
            up_error_set(err, rc, 0, "cancelled at frame %d of %d", i + 1, n);
            goto fail;
        }
        up_image_t view = n > 1 ? image_frame_view(img, i) : *img;
        if ((rc = fn(r, s, &view, &out, err)))
            goto fail;
        if (n == 1) {
            if (out)
                replace_image(r, out);
            return UP_OK;
        }
        const up_image_t *made = out ? out : &view;
        if (!all) {
            if (!(all = image_new_frames(made->width, made->height, made->bands, made->depth, n)) ||
                image_copy_metadata(all, made)) {
                rc = up_error_set(err, UP_ERR_NOMEM, 0, "cannot allocate %d frames of %dx%d", n, made->width,
                                  made->height);
                goto fail;
            }
            memcpy(all->format, made->format, sizeof all->format);
            memcpy(all->delays, img->delays, (size_t)n * sizeof *all->delays);
            all->loop = img->loop;
            all->n_frames = img->n_frames;
        }
        assert(made->width == all->width && made->height == all->height && made->bands == all->bands &&
               made->depth == all->depth);
        memcpy(image_frame_pixels(all, i), made->pixels, image_size(made));
        image_free(out);
        out = NULL;
    }
    replace_image(r, all);
    return UP_OK;
fail:
    image_free(out);
    image_free(all);
    return rc;
}

static int upscale_frame(run_t *r, const step_t *s, const up_image_t *in, up_image_t **out, up_error_t *err) {
    upscale_opts_t o;
    upscale_opts_init(&o);
    o.scale = s->upscale.scale;
    o.tile = s->upscale.tile;
    if (r->env->tile_memory)
        o.tile_memory = r->env->tile_memory;
    o.alpha = s->upscale.alpha;
    o.progress = on_tiles;
    o.progress_ctx = r;
    o.abort = r->env->abort;
    o.max_output_pixels = r->env->max_output_pixels;
    return upscaler_run(r->up, in, &o, out, err);
}

static int upscale_run(run_t *r, const step_t *s, json_t *entry, up_error_t *err) {
    int rc = each_frame(r, s, upscale_frame, err);
    if (rc)
        return rc;
    json_object_set_new(entry, "model", json_string(s->upscale.model));
    json_object_set_new(entry, "variant_scale", json_integer(upscaler_scale(r->up)));
    json_object_set_new(entry, "scale", json_real(s->upscale.scale));
    if (s->upscale.alpha != UPSCALE_ALPHA_RESAMPLE && image_has_alpha(r->img))
        json_object_set_new(entry, "alpha", json_string(alpha_names[s->upscale.alpha]));
    return UP_OK;
}

/* ---- resize -------------------------------------------------------------- */

static const char *const resize_fields[] = {"width", "height", "fit", "background", NULL};
static const char *const fit_names[] = {"stretch", "pad", "crop", NULL}; /* by step_fit_t */

static int parse_resize(pctx_t *p, step_t *s) {
    long long w = 0, h = 0;
    int rc;
    if ((rc = get_int(p, "width", 1, SIDE_MAX, 0, "1 to 65535", &w)) < 0 ||
        (rc = get_int(p, "height", 1, SIDE_MAX, 0, "1 to 65535", &h)) < 0)
        return rc;
    if (!w && !h)
        return bad(p, "width or height is needed (or both)");
    s->resize.width = (int)w;
    s->resize.height = (int)h;
    int fit = STEP_FIT_STRETCH;
    if ((rc = get_choice(p, "fit", fit_names, "\"stretch\", \"pad\" or \"crop\"", &fit)) < 0)
        return rc;
    if (rc == 1 && (!w || !h))
        return bad(p, "fit needs both width and height (one side alone keeps the aspect ratio)");
    s->resize.fit = (step_fit_t)fit;
    const char *bg = NULL;
    if ((rc = get_string(p, "background", &bg)) < 0)
        return rc;
    if (rc == 1) {
        if (parse_colour(bg, s->resize.background)) {
            char shown[200];
            show(shown, sizeof shown, bg);
            return bad(p, "background must be \"#rrggbb\" or \"#rrggbbaa\", not \"%s\"", shown);
        }
        if (s->resize.fit != STEP_FIT_PAD)
            return bad(p, "background is only used with fit \"pad\"");
        s->resize.has_background = 1;
    }
    return UP_OK;
}

static json_t *resize_to_json(const step_t *s) {
    json_t *o = json_pack("{s:s}", "op", "resize");
    if (o && s->resize.width)
        json_object_set_new(o, "width", json_integer(s->resize.width));
    if (o && s->resize.height)
        json_object_set_new(o, "height", json_integer(s->resize.height));
    if (o && s->resize.width && s->resize.height)
        json_object_set_new(o, "fit", json_string(fit_names[s->resize.fit]));
    if (o && s->resize.has_background) {
        const unsigned char *c = s->resize.background;
        char hex[10];
        if (c[3] == 255)
            snprintf(hex, sizeof hex, "#%02x%02x%02x", c[0], c[1], c[2]);
        else
            snprintf(hex, sizeof hex, "#%02x%02x%02x%02x", c[0], c[1], c[2], c[3]);
        json_object_set_new(o, "background", json_string(hex));
    }
    return o;
}

/*
 * How a resize is done (see DESIGN, Fit), for a w x h input (both >= 1):
 * the source area [sx, sx+sw) x [sy, sy+sh) is resampled to iw x ih and
 * placed at (x, y) on an ow x oh canvas.
 */
typedef struct resize_plan {
    long long sx, sy, sw, sh; /* source area: all of it but for crop */
    long long iw, ih;         /* resampled size */
    long long x, y;           /* position on the canvas: 0 but for pad */
    long long ow, oh;         /* the output */
} resize_plan_t;

static void resize_plan(const step_t *s, long long w, long long h, resize_plan_t *p) {
    long long W = s->resize.width, H = s->resize.height;
    memset(p, 0, sizeof *p);
    p->sw = w;
    p->sh = h;
    if (!H) /* one side: the other in proportion, round half up, at least 1 */
        H = clamp_ll(div_round(h * W, w), 1, LLONG_MAX);
    else if (!W)
        W = clamp_ll(div_round(w * H, h), 1, LLONG_MAX);
    else if (s->resize.fit == STEP_FIT_PAD) { /* fit inside: the limiting side exact */
        if (W * h <= H * w) {
            p->iw = W;
            p->ih = clamp_ll(div_round(h * W, w), 1, H);
        } else {
            p->ih = H;
            p->iw = clamp_ll(div_round(w * H, h), 1, W);
        }
        p->x = (W - p->iw) / 2;
        p->y = (H - p->ih) / 2;
    } else if (s->resize.fit == STEP_FIT_CROP) { /* the centre with the box's ratio */
        if (W * h >= H * w) {
            p->sh = clamp_ll(div_round(H * w, W), 1, h);
            p->sy = (h - p->sh) / 2;
        } else {
            p->sw = clamp_ll(div_round(W * h, H), 1, w);
            p->sx = (w - p->sw) / 2;
        }
    }
    if (!p->iw) {
        p->iw = W;
        p->ih = H;
    }
    p->ow = W;
    p->oh = H;
}

static void resize_size(const step_t *s, long long w, long long h, long long *ow, long long *oh) {
    resize_plan_t p;
    resize_plan(s, w, h, &p);
    *ow = p.ow;
    *oh = p.oh;
}

static double resize_cost(const step_t *s, long long w, long long h, long long ow, long long oh) {
    (void)s;
    return ((double)w * (double)h + (double)ow * (double)oh) / 100;
}

/* The bars of a pad: the step's background, else transparent where the image has alpha, else white. */
static const unsigned char *pad_background(const step_t *s, int has_alpha) {
    static const unsigned char clear[4] = {0, 0, 0, 0}, white[4] = {255, 255, 255, 255};
    return s->resize.has_background ? s->resize.background : has_alpha ? clear : white;
}

/* Replace *cur (owned, NULL = still in) with next. */
static void advance(up_image_t **cur, up_image_t *next) {
    image_free(*cur);
    *cur = next;
}

static int resize_frame(run_t *r, const step_t *s, const up_image_t *in, up_image_t **out, up_error_t *err) {
    (void)r;
    resize_plan_t p;
    resize_plan(s, in->width, in->height, &p);
    up_image_t *cur = NULL, *next = NULL; /* cur: the frame so far (owned), NULL while it is in */
    int rc;
    if (p.sw != in->width || p.sh != in->height) {
        if ((rc = image_crop(in, (int)p.sx, (int)p.sy, (int)p.sw, (int)p.sh, &next, err)))
            goto fail;
        advance(&cur, next);
    }
    if (p.iw != (cur ? cur : in)->width || p.ih != (cur ? cur : in)->height) {
        if ((rc = image_resize(cur ? cur : in, (int)p.iw, (int)p.ih, &next, err)))
            goto fail;
        advance(&cur, next);
    }
    if (s->resize.fit == STEP_FIT_PAD && s->resize.width && s->resize.height) {
        const unsigned char *bg = pad_background(s, image_has_alpha(in));
        if ((rc = image_embed(cur ? cur : in, (int)p.ow, (int)p.oh, (int)p.x, (int)p.y, bg, &next, err)))
            goto fail;
        advance(&cur, next);
    }
    assert((cur ? cur : in)->width == p.ow && (cur ? cur : in)->height == p.oh);
    *out = cur;
    return UP_OK;
fail:
    image_free(cur);
    return rc;
}

static int resize_run(run_t *r, const step_t *s, json_t *entry, up_error_t *err) {
    int had_alpha = image_has_alpha(r->img);
    int rc = each_frame(r, s, resize_frame, err);
    if (rc)
        return rc;
    if (s->resize.width && s->resize.height)
        json_object_set_new(entry, "fit", json_string(fit_names[s->resize.fit]));
    if (s->resize.fit == STEP_FIT_PAD && s->resize.width && s->resize.height) {
        const unsigned char *bg = pad_background(s, had_alpha);
        char hex[10];
        snprintf(hex, sizeof hex, "#%02x%02x%02x%02x", bg[0], bg[1], bg[2], bg[3]);
        json_object_set_new(entry, "background", json_string(hex));
    }
    return UP_OK;
}

/* ---- encode -------------------------------------------------------------- */

static const char *const encode_fields[] = {"format", "quality", "target_bytes", "frames", NULL};

static int parse_encode(pctx_t *p, step_t *s) {
    const char *fmt = NULL;
    int rc = get_string(p, "format", &fmt);
    if (rc < 0)
        return rc;
    if (rc == 1) {
        const char *canon = image_format_canonical(fmt);
        if (!canon) {
            char shown[200];
            show(shown, sizeof shown, fmt);
            return bad(p,
                       "format must be \"png\", \"jpg\", \"webp\", \"avif\", \"gif\" or \"ico\", not \"%s\"",
                       shown);
        }
        snprintf(s->encode.format, sizeof s->encode.format, "%s", canon);
    }
    long long q = 0, target = 0, frames = 0;
    if ((rc = get_int(p, "quality", 1, 100, 1, "1 to 100 (0 = the format's default)", &q)) < 0 ||
        (rc = get_int(p, "target_bytes", 1, TARGET_MAX, 1, "1 to 1000000000 (0 = none)", &target)) < 0 ||
        (rc = get_int(p, "frames", 1, FRAMES_MAX, 1, "1 to 10000 (0 = the first frame only)", &frames)) < 0)
        return rc;
    s->encode.quality = (int)q;
    s->encode.target_bytes = target;
    s->encode.frames = (int)frames;
    return UP_OK;
}

static json_t *encode_to_json(const step_t *s) {
    json_t *o = json_pack("{s:s}", "op", "encode");
    if (o && s->encode.format[0])
        json_object_set_new(o, "format", json_string(s->encode.format));
    if (o && s->encode.quality)
        json_object_set_new(o, "quality", json_integer(s->encode.quality));
    if (o && s->encode.target_bytes)
        json_object_set_new(o, "target_bytes", json_integer(s->encode.target_bytes));
    if (o && s->encode.frames)
        json_object_set_new(o, "frames", json_integer(s->encode.frames));
    return o;
}

/* The same size, but for ico (fitted into 256x256); "" is the input's own format, never ico. */
static void encode_size(const step_t *s, long long w, long long h, long long *ow, long long *oh) {
    image_format_output_size(s->encode.format, w, h, ow, oh);
}

static double encode_cost(const step_t *s, long long w, long long h, long long ow, long long oh) {
    (void)ow;
    (void)oh;
    return (double)w * (double)h / 50 * (s->encode.target_bytes ? 6 : 1);
}

/* A search for the best encode within target bytes. */
typedef struct search {
    run_t *r;
    long long target;          /* bytes; 0 = any size fits */
    int n_encodes, n_expected; /* for progress */
    void *best;                /* the last result that fitted (owned), or NULL */
    size_t best_size;
    image_save_opts_t best_opts;
    size_t smallest; /* the smallest result seen, for the message; 0 = none yet */
    image_save_opts_t smallest_opts;
} search_t;

/* Encode r->img with o: *fits says whether it is within the target (then it becomes st->best). */
static int try_encode(search_t *st, const image_save_opts_t *o, int *fits, up_error_t *err) {
    int rc = progress_at(st->r, st->n_expected ? (double)st->n_encodes / st->n_expected : 0);
    if (rc)
        return up_error_set(err, rc, 0, "cancelled after %d encodes", st->n_encodes);
    void *buf = NULL;
    size_t size = 0;
    if ((rc = image_save_buffer(st->r->img, o, &buf, &size, err)))
        return rc;
    st->n_encodes++;
    if (!st->smallest || size < st->smallest) {
        st->smallest = size;
        st->smallest_opts = *o;
    }
    *fits = !st->target || size <= (unsigned long long)st->target;
    if (*fits) {
        free(st->best);
        st->best = buf;
        st->best_size = size;
        st->best_opts = *o;
    } else {
        free(buf);
    }
    return UP_OK;
}

/* jpg, webp, avif, gif: the quality asked for, else the highest below it that fits (DESIGN). */
static int search_quality(search_t *st, image_save_opts_t o, up_error_t *err) {
    int fits, rc = try_encode(st, &o, &fits, err);
    int lo = 0, hi = o.quality; /* lo fits (0: none known), hi does not */
    while (!rc && !fits && hi - lo > 1) {
        o.quality = (lo + hi) / 2;
        int ok;
        if ((rc = try_encode(st, &o, &ok, err)))
            break;
        if (ok)
            lo = o.quality;
        else
            hi = o.quality;
    }
    return rc;
}

/* png: plain, 8-bit, then palettes (DESIGN); stops at the first that fits. */
static int search_png(search_t *st, image_save_opts_t o, up_error_t *err) {
    int fits, rc = try_encode(st, &o, &fits, err);
    if (rc || fits)
        return rc;
    int hi = o.png_palette_quality; /* asked for a palette (quality below 100): search below it */
    if (!o.png_palette) {
        if (st->r->img->depth == 16) {
            o.png_depth = 8;
            if ((rc = try_encode(st, &o, &fits, err)) || fits)
                return rc;
        }
        if (!image_png_palette_supported())
            return UP_OK; /* said once in the log by image.c */
        o.png_palette = 256;
        o.png_dither = 1;
        o.png_palette_quality = hi = 100;
        if ((rc = try_encode(st, &o, &fits, err)) || fits)
            return rc;
    }
    int lo = 0; /* quantiser quality: lo fits (0: none known), hi does not */
    while (hi - lo > 1) {
        o.png_palette_quality = (lo + hi) / 2;
        if ((rc = try_encode(st, &o, &fits, err)))
            return rc;
        if (fits)
            lo = o.png_palette_quality;
        else
            hi = o.png_palette_quality;
    }
    if (lo)
        return UP_OK;
    static const int colours[] = {256, 16, 4, 2};
    o.png_dither = 0;
    o.png_palette_quality = 1;
    for (size_t i = 0; i < sizeof colours / sizeof colours[0]; i++) {
        o.png_palette = colours[i];
        if ((rc = try_encode(st, &o, &fits, err)) || fits)
            return rc;
    }
    return UP_OK;
}

/* What an encode was, for messages: "webp, quality 40", "png, 16 colours, no dither". */
static void describe(const image_save_opts_t *o, char *dst, size_t size) {
    if (strcmp(o->format, "ico") == 0)
        snprintf(dst, size, "ico");
    else if (strcmp(o->format, "png") != 0)
        snprintf(dst, size, "%s, quality %d", o->format, o->quality);
    else if (o->png_palette)
        snprintf(dst, size, "png, %d colours, quantiser quality %d, %s", o->png_palette,
                 o->png_palette_quality ? o->png_palette_quality : 100,
                 o->png_dither ? "dithered" : "no dither");
    else if (o->png_depth == 8)
        snprintf(dst, size, "png, 8 bits");
    else
        snprintf(dst, size, "png");
}

/* The format an encode step writes for an image from source (up_image_t.format). */
static const char *encode_format(const step_t *s, const char *source) {
    return s->encode.format[0] ? s->encode.format : image_format_default_output(source);
}

static int encode_run(run_t *r, const step_t *s, json_t *entry, up_error_t *err) {
    const char *fmt = encode_format(s, r->img->format);
    int png = strcmp(fmt, "png") == 0, ico = strcmp(fmt, "ico") == 0, rc;
    long long w, h;
    image_format_output_size(fmt, r->img->width, r->img->height, &w, &h);
    if (w != r->img->width || h != r->img->height) { /* ico: fitted first, so that "out" says so */
        up_image_t *fitted = NULL;
        if ((rc = image_resize(r->img, (int)w, (int)h, &fitted, err)))
            return rc;
        replace_image(r, fitted);
    }
    image_save_opts_t o = {.format = fmt, .srgb = r->env->srgb, .strip = r->env->strip};
    int has_quality = image_format_default_quality(fmt) > 0;
    o.quality = !has_quality ? 0 : s->encode.quality ? s->encode.quality : image_format_default_quality(fmt);
    if (png && s->encode.quality > 0 && s->encode.quality < 100 && image_png_palette_supported()) {
        o.png_palette =
            256; /* a PNG below quality 100 is quantised (smaller than its source), 100 lossless */
        o.png_dither = 1;
        o.png_palette_quality = s->encode.quality;
    }
    search_t st = {.r = r, .target = s->encode.target_bytes};
    if (st.target)
        st.n_expected = png ? 14 : ico ? 1 : 8;
    int fits;
    rc = png ? search_png(&st, o, err) : ico ? try_encode(&st, &o, &fits, err) : search_quality(&st, o, err);
    if (rc)
        goto fail;
    if (!st.best) {
        char how[120];
        describe(&st.smallest_opts, how, sizeof how);
        rc = up_error_set(err, UP_ERR_TOO_LARGE, 0, "cannot reach %lld bytes: the smallest is %zu bytes (%s)",
                          st.target, st.smallest, how);
        goto fail;
    }
    const image_save_opts_t *b = &st.best_opts;
    json_object_set_new(entry, "format", json_string(fmt));
    if (has_quality)
        json_object_set_new(entry, "quality", json_integer(b->quality));
    if (b->png_depth)
        json_object_set_new(entry, "depth", json_integer(b->png_depth));
    if (b->png_palette)
        json_object_set_new(entry, "palette",
                            json_pack("{s:i, s:i, s:b}", "colours", b->png_palette, "quality",
                                      b->png_palette_quality ? b->png_palette_quality : 100, "dither",
                                      b->png_dither));
    json_object_set_new(entry, "bytes", json_integer((json_int_t)st.best_size));
    if (st.target) {
        json_object_set_new(entry, "target_bytes", json_integer(st.target));
        json_object_set_new(entry, "encodes", json_integer(st.n_encodes));
    }
    r->res->data = st.best;
    r->res->size = st.best_size;
    snprintf(r->res->format, sizeof r->res->format, "%s", fmt);
    r->res->width = r->img->width;
    r->res->height = r->img->height;
    r->res->n_frames = r->n_pages;
    return UP_OK;
fail:
    free(st.best);
    return rc;
}

/* ---- the table ----------------------------------------------------------- */

static const op_t ops[] = {
    [STEP_UPSCALE] = {"upscale", upscale_fields, parse_upscale, upscale_to_json, upscale_size, upscale_cost,
                      upscale_prepare, upscale_run},
    [STEP_RESIZE] = {"resize", resize_fields, parse_resize, resize_to_json, resize_size, resize_cost, NULL,
                     resize_run},
    [STEP_ENCODE] = {"encode", encode_fields, parse_encode, encode_to_json, encode_size, encode_cost, NULL,
                     encode_run},
};
#define N_OPS ((int)(sizeof ops / sizeof ops[0]))

/* ---- parse and print ------------------------------------------------------ */

/* names joined by ", " into dst (size bytes), with last_sep before the last ("or"), or ", ". */
static void join(char *dst, size_t size, const char *const *names, int n, const char *last_sep) {
    size_t used = 0;
    dst[0] = '\0';
    for (int i = 0; i < n && used < size; i++) {
        const char *sep = i == 0 ? "" : i == n - 1 && last_sep ? last_sep : ", ";
        used += (size_t)snprintf(dst + used, size - used, "%s%s", sep, names[i]);
    }
}

/* The op called name, or -1. */
static int op_kind(const char *name) {
    for (int k = 0; k < N_OPS; k++)
        if (strcmp(ops[k].name, name) == 0)
            return k;
    return -1;
}

static int parse_step(const json_t *obj, int index, int is_last, step_t *s, up_error_t *err) {
    const char *names[N_OPS];
    char known[200];
    for (int k = 0; k < N_OPS; k++)
        names[k] = ops[k].name;
    join(known, sizeof known, names, N_OPS, " or ");
    if (!json_is_object(obj))
        return up_error_set(err, UP_ERR_INVALID, 0, "step %d: must be an object with \"op\" (%s)", index,
                            known);
    const json_t *op = json_object_get(obj, "op");
    if (!op)
        return up_error_set(err, UP_ERR_INVALID, 0, "step %d: op is missing (%s)", index, known);
    if (!json_is_string(op))
        return up_error_set(err, UP_ERR_INVALID, 0, "step %d: op must be a string (%s)", index, known);
    int kind = op_kind(json_string_value(op));
    if (kind < 0) {
        char shown[200];
        show(shown, sizeof shown, json_string_value(op));
        return up_error_set(err, UP_ERR_INVALID, 0, "step %d: unknown op \"%s\" (%s)", index, shown, known);
    }
    pctx_t p = {.obj = obj, .index = index, .op = ops[kind].name, .err = err};
    const char *key;
    const json_t *value;
    json_object_foreach((json_t *)obj, key, value) {
        if (strcmp(key, "op") != 0 && lookup(ops[kind].fields, key) < 0) {
            char shown[200];
            int n_fields = 0;
            while (ops[kind].fields[n_fields])
                n_fields++;
            show(shown, sizeof shown, key);
            join(known, sizeof known, ops[kind].fields, n_fields, NULL);
            return bad(&p, "unknown field \"%s\" (%s)", shown, known);
        }
    }
    if (kind == STEP_ENCODE && !is_last)
        return bad(&p, "encode must be the last step");
    memset(s, 0, sizeof *s);
    s->kind = (step_kind_t)kind;
    return ops[kind].parse(&p, s);
}

int steps_parse(const json_t *array, steps_t *out, up_error_t *err) {
    assert(out);
    memset(out, 0, sizeof *out);
    if (!json_is_array(array))
        return up_error_set(err, UP_ERR_INVALID, 0, "the pipeline must be a JSON array of steps");
    size_t n = json_array_size(array);
    if (n == 0)
        return up_error_set(err, UP_ERR_INVALID, 0, "the pipeline has no steps");
    if (n > STEPS_MAX)
        return up_error_set(err, UP_ERR_INVALID, 0, "the pipeline has %zu steps; the limit is %d", n,
                            STEPS_MAX);
    for (size_t i = 0; i < n; i++) {
        int rc = parse_step(json_array_get(array, i), (int)i + 1, i == n - 1, &out->step[i], err);
        if (rc) {
            memset(out, 0, sizeof *out);
            return rc;
        }
    }
    out->n = (int)n;
    return UP_OK;
}

int steps_parse_text(const char *text, steps_t *out, up_error_t *err) {
    assert(out);
    memset(out, 0, sizeof *out);
    if (!text)
        return up_error_set(err, UP_ERR_INVALID, 0, "the pipeline is missing");
    json_error_t jerr;
    json_t *j = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
    if (!j)
        return up_error_set(err, UP_ERR_INVALID, jerr.line,
                            "the pipeline is not valid JSON: %s (line %d, column %d)", jerr.text, jerr.line,
                            jerr.column);
    int rc = steps_parse(j, out, err);
    json_decref(j);
    return rc;
}

char *steps_text(const steps_t *steps) {
    assert(steps && steps->n >= 0 && steps->n <= STEPS_MAX);
    json_t *arr = json_array();
    for (int i = 0; arr && i < steps->n; i++) {
        const step_t *s = &steps->step[i];
        assert(s->kind >= 0 && (int)s->kind < N_OPS);
        if (json_array_append_new(arr, ops[s->kind].to_json(s))) {
            json_decref(arr);
            arr = NULL;
        }
    }
    char *text = arr ? json_dumps(arr, JSON_COMPACT) : NULL;
    json_decref(arr);
    return text;
}

void steps_upscale(steps_t *out, const char *model, double scale, int tile, const char *format, int quality) {
    assert(out && model);
    memset(out, 0, sizeof *out);
    out->n = 2;
    step_t *u = &out->step[0], *e = &out->step[1];
    u->kind = STEP_UPSCALE;
    snprintf(u->upscale.model, sizeof u->upscale.model, "%s", model);
    u->upscale.scale = scale;
    u->upscale.tile = tile;
    u->upscale.alpha = UPSCALE_ALPHA_RESAMPLE;
    e->kind = STEP_ENCODE;
    const char *canon = image_format_canonical(format);
    snprintf(e->encode.format, sizeof e->encode.format, "%s", canon ? canon : "");
    e->encode.quality = quality;
}

int steps_frame_limit(const steps_t *steps) {
    assert(steps);
    const step_t *e = steps->n > 0 ? &steps->step[steps->n - 1] : NULL;
    if (!e || e->kind != STEP_ENCODE || e->encode.frames <= 1)
        return 1;
    if (e->encode.format[0] && !image_format_animated(e->encode.format))
        return 1;
    return e->encode.frames;
}

const step_t *steps_first_upscale(const steps_t *steps) {
    for (int i = 0; steps && i < steps->n; i++)
        if (steps->step[i].kind == STEP_UPSCALE)
            return &steps->step[i];
    return NULL;
}

int steps_resolve(steps_t *steps, const upscale_registry_t *reg, up_error_t *err) {
    assert(steps && reg);
    for (int i = 0; i < steps->n; i++) {
        step_t *s = &steps->step[i];
        if (s->kind != STEP_UPSCALE)
            continue;
        const upscale_variant_t *v;
        int rc = upscale_registry_resolve(reg, s->upscale.model, s->upscale.scale, &v, err);
        if (rc) {
            up_error_prefix(err, "step %d (upscale)", i + 1);
            return rc;
        }
        if (s->upscale.scale <= 0)
            s->upscale.scale = v->scale;
    }
    return UP_OK;
}

/* ---- sizes ----------------------------------------------------------------- */

/* One step's output size, clamped to INT_MAX a side (a limit refuses it long before). */
static void step_size(const step_t *s, long long w, long long h, long long *ow, long long *oh) {
    assert(s->kind >= 0 && (int)s->kind < N_OPS);
    if (w < 1 || h < 1) {
        *ow = *oh = 0;
        return;
    }
    ops[s->kind].size(s, w, h, ow, oh);
    if (*ow < 1 || *oh < 1)
        *ow = *oh = 0;
    *ow = clamp_ll(*ow, 0, INT_MAX);
    *oh = clamp_ll(*oh, 0, INT_MAX);
}

void steps_output_size(const steps_t *steps, int w, int h, int *ow, int *oh) {
    long long x = w, y = h;
    for (int i = 0; i < steps->n; i++)
        step_size(&steps->step[i], x, y, &x, &y);
    *ow = (int)x;
    *oh = (int)y;
}

/* ---- running --------------------------------------------------------------- */

/*
 * Report progress at fraction (0..1) of the running step, and check for a
 * stop: returns UP_ERR_CANCELLED when the callback asks or abort is set
 * (the caller words the message), else 0.
 */
static int progress_at(run_t *r, double fraction) {
    const steps_env_t *env = r->env;
    if (env->abort && atomic_load(env->abort))
        return UP_ERR_CANCELLED;
    if (!env->progress)
        return UP_OK;
    fraction = fraction < 0 ? 0 : fraction > 1 ? 1 : fraction;
    int p = (int)floor(100.0 * (r->done + r->cost * fraction) / r->total);
    if (p > 99) /* 100 is for the end */
        p = 99;
    if (p < r->last)
        p = r->last;
    r->last = p;
    return env->progress(env->progress_ctx, p) ? UP_ERR_CANCELLED : UP_OK;
}

/* "[w, h]", new reference. */
static json_t *size_json(long long w, long long h) {
    return json_pack("[I, I]", (json_int_t)w, (json_int_t)h);
}

/* Check a pipeline that did not come through steps_parse: shape only. */
static int check_steps(const steps_t *steps, up_error_t *err) {
    if (steps->n < 1 || steps->n > STEPS_MAX)
        return up_error_set(err, UP_ERR_INVALID, 0, "the pipeline has %d steps: 1 to %d", steps->n,
                            STEPS_MAX);
    for (int i = 0; i < steps->n; i++) {
        const step_t *s = &steps->step[i];
        if ((int)s->kind < 0 || (int)s->kind >= N_OPS)
            return up_error_set(err, UP_ERR_INVALID, 0, "step %d: unknown op %d", i + 1, (int)s->kind);
        if (s->kind == STEP_ENCODE && i != steps->n - 1)
            return up_error_set(err, UP_ERR_INVALID, 0, "step %d (encode): encode must be the last step",
                                i + 1);
    }
    return UP_OK;
}

/*
 * Run one step (s: the run's copy, index 1-based) over r->img and append
 * what it did to r->res->report. Errors carry "step N (op): ".
 */
static int run_step(run_t *r, step_t *s, int index, up_error_t *err) {
    const op_t *op = &ops[s->kind];
    const steps_env_t *env = r->env;
    json_t *entry = NULL;
    double t0 = mono_s();
    long long iw = r->img->width, ih = r->img->height, ow, oh;
    int rc = progress_at(r, 0);
    if (rc) {
        up_error_set(err, rc, 0, "cancelled");
        goto fail;
    }
    if (op->prepare && (rc = op->prepare(r, s, err)))
        goto fail;
    step_size(s, iw, ih, &ow, &oh);
    long long n = r->n_pages; /* frames: libvips holds them stacked, the limit counts them all */
    if (ow > SIDE_LIMIT || oh * n > SIDE_LIMIT) {
        if (n > 1)
            rc = up_error_set(err, UP_ERR_TOO_LARGE, 0,
                              "output %lld frames of %lldx%lld is too large (at most %lld rows in all)", n,
                              ow, oh, SIDE_LIMIT);
        else
            rc = up_error_set(err, UP_ERR_TOO_LARGE, 0, "output %lldx%lld is too large (at most %lld a side)",
                              ow, oh, SIDE_LIMIT);
        goto fail;
    }
    if (env->max_output_pixels && (unsigned long long)(ow * oh * n) > env->max_output_pixels) {
        if (n > 1)
            rc = up_error_set(err, UP_ERR_TOO_LARGE, 0,
                              "output %lld frames of %lldx%lld (%.1f megapixels) is over the limit of %.1f "
                              "megapixels",
                              n, ow, oh, (double)(ow * oh * n) / 1e6, (double)env->max_output_pixels / 1e6);
        else
            rc = up_error_set(err, UP_ERR_TOO_LARGE, 0,
                              "output %lldx%lld (%.1f megapixels) is over the limit of %.1f megapixels", ow,
                              oh, (double)(ow * oh) / 1e6, (double)env->max_output_pixels / 1e6);
        goto fail;
    }
    if (!(entry = json_pack("{s:s, s:o}", "op", op->name, "in", size_json(iw, ih)))) {
        rc = up_error_set(err, UP_ERR_NOMEM, 0, "cannot allocate the report");
        goto fail;
    }
    if ((rc = op->run(r, s, entry, err)))
        goto fail;
    assert(r->img->width == ow && r->img->height == oh); /* steps_output_size tells the truth */
    assert((r->img->n_pages > 1 ? r->img->n_pages : 1) == r->n_pages);
    json_object_set_new(entry, "out", size_json(r->img->width, r->img->height));
    if (r->n_pages > 1)
        json_object_set_new(entry, "frames", json_integer(r->n_pages));
    json_object_set_new(entry, "seconds", json_real(mono_s() - t0));
    if (json_array_append_new(r->res->report, entry)) { /* takes entry, even on failure */
        entry = NULL;
        rc = up_error_set(err, UP_ERR_NOMEM, 0, "cannot allocate the report");
        goto fail;
    }
    r->up = NULL;
    return UP_OK;
fail:
    json_decref(entry);
    r->up = NULL;
    if (err)
        up_error_prefix(err, "step %d (%s)", index, op->name);
    return rc;
}

/* A run stopped before its encode (steps_run_begin): what steps_run_end needs. */
struct steps_pending {
    run_t r;
    step_t plan[STEPS_MAX + 1]; /* the steps to run, the default encode included */
    double costs[STEPS_MAX + 1];
    int n;              /* steps in plan; plan[n - 1] is the encode */
    steps_result_t res; /* the report so far (r.res points here) */
};

void steps_pending_free(steps_pending_t *p) {
    if (!p)
        return;
    image_free(p->r.img);
    steps_result_fini(&p->res);
    free(p);
}

int steps_run_begin(const steps_t *steps, up_image_t *in, const steps_env_t *env, steps_pending_t **out,
                    up_error_t *err) {
    assert(steps && env && out);
    *out = NULL;
    steps_pending_t *p = calloc(1, sizeof *p);
    if (!p) {
        image_free(in);
        return up_error_set(err, UP_ERR_NOMEM, 0, "cannot allocate the pipeline's run");
    }
    run_t *r = &p->r;
    *r = (run_t){.env = env, .img = in, .res = &p->res, .last = -1};
    int n, rc;
    if (!in || in->width < 1 || in->height < 1) {
        rc = up_error_set(err, UP_ERR_INVALID, 0, "the pipeline has no input image");
        goto fail;
    }
    if ((rc = check_steps(steps, err)))
        goto fail;
    for (n = 0; n < steps->n; n++)
        p->plan[n] = steps->step[n];
    if (p->plan[n - 1].kind != STEP_ENCODE) { /* the default encode */
        memset(&p->plan[n], 0, sizeof p->plan[n]);
        p->plan[n++].kind = STEP_ENCODE;
    }
    p->n = n;
    /* the frames to run (DESIGN, Frames): all those kept for an animated result, else the first */
    const step_t *enc = &p->plan[n - 1];
    int held = in->n_pages > 1 ? in->n_pages : 1;
    r->n_pages = image_format_animated(encode_format(enc, in->format)) && enc->encode.frames > 1
                     ? (enc->encode.frames < held ? enc->encode.frames : held)
                     : 1;
    if (r->n_pages < held)
        image_frames_keep(in, r->n_pages);
    long long w = in->width, h = in->height;
    for (int i = 0; i < n; i++) {
        long long ow, oh;
        step_size(&p->plan[i], w, h, &ow, &oh);
        p->costs[i] = ops[p->plan[i].kind].cost(&p->plan[i], w, h, ow, oh) * r->n_pages + 1; /* never 0 */
        r->total += p->costs[i];
        w = ow;
        h = oh;
    }
    if (!(p->res.report = json_array())) {
        rc = up_error_set(err, UP_ERR_NOMEM, 0, "cannot allocate the report");
        goto fail;
    }
    for (int i = 0; i < n - 1; i++) { /* all but the encode */
        r->cost = p->costs[i];
        if ((rc = run_step(r, &p->plan[i], i + 1, err)))
            goto fail;
        r->done += p->costs[i];
    }
    *out = p;
    return UP_OK;
fail:
    steps_pending_free(p);
    return rc;
}

int steps_run_end(steps_pending_t *p, steps_result_t *res, up_error_t *err) {
    assert(p && res);
    memset(res, 0, sizeof *res);
    run_t *r = &p->r;
    const steps_env_t *env = r->env;
    r->cost = p->costs[p->n - 1];
    int rc = run_step(r, &p->plan[p->n - 1], p->n, err);
    if (rc == 0) {
        *res = p->res;
        memset(&p->res, 0, sizeof p->res);
    }
    steps_pending_free(p);
    if (rc == 0 && env->progress) /* the end: its answer no longer matters */
        env->progress(env->progress_ctx, 100);
    return rc;
}

int steps_run(const steps_t *steps, up_image_t *in, const steps_env_t *env, steps_result_t *res,
              up_error_t *err) {
    assert(steps && env && res);
    memset(res, 0, sizeof *res);
    steps_pending_t *p = NULL;
    int rc = steps_run_begin(steps, in, env, &p, err);
    return rc ? rc : steps_run_end(p, res, err);
}

void steps_result_fini(steps_result_t *res) {
    if (!res)
        return;
    free(res->data);
    json_decref(res->report);
    memset(res, 0, sizeof *res);
}
