/*
 * param_test.c - tests of the ncnn model reader (src/nn/param.c, weights.c,
 * model.c).
 *
 * The data-driven cases in tests/cases/param/<case>/ (model.param, optional
 * model.bin, expect; see make_cases.py there) cover the error paths one by
 * one. The rest loads the real models and checks counts, parameters and
 * weights decoded from fp16 against values computed here from the raw bytes,
 * checks the parameter defaults, and cuts and corrupts the real files at
 * random to check that bad input always ends in an error, never a crash (the
 * sanitizer build runs this too).
 */
#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "nn/model.h"
#include "test.h"

/* ---- helpers ---- */

/* snprintf a path into a char array; a test setup problem if it does not fit */
#define PATHF(buf, ...)                                                                                      \
    do {                                                                                                     \
        int n_ = snprintf(buf, sizeof buf, __VA_ARGS__);                                                     \
        if (n_ < 0 || (size_t)n_ >= sizeof buf) {                                                            \
            fprintf(stderr, "test: path too long\n");                                                        \
            exit(2);                                                                                         \
        }                                                                                                    \
    } while (0)

static char *read_all(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 1 << 16, len = 0, got;
    char *buf = malloc(cap);
    while (buf && (got = fread(buf + len, 1, cap - len, f)) > 0) {
        len += got;
        if (len == cap)
            buf = realloc(buf, cap *= 2);
    }
    fclose(f);
    *size = len;
    return buf;
}

static int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

/* A copy in a buffer of exactly n bytes, so that ASan sees any over-read. */
static void *exact_copy(const void *p, size_t n) {
    void *q = malloc(n ? n : 1);
    if (q && n)
        memcpy(q, p, n);
    return q;
}

static const nn_layer_t *find_layer(const nn_model_t *m, const char *name) {
    for (int i = 0; i < m->n_layers; i++)
        if (strcmp(m->layers[i].name, name) == 0)
            return &m->layers[i];
    return NULL;
}

/* IEEE half by the textbook formula, independent of nn_half_to_float. */
static double ref_half(unsigned h) {
    int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    double v;
    if (e == 0)
        v = ldexp(m, -24);
    else if (e == 31)
        v = m ? NAN : INFINITY;
    else
        v = ldexp(m + 1024, e - 25);
    return s ? -v : v;
}

static unsigned get_u16(const unsigned char *p) { return p[0] | p[1] << 8; }

static uint32_t get_u32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static float get_f32(const unsigned char *p) {
    uint32_t u = get_u32(p);
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rng(void) { /* xorshift64*: deterministic across runs */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ull;
}

/* ---- nn_half_to_float ---- */

static void test_half(void) {
    int bad = 0;
    for (unsigned h = 0; h < 65536; h++) {
        float f = nn_half_to_float((unsigned short)h);
        double r = ref_half(h);
        uint32_t bits;
        memcpy(&bits, &f, sizeof bits);
        int ok;
        if (isnan(r))
            ok = isnan(f) && (bits & 0x7fffffu) == (h & 0x3ffu) << 13 && !!signbit(f) == !!(h & 0x8000);
        else
            ok = (double)f == r && !!signbit(f) == !!(h & 0x8000);
        if (!ok && bad++ < 5)
            fprintf(stderr, "half 0x%04x: got %a, want %a\n", h, (double)f, r);
    }
    CHECKF(bad == 0, "%d half values decoded wrong", bad);
    CHECK(nn_half_to_float(0x3c00) == 1.0f);
    CHECK(nn_half_to_float(0xc000) == -2.0f);
    CHECK(nn_half_to_float(0x7bff) == 65504.0f);
    CHECK(nn_half_to_float(0x0001) == 0x1p-24f);
    CHECK(nn_half_to_float(0x03ff) == 0x3ffp-24f);
    CHECK(nn_half_to_float(0x0400) == 0x1p-14f);
    CHECK(nn_half_to_float(0x8000) == 0.0f && signbit(nn_half_to_float(0x8000)));
    CHECK(isinf(nn_half_to_float(0x7c00)) && nn_half_to_float(0x7c00) > 0);
    CHECK(isinf(nn_half_to_float(0xfc00)) && nn_half_to_float(0xfc00) < 0);
    CHECK(isnan(nn_half_to_float(0x7e00)));
}

/* ---- backend names ---- */

static void test_backend_names(void) {
    nn_backend_kind_t k = NN_BACKEND_DNNL;
    CHECK(strcmp(nn_backend_name(NN_BACKEND_REF), "ref") == 0);
    CHECK(strcmp(nn_backend_name(NN_BACKEND_DNNL), "dnnl") == 0);
    CHECK(nn_backend_parse("ref", &k) == 0 && k == NN_BACKEND_REF);
    CHECK(nn_backend_parse("dnnl", &k) == 0 && k == NN_BACKEND_DNNL);
    CHECK(nn_backend_parse("vulkan", &k) == UP_ERR_INVALID);
    CHECK(nn_backend_parse("", &k) == UP_ERR_INVALID);
    CHECK(nn_backend_parse(NULL, &k) == UP_ERR_INVALID);
}

/* ---- data-driven cases ---- */

static int code_from_name(const char *s) {
    static const struct {
        const char *name;
        int code;
    } codes[] = {{"NOMEM", UP_ERR_NOMEM},        {"IO", UP_ERR_IO},
                 {"FORMAT", UP_ERR_FORMAT},      {"UNSUPPORTED", UP_ERR_UNSUPPORTED},
                 {"INVALID", UP_ERR_INVALID},    {"TOO_LARGE", UP_ERR_TOO_LARGE},
                 {"NOT_FOUND", UP_ERR_NOT_FOUND}};
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++)
        if (strcmp(s, codes[i].name) == 0)
            return codes[i].code;
    return 1; /* never returned by the loader */
}

static void chomp(char *s) {
    size_t n = strlen(s);
    while (n && (s[n - 1] == '\n' || s[n - 1] == '\r'))
        s[--n] = 0;
}

static void run_case(const char *dir, const char *name) {
    char path[1024], ppath[1024], bpath[1024];
    char l1[256] = "", l2[512] = "", l3[64] = "";
    PATHF(path, "%s/%s/expect", dir, name);
    PATHF(ppath, "%s/%s/model.param", dir, name);
    PATHF(bpath, "%s/%s/model.bin", dir, name);
    FILE *f = fopen(path, "r");
    CHECKF(f != NULL, "case %s: no expect file", name);
    if (!f)
        return;
    if (!fgets(l1, sizeof l1, f))
        l1[0] = 0;
    if (!fgets(l2, sizeof l2, f))
        l2[0] = 0;
    if (!fgets(l3, sizeof l3, f))
        l3[0] = 0;
    fclose(f);
    chomp(l1);
    chomp(l2);
    chomp(l3);

    nn_model_t *m = NULL;
    up_error_t err;
    memset(&err, 0, sizeof err);
    int rc;
    if (file_exists(bpath)) {
        rc = nn_model_load(ppath, bpath, &m, &err);
    } else {
        /* no .bin: the same as an empty one */
        size_t size = 0;
        char *text = read_all(ppath, &size);
        CHECKF(text != NULL, "case %s: cannot read model.param", name);
        char *copy = exact_copy(text, size);
        rc = nn_model_load_mem(copy, size, "", 0, &m, &err);
        free(copy);
        free(text);
    }

    if (strcmp(l1, "ok") == 0) {
        CHECKF(rc == 0 && m != NULL, "case %s: expected ok, got %d: %s", name, rc, err.msg);
    } else if (strncmp(l1, "error ", 6) == 0) {
        int want = code_from_name(l1 + 6);
        CHECKF(want != 1, "case %s: unknown code in expect: %s", name, l1);
        CHECKF(rc == want && m == NULL, "case %s: expected %s (%d), got %d: %s", name, l1 + 6, want, rc,
               err.msg);
        CHECKF(err.code == rc, "case %s: err.code %d, returned %d", name, err.code, rc);
        CHECKF(!l2[0] || strstr(err.msg, l2), "case %s: message '%s' lacks '%s'", name, err.msg, l2);
        if (l3[0]) {
            int line = -1;
            CHECKF(sscanf(l3, "line=%d", &line) == 1, "case %s: bad third line '%s'", name, l3);
            CHECKF(err.line == line, "case %s: error on line %d, expected %d (%s)", name, err.line, line,
                   err.msg);
            char prefix[64];
            snprintf(prefix, sizeof prefix, "line %d: ", line);
            CHECKF(strstr(err.msg, prefix) != NULL, "case %s: message '%s' lacks '%s'", name, err.msg,
                   prefix);
        }
        /* model.param errors name the .param file, model.bin ones the .bin */
        if (file_exists(bpath))
            CHECKF(strncmp(err.msg, dir, strlen(dir)) == 0, "case %s: message '%s' does not name the file",
                   name, err.msg);
    } else {
        CHECKF(0, "case %s: expect must start with ok or error, not '%s'", name, l1);
    }
    nn_model_free(m);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void test_cases(void) {
    char dir[1024];
    PATHF(dir, "%s/param", test_env("UPRES_TEST_CASES"));
    DIR *d = opendir(dir);
    CHECKF(d != NULL, "cannot open %s", dir);
    if (!d)
        return;
    char *names[512];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 512) {
        char p[1200];
        PATHF(p, "%s/%s/expect", dir, e->d_name);
        if (e->d_name[0] != '.' && file_exists(p))
            names[n++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, (size_t)n, sizeof names[0], cmp_str);
    CHECKF(n >= 30, "only %d cases in %s", n, dir);
    for (int i = 0; i < n; i++) {
        run_case(dir, names[i]);
        free(names[i]);
    }
}

/* The two good tiny models carry the same values in fp16 and fp32. */
static void test_good_values(void) {
    static const char *cases[] = {"good_fp16", "good_fp32"};
    const float weight[3] = {1.0f, -2.0f, 0x1p-24f}, bias[3] = {0.25f, -1.0f, 3.0f},
                slope[3] = {0.125f, 0.5f, -0.75f};
    for (int i = 0; i < 2; i++) {
        char pp[1024], bp[1024];
        const char *dir = test_env("UPRES_TEST_CASES");
        PATHF(pp, "%s/param/%s/model.param", dir, cases[i]);
        PATHF(bp, "%s/param/%s/model.bin", dir, cases[i]);
        nn_model_t *m = NULL;
        up_error_t err;
        int rc = nn_model_load(pp, bp, &m, &err);
        CHECKF(rc == 0, "%s: %s", cases[i], err.msg);
        if (rc)
            continue;
        CHECK(m->n_layers == 3 && m->n_blobs == 3);
        CHECK(strcmp(m->blobs[m->input_blob].name, "data") == 0);
        CHECK(strcmp(m->blobs[m->output_blob].name, "output") == 0);
        CHECK(m->blobs[m->output_blob].producer == 2 && m->blobs[m->output_blob].n_consumers == 0);
        CHECK(m->blobs[m->input_blob].n_consumers == 1);
        const nn_layer_t *in = &m->layers[0], *conv = &m->layers[1], *prelu = &m->layers[2];
        CHECK(in->op == NN_OP_INPUT && in->n_in == 0 && in->n_out == 1 && in->line == 3);
        CHECK(conv->op == NN_OP_CONV && strcmp(conv->type, "Convolution") == 0);
        CHECK(strcmp(conv->name, "conv0") == 0 && conv->line == 4);
        CHECK(conv->in[0] == m->input_blob && conv->out[0] == prelu->in[0]);
        CHECK(conv->p.conv.n_out == 3 && conv->p.conv.n_in == 1 && conv->p.conv.bias_term == 1);
        CHECK(prelu->op == NN_OP_PRELU && prelu->p.prelu.n_slope == 3);
        for (int k = 0; k < 3; k++) {
            CHECKF(conv->p.conv.weight[k] == weight[k], "%s weight[%d] = %g", cases[i], k,
                   (double)conv->p.conv.weight[k]);
            CHECK(conv->p.conv.bias[k] == bias[k]);
            CHECK(prelu->p.prelu.slope[k] == slope[k]);
        }
        nn_model_free(m);
    }
}

/* ---- parameter defaults, through nn_param_parse ---- */

static int parse_text(const char *text, nn_model_t *m, up_error_t *err) {
    size_t n = strlen(text);
    char *copy = exact_copy(text, n); /* not NUL-terminated */
    int rc = nn_param_parse(copy, n, m, err);
    free(copy);
    return rc;
}

static void test_defaults(void) {
    nn_model_t m;
    up_error_t err;
    const char *text = "7767517\n"
                       "9 11\n"
                       "Input in0 0 1 data\n"
                       "Split s 1 3 data a b c\n"
                       "Convolution c0 1 1 a x 0=8 1=3 4=2 6=216\n"
                       "Convolution c1 1 1 b y 0=8 1=3 11=5 2=2 3=4 4=1 14=3 6=360 9=1 "
                       "-23310=1,5.0e-01 18=-1.5\n"
                       "Convolution c2 1 1 c z 0=8 1=1 4=1 15=2 14=3 16=4 5=1 6=24 9=3 -23310=2,0,6\n"
                       "Eltwise e 3 1 x y z xyz\n"
                       "Interp i 1 1 xyz r 0=2\n"
                       "PixelShuffle p 1 1 r q\n"
                       "BinaryOp bo 1 1 q output 1=1 2=3\n";
    int rc = parse_text(text, &m, &err);
    CHECKF(rc == 0, "%s", err.msg);
    if (rc)
        return;
    const nn_conv_param_t *c0 = &m.layers[2].p.conv, *c1 = &m.layers[3].p.conv, *c2 = &m.layers[4].p.conv;
    CHECK(c0->kernel_w == 3 && c0->kernel_h == 3 && c0->n_in == 3);
    CHECK(c0->dilation_w == 1 && c0->dilation_h == 1 && c0->stride_w == 1 && c0->stride_h == 1);
    CHECK(c0->pad_left == 2 && c0->pad_right == 2 && c0->pad_top == 2 && c0->pad_bottom == 2);
    CHECK(c0->bias_term == 0 && c0->act == NN_ACT_NONE && c0->pad_value == 0.0f);
    CHECK(c1->kernel_w == 3 && c1->kernel_h == 5 && c1->n_in == 3);
    CHECK(c1->dilation_w == 2 && c1->dilation_h == 2 && c1->stride_w == 4 && c1->stride_h == 4);
    CHECK(c1->pad_left == 1 && c1->pad_right == 1 && c1->pad_top == 3 && c1->pad_bottom == 3);
    CHECK(c1->pad_value == -1.5f);
    CHECK(c1->act == NN_ACT_RELU && c1->act_params[0] == 0.0f); /* ncnn ignores relu's params */
    CHECK(c2->pad_left == 1 && c2->pad_right == 2 && c2->pad_top == 3 && c2->pad_bottom == 4);
    CHECK(c2->n_in == 3 && c2->bias_term == 1);
    CHECK(c2->act == NN_ACT_CLIP && c2->act_params[0] == 0.0f && c2->act_params[1] == 6.0f);
    const nn_eltwise_param_t *e = &m.layers[5].p.eltwise;
    CHECK(e->op == NN_ELTWISE_PROD && e->n_coeffs == 0);
    CHECK(m.layers[5].n_in == 3);
    const nn_interp_param_t *ip = &m.layers[6].p.interp;
    CHECK(ip->type == NN_INTERP_BILINEAR && ip->height_scale == 1.0f && ip->width_scale == 1.0f);
    CHECK(ip->out_h == 0 && ip->out_w == 0 && ip->align_corner == 0);
    CHECK(m.layers[7].p.pixelshuffle.factor == 1 && m.layers[7].p.pixelshuffle.mode == 0);
    const nn_binary_param_t *b = &m.layers[8].p.binary;
    CHECK(b->op == NN_BINARY_ADD && b->with_scalar == 1 && b->b == 3.0f);
    /* blobs: producers and consumers */
    CHECK(m.n_blobs == 11);
    CHECK(m.blobs[m.input_blob].producer == 0 && m.blobs[m.input_blob].n_consumers == 1);
    CHECK(m.blobs[m.output_blob].producer == 8);
    CHECK(m.layers[1].n_out == 3 && m.blobs[m.layers[1].out[2]].n_consumers == 1);
    nn_model_fini(&m);
    CHECK(m.layers == NULL && m.blobs == NULL && m.n_layers == 0);

    /* fixed Interp size: both or neither, as ncnn */
    rc = parse_text("7767517\n2 2\nInput i 0 1 data\nInterp r 1 1 data output 0=1 3=7 4=9 6=1\n", &m, &err);
    CHECKF(rc == 0, "%s", err.msg);
    if (!rc) {
        CHECK(m.layers[1].p.interp.out_h == 7 && m.layers[1].p.interp.out_w == 9);
        CHECK(m.layers[1].p.interp.align_corner == 1 && m.layers[1].p.interp.type == NN_INTERP_NEAREST);
        nn_model_fini(&m);
    }
    rc = parse_text("7767517\n2 2\nInput i 0 1 data\nInterp r 1 1 data output 0=1 3=7 1=2.5\n", &m, &err);
    CHECKF(rc == 0, "%s", err.msg);
    if (!rc) {
        CHECK(m.layers[1].p.interp.out_h == 0 && m.layers[1].p.interp.out_w == 0);
        CHECK(m.layers[1].p.interp.height_scale == 2.5f);
        nn_model_fini(&m);
    }
    /* no trailing newline, and a model whose text is not NUL-terminated */
    rc = parse_text("7767517\n2 2\nInput i 0 1 data\nPixelShuffle p 1 1 data output 0=2 1=1", &m, &err);
    CHECKF(rc == 0, "%s", err.msg);
    if (!rc) {
        CHECK(m.layers[1].p.pixelshuffle.factor == 2 && m.layers[1].p.pixelshuffle.mode == 1);
        nn_model_fini(&m);
    }
    /* a failed parse leaves nothing behind */
    rc = parse_text("7767517\n2 2\nInput i 0 1 data\nPixelShuffle p 1 1 data output 0=2 1=2", &m, &err);
    CHECK(rc == UP_ERR_FORMAT && err.line == 4 && m.layers == NULL && m.blobs == NULL);
    CHECK(strstr(err.msg, "line 4: PixelShuffle 'p': mode (1=) must be in 0..1, got 2") != NULL);
    /* NULL text is an empty file */
    CHECK(nn_param_parse(NULL, 10, &m, &err) == UP_ERR_FORMAT && err.line == 1);
    nn_model_fini(&m);
}

/* ---- the real models ---- */

typedef struct {
    const char *name;
    int n_layers, n_blobs;
} real_model_t;

static const real_model_t real_models[] = {
    {"realesrgan-x4plus", 999, 1782},      {"realesrgan-x4fast", 72, 73},
    {"realesrgan-x4plus-anime", 268, 473}, {"realesr-animevideov3-x2", 41, 42},
    {"realesr-animevideov3-x3", 41, 42},   {"realesr-animevideov3-x4", 40, 41},
};

static nn_model_t *load_real(const char *name, unsigned char **bin, size_t *bin_size) {
    char pp[1024], bp[1024];
    const char *dir = test_env("UPRES_TEST_MODELS");
    PATHF(pp, "%s/%s.param", dir, name);
    PATHF(bp, "%s/%s.bin", dir, name);
    nn_model_t *m = NULL;
    up_error_t err;
    int rc = nn_model_load(pp, bp, &m, &err);
    CHECKF(rc == 0, "%s: %s", name, err.msg);
    if (bin)
        *bin = (unsigned char *)read_all(bp, bin_size);
    return m;
}

/*
 * Weights against the raw bytes: the first layer with weights starts at
 * offset 0, the last one ends at the end of the file.
 */
static void check_real_weights(const char *name, const nn_model_t *m, const unsigned char *bin, size_t size) {
    const nn_layer_t *first = NULL, *last = NULL;
    for (int i = 0; i < m->n_layers; i++) {
        if (m->layers[i].op == NN_OP_CONV || m->layers[i].op == NN_OP_PRELU) {
            if (!first)
                first = &m->layers[i];
            last = &m->layers[i];
        }
    }
    CHECKF(first && first->op == NN_OP_CONV, "%s: no first conv", name);
    if (!first || !last || size < 8)
        return;
    const nn_conv_param_t *c = &first->p.conv;
    size_t wds = (size_t)c->weight_data_size, wbytes = (wds * 2 + 3) & ~(size_t)3;
    CHECKF(get_u32(bin) == 0x01306B47u, "%s: first tag 0x%08x", name, (unsigned)get_u32(bin));
    CHECK(c->weight[0] == (float)ref_half(get_u16(bin + 4)));
    CHECK(c->weight[1] == (float)ref_half(get_u16(bin + 6)));
    CHECK(c->weight[wds - 1] == (float)ref_half(get_u16(bin + 4 + 2 * (wds - 1))));
    CHECK(c->bias[0] == get_f32(bin + 4 + wbytes));
    CHECK(c->bias[c->n_out - 1] == get_f32(bin + 4 + wbytes + 4 * (size_t)(c->n_out - 1)));
    /* a nonzero weight, so that the check above is not comparing zeros */
    size_t k = 0;
    while (k < wds && c->weight[k] == 0.0f)
        k++;
    CHECK(k < wds && c->weight[k] == (float)ref_half(get_u16(bin + 4 + 2 * k)));

    if (last->op == NN_OP_PRELU) {
        const nn_prelu_param_t *p = &last->p.prelu;
        CHECK(p->slope[p->n_slope - 1] == get_f32(bin + size - 4));
    } else {
        const nn_conv_param_t *lc = &last->p.conv;
        size_t lw = (size_t)lc->weight_data_size, lbytes = (lw * 2 + 3) & ~(size_t)3;
        size_t bias_at = size - 4 * (size_t)lc->n_out, w_at = bias_at - lbytes;
        CHECK(lc->bias_term == 1);
        CHECK(get_u32(bin + w_at - 4) == 0x01306B47u);
        CHECK(lc->bias[lc->n_out - 1] == get_f32(bin + size - 4));
        CHECK(lc->bias[0] == get_f32(bin + bias_at));
        CHECK(lc->weight[lw - 1] == (float)ref_half(get_u16(bin + w_at + 2 * (lw - 1))));
        CHECK(lc->weight[0] == (float)ref_half(get_u16(bin + w_at)));
    }
}

static void test_real_models(void) {
    for (size_t i = 0; i < sizeof real_models / sizeof real_models[0]; i++) {
        const real_model_t *rm = &real_models[i];
        unsigned char *bin = NULL;
        size_t bin_size = 0;
        nn_model_t *m = load_real(rm->name, &bin, &bin_size);
        if (!m) {
            free(bin);
            continue;
        }
        CHECKF(m->n_layers == rm->n_layers && m->n_blobs == rm->n_blobs, "%s: %d layers %d blobs", rm->name,
               m->n_layers, m->n_blobs);
        CHECK(strcmp(m->blobs[m->input_blob].name, "data") == 0);
        CHECK(strcmp(m->blobs[m->output_blob].name, "output") == 0);
        CHECK(m->layers[0].op == NN_OP_INPUT);
        int n_conv = 0;
        for (int l = 0; l < m->n_layers; l++) {
            if (m->layers[l].op != NN_OP_CONV)
                continue;
            const nn_conv_param_t *c = &m->layers[l].p.conv;
            n_conv++;
            CHECK(c->weight != NULL && c->kernel_w == 3 && c->kernel_h == 3 && c->pad_left == 1 &&
                  c->pad_bottom == 1 && c->stride_w == 1 && c->bias_term == 1 && c->bias != NULL);
        }
        CHECK(n_conv > 0);
        if (bin)
            check_real_weights(rm->name, m, bin, bin_size);
        CHECKF(bin != NULL, "%s: cannot read the .bin", rm->name);

        if (strcmp(rm->name, "realesrgan-x4plus") == 0) {
            const nn_layer_t *l = find_layer(m, "Conv_1");
            CHECK(l && l->op == NN_OP_CONV && l->line == 6);
            if (l) {
                CHECK(l->p.conv.n_out == 32 && l->p.conv.n_in == 64);
                CHECK(l->p.conv.act == NN_ACT_LEAKY && l->p.conv.act_params[0] == 0.2f);
                CHECK(strcmp(m->blobs[l->in[0]].name, "703_splitncnn_7") == 0);
                CHECK(strcmp(m->blobs[l->out[0]].name, "705") == 0);
            }
            l = find_layer(m, "Add_16");
            CHECK(l && l->op == NN_OP_ELTWISE && l->n_in == 2);
            if (l) {
                CHECK(l->p.eltwise.op == NN_ELTWISE_SUM && l->p.eltwise.n_coeffs == 2);
                CHECK(l->p.eltwise.coeffs[0] == 0.2f && l->p.eltwise.coeffs[1] == 1.0f);
            }
            l = find_layer(m, "splitncnn_0");
            CHECK(l && l->op == NN_OP_SPLIT && l->n_in == 1 && l->n_out == 8);
            l = find_layer(m, "Concat_12");
            CHECK(l && l->op == NN_OP_CONCAT && l->n_in == 5 && l->p.concat.axis == 0);
            l = &m->layers[m->blobs[m->output_blob].producer];
            CHECK(strcmp(l->name, "Conv_1186") == 0 && l->p.conv.n_out == 3 && l->p.conv.act == NN_ACT_NONE);
        } else if (strcmp(rm->name, "realesr-animevideov3-x3") == 0) {
            const nn_layer_t *l = &m->layers[m->n_layers - 1];
            CHECK(l->op == NN_OP_INTERP && strcmp(l->name, "Resize_40") == 0);
            CHECK(l->p.interp.type == NN_INTERP_BICUBIC && l->p.interp.height_scale == 0.75f &&
                  l->p.interp.width_scale == 0.75f && l->p.interp.out_h == 0);
            CHECK(l->out[0] == m->output_blob);
            l = find_layer(m, "Resize_37");
            CHECK(l && l->p.interp.type == NN_INTERP_NEAREST && l->p.interp.width_scale == 4.0f);
            l = find_layer(m, "DepthToSpace_35");
            CHECK(l && l->op == NN_OP_PIXELSHUFFLE && l->p.pixelshuffle.factor == 4 &&
                  l->p.pixelshuffle.mode == 0);
            l = find_layer(m, "PRelu_1");
            CHECK(l && l->op == NN_OP_PRELU && l->p.prelu.n_slope == 64);
            /* Conv_0 (4 + 3456 bytes of fp16 weights, 64 biases), then PRelu_1 */
            if (l && bin && bin_size > 3716 + 256) {
                CHECK(l->p.prelu.slope[0] == get_f32(bin + 3716));
                CHECK(l->p.prelu.slope[63] == get_f32(bin + 3716 + 252));
            }
            l = find_layer(m, "Add_38");
            CHECK(l && l->op == NN_OP_BINARY && l->p.binary.op == NN_BINARY_ADD &&
                  l->p.binary.with_scalar == 0 && l->n_in == 2);
        }
        free(bin);
        nn_model_free(m);
    }
}

/* ---- hostile input: cut and corrupted real files ---- */

static void test_truncation(void) {
    int n_cuts = test_sanitized() ? 150 : 1500;
    static const char *names[] = {"realesrgan-x4plus-anime", "realesr-animevideov3-x2", "realesrgan-x4plus"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char pp[1024], bp[1024];
        const char *dir = test_env("UPRES_TEST_MODELS");
        PATHF(pp, "%s/%s.param", dir, names[i]);
        PATHF(bp, "%s/%s.bin", dir, names[i]);
        size_t psize = 0, bsize = 0;
        char *param = read_all(pp, &psize);
        char *bin = read_all(bp, &bsize);
        CHECKF(param && bin, "cannot read %s", names[i]);
        if (!param || !bin) {
            free(param);
            free(bin);
            continue;
        }
        /*
         * A cut .param fails whenever it loses a whole line. Inside the last
         * line it may still be valid (a shorter float, an omitted default),
         * unless that line is a Convolution, whose every prefix is wrong.
         */
        size_t content = psize;
        while (content && strchr(" \t\r\n", param[content - 1]))
            content--;
        size_t last_line = content;
        while (last_line && param[last_line - 1] != '\n')
            last_line--;
        int last_is_conv = strncmp(param + last_line, "Convolution", 11) == 0;
        int bad = 0;
        for (int k = 0; k < n_cuts; k++) {
            size_t cut = (size_t)(rng() % content);
            char *copy = exact_copy(param, cut);
            nn_model_t *m = NULL;
            up_error_t err;
            int rc = nn_model_load_mem(copy, cut, bin, bsize, &m, &err);
            if ((cut <= last_line || last_is_conv) && (rc == 0 || m != NULL)) {
                if (bad++ < 3)
                    fprintf(stderr, "%s.param cut at %zu loaded\n", names[i], cut);
            }
            if (rc)
                CHECKF(err.msg[0] != 0 && err.code == rc, "%s: cut %zu: no message", names[i], cut);
            nn_model_free(m);
            free(copy);
        }
        CHECKF(bad == 0, "%s: %d cut .param files loaded", names[i], bad);

        /* every cut .bin misses some weights; the big model only a few times */
        int bin_cuts = strcmp(names[i], "realesrgan-x4plus") == 0 ? 8 : n_cuts / 10;
        bad = 0;
        for (int k = 0; k < bin_cuts; k++) {
            size_t cut = (size_t)(rng() % bsize);
            if (k == 0)
                cut = bsize - 1;
            void *copy = exact_copy(bin, cut);
            nn_model_t *m = NULL;
            up_error_t err;
            int rc = nn_model_load_mem(param, psize, copy, cut, &m, &err);
            if (rc != UP_ERR_FORMAT || m != NULL || !strstr(err.msg, "bytes are left")) {
                if (bad++ < 3)
                    fprintf(stderr, "%s.bin cut at %zu: rc %d: %s\n", names[i], cut, rc, err.msg);
            }
            nn_model_free(m);
            free(copy);
        }
        CHECKF(bad == 0, "%s: %d cut .bin files did not fail as expected", names[i], bad);
        free(param);
        free(bin);
    }
}

/* Random byte changes in a .param: any result, but no crash or leak. */
static void test_mutation(void) {
    int n = test_sanitized() ? 300 : 3000;
    char pp[1024], bp[1024];
    const char *dir = test_env("UPRES_TEST_MODELS");
    PATHF(pp, "%s/realesr-animevideov3-x2.param", dir);
    PATHF(bp, "%s/realesr-animevideov3-x2.bin", dir);
    size_t psize = 0, bsize = 0;
    char *param = read_all(pp, &psize);
    char *bin = read_all(bp, &bsize);
    CHECK(param && bin);
    if (!param || !bin) {
        free(param);
        free(bin);
        return;
    }
    static const char alphabet[] = "0123456789 \n=,.-eE_aZ\r\t\x01\xff";
    int n_ok = 0, n_err = 0;
    for (int k = 0; k < n; k++) {
        char *copy = exact_copy(param, psize);
        int n_changes = 1 + (int)(rng() % 4);
        for (int c = 0; c < n_changes; c++)
            copy[rng() % psize] = alphabet[rng() % (sizeof alphabet - 1)];
        nn_model_t *m = NULL;
        up_error_t err;
        int rc = nn_model_load_mem(copy, psize, bin, bsize, &m, &err);
        if (rc == 0)
            n_ok++;
        else
            n_err++;
        CHECK(rc == 0 ? m != NULL : m == NULL && err.code == rc && err.msg[0] != 0);
        nn_model_free(m);
        free(copy);
    }
    CHECK(n_err > n / 2); /* most changes break something */
    free(param);
    free(bin);
}

/* ---- file errors ---- */

static void test_file_errors(void) {
    static nn_model_t dummy;
    nn_model_t *m = &dummy;
    up_error_t err;
    char pp[1024], bp[1024];
    const char *dir = test_env("UPRES_TEST_MODELS");
    PATHF(pp, "%s/realesr-animevideov3-x2.param", dir);
    PATHF(bp, "%s/realesr-animevideov3-x4.bin", dir);

    CHECK(nn_model_load("/nonexistent/x.param", bp, &m, &err) == UP_ERR_NOT_FOUND && m == NULL);
    CHECK(err.code == UP_ERR_NOT_FOUND && strstr(err.msg, "/nonexistent/x.param") != NULL);
    CHECK(strstr(err.msg, "No such file") != NULL);
    CHECK(nn_model_load(pp, "/nonexistent/x.bin", &m, &err) == UP_ERR_NOT_FOUND);
    CHECK(strstr(err.msg, "/nonexistent/x.bin") != NULL);
    CHECK(nn_model_load(dir, bp, &m, &err) == UP_ERR_IO && strstr(err.msg, dir) != NULL);

    /*
     * x2's graph with x4's weights: the same layer sizes, so it loads (the
     * files cannot tell); a .bin of another architecture does not.
     */
    CHECK(nn_model_load(pp, bp, &m, &err) == 0);
    nn_model_free(m);
    PATHF(bp, "%s/realesrgan-x4fast.bin", dir);
    CHECK(nn_model_load(pp, bp, &m, &err) == UP_ERR_FORMAT && m == NULL);
    CHECKF(strncmp(err.msg, bp, strlen(bp)) == 0, "%s", err.msg);
    CHECK(err.line == 0);

    CHECK(nn_model_load(NULL, bp, &m, &err) == UP_ERR_INVALID && m == NULL);
    nn_model_free(NULL);
    nn_model_fini(NULL);
}

int main(void) {
    test_half();
    test_backend_names();
    test_cases();
    test_good_values();
    test_defaults();
    test_real_models();
    test_truncation();
    test_mutation();
    test_file_errors();
    return test_summary();
}
