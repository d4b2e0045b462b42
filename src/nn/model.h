/*
 * model.h - the in-memory form of an ncnn model (private to src/nn).
 *
 * param.c fills this from the .param text, weights.c attaches the fp32
 * weights from the .bin; plan.c and the backends read it. A model is
 * immutable after nn_model_load returns.
 *
 * ncnn parameter ids used (from ncnn's "operation param weight table"):
 *
 *   Convolution  0 num_output  1 kernel_w  11 kernel_h(=kw)  2 dilation_w
 *                12 dilation_h(=dw)  3 stride_w  13 stride_h(=sw)
 *                4 pad_left  15 pad_right(=pl)  14 pad_top(=pl)
 *                16 pad_bottom(=pt)  18 pad_value  5 bias_term
 *                6 weight_data_size  9 activation_type  10 activation_params[]
 *                weights: weight_data (tagged), bias_data (raw fp32)
 *   PReLU        0 num_slope                 weights: slope_data (raw fp32)
 *   Concat       0 axis
 *   Eltwise      0 op_type (0 prod 1 sum 2 max)  1 coeffs[]
 *   BinaryOp     0 op_type (0 add 1 sub 2 mul 3 div 4 max 5 min 6 pow 7 rsub
 *                8 rdiv)  1 with_scalar  2 b
 *   Interp       0 resize_type (1 nearest 2 bilinear 3 bicubic)
 *                1 height_scale  2 width_scale  3 output_height
 *                4 output_width  6 align_corner
 *   PixelShuffle 0 upscale_factor  1 mode
 *   Input        0 w  1 h  2 c (informative only)
 */
#ifndef UPRES_NN_MODEL_H
#define UPRES_NN_MODEL_H

#include "nn/nn.h"

typedef enum {
    NN_OP_INPUT = 0,
    NN_OP_SPLIT,
    NN_OP_CONV,
    NN_OP_PRELU,
    NN_OP_CONCAT,
    NN_OP_ELTWISE,
    NN_OP_BINARY,
    NN_OP_INTERP,
    NN_OP_PIXELSHUFFLE,
    NN_OP_COUNT
} nn_op_t;

/* ncnn activation_type values fused into Convolution. */
typedef enum {
    NN_ACT_NONE = 0,
    NN_ACT_RELU = 1,  /* plain max(x, 0): ncnn ignores activation_params here */
    NN_ACT_LEAKY = 2, /* params[0] = negative slope */
    NN_ACT_CLIP = 3,  /* params[0] = min, params[1] = max */
    NN_ACT_SIGMOID = 4,
} nn_act_t;

typedef enum { NN_ELTWISE_PROD = 0, NN_ELTWISE_SUM = 1, NN_ELTWISE_MAX = 2 } nn_eltwise_op_t;

typedef enum {
    NN_BINARY_ADD = 0,
    NN_BINARY_SUB = 1,
    NN_BINARY_MUL = 2,
    NN_BINARY_DIV = 3,
    NN_BINARY_MAX = 4,
    NN_BINARY_MIN = 5,
    NN_BINARY_POW = 6,
    NN_BINARY_RSUB = 7,
    NN_BINARY_RDIV = 8,
} nn_binary_op_t;

typedef enum { NN_INTERP_NEAREST = 1, NN_INTERP_BILINEAR = 2, NN_INTERP_BICUBIC = 3 } nn_interp_t;

#define NN_MAX_COEFFS 16

typedef struct nn_conv_param {
    int n_out, n_in;        /* channels; n_in derived from weight_data_size */
    int kernel_w, kernel_h; /* pixels */
    int dilation_w, dilation_h;
    int stride_w, stride_h;
    int pad_left, pad_right, pad_top, pad_bottom; /* pixels, >= 0 */
    float pad_value;                              /* value of the padded border (ncnn 18) */
    int bias_term;                                /* 0 or 1 */
    int weight_data_size;                         /* n_out * n_in * kernel_h * kernel_w */
    nn_act_t act;
    float act_params[2];
    float *weight; /* owned: [n_out][n_in][kernel_h][kernel_w] fp32 */
    float *bias;   /* owned: [n_out] or NULL */
} nn_conv_param_t;

typedef struct nn_prelu_param {
    int n_slope;  /* 1 (shared) or the channel count */
    float *slope; /* owned: [n_slope] */
} nn_prelu_param_t;

typedef struct nn_concat_param {
    int axis; /* only 0 (channels) is supported */
} nn_concat_param_t;

typedef struct nn_eltwise_param {
    nn_eltwise_op_t op;
    int n_coeffs; /* 0 = all 1.0; else one per input */
    float coeffs[NN_MAX_COEFFS];
} nn_eltwise_param_t;

typedef struct nn_binary_param {
    nn_binary_op_t op;
    int with_scalar; /* 1: out = a op b (scalar), one input */
    float b;
} nn_binary_param_t;

typedef struct nn_interp_param {
    nn_interp_t type;
    float height_scale, width_scale; /* used when out_h/out_w are 0 */
    int out_h, out_w;                /* fixed output size, 0 = from scale */
    int align_corner;
} nn_interp_param_t;

typedef struct nn_pixelshuffle_param {
    int factor; /* r: c*r*r -> c channels, h*r x w*r */
    int mode;   /* 0: PyTorch order (ch*r*r + dy*r + dx); 1: (dy*r+dx)*c + ch */
} nn_pixelshuffle_param_t;

typedef struct nn_layer {
    nn_op_t op;
    char type[32]; /* ncnn layer type as written */
    char name[64]; /* ncnn layer name (truncated if longer) */
    int line;      /* 1-based line in the .param text, for messages */
    int n_in, n_out;
    int *in, *out; /* owned: blob indices */
    union {
        nn_conv_param_t conv;
        nn_prelu_param_t prelu;
        nn_concat_param_t concat;
        nn_eltwise_param_t eltwise;
        nn_binary_param_t binary;
        nn_interp_param_t interp;
        nn_pixelshuffle_param_t pixelshuffle;
    } p;
} nn_layer_t;

typedef struct nn_blob {
    char name[64]; /* as in the .param file (truncated if longer) */
    int producer;  /* layer index that writes it */
    int n_consumers;
} nn_blob_t;

struct nn_model {
    int n_layers, n_blobs;
    nn_layer_t *layers; /* owned, in file order (ncnn files are topologically ordered,
                           but plan.c does not rely on it) */
    nn_blob_t *blobs;   /* owned */
    int input_blob;     /* index of blob "data" */
    int output_blob;    /* index of blob "output" */
};

/* Parse .param text into model (layers, blobs, params; no weights). param.c */
int nn_param_parse(const char *text, size_t size, nn_model_t *model, up_error_t *err);

/* Read the .bin weights for every layer of a parsed model. weights.c */
int nn_weights_load(nn_model_t *model, const void *bin, size_t size, up_error_t *err);

/* Free what a (possibly half-built) model owns, not the struct itself. */
void nn_model_fini(nn_model_t *model);

/* IEEE half -> float, exact. */
float nn_half_to_float(unsigned short h);

#endif
