/*
 * nn.h - the public face of the neural-network engine.
 *
 * Two phases, as in ggml: load a model once (nn_model_load: parse the ncnn
 * .param graph and .bin weights into fp32), bind it to a backend
 * (nn_net_new: oneDNN weight reorders happen here), then run it many times
 * on same-shaped inputs (nn_net_run). The first run for a new input shape
 * plans the graph for that shape (blob lifetimes, one arena, concat views,
 * backend primitives); later runs of that shape allocate nothing, and the
 * plans of recent shapes are kept (nn_net_set_plan_cache).
 *
 * Tensors crossing this API are planar float32 CHW (all of channel 0, then
 * channel 1, ...), row-major, values as the network sees them (0..1 RGB).
 *
 * Thread safety: a model is immutable after load and may be shared by many
 * nets; a net is used by one thread at a time (only the flag given to
 * nn_net_set_abort, below, may be set by another thread while it runs).
 */
#ifndef UPRES_NN_NN_H
#define UPRES_NN_NN_H

#include <stdatomic.h>
#include <stddef.h>

#include "core/err.h"

typedef struct nn_model nn_model_t;
typedef struct nn_net nn_net_t;

typedef enum {
    NN_BACKEND_REF = 0,  /* plain C, always built, the reference for tests */
    NN_BACKEND_DNNL = 1, /* oneDNN primitives */
} nn_backend_kind_t;

/* "ref" / "dnnl" */
const char *nn_backend_name(nn_backend_kind_t kind);
/* Parse "ref" or "dnnl"; returns 0 or UP_ERR_INVALID. */
int nn_backend_parse(const char *name, nn_backend_kind_t *out);

/*
 * Arithmetic of a net's convolutions. FP32: float32 everywhere (the
 * reference, and the default of nn_net_new). BF16: activations between
 * oneDNN primitives kept in bfloat16 and convolutions on bf16 inputs and
 * weights, accumulating in float32 (graph input, output and any layer that
 * runs in plain C stay float32). AUTO: BF16 where the backend runs it
 * faster than FP32 (the dnnl backend on a CPU with AMX-BF16), else FP32.
 */
typedef enum {
    NN_PRECISION_AUTO = 0,
    NN_PRECISION_FP32 = 1,
    NN_PRECISION_BF16 = 2,
} nn_precision_t;

/* "auto" / "fp32" / "bf16" */
const char *nn_precision_name(nn_precision_t p);
/* Parse one of those; returns 0 or UP_ERR_INVALID. */
int nn_precision_parse(const char *name, nn_precision_t *out);

/*
 * Load an ncnn model. *out is new (free with nn_model_free). On failure
 * returns a negative code and err says which file, line and why.
 */
int nn_model_load(const char *param_path, const char *bin_path, nn_model_t **out, up_error_t *err);

/* Same from memory (tests, fuzzing). Buffers are borrowed for the call only. */
int nn_model_load_mem(const char *param_text, size_t param_size, const void *bin, size_t bin_size,
                      nn_model_t **out, up_error_t *err);

void nn_model_free(nn_model_t *model); /* accepts NULL */

/*
 * Output shape for an input of c x h x w, or a negative code when the graph
 * cannot take that shape (err says which layer and why).
 */
int nn_model_output_shape(const nn_model_t *model, int c, int h, int w, int *oc, int *oh, int *ow,
                          up_error_t *err);

/*
 * Multiply-accumulate work of the model's convolutions for that input shape,
 * in FLOP (2 per multiply-add), counted as direct convolutions. Returns a
 * negative value when the shape does not fit the graph.
 */
double nn_model_conv_flops(const nn_model_t *model, int c, int h, int w);

/*
 * Bind model (borrowed; must outlive the net) to a backend using n_threads
 * threads (0 = all cores). *out is new (free with nn_net_free).
 */
int nn_net_new(const nn_model_t *model, nn_backend_kind_t kind, int n_threads, nn_net_t **out,
               up_error_t *err);
void nn_net_free(nn_net_t *net); /* accepts NULL */

/*
 * Choose the net's precision (plans made for the other one stay in the
 * plan cache, below, for when it comes back).
 * UP_ERR_UNSUPPORTED when want is BF16 and the backend or the CPU has no
 * bf16 (the net keeps its precision then).
 */
int nn_net_set_precision(nn_net_t *net, nn_precision_t want, up_error_t *err);

/*
 * The precision the net runs in (FP32 or BF16, never AUTO); *why (may be
 * NULL) receives a static phrase saying why, e.g. "AMX-BF16".
 */
nn_precision_t nn_net_precision(const nn_net_t *net, const char **why);

/*
 * The plan cache. A net keeps the plans of the input shapes it ran last
 * (each with its arena and backend primitives), keyed by shape and
 * precision, so that going back to a shape costs no planning and no first
 * touch of a new arena: at most max_plans of them (1..NN_PLAN_CACHE_MAX; 1
 * keeps only the plan in use) holding at most max_bytes together (0 = no
 * byte limit), least recently used dropped first. The plan in use always
 * stays, even alone over the budget, and a new plan makes room before its
 * arena is allocated. Defaults: NN_PLAN_CACHE_DEFAULT plans within
 * NN_PLAN_CACHE_DEFAULT_BYTES. Plans already kept over new limits are
 * dropped at once. The results do not depend on the cache.
 */
#define NN_PLAN_CACHE_MAX 16
#define NN_PLAN_CACHE_DEFAULT 8
#define NN_PLAN_CACHE_DEFAULT_BYTES ((size_t)1 << 30)
void nn_net_set_plan_cache(nn_net_t *net, int max_plans, size_t max_bytes);

typedef struct nn_plan_stats {
    int n_plans;                  /* kept now */
    size_t bytes;                 /* they hold: arenas plus what the backend counted for them */
    unsigned long long hits;      /* runs (or nn_net_plan_size calls) that found their plan kept */
    unsigned long long misses;    /* that had to plan */
    unsigned long long evictions; /* plans dropped for the limits */
} nn_plan_stats_t;

/* The cache's counters since nn_net_new. */
void nn_net_plan_stats(const nn_net_t *net, nn_plan_stats_t *out);

/*
 * Bytes the net holds for an input of c x h x w once planned (activation
 * arena plus backend scratch), for choosing a tile size from a memory budget.
 */
int nn_net_plan_size(nn_net_t *net, int c, int h, int w, size_t *bytes, up_error_t *err);

/*
 * Run the network on in (planar c x h x w, borrowed) and write the output
 * (planar, shape from nn_model_output_shape) into out (borrowed, caller
 * sized). Plans on the first call for a shape.
 */
int nn_net_run(nn_net_t *net, const float *in, int c, int h, int w, float *out, up_error_t *err);

/*
 * Make nn_net_run stop early while *flag is non-zero: it is read (one
 * relaxed atomic load) before every step of the plan, and while planning
 * before preparing each step, and a set flag makes the run return
 * UP_ERR_CANCELLED within one layer's time, with out left unwritten. flag
 * is borrowed and may be set from any thread; it must stay valid until it
 * is replaced or cleared (NULL, the default: never stop).
 */
void nn_net_set_abort(nn_net_t *net, const atomic_int *flag);

#endif
