/*
 * shape.c - output shapes of each layer from its input shapes.
 *
 * The planner calls nn_layer_output_shapes for every layer, in graph order,
 * before it sizes anything; the ops in ops.c then only assert. So this is
 * where a model that cannot run on an input (wrong channel count, mismatched
 * residual shapes, a size that rounds to zero) is turned into an error that
 * names the layer and its line in the .param file.
 *
 * Sizes follow ncnn's formulas: Convolution (w + pads - extent) / stride + 1;
 * Interp from a scale as (int)(w * width_scale) in float, as ncnn computes it.
 */
#include "nn/ops.h"

#include <limits.h>

/* Largest side or channel count accepted; keeps every product below in range. */
#define SHAPE_MAX (1 << 24)

#define LAYER_FMT "layer %s '%s' (line %d): "
#define LAYER_ARGS(l) (l)->type, (l)->name, (l)->line

static int fail(const nn_layer_t *l, const char *why, up_error_t *err) {
    return up_error_set(err, UP_ERR_FORMAT, l->line, LAYER_FMT "%s", LAYER_ARGS(l), why);
}

static int check_counts(const nn_layer_t *l, int n_in, int want_min, int want_max, up_error_t *err) {
    if (n_in < want_min || n_in > want_max)
        return up_error_set(err, UP_ERR_FORMAT, l->line, LAYER_FMT "takes %d to %d inputs, has %d",
                            LAYER_ARGS(l), want_min, want_max, n_in);
    if (l->op != NN_OP_SPLIT && l->n_out != 1)
        return up_error_set(err, UP_ERR_FORMAT, l->line, LAYER_FMT "must have 1 output, has %d",
                            LAYER_ARGS(l), l->n_out);
    if (l->op == NN_OP_SPLIT && l->n_out < 1)
        return up_error_set(err, UP_ERR_FORMAT, l->line, LAYER_FMT "has no outputs", LAYER_ARGS(l));
    return 0;
}

static int same_shape(const int a[3], const int b[3]) { return a[0] == b[0] && a[1] == b[1] && a[2] == b[2]; }

static void set_shape(int out[3], long long c, long long h, long long w) {
    out[0] = (int)c;
    out[1] = (int)h;
    out[2] = (int)w;
}

static int conv_shape(const nn_layer_t *l, const int in[3], int out[3], up_error_t *err) {
    const nn_conv_param_t *p = &l->p.conv;
    if (in[0] != p->n_in)
        return up_error_set(err, UP_ERR_FORMAT, l->line,
                            LAYER_FMT "input has %d channels, the weights expect %d", LAYER_ARGS(l), in[0],
                            p->n_in);
    if (p->kernel_w < 1 || p->kernel_h < 1 || p->stride_w < 1 || p->stride_h < 1 || p->dilation_w < 1 ||
        p->dilation_h < 1 || p->pad_left < 0 || p->pad_right < 0 || p->pad_top < 0 || p->pad_bottom < 0 ||
        p->n_out < 1)
        return up_error_set(err, UP_ERR_FORMAT, l->line,
                            LAYER_FMT "bad kernel, stride, dilation, padding or output count", LAYER_ARGS(l));
    long long ext_w = (long long)p->dilation_w * (p->kernel_w - 1) + 1;
    long long ext_h = (long long)p->dilation_h * (p->kernel_h - 1) + 1;
    long long pw = (long long)in[2] + p->pad_left + p->pad_right;
    long long ph = (long long)in[1] + p->pad_top + p->pad_bottom;
    if (pw < ext_w || ph < ext_h)
        return up_error_set(err, UP_ERR_FORMAT, l->line,
                            LAYER_FMT "input %dx%d is smaller than the kernel extent %lldx%lld",
                            LAYER_ARGS(l), in[2], in[1], ext_w, ext_h);
    set_shape(out, p->n_out, (ph - ext_h) / p->stride_h + 1, (pw - ext_w) / p->stride_w + 1);
    return 0;
}

/*
 * ncnn Interp: a fixed size when both output_height and output_width are
 * set, else oh = (int)(h * height_scale) with the product in float.
 */
static int interp_shape(const nn_layer_t *l, const int in[3], int out[3], up_error_t *err) {
    const nn_interp_param_t *p = &l->p.interp;
    if (p->type != NN_INTERP_NEAREST && p->type != NN_INTERP_BILINEAR && p->type != NN_INTERP_BICUBIC)
        return up_error_set(err, UP_ERR_FORMAT, l->line, LAYER_FMT "unknown resize type %d", LAYER_ARGS(l),
                            (int)p->type);
    long long oh, ow;
    if (p->out_h != 0 && p->out_w != 0) {
        oh = p->out_h;
        ow = p->out_w;
    } else {
        float fh = (float)in[1] * p->height_scale;
        float fw = (float)in[2] * p->width_scale;
        /* Also refuses NaN: every comparison with it is false. */
        if (!(fh >= 0.f && fh < (float)SHAPE_MAX) || !(fw >= 0.f && fw < (float)SHAPE_MAX))
            return up_error_set(err, UP_ERR_FORMAT, l->line,
                                LAYER_FMT "scales %g x %g on input %dx%d give a size out of range",
                                LAYER_ARGS(l), (double)p->width_scale, (double)p->height_scale, in[2], in[1]);
        oh = (int)fh;
        ow = (int)fw;
    }
    if (oh < 1 || ow < 1 || oh > SHAPE_MAX || ow > SHAPE_MAX)
        return up_error_set(err, UP_ERR_FORMAT, l->line,
                            LAYER_FMT "output size %lldx%lld from input %dx%d is out of range", LAYER_ARGS(l),
                            ow, oh, in[2], in[1]);
    if (p->type == NN_INTERP_NEAREST &&
        ((p->out_h == 0 && !(p->height_scale > 0.f)) || (p->out_w == 0 && !(p->width_scale > 0.f))))
        return fail(l, "nearest resize needs positive scales", err);
    set_shape(out, in[0], oh, ow);
    return 0;
}

int nn_layer_output_shapes(const nn_layer_t *layer, const int (*in)[3], int n_in, int (*out)[3],
                           up_error_t *err) {
    const nn_layer_t *l = layer;
    int rc;
    for (int i = 0; i < n_in; i++)
        if (in[i][0] < 1 || in[i][1] < 1 || in[i][2] < 1 || in[i][0] > SHAPE_MAX || in[i][1] > SHAPE_MAX ||
            in[i][2] > SHAPE_MAX)
            return up_error_set(err, UP_ERR_FORMAT, l->line,
                                LAYER_FMT "input %d has shape %dx%dx%d, out of range", LAYER_ARGS(l), i,
                                in[i][0], in[i][1], in[i][2]);

    switch (l->op) {
    case NN_OP_INPUT:
        /* The planner passes the net's input shape as the one input. */
        if ((rc = check_counts(l, n_in, 1, 1, err)))
            return rc;
        set_shape(out[0], in[0][0], in[0][1], in[0][2]);
        return 0;

    case NN_OP_SPLIT:
        if ((rc = check_counts(l, n_in, 1, 1, err)))
            return rc;
        for (int i = 0; i < l->n_out; i++)
            set_shape(out[i], in[0][0], in[0][1], in[0][2]);
        return 0;

    case NN_OP_CONV:
        if ((rc = check_counts(l, n_in, 1, 1, err)))
            return rc;
        return conv_shape(l, in[0], out[0], err);

    case NN_OP_PRELU:
        if ((rc = check_counts(l, n_in, 1, 1, err)))
            return rc;
        if (l->p.prelu.n_slope != 1 && l->p.prelu.n_slope != in[0][0])
            return up_error_set(err, UP_ERR_FORMAT, l->line, LAYER_FMT "has %d slopes for %d channels",
                                LAYER_ARGS(l), l->p.prelu.n_slope, in[0][0]);
        set_shape(out[0], in[0][0], in[0][1], in[0][2]);
        return 0;

    case NN_OP_CONCAT: {
        if ((rc = check_counts(l, n_in, 1, INT_MAX, err)))
            return rc;
        if (l->p.concat.axis != 0)
            return up_error_set(err, UP_ERR_FORMAT, l->line,
                                LAYER_FMT "concat along axis %d (only channels, 0, is supported)",
                                LAYER_ARGS(l), l->p.concat.axis);
        long long c = 0;
        for (int i = 0; i < n_in; i++) {
            if (in[i][1] != in[0][1] || in[i][2] != in[0][2])
                return up_error_set(err, UP_ERR_FORMAT, l->line,
                                    LAYER_FMT "input %d is %dx%d, input 0 is %dx%d", LAYER_ARGS(l), i,
                                    in[i][2], in[i][1], in[0][2], in[0][1]);
            c += in[i][0];
        }
        if (c > SHAPE_MAX)
            return fail(l, "too many channels", err);
        set_shape(out[0], c, in[0][1], in[0][2]);
        return 0;
    }

    case NN_OP_ELTWISE: {
        const nn_eltwise_param_t *p = &l->p.eltwise;
        if ((rc = check_counts(l, n_in, 2, INT_MAX, err)))
            return rc;
        if (p->op != NN_ELTWISE_PROD && p->op != NN_ELTWISE_SUM && p->op != NN_ELTWISE_MAX)
            return up_error_set(err, UP_ERR_FORMAT, l->line, LAYER_FMT "unknown operation %d", LAYER_ARGS(l),
                                (int)p->op);
        if (p->n_coeffs != 0 && p->n_coeffs < n_in)
            return up_error_set(err, UP_ERR_FORMAT, l->line, LAYER_FMT "has %d coefficients for %d inputs",
                                LAYER_ARGS(l), p->n_coeffs, n_in);
        for (int i = 1; i < n_in; i++)
            if (!same_shape(in[i], in[0]))
                return up_error_set(err, UP_ERR_FORMAT, l->line,
                                    LAYER_FMT "input %d is %dx%dx%d, input 0 is %dx%dx%d", LAYER_ARGS(l), i,
                                    in[i][0], in[i][1], in[i][2], in[0][0], in[0][1], in[0][2]);
        set_shape(out[0], in[0][0], in[0][1], in[0][2]);
        return 0;
    }

    case NN_OP_BINARY: {
        const nn_binary_param_t *p = &l->p.binary;
        int want = p->with_scalar ? 1 : 2;
        if ((rc = check_counts(l, n_in, want, want, err)))
            return rc;
        if ((int)p->op < NN_BINARY_ADD || (int)p->op > NN_BINARY_RDIV)
            return up_error_set(err, UP_ERR_FORMAT, l->line, LAYER_FMT "unknown operation %d", LAYER_ARGS(l),
                                (int)p->op);
        if (!p->with_scalar && !same_shape(in[0], in[1]))
            return up_error_set(err, UP_ERR_FORMAT, l->line,
                                LAYER_FMT "inputs are %dx%dx%d and %dx%dx%d (no broadcasting)", LAYER_ARGS(l),
                                in[0][0], in[0][1], in[0][2], in[1][0], in[1][1], in[1][2]);
        set_shape(out[0], in[0][0], in[0][1], in[0][2]);
        return 0;
    }

    case NN_OP_INTERP:
        if ((rc = check_counts(l, n_in, 1, 1, err)))
            return rc;
        return interp_shape(l, in[0], out[0], err);

    case NN_OP_PIXELSHUFFLE: {
        const nn_pixelshuffle_param_t *p = &l->p.pixelshuffle;
        if ((rc = check_counts(l, n_in, 1, 1, err)))
            return rc;
        if (p->factor < 1 || p->factor > 64 || (p->mode != 0 && p->mode != 1))
            return up_error_set(err, UP_ERR_FORMAT, l->line, LAYER_FMT "bad upscale factor %d or mode %d",
                                LAYER_ARGS(l), p->factor, p->mode);
        int rr = p->factor * p->factor;
        if (in[0][0] % rr != 0)
            return up_error_set(err, UP_ERR_FORMAT, l->line,
                                LAYER_FMT "%d channels do not divide by %d (factor %d squared)",
                                LAYER_ARGS(l), in[0][0], rr, p->factor);
        long long oh = (long long)in[0][1] * p->factor, ow = (long long)in[0][2] * p->factor;
        if (oh > SHAPE_MAX || ow > SHAPE_MAX)
            return fail(l, "output size out of range", err);
        set_shape(out[0], in[0][0] / rr, oh, ow);
        return 0;
    }

    case NN_OP_COUNT: break;
    }
    return up_error_set(err, UP_ERR_UNSUPPORTED, l->line, LAYER_FMT "unsupported layer type", LAYER_ARGS(l));
}
