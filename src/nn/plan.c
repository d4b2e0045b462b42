/*
 * plan.c - turns a model and an input shape into a runnable plan, and runs it.
 *
 * This is the executor behind nn_net_*: the parser (param.c, weights.c)
 * gives a graph, the backends compute layers; this file decides the order,
 * the shapes, what is fused, where every blob lives, and drives the run.
 *
 * DESIGN
 *
 * Planning happens once per input shape (a tiled image uses one shape for
 * every tile, see src/upscale), in these passes:
 *
 *   1. order   Kahn's topological sort over layers (cycles are an error).
 *   2. shapes  nn_layer_output_shapes() layer by layer.
 *   3. values  Split outputs are aliases of their input: every blob maps to
 *              a "value" (the blob that actually holds data).
 *   4. fusion  Conv -> PReLU and Conv(+PReLU) -> Eltwise SUM / BinaryOp ADD
 *              become one conv step with an nn_epilogue_t when the conv's
 *              value has no other reader; the fused layer's output value
 *              becomes the conv's output.
 *   5. layout  the backend picks each value's layout (the graph input is
 *              always planar). In bf16 (nn_net_set_precision) a BLOCK16
 *              value becomes a bf16 NHWC one when every step that writes
 *              or reads it runs on the backend's bf16 primitives
 *              (layer_bf16), or a float32 NHWC one when it is a residual
 *              sum; the graph input and output, and values touched by a
 *              layer that runs in plain C, stay float32 in their layout.
 *   5c. grids  the backend may ask for values stored on a grid larger than
 *              their image (tensor.h, Storage padding: oneDNN's Winograd
 *              wants 148x149 for a 148x148 image); a value keeps its grid
 *              only when every step writing or reading it takes padded
 *              tensors (layer_padded) and a conv's epilogue sum shares its
 *              output's grid; never the graph input or output.
 *   6. concat  a channel Concat whose inputs can sit side by side in one
 *              buffer becomes a view: its inputs are "placed" at channel
 *              offsets of a shared group buffer and write there directly.
 *              RRDB's dense blocks (x, x1..x4 concatenated four times) thus
 *              live in one 192-channel buffer with no copies.
 *   7. memory  each group gets a lifetime [first write, last read] in step
 *              numbers and an offset in one arena, packed greedily by size
 *              in bytes (largest first, lowest non-conflicting offset).
 *   8. prepare the backend prepares every remaining step with the final
 *              tensor pointers.
 *
 * A run copies the caller's input in, executes the steps, and copies the
 * output out to planar. Nothing is allocated during a run. Before each
 * step the run reads the net's abort flag (nn_net_set_abort) and stops
 * with UP_ERR_CANCELLED when it is set: a shutdown or a cancel waits for
 * one layer, not for a whole tile (seconds on big tiles), and the output
 * is only written once every step has run. Planning reads it too, before
 * preparing each step; a plan stopped half way is freed, not kept.
 *
 * Plan cache. A net keeps the plans of its recent input shapes (a folder
 * or a server sees many image sizes, each with its own tile shape), most
 * recent first, keyed by shape and precision: a hit costs nothing, a miss
 * plans again (the passes below, primitives, binding, and the first touch
 * of every page of a new arena: 14 to 40 ms a plan on 2 cores at small
 * shapes, more on a busy machine; docs/benchmarks.md). The limits are a count
 * and a byte budget over arena + backend bytes (nn_net_set_plan_cache);
 * room is made before a new arena is allocated, so that the net never
 * holds more than the budget plus the backend part of the plan being
 * built. The backend's shared scratch is counted by the plan that grew
 * it, and weights reordered for a plan by every plan using them (an over-
 * count, as they are shared): the budget errs on the safe side.
 *
 * Threads: a net is used by one thread at a time; the backends use OpenMP
 * with the net's thread count, set before every run.
 */
#include <assert.h>
#include <limits.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/xmalloc.h"
#include "nn/backend/backend.h"
#include "nn/model.h"
#include "nn/nn.h"
#include "nn/ops.h"
#include "nn/tensor.h"

typedef struct plan_step {
    const nn_layer_t *layer;
    nn_epilogue_t epi;
    nn_tensor_t epi_sum; /* storage for epi.sum */
    nn_tensor_t *in, *out;
    int n_in, n_out;
    void *lstate; /* backend's, released with the plan */
} plan_step_t;

typedef struct plan {
    int c, h, w;    /* input shape this plan is for */
    int bf16;       /* and the precision: 1 bf16 values, 0 float32 (nn_net_t.bf16 when built) */
    int oc, oh, ow; /* output shape */
    plan_step_t *steps;
    int n_steps;
    void *arena; /* owned */
    size_t arena_bytes;
    size_t scratch_bytes; /* what the backend keeps besides the arena */
    nn_tensor_t input, output;
} plan_t;

/* What a plan holds, as the cache counts it (bytes). */
static size_t plan_bytes(const plan_t *pl) { return pl->arena_bytes + pl->scratch_bytes; }

struct nn_net {
    const nn_model_t *model;
    const nn_backend_vtbl_t *be;
    void *be_state;
    int n_threads;
    int bf16;                /* 1: plan bf16 values (nn_net_set_precision) */
    const char *why;         /* why the net runs in its precision */
    const atomic_int *abort; /* borrowed; non-zero: stop before the next step; may be NULL */
    /* the plan cache: plans[0] is the one used last, plans[n_plans - 1] the next to go */
    plan_t *plans[NN_PLAN_CACHE_MAX]; /* owned */
    int n_plans;
    int max_plans;         /* 1..NN_PLAN_CACHE_MAX */
    size_t max_bytes;      /* budget for all kept plans (plan_bytes), 0 = none */
    size_t cached_bytes;   /* sum of plan_bytes over plans */
    nn_plan_stats_t stats; /* hits, misses, evictions */
};

/* ---- passes 1 and 2: order and shapes ---------------------------------- */

/*
 * Topological order of the layers into order[n_layers] and every blob's
 * shape into shapes[n_blobs]. Both arrays are caller-allocated.
 */
static int infer(const nn_model_t *m, int c, int h, int w, int *order, int (*shapes)[3], up_error_t *err) {
    int *pending = xcalloc((size_t)m->n_layers, sizeof *pending); /* unready inputs */
    int *ready = xmalloc((size_t)m->n_layers * sizeof *ready);
    int n_ready = 0, n_order = 0, rc = 0;

    for (int i = 0; i < m->n_layers; i++) {
        pending[i] = m->layers[i].n_in;
        if (pending[i] == 0)
            ready[n_ready++] = i;
    }
    /* Consumers are found by scanning; graphs have ~1000 layers and plans are rare. */
    int(*in_shapes)[3] = NULL;
    int max_in = 1;
    for (int i = 0; i < m->n_layers; i++)
        if (m->layers[i].n_in > max_in)
            max_in = m->layers[i].n_in;
    in_shapes = xmalloc((size_t)max_in * sizeof *in_shapes);

    /* Consumer lists in CSR form, so that the sort is linear. */
    int *n_cons = xcalloc((size_t)m->n_blobs + 1, sizeof *n_cons);
    for (int i = 0; i < m->n_layers; i++)
        for (int k = 0; k < m->layers[i].n_in; k++)
            n_cons[m->layers[i].in[k] + 1]++;
    for (int b = 0; b < m->n_blobs; b++)
        n_cons[b + 1] += n_cons[b];
    int *cons = xmalloc(((size_t)n_cons[m->n_blobs] + 1) * sizeof *cons);
    int *fill = xcalloc((size_t)m->n_blobs, sizeof *fill);
    for (int i = 0; i < m->n_layers; i++)
        for (int k = 0; k < m->layers[i].n_in; k++) {
            int b = m->layers[i].in[k];
            cons[n_cons[b] + fill[b]++] = i;
        }

    while (n_ready > 0) {
        int li = ready[--n_ready];
        const nn_layer_t *l = &m->layers[li];
        order[n_order++] = li;
        int out_shapes[64][3];
        int(*outs)[3] = l->n_out <= 64 ? out_shapes : xmalloc((size_t)l->n_out * sizeof *outs);
        if (l->op == NN_OP_INPUT) {
            for (int k = 0; k < l->n_out; k++) {
                outs[k][0] = c;
                outs[k][1] = h;
                outs[k][2] = w;
            }
        } else {
            for (int k = 0; k < l->n_in; k++)
                memcpy(in_shapes[k], shapes[l->in[k]], sizeof in_shapes[k]);
            rc = nn_layer_output_shapes(l, (const int(*)[3])in_shapes, l->n_in, outs, err);
        }
        if (rc == 0)
            for (int k = 0; k < l->n_out; k++) {
                int b = l->out[k];
                memcpy(shapes[b], outs[k], sizeof shapes[b]);
                for (int j = n_cons[b]; j < n_cons[b + 1]; j++)
                    if (--pending[cons[j]] == 0)
                        ready[n_ready++] = cons[j];
            }
        if (outs != out_shapes)
            free(outs);
        if (rc)
            goto done;
    }
    if (n_order != m->n_layers)
        rc = up_error_set(err, UP_ERR_FORMAT, 0,
                          "the graph has a cycle or an unreachable layer (%d of %d layers ordered)", n_order,
                          m->n_layers);
done:
    free(pending);
    free(ready);
    free(in_shapes);
    free(n_cons);
    free(cons);
    free(fill);
    return rc;
}

int nn_model_output_shape(const nn_model_t *model, int c, int h, int w, int *oc, int *oh, int *ow,
                          up_error_t *err) {
    if (c <= 0 || h <= 0 || w <= 0)
        return up_error_set(err, UP_ERR_INVALID, 0, "input shape %dx%dx%d is empty", c, h, w);
    int *order = xmalloc((size_t)model->n_layers * sizeof *order);
    int(*shapes)[3] = xcalloc((size_t)model->n_blobs, sizeof *shapes);
    int rc = infer(model, c, h, w, order, shapes, err);
    if (rc == 0) {
        *oc = shapes[model->output_blob][0];
        *oh = shapes[model->output_blob][1];
        *ow = shapes[model->output_blob][2];
    }
    free(order);
    free(shapes);
    return rc;
}

double nn_model_conv_flops(const nn_model_t *model, int c, int h, int w) {
    int *order = xmalloc((size_t)model->n_layers * sizeof *order);
    int(*shapes)[3] = xcalloc((size_t)model->n_blobs, sizeof *shapes);
    double flops = -1;
    if (infer(model, c, h, w, order, shapes, NULL) == 0) {
        flops = 0;
        for (int i = 0; i < model->n_layers; i++) {
            const nn_layer_t *l = &model->layers[i];
            if (l->op != NN_OP_CONV)
                continue;
            const int *o = shapes[l->out[0]];
            flops += 2.0 * l->p.conv.kernel_w * l->p.conv.kernel_h * l->p.conv.n_in * l->p.conv.n_out *
                     (double)o[1] * (double)o[2];
        }
    }
    free(order);
    free(shapes);
    return flops;
}

/* ---- passes 3 to 7: values, fusion, layout, concat views, memory ------- */

/* Where a value's data lives: channels [off, off + c) of group buffer g. */
typedef struct value {
    int c, h, w;
    nn_layout_t layout;
    nn_dtype_t dtype;
    int ph, pw;  /* storage grid, 0: none (see tensor.h) */
    int group;   /* index into groups, -1 before placement */
    int off;     /* channel offset in the group */
    int n_reads; /* non-Split layers (and the graph output) reading it */
    int is_view; /* a Concat output aliasing its inputs */
} value_t;

typedef struct group {
    int extent; /* channels (logical) */
    int h, w;
    nn_layout_t layout;
    nn_dtype_t dtype;
    int ph, pw;      /* storage grid, 0: none */
    int first, last; /* lifetime in step positions, inclusive */
    size_t bytes;    /* buffer size, a multiple of 64 */
    size_t offset;   /* in the arena, bytes */
} group_t;

typedef struct planner {
    const nn_model_t *m;
    int *value_of;    /* blob -> value blob index (Split outputs map to their root) */
    value_t *values;  /* indexed by blob; only entries that are values are used */
    int *fused_into;  /* layer -> index of the conv layer that absorbed it, or -1 */
    int *epi_prelu;   /* conv layer -> PReLU layer fused into it, or -1 */
    int *epi_other;   /* conv layer -> value added by a fused Eltwise/BinaryOp, or -1 */
    float *epi_scale; /* conv layer -> the conv's coefficient in that sum */
    int *conv_out;    /* conv layer -> value it finally writes */
    group_t *groups;
    int n_groups;
} planner_t;

static int root(const planner_t *p, int blob) { return p->value_of[blob]; }

/* The single non-Split reader of value v, or -1 when it has none or several. */
static int sole_reader(const planner_t *p, int v) {
    if (p->values[v].n_reads != 1)
        return -1;
    for (int i = 0; i < p->m->n_layers; i++) {
        const nn_layer_t *l = &p->m->layers[i];
        if (l->op == NN_OP_SPLIT || p->fused_into[i] >= 0)
            continue;
        for (int k = 0; k < l->n_in; k++)
            if (root(p, l->in[k]) == v)
                return i;
    }
    return -1;
}

static void fuse(planner_t *p, const int *pos) {
    const nn_model_t *m = p->m;
    for (int i = 0; i < m->n_layers; i++) {
        const nn_layer_t *l = &m->layers[i];
        if (l->op != NN_OP_CONV)
            continue;
        int v = root(p, l->out[0]);
        int r = sole_reader(p, v);
        if (r >= 0 && m->layers[r].op == NN_OP_PRELU) {
            p->epi_prelu[i] = r;
            p->fused_into[r] = i;
            v = root(p, m->layers[r].out[0]);
            r = sole_reader(p, v);
        }
        if (r < 0 || m->layers[r].n_in != 2)
            goto keep;
        const nn_layer_t *s = &m->layers[r];
        float scale = 1.0f, other_scale = 1.0f;
        int mine = root(p, s->in[0]) == v ? 0 : 1;
        if (s->op == NN_OP_ELTWISE && s->p.eltwise.op == NN_ELTWISE_SUM) {
            if (s->p.eltwise.n_coeffs == 2) {
                scale = s->p.eltwise.coeffs[mine];
                other_scale = s->p.eltwise.coeffs[1 - mine];
            }
        } else if (!(s->op == NN_OP_BINARY && s->p.binary.op == NN_BINARY_ADD && !s->p.binary.with_scalar)) {
            goto keep;
        }
        int other = root(p, s->in[1 - mine]);
        /* the other summand must be ready before the conv runs, and distinct */
        if (other_scale != 1.0f || other == v || pos[m->blobs[other].producer] > pos[i])
            goto keep;
        p->epi_other[i] = other;
        p->epi_scale[i] = scale;
        p->fused_into[r] = i;
        v = root(p, s->out[0]);
    keep:
        p->conv_out[i] = v;
    }
}

/* Try to make Concat layer li a view; returns 1 on success. */
static int concat_view(planner_t *p, int li) {
    const nn_layer_t *l = &p->m->layers[li];
    value_t *out = &p->values[root(p, l->out[0])];
    int align = nn_layout_align(out->layout);
    int g = -1, base = INT_MIN, prefix = 0;
    if (out->layout == NN_LAYOUT_NHWC)
        return 0; /* a channel range of NHWC is not a tensor */

    /* Check: one layout, aligned sizes, placed inputs agree on a base offset. */
    for (int k = 0; k < l->n_in; k++) {
        int v = root(p, l->in[k]);
        value_t *x = &p->values[v];
        if (x->layout != out->layout || (k < l->n_in - 1 && x->c % align) || x->ph != out->ph ||
            x->pw != out->pw)
            return 0;
        if (v == p->m->input_blob)
            return 0;
        for (int j = 0; j < k; j++)
            if (root(p, l->in[j]) == v)
                return 0;
        if (x->group >= 0) {
            if (g >= 0 && x->group != g)
                return 0;
            g = x->group;
            if (base != INT_MIN && x->off - prefix != base)
                return 0;
            base = x->off - prefix;
        }
        prefix += x->c;
    }
    if (g < 0) {
        base = 0;
    } else if (base < 0) {
        return 0;
    }
    /* Unplaced inputs must not overlap anything already placed in g. */
    prefix = 0;
    for (int k = 0; k < l->n_in; k++) {
        value_t *x = &p->values[root(p, l->in[k])];
        if (x->group < 0 && g >= 0) {
            int lo = base + prefix, hi = lo + x->c;
            for (int b = 0; b < p->m->n_blobs; b++) {
                value_t *y = &p->values[b];
                if (root(p, b) != b || y->group != g || y->is_view)
                    continue;
                if (lo < y->off + y->c && y->off < hi)
                    return 0;
            }
        }
        prefix += x->c;
    }
    if (g < 0) {
        g = p->n_groups++;
        p->groups[g] = (group_t){
            .extent = 0, .h = out->h, .w = out->w, .layout = out->layout, .ph = out->ph, .pw = out->pw};
    }
    prefix = 0;
    for (int k = 0; k < l->n_in; k++) {
        value_t *x = &p->values[root(p, l->in[k])];
        if (x->group < 0) {
            x->group = g;
            x->off = base + prefix;
        }
        prefix += x->c;
    }
    out->group = g;
    out->off = base;
    out->is_view = 1;
    if (base + prefix > p->groups[g].extent)
        p->groups[g].extent = base + prefix;
    return 1;
}

static void touch(group_t *g, int step) {
    if (step < g->first)
        g->first = step;
    if (step > g->last)
        g->last = step;
}

typedef struct span {
    size_t lo, hi;
} span_t;

static int span_cmp(const void *a, const void *b) {
    const span_t *x = a, *y = b;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

static int group_size_cmp(const void *a, const void *b, void *arg) {
    const group_t *g = arg;
    size_t x = g[*(const int *)a].bytes, y = g[*(const int *)b].bytes;
    return x > y ? -1 : x < y; /* largest first */
}

/*
 * Greedy-by-size packing of groups into one arena: each group, largest
 * first, goes at the lowest offset that no already placed group with an
 * overlapping lifetime occupies. Returns the arena size in bytes.
 */
static size_t pack(group_t *groups, int n) {
    int *idx = xmalloc((size_t)n * sizeof *idx);
    span_t *busy = xmalloc((size_t)n * sizeof *busy);
    size_t total = 0;
    for (int i = 0; i < n; i++)
        idx[i] = i;
    qsort_r(idx, (size_t)n, sizeof *idx, group_size_cmp, groups);
    for (int i = 0; i < n && groups[idx[i]].bytes; i++) {
        group_t *g = &groups[idx[i]];
        int n_busy = 0;
        for (int j = 0; j < i; j++) {
            group_t *o = &groups[idx[j]];
            if (g->first <= o->last && o->first <= g->last)
                busy[n_busy++] = (span_t){o->offset, o->offset + o->bytes};
        }
        qsort(busy, (size_t)n_busy, sizeof *busy, span_cmp);
        size_t off = 0;
        for (int j = 0; j < n_busy && busy[j].lo < off + g->bytes; j++)
            if (busy[j].hi > off)
                off = busy[j].hi;
        g->offset = off;
        if (off + g->bytes > total)
            total = off + g->bytes;
    }
    free(idx);
    free(busy);
    return total;
}

static void plan_free(nn_net_t *net, plan_t *pl) {
    if (!pl)
        return;
    for (int i = 0; i < pl->n_steps; i++) {
        if (pl->steps[i].lstate)
            net->be->layer_release(net->be_state, pl->steps[i].lstate);
        free(pl->steps[i].in);
        free(pl->steps[i].out);
    }
    free(pl->steps);
    up_aligned_free(pl->arena);
    free(pl);
}

/* ---- the plan cache ------------------------------------------------------ */

/* Drop the least recently used plan: for the limits (evicted, counted and logged) or with the net. */
static void cache_drop_last(nn_net_t *net, int evicted) {
    assert(net->n_plans > 0);
    plan_t *pl = net->plans[--net->n_plans];
    net->plans[net->n_plans] = NULL;
    assert(net->cached_bytes >= plan_bytes(pl));
    net->cached_bytes -= plan_bytes(pl);
    if (evicted) {
        net->stats.evictions++;
        log_debug("plan cache: dropped %dx%dx%d %s (%zu MB)", pl->c, pl->h, pl->w, pl->bf16 ? "bf16" : "fp32",
                  plan_bytes(pl) >> 20);
    }
    plan_free(net, pl);
}

/* Drop the oldest plans while over the count or the budget; the newest always stays. */
static void cache_trim(nn_net_t *net) {
    while (net->n_plans > 1 &&
           (net->n_plans > net->max_plans || (net->max_bytes && net->cached_bytes > net->max_bytes)))
        cache_drop_last(net, 1);
}

/*
 * Before a new plan of about need bytes is allocated: drop old plans until
 * one more fits the count and need fits the budget with the rest, so that
 * the memory held stays within the budget while the new plan is built.
 */
static void cache_make_room(nn_net_t *net, size_t need) {
    while (net->n_plans > 0 && (net->n_plans + 1 > net->max_plans ||
                                (net->max_bytes && net->cached_bytes + need > net->max_bytes)))
        cache_drop_last(net, 1);
}

/* Keep pl (new, taken over) as the most recent plan, then trim the others to the limits. */
static void cache_insert(nn_net_t *net, plan_t *pl) {
    assert(net->n_plans < NN_PLAN_CACHE_MAX);
    memmove(net->plans + 1, net->plans, (size_t)net->n_plans * sizeof *net->plans);
    net->plans[0] = pl;
    net->n_plans++;
    net->cached_bytes += plan_bytes(pl);
    cache_trim(net); /* the backend's part is only known once prepared */
}

/* The kept plan for this shape in the net's precision, made the most recent; NULL if none. */
static plan_t *cache_find(nn_net_t *net, int c, int h, int w) {
    for (int i = 0; i < net->n_plans; i++) {
        plan_t *pl = net->plans[i];
        if (pl->c == c && pl->h == h && pl->w == w && pl->bf16 == net->bf16) {
            memmove(net->plans + 1, net->plans, (size_t)i * sizeof *net->plans);
            net->plans[0] = pl;
            return pl;
        }
    }
    return NULL;
}

static nn_tensor_t value_tensor(const planner_t *p, const plan_t *pl, int v) {
    const value_t *x = &p->values[v];
    const group_t *g = &p->groups[x->group];
    nn_tensor_t t = {.data = (float *)(void *)((char *)pl->arena + g->offset),
                     .c = g->extent,
                     .h = x->h,
                     .w = x->w,
                     .layout = x->layout,
                     .dtype = x->dtype,
                     .ph = g->ph,
                     .pw = g->pw};
    return nn_tensor_channels(&t, x->off, x->c);
}

/* The shape, layout and grid of value v as a tensor with no data (for layer_bf16, layer_padded). */
static nn_tensor_t shape_tensor(const planner_t *p, int v) {
    const value_t *x = &p->values[v];
    return (nn_tensor_t){.data = NULL,
                         .c = x->c,
                         .h = x->h,
                         .w = x->w,
                         .layout = x->layout,
                         .dtype = x->dtype,
                         .ph = x->ph,
                         .pw = x->pw};
}

/*
 * Pass 5b: the BLOCK16 values that every writer and reader can take in
 * bf16 become NHWC, bf16 but for residual sums (below). Runs before the concat views, so a Concat counts
 * as a step here; one whose inputs stay float32 BLOCK16 still becomes a
 * view afterwards.
 */
static void choose_bf16(const nn_net_t *net, planner_t *p) {
    const nn_model_t *m = p->m;
    char *ok = xcalloc((size_t)m->n_blobs, 1);
    int in_v = root(p, m->input_blob), out_v = root(p, m->output_blob), n_bf16 = 0;
    for (int b = 0; b < m->n_blobs; b++)
        ok[b] = root(p, b) == b && b != in_v && b != out_v && p->values[b].layout == NN_LAYOUT_BLOCK16;
    nn_tensor_t ins[64];
    for (int i = 0; i < m->n_layers; i++) {
        const nn_layer_t *l = &m->layers[i];
        if (l->op == NN_OP_INPUT || l->op == NN_OP_SPLIT || p->fused_into[i] >= 0)
            continue;
        int v_out = l->op == NN_OP_CONV ? p->conv_out[i] : root(p, l->out[0]);
        int yes = l->n_out == 1 && l->n_in <= 64;
        if (yes) {
            for (int k = 0; k < l->n_in; k++)
                ins[k] = shape_tensor(p, root(p, l->in[k]));
            nn_tensor_t o = shape_tensor(p, v_out);
            yes = net->be->layer_bf16(net->be_state, l, ins, l->n_in, &o);
        }
        if (yes)
            continue;
        for (int k = 0; k < l->n_in; k++)
            ok[root(p, l->in[k])] = 0;
        for (int k = 0; k < l->n_out; k++)
            ok[l->op == NN_OP_CONV ? p->conv_out[i] : root(p, l->out[k])] = 0;
        if (l->op == NN_OP_CONV && p->epi_other[i] >= 0)
            ok[p->epi_other[i]] = 0;
    }
    /*
     * Residual sums (values a conv's epilogue sum or an Eltwise / BinaryOp
     * sum writes) stay float32, in NHWC: RRDB's trunk adds 0.2 x a block's
     * output to itself 92 times, and rounding it to bf16 each time costs
     * x4plus 3 dB (53.4 dB against its fp32 output with a bf16 trunk, 56.2
     * dB with a float32 one, 128x128 astronaut; 0.47 s against 0.58 s).
     */
    char *acc = xcalloc((size_t)m->n_blobs, 1);
    for (int i = 0; i < m->n_layers; i++) {
        const nn_layer_t *l = &m->layers[i];
        if (p->fused_into[i] >= 0 || l->op == NN_OP_SPLIT)
            continue;
        if (l->op == NN_OP_CONV && p->epi_other[i] >= 0)
            acc[p->conv_out[i]] = 1;
        if ((l->op == NN_OP_ELTWISE && l->p.eltwise.op == NN_ELTWISE_SUM) ||
            (l->op == NN_OP_BINARY && l->p.binary.op == NN_BINARY_ADD))
            acc[root(p, l->out[0])] = 1;
    }
    for (int b = 0; b < m->n_blobs; b++)
        if (ok[b]) {
            p->values[b].dtype = acc[b] ? NN_DTYPE_F32 : NN_DTYPE_BF16;
            p->values[b].layout = NN_LAYOUT_NHWC;
            n_bf16++;
        }
    free(acc);
    log_debug("plan: %d values in NHWC for bf16 primitives", n_bf16);
    free(ok);
}

static void unpad(value_t *x, int *changed) {
    if (x->ph || x->pw)
        *changed = 1;
    x->ph = x->pw = 0;
}

/*
 * Pass 5c: storage padding (tensor.h). Every float32 BLOCK16 value but the
 * graph input and output gets the grid the backend asks for; then values
 * touched by a step that cannot take padding lose it, and so does a conv's
 * epilogue sum whose grid is not its output's (and that output), until
 * nothing changes. Runs before the concat views, which need their inputs
 * on one grid.
 */
static void choose_padding(const nn_net_t *net, planner_t *p) {
    const nn_model_t *m = p->m;
    int in_v = root(p, m->input_blob), out_v = root(p, m->output_blob), n_padded = 0, changed = 1;
    if (!net->be->blob_pad || !net->be->layer_padded)
        return;
    for (int b = 0; b < m->n_blobs; b++) {
        value_t *x = &p->values[b];
        if (root(p, b) != b || b == in_v || b == out_v || x->layout != NN_LAYOUT_BLOCK16 ||
            x->dtype != NN_DTYPE_F32)
            continue;
        int ph = x->h, pw = x->w;
        net->be->blob_pad(net->be_state, x->c, x->h, x->w, &ph, &pw);
        if (ph > x->h || pw > x->w)
            x->ph = ph, x->pw = pw;
    }
    nn_tensor_t ins[64];
    while (changed) {
        changed = 0;
        for (int i = 0; i < m->n_layers; i++) {
            const nn_layer_t *l = &m->layers[i];
            if (l->op == NN_OP_INPUT || l->op == NN_OP_SPLIT || p->fused_into[i] >= 0)
                continue;
            int v_out = l->op == NN_OP_CONV ? p->conv_out[i] : root(p, l->out[0]);
            int sum = l->op == NN_OP_CONV ? p->epi_other[i] : -1;
            int yes = l->n_out == 1 && l->n_in <= 64;
            if (yes) {
                for (int k = 0; k < l->n_in; k++)
                    ins[k] = shape_tensor(p, root(p, l->in[k]));
                nn_tensor_t o = shape_tensor(p, v_out);
                yes = net->be->layer_padded(net->be_state, l, ins, l->n_in, &o);
            }
            if (yes && sum >= 0)
                yes = p->values[sum].ph == p->values[v_out].ph && p->values[sum].pw == p->values[v_out].pw;
            if (yes)
                continue;
            for (int k = 0; k < l->n_in; k++)
                unpad(&p->values[root(p, l->in[k])], &changed);
            for (int k = 0; k < l->n_out; k++)
                unpad(&p->values[l->op == NN_OP_CONV ? p->conv_out[i] : root(p, l->out[k])], &changed);
            if (sum >= 0)
                unpad(&p->values[sum], &changed);
        }
    }
    for (int b = 0; b < m->n_blobs; b++)
        n_padded += root(p, b) == b && (p->values[b].ph || p->values[b].pw);
    log_debug("plan: %d values on a padded grid", n_padded);
}

static int plan_build(nn_net_t *net, int c, int h, int w, plan_t **out, up_error_t *err) {
    const nn_model_t *m = net->model;
    int nl = m->n_layers, nb = m->n_blobs, rc;
    int *order = xmalloc((size_t)nl * sizeof *order);
    int *pos = xmalloc((size_t)nl * sizeof *pos);
    int(*shapes)[3] = xcalloc((size_t)nb, sizeof *shapes);
    planner_t p = {.m = m};
    plan_t *pl = xcalloc(1, sizeof *pl);

    p.value_of = xmalloc((size_t)nb * sizeof *p.value_of);
    p.values = xcalloc((size_t)nb, sizeof *p.values);
    p.fused_into = xmalloc((size_t)nl * sizeof *p.fused_into);
    p.epi_prelu = xmalloc((size_t)nl * sizeof *p.epi_prelu);
    p.epi_other = xmalloc((size_t)nl * sizeof *p.epi_other);
    p.epi_scale = xmalloc((size_t)nl * sizeof *p.epi_scale);
    p.conv_out = xmalloc((size_t)nl * sizeof *p.conv_out);
    p.groups = xcalloc((size_t)nb, sizeof *p.groups);

    rc = infer(m, c, h, w, order, shapes, err);
    if (rc)
        goto fail;
    for (int i = 0; i < nl; i++) {
        pos[order[i]] = i;
        p.fused_into[i] = p.epi_prelu[i] = p.epi_other[i] = p.conv_out[i] = -1;
        p.epi_scale[i] = 1.0f;
    }

    /* 3. values: resolve Split aliases in topological order */
    for (int i = 0; i < nl; i++) {
        const nn_layer_t *l = &m->layers[order[i]];
        for (int k = 0; k < l->n_out; k++)
            p.value_of[l->out[k]] = l->op == NN_OP_SPLIT ? p.value_of[l->in[0]] : l->out[k];
    }
    for (int b = 0; b < nb; b++) {
        p.values[b] = (value_t){.c = shapes[b][0], .h = shapes[b][1], .w = shapes[b][2], .group = -1};
    }
    for (int i = 0; i < nl; i++) {
        const nn_layer_t *l = &m->layers[i];
        if (l->op != NN_OP_SPLIT)
            for (int k = 0; k < l->n_in; k++)
                p.values[root(&p, l->in[k])].n_reads++;
    }
    p.values[root(&p, m->output_blob)].n_reads++;

    /* 4. fusion */
    fuse(&p, pos);

    /* 5. layouts, chosen by the backend from each value's producer */
    for (int b = 0; b < nb; b++) {
        if (root(&p, b) != b)
            continue;
        const nn_layer_t *prod = &m->layers[m->blobs[b].producer];
        p.values[b].layout = prod->op == NN_OP_INPUT
                                 ? NN_LAYOUT_PLANAR
                                 : net->be->blob_layout(net->be_state, prod, p.values[b].c);
    }
    /* a fused conv writes the fused layer's value: it takes the conv's layout */
    for (int i = 0; i < nl; i++)
        if (p.conv_out[i] >= 0)
            p.values[p.conv_out[i]].layout =
                net->be->blob_layout(net->be_state, &m->layers[i], p.values[p.conv_out[i]].c);
    if (net->bf16)
        choose_bf16(net, &p);
    choose_padding(net, &p);

    /* 6. concat views, in topological order so that chains extend groups */
    int *is_view = xcalloc((size_t)nl, sizeof *is_view);
    for (int i = 0; i < nl; i++) {
        int li = order[i];
        if (m->layers[li].op == NN_OP_CONCAT && m->layers[li].p.concat.axis == 0)
            is_view[li] = concat_view(&p, li);
    }
    /* every other value is a group of its own */
    for (int b = 0; b < nb; b++) {
        value_t *x = &p.values[b];
        if (root(&p, b) != b || x->group >= 0)
            continue;
        x->group = p.n_groups++;
        x->off = 0;
        p.groups[x->group] = (group_t){.extent = x->c,
                                       .h = x->h,
                                       .w = x->w,
                                       .layout = x->layout,
                                       .dtype = x->dtype,
                                       .ph = x->ph,
                                       .pw = x->pw};
    }

    /* 7. steps and lifetimes */
    pl->steps = xcalloc((size_t)nl, sizeof *pl->steps);
    for (int g = 0; g < p.n_groups; g++) {
        p.groups[g].first = INT_MAX;
        p.groups[g].last = -1;
    }
    /* the input is written before step 0, the output read after the last */
    touch(&p.groups[p.values[root(&p, m->input_blob)].group], 0);
    for (int i = 0; i < nl; i++) {
        int li = order[i];
        const nn_layer_t *l = &m->layers[li];
        if (l->op == NN_OP_INPUT || l->op == NN_OP_SPLIT || p.fused_into[li] >= 0 || is_view[li])
            continue;
        plan_step_t *s = &pl->steps[pl->n_steps];
        int at = pl->n_steps++;
        s->layer = l;
        s->epi = (nn_epilogue_t){.prelu = NULL, .scale = 1.0f, .sum = NULL};
        s->n_in = l->n_in;
        s->n_out = l->n_out;
        s->in = xcalloc((size_t)l->n_in, sizeof *s->in);
        s->out = xcalloc((size_t)l->n_out, sizeof *s->out);
        for (int k = 0; k < l->n_in; k++)
            touch(&p.groups[p.values[root(&p, l->in[k])].group], at);
        for (int k = 0; k < l->n_out; k++) {
            int v = l->op == NN_OP_CONV ? p.conv_out[li] : root(&p, l->out[k]);
            touch(&p.groups[p.values[v].group], at);
        }
        if (l->op == NN_OP_CONV && p.epi_other[li] >= 0)
            touch(&p.groups[p.values[p.epi_other[li]].group], at);
    }
    int n_steps = pl->n_steps;
    touch(&p.groups[p.values[root(&p, m->output_blob)].group], n_steps);

    for (int g = 0; g < p.n_groups; g++) {
        group_t *gr = &p.groups[g];
        /* values nobody writes (outputs of fused layers) take no memory */
        size_t bytes = (size_t)nn_layout_channels(gr->layout, gr->extent) *
                       (size_t)(gr->ph ? gr->ph : gr->h) * (size_t)(gr->pw ? gr->pw : gr->w) *
                       nn_dtype_size(gr->dtype);
        gr->bytes = gr->last < 0 ? 0 : (bytes + 63) / 64 * 64;
    }
    pl->arena_bytes = pack(p.groups, p.n_groups);
    cache_make_room(net, pl->arena_bytes);
    pl->arena = up_aligned_alloc(pl->arena_bytes ? pl->arena_bytes : 1, 1);
    if (!pl->arena) {
        rc = up_error_set(err, UP_ERR_NOMEM, 0, "cannot allocate %zu MB for a %dx%d input",
                          pl->arena_bytes >> 20, w, h);
        free(is_view);
        goto fail;
    }
    free(is_view);

    /* 8. bind tensors and prepare */
    pl->c = c, pl->h = h, pl->w = w;
    pl->bf16 = net->bf16;
    pl->oc = shapes[m->output_blob][0];
    pl->oh = shapes[m->output_blob][1];
    pl->ow = shapes[m->output_blob][2];
    pl->input = value_tensor(&p, pl, root(&p, m->input_blob));
    pl->output = value_tensor(&p, pl, root(&p, m->output_blob));
    for (int i = 0; i < n_steps; i++) {
        plan_step_t *s = &pl->steps[i];
        const nn_layer_t *l = s->layer;
        int li = (int)(l - m->layers);
        /* preparing (oneDNN primitives, weight reorders) takes seconds on a busy machine */
        if (net->abort && atomic_load_explicit(net->abort, memory_order_relaxed)) {
            rc = up_error_set(err, UP_ERR_CANCELLED, 0, "stopped while planning (step %d of %d)", i, n_steps);
            goto fail;
        }
        for (int k = 0; k < l->n_in; k++)
            s->in[k] = value_tensor(&p, pl, root(&p, l->in[k]));
        for (int k = 0; k < l->n_out; k++)
            s->out[k] = value_tensor(&p, pl, l->op == NN_OP_CONV ? p.conv_out[li] : root(&p, l->out[k]));
        if (l->op == NN_OP_CONV) {
            if (p.epi_prelu[li] >= 0)
                s->epi.prelu = &m->layers[p.epi_prelu[li]].p.prelu;
            if (p.epi_other[li] >= 0) {
                s->epi.scale = p.epi_scale[li];
                s->epi_sum = value_tensor(&p, pl, p.epi_other[li]);
                s->epi.sum = &s->epi_sum;
            }
        }
        size_t scratch = 0;
        rc = net->be->layer_prepare(net->be_state, l, l->op == NN_OP_CONV ? &s->epi : NULL, s->in, s->n_in,
                                    s->out, s->n_out, &s->lstate, &scratch, err);
        if (rc)
            goto fail;
        pl->scratch_bytes += scratch;
    }
    log_debug("plan %s %dx%dx%d: %d steps, %d buffers, arena %zu MB, backend scratch %zu MB", net->be->name,
              c, h, w, n_steps, p.n_groups, pl->arena_bytes >> 20, pl->scratch_bytes >> 20);
    *out = pl;
    pl = NULL;
fail:
    plan_free(net, pl);
    free(order);
    free(pos);
    free(shapes);
    free(p.value_of);
    free(p.values);
    free(p.fused_into);
    free(p.epi_prelu);
    free(p.epi_other);
    free(p.epi_scale);
    free(p.conv_out);
    free(p.groups);
    return rc;
}

/* ---- the net ------------------------------------------------------------ */

static const nn_backend_vtbl_t *backend_of(nn_backend_kind_t kind) {
    switch (kind) {
    case NN_BACKEND_REF: return &nn_backend_ref;
#ifdef UPRES_HAVE_DNNL
    case NN_BACKEND_DNNL: return &nn_backend_dnnl;
#endif
    default: return NULL;
    }
}

int nn_net_new(const nn_model_t *model, nn_backend_kind_t kind, int n_threads, nn_net_t **out,
               up_error_t *err) {
    const nn_backend_vtbl_t *be = backend_of(kind);
    if (!be)
        return up_error_set(err, UP_ERR_UNSUPPORTED, 0, "backend %d is not built in", (int)kind);
    nn_net_t *net = xcalloc(1, sizeof *net);
    net->model = model;
    net->be = be;
    net->n_threads = n_threads > 0 ? n_threads : omp_get_num_procs();
    net->why = "the default";
    net->max_plans = NN_PLAN_CACHE_DEFAULT;
    net->max_bytes = NN_PLAN_CACHE_DEFAULT_BYTES;
    omp_set_num_threads(net->n_threads);
    int rc = be->create(model, net->n_threads, &net->be_state, err);
    if (rc) {
        free(net);
        return rc;
    }
    *out = net;
    return 0;
}

const char *nn_precision_name(nn_precision_t p) {
    switch (p) {
    case NN_PRECISION_AUTO: return "auto";
    case NN_PRECISION_FP32: return "fp32";
    case NN_PRECISION_BF16: return "bf16";
    }
    return "?";
}

int nn_precision_parse(const char *name, nn_precision_t *out) {
    for (int p = NN_PRECISION_AUTO; p <= NN_PRECISION_BF16; p++)
        if (name && strcmp(name, nn_precision_name((nn_precision_t)p)) == 0) {
            *out = (nn_precision_t)p;
            return 0;
        }
    return UP_ERR_INVALID;
}

int nn_net_set_precision(nn_net_t *net, nn_precision_t want, up_error_t *err) {
    const char *why = "the backend has no bf16";
    int speed = net->be->bf16_speed ? net->be->bf16_speed(net->be_state, &why) : 0;
    int bf16;
    switch (want) {
    case NN_PRECISION_FP32: bf16 = 0, why = "asked for"; break;
    case NN_PRECISION_BF16:
        if (speed == 0)
            return up_error_set(err, UP_ERR_UNSUPPORTED, 0, "bf16 is not available: %s", why);
        bf16 = 1;
        break;
    case NN_PRECISION_AUTO: bf16 = speed == 2; break;
    default: return up_error_set(err, UP_ERR_INVALID, 0, "unknown precision %d", (int)want);
    }
    net->bf16 = bf16; /* plans of the other precision stay cached: the key has it */
    net->why = why;
    return 0;
}

nn_precision_t nn_net_precision(const nn_net_t *net, const char **why) {
    if (why)
        *why = net->why;
    return net->bf16 ? NN_PRECISION_BF16 : NN_PRECISION_FP32;
}

void nn_net_free(nn_net_t *net) {
    if (!net)
        return;
    while (net->n_plans > 0)
        cache_drop_last(net, 0);
    net->be->destroy(net->be_state);
    free(net);
}

/* Make net->plans[0] the plan for c x h x w in the net's precision: from the cache, or built now. */
static int ensure_plan(nn_net_t *net, int c, int h, int w, up_error_t *err) {
    if (cache_find(net, c, h, w)) {
        net->stats.hits++;
        return 0;
    }
    net->stats.misses++;
    omp_set_num_threads(net->n_threads);
    plan_t *pl = NULL;
    int rc = plan_build(net, c, h, w, &pl, err);
    if (rc == 0)
        cache_insert(net, pl);
    return rc;
}

int nn_net_plan_size(nn_net_t *net, int c, int h, int w, size_t *bytes, up_error_t *err) {
    int rc = ensure_plan(net, c, h, w, err);
    if (rc == 0)
        *bytes = plan_bytes(net->plans[0]);
    return rc;
}

void nn_net_set_plan_cache(nn_net_t *net, int max_plans, size_t max_bytes) {
    net->max_plans = max_plans < 1 ? 1 : max_plans > NN_PLAN_CACHE_MAX ? NN_PLAN_CACHE_MAX : max_plans;
    net->max_bytes = max_bytes;
    cache_trim(net);
}

void nn_net_plan_stats(const nn_net_t *net, nn_plan_stats_t *out) {
    *out = net->stats;
    out->n_plans = net->n_plans;
    out->bytes = net->cached_bytes;
}

void nn_net_set_abort(nn_net_t *net, const atomic_int *flag) { net->abort = flag; }

int nn_net_run(nn_net_t *net, const float *in, int c, int h, int w, float *out, up_error_t *err) {
    int rc = ensure_plan(net, c, h, w, err);
    if (rc)
        return rc;
    plan_t *pl = net->plans[0];
    omp_set_num_threads(net->n_threads);
    nn_tensor_t src = {.data = (float *)in, .c = c, .h = h, .w = w, .layout = NN_LAYOUT_PLANAR};
    nn_tensor_copy(&pl->input, &src);
    const atomic_int *flag = net->abort;
    for (int i = 0; i < pl->n_steps; i++) {
        plan_step_t *s = &pl->steps[i];
        /* relaxed: the flag orders nothing, it only has to be seen soon */
        if (flag && atomic_load_explicit(flag, memory_order_relaxed))
            return up_error_set(err, UP_ERR_CANCELLED, 0, "stopped before step %d of %d (%s)", i, pl->n_steps,
                                s->layer->name);
        rc = net->be->layer_run(net->be_state, s->lstate, s->layer,
                                s->layer->op == NN_OP_CONV ? &s->epi : NULL, s->in, s->n_in, s->out, s->n_out,
                                err);
        if (rc)
            return rc;
    }
    nn_tensor_t dst = {.data = out, .c = pl->oc, .h = pl->oh, .w = pl->ow, .layout = NN_LAYOUT_PLANAR};
    nn_tensor_copy(&dst, &pl->output);
    return 0;
}
