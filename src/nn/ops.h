/*
 * ops.h - plain C implementations of every op, generic over tensor layout
 * (private to src/nn).
 *
 * The ref backend runs all of them; the dnnl backend replaces the
 * convolution (and whatever else it has primitives for) and uses these for
 * the rest. They read and write through nn_tensor_plane(), so one loop
 * serves PLANAR and BLOCK16 tensors; outputs in BLOCK16 get their padding
 * lanes zeroed. Work is split over channels with OpenMP, using the caller's
 * omp thread count.
 *
 * Semantics are ncnn's, to the rounding of each formula, because the
 * reference outputs in shared/data/ref were made by ncnn.
 *
 * Unless noted, out must not alias an input. Shapes are checked by the
 * planner (nn_layer_output_shapes) before these run; they assert, not fail.
 */
#ifndef UPRES_NN_OPS_H
#define UPRES_NN_OPS_H

#include "nn/model.h"
#include "nn/tensor.h"

#include "nn/backend/backend.h"

/*
 * Working memory of nn_op_conv for one layer and shape: a padded copy of the
 * input rows each thread needs. Made once when a backend prepares the layer,
 * so that runs do not allocate.
 */
typedef struct nn_conv_scratch {
    float *buf;        /* borrowed: n_threads slices of per_thread floats, 64-byte aligned */
    size_t per_thread; /* floats */
    int n_threads;
} nn_conv_scratch_t;

/*
 * Size the scratch for p on in -> out with n_threads threads (buf is left
 * NULL for the caller to point at nn_conv_scratch_bytes of its memory; layers
 * that run one after another can share one buffer).
 */
void nn_conv_scratch_plan(nn_conv_scratch_t *s, const nn_conv_param_t *p, const nn_tensor_t *in,
                          const nn_tensor_t *out, int n_threads);
size_t nn_conv_scratch_bytes(const nn_conv_scratch_t *s);

/*
 * Direct convolution with bias, padding (pad_value), stride, dilation, the
 * fused activation, then the planner's epilogue (epi may be NULL). scratch
 * (borrowed) comes from nn_conv_scratch_init for this layer and shape; NULL
 * allocates per call (tests, one-off use).
 */
void nn_op_conv(const nn_conv_param_t *p, const nn_epilogue_t *epi, const nn_tensor_t *in,
                const nn_tensor_t *out, const nn_conv_scratch_t *scratch);

/* out = x > 0 ? x : slope[c] * x. out may equal in. */
void nn_op_prelu(const nn_prelu_param_t *p, const nn_tensor_t *in, const nn_tensor_t *out);

/* Apply a fused activation in place to n floats. */
void nn_op_activation(nn_act_t act, const float params[2], float *x, size_t n);

/* Eltwise over n_in same-shaped inputs (prod, sum with coefficients, max). */
void nn_op_eltwise(const nn_eltwise_param_t *p, const nn_tensor_t *in, int n_in, const nn_tensor_t *out);

/* BinaryOp: two same-shaped inputs, or one input and the scalar p->b. */
void nn_op_binary(const nn_binary_param_t *p, const nn_tensor_t *in, int n_in, const nn_tensor_t *out);

/* Interp (nearest, bilinear, bicubic) to out's h x w, as ncnn's Interp layer. */
void nn_op_interp(const nn_interp_param_t *p, const nn_tensor_t *in, const nn_tensor_t *out);

/* PixelShuffle (depth to space). */
void nn_op_pixelshuffle(const nn_pixelshuffle_param_t *p, const nn_tensor_t *in, const nn_tensor_t *out);

/* Concat along channels by copying (used when the planner could not make it a view). */
void nn_op_concat(const nn_tensor_t *in, int n_in, const nn_tensor_t *out);

/*
 * Run one layer with the op above that matches its type: conv with epi and
 * scratch (both may be NULL), the rest ignore them. UP_ERR_UNSUPPORTED (err
 * names the layer) for types that never reach a backend (Input, Split).
 */
int nn_op_run(const nn_layer_t *layer, const nn_epilogue_t *epi, const nn_conv_scratch_t *scratch,
              const nn_tensor_t *in, int n_in, const nn_tensor_t *out, up_error_t *err);

/*
 * Output shapes of a layer from its input shapes, each shape {c, h, w}.
 * Checks everything the op needs (channel counts against weights, equal
 * shapes for Eltwise/BinaryOp, positive sizes) and says which layer and why
 * when it cannot run. shape.c
 */
int nn_layer_output_shapes(const nn_layer_t *layer, const int (*in)[3], int n_in, int (*out)[3],
                           up_error_t *err);

#endif
