/*
 * conv_bf16.h - our own bf16 3x3 convolution on AVX512_BF16 (private).
 *
 * For CPUs that have AVX512_BF16 but no AMX (AMD Zen 4): oneDNN 2.6's
 * bf16 convolution there (jit_bf16:avx512_core_bf16) runs at about 40% of
 * the vdpbf16ps peak and is no faster than its fp32 Winograd, so the dnnl
 * backend runs the bf16 plan's 3x3 convolutions through this kernel
 * instead. It is a direct convolution: Winograd products in bf16 lose
 * 15-21 dB against direct bf16 (F(4x4,3x3): 32-38 dB for one 64-channel
 * conv against 53 dB, bench/wino_bf16_error.c), which the 50 dB bar of
 * the bf16 precision does not allow.
 *
 * Source: bf16 NHWC with an even channel count (vdpbf16ps multiplies
 * channel pairs). Weights: packed once from the model's fp32 OIHW weights,
 * rounded to bf16. Accumulation, bias and the epilogue are float32, rounded
 * once on store. Destination and epilogue sum: bf16 or float32 NHWC, or
 * float32 BLOCK16 (any storage grid: the caller zeroes a margin).
 */
#ifndef UPRES_NN_CONV_BF16_H
#define UPRES_NN_CONV_BF16_H

#include <stdint.h>

#include "nn/backend/backend.h"

/* Whether this CPU runs the kernel (AVX512_BF16 and AVX512BW). */
int cbf16_cpu_ok(void);

/*
 * Whether the kernel takes this conv: 3x3, stride 1, dilation 1, padding 1
 * on every side with zeros, in: bf16 NHWC with an even channel count, out
 * and sum as above, same image size, an activation of none, ReLU or leaky
 * ReLU.
 */
int cbf16_takes(const nn_conv_param_t *p, const nn_epilogue_t *epi, const nn_tensor_t *in,
                const nn_tensor_t *out);

typedef struct cbf16_weights cbf16_weights_t;

/* The conv's weights packed for the kernel (NULL: out of memory). */
cbf16_weights_t *cbf16_pack(const nn_conv_param_t *p);
void cbf16_free(cbf16_weights_t *w);

/* Bytes the packed weights take. */
size_t cbf16_bytes(const cbf16_weights_t *w);

/*
 * out = epilogue(conv(in)) on n_threads OpenMP threads (0: OpenMP's
 * default). Arguments as cbf16_takes accepted them.
 */
void cbf16_run(const cbf16_weights_t *w, const nn_conv_param_t *p, const nn_epilogue_t *epi,
               const nn_tensor_t *in, const nn_tensor_t *out, int n_threads);

/* dst[i] = src[i] rounded to bf16 (nearest even), on n_threads threads. */
void cbf16_round(uint16_t *dst, const float *src, size_t n, int n_threads);

#endif
