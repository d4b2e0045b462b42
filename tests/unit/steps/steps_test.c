/*
 * steps_test.c - the job pipeline (src/steps/steps.c).
 *
 * Parsing: a table of refused pipelines (each field: type, range, unknown
 * names; the message names the step, the op and the field) and of accepted
 * ones; steps_text round-trips through steps_parse_text. Sizes:
 * steps_output_size equals what steps_run makes, step by step, for every
 * op and fit on small generated images, and for the real
 * realesr-animevideov3 on a 32x24 crop at scales 2, 1.5, 0.5 and native.
 * Running: pad bars and centre by pixel value (default white or
 * transparent, a background that adds alpha, gray turned RGB), the crop's
 * centre, progress (non-decreasing, 0..100, 100 once at the end), cancel
 * through progress and through abort, target_bytes for jpg and webp (the
 * next quality up does not fit) and for png (a palette), an unreachable
 * target, max_output_pixels, the default encode's format.
 */
#include "steps/steps.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"

static upscale_registry_t *reg;
static const char *data;

/* ---- helpers --------------------------------------------------------------- */

/* The worker's upscaler cache, in small: one upscaler per variant file. */
typedef struct cache {
    int n;
    const upscale_variant_t *variant[8];
    upscaler_t *up[8];
    int calls;
} cache_t;

static int get_upscaler(void *ctx, const char *model, double scale, upscaler_t **out, up_error_t *err) {
    cache_t *c = ctx;
    const upscale_variant_t *v;
    c->calls++;
    int rc = upscale_registry_resolve(reg, model, scale, &v, err);
    if (rc)
        return rc;
    for (int i = 0; i < c->n; i++)
        if (c->variant[i] == v) {
            *out = c->up[i];
            return 0;
        }
    if (c->n == 8)
        return up_error_set(err, UP_ERR_INVALID, 0, "test cache full");
    if ((rc = upscaler_new(reg, v, NN_BACKEND_DNNL, 0, out, err)))
        return rc;
    c->variant[c->n] = v;
    c->up[c->n++] = *out;
    return 0;
}

static cache_t cache;

static void cache_fini(void) {
    for (int i = 0; i < cache.n; i++)
        upscaler_free(cache.up[i]);
    memset(&cache, 0, sizeof cache);
}

static steps_env_t env_default(void) {
    steps_env_t e = {.upscaler = get_upscaler, .ctx = &cache};
    return e;
}

/* A w x h image with a pattern in every band. */
static up_image_t *pattern(int w, int h, int bands, int depth) {
    up_image_t *img = image_new(w, h, bands, depth);
    for (int y = 0; img && y < h; y++)
        for (int x = 0; x < w; x++)
            for (int b = 0; b < bands; b++) {
                size_t i = ((size_t)y * w + x) * bands + b;
                unsigned v = (unsigned)(x * 17 + y * 29 + b * 60) % 256;
                if (depth == 16)
                    ((uint16_t *)img->pixels)[i] = (uint16_t)(v * 257);
                else
                    ((uint8_t *)img->pixels)[i] = (uint8_t)v;
            }
    return img;
}

/* A w x h image of one colour (values per band, 8-bit). */
static up_image_t *solid(int w, int h, int bands, const unsigned char *v) {
    up_image_t *img = image_new(w, h, bands, 8);
    for (size_t i = 0; img && i < (size_t)w * h; i++)
        memcpy((uint8_t *)img->pixels + i * bands, v, (size_t)bands);
    return img;
}

static unsigned px(const up_image_t *img, int x, int y, int b) {
    size_t i = ((size_t)y * img->width + x) * img->bands + b;
    return img->depth == 16 ? ((const uint16_t *)img->pixels)[i] : ((const uint8_t *)img->pixels)[i];
}

static up_image_t *load(const char *rel) {
    char path[2048];
    up_error_t err;
    up_image_t *img = NULL;
    snprintf(path, sizeof path, "%s/%s", data, rel);
    CHECKF(image_load_file(path, NULL, &img, &err) == 0, "%s: %s", rel, err.msg);
    return img;
}

static up_image_t *copy_image(const up_image_t *img) {
    up_image_t *c = image_new(img->width, img->height, img->bands, img->depth);
    if (c) {
        memcpy(c->pixels, img->pixels, image_size(img));
        memcpy(c->format, img->format, sizeof c->format);
        image_copy_metadata(c, img);
    }
    return c;
}

/* Parse text and run it over in (taken over). */
static int run_text(const char *text, up_image_t *in, const steps_env_t *env, steps_result_t *res,
                    up_error_t *err) {
    steps_t st;
    int rc = steps_parse_text(text, &st, err);
    CHECKF(rc == 0, "%s: %s", text, err->msg);
    if (rc) {
        image_free(in);
        memset(res, 0, sizeof *res);
        return rc;
    }
    return steps_run(&st, in, env, res, err);
}

/* The decoded result of a run (new), or NULL. */
static up_image_t *decode(const steps_result_t *res) {
    up_image_t *img = NULL;
    up_error_t err;
    CHECKF(res->data && image_load_buffer(res->data, res->size, NULL, &img, &err) == 0, "decode: %s",
           res->data ? err.msg : "no data");
    return img;
}

/* The report entry i's field name as an integer (or -1). */
static long long report_int(const steps_result_t *res, size_t i, const char *name) {
    json_t *v = json_object_get(json_array_get(res->report, i), name);
    return json_is_integer(v) ? json_integer_value(v) : -1;
}

/* ---- parsing -------------------------------------------------------------- */

static void test_parse_refusals(void) {
    static const struct {
        const char *text, *msg; /* the pipeline, and what its refusal must say */
    } cases[] = {
        /* the array */
        {"{}", "must be a JSON array"},
        {"[]", "has no steps"},
        {"\"upscale\"", "not valid JSON"},
        {"[{\"op\":\"resize\",\"width\":2}", "not valid JSON"},
        {"[1]", "step 1: must be an object"},
        {"[{\"op\":\"resize\",\"width\":2}, null]", "step 2: must be an object"},
        {"[{\"op\":\"resize\",\"width\":1},{\"op\":\"resize\",\"width\":1},{\"op\":\"resize\",\"width\":1},"
         "{\"op\":\"resize\",\"width\":1},{\"op\":\"resize\",\"width\":1},{\"op\":\"resize\",\"width\":1},"
         "{\"op\":\"resize\",\"width\":1},{\"op\":\"resize\",\"width\":1},{\"op\":\"encode\"}]",
         "has 9 steps; the limit is 8"},
        /* op */
        {"[{}]", "step 1: op is missing"},
        {"[{\"op\":4}]", "step 1: op must be a string"},
        {"[{\"op\":\"blur\"}]", "step 1: unknown op \"blur\""},
        {"[{\"op\":\"Upscale\",\"model\":\"m\"}]", "unknown op \"Upscale\""},
        {"[{\"op\":\"resize\",\"width\":2,\"op\":\"encode\"}]", "duplicate"},
        {"[{\"op\":\"encode\"},{\"op\":\"resize\",\"width\":2}]",
         "step 1 (encode): encode must be the last step"},
        {"[{\"op\":\"encode\"},{\"op\":\"encode\"}]", "step 1 (encode): encode must be the last step"},
        /* upscale */
        {"[{\"op\":\"upscale\"}]", "step 1 (upscale): model is missing"},
        {"[{\"op\":\"upscale\",\"model\":7}]", "step 1 (upscale): model must be a string"},
        {"[{\"op\":\"upscale\",\"model\":\"\"}]", "step 1 (upscale): model \"\" may hold only"},
        {"[{\"op\":\"upscale\",\"model\":\"../etc/passwd\"}]", "model \"../etc/passwd\" may hold only"},
        {"[{\"op\":\"upscale\",\"model\":\"a/b\"}]", "may hold only"},
        {"[{\"op\":\"upscale\",\"model\":\"a b\"}]", "may hold only"},
        {"[{\"op\":\"upscale\",\"model\":\"a\\nb\"}]", "model \"a\\nb\" may hold only"},
        {"[{\"op\":\"upscale\",\"model\":"
         "\"mmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmm"
         "mmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmm\"}]",
         "model must be at most 127 characters"},
        {"[{\"op\":\"upscale\",\"model\":\"m\",\"scale\":\"4\"}]",
         "step 1 (upscale): scale must be a number"},
        {"[{\"op\":\"upscale\",\"model\":\"m\",\"scale\":null}]", "scale must be a number"},
        {"[{\"op\":\"upscale\",\"model\":\"m\",\"scale\":17}]",
         "scale must be 0.1 to 16 (0 = the model's native scale), not 17"},
        {"[{\"op\":\"upscale\",\"model\":\"m\",\"scale\":0.09}]", "scale must be 0.1 to 16"},
        {"[{\"op\":\"upscale\",\"model\":\"m\",\"scale\":-2}]", "scale must be 0.1 to 16"},
        {"[{\"op\":\"upscale\",\"model\":\"m\",\"scale\":16.0001}]", "scale must be 0.1 to 16"},
        {"[{\"op\":\"upscale\",\"model\":\"m\",\"tile\":8}]",
         "step 1 (upscale): tile must be 0 (automatic) or 16 to 8192, not 8"},
        {"[{\"op\":\"upscale\",\"model\":\"m\",\"tile\":8193}]", "tile must be 0 (automatic) or 16 to 8192"},
        {"[{\"op\":\"upscale\",\"model\":\"m\",\"tile\":-1}]", "tile must be"},
        {"[{\"op\":\"upscale\",\"model\":\"m\",\"tile\":64.5}]", "tile must be a whole number"},
        {"[{\"op\":\"upscale\",\"model\":\"m\",\"tile\":\"64\"}]", "tile must be a whole number"},
        {"[{\"op\":\"upscale\",\"model\":\"m\",\"alpha\":\"keep\"}]",
         "step 1 (upscale): alpha must be \"resample\" or \"model\", not \"keep\""},
        {"[{\"op\":\"upscale\",\"model\":\"m\",\"alpha\":true}]", "alpha must be a string"},
        {"[{\"op\":\"upscale\",\"model\":\"m\",\"Scale\":2}]",
         "step 1 (upscale): unknown field \"Scale\" (model, scale, tile, alpha)"},
        {"[{\"op\":\"upscale\",\"model\":\"m\",\"width\":2}]", "unknown field \"width\""},
        /* resize */
        {"[{\"op\":\"resize\"}]", "step 1 (resize): width or height is needed"},
        {"[{\"op\":\"upscale\",\"model\":\"m\"},{\"op\":\"resize\",\"width\":0}]",
         "step 2 (resize): width must be 1 to 65535, not 0"},
        {"[{\"op\":\"resize\",\"height\":65536}]", "step 1 (resize): height must be 1 to 65535, not 65536"},
        {"[{\"op\":\"resize\",\"width\":-5}]", "width must be 1 to 65535"},
        {"[{\"op\":\"resize\",\"width\":99999999999999}]", "width must be 1 to 65535"},
        {"[{\"op\":\"resize\",\"width\":800.0}]", "width must be a whole number"},
        {"[{\"op\":\"resize\",\"width\":\"800\"}]", "width must be a whole number"},
        {"[{\"op\":\"resize\",\"width\":8,\"height\":[6]}]", "height must be a whole number"},
        {"[{\"op\":\"resize\",\"width\":8,\"height\":6,\"fit\":\"cover\"}]",
         "step 1 (resize): fit must be \"stretch\", \"pad\" or \"crop\", not \"cover\""},
        {"[{\"op\":\"resize\",\"width\":8,\"height\":6,\"fit\":1}]", "fit must be a string"},
        {"[{\"op\":\"resize\",\"width\":8,\"fit\":\"pad\"}]",
         "step 1 (resize): fit needs both width and height"},
        {"[{\"op\":\"resize\",\"width\":8,\"height\":6,\"fit\":\"pad\",\"background\":\"#fff\"}]",
         "step 1 (resize): background must be \"#rrggbb\" or \"#rrggbbaa\", not \"#fff\""},
        {"[{\"op\":\"resize\",\"width\":8,\"height\":6,\"fit\":\"pad\",\"background\":\"ffffff\"}]",
         "background must be"},
        {"[{\"op\":\"resize\",\"width\":8,\"height\":6,\"fit\":\"pad\",\"background\":\"#gggggg\"}]",
         "background must be"},
        {"[{\"op\":\"resize\",\"width\":8,\"height\":6,\"fit\":\"pad\",\"background\":\"#ffffff0\"}]",
         "background must be"},
        {"[{\"op\":\"resize\",\"width\":8,\"height\":6,\"fit\":\"pad\",\"background\":\"#ffffff000\"}]",
         "background must be"},
        {"[{\"op\":\"resize\",\"width\":8,\"height\":6,\"fit\":\"pad\",\"background\":16777215}]",
         "background must be a string"},
        {"[{\"op\":\"resize\",\"width\":8,\"height\":6,\"background\":\"#ffffff\"}]",
         "step 1 (resize): background is only used with fit \"pad\""},
        {"[{\"op\":\"resize\",\"width\":8,\"height\":6,\"fit\":\"crop\",\"background\":\"#ffffff\"}]",
         "background is only used with fit \"pad\""},
        {"[{\"op\":\"resize\",\"width\":8,\"color\":\"#ffffff\"}]",
         "step 1 (resize): unknown field \"color\" (width, height, fit, background)"},
        /* encode */
        {"[{\"op\":\"encode\",\"format\":\"bmp\"}]", "step 1 (encode): format must be \"png\", \"jpg\", "
                                                     "\"webp\", \"avif\", \"gif\" or \"ico\", not \"bmp\""},
        {"[{\"op\":\"encode\",\"format\":\"\"}]",
         "format must be \"png\", \"jpg\", \"webp\", \"avif\", \"gif\" or \"ico\", not \"\""},
        {"[{\"op\":\"encode\",\"format\":\"tiff\"}]", "format must be"},
        {"[{\"op\":\"encode\",\"format\":null}]", "format must be a string"},
        {"[{\"op\":\"encode\",\"quality\":101}]",
         "step 1 (encode): quality must be 1 to 100 (0 = the format's default), not 101"},
        {"[{\"op\":\"encode\",\"quality\":-1}]", "quality must be 1 to 100"},
        {"[{\"op\":\"encode\",\"quality\":80.5}]", "quality must be a whole number"},
        {"[{\"op\":\"encode\",\"quality\":\"80\"}]", "quality must be a whole number"},
        {"[{\"op\":\"encode\",\"target_bytes\":-1}]",
         "step 1 (encode): target_bytes must be 1 to 1000000000 (0 = none)"},
        {"[{\"op\":\"encode\",\"target_bytes\":1000000001}]", "target_bytes must be 1 to 1000000000"},
        {"[{\"op\":\"encode\",\"target_bytes\":1e5}]", "target_bytes must be a whole number"},
        {"[{\"op\":\"encode\",\"target_bytes\":false}]", "target_bytes must be a whole number"},
        {"[{\"op\":\"encode\",\"lossless\":true}]",
         "step 1 (encode): unknown field \"lossless\" (format, quality, target_bytes, frames)"},
        {"[{\"op\":\"encode\",\"frames\":-1}]",
         "step 1 (encode): frames must be 1 to 10000 (0 = the first frame only), not -1"},
        {"[{\"op\":\"encode\",\"frames\":10001}]", "frames must be 1 to 10000"},
        {"[{\"op\":\"encode\",\"frames\":2.5}]", "frames must be a whole number"},
        /* the step number is the failing step's */
        {"[{\"op\":\"upscale\",\"model\":\"m\"},{\"op\":\"resize\",\"width\":4},{\"op\":\"encode\","
         "\"quality\":0},"
         "{\"op\":\"nope\"}]",
         "step 3 (encode): encode must be the last step"},
        {"[{\"op\":\"upscale\",\"model\":\"m\"},{\"op\":\"resize\",\"width\":4},{\"op\":\"upscale\","
         "\"model\":\"m\","
         "\"scale\":99}]",
         "step 3 (upscale): scale must be"},
        /* a long unknown name is cut, control bytes escaped */
        {"[{\"op\":\"resize\",\"width\":4,"
         "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\":1}]",
         "unknown field \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...\""},
        {"[{\"op\":\"resize\",\"width\":4,\"\\u0001x\":1}]", "unknown field \"\\x01x\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        steps_t st;
        up_error_t err = {0};
        memset(&st, 0x55, sizeof st);
        int rc = steps_parse_text(cases[i].text, &st, &err);
        CHECKF(rc == UP_ERR_INVALID && err.code == UP_ERR_INVALID, "case %zu (%s): rc %d", i, cases[i].text,
               rc);
        CHECKF(strstr(err.msg, cases[i].msg) != NULL, "case %zu: message \"%s\" lacks \"%s\"", i, err.msg,
               cases[i].msg);
        CHECKF(st.n == 0, "case %zu: refused but %d steps", i, st.n);
    }
    printf("%zu refusals checked\n", sizeof cases / sizeof cases[0]);

    /* steps_parse on a json_t, and a JSON syntax error with its line */
    steps_t st;
    up_error_t err;
    CHECK(steps_parse(NULL, &st, &err) == UP_ERR_INVALID);
    json_t *j = json_pack("{s:i}", "op", 1);
    CHECK(steps_parse(j, &st, &err) == UP_ERR_INVALID && strstr(err.msg, "array"));
    json_decref(j);
    CHECK(steps_parse_text("[\n{\"op\":\"encode\"},\n]", &st, &err) == UP_ERR_INVALID && err.line == 3);
    CHECK(steps_parse_text(NULL, &st, &err) == UP_ERR_INVALID);
}

static void test_parse_accepts(void) {
    steps_t st;
    up_error_t err;
    const char *t =
        "[{\"op\":\"upscale\",\"model\":\"realesr-animevideov3\",\"scale\":1.5,\"tile\":64,"
        "\"alpha\":\"model\"},"
        "{\"op\":\"resize\",\"width\":800,\"height\":600,\"fit\":\"pad\",\"background\":\"#10Ff2080\"},"
        "{\"op\":\"resize\",\"height\":300},"
        "{\"op\":\"encode\",\"format\":\"JPEG\",\"quality\":0,\"target_bytes\":200000}]";
    CHECKF(steps_parse_text(t, &st, &err) == 0, "%s", err.msg);
    CHECK(st.n == 4);
    const step_t *u = &st.step[0], *r = &st.step[1], *h = &st.step[2], *e = &st.step[3];
    CHECK(u->kind == STEP_UPSCALE && !strcmp(u->upscale.model, "realesr-animevideov3") &&
          u->upscale.scale == 1.5 && u->upscale.tile == 64 && u->upscale.alpha == UPSCALE_ALPHA_MODEL);
    CHECK(r->kind == STEP_RESIZE && r->resize.width == 800 && r->resize.height == 600 &&
          r->resize.fit == STEP_FIT_PAD && r->resize.has_background && r->resize.background[0] == 0x10 &&
          r->resize.background[1] == 0xff && r->resize.background[2] == 0x20 &&
          r->resize.background[3] == 0x80);
    CHECK(h->kind == STEP_RESIZE && h->resize.width == 0 && h->resize.height == 300 &&
          !h->resize.has_background);
    CHECK(e->kind == STEP_ENCODE && !strcmp(e->encode.format, "jpg") && e->encode.quality == 0 &&
          e->encode.target_bytes == 200000);
    CHECK(steps_first_upscale(&st) == u);

    /* the edges of every range, and defaults */
    static const char *const ok[] = {
        "[{\"op\":\"upscale\",\"model\":\"realesrgan-x4plus\"}]",
        "[{\"op\":\"upscale\",\"model\":\"m\",\"scale\":0}]",
        "[{\"op\":\"upscale\",\"model\":\"m\",\"scale\":0.1}]",
        "[{\"op\":\"upscale\",\"model\":\"m\",\"scale\":16}]",
        "[{\"op\":\"upscale\",\"model\":\"m\",\"tile\":0}]",
        "[{\"op\":\"upscale\",\"model\":\"m\",\"tile\":16}]",
        "[{\"op\":\"upscale\",\"model\":\"m\",\"tile\":8192}]",
        "[{\"op\":\"upscale\",\"model\":\"a.b_c+d-x2\",\"alpha\":\"resample\"}]",
        "[{\"op\":\"resize\",\"width\":1}]",
        "[{\"op\":\"resize\",\"height\":65535}]",
        "[{\"op\":\"resize\",\"width\":3,\"height\":4,\"fit\":\"stretch\"}]",
        "[{\"op\":\"resize\",\"width\":3,\"height\":4,\"fit\":\"crop\"}]",
        "[{\"op\":\"resize\",\"width\":3,\"height\":4,\"fit\":\"pad\",\"background\":\"#000000\"}]",
        "[{\"op\":\"encode\"}]",
        "[{\"op\":\"encode\",\"format\":\"webp\",\"quality\":1}]",
        "[{\"op\":\"encode\",\"format\":\"png\",\"quality\":100,\"target_bytes\":1000000000}]",
        "[{\"op\":\"encode\",\"target_bytes\":0}]",
        "[{\"op\":\"encode\",\"format\":\"AVIF\",\"quality\":1}]",
        "[{\"op\":\"encode\",\"format\":\"gif\",\"frames\":10000}]",
        "[{\"op\":\"encode\",\"format\":\"ico\",\"frames\":0}]",
        "[{\"op\":\"resize\",\"width\":1},{\"op\":\"resize\",\"width\":1},{\"op\":\"resize\",\"width\":1},"
        "{\"op\":\"resize\",\"width\":1},{\"op\":\"resize\",\"width\":1},{\"op\":\"resize\",\"width\":1},"
        "{\"op\":\"resize\",\"width\":1},{\"op\":\"encode\"}]",
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        CHECKF(steps_parse_text(ok[i], &st, &err) == 0, "%s: %s", ok[i], err.msg);
    CHECK(steps_parse_text("[{\"op\":\"resize\",\"width\":3,\"height\":4}]", &st, &err) == 0 &&
          st.step[0].resize.fit == STEP_FIT_STRETCH);
    CHECK(steps_first_upscale(&st) == NULL);
}

/* Field-wise equality of two pipelines. */
static int same_steps(const steps_t *a, const steps_t *b) {
    if (a->n != b->n)
        return 0;
    for (int i = 0; i < a->n; i++) {
        const step_t *x = &a->step[i], *y = &b->step[i];
        if (x->kind != y->kind)
            return 0;
        if (x->kind == STEP_UPSCALE &&
            (strcmp(x->upscale.model, y->upscale.model) || x->upscale.scale != y->upscale.scale ||
             x->upscale.tile != y->upscale.tile || x->upscale.alpha != y->upscale.alpha))
            return 0;
        if (x->kind == STEP_RESIZE &&
            (x->resize.width != y->resize.width || x->resize.height != y->resize.height ||
             x->resize.fit != y->resize.fit || x->resize.has_background != y->resize.has_background ||
             (x->resize.has_background && memcmp(x->resize.background, y->resize.background, 4))))
            return 0;
        if (x->kind == STEP_ENCODE &&
            (strcmp(x->encode.format, y->encode.format) || x->encode.quality != y->encode.quality ||
             x->encode.target_bytes != y->encode.target_bytes || x->encode.frames != y->encode.frames))
            return 0;
    }
    return 1;
}

static void test_round_trip(void) {
    static const char *const texts[] = {
        "[{\"op\":\"upscale\",\"model\":\"realesr-animevideov3\",\"scale\":1.5,\"tile\":64,\"alpha\":"
        "\"model\"},"
        "{\"op\":\"resize\",\"width\":800,\"height\":600,\"fit\":\"pad\",\"background\":\"#10ff2080\"},"
        "{\"op\":\"resize\",\"height\":300},{\"op\":\"encode\",\"format\":\"jpeg\",\"target_bytes\":200000}]",
        "[{\"op\":\"upscale\",\"model\":\"m\",\"scale\":0.1}]",
        "[{\"op\":\"upscale\",\"model\":\"m\",\"scale\":0.30000000000000004}]",
        "[{\"op\":\"upscale\",\"model\":\"m\",\"scale\":4.0}]",
        "[{\"op\":\"resize\",\"width\":3,\"height\":4,\"fit\":\"crop\"},{\"op\":\"encode\",\"format\":"
        "\"webp\","
        "\"quality\":77}]",
        "[{\"op\":\"resize\",\"width\":3,\"height\":4,\"fit\":\"pad\",\"background\":\"#ABCDEF\"}]",
        "[{\"op\":\"resize\",\"width\":3,\"height\":4,\"fit\":\"pad\",\"background\":\"#abcdefff\"}]",
        "[{\"op\":\"resize\",\"width\":3,\"height\":4,\"fit\":\"pad\"}]",
        "[{\"op\":\"resize\",\"width\":3,\"height\":4}]",
        "[{\"op\":\"encode\"}]",
        "[{\"op\":\"encode\",\"format\":\"gif\",\"quality\":40,\"frames\":12}]",
        "[{\"op\":\"encode\",\"format\":\"avif\",\"target_bytes\":5000}]",
        "[{\"op\":\"encode\",\"format\":\"ico\"}]",
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        steps_t a, b;
        up_error_t err;
        CHECKF(steps_parse_text(texts[i], &a, &err) == 0, "%s: %s", texts[i], err.msg);
        char *t = steps_text(&a);
        CHECK(t != NULL);
        CHECKF(t && steps_parse_text(t, &b, &err) == 0 && same_steps(&a, &b), "%s -> %s", texts[i], t);
        char *t2 = steps_text(&b);
        CHECKF(t && t2 && !strcmp(t, t2), "%s then %s", t, t2 ? t2 : "NULL");
        free(t);
        free(t2);
    }
    /* the dialects' pipeline, and a factor no decimal prints short */
    steps_t a, b;
    up_error_t err;
    steps_upscale(&a, "realesrgan-x4plus", 1.0 / 3.0, 128, "jpeg", 85);
    CHECK(a.n == 2 && a.step[0].kind == STEP_UPSCALE && a.step[1].kind == STEP_ENCODE &&
          !strcmp(a.step[1].encode.format, "jpg") && a.step[1].encode.quality == 85);
    CHECK(steps_first_upscale(&a) == &a.step[0]);
    char *t = steps_text(&a);
    CHECKF(t && steps_parse_text(t, &b, &err) == 0 && same_steps(&a, &b), "%s", t ? t : "NULL");
    printf("steps_upscale: %s\n", t ? t : "NULL");
    free(t);
    steps_upscale(&a, "realesr-animevideov3", 2, 0, NULL, 0);
    t = steps_text(&a);
    CHECKF(
        t && !strcmp(
                 t,
                 "[{\"op\":\"upscale\",\"model\":\"realesr-animevideov3\",\"scale\":2},{\"op\":\"encode\"}]"),
        "%s", t ? t : "NULL");
    free(t);
}

/* ---- sizes ---------------------------------------------------------------- */

/*
 * Run text over in (taken over) and check that steps_output_size says what
 * the run made, for the whole pipeline and for each step (the report's
 * "out" against the size of the pipeline cut after it).
 */
static void check_sizes(const char *text, up_image_t *in, const steps_env_t *env) {
    steps_t st;
    up_error_t err;
    int w = in->width, h = in->height, ow, oh;
    if (steps_parse_text(text, &st, &err)) {
        CHECKF(0, "%s: %s", text, err.msg);
        image_free(in);
        return;
    }
    steps_output_size(&st, w, h, &ow, &oh);
    steps_result_t res;
    int rc = steps_run(&st, in, env, &res, &err);
    CHECKF(rc == 0, "%s on %dx%d: %s", text, w, h, err.msg);
    if (rc)
        return;
    CHECKF(res.width == ow && res.height == oh, "%s on %dx%d: ran %dx%d, said %dx%d", text, w, h, res.width,
           res.height, ow, oh);
    up_image_t *img = decode(&res);
    CHECK(img && img->width == ow && img->height == oh);
    image_free(img);
    for (int i = 0; i < st.n; i++) {
        steps_t cut = st;
        cut.n = i + 1;
        int sw, sh;
        steps_output_size(&cut, w, h, &sw, &sh);
        json_t *out = json_object_get(json_array_get(res.report, (size_t)i), "out");
        CHECKF(json_integer_value(json_array_get(out, 0)) == sw &&
                   json_integer_value(json_array_get(out, 1)) == sh,
               "%s on %dx%d, step %d: ran %lldx%lld, said %dx%d", text, w, h, i + 1,
               json_integer_value(json_array_get(out, 0)), json_integer_value(json_array_get(out, 1)), sw,
               sh);
    }
    steps_result_fini(&res);
}

static void test_sizes_generated(void) {
    static const int shapes[][2] = {{7, 5}, {5, 7}, {1, 9}, {13, 1}, {33, 20}, {1, 1}, {64, 64}};
    static const char *const pipes[] = {
        "[{\"op\":\"resize\",\"width\":3}]",
        "[{\"op\":\"resize\",\"height\":4}]",
        "[{\"op\":\"resize\",\"width\":101}]",
        "[{\"op\":\"resize\",\"height\":2},{\"op\":\"resize\",\"width\":9}]",
        "[{\"op\":\"resize\",\"width\":10,\"height\":10}]",
        "[{\"op\":\"resize\",\"width\":10,\"height\":3,\"fit\":\"pad\"}]",
        "[{\"op\":\"resize\",\"width\":3,\"height\":10,\"fit\":\"pad\",\"background\":\"#ff000080\"}]",
        "[{\"op\":\"resize\",\"width\":17,\"height\":17,\"fit\":\"pad\"}]",
        "[{\"op\":\"resize\",\"width\":10,\"height\":3,\"fit\":\"crop\"}]",
        "[{\"op\":\"resize\",\"width\":3,\"height\":10,\"fit\":\"crop\"}]",
        "[{\"op\":\"resize\",\"width\":1,\"height\":50,\"fit\":\"crop\"}]",
        "[{\"op\":\"resize\",\"width\":50,\"height\":1,\"fit\":\"pad\"}]",
        "[{\"op\":\"resize\",\"width\":40,\"height\":40,\"fit\":\"crop\"},{\"op\":\"encode\",\"format\":"
        "\"webp\"}]",
        "[{\"op\":\"encode\",\"format\":\"jpg\",\"quality\":50}]",
        "[{\"op\":\"encode\",\"format\":\"png\",\"target_bytes\":1000000}]",
    };
    steps_env_t env = env_default();
    int n = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (size_t p = 0; p < sizeof pipes / sizeof pipes[0]; p++) {
            int bands = 1 + (int)((s + p) % 4), depth = (s + p) % 3 == 0 ? 16 : 8;
            check_sizes(pipes[p], pattern(shapes[s][0], shapes[s][1], bands, depth), &env);
            n++;
        }
    printf("sizes: %d pipelines on generated images agree with steps_output_size\n", n);

    /* the rounding rules themselves */
    steps_t st;
    up_error_t err;
    int ow, oh;
    CHECK(steps_parse_text("[{\"op\":\"resize\",\"width\":2}]", &st, &err) == 0);
    steps_output_size(&st, 4, 3, &ow, &oh); /* 1.5 rounds up */
    CHECK(ow == 2 && oh == 2);
    steps_output_size(&st, 4, 1, &ow, &oh); /* 0.5 is still 1 pixel */
    CHECK(ow == 2 && oh == 1);
    steps_output_size(&st, 400, 1, &ow, &oh); /* at least 1 */
    CHECK(ow == 2 && oh == 1);
    CHECK(steps_parse_text("[{\"op\":\"upscale\",\"model\":\"m\",\"scale\":1.5}]", &st, &err) == 0);
    steps_output_size(&st, 33, 21, &ow, &oh); /* 49.5 and 31.5: half away from zero, as llround */
    CHECK(ow == 50 && oh == 32);
    CHECK(steps_parse_text("[{\"op\":\"upscale\",\"model\":\"m\",\"scale\":0.1}]", &st, &err) == 0);
    steps_output_size(&st, 4, 100, &ow, &oh); /* 0.4: empty */
    CHECK(ow == 0 && oh == 0);
    CHECK(steps_parse_text("[{\"op\":\"upscale\",\"model\":\"realesr-animevideov3-x3\"}]", &st, &err) == 0);
    steps_output_size(&st, 10, 10, &ow, &oh); /* scale 0: the name's -x3 */
    CHECK(ow == 30 && oh == 30);
}

static void test_sizes_model(void) {
    up_image_t *photo = load("images/chelsea.png");
    if (!photo)
        return;
    up_image_t *small = image_new(32, 24, 3, 8);
    for (int y = 0; y < 24; y++)
        memcpy((uint8_t *)small->pixels + (size_t)y * 32 * 3,
               (uint8_t *)photo->pixels + ((size_t)(100 + y) * photo->width + 200) * 3, 32 * 3);
    snprintf(small->format, sizeof small->format, "png");
    steps_env_t env = env_default();
    static const struct {
        const char *text;
        int variant; /* the native scale that must run */
    } cases[] = {
        {"[{\"op\":\"upscale\",\"model\":\"realesr-animevideov3\",\"scale\":2}]", 2},
        {"[{\"op\":\"upscale\",\"model\":\"realesr-animevideov3\",\"scale\":1.5}]", 2},
        {"[{\"op\":\"upscale\",\"model\":\"realesr-animevideov3\",\"scale\":0.5}]", 2},
        {"[{\"op\":\"upscale\",\"model\":\"realesr-animevideov3\",\"scale\":2.5}]", 3},
        {"[{\"op\":\"upscale\",\"model\":\"realesr-animevideov3-x3\",\"scale\":0}]", 3},
        {"[{\"op\":\"upscale\",\"model\":\"realesr-animevideov3\",\"scale\":1.5,\"tile\":16},"
         "{\"op\":\"resize\",\"width\":40,\"height\":40,\"fit\":\"pad\"},"
         "{\"op\":\"upscale\",\"model\":\"realesr-animevideov3\",\"scale\":0.75},{\"op\":\"encode\","
         "\"format\":\"jpg\"}]",
         2},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        check_sizes(cases[i].text, copy_image(small), &env);
        steps_result_t res;
        up_error_t err;
        CHECKF(run_text(cases[i].text, copy_image(small), &env, &res, &err) == 0, "%s", err.msg);
        CHECKF(report_int(&res, 0, "variant_scale") == cases[i].variant, "%s: variant x%lld", cases[i].text,
               report_int(&res, 0, "variant_scale"));
        steps_result_fini(&res);
    }
    /* scale 0 of a family: the largest; steps_resolve makes steps_output_size exact */
    steps_t st;
    up_error_t err;
    CHECK(steps_parse_text(
              "[{\"op\":\"upscale\",\"model\":\"realesr-animevideov3\"},{\"op\":\"resize\",\"width\":50},"
              "{\"op\":\"upscale\",\"model\":\"realesr-animevideov3-x2\"}]",
              &st, &err) == 0);
    CHECK(steps_resolve(&st, reg, &err) == 0 && st.step[0].upscale.scale == 4 &&
          st.step[2].upscale.scale == 2);
    int ow, oh;
    steps_output_size(&st, 32, 24, &ow, &oh);
    CHECK(ow == 100 && oh == 76); /* 128x96, then 50x38, then x2 */
    check_sizes("[{\"op\":\"upscale\",\"model\":\"realesr-animevideov3\"}]", copy_image(small), &env);
    CHECK(steps_parse_text("[{\"op\":\"resize\",\"width\":5},{\"op\":\"upscale\",\"model\":\"nope\"}]", &st,
                           &err) == 0);
    CHECK(steps_resolve(&st, reg, &err) == UP_ERR_NOT_FOUND &&
          strstr(err.msg, "step 2 (upscale): unknown model") && strstr(err.msg, "realesr-animevideov3"));
    /* an unknown model at run time: the env's error, with the step */
    steps_result_t res;
    CHECK(steps_run(&st, copy_image(small), &env, &res, &err) == UP_ERR_NOT_FOUND &&
          strstr(err.msg, "step 2 (upscale): unknown model") && !res.data && !res.report);
    image_free(small);
    image_free(photo);
}

/* ---- what the steps make ----------------------------------------------------- */

static void test_pad(void) {
    steps_env_t env = env_default();
    steps_result_t res;
    up_error_t err;
    static const unsigned char rgb[3] = {10, 200, 30}, rgba[4] = {10, 200, 30, 255}, g[1] = {77};
    up_image_t *out;

    /* RGB, no background: white bars left and right, the image in the centre */
    CHECK(run_text(
              "[{\"op\":\"resize\",\"width\":40,\"height\":20,\"fit\":\"pad\"},{\"op\":\"encode\",\"format\":"
              "\"png\"}]",
              solid(30, 30, 3, rgb), &env, &res, &err) == 0);
    if ((out = decode(&res))) {
        CHECK(out->width == 40 && out->height == 20 && out->bands == 3);
        CHECK(px(out, 0, 10, 0) == 255 && px(out, 9, 10, 1) == 255 && px(out, 39, 0, 2) == 255 &&
              px(out, 30, 19, 0) == 255);
        CHECK(px(out, 10, 0, 0) == 10 && px(out, 20, 10, 1) == 200 && px(out, 29, 19, 2) == 30);
        image_free(out);
    }
    CHECK(json_is_string(json_object_get(json_array_get(res.report, 0), "background")) &&
          !strcmp(json_string_value(json_object_get(json_array_get(res.report, 0), "background")),
                  "#ffffffff"));
    steps_result_fini(&res);

    /* RGBA, no background: transparent bars above and below */
    CHECK(run_text(
              "[{\"op\":\"resize\",\"width\":20,\"height\":40,\"fit\":\"pad\"},{\"op\":\"encode\",\"format\":"
              "\"png\"}]",
              solid(30, 30, 4, rgba), &env, &res, &err) == 0);
    if ((out = decode(&res))) {
        CHECK(out->bands == 4 && px(out, 10, 0, 3) == 0 && px(out, 10, 9, 3) == 0 && px(out, 10, 30, 3) == 0);
        CHECK(px(out, 10, 10, 3) == 255 && px(out, 0, 20, 0) == 10 && px(out, 19, 29, 1) == 200);
        image_free(out);
    }
    steps_result_fini(&res);

    /* RGB with a half-transparent red background: alpha added, image opaque */
    CHECK(run_text(
              "[{\"op\":\"resize\",\"width\":40,\"height\":20,\"fit\":\"pad\",\"background\":\"#ff000080\"},"
              "{\"op\":\"encode\",\"format\":\"png\"}]",
              solid(30, 30, 3, rgb), &env, &res, &err) == 0);
    if ((out = decode(&res))) {
        CHECK(out->bands == 4 && px(out, 0, 0, 0) == 255 && px(out, 0, 0, 1) == 0 && px(out, 0, 0, 3) == 128);
        CHECK(px(out, 39, 19, 3) == 128 && px(out, 20, 10, 3) == 255 && px(out, 20, 10, 1) == 200);
        image_free(out);
    }
    steps_result_fini(&res);

    /* gray with a coloured background: RGB; with a gray one: gray (16 bits kept) */
    CHECK(
        run_text("[{\"op\":\"resize\",\"width\":12,\"height\":6,\"fit\":\"pad\",\"background\":\"#0000ff\"},"
                 "{\"op\":\"encode\",\"format\":\"png\"}]",
                 solid(6, 6, 1, g), &env, &res, &err) == 0);
    if ((out = decode(&res))) {
        CHECK(out->bands == 3 && px(out, 0, 0, 2) == 255 && px(out, 0, 0, 0) == 0 && px(out, 6, 3, 0) == 77 &&
              px(out, 6, 3, 2) == 77);
        image_free(out);
    }
    steps_result_fini(&res);
    up_image_t *g16 = image_new(6, 6, 1, 16);
    for (int i = 0; i < 36; i++)
        ((uint16_t *)g16->pixels)[i] = 40000;
    CHECK(
        run_text("[{\"op\":\"resize\",\"width\":6,\"height\":12,\"fit\":\"pad\",\"background\":\"#202020\"},"
                 "{\"op\":\"encode\",\"format\":\"png\"}]",
                 g16, &env, &res, &err) == 0);
    if ((out = decode(&res))) {
        CHECK(out->bands == 1 && out->depth == 16 && px(out, 3, 0, 0) == 0x2020 && px(out, 3, 6, 0) == 40000);
        image_free(out);
    }
    steps_result_fini(&res);

    /* odd bars: the odd pixel goes right */
    CHECK(run_text("[{\"op\":\"resize\",\"width\":7,\"height\":4,\"fit\":\"pad\",\"background\":\"#000000\"},"
                   "{\"op\":\"encode\",\"format\":\"png\"}]",
                   solid(4, 4, 3, rgb), &env, &res, &err) == 0);
    if ((out = decode(&res))) {
        CHECK(px(out, 0, 0, 1) == 0 && px(out, 1, 0, 1) == 200 && px(out, 4, 0, 1) == 200 &&
              px(out, 5, 0, 1) == 0 && px(out, 6, 0, 1) == 0);
        image_free(out);
    }
    steps_result_fini(&res);
}

static void test_crop(void) {
    steps_env_t env = env_default();
    steps_result_t res;
    up_error_t err;
    /* three bands of colour, left to right: the crop keeps the middle one */
    up_image_t *img = image_new(60, 20, 3, 8);
    for (int y = 0; y < 20; y++)
        for (int x = 0; x < 60; x++) {
            uint8_t *p = (uint8_t *)img->pixels + ((size_t)y * 60 + x) * 3;
            p[x / 20] = 255;
        }
    up_image_t *copy = copy_image(img);
    CHECK(
        run_text(
            "[{\"op\":\"resize\",\"width\":20,\"height\":20,\"fit\":\"crop\"},{\"op\":\"encode\",\"format\":"
            "\"png\"}]",
            img, &env, &res, &err) == 0);
    up_image_t *out = decode(&res);
    if (out) { /* the same scale: exactly the middle */
        int green = 1;
        for (int y = 0; y < 20; y++)
            for (int x = 0; x < 20; x++)
                green &= px(out, x, y, 0) == 0 && px(out, x, y, 1) == 255 && px(out, x, y, 2) == 0;
        CHECK(green);
        image_free(out);
    }
    steps_result_fini(&res);
    /* scaled down and cut: the centre is green, the edges of the middle third */
    CHECK(
        run_text(
            "[{\"op\":\"resize\",\"width\":10,\"height\":10,\"fit\":\"crop\"},{\"op\":\"encode\",\"format\":"
            "\"png\"}]",
            copy, &env, &res, &err) == 0);
    if ((out = decode(&res))) {
        CHECK(out->width == 10 && out->height == 10);
        CHECK(px(out, 5, 5, 1) == 255 && px(out, 5, 5, 0) == 0 && px(out, 2, 5, 1) > 240 &&
              px(out, 7, 5, 1) > 240);
        image_free(out);
    }
    steps_result_fini(&res);
    /* stretch is exact, one side keeps the ratio */
    CHECK(run_text("[{\"op\":\"resize\",\"width\":7,\"height\":30}]", pattern(9, 9, 3, 8), &env, &res,
                   &err) == 0 &&
          res.width == 7 && res.height == 30);
    steps_result_fini(&res);
}

/* ---- progress and cancelling --------------------------------------------------- */

typedef struct progress_log {
    int n, values[4096];
    int cancel_at; /* answer non-zero on this call (1-based); 0 = never */
} progress_log_t;

static int on_progress(void *ctx, int percent) {
    progress_log_t *p = ctx;
    if (p->n < 4096)
        p->values[p->n] = percent;
    p->n++;
    return p->cancel_at && p->n >= p->cancel_at;
}

static void test_progress_cancel(void) {
    up_image_t *photo = load("images/chelsea.png");
    if (!photo)
        return;
    up_image_t *small = image_new(48, 40, 3, 8);
    for (int y = 0; y < 40; y++)
        memcpy((uint8_t *)small->pixels + (size_t)y * 48 * 3,
               (uint8_t *)photo->pixels + ((size_t)(100 + y) * photo->width + 200) * 3, 48 * 3);
    static const char pipe[] =
        "[{\"op\":\"upscale\",\"model\":\"realesr-animevideov3\",\"scale\":2,\"tile\":16},"
        "{\"op\":\"resize\",\"width\":50},"
        "{\"op\":\"upscale\",\"model\":\"realesr-animevideov3\",\"scale\":1.5,\"tile\":16},"
        "{\"op\":\"encode\",\"format\":\"webp\",\"target_bytes\":3000}]";
    static progress_log_t log;
    memset(&log, 0, sizeof log);
    steps_env_t env = env_default();
    env.progress = on_progress;
    env.progress_ctx = &log;
    steps_result_t res;
    up_error_t err;
    CHECKF(run_text(pipe, copy_image(small), &env, &res, &err) == 0, "%s", err.msg);
    int mono = 1, hundreds = 0;
    for (int i = 0; i < log.n && i < 4096; i++) {
        mono &= log.values[i] >= 0 && log.values[i] <= 100 && (i == 0 || log.values[i] >= log.values[i - 1]);
        hundreds += log.values[i] == 100;
    }
    CHECKF(mono, "progress not monotonic in 0..100 (%d calls)", log.n);
    CHECKF(log.n > 10 && log.values[log.n - 1] == 100 && hundreds == 1, "%d calls, last %d, %d hundreds",
           log.n, log.n ? log.values[log.n - 1] : -1, hundreds);
    CHECK(log.n > 2 && log.values[0] == 0 && log.values[log.n - 2] < 100);
    /* the upscales are most of the cost: half way is inside the first upscale's tiles or the second's */
    printf("progress: %d calls:", log.n);
    for (int i = 0; i < log.n; i++)
        printf(" %d", log.values[i]);
    printf("\n");
    CHECK(json_array_size(res.report) == 4 && report_int(&res, 3, "bytes") == (long long)res.size &&
          res.size <= 3000);
    steps_result_fini(&res);

    /* cancelling at every point of the pipeline: CANCELLED, nothing left */
    int total = log.n, n_cancelled = 0;
    for (int at = 1; at < total; at += (at < 8 ? 1 : 5)) {
        memset(&log, 0, sizeof log);
        log.cancel_at = at;
        int rc = run_text(pipe, copy_image(small), &env, &res, &err);
        CHECKF(rc == UP_ERR_CANCELLED && !res.data && !res.report && strstr(err.msg, "step "),
               "cancel at call %d: rc %d, %s", at, rc, err.msg);
        n_cancelled += rc == UP_ERR_CANCELLED;
    }
    printf("cancelled at %d points\n", n_cancelled);

    /* abort: set before the run, or the pipeline stops before its first step */
    atomic_int stop = 1;
    steps_env_t env2 = env_default();
    env2.abort = &stop;
    CHECK(run_text(pipe, copy_image(small), &env2, &res, &err) == UP_ERR_CANCELLED && !res.data &&
          strstr(err.msg, "step 1 (upscale)"));
    image_free(small);
    image_free(photo);
}

/*
 * steps_run_begin / steps_run_end (the queue's two stages): begin runs every step but the encode
 * (progress below 100, no bytes yet), end encodes the same bytes as steps_run; a pending run
 * freed without its end leaks nothing (ASan); abort set between the two stops the encode.
 */
static void test_begin_end(void) {
    static const char pipe[] = "[{\"op\":\"upscale\",\"model\":\"realesr-animevideov3\",\"scale\":2},"
                               "{\"op\":\"resize\",\"width\":50}]";
    steps_t st;
    up_error_t err;
    CHECKF(steps_parse_text(pipe, &st, &err) == 0, "%s", err.msg);
    up_image_t *in = pattern(32, 24, 3, 8);
    if (!in)
        return;
    static progress_log_t log;
    memset(&log, 0, sizeof log);
    atomic_int stop = 0;
    steps_env_t env = env_default();
    env.progress = on_progress;
    env.progress_ctx = &log;
    env.abort = &stop;
    steps_result_t whole, res;
    CHECKF(steps_run(&st, copy_image(in), &env, &whole, &err) == 0, "%s", err.msg);
    memset(&log, 0, sizeof log);
    steps_pending_t *p = NULL;
    CHECKF(steps_run_begin(&st, copy_image(in), &env, &p, &err) == 0 && p, "%s", err.msg);
    CHECKF(log.n > 0 && log.values[log.n - 1] < 100, "%d calls, last %d", log.n,
           log.n ? log.values[log.n - 1] : -1);
    CHECKF(steps_run_end(p, &res, &err) == 0, "%s", err.msg);
    CHECK(log.values[log.n - 1] == 100 && json_array_size(res.report) == 3 && res.width == 50);
    CHECK(res.size == whole.size && res.data && memcmp(res.data, whole.data, res.size) == 0);
    steps_result_fini(&res);
    steps_result_fini(&whole);
    /* freed between the stages, or stopped before the encode */
    CHECK(steps_run_begin(&st, copy_image(in), &env, &p, &err) == 0 && p);
    steps_pending_free(p);
    steps_pending_free(NULL);
    CHECK(steps_run_begin(&st, copy_image(in), &env, &p, &err) == 0 && p);
    stop = 1;
    CHECKF(steps_run_end(p, &res, &err) == UP_ERR_CANCELLED && !res.data && !res.report &&
               strstr(err.msg, "step 3 (encode)"),
           "%s", err.msg);
    /* a failure in begin takes the image and leaves nothing pending */
    p = (steps_pending_t *)&st;
    CHECK(steps_run_begin(&st, pattern(4, 4, 3, 8), &env, &p, &err) == UP_ERR_CANCELLED && p == NULL);
    image_free(in);
}

/* ---- encode ---------------------------------------------------------------- */

/* Encode img with format and quality straight through image.h: bytes, or 0 on failure. */
static size_t encoded_size(const up_image_t *img, const char *format, int quality) {
    image_save_opts_t o = {.format = format, .quality = quality};
    void *buf = NULL;
    size_t n = 0;
    up_error_t err;
    if (image_save_buffer(img, &o, &buf, &n, &err))
        return 0;
    free(buf);
    return n;
}

static void test_target_bytes(void) {
    up_image_t *photo = load("images/chelsea.png");
    if (!photo)
        return;
    steps_env_t env = env_default();
    steps_result_t res;
    up_error_t err;
    char text[256];
    static const char *const fmts[] = {"jpg", "webp"};
    for (int f = 0; f < 2; f++) {
        size_t q92 = encoded_size(photo, fmts[f], image_format_default_quality(fmts[f]));
        size_t q40 = encoded_size(photo, fmts[f], 40);
        long long targets[] = {(long long)q92 + 10, (long long)q40, (long long)(q40 * 3 / 4),
                               (long long)q92 / 2};
        for (int t = 0; t < 4; t++) {
            snprintf(text, sizeof text, "[{\"op\":\"encode\",\"format\":\"%s\",\"target_bytes\":%lld}]",
                     fmts[f], targets[t]);
            int rc = run_text(text, copy_image(photo), &env, &res, &err);
            CHECKF(rc == 0, "%s: %s", text, err.msg);
            if (rc)
                continue;
            long long q = report_int(&res, 0, "quality"), n = report_int(&res, 0, "encodes");
            CHECKF((long long)res.size <= targets[t] && report_int(&res, 0, "bytes") == (long long)res.size,
                   "%s: %zu bytes", text, res.size);
            CHECK(res.width == photo->width && res.height == photo->height && !strcmp(res.format, fmts[f]));
            CHECKF(n >= 1 && n <= 8, "%s: %lld encodes", text, n);
            /* the next quality up would not fit (unless it is the ceiling) */
            if (q < image_format_default_quality(fmts[f]))
                CHECKF((long long)encoded_size(photo, fmts[f], (int)q + 1) > targets[t],
                       "%s: quality %lld+1 fits", text, q);
            CHECKF(encoded_size(photo, fmts[f], (int)q) == res.size, "%s: quality %lld is not what was kept",
                   text, q);
            printf("target %s %lld: quality %lld, %zu bytes, %lld encodes\n", fmts[f], targets[t], q,
                   res.size, n);
            up_image_t *img = decode(&res);
            CHECK(img && img->width == photo->width && img->height == photo->height);
            image_free(img);
            steps_result_fini(&res);
        }
    }
    /* the requested quality is the ceiling */
    CHECK(run_text("[{\"op\":\"encode\",\"format\":\"jpg\",\"quality\":30,\"target_bytes\":1000000000}]",
                   copy_image(photo), &env, &res, &err) == 0 &&
          report_int(&res, 0, "quality") == 30 && report_int(&res, 0, "encodes") == 1);
    steps_result_fini(&res);

    /* png: too big plain, met by a palette */
    size_t plain = encoded_size(photo, "png", 0);
    snprintf(text, sizeof text, "[{\"op\":\"encode\",\"format\":\"png\",\"target_bytes\":%zu}]", plain / 2);
    int rc = run_text(text, copy_image(photo), &env, &res, &err);
    if (image_png_palette_supported()) {
        CHECKF(rc == 0, "%s: %s", text, err.msg);
        json_t *pal = json_object_get(json_array_get(res.report, 0), "palette");
        CHECK(rc == 0 && res.size <= plain / 2 && json_is_object(pal));
        printf("png target %zu (plain %zu): %zu bytes, palette %lld colours quality %lld, %lld encodes\n",
               plain / 2, plain, res.size, (long long)json_integer_value(json_object_get(pal, "colours")),
               (long long)json_integer_value(json_object_get(pal, "quality")),
               report_int(&res, 0, "encodes"));
        up_image_t *img = decode(&res);
        CHECK(img && img->width == photo->width && img->height == photo->height);
        image_free(img);
    } else {
        CHECK(rc == UP_ERR_TOO_LARGE);
    }
    steps_result_fini(&res);
    /* lower: the quantiser's quality searched, still dithered */
    if (image_png_palette_supported()) {
        snprintf(text, sizeof text, "[{\"op\":\"encode\",\"format\":\"png\",\"target_bytes\":%zu}]",
                 plain / 5);
        CHECKF(run_text(text, copy_image(photo), &env, &res, &err) == 0, "%s: %s", text, err.msg);
        json_t *pal = json_object_get(json_array_get(res.report, 0), "palette");
        long long q = json_integer_value(json_object_get(pal, "quality"));
        CHECKF(res.size <= plain / 5 && q >= 1 && q < 100 && json_is_true(json_object_get(pal, "dither")) &&
                   report_int(&res, 0, "encodes") <= 10,
               "png target %zu: %zu bytes, quantiser quality %lld", plain / 5, res.size, q);
        printf("png target %zu: %zu bytes, quantiser quality %lld, %lld encodes\n", plain / 5, res.size, q,
               report_int(&res, 0, "encodes"));
        steps_result_fini(&res);
    }
    /* a target the plain PNG meets: one encode, no palette */
    snprintf(text, sizeof text, "[{\"op\":\"encode\",\"format\":\"png\",\"target_bytes\":%zu}]", plain);
    CHECK(run_text(text, copy_image(photo), &env, &res, &err) == 0 && res.size == plain &&
          report_int(&res, 0, "encodes") == 1 && !json_object_get(json_array_get(res.report, 0), "palette"));
    steps_result_fini(&res);
    /* 16 bits: 8 bits first */
    up_image_t *p16 = pattern(64, 64, 3, 16);
    for (size_t i = 0; i < 64 * 64 * 3; i++) /* noise in the low byte that 8 bits drop */
        ((uint16_t *)p16->pixels)[i] |= (uint16_t)(((i * 2654435761u) >> 24) & 0xff);
    size_t plain16 = encoded_size(p16, "png", 0);
    image_save_opts_t o8 = {.format = "png", .png_depth = 8};
    void *b8 = NULL;
    size_t n8 = 0;
    CHECK(image_save_buffer(p16, &o8, &b8, &n8, &err) == 0 && n8 < plain16);
    free(b8);
    snprintf(text, sizeof text, "[{\"op\":\"encode\",\"format\":\"png\",\"target_bytes\":%zu}]", n8);
    CHECK(run_text(text, p16, &env, &res, &err) == 0 && res.size == n8 && report_int(&res, 0, "depth") == 8);
    steps_result_fini(&res);

    /* unreachable: the smallest named */
    static const char *const unreachable[] = {"jpg", "webp", "png"};
    for (int f = 0; f < 3; f++) {
        snprintf(text, sizeof text, "[{\"op\":\"encode\",\"format\":\"%s\",\"target_bytes\":100}]",
                 unreachable[f]);
        rc = run_text(text, copy_image(photo), &env, &res, &err);
        CHECKF(rc == UP_ERR_TOO_LARGE &&
                   strstr(err.msg, "step 1 (encode): cannot reach 100 bytes: the smallest is "),
               "%s: %d %s", text, rc, err.msg);
        char want[64];
        snprintf(want, sizeof want, "bytes (%s, ", unreachable[f]);
        CHECKF(strstr(err.msg, f < 2 ? want : "bytes (png"), "%s", err.msg);
        CHECK(!res.data && !res.report);
        printf("unreachable: %s\n", err.msg);
    }
    image_free(photo);
}

static void test_default_encode_limits(void) {
    steps_env_t env = env_default();
    steps_result_t res;
    up_error_t err;
    static const struct {
        const char *source, *out;
    } fmts[] = {{"jpg", "jpg"}, {"webp", "webp"}, {"png", "png"},
                {"gif", "png"}, {"tiff", "png"},  {"", "png"}};
    for (size_t i = 0; i < sizeof fmts / sizeof fmts[0]; i++) {
        up_image_t *img = pattern(8, 8, 3, 8);
        snprintf(img->format, sizeof img->format, "%s", fmts[i].source);
        CHECK(run_text("[{\"op\":\"resize\",\"width\":4}]", img, &env, &res, &err) == 0);
        CHECKF(!strcmp(res.format, fmts[i].out), "source %s: wrote %s", fmts[i].source, res.format);
        /* the default encode is in the report */
        json_t *e = json_array_get(res.report, 1);
        CHECK(json_array_size(res.report) == 2 &&
              !strcmp(json_string_value(json_object_get(e, "op")), "encode") &&
              !strcmp(json_string_value(json_object_get(e, "format")), fmts[i].out));
        if (strcmp(fmts[i].out, "png") != 0)
            CHECK(report_int(&res, 1, "quality") == image_format_default_quality(fmts[i].out));
        steps_result_fini(&res);
    }
    /* encode "" keeps an explicit format over the source's */
    up_image_t *img = pattern(8, 8, 3, 8);
    snprintf(img->format, sizeof img->format, "jpg");
    CHECK(run_text("[{\"op\":\"encode\",\"format\":\"webp\",\"quality\":55}]", img, &env, &res, &err) == 0 &&
          !strcmp(res.format, "webp") && report_int(&res, 0, "quality") == 55);
    steps_result_fini(&res);

    /* max_output_pixels: checked before each step, with the step named */
    env.max_output_pixels = 500000;
    CHECK(run_text("[{\"op\":\"resize\",\"width\":600},{\"op\":\"resize\",\"width\":1000,\"height\":1000}]",
                   pattern(10, 10, 3, 8), &env, &res, &err) == UP_ERR_TOO_LARGE);
    CHECKF(strstr(err.msg,
                  "step 2 (resize): output 1000x1000 (1.0 megapixels) is over the limit of 0.5 megapixels"),
           "%s", err.msg);
    CHECK(!res.data && !res.report);
    CHECK(run_text("[{\"op\":\"upscale\",\"model\":\"realesr-animevideov3\",\"scale\":4}]",
                   pattern(400, 400, 3, 8), &env, &res, &err) == UP_ERR_TOO_LARGE &&
          strstr(err.msg, "step 1 (upscale): output 1600x1600"));
    CHECK(run_text("[{\"op\":\"resize\",\"width\":700,\"height\":700}]", pattern(10, 10, 3, 8), &env, &res,
                   &err) == 0);
    steps_result_fini(&res);
    /* too small: an upscale that empties the image */
    env.max_output_pixels = 0;
    CHECK(run_text("[{\"op\":\"upscale\",\"model\":\"realesr-animevideov3\",\"scale\":0.1}]",
                   pattern(4, 30, 3, 8), &env, &res, &err) == UP_ERR_INVALID &&
          strstr(err.msg, "step 1 (upscale)") && !res.data);

    /* a pipeline built by hand with encode in the middle, and no input */
    steps_t st;
    memset(&st, 0, sizeof st);
    st.n = 2;
    st.step[0].kind = STEP_ENCODE;
    st.step[1].kind = STEP_RESIZE;
    st.step[1].resize.width = 3;
    CHECK(steps_run(&st, pattern(4, 4, 3, 8), &env, &res, &err) == UP_ERR_INVALID && !res.report);
    st.n = 0;
    CHECK(steps_run(&st, pattern(4, 4, 3, 8), &env, &res, &err) == UP_ERR_INVALID);
    st.n = 1;
    CHECK(steps_run(&st, NULL, &env, &res, &err) == UP_ERR_INVALID);
    steps_result_fini(&res);
    steps_result_fini(NULL);
}

/* ---- the Tinify formats and animations ---------------------------------------------- */

/* The frames of a result (new), at most max, or NULL. */
static up_image_t *decode_frames(const steps_result_t *res, int max) {
    up_image_t *img = NULL;
    up_error_t err;
    CHECKF(res->data && image_load_buffer_frames(res->data, res->size, NULL, max, &img, &err) == 0,
           "decode: %s", res->data ? err.msg : "no data");
    return img;
}

static void test_frame_limit(void) {
    static const struct {
        const char *text;
        int limit;
    } cases[] = {
        {"[{\"op\":\"encode\",\"format\":\"gif\",\"frames\":7}]", 7},
        {"[{\"op\":\"resize\",\"width\":9},{\"op\":\"encode\",\"format\":\"webp\",\"frames\":3}]", 3},
        {"[{\"op\":\"encode\",\"frames\":5}]", 5}, /* the input's own format: a WebP stays WebP */
        {"[{\"op\":\"encode\",\"format\":\"png\",\"frames\":7}]", 1},
        {"[{\"op\":\"encode\",\"format\":\"avif\",\"frames\":7}]", 1},
        {"[{\"op\":\"encode\",\"format\":\"gif\"}]", 1},
        {"[{\"op\":\"encode\",\"format\":\"gif\",\"frames\":1}]", 1},
        {"[{\"op\":\"resize\",\"width\":9}]", 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        steps_t st;
        up_error_t err;
        CHECKF(steps_parse_text(cases[i].text, &st, &err) == 0, "%s: %s", cases[i].text, err.msg);
        CHECKF(steps_frame_limit(&st) == cases[i].limit, "%s: limit %d", cases[i].text,
               steps_frame_limit(&st));
    }
}

/* Every output format from a still photo: decodes at the size steps_output_size said. */
static void test_formats(void) {
    up_image_t *photo = load("images/chelsea.png"); /* 451x300 */
    if (!photo)
        return;
    steps_env_t env = env_default();
    steps_result_t res;
    up_error_t err;
    static const char *const fmts[] = {"png", "jpg", "webp", "avif", "gif", "ico"};
    for (size_t f = 0; f < sizeof fmts / sizeof fmts[0]; f++) {
        char text[160];
        snprintf(text, sizeof text,
                 "[{\"op\":\"resize\",\"width\":300},{\"op\":\"encode\",\"format\":\"%s\"}]", fmts[f]);
        steps_t st;
        CHECK(steps_parse_text(text, &st, &err) == 0);
        int ow, oh;
        steps_output_size(&st, photo->width, photo->height, &ow, &oh);
        int rc = run_text(text, copy_image(photo), &env, &res, &err);
        CHECKF(rc == 0, "%s: %s", text, err.msg);
        if (rc)
            continue;
        int want_w = strcmp(fmts[f], "ico") ? 300 : 256, want_h = strcmp(fmts[f], "ico") ? 200 : 171;
        CHECKF(ow == want_w && oh == want_h && res.width == ow && res.height == oh && res.n_frames == 1 &&
                   !strcmp(res.format, fmts[f]) && strcmp(image_content_type(res.format), "") != 0,
               "%s: %dx%d, result %dx%d", fmts[f], ow, oh, res.width, res.height);
        json_t *e = json_array_get(res.report, 1), *out = json_object_get(e, "out");
        CHECK(json_integer_value(json_array_get(out, 0)) == ow &&
              json_integer_value(json_array_get(out, 1)) == oh);
        CHECK(report_int(&res, 1, "quality") == (image_format_default_quality(fmts[f]) ?: -1));
        if (strcmp(fmts[f], "ico") != 0) {
            up_image_t *img = decode(&res);
            CHECK(img && img->width == ow && img->height == oh && !strcmp(img->format, fmts[f]));
            image_free(img);
        } else { /* ICONDIR, one entry of 256 x 171, then the PNG */
            const uint8_t *p = res.data;
            CHECK(res.size > 22 && p[2] == 1 && p[4] == 1 && p[6] == 0 && p[7] == 171 &&
                  !memcmp(p + 22, "\x89PNG", 4));
            up_image_t *img = NULL;
            CHECK(image_load_buffer(p + 22, res.size - 22, NULL, &img, &err) == 0 && img &&
                  img->width == 256 && img->height == 171 && img->bands == 4);
            image_free(img);
        }
        steps_result_fini(&res);
    }
    /* a small ico keeps its size */
    CHECK(run_text("[{\"op\":\"resize\",\"width\":32,\"height\":32},{\"op\":\"encode\",\"format\":\"ico\"}]",
                   copy_image(photo), &env, &res, &err) == 0 &&
          res.width == 32 && res.height == 32 && res.size > 22 && ((uint8_t *)res.data)[6] == 32);
    steps_result_fini(&res);

    /* target_bytes for avif and gif: the next quality up does not fit */
    static const char *const searched[] = {"avif", "gif"};
    for (int f = 0; f < 2; f++) {
        size_t top = encoded_size(photo, searched[f], image_format_default_quality(searched[f]));
        size_t q40 = encoded_size(photo, searched[f], 40);
        long long targets[] = {(long long)top + 10, (long long)q40, (long long)(q40 * 3 / 4)};
        for (int t = 0; t < 3; t++) {
            char text[160];
            snprintf(text, sizeof text, "[{\"op\":\"encode\",\"format\":\"%s\",\"target_bytes\":%lld}]",
                     searched[f], targets[t]);
            int rc = run_text(text, copy_image(photo), &env, &res, &err);
            CHECKF(rc == 0, "%s: %s", text, err.msg);
            if (rc)
                continue;
            long long q = report_int(&res, 0, "quality"), n = report_int(&res, 0, "encodes");
            CHECKF((long long)res.size <= targets[t] && n >= 1 && n <= 8, "%s: %zu bytes, %lld encodes", text,
                   res.size, n);
            if (q < image_format_default_quality(searched[f]))
                CHECKF((long long)encoded_size(photo, searched[f], (int)q + 1) > targets[t],
                       "%s: q%lld+1 fits", text, q);
            CHECK(encoded_size(photo, searched[f], (int)q) == res.size);
            printf("target %s %lld: quality %lld, %zu bytes, %lld encodes\n", searched[f], targets[t], q,
                   res.size, n);
            steps_result_fini(&res);
        }
        char text[160];
        snprintf(text, sizeof text, "[{\"op\":\"encode\",\"format\":\"%s\",\"target_bytes\":50}]",
                 searched[f]);
        CHECKF(run_text(text, copy_image(photo), &env, &res, &err) == UP_ERR_TOO_LARGE &&
                   strstr(err.msg, "cannot reach 50 bytes"),
               "%s: %s", text, err.msg);
    }
    CHECK(run_text("[{\"op\":\"encode\",\"format\":\"ico\",\"target_bytes\":100}]", copy_image(photo), &env,
                   &res, &err) == UP_ERR_TOO_LARGE &&
          strstr(err.msg, "bytes (ico)"));
    image_free(photo);
}

#define N_ANIM 5
static const int anim_delays[N_ANIM] = {60, 90, 150, 240, 400};
static const unsigned char anim_colours[N_ANIM][3] = {
    {230, 20, 20}, {20, 200, 40}, {30, 40, 220}, {240, 220, 30}, {250, 250, 250}};

/* An animated GIF (fmt "gif") or WebP of N_ANIM flat frames of w x h, looping twice, decoded with its frames.
 */
static up_image_t *animation(const char *fmt, int w, int h) {
    up_image_t *a = image_new_frames(w, h, 3, 8, N_ANIM), *back = NULL;
    if (!a)
        return NULL;
    for (int i = 0; i < N_ANIM; i++) {
        uint8_t *p = image_frame_pixels(a, i);
        for (int k = 0; k < w * h; k++)
            memcpy(p + 3 * k, anim_colours[i], 3);
        a->delays[i] = anim_delays[i];
    }
    a->loop = 2;
    image_save_opts_t o = {.format = fmt, .quality = 100};
    void *buf = NULL;
    size_t n = 0;
    up_error_t err;
    CHECKF(image_save_buffer(a, &o, &buf, &n, &err) == 0 &&
               image_load_buffer_frames(buf, n, NULL, 100, &back, &err) == 0,
           "animation: %s", err.msg);
    CHECK(back && back->n_pages == N_ANIM && back->width == w && !strcmp(back->format, fmt));
    free(buf);
    image_free(a);
    return back;
}

/* Frame i of img is near colour c on its top and bottom rows (tol) and in its middle. */
static int frame_near(const up_image_t *img, int i, int c, int tol) {
    up_image_t v = image_frame_view(img, i);
    int rows[3] = {0, v.height / 2, v.height - 1};
    for (int r = 0; r < 3; r++)
        for (int x = 0; x < v.width; x++)
            for (int b = 0; b < 3; b++)
                if (abs((int)px(&v, x, rows[r], b) - anim_colours[c][b]) > tol)
                    return 0;
    return 1;
}

/* A result that is an animation of n frames of w x h from the first n of anim_*. */
static void check_result_anim(const char *what, const steps_result_t *res, const char *fmt, int n, int w,
                              int h, int tol) {
    CHECKF(!strcmp(res->format, fmt) && res->n_frames == n && res->width == w && res->height == h,
           "%s: %s, %d frames of %dx%d", what, res->format, res->n_frames, res->width, res->height);
    up_image_t *img = decode_frames(res, 100);
    CHECKF(img && img->n_pages == n && img->n_frames == n && img->width == w && img->height == h,
           "%s: decoded %d frames of %dx%d", what, img ? img->n_pages : 0, img ? img->width : 0,
           img ? img->height : 0);
    for (int i = 0; img && i < img->n_pages && n > 1; i++) {
        CHECKF(img->delays[i] == anim_delays[i], "%s: frame %d delay %d", what, i, img->delays[i]);
        /* no bleed: each frame its own colour, also on the rows next to its neighbours */
        up_image_t v = image_frame_view(img, i);
        CHECKF(frame_near(img, i, i, tol), "%s: frame %d is not its colour: top %u %u %u, bottom %u %u %u",
               what, i, px(&v, 0, 0, 0), px(&v, 0, 0, 1), px(&v, 0, 0, 2), px(&v, 0, h - 1, 0),
               px(&v, 0, h - 1, 1), px(&v, 0, h - 1, 2));
    }
    if (img && n > 1)
        CHECKF(img->loop == 2, "%s: loop %d", what, img->loop);
    image_free(img);
}

static void test_animation(void) {
    steps_env_t env = env_default();
    steps_result_t res;
    up_error_t err;
    static const char *const fmts[] = {"gif", "webp"};
    for (int f = 0; f < 2; f++) {
        int tol = f == 0 ? 12 : 16; /* the network on flat colour, then GIF's palette or lossy WebP */
        char text[256], what[64];
        /* upscale x2, every frame */
        snprintf(text, sizeof text,
                 "[{\"op\":\"upscale\",\"model\":\"realesr-animevideov3\",\"scale\":2},"
                 "{\"op\":\"encode\",\"format\":\"%s\",\"frames\":10}]",
                 fmts[f]);
        snprintf(what, sizeof what, "%s upscale x2", fmts[f]);
        int rc = run_text(text, animation(fmts[f], 24, 16), &env, &res, &err);
        CHECKF(rc == 0, "%s: %s", what, err.msg);
        if (!rc) {
            check_result_anim(what, &res, fmts[f], N_ANIM, 48, 32, tol);
            CHECK(report_int(&res, 0, "frames") == N_ANIM && report_int(&res, 1, "frames") == N_ANIM);
        }
        steps_result_fini(&res);

        /* the frame limit: the first 3 */
        snprintf(text, sizeof text,
                 "[{\"op\":\"upscale\",\"model\":\"realesr-animevideov3\",\"scale\":2},"
                 "{\"op\":\"encode\",\"format\":\"%s\",\"frames\":3}]",
                 fmts[f]);
        snprintf(what, sizeof what, "%s 3 frames", fmts[f]);
        CHECKF(run_text(text, animation(fmts[f], 24, 16), &env, &res, &err) == 0, "%s: %s", what, err.msg);
        check_result_anim(what, &res, fmts[f], 3, 48, 32, tol);
        steps_result_fini(&res);

        /* resize per frame, crop and pad too; to the other animated format */
        const char *other = fmts[1 - f];
        snprintf(text, sizeof text,
                 "[{\"op\":\"resize\",\"width\":36,\"height\":20,\"fit\":\"crop\"},"
                 "{\"op\":\"resize\",\"width\":40,\"height\":40,\"fit\":\"pad\",\"background\":\"#000000\"},"
                 "{\"op\":\"resize\",\"width\":20},{\"op\":\"encode\",\"format\":\"%s\",\"frames\":5}]",
                 other);
        snprintf(what, sizeof what, "%s resize to %s", fmts[f], other);
        CHECKF(run_text(text, animation(fmts[f], 24, 16), &env, &res, &err) == 0, "%s: %s", what, err.msg);
        CHECKF(res.n_frames == N_ANIM && res.width == 20 && res.height == 20 && !strcmp(res.format, other),
               "%s", what);
        up_image_t *img = decode_frames(&res, 100);
        for (int i = 0; img && i < img->n_pages; i++) { /* the picture in the middle, black bars */
            up_image_t v = image_frame_view(img, i);
            CHECKF(abs((int)px(&v, 10, 10, 0) - anim_colours[i][0]) <= 16 && px(&v, 10, 0, 0) < 16 &&
                       px(&v, 10, 19, 1) < 16 && img->delays[i] == anim_delays[i],
                   "%s: frame %d: middle %u, bar %u", what, i, px(&v, 10, 10, 0), px(&v, 10, 0, 0));
        }
        CHECK(img && img->n_pages == N_ANIM);
        image_free(img);
        steps_result_fini(&res);

        /* a still format takes the first frame, whatever frames says, and runs it alone */
        static const char *const still[] = {"png", "jpg", "avif", "ico"};
        for (int s = 0; s < 4; s++) {
            cache.calls = 0;
            snprintf(text, sizeof text,
                     "[{\"op\":\"resize\",\"width\":48},{\"op\":\"encode\",\"format\":\"%s\",\"frames\":10}]",
                     still[s]);
            snprintf(what, sizeof what, "%s to %s", fmts[f], still[s]);
            CHECKF(run_text(text, animation(fmts[f], 24, 16), &env, &res, &err) == 0, "%s: %s", what,
                   err.msg);
            CHECKF(res.n_frames == 1 && res.width == 48 && res.height == 32 &&
                       report_int(&res, 0, "frames") == -1,
                   "%s: %d frames", what, res.n_frames);
            img = NULL;
            if (!strcmp(still[s], "ico"))
                CHECK(res.size > 22 &&
                      image_load_buffer((uint8_t *)res.data + 22, res.size - 22, NULL, &img, &err) == 0);
            else
                img = decode_frames(&res, 100);
            CHECKF(img && img->n_pages == 1 && frame_near(img, 0, 0, strcmp(still[s], "png") ? 12 : 1),
                   "%s: not the first frame", what);
            image_free(img);
            steps_result_fini(&res);
        }
        /* no frames asked: the first frame, even for gif */
        snprintf(text, sizeof text, "[{\"op\":\"encode\",\"format\":\"%s\"}]", fmts[f]);
        CHECK(run_text(text, animation(fmts[f], 24, 16), &env, &res, &err) == 0 && res.n_frames == 1);
        img = decode_frames(&res, 100);
        CHECK(img && img->n_pages == 1 && img->n_frames == 1);
        image_free(img);
        steps_result_fini(&res);
    }
    /* the default encode of a GIF is a still PNG; of an animated WebP, with frames, a WebP animation */
    CHECK(run_text("[{\"op\":\"encode\",\"frames\":10}]", animation("gif", 24, 16), &env, &res, &err) == 0 &&
          !strcmp(res.format, "png") && res.n_frames == 1);
    steps_result_fini(&res);
    CHECK(run_text("[{\"op\":\"encode\",\"frames\":10}]", animation("webp", 24, 16), &env, &res, &err) == 0 &&
          !strcmp(res.format, "webp") && res.n_frames == N_ANIM);
    steps_result_fini(&res);

    /* max_output_pixels counts every frame */
    steps_env_t lim = env;
    lim.max_output_pixels = 48 * 32 * 4;
    CHECK(run_text("[{\"op\":\"upscale\",\"model\":\"realesr-animevideov3\",\"scale\":2},"
                   "{\"op\":\"encode\",\"format\":\"gif\",\"frames\":5}]",
                   animation("gif", 24, 16), &lim, &res, &err) == UP_ERR_TOO_LARGE &&
          strstr(err.msg, "step 1 (upscale): output 5 frames of 48x32 (0.0 megapixels) is over the limit"));
    CHECK(run_text("[{\"op\":\"upscale\",\"model\":\"realesr-animevideov3\",\"scale\":2},"
                   "{\"op\":\"encode\",\"format\":\"gif\",\"frames\":4}]",
                   animation("gif", 24, 16), &lim, &res, &err) == 0 &&
          res.n_frames == 4);
    steps_result_fini(&res);

    /* progress over the frames: non-decreasing, 100 once, every frame's tiles reported; cancel midway */
    static progress_log_t log;
    memset(&log, 0, sizeof log);
    steps_env_t pe = env;
    pe.progress = on_progress;
    pe.progress_ctx = &log;
    CHECK(run_text("[{\"op\":\"upscale\",\"model\":\"realesr-animevideov3\",\"scale\":2,\"tile\":16},"
                   "{\"op\":\"encode\",\"format\":\"webp\",\"frames\":5}]",
                   animation("gif", 24, 16), &pe, &res, &err) == 0);
    int mono = 1, hundreds = 0;
    for (int i = 0; i < log.n && i < 4096; i++) {
        mono &= log.values[i] >= 0 && log.values[i] <= 100 && (i == 0 || log.values[i] >= log.values[i - 1]);
        hundreds += log.values[i] == 100;
    }
    CHECKF(mono && hundreds == 1 && log.n > 2 * N_ANIM && log.values[log.n - 1] == 100, "%d calls", log.n);
    steps_result_fini(&res);
    memset(&log, 0, sizeof log);
    log.cancel_at = 6;
    CHECK(run_text("[{\"op\":\"resize\",\"width\":40},{\"op\":\"upscale\",\"model\":\"realesr-animevideov3\","
                   "\"scale\":2},{\"op\":\"encode\",\"format\":\"gif\",\"frames\":5}]",
                   animation("gif", 24, 16), &pe, &res, &err) == UP_ERR_CANCELLED &&
          !res.data && strstr(err.msg, "step 2 (upscale)"));
}

int main(void) {
    data = test_env("UPRES_SHARED_DATA");
    const char *models = test_env("UPRES_TEST_MODELS");
    up_error_t err;
    CHECK(image_init() == 0);
    CHECKF(upscale_registry_scan(models, &reg, &err) == 0, "%s", err.msg);
    if (!reg)
        return test_summary();
    test_parse_refusals();
    test_parse_accepts();
    test_round_trip();
    test_sizes_generated();
    test_sizes_model();
    test_pad();
    test_crop();
    test_progress_cancel();
    test_begin_end();
    test_target_bytes();
    test_default_encode_limits();
    test_frame_limit();
    test_formats();
    test_animation();
    cache_fini();
    upscale_registry_free(reg);
    return test_summary();
}
