/*
 * ref.c - the reference backend: every op in plain C on planar tensors.
 *
 * It is always built and is what the other backends are tested against, op
 * by op. Each layer_run calls the matching nn_op_* of ops.c (the
 * convolution with the planner's epilogue fused), splitting the work over
 * n_threads OpenMP threads. The only thing prepared is the convolutions'
 * row scratch: one buffer, sized for the largest layer and shared by all
 * (layers run one at a time), so that runs do not allocate.
 */
#include "nn/backend/backend.h"

#include <omp.h>
#include <stdlib.h>

#include "core/xmalloc.h"
#include "nn/ops.h"

typedef struct ref_state {
    int n_threads;       /* OpenMP team size for the ops; 0 = OpenMP's default */
    float *scratch;      /* owned: shared by every convolution */
    size_t scratch_size; /* bytes */
} ref_state_t;

static int ref_create(const nn_model_t *model, int n_threads, void **state, up_error_t *err) {
    (void)model;
    ref_state_t *s = malloc(sizeof *s);
    if (!s)
        return up_error_set(err, UP_ERR_NOMEM, 0, "ref backend: out of memory");
    s->n_threads = n_threads > 0 ? n_threads : 0;
    s->scratch = NULL;
    s->scratch_size = 0;
    *state = s;
    return 0;
}

static void ref_destroy(void *state) {
    ref_state_t *s = state;
    if (s)
        up_aligned_free(s->scratch);
    free(s);
}

static nn_layout_t ref_blob_layout(void *state, const nn_layer_t *producer, int c) {
    (void)state, (void)producer, (void)c;
    return NN_LAYOUT_PLANAR;
}

static int ref_layer_prepare(void *state, const nn_layer_t *layer, const nn_epilogue_t *epi,
                             const nn_tensor_t *in, int n_in, const nn_tensor_t *out, int n_out,
                             void **lstate, size_t *scratch_bytes, up_error_t *err) {
    ref_state_t *s = state;
    (void)epi, (void)n_in, (void)n_out;
    *lstate = NULL;
    *scratch_bytes = 0;
    switch (layer->op) {
    case NN_OP_CONV: {
        nn_conv_scratch_t *cs = malloc(sizeof *cs);
        if (!cs)
            return up_error_set(err, UP_ERR_NOMEM, layer->line, "ref backend: out of memory");
        nn_conv_scratch_plan(cs, &layer->p.conv, &in[0], &out[0],
                             s->n_threads ? s->n_threads : omp_get_max_threads());
        size_t need = nn_conv_scratch_bytes(cs);
        if (need > s->scratch_size) {
            /* grow; earlier layers find the new buffer at run time */
            float *bigger = up_aligned_alloc(need, 1);
            if (!bigger) {
                free(cs);
                return up_error_set(err, UP_ERR_NOMEM, layer->line,
                                    "ref backend: cannot allocate %zu KB of scratch for layer '%s'",
                                    need >> 10, layer->name);
            }
            up_aligned_free(s->scratch);
            *scratch_bytes = need - s->scratch_size;
            s->scratch = bigger;
            s->scratch_size = need;
        }
        *lstate = cs;
        return 0;
    }
    case NN_OP_PRELU:
    case NN_OP_CONCAT:
    case NN_OP_ELTWISE:
    case NN_OP_BINARY:
    case NN_OP_INTERP:
    case NN_OP_PIXELSHUFFLE: return 0;
    default: break;
    }
    return up_error_set(err, UP_ERR_UNSUPPORTED, layer->line,
                        "ref backend: layer %s '%s' (line %d) cannot run here", layer->type, layer->name,
                        layer->line);
}

static int ref_layer_run(void *state, void *lstate, const nn_layer_t *layer, const nn_epilogue_t *epi,
                         const nn_tensor_t *in, int n_in, const nn_tensor_t *out, int n_out,
                         up_error_t *err) {
    const ref_state_t *s = state;
    (void)n_out;
    if (s->n_threads > 0)
        omp_set_num_threads(s->n_threads); /* this thread's next parallel regions */
    nn_conv_scratch_t cs;
    if (layer->op == NN_OP_CONV) {
        cs = *(const nn_conv_scratch_t *)lstate;
        cs.buf = s->scratch; /* the shared buffer may have grown since prepare */
    }
    return nn_op_run(layer, epi, layer->op == NN_OP_CONV ? &cs : NULL, in, n_in, &out[0], err);
}

static void ref_layer_release(void *state, void *lstate) {
    (void)state;
    free(lstate); /* a convolution's scratch size, or NULL */
}

const nn_backend_vtbl_t nn_backend_ref = {
    .name = "ref",
    .create = ref_create,
    .destroy = ref_destroy,
    .blob_layout = ref_blob_layout,
    .layer_prepare = ref_layer_prepare,
    .layer_run = ref_layer_run,
    .layer_release = ref_layer_release,
};
