/*
 * backend.h - the interface every compute backend implements (private).
 *
 * A backend is a table of functions (ggml's ggml_backend_i): plan.c calls
 * them and knows nothing about how convolutions are computed.
 *
 * Lifetimes:
 *   create        once per net: load-time work (weight reorders)
 *   blob_layout   during planning: which layout each blob is kept in
 *   layer_prepare once per layer and input shape: the tensors it gets have
 *                 their final data pointers (inside the plan's arena), so a
 *                 backend may bind memory objects here
 *   layer_run     for every run (tile) of that shape; must not allocate
 *   layer_release when the plan is dropped
 *   destroy       with the net
 *
 * The ref backend implements every op in plain C on planar tensors; the
 * dnnl backend runs convolutions (with fused activations) through oneDNN on
 * BLOCK16 tensors and the remaining ops through the layout-generic C code in
 * ops.c. Every backend must give the same results as ref (tests/unit/nn).
 */
#ifndef UPRES_NN_BACKEND_H
#define UPRES_NN_BACKEND_H

#include "nn/model.h"
#include "nn/tensor.h"

/*
 * Work the planner folded into a convolution, applied after the conv's own
 * fused activation, in this order:
 *   x = prelu ? prelu(x) : x                 (Conv -> PReLU)
 *   x = scale * x + (sum ? sum[i] : 0)       (Conv -> Eltwise SUM with
 *                                             coefficients {scale, 1})
 * sum is a tensor of the output's shape and layout, already computed when
 * the conv runs. A conv with nothing fused gets {NULL, 1.0f, NULL}.
 */
typedef struct nn_epilogue {
    const nn_prelu_param_t *prelu; /* borrowed from the model, or NULL */
    float scale;                   /* 1.0f when unused */
    const nn_tensor_t *sum;        /* borrowed, or NULL */
} nn_epilogue_t;

typedef struct nn_backend_vtbl {
    const char *name;

    /* New backend state for model (borrowed, outlives the state). */
    int (*create)(const nn_model_t *model, int n_threads, void **state, up_error_t *err);
    void (*destroy)(void *state);

    /*
     * Layout for a blob of c channels written by layer producer (a layer of
     * the model). The graph input is always PLANAR.
     */
    nn_layout_t (*blob_layout)(void *state, const nn_layer_t *producer, int c);

    /*
     * bf16 (may be NULL: fp32 only). bf16_speed says how this backend runs
     * bf16 on this CPU: 0 not at all, 1 correctly but no faster than fp32,
     * 2 faster; *why receives a static phrase for the log. layer_bf16 says
     * whether layer (in/out: shapes and fp32 layouts, data NULL) can run on
     * bf16 tensors, in NN_LAYOUT_NHWC, for any mix of bf16 and fp32 among
     * its inputs, output and epilogue sum. The planner keeps a value in
     * bf16 only when every step writing or reading it says yes.
     */
    int (*bf16_speed)(void *state, const char **why);
    int (*layer_bf16)(void *state, const nn_layer_t *layer, const nn_tensor_t *in, int n_in,
                      const nn_tensor_t *out);

    /*
     * Storage padding (may be NULL: none; see tensor.h). blob_pad gives the
     * storage grid *ph x *pw (>= h x w) this backend wants for a float32
     * BLOCK16 value of c x h x w; layer_padded says whether layer (in/out:
     * shapes and layouts, data NULL) can take padded tensors, in any mix
     * with unpadded ones, except that a conv's epilogue sum is stored as its
     * output is. The planner pads a value only when every step writing or
     * reading it says yes; the graph input and output are never padded.
     */
    void (*blob_pad)(void *state, int c, int h, int w, int *ph, int *pw);
    int (*layer_padded)(void *state, const nn_layer_t *layer, const nn_tensor_t *in, int n_in,
                        const nn_tensor_t *out);

    /*
     * Shape-specific preparation of one layer. in/out describe the tensors
     * (shape, layout, final data pointers). epi is non-NULL only for
     * NN_OP_CONV. *lstate is new (may be NULL). *scratch_bytes receives
     * extra memory the backend keeps for this layer. Layers of type INPUT
     * and SPLIT never reach a backend (the planner aliases them), nor do
     * CONCATs the planner turned into views.
     */
    int (*layer_prepare)(void *state, const nn_layer_t *layer, const nn_epilogue_t *epi,
                         const nn_tensor_t *in, int n_in, const nn_tensor_t *out, int n_out, void **lstate,
                         size_t *scratch_bytes, up_error_t *err);
    int (*layer_run)(void *state, void *lstate, const nn_layer_t *layer, const nn_epilogue_t *epi,
                     const nn_tensor_t *in, int n_in, const nn_tensor_t *out, int n_out, up_error_t *err);
    void (*layer_release)(void *state, void *lstate);
} nn_backend_vtbl_t;

extern const nn_backend_vtbl_t nn_backend_ref;
#ifdef UPRES_HAVE_DNNL
extern const nn_backend_vtbl_t nn_backend_dnnl;
#endif

#endif
