/*
 * dnnl.c - the oneDNN backend: convolutions and the cheap elementwise ops
 * through oneDNN primitives on nChw16c (BLOCK16) tensors.
 *
 * Every convolution runs as a oneDNN convolution primitive with its fused
 * activation and the planner's epilogue as post-ops where the kernel can
 * take them; the rest of the model's ops run as oneDNN primitives too
 * (prelu, sum, binary, resampling, concat), because the layout-generic
 * loops of ops.c walk a BLOCK16 channel with a 64-byte stride and are 10 to
 * 100 times slower there. Whatever oneDNN has no fast kernel for (bicubic
 * and bilinear Interp, PixelShuffle, BinaryOp pow, mixed layouts, a conv
 * with a non-zero pad_value) falls back to nn_op_*.
 *
 * DESIGN
 *
 * Layouts. Blobs written by a convolution are BLOCK16 (oneDNN's jit kernels
 * want a blocked destination); other blobs are BLOCK16 from 16 channels up
 * and PLANAR below (a 3-channel image in BLOCK16 would carry 13 zero lanes
 * per pixel through PixelShuffle, Interp and the final add). A conv reads
 * a PLANAR input with fewer than 16 channels directly (oneDNN has a jit
 * kernel for nchw sources with few channels); a BLOCK16 input with fewer
 * than 16 channels is described to oneDNN as 16 channels, with zero weights
 * for the padded lanes (which hold zeros), since oneDNN only has a
 * reference kernel for a blocked source of < 16 channels.
 *
 * Convolution algorithm. Direct convolution by default. Winograd F(4x4,3x3)
 * (oneDNN's only fp32 Winograd on AVX-512) wins only on large spatial sizes
 * with >= 64 channels and loses badly on some tile sizes (its blocking
 * depends on the factorization of the tile count), so it is used where
 * bench/conv.c measured it ahead: see use_winograd(). oneDNN's Winograd
 * accepts no post-op but a plain ReLU, so the activation, PReLU and
 * scale/sum then run as separate in-place primitives on the freshly
 * written (cache-warm) output. The environment variable
 * UPRES_DNNL_CONV_ALG=direct|winograd|auto (read at create) overrides the
 * choice, for benchmarks.
 *
 * Epilogue. act -> prelu -> scale * x + sum: act and (without PReLU) the
 * scale and sum are conv post-ops (eltwise, eltwise_linear, binary add with
 * the sum tensor as src1). oneDNN 2.6 has a prelu post-op but only a
 * reference kernel for it, so PReLU runs as an in-place prelu primitive
 * after the conv, followed by a sum primitive for scale/sum.
 *
 * Lifetimes. create: engine, stream, a per-conv weight cache (empty).
 * layer_prepare: builds the primitives with memory objects bound to the
 * tensors' final pointers; the conv weights are reordered into the
 * primitive's format on first use and kept in the per-layer cache, reused
 * by every later prepare whose primitive wants the same format. layer_run:
 * executes, nothing else. One scratchpad buffer (oneDNN user scratchpad
 * mode) is shared by all layers of a plan, since layers run one after
 * another; it grows during prepare and is freed with the last layer state.
 *
 * Threads: oneDNN's OpenMP runtime uses omp_get_max_threads(); prepare and
 * run set it to the net's thread count first. A state (net) is used by one
 * thread at a time.
 */
#include "nn/backend/backend.h"

#ifdef UPRES_HAVE_DNNL

#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl_debug.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/xmalloc.h"
#include "nn/ops.h"

/* ---- state -------------------------------------------------------------- */

/* One copy of a conv's weights in a format some primitive asked for. */
typedef struct wcache {
    dnnl_memory_desc_t md;
    void *data;          /* owned, up_aligned_alloc */
    dnnl_memory_t mem;   /* owned, wraps data */
    struct wcache *next; /* owned */
} wcache_t;

/* Shape-independent data of one Convolution layer. */
typedef struct conv_static {
    wcache_t *weights; /* reordered copies, most recent first */
    float *wpad;       /* owned: weights with n_in padded to 16 (BLOCK16 input < 16 ch), or NULL */
} conv_static_t;

typedef enum { ALG_RULE = 0, ALG_DIRECT, ALG_WINOGRAD, ALG_AUTO } alg_choice_t;

typedef struct dnnl_state {
    const nn_model_t *model; /* borrowed */
    int n_threads;           /* OpenMP team size; 0 = OpenMP's default */
    alg_choice_t alg;        /* UPRES_DNNL_CONV_ALG */
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    conv_static_t *convs;    /* owned, [model->n_layers], zero for non-conv layers */
    void *scratch;           /* owned: the shared user scratchpad */
    size_t scratch_size;     /* bytes */
    dnnl_memory_t scratch_mem; /* owned, wraps scratch, or NULL */
    int n_live;              /* layer states not yet released */
} dnnl_state_t;

/* ---- layer state -------------------------------------------------------- */

#define MAX_EXECS 4
#define MAX_ARGS 8
#define MAX_MEMS 10

/* One primitive execution with its arguments. */
typedef struct exec {
    dnnl_primitive_t prim; /* owned */
    int n_args;
    dnnl_exec_arg_t args[MAX_ARGS]; /* memories borrowed from the layer state or the cache */
    int scratch_arg;                /* index of the scratchpad argument, or -1 */
} exec_t;

typedef struct lstate {
    int fallback;        /* 1: run through nn_op_* */
    int zero_pad;        /* 1: zero out's padded lanes after the primitives */
    int n_execs;
    exec_t execs[MAX_EXECS];
    int n_mems;
    dnnl_memory_t mems[MAX_MEMS]; /* owned */
    float *buf;          /* owned: prelu slopes, a BinaryOp scalar */
    size_t scratch_size; /* largest scratchpad among execs, bytes */
} lstate_t;

/* ---- helpers ------------------------------------------------------------ */

static int fail(up_error_t *err, const nn_layer_t *l, const char *what, dnnl_status_t s) {
    return up_error_set(err, UP_ERR_BACKEND, l ? l->line : 0,
                        "dnnl backend: layer %s '%s' (line %d): %s failed: %s", l ? l->type : "-",
                        l ? l->name : "-", l ? l->line : 0, what, dnnl_status2str(s));
}

/* The md of tensor t described with c channels (c >= t->c only for the conv trick). */
static dnnl_status_t tensor_md(dnnl_memory_desc_t *md, const nn_tensor_t *t, int c) {
    dnnl_dims_t dims = {1, c, t->h, t->w};
    return dnnl_memory_desc_init_by_tag(md, 4, dims, dnnl_f32,
                                        t->layout == NN_LAYOUT_BLOCK16 ? dnnl_nChw16c : dnnl_nchw);
}

static const char *impl_of(const_dnnl_primitive_desc_t pd) {
    const char *s = NULL;
    if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &s) != dnnl_success || !s)
        return "?";
    return s;
}

static int is_ref(const_dnnl_primitive_desc_t pd) { return strncmp(impl_of(pd), "ref", 3) == 0; }

/* A new memory object over ptr, owned by ls. */
static dnnl_status_t mem_new(dnnl_state_t *st, lstate_t *ls, const dnnl_memory_desc_t *md, void *ptr,
                             dnnl_memory_t *out) {
    if (ls->n_mems == MAX_MEMS)
        return dnnl_out_of_memory;
    dnnl_status_t s = dnnl_memory_create(out, md, st->engine, ptr);
    if (s == dnnl_success)
        ls->mems[ls->n_mems++] = *out;
    return s;
}

/* Attribute with the user scratchpad mode and post-ops po (may be NULL). */
static dnnl_status_t attr_new(dnnl_primitive_attr_t *attr, const_dnnl_post_ops_t po) {
    dnnl_status_t s = dnnl_primitive_attr_create(attr);
    if (s != dnnl_success)
        return s;
    s = dnnl_primitive_attr_set_scratchpad_mode(*attr, dnnl_scratchpad_mode_user);
    if (s == dnnl_success && po)
        s = dnnl_primitive_attr_set_post_ops(*attr, po);
    if (s != dnnl_success) {
        dnnl_primitive_attr_destroy(*attr);
        *attr = NULL;
    }
    return s;
}

/*
 * Append an execution of pd (borrowed; the primitive keeps its own copy) to
 * ls with args[n_args] (memories borrowed).
 */
static dnnl_status_t exec_add(lstate_t *ls, const_dnnl_primitive_desc_t pd, const dnnl_exec_arg_t *args,
                              int n_args) {
    if (ls->n_execs == MAX_EXECS || n_args + 1 > MAX_ARGS)
        return dnnl_out_of_memory;
    exec_t *e = &ls->execs[ls->n_execs];
    dnnl_status_t s = dnnl_primitive_create(&e->prim, pd);
    if (s != dnnl_success)
        return s;
    ls->n_execs++;
    memcpy(e->args, args, (size_t)n_args * sizeof *args);
    e->n_args = n_args;
    e->scratch_arg = -1;
    const dnnl_memory_desc_t *smd = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    size_t size = smd ? dnnl_memory_desc_get_size(smd) : 0;
    if (size > 0) {
        e->scratch_arg = e->n_args++;
        e->args[e->scratch_arg] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, NULL}; /* bound at run */
        if (size > ls->scratch_size)
            ls->scratch_size = size;
    }
    return dnnl_success;
}

static void lstate_free(lstate_t *ls) {
    if (!ls)
        return;
    for (int i = 0; i < ls->n_execs; i++)
        dnnl_primitive_destroy(ls->execs[i].prim);
    for (int i = 0; i < ls->n_mems; i++)
        dnnl_memory_destroy(ls->mems[i]);
    free(ls->buf);
    free(ls);
}

/* ---- elementwise steps shared by convs and standalone ops ---------------- */

/* In-place eltwise alg(alpha, beta) over memory m of md. */
static dnnl_status_t add_eltwise(dnnl_state_t *st, lstate_t *ls, const dnnl_memory_desc_t *md,
                                 dnnl_memory_t m, dnnl_alg_kind_t alg, float alpha, float beta) {
    dnnl_eltwise_desc_t d;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_status_t s = dnnl_eltwise_forward_desc_init(&d, dnnl_forward_inference, alg, md, alpha, beta);
    if (s == dnnl_success)
        s = attr_new(&attr, NULL);
    if (s == dnnl_success)
        s = dnnl_primitive_desc_create(&pd, &d, attr, st->engine, NULL);
    if (s == dnnl_success) {
        dnnl_exec_arg_t args[] = {{DNNL_ARG_SRC, m}, {DNNL_ARG_DST, m}};
        s = exec_add(ls, pd, args, 2);
    }
    dnnl_primitive_desc_destroy(pd);
    dnnl_primitive_attr_destroy(attr);
    (void)st;
    return s;
}

/*
 * Padded per-channel slopes for a prelu over c channels in layout: a buffer
 * of nn_layout_channels(layout, c) floats (zeros in the padding) owned by ls.
 */
static float *prelu_slopes(lstate_t *ls, const nn_prelu_param_t *p, nn_layout_t layout, int c) {
    int n = nn_layout_channels(layout, c);
    float *b = calloc((size_t)n, sizeof *b);
    if (!b)
        return NULL;
    for (int i = 0; i < c; i++)
        b[i] = p->n_slope > 1 ? p->slope[i] : p->slope[0];
    free(ls->buf);
    ls->buf = b;
    return b;
}

/*
 * prelu primitive from src to dst (both of md; may be the same memory).
 * Returns dnnl_unimplemented when oneDNN only has its reference kernel,
 * unless allow_ref.
 */
static dnnl_status_t add_prelu(dnnl_state_t *st, lstate_t *ls, const nn_prelu_param_t *p,
                               const nn_tensor_t *t, const dnnl_memory_desc_t *md, dnnl_memory_t src,
                               dnnl_memory_t dst, int allow_ref) {
    float *slopes = prelu_slopes(ls, p, t->layout, t->c);
    if (!slopes)
        return dnnl_out_of_memory;
    dnnl_dims_t wdims = {1, t->c, 1, 1};
    dnnl_memory_desc_t wmd;
    dnnl_prelu_desc_t d;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_memory_t wm = NULL;
    /* weights in the data's own tag: the jit kernel wants them so */
    dnnl_status_t s = dnnl_memory_desc_init_by_tag(
        &wmd, 4, wdims, dnnl_f32, t->layout == NN_LAYOUT_BLOCK16 ? dnnl_nChw16c : dnnl_nchw);
    if (s == dnnl_success)
        s = dnnl_prelu_forward_desc_init(&d, dnnl_forward_inference, md, &wmd);
    if (s == dnnl_success)
        s = attr_new(&attr, NULL);
    if (s == dnnl_success)
        s = dnnl_primitive_desc_create(&pd, &d, attr, st->engine, NULL);
    if (s == dnnl_success && !allow_ref && is_ref(pd))
        s = dnnl_unimplemented;
    if (s == dnnl_success)
        s = mem_new(st, ls, &wmd, slopes, &wm);
    if (s == dnnl_success) {
        dnnl_exec_arg_t args[] = {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wm}, {DNNL_ARG_DST, dst}};
        s = exec_add(ls, pd, args, 3);
    }
    dnnl_primitive_desc_destroy(pd);
    dnnl_primitive_attr_destroy(attr);
    return s;
}

/*
 * dst = sum_k scales[k] * src[k] (a sum primitive; dst may be srcs[0]).
 * dnnl_unimplemented when only a reference kernel exists, unless allow_ref.
 */
static dnnl_status_t add_sum(dnnl_state_t *st, lstate_t *ls, int n, const float *scales,
                             const dnnl_memory_desc_t *mds, const dnnl_memory_t *srcs,
                             const dnnl_memory_desc_t *dmd, dnnl_memory_t dst, int allow_ref) {
    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_exec_arg_t args[MAX_ARGS];
    if (n + 2 > MAX_ARGS)
        return dnnl_unimplemented;
    dnnl_status_t s = attr_new(&attr, NULL);
    if (s == dnnl_success)
        s = dnnl_sum_primitive_desc_create(&pd, dmd, n, scales, mds, attr, st->engine);
    if (s == dnnl_success && !allow_ref && is_ref(pd))
        s = dnnl_unimplemented;
    if (s == dnnl_success) {
        for (int k = 0; k < n; k++)
            args[k] = (dnnl_exec_arg_t){DNNL_ARG_MULTIPLE_SRC + k, srcs[k]};
        args[n] = (dnnl_exec_arg_t){DNNL_ARG_DST, dst};
        s = exec_add(ls, pd, args, n + 1);
    }
    dnnl_primitive_desc_destroy(pd);
    dnnl_primitive_attr_destroy(attr);
    return s;
}

/* dst = a alg b (a binary primitive; dst may be a). dnnl_unimplemented for ref kernels. */
static dnnl_status_t add_binary(dnnl_state_t *st, lstate_t *ls, dnnl_alg_kind_t alg,
                                const dnnl_memory_desc_t *amd, dnnl_memory_t a,
                                const dnnl_memory_desc_t *bmd, dnnl_memory_t b,
                                const dnnl_memory_desc_t *dmd, dnnl_memory_t dst) {
    dnnl_binary_desc_t d;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_status_t s = dnnl_binary_desc_init(&d, alg, amd, bmd, dmd);
    if (s == dnnl_success)
        s = attr_new(&attr, NULL);
    if (s == dnnl_success)
        s = dnnl_primitive_desc_create(&pd, &d, attr, st->engine, NULL);
    if (s == dnnl_success && is_ref(pd))
        s = dnnl_unimplemented;
    if (s == dnnl_success) {
        dnnl_exec_arg_t args[] = {{DNNL_ARG_SRC_0, a}, {DNNL_ARG_SRC_1, b}, {DNNL_ARG_DST, dst}};
        s = exec_add(ls, pd, args, 3);
    }
    dnnl_primitive_desc_destroy(pd);
    dnnl_primitive_attr_destroy(attr);
    return s;
}

/* ---- convolution ----------------------------------------------------------- */

/* The oneDNN eltwise equivalent of a fused ncnn activation; 0 for none. */
static int act_alg(const nn_conv_param_t *p, dnnl_alg_kind_t *alg, float *alpha, float *beta) {
    *alpha = *beta = 0.f;
    switch (p->act) {
    case NN_ACT_NONE: return 0;
    case NN_ACT_RELU: /* a non-zero slope makes ncnn's ReLU leaky */
    case NN_ACT_LEAKY:
        *alg = dnnl_eltwise_relu;
        *alpha = p->act_params[0];
        return 1;
    case NN_ACT_CLIP:
        *alg = dnnl_eltwise_clip;
        *alpha = p->act_params[0];
        *beta = p->act_params[1];
        return 1;
    case NN_ACT_SIGMOID: *alg = dnnl_eltwise_logistic; return 1;
    }
    return 0;
}

/*
 * Whether a conv should try Winograd first. From bench/conv.c on Zen 5
 * (2 threads, oneDNN 2.6.3): F(4x4,3x3) beats direct by 1.5-2x for
 * 64 -> 64 channels from 200x200 outputs up (296: 663 vs 427 GFLOP/s
 * "effective", 592: 766 vs 405), ties at 148x148 (oneDNN blocks a 37x37
 * tile grid badly) and loses with 32 output channels at the RRDB sizes.
 */
static int use_winograd(const dnnl_state_t *st, const nn_conv_param_t *p, const nn_tensor_t *in,
                        const nn_tensor_t *out) {
    if (st->alg == ALG_DIRECT || st->alg == ALG_AUTO)
        return 0;
    if (p->kernel_w != 3 || p->kernel_h != 3 || p->stride_w != 1 || p->stride_h != 1 ||
        p->dilation_w != 1 || p->dilation_h != 1 || in->layout != NN_LAYOUT_BLOCK16)
        return 0;
    if (st->alg == ALG_WINOGRAD)
        return 1;
    return p->n_in % 16 == 0 && p->n_out % 16 == 0 && p->n_in >= 64 && p->n_out >= 64 &&
           (long)out->h * out->w >= 192L * 192L;
}

/*
 * The weights of conv layer li in the format md asks for: from the cache,
 * or reordered now from the model's oihw weights (ic channels, padded with
 * zero weights past n_in) and cached.
 */
static int conv_weights(dnnl_state_t *st, int li, const nn_layer_t *l, int ic,
                        const dnnl_memory_desc_t *md, dnnl_memory_t *out, up_error_t *err) {
    conv_static_t *cs = &st->convs[li];
    const nn_conv_param_t *p = &l->p.conv;
    for (wcache_t *w = cs->weights; w; w = w->next)
        if (dnnl_memory_desc_equal(&w->md, md)) {
            *out = w->mem;
            return 0;
        }
    float *plain = p->weight;
    size_t khw = (size_t)p->kernel_h * p->kernel_w;
    if (ic != p->n_in) {
        if (!cs->wpad) {
            cs->wpad = calloc((size_t)p->n_out * ic * khw, sizeof(float));
            if (!cs->wpad)
                return up_error_set(err, UP_ERR_NOMEM, l->line, "dnnl backend: out of memory");
            for (int o = 0; o < p->n_out; o++)
                memcpy(cs->wpad + (size_t)o * ic * khw, p->weight + (size_t)o * p->n_in * khw,
                       (size_t)p->n_in * khw * sizeof(float));
        }
        plain = cs->wpad;
    }
    dnnl_dims_t dims = {p->n_out, ic, p->kernel_h, p->kernel_w};
    dnnl_memory_desc_t pmd;
    dnnl_memory_t pm = NULL;
    dnnl_primitive_desc_t rpd = NULL;
    dnnl_primitive_t r = NULL;
    wcache_t *w = calloc(1, sizeof *w);
    dnnl_status_t s = dnnl_out_of_memory;
    if (!w)
        goto done;
    w->md = *md;
    w->data = up_aligned_alloc(dnnl_memory_desc_get_size(md), 1);
    if (!w->data)
        goto done;
    s = dnnl_memory_desc_init_by_tag(&pmd, 4, dims, dnnl_f32, dnnl_oihw);
    if (s == dnnl_success)
        s = dnnl_memory_create(&pm, &pmd, st->engine, plain);
    if (s == dnnl_success)
        s = dnnl_memory_create(&w->mem, md, st->engine, w->data);
    if (s == dnnl_success)
        s = dnnl_reorder_primitive_desc_create(&rpd, &pmd, st->engine, md, st->engine, NULL);
    if (s == dnnl_success)
        s = dnnl_primitive_create(&r, rpd);
    if (s == dnnl_success) {
        dnnl_exec_arg_t args[] = {{DNNL_ARG_FROM, pm}, {DNNL_ARG_TO, w->mem}};
        s = dnnl_primitive_execute(r, st->stream, 2, args);
    }
    if (s == dnnl_success)
        s = dnnl_stream_wait(st->stream);
done:
    dnnl_primitive_destroy(r);
    dnnl_primitive_desc_destroy(rpd);
    dnnl_memory_destroy(pm);
    if (s != dnnl_success) {
        if (w) {
            dnnl_memory_destroy(w->mem);
            up_aligned_free(w->data);
            free(w);
        }
        return fail(err, l, "weights reorder", s);
    }
    w->next = cs->weights;
    cs->weights = w;
    *out = w->mem;
    return 0;
}

/* How much of the epilogue goes into the conv's post-ops. */
enum { FUSE_NONE = 0, FUSE_ACT = 1, FUSE_ALL = 2 };

/*
 * Conv primitive desc for alg with the post-ops of fusion level fuse, or an
 * error status (dnnl_unimplemented when oneDNN has no kernel).
 */
static dnnl_status_t conv_pd(dnnl_state_t *st, const nn_conv_param_t *p, const nn_epilogue_t *epi,
                             dnnl_alg_kind_t alg, int fuse, const dnnl_memory_desc_t *smd,
                             const dnnl_memory_desc_t *wmd, const dnnl_memory_desc_t *bmd,
                             const dnnl_memory_desc_t *dmd, const dnnl_memory_desc_t *summd,
                             dnnl_primitive_desc_t *pd) {
    dnnl_convolution_desc_t d;
    dnnl_post_ops_t po = NULL;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_dims_t strides = {p->stride_h, p->stride_w};
    dnnl_dims_t dil = {p->dilation_h - 1, p->dilation_w - 1};
    dnnl_dims_t pad_l = {p->pad_top, p->pad_left}, pad_r = {p->pad_bottom, p->pad_right};
    dnnl_alg_kind_t aalg;
    float alpha, beta;
    *pd = NULL;
    dnnl_status_t s = dnnl_dilated_convolution_forward_desc_init(
        &d, dnnl_forward_inference, alg, smd, wmd, bmd, dmd, strides, dil, pad_l, pad_r);
    if (s == dnnl_success)
        s = dnnl_post_ops_create(&po);
    if (s == dnnl_success && fuse >= FUSE_ACT && act_alg(p, &aalg, &alpha, &beta))
        s = dnnl_post_ops_append_eltwise(po, 1.f, aalg, alpha, beta);
    if (s == dnnl_success && fuse == FUSE_ALL && epi && !epi->prelu) {
        if (epi->scale != 1.f)
            s = dnnl_post_ops_append_eltwise(po, 1.f, dnnl_eltwise_linear, epi->scale, 0.f);
        if (s == dnnl_success && epi->sum)
            s = dnnl_post_ops_append_binary(po, dnnl_binary_add, summd);
    }
    if (s == dnnl_success)
        s = attr_new(&attr, po);
    if (s == dnnl_success)
        s = dnnl_primitive_desc_create(pd, &d, attr, st->engine, NULL);
    dnnl_post_ops_destroy(po);
    dnnl_primitive_attr_destroy(attr);
    return s;
}

static int conv_prepare(dnnl_state_t *st, const nn_layer_t *l, const nn_epilogue_t *epi,
                        const nn_tensor_t *in, const nn_tensor_t *out, lstate_t *ls, up_error_t *err) {
    const nn_conv_param_t *p = &l->p.conv;
    int li = (int)(l - st->model->layers);
    int padded = p->pad_left || p->pad_right || p->pad_top || p->pad_bottom;
    if (p->pad_value != 0.f && padded) {
        /* oneDNN pads with zeros only */
        ls->fallback = 1;
        return 0;
    }
    int ic = in->layout == NN_LAYOUT_BLOCK16 && in->c < 16 ? 16 : in->c;
    dnnl_memory_desc_t smd, wmd, bmd, dmd, summd;
    memset(&summd, 0, sizeof summd);
    dnnl_dims_t wdims = {p->n_out, ic, p->kernel_h, p->kernel_w}, bdims = {p->n_out};
    dnnl_status_t s = tensor_md(&smd, in, ic);
    if (s == dnnl_success)
        s = tensor_md(&dmd, out, out->c);
    if (s == dnnl_success)
        s = dnnl_memory_desc_init_by_tag(&wmd, 4, wdims, dnnl_f32, dnnl_format_tag_any);
    if (s == dnnl_success)
        s = dnnl_memory_desc_init_by_tag(&bmd, 1, bdims, dnnl_f32, dnnl_x);
    if (s == dnnl_success && epi && epi->sum)
        s = tensor_md(&summd, epi->sum, epi->sum->c);
    if (s != dnnl_success)
        return fail(err, l, "memory descriptor", s);
    const dnnl_memory_desc_t *bmdp = p->bias ? &bmd : NULL;

    /* Pick algorithm and fusion: the first combination oneDNN has a jit kernel for. */
    dnnl_alg_kind_t algs[2] = {dnnl_convolution_direct, dnnl_convolution_direct};
    int n_algs = 1;
    if (use_winograd(st, p, in, out))
        algs[0] = dnnl_convolution_winograd, n_algs = 2;
    dnnl_primitive_desc_t pd = NULL, ref_pd = NULL;
    int fuse = FUSE_ALL, ref_fuse = FUSE_ALL;
    dnnl_status_t last = dnnl_unimplemented;
    for (int a = 0; a < n_algs && !pd; a++) {
        for (fuse = FUSE_ALL; fuse >= FUSE_NONE; fuse--) {
            dnnl_primitive_desc_t cand;
            last = conv_pd(st, p, epi, algs[a], fuse, &smd, &wmd, bmdp, &dmd, &summd, &cand);
            if (last != dnnl_success)
                continue;
            if (!is_ref(cand)) {
                pd = cand;
                break;
            }
            if (!ref_pd) {
                ref_pd = cand, ref_fuse = fuse;
            } else {
                dnnl_primitive_desc_destroy(cand);
            }
        }
    }
    if (!pd && ref_pd) {
        /* nothing better: oneDNN's reference kernel, which is still correct */
        pd = ref_pd, fuse = ref_fuse, ref_pd = NULL;
    }
    dnnl_primitive_desc_destroy(ref_pd);
    if (!pd)
        return fail(err, l, "convolution primitive", last);
    log_debug("dnnl: %s '%s' %dx%dx%d -> %dx%dx%d: %s, fused %s", l->type, l->name, in->c, in->h, in->w,
              out->c, out->h, out->w, impl_of(pd), fuse == FUSE_ALL ? "all" : fuse ? "act" : "none");

    dnnl_memory_t src = NULL, dst = NULL, bias = NULL, sum = NULL, wmem = NULL;
    int rc = conv_weights(st, li, l, ic, dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0),
                          &wmem, err);
    if (rc) {
        dnnl_primitive_desc_destroy(pd);
        return rc;
    }
    s = mem_new(st, ls, &smd, in->data, &src);
    if (s == dnnl_success)
        s = mem_new(st, ls, &dmd, out->data, &dst);
    if (s == dnnl_success && p->bias)
        s = mem_new(st, ls, &bmd, p->bias, &bias);
    if (s == dnnl_success && epi && epi->sum)
        s = mem_new(st, ls, &summd, epi->sum->data, &sum);
    if (s == dnnl_success) {
        dnnl_exec_arg_t args[MAX_ARGS];
        int n = 0;
        args[n++] = (dnnl_exec_arg_t){DNNL_ARG_SRC, src};
        args[n++] = (dnnl_exec_arg_t){DNNL_ARG_WEIGHTS, wmem};
        if (bias)
            args[n++] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, bias};
        args[n++] = (dnnl_exec_arg_t){DNNL_ARG_DST, dst};
        if (fuse == FUSE_ALL && epi && !epi->prelu && epi->sum) {
            /* the binary add is the last post-op */
            const_dnnl_primitive_attr_t attr = NULL;
            const_dnnl_post_ops_t po = NULL;
            int idx = 0;
            if (dnnl_primitive_desc_get_attr(pd, &attr) == dnnl_success &&
                dnnl_primitive_attr_get_post_ops(attr, &po) == dnnl_success)
                idx = dnnl_post_ops_len(po) - 1;
            args[n++] = (dnnl_exec_arg_t){DNNL_ARG_ATTR_MULTIPLE_POST_OP(idx) | DNNL_ARG_SRC_1, sum};
        }
        s = exec_add(ls, pd, args, n);
    }
    dnnl_primitive_desc_destroy(pd);
    if (s != dnnl_success)
        return fail(err, l, "convolution primitive", s);

    /* What the post-ops did not take, as in-place primitives on dst. */
    dnnl_alg_kind_t aalg;
    float alpha, beta;
    if (fuse < FUSE_ACT && act_alg(p, &aalg, &alpha, &beta)) {
        s = add_eltwise(st, ls, &dmd, dst, aalg, alpha, beta);
        if (s != dnnl_success)
            return fail(err, l, "activation primitive", s);
    }
    int sum_done = fuse == FUSE_ALL && epi && !epi->prelu;
    if (epi && epi->prelu) {
        s = add_prelu(st, ls, epi->prelu, out, &dmd, dst, dst, 1);
        if (s != dnnl_success)
            return fail(err, l, "prelu primitive", s);
    }
    if (epi && !sum_done && (epi->sum || epi->scale != 1.f)) {
        if (epi->sum) {
            float scales[2] = {epi->scale, 1.f};
            dnnl_memory_desc_t mds[2] = {dmd, summd};
            dnnl_memory_t srcs[2] = {dst, sum};
            s = add_sum(st, ls, 2, scales, mds, srcs, &dmd, dst, 1);
        } else {
            s = add_eltwise(st, ls, &dmd, dst, dnnl_eltwise_linear, epi->scale, 0.f);
        }
        if (s != dnnl_success)
            return fail(err, l, "epilogue sum primitive", s);
    }
    return 0;
}

/* ---- the other ops ------------------------------------------------------- */

/* All of t[0..n) in layout. */
static int same_layout(const nn_tensor_t *t, int n, nn_layout_t layout) {
    for (int k = 0; k < n; k++)
        if (t[k].layout != layout)
            return 0;
    return 1;
}

/*
 * Whether ncnn's nearest Interp from n_in to n_out samples along an axis
 * (scale: the layer's factor, used when fixed is 0) picks floor(d / r) for
 * an integer r = n_out / n_in: then oneDNN's nearest resampling (which
 * rounds (d + 0.5) / r - 0.5) picks the same pixels. Mirrors ops.c.
 */
static int nearest_is_integer(int n_in, int n_out, int fixed, float scale) {
    if (n_out % n_in)
        return 0;
    int r = n_out / n_in;
    const float s = fixed ? (float)n_in / (float)n_out : 1.f / scale;
    for (int d = 0; d < n_out; d++) {
        int i = (int)((float)d * s);
        i = i < n_in - 1 ? i : n_in - 1;
        if (i != d / r)
            return 0;
    }
    return 1;
}

static dnnl_alg_kind_t binary_alg(nn_binary_op_t op, int *swap) {
    *swap = 0;
    switch (op) {
    case NN_BINARY_ADD: return dnnl_binary_add;
    case NN_BINARY_SUB: return dnnl_binary_sub;
    case NN_BINARY_MUL: return dnnl_binary_mul;
    case NN_BINARY_DIV: return dnnl_binary_div;
    case NN_BINARY_MAX: return dnnl_binary_max;
    case NN_BINARY_MIN: return dnnl_binary_min;
    case NN_BINARY_RSUB: *swap = 1; return dnnl_binary_sub;
    case NN_BINARY_RDIV: *swap = 1; return dnnl_binary_div;
    case NN_BINARY_POW: break;
    }
    return dnnl_alg_kind_undef;
}

/*
 * Primitives for a non-conv layer. dnnl_unimplemented (or ls->fallback)
 * sends the layer to nn_op_*; other statuses are errors.
 */
static dnnl_status_t op_prepare(dnnl_state_t *st, const nn_layer_t *l, const nn_tensor_t *in, int n_in,
                                const nn_tensor_t *out, lstate_t *ls) {
    nn_layout_t layout = out->layout;
    if (n_in < 1 || n_in + 2 > MAX_ARGS || !same_layout(in, n_in, layout))
        return dnnl_unimplemented;
    dnnl_memory_desc_t mds[MAX_ARGS], dmd;
    dnnl_memory_t srcs[MAX_ARGS], dst;
    dnnl_status_t s = tensor_md(&dmd, out, out->c);
    if (s == dnnl_success)
        s = mem_new(st, ls, &dmd, out->data, &dst);
    /* Ops that take a view of several inputs (concat) need them all; the others at most two. */
    int n_bind = l->op == NN_OP_CONCAT || l->op == NN_OP_ELTWISE ? n_in : 1;
    if (l->op == NN_OP_BINARY && !l->p.binary.with_scalar)
        n_bind = 2;
    if (n_bind + 1 > MAX_MEMS - 2)
        return dnnl_unimplemented;
    for (int k = 0; k < n_bind && s == dnnl_success; k++) {
        s = tensor_md(&mds[k], &in[k], in[k].c);
        if (s == dnnl_success)
            s = mem_new(st, ls, &mds[k], in[k].data, &srcs[k]);
    }
    if (s != dnnl_success)
        return s;

    switch (l->op) {
    case NN_OP_PRELU: return add_prelu(st, ls, &l->p.prelu, out, &dmd, srcs[0], dst, 0);
    case NN_OP_ELTWISE: {
        const nn_eltwise_param_t *p = &l->p.eltwise;
        if (p->op == NN_ELTWISE_SUM) {
            float scales[MAX_ARGS];
            for (int k = 0; k < n_in; k++)
                scales[k] = p->n_coeffs ? p->coeffs[k] : 1.f;
            return add_sum(st, ls, n_in, scales, mds, srcs, &dmd, dst, 0);
        }
        if (n_in > MAX_EXECS + 1)
            return dnnl_unimplemented;
        dnnl_alg_kind_t alg = p->op == NN_ELTWISE_PROD ? dnnl_binary_mul : dnnl_binary_max;
        s = add_binary(st, ls, alg, &mds[0], srcs[0], &mds[1], srcs[1], &dmd, dst);
        for (int k = 2; k < n_in && s == dnnl_success; k++)
            s = add_binary(st, ls, alg, &dmd, dst, &mds[k], srcs[k], &dmd, dst);
        return s;
    }
    case NN_OP_BINARY: {
        const nn_binary_param_t *p = &l->p.binary;
        int swap;
        dnnl_alg_kind_t alg = binary_alg(p->op, &swap);
        if (alg == dnnl_alg_kind_undef)
            return dnnl_unimplemented;
        if (!p->with_scalar) {
            int a = swap, b = 1 - swap;
            s = add_binary(st, ls, alg, &mds[a], srcs[a], &mds[b], srcs[b], &dmd, dst);
            ls->zero_pad = 1; /* e.g. x / 0 in the padded lanes */
            return s;
        }
        if (swap)
            return dnnl_unimplemented; /* the scalar would be src0 */
        /* the scalar as a broadcast 1x1x1x1 src1 */
        dnnl_dims_t one = {1, 1, 1, 1};
        dnnl_memory_desc_t bmd;
        dnnl_memory_t bm;
        free(ls->buf);
        ls->buf = malloc(sizeof(float));
        if (!ls->buf)
            return dnnl_out_of_memory;
        ls->buf[0] = p->b;
        s = dnnl_memory_desc_init_by_tag(&bmd, 4, one, dnnl_f32, dnnl_nchw);
        if (s == dnnl_success)
            s = mem_new(st, ls, &bmd, ls->buf, &bm);
        if (s == dnnl_success)
            s = add_binary(st, ls, alg, &mds[0], srcs[0], &bmd, bm, &dmd, dst);
        ls->zero_pad = 1; /* the scalar lands in the padded lanes too */
        return s;
    }
    case NN_OP_INTERP: {
        const nn_interp_param_t *p = &l->p.interp;
        if (p->type != NN_INTERP_NEAREST || (out->h == in->h && out->w == in->w) ||
            !nearest_is_integer(in->h, out->h, p->out_h, p->height_scale) ||
            !nearest_is_integer(in->w, out->w, p->out_w, p->width_scale))
            return dnnl_unimplemented;
        dnnl_resampling_desc_t d;
        dnnl_primitive_attr_t attr = NULL;
        dnnl_primitive_desc_t pd = NULL;
        s = dnnl_resampling_forward_desc_init(&d, dnnl_forward_inference, dnnl_resampling_nearest, NULL,
                                              &mds[0], &dmd);
        if (s == dnnl_success)
            s = attr_new(&attr, NULL);
        if (s == dnnl_success)
            s = dnnl_primitive_desc_create(&pd, &d, attr, st->engine, NULL);
        if (s == dnnl_success && is_ref(pd))
            s = dnnl_unimplemented;
        if (s == dnnl_success) {
            dnnl_exec_arg_t args[] = {{DNNL_ARG_SRC, srcs[0]}, {DNNL_ARG_DST, dst}};
            s = exec_add(ls, pd, args, 2);
        }
        dnnl_primitive_desc_destroy(pd);
        dnnl_primitive_attr_destroy(attr);
        return s;
    }
    case NN_OP_CONCAT: {
        if (l->p.concat.axis != 0)
            return dnnl_unimplemented;
        dnnl_primitive_attr_t attr = NULL;
        dnnl_primitive_desc_t pd = NULL;
        s = attr_new(&attr, NULL);
        if (s == dnnl_success)
            s = dnnl_concat_primitive_desc_create(&pd, &dmd, n_in, 1, mds, attr, st->engine);
        if (s == dnnl_success && is_ref(pd))
            s = dnnl_unimplemented;
        if (s == dnnl_success) {
            dnnl_exec_arg_t args[MAX_ARGS];
            for (int k = 0; k < n_in; k++)
                args[k] = (dnnl_exec_arg_t){DNNL_ARG_MULTIPLE_SRC + k, srcs[k]};
            args[n_in] = (dnnl_exec_arg_t){DNNL_ARG_DST, dst};
            s = exec_add(ls, pd, args, n_in + 1);
        }
        dnnl_primitive_desc_destroy(pd);
        dnnl_primitive_attr_destroy(attr);
        return s;
    }
    default: break;
    }
    return dnnl_unimplemented;
}

/* ---- the vtable ------------------------------------------------------------ */

static void dnnl_destroy(void *state);

static int dnnl_create(const nn_model_t *model, int n_threads, void **state, up_error_t *err) {
    dnnl_state_t *st = calloc(1, sizeof *st);
    if (!st)
        return up_error_set(err, UP_ERR_NOMEM, 0, "dnnl backend: out of memory");
    st->model = model;
    st->n_threads = n_threads > 0 ? n_threads : 0;
    const char *alg = getenv("UPRES_DNNL_CONV_ALG");
    if (alg && strcmp(alg, "direct") == 0)
        st->alg = ALG_DIRECT;
    else if (alg && strcmp(alg, "winograd") == 0)
        st->alg = ALG_WINOGRAD;
    else if (alg && strcmp(alg, "auto") == 0)
        st->alg = ALG_AUTO;
    st->convs = calloc((size_t)(model->n_layers > 0 ? model->n_layers : 1), sizeof *st->convs);
    if (!st->convs) {
        free(st);
        return up_error_set(err, UP_ERR_NOMEM, 0, "dnnl backend: out of memory");
    }
    dnnl_status_t s = dnnl_engine_create(&st->engine, dnnl_cpu, 0);
    if (s == dnnl_success)
        s = dnnl_stream_create(&st->stream, st->engine, dnnl_stream_default_flags);
    if (s != dnnl_success) {
        dnnl_destroy(st);
        return fail(err, NULL, "engine and stream", s);
    }
    *state = st;
    return 0;
}

static void dnnl_destroy(void *state) {
    dnnl_state_t *st = state;
    if (!st)
        return;
    for (int i = 0; st->convs && i < st->model->n_layers; i++) {
        wcache_t *w = st->convs[i].weights;
        while (w) {
            wcache_t *next = w->next;
            dnnl_memory_destroy(w->mem);
            up_aligned_free(w->data);
            free(w);
            w = next;
        }
        free(st->convs[i].wpad);
    }
    free(st->convs);
    dnnl_memory_destroy(st->scratch_mem);
    up_aligned_free(st->scratch);
    if (st->stream)
        dnnl_stream_destroy(st->stream);
    if (st->engine)
        dnnl_engine_destroy(st->engine);
    free(st);
}

static nn_layout_t dnnl_blob_layout(void *state, const nn_layer_t *producer, int c) {
    (void)state;
    if (producer->op == NN_OP_CONV || c >= 16)
        return NN_LAYOUT_BLOCK16;
    return NN_LAYOUT_PLANAR;
}

/* Grow the shared scratchpad to size bytes; returns the growth. */
static int scratch_reserve(dnnl_state_t *st, size_t size, size_t *grown) {
    *grown = 0;
    if (size <= st->scratch_size)
        return 0;
    void *p = up_aligned_alloc(size, 1);
    dnnl_memory_t m = NULL;
    dnnl_dims_t dims = {(dnnl_dim_t)size};
    dnnl_memory_desc_t md;
    if (!p)
        return UP_ERR_NOMEM;
    if (dnnl_memory_desc_init_by_tag(&md, 1, dims, dnnl_u8, dnnl_x) != dnnl_success ||
        dnnl_memory_create(&m, &md, st->engine, p) != dnnl_success) {
        up_aligned_free(p);
        return UP_ERR_BACKEND;
    }
    dnnl_memory_destroy(st->scratch_mem);
    up_aligned_free(st->scratch);
    st->scratch = p;
    st->scratch_mem = m;
    *grown = size - st->scratch_size;
    st->scratch_size = size;
    return 0;
}

static int dnnl_layer_prepare(void *state, const nn_layer_t *layer, const nn_epilogue_t *epi,
                              const nn_tensor_t *in, int n_in, const nn_tensor_t *out, int n_out,
                              void **lstate, size_t *scratch_bytes, up_error_t *err) {
    dnnl_state_t *st = state;
    *lstate = NULL;
    *scratch_bytes = 0;
    if (n_out != 1 || n_in < 1)
        return up_error_set(err, UP_ERR_UNSUPPORTED, layer->line,
                            "dnnl backend: layer %s '%s' (line %d) has %d inputs and %d outputs",
                            layer->type, layer->name, layer->line, n_in, n_out);
    switch (layer->op) {
    case NN_OP_CONV:
    case NN_OP_PRELU:
    case NN_OP_CONCAT:
    case NN_OP_ELTWISE:
    case NN_OP_BINARY:
    case NN_OP_INTERP:
    case NN_OP_PIXELSHUFFLE: break;
    default:
        return up_error_set(err, UP_ERR_UNSUPPORTED, layer->line,
                            "dnnl backend: layer %s '%s' (line %d) cannot run here", layer->type,
                            layer->name, layer->line);
    }
    if (st->n_threads > 0)
        omp_set_num_threads(st->n_threads); /* oneDNN blocks its kernels for this count */
    lstate_t *ls = calloc(1, sizeof *ls);
    if (!ls)
        return up_error_set(err, UP_ERR_NOMEM, layer->line, "dnnl backend: out of memory");
    int rc = 0;
    if (layer->op == NN_OP_CONV) {
        rc = conv_prepare(st, layer, epi, &in[0], &out[0], ls, err);
    } else if (layer->op != NN_OP_PIXELSHUFFLE) {
        dnnl_status_t s = op_prepare(st, layer, in, n_in, &out[0], ls);
        if (s == dnnl_unimplemented) {
            /* nn_op_* it is: drop whatever was built */
            lstate_free(ls);
            ls = calloc(1, sizeof *ls);
            if (!ls)
                return up_error_set(err, UP_ERR_NOMEM, layer->line, "dnnl backend: out of memory");
            ls->fallback = 1;
        } else if (s != dnnl_success) {
            rc = fail(err, layer, "primitive", s);
        }
    } else {
        ls->fallback = 1;
    }
    if (rc == 0 && ls->scratch_size > 0 && scratch_reserve(st, ls->scratch_size, scratch_bytes))
        rc = up_error_set(err, UP_ERR_NOMEM, layer->line,
                          "dnnl backend: cannot allocate a %zu KB scratchpad for layer '%s'",
                          ls->scratch_size >> 10, layer->name);
    if (rc) {
        lstate_free(ls);
        return rc;
    }
    if (ls->fallback)
        log_debug("dnnl: %s '%s' runs in plain C", layer->type, layer->name);
    st->n_live++;
    *lstate = ls;
    return 0;
}

static int dnnl_layer_run(void *state, void *lstate, const nn_layer_t *layer, const nn_epilogue_t *epi,
                          const nn_tensor_t *in, int n_in, const nn_tensor_t *out, int n_out,
                          up_error_t *err) {
    dnnl_state_t *st = state;
    lstate_t *ls = lstate;
    (void)n_out;
    if (st->n_threads > 0)
        omp_set_num_threads(st->n_threads);
    if (ls->fallback) {
        switch (layer->op) {
        case NN_OP_CONV: nn_op_conv(&layer->p.conv, epi, &in[0], &out[0]); return 0;
        case NN_OP_PRELU: nn_op_prelu(&layer->p.prelu, &in[0], &out[0]); return 0;
        case NN_OP_CONCAT: nn_op_concat(in, n_in, &out[0]); return 0;
        case NN_OP_ELTWISE: nn_op_eltwise(&layer->p.eltwise, in, n_in, &out[0]); return 0;
        case NN_OP_BINARY: nn_op_binary(&layer->p.binary, in, n_in, &out[0]); return 0;
        case NN_OP_INTERP: nn_op_interp(&layer->p.interp, &in[0], &out[0]); return 0;
        case NN_OP_PIXELSHUFFLE: nn_op_pixelshuffle(&layer->p.pixelshuffle, &in[0], &out[0]); return 0;
        default: return up_error_set(err, UP_ERR_UNSUPPORTED, layer->line, "dnnl backend: bad layer");
        }
    }
    for (int i = 0; i < ls->n_execs; i++) {
        exec_t *e = &ls->execs[i];
        if (e->scratch_arg >= 0)
            e->args[e->scratch_arg].memory = st->scratch_mem;
        dnnl_status_t s = dnnl_primitive_execute(e->prim, st->stream, e->n_args, e->args);
        if (s != dnnl_success)
            return fail(err, layer, "execute", s);
    }
    dnnl_status_t s = dnnl_stream_wait(st->stream);
    if (s != dnnl_success)
        return fail(err, layer, "stream wait", s);
    if (ls->zero_pad)
        nn_tensor_zero_padding(&out[0]);
    return 0;
}

static void dnnl_layer_release(void *state, void *lstate) {
    dnnl_state_t *st = state;
    if (!lstate)
        return;
    lstate_free(lstate);
    if (--st->n_live == 0) {
        /* the plan is gone: the next one sizes its own scratchpad */
        dnnl_memory_destroy(st->scratch_mem);
        up_aligned_free(st->scratch);
        st->scratch_mem = NULL;
        st->scratch = NULL;
        st->scratch_size = 0;
    }
}

const nn_backend_vtbl_t nn_backend_dnnl = {
    .name = "dnnl",
    .create = dnnl_create,
    .destroy = dnnl_destroy,
    .blob_layout = dnnl_blob_layout,
    .layer_prepare = dnnl_layer_prepare,
    .layer_run = dnnl_layer_run,
    .layer_release = dnnl_layer_release,
};

#endif /* UPRES_HAVE_DNNL */
