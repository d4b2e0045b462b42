/*
 * dnnl.c - the oneDNN backend: convolutions and the cheap elementwise ops
 * through oneDNN primitives on nChw16c (BLOCK16) tensors.
 *
 * Every convolution runs as a oneDNN convolution primitive with its fused
 * activation and the planner's epilogue as post-ops where the kernel takes
 * them; the model's other ops run as oneDNN primitives too (prelu, sum,
 * binary, resampling, concat), because the layout-generic loops of ops.c
 * walk a BLOCK16 channel with a 64-byte stride and are 10 to 100 times
 * slower there. What oneDNN has no fast kernel for (bilinear and bicubic
 * Interp, PixelShuffle, BinaryOp pow, mixed layouts, a conv with a non-zero
 * pad_value) falls back to nn_op_*.
 *
 * DESIGN
 *
 * Layouts. Blobs written by a convolution are BLOCK16 (oneDNN's jit kernels
 * want a blocked destination); other blobs are BLOCK16 from 16 channels up
 * and PLANAR below (a 3-channel image in BLOCK16 would carry 13 zero lanes
 * per pixel through PixelShuffle, Interp and the final add). A conv reads a
 * PLANAR input of < 16 channels directly (oneDNN has a jit kernel for nchw
 * sources with few channels); a BLOCK16 input of < 16 channels is described
 * to oneDNN as 16 channels with zero weights for the padded lanes (which
 * hold zeros), as oneDNN has only a reference kernel for a blocked source
 * of < 16 channels; a PLANAR input of >= 16 channels (only a graph input
 * could be one) is reordered into a BLOCK16 copy first. Elementwise ops on
 * BLOCK16 tensors are described with their padded channel count, which
 * makes them dense, as oneDNN's fast kernels want (see dims_md).
 *
 * Convolution algorithm (wino_plan). oneDNN's fp32 Winograd F(4x4,3x3)
 * runs at about twice the "effective" rate of its direct convolution for
 * every 3x3 stride-1 layer of the reference models, except where its
 * blocking degenerates: it blocks the 4x4 output tiles in register blocks
 * of the largest divisor of the tile count below 32, so a 148x148 output
 * (a 37x37 tile grid: divisor 1) runs at half the direct rate. Such layers
 * run Winograd on a grid grown by a few zero rows or columns (148x148 ->
 * 148x149: a 37x38 grid, divisor 19): on the tensors themselves where the
 * planner stored them on that grid (Grids, below), else on a grown copy of
 * the input in the shared scratch, with the wanted window copied out. The
 * output pixels are unchanged: the extra zeros are what the zero padding
 * would have read, and the extra outputs are dropped or zeroed.
 * UPRES_DNNL_CONV_ALG (read at create) overrides
 * the choice, for benchmarks and tests: "direct", "winograd" (wherever
 * oneDNN has it, grown where the rule would grow), "winograd-plain" (never
 * grown) or "auto" (oneDNN's dnnl_convolution_auto, which picks direct for
 * a batch of one).
 *
 * Grids. The copies onto the grown grid and back cost x4plus 14% of its
 * time at 148x148 (two per conv, 345 convs). So blob_pad asks the planner
 * to store every float32 BLOCK16 value whose image Winograd would grow on
 * that grown grid (tensor.h, Storage padding), margin kept at zero: a
 * shape-preserving conv writing a padded output runs on the whole grid
 * (Winograd or direct), reading its input in place when that is on the
 * same grid (else a grown copy of it), its post-ops and epilogue sum on the
 * grid too, and layer_run zeroes the output's margin afterwards (a conv
 * writes bias and activation there). Elementwise ops and concats whose
 * tensors share one grid run on it the same way. Where grids meet
 * unpadded tensors or another image size (a nearest upsampling of the
 * trunk, the conv before a PixelShuffle, a stride-2 conv) a padded tensor
 * is copied to or from a dense image once: oneDNN's kernels on a strided
 * window are reference loops. The planner keeps off grids every value a
 * plain-C layer touches (layer_padded), and the graph input and output.
 * UPRES_DNNL_GRIDS=0 (read at create) plans no grids, which gives the
 * grown copies per conv of before (for benchmarks and tests).
 *
 * Epilogue. act -> prelu -> scale * x + sum: act and (without PReLU) the
 * scale and sum are conv post-ops (eltwise, eltwise_linear, binary add with
 * the sum tensor as src1) where the kernel takes them. oneDNN 2.6's prelu
 * post-op has only a reference kernel and its Winograd takes no post-op
 * but a plain ReLU, so the rest runs as in-place eltwise / prelu / sum
 * primitives on the output right after the conv, while it is in cache.
 *
 * Precision. In bf16 (nn_net_set_precision) the planner keeps in bf16 the
 * values that only primitives of this file write and read (layer_bf16:
 * convs, prelu, concat, eltwise, binary, nearest resampling), in NHWC:
 * oneDNN 2.6 runs bf16 convolutions on AMX (brgconv:avx512_core_amx_bf16)
 * only for nhwc tensors, and a bf16 nChw16c conv runs on the older
 * avx512_core_bf16 kernel at half the fp32 Winograd rate. A conv with any
 * bf16 tensor is a direct bf16 conv (no Winograd, no grown copies): bf16
 * weights (reordered once into the cache like fp32 ones), fp32 bias, fp32
 * accumulation, its epilogue (activation, scale, residual sum) applied in
 * fp32 inside the kernel and rounded once on store; a float32 input (the
 * graph input, a PixelShuffle output) is reordered into a bf16 NHWC copy
 * first, and a float32 output (read by plain C, or the graph output) is
 * written as float32 by the kernel. NHWC tensors cannot be concat views, so
 * RRDB's concats are concat primitives in bf16 (cheap next to the convs
 * they feed). The other ops take whatever mix of types and layouts they
 * get, with reference kernels allowed since a bf16 tensor cannot fall back
 * to nn_op_*. Which CPUs get bf16 by default: see dnnl_bf16_speed.
 *
 * Lifetimes. create: engine, stream, an empty weight cache per conv.
 * layer_prepare: builds the primitives with memory objects bound to the
 * tensors' final pointers; conv weights are reordered into the primitive's
 * format on first use and cached per layer, reused by every later prepare
 * that wants the same format; a format no live layer uses is dropped when
 * another one is added (Winograd weights are 4x the size of direct ones).
 * layer_run: executes, allocating nothing. One scratch buffer (oneDNN's
 * user scratchpad, and the grown Winograd copies behind it) is shared by
 * all layers, which run one at a time; it grows during prepare, memory
 * objects inside it are re-pointed on the next run after it moved, and it
 * is freed with the last layer state.
 *
 * Threads: oneDNN's OpenMP runtime uses omp_get_max_threads(), which
 * prepare and run set to the net's thread count first. A state (a net) is
 * used by one thread at a time.
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
    int n_users;         /* live layer states using it */
    struct wcache *next; /* owned */
} wcache_t;

/* Shape-independent data of one Convolution layer. */
typedef struct conv_static {
    wcache_t *weights; /* reordered copies, most recent first */
    float *wpad;       /* owned: oihw weights with n_in padded to 16, or NULL */
} conv_static_t;

/* UPRES_DNNL_CONV_ALG: unset (the rule), direct, winograd, winograd-plain (never grown), auto */
typedef enum { ALG_RULE = 0, ALG_DIRECT, ALG_WINOGRAD, ALG_WINOGRAD_PLAIN, ALG_AUTO } alg_choice_t;

typedef struct dnnl_state {
    const nn_model_t *model; /* borrowed */
    int n_threads;           /* OpenMP team size; 0 = OpenMP's default */
    alg_choice_t alg;        /* UPRES_DNNL_CONV_ALG */
    int grids;               /* 1: plan padded grids (UPRES_DNNL_GRIDS=0 turns them off) */
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    conv_static_t *convs;      /* owned, [model->n_layers], zero for non-conv layers */
    void *scratch;             /* owned: the shared scratch buffer */
    size_t scratch_size;       /* bytes */
    dnnl_memory_t scratch_mem; /* owned, wraps all of scratch, or NULL */
    unsigned epoch;            /* bumped whenever scratch moves */
    int n_live;                /* layer states not yet released */
} dnnl_state_t;

/* ---- layer state -------------------------------------------------------- */

#define MAX_EXECS 8
#define MAX_ARGS 8
#define MAX_MEMS 16
#define MAX_BINDS 4

/* One primitive execution with its arguments. */
typedef struct exec {
    dnnl_primitive_t prim; /* owned */
    int n_args;
    dnnl_exec_arg_t args[MAX_ARGS]; /* memories borrowed from the layer state or the cache */
    int scratch_arg;                /* index of the scratchpad argument, or -1 */
} exec_t;

/* A memory object living in the shared scratch at a fixed offset. */
typedef struct bind {
    dnnl_memory_t mem; /* borrowed from mems */
    size_t off;        /* bytes from the start of the scratch */
    size_t size;       /* bytes; non-zero: placed behind the scratchpads once the layer is built */
} bind_t;

/* The grown copy of a Winograd conv's input: an image in its top-left corner. */
typedef struct grown {
    int on;
    int n_blocks; /* channel blocks of 16, or planes (PLANAR) */
    int px;       /* floats per pixel: 16 or 1 */
    int h, w;     /* the image */
    int gh, gw;   /* the grown buffer, >= h, w */
    size_t off;   /* of the buffer in the scratch, bytes */
} grown_t;

typedef struct lstate {
    int fallback;  /* 1: run through nn_op_* */
    int allow_ref; /* 1: oneDNN's reference kernels too (bf16 tensors cannot fall back) */
    int zero_pad;  /* 1: zero out's padded lanes and grid margin after the primitives */
    int n_execs;
    exec_t execs[MAX_EXECS];
    int n_mems;
    dnnl_memory_t mems[MAX_MEMS]; /* owned */
    int n_binds;
    bind_t binds[MAX_BINDS];
    unsigned epoch; /* the state's epoch the binds point into */
    grown_t grown;
    wcache_t *weights;                /* borrowed from the cache (counted in n_users), or NULL */
    float *buf;                       /* owned: prelu slopes, a BinaryOp scalar */
    dnnl_memory_t out_dense, out_win; /* a padded output off the grid: dense copy, window; borrowed */
    dnnl_memory_desc_t out_dense_md, out_win_md; /* their mds */
    float *src_copy;                             /* owned: a conv's input reordered to BLOCK16, or NULL */
    nn_conv_scratch_t conv_scratch;              /* a fallback conv's rows; buf owned */
    size_t own_bytes;                            /* size of src_copy */
    size_t scratch_size;                         /* of the shared scratch this layer needs, bytes */
} lstate_t;

/* ---- helpers ------------------------------------------------------------ */

static int fail(up_error_t *err, const nn_layer_t *l, const char *what, dnnl_status_t s) {
    return up_error_set(err, UP_ERR_BACKEND, l ? l->line : 0,
                        "dnnl backend: layer %s '%s' (line %d): %s failed: %s", l ? l->type : "-",
                        l ? l->name : "-", l ? l->line : 0, what, dnnl_status2str(s));
}

static size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

/*
 * The md of a 1 x c x h x w tensor in layout. c is the tensor's channel
 * count or, for BLOCK16, up to its padded count: elementwise ops that keep
 * zero at zero run on the padded count, which makes the md dense (oneDNN's
 * sum and binary kernels on a 17-channel nChw16c md are reference loops).
 */
static dnnl_status_t dims_md(dnnl_memory_desc_t *md, nn_layout_t layout, nn_dtype_t dtype, int c, int h,
                             int w) {
    dnnl_dims_t dims = {1, c, h, w};
    dnnl_format_tag_t tag = layout == NN_LAYOUT_BLOCK16 ? dnnl_nChw16c
                            : layout == NN_LAYOUT_NHWC  ? dnnl_nhwc
                                                        : dnnl_nchw;
    return dnnl_memory_desc_init_by_tag(md, 4, dims, dtype == NN_DTYPE_BF16 ? dnnl_bf16 : dnnl_f32, tag);
}

/* The md of t's whole storage grid (dense); c as in dims_md. */
static dnnl_status_t store_md(dnnl_memory_desc_t *md, const nn_tensor_t *t, int c) {
    return dims_md(md, t->layout, t->dtype, c, nn_tensor_sh(t), nn_tensor_sw(t));
}

/* The md of t's image: for a padded tensor a window of its grid (strided). */
static dnnl_status_t tensor_md(dnnl_memory_desc_t *md, const nn_tensor_t *t, int c) {
    if (!nn_tensor_padded(t))
        return dims_md(md, t->layout, t->dtype, c, t->h, t->w);
    dnnl_memory_desc_t full;
    dnnl_dims_t dims = {1, c, t->h, t->w}, zero = {0};
    dnnl_status_t s = store_md(&full, t, c);
    return s == dnnl_success ? dnnl_memory_desc_init_submemory(md, &full, dims, zero) : s;
}

/* Whether any of the layer's tensors is bf16 (the Precision rules apply). */
static int any_bf16(const nn_tensor_t *in, int n_in, const nn_tensor_t *out, const nn_epilogue_t *epi) {
    int r = out->dtype == NN_DTYPE_BF16 || (epi && epi->sum && epi->sum->dtype == NN_DTYPE_BF16);
    for (int k = 0; k < n_in; k++)
        r |= in[k].dtype == NN_DTYPE_BF16;
    return r;
}

/* Channels of t with the layout's padding. */
static int padded_c(const nn_tensor_t *t) { return nn_layout_channels(t->layout, t->c); }

static const char *impl_of(const_dnnl_primitive_desc_t pd) {
    const char *s = NULL;
    if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &s) != dnnl_success || !s)
        return "?";
    return s;
}

static int is_ref(const_dnnl_primitive_desc_t pd) { return strncmp(impl_of(pd), "ref", 3) == 0; }

/* A new memory object over ptr (NULL: bound later), owned by ls. */
static dnnl_status_t mem_new(dnnl_state_t *st, lstate_t *ls, const dnnl_memory_desc_t *md, void *ptr,
                             dnnl_memory_t *out) {
    if (ls->n_mems == MAX_MEMS)
        return dnnl_out_of_memory;
    dnnl_status_t s = dnnl_memory_create(out, md, st->engine, ptr ? ptr : DNNL_MEMORY_NONE);
    if (s == dnnl_success)
        ls->mems[ls->n_mems++] = *out;
    return s;
}

/* A new memory object at byte offset off of the shared scratch, bound at run. */
static dnnl_status_t mem_in_scratch(dnnl_state_t *st, lstate_t *ls, const dnnl_memory_desc_t *md, size_t off,
                                    dnnl_memory_t *out) {
    if (ls->n_binds == MAX_BINDS)
        return dnnl_out_of_memory;
    dnnl_status_t s = mem_new(st, ls, md, NULL, out);
    if (s == dnnl_success)
        ls->binds[ls->n_binds++] = (bind_t){*out, off, 0};
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
 * ls with args[n_args] (memories borrowed). Its scratchpad, if any, is the
 * start of the shared scratch.
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

/* Primitive desc of op_desc with the user scratchpad; dnnl_unimplemented for a ref kernel. */
static dnnl_status_t pd_new(dnnl_state_t *st, const_dnnl_op_desc_t op_desc, int allow_ref,
                            dnnl_primitive_desc_t *pd) {
    dnnl_primitive_attr_t attr = NULL;
    *pd = NULL;
    dnnl_status_t s = attr_new(&attr, NULL);
    if (s == dnnl_success)
        s = dnnl_primitive_desc_create(pd, op_desc, attr, st->engine, NULL);
    dnnl_primitive_attr_destroy(attr);
    if (s == dnnl_success && !allow_ref && is_ref(*pd)) {
        dnnl_primitive_desc_destroy(*pd);
        *pd = NULL;
        s = dnnl_unimplemented;
    }
    return s;
}

/* Add a primitive for op_desc with args; see pd_new. */
static dnnl_status_t add_op(dnnl_state_t *st, lstate_t *ls, const_dnnl_op_desc_t op_desc, int allow_ref,
                            const dnnl_exec_arg_t *args, int n_args) {
    dnnl_primitive_desc_t pd;
    dnnl_status_t s = pd_new(st, op_desc, allow_ref || ls->allow_ref, &pd);
    if (s == dnnl_success)
        s = exec_add(ls, pd, args, n_args);
    dnnl_primitive_desc_destroy(pd);
    return s;
}

static void weights_unuse(wcache_t *w) {
    if (w)
        w->n_users--;
}

static void lstate_free(lstate_t *ls) {
    if (!ls)
        return;
    for (int i = 0; i < ls->n_execs; i++)
        dnnl_primitive_destroy(ls->execs[i].prim);
    for (int i = 0; i < ls->n_mems; i++)
        dnnl_memory_destroy(ls->mems[i]);
    weights_unuse(ls->weights);
    free(ls->buf);
    up_aligned_free(ls->src_copy);
    up_aligned_free(ls->conv_scratch.buf);
    free(ls);
}

/* ---- primitives shared by convs and the other ops ------------------------ */

/* In-place eltwise alg(alpha, beta) over memory m of md. */
static dnnl_status_t add_eltwise(dnnl_state_t *st, lstate_t *ls, const dnnl_memory_desc_t *md,
                                 dnnl_memory_t m, dnnl_alg_kind_t alg, float alpha, float beta) {
    dnnl_eltwise_desc_t d;
    dnnl_status_t s = dnnl_eltwise_forward_desc_init(&d, dnnl_forward_inference, alg, md, alpha, beta);
    dnnl_exec_arg_t args[] = {{DNNL_ARG_SRC, m}, {DNNL_ARG_DST, m}};
    return s == dnnl_success ? add_op(st, ls, &d, 1, args, 2) : s;
}

/*
 * prelu primitive from src to dst (both of md, which describes t with its
 * own or its padded channel count; src may be dst), slopes padded with
 * zeros to md's channel count. dnnl_unimplemented for a reference kernel
 * unless allow_ref.
 */
static dnnl_status_t add_prelu(dnnl_state_t *st, lstate_t *ls, const nn_prelu_param_t *p,
                               const nn_tensor_t *t, const dnnl_memory_desc_t *md, dnnl_memory_t src,
                               dnnl_memory_t dst, int allow_ref) {
    int n = (int)md->dims[1];
    float *slopes = calloc((size_t)n, sizeof *slopes);
    if (!slopes)
        return dnnl_out_of_memory;
    for (int i = 0; i < t->c && i < n; i++)
        slopes[i] = p->n_slope > 1 ? p->slope[i] : p->slope[0];
    free(ls->buf);
    ls->buf = slopes;
    /* weights in the data's own tag: oneDNN's jit kernel wants them so */
    dnnl_memory_desc_t wmd;
    dnnl_prelu_desc_t d;
    dnnl_memory_t wm = NULL;
    dnnl_status_t s = dims_md(&wmd, t->layout, NN_DTYPE_F32, n, 1, 1);
    if (s == dnnl_success)
        s = dnnl_prelu_forward_desc_init(&d, dnnl_forward_inference, md, &wmd);
    if (s == dnnl_success)
        s = mem_new(st, ls, &wmd, slopes, &wm);
    if (s == dnnl_success) {
        dnnl_exec_arg_t args[] = {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wm}, {DNNL_ARG_DST, dst}};
        s = add_op(st, ls, &d, allow_ref, args, 3);
    }
    return s;
}

/*
 * dst = sum_k scales[k] * srcs[k] (a sum primitive; dst may be srcs[0]).
 * dnnl_unimplemented for a reference kernel unless allow_ref.
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
    if (s == dnnl_success && !allow_ref && !ls->allow_ref && is_ref(pd))
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

/* dst = a alg b (a binary primitive; dst may be a). dnnl_unimplemented for a ref kernel. */
static dnnl_status_t add_binary(dnnl_state_t *st, lstate_t *ls, dnnl_alg_kind_t alg,
                                const dnnl_memory_desc_t *amd, dnnl_memory_t a, const dnnl_memory_desc_t *bmd,
                                dnnl_memory_t b, const dnnl_memory_desc_t *dmd, dnnl_memory_t dst) {
    dnnl_binary_desc_t d;
    dnnl_status_t s = dnnl_binary_desc_init(&d, alg, amd, bmd, dmd);
    dnnl_exec_arg_t args[] = {{DNNL_ARG_SRC_0, a}, {DNNL_ARG_SRC_1, b}, {DNNL_ARG_DST, dst}};
    return s == dnnl_success ? add_op(st, ls, &d, 0, args, 3) : s;
}

/*
 * dst = sa * a + sb * b as a binary add with source scales (dst may be a).
 * For bf16 tensors: oneDNN 2.6's sum primitive on bf16 nhwc is a scalar
 * loop (21 ms for 64x148x148, 184 of them in x4plus), the binary add a jit
 * kernel.
 */
static dnnl_status_t add_sum2(dnnl_state_t *st, lstate_t *ls, const dnnl_memory_desc_t *amd, dnnl_memory_t a,
                              float sa, const dnnl_memory_desc_t *bmd, dnnl_memory_t b, float sb,
                              const dnnl_memory_desc_t *dmd, dnnl_memory_t dst) {
    dnnl_binary_desc_t d;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_status_t s = dnnl_binary_desc_init(&d, dnnl_binary_add, amd, bmd, dmd);
    if (s == dnnl_success)
        s = attr_new(&attr, NULL);
    if (s == dnnl_success && sa != 1.f)
        s = dnnl_primitive_attr_set_scales(attr, DNNL_ARG_SRC_0, 1, 0, &sa);
    if (s == dnnl_success && sb != 1.f)
        s = dnnl_primitive_attr_set_scales(attr, DNNL_ARG_SRC_1, 1, 0, &sb);
    if (s == dnnl_success)
        s = dnnl_primitive_desc_create(&pd, &d, attr, st->engine, NULL);
    if (s == dnnl_success && is_ref(pd) && !ls->allow_ref)
        s = dnnl_unimplemented;
    if (s == dnnl_success) {
        log_debug("dnnl: bf16 sum as binary add: %s", impl_of(pd));
        dnnl_exec_arg_t args[] = {{DNNL_ARG_SRC_0, a}, {DNNL_ARG_SRC_1, b}, {DNNL_ARG_DST, dst}};
        s = exec_add(ls, pd, args, 3);
    }
    dnnl_primitive_desc_destroy(pd);
    dnnl_primitive_attr_destroy(attr);
    return s;
}

/* A reorder from one memory to another (copying between layouts or windows). */
static dnnl_status_t add_reorder(dnnl_state_t *st, lstate_t *ls, const dnnl_memory_desc_t *from_md,
                                 dnnl_memory_t from, const dnnl_memory_desc_t *to_md, dnnl_memory_t to) {
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_status_t s = attr_new(&attr, NULL);
    if (s == dnnl_success)
        s = dnnl_reorder_primitive_desc_create(&pd, from_md, st->engine, to_md, st->engine, attr);
    if (s == dnnl_success) {
        dnnl_exec_arg_t args[] = {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}};
        s = exec_add(ls, pd, args, 2);
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

/* oneDNN's Winograd F(4x4,3x3) tiles of an h x w output. */
static long wino_tiles(int h, int w) { return (long)((h + 3) / 4) * (long)((w + 3) / 4); }

/* Its register block over tiles: the largest divisor of the tile count below 32. */
static int wino_reg_block(long tiles) {
    for (int d = 31; d > 1; d--)
        if (tiles % d == 0)
            return d;
    return 1;
}

enum { WINO_NONE = 0, WINO_PLAIN, WINO_GROWN };

/*
 * The smallest growth of an h x w output, by up to 8 rows and columns, that
 * gives a register block of 8 or more; 0 when none does or none is needed
 * (a block of 4 or more already, or fewer than 64 tiles: not worth it).
 */
static int wino_growth(int h, int w, int *gh, int *gw) {
    long tiles = wino_tiles(h, w), best = 0;
    *gh = *gw = 0;
    if (wino_reg_block(tiles) >= 4 || tiles < 64)
        return 0;
    for (int dh = 0; dh <= 8; dh++)
        for (int dw = 0; dw <= 8; dw++) {
            long area = (long)(h + dh) * (w + dw);
            if (wino_reg_block(wino_tiles(h + dh, w + dw)) >= 8 && (!best || area < best)) {
                best = area;
                *gh = dh, *gw = dw;
            }
        }
    return best > 0;
}

/*
 * How a conv runs: direct (WINO_NONE), Winograd on its own tensors, or
 * Winograd on copies grown by *gh rows and *gw columns. Measured with
 * bench/conv.c on Zen 5, 2 threads, oneDNN 2.6.3, 3x3 convs at 152x152
 * ("effective" GFLOP/s, Winograd vs direct): 64->64 965 vs 424, 192->64
 * 824 vs 425, 64..160->32 770-800 vs 410, 48->48 770 vs 427, 64->16 597 vs
 * 368; but 16->32 and 32->32 405 vs 420. With a register block below 4
 * (a prime tile grid of 37 or more per side: outputs of 145-148, 161-164,
 * ... pixels) Winograd drops to 380-400; with 4 (296x296) it still makes
 * 640. Growing to a register block of 8 or more costs two copies, 0.06 ms
 * per 64 channels at 148x148 when in cache and 0.2-0.3 ms inside a
 * network, against 0.7 to 5 ms that Winograd saves on those layers. Small
 * images (under 64 tiles) are not worth a copy.
 */
static int wino_plan(const dnnl_state_t *st, const nn_conv_param_t *p, const nn_tensor_t *src,
                     const nn_tensor_t *out, int *gh, int *gw) {
    *gh = *gw = 0;
    if (st->alg == ALG_DIRECT || st->alg == ALG_AUTO)
        return WINO_NONE;
    if (p->kernel_w != 3 || p->kernel_h != 3 || p->stride_w != 1 || p->stride_h != 1 || p->dilation_w != 1 ||
        p->dilation_h != 1 || src->layout != NN_LAYOUT_BLOCK16 || out->layout != NN_LAYOUT_BLOCK16 ||
        p->n_in % 16 || p->n_out % 16)
        return WINO_NONE;
    if (st->alg == ALG_RULE && p->n_in < 48)
        return WINO_NONE;
    if (wino_reg_block(wino_tiles(out->h, out->w)) >= 4 || st->alg == ALG_WINOGRAD_PLAIN)
        return WINO_PLAIN;
    if (wino_growth(out->h, out->w, gh, gw))
        return WINO_GROWN;
    return st->alg == ALG_WINOGRAD ? WINO_PLAIN : WINO_NONE;
}

/* Drop the cached weight formats of cs that no live layer uses, except keep. */
static void weights_evict(conv_static_t *cs, const wcache_t *keep) {
    for (wcache_t **pw = &cs->weights; *pw;) {
        wcache_t *w = *pw;
        if (w != keep && w->n_users == 0) {
            *pw = w->next;
            dnnl_memory_destroy(w->mem);
            up_aligned_free(w->data);
            free(w);
        } else {
            pw = &w->next;
        }
    }
}

/*
 * The weights of conv layer li in the format md asks for: from the cache,
 * or reordered now from the model's oihw weights (ic channels, zero weights
 * past n_in) and cached. The entry's user count is taken for ls.
 */
static int conv_weights(dnnl_state_t *st, int li, const nn_layer_t *l, int ic, const dnnl_memory_desc_t *md,
                        lstate_t *ls, dnnl_memory_t *out, up_error_t *err) {
    conv_static_t *cs = &st->convs[li];
    const nn_conv_param_t *p = &l->p.conv;
    wcache_t *w;
    for (w = cs->weights; w; w = w->next)
        if (dnnl_memory_desc_equal(&w->md, md))
            goto found;
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
    dnnl_status_t s = dnnl_out_of_memory;
    w = calloc(1, sizeof *w);
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
    weights_evict(cs, w);
found:
    w->n_users++;
    ls->weights = w;
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
    dnnl_status_t s = dnnl_dilated_convolution_forward_desc_init(&d, dnnl_forward_inference, alg, smd, wmd,
                                                                 bmd, dmd, strides, dil, pad_l, pad_r);
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

/*
 * Pick the conv primitive: the first fusion level (from max_fuse down) that
 * oneDNN has a non-reference kernel for, else the first reference one. With
 * prefer_brg (bf16), a level whose kernel is a brgconv beats a fuller
 * fusion on another jit kernel: oneDNN 2.6 runs a 64->64 conv at 148x148
 * with a binary-add post-op on its older AMX kernel in 0.73 ms, the brgconv
 * with the activation only in 0.45 ms, and the separate bf16 sum costs
 * less than the difference. Returns the pd (new) or NULL with *last the
 * last status; *fuse says what was picked.
 */
static dnnl_primitive_desc_t conv_pick(dnnl_state_t *st, const nn_conv_param_t *p, const nn_epilogue_t *epi,
                                       dnnl_alg_kind_t alg, int max_fuse, const dnnl_memory_desc_t *smd,
                                       const dnnl_memory_desc_t *wmd, const dnnl_memory_desc_t *bmd,
                                       const dnnl_memory_desc_t *dmd, const dnnl_memory_desc_t *summd,
                                       int allow_ref, int prefer_brg, int *fuse, dnnl_status_t *last) {
    dnnl_primitive_desc_t ref_pd = NULL, jit_pd = NULL;
    int ref_fuse = FUSE_NONE, jit_fuse = FUSE_NONE;
    for (int f = max_fuse; f >= FUSE_NONE; f--) {
        dnnl_primitive_desc_t cand;
        *last = conv_pd(st, p, epi, alg, f, smd, wmd, bmd, dmd, summd, &cand);
        if (*last != dnnl_success)
            continue;
        if (prefer_brg && !is_ref(cand) && strncmp(impl_of(cand), "brg", 3) != 0) {
            if (!jit_pd)
                jit_pd = cand, jit_fuse = f;
            else
                dnnl_primitive_desc_destroy(cand);
            continue;
        }
        if (!is_ref(cand)) {
            dnnl_primitive_desc_destroy(ref_pd);
            dnnl_primitive_desc_destroy(jit_pd);
            *fuse = f;
            return cand;
        }
        if (!ref_pd && allow_ref) {
            ref_pd = cand, ref_fuse = f;
        } else {
            dnnl_primitive_desc_destroy(cand);
        }
    }
    if (jit_pd) {
        dnnl_primitive_desc_destroy(ref_pd);
        *fuse = jit_fuse;
        return jit_pd;
    }
    /* nothing better: oneDNN's reference kernel, which is still correct */
    *fuse = ref_fuse;
    return ref_pd;
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
    /* The source as oneDNN sees it (see Layouts and Precision at the top of the file). */
    int lowp = any_bf16(in, 1, out, epi);
    nn_tensor_t src_t = *in;
    int reorder_src = in->layout == NN_LAYOUT_PLANAR && in->c >= 16;
    if (reorder_src)
        src_t.layout = NN_LAYOUT_BLOCK16;
    if (lowp && in->dtype != NN_DTYPE_BF16) {
        reorder_src = 1;
        src_t.layout = NN_LAYOUT_NHWC;
        src_t.dtype = NN_DTYPE_BF16;
    }
    ls->allow_ref = lowp;
    int ic = src_t.layout == NN_LAYOUT_BLOCK16 && in->c < 16 ? 16 : in->c;
    /*
     * Storage grids (see Grids at the top of the file): a shape-preserving
     * conv writing a padded output runs on the output's grid, reading its
     * input in place when that is on the same grid.
     */
    int same = out->h == in->h && out->w == in->w && p->stride_h == 1 && p->stride_w == 1;
    int sum_ok = !epi || !epi->sum ||
                 (nn_tensor_sh(epi->sum) == nn_tensor_sh(out) && nn_tensor_sw(epi->sum) == nn_tensor_sw(out));
    int grid = !lowp && nn_tensor_padded(out) && same && sum_ok;
    int gh = 0, gw = 0, wino = WINO_NONE;
    if (grid) {
        gh = nn_tensor_sh(out) - out->h, gw = nn_tensor_sw(out) - out->w;
        int g2h, g2w;
        nn_tensor_t grid_t = src_t;
        grid_t.h = grid_t.ph = nn_tensor_sh(out), grid_t.w = grid_t.pw = nn_tensor_sw(out);
        nn_tensor_t grid_o = *out;
        grid_o.h = grid_t.h, grid_o.w = grid_t.w;
        wino = wino_plan(st, p, &grid_t, &grid_o, &g2h, &g2w) == WINO_NONE ? WINO_NONE : WINO_PLAIN;
    } else if (!lowp) {
        wino = wino_plan(st, p, &src_t, out, &gh, &gw);
    }
    int in_place = !reorder_src && nn_tensor_sh(in) == in->h + gh && nn_tensor_sw(in) == in->w + gw &&
                   (grid || wino == WINO_GROWN);
    int grow_src = (grid || wino == WINO_GROWN) && !in_place; /* the input copied onto the grid */
    int grow_dst = wino == WINO_GROWN;                        /* the output written on a grid, copied out */
    if (!grid && wino != WINO_GROWN && nn_tensor_padded(in)) {
        /* a padded input the conv cannot read on its grid: a dense copy of its image */
        reorder_src = 1;
        src_t.ph = src_t.pw = 0;
    }
    dnnl_memory_desc_t smd, inmd, wmd, bmd, dmd, pdmd, summd, gsmd, gdmd;
    memset(&summd, 0, sizeof summd);
    dnnl_dims_t wdims = {p->n_out, ic, p->kernel_h, p->kernel_w}, bdims = {p->n_out};
    /* grid: dst, its padded-channel view and the sum are the whole grid */
    dnnl_status_t s = in_place ? store_md(&smd, in, ic) : tensor_md(&smd, &src_t, ic);
    if (s == dnnl_success)
        s = tensor_md(&inmd, in, in->c);
    if (s == dnnl_success)
        s = grid ? store_md(&dmd, out, out->c) : tensor_md(&dmd, out, out->c);
    if (s == dnnl_success)
        s = grid ? store_md(&pdmd, out, padded_c(out)) : tensor_md(&pdmd, out, padded_c(out));
    if (s == dnnl_success)
        s = dims_md(&gsmd, src_t.layout, NN_DTYPE_F32, ic, in->h + gh, in->w + gw);
    if (s == dnnl_success)
        s = dims_md(&gdmd, NN_LAYOUT_BLOCK16, NN_DTYPE_F32, out->c, out->h + gh, out->w + gw);
    if (s == dnnl_success)
        s = dnnl_memory_desc_init_by_tag(&wmd, 4, wdims, lowp ? dnnl_bf16 : dnnl_f32, dnnl_format_tag_any);
    if (s == dnnl_success)
        s = dnnl_memory_desc_init_by_tag(&bmd, 1, bdims, dnnl_f32, dnnl_x);
    if (s == dnnl_success && epi && epi->sum)
        s = grid ? store_md(&summd, epi->sum, epi->sum->c) : tensor_md(&summd, epi->sum, epi->sum->c);
    /*
     * A bf16 conv writing a float32 BLOCK16 tensor: oneDNN has only its
     * reference kernel for nhwc bf16 in and nChw16c out, so the kernel
     * writes float32 NHWC into a copy that a reorder moves to the tensor.
     * The same for a padded output the conv cannot write on its grid (a
     * strided destination): a dense copy moved into the image.
     */
    int pad_dst = !grid && !grow_dst && nn_tensor_padded(out);
    int copy_dst = (lowp && out->dtype == NN_DTYPE_F32 && out->layout != NN_LAYOUT_NHWC) || pad_dst;
    dnnl_memory_desc_t cdmd = dmd;
    if (s == dnnl_success && copy_dst)
        s = dims_md(&cdmd, lowp ? NN_LAYOUT_NHWC : NN_LAYOUT_BLOCK16, NN_DTYPE_F32, out->c, out->h, out->w);
    if (s != dnnl_success)
        return fail(err, l, "memory descriptor", s);
    if (pad_dst)
        ls->allow_ref = 1; /* its epilogue runs on the strided image */
    ls->zero_pad = nn_tensor_padded(out);
    const dnnl_memory_desc_t *bmdp = p->bias ? &bmd : NULL;

    /* Winograd as planned if oneDNN takes it, else direct. */
    dnnl_primitive_desc_t pd = NULL;
    int fuse = FUSE_NONE;
    dnnl_status_t last = dnnl_unimplemented;
    const dnnl_memory_desc_t *csmd = grow_src ? &gsmd : &smd;
    if (wino == WINO_GROWN)
        pd = conv_pick(st, p, epi, dnnl_convolution_winograd, FUSE_ACT, csmd, &wmd, bmdp, &gdmd, NULL, 0, 0,
                       &fuse, &last);
    else if (wino == WINO_PLAIN)
        pd = conv_pick(st, p, epi, dnnl_convolution_winograd, FUSE_ALL, csmd, &wmd, bmdp, &dmd, &summd, 0, 0,
                       &fuse, &last);
    if (!pd) {
        dnnl_alg_kind_t alg = st->alg == ALG_AUTO ? dnnl_convolution_auto : dnnl_convolution_direct;
        if (wino == WINO_GROWN) {
            /* no Winograd after all: direct on the image, as if never planned */
            grow_src = grow_dst = in_place = 0;
            if (nn_tensor_padded(in)) {
                reorder_src = 1;
                src_t.ph = src_t.pw = 0;
                s = tensor_md(&smd, &src_t, ic);
            }
            if (s == dnnl_success && nn_tensor_padded(out)) {
                copy_dst = pad_dst = ls->allow_ref = 1;
                s = dims_md(&cdmd, NN_LAYOUT_BLOCK16, NN_DTYPE_F32, out->c, out->h, out->w);
            }
            if (s != dnnl_success)
                return fail(err, l, "memory descriptor", s);
            csmd = &smd;
        }
        wino = WINO_NONE;
        pd = conv_pick(st, p, epi, alg, copy_dst ? FUSE_ACT : FUSE_ALL, csmd, &wmd, bmdp, &cdmd, &summd, 1,
                       lowp, &fuse, &last);
    }
    if (!pd)
        return fail(err, l, "convolution primitive", last);
    log_debug("dnnl: %s '%s' %dx%dx%d -> %dx%dx%d: %s%s%s%s, fused %s", l->type, l->name, in->c, in->h, in->w,
              out->c, out->h, out->w, impl_of(pd), grid ? " (on the grid)" : "",
              grow_src ? " (input copied)" : "", grow_dst ? " (output copied)" : "",
              fuse == FUSE_ALL ? "all"
              : fuse           ? "act"
                               : "none");

    dnnl_memory_t src = NULL, dst = NULL, pdst = NULL, bias = NULL, sum = NULL, wmem = NULL;
    dnnl_memory_t gsrc = NULL, gsrc_win = NULL, gdst = NULL, gdst_win = NULL;
    int rc = conv_weights(st, li, l, ic, dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0), ls,
                          &wmem, err);
    if (rc) {
        dnnl_primitive_desc_destroy(pd);
        return rc;
    }
    /*
     * A bf16 conv's copies (its input in bf16, its float32 output before the
     * reorder) live in the shared scratch behind the scratchpads: layers run
     * one at a time, and an own copy per layer took x4plus at 532x532 to
     * 3.8 GB (69 dense blocks reading the float32 trunk).
     */
    int scratch_src = lowp && reorder_src;
    int src_bind = -1, dst_bind = -1, gs_bind = -1, gd_bind = -1;
    if (reorder_src && !scratch_src) {
        ls->own_bytes = dnnl_memory_desc_get_size(&smd);
        ls->src_copy = up_aligned_alloc(ls->own_bytes, 1);
        if (!ls->src_copy) {
            dnnl_primitive_desc_destroy(pd);
            return up_error_set(err, UP_ERR_NOMEM, l->line, "dnnl backend: out of memory");
        }
    }
    dnnl_memory_t cdst = NULL;
    if (scratch_src) {
        src_bind = ls->n_binds;
        s = mem_in_scratch(st, ls, &smd, 0, &src);
    } else {
        s = mem_new(st, ls, &smd, reorder_src ? (void *)ls->src_copy : in->data, &src);
    }
    if (s == dnnl_success && reorder_src) {
        dnnl_memory_t from = NULL;
        s = mem_new(st, ls, &inmd, in->data, &from);
        if (s == dnnl_success)
            s = add_reorder(st, ls, &inmd, from, &smd, src);
    }
    if (s == dnnl_success)
        s = mem_new(st, ls, &dmd, out->data, &dst);
    if (s == dnnl_success && p->bias)
        s = mem_new(st, ls, &bmd, p->bias, &bias);
    if (s == dnnl_success && epi && epi->sum)
        s = mem_new(st, ls, &summd, epi->sum->data, &sum);
    size_t gs_size = dnnl_memory_desc_get_size(&gsmd), gd_size = dnnl_memory_desc_get_size(&gdmd);
    if (s == dnnl_success && grow_src) {
        /* the grown input sits behind every scratchpad, offsets fixed below */
        dnnl_memory_desc_t swin;
        dnnl_dims_t sdims = {1, ic, in->h, in->w}, zero = {0};
        s = dnnl_memory_desc_init_submemory(&swin, &gsmd, sdims, zero);
        gs_bind = ls->n_binds;
        if (s == dnnl_success)
            s = mem_in_scratch(st, ls, &gsmd, 0, &gsrc);
        if (s == dnnl_success)
            s = mem_in_scratch(st, ls, &swin, 0, &gsrc_win);
        if (s == dnnl_success)
            s = add_reorder(st, ls, &smd, src, &swin, gsrc_win);
        int px = src_t.layout == NN_LAYOUT_BLOCK16 ? 16 : 1;
        ls->grown = (grown_t){1, px == 16 ? ic / 16 : ic, px, in->h, in->w, in->h + gh, in->w + gw, 0};
    }
    if (s == dnnl_success && grow_dst) {
        dnnl_memory_desc_t dwin;
        dnnl_dims_t ddims = {1, out->c, out->h, out->w}, zero = {0};
        s = dnnl_memory_desc_init_submemory(&dwin, &gdmd, ddims, zero);
        gd_bind = ls->n_binds;
        if (s == dnnl_success)
            s = mem_in_scratch(st, ls, &gdmd, 0, &gdst);
        if (s == dnnl_success)
            s = mem_in_scratch(st, ls, &dwin, 0, &gdst_win);
    }
    if (s == dnnl_success) {
        dnnl_exec_arg_t args[MAX_ARGS];
        int n = 0;
        args[n++] = (dnnl_exec_arg_t){DNNL_ARG_SRC, grow_src ? gsrc : src};
        args[n++] = (dnnl_exec_arg_t){DNNL_ARG_WEIGHTS, wmem};
        if (bias)
            args[n++] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, bias};
        if (s == dnnl_success && copy_dst) {
            dst_bind = ls->n_binds;
            s = mem_in_scratch(st, ls, &cdmd, 0, &cdst);
        }
        args[n++] = (dnnl_exec_arg_t){DNNL_ARG_DST, grow_dst ? gdst : copy_dst ? cdst : dst};
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
        if (s == dnnl_success)
            s = exec_add(ls, pd, args, n);
    }
    dnnl_primitive_desc_destroy(pd);
    if (s == dnnl_success && copy_dst)
        s = add_reorder(st, ls, &cdmd, cdst, &dmd, dst);
    if (s == dnnl_success && grow_dst) {
        const dnnl_memory_desc_t *dwin = NULL;
        s = dnnl_memory_get_memory_desc(gdst_win, &dwin);
        if (s == dnnl_success)
            s = add_reorder(st, ls, dwin, gdst_win, &dmd, dst);
    }
    if (s != dnnl_success)
        return fail(err, l, "convolution primitive", s);

    /*
     * What the post-ops did not take, as in-place primitives on dst, on its
     * padded channel count (see dims_md); an activation that does not keep
     * zero at zero then needs the padded lanes zeroed again.
     */
    dnnl_alg_kind_t aalg;
    float alpha, beta;
    int sep_act = fuse < FUSE_ACT && act_alg(p, &aalg, &alpha, &beta);
    int sep_prelu = epi && epi->prelu;
    int sep_sum = epi && !(fuse == FUSE_ALL && !epi->prelu) && (epi->sum || epi->scale != 1.f);
    if (sep_act || sep_prelu || sep_sum) {
        s = mem_new(st, ls, &pdmd, out->data, &pdst);
        if (s != dnnl_success)
            return fail(err, l, "memory", s);
    }
    if (sep_act) {
        s = add_eltwise(st, ls, &pdmd, pdst, aalg, alpha, beta);
        if (s != dnnl_success)
            return fail(err, l, "activation primitive", s);
        ls->zero_pad |= aalg == dnnl_eltwise_logistic || aalg == dnnl_eltwise_clip;
    }
    if (sep_prelu) {
        s = add_prelu(st, ls, epi->prelu, out, &pdmd, pdst, pdst, 1);
        if (s != dnnl_success)
            return fail(err, l, "prelu primitive", s);
    }
    if (sep_sum && epi->sum) {
        float scales[2] = {epi->scale, 1.f};
        if (lowp) {
            s = add_sum2(st, ls, &dmd, dst, epi->scale, &summd, sum, 1.f, &dmd, dst);
        } else if (epi->sum->layout == out->layout && epi->sum->dtype == out->dtype && sum_ok) {
            dnnl_memory_desc_t mds[2] = {pdmd, pdmd};
            dnnl_memory_t srcs[2] = {pdst, NULL};
            s = mem_new(st, ls, &pdmd, epi->sum->data, &srcs[1]);
            if (s == dnnl_success)
                s = add_sum(st, ls, 2, scales, mds, srcs, &pdmd, pdst, 1);
        } else {
            dnnl_memory_desc_t mds[2] = {dmd, summd};
            dnnl_memory_t srcs[2] = {dst, sum};
            s = add_sum(st, ls, 2, scales, mds, srcs, &dmd, dst, 1);
        }
        if (s != dnnl_success)
            return fail(err, l, "epilogue sum primitive", s);
    } else if (sep_sum) {
        s = add_eltwise(st, ls, &pdmd, pdst, dnnl_eltwise_linear, epi->scale, 0.f);
        if (s != dnnl_success)
            return fail(err, l, "epilogue scale primitive", s);
    }

    /* scratch: [scratchpads | grown input | grown output | bf16 input copy | float32 output copy] */
    size_t off = round_up(ls->scratch_size, 4096);
    if (gs_bind >= 0) {
        ls->binds[gs_bind].off = ls->binds[gs_bind + 1].off = ls->grown.off = off;
        off = round_up(off + gs_size, 4096);
    }
    if (gd_bind >= 0) {
        ls->binds[gd_bind].off = ls->binds[gd_bind + 1].off = off;
        off = round_up(off + gd_size, 4096);
    }
    if (src_bind >= 0) {
        ls->binds[src_bind].off = off;
        off = round_up(off + dnnl_memory_desc_get_size(&smd), 4096);
    }
    if (dst_bind >= 0) {
        ls->binds[dst_bind].off = off;
        off = round_up(off + dnnl_memory_desc_get_size(&cdmd), 4096);
    }
    if (ls->n_binds)
        ls->scratch_size = off;
    return 0;
}

/*
 * Zero what the copy-in does not write of a grown input: the columns right
 * of the image and the rows below it, in every channel block (or plane).
 * Other layers use the same scratch, so this is every run.
 */
static void grown_zero_margins(const grown_t *g, void *scratch) {
    float *base = (float *)((char *)scratch + g->off);
    size_t px = (size_t)g->px, plane = (size_t)g->gh * g->gw * px;
    for (int b = 0; b < g->n_blocks; b++) {
        float *blk = base + (size_t)b * plane;
        if (g->gw > g->w)
            for (int y = 0; y < g->h; y++)
                memset(blk + ((size_t)y * g->gw + g->w) * px, 0, (size_t)(g->gw - g->w) * px * sizeof(float));
        memset(blk + (size_t)g->h * g->gw * px, 0, (size_t)(g->gh - g->h) * g->gw * px * sizeof(float));
    }
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
 * Primitives for a non-conv layer. dnnl_unimplemented sends the layer to
 * nn_op_*; other statuses are errors.
 */
static dnnl_status_t op_prepare(dnnl_state_t *st, const nn_layer_t *l, const nn_tensor_t *in, int n_in,
                                const nn_tensor_t *out, lstate_t *ls) {
    int lowp = any_bf16(in, n_in, out, NULL);
    if (n_in < 1 || n_in + 2 > MAX_ARGS || n_in + 4 > MAX_MEMS ||
        (!lowp && !same_layout(in, n_in, out->layout)))
        return dnnl_unimplemented;
    dnnl_memory_desc_t mds[MAX_ARGS], dmd;
    dnnl_memory_t srcs[MAX_ARGS], dst;
    /*
     * All but concat keep zero at zero in the padded lanes (see dims_md).
     * With bf16 tensors (then possibly of mixed layouts) every md has its
     * real channel count, reference kernels are taken rather than nn_op_*
     * (which has no bf16), and a BLOCK16 output gets its lanes zeroed.
     */
    int pad = l->op != NN_OP_CONCAT && !lowp;
    /*
     * Padded tensors (see Grids): all on one grid with one image size, the
     * op runs on the whole grid (dense, zeros in, zeros or garbage out in
     * the margin, zeroed after); otherwise on windows of their grids, which
     * are strided, with whatever kernel oneDNN has for those.
     */
    int any_padded = nn_tensor_padded(out), on_grid = 1;
    for (int k = 0; k < n_in; k++) {
        any_padded |= nn_tensor_padded(&in[k]);
        on_grid &= in[k].h == out->h && in[k].w == out->w && nn_tensor_sh(&in[k]) == nn_tensor_sh(out) &&
                   nn_tensor_sw(&in[k]) == nn_tensor_sw(out);
    }
    on_grid &= any_padded;
    dnnl_status_t (*md_of)(dnnl_memory_desc_t *, const nn_tensor_t *, int) = on_grid ? store_md : tensor_md;
    ls->allow_ref = lowp || (any_padded && !on_grid);
    ls->zero_pad = (lowp && out->layout == NN_LAYOUT_BLOCK16) || nn_tensor_padded(out);
    dnnl_status_t s = md_of(&dmd, out, pad ? padded_c(out) : out->c);
    if (s == dnnl_success)
        s = mem_new(st, ls, &dmd, out->data, &dst);
    if (s == dnnl_success && !on_grid && nn_tensor_padded(out) && ls->n_binds < MAX_BINDS) {
        /* a padded output off the grid: written dense, then moved into the image (see below) */
        ls->out_win_md = dmd;
        ls->out_win = dst;
        s = dims_md(&dmd, out->layout, out->dtype, (int)dmd.dims[1], out->h, out->w);
        if (s == dnnl_success)
            s = mem_in_scratch(st, ls, &dmd, 0, &dst);
        if (s == dnnl_success) {
            ls->binds[ls->n_binds - 1].size = round_up(dnnl_memory_desc_get_size(&dmd), 4096);
            ls->out_dense_md = dmd;
            ls->out_dense = dst;
        }
    }
    for (int k = 0; k < n_in && s == dnnl_success; k++) {
        s = md_of(&mds[k], &in[k], pad ? padded_c(&in[k]) : in[k].c);
        if (s == dnnl_success)
            s = mem_new(st, ls, &mds[k], in[k].data, &srcs[k]);
        if (s == dnnl_success && !on_grid && nn_tensor_padded(&in[k]) && ls->n_binds < MAX_BINDS) {
            /*
             * A padded input off the grid (a nearest upsampling's): a dense
             * copy of its image in the shared scratch. oneDNN's kernels on
             * a strided window are reference loops (530 ms for x4plus's
             * first upsampling at 148x148, against 16 ms dense), and some
             * (prelu) take one md for source and destination.
             */
            dnnl_memory_desc_t dense;
            dnnl_memory_t copy = NULL;
            s = dims_md(&dense, in[k].layout, in[k].dtype, (int)mds[k].dims[1], in[k].h, in[k].w);
            if (s == dnnl_success)
                s = mem_in_scratch(st, ls, &dense, 0, &copy);
            if (s == dnnl_success) {
                ls->binds[ls->n_binds - 1].size = round_up(dnnl_memory_desc_get_size(&dense), 4096);
                s = add_reorder(st, ls, &mds[k], srcs[k], &dense, copy);
            }
            mds[k] = dense;
            srcs[k] = copy;
        }
    }
    if (s != dnnl_success)
        return s;

    switch (l->op) {
    case NN_OP_PRELU: return add_prelu(st, ls, &l->p.prelu, out, &dmd, srcs[0], dst, lowp);
    case NN_OP_ELTWISE: {
        const nn_eltwise_param_t *p = &l->p.eltwise;
        if (n_in < 2)
            return dnnl_unimplemented;
        if (p->op == NN_ELTWISE_SUM) {
            float scales[MAX_ARGS];
            for (int k = 0; k < n_in; k++)
                scales[k] = p->n_coeffs ? p->coeffs[k] : 1.f;
            if (lowp && n_in == 2)
                return add_sum2(st, ls, &mds[0], srcs[0], scales[0], &mds[1], srcs[1], scales[1], &dmd, dst);
            return add_sum(st, ls, n_in, scales, mds, srcs, &dmd, dst, 0);
        }
        if (n_in - 1 > MAX_EXECS)
            return dnnl_unimplemented;
        /* in ncnn's order: out = in0 op in1, then out = out op in_k */
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
        ls->zero_pad |= out->layout == NN_LAYOUT_BLOCK16; /* x / 0 in the padded lanes, or the scalar there */
        if (!p->with_scalar) {
            if (n_in < 2)
                return dnnl_unimplemented;
            int a = swap, b = 1 - swap;
            return add_binary(st, ls, alg, &mds[a], srcs[a], &mds[b], srcs[b], &dmd, dst);
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
        return s;
    }
    case NN_OP_INTERP: {
        const nn_interp_param_t *p = &l->p.interp;
        if (p->type != NN_INTERP_NEAREST || (out->h == in->h && out->w == in->w) ||
            !nearest_is_integer(in->h, out->h, p->out_h, p->height_scale) ||
            !nearest_is_integer(in->w, out->w, p->out_w, p->width_scale))
            return dnnl_unimplemented;
        dnnl_resampling_desc_t d;
        s = dnnl_resampling_forward_desc_init(&d, dnnl_forward_inference, dnnl_resampling_nearest, NULL,
                                              &mds[0], &dmd);
        dnnl_exec_arg_t args[] = {{DNNL_ARG_SRC, srcs[0]}, {DNNL_ARG_DST, dst}};
        return s == dnnl_success ? add_op(st, ls, &d, 0, args, 2) : s;
    }
    case NN_OP_CONCAT: {
        if (l->p.concat.axis != 0)
            return dnnl_unimplemented;
        dnnl_primitive_attr_t attr = NULL;
        dnnl_primitive_desc_t pd = NULL;
        s = attr_new(&attr, NULL);
        if (s == dnnl_success)
            s = dnnl_concat_primitive_desc_create(&pd, &dmd, n_in, 1, mds, attr, st->engine);
        if (s == dnnl_success && is_ref(pd) && !ls->allow_ref)
            s = dnnl_unimplemented;
        if (lowp && (s != dnnl_success || is_ref(pd))) {
            /* mixed types (which oneDNN's concat refuses): a reorder into each channel range */
            dnnl_primitive_desc_destroy(pd);
            dnnl_primitive_attr_destroy(attr);
            int off = 0;
            s = dnnl_success;
            for (int k = 0; k < n_in && s == dnnl_success; k++) {
                dnnl_dims_t dims = {1, in[k].c, out->h, out->w}, offs = {0, off, 0, 0};
                dnnl_memory_desc_t sub;
                dnnl_memory_t sm = NULL;
                s = dnnl_memory_desc_init_submemory(&sub, &dmd, dims, offs);
                if (s == dnnl_success)
                    s = mem_new(st, ls, &sub, out->data, &sm);
                if (s == dnnl_success)
                    s = add_reorder(st, ls, &mds[k], srcs[k], &sub, sm);
                off += in[k].c;
            }
            return s;
        }
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

/* ---- the shared scratch --------------------------------------------------- */

static void scratch_free(dnnl_state_t *st) {
    dnnl_memory_destroy(st->scratch_mem);
    up_aligned_free(st->scratch);
    st->scratch_mem = NULL;
    st->scratch = NULL;
    st->scratch_size = 0;
    st->epoch++;
}

/* Grow the shared scratch to size bytes; *grown receives the growth. */
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
    size_t old = st->scratch_size;
    scratch_free(st);
    st->scratch = p;
    st->scratch_mem = m;
    st->scratch_size = size;
    *grown = size - old;
    return 0;
}

/* ---- the vtable ------------------------------------------------------------ */

static void dnnl_destroy(void *state);

static int dnnl_create(const nn_model_t *model, int n_threads, void **state, up_error_t *err) {
    dnnl_state_t *st = calloc(1, sizeof *st);
    if (!st)
        return up_error_set(err, UP_ERR_NOMEM, 0, "dnnl backend: out of memory");
    st->model = model;
    st->n_threads = n_threads > 0 ? n_threads : 0;
    st->epoch = 1;
    const char *alg = getenv("UPRES_DNNL_CONV_ALG");
    if (alg && strcmp(alg, "direct") == 0)
        st->alg = ALG_DIRECT;
    else if (alg && strcmp(alg, "winograd") == 0)
        st->alg = ALG_WINOGRAD;
    else if (alg && strcmp(alg, "winograd-plain") == 0)
        st->alg = ALG_WINOGRAD_PLAIN;
    else if (alg && strcmp(alg, "auto") == 0)
        st->alg = ALG_AUTO;
    const char *grids = getenv("UPRES_DNNL_GRIDS");
    st->grids = !(grids && strcmp(grids, "0") == 0);
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
    scratch_free(st);
    if (st->stream)
        dnnl_stream_destroy(st->stream);
    if (st->engine)
        dnnl_engine_destroy(st->engine);
    free(st);
}

/*
 * bf16 speed from the ISA oneDNN dispatches to (dnnl_get_effective_cpu_isa
 * honours ONEDNN_MAX_CPU_ISA, so it is what the kernels will really use).
 * Reaching AMX is the test rather than a probe of one primitive's impl
 * string: it is the condition under which oneDNN 2.6 builds its brgconv
 * AMX kernels, and it costs nothing at create. Measured on this project's
 * 2-core Xeon (AVX512_BF16 + AMX-BF16), 3x3 convs at 148x148: bf16 brgconv
 * 0.22 ms for 64->32 against 2.10 ms for fp32 Winograd, 1.30 vs 7.69 ms for
 * 192->64; without AMX oneDNN's bf16 is jit_bf16:avx512_core_bf16, which
 * made 167 GFLOP/s here against 384 for fp32 Winograd. On a Zen 4
 * (AVX512_BF16, no AMX: vdpbf16ps peak 229 GFLOP/s a core, twice the fp32
 * FMA peak) oneDNN's bf16 is brgconv:avx512_core_bf16 at 0.80-0.90 of that
 * peak, x4plus at 148x148 on 2 threads 2.11 s against 2.03 s for fp32
 * Winograd: a direct conv at the bf16 peak does the work of Winograd's
 * quarter of the products at the fp32 rate. Our own direct bf16 kernel
 * (commit 4ed52ff, reverted) was 12% slower than oneDNN's, and Winograd
 * products in bf16 fall far below the 50 dB bar (bench/wino_bf16_error.c).
 */
static int dnnl_bf16_speed(void *state, const char **why) {
    (void)state;
    unsigned isa = (unsigned)dnnl_get_effective_cpu_isa();
    if ((isa & dnnl_cpu_isa_avx512_core_amx) == dnnl_cpu_isa_avx512_core_amx) {
        *why = "AMX-BF16";
        return 2;
    }
    if ((isa & dnnl_cpu_isa_avx512_core_bf16) == dnnl_cpu_isa_avx512_core_bf16) {
        *why = "AVX512_BF16 without AMX: oneDNN's bf16 convolution is no faster than its fp32 Winograd";
        return 1;
    }
    *why = "the CPU has no AVX512_BF16";
    return 0;
}

static int dnnl_layer_bf16(void *state, const nn_layer_t *l, const nn_tensor_t *in, int n_in,
                           const nn_tensor_t *out) {
    (void)state;
    if (n_in < 1 || n_in + 2 > MAX_ARGS)
        return 0;
    switch (l->op) {
    case NN_OP_CONV: {
        const nn_conv_param_t *p = &l->p.conv;
        return p->pad_value == 0.f || !(p->pad_left || p->pad_right || p->pad_top || p->pad_bottom);
    }
    case NN_OP_PRELU: return 1;
    case NN_OP_CONCAT: return l->p.concat.axis == 0;
    case NN_OP_ELTWISE: return n_in >= 2 && (l->p.eltwise.op == NN_ELTWISE_SUM || n_in - 1 <= MAX_EXECS);
    case NN_OP_BINARY: {
        int swap;
        if (binary_alg(l->p.binary.op, &swap) == dnnl_alg_kind_undef)
            return 0;
        return l->p.binary.with_scalar ? !swap : n_in >= 2;
    }
    case NN_OP_INTERP: {
        const nn_interp_param_t *p = &l->p.interp;
        return p->type == NN_INTERP_NEAREST && !(out->h == in->h && out->w == in->w) &&
               nearest_is_integer(in->h, out->h, p->out_h, p->height_scale) &&
               nearest_is_integer(in->w, out->w, p->out_w, p->width_scale);
    }
    default: return 0;
    }
}

/*
 * Grids (see the top of the file): the growth wino_plan would copy onto,
 * for every float32 BLOCK16 value; UPRES_DNNL_CONV_ALG=direct, auto and
 * winograd-plain never grow, so they plan no grids either.
 */
static void dnnl_blob_pad(void *state, int c, int h, int w, int *ph, int *pw) {
    const dnnl_state_t *st = state;
    int gh, gw;
    (void)c;
    *ph = h, *pw = w;
    if (st->grids && (st->alg == ALG_RULE || st->alg == ALG_WINOGRAD) && wino_growth(h, w, &gh, &gw))
        *ph = h + gh, *pw = w + gw;
}

/* The layers that run as oneDNN primitives on float32 BLOCK16 tensors. */
static int dnnl_layer_padded(void *state, const nn_layer_t *l, const nn_tensor_t *in, int n_in,
                             const nn_tensor_t *out) {
    if (l->op == NN_OP_CONV)
        return in[0].layout != NN_LAYOUT_NHWC && out->layout == NN_LAYOUT_BLOCK16 &&
               dnnl_layer_bf16(state, l, in, n_in, out);
    if (!dnnl_layer_bf16(state, l, in, n_in, out) || !same_layout(in, n_in, NN_LAYOUT_BLOCK16) ||
        out->layout != NN_LAYOUT_BLOCK16 || out->dtype != NN_DTYPE_F32)
        return 0;
    for (int k = 0; k < n_in; k++)
        if (in[k].dtype != NN_DTYPE_F32)
            return 0;
    return 1;
}

static nn_layout_t dnnl_blob_layout(void *state, const nn_layer_t *producer, int c) {
    (void)state;
    if (producer->op == NN_OP_CONV || c >= 16)
        return NN_LAYOUT_BLOCK16;
    return NN_LAYOUT_PLANAR;
}

static int dnnl_layer_prepare(void *state, const nn_layer_t *layer, const nn_epilogue_t *epi,
                              const nn_tensor_t *in, int n_in, const nn_tensor_t *out, int n_out,
                              void **lstate, size_t *scratch_bytes, up_error_t *err) {
    dnnl_state_t *st = state;
    *lstate = NULL;
    *scratch_bytes = 0;
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
                            "dnnl backend: layer %s '%s' (line %d) cannot run here", layer->type, layer->name,
                            layer->line);
    }
    if (n_out != 1 || n_in < 1)
        return up_error_set(err, UP_ERR_UNSUPPORTED, layer->line,
                            "dnnl backend: layer %s '%s' (line %d) has %d inputs and %d outputs", layer->type,
                            layer->name, layer->line, n_in, n_out);
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
        if (s == dnnl_success && ls->out_dense)
            s = add_reorder(st, ls, &ls->out_dense_md, ls->out_dense, &ls->out_win_md, ls->out_win);
        /* the copies op_prepare made go behind the scratchpads */
        size_t off = round_up(ls->scratch_size, 4096);
        for (int i = 0; i < ls->n_binds; i++)
            if (ls->binds[i].size) {
                ls->binds[i].off = off;
                off += ls->binds[i].size;
                ls->scratch_size = off;
            }
        if (s == dnnl_unimplemented && any_bf16(in, n_in, &out[0], NULL)) {
            rc = up_error_set(err, UP_ERR_BACKEND, layer->line,
                              "dnnl backend: layer %s '%s' (line %d) has no bf16 primitive", layer->type,
                              layer->name, layer->line);
        } else if (s == dnnl_unimplemented) {
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
    int any_padded = nn_tensor_padded(&out[0]) || (epi && epi->sum && nn_tensor_padded(epi->sum));
    for (int k = 0; k < n_in; k++)
        any_padded |= nn_tensor_padded(&in[k]);
    if (rc == 0 && ls->fallback && (any_bf16(in, n_in, &out[0], epi) || any_padded))
        rc = up_error_set(err, UP_ERR_BACKEND, layer->line,
                          "dnnl backend: layer %s '%s' (line %d) runs in plain C, which has no %s",
                          layer->type, layer->name, layer->line, any_padded ? "padded grids" : "bf16");
    if (rc == 0 && ls->fallback && layer->op == NN_OP_CONV) {
        nn_conv_scratch_plan(&ls->conv_scratch, &layer->p.conv, &in[0], &out[0],
                             st->n_threads ? st->n_threads : omp_get_max_threads());
        ls->conv_scratch.buf = up_aligned_alloc(nn_conv_scratch_bytes(&ls->conv_scratch), 1);
        if (!ls->conv_scratch.buf)
            rc = up_error_set(err, UP_ERR_NOMEM, layer->line, "dnnl backend: no memory for layer '%s'",
                              layer->name);
        ls->own_bytes += nn_conv_scratch_bytes(&ls->conv_scratch);
    }
    if (rc == 0 && scratch_reserve(st, ls->scratch_size, scratch_bytes))
        rc = up_error_set(err, UP_ERR_NOMEM, layer->line,
                          "dnnl backend: cannot allocate %zu KB of scratch for layer '%s'",
                          ls->scratch_size >> 10, layer->name);
    if (rc) {
        lstate_free(ls);
        return rc;
    }
    if (*scratch_bytes)
        log_debug("dnnl: %s '%s' grows the shared scratch by %zu KB to %zu KB", layer->type, layer->name,
                  *scratch_bytes >> 10, st->scratch_size >> 10);
    /* what this layer holds: its share of the scratch, its own copies, its weights */
    *scratch_bytes += ls->own_bytes;
    if (ls->weights)
        *scratch_bytes += dnnl_memory_desc_get_size(&ls->weights->md);
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
    if (ls->fallback)
        return nn_op_run(layer, epi, &ls->conv_scratch, in, n_in, &out[0], err);
    dnnl_status_t s = dnnl_success;
    if (ls->n_binds && ls->epoch != st->epoch) {
        /* the scratch moved since this layer last ran */
        for (int i = 0; i < ls->n_binds && s == dnnl_success; i++)
            s = dnnl_memory_set_data_handle(ls->binds[i].mem, (char *)st->scratch + ls->binds[i].off);
        if (s != dnnl_success)
            return fail(err, layer, "binding scratch memory", s);
        ls->epoch = st->epoch;
    }
    if (ls->grown.on)
        grown_zero_margins(&ls->grown, st->scratch);
    for (int i = 0; i < ls->n_execs && s == dnnl_success; i++) {
        exec_t *e = &ls->execs[i];
        if (e->scratch_arg >= 0)
            e->args[e->scratch_arg].memory = st->scratch_mem;
        s = dnnl_primitive_execute(e->prim, st->stream, e->n_args, e->args);
    }
    if (s == dnnl_success)
        s = dnnl_stream_wait(st->stream);
    if (s != dnnl_success)
        return fail(err, layer, "execute", s);
    if (ls->zero_pad)
        nn_tensor_zero_margins(&out[0]); /* and the padded lanes */
    return 0;
}

static void dnnl_layer_release(void *state, void *lstate) {
    dnnl_state_t *st = state;
    if (!lstate)
        return;
    lstate_free(lstate);
    if (--st->n_live == 0)
        scratch_free(st); /* the plan is gone: the next one sizes its own */
}

const nn_backend_vtbl_t nn_backend_dnnl = {
    .name = "dnnl",
    .create = dnnl_create,
    .destroy = dnnl_destroy,
    .blob_layout = dnnl_blob_layout,
    .bf16_speed = dnnl_bf16_speed,
    .layer_bf16 = dnnl_layer_bf16,
    .blob_pad = dnnl_blob_pad,
    .layer_padded = dnnl_layer_padded,
    .layer_prepare = dnnl_layer_prepare,
    .layer_run = dnnl_layer_run,
    .layer_release = dnnl_layer_release,
};

#endif /* UPRES_HAVE_DNNL */
