/*
 * param.c - reader for ncnn's text .param file: the layer graph of a model.
 *
 * nn_param_parse turns the text into the layers and blobs of an nn_model_t
 * (model.h) and validates everything a later stage relies on: every blob is
 * produced exactly once, every input of a layer is produced somewhere, the
 * graph has no cycle, every parameter is in range for its layer type. The
 * weights come later from the .bin (weights.c), which walks the layers this
 * file fills in file order. The text comes from a file we did not write: it
 * is not NUL-terminated, may be cut anywhere, and every count in it is
 * checked before it sizes anything.
 *
 * FORMAT (ncnn "param and model file structure"; one item per line):
 *
 *   line   content                         example
 *   1      magic                           7767517
 *   2      layer_count blob_count          999 1782
 *   3..    one layer per line:             Convolution Conv_1 1 1 703 705 0=32 1=3 ...
 *            type                          layer type, one of those listed below
 *            name                          layer name, at most 63 bytes
 *            n_in n_out                    input and output blob counts, 0..4096
 *            in_blob[n_in]                 names of the blobs it reads
 *            out_blob[n_out]               names of the blobs it writes
 *            id=value ...                  parameters
 *
 *   Tokens are separated by any run of blanks (space, tab, CR, VT, FF), so
 *   CRLF files read as LF files. Blank lines are skipped.
 *
 *   parameter        meaning
 *   id=value         id 0..31; value an int, or a float when it contains
 *                    '.', 'e' or 'E' (ncnn's rule)
 *   -23300-id=n,v,.. array: n (>= 0) then exactly n comma-separated values
 *
 *   Ids a layer type does not use are ignored and the last of repeated ids
 *   wins, as in ncnn. The ids each layer type uses and their defaults are
 *   listed in model.h; an int is accepted where a float is expected.
 *
 * Stricter than ncnn, which trusts its files: a float where an int is
 * expected, a non-finite number, an out-of-range value, a blob produced twice
 * or never, a cycle, and counts that disagree with line 2 are errors; ncnn
 * features we do not implement (automatic SAME pads -233/-234, int8 and
 * dynamic-weight convolutions, mish/hardswish activations, dynamic Interp
 * sizes, Concat along other axes) are UP_ERR_UNSUPPORTED rather than ignored.
 *
 * Limits (a hostile file cannot make us allocate more than its own size
 * suggests): at most 1,000,000 layers and blobs, 4096 blobs per layer side,
 * names of 63 bytes, spatial parameters (kernel, stride, dilation, pad,
 * fixed output size, shuffle factor, resize scale) at most 65536.
 *
 * Supported layer types: Input, Split, Convolution, PReLU, Concat, Eltwise,
 * BinaryOp, Interp, PixelShuffle. The graph is fed through the blob "data",
 * which the one Input layer writes, and read from the blob "output".
 */
#include "nn/model.h"

#include <limits.h>
#include <locale.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PARAM_MAGIC "7767517"
#define MAX_COUNT 1000000    /* layers or blobs in one file */
#define MAX_LAYER_BLOBS 4096 /* inputs or outputs of one layer */
#define MAX_NAME 63          /* bytes, as nn_layer_t/nn_blob_t store them */
#define MAX_PARAMS 32        /* ncnn NCNN_MAX_PARAM_COUNT: ids 0..31 */
#define ARRAY_ID_BASE (-23300)
#define MAX_VALUE_LEN 63        /* bytes in one numeric token */
#define MAX_ARRAY NN_MAX_COEFFS /* array values kept; longer ones are only counted */
#define MAX_GEOM 65536          /* kernel, stride, dilation, pad, sizes, factors */
#define SHOW 64                 /* bytes of a token quoted in a message */

#define TRY(expr)                                                                                            \
    do {                                                                                                     \
        int rc_ = (expr);                                                                                    \
        if (rc_)                                                                                             \
            return rc_;                                                                                      \
    } while (0)

/* A token inside the text: not NUL-terminated. */
typedef struct {
    const char *s;
    size_t len;
} tok_t;

/* Quote at most SHOW bytes of a token: printf("%.*s", TOK(t)). */
#define TOK(t) (int)((t).len > SHOW ? SHOW : (t).len), (t).s

typedef enum { PV_NONE = 0, PV_INT, PV_FLOAT, PV_ARRAY } pv_kind_t;

/* One parameter of the layer being read. */
typedef struct {
    pv_kind_t kind;
    tok_t tok;          /* the id=value token, for messages */
    int i;              /* PV_INT */
    float f;            /* PV_FLOAT */
    int n;              /* PV_ARRAY: number of values written */
    float a[MAX_ARRAY]; /* PV_ARRAY: the first MAX_ARRAY of them */
} pval_t;

typedef struct {
    const char *text;
    size_t size;
    size_t pos; /* byte offset of the next line */
    int line;   /* 1-based number of the current line */
    up_error_t *err;
    locale_t c_locale; /* "C" numeric locale for strtof_l, or 0 */
    nn_model_t *m;
    int n_layers_decl, n_blobs_decl; /* counts from line 2 */
    int cap_layers, cap_blobs;
    int *first_use;   /* [cap_blobs]: line of a blob's first consumer, 0 if none */
    int *hash;        /* open addressing: blob index + 1, 0 = empty */
    size_t hash_mask; /* table size - 1, a power of two minus one */
    int cur;          /* layer being read (index), -1 outside layers */
    pval_t pv[MAX_PARAMS];
} parser_t;

static const struct {
    const char *name;
    nn_op_t op;
} op_names[] = {
    {"Input", NN_OP_INPUT},     {"Split", NN_OP_SPLIT},   {"Convolution", NN_OP_CONV},
    {"PReLU", NN_OP_PRELU},     {"Concat", NN_OP_CONCAT}, {"Eltwise", NN_OP_ELTWISE},
    {"BinaryOp", NN_OP_BINARY}, {"Interp", NN_OP_INTERP}, {"PixelShuffle", NN_OP_PIXELSHUFFLE},
};

/*
 * Set the error for the current line; inside a layer the message names it:
 * "line 7: Convolution 'Conv_4': kernel_w (1=) must be in 1..65536, got 0".
 */
__attribute__((format(printf, 3, 4))) static int fail(parser_t *ps, int code, const char *fmt, ...) {
    char why[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    if (ps->cur >= 0) {
        const nn_layer_t *l = &ps->m->layers[ps->cur];
        return up_error_set(ps->err, code, ps->line, "line %d: %s '%s': %s", ps->line, l->type, l->name, why);
    }
    return up_error_set(ps->err, code, ps->line, "line %d: %s", ps->line, why);
}

static int is_blank(unsigned char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f'; }

/* The next line as [*s, *e) without its '\n'; 0 at the end of the text. */
static int next_line(parser_t *ps, const char **s, const char **e) {
    if (ps->pos >= ps->size || ps->line == INT_MAX)
        return 0;
    const char *p = ps->text + ps->pos;
    const char *nl = memchr(p, '\n', ps->size - ps->pos);
    *s = p;
    *e = nl ? nl : ps->text + ps->size;
    ps->pos = nl ? (size_t)(nl - ps->text) + 1 : ps->size;
    ps->line++;
    return 1;
}

/*
 * The next token of [*cur, end). Returns 1, 0 at the end of the line, or an
 * error for a control character (binary junk, a NUL inside a name).
 */
static int next_token(parser_t *ps, const char **cur, const char *end, tok_t *t) {
    const char *p = *cur;
    while (p < end && is_blank((unsigned char)*p))
        p++;
    const char *q = p;
    while (q < end && !is_blank((unsigned char)*q)) {
        unsigned char c = (unsigned char)*q;
        if (c < 0x20 || c == 0x7f)
            return fail(ps, UP_ERR_FORMAT, "unexpected control character 0x%02x", c);
        q++;
    }
    *cur = q;
    if (q == p)
        return 0;
    t->s = p;
    t->len = (size_t)(q - p);
    return 1;
}

static int line_is_blank(const char *s, const char *e) {
    for (; s < e; s++)
        if (!is_blank((unsigned char)*s))
            return 0;
    return 1;
}

/* Decimal int with optional sign, nothing else; -1 when malformed or out of range. */
static int parse_int(const char *s, size_t len, int *out) {
    size_t i = 0;
    int neg = 0;
    long long v = 0;
    if (i < len && (s[i] == '-' || s[i] == '+')) {
        neg = s[i] == '-';
        i++;
    }
    if (i == len)
        return -1;
    for (; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
        if (v > (long long)INT_MAX + 1)
            return -1;
    }
    if (neg)
        v = -v;
    if (v > INT_MAX || v < INT_MIN)
        return -1;
    *out = (int)v;
    return 0;
}

/* ncnn's rule: a value is a float when it contains '.', 'e' or 'E'. */
static int looks_float(const char *s, size_t len) {
    return memchr(s, '.', len) || memchr(s, 'e', len) || memchr(s, 'E', len);
}

/*
 * A finite float, whole token; -1 otherwise. strtof needs a terminated copy,
 * and the "C" locale so that a host program's setlocale cannot turn '.' into
 * a non-separator.
 */
static int parse_float(const parser_t *ps, const char *s, size_t len, float *out) {
    char buf[MAX_VALUE_LEN + 1];
    char *end;
    if (len == 0 || len > MAX_VALUE_LEN)
        return -1;
    memcpy(buf, s, len);
    buf[len] = 0;
    float v = ps->c_locale ? strtof_l(buf, &end, ps->c_locale) : strtof(buf, &end);
    if (end != buf + len || !isfinite(v))
        return -1;
    *out = v;
    return 0;
}

/* One scalar value token into pv (PV_INT or PV_FLOAT). */
static int parse_scalar(parser_t *ps, tok_t param, const char *s, size_t len, pval_t *pv) {
    if (looks_float(s, len)) {
        if (parse_float(ps, s, len, &pv->f))
            return fail(ps, UP_ERR_FORMAT, "malformed or non-finite number in parameter '%.*s'", TOK(param));
        pv->kind = PV_FLOAT;
    } else {
        if (parse_int(s, len, &pv->i))
            return fail(ps, UP_ERR_FORMAT, "malformed number in parameter '%.*s'", TOK(param));
        pv->kind = PV_INT;
    }
    return 0;
}

/* "id=value" or "-23300-id=n,v1,...,vn" into ps->pv[id]. */
static int parse_param(parser_t *ps, tok_t t) {
    const char *eq = memchr(t.s, '=', t.len);
    const char *end = t.s + t.len;
    int key = 0;
    if (!eq)
        return fail(ps, UP_ERR_FORMAT, "malformed parameter '%.*s' (expected id=value)", TOK(t));
    if (parse_int(t.s, (size_t)(eq - t.s), &key))
        return fail(ps, UP_ERR_FORMAT, "malformed parameter id in '%.*s'", TOK(t));
    const char *v = eq + 1;

    if (key > ARRAY_ID_BASE) {
        if (key < 0 || key >= MAX_PARAMS)
            return fail(ps, UP_ERR_FORMAT, "parameter id %d in '%.*s' is out of range 0..%d", key, TOK(t),
                        MAX_PARAMS - 1);
        ps->pv[key].tok = t;
        return parse_scalar(ps, t, v, (size_t)(end - v), &ps->pv[key]);
    }

    /* Array. key >= INT_MIN, so this cannot overflow. */
    int id = ARRAY_ID_BASE - key;
    if (id >= MAX_PARAMS)
        return fail(ps, UP_ERR_FORMAT, "array parameter id %d in '%.*s' is out of range 0..%d", id, TOK(t),
                    MAX_PARAMS - 1);
    const char *comma = memchr(v, ',', (size_t)(end - v));
    const char *p = comma ? comma : end;
    int n = 0;
    if (parse_int(v, (size_t)(p - v), &n) || n < 0)
        return fail(ps, UP_ERR_FORMAT, "malformed array length in parameter '%.*s'", TOK(t));
    pval_t *pv = &ps->pv[id];
    pv->kind = PV_ARRAY;
    pv->tok = t;
    pv->n = n;
    int got = 0;
    while (p < end) { /* *p == ',' */
        p++;
        comma = memchr(p, ',', (size_t)(end - p));
        const char *e = comma ? comma : end;
        pval_t one = {0};
        if (got == n)
            return fail(ps, UP_ERR_FORMAT, "array parameter '%.*s' has more than the %d values it declares",
                        TOK(t), n);
        TRY(parse_scalar(ps, t, p, (size_t)(e - p), &one));
        if (got < MAX_ARRAY)
            pv->a[got] = one.kind == PV_INT ? (float)one.i : one.f;
        got++;
        p = e;
    }
    if (got != n)
        return fail(ps, UP_ERR_FORMAT, "array parameter '%.*s' declares %d values but has %d", TOK(t), n,
                    got);
    return 0;
}

/* ---- typed access to the parameters of the current layer ---- */

static int get_int(parser_t *ps, int id, int def, const char *what, int *out) {
    const pval_t *pv = &ps->pv[id];
    switch (pv->kind) {
    case PV_NONE: *out = def; return 0;
    case PV_INT: *out = pv->i; return 0;
    case PV_FLOAT:
        return fail(ps, UP_ERR_FORMAT, "%s (%d=) must be an integer, got '%.*s'", what, id, TOK(pv->tok));
    case PV_ARRAY: break;
    }
    return fail(ps, UP_ERR_FORMAT, "%s (%d=) must be a single integer, got the array '%.*s'", what, id,
                TOK(pv->tok));
}

/* An int in lo..hi (hi == INT_MAX: no upper bound). */
static int get_int_range(parser_t *ps, int id, int def, int lo, int hi, const char *what, int *out) {
    TRY(get_int(ps, id, def, what, out));
    if (*out >= lo && *out <= hi)
        return 0;
    if (hi == INT_MAX)
        return fail(ps, UP_ERR_FORMAT, "%s (%d=) must be at least %d, got %d", what, id, lo, *out);
    return fail(ps, UP_ERR_FORMAT, "%s (%d=) must be in %d..%d, got %d", what, id, lo, hi, *out);
}

static int get_float(parser_t *ps, int id, float def, const char *what, float *out) {
    const pval_t *pv = &ps->pv[id];
    switch (pv->kind) {
    case PV_NONE: *out = def; return 0;
    case PV_INT: *out = (float)pv->i; return 0;
    case PV_FLOAT: *out = pv->f; return 0;
    case PV_ARRAY: break;
    }
    return fail(ps, UP_ERR_FORMAT, "%s (%d=) must be a single number, got the array '%.*s'", what, id,
                TOK(pv->tok));
}

/* An array of at most max values (absent: n = 0). */
static int get_array(parser_t *ps, int id, int max, const char *what, float *out, int *n) {
    const pval_t *pv = &ps->pv[id];
    if (pv->kind == PV_NONE) {
        *n = 0;
        return 0;
    }
    if (pv->kind != PV_ARRAY)
        return fail(ps, UP_ERR_FORMAT, "%s must be an array (written %d=n,v1,...), got '%.*s'", what,
                    ARRAY_ID_BASE - id, TOK(pv->tok));
    if (pv->n > max)
        return fail(ps, UP_ERR_FORMAT, "%s (%d=) has %d values, at most %d are allowed", what,
                    ARRAY_ID_BASE - id, pv->n, max);
    memcpy(out, pv->a, (size_t)pv->n * sizeof *out);
    *n = pv->n;
    return 0;
}

/* A pad: >= 0; ncnn's negative "automatic" pads are not supported. */
static int get_pad(parser_t *ps, int id, int def, const char *what, int *out) {
    TRY(get_int(ps, id, def, what, out));
    if (*out == -233 || *out == -234)
        return fail(ps, UP_ERR_UNSUPPORTED,
                    "%s (%d=) is %d, ncnn's automatic SAME padding, which is not supported", what, id, *out);
    if (*out < 0)
        return fail(ps, UP_ERR_FORMAT, "%s (%d=) must not be negative, got %d", what, id, *out);
    if (*out > MAX_GEOM)
        return fail(ps, UP_ERR_FORMAT, "%s (%d=) must be at most %d, got %d", what, id, MAX_GEOM, *out);
    return 0;
}

/* ---- blobs ---- */

static uint32_t hash_name(const char *s, size_t len) {
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

static int blob_find(const parser_t *ps, const char *s, size_t len) {
    if (!ps->hash)
        return -1;
    for (size_t i = hash_name(s, len) & ps->hash_mask;; i = (i + 1) & ps->hash_mask) {
        int b = ps->hash[i] - 1;
        if (b < 0)
            return -1;
        const char *name = ps->m->blobs[b].name;
        if (strlen(name) == len && memcmp(name, s, len) == 0)
            return b;
    }
}

static void hash_put(parser_t *ps, int b) {
    const char *name = ps->m->blobs[b].name;
    size_t i = hash_name(name, strlen(name)) & ps->hash_mask;
    while (ps->hash[i])
        i = (i + 1) & ps->hash_mask;
    ps->hash[i] = b + 1;
}

/* Keep the table at most half full. */
static int hash_reserve(parser_t *ps, int n_blobs) {
    size_t need = (size_t)n_blobs * 2;
    if (ps->hash && need <= ps->hash_mask + 1)
        return 0;
    size_t size = ps->hash ? (ps->hash_mask + 1) * 2 : 256;
    while (size < need)
        size *= 2;
    int *h = calloc(size, sizeof *h);
    if (!h)
        return fail(ps, UP_ERR_NOMEM, "out of memory for %d blob names", n_blobs);
    free(ps->hash);
    ps->hash = h;
    ps->hash_mask = size - 1;
    for (int b = 0; b < ps->m->n_blobs; b++)
        hash_put(ps, b);
    return 0;
}

/* Index of the blob named t, created when new. */
static int blob_get(parser_t *ps, tok_t t, int *out) {
    nn_model_t *m = ps->m;
    if (t.len > MAX_NAME)
        return fail(ps, UP_ERR_FORMAT, "blob name '%.*s' is longer than %d bytes", TOK(t), MAX_NAME);
    int b = blob_find(ps, t.s, t.len);
    if (b >= 0) {
        *out = b;
        return 0;
    }
    if (m->n_blobs >= ps->n_blobs_decl)
        return fail(ps, UP_ERR_FORMAT, "blob '%.*s' is one more than the %d blobs declared on line 2", TOK(t),
                    ps->n_blobs_decl);
    if (m->n_blobs == ps->cap_blobs) {
        int cap = ps->cap_blobs ? ps->cap_blobs * 2 : 64;
        if (cap > ps->n_blobs_decl)
            cap = ps->n_blobs_decl;
        nn_blob_t *blobs = realloc(m->blobs, (size_t)cap * sizeof *blobs);
        if (!blobs)
            return fail(ps, UP_ERR_NOMEM, "out of memory for %d blobs", cap);
        m->blobs = blobs;
        int *first_use = realloc(ps->first_use, (size_t)cap * sizeof *first_use);
        if (!first_use)
            return fail(ps, UP_ERR_NOMEM, "out of memory for %d blobs", cap);
        ps->first_use = first_use;
        ps->cap_blobs = cap;
    }
    TRY(hash_reserve(ps, m->n_blobs + 1));
    b = m->n_blobs++;
    nn_blob_t *blob = &m->blobs[b];
    memset(blob, 0, sizeof *blob);
    memcpy(blob->name, t.s, t.len);
    blob->producer = -1;
    ps->first_use[b] = 0;
    hash_put(ps, b);
    *out = b;
    return 0;
}

/* ---- layers ---- */

static int add_layer(parser_t *ps, int *out) {
    nn_model_t *m = ps->m;
    if (m->n_layers >= ps->n_layers_decl)
        return fail(ps, UP_ERR_FORMAT, "more layers than the %d declared on line 2", ps->n_layers_decl);
    if (m->n_layers == ps->cap_layers) {
        int cap = ps->cap_layers ? ps->cap_layers * 2 : 64;
        if (cap > ps->n_layers_decl)
            cap = ps->n_layers_decl;
        nn_layer_t *layers = realloc(m->layers, (size_t)cap * sizeof *layers);
        if (!layers)
            return fail(ps, UP_ERR_NOMEM, "out of memory for %d layers", cap);
        m->layers = layers;
        ps->cap_layers = cap;
    }
    *out = m->n_layers++;
    memset(&m->layers[*out], 0, sizeof m->layers[*out]);
    return 0;
}

/* The blob count n_in or n_out of a layer line. */
static int read_count(parser_t *ps, const char **cur, const char *end, const char *what, int *out) {
    tok_t t = {NULL, 0};
    int rc = next_token(ps, cur, end, &t);
    if (rc < 0)
        return rc;
    if (rc == 0)
        return fail(ps, UP_ERR_FORMAT, "the line ends before the number of %s blobs", what);
    if (parse_int(t.s, t.len, out) || *out < 0 || *out > MAX_LAYER_BLOBS)
        return fail(ps, UP_ERR_FORMAT, "number of %s blobs '%.*s' is not an integer in 0..%d", what, TOK(t),
                    MAX_LAYER_BLOBS);
    return 0;
}

/* n_in / n_out against what the op takes; hi == INT_MAX: no upper bound. */
static int check_arity(parser_t *ps, const char *what, int n, int lo, int hi) {
    if (n >= lo && n <= hi)
        return 0;
    if (lo == hi)
        return fail(ps, UP_ERR_FORMAT, "takes exactly %d %s blob%s, the line lists %d", lo, what,
                    lo == 1 ? "" : "s", n);
    return fail(ps, UP_ERR_FORMAT, "takes at least %d %s blob%s, the line lists %d", lo, what,
                lo == 1 ? "" : "s", n);
}

static int read_input(parser_t *ps, nn_layer_t *l) {
    int v = 0;
    TRY(get_int_range(ps, 0, 0, 0, INT_MAX, "w", &v)); /* informative only */
    TRY(get_int_range(ps, 1, 0, 0, INT_MAX, "h", &v));
    TRY(get_int_range(ps, 2, 0, 0, INT_MAX, "c", &v));
    TRY(check_arity(ps, "input", l->n_in, 0, 0));
    TRY(check_arity(ps, "output", l->n_out, 1, 1));
    if (strcmp(ps->m->blobs[l->out[0]].name, "data") != 0)
        return fail(ps, UP_ERR_UNSUPPORTED,
                    "the model input must be the blob 'data', this Input layer writes '%s'",
                    ps->m->blobs[l->out[0]].name);
    return 0;
}

static int read_conv(parser_t *ps, nn_layer_t *l) {
    nn_conv_param_t *c = &l->p.conv;
    int act = 0, v = 0, n_act = 0;
    float act_params[2] = {0, 0};

    TRY(get_int_range(ps, 0, 0, 1, INT_MAX, "num_output", &c->n_out));
    TRY(get_int_range(ps, 1, 0, 1, MAX_GEOM, "kernel_w", &c->kernel_w));
    TRY(get_int_range(ps, 11, c->kernel_w, 1, MAX_GEOM, "kernel_h", &c->kernel_h));
    TRY(get_int_range(ps, 2, 1, 1, MAX_GEOM, "dilation_w", &c->dilation_w));
    TRY(get_int_range(ps, 12, c->dilation_w, 1, MAX_GEOM, "dilation_h", &c->dilation_h));
    TRY(get_int_range(ps, 3, 1, 1, MAX_GEOM, "stride_w", &c->stride_w));
    TRY(get_int_range(ps, 13, c->stride_w, 1, MAX_GEOM, "stride_h", &c->stride_h));
    /* ncnn: pad_right and pad_top default to pad_left, pad_bottom to pad_top */
    TRY(get_pad(ps, 4, 0, "pad_left", &c->pad_left));
    TRY(get_pad(ps, 15, c->pad_left, "pad_right", &c->pad_right));
    TRY(get_pad(ps, 14, c->pad_left, "pad_top", &c->pad_top));
    TRY(get_pad(ps, 16, c->pad_top, "pad_bottom", &c->pad_bottom));
    TRY(get_float(ps, 18, 0.0f, "pad_value", &c->pad_value));
    TRY(get_int_range(ps, 5, 0, 0, 1, "bias_term", &c->bias_term));
    TRY(get_int_range(ps, 6, 0, 1, INT_MAX, "weight_data_size", &c->weight_data_size));

    /* weight_data_size = n_out * n_in * kernel_h * kernel_w, so n_in follows */
    long long per_in = (long long)c->n_out * c->kernel_w;
    if (per_in <= c->weight_data_size)
        per_in *= c->kernel_h;
    if (per_in > c->weight_data_size || c->weight_data_size % per_in != 0)
        return fail(ps, UP_ERR_FORMAT,
                    "weight_data_size (6=) %d is not a multiple of num_output * kernel_w * kernel_h "
                    "= %d * %d * %d",
                    c->weight_data_size, c->n_out, c->kernel_w, c->kernel_h);
    c->n_in = (int)(c->weight_data_size / per_in);

    TRY(get_int(ps, 8, 0, "int8_scale_term", &v));
    if (v != 0)
        return fail(ps, UP_ERR_UNSUPPORTED, "int8 quantized convolution (8=%d) is not supported", v);
    TRY(get_int(ps, 19, 0, "dynamic_weight", &v));
    if (v != 0)
        return fail(ps, UP_ERR_UNSUPPORTED, "dynamic weights (19=%d) are not supported", v);

    TRY(get_int(ps, 9, 0, "activation_type", &act));
    if (act == 5 || act == 6)
        return fail(ps, UP_ERR_UNSUPPORTED, "activation_type (9=) %d (%s) is not supported", act,
                    act == 5 ? "mish" : "hardswish");
    if (act < NN_ACT_NONE || act > NN_ACT_SIGMOID)
        return fail(ps, UP_ERR_FORMAT, "activation_type (9=) must be in 0..4, got %d", act);
    c->act = (nn_act_t)act;
    TRY(get_array(ps, 10, 2, "activation_params", act_params, &n_act));
    switch (c->act) {
    case NN_ACT_LEAKY:
        if (n_act < 1)
            return fail(ps, UP_ERR_FORMAT,
                        "activation_type 2 (leaky relu) needs its slope in activation_params (-23310=1,s)");
        c->act_params[0] = act_params[0];
        break;
    case NN_ACT_CLIP:
        if (n_act < 2)
            return fail(ps, UP_ERR_FORMAT,
                        "activation_type 3 (clip) needs min and max in activation_params (-23310=2,min,max)");
        c->act_params[0] = act_params[0];
        c->act_params[1] = act_params[1];
        break;
    default: break; /* ncnn ignores the params of relu (1) and sigmoid (4) */
    }
    TRY(check_arity(ps, "input", l->n_in, 1, 1));
    return check_arity(ps, "output", l->n_out, 1, 1);
}

static int read_prelu(parser_t *ps, nn_layer_t *l) {
    TRY(get_int_range(ps, 0, 0, 1, INT_MAX, "num_slope", &l->p.prelu.n_slope));
    TRY(check_arity(ps, "input", l->n_in, 1, 1));
    return check_arity(ps, "output", l->n_out, 1, 1);
}

static int read_concat(parser_t *ps, nn_layer_t *l) {
    TRY(get_int(ps, 0, 0, "axis", &l->p.concat.axis));
    if (l->p.concat.axis != 0)
        return fail(ps, UP_ERR_UNSUPPORTED, "concat along axis (0=) %d is not supported, only 0 (channels)",
                    l->p.concat.axis);
    TRY(check_arity(ps, "input", l->n_in, 1, INT_MAX));
    return check_arity(ps, "output", l->n_out, 1, 1);
}

static int read_eltwise(parser_t *ps, nn_layer_t *l) {
    nn_eltwise_param_t *e = &l->p.eltwise;
    int op = 0;
    TRY(get_int_range(ps, 0, 0, NN_ELTWISE_PROD, NN_ELTWISE_MAX, "op_type", &op));
    e->op = (nn_eltwise_op_t)op;
    TRY(get_array(ps, 1, NN_MAX_COEFFS, "coeffs", e->coeffs, &e->n_coeffs));
    TRY(check_arity(ps, "input", l->n_in, 2, INT_MAX));
    TRY(check_arity(ps, "output", l->n_out, 1, 1));
    if (e->n_coeffs != 0 && e->n_coeffs != l->n_in)
        return fail(ps, UP_ERR_FORMAT, "coeffs (-23301=) has %d values for %d inputs", e->n_coeffs, l->n_in);
    return 0;
}

static int read_binary(parser_t *ps, nn_layer_t *l) {
    nn_binary_param_t *b = &l->p.binary;
    int op = 0;
    TRY(get_int(ps, 0, 0, "op_type", &op));
    if (op >= 9 && op <= 11)
        return fail(ps, UP_ERR_UNSUPPORTED, "op_type (0=) %d is not supported (0..8 are)", op);
    if (op < NN_BINARY_ADD || op > NN_BINARY_RDIV)
        return fail(ps, UP_ERR_FORMAT, "op_type (0=) must be in 0..8, got %d", op);
    b->op = (nn_binary_op_t)op;
    TRY(get_int_range(ps, 1, 0, 0, 1, "with_scalar", &b->with_scalar));
    TRY(get_float(ps, 2, 0.0f, "b", &b->b));
    TRY(check_arity(ps, "input", l->n_in, b->with_scalar ? 1 : 2, b->with_scalar ? 1 : 2));
    return check_arity(ps, "output", l->n_out, 1, 1);
}

static int read_interp(parser_t *ps, nn_layer_t *l) {
    nn_interp_param_t *ip = &l->p.interp;
    int type = 0, v = 0;
    TRY(get_int_range(ps, 0, 0, NN_INTERP_NEAREST, NN_INTERP_BICUBIC, "resize_type", &type));
    ip->type = (nn_interp_t)type;
    TRY(get_float(ps, 1, 1.0f, "height_scale", &ip->height_scale));
    TRY(get_float(ps, 2, 1.0f, "width_scale", &ip->width_scale));
    if (!(ip->height_scale > 0.0f && ip->height_scale <= MAX_GEOM))
        return fail(ps, UP_ERR_FORMAT, "height_scale (1=) must be in (0, %d], got %g", MAX_GEOM,
                    (double)ip->height_scale);
    if (!(ip->width_scale > 0.0f && ip->width_scale <= MAX_GEOM))
        return fail(ps, UP_ERR_FORMAT, "width_scale (2=) must be in (0, %d], got %g", MAX_GEOM,
                    (double)ip->width_scale);
    TRY(get_int_range(ps, 3, 0, 0, MAX_GEOM, "output_height", &ip->out_h));
    TRY(get_int_range(ps, 4, 0, 0, MAX_GEOM, "output_width", &ip->out_w));
    /* ncnn uses the fixed size only when both are given, else the scales */
    if (ip->out_h == 0 || ip->out_w == 0)
        ip->out_h = ip->out_w = 0;
    TRY(get_int(ps, 5, 0, "dynamic_target_size", &v));
    if (v != 0)
        return fail(ps, UP_ERR_UNSUPPORTED, "a dynamic target size (5=%d) is not supported", v);
    TRY(get_int_range(ps, 6, 0, 0, 1, "align_corner", &ip->align_corner));
    TRY(check_arity(ps, "input", l->n_in, 1, 1));
    return check_arity(ps, "output", l->n_out, 1, 1);
}

static int read_pixelshuffle(parser_t *ps, nn_layer_t *l) {
    TRY(get_int_range(ps, 0, 1, 1, MAX_GEOM, "upscale_factor", &l->p.pixelshuffle.factor));
    TRY(get_int_range(ps, 1, 0, 0, 1, "mode", &l->p.pixelshuffle.mode));
    TRY(check_arity(ps, "input", l->n_in, 1, 1));
    return check_arity(ps, "output", l->n_out, 1, 1);
}

static int read_params(parser_t *ps, nn_layer_t *l) {
    switch (l->op) {
    case NN_OP_INPUT: return read_input(ps, l);
    case NN_OP_SPLIT:
        TRY(check_arity(ps, "input", l->n_in, 1, 1));
        return check_arity(ps, "output", l->n_out, 1, INT_MAX);
    case NN_OP_CONV: return read_conv(ps, l);
    case NN_OP_PRELU: return read_prelu(ps, l);
    case NN_OP_CONCAT: return read_concat(ps, l);
    case NN_OP_ELTWISE: return read_eltwise(ps, l);
    case NN_OP_BINARY: return read_binary(ps, l);
    case NN_OP_INTERP: return read_interp(ps, l);
    case NN_OP_PIXELSHUFFLE: return read_pixelshuffle(ps, l);
    case NN_OP_COUNT: break;
    }
    return fail(ps, UP_ERR_FORMAT, "internal: no reader for this layer type");
}

/* One layer line (not blank). */
static int parse_layer(parser_t *ps, const char *cur, const char *end) {
    nn_model_t *m = ps->m;
    tok_t t = {NULL, 0};
    int rc, li = -1, op = -1;

    if ((rc = next_token(ps, &cur, end, &t)) <= 0)
        return rc; /* 0 cannot happen: the caller skips blank lines */
    for (size_t i = 0; i < sizeof op_names / sizeof op_names[0]; i++)
        if (strlen(op_names[i].name) == t.len && memcmp(op_names[i].name, t.s, t.len) == 0)
            op = (int)op_names[i].op;
    if (op < 0)
        return fail(ps, UP_ERR_UNSUPPORTED, "layer type '%.*s' is not supported", TOK(t));
    TRY(add_layer(ps, &li));
    nn_layer_t *l = &m->layers[li];
    l->op = (nn_op_t)op;
    l->line = ps->line;
    memcpy(l->type, t.s, t.len); /* a known name: shorter than type[] */

    if ((rc = next_token(ps, &cur, end, &t)) < 0)
        return rc;
    if (rc == 0)
        return fail(ps, UP_ERR_FORMAT, "the line ends after the layer type '%s'", l->type);
    if (t.len > MAX_NAME)
        return fail(ps, UP_ERR_FORMAT, "layer name '%.*s' is longer than %d bytes", TOK(t), MAX_NAME);
    memcpy(l->name, t.s, t.len);
    ps->cur = li; /* from here on, messages name the layer */

    TRY(read_count(ps, &cur, end, "input", &l->n_in));
    TRY(read_count(ps, &cur, end, "output", &l->n_out));
    if (l->n_in && !(l->in = malloc((size_t)l->n_in * sizeof *l->in)))
        return fail(ps, UP_ERR_NOMEM, "out of memory");
    if (l->n_out && !(l->out = malloc((size_t)l->n_out * sizeof *l->out)))
        return fail(ps, UP_ERR_NOMEM, "out of memory");

    for (int i = 0; i < l->n_in + l->n_out; i++) {
        int is_in = i < l->n_in, b = -1;
        if ((rc = next_token(ps, &cur, end, &t)) < 0)
            return rc;
        if (rc == 0)
            return fail(ps, UP_ERR_FORMAT,
                        "the line lists %d input and %d output blobs, but ends after %d names", l->n_in,
                        l->n_out, i);
        TRY(blob_get(ps, t, &b));
        nn_blob_t *blob = &m->blobs[b];
        if (is_in) {
            l->in[i] = b;
            blob->n_consumers++;
            if (!ps->first_use[b])
                ps->first_use[b] = ps->line;
        } else {
            if (blob->producer >= 0)
                return fail(ps, UP_ERR_FORMAT, "blob '%s' is produced twice (first by layer '%s' on line %d)",
                            blob->name, m->layers[blob->producer].name, m->layers[blob->producer].line);
            l->out[i - l->n_in] = b;
            blob->producer = li;
        }
    }

    for (int id = 0; id < MAX_PARAMS; id++)
        ps->pv[id].kind = PV_NONE;
    while ((rc = next_token(ps, &cur, end, &t)) == 1)
        TRY(parse_param(ps, t));
    if (rc < 0)
        return rc;
    TRY(read_params(ps, l));
    ps->cur = -1;
    return 0;
}

/*
 * The graph must be acyclic: Kahn's algorithm over the layers. On failure,
 * walk back from a stuck layer through stuck producers until we stand on
 * the cycle, and name a layer that is on it.
 */
static int check_acyclic(parser_t *ps) {
    nn_model_t *m = ps->m;
    int rc = 0, n_done = 0, head = 0, tail = 0;
    size_t n_edges = 0;
    for (int b = 0; b < m->n_blobs; b++)
        n_edges += (size_t)m->blobs[b].n_consumers;
    int *pending = malloc((size_t)m->n_layers * sizeof *pending); /* inputs not yet ready */
    int *queue = malloc((size_t)m->n_layers * sizeof *queue);
    size_t *start = malloc(((size_t)m->n_blobs + 1) * sizeof *start);
    size_t *next = malloc(((size_t)m->n_blobs + 1) * sizeof *next);
    int *consumers = malloc((n_edges ? n_edges : 1) * sizeof *consumers);
    if (!pending || !queue || !start || !next || !consumers) {
        rc = fail(ps, UP_ERR_NOMEM, "out of memory checking the graph");
        goto done;
    }

    /* the layers reading blob b: consumers[start[b] .. start[b + 1]) */
    start[0] = 0;
    for (int b = 0; b < m->n_blobs; b++)
        start[b + 1] = start[b] + (size_t)m->blobs[b].n_consumers;
    memcpy(next, start, ((size_t)m->n_blobs + 1) * sizeof *next);
    for (int li = 0; li < m->n_layers; li++)
        for (int i = 0; i < m->layers[li].n_in; i++)
            consumers[next[m->layers[li].in[i]]++] = li;

    for (int li = 0; li < m->n_layers; li++) {
        pending[li] = m->layers[li].n_in;
        if (pending[li] == 0)
            queue[tail++] = li;
    }
    while (head < tail) {
        const nn_layer_t *l = &m->layers[queue[head++]];
        n_done++;
        for (int o = 0; o < l->n_out; o++) {
            int b = l->out[o];
            for (size_t k = start[b]; k < start[b + 1]; k++)
                if (--pending[consumers[k]] == 0)
                    queue[tail++] = consumers[k];
        }
    }
    if (n_done < m->n_layers) {
        /* a layer not done has an input whose producer is not done either */
        int li = 0;
        while (pending[li] == 0)
            li++;
        for (int step = 0; step < m->n_layers; step++) {
            const nn_layer_t *l = &m->layers[li];
            for (int i = 0; i < l->n_in; i++) {
                int p = m->blobs[l->in[i]].producer;
                if (pending[p] > 0) {
                    li = p;
                    break;
                }
            }
        }
        ps->line = m->layers[li].line;
        ps->cur = li;
        rc = fail(ps, UP_ERR_FORMAT, "the layer is part of a cycle: its inputs depend on its outputs");
        ps->cur = -1;
    }
done:
    free(pending);
    free(queue);
    free(start);
    free(next);
    free(consumers);
    return rc;
}

/* Lines 1 and 2: magic, then the layer and blob counts. */
static int parse_header(parser_t *ps) {
    const char *s = NULL, *e = NULL;
    tok_t t = {NULL, 0};
    int rc;

    if (!next_line(ps, &s, &e)) {
        ps->line = 1;
        return fail(ps, UP_ERR_FORMAT, "empty file, expected the ncnn magic number %s", PARAM_MAGIC);
    }
    rc = next_token(ps, &s, e, &t);
    if (rc != 1 || t.len != strlen(PARAM_MAGIC) || memcmp(t.s, PARAM_MAGIC, t.len) != 0 ||
        next_token(ps, &s, e, &t) != 0)
        return fail(ps, UP_ERR_FORMAT,
                    "bad magic: expected %s alone on the first line (not an ncnn text .param file)",
                    PARAM_MAGIC);

    if (!next_line(ps, &s, &e))
        return fail(ps, UP_ERR_FORMAT, "the file ends after the magic number");
    int *counts[2] = {&ps->n_layers_decl, &ps->n_blobs_decl};
    const char *what[2] = {"layer", "blob"};
    for (int i = 0; i < 2; i++) {
        if ((rc = next_token(ps, &s, e, &t)) < 0)
            return rc;
        if (rc == 0)
            return fail(ps, UP_ERR_FORMAT, "expected 'layer_count blob_count', the %s count is missing",
                        what[i]);
        if (parse_int(t.s, t.len, counts[i]) || *counts[i] < 1 || *counts[i] > MAX_COUNT)
            return fail(ps, UP_ERR_FORMAT, "%s count '%.*s' is not an integer in 1..%d", what[i], TOK(t),
                        MAX_COUNT);
    }
    if ((rc = next_token(ps, &s, e, &t)) < 0)
        return rc;
    if (rc)
        return fail(ps, UP_ERR_FORMAT, "unexpected '%.*s' after 'layer_count blob_count'", TOK(t));
    return 0;
}

/* Whole-graph checks once every line is read; ps->line is the last line. */
static int check_graph(parser_t *ps) {
    nn_model_t *m = ps->m;
    int last_line = ps->line;

    if (m->n_layers < ps->n_layers_decl)
        return fail(ps, UP_ERR_FORMAT, "the file ends after %d layers, line 2 declares %d", m->n_layers,
                    ps->n_layers_decl);
    if (m->n_blobs != ps->n_blobs_decl) {
        ps->line = 2;
        return fail(ps, UP_ERR_FORMAT, "declares %d blobs, but the layers use %d", ps->n_blobs_decl,
                    m->n_blobs);
    }
    for (int b = 0; b < m->n_blobs; b++) {
        if (m->blobs[b].producer < 0) {
            ps->line = ps->first_use[b];
            return fail(ps, UP_ERR_FORMAT, "blob '%s' is read but no layer produces it", m->blobs[b].name);
        }
    }
    ps->line = last_line;
    m->input_blob = blob_find(ps, "data", 4);
    if (m->input_blob < 0)
        return fail(ps, UP_ERR_FORMAT, "no blob is named 'data' (the model input)");
    if (m->layers[m->blobs[m->input_blob].producer].op != NN_OP_INPUT) {
        ps->line = m->layers[m->blobs[m->input_blob].producer].line;
        return fail(ps, UP_ERR_FORMAT, "the blob 'data' must be written by an Input layer, not by %s '%s'",
                    m->layers[m->blobs[m->input_blob].producer].type,
                    m->layers[m->blobs[m->input_blob].producer].name);
    }
    m->output_blob = blob_find(ps, "output", 6);
    if (m->output_blob < 0)
        return fail(ps, UP_ERR_FORMAT, "no blob is named 'output' (the model output)");
    return check_acyclic(ps);
}

static int parse(parser_t *ps) {
    const char *s = NULL, *e = NULL;
    TRY(parse_header(ps));
    while (next_line(ps, &s, &e)) {
        if (line_is_blank(s, e))
            continue;
        TRY(parse_layer(ps, s, e));
    }
    if (ps->pos < ps->size)
        return fail(ps, UP_ERR_FORMAT, "too many lines");
    return check_graph(ps);
}

int nn_param_parse(const char *text, size_t size, nn_model_t *model, up_error_t *err) {
    parser_t ps;
    memset(&ps, 0, sizeof ps);
    memset(model, 0, sizeof *model);
    model->input_blob = model->output_blob = -1;
    ps.text = text;
    ps.size = text ? size : 0;
    ps.err = err;
    ps.m = model;
    ps.cur = -1;
    ps.c_locale = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);

    int rc = parse(&ps);

    if (ps.c_locale)
        freelocale(ps.c_locale);
    free(ps.first_use);
    free(ps.hash);
    if (rc)
        nn_model_fini(model);
    return rc;
}
